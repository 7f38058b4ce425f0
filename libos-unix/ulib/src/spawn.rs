//! A new environment from a program in the boot archive: the exec half of
//! the Unix process calls, and how init starts the first program.
//!
//! The caller creates the environment empty, allocates its frames *for
//! it* (the child owns them; the keys come back to the caller, who acts
//! for its child), maps them into it, copies the program's segments in
//! with `env_write`, writes the start page and the child's own page table,
//! shares it the process table, and starts it at the ELF entry point. The
//! kernel checks each step; the program and where it goes are the
//! library's business.

use crate::errno::Errno;
use crate::layout::*;
use crate::pmap::{self, Entry, Kind};
use alloc::vec::Vec;
use elf::abi::{EM_X86_64, ET_EXEC, PF_W, PF_X, PT_LOAD};
use elf::endian::LittleEndian;
use elf::ElfBytes;
use libos_runtime::archive::NAME_LEN;
use libos_runtime::start::{StartInfo, StartPage, PROGRAM_BASE, PROGRAM_END, STACK_TOP, START_INFO_ADDR, START_MAGIC};
use libos_runtime::syscall::{self, map_flags, rights, Error, FrameKey, StartRegs};
use libos_runtime::upcall::Regs;

/// Pages of page table a new program starts with (it grows its own).
const PMAP_START_PAGES: u64 = 1;

/// Between arguments on the start page.
pub const ARG_SEPARATOR: char = '\u{1f}';

/// The directory of the boot archive: (name, offset, length) of each file.
fn directory() -> Result<Vec<([u8; NAME_LEN], u64, u64)>, Errno> {
    let mut header = [0u8; 16];
    read_exact(0, &mut header)?;
    if &header[..8] != libos_runtime::archive::MAGIC {
        return Err(Errno::EIO);
    }
    let count = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes")) as usize;
    let mut dir = alloc::vec![0u8; count * (NAME_LEN + 16)];
    read_exact(16, &mut dir)?;
    Ok(dir
        .chunks(NAME_LEN + 16)
        .map(|e| {
            let mut name = [0u8; NAME_LEN];
            name.copy_from_slice(&e[..NAME_LEN]);
            let word = |at: usize| u64::from_le_bytes(e[at..at + 8].try_into().expect("8 bytes"));
            (name, word(NAME_LEN), word(NAME_LEN + 8))
        })
        .collect())
}

fn read_exact(mut offset: u64, mut buf: &mut [u8]) -> Result<(), Errno> {
    while !buf.is_empty() {
        let chunk = buf.len().min(64 * 1024);
        let got = syscall::archive_read(offset, &mut buf[..chunk]).map_err(|_| Errno::EIO)?;
        if got == 0 {
            return Err(Errno::EIO);
        }
        offset += got as u64;
        buf = &mut buf[got..];
    }
    Ok(())
}

/// The archive name of `path`: `/bin/ls` and `bin/ls` are `bin/ls`; a bare
/// `ls` is looked for in `bin/`.
fn candidates(path: &str) -> [Option<alloc::string::String>; 2] {
    let trimmed = path.trim_start_matches('/');
    let bin = (!path.contains('/')).then(|| alloc::format!("bin/{}", path));
    [Some(alloc::string::String::from(trimmed)), bin]
}

/// Read a file of the boot archive.
pub fn read_file(path: &str) -> Result<Vec<u8>, Errno> {
    let dir = directory()?;
    for name in candidates(path).into_iter().flatten() {
        let found = dir.iter().find(|(n, _, _)| {
            let len = n.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
            &n[..len] == name.as_bytes()
        });
        if let Some(&(_, offset, len)) = found {
            let mut bytes = alloc::vec![0u8; len as usize];
            read_exact(offset, &mut bytes)?;
            return Ok(bytes);
        }
    }
    Err(Errno::ENOENT)
}

/// A loadable segment, checked.
struct Segment {
    vaddr: u64,
    memsz: u64,
    offset: u64,
    filesz: u64,
    writable: bool,
    exec: bool,
}

/// Check `image` is a static x86-64 executable that fits the program
/// window; its entry point and segments.
fn parse(image: &[u8]) -> Result<(u64, Vec<Segment>), Errno> {
    let file = ElfBytes::<LittleEndian>::minimal_parse(image).map_err(|_| Errno::ENOEXEC)?;
    if file.ehdr.e_machine != EM_X86_64 || file.ehdr.e_type != ET_EXEC {
        return Err(Errno::ENOEXEC);
    }
    let entry = file.ehdr.e_entry;
    let mut segments = Vec::new();
    for ph in file.segments().ok_or(Errno::ENOEXEC)?.iter().filter(|ph| ph.p_type == PT_LOAD) {
        let end = ph.p_vaddr.checked_add(ph.p_memsz).ok_or(Errno::ENOEXEC)?;
        let file_end = ph.p_offset.checked_add(ph.p_filesz).ok_or(Errno::ENOEXEC)?;
        if ph.p_vaddr < PROGRAM_BASE || end > PROGRAM_END || ph.p_filesz > ph.p_memsz || file_end > image.len() as u64 {
            return Err(Errno::ENOEXEC);
        }
        segments.push(Segment {
            vaddr: ph.p_vaddr,
            memsz: ph.p_memsz,
            offset: ph.p_offset,
            filesz: ph.p_filesz,
            writable: ph.p_flags & PF_W != 0,
            exec: ph.p_flags & PF_X != 0,
        });
        if ph.p_flags & PF_W != 0 && ph.p_flags & PF_X != 0 {
            // Never writable and executable at once.
            return Err(Errno::ENOEXEC);
        }
    }
    let inside = segments.iter().any(|s| (s.vaddr..s.vaddr + s.memsz).contains(&entry));
    if segments.is_empty() || !inside {
        return Err(Errno::ENOEXEC);
    }
    Ok((entry, segments))
}

/// A child being built: its id and the page table it will start with.
pub struct Child {
    pub env: u64,
    entries: Vec<Entry>,
    entry_point: u64,
}

impl Child {
    /// A frame owned by the child, mapped into it at `va`.
    fn fresh(&mut self, va: u64, kind: Kind, writable: bool, guaranteed: bool) -> Result<FrameKey, Error> {
        self.fresh_mapped(
            va,
            kind,
            if writable { pmap::WRITABLE } else { 0 } | if guaranteed { pmap::GUARANTEED } else { 0 },
        )
    }

    /// As `fresh`, with the page-table flags (`pmap::WRITABLE`, `GUARANTEED`, `EXEC`).
    fn fresh_mapped(&mut self, va: u64, kind: Kind, pflags: u64) -> Result<FrameKey, Error> {
        let key = loop {
            match syscall::frame_alloc_for(self.env, rights::ALL) {
                Ok((_, key)) => break key,
                Err(Error::Again) => syscall::yield_now(),
                Err(error) => return Err(error),
            }
        };
        let entry = Entry::new(va, key, kind, pflags);
        syscall::env_map(self.env, va, key, crate::process::map_flags_of(&entry))?;
        self.entries.push(entry);
        Ok(key)
    }

    /// Write the page table and start the child at its entry point.
    pub fn start(mut self) -> Result<u64, Errno> {
        let result = (|| {
            self.entries.sort_by_key(|e| e.va());
            write_pmap(self.env, &self.entries, PMAP_START_PAGES)?;
            let regs = StartRegs {
                rip: self.entry_point,
                rsp: STACK_TOP,
                regs: Regs { rdi: START_INFO_ADDR, ..Regs::default() },
            };
            syscall::env_start(self.env, &regs, None)
        })();
        match result {
            Ok(()) => Ok(self.env),
            Err(error) => {
                let _ = syscall::env_kill(self.env, 0);
                Err(error.into())
            }
        }
    }

    /// Give up on the child (the kernel reclaims all it was given).
    pub fn abandon(self) {
        let _ = syscall::env_kill(self.env, 0);
    }
}

/// Write a child's page table (header, then the sorted entries).
pub fn write_pmap(child: u64, entries: &[Entry], pages: u64) -> Result<(), Error> {
    if entries.len() > pmap::capacity(pages as usize) {
        return Err(Error::NoMemory);
    }
    let header = pmap::Header { count: entries.len() as u64, pages, _reserved: 0 };
    // SAFETY: Header and Entry are repr(C) plain words; viewing them as
    // bytes reads initialised memory of exactly their size.
    let (head, body) = unsafe {
        (
            core::slice::from_raw_parts(
                &header as *const pmap::Header as *const u8,
                core::mem::size_of::<pmap::Header>(),
            ),
            core::slice::from_raw_parts(entries.as_ptr() as *const u8, core::mem::size_of_val(entries)),
        )
    };
    syscall::env_write(child, PMAP_VA, head)?;
    let mut at = 0;
    while at < body.len() {
        let chunk = (body.len() - at).min(64 * 1024);
        syscall::env_write(child, PMAP_VA + head.len() as u64 + at as u64, &body[at..at + chunk])?;
        at += chunk;
    }
    Ok(())
}

/// What a new environment is given of its creator's frame quota and
/// kernel-memory budget.
#[derive(Clone, Copy, Debug)]
pub enum Share {
    /// These many frames and KiB.
    Exactly { quota_frames: u64, kmem_kib: u64 },
    /// All the creator can spare but a margin to end with (exec: measured
    /// once the program is read, so the margin covers only what is left).
    AllBut { frames: u64, kmem_kib: u64 },
}

impl Share {
    fn amounts(self) -> Result<(u64, u64), Errno> {
        match self {
            Share::Exactly { quota_frames, kmem_kib } => Ok((quota_frames, kmem_kib)),
            Share::AllBut { frames, kmem_kib } => {
                let info = syscall::env_info().map_err(Errno::from)?;
                let quota = info.quota_frames.saturating_sub(info.frames_charged + frames);
                let kmem = info.kmem_limit.saturating_sub(info.kmem_used + kmem_kib * 1024) / 1024;
                Ok((quota, kmem))
            }
        }
    }
}

/// Build (not start) an environment running `path` with `args` (the
/// program's name first), given `share` of the caller's resources.
/// `ENOENT`: no such program; `ENOEXEC`: not a static x86-64 executable
/// that fits; `EAGAIN`: not enough quota or kernel memory.
pub fn build(path: &str, args: &[&str], share: Share, params: &str) -> Result<Child, Errno> {
    let image = read_file(path)?;
    let (entry_point, segments) = parse(&image)?;
    let (quota_frames, kmem_kib) = share.amounts()?;
    let name = path.rsplit('/').next().unwrap_or(path);
    // An environment's name is at most 16 bytes, cut on a character boundary.
    let mut cut = name.len().min(16);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let name = &name[..cut];
    let env = syscall::env_create(quota_frames, kmem_kib, TLB_SLOTS, if name.is_empty() { "proc" } else { name })?;
    let mut child = Child { env, entries: Vec::new(), entry_point };
    match fill(&mut child, &image, &segments, name, args, params, quota_frames) {
        Ok(()) => Ok(child),
        Err(error) => {
            child.abandon();
            Err(error)
        }
    }
}

#[allow(clippy::too_many_arguments)] // what the start page says
fn fill(
    child: &mut Child,
    image: &[u8],
    segments: &[Segment],
    name: &str,
    args: &[&str],
    params: &str,
    quota_frames: u64,
) -> Result<(), Errno> {
    // The program: every page guaranteed (its handlers run from it and
    // from its statics); writable segments are the process's to copy at fork.
    for segment in segments {
        let mut page = segment.vaddr & !(PAGE - 1);
        while page < segment.vaddr + segment.memsz {
            let mut want = pmap::GUARANTEED;
            if segment.writable {
                want |= pmap::WRITABLE;
            }
            if segment.exec {
                want |= pmap::EXEC;
            }
            match child.entries.iter().position(|e| e.va() == page) {
                Some(at) => {
                    // A page two segments share: it gets both's rights,
                    // but never writable and executable at once.
                    let old = child.entries[at];
                    let merged = (old.word & 0xf) | want;
                    if merged & pmap::WRITABLE != 0 && merged & pmap::EXEC != 0 {
                        return Err(Errno::ENOEXEC);
                    }
                    let kind = if merged & pmap::WRITABLE != 0 { Kind::Private } else { Kind::Text };
                    let entry = Entry::new(page, old.key, kind, merged);
                    syscall::env_map(
                        child.env,
                        page,
                        old.key,
                        crate::process::map_flags_of(&entry) | map_flags::REPLACE,
                    )?;
                    child.entries[at] = entry;
                }
                None => {
                    let kind = if segment.writable { Kind::Private } else { Kind::Text };
                    child.fresh_mapped(page, kind, want)?;
                }
            }
            page += PAGE;
        }
        let data = &image[segment.offset as usize..(segment.offset + segment.filesz) as usize];
        for (i, chunk) in data.chunks(64 * 1024).enumerate() {
            syscall::env_write(child.env, segment.vaddr + (i * 64 * 1024) as u64, chunk)?;
        }
    }
    // The start page, read-only: who it is and its arguments.
    child.fresh(START_INFO_ADDR, Kind::Text, false, false)?;
    let mut page = StartPage::default();
    let (name_ptr, name_len) = page.text(name, 16);
    let mut joined = alloc::string::String::new();
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            joined.push(ARG_SEPARATOR);
        }
        joined.push_str(arg);
    }
    if joined.len() > 2048 || params.len() > 1400 {
        return Err(Errno::E2BIG);
    }
    let (args_ptr, args_len) = page.text(&joined, 2048);
    let (params_ptr, params_len) = page.text(params, 1400);
    let info = StartInfo {
        magic: START_MAGIC,
        env_id: child.env,
        env_count: 0,
        name_ptr,
        name_len,
        args_ptr,
        args_len,
        params_ptr,
        params_len,
        heap_base: HEAP_VA,
        heap_len: HEAP_LEN,
        stack_base: STACK_LOW,
        stack_len: STACK_LEN,
        tsc_hz: crate::process::tsc_hz(),
        quota_frames,
        tlb_slots: TLB_SLOTS,
    };
    syscall::env_write(child.env, START_INFO_ADDR, &page.finish(&info))?;
    // The first pages of stack and heap (the runtime touches them before
    // the handlers are in), the upcall stack and the page table.
    child.fresh(STACK_TOP - PAGE, Kind::Anon, true, false)?;
    child.fresh(HEAP_VA, Kind::Anon, true, false)?;
    for i in 0..UPCALL_PAGES {
        child.fresh(UPCALL_VA + i * PAGE, Kind::Fresh, true, true)?;
    }
    for i in 0..PMAP_START_PAGES {
        child.fresh(PMAP_VA + i * PAGE, Kind::Fresh, true, true)?;
    }
    // The process table, co-owned (so a process holds no plain share).
    let table_key = crate::table::key().ok_or(Errno::EINVAL)?;
    let key = syscall::frame_co_own(table_key, child.env, rights::ALL)?;
    syscall::env_map(child.env, PROCTAB_VA, key, map_flags::WRITE | map_flags::GUARANTEED)?;
    child.entries.push(Entry::new(PROCTAB_VA, key, Kind::Shared, pmap::WRITABLE | pmap::GUARANTEED));
    if !params.is_empty() {
        // Exec: the pipes our descriptors use, at the same addresses.
        crate::io::give_pipes(child.env, &mut child.entries)?;
    }
    Ok(())
}

/// `exec`: run `path` in this process (same pid, same parent) in a new
/// environment built from this one's quota; this environment then ends.
/// Returns only on failure (`ENOENT`, `ENOEXEC`, `EAGAIN`).
pub fn exec(path: &str, args: &[&str]) -> Errno {
    // All it can spare: this environment keeps a few frames to end with.
    let params = crate::io::encode_for_exec();
    let child = match build(path, args, Share::AllBut { frames: 16, kmem_kib: 32 }, &params) {
        Ok(child) => child,
        Err(error) => return error,
    };
    let pid = crate::process::getpid();
    let name = path.rsplit('/').next().unwrap_or(path);
    crate::table::with(|t| {
        if let Some(p) = t.get_mut(pid) {
            p.env = child.env;
            p.set_name(name);
        }
    });
    let next = child.env;
    crate::io::hand_over(next);
    match child.start() {
        Ok(_) => syscall::exit(crate::process::EXEC_HANDOFF),
        Err(error) => {
            let me = crate::process::my_env();
            crate::table::with(|t| {
                if let Some(p) = t.get_mut(pid) {
                    p.env = me;
                }
            });
            error
        }
    }
}

/// Start `path` as a new child process of this one (init's way to start
/// the first program, and `posix_spawn`'s): returns its pid.
pub fn spawn(path: &str, args: &[&str], share: Share) -> Result<u64, Errno> {
    let child = build(path, args, share, "")?;
    let me = crate::process::getpid();
    let name = path.rsplit('/').next().unwrap_or(path);
    let Some(pid) = crate::table::with(|t| t.add(me, child.env, name)) else {
        child.abandon();
        return Err(Errno::EAGAIN);
    };
    match child.start() {
        Ok(_) => Ok(pid),
        Err(error) => {
            crate::table::with(|t| t.end(pid, crate::proctab::WaitStatus::Signaled(9)));
            crate::table::with(|t| t.reap(me, Some(pid)));
            Err(error)
        }
    }
}
