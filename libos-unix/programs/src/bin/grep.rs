//! `grep [-v] [-c] PATTERN [files...]`: prints the lines of each file (or
//! of standard input when no file is named, or for `-`) that contain
//! PATTERN as a fixed string (bytes, no regular expressions; an empty
//! pattern matches every line). `-v` selects the lines that do not
//! contain it; `-c` prints only the number of selected lines. With more
//! than one file each output line is prefixed `NAME:`. Exits 0 if any line
//! was selected, 1 if none, 2 on an error (an unreadable file is reported
//! as `grep: PATH: ERRNO`) or a bad usage. Input is read a chunk at a time
//! and split into lines as it comes.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use ulib::io::{close, open, read, write_all, O_RDONLY};
use ulib::Errno;

ulib::program_main!(main);

struct Options<'a> {
    pattern: &'a [u8],
    invert: bool,
    count: bool,
    prefix: bool,
}

fn contains(line: &[u8], pattern: &[u8]) -> bool {
    pattern.is_empty() || line.windows(pattern.len()).any(|w| w == pattern)
}

/// Where searching failed: reading the input or writing standard output.
enum Failure {
    Read(Errno),
    Write(Errno),
}

/// Search one open file: the number of lines selected.
fn search(fd: i32, name: &str, opts: &Options) -> Result<u64, Failure> {
    let mut selected = 0u64;
    let mut pending: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4000];
    let mut on_line = |line: &[u8], out: &mut Vec<u8>| {
        if contains(line, opts.pattern) != opts.invert {
            selected += 1;
            if !opts.count {
                if opts.prefix {
                    out.extend_from_slice(name.as_bytes());
                    out.push(b':');
                }
                out.extend_from_slice(line);
                out.push(b'\n');
            }
        }
    };
    loop {
        let n = read(fd, &mut buf).map_err(Failure::Read)?;
        if n == 0 {
            break;
        }
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(at) = pending[start..].iter().position(|&b| b == b'\n') {
            on_line(&pending[start..start + at], &mut out);
            start += at + 1;
        }
        pending.drain(..start);
        if !out.is_empty() {
            write_all(1, &out).map_err(Failure::Write)?;
            out.clear();
        }
    }
    if !pending.is_empty() {
        on_line(&pending, &mut out);
    }
    if opts.count {
        if opts.prefix {
            out.extend_from_slice(name.as_bytes());
            out.push(b':');
        }
        out.extend_from_slice(alloc::format!("{}\n", selected).as_bytes());
    }
    write_all(1, &out).map_err(Failure::Write)?;
    Ok(selected)
}

fn usage() -> i32 {
    ulib::errln!("usage: grep [-v] [-c] PATTERN [files...]");
    2
}

fn main(args: &[&str]) -> i32 {
    // Options come before the pattern.
    let Ok((flags, operands)) = ulib::cli::parse(args, "vc", true) else { return usage() };
    let (invert, count) = (flags.has('v'), flags.has('c'));
    let Some((pattern, files)) = operands.split_first() else { return usage() };
    let files: &[&str] = if files.is_empty() { &["-"] } else { files };
    let opts = Options { pattern: pattern.as_bytes(), invert, count, prefix: files.len() > 1 };
    let (mut any, mut error) = (false, false);
    for &path in files {
        let (fd, opened, name) = if path == "-" {
            (0, false, "(standard input)")
        } else {
            match open(path, O_RDONLY) {
                Ok(fd) => (fd, true, path),
                Err(e) => {
                    ulib::errln!("grep: {}: {}", path, e);
                    error = true;
                    continue;
                }
            }
        };
        let result = search(fd, name, &opts);
        if opened {
            let _ = close(fd);
        }
        match result {
            Ok(selected) => any |= selected > 0,
            Err(Failure::Read(e)) => {
                ulib::errln!("grep: {}: {}", path, e);
                error = true;
            }
            Err(Failure::Write(e)) => {
                ulib::errln!("grep: write error: {}", e);
                return 2;
            }
        }
    }
    if error {
        2
    } else if any {
        0
    } else {
        1
    }
}
