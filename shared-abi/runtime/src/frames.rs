//! Frames for a libOS's own mappings: allocate one, waiting while the
//! kernel answers `Again`, and map it.
//!
//! `frame_alloc` (and `map`, when a page table for the mapping needs a
//! frame) answers `Again` while the kernel takes frames back from another
//! environment on this one's behalf: the caller should give the CPU away
//! and retry. These helpers do that a bounded number of times
//! ([`AGAIN_RETRIES`] yields by default, or as a caller-supplied `wait`
//! decides) and then give up with the `Again` they last got.

use crate::syscall::{self, Error, FrameKey, Rights};

/// How many times the default wait yields before giving up on `Again`.
pub const AGAIN_RETRIES: u64 = 100_000;

/// Which step of [`alloc_map`] failed, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocMapError {
    /// `frame_alloc` refused (`Again`: still, when the wait gave up).
    Alloc(Error),
    /// `map` refused; the frame was freed again.
    Map(Error),
}

impl AllocMapError {
    /// The kernel's error, whichever step it came from.
    pub fn error(self) -> Error {
        match self {
            AllocMapError::Alloc(error) | AllocMapError::Map(error) => error,
        }
    }

    /// The error's short name ([`Error::name`]).
    pub fn name(self) -> &'static str {
        self.error().name()
    }
}

impl From<AllocMapError> for Error {
    fn from(error: AllocMapError) -> Error {
        error.error()
    }
}

/// The default wait: yield, at most [`AGAIN_RETRIES`] times in all; then
/// `false` (give up).
pub fn yield_wait() -> impl FnMut() -> bool {
    let mut waited = 0u64;
    move || {
        if waited >= AGAIN_RETRIES {
            return false;
        }
        waited += 1;
        syscall::yield_now();
        true
    }
}

/// Allocate any frame with `rights`, yielding and retrying on `Again`
/// (at most [`AGAIN_RETRIES`] times). Returns (physical address, key).
pub fn alloc_frame(rights: Rights) -> Result<(u64, FrameKey), Error> {
    alloc_frame_waiting(rights, yield_wait())
}

/// [`alloc_frame`] with the caller's wait: on `Again` call `wait`, and
/// retry if it returns `true` (it may yield, spin, count, check a clock).
pub fn alloc_frame_waiting(rights: Rights, mut wait: impl FnMut() -> bool) -> Result<(u64, FrameKey), Error> {
    loop {
        match syscall::frame_alloc(0, rights) {
            Err(Error::Again) if wait() => {}
            result => return result,
        }
    }
}

/// Allocate a frame with `rights` and map it at `va` with `flags`
/// (`map_flags`), yielding and retrying on `Again` from either call (at
/// most [`AGAIN_RETRIES`] times in all). Returns (physical address, key).
/// If `map` fails the frame is freed again.
pub fn alloc_map(va: u64, rights: Rights, flags: u64) -> Result<(u64, FrameKey), AllocMapError> {
    alloc_map_waiting(va, rights, flags, yield_wait())
}

/// [`alloc_map`] with the caller's wait (see [`alloc_frame_waiting`]),
/// shared by both calls.
pub fn alloc_map_waiting(
    va: u64,
    rights: Rights,
    flags: u64,
    mut wait: impl FnMut() -> bool,
) -> Result<(u64, FrameKey), AllocMapError> {
    let (pa, key) = alloc_frame_waiting(rights, &mut wait).map_err(AllocMapError::Alloc)?;
    loop {
        match syscall::map(va, key, flags) {
            Ok(()) => return Ok((pa, key)),
            Err(Error::Again) if wait() => {}
            Err(error) => {
                let _ = syscall::frame_free(key);
                return Err(AllocMapError::Map(error));
            }
        }
    }
}
