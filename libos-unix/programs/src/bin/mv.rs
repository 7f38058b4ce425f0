//! `mv from to` or `mv from... dir`: renames `from` to `to`; when `to` is
//! an existing directory (and always for more than one source), each
//! source moves inside it under its own last name. Renaming follows the
//! file server's rules: a file replaces a file, a directory may replace an
//! empty directory, a directory cannot move into itself. A failure is
//! reported as `mv: FROM: ERRNO` on standard error and the exit status is
//! 1 (2 on a bad usage).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use ulib::fsproto::KIND_DIR;
use ulib::io::{rename, stat};
use ulib::Errno;

ulib::program_main!(main);

/// The last part of `path`; None for the root or `.`/`..`.
fn base_name(path: &str) -> Option<&str> {
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    (!last.is_empty() && last != "." && last != "..").then_some(last)
}

fn inside(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{}{}", dir, name)
    } else {
        format!("{}/{}", dir, name)
    }
}

fn main(args: &[&str]) -> i32 {
    let mut operands = args.get(1..).unwrap_or(&[]);
    if operands.first() == Some(&"--") {
        operands = &operands[1..];
    }
    let Some((&to, sources)) = operands.split_last() else {
        ulib::errln!("usage: mv from to | mv from... dir");
        return 2;
    };
    if sources.is_empty() {
        ulib::errln!("usage: mv from to | mv from... dir");
        return 2;
    }
    let to_is_dir = stat(to).is_ok_and(|st| st.kind == KIND_DIR);
    if sources.len() > 1 && !to_is_dir {
        ulib::errln!("mv: {}: {}", to, Errno::ENOTDIR);
        return 1;
    }
    let mut status = 0;
    for &from in sources {
        let target = if to_is_dir {
            match base_name(from) {
                Some(name) => inside(to, name),
                None => {
                    ulib::errln!("mv: {}: {}", from, Errno::EINVAL);
                    status = 1;
                    continue;
                }
            }
        } else {
            String::from(to)
        };
        if let Err(error) = rename(from, &target) {
            ulib::errln!("mv: {}: {}", from, error);
            status = 1;
        }
    }
    status
}
