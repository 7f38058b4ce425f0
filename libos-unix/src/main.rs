//! libos-unix: a UNIX-like library OS. Today: boots in ring 3, prints
//! through the console call, takes its own exceptions and page faults and
//! resumes the faulting code.
#![no_std]
#![no_main]

extern crate alloc;

use core::arch::asm;
use shared_abi::println;
use shared_abi::rt::{set_handler, Env};
use shared_abi::upcall::{UpcallFrame, UpcallKind};

shared_abi::libos_main!(main);

fn main(env: &Env) -> i32 {
    println!("libos-unix up: env {} args {:?}", env.id, env.args);
    match env.args.trim() {
        "faults" => faults(),
        _ => demo(),
    }
}

/// CPU-bound work that prints as it goes, so the timer interleaves it with
/// the other libOSes.
fn demo() -> i32 {
    let mut found = 0u64;
    let mut candidate = 2u64;
    for round in 1..=5 {
        let goal = found + 400;
        while found < goal {
            if is_prime(candidate) {
                found += 1;
            }
            candidate += 1;
        }
        println!("round {}: {} primes so far, largest below {}", round, found, candidate);
    }
    println!("done");
    0
}

fn is_prime(n: u64) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

/// Divide by zero and touch an unmapped page, handle both, resume.
fn faults() -> i32 {
    set_handler(UpcallKind::Exception, on_exception).expect("register exception handler");
    set_handler(UpcallKind::PageFault, on_page_fault).expect("register page-fault handler");

    let quotient: u64;
    // SAFETY: divides by zero on purpose; the handler steps over the 3-byte
    // `div rcx` and puts a sentinel in rax.
    unsafe {
        asm!("xor edx, edx", "div rcx", inout("rax") 100u64 => quotient, in("rcx") 0u64, out("rdx") _, options(nostack));
    }
    println!("divide by zero handled: resumed with rax = {:#x}", quotient);

    let value: u64;
    // SAFETY: the load faults on purpose; the handler redirects r12.
    unsafe { asm!("mov rax, [r12]", inout("r12") UNMAPPED => _, out("rax") value, options(nostack)) };
    println!("page fault handled: resumed and loaded {:#x}", value);
    if quotient == DIV_SENTINEL && value == FALLBACK_WORD {
        println!("faults: ok");
        0
    } else {
        println!("faults: WRONG values");
        1
    }
}

const DIV_SENTINEL: u64 = 0xd1d0;
const UNMAPPED: u64 = 0x0000_5000_0000_0000;
const FALLBACK_WORD: u64 = 0x600d_f00d;
static FALLBACK: u64 = FALLBACK_WORD;

fn on_exception(frame: &mut UpcallFrame) {
    println!("exception {} at {:#x}: stepping over", frame.vector, frame.rip);
    if frame.vector == 0 {
        frame.rip += 3;
        frame.regs.rax = DIV_SENTINEL;
    }
}

fn on_page_fault(frame: &mut UpcallFrame) {
    println!("page fault at {:#x} (error {:#x}) from {:#x}", frame.fault_addr, frame.error_code, frame.rip);
    if frame.fault_addr == UNMAPPED {
        frame.regs.r12 = &FALLBACK as *const u64 as u64;
    }
}
