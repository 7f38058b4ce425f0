//! The system-call ABI: numbers, error codes, the return convention, and
//! (with the `runtime` feature) the user-side stubs.
//!
//! Convention: the `syscall` instruction with the number in `rax` and up to
//! six arguments in `rdi, rsi, rdx, r10, r8, r9`. The kernel returns one
//! value in `rax`: a non-negative value is success, `-(code)` an [`Error`].
//! `rcx` and `r11` are clobbered by the instruction itself; every other
//! register is preserved. An unknown number returns
//! [`Error::UnknownSyscall`], never anything worse.

/// System-call numbers. docs/ABI.md describes each one.
pub mod nr {
    /// Do nothing and return 0: the user/kernel crossing alone.
    pub const NULL: u64 = 0;
    /// `console_write(ptr, len) -> len`: write bytes to the console.
    pub const CONSOLE_WRITE: u64 = 1;
    /// `exit(code) -> !`: end the calling environment.
    pub const EXIT: u64 = 2;
    /// `yield() -> 0`: give the rest of the time slice to the next environment.
    pub const YIELD: u64 = 3;
    /// `set_upcalls(table_ptr) -> 0`: register the upcall entry points.
    pub const SET_UPCALLS: u64 = 4;
    /// `stats(out_ptr, len) -> len`: copy the kernel's event counters.
    pub const STATS: u64 = 5;
    /// One past the highest number in use.
    pub const COUNT: u64 = 6;
}

/// Why a system call failed. Returned in `rax` as `-(code)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum Error {
    /// No system call has this number.
    UnknownSyscall = 1,
    /// A pointer is null, outside the user half, or not mapped for the access.
    BadAddress = 2,
    /// A length is zero where that is meaningless, negative, or too large.
    BadLength = 3,
    /// A pointer is not aligned for the type it points at.
    Misaligned = 4,
    /// An argument is out of range or inconsistent.
    InvalidArgument = 5,
    /// The named environment does not exist or has ended.
    NoSuchEnv = 6,
    /// The kernel could not find the memory the call needs.
    NoMemory = 7,
    /// The caller lacks the right it would use.
    PermissionDenied = 8,
}

impl Error {
    /// Every error, for tables and tests.
    pub const ALL: [Error; 8] = [
        Error::UnknownSyscall,
        Error::BadAddress,
        Error::BadLength,
        Error::Misaligned,
        Error::InvalidArgument,
        Error::NoSuchEnv,
        Error::NoMemory,
        Error::PermissionDenied,
    ];

    /// The error with this code.
    pub fn from_code(code: i64) -> Option<Error> {
        Error::ALL.iter().copied().find(|e| *e as i64 == code)
    }

    /// A short lowercase name, as printed in scenario lines.
    pub fn name(self) -> &'static str {
        match self {
            Error::UnknownSyscall => "unknown-syscall",
            Error::BadAddress => "bad-address",
            Error::BadLength => "bad-length",
            Error::Misaligned => "misaligned",
            Error::InvalidArgument => "invalid-argument",
            Error::NoSuchEnv => "no-such-env",
            Error::NoMemory => "no-memory",
            Error::PermissionDenied => "permission-denied",
        }
    }
}

/// Encode a result the way the kernel returns it in `rax`.
pub fn encode(result: Result<u64, Error>) -> u64 {
    match result {
        Ok(value) => value,
        Err(error) => (-(error as i64)) as u64,
    }
}

/// Decode a raw `rax` value. A negative value that is no known error code
/// decodes as `InvalidArgument` rather than being trusted as a value.
pub fn decode(raw: u64) -> Result<u64, Error> {
    let signed = raw as i64;
    if signed >= 0 {
        Ok(raw)
    } else {
        Err(Error::from_code(signed.wrapping_neg()).unwrap_or(Error::InvalidArgument))
    }
}

/// The kernel's event counters, as copied out by `stats`. Benchmarks print
/// them beside instruction counts so the cost on real hardware can be
/// reasoned about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct KernelStats {
    pub syscalls: u64,
    pub upcalls: u64,
    pub exceptions: u64,
    pub page_faults: u64,
    pub timer_ticks: u64,
    pub context_switches: u64,
    pub cr3_loads: u64,
    pub invlpg: u64,
    pub envs_ended: u64,
}

#[cfg(feature = "runtime")]
pub use stubs::*;

#[cfg(feature = "runtime")]
mod stubs {
    use super::{decode, nr, Error, KernelStats};
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

    /// Read the kernel's event counters.
    pub fn stats() -> Result<KernelStats, Error> {
        let mut out = KernelStats::default();
        let len = core::mem::size_of::<KernelStats>() as u64;
        // SAFETY: the kernel writes at most `len` bytes into `out`.
        decode(unsafe { raw6(nr::STATS, &mut out as *mut KernelStats as u64, len, 0, 0, 0, 0) })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        for error in Error::ALL {
            assert_eq!(decode(encode(Err(error))), Err(error));
            assert_eq!(Error::from_code(error as i64), Some(error));
        }
        assert_eq!(decode(encode(Ok(42))), Ok(42));
        assert_eq!(decode((-999i64) as u64), Err(Error::InvalidArgument));
    }
}
