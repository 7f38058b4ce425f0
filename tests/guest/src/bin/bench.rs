//! Bench: the kernel's crossing costs, each beside its hardware floor
//! measured in the same run. Under `-icount shift=0` the TSC counts guest
//! instructions, so every figure is an exact instruction count.
//!
//! Prints one `BENCH op=... median=... min=... max=... floor=... target=...
//! events=...` line per operation; `cargo xtask bench` tabulates them.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use core::arch::asm;
use core::fmt::Write;
use shared_abi::println;
use shared_abi::rt::{rdtsc, set_handler, Env};
use shared_abi::syscall::{self, KernelStats};
use shared_abi::upcall::{UpcallFrame, UpcallKind};

shared_abi::libos_main!(main);

const RUNS: usize = 201;

/// One measured operation: per-run instruction counts and events per op.
struct Sample {
    counts: Vec<u64>,
    events: KernelStats,
}

fn measure(overhead: u64, mut op: impl FnMut()) -> Sample {
    // Warm up (first touches of pages and code).
    for _ in 0..5 {
        op();
    }
    let before = syscall::stats().unwrap_or_default();
    let mut counts = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t0 = rdtsc();
        op();
        let t1 = rdtsc();
        counts.push((t1 - t0).saturating_sub(overhead));
    }
    let after = syscall::stats().unwrap_or_default();
    counts.sort_unstable();
    // Event deltas, less the one `stats` call of the "after" read.
    let per = |a: u64, b: u64| (b - a) / RUNS as u64;
    let events = KernelStats {
        syscalls: per(before.syscalls, after.syscalls - 1),
        upcalls: per(before.upcalls, after.upcalls),
        exceptions: per(before.exceptions, after.exceptions),
        page_faults: per(before.page_faults, after.page_faults),
        timer_ticks: 0,
        context_switches: per(before.context_switches, after.context_switches),
        cr3_loads: per(before.cr3_loads, after.cr3_loads),
        invlpg: per(before.invlpg, after.invlpg),
        stlb_hits: per(before.stlb_hits, after.stlb_hits),
        stlb_misses: per(before.stlb_misses, after.stlb_misses),
        slot_evictions: per(before.slot_evictions, after.slot_evictions),
        key_checks: per(before.key_checks, after.key_checks),
        ..KernelStats::default()
    };
    Sample { counts, events }
}

impl Sample {
    fn median(&self) -> u64 {
        self.counts[self.counts.len() / 2]
    }
}

fn report(unit: &str, op: &str, sample: &Sample, floor: Option<(&str, u64)>, target: Option<u64>) {
    let mut line = String::new();
    let _ = write!(
        line,
        "BENCH op={} unit={} median={} min={} max={}",
        op,
        unit,
        sample.median(),
        sample.counts[0],
        sample.counts[sample.counts.len() - 1]
    );
    match floor {
        Some((name, value)) => {
            let _ = write!(line, " floor={}:{}", name, value);
        }
        None => line.push_str(" floor=-"),
    }
    match target {
        Some(t) => {
            let _ = write!(line, " target={}", t);
        }
        None => line.push_str(" target=-"),
    }
    let e = &sample.events;
    let _ = write!(
        line,
        " events=syscalls:{},upcalls:{},exceptions:{},page_faults:{},cr3_loads:{},invlpg:{},switches:{}",
        e.syscalls, e.upcalls, e.exceptions, e.page_faults, e.cr3_loads, e.invlpg, e.context_switches
    );
    println!("{}", line);
}

fn on_exception(frame: &mut UpcallFrame) {
    if frame.vector == 6 {
        frame.rip += 2; // step over ud2
    }
    // int3 is a trap: rip already points past it.
}

/// Where the page-fault probe reads; never mapped.
const UNMAPPED: u64 = 0x0000_6000_0000_0000;
static mut SAFE_WORD: u64 = 7;

fn on_page_fault(frame: &mut UpcallFrame) {
    // Point the faulting load's base register (r12) at a mapped word and retry.
    if frame.fault_addr == UNMAPPED {
        frame.regs.r12 = core::ptr::addr_of!(SAFE_WORD) as u64;
    }
}

fn main(env: &Env) -> i32 {
    // The manifest says what the TSC counts in this run: guest
    // instructions under -icount, cycles on real KVM.
    let unit = env.param("unit").unwrap_or("tsc-ticks");
    println!("bench: unit = {}, {} runs per operation", unit, RUNS);
    set_handler(UpcallKind::Exception, on_exception).expect("register exception handler");
    set_handler(UpcallKind::PageFault, on_page_fault).expect("register page-fault handler");

    let overhead = (0..50)
        .map(|_| {
            let t0 = rdtsc();
            let t1 = rdtsc();
            t1 - t0
        })
        .min()
        .unwrap_or(0);
    println!("bench: rdtsc pair overhead {} (subtracted)", overhead);

    let bare_syscall = measure(overhead, || {
        // SAFETY: the bare number is answered by an immediate sysretq.
        unsafe { syscall::raw6(0x7fff_ffff, 0, 0, 0, 0, 0, 0) };
    });
    let null_syscall = measure(overhead, || {
        syscall::null();
    });
    let bare_int = measure(overhead, || {
        // SAFETY: vector 0x81 is a bare iretq in the kernel.
        unsafe { asm!("int 0x81", options(nostack)) };
    });
    let int3 = measure(overhead, || {
        // SAFETY: the registered exception handler resumes after int3.
        unsafe { asm!("int3", options(nostack)) };
    });
    let ud2 = measure(overhead, || {
        // SAFETY: the registered exception handler steps over ud2.
        unsafe { asm!("ud2", options(nostack)) };
    });
    let page_fault = measure(overhead, || {
        let value: u64;
        // SAFETY: the page-fault handler redirects r12 to a mapped word.
        unsafe { asm!("mov rax, [r12]", inout("r12") UNMAPPED => _, out("rax") value, options(nostack)) };
        core::hint::black_box(value);
    });

    report(unit, "bare_syscall_sysret", &bare_syscall, None, None);
    report(unit, "null_syscall", &null_syscall, Some(("bare_syscall_sysret", bare_syscall.median())), Some(40));
    report(unit, "bare_int_iretq", &bare_int, None, None);
    report(unit, "exception_int3_upcall", &int3, Some(("bare_int_iretq", bare_int.median())), Some(120));
    report(unit, "exception_ud2_upcall", &ud2, Some(("bare_int_iretq", bare_int.median())), Some(120));
    report(unit, "page_fault_upcall", &page_fault, Some(("bare_int_iretq", bare_int.median())), None);
    0
}
