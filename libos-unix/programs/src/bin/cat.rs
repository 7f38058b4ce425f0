//! `cat [files...]`: copies each file to standard output in order, or
//! standard input when no file is named or for a file named `-`. A file
//! that cannot be opened or read is reported as `cat: PATH: ERRNO` on
//! standard error and skipped; the exit status is then 1 (0 when all were
//! copied). Data is streamed a chunk at a time, so a pipe or the console
//! is copied as it arrives.
#![no_std]
#![no_main]

use ulib::io::{read, write_all};

ulib::program_main!(main);

use ulib::cli::Failure;

fn copy(fd: i32) -> Result<(), Failure> {
    let mut buf = [0u8; 4000];
    loop {
        let n = read(fd, &mut buf).map_err(Failure::Read)?;
        if n == 0 {
            return Ok(());
        }
        write_all(1, &buf[..n]).map_err(Failure::Write)?;
    }
}

fn main(args: &[&str]) -> i32 {
    let mut files = args.get(1..).unwrap_or(&[]);
    if files.first() == Some(&"--") {
        files = &files[1..];
    }
    let files: &[&str] = if files.is_empty() { &["-"] } else { files };
    ulib::cli::each_input("cat", files, |fd, _| copy(fd))
}
