//! The process table in its shared page: a lock word, then the
//! [`ProcTable`]. Init allocates the page ([`create`]); every process maps
//! it at [`PROCTAB_VA`] (fork and spawn share it on). The lock holds the
//! holder's environment id, so a process ended while holding it (SIGKILL
//! mid-update) does not wedge the rest: a waiter that finds the holder
//! gone takes the lock over.

use crate::layout::{INIT_PROCTAB_VA, PROCTAB_VA};
use crate::proctab::{ProcTable, INIT_PID};
use core::sync::atomic::{AtomicU64, Ordering};
use libos_runtime::syscall::{self, map_flags, rights, Error, FrameKey};

/// The shared page.
#[repr(C)]
struct Shared {
    lock: AtomicU64,
    _reserved: u64,
    table: ProcTable,
}

const _: () = assert!(core::mem::size_of::<Shared>() <= 4096);

/// Where this environment maps the table page: `PROCTAB_VA` in a process,
/// `INIT_PROCTAB_VA` in init (set by `create`).
static TABLE_VA: AtomicU64 = AtomicU64::new(PROCTAB_VA);

/// Init's key to the table page (processes keep theirs in their pmap).
static ROOT_KEY: AtomicU64 = AtomicU64::new(0);
static ROOT_MAC: AtomicU64 = AtomicU64::new(0);

fn shared() -> &'static Shared {
    // SAFETY: every user of this module runs in an environment that mapped
    // the table page at TABLE_VA (init in `create`, processes from their
    // start); the page stays mapped for the environment's life.
    unsafe { &*(TABLE_VA.load(Ordering::Relaxed) as *const Shared) }
}

/// The key to the table page this environment holds.
pub fn key() -> Option<FrameKey> {
    let handle = ROOT_KEY.load(Ordering::SeqCst);
    if handle != 0 {
        return Some(FrameKey { handle, mac: ROOT_MAC.load(Ordering::SeqCst) });
    }
    crate::process::pmap().find(PROCTAB_VA).map(|e| e.key)
}

/// Init: allocate and map the table, and enter itself as pid 1.
pub fn create(init_env: u64, name: &str) -> Result<u64, Error> {
    let (_, key) = libos_runtime::frames::alloc_frame(rights::ALL)?;
    syscall::map(INIT_PROCTAB_VA, key, map_flags::WRITE | map_flags::GUARANTEED)?;
    TABLE_VA.store(INIT_PROCTAB_VA, Ordering::SeqCst);
    ROOT_KEY.store(key.handle, Ordering::SeqCst);
    ROOT_MAC.store(key.mac, Ordering::SeqCst);
    // SAFETY: the page was just mapped writable, zeroed by the kernel, and
    // nobody else can reach it yet.
    unsafe {
        core::ptr::write(
            INIT_PROCTAB_VA as *mut Shared,
            Shared { lock: AtomicU64::new(0), _reserved: 0, table: ProcTable::default() },
        )
    };
    let pid = with(|t| t.add(0, init_env, name)).ok_or(Error::NoMemory)?;
    debug_assert_eq!(pid, INIT_PID);
    Ok(pid)
}

/// Run `f` on the table with the lock held.
pub fn with<R>(f: impl FnOnce(&mut ProcTable) -> R) -> R {
    let me = crate::process::my_env();
    let lock = &shared().lock;
    let mut nested = false;
    loop {
        match lock.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => break,
            Err(holder) if holder == me => {
                // A handler (a fault, a signal) interrupted this very
                // environment inside `with`: go on, and leave the lock to
                // the outer call.
                nested = true;
                break;
            }
            Err(holder) => {
                // Gone without letting go? Take it over; else let it run.
                if syscall::env_wake(holder) == Err(Error::NoSuchEnv)
                    && lock.compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed).is_ok()
                {
                    break;
                }
                syscall::yield_now();
            }
        }
    }
    // SAFETY: the lock gives this environment the table alone; the page
    // is mapped writable (see `shared`).
    let table = unsafe { &mut *(core::ptr::addr_of!(shared().table) as *mut ProcTable) };
    let result = f(table);
    if !nested {
        lock.store(0, Ordering::Release);
    }
    result
}

/// A copy of the table (for `ps`).
pub fn snapshot() -> ProcTable {
    with(|t| *t)
}
