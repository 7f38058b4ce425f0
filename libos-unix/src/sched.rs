//! Process scheduling policies (round robin, multi-level feedback queue) for the Unix libOS.
//!
//! The exokernel gives the libOS the processor and timer upcalls; which of
//! its processes runs on it, and for how long, is the libOS's choice, made
//! by a [`ProcScheduler`]. The policy is named in the manifest and built
//! with [`by_name`].
//!
//! Protocol: [`ProcScheduler::add`] when a process becomes runnable (created
//! or woken), [`ProcScheduler::remove`] when it stops being runnable
//! (blocked or exited); both are idempotent. [`ProcScheduler::pick`] names
//! the process to run next and leaves it runnable; it runs for
//! [`ProcScheduler::quantum_ticks`], and when its slice ends the libOS
//! reports through [`ProcScheduler::on_quantum_end`] whether the timer took
//! the whole quantum or the process gave up the processor first. Reports
//! about processes that are not runnable are ignored. When a process wakes
//! while another runs, [`ProcScheduler::preempts`] says whether the policy
//! wants the running one's slice cut short for it.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};

/// A policy choosing which runnable process (by pid) gets the processor next.
pub trait ProcScheduler: Send {
    /// The policy's manifest name, as accepted by [`by_name`].
    fn name(&self) -> &'static str;

    /// `pid` became runnable (ignored if it already is).
    fn add(&mut self, pid: usize);

    /// `pid` is no longer runnable (ignored if it is not).
    fn remove(&mut self, pid: usize);

    /// The runnable process to run next, or `None` if there is none. It
    /// stays runnable; repeated picks without reports still rotate.
    fn pick(&mut self) -> Option<usize>;

    /// `pid`'s slice ended, after the whole quantum (`used_whole_quantum`,
    /// a CPU-bound sign) or early (it blocked or yielded).
    fn on_quantum_end(&mut self, pid: usize, used_whole_quantum: bool);

    /// How long `pid` may run when picked (also defined for unknown pids).
    fn quantum_ticks(&self, pid: usize) -> u64;

    /// `woken` just became runnable while `running` runs: should `running`'s
    /// slice end now so that the policy picks again? False for unknown pids.
    fn preempts(&self, woken: usize, running: usize) -> bool;
}

/// Manifest names of every policy, for [`by_name`].
pub const NAMES: [&str; 2] = ["rr", "mlfq"];

/// The slice of round robin and of the top MLFQ level, in timer ticks.
pub const DEFAULT_QUANTUM_TICKS: u64 = 2;

/// How often MLFQ lifts every process back to the top level, in picks.
pub const DEFAULT_BOOST_PERIOD_PICKS: u64 = 64;

/// The policy a manifest names, with default parameters: `"rr"` (round
/// robin) or `"mlfq"` (multi-level feedback queue).
pub fn by_name(name: &str) -> Option<Box<dyn ProcScheduler>> {
    match name {
        "rr" => Some(Box::new(RoundRobin::new(DEFAULT_QUANTUM_TICKS))),
        "mlfq" => Some(Box::new(Mlfq::new(DEFAULT_QUANTUM_TICKS, DEFAULT_BOOST_PERIOD_PICKS))),
        _ => None,
    }
}

/// Round robin: one FIFO queue, the same quantum for everyone; a picked
/// process goes to the back of the queue.
#[derive(Clone, Debug)]
pub struct RoundRobin {
    queue: VecDeque<usize>,
    quantum_ticks: u64,
}

impl RoundRobin {
    /// An empty run queue handing out slices of `quantum_ticks` (at least one).
    pub fn new(quantum_ticks: u64) -> Self {
        RoundRobin { queue: VecDeque::new(), quantum_ticks: quantum_ticks.max(1) }
    }
}

impl ProcScheduler for RoundRobin {
    fn name(&self) -> &'static str {
        "rr"
    }

    fn add(&mut self, pid: usize) {
        if !self.queue.contains(&pid) {
            self.queue.push_back(pid);
        }
    }

    fn remove(&mut self, pid: usize) {
        self.queue.retain(|&queued| queued != pid);
    }

    fn pick(&mut self) -> Option<usize> {
        let pid = self.queue.pop_front()?;
        self.queue.push_back(pid);
        Some(pid)
    }

    fn on_quantum_end(&mut self, _pid: usize, _used_whole_quantum: bool) {}

    fn quantum_ticks(&self, _pid: usize) -> u64 {
        self.quantum_ticks
    }

    /// Never: a woken process waits for its turn at the back of the queue.
    fn preempts(&self, _woken: usize, _running: usize) -> bool {
        false
    }
}

/// Number of MLFQ priority levels.
pub const MLFQ_LEVELS: usize = 3;

/// Multi-level feedback queue: [`MLFQ_LEVELS`] round-robin queues, the top
/// one first. A new process starts at the top; one that uses a whole
/// quantum drops a level (CPU-bound work sinks, interactive work that
/// blocks early stays on top); the quantum doubles per level, so sunken
/// processes run less often but longer. Every `boost_period_picks` picks
/// all processes return to the top, so none starves.
///
/// Not defended against gaming: a process that yields just before its
/// quantum ends stays on top (that needs per-level time allotments).
#[derive(Clone, Debug)]
pub struct Mlfq {
    levels: [VecDeque<usize>; MLFQ_LEVELS],
    level_of: BTreeMap<usize, usize>,
    base_quantum_ticks: u64,
    boost_period_picks: u64,
    picks_since_boost: u64,
}

impl Mlfq {
    /// An empty MLFQ whose top level hands out `base_quantum_ticks` (at
    /// least one) and which boosts every `boost_period_picks` picks
    /// (0 never boosts, leaving sunken processes to starve).
    pub fn new(base_quantum_ticks: u64, boost_period_picks: u64) -> Self {
        Mlfq {
            levels: Default::default(),
            level_of: BTreeMap::new(),
            base_quantum_ticks: base_quantum_ticks.max(1),
            boost_period_picks,
            picks_since_boost: 0,
        }
    }

    /// The level `pid` sits at (0 is the top), or `None` if it is not runnable.
    pub fn level(&self, pid: usize) -> Option<usize> {
        self.level_of.get(&pid).copied()
    }

    /// Move every process to the top level, keeping their relative order,
    /// higher levels first.
    fn boost(&mut self) {
        let (top, lower) = self.levels.split_at_mut(1);
        for queue in lower {
            top[0].append(queue);
        }
        for level in self.level_of.values_mut() {
            *level = 0;
        }
    }
}

impl ProcScheduler for Mlfq {
    fn name(&self) -> &'static str {
        "mlfq"
    }

    fn add(&mut self, pid: usize) {
        if self.level_of.contains_key(&pid) {
            return;
        }
        self.level_of.insert(pid, 0);
        self.levels[0].push_back(pid);
    }

    fn remove(&mut self, pid: usize) {
        if let Some(level) = self.level_of.remove(&pid) {
            self.levels[level].retain(|&queued| queued != pid);
        }
    }

    fn pick(&mut self) -> Option<usize> {
        self.picks_since_boost += 1;
        if self.boost_period_picks != 0 && self.picks_since_boost >= self.boost_period_picks {
            self.boost();
            self.picks_since_boost = 0;
        }
        let queue = self.levels.iter_mut().find(|queue| !queue.is_empty())?;
        let pid = queue.pop_front()?;
        queue.push_back(pid);
        Some(pid)
    }

    fn on_quantum_end(&mut self, pid: usize, used_whole_quantum: bool) {
        let Some(&level) = self.level_of.get(&pid) else {
            return;
        };
        if !used_whole_quantum || level + 1 == MLFQ_LEVELS {
            return;
        }
        self.levels[level].retain(|&queued| queued != pid);
        self.levels[level + 1].push_back(pid);
        self.level_of.insert(pid, level + 1);
    }

    fn quantum_ticks(&self, pid: usize) -> u64 {
        self.base_quantum_ticks << self.level(pid).unwrap_or(0)
    }

    /// When the woken process sits on a higher level than the running one
    /// (the running one has sunk by using whole quanta).
    fn preempts(&self, woken: usize, running: usize) -> bool {
        match (self.level(woken), self.level(running)) {
            (Some(woken_level), Some(running_level)) => woken_level < running_level,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeSet;
    use std::vec;
    use std::vec::Vec;

    fn policies() -> Vec<Box<dyn ProcScheduler>> {
        NAMES.iter().map(|name| by_name(name).unwrap()).collect()
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
    }

    /// Pick and report back `rounds` times, each slice using the whole
    /// quantum when `cpu_bound(pid)` says so; returns the picks in order.
    fn run(scheduler: &mut dyn ProcScheduler, rounds: usize, mut cpu_bound: impl FnMut(usize) -> bool) -> Vec<usize> {
        let mut picks = Vec::new();
        for _ in 0..rounds {
            let Some(pid) = scheduler.pick() else { break };
            assert!(scheduler.quantum_ticks(pid) > 0);
            scheduler.on_quantum_end(pid, cpu_bound(pid));
            picks.push(pid);
        }
        picks
    }

    // --- Every policy --------------------------------------------------------

    #[test]
    fn by_name_builds_every_policy() {
        for name in NAMES {
            assert_eq!(by_name(name).unwrap().name(), name);
        }
        assert!(by_name("cfs").is_none());
        assert!(by_name("").is_none());
    }

    #[test]
    fn nothing_to_pick_when_empty() {
        for mut scheduler in policies() {
            assert_eq!(scheduler.pick(), None, "{}", scheduler.name());
            scheduler.add(7);
            scheduler.remove(7);
            scheduler.remove(8);
            scheduler.on_quantum_end(9, true);
            assert_eq!(scheduler.pick(), None, "{}", scheduler.name());
            assert!(scheduler.quantum_ticks(9) > 0, "{}", scheduler.name());
        }
    }

    #[test]
    fn every_added_pid_gets_picked() {
        let mut rng = Rng(0x9e3779b97f4a7c15);
        for mut scheduler in policies() {
            for pid in 10..15 {
                scheduler.add(pid);
            }
            let first: BTreeSet<usize> = run(&mut *scheduler, 5, |_| false).into_iter().collect();
            assert_eq!(first, (10..15).collect::<BTreeSet<_>>(), "{}: one round reaches everyone", scheduler.name());
            // Whatever the mix of CPU-bound and interactive slices, nobody is left out for long.
            let picks = run(&mut *scheduler, 1000, |_| rng.below(2) == 0);
            for pid in 10..15 {
                let count = picks.iter().filter(|&&picked| picked == pid).count();
                assert!(count >= 10, "{} pid {pid}: {count} picks", scheduler.name());
            }
        }
    }

    #[test]
    fn removed_pids_are_never_picked() {
        let mut rng = Rng(0x2545f4914f6cdd1d);
        for mut scheduler in policies() {
            for pid in 0..8 {
                scheduler.add(pid);
            }
            let mut runnable: BTreeSet<usize> = (0..8).collect();
            for _ in 0..2000 {
                let pid = scheduler.pick().unwrap();
                assert!(runnable.contains(&pid), "{} picked {pid}, not runnable", scheduler.name());
                scheduler.on_quantum_end(pid, rng.below(3) == 0);
                match rng.below(4) {
                    // The running process blocks, or another one exits.
                    0 if runnable.len() > 1 => {
                        scheduler.remove(pid);
                        runnable.remove(&pid);
                    }
                    1 => {
                        let other = rng.below(8) as usize;
                        if runnable.len() > 1 || !runnable.contains(&other) {
                            scheduler.remove(other);
                            runnable.remove(&other);
                        }
                    }
                    // Someone wakes up (perhaps twice).
                    _ => {
                        let woken = rng.below(8) as usize;
                        scheduler.add(woken);
                        runnable.insert(woken);
                    }
                }
            }
            for pid in runnable.clone() {
                scheduler.remove(pid);
            }
            assert_eq!(scheduler.pick(), None, "{}", scheduler.name());
        }
    }

    #[test]
    fn adding_twice_does_not_double_the_share() {
        for mut scheduler in policies() {
            scheduler.add(1);
            scheduler.add(2);
            scheduler.add(1);
            let picks = run(&mut *scheduler, 10, |_| false);
            assert_eq!(picks.iter().filter(|&&pid| pid == 1).count(), 5, "{}", scheduler.name());
            scheduler.remove(1);
            assert_eq!(run(&mut *scheduler, 3, |_| false), vec![2, 2, 2], "{}", scheduler.name());
        }
    }

    #[test]
    fn unknown_pids_never_preempt() {
        for mut scheduler in policies() {
            scheduler.add(1);
            assert!(!scheduler.preempts(2, 1), "{}", scheduler.name());
            assert!(!scheduler.preempts(1, 2), "{}", scheduler.name());
            assert!(!scheduler.preempts(1, 1), "{}", scheduler.name());
        }
    }

    // --- Round robin ---------------------------------------------------------

    #[test]
    fn round_robin_never_preempts_for_a_woken_process() {
        let mut scheduler = RoundRobin::new(2);
        scheduler.add(1);
        run(&mut scheduler, 10, |_| true);
        scheduler.add(2);
        assert!(!scheduler.preempts(2, 1));
    }

    #[test]
    fn round_robin_is_fair_over_many_rounds() {
        let mut scheduler = RoundRobin::new(5);
        for pid in [3, 1, 4, 9] {
            scheduler.add(pid);
        }
        let picks = run(&mut scheduler, 4000, |pid| pid % 2 == 1);
        for round in picks.chunks(4) {
            let members: BTreeSet<usize> = round.iter().copied().collect();
            assert_eq!(members, BTreeSet::from([1, 3, 4, 9]), "every round runs everyone once");
        }
        assert_eq!(&picks[..4], &[3, 1, 4, 9], "in arrival order");
        assert!([1, 3, 4, 9].iter().all(|&pid| scheduler.quantum_ticks(pid) == 5));
    }

    // --- MLFQ ----------------------------------------------------------------

    #[test]
    fn mlfq_quantum_doubles_per_level_down_to_the_bottom() {
        let mut scheduler = Mlfq::new(3, 0);
        scheduler.add(1);
        let mut quanta = Vec::new();
        for _ in 0..5 {
            assert_eq!(scheduler.pick(), Some(1));
            quanta.push(scheduler.quantum_ticks(1));
            scheduler.on_quantum_end(1, true);
        }
        assert_eq!(quanta, vec![3, 6, 12, 12, 12]);
        assert_eq!(scheduler.level(1), Some(MLFQ_LEVELS - 1));
        scheduler.remove(1);
        scheduler.add(1);
        assert_eq!(scheduler.level(1), Some(0), "a woken process starts on top again");
    }

    #[test]
    fn mlfq_runs_interactive_work_before_a_demoted_hog() {
        const HOG: usize = 1;
        const EDITOR: usize = 2;
        let mut scheduler = Mlfq::new(2, 0);
        scheduler.add(HOG);
        run(&mut scheduler, MLFQ_LEVELS, |_| true);
        assert_eq!(scheduler.level(HOG), Some(MLFQ_LEVELS - 1));
        assert_eq!(scheduler.quantum_ticks(HOG), 2 << (MLFQ_LEVELS - 1), "sunken, but runs longer");
        // The editor wakes after the hog has been queued for ages, runs briefly and blocks again.
        for _ in 0..50 {
            scheduler.add(EDITOR);
            assert_eq!(scheduler.pick(), Some(EDITOR));
            assert_eq!(scheduler.quantum_ticks(EDITOR), 2);
            scheduler.on_quantum_end(EDITOR, false);
            scheduler.remove(EDITOR);
            assert_eq!(scheduler.pick(), Some(HOG), "the hog still gets the idle time");
            scheduler.on_quantum_end(HOG, true);
        }
        assert_eq!(scheduler.level(EDITOR), None);
    }

    #[test]
    fn mlfq_preempts_a_sunken_process_for_one_above_it() {
        const HOG: usize = 1;
        const EDITOR: usize = 2;
        let mut scheduler = Mlfq::new(2, 0);
        scheduler.add(HOG);
        scheduler.add(EDITOR);
        assert!(!scheduler.preempts(EDITOR, HOG), "same level: wait for the turn");
        assert_eq!(scheduler.pick(), Some(HOG));
        scheduler.on_quantum_end(HOG, true);
        assert!(scheduler.preempts(EDITOR, HOG), "the hog sank below the editor");
        assert!(!scheduler.preempts(HOG, EDITOR), "never for a lower level");
    }

    #[test]
    fn mlfq_boost_prevents_starvation() {
        const HOG: usize = 0;
        let interactive = 1..=3;
        let hog_picks = |boost_period_picks: u64| {
            let mut scheduler = Mlfq::new(2, boost_period_picks);
            scheduler.add(HOG);
            run(&mut scheduler, MLFQ_LEVELS, |_| true);
            for pid in interactive.clone() {
                scheduler.add(pid);
            }
            let picks = run(&mut scheduler, 1000, |pid| pid == HOG);
            picks.iter().enumerate().filter(|(_, &pid)| pid == HOG).map(|(at, _)| at).collect::<Vec<_>>()
        };
        assert!(hog_picks(0).is_empty(), "without boosts the always-runnable editors starve the hog");
        let boosted = hog_picks(20);
        assert!(boosted.len() >= 1000 / 20 - 1, "the hog runs after every boost: {boosted:?}");
        let longest_wait = boosted.windows(2).map(|pair| pair[1] - pair[0]).max().unwrap();
        assert!(longest_wait <= 20 + 3, "waits at most a boost period plus a round: {longest_wait}");
    }
}
