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
use core::sync::atomic::{AtomicU64, Ordering};
use libos_runtime::filter::{proto, Filter};
use libos_runtime::frames::AllocMapError;
use libos_runtime::net::{self as sys, RxRing, TxPage, MAX_FRAME, NET_RX, RX_SLOT_SIZE};
use libos_runtime::println;
use libos_runtime::rt::{rdtsc, set_handler, Env};
use libos_runtime::start::{DYNAMIC_BASE, DYNAMIC_END};
use libos_runtime::syscall::{self, Error};
use libos_runtime::upcall::{UpcallFrame, UpcallKind, SLOT_END};
use libos_unix::http::{self, Reply, Server};
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

/// Receive-ring slots we lend the kernel (256 KiB of heap): room for a
/// burst from 64 clients at once; a dropped segment costs the client a
/// TCP retransmission timeout (seconds).
const RX_SLOTS: u64 = 127;
/// Where the transmit frame is mapped: a page of the dynamic window that
/// no other libos-unix mode uses (the pager's region starts at its base).
const TX_VA: u64 = DYNAMIC_BASE + 0x0010_0000_0000;
const _: () = assert!(TX_VA >= DYNAMIC_BASE && TX_VA < DYNAMIC_END);
/// TCP sockets serving the HTTP port (one connection each): 64 clients at
/// once, and spare ones so that some always listen.
const HTTP_SOCKETS: usize = 72;
/// Each socket's receive and send buffers: a request head fits the first;
/// a larger reply streams through the second as the client acknowledges.
const HTTP_RX_BUFFER: usize = 2048;
const HTTP_TX_BUFFER: usize = 4096;
/// A client silent this long in the middle of a request head is answered
/// 408 and closed, so a stalled client holds a socket briefly (manifest
/// `http_head_ms`).
const HTTP_HEAD_MS: u64 = 2_000;
/// A keep-alive connection idle this long between requests is closed
/// (manifest `http_keepalive_ms`).
const HTTP_KEEPALIVE_MS: u64 = 5_000;
/// A close of ours that has not completed after this long is aborted.
const HTTP_LINGER_MS: u64 = 1_000;
/// A client that takes none of its reply for this long is aborted.
const HTTP_SEND_STALL_MS: u64 = 5_000;
/// The longest the service loop sleeps while connections are open (their
/// timeouts are checked when it wakes).
const BUSY_SLEEP_MS: u64 = 100;
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

/// One HTTP connection slot: a TCP socket (listening when idle), the
/// request bytes received but not yet answered, and the reply being sent.
/// Its memory is bounded: the socket's buffers, at most
/// [`http::MAX_REQUEST_BYTES`] of request, and a reference to the reply.
struct HttpConn {
    handle: SocketHandle,
    request: Vec<u8>,
    /// The reply being sent and how much of it the socket has taken.
    reply: Option<(Reply, usize)>,
    /// We closed (after an error, a `close` reply or an idle timeout):
    /// lingering until the close completes or [`HTTP_LINGER_MS`] passes.
    closing: bool,
    /// Counted in [`Served::http_accepted`].
    accepted: bool,
    /// When the client last sent or took something (or connected, or the
    /// close began).
    last_ms: u64,
}

impl HttpConn {
    fn reset(&mut self) {
        self.request.clear();
        self.reply = None;
        self.closing = false;
        self.accepted = false;
    }
}

/// What the services did, for the summary line.
#[derive(Default)]
struct Served {
    udp_echoes: u64,
    udp_bytes: u64,
    /// Connections accepted, closed by us on an idle timeout, and reset
    /// to free a socket for a newcomer.
    http_accepted: u64,
    http_idle_closed: u64,
    http_evicted: u64,
    /// Turns of the service loop, and `block` calls made when idle.
    polls: u64,
    blocks: u64,
    /// Print a line per request and echo.
    log_each: bool,
    /// The head and keep-alive timeouts in force.
    head_ms: u64,
    keepalive_ms: u64,
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
            if served.log_each {
                println!("udp: echo {} of {} bytes to {}", served.udp_echoes, len, meta.endpoint);
            }
        }
    }
    active
}

/// Serve every HTTP socket one step; returns whether anything happened.
///
/// A hostile or stalled client never blocks the others, nor leaves the
/// server deaf: every socket that closes listens again at once; a client
/// silent for [`HTTP_HEAD_MS`] in the middle of a request head is
/// answered 408, and an idle keep-alive connection is closed after
/// [`HTTP_KEEPALIVE_MS`] (both set by the manifest); after an error reply (400, 413, 431, 408) the
/// connection is closed and what the client still sends is read and
/// dropped, and a close that does not complete in [`HTTP_LINGER_MS`] is
/// aborted; a client that stops taking its reply is aborted after
/// [`HTTP_SEND_STALL_MS`]. When no socket is left listening, one
/// connection is reset for the next newcomer (a lingering close first,
/// then the longest-idle keep-alive connection, then the oldest partial
/// request).
fn http_step(
    sockets: &mut SocketSet<'_>,
    conns: &mut [HttpConn],
    server: &mut Server,
    served: &mut Served,
    now_ms: u64,
) -> bool {
    let mut active = false;
    for conn in conns.iter_mut() {
        active |= http_conn_step(sockets.get_mut::<tcp::Socket>(conn.handle), conn, server, served, now_ms);
    }
    let listening = conns.iter().filter(|c| sockets.get::<tcp::Socket>(c.handle).state() == tcp::State::Listen).count();
    if listening == 0 {
        let rank = |c: &HttpConn| {
            let socket = sockets.get::<tcp::Socket>(c.handle);
            match socket.state() {
                tcp::State::Listen | tcp::State::SynReceived | tcp::State::Closed => None,
                _ if c.closing => Some((0, c.last_ms)),
                _ if c.reply.is_none() && c.request.is_empty() => Some((1, c.last_ms)),
                _ if c.reply.is_none() => Some((2, c.last_ms)),
                _ => None,
            }
        };
        if let Some(conn) = conns.iter().filter(|c| rank(c).is_some()).min_by_key(|c| rank(c)) {
            let socket = sockets.get_mut::<tcp::Socket>(conn.handle);
            socket.abort();
            served.http_evicted += 1;
            active = true;
        }
    }
    active
}

/// One connection's step (see [`http_step`]).
fn http_conn_step(
    socket: &mut tcp::Socket<'_>,
    conn: &mut HttpConn,
    server: &mut Server,
    served: &mut Served,
    now_ms: u64,
) -> bool {
    match socket.state() {
        tcp::State::Closed => {
            conn.reset();
            if socket.listen(HTTP_PORT).is_ok() {
                socket.set_timeout(Some(Duration::from_secs(10)));
                socket.set_nagle_enabled(false);
            }
            return false;
        }
        tcp::State::Listen | tcp::State::SynReceived => {
            conn.last_ms = now_ms;
            return false;
        }
        // Both sides closed and our FIN is acknowledged: nothing is left
        // to deliver, so the socket need not wait out TIME-WAIT.
        tcp::State::TimeWait => {
            socket.abort();
            return true;
        }
        _ => {}
    }
    if conn.closing {
        let mut active = false;
        while socket.can_recv() {
            if socket.recv(|data| (data.len(), data.len())).unwrap_or(0) == 0 {
                break;
            }
            active = true;
        }
        if now_ms.saturating_sub(conn.last_ms) > HTTP_LINGER_MS {
            socket.abort();
            active = true;
        }
        return active;
    }
    if !conn.accepted {
        conn.accepted = true;
        served.http_accepted += 1;
    }
    let mut active = false;
    loop {
        if let Some((reply, sent)) = conn.reply.as_mut() {
            let wire = reply.wire();
            if *sent < wire.len() && socket.can_send() {
                let taken = socket.send_slice(&wire[*sent..]).unwrap_or(0);
                if taken > 0 {
                    *sent += taken;
                    conn.last_ms = now_ms;
                    active = true;
                }
            }
            if *sent < wire.len() {
                if now_ms.saturating_sub(conn.last_ms) > HTTP_SEND_STALL_MS {
                    socket.abort();
                    return true;
                }
                return active;
            }
            let close = reply.close;
            conn.reply = None;
            if close {
                begin_close(socket, conn, now_ms);
                return true;
            }
        }
        // Read what fits of the next request.
        while socket.can_recv() && conn.request.len() < http::MAX_REQUEST_BYTES {
            let room = http::MAX_REQUEST_BYTES - conn.request.len();
            let request = &mut conn.request;
            let taken = socket
                .recv(|data| {
                    let n = data.len().min(room);
                    request.extend_from_slice(&data[..n]);
                    (n, n)
                })
                .unwrap_or(0);
            if taken == 0 {
                break;
            }
            conn.last_ms = now_ms;
            active = true;
        }
        let silent_ms = now_ms.saturating_sub(conn.last_ms);
        let parsed = match http::parse_request(&conn.request) {
            Ok(None) if conn.request.is_empty() => {
                if !socket.may_recv() {
                    // The client closed between requests.
                    begin_close(socket, conn, now_ms);
                    return true;
                }
                if silent_ms > served.keepalive_ms {
                    served.http_idle_closed += 1;
                    begin_close(socket, conn, now_ms);
                    return true;
                }
                return active;
            }
            Ok(None) if socket.may_recv() && silent_ms <= served.head_ms => return active,
            Ok(None) if socket.may_recv() => {
                let reply = server.timed_out();
                log_request(served, server, socket.remote_endpoint(), "?", "?", &reply);
                conn.request.clear();
                conn.reply = Some((reply, 0));
                continue;
            }
            // The client stopped sending before the head ended.
            Ok(None) => Err(http::ParseError::Malformed),
            Ok(Some(request)) => Ok(request),
            Err(error) => Err(error),
        };
        let (method, path, head_len) = match &parsed {
            Ok(request) => (request.method, request.path, request.head_len),
            Err(_) => ("?", "?", conn.request.len()),
        };
        let reply = server.answer(parsed);
        log_request(served, server, socket.remote_endpoint(), method, path, &reply);
        conn.request.drain(..head_len);
        conn.reply = Some((reply, 0));
        active = true;
    }
}

/// Close our side; what the client still sends is dropped until the
/// close completes or lingers too long.
fn begin_close(socket: &mut tcp::Socket<'_>, conn: &mut HttpConn, now_ms: u64) {
    socket.close();
    conn.request.clear();
    conn.closing = true;
    conn.last_ms = now_ms;
}

fn log_request(served: &Served, server: &Server, peer: Option<IpEndpoint>, method: &str, path: &str, reply: &Reply) {
    if served.log_each || reply.status >= 400 && reply.status != 404 {
        println!(
            "http: request {} from {} {} {} -> {} {}{}",
            server.requests,
            endpoint_text(peer),
            method,
            path,
            reply.status,
            reply.reason(),
            if reply.cached { " (cached)" } else { "" }
        );
    }
}

/// `peer` as text.
fn endpoint_text(peer: Option<IpEndpoint>) -> alloc::string::String {
    match peer {
        Some(endpoint) => alloc::format!("{}", endpoint),
        None => alloc::string::String::from("?"),
    }
}

/// Whether every reply has been delivered (no reply in flight, nothing
/// unacknowledged in a send buffer, no close in progress).
fn responses_delivered(sockets: &SocketSet<'_>, conns: &[HttpConn]) -> bool {
    conns.iter().all(|c| {
        let socket = sockets.get::<tcp::Socket>(c.handle);
        let settled = matches!(
            socket.state(),
            tcp::State::FinWait2
                | tcp::State::TimeWait
                | tcp::State::Closed
                | tcp::State::Listen
                | tcp::State::SynReceived
        );
        c.reply.is_none() && (settled || (!c.closing && socket.send_queue() == 0))
    })
}

/// Read the files under `www/` in the boot archive into the server (at
/// `/NAME`). Returns how many were added.
fn load_files(server: &mut Server) -> usize {
    let read = crate::fsserver::read_archive;
    let mut header = [0u8; 16];
    if read(0, &mut header) < 16 {
        return 0;
    }
    let count = (u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize).min(4096);
    let mut dir = vec![0u8; count * 64];
    let got = read(16, &mut dir);
    let mut added = 0;
    for entry in dir[..got - got % 64].chunks(64) {
        let len = entry[..48].iter().position(|&b| b == 0).unwrap_or(48);
        let Ok(name) = core::str::from_utf8(&entry[..len]) else { continue };
        let Some(file) = name.strip_prefix("www/") else { continue };
        let word = |at: usize| u64::from_le_bytes(entry[at..at + 8].try_into().unwrap_or([0; 8]));
        let (offset, size) = (word(48), word(56) as usize);
        if size > http::MAX_FILE_BYTES {
            continue;
        }
        let mut body = vec![0u8; size];
        if read(offset, &mut body) == size && server.add_file(&alloc::format!("/{}", file), body) {
            added += 1;
        }
    }
    added
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
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 32], vec![0; 32 * 1024]),
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 32], vec![0; 32 * 1024]),
    );
    let udp_handle = sockets.add(udp_socket);
    sockets.get_mut::<udp::Socket>(udp_handle).bind(ECHO_PORT).map_err(|_| "bind udp 7")?;
    let mut conns: Vec<HttpConn> = (0..HTTP_SOCKETS)
        .map(|_| {
            let socket = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; HTTP_RX_BUFFER]),
                tcp::SocketBuffer::new(vec![0; HTTP_TX_BUFFER]),
            );
            HttpConn {
                handle: sockets.add(socket),
                request: Vec::with_capacity(http::MAX_REQUEST_BYTES),
                reply: None,
                closing: false,
                accepted: false,
                last_ms: 0,
            }
        })
        .collect();
    let mut server = Server::new();
    let mut served = Served {
        log_each: env.param("log_each") != Some("false"),
        head_ms: param_u64(env, "http_head_ms", HTTP_HEAD_MS),
        keepalive_ms: param_u64(env, "http_keepalive_ms", HTTP_KEEPALIVE_MS),
        ..Served::default()
    };
    let files = load_files(&mut server);
    http_step(&mut sockets, &mut conns, &mut server, &mut served, clock.millis());

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
        "net: serving udp echo on port {} and http on port {} ({} sockets, {} files; serve_ms={} http_requests={} nic_irq={})",
        ECHO_PORT, HTTP_PORT, HTTP_SOCKETS, files, serve_ms, want_requests, info.irq_mode
    );

    let mut reached_at_ms: Option<u64> = None;
    // (TSC, halted ticks) when the first request was answered: busy time
    // from then on is what the requests after it cost.
    let mut measured_from: Option<(u64, u64)> = None;
    let ticks_per_ms = (env.tsc_hz / 1000).max(1);
    let stopped = loop {
        let now_ms = clock.millis();
        served.polls += 1;
        let mut active =
            iface.poll(clock.now(), &mut nic, &mut sockets) == smoltcp::iface::PollResult::SocketStateChanged;
        active |= udp_echo(&mut sockets, udp_handle, &mut served);
        active |= http_step(&mut sockets, &mut conns, &mut server, &mut served, now_ms);
        if measured_from.is_none() && server.requests > 0 {
            measured_from = Some((rdtsc(), syscall::stats().map(|s| s.halted_ticks).unwrap_or(0)));
        }
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
            // Sleep until a packet arrives (the kernel wakes us when it
            // puts one in our ring), smoltcp's next timer, or, with
            // connections open, a while to check their timeouts.
            let busy = conns.iter().any(|c| {
                !matches!(sockets.get::<tcp::Socket>(c.handle).state(), tcp::State::Listen | tcp::State::Closed)
            });
            let mut sleep_ms = serve_ms - now_ms;
            if let Some(delay) = iface.poll_delay(clock.now(), &sockets) {
                sleep_ms = sleep_ms.min(delay.total_millis());
            }
            if busy || reached_at_ms.is_some() {
                sleep_ms = sleep_ms.min(BUSY_SLEEP_MS);
            }
            if sleep_ms > 0 {
                served.blocks += 1;
                syscall::block_until(rdtsc() + sleep_ms * ticks_per_ms);
            }
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
    let stats = syscall::stats().unwrap_or_default();
    let busy_ticks = measured_from.map_or(0, |(tsc, halted)| {
        rdtsc().saturating_sub(tsc).saturating_sub(stats.halted_ticks.saturating_sub(halted))
    });
    println!(
        "net: summary http_requests={} cache_hits={} cache_misses={} http_accepted={} http_idle_closed={} http_evicted={} udp_echoes={} udp_bytes={} rx_frames={} tx_frames={} tx_errors={} ring_dropped={} rx_upcalls={} polls={} blocks={} nic_irqs={} kernel_unclaimed={} busy_ticks={} busy_requests={} elapsed_ms={} stopped={}",
        server.requests,
        server.cache_hits,
        server.cache_misses,
        served.http_accepted,
        served.http_idle_closed,
        served.http_evicted,
        served.udp_echoes,
        served.udp_bytes,
        nic.rx.received(),
        nic.tx.sent(),
        nic.tx.errors(),
        nic.rx.dropped(),
        RX_UPCALLS.load(Ordering::Relaxed),
        served.polls,
        served.blocks,
        kernel.irqs,
        kernel.rx_unclaimed,
        busy_ticks,
        server.requests.saturating_sub(1),
        clock.millis(),
        stopped
    );
    Ok(())
}

const _: () = assert!(RX_SLOT_SIZE >= MAX_FRAME + 8 && libos_runtime::PAGE_SIZE >= MAX_FRAME);
