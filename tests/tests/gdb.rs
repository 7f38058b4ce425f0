//! `cargo xtask gdb`: the smoke scenario boots paused under QEMU's gdb stub,
//! and gdb, with the kernel's symbols, breaks in the kernel's entry function
//! and prints a backtrace through the bootloader's entry stub.

use std::time::Duration;
use xtask::gdb::{run, GdbOptions};

#[test]
fn gdb_breaks_in_the_kernel_entry_with_symbols() {
    if !std::process::Command::new("gdb").arg("--version").output().is_ok_and(|o| o.status.success()) {
        println!("skipped: gdb is not installed (apt-get install -y gdb)");
        return;
    }
    let batch = ["break exokernel::kernel_main", "continue", "bt", "kill"].map(String::from).to_vec();
    let options = GdbOptions { scenario: "smoke".into(), libos: Vec::new(), batch, timeout: Duration::from_secs(240) };
    let lines = run(&options).expect("gdb session");
    assert!(
        lines.iter().any(|l| l.starts_with("Breakpoint 1, exokernel::kernel_main")),
        "the breakpoint in kernel_main was not hit: {lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("#0") && l.contains("exokernel::kernel_main") && l.contains("main.rs")),
        "no symbolised frame 0: {lines:#?}"
    );
    assert!(lines.iter().any(|l| l.starts_with("#1") && l.contains("_start")), "no caller frame: {lines:#?}");
}
