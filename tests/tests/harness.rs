//! The harness tells success, failure and "no verdict" apart by the
//! isa-debug-exit code, never by grepping for a panic string alone.

use std::time::Duration;
use tests::*;

#[test]
fn broken_boot_archive_is_a_failure_verdict() {
    // An archive without a manifest: the kernel panics and exits with failure.
    let archive = shared_abi::archive::pack(&[("not-a-manifest", b"x")]).unwrap();
    let image = xtask::make_image_from_archive("harness_broken", &archive).expect("image");
    let outcome =
        xtask::run_qemu(&image, &RunOptions { timeout: Duration::from_secs(30), ..Default::default() }).unwrap();
    assert_eq!(outcome.verdict, Some(Verdict::Failure), "{}", outcome.describe());
    assert!(outcome.lines.iter().any(|l| l.contains("KERNEL PANIC") && l.contains("manifest")));
}

#[test]
fn a_run_that_never_ends_is_no_verdict() {
    let text = "keep_running = true\n[env]\nname = smoke\nprogram = smoke\n";
    let image = xtask::make_image("harness_idle", text).expect("image");
    let outcome =
        xtask::run_qemu(&image, &RunOptions { timeout: Duration::from_secs(12), ..Default::default() }).unwrap();
    assert!(outcome.timed_out);
    assert_eq!(outcome.verdict, None);
    assert!(outcome.lines.iter().any(|l| l.contains("idling (keep_running)")));
}
