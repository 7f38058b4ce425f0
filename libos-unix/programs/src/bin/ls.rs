//! `ls [-l] [paths...]`: lists each path (the working directory when none
//! is given). A directory lists its entries, one name per line, sorted by
//! name; a file prints the path itself. With more than one path, each
//! directory's listing is headed `PATH:` and separated from the previous
//! one by a blank line. `-l` prints one `TYPE SIZE LINKS NAME` line per
//! entry, space separated, where TYPE is `d` for a directory and `-` for a
//! file, SIZE is in bytes and LINKS is the link count (e.g. `- 12 1 motd`).
//! A path that cannot be listed is reported as `ls: PATH: ERRNO` on
//! standard error; the exit status is then 1 (else 0), 2 on a bad option.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use ulib::fsproto::{Stat, KIND_DIR};
use ulib::io::{readdir, stat};

ulib::program_main!(main);

fn usage() -> i32 {
    ulib::errln!("usage: ls [-l] [paths...]");
    2
}

fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{}{}", dir, name)
    } else {
        format!("{}/{}", dir, name)
    }
}

fn line(long: bool, st: &Stat, name: &str) -> String {
    if long {
        let kind = if st.kind == KIND_DIR { 'd' } else { '-' };
        format!("{} {} {} {}\n", kind, st.size, st.links, name)
    } else {
        format!("{}\n", name)
    }
}

/// List one path; false if something in it could not be listed.
fn list(path: &str, long: bool, header: bool, first: bool) -> bool {
    let st = match stat(path) {
        Ok(st) => st,
        Err(error) => {
            ulib::errln!("ls: {}: {}", path, error);
            return false;
        }
    };
    if st.kind != KIND_DIR {
        ulib::out!("{}", line(long, &st, path));
        return true;
    }
    let mut entries = match readdir(path) {
        Ok(entries) => entries,
        Err(error) => {
            ulib::errln!("ls: {}: {}", path, error);
            return false;
        }
    };
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut text = String::new();
    if header {
        if !first {
            text.push('\n');
        }
        text.push_str(&format!("{}:\n", path));
    }
    let mut ok = true;
    for (name, kind) in entries {
        if long {
            match stat(&join(path, &name)) {
                Ok(st) => text.push_str(&line(true, &st, &name)),
                Err(error) => {
                    ulib::errln!("ls: {}: {}", join(path, &name), error);
                    ok = false;
                    let st = Stat { kind, ..Stat::default() };
                    text.push_str(&line(true, &st, &name));
                }
            }
        } else {
            text.push_str(&line(false, &Stat::default(), &name));
        }
    }
    let _ = ulib::io::write_all(1, text.as_bytes());
    ok
}

fn main(args: &[&str]) -> i32 {
    let Ok((flags, mut paths)) = ulib::cli::parse(args, "l", false) else { return usage() };
    let long = flags.has('l');
    if paths.is_empty() {
        paths.push(".");
    }
    let header = paths.len() > 1;
    let mut status = 0;
    for (i, path) in paths.iter().enumerate() {
        if !list(path, long, header, i == 0) {
            status = 1;
        }
    }
    status
}
