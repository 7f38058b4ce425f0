//! The system calls: `shared_abi::syscall` (numbers, errors, flags, key
//! types, the return convention) and the user-side stubs that make them.
//!
//! Each stub puts its arguments in registers, executes `syscall` and
//! decodes `rax` into a `Result`. The kernel checks every argument, so the
//! stubs are safe functions, except where a call makes the kernel act on
//! the caller's own memory later ([`set_upcalls`]; the network ring,
//! `net::net_rx_ring`) and [`raw6`], which passes anything.

pub use shared_abi::syscall::*;

use crate::upcall::UpcallTable;
use core::arch::asm;

/// Raw system call with up to six arguments.
///
/// # Safety
/// The kernel checks every argument, so no value can harm the kernel;
/// the caller must only make sure that what the call does to its *own*
/// memory (for example a later upcall into a registered entry point) is
/// what it intends.
#[inline(always)]
pub unsafe fn raw6(n: u64, a0: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> u64 {
    let ret: u64;
    // SAFETY: `syscall` enters the kernel, which preserves every register
    // but rax (the result), rcx and r11 (clobbered by the instruction).
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") n => ret,
            in("rdi") a0, in("rsi") a1, in("rdx") a2,
            in("r10") a3, in("r8") a4, in("r9") a5,
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// The null system call: enter the kernel and come straight back.
#[inline(always)]
pub fn null() -> u64 {
    let ret: u64;
    // SAFETY: NULL takes no arguments and has no effect.
    unsafe {
        asm!("syscall", inlateout("rax") nr::NULL => ret,
             lateout("rcx") _, lateout("r11") _, options(nostack, nomem));
    }
    ret
}

/// Write bytes to the console; the kernel prefixes each line with the
/// environment's name.
pub fn console_write(bytes: &[u8]) -> Result<u64, Error> {
    // SAFETY: the kernel only reads `bytes`.
    decode(unsafe { raw6(nr::CONSOLE_WRITE, bytes.as_ptr() as u64, bytes.len() as u64, 0, 0, 0, 0) })
}

/// End the calling environment with `code`.
pub fn exit(code: i32) -> ! {
    // SAFETY: EXIT never returns to this environment.
    unsafe { raw6(nr::EXIT, code as i64 as u64, 0, 0, 0, 0, 0) };
    unreachable!("the kernel returned from exit")
}

/// Give up the rest of the current time slice.
pub fn yield_now() {
    // SAFETY: YIELD has no arguments and no effect on memory.
    unsafe { raw6(nr::YIELD, 0, 0, 0, 0, 0, 0) };
}

/// Register the upcall entry points.
///
/// # Safety
/// The entries must be code that handles an [`crate::upcall::UpcallFrame`]
/// on the given stack, which must stay mapped and otherwise unused.
pub unsafe fn set_upcalls(table: &UpcallTable) -> Result<u64, Error> {
    // SAFETY: the kernel copies the table; the caller vouches for its contents.
    decode(unsafe { raw6(nr::SET_UPCALLS, table as *const UpcallTable as u64, 0, 0, 0, 0, 0) })
}

/// Allocate a frame (`want_pa` = 0: any) with `rights`; returns (frame, key).
pub fn frame_alloc(want_pa: u64, rights: Rights) -> Result<(u64, FrameKey), Error> {
    let mut key = FrameKey::default();
    // SAFETY: the kernel writes one FrameKey into `key`.
    let pa =
        decode(unsafe { raw6(nr::FRAME_ALLOC, want_pa, rights.word(), &mut key as *mut FrameKey as u64, 0, 0, 0) })?;
    Ok((pa, key))
}

/// Free a frame the caller owns.
pub fn frame_free(key: FrameKey) -> Result<(), Error> {
    // SAFETY: no memory is passed.
    decode(unsafe { raw6(nr::FRAME_FREE, key.handle, key.mac, 0, 0, 0, 0) }).map(|_| ())
}

/// Mint environment `to_env` a key to the frame with `rights` (a subset).
pub fn frame_share(key: FrameKey, to_env: u64, rights: Rights) -> Result<FrameKey, Error> {
    let mut out = FrameKey::default();
    // SAFETY: the kernel writes one FrameKey into `out`.
    decode(unsafe {
        raw6(nr::FRAME_SHARE, key.handle, key.mac, to_env, rights.word(), &mut out as *mut FrameKey as u64, 0)
    })?;
    Ok(out)
}

/// Describe the frame a key names.
pub fn frame_query(key: FrameKey) -> Result<FrameInfo, Error> {
    let mut out = FrameInfo::default();
    // SAFETY: the kernel writes one FrameInfo into `out`.
    decode(unsafe { raw6(nr::FRAME_QUERY, key.handle, key.mac, &mut out as *mut FrameInfo as u64, 0, 0, 0) })?;
    Ok(out)
}

/// Map the page at `va` to the keyed frame (`flags`: [`map_flags`]).
#[inline(always)]
pub fn map(va: u64, key: FrameKey, flags: u64) -> Result<(), Error> {
    // SAFETY: changing the caller's own mappings is the caller's business.
    decode(unsafe { raw6(nr::MAP, va, key.handle, key.mac, flags, 0, 0) }).map(|_| ())
}

/// Remove the mapping of the page at `va`.
pub fn unmap(va: u64) -> Result<(), Error> {
    // SAFETY: as for `map`.
    decode(unsafe { raw6(nr::UNMAP, va, 0, 0, 0, 0, 0) }).map(|_| ())
}

/// State bits of the mapping at `va` ([`map_bits`]), clearing
/// the accessed bit if `clear_accessed`.
pub fn map_query(va: u64, clear_accessed: bool) -> Result<u64, Error> {
    // SAFETY: no memory is passed.
    decode(unsafe { raw6(nr::MAP_QUERY, va, clear_accessed as u64, 0, 0, 0, 0) })
}

/// State bits of the mapping at `va`, then clear the bits named in
/// `clear` ([`map_bits::ACCESSED`] | [`map_bits::DIRTY`]).
pub fn map_query_clear(va: u64, clear: u64) -> Result<u64, Error> {
    let mut arg = 0;
    if clear & map_bits::ACCESSED != 0 {
        arg |= 1;
    }
    if clear & map_bits::DIRTY != 0 {
        arg |= 2;
    }
    // SAFETY: no memory is passed.
    decode(unsafe { raw6(nr::MAP_QUERY, va, arg, 0, 0, 0, 0) })
}

/// The dirty (or accessed) bits of `pages` pages from `va` in one call:
/// page `i`'s bit goes to bit `i % 64` of `out[i / 64]`, and the bits are
/// cleared as `flags` asks ([`query_range`]). Returns how many pages
/// report set. `out` must hold [`query_range::bitmap_words`]`(pages)`
/// words, or the call is refused here (`BadLength`) without entering the
/// kernel.
pub fn map_query_range(va: u64, pages: u64, out: &mut [u64], flags: u64) -> Result<u64, Error> {
    if (out.len() as u64) < query_range::bitmap_words(pages) {
        return Err(Error::BadLength);
    }
    // SAFETY: the kernel writes at most `bitmap_words(pages)` words into
    // `out`, which holds that many.
    decode(unsafe { raw6(nr::MAP_QUERY_RANGE, va, pages, out.as_mut_ptr() as u64, flags, 0, 0) })
}

/// Make the mapping at `va` guaranteed (or ordinary again).
pub fn guarantee(va: u64, on: bool) -> Result<(), Error> {
    // SAFETY: no memory is passed.
    decode(unsafe { raw6(nr::GUARANTEE, va, on as u64, 0, 0, 0, 0) }).map(|_| ())
}

/// Tell the kernel the answer to its repossession request is complete.
pub fn revoke_done() -> Result<u64, Error> {
    // SAFETY: no memory is passed.
    decode(unsafe { raw6(nr::REVOKE_DONE, 0, 0, 0, 0, 0, 0) })
}

/// Ticks the kernel's key check takes for `iterations` checks of `key`.
pub fn key_bench(key: FrameKey, iterations: u64) -> Result<u64, Error> {
    // SAFETY: no memory is passed.
    decode(unsafe { raw6(nr::KEY_BENCH, key.handle, key.mac, iterations, 0, 0, 0) })
}

/// Own time slot `position` (or [`nr::ANY_SLOT`]); returns its key.
pub fn slot_alloc(position: u64) -> Result<SlotKey, Error> {
    // SAFETY: no memory is passed.
    decode(unsafe { raw6(nr::SLOT_ALLOC, position, 0, 0, 0, 0, 0) }).map(SlotKey)
}

/// Give a slot back.
pub fn slot_free(key: SlotKey) -> Result<(), Error> {
    // SAFETY: no memory is passed.
    decode(unsafe { raw6(nr::SLOT_FREE, key.0, 0, 0, 0, 0, 0) }).map(|_| ())
}

/// Synchronous protected control transfer: run `target`'s protected
/// entry with `msg` and return its reply.
#[inline(always)]
pub fn pct_call(target: u64, msg: [u64; 4]) -> Result<[u64; 4], Error> {
    let ret: u64;
    let (r0, r1, r2, r3): (u64, u64, u64, u64);
    // SAFETY: the kernel returns the status in rax and the reply in
    // rsi, rdx, r10, r8; rcx and r11 are clobbered by `syscall`.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr::PCT_CALL => ret,
            in("rdi") target,
            inlateout("rsi") msg[0] => r0,
            inlateout("rdx") msg[1] => r1,
            inlateout("r10") msg[2] => r2,
            inlateout("r8") msg[3] => r3,
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    decode(ret).map(|_| [r0, r1, r2, r3])
}

/// End a protected-entry activation with a reply.
pub fn pct_reply(reply: [u64; 4]) -> ! {
    // SAFETY: PCT_REPLY does not return to this activation.
    unsafe { raw6(nr::PCT_REPLY, reply[0], reply[1], reply[2], reply[3], 0, 0) };
    unreachable!("pct_reply returned")
}

/// Asynchronous protected control transfer.
pub fn pct_send(target: u64, msg: [u64; 4]) -> Result<(), Error> {
    // SAFETY: no memory is passed.
    decode(unsafe { raw6(nr::PCT_SEND, target, msg[0], msg[1], msg[2], msg[3], 0) }).map(|_| ())
}

/// The caller's CPU accounting.
pub fn env_info() -> Result<EnvInfo, Error> {
    let mut out = EnvInfo::default();
    // SAFETY: the kernel writes one EnvInfo into `out`.
    decode(unsafe { raw6(nr::ENV_INFO, &mut out as *mut EnvInfo as u64, 0, 0, 0, 0, 0) })?;
    Ok(out)
}

/// Read the kernel's event counters.
pub fn stats() -> Result<KernelStats, Error> {
    let mut out = KernelStats::default();
    let len = core::mem::size_of::<KernelStats>() as u64;
    // SAFETY: the kernel writes at most `len` bytes into `out`.
    decode(unsafe { raw6(nr::STATS, &mut out as *mut KernelStats as u64, len, 0, 0, 0, 0) })?;
    Ok(out)
}

// ----- environments created at run time -----

/// Allocate a frame owned by child `child` (charged to its quota); the key
/// returned is the child's, which the parent may present for it (`env_map`).
pub fn frame_alloc_for(child: u64, rights: Rights) -> Result<(u64, FrameKey), Error> {
    let mut key = FrameKey::default();
    // SAFETY: the kernel writes one FrameKey into `key`.
    let pa = decode(unsafe { raw6(nr::FRAME_ALLOC, 0, rights.word(), &mut key as *mut FrameKey as u64, child, 0, 0) })?;
    Ok((pa, key))
}

/// Make `to_env` a co-owner of the frame (it pays for its key and holds
/// the frame within its quota); returns its key.
pub fn frame_co_own(key: FrameKey, to_env: u64, rights: Rights) -> Result<FrameKey, Error> {
    let mut out = FrameKey::default();
    // SAFETY: the kernel writes one FrameKey into `out`.
    decode(unsafe {
        raw6(
            nr::FRAME_SHARE,
            key.handle,
            key.mac,
            to_env,
            rights.word(),
            &mut out as *mut FrameKey as u64,
            share_flags::CO_OWN,
        )
    })?;
    Ok(out)
}

/// Create an empty child environment; returns its id.
pub fn env_create(quota_frames: u64, kmem_kib: u64, tlb_slots: u64, name: &str) -> Result<u64, Error> {
    let spec =
        EnvCreate { quota_frames, kmem_kib, tlb_slots, name_ptr: name.as_ptr() as u64, name_len: name.len() as u64 };
    // SAFETY: the kernel only reads `spec` and the name.
    decode(unsafe { raw6(nr::ENV_CREATE, &spec as *const EnvCreate as u64, 0, 0, 0, 0, 0) })
}

/// Start a created child with `regs` and (if given) an upcall table.
pub fn env_start(child: u64, regs: &StartRegs, upcalls: Option<&UpcallTable>) -> Result<(), Error> {
    let table = upcalls.map_or(0, |t| t as *const UpcallTable as u64);
    // SAFETY: the kernel only reads `regs` and the table; what the child
    // runs is in its own address space.
    decode(unsafe { raw6(nr::ENV_START, child, regs as *const StartRegs as u64, table, 0, 0, 0) }).map(|_| ())
}

/// End a run-time environment of the caller's family; `code` is what its
/// parent's `env_reap` reports.
pub fn env_kill(target: u64, code: i64) -> Result<(), Error> {
    // SAFETY: no memory is passed.
    decode(unsafe { raw6(nr::ENV_KILL, target, code as u64, 0, 0, 0, 0) }).map(|_| ())
}

/// Map a frame into child `child`'s address space with a key the child holds.
pub fn env_map(child: u64, va: u64, key: FrameKey, flags: u64) -> Result<(), Error> {
    // SAFETY: no memory of the caller is passed.
    decode(unsafe { raw6(nr::ENV_MAP, child, va, key.handle, key.mac, flags, 0) }).map(|_| ())
}

/// Up to `MAX_MAP_BATCH` `env_map` calls for child `child` in one entry
/// (records with `batch_flags::CO_OWN` make the child a co-owner first and
/// get its new key written back). Returns how many records were done: all
/// of them, or those before the first that failed (call again from there
/// to learn its error); that record's error if it was the first.
pub fn env_map_batch(child: u64, records: &mut [MapRecord]) -> Result<usize, Error> {
    // SAFETY: the kernel reads and writes only `records`, which we hold
    // mutably for the call.
    decode(unsafe { raw6(nr::ENV_MAP_BATCH, child, records.as_mut_ptr() as u64, records.len() as u64, 0, 0, 0) })
        .map(|done| done as usize)
}

/// Copy `bytes` into child `child`'s memory at `va` (pages it owns).
pub fn env_write(child: u64, va: u64, bytes: &[u8]) -> Result<(), Error> {
    // SAFETY: the kernel only reads `bytes`.
    decode(unsafe { raw6(nr::ENV_WRITE, child, va, bytes.as_ptr() as u64, bytes.len() as u64, 0, 0) }).map(|_| ())
}

/// Collect the end of one ended child: Ok(end), `Again` while children
/// live but none has ended, `NoSuchEnv` when there are none.
pub fn env_reap() -> Result<EnvEnd, Error> {
    let mut end = EnvEnd::default();
    // SAFETY: the kernel writes one EnvEnd into `end`.
    decode(unsafe { raw6(nr::ENV_REAP, &mut end as *mut EnvEnd as u64, 0, 0, 0, 0, 0) })?;
    Ok(end)
}

/// Sleep until woken (returns at once if a wake-up is pending; may return
/// early: check the condition again).
pub fn block() {
    // SAFETY: no memory is passed.
    unsafe { raw6(nr::BLOCK, 0, 0, 0, 0, 0, 0) };
}

/// As [`block`], but wake by `deadline_tsc` at the latest (0: no deadline).
pub fn block_until(deadline_tsc: u64) {
    // SAFETY: no memory is passed.
    unsafe { raw6(nr::BLOCK, deadline_tsc, 0, 0, 0, 0, 0) };
}

/// Bytes the console received (console family only); `Again` if none yet.
pub fn console_read(buf: &mut [u8]) -> Result<usize, Error> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
    decode(unsafe { raw6(nr::CONSOLE_READ, buf.as_mut_ptr() as u64, buf.len() as u64, 0, 0, 0, 0) }).map(|n| n as usize)
}

/// Wake an environment of the caller's family.
pub fn env_wake(target: u64) -> Result<(), Error> {
    // SAFETY: no memory is passed.
    decode(unsafe { raw6(nr::ENV_WAKE, target, 0, 0, 0, 0, 0) }).map(|_| ())
}

/// Read bytes of the boot archive at `offset`; returns how many.
pub fn archive_read(offset: u64, buf: &mut [u8]) -> Result<usize, Error> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
    decode(unsafe { raw6(nr::ARCHIVE_READ, offset, buf.as_mut_ptr() as u64, buf.len() as u64, 0, 0, 0) })
        .map(|n| n as usize)
}
