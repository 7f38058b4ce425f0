//! libos-unix's TCP/IP stack (smoltcp on the packets its downloaded filters
//! claim) answers the host through QEMU user networking: UDP datagrams to
//! port 7 come back byte for byte, `GET /` over TCP port 80 gets a 200 and
//! the page, other paths a 404, and the guest logs each request and a
//! summary before it exits by itself.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tests::*;

/// HTTP requests the scenario answers before it stops (its `http_requests`).
const HTTP_REQUESTS: usize = 3;
/// How long the host keeps trying while the guest boots.
const HOST_PATIENCE: Duration = Duration::from_secs(90);

/// What one boot of the `net` scenario gave, shared by the tests below.
struct Session {
    outcome: Outcome,
    /// Each datagram sent and the echo that came back (None: never answered).
    echoes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Each request path and the whole response (or why there was none).
    responses: Vec<(&'static str, Result<String, String>)>,
}

/// Send `payload` until its echo arrives or the deadline passes; replies
/// to earlier datagrams (late retries) are skipped, anything else is
/// returned as the (wrong) echo.
fn echo(
    socket: &UdpSocket,
    guest: SocketAddr,
    payload: &[u8],
    earlier: &[Vec<u8>],
    deadline: Instant,
) -> Option<Vec<u8>> {
    let mut buffer = vec![0u8; 2048];
    while Instant::now() < deadline {
        socket.send_to(payload, guest).expect("send a datagram");
        let wait_until = Instant::now() + Duration::from_millis(1000);
        while Instant::now() < wait_until {
            match socket.recv_from(&mut buffer) {
                Ok((len, _)) => {
                    let reply = buffer[..len].to_vec();
                    if earlier.contains(&reply) && reply != payload {
                        continue;
                    }
                    return Some(reply);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
                // ICMP port unreachable from QEMU's side while the guest boots.
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
    None
}

fn session() -> &'static Session {
    static SESSION: OnceLock<Session> = OnceLock::new();
    SESSION.get_or_init(|| {
        // Ports the OS picks now (free this moment; QEMU binds them next).
        let (udp_port, tcp_port) = xtask::free_net_ports(0, 0);
        let options =
            RunOptions { timeout: Duration::from_secs(150), net: Some((udp_port, tcp_port)), ..RunOptions::default() };
        let guest = std::thread::spawn(move || boot_with("net", options));
        let deadline = Instant::now() + HOST_PATIENCE;

        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a UDP socket");
        socket.set_read_timeout(Some(Duration::from_millis(250))).unwrap();
        let udp_guest = SocketAddr::from((Ipv4Addr::LOCALHOST, udp_port));
        let payloads: Vec<Vec<u8>> =
            vec![b"hello, libos-unix".to_vec(), (0..1400u32).map(|i| (i * 7 + 3) as u8).collect(), vec![0u8; 1]];
        let mut echoes = Vec::new();
        for (index, payload) in payloads.iter().enumerate() {
            let reply = echo(&socket, udp_guest, payload, &payloads[..index], deadline);
            echoes.push((payload.clone(), reply));
        }

        let tcp_guest = SocketAddr::from((Ipv4Addr::LOCALHOST, tcp_port));
        let mut responses = Vec::new();
        for path in ["/", "/no-such-page", "/"] {
            // The guest is up (it echoed); retry only a connection that got nothing.
            let mut result = http_get(tcp_guest, path, Duration::from_secs(15));
            while result.as_ref().is_err_and(|e| e.contains("without a response") || e.starts_with("connect"))
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(500));
                result = http_get(tcp_guest, path, Duration::from_secs(15));
            }
            responses.push((path, result));
        }
        let outcome = guest.join().expect("the QEMU thread");
        Session { outcome, echoes, responses }
    })
}

#[test]
fn udp_echo_returns_every_datagram_byte_for_byte() {
    let session = session();
    for (sent, reply) in &session.echoes {
        let reply = reply.as_ref().unwrap_or_else(|| panic!("no echo of a {}-byte datagram", sent.len()));
        assert_eq!(reply, sent, "the echo of a {}-byte datagram differs", sent.len());
    }
}

#[test]
fn http_get_answers_200_with_the_page_and_404_elsewhere() {
    let session = session();
    let response = |index: usize| match &session.responses[index].1 {
        Ok(text) => text.as_str(),
        Err(why) => panic!("GET {}: {why}", session.responses[index].0),
    };
    let first = response(0);
    assert!(first.starts_with("HTTP/1.0 200 OK\r\n"), "{first}");
    assert!(first.contains("\r\n\r\nHello from libos-unix, a library OS on an exokernel."), "{first}");
    assert!(first.contains("You are request number 1."), "{first}");
    let missing = response(1);
    assert!(missing.starts_with("HTTP/1.0 404 Not Found\r\n"), "{missing}");
    let third = response(2);
    assert!(third.starts_with("HTTP/1.0 200 OK\r\n") && third.contains("You are request number 3."), "{third}");
    let length: usize = first
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("a Content-Length header");
    assert_eq!(first.split_once("\r\n\r\n").unwrap().1.len(), length);
}

#[test]
fn guest_logs_each_request_and_a_summary_then_exits_by_itself() {
    let session = session();
    let outcome = &session.outcome;
    assert_success(outcome);
    assert_exited(outcome, "unix", 0);
    let requests: Vec<&str> = outcome.env_lines("unix").filter(|l| l.starts_with("http: request ")).collect();
    assert_eq!(requests.len(), HTTP_REQUESTS, "{requests:?}");
    assert!(requests[0].contains(" GET / -> 200 OK"), "{}", requests[0]);
    assert!(requests[1].contains(" GET /no-such-page -> 404 Not Found"), "{}", requests[1]);
    assert!(outcome.env_lines("unix").any(|l| l.starts_with("net: serving udp echo on port 7 and http on port 80")));
    let summary = outcome.env_lines("unix").find(|l| l.starts_with("net: summary ")).expect("a summary line");
    let field = |key: &str| -> u64 {
        summary
            .split_whitespace()
            .find_map(|f| f.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {summary}"))
    };
    assert_eq!(field("http_requests"), HTTP_REQUESTS as u64, "{summary}");
    assert!(field("udp_echoes") >= session.echoes.len() as u64, "{summary}");
    assert!(field("rx_frames") > 0 && field("tx_frames") > 0, "{summary}");
    assert_eq!(field("tx_errors"), 0, "{summary}");
    assert!(summary.ends_with(" stopped=requests"), "{summary}");
}
