//! libos-rt: the real-time library OS. Periodic tasks with a budget, a
//! period and a deadline, scheduled by EDF or rate-monotonic as the
//! manifest says, with every deadline miss and the release jitter counted.
//!
//! Design principles:
//! * Policy and bookkeeping are the host-tested library (`libos_rt::sched`
//!   picks, `libos_rt::runner` releases, drops and accounts); this file adds
//!   the clock, the work and the memory.
//! * Time is the TSC, counted from the start of the run. A job's budget is
//!   CPU work: a loop calibrated at start to take a known number of TSC
//!   ticks, done in work units of a twentieth of the time unit. Between
//!   units the scheduler re-evaluates (releases due jobs, drops jobs past
//!   their deadline as misses, picks by policy): preemption happens at
//!   work-unit granularity. Time the processor spends elsewhere (another
//!   environment's slot) does not count as work; it shows as response time,
//!   jitter and misses.
//! * The real-time state (task and job table, statistics, slot-end
//!   counters) lives in frames this libOS allocates and maps guaranteed at
//!   `DYNAMIC_BASE`, checked to be in a TLB slot and guaranteed at the
//!   start and again at the end: it never takes a page fault. Code, stack
//!   and upcall stack are the loader's mappings, present for the env's life.
//! * End of slot: when another environment's slot comes next, the handler
//!   yields at once (the state lives in pinned memory; there is nothing else
//!   to save); when the next slot is ours too, it returns at once.
//! * Misses are data, not errors: the exit code is 0 whatever they are. A
//!   bad manifest parameter exits 2; memory that could not be pinned, 3.
//!
//! Manifest parameters: `scheduler = edf|rm` (default edf);
//! `tasks = C:T[:D],...` in units of `unit_us` microseconds (default 1000;
//! `D` defaults to `T`; without `tasks`, a light default set);
//! `horizon_ms` (default 200): how long the task set runs.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;
use core::hint::black_box;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use libos_rt::runner::JobTable;
use libos_rt::sched::{self, Task};
use libos_rt::spec;
use libos_runtime::frames::{self, AllocMapError};
use libos_runtime::println;
use libos_runtime::rt::{rdtsc, set_handler, Env};
use libos_runtime::start::DYNAMIC_BASE;
use libos_runtime::syscall::{self, map_bits, map_flags, rights, Error};
use libos_runtime::upcall::{UpcallFrame, UpcallKind, SLOT_END};

libos_runtime::libos_main!(main);

const PAGE: u64 = 4096;
/// The task set run when the manifest names none: light enough to meet
/// every deadline beside other libOSes.
const DEFAULT_TASKS: &str = "1:10,1:20,2:40";
const DEFAULT_UNIT_US: u64 = 1000;
const DEFAULT_HORIZON_MS: u64 = 200;
/// Work units per time unit: the preemption granularity.
const WORK_UNITS_PER_UNIT: u64 = 20;
/// `frame_alloc` answers `Again` while the kernel takes frames back for
/// us (at most the manifest's revocation deadline, 10 s at the most): retry
/// every 100 us, for up to this long.
const ALLOC_WAIT_MS: u64 = 15_000;
const ALLOC_RETRY_US: u64 = 100;

/// Exit codes.
const EXIT_BAD_PARAMETER: i32 = 2;
const EXIT_NOT_PINNED: i32 = 3;

/// What the end-of-slot handler counts.
struct SlotCounters {
    /// Slot ends after which the next slot was ours too.
    own_next: AtomicU64,
    /// Slot ends where we yielded to another environment's slot.
    yielded: AtomicU64,
    /// Longest time from that yield until we ran again.
    max_away_ticks: AtomicU64,
}

/// Everything the real-time loop touches besides its stack: lives in the
/// pinned pages.
struct Pinned {
    counters: SlotCounters,
    table: JobTable,
}

impl Pinned {
    const fn new() -> Self {
        Pinned {
            counters: SlotCounters {
                own_next: AtomicU64::new(0),
                yielded: AtomicU64::new(0),
                max_away_ticks: AtomicU64::new(0),
            },
            table: JobTable::new(),
        }
    }
}

const PINNED_PAGES: u64 = (core::mem::size_of::<Pinned>() as u64).div_ceil(PAGE);

/// The counters in pinned memory, once they are there (for the handler).
static COUNTERS: AtomicPtr<SlotCounters> = AtomicPtr::new(core::ptr::null_mut());

/// The run's configuration, from the manifest.
struct Config {
    policy: &'static str,
    /// The task set in units of `unit_us`.
    tasks_in_units: Vec<Task>,
    unit_us: u64,
    horizon_ms: u64,
}

fn main(env: &Env) -> i32 {
    println!("libos-rt up: env {} tsc {} MHz", env.id, env.tsc_hz / 1_000_000);
    let config = match read_config(env) {
        Ok(config) => config,
        Err(()) => return EXIT_BAD_PARAMETER,
    };
    let Some(mut scheduler) = sched::by_name(config.policy) else {
        println!("rt: unknown scheduler {:?} (known: {:?})", config.policy, sched::NAMES);
        return EXIT_BAD_PARAMETER;
    };
    let unit_ticks = mul_div(config.unit_us, env.tsc_hz, 1_000_000);
    let work_unit_ticks = unit_ticks / WORK_UNITS_PER_UNIT;
    // From the unit, so a horizon of whole periods releases whole periods' jobs.
    let horizon_ticks = mul_div(config.horizon_ms.saturating_mul(1000), unit_ticks, config.unit_us);
    let Some(tasks) = spec::scale(&config.tasks_in_units, unit_ticks).filter(|_| work_unit_ticks > 0) else {
        println!("rt: unit_us={} does not fit this clock", config.unit_us);
        return EXIT_BAD_PARAMETER;
    };
    println!(
        "rt: config scheduler={} tasks={} unit_us={} work_unit_us={} horizon_ms={}",
        scheduler.name(),
        tasks.len(),
        config.unit_us,
        ticks_to_us(work_unit_ticks, env.tsc_hz),
        config.horizon_ms
    );
    let units = &config.tasks_in_units;
    let utilisation_ppm = sched::utilisation_ppm(units);
    println!(
        "rt: analysis utilisation_ppm={} rm_bound_ppm={} rm_exact={} edf_exact={}",
        utilisation_ppm,
        sched::rm_bound_ppm(units.len()),
        verdict(sched::rm_schedulable_by_response_time(units)),
        verdict(sched::edf_schedulable(units))
    );

    let (table, counters) = match pin_state(env.tsc_hz) {
        Ok(state) => state,
        Err(what) => {
            println!("rt: memory not pinned: {}", what);
            return EXIT_NOT_PINNED;
        }
    };
    println!(
        "rt: memory pinned: {} pages guaranteed ({} bytes of task table, jobs and statistics at {:#x})",
        PINNED_PAGES,
        core::mem::size_of::<Pinned>(),
        DYNAMIC_BASE
    );
    if let Err(error) = table.load(&tasks) {
        println!("rt: task set refused: {:?}", error);
        return EXIT_BAD_PARAMETER;
    }
    if let Err(error) = set_handler(UpcallKind::Interrupt, on_slot_end) {
        println!("rt: cannot register the slot-end handler: {}", error.name());
    }
    let work = Work::calibrate();
    println!("rt: work loop calibrated: {} iterations per {} ticks", work.iterations, work.ticks);

    // The real-time loop: no allocation, no printing, no page faults.
    let wall_before = rdtsc();
    let cpu_before = syscall::env_info().ok();
    let mut time = TimeSpent::default();
    let start = rdtsc();
    let mut now_ticks = 0;
    while now_ticks < horizon_ticks {
        table.advance(now_ticks);
        match table.pick(&mut *scheduler, now_ticks) {
            Some(index) => {
                let work_ticks = table.work_for(index, work_unit_ticks);
                let began_ticks = rdtsc() - start;
                work.run(work_ticks);
                now_ticks = rdtsc() - start;
                table.ran(index, work_ticks, now_ticks);
                time.nominal_work_ticks += work_ticks;
                time.work_ticks += now_ticks - began_ticks;
            }
            None => {
                let began_ticks = rdtsc() - start;
                let until_ticks = table.next_release_ticks().min(horizon_ticks);
                while rdtsc() - start < until_ticks {
                    core::hint::spin_loop();
                }
                now_ticks = rdtsc() - start;
                time.idle_ticks += now_ticks - began_ticks;
            }
        }
        now_ticks = rdtsc() - start;
    }
    time.total_ticks = now_ticks;
    table.finish(horizon_ticks);
    let cpu_after = syscall::env_info().ok();
    let wall_ticks = rdtsc() - wall_before;

    if let Err((va, bits)) = check_pinned() {
        println!("rt: pinned memory lost: page {:#x} has bits {:#x}", va, bits);
        return EXIT_NOT_PINNED;
    }
    report(env, &config, table, counters, &time);
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        let share_ppm = mul_div(after.cpu_ticks - before.cpu_ticks, 1_000_000, wall_ticks);
        println!(
            "rt: cpu share_ppm={} slots_owned={}/{} overruns={}",
            share_ppm, after.slots_owned, after.vector_len, after.overruns
        );
    }
    let totals = table.totals();
    println!(
        "rt: scheduler={} utilisation_ppm={} jobs={} misses={} max_jitter_us={}",
        scheduler.name(),
        utilisation_ppm,
        totals.jobs_released,
        totals.misses,
        ticks_to_us(totals.max_release_jitter_ticks, env.tsc_hz)
    );
    println!("done");
    0
}

fn verdict(schedulable: bool) -> &'static str {
    if schedulable {
        "meets"
    } else {
        "misses"
    }
}

/// Read and check the manifest parameters; explains what is wrong.
fn read_config(env: &Env) -> Result<Config, ()> {
    let number = |key: &str, default: u64, max: u64| -> Result<u64, ()> {
        match env.param(key) {
            None => Ok(default),
            Some(text) => match text.trim().parse::<u64>() {
                Ok(value) if (1..=max).contains(&value) => Ok(value),
                _ => {
                    println!("rt: {} = {:?}: expected a number in 1..={}", key, text, max);
                    Err(())
                }
            },
        }
    };
    let unit_us = number("unit_us", DEFAULT_UNIT_US, 1_000_000)?;
    let horizon_ms = number("horizon_ms", DEFAULT_HORIZON_MS, 600_000)?;
    let tasks_in_units = spec::parse_tasks(env.param("tasks").unwrap_or(DEFAULT_TASKS)).map_err(|error| {
        println!("rt: tasks: {}", error);
    })?;
    Ok(Config { policy: env.param("scheduler").unwrap_or("edf").trim(), tasks_in_units, unit_us, horizon_ms })
}

/// The per-task lines and the slot-end counters.
fn report(env: &Env, config: &Config, table: &JobTable, counters: &SlotCounters, time: &TimeSpent) {
    let us = |ticks: u64| ticks_to_us(ticks, env.tsc_hz);
    for (index, (task, stats)) in config.tasks_in_units.iter().zip(table.stats()).enumerate() {
        println!(
            "rt: task {} C={} T={} D={} jobs={} misses={} max_jitter_us={} max_response_us={}",
            index,
            task.budget_ticks,
            task.period_ticks,
            task.deadline_ticks,
            stats.jobs_released,
            stats.misses,
            us(stats.max_release_jitter_ticks),
            us(stats.max_response_ticks)
        );
    }
    let totals = table.totals();
    println!(
        "rt: completed={} unfinished_at_horizon={} preemptions={} work_units={}",
        totals.jobs_completed, totals.jobs_unfinished, totals.preemptions, totals.work_units
    );
    println!(
        "rt: time work_us={} (budgeted {}) idle_us={} scheduling_us={}",
        us(time.work_ticks),
        us(time.nominal_work_ticks),
        us(time.idle_ticks),
        us(time.total_ticks.saturating_sub(time.work_ticks + time.idle_ticks))
    );
    println!(
        "rt: slot ends: next_ours={} yielded={} max_away_us={}",
        counters.own_next.load(Ordering::Relaxed),
        counters.yielded.load(Ordering::Relaxed),
        us(counters.max_away_ticks.load(Ordering::Relaxed))
    );
}

/// End of slot: yield at once if another environment's slot comes next
/// (within the kernel's save bound, `frame.error_code` ticks); return at
/// once if the next slot is ours too.
fn on_slot_end(frame: &mut UpcallFrame) {
    if frame.vector != SLOT_END {
        return;
    }
    let counters = pinned_counters();
    if frame.fault_addr == 1 {
        if let Some(counters) = counters {
            counters.own_next.fetch_add(1, Ordering::Relaxed);
        }
        return;
    }
    let left = rdtsc();
    syscall::yield_now();
    let away_ticks = rdtsc() - left;
    if let Some(counters) = counters {
        counters.yielded.fetch_add(1, Ordering::Relaxed);
        counters.max_away_ticks.fetch_max(away_ticks, Ordering::Relaxed);
    }
}

/// Where the run's time went (TSC ticks). Work and idle include time the
/// processor spent in other environments' slots meanwhile.
#[derive(Default)]
struct TimeSpent {
    total_ticks: u64,
    /// Measured around the work units, and what they were budgeted.
    work_ticks: u64,
    nominal_work_ticks: u64,
    /// Waiting for the next release with nothing ready.
    idle_ticks: u64,
}

/// The job "work": a loop whose iterations cost a known number of TSC
/// ticks (instructions under `-icount`), measured at start.
struct Work {
    iterations: u64,
    ticks: u64,
}

impl Work {
    const SAMPLE_ITERATIONS: u64 = 20_000;

    /// Time the loop a few times and keep the fastest run: a slower one
    /// was interrupted.
    fn calibrate() -> Self {
        let ticks = (0..5)
            .map(|_| {
                let start = rdtsc();
                spin_work(Self::SAMPLE_ITERATIONS);
                rdtsc() - start
            })
            .min()
            .unwrap_or(1)
            .max(1);
        Work { iterations: Self::SAMPLE_ITERATIONS, ticks }
    }

    /// Do `work_ticks` of work.
    fn run(&self, work_ticks: u64) {
        spin_work(mul_div(work_ticks, self.iterations, self.ticks));
    }
}

#[inline(never)]
fn spin_work(iterations: u64) {
    let mut value = 1u64;
    for step in 0..iterations {
        value = black_box(value.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(step));
    }
    black_box(value);
}

/// `a * b / c` without overflow in between (saturating).
fn mul_div(a: u64, b: u64, c: u64) -> u64 {
    (a as u128 * b as u128 / c.max(1) as u128).min(u64::MAX as u128) as u64
}

fn ticks_to_us(ticks: u64, tsc_hz: u64) -> u64 {
    mul_div(ticks, 1_000_000, tsc_hz)
}

// --- Pinned memory -----------------------------------------------------------

/// Allocate frames, map them guaranteed at `DYNAMIC_BASE`, check they are
/// pinned, and place the real-time state there: the job table for the
/// main loop, the counters for the slot-end handler.
///
/// While the kernel takes frames back for us we wait in our own slot
/// rather than yield: nothing here can run without its pinned memory, and
/// the time passing is what brings the revocation deadline.
fn pin_state(tsc_hz: u64) -> Result<(&'static mut JobTable, &'static SlotCounters), &'static str> {
    let retry_ticks = mul_div(ALLOC_RETRY_US, tsc_hz, 1_000_000);
    let give_up = rdtsc().saturating_add(mul_div(ALLOC_WAIT_MS, tsc_hz, 1_000));
    let wait_in_our_slot = || {
        if rdtsc() >= give_up {
            return false;
        }
        let retry_at = rdtsc() + retry_ticks;
        while rdtsc() < retry_at {
            core::hint::spin_loop();
        }
        true
    };
    for page in 0..PINNED_PAGES {
        let va = DYNAMIC_BASE + page * PAGE;
        let flags = map_flags::WRITE | map_flags::GUARANTEED;
        frames::alloc_map_waiting(va, rights::READ | rights::WRITE, flags, wait_in_our_slot).map_err(|error| {
            match error {
                AllocMapError::Alloc(Error::Again) => "the kernel took too long to free a frame for us",
                AllocMapError::Alloc(_) => "no frame",
                AllocMapError::Map(_) => "map refused",
            }
        })?;
    }
    check_pinned().map_err(|_| "a page is not in a slot and guaranteed")?;
    Ok(place_pinned())
}

/// Every pinned page is in a TLB slot and guaranteed; else the first that
/// is not, with its bits.
fn check_pinned() -> Result<(), (u64, u64)> {
    const PINNED: u64 = map_bits::IN_SLOT | map_bits::GUARANTEED;
    for page in 0..PINNED_PAGES {
        let va = DYNAMIC_BASE + page * PAGE;
        let bits = syscall::map_query(va, false).unwrap_or(0);
        if bits & PINNED != PINNED {
            return Err((va, bits));
        }
    }
    Ok(())
}

/// Write a fresh [`Pinned`] into the pinned pages, publish its counters
/// to the slot-end handler, and hand out the job table (uniquely) and the
/// counters (shared: they are atomics).
#[allow(unsafe_code)]
fn place_pinned() -> (&'static mut JobTable, &'static SlotCounters) {
    let pinned = DYNAMIC_BASE as *mut Pinned;
    // SAFETY: `pin_state` mapped PINNED_PAGES writable pages at
    // DYNAMIC_BASE (page-aligned, so aligned for `Pinned`) that stay mapped
    // for the env's life; this runs once, and the two references cover
    // disjoint fields, the table's the only one to it.
    unsafe {
        pinned.write(Pinned::new());
        let counters = core::ptr::addr_of_mut!((*pinned).counters);
        COUNTERS.store(counters, Ordering::SeqCst);
        (&mut *core::ptr::addr_of_mut!((*pinned).table), &*counters)
    }
}

/// The slot-end counters, once they are in pinned memory.
#[allow(unsafe_code)]
fn pinned_counters() -> Option<&'static SlotCounters> {
    let counters = COUNTERS.load(Ordering::SeqCst);
    // SAFETY: non-null only once `place_pinned` wrote the counters into
    // memory that stays mapped; they are atomics, so sharing them with the
    // main loop's `&mut Pinned` only ever reads and writes them atomically.
    (!counters.is_null()).then(|| unsafe { &*counters })
}
