//! The start record: what the kernel tells a libOS when it starts it, and
//! the fixed parts of every environment's address space.
//!
//! At entry `rdi` holds the address of a [`StartInfo`] on a read-only page;
//! `rsp` is the top of a mapped stack. The strings the record points at live
//! on the same page.

/// The start page (read-only to the libOS).
pub const START_INFO_ADDR: u64 = 0x0000_7fff_ffff_f000;
/// Top of the initial stack (exclusive); a guard page lies below the stack.
pub const STACK_TOP: u64 = 0x0000_7fff_fff0_0000;
/// Size of the initial stack.
pub const STACK_SIZE: u64 = 64 * 1024;
/// Where the heap the manifest grants (`memory_kib`) is mapped.
pub const HEAP_BASE: u64 = 0x0000_1000_0000_0000;
/// Program segments must lie inside `[PROGRAM_BASE, PROGRAM_END)`.
pub const PROGRAM_BASE: u64 = 0x0000_0000_0010_0000;
pub const PROGRAM_END: u64 = 0x0000_0000_4000_0000;

/// The repossession vector: a read-only page where the kernel records the
/// frames the abort protocol took ([`RepossessionVector`]).
pub const REPOSSESSION_ADDR: u64 = 0x0000_7fff_fffe_0000;
/// Where libOSes map frames they allocate: `map` accepts only this window,
/// so a libOS can never replace the kernel-built mappings below.
pub const DYNAMIC_BASE: u64 = 0x0000_2000_0000_0000;
pub const DYNAMIC_END: u64 = 0x0000_7000_0000_0000;

/// Entries the repossession vector holds (the newest overwrite the oldest).
pub const REPOSSESSION_SLOTS: usize = 250;

/// One frame the kernel took by force.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Repossessed {
    pub frame_pa: u64,
    /// The page it was mapped at in the libOS (0 if unmapped).
    pub va: u64,
}

/// The repossession vector page.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct RepossessionVector {
    /// Total frames ever repossessed; entry `i` is at `i % REPOSSESSION_SLOTS`.
    pub count: u64,
    pub _reserved: u64,
    pub entries: [Repossessed; REPOSSESSION_SLOTS],
}

impl RepossessionVector {
    /// The entry index `i` (counting every frame ever repossessed) is kept at.
    pub const fn slot(i: u64) -> usize {
        (i % REPOSSESSION_SLOTS as u64) as usize
    }

    /// The entries a reader that has seen `seen` of them can still read
    /// when the vector's `count` is `count`: those after `seen`, but only
    /// the newest [`REPOSSESSION_SLOTS`] (older ones were overwritten). A
    /// `count` below `seen` (not written by this kernel) gives nothing.
    pub fn unread(seen: u64, count: u64) -> core::ops::Range<u64> {
        let oldest_kept = count.saturating_sub(REPOSSESSION_SLOTS as u64);
        seen.max(oldest_kept).min(count)..count
    }
}

impl Default for RepossessionVector {
    fn default() -> Self {
        RepossessionVector { count: 0, _reserved: 0, entries: [Repossessed::default(); REPOSSESSION_SLOTS] }
    }
}

/// `StartInfo::magic`.
pub const START_MAGIC: u64 = 0x4558_4f53_5441_5254; // "EXOSTART"

/// The start record.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct StartInfo {
    pub magic: u64,
    /// This environment's id (1-based, as printed in summaries).
    pub env_id: u64,
    /// Number of environments the manifest boots.
    pub env_count: u64,
    pub name_ptr: u64,
    pub name_len: u64,
    /// The manifest's `args` value.
    pub args_ptr: u64,
    pub args_len: u64,
    /// The libOS policy keys, as `key=value` lines.
    pub params_ptr: u64,
    pub params_len: u64,
    pub heap_base: u64,
    pub heap_len: u64,
    pub stack_base: u64,
    pub stack_len: u64,
    /// TSC ticks per second as calibrated by the kernel.
    pub tsc_hz: u64,
    /// Frames this environment may hold for sure (its quota); it may borrow
    /// more while the pool has them, and must give those back on request.
    pub quota_frames: u64,
    /// TLB slots (ordinary mappings the hardware sees at once).
    pub tlb_slots: u64,
}

const _: () = assert!(core::mem::size_of::<StartInfo>() == 16 * 8);

impl StartInfo {
    /// The record's words in memory order (`repr(C)`, all `u64`).
    fn words(&self) -> [u64; 16] {
        [
            self.magic,
            self.env_id,
            self.env_count,
            self.name_ptr,
            self.name_len,
            self.args_ptr,
            self.args_len,
            self.params_ptr,
            self.params_len,
            self.heap_base,
            self.heap_len,
            self.stack_base,
            self.stack_len,
            self.tsc_hz,
            self.quota_frames,
            self.tlb_slots,
        ]
    }
}

/// A start page being laid out, by the kernel for a booted environment
/// and by a libOS for one it builds: the texts after the record, then the
/// record (whose pointers name them) at the page's start.
pub struct StartPage {
    bytes: [u8; 4096],
    at: usize,
}

impl Default for StartPage {
    fn default() -> Self {
        StartPage { bytes: [0; 4096], at: 256 }
    }
}

impl StartPage {
    /// Place `text`, cut to at most `max` bytes on a character boundary
    /// (and to what the page has left); its address and length as the
    /// record gives them.
    pub fn text(&mut self, text: &str, max: usize) -> (u64, u64) {
        let mut len = text.len().min(max).min(self.bytes.len() - self.at);
        while !text.is_char_boundary(len) {
            len -= 1;
        }
        let at = self.at;
        self.bytes[at..at + len].copy_from_slice(&text.as_bytes()[..len]);
        self.at += len;
        (START_INFO_ADDR + at as u64, len as u64)
    }

    /// The page, with `info` written at its start.
    pub fn finish(mut self, info: &StartInfo) -> [u8; 4096] {
        for (i, word) in info.words().iter().enumerate() {
            self.bytes[i * 8..i * 8 + 8].copy_from_slice(&word.to_le_bytes());
        }
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_page_holds_the_record_and_its_texts() {
        let mut page = StartPage::default();
        let name = page.text("héllo", 2);
        assert_eq!(name, (START_INFO_ADDR + 256, 1), "cut on a character boundary");
        let args = page.text("a b", 1024);
        assert_eq!(args, (START_INFO_ADDR + 257, 3));
        let info =
            StartInfo { magic: START_MAGIC, name_ptr: name.0, name_len: name.1, tlb_slots: 9, ..Default::default() };
        let bytes = page.finish(&info);
        assert_eq!(&bytes[..8], &START_MAGIC.to_le_bytes());
        assert_eq!(&bytes[24..32], &(START_INFO_ADDR + 256).to_le_bytes());
        assert_eq!(&bytes[120..128], &9u64.to_le_bytes());
        assert_eq!(&bytes[256..260], b"ha b");
    }

    #[test]
    fn repossession_entries_to_read() {
        assert_eq!(RepossessionVector::unread(0, 0), 0..0);
        assert_eq!(RepossessionVector::unread(0, 3), 0..3);
        assert_eq!(RepossessionVector::unread(3, 3), 3..3);
        assert_eq!(RepossessionVector::unread(2, 7), 2..7);
        let slots = REPOSSESSION_SLOTS as u64;
        assert_eq!(RepossessionVector::unread(0, slots + 10), 10..slots + 10, "overwritten entries are skipped");
        assert_eq!(RepossessionVector::unread(9, 5), 5..5, "a count that went backwards gives nothing");
        assert_eq!(RepossessionVector::slot(0), 0);
        assert_eq!(RepossessionVector::slot(slots + 1), 1);
        assert_eq!(RepossessionVector::slot(u64::MAX), (u64::MAX % slots) as usize);
    }
}
