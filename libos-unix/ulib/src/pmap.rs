//! A process's own page table (the "pmap"): which frame, under which key,
//! backs each page the process has mapped, and how fork treats it. The
//! exokernel's mappings are a cache (TLB slots, software TLB) that may
//! drop an ordinary mapping; the pmap is the truth the process's
//! page-fault handler maps from again, and what fork and exec build.
//!
//! A sorted array of entries in pages the process maps for itself (one to
//! start with, more as it grows), so the fault handler never allocates
//! from the heap: lookups are a binary search, inserts shift the tail.

use libos_runtime::syscall::FrameKey;

/// How fork treats a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Read-only program text and the start page: the child co-owns it.
    Text = 1,
    /// Writable program data: the child gets a copy at once (the fault
    /// handler's own statics live here, so they are never copy-on-write).
    Private = 2,
    /// Heap and stack: shared copy-on-write.
    Anon = 3,
    /// Per-process pages (upcall stack, pmap): the child gets fresh ones.
    Fresh = 4,
    /// Shared between every process of the libOS (the process table).
    Shared = 5,
    /// The parent's alone (fork's own stack and buffers): not inherited.
    NoFork = 6,
}

impl Kind {
    fn from_bits(bits: u64) -> Option<Kind> {
        Some(match bits {
            1 => Kind::Text,
            2 => Kind::Private,
            3 => Kind::Anon,
            4 => Kind::Fresh,
            5 => Kind::Shared,
            6 => Kind::NoFork,
            _ => return None,
        })
    }
}

/// One page: `word` holds the page address and, in its low 12 bits, the
/// flags below; `key` is the process's key to the frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Entry {
    pub word: u64,
    pub key: FrameKey,
}

/// The process may write the page (once any copy-on-write is resolved).
pub const WRITABLE: u64 = 1;
/// Shared copy-on-write: mapped read-only until the first write copies it.
pub const COW: u64 = 2;
/// Mapped guaranteed (never dropped by the kernel).
pub const GUARANTEED: u64 = 4;
/// Program code: mapped executable (always guaranteed, never writable).
pub const EXEC: u64 = 8;
const KIND_SHIFT: u32 = 4;
const KIND_MASK: u64 = 0xf << KIND_SHIFT;

impl Entry {
    pub fn new(va: u64, key: FrameKey, kind: Kind, flags: u64) -> Entry {
        debug_assert!(va.is_multiple_of(4096) && flags & !0xf == 0);
        Entry { word: va | (kind as u64) << KIND_SHIFT | flags, key }
    }

    pub fn va(&self) -> u64 {
        self.word & !0xfff
    }

    pub fn kind(&self) -> Option<Kind> {
        Kind::from_bits((self.word & KIND_MASK) >> KIND_SHIFT)
    }

    pub fn has(&self, flag: u64) -> bool {
        self.word & flag != 0
    }

    pub fn set(&mut self, flag: u64, on: bool) {
        if on {
            self.word |= flag;
        } else {
            self.word &= !flag;
        }
    }
}

/// The header in front of the entries.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Header {
    pub count: u64,
    /// Pages the pmap occupies (it grows a page at a time).
    pub pages: u64,
    pub _reserved: u64,
}

/// Entries that fit in `pages` pages after the header.
pub const fn capacity(pages: usize) -> usize {
    (pages * 4096 - core::mem::size_of::<Header>()) / core::mem::size_of::<Entry>()
}

/// The pmap over its storage: `count` live entries, sorted by page.
pub struct Pmap<'a> {
    pub header: &'a mut Header,
    pub entries: &'a mut [Entry],
}

/// The pmap is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

impl Pmap<'_> {
    pub fn len(&self) -> usize {
        self.header.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn live(&self) -> &[Entry] {
        &self.entries[..self.len()]
    }

    fn position(&self, va: u64) -> Result<usize, usize> {
        let page = va & !0xfff;
        self.live().binary_search_by_key(&page, |e| e.va())
    }

    /// The entry of the page holding `va`.
    pub fn find(&self, va: u64) -> Option<Entry> {
        self.position(va).ok().map(|at| self.live()[at])
    }

    /// The entry of the page holding `va`, to change in place.
    pub fn find_mut(&mut self, va: u64) -> Option<&mut Entry> {
        let at = self.position(va).ok()?;
        Some(&mut self.entries[at])
    }

    /// Record (or replace) the entry for its page.
    pub fn insert(&mut self, entry: Entry) -> Result<(), Full> {
        match self.position(entry.va()) {
            Ok(at) => self.entries[at] = entry,
            Err(at) => {
                let len = self.len();
                if len == self.entries.len() {
                    return Err(Full);
                }
                self.entries.copy_within(at..len, at + 1);
                self.entries[at] = entry;
                self.header.count += 1;
            }
        }
        Ok(())
    }

    /// Forget the page holding `va`; returns its entry.
    pub fn remove(&mut self, va: u64) -> Option<Entry> {
        let at = self.position(va).ok()?;
        let entry = self.entries[at];
        let len = self.len();
        self.entries.copy_within(at + 1..len, at);
        self.header.count -= 1;
        Some(entry)
    }

    /// The first entry at or above page `va`: a cursor that stays right
    /// while entries are inserted or removed behind or ahead of it.
    pub fn next_from(&self, va: u64) -> Option<Entry> {
        let at = match self.position(va) {
            Ok(at) | Err(at) => at,
        };
        self.live().get(at).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    fn key(n: u64) -> FrameKey {
        FrameKey { handle: n, mac: n * 7 }
    }

    #[test]
    fn entries_stay_sorted_and_are_found() {
        let mut header = Header::default();
        let mut storage = vec![Entry::default(); 4];
        let mut pmap = Pmap { header: &mut header, entries: &mut storage };
        for (i, va) in [0x5000u64, 0x1000, 0x3000].into_iter().enumerate() {
            pmap.insert(Entry::new(va, key(i as u64), Kind::Anon, WRITABLE)).unwrap();
        }
        assert_eq!(pmap.len(), 3);
        assert_eq!(pmap.find(0x1234).unwrap().key, key(1));
        assert_eq!(pmap.find(0x2000), None);
        assert_eq!(pmap.next_from(0x2000).unwrap().va(), 0x3000);
        assert_eq!(pmap.next_from(0x6000), None);
        // Replacing keeps the count; the fourth fits; a fifth does not.
        pmap.insert(Entry::new(0x3000, key(9), Kind::Private, 0)).unwrap();
        assert_eq!((pmap.len(), pmap.find(0x3000).unwrap().kind()), (3, Some(Kind::Private)));
        pmap.insert(Entry::new(0x0, key(4), Kind::Text, GUARANTEED)).unwrap();
        assert_eq!(pmap.insert(Entry::new(0x9000, key(5), Kind::Text, 0)), Err(Full));
        assert_eq!(pmap.remove(0x1000).unwrap().key, key(1));
        let vas: std::vec::Vec<u64> = pmap.live().iter().map(|e| e.va()).collect();
        assert_eq!(vas, [0x0, 0x3000, 0x5000]);
    }

    #[test]
    fn flags_and_kinds_round_trip() {
        let mut e = Entry::new(0x7000, key(1), Kind::Anon, WRITABLE | COW);
        assert!(e.has(COW) && e.has(WRITABLE) && !e.has(GUARANTEED));
        e.set(COW, false);
        assert!(!e.has(COW));
        assert_eq!((e.va(), e.kind()), (0x7000, Some(Kind::Anon)));
        assert_eq!(capacity(1), 169);
        assert_eq!(capacity(6), 1023);
    }
}
