//! The job table the real-time libOS runs from: releases, deadline drops,
//! dispatch through an [`RtScheduler`] and the accounting, in a fixed-size
//! value with no heap, so the program can keep it in pinned memory.
//!
//! Jobs are resumable work, not threads. The program drives the table in
//! steps at the granularity of a *work unit*, reading the clock between
//! steps:
//!
//! 1. [`JobTable::advance`] to `now`: every ready job whose absolute
//!    deadline is at or before `now` is dropped and counted as a miss; then
//!    every job due (release at or before `now`) is released. If the
//!    program fell behind by whole periods (it was off the processor), the
//!    jobs it skipped are released and, their deadlines being past already,
//!    counted as misses at once, so nothing is lost from the books.
//! 2. [`JobTable::pick`]: the policy picks a ready job (or none: idle until
//!    [`JobTable::next_release_ticks`]).
//! 3. The program does up to [`JobTable::work_for`] ticks of the job's work
//!    and reports it with [`JobTable::ran`], which completes the job when
//!    its budget is used up.
//!
//! A job released in the middle of a work unit therefore waits for the
//! unit's end: preemption happens at work-unit granularity, and that delay
//! shows up as release jitter.
//!
//! Because deadlines are constrained (`D <= T`), a task's job is completed
//! or dropped before the task's next release is handled, so a task has at
//! most one ready job and the table needs one job slot per task.
//!
//! Accounting: `released = completed + misses + unfinished` (after
//! [`JobTable::finish`]). A job that completes after its deadline (its last
//! work unit straddled it) counts as a miss, not a completion. Release
//! jitter is the time from a job's release to the first time it was picked;
//! response time is release to completion.

use crate::sched::{check_tasks, Job, RtScheduler, Task, TaskSetError};

/// Most tasks one table holds.
pub const MAX_TASKS: usize = 16;

/// What happened to one task's jobs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskStats {
    /// Jobs released before the horizon.
    pub jobs_released: u64,
    /// Jobs that finished by their deadline.
    pub jobs_completed: u64,
    /// Jobs dropped at their deadline, skipped while the program was away,
    /// or finished late.
    pub misses: u64,
    /// Longest delay from a job's release to the first time it was picked.
    pub max_release_jitter_ticks: u64,
    /// Longest release-to-completion time of a job that finished (late ones
    /// included).
    pub max_response_ticks: u64,
}

/// Totals over every task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub jobs_released: u64,
    pub jobs_completed: u64,
    pub misses: u64,
    /// Jobs still ready at the horizon with their deadline after it.
    pub jobs_unfinished: u64,
    pub max_release_jitter_ticks: u64,
    /// Times an unfinished job was passed over for another one.
    pub preemptions: u64,
    /// Work units handed out.
    pub work_units: u64,
}

/// Why [`JobTable::load`] refused a task set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// More than [`MAX_TASKS`] tasks.
    TooMany,
    /// A task breaks the model (see [`Task::is_valid`]).
    Invalid(TaskSetError),
}

const NO_TASK: Task = Task::new(0, 1, 0, 1);
const NO_JOB: Job = Job { task: 0, release_ticks: 0, absolute_deadline_ticks: 0, remaining_ticks: 0 };

/// Tasks, their ready jobs and their statistics, in fixed-size arrays.
/// Times are ticks since the start of the run, in whatever clock the
/// program uses.
#[derive(Clone, Debug)]
pub struct JobTable {
    task_count: usize,
    tasks: [Task; MAX_TASKS],
    next_release_ticks: [u64; MAX_TASKS],
    stats: [TaskStats; MAX_TASKS],
    ready_count: usize,
    ready: [Job; MAX_TASKS],
    /// The job the last work unit went to, if unfinished: (task, release).
    last_run: Option<(usize, u64)>,
    preemptions: u64,
    work_units: u64,
    unfinished: u64,
}

impl Default for JobTable {
    fn default() -> Self {
        Self::new()
    }
}

impl JobTable {
    /// An empty table.
    pub const fn new() -> Self {
        JobTable {
            task_count: 0,
            tasks: [NO_TASK; MAX_TASKS],
            next_release_ticks: [0; MAX_TASKS],
            stats: [TaskStats {
                jobs_released: 0,
                jobs_completed: 0,
                misses: 0,
                max_release_jitter_ticks: 0,
                max_response_ticks: 0,
            }; MAX_TASKS],
            ready_count: 0,
            ready: [NO_JOB; MAX_TASKS],
            last_run: None,
            preemptions: 0,
            work_units: 0,
            unfinished: 0,
        }
    }

    /// Start over with `tasks`, every one releasing its first job at tick 0.
    pub fn load(&mut self, tasks: &[Task]) -> Result<(), LoadError> {
        if tasks.len() > MAX_TASKS {
            return Err(LoadError::TooMany);
        }
        check_tasks(tasks).map_err(LoadError::Invalid)?;
        *self = JobTable::new();
        self.task_count = tasks.len();
        self.tasks[..tasks.len()].copy_from_slice(tasks);
        Ok(())
    }

    pub fn tasks(&self) -> &[Task] {
        &self.tasks[..self.task_count]
    }

    /// Statistics, indexed like [`JobTable::tasks`].
    pub fn stats(&self) -> &[TaskStats] {
        &self.stats[..self.task_count]
    }

    /// The released, unfinished jobs (in no particular order).
    pub fn ready(&self) -> &[Job] {
        &self.ready[..self.ready_count]
    }

    /// When the next job is due.
    pub fn next_release_ticks(&self) -> u64 {
        self.next_release_ticks[..self.task_count].iter().copied().min().unwrap_or(u64::MAX)
    }

    /// Drop the jobs whose deadline has come, then release the jobs due.
    pub fn advance(&mut self, now_ticks: u64) {
        self.drop_due(now_ticks);
        for task in 0..self.task_count {
            while self.next_release_ticks[task] <= now_ticks {
                let release_ticks = self.next_release_ticks[task];
                self.release(task, release_ticks, now_ticks);
            }
        }
    }

    /// Count every ready job due at or before `now_ticks` as a miss and drop it.
    fn drop_due(&mut self, now_ticks: u64) {
        let mut index = 0;
        while index < self.ready_count {
            let job = self.ready[index];
            if job.absolute_deadline_ticks <= now_ticks {
                self.stats[job.task].misses += 1;
                self.remove(index);
            } else {
                index += 1;
            }
        }
    }

    fn release(&mut self, task: usize, release_ticks: u64, now_ticks: u64) {
        let params = self.tasks[task];
        self.next_release_ticks[task] = release_ticks.saturating_add(params.period_ticks);
        let stats = &mut self.stats[task];
        stats.jobs_released += 1;
        let job = Job::released(task, &self.tasks, release_ticks);
        if params.budget_ticks == 0 {
            stats.jobs_completed += 1;
        } else if job.absolute_deadline_ticks <= now_ticks {
            stats.misses += 1;
        } else {
            // At most one ready job per task (see the module notes), so
            // there is always room; refuse rather than overrun if not.
            debug_assert!(self.ready_count < MAX_TASKS);
            if self.ready_count < MAX_TASKS {
                self.ready[self.ready_count] = job;
                self.ready_count += 1;
            } else {
                stats.misses += 1;
            }
        }
    }

    fn remove(&mut self, index: usize) {
        self.ready_count -= 1;
        self.ready[index] = self.ready[self.ready_count];
    }

    /// The ready job to run next under `scheduler`: its index in
    /// [`JobTable::ready`], or `None` when nothing is ready. Records the
    /// release jitter of a job picked for the first time at `now_ticks`.
    pub fn pick(&mut self, scheduler: &mut dyn RtScheduler, now_ticks: u64) -> Option<usize> {
        let ready = &self.ready[..self.ready_count];
        let index = scheduler.pick(ready, self.tasks()).filter(|&index| index < ready.len())?;
        let job = ready[index];
        if let Some(last) = self.last_run {
            if last != (job.task, job.release_ticks) && ready.iter().any(|j| (j.task, j.release_ticks) == last) {
                self.preemptions += 1;
            }
        }
        if job.remaining_ticks == self.tasks[job.task].budget_ticks {
            let stats = &mut self.stats[job.task];
            let jitter_ticks = now_ticks.saturating_sub(job.release_ticks);
            stats.max_release_jitter_ticks = stats.max_release_jitter_ticks.max(jitter_ticks);
        }
        Some(index)
    }

    /// How much of ready job `index` to do now: its remaining budget, at
    /// most `work_unit_ticks`.
    pub fn work_for(&self, index: usize, work_unit_ticks: u64) -> u64 {
        self.ready[index].remaining_ticks.min(work_unit_ticks)
    }

    /// Ready job `index` did `work_ticks` of work, ending at `now_ticks`.
    /// Returns whether that completed it.
    pub fn ran(&mut self, index: usize, work_ticks: u64, now_ticks: u64) -> bool {
        self.work_units += 1;
        let job = &mut self.ready[index];
        job.remaining_ticks = job.remaining_ticks.saturating_sub(work_ticks);
        if job.remaining_ticks > 0 {
            self.last_run = Some((job.task, job.release_ticks));
            return false;
        }
        let job = *job;
        let stats = &mut self.stats[job.task];
        let response_ticks = now_ticks.saturating_sub(job.release_ticks);
        stats.max_response_ticks = stats.max_response_ticks.max(response_ticks);
        if now_ticks <= job.absolute_deadline_ticks {
            stats.jobs_completed += 1;
        } else {
            stats.misses += 1;
        }
        self.remove(index);
        self.last_run = None;
        true
    }

    /// Close the books at the horizon: ready jobs due by it are misses;
    /// jobs released before it and not yet handled are released (and are
    /// misses too if due by it); what is left is unfinished.
    pub fn finish(&mut self, horizon_ticks: u64) {
        self.drop_due(horizon_ticks);
        for task in 0..self.task_count {
            while self.next_release_ticks[task] < horizon_ticks {
                let release_ticks = self.next_release_ticks[task];
                self.release(task, release_ticks, horizon_ticks);
            }
        }
        self.unfinished += self.ready_count as u64;
        self.ready_count = 0;
        self.last_run = None;
    }

    /// Totals over every task.
    pub fn totals(&self) -> Totals {
        let mut totals = Totals {
            jobs_unfinished: self.unfinished,
            preemptions: self.preemptions,
            work_units: self.work_units,
            ..Totals::default()
        };
        for stats in self.stats() {
            totals.jobs_released += stats.jobs_released;
            totals.jobs_completed += stats.jobs_completed;
            totals.misses += stats.misses;
            totals.max_release_jitter_ticks = totals.max_release_jitter_ticks.max(stats.max_release_jitter_ticks);
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::{by_name, hyperperiod_ticks, simulate, NAMES};
    use std::vec::Vec;

    fn task_set(pairs: &[(u64, u64)]) -> Vec<Task> {
        pairs.iter().enumerate().map(|(id, &(budget, period))| Task::implicit(id, period, budget)).collect()
    }

    /// Drive a table the way the program does, with a clock that moves by
    /// exactly the work done (no overhead), `stall(now)` ticks of absence
    /// before each step (the processor taken away), and idling to the next
    /// release.
    fn drive(
        tasks: &[Task],
        policy: &str,
        horizon_ticks: u64,
        work_unit_ticks: u64,
        stall: impl Fn(u64) -> u64,
    ) -> JobTable {
        let mut scheduler = by_name(policy).unwrap();
        let mut table = JobTable::new();
        table.load(tasks).unwrap();
        let mut now_ticks = 0;
        loop {
            now_ticks += stall(now_ticks);
            if now_ticks >= horizon_ticks {
                break;
            }
            table.advance(now_ticks);
            match table.pick(&mut *scheduler, now_ticks) {
                Some(index) => {
                    let work_ticks = table.work_for(index, work_unit_ticks);
                    now_ticks += work_ticks;
                    table.ran(index, work_ticks, now_ticks);
                }
                None => now_ticks = table.next_release_ticks().min(horizon_ticks),
            }
        }
        table.finish(horizon_ticks);
        table
    }

    fn check_books(table: &JobTable) {
        let totals = table.totals();
        assert_eq!(totals.jobs_released, totals.jobs_completed + totals.misses + totals.jobs_unfinished);
        assert!(table.ready().is_empty());
    }

    #[test]
    fn agrees_with_the_simulator_at_one_tick_work_units() {
        let sets = [
            task_set(&[(2, 5), (4, 7)]),
            task_set(&[(1, 4), (2, 6), (3, 13)]),
            task_set(&[(3, 5), (3, 7)]),
            std::vec![Task::new(0, 10, 3, 5), Task::new(1, 15, 4, 6)],
            std::vec![Task::new(0, 4, 2, 3), Task::new(1, 6, 2, 4), Task::implicit(2, 12, 0)],
        ];
        for tasks in &sets {
            let horizon_ticks = hyperperiod_ticks(tasks).unwrap() * 3 + 1;
            for policy in NAMES {
                let table = drive(tasks, policy, horizon_ticks, 1, |_| 0);
                let report = simulate(tasks, &mut *by_name(policy).unwrap(), horizon_ticks, 1).unwrap();
                let totals = table.totals();
                let what = std::format!("{policy} {tasks:?}");
                assert_eq!(totals.jobs_released, report.jobs_released, "{what}");
                assert_eq!(totals.jobs_completed, report.jobs_completed, "{what}");
                assert_eq!(totals.misses, report.deadline_misses, "{what}");
                assert_eq!(totals.jobs_unfinished, report.jobs_unfinished_at_horizon, "{what}");
                assert_eq!(totals.max_release_jitter_ticks, report.max_release_jitter_ticks, "{what}");
                assert_eq!(totals.preemptions, report.preemptions, "{what}");
                let misses: Vec<u64> = table.stats().iter().map(|s| s.misses).collect();
                assert_eq!(misses, report.per_task_misses, "{what}");
                let responses: Vec<u64> = table.stats().iter().map(|s| s.max_response_ticks).collect();
                assert_eq!(responses, report.per_task_worst_response_ticks, "{what}");
                check_books(&table);
            }
        }
    }

    #[test]
    fn edf_meets_and_rm_misses_the_0_971_set_at_coarse_work_units() {
        // Units of 20 ticks, work units of 1 tick: the libOS's default shape.
        let tasks = task_set(&[(40, 100), (80, 140)]);
        let edf = drive(&tasks, "edf", 7000, 1, |_| 0);
        assert_eq!(edf.totals().misses, 0);
        assert_eq!(edf.totals().jobs_released, 70 + 50);
        let rm = drive(&tasks, "rm", 7000, 1, |_| 0);
        assert!(rm.totals().misses > 0);
        assert_eq!(rm.stats()[0].misses, 0);
        check_books(&edf);
        check_books(&rm);
    }

    #[test]
    fn releases_mid_unit_wait_for_the_unit_boundary() {
        // Task 1 runs in units of 4 from tick 1 (1-5, 5-9); task 0's job
        // released at 6 waits for the end of that unit.
        let tasks = task_set(&[(1, 6), (20, 40)]);
        let table = drive(&tasks, "rm", 40, 4, |_| 0);
        assert_eq!(table.stats()[0].max_release_jitter_ticks, 3, "released at 6, picked at 9");
        assert_eq!(table.totals().misses, 0);
        assert!(table.totals().preemptions > 0);
        check_books(&table);
    }

    #[test]
    fn time_away_counts_skipped_jobs_as_misses() {
        // Away for 25 ticks at tick 10: the jobs released at 10 and 20 are
        // past their deadlines on return; the one released at 30 is not.
        let tasks = task_set(&[(1, 10)]);
        let stalled = core::cell::Cell::new(false);
        let table = drive(&tasks, "edf", 60, 1, |now| if now >= 10 && !stalled.replace(true) { 25 } else { 0 });
        let stats = table.stats()[0];
        assert_eq!(stats.jobs_released, 6);
        assert_eq!(stats.misses, 2);
        assert_eq!(stats.jobs_completed, 4);
        assert_eq!(stats.max_release_jitter_ticks, 5, "the job released at 30 starts at 35");
        check_books(&table);
    }

    #[test]
    fn a_job_finishing_past_its_deadline_is_a_miss() {
        let tasks = std::vec![Task::new(0, 10, 3, 3)];
        let mut table = JobTable::new();
        table.load(&tasks).unwrap();
        let mut edf = by_name("edf").unwrap();
        table.advance(0);
        let index = table.pick(&mut *edf, 1).unwrap();
        assert!(!table.ran(index, 2, 2));
        let index = table.pick(&mut *edf, 2).unwrap();
        assert!(table.ran(index, 1, 4), "finished, one tick late");
        let stats = table.stats()[0];
        assert_eq!((stats.jobs_completed, stats.misses, stats.max_response_ticks), (0, 1, 4));
        assert_eq!(stats.max_release_jitter_ticks, 1);
        // A job finishing exactly at its deadline meets it.
        table.advance(10);
        let index = table.pick(&mut *edf, 10).unwrap();
        assert!(table.ran(index, 3, 13));
        assert_eq!(table.stats()[0].jobs_completed, 1);
    }

    #[test]
    fn finish_closes_the_books_at_the_horizon() {
        let tasks = task_set(&[(2, 4), (3, 10)]);
        let mut table = JobTable::new();
        table.load(&tasks).unwrap();
        table.advance(0);
        // Stop at 6 having run nothing: task 0's jobs at 0 (due 4) and at 4
        // (due 8) and task 1's at 0 (due 10).
        table.finish(6);
        let totals = table.totals();
        assert_eq!((totals.jobs_released, totals.misses, totals.jobs_unfinished), (3, 1, 2));
        check_books(&table);
    }

    #[test]
    fn load_refuses_bad_sets_and_resets() {
        let mut table = JobTable::new();
        let too_many: Vec<Task> = (0..=MAX_TASKS).map(|id| Task::implicit(id, 100, 1)).collect();
        assert_eq!(table.load(&too_many), Err(LoadError::TooMany));
        assert_eq!(
            table.load(&[Task::new(0, 4, 1, 5)]),
            Err(LoadError::Invalid(TaskSetError::InvalidTask { index: 0 }))
        );
        table.load(&too_many[..MAX_TASKS]).unwrap();
        table.advance(0);
        assert_eq!(table.ready().len(), MAX_TASKS);
        table.load(&task_set(&[(1, 3)])).unwrap();
        assert!(table.ready().is_empty());
        assert_eq!(table.next_release_ticks(), 0);
        assert_eq!(JobTable::new().next_release_ticks(), u64::MAX);
    }

    #[test]
    fn random_sets_keep_the_books_balanced_under_stalls() {
        let mut seed = 0x1234_5678_u64;
        let mut below = |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        for _ in 0..200 {
            let count = 1 + below(5) as usize;
            let tasks: Vec<Task> = (0..count)
                .map(|id| {
                    let period = 2 + below(30);
                    Task::new(id, period, below(period / 2 + 1), 1 + below(period))
                })
                .collect();
            let (unit, every, away) = (1 + below(4), 1 + below(20), below(40));
            for policy in NAMES {
                let table = drive(&tasks, policy, 300, unit, |now| if now % every == 0 { away } else { 0 });
                check_books(&table);
                for (task, stats) in tasks.iter().zip(table.stats()) {
                    assert_eq!(stats.jobs_released, 300u64.div_ceil(task.period_ticks), "{policy} {tasks:?}");
                }
            }
        }
    }
}
