//! Regression attacks: legal call *sequences* that once broke the kernel
//! (a stale upcall-stack translation, an unbounded grant table, leaked
//! reverse-map entries, uncharged page tables, unbounded benchmark calls),
//! hostile arguments to the batched dirty-bit query, and the seeded fuzzer
//! with fixed seeds. Each run must end with the success verdict and the
//! kernel's end-of-run invariants holding.

use tests::*;

/// What every attack run shares: the kernel stayed healthy, its end-of-run
/// invariants hold, every frame went back, and `env` passed its checks.
fn check_attack(outcome: &Outcome, env: &str) -> Vec<String> {
    assert_no_panic(outcome);
    assert_success(outcome);
    assert_invariants(outcome);
    assert_eq!(stat(outcome, "frames_at_end"), stat(outcome, "frames_at_boot"), "frames not reclaimed");
    let lines: Vec<String> = outcome.env_lines(env).map(String::from).collect();
    // The attacker's own verdicts start a line (`MODE: FAIL...`, `FAIL: ...`,
    // `check ... (wanted ...)`); a fuzzer's console noise never does.
    let verdict = |l: &String| {
        l.starts_with("FAIL: ")
            || l.split_once(": FAIL")
                .is_some_and(|(head, _)| !head.is_empty() && head.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
            || (l.starts_with("check ") && (l.contains("UNEXPECTED") || l.contains("(wanted")))
    };
    assert!(!lines.iter().any(verdict), "{env} found a kernel bug: {lines:#?}");
    assert_exited(outcome, env, 0);
    lines
}

fn pass_line<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.starts_with(prefix) && l.contains("PASS"))
        .unwrap_or_else(|| panic!("no `{prefix} PASS` line in {lines:#?}"))
}

#[test]
fn upcall_frames_follow_the_stack_page_when_it_is_remapped() {
    let outcome = boot("attack_upcall_stack", 60);
    let lines = check_attack(&outcome, "attacker");
    pass_line(&lines, "upcall-stack: ");
    assert_eq!(stat(&outcome, "upcalls"), 2);
}

#[test]
fn a_share_flood_hits_the_kernel_memory_budget_and_frees_it_all() {
    let outcome = boot("attack_grant_flood", 60);
    let lines = check_attack(&outcome, "attacker");
    let flood =
        lines.iter().find(|l| l.starts_with("grant-flood: ") && l.contains(" shares, then ")).expect("flood line");
    assert!(flood.contains("then no-memory"), "{flood}");
    let limit: u64 = flood
        .split_whitespace()
        .find_map(|f| f.strip_prefix("kmem_limit=")?.parse().ok())
        .unwrap_or_else(|| panic!("no kmem_limit in {flood}"));
    assert_eq!(limit, 64 * 1024, "kmem_kib = 64 in the manifest: {flood}");
    pass_line(&lines, "grant-flood: ");
    // The neighbour was not starved of kernel memory.
    assert_exited(&outcome, "gc", 0);
    assert!(outcome.env_lines("gc").any(|l| l == "done"));
}

#[test]
fn mappings_both_tlbs_forget_leave_no_reverse_map_entries() {
    let outcome = boot("attack_rmap_churn", 90);
    let lines = check_attack(&outcome, "attacker");
    let pass = pass_line(&lines, "rmap-churn: ");
    assert!(pass.contains("PASS: 20000 rounds"), "{pass}");
    assert_eq!(invariant(&outcome, "rmap_entries"), 0);
}

#[test]
fn page_tables_are_charged_to_the_pool_and_the_victim_keeps_its_quota() {
    let outcome = boot("attack_page_tables", 90);
    let attacker = check_attack(&outcome, "attacker");
    let line = attacker.iter().find(|l| l.contains(" pages mapped 1 GiB apart, then ")).expect("attack line");
    assert!(
        ["then quota-exceeded;", "then again;", "then no-memory;"].iter().any(|e| line.contains(e)),
        "map must fail with quota-exceeded, again or no-memory: {line}"
    );
    pass_line(&attacker, "page-tables: ");
    let victim = check_attack(&outcome, "victim");
    let pass = pass_line(&victim, "victim: ");
    assert!(pass.starts_with("victim: PASS: got my whole quota of 64 frames"), "{pass}");
    assert_eq!(invariant(&outcome, "pool_used"), 0);
}

#[test]
fn benchmark_calls_are_refused_outside_benchmark_scenarios_and_rt_keeps_its_deadlines() {
    let outcome = boot_deterministic("attack_demux_flood", 120);
    let lines = check_attack(&outcome, "attacker");
    for check in [
        "check demux-bench-linear-huge -> permission-denied",
        "check demux-bench-trie-huge -> permission-denied",
        "check key-bench-max -> permission-denied",
    ] {
        assert!(lines.iter().any(|l| l == check), "missing: {check}");
    }
    pass_line(&lines, "demux-flood: ");
    assert_exited(&outcome, "rt", 0);
    let summary = outcome.env_lines("rt").find(|l| l.starts_with("rt: scheduler=")).expect("rt summary");
    assert!(summary.contains(" jobs=30 "), "{summary}");
    assert!(summary.contains(" misses=0 "), "rt missed deadlines beside the attacker: {summary}");
}

#[test]
fn benchmark_calls_are_bounded_in_benchmark_scenarios() {
    let outcome = boot("attack_bench_bounds", 90);
    let lines = check_attack(&outcome, "attacker");
    for check in [
        "check demux-bench-linear-huge -> invalid-argument",
        "check demux-bench-trie-too-many-packets -> invalid-argument",
        "check demux-bench-linear-over-product -> invalid-argument",
        "check key-bench-max -> invalid-argument",
        "check key-bench-over -> invalid-argument",
    ] {
        assert!(lines.iter().any(|l| l == check), "missing: {check}");
    }
    pass_line(&lines, "bench-bounds: ");
}

#[test]
fn map_query_range_refuses_hostile_arguments_and_flushes_what_it_clears() {
    let outcome = boot("attack_dirty_range", 60);
    let lines = check_attack(&outcome, "attacker");
    for check in [
        "check flags-unknown-bit -> invalid-argument",
        "check flags-first-of-all -> invalid-argument",
        "check count-zero -> bad-length",
        "check count-4097 -> bad-length",
        "check count-huge -> bad-length",
        "check va-misaligned -> misaligned",
        "check va-kernel -> bad-address",
        "check va-top -> bad-address",
        "check va-below-window -> bad-address",
        "check straddles-window-end -> bad-address",
        "check last-page-4096 -> bad-address",
        "check out-null -> bad-address",
        "check out-kernel -> bad-address",
        "check out-kernel-high -> bad-address",
        "check out-misaligned -> misaligned",
        "check out-read-only-code -> bad-address",
        "check out-second-page-unmapped -> bad-address",
        "check out-read-only-mapping -> bad-address",
        "check 4096-pages -> count 4056",
    ] {
        assert!(lines.iter().any(|l| l == check), "missing: {check}");
    }
    assert!(lines.iter().any(|l| l == "check refusals-cleared-nothing -> [8000000004] count 2"), "{lines:#?}");
    pass_line(&lines, "dirty-range: ");
}

/// Every fuzz env printed its seed first and its `done ... ok` line last.
fn check_fuzz(scenario: &str, envs: &[&str], seed: u64) {
    let outcome = boot(scenario, 120);
    for env in envs {
        let lines = check_attack(&outcome, env);
        assert!(
            lines.first().is_some_and(|l| l.starts_with(&format!("fuzz: seed={seed} "))),
            "{env}: seed not printed first"
        );
        let done = lines.iter().find(|l| l.starts_with("fuzz: done ")).unwrap_or_else(|| panic!("{env}: no done line"));
        assert!(done.starts_with(&format!("fuzz: done seed={seed} calls=")) && done.ends_with(" ok"), "{env}: {done}");
    }
}

#[test]
fn fuzzing_with_fixed_seeds_leaves_the_kernel_healthy() {
    check_fuzz("fuzz", &["fuzz1", "fuzz2", "fuzz3"], 1);
}

#[test]
fn fuzzing_under_stlb_with_a_small_pool_and_budget_leaves_the_kernel_healthy() {
    check_fuzz("fuzz_stlb", &["fuzz1", "fuzz2"], 7);
}
