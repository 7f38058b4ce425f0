//! Helpers for the scenario tests: boot a scenario image built by
//! `cargo xtask test` (or `cargo xtask build`) and return what it printed.

pub use shared_abi::exit::Verdict;
use std::path::PathBuf;
use std::time::Duration;
pub use xtask::{Outcome, RunOptions};

/// Path of a scenario's image; panics with a hint if it was not built.
pub fn image(scenario: &str) -> PathBuf {
    let path = xtask::image_dir().join(format!("{scenario}.img"));
    assert!(path.exists(), "{} missing: run the scenario tests through `cargo xtask test`", path.display());
    path
}

/// Boot a scenario under TCG with a timeout and return its outcome.
pub fn boot(scenario: &str, timeout_secs: u64) -> Outcome {
    boot_with(scenario, RunOptions { timeout: Duration::from_secs(timeout_secs), ..RunOptions::default() })
}

/// Boot a time-dependent scenario (deadlines, slot ends) under
/// `-icount shift=0,sleep=off`: virtual time follows guest instructions, so
/// the result does not depend on the host's load.
pub fn boot_deterministic(scenario: &str, timeout_secs: u64) -> Outcome {
    boot_with(
        scenario,
        RunOptions {
            timeout: Duration::from_secs(timeout_secs),
            icount: true,
            icount_nosleep: true,
            ..RunOptions::default()
        },
    )
}

/// Boot a scenario with explicit options.
pub fn boot_with(scenario: &str, options: RunOptions) -> Outcome {
    let outcome = xtask::run_qemu(&image(scenario), &options).expect("QEMU starts");
    // Shown only when a test fails.
    println!("--- {scenario}: {} in {:.2} s", outcome.describe(), outcome.wall.as_secs_f64());
    for line in &outcome.lines {
        println!("{line}");
    }
    outcome
}

/// Assert the run ended with the kernel's success verdict, its end-of-run
/// invariants holding.
pub fn assert_success(outcome: &Outcome) {
    assert_eq!(outcome.verdict, Some(Verdict::Success), "run ended: {}", outcome.describe());
    assert!(outcome.lines.iter().any(|l| l == "EXO-END verdict=success"), "no EXO-END line");
    assert_invariants(outcome);
}

/// Assert environment `name` exited by itself with `code`.
pub fn assert_exited(outcome: &Outcome, name: &str, code: i64) {
    let summary = outcome.summary(name).unwrap_or_else(|| panic!("no summary line for env {name}"));
    assert!(
        summary.contains(&format!("status=exited code={code} "))
            || summary.ends_with(&format!("status=exited code={code}")),
        "env {name}: {summary}"
    );
}

/// Assert environment `name` was ended by the kernel for a reason containing `why`.
pub fn assert_killed(outcome: &Outcome, name: &str, why: &str) {
    let summary = outcome.summary(name).unwrap_or_else(|| panic!("no summary line for env {name}"));
    assert!(summary.contains("status=killed") && summary.contains(why), "env {name}: {summary}");
}

/// The value of `key=` on the EXO-STATS line.
pub fn stat(outcome: &Outcome, key: &str) -> u64 {
    let line = outcome.lines.iter().find(|l| l.starts_with("EXO-STATS ")).expect("EXO-STATS line");
    line.split_whitespace()
        .filter_map(|f| f.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

/// The kernel's end-of-run `EXO-INVARIANTS ...` line, if it printed one.
pub fn invariants_line(outcome: &Outcome) -> Option<&str> {
    outcome.lines.iter().find_map(|l| l.find("EXO-INVARIANTS ").map(|at| &l[at..]))
}

/// Assert the kernel printed its end-of-run invariant check and it held
/// (`ok=true`: frames, heap, keys, reverse map and pool back where they
/// belong once every environment ended).
pub fn assert_invariants(outcome: &Outcome) {
    let line = invariants_line(outcome)
        .unwrap_or_else(|| panic!("no EXO-INVARIANTS line (run ended: {})", outcome.describe()));
    assert!(line.split_whitespace().any(|f| f == "ok=true"), "kernel invariants broken: {line}");
}

/// The value of `key=` on the EXO-INVARIANTS line.
pub fn invariant(outcome: &Outcome, key: &str) -> u64 {
    let line = invariants_line(outcome).expect("EXO-INVARIANTS line");
    line.split_whitespace()
        .filter_map(|f| f.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

/// Assert the kernel never panicked during the run.
pub fn assert_no_panic(outcome: &Outcome) {
    if let Some(line) = outcome.lines.iter().find(|l| l.contains("KERNEL PANIC")) {
        panic!("the kernel panicked: {line}");
    }
}

/// `GET path` over HTTP/1.0 from `guest`: the whole response as text, or
/// why there was none. `patience` bounds the connect and each read.
pub fn http_get(guest: std::net::SocketAddr, path: &str, patience: Duration) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&guest, patience).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(patience)).unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(|e| format!("receive: {e} after {} bytes", response.len()))?;
    if response.is_empty() {
        return Err("connection closed without a response".into());
    }
    String::from_utf8(response).map_err(|e| format!("not text: {e}"))
}
