//! Physical frame bookkeeping: a bitmap with one bit per 4 KiB frame.
//!
//! The kernel builds it from the boot memory map (usable ranges are free,
//! everything else is reserved forever). Allocation of "any" frame and of a
//! named frame are both O(words) worst case with a rotating search hint.

use alloc::vec;
use alloc::vec::Vec;

/// Frame size in bytes.
pub const FRAME_SIZE: u64 = 4096;

/// One bit per physical frame: 1 = in use or reserved, 0 = free.
pub struct FrameBitmap {
    words: Vec<u64>,
    frames: u64,
    free: u64,
    hint: usize,
}

impl FrameBitmap {
    /// A bitmap covering `[0, end_addr)` with every frame reserved.
    pub fn new_reserved(end_addr: u64) -> Self {
        let frames = end_addr.div_ceil(FRAME_SIZE);
        FrameBitmap { words: vec![u64::MAX; frames.div_ceil(64) as usize], frames, free: 0, hint: 0 }
    }

    /// Mark the whole frames inside `[start, end)` free (partial frames stay reserved).
    pub fn add_free_range(&mut self, start: u64, end: u64) {
        let first = start.div_ceil(FRAME_SIZE);
        let last = (end / FRAME_SIZE).min(self.frames);
        for frame in first..last {
            if self.is_used(frame) {
                self.set(frame, false);
                self.free += 1;
            }
        }
    }

    /// Reserve the frames overlapping `[start, end)` (e.g. the kernel heap).
    pub fn reserve_range(&mut self, start: u64, end: u64) {
        let first = start / FRAME_SIZE;
        let last = end.div_ceil(FRAME_SIZE).min(self.frames);
        for frame in first..last {
            if !self.is_used(frame) {
                self.set(frame, true);
                self.free -= 1;
            }
        }
    }

    fn is_used(&self, frame: u64) -> bool {
        self.words[(frame / 64) as usize] & (1 << (frame % 64)) != 0
    }

    fn set(&mut self, frame: u64, used: bool) {
        let word = &mut self.words[(frame / 64) as usize];
        if used {
            *word |= 1 << (frame % 64);
        } else {
            *word &= !(1 << (frame % 64));
        }
    }

    /// Number of free frames.
    pub fn free_frames(&self) -> u64 {
        self.free
    }

    /// Allocate any free frame; returns its physical address.
    pub fn alloc(&mut self) -> Option<u64> {
        let count = self.words.len();
        for step in 0..count {
            let index = (self.hint + step) % count;
            let word = self.words[index];
            if word != u64::MAX {
                let bit = (!word).trailing_zeros() as u64;
                let frame = index as u64 * 64 + bit;
                if frame >= self.frames {
                    continue;
                }
                self.set(frame, true);
                self.free -= 1;
                self.hint = index;
                return Some(frame * FRAME_SIZE);
            }
        }
        None
    }

    /// Allocate `count` physically contiguous free frames.
    pub fn alloc_contiguous(&mut self, count: u64) -> Option<u64> {
        let mut run_start = 0;
        let mut run_len = 0;
        for frame in 0..self.frames {
            if self.is_used(frame) {
                run_len = 0;
                continue;
            }
            if run_len == 0 {
                run_start = frame;
            }
            run_len += 1;
            if run_len == count {
                for f in run_start..run_start + count {
                    self.set(f, true);
                }
                self.free -= count;
                return Some(run_start * FRAME_SIZE);
            }
        }
        None
    }

    /// Allocate the named frame if it is free.
    pub fn alloc_at(&mut self, addr: u64) -> bool {
        let frame = addr / FRAME_SIZE;
        if !addr.is_multiple_of(FRAME_SIZE) || frame >= self.frames || self.is_used(frame) {
            return false;
        }
        self.set(frame, true);
        self.free -= 1;
        true
    }

    /// Is the frame at `addr` allocated (taken from the bitmap)?
    pub fn is_allocated(&self, addr: u64) -> bool {
        let frame = addr / FRAME_SIZE;
        addr.is_multiple_of(FRAME_SIZE) && frame < self.frames && self.is_used(frame)
    }

    /// Free a frame. Returns false (and changes nothing) for a frame that is
    /// not allocated, misaligned or out of range: a double free is refused.
    pub fn free(&mut self, addr: u64) -> bool {
        let frame = addr / FRAME_SIZE;
        if !addr.is_multiple_of(FRAME_SIZE) || frame >= self.frames || !self.is_used(frame) {
            return false;
        }
        self.set(frame, false);
        self.free += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_and_free() {
        let mut bitmap = FrameBitmap::new_reserved(1 << 20);
        assert_eq!(bitmap.alloc(), None);
        bitmap.add_free_range(0x1800, 0x10000); // first whole frame is 0x2000
        assert_eq!(bitmap.free_frames(), 14);
        let a = bitmap.alloc().unwrap();
        assert_eq!(a, 0x2000);
        assert!(bitmap.free(a));
        assert!(!bitmap.free(a), "double free refused");
        assert!(!bitmap.free(0x2001), "misaligned free refused");
        assert!(!bitmap.free(0x100_0000), "out of range refused");
        assert!(bitmap.alloc_at(0x5000));
        assert!(!bitmap.alloc_at(0x5000));
        assert_eq!(bitmap.free_frames(), 13);
    }

    #[test]
    fn exhausts_then_recovers() {
        let mut bitmap = FrameBitmap::new_reserved(64 * FRAME_SIZE * 3);
        bitmap.add_free_range(0, 64 * FRAME_SIZE * 3);
        let all: std::vec::Vec<u64> = core::iter::from_fn(|| bitmap.alloc()).collect();
        assert_eq!(all.len(), 192);
        assert_eq!(bitmap.free_frames(), 0);
        for a in &all {
            assert!(bitmap.free(*a));
        }
        assert_eq!(bitmap.free_frames(), 192);
    }

    #[test]
    fn contiguous_and_reserve() {
        let mut bitmap = FrameBitmap::new_reserved(0x100000);
        bitmap.add_free_range(0, 0x100000);
        bitmap.reserve_range(0x3000, 0x4000);
        let run = bitmap.alloc_contiguous(8).unwrap();
        assert_eq!(run, 0x4000);
        assert_eq!(bitmap.free_frames(), 256 - 1 - 8);
    }
}
