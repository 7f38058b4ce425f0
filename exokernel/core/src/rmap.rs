//! The reverse map: every (frame, environment, page) a frame is mapped at
//! with `map`, so freeing or revoking a frame finds its mappings without
//! scanning every software TLB.
//!
//! Invariant kept by the kernel: an entry exists exactly while the page is
//! in the environment's TLB slots or its software TLB (or both) naming the
//! frame. Each entry is charged to the environment's kernel-memory budget,
//! so the map is bounded by the budgets (and, per environment, by its slots
//! plus its software TLB).

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

/// An environment's index in the kernel's table.
pub type EnvIndex = usize;

#[derive(Default)]
pub struct ReverseMap {
    /// Ordered by frame, so one frame's mappings are one range.
    entries: BTreeSet<(u64, EnvIndex, u64)>,
    /// Entries by environment index (dense; O(1) on the map path).
    per_env: Vec<u64>,
}

impl ReverseMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Record that env `index` maps `frame_pa` at `va`; false if it was
    /// already recorded.
    pub fn insert(&mut self, frame_pa: u64, index: EnvIndex, va: u64) -> bool {
        let new = self.entries.insert((frame_pa, index, va));
        if new {
            if self.per_env.len() <= index {
                self.per_env.resize(index + 1, 0);
            }
            self.per_env[index] += 1;
        }
        new
    }

    /// Forget one mapping; false if it was not recorded.
    pub fn remove(&mut self, frame_pa: u64, index: EnvIndex, va: u64) -> bool {
        let removed = self.entries.remove(&(frame_pa, index, va));
        if removed {
            self.uncount(index, 1);
        }
        removed
    }

    fn uncount(&mut self, index: EnvIndex, by: u64) {
        if let Some(count) = self.per_env.get_mut(index) {
            *count -= by;
        }
    }

    /// Remove and return every mapping of `frame_pa`, as (env, va).
    pub fn take_frame(&mut self, frame_pa: u64) -> Vec<(EnvIndex, u64)> {
        let found: Vec<(u64, EnvIndex, u64)> =
            self.entries.range((frame_pa, 0, 0)..=(frame_pa, EnvIndex::MAX, u64::MAX)).copied().collect();
        for entry in &found {
            self.entries.remove(entry);
            self.uncount(entry.1, 1);
        }
        found.into_iter().map(|(_, index, va)| (index, va)).collect()
    }

    /// Remove and return every page at which env `index` maps `frame_pa`.
    pub fn take_env_frame(&mut self, frame_pa: u64, index: EnvIndex) -> Vec<u64> {
        let found: Vec<(u64, EnvIndex, u64)> =
            self.entries.range((frame_pa, index, 0)..=(frame_pa, index, u64::MAX)).copied().collect();
        for entry in &found {
            self.entries.remove(entry);
        }
        self.uncount(index, found.len() as u64);
        found.into_iter().map(|(_, _, va)| va).collect()
    }

    /// Forget every mapping env `index` holds; returns how many.
    pub fn remove_env(&mut self, index: EnvIndex) -> u64 {
        let count = self.count_of(index);
        if count > 0 {
            self.entries.retain(|&(_, i, _)| i != index);
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
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
