//! The receive-ring consumer.

use super::{net_rx_ring, rx, RxRingHeader};
use crate::syscall::Error;
use crate::PAGE_SIZE;
use core::alloc::Layout;
use core::sync::atomic::{fence, Ordering};

/// A receive ring registered with the kernel, and our place in it.
///
/// The kernel copies each packet one of our filters claims into slot
/// `head % slot_count` and then bumps the header's `head`; we hand the
/// frame in slot `tail % slot_count` to the caller and then bump `tail`,
/// which gives the slot back. Nothing the kernel wrote is trusted: the
/// counts and lengths are clamped by [`shared_abi::net::rx`].
///
/// ```ignore
/// let mut ring = RxRing::register(31)?;
/// while let Some(len) = ring.pop(|frame| handle(frame)) { /* ... */ }
/// ```
pub struct RxRing {
    /// Start of the ring (the header), page aligned; the ring's for good.
    base: *mut u8,
    slot_count: u64,
    /// Slots consumed (our copy of the header's `tail`).
    tail: u64,
}

impl RxRing {
    /// Allocate a ring of `slots` slots (rounded up to whole pages: see
    /// [`rx::ring_len_for`]) from the heap, zeroed and page aligned, and
    /// register it with the kernel. The memory is never freed: the kernel
    /// may write into it for as long as this environment lives. Registering
    /// replaces any ring registered before (the old one then stays idle).
    ///
    /// Errors: `NoMemory` if the heap has no room, or what `net_rx_ring`
    /// answers (`InvalidArgument` if the kernel granted no slot).
    pub fn register(slots: u64) -> Result<RxRing, Error> {
        let ring_len = rx::ring_len_for(slots.max(1));
        let layout = Layout::from_size_align(ring_len as usize, PAGE_SIZE as usize).map_err(|_| Error::BadLength)?;
        // SAFETY: the layout has a nonzero size.
        let base = unsafe { alloc::alloc::alloc_zeroed(layout) };
        if base.is_null() {
            return Err(Error::NoMemory);
        }
        // SAFETY: the block was allocated for the ring alone, holds no Rust
        // value, and is never freed once registered (below), so it is the
        // ring's for the rest of the environment's life; we read it only
        // through the volatile accesses of this type.
        let granted = match unsafe { net_rx_ring(base as u64, ring_len) } {
            Ok(granted) => granted,
            Err(error) => {
                // SAFETY: the kernel refused the ring, so it never writes
                // there; the block came from `alloc_zeroed` with `layout`.
                unsafe { alloc::alloc::dealloc(base, layout) };
                return Err(error);
            }
        };
        let slot_count = granted.min(rx::slots_in(ring_len));
        if slot_count == 0 {
            return Err(Error::InvalidArgument);
        }
        Ok(RxRing { base, slot_count, tail: 0 })
    }

    fn header(&self) -> *mut RxRingHeader {
        self.base.cast()
    }

    /// Slots in the ring.
    pub fn slot_count(&self) -> u64 {
        self.slot_count
    }

    /// Frames consumed so far (the ring's `tail`): every frame received.
    pub fn received(&self) -> u64 {
        self.tail
    }

    /// Frames the kernel has put in the ring that we have not consumed.
    pub fn pending(&self) -> u64 {
        // SAFETY: the header lies at the start of the ring, which stays
        // allocated and mapped; the kernel writes `head`, so read it volatile.
        let head = unsafe { core::ptr::read_volatile(&raw const (*self.header()).head) };
        // The slots the kernel wrote before bumping `head` are read after this.
        fence(Ordering::Acquire);
        rx::pending(head, self.tail, self.slot_count)
    }

    /// Packets the kernel dropped because the ring was full.
    pub fn dropped(&self) -> u64 {
        // SAFETY: as in `pending`.
        unsafe { core::ptr::read_volatile(&raw const (*self.header()).dropped) }
    }

    /// Hand the oldest waiting frame to `consume`, then give its slot back
    /// (advance `tail`). None, without calling `consume`, if none waits.
    pub fn pop<R>(&mut self, consume: impl FnOnce(&[u8]) -> R) -> Option<R> {
        if self.pending() == 0 {
            return None;
        }
        let offset = rx::slot_offset(self.tail, self.slot_count);
        // SAFETY: the slot lies inside the ring (`slot_offset` and the slot
        // size stay within `ring_len_for(slot_count)`); between `tail` and
        // `head` it is ours: the kernel writes it again only after we bump
        // `tail` below, so the slice stays unchanged while `consume` runs.
        let result = unsafe {
            let slot = self.base.add(offset);
            let len = rx::frame_len(core::ptr::read_volatile(slot.cast::<u32>()));
            consume(core::slice::from_raw_parts(slot.add(8), len))
        };
        // Done reading the slot before the kernel may refill it.
        fence(Ordering::Release);
        self.tail += 1;
        // SAFETY: as in `pending`; `tail` is the one header word we write.
        unsafe { core::ptr::write_volatile(&raw mut (*self.header()).tail, self.tail) };
        Some(result)
    }

    /// Hand every frame waiting now to `consume`, oldest first, giving each
    /// slot back after it; returns how many. Frames that arrive meanwhile
    /// wait for the next call, so this ends even under a flood.
    pub fn drain(&mut self, mut consume: impl FnMut(&[u8])) -> u64 {
        let waiting = self.pending();
        let mut frames = 0;
        while frames < waiting && self.pop(&mut consume).is_some() {
            frames += 1;
        }
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{RX_RING_HEADER, RX_SLOT_SIZE};
    use alloc::vec;
    use alloc::vec::Vec;

    /// A ring in (leaked) test memory, written the way the kernel writes one:
    /// slot first, then `head`. Every access goes through `base`.
    struct FakeKernel {
        base: *mut u64,
        slot_count: u64,
        head: u64,
    }

    impl FakeKernel {
        fn new(slot_count: u64) -> Self {
            let words = rx::ring_len_for(slot_count) as usize / 8;
            let base = vec![0u64; words].leak().as_mut_ptr();
            FakeKernel { base, slot_count, head: 0 }
        }

        /// Header word `index` (0 head, 1 tail, 2 slot_count, 3 dropped).
        fn word(&self, index: usize) -> u64 {
            // SAFETY: inside the leaked ring.
            unsafe { self.base.add(index).read_volatile() }
        }

        fn set_word(&mut self, index: usize, value: u64) {
            // SAFETY: inside the leaked ring.
            unsafe { self.base.add(index).write_volatile(value) }
        }

        fn deliver(&mut self, frame: &[u8], len_field: u32) {
            let at = (RX_RING_HEADER + (self.head % self.slot_count) * RX_SLOT_SIZE) as usize;
            let slot = self.base.cast::<u8>().wrapping_add(at);
            // SAFETY: the slot and its `frame.len()` data bytes lie inside the ring.
            unsafe {
                slot.cast::<u32>().write_volatile(len_field);
                core::ptr::copy_nonoverlapping(frame.as_ptr(), slot.add(8), frame.len());
            }
            self.head += 1;
            self.set_word(0, self.head);
        }

        fn ring(&self) -> RxRing {
            RxRing { base: self.base.cast(), slot_count: self.slot_count, tail: 0 }
        }
    }

    #[test]
    fn frames_come_out_in_order_and_tail_follows() {
        let mut kernel = FakeKernel::new(3);
        let mut ring = kernel.ring();
        assert_eq!(ring.pop(|_| unreachable!("nothing waits")), None);
        kernel.deliver(b"one", 3);
        kernel.deliver(b"two!", 4);
        assert_eq!(ring.pending(), 2);
        assert_eq!(ring.pop(|f| f.to_vec()), Some(b"one".to_vec()));
        assert_eq!(kernel.word(1), 1, "tail written back after the frame");
        let mut seen = Vec::new();
        assert_eq!(ring.drain(|f| seen.push(f.to_vec())), 1);
        assert_eq!(seen, [b"two!".to_vec()]);
        assert_eq!((ring.pending(), ring.received(), kernel.word(1)), (0, 2, 2));
        // Around the end of the ring.
        for byte in [b"a", b"b", b"c"] {
            kernel.deliver(byte, 1);
        }
        let mut seen = Vec::new();
        assert_eq!(ring.drain(|f| seen.push(f[0])), 3);
        assert_eq!(seen, b"abc");
    }

    #[test]
    fn what_the_kernel_wrote_is_clamped() {
        let mut kernel = FakeKernel::new(2);
        let mut ring = kernel.ring();
        kernel.deliver(b"x", u32::MAX);
        assert_eq!(ring.pop(|f| f.len()), Some(rx::SLOT_DATA_BYTES), "a length past the slot");
        kernel.set_word(0, 1000); // a head far ahead
        assert_eq!(ring.pending(), 2);
        kernel.set_word(3, 7);
        assert_eq!(ring.dropped(), 7);
    }
}
