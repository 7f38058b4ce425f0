//! The network subsystem, the network secure binding (ABI in
//! `shared_abi::net`): it owns the NIC, the receive rings the libOSes lend,
//! and their packet filters merged into one decision trie; it transmits
//! from frames whose keys the kernel checked, and polls frames from the NIC
//! into rings.
//!
//! * Receive: with `nic_irq = true` (the default) the NIC interrupts
//!   through the I/O APIC and the kernel drains its receive queue then;
//!   otherwise (or if the firmware gave the NIC no interrupt line) it polls:
//!   on every timer interrupt, every network call, and every few
//!   milliseconds while the CPU idles. Each frame is classified by
//!   the merged trie ([`kcore::filter::Demux`]) and copied into the
//!   owning environment's ring through the checked user-memory path. The
//!   ring header is the libOS's memory, so the kernel keeps `head`,
//!   `slot_count` and `dropped` itself and only *reads* `tail`; a `tail`
//!   that makes no sense (ahead of `head`, or more than a ring behind) drops
//!   the packet. A ring page the libOS unmapped also drops it.
//! * A delivery wakes the environment if it sleeps in `block`, so a
//!   libOS waiting for packets sleeps until one arrives or its deadline.
//! * After a delivery, an environment that registered an interrupt entry is
//!   owed one `Interrupt` upcall with vector `NET_RX`; it is delivered when
//!   the environment next runs its ordinary code (not while it is inside an
//!   upcall handler or a protected-entry activation), at a context switch
//!   or at a timer tick (before that tick's slot-end upcall, which then
//!   nests above it). Several deliveries before that make one upcall.
//! * No NIC (QEMU started without virtio-net): the kernel runs as usual,
//!   `net_info` reports MAC 0, `demux_bench` works, and the other network
//!   calls answer `InvalidArgument`.
//! * When an environment ends, its filters and ring go with it.

use crate::arch::nic::Nic;
use crate::arch::paging::AddressSpace;
use crate::umem::{self, UserSlice};
use alloc::vec;
use alloc::vec::Vec;
use kcore::filter::{Demux, FilterId};
use shared_abi::filter::MAX_ENCODED_LEN;
use shared_abi::net::{NetInfo, RxRingHeader, MAX_FRAME, RX_RING_HEADER, RX_SLOT_SIZE};
use shared_abi::syscall::Error;

/// Most packets one `demux_bench` call classifies (trie: about 200
/// instructions each for the benchmark's filters, so at most ~4M
/// instructions with interrupts off).
pub const MAX_BENCH_PACKETS: u64 = 20_000;
/// Most filter checks one linear `demux_bench` call makes (filters times
/// packets; about 200 instructions each).
pub const MAX_BENCH_LINEAR_WORK: u64 = 2_000_000;

/// Largest receive ring a libOS may register.
pub const MAX_RING_BYTES: u64 = 1 << 20;
/// Byte offsets of the header fields the kernel reads or writes.
const HEAD_OFFSET: u64 = 0;
const TAIL_OFFSET: u64 = 8;
const DROPPED_OFFSET: u64 = 24;

/// One environment's registered receive ring (the kernel's own copy of
/// what matters: the libOS may scribble on the header in its memory).
struct Ring {
    va: u64,
    slot_count: u64,
    head: u64,
    dropped: u64,
}

/// Kernel-wide network state.
pub struct Net {
    nic: Option<Nic>,
    mac: u64,
    demux: Demux,
    /// Secret seed of the demultiplexer's hash maps (also for benchmarks).
    hash_seed: u64,
    /// By environment index.
    rings: Vec<Option<Ring>>,
    /// By environment index: a `NET_RX` upcall is owed.
    rx_upcall_owed: Vec<bool>,
    counters: NetInfo,
    /// The manifest allows `demux_bench`.
    benchmarks: bool,
    /// Environments the manifest booted (the tables' size at boot).
    boot_envs: usize,
}

impl Net {
    pub fn new(nic: Option<Nic>, hash_seed: u64, env_count: usize, benchmarks: bool) -> Net {
        let mac = nic.as_ref().map_or(0, |nic| {
            let mut bytes = [0u8; 8];
            bytes[..6].copy_from_slice(&nic.mac());
            u64::from_le_bytes(bytes)
        });
        Net {
            nic,
            mac,
            demux: Demux::new(hash_seed),
            hash_seed,
            rings: (0..env_count).map(|_| None).collect(),
            rx_upcall_owed: vec![false; env_count],
            counters: NetInfo::default(),
            benchmarks,
            boot_envs: env_count,
        }
    }

    /// Filters environment `env_id` has installed (charged to its
    /// kernel-memory budget).
    pub fn filters_of(&self, env_id: u64) -> usize {
        self.demux.filters_of(env_id)
    }

    /// Filters installed by every environment.
    pub fn filter_count(&self) -> usize {
        self.demux.len()
    }

    /// Every environment ended: drop the demultiplexer's storage.
    pub fn retire_filters(&mut self) {
        self.demux.retire();
        // Back to the tables built at boot (run-time environments grew them).
        self.rings.truncate(self.boot_envs);
        self.rings.shrink_to_fit();
        self.rx_upcall_owed.truncate(self.boot_envs);
        self.rx_upcall_owed.shrink_to_fit();
    }
}

impl Net {
    /// `InvalidArgument` without a NIC (the calls that need one).
    pub fn require_nic(&self) -> Result<(), Error> {
        if self.nic.is_some() {
            Ok(())
        } else {
            Err(Error::InvalidArgument)
        }
    }

    /// Have the NIC interrupt on `vector`; false if it has none to give
    /// (or there is no NIC): it stays polled.
    pub fn enable_irq(&mut self, vector: u8) -> bool {
        let on = self.nic.as_mut().is_some_and(|nic| nic.enable_irq(vector));
        self.counters.irq_mode = on as u64;
        on
    }

    /// The NIC is polled (no interrupts) and some environment waits for
    /// packets: the idle CPU must wake up now and then to look.
    pub fn needs_polling(&self) -> bool {
        self.nic.as_ref().is_some_and(|nic| !nic.irq_mode()) && self.rings.iter().any(Option::is_some)
    }

    /// Move every frame the NIC has received into the ring of the
    /// environment that claims it. `env` finds a running environment's
    /// index and address space by id; `delivered` hears each environment
    /// index a frame was delivered to.
    pub fn poll<'a>(
        &mut self,
        env: impl Fn(u64) -> Option<(usize, &'a AddressSpace)>,
        mut delivered: impl FnMut(usize),
    ) {
        let Some(mut nic) = self.nic.take() else { return };
        nic.drain(|frame| {
            if let Some(index) = self.demultiplex(frame, &env) {
                delivered(index);
            }
        });
        self.nic = Some(nic);
    }

    fn demultiplex<'a>(
        &mut self,
        frame: &[u8],
        env: &impl Fn(u64) -> Option<(usize, &'a AddressSpace)>,
    ) -> Option<usize> {
        self.counters.rx_packets += 1;
        let Some((index, space)) = self.demux.classify(frame).and_then(|(env_id, _)| env(env_id)) else {
            self.counters.rx_unclaimed += 1;
            return None;
        };
        if !self.copy_into_ring(index, space, frame) {
            return None;
        }
        self.counters.rx_delivered += 1;
        self.rx_upcall_owed[index] = true;
        Some(index)
    }

    /// Copy `frame` into env `index`'s ring; false if it was dropped.
    fn copy_into_ring(&mut self, index: usize, space: &AddressSpace, frame: &[u8]) -> bool {
        let Some(ring) = self.rings[index].as_mut() else {
            return false;
        };
        let Ok(tail) = umem::read_value::<u64>(space, ring.va + TAIL_OFFSET) else {
            return false;
        };
        let in_flight = ring.head.wrapping_sub(tail);
        if in_flight >= ring.slot_count {
            // Full (or a tail that makes no sense): drop and say so.
            ring.dropped += 1;
            let _ = umem::write_value(space, ring.va + DROPPED_OFFSET, &ring.dropped);
            return false;
        }
        let len = frame.len().min((RX_SLOT_SIZE - 8) as usize);
        let mut slot = [0u8; RX_SLOT_SIZE as usize];
        slot[..4].copy_from_slice(&(len as u32).to_le_bytes());
        slot[8..8 + len].copy_from_slice(&frame[..len]);
        let slot_va = ring.va + RX_RING_HEADER + (ring.head % ring.slot_count) * RX_SLOT_SIZE;
        let written = UserSlice::new(space, slot_va, 8 + len as u64, 8).and_then(|s| s.write(&slot[..8 + len]));
        if written.is_err() {
            return false;
        }
        ring.head += 1;
        umem::write_value(space, ring.va + HEAD_OFFSET, &ring.head).is_ok()
    }

    /// Is a `NET_RX` upcall owed to env `index`?
    pub fn rx_owed(&self, index: usize) -> bool {
        self.rx_upcall_owed.get(index).copied().unwrap_or(false)
    }

    /// The owed `NET_RX` upcall is being delivered (or cannot be).
    pub fn clear_rx_owed(&mut self, index: usize) {
        if let Some(owed) = self.rx_upcall_owed.get_mut(index) {
            *owed = false;
        }
    }

    /// A run-time environment was placed at `index`: room for its ring.
    pub fn add_env(&mut self, index: usize) {
        if self.rings.len() <= index {
            self.rings.resize_with(index + 1, || None);
            self.rx_upcall_owed.resize(index + 1, false);
        }
    }

    /// Env `index` (id `env_id`) ended: its filters and ring go.
    pub fn env_ended(&mut self, index: usize, env_id: u64) {
        self.demux.remove_env(env_id);
        if let Some(ring) = self.rings.get_mut(index) {
            *ring = None;
        }
        self.clear_rx_owed(index);
    }

    /// `net_rx_ring(ring_va, ring_len) -> slot_count` for env `index`.
    pub fn rx_ring(&mut self, index: usize, space: &AddressSpace, ring_va: u64, ring_len: u64) -> Result<u64, Error> {
        if !ring_va.is_multiple_of(4096) {
            return Err(Error::Misaligned);
        }
        if !(RX_RING_HEADER + RX_SLOT_SIZE..=MAX_RING_BYTES).contains(&ring_len) {
            return Err(Error::BadLength);
        }
        // Every page must be the caller's and writable: zero it all.
        let zeros = [0u8; 4096];
        let mut at = 0;
        while at < ring_len {
            let chunk = (ring_len - at).min(4096);
            UserSlice::new(space, ring_va + at, chunk, 1)?.write(&zeros[..chunk as usize])?;
            at += chunk;
        }
        let slot_count = (ring_len - RX_RING_HEADER) / RX_SLOT_SIZE;
        let header = RxRingHeader { slot_count, ..Default::default() };
        umem::write_value(space, ring_va, &header)?;
        self.rings[index] = Some(Ring { va: ring_va, slot_count, head: 0, dropped: 0 });
        Ok(slot_count)
    }

    /// `net_filter_install(filter_ptr, filter_len) -> filter_id` for env
    /// `env_id`; `room` says whether its kernel-memory budget has room for
    /// one more filter.
    pub fn filter_install(
        &mut self,
        env_id: u64,
        space: &AddressSpace,
        ptr: u64,
        len: u64,
        room: Result<(), Error>,
    ) -> Result<u64, Error> {
        if len == 0 || len > MAX_ENCODED_LEN as u64 {
            return Err(Error::BadLength);
        }
        let mut encoded = [0u8; MAX_ENCODED_LEN];
        UserSlice::new(space, ptr, len, 1)?.read(&mut encoded[..len as usize])?;
        room?;
        let id = self.demux.install(env_id, &encoded[..len as usize])?;
        Ok(id.raw())
    }

    /// `net_filter_remove(filter_id) -> 0` for env `env_id`.
    pub fn filter_remove(&mut self, env_id: u64, filter_id: shared_abi::net::FilterId) -> Result<u64, Error> {
        self.demux.remove(env_id, FilterId::from_raw(filter_id.0))?;
        Ok(0)
    }

    /// `net_tx`: transmit `len` bytes at `offset` of a frame. The
    /// arguments are checked first; only then does `frame` check the
    /// caller's key and give the frame's physical address.
    pub fn transmit(
        &mut self,
        offset: u64,
        len: u64,
        frame: impl FnOnce() -> Result<u64, Error>,
    ) -> Result<u64, Error> {
        if len == 0 || len > MAX_FRAME {
            return Err(Error::BadLength);
        }
        if offset.checked_add(len).is_none_or(|end| end > 4096) {
            return Err(Error::InvalidArgument);
        }
        let frame_pa = frame()?;
        let sent = self.nic.as_mut().is_some_and(|nic| nic.transmit_from_frame(frame_pa, offset, len as usize));
        if !sent {
            return Err(Error::Again);
        }
        self.counters.tx_packets += 1;
        Ok(len)
    }

    /// `net_info(out_ptr) -> 0`.
    pub fn info(&self, space: &AddressSpace, out: u64) -> Result<u64, Error> {
        let irqs = crate::counters::COUNTERS.nic_interrupts.load(core::sync::atomic::Ordering::Relaxed);
        let info = NetInfo { mac: self.mac, filters: self.demux.len() as u64, irqs, ..self.counters };
        umem::write_value(space, out, &info)?;
        Ok(0)
    }

    /// `demux_bench(filter_count, linear, packets) -> tsc_ticks`: a private
    /// demultiplexer with `filter_count` "UDP to port N" filters; time
    /// classifying a packet for the last-installed one `packets` times.
    /// Benchmark scenarios only, and bounded: the kernel runs it with
    /// interrupts off.
    pub fn demux_bench(&mut self, filter_count: u64, linear: u64, packets: u64) -> Result<u64, Error> {
        if !self.benchmarks {
            return Err(Error::PermissionDenied);
        }
        if !(1..=1000).contains(&filter_count) || !(1..=MAX_BENCH_PACKETS).contains(&packets) || linear > 1 {
            return Err(Error::InvalidArgument);
        }
        if linear == 1 && filter_count * packets > MAX_BENCH_LINEAR_WORK {
            return Err(Error::InvalidArgument);
        }
        const FIRST_PORT: u16 = 10_000;
        let mut demux = Demux::new(self.hash_seed ^ 0x0062_656e_6368);
        for n in 0..filter_count as u16 {
            let filter = shared_abi::filter::Filter::udp_dst_port(FIRST_PORT + n).encode();
            demux.install(1, &filter).map_err(|_| Error::NoMemory)?;
        }
        let packet = synthetic_udp(FIRST_PORT + filter_count as u16 - 1);
        let expected = if linear == 1 { demux.classify_linear(&packet) } else { demux.classify(&packet) };
        if expected.is_none() {
            return Err(Error::InvalidArgument);
        }
        let start = crate::arch::cpu::rdtsc();
        for _ in 0..packets {
            let packet = core::hint::black_box(&packet[..]);
            let answer = if linear == 1 { demux.classify_linear(packet) } else { demux.classify(packet) };
            core::hint::black_box(answer);
        }
        Ok(crate::arch::cpu::rdtsc() - start)
    }
}

/// A minimal Ethernet + IPv4 + UDP frame to `dst_port` (checksums zero:
/// filters do not look at them).
fn synthetic_udp(dst_port: u16) -> [u8; 60] {
    let mut frame = [0u8; 60];
    frame[0..6].copy_from_slice(&[0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    frame[6..12].copy_from_slice(&[0x52, 0x55, 0x0a, 0x00, 0x02, 0x02]);
    frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    frame[14] = 0x45;
    frame[16..18].copy_from_slice(&46u16.to_be_bytes());
    frame[22] = 64;
    frame[23] = 17;
    frame[26..30].copy_from_slice(&[10, 0, 2, 2]);
    frame[30..34].copy_from_slice(&[10, 0, 2, 15]);
    frame[34..36].copy_from_slice(&40000u16.to_be_bytes());
    frame[36..38].copy_from_slice(&dst_port.to_be_bytes());
    frame[38..40].copy_from_slice(&26u16.to_be_bytes());
    frame
}
