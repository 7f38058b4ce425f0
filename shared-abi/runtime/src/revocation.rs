//! Visible revocation from the libOS side: note the kernel's requests
//! where they arrive, answer them where it is safe, and learn which frames
//! the abort protocol took.
//!
//! A revocation upcall can interrupt any instruction, also code that holds
//! the locks the answer needs (a pager's region, a heap's tables). So the
//! handler only records the notice in a [`RevocationInbox`] (atomics, no
//! locks, no allocation), and the libOS's main code takes it at its next
//! safe point: it frees the frames asked for and calls `revoke_done`, well
//! before the request's deadline. After an abort, a
//! [`RepossessionReader`] names the frames the kernel took and the pages
//! they were mapped at.
//!
//! ```ignore
//! let inbox = revocation::listen()?;          // the runtime's handler, INBOX
//! // ... at a safe point:
//! let owed = inbox.take_requested();
//! if owed != 0 { /* free `owed` frames */ let _ = syscall::revoke_done(); }
//! ```

use crate::rt;
use crate::start::{Repossessed, RepossessionVector, REPOSSESSION_ADDR};
use crate::syscall::Error;
use crate::upcall::{UpcallFrame, UpcallKind, REVOKE_ABORTED, REVOKE_REQUEST};
use core::sync::atomic::{AtomicU64, Ordering};

/// One revocation upcall, as [`RevocationInbox::record`] read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Give back `frames` frames before TSC `deadline_tsc`.
    Request { frames: u64, deadline_tsc: u64 },
    /// The kernel took `frames` frames by force (the repossession vector
    /// says which); the open request is over.
    Aborted { frames: u64 },
}

/// The revocation notices an upcall handler recorded and the main code has
/// not yet taken. Only atomics: safe to record into from an upcall that
/// interrupted anything.
pub struct RevocationInbox {
    /// Frames asked back and not yet taken by the main code.
    requested: AtomicU64,
    /// TSC deadline of the latest request.
    deadline_tsc: AtomicU64,
    /// Frames taken by force and not yet taken note of by the main code.
    aborted: AtomicU64,
    /// Upcalls recorded, of each vector.
    requests: AtomicU64,
    aborts: AtomicU64,
}

impl RevocationInbox {
    /// An empty inbox (for a `static`).
    pub const fn new() -> Self {
        RevocationInbox {
            requested: AtomicU64::new(0),
            deadline_tsc: AtomicU64::new(0),
            aborted: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            aborts: AtomicU64::new(0),
        }
    }

    /// Record a revocation upcall's frame (call it from the handler). A
    /// request adds to the frames requested; an abort adds to the frames
    /// lost and ends the open request (the kernel no longer expects those
    /// frames), so it clears the frames requested. None (nothing recorded)
    /// for any other upcall.
    pub fn record(&self, frame: &UpcallFrame) -> Option<Notice> {
        if frame.kind != UpcallKind::Revocation as u64 {
            return None;
        }
        match frame.vector {
            REVOKE_REQUEST => {
                self.deadline_tsc.store(frame.error_code, Ordering::SeqCst);
                self.requested.fetch_add(frame.fault_addr, Ordering::SeqCst);
                self.requests.fetch_add(1, Ordering::SeqCst);
                Some(Notice::Request { frames: frame.fault_addr, deadline_tsc: frame.error_code })
            }
            REVOKE_ABORTED => {
                self.requested.store(0, Ordering::SeqCst);
                self.aborted.fetch_add(frame.fault_addr, Ordering::SeqCst);
                self.aborts.fetch_add(1, Ordering::SeqCst);
                Some(Notice::Aborted { frames: frame.fault_addr })
            }
            _ => None,
        }
    }

    /// Whether anything waits to be taken (a cheap check for a safe point).
    pub fn pending(&self) -> bool {
        self.requested.load(Ordering::Relaxed) != 0 || self.aborted.load(Ordering::Relaxed) != 0
    }

    /// Frames asked back and not yet taken, left in the inbox.
    pub fn requested(&self) -> u64 {
        self.requested.load(Ordering::SeqCst)
    }

    /// Take the frames asked back: the count, now the caller's to answer
    /// (free that many frames, then `revoke_done`).
    pub fn take_requested(&self) -> u64 {
        self.requested.swap(0, Ordering::SeqCst)
    }

    /// TSC deadline of the latest request (0 if none came).
    pub fn deadline_tsc(&self) -> u64 {
        self.deadline_tsc.load(Ordering::SeqCst)
    }

    /// Frames taken by force and not yet taken note of, left in the inbox.
    pub fn aborted(&self) -> u64 {
        self.aborted.load(Ordering::SeqCst)
    }

    /// Take note of the frames taken by force: their count (a
    /// [`RepossessionReader`] says which they were).
    pub fn take_aborted(&self) -> u64 {
        self.aborted.swap(0, Ordering::SeqCst)
    }

    /// Request upcalls recorded so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Abort upcalls recorded so far.
    pub fn aborts(&self) -> u64 {
        self.aborts.load(Ordering::SeqCst)
    }
}

impl Default for RevocationInbox {
    fn default() -> Self {
        Self::new()
    }
}

/// The inbox [`on_revocation`] records into.
pub static INBOX: RevocationInbox = RevocationInbox::new();

/// A revocation handler that only records the notice in [`INBOX`].
pub fn on_revocation(frame: &mut UpcallFrame) {
    INBOX.record(frame);
}

/// Install [`on_revocation`] as this environment's revocation handler
/// (through [`rt::set_handler`]) and return its inbox.
pub fn listen() -> Result<&'static RevocationInbox, Error> {
    rt::set_handler(UpcallKind::Revocation, on_revocation)?;
    Ok(&INBOX)
}

/// Reads the repossession vector (the read-only page at
/// [`REPOSSESSION_ADDR`] where the abort protocol records every frame it
/// takes), remembering how many entries were read.
#[derive(Clone, Copy, Debug, Default)]
pub struct RepossessionReader {
    seen: u64,
}

impl RepossessionReader {
    /// A reader that has seen nothing yet (every entry is new).
    pub const fn new() -> Self {
        RepossessionReader { seen: 0 }
    }

    /// Frames the kernel has ever taken from this environment (the
    /// vector's `count`).
    pub fn recorded() -> u64 {
        // SAFETY: the kernel maps the repossession page read-only in every
        // environment for its whole life; `count` is its first word,
        // aligned; the kernel writes it, so it is read volatile.
        unsafe { core::ptr::read_volatile(REPOSSESSION_ADDR as *const u64) }
    }

    /// Entries read so far (the vector's `count` when last asked).
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// The entries recorded since the last call, oldest first; the reader
    /// remembers them as seen. The vector keeps only the newest
    /// `REPOSSESSION_SLOTS`: older unseen ones are skipped (counted in
    /// [`NewEntries::skipped`]).
    pub fn new_entries(&mut self) -> NewEntries {
        let count = Self::recorded();
        let unread = RepossessionVector::unread(self.seen, count);
        let skipped = unread.start.saturating_sub(self.seen);
        self.seen = self.seen.max(count);
        NewEntries { next: unread.start, end: unread.end, skipped }
    }
}

/// Iterator over new repossession entries ([`RepossessionReader::new_entries`]).
pub struct NewEntries {
    next: u64,
    end: u64,
    skipped: u64,
}

impl NewEntries {
    /// Entries overwritten before they could be read.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

impl Iterator for NewEntries {
    type Item = Repossessed;

    fn next(&mut self) -> Option<Repossessed> {
        if self.next >= self.end {
            return None;
        }
        let at = RepossessionVector::slot(self.next);
        self.next += 1;
        let entry = (REPOSSESSION_ADDR as *const RepossessionVector).cast::<u8>().wrapping_add(
            core::mem::offset_of!(RepossessionVector, entries) + at * core::mem::size_of::<Repossessed>(),
        );
        // SAFETY: entry `at` (< REPOSSESSION_SLOTS) lies on the repossession
        // page, which the kernel keeps mapped read-only for the
        // environment's life; entries are aligned `u64` pairs; the kernel
        // writes them, so they are read volatile.
        Some(unsafe { core::ptr::read_volatile(entry.cast::<Repossessed>()) })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.end - self.next) as usize;
        (left, Some(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revocation(vector: u64, frames: u64, deadline: u64) -> UpcallFrame {
        UpcallFrame {
            kind: UpcallKind::Revocation as u64,
            vector,
            fault_addr: frames,
            error_code: deadline,
            ..UpcallFrame::default()
        }
    }

    #[test]
    fn requests_are_taken_once() {
        let inbox = RevocationInbox::new();
        assert!(!inbox.pending());
        let notice = inbox.record(&revocation(REVOKE_REQUEST, 8, 1234));
        assert_eq!(notice, Some(Notice::Request { frames: 8, deadline_tsc: 1234 }));
        assert!(inbox.pending());
        assert_eq!((inbox.requested(), inbox.deadline_tsc(), inbox.requests()), (8, 1234, 1));
        assert_eq!(inbox.take_requested(), 8);
        assert_eq!(inbox.take_requested(), 0);
        assert!(!inbox.pending());
    }

    #[test]
    fn an_abort_ends_the_open_request() {
        let inbox = RevocationInbox::new();
        inbox.record(&revocation(REVOKE_REQUEST, 5, 99));
        assert_eq!(inbox.record(&revocation(REVOKE_ABORTED, 5, 0)), Some(Notice::Aborted { frames: 5 }));
        assert_eq!(inbox.requested(), 0, "nothing is owed after the abort");
        assert_eq!((inbox.aborted(), inbox.aborts(), inbox.requests()), (5, 1, 1));
        assert!(inbox.pending());
        assert_eq!(inbox.take_aborted(), 5);
        assert!(!inbox.pending());
        // A later request is recorded afresh.
        inbox.record(&revocation(REVOKE_REQUEST, 2, 100));
        assert_eq!(inbox.take_requested(), 2);
    }

    #[test]
    fn other_upcalls_are_not_recorded() {
        let inbox = RevocationInbox::new();
        let mut frame = revocation(REVOKE_REQUEST, 3, 0);
        frame.kind = UpcallKind::Interrupt as u64;
        assert_eq!(inbox.record(&frame), None);
        assert_eq!(inbox.record(&revocation(7, 3, 0)), None);
        assert!(!inbox.pending());
        assert_eq!(inbox.requests() + inbox.aborts(), 0);
    }
}
