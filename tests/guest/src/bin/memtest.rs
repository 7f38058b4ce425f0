//! Memtest: frame keys and TLB slots under attack and under load. Modes:
//! `keys` (forged, flipped, foreign, stale and double-freed keys; named
//! frames; read-only shares; mapping rules), `stlb` (more pages than TLB
//! slots: evicted pages refill from the software TLB without upcalls),
//! `guaranteed` (guaranteed mappings are present right after every
//! switch), `hog` (grab pool frames beyond the quota and ignore
//! revocation: the abort protocol takes them), `claim` (ask for the
//! quota while others hold the pool; `claim-later` first lets them borrow).
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::{AtomicU64, Ordering};
use shared_abi::println;
use shared_abi::rt::{set_handler, Env};
use shared_abi::start::{RepossessionVector, DYNAMIC_BASE, REPOSSESSION_ADDR};
use shared_abi::syscall::{self, map_bits, map_flags, rights, Error, FrameKey};
use shared_abi::upcall::{UpcallFrame, UpcallKind};

shared_abi::libos_main!(main);

const PAGE: u64 = 4096;

fn main(env: &Env) -> i32 {
    let result = match env.args.trim() {
        "keys" => keys(env),
        "stlb" => stlb(env),
        "guaranteed" => guaranteed(),
        "hog" => hog(env.tsc_hz),
        "claim" => claim(env),
        "claim-later" => {
            // Let the others borrow the pool first (about 50 ms).
            let start = shared_abi::rt::rdtsc();
            while shared_abi::rt::rdtsc() - start < env.tsc_hz / 20 {
                syscall::yield_now();
            }
            claim(env)
        }
        other => {
            println!("unknown mode {:?}", other);
            Err("mode")
        }
    };
    match result {
        Ok(()) => 0,
        Err(what) => {
            println!("FAILED: {}", what);
            1
        }
    }
}

/// Expect `result` to be the error `want`; print the check.
fn expect_err<T>(what: &str, result: Result<T, Error>, want: Error) -> Result<(), &'static str> {
    match result {
        Err(error) if error == want => {
            println!("check {} -> {}", what, error.name());
            Ok(())
        }
        Err(error) => {
            println!("check {} -> {} (wanted {})", what, error.name(), want.name());
            Err("wrong error")
        }
        Ok(_) => {
            println!("check {} -> UNEXPECTED success (wanted {})", what, want.name());
            Err("unexpected success")
        }
    }
}

static LAST_FAULT: AtomicU64 = AtomicU64::new(0);
static FAULTS: AtomicU64 = AtomicU64::new(0);

/// Page-fault handler for probes: record the fault and skip the probing
/// instruction (the 4-byte `mov [r12], r13` or `mov r13, [r12]`).
fn on_probe_fault(frame: &mut UpcallFrame) {
    LAST_FAULT.store(frame.fault_addr, Ordering::Relaxed);
    FAULTS.fetch_add(1, Ordering::Relaxed);
    frame.rip += 4;
}

/// Write `value` at `va`; false if it faulted.
fn probe_write(va: u64, value: u64) -> bool {
    let before = FAULTS.load(Ordering::Relaxed);
    // SAFETY: a fault is caught by `on_probe_fault`, which skips the 4-byte instruction.
    unsafe { core::arch::asm!("mov qword ptr [r12 + 0], r13", in("r12") va, in("r13") value, options(nostack)) };
    FAULTS.load(Ordering::Relaxed) == before
}

/// Read the word at `va`, or None if it faulted.
fn probe_read(va: u64) -> Option<u64> {
    let before = FAULTS.load(Ordering::Relaxed);
    let value: u64;
    // SAFETY: a fault is caught by `on_probe_fault`, which skips the 4-byte instruction.
    unsafe { core::arch::asm!("mov r13, qword ptr [r12 + 0]", in("r12") va, out("r13") value, options(nostack)) };
    if FAULTS.load(Ordering::Relaxed) == before { Some(value) } else { None }
}

fn keys(env: &Env) -> Result<(), &'static str> {
    set_handler(UpcallKind::PageFault, on_probe_fault).map_err(|_| "register handler")?;
    let va = DYNAMIC_BASE;
    let (pa, key) = syscall::frame_alloc(0, rights::ALL).map_err(|_| "alloc")?;
    syscall::map(va, key, map_flags::WRITE).map_err(|_| "map")?;
    if !probe_write(va, 0x1234_5678) || probe_read(va) != Some(0x1234_5678) {
        return Err("mapped page not usable");
    }
    println!("check alloc+map+use -> ok (frame {:#x})", pa);
    let info = syscall::frame_query(key).map_err(|_| "query")?;
    if info.frame_pa != pa || info.owner != 1 || info.rights != rights::ALL {
        return Err("query disagrees");
    }
    println!("check query -> ok");

    // Forged and flipped keys.
    expect_err("forged-key", syscall::map(va + PAGE, FrameKey { lo: 0x0123_4567_89ab_cdef, hi: 42 }, 0), Error::BadKey)?;
    for bit in [0u32, 7, 9, 33, 63] {
        let flipped = FrameKey { lo: key.lo ^ (1 << bit), hi: key.hi };
        expect_err("flipped-handle-bit", syscall::map(va + PAGE, flipped, 0), Error::BadKey)
            .or_else(|_| expect_err("flipped-handle-bit", syscall::map(va + PAGE, flipped, 0), Error::PermissionDenied))?;
    }
    for bit in [0u32, 31, 63] {
        let flipped = FrameKey { lo: key.lo, hi: key.hi ^ (1 << bit) };
        expect_err("flipped-mac-bit", syscall::map(va + PAGE, flipped, 0), Error::BadKey)?;
    }

    // A key minted for another environment is refused here.
    let other = if env.id == 1 { 2 } else { 1 };
    let foreign = syscall::frame_share(key, other, rights::READ).map_err(|_| "share to other env")?;
    expect_err("another-envs-key", syscall::map(va + PAGE, foreign, 0), Error::BadKey)?;

    // A read-only share to ourselves: no writable mapping, and writes fault.
    let read_only = syscall::frame_share(key, env.id, rights::READ).map_err(|_| "share to self")?;
    expect_err("writable-map-with-read-key", syscall::map(va + PAGE, read_only, map_flags::WRITE), Error::PermissionDenied)?;
    syscall::map(va + PAGE, read_only, 0).map_err(|_| "read-only map")?;
    if probe_read(va + PAGE) != Some(0x1234_5678) {
        return Err("read-only share does not see the data");
    }
    if probe_write(va + PAGE, 1) {
        return Err("wrote through a read-only share");
    }
    println!("check write-through-read-only-share -> faulted at {:#x}", LAST_FAULT.load(Ordering::Relaxed));
    expect_err("share-with-more-rights", syscall::frame_share(read_only, env.id, rights::ALL), Error::PermissionDenied)?;

    // Mapping rules.
    expect_err("map-outside-window", syscall::map(0x40_0000, key, 0), Error::BadAddress)?;
    expect_err("map-kernel-half", syscall::map(0xffff_8000_0000_0000, key, 0), Error::BadAddress)?;
    expect_err("map-misaligned", syscall::map(va + 8, key, 0), Error::Misaligned)?;
    expect_err("map-twice", syscall::map(va, key, 0), Error::AlreadyMapped)?;
    expect_err("map-bad-flags", syscall::map(va + 2 * PAGE, key, 0x80), Error::InvalidArgument)?;
    expect_err("alloc-no-rights", syscall::frame_alloc(0, 0), Error::InvalidArgument)?;
    expect_err("alloc-bad-out-ptr", unsafe_alloc_to(0xffff_8000_0000_0000), Error::BadAddress)?;
    expect_err("alloc-kernel-frame", syscall::frame_alloc(0x1000, rights::ALL), Error::NoMemory)?;

    // Free: every key to the frame goes stale, mappings go away.
    syscall::frame_free(key).map_err(|_| "free")?;
    if probe_read(va).is_some() || probe_read(va + PAGE).is_some() {
        return Err("page still mapped after free");
    }
    println!("check touch-after-free -> faulted");
    expect_err("stale-key-after-free", syscall::map(va + 3 * PAGE, key, 0), Error::BadKey)?;
    expect_err("stale-share-after-free", syscall::map(va + 3 * PAGE, read_only, 0), Error::BadKey)?;
    expect_err("double-free", syscall::frame_free(key), Error::BadKey)?;

    // A named frame: ask for the one just freed.
    let (again, key2) = syscall::frame_alloc(pa, rights::READ | rights::WRITE).map_err(|_| "named alloc")?;
    if again != pa {
        return Err("named frame differs");
    }
    expect_err("old-key-on-reallocated-frame", syscall::map(va, key, 0), Error::BadKey)?;
    syscall::map(va, key2, map_flags::WRITE).map_err(|_| "map named")?;
    if probe_read(va) != Some(0) {
        return Err("reallocated frame not zeroed");
    }
    println!("check named-frame -> ok, zeroed");
    expect_err("named-frame-in-use", syscall::frame_alloc(pa, rights::ALL), Error::NoMemory)?;
    println!("keys: all checks passed");
    Ok(())
}

fn unsafe_alloc_to(out: u64) -> Result<u64, Error> {
    // SAFETY: the out pointer is hostile on purpose; the kernel checks it.
    syscall::decode(unsafe { syscall::raw6(syscall::nr::FRAME_ALLOC, 0, rights::ALL, out, 0, 0, 0) })
}

fn stlb(env: &Env) -> Result<(), &'static str> {
    set_handler(UpcallKind::PageFault, on_probe_fault).map_err(|_| "register handler")?;
    let pages = env.tlb_slots * 4;
    for i in 0..pages {
        let (_, key) = syscall::frame_alloc(0, rights::ALL).map_err(|_| "alloc")?;
        syscall::map(DYNAMIC_BASE + i * PAGE, key, map_flags::WRITE).map_err(|_| "map")?;
        if !probe_write(DYNAMIC_BASE + i * PAGE, i) {
            return Err("fresh mapping faulted");
        }
    }
    let before = syscall::stats().map_err(|_| "stats")?;
    let faults_before = FAULTS.load(Ordering::Relaxed);
    for i in 0..pages {
        if probe_read(DYNAMIC_BASE + i * PAGE) != Some(i) {
            return Err("page lost its contents");
        }
    }
    let after = syscall::stats().map_err(|_| "stats")?;
    let in_slots = (0..pages)
        .filter(|i| syscall::map_query(DYNAMIC_BASE + i * PAGE, false).unwrap_or(0) & map_bits::IN_SLOT != 0)
        .count();
    println!(
        "stlb: {} pages over {} slots: {} stlb hits, {} upcalls, {} faults seen by the libOS, {} pages in slots now",
        pages,
        env.tlb_slots,
        after.stlb_hits - before.stlb_hits,
        after.upcalls - before.upcalls,
        FAULTS.load(Ordering::Relaxed) - faults_before,
        in_slots
    );
    if after.stlb_hits - before.stlb_hits < pages - env.tlb_slots || after.upcalls != before.upcalls {
        return Err("evicted pages did not refill from the software TLB");
    }
    if in_slots as u64 > env.tlb_slots {
        return Err("more mappings in slots than the bound");
    }
    Ok(())
}

fn guaranteed() -> Result<(), &'static str> {
    set_handler(UpcallKind::PageFault, on_probe_fault).map_err(|_| "register handler")?;
    let pinned = DYNAMIC_BASE;
    let ordinary = DYNAMIC_BASE + PAGE;
    let (_, k1) = syscall::frame_alloc(0, rights::ALL).map_err(|_| "alloc")?;
    let (_, k2) = syscall::frame_alloc(0, rights::ALL).map_err(|_| "alloc")?;
    syscall::map(pinned, k1, map_flags::WRITE | map_flags::GUARANTEED).map_err(|_| "map pinned")?;
    syscall::map(ordinary, k2, map_flags::WRITE).map_err(|_| "map ordinary")?;
    let mut present_after_switch = 0;
    let mut ordinary_dropped = 0;
    for _ in 0..20 {
        probe_write(ordinary, 1);
        let switches = syscall::stats().map_err(|_| "stats")?.context_switches;
        syscall::yield_now();
        if syscall::stats().map_err(|_| "stats")?.context_switches == switches {
            continue; // nobody else ran
        }
        // Right after the switch, before touching anything:
        let p = syscall::map_query(pinned, false).map_err(|_| "query")?;
        let o = syscall::map_query(ordinary, false).map_err(|_| "query")?;
        if p & map_bits::IN_SLOT == 0 {
            return Err("guaranteed mapping missing after a switch");
        }
        present_after_switch += 1;
        if o & map_bits::IN_SLOT == 0 {
            ordinary_dropped += 1;
        }
    }
    println!(
        "guaranteed: present after {} of {} switches; the ordinary mapping was dropped after {}",
        present_after_switch, present_after_switch, ordinary_dropped
    );
    if present_after_switch == 0 {
        return Err("no context switch observed");
    }
    Ok(())
}

/// Grab pool frames beyond the quota and never answer revocation.
fn hog(tsc_hz: u64) -> Result<(), &'static str> {
    set_handler(UpcallKind::PageFault, on_probe_fault).map_err(|_| "register handler")?;
    let mut held = 0u64;
    let mut keys = alloc::vec::Vec::new();
    loop {
        match syscall::frame_alloc(0, rights::ALL) {
            Ok((pa, key)) => {
                syscall::map(DYNAMIC_BASE + held * PAGE, key, map_flags::WRITE).map_err(|_| "map")?;
                keys.push((pa, key));
                held += 1;
            }
            Err(Error::NoMemory) | Err(Error::QuotaExceeded) | Err(Error::Again) => break,
            Err(_) => return Err("alloc"),
        }
    }
    println!("hog: holding {} frames; ignoring revocation", held);
    // SAFETY: the kernel maps the repossession vector read-only for us.
    let vector = unsafe { &*(REPOSSESSION_ADDR as *const RepossessionVector) };
    // Wait (yielding) until the kernel took frames, for at most ~2 s.
    let give_up = shared_abi::rt::rdtsc() + tsc_hz * 2;
    while vector.count == 0 && shared_abi::rt::rdtsc() < give_up {
        syscall::yield_now();
    }
    let count = vector.count;
    let first = vector.entries[0];
    println!("hog: repossession vector records {} frame(s); first frame {:#x} was mapped at {:#x}", count, first.frame_pa, first.va);
    // The repossessed page is gone from the slots and the software TLB.
    if count > 0 {
        let bits = syscall::map_query(first.va, false).unwrap_or(u64::MAX);
        println!("hog: map_query of a repossessed page -> {:#x}", bits);
        if bits != 0 {
            return Err("repossessed page still mapped");
        }
        // Touching it faults: gone from the slots and the software TLB.
        if probe_read(first.va).is_some() {
            return Err("touched a repossessed page without a fault");
        }
        println!("check touch-after-revoke -> faulted");
        // The key from before the revocation is stale.
        let (_, old_key) = *keys.iter().find(|(pa, _)| *pa == first.frame_pa).ok_or("no key for that frame")?;
        expect_err("stale-key-after-revoke", syscall::map(DYNAMIC_BASE + 4096 * PAGE, old_key, 0), Error::BadKey)?;
    }
    Ok(())
}

/// Ask for `quota` frames while the pool is held by others, retrying on `Again`.
fn claim(env: &Env) -> Result<(), &'static str> {
    let want = env.quota_frames;
    let mut got = 0u64;
    let mut retries = 0u64;
    while got < want {
        match syscall::frame_alloc(0, rights::ALL) {
            Ok((_, key)) => {
                syscall::map(DYNAMIC_BASE + got * PAGE, key, map_flags::WRITE).map_err(|_| "map")?;
                got += 1;
            }
            Err(Error::Again) => {
                retries += 1;
                syscall::yield_now();
            }
            Err(error) => {
                println!("claim: frame_alloc -> {}", error.name());
                return Err("claim refused");
            }
        }
        if retries > 100_000 {
            return Err("claim starved");
        }
    }
    println!("claim: got my quota of {} frames after {} retries", got, retries);
    Ok(())
}
