//! libos-unix's HTTP server under hostile clients: many stalled
//! connections, and over-long requests whose 431 the client never reads,
//! must not leave it deaf. A GET made while they all
//! hold their connections open is answered at once (before, four stalled
//! clients left nothing listening for 10-20 s).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tests::*;

/// Stalled clients: three times the sockets the server once had.
const STALLED: usize = 12;
/// Clients that send an over-long request head and never read the answer.
const OVERLONG: usize = 3;

#[test]
fn stalled_and_overlong_clients_never_leave_the_server_deaf() {
    let (udp_port, tcp_port) = xtask::free_net_ports(0, 0);
    let options =
        RunOptions { timeout: Duration::from_secs(90), net: Some((udp_port, tcp_port)), ..RunOptions::default() };
    let guest_run = std::thread::spawn(move || boot_with("net_hostile", options));
    let guest = SocketAddr::from(([127, 0, 0, 1], tcp_port));

    // The server is up once a first GET is answered.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut first = http_get(guest, "/", Duration::from_secs(5));
    while first.is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        first = http_get(guest, "/", Duration::from_secs(5));
    }
    assert!(first.as_ref().is_ok_and(|r| r.starts_with("HTTP/1.0 200 OK")), "the server never came up: {first:?}");

    let mut stalled: Vec<TcpStream> = Vec::new();
    for _ in 0..STALLED {
        let mut stream = TcpStream::connect_timeout(&guest, Duration::from_secs(5)).expect("connect a stalled client");
        stream.write_all(b"GET / HT").expect("half a request line");
        stalled.push(stream);
    }
    let filler =
        format!("GET / HTTP/1.0\r\n{}", "X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(200));
    let mut overlong: Vec<TcpStream> = Vec::new();
    for _ in 0..OVERLONG {
        let mut stream =
            TcpStream::connect_timeout(&guest, Duration::from_secs(5)).expect("connect an over-long client");
        let _ = stream.write_all(filler.as_bytes());
        overlong.push(stream);
    }
    // While the hostile clients still hold their connections open (the
    // over-long ones never read their 431), a GET is answered within 5 s;
    // a SYN that meets the moment a socket is being freed for it is
    // refused, so the GET is retried within that time.
    let start = Instant::now();
    let mut answer = http_get(guest, "/", Duration::from_secs(5));
    while answer.is_err() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
        answer = http_get(guest, "/", Duration::from_secs(5));
    }
    // Each stalled client is told 408 once it has been silent too long.
    let mut timed_out = 0;
    for mut stream in stalled {
        stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        timed_out += response.starts_with(b"HTTP/1.1 408 Request Timeout\r\n") as usize;
    }
    drop(overlong);
    let outcome = guest_run.join().expect("the QEMU thread");
    let answer = answer.unwrap_or_else(|why| panic!("GET beside hostile clients: {why}"));
    assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
    assert_eq!(timed_out, STALLED, "every stalled client is answered 408");

    assert_success(&outcome);
    assert_exited(&outcome, "unix", 0);
    let log: Vec<&str> = outcome.env_lines("unix").filter(|l| l.starts_with("http: request ")).collect();
    assert!(log.iter().filter(|l| l.ends_with("-> 200 OK")).count() >= 2, "{log:#?}");
    assert!(log.iter().any(|l| l.ends_with("-> 431 Request Header Fields Too Large")), "no 431: {log:#?}");
    assert!(log.iter().filter(|l| l.ends_with("-> 408 Request Timeout")).count() >= STALLED, "{log:#?}");
}
