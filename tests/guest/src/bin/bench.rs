//! Bench: the kernel's crossing costs, each beside its hardware floor
//! measured in the same run. Under `-icount shift=0` the TSC counts guest
//! instructions, so every figure is an exact instruction count.
//!
//! Prints one `BENCH op=... median=... min=... max=... floor=... target=...
//! events=... tag=...` line per operation; `cargo xtask bench` tabulates
//! them. Each timed run is bracketed by measurement markers
//! (`libos_runtime::marker`) with the operation's tag, just outside the
//! two `rdtsc`s, so the TLB-model plugin, when QEMU runs it, reports the
//! instructions and modelled TLB misses of the same runs (joined by tag).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use core::arch::asm;
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};
use libos_runtime::marker;
use libos_runtime::println;
use libos_runtime::rt::{rdtsc, set_handler, Env};
use libos_runtime::start::DYNAMIC_BASE;
use libos_runtime::syscall::{self, map_flags, rights, FrameKey, KernelStats};
use libos_runtime::upcall::{UpcallFrame, UpcallKind};

libos_runtime::libos_main!(main);

const RUNS: usize = 201;

/// One measured operation: per-run instruction counts and events per op.
struct Sample {
    counts: Vec<u64>,
    events: KernelStats,
    /// The marker tag of its timed runs (None: not bracketed).
    tag: Option<u16>,
}

/// Marker tags, one per timed operation (printed as `tag=` on its row).
mod tag {
    pub const BARE_SYSCALL: u16 = 1;
    pub const NULL_SYSCALL: u16 = 2;
    pub const BARE_INT: u16 = 3;
    pub const INT3: u16 = 4;
    pub const UD2: u16 = 5;
    pub const PAGE_FAULT: u16 = 6;
    pub const PCT: u16 = 7;
    pub const FRAME_ALLOC: u16 = 8;
    pub const FRAME_FREE: u16 = 9;
    pub const SLOT_INSTALL: u16 = 10;
    pub const UPCALL_REFILL: u16 = 11;
    pub const DEMAND_FAULT: u16 = 12;
    pub const WRITE_UPGRADE: u16 = 13;
    pub const STLB_REFILL: u16 = 14;
    /// The context switch + touch of W pages: `SWITCH + W`.
    pub const SWITCH: u16 = 0x400;
}

fn measure<const TAG: u16>(overhead: u64, op: impl FnMut()) -> Sample {
    measure_with::<TAG>(overhead, || {}, op)
}

/// Time `op` RUNS times, each after an untimed `setup`; events are read
/// right around each timed `op`, so they count only what it caused. The
/// markers of `TAG` bracket the two `rdtsc`s of each timed run.
fn measure_with<const TAG: u16>(overhead: u64, mut setup: impl FnMut(), mut op: impl FnMut()) -> Sample {
    // Warm up (first touches of pages and code).
    for _ in 0..5 {
        setup();
        op();
    }
    let mut counts = Vec::with_capacity(RUNS);
    let mut total = KernelStats::default();
    for _ in 0..RUNS {
        setup();
        let before = syscall::stats().unwrap_or_default();
        marker::begin::<TAG>();
        let t0 = rdtsc();
        op();
        let t1 = rdtsc();
        marker::end::<TAG>();
        let after = syscall::stats().unwrap_or_default();
        counts.push((t1 - t0).saturating_sub(overhead));
        // The `after` read is itself one system call.
        total.syscalls += after.syscalls - before.syscalls - 1;
        total.upcalls += after.upcalls - before.upcalls;
        total.exceptions += after.exceptions - before.exceptions;
        total.page_faults += after.page_faults - before.page_faults;
        total.context_switches += after.context_switches - before.context_switches;
        total.cr3_loads += after.cr3_loads - before.cr3_loads;
        total.invlpg += after.invlpg - before.invlpg;
        total.stlb_hits += after.stlb_hits - before.stlb_hits;
        total.stlb_misses += after.stlb_misses - before.stlb_misses;
        total.slot_evictions += after.slot_evictions - before.slot_evictions;
        total.key_checks += after.key_checks - before.key_checks;
    }
    counts.sort_unstable();
    let per = |x: u64| (x + RUNS as u64 / 2) / RUNS as u64;
    let events = KernelStats {
        syscalls: per(total.syscalls),
        upcalls: per(total.upcalls),
        exceptions: per(total.exceptions),
        page_faults: per(total.page_faults),
        context_switches: per(total.context_switches),
        cr3_loads: per(total.cr3_loads),
        invlpg: per(total.invlpg),
        stlb_hits: per(total.stlb_hits),
        stlb_misses: per(total.stlb_misses),
        slot_evictions: per(total.slot_evictions),
        key_checks: per(total.key_checks),
        ..KernelStats::default()
    };
    Sample { counts, events, tag: Some(TAG) }
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
        " events=syscalls:{},upcalls:{},faults:{},cr3:{},invlpg:{},switches:{},stlb_hit:{},stlb_miss:{},evict:{}",
        e.syscalls,
        e.upcalls,
        e.page_faults,
        e.cr3_loads,
        e.invlpg,
        e.context_switches,
        e.stlb_hits,
        e.stlb_misses,
        e.slot_evictions
    );
    if let Some(tag) = sample.tag {
        let _ = write!(line, " tag={}", tag);
    }
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

/// What the page-fault handler does (one benchmark at a time).
static FAULT_MODE: AtomicU64 = AtomicU64::new(MODE_REDIRECT);
const MODE_REDIRECT: u64 = 0;
/// Map the preallocated frame at the faulting page (upcall refill).
const MODE_MAP: u64 = 1;
/// Allocate a frame and map it (demand paging).
const MODE_ALLOC_MAP: u64 = 2;
/// Remap the page writable with the read-write key, in place
/// (`map(REPLACE)`: the write-fault upgrade).
const MODE_UPGRADE: u64 = 3;
static KEY_LO: AtomicU64 = AtomicU64::new(0);
static KEY_HI: AtomicU64 = AtomicU64::new(0);

fn stored_key() -> FrameKey {
    FrameKey { handle: KEY_LO.load(Ordering::Relaxed), mac: KEY_HI.load(Ordering::Relaxed) }
}

fn on_page_fault(frame: &mut UpcallFrame) {
    let page = frame.fault_addr & !0xfff;
    match FAULT_MODE.load(Ordering::Relaxed) {
        MODE_MAP => {
            let _ = syscall::map(page, stored_key(), map_flags::WRITE);
        }
        MODE_ALLOC_MAP => {
            if let Ok((_, key)) = syscall::frame_alloc(0, rights::READ | rights::WRITE) {
                let _ = syscall::map(page, key, map_flags::WRITE);
                KEY_LO.store(key.handle, Ordering::Relaxed);
                KEY_HI.store(key.mac, Ordering::Relaxed);
            }
        }
        MODE_UPGRADE => {
            // One call: remap the page writable where it is.
            let _ = syscall::map(page, stored_key(), map_flags::WRITE | map_flags::REPLACE);
        }
        _ => {
            // Point the faulting load's base register (r12) at a mapped word and retry.
            if frame.fault_addr == UNMAPPED {
                frame.regs.r12 = core::ptr::addr_of!(SAFE_WORD) as u64;
            }
        }
    }
}

/// Write one word at `va` (faults are handled by the current mode).
#[inline(always)]
fn poke(va: u64) {
    // SAFETY: `va` is in the dynamic window; the fault handler makes it valid.
    unsafe { core::ptr::write_volatile(va as *mut u64, 1) };
}

fn main(env: &Env) -> i32 {
    match env.args.trim() {
        "partner" => return partner(),
        "switch" => return switch_only(env),
        args if args.starts_with("profile ") => return profile(&args["profile ".len()..]),
        _ => {}
    }
    // The manifest says what the TSC counts in this run: guest
    // instructions under -icount, cycles on real KVM.
    let unit = env.param("unit").unwrap_or("tsc-ticks");
    println!("bench: unit = {}, {} runs per operation", unit, RUNS);
    set_handler(UpcallKind::Exception, on_exception).expect("register exception handler");
    set_handler(UpcallKind::PageFault, on_page_fault).expect("register page-fault handler");

    let overhead = rdtsc_overhead();
    println!("bench: rdtsc pair overhead {} (subtracted)", overhead);

    let bare_syscall = measure::<{ tag::BARE_SYSCALL }>(overhead, || {
        // The same stub shape as `syscall::null` (number in rax, nothing
        // else), so the two rows differ only by what the kernel does.
        // SAFETY: the bare number is answered by an immediate sysretq.
        unsafe {
            asm!("syscall", inlateout("rax") 0x7fff_ffffu64 => _, lateout("rcx") _, lateout("r11") _,
                 options(nostack, nomem));
        }
    });
    let null_syscall = measure::<{ tag::NULL_SYSCALL }>(overhead, || {
        syscall::null();
    });
    let bare_int = measure::<{ tag::BARE_INT }>(overhead, || {
        // SAFETY: vector 0x81 is a bare iretq in the kernel.
        unsafe { asm!("int 0x81", options(nostack)) };
    });
    let int3 = measure::<{ tag::INT3 }>(overhead, || {
        // SAFETY: the registered exception handler resumes after int3.
        unsafe { asm!("int3", options(nostack)) };
    });
    let ud2 = measure::<{ tag::UD2 }>(overhead, || {
        // SAFETY: the registered exception handler steps over ud2.
        unsafe { asm!("ud2", options(nostack)) };
    });
    let page_fault = measure::<{ tag::PAGE_FAULT }>(overhead, || {
        let value: u64;
        // SAFETY: the page-fault handler redirects r12 to a mapped word.
        unsafe { asm!("mov rax, [r12]", inout("r12") UNMAPPED => _, out("rax") value, options(nostack)) };
        core::hint::black_box(value);
    });

    report(unit, "bare_syscall_sysret", &bare_syscall, None, None);
    report(
        unit,
        "null_syscall",
        &null_syscall,
        Some(("bare_syscall_sysret", bare_syscall.median())),
        Some(2 * bare_syscall.median()),
    );
    report(unit, "bare_int_iretq", &bare_int, None, None);
    report(unit, "exception_int3_upcall", &int3, Some(("bare_int_iretq", bare_int.median())), Some(80));
    report(unit, "exception_ud2_upcall", &ud2, Some(("bare_int_iretq", bare_int.median())), Some(80));
    report(unit, "page_fault_upcall", &page_fault, Some(("bare_int_iretq", bare_int.median())), Some(200));

    // Protected control transfer round trip to the partner (env 2).
    let mut pct = None;
    for _ in 0..100 {
        if syscall::pct_call(2, [1, 2, 3, 4]).is_ok() {
            pct = Some(measure::<{ tag::PCT }>(overhead, || {
                let _ = syscall::pct_call(2, [1, 2, 3, 4]);
            }));
            break;
        }
        syscall::yield_now(); // the partner has not registered yet
    }
    match pct {
        Some(sample) => {
            report(unit, "pct_call_round_trip", &sample, Some(("null_syscall", null_syscall.median())), Some(150))
        }
        None => println!("bench: partner never accepted protected calls"),
    }

    memory_benchmarks(unit, overhead, page_fault.median());
    switch_benchmarks(unit, overhead, env.param("policy").unwrap_or("flush"));
    demux_benchmarks(unit);
    0
}

const PAGE: u64 = 4096;

fn memory_benchmarks(unit: &str, overhead: u64, upcall_floor: u64) {
    // Key validation on the hot path, measured inside the kernel.
    let (_, key) = syscall::frame_alloc(0, rights::ALL).expect("frame for key bench");
    const CHECKS: u64 = 10_000;
    let mut per_check = Vec::new();
    for _ in 0..11 {
        per_check.push(syscall::key_bench(key, CHECKS).expect("key bench") / CHECKS);
    }
    per_check.sort_unstable();
    let sample = Sample { counts: per_check, events: KernelStats::default(), tag: None };
    report(unit, "key_check_in_kernel", &sample, None, Some(30));

    // Frame allocate (with SHA-256 key minting and zeroing) and free.
    let mut keys = Vec::new();
    let alloc = measure::<{ tag::FRAME_ALLOC }>(overhead, || {
        keys.push(syscall::frame_alloc(0, rights::ALL).expect("alloc").1);
    });
    report(unit, "frame_alloc", &alloc, None, Some(300));
    let mut to_free = keys.clone();
    let free = measure_with::<{ tag::FRAME_FREE }>(
        overhead,
        || {},
        || {
            if let Some(k) = to_free.pop() {
                syscall::frame_free(k).expect("free");
            }
        },
    );
    report(unit, "frame_free", &free, None, None);
    for k in to_free {
        let _ = syscall::frame_free(k);
    }

    // TLB-slot install: map a keyed frame (the unmap is untimed setup).
    let va = DYNAMIC_BASE + 0x10_0000;
    KEY_LO.store(key.handle, Ordering::Relaxed);
    KEY_HI.store(key.mac, Ordering::Relaxed);
    let install = measure_with::<{ tag::SLOT_INSTALL }>(
        overhead,
        || {
            let _ = syscall::unmap(va);
        },
        || {
            syscall::map(va, key, map_flags::WRITE).expect("map");
        },
    );
    report(unit, "tlb_slot_install", &install, None, None);
    let _ = syscall::unmap(va);

    // Upcall refill: the page is unmapped; the libOS's handler maps it.
    FAULT_MODE.store(MODE_MAP, Ordering::Relaxed);
    let upcall_refill = measure_with::<{ tag::UPCALL_REFILL }>(
        overhead,
        || {
            let _ = syscall::unmap(va);
        },
        || poke(va),
    );
    report(unit, "page_fault_upcall_refill", &upcall_refill, Some(("page_fault_upcall", upcall_floor)), None);

    // Demand paging: the handler allocates a frame and maps it.
    FAULT_MODE.store(MODE_ALLOC_MAP, Ordering::Relaxed);
    let demand = measure_with::<{ tag::DEMAND_FAULT }>(
        overhead,
        || {
            let _ = syscall::unmap(va);
            let _ = syscall::frame_free(stored_key());
        },
        || poke(va),
    );
    report(unit, "demand_fault_alloc_map", &demand, Some(("page_fault_upcall", upcall_floor)), Some(400));
    let _ = syscall::unmap(va);
    let _ = syscall::frame_free(stored_key());

    // Write to a read-only mapping; the handler upgrades it and resumes.
    let (_, rw) = syscall::frame_alloc(0, rights::READ | rights::WRITE).expect("rw frame");
    KEY_LO.store(rw.handle, Ordering::Relaxed);
    KEY_HI.store(rw.mac, Ordering::Relaxed);
    FAULT_MODE.store(MODE_UPGRADE, Ordering::Relaxed);
    let upgrade = measure_with::<{ tag::WRITE_UPGRADE }>(
        overhead,
        || {
            let _ = syscall::unmap(va);
            let _ = syscall::map(va, rw, 0);
        },
        || poke(va),
    );
    report(unit, "write_fault_upgrade", &upgrade, Some(("page_fault_upcall", upcall_floor)), Some(300));
    let _ = syscall::unmap(va);
    FAULT_MODE.store(MODE_REDIRECT, Ordering::Relaxed);
}

/// Run one operation many times and nothing else, for an instruction
/// trace (`-d exec` under one instruction per block) to attribute its
/// cost by function: `args = profile OP`.
fn profile(ops: &str) -> i32 {
    set_handler(UpcallKind::Exception, on_exception).expect("register exception handler");
    set_handler(UpcallKind::PageFault, on_page_fault).expect("register page-fault handler");
    const TIMES: usize = 200;
    let va = DYNAMIC_BASE + 0x10_0000;
    let (_, key) = syscall::frame_alloc(0, rights::ALL).expect("frame");
    // Wait for the partner to take protected calls.
    while syscall::pct_call(2, [0; 4]).is_err() {
        syscall::yield_now();
    }
    for op in ops.split_whitespace() {
        KEY_LO.store(key.handle, Ordering::Relaxed);
        KEY_HI.store(key.mac, Ordering::Relaxed);
        // The trace is cut at each entry to `key_bench`.
        let _ = syscall::key_bench(key, 1);
        for _ in 0..TIMES {
            if profile_op(op, va, key).is_err() {
                println!("bench: profile: unknown op {}", op);
                return 1;
            }
        }
    }
    0
}

fn profile_op(op: &str, va: u64, key: FrameKey) -> Result<(), ()> {
    {
        match op {
            "null" => {
                syscall::null();
            }
            // SAFETY: the registered exception handler resumes after int3.
            "int3" => unsafe { asm!("int3", options(nostack)) },
            "pf" => {
                let value: u64;
                // SAFETY: the page-fault handler redirects r12 to a mapped word.
                unsafe { asm!("mov rax, [r12]", inout("r12") UNMAPPED => _, out("rax") value, options(nostack)) };
                core::hint::black_box(value);
            }
            "pct" => {
                let _ = syscall::pct_call(2, [1, 2, 3, 4]);
            }
            "alloc" => {
                let (_, k) = syscall::frame_alloc(0, rights::ALL).expect("alloc");
                let _ = syscall::frame_free(k);
            }
            "map" => {
                let _ = syscall::map(va, key, map_flags::WRITE);
                let _ = syscall::unmap(va);
            }
            "demand" => {
                FAULT_MODE.store(MODE_ALLOC_MAP, Ordering::Relaxed);
                poke(va);
                let _ = syscall::unmap(va);
                let _ = syscall::frame_free(stored_key());
                KEY_LO.store(key.handle, Ordering::Relaxed);
                KEY_HI.store(key.mac, Ordering::Relaxed);
            }
            "upgrade" => {
                FAULT_MODE.store(MODE_UPGRADE, Ordering::Relaxed);
                let _ = syscall::map(va, key, 0);
                poke(va);
                let _ = syscall::unmap(va);
            }
            "switch" => syscall::yield_now(),
            // A switch, then a touch of a mapped page (under `stlb`: a refill).
            "refill" => {
                let _ = syscall::map(va, key, map_flags::WRITE);
                syscall::yield_now();
                poke(va);
            }
            _ => return Err(()),
        }
    }
    Ok(())
}

/// Pages for the switch benchmark, mapped once.
const SWITCH_BASE: u64 = DYNAMIC_BASE + 0x100_0000;
const WORKING_SETS: [u64; 4] = [1, 8, 64, 512];

fn map_working_set(pages: u64) {
    for i in 0..pages {
        let (_, key) = syscall::frame_alloc(0, rights::READ | rights::WRITE).expect("frame");
        syscall::map(SWITCH_BASE + i * PAGE, key, map_flags::WRITE).expect("map");
    }
}

/// A round trip to the partner environment (yield, it yields back) and
/// then a touch of W pages, under the boot's TLB policy.
fn switch_benchmarks(unit: &str, overhead: u64, policy: &str) {
    map_working_set(*WORKING_SETS.last().unwrap());
    // One marker tag per W (a tag is a constant of the instruction).
    let samples = [
        switch_sample::<{ tag::SWITCH + 1 }>(overhead, 1),
        switch_sample::<{ tag::SWITCH + 8 }>(overhead, 8),
        switch_sample::<{ tag::SWITCH + 64 }>(overhead, 64),
        switch_sample::<{ tag::SWITCH + 512 }>(overhead, 512),
    ];
    for (w, sample) in WORKING_SETS.iter().zip(samples) {
        let op = alloc::format!("switch_{}_touch_{}", policy, w);
        // The target is for the flush policy's one-page round trip.
        let target = (policy == "flush" && *w == 1).then_some(400);
        report(unit, &op, &sample, None, target);
    }
}

/// Yield to the partner and back, then touch `w` pages.
fn switch_sample<const TAG: u16>(overhead: u64, w: u64) -> Sample {
    measure::<TAG>(overhead, || {
        syscall::yield_now();
        for i in 0..w {
            poke(SWITCH_BASE + i * PAGE);
        }
    })
}

/// The cost of the two `rdtsc`s around every measurement (subtracted).
fn rdtsc_overhead() -> u64 {
    (0..50)
        .map(|_| {
            let t0 = rdtsc();
            let t1 = rdtsc();
            t1 - t0
        })
        .min()
        .unwrap_or(0)
}

/// Only the switch benchmarks (for boots with another TLB policy).
fn switch_only(env: &Env) -> i32 {
    let unit = env.param("unit").unwrap_or("tsc-ticks");
    let overhead = rdtsc_overhead();
    set_handler(UpcallKind::PageFault, on_page_fault).expect("register page-fault handler");
    let policy = env.param("policy").unwrap_or("?");
    switch_benchmarks(unit, overhead, policy);
    if policy == "stlb" {
        // STLB-hit refill alone: after a switch the page refaults through
        // the software TLB in the kernel.
        let va = SWITCH_BASE;
        let refill = measure_with::<{ tag::STLB_REFILL }>(overhead, syscall::yield_now, || poke(va));
        report(unit, "stlb_hit_refill", &refill, None, Some(150));
    }
    0
}

fn echo(_caller: u64, msg: [u64; 4], _is_async: bool) -> [u64; 4] {
    msg
}

/// The other side of the switch and transfer benchmarks: answer protected
/// calls and yield until the bench ends.
fn partner() -> i32 {
    libos_runtime::rt::set_pct_handler(echo).expect("register protected entry");
    // The end check (a `stats` call, a few hundred instructions) runs
    // once per 64 yields, so the switch benchmark measures switches, not
    // the partner's polling.
    loop {
        for _ in 0..64 {
            syscall::yield_now();
        }
        if syscall::stats().map(|s| s.envs_ended).unwrap_or(1) != 0 {
            break;
        }
    }
    0
}

/// Packet demultiplexing per packet, measured inside the kernel
/// (`demux_bench`): the merged trie against a linear scan of the same
/// filters, with 1 to 1000 "UDP to port N" filters installed. The trie's
/// cost should stay flat (its 1000-filter row has the 1-filter row as floor).
fn demux_benchmarks(unit: &str) {
    const PACKETS: u64 = 200;
    const SAMPLES: usize = 7;
    let mut trie_one = 0;
    for filters in [1u64, 10, 100, 1000] {
        for linear in [false, true] {
            let mut per_packet = Vec::with_capacity(SAMPLES);
            for _ in 0..SAMPLES {
                match libos_runtime::net::demux_bench(filters, linear, PACKETS) {
                    Ok(ticks) => per_packet.push(ticks / PACKETS),
                    Err(error) => {
                        println!("bench: demux_bench({}, {}): {}", filters, linear, error.name());
                        return;
                    }
                }
            }
            per_packet.sort_unstable();
            let sample = Sample { counts: per_packet, events: KernelStats::default(), tag: None };
            let kind = if linear { "linear" } else { "trie" };
            let op = alloc::format!("demux_{}_{}_filters", kind, filters);
            let floor = if !linear && filters == 1000 { Some(("demux_trie_1_filters", trie_one)) } else { None };
            report(unit, &op, &sample, floor, None);
            if !linear && filters == 1 {
                trie_one = sample.median();
            }
        }
    }
}
