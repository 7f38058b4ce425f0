//! The transmit page.

use super::{net_tx, MAX_FRAME};
use crate::frames::{self, AllocMapError};
use crate::syscall::{self, map_flags, rights, Error, FrameKey};
use crate::PAGE_SIZE;

/// Extra attempts [`TxPage`] makes at a transmission the kernel answered
/// `Again` (the NIC had no room), yielding before each.
pub const TX_AGAIN_RETRIES: usize = 3;

/// A frame this libOS owns, mapped writable at a page of the dynamic
/// window, that packets are built in and sent from with `net_tx`. The
/// kernel copies a packet out before `net_tx` returns, so one page at
/// offset 0 serves every transmission.
///
/// ```ignore
/// // SAFETY: nothing else in this libOS uses the page at TX_VA.
/// let mut tx = unsafe { TxPage::new(TX_VA, 0) }?;
/// tx.send(&frame)?;
/// ```
pub struct TxPage {
    va: u64,
    pa: u64,
    key: FrameKey,
    sent: u64,
    errors: u64,
}

impl TxPage {
    /// Allocate a frame (with the read right `net_tx` needs and the write
    /// right to build in it), waiting out `Again` as
    /// [`frames::alloc_map`] does, and map it writable at `va` with `flags`
    /// added (say [`map_flags::GUARANTEED`]). The frame is never unmapped
    /// or freed.
    ///
    /// # Safety
    /// The page at `va` (in the dynamic window) becomes this transmit
    /// page's for the rest of the environment's life: the caller must not
    /// unmap or remap it, nor read or write it other than through this
    /// value, since [`TxPage::buffer`] hands out references to it.
    pub unsafe fn new(va: u64, flags: u64) -> Result<TxPage, AllocMapError> {
        let (pa, key) = frames::alloc_map(va, rights::READ | rights::WRITE, flags | map_flags::WRITE)?;
        Ok(TxPage { va, pa, key, sent: 0, errors: 0 })
    }

    /// Where the page is mapped.
    pub fn va(&self) -> u64 {
        self.va
    }

    /// The frame's physical address.
    pub fn frame_pa(&self) -> u64 {
        self.pa
    }

    /// The frame's key (read and write rights).
    pub fn key(&self) -> FrameKey {
        self.key
    }

    /// Frames the kernel accepted.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Transmissions refused (by the kernel, or too long to try).
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// The whole page, to build a frame in at offset 0.
    pub fn buffer(&mut self) -> &mut [u8] {
        // SAFETY: `new` mapped the page at `va` writable to our frame, and
        // its caller dedicated the page to this value; `&mut self` makes
        // this the only reference to it.
        unsafe { core::slice::from_raw_parts_mut(self.va as *mut u8, PAGE_SIZE as usize) }
    }

    /// Send the first `len` bytes of the page. A `len` beyond
    /// [`MAX_FRAME`] is refused here (`BadLength`) without a call; `Again`
    /// is retried [`TX_AGAIN_RETRIES`] times, yielding before each.
    pub fn transmit(&mut self, len: usize) -> Result<u64, Error> {
        let result = if len as u64 > MAX_FRAME {
            Err(Error::BadLength)
        } else {
            let mut result = net_tx(self.key, 0, len as u64);
            for _ in 0..TX_AGAIN_RETRIES {
                if result != Err(Error::Again) {
                    break;
                }
                syscall::yield_now();
                result = net_tx(self.key, 0, len as u64);
            }
            result
        };
        match result {
            Ok(_) => self.sent += 1,
            Err(_) => self.errors += 1,
        }
        result
    }

    /// Copy `frame` into the page and send it.
    pub fn send(&mut self, frame: &[u8]) -> Result<u64, Error> {
        if frame.len() as u64 <= MAX_FRAME {
            self.buffer()[..frame.len()].copy_from_slice(frame);
        }
        self.transmit(frame.len())
    }

    /// Let `build` write a `len`-byte frame into the page (it gets at most
    /// the page), then send it: `build`'s result and the transmission's.
    pub fn send_with<R>(&mut self, len: usize, build: impl FnOnce(&mut [u8]) -> R) -> (R, Result<u64, Error>) {
        let room = len.min(PAGE_SIZE as usize);
        let built = build(&mut self.buffer()[..room]);
        (built, self.transmit(len))
    }
}

const _: () = assert!(PAGE_SIZE >= MAX_FRAME);
