//! The file protocol between a process and init, which serves the file
//! system (`libos_unix::fs`) to every process of the libOS: a protected
//! control transfer to init with the operation and its numbers in
//! registers, and paths and data in a channel page the process shares with
//! init. The reply's first word is the result (negative: `-errno`).

use alloc::string::String;
use alloc::vec::Vec;

/// `path` made plain: `.` dropped, `..` applied, one `/` between parts,
/// `/` for the root (an absolute path in, an absolute path out).
pub fn normalise(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return String::from("/");
    }
    parts.iter().fold(String::new(), |mut s, p| {
        s.push('/');
        s.push_str(p);
        s
    })
}

/// Bytes of path or data one call carries in the channel page.
pub const CHANNEL_DATA: usize = 4000;

/// Operations (first word of the message).
pub mod op {
    /// `[REGISTER, key.handle, key.mac]`: the channel page (a share of it).
    pub const REGISTER: u64 = 1;
    /// `[OPEN, flags, path_len]` → handle.
    pub const OPEN: u64 = 2;
    /// `[READ, handle, len]` → bytes read into the channel.
    pub const READ: u64 = 3;
    /// `[WRITE, handle, len]` (data in the channel) → bytes written.
    pub const WRITE: u64 = 4;
    /// `[SEEK, handle, offset, whence]` → new offset.
    pub const SEEK: u64 = 5;
    /// `[CLOSE, handle, env]`, `[DUP, handle, env]`: `env` (0: the caller)
    /// lets go of, or takes, a reference to the open description (a parent
    /// acts so for the child it forks).
    pub const CLOSE: u64 = 6;
    pub const DUP: u64 = 7;
    /// `[STAT, path_len]` / `[FSTAT, handle]` → a `Stat` in the channel.
    pub const STAT: u64 = 8;
    pub const FSTAT: u64 = 9;
    /// `[READDIR, path_len, skip]` → entries written as `kind name\n`.
    pub const READDIR: u64 = 10;
    /// `[MKDIR|RMDIR|UNLINK, path_len]`.
    pub const MKDIR: u64 = 11;
    pub const RMDIR: u64 = 12;
    pub const UNLINK: u64 = 13;
    /// `[RENAME, from_len, to_len]` (both paths in the channel, one after
    /// the other).
    pub const RENAME: u64 = 14;
    /// `[HANDOVER, handle, next_env]`: exec hands the caller's reference
    /// to the environment that takes over the process.
    pub const HANDOVER: u64 = 15;
}

/// What `stat` reports (the server's `fs::Stat`, word for word).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Stat {
    pub ino: u64,
    /// 1: file; 2: directory.
    pub kind: u64,
    pub size: u64,
    pub links: u64,
    pub version: u64,
}

pub const KIND_FILE: u64 = 1;
pub const KIND_DIR: u64 = 2;

/// Open flags (Linux's values).
pub mod flags {
    pub const O_RDONLY: u64 = 0;
    pub const O_WRONLY: u64 = 1;
    pub const O_RDWR: u64 = 2;
    pub const O_ACCMODE: u64 = 3;
    pub const O_CREAT: u64 = 0o100;
    pub const O_EXCL: u64 = 0o200;
    pub const O_TRUNC: u64 = 0o1000;
    pub const O_APPEND: u64 = 0o2000;
    pub const O_DIRECTORY: u64 = 0o200000;
}
