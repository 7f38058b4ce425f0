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
    assert_exited(&outcome, "gc", 0);
    assert_eq!(stat(&outcome, "frames_at_end"), stat(&outcome, "frames_at_boot"));
}

#[test]
fn evicted_slots_refill_from_the_software_tlb_without_upcalls() {
    let outcome = boot("memstlb", 60);
    assert_success(&outcome);
    let line = outcome.env_lines("stlb").find(|l| l.starts_with("stlb: ")).expect("stlb line");
    assert!(line.starts_with("stlb: 32 pages over 8 slots: 32 stlb hits, 0 upcalls, 0 faults seen by the libOS, 8 pages in slots"), "{line}");
    assert_exited(&outcome, "stlb", 0);
    assert_eq!(stat(&outcome, "upcalls"), 0);
}

#[test]
fn guaranteed_mappings_survive_every_switch_under_the_stlb_policy() {
    let outcome = boot("guaranteed", 60);
    assert_success(&outcome);
    assert!(outcome.lines.iter().any(|l| l == "[kernel] memory: pool 8192 KiB, tlb policy stlb, revocation deadline 20000 us"));
    let line = outcome.env_lines("pinned").find(|l| l.starts_with("guaranteed: ")).expect("result line");
    let (present, total) = {
        let words: Vec<&str> = line.split_whitespace().collect();
        (words[3].parse::<u32>().unwrap(), words[5].parse::<u32>().unwrap())
    };
    assert!(present > 0 && present == total, "{line}");
    assert!(line.ends_with(&format!("dropped after {total}")), "ordinary mappings should not survive: {line}");
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
    assert!(outcome.env_lines("claim").any(|l| l.starts_with("claim: got my quota of 16 frames")));
    for name in ["hog", "claim", "rt"] {
        assert_exited(&outcome, name, 0);
    }
    assert!(outcome.env_lines("rt").any(|l| l == "done"));
    assert_eq!(stat(&outcome, "frames_at_end"), stat(&outcome, "frames_at_boot"));
}
