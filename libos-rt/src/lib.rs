//! libos-rt's real-time policy logic: plain Rust, host-tested, linked into the libOS program.
//!
//! Design principles:
//! * The exokernel hands out time (timer upcalls, the TSC); which job runs
//!   next, and whether a task set is admitted at all, is decided here.
//! * A policy is a trait with several implementations (EDF, rate-monotonic),
//!   chosen by name from the manifest, so swapping one is a line of
//!   configuration.
//! * Policies and analyses are pure and count abstract ticks: no system
//!   calls, no clock, no `unsafe`. The program (`main.rs`) maps ticks to TSC
//!   time; the host unit tests drive the same code with a discrete-time
//!   simulator and run every implementation against the same trait tests.
//! * The job table the program runs from ([`runner`]) is the same kind of
//!   pure logic: fixed-size (no heap, so it can live in pinned memory),
//!   driven by whatever clock the caller reads, and tested on the host
//!   against the simulator. The manifest's task list syntax is [`spec`].
//! * What the program times about itself (a scheduler decision, a system
//!   call) is timed with a [`stopwatch::Stopwatch`], which drops any
//!   stretch an interruption may have fallen in; the order of its reads is
//!   tested here against a simulated machine interrupted at every point.
//! * Analyses use integer arithmetic only (parts per million, exact response
//!   times), so they behave identically on the host and on the soft-float
//!   bare-metal target.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod admission;
pub mod gen;
pub mod runner;
pub mod sched;
pub mod spec;
pub mod stopwatch;
