//! The network secure binding's ABI: receive rings a libOS provides, the
//! filters that claim packets for them, key-checked transmit, NIC info.
//!
//! Receive: a libOS registers one receive ring in its own memory
//! (`net_rx_ring`) and installs filters (`net_filter_install`, encoding in
//! [`crate::filter`]). The kernel's driver takes each packet from the NIC,
//! demultiplexes it through the merged filter trie and copies it into the
//! owning environment's ring, then (if the libOS registered an interrupt
//! entry) upcalls it with `UpcallKind::Interrupt`, vector [`NET_RX`].
//! Packets nobody claims are counted and dropped.
//!
//! Ring layout (all little endian), at a page-aligned address:
//! ```text
//! 0   RxRingHeader (64 bytes)
//! 64  slot 0: len u32, reserved u32, data [RX_SLOT_SIZE - 8]
//! ..  slot i at 64 + i * RX_SLOT_SIZE
//! ```
//! The kernel writes slot `head % slot_count` and then increments `head`;
//! the libOS consumes slot `tail % slot_count` and increments `tail`. When
//! `head - tail == slot_count` the ring is full and packets are dropped
//! (counted in `dropped`).
//!
//! Transmit: the frame to send lives in a physical frame the libOS holds a
//! key for (read right), at `offset` for `len` bytes (`net_tx`).
//!
//! The ring's arithmetic is [`rx`]; the user stubs of the calls, and a ring
//! consumer and transmit page built on them, are in `libos_runtime::net`.

/// `UpcallFrame::vector` of the "packets arrived" interrupt upcall.
pub const NET_RX: u64 = 33;
/// Bytes per receive-ring slot (an Ethernet frame of up to 1514 bytes fits).
pub const RX_SLOT_SIZE: u64 = 2048;
/// Offset of slot 0 in the ring.
pub const RX_RING_HEADER: u64 = 64;
/// Largest frame `net_tx` accepts.
pub const MAX_FRAME: u64 = 1514;

/// The header at the start of a receive ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RxRingHeader {
    /// Slots the kernel has filled (monotonic).
    pub head: u64,
    /// Slots the libOS has consumed (monotonic; written by the libOS).
    pub tail: u64,
    /// Slots in the ring (set by the kernel at registration).
    pub slot_count: u64,
    /// Packets dropped because the ring was full.
    pub dropped: u64,
    pub _reserved: [u64; 4],
}

/// The handle of an installed packet filter (`net_filter_install`):
/// `generation << 32 | entry index` in the kernel's filter table. Opaque.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct FilterId(pub u64);

impl core::fmt::Display for FilterId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What `net_info` reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct NetInfo {
    /// The NIC's MAC address in the low 6 bytes (byte 0 first); 0 if no NIC.
    pub mac: u64,
    pub rx_packets: u64,
    /// Packets delivered to a ring.
    pub rx_delivered: u64,
    /// Packets no filter claimed (dropped).
    pub rx_unclaimed: u64,
    pub tx_packets: u64,
    /// Filters installed (all environments).
    pub filters: u64,
    /// 1 if the NIC raises interrupts (manifest `nic_irq = true`), 0 if
    /// the kernel polls it (at timer ticks, network calls and when idle).
    pub irq_mode: u64,
    /// Interrupts the NIC raised.
    pub irqs: u64,
}

/// System-call numbers of the network binding (continuing `syscall::nr`).
pub mod nr {
    /// `net_rx_ring(ring_va, ring_len) -> slot_count`: register the
    /// caller's receive ring (page aligned, writable, at least one slot).
    pub const NET_RX_RING: u64 = 22;
    /// `net_filter_install(filter_ptr, filter_len) -> filter_id`.
    pub const NET_FILTER_INSTALL: u64 = 23;
    /// `net_filter_remove(filter_id) -> 0` (own filters only).
    pub const NET_FILTER_REMOVE: u64 = 24;
    /// `net_tx(key_lo, key_hi, offset, len) -> len`: transmit `len` bytes
    /// at `offset` in a keyed frame.
    pub const NET_TX: u64 = 25;
    /// `net_info(out_ptr) -> 0`.
    pub const NET_INFO: u64 = 26;
    /// `demux_bench(filter_count, linear, packets) -> tsc_ticks`: a
    /// measurement call: build `filter_count` synthetic UDP-port filters,
    /// classify `packets` synthetic packets through the trie (`linear` = 0)
    /// or a linear scan (1) and return the ticks it took.
    pub const DEMUX_BENCH: u64 = 27;
}

/// The receive ring's arithmetic: its size, where a slot lives, how many
/// frames wait, which lengths to trust.
///
/// The kernel writes the header and the slots while the libOS reads them,
/// so a consumer trusts nothing it finds there: a `head` that runs more
/// than a ring ahead of `tail` (or behind it), or a length past the slot,
/// is clamped here.
pub mod rx {
    use super::{RX_RING_HEADER, RX_SLOT_SIZE};
    use crate::PAGE_SIZE;

    /// Bytes of a slot that hold the frame (after its `len` and reserved words).
    pub const SLOT_DATA_BYTES: usize = RX_SLOT_SIZE as usize - 8;

    /// Bytes of a ring with `slot_count` slots, rounded up to whole pages.
    pub fn ring_len_for(slot_count: u64) -> u64 {
        let bytes = RX_RING_HEADER + slot_count * RX_SLOT_SIZE;
        bytes.div_ceil(PAGE_SIZE) * PAGE_SIZE
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
            assert_eq!(ring_len_for(15), 32 * 1024);
            assert_eq!(ring_len_for(31), 64 * 1024);
            assert_eq!(ring_len_for(32), 68 * 1024);
            assert_eq!(slots_in(32 * 1024), 15);
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
                assert!(slots_in(ring_len_for(slots)) >= slots);
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
}
