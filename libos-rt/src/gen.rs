//! Seeded task-set generator for property runs: random periods from a menu and a random split
//! of a target utilisation, reproducible from the seed on the host and in the libOS alike.

use crate::sched::{Task, PPM};
use alloc::vec::Vec;

/// A deterministic pseudo-random source (SplitMix64).
#[derive(Clone, Debug)]
pub struct Generator {
    state: u64,
}

impl Generator {
    pub const fn new(seed: u64) -> Self {
        Generator { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (0 if `bound` is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        self.next_u64() % bound
    }

    /// `task_count` tasks with periods drawn from `periods` (in whatever
    /// unit) and utilisations that split `utilisation_ppm` at random
    /// (weights 1..=1000, normalised). Budgets are rounded down, so the
    /// set's utilisation is at most the target, but at least one unit
    /// each. With `constrained`, each deadline lies at random between
    /// halfway from the budget to the period and the period; otherwise it
    /// is the period. Ids are positions. `periods` must not be empty or
    /// hold a zero.
    pub fn task_set(
        &mut self,
        utilisation_ppm: u64,
        task_count: usize,
        periods: &[u64],
        constrained: bool,
    ) -> Vec<Task> {
        let weights: Vec<u64> = (0..task_count).map(|_| 1 + self.below(1000)).collect();
        let total_weight: u64 = weights.iter().sum::<u64>().max(1);
        weights
            .iter()
            .enumerate()
            .map(|(id, &weight)| {
                let period = periods[self.below(periods.len() as u64) as usize];
                let share_ppm = utilisation_ppm as u128 * weight as u128 / total_weight as u128;
                let budget = ((period as u128 * share_ppm / PPM as u128) as u64).clamp(1, period);
                let deadline = if constrained {
                    let low = budget + (period - budget).div_ceil(2);
                    low + self.below(period - low + 1)
                } else {
                    period
                };
                Task::new(id, period, budget, deadline)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::utilisation_ppm;

    #[test]
    fn same_seed_same_sets_and_valid_tasks() {
        let periods = [4, 5, 6, 10, 12, 15, 20, 30, 60];
        let mut a = Generator::new(42);
        let mut b = Generator::new(42);
        for round in 0..200 {
            let target_ppm = 500_000 + round * 2_500;
            let set = a.task_set(target_ppm, 1 + round as usize % 6, &periods, round % 3 == 0);
            assert_eq!(set, b.task_set(target_ppm, 1 + round as usize % 6, &periods, round % 3 == 0));
            for task in &set {
                assert!(task.is_valid(), "{task:?}");
                assert!(periods.contains(&task.period_ticks));
                assert!(task.budget_ticks >= 1 && task.budget_ticks <= task.deadline_ticks, "{task:?}");
            }
        }
        assert_ne!(Generator::new(1).next_u64(), Generator::new(2).next_u64());
    }

    #[test]
    fn utilisation_is_close_to_the_target_from_below_when_budgets_are_fine_grained() {
        // Periods in microseconds: rounding down loses under 1e-3 per task.
        let periods = [4_000, 5_000, 6_000, 10_000, 60_000];
        let mut generator = Generator::new(7);
        for target_ppm in [500_000, 750_000, 1_000_000] {
            for count in 1..=8 {
                let set = generator.task_set(target_ppm, count, &periods, false);
                let actual_ppm = utilisation_ppm(&set);
                assert!(actual_ppm <= target_ppm + count as u64, "{actual_ppm} > {target_ppm}");
                assert!(actual_ppm + 2_000 * count as u64 >= target_ppm, "{actual_ppm} far below {target_ppm}");
            }
        }
    }
}
