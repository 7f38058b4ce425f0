//! The descriptor calls, checked one by one in QEMU: the errors bad
//! paths and bad descriptors get; pipes (end of file when the last writer
//! closes, EPIPE when no reader is left, data across fork); descriptors
//! and offsets shared by fork; and a reader asleep on an empty pipe using
//! no CPU while another process computes. Prints `iotest: <check> ok` or
//! `FAILED`; exits with the number of failures.
#![no_std]
#![no_main]

extern crate alloc;

use ulib::fork::fork;
use ulib::io::{self, O_APPEND, O_CREAT, O_RDONLY, O_RDWR, O_TRUNC, O_WRONLY};
use ulib::process::{exit, waitpid};
use ulib::runtime::rt::rdtsc;
use ulib::runtime::syscall;
use ulib::{outln, Errno, WaitStatus};

ulib::program_main!(main);

type Check = fn() -> Result<(), &'static str>;

fn main(_args: &[&str]) -> i32 {
    let checks: [(&str, Check); 6] = [
        ("errors", errors),
        ("scribbled-pipe-refused", scribbled_pipe),
        ("pipe-eof-and-epipe", pipe_ends),
        ("fork-shares-descriptors", fork_shares),
        ("files-persist-across-processes", files_persist),
        ("blocked-reader-uses-no-cpu", blocked_reader),
    ];
    let mut failed = 0;
    for (name, check) in checks {
        match check() {
            Ok(()) => outln!("iotest: {} ok", name),
            Err(why) => {
                outln!("iotest: {} FAILED: {}", name, why);
                failed += 1;
            }
        }
    }
    outln!("iotest: {} checks, {} failed", checks.len(), failed);
    failed
}

fn want<T>(what: &str, result: Result<T, Errno>, error: Errno) -> Result<(), &'static str> {
    match result {
        Err(got) if got == error => {
            outln!("check {} -> {}", what, got);
            Ok(())
        }
        Err(got) => {
            outln!("check {} -> {} (wanted {})", what, got, error);
            Err("wrong error")
        }
        Ok(_) => {
            outln!("check {} -> success (wanted {})", what, error);
            Err("unexpected success")
        }
    }
}

fn errors() -> Result<(), &'static str> {
    want("open-missing", io::open("/no/such/file", O_RDONLY), Errno::ENOENT)?;
    want("open-through-a-file", io::open("/etc/motd/x", O_RDONLY), Errno::ENOTDIR)?;
    want("open-dir-for-writing", io::open("/etc", O_WRONLY), Errno::EISDIR)?;
    want("create-in-missing-dir", io::open("/nowhere/new", O_CREAT | O_WRONLY), Errno::ENOENT)?;
    want("read-bad-fd", io::read(17, &mut [0u8; 4]), Errno::EBADF)?;
    want("write-bad-fd", io::write(-1, b"x"), Errno::EBADF)?;
    want("close-bad-fd", io::close(31), Errno::EBADF)?;
    want("dup2-out-of-range", io::dup2(1, 999), Errno::EBADF)?;
    want("mkdir-existing", io::mkdir("/etc"), Errno::EEXIST)?;
    want("rmdir-non-empty", io::rmdir("/etc"), Errno::ENOTEMPTY)?;
    want("unlink-a-directory", io::unlink("/etc"), Errno::EISDIR)?;
    want("chdir-to-a-file", io::chdir("/etc/motd"), Errno::ENOTDIR)?;
    want("rename-missing", io::rename("/no/such", "/tmp/x"), Errno::ENOENT)?;
    let fd = io::open("/etc/motd", O_RDONLY).map_err(|_| "open motd")?;
    want("write-to-a-read-only-descriptor", io::write(fd, b"x"), Errno::EBADF)?;
    io::close(fd).map_err(|_| "close")?;
    want("read-a-closed-descriptor", io::read(fd, &mut [0u8; 4]), Errno::EBADF)?;
    let (r, w) = io::pipe().map_err(|_| "pipe")?;
    want("write-to-a-read-end", io::write(r, b"x"), Errno::EBADF)?;
    want("read-from-a-write-end", io::read(w, &mut [0u8; 4]), Errno::EBADF)?;
    io::close(r).map_err(|_| "close")?;
    io::close(w).map_err(|_| "close")?;
    Ok(())
}

/// Every process of the libOS can write a pipe's page: one that wrote
/// nonsense into the positions gets EIO on both ends, never a read or
/// write outside the ring.
fn scribbled_pipe() -> Result<(), &'static str> {
    let (r, w) = io::pipe().map_err(|_| "pipe")?;
    let Some(io::Fd::PipeRead(slot)) = io::fds().get(r as usize).copied() else { return Err("not a pipe") };
    let page = ulib::layout::PIPE_VA + slot as u64 * 4096;
    // SAFETY: the pipe's page is mapped writable in this process; words 1
    // and 2 are its read and write positions (`io::PipePage`).
    unsafe { core::ptr::write_volatile((page + 16) as *mut u64, 1 << 40) };
    want("read-a-scribbled-pipe", io::read(r, &mut [0u8; 8]), Errno::EIO)?;
    want("write-a-scribbled-pipe", io::write(w, b"data"), Errno::EIO)?;
    io::close(r).map_err(|_| "close")?;
    io::close(w).map_err(|_| "close")?;
    Ok(())
}

fn pipe_ends() -> Result<(), &'static str> {
    let (r, w) = io::pipe().map_err(|_| "pipe")?;
    let pid = fork().map_err(|_| "fork")?;
    if pid == 0 {
        let _ = io::close(r);
        let big = [b'x'; 10_000];
        let ok = io::write_all(w, b"through the pipe\n").is_ok() && io::write_all(w, &big).is_ok();
        exit(if ok { 0 } else { 1 });
    }
    io::close(w).map_err(|_| "close w")?;
    let data = io::read_to_end(r).map_err(|_| "read")?;
    io::close(r).map_err(|_| "close r")?;
    if !data.starts_with(b"through the pipe\n") || data.len() != 17 + 10_000 {
        return Err("the data did not come through whole");
    }
    if waitpid(Some(pid), false) != Ok(Some((pid, WaitStatus::Exited(0)))) {
        return Err("the writer failed");
    }
    // No reader left: EPIPE.
    let (r, w) = io::pipe().map_err(|_| "pipe")?;
    io::close(r).map_err(|_| "close")?;
    want("write-with-no-reader", io::write(w, b"lost"), Errno::EPIPE)?;
    io::close(w).map_err(|_| "close")?;
    Ok(())
}

fn fork_shares() -> Result<(), &'static str> {
    let fd = io::open("/tmp/shared", O_CREAT | O_TRUNC | O_RDWR).map_err(|_| "create")?;
    io::write_all(fd, b"parent ").map_err(|_| "write")?;
    let pid = fork().map_err(|_| "fork")?;
    if pid == 0 {
        // The same description: this lands after the parent's bytes.
        let ok = io::write_all(fd, b"child ").is_ok();
        exit(if ok { 0 } else { 1 });
    }
    waitpid(Some(pid), false).map_err(|_| "wait")?;
    io::write_all(fd, b"parent-again").map_err(|_| "write")?;
    io::lseek(fd, 0, 0).map_err(|_| "seek")?;
    let text = io::read_to_end(fd).map_err(|_| "read")?;
    io::close(fd).map_err(|_| "close")?;
    io::unlink("/tmp/shared").map_err(|_| "unlink")?;
    if text != b"parent child parent-again" {
        return Err("the offset was not shared across fork");
    }
    Ok(())
}

fn files_persist() -> Result<(), &'static str> {
    let pid = fork().map_err(|_| "fork")?;
    if pid == 0 {
        let ok = io::mkdir("/tmp/d").is_ok()
            && io::open("/tmp/d/f", O_CREAT | O_WRONLY)
                .and_then(|fd| io::write_all(fd, b"kept").and(io::close(fd)))
                .is_ok();
        exit(if ok { 0 } else { 1 });
    }
    waitpid(Some(pid), false).map_err(|_| "wait")?;
    let fd = io::open("/tmp/d/f", O_RDONLY | O_APPEND).map_err(|_| "the child's file is not there")?;
    let text = io::read_to_end(fd).map_err(|_| "read")?;
    io::close(fd).map_err(|_| "close")?;
    io::rename("/tmp/d/f", "/tmp/g").map_err(|_| "rename")?;
    io::rmdir("/tmp/d").map_err(|_| "rmdir")?;
    io::unlink("/tmp/g").map_err(|_| "unlink")?;
    if text != b"kept" {
        return Err("wrong contents");
    }
    Ok(())
}

/// A reader waits on an empty pipe while a sibling computes for a while
/// before it writes: the reader's CPU time must stay near nothing.
fn blocked_reader() -> Result<(), &'static str> {
    let (r, w) = io::pipe().map_err(|_| "pipe")?;
    let pid = fork().map_err(|_| "fork")?;
    if pid == 0 {
        let _ = io::close(r);
        // Compute (others run meanwhile), then write.
        let mut x = 1u64;
        let until = rdtsc() + ulib::process::tsc_hz() / 5;
        while rdtsc() < until {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        let _ = io::write_all(w, &x.to_le_bytes());
        exit(0);
    }
    io::close(w).map_err(|_| "close")?;
    let cpu_before = syscall::env_info().map_err(|_| "info")?.cpu_ticks;
    let start = rdtsc();
    let mut buf = [0u8; 8];
    let n = io::read(r, &mut buf).map_err(|_| "read")?;
    let waited = rdtsc() - start;
    let used = syscall::env_info().map_err(|_| "info")?.cpu_ticks - cpu_before;
    io::close(r).map_err(|_| "close")?;
    waitpid(Some(pid), false).map_err(|_| "wait")?;
    outln!("iotest: the reader waited {} ticks and used {} of them ({} bytes)", waited, used, n);
    if n != 8 || used * 50 > waited {
        return Err("the blocked reader used CPU");
    }
    Ok(())
}
