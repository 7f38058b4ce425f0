//! Smoke: proves ring 3, the console call and exit work (used to vet KVM).
#![no_std]
#![no_main]

use shared_abi::println;
use shared_abi::rt::Env;

shared_abi::libos_main!(main);

fn main(env: &Env) -> i32 {
    println!("smoke: hello from env {} of {}", env.id, env.env_count);
    0
}
