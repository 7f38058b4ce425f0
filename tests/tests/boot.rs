//! The default boot: unix (its shell running a script, each command a
//! process), gc and rt run side by side in ring 3, the timer interleaves
//! them, and all three finish.

use tests::*;

#[test]
fn three_libos_boot_interleave_and_finish() {
    // Deterministic virtual time: the interleaving does not depend on host load.
    let outcome = boot_deterministic("default", 120);
    assert_success(&outcome);
    for name in ["gc", "rt"] {
        assert_exited(&outcome, name, 0);
        assert!(outcome.env_lines(name).any(|l| l == "done"), "{name} did not print done");
    }
    // The shell's script ran: each line's output, from its own process.
    assert_exited(&outcome, "unix", 0);
    for (process, line) in [
        ("echo", "sh: hello from pid-1's children, on the exokernel"),
        ("wc", "2"),
        ("ls", "list"),
        ("echo", "cleaned up"),
        ("echo", "false failed, as it should"),
    ] {
        assert!(outcome.env_lines(process).any(|l| l == line), "no `[{process}] {line}`");
    }
    assert!(outcome.env_lines("memhog").any(|l| l.ends_with("contents intact")), "memhog lost data");
    // rt's admission test, with the overheads it measured beside the other
    // libOSes, admits its default set, and the set meets every deadline.
    let rt_summary = outcome.env_lines("rt").find(|l| l.starts_with("rt: scheduler=")).expect("rt summary");
    assert!(rt_summary.contains(" admitted=yes ") && rt_summary.contains(" misses=0 "), "{rt_summary}");
    assert!(outcome.env_lines("unix").any(|l| l == "init: reaped pid 2: exited 0"));
    // Preemption: another libOS printed before unix printed its last line.
    let position = |prefix: &str| outcome.lines.iter().position(|l| l.starts_with(prefix)).unwrap();
    let unix_last = outcome.lines.iter().rposition(|l| l.starts_with("[unix] ")).unwrap();
    assert!(position("[gc] ") < unix_last && position("[rt] ") < unix_last, "output did not interleave");
    assert!(stat(&outcome, "timer_ticks") > 0);
    assert!(stat(&outcome, "context_switches") >= 3);
    assert_eq!(stat(&outcome, "frames_at_end"), stat(&outcome, "frames_at_boot"), "memory not reclaimed");
}

#[test]
fn smoke_env_exits_cleanly() {
    let outcome = boot("smoke", 30);
    assert_success(&outcome);
    assert_exited(&outcome, "smoke", 0);
    assert!(outcome.env_lines("smoke").any(|l| l == "smoke: hello from env 1 of 1"));
}

#[test]
fn smoke_boots_through_uefi_too() {
    let image = xtask::make_uefi_image("smoke").expect("UEFI image");
    let options = RunOptions { timeout: std::time::Duration::from_secs(60), uefi: true, ..RunOptions::default() };
    let outcome = xtask::run_qemu(&image, &options).expect("QEMU starts");
    assert_success(&outcome);
    assert_exited(&outcome, "smoke", 0);
}
