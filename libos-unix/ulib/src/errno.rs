//! Unix error numbers, and how the kernel's errors become them.

use libos_runtime::syscall::Error;

/// The errors the Unix calls return (Linux's numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Errno {
    EPERM = 1,
    ENOENT = 2,
    ESRCH = 3,
    EIO = 5,
    E2BIG = 7,
    ENOEXEC = 8,
    EBADF = 9,
    ECHILD = 10,
    EAGAIN = 11,
    ENOMEM = 12,
    EACCES = 13,
    EFAULT = 14,
    EBUSY = 16,
    EEXIST = 17,
    ENOTDIR = 20,
    EISDIR = 21,
    EINVAL = 22,
    EMFILE = 24,
    ENOSPC = 28,
    EPIPE = 32,
    ENAMETOOLONG = 36,
    ENOTEMPTY = 39,
}

impl Errno {
    pub fn name(self) -> &'static str {
        match self {
            Errno::EPERM => "EPERM",
            Errno::ENOENT => "ENOENT",
            Errno::ESRCH => "ESRCH",
            Errno::EIO => "EIO",
            Errno::E2BIG => "E2BIG",
            Errno::ENOEXEC => "ENOEXEC",
            Errno::EBADF => "EBADF",
            Errno::ECHILD => "ECHILD",
            Errno::EAGAIN => "EAGAIN",
            Errno::ENOMEM => "ENOMEM",
            Errno::EACCES => "EACCES",
            Errno::EFAULT => "EFAULT",
            Errno::EBUSY => "EBUSY",
            Errno::EEXIST => "EEXIST",
            Errno::ENOTDIR => "ENOTDIR",
            Errno::EISDIR => "EISDIR",
            Errno::EINVAL => "EINVAL",
            Errno::EMFILE => "EMFILE",
            Errno::ENOSPC => "ENOSPC",
            Errno::EPIPE => "EPIPE",
            Errno::ENAMETOOLONG => "ENAMETOOLONG",
            Errno::ENOTEMPTY => "ENOTEMPTY",
        }
    }

    /// The error with Unix number `code` (unknown numbers are `EIO`).
    pub fn from_code(code: i64) -> Errno {
        const ALL: [Errno; 22] = [
            Errno::EPERM,
            Errno::ENOENT,
            Errno::ESRCH,
            Errno::EIO,
            Errno::E2BIG,
            Errno::ENOEXEC,
            Errno::EBADF,
            Errno::ECHILD,
            Errno::EAGAIN,
            Errno::ENOMEM,
            Errno::EACCES,
            Errno::EFAULT,
            Errno::EBUSY,
            Errno::EEXIST,
            Errno::ENOTDIR,
            Errno::EISDIR,
            Errno::EINVAL,
            Errno::EMFILE,
            Errno::ENOSPC,
            Errno::EPIPE,
            Errno::ENAMETOOLONG,
            Errno::ENOTEMPTY,
        ];
        ALL.iter().copied().find(|e| *e as i64 == code).unwrap_or(Errno::EIO)
    }
}

impl core::fmt::Display for Errno {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// A kernel error met while creating or building a process: running out
/// of quota or kernel memory is `EAGAIN` (as fork reports a full process
/// table), a refused environment `ESRCH`, anything else `EINVAL`.
impl From<Error> for Errno {
    fn from(error: Error) -> Errno {
        match error {
            Error::QuotaExceeded | Error::NoMemory | Error::Again | Error::NoSlots => Errno::EAGAIN,
            Error::NoSuchEnv => Errno::ESRCH,
            Error::PermissionDenied => Errno::EPERM,
            Error::BadAddress => Errno::EFAULT,
            _ => Errno::EINVAL,
        }
    }
}
