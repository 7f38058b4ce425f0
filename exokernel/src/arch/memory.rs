//! Physical memory: the kernel heap and the frame allocator, both built
//! from the bootloader's memory map.
//!
//! A frame fresh from the allocator comes as a [`Frame`]: a value only this
//! module creates and nobody can copy, so the one holding it owns the
//! frame and may write it (zero it, fill it). Owning code hands the frame
//! on with [`Frame::into_table`] (an address space makes it a page table)
//! or [`Frame::into_user`] (it becomes environment memory: mapped into user
//! space, written by the libOS, reached by the kernel only through an
//! address space's user-memory copies). No function here or in `paging`
//! writes a physical address the caller merely names.

use bootloader_api::info::{MemoryRegionKind, MemoryRegions};
use kcore::frames::FrameBitmap;
use linked_list_allocator::LockedHeap;
use spin::Mutex;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Size of the kernel heap.
const HEAP_SIZE: u64 = 16 * 1024 * 1024;

static FRAMES: Mutex<Option<FrameBitmap>> = Mutex::new(None);

/// Frames zeroed ahead of demand (at boot, when the CPU idles, and as an
/// environment lets one go: `scrub_free`): zeroed, and held here until
/// `alloc_zeroed_frame` hands one out. Never touched after zeroing, so a frame leaves holding
/// no one's data. Counted as free.
static ZEROED: Mutex<alloc::vec::Vec<u64>> = Mutex::new(alloc::vec::Vec::new());
/// How many frames `ZEROED` holds at most.
const ZEROED_MAX: usize = 1024;
static RAM_END: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Carve the kernel heap out of the first large usable region, then build
/// the frame bitmap (on that heap) from every usable region.
pub fn init(regions: &MemoryRegions) {
    let heap_region = regions
        .iter()
        .filter(|r| r.kind == MemoryRegionKind::Usable)
        .find(|r| r.end.saturating_sub(r.start.next_multiple_of(4096)) >= HEAP_SIZE)
        .expect("a usable region large enough for the kernel heap");
    let heap_start = heap_region.start.next_multiple_of(4096);
    super::pod::init_heap(&HEAP, heap_start, HEAP_SIZE);

    let end = regions.iter().filter(|r| r.kind == MemoryRegionKind::Usable).map(|r| r.end).max().unwrap_or(0);
    RAM_END.store(end, core::sync::atomic::Ordering::Relaxed);
    let mut bitmap = FrameBitmap::new_reserved(end);
    for region in regions.iter().filter(|r| r.kind == MemoryRegionKind::Usable) {
        // Frame 0 stays reserved: a physical address of 0 is never handed out.
        bitmap.add_free_range(region.start.max(4096), region.end);
    }
    bitmap.reserve_range(heap_start, heap_start + HEAP_SIZE);
    log::debug!(
        "frames: {} free ({} MiB), heap at {:#x}",
        bitmap.free_frames(),
        bitmap.free_frames() / 256,
        heap_start
    );
    *FRAMES.lock() = Some(bitmap);
    // The stash's storage is taken now, once, so filling and emptying it
    // never moves the kernel heap.
    ZEROED.lock().reserve_exact(ZEROED_MAX);
}

/// A physical frame owned by whoever holds this value (see the module doc).
#[must_use = "a frame that is dropped is never freed"]
pub struct Frame {
    pa: u64,
}

impl Frame {
    /// Fill the frame with zeros.
    pub fn zero(&mut self) {
        super::paging::zero_owned(self.pa);
    }

    /// Hand the frame to an address space as a page table (arch only).
    pub(super) fn into_table(self) -> u64 {
        self.pa
    }

    /// The frame becomes environment memory: it may be mapped into user
    /// space, and the kernel reaches it only through address spaces. Returns
    /// its physical address, for the key table and mappings.
    pub fn into_user(self) -> u64 {
        self.pa
    }
}

/// Allocate one physical frame (contents unspecified: zero it before it
/// reaches anyone).
pub fn alloc_frame() -> Option<Frame> {
    FRAMES.lock().as_mut()?.alloc().map(|pa| Frame { pa })
}

/// Allocate one physical frame, zeroed: one zeroed ahead if there is one.
pub fn alloc_zeroed_frame() -> Option<Frame> {
    if let Some(pa) = ZEROED.lock().pop() {
        return Some(Frame { pa });
    }
    let mut frame = alloc_frame()?;
    frame.zero();
    Some(frame)
}

/// Zero up to `max` free frames ahead of demand (bounded work, for boot
/// and the idle CPU). Returns how many were zeroed.
pub fn zero_ahead(max: usize) -> usize {
    let mut done = 0;
    while done < max {
        if ZEROED.lock().len() >= ZEROED_MAX {
            break;
        }
        let Some(mut frame) = alloc_frame() else { break };
        frame.zero();
        ZEROED.lock().push(frame.pa);
        done += 1;
    }
    done
}

/// Allocate `count` physically contiguous frames (DMA memory for the NIC);
/// returns the first one's address.
pub fn alloc_contiguous(count: u64) -> Option<u64> {
    FRAMES.lock().as_mut()?.alloc_contiguous(count)
}

/// End of the usable RAM the frame allocator manages (the part of the
/// physical-memory window DMA buffers may lie in).
pub fn ram_end() -> u64 {
    RAM_END.load(core::sync::atomic::Ordering::Relaxed)
}

/// Allocate the named frame if it is free RAM nobody holds.
pub fn alloc_frame_at(pa: u64) -> Option<Frame> {
    // A frame zeroed ahead is free to whoever names it.
    let mut stash = ZEROED.lock();
    if let Some(at) = stash.iter().position(|&p| p == pa) {
        stash.swap_remove(at);
        return Some(Frame { pa });
    }
    drop(stash);
    FRAMES.lock().as_mut().is_some_and(|b| b.alloc_at(pa)).then_some(Frame { pa })
}

/// Return a frame to the allocator (a frame not allocated is refused and
/// logged: a double free changes nothing).
pub fn free_frame(pa: u64) {
    if let Some(bitmap) = FRAMES.lock().as_mut() {
        if !bitmap.free(pa) {
            log::warn!("refused to free frame {:#x} twice", pa);
        }
    }
}

/// Return a frame that held an environment's data: it is zeroed now (the
/// environment letting it go pays for scrubbing its own data, as Linux's
/// `init_on_free` does) and kept for the next `alloc_zeroed_frame`, or,
/// with the stash full, returned to the bitmap unzeroed. Either way no
/// frame reaches a new owner holding an old one's data.
pub fn scrub_free(pa: u64) {
    let mut stash = ZEROED.lock();
    if stash.len() < ZEROED_MAX && FRAMES.lock().as_ref().is_some_and(|b| b.is_allocated(pa)) {
        super::paging::zero_owned(pa);
        stash.push(pa);
        return;
    }
    drop(stash);
    free_frame(pa);
}

/// Number of free frames.
pub fn free_frames() -> u64 {
    let stashed = ZEROED.lock().len() as u64;
    FRAMES.lock().as_ref().map(|b| b.free_frames()).unwrap_or(0) + stashed
}

/// Bytes of kernel heap in use, and free.
pub fn heap_usage() -> (u64, u64) {
    let heap = HEAP.lock();
    (heap.used() as u64, heap.free() as u64)
}
