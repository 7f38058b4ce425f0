//! Memtest: frame keys and TLB slots under attack and under load. Modes:
//! `keys` (forged, flipped, foreign, stale and double-freed keys; named
//! frames; read-only shares; mapping rules), `stlb` (more pages than TLB
//! slots: evicted pages refill from the software TLB without upcalls),
//! `guaranteed` (guaranteed mappings are in their slots right after every
//! switch and touching them does not fault, while ordinary ones are
//! dropped and refault), `hog` (grab pool frames beyond the quota and ignore
//! revocation: the abort protocol takes them), `claim` (ask for the
//! quota while others hold the pool; `claim-later` first lets them borrow).
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::{AtomicU64, Ordering};
use guest_tests::expect_err;
use libos_runtime::frames::{self, AllocMapError};
use libos_runtime::println;
use libos_runtime::revocation::RepossessionReader;
use libos_runtime::rt::{set_handler, Env};
use libos_runtime::start::DYNAMIC_BASE;
use libos_runtime::syscall::{self, map_bits, map_flags, rights, Error, FrameKey};
use libos_runtime::upcall::{UpcallFrame, UpcallKind};

libos_runtime::libos_main!(main);

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
            let start = libos_runtime::rt::rdtsc();
            while libos_runtime::rt::rdtsc() - start < env.tsc_hz / 20 {
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
    if FAULTS.load(Ordering::Relaxed) == before {
        Some(value)
    } else {
        None
    }
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
    if info.frame_pa != pa || info.owner != 1 || info.rights != rights::ALL.word() {
        return Err("query disagrees");
    }
    println!("check query -> ok");

    // Forged and flipped keys.
    expect_err(
        "forged-key",
        syscall::map(va + PAGE, FrameKey { handle: 0x0123_4567_89ab_cdef, mac: 42 }, 0),
        Error::BadKey,
    )?;
    for bit in [0u32, 7, 9, 33, 63] {
        let flipped = FrameKey { handle: key.handle ^ (1 << bit), mac: key.mac };
        expect_err("flipped-handle-bit", syscall::map(va + PAGE, flipped, 0), Error::BadKey).or_else(|_| {
            expect_err("flipped-handle-bit", syscall::map(va + PAGE, flipped, 0), Error::PermissionDenied)
        })?;
    }
    for bit in [0u32, 31, 63] {
        let flipped = FrameKey { handle: key.handle, mac: key.mac ^ (1 << bit) };
        expect_err("flipped-mac-bit", syscall::map(va + PAGE, flipped, 0), Error::BadKey)?;
    }

    // A key minted for another environment is refused here.
    let other = if env.id == 1 { 2 } else { 1 };
    let foreign = syscall::frame_share(key, other, rights::READ).map_err(|_| "share to other env")?;
    expect_err("another-envs-key", syscall::map(va + PAGE, foreign, 0), Error::BadKey)?;

    // A read-only share to ourselves: no writable mapping, and writes fault.
    let read_only = syscall::frame_share(key, env.id, rights::READ).map_err(|_| "share to self")?;
    expect_err(
        "writable-map-with-read-key",
        syscall::map(va + PAGE, read_only, map_flags::WRITE),
        Error::PermissionDenied,
    )?;
    syscall::map(va + PAGE, read_only, 0).map_err(|_| "read-only map")?;
    if probe_read(va + PAGE) != Some(0x1234_5678) {
        return Err("read-only share does not see the data");
    }
    if probe_write(va + PAGE, 1) {
        return Err("wrote through a read-only share");
    }
    println!("check write-through-read-only-share -> faulted at {:#x}", LAST_FAULT.load(Ordering::Relaxed));
    expect_err(
        "share-with-more-rights",
        syscall::frame_share(read_only, env.id, rights::ALL),
        Error::PermissionDenied,
    )?;

    // Mapping rules.
    expect_err("map-outside-window", syscall::map(0x40_0000, key, 0), Error::BadAddress)?;
    expect_err("map-kernel-half", syscall::map(0xffff_8000_0000_0000, key, 0), Error::BadAddress)?;
    expect_err("map-misaligned", syscall::map(va + 8, key, 0), Error::Misaligned)?;
    expect_err("map-twice", syscall::map(va, key, 0), Error::AlreadyMapped)?;
    expect_err("map-bad-flags", syscall::map(va + 2 * PAGE, key, 0x80), Error::InvalidArgument)?;
    expect_err("alloc-no-rights", syscall::frame_alloc(0, syscall::Rights::NONE), Error::InvalidArgument)?;
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
    syscall::decode(unsafe { syscall::raw6(syscall::nr::FRAME_ALLOC, 0, rights::ALL.word(), out, 0, 0, 0) })
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

/// Page-fault upcalls on the guaranteed page in `guaranteed` mode.
static PINNED_UPCALLS: AtomicU64 = AtomicU64::new(0);

/// `on_probe_fault`, also counting the faults on the guaranteed page.
fn on_guaranteed_fault(frame: &mut UpcallFrame) {
    if frame.fault_addr & !(PAGE - 1) == DYNAMIC_BASE {
        PINNED_UPCALLS.fetch_add(1, Ordering::Relaxed);
    }
    on_probe_fault(frame);
}

/// Counted separately: yields tried, switches seen, and after each switch
/// whether each page was in its slot and what touching it cost.
#[derive(Default)]
struct GuaranteedCounts {
    attempts: u64,
    /// Yields during which the kernel switched to someone else and back.
    switches: u64,
    /// Switches after which the guaranteed page was still in its TLB slot.
    pinned_in_slot: u64,
    /// Touches of the guaranteed page right after a switch that the kernel
    /// counters could measure alone (no switch within the measurement).
    measured: u64,
    /// Page faults the kernel took (software-TLB refills included) while
    /// we touched the guaranteed page in those measurements.
    pinned_faults: u64,
    /// Switches after which the ordinary mapping had left its slot.
    ordinary_dropped: u64,
    /// Measured touches of the ordinary page that cost a fault: the same
    /// measurement shows a refill when there is one.
    ordinary_refaults: u64,
}

/// Page faults taken (by anyone) while `touch` runs, or None if a context
/// switch happened meanwhile, so the count may include other environments'.
fn faults_during(touch: impl FnOnce() -> bool) -> Result<(bool, Option<u64>), &'static str> {
    let before = syscall::stats().map_err(|_| "stats")?;
    let ok = touch();
    let after = syscall::stats().map_err(|_| "stats")?;
    let alone = after.context_switches == before.context_switches;
    Ok((ok, alone.then_some(after.page_faults - before.page_faults)))
}

fn guaranteed() -> Result<(), &'static str> {
    const ATTEMPTS: u64 = 40;
    set_handler(UpcallKind::PageFault, on_guaranteed_fault).map_err(|_| "register handler")?;
    let pinned = DYNAMIC_BASE;
    let ordinary = DYNAMIC_BASE + PAGE;
    let (_, k1) = syscall::frame_alloc(0, rights::ALL).map_err(|_| "alloc")?;
    let (_, k2) = syscall::frame_alloc(0, rights::ALL).map_err(|_| "alloc")?;
    syscall::map(pinned, k1, map_flags::WRITE | map_flags::GUARANTEED).map_err(|_| "map pinned")?;
    syscall::map(ordinary, k2, map_flags::WRITE).map_err(|_| "map ordinary")?;
    let mut counts = GuaranteedCounts::default();
    let mut stamp = 0x9a4e_0000u64;
    if !probe_write(pinned, stamp) {
        return Err("guaranteed page faulted when fresh");
    }
    for _ in 0..ATTEMPTS {
        counts.attempts += 1;
        // Both pages in their slots before the switch.
        if !probe_write(ordinary, counts.attempts) || probe_read(pinned) != Some(stamp) {
            return Err("a page faulted or lost its contents before the switch");
        }
        let switches = syscall::stats().map_err(|_| "stats")?.context_switches;
        syscall::yield_now();
        if syscall::stats().map_err(|_| "stats")?.context_switches == switches {
            continue; // nobody else ran
        }
        counts.switches += 1;
        // Right after the switch, before touching anything:
        let p = syscall::map_query(pinned, false).map_err(|_| "query")?;
        let o = syscall::map_query(ordinary, false).map_err(|_| "query")?;
        if p & map_bits::IN_SLOT != 0 {
            counts.pinned_in_slot += 1;
        }
        if o & map_bits::IN_SLOT == 0 {
            counts.ordinary_dropped += 1;
        }
        // Now touch the guaranteed page (read the last stamp, write a new
        // one): it must not fault, neither to us nor to a silent refill.
        let expected = stamp;
        stamp += 1;
        let (ok, faults) = faults_during(|| probe_read(pinned) == Some(expected) && probe_write(pinned, stamp))?;
        if !ok {
            return Err("the guaranteed page faulted or lost its contents after a switch");
        }
        if let Some(faults) = faults {
            counts.measured += 1;
            counts.pinned_faults += faults;
        }
        // The ordinary page, dropped by the switch, refaults (and is refilled).
        let (ok, faults) = faults_during(|| probe_read(ordinary) == Some(counts.attempts))?;
        if !ok {
            return Err("the ordinary page lost its contents");
        }
        if o & map_bits::IN_SLOT == 0 && faults.is_some_and(|f| f > 0) {
            counts.ordinary_refaults += 1;
        }
    }
    let pinned_upcalls = PINNED_UPCALLS.load(Ordering::Relaxed);
    println!(
        "guaranteed: attempts={} switches={} pinned_in_slot={} measured={} pinned_faults={} pinned_upcalls={} ordinary_dropped={} ordinary_refaults={}",
        counts.attempts,
        counts.switches,
        counts.pinned_in_slot,
        counts.measured,
        counts.pinned_faults,
        pinned_upcalls,
        counts.ordinary_dropped,
        counts.ordinary_refaults
    );
    if counts.switches == 0 {
        return Err("no context switch observed");
    }
    if counts.pinned_in_slot != counts.switches {
        return Err("guaranteed mapping missing from its slot after a switch");
    }
    if counts.pinned_faults != 0 || pinned_upcalls != 0 {
        return Err("the guaranteed page faulted after a switch");
    }
    if counts.measured == 0 {
        return Err("no touch of the guaranteed page could be measured alone");
    }
    if counts.ordinary_dropped == 0 || counts.ordinary_refaults == 0 {
        return Err("the ordinary mapping was never dropped and refaulted (policy not stlb?)");
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
    // Wait (yielding) until the kernel took frames, for at most ~2 s.
    let give_up = libos_runtime::rt::rdtsc() + tsc_hz * 2;
    while RepossessionReader::recorded() == 0 && libos_runtime::rt::rdtsc() < give_up {
        syscall::yield_now();
    }
    let mut reader = RepossessionReader::new();
    let mut taken = reader.new_entries();
    let count = reader.seen();
    let first = taken.next().unwrap_or_default();
    println!(
        "hog: repossession vector records {} frame(s); first frame {:#x} was mapped at {:#x}",
        count, first.frame_pa, first.va
    );
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

/// Ask for `quota` frames while the pool is held by others, retrying on
/// `Again`. The page tables the kernel builds for the mappings are charged
/// to the quota too, so the claim is complete when the frames charged
/// (mapped frames plus page tables) reach the quota.
fn claim(env: &Env) -> Result<(), &'static str> {
    let want = env.quota_frames;
    let charged = || syscall::env_info().map(|info| (info.frames_charged, info.page_table_frames)).unwrap_or((0, 0));
    let mut got = 0u64;
    let mut retries = 0u64;
    while charged().0 < want {
        // Both calls may answer `Again`: the frame, or a page table for the
        // mapping, waits for the pool. Yield and retry, 100000 times in all.
        let wait = || {
            if retries >= 100_000 {
                return false;
            }
            retries += 1;
            syscall::yield_now();
            true
        };
        match frames::alloc_map_waiting(DYNAMIC_BASE + got * PAGE, rights::ALL, map_flags::WRITE, wait) {
            Ok(_) => got += 1,
            Err(AllocMapError::Alloc(Error::Again)) => return Err("claim starved"),
            Err(AllocMapError::Alloc(error)) => {
                println!("claim: frame_alloc -> {}", error.name());
                return Err("claim refused");
            }
            Err(AllocMapError::Map(_)) => return Err("map"),
        }
    }
    let (total, tables) = charged();
    println!(
        "claim: got my quota of {} frames ({} mapped, {} page tables) after {} retries",
        total, got, tables, retries
    );
    Ok(())
}
