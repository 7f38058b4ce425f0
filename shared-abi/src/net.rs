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
