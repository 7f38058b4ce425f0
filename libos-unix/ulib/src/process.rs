//! A process's life: its start, its page-fault and exception handlers,
//! and the Unix calls about processes (exit, wait, kill, getpid, getppid).
//!
//! Memory is the process's own business: the kernel maps only what the
//! process (or its parent, building it) asks for with keys, and keeps the
//! mappings in caches that may drop an ordinary one. The page-fault
//! handler keeps the truth in the process's page table ([`crate::pmap`]):
//! a page it knows is mapped again; a write to a copy-on-write page gets
//! its own frame (or, once the process is the frame's only owner, the
//! same frame made writable); a first touch of heap or stack gets a zeroed
//! frame; anything else is a segmentation fault.

use crate::errno::Errno;
use crate::layout::*;
use crate::pmap::{self, Entry, Kind, Pmap};
use crate::proctab::{flags, WaitStatus, INIT_PID};
use crate::table;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use libos_runtime::rt::{self, set_handler, Env};
use libos_runtime::syscall::{self, map_flags, rights, Error, FrameKey};
use libos_runtime::upcall::{UpcallFrame, UpcallKind};
use libos_runtime::{print, println};

pub const SIGKILL: u32 = 9;
pub const SIGTERM: u32 = 15;
pub const SIGSEGV: u32 = 11;
pub const SIGILL: u32 = 4;
pub const SIGFPE: u32 = 8;
pub const SIGTRAP: u32 = 5;

/// The code an environment exits with when `exec` handed its process to a
/// new environment (its parent's `wait` ignores that end).
pub const EXEC_HANDOFF: i32 = 0x4578_6563; // "Exec"
/// First word of a signal delivered by protected control transfer.
pub const SIGNAL_MAGIC: u64 = 0x5349_474e_414c; // "SIGNAL"

static MY_ENV: AtomicU64 = AtomicU64::new(0);
static MY_PID: AtomicU64 = AtomicU64::new(0);
static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static SIGTERM_HANDLER: AtomicU64 = AtomicU64::new(0);

/// This environment's id.
pub fn my_env() -> u64 {
    MY_ENV.load(Ordering::SeqCst)
}

/// TSC ticks per second.
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::SeqCst)
}

/// The process's own page table.
pub fn pmap() -> Pmap<'static> {
    let header = PMAP_VA as *mut pmap::Header;
    // SAFETY: a process maps its pmap pages (guaranteed, writable, its
    // own) before it starts, at PMAP_VA, as many as the header's `pages`
    // says (`grow_pmap` maps one more before it counts it); the entries
    // follow the header. Only this process's handlers and fork use them,
    // and fork walks them with a cursor that tolerates the handler's
    // inserts (`Pmap::next_from`).
    unsafe {
        let pages = ((*header).pages as usize).clamp(1, PMAP_MAX_PAGES);
        Pmap {
            header: &mut *header,
            entries: core::slice::from_raw_parts_mut(header.add(1) as *mut Entry, pmap::capacity(pages)),
        }
    }
}

/// Record `entry` in the process's page table, growing it by a page when
/// it is full.
pub fn pmap_insert(entry: Entry) -> Result<(), Errno> {
    if pmap().insert(entry).is_ok() {
        return Ok(());
    }
    let pages = pmap().header.pages;
    if pages as usize >= PMAP_MAX_PAGES {
        return Err(Errno::ENOMEM);
    }
    let va = PMAP_VA + pages * PAGE;
    let key = alloc_frame().map_err(|_| Errno::ENOMEM)?;
    syscall::map(va, key, map_flags::WRITE | map_flags::GUARANTEED).map_err(Errno::from)?;
    pmap().header.pages = pages + 1;
    pmap().insert(Entry::new(va, key, Kind::Fresh, pmap::WRITABLE | pmap::GUARANTEED)).map_err(|_| Errno::ENOMEM)?;
    pmap().insert(entry).map_err(|_| Errno::ENOMEM)
}

/// Note who this environment is (init, or a process at its start or
/// after fork): its id, and its pid from the table.
pub fn set_identity(env: u64) {
    MY_ENV.store(env, Ordering::SeqCst);
    let pid = table::with(|t| t.by_env(env).map(|p| p.pid)).unwrap_or(0);
    MY_PID.store(pid, Ordering::SeqCst);
}

/// Init's identity: pid 1 in a table it created.
pub fn set_init(env: &Env) {
    MY_ENV.store(env.id, Ordering::SeqCst);
    TSC_HZ.store(env.tsc_hz, Ordering::SeqCst);
    MY_PID.store(INIT_PID, Ordering::SeqCst);
}

/// The start of every program (`program_main!`): handlers first (the heap
/// and stack are demand-zeroed by them), then its identity, then `main`
/// with its arguments; its return value is its exit status.
pub fn start(env: &Env, main: fn(&[&str]) -> i32) -> i32 {
    TSC_HZ.store(env.tsc_hz, Ordering::SeqCst);
    MY_ENV.store(env.id, Ordering::SeqCst);
    // SAFETY: whoever built this process mapped the upcall stack at
    // UPCALL_VA (guaranteed, writable, its own), and nothing else uses it.
    unsafe { rt::use_upcall_stack(UPCALL_VA, UPCALL_PAGES * PAGE) };
    if set_handler(UpcallKind::PageFault, on_page_fault).is_err()
        || set_handler(UpcallKind::Exception, on_exception).is_err()
    {
        syscall::exit(126);
    }
    set_identity(env.id);
    crate::io::decode_at_start(env.params);
    let args: Vec<&str> = env.args.split(crate::spawn::ARG_SEPARATOR).filter(|a| !a.is_empty()).collect();
    let code = main(&args);
    exit(code)
}

pub fn getpid() -> u64 {
    MY_PID.load(Ordering::SeqCst)
}

pub fn getppid() -> u64 {
    let me = getpid();
    table::with(|t| t.get(me).map_or(0, |p| p.ppid))
}

// ----- ending -----

/// Record that process `pid` ended with `status`, pass its children to
/// init and wake its parent (and init, if it passed any). False if it had
/// ended already.
fn record_end(pid: u64, status: WaitStatus) -> bool {
    let parent_env = table::with(|t| {
        if !t.end(pid, status) {
            return None;
        }
        let orphans = t.orphan_children(pid);
        let ppid = t.get(pid).map_or(INIT_PID, |p| p.ppid);
        // Init has something to collect only if it got children (a parent
        // that is init is woken as the parent).
        let init = t.get(INIT_PID).map(|p| p.env).filter(|_| orphans > 0 && ppid != INIT_PID);
        Some((t.get(ppid).map(|p| p.env), init))
    });
    match parent_env {
        Some((parent, init)) => {
            for env in [parent, init].into_iter().flatten() {
                let _ = syscall::env_wake(env);
            }
            true
        }
        None => false,
    }
}

/// End the process with `code` (its parent's `wait` reports it).
pub fn exit(code: i32) -> ! {
    crate::io::close_all();
    record_end(getpid(), WaitStatus::Exited(code));
    syscall::exit(code)
}

/// End the process as if killed by `signal`.
pub fn die(signal: u32) -> ! {
    crate::io::close_all();
    record_end(getpid(), WaitStatus::Signaled(signal));
    syscall::exit(128 + signal as i32)
}

// ----- wait -----

/// Note ends the kernel reported to this environment (`env_reap`): a
/// process that ended without saying so (ended by the kernel, or by
/// `env_kill`) becomes a zombie with the status the kernel gave.
fn take_kernel_notices() {
    while let Ok(end) = syscall::env_reap() {
        let pid = table::with(|t| t.by_env(end.id).map(|p| p.pid));
        if let Some(pid) = pid {
            let status = if end.exited == 1 {
                WaitStatus::Exited(end.code as i32)
            } else {
                WaitStatus::Signaled(if (1..64).contains(&end.code) { end.code as u32 } else { SIGKILL })
            };
            record_end(pid, status);
        }
    }
}

/// `waitpid`: wait for child `which` (any child for None) to end and
/// collect its status; with `nohang`, Ok(None) if none has ended yet.
/// `ECHILD` when there is no such child.
pub fn waitpid(which: Option<u64>, nohang: bool) -> Result<Option<(u64, WaitStatus)>, Errno> {
    let me = getpid();
    loop {
        take_kernel_notices();
        enum Found {
            Ended(u64, WaitStatus),
            Running,
            NoChild,
        }
        let found = table::with(|t| match t.reap(me, which) {
            Some((pid, status)) => Found::Ended(pid, status),
            None if t.has_children(me, which) => Found::Running,
            None => Found::NoChild,
        });
        match found {
            Found::Ended(pid, status) => return Ok(Some((pid, status))),
            Found::NoChild => return Err(Errno::ECHILD),
            Found::Running if nohang => return Ok(None),
            // Asleep until a child's end wakes us (it wakes its parent
            // after writing its status; the kernel wakes the creator).
            Found::Running => syscall::block(),
        }
    }
}

/// `wait`: any child.
pub fn wait() -> Result<(u64, WaitStatus), Errno> {
    waitpid(None, false).map(|found| found.expect("blocking wait returns a child"))
}

// ----- signals -----

/// `kill(pid, signal)`: SIGKILL ends the process at once (the kernel
/// reclaims everything it held); SIGTERM runs its handler if it installed
/// one ([`on_sigterm`]), else ends it too; signal 0 checks it exists.
pub fn kill(pid: u64, signal: u32) -> Result<(), Errno> {
    let target = table::with(|t| t.get(pid).filter(|p| p.state == crate::proctab::state::RUNNING).copied());
    let target = target.ok_or(Errno::ESRCH)?;
    if pid == INIT_PID && signal != 0 {
        return Err(Errno::EPERM);
    }
    match signal {
        0 => Ok(()),
        SIGTERM if target.flags & flags::CATCHES_SIGTERM != 0 => loop {
            match syscall::pct_send(target.env, [SIGNAL_MAGIC, SIGTERM as u64, getpid(), 0]) {
                Err(Error::Again) => syscall::yield_now(),
                other => return other.map_err(Errno::from),
            }
        },
        SIGKILL | SIGTERM => {
            if pid == getpid() {
                die(signal);
            }
            syscall::env_kill(target.env, signal as i64).map_err(Errno::from)?;
            record_end(pid, WaitStatus::Signaled(signal));
            Ok(())
        }
        _ => Err(Errno::EINVAL),
    }
}

/// Handle SIGTERM with `handler` (run in a protected-entry activation of
/// this environment; it may call `exit`).
pub fn on_sigterm(handler: fn()) -> Result<(), Errno> {
    SIGTERM_HANDLER.store(handler as usize as u64, Ordering::SeqCst);
    rt::set_pct_handler(on_signal).map_err(Errno::from)?;
    let me = getpid();
    table::with(|t| {
        if let Some(p) = t.get_mut(me) {
            p.flags |= flags::CATCHES_SIGTERM;
        }
    });
    Ok(())
}

fn on_signal(_sender: u64, msg: [u64; 4], _is_async: bool) -> [u64; 4] {
    if msg[0] == SIGNAL_MAGIC && msg[1] == SIGTERM as u64 {
        let handler = SIGTERM_HANDLER.load(Ordering::SeqCst);
        if handler != 0 {
            // SAFETY: only `on_sigterm` stores here, always a `fn()`.
            let handler: fn() = unsafe { core::mem::transmute::<usize, fn()>(handler as usize) };
            handler();
        }
    }
    [0; 4]
}

// ----- the handlers -----

/// A frame (waiting out `Again` while the kernel takes frames back from
/// someone for us).
pub fn alloc_frame() -> Result<FrameKey, Error> {
    loop {
        match syscall::frame_alloc(0, rights::ALL) {
            Ok((_, key)) => return Ok(key),
            Err(Error::Again) => syscall::yield_now(),
            Err(error) => return Err(error),
        }
    }
}

/// The map flags for an entry as it stands.
pub fn map_flags_of(entry: &Entry) -> u64 {
    let mut flags = 0;
    if entry.has(pmap::WRITABLE) && !entry.has(pmap::COW) {
        flags |= map_flags::WRITE;
    }
    if entry.has(pmap::GUARANTEED) {
        flags |= map_flags::GUARANTEED;
    }
    if entry.has(pmap::EXEC) {
        flags |= map_flags::EXEC;
    }
    flags
}

fn on_page_fault(frame: &mut UpcallFrame) {
    let page = frame.fault_addr & !(PAGE - 1);
    let write = frame.error_code & 2 != 0;
    let present = frame.error_code & 1 != 0;
    let result = match pmap().find(page) {
        Some(entry) if write && entry.has(pmap::COW) => copy_on_write(page, entry, present),
        Some(entry) if write && !entry.has(pmap::WRITABLE) => Err(Errno::EFAULT),
        // A mapping the kernel's caches dropped: map it again.
        Some(entry) => syscall::map(page, entry.key, map_flags_of(&entry) | map_flags::REPLACE).map_err(Errno::from),
        None if !present && demand_zero(page) => zero_fill(page),
        None => Err(Errno::EFAULT),
    };
    match result {
        Ok(()) => {}
        Err(Errno::EFAULT) => {
            println!("pid {}: segmentation fault at {:#x} (rip {:#x})", getpid(), frame.fault_addr, frame.rip);
            die(SIGSEGV);
        }
        Err(error) => {
            println!("pid {}: out of memory at {:#x} ({})", getpid(), frame.fault_addr, error);
            die(SIGKILL);
        }
    }
}

fn zero_fill(page: u64) -> Result<(), Errno> {
    let key = alloc_frame().map_err(|_| Errno::ENOMEM)?;
    let entry = Entry::new(page, key, Kind::Anon, pmap::WRITABLE);
    if pmap_insert(entry).is_err() {
        let _ = syscall::frame_free(key);
        return Err(Errno::ENOMEM);
    }
    syscall::map(page, key, map_flags::WRITE).map_err(Errno::from)
}

/// The first write to a page shared copy-on-write.
fn copy_on_write(page: u64, entry: Entry, present: bool) -> Result<(), Errno> {
    let owners = syscall::frame_query(entry.key).map_err(Errno::from)?.owners;
    let key = if owners <= 1 {
        // Everyone else let go: the frame is ours alone now.
        entry.key
    } else {
        let copy = alloc_frame().map_err(|_| Errno::ENOMEM)?;
        if !present {
            syscall::map(page, entry.key, map_flags::REPLACE).map_err(Errno::from)?;
        }
        syscall::map(SCRATCH_VA, copy, map_flags::WRITE | map_flags::REPLACE).map_err(Errno::from)?;
        // SAFETY: both pages are mapped (the faulting one readable, the
        // scratch page writable and ours alone) and do not overlap.
        unsafe { core::ptr::copy_nonoverlapping(page as *const u8, SCRATCH_VA as *mut u8, PAGE as usize) };
        let _ = syscall::unmap(SCRATCH_VA);
        copy
    };
    syscall::map(page, key, map_flags::WRITE | map_flags::REPLACE).map_err(Errno::from)?;
    if key != entry.key {
        // Our share of the old frame goes (the other owners keep it).
        let _ = syscall::frame_free(entry.key);
    }
    if let Some(e) = pmap().find_mut(page) {
        e.key = key;
        e.set(pmap::COW, false);
    }
    Ok(())
}

fn on_exception(frame: &mut UpcallFrame) {
    let signal = match frame.vector {
        0 | 16 | 19 => SIGFPE,
        3 => SIGTRAP,
        13 | 14 => SIGSEGV,
        _ => SIGILL,
    };
    print!("pid {}: exception {} at {:#x}: signal {}\n", getpid(), frame.vector, frame.rip, signal);
    die(signal);
}
