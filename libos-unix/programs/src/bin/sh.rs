#![no_std]
#![no_main]
ulib::program_main!(main);
fn main(_args: &[&str]) -> i32 {
    0
}
