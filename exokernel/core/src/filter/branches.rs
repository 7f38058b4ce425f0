//! A trie test's branches ([`Branches`]): the map from a field's masked value to the child node, specialised for the demultiplexing fast path.
//!
//! Most tests in a trie have one branch (every filter of a protocol shares
//! "ethertype IPv4", "protocol UDP"...), a few have many (a thousand port
//! numbers). So the map has two shapes:
//!
//! * **Inline**: up to [`INLINE_BRANCHES`] `(value, child)` pairs in the
//!   test itself, compared in turn: no hashing, no indirection; one branch
//!   costs one compare.
//! * **Table**: more pairs go to an open-addressing table (linear probing,
//!   at most an eighth full, backward-shift deletion, shrunk below a
//!   thirty-second), hashed by a *keyed double folded multiply*:
//!   `fold(fold(value ^ k0, k1) ^ k2, k3)`, where `fold(a, b)` is the
//!   128-bit product of `a` and `b` with its halves xored, and the slot is
//!   the top bits. `k0..k3` (`k1`, `k3` odd) derive from the kernel's
//!   per-boot secret seed. A lookup is two multiplies and, at an eighth
//!   load, almost always one slot compare (the mean displacement of a
//!   value from its home slot is about 0.07; the unit tests check the
//!   spread for consecutive ports and other structured values under 64
//!   seeds). One fold was not enough: consecutive values differ only in
//!   low bits, the product's high half barely moves, and for some seeds a
//!   thousand consecutive ports fell into probe runs of 200.
//!
//! # Hash flooding
//!
//! Values are chosen by library OSes, so a hostile one could try to make
//! the values it installs land in one probe run, so that each lookup of a
//! value hashing into it (of any packet, whoever it is for) walks that run.
//! The folded multiply is the construction foldhash's fast hasher uses for
//! one word (the hash this replaced), here applied twice: without the keys,
//! which never leave the kernel, a libOS cannot compute where a value
//! lands, and each fold makes the slot depend on every bit of its input and
//! its key. What a libOS could learn from outside is timing of other
//! environments' packets, and a run it could build is bounded anyway: the
//! values one environment contributes to a table are its filters on that
//! field, at most its quota ([`DEFAULT_FILTERS_PER_ENV`] unless the kernel
//! chooses otherwise), and a lookup stops at the first empty slot, which a
//! table at most an eighth full always has. It is not a cryptographic PRF;
//! it needs only to keep an attacker who cannot read kernel memory from
//! choosing collisions cheaply, which is the guarantee the previous
//! foldhash maps gave.
//!
//! [`DEFAULT_FILTERS_PER_ENV`]: super::DEFAULT_FILTERS_PER_ENV

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

/// Branches kept inline before a test switches to a hash table.
pub const INLINE_BRANCHES: usize = 4;

/// A child index no node has: marks an empty slot.
const EMPTY: u32 = u32::MAX;

/// Slots of the smallest table (a power of two, at least eight times
/// [`INLINE_BRANCHES`] + 1 so a fresh table is at most an eighth full).
const MIN_TABLE_SLOTS: usize = 64;

/// The map from a masked field value to a child node.
pub enum Branches {
    Inline {
        len: u8,
        pairs: [(u32, u32); INLINE_BRANCHES],
    },
    /// Boxed: most tests have a few branches, and the inline shape stays
    /// small.
    Table(Box<Table>),
}

/// The two keys of the slot hash, from the per-boot seed.
#[derive(Clone, Copy)]
pub struct HashKeys {
    k0: u64,
    k1: u64,
    k2: u64,
    k3: u64,
}

impl HashKeys {
    /// Keys derived from the secret `seed` (splitmix64 twice, so related
    /// seeds give unrelated keys; `k1` odd so the multiply loses no bit).
    pub fn from_seed(seed: u64) -> HashKeys {
        let k0 = splitmix64(seed);
        let k1 = splitmix64(k0 ^ 0x6a09_e667_f3bc_c909) | 1;
        let k2 = splitmix64(k1 ^ 0xbb67_ae85_84ca_a73b);
        let k3 = splitmix64(k2 ^ 0x3c6e_f372_fe94_f82b) | 1;
        HashKeys { k0, k1, k2, k3 }
    }

    #[inline(always)]
    fn hash(self, value: u32) -> u64 {
        folded_multiply(folded_multiply(value as u64 ^ self.k0, self.k1) ^ self.k2, self.k3)
    }
}

/// The 128-bit product of `a` and `b`, its halves xored.
#[inline(always)]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let product = a as u128 * b as u128;
    product as u64 ^ (product >> 64) as u64
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The open-addressing table behind a test with many branches.
pub struct Table {
    keys: HashKeys,
    /// `(value, child)`, child [`EMPTY`] when free; a power of two long,
    /// between a thirty-second and an eighth full (at least [`MIN_TABLE_SLOTS`]).
    slots: Vec<(u32, u32)>,
    /// `64 - log2(slots.len())`: the slot is the hash's top bits.
    index_shift: u32,
    len: usize,
}

impl Table {
    fn with_slots(keys: HashKeys, slot_count: usize) -> Table {
        debug_assert!(slot_count.is_power_of_two() && slot_count >= MIN_TABLE_SLOTS);
        Table { keys, slots: vec![(0, EMPTY); slot_count], index_shift: 64 - slot_count.trailing_zeros(), len: 0 }
    }

    #[inline(always)]
    fn home(&self, value: u32) -> usize {
        (self.keys.hash(value) >> self.index_shift) as usize
    }

    #[inline(always)]
    fn get(&self, value: u32) -> Option<u32> {
        let mask = self.slots.len() - 1;
        let mut index = self.home(value);
        // At most an eighth full: an empty slot ends every probe run.
        loop {
            let (slot_value, child) = *self.slots.get(index)?;
            if child == EMPTY {
                return None;
            }
            if slot_value == value {
                return Some(child);
            }
            index = (index + 1) & mask;
        }
    }

    /// Insert a value not present (the caller checked).
    fn insert_new(&mut self, value: u32, child: u32) {
        if (self.len + 1) * 8 > self.slots.len() {
            self.rebuild(self.slots.len() * 2);
        }
        self.place(value, child);
        self.len += 1;
    }

    fn place(&mut self, value: u32, child: u32) {
        let mask = self.slots.len() - 1;
        let mut index = self.home(value);
        while self.slots[index].1 != EMPTY {
            index = (index + 1) & mask;
        }
        self.slots[index] = (value, child);
    }

    fn rebuild(&mut self, slot_count: usize) {
        let old = core::mem::replace(self, Table::with_slots(self.keys, slot_count));
        for (value, child) in old.slots {
            if child != EMPTY {
                self.place(value, child);
                self.len += 1;
            }
        }
    }

    fn remove(&mut self, value: u32) -> Option<u32> {
        let mask = self.slots.len() - 1;
        let mut hole = self.home(value);
        loop {
            let (slot_value, child) = self.slots[hole];
            if child == EMPTY {
                return None;
            }
            if slot_value == value {
                break;
            }
            hole = (hole + 1) & mask;
        }
        let removed = self.slots[hole].1;
        // Backward shift: pull later members of the run into the hole when
        // that brings them no further from home than they were.
        let mut next = hole;
        loop {
            next = (next + 1) & mask;
            let (next_value, next_child) = self.slots[next];
            if next_child == EMPTY {
                break;
            }
            let home = self.home(next_value);
            if (next.wrapping_sub(home) & mask) >= (next.wrapping_sub(hole) & mask) {
                self.slots[hole] = self.slots[next];
                hole = next;
            }
        }
        self.slots[hole] = (0, EMPTY);
        self.len -= 1;
        Some(removed)
    }
}

impl Branches {
    pub fn new() -> Branches {
        Branches::Inline { len: 0, pairs: [(0, EMPTY); INLINE_BRANCHES] }
    }

    /// The child for `value`.
    #[inline(always)]
    pub fn get(&self, value: u32) -> Option<u32> {
        match self {
            Branches::Inline { len, pairs } => {
                pairs[..*len as usize].iter().find(|&&(candidate, _)| candidate == value).map(|&(_, child)| child)
            }
            Branches::Table(table) => table.get(value),
        }
    }

    /// Add `value -> child`; `value` must not be present. `keys` hash the
    /// table if the test outgrows its inline pairs.
    pub fn insert_new(&mut self, value: u32, child: u32, keys: HashKeys) {
        debug_assert!(self.get(value).is_none() && child != EMPTY);
        match self {
            Branches::Inline { len, pairs } if (*len as usize) < INLINE_BRANCHES => {
                pairs[*len as usize] = (value, child);
                *len += 1;
            }
            Branches::Inline { len, pairs } => {
                let mut table = Table::with_slots(keys, MIN_TABLE_SLOTS);
                for &(old_value, old_child) in &pairs[..*len as usize] {
                    table.insert_new(old_value, old_child);
                }
                table.insert_new(value, child);
                *self = Branches::Table(Box::new(table));
            }
            Branches::Table(table) => table.insert_new(value, child),
        }
    }

    /// Remove `value`, returning its child. A table that shrinks to what
    /// fits inline goes back inline.
    pub fn remove(&mut self, value: u32) -> Option<u32> {
        match self {
            Branches::Inline { len, pairs } => {
                let position = pairs[..*len as usize].iter().position(|&(candidate, _)| candidate == value)?;
                let child = pairs[position].1;
                // Keep insertion order (not needed for correctness; it keeps
                // lookups deterministic to read).
                pairs.copy_within(position + 1..*len as usize, position);
                *len -= 1;
                pairs[*len as usize] = (0, EMPTY);
                Some(child)
            }
            Branches::Table(table) => {
                let child = table.remove(value)?;
                if table.len <= INLINE_BRANCHES {
                    let mut inline = Branches::new();
                    for (value, child) in table.iter() {
                        if let Branches::Inline { len, pairs } = &mut inline {
                            pairs[*len as usize] = (value, child);
                            *len += 1;
                        }
                    }
                    *self = inline;
                } else if table.len * 32 < table.slots.len() && table.slots.len() > MIN_TABLE_SLOTS {
                    table.rebuild(table.slots.len() / 2);
                }
                Some(child)
            }
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Branches::Inline { len, .. } => *len as usize,
            Branches::Table(table) => table.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every `(value, child)`, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let pairs: &[(u32, u32)] = match self {
            Branches::Inline { len, pairs } => &pairs[..*len as usize],
            Branches::Table(table) => &table.slots,
        };
        // Inline pairs up to `len` are all in use; free table slots are not.
        pairs.iter().copied().filter(|&(_, child)| child != EMPTY)
    }

    /// Whether the branches live in a hash table (for tests).
    #[cfg(test)]
    pub fn is_table(&self) -> bool {
        matches!(self, Branches::Table(_))
    }
}

impl Table {
    fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.slots.iter().copied().filter(|&(_, child)| child != EMPTY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::test_support::Rng;
    use std::collections::BTreeMap;

    /// Random inserts and removes from a small and a large value space
    /// (many collisions of the low bits), checked against a BTreeMap.
    #[test]
    fn branches_agree_with_a_btreemap() {
        for (seed, space) in [(1u64, 8u64), (2, 40), (3, 5000), (4, 1 << 32)] {
            let mut rng = Rng(0xb2a7_c4e5 ^ seed);
            let keys = HashKeys::from_seed(seed);
            let mut branches = Branches::new();
            let mut reference = BTreeMap::new();
            for step in 0..20_000u32 {
                let value = (rng.below(space) as u32) << rng.pick(&[0u32, 0, 8, 16]);
                if rng.chance(3, 5) {
                    if let std::collections::btree_map::Entry::Vacant(slot) = reference.entry(value) {
                        slot.insert(step);
                        branches.insert_new(value, step, keys);
                    }
                } else {
                    assert_eq!(branches.remove(value), reference.remove(&value));
                }
                assert_eq!(branches.len(), reference.len());
                let probe = rng.below(space) as u32;
                assert_eq!(branches.get(probe), reference.get(&probe).copied());
                if step % 997 == 0 {
                    let mut all: Vec<(u32, u32)> = branches.iter().collect();
                    all.sort();
                    let expected: Vec<(u32, u32)> = reference.iter().map(|(&v, &c)| (v, c)).collect();
                    assert_eq!(all, expected);
                    for (&value, &child) in &reference {
                        assert_eq!(branches.get(value), Some(child));
                    }
                }
            }
        }
    }

    #[test]
    fn shapes_switch_at_the_inline_limit() {
        let keys = HashKeys::from_seed(7);
        let mut branches = Branches::new();
        for value in 0..INLINE_BRANCHES as u32 {
            branches.insert_new(value, value + 100, keys);
        }
        assert!(!branches.is_table());
        branches.insert_new(99, 199, keys);
        assert!(branches.is_table());
        assert_eq!(branches.get(99), Some(199));
        assert_eq!(branches.remove(99), Some(199));
        assert!(!branches.is_table(), "back inline");
        for value in 0..INLINE_BRANCHES as u32 {
            assert_eq!(branches.get(value), Some(value + 100));
        }
        assert_eq!(branches.get(99), None);
    }

    /// A thousand port numbers (the benchmark's shape), a thousand values
    /// differing only in high bits, and a thousand multiples of 2^11, under
    /// 64 seeds: spread as random hashing would (mean displacement about
    /// 0.07 at an eighth load), no long probe runs. (A single keyed
    /// folded multiply had seeds that put consecutive ports into runs of
    /// 200.)
    #[test]
    fn structured_values_spread_over_the_table() {
        let shapes: [Vec<u32>; 3] = [
            (0..1000u32).map(|p| 10_000 + p).collect(),
            (0..1000u32).map(|v| v << 22).collect(),
            (0..1000u32).map(|v| v << 11).collect(),
        ];
        for seed in 0..64u64 {
            for values in &shapes {
                let keys = HashKeys::from_seed(seed);
                let mut branches = Branches::new();
                for (child, &value) in values.iter().enumerate() {
                    branches.insert_new(value, child as u32, keys);
                }
                let Branches::Table(table) = &branches else { panic!("a table") };
                let mask = table.slots.len() - 1;
                let (mut total_displacement, mut longest) = (0, 0);
                for (child, &value) in values.iter().enumerate() {
                    assert_eq!(branches.get(value), Some(child as u32));
                    let at = table.slots.iter().position(|&slot| slot == (value, child as u32)).unwrap();
                    let displacement = at.wrapping_sub(table.home(value)) & mask;
                    total_displacement += displacement;
                    longest = longest.max(displacement);
                }
                let mean = total_displacement as f64 / values.len() as f64;
                assert!(mean < 0.5 && longest < 24, "seed {seed}: mean {mean}, longest {longest}");
            }
        }
    }
}
