//! System-call dispatch: decode the number and arguments from the trap
//! frame, check every argument, act, and encode the result in `rax`.

use crate::arch::cpu::rdtsc;
use crate::arch::trap::{LightSyscall, Return, TrapFrame};
use crate::counters::{bump, COUNTERS};
use crate::env::EnvState;
use crate::kernel::{Kernel, KERNEL};
use crate::umem::{self, UserSlice};
use kcore::kmem::KmemObject;
use shared_abi::net::{nr as net_nr, FilterId};
use shared_abi::syscall::{encode, nr, EnvInfo, Error, FrameKey, KernelStats, Rights, SlotKey};
use shared_abi::upcall::UpcallTable;

/// Largest console write in one call.
const MAX_CONSOLE_WRITE: u64 = 4096;

/// Calls that never switch environments take the light path: the entry
/// stub calls them directly without building a full trap frame.
pub const LIGHT: &[(u64, LightSyscall)] = &[
    (nr::NULL, sys_null),
    (nr::CONSOLE_WRITE, sys_console_write),
    (nr::SET_UPCALLS, sys_set_upcalls),
    (nr::STATS, sys_stats),
    (nr::FRAME_ALLOC, sys_frame_alloc),
    (nr::FRAME_FREE, sys_frame_free),
    (nr::FRAME_SHARE, sys_frame_share),
    (nr::FRAME_QUERY, sys_frame_query),
    (nr::MAP, sys_map),
    (nr::UNMAP, sys_unmap),
    (nr::MAP_QUERY, sys_map_query),
    (nr::MAP_QUERY_RANGE, sys_map_query_range),
    (nr::GUARANTEE, sys_guarantee),
    (nr::REVOKE_DONE, sys_revoke_done),
    (nr::KEY_BENCH, sys_key_bench),
    (nr::SLOT_ALLOC, sys_slot_alloc),
    (nr::SLOT_FREE, sys_slot_free),
    (nr::PCT_SEND, sys_pct_send),
    (nr::ENV_INFO, sys_env_info),
    (net_nr::NET_RX_RING, sys_net_rx_ring),
    (net_nr::NET_FILTER_INSTALL, sys_net_filter_install),
    (net_nr::NET_FILTER_REMOVE, sys_net_filter_remove),
    (net_nr::NET_TX, sys_net_tx),
    (net_nr::NET_INFO, sys_net_info),
    (net_nr::DEMUX_BENCH, sys_demux_bench),
    (nr::ENV_CREATE, sys_env_create),
    (nr::ENV_START, sys_env_start),
    (nr::ENV_KILL, sys_env_kill),
    (nr::ENV_MAP, sys_env_map),
    (nr::ENV_WRITE, sys_env_write),
    (nr::ENV_REAP, sys_env_reap),
    (nr::ENV_WAKE, sys_env_wake),
    (nr::ARCHIVE_READ, sys_archive_read),
    (nr::CONSOLE_READ, sys_console_read),
    (nr::ENV_MAP_BATCH, sys_env_map_batch),
];

/// Never reached from ring 3 (the entry stub answers number 0 itself);
/// kept in the table so the light path's own cost stays measurable by
/// other calls and the table stays complete.
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
    with_kernel(|k| {
        k.prefault(ptr, len.min(MAX_CONSOLE_WRITE));
        console_write(k, ptr, len)
    })
}

extern "C" fn sys_set_upcalls(ptr: u64, _: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| {
        k.prefault(ptr, core::mem::size_of::<UpcallTable>() as u64);
        set_upcalls(k, ptr)
    })
}

extern "C" fn sys_stats(ptr: u64, len: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| {
        k.prefault(ptr, core::mem::size_of::<KernelStats>() as u64);
        stats(k, ptr, len)
    })
}

/// Bytes of a frame key in user memory.
const KEY_BYTES: u64 = core::mem::size_of::<FrameKey>() as u64;

// Each handler decodes its arguments once (a frame key from its two
// registers) and hands them to the subsystem that owns what the call is
// about, with the calling environment's index and whatever else it needs.

fn key(handle: u64, mac: u64) -> FrameKey {
    FrameKey { handle, mac }
}

/// A rights word: unknown bits are `InvalidArgument`.
fn rights(word: u64) -> Result<Rights, Error> {
    Rights::from_word(word).ok_or(Error::InvalidArgument)
}

extern "C" fn sys_frame_alloc(want_pa: u64, rights_word: u64, out: u64, for_env: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| {
        k.prefault(out, KEY_BYTES);
        let me = k.current();
        let owner = k.alloc_owner(for_env)?;
        let other = k.kmem_elsewhere(owner);
        k.memory.frame_alloc(me, owner, want_pa, rights(rights_word)?, out, other, rdtsc())
    })
}

extern "C" fn sys_frame_free(lo: u64, hi: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| k.memory.frame_free(k.current(), key(lo, hi)))
}

extern "C" fn sys_frame_share(lo: u64, hi: u64, to_env: u64, rights_word: u64, out: u64, flags: u64) -> u64 {
    with_kernel(|k| {
        if flags & !shared_abi::syscall::share_flags::CO_OWN != 0 {
            return Err(Error::InvalidArgument);
        }
        k.prefault(out, KEY_BYTES);
        let me = k.current();
        let to = k.envs.live_index_of(to_env).ok_or(Error::NoSuchEnv)?;
        let (other, to_other) = (k.kmem_elsewhere(me), k.kmem_elsewhere(to));
        let co_own = flags != 0;
        k.memory.frame_share(me, key(lo, hi), to, rights(rights_word)?, out, co_own, other, to_other)
    })
}

extern "C" fn sys_frame_query(lo: u64, hi: u64, out: u64, _: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| {
        k.prefault(out, core::mem::size_of::<shared_abi::syscall::FrameInfo>() as u64);
        k.memory.frame_query(k.current(), key(lo, hi), out)
    })
}

extern "C" fn sys_map(va: u64, lo: u64, hi: u64, flags: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| {
        let me = k.current();
        let other = k.kmem_elsewhere(me);
        k.memory.map(me, va, key(lo, hi), flags, other, rdtsc())
    })
}

extern "C" fn sys_unmap(va: u64, _: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| k.memory.unmap(k.current(), va))
}

extern "C" fn sys_map_query(va: u64, clear: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| k.memory.map_query(k.current(), va, clear))
}

extern "C" fn sys_map_query_range(va: u64, pages: u64, out: u64, flags: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| {
        use shared_abi::syscall::query_range::{bitmap_words, MAX_QUERY_PAGES};
        k.prefault(out, bitmap_words(pages.min(MAX_QUERY_PAGES)) * 8);
        k.memory.map_query_range(k.current(), va, pages, out, flags)
    })
}

extern "C" fn sys_guarantee(va: u64, on: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| k.memory.guarantee(k.current(), va, on, rdtsc()))
}

extern "C" fn sys_revoke_done(_: u64, _: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| Ok(k.memory.revoke_done(k.current())))
}

extern "C" fn sys_key_bench(lo: u64, hi: u64, iterations: u64, _: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| k.memory.key_bench(k.current(), key(lo, hi), iterations))
}

extern "C" fn sys_slot_alloc(position: u64, _: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| k.cpu.slot_alloc(k.current(), position))
}

extern "C" fn sys_slot_free(key: u64, _: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| k.cpu.slot_free(k.current(), SlotKey(key)))
}

extern "C" fn sys_pct_send(target: u64, m0: u64, m1: u64, m2: u64, m3: u64, _: u64) -> u64 {
    with_kernel(|k| k.pct_send(target, [m0, m1, m2, m3]))
}

extern "C" fn sys_env_info(out: u64, _: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| {
        k.prefault(out, core::mem::size_of::<EnvInfo>() as u64);
        env_info(k, out)
    })
}

extern "C" fn sys_env_create(spec: u64, _: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| {
        k.prefault(spec, core::mem::size_of::<shared_abi::syscall::EnvCreate>() as u64);
        k.env_create(spec)
    })
}

extern "C" fn sys_env_start(child: u64, regs: u64, upcalls: u64, _: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| {
        k.prefault(regs, core::mem::size_of::<shared_abi::syscall::StartRegs>() as u64);
        k.prefault(upcalls, core::mem::size_of::<UpcallTable>() as u64);
        k.env_start(child, regs, upcalls)
    })
}

extern "C" fn sys_env_kill(target: u64, code: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| k.env_kill(target, code))
}

extern "C" fn sys_env_map(child: u64, va: u64, lo: u64, hi: u64, flags: u64, _: u64) -> u64 {
    with_kernel(|k| k.env_map(child, va, key(lo, hi), flags))
}

extern "C" fn sys_env_map_batch(child: u64, records: u64, count: u64, _: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| k.env_map_batch(child, records, count))
}

extern "C" fn sys_env_write(child: u64, va: u64, src: u64, len: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| k.env_write(child, va, src, len))
}

extern "C" fn sys_env_reap(out: u64, _: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| {
        k.prefault(out, core::mem::size_of::<shared_abi::syscall::EnvEnd>() as u64);
        k.env_reap(out)
    })
}

extern "C" fn sys_env_wake(target: u64, _: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| k.env_wake(target))
}

extern "C" fn sys_console_read(buf: u64, len: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| {
        let len = len.min(MAX_CONSOLE_WRITE);
        kcore::usercheck::check_user_range(buf, len.max(1), 1)?;
        k.prefault(buf, len);
        let me = k.current();
        let bytes = k.envs.take_input(me, len as usize).map_err(|()| Error::PermissionDenied)?;
        if bytes.is_empty() {
            return Err(Error::Again);
        }
        let written = UserSlice::new(k.current_space()?, buf, bytes.len() as u64, 1).and_then(|s| s.write(&bytes));
        if let Err(error) = written {
            // A buffer the kernel cannot write loses no input.
            k.envs.put_back_input(&bytes);
            return Err(error);
        }
        Ok(bytes.len() as u64)
    })
}

extern "C" fn sys_archive_read(offset: u64, buf: u64, len: u64, _: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| k.archive_read(offset, buf, len))
}

extern "C" fn sys_net_rx_ring(va: u64, len: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| {
        k.net_ready()?;
        let me = k.current();
        let space = k.memory.space(me).ok_or(Error::NoSuchEnv)?;
        k.net.rx_ring(me, space, va, len)
    })
}

extern "C" fn sys_net_filter_install(ptr: u64, len: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| {
        k.net_ready()?;
        let me = k.current();
        let room = k.kmem_room(me, KmemObject::Filter);
        let id = k.envs.get(me).id;
        let space = k.memory.space(me).ok_or(Error::NoSuchEnv)?;
        k.net.filter_install(id, space, ptr, len, room)
    })
}

extern "C" fn sys_net_filter_remove(filter: u64, _: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| {
        k.net_ready()?;
        k.net.filter_remove(k.envs.get(k.current()).id, FilterId(filter))
    })
}

extern "C" fn sys_net_tx(lo: u64, hi: u64, offset: u64, len: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| {
        k.net.require_nic()?;
        let me = k.current();
        let memory = &k.memory;
        let frame = || memory.check_key(me, key(lo, hi), Rights::READ).map(|info| info.frame * 4096);
        let sent = k.net.transmit(offset, len, frame);
        k.poll_net();
        sent
    })
}

extern "C" fn sys_net_info(out: u64, _: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| {
        k.poll_net();
        k.net.info(k.current_space()?, out)
    })
}

extern "C" fn sys_demux_bench(filters: u64, linear: u64, packets: u64, _: u64, _: u64, _: u64) -> u64 {
    with_kernel(|k| {
        k.poll_net();
        k.net.demux_bench(filters, linear, packets)
    })
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
            kernel.run_rest_of_slot(frame);
            return Return::Iret;
        }
        nr::YIELD => return kernel.sys_yield(frame),
        nr::BLOCK => return kernel.sys_block(frame),
        nr::PCT_CALL => return kernel.pct_call(frame),
        nr::PCT_REPLY => return kernel.pct_reply(frame),
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
    UserSlice::new(kernel.current_space()?, ptr, len, 1)?.read(&mut buf[..len as usize])?;
    kernel.envs.console_bytes(kernel.current(), &buf[..len as usize]);
    Ok(len)
}

fn set_upcalls(kernel: &mut Kernel, ptr: u64) -> Result<u64, Error> {
    let space = kernel.current_space()?;
    let table = crate::kernel::check_upcalls(space, ptr)?;
    // A run-time environment's mappings can change under it (its parent
    // maps for it): its upcalls always take the slow path.
    let fast = if kernel.memory.is_run_time(kernel.current()) { None } else { fast_upcall_state(space, &table) };
    let env = kernel.envs.get_mut(kernel.cpu.current());
    env.upcalls = table;
    env.fast = fast;
    kernel.install_fast_paths(kernel.current());
    Ok(0)
}

/// May the exception stub write upcall frames straight to this stack? Only
/// if every page of it is mapped user-writable outside the dynamic window,
/// where mappings are the kernel's and no libOS call can change them.
fn fast_upcall_state(space: &crate::arch::paging::AddressSpace, table: &UpcallTable) -> Option<(u64, u64, u64, u64)> {
    use crate::arch::paging::Flags;
    use shared_abi::start::{DYNAMIC_BASE, DYNAMIC_END};
    if table.exception_entry == 0 && table.page_fault_entry == 0 {
        return None;
    }
    let (lo, hi) = (table.stack_base, table.stack_base.checked_add(table.stack_len)?);
    if lo < DYNAMIC_END && hi > DYNAMIC_BASE {
        return None;
    }
    let mut page = lo & !0xfff;
    while page < hi {
        let (_, flags) = space.translate(page)?;
        if !flags.contains(Flags::PRESENT | Flags::USER_ACCESSIBLE | Flags::WRITABLE) {
            return None;
        }
        page += 4096;
    }
    Some((table.exception_entry, table.page_fault_entry, lo, hi))
}

fn stats(kernel: &mut Kernel, ptr: u64, len: u64) -> Result<u64, Error> {
    let size = core::mem::size_of::<KernelStats>() as u64;
    if len != size {
        return Err(Error::BadLength);
    }
    umem::write_value(kernel.current_space()?, ptr, &COUNTERS.snapshot())?;
    Ok(size)
}

fn env_info(kernel: &mut Kernel, out: u64) -> Result<u64, Error> {
    let me = kernel.current();
    let mut info = EnvInfo::default();
    kernel.cpu.fill_info(me, rdtsc(), &mut info);
    kernel.memory.fill_info(me, kernel.kmem_use(me).bytes(), &mut info);
    let env = kernel.envs.get(me);
    info.env_id = env.id;
    info.parent_id = env.parent.map_or(0, |p| kernel.envs.get(p).id);
    umem::write_value(kernel.current_space()?, out, &info)?;
    Ok(0)
}
