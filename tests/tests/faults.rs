//! A libOS handles its own divide-by-zero and page fault in ring 3 and
//! resumes the faulting code with the state its handler chose.

use tests::*;

#[test]
fn libos_handles_divide_error_and_page_fault() {
    let outcome = boot("faults", 30);
    assert_success(&outcome);
    let lines: Vec<&str> = outcome.env_lines("unix").collect();
    assert!(lines.iter().any(|l| l.starts_with("exception 0 at ")), "no divide-error upcall");
    assert!(lines.contains(&"divide by zero handled: resumed with rax = 0xd1d0"));
    assert!(lines.iter().any(|l| l.starts_with("page fault at 0x500000000000 (error 0x4)")), "no page-fault upcall");
    assert!(lines.contains(&"page fault handled: resumed and loaded 0x600df00d"));
    assert!(lines.contains(&"faults: ok"));
    assert_exited(&outcome, "unix", 0);
    assert_eq!(stat(&outcome, "upcalls"), 2);
    assert_eq!(stat(&outcome, "page_faults"), 1);
}

/// The checks of the `fastpath` program, which exits 1 on any failure.
fn fast_paths_hold(scenario: &str) {
    let outcome = boot(scenario, 60);
    assert_success(&outcome);
    let lines: Vec<&str> = outcome.env_lines("fastpath").collect();
    for check in [
        "int3",
        "ud2",
        "read_fault_in_window",
        "write_fault_in_window",
        "write_reached_the_frame",
        "read_fault_outside_window",
        "stlb_refills_bring_back_the_right_frames",
        "freed_key_refused",
        "reallocated_frame_new_key_only_and_zeroed",
        "frames_arrive_zeroed",
    ] {
        assert!(lines.contains(&format!("fastpath: {check} ok").as_str()), "{check} failed: {lines:#?}");
    }
    assert!(lines.contains(&"fastpath: done failures=0"), "{lines:#?}");
    assert_exited(&outcome, "fastpath", 0);
}

#[test]
fn fast_paths_deliver_the_right_registers_and_frames_under_flush() {
    fast_paths_hold("fastpath");
}

#[test]
fn fast_paths_deliver_the_right_registers_and_frames_under_stlb() {
    fast_paths_hold("fastpath_stlb");
}
