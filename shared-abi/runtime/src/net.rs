//! The network secure binding: `shared_abi::net` (ring layout, numbers,
//! filter handles, NIC info, the ring's arithmetic in [`rx`]), the user-side
//! stubs of the network calls, and the two pieces every libOS on the
//! network needs: a receive-ring consumer ([`RxRing`]) and a transmit page
//! ([`TxPage`]).

pub use shared_abi::net::*;

mod rx_ring;
mod tx_page;

pub use rx_ring::RxRing;
pub use tx_page::{TxPage, TX_AGAIN_RETRIES};

use crate::syscall::{decode, raw6, Error, FrameKey};

/// Register the receive ring at `ring_va` (`ring_len` bytes, page
/// aligned, at most 1 MiB); returns its slot count. [`RxRing::register`]
/// allocates, registers and consumes a ring without `unsafe`.
///
/// # Safety
/// The kernel writes into `[ring_va, ring_va + ring_len)` (the header's
/// `head` and `dropped` words, and packets into the slots) whenever a
/// packet arrives for this environment, for as long as the environment
/// lives or until another ring is registered. The caller must dedicate that
/// memory to the ring for all that time: it must not hold Rust values or be
/// given to an allocator, also after the caller stops using the ring (heap
/// memory for a ring is never freed), and it is read only as the ring
/// protocol says (volatile reads of the header; the slots between `tail`
/// and `head`). Pages of the dynamic window stay dedicated when remapped:
/// the kernel writes into whatever frame is mapped there then.
pub unsafe fn net_rx_ring(ring_va: u64, ring_len: u64) -> Result<u64, Error> {
    // SAFETY: the kernel checks the range (user half, mapped writable); the
    // caller dedicates it to the ring, as this function's contract says.
    decode(unsafe { raw6(nr::NET_RX_RING, ring_va, ring_len, 0, 0, 0, 0) })
}

/// Install an encoded filter ([`Filter::encode`](crate::filter::Filter::encode)); returns its id.
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
