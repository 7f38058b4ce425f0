//! The receive ring's arithmetic: where a slot lives, how many frames wait, which lengths to trust.
//!
//! The ring is memory the libOS lent the kernel (layout in
//! `shared_abi::net`): the kernel fills slot `head % slot_count` and bumps
//! `head`; the libOS consumes slot `tail % slot_count` and bumps `tail`.
//! The kernel writes the header and the slots while the libOS reads them,
//! so nothing it wrote is trusted: a `head` that runs more than a ring
//! ahead, or a length past the slot, is clamped here.

use shared_abi::net::{RX_RING_HEADER, RX_SLOT_SIZE};

/// Bytes of a slot that hold the frame (after its `len` and reserved words).
pub const SLOT_DATA_BYTES: usize = RX_SLOT_SIZE as usize - 8;

/// Bytes of a ring with `slot_count` slots, rounded up to whole pages.
pub fn ring_len_for(slot_count: u64) -> u64 {
    let bytes = RX_RING_HEADER + slot_count * RX_SLOT_SIZE;
    bytes.div_ceil(shared_abi::PAGE_SIZE) * shared_abi::PAGE_SIZE
}

/// Slots a ring of `ring_len` bytes holds.
pub fn slots_in(ring_len: u64) -> u64 {
    ring_len.saturating_sub(RX_RING_HEADER) / RX_SLOT_SIZE
}

/// Byte offset (from the ring's start) of the slot that the monotonic
/// index `index` names.
pub fn slot_offset(index: u64, slot_count: u64) -> usize {
    (RX_RING_HEADER + (index % slot_count.max(1)) * RX_SLOT_SIZE) as usize
}

/// Frames waiting: `head - tail`, never more than the ring holds (a head
/// that claims more is not believed).
pub fn pending(head: u64, tail: u64, slot_count: u64) -> u64 {
    head.wrapping_sub(tail).min(slot_count)
}

/// The frame length to read from a slot whose `len` word says `len_field`.
pub fn frame_len(len_field: u32) -> usize {
    (len_field as usize).min(SLOT_DATA_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry() {
        assert_eq!(ring_len_for(1), 4096);
        assert_eq!(ring_len_for(31), 64 * 1024);
        assert_eq!(ring_len_for(32), 68 * 1024);
        assert_eq!(slots_in(64 * 1024), 31);
        assert_eq!(slots_in(68 * 1024), 33);
        assert_eq!(slots_in(10), 0);
        assert_eq!(slot_offset(0, 31), 64);
        assert_eq!(slot_offset(1, 31), 64 + 2048);
        assert_eq!(slot_offset(31, 31), 64);
        assert_eq!(slot_offset(5, 0), 64, "a zero slot count does not divide by zero");
        for slots in 1..40 {
            let last_end = slot_offset(slots - 1, slots) + RX_SLOT_SIZE as usize;
            assert!(last_end as u64 <= ring_len_for(slots));
        }
    }

    #[test]
    fn untrusted_values_are_clamped() {
        assert_eq!(pending(10, 7, 31), 3);
        assert_eq!(pending(7, 7, 31), 0);
        assert_eq!(pending(1000, 7, 31), 31);
        assert_eq!(pending(3, 7, 31), 31, "a head behind the tail is clamped too");
        assert_eq!(pending(2, u64::MAX, 31), 3, "indices wrap");
        assert_eq!(frame_len(60), 60);
        assert_eq!(frame_len(u32::MAX), SLOT_DATA_BYTES);
    }
}
