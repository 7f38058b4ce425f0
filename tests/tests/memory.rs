//! Keyed frames, TLB slots, the software TLB, guaranteed mappings and the
//! abort protocol, exercised by libOSes in QEMU.

use tests::*;

#[test]
fn frame_keys_refuse_forged_foreign_stale_and_double_freed_keys() {
    let outcome = boot("memkeys", 60);
    assert_success(&outcome);
    let lines: Vec<&str> = outcome.env_lines("keys").collect();
    for expected in [
        "check forged-key -> bad-key",
        "check flipped-handle-bit -> bad-key",
        "check flipped-mac-bit -> bad-key",
        "check another-envs-key -> bad-key",
        "check writable-map-with-read-key -> permission-denied",
        "check share-with-more-rights -> permission-denied",
        "check map-outside-window -> bad-address",
        "check map-kernel-half -> bad-address",
        "check alloc-bad-out-ptr -> bad-address",
        "check alloc-kernel-frame -> no-memory",
        "check touch-after-free -> faulted",
        "check stale-key-after-free -> bad-key",
        "check stale-share-after-free -> bad-key",
        "check double-free -> bad-key",
        "check old-key-on-reallocated-frame -> bad-key",
        "check named-frame -> ok, zeroed",
        "keys: all checks passed",
    ] {
        assert!(lines.contains(&expected), "missing: {expected}");
    }
    assert!(lines.iter().any(|l| l.starts_with("check write-through-read-only-share -> faulted at 0x200000001000")));
    assert!(!lines.iter().any(|l| l.contains("UNEXPECTED") || l.contains("wanted")));
    assert_exited(&outcome, "keys", 0);
    assert_exited(&outcome, "worker", 0);
    assert_eq!(stat(&outcome, "frames_at_end"), stat(&outcome, "frames_at_boot"));
}

#[test]
fn evicted_slots_refill_from_the_software_tlb_without_upcalls() {
    let outcome = boot("memstlb", 60);
    assert_success(&outcome);
    let line = outcome.env_lines("stlb").find(|l| l.starts_with("stlb: ")).expect("stlb line");
    assert!(
        line.starts_with(
            "stlb: 32 pages over 8 slots: 32 stlb hits, 0 upcalls, 0 faults seen by the libOS, 8 pages in slots"
        ),
        "{line}"
    );
    assert_exited(&outcome, "stlb", 0);
    assert_eq!(stat(&outcome, "upcalls"), 0);
}

/// The value of `key=` among the words of `line`.
fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

#[test]
fn guaranteed_mappings_survive_every_switch_under_the_stlb_policy() {
    let outcome = boot("guaranteed", 60);
    assert_success(&outcome);
    assert!(outcome
        .lines
        .iter()
        .any(|l| l == "[kernel] memory: pool 8192 KiB, tlb policy stlb, revocation deadline 20000 us"));
    let line = outcome.env_lines("pinned").find(|l| l.starts_with("guaranteed: ")).expect("result line");
    let count = |key| field(line, key);
    // Each number is its own count: yields tried, switches seen, times the
    // guaranteed page was found in its slot right after a switch, faults
    // (software-TLB refills included, from the kernel's counters) and
    // page-fault upcalls while touching it, and the ordinary page dropped
    // by a switch and refaulting when touched.
    let switches = count("switches");
    assert!(switches > 0 && switches <= count("attempts"), "{line}");
    assert_eq!(count("pinned_in_slot"), switches, "guaranteed page out of its slot after a switch: {line}");
    assert!(count("measured") > 0, "no touch of the guaranteed page was measured: {line}");
    assert_eq!(count("pinned_faults"), 0, "touching the guaranteed page after a switch faulted: {line}");
    assert_eq!(count("pinned_upcalls"), 0, "the guaranteed page faulted to the libOS: {line}");
    // The same observations see an ordinary mapping leave and refault.
    assert!(count("ordinary_dropped") > 0, "ordinary mappings should not survive a switch: {line}");
    assert!(count("ordinary_refaults") > 0, "the measurement never saw the ordinary page refault: {line}");
    assert_exited(&outcome, "pinned", 0);
}

#[test]
fn a_libos_that_ignores_revocation_loses_frames_by_force() {
    let outcome = boot_deterministic("abort", 120);
    assert_success(&outcome);
    assert!(outcome.lines.iter().any(|l| l == "[kernel] abort protocol: took 8 frame(s) from env 1 (hog)"));
    let hog: Vec<&str> = outcome.env_lines("hog").collect();
    let holding: u64 = hog
        .iter()
        .find_map(|l| l.strip_prefix("hog: holding ")?.split_whitespace().next()?.parse().ok())
        .expect("hog holding line");
    assert!(holding > 4, "the hog should borrow beyond its 4-frame quota: {holding}");
    assert!(hog.iter().any(|l| l.starts_with("hog: repossession vector records ") && !l.contains("records 0 ")));
    assert!(hog.contains(&"hog: map_query of a repossessed page -> 0x0"));
    assert!(hog.contains(&"check touch-after-revoke -> faulted"));
    assert!(hog.contains(&"check stale-key-after-revoke -> bad-key"));
    assert!(outcome.env_lines("claim").any(|l| l.starts_with("claim: got my quota of 16 frames")));
    for name in ["hog", "claim", "rt"] {
        assert_exited(&outcome, name, 0);
    }
    assert!(outcome.env_lines("rt").any(|l| l == "done"));
    assert_eq!(stat(&outcome, "frames_at_end"), stat(&outcome, "frames_at_boot"));
}

/// `pager=NAME faults=N ... page_outs=M` from a paging report line.
fn paging_counts(line: &str) -> (u64, u64) {
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(key)?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {key} in {line}"))
    };
    (field("faults="), field("page_outs="))
}

#[test]
fn each_pager_runs_the_same_workload_and_the_difference_shows() {
    let outcome = boot_deterministic("pagers", 120);
    assert_success(&outcome);
    let mut counts = Vec::new();
    for name in ["fifo", "clock", "lru"] {
        let line = outcome
            .env_lines(name)
            .find(|l| l.starts_with(&format!("paging: pager={name} ")))
            .unwrap_or_else(|| panic!("no report from {name}"));
        assert!(outcome.env_lines(name).any(|l| l == "paging: contents intact"), "{name} lost data");
        assert_exited(&outcome, name, 0);
        counts.push(paging_counts(line));
    }
    let (fifo, clock, lru) = (counts[0], counts[1], counts[2]);
    // A hot set plus a scan: second-chance and aging keep the hot set.
    assert!(clock.0 < fifo.0 && lru.0 < fifo.0, "faults fifo {fifo:?} clock {clock:?} lru {lru:?}");
    assert!(clock.1 < fifo.1 && lru.1 < fifo.1, "page-outs fifo {fifo:?} clock {clock:?} lru {lru:?}");
}

#[test]
fn libos_under_memory_pressure_give_frames_back_and_keep_running() {
    let outcome = boot_deterministic("pressure", 120);
    assert_success(&outcome);
    let unix: Vec<&str> = outcome.env_lines("unix").collect();
    assert!(
        unix.iter().any(|l| l.starts_with("revocation: asked for 8 frame(s), paged out and returned 8;")),
        "unix did not page out on request"
    );
    assert!(unix.contains(&"pressure: contents intact"));
    let gc: Vec<&str> = outcome.env_lines("gc").collect();
    assert!(
        gc.iter().any(|l| l.starts_with("revocation: asked for ")
            && l.contains("collected and returned")
            && !l.contains("returned 0 ")),
        "gc did not collect on request"
    );
    assert!(gc.contains(&"done"));
    assert!(outcome.env_lines("claim").any(|l| l.starts_with("claim: got my quota of 32 frames")));
    assert!(!outcome.lines.iter().any(|l| l.contains("abort protocol")), "a cooperative libOS lost frames by force");
    for name in ["unix", "gc", "claim"] {
        assert_exited(&outcome, name, 0);
    }
    assert_eq!(stat(&outcome, "frames_at_end"), stat(&outcome, "frames_at_boot"));
}
