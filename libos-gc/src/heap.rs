//! The generational heap: a bump-allocated nursery evacuated into an old
//! generation of size-class pages at minor collections, and mark-sweep of
//! both generations at major collections.
//!
//! Objects are words: a header (`1 | ptrs << 16 | data << 32`), then
//! `ptrs` pointer fields (an object's address, or 0), then `data` plain
//! words. A nursery object that has been evacuated has its header replaced
//! by its new address (8-aligned, so bit 0 tells the two apart).
//!
//! The heap owns a window of [`WINDOW_PAGES`] pages: the first
//! `nursery_max` pages are the nursery, the rest the old generation. Every
//! memory access, page mapping and dirty-bit query goes through
//! [`Memory`], so the same code runs on the libOS's keyed frames and, in
//! the host tests, on a plain array that plays the MMU.
//!
//! The write barrier is a type parameter ([`Barrier`]): [`DirtyBits`]
//! costs the mutator nothing, and a minor collection asks the MMU, in one
//! batched query over the old generation, which old pages were written;
//! [`Cards`] makes every pointer store mark a 512-byte card, and a minor
//! collection scans the marked cards.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

/// Bytes per page.
pub const PAGE_BYTES: u64 = 4096;
/// Words per page.
pub const PAGE_WORDS: usize = 512;
/// Pages in the heap's window (nursery and old generation together).
pub const WINDOW_PAGES: usize = 1024;
/// log2 of the card size in bytes (512-byte cards).
pub const CARD_SHIFT: u32 = 9;
/// Cards covering the window.
pub const CARDS: usize = (WINDOW_PAGES * PAGE_BYTES as usize) >> CARD_SHIFT;
/// Cards per page.
pub const CARDS_PER_PAGE: usize = (PAGE_BYTES >> CARD_SHIFT) as usize;
/// The largest object, in words (header included): one page.
pub const MAX_OBJECT_WORDS: usize = PAGE_WORDS;
/// Objects bigger than this (in words) are allocated straight into the old
/// generation (pretenured), so a nursery of one page still works.
pub const PRETENURE_WORDS: usize = 128;
/// The nursery never shrinks below this many pages.
pub const MIN_NURSERY_PAGES: usize = 1;
/// Old-generation cell sizes in words; a page holds `512 / size` cells.
pub const SIZE_CLASSES: [usize; 13] = [2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256, 512];
const CLASSES: usize = SIZE_CLASSES.len();
/// What the nursery is filled with after a collection when
/// [`Config::poison`] is on: bit 0 clear, so it is never a valid header.
pub const POISON: u64 = 0xbad0_bad0_bad0_bad0;

/// The memory a heap lives in, and the MMU's dirty bits.
pub trait Memory {
    /// Address of page 0 of the window.
    fn base(&self) -> u64;
    /// Read the word at `addr` (on a mapped page).
    fn load(&self, addr: u64) -> u64;
    /// Write the word at `addr` (on a mapped page). The hardware sets the
    /// page's dirty bit.
    fn store(&mut self, addr: u64, value: u64);
    /// Back window page `page` with a fresh zeroed frame; false if refused.
    fn map_page(&mut self, page: usize) -> bool;
    /// Give window page `page`'s frame back.
    fn unmap_page(&mut self, page: usize);
    /// Read and clear the dirty bits of the `pages` window pages from
    /// `first` at once: bit `i % 64` of `out[i / 64]` is set if page
    /// `first + i` was written since its bit was last cleared. `out` holds
    /// `pages.div_ceil(64)` words, all zero on entry. Must set the bit of
    /// every page it cannot tell about (an unmapped page's may be set too).
    fn take_dirty_range(&mut self, first: usize, pages: usize, out: &mut [u64]);
    /// A clock for pause lengths (the TSC; instructions under icount).
    fn clock(&self) -> u64;
}

/// How pointer stores into the old generation are remembered.
pub trait Barrier {
    /// Whether the mutator marks cards on pointer stores.
    const CARDS: bool;
    /// The manifest's name for it.
    const NAME: &'static str;
}

/// The MMU's dirty bits: no barrier instructions in the mutator.
pub struct DirtyBits;
impl Barrier for DirtyBits {
    const CARDS: bool = false;
    const NAME: &'static str = "dirty-bits";
}

/// Software card marking: each pointer store marks its 512-byte card.
pub struct Cards;
impl Barrier for Cards {
    const CARDS: bool = true;
    const NAME: &'static str = "cards";
}

/// The heap could not find room for an object, even after collecting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfMemory;

/// Sizes a heap starts with.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Pages the heap may map at most (nursery and old generation).
    pub budget_pages: usize,
    /// Nursery pages (also the nursery's share of the window).
    pub nursery_pages: usize,
    /// Fill the nursery with [`POISON`] after each minor collection, so a
    /// dangling nursery pointer is caught by [`Heap::is_object`].
    pub poison: bool,
}

/// What the collector did, for the report.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub minors: u64,
    pub majors: u64,
    /// Each minor collection's length, in clock ticks.
    pub minor_pauses: Vec<u64>,
    /// Each major collection's length, in clock ticks.
    pub major_pauses: Vec<u64>,
    /// Objects copied from the nursery into the old generation.
    pub promoted: u64,
    /// Old pages whose dirty bits were asked for (the old generation's
    /// span at each minor collection).
    pub pages_queried: u64,
    /// Dirty-bit queries made (each a batched `map_query_range`: one to
    /// find the written pages, one to clear what the collector wrote).
    pub dirty_queries: u64,
    /// Old pages scanned for nursery pointers because their dirty bit was
    /// set, or (cards) pages that had at least one marked card.
    pub pages_scanned: u64,
    /// Marked cards scanned.
    pub cards_scanned: u64,
    /// Bytes of old generation scanned for nursery pointers.
    pub bytes_scanned: u64,
    /// Ticks minor collections spent finding the remembered set (querying
    /// dirty bits or reading cards), scanning it, and clearing the dirty
    /// bits the collector itself set, including the evacuations the scans
    /// made directly.
    pub remembered_set_ticks: u64,
    /// Objects found live by the last major collection.
    pub last_major_live: u64,
    /// Pages mapped past the budget because a promotion needed them.
    pub pages_over_budget: u64,
}

impl Stats {
    /// Total ticks spent collecting.
    pub fn collection_ticks(&self) -> u64 {
        self.minor_pauses.iter().chain(&self.major_pauses).sum()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PageState {
    Unmapped,
    /// Mapped, holding no object.
    Free,
    /// Mapped, cells of one size class.
    InUse,
}

/// The collector's record of one old-generation page (kept off the page,
/// so a major collection's marks and sweep never write the heap).
#[derive(Clone, Copy)]
struct OldPage {
    state: PageState,
    class: u8,
    /// Cells holding an object.
    alloc: [u64; 4],
    /// Cells marked by the current major collection.
    mark: [u64; 4],
}

impl OldPage {
    const UNMAPPED: OldPage = OldPage { state: PageState::Unmapped, class: 0, alloc: [0; 4], mark: [0; 4] };
}

fn bit(bits: &[u64; 4], i: usize) -> bool {
    bits[i / 64] >> (i % 64) & 1 != 0
}

fn set_bit(bits: &mut [u64; 4], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

/// The header of an object with `ptrs` pointer fields and `data` words.
pub fn header(ptrs: usize, data: usize) -> u64 {
    1 | (ptrs as u64) << 16 | (data as u64) << 32
}

fn header_ptrs(header: u64) -> usize {
    (header >> 16 & 0xffff) as usize
}

fn header_words(header: u64) -> usize {
    1 + header_ptrs(header) + (header >> 32 & 0xffff) as usize
}

fn class_of(words: usize) -> usize {
    SIZE_CLASSES.iter().position(|&size| size >= words).expect("object fits a page")
}

fn cells_of(class: usize) -> usize {
    PAGE_WORDS / SIZE_CLASSES[class]
}

/// A generational heap over `M`, remembering old-to-young pointers by `B`.
pub struct Heap<M: Memory, B: Barrier> {
    mem: M,
    base: u64,
    /// Window pages set aside for the nursery (its largest size).
    nursery_max: usize,
    /// Nursery pages mapped now.
    nursery_pages: usize,
    bump: u64,
    limit: u64,
    budget_pages: usize,
    mapped: usize,
    /// Indexed by window page minus `nursery_max`.
    old: Vec<OldPage>,
    /// One past the highest old page ever mapped.
    old_high: usize,
    current: [Option<usize>; CLASSES],
    partial: [Vec<usize>; CLASSES],
    free_pages: Vec<usize>,
    cards: Box<[u8; CARDS]>,
    /// The mutator's roots: object addresses (or 0), updated when objects move.
    roots: Vec<u64>,
    worklist: Vec<u64>,
    /// The answer of a dirty-bit query: one bit per old page.
    dirty_bitmap: Vec<u64>,
    nursery_marks: Vec<u64>,
    poison: bool,
    pub stats: Stats,
    _barrier: core::marker::PhantomData<B>,
}

impl<M: Memory, B: Barrier> Heap<M, B> {
    /// A heap in `mem`; maps the nursery. Fails if the nursery cannot be mapped.
    pub fn new(mut mem: M, config: Config) -> Result<Self, OutOfMemory> {
        let nursery_max = config.nursery_pages.clamp(MIN_NURSERY_PAGES, WINDOW_PAGES / 2);
        let budget_pages = config.budget_pages.clamp(nursery_max + 1, WINDOW_PAGES);
        for page in 0..nursery_max {
            if !mem.map_page(page) {
                for mapped in 0..page {
                    mem.unmap_page(mapped);
                }
                return Err(OutOfMemory);
            }
        }
        let base = mem.base();
        Ok(Heap {
            mem,
            base,
            nursery_max,
            nursery_pages: nursery_max,
            bump: base,
            limit: base + nursery_max as u64 * PAGE_BYTES,
            budget_pages,
            mapped: nursery_max,
            old: vec![OldPage::UNMAPPED; WINDOW_PAGES - nursery_max],
            old_high: 0,
            current: [None; CLASSES],
            partial: Default::default(),
            free_pages: Vec::new(),
            cards: Box::new([0; CARDS]),
            roots: Vec::new(),
            worklist: Vec::new(),
            dirty_bitmap: vec![0; WINDOW_PAGES.div_ceil(64)],
            nursery_marks: vec![0; nursery_max * PAGE_WORDS / 64],
            poison: config.poison,
            stats: Stats::default(),
            _barrier: core::marker::PhantomData,
        })
    }

    /// The memory underneath (for its own counters).
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// Pages mapped now (nursery and old generation).
    pub fn mapped_pages(&self) -> usize {
        self.mapped
    }

    /// Nursery pages mapped now.
    pub fn nursery_pages(&self) -> usize {
        self.nursery_pages
    }

    /// Old-generation pages holding objects.
    pub fn old_pages_in_use(&self) -> usize {
        self.old.iter().filter(|p| p.state == PageState::InUse).count()
    }

    /// Pages the heap may map.
    pub fn budget_pages(&self) -> usize {
        self.budget_pages
    }

    /// Change the budget (never below what the nursery needs plus a page).
    pub fn set_budget_pages(&mut self, pages: usize) {
        self.budget_pages = pages.clamp(self.nursery_pages + 1, WINDOW_PAGES);
    }

    // ----- the mutator's interface -----

    /// Allocate an object with `ptrs` null pointer fields and `data` zero
    /// words, collecting first if the nursery is full.
    #[inline]
    pub fn alloc(&mut self, ptrs: usize, data: usize) -> Result<u64, OutOfMemory> {
        let words = 1 + ptrs + data;
        if words > PRETENURE_WORDS {
            return self.alloc_old_direct(ptrs, data);
        }
        let bytes = words as u64 * 8;
        if self.limit - self.bump < bytes {
            self.collect();
        }
        let obj = self.bump;
        self.bump += bytes;
        self.mem.store(obj, header(ptrs, data));
        for i in 1..words as u64 {
            self.mem.store(obj + i * 8, 0);
        }
        Ok(obj)
    }

    /// Pointer field `i` of `obj`.
    #[inline]
    pub fn field(&self, obj: u64, i: usize) -> u64 {
        self.mem.load(obj + 8 + 8 * i as u64)
    }

    /// Store `value` (an object or 0) into pointer field `i` of `obj`:
    /// the only place the barrier acts.
    #[inline]
    pub fn set_field(&mut self, obj: u64, i: usize, value: u64) {
        let addr = obj + 8 + 8 * i as u64;
        self.mem.store(addr, value);
        if B::CARDS {
            self.cards[(addr.wrapping_sub(self.base) >> CARD_SHIFT) as usize & (CARDS - 1)] = 1;
        }
    }

    /// Data word `i` of `obj` (which has `ptrs` pointer fields).
    #[inline]
    pub fn data(&self, obj: u64, ptrs: usize, i: usize) -> u64 {
        self.mem.load(obj + 8 * (1 + ptrs + i) as u64)
    }

    /// Set data word `i` of `obj` (which has `ptrs` pointer fields).
    #[inline]
    pub fn set_data(&mut self, obj: u64, ptrs: usize, i: usize, value: u64) {
        self.mem.store(obj + 8 * (1 + ptrs + i) as u64, value);
    }

    /// The header of `obj`.
    pub fn header(&self, obj: u64) -> u64 {
        self.mem.load(obj)
    }

    /// Push a root; returns its index.
    #[inline]
    pub fn push_root(&mut self, obj: u64) -> usize {
        self.roots.push(obj);
        self.roots.len() - 1
    }

    /// Root `i` (as the last collection left it).
    #[inline]
    pub fn root(&self, i: usize) -> u64 {
        self.roots[i]
    }

    /// Set root `i`.
    #[inline]
    pub fn set_root(&mut self, i: usize, obj: u64) {
        self.roots[i] = obj;
    }

    /// Drop roots down to `len`.
    #[inline]
    pub fn truncate_roots(&mut self, len: usize) {
        self.roots.truncate(len);
    }

    /// Number of roots.
    pub fn roots_len(&self) -> usize {
        self.roots.len()
    }

    /// Whether `obj` is in the nursery.
    #[inline]
    pub fn in_nursery(&self, obj: u64) -> bool {
        obj.wrapping_sub(self.base) < self.nursery_max as u64 * PAGE_BYTES
    }

    /// Whether `obj` is an object the heap holds: in the used part of the
    /// nursery with a header, or on a cell the old generation has allocated.
    pub fn is_object(&self, obj: u64) -> bool {
        if !obj.is_multiple_of(8) {
            return false;
        }
        if self.in_nursery(obj) {
            return obj >= self.base && obj < self.bump && self.mem.load(obj) & 1 == 1;
        }
        let Some(offset) = obj.checked_sub(self.base) else { return false };
        let page = (offset / PAGE_BYTES) as usize;
        let Some(record) = self.old.get(page.wrapping_sub(self.nursery_max)) else { return false };
        if record.state != PageState::InUse {
            return false;
        }
        let cell_bytes = SIZE_CLASSES[record.class as usize] as u64 * 8;
        let in_page = offset % PAGE_BYTES;
        let cell = (in_page / cell_bytes) as usize;
        in_page.is_multiple_of(cell_bytes) && cell < cells_of(record.class as usize) && bit(&record.alloc, cell)
    }

    /// Map `pages` pages up front (as free old-generation pages), within
    /// the budget; returns how many are mapped in all.
    pub fn reserve(&mut self, pages: usize) -> usize {
        while self.mapped < pages.min(self.budget_pages) {
            match self.map_old_page(false) {
                Some(page) => {
                    self.old[page].state = PageState::Free;
                    self.free_pages.push(page);
                }
                None => break,
            }
        }
        self.mapped
    }

    // ----- collection -----

    /// The nursery is full: collect it, first collecting the old generation
    /// too if it may lack room for the nursery's survivors.
    pub fn collect(&mut self) {
        if !self.promotion_room() {
            self.major();
        }
        self.minor();
    }

    /// Whether the old generation has room, within the budget, for the
    /// nursery's objects should they all survive: as many free or mappable
    /// pages as the nursery has used, plus two for partly used cells. (A
    /// size class can waste up to half a cell, so promotion may still map
    /// pages past the budget; `Stats::pages_over_budget` counts them.)
    fn promotion_room(&self) -> bool {
        let used_pages = (self.bump - self.base).div_ceil(PAGE_BYTES) as usize;
        let room = self.budget_pages.saturating_sub(self.mapped) + self.free_pages.len();
        room >= used_pages + 2
    }

    /// A minor collection: evacuate every nursery object reachable from the
    /// roots or from an old object written since the last collection into
    /// the old generation, then empty the nursery.
    pub fn minor(&mut self) {
        let started = self.mem.clock();
        let promoted_before = self.stats.promoted;
        for i in 0..self.roots.len() {
            let obj = self.roots[i];
            self.roots[i] = self.evacuate(obj);
        }
        let scan_started = self.mem.clock();
        if B::CARDS {
            self.scan_cards();
        } else {
            self.scan_dirty_pages();
        }
        self.stats.remembered_set_ticks += self.mem.clock().wrapping_sub(scan_started);
        self.drain();
        let clear_started = self.mem.clock();
        // No old object points into the nursery now: what the collector
        // wrote to old pages (copies, and pointers updated to copies, so
        // only if it promoted something) needs no remembering. Only the
        // collector wrote old pages since the query that found the
        // remembered set, so one more query over the whole old generation
        // clears exactly its bits: cheaper than tracking which pages it
        // wrote (two updates per object copied).
        if !B::CARDS && self.stats.promoted != promoted_before {
            self.query_dirty(0, self.old_high);
        }
        self.stats.remembered_set_ticks += self.mem.clock().wrapping_sub(clear_started);
        if self.poison {
            let mut at = self.base;
            while at < self.bump {
                self.mem.store(at, POISON);
                at += 8;
            }
        }
        self.bump = self.base;
        self.stats.minors += 1;
        self.stats.minor_pauses.push(self.mem.clock().wrapping_sub(started));
    }

    /// Read and clear the dirty bits of old pages `low..high` (indices
    /// into `old`) in one query; the answer is in `dirty_bitmap`, bit
    /// `index - low` for page `index`.
    fn query_dirty(&mut self, low: usize, high: usize) {
        let words = (high - low).div_ceil(64);
        self.dirty_bitmap[..words].fill(0);
        self.mem.take_dirty_range(low + self.nursery_max, high - low, &mut self.dirty_bitmap[..words]);
        self.stats.dirty_queries += 1;
        self.stats.pages_queried += (high - low) as u64;
    }

    /// The remembered set under [`DirtyBits`]: every old page in use whose
    /// dirty bit is set, all found by one query over the old generation
    /// (which clears them).
    fn scan_dirty_pages(&mut self) {
        if self.old_high == 0 {
            return;
        }
        self.query_dirty(0, self.old_high);
        for word in 0..self.old_high.div_ceil(64) {
            let mut bits = self.dirty_bitmap[word];
            while bits != 0 {
                let index = word * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                // Free and unmapped pages hold no object (an unmapped
                // page's bit may be set: "unknown").
                if index >= self.old_high || self.old[index].state != PageState::InUse {
                    continue;
                }
                self.stats.pages_scanned += 1;
                self.stats.bytes_scanned += PAGE_BYTES;
                let cells = cells_of(self.old[index].class as usize);
                self.scan_cells(index, 0, cells);
            }
        }
    }

    /// The remembered set under [`Cards`]: every marked card of the old
    /// generation (cleared as it is scanned).
    fn scan_cards(&mut self) {
        let first = self.nursery_max * CARDS_PER_PAGE;
        let mut last_page = usize::MAX;
        for card in first..(self.nursery_max + self.old_high) * CARDS_PER_PAGE {
            if self.cards[card] == 0 {
                continue;
            }
            self.cards[card] = 0;
            let index = card / CARDS_PER_PAGE - self.nursery_max;
            if self.old[index].state != PageState::InUse {
                continue;
            }
            self.stats.cards_scanned += 1;
            self.stats.bytes_scanned += 1 << CARD_SHIFT;
            if index != last_page {
                self.stats.pages_scanned += 1;
                last_page = index;
            }
            let cell_bytes = SIZE_CLASSES[self.old[index].class as usize] * 8;
            let in_page = (card % CARDS_PER_PAGE) << CARD_SHIFT;
            let from = in_page / cell_bytes;
            let to = (in_page + (1 << CARD_SHIFT)).div_ceil(cell_bytes).min(cells_of(self.old[index].class as usize));
            self.scan_cells(index, from, to);
        }
    }

    /// Evacuate the nursery objects that allocated cells `from..to` of old
    /// page `index` point to.
    fn scan_cells(&mut self, index: usize, from: usize, to: usize) {
        let page_addr = self.base + (index + self.nursery_max) as u64 * PAGE_BYTES;
        let cell_bytes = SIZE_CLASSES[self.old[index].class as usize] as u64 * 8;
        // The cells allocated when the scan began: objects promoted into
        // this page meanwhile are on the worklist anyway.
        let alloc = self.old[index].alloc;
        for word in from / 64..to.div_ceil(64) {
            let mut bits = alloc[word];
            if word == from / 64 {
                bits &= u64::MAX << (from % 64);
            }
            if word == to / 64 {
                bits &= (1u64 << (to % 64)) - 1;
            }
            while bits != 0 {
                let cell = word * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                self.scan_object(page_addr + cell as u64 * cell_bytes);
            }
        }
    }

    /// Evacuate what `obj`'s pointer fields point to in the nursery, and
    /// point them at the copies.
    fn scan_object(&mut self, obj: u64) {
        let ptrs = header_ptrs(self.mem.load(obj));
        for i in 0..ptrs as u64 {
            let addr = obj + 8 + 8 * i;
            let target = self.mem.load(addr);
            if self.in_nursery(target) {
                let moved = self.evacuate(target);
                self.mem.store(addr, moved);
            }
        }
    }

    /// Scan every object evacuated so far.
    fn drain(&mut self) {
        while let Some(obj) = self.worklist.pop() {
            self.scan_object(obj);
        }
    }

    /// The old-generation copy of `obj` (made now if it has none); other
    /// pointers unchanged.
    fn evacuate(&mut self, obj: u64) -> u64 {
        if !self.in_nursery(obj) {
            return obj;
        }
        let head = self.mem.load(obj);
        if head & 1 == 0 {
            return head; // already moved: the header is the forwarding address
        }
        let words = header_words(head);
        let copy = self.alloc_cell(class_of(words), true).expect("gc: out of memory while promoting");
        for i in 0..words as u64 {
            let word = self.mem.load(obj + 8 * i);
            self.mem.store(copy + 8 * i, word);
        }
        self.mem.store(obj, copy);
        self.stats.promoted += 1;
        if header_ptrs(head) > 0 {
            self.worklist.push(copy);
        }
        copy
    }

    /// A major collection: mark everything reachable from the roots, in
    /// both generations, then sweep the old generation (free the cells
    /// nobody marked; pages left empty become free pages). Nursery objects
    /// stay where they are for the next minor collection; the remembered
    /// set (dirty bits, cards) is left as it is.
    pub fn major(&mut self) {
        let started = self.mem.clock();
        let used_words = ((self.bump - self.base) / 8) as usize;
        for word in &mut self.nursery_marks[..used_words.div_ceil(64)] {
            *word = 0;
        }
        let mut live = 0u64;
        for i in 0..self.roots.len() {
            let obj = self.roots[i];
            live += self.mark(obj) as u64;
        }
        while let Some(obj) = self.worklist.pop() {
            let ptrs = header_ptrs(self.mem.load(obj));
            for i in 0..ptrs {
                let target = self.field(obj, i);
                live += self.mark(target) as u64;
            }
        }
        self.sweep();
        self.stats.last_major_live = live;
        self.stats.majors += 1;
        self.stats.major_pauses.push(self.mem.clock().wrapping_sub(started));
    }

    /// Mark `obj` (if an unmarked object): true if newly marked.
    fn mark(&mut self, obj: u64) -> bool {
        if obj == 0 {
            return false;
        }
        let offset = obj - self.base;
        if self.in_nursery(obj) {
            let word = (offset / 8) as usize;
            if self.nursery_marks[word / 64] >> (word % 64) & 1 != 0 {
                return false;
            }
            self.nursery_marks[word / 64] |= 1 << (word % 64);
        } else {
            let index = (offset / PAGE_BYTES) as usize - self.nursery_max;
            let record = &mut self.old[index];
            let cell = ((offset % PAGE_BYTES) / (SIZE_CLASSES[record.class as usize] as u64 * 8)) as usize;
            if bit(&record.mark, cell) {
                return false;
            }
            set_bit(&mut record.mark, cell);
        }
        if header_ptrs(self.mem.load(obj)) > 0 {
            self.worklist.push(obj);
        }
        true
    }

    fn sweep(&mut self) {
        self.current = [None; CLASSES];
        for list in &mut self.partial {
            list.clear();
        }
        for index in 0..self.old_high {
            let record = &mut self.old[index];
            if record.state != PageState::InUse {
                continue;
            }
            for w in 0..4 {
                record.alloc[w] &= record.mark[w];
                record.mark[w] = 0;
            }
            let live: u32 = record.alloc.iter().map(|w| w.count_ones()).sum();
            if live == 0 {
                record.state = PageState::Free;
                self.free_pages.push(index);
            } else if (live as usize) < cells_of(record.class as usize) {
                self.partial[record.class as usize].push(index);
            }
        }
    }

    /// A free cell of `class` in the old generation; maps a page if none
    /// (past the budget only if `over_budget`).
    fn alloc_cell(&mut self, class: usize, over_budget: bool) -> Option<u64> {
        loop {
            if let Some(index) = self.current[class] {
                let record = &mut self.old[index];
                let cells = cells_of(class);
                let free = (0..4).find_map(|w| {
                    let ones = record.alloc[w].trailing_ones() as usize;
                    (ones < 64 && w * 64 + ones < cells).then_some(w * 64 + ones)
                });
                if let Some(cell) = free {
                    set_bit(&mut record.alloc, cell);
                    let page_addr = self.base + (index + self.nursery_max) as u64 * PAGE_BYTES;
                    return Some(page_addr + (cell * SIZE_CLASSES[class] * 8) as u64);
                }
                self.current[class] = None;
            }
            let index = match self.partial[class].pop() {
                Some(index) => index,
                None => {
                    let index = match self.free_pages.pop() {
                        Some(index) => index,
                        None => self.map_old_page(over_budget)?,
                    };
                    self.old[index] = OldPage { state: PageState::InUse, class: class as u8, ..OldPage::UNMAPPED };
                    index
                }
            };
            self.current[class] = Some(index);
        }
    }

    /// Map an unmapped old page; returns its index.
    fn map_old_page(&mut self, over_budget: bool) -> Option<usize> {
        if self.mapped >= self.budget_pages && !over_budget {
            return None;
        }
        let index = self.old.iter().position(|p| p.state == PageState::Unmapped)?;
        if !self.mem.map_page(index + self.nursery_max) {
            return None;
        }
        if self.mapped >= self.budget_pages {
            self.stats.pages_over_budget += 1;
        }
        self.mapped += 1;
        self.old_high = self.old_high.max(index + 1);
        self.old[index].state = PageState::Free;
        Some(index)
    }

    /// An object too big for the nursery, straight into the old generation.
    fn alloc_old_direct(&mut self, ptrs: usize, data: usize) -> Result<u64, OutOfMemory> {
        let words = 1 + ptrs + data;
        if words > MAX_OBJECT_WORDS {
            return Err(OutOfMemory);
        }
        let class = class_of(words);
        let obj = match self.alloc_cell(class, false) {
            Some(obj) => obj,
            None => {
                self.collect();
                self.major();
                self.alloc_cell(class, false).ok_or(OutOfMemory)?
            }
        };
        self.mem.store(obj, header(ptrs, data));
        for i in 1..words as u64 {
            self.mem.store(obj + 8 * i, 0);
        }
        Ok(obj)
    }

    // ----- giving memory back -----

    /// Collect everything, then unmap up to `pages` pages, taken from the
    /// empty old pages and the (now empty) nursery so that what is kept
    /// stays balanced: free old pages enough to promote a full nursery
    /// (nursery + 2) where the pages kept allow it, and the nursery as big
    /// as that leaves, never below [`MIN_NURSERY_PAGES`]. Returns (old
    /// pages, nursery pages) unmapped.
    pub fn give_back(&mut self, pages: usize) -> (usize, usize) {
        if !self.promotion_room() {
            self.major();
        }
        self.minor();
        self.major();
        let (nursery, free) = (self.nursery_pages, self.free_pages.len());
        let keep = nursery + free - pages.min(nursery + free - MIN_NURSERY_PAGES);
        let nursery_keep =
            (keep.saturating_sub(2) / 2).clamp(MIN_NURSERY_PAGES, nursery).max(keep.saturating_sub(free));
        let free_keep = keep - nursery_keep;
        let mut old = 0;
        while self.free_pages.len() > free_keep {
            let Some(index) = self.free_pages.pop() else { break };
            self.mem.unmap_page(index + self.nursery_max);
            self.old[index].state = PageState::Unmapped;
            self.mapped -= 1;
            old += 1;
        }
        let returned_nursery = self.nursery_pages - nursery_keep;
        while self.nursery_pages > nursery_keep {
            // The nursery is empty after the minor collection.
            self.nursery_pages -= 1;
            self.mem.unmap_page(self.nursery_pages);
            self.mapped -= 1;
        }
        self.limit = self.base + self.nursery_pages as u64 * PAGE_BYTES;
        (old, returned_nursery)
    }

    /// Unmap every page (the heap is dropped); returns how many.
    pub fn release_all(&mut self) -> usize {
        let mut released = 0;
        for page in 0..self.nursery_pages {
            self.mem.unmap_page(page);
            released += 1;
        }
        for index in 0..self.old.len() {
            if self.old[index].state != PageState::Unmapped {
                self.mem.unmap_page(index + self.nursery_max);
                self.old[index] = OldPage::UNMAPPED;
                released += 1;
            }
        }
        self.nursery_pages = 0;
        self.mapped = 0;
        self.bump = self.base;
        self.limit = self.base;
        self.roots.clear();
        self.free_pages.clear();
        self.current = [None; CLASSES];
        for list in &mut self.partial {
            list.clear();
        }
        released
    }
}
