//! A fork bomb: every process forks until fork fails, then waits for its
//! children. It must stop at the quota its parent passed down (fork
//! returns EAGAIN), leave the other libOSes their time and memory, and
//! give every frame back.
#![no_std]
#![no_main]

use ulib::fork::fork;
use ulib::process::{exit, wait};
use ulib::{println, Errno, WaitStatus};

ulib::program_main!(main);

/// Processes this one and its descendants made, and whether a fork
/// failed with EAGAIN somewhere below.
fn bomb() -> (u32, bool) {
    let mut made = 0;
    let mut stopped = false;
    loop {
        match fork() {
            Ok(0) => {
                let (below, saw) = bomb();
                exit((below.min(127) | if saw { 128 } else { 0 }) as i32);
            }
            Ok(_) => made += 1,
            Err(Errno::EAGAIN) => {
                stopped = true;
                break;
            }
            Err(_) => break,
        }
    }
    while let Ok((_, status)) = wait() {
        if let WaitStatus::Exited(code) = status {
            made += (code & 127) as u32;
            stopped |= code & 128 != 0;
        }
    }
    (made, stopped)
}

fn main(_args: &[&str]) -> i32 {
    let (made, stopped) = bomb();
    println!("forkbomb: {} processes forked, stopped by EAGAIN: {}", made, stopped);
    if stopped && made > 0 {
        0
    } else {
        1
    }
}
