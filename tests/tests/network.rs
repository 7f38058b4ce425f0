//! The network secure binding end to end: UDP datagrams sent from the host
//! through QEMU user networking reach the guest's ring through its filter
//! and come back byte-identical; the kernel refuses a rival's conflicting,
//! malformed, foreign and forged-key calls.

use std::net::UdpSocket;
use std::time::{Duration, Instant};
use tests::*;

fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(key)?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

#[test]
fn udp_datagrams_are_echoed_through_filters_ring_and_keyed_transmit() {
    // Ports the OS picks (bound, then released for QEMU to take).
    let (udp_port, tcp_port) = xtask::free_net_ports(0, 0);
    let options =
        RunOptions { timeout: Duration::from_secs(90), net: Some((udp_port, tcp_port)), ..RunOptions::default() };
    let guest = std::thread::spawn(move || boot_with("netecho", options));

    let socket = UdpSocket::bind("127.0.0.1:0").expect("a host UDP socket");
    socket.set_read_timeout(Some(Duration::from_millis(1000))).unwrap();
    // Payload sizes to see answered: tiny, medium, the largest that fits
    // one Ethernet frame. Each datagram carries a unique tag, so an answer
    // that comes late (to a retry) is still matched to what was sent.
    let sizes = [4usize, 1000, 1472];
    let mut answered = [false; 3];
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut replies = 0;
    let started = Instant::now();
    let mut buffer = [0u8; 2048];
    // Until the guest has echoed its quota and ended, keep sending: first
    // each size not yet answered, then fillers. Until QEMU listens and the
    // guest has its filters in, sends go nowhere, hence the retries.
    while !guest.is_finished() && started.elapsed() < Duration::from_secs(80) {
        let kind = answered.iter().position(|a| !a).unwrap_or(0);
        let tag = sent.len() as u32;
        let mut payload: Vec<u8> = (0..sizes[kind] as u32).map(|i| (i * 7 + tag) as u8).collect();
        payload[..4].copy_from_slice(&tag.to_be_bytes());
        socket.send_to(&payload, ("127.0.0.1", udp_port)).expect("send");
        sent.push(payload);
        while let Ok((len, _)) = socket.recv_from(&mut buffer) {
            let reply = &buffer[..len];
            let original = sent.iter().find(|p| p[..] == *reply);
            assert!(original.is_some(), "an echo of {len} bytes matches nothing sent");
            replies += 1;
            if let Some(kind) = sizes.iter().position(|&n| n == len) {
                answered[kind] = true;
            }
            socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        }
        socket.set_read_timeout(Some(Duration::from_millis(1000))).unwrap();
    }
    let outcome = guest.join().expect("the QEMU thread");
    assert_eq!(answered, [true; 3], "sizes {sizes:?} answered: {answered:?}");
    assert_success(&outcome);
    let echo = outcome.env_lines("echo").find(|l| l.starts_with("netecho: echoed=")).expect("the echo env's counts");
    assert_eq!(field(echo, "echoed="), 8, "{echo}");
    assert!(replies <= 8, "{replies} echoes received for 8 sent by the guest");
    assert_eq!(field(echo, "tx_errors="), 0, "{echo}");
    assert!(field(echo, "kernel_tx=") >= 8, "{echo}");
    assert_eq!(
        outcome.env_lines("rival").find(|l| l.starts_with("netecho: rival")),
        Some(
            "netecho: rival conflict=permission-denied malformed=invalid-argument foreign_remove=permission-denied forged_tx=bad-key own=ok"
        )
    );
    assert_exited(&outcome, "echo", 0);
    assert_exited(&outcome, "rival", 0);
}
