//! `mkdir [-p] dirs...`: makes each directory. Without `-p` the parent
//! must exist and the directory must not; with `-p` every missing
//! directory along the path is made and one that exists already is fine
//! (a file in the way is `ENOTDIR`, or `EEXIST` for the last part). A
//! directory that cannot be made is reported as `mkdir: PATH: ERRNO` on
//! standard error and the exit status is 1 (2 on a bad usage).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use ulib::fsproto::KIND_DIR;
use ulib::io::{mkdir, stat};
use ulib::Errno;

ulib::program_main!(main);

/// `mkdir -p`: each prefix of `path` in turn.
fn make_parents(path: &str) -> Result<(), Errno> {
    let mut prefix = String::new();
    if path.starts_with('/') {
        prefix.push('/');
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        prefix.push_str(part);
        match stat(&prefix) {
            Ok(st) if st.kind == KIND_DIR => continue,
            Ok(_) if i + 1 == parts.len() => return Err(Errno::EEXIST),
            Ok(_) => return Err(Errno::ENOTDIR),
            Err(_) => match mkdir(&prefix) {
                // Someone else made it meanwhile.
                Err(Errno::EEXIST) if stat(&prefix).is_ok_and(|st| st.kind == KIND_DIR) => {}
                other => other?,
            },
        }
    }
    Ok(())
}

fn main(args: &[&str]) -> i32 {
    let (parents, dirs) = match ulib::cli::parse(args, "p", false) {
        Ok((flags, dirs)) => (flags.has('p'), dirs),
        Err(_) => (false, Vec::new()),
    };
    if dirs.is_empty() {
        ulib::errln!("usage: mkdir [-p] dirs...");
        return 2;
    }
    let mut status = 0;
    for dir in dirs {
        let result = if parents { make_parents(dir) } else { mkdir(dir) };
        if let Err(error) = result {
            ulib::errln!("mkdir: {}: {}", dir, error);
            status = 1;
        }
    }
    status
}
