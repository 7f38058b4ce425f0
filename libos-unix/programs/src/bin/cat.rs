//! `cat [files...]`: copies each file to standard output in order, or
//! standard input when no file is named or for a file named `-`. A file
//! that cannot be opened or read is reported as `cat: PATH: ERRNO` on
//! standard error and skipped; the exit status is then 1 (0 when all were
//! copied). Data is streamed a chunk at a time, so a pipe or the console
//! is copied as it arrives.
#![no_std]
#![no_main]

use ulib::io::{close, open, read, write_all, O_RDONLY};
use ulib::Errno;

ulib::program_main!(main);

/// Where copying failed: reading the input or writing standard output.
enum Failure {
    Read(Errno),
    Write(Errno),
}

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
    let mut status = 0;
    for &path in files {
        let (fd, opened) = if path == "-" {
            (0, false)
        } else {
            match open(path, O_RDONLY) {
                Ok(fd) => (fd, true),
                Err(error) => {
                    ulib::errln!("cat: {}: {}", path, error);
                    status = 1;
                    continue;
                }
            }
        };
        let result = copy(fd);
        if opened {
            let _ = close(fd);
        }
        match result {
            Ok(()) => {}
            Err(Failure::Read(error)) => {
                ulib::errln!("cat: {}: {}", path, error);
                status = 1;
            }
            Err(Failure::Write(error)) => {
                ulib::errln!("cat: write error: {}", error);
                return 1;
            }
        }
    }
    status
}
