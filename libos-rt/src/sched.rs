//! Real-time job scheduling (EDF, rate-monotonic), schedulability analysis and a simulator.
//!
//! Model: periodic tasks, each with a period, a worst-case execution budget
//! and a relative deadline no longer than its period (constrained
//! deadlines). Every task releases its first job at tick 0 (synchronous
//! release) and one job every period after that. Time is counted in
//! abstract ticks; the libOS program decides what a tick is (a slice of
//! TSC time), so nothing here reads a clock.
//!
//! Which ready job runs is the choice of an [`RtScheduler`], named in the
//! manifest and built with [`by_name`]: [`Edf`] (earliest absolute deadline
//! first) or [`RateMonotonic`] (fixed priorities, shorter period first).
//!
//! Admission tests use integer arithmetic only: [`utilisation_ppm`] with the
//! Liu & Layland bound [`rm_bound_ppm`] (sufficient for RM),
//! [`rm_schedulable_by_response_time`] (exact for RM) and
//! [`edf_schedulable`] (exact for EDF).
//!
//! [`simulate`] runs a task set through a scheduler tick by tick. A job that
//! reaches its deadline unfinished is counted as one miss and dropped, so an
//! overload never snowballs into a backlog of late jobs.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

/// One million: utilisations are given in parts per million of the processor.
pub const PPM: u64 = 1_000_000;

/// A periodic real-time task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Task {
    /// Identifier; among otherwise equal candidates the lower id runs first.
    pub id: usize,
    /// Time between successive releases; must be above zero.
    pub period_ticks: u64,
    /// Worst-case execution time (WCET) of one job.
    pub budget_ticks: u64,
    /// Relative deadline: a job must finish within this many ticks of its
    /// release. `0 < deadline_ticks <= period_ticks`.
    pub deadline_ticks: u64,
}

impl Task {
    /// A task with a deadline constrained to `deadline_ticks` after each release.
    pub const fn new(id: usize, period_ticks: u64, budget_ticks: u64, deadline_ticks: u64) -> Self {
        Task { id, period_ticks, budget_ticks, deadline_ticks }
    }

    /// A task whose deadline is the end of its period (implicit deadline).
    pub const fn implicit(id: usize, period_ticks: u64, budget_ticks: u64) -> Self {
        Task::new(id, period_ticks, budget_ticks, period_ticks)
    }

    /// Whether the parameters fit the model: a period above zero and
    /// `0 < deadline_ticks <= period_ticks`. (A budget above the deadline is
    /// valid, just never schedulable.)
    pub fn is_valid(&self) -> bool {
        self.period_ticks > 0 && self.deadline_ticks > 0 && self.deadline_ticks <= self.period_ticks
    }
}

/// One released, unfinished job of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Job {
    /// Index of the job's task in the task table passed alongside (not its id).
    pub task: usize,
    /// When the job was released.
    pub release_ticks: u64,
    /// When it must be finished: release plus the task's relative deadline.
    pub absolute_deadline_ticks: u64,
    /// Execution still owed to it.
    pub remaining_ticks: u64,
}

impl Job {
    /// The job `tasks[task]` releases at `release_ticks`, owed its whole
    /// budget. Panics if `task` is out of range.
    pub fn released(task: usize, tasks: &[Task], release_ticks: u64) -> Self {
        let params = tasks[task];
        Job {
            task,
            release_ticks,
            absolute_deadline_ticks: release_ticks.saturating_add(params.deadline_ticks),
            remaining_ticks: params.budget_ticks,
        }
    }
}

/// Why a task set or simulation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskSetError {
    /// `tasks[index]` breaks [`Task::is_valid`].
    InvalidTask {
        /// Position of the offending task in the table.
        index: usize,
    },
    /// A quantum of zero ticks.
    ZeroQuantum,
}

/// Check every task of a table against [`Task::is_valid`].
pub fn check_tasks(tasks: &[Task]) -> Result<(), TaskSetError> {
    match tasks.iter().position(|task| !task.is_valid()) {
        Some(index) => Err(TaskSetError::InvalidTask { index }),
        None => Ok(()),
    }
}

/// A real-time scheduling policy: which ready job gets the processor.
pub trait RtScheduler {
    /// The policy's manifest name, as accepted by [`by_name`].
    fn name(&self) -> &'static str;

    /// Choose a job from `ready` (the released, unfinished jobs, in any
    /// order; `Job::task` indexes `tasks`): its index in `ready`, or `None`
    /// exactly when `ready` is empty. The choice must not depend on the
    /// order of `ready`.
    fn pick(&mut self, ready: &[Job], tasks: &[Task]) -> Option<usize>;
}

/// Manifest names of every policy, for [`by_name`].
pub const NAMES: [&str; 2] = ["edf", "rm"];

/// The policy a manifest names: `"edf"` or `"rm"` (rate-monotonic).
pub fn by_name(name: &str) -> Option<Box<dyn RtScheduler>> {
    match name {
        "edf" => Some(Box::new(Edf)),
        "rm" => Some(Box::new(RateMonotonic)),
        _ => None,
    }
}

/// The task id of a job, or `usize::MAX` if it names no task in the table.
fn task_id(job: &Job, tasks: &[Task]) -> usize {
    tasks.get(job.task).map_or(usize::MAX, |task| task.id)
}

/// Position of the ready job with the smallest key.
fn pick_min_by_key<K: Ord>(ready: &[Job], key: impl Fn(&Job) -> K) -> Option<usize> {
    ready.iter().enumerate().min_by_key(|(_, job)| key(job)).map(|(index, _)| index)
}

/// Earliest deadline first: the job with the earliest absolute deadline;
/// ties go to the lower task id, then to the older job. Optimal on one
/// processor: it meets every deadline whenever any policy can.
#[derive(Clone, Copy, Debug, Default)]
pub struct Edf;

impl RtScheduler for Edf {
    fn name(&self) -> &'static str {
        "edf"
    }

    fn pick(&mut self, ready: &[Job], tasks: &[Task]) -> Option<usize> {
        pick_min_by_key(ready, |job| (job.absolute_deadline_ticks, task_id(job, tasks), job.task, job.release_ticks))
    }
}

/// Rate-monotonic: fixed task priorities, the shorter period first, ties to
/// the lower task id; among jobs of one task the older first. Jobs of a task
/// missing from the table rank last.
#[derive(Clone, Copy, Debug, Default)]
pub struct RateMonotonic;

impl RtScheduler for RateMonotonic {
    fn name(&self) -> &'static str {
        "rm"
    }

    fn pick(&mut self, ready: &[Job], tasks: &[Task]) -> Option<usize> {
        pick_min_by_key(ready, |job| {
            let period_ticks = tasks.get(job.task).map_or(u64::MAX, |task| task.period_ticks);
            (period_ticks, task_id(job, tasks), job.task, job.release_ticks)
        })
    }
}

/// Whether `tasks[a]` has a higher rate-monotonic priority than `tasks[b]`
/// (the same order [`RateMonotonic`] uses).
fn rm_outranks(tasks: &[Task], a: usize, b: usize) -> bool {
    (tasks[a].period_ticks, tasks[a].id, a) < (tasks[b].period_ticks, tasks[b].id, b)
}

// --- Analysis ----------------------------------------------------------------

/// Total utilisation `sum(budget / period)` in parts per million, each term
/// rounded up, so comparisons against a bound err on the safe side.
/// Saturates at `u64::MAX` (also for a period of zero).
pub fn utilisation_ppm(tasks: &[Task]) -> u64 {
    let mut total: u128 = 0;
    for task in tasks {
        if task.period_ticks == 0 {
            return u64::MAX;
        }
        total += (task.budget_ticks as u128 * PPM as u128).div_ceil(task.period_ticks as u128);
    }
    total.min(u64::MAX as u128) as u64
}

/// The Liu & Layland utilisation bound `n (2^(1/n) - 1)` in parts per
/// million, rounded down: `n` implicit-deadline tasks at or below it are
/// schedulable by rate-monotonic. A table for `n <= 16`, `ln 2` (the limit,
/// below every finite bound) beyond; 100% for zero or one task.
pub fn rm_bound_ppm(task_count: usize) -> u64 {
    const BOUND_PPM: [u64; 17] = [
        1_000_000, 1_000_000, 828_427, 779_763, 756_828, 743_491, 734_772, 728_626, 724_061, 720_537, 717_734, 715_451,
        713_557, 711_958, 710_592, 709_411, 708_380,
    ];
    const LN_2_PPM: u64 = 693_147;
    BOUND_PPM.get(task_count).copied().unwrap_or(LN_2_PPM)
}

/// Liu & Layland's sufficient test for rate-monotonic: every deadline is
/// implicit and the utilisation is within [`rm_bound_ppm`]. `false` means
/// "not proven" (use [`rm_schedulable_by_response_time`] for the exact answer).
pub fn rm_schedulable_by_utilisation(tasks: &[Task]) -> bool {
    check_tasks(tasks).is_ok()
        && tasks.iter().all(|task| task.deadline_ticks == task.period_ticks)
        && utilisation_ppm(tasks) <= rm_bound_ppm(tasks.len())
}

/// Worst-case response time of `tasks[index]` under rate-monotonic, by exact
/// response-time analysis (Joseph & Pandya; Audsley et al.):
/// `R = C + sum over higher-priority j of ceil(R / T_j) * C_j`, iterated to
/// its fixed point. `None` if it exceeds the task's deadline, or if the
/// table is invalid or has no such task.
///
/// Exact for synchronous release, constrained deadlines and preemption at
/// any tick (a quantum of one in [`simulate`]).
pub fn response_time_ticks(tasks: &[Task], index: usize) -> Option<u64> {
    check_tasks(tasks).ok()?;
    let task = tasks.get(index)?;
    if task.budget_ticks == 0 {
        return Some(0);
    }
    let higher: Vec<&Task> =
        (0..tasks.len()).filter(|&other| rm_outranks(tasks, other, index)).map(|other| &tasks[other]).collect();
    let interference_ticks = |window_ticks: u64| {
        higher.iter().fold(0u64, |sum, other| {
            sum.saturating_add(window_ticks.div_ceil(other.period_ticks).saturating_mul(other.budget_ticks))
        })
    };
    // Start from the budget; the iteration then climbs to the least fixed point.
    let mut response_ticks = task.budget_ticks;
    loop {
        if response_ticks > task.deadline_ticks {
            return None;
        }
        let next_ticks = task.budget_ticks.saturating_add(interference_ticks(response_ticks));
        if next_ticks == response_ticks {
            return Some(response_ticks);
        }
        response_ticks = next_ticks;
    }
}

/// Exact rate-monotonic test: every task's [`response_time_ticks`] is within
/// its deadline. An empty set is schedulable; an invalid one is not.
pub fn rm_schedulable_by_response_time(tasks: &[Task]) -> bool {
    check_tasks(tasks).is_ok() && (0..tasks.len()).all(|index| response_time_ticks(tasks, index).is_some())
}

/// Exact EDF test. With implicit deadlines: utilisation at most 1, compared
/// as an exact fraction. With constrained deadlines: additionally the
/// processor-demand test (Baruah et al.), `demand(t) <= t` at every absolute
/// deadline `t` within the synchronous busy period; its cost grows with the
/// busy period over the shortest period. An invalid set is not schedulable.
pub fn edf_schedulable(tasks: &[Task]) -> bool {
    if check_tasks(tasks).is_err() || !utilisation_at_most_one(tasks) {
        return false;
    }
    if tasks.iter().all(|task| task.deadline_ticks == task.period_ticks) {
        return true;
    }
    let busy_period_ticks = synchronous_busy_period_ticks(tasks);
    tasks.iter().all(|task| {
        let mut deadline_ticks = task.deadline_ticks as u128;
        while deadline_ticks <= busy_period_ticks {
            if demand_ticks(tasks, deadline_ticks) > deadline_ticks {
                return false;
            }
            deadline_ticks += task.period_ticks as u128;
        }
        true
    })
}

/// Whether `sum(budget / period) <= 1` for a valid set, as an exact fraction
/// while it fits in `u128`, else in parts per 10^12 rounded up (refusing
/// only sets within about `n * 10^-12` of full load).
pub(crate) fn utilisation_at_most_one(tasks: &[Task]) -> bool {
    let (mut numerator, mut denominator) = (0u128, 1u128);
    for task in tasks {
        let (budget, period) = (task.budget_ticks as u128, task.period_ticks as u128);
        let common = gcd(denominator, period);
        let sum = (denominator / common).checked_mul(period).and_then(|new_denominator| {
            let scaled = numerator.checked_mul(period / common)?;
            let added = budget.checked_mul(denominator / common)?;
            Some((scaled.checked_add(added)?, new_denominator))
        });
        let Some((new_numerator, new_denominator)) = sum else {
            const PARTS: u128 = 1_000_000_000_000;
            let parts: u128 =
                tasks.iter().map(|task| (task.budget_ticks as u128 * PARTS).div_ceil(task.period_ticks as u128)).sum();
            return parts <= PARTS;
        };
        let common = gcd(new_numerator, new_denominator);
        (numerator, denominator) = (new_numerator / common, new_denominator / common);
        if numerator > denominator {
            return false;
        }
    }
    true
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Work released in `[0, window)` by synchronous release, `sum ceil(window / T) * C`.
fn workload_ticks(tasks: &[Task], window_ticks: u128) -> u128 {
    tasks.iter().map(|task| window_ticks.div_ceil(task.period_ticks as u128) * task.budget_ticks as u128).sum()
}

/// Length of the synchronous busy period: the least `L > 0` with
/// `workload(L) = L` (zero if no task needs time). Finite, and at most the
/// hyperperiod, when utilisation is at most 1.
fn synchronous_busy_period_ticks(tasks: &[Task]) -> u128 {
    let mut length_ticks: u128 = tasks.iter().map(|task| task.budget_ticks as u128).sum();
    loop {
        let next_ticks = workload_ticks(tasks, length_ticks);
        if next_ticks == length_ticks {
            return length_ticks;
        }
        length_ticks = next_ticks;
    }
}

/// Execution that must finish within `[0, interval]` under synchronous
/// release: jobs released and due inside it.
fn demand_ticks(tasks: &[Task], interval_ticks: u128) -> u128 {
    tasks
        .iter()
        .filter(|task| task.deadline_ticks as u128 <= interval_ticks)
        .map(|task| {
            let jobs = (interval_ticks - task.deadline_ticks as u128) / task.period_ticks as u128 + 1;
            jobs * task.budget_ticks as u128
        })
        .sum()
}

/// Least common multiple of the periods (the schedule repeats after it), or
/// `None` if it overflows or a period is zero. One for an empty set.
pub fn hyperperiod_ticks(tasks: &[Task]) -> Option<u64> {
    tasks.iter().try_fold(1u64, |lcm, task| {
        if task.period_ticks == 0 {
            return None;
        }
        let common = gcd(lcm as u128, task.period_ticks as u128) as u64;
        (lcm / common).checked_mul(task.period_ticks)
    })
}

// --- Simulation --------------------------------------------------------------

/// What one [`simulate`] run observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimReport {
    /// Jobs released before the horizon.
    pub jobs_released: u64,
    /// Jobs that finished by their deadline.
    pub jobs_completed: u64,
    /// Jobs that reached their deadline unfinished (each dropped there and
    /// counted once), including those due exactly at the horizon.
    pub deadline_misses: u64,
    /// Jobs still running at the horizon with their deadline after it.
    /// `released = completed + misses + unfinished`.
    pub jobs_unfinished_at_horizon: u64,
    /// Deadline misses per task, indexed like the task table.
    pub per_task_misses: Vec<u64>,
    /// Longest release-to-completion time of a completed job, per task.
    pub per_task_worst_response_ticks: Vec<u64>,
    /// Longest delay from a job's release to the first tick it ran.
    pub max_release_jitter_ticks: u64,
    /// Times a running, unfinished job was displaced by another.
    pub preemptions: u64,
    /// Ticks with nothing to run.
    pub idle_ticks: u64,
}

/// Run `tasks` under `scheduler` for the ticks `[0, horizon_ticks)`.
///
/// Each tick, in order: jobs whose deadline has come are counted as misses
/// and dropped; the jobs due for release are released (a zero-budget job
/// completes on the spot); the scheduler is asked to pick if the tick is a
/// quantum boundary (a multiple of `quantum_ticks`, as with a periodic
/// timer) or nothing is running, otherwise the running job keeps the
/// processor; the chosen job runs for the tick. So a job released
/// mid-quantum waits for the boundary unless the processor was idle or its
/// job finished. At the horizon, unfinished jobs due by then count as misses.
pub fn simulate(
    tasks: &[Task],
    scheduler: &mut dyn RtScheduler,
    horizon_ticks: u64,
    quantum_ticks: u64,
) -> Result<SimReport, TaskSetError> {
    check_tasks(tasks)?;
    if quantum_ticks == 0 {
        return Err(TaskSetError::ZeroQuantum);
    }
    let mut report = SimReport {
        jobs_released: 0,
        jobs_completed: 0,
        deadline_misses: 0,
        jobs_unfinished_at_horizon: 0,
        per_task_misses: vec![0; tasks.len()],
        per_task_worst_response_ticks: vec![0; tasks.len()],
        max_release_jitter_ticks: 0,
        preemptions: 0,
        idle_ticks: 0,
    };
    let mut next_release_ticks = vec![0u64; tasks.len()];
    let mut ready: Vec<Job> = Vec::new();
    // The job on the processor, by (task index, release), which is unique.
    let mut running: Option<(usize, u64)> = None;

    for now_ticks in 0..horizon_ticks {
        ready.retain(|job| {
            if job.absolute_deadline_ticks > now_ticks {
                return true;
            }
            report.deadline_misses += 1;
            report.per_task_misses[job.task] += 1;
            false
        });

        for (index, task) in tasks.iter().enumerate() {
            if next_release_ticks[index] != now_ticks {
                continue;
            }
            next_release_ticks[index] = now_ticks.saturating_add(task.period_ticks);
            report.jobs_released += 1;
            if task.budget_ticks == 0 {
                report.jobs_completed += 1;
            } else {
                ready.push(Job::released(index, tasks, now_ticks));
            }
        }

        let running_index = running.and_then(|key| ready.iter().position(|job| (job.task, job.release_ticks) == key));
        let chosen = if now_ticks % quantum_ticks == 0 || running_index.is_none() {
            scheduler.pick(&ready, tasks).filter(|&index| index < ready.len())
        } else {
            running_index
        };
        if running_index.is_some() && chosen.is_some() && running_index != chosen {
            report.preemptions += 1;
        }

        let Some(index) = chosen else {
            report.idle_ticks += 1;
            running = None;
            continue;
        };
        let job = &mut ready[index];
        if job.remaining_ticks == tasks[job.task].budget_ticks {
            let jitter_ticks = now_ticks - job.release_ticks;
            report.max_release_jitter_ticks = report.max_release_jitter_ticks.max(jitter_ticks);
        }
        job.remaining_ticks -= 1;
        if job.remaining_ticks > 0 {
            running = Some((job.task, job.release_ticks));
            continue;
        }
        let response_ticks = now_ticks + 1 - job.release_ticks;
        let worst = &mut report.per_task_worst_response_ticks[job.task];
        *worst = (*worst).max(response_ticks);
        report.jobs_completed += 1;
        ready.remove(index);
        running = None;
    }

    for job in &ready {
        if job.absolute_deadline_ticks <= horizon_ticks {
            report.deadline_misses += 1;
            report.per_task_misses[job.task] += 1;
        } else {
            report.jobs_unfinished_at_horizon += 1;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// Implicit-deadline tasks from `(budget, period)` pairs (the `(C, T)` of
    /// the literature); ids are table positions.
    fn task_set(pairs: &[(u64, u64)]) -> Vec<Task> {
        pairs.iter().enumerate().map(|(id, &(budget, period))| Task::implicit(id, period, budget)).collect()
    }

    fn schedulers() -> Vec<Box<dyn RtScheduler>> {
        NAMES.iter().map(|name| by_name(name).unwrap()).collect()
    }

    fn run(name: &str, tasks: &[Task], horizon_ticks: u64, quantum_ticks: u64) -> SimReport {
        simulate(tasks, &mut *by_name(name).unwrap(), horizon_ticks, quantum_ticks).unwrap()
    }

    /// A deterministic pseudo-random sequence (xorshift64).
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % bound
        }

        /// One to four tasks with periods in 2..=12 (small hyperperiods),
        /// random budgets and, if `constrained`, random deadlines.
        fn task_set(&mut self, constrained: bool) -> Vec<Task> {
            let count = 1 + self.below(4) as usize;
            (0..count)
                .map(|id| {
                    let period_ticks = 2 + self.below(11);
                    let budget_ticks = 1 + self.below(period_ticks / 2 + 1);
                    let deadline_ticks = if constrained { 1 + self.below(period_ticks) } else { period_ticks };
                    Task::new(id, period_ticks, budget_ticks, deadline_ticks)
                })
                .collect()
        }

        /// Between zero and five ready jobs of `tasks`, with distinct
        /// releases and partly executed.
        fn ready(&mut self, tasks: &[Task]) -> Vec<Job> {
            (0..self.below(6))
                .map(|nth| {
                    let task = self.below(tasks.len() as u64) as usize;
                    let mut job = Job::released(task, tasks, nth * 3 + self.below(3));
                    job.remaining_ticks -= self.below(job.remaining_ticks);
                    job
                })
                .collect()
        }
    }

    fn check_accounting(tasks: &[Task], report: &SimReport) {
        assert_eq!(
            report.jobs_released,
            report.jobs_completed + report.deadline_misses + report.jobs_unfinished_at_horizon
        );
        assert_eq!(report.per_task_misses.iter().sum::<u64>(), report.deadline_misses);
        for (task, worst) in tasks.iter().zip(&report.per_task_worst_response_ticks) {
            assert!(*worst <= task.deadline_ticks, "a completed job finished by its deadline");
        }
    }

    // --- Every policy --------------------------------------------------------

    #[test]
    fn by_name_builds_every_policy() {
        for name in NAMES {
            assert_eq!(by_name(name).unwrap().name(), name);
        }
        assert!(by_name("fifo").is_none());
        assert!(by_name("").is_none());
    }

    #[test]
    fn empty_ready_picks_nothing() {
        let tasks = task_set(&[(1, 4), (2, 8)]);
        for mut scheduler in schedulers() {
            assert_eq!(scheduler.pick(&[], &tasks), None, "{}", scheduler.name());
            assert_eq!(scheduler.pick(&[], &[]), None, "{}", scheduler.name());
        }
    }

    #[test]
    fn picks_only_ready_jobs_whatever_their_order() {
        let tasks = task_set(&[(1, 4), (2, 8), (1, 5), (3, 16)]);
        let mut rng = Rng(0x5eed);
        for mut scheduler in schedulers() {
            for _ in 0..500 {
                let mut ready = rng.ready(&tasks);
                let Some(index) = scheduler.pick(&ready, &tasks) else {
                    assert!(ready.is_empty(), "{}: idle with work ready", scheduler.name());
                    continue;
                };
                assert!(index < ready.len(), "{}: index out of range", scheduler.name());
                let chosen = ready[index];
                ready.reverse();
                let again = scheduler.pick(&ready, &tasks).unwrap();
                assert_eq!(ready[again], chosen, "{}: depends on ready order", scheduler.name());
            }
            let only = [Job::released(3, &tasks, 7)];
            assert_eq!(scheduler.pick(&only, &tasks), Some(0), "{}", scheduler.name());
        }
    }

    #[test]
    fn accounting_adds_up_for_every_quantum() {
        let mut rng = Rng(0xacc0);
        for _ in 0..100 {
            let constrained = rng.below(2) == 0;
            let tasks = rng.task_set(constrained);
            for mut scheduler in schedulers() {
                for quantum_ticks in 1..=4 {
                    let report = simulate(&tasks, &mut *scheduler, 97, quantum_ticks).unwrap();
                    check_accounting(&tasks, &report);
                    assert!(report.max_release_jitter_ticks < 97);
                }
            }
        }
    }

    #[test]
    fn light_harmonic_set_meets_every_deadline_the_same_under_edf_and_rm() {
        let tasks = task_set(&[(1, 4), (2, 8), (4, 16)]);
        assert_eq!(utilisation_ppm(&tasks), 750_000);
        let horizon_ticks = hyperperiod_ticks(&tasks).unwrap() * 10;
        let edf = run("edf", &tasks, horizon_ticks, 1);
        let rm = run("rm", &tasks, horizon_ticks, 1);
        assert_eq!(edf, rm);
        assert_eq!(edf.deadline_misses, 0);
        assert_eq!(edf.jobs_released, 40 + 20 + 10);
        assert_eq!(edf.jobs_completed, edf.jobs_released);
        assert_eq!(edf.idle_ticks, horizon_ticks / 4);
        check_accounting(&tasks, &edf);
    }

    #[test]
    fn full_load_single_task_never_idles() {
        let tasks = task_set(&[(5, 5)]);
        for name in NAMES {
            let report = run(name, &tasks, 50, 3);
            assert_eq!((report.idle_ticks, report.deadline_misses, report.jobs_completed), (0, 0, 10), "{name}");
        }
    }

    #[test]
    fn zero_budget_jobs_complete_at_release() {
        let tasks = task_set(&[(0, 3), (2, 4)]);
        for name in NAMES {
            let report = run(name, &tasks, 12, 1);
            assert_eq!(report.jobs_released, 4 + 3, "{name}");
            assert_eq!(report.jobs_completed, 7, "{name}");
            assert_eq!(report.idle_ticks, 6, "{name}");
        }
    }

    #[test]
    fn invalid_sets_are_refused() {
        let mut scheduler = Edf;
        let zero_period = [Task::new(0, 0, 1, 1)];
        let late_deadline = [Task::implicit(0, 4, 1), Task::new(1, 5, 1, 6)];
        let zero_deadline = [Task::new(0, 5, 1, 0)];
        assert_eq!(simulate(&zero_period, &mut scheduler, 10, 1), Err(TaskSetError::InvalidTask { index: 0 }));
        assert_eq!(simulate(&late_deadline, &mut scheduler, 10, 1), Err(TaskSetError::InvalidTask { index: 1 }));
        assert_eq!(simulate(&zero_deadline, &mut scheduler, 10, 1), Err(TaskSetError::InvalidTask { index: 0 }));
        assert_eq!(simulate(&task_set(&[(1, 4)]), &mut scheduler, 10, 0), Err(TaskSetError::ZeroQuantum));
        for tasks in [&zero_period[..], &late_deadline[..], &zero_deadline[..]] {
            assert!(!edf_schedulable(tasks));
            assert!(!rm_schedulable_by_response_time(tasks));
            assert!(!rm_schedulable_by_utilisation(tasks));
            assert_eq!(response_time_ticks(tasks, 0), None);
        }
        assert_eq!(utilisation_ppm(&zero_period), u64::MAX);
        assert_eq!(hyperperiod_ticks(&zero_period), None);
    }

    // --- EDF against RM ------------------------------------------------------

    #[test]
    fn rm_misses_where_edf_meets_every_deadline() {
        // U = 2/5 + 4/7 ~ 0.971: above the two-task bound (0.828), below 1.
        let tasks = task_set(&[(2, 5), (4, 7)]);
        assert_eq!(utilisation_ppm(&tasks), 971_429);
        assert!(utilisation_ppm(&tasks) > rm_bound_ppm(2));
        assert!(edf_schedulable(&tasks));
        assert!(!rm_schedulable_by_utilisation(&tasks));
        assert!(!rm_schedulable_by_response_time(&tasks));
        assert_eq!(response_time_ticks(&tasks, 0), Some(2));
        assert_eq!(response_time_ticks(&tasks, 1), None);

        let horizon_ticks = hyperperiod_ticks(&tasks).unwrap() * 10;
        assert_eq!(horizon_ticks, 350);
        let edf = run("edf", &tasks, horizon_ticks, 1);
        assert_eq!(edf.deadline_misses, 0);
        assert_eq!(edf.jobs_completed, 70 + 50);
        let rm = run("rm", &tasks, horizon_ticks, 1);
        assert!(rm.deadline_misses > 0);
        assert_eq!(rm.per_task_misses[0], 0, "the short-period task always wins under RM");
        assert_eq!(rm.per_task_misses[1], rm.deadline_misses);
        check_accounting(&tasks, &rm);
    }

    #[test]
    fn rm_meets_a_set_under_the_liu_layland_bound() {
        // U = 1/4 + 1/5 + 2/10 = 0.65 <= 0.7797; periods not harmonic.
        let tasks = task_set(&[(1, 4), (1, 5), (2, 10)]);
        assert!(rm_schedulable_by_utilisation(&tasks));
        assert!(rm_schedulable_by_response_time(&tasks));
        let horizon_ticks = hyperperiod_ticks(&tasks).unwrap() * 10;
        for quantum_ticks in [1, 2] {
            let report = run("rm", &tasks, horizon_ticks, quantum_ticks);
            assert_eq!(report.deadline_misses, 0, "quantum {quantum_ticks}");
            assert_eq!(report.jobs_completed, report.jobs_released);
        }
    }

    #[test]
    fn edf_misses_when_overloaded() {
        // U = 3/5 + 3/7 ~ 1.029.
        let tasks = task_set(&[(3, 5), (3, 7)]);
        assert!(utilisation_ppm(&tasks) > PPM);
        assert!(!edf_schedulable(&tasks));
        let edf = run("edf", &tasks, hyperperiod_ticks(&tasks).unwrap() * 10, 1);
        assert!(edf.deadline_misses > 0);
        assert_eq!(edf.idle_ticks, 0);
        check_accounting(&tasks, &edf);
    }

    #[test]
    fn quantum_delays_a_mid_quantum_release_to_the_boundary() {
        // Task 0 releases at 0, 5, 10, ... while task 1 runs; with a quantum
        // of 4 a release at 5 waits for the boundary at 8.
        let tasks = task_set(&[(1, 5), (20, 40)]);
        let coarse = run("rm", &tasks, 40, 4);
        assert_eq!(coarse.max_release_jitter_ticks, 3);
        assert_eq!(coarse.deadline_misses, 0);
        assert!(coarse.preemptions > 0);
        let fine = run("rm", &tasks, 40, 1);
        assert_eq!(fine.max_release_jitter_ticks, 1, "task 1 waits one tick behind task 0");
        // On an idle processor the release at 5 runs at once, mid-quantum.
        let alone = run("rm", &tasks[..1], 40, 4);
        assert_eq!(alone.max_release_jitter_ticks, 0);
    }

    // --- Analysis ------------------------------------------------------------

    #[test]
    fn bound_table_and_utilisation() {
        assert_eq!(rm_bound_ppm(0), PPM);
        assert_eq!(rm_bound_ppm(1), PPM);
        assert_eq!(rm_bound_ppm(2), 828_427);
        assert_eq!(rm_bound_ppm(16), 708_380);
        assert_eq!(rm_bound_ppm(17), 693_147);
        assert!((1..40).all(|count| rm_bound_ppm(count + 1) <= rm_bound_ppm(count)));
        assert_eq!(utilisation_ppm(&[]), 0);
        assert_eq!(utilisation_ppm(&task_set(&[(1, 3)])), 333_334, "rounded up");
        assert_eq!(utilisation_ppm(&[Task::implicit(0, 1, u64::MAX)]), u64::MAX, "saturates");
        assert_eq!(hyperperiod_ticks(&[]), Some(1));
        assert_eq!(hyperperiod_ticks(&task_set(&[(1, 4), (1, 6), (1, 10)])), Some(60));
        assert_eq!(hyperperiod_ticks(&task_set(&[(1, u64::MAX), (1, u64::MAX - 1)])), None);
    }

    #[test]
    fn edf_test_is_exact_at_full_load() {
        assert!(edf_schedulable(&task_set(&[(1, 3), (1, 3), (1, 3)])));
        assert!(edf_schedulable(&task_set(&[(1, 2), (1, 3), (1, 6)])));
        assert!(!edf_schedulable(&task_set(&[(1, 2), (1, 3), (1, 5)])));
        // Huge coprime periods push the exact fraction past u128.
        let primes = [u64::MAX - 58, u64::MAX - 82, u64::MAX - 94];
        let light: Vec<Task> = primes.iter().enumerate().map(|(id, &p)| Task::implicit(id, p, p / 4)).collect();
        assert!(edf_schedulable(&light));
        let heavy: Vec<Task> = primes.iter().enumerate().map(|(id, &p)| Task::implicit(id, p, p / 2)).collect();
        assert!(!edf_schedulable(&heavy));
    }

    #[test]
    fn edf_test_handles_constrained_deadlines() {
        // U ~ 0.83 but density 2/3 + 2/4 > 1: schedulable all the same.
        let dense = [Task::new(0, 4, 2, 3), Task::new(1, 6, 2, 4)];
        assert!(edf_schedulable(&dense));
        assert_eq!(run("edf", &dense, 120, 1).deadline_misses, 0);
        // U = 0.6, yet both jobs are due by tick 4 and need 6 ticks.
        let crowded = [Task::new(0, 10, 3, 3), Task::new(1, 10, 3, 4)];
        assert!(!edf_schedulable(&crowded));
        assert!(run("edf", &crowded, 100, 1).deadline_misses > 0);
    }

    #[test]
    fn response_time_analysis_matches_simulation() {
        let sets = [
            task_set(&[(1, 4), (1, 5), (2, 10)]),
            task_set(&[(2, 5), (4, 7)]),
            task_set(&[(1, 4), (2, 6), (3, 13)]),
            task_set(&[(3, 7), (3, 12), (5, 20)]), // the last one finishes exactly at its deadline
            vec![Task::new(0, 10, 3, 5), Task::new(1, 15, 4, 8)],
            vec![Task::new(0, 10, 3, 5), Task::new(1, 15, 4, 6)],
        ];
        let expected: [&[Option<u64>]; 6] = [
            &[Some(1), Some(2), Some(4)],
            &[Some(2), None],
            &[Some(1), Some(3), Some(10)],
            &[Some(3), Some(6), Some(20)],
            &[Some(3), Some(7)],
            &[Some(3), None],
        ];
        for (tasks, expected) in sets.iter().zip(expected) {
            let analysed: Vec<Option<u64>> = (0..tasks.len()).map(|index| response_time_ticks(tasks, index)).collect();
            assert_eq!(analysed, expected, "{tasks:?}");
            let report = run("rm", tasks, hyperperiod_ticks(tasks).unwrap() * 2, 1);
            for (index, response) in analysed.iter().enumerate() {
                match response {
                    Some(ticks) => {
                        assert_eq!(report.per_task_misses[index], 0, "{tasks:?} task {index}");
                        let worst_ticks = report.per_task_worst_response_ticks[index];
                        assert_eq!(worst_ticks, *ticks, "{tasks:?} task {index}");
                    }
                    None => assert!(report.per_task_misses[index] > 0, "{tasks:?} task {index}"),
                }
            }
        }
    }

    #[test]
    fn exact_tests_agree_with_simulation_on_random_sets() {
        // With synchronous release the first deadline miss, if any, comes
        // within the hyperperiod plus the longest deadline; until then
        // nothing has been dropped, so the simulation is the ground truth.
        let mut rng = Rng(0xfeed_beef);
        for round in 0..400 {
            let tasks = rng.task_set(round % 2 == 0);
            let horizon_ticks = hyperperiod_ticks(&tasks).unwrap() + 12;

            let edf = run("edf", &tasks, horizon_ticks, 1);
            assert_eq!(edf_schedulable(&tasks), edf.deadline_misses == 0, "EDF {tasks:?}");

            let rm = run("rm", &tasks, horizon_ticks, 1);
            assert_eq!(rm_schedulable_by_response_time(&tasks), rm.deadline_misses == 0, "RM {tasks:?}");
            if rm_schedulable_by_utilisation(&tasks) {
                assert_eq!(rm.deadline_misses, 0, "Liu & Layland {tasks:?}");
            }
            // Up to the first task that fails, analysis and simulation agree exactly.
            let mut by_priority: Vec<usize> = (0..tasks.len()).collect();
            by_priority.sort_by_key(|&index| (tasks[index].period_ticks, tasks[index].id));
            for index in by_priority {
                let Some(response_ticks) = response_time_ticks(&tasks, index) else {
                    assert!(rm.per_task_misses[index] > 0, "RM {tasks:?} task {index}");
                    break;
                };
                let worst_ticks = rm.per_task_worst_response_ticks[index];
                assert_eq!(worst_ticks, response_ticks, "RM {tasks:?} task {index}");
            }
        }
    }
}
