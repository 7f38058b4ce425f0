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

#[cfg(feature = "runtime")]
pub use stubs::*;

/// The user stubs of the network calls.
#[cfg(feature = "runtime")]
mod stubs {
    use super::{nr, FilterId, NetInfo};
    use crate::syscall::{decode, raw6, Error, FrameKey};

    /// Register the receive ring at `ring_va` (`ring_len` bytes, page
    /// aligned, at most 1 MiB); returns its slot count. The kernel writes
    /// into the ring for as long as the environment lives (or until another
    /// ring is registered), so the memory must stay the ring's.
    pub fn net_rx_ring(ring_va: u64, ring_len: u64) -> Result<u64, Error> {
        // SAFETY: the kernel writes only inside [ring_va, ring_va + ring_len),
        // which the caller dedicates to the ring.
        decode(unsafe { raw6(nr::NET_RX_RING, ring_va, ring_len, 0, 0, 0, 0) })
    }

    /// Install an encoded filter (`crate::filter::Filter::encode`); returns its id.
    pub fn net_filter_install(encoded: &[u8]) -> Result<FilterId, Error> {
        // SAFETY: the kernel only reads `encoded`.
        decode(unsafe { raw6(nr::NET_FILTER_INSTALL, encoded.as_ptr() as u64, encoded.len() as u64, 0, 0, 0, 0) })
            .map(FilterId)
    }

    /// Remove one of the caller's filters.
    pub fn net_filter_remove(filter_id: FilterId) -> Result<(), Error> {
        // SAFETY: no memory is passed.
        decode(unsafe { raw6(nr::NET_FILTER_REMOVE, filter_id.0, 0, 0, 0, 0, 0) }).map(|_| ())
    }

    /// Transmit `len` bytes at `offset` in the frame `key` names (read right).
    pub fn net_tx(key: FrameKey, offset: u64, len: u64) -> Result<u64, Error> {
        // SAFETY: the kernel only reads the frame the key names.
        decode(unsafe { raw6(nr::NET_TX, key.handle, key.mac, offset, len, 0, 0) })
    }

    /// The NIC's MAC (0 if there is none) and the binding's counters.
    pub fn net_info() -> Result<NetInfo, Error> {
        let mut out = NetInfo::default();
        // SAFETY: the kernel writes one NetInfo into `out`.
        decode(unsafe { raw6(nr::NET_INFO, &mut out as *mut NetInfo as u64, 0, 0, 0, 0, 0) })?;
        Ok(out)
    }

    /// Measurement: TSC ticks to classify `packets` synthetic packets with
    /// `filter_count` filters installed, through the trie or (`linear`) a
    /// linear scan.
    pub fn demux_bench(filter_count: u64, linear: bool, packets: u64) -> Result<u64, Error> {
        // SAFETY: no memory is passed.
        decode(unsafe { raw6(nr::DEMUX_BENCH, filter_count, linear as u64, packets, 0, 0, 0) })
    }
}
