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
    for check in [
        "errors",
        "pipe-eof-and-epipe",
        "fork-shares-descriptors",
        "files-persist-across-processes",
        "blocked-reader-uses-no-cpu",
    ] {
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
    assert!(lines.contains(&"check read-a-scribbled-pipe -> EIO"), "{lines:#?}");
    assert!(lines.contains(&"iotest: 6 checks, 0 failed"), "{lines:#?}");
    assert_exited(&outcome, "unix", 0);
    assert_exited(&outcome, "rt", 0);
}

/// What the scripted session types into the console, line by line.
const SESSION: &str = "echo hello world
echo one > /tmp/f; echo two >> /tmp/f; cat /tmp/f
cat /tmp/f | grep o | wc -l
wc -l < /tmp/f
false && echo not-printed || echo or-branch
true && echo and-branch; echo after-semicolon
X=value; echo \"x is $X\" '$X'
cd /tmp; pwd
mkdir d; mv f d/g; ls d
cat d/g | head -n 1
rm -r d; ls
cat /nonexistent
echo status $?
nosuchcommand
echo status $?
echo 'echo from a script; echo $1' > /tmp/s.sh
sh /tmp/s.sh
echo abc > /tmp/z; ls -l /tmp
exit 3
";

#[test]
fn the_shell_runs_pipelines_redirections_and_files_typed_at_the_console() {
    let options = RunOptions {
        timeout: Duration::from_secs(120),
        input: xtask::Input::Bytes(SESSION.as_bytes().to_vec()),
        ..RunOptions::default()
    };
    let outcome = boot_with("shell", options);
    assert_no_panic(&outcome);
    assert_success(&outcome);
    // The console, byte for byte from the first prompt to the exit.
    let start = outcome.lines.iter().position(|l| l.starts_with("/$ ")).expect("a prompt");
    let end = outcome.lines.iter().position(|l| l == "/tmp$ exit 3").expect("the exit");
    let got: Vec<&str> = outcome.lines[start..=end].iter().map(String::as_str).collect();
    let want = [
        "/$ echo hello world",
        "hello world",
        "/$ echo one > /tmp/f; echo two >> /tmp/f; cat /tmp/f",
        "one",
        "two",
        "/$ cat /tmp/f | grep o | wc -l",
        "2",
        "/$ wc -l < /tmp/f",
        "2",
        "/$ false && echo not-printed || echo or-branch",
        "or-branch",
        "/$ true && echo and-branch; echo after-semicolon",
        "and-branch",
        "after-semicolon",
        "/$ X=value; echo \"x is $X\" '$X'",
        "x is value $X",
        "/$ cd /tmp; pwd",
        "/tmp",
        "/tmp$ mkdir d; mv f d/g; ls d",
        "g",
        "/tmp$ cat d/g | head -n 1",
        "one",
        "/tmp$ rm -r d; ls",
        "/tmp$ cat /nonexistent",
        "cat: /nonexistent: ENOENT",
        "/tmp$ echo status $?",
        "status 1",
        "/tmp$ nosuchcommand",
        "sh: nosuchcommand: command not found",
        "/tmp$ echo status $?",
        "status 127",
        "/tmp$ echo 'echo from a script; echo $1' > /tmp/s.sh",
        "/tmp$ sh /tmp/s.sh",
        "from a script",
        "",
        "/tmp$ echo abc > /tmp/z; ls -l /tmp",
        "- 28 1 s.sh",
        "- 4 1 z",
        "/tmp$ exit 3",
    ];
    assert_eq!(got, want, "the session differs");
    // The shell's status reached init: pid 2 exited 3, so init exits 1.
    assert_exited(&outcome, "unix", 1);
}
