//! User-level thread bookkeeping: which thread runs next, when sleepers wake, and what each thread got.
//!
//! The exokernel hands the libOS the processor for its time slots and an
//! upcall at every slot end; the program (`threads.rs`) turns those upcalls
//! and its threads' voluntary entries into [`Event`]s, and a
//! [`ThreadTable`] decides, with the manifest's [`ProcScheduler`], which
//! thread resumes. The table is generic over the saved register context
//! `C`, which it only stores: the program copies contexts in and out of
//! the upcall frame.
//!
//! Thread [`IDLE`] is the context that built the table (the program's main
//! loop). It is never handed to the policy: it runs when no other thread
//! is runnable and is left as soon as one is.
//!
//! Time is in TSC ticks (`*_tsc` are instants, `*_ticks` durations); the
//! policy's quanta are counted in timer [`Event::Tick`]s.

use crate::sched::ProcScheduler;
use alloc::boxed::Box;
use alloc::vec::Vec;

/// The thread that built the table: runs when nothing else can.
pub const IDLE: usize = 0;

/// Where a thread stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadState {
    /// Running or waiting for the processor.
    Runnable,
    /// Blocked until the TSC reaches `until_tsc` (noticed at the next event).
    Sleeping { until_tsc: u64 },
    /// Its body returned (or it was killed); never runs again.
    Finished,
}

/// What brought the libOS into its thread scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A timer tick (end of a time slot) interrupted the current thread.
    Tick,
    /// The current thread blocks until `until_tsc`.
    Sleep { until_tsc: u64 },
    /// The current thread gives up the processor but stays runnable.
    Yield,
    /// The current thread is done.
    Finish,
}

/// What one thread received, for the report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadStats {
    /// TSC ticks it held the processor (charged at every switch).
    pub cpu_ticks: u64,
    /// Times it was given the processor.
    pub slices: u64,
    /// Times it woke from a sleep, and the wait from waking to running.
    pub wakeups: u64,
    pub latency_total_ticks: u64,
    pub latency_max_ticks: u64,
}

impl ThreadStats {
    /// Mean wake-to-run latency in ticks (0 without wakeups).
    pub fn latency_avg_ticks(&self) -> u64 {
        self.latency_total_ticks / self.wakeups.max(1)
    }
}

struct Thread<C> {
    context: C,
    state: ThreadState,
    /// When it last woke, until it runs.
    woken_at_tsc: Option<u64>,
    stats: ThreadStats,
}

/// Every thread of the libOS, the policy choosing among them, and the
/// accounting.
pub struct ThreadTable<C> {
    threads: Vec<Thread<C>>,
    policy: Box<dyn ProcScheduler>,
    current: usize,
    /// Ticks the current thread has run of its slice.
    slice_ticks: u64,
    /// When the current thread was last charged.
    charged_until_tsc: u64,
    switches: u64,
}

impl<C: Copy> ThreadTable<C> {
    /// A table holding only [`IDLE`], which runs now with `idle_context`.
    pub fn new(policy: Box<dyn ProcScheduler>, idle_context: C, now_tsc: u64) -> Self {
        let idle = Thread {
            context: idle_context,
            state: ThreadState::Runnable,
            woken_at_tsc: None,
            stats: ThreadStats::default(),
        };
        ThreadTable {
            threads: alloc::vec![idle],
            policy,
            current: IDLE,
            slice_ticks: 0,
            charged_until_tsc: now_tsc,
            switches: 0,
        }
    }

    /// Add a runnable thread that will start from `context`; returns its id.
    pub fn spawn(&mut self, context: C) -> usize {
        let tid = self.threads.len();
        self.threads.push(Thread {
            context,
            state: ThreadState::Runnable,
            woken_at_tsc: None,
            stats: ThreadStats::default(),
        });
        self.policy.add(tid);
        tid
    }

    /// Threads including [`IDLE`].
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Never true: [`IDLE`] is always there.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The thread holding the processor.
    pub fn current(&self) -> usize {
        self.current
    }

    pub fn policy_name(&self) -> &'static str {
        self.policy.name()
    }

    /// Thread switches so far (decisions that changed the running thread).
    pub fn switches(&self) -> u64 {
        self.switches
    }

    pub fn state(&self, tid: usize) -> ThreadState {
        self.threads[tid].state
    }

    pub fn stats(&self, tid: usize) -> ThreadStats {
        self.threads[tid].stats
    }

    /// The saved context of `tid` (the current thread's is stale until the
    /// program saves it).
    pub fn context(&self, tid: usize) -> &C {
        &self.threads[tid].context
    }

    pub fn context_mut(&mut self, tid: usize) -> &mut C {
        &mut self.threads[tid].context
    }

    /// Every thread but [`IDLE`] has finished.
    pub fn all_finished(&self) -> bool {
        self.threads[1..].iter().all(|t| t.state == ThreadState::Finished)
    }

    /// The earliest wake-up time among sleepers.
    pub fn next_wake_tsc(&self) -> Option<u64> {
        self.threads
            .iter()
            .filter_map(|t| match t.state {
                ThreadState::Sleeping { until_tsc } => Some(until_tsc),
                _ => None,
            })
            .min()
    }

    /// Charge the current thread for the processor up to `now_tsc`.
    pub fn charge(&mut self, now_tsc: u64) {
        let used = now_tsc.saturating_sub(self.charged_until_tsc);
        self.threads[self.current].stats.cpu_ticks += used;
        self.charged_until_tsc = self.charged_until_tsc.max(now_tsc);
    }

    /// The libOS gave the processor to other environments at `left_tsc`
    /// and got it back at `back_tsc`: the current thread is charged up to
    /// its leaving, nobody for the time away.
    pub fn resumed(&mut self, left_tsc: u64, back_tsc: u64) {
        self.charge(left_tsc);
        self.charged_until_tsc = self.charged_until_tsc.max(back_tsc);
    }

    /// Up to when the current thread has been charged.
    pub fn charged_until_tsc(&self) -> u64 {
        self.charged_until_tsc
    }

    /// CPU ticks `tid` has received, the current thread's running slice included.
    pub fn cpu_ticks_at(&self, tid: usize, now_tsc: u64) -> u64 {
        let running = if tid == self.current { now_tsc.saturating_sub(self.charged_until_tsc) } else { 0 };
        self.threads[tid].stats.cpu_ticks + running
    }

    /// Take `event` at `now_tsc` and return the thread that runs next (the
    /// current one when nothing changes). Sleepers whose time has come are
    /// woken first, whatever the event.
    pub fn handle(&mut self, event: Event, now_tsc: u64) -> usize {
        let current = self.current;
        let preempt = self.wake_due(now_tsc);
        if current == IDLE {
            return self.pick_next(now_tsc);
        }
        match event {
            Event::Tick => {
                self.slice_ticks += 1;
                // The quantum is asked afresh at every tick: a priority
                // boost during the slice shortens it.
                if self.slice_ticks >= self.policy.quantum_ticks(current) {
                    self.policy.on_quantum_end(current, true);
                    self.pick_next(now_tsc)
                } else if preempt {
                    self.policy.on_quantum_end(current, false);
                    self.pick_next(now_tsc)
                } else {
                    current
                }
            }
            Event::Yield => {
                self.policy.on_quantum_end(current, false);
                self.pick_next(now_tsc)
            }
            Event::Sleep { until_tsc } if until_tsc <= now_tsc => current,
            Event::Sleep { until_tsc } => {
                self.policy.on_quantum_end(current, false);
                self.policy.remove(current);
                self.threads[current].state = ThreadState::Sleeping { until_tsc };
                self.pick_next(now_tsc)
            }
            Event::Finish => {
                self.policy.remove(current);
                self.threads[current].state = ThreadState::Finished;
                self.pick_next(now_tsc)
            }
        }
    }

    /// Wake every sleeper due at `now_tsc`; true if the policy wants the
    /// running thread preempted for one of them.
    fn wake_due(&mut self, now_tsc: u64) -> bool {
        let mut preempt = false;
        for tid in 1..self.threads.len() {
            let thread = &mut self.threads[tid];
            if let ThreadState::Sleeping { until_tsc } = thread.state {
                if until_tsc <= now_tsc {
                    thread.state = ThreadState::Runnable;
                    thread.woken_at_tsc = Some(now_tsc);
                    thread.stats.wakeups += 1;
                    self.policy.add(tid);
                    preempt |= self.current != IDLE && self.policy.preempts(tid, self.current);
                }
            }
        }
        preempt
    }

    /// Ask the policy (nobody runnable: [`IDLE`]) and switch to its choice.
    fn pick_next(&mut self, now_tsc: u64) -> usize {
        let next = self.policy.pick().unwrap_or(IDLE);
        self.charge(now_tsc);
        if next != self.current {
            self.switches += 1;
        }
        self.current = next;
        self.slice_ticks = 0;
        let thread = &mut self.threads[next];
        thread.stats.slices += 1;
        if let Some(woken_at_tsc) = thread.woken_at_tsc.take() {
            let latency = now_tsc.saturating_sub(woken_at_tsc);
            thread.stats.latency_total_ticks += latency;
            thread.stats.latency_max_ticks = thread.stats.latency_max_ticks.max(latency);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::{by_name, NAMES};
    use std::vec::Vec;

    /// Nanosecond-like TSC ticks per timer tick in the simulations.
    const TICK: u64 = 1000;

    fn table(policy: &str) -> ThreadTable<u32> {
        ThreadTable::new(by_name(policy).unwrap(), 0, 0)
    }

    #[test]
    fn idle_runs_until_a_thread_exists_and_then_yields_to_it() {
        for name in NAMES {
            let mut threads = table(name);
            assert_eq!(threads.handle(Event::Tick, TICK), IDLE, "{name}");
            let worker = threads.spawn(7);
            assert_eq!(*threads.context(worker), 7);
            assert_eq!(threads.handle(Event::Tick, 2 * TICK), worker, "{name}");
            assert_eq!(threads.switches(), 1);
            assert_eq!(threads.stats(IDLE).cpu_ticks, 2 * TICK, "{name}: idle charged until the switch");
        }
    }

    #[test]
    fn round_robin_rotates_every_quantum_and_shares_evenly() {
        let mut threads = table("rr");
        let tids: Vec<usize> = (0..3).map(|i| threads.spawn(i)).collect();
        let mut now = 0;
        let mut runs = Vec::new();
        for _ in 0..600 {
            now += TICK;
            runs.push(threads.handle(Event::Tick, now));
        }
        threads.charge(now);
        // Two-tick quanta in arrival order.
        assert_eq!(&runs[..7], &[1, 1, 2, 2, 3, 3, 1]);
        for &tid in &tids {
            let cpu = threads.stats(tid).cpu_ticks;
            assert!((199 * TICK..=201 * TICK).contains(&cpu), "thread {tid}: {cpu}");
        }
        assert_eq!(threads.stats(IDLE).cpu_ticks, TICK);
    }

    #[test]
    fn sleepers_are_not_picked_and_wake_at_the_next_event() {
        for name in NAMES {
            let mut threads = table(name);
            let sleeper = threads.spawn(0);
            assert_eq!(threads.handle(Event::Tick, 10), sleeper);
            assert_eq!(threads.handle(Event::Sleep { until_tsc: 5 }, 20), sleeper, "{name}: already due: no sleep");
            assert_eq!(threads.handle(Event::Sleep { until_tsc: 3500 }, 30), IDLE, "{name}");
            assert_eq!(threads.state(sleeper), ThreadState::Sleeping { until_tsc: 3500 });
            assert_eq!(threads.next_wake_tsc(), Some(3500));
            assert_eq!(threads.handle(Event::Tick, 3000), IDLE, "{name}: not yet");
            assert_eq!(threads.handle(Event::Yield, 3600), sleeper, "{name}: idle noticed it is due");
            let stats = threads.stats(sleeper);
            assert_eq!((stats.wakeups, stats.latency_max_ticks), (1, 0));
            assert_eq!(stats.cpu_ticks, 30 - 10);
        }
    }

    #[test]
    fn finished_threads_never_run_again() {
        for name in NAMES {
            let mut threads = table(name);
            let a = threads.spawn(0);
            let b = threads.spawn(0);
            assert_eq!(threads.handle(Event::Tick, TICK), a);
            assert_eq!(threads.handle(Event::Finish, 2 * TICK), b);
            assert!(!threads.all_finished());
            for step in 3..50 {
                assert_eq!(threads.handle(Event::Tick, step * TICK), b, "{name}");
            }
            assert_eq!(threads.handle(Event::Finish, 50 * TICK), IDLE);
            assert!(threads.all_finished());
            assert_eq!(threads.state(a), ThreadState::Finished);
        }
    }

    #[test]
    fn time_away_from_the_processor_is_charged_to_nobody() {
        let mut threads = table("rr");
        let a = threads.spawn(0);
        threads.handle(Event::Tick, 100);
        threads.resumed(150, 1000);
        assert_eq!(threads.charged_until_tsc(), 1000);
        assert_eq!(threads.cpu_ticks_at(a, 1100), 150);
        threads.charge(1100);
        assert_eq!(threads.stats(a).cpu_ticks, 150);
    }

    /// The scenario's workload on simulated time: three CPU-bound threads
    /// and one that works `work` ticks and sleeps `sleep` ticks, timer
    /// ticks every `TICK`. Returns (max latency, batch CPU per thread).
    fn simulate(name: &str, work: u64, sleep: u64, end: u64) -> (u64, Vec<u64>) {
        let mut threads = table(name);
        let batch: Vec<usize> = (0..3).map(|_| threads.spawn(0)).collect();
        let interactive = threads.spawn(0);
        let mut now = 0;
        let mut next_tick = TICK;
        let mut worked = 0;
        let mut running = threads.handle(Event::Yield, now);
        while now < end {
            if running == interactive && worked + (next_tick - now) >= work {
                now += work - worked;
                worked = 0;
                running = threads.handle(Event::Sleep { until_tsc: now + sleep }, now);
                continue;
            }
            if running == IDLE {
                if let Some(wake) = threads.next_wake_tsc().filter(|&wake| wake < next_tick) {
                    now = wake;
                    running = threads.handle(Event::Yield, now);
                    continue;
                }
            }
            if running == interactive {
                worked += next_tick - now;
            }
            now = next_tick;
            next_tick += TICK;
            running = threads.handle(Event::Tick, now);
        }
        threads.charge(now);
        (threads.stats(interactive).latency_max_ticks, batch.iter().map(|&tid| threads.stats(tid).cpu_ticks).collect())
    }

    #[test]
    fn mlfq_answers_a_sleeper_sooner_than_round_robin() {
        let (rr_latency, rr_batch) = simulate("rr", TICK / 5, 3 * TICK + TICK / 3, 3000 * TICK);
        let (mlfq_latency, mlfq_batch) = simulate("mlfq", TICK / 5, 3 * TICK + TICK / 3, 3000 * TICK);
        assert!(rr_latency >= 2 * TICK, "round robin queues the sleeper behind the batch: {rr_latency}");
        assert!(mlfq_latency < rr_latency, "mlfq {mlfq_latency} vs rr {rr_latency}");
        let fair = |cpu: &[u64]| {
            let total: u64 = cpu.iter().sum();
            cpu.iter().all(|&c| c * 3 * 100 >= total * 95 && c * 3 * 100 <= total * 105)
        };
        assert!(fair(&rr_batch), "rr batch shares {rr_batch:?}");
        assert!(mlfq_batch.iter().all(|&c| c > 0), "mlfq boosts keep every batch thread going: {mlfq_batch:?}");
    }
}
