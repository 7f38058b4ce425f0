//! Fast paths stay correct. Exceptions and page faults delivered straight
//! from the kernel's entry stubs carry the right registers, vector, error
//! code and address, and a handler's edits reach the resumed code;
//! software-TLB refills after a switch (served by the page-fault stub's
//! call into the kernel) bring back the right frames; a key is refused once
//! its frame is freed, even after the frame comes back under a new key; a
//! frame reaches its next owner zeroed.
//!
//! Prints `fastpath: <check> ok` per check and `fastpath: done failures=N`.
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};
use libos_runtime::println;
use libos_runtime::rt::{set_handler, Env};
use libos_runtime::start::DYNAMIC_BASE;
use libos_runtime::syscall::{self, map_flags, rights, Error, FrameKey};
use libos_runtime::upcall::{Regs, UpcallFrame, UpcallKind};

libos_runtime::libos_main!(main);

const PAGE: u64 = 4096;
/// rbx and rbp are checked after resume with `cmp reg, imm32`.
const RBX: u64 = 0x1bb0_0001;
const RBP: u64 = 0x1bb0_0006;
/// Read-fault page (not present), write-fault page (read-only), both in the
/// dynamic window, and a page outside it that is never mapped.
const READ_VA: u64 = DYNAMIC_BASE + 0x40_0000;
const WRITE_VA: u64 = DYNAMIC_BASE + 0x41_0000;
const OUTSIDE_VA: u64 = 0x0000_7800_0000_0000;
static SAFE_WORD: u64 = 0x5afe_5afe;

/// What the resumed code must see, and what the handler must see.
fn pattern(r12: u64) -> Regs {
    Regs {
        rax: 0xa0a0_0000_0000_00a0,
        rbx: RBX,
        rcx: 0xc0c0_0000_0000_00c0,
        rdx: 0xd0d0_0000_0000_00d0,
        rsi: 0x5151_0000_0000_0051,
        rdi: 0xd1d1_0000_0000_00d1,
        rbp: RBP,
        r8: 0x0808_0000_0000_0008,
        r9: 0x0909_0000_0000_0009,
        r10: 0x1010_0000_0000_0010,
        r11: 0x1111_0000_0000_0011,
        r12,
        r13: 0x1313_0000_0000_0013,
        r14: 0x1414_0000_0000_0014,
        r15: 0x1515_0000_0000_0015,
    }
}

/// The handler's findings about the last upcall.
static SEEN_VECTOR: AtomicU64 = AtomicU64::new(0);
static SEEN_ERROR: AtomicU64 = AtomicU64::new(0);
static SEEN_ADDR: AtomicU64 = AtomicU64::new(0);
static SEEN_KIND: AtomicU64 = AtomicU64::new(0);
/// 1 if every register in the frame matched `EXPECT_R12`'s pattern.
static REGS_OK: AtomicU64 = AtomicU64::new(0);
static EXPECT_R12: AtomicU64 = AtomicU64::new(0);
static KEY_LO: AtomicU64 = AtomicU64::new(0);
static KEY_HI: AtomicU64 = AtomicU64::new(0);
static mut BAD_RBX: u8 = 0;
static mut BAD_RBP: u8 = 0;

fn regs_match(a: &Regs, b: &Regs) -> bool {
    let x = [a.rax, a.rbx, a.rcx, a.rdx, a.rsi, a.rdi, a.rbp, a.r8, a.r9, a.r10, a.r11, a.r12, a.r13, a.r14, a.r15];
    let y = [b.rax, b.rbx, b.rcx, b.rdx, b.rsi, b.rdi, b.rbp, b.r8, b.r9, b.r10, b.r11, b.r12, b.r13, b.r14, b.r15];
    x == y
}

fn record(frame: &mut UpcallFrame) {
    SEEN_KIND.store(frame.kind, Ordering::Relaxed);
    SEEN_VECTOR.store(frame.vector, Ordering::Relaxed);
    SEEN_ERROR.store(frame.error_code, Ordering::Relaxed);
    SEEN_ADDR.store(frame.fault_addr, Ordering::Relaxed);
    let ok = regs_match(&frame.regs, &pattern(EXPECT_R12.load(Ordering::Relaxed)));
    REGS_OK.store(ok as u64, Ordering::Relaxed);
    // An edit the resumed code must see.
    frame.regs.r15 ^= 0xff;
}

fn on_exception(frame: &mut UpcallFrame) {
    record(frame);
    if frame.vector == 6 {
        frame.rip += 2; // step over ud2
    }
}

fn on_page_fault(frame: &mut UpcallFrame) {
    record(frame);
    let page = frame.fault_addr & !(PAGE - 1);
    if page == READ_VA {
        // Demand-zero: a fresh frame.
        if let Ok((_, key)) = syscall::frame_alloc(0, rights::READ | rights::WRITE) {
            let _ = syscall::map(page, key, map_flags::WRITE);
            KEY_LO.store(key.handle, Ordering::Relaxed);
            KEY_HI.store(key.mac, Ordering::Relaxed);
        }
    } else if page == WRITE_VA {
        // Upgrade the read-only mapping in place (`map(REPLACE)` of the
        // same frame: the kernel rewrites the entry where it is).
        let key = FrameKey { handle: KEY_LO.load(Ordering::Relaxed), mac: KEY_HI.load(Ordering::Relaxed) };
        let _ = syscall::map(page, key, map_flags::WRITE | map_flags::REPLACE);
    } else {
        // Outside the window: retry the load from a mapped word.
        frame.regs.r12 = core::ptr::addr_of!(SAFE_WORD) as u64;
    }
}

/// Load every register from the pattern, run `$trap`, and return the
/// registers the resumed code sees (rbx and rbp are compared in place).
macro_rules! run_with_pattern {
    ($trap:literal, $r12:expr) => {{
        let p = pattern($r12);
        EXPECT_R12.store($r12, Ordering::Relaxed);
        let mut out = p;
        // SAFETY: every register the block changes is an operand or saved
        // and restored (rbx, rbp); the trap is resumed by the handlers above.
        unsafe {
            asm!(
                "push rbx",
                "push rbp",
                "mov rbx, {rbx}",
                "mov rbp, {rbp}",
                $trap,
                "cmp rbx, {rbx}",
                "setne byte ptr [rip + {bad_rbx}]",
                "cmp rbp, {rbp}",
                "setne byte ptr [rip + {bad_rbp}]",
                "pop rbp",
                "pop rbx",
                rbx = const RBX,
                rbp = const RBP,
                bad_rbx = sym BAD_RBX,
                bad_rbp = sym BAD_RBP,
                inout("rax") p.rax => out.rax,
                inout("rcx") p.rcx => out.rcx,
                inout("rdx") p.rdx => out.rdx,
                inout("rsi") p.rsi => out.rsi,
                inout("rdi") p.rdi => out.rdi,
                inout("r8") p.r8 => out.r8,
                inout("r9") p.r9 => out.r9,
                inout("r10") p.r10 => out.r10,
                inout("r11") p.r11 => out.r11,
                inout("r12") p.r12 => out.r12,
                inout("r13") p.r13 => out.r13,
                inout("r14") p.r14 => out.r14,
                inout("r15") p.r15 => out.r15,
            );
        }
        // SAFETY: plain reads of flags only the block above writes.
        let rbx_rbp_ok = unsafe { core::ptr::read_volatile(&raw const BAD_RBX) == 0 && core::ptr::read_volatile(&raw const BAD_RBP) == 0 };
        (out, rbx_rbp_ok)
    }};
}

struct Checks {
    failures: u32,
}

impl Checks {
    fn check(&mut self, name: &str, ok: bool, detail: core::fmt::Arguments) {
        if ok {
            println!("fastpath: {} ok", name);
        } else {
            self.failures += 1;
            println!("fastpath: FAIL {}: {}", name, detail);
        }
    }
}

/// After the trap: the handler saw the pattern, the resumed code sees the
/// pattern with the handler's edits (`want`).
/// `fault` is the (kind, vector, error code, address) the handler must see.
fn upcall_check(checks: &mut Checks, name: &str, got: (Regs, bool), want: Regs, fault: (u64, u64, u64, u64)) {
    let (out, rbx_rbp_ok) = got;
    let seen = (
        SEEN_KIND.load(Ordering::Relaxed),
        SEEN_VECTOR.load(Ordering::Relaxed),
        SEEN_ERROR.load(Ordering::Relaxed),
        SEEN_ADDR.load(Ordering::Relaxed),
    );
    let frame_ok = REGS_OK.load(Ordering::Relaxed) == 1;
    let resumed_ok = regs_match(&Regs { rbx: RBX, rbp: RBP, ..out }, &want) && rbx_rbp_ok;
    checks.check(
        name,
        frame_ok && resumed_ok && seen == fault,
        format_args!(
            "handler saw the registers: {}; resumed with the edited registers: {}; (kind, vector, error, addr) = {:x?}, want {:x?}",
            frame_ok,
            resumed_ok,
            seen,
            fault
        ),
    );
    REGS_OK.store(0, Ordering::Relaxed);
    SEEN_KIND.store(0, Ordering::Relaxed);
}

fn main(env: &Env) -> i32 {
    if env.args.trim() == "partner" {
        // Someone to switch to: yield until the checks end.
        while syscall::stats().map(|s| s.envs_ended).unwrap_or(1) == 0 {
            syscall::yield_now();
        }
        return 0;
    }
    set_handler(UpcallKind::Exception, on_exception).expect("exception handler");
    set_handler(UpcallKind::PageFault, on_page_fault).expect("page-fault handler");
    let mut checks = Checks { failures: 0 };
    let exception = UpcallKind::Exception as u64;
    let page_fault = UpcallKind::PageFault as u64;
    let edited = |r12: u64| Regs { r15: pattern(r12).r15 ^ 0xff, ..pattern(r12) };

    // Exceptions: int3 (a trap, resumes after it) and ud2 (stepped over).
    let got = run_with_pattern!("int3", 0x1212_0000_0000_0012);
    upcall_check(&mut checks, "int3", got, edited(0x1212_0000_0000_0012), (exception, 3, 0, 0));
    let got = run_with_pattern!("ud2", 0x1212_0000_0000_0012);
    upcall_check(&mut checks, "ud2", got, edited(0x1212_0000_0000_0012), (exception, 6, 0, 0));

    // A read of a not-present page in the dynamic window (software-TLB
    // miss, then the upcall from the stub): the handler maps a fresh frame,
    // the load is retried and reads its zero.
    let got = run_with_pattern!("mov r13, qword ptr [r12]", READ_VA);
    let want = Regs { r13: 0, ..edited(READ_VA) };
    upcall_check(&mut checks, "read_fault_in_window", got, want, (page_fault, 14, 4, READ_VA));

    // A write to a read-only page in the window (present fault): the
    // handler upgrades the mapping and the store is retried.
    let key = FrameKey { handle: KEY_LO.load(Ordering::Relaxed), mac: KEY_HI.load(Ordering::Relaxed) };
    syscall::map(WRITE_VA, key, 0).expect("map read-only");
    let got = run_with_pattern!("mov qword ptr [r12], r13", WRITE_VA);
    upcall_check(&mut checks, "write_fault_in_window", got, edited(WRITE_VA), (page_fault, 14, 7, WRITE_VA));
    // SAFETY: READ_VA and WRITE_VA map the same frame (the handler mapped both).
    let stored = unsafe { core::ptr::read_volatile(READ_VA as *const u64) };
    checks.check("write_reached_the_frame", stored == pattern(0).r13, format_args!("read back {:#x}", stored));

    // A fault outside the window: the handler points r12 at a mapped word.
    let got = run_with_pattern!("mov r13, qword ptr [r12]", OUTSIDE_VA);
    let want = Regs { r12: core::ptr::addr_of!(SAFE_WORD) as u64, r13: SAFE_WORD, ..edited(OUTSIDE_VA) };
    upcall_check(&mut checks, "read_fault_outside_window", got, want, (page_fault, 14, 4, OUTSIDE_VA));
    let _ = syscall::unmap(WRITE_VA);
    let _ = syscall::unmap(READ_VA);
    let _ = syscall::frame_free(key);

    stlb_refills(&mut checks, env.param("policy").unwrap_or("flush"));
    keys_and_zeroing(&mut checks);
    println!("fastpath: done failures={}", checks.failures);
    if checks.failures == 0 {
        0
    } else {
        1
    }
}

/// Pages written with distinct values, a switch (under `stlb` the kernel
/// drops them from the page tables), then every page read back: each must
/// come back through a refill with its own frame's contents.
fn stlb_refills(checks: &mut Checks, policy: &str) {
    const PAGES: u64 = 64;
    let base = DYNAMIC_BASE + 0x100_0000;
    let mut keys = [FrameKey::default(); PAGES as usize];
    for i in 0..PAGES {
        let (_, key) = syscall::frame_alloc(0, rights::READ | rights::WRITE).expect("frame");
        syscall::map(base + i * PAGE, key, map_flags::WRITE).expect("map");
        // SAFETY: just mapped writable.
        unsafe { core::ptr::write_volatile((base + i * PAGE + 8 * i) as *mut u64, 0xf00d_0000 + i) };
        keys[i as usize] = key;
    }
    let before = syscall::stats().unwrap_or_default();
    syscall::yield_now();
    let mut wrong = 0;
    for i in 0..PAGES {
        // SAFETY: mapped above (refilled from the software TLB if dropped).
        let value = unsafe { core::ptr::read_volatile((base + i * PAGE + 8 * i) as *const u64) };
        if value != 0xf00d_0000 + i {
            wrong += 1;
        }
    }
    let after = syscall::stats().unwrap_or_default();
    let hits = after.stlb_hits - before.stlb_hits;
    let upcalls = after.upcalls - before.upcalls;
    let refilled_ok = if policy == "stlb" { hits >= PAGES && upcalls == 0 } else { true };
    checks.check(
        "stlb_refills_bring_back_the_right_frames",
        wrong == 0 && refilled_ok,
        format_args!("{} pages wrong; policy {}, {} software-TLB hits, {} upcalls", wrong, policy, hits, upcalls),
    );
    for (i, key) in keys.iter().enumerate() {
        let _ = syscall::unmap(base + i as u64 * PAGE);
        let _ = syscall::frame_free(*key);
    }
}

/// Words of the mapped page at `va` that are not zero.
fn nonzero_words(va: u64) -> usize {
    // SAFETY: the caller mapped the page at `va` readable.
    (0..512).filter(|w| unsafe { core::ptr::read_volatile((va + w * 8) as *const u64) } != 0).count()
}

/// A key dies with its frame; the frame comes back zeroed.
fn keys_and_zeroing(checks: &mut Checks) {
    let va = DYNAMIC_BASE + 0x200_0000;
    let (pa, old) = syscall::frame_alloc(0, rights::READ | rights::WRITE).expect("frame");
    syscall::map(va, old, map_flags::WRITE).expect("map");
    for w in 0..512 {
        // SAFETY: mapped writable just above.
        unsafe { core::ptr::write_volatile((va + w * 8) as *mut u64, 0xdead_beef_0000_0000 | w) };
    }
    syscall::unmap(va).expect("unmap");
    syscall::frame_free(old).expect("free");
    let stale_free = syscall::frame_free(old);
    let stale_map = syscall::map(va, old, map_flags::WRITE);
    checks.check(
        "freed_key_refused",
        stale_free == Err(Error::BadKey) && stale_map == Err(Error::BadKey),
        format_args!("free {:?}, map {:?}", stale_free, stale_map),
    );
    // The same frame again, under a new key: the old key stays dead.
    match syscall::frame_alloc(pa, rights::READ | rights::WRITE) {
        Ok((again, new)) => {
            let stale = syscall::map(va, old, map_flags::WRITE);
            let fresh = syscall::map(va, new, map_flags::WRITE);
            // Mapped by `fresh` if it succeeded (checked first).
            let nonzero = if fresh.is_ok() { nonzero_words(va) } else { 512 };
            checks.check(
                "reallocated_frame_new_key_only_and_zeroed",
                again == pa && stale == Err(Error::BadKey) && fresh.is_ok() && nonzero == 0,
                format_args!(
                    "frame {:#x} (was {:#x}), old key {:?}, new key {:?}, {} nonzero words",
                    again, pa, stale, fresh, nonzero
                ),
            );
            let _ = syscall::unmap(va);
            let _ = syscall::frame_free(new);
        }
        Err(e) => checks.check(
            "reallocated_frame_new_key_only_and_zeroed",
            false,
            format_args!("frame_alloc({:#x}): {:?}", pa, e),
        ),
    }
    // Any frame: zero when it arrives (from the scrubbed stash or zeroed now).
    let mut nonzero = 0;
    for _ in 0..16 {
        let (_, key) = syscall::frame_alloc(0, rights::READ | rights::WRITE).expect("frame");
        syscall::map(va, key, map_flags::WRITE).expect("map");
        nonzero += nonzero_words(va);
        for w in 0..512 {
            // SAFETY: mapped writable just above; dirty it for the next round.
            unsafe { core::ptr::write_volatile((va + w * 8) as *mut u64, !0) };
        }
        let _ = syscall::unmap(va);
        let _ = syscall::frame_free(key);
    }
    checks.check("frames_arrive_zeroed", nonzero == 0, format_args!("{} nonzero words in 16 frames", nonzero));
}
