//! libos-rt in QEMU: EDF meets a task set rate-monotonic cannot, and rt
//! keeps its deadlines beside a CPU hog in the slot it does not own.
//! All under `-icount shift=0,sleep=off`, so time is virtual and exact.

use tests::*;

/// The `rt: scheduler=...` summary line, as `(key, value)` pairs.
fn summary(outcome: &Outcome) -> Vec<(String, String)> {
    let line = outcome
        .env_lines("rt")
        .find(|l| l.starts_with("rt: scheduler="))
        .unwrap_or_else(|| panic!("no rt summary line"));
    line.trim_start_matches("rt: ")
        .split_whitespace()
        .map(|field| {
            let (key, value) = field.split_once('=').unwrap_or_else(|| panic!("bad field {field:?} in {line}"));
            (key.to_string(), value.to_string())
        })
        .collect()
}

fn field<'a>(summary: &'a [(String, String)], key: &str) -> &'a str {
    summary.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("no {key} in {summary:?}"))
}

fn number(summary: &[(String, String)], key: &str) -> u64 {
    field(summary, key).parse().unwrap_or_else(|_| panic!("{key} is not a number in {summary:?}"))
}

/// Checks every rt run shares: success, exit 0, pinned memory, `done` last.
fn check_rt_run(outcome: &Outcome) {
    assert_success(outcome);
    assert_exited(outcome, "rt", 0);
    let lines: Vec<&str> = outcome.env_lines("rt").collect();
    assert!(lines.iter().any(|l| l.starts_with("rt: memory pinned: 1 pages guaranteed")), "{lines:?}");
    assert_eq!(lines.last(), Some(&"done"));
    assert_eq!(stat(outcome, "frames_at_end"), stat(outcome, "frames_at_boot"), "pinned frames not reclaimed");
}

#[test]
fn edf_meets_every_deadline_of_a_set_above_the_rm_bound() {
    let outcome = boot_deterministic("rt_edf", 120);
    check_rt_run(&outcome);
    let summary = summary(&outcome);
    assert_eq!(field(&summary, "scheduler"), "edf");
    assert_eq!(number(&summary, "utilisation_ppm"), 971_429);
    // 350 ms of 5 ms and 7 ms periods.
    assert_eq!(number(&summary, "jobs"), 70 + 50);
    assert_eq!(number(&summary, "misses"), 0, "EDF is optimal below full load");
}

#[test]
fn rate_monotonic_misses_deadlines_of_the_same_set() {
    let outcome = boot_deterministic("rt_rm", 120);
    check_rt_run(&outcome);
    let summary = summary(&outcome);
    assert_eq!(field(&summary, "scheduler"), "rm");
    assert_eq!(number(&summary, "jobs"), 70 + 50);
    assert!(number(&summary, "misses") > 0, "U ~ 0.971 is above the RM bound and fails its exact test");
    // Only the longer-period (lower-priority) task misses.
    let task0 = outcome.env_lines("rt").find(|l| l.starts_with("rt: task 0 ")).expect("task 0 line");
    assert!(task0.contains(" misses=0 "), "{task0}");
}

#[test]
fn rt_meets_its_deadlines_beside_a_cpu_hog() {
    let outcome = boot_deterministic("rt_hog", 120);
    check_rt_run(&outcome);
    let summary = summary(&outcome);
    assert_eq!(number(&summary, "jobs"), 20 + 10);
    assert_eq!(number(&summary, "misses"), 0);
    // The hog outlives rt's run, so every fourth slot (50 in 200 ms) was
    // the hog's: rt yielded at each, within the save bound.
    let slot_ends = outcome.env_lines("rt").find(|l| l.starts_with("rt: slot ends: ")).expect("slot ends line");
    let yielded: u64 = slot_ends
        .split_whitespace()
        .find_map(|f| f.strip_prefix("yielded=")?.parse().ok())
        .unwrap_or_else(|| panic!("no yielded= in {slot_ends}"));
    assert!(yielded >= 45, "the hog did not hold its slot through rt's run: {slot_ends}");
    assert!(outcome.summary("rt").is_some_and(|s| s.contains(" overruns=0")));
    assert_exited(&outcome, "unix", 0);
    assert!(outcome.env_lines("unix").any(|l| l == "done"));
}
