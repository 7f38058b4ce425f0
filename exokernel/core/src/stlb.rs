//! The per-environment software TLB (Aegis style): a cache of established mappings.
//!
//! When an environment takes a page fault on a page it mapped before (its
//! slot was evicted, or dropped at a context switch), the kernel looks the
//! page up here first and, on a hit, reinstalls the mapping without an
//! upcall. Entries are only ever inserted after the kernel checked the
//! environment's key for the frame, so a hit needs no second check; when a
//! frame is revoked, [`Stlb::remove_frame`] drops every entry naming it.
//!
//! The cache is a power-of-two array indexed by the low bits of the virtual
//! page number: a lookup is one shift, one mask and one compare.

use alloc::vec;
use alloc::vec::Vec;

/// log2 of the page size: a virtual page number is `va >> PAGE_SHIFT`.
pub const PAGE_SHIFT: u32 = 12;

/// The virtual page number of any address inside the page.
pub const fn page_number(va: u64) -> u64 {
    va >> PAGE_SHIFT
}

/// One cached mapping: a virtual page and the frame it maps, with the
/// access the environment's key allowed, and a handle `P` to the page-table
/// entry that maps it (the kernel's typed reference; `u64` in tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StlbEntry<P = u64> {
    /// Virtual page number (`va >> PAGE_SHIFT`), not an address.
    pub va_page: u64,
    /// Physical address of the frame (page aligned).
    pub frame_pa: u64,
    /// Whether the mapping may be installed writable.
    pub writable: bool,
    /// The page-table entry that maps the page (the default value if
    /// unknown), so a refill can write it without walking the tables.
    pub pte: P,
}

impl<P: Copy + Default> StlbEntry<P> {
    /// The entry mapping the page that contains `va` to `frame_pa`.
    pub fn new(va: u64, frame_pa: u64, writable: bool) -> Self {
        StlbEntry { va_page: page_number(va), frame_pa, writable, pte: P::default() }
    }

    /// The same entry, remembering where its page-table entry lives.
    pub fn with_pte(mut self, pte: P) -> Self {
        self.pte = pte;
        self
    }

    /// Virtual address of the first byte of the page.
    pub const fn page_va(&self) -> u64 {
        self.va_page << PAGE_SHIFT
    }
}

/// A direct-mapped software TLB of `capacity()` entries (a power of two).
pub struct Stlb<P = u64> {
    entries: Vec<Option<StlbEntry<P>>>,
    /// The virtual page number each entry holds (`NO_TAG` if empty), kept
    /// beside the entries as plain words so the kernel's page-fault entry
    /// stub can tell a miss without calling into Rust. Never reallocated.
    tags: Vec<u64>,
    index_mask: u64,
    len: usize,
}

/// The tag of an empty entry (no page number is this large).
pub const NO_TAG: u64 = u64::MAX;

impl<P: Copy + Default> Stlb<P> {
    /// An empty STLB of `entry_count` entries, rounded up to a power of two
    /// (at least one).
    pub fn new(entry_count: usize) -> Self {
        let capacity = entry_count.max(1).next_power_of_two();
        Stlb { entries: vec![None; capacity], tags: vec![NO_TAG; capacity], index_mask: capacity as u64 - 1, len: 0 }
    }

    fn index(&self, va_page: u64) -> usize {
        (va_page & self.index_mask) as usize
    }

    /// The cached mapping of the page containing `va`, if any.
    #[inline]
    pub fn lookup(&self, va: u64) -> Option<StlbEntry<P>> {
        let va_page = page_number(va);
        match self.entries[self.index(va_page)] {
            Some(entry) if entry.va_page == va_page => Some(entry),
            _ => None,
        }
    }

    /// Cache `entry`, replacing whatever shared its index (another page, or
    /// an older mapping of the same page). Returns the entry it replaced.
    pub fn insert(&mut self, entry: StlbEntry<P>) -> Option<StlbEntry<P>> {
        let index = self.index(entry.va_page);
        let replaced = self.entries[index].replace(entry);
        self.tags[index] = entry.va_page;
        if replaced.is_none() {
            self.len += 1;
        }
        replaced
    }

    /// Forget the mapping of the page containing `va`. Returns whether there
    /// was one.
    pub fn remove_va(&mut self, va: u64) -> bool {
        let va_page = page_number(va);
        let index = self.index(va_page);
        match self.entries[index] {
            Some(entry) if entry.va_page == va_page => {
                self.entries[index] = None;
                self.tags[index] = NO_TAG;
                self.len -= 1;
                true
            }
            _ => false,
        }
    }

    /// Forget every mapping of the frame containing `frame_pa` (revocation).
    /// Returns how many were dropped. O(capacity): revocation is rare.
    pub fn remove_frame(&mut self, frame_pa: u64) -> usize {
        let frame = page_number(frame_pa);
        let mut removed_count = 0;
        for (slot, tag) in self.entries.iter_mut().zip(self.tags.iter_mut()) {
            if slot.is_some_and(|entry| page_number(entry.frame_pa) == frame) {
                *slot = None;
                *tag = NO_TAG;
                removed_count += 1;
            }
        }
        self.len -= removed_count;
        removed_count
    }

    /// Forget every mapping.
    pub fn clear(&mut self) {
        self.entries.fill(None);
        self.tags.fill(NO_TAG);
        self.len = 0;
    }

    /// The tag array (one word per entry: its virtual page number, or
    /// `NO_TAG`) and the index mask: entry `page & mask` holds `page` iff
    /// its tag is `page`. The array never moves while the STLB lives.
    pub fn tags(&self) -> (*const u64, u64) {
        (self.tags.as_ptr(), self.index_mask)
    }

    /// Number of cached mappings.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no mapping is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of entries (a power of two).
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Every cached mapping, in index order.
    pub fn iter(&self) -> impl Iterator<Item = StlbEntry<P>> + '_ {
        self.entries.iter().flatten().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    type Stlb = super::Stlb<u64>;
    type StlbEntry = super::StlbEntry<u64>;

    /// The tag words say exactly which page each entry holds.
    fn tags_agree(stlb: &Stlb) -> bool {
        let (ptr, mask) = stlb.tags();
        assert_eq!(ptr, stlb.tags.as_ptr());
        (0..stlb.capacity()).all(|i| {
            let tag = stlb.tags[i];
            match stlb.entries[i] {
                Some(e) => tag == e.va_page && (e.va_page & mask) as usize == i,
                None => tag == NO_TAG,
            }
        })
    }

    #[test]
    fn tags_follow_every_change() {
        let mut stlb = Stlb::new(8);
        let (before, _) = stlb.tags();
        for n in 0..20u64 {
            stlb.insert(StlbEntry::new(n * 0x1000 * 3, 0x10_0000 + (n % 4) * 0x1000, n % 2 == 0));
            assert!(tags_agree(&stlb));
        }
        assert!(stlb.remove_va(19 * 0x1000 * 3));
        assert!(tags_agree(&stlb));
        stlb.remove_frame(0x10_1000);
        assert!(tags_agree(&stlb));
        stlb.clear();
        assert!(tags_agree(&stlb));
        assert_eq!(stlb.tags().0, before, "the tag array never moves");
    }

    const PAGE: u64 = 1 << PAGE_SHIFT;

    #[test]
    fn capacity_rounds_up_to_a_power_of_two() {
        assert_eq!(Stlb::new(0).capacity(), 1);
        assert_eq!(Stlb::new(1).capacity(), 1);
        assert_eq!(Stlb::new(3).capacity(), 4);
        assert_eq!(Stlb::new(64).capacity(), 64);
        assert_eq!(Stlb::new(65).capacity(), 128);
        assert!(Stlb::new(65).is_empty());
    }

    #[test]
    fn lookup_hits_anywhere_in_the_page() {
        let mut stlb = Stlb::new(16);
        let entry = StlbEntry::new(0x40_3123, 0x20_0000, true);
        assert_eq!(entry.va_page, 0x403);
        assert_eq!(entry.page_va(), 0x40_3000);
        assert_eq!(stlb.insert(entry), None);
        assert_eq!(stlb.lookup(0x40_3000), Some(entry));
        assert_eq!(stlb.lookup(0x40_3fff), Some(entry));
        assert_eq!(stlb.lookup(0x40_4000), None);
        assert_eq!(stlb.lookup(0x40_2fff), None);
        assert_eq!(stlb.len(), 1);
    }

    #[test]
    fn conflicting_pages_replace_each_other() {
        let mut stlb = Stlb::new(16);
        let first = StlbEntry::new(0x1000, 0xa000, false);
        let aliased = StlbEntry::new(0x1000 + 16 * PAGE, 0xb000, true);
        stlb.insert(first);
        assert_eq!(stlb.insert(aliased), Some(first), "same index, different page");
        assert_eq!(stlb.lookup(0x1000), None, "a conflict is a miss, never a wrong hit");
        assert_eq!(stlb.lookup(0x1000 + 16 * PAGE), Some(aliased));
        assert_eq!(stlb.len(), 1);
        let remapped = StlbEntry::new(0x1000 + 16 * PAGE, 0xc000, false);
        assert_eq!(stlb.insert(remapped), Some(aliased), "same page: the new mapping wins");
        assert_eq!(stlb.lookup(0x1000 + 16 * PAGE), Some(remapped));
        assert_eq!(stlb.len(), 1);
    }

    #[test]
    fn remove_va_only_removes_that_page() {
        let mut stlb = Stlb::new(16);
        stlb.insert(StlbEntry::new(0x1000, 0xa000, true));
        stlb.insert(StlbEntry::new(0x2000, 0xb000, true));
        assert!(!stlb.remove_va(0x1000 + 16 * PAGE), "an aliasing page is not removed");
        assert!(stlb.remove_va(0x1800));
        assert!(!stlb.remove_va(0x1000), "already gone");
        assert_eq!(stlb.lookup(0x1000), None);
        assert!(stlb.lookup(0x2000).is_some());
        assert_eq!(stlb.len(), 1);
    }

    #[test]
    fn remove_frame_drops_every_mapping_of_the_frame() {
        let mut stlb = Stlb::new(64);
        stlb.insert(StlbEntry::new(0x1000, 0xa000, true));
        stlb.insert(StlbEntry::new(0x7000, 0xa000, false)); // the frame mapped twice
        stlb.insert(StlbEntry::new(0x2000, 0xb000, true));
        assert_eq!(stlb.remove_frame(0xa000), 2);
        assert_eq!(stlb.lookup(0x1000), None);
        assert_eq!(stlb.lookup(0x7000), None);
        assert!(stlb.lookup(0x2000).is_some());
        assert_eq!(stlb.len(), 1);
        assert_eq!(stlb.remove_frame(0xa000), 0);
        assert_eq!(stlb.remove_frame(0xb123), 1, "any address inside the frame");
        assert!(stlb.is_empty());
    }

    #[test]
    fn clear_empties_and_iter_lists() {
        let mut stlb = Stlb::new(8);
        for page in 0..8u64 {
            stlb.insert(StlbEntry::new(page * PAGE, 0x10_0000 + page * PAGE, page % 2 == 0));
        }
        assert_eq!(stlb.len(), 8);
        assert_eq!(stlb.iter().count(), 8);
        assert!(stlb.iter().all(|e| e.frame_pa == 0x10_0000 + e.page_va()));
        stlb.clear();
        assert!(stlb.is_empty());
        assert_eq!(stlb.iter().count(), 0);
        assert_eq!(stlb.lookup(0), None);
    }

    #[test]
    fn single_entry_stlb_holds_the_last_page() {
        let mut stlb = Stlb::new(0);
        stlb.insert(StlbEntry::new(0x5000, 0xa000, true));
        stlb.insert(StlbEntry::new(0x9000, 0xb000, true));
        assert_eq!(stlb.lookup(0x5000), None);
        assert_eq!(stlb.lookup(0x9000).map(|e| e.frame_pa), Some(0xb000));
        assert_eq!(stlb.len(), 1);
    }
}
