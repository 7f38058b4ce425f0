//! Files, pipes and the console behind Unix file descriptors.
//!
//! A process keeps its descriptor table itself (a static, so fork copies
//! it and the child inherits every descriptor; exec passes it on in the
//! new program's start page). A descriptor is:
//!
//! * the console: `console_write`, and `console_read` (the console family
//!   only), sleeping in `block` until input comes;
//! * a file: a handle to an open description in init's file server
//!   ([`crate::fsproto`]); fork and `dup` take another reference to it, so
//!   the offset is shared as Unix shares it;
//! * one end of a pipe: a ring in a frame the processes that hold its ends
//!   co-own, mapped at the same address in each. A reader that finds it
//!   empty sleeps (`block`) until a writer wakes it; the last writer's
//!   close is end-of-file; writing with no reader left is `EPIPE`. The
//!   page lists the environments holding each end, so an end held by a
//!   process that was killed is let go of too.

use crate::errno::Errno;
use crate::fsproto::{self, normalise, op, Stat, CHANNEL_DATA};
use crate::layout::*;
use crate::pmap::{self, Entry, Kind};
use crate::process::{self, my_env};
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use libos_runtime::syscall::{self, map_flags, rights, Error, FrameKey};

/// Descriptors a process may have.
pub const MAX_FDS: usize = 32;

/// One descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fd {
    Free,
    Console,
    File(u32),
    PipeRead(u8),
    PipeWrite(u8),
}

static FDS: spin::Mutex<[Fd; MAX_FDS]> = spin::Mutex::new({
    let mut fds = [Fd::Free; MAX_FDS];
    fds[0] = Fd::Console;
    fds[1] = Fd::Console;
    fds[2] = Fd::Console;
    fds
});

/// The working directory.
static CWD: spin::Mutex<[u8; 256]> = spin::Mutex::new({
    let mut cwd = [0u8; 256];
    cwd[0] = b'/';
    cwd
});

/// A copy of the descriptor table.
pub fn fds() -> [Fd; MAX_FDS] {
    *FDS.lock()
}

/// Replace the descriptor table (a new program's start).
pub fn set_fds(table: [Fd; MAX_FDS]) {
    *FDS.lock() = table;
}

pub fn getcwd() -> String {
    let cwd = CWD.lock();
    let len = cwd.iter().position(|&b| b == 0).unwrap_or(cwd.len());
    String::from(core::str::from_utf8(&cwd[..len]).unwrap_or("/"))
}

/// An absolute path for `path` (relative ones start at the working directory).
pub fn absolute(path: &str) -> String {
    if path.starts_with('/') {
        normalise(path)
    } else {
        normalise(&alloc::format!("{}/{}", getcwd(), path))
    }
}

pub fn chdir(path: &str) -> Result<(), Errno> {
    let target = absolute(path);
    if stat(&target)?.kind != fsproto::KIND_DIR {
        return Err(Errno::ENOTDIR);
    }
    set_cwd(&target)
}

/// Set the working directory without checking it (a new program's start).
pub fn set_cwd(path: &str) -> Result<(), Errno> {
    let mut cwd = CWD.lock();
    if path.len() >= cwd.len() {
        return Err(Errno::ENAMETOOLONG);
    }
    *cwd = [0; 256];
    cwd[..path.len()].copy_from_slice(path.as_bytes());
    Ok(())
}

// ----- the file server -----

/// The environment whose channel is registered (a forked child registers
/// its own).
static CHANNEL_OF: AtomicU64 = AtomicU64::new(0);

fn init_env() -> Result<u64, Errno> {
    crate::table::with(|t| t.get(crate::proctab::INIT_PID).map(|p| p.env)).ok_or(Errno::EIO)
}

fn channel() -> &'static mut [u8] {
    // SAFETY: `call` registers the channel first: a page mapped writable at
    // CHANNEL_VA for this process alone (init maps it too, and writes it
    // only while this process waits in the call).
    unsafe { core::slice::from_raw_parts_mut(CHANNEL_VA as *mut u8, PAGE as usize) }
}

fn register(init: u64) -> Result<(), Errno> {
    let key = match process::pmap().find(CHANNEL_VA) {
        Some(entry) => entry.key,
        None => {
            let key = process::alloc_frame().map_err(|_| Errno::ENOMEM)?;
            syscall::map(CHANNEL_VA, key, map_flags::WRITE | map_flags::GUARANTEED | map_flags::REPLACE)
                .map_err(Errno::from)?;
            process::pmap_insert(Entry::new(CHANNEL_VA, key, Kind::NoFork, pmap::WRITABLE | pmap::GUARANTEED))?;
            key
        }
    };
    let share = syscall::frame_share(key, init, rights::READ | rights::WRITE).map_err(Errno::from)?;
    transfer(init, [op::REGISTER, share.handle, share.mac, 0])?;
    CHANNEL_OF.store(my_env(), Ordering::SeqCst);
    Ok(())
}

fn transfer(init: u64, msg: [u64; 4]) -> Result<u64, Errno> {
    loop {
        match syscall::pct_call(init, msg) {
            Ok(reply) => {
                let value = reply[0] as i64;
                return if value < 0 { Err(Errno::from_code(-value)) } else { Ok(value as u64) };
            }
            // Init serves one call at a time.
            Err(Error::Again) => syscall::yield_now(),
            Err(_) => return Err(Errno::EIO),
        }
    }
}

/// One call to the file server, with `payload` in the channel first.
fn call(msg: [u64; 4], payload: &[&[u8]]) -> Result<u64, Errno> {
    let init = init_env()?;
    if CHANNEL_OF.load(Ordering::SeqCst) != my_env() {
        register(init)?;
    }
    let chan = channel();
    let mut at = 0;
    for part in payload {
        if at + part.len() > CHANNEL_DATA {
            return Err(Errno::ENAMETOOLONG);
        }
        chan[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    transfer(init, msg)
}

// ----- calls on paths -----

pub fn stat(path: &str) -> Result<Stat, Errno> {
    let path = absolute(path);
    call([op::STAT, path.len() as u64, 0, 0], &[path.as_bytes()])?;
    let mut out = Stat::default();
    // SAFETY: the server wrote a Stat (plain words) at the channel's start.
    unsafe { core::ptr::copy_nonoverlapping(CHANNEL_VA as *const Stat, &mut out, 1) };
    Ok(out)
}

/// The names in a directory with their kinds (`fsproto::KIND_*`).
pub fn readdir(path: &str) -> Result<Vec<(String, u64)>, Errno> {
    let path = absolute(path);
    let mut entries = Vec::new();
    loop {
        let count = call([op::READDIR, path.len() as u64, entries.len() as u64, 0], &[path.as_bytes()])?;
        if count == 0 {
            return Ok(entries);
        }
        let text = core::str::from_utf8(&channel()[..CHANNEL_DATA]).unwrap_or("");
        for line in text.split('\n').take(count as usize) {
            let (kind, name) = line.split_once(' ').unwrap_or(("1", line));
            entries.push((String::from(name), kind.parse().unwrap_or(fsproto::KIND_FILE)));
        }
    }
}

fn path_call(operation: u64, path: &str) -> Result<(), Errno> {
    let path = absolute(path);
    call([operation, path.len() as u64, 0, 0], &[path.as_bytes()]).map(|_| ())
}

pub fn mkdir(path: &str) -> Result<(), Errno> {
    path_call(op::MKDIR, path)
}

pub fn rmdir(path: &str) -> Result<(), Errno> {
    path_call(op::RMDIR, path)
}

pub fn unlink(path: &str) -> Result<(), Errno> {
    path_call(op::UNLINK, path)
}

pub fn rename(from: &str, to: &str) -> Result<(), Errno> {
    let (from, to) = (absolute(from), absolute(to));
    call([op::RENAME, from.len() as u64, to.len() as u64, 0], &[from.as_bytes(), to.as_bytes()]).map(|_| ())
}

// ----- descriptors -----

/// Open flags (Linux's values).
pub use crate::fsproto::flags::*;

fn install(fd: Fd) -> Result<i32, Errno> {
    let mut fds = FDS.lock();
    let at = fds.iter().position(|f| *f == Fd::Free).ok_or(Errno::EMFILE)?;
    fds[at] = fd;
    Ok(at as i32)
}

fn get(fd: i32) -> Result<Fd, Errno> {
    let fds = FDS.lock();
    match fds.get(usize::try_from(fd).map_err(|_| Errno::EBADF)?) {
        Some(Fd::Free) | None => Err(Errno::EBADF),
        Some(&f) => Ok(f),
    }
}

pub fn open(path: &str, flags: u64) -> Result<i32, Errno> {
    let path = absolute(path);
    let handle = call([op::OPEN, flags, path.len() as u64, 0], &[path.as_bytes()])? as u32;
    install(Fd::File(handle)).inspect_err(|_| {
        let _ = call([op::CLOSE, handle as u64, 0, 0], &[]);
    })
}

pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
    match get(fd)? {
        Fd::Console => console_read(buf),
        Fd::File(handle) => {
            let want = buf.len().min(CHANNEL_DATA);
            let got = call([op::READ, handle as u64, want as u64, 0], &[])? as usize;
            buf[..got].copy_from_slice(&channel()[..got]);
            Ok(got)
        }
        Fd::PipeRead(slot) => pipe_read(slot, buf),
        Fd::PipeWrite(_) | Fd::Free => Err(Errno::EBADF),
    }
}

pub fn write(fd: i32, bytes: &[u8]) -> Result<usize, Errno> {
    match get(fd)? {
        Fd::Console => syscall::console_write(&bytes[..bytes.len().min(4096)]).map(|n| n as usize).map_err(Errno::from),
        Fd::File(handle) => {
            let part = &bytes[..bytes.len().min(CHANNEL_DATA)];
            call([op::WRITE, handle as u64, part.len() as u64, 0], &[part]).map(|n| n as usize)
        }
        Fd::PipeWrite(slot) => pipe_write(slot, bytes),
        Fd::PipeRead(_) | Fd::Free => Err(Errno::EBADF),
    }
}

/// Write all of `bytes`.
pub fn write_all(fd: i32, mut bytes: &[u8]) -> Result<(), Errno> {
    while !bytes.is_empty() {
        let n = write(fd, bytes)?;
        if n == 0 {
            return Err(Errno::EIO);
        }
        bytes = &bytes[n..];
    }
    Ok(())
}

/// Read everything until end of file.
pub fn read_to_end(fd: i32) -> Result<Vec<u8>, Errno> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = read(fd, &mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

pub fn lseek(fd: i32, offset: i64, whence: u64) -> Result<u64, Errno> {
    match get(fd)? {
        Fd::File(handle) => call([op::SEEK, handle as u64, offset as u64, whence], &[]),
        _ => Err(Errno::EINVAL),
    }
}

pub fn fstat(fd: i32) -> Result<Stat, Errno> {
    match get(fd)? {
        Fd::File(handle) => {
            call([op::FSTAT, handle as u64, 0, 0], &[])?;
            let mut out = Stat::default();
            // SAFETY: the server wrote a Stat (plain words) at the channel's start.
            unsafe { core::ptr::copy_nonoverlapping(CHANNEL_VA as *const Stat, &mut out, 1) };
            Ok(out)
        }
        _ => Err(Errno::EINVAL),
    }
}

/// Another reference to what `fd` refers to, held by `env` (this process,
/// or a child it starts).
fn add_reference(fd: Fd, env: u64) -> Result<(), Errno> {
    match fd {
        Fd::File(handle) => call([op::DUP, handle as u64, env, 0], &[]).map(|_| ()),
        Fd::PipeRead(slot) => pipe_page(slot).hold(&pipe_page(slot).readers, env),
        Fd::PipeWrite(slot) => pipe_page(slot).hold(&pipe_page(slot).writers, env),
        Fd::Console | Fd::Free => Ok(()),
    }
}

fn drop_reference(fd: Fd, env: u64) {
    match fd {
        Fd::File(handle) => {
            let _ = call([op::CLOSE, handle as u64, env, 0], &[]);
        }
        Fd::PipeRead(slot) => pipe_page(slot).let_go(&pipe_page(slot).readers, env),
        Fd::PipeWrite(slot) => pipe_page(slot).let_go(&pipe_page(slot).writers, env),
        Fd::Console | Fd::Free => {}
    }
}

pub fn dup(fd: i32) -> Result<i32, Errno> {
    let what = get(fd)?;
    add_reference(what, my_env())?;
    install(what).inspect_err(|_| drop_reference(what, my_env()))
}

pub fn dup2(old: i32, new: i32) -> Result<i32, Errno> {
    let what = get(old)?;
    let at = usize::try_from(new).ok().filter(|&n| n < MAX_FDS).ok_or(Errno::EBADF)?;
    if old == new {
        return Ok(new);
    }
    add_reference(what, my_env())?;
    let previous = core::mem::replace(&mut FDS.lock()[at], what);
    if previous != Fd::Free {
        release(previous);
    }
    Ok(new)
}

pub fn close(fd: i32) -> Result<(), Errno> {
    let at = usize::try_from(fd).ok().filter(|&n| n < MAX_FDS).ok_or(Errno::EBADF)?;
    let what = core::mem::replace(&mut FDS.lock()[at], Fd::Free);
    if what == Fd::Free {
        return Err(Errno::EBADF);
    }
    release(what);
    Ok(())
}

/// Let go of one descriptor's reference (and of a pipe's page once no
/// descriptor of ours uses it).
fn release(what: Fd) {
    drop_reference(what, my_env());
    let slot = match what {
        Fd::PipeRead(s) | Fd::PipeWrite(s) => s,
        _ => return,
    };
    let still = FDS.lock().iter().any(|f| matches!(f, Fd::PipeRead(s) | Fd::PipeWrite(s) if *s == slot));
    if !still {
        let va = pipe_va(slot);
        let _ = syscall::unmap(va);
        if let Some(entry) = process::pmap().remove(va) {
            let _ = syscall::frame_free(entry.key);
        }
    }
}

/// Close every descriptor (the process is ending).
pub fn close_all() {
    let Some(mut fds) = FDS.try_lock() else { return };
    let table = core::mem::replace(&mut *fds, [Fd::Free; MAX_FDS]);
    drop(fds);
    for what in table {
        if what != Fd::Free {
            release(what);
        }
    }
}

/// A child `child` (environment) is being started with our descriptors:
/// it takes a reference to each (fork, exec).
pub fn inherit_to(child: u64) -> Result<(), Errno> {
    for what in fds() {
        add_reference(what, child)?;
    }
    Ok(())
}

/// Undo `inherit_to` (the child did not start).
pub fn uninherit(child: u64) {
    for what in fds() {
        drop_reference(what, child);
    }
}

/// This environment hands its descriptors over to `next` (exec): pipe ends
/// are held by `next` instead.
pub fn hand_over(next: u64) {
    let me = my_env();
    for what in fds() {
        match what {
            Fd::PipeRead(slot) => {
                let page = pipe_page(slot);
                let _ = page.hold(&page.readers, next);
                page.let_go(&page.readers, me);
            }
            Fd::PipeWrite(slot) => {
                let page = pipe_page(slot);
                let _ = page.hold(&page.writers, next);
                page.let_go(&page.writers, me);
            }
            Fd::File(handle) => {
                let _ = call([op::HANDOVER, handle as u64, next, 0], &[]);
            }
            _ => {}
        }
    }
}

// ----- the console -----

fn console_read(buf: &mut [u8]) -> Result<usize, Errno> {
    if buf.is_empty() {
        return Ok(0);
    }
    loop {
        match syscall::console_read(buf) {
            Ok(n) => return Ok(n),
            // The kernel wakes us when input comes.
            Err(Error::Again) => syscall::block(),
            Err(error) => return Err(error.into()),
        }
    }
}

// ----- pipes -----

/// Pipes a process can hold at once (pages at `PIPE_VA`).
pub const MAX_PIPES: u8 = 32;
const HOLDERS: usize = 8;
const RING: usize = 4096 - 8 * (4 + 2 * HOLDERS + 2);

/// A pipe's page.
#[repr(C)]
struct PipePage {
    lock: AtomicU64,
    /// Bytes ever read and written (positions in the ring modulo `RING`).
    read_pos: AtomicU64,
    write_pos: AtomicU64,
    _reserved: AtomicU64,
    /// Environments holding each end (one entry per descriptor).
    readers: [AtomicU64; HOLDERS],
    writers: [AtomicU64; HOLDERS],
    /// Who sleeps on it (0: nobody).
    reader_waiting: AtomicU64,
    writer_waiting: AtomicU64,
    data: [u8; RING],
}

const _: () = assert!(core::mem::size_of::<PipePage>() == 4096);

fn pipe_va(slot: u8) -> u64 {
    PIPE_VA + slot as u64 * PAGE
}

fn pipe_page(slot: u8) -> &'static PipePage {
    // SAFETY: a descriptor names a pipe slot only while its page is mapped
    // (`pipe`, fork and exec map it at the same address; the last close
    // unmaps it after the descriptor is gone).
    unsafe { &*(pipe_va(slot) as *const PipePage) }
}

impl PipePage {
    fn lock(&self) {
        let me = my_env();
        while self.lock.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_err() {
            let holder = self.lock.load(Ordering::Relaxed);
            if holder != 0
                && syscall::env_wake(holder) == Err(Error::NoSuchEnv)
                && self.lock.compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed).is_ok()
            {
                return;
            }
            syscall::yield_now();
        }
    }

    fn unlock(&self) {
        self.lock.store(0, Ordering::Release);
    }

    fn hold(&self, end: &[AtomicU64; HOLDERS], env: u64) -> Result<(), Errno> {
        self.lock();
        let free = end.iter().find(|h| h.load(Ordering::Relaxed) == 0);
        let result = match free {
            Some(h) => {
                h.store(env, Ordering::Relaxed);
                Ok(())
            }
            None => Err(Errno::EMFILE),
        };
        self.unlock();
        result
    }

    fn let_go(&self, end: &[AtomicU64; HOLDERS], env: u64) {
        self.lock();
        if let Some(h) = end.iter().find(|h| h.load(Ordering::Relaxed) == env) {
            h.store(0, Ordering::Relaxed);
        }
        self.unlock();
        // The other side may be waiting for exactly this (EOF, EPIPE).
        for waiting in [&self.reader_waiting, &self.writer_waiting] {
            let env = waiting.load(Ordering::Relaxed);
            if env != 0 {
                let _ = syscall::env_wake(env);
            }
        }
    }

    /// Does anyone (alive) hold this end? A holder the process table does
    /// not list as running is asked about once more: an environment in the
    /// middle of an exec is listed under neither its old nor its new id for
    /// a moment (the table moves first, the pipe ends follow), so only the
    /// kernel's word (`env_wake` answering `NoSuchEnv`: ended, never to
    /// come back) drops a holder. The wake is harmless: a `block` may
    /// always return early.
    fn held(&self, end: &[AtomicU64; HOLDERS]) -> bool {
        let mut any = false;
        for h in end {
            let env = h.load(Ordering::Relaxed);
            if env == 0 {
                continue;
            }
            let listed = env == my_env() || crate::table::with(|t| t.by_env(env).is_some());
            if !listed && syscall::env_wake(env) == Err(Error::NoSuchEnv) {
                h.store(0, Ordering::Relaxed);
            } else {
                any = true;
            }
        }
        any
    }

    fn wake(&self, waiting: &AtomicU64) {
        let env = waiting.swap(0, Ordering::Relaxed);
        if env != 0 {
            let _ = syscall::env_wake(env);
        }
    }
}

/// `pipe()`: (read end, write end).
pub fn pipe() -> Result<(i32, i32), Errno> {
    let slot = (0..MAX_PIPES).find(|&s| process::pmap().find(pipe_va(s)).is_none()).ok_or(Errno::EMFILE)?;
    let va = pipe_va(slot);
    let key = process::alloc_frame().map_err(|_| Errno::ENOMEM)?;
    syscall::map(va, key, map_flags::WRITE | map_flags::REPLACE).map_err(Errno::from)?;
    process::pmap_insert(Entry::new(va, key, Kind::Shared, pmap::WRITABLE))?;
    let page = pipe_page(slot);
    page.readers[0].store(my_env(), Ordering::SeqCst);
    page.writers[0].store(my_env(), Ordering::SeqCst);
    let read_end = install(Fd::PipeRead(slot))?;
    let write_end = install(Fd::PipeWrite(slot)).inspect_err(|_| {
        let _ = close(read_end);
    })?;
    Ok((read_end, write_end))
}

fn pipe_read(slot: u8, buf: &mut [u8]) -> Result<usize, Errno> {
    let page = pipe_page(slot);
    loop {
        page.lock();
        let (read, written) = (page.read_pos.load(Ordering::Relaxed), page.write_pos.load(Ordering::Relaxed));
        // Every process of the libOS can write the page: positions that
        // make no sense are an error, never an index.
        let available = written.wrapping_sub(read);
        if available > RING as u64 {
            page.unlock();
            return Err(Errno::EIO);
        }
        let available = available as usize;
        if available > 0 {
            let count = available.min(buf.len());
            // At most two runs: to the ring's end, then from its start.
            let at = read as usize % RING;
            let first = count.min(RING - at);
            buf[..first].copy_from_slice(&page.data[at..at + first]);
            buf[first..count].copy_from_slice(&page.data[..count - first]);
            page.read_pos.store(read + count as u64, Ordering::Relaxed);
            page.unlock();
            page.wake(&page.writer_waiting);
            return Ok(count);
        }
        if !page.held(&page.writers) {
            page.unlock();
            return Ok(0);
        }
        page.reader_waiting.store(my_env(), Ordering::Relaxed);
        page.unlock();
        syscall::block();
    }
}

fn pipe_write(slot: u8, bytes: &[u8]) -> Result<usize, Errno> {
    let page = pipe_page(slot);
    let mut done = 0;
    while done < bytes.len() {
        page.lock();
        if !page.held(&page.readers) {
            page.unlock();
            return if done > 0 { Ok(done) } else { Err(Errno::EPIPE) };
        }
        let (read, written) = (page.read_pos.load(Ordering::Relaxed), page.write_pos.load(Ordering::Relaxed));
        let used = written.wrapping_sub(read);
        if used > RING as u64 {
            page.unlock();
            return Err(Errno::EIO);
        }
        let room = RING - used as usize;
        if room > 0 {
            let count = room.min(bytes.len() - done);
            let data = page.data.as_ptr() as *mut u8;
            let at = written as usize % RING;
            let first = count.min(RING - at);
            // SAFETY: both runs lie inside the ring of the mapped pipe page
            // (`first` stops at its end, the rest starts at 0 and is below
            // `room`), the part no reader reads until `write_pos` moves;
            // the lock gives it to us alone.
            unsafe {
                core::ptr::copy_nonoverlapping(bytes[done..].as_ptr(), data.add(at), first);
                core::ptr::copy_nonoverlapping(bytes[done + first..].as_ptr(), data, count - first);
            }
            page.write_pos.store(written + count as u64, Ordering::Relaxed);
            done += count;
            page.unlock();
            page.wake(&page.reader_waiting);
            continue;
        }
        page.writer_waiting.store(my_env(), Ordering::Relaxed);
        page.unlock();
        syscall::block();
    }
    Ok(done)
}

/// The start-page text that hands the descriptors, working directory and
/// environment on to a new program (`fd=N:KIND` lines).
pub fn encode_for_exec() -> String {
    let mut text = String::new();
    for (n, what) in fds().iter().enumerate() {
        let kind = match what {
            Fd::Free => continue,
            Fd::Console => String::from("c"),
            Fd::File(h) => alloc::format!("f{}", h),
            Fd::PipeRead(s) => alloc::format!("r{}", s),
            Fd::PipeWrite(s) => alloc::format!("w{}", s),
        };
        text.push_str(&alloc::format!("fd={}:{}\n", n, kind));
    }
    text.push_str(&alloc::format!("cwd={}\n", getcwd()));
    for (key, value) in crate::env::vars() {
        text.push_str(&alloc::format!("env={}={}\n", key, value));
    }
    text
}

/// A new program's descriptors, working directory and environment, from
/// its start page (none given: the console on 0, 1 and 2).
pub fn decode_at_start(params: &str) {
    let mut table = [Fd::Free; MAX_FDS];
    let mut any = false;
    for line in params.lines() {
        if let Some(spec) = line.strip_prefix("fd=") {
            let Some((n, kind)) = spec.split_once(':') else { continue };
            let Ok(n) = n.parse::<usize>() else { continue };
            let number = |s: &str| s[1..].parse::<u32>().ok();
            let fd = match kind.as_bytes().first() {
                Some(b'c') => Some(Fd::Console),
                Some(b'f') => number(kind).map(Fd::File),
                Some(b'r') => number(kind).map(|s| Fd::PipeRead(s as u8)),
                Some(b'w') => number(kind).map(|s| Fd::PipeWrite(s as u8)),
                _ => None,
            };
            if let (Some(fd), Some(slot)) = (fd, table.get_mut(n)) {
                *slot = fd;
                any = true;
            }
        } else if let Some(dir) = line.strip_prefix("cwd=") {
            let _ = set_cwd(dir);
        } else if let Some(pair) = line.strip_prefix("env=") {
            if let Some((key, value)) = pair.split_once('=') {
                crate::env::set(key, value);
            }
        }
    }
    if any {
        set_fds(table);
    }
}

/// Map the pipe pages our descriptors use into `child` (exec), co-owned.
pub fn give_pipes(child: u64, entries: &mut Vec<Entry>) -> Result<(), Error> {
    let mut done: Vec<u8> = Vec::new();
    for what in fds() {
        let slot = match what {
            Fd::PipeRead(s) | Fd::PipeWrite(s) => s,
            _ => continue,
        };
        if done.contains(&slot) {
            continue;
        }
        done.push(slot);
        let va = pipe_va(slot);
        let Some(entry) = process::pmap().find(va) else { continue };
        let key: FrameKey = syscall::frame_co_own(entry.key, child, rights::ALL)?;
        syscall::env_map(child, va, key, map_flags::WRITE)?;
        entries.push(Entry::new(va, key, Kind::Shared, pmap::WRITABLE));
    }
    Ok(())
}

/// What `out!` and `outln!` call: format, then write it all to `fd`.
pub fn print_to(fd: i32, args: core::fmt::Arguments) {
    let text = alloc::fmt::format(args);
    let _ = write_all(fd, text.as_bytes());
}
