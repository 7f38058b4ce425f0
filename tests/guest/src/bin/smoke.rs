//! Smoke: proves ring 3, the console call and exit work (used to vet KVM).
#![no_std]
#![no_main]

use libos_runtime::println;
use libos_runtime::rt::Env;

libos_runtime::libos_main!(main);

fn main(env: &Env) -> i32 {
    println!("smoke: hello from env {} of {}", env.id, env.env_count);
    0
}
