//! The reverse map: every (frame, environment, page) a frame is mapped at
//! with `map`, so freeing or revoking a frame finds its mappings without
//! scanning every software TLB.
//!
//! Invariant kept by the kernel: an entry exists exactly while the page is
//! in the environment's TLB slots or its software TLB (or both) naming the
//! frame. Each entry is charged to the environment's kernel-memory budget,
//! so the map is bounded by the budgets (and, per environment, by its slots
//! plus its software TLB).

use alloc::vec::Vec;
use foldhash::fast::FixedState;
use hashbrown::HashMap;

/// An environment's index in the kernel's table.
pub type EnvIndex = usize;

/// The mappings of one frame: the first inline (most frames are mapped
/// once, and mapping must not cost a heap allocation), the rest beside it.
struct Mappings {
    first: (EnvIndex, u64),
    more: Vec<(EnvIndex, u64)>,
}

impl Mappings {
    fn contains(&self, at: (EnvIndex, u64)) -> bool {
        self.first == at || self.more.contains(&at)
    }

    fn iter(&self) -> impl Iterator<Item = (EnvIndex, u64)> + '_ {
        core::iter::once(self.first).chain(self.more.iter().copied())
    }

    /// Remove `at`; returns (removed, now empty).
    fn remove(&mut self, at: (EnvIndex, u64)) -> (bool, bool) {
        if self.first == at {
            match self.more.pop() {
                Some(last) => {
                    self.first = last;
                    (true, false)
                }
                None => (true, true),
            }
        } else if let Some(i) = self.more.iter().position(|&m| m == at) {
            self.more.swap_remove(i);
            (true, false)
        } else {
            (false, false)
        }
    }
}

pub struct ReverseMap {
    /// Mappings by frame, hashed under a seed (per boot in the kernel), so
    /// an environment naming the frames it allocates cannot aim them at one
    /// bucket.
    entries: HashMap<u64, Mappings, FixedState>,
    /// Number of (frame, env, page) entries.
    len: usize,
    /// Entries by environment index (dense; O(1) on the map path).
    per_env: Vec<u64>,
    seed: u64,
}

impl Default for ReverseMap {
    fn default() -> Self {
        Self::with_seed(0)
    }
}

impl ReverseMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty map whose hash is keyed with `seed`.
    pub fn with_seed(seed: u64) -> Self {
        ReverseMap { entries: HashMap::with_hasher(FixedState::with_seed(seed)), len: 0, per_env: Vec::new(), seed }
    }

    /// The same map, emptied of storage (its seed kept).
    pub fn emptied(&self) -> Self {
        Self::with_seed(self.seed)
    }

    /// Record that env `index` maps `frame_pa` at `va`; false if it was
    /// already recorded.
    pub fn insert(&mut self, frame_pa: u64, index: EnvIndex, va: u64) -> bool {
        let at = (index, va);
        match self.entries.get_mut(&frame_pa) {
            Some(mappings) if mappings.contains(at) => return false,
            Some(mappings) => mappings.more.push(at),
            None => {
                self.entries.insert(frame_pa, Mappings { first: at, more: Vec::new() });
            }
        }
        self.len += 1;
        if self.per_env.len() <= index {
            self.per_env.resize(index + 1, 0);
        }
        self.per_env[index] += 1;
        true
    }

    /// Forget one mapping; false if it was not recorded.
    pub fn remove(&mut self, frame_pa: u64, index: EnvIndex, va: u64) -> bool {
        let Some(mappings) = self.entries.get_mut(&frame_pa) else { return false };
        let (removed, empty) = mappings.remove((index, va));
        if empty {
            self.entries.remove(&frame_pa);
        }
        if removed {
            self.len -= 1;
            self.uncount(index, 1);
        }
        removed
    }

    fn uncount(&mut self, index: EnvIndex, by: u64) {
        if let Some(count) = self.per_env.get_mut(index) {
            *count -= by;
        }
    }

    /// Remove and return every mapping of `frame_pa`, as (env, va), in order.
    pub fn take_frame(&mut self, frame_pa: u64) -> Vec<(EnvIndex, u64)> {
        let Some(mappings) = self.entries.remove(&frame_pa) else { return Vec::new() };
        let mut found: Vec<(EnvIndex, u64)> = mappings.iter().collect();
        found.sort_unstable();
        self.len -= found.len();
        for &(index, _) in &found {
            self.uncount(index, 1);
        }
        found
    }

    /// Remove and return every page at which env `index` maps `frame_pa`, in order.
    pub fn take_env_frame(&mut self, frame_pa: u64, index: EnvIndex) -> Vec<u64> {
        let Some(mappings) = self.entries.get_mut(&frame_pa) else { return Vec::new() };
        let mut found: Vec<u64> = mappings.iter().filter(|&(i, _)| i == index).map(|(_, va)| va).collect();
        let mut empty = false;
        for &va in &found {
            empty = mappings.remove((index, va)).1;
        }
        if empty {
            self.entries.remove(&frame_pa);
        }
        found.sort_unstable();
        self.len -= found.len();
        self.uncount(index, found.len() as u64);
        found
    }

    /// Forget every mapping env `index` holds; returns how many.
    pub fn remove_env(&mut self, index: EnvIndex) -> u64 {
        let count = self.count_of(index);
        if count > 0 {
            self.entries.retain(|_, mappings| {
                let mine: Vec<(EnvIndex, u64)> = mappings.iter().filter(|&(i, _)| i == index).collect();
                let mut empty = false;
                for at in mine {
                    empty = mappings.remove(at).1;
                }
                !empty
            });
            self.len -= count as usize;
            self.per_env[index] = 0;
        }
        count
    }

    /// Mappings env `index` holds.
    pub fn count_of(&self, index: EnvIndex) -> u64 {
        self.per_env.get(index).copied().unwrap_or(0)
    }

    /// Mappings of every environment.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    #[test]
    fn counts_follow_inserts_and_removals() {
        let mut map = ReverseMap::new();
        assert!(map.insert(0x1000, 0, 0x10_0000));
        assert!(!map.insert(0x1000, 0, 0x10_0000), "recorded once");
        assert!(map.insert(0x1000, 1, 0x20_0000));
        assert!(map.insert(0x2000, 0, 0x11_0000));
        assert_eq!((map.count_of(0), map.count_of(1), map.len()), (2, 1, 3));
        assert!(map.remove(0x2000, 0, 0x11_0000));
        assert!(!map.remove(0x2000, 0, 0x11_0000));
        assert_eq!(map.count_of(0), 1);
    }

    #[test]
    fn a_frames_mappings_are_taken_together() {
        let mut map = ReverseMap::new();
        map.insert(0x1000, 0, 0xa000);
        map.insert(0x1000, 2, 0xb000);
        map.insert(0x3000, 2, 0xc000);
        assert_eq!(map.take_frame(0x1000), vec![(0, 0xa000), (2, 0xb000)]);
        assert_eq!((map.count_of(0), map.count_of(2), map.len()), (0, 1, 1));
        assert_eq!(map.take_frame(0x1000), vec![]);
    }

    #[test]
    fn an_environments_mappings_go_with_it() {
        let mut map = ReverseMap::new();
        for n in 0..100 {
            map.insert(0x1000 * n, 3, 0x40_0000 + n * 0x1000);
            map.insert(0x1000 * n, 4, 0x40_0000 + n * 0x1000);
        }
        assert_eq!(map.remove_env(3), 100);
        assert_eq!(map.count_of(3), 0);
        assert_eq!(map.count_of(4), 100);
        assert_eq!(map.len(), 100);
    }
}
