//! `memhog [PAGES] [FRAMES]`: the pager under load. It works on a region
//! of PAGES virtual pages (96 by default) at `REGION_VA` in its own address
//! space while holding at most FRAMES frames for it (24 by default), so it
//! touches more memory than it has frames and pages by its own policy, at
//! user level: a small demand pager inside the program. Page faults are
//! ulib's (its handler owns them), so the paging is explicit: before
//! touching page `p` the workload calls [`Pager::ensure`], which looks the
//! page up in a software TLB (page → frame slot); a miss evicts a victim
//! chosen by the Clock algorithm over referenced bits kept in the pager's
//! own table, copies the victim's 4 KiB to a backing store on the heap,
//! unmaps it and frees its frame, then allocates a frame, maps it writable
//! at the page (recorded in the process's pmap, so ulib's handler maps it
//! again if the kernel's caches drop it) and copies the page back if it
//! had been paged out. The workload writes a per-page, per-word pattern,
//! then in later passes (sequential, reverse, shuffled) verifies every
//! word and writes the next pass's pattern, and finally verifies once
//! more. It prints `memhog: PAGES pages over FRAMES frames: N page-ins, M
//! page-outs, contents intact` and exits 0, or `memhog: CORRUPT at page P`
//! and exits 1 (1 too when frames or memory run out; 2 on a bad usage).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use ulib::layout::PAGE;
use ulib::pmap::{self, Entry, Kind};
use ulib::process;
use ulib::runtime::syscall::{self, map_flags, FrameKey};
use ulib::Errno;

ulib::program_main!(main);

/// Where the region starts (in the dynamic window, away from ulib's).
const REGION_VA: u64 = 0x0000_3000_0000_0000;
const WORDS: usize = PAGE as usize / 8;
const MAX_PAGES: usize = 1024;
/// Frames beyond the region and its backing store the run may need (the
/// pager's tables, the pmap growing).
const SLACK_FRAMES: u64 = 16;

/// One frame the pager holds: which page it backs now.
#[derive(Clone, Copy)]
struct Slot {
    page: usize,
    key: FrameKey,
    referenced: bool,
}

struct Pager {
    pages: usize,
    frames: usize,
    /// The resident frames (at most `frames`), the Clock's circle.
    slots: Vec<Slot>,
    /// The software TLB: page → its slot, if resident.
    resident: Vec<Option<usize>>,
    /// Paged-out contents of the pages not resident (None: never written
    /// out, so all zeroes or never touched).
    backing: Vec<Option<Vec<u8>>>,
    hand: usize,
    page_ins: u64,
    page_outs: u64,
}

fn va_of(page: usize) -> u64 {
    REGION_VA + page as u64 * PAGE
}

impl Pager {
    fn new(pages: usize, frames: usize) -> Result<Pager, Errno> {
        let mut pager = Pager {
            pages,
            frames,
            slots: Vec::new(),
            resident: Vec::new(),
            backing: Vec::new(),
            hand: 0,
            page_ins: 0,
            page_outs: 0,
        };
        pager.slots.try_reserve_exact(frames).map_err(|_| Errno::ENOMEM)?;
        pager.resident.try_reserve_exact(pages).map_err(|_| Errno::ENOMEM)?;
        pager.backing.try_reserve_exact(pages).map_err(|_| Errno::ENOMEM)?;
        pager.resident.resize(pages, None);
        pager.backing.resize_with(pages, || None);
        Ok(pager)
    }

    /// Make page `page` resident (and note it referenced).
    fn ensure(&mut self, page: usize) -> Result<(), Errno> {
        if let Some(slot) = self.resident[page] {
            self.slots[slot].referenced = true;
            return Ok(());
        }
        let slot = if self.slots.len() < self.frames {
            None
        } else {
            let victim = self.choose_victim();
            self.page_out(victim)?;
            Some(victim)
        };
        self.page_in(page, slot)
    }

    /// The Clock: sweep the hand past referenced slots (clearing their
    /// bits) to the first one not referenced since the last sweep.
    fn choose_victim(&mut self) -> usize {
        loop {
            let at = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            if self.slots[at].referenced {
                self.slots[at].referenced = false;
            } else {
                return at;
            }
        }
    }

    /// Write slot `slot`'s page to the backing store and let its frame go.
    fn page_out(&mut self, slot: usize) -> Result<(), Errno> {
        let Slot { page, key, .. } = self.slots[slot];
        let mut store = match self.backing[page].take() {
            Some(store) => store,
            None => {
                let mut store = Vec::new();
                store.try_reserve_exact(PAGE as usize).map_err(|_| Errno::ENOMEM)?;
                store.resize(PAGE as usize, 0);
                store
            }
        };
        // SAFETY: the page is resident: mapped readable at its address, a
        // page of this process's own that nothing else refers to (and ulib's
        // handler maps it again from the pmap should the kernel drop it).
        let contents = unsafe { core::slice::from_raw_parts(va_of(page) as *const u8, PAGE as usize) };
        store.copy_from_slice(contents);
        self.backing[page] = Some(store);
        process::pmap().remove(va_of(page));
        let _ = syscall::unmap(va_of(page));
        let _ = syscall::frame_free(key);
        self.resident[page] = None;
        self.page_outs += 1;
        Ok(())
    }

    /// Give page `page` a frame (in slot `slot`, or a new slot), mapped
    /// writable, with its contents back if it had been paged out.
    fn page_in(&mut self, page: usize, slot: Option<usize>) -> Result<(), Errno> {
        let va = va_of(page);
        let key = process::alloc_frame().map_err(Errno::from)?;
        if let Err(error) = syscall::map(va, key, map_flags::WRITE | map_flags::REPLACE) {
            let _ = syscall::frame_free(key);
            return Err(error.into());
        }
        if let Err(error) = process::pmap_insert(Entry::new(va, key, Kind::NoFork, pmap::WRITABLE)) {
            let _ = syscall::unmap(va);
            let _ = syscall::frame_free(key);
            return Err(error);
        }
        if let Some(store) = self.backing[page].take() {
            // SAFETY: the page was just mapped writable at `va` with a frame
            // of this process's own, and is recorded in the pmap.
            let contents = unsafe { core::slice::from_raw_parts_mut(va as *mut u8, PAGE as usize) };
            contents.copy_from_slice(&store);
            self.page_ins += 1;
        }
        let entry = Slot { page, key, referenced: true };
        let at = match slot {
            Some(at) => {
                self.slots[at] = entry;
                at
            }
            None => {
                self.slots.push(entry);
                self.slots.len() - 1
            }
        };
        self.resident[page] = Some(at);
        Ok(())
    }

    /// The page's words, resident (call `ensure` first).
    fn words(&mut self, page: usize) -> &mut [u64] {
        debug_assert!(self.resident[page].is_some());
        // SAFETY: `ensure` made the page resident: mapped writable at its
        // address, page-aligned, this process's alone; the borrow of the
        // pager keeps it from being evicted while the slice lives.
        unsafe { core::slice::from_raw_parts_mut(va_of(page) as *mut u64, WORDS) }
    }

    /// Let every frame go (the region is unmapped).
    fn release(&mut self) {
        for slot in core::mem::take(&mut self.slots) {
            let va = va_of(slot.page);
            process::pmap().remove(va);
            let _ = syscall::unmap(va);
            let _ = syscall::frame_free(slot.key);
        }
        for page in 0..self.pages {
            self.resident[page] = None;
            self.backing[page] = None;
        }
    }
}

fn pattern(page: usize, word: usize, pass: u64) -> u64 {
    ((page as u64) << 40 | (word as u64) << 8 | pass) ^ pass.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// A shuffled order of the pages (xorshift, Fisher-Yates).
fn shuffled(pages: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..pages).collect();
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    for i in (1..pages).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        order.swap(i, (state % (i as u64 + 1)) as usize);
    }
    order
}

/// Why the workload stopped.
enum Failure {
    Corrupt(usize),
    Pager(Errno),
}

fn workload(pager: &mut Pager) -> Result<(), Failure> {
    let pages = pager.pages;
    let orders: [Vec<usize>; 4] =
        [(0..pages).collect(), (0..pages).rev().collect(), shuffled(pages), (0..pages).collect()];
    let last = orders.len() as u64;
    for (pass, order) in (0u64..).zip(orders.iter()) {
        for &page in order {
            pager.ensure(page).map_err(Failure::Pager)?;
            let words = pager.words(page);
            for (i, word) in words.iter_mut().enumerate() {
                if pass > 0 && *word != pattern(page, i, pass - 1) {
                    return Err(Failure::Corrupt(page));
                }
                if pass + 1 < last {
                    *word = pattern(page, i, pass);
                }
            }
        }
    }
    Ok(())
}

fn number(text: Option<&&str>, default: usize) -> Option<usize> {
    match text {
        None => Some(default),
        Some(text) => text.parse().ok(),
    }
}

fn main(args: &[&str]) -> i32 {
    let (Some(pages), Some(frames)) = (number(args.get(1), 96), number(args.get(2), 24)) else {
        ulib::errln!("usage: memhog [PAGES] [FRAMES]");
        return 2;
    };
    if args.len() > 3 || !(1..=MAX_PAGES).contains(&pages) || frames == 0 {
        ulib::errln!("usage: memhog [PAGES] [FRAMES] (1 <= PAGES <= {}, FRAMES >= 1)", MAX_PAGES);
        return 2;
    }
    let frames = frames.min(pages);
    // The resident frames and a backing page for each page not resident
    // (a page paged in gives its backing page back to the heap).
    let need = pages as u64 + SLACK_FRAMES;
    if let Ok(info) = syscall::env_info() {
        let spare = info.quota_frames.saturating_sub(info.frames_charged);
        if spare < need {
            ulib::errln!(
                "memhog: {} pages over {} frames need {} frames, {} spare: {}",
                pages,
                frames,
                need,
                spare,
                Errno::ENOMEM
            );
            return 1;
        }
    }
    let mut pager = match Pager::new(pages, frames) {
        Ok(pager) => pager,
        Err(error) => {
            ulib::errln!("memhog: {}", error);
            return 1;
        }
    };
    let result = workload(&mut pager);
    pager.release();
    match result {
        Ok(()) => {
            ulib::outln!(
                "memhog: {} pages over {} frames: {} page-ins, {} page-outs, contents intact",
                pages,
                frames,
                pager.page_ins,
                pager.page_outs
            );
            0
        }
        Err(Failure::Corrupt(page)) => {
            ulib::outln!("memhog: CORRUPT at page {}", page);
            1
        }
        Err(Failure::Pager(error)) => {
            ulib::errln!("memhog: paging failed: {}", error);
            1
        }
    }
}
