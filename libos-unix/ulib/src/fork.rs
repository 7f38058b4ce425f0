//! fork, at user level on secure bindings (as ExOS did it on Xok).
//!
//! The parent creates an empty child environment with half of what it can
//! spare of its frame quota and kernel-memory budget, and builds the
//! child's address space from its own page table ([`crate::pmap`]), page
//! by page, by what the page is:
//!
//! * program text and the start page: the child becomes a co-owner of the
//!   frame (the kernel keeps it until its last owner lets go) and maps it
//!   read-only;
//! * program data (the handlers' statics): a fresh frame for the child,
//!   filled with `env_write`;
//! * heap and stack: copy-on-write. The parent maps its page read-only,
//!   the child co-owns the frame and maps it read-only; the first write on
//!   either side faults, and the handler copies the page or, when the other
//!   side has let go, makes the frame writable again in place;
//! * the upcall stack and the page table: fresh frames; the child's page
//!   table is written in with its own keys;
//! * the process table: shared.
//!
//! The parent then enters the child in the process table and starts it
//! with its own registers at the fork point, so fork returns twice: the
//! child's pid in the parent, 0 in the child.
//!
//! The work runs on a fork stack of the parent's own (never inherited), so
//! the parent's stack is not written while its pages are being shared,
//! and it allocates nothing from the heap (whose pages are being shared).

use crate::errno::Errno;
use crate::layout::*;
use crate::pmap::{self, Entry, Kind};
use crate::process::{self, alloc_frame, getpid, pmap};
use crate::table;
use libos_runtime::rt;
use libos_runtime::syscall::{self, batch_flags, map_flags, rights, Error, MapRecord, StartRegs, MAX_MAP_BATCH};

extern "C" {
    /// Save the callee-saved registers, the stack pointer and a resume
    /// point in `regs`, then run `body(regs)` on the fork stack and return
    /// its value. A child started from `regs` returns 0 from here.
    fn ulib_fork_save(regs: *mut StartRegs, body: extern "C" fn(*const StartRegs) -> i64) -> i64;
}

core::arch::global_asm!(
    ".globl ulib_fork_save",
    "ulib_fork_save:",
    "mov [rdi + 24], rbx",
    "mov [rdi + 64], rbp",
    "mov [rdi + 104], r12",
    "mov [rdi + 112], r13",
    "mov [rdi + 120], r14",
    "mov [rdi + 128], r15",
    "mov [rdi + 8], rsp",
    "lea rax, [rip + 2f]",
    "mov [rdi + 0], rax",
    "mov rax, rsp",
    "mov rsp, {top}",
    "push rax",
    "sub rsp, 8",
    "call rsi",
    "add rsp, 8",
    "pop rsp",
    "ret",
    "2:",
    "xor eax, eax",
    "ret",
    top = const FORK_STACK_VA + FORK_STACK_PAGES * PAGE,
);

const _: () = {
    use core::mem::offset_of;
    use libos_runtime::upcall::Regs;
    let regs = offset_of!(StartRegs, regs);
    assert!(offset_of!(StartRegs, rip) == 0 && offset_of!(StartRegs, rsp) == 8 && regs == 16);
    assert!(regs + offset_of!(Regs, rbx) == 24 && regs + offset_of!(Regs, rbp) == 64);
    assert!(regs + offset_of!(Regs, r12) == 104 && regs + offset_of!(Regs, r15) == 128);
};

/// Map the parent's own fork stack and an image buffer as large as its
/// page table (once per process, and a page more as the table grows).
fn ensure_fork_area() -> Result<(), Errno> {
    let mut page = 0;
    loop {
        let va = if page < FORK_STACK_PAGES {
            FORK_STACK_VA + page * PAGE
        } else if page - FORK_STACK_PAGES < pmap().header.pages {
            FORKBUF_VA + (page - FORK_STACK_PAGES) * PAGE
        } else {
            return Ok(());
        };
        if pmap().find(va).is_none() {
            let key = alloc_frame().map_err(|_| Errno::EAGAIN)?;
            syscall::map(va, key, map_flags::WRITE | map_flags::GUARANTEED | map_flags::REPLACE)
                .map_err(Errno::from)?;
            process::pmap_insert(Entry::new(va, key, Kind::NoFork, pmap::WRITABLE | pmap::GUARANTEED))?;
        }
        page += 1;
    }
}

/// `fork()`: the child's pid in the parent, 0 in the child; `EAGAIN` when
/// the parent cannot spare the quota, kernel memory or a process-table
/// entry for another process.
pub fn fork() -> Result<u64, Errno> {
    ensure_fork_area()?;
    let mut regs = StartRegs::default();
    // SAFETY: `ulib_fork_save` follows the C ABI, saves into `regs` (ours,
    // live across the call), and runs `fork_body` on the mapped fork
    // stack; a child resumes at its return with the saved registers.
    let result = unsafe { ulib_fork_save(&mut regs, fork_body) };
    if result == 0 {
        // The child: who am I?
        let me = syscall::env_info().map(|i| i.env_id).unwrap_or(0);
        process::set_identity(me);
        return Ok(0);
    }
    if result < 0 {
        return Err(Errno::from_code(-result));
    }
    Ok(result as u64)
}

/// Runs on the fork stack: build and start the child. Its pid, or -errno.
extern "C" fn fork_body(regs: *const StartRegs) -> i64 {
    // SAFETY: `fork` passes a pointer to its live `regs`.
    let regs = unsafe { &*regs };
    let Ok(info) = syscall::env_info() else { return -(Errno::EAGAIN as i64) };
    let quota = info.quota_frames.saturating_sub(info.frames_charged) / 2;
    let kmem_kib = info.kmem_limit.saturating_sub(info.kmem_used) / 2 / 1024;
    let me = getpid();
    let (name, flags) = table::with(|t| t.get(me).map(|p| (p.name, p.flags))).unwrap_or(([0; 16], 0));
    let len = name.iter().position(|&b| b == 0).unwrap_or(16);
    let name = core::str::from_utf8(&name[..len]).ok().filter(|n| !n.is_empty()).unwrap_or("proc");
    let child = match syscall::env_create(quota, kmem_kib, TLB_SLOTS, name) {
        Ok(child) => child,
        Err(error) => return -(Errno::from(error) as i64),
    };
    let result = build_child(child, regs.rsp).and_then(|count| {
        let pid = table::with(|t| {
            let pid = t.add(me, child, name)?;
            if let Some(p) = t.get_mut(pid) {
                p.flags = flags;
            }
            Some(pid)
        })
        .ok_or(Errno::EAGAIN)?;
        let started = write_image(child, count).map_err(Errno::from).and_then(|()| {
            // The child holds every descriptor we hold.
            crate::io::inherit_to(child)?;
            syscall::env_start(child, regs, Some(&rt::upcall_table())).map_err(|error| {
                crate::io::uninherit(child);
                Errno::from(error)
            })
        });
        if let Err(error) = started {
            table::with(|t| {
                t.end(pid, crate::proctab::WaitStatus::Signaled(9));
                t.reap(me, Some(pid))
            });
            return Err(error);
        }
        Ok(pid)
    });
    match result {
        Ok(pid) => pid as i64,
        Err(error) => {
            let _ = syscall::env_kill(child, 0);
            -(error as i64)
        }
    }
}

/// The child's page-table image, built in the parent's fork buffer.
fn image() -> &'static mut [Entry] {
    let capacity = pmap::capacity(pmap().header.pages as usize);
    // SAFETY: ensure_fork_area mapped PMAP_PAGES writable pages at
    // FORKBUF_VA for this process alone; the entries follow a header.
    unsafe { core::slice::from_raw_parts_mut((FORKBUF_VA as *mut pmap::Header).add(1) as *mut Entry, capacity) }
}

/// Mappings for the child not yet made: `env_map_batch` records (with
/// the image entries their keys go to) and the pages to copy once mapped.
struct Pending {
    records: [MapRecord; MAX_MAP_BATCH as usize],
    entries: [usize; MAX_MAP_BATCH as usize],
    len: usize,
    copies: [u64; MAX_COPIES],
    copy_len: usize,
}

/// Pages copied into the child at fork (program data, the hot stack
/// pages) queued at once before the mappings they need are made.
const MAX_COPIES: usize = 16;

impl Pending {
    fn new() -> Pending {
        Pending {
            records: [MapRecord::default(); MAX_MAP_BATCH as usize],
            entries: [0; MAX_MAP_BATCH as usize],
            len: 0,
            copies: [0; MAX_COPIES],
            copy_len: 0,
        }
    }

    /// Queue a record whose (co-owning) key goes to image entry `entry`.
    fn push(&mut self, child: u64, out: &mut [Entry], record: MapRecord, entry: usize) -> Result<(), Errno> {
        if self.len == self.records.len() {
            self.flush(child, out)?;
        }
        self.records[self.len] = record;
        self.entries[self.len] = entry;
        self.len += 1;
        Ok(())
    }

    /// Queue a copy of the parent's page `va` into the child's (mapped by
    /// a record queued before it).
    fn copy(&mut self, child: u64, out: &mut [Entry], va: u64) -> Result<(), Errno> {
        if self.copy_len == self.copies.len() {
            self.flush(child, out)?;
        }
        self.copies[self.copy_len] = va;
        self.copy_len += 1;
        Ok(())
    }

    /// Make the queued mappings (one system call for up to
    /// `MAX_MAP_BATCH`), note the child's new keys in the image, then copy
    /// the queued pages.
    fn flush(&mut self, child: u64, out: &mut [Entry]) -> Result<(), Errno> {
        let mut from = 0;
        while from < self.len {
            // Done records are skipped; a failing one is reported by the
            // call that starts with it.
            from += syscall::env_map_batch(child, &mut self.records[from..self.len])?;
        }
        for (record, &entry) in self.records[..self.len].iter().zip(&self.entries[..self.len]) {
            if record.flags & batch_flags::CO_OWN != 0 {
                out[entry].key = record.key;
            }
        }
        self.len = 0;
        for &va in &self.copies[..self.copy_len] {
            // SAFETY: the parent maps each queued page (its program data,
            // or a stack page fork does not write while it runs on its own
            // stack) readable.
            let bytes = unsafe { core::slice::from_raw_parts(va as *const u8, PAGE as usize) };
            syscall::env_write(child, va, bytes)?;
        }
        self.copy_len = 0;
        Ok(())
    }
}

/// Give the child every page of the parent's page table, by kind; returns
/// how many entries the child's table has. Mappings are made in batches
/// (`env_map_batch`): co-owned pages become the child's in the same call
/// that maps them.
fn build_child(child: u64, rsp: u64) -> Result<usize, Errno> {
    // The stack page at the fork point (and the one below it, where the
    // next calls go) is written by both sides at once: the child gets its
    // own copy now rather than both faulting on it.
    let hot = (rsp & !(PAGE - 1)).saturating_sub(PAGE)..(rsp & !(PAGE - 1)) + PAGE;
    let out = image();
    let mut pending = Pending::new();
    let mut count = 0;
    let mut cursor = 0u64;
    while let Some(entry) = pmap().next_from(cursor) {
        cursor = entry.va() + PAGE;
        let va = entry.va();
        let guaranteed = entry.has(pmap::GUARANTEED);
        let g = if guaranteed { map_flags::GUARANTEED } else { 0 };
        if count == out.len() {
            return Err(Errno::ENOMEM);
        }
        let (made, record) = match entry.kind() {
            Some(Kind::NoFork) | None => continue,
            Some(Kind::Text) => {
                let made = Entry::new(va, entry.key, Kind::Text, entry.word & (pmap::GUARANTEED | pmap::EXEC));
                (made, MapRecord::co_own(va, entry.key, rights::READ | rights::SHARE, process::map_flags_of(&made)))
            }
            Some(kind @ (Kind::Private | Kind::Fresh)) => {
                let (_, key) = syscall::frame_alloc_for(child, rights::ALL)?;
                if kind == Kind::Private {
                    pending.copy(child, out, va)?;
                }
                let made = Entry::new(va, key, kind, entry.word & (pmap::WRITABLE | pmap::GUARANTEED));
                (made, MapRecord::map(va, key, map_flags::WRITE | g))
            }
            Some(Kind::Anon) if hot.contains(&va) && entry.has(pmap::WRITABLE) && !entry.has(pmap::COW) => {
                let (_, key) = syscall::frame_alloc_for(child, rights::ALL)?;
                pending.copy(child, out, va)?;
                let made = Entry::new(va, key, Kind::Anon, entry.word & (pmap::WRITABLE | pmap::GUARANTEED));
                (made, MapRecord::map(va, key, map_flags::WRITE | g))
            }
            Some(Kind::Anon) => {
                let writable = entry.has(pmap::WRITABLE);
                if writable && !entry.has(pmap::COW) {
                    // The parent's copy goes read-only first: its next
                    // write faults and copies (or keeps the frame, once
                    // the child has let go).
                    syscall::map(va, entry.key, g | map_flags::REPLACE)?;
                    if let Some(e) = pmap().find_mut(va) {
                        e.set(pmap::COW, true);
                    }
                }
                let cow = if writable { pmap::COW } else { 0 };
                let made =
                    Entry::new(va, entry.key, Kind::Anon, (entry.word & (pmap::WRITABLE | pmap::GUARANTEED)) | cow);
                (made, MapRecord::co_own(va, entry.key, rights::ALL, g))
            }
            Some(Kind::Shared) => {
                // Co-owned, so a process holds no plain share (and the
                // kernel reclaims it without a search).
                let w = if entry.has(pmap::WRITABLE) { map_flags::WRITE } else { 0 };
                let made = Entry::new(va, entry.key, Kind::Shared, entry.word & (pmap::WRITABLE | pmap::GUARANTEED));
                (made, MapRecord::co_own(va, entry.key, rights::ALL, w | g))
            }
        };
        // A co-owned page's key here is the parent's until the batch
        // replaces it with the child's.
        out[count] = made;
        pending.push(child, out, record, count)?;
        count += 1;
    }
    pending.flush(child, out)?;
    Ok(count)
}

/// Write the child's page table from the fork buffer.
fn write_image(child: u64, count: usize) -> Result<(), Error> {
    let header = FORKBUF_VA as *mut pmap::Header;
    let pages = pmap().header.pages;
    // SAFETY: the fork buffer is mapped writable and ours (see `image`).
    unsafe { header.write(pmap::Header { count: count as u64, pages, _reserved: 0 }) };
    let bytes = core::mem::size_of::<pmap::Header>() + count * core::mem::size_of::<Entry>();
    // SAFETY: the header and `count` entries were written just now.
    let image = unsafe { core::slice::from_raw_parts(FORKBUF_VA as *const u8, bytes) };
    for (i, chunk) in image.chunks(64 * 1024).enumerate() {
        syscall::env_write(child, PMAP_VA + (i * 64 * 1024) as u64, chunk)?;
    }
    Ok(())
}
