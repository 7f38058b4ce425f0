//! Processes in libos-unix: environments created at run time on the
//! kernel's secure bindings, with fork, exec, wait and kill built at user
//! level (`ulib`), and the kernel calls behind them attacked.

use tests::*;

#[test]
fn fork_exec_wait_and_kill_behave_as_unix_says() {
    let outcome = boot("unix_procs", 120);
    assert_no_panic(&outcome);
    assert_success(&outcome);
    assert_invariants(&outcome);
    let lines: Vec<&str> = outcome.env_lines("forktest").collect();
    for check in [
        "fork-isolation",
        "wait-status",
        "exec-hello",
        "exec-missing",
        "exec-malformed",
        "kill-running-child",
        "sigterm-handler",
        "getppid",
        "orphan-to-init",
    ] {
        let line = format!("forktest: {check} ok");
        assert!(lines.contains(&line.as_str()), "missing `{line}` in {lines:#?}");
    }
    assert!(lines.contains(&"forktest: 9 checks, 0 failed"), "{lines:#?}");
    // The exec'd program ran under the same pid with its arguments.
    let hello: Vec<&str> = outcome.env_lines("hello").collect();
    assert!(
        hello.iter().any(|l| l.starts_with("hello from pid ") && l.contains("[\"hello\", \"from-exec\", \"exit=7\"]")),
        "{hello:#?}"
    );
    // The orphan passed to init, which reaped it with its status.
    let orphan = lines.iter().find(|l| l.starts_with("orphan pid ")).expect("the orphan's line");
    assert!(orphan.ends_with("parent is now 1"), "{orphan}");
    let pid = orphan.split_whitespace().nth(2).expect("pid").trim_end_matches(':');
    let init: Vec<&str> = outcome.env_lines("unix").collect();
    assert!(init.contains(&format!("init: reaped pid {pid}: exited 5").as_str()), "{init:#?}");
    assert!(init.contains(&"init: reaped pid 2: exited 0"), "{init:#?}");
    assert_exited(&outcome, "unix", 0);
    assert_exited(&outcome, "rt", 0);
    assert_eq!(stat(&outcome, "frames_at_end"), stat(&outcome, "frames_at_boot"));
}

#[test]
fn a_fork_bomb_stops_at_its_quota_and_the_neighbours_run_on() {
    let outcome = boot("unix_forkbomb", 180);
    assert_no_panic(&outcome);
    assert_success(&outcome);
    assert_invariants(&outcome);
    let bomb: Vec<&str> = outcome.env_lines("forkbomb").collect();
    let line = bomb.iter().find(|l| l.starts_with("forkbomb: ")).expect("the bomb's summary");
    assert!(line.ends_with("stopped by EAGAIN: true"), "{line}");
    let forked: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("a count");
    assert!(forked >= 4, "the bomb forked only {forked} processes: {line}");
    // Beside it, the other libOSes finished their work.
    assert_exited(&outcome, "gc", 0);
    assert!(outcome.env_lines("gc").any(|l| l == "done"));
    assert_exited(&outcome, "rt", 0);
    assert!(outcome.env_lines("rt").any(|l| l == "done"));
    assert_exited(&outcome, "unix", 0);
    assert_eq!(stat(&outcome, "frames_at_end"), stat(&outcome, "frames_at_boot"));
}

#[test]
fn the_calls_that_build_environments_refuse_hostile_arguments() {
    let outcome = boot("attack_children", 60);
    assert_no_panic(&outcome);
    assert_success(&outcome);
    assert_invariants(&outcome);
    let lines: Vec<&str> = outcome.env_lines("attacker").collect();
    assert!(!lines.iter().any(|l| l.contains("UNEXPECTED") || l.contains("(wanted")), "{lines:#?}");
    for expected in [
        "check env_create-null-spec -> bad-address",
        "check env_create-more-quota-than-mine -> quota-exceeded",
        "check env_create-more-kmem-than-mine -> no-memory",
        "check env_start-kernel-rip -> bad-address",
        "check env_start-not-my-child -> permission-denied",
        "check env_map-with-my-own-key -> bad-key",
        "check env_map-writable-code -> invalid-argument",
        "check map-code-in-a-booted-env -> invalid-argument",
        "check env_write-a-frame-the-child-does-not-own -> permission-denied",
        "check frame_alloc-for-a-sibling -> permission-denied",
        "check co-own-with-a-share -> permission-denied",
        "check env_kill-a-booted-env -> permission-denied",
        "check env_wake-another-family -> permission-denied",
        "check archive_read-into-the-kernel -> bad-address",
        "check env_reap-no-children -> no-such-env",
        "check console_read-without-the-console -> permission-denied",
        "children: the child co-owns 4 frames, then quota-exceeded",
        "check env_map_batch-not-my-child -> permission-denied",
        "check env_map_batch-over-the-bound -> bad-length",
        "check env_map_batch-records-in-the-kernel -> bad-address",
        "check env_map_batch-records-straddle-an-unmapped-page -> bad-address",
        "check env_map_batch-read-only-records -> bad-address",
        "check env_map_batch-my-own-key -> bad-key",
        "check env_map_batch-co-own-with-a-share -> permission-denied",
        "check env_map_batch-writable-code -> invalid-argument",
        "check env_map_batch-read-only-key-mapped-writable -> permission-denied",
        "check env_map_batch-the-failing-record -> bad-key",
        "children: a batch co-owns 3 frames, then quota-exceeded",
        "children: env_map_batch refused every hostile call",
        "children: PASS: every hostile call refused, every child reclaimed",
    ] {
        assert!(lines.contains(&expected), "missing `{expected}` in {lines:#?}");
    }
    assert!(outcome.env_lines("bystander").any(|l| l == "bystander: PASS: untouched"));
    assert_exited(&outcome, "attacker", 0);
    assert_exited(&outcome, "bystander", 0);
}
