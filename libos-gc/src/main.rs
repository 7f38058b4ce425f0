//! libos-gc: a library OS for a garbage-collected runtime. Today: boots in
//! ring 3 and runs a small allocate-and-collect workload over its heap.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use shared_abi::println;
use shared_abi::rt::Env;

shared_abi::libos_main!(main);

fn main(env: &Env) -> i32 {
    println!("libos-gc up: env {} heap {} KiB", env.id, env.heap_len / 1024);
    let mut live: Vec<Vec<u64>> = Vec::new();
    let mut allocated = 0u64;
    for cycle in 1..=5 {
        for i in 0..2000u64 {
            live.push(alloc::vec![i; 8]);
            allocated += 1;
            if live.len() > 500 {
                // Drop the oldest half: a stand-in for a collection.
                live.drain(..250);
            }
        }
        let checksum: u64 = live.iter().map(|v| v[0]).sum();
        println!("cycle {}: {} objects allocated, {} live, checksum {}", cycle, allocated, live.len(), checksum);
    }
    println!("done");
    0
}
