//! A heap window in a plain array, playing the MMU for the host tests:
//! every store sets its page's dirty bit, as the hardware does, and
//! touching an unmapped page panics, as a page fault would end the libOS.

use crate::heap::{Memory, PAGE_WORDS, WINDOW_PAGES};
use alloc::vec;
use alloc::vec::Vec;

/// Where the simulated window starts (any page-aligned address).
pub const SIM_BASE: u64 = 0x2000_0000_0000;

pub struct SimMemory {
    words: Vec<u64>,
    mapped: Vec<bool>,
    dirty: Vec<bool>,
    /// Pages that may be mapped at once (the kernel's refusal beyond it).
    pub frame_limit: usize,
    /// Frames mapped now.
    pub frames: usize,
    /// `take_dirty_range` calls (one kernel entry each, as the libOS's
    /// `map_query_range`).
    pub queries: u64,
    /// Pages those calls covered.
    pub pages_queried: u64,
    /// When set, `take_dirty_range` lies: "clean" always (a broken
    /// barrier, to show the tests catch one).
    pub broken_dirty_bits: bool,
    clock: core::cell::Cell<u64>,
}

impl SimMemory {
    pub fn new(frame_limit: usize) -> Self {
        SimMemory {
            words: vec![0; WINDOW_PAGES * PAGE_WORDS],
            mapped: vec![false; WINDOW_PAGES],
            dirty: vec![false; WINDOW_PAGES],
            frame_limit,
            frames: 0,
            queries: 0,
            pages_queried: 0,
            broken_dirty_bits: false,
            clock: core::cell::Cell::new(0),
        }
    }

    fn index(&self, addr: u64) -> usize {
        let word = ((addr - SIM_BASE) / 8) as usize;
        assert!(self.mapped[word / PAGE_WORDS], "access to unmapped page at {addr:#x}");
        word
    }

    /// Whether window page `page`'s dirty bit is set now (not cleared).
    pub fn is_dirty(&self, page: usize) -> bool {
        self.dirty[page]
    }

    /// Whether window page `page` is mapped.
    pub fn is_mapped(&self, page: usize) -> bool {
        self.mapped[page]
    }
}

impl Memory for SimMemory {
    fn base(&self) -> u64 {
        SIM_BASE
    }

    fn load(&self, addr: u64) -> u64 {
        self.words[self.index(addr)]
    }

    fn store(&mut self, addr: u64, value: u64) {
        let word = self.index(addr);
        self.words[word] = value;
        self.dirty[word / PAGE_WORDS] = true;
    }

    fn map_page(&mut self, page: usize) -> bool {
        assert!(!self.mapped[page], "page {page} mapped twice");
        if self.frames >= self.frame_limit {
            return false;
        }
        self.frames += 1;
        self.mapped[page] = true;
        self.dirty[page] = false;
        // A fresh frame is zeroed; make stale data visible if it is not.
        for word in &mut self.words[page * PAGE_WORDS..(page + 1) * PAGE_WORDS] {
            *word = 0;
        }
        true
    }

    fn unmap_page(&mut self, page: usize) {
        assert!(self.mapped[page], "page {page} unmapped twice");
        self.mapped[page] = false;
        self.frames -= 1;
        for word in &mut self.words[page * PAGE_WORDS..(page + 1) * PAGE_WORDS] {
            *word = 0xdead_dead_dead_dead;
        }
    }

    fn take_dirty_range(&mut self, first: usize, pages: usize, out: &mut [u64]) {
        // As the kernel's map_query_range with CLEAR_DIRTY | UNKNOWN_SET:
        // at most 4096 pages, an unmapped page reports set.
        assert!((1..=4096).contains(&pages) && first + pages <= WINDOW_PAGES, "query {first}+{pages}");
        assert_eq!(out.len(), pages.div_ceil(64), "bitmap size");
        self.queries += 1;
        self.pages_queried += pages as u64;
        for i in 0..pages {
            let page = first + i;
            let dirty = !self.mapped[page] || core::mem::take(&mut self.dirty[page]);
            if dirty && !self.broken_dirty_bits {
                out[i / 64] |= 1 << (i % 64);
            }
        }
    }

    fn clock(&self) -> u64 {
        self.clock.set(self.clock.get() + 1);
        self.clock.get()
    }
}
