//! Timing a stretch of code on a clock that keeps counting while the code
//! is interrupted.
//!
//! The program times its scheduler decisions with the TSC, which also
//! counts the slot-end upcalls that interrupt them. A stretch is therefore
//! timed only if no interruption fell inside it, and the program learns
//! that from a count its interruption handler increments as its last act.
//!
//! The order of the four reads is what makes this sound: the count is
//! read *before* the clock at the start and *after* it at the end, so an
//! interruption anywhere between the two clock reads changes the count
//! between the two count reads, and the stretch is dropped. Read the other
//! way round at the start (clock, then count), an interruption landing
//! between the two reads is inside the timed stretch but already in the
//! count, and the stretch is kept with the interruption's whole cost in
//! it. (An interruption between the end's clock read and its count read
//! drops a stretch it did not touch: the safe side.)
//!
//! The reads are closures so the host tests can drive a simulated machine
//! that interrupts between any two of them.

use core::sync::atomic::{compiler_fence, Ordering};

/// A started measurement: the interruption count and the clock at its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopwatch {
    count: u64,
    start_ticks: u64,
}

impl Stopwatch {
    /// Read the interruption count, then the clock.
    pub fn start(count: impl FnOnce() -> u64, clock: impl FnOnce() -> u64) -> Self {
        let count = count();
        // Keep the compiler from moving the clock read above the count read.
        compiler_fence(Ordering::SeqCst);
        Stopwatch { count, start_ticks: clock() }
    }

    /// The clock at the start.
    pub fn start_ticks(&self) -> u64 {
        self.start_ticks
    }

    /// Read the clock, then the interruption count: the ticks since the
    /// start, or `None` if an interruption may have fallen in between.
    pub fn stop(&self, clock: impl FnOnce() -> u64, count: impl FnOnce() -> u64) -> Option<u64> {
        let end_ticks = clock();
        compiler_fence(Ordering::SeqCst);
        (count() == self.count).then(|| end_ticks.wrapping_sub(self.start_ticks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;

    /// A processor whose clock moves one tick per operation, and which
    /// takes one interruption (costing `cost` ticks, counted by its handler
    /// last) before operation number `interrupt_before`, if any.
    struct Machine {
        clock: Cell<u64>,
        count: Cell<u64>,
        ops: Cell<usize>,
        interrupt_before: Option<usize>,
        cost: u64,
    }

    impl Machine {
        fn new(interrupt_before: Option<usize>) -> Self {
            Machine { clock: Cell::new(1_000), count: Cell::new(7), ops: Cell::new(0), interrupt_before, cost: 750 }
        }

        /// One operation of the interrupted code, with the interruption
        /// first if it is due.
        fn op(&self) {
            if Some(self.ops.get()) == self.interrupt_before {
                self.clock.set(self.clock.get() + self.cost);
                self.count.set(self.count.get() + 1);
            }
            self.ops.set(self.ops.get() + 1);
            self.clock.set(self.clock.get() + 1);
        }

        fn read_clock(&self) -> u64 {
            self.op();
            self.clock.get()
        }

        fn read_count(&self) -> u64 {
            self.op();
            self.count.get()
        }

        /// `ticks` operations of the code being timed.
        fn work(&self, ticks: u64) {
            for _ in 0..ticks {
                self.op();
            }
        }
    }

    const WORK: u64 = 40;
    /// Operations in one measurement: four reads and the work.
    const OPS: usize = 4 + WORK as usize;

    fn timed(machine: &Machine) -> Option<u64> {
        let watch = Stopwatch::start(|| machine.read_count(), || machine.read_clock());
        machine.work(WORK);
        watch.stop(|| machine.read_clock(), || machine.read_count())
    }

    #[test]
    fn an_uninterrupted_stretch_is_timed_exactly() {
        // The work and the end's clock read: one tick each.
        assert_eq!(timed(&Machine::new(None)), Some(WORK + 1));
        let machine = Machine::new(None);
        let watch = Stopwatch::start(|| machine.read_count(), || machine.read_clock());
        assert_eq!(watch.start_ticks(), 1_002);
    }

    #[test]
    fn an_interruption_anywhere_never_shows_in_a_kept_time() {
        let clean = timed(&Machine::new(None)).unwrap();
        let mut dropped = 0;
        for at in 0..=OPS + 1 {
            match timed(&Machine::new(Some(at))) {
                Some(ticks) => assert_eq!(ticks, clean, "interruption before op {at} kept"),
                None => dropped += 1,
            }
        }
        // Everything from the start's clock read to the end's count read.
        assert_eq!(dropped, OPS - 1);
    }

    #[test]
    fn reading_the_clock_before_the_count_keeps_an_interruption_in_the_time() {
        // The order `run_set` once used at the start of a step: the
        // interruption that lands between the two reads is kept.
        let clock_first = |machine: &Machine| {
            let start = machine.read_clock();
            let seen = machine.read_count();
            machine.work(WORK);
            let ticks = machine.read_clock() - start;
            (machine.read_count() == seen).then_some(ticks)
        };
        let clean = clock_first(&Machine::new(None)).unwrap();
        let inflated: std::vec::Vec<(usize, u64)> = (0..=OPS + 1)
            .filter_map(|at| clock_first(&Machine::new(Some(at))).filter(|&ticks| ticks != clean).map(|t| (at, t)))
            .collect();
        assert_eq!(inflated, std::vec![(1, clean + 750)]);
    }
}
