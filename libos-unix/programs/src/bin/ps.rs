//! `ps`: lists the processes of the libOS from the shared process table
//! (`ulib::table::snapshot`): a `PID PPID STATE NAME` header, then one
//! line per process in pid order with those four fields separated by
//! single spaces. STATE is `R` for a running process and `Z` for a zombie
//! (ended, its status not yet collected by its parent).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use ulib::proctab::{state, Proc};

ulib::program_main!(main);

fn main(_args: &[&str]) -> i32 {
    let table = ulib::table::snapshot();
    let mut procs: Vec<&Proc> = table.procs.iter().filter(|p| p.state != state::FREE).collect();
    procs.sort_by_key(|p| p.pid);
    let mut text = String::from("PID PPID STATE NAME\n");
    for p in procs {
        let st = match p.state {
            state::RUNNING => 'R',
            state::ZOMBIE => 'Z',
            _ => '?',
        };
        text.push_str(&alloc::format!("{} {} {} {}\n", p.pid, p.ppid, st, p.name()));
    }
    match ulib::io::write_all(1, text.as_bytes()) {
        Ok(()) => 0,
        Err(error) => {
            ulib::errln!("ps: write error: {}", error);
            1
        }
    }
}
