//! Hostile libOSes: touching kernel memory ends only the offender; garbage
//! passed to every system call gets error codes and the kernel stays up.

use tests::*;

#[test]
fn touching_kernel_memory_ends_only_the_offender() {
    let outcome = boot("kernel_memory", 60);
    assert_success(&outcome);
    assert_killed(&outcome, "reader", "page fault at 0xffff800000000000");
    assert_killed(&outcome, "writer", "page fault at 0xffff800000000000");
    assert_killed(&outcome, "jumper", "rip 0xffff800000000000");
    assert_killed(&outcome, "badstack", "upcall stack not writable");
    for name in ["reader", "writer", "jumper", "badstack"] {
        assert!(!outcome.env_lines(name).any(|l| l.contains("UNEXPECTED")), "{name} got further than it should");
    }
    assert_exited(&outcome, "unix", 0);
    assert_exited(&outcome, "rt", 0);
    assert!(outcome.env_lines("unix").any(|l| l == "done"));
    assert!(outcome.env_lines("rt").any(|l| l == "done"));
    // Every frame of every ended environment went back to the allocator.
    assert_eq!(stat(&outcome, "frames_at_end"), stat(&outcome, "frames_at_boot"));
}

#[test]
fn garbage_to_every_syscall_gets_error_codes() {
    // With a NIC, so the network calls reach their argument checks.
    let ports = xtask::free_net_ports(0, 0);
    let options = RunOptions { timeout: std::time::Duration::from_secs(60), net: Some(ports), ..RunOptions::default() };
    let outcome = boot_with("garbage", options);
    assert_success(&outcome);
    let lines: Vec<&str> = outcome.env_lines("hostile").collect();
    assert!(!lines.iter().any(|l| l.contains("UNEXPECTED")), "an attack succeeded");
    for (attack, error) in [
        ("unknown-number", "unknown-syscall"),
        ("unknown-huge-number", "unknown-syscall"),
        ("console-null", "bad-address"),
        ("console-kernel-ptr", "bad-address"),
        ("console-huge-len", "bad-length"),
        ("console-negative-len", "bad-length"),
        ("console-wrapping", "bad-address"),
        ("console-unmapped", "bad-address"),
        ("set-upcalls-misaligned", "misaligned"),
        ("set-upcalls-kernel-entry", "bad-address"),
        ("stats-readonly-page", "bad-address"),
        ("stats-code-page", "bad-address"),
        ("frame-alloc-bad-rights", "invalid-argument"),
        ("frame-alloc-misaligned-frame", "misaligned"),
        ("frame-alloc-null-out", "bad-address"),
        ("frame-free-garbage-key", "bad-key"),
        ("frame-share-to-missing-env", "no-such-env"),
        ("frame-query-garbage-key", "bad-key"),
        ("map-garbage-key", "bad-key"),
        ("map-kernel-va", "bad-address"),
        ("unmap-unmapped", "invalid-argument"),
        ("map-query-kernel-va", "bad-address"),
        ("guarantee-unmapped", "invalid-argument"),
        ("key-bench-garbage-key", "permission-denied"),
        ("key-bench-huge-count", "permission-denied"),
        ("slot-alloc-out-of-range", "invalid-argument"),
        ("slot-free-garbage-key", "bad-key"),
        ("pct-call-missing-env", "no-such-env"),
        ("pct-send-missing-env", "no-such-env"),
        ("pct-reply-without-call", "invalid-argument"),
        ("env-info-kernel-ptr", "bad-address"),
        ("env-info-null", "bad-address"),
        ("net-info-kernel-ptr", "bad-address"),
        ("demux-bench-no-filters", "permission-denied"),
        ("demux-bench-huge", "permission-denied"),
        ("net-rx-ring-kernel", "bad-address"),
        ("net-filter-garbage", "invalid-argument"),
        ("net-filter-remove-garbage", "invalid-argument"),
        ("net-tx-forged-key", "bad-key"),
    ] {
        let expected = format!("attack {attack} -> {error}");
        assert!(lines.contains(&expected.as_str()), "missing: {expected}");
    }
    assert!(lines.iter().any(|l| l.starts_with("garbage: 47 of 47 attacks refused, kernel still answers: true")));
    assert_exited(&outcome, "hostile", 0);
    assert_exited(&outcome, "gc", 0);
    // The runtime's panic handler reports and ends the env with code 101.
    assert!(outcome
        .env_lines("panicker")
        .any(|l| l.starts_with("panic: ") && l.contains("deliberate panic at depth 5")));
    assert_exited(&outcome, "panicker", 101);
}
