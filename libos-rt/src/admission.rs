//! Overhead-aware admission: the task set inflated by the overheads the libOS measured, tested
//! against the processor time its slots guarantee (response-time analysis for rate-monotonic, the
//! processor-demand test for EDF), with the margin of the tightest task or point.
//!
//! The plain tests in [`crate::sched`] assume the task set owns an ideal
//! processor that preempts at any tick. libos-rt runs on a real kernel:
//!
//! * **Per-job overheads** ([`Overheads`]). A job's budget is burned in work
//!   units of `work_unit_ticks`; before every unit, and once more when the
//!   job completes, the loop reads the clock and takes a scheduler decision
//!   (`decision_ticks`, measured at boot). A job of budget `C` therefore
//!   costs `C' = C + excess + (ceil(C / w) + 2) * decision`: one decision per
//!   unit, one when it is released and picked, one when the job it preempted
//!   resumes. `excess` is how much longer than asked the calibrated work
//!   loop ran at its check (`work_excess_ppm`), so budgets are never
//!   under-counted ([`inflate`]).
//! * **Blocking.** Preemption happens between work units: a job released
//!   while another runs waits for that unit and the decision after it,
//!   `B = w * (1 + excess) + decision` ([`Overheads::blocking_ticks`]).
//!   Both tests charge `B` to every task.
//! * **Supply** ([`Supply`]). The libOS runs only in its slots of the
//!   kernel's slot vector. Each slot it owns gives at least `Q - tick`
//!   (slot length less the slot-end upcall, timer interrupt and kernel
//!   entry and exit it measured); every slot boundary may be stretched by
//!   the save bound `S` another environment can use and by a context
//!   switch. Owning `k` of `N` slots guarantees `Θ = k (Q - tick)` in every
//!   cycle of at most `Π = N (Q + S + switch)`, at fixed positions, so in
//!   any window of length `t` at least
//!   `sbf(t) = floor(t / Π) Θ + max(0, t mod Π - (Π - Θ))` (the supply
//!   bound function of a periodic resource whose blackout is `Π - Θ`).
//!   Owning every slot, the cycle is one slot: `Π = Q`, `Θ = Q - tick`.
//!
//! Rate-monotonic ([`rm_admit`]): the response time of task `i` is the
//! least fixed point of `R = sbf⁻¹(B + C'_i + Σ_{j ∈ hp(i)} ceil(R / T_j) C'_j)`
//! (response-time analysis on a reduced supply); admitted if `R_i <= D_i`
//! for every task, the margin being the least `D_i - R_i`.
//!
//! EDF ([`edf_admit`]): admitted if `dbf'(L) + B <= sbf(L)` at every
//! absolute deadline `L` up to a bound past which the linear bounds
//! `dbf'(L) <= U' L + Σ U'_i (T_i - D_i)` and `sbf(L) >= (Θ/Π)(L - (Π - Θ))`
//! prove it (with a dedicated processor also the hyperperiod plus the
//! longest deadline); the margin is the least `sbf(L) - dbf'(L) - B`.
//!
//! Everything is integer arithmetic in ticks, rounded against the task set.

use crate::sched::{check_tasks, hyperperiod_ticks, Task, PPM};
use alloc::vec::Vec;

/// The overheads a job pays, measured by the program at boot (ticks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overheads {
    /// One scheduler decision with its clock reads (release and drop
    /// bookkeeping, the policy's pick, the accounting after a unit).
    pub decision_ticks: u64,
    /// Work-unit length: the preemption granularity. Zero models
    /// preemption at any tick with no decisions (the ideal processor).
    pub work_unit_ticks: u64,
    /// How much longer than asked the work loop ran at its check, in parts
    /// per million (zero if it was not slower).
    pub work_excess_ppm: u64,
}

impl Overheads {
    /// The ideal processor: no overhead, preemption at any tick.
    pub const NONE: Overheads = Overheads { decision_ticks: 0, work_unit_ticks: 0, work_excess_ppm: 0 };

    /// `ticks` plus the work loop's excess, rounded up.
    fn with_excess(&self, ticks: u64) -> u64 {
        ticks.saturating_add(mul_div_ceil(ticks, self.work_excess_ppm, PPM))
    }

    /// The longest a released job can wait for the processor because of
    /// another job's work unit: that unit and the decision after it.
    pub fn blocking_ticks(&self) -> u64 {
        if self.work_unit_ticks == 0 {
            return 0;
        }
        self.with_excess(self.work_unit_ticks).saturating_add(self.decision_ticks)
    }

    /// What one job of budget `budget_ticks` costs in all (see the module notes).
    pub fn job_cost_ticks(&self, budget_ticks: u64) -> u64 {
        if budget_ticks == 0 {
            return 0;
        }
        let decisions = match self.work_unit_ticks {
            0 => 0,
            unit => budget_ticks.div_ceil(unit).saturating_add(2),
        };
        self.with_excess(budget_ticks).saturating_add(decisions.saturating_mul(self.decision_ticks))
    }
}

/// The same tasks with every budget replaced by its cost under `overheads`.
pub fn inflate(tasks: &[Task], overheads: &Overheads) -> Vec<Task> {
    tasks.iter().map(|task| Task { budget_ticks: overheads.job_cost_ticks(task.budget_ticks), ..*task }).collect()
}

/// What the libOS's slots of the kernel's slot vector give it, and what
/// they cost (ticks). See [`Supply::from_slots`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotShare {
    /// Slots the libOS owns, and the vector's length.
    pub owned: u64,
    pub vector_len: u64,
    /// One slot's length, and the end-of-slot save bound another
    /// environment may run past its slot.
    pub slot_ticks: u64,
    pub save_bound_ticks: u64,
    /// Taken from each owned slot: timer interrupt, kernel entry and exit,
    /// the slot-end upcall and its handler.
    pub slot_overhead_ticks: u64,
    /// Added to each slot boundary where the CPU changes hands: the
    /// context switch, and our own upcall and `yield` at our slot's end.
    pub switch_ticks: u64,
}

/// A guaranteed processor supply: at least `guaranteed_ticks` in every
/// cycle of at most `cycle_ticks`, at fixed positions in the cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Supply {
    pub cycle_ticks: u64,
    pub guaranteed_ticks: u64,
}

impl Supply {
    /// The whole processor, all the time: `sbf(t) = t`.
    pub const DEDICATED: Supply = Supply { cycle_ticks: 1, guaranteed_ticks: 1 };

    /// The supply of a slot share (module notes), or `None` if it
    /// guarantees nothing (no slot owned, or overheads eat a whole slot).
    pub fn from_slots(share: &SlotShare) -> Option<Supply> {
        if share.owned == 0 || share.vector_len == 0 || share.slot_overhead_ticks >= share.slot_ticks {
            return None;
        }
        let useful_ticks = share.slot_ticks - share.slot_overhead_ticks;
        if share.owned >= share.vector_len {
            return Some(Supply { cycle_ticks: share.slot_ticks, guaranteed_ticks: useful_ticks });
        }
        let boundary_ticks = share.slot_ticks.checked_add(share.save_bound_ticks)?.checked_add(share.switch_ticks)?;
        Some(Supply {
            cycle_ticks: share.vector_len.checked_mul(boundary_ticks)?,
            guaranteed_ticks: share.owned.checked_mul(useful_ticks)?,
        })
    }

    /// The longest stretch with no supply: `Π - Θ`.
    pub fn blackout_ticks(&self) -> u64 {
        self.cycle_ticks - self.guaranteed_ticks
    }

    /// The guaranteed share of the processor, parts per million (rounded down).
    pub fn share_ppm(&self) -> u64 {
        (self.guaranteed_ticks as u128 * PPM as u128 / self.cycle_ticks as u128) as u64
    }

    /// The supply bound function: the least processor time any window of
    /// `window_ticks` receives.
    pub fn sbf(&self, window_ticks: u64) -> u64 {
        let cycles = window_ticks / self.cycle_ticks;
        let rest = window_ticks % self.cycle_ticks;
        cycles.saturating_mul(self.guaranteed_ticks).saturating_add(rest.saturating_sub(self.blackout_ticks()))
    }

    /// The shortest window guaranteed to receive `demand_ticks`: the least
    /// `t` with `sbf(t) >= demand_ticks` (saturating).
    pub fn time_to_supply(&self, demand_ticks: u64) -> u64 {
        if demand_ticks == 0 {
            return 0;
        }
        let cycles = (demand_ticks - 1) / self.guaranteed_ticks;
        let rest = demand_ticks - cycles * self.guaranteed_ticks;
        cycles.saturating_mul(self.cycle_ticks).saturating_add(self.blackout_ticks()).saturating_add(rest)
    }
}

/// Which test decided, and where the margin was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tightest {
    /// Rate-monotonic: the task (table index) with the least slack, and
    /// its response time (for a refused task, how far the analysis got).
    Task { index: usize, response_ticks: u64 },
    /// EDF: the absolute deadline with the least headroom.
    Point { at_ticks: u64 },
    /// Nothing to test (no tasks).
    Nothing,
}

/// Why a set was refused before any margin could be computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A task breaks the model.
    InvalidTask,
    /// The inflated utilisation is at or above the guaranteed share (or
    /// the bound on the points to test does not fit).
    Overloaded,
    /// More than [`MAX_DBF_POINTS`] deadlines to test.
    TooManyPoints,
    /// The libOS's slots guarantee it no processor time.
    NoSupply,
}

/// The answer of an admission test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub admitted: bool,
    /// The least slack (RM: `D - R`) or headroom (EDF: `sbf - dbf - B`),
    /// in ticks; negative when refused by it.
    pub margin_ticks: i64,
    pub tightest: Tightest,
    /// Set when the test could not run to a margin.
    pub refusal: Option<Refusal>,
}

impl Verdict {
    /// Refused before any margin: `margin_ticks` is `i64::MIN`.
    pub const fn refused(refusal: Refusal) -> Verdict {
        Verdict { admitted: false, margin_ticks: i64::MIN, tightest: Tightest::Nothing, refusal: Some(refusal) }
    }
}

/// Most absolute deadlines the EDF test examines before it gives up (and refuses).
pub const MAX_DBF_POINTS: u64 = 200_000;

fn signed(a: u64, b: u64) -> i64 {
    (a as i128 - b as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// `a * b / c`, rounded up (saturating; `c` of zero counts as one).
fn mul_div_ceil(a: u64, b: u64, c: u64) -> u64 {
    (a as u128 * b as u128).div_ceil(c.max(1) as u128).min(u64::MAX as u128) as u64
}

/// Whether `tasks[a]` outranks `tasks[b]` under rate-monotonic (the order
/// [`crate::sched::RateMonotonic`] uses).
fn rm_outranks(tasks: &[Task], a: usize, b: usize) -> bool {
    (tasks[a].period_ticks, tasks[a].id, a) < (tasks[b].period_ticks, tasks[b].id, b)
}

/// Response time of `tasks[index]` under rate-monotonic on `supply`, with
/// `blocking_ticks` charged once: `Ok(R)` if it converges by the task's
/// deadline, else `Err(t)` with the first window that passed it. `tasks`
/// are already inflated.
pub fn rm_response_ticks(tasks: &[Task], index: usize, supply: &Supply, blocking_ticks: u64) -> Result<u64, u64> {
    let task = tasks[index];
    let higher: Vec<&Task> =
        (0..tasks.len()).filter(|&other| rm_outranks(tasks, other, index)).map(|other| &tasks[other]).collect();
    let demand_ticks = |window_ticks: u64| {
        higher.iter().fold(blocking_ticks.saturating_add(task.budget_ticks), |sum, other| {
            sum.saturating_add(window_ticks.div_ceil(other.period_ticks).saturating_mul(other.budget_ticks))
        })
    };
    // Start from one job of each: no fixed point lies below it.
    let mut window_ticks = supply.time_to_supply(demand_ticks(1));
    loop {
        if window_ticks > task.deadline_ticks {
            return Err(window_ticks);
        }
        let next_ticks = supply.time_to_supply(demand_ticks(window_ticks));
        if next_ticks <= window_ticks {
            return Ok(window_ticks);
        }
        window_ticks = next_ticks;
    }
}

/// Rate-monotonic admission of `tasks` (budgets as asked) under
/// `overheads` on `supply`: every task's response time within its deadline.
pub fn rm_admit(tasks: &[Task], overheads: &Overheads, supply: &Supply) -> Verdict {
    if check_tasks(tasks).is_err() {
        return Verdict::refused(Refusal::InvalidTask);
    }
    let inflated = inflate(tasks, overheads);
    let blocking_ticks = overheads.blocking_ticks();
    let mut verdict = Verdict { admitted: true, margin_ticks: i64::MAX, tightest: Tightest::Nothing, refusal: None };
    for (index, task) in inflated.iter().enumerate() {
        let (admitted, response_ticks) = match rm_response_ticks(&inflated, index, supply, blocking_ticks) {
            Ok(ticks) => (true, ticks),
            Err(ticks) => (false, ticks),
        };
        let margin_ticks = signed(task.deadline_ticks, response_ticks);
        verdict.admitted &= admitted;
        if margin_ticks < verdict.margin_ticks {
            verdict.margin_ticks = margin_ticks;
            verdict.tightest = Tightest::Task { index, response_ticks };
        }
    }
    if inflated.is_empty() {
        verdict.margin_ticks = 0;
    }
    verdict
}

/// The demand bound function: execution of the jobs of `tasks` released
/// and due within any window of `window_ticks`.
pub fn dbf_ticks(tasks: &[Task], window_ticks: u64) -> u64 {
    tasks.iter().fold(0u64, |sum, task| {
        if window_ticks < task.deadline_ticks {
            return sum;
        }
        let jobs = (window_ticks - task.deadline_ticks) / task.period_ticks + 1;
        sum.saturating_add(jobs.saturating_mul(task.budget_ticks))
    })
}

/// Fixed-point scale for the EDF test's bound on the points to check.
const SCALE: u128 = 1 << 32;

/// The last absolute deadline the EDF test must check, or `None` if no
/// bound exists (inflated utilisation at or above the guaranteed share).
fn dbf_horizon_ticks(tasks: &[Task], supply: &Supply, blocking_ticks: u64) -> Option<u64> {
    let max_deadline_ticks = tasks.iter().map(|task| task.deadline_ticks).max().unwrap_or(0);
    // U' rounded up, and the slope of the supply's linear bound rounded down.
    let mut utilisation: u128 = 0;
    let mut offset: u128 = 0;
    for task in tasks {
        let period = task.period_ticks as u128;
        utilisation += (task.budget_ticks as u128 * SCALE).div_ceil(period);
        offset +=
            (task.budget_ticks as u128 * (task.period_ticks - task.deadline_ticks) as u128 * SCALE).div_ceil(period);
    }
    let slope = supply.guaranteed_ticks as u128 * SCALE / supply.cycle_ticks as u128;
    let linear = (slope > utilisation).then(|| {
        // α (L - Δ) > U' L + Σ U'_i (T_i - D_i) + B for every L past this.
        let blackout = (supply.guaranteed_ticks as u128 * supply.blackout_ticks() as u128 * SCALE)
            .div_ceil(supply.cycle_ticks as u128);
        let numerator = offset + blocking_ticks as u128 * SCALE + blackout;
        numerator.div_ceil(slope - utilisation).max(max_deadline_ticks as u128)
    });
    let dedicated = supply.blackout_ticks() == 0 && crate::sched::utilisation_at_most_one(tasks);
    let by_hyperperiod = dedicated
        .then(|| hyperperiod_ticks(tasks).and_then(|h| h.checked_add(max_deadline_ticks)))
        .flatten()
        .map(u128::from);
    let bound = match (linear, by_hyperperiod) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    u64::try_from(bound).ok()
}

/// EDF admission of `tasks` (budgets as asked) under `overheads` on
/// `supply`: the processor-demand test on the inflated set.
pub fn edf_admit(tasks: &[Task], overheads: &Overheads, supply: &Supply) -> Verdict {
    if check_tasks(tasks).is_err() {
        return Verdict::refused(Refusal::InvalidTask);
    }
    if tasks.is_empty() {
        return Verdict { admitted: true, margin_ticks: 0, tightest: Tightest::Nothing, refusal: None };
    }
    let inflated = inflate(tasks, overheads);
    let blocking_ticks = overheads.blocking_ticks();
    let Some(horizon_ticks) = dbf_horizon_ticks(&inflated, supply, blocking_ticks) else {
        return Verdict::refused(Refusal::Overloaded);
    };
    // Count the points first, so a huge horizon is refused without the walk.
    let points = inflated.iter().fold(0u64, |sum, task| {
        let jobs = horizon_ticks.checked_sub(task.deadline_ticks).map_or(0, |rest| rest / task.period_ticks + 1);
        sum.saturating_add(jobs)
    });
    if points > MAX_DBF_POINTS {
        return Verdict::refused(Refusal::TooManyPoints);
    }
    let mut next_deadline: Vec<u64> = inflated.iter().map(|task| task.deadline_ticks).collect();
    let mut verdict =
        Verdict { admitted: true, margin_ticks: i64::MAX, tightest: Tightest::Point { at_ticks: 0 }, refusal: None };
    while let Some(at_ticks) = next_deadline.iter().copied().min().filter(|&at| at <= horizon_ticks) {
        for (deadline, task) in next_deadline.iter_mut().zip(&inflated) {
            if *deadline == at_ticks {
                *deadline = deadline.saturating_add(task.period_ticks);
            }
        }
        let demand_ticks = dbf_ticks(&inflated, at_ticks).saturating_add(blocking_ticks);
        let margin_ticks = signed(supply.sbf(at_ticks), demand_ticks);
        if margin_ticks < verdict.margin_ticks {
            verdict.margin_ticks = margin_ticks;
            verdict.tightest = Tightest::Point { at_ticks };
        }
        if margin_ticks < 0 {
            verdict.admitted = false;
            break;
        }
    }
    verdict
}

/// Admission under the policy `name` (`"edf"` or `"rm"`); `None` for another name.
pub fn admit(name: &str, tasks: &[Task], overheads: &Overheads, supply: &Supply) -> Option<Verdict> {
    match name {
        "edf" => Some(edf_admit(tasks, overheads, supply)),
        "rm" => Some(rm_admit(tasks, overheads, supply)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::{
        by_name, response_time_ticks, rm_bound_ppm, rm_schedulable_by_utilisation, simulate, utilisation_ppm,
    };
    use std::vec::Vec;

    fn task_set(pairs: &[(u64, u64)]) -> Vec<Task> {
        pairs.iter().enumerate().map(|(id, &(budget, period))| Task::implicit(id, period, budget)).collect()
    }

    fn ideal(name: &str, tasks: &[Task]) -> Verdict {
        admit(name, tasks, &Overheads::NONE, &Supply::DEDICATED).unwrap()
    }

    #[test]
    fn supply_bound_function_and_its_inverse() {
        // 2 of 4 slots of 10, save bound 2, switch 1, 1 lost per slot:
        // Θ = 2 * 9 = 18 in Π = 4 * 13 = 52; blackout 34.
        let share = SlotShare {
            owned: 2,
            vector_len: 4,
            slot_ticks: 10,
            save_bound_ticks: 2,
            slot_overhead_ticks: 1,
            switch_ticks: 1,
        };
        let supply = Supply::from_slots(&share).unwrap();
        assert_eq!(supply, Supply { cycle_ticks: 52, guaranteed_ticks: 18 });
        assert_eq!(supply.blackout_ticks(), 34);
        assert_eq!(supply.share_ppm(), 346_153);
        assert_eq!((supply.sbf(0), supply.sbf(34), supply.sbf(35), supply.sbf(52), supply.sbf(87)), (0, 0, 1, 18, 19));
        for demand in 0..200 {
            let window = supply.time_to_supply(demand);
            assert!(supply.sbf(window) >= demand, "demand {demand}");
            assert!(window == 0 || supply.sbf(window - 1) < demand, "demand {demand}: not the least");
        }
        // Owning every slot: the cycle is one slot.
        let all = Supply::from_slots(&SlotShare { owned: 4, ..share }).unwrap();
        assert_eq!(all, Supply { cycle_ticks: 10, guaranteed_ticks: 9 });
        assert_eq!(Supply::from_slots(&SlotShare { owned: 0, ..share }), None);
        assert_eq!(Supply::from_slots(&SlotShare { slot_overhead_ticks: 10, ..share }), None);
        assert_eq!(Supply::DEDICATED.sbf(12345), 12345);
        assert_eq!(Supply::DEDICATED.time_to_supply(12345), 12345);
    }

    #[test]
    fn overheads_inflate_budgets_and_block() {
        let overheads = Overheads { decision_ticks: 3, work_unit_ticks: 50, work_excess_ppm: 10_000 };
        // 120 ticks: 3 units, +2 decisions, +1% of 120 rounded up.
        assert_eq!(overheads.job_cost_ticks(120), 120 + 2 + 5 * 3);
        assert_eq!(overheads.job_cost_ticks(0), 0);
        assert_eq!(overheads.blocking_ticks(), 50 + 1 + 3);
        assert_eq!(Overheads::NONE.job_cost_ticks(120), 120);
        assert_eq!(Overheads::NONE.blocking_ticks(), 0);
        let tasks = task_set(&[(120, 1000)]);
        assert_eq!(inflate(&tasks, &overheads)[0].budget_ticks, 137);
        assert_eq!(inflate(&tasks, &overheads)[0].period_ticks, 1000);
    }

    #[test]
    fn rm_admits_by_response_time_a_set_above_the_liu_layland_bound() {
        // U = 1/4 + 2/6 + 3/12 = 0.833 > 0.780 (three tasks), yet
        // R = 1, 3, 10 against deadlines 4, 6, 12.
        let tasks = task_set(&[(1, 4), (2, 6), (3, 12)]);
        assert!(utilisation_ppm(&tasks) > rm_bound_ppm(3));
        assert!(!rm_schedulable_by_utilisation(&tasks));
        let verdict = ideal("rm", &tasks);
        assert!(verdict.admitted);
        assert_eq!(verdict.margin_ticks, 2);
        assert_eq!(verdict.tightest, Tightest::Task { index: 2, response_ticks: 10 });
        // The same answers as the plain analysis.
        for index in 0..3 {
            let plain = response_time_ticks(&tasks, index);
            assert_eq!(rm_response_ticks(&tasks, index, &Supply::DEDICATED, 0).ok(), plain);
        }
        // Harmonic periods reach U = 1 under RM.
        let harmonic = task_set(&[(1, 2), (2, 4)]);
        assert!(ideal("rm", &harmonic).admitted);
        assert_eq!(ideal("rm", &harmonic).margin_ticks, 0);
    }

    #[test]
    fn rm_refuses_what_misses_and_charges_blocking_and_supply() {
        let tasks = task_set(&[(2, 5), (4, 7)]);
        let verdict = ideal("rm", &tasks);
        assert!(!verdict.admitted);
        assert!(verdict.margin_ticks < 0);
        assert!(matches!(verdict.tightest, Tightest::Task { index: 1, .. }));
        // Response 10 of 12 on the whole processor; on half of it (one of
        // two slots of 4, nothing lost) the first task alone needs 5 of its 4.
        let light = task_set(&[(1, 4), (2, 6), (3, 12)]);
        let half = Supply::from_slots(&SlotShare {
            owned: 1,
            vector_len: 2,
            slot_ticks: 4,
            save_bound_ticks: 0,
            slot_overhead_ticks: 0,
            switch_ticks: 0,
        })
        .unwrap();
        assert!(!rm_admit(&light, &Overheads::NONE, &half).admitted);
        // Decisions without work units cost nothing; a work unit of one
        // tick blocks for one, and the last task's response grows to 11.
        let blocking = Overheads { decision_ticks: 1, work_unit_ticks: 0, work_excess_ppm: 0 };
        assert_eq!(blocking.blocking_ticks(), 0, "no work units, no blocking");
        let units = Overheads { decision_ticks: 0, work_unit_ticks: 1, work_excess_ppm: 0 };
        assert_eq!(rm_admit(&light, &units, &Supply::DEDICATED).margin_ticks, 1);
    }

    #[test]
    fn edf_admits_full_utilisation_on_a_dedicated_processor() {
        let tasks = task_set(&[(1, 2), (1, 3), (1, 6)]);
        assert_eq!(utilisation_ppm(&tasks), 1_000_001, "exactly 1, each term rounded up");
        let verdict = ideal("edf", &tasks);
        assert!(verdict.admitted);
        assert_eq!(verdict.margin_ticks, 0);
        // U = 2/4 + 3/6 = 1: EDF meets it, RM cannot (R2 = 7 > 6).
        let pair = task_set(&[(2, 4), (3, 6)]);
        assert!(ideal("edf", &pair).admitted);
        let verdict = ideal("rm", &pair);
        assert!(!verdict.admitted);
        assert_eq!(verdict.tightest, Tightest::Task { index: 1, response_ticks: 7 });
    }

    #[test]
    fn edf_at_full_utilisation_fails_once_overheads_are_added() {
        let tasks: Vec<Task> = task_set(&[(1, 2), (1, 3), (1, 6)])
            .iter()
            .map(|t| Task {
                budget_ticks: t.budget_ticks * 100,
                period_ticks: t.period_ticks * 100,
                deadline_ticks: t.deadline_ticks * 100,
                ..*t
            })
            .collect();
        assert!(ideal("edf", &tasks).admitted);
        let decisions = Overheads { decision_ticks: 1, work_unit_ticks: 25, work_excess_ppm: 0 };
        let verdict = edf_admit(&tasks, &decisions, &Supply::DEDICATED);
        assert!(!verdict.admitted);
        assert_eq!(verdict.refusal, Some(Refusal::Overloaded));
        // Losing one tick per slot of 1000 is enough too.
        let ticked = Supply { cycle_ticks: 1000, guaranteed_ticks: 999 };
        assert!(!edf_admit(&tasks, &Overheads::NONE, &ticked).admitted);
        // A lighter set survives both, with a positive margin.
        let light = task_set(&[(60, 200), (60, 300), (60, 600)]);
        let verdict = edf_admit(&light, &decisions, &ticked);
        assert!(verdict.admitted, "{verdict:?}");
        assert!(verdict.margin_ticks > 0);
    }

    #[test]
    fn edf_demand_test_with_constrained_deadlines_and_a_share() {
        // Both due by 4 and needing 6: refused at the point 4 whatever U.
        let crowded = [Task::new(0, 10, 3, 3), Task::new(1, 10, 3, 4)];
        let verdict = ideal("edf", &crowded);
        assert!(!verdict.admitted);
        assert_eq!(verdict.tightest, Tightest::Point { at_ticks: 4 });
        assert_eq!(verdict.margin_ticks, -2);
        assert_eq!(dbf_ticks(&crowded, 3), 3);
        assert_eq!(dbf_ticks(&crowded, 14), 12);
        // Half the processor in slots of 5: Π = 10, Θ = 5, blackout 5.
        let half = Supply { cycle_ticks: 10, guaranteed_ticks: 5 };
        let tasks = task_set(&[(1, 10), (2, 20)]);
        let verdict = edf_admit(&tasks, &Overheads::NONE, &half);
        assert!(verdict.admitted);
        // sbf(10) = 5 against 1, sbf(20) = 10 against 4: headroom 4 at 10.
        assert_eq!((verdict.margin_ticks, verdict.tightest), (4, Tightest::Point { at_ticks: 10 }));
        assert!(!edf_admit(&task_set(&[(5, 10)]), &Overheads::NONE, &half).admitted);
    }

    /// Under an ideal model the new tests agree with the plain exact tests
    /// and with the simulator on random sets.
    #[test]
    fn ideal_admission_matches_the_exact_tests_and_simulation() {
        let mut generator = crate::gen::Generator::new(0x1dea);
        for round in 0..300 {
            let count = 1 + round % 4;
            let utilisation_ppm = 400_000 + (round as u64 * 7_919) % 700_000;
            let tasks = generator.task_set(utilisation_ppm, count, &[2, 3, 4, 6, 8, 12], round % 3 == 0);
            assert_eq!(ideal("edf", &tasks).admitted, crate::sched::edf_schedulable(&tasks), "{tasks:?}");
            assert_eq!(
                ideal("rm", &tasks).admitted,
                crate::sched::rm_schedulable_by_response_time(&tasks),
                "{tasks:?}"
            );
            let horizon_ticks = hyperperiod_ticks(&tasks).unwrap() * 2;
            for name in ["edf", "rm"] {
                let report = simulate(&tasks, &mut *by_name(name).unwrap(), horizon_ticks, 1).unwrap();
                if ideal(name, &tasks).admitted {
                    assert_eq!(report.deadline_misses, 0, "{name} {tasks:?}");
                }
            }
        }
    }

    /// Admitted with work units and decisions means no miss in a simulation
    /// that preempts only at unit boundaries (quantum = unit) and charges
    /// the decisions as extra budget.
    #[test]
    fn admitted_with_work_units_means_no_miss_at_unit_granularity() {
        let mut generator = crate::gen::Generator::new(0xb10c);
        let mut admitted = 0;
        for round in 0..300 {
            let utilisation_ppm = 500_000 + (round as u64 * 1_667) % 500_000;
            let tasks: Vec<Task> = generator
                .task_set(utilisation_ppm, 2 + round % 3, &[4, 6, 8, 12], round % 2 == 0)
                .into_iter()
                .map(|t| Task::new(t.id, t.period_ticks * 4, t.budget_ticks * 4, t.deadline_ticks * 4))
                .collect();
            let units = Overheads { decision_ticks: 0, work_unit_ticks: 2, work_excess_ppm: 0 };
            for name in ["edf", "rm"] {
                if !admit(name, &tasks, &units, &Supply::DEDICATED).unwrap().admitted {
                    continue;
                }
                admitted += 1;
                let horizon_ticks = hyperperiod_ticks(&tasks).unwrap() * 2;
                let report = simulate(&tasks, &mut *by_name(name).unwrap(), horizon_ticks, 2).unwrap();
                assert_eq!(report.deadline_misses, 0, "{name} {tasks:?}");
            }
        }
        assert!(admitted > 100, "only {admitted} admitted");
    }

    #[test]
    fn refuses_invalid_and_unknown() {
        let bad = [Task::new(0, 0, 1, 1)];
        assert_eq!(ideal("edf", &bad).refusal, Some(Refusal::InvalidTask));
        assert_eq!(ideal("rm", &bad).refusal, Some(Refusal::InvalidTask));
        assert!(admit("fifo", &[], &Overheads::NONE, &Supply::DEDICATED).is_none());
        assert!(ideal("edf", &[]).admitted);
        assert!(ideal("rm", &[]).admitted);
        // A horizon with too many points is refused, not walked.
        let slow = [Task::implicit(0, 1_000_000, 999_990), Task::implicit(1, 1, 0)];
        let verdict = edf_admit(&slow, &Overheads::NONE, &Supply { cycle_ticks: 1_000_000, guaranteed_ticks: 999_999 });
        assert_eq!(verdict.refusal, Some(Refusal::TooManyPoints), "{verdict:?}");
        assert!(!verdict.admitted);
    }
}
