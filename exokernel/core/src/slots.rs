//! An environment's TLB slots: the bounded set of mappings the hardware sees.
//!
//! On x86 a slot is a present entry in the environment's page table. Two
//! kinds are kept apart:
//! * guaranteed mappings, at most `guaranteed_max`, are never evicted (the
//!   libOS asked for them to stay, e.g. its upcall stack and handlers);
//! * ordinary slots, at most `slot_count`; when they are full, installing
//!   another evicts the oldest ordinary slot (a FIFO hand) and hands it back
//!   so the kernel can unmap it and keep it in the STLB.
//!
//! Operations by virtual address are O(1): an open-addressing page map,
//! and the eviction order is a FIFO queue of arrivals whose stale entries
//! (pages removed since) are skipped and compacted away.

use crate::stlb::page_number;
use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

/// One installed mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Virtual page number (`va >> PAGE_SHIFT`), not an address.
    pub va_page: u64,
    /// Physical address of the frame (page aligned).
    pub frame_pa: u64,
    /// Whether the page is mapped writable.
    pub writable: bool,
    /// Whether the mapping is guaranteed (never evicted).
    pub guaranteed: bool,
}

/// Why a slot operation was refused; a refused operation changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotError {
    /// An ordinary mapping was asked for but `slot_count` is 0.
    NoSlots,
    /// A guaranteed mapping was asked for but `guaranteed_max` are in use.
    TooManyGuaranteed,
    /// No slot maps that page.
    NotMapped,
}

/// Which of the two sets a mapping is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Guaranteed,
    /// Ordinary, with its arrival number (its place in the FIFO).
    Ordinary {
        arrival: u64,
    },
}

#[derive(Clone, Copy, Debug)]
struct Mapping {
    frame_pa: u64,
    writable: bool,
    class: Class,
}

impl Mapping {
    fn slot(&self, va_page: u64) -> Slot {
        Slot { va_page, frame_pa: self.frame_pa, writable: self.writable, guaranteed: self.class == Class::Guaranteed }
    }
}

/// An open-addressing hash map from virtual page number to mapping
/// (linear probing, backward-shift deletion): O(1) on the refill path.
struct PageMap {
    keys: Vec<u64>,
    values: Vec<Mapping>,
    len: usize,
}

const EMPTY: u64 = u64::MAX;

impl PageMap {
    fn with_capacity(entries: usize) -> Self {
        let capacity = (entries * 2).max(16).next_power_of_two();
        let blank = Mapping { frame_pa: 0, writable: false, class: Class::Guaranteed };
        PageMap { keys: vec![EMPTY; capacity], values: vec![blank; capacity], len: 0 }
    }

    fn mask(&self) -> usize {
        self.keys.len() - 1
    }

    fn home(&self, key: u64) -> usize {
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize & self.mask()
    }

    fn find(&self, key: u64) -> Option<usize> {
        let mut at = self.home(key);
        loop {
            match self.keys[at] {
                EMPTY => return None,
                k if k == key => return Some(at),
                _ => at = (at + 1) & self.mask(),
            }
        }
    }

    fn get(&self, key: u64) -> Option<&Mapping> {
        self.find(key).map(|at| &self.values[at])
    }

    fn get_mut(&mut self, key: u64) -> Option<&mut Mapping> {
        self.find(key).map(|at| &mut self.values[at])
    }

    fn insert(&mut self, key: u64, value: Mapping) {
        if (self.len + 1) * 2 > self.keys.len() {
            self.grow();
        }
        let mut at = self.home(key);
        while self.keys[at] != EMPTY && self.keys[at] != key {
            at = (at + 1) & self.mask();
        }
        if self.keys[at] == EMPTY {
            self.len += 1;
        }
        self.keys[at] = key;
        self.values[at] = value;
    }

    fn grow(&mut self) {
        let mut bigger = PageMap::with_capacity(self.keys.len());
        for (key, value) in self.iter() {
            bigger.insert(key, *value);
        }
        *self = bigger;
    }

    fn remove(&mut self, key: u64) -> Option<Mapping> {
        let mut hole = self.find(key)?;
        let removed = self.values[hole];
        self.keys[hole] = EMPTY;
        self.len -= 1;
        // Backward-shift the cluster after the hole so lookups never stop early.
        let mut at = (hole + 1) & self.mask();
        while self.keys[at] != EMPTY {
            let home = self.home(self.keys[at]);
            // Move the entry if its home is not in the cyclic range (hole, at].
            let moves = if hole <= at { home <= hole || home > at } else { home <= hole && home > at };
            if moves {
                self.keys[hole] = self.keys[at];
                self.values[hole] = self.values[at];
                self.keys[at] = EMPTY;
                hole = at;
            }
            at = (at + 1) & self.mask();
        }
        Some(removed)
    }

    fn iter(&self) -> impl Iterator<Item = (u64, &Mapping)> + '_ {
        self.keys.iter().zip(&self.values).filter(|(k, _)| **k != EMPTY).map(|(k, v)| (*k, v))
    }
}

/// The slots of one environment.
pub struct SlotSet {
    /// Every installed mapping, by virtual page number.
    mappings: PageMap,
    /// Ordinary slots in arrival order: the first live entry is the next
    /// victim. Entries of mappings removed since are stale and skipped
    /// (their arrival number no longer matches); the queue is compacted
    /// when stale entries pile up.
    fifo: VecDeque<(u64, u64)>,
    next_arrival: u64,
    ordinary_len: usize,
    slot_count: usize,
    guaranteed_max: usize,
    guaranteed_len: usize,
}

impl SlotSet {
    /// An empty set with room for `slot_count` ordinary slots and
    /// `guaranteed_max` guaranteed ones.
    pub fn new(slot_count: usize, guaranteed_max: usize) -> Self {
        SlotSet {
            mappings: PageMap::with_capacity(slot_count.min(4096) + 16),
            fifo: VecDeque::new(),
            next_arrival: 0,
            ordinary_len: 0,
            slot_count,
            guaranteed_max,
            guaranteed_len: 0,
        }
    }

    /// Is this FIFO entry still the live arrival of an ordinary mapping?
    fn is_live(&self, arrival: u64, va_page: u64) -> bool {
        self.mappings.get(va_page).is_some_and(|m| m.class == Class::Ordinary { arrival })
    }

    /// Install or replace the mapping of `va`'s page. Replacing a mapping of
    /// the same page keeps its slot (and its place in the FIFO); if the
    /// replacement changes `guaranteed`, it moves as [`set_guaranteed`]
    /// would. Returns the ordinary slot that was evicted to make room, if any.
    ///
    /// [`set_guaranteed`]: SlotSet::set_guaranteed
    pub fn insert(
        &mut self,
        va: u64,
        frame_pa: u64,
        writable: bool,
        guaranteed: bool,
    ) -> Result<Option<Slot>, SlotError> {
        let va_page = page_number(va);
        if let Some(mapping) = self.mappings.get(va_page) {
            let was_guaranteed = mapping.class == Class::Guaranteed;
            if was_guaranteed != guaranteed {
                self.check_room(guaranteed)?;
            }
            let mapping = self.mappings.get_mut(va_page).expect("present above");
            mapping.frame_pa = frame_pa;
            mapping.writable = writable;
            return self.set_guaranteed(va, guaranteed);
        }
        self.check_room(guaranteed)?;
        let (class, evicted) = if guaranteed {
            self.guaranteed_len += 1;
            (Class::Guaranteed, None)
        } else {
            let evicted = self.make_ordinary_room();
            (Class::Ordinary { arrival: self.enqueue(va_page) }, evicted)
        };
        self.mappings.insert(va_page, Mapping { frame_pa, writable, class });
        Ok(evicted)
    }

    /// Whether one more mapping of the given kind can be held (an ordinary
    /// one always can, by eviction, unless there are no ordinary slots).
    fn check_room(&self, guaranteed: bool) -> Result<(), SlotError> {
        if guaranteed && self.guaranteed_len >= self.guaranteed_max {
            Err(SlotError::TooManyGuaranteed)
        } else if !guaranteed && self.slot_count == 0 {
            Err(SlotError::NoSlots)
        } else {
            Ok(())
        }
    }

    /// If the ordinary slots are full, evict the oldest and return it.
    fn make_ordinary_room(&mut self) -> Option<Slot> {
        if self.ordinary_len < self.slot_count {
            return None;
        }
        while let Some((arrival, va_page)) = self.fifo.pop_front() {
            if self.is_live(arrival, va_page) {
                let mapping = self.mappings.remove(va_page).expect("live entries are mapped");
                self.ordinary_len -= 1;
                return Some(mapping.slot(va_page));
            }
        }
        None
    }

    /// Append `va_page` to the FIFO; returns its arrival number.
    fn enqueue(&mut self, va_page: u64) -> u64 {
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        self.fifo.push_back((arrival, va_page));
        self.ordinary_len += 1;
        if self.fifo.len() > 2 * self.slot_count.min(1 << 16) + 64 {
            // Compact in place. The new page is not in `mappings` yet: keep it explicitly.
            let mut fifo = core::mem::take(&mut self.fifo);
            fifo.retain(|&(a, page)| a == arrival || self.is_live(a, page));
            self.fifo = fifo;
        }
        arrival
    }

    /// The mapping of the page containing `va`.
    pub fn get(&self, va: u64) -> Option<Slot> {
        let va_page = page_number(va);
        self.mappings.get(va_page).map(|mapping| mapping.slot(va_page))
    }

    /// Remove the mapping of the page containing `va` (guaranteed or not).
    pub fn remove(&mut self, va: u64) -> Option<Slot> {
        let va_page = page_number(va);
        let mapping = self.mappings.remove(va_page)?;
        self.forget_class(mapping.class);
        Some(mapping.slot(va_page))
    }

    /// Take a removed mapping out of its set's bookkeeping (its FIFO entry,
    /// if any, goes stale).
    fn forget_class(&mut self, class: Class) {
        match class {
            Class::Guaranteed => self.guaranteed_len -= 1,
            Class::Ordinary { .. } => self.ordinary_len -= 1,
        }
    }

    /// Remove every mapping of the frame containing `frame_pa`, guaranteed
    /// ones included (revocation). Returns them in virtual-address order.
    pub fn remove_frame(&mut self, frame_pa: u64) -> Vec<Slot> {
        let frame = page_number(frame_pa);
        let mut pages: Vec<u64> = self
            .mappings
            .iter()
            .filter(|(_, mapping)| page_number(mapping.frame_pa) == frame)
            .map(|(va_page, _)| va_page)
            .collect();
        pages.sort_unstable();
        let mut removed = Vec::with_capacity(pages.len());
        for va_page in pages {
            let mapping = self.mappings.remove(va_page).expect("listed above");
            self.forget_class(mapping.class);
            removed.push(mapping.slot(va_page));
        }
        removed
    }

    /// Move the mapping of `va`'s page into the guaranteed set or out of it.
    /// Making a mapping guaranteed fails with `TooManyGuaranteed` when the
    /// guaranteed set is full; making it ordinary puts it at the back of the
    /// FIFO and may evict the oldest ordinary slot, which is returned.
    /// Asking for the class it already has changes nothing.
    pub fn set_guaranteed(&mut self, va: u64, guaranteed: bool) -> Result<Option<Slot>, SlotError> {
        let va_page = page_number(va);
        let class = self.mappings.get(va_page).ok_or(SlotError::NotMapped)?.class;
        match (class, guaranteed) {
            (Class::Guaranteed, true) | (Class::Ordinary { .. }, false) => Ok(None),
            (Class::Ordinary { .. }, true) => {
                self.check_room(true)?;
                self.ordinary_len -= 1;
                self.guaranteed_len += 1;
                self.set_class(va_page, Class::Guaranteed);
                Ok(None)
            }
            (Class::Guaranteed, false) => {
                self.check_room(false)?;
                self.guaranteed_len -= 1;
                let evicted = self.make_ordinary_room();
                let arrival = self.enqueue(va_page);
                self.set_class(va_page, Class::Ordinary { arrival });
                Ok(evicted)
            }
        }
    }

    fn set_class(&mut self, va_page: u64, class: Class) {
        self.mappings.get_mut(va_page).expect("caller checked").class = class;
    }

    /// Drop every ordinary slot, keeping the guaranteed ones (the policy of
    /// refilling from the STLB after a context switch). Returns them oldest
    /// first.
    pub fn drain_ordinary(&mut self) -> Vec<Slot> {
        let mut drained = Vec::with_capacity(self.ordinary_len);
        self.drain_ordinary_with(|slot| drained.push(slot));
        drained
    }

    /// As [`drain_ordinary`](SlotSet::drain_ordinary), handing each slot to
    /// `each` (oldest first) without allocating: the context-switch path.
    pub fn drain_ordinary_with(&mut self, mut each: impl FnMut(Slot)) {
        // Pop in place: the queue keeps its capacity for the refills to come.
        while let Some((arrival, va_page)) = self.fifo.pop_front() {
            if self.is_live(arrival, va_page) {
                let mapping = self.mappings.remove(va_page).expect("live entries are mapped");
                each(mapping.slot(va_page));
            }
        }
        self.ordinary_len = 0;
    }

    /// Number of ordinary slots in use.
    pub fn ordinary_len(&self) -> usize {
        self.ordinary_len
    }

    /// Number of guaranteed mappings.
    pub fn guaranteed_len(&self) -> usize {
        self.guaranteed_len
    }

    /// Number of mappings of both kinds.
    pub fn len(&self) -> usize {
        self.mappings.len
    }

    /// Whether no page is mapped.
    pub fn is_empty(&self) -> bool {
        self.mappings.len == 0
    }

    /// The bound on ordinary slots.
    pub fn slot_count(&self) -> usize {
        self.slot_count
    }

    /// The bound on guaranteed mappings.
    pub fn guaranteed_max(&self) -> usize {
        self.guaranteed_max
    }

    /// Every mapping, both kinds, in virtual-address order.
    pub fn iter(&self) -> impl Iterator<Item = Slot> + '_ {
        let mut all: Vec<Slot> = self.mappings.iter().map(|(va_page, mapping)| mapping.slot(va_page)).collect();
        all.sort_unstable_by_key(|slot| slot.va_page);
        all.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stlb::PAGE_SHIFT;
    use std::vec;

    const PAGE: u64 = 1 << PAGE_SHIFT;

    fn va(page: u64) -> u64 {
        0x40_0000 + page * PAGE
    }

    fn frame(n: u64) -> u64 {
        0x100_0000 + n * PAGE
    }

    /// The two sets agree with each other and with their bounds.
    fn check_invariants(set: &SlotSet) {
        let guaranteed = set.iter().filter(|s| s.guaranteed).count();
        assert_eq!(guaranteed, set.guaranteed_len());
        assert_eq!(set.len() - guaranteed, set.ordinary_len());
        assert!(set.ordinary_len() <= set.slot_count());
        assert!(set.guaranteed_len() <= set.guaranteed_max());
        let live = set.fifo.iter().filter(|&&(arrival, page)| set.is_live(arrival, page)).count();
        assert_eq!(live, set.ordinary_len());
    }

    #[test]
    fn insert_get_remove() {
        let mut set = SlotSet::new(4, 2);
        assert_eq!(set.insert(va(1) + 0x123, frame(1), true, false), Ok(None));
        let slot = set.get(va(1) + 0xfff).unwrap();
        assert_eq!(slot, Slot { va_page: va(1) >> PAGE_SHIFT, frame_pa: frame(1), writable: true, guaranteed: false });
        assert_eq!(set.get(va(2)), None);
        assert_eq!(set.remove(va(1)), Some(slot));
        assert_eq!(set.remove(va(1)), None);
        assert!(set.is_empty());
        check_invariants(&set);
    }

    #[test]
    fn full_ordinary_slots_evict_oldest_first() {
        let mut set = SlotSet::new(3, 1);
        for page in 0..3 {
            assert_eq!(set.insert(va(page), frame(page), true, false), Ok(None));
        }
        let evicted = set.insert(va(3), frame(3), true, false).unwrap().unwrap();
        assert_eq!(evicted.va_page, va(0) >> PAGE_SHIFT);
        assert_eq!(evicted.frame_pa, frame(0));
        let evicted = set.insert(va(4), frame(4), false, false).unwrap().unwrap();
        assert_eq!(evicted.frame_pa, frame(1));
        assert_eq!(set.ordinary_len(), 3);
        assert_eq!(set.get(va(0)), None);
        check_invariants(&set);
    }

    #[test]
    fn guaranteed_mappings_are_never_evicted() {
        let mut set = SlotSet::new(2, 2);
        set.insert(va(100), frame(100), true, true).unwrap();
        for page in 0..10 {
            set.insert(va(page), frame(page), true, false).unwrap();
        }
        assert!(set.get(va(100)).unwrap().guaranteed);
        assert_eq!(set.guaranteed_len(), 1);
        assert_eq!(set.ordinary_len(), 2);
        check_invariants(&set);
    }

    #[test]
    fn bounds_are_enforced() {
        let mut set = SlotSet::new(0, 1);
        assert_eq!(set.insert(va(0), frame(0), true, false), Err(SlotError::NoSlots));
        assert_eq!(set.insert(va(0), frame(0), true, true), Ok(None));
        assert_eq!(set.insert(va(1), frame(1), true, true), Err(SlotError::TooManyGuaranteed));
        assert_eq!(set.set_guaranteed(va(0), false), Err(SlotError::NoSlots));
        assert_eq!(set.set_guaranteed(va(9), true), Err(SlotError::NotMapped));
        assert_eq!(set.len(), 1);
        check_invariants(&set);
    }

    #[test]
    fn replacing_a_page_keeps_its_slot() {
        let mut set = SlotSet::new(2, 0);
        set.insert(va(0), frame(0), false, false).unwrap();
        set.insert(va(1), frame(1), false, false).unwrap();
        assert_eq!(set.insert(va(0), frame(7), true, false), Ok(None), "no eviction on replace");
        let slot = set.get(va(0)).unwrap();
        assert_eq!((slot.frame_pa, slot.writable), (frame(7), true));
        // Page 0 kept its place at the front of the FIFO: it goes first.
        let evicted = set.insert(va(2), frame(2), false, false).unwrap().unwrap();
        assert_eq!(evicted.frame_pa, frame(7));
        check_invariants(&set);
    }

    #[test]
    fn replacing_with_another_class_moves_the_mapping() {
        let mut set = SlotSet::new(1, 1);
        set.insert(va(0), frame(0), false, false).unwrap();
        assert_eq!(set.insert(va(0), frame(1), true, true), Ok(None));
        assert_eq!((set.ordinary_len(), set.guaranteed_len()), (0, 1));
        set.insert(va(1), frame(2), false, false).unwrap();
        // Back to ordinary: the one ordinary slot is taken, so page 1 goes.
        let evicted = set.insert(va(0), frame(3), false, false).unwrap().unwrap();
        assert_eq!(evicted.frame_pa, frame(2));
        assert_eq!(set.get(va(0)).unwrap().frame_pa, frame(3));
        // A refused move changes nothing, not even the frame.
        set.insert(va(5), frame(5), false, true).unwrap();
        assert_eq!(set.insert(va(0), frame(9), true, true), Err(SlotError::TooManyGuaranteed));
        assert_eq!(set.get(va(0)).unwrap().frame_pa, frame(3));
        check_invariants(&set);
    }

    #[test]
    fn set_guaranteed_moves_between_sets() {
        let mut set = SlotSet::new(2, 1);
        set.insert(va(0), frame(0), true, false).unwrap();
        set.insert(va(1), frame(1), true, false).unwrap();
        assert_eq!(set.set_guaranteed(va(0), true), Ok(None));
        assert_eq!(set.set_guaranteed(va(0), true), Ok(None), "already guaranteed");
        assert_eq!(set.set_guaranteed(va(1), true), Err(SlotError::TooManyGuaranteed));
        assert_eq!((set.ordinary_len(), set.guaranteed_len()), (1, 1));
        set.insert(va(2), frame(2), true, false).unwrap();
        // Demoting page 0 fills a third ordinary slot: the oldest (1) goes.
        let evicted = set.set_guaranteed(va(0), false).unwrap().unwrap();
        assert_eq!(evicted.frame_pa, frame(1));
        assert!(!set.get(va(0)).unwrap().guaranteed);
        // Page 0 is now the newest ordinary slot.
        let evicted = set.insert(va(3), frame(3), true, false).unwrap().unwrap();
        assert_eq!(evicted.frame_pa, frame(2));
        check_invariants(&set);
    }

    #[test]
    fn remove_frame_takes_every_mapping_of_the_frame() {
        let mut set = SlotSet::new(4, 2);
        set.insert(va(0), frame(0), true, false).unwrap();
        set.insert(va(1), frame(0), false, true).unwrap();
        set.insert(va(2), frame(1), true, false).unwrap();
        let removed = set.remove_frame(frame(0) + 0x10);
        assert_eq!(removed.len(), 2);
        assert_eq!(removed[0].va_page, va(0) >> PAGE_SHIFT);
        assert!(removed[1].guaranteed);
        assert_eq!((set.ordinary_len(), set.guaranteed_len()), (1, 0));
        assert!(set.remove_frame(frame(0)).is_empty());
        check_invariants(&set);
    }

    #[test]
    fn drain_ordinary_keeps_guaranteed() {
        let mut set = SlotSet::new(3, 1);
        set.insert(va(9), frame(9), true, true).unwrap();
        for page in [5, 2, 7] {
            set.insert(va(page), frame(page), true, false).unwrap();
        }
        let drained: Vec<u64> = set.drain_ordinary().iter().map(|s| s.frame_pa).collect();
        assert_eq!(drained, vec![frame(5), frame(2), frame(7)], "oldest first");
        assert_eq!(set.ordinary_len(), 0);
        assert_eq!(set.iter().map(|s| s.frame_pa).collect::<Vec<_>>(), vec![frame(9)]);
        // The slots are usable again at once.
        for page in 0..3 {
            assert_eq!(set.insert(va(page), frame(page), true, false), Ok(None));
        }
        check_invariants(&set);
    }

    #[test]
    fn iter_is_in_address_order() {
        let mut set = SlotSet::new(8, 8);
        for page in [4, 1, 3] {
            set.insert(va(page), frame(page), false, page == 3).unwrap();
        }
        let pages: Vec<u64> = set.iter().map(|s| s.va_page).collect();
        assert_eq!(pages, vec![va(1) >> PAGE_SHIFT, va(3) >> PAGE_SHIFT, va(4) >> PAGE_SHIFT]);
    }

    /// Random operations against a plain model: a list of (page, frame,
    /// writable, guaranteed) in arrival order, evicting the first ordinary.
    #[test]
    fn agrees_with_a_simple_model() {
        let (slot_count, guaranteed_max) = (5, 2);
        let mut set = SlotSet::new(slot_count, guaranteed_max);
        let mut model: Vec<Slot> = Vec::new(); // ordinary ones in FIFO order
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        let model_evict = |model: &mut Vec<Slot>| -> Option<Slot> {
            if model.iter().filter(|s| !s.guaranteed).count() < slot_count {
                return None;
            }
            let oldest = model.iter().position(|s| !s.guaranteed).unwrap();
            Some(model.remove(oldest))
        };
        for _ in 0..5000 {
            let page = next(12);
            let va_page = va(page) >> PAGE_SHIFT;
            let found = model.iter().position(|s| s.va_page == va_page);
            match next(6) {
                0..=2 => {
                    let (frame_pa, writable, guaranteed) = (frame(next(4)), next(2) == 0, next(5) == 0);
                    let guaranteed_len = model.iter().filter(|s| s.guaranteed).count();
                    let expected = match found {
                        Some(i) if model[i].guaranteed == guaranteed => {
                            model[i].frame_pa = frame_pa;
                            model[i].writable = writable;
                            Ok(None)
                        }
                        _ if guaranteed && guaranteed_len >= guaranteed_max => Err(SlotError::TooManyGuaranteed),
                        Some(i) if guaranteed => {
                            model[i] = Slot { va_page, frame_pa, writable, guaranteed };
                            Ok(None)
                        }
                        Some(i) => {
                            model.remove(i);
                            let evicted = model_evict(&mut model);
                            model.push(Slot { va_page, frame_pa, writable, guaranteed });
                            Ok(evicted)
                        }
                        None => {
                            let evicted = if guaranteed { None } else { model_evict(&mut model) };
                            model.push(Slot { va_page, frame_pa, writable, guaranteed });
                            Ok(evicted)
                        }
                    };
                    assert_eq!(set.insert(va(page), frame_pa, writable, guaranteed), expected);
                }
                3 => {
                    let expected = found.map(|i| model.remove(i));
                    assert_eq!(set.remove(va(page)), expected);
                }
                4 => {
                    let frame_pa = frame(next(4));
                    let mut expected: Vec<Slot> = model.iter().copied().filter(|s| s.frame_pa == frame_pa).collect();
                    expected.sort_by_key(|s| s.va_page);
                    model.retain(|s| s.frame_pa != frame_pa);
                    assert_eq!(set.remove_frame(frame_pa), expected);
                }
                _ => {
                    let expected: Vec<Slot> = model.iter().copied().filter(|s| !s.guaranteed).collect();
                    if next(8) == 0 {
                        model.retain(|s| s.guaranteed);
                        assert_eq!(set.drain_ordinary(), expected);
                    }
                }
            }
            check_invariants(&set);
            for slot in &model {
                assert_eq!(set.get(slot.va_page << PAGE_SHIFT), Some(*slot));
            }
            assert_eq!(set.len(), model.len());
        }
    }

    #[test]
    fn page_map_survives_heavy_insert_and_remove() {
        let mut map = PageMap::with_capacity(4);
        let mut model = std::collections::BTreeMap::new();
        let mut state = 0x1234_5678_u64;
        for step in 0..20_000u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Keys from a small range so probes collide and clusters form.
            let key = state % 700;
            let mapping = Mapping { frame_pa: step, writable: step % 2 == 0, class: Class::Guaranteed };
            if state.is_multiple_of(3) {
                assert_eq!(map.remove(key).map(|m| m.frame_pa), model.remove(&key).map(|m: Mapping| m.frame_pa));
            } else {
                map.insert(key, mapping);
                model.insert(key, mapping);
            }
            assert_eq!(map.len, model.len());
        }
        for key in 0..700 {
            assert_eq!(map.get(key).map(|m| m.frame_pa), model.get(&key).map(|m| m.frame_pa), "key {key}");
        }
    }
}
