//! The process calls, checked one by one in QEMU: fork isolation (stack,
//! heap and static data, each side sees only its own writes), wait
//! statuses, exec of a program, of a missing file and of a file that is no
//! ELF program, SIGKILL of a running child (its quota comes back), SIGTERM
//! to a handler, getppid, and an orphan passing to init. Prints one
//! `forktest: <check> ok|FAILED` line each; exits with the failures.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::boxed::Box;
use core::sync::atomic::{AtomicU64, Ordering};
use ulib::fork::fork;
use ulib::process::{self, exit, getpid, getppid, kill, waitpid, SIGKILL, SIGTERM};
use ulib::spawn::exec;
use ulib::{println, Errno, WaitStatus};

ulib::program_main!(main);

static GLOBAL: AtomicU64 = AtomicU64::new(3);

/// One check: Ok, or why it failed.
type Check = fn() -> Result<(), &'static str>;

fn main(_args: &[&str]) -> i32 {
    let checks: [(&str, Check); 9] = [
        ("fork-isolation", fork_isolation),
        ("wait-status", wait_status),
        ("exec-hello", exec_hello),
        ("exec-missing", exec_missing),
        ("exec-malformed", exec_malformed),
        ("kill-running-child", kill_running_child),
        ("sigterm-handler", sigterm_handler),
        ("getppid", parent_ids),
        ("orphan-to-init", orphan),
    ];
    let mut failed = 0;
    for (name, check) in checks {
        match check() {
            Ok(()) => println!("forktest: {} ok", name),
            Err(why) => {
                println!("forktest: {} FAILED: {}", name, why);
                failed += 1;
            }
        }
    }
    println!("forktest: {} checks, {} failed", checks.len(), failed);
    failed
}

fn wait_for(pid: u64) -> Result<WaitStatus, &'static str> {
    match waitpid(Some(pid), false) {
        Ok(Some((got, status))) if got == pid => Ok(status),
        Ok(_) => Err("waitpid returned another child"),
        Err(_) => Err("waitpid failed"),
    }
}

fn quota() -> u64 {
    ulib::runtime::syscall::env_info().map(|i| i.quota_frames).unwrap_or(0)
}

fn fork_isolation() -> Result<(), &'static str> {
    let mut on_stack = [1u64; 512];
    let mut on_heap = Box::new([2u64; 1024]);
    GLOBAL.store(3, Ordering::SeqCst);
    let before = quota();
    let pid = fork().map_err(|_| "fork failed")?;
    if pid == 0 {
        let saw_fork_time = on_stack[0] == 1 && on_heap[1023] == 2 && GLOBAL.load(Ordering::SeqCst) == 3;
        on_stack[0] = 10;
        on_heap[1023] = 20;
        GLOBAL.store(30, Ordering::SeqCst);
        // Let the parent write its own values meanwhile.
        for _ in 0..3 {
            ulib::runtime::syscall::yield_now();
        }
        let own =
            core::hint::black_box(on_stack[0]) == 10 && on_heap[1023] == 20 && GLOBAL.load(Ordering::SeqCst) == 30;
        exit(if saw_fork_time && own { 0 } else { 1 });
    }
    on_stack[0] = 100;
    on_heap[1023] = 200;
    GLOBAL.store(300, Ordering::SeqCst);
    let status = wait_for(pid)?;
    let own = core::hint::black_box(on_stack[0]) == 100 && on_heap[1023] == 200 && GLOBAL.load(Ordering::SeqCst) == 300;
    if status != WaitStatus::Exited(0) {
        return Err("the child saw the parent's writes (or lost its own)");
    }
    if !own {
        return Err("the parent saw the child's writes");
    }
    if quota() != before {
        return Err("the child's quota did not come back");
    }
    Ok(())
}

fn wait_status() -> Result<(), &'static str> {
    let pid = fork().map_err(|_| "fork failed")?;
    if pid == 0 {
        exit(42);
    }
    match wait_for(pid)? {
        WaitStatus::Exited(42) => {}
        _ => return Err("wrong status"),
    }
    match waitpid(Some(pid), false) {
        Err(Errno::ECHILD) => Ok(()),
        _ => Err("a collected child was reported twice"),
    }
}

fn exec_hello() -> Result<(), &'static str> {
    let pid = fork().map_err(|_| "fork failed")?;
    if pid == 0 {
        let error = exec("/bin/hello", &["hello", "from-exec", "exit=7"]);
        println!("exec failed: {}", error);
        exit(100);
    }
    match wait_for(pid)? {
        WaitStatus::Exited(7) => Ok(()),
        _ => Err("wrong status from the exec'd program"),
    }
}

/// A child that execs `path` and exits 3 on ENOENT, 4 on ENOEXEC.
fn exec_fails(path: &str, want: Errno) -> Result<(), &'static str> {
    let pid = fork().map_err(|_| "fork failed")?;
    if pid == 0 {
        let code = match exec(path, &[path]) {
            Errno::ENOENT => 3,
            Errno::ENOEXEC => 4,
            _ => 5,
        };
        exit(code);
    }
    let want = if want == Errno::ENOENT { 3 } else { 4 };
    match wait_for(pid)? {
        WaitStatus::Exited(code) if code == want => Ok(()),
        _ => Err("exec did not return the right error"),
    }
}

fn exec_missing() -> Result<(), &'static str> {
    exec_fails("/bin/no-such-program", Errno::ENOENT)
}

fn exec_malformed() -> Result<(), &'static str> {
    exec_fails("/etc/not-a-program", Errno::ENOEXEC)
}

fn kill_running_child() -> Result<(), &'static str> {
    let before = quota();
    let pid = fork().map_err(|_| "fork failed")?;
    if pid == 0 {
        // Run and grow until killed.
        let mut pages = alloc::vec::Vec::new();
        loop {
            if pages.len() < 32 {
                pages.push(Box::new([7u8; 4096]));
            }
            ulib::runtime::syscall::yield_now();
        }
    }
    for _ in 0..10 {
        ulib::runtime::syscall::yield_now();
    }
    kill(pid, SIGKILL).map_err(|_| "kill failed")?;
    match wait_for(pid)? {
        WaitStatus::Signaled(9) => {}
        _ => return Err("wrong status for a killed child"),
    }
    if quota() != before {
        return Err("the killed child's quota did not come back");
    }
    Ok(())
}

fn sigterm_handler() -> Result<(), &'static str> {
    let pid = fork().map_err(|_| "fork failed")?;
    if pid == 0 {
        process::on_sigterm(|| exit(43)).expect("handler");
        loop {
            ulib::runtime::syscall::yield_now();
        }
    }
    // Until the child has its handler in.
    let catches =
        || ulib::table::with(|t| t.get(pid).is_some_and(|p| p.flags & ulib::proctab::flags::CATCHES_SIGTERM != 0));
    for _ in 0..1000 {
        if catches() {
            break;
        }
        ulib::runtime::syscall::yield_now();
    }
    kill(pid, SIGTERM).map_err(|_| "kill failed")?;
    match wait_for(pid)? {
        WaitStatus::Exited(43) => Ok(()),
        _ => Err("the SIGTERM handler did not run"),
    }
}

fn parent_ids() -> Result<(), &'static str> {
    let me = getpid();
    let pid = fork().map_err(|_| "fork failed")?;
    if pid == 0 {
        exit(if getppid() == me && getpid() != me { 0 } else { 1 });
    }
    match wait_for(pid)? {
        WaitStatus::Exited(0) => Ok(()),
        _ => Err("the child's getppid/getpid were wrong"),
    }
}

fn orphan() -> Result<(), &'static str> {
    let pid = fork().map_err(|_| "fork failed")?;
    if pid == 0 {
        match fork() {
            Ok(0) => {
                // The grandchild outlives its parent: init adopts it.
                for _ in 0..50 {
                    if getppid() == ulib::proctab::INIT_PID {
                        break;
                    }
                    ulib::runtime::syscall::yield_now();
                }
                println!("orphan pid {}: parent is now {}", getpid(), getppid());
                exit(if getppid() == ulib::proctab::INIT_PID { 5 } else { 6 });
            }
            Ok(_) => exit(0),
            Err(_) => exit(1),
        }
    }
    match wait_for(pid)? {
        WaitStatus::Exited(0) => Ok(()),
        _ => Err("the middle process failed"),
    }
}
