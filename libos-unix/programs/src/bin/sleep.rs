//! `sleep SECONDS`: waits that long, SECONDS being a decimal number that
//! may have a fraction (`2`, `0.1`, `.5`; nanoseconds at most). The
//! deadline is a TSC value (`ulib::process::tsc_hz` ticks a second); the
//! process sleeps in `block_until` (the kernel wakes it by the deadline,
//! it does not spin) and sleeps again after any earlier wake-up until the
//! TSC has reached the deadline. A bad argument exits 2 with a usage line
//! on standard error.
#![no_std]
#![no_main]

use ulib::runtime::rt::rdtsc;
use ulib::runtime::syscall::block_until;

ulib::program_main!(main);

/// `SECONDS` as nanoseconds; None if it is no plain decimal number.
fn nanoseconds(text: &str) -> Option<u128> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds: u128 = if whole.is_empty() { 0 } else { whole.parse::<u64>().ok()?.into() };
    let mut nanos: u128 = 0;
    for (i, digit) in fraction.bytes().take(9).enumerate() {
        nanos += u128::from(digit - b'0') * 10u128.pow(8 - i as u32);
    }
    Some(seconds * 1_000_000_000 + nanos)
}

fn main(args: &[&str]) -> i32 {
    let (Some(&text), None) = (args.get(1), args.get(2)) else {
        ulib::errln!("usage: sleep SECONDS");
        return 2;
    };
    let Some(nanos) = nanoseconds(text) else {
        ulib::errln!("sleep: invalid time interval: {}", text);
        return 2;
    };
    let hz = ulib::process::tsc_hz();
    if hz == 0 {
        ulib::errln!("sleep: the TSC frequency is unknown");
        return 1;
    }
    let ticks = u64::try_from(nanos * u128::from(hz) / 1_000_000_000).unwrap_or(u64::MAX);
    let deadline = rdtsc().saturating_add(ticks);
    while rdtsc() < deadline {
        block_until(deadline);
    }
    0
}
