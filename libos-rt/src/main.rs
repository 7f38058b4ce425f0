//! libos-rt: a real-time library OS. Today: boots in ring 3 and runs a
//! periodic loop that reports how regularly it got the CPU.
#![no_std]
#![no_main]

use shared_abi::println;
use shared_abi::rt::{rdtsc, Env};

shared_abi::libos_main!(main);

fn main(env: &Env) -> i32 {
    println!("libos-rt up: env {} tsc {} MHz", env.id, env.tsc_hz / 1_000_000);
    let period = (env.tsc_hz / 1000).max(1000); // 1 ms of TSC
    let mut next = rdtsc() + period;
    let mut worst_late = 0u64;
    for job in 1..=5 {
        for _ in 0..20 {
            while rdtsc() < next {
                core::hint::spin_loop();
            }
            worst_late = worst_late.max(rdtsc() - next);
            next += period;
        }
        println!("job batch {}: 20 periods, worst release lateness {} ticks", job, worst_late);
    }
    println!("done");
    0
}
