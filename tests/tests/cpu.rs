//! The time-slot vector, the bounded end-of-slot save with penalties, and
//! protected control transfer.

use tests::*;

fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(key)?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

#[test]
fn protected_control_transfer_calls_sends_and_refusals() {
    let outcome = boot_deterministic("pct", 60);
    assert_success(&outcome);
    let client: Vec<&str> = outcome.env_lines("client").collect();
    for expected in [
        "client: 100 synchronous calls answered correctly",
        "client: 5 asynchronous sends queued",
        "check call-missing-env -> no-such-env",
        "check call-self -> invalid-argument",
        "check call-ended-env -> no-such-env",
        "check send-ended-env -> no-such-env",
        "check stray-reply -> invalid-argument",
    ] {
        assert!(client.contains(&expected), "missing: {expected}");
    }
    assert!(outcome.env_lines("server").any(|l| l == "server: served 100 calls and 5 sends (sum 15)"));
    for name in ["server", "client", "early"] {
        assert_exited(&outcome, name, 0);
    }
    assert_eq!(stat(&outcome, "pct_calls"), 100);
}

#[test]
fn a_libos_spinning_in_its_slot_end_handler_is_penalised_and_others_keep_their_share() {
    let outcome = boot_deterministic("overrun", 120);
    assert_success(&outcome);
    let spinner = outcome.env_lines("spinner").find(|l| l.starts_with("spinner: ")).expect("spinner line");
    assert!(field(spinner, "overruns=") > 0, "{spinner}");
    assert!(field(spinner, "penalty_ticks=") > 0, "{spinner}");
    let worker = outcome.env_lines("worker").find(|l| l.starts_with("worker: ")).expect("worker line");
    let share = field(worker, "share_ppm=");
    let owed = field(worker, "slot_share_ppm=");
    // Tolerance: 5 percentage points below the worker's slot share.
    assert!(share + 50_000 >= owed, "worker got {share} ppm of the CPU, its slots are {owed} ppm");
    assert_eq!(field(worker, "overruns="), 0);
    assert!(stat(&outcome, "overruns") > 0);
    // Slot keys: by count, position, stale and forged keys.
    let slots: Vec<&str> = outcome.env_lines("slots").collect();
    assert!(slots.iter().any(|l| l.starts_with("slots: allocated position ")), "{slots:?}");
    for expected in [
        "check slot-taken -> permission-denied",
        "check slot-out-of-range -> invalid-argument",
        "check slot-stale-key -> bad-key",
        "check slot-forged-key -> bad-key",
    ] {
        assert!(slots.contains(&expected), "missing: {expected}");
    }
    for name in ["spinner", "worker", "slots"] {
        assert_exited(&outcome, name, 0);
    }
}
