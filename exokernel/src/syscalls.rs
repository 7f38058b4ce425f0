//! System-call dispatch: decode the number and arguments from the trap
//! frame, check every argument, act, and encode the result in `rax`.

use crate::arch::trap::{LightSyscall, Return, TrapFrame};
use crate::env::EnvState;
use crate::kernel::{bump, Kernel, COUNTERS, KERNEL};
use crate::umem::{self, UserSlice};
use exokernel::usercheck::check_user_entry;
use shared_abi::syscall::{encode, nr, Error, KernelStats};
use shared_abi::upcall::{UpcallTable, FRAME_SIZE};

/// Largest console write in one call.
const MAX_CONSOLE_WRITE: u64 = 4096;

/// Calls that never switch environments take the light path: the entry
/// stub calls them directly without building a full trap frame.
pub const LIGHT: &[(u64, LightSyscall)] =
    &[(nr::NULL, sys_null), (nr::CONSOLE_WRITE, sys_console_write), (nr::SET_UPCALLS, sys_set_upcalls), (nr::STATS, sys_stats)];

extern "C" fn sys_null(_: u64, _: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    bump(&COUNTERS.syscalls);
    0
}

fn with_kernel(f: impl FnOnce(&mut Kernel) -> Result<u64, Error>) -> u64 {
    bump(&COUNTERS.syscalls);
    let mut guard = KERNEL.lock();
    let kernel = guard.as_mut().expect("kernel initialised");
    encode(f(kernel))
}

extern "C" fn sys_console_write(ptr: u64, len: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| console_write(k, ptr, len))
}

extern "C" fn sys_set_upcalls(ptr: u64, _: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| set_upcalls(k, ptr))
}

extern "C" fn sys_stats(ptr: u64, len: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| stats(k, ptr, len))
}

/// The full path: calls that may switch environments, and unknown numbers.
pub fn handle_syscall(frame: &mut TrapFrame) -> Return {
    bump(&COUNTERS.syscalls);
    let number = frame.rax;
    let args = [frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8, frame.r9];
    let mut guard = KERNEL.lock();
    let kernel = guard.as_mut().expect("kernel initialised");
    let result = match number {
        nr::EXIT => {
            kernel.end_current(EnvState::Exited(args[0] as i64));
            kernel.switch_next(frame);
            return Return::Iret;
        }
        nr::YIELD => {
            frame.rax = 0;
            kernel.switch_next(frame);
            return Return::Iret;
        }
        _ => Err(Error::UnknownSyscall),
    };
    frame.rax = encode(result);
    Return::Sysret
}

fn console_write(kernel: &mut Kernel, ptr: u64, len: u64) -> Result<u64, Error> {
    if len > MAX_CONSOLE_WRITE {
        return Err(Error::BadLength);
    }
    if len == 0 {
        return Ok(0);
    }
    let mut buf = [0u8; MAX_CONSOLE_WRITE as usize];
    let index = kernel.current;
    let space = kernel.envs[index].space.as_ref().ok_or(Error::NoSuchEnv)?;
    UserSlice::new(space, ptr, len, 1)?.read(&mut buf[..len as usize])?;
    kernel.console_bytes(index, &buf[..len as usize]);
    Ok(len)
}

fn set_upcalls(kernel: &mut Kernel, ptr: u64) -> Result<u64, Error> {
    let env = kernel.current_env();
    let space = env.space.as_ref().ok_or(Error::NoSuchEnv)?;
    let table: UpcallTable = umem::read_value(space, ptr)?;
    for entry in [table.exception_entry, table.page_fault_entry, table.interrupt_entry, table.protected_entry] {
        if entry != 0 {
            check_user_entry(entry)?;
        }
    }
    let any = table.exception_entry | table.page_fault_entry | table.interrupt_entry | table.protected_entry != 0;
    if any {
        exokernel::usercheck::check_user_range(table.stack_base, table.stack_len, 16)?;
        if table.stack_len < 2 * FRAME_SIZE as u64 + 128 {
            return Err(Error::BadLength);
        }
    }
    env.upcalls = table;
    env.upcall_page = None;
    Ok(0)
}

fn stats(kernel: &mut Kernel, ptr: u64, len: u64) -> Result<u64, Error> {
    let size = core::mem::size_of::<KernelStats>() as u64;
    if len != size {
        return Err(Error::BadLength);
    }
    let space = kernel.current_env().space.as_ref().ok_or(Error::NoSuchEnv)?;
    umem::write_value(space, ptr, &COUNTERS.snapshot())?;
    Ok(size)
}
