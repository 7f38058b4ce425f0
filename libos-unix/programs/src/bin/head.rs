//! `head [-n N] [files...]`: prints the first N lines (10 by default) of
//! each file, or of standard input when no file is named (or for `-`).
//! `-nN` and `-N` are accepted too. With more than one file each is headed
//! `==> NAME <==`, separated by a blank line, as Unix does. Reading stops
//! once N lines are out, so a pipe or the console is not drained. An
//! unreadable file is reported as `head: PATH: ERRNO` on standard error
//! and the exit status is 1 (2 on a bad usage).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use ulib::io::{read, write_all};

ulib::program_main!(main);

use ulib::cli::Failure;

fn head(fd: i32, lines: u64) -> Result<(), Failure> {
    let mut left = lines;
    let mut buf = [0u8; 4000];
    while left > 0 {
        let n = read(fd, &mut buf).map_err(Failure::Read)?;
        if n == 0 {
            break;
        }
        let mut end = n;
        for (i, &byte) in buf[..n].iter().enumerate() {
            if byte == b'\n' {
                left -= 1;
                if left == 0 {
                    end = i + 1;
                    break;
                }
            }
        }
        write_all(1, &buf[..end]).map_err(Failure::Write)?;
    }
    Ok(())
}

fn usage() -> i32 {
    ulib::errln!("usage: head [-n N] [files...]");
    2
}

fn main(args: &[&str]) -> i32 {
    let mut lines: u64 = 10;
    let mut files: Vec<&str> = Vec::new();
    let rest = args.get(1..).unwrap_or(&[]);
    let mut i = 0;
    let mut options = true;
    while i < rest.len() {
        let arg = rest[i];
        i += 1;
        if options && arg == "--" {
            options = false;
        } else if options && arg.len() > 1 && arg.starts_with('-') {
            let number = if arg == "-n" {
                let Some(&n) = rest.get(i) else { return usage() };
                i += 1;
                n
            } else if let Some(n) = arg.strip_prefix("-n") {
                n
            } else {
                &arg[1..]
            };
            match number.parse() {
                Ok(n) => lines = n,
                Err(_) => {
                    ulib::errln!("head: invalid number of lines: {}", number);
                    return 2;
                }
            }
        } else {
            files.push(arg);
        }
    }
    if files.is_empty() {
        files.push("-");
    }
    let headers = files.len() > 1;
    ulib::cli::each_input("head", &files, |fd, n| {
        if headers {
            let path = files[n];
            let name = if path == "-" { "standard input" } else { path };
            ulib::out!("{}==> {} <==\n", if n > 0 { "\n" } else { "" }, name);
        }
        head(fd, lines)
    })
}
