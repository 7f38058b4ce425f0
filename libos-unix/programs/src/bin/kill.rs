//! `kill [-SIGNAL] pid...`: sends a signal to each process
//! (`ulib::process::kill`). SIGNAL is `9`, `KILL` or `SIGKILL` (ends the
//! process at once), `15`, `TERM` or `SIGTERM` (the default: runs the
//! process's handler if it has one, else ends it), or `0` (only checks the
//! process exists). A pid that cannot be signalled is reported as
//! `kill: PID: ERRNO` on standard error (`ESRCH`: no such running
//! process; `EPERM`: init) and the exit status is 1; a bad signal or usage
//! exits 2.
#![no_std]
#![no_main]

use ulib::process::{kill, SIGKILL, SIGTERM};
use ulib::Errno;

ulib::program_main!(main);

fn signal_number(name: &str) -> Option<u32> {
    let name = name.strip_prefix("SIG").unwrap_or(name);
    match name {
        "0" => Some(0),
        "9" | "KILL" => Some(SIGKILL),
        "15" | "TERM" => Some(SIGTERM),
        _ => None,
    }
}

fn usage() -> i32 {
    ulib::errln!("usage: kill [-9|-15|-KILL|-TERM] pid...");
    2
}

fn main(args: &[&str]) -> i32 {
    let mut pids = args.get(1..).unwrap_or(&[]);
    let mut signal = SIGTERM;
    if let Some(first) = pids.first() {
        if *first == "--" {
            pids = &pids[1..];
        } else if let Some(name) = first.strip_prefix('-') {
            match signal_number(name) {
                Some(number) => signal = number,
                None => {
                    ulib::errln!("kill: {}: {}", first, Errno::EINVAL);
                    return 2;
                }
            }
            pids = &pids[1..];
        }
    }
    if pids.is_empty() {
        return usage();
    }
    let mut status = 0;
    for &pid in pids {
        let result = match pid.parse::<u64>() {
            Ok(number) if number > 0 => kill(number, signal),
            _ => Err(Errno::EINVAL),
        };
        if let Err(error) = result {
            ulib::errln!("kill: {}: {}", pid, error);
            status = 1;
        }
    }
    status
}
