//! libos-unix's network service under load from the host, at a size TCG
//! runs in seconds (`cargo xtask load` runs the full size): 16 concurrent
//! keep-alive clients make 400 requests for a cached file with no error,
//! 500 UDP datagrams of 1 to 1,472 bytes come back byte-identical, and the
//! guest's counters show the response cache and the NIC's interrupts at
//! work. The same load with the NIC polled (`nic_irq = false`) is served
//! just as well.

use std::time::Duration;
use tests::*;
use xtask::load::{field, run_load, LoadSpec};

fn spec(nic_irq: bool) -> LoadSpec {
    LoadSpec {
        clients: 16,
        requests: 400,
        datagrams: 500,
        nic_irq,
        icount: false,
        timeout: Duration::from_secs(150),
        echo: false,
    }
}

fn check(nic_irq: bool) {
    let spec = spec(nic_irq);
    let result = run_load(&spec).expect("the load run starts");
    for line in &result.outcome.lines {
        println!("{line}");
    }
    let (udp, http) = (&result.udp, &result.http);
    assert_eq!(udp.echoed, spec.datagrams, "{udp:?}");
    assert_eq!(udp.mismatched, 0, "{udp:?}");
    assert_eq!((http.ok, http.errors), (spec.requests, 0), "{:?}", http.why);
    assert!(
        http.connects <= spec.clients * 2,
        "keep-alive: {} connections for {} clients",
        http.connects,
        spec.clients
    );
    assert_success(&result.outcome);
    assert_exited(&result.outcome, "unix", 0);
    let summary = result.summary.expect("a summary line");
    let value = |key: &str| field(&summary, key).unwrap_or_else(|| panic!("no {key} in {summary}"));
    assert_eq!(value("http_requests"), spec.requests as u64 + 1, "{summary}");
    assert!(value("cache_hits") >= spec.requests as u64 - 2, "{summary}");
    assert!(value("udp_echoes") >= spec.datagrams as u64, "{summary}");
    assert_eq!(value("tx_errors"), 0, "{summary}");
    assert!(value("busy_ticks") > 0, "{summary}");
    assert!(summary.ends_with(" stopped=requests"), "{summary}");
    if nic_irq {
        assert!(value("nic_irqs") > 0, "{summary}");
        assert!(value("blocks") > 0, "idle waits block instead of spinning: {summary}");
    } else {
        assert_eq!(value("nic_irqs"), 0, "{summary}");
    }
}

#[test]
fn concurrent_keep_alive_clients_and_udp_echo_with_nic_interrupts() {
    check(true);
}

#[test]
fn the_same_load_with_the_nic_polled() {
    check(false);
}
