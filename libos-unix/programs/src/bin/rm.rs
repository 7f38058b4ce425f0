//! `rm [-r] [-f] paths...`: removes each file. A directory is removed only
//! with `-r` (or `-R`), and then with everything in it, depth first;
//! without it a directory is `EISDIR`. `-f` ignores paths that do not
//! exist. `/`, `.` and `..` are never removed (`EINVAL`). Anything that
//! cannot be removed is reported as `rm: PATH: ERRNO` on standard error
//! and the exit status is 1 (2 on a bad usage).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use ulib::fsproto::KIND_DIR;
use ulib::io::{readdir, rmdir, stat, unlink};
use ulib::Errno;

ulib::program_main!(main);

/// Remove `path` and, if it is a directory, what is in it. Reports its own
/// errors; false if anything stayed.
fn remove(path: &str, recursive: bool, force: bool) -> bool {
    let st = match stat(path) {
        Ok(st) => st,
        Err(Errno::ENOENT) if force => return true,
        Err(error) => {
            ulib::errln!("rm: {}: {}", path, error);
            return false;
        }
    };
    if st.kind != KIND_DIR {
        return match unlink(path) {
            Ok(()) => true,
            Err(Errno::ENOENT) if force => true,
            Err(error) => {
                ulib::errln!("rm: {}: {}", path, error);
                false
            }
        };
    }
    if !recursive {
        ulib::errln!("rm: {}: {}", path, Errno::EISDIR);
        return false;
    }
    let entries = match readdir(path) {
        Ok(entries) => entries,
        Err(error) => {
            ulib::errln!("rm: {}: {}", path, error);
            return false;
        }
    };
    let mut ok = true;
    for (name, _) in entries {
        let child = if path.ends_with('/') { format!("{}{}", path, name) } else { format!("{}/{}", path, name) };
        ok &= remove(&child, true, force);
    }
    if !ok {
        return false;
    }
    match rmdir(path) {
        Ok(()) => true,
        Err(error) => {
            ulib::errln!("rm: {}: {}", path, error);
            false
        }
    }
}

/// Is `path` one rm refuses: the root, or one ending in `.` or `..`?
fn forbidden(path: &str) -> bool {
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    ulib::io::absolute(path) == "/" || last == "." || last == ".."
}

fn usage() -> i32 {
    ulib::errln!("usage: rm [-r] [-f] paths...");
    2
}

fn main(args: &[&str]) -> i32 {
    let Ok((flags, paths)) = ulib::cli::parse(args, "rRf", false) else { return usage() };
    let (recursive, force) = (flags.has('r') || flags.has('R'), flags.has('f'));
    if paths.is_empty() {
        return if force { 0 } else { usage() };
    }
    let mut status = 0;
    for path in paths {
        if forbidden(path) {
            ulib::errln!("rm: {}: {}", path, Errno::EINVAL);
            status = 1;
        } else if !remove(path, recursive, force) {
            status = 1;
        }
    }
    status
}
