//! Attacker: legal system-call *sequences* that broke the kernel once, kept
//! as regressions, and a seeded random fuzzer. Each mode prints `PASS` or
//! `FAIL` lines and exits 0 only if the kernel held.
//!
//! Modes (the manifest's `args`, first word):
//! - `upcall-stack`: the upcall stack lives on a dynamic-window page; the
//!   page is remapped to another frame between two upcalls, and the old
//!   frame, allocated again by physical address and mapped elsewhere, must
//!   stay untouched (the kernel must not write through a stale translation).
//! - `grant-flood`: share one frame with ourselves until the kernel-memory
//!   budget says `no-memory`; freeing the frame gives it all back.
//! - `rmap-churn`: mappings the direct-mapped software TLB and the TLB slots
//!   both drop must not leave reverse-map entries behind.
//! - `page-tables`: map one frame 1 GiB apart across the dynamic window:
//!   the page tables this costs are charged to the pool, so `map` fails
//!   cleanly; `victim` (another env) holds half its quota through the
//!   attack and gets the rest while the attacker still holds its tables.
//! - `demux-flood`: the benchmark-only calls with huge counts are refused
//!   outside benchmark scenarios; `bench-bounds`: inside one, they are
//!   bounded.
//! - `children`: the calls that create and build environments at run time,
//!   with hostile arguments (another family's environments, keys the child
//!   does not hold, frames it does not own, writable code, too much quota)
//!   and legal sequences (a child killed with frames mapped, children that
//!   crash or spin, the environment table filled and emptied): every refusal
//!   has its error code and everything comes back.
//! - `dirty-range`: `map_query_range` with hostile arguments (unknown
//!   flags, counts of 0 and past 4096, misaligned, kernel and wrapping
//!   addresses, ranges straddling either end of the window, bitmap pointers
//!   that are null, in the kernel, misaligned, read-only, unmapped or whose
//!   second page is unmapped): each refused with its error and no bit
//!   cleared; then its answers checked (dirty and accessed bits, unknown
//!   pages, and a bit the MMU must set again after a clear, through both
//!   the invlpg and the full-flush path).
//! - `fuzz seed=S calls=N`: random raw system calls with hostile arguments
//!   mixed with valid call sequences.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use guest_tests::expect_err;
use libos_runtime::frames::{self, AllocMapError};
use libos_runtime::net::FilterId;
use libos_runtime::println;
use libos_runtime::revocation::{self, RepossessionReader};
use libos_runtime::rt::{rdtsc, set_handler, Env};
use libos_runtime::start::{DYNAMIC_BASE, DYNAMIC_END, REPOSSESSION_ADDR, STACK_SIZE, STACK_TOP, START_INFO_ADDR};
use libos_runtime::syscall::{self, decode, map_flags, nr, raw6, rights, Error, FrameKey, Rights, SlotKey};
use libos_runtime::upcall::{UpcallFrame, UpcallKind, UpcallTable, FRAME_SIZE};
use libos_runtime::USER_TOP;

libos_runtime::libos_main!(main);

const PAGE: u64 = 4096;
const GIB: u64 = 1 << 30;
/// An address in the kernel half.
const KERNEL_ADDR: u64 = 0xffff_8000_0000_0000;
/// Where the program is linked (its code is mapped read-only there).
const CODE_PAGE: u64 = 0x40_1000;

type Outcome = Result<(), &'static str>;

fn main(env: &Env) -> i32 {
    let mode = env.arg_words().next().unwrap_or("");
    if let Err(why) = setup_upcalls() {
        println!("{}: FAIL: cannot register upcalls: {}", mode, why);
        return 1;
    }
    let result = match mode {
        "upcall-stack" => upcall_stack(),
        "grant-flood" => grant_flood(env),
        "rmap-churn" => rmap_churn(env),
        "page-tables" => page_tables(env),
        "victim" => victim(env),
        "demux-flood" => demux_flood(),
        "bench-bounds" => bench_bounds(),
        "children" => children(env),
        "dirty-range" => dirty_range(),
        "bystander" => wait_control(1, env.tsc_hz).map(|()| println!("bystander: PASS: untouched")),
        "fuzz" => fuzz(env),
        other => {
            println!("unknown mode {:?}", other);
            Err("unknown mode")
        }
    };
    match result {
        Ok(()) => 0,
        Err(why) => {
            println!("{}: FAIL: {}", mode, why);
            1
        }
    }
}

/// `key=value` from the args words.
fn arg(env: &Env, key: &str) -> Option<u64> {
    env.arg_words().filter_map(|w| w.split_once('=')).find(|(k, _)| *k == key).and_then(|(_, v)| v.parse().ok())
}

fn info() -> Result<syscall::EnvInfo, &'static str> {
    syscall::env_info().map_err(|_| "env_info failed")
}

// ---------------------------------------------------------------------------
// Upcalls: our own entry (checks the frame is really where the kernel
// says, then runs the runtime's dispatcher and resume sequence), our own
// protected entry, and the handlers the dispatcher calls.

static INT3S: AtomicU64 = AtomicU64::new(0);
static UD2S: AtomicU64 = AtomicU64::new(0);
static FAULTS: AtomicU64 = AtomicU64::new(0);
static LAST_FAULT: AtomicU64 = AtomicU64::new(0);
/// Address of the last breakpoint upcall's frame (other upcalls, such as a
/// revocation nesting inside a handler, land elsewhere), and the page whose
/// content to report if a frame ever arrives empty.
static LAST_FRAME: AtomicU64 = AtomicU64::new(0);
static WATCH_PAGE: AtomicU64 = AtomicU64::new(0);

/// Heap upcall stack (the ordinary one).
static HEAP_STACK: AtomicU64 = AtomicU64::new(0);
const HEAP_STACK_LEN: u64 = 32 * 1024;

/// Marks a deliberate memory probe (in r14) for the page-fault handler.
const PROBE_MAGIC: u64 = 0x5052_4f42_4521_0001;
/// Marks a deliberate `ud2` (in r14) for the exception handler.
const UD2_MAGIC: u64 = 0x5544_3221_0000_0002;

extern "C" {
    fn attacker_upcall_entry();
}

// rsp = rdi = the frame. Check it first (rbx survives the call; the
// interrupted rbx is in the frame), then enter the runtime's trampoline,
// which dispatches to the handlers and resumes from the frame.
core::arch::global_asm!(
    ".globl attacker_upcall_entry",
    "attacker_upcall_entry:",
    "mov rbx, rdi",
    "call {check}",
    "mov rdi, rbx",
    "jmp upcall_entry",
    check = sym check_frame,
);

/// The frame the kernel says it wrote must be readable at `rsp` and sane.
/// If it is not (say the kernel wrote it into a stale frame), resuming
/// from it would jump to garbage: report and end instead.
extern "C" fn check_frame(frame: *const UpcallFrame) {
    // SAFETY: the kernel entered with rsp = rdi = this address; we only read.
    let f = unsafe { core::ptr::read_volatile(frame) };
    if f.kind == UpcallKind::Exception as u64 && f.vector == 3 {
        LAST_FRAME.store(frame as u64, Ordering::SeqCst);
    }
    if UpcallKind::from_raw(f.kind).is_none() || f.rip == 0 || f.rsp == 0 {
        let watch = WATCH_PAGE.load(Ordering::SeqCst);
        let mut nonzero = 0;
        if watch != 0 {
            for i in 0..512 {
                // SAFETY: the watched page is mapped (the mode mapped it before the upcall).
                if unsafe { core::ptr::read_volatile((watch + i * 8) as *const u64) } != 0 {
                    nonzero += 1;
                }
            }
        }
        println!(
            "upcall: FAIL: the upcall frame at {:#x} is not there (kind {} rip {:#x}); the watched page at {:#x} has {} nonzero words",
            frame as u64, f.kind, f.rip, watch, nonzero
        );
        syscall::exit(1);
    }
}

/// Messages received through the protected entry (any sender): a small
/// lock-free inbox of frame keys others shared with us, and counters.
const INBOX: usize = 16;
static INBOX_LO: [AtomicU64; INBOX] = [const { AtomicU64::new(0) }; INBOX];
static INBOX_HI: [AtomicU64; INBOX] = [const { AtomicU64::new(0) }; INBOX];
static INBOX_COUNT: AtomicU64 = AtomicU64::new(0);
static PCT_MSGS: AtomicU64 = AtomicU64::new(0);
/// Bit per control message received (MSG_GO, MSG_DONE).
static CONTROL: AtomicU64 = AtomicU64::new(0);
const TAG_KEY: u64 = 0x4b45_5900;
const TAG_CONTROL: u64 = 0x4354_4c00;
const MSG_GO: u64 = 1;
const MSG_DONE: u64 = 2;
const MSG_FINISHED: u64 = 4;

/// The protected entry. Runs in its own activation at any point of the
/// main code, so it touches only atomics (never the heap, whose lock the
/// interrupted code may hold).
extern "C" fn attacker_pct_entry(caller: u64, m0: u64, m1: u64, m2: u64, m3: u64, flags: u64) -> ! {
    PCT_MSGS.fetch_add(1, Ordering::SeqCst);
    if m0 == TAG_KEY {
        let at = INBOX_COUNT.fetch_add(1, Ordering::SeqCst) as usize % INBOX;
        INBOX_LO[at].store(m1, Ordering::SeqCst);
        INBOX_HI[at].store(m2, Ordering::SeqCst);
    } else if m0 == TAG_CONTROL {
        CONTROL.fetch_or(m1, Ordering::SeqCst);
    }
    syscall::pct_reply([m0 ^ m3, caller, flags, 0x5e7e])
}

fn on_exception(frame: &mut UpcallFrame) {
    match frame.vector {
        3 => {
            INT3S.fetch_add(1, Ordering::SeqCst);
        }
        6 if frame.regs.r14 == UD2_MAGIC => {
            UD2S.fetch_add(1, Ordering::SeqCst);
            frame.rip += 2;
        }
        vector => {
            println!("FAIL: unexpected exception {} at rip {:#x} (error {:#x})", vector, frame.rip, frame.error_code);
            syscall::exit(3);
        }
    }
}

fn on_page_fault(frame: &mut UpcallFrame) {
    if frame.regs.r14 == PROBE_MAGIC {
        LAST_FAULT.store(frame.fault_addr, Ordering::SeqCst);
        FAULTS.fetch_add(1, Ordering::SeqCst);
        frame.rip += 4;
        return;
    }
    println!(
        "FAIL: unexpected page fault at {:#x}, rip {:#x}, error {:#x}",
        frame.fault_addr, frame.rip, frame.error_code
    );
    syscall::exit(3);
}

/// Register our upcall table with the upcall stack at `[base, base + len)`
/// (`pct`: accept protected control transfers too).
fn install_upcalls_with(base: u64, len: u64, pct: bool) -> Result<(), Error> {
    let entry = attacker_upcall_entry as *const () as u64;
    let table = UpcallTable {
        exception_entry: entry,
        page_fault_entry: entry,
        interrupt_entry: 0,
        protected_entry: if pct { attacker_pct_entry as *const () as u64 } else { 0 },
        revocation_entry: entry,
        stack_base: base,
        stack_len: len,
    };
    // SAFETY: the entries handle every upcall kind they are registered for
    // and the stack is ours (the heap stack, or a page a mode mapped for it).
    unsafe { syscall::set_upcalls(&table) }.map(|_| ())
}

fn install_upcalls(base: u64, len: u64) -> Result<(), Error> {
    install_upcalls_with(base, len, true)
}

/// Back to the heap upcall stack.
fn install_heap_upcalls() -> Result<(), Error> {
    install_upcalls(HEAP_STACK.load(Ordering::SeqCst), HEAP_STACK_LEN)
}

fn setup_upcalls() -> Result<(), &'static str> {
    // The runtime's dispatcher calls these; then our table replaces the
    // runtime's registration (same dispatcher, our entry and stack).
    set_handler(UpcallKind::Exception, on_exception).map_err(|_| "exception handler")?;
    set_handler(UpcallKind::PageFault, on_page_fault).map_err(|_| "page-fault handler")?;
    // Revocation notices go to the runtime's inbox (`revocation::INBOX`):
    // the frames asked back and nobody has answered yet (an abort clears
    // them), and the counts of requests and aborts.
    revocation::listen().map_err(|_| "revocation handler")?;
    let layout = core::alloc::Layout::from_size_align(HEAP_STACK_LEN as usize, 16).map_err(|_| "layout")?;
    // SAFETY: a nonzero size; the block is never freed.
    let stack = unsafe { alloc::alloc::alloc_zeroed(layout) } as u64;
    if stack == 0 {
        return Err("no heap for the upcall stack");
    }
    HEAP_STACK.store(stack, Ordering::SeqCst);
    install_heap_upcalls().map_err(|_| "set_upcalls refused")
}

fn int3() {
    // SAFETY: a breakpoint trap; on_exception counts it and resumes after it.
    unsafe { core::arch::asm!("int3") };
}

fn ud2() {
    // SAFETY: on_exception sees the marker in r14 and skips the 2-byte ud2.
    unsafe { core::arch::asm!("ud2", in("r14") UD2_MAGIC) };
}

/// Write `value` at `va`; false if it faulted.
fn probe_write(va: u64, value: u64) -> bool {
    let before = FAULTS.load(Ordering::SeqCst);
    // SAFETY: a fault is caught by on_page_fault (marker in r14), which
    // skips this 4-byte instruction; va is never our own state.
    unsafe {
        core::arch::asm!("mov qword ptr [r12], r13", in("r12") va, in("r13") value, in("r14") PROBE_MAGIC, options(nostack))
    };
    FAULTS.load(Ordering::SeqCst) == before
}

/// Read the word at `va`, or None if it faulted.
fn probe_read(va: u64) -> Option<u64> {
    let before = FAULTS.load(Ordering::SeqCst);
    let value: u64;
    // SAFETY: as for probe_write.
    unsafe {
        core::arch::asm!("mov r13, qword ptr [r12]", in("r12") va, out("r13") value, in("r14") PROBE_MAGIC, options(nostack))
    };
    if FAULTS.load(Ordering::SeqCst) == before {
        Some(value)
    } else {
        None
    }
}

/// Words of the page at `va` that are not zero (None: it faulted).
fn nonzero_words(va: u64) -> Option<u64> {
    let mut count = 0;
    for i in 0..512 {
        if probe_read(va + i * 8)? != 0 {
            count += 1;
        }
    }
    Some(count)
}

// ---------------------------------------------------------------------------
// 1. upcall-stack

fn upcall_stack() -> Outcome {
    let low = DYNAMIC_BASE + 0x100 * PAGE; // the stack's lower page
    let top = low + PAGE; // the page the frames land on
    let elsewhere = DYNAMIC_BASE + 0x200 * PAGE;
    let (_, k0) = syscall::frame_alloc(0, rights::ALL).map_err(|_| "alloc low page")?;
    let (pa1, k1) = syscall::frame_alloc(0, rights::ALL).map_err(|_| "alloc F1")?;
    syscall::map(low, k0, map_flags::WRITE | map_flags::GUARANTEED).map_err(|_| "map low page")?;
    syscall::map(top, k1, map_flags::WRITE | map_flags::GUARANTEED).map_err(|_| "map F1")?;
    install_upcalls(low, 2 * PAGE).map_err(|_| "set_upcalls on the dynamic window")?;
    let expected_frame = top + PAGE - FRAME_SIZE as u64;

    int3();
    if INT3S.load(Ordering::SeqCst) != 1 || LAST_FRAME.load(Ordering::SeqCst) != expected_frame {
        return Err("first upcall not delivered on the dynamic-window stack");
    }
    println!("upcall-stack: first upcall frame at {:#x} in F1 {:#x}", expected_frame, pa1);

    // Swap the page under the (unchanged) registration: F1 goes, is
    // allocated again by address and mapped elsewhere (before F2 is taken,
    // so the allocator cannot hand F1 out as F2), and F2 takes the page.
    syscall::unmap(top).map_err(|_| "unmap F1")?;
    syscall::frame_free(k1).map_err(|_| "free F1")?;
    let (again, k1b) = match syscall::frame_alloc(pa1, rights::ALL) {
        Ok(got) => got,
        Err(error) => {
            println!("upcall-stack: frame_alloc(want_pa = F1 {:#x}) -> {}", pa1, error.name());
            return Err("could not allocate F1 again by address");
        }
    };
    if again != pa1 {
        return Err("named allocation returned another frame");
    }
    syscall::map(elsewhere, k1b, map_flags::WRITE).map_err(|_| "map F1 elsewhere")?;
    if nonzero_words(elsewhere) != Some(0) {
        return Err("F1 not zeroed on reallocation");
    }
    let (pa2, k2) = syscall::frame_alloc(0, rights::ALL).map_err(|_| "alloc F2")?;
    syscall::map(top, k2, map_flags::WRITE | map_flags::GUARANTEED).map_err(|_| "map F2")?;
    println!("upcall-stack: page remapped to F2 {:#x}; F1 {:#x} allocated again at {:#x}", pa2, pa1, elsewhere);
    WATCH_PAGE.store(elsewhere, Ordering::SeqCst);

    int3();
    let delivered = INT3S.load(Ordering::SeqCst) == 2 && LAST_FRAME.load(Ordering::SeqCst) == expected_frame;
    let f1_dirty = nonzero_words(elsewhere).ok_or("F1's page faulted")?;
    WATCH_PAGE.store(0, Ordering::SeqCst);
    install_heap_upcalls().map_err(|_| "restore upcalls")?;
    if !delivered {
        return Err("second upcall not delivered on the stack page");
    }
    if f1_dirty != 0 {
        println!("upcall-stack: F1 has {} nonzero words after the second upcall", f1_dirty);
        return Err("the kernel wrote the upcall frame into the old frame F1");
    }
    let frame_words = nonzero_words(top).ok_or("stack page faulted")?;
    if frame_words == 0 {
        return Err("the stack page (F2) holds no frame");
    }
    println!("upcall-stack: PASS: second upcall frame landed in F2 ({} nonzero words), F1 stayed zero", frame_words);
    for va in [low, top, elsewhere] {
        syscall::unmap(va).map_err(|_| "unmap")?;
    }
    for key in [k0, k2, k1b] {
        syscall::frame_free(key).map_err(|_| "free")?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// children

fn create(quota: u64, kmem_kib: u64, slots: u64, name: &str) -> Result<u64, Error> {
    syscall::env_create(quota, kmem_kib, slots, name)
}

/// A child with one code page at `PROGRAM_BASE` holding `code`, started
/// there with no upcall handlers.
fn start_code_child(code: &[u8]) -> Result<u64, &'static str> {
    use libos_runtime::start::PROGRAM_BASE;
    let child = create(8, 64, 8, "code").map_err(|_| "create a code child")?;
    let (_, key) = syscall::frame_alloc_for(child, rights::ALL).map_err(|_| "a frame for the child")?;
    syscall::env_map(child, PROGRAM_BASE, key, map_flags::EXEC | map_flags::GUARANTEED).map_err(|_| "map code")?;
    syscall::env_write(child, PROGRAM_BASE, code).map_err(|_| "write code")?;
    let regs = syscall::StartRegs { rip: PROGRAM_BASE, rsp: PROGRAM_BASE + PAGE, ..Default::default() };
    syscall::env_start(child, &regs, None).map_err(|_| "start")?;
    Ok(child)
}

/// How many environments own the frame of `key` (ours).
fn owners(key: FrameKey) -> Result<u64, &'static str> {
    syscall::frame_query(key).map(|i| i.owners).map_err(|_| "frame_query")
}

/// `env_map_batch` attacked: hostile children, counts, record arrays
/// (null, kernel, misaligned, read-only, straddling an unmapped page),
/// flags and keys; each record all or nothing, the call stopping at the
/// first that fails. The batch's child is killed at the end and must take
/// everything it got with it.
fn batch_attacks(sibling: u64) -> Outcome {
    use libos_runtime::start::PROGRAM_BASE;
    use syscall::{MapRecord, MAX_MAP_BATCH};
    // SAFETY: raw calls with hostile pointers: the kernel must refuse them.
    let raw = |n: u64, a: [u64; 6]| decode(unsafe { raw6(n, a[0], a[1], a[2], a[3], a[4], a[5]) });
    let child = create(8, 64, 8, "batch").map_err(|_| "create the batch child")?;
    let (_, mine) = syscall::frame_alloc(0, rights::ALL).map_err(|_| "alloc")?;
    let (_, theirs) = syscall::frame_alloc_for(child, rights::ALL).map_err(|_| "alloc for the batch child")?;
    let va = PROGRAM_BASE + 16 * PAGE;
    let co = |key: FrameKey, r: Rights, flags: u64| MapRecord::co_own(va, key, r, flags);
    let mut one = [co(mine, rights::READ, 0)];
    expect_err("env_map_batch-not-my-child", syscall::env_map_batch(sibling, &mut one), Error::PermissionDenied)?;
    expect_err("env_map_batch-no-such-env", syscall::env_map_batch(9999, &mut one), Error::NoSuchEnv)?;
    let mut many = [co(mine, rights::READ, 0); MAX_MAP_BATCH as usize + 1];
    expect_err("env_map_batch-over-the-bound", syscall::env_map_batch(child, &mut many), Error::BadLength)?;
    let ptr = many.as_mut_ptr() as u64;
    expect_err("env_map_batch-null-records", raw(nr::ENV_MAP_BATCH, [child, 0, 1, 0, 0, 0]), Error::BadAddress)?;
    expect_err(
        "env_map_batch-records-in-the-kernel",
        raw(nr::ENV_MAP_BATCH, [child, KERNEL_ADDR, 1, 0, 0, 0]),
        Error::BadAddress,
    )?;
    expect_err(
        "env_map_batch-misaligned-records",
        raw(nr::ENV_MAP_BATCH, [child, ptr + 4, 1, 0, 0, 0]),
        Error::Misaligned,
    )?;
    expect_err(
        "env_map_batch-records-wrap",
        raw(nr::ENV_MAP_BATCH, [child, u64::MAX - 31, 1, 0, 0, 0]),
        Error::BadAddress,
    )?;
    if syscall::env_map_batch(child, &mut []) != Ok(0) {
        return Err("an empty batch is not 0");
    }
    // Records in the top page of our stack, running on into the unmapped
    // page above it, and in the read-only repossession page: refused before
    // any record is acted on (whatever the bytes there say).
    expect_err(
        "env_map_batch-records-straddle-an-unmapped-page",
        raw(nr::ENV_MAP_BATCH, [child, STACK_TOP - 32, 2, 0, 0, 0]),
        Error::BadAddress,
    )?;
    expect_err(
        "env_map_batch-read-only-records",
        raw(nr::ENV_MAP_BATCH, [child, REPOSSESSION_ADDR, 1, 0, 0, 0]),
        Error::BadAddress,
    )?;
    if owners(mine)? != 1 {
        return Err("a refused record array made the child a co-owner");
    }
    // Hostile records.
    let mut bad = [MapRecord { va, flags: 1 << 12, key: theirs }];
    expect_err("env_map_batch-unknown-flag", syscall::env_map_batch(child, &mut bad), Error::InvalidArgument)?;
    let mut bad = [MapRecord { va, flags: (rights::READ.bits() as u64) << 16, key: theirs }];
    expect_err("env_map_batch-rights-without-co-own", syscall::env_map_batch(child, &mut bad), Error::InvalidArgument)?;
    let mut bad = [MapRecord::map(va, mine, 0)];
    expect_err("env_map_batch-my-own-key", syscall::env_map_batch(child, &mut bad), Error::BadKey)?;
    let mut bad = [co(theirs, rights::READ, 0)];
    expect_err("env_map_batch-co-own-the-childs-key", syscall::env_map_batch(child, &mut bad), Error::BadKey)?;
    let own_share = syscall::frame_share(mine, syscall::env_info().map_err(|_| "info")?.env_id, rights::ALL)
        .map_err(|_| "share to myself")?;
    let mut bad = [co(own_share, rights::READ, 0)];
    expect_err("env_map_batch-co-own-with-a-share", syscall::env_map_batch(child, &mut bad), Error::PermissionDenied)?;
    let wx = map_flags::WRITE | map_flags::EXEC | map_flags::GUARANTEED;
    let mut bad = [co(mine, rights::ALL, wx)];
    expect_err("env_map_batch-writable-code", syscall::env_map_batch(child, &mut bad), Error::InvalidArgument)?;
    let mut bad = [MapRecord { va: KERNEL_ADDR, ..co(mine, rights::READ, 0) }];
    expect_err("env_map_batch-into-the-kernel-half", syscall::env_map_batch(child, &mut bad), Error::BadAddress)?;
    // Minted, then the mapping fails: the child's new key goes again.
    let mut bad = [co(mine, rights::READ, map_flags::WRITE)];
    expect_err(
        "env_map_batch-read-only-key-mapped-writable",
        syscall::env_map_batch(child, &mut bad),
        Error::PermissionDenied,
    )?;
    let mut bad = [co(mine, Rights::NONE, 0)];
    expect_err("env_map_batch-key-without-read", syscall::env_map_batch(child, &mut bad), Error::PermissionDenied)?;
    if owners(mine)? != 1 {
        return Err("a refused record left the child a co-owner");
    }
    // A good record, then a bad one: 1 done (its key handed back), and the
    // call that starts with the bad one reports it.
    let mut pair = [co(mine, rights::READ, 0), MapRecord::map(va + PAGE, mine, 0)];
    if syscall::env_map_batch(child, &mut pair) != Ok(1) {
        return Err("a good record then a bad one did not return 1");
    }
    if pair[0].key == mine || owners(mine)? != 2 {
        return Err("the done record's key was not the child's");
    }
    expect_err("env_map_batch-the-failing-record", syscall::env_map_batch(child, &mut pair[1..]), Error::BadKey)?;
    let mut again = [co(mine, rights::READ, map_flags::REPLACE)];
    expect_err("env_map_batch-co-own-twice", syscall::env_map_batch(child, &mut again), Error::NoMemory)?;
    let mut taken = [MapRecord::map(va, theirs, 0)];
    expect_err("env_map_batch-already-mapped", syscall::env_map_batch(child, &mut taken), Error::AlreadyMapped)?;
    // Its quota (8 frames, page tables included) bounds what it co-owns.
    let mut keys = [FrameKey::default(); 8];
    let mut records = [MapRecord::default(); 8];
    for (i, (key, record)) in keys.iter_mut().zip(records.iter_mut()).enumerate() {
        *key = syscall::frame_alloc(0, rights::ALL).map_err(|_| "alloc")?.1;
        *record = MapRecord::co_own(va + (2 + i as u64) * PAGE, *key, rights::READ, 0);
    }
    let done = syscall::env_map_batch(child, &mut records).map_err(|_| "co-own up to the quota")?;
    let stop = syscall::env_map_batch(child, &mut records[done..]).err().unwrap_or(Error::InvalidArgument);
    println!("children: a batch co-owns {} frames, then {}", done, stop.name());
    if stop != Error::QuotaExceeded || done == 0 || done == records.len() {
        return Err("a batch did not stop at the child's quota");
    }
    // Ending the child takes every key and mapping the batches gave it.
    syscall::env_kill(child, 0).map_err(|_| "kill the batch child")?;
    let _ = syscall::env_reap();
    for key in keys {
        if owners(key)? != 1 {
            return Err("a co-owned frame outlived its co-owner's end as co-owned");
        }
        syscall::frame_free(key).map_err(|_| "free")?;
    }
    if owners(mine)? != 1 {
        return Err("the batch child's co-ownership outlived it");
    }
    syscall::frame_free(mine).map_err(|_| "free")?;
    println!("children: env_map_batch refused every hostile call");
    Ok(())
}

fn children(env: &Env) -> Outcome {
    use libos_runtime::start::PROGRAM_BASE;
    let sibling = env.id + 1; // the manifest boots another env after us
    let before = info()?;
    // Hostile arguments.
    // SAFETY: raw calls with hostile pointers: the kernel must refuse them.
    let raw = |n: u64, a: [u64; 6]| decode(unsafe { raw6(n, a[0], a[1], a[2], a[3], a[4], a[5]) });
    expect_err("env_create-null-spec", raw(nr::ENV_CREATE, [0; 6]), Error::BadAddress)?;
    expect_err("env_create-kernel-spec", raw(nr::ENV_CREATE, [KERNEL_ADDR, 0, 0, 0, 0, 0]), Error::BadAddress)?;
    expect_err("env_create-empty-name", create(1, 64, 4, ""), Error::BadLength)?;
    expect_err("env_create-long-name", create(1, 64, 4, "seventeen-chars!!"), Error::BadLength)?;
    expect_err("env_create-no-slots", create(1, 64, 0, "c"), Error::InvalidArgument)?;
    expect_err("env_create-huge-kmem", create(1, 1 << 40, 4, "c"), Error::InvalidArgument)?;
    expect_err("env_create-kmem-below-its-records", create(1, 16, 512, "c"), Error::InvalidArgument)?;
    expect_err("env_create-more-quota-than-mine", create(before.quota_frames + 1, 64, 4, "c"), Error::QuotaExceeded)?;
    expect_err("env_create-more-kmem-than-mine", create(1, 4096, 4, "c"), Error::NoMemory)?;
    let child = create(8, 64, 8, "child").map_err(|_| "create a child")?;
    let (_, mine) = syscall::frame_alloc(0, rights::ALL).map_err(|_| "alloc")?;
    let (_, theirs) = syscall::frame_alloc_for(child, rights::ALL).map_err(|_| "alloc for the child")?;
    let bad_rip = syscall::StartRegs { rip: KERNEL_ADDR, rsp: PROGRAM_BASE, ..Default::default() };
    expect_err("env_start-kernel-rip", syscall::env_start(child, &bad_rip, None), Error::BadAddress)?;
    expect_err("env_start-not-my-child", syscall::env_start(sibling, &bad_rip, None), Error::PermissionDenied)?;
    expect_err("env_start-no-such-env", syscall::env_start(9999, &bad_rip, None), Error::NoSuchEnv)?;
    expect_err("env_map-with-my-own-key", syscall::env_map(child, PROGRAM_BASE, mine, 0), Error::BadKey)?;
    expect_err("env_map-into-kernel-half", syscall::env_map(child, KERNEL_ADDR, theirs, 0), Error::BadAddress)?;
    expect_err("env_map-below-the-program-window", syscall::env_map(child, 0x1000, theirs, 0), Error::BadAddress)?;
    let wx = map_flags::WRITE | map_flags::EXEC | map_flags::GUARANTEED;
    expect_err("env_map-writable-code", syscall::env_map(child, PROGRAM_BASE, theirs, wx), Error::InvalidArgument)?;
    expect_err(
        "env_map-code-not-guaranteed",
        syscall::env_map(child, PROGRAM_BASE, theirs, map_flags::EXEC),
        Error::InvalidArgument,
    )?;
    expect_err(
        "map-code-in-a-booted-env",
        syscall::map(DYNAMIC_BASE, mine, map_flags::EXEC | map_flags::GUARANTEED),
        Error::InvalidArgument,
    )?;
    expect_err("env_map-into-a-sibling", syscall::env_map(sibling, PROGRAM_BASE, theirs, 0), Error::PermissionDenied)?;
    expect_err("env_write-unmapped", syscall::env_write(child, PROGRAM_BASE, &[1, 2, 3]), Error::BadAddress)?;
    expect_err(
        "env_write-too-long",
        raw(nr::ENV_WRITE, [child, PROGRAM_BASE, DYNAMIC_BASE, 64 * 1024 + 1, 0, 0]),
        Error::BadLength,
    )?;
    // A frame the child holds only a share of: not the parent's to write.
    let shared = syscall::frame_share(mine, child, rights::ALL).map_err(|_| "share to the child")?;
    syscall::env_map(child, PROGRAM_BASE + PAGE, shared, map_flags::WRITE).map_err(|_| "map the share")?;
    expect_err(
        "env_write-a-frame-the-child-does-not-own",
        syscall::env_write(child, PROGRAM_BASE + PAGE, &[9; 8]),
        Error::PermissionDenied,
    )?;
    syscall::env_map(child, PROGRAM_BASE, theirs, map_flags::WRITE).map_err(|_| "map the child's frame")?;
    syscall::env_write(child, PROGRAM_BASE + 100, &[7; 200]).map_err(|_| "env_write into the child's own frame")?;
    expect_err(
        "env_write-running-into-the-shared-page",
        syscall::env_write(child, PROGRAM_BASE + 4000, &[7; 200]),
        Error::PermissionDenied,
    )?;
    batch_attacks(sibling)?;
    expect_err("frame_alloc-for-a-sibling", syscall::frame_alloc_for(sibling, rights::ALL), Error::PermissionDenied)?;
    expect_err("frame_alloc-for-no-one", syscall::frame_alloc_for(9999, rights::ALL), Error::NoSuchEnv)?;
    let own_share = syscall::frame_share(mine, env.id, rights::ALL).map_err(|_| "share to myself")?;
    expect_err("co-own-with-a-share", syscall::frame_co_own(own_share, child, rights::READ), Error::PermissionDenied)?;
    expect_err("co-own-more-rights", syscall::frame_co_own(own_share, child, rights::ALL), Error::PermissionDenied)?;
    // The child's quota (8 frames) bounds what it co-owns.
    let mut co_owned = 0;
    let stop = loop {
        let (_, key) = match syscall::frame_alloc(0, rights::ALL) {
            Ok(got) => got,
            Err(error) => break error,
        };
        match syscall::frame_co_own(key, child, rights::READ) {
            Ok(_) => co_owned += 1,
            Err(error) => {
                let _ = syscall::frame_free(key);
                break error;
            }
        }
        // Our own key goes: the child keeps the frame alone.
        syscall::frame_free(key).map_err(|_| "let go of a co-owned frame")?;
    };
    println!("children: the child co-owns {} frames, then {}", co_owned, stop.name());
    if stop != Error::QuotaExceeded || co_owned == 0 {
        return Err("co-owning did not stop at the child's quota");
    }
    expect_err("env_kill-a-booted-env", syscall::env_kill(sibling, 9), Error::PermissionDenied)?;
    expect_err("env_kill-myself", syscall::env_kill(env.id, 9), Error::InvalidArgument)?;
    expect_err("env_wake-another-family", syscall::env_wake(sibling), Error::PermissionDenied)?;
    let mut buf = [0u8; 64];
    expect_err("archive_read-past-the-end", syscall::archive_read(1 << 40, &mut buf), Error::InvalidArgument)?;
    expect_err(
        "archive_read-too-long",
        raw(nr::ARCHIVE_READ, [0, DYNAMIC_BASE, 64 * 1024 + 1, 0, 0, 0]),
        Error::BadLength,
    )?;
    expect_err(
        "archive_read-into-the-kernel",
        raw(nr::ARCHIVE_READ, [0, KERNEL_ADDR, 16, 0, 0, 0]),
        Error::BadAddress,
    )?;
    if syscall::archive_read(0, &mut buf) != Ok(64) || &buf[..8] != libos_runtime::archive::MAGIC {
        return Err("archive_read does not read the archive");
    }
    expect_err("console_read-without-the-console", syscall::console_read(&mut buf), Error::PermissionDenied)?;
    expect_err(
        "console_read-into-the-kernel",
        raw(nr::CONSOLE_READ, [KERNEL_ADDR, 16, 0, 0, 0, 0]),
        Error::BadAddress,
    )?;
    // A block with a deadline in the past returns at the next slot boundary.
    syscall::block_until(1);
    expect_err("env_reap-while-it-lives", syscall::env_reap(), Error::Again)?;
    // A built, never started child killed with frames mapped: all back.
    syscall::env_kill(child, 77).map_err(|_| "kill the child")?;
    let end = syscall::env_reap().map_err(|_| "reap the child")?;
    if end.id != child || end.exited != 0 || end.code != 77 {
        return Err("env_reap misreported the killed child");
    }
    expect_err("env_reap-no-children", syscall::env_reap(), Error::NoSuchEnv)?;
    expect_err("env_start-an-ended-child", syscall::env_start(child, &bad_rip, None), Error::NoSuchEnv)?;
    syscall::frame_free(mine).map_err(|_| "free")?;
    let after = info()?;
    if (after.quota_frames, after.kmem_used, after.frames_charged)
        != (before.quota_frames, before.kmem_used, before.frames_charged)
    {
        println!("children: before {:?}\nchildren: after {:?}", before, after);
        return Err("the child's quota, kernel memory or frames did not all come back");
    }
    // A child that crashes (ud2, no handler) is ended by the kernel, and
    // its end wakes the parent blocked for it.
    let crasher = start_code_child(&[0x0f, 0x0b])?;
    let end = loop {
        match syscall::env_reap() {
            Ok(end) => break end,
            Err(Error::Again) => syscall::block(),
            Err(_) => return Err("reap the crashed child"),
        }
    };
    if end.id != crasher || end.exited != 0 || end.code != -1 {
        return Err("the crashed child's end was misreported");
    }
    // A child that spins on our time is ended mid-run.
    let spinner = start_code_child(&[0xeb, 0xfe])?;
    for _ in 0..5 {
        syscall::yield_now();
    }
    syscall::env_kill(spinner, 9).map_err(|_| "kill the spinner")?;
    let end = syscall::env_reap().map_err(|_| "reap the spinner")?;
    if end.id != spinner || end.code != 9 {
        return Err("the spinner's end was misreported");
    }
    // The environment table fills up and empties again.
    let mut made = Vec::new();
    let full = loop {
        match create(0, 32, 1, "filler") {
            Ok(id) => made.push(id),
            Err(error) => break error,
        }
        if made.len() > 200 {
            return Err("no limit on environments");
        }
    };
    println!("children: {} empty children, then {}", made.len(), full.name());
    for id in &made {
        syscall::env_kill(*id, 0).map_err(|_| "kill a filler")?;
    }
    while syscall::env_reap().is_ok() {}
    let again = create(0, 32, 1, "again").map_err(|_| "create after the table emptied")?;
    syscall::env_kill(again, 0).map_err(|_| "kill")?;
    let _ = syscall::env_reap();
    let last = info()?;
    if (last.quota_frames, last.kmem_used) != (before.quota_frames, before.kmem_used) {
        return Err("quota or kernel memory not back after the children");
    }
    println!("children: PASS: every hostile call refused, every child reclaimed");
    send_control(sibling, 1, env.tsc_hz)
}

// ---------------------------------------------------------------------------
// 2. grant-flood

fn grant_flood(env: &Env) -> Outcome {
    let before = info()?;
    let (_, key) = syscall::frame_alloc(0, rights::ALL).map_err(|_| "alloc")?;
    let with_frame = info()?;
    let mut shares = 0u64;
    let mut stop = None;
    while shares < 200_000 {
        match syscall::frame_share(key, env.id, rights::READ) {
            Ok(_) => shares += 1,
            Err(error) => {
                stop = Some(error);
                break;
            }
        }
    }
    let full = info()?;
    println!(
        "grant-flood: {} shares, then {}; kmem_used={} kmem_limit={} (before: {}, with the frame: {})",
        shares,
        stop.map(Error::name).unwrap_or("nothing"),
        full.kmem_used,
        full.kmem_limit,
        before.kmem_used,
        with_frame.kmem_used
    );
    if stop != Some(Error::NoMemory) {
        return Err("the share flood did not end in no-memory");
    }
    if full.kmem_limit == 0 || full.kmem_used <= with_frame.kmem_used || full.kmem_used > full.kmem_limit {
        return Err("kernel memory accounting does not show the grants within the limit");
    }
    syscall::frame_free(key).map_err(|_| "free the flooded frame")?;
    let after = info()?;
    println!("grant-flood: after frame_free kmem_used={}", after.kmem_used);
    if after.kmem_used != before.kmem_used {
        return Err("kernel memory not given back when the frame was freed");
    }
    let (_, key) = syscall::frame_alloc(0, rights::ALL).map_err(|_| "alloc after the flood")?;
    let share = syscall::frame_share(key, env.id, rights::READ).map_err(|_| "a share after the flood")?;
    syscall::map(DYNAMIC_BASE, share, 0).map_err(|_| "map a share after the flood")?;
    syscall::frame_free(key).map_err(|_| "free")?;
    if info()?.kmem_used != before.kmem_used {
        return Err("kernel memory not back to the start");
    }
    println!(
        "grant-flood: PASS: {} shares refused at the budget, all given back by frame_free, sharing works again",
        shares
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// 3. rmap-churn

fn rmap_churn(env: &Env) -> Outcome {
    let rounds = arg(env, "rounds").unwrap_or(20_000);
    let (_, key) = syscall::frame_alloc(0, rights::ALL).map_err(|_| "alloc")?;
    let baseline = info()?.kmem_used;
    // A and B share a software-TLB entry (page numbers equal mod 4096).
    let a = DYNAMIC_BASE + 0x40 * PAGE;
    let b = a + 4096 * PAGE;
    // Enough other pages to push A (the oldest) out of its TLB slot.
    let extra = env.tlb_slots + 2;
    let extra_va = |i: u64| a + (1 + i) * PAGE;
    let mut forgotten = 0u64;
    let mut peak = baseline;
    for round in 1..=rounds {
        syscall::map(a, key, 0).map_err(|_| "map A")?;
        syscall::map(b, key, 0).map_err(|_| "map B")?;
        for i in 0..extra {
            syscall::map(extra_va(i), key, 0).map_err(|_| "map an extra page")?;
        }
        if round == 1 || round % 1000 == 0 {
            peak = peak.max(info()?.kmem_used);
        }
        match syscall::unmap(a) {
            Ok(()) => {}
            Err(Error::InvalidArgument) => forgotten += 1,
            Err(_) => return Err("unmap A"),
        }
        syscall::unmap(b).map_err(|_| "unmap B")?;
        for i in 0..extra {
            syscall::unmap(extra_va(i)).map_err(|_| "unmap an extra page")?;
        }
        if round % 1000 == 0 {
            let used = info()?.kmem_used;
            if used != baseline {
                println!("rmap-churn: round {}: kmem_used={} baseline={}", round, used, baseline);
                return Err("kernel memory grew with nothing mapped (reverse-map leak)");
            }
            if syscall::map_query(a, false) != Ok(0) {
                return Err("A still mapped after unmapping");
            }
        }
        if round % 5000 == 0 {
            println!("rmap-churn: round {}: kmem_used={} (baseline {}, peak {})", round, baseline, baseline, peak);
        }
    }
    let limit = info()?.kmem_limit;
    if limit == 0 || peak <= baseline {
        return Err("kernel memory accounting does not count mappings");
    }
    syscall::frame_free(key).map_err(|_| "free")?;
    println!(
        "rmap-churn: PASS: {} rounds, A dropped by both TLBs {} times, kmem_used back to {} after every 1000 (peak {}, limit {})",
        rounds, forgotten, baseline, peak, limit
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// 4. page-tables and victim

fn send_control(to: u64, message: u64, tsc_hz: u64) -> Outcome {
    let give_up = rdtsc() + tsc_hz * 10;
    loop {
        match syscall::pct_send(to, [TAG_CONTROL, message, 0, 0]) {
            Ok(()) => return Ok(()),
            // Not yet accepting transfers (it has not run yet) or busy.
            Err(Error::Again) | Err(Error::PermissionDenied) | Err(Error::InvalidArgument) if rdtsc() < give_up => {
                syscall::yield_now()
            }
            Err(error) => {
                println!("pct_send to env {} -> {}", to, error.name());
                return Err("could not message the other env");
            }
        }
    }
}

fn wait_control(message: u64, tsc_hz: u64) -> Outcome {
    let give_up = rdtsc() + tsc_hz * 30;
    while CONTROL.load(Ordering::SeqCst) & message == 0 {
        if rdtsc() > give_up {
            return Err("the other env never sent its message");
        }
        syscall::yield_now();
    }
    Ok(())
}

fn page_tables(env: &Env) -> Outcome {
    let victim = arg(env, "victim").ok_or("args need victim=<env id>")?;
    let pool_frames = arg(env, "pool_kib").ok_or("args need pool_kib=<frame_pool_kib>")? / 4;
    wait_control(MSG_GO, env.tsc_hz)?;
    let (_, key) = syscall::frame_alloc(0, rights::READ).map_err(|_| "alloc")?;
    let va_of = |i: u64| DYNAMIC_BASE + i * GIB + (i % 4096) * PAGE;
    let mut mapped = 0u64;
    let mut stop = None;
    while va_of(mapped) < DYNAMIC_END {
        match syscall::map(va_of(mapped), key, 0) {
            Ok(()) => mapped += 1,
            Err(error) => {
                stop = Some(error);
                break;
            }
        }
    }
    let full = info()?;
    println!(
        "page-tables: {} pages mapped 1 GiB apart, then {}; frames_charged={} page_table_frames={} quota_frames={} pool_frames={}",
        mapped,
        stop.map(Error::name).unwrap_or("the end of the window"),
        full.frames_charged,
        full.page_table_frames,
        full.quota_frames,
        pool_frames
    );
    let verdict = match stop {
        Some(Error::QuotaExceeded) | Some(Error::Again) | Some(Error::NoMemory) => {
            if mapped >= pool_frames || full.page_table_frames < mapped || full.frames_charged > pool_frames {
                Err("page-table frames were not charged to the pool")
            } else {
                Ok(())
            }
        }
        _ => Err("mapping across the window did not end in quota-exceeded, again or no-memory"),
    };
    // Hold every table while the victim takes the rest of its quota (also
    // after a failed check: the victim shows the harm).
    send_control(victim, MSG_DONE, env.tsc_hz)?;
    wait_control(MSG_FINISHED, env.tsc_hz)?;
    verdict?;
    for i in 0..mapped {
        syscall::unmap(va_of(i)).map_err(|_| "unmap")?;
    }
    syscall::frame_free(key).map_err(|_| "free")?;
    let after = info()?;
    println!(
        "page-tables: PASS: refused within the pool, the victim kept its quota, all unmapped; frames_charged={} page_table_frames={}",
        after.frames_charged, after.page_table_frames
    );
    Ok(())
}

/// Frames charged to us now (held frames and our page tables).
fn charged() -> Result<u64, &'static str> {
    Ok(info()?.frames_charged)
}

fn victim(env: &Env) -> Outcome {
    let attacker = arg(env, "attacker").ok_or("args need attacker=<env id>")?;
    let quota = env.quota_frames;
    let va_of = |i: u64| DYNAMIC_BASE + i * PAGE;
    let mut retries = 0u64;
    let take = |i: u64, retries: &mut u64| -> Outcome {
        let wait = || {
            if *retries >= 100_000 {
                return false;
            }
            *retries += 1;
            syscall::yield_now();
            true
        };
        match frames::alloc_map_waiting(va_of(i), rights::ALL, map_flags::WRITE, wait) {
            Ok(_) => {}
            Err(AllocMapError::Alloc(error)) => {
                println!(
                    "victim: frame_alloc #{} -> {} after {} retries (frames_charged={})",
                    i + 1,
                    error.name(),
                    retries,
                    charged().unwrap_or(0)
                );
                return Err("could not get a frame within the quota");
            }
            Err(AllocMapError::Map(_)) => return Err("map"),
        }
        if !probe_write(va_of(i), 0xa11c_e000 + i) {
            return Err("own page faulted");
        }
        Ok(())
    };
    // Page tables for our own mappings count toward the quota too.
    let mut held = 0u64;
    while held < quota && charged()? < quota / 2 {
        take(held, &mut retries)?;
        held += 1;
    }
    let first = held;
    println!(
        "victim: holding {} frames, {} of my {} quota frames charged; telling env {} to go",
        first,
        charged()?,
        quota,
        attacker
    );
    send_control(attacker, MSG_GO, env.tsc_hz)?;
    wait_control(MSG_DONE, env.tsc_hz)?;
    let mut during = || -> Outcome {
        for i in 0..first {
            if probe_read(va_of(i)) != Some(0xa11c_e000 + i) {
                return Err("a frame held through the attack lost its contents");
            }
        }
        while held < quota && charged()? < quota {
            take(held, &mut retries)?;
            held += 1;
        }
        for i in 0..held {
            if probe_read(va_of(i)) != Some(0xa11c_e000 + i) {
                return Err("a frame lost its contents");
            }
        }
        if charged()? != quota {
            return Err("the quota is not all charged to us");
        }
        Ok(())
    };
    let verdict = during();
    // The attacker holds its tables until we are done, pass or fail.
    send_control(attacker, MSG_FINISHED, env.tsc_hz)?;
    verdict?;
    let tables = info()?.page_table_frames;
    println!(
        "victim: PASS: got my whole quota of {} frames ({} frames, {} of them before the attack, and {} page tables; {} retries)",
        quota, held, first, tables, retries
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// 5. demux-flood and bench-bounds

fn demux_flood() -> Outcome {
    let (_, key) = syscall::frame_alloc(0, rights::READ).map_err(|_| "alloc")?;
    expect_err(
        "demux-bench-linear-huge",
        libos_runtime::net::demux_bench(1000, true, 100_000),
        Error::PermissionDenied,
    )?;
    expect_err(
        "demux-bench-trie-huge",
        libos_runtime::net::demux_bench(1000, false, 100_000),
        Error::PermissionDenied,
    )?;
    expect_err("demux-bench-small", libos_runtime::net::demux_bench(1, false, 1), Error::PermissionDenied)?;
    expect_err("key-bench-max", syscall::key_bench(key, u64::MAX), Error::PermissionDenied)?;
    expect_err("key-bench-small", syscall::key_bench(key, 10), Error::PermissionDenied)?;
    syscall::frame_free(key).map_err(|_| "free")?;
    println!("demux-flood: PASS: benchmark calls refused outside a benchmark scenario");
    Ok(())
}

fn bench_bounds() -> Outcome {
    let (_, key) = syscall::frame_alloc(0, rights::READ).map_err(|_| "alloc")?;
    use libos_runtime::net::demux_bench;
    expect_err("demux-bench-linear-huge", demux_bench(1000, true, 100_000), Error::InvalidArgument)?;
    expect_err("demux-bench-trie-too-many-packets", demux_bench(1000, false, 20_001), Error::InvalidArgument)?;
    expect_err("demux-bench-linear-over-product", demux_bench(1000, true, 2_001), Error::InvalidArgument)?;
    expect_err("key-bench-max", syscall::key_bench(key, u64::MAX), Error::InvalidArgument)?;
    expect_err("key-bench-over", syscall::key_bench(key, 100_001), Error::InvalidArgument)?;
    let within = [
        ("demux-bench-trie-at-bound", demux_bench(1000, false, 20_000)),
        ("demux-bench-linear-at-bound", demux_bench(1000, true, 2_000)),
        ("key-bench-at-bound", syscall::key_bench(key, 100_000)),
    ];
    for (what, result) in within {
        match result {
            Ok(ticks) => println!("check {} -> ok ({} ticks)", what, ticks),
            Err(error) => {
                println!("check {} -> {} (wanted success)", what, error.name());
                return Err("a bounded benchmark call was refused");
            }
        }
    }
    syscall::frame_free(key).map_err(|_| "free")?;
    println!("bench-bounds: PASS: benchmark calls bounded");
    Ok(())
}

// ---------------------------------------------------------------------------
// 6. dirty-range

/// Where `dirty-range` maps its pages (40, writable, guaranteed): across
/// a 2 MiB boundary (after the 20th), so one 64-page step of the kernel
/// spans two last-level tables.
const DIRTY_VA: u64 = DYNAMIC_BASE + 0x7000 * PAGE - 20 * PAGE;
const DIRTY_PAGES: u64 = 40;

fn expect_bits(what: &str, va: u64, pages: u64, flags: u64, want: &[u64]) -> Outcome {
    let mut out = [0u64; 64];
    let count = syscall::map_query_range(va, pages, &mut out, flags).map_err(|e| {
        println!("check {} -> {} (wanted success)", what, e.name());
        "map_query_range refused a valid call"
    })?;
    let words = pages.div_ceil(64) as usize;
    let ones: u64 = out[..words].iter().map(|w| w.count_ones() as u64).sum();
    if out[..words] != *want || count != ones {
        println!("check {} -> {:x?} count {} (wanted {:x?})", what, &out[..words], count, want);
        return Err("map_query_range answered wrong");
    }
    println!("check {} -> {:x?} count {}", what, &out[..words.min(2)], count);
    Ok(())
}

fn dirty_range() -> Outcome {
    use syscall::query_range::{CLEAR_ACCESSED, CLEAR_DIRTY, REPORT_ACCESSED, UNKNOWN_SET};
    let mut keys = Vec::new();
    for i in 0..DIRTY_PAGES {
        let flags = map_flags::WRITE | map_flags::GUARANTEED;
        let (_, key) =
            frames::alloc_map(DIRTY_VA + i * PAGE, rights::READ | rights::WRITE, flags).map_err(|_| "map")?;
        keys.push(key);
    }
    let page = |i: u64| DIRTY_VA + i * PAGE;
    let write = |i: u64, value: u64| {
        // SAFETY: a page of ours, mapped writable just above.
        unsafe { core::ptr::write_volatile(page(i) as *mut u64, value) }
    };
    // Clean start: every page written, then every bit read and cleared.
    for i in 0..DIRTY_PAGES {
        write(i, 0);
    }
    expect_bits("clear-all", DIRTY_VA, DIRTY_PAGES, CLEAR_DIRTY | CLEAR_ACCESSED, &[(1 << DIRTY_PAGES) - 1])?;
    expect_bits("all-clean", DIRTY_VA, DIRTY_PAGES, CLEAR_DIRTY, &[0])?;
    write(2, 1);

    // Hostile arguments, in the order the kernel checks them.
    let mut out = [0u64; 64];
    let buf = out.as_mut_ptr() as u64;
    // SAFETY: raw calls with hostile arguments; the only memory the kernel
    // could write is `out` (64 words, enough for any count it accepts).
    let raw = |a: [u64; 4]| decode(unsafe { raw6(nr::MAP_QUERY_RANGE, a[0], a[1], a[2], a[3], 0, 0) });
    let v = DIRTY_VA;
    expect_err("flags-unknown-bit", raw([v, 1, buf, 16]), Error::InvalidArgument)?;
    expect_err("flags-top-bit", raw([v, 1, buf, 1 << 63]), Error::InvalidArgument)?;
    expect_err("flags-first-of-all", raw([KERNEL_ADDR + 1, 0, 0, u64::MAX]), Error::InvalidArgument)?;
    expect_err("count-zero", raw([v, 0, buf, CLEAR_DIRTY]), Error::BadLength)?;
    expect_err("count-4097", raw([v, 4097, buf, CLEAR_DIRTY]), Error::BadLength)?;
    expect_err("count-huge", raw([v, u64::MAX, buf, CLEAR_DIRTY]), Error::BadLength)?;
    expect_err("count-2^52", raw([v, 1 << 52, buf, CLEAR_DIRTY]), Error::BadLength)?;
    expect_err("va-misaligned", raw([v + 8, 1, buf, CLEAR_DIRTY]), Error::Misaligned)?;
    expect_err("va-kernel", raw([KERNEL_ADDR, 1, buf, CLEAR_DIRTY]), Error::BadAddress)?;
    expect_err("va-top", raw([!0xfff, 2, buf, CLEAR_DIRTY]), Error::BadAddress)?;
    expect_err("va-null", raw([0, 1, buf, CLEAR_DIRTY]), Error::BadAddress)?;
    expect_err("va-code", raw([CODE_PAGE, 1, buf, CLEAR_DIRTY]), Error::BadAddress)?;
    expect_err("va-stack", raw([STACK_TOP - PAGE, 1, buf, CLEAR_DIRTY]), Error::BadAddress)?;
    expect_err("va-below-window", raw([DYNAMIC_BASE - PAGE, 2, buf, CLEAR_DIRTY]), Error::BadAddress)?;
    expect_err("straddles-window-end", raw([DYNAMIC_END - 2 * PAGE, 3, buf, CLEAR_DIRTY]), Error::BadAddress)?;
    expect_err("last-page-4096", raw([DYNAMIC_END - PAGE, 4096, buf, CLEAR_DIRTY]), Error::BadAddress)?;
    expect_err("va-at-window-end", raw([DYNAMIC_END, 1, buf, CLEAR_DIRTY]), Error::BadAddress)?;
    expect_err("out-null", raw([v, 1, 0, CLEAR_DIRTY]), Error::BadAddress)?;
    expect_err("out-kernel", raw([v, 1, KERNEL_ADDR, CLEAR_DIRTY]), Error::BadAddress)?;
    expect_err("out-kernel-high", raw([v, 4096, u64::MAX - 7, CLEAR_DIRTY]), Error::BadAddress)?;
    expect_err("out-user-top", raw([v, 128, USER_TOP - 8, CLEAR_DIRTY]), Error::BadAddress)?;
    expect_err("out-misaligned", raw([v, 1, buf + 1, CLEAR_DIRTY]), Error::Misaligned)?;
    expect_err("out-read-only-code", raw([v, 1, CODE_PAGE, CLEAR_DIRTY]), Error::BadAddress)?;
    expect_err("out-read-only-start", raw([v, 1, START_INFO_ADDR, CLEAR_DIRTY]), Error::BadAddress)?;
    expect_err("out-unmapped", raw([v, 1, DIRTY_VA + DIRTY_PAGES * PAGE, CLEAR_DIRTY]), Error::BadAddress)?;
    // The bitmap's second word on the unmapped page after our last one.
    let straddling = page(DIRTY_PAGES - 1) + PAGE - 8;
    // SAFETY: a word of our own page, which the kernel must leave alone.
    unsafe { core::ptr::write_volatile(straddling as *mut u64, 0x5a5a) };
    expect_err("out-second-page-unmapped", raw([v, 65, straddling, CLEAR_DIRTY]), Error::BadAddress)?;
    // SAFETY: as above.
    if unsafe { core::ptr::read_volatile(straddling as *const u64) } != 0x5a5a {
        return Err("a refused call wrote half its bitmap");
    }
    // A read-only mapping in the window.
    let ro_va = page(DIRTY_PAGES + 8);
    syscall::map(ro_va, keys[0], 0).map_err(|_| "map read-only")?;
    expect_err("out-read-only-mapping", raw([v, 1, ro_va, CLEAR_DIRTY]), Error::BadAddress)?;
    syscall::unmap(ro_va).map_err(|_| "unmap read-only")?;
    // None of those cleared page 2's bit (nor that of page 39, written
    // just above).
    expect_bits("refusals-cleared-nothing", v, DIRTY_PAGES, CLEAR_DIRTY, &[1 << 2 | 1 << 39])?;

    // Answers. Pages past ours are not mapped: 0, or 1 with UNKNOWN_SET.
    write(0, 1);
    write(DIRTY_PAGES - 1, 1);
    let unknown_after = !((1u64 << DIRTY_PAGES) - 1);
    expect_bits("unknown-set", v, 64, UNKNOWN_SET, &[1 | 1 << (DIRTY_PAGES - 1) | unknown_after])?;
    expect_bits("read-only-query", v, 64, 0, &[1 | 1 << (DIRTY_PAGES - 1)])?;
    expect_bits("query-and-clear", v, 64, CLEAR_DIRTY, &[1 | 1 << (DIRTY_PAGES - 1)])?;
    expect_bits("cleared", v, 64, 0, &[0])?;
    // The most pages a call covers, almost all unknown; a bitmap that
    // starts on one of the queried pages (the kernel's write sets no bit).
    let mut big = [0u64; 64];
    let count = syscall::map_query_range(v, 4096, &mut big, UNKNOWN_SET).map_err(|_| "4096 pages")?;
    if count != 4096 - DIRTY_PAGES || big[0] != unknown_after || big[1..].iter().any(|&w| w != u64::MAX) {
        println!("check 4096-pages -> count {} words {:#x} {:#x}", count, big[0], big[1]);
        return Err("a 4096-page query answered wrong");
    }
    println!("check 4096-pages -> count {}", count);
    let inside = page(5) + 64;
    // SAFETY: one word on our own page 5, mapped writable.
    let answer = decode(unsafe { raw6(nr::MAP_QUERY_RANGE, v, 64, inside, 0, 0, 0) });
    // SAFETY: as above.
    let word = unsafe { core::ptr::read_volatile(inside as *const u64) };
    if answer != Ok(0) || word != 0 {
        println!("check bitmap-in-range -> {:?} word {:#x}", answer, word);
        return Err("a bitmap inside the queried range");
    }
    expect_bits("bitmap-in-range-set-no-bit", v, 64, 0, &[0])?;
    // The window's last pages: accepted, nothing there.
    expect_bits("window-end", DYNAMIC_END - 4 * PAGE, 4, 0, &[0])?;

    // A cleared bit is set again by the next write: the TLB entry that
    // had it was flushed. Fewer than 32 cleared pages: invlpg each.
    for round in 0..3 {
        for i in [3, 7, 11] {
            write(i, round);
        }
        expect_bits("invlpg-path", v, DIRTY_PAGES, CLEAR_DIRTY, &[1 << 3 | 1 << 7 | 1 << 11])?;
        write(7, round + 100);
        expect_bits("invlpg-path-set-again", v, DIRTY_PAGES, CLEAR_DIRTY, &[1 << 7])?;
    }
    // More than 32: one flush of the whole address space.
    let stats_before = syscall::stats().map_err(|_| "stats")?;
    for round in 0..3 {
        for i in 0..DIRTY_PAGES {
            write(i, round);
        }
        expect_bits("flush-path", v, DIRTY_PAGES, CLEAR_DIRTY, &[(1 << DIRTY_PAGES) - 1])?;
        write(5, round);
        write(33, round);
        expect_bits("flush-path-set-again", v, DIRTY_PAGES, CLEAR_DIRTY, &[1 << 5 | 1 << 33])?;
    }
    let stats_after = syscall::stats().map_err(|_| "stats")?;
    if stats_after.cr3_loads < stats_before.cr3_loads + 3 {
        return Err("more than 32 cleared pages did not reload CR3");
    }
    // Accessed bits: a read sets only that page's; reported, then cleared.
    expect_bits("accessed-clear", v, DIRTY_PAGES, CLEAR_ACCESSED | REPORT_ACCESSED, &[(1 << DIRTY_PAGES) - 1])?;
    // SAFETY: a read of our own page 9.
    let _ = unsafe { core::ptr::read_volatile(page(9) as *const u64) };
    expect_bits("accessed-one-read", v, DIRTY_PAGES, CLEAR_ACCESSED | REPORT_ACCESSED, &[1 << 9])?;
    expect_bits("read-is-not-dirty", v, DIRTY_PAGES, 0, &[0])?;
    for (i, key) in keys.into_iter().enumerate() {
        syscall::unmap(page(i as u64)).map_err(|_| "unmap")?;
        syscall::frame_free(key).map_err(|_| "free")?;
    }
    println!("dirty-range: PASS: hostile arguments refused with nothing cleared, answers and TLB flushes right");
    Ok(())
}

// ---------------------------------------------------------------------------
// 7. fuzz

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() {
            None
        } else {
            Some(items[self.below(items.len() as u64) as usize])
        }
    }
}

#[derive(Clone, Copy)]
struct Held {
    key: FrameKey,
    pa: u64,
    owned: bool,
}

/// The region random mappings go to (512 pages), and the page the upcall
/// steps put their stack on (never handed to random calls).
const FUZZ_BASE: u64 = DYNAMIC_BASE + 0x1000_0000;
const FUZZ_PAGES: u64 = 512;
const FUZZ_STACK_VA: u64 = DYNAMIC_BASE + 0x40_0000_0000;
const FUZZ_CHECK_VA: u64 = DYNAMIC_BASE + 0x50_0000_0000;
/// Where the announce step builds the frame it transmits.
const FUZZ_TX_VA: u64 = DYNAMIC_BASE + 0x60_0000_0000;
/// Scratch memory the kernel may write: 2 MiB, pointers only into the
/// first 64 KiB, so no write of at most 1 MiB can leave it.
const SCRATCH_LEN: usize = 2 << 20;
const SCRATCH_WINDOW: u64 = 64 * 1024;

struct Fuzz {
    rng: Rng,
    me: u64,
    env_count: u64,
    trace: bool,
    scratch: u64,
    /// Refusable upcall tables, kept apart from the scratch memory.
    bad_tables: u64,
    keys: Vec<Held>,
    stale: Vec<FrameKey>,
    mapped: Vec<u64>,
    slot_keys: Vec<SlotKey>,
    /// Packet filters we installed (ids).
    filters: Vec<FilterId>,
    /// Why each recent stale key is (step, frame).
    stale_why: Vec<(FrameKey, u64, u64)>,
    /// Children we created (ids) and keys we hold for them.
    children: Vec<u64>,
    child_keys: Vec<(u64, FrameKey)>,
    step: u64,
    calls: u64,
    errors: u64,
    failures: u64,
}

impl Fuzz {
    fn fail(&mut self, what: &str) {
        self.failures += 1;
        println!("fuzz: FAIL step={} {}", self.step, what);
    }

    fn count<T>(&mut self, result: &Result<T, Error>) {
        self.calls += 1;
        if result.is_err() {
            self.errors += 1;
        }
    }

    fn fuzz_va(&mut self) -> u64 {
        FUZZ_BASE + self.rng.below(FUZZ_PAGES) * PAGE
    }

    fn va(&mut self) -> u64 {
        let va = match self.rng.below(12) {
            0..=4 => self.fuzz_va(),
            5..=6 => {
                let mapped = self.mapped.clone();
                self.rng.pick(&mapped).unwrap_or(FUZZ_BASE)
            }
            7 => (DYNAMIC_BASE + self.rng.below((DYNAMIC_END - DYNAMIC_BASE) / PAGE) * PAGE) & !0xfff,
            8 => self.fuzz_va() + 1 + self.rng.below(PAGE - 1),
            9 => DYNAMIC_END - PAGE,
            10 => [
                0,
                CODE_PAGE,
                libos_runtime::start::HEAP_BASE,
                KERNEL_ADDR,
                DYNAMIC_END,
                DYNAMIC_BASE - PAGE,
                !0xfff,
                START_INFO_ADDR,
            ][self.rng.below(8) as usize],
            _ => self.rng.next(),
        };
        // Never the upcall step's stack page or the final check page.
        if va & !0xfff == FUZZ_STACK_VA || va & !0xfff == FUZZ_CHECK_VA || va & !0xfff == FUZZ_TX_VA {
            FUZZ_BASE
        } else {
            va
        }
    }

    /// A pointer for a random call; `for_table`: never memory whose
    /// contents could make a valid upcall table.
    fn pointer(&mut self) -> u64 {
        match self.rng.below(14) {
            0 => 0,
            1 => KERNEL_ADDR + (self.rng.next() & 0x0000_7fff_ffff_fff8),
            2 => [
                0x7000_0000_0000 + self.rng.below(1 << 20) * PAGE,
                STACK_TOP - STACK_SIZE - PAGE,
                0x1000,
                FUZZ_BASE + FUZZ_PAGES * PAGE,
            ][self.rng.below(4) as usize],
            3..=5 => self.scratch + (self.rng.below(SCRATCH_WINDOW - 256) & !7),
            6 => self.scratch + (self.rng.below(SCRATCH_WINDOW - 256) & !7) + 1 + self.rng.below(7),
            7 => START_INFO_ADDR + (self.rng.below(64) * 8),
            8 => CODE_PAGE,
            9 => {
                let mapped = self.mapped.clone();
                let page = self.rng.pick(&mapped).unwrap_or(FUZZ_BASE);
                page + (self.rng.below(PAGE - 256) & !7)
            }
            10 => self.fuzz_va(),
            11 => [USER_TOP - 8, USER_TOP - PAGE, USER_TOP, u64::MAX - 7][self.rng.below(4) as usize],
            12 => REPOSSESSION_ADDR,
            _ => self.rng.next(),
        }
    }

    fn length(&mut self) -> u64 {
        [
            0,
            1,
            8,
            16,
            32,
            56,
            104,
            144,
            4096,
            4097,
            1 << 20,
            (1 << 20) + 1,
            1 << 40,
            u64::MAX,
            self.rng.below(5000),
            self.rng.next(),
        ][self.rng.below(16) as usize]
    }

    fn key(&mut self) -> FrameKey {
        match self.rng.below(7) {
            0..=2 => {
                let keys = self.keys.clone();
                self.rng.pick(&keys).map(|h| h.key).unwrap_or(FrameKey { handle: 1, mac: 2 })
            }
            3 => {
                let stale = self.stale.clone();
                self.rng.pick(&stale).unwrap_or(FrameKey { handle: 3, mac: 4 })
            }
            4 => FrameKey { handle: self.rng.next(), mac: self.rng.next() },
            5 => {
                let keys = self.keys.clone();
                let mut key = self.rng.pick(&keys).map(|h| h.key).unwrap_or_default();
                let bit = self.rng.below(128);
                if bit < 64 {
                    key.handle ^= 1 << bit
                } else {
                    key.mac ^= 1 << (bit - 64)
                }
                key
            }
            _ => {
                let n = INBOX_COUNT.load(Ordering::SeqCst).min(INBOX as u64);
                if n == 0 {
                    FrameKey::default()
                } else {
                    let at = self.rng.below(n) as usize;
                    FrameKey { handle: INBOX_LO[at].load(Ordering::SeqCst), mac: INBOX_HI[at].load(Ordering::SeqCst) }
                }
            }
        }
    }

    fn env_id(&mut self) -> u64 {
        match self.rng.below(6) {
            0 => 0,
            1 => self.me,
            2 | 3 => 1 + self.rng.below(self.env_count.max(1) + 1),
            4 => u64::MAX,
            _ => self.rng.below(8),
        }
    }

    fn small(&mut self) -> u64 {
        if self.rng.chance(8) {
            self.rng.next()
        } else {
            self.rng.below(9)
        }
    }

    /// One argument of a random class.
    fn any_arg(&mut self) -> u64 {
        match self.rng.below(7) {
            0 => self.pointer(),
            1 => self.length(),
            2 => self.va(),
            3 => self.env_id(),
            4 => self.small(),
            5 => {
                let keys = self.keys.clone();
                self.rng.pick(&keys).map(|h| if self.rng.chance(2) { h.key.handle } else { h.key.mac }).unwrap_or(0)
            }
            _ => self.rng.next(),
        }
    }

    /// A random raw system call with arguments shaped for its number.
    fn raw_call(&mut self) {
        let number = match self.rng.below(20) {
            0 => [u64::MAX, 1 << 32, 0x8000_0000_0000_0000, nr::COUNT, 41, 64, 255, (-1i64) as u64 - 1]
                [self.rng.below(8) as usize],
            _ => loop {
                let n = self.rng.below(41);
                if n != nr::EXIT {
                    break n;
                }
            },
        };
        let mut a = [0u64; 6];
        for slot in a.iter_mut() {
            *slot = self.any_arg();
        }
        // Shape the arguments the call reads, most of the time (always for
        // set_upcalls: a table read from memory the kernel wrote could be
        // valid garbage).
        if number == nr::SET_UPCALLS {
            a[0] = self.table_pointer();
        } else if number == nr::CONSOLE_WRITE {
            // Short (what it prints is noise), or a length the kernel must
            // refuse; never from the program's own text and strings.
            a[0] = self.pointer();
            if a[0] & !0xfff == CODE_PAGE {
                a[0] = self.scratch;
            }
            a[1] = match self.rng.below(4) {
                0 => [0, 4097, 1 << 20, 1 << 40, u64::MAX][self.rng.below(5) as usize],
                _ => self.rng.below(48),
            };
        } else if !self.rng.chance(5) {
            match number {
                nr::CONSOLE_WRITE => {}
                nr::STATS => {
                    a[0] = self.pointer();
                    a[1] = if self.rng.chance(2) { 160 } else { self.length() };
                }
                nr::FRAME_ALLOC => {
                    a[0] = match self.rng.below(4) {
                        0 | 1 => 0,
                        2 => {
                            let stale_pa = self.keys.last().map(|h| h.pa).unwrap_or(0x10_0000);
                            stale_pa + PAGE * self.rng.below(4)
                        }
                        _ => self.rng.next() & 0x0fff_ffff_f000,
                    };
                    a[1] = self.small();
                    a[2] = self.pointer();
                }
                nr::FRAME_FREE | nr::FRAME_QUERY | nr::KEY_BENCH | 25 => {
                    let key = self.key();
                    a[0] = key.handle;
                    a[1] = key.mac;
                    a[2] = if number == nr::FRAME_QUERY { self.pointer() } else { self.length() };
                }
                nr::FRAME_SHARE => {
                    let key = self.key();
                    a[0] = key.handle;
                    a[1] = key.mac;
                    a[2] = self.env_id();
                    a[3] = self.small();
                    a[4] = self.pointer();
                }
                nr::MAP => {
                    let key = self.key();
                    a[0] = self.va();
                    a[1] = key.handle;
                    a[2] = key.mac;
                    a[3] = self.small();
                }
                nr::UNMAP | nr::MAP_QUERY | nr::GUARANTEE => {
                    a[0] = self.va();
                    a[1] = self.small();
                }
                nr::MAP_QUERY_RANGE => {
                    a[0] = self.va();
                    a[1] = [0, 1, 63, 64, 65, 512, 4096, 4097, u64::MAX, self.rng.below(5000)]
                        [self.rng.below(10) as usize];
                    a[2] = self.pointer();
                    a[3] = self.small() & if self.rng.chance(4) { u64::MAX } else { 15 };
                }
                nr::SLOT_ALLOC => a[0] = if self.rng.chance(2) { nr::ANY_SLOT } else { self.small() },
                nr::SLOT_FREE => {
                    let slot_keys = self.slot_keys.clone();
                    a[0] = self.rng.pick(&slot_keys).map_or(0, |k| k.0)
                        ^ if self.rng.chance(3) { 1 << self.rng.below(40) } else { 0 };
                }
                nr::PCT_CALL | nr::PCT_SEND => a[0] = self.env_id(),
                nr::ENV_INFO | 26 => a[0] = self.pointer(),
                22 | 23 => {
                    a[0] = self.pointer();
                    a[1] = self.length();
                }
                _ => {}
            }
        }
        if self.trace {
            println!(
                "fuzz: step={} raw {} {:#x} {:#x} {:#x} {:#x} {:#x} {:#x}",
                self.step, number, a[0], a[1], a[2], a[3], a[4], a[5]
            );
        }
        // SAFETY: every argument may be garbage; the kernel checks them. No
        // pointer names our own state: writes can land only in the scratch
        // block, in pages we mapped for fuzzing, or nowhere.
        let raw = unsafe { raw6(number, a[0], a[1], a[2], a[3], a[4], a[5]) };
        let result = decode(raw);
        self.count(&result);
        if (raw as i64) < 0 && Error::from_code((raw as i64).wrapping_neg()).is_none() {
            println!("fuzz: call {} returned {:#x}, no error code", number, raw);
            self.fail("unknown error code");
        }
        match (number, result) {
            (nr::CONSOLE_WRITE, Ok(n)) if n > 0 => {
                // End the noise's line, so our own lines start clean.
                let _ = syscall::console_write(b"\n");
            }
            (nr::SET_UPCALLS, _) => {
                if result.is_ok() && a[0] != REPOSSESSION_ADDR {
                    println!("fuzz: set_upcalls accepted the table at {:#x}", a[0]);
                    self.fail("an invalid upcall table was accepted");
                }
                // Whatever happened, our own table again.
                if install_heap_upcalls().is_err() {
                    self.fail("could not restore the upcall table");
                }
            }
            // (A frame allocated for a child of ours comes with the
            // child's key: not ours to track.)
            (nr::FRAME_ALLOC, Ok(pa)) if a[3] == 0 => {
                if let Some(key) = self.read_scratch_key(a[2]) {
                    self.keys.push(Held { key, pa, owned: true });
                }
            }
            (nr::FRAME_SHARE, Ok(_)) if a[2] == self.me && a[5] == 0 => {
                if let Some(key) = self.read_scratch_key(a[4]) {
                    let pa =
                        self.keys.iter().find(|h| h.key.handle == a[0] && h.key.mac == a[1]).map(|h| h.pa).unwrap_or(0);
                    self.keys.push(Held { key, pa, owned: false });
                }
            }
            (nr::FRAME_FREE, Ok(_)) => self.forget_frame_of(FrameKey { handle: a[0], mac: a[1] }),
            (nr::SLOT_ALLOC, Ok(key)) => self.slot_keys.push(SlotKey(key)),
            (nr::MAP, Ok(_)) => self.mapped.push(a[0]),
            _ => {}
        }
    }

    /// A pointer for a random `set_upcalls`: only memory that cannot hold
    /// a valid table with live entries (a refusable table we prepared, the
    /// all-zero repossession page, or addresses the kernel must refuse).
    fn table_pointer(&mut self) -> u64 {
        match self.rng.below(8) {
            0..=2 => self.bad_tables + self.rng.below(BAD_TABLES) * 64,
            3 => 0,
            4 => KERNEL_ADDR,
            5 => [0x7000_0000_0000, USER_TOP - 8, USER_TOP - 32][self.rng.below(3) as usize],
            6 => self.bad_tables + 4,
            _ => {
                // The repossession page reads as an all-zero table (no
                // handlers) while nothing was repossessed.
                if RepossessionReader::recorded() == 0 && self.rng.chance(2) {
                    REPOSSESSION_ADDR
                } else {
                    START_INFO_ADDR
                }
            }
        }
    }

    fn read_scratch_key(&self, at: u64) -> Option<FrameKey> {
        if at >= self.scratch && at + 16 <= self.scratch + SCRATCH_WINDOW && at.is_multiple_of(8) {
            // SAFETY: inside the scratch block the kernel just wrote.
            Some(unsafe { core::ptr::read_volatile(at as *const FrameKey) })
        } else {
            None
        }
    }

    /// `key` was freed: it is stale now, and so is every other key we
    /// hold to its frame, unless co-owners keep the frame (a key still
    /// valid then stays ours, which `frame_query` tells).
    fn forget_frame_of(&mut self, key: FrameKey) {
        let Some(pa) = self.keys.iter().find(|h| h.key == key).map(|h| h.pa) else { return };
        let mut i = 0;
        while i < self.keys.len() {
            let same = self.keys[i].pa == pa && pa != 0;
            if same && self.keys[i].key != key && syscall::frame_query(self.keys[i].key).is_ok() {
                i += 1;
                continue;
            }
            if same {
                let gone = self.keys.swap_remove(i);
                self.stale.push(gone.key);
                self.stale_why.push((gone.key, self.step, pa));
                if self.stale_why.len() > 64 {
                    self.stale_why.remove(0);
                }
            } else {
                i += 1;
            }
        }
        if self.stale.len() > 64 {
            self.stale.remove(0);
        }
    }

    fn owned_index(&mut self) -> Option<usize> {
        let owned: Vec<usize> = (0..self.keys.len()).filter(|&i| self.keys[i].owned).collect();
        self.rng.pick(&owned)
    }

    /// One step of building, running and ending children: create one,
    /// give it frames (its own, co-owned or shared), map them (code too),
    /// write into them, start it running on random code, kill it, reap.
    fn child_step(&mut self) {
        use libos_runtime::start::PROGRAM_BASE;
        let children = self.children.clone();
        match self.rng.below(9) {
            0 if self.children.len() < 3 => {
                let quota = self.rng.below(24);
                let result = syscall::env_create(quota, 32 + self.rng.below(64), 1 + self.rng.below(32), "fuzzchild");
                self.count(&result);
                if let Ok(id) = result {
                    self.children.push(id);
                }
            }
            1 | 2 => {
                let Some(child) = self.rng.pick(&children) else { return };
                let result = syscall::frame_alloc_for(child, rights::ALL);
                self.count(&result);
                if let Ok((_, key)) = result {
                    self.child_keys.push((child, key));
                }
            }
            3 => {
                let (Some(child), Some(at)) = (self.rng.pick(&children), self.owned_index()) else { return };
                let key = self.keys[at].key;
                let result = if self.rng.chance(2) {
                    syscall::frame_co_own(key, child, key.rights() & rights::ALL)
                } else {
                    syscall::frame_share(key, child, rights::READ)
                };
                self.count(&result);
                if let Ok(key) = result {
                    self.child_keys.push((child, key));
                }
            }
            4 | 5 => {
                let keys = self.child_keys.clone();
                let Some((child, key)) = self.rng.pick(&keys) else { return };
                let va = PROGRAM_BASE + self.rng.below(8) * PAGE;
                let flags = [
                    0,
                    map_flags::WRITE,
                    map_flags::EXEC | map_flags::GUARANTEED,
                    map_flags::REPLACE | map_flags::WRITE,
                    map_flags::EXEC,
                ][self.rng.below(5) as usize];
                let result = syscall::env_map(child, va, key, flags);
                self.count(&result);
                if self.rng.chance(2) {
                    // Random code (or a jump to itself, or ud2).
                    let code: [u8; 16] = match self.rng.below(3) {
                        0 => [0xeb, 0xfe, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                        1 => [0x0f, 0x0b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                        _ => self.rng.next().to_le_bytes().repeat(2).try_into().unwrap_or([0; 16]),
                    };
                    let result = syscall::env_write(child, va + self.rng.below(4080), &code);
                    self.count(&result);
                }
            }
            6 => {
                let Some(child) = self.rng.pick(&children) else { return };
                let rip = PROGRAM_BASE + self.rng.below(8) * PAGE + self.rng.below(16);
                let regs = syscall::StartRegs { rip, rsp: PROGRAM_BASE + 8 * PAGE, ..Default::default() };
                let result = syscall::env_start(child, &regs, None);
                self.count(&result);
            }
            7 => {
                let Some(child) = self.rng.pick(&children) else { return };
                let result = syscall::env_kill(child, self.rng.below(16) as i64);
                self.count(&result);
            }
            _ => {
                let result = syscall::env_reap();
                self.count(&result);
                if let Ok(end) = result {
                    self.children.retain(|&c| c != end.id);
                    self.child_keys.retain(|&(c, _)| c != end.id);
                }
            }
        }
    }

    /// One valid step of a call sequence.
    fn valid_step(&mut self) {
        match self.rng.below(21) {
            19 | 20 => self.child_step(),
            0 | 1 => {
                if self.keys.iter().filter(|h| h.owned).count() > 96 {
                    return self.free_one();
                }
                let wanted = [
                    rights::ALL,
                    rights::ALL,
                    rights::READ | rights::WRITE,
                    rights::READ,
                    rights::READ | rights::SHARE,
                ][self.rng.below(5) as usize];
                let result = syscall::frame_alloc(0, wanted);
                self.count(&result);
                if let Ok((pa, key)) = result {
                    self.keys.push(Held { key, pa, owned: true });
                }
            }
            2 | 3 => {
                let keys = self.keys.clone();
                let held = match self.rng.pick(&keys) {
                    // Sometimes a key another env sent us: its owner may free
                    // the frame (or end) while we have it mapped.
                    _ if self.rng.chance(3) && INBOX_COUNT.load(Ordering::SeqCst) > 0 => {
                        let n = INBOX_COUNT.load(Ordering::SeqCst).min(INBOX as u64);
                        let at = self.rng.below(n) as usize;
                        let key = FrameKey {
                            handle: INBOX_LO[at].load(Ordering::SeqCst),
                            mac: INBOX_HI[at].load(Ordering::SeqCst),
                        };
                        Held { key, pa: 0, owned: false }
                    }
                    Some(held) => held,
                    None => return,
                };
                let va = self.fuzz_va();
                let flags = [0, map_flags::WRITE, map_flags::WRITE, map_flags::GUARANTEED | map_flags::WRITE]
                    [self.rng.below(4) as usize];
                let result = syscall::map(va, held.key, flags);
                self.count(&result);
                if result.is_ok() {
                    self.mapped.push(va);
                    if flags & map_flags::WRITE != 0 {
                        // May fault only if the frame's owner freed it meanwhile.
                        let _ = probe_write(va, self.step);
                    }
                }
            }
            4 => {
                let mapped = self.mapped.clone();
                if let Some(va) = self.rng.pick(&mapped) {
                    let _ = probe_read(va + (self.rng.below(512) * 8));
                    let _ = probe_write(va + (self.rng.below(512) * 8), self.rng.next());
                }
            }
            5 => {
                let keys = self.keys.clone();
                let Some(held) = self.rng.pick(&keys) else { return };
                let to = if self.rng.chance(2) { self.me } else { 1 + self.rng.below(self.env_count.max(1)) };
                let result = syscall::frame_share(held.key, to, Rights::from_bits_truncate(self.rng.below(8) as u8));
                self.count(&result);
                match result {
                    Ok(key) if to == self.me => self.keys.push(Held { key, pa: held.pa, owned: false }),
                    Ok(key) => {
                        let sent = syscall::pct_send(to, [TAG_KEY, key.handle, key.mac, held.pa]);
                        self.count(&sent);
                    }
                    Err(_) => {}
                }
            }
            6 => {
                if self.mapped.is_empty() {
                    return;
                }
                let at = self.rng.below(self.mapped.len() as u64) as usize;
                let va = self.mapped.swap_remove(at);
                let result = syscall::unmap(va);
                self.count(&result);
            }
            7 => self.free_one(),
            8 => self.upcall_step(),
            9 => {
                let mapped = self.mapped.clone();
                let va = self.rng.pick(&mapped).unwrap_or(FUZZ_BASE);
                let result = if self.rng.chance(2) {
                    syscall::guarantee(va, self.rng.chance(2)).map(|_| 0)
                } else {
                    syscall::map_query_clear(va, self.rng.below(4) << 4)
                };
                self.count(&result);
            }
            10 => {
                if self.slot_keys.len() < 2 && self.rng.chance(2) {
                    let result = syscall::slot_alloc(nr::ANY_SLOT);
                    self.count(&result);
                    if let Ok(key) = result {
                        self.slot_keys.push(key);
                    }
                } else if !self.slot_keys.is_empty() {
                    let key = self.slot_keys.swap_remove(0);
                    let result = syscall::slot_free(key);
                    self.count(&result);
                }
            }
            11 => {
                let to = 1 + self.rng.below(self.env_count.max(1));
                let message = [self.rng.next(), self.rng.next(), self.rng.next(), self.rng.next()];
                let result = if self.rng.chance(3) && to != self.me {
                    syscall::pct_call(to, message).map(|_| ())
                } else {
                    syscall::pct_send(to, message)
                };
                self.count(&result);
            }
            12 => {
                if self.rng.chance(2) {
                    int3();
                } else {
                    ud2();
                }
            }
            13 => self.check_bad_keys(),
            14 => {
                syscall::yield_now();
                self.calls += 1;
            }
            16 => self.filter_step(),
            17 => self.ring_step(),
            18 => self.announce(),
            _ => {
                // Touch a page we never mapped: the fault comes back to us.
                let va = FUZZ_BASE + FUZZ_PAGES * PAGE + self.rng.below(64) * PAGE;
                if probe_read(va).is_some() {
                    self.fail("read an address nobody mapped");
                }
            }
        }
    }

    /// Install a filter (ARP, UDP 7 or a few other ports: the envs contend
    /// for the same packets) or remove one of ours.
    fn filter_step(&mut self) {
        use libos_runtime::filter::Filter;
        if self.filters.len() < 4 && self.rng.chance(2) {
            let filter = match self.rng.below(4) {
                0 => Filter::new().ethertype(0x0806),
                1 => Filter::udp_dst_port(7),
                2 => Filter::udp_dst_port(1000 + self.rng.below(8) as u16),
                _ => Filter::tcp_dst_port(80),
            };
            let result = libos_runtime::net::net_filter_install(&filter.encode());
            self.count(&result);
            if let Ok(id) = result {
                self.filters.push(id);
            }
        } else if !self.filters.is_empty() {
            let id = self.filters.swap_remove(self.rng.below(self.filters.len() as u64) as usize);
            let result = libos_runtime::net::net_filter_remove(id);
            self.count(&result);
            // Only we can remove our filters; a raw call of ours may have
            // (then the id is gone, or by now another env's).
            if let Err(error) = result {
                if error != Error::InvalidArgument && error != Error::PermissionDenied {
                    println!("fuzz: removing our filter {} -> {}", id, error.name());
                    self.fail("removing our own filter failed");
                }
            }
        }
    }

    /// With a NIC: transmit an ARP reply saying 10.0.2.15 is at our MAC, so
    /// QEMU's user network delivers the host's datagrams (for the UDP port
    /// 7 filters) instead of waiting for an answer to its ARP request.
    fn announce(&mut self) {
        let Ok(net) = libos_runtime::net::net_info() else { return };
        if net.mac == 0 {
            return;
        }
        let mac = &net.mac.to_le_bytes()[..6];
        let mut packet = [0u8; 48];
        packet[..6].copy_from_slice(&[0xff; 6]);
        packet[6..12].copy_from_slice(mac);
        packet[12..14].copy_from_slice(&[0x08, 0x06]);
        packet[14..22].copy_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 2]);
        packet[22..28].copy_from_slice(mac);
        packet[28..32].copy_from_slice(&[10, 0, 2, 15]);
        packet[32..38].copy_from_slice(&[0xff; 6]);
        packet[38..42].copy_from_slice(&[10, 0, 2, 2]);
        let Ok((_, key)) = frames::alloc_map(FUZZ_TX_VA, rights::ALL, map_flags::WRITE) else { return };
        let mut written = true;
        for (i, word) in packet.chunks(8).enumerate() {
            let value = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
            written &= probe_write(FUZZ_TX_VA + i as u64 * 8, value);
        }
        if written {
            let result = libos_runtime::net::net_tx(key, 0, 42);
            self.count(&result);
        }
        let _ = syscall::unmap(FUZZ_TX_VA);
        let _ = syscall::frame_free(key);
        self.calls += 4;
    }

    /// Register the receive ring on one of our pages or in the scratch
    /// block; the kernel writes packets there while we remap and free.
    fn ring_step(&mut self) {
        let mapped = self.mapped.clone();
        let va = match self.rng.pick(&mapped) {
            Some(va) if self.rng.chance(2) => va & !0xfff,
            _ => self.scratch + self.rng.below(SCRATCH_WINDOW / PAGE) * PAGE,
        };
        let len = [2112, PAGE, 2 * PAGE, 4 * PAGE, 1 << 20][self.rng.below(5) as usize];
        // SAFETY: hostile on purpose, and sound for this program: the ring
        // lands on pages the random calls mapped (never the upcall-stack or
        // final-check page) or in the scratch block (never freed); neither
        // holds Rust values, and both are read only with volatile reads
        // that accept any content.
        let result = unsafe { libos_runtime::net::net_rx_ring(va, len) };
        self.count(&result);
    }

    fn free_one(&mut self) {
        let Some(at) = self.owned_index() else { return };
        let key = self.keys[at].key;
        let result = syscall::frame_free(key);
        self.count(&result);
        match result {
            // BadKey: the abort protocol may have taken it.
            Ok(()) | Err(Error::BadKey) => self.forget_frame_of(key),
            Err(error) => {
                println!("fuzz: frame_free of an owned key -> {}", error.name());
                self.fail("frame_free refused an owned key");
            }
        }
    }

    /// Stale and forged keys must be refused with bad-key.
    fn check_bad_keys(&mut self) {
        let stale = self.stale.clone();
        let key = if self.rng.chance(2) {
            match self.rng.pick(&stale) {
                Some(key) => key,
                None => return,
            }
        } else {
            FrameKey { handle: self.rng.next(), mac: self.rng.next() }
        };
        let result = syscall::map(FUZZ_CHECK_VA, key, 0);
        self.count(&result);
        match result {
            Err(Error::BadKey) => {}
            Ok(()) => {
                let _ = syscall::unmap(FUZZ_CHECK_VA);
                println!("fuzz: map with stale/forged key {:#x}:{:#x} succeeded", key.handle, key.mac);
                self.fail("a stale or forged key was accepted");
            }
            Err(error) => {
                println!("fuzz: map with stale/forged key {:#x} -> {}", key.handle, error.name());
                if let Ok(info) = syscall::frame_query(key) {
                    println!(
                        "fuzz: that key is live: frame {:#x} owner {} owners {} (stale since {:?})",
                        info.frame_pa,
                        info.owner,
                        info.owners,
                        self.stale_why.iter().find(|(k, _, _)| *k == key).map(|(_, step, pa)| (step, pa))
                    );
                }
                self.fail("a stale or forged key got the wrong error");
            }
        }
    }

    /// Answer a repossession request (most of the time: the rest, the
    /// abort protocol takes the frames by force).
    fn answer_revocation(&mut self) {
        if revocation::INBOX.requested() == 0 || self.rng.chance(4) {
            return;
        }
        let owed = revocation::INBOX.take_requested();
        for _ in 0..owed {
            self.free_one();
        }
        let result = syscall::revoke_done();
        self.count(&result);
    }

    /// An upcall with the stack on a dynamic-window page; half the time the
    /// page is remapped to a new frame between two upcalls.
    fn upcall_step(&mut self) {
        // A request we ignored may end in the abort protocol taking the
        // newest frame (the stack's) at any tick: not now.
        if revocation::INBOX.requested() != 0 {
            return;
        }
        let Ok((_, k1)) = syscall::frame_alloc(0, rights::ALL) else { return };
        self.calls += 1;
        if syscall::map(FUZZ_STACK_VA, k1, map_flags::WRITE | map_flags::GUARANTEED).is_err() {
            let _ = syscall::frame_free(k1);
            return;
        }
        // No protected entry meanwhile: an activation arriving while the
        // page is being swapped would have no stack.
        if install_upcalls_with(FUZZ_STACK_VA, PAGE, false).is_err() {
            self.fail("set_upcalls on a mapped dynamic-window page refused");
            let _ = syscall::unmap(FUZZ_STACK_VA);
            let _ = syscall::frame_free(k1);
            return;
        }
        let expected = FUZZ_STACK_VA + PAGE - FRAME_SIZE as u64;
        let before = INT3S.load(Ordering::SeqCst);
        int3();
        if INT3S.load(Ordering::SeqCst) != before + 1 || LAST_FRAME.load(Ordering::SeqCst) != expected {
            println!(
                "fuzz: int3 count {} (wanted {}), frame at {:#x} (wanted {:#x})",
                INT3S.load(Ordering::SeqCst),
                before + 1,
                LAST_FRAME.load(Ordering::SeqCst),
                expected
            );
            self.fail("upcall not delivered on the dynamic-window stack");
        }
        let mut key = k1;
        if self.rng.chance(2) {
            let _ = syscall::unmap(FUZZ_STACK_VA);
            let _ = syscall::frame_free(k1);
            match syscall::frame_alloc(0, rights::ALL) {
                Ok((_, k2)) => {
                    key = k2;
                    if syscall::map(FUZZ_STACK_VA, k2, map_flags::WRITE | map_flags::GUARANTEED).is_ok() {
                        int3();
                        if INT3S.load(Ordering::SeqCst) != before + 2 || LAST_FRAME.load(Ordering::SeqCst) != expected {
                            println!(
                                "fuzz: int3 count {} (wanted {}), frame at {:#x} (wanted {:#x})",
                                INT3S.load(Ordering::SeqCst),
                                before + 2,
                                LAST_FRAME.load(Ordering::SeqCst),
                                expected
                            );
                            self.fail("upcall after remapping the stack page went astray");
                        }
                    }
                }
                Err(_) => key = FrameKey::default(),
            }
            self.calls += 4;
        }
        if install_heap_upcalls().is_err() {
            self.fail("could not restore the upcall table");
        }
        let _ = syscall::unmap(FUZZ_STACK_VA);
        let _ = syscall::frame_free(key);
        self.calls += 4;
    }
}

const BAD_TABLES: u64 = 6;

/// Allocate, map, touch, unmap and free one frame (retrying while the
/// kernel is taking frames back for us). A libOS within its quota must get
/// one: every manifest the fuzzer boots keeps the quotas within the pool.
fn final_check() -> Result<(), &'static str> {
    let mut tries = 0;
    let wait = || {
        if tries >= 20_000 {
            return false;
        }
        tries += 1;
        syscall::yield_now();
        true
    };
    let key = match frames::alloc_map_waiting(FUZZ_CHECK_VA, rights::ALL, map_flags::WRITE, wait) {
        Ok((_, key)) => key,
        Err(failed) => {
            // A refused `map` has freed its frame again: count it as held.
            let (what, error, freed) = match failed {
                AllocMapError::Alloc(error) => ("frame_alloc", error, 0),
                AllocMapError::Map(error) => ("map", error, 1),
            };
            let i = syscall::env_info().unwrap_or_default();
            if error == Error::QuotaExceeded && i.frames_charged + freed >= i.quota_frames {
                // Frames whose keys a random call wrote where we cannot read
                // them stay ours until exit: at the quota, refusal is right.
                println!(
                    "fuzz: final {} -> quota-exceeded at {} of {} frames: fine",
                    what,
                    i.frames_charged + freed,
                    i.quota_frames
                );
                return Ok(());
            }
            println!("fuzz: final {} -> {} after {} retries", what, error.name(), tries);
            return Err("refused within the quota");
        }
    };
    if !probe_write(FUZZ_CHECK_VA, 0x600d) || probe_read(FUZZ_CHECK_VA) != Some(0x600d) {
        return Err("touch");
    }
    syscall::unmap(FUZZ_CHECK_VA).map_err(|_| "unmap")?;
    syscall::frame_free(key).map_err(|_| "free")
}

/// Write the refusable tables: each has live entries but a defect the
/// kernel must refuse.
fn write_bad_tables(base: u64, scratch: u64) {
    let entry = attacker_upcall_entry as *const () as u64;
    let good = UpcallTable {
        exception_entry: entry,
        page_fault_entry: entry,
        interrupt_entry: entry,
        protected_entry: entry,
        revocation_entry: entry,
        stack_base: scratch,
        stack_len: 4096,
    };
    let tables = [
        UpcallTable { exception_entry: KERNEL_ADDR, ..good },
        UpcallTable { stack_len: 100, ..good },
        UpcallTable { stack_base: scratch + 8, ..good },
        UpcallTable { stack_base: 0, ..good },
        UpcallTable { stack_base: USER_TOP - 256, ..good },
        UpcallTable { stack_len: (1 << 20) + 16, ..good },
    ];
    for (i, table) in tables.iter().enumerate() {
        // SAFETY: `base` is a page of our own, 64 bytes per table.
        unsafe { core::ptr::write((base + i as u64 * 64) as *mut UpcallTable, *table) };
    }
}

fn fuzz(env: &Env) -> Outcome {
    let seed = arg(env, "seed").unwrap_or(1);
    let calls = arg(env, "calls").unwrap_or(3000);
    let trace = arg(env, "trace").unwrap_or(0) != 0;
    println!("fuzz: seed={} calls={} env={}", seed, calls, env.id);
    let alloc_block = |len: usize| {
        let layout = core::alloc::Layout::from_size_align(len, 4096).expect("layout");
        // SAFETY: nonzero size; never freed.
        unsafe { alloc::alloc::alloc_zeroed(layout) as u64 }
    };
    let scratch = alloc_block(SCRATCH_LEN);
    let bad_tables = alloc_block(PAGE as usize);
    if scratch == 0 || bad_tables == 0 {
        return Err("heap too small for the scratch block (memory_kib >= 4096)");
    }
    write_bad_tables(bad_tables, scratch);
    let mut f = Fuzz {
        stale_why: Vec::new(),
        children: Vec::new(),
        child_keys: Vec::new(),
        rng: Rng(seed ^ env.id.wrapping_mul(0xa076_1d64_78bd_642f)),
        me: env.id,
        env_count: env.env_count,
        trace,
        scratch,
        bad_tables,
        keys: Vec::new(),
        stale: Vec::new(),
        mapped: Vec::new(),
        slot_keys: Vec::new(),
        filters: Vec::new(),
        step: 0,
        calls: 0,
        errors: 0,
        failures: 0,
    };
    f.announce();
    while f.calls < calls {
        f.step += 1;
        f.answer_revocation();
        if f.rng.chance(2) {
            f.raw_call();
        } else {
            f.valid_step();
        }
        if f.step.is_multiple_of(64) {
            // The budget holds whatever we did.
            if let Ok(i) = syscall::env_info() {
                if i.kmem_used > i.kmem_limit {
                    println!("fuzz: kmem_used={} over kmem_limit={}", i.kmem_used, i.kmem_limit);
                    f.fail("kernel memory over the budget");
                }
            }
        }
        if f.step.is_multiple_of(1000) {
            println!(
                "fuzz: seed={} step={} calls={} errors={} keys={} mapped={}",
                seed,
                f.step,
                f.calls,
                f.errors,
                f.keys.len(),
                f.mapped.len()
            );
        }
        if f.failures > 20 {
            break;
        }
    }
    if install_heap_upcalls().is_err() {
        f.fail("final set_upcalls refused");
    }
    // Give back what we hold (the kernel would at exit anyway): mappings
    // (all of the fuzz region), filters, frames.
    for i in 0..FUZZ_PAGES {
        let _ = syscall::unmap(FUZZ_BASE + i * PAGE);
    }
    for va in core::mem::take(&mut f.mapped) {
        let _ = syscall::unmap(va);
    }
    for id in core::mem::take(&mut f.filters) {
        let _ = libos_runtime::net::net_filter_remove(id);
    }
    while let Some(at) = f.owned_index() {
        let key = f.keys[at].key;
        let _ = syscall::frame_free(key);
        f.forget_frame_of(key);
    }
    // The kernel still does its job: a fresh frame maps, holds data and frees.
    if let Err(why) = final_check() {
        let i = syscall::env_info().unwrap_or_default();
        println!(
            "fuzz: final check: {} (kmem_used={} kmem_limit={} frames_charged={} page_table_frames={} quota_frames={})",
            why, i.kmem_used, i.kmem_limit, i.frames_charged, i.page_table_frames, i.quota_frames
        );
        f.fail("alloc/map/touch/free does not work after fuzzing");
    }
    let stale = f.stale.clone();
    for key in stale.iter().take(16) {
        if syscall::map(FUZZ_CHECK_VA, *key, 0) != Err(Error::BadKey) {
            f.fail("a stale key is not refused at the end");
        }
    }
    let net = libos_runtime::net::net_info().unwrap_or_default();
    println!(
        "fuzz: net mac={:#x} rx_packets={} rx_delivered={} rx_unclaimed={} tx_packets={}",
        net.mac, net.rx_packets, net.rx_delivered, net.rx_unclaimed, net.tx_packets
    );
    println!(
        "fuzz: stats seed={} steps={} int3={} ud2={} faults={} revocations={} aborts={} pct_in={} keys_in={} last_fault={:#x}",
        seed,
        f.step,
        INT3S.load(Ordering::SeqCst),
        UD2S.load(Ordering::SeqCst),
        FAULTS.load(Ordering::SeqCst),
        revocation::INBOX.requests() + revocation::INBOX.aborts(),
        revocation::INBOX.aborts(),
        PCT_MSGS.load(Ordering::SeqCst),
        INBOX_COUNT.load(Ordering::SeqCst),
        LAST_FAULT.load(Ordering::SeqCst)
    );
    if f.failures == 0 {
        println!("fuzz: done seed={} calls={} errors={} ok", seed, f.calls, f.errors);
        Ok(())
    } else {
        println!("fuzz: done seed={} calls={} errors={} FAILED failures={}", seed, f.calls, f.errors, f.failures);
        Err("the kernel misbehaved under fuzzing")
    }
}
