//! init's file server: the libOS's one file system (`libos_unix::fs`),
//! seeded from the boot archive, served to every process by protected
//! control transfer (`ulib::fsproto`). Each process lends init a channel
//! page (a share of a frame it owns) for paths and data; init maps it in
//! its own window and answers one call at a time, so every process sees
//! one consistent tree.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use libos_runtime::rt::{self, set_handler};
use libos_runtime::syscall::{self, map_flags, rights, FrameKey};
use libos_runtime::upcall::{UpcallFrame, UpcallKind};
use libos_unix::fs::{Backing, Fs, FsError};
use ulib::fsproto::{op, CHANNEL_DATA};
use ulib::layout::{INIT_CHANNELS_VA, PAGE};

/// Channels (processes with one open at a time).
const CHANNELS: usize = 64;

struct Server {
    fs: Fs,
    /// The environment each channel slot belongs to (0: free).
    owners: [u64; CHANNELS],
    /// Who holds each open description, one entry per reference: only a
    /// holder may use a handle, and references of processes that ended
    /// without closing them (killed) are let go of.
    holders: BTreeMap<u32, Vec<u64>>,
}

/// Drop the references of environments whose process has ended.
fn prune(server: &mut Server) {
    let alive = |env: u64| ulib::table::with(|t| t.by_env(env).is_some());
    let mut gone = Vec::new();
    for (&handle, envs) in server.holders.iter_mut() {
        envs.retain(|&env| {
            let keep = alive(env);
            if !keep {
                gone.push(handle);
            }
            keep
        });
    }
    server.holders.retain(|_, envs| !envs.is_empty());
    for handle in gone {
        let _ = server.fs.close(handle);
    }
}

static SERVER: spin::Mutex<Option<Server>> = spin::Mutex::new(None);

/// The boot archive, read through the kernel.
struct Archive;

impl Backing for Archive {
    fn read(&self, offset: u64, buf: &mut [u8]) -> usize {
        read_archive(offset, buf)
    }
}

/// Fill `buf` from the boot archive at `offset`, in calls of at most
/// 64 KiB; returns how many bytes it got (fewer at the archive's end).
pub(crate) fn read_archive(offset: u64, buf: &mut [u8]) -> usize {
    let mut done = 0;
    while done < buf.len() {
        let chunk = (buf.len() - done).min(64 * 1024);
        match syscall::archive_read(offset + done as u64, &mut buf[done..done + chunk]) {
            Ok(0) | Err(_) => break,
            Ok(n) => done += n,
        }
    }
    done
}

/// Seed the tree from the archive (every file but the manifest) and start
/// serving. Returns how many files were seeded.
pub fn start() -> Result<usize, &'static str> {
    let mut fs = Fs::new();
    let mut header = [0u8; 16];
    Archive.read(0, &mut header);
    let count = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes")) as usize;
    let mut dir = alloc::vec![0u8; count * 64];
    Archive.read(16, &mut dir);
    let mut seeded = 0;
    for entry in dir.chunks(64) {
        let len = entry[..48].iter().position(|&b| b == 0).unwrap_or(48);
        let Ok(name) = core::str::from_utf8(&entry[..len]) else { continue };
        if name == libos_runtime::archive::MANIFEST_NAME || name.is_empty() {
            continue;
        }
        let word = |at: usize| u64::from_le_bytes(entry[at..at + 8].try_into().expect("8 bytes"));
        let path = alloc::format!("/{}", name);
        if fs.add_archive_file(&path, word(48), word(56)).is_ok() {
            seeded += 1;
        }
    }
    for dir in ["/home", "/tmp"] {
        let _ = fs.mkdir(dir);
    }
    *SERVER.lock() = Some(Server { fs, owners: [0; CHANNELS], holders: BTreeMap::new() });
    // A process ended mid-call takes its channel page with it: a fault on
    // the channel window is answered with a blank page.
    set_handler(UpcallKind::PageFault, on_fault).map_err(|_| "page-fault handler")?;
    rt::set_pct_handler(serve).map_err(|_| "protected entry")?;
    Ok(seeded)
}

fn on_fault(frame: &mut UpcallFrame) {
    let window = INIT_CHANNELS_VA..INIT_CHANNELS_VA + CHANNELS as u64 * PAGE;
    if window.contains(&frame.fault_addr) {
        if let Ok((_, key)) = syscall::frame_alloc(0, rights::READ | rights::WRITE) {
            let page = frame.fault_addr & !(PAGE - 1);
            if syscall::map(page, key, map_flags::WRITE | map_flags::REPLACE).is_ok() {
                return;
            }
        }
    }
    libos_runtime::println!("init: page fault at {:#x} (rip {:#x})", frame.fault_addr, frame.rip);
    syscall::exit(3);
}

fn channel(slot: usize) -> &'static mut [u8] {
    // SAFETY: slot pages are mapped by REGISTER before any call names the
    // slot (a page lost since is remapped blank by `on_fault`); init's
    // protected entry is their only user, one call at a time.
    unsafe { core::slice::from_raw_parts_mut((INIT_CHANNELS_VA + slot as u64 * PAGE) as *mut u8, PAGE as usize) }
}

/// The path (or paths) a call carries, copied out of the channel.
fn text(slot: usize, len: u64) -> Result<alloc::string::String, FsError> {
    let bytes = channel(slot).get(..len as usize).filter(|_| len as usize <= CHANNEL_DATA).ok_or(FsError::Invalid)?;
    core::str::from_utf8(bytes).map(alloc::string::String::from).map_err(|_| FsError::Invalid)
}

/// The protected entry: one file call from `caller`.
fn serve(caller: u64, msg: [u64; 4], _is_async: bool) -> [u64; 4] {
    let mut guard = SERVER.lock();
    let Some(server) = guard.as_mut() else { return [(-5i64) as u64, 0, 0, 0] };
    let result = if msg[0] == op::REGISTER {
        register(server, caller, FrameKey { handle: msg[1], mac: msg[2] })
    } else {
        match server.owners.iter().position(|&o| o == caller) {
            Some(slot) => with_holders(server, caller, slot, msg),
            None => Err(FsError::BadHandle),
        }
    };
    let word = match result {
        Ok(value) => value,
        Err(error) => (-error.errno()) as u64,
    };
    [word, 0, 0, 0]
}

fn register(server: &mut Server, caller: u64, key: FrameKey) -> Result<u64, FsError> {
    // Its old slot, or a free one, or one whose process is gone (its page
    // is no longer mapped: the kernel unmapped it with the frame).
    let slot = server
        .owners
        .iter()
        .position(|&o| o == caller)
        .or_else(|| server.owners.iter().position(|&o| o == 0))
        .or_else(|| {
            (0..CHANNELS)
                .find(|&s| syscall::map_query(INIT_CHANNELS_VA + s as u64 * PAGE, false).map_or(true, |b| b == 0))
        })
        .ok_or(FsError::NoSpace)?;
    let va = INIT_CHANNELS_VA + slot as u64 * PAGE;
    syscall::map(va, key, map_flags::WRITE | map_flags::REPLACE).map_err(|_| FsError::Invalid)?;
    server.owners[slot] = caller;
    Ok(0)
}

/// A call on an open description is the holders' alone; open, dup, close
/// and handover keep the holders right.
fn with_holders(server: &mut Server, caller: u64, slot: usize, msg: [u64; 4]) -> Result<u64, FsError> {
    let handle_arg = msg[1] as u32;
    let holds = |server: &Server, env: u64| server.holders.get(&handle_arg).is_some_and(|e| e.contains(&env));
    match msg[0] {
        op::OPEN => {
            if server.holders.len() > 3 * libos_unix::fs::MAX_OPEN / 4 {
                prune(server);
            }
            let handle = handle(&mut server.fs, slot, msg)?;
            server.holders.entry(handle as u32).or_default().push(caller);
            Ok(handle)
        }
        op::READ | op::WRITE | op::SEEK | op::FSTAT if !holds(server, caller) => Err(FsError::BadHandle),
        op::DUP | op::CLOSE | op::HANDOVER => {
            let env = if msg[2] == 0 || msg[0] == op::HANDOVER { caller } else { msg[2] };
            if !holds(server, caller) && !holds(server, env) {
                return Err(FsError::BadHandle);
            }
            let envs = server.holders.get_mut(&handle_arg).ok_or(FsError::BadHandle)?;
            match msg[0] {
                op::DUP => {
                    server.fs.dup(handle_arg)?;
                    envs.push(env);
                }
                op::HANDOVER => {
                    let at = envs.iter().position(|&e| e == caller).ok_or(FsError::BadHandle)?;
                    envs[at] = msg[2];
                }
                _ => {
                    let at = envs.iter().position(|&e| e == env).ok_or(FsError::BadHandle)?;
                    envs.swap_remove(at);
                    if envs.is_empty() {
                        server.holders.remove(&handle_arg);
                    }
                    server.fs.close(handle_arg)?;
                }
            }
            Ok(0)
        }
        _ => handle(&mut server.fs, slot, msg),
    }
}

fn handle(fs: &mut Fs, slot: usize, msg: [u64; 4]) -> Result<u64, FsError> {
    let path = match msg[0] {
        op::OPEN => text(slot, msg[2])?,
        op::STAT | op::READDIR | op::MKDIR | op::RMDIR | op::UNLINK => text(slot, msg[1])?,
        op::RENAME => text(slot, msg[1] + msg[2])?,
        _ => alloc::string::String::new(),
    };
    let path = path.as_str();
    let chan = channel(slot);
    match msg[0] {
        op::OPEN => fs.open(path, msg[1]).map(u64::from),
        op::READ => {
            let want = (msg[2] as usize).min(CHANNEL_DATA);
            let mut buf = alloc::vec![0u8; want];
            let got = fs.read(msg[1] as u32, &mut buf, &Archive)?;
            chan[..got].copy_from_slice(&buf[..got]);
            Ok(got as u64)
        }
        op::WRITE => {
            let len = (msg[2] as usize).min(CHANNEL_DATA);
            let data: Vec<u8> = chan[..len].to_vec();
            fs.write(msg[1] as u32, &data, &Archive).map(|n| n as u64)
        }
        op::SEEK => fs.seek(msg[1] as u32, msg[2] as i64, msg[3]),

        op::STAT | op::FSTAT => {
            let stat = if msg[0] == op::STAT { fs.stat(path)? } else { fs.fstat(msg[1] as u32)? };
            let words = [stat.ino, stat.kind, stat.size, stat.links, stat.version];
            for (i, word) in words.iter().enumerate() {
                chan[i * 8..i * 8 + 8].copy_from_slice(&word.to_le_bytes());
            }
            Ok(0)
        }
        op::READDIR => {
            let entries = fs.readdir(path)?;
            let mut at = 0;
            let mut count = 0;
            for (name, kind) in entries.iter().skip(msg[2] as usize) {
                let line = alloc::format!("{} {}\n", kind, name);
                if at + line.len() > CHANNEL_DATA {
                    break;
                }
                chan[at..at + line.len()].copy_from_slice(line.as_bytes());
                at += line.len();
                count += 1;
            }
            Ok(count)
        }
        op::MKDIR => fs.mkdir(path).map(|()| 0),
        op::RMDIR => fs.rmdir(path).map(|()| 0),
        op::UNLINK => fs.unlink(path).map(|()| 0),
        op::RENAME => {
            let split = (msg[1] as usize).min(path.len());
            if !path.is_char_boundary(split) {
                return Err(FsError::Invalid);
            }
            let (from, to) = path.split_at(split);
            fs.rename(from, to).map(|()| 0)
        }
        _ => Err(FsError::Invalid),
    }
}
