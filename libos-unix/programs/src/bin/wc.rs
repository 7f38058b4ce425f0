//! `wc [-l] [-w] [-c] [files...]`: counts the lines (newlines), words
//! (runs of bytes other than ASCII white space) and bytes of each file, or
//! of standard input when no file is named (or for `-`). Prints the counts
//! asked for (all three by default, always in the order lines, words,
//! bytes), separated by single spaces, then the file's name (none for
//! standard input); with more than one file a last `total` line sums them.
//! Options may be combined (`-lw`). An unreadable file is reported as
//! `wc: PATH: ERRNO` on standard error and the exit status is 1 (2 on a
//! bad option).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use ulib::io::{close, open, read, O_RDONLY};
use ulib::Errno;

ulib::program_main!(main);

#[derive(Clone, Copy, Default)]
struct Counts {
    lines: u64,
    words: u64,
    bytes: u64,
}

fn count(fd: i32) -> Result<Counts, Errno> {
    let mut counts = Counts::default();
    let mut in_word = false;
    let mut buf = [0u8; 4000];
    loop {
        let n = read(fd, &mut buf)?;
        if n == 0 {
            return Ok(counts);
        }
        counts.bytes += n as u64;
        for &byte in &buf[..n] {
            if byte == b'\n' {
                counts.lines += 1;
            }
            if byte.is_ascii_whitespace() {
                in_word = false;
            } else if !in_word {
                in_word = true;
                counts.words += 1;
            }
        }
    }
}

fn report(counts: &Counts, show: [bool; 3], name: Option<&str>) {
    let mut fields: Vec<String> = Vec::new();
    for (on, value) in show.iter().zip([counts.lines, counts.words, counts.bytes]) {
        if *on {
            fields.push(alloc::format!("{}", value));
        }
    }
    if let Some(name) = name {
        fields.push(String::from(name));
    }
    ulib::outln!("{}", fields.join(" "));
}

fn main(args: &[&str]) -> i32 {
    let Ok((flags, files)) = ulib::cli::parse(args, "lwc", false) else {
        ulib::errln!("usage: wc [-l] [-w] [-c] [files...]");
        return 2;
    };
    let mut show = [flags.has('l'), flags.has('w'), flags.has('c')];
    if show == [false; 3] {
        show = [true; 3];
    }
    if files.is_empty() {
        return match count(0) {
            Ok(counts) => {
                report(&counts, show, None);
                0
            }
            Err(error) => {
                ulib::errln!("wc: -: {}", error);
                1
            }
        };
    }
    let mut status = 0;
    let mut total = Counts::default();
    for &path in &files {
        let result = if path == "-" {
            count(0)
        } else {
            open(path, O_RDONLY).and_then(|fd| {
                let result = count(fd);
                let _ = close(fd);
                result
            })
        };
        match result {
            Ok(counts) => {
                report(&counts, show, Some(path));
                total.lines += counts.lines;
                total.words += counts.words;
                total.bytes += counts.bytes;
            }
            Err(error) => {
                ulib::errln!("wc: {}: {}", path, error);
                status = 1;
            }
        }
    }
    if files.len() > 1 {
        report(&total, show, Some("total"));
    }
    status
}
