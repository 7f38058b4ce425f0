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
