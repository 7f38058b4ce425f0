//! The time-slot vector: the CPU as a linear vector of fixed-length slots,
//! each owned by at most one environment, allocated by position with a
//! generation-carrying key so a stale key is detected.
//!
//! Unallocated slots are not wasted: the kernel runs them round-robin over
//! the runnable environments (see [`SlotVector::next_unowned_runner`]).

use alloc::vec;
use alloc::vec::Vec;

/// Why a slot operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotVecError {
    /// The position is outside the vector.
    OutOfRange,
    /// The slot (or every slot, for "any") is owned already.
    Taken,
    /// The key does not name a slot the caller owns now (wrong owner or a
    /// generation from before the slot was freed).
    BadKey,
}

/// A linear vector of time slots.
pub struct SlotVector {
    owner: Vec<Option<usize>>,
    generation: Vec<u32>,
    rr_cursor: usize,
}

impl SlotVector {
    /// A vector of `len` unowned slots.
    pub fn new(len: usize) -> Self {
        SlotVector { owner: vec![None; len], generation: vec![0; len], rr_cursor: 0 }
    }

    pub fn len(&self) -> usize {
        self.owner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.owner.is_empty()
    }

    /// The owner of slot `position`.
    pub fn owner(&self, position: usize) -> Option<usize> {
        self.owner.get(position).copied().flatten()
    }

    fn key(&self, position: usize) -> u64 {
        (self.generation[position] as u64) << 32 | position as u64
    }

    /// Give slot `position` (or the first free one) to `env`; returns its key.
    pub fn alloc(&mut self, position: Option<usize>, env: usize) -> Result<u64, SlotVecError> {
        let position = match position {
            Some(p) if p >= self.owner.len() => return Err(SlotVecError::OutOfRange),
            Some(p) if self.owner[p].is_some() => return Err(SlotVecError::Taken),
            Some(p) => p,
            None => self.owner.iter().position(|o| o.is_none()).ok_or(SlotVecError::Taken)?,
        };
        self.owner[position] = Some(env);
        Ok(self.key(position))
    }

    /// Give `count` slots to `env`, spread evenly over the free ones.
    pub fn alloc_spread(&mut self, count: usize, env: usize) -> usize {
        let free: Vec<usize> = (0..self.owner.len()).filter(|&p| self.owner[p].is_none()).collect();
        if free.is_empty() || count == 0 {
            return 0;
        }
        let take = count.min(free.len());
        for i in 0..take {
            let position = free[i * free.len() / take];
            self.owner[position] = Some(env);
        }
        take
    }

    /// Free the slot a key names, if `env` owns it under that generation.
    pub fn free(&mut self, key: u64, env: usize) -> Result<(), SlotVecError> {
        let position = (key & 0xffff_ffff) as usize;
        let generation = (key >> 32) as u32;
        if position >= self.owner.len() || self.generation[position] != generation || self.owner[position] != Some(env)
        {
            return Err(SlotVecError::BadKey);
        }
        self.owner[position] = None;
        self.generation[position] = self.generation[position].wrapping_add(1);
        Ok(())
    }

    /// Free every slot `env` owns (it ended).
    pub fn release_env(&mut self, env: usize) {
        for position in 0..self.owner.len() {
            if self.owner[position] == Some(env) {
                self.owner[position] = None;
                self.generation[position] = self.generation[position].wrapping_add(1);
            }
        }
    }

    /// How many slots `env` owns.
    pub fn owned_by(&self, env: usize) -> usize {
        self.owner.iter().filter(|o| **o == Some(env)).count()
    }

    /// Who runs an unowned slot (or an owned one whose owner cannot run):
    /// the next runnable environment in round-robin order.
    pub fn next_unowned_runner(&mut self, env_count: usize, runnable: impl Fn(usize) -> bool) -> Option<usize> {
        for step in 1..=env_count {
            let candidate = (self.rr_cursor + step) % env_count.max(1);
            if runnable(candidate) {
                self.rr_cursor = candidate;
                return Some(candidate);
            }
        }
        None
    }
}

/// Shorten a slot by the penalty owed: returns (slot length to run, penalty
/// still owed). At least `min_ticks` of the slot always runs.
pub fn apply_penalty(slot_ticks: u64, penalty_ticks: u64, min_ticks: u64) -> (u64, u64) {
    let usable = slot_ticks.saturating_sub(min_ticks);
    let taken = penalty_ticks.min(usable);
    (slot_ticks - taken, penalty_ticks - taken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_by_position_and_any() {
        let mut v = SlotVector::new(4);
        let k = v.alloc(Some(2), 7).unwrap();
        assert_eq!(k & 0xffff_ffff, 2);
        assert_eq!(v.owner(2), Some(7));
        assert_eq!(v.alloc(Some(2), 8), Err(SlotVecError::Taken));
        assert_eq!(v.alloc(Some(9), 8), Err(SlotVecError::OutOfRange));
        let any = v.alloc(None, 8).unwrap();
        assert_eq!(any & 0xffff_ffff, 0);
        assert_eq!(v.owned_by(8), 1);
    }

    #[test]
    fn stale_and_foreign_keys_are_refused() {
        let mut v = SlotVector::new(2);
        let k = v.alloc(Some(1), 3).unwrap();
        assert_eq!(v.free(k, 4), Err(SlotVecError::BadKey));
        assert_eq!(v.free(k, 3), Ok(()));
        assert_eq!(v.free(k, 3), Err(SlotVecError::BadKey), "double free");
        let k2 = v.alloc(Some(1), 3).unwrap();
        assert_ne!(k, k2, "a new generation");
        assert_eq!(v.free(k, 3), Err(SlotVecError::BadKey), "stale key");
        assert_eq!(v.free(u64::MAX, 3), Err(SlotVecError::BadKey));
    }

    #[test]
    fn full_vector_refuses_any() {
        let mut v = SlotVector::new(2);
        v.alloc(None, 1).unwrap();
        v.alloc(None, 1).unwrap();
        assert_eq!(v.alloc(None, 2), Err(SlotVecError::Taken));
        v.release_env(1);
        assert_eq!(v.owned_by(1), 0);
        assert!(v.alloc(None, 2).is_ok());
    }

    #[test]
    fn spread_allocation_interleaves() {
        let mut v = SlotVector::new(6);
        assert_eq!(v.alloc_spread(3, 0), 3);
        assert_eq!(v.alloc_spread(3, 1), 3);
        let owners: Vec<_> = (0..6).map(|p| v.owner(p).unwrap()).collect();
        assert_eq!(owners, [0, 1, 0, 1, 0, 1]);
        assert_eq!(v.alloc_spread(1, 2), 0, "nothing free");
    }

    #[test]
    fn unowned_slots_go_round_robin_to_runnable_envs() {
        let mut v = SlotVector::new(1);
        let runnable = |e: usize| e != 1;
        let picks: Vec<_> = (0..4).map(|_| v.next_unowned_runner(3, runnable).unwrap()).collect();
        assert_eq!(picks, [2, 0, 2, 0]);
        assert_eq!(v.next_unowned_runner(3, |_| false), None);
    }

    #[test]
    fn penalties_shorten_slots_but_leave_a_minimum() {
        assert_eq!(apply_penalty(1000, 0, 100), (1000, 0));
        assert_eq!(apply_penalty(1000, 300, 100), (700, 0));
        assert_eq!(apply_penalty(1000, 2500, 100), (100, 1600));
    }
}
