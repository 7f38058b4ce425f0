//! Netecho: the network secure binding end to end, without a TCP/IP stack.
//!
//! `args = echo`: registers a receive ring, claims ARP for 10.0.2.15 and
//! UDP port 7, answers ARP requests and echoes UDP datagrams back (MACs,
//! IPs and ports swapped, IPv4 checksum fixed, UDP checksum 0) through a
//! keyed transmit frame, until it has echoed `echoes` datagrams or
//! `time_ms` passed; then prints its counts and exits 0.
//!
//! `args = rival`: once the echo env's filters are in, checks that the
//! kernel refuses a filter claiming the same packets (permission-denied),
//! a malformed filter (invalid-argument), removing another env's filter
//! (permission-denied) and a transmit with a forged key (bad-key), and
//! accepts a filter nobody else claims.
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::{AtomicU64, Ordering};
use libos_runtime::filter::{proto, Filter};
use libos_runtime::net::{self, RxRing, TxPage, NET_RX};
use libos_runtime::println;
use libos_runtime::rt::{rdtsc, set_handler, Env};
use libos_runtime::start::DYNAMIC_BASE;
use libos_runtime::syscall::{self, map_flags, Error, FrameKey};
use libos_runtime::upcall::{UpcallFrame, UpcallKind, SLOT_END};

libos_runtime::libos_main!(main);

/// The guest's address under QEMU user networking.
const MY_IP: [u8; 4] = [10, 0, 2, 15];
/// Where the transmit frame is mapped.
const TX_VA: u64 = DYNAMIC_BASE + 0x10_0000;
/// Receive-ring slots (a ring of 8 pages).
const RING_SLOTS: u64 = 15;
/// Offset of the ARP target protocol address in an Ethernet frame.
const ARP_TARGET_IP: u16 = proto::IPV4_OFFSET + 24;

static RX_UPCALLS: AtomicU64 = AtomicU64::new(0);

fn main(env: &Env) -> i32 {
    match env.args.trim() {
        "rival" => rival(env),
        _ => echo(env),
    }
}

fn param(env: &Env, key: &str, default: u64) -> u64 {
    env.param(key).and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// Interrupt upcalls: count NET_RX; give the CPU back at a slot's end.
fn on_interrupt(frame: &mut UpcallFrame) {
    if frame.vector == NET_RX {
        RX_UPCALLS.fetch_add(1, Ordering::Relaxed);
    } else if frame.vector == SLOT_END && frame.fault_addr == 0 {
        syscall::yield_now();
    }
}

fn echo(env: &Env) -> i32 {
    let want = param(env, "echoes", 3);
    let limit_ticks = param(env, "time_ms", 30_000) * (env.tsc_hz / 1000);
    let info = net::net_info().expect("net_info");
    if info.mac == 0 {
        println!("netecho: no NIC");
        return 1;
    }
    let mac: [u8; 6] = info.mac.to_le_bytes()[..6].try_into().expect("6 bytes");
    set_handler(UpcallKind::Interrupt, on_interrupt).expect("interrupt handler");

    let mut ring = RxRing::register(RING_SLOTS).expect("register the ring");

    let arp = Filter::new().ethertype(proto::ETHERTYPE_ARP).match_u32(ARP_TARGET_IP, u32::from_be_bytes(MY_IP));
    net::net_filter_install(&arp.encode()).expect("install the ARP filter");
    net::net_filter_install(&Filter::udp_dst_port(7).encode()).expect("install the UDP port 7 filter");

    // SAFETY: nothing else in this program maps or touches the page at TX_VA.
    let mut tx = unsafe { TxPage::new(TX_VA, map_flags::GUARANTEED) }.expect("a mapped transmit frame");
    println!("netecho: ring of {} slots, filters in, echoing {} datagrams", ring.slot_count(), want);

    let start = rdtsc();
    let (mut echoed, mut arps, mut other, mut tx_errors) = (0u64, 0u64, 0u64, 0u64);
    while echoed < want && rdtsc() - start < limit_ticks {
        // The reply is built straight in the transmit page: (ethertype, length).
        let Some(reply) = ring.pop(|packet| {
            let out = tx.buffer();
            match ethertype(packet) {
                Some(0x0806) => arp_reply(packet, mac, out).map(|len| (0x0806, len)),
                Some(0x0800) => udp_echo(packet, mac, out).map(|len| (0x0800, len)),
                _ => None,
            }
        }) else {
            // Nothing waiting: a network call makes the kernel poll the NIC.
            let _ = net::net_info();
            continue;
        };
        let Some((kind, len)) = reply else {
            other += 1;
            continue;
        };
        match tx.transmit(len) {
            Ok(_) if kind == 0x0806 => arps += 1,
            Ok(_) => echoed += 1,
            Err(error) => {
                tx_errors += 1;
                println!("netecho: net_tx: {}", error.name());
            }
        }
    }
    let info = net::net_info().unwrap_or_default();
    println!(
        "netecho: echoed={} arp_replies={} other={} tx_errors={} dropped={} rx_upcalls={} kernel_rx={} kernel_unclaimed={} kernel_tx={}",
        echoed,
        arps,
        other,
        tx_errors,
        ring.dropped(),
        RX_UPCALLS.load(Ordering::Relaxed),
        info.rx_packets,
        info.rx_unclaimed,
        info.tx_packets
    );
    0
}

fn ethertype(frame: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]))
}

/// An ARP reply to a request for our address, built in `out`; its length.
fn arp_reply(frame: &[u8], mac: [u8; 6], out: &mut [u8]) -> Option<usize> {
    if frame.len() < 42 || frame[20..22] != [0, 1] || frame[38..42] != MY_IP {
        return None;
    }
    out[0..6].copy_from_slice(&frame[6..12]);
    out[6..12].copy_from_slice(&mac);
    out[12..14].copy_from_slice(&[0x08, 0x06]);
    out[14..20].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    out[20..22].copy_from_slice(&[0, 2]);
    out[22..28].copy_from_slice(&mac);
    out[28..32].copy_from_slice(&MY_IP);
    out[32..38].copy_from_slice(&frame[22..28]);
    out[38..42].copy_from_slice(&frame[28..32]);
    Some(42)
}

/// The datagram sent back where it came from, built in `out`; its length.
fn udp_echo(frame: &[u8], mac: [u8; 6], out: &mut [u8]) -> Option<usize> {
    if frame.len() < 34 {
        return None;
    }
    let ihl = (frame[14] & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([frame[16], frame[17]]) as usize;
    let len = 14 + total;
    if ihl < 20 || frame[23] != 17 || len > frame.len() || len > 1514 || len > out.len() || total < ihl + 8 {
        return None;
    }
    out[..len].copy_from_slice(&frame[..len]);
    out[0..6].copy_from_slice(&frame[6..12]);
    out[6..12].copy_from_slice(&mac);
    out[26..30].copy_from_slice(&frame[30..34]);
    out[30..34].copy_from_slice(&frame[26..30]);
    out[22] = 64;
    out[24..26].copy_from_slice(&[0, 0]);
    let checksum = ipv4_checksum(&out[14..14 + ihl]);
    out[24..26].copy_from_slice(&checksum.to_be_bytes());
    let udp = 14 + ihl;
    out[udp..udp + 2].copy_from_slice(&frame[udp + 2..udp + 4]);
    out[udp + 2..udp + 4].copy_from_slice(&frame[udp..udp + 2]);
    out[udp + 6..udp + 8].copy_from_slice(&[0, 0]);
    Some(len)
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header.chunks(2).map(|w| u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]) as u32).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn outcome(result: Result<u64, Error>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(error) => error.name(),
    }
}

fn rival(env: &Env) -> i32 {
    let limit_ticks = param(env, "time_ms", 30_000) * (env.tsc_hz / 1000);
    let start = rdtsc();
    // Wait until the echo env has claimed ARP and UDP port 7.
    while net::net_info().map(|i| i.filters).unwrap_or(0) < 2 {
        if rdtsc() - start > limit_ticks {
            println!("netecho: rival: the echo env never installed its filters");
            return 1;
        }
        syscall::yield_now();
    }
    let conflict = outcome(net::net_filter_install(&Filter::udp_dst_port(7).encode()).map(|id| id.0));
    let mut bad_version = Filter::udp_dst_port(9).encode();
    bad_version[0] = 99;
    let malformed = outcome(net::net_filter_install(&bad_version).map(|id| id.0));
    // The echo env installed first: its first filter has handle 0.
    let foreign_remove = outcome(net::net_filter_remove(net::FilterId(0)).map(|_| 0));
    let forged_tx = outcome(net::net_tx(FrameKey { handle: 1, mac: 0xdead_beef }, 0, 60));
    let own = net::net_filter_install(&Filter::udp_dst_port(9).encode());
    let own_remove = own.and_then(|id| net::net_filter_remove(id).map(|_| 0));
    println!(
        "netecho: rival conflict={} malformed={} foreign_remove={} forged_tx={} own={}",
        conflict,
        malformed,
        foreign_remove,
        forged_tx,
        outcome(own_remove)
    );
    let expected = conflict == "permission-denied"
        && malformed == "invalid-argument"
        && foreign_remove == "permission-denied"
        && forged_tx == "bad-key"
        && own_remove.is_ok();
    if expected {
        0
    } else {
        1
    }
}
