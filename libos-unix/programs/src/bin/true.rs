//! `true`: does nothing and exits with status 0, whatever its arguments
//! (for shell conditions and loops).
#![no_std]
#![no_main]

ulib::program_main!(main);

fn main(_args: &[&str]) -> i32 {
    0
}
