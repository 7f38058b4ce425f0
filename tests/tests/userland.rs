//! The Unix userland on libos-unix: files served by init, descriptors and
//! pipes between processes, console input, and the shell with its
//! utilities, typed into the serial console from the host.

use std::time::Duration;
use tests::*;

#[test]
fn descriptors_pipes_and_files_behave_and_refuse_bad_input() {
    let outcome = boot("unix_io", 120);
    assert_no_panic(&outcome);
    assert_success(&outcome);
    let lines: Vec<&str> = outcome.env_lines("iotest").collect();
    for check in
        ["errors", "pipe-eof-and-epipe", "fork-shares-descriptors", "files-persist-across-processes", "blocked-reader-uses-no-cpu"]
    {
        let line = format!("iotest: {check} ok");
        assert!(lines.contains(&line.as_str()), "missing `{line}` in {lines:#?}");
    }
    for expected in [
        "check open-missing -> ENOENT",
        "check open-through-a-file -> ENOTDIR",
        "check open-dir-for-writing -> EISDIR",
        "check read-bad-fd -> EBADF",
        "check close-bad-fd -> EBADF",
        "check rmdir-non-empty -> ENOTEMPTY",
        "check write-to-a-read-end -> EBADF",
        "check write-with-no-reader -> EPIPE",
    ] {
        assert!(lines.contains(&expected), "missing `{expected}`");
    }
    assert!(lines.contains(&"iotest: 5 checks, 0 failed"), "{lines:#?}");
    assert_exited(&outcome, "unix", 0);
    assert_exited(&outcome, "rt", 0);
}
