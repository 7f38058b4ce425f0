//! The network stack: smoltcp over the kernel's network secure binding, serving UDP echo (port 7) and HTTP/1.0 (port 80).
//!
//! The exokernel only moves frames: it copies each received frame that one
//! of our downloaded filters claims into the receive ring we lent it, and
//! transmits frames from a page frame we hold a key for. Everything above
//! (ARP, IPv4, UDP, TCP, HTTP) runs here, in the libOS:
//!
//! * [`ExoNic`] is a smoltcp [`Device`] over the runtime's receive ring
//!   and transmit page: its receive token hands smoltcp the frame in the
//!   ring's oldest slot and then gives the slot back ([`RxRing::pop`]); its
//!   transmit token lets smoltcp build the frame in our keyed transmit page
//!   and then sends it with `net_tx` ([`TxPage::send_with`]).
//! * Filters claim ARP for our address, UDP to port 7 and TCP to port 80;
//!   nothing else reaches us.
//! * The poll loop drives `Interface::poll` with a clock from the TSC and
//!   yields the CPU when no frame waits and no socket has work.
//!
//! The addresses are QEMU user networking's: we are 10.0.2.15/24, the
//! gateway (the host) is 10.0.2.2.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt::Write as _;
use core::sync::atomic::{AtomicU64, Ordering};
use libos_runtime::filter::{proto, Filter};
use libos_runtime::frames::AllocMapError;
use libos_runtime::net::{self as sys, RxRing, TxPage, MAX_FRAME, NET_RX, RX_SLOT_SIZE};
use libos_runtime::println;
use libos_runtime::rt::{rdtsc, set_handler, Env};
use libos_runtime::start::{DYNAMIC_BASE, DYNAMIC_END};
use libos_runtime::syscall::{self, Error};
use libos_runtime::upcall::{UpcallFrame, UpcallKind, SLOT_END};
use libos_unix::http::{self, Server};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, IpEndpoint, Ipv4Address};

/// Our IPv4 address (QEMU user networking gives the guest this one).
pub const GUEST_IP: [u8; 4] = [10, 0, 2, 15];
pub const PREFIX_LEN: u8 = 24;
/// QEMU user networking's gateway, which is also where forwarded host
/// connections come from.
pub const GATEWAY_IP: [u8; 4] = [10, 0, 2, 2];
pub const ECHO_PORT: u16 = 7;
pub const HTTP_PORT: u16 = 80;

/// Receive-ring slots we lend the kernel.
const RX_SLOTS: u64 = 31;
/// Where the transmit frame is mapped: a page of the dynamic window that
/// no other libos-unix mode uses (the pager's region starts at its base).
const TX_VA: u64 = DYNAMIC_BASE + 0x0010_0000_0000;
const _: () = assert!(TX_VA >= DYNAMIC_BASE && TX_VA < DYNAMIC_END);
/// TCP sockets listening on the HTTP port (one connection each).
const HTTP_SOCKETS: usize = 16;
/// A client that sends nothing for this long before its request head ends
/// is answered 408 and closed, so a stalled client holds a socket briefly.
const HTTP_IDLE_MS: u64 = 2_000;
/// How long after the last counted request we keep polling so the
/// responses reach the client (FIN acknowledged).
const FLUSH_GRACE_MS: u64 = 3000;
/// Offset of the target protocol address in an Ethernet + ARP frame.
const ARP_TARGET_IP_OFFSET: u16 = proto::IPV4_OFFSET + 24;

static RX_UPCALLS: AtomicU64 = AtomicU64::new(0);

// ---------------------------------------------------------------------------
// The device: the runtime's receive ring in, its transmit page out.

/// The network device smoltcp sees.
struct ExoNic {
    rx: RxRing,
    tx: TxPage,
}

struct ExoRxToken<'a> {
    rx: &'a mut RxRing,
}

struct ExoTxToken<'a> {
    tx: &'a mut TxPage,
}

impl phy::RxToken for ExoRxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let mut f = Some(f);
        match self.rx.pop(|frame| (f.take().expect("consumed once"))(frame)) {
            Some(result) => result,
            // `receive` saw a frame waiting and only we consume: unreachable,
            // but an empty frame is the harmless answer.
            None => (f.take().expect("consumed once"))(&[]),
        }
    }
}

impl phy::TxToken for ExoTxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        self.tx.send_with(len, f).0
    }
}

impl Device for ExoNic {
    type RxToken<'a> = ExoRxToken<'a>;
    type TxToken<'a> = ExoTxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(ExoRxToken<'_>, ExoTxToken<'_>)> {
        if self.rx.pending() == 0 {
            return None;
        }
        Some((ExoRxToken { rx: &mut self.rx }, ExoTxToken { tx: &mut self.tx }))
    }

    fn transmit(&mut self, _now: Instant) -> Option<ExoTxToken<'_>> {
        Some(ExoTxToken { tx: &mut self.tx })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME as usize;
        caps.max_burst_size = Some(1);
        caps
    }
}

// ---------------------------------------------------------------------------
// Time

/// Milliseconds and smoltcp instants from the TSC.
struct Clock {
    start_tsc: u64,
    tsc_hz: u64,
}

impl Clock {
    fn new(tsc_hz: u64) -> Clock {
        Clock { start_tsc: rdtsc(), tsc_hz: tsc_hz.max(1) }
    }

    fn micros(&self) -> u64 {
        let ticks = rdtsc().saturating_sub(self.start_tsc) as u128;
        (ticks * 1_000_000 / self.tsc_hz as u128) as u64
    }

    fn millis(&self) -> u64 {
        self.micros() / 1000
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.micros() as i64)
    }
}

// ---------------------------------------------------------------------------
// Services

/// One HTTP connection slot: a listening TCP socket and its request so far.
struct HttpConn {
    handle: SocketHandle,
    request: Vec<u8>,
    answered: bool,
    /// When the client last sent something (or connected), and when it
    /// was answered.
    last_ms: u64,
    answered_ms: u64,
}

/// What the services did, for the summary line.
#[derive(Default)]
struct Served {
    udp_echoes: u64,
    udp_bytes: u64,
}

fn udp_echo(sockets: &mut SocketSet<'_>, handle: SocketHandle, served: &mut Served) -> bool {
    let socket = sockets.get_mut::<udp::Socket>(handle);
    let mut buffer = [0u8; 1500];
    let mut active = false;
    while socket.can_recv() && socket.can_send() {
        let Ok((len, meta)) = socket.recv_slice(&mut buffer) else { break };
        active = true;
        if socket.send_slice(&buffer[..len], meta).is_ok() {
            served.udp_echoes += 1;
            served.udp_bytes += len as u64;
            println!("udp: echo {} of {} bytes to {}", served.udp_echoes, len, meta.endpoint);
        }
    }
    active
}

/// Serve every HTTP socket one step; returns whether anything happened.
///
/// A hostile or stalled client never leaves the server deaf: what an
/// answered client still sends is read and dropped (so the close can
/// complete), a client silent for [`HTTP_IDLE_MS`] before its request head
/// ends is answered 408, and when no socket is left listening one
/// connection is reset: a delivered answer lingering in its close, else the
/// longest-silent client, and an answer still in flight only as a last
/// resort.
fn http_step(sockets: &mut SocketSet<'_>, conns: &mut [HttpConn], server: &mut Server, now_ms: u64) -> bool {
    let mut active = false;
    let mut chunk = [0u8; 512];
    for conn in conns.iter_mut() {
        let socket = sockets.get_mut::<tcp::Socket>(conn.handle);
        match socket.state() {
            tcp::State::Closed => {
                conn.request.clear();
                conn.answered = false;
                if socket.listen(HTTP_PORT).is_ok() {
                    socket.set_timeout(Some(Duration::from_secs(10)));
                }
                continue;
            }
            // No connection yet, or not yet established.
            tcp::State::Listen | tcp::State::SynReceived => {
                conn.last_ms = now_ms;
                continue;
            }
            _ if conn.answered => {
                while socket.can_recv() {
                    if socket.recv(|data| (data.len(), data.len())).unwrap_or(0) == 0 {
                        break;
                    }
                    active = true;
                }
                continue;
            }
            _ => {}
        }
        while socket.can_recv() && conn.request.len() < http::MAX_REQUEST_BYTES {
            let room = (http::MAX_REQUEST_BYTES - conn.request.len()).min(chunk.len());
            match socket.recv_slice(&mut chunk[..room]) {
                Ok(0) | Err(_) => break,
                Ok(len) => {
                    conn.request.extend_from_slice(&chunk[..len]);
                    conn.last_ms = now_ms;
                    active = true;
                }
            }
        }
        let parsed = match http::parse_request(&conn.request) {
            Ok(None) if socket.may_recv() && now_ms.saturating_sub(conn.last_ms) < HTTP_IDLE_MS => continue,
            Ok(None) if socket.may_recv() => {
                let peer = socket.remote_endpoint();
                let bytes = server.timed_out().to_bytes();
                let _ = socket.send_slice(&bytes);
                socket.close();
                conn.answered = true;
                conn.answered_ms = now_ms;
                active = true;
                println!("http: request {} from {} ? ? -> 408 Request Timeout", server.requests, endpoint_text(peer));
                continue;
            }
            // A connection closed without a byte is no request.
            Ok(None) if conn.request.is_empty() => {
                socket.close();
                conn.answered = true;
                active = true;
                continue;
            }
            // The client stopped sending before the head ended.
            Ok(None) => Err(http::ParseError::Malformed),
            Ok(Some(request)) => Ok(request),
            Err(error) => Err(error),
        };
        let peer = socket.remote_endpoint();
        let (method, path) = match &parsed {
            Ok(request) => (request.method, request.path),
            Err(_) => ("?", "?"),
        };
        let head_only = method == "HEAD";
        let response = server.answer(parsed);
        let bytes = if head_only { response.head_bytes() } else { response.to_bytes() };
        let sent = socket.send_slice(&bytes).unwrap_or(0);
        socket.close();
        conn.answered = true;
        conn.answered_ms = now_ms;
        active = true;
        let mut from = endpoint_text(peer);
        if sent < bytes.len() {
            let _ = write!(from, " (response cut at {} of {} bytes)", sent, bytes.len());
        }
        println!(
            "http: request {} from {} {} {} -> {} {}",
            server.requests,
            from,
            method,
            path,
            response.status,
            response.reason()
        );
    }
    // Keep one socket listening: reset first the connection whose response
    // was delivered longest ago (lingering in its close), then the client
    // silent longest before its request ended, and only last an answer
    // still in flight (oldest first).
    let state = |c: &HttpConn| sockets.get::<tcp::Socket>(c.handle).state();
    let listening = conns.iter().any(|c| matches!(state(c), tcp::State::Listen | tcp::State::Closed));
    if !listening {
        let delivered = |c: &HttpConn| {
            matches!(state(c), tcp::State::FinWait2 | tcp::State::TimeWait | tcp::State::Closing | tcp::State::LastAck)
        };
        let rank = |c: &HttpConn| match (c.answered, c.answered && delivered(c)) {
            (true, true) => (0, c.answered_ms),
            (false, _) => (1, c.last_ms),
            (true, false) => (2, c.answered_ms),
        };
        if let Some(conn) = conns.iter().min_by_key(|c| rank(c)) {
            sockets.get_mut::<tcp::Socket>(conn.handle).abort();
            active = true;
        }
    }
    active
}

/// `peer` as text.
fn endpoint_text(peer: Option<IpEndpoint>) -> alloc::string::String {
    match peer {
        Some(endpoint) => alloc::format!("{}", endpoint),
        None => alloc::string::String::from("?"),
    }
}

/// Whether every answered connection has delivered its response (our FIN
/// is acknowledged, or the connection is gone).
fn responses_delivered(sockets: &SocketSet<'_>, conns: &[HttpConn]) -> bool {
    conns.iter().filter(|c| c.answered).all(|c| {
        let socket = sockets.get::<tcp::Socket>(c.handle);
        matches!(socket.state(), tcp::State::FinWait2 | tcp::State::TimeWait | tcp::State::Closed | tcp::State::Listen)
    })
}

// ---------------------------------------------------------------------------
// The mode

/// Interrupt upcalls: count packet arrivals; at a slot end that hands the
/// CPU to someone else, yield at once (the poll loop keeps no state that
/// needs saving).
fn on_interrupt(frame: &mut UpcallFrame) {
    match frame.vector {
        NET_RX => {
            RX_UPCALLS.fetch_add(1, Ordering::Relaxed);
        }
        SLOT_END if frame.fault_addr == 0 => syscall::yield_now(),
        _ => {}
    }
}

fn param_u64(env: &Env, key: &str, default: u64) -> u64 {
    env.param(key).and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

fn mac_text(mac: &[u8; 6]) -> alloc::string::String {
    alloc::format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5])
}

/// `args = net`: serve UDP echo and HTTP for `serve_ms` milliseconds or
/// until `http_requests` requests are answered (0: no limit), then print a
/// summary and exit 0. Without a network card it fails, unless the
/// manifest says `require_nic = false` (then it only says so and exits 0).
pub fn net_workload(env: &Env) -> i32 {
    match serve(env) {
        Ok(()) => 0,
        Err(what) => {
            println!("net: {}", what);
            1
        }
    }
}

fn serve(env: &Env) -> Result<(), &'static str> {
    let serve_ms = param_u64(env, "serve_ms", 30_000);
    let want_requests = param_u64(env, "http_requests", 0);
    let info = sys::net_info().map_err(|e| e.name())?;
    if info.mac == 0 {
        if env.param("require_nic") == Some("false") {
            println!("net: no network card, services off (`cargo xtask run` boots with one)");
            return Ok(());
        }
        return Err("no network card");
    }
    let mac_bytes = info.mac.to_le_bytes();
    let mac = [mac_bytes[0], mac_bytes[1], mac_bytes[2], mac_bytes[3], mac_bytes[4], mac_bytes[5]];

    let rx = RxRing::register(RX_SLOTS).map_err(Error::name)?;
    // SAFETY: TX_VA is a page of the dynamic window that nothing else in
    // this mode maps or touches (the pager's region starts at its base).
    let tx = unsafe { TxPage::new(TX_VA, 0) }.map_err(AllocMapError::name)?;
    set_handler(UpcallKind::Interrupt, on_interrupt).map_err(|_| "interrupt handler")?;
    let filters = [
        (
            "arp",
            Filter::new().ethertype(proto::ETHERTYPE_ARP).match_u32(ARP_TARGET_IP_OFFSET, u32::from_be_bytes(GUEST_IP)),
        ),
        ("udp7", Filter::udp_dst_port(ECHO_PORT)),
        ("tcp80", Filter::tcp_dst_port(HTTP_PORT)),
    ];
    let mut filter_ids = Vec::new();
    for (name, filter) in &filters {
        match sys::net_filter_install(&filter.encode()) {
            Ok(id) => filter_ids.push((*name, id)),
            Err(error) => {
                println!("net: filter {} refused: {}", name, error.name());
                return Err("filter refused");
            }
        }
    }
    let mut nic = ExoNic { rx, tx };
    let clock = Clock::new(env.tsc_hz);

    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    config.random_seed = rdtsc();
    let mut iface = Interface::new(config, &mut nic, clock.now());
    let [a, b, c, d] = GUEST_IP;
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(Ipv4Address::new(a, b, c, d).into(), PREFIX_LEN));
    });
    let [a, b, c, d] = GATEWAY_IP;
    iface.routes_mut().add_default_ipv4_route(Ipv4Address::new(a, b, c, d)).map_err(|_| "default route")?;

    let mut sockets = SocketSet::new(Vec::new());
    let udp_socket = udp::Socket::new(
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 8192]),
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 8192]),
    );
    let udp_handle = sockets.add(udp_socket);
    sockets.get_mut::<udp::Socket>(udp_handle).bind(ECHO_PORT).map_err(|_| "bind udp 7")?;
    let mut conns: Vec<HttpConn> = (0..HTTP_SOCKETS)
        .map(|_| {
            let socket = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 4096]), tcp::SocketBuffer::new(vec![0; 4096]));
            HttpConn { handle: sockets.add(socket), request: Vec::new(), answered: false, last_ms: 0, answered_ms: 0 }
        })
        .collect();
    http_step(&mut sockets, &mut conns, &mut Server::new(), clock.millis());

    let ids: Vec<alloc::string::String> = filter_ids.iter().map(|(n, id)| alloc::format!("{}={}", n, id)).collect();
    println!(
        "net: mac {} ip {}.{}.{}.{}/{} gateway {}.{}.{}.{}, ring of {} slots, filters {}",
        mac_text(&mac),
        GUEST_IP[0],
        GUEST_IP[1],
        GUEST_IP[2],
        GUEST_IP[3],
        PREFIX_LEN,
        GATEWAY_IP[0],
        GATEWAY_IP[1],
        GATEWAY_IP[2],
        GATEWAY_IP[3],
        nic.rx.slot_count(),
        ids.join(" ")
    );
    println!(
        "net: serving udp echo on port {} and http on port {} (serve_ms={} http_requests={})",
        ECHO_PORT, HTTP_PORT, serve_ms, want_requests
    );

    let mut server = Server::new();
    let mut served = Served::default();
    let mut reached_at_ms: Option<u64> = None;
    let stopped = loop {
        let now_ms = clock.millis();
        let mut active =
            iface.poll(clock.now(), &mut nic, &mut sockets) == smoltcp::iface::PollResult::SocketStateChanged;
        active |= udp_echo(&mut sockets, udp_handle, &mut served);
        active |= http_step(&mut sockets, &mut conns, &mut server, now_ms);
        if want_requests != 0 && server.requests >= want_requests {
            let since = *reached_at_ms.get_or_insert(now_ms);
            if responses_delivered(&sockets, &conns) {
                break "requests";
            }
            if now_ms.saturating_sub(since) > FLUSH_GRACE_MS {
                break "requests (flush timed out)";
            }
        }
        if now_ms >= serve_ms {
            break "time";
        }
        if !active && nic.rx.pending() == 0 {
            syscall::yield_now();
        }
    };
    // Send what the last poll queued (the final ACKs, an echo) before leaving.
    for _ in 0..8 {
        iface.poll(clock.now(), &mut nic, &mut sockets);
    }
    for (_, id) in &filter_ids {
        let _ = sys::net_filter_remove(*id);
    }
    let kernel = sys::net_info().unwrap_or_default();
    println!(
        "net: summary http_requests={} udp_echoes={} udp_bytes={} rx_frames={} tx_frames={} tx_errors={} ring_dropped={} rx_upcalls={} kernel_unclaimed={} elapsed_ms={} stopped={}",
        server.requests,
        served.udp_echoes,
        served.udp_bytes,
        nic.rx.received(),
        nic.tx.sent(),
        nic.tx.errors(),
        nic.rx.dropped(),
        RX_UPCALLS.load(Ordering::Relaxed),
        kernel.rx_unclaimed,
        clock.millis(),
        stopped
    );
    Ok(())
}

const _: () = assert!(RX_SLOT_SIZE >= MAX_FRAME + 8 && libos_runtime::PAGE_SIZE >= MAX_FRAME);
