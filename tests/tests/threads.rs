//! libos-unix's preemptive user-level threads, switched from the kernel's
//! end-of-slot upcalls, under round robin and MLFQ: both finish every
//! thread, round robin shares the CPU evenly among the batch threads, and
//! MLFQ answers the interactive thread sooner.

use std::sync::OnceLock;
use tests::*;

/// The summary line of one scenario, booted once per test binary.
struct Run {
    outcome: Outcome,
    summary: String,
}

fn run(scenario: &'static str) -> &'static Run {
    static RR: OnceLock<Run> = OnceLock::new();
    static MLFQ: OnceLock<Run> = OnceLock::new();
    let cell = match scenario {
        "threads_rr" => &RR,
        "threads_mlfq" => &MLFQ,
        other => panic!("no scenario {other}"),
    };
    cell.get_or_init(|| {
        // Deterministic virtual time: the same ticks land at the same instructions every run.
        let outcome = boot_deterministic(scenario, 120);
        let summary = outcome
            .env_lines("unix")
            .find(|l| l.starts_with("threads: scheduler=") && l.contains(" switches="))
            .unwrap_or_else(|| panic!("{scenario}: no summary line"))
            .to_string();
        Run { outcome, summary }
    })
}

fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

fn assert_all_finished(scenario: &'static str, policy: &str) {
    let run = run(scenario);
    assert_success(&run.outcome);
    assert_exited(&run.outcome, "unix", 0);
    assert!(
        run.outcome.env_lines("unix").any(|l| l == "threads: all finished"),
        "{scenario}: not all threads finished"
    );
    assert!(run.summary.starts_with(&format!("threads: scheduler={policy} ")), "{}", run.summary);
    assert!(field(&run.summary, "switches") > 0, "{}", run.summary);
    assert!(run
        .outcome
        .env_lines("unix")
        .any(|l| l.starts_with("thread 4 interactive: ") && !l.contains(" wakeups=0 ")));
}

#[test]
fn round_robin_threads_all_finish_and_batch_threads_share_evenly() {
    assert_all_finished("threads_rr", "rr");
    let summary = &run("threads_rr").summary;
    // Fair is a third each (333333 ppm of the batch CPU); round robin stays
    // within 3% of it (10000 ppm) over 300 ms of 2 ms quanta.
    let (min, max) = (field(summary, "batch_share_min_ppm"), field(summary, "batch_share_max_ppm"));
    assert!(min >= 333_333 - 10_000 && max <= 333_333 + 10_000, "{summary}");
}

#[test]
fn mlfq_threads_all_finish() {
    assert_all_finished("threads_mlfq", "mlfq");
    let summary = &run("threads_mlfq").summary;
    assert!(field(summary, "batch_share_min_ppm") > 0, "every batch thread ran: {summary}");
}

#[test]
fn mlfq_answers_the_interactive_thread_sooner_than_round_robin() {
    let (rr, mlfq) = (&run("threads_rr").summary, &run("threads_mlfq").summary);
    let rr_max = field(rr, "interactive_latency_max_us");
    let mlfq_max = field(mlfq, "interactive_latency_max_us");
    // Round robin queues the woken thread behind the batch threads' 2 ms
    // quanta; MLFQ preempts the sunken batch thread at the waking tick.
    assert!(rr_max >= 2000, "round robin should make it wait a quantum or more: {rr}");
    assert!(mlfq_max < rr_max, "mlfq {mlfq_max} us vs rr {rr_max} us");
    assert!(field(mlfq, "interactive_latency_avg_us") < field(rr, "interactive_latency_avg_us"));
}
