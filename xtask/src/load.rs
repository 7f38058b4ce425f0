//! The host side of the network load test: concurrent HTTP/1.1 keep-alive clients and a UDP echo run against a guest on 127.0.0.1.
//!
//! Bounded in count and time: every client makes a fixed number of
//! requests, every socket has a timeout, and a run stops at its deadline.
//! Only 127.0.0.1 is ever contacted (QEMU's user-networking port
//! forwards). Used by `cargo xtask load` (full size, with numbers) and by
//! `tests/tests/network_load.rs` (small size, inside `cargo xtask test`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What an HTTP load run asks.
#[derive(Clone, Debug)]
pub struct HttpLoad {
    /// Concurrent clients, each on its own keep-alive connection.
    pub clients: usize,
    /// Requests in all (spread evenly over the clients).
    pub requests: usize,
    /// The path every request asks for.
    pub path: String,
    /// The body every response must carry.
    pub expected_body: Vec<u8>,
    /// Give up (counting errors) after this long.
    pub deadline: Duration,
}

/// What an HTTP load run saw.
#[derive(Clone, Debug, Default)]
pub struct HttpReport {
    pub ok: usize,
    /// Failed requests, with why (the first few are kept in `why`).
    pub errors: usize,
    pub why: Vec<String>,
    /// Connections opened (a keep-alive client opens one unless the server closes it).
    pub connects: usize,
    /// Each successful request's latency.
    pub latencies: Vec<Duration>,
    pub wall: Duration,
}

impl HttpReport {
    pub fn requests_per_second(&self) -> f64 {
        self.ok as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// The latency below which `fraction` of the requests finished.
    pub fn percentile(&self, fraction: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let at = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[at]
    }
}

/// One response: status, whether the server keeps the connection, body.
struct Response {
    status: u16,
    keep_alive: bool,
    body: Vec<u8>,
}

/// Read one HTTP/1.x response with a `Content-Length` body.
fn read_response(reader: &mut BufReader<TcpStream>) -> Result<Response, String> {
    let mut line = String::new();
    let n = reader.read_line(&mut line).map_err(|e| format!("read status line: {e}"))?;
    if n == 0 {
        return Err("connection closed before a response".into());
    }
    let mut words = line.split_whitespace();
    let version = words.next().unwrap_or("").to_string();
    let status: u16 = words.next().and_then(|s| s.parse().ok()).ok_or(format!("bad status line {line:?}"))?;
    let mut length = None;
    let mut keep_alive = version == "HTTP/1.1";
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).map_err(|e| format!("read header: {e}"))? == 0 {
            return Err("connection closed inside the head".into());
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("connection") {
                keep_alive = value.eq_ignore_ascii_case("keep-alive");
            }
        }
    }
    let length = length.ok_or("no Content-Length")?;
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).map_err(|e| format!("read body: {e}"))?;
    Ok(Response { status, keep_alive, body })
}

/// One GET on `reader`'s connection.
fn get(reader: &mut BufReader<TcpStream>, path: &str, close: bool) -> Result<Response, String> {
    let connection = if close { "close" } else { "keep-alive" };
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: {connection}\r\n\r\n");
    reader.get_mut().write_all(request.as_bytes()).map_err(|e| format!("send: {e}"))?;
    read_response(reader)
}

/// Whether a failed request surely never reached the server's request
/// count, so that sending it again cannot count it twice: the connection
/// closed or was reset before any byte of a response, or the send failed.
/// A timeout is not retried (the response may just be slow).
fn retryable(why: &str) -> bool {
    why.starts_with("connection closed before a response")
        || why.starts_with("send:")
        || why.contains("reset")
        || why.contains("Broken pipe")
}

/// How long a load client waits for a response (a lost segment can cost
/// the guest's TCP several retransmission timeouts).
const RESPONSE_PATIENCE: Duration = Duration::from_secs(30);

fn connect(guest: SocketAddr, timeout: Duration) -> Result<BufReader<TcpStream>, String> {
    let stream = TcpStream::connect_timeout(&guest, timeout).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    Ok(BufReader::new(stream))
}

/// GET `path` on fresh connections until one is answered 200 or
/// `patience` passes; the body.
pub fn wait_for_http(guest: SocketAddr, path: &str, patience: Duration) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + patience;
    let mut last = String::from("never tried");
    while Instant::now() < deadline {
        match connect(guest, Duration::from_secs(5)).and_then(|mut c| get(&mut c, path, true)) {
            Ok(response) if response.status == 200 => return Ok(response.body),
            Ok(response) => last = format!("status {}", response.status),
            Err(why) => last = why,
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Err(format!("no 200 for GET {path} within {patience:?}: {last}"))
}

/// Run `load` against `guest`: each client keeps one connection open and
/// reconnects only if the server closes it; its last request says
/// `Connection: close`. A request fails if it gets no response, a status
/// other than 200, or a body other than the expected one.
///
/// The connections are opened one after another before the clock starts:
/// QEMU's user networking accepts forwarded connections from a listen
/// backlog of one, so a burst of connects overflows it and the host's TCP
/// retries the refused ones a second later (the stall is the host's, not
/// the guest's).
pub fn http_load(guest: SocketAddr, load: &HttpLoad) -> HttpReport {
    let report = Arc::new(Mutex::new(HttpReport::default()));
    let clients = load.clients.max(1);
    let mut opened: Vec<Option<BufReader<TcpStream>>> = Vec::with_capacity(clients);
    for _ in 0..clients {
        let stream = connect(guest, RESPONSE_PATIENCE).ok();
        if stream.is_some() {
            report.lock().expect("report lock").connects += 1;
        }
        opened.push(stream);
    }
    let start = Instant::now();
    let deadline = start + load.deadline;
    let threads: Vec<_> = opened
        .into_iter()
        .enumerate()
        .map(|(client, opened)| {
            let count = load.requests / clients + (client < load.requests % clients) as usize;
            let (report, path, expected) = (report.clone(), load.path.clone(), load.expected_body.clone());
            std::thread::spawn(move || {
                let mut latencies = Vec::with_capacity(count);
                let (mut errors, mut why, mut connects) = (0, Vec::new(), 0);
                let mut conn: Option<BufReader<TcpStream>> = opened;
                for index in 0..count {
                    if Instant::now() > deadline {
                        errors += count - index;
                        why.push("deadline passed".to_string());
                        break;
                    }
                    let began = Instant::now();
                    let last = index + 1 == count;
                    let mut outcome = Err(String::new());
                    // A kept connection the server closed meanwhile (idle
                    // timeout) is reopened once (see `retryable`); a fresh
                    // one gets no retry.
                    for attempt in 0..2 {
                        let reused = conn.is_some();
                        if conn.is_none() {
                            match connect(guest, RESPONSE_PATIENCE) {
                                Ok(c) => {
                                    connects += 1;
                                    conn = Some(c);
                                }
                                Err(e) => {
                                    outcome = Err(e);
                                    break;
                                }
                            }
                        }
                        let result = get(conn.as_mut().expect("connected"), &path, last);
                        match result {
                            Ok(response) => {
                                if !response.keep_alive {
                                    conn = None;
                                }
                                outcome = Ok(response);
                                break;
                            }
                            Err(e) => {
                                conn = None;
                                let again = reused && attempt == 0 && retryable(&e);
                                outcome = Err(e);
                                if !again {
                                    break;
                                }
                            }
                        }
                    }
                    match outcome {
                        Ok(response) if response.status == 200 && response.body == expected => {
                            latencies.push(began.elapsed())
                        }
                        Ok(response) => {
                            errors += 1;
                            why.push(format!("status {} with {} body bytes", response.status, response.body.len()));
                        }
                        Err(e) => {
                            errors += 1;
                            why.push(e);
                        }
                    }
                }
                let mut report = report.lock().expect("report lock");
                report.ok += latencies.len();
                report.latencies.extend(latencies);
                report.errors += errors;
                report.connects += connects;
                for w in why {
                    if report.why.len() < 8 {
                        report.why.push(w);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
    let mut report = Arc::try_unwrap(report).map(|m| m.into_inner().expect("report")).unwrap_or_default();
    report.wall = start.elapsed();
    report
}

/// What a UDP echo run saw.
#[derive(Clone, Debug, Default)]
pub struct UdpReport {
    pub sent: usize,
    /// Datagrams whose echo came back byte-identical.
    pub echoed: usize,
    /// Echoes equal to nothing sent (corrupted).
    pub mismatched: usize,
    /// Datagrams sent again after their echo did not come in time.
    pub retries: usize,
    /// Datagrams never echoed before the deadline.
    pub lost: usize,
    pub bytes: usize,
    pub wall: Duration,
}

/// The payload of datagram `index`: 1 to 1,472 bytes (the first two are
/// the extremes), a tag and a pattern that differs per datagram.
pub fn datagram(index: usize) -> Vec<u8> {
    let len = match index {
        0 => 1,
        1 => 1472,
        _ => 1 + (index * 7919) % 1472,
    };
    let mut payload: Vec<u8> = (0..len).map(|j| (index.wrapping_mul(31) + j * 7) as u8).collect();
    let tag = (index as u32).to_be_bytes();
    let n = len.min(4);
    payload[..n].copy_from_slice(&tag[..n]);
    payload
}

/// Send `count` datagrams ([`datagram`]) to `guest`, at most `window`
/// awaiting their echo at once; each echo must equal a datagram sent. A
/// datagram unanswered for `retry_after` is sent again (UDP may drop).
pub fn udp_echo_load(
    guest: SocketAddr,
    count: usize,
    window: usize,
    retry_after: Duration,
    patience: Duration,
) -> UdpReport {
    let mut report = UdpReport::default();
    let start = Instant::now();
    let deadline = start + patience;
    let Ok(socket) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else { return report };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(20)));
    // In flight: (index, payload, when last sent).
    let mut in_flight: Vec<(usize, Vec<u8>, Instant)> = Vec::new();
    let mut recent: std::collections::VecDeque<Vec<u8>> = std::collections::VecDeque::new();
    let mut next = 0;
    let mut buffer = vec![0u8; 2048];
    while (next < count || !in_flight.is_empty()) && Instant::now() < deadline {
        while next < count && in_flight.len() < window.max(1) {
            let payload = datagram(next);
            let _ = socket.send_to(&payload, guest);
            report.sent += 1;
            in_flight.push((next, payload, Instant::now()));
            next += 1;
        }
        match socket.recv_from(&mut buffer) {
            Ok((len, _)) => {
                let echo = &buffer[..len];
                if let Some(at) = in_flight.iter().position(|(_, p, _)| p[..] == *echo) {
                    let (_, payload, _) = in_flight.remove(at);
                    report.echoed += 1;
                    report.bytes += payload.len();
                    recent.push_back(payload);
                    if recent.len() > 256 {
                        recent.pop_front();
                    }
                } else if !recent.iter().any(|p| p[..] == *echo) {
                    report.mismatched += 1;
                }
            }
            Err(_) => {
                // Nothing yet (or ICMP unreachable while the guest boots):
                // resend what waited too long.
                let now = Instant::now();
                for (_, payload, sent_at) in in_flight.iter_mut().filter(|(_, _, t)| now - *t > retry_after) {
                    let _ = socket.send_to(payload, guest);
                    *sent_at = now;
                    report.retries += 1;
                }
            }
        }
    }
    report.lost = in_flight.len() + (count - next);
    report.wall = start.elapsed();
    report
}

/// A whole load run: what to boot and how hard to push.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub clients: usize,
    pub requests: usize,
    pub datagrams: usize,
    /// The NIC interrupts (`nic_irq = true`) or is polled.
    pub nic_irq: bool,
    /// `-icount shift=0` (busy ticks are then guest instructions).
    pub icount: bool,
    pub timeout: Duration,
    pub echo: bool,
}

/// What a load run gave.
#[derive(Debug)]
pub struct LoadOutcome {
    pub udp: UdpReport,
    pub http: HttpReport,
    pub outcome: crate::Outcome,
    /// The guest's `net: summary` line, if it printed one.
    pub summary: Option<String>,
}

/// The file the load asks for (served from the response cache).
pub const LOAD_PATH: &str = "/index.html";

/// The `net_load` scenario's manifest with `spec`'s sizes: the server
/// stops after the first probe and `spec.requests` requests.
pub fn load_manifest(spec: &LoadSpec) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(crate::root().join("scenarios/net_load.manifest"))?;
    let mut out = String::new();
    for line in text.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        match key {
            "http_requests" => {
                out.push_str(&format!("http_requests = {}\n", spec.requests + 1));
                // The clients' connections are opened one by one before the
                // load starts, which takes seconds through QEMU's listen
                // backlog of one: they are kept meanwhile.
                out.push_str("http_keepalive_ms = 120000\n");
                if spec.icount {
                    // Under -icount the guest's clock runs ahead of the
                    // host's while it idles: a client the host sees as
                    // prompt can look silent for seconds to the guest.
                    out.push_str("http_head_ms = 60000\n");
                }
            }
            "serve_ms" => out.push_str("serve_ms = 3600000\n"),
            "nic_irq" => out.push_str(&format!("nic_irq = {}\n", spec.nic_irq)),
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    Ok(out)
}

/// Boot the `net_load` scenario (built from [`load_manifest`]) and load
/// it from the host: first the UDP echo run, then one probe GET, then the
/// HTTP load. The guest stops by itself after the last request.
pub fn run_load(spec: &LoadSpec) -> anyhow::Result<LoadOutcome> {
    let name = if spec.nic_irq { "net_load_irq" } else { "net_load_polled" };
    let image = crate::make_image(name, &load_manifest(spec)?)?;
    let (udp_port, tcp_port) = crate::free_net_ports(0, 0);
    let options = crate::RunOptions {
        timeout: spec.timeout,
        icount: spec.icount,
        echo: spec.echo,
        net: Some((udp_port, tcp_port)),
        ..Default::default()
    };
    let guest = std::thread::spawn(move || crate::run_qemu(&image, &options));
    let (udp, http) = drive(spec, udp_port, tcp_port);
    let outcome = guest.join().map_err(|_| anyhow::anyhow!("the QEMU thread panicked"))??;
    let summary = outcome.env_lines("unix").find(|l| l.starts_with("net: summary ")).map(String::from);
    Ok(LoadOutcome { udp, http, outcome, summary })
}

/// The host's side of a load run against a guest whose UDP port 7 and
/// TCP port 80 are forwarded from `udp_port` and `tcp_port`: the UDP echo
/// run, one probe GET (the guest's first request), then the HTTP load.
pub fn drive(spec: &LoadSpec, udp_port: u16, tcp_port: u16) -> (UdpReport, HttpReport) {
    let udp_guest = SocketAddr::from((Ipv4Addr::LOCALHOST, udp_port));
    let tcp_guest = SocketAddr::from((Ipv4Addr::LOCALHOST, tcp_port));
    let patience = spec.timeout.saturating_sub(Duration::from_secs(10));
    let udp = udp_echo_load(udp_guest, spec.datagrams, 8, Duration::from_millis(500), patience);
    let http = match wait_for_http(tcp_guest, LOAD_PATH, Duration::from_secs(60)) {
        Ok(body) => {
            let load = HttpLoad {
                clients: spec.clients,
                requests: spec.requests,
                path: LOAD_PATH.into(),
                expected_body: body,
                deadline: patience,
            };
            http_load(tcp_guest, &load)
        }
        Err(why) => HttpReport { errors: spec.requests, why: vec![why], ..Default::default() },
    };
    (udp, http)
}

/// Guest instructions per request: busy TSC ticks (run minus halted) over
/// the requests served. Under `-icount shift=0` one tick is one guest
/// instruction while the CPU executes; halted time is left out. (A TCG
/// plugin counting executed instructions can replace `busy_ticks`.)
pub fn instructions_per_request(busy_ticks: u64, requests: u64) -> Option<u64> {
    (requests > 0).then(|| busy_ticks / requests)
}

/// `key=value` from a summary line.
pub fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace().find_map(|f| f.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_span_every_size_and_differ() {
        assert_eq!(datagram(0).len(), 1);
        assert_eq!(datagram(1).len(), 1472);
        assert!((0..10_000).all(|i| (1..=1472).contains(&datagram(i).len())));
        assert_ne!(datagram(5), datagram(6));
    }

    #[test]
    fn percentiles_and_rates() {
        let report = HttpReport {
            ok: 4,
            latencies: [4, 1, 3, 2].iter().map(|&ms| Duration::from_millis(ms)).collect(),
            wall: Duration::from_secs(2),
            ..Default::default()
        };
        assert_eq!(report.percentile(0.5), Duration::from_millis(2));
        assert_eq!(report.percentile(0.99), Duration::from_millis(4));
        assert_eq!(report.requests_per_second(), 2.0);
        assert_eq!(instructions_per_request(1000, 4), Some(250));
        assert_eq!(instructions_per_request(1000, 0), None);
        assert_eq!(field("net: summary a=1 busy_ticks=77 z", "busy_ticks"), Some(77));
    }
}
