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
    ECHILD = 10,
    EAGAIN = 11,
    ENOMEM = 12,
    EFAULT = 14,
    EINVAL = 22,
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
            Errno::ECHILD => "ECHILD",
            Errno::EAGAIN => "EAGAIN",
            Errno::ENOMEM => "ENOMEM",
            Errno::EFAULT => "EFAULT",
            Errno::EINVAL => "EINVAL",
        }
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
