//! Says who it is and what it was given (quiet with `-q`), and exits with
//! the status `exit=N` names (0 by default), so a parent can check it.
#![no_std]
#![no_main]

use ulib::process::{getpid, getppid};

ulib::program_main!(main);

fn main(args: &[&str]) -> i32 {
    if !args.contains(&"-q") {
        ulib::println!("hello from pid {} (parent {}), args {:?}", getpid(), getppid(), args);
    }
    args.iter().find_map(|a| a.strip_prefix("exit=")).and_then(|n| n.parse().ok()).unwrap_or(0)
}
