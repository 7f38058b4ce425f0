//! libos-rt: the real-time library OS. Periodic tasks with a budget, a
//! period and a deadline, admitted by an overhead-aware analysis and
//! scheduled by EDF or rate-monotonic as the manifest says, with every
//! deadline miss and the release jitter counted.
//!
//! Design principles:
//! * Policy and bookkeeping are the host-tested library (`libos_rt::sched`
//!   picks, `libos_rt::runner` releases, drops and accounts,
//!   `libos_rt::admission` decides what is guaranteed); this file adds the
//!   clock, the work, the measurements and the memory.
//! * Time is the TSC, counted from the start of the run. A job's budget is
//!   CPU work: a loop calibrated at start to take a known number of TSC
//!   ticks, and checked (a known budget burned and timed, the time spent
//!   in slot-end upcalls taken out), done in work units of a twentieth of
//!   the time unit. Between units the scheduler re-evaluates (releases due
//!   jobs, drops jobs past their deadline as misses, picks by policy):
//!   preemption happens at work-unit granularity. Time the processor
//!   spends elsewhere (another environment's slot, our own slot-end
//!   upcalls) does not count as work; it shows as response time, jitter
//!   and misses.
//! * Admission counts what the kernel costs: at boot the program measures
//!   (rdtsc; instructions under `-icount`) a scheduler decision, the
//!   slot-end upcall with its timer interrupt and kernel entry and exit,
//!   the yield at a slot's end and a null system call, reads its slots,
//!   the slot length and the save bound from `env_info`, and hands them to
//!   `libos_rt::admission` (response-time analysis for RM, processor
//!   demand for EDF, on the supply its slots guarantee). It prints the
//!   margin. A set the analysis cannot guarantee is run as best effort
//!   (`admission = best-effort`, the default, so overload still shows its
//!   misses) or not run at all (`admission = strict`), said plainly
//!   either way.
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
//! `horizon_ms` (default 200): how long the task set runs;
//! `admission = best-effort|strict` (default best-effort). With
//! `property_sets = N` it runs N generated task sets instead (seeded by
//! `seed`, utilisation from 0.5 to 1.0, EDF and RM alternately, each for
//! its hyperperiod plus its longest deadline, at most `set_horizon_ms`,
//! default 120): admitted sets run and their misses are counted; refused
//! ones run too, as best effort counted apart, with `run_refused = yes`.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::hint::black_box;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use libos_rt::admission::{self, Overheads, Refusal, SlotShare, Supply, Tightest, Verdict};
use libos_rt::gen::Generator;
use libos_rt::runner::JobTable;
use libos_rt::sched::{self, RtScheduler, Task};
use libos_rt::spec;
use libos_rt::stopwatch::Stopwatch;
use libos_runtime::frames::{self, AllocMapError};
use libos_runtime::println;
use libos_runtime::rt::{rdtsc, set_handler, Env};
use libos_runtime::start::DYNAMIC_BASE;
use libos_runtime::syscall::{self, map_bits, map_flags, rights, EnvInfo, Error};
use libos_runtime::upcall::{UpcallFrame, UpcallKind, SLOT_END};

libos_runtime::libos_main!(main);

const PAGE: u64 = 4096;
/// The task set run when the manifest names none: light enough to be
/// admitted on one slot in four beside other libOSes.
const DEFAULT_TASKS: &str = "1:10,1:20,1:40";
const DEFAULT_UNIT_US: u64 = 1000;
const DEFAULT_HORIZON_MS: u64 = 200;
const DEFAULT_SET_HORIZON_MS: u64 = 120;
/// Work units per time unit: the preemption granularity.
const WORK_UNITS_PER_UNIT: u64 = 20;
/// Periods of generated task sets (microseconds): a hyperperiod of 60 ms.
const PROPERTY_PERIODS_US: [u64; 9] = [4_000, 5_000, 6_000, 10_000, 12_000, 15_000, 20_000, 30_000, 60_000];
/// Work unit of generated sets (microseconds).
const PROPERTY_WORK_UNIT_US: u64 = 50;
/// The measured decision cost is charged with this much added (percent):
/// the measurement replays the loop's steps, not its every path.
const DECISION_MARGIN_PERCENT: u64 = 50;
/// `frame_alloc` answers `Again` while the kernel takes frames back for
/// us (at most the manifest's revocation deadline, 10 s at the most): retry
/// every 100 us, for up to this long.
const ALLOC_WAIT_MS: u64 = 15_000;
const ALLOC_RETRY_US: u64 = 100;

/// Exit codes.
const EXIT_BAD_PARAMETER: i32 = 2;
const EXIT_NOT_PINNED: i32 = 3;

/// What the end-of-slot handler counts and times.
struct SlotCounters {
    /// Slot ends after which the next slot was ours too.
    own_next: AtomicU64,
    /// Slot ends where we yielded to another environment's slot.
    yielded: AtomicU64,
    /// Longest time from that yield until we ran again.
    max_away_ticks: AtomicU64,
    /// TSC at the handler's entry and just before it returns, last time.
    entry_tsc: AtomicU64,
    exit_tsc: AtomicU64,
    /// Time spent in the handler, away time included, in all.
    handler_ticks: AtomicU64,
    /// Longest time from the handler's entry to its `yield`.
    max_before_yield_ticks: AtomicU64,
}

impl SlotCounters {
    fn ends(&self) -> u64 {
        self.own_next.load(Ordering::Relaxed) + self.yielded.load(Ordering::Relaxed)
    }
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
                entry_tsc: AtomicU64::new(0),
                exit_tsc: AtomicU64::new(0),
                handler_ticks: AtomicU64::new(0),
                max_before_yield_ticks: AtomicU64::new(0),
            },
            table: JobTable::new(),
        }
    }
}

const PINNED_PAGES: u64 = (core::mem::size_of::<Pinned>() as u64).div_ceil(PAGE);

/// The counters in pinned memory, once they are there (for the handler).
static COUNTERS: AtomicPtr<SlotCounters> = AtomicPtr::new(core::ptr::null_mut());

/// What to do with a set the analysis cannot guarantee.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AdmissionMode {
    /// Do not run it.
    Strict,
    /// Run it, saying its deadlines are not guaranteed.
    BestEffort,
}

/// The run's configuration, from the manifest.
struct Config {
    policy: &'static str,
    /// The task set in units of `unit_us`.
    tasks_in_units: Vec<Task>,
    unit_us: u64,
    horizon_ms: u64,
    admission: AdmissionMode,
    /// Set for a property run.
    property: Option<Property>,
}

/// A property run's parameters.
#[derive(Clone, Copy)]
struct Property {
    sets: u64,
    seed: u64,
    set_horizon_ms: u64,
    /// Run refused sets too, as best effort (their misses counted apart).
    run_refused: bool,
}
/// What the program measured at boot, besides the per-set decision cost (ticks).
struct Measured {
    tsc_hz: u64,
    info: EnvInfo,
    slot: SlotCosts,
    null_syscall_ticks: u64,
    /// The work loop's check: asked, got (net of upcalls), error.
    calibration: CalibrationCheck,
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
    if config.property.is_none() {
        println!(
            "rt: config scheduler={} tasks={} unit_us={} work_unit_us={} horizon_ms={}",
            scheduler.name(),
            tasks.len(),
            config.unit_us,
            ticks_to_us(work_unit_ticks, env.tsc_hz),
            config.horizon_ms
        );
        let units = &config.tasks_in_units;
        println!(
            "rt: analysis utilisation_ppm={} rm_bound_ppm={} rm_exact={} edf_exact={} (no overheads)",
            sched::utilisation_ppm(units),
            sched::rm_bound_ppm(units.len()),
            verdict_word(sched::rm_schedulable_by_response_time(units)),
            verdict_word(sched::edf_schedulable(units))
        );
    }

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
    if let Err(error) = set_handler(UpcallKind::Interrupt, on_slot_end) {
        println!("rt: cannot register the slot-end handler: {}", error.name());
    }
    let measured = measure_boot(env.tsc_hz, unit_ticks, counters);
    let work = measured.calibration.work;
    let check = &measured.calibration;
    println!(
        "rt: calibration: {} iterations per {} ticks; check: asked {} ticks, burned {} error={}",
        work.iterations,
        work.ticks,
        check.asked_ticks,
        check.burned_ticks,
        percent(check.error_ppm)
    );
    let slot = &measured.slot;
    println!(
        "rt: overheads measured: slot_end_tick={} upcall_entry={} upcall_exit={} before_yield={} null_syscall={} ticks (slot ends seen: {} ticks, {} yields)",
        slot.tick_ticks.map_or(-1, |t| t as i64),
        slot.entry_ticks,
        slot.exit_ticks,
        slot.before_yield_ticks,
        measured.null_syscall_ticks,
        slot.ticks_seen,
        slot.yields_seen
    );

    if let Some(property) = config.property {
        return run_property(&measured, table, counters, property);
    }

    let (supply, supply_note) = supply_of(&measured);
    let decision_ticks = measure_decision(&tasks, &mut *scheduler, work_unit_ticks, counters);
    let overheads = overheads_of(decision_ticks, work_unit_ticks, &measured);
    print_overheads(Some(&overheads), supply.as_ref(), supply_note, &measured);
    let verdict = admit(scheduler.name(), &tasks, &overheads, supply.as_ref());
    let inflated_ppm = sched::utilisation_ppm(&admission::inflate(&tasks, &overheads));
    println!(
        "rt: admission scheduler={} test={} verdict={} margin_us={} {} utilisation_ppm={} inflated_ppm={} supply_ppm={}",
        scheduler.name(),
        test_name(scheduler.name()),
        if verdict.admitted { "admitted" } else { "refused" },
        signed_us(verdict.margin_ticks, env.tsc_hz),
        tightest(&verdict, env.tsc_hz),
        sched::utilisation_ppm(&tasks),
        inflated_ppm,
        supply.map_or(0, |supply| supply.share_ppm())
    );
    if !verdict.admitted {
        match config.admission {
            AdmissionMode::Strict => println!("rt: admission refused: the task set is not run (admission = strict)"),
            AdmissionMode::BestEffort => {
                println!("rt: admission refused: running best-effort, deadlines are NOT guaranteed")
            }
        }
    }
    if let Err(error) = table.load(&tasks) {
        println!("rt: task set refused: {:?}", error);
        return EXIT_BAD_PARAMETER;
    }
    let run_it = verdict.admitted || config.admission == AdmissionMode::BestEffort;

    // The real-time loop: no allocation, no printing, no page faults.
    let wall_before = rdtsc();
    let cpu_before = syscall::env_info().ok();
    let time = if run_it {
        run_set(table, &mut *scheduler, horizon_ticks, work_unit_ticks, &work, counters, slot.interrupt_ticks())
    } else {
        TimeSpent::default()
    };
    table.finish(if run_it { horizon_ticks } else { 0 });
    let cpu_after = syscall::env_info().ok();
    let wall_ticks = rdtsc() - wall_before;

    if let Err((va, bits)) = check_pinned() {
        println!("rt: pinned memory lost: page {:#x} has bits {:#x}", va, bits);
        return EXIT_NOT_PINNED;
    }
    report(env, &config, table, counters, &time);
    println!(
        "rt: overheads in the run: decision_max={} ticks (charged {})",
        time.max_decision_ticks, overheads.decision_ticks
    );
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        let share_ppm = mul_div(after.cpu_ticks - before.cpu_ticks, 1_000_000, wall_ticks);
        println!(
            "rt: cpu share_ppm={} slots_owned={}/{} overruns={}",
            share_ppm, after.slots_owned, after.vector_len, after.overruns
        );
    }
    let totals = table.totals();
    println!(
        "rt: scheduler={} utilisation_ppm={} admitted={} jobs={} misses={} max_jitter_us={}",
        scheduler.name(),
        sched::utilisation_ppm(&config.tasks_in_units),
        if verdict.admitted { "yes" } else { "no" },
        totals.jobs_released,
        totals.misses,
        ticks_to_us(totals.max_release_jitter_ticks, env.tsc_hz)
    );
    println!("done");
    0
}

fn verdict_word(schedulable: bool) -> &'static str {
    if schedulable {
        "meets"
    } else {
        "misses"
    }
}

fn test_name(policy: &str) -> &'static str {
    if policy == "rm" {
        "response-time"
    } else {
        "processor-demand"
    }
}

/// Where the margin was found, as `key=value` words.
fn tightest(verdict: &Verdict, tsc_hz: u64) -> alloc::string::String {
    use alloc::format;
    match (verdict.refusal, verdict.tightest) {
        (Some(refusal), _) => format!("reason={:?}", refusal),
        (None, Tightest::Task { index, response_ticks }) => {
            format!("worst_task={} response_us={}", index, ticks_to_us(response_ticks, tsc_hz))
        }
        (None, Tightest::Point { at_ticks }) => format!("at_us={}", ticks_to_us(at_ticks, tsc_hz)),
        (None, Tightest::Nothing) => alloc::string::String::from("worst=none"),
    }
}

/// The per-job overheads to charge, from a measured decision cost.
fn overheads_of(decision_ticks: u64, work_unit_ticks: u64, measured: &Measured) -> Overheads {
    Overheads {
        decision_ticks: decision_ticks + decision_ticks * DECISION_MARGIN_PERCENT / 100,
        work_unit_ticks,
        work_excess_ppm: measured.calibration.error_ppm.max(0) as u64,
    }
}

/// The overheads charged and the supply; `overheads` of `None` in a
/// property run, where the decision is measured per set.
fn print_overheads(overheads: Option<&Overheads>, supply: Option<&Supply>, note: &str, measured: &Measured) {
    let us = |ticks: u64| ticks_to_us(ticks, measured.tsc_hz);
    let supply = supply.copied().unwrap_or(Supply { cycle_ticks: 1, guaranteed_ticks: 0 });
    match overheads {
        Some(overheads) => println!(
            "rt: overheads charged: decision={} ticks (measured +{}%) per work unit of {} ticks, blocking={} ticks, work_excess_ppm={}",
            overheads.decision_ticks,
            DECISION_MARGIN_PERCENT,
            overheads.work_unit_ticks,
            overheads.blocking_ticks(),
            overheads.work_excess_ppm
        ),
        None => println!(
            "rt: overheads charged: decision measured per set (+{}%), work_excess_ppm={}",
            DECISION_MARGIN_PERCENT,
            measured.calibration.error_ppm.max(0)
        ),
    }
    println!(
        "rt: supply slots={}/{} slot_us={} save_bound_us={} cycle_us={} guaranteed_us={} blackout_us={} share_ppm={}{}",
        measured.info.slots_owned,
        measured.info.vector_len,
        us(measured.info.slot_ticks),
        us(measured.info.save_bound_ticks),
        us(supply.cycle_ticks),
        us(supply.guaranteed_ticks),
        us(supply.blackout_ticks()),
        supply.share_ppm(),
        note
    );
}

/// The supply our slots guarantee (module notes of `libos_rt::admission`),
/// widened if a gap we observed at boot was longer than its blackout;
/// `None` if they guarantee nothing.
fn supply_of(measured: &Measured) -> (Option<Supply>, &'static str) {
    let info = &measured.info;
    let slot = &measured.slot;
    // A context switch costs about what the slot-end path does: an
    // interrupt or system call into the kernel, registers saved and
    // restored, and the way back.
    let switch_estimate_ticks =
        slot.tick_ticks.unwrap_or(slot.entry_ticks + slot.exit_ticks + measured.null_syscall_ticks);
    let mut share = SlotShare {
        owned: info.slots_owned,
        vector_len: info.vector_len,
        slot_ticks: info.slot_ticks,
        save_bound_ticks: info.save_bound_ticks,
        slot_overhead_ticks: slot.tick_ticks.unwrap_or(switch_estimate_ticks),
        switch_ticks: slot.entry_ticks
            + slot.before_yield_ticks
            + measured.null_syscall_ticks
            + slot.exit_ticks
            + switch_estimate_ticks,
    };
    let Some(supply) = Supply::from_slots(&share) else {
        return (None, " (no guaranteed supply)");
    };
    if slot.max_away_ticks <= supply.blackout_ticks() || info.slots_owned >= info.vector_len {
        return (Some(supply), "");
    }
    share.switch_ticks += (slot.max_away_ticks - supply.blackout_ticks()).div_ceil(info.vector_len);
    match Supply::from_slots(&share) {
        Some(widened) => (Some(widened), " (widened to cover a gap seen at boot)"),
        None => (Some(supply), ""),
    }
}

/// Admission of `tasks` under `policy`, refused outright without a supply.
fn admit(policy: &str, tasks: &[Task], overheads: &Overheads, supply: Option<&Supply>) -> Verdict {
    match supply {
        Some(supply) => {
            admission::admit(policy, tasks, overheads, supply).unwrap_or(Verdict::refused(Refusal::InvalidTask))
        }
        None => Verdict::refused(Refusal::NoSupply),
    }
}

// --- Measurements at boot ------------------------------------------------------

/// What slot ends cost, seen from a loop spinning on the clock (ticks).
#[derive(Default)]
struct SlotCosts {
    /// The gap a slot end leaves when the next slot is ours: timer
    /// interrupt, kernel entry, the upcall, our handler, the way back.
    /// `None` if none was seen (we own no two slots in a row).
    tick_ticks: Option<u64>,
    /// From the last clock read before a slot end to the handler's first,
    /// and from the handler's last to the first read after it.
    entry_ticks: u64,
    exit_ticks: u64,
    /// From the handler's entry to its `yield`.
    before_yield_ticks: u64,
    /// Longest gap around a yield (other environments' slots in it).
    max_away_ticks: u64,
    ticks_seen: u64,
    yields_seen: u64,
}

impl SlotCosts {
    /// What one slot-end upcall takes from the interrupted code besides the
    /// handler time the handler counts itself.
    fn interrupt_ticks(&self) -> u64 {
        self.entry_ticks + self.exit_ticks
    }
}

/// Spin on the clock across a few slot ends and time them.
fn measure_slot_ends(counters: &SlotCounters, info: &EnvInfo) -> SlotCosts {
    let mut costs = SlotCosts::default();
    let round_ticks = info.vector_len.max(1) * (info.slot_ticks + info.save_bound_ticks);
    let give_up = rdtsc().saturating_add(round_ticks.saturating_mul(3));
    let mut seen = counters.ends();
    let mut own_seen = counters.own_next.load(Ordering::Relaxed);
    let mut now = rdtsc();
    while costs.ticks_seen + costs.yields_seen < 4 && now < give_up {
        let before = now;
        now = rdtsc();
        if counters.ends() == seen {
            continue;
        }
        seen = counters.ends();
        let entry_tsc = counters.entry_tsc.load(Ordering::Relaxed);
        let exit_tsc = counters.exit_tsc.load(Ordering::Relaxed);
        costs.entry_ticks = costs.entry_ticks.max(entry_tsc.saturating_sub(before));
        costs.exit_ticks = costs.exit_ticks.max(now.saturating_sub(exit_tsc));
        let gap_ticks = now - before;
        let own_now = counters.own_next.load(Ordering::Relaxed);
        if own_now != own_seen {
            own_seen = own_now;
            costs.ticks_seen += 1;
            costs.tick_ticks = Some(costs.tick_ticks.unwrap_or(0).max(gap_ticks));
        } else {
            costs.yields_seen += 1;
            costs.max_away_ticks = costs.max_away_ticks.max(gap_ticks);
        }
    }
    costs.before_yield_ticks = counters.max_before_yield_ticks.load(Ordering::Relaxed);
    costs
}

/// The null system call's round trip, the slowest of a few (ticks).
fn measure_null_syscall(counters: &SlotCounters) -> u64 {
    let mut worst_ticks = 0;
    for _ in 0..64 {
        let watch = Stopwatch::start(|| counters.ends(), rdtsc);
        black_box(syscall::null());
        if let Some(ticks) = watch.stop(rdtsc, || counters.ends()) {
            worst_ticks = worst_ticks.max(ticks);
        }
    }
    worst_ticks
}

/// The work loop's check after calibration.
struct CalibrationCheck {
    work: Work,
    asked_ticks: u64,
    /// Net of the slot-end upcalls that interrupted it.
    burned_ticks: u64,
    /// `(burned - asked) / asked`, parts per million.
    error_ppm: i64,
}

/// Calibrate the work loop, then burn a known budget and time it; if it
/// is off by more than 0.5%, calibrate again on a longer sample.
fn calibrate_checked(asked_ticks: u64, counters: &SlotCounters, interrupt_ticks: u64) -> CalibrationCheck {
    let mut sample_iterations = Work::SAMPLE_ITERATIONS;
    let mut check =
        CalibrationCheck { work: Work::calibrate(sample_iterations), asked_ticks, burned_ticks: 0, error_ppm: 0 };
    for attempt in 0..3 {
        if attempt > 0 {
            sample_iterations *= 4;
            check.work = Work::calibrate(sample_iterations);
        }
        // The least of three runs: the others were disturbed more.
        let burned_ticks =
            (0..3).map(|_| timed_work(&check.work, asked_ticks, counters, interrupt_ticks).0).min().unwrap_or(0);
        check.burned_ticks = burned_ticks;
        check.error_ppm = error_ppm(burned_ticks, asked_ticks);
        if check.error_ppm.abs() <= 5_000 {
            break;
        }
    }
    check
}

/// Do `work_ticks` of work; returns the time it took net of slot-end
/// upcalls, and whether one interrupted it.
fn timed_work(work: &Work, work_ticks: u64, counters: &SlotCounters, interrupt_ticks: u64) -> (u64, bool) {
    let ends_before = counters.ends();
    let handler_before = counters.handler_ticks.load(Ordering::Relaxed);
    let began = rdtsc();
    work.run(work_ticks);
    let gross_ticks = rdtsc() - began;
    let interrupts = counters.ends() - ends_before;
    let handler_ticks = counters.handler_ticks.load(Ordering::Relaxed) - handler_before;
    let net_ticks = gross_ticks.saturating_sub(handler_ticks + interrupts * interrupt_ticks);
    (net_ticks, interrupts > 0)
}

fn measure_boot(tsc_hz: u64, unit_ticks: u64, counters: &SlotCounters) -> Measured {
    let info = syscall::env_info().unwrap_or_default();
    let slot = measure_slot_ends(counters, &info);
    let null_syscall_ticks = measure_null_syscall(counters);
    let calibration = calibrate_checked(unit_ticks, counters, slot.interrupt_ticks());
    Measured { tsc_hz, info, slot, null_syscall_ticks, calibration }
}

/// The most one scheduler decision costs for `tasks` under `scheduler`:
/// the loop's steps (release and drop, pick, the clock reads around a
/// unit of no work, the accounting) replayed on a scratch table with a
/// clock that moves one work unit per step, so releases, completions and
/// drops all happen. Steps a slot end interrupted are left out.
fn measure_decision(
    tasks: &[Task],
    scheduler: &mut dyn RtScheduler,
    work_unit_ticks: u64,
    counters: &SlotCounters,
) -> u64 {
    let mut table = Box::new(JobTable::new());
    // Two passes over the same replay; only the second is timed. Under a
    // translating emulator (plain TCG) the first run of any code includes
    // its translation, which is no part of a decision; under `-icount`
    // the two passes cost the same.
    let mut worst_ticks = 0;
    for pass in 0..2 {
        if table.load(tasks).is_err() {
            return 0;
        }
        let worst = replay_decisions(&mut table, scheduler, work_unit_ticks, counters);
        if pass == 1 {
            worst_ticks = worst;
        }
    }
    worst_ticks
}

/// One replay of 2,000 scheduling steps on `table`: the longest step.
fn replay_decisions(
    table: &mut JobTable,
    scheduler: &mut dyn RtScheduler,
    work_unit_ticks: u64,
    counters: &SlotCounters,
) -> u64 {
    let mut worst_ticks = 0;
    let mut fake_now_ticks = 0u64;
    for _ in 0..2_000 {
        let seen = counters.ends();
        let handler_before = counters.handler_ticks.load(Ordering::Relaxed);
        let watch = Stopwatch::start(|| counters.ends(), rdtsc);
        table.advance(fake_now_ticks);
        let step_ticks = match table.pick(scheduler, fake_now_ticks) {
            Some(index) => {
                let work_ticks = table.work_for(index, work_unit_ticks);
                let began = rdtsc();
                black_box(began);
                let ended = rdtsc();
                let interrupts = counters.ends() - seen;
                let handler_ticks = counters.handler_ticks.load(Ordering::Relaxed) - handler_before;
                black_box((ended, interrupts, handler_ticks));
                table.ran(index, work_ticks, fake_now_ticks + work_ticks);
                work_ticks
            }
            None => table.next_release_ticks().saturating_sub(fake_now_ticks),
        };
        if let Some(ticks) = watch.stop(rdtsc, || counters.ends()) {
            worst_ticks = worst_ticks.max(ticks);
        }
        fake_now_ticks += step_ticks;
    }
    worst_ticks
}

// --- Running a task set ------------------------------------------------------

/// Run the loaded table until `horizon_ticks` (from now): the real-time
/// loop. No allocation, no printing, no page faults.
fn run_set(
    table: &mut JobTable,
    scheduler: &mut dyn RtScheduler,
    horizon_ticks: u64,
    work_unit_ticks: u64,
    work: &Work,
    counters: &SlotCounters,
    interrupt_ticks: u64,
) -> TimeSpent {
    let mut time = TimeSpent::default();
    let start = rdtsc();
    let mut now_ticks = 0;
    while now_ticks < horizon_ticks {
        // The count before the clock (see `Stopwatch`): a slot end between
        // the two reads would otherwise be timed as part of the decision.
        let step = Stopwatch::start(|| counters.ends(), rdtsc);
        table.advance(now_ticks);
        match table.pick(scheduler, now_ticks) {
            Some(index) => {
                let work_ticks = table.work_for(index, work_unit_ticks);
                let began = rdtsc();
                let (net_ticks, _) = timed_work(work, work_ticks, counters, interrupt_ticks);
                let ended = rdtsc();
                now_ticks = ended - start;
                table.ran(index, work_ticks, now_ticks);
                time.nominal_work_ticks += work_ticks;
                time.work_ticks += net_ticks;
                time.gross_work_ticks += ended - began;
                if let Some(step_ticks) = step.stop(rdtsc, || counters.ends()) {
                    time.max_decision_ticks = time.max_decision_ticks.max(step_ticks - (ended - began));
                }
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
    time
}

/// `(burned - asked) / asked` in parts per million.
fn error_ppm(burned_ticks: u64, asked_ticks: u64) -> i64 {
    ((burned_ticks as i128 - asked_ticks as i128) * 1_000_000 / asked_ticks.max(1) as i128) as i64
}

/// The property run: `sets` generated task sets, utilisation from 0.5 to
/// 1.0, EDF and RM alternately, every third with constrained deadlines;
/// each admitted set (and with `run_refused` each refused one, as best
/// effort) runs for its hyperperiod plus its longest deadline (at most
/// `set_horizon_ms`) and its misses are counted.
fn run_property(measured: &Measured, table: &mut JobTable, counters: &SlotCounters, property: Property) -> i32 {
    let Property { sets, seed, set_horizon_ms, run_refused } = property;
    let tsc_hz = measured.tsc_hz;
    let us = |ticks: u64| ticks_to_us(ticks, tsc_hz);
    let work_unit_ticks = mul_div(PROPERTY_WORK_UNIT_US, tsc_hz, 1_000_000);
    let (supply, note) = supply_of(measured);
    print_overheads(None, supply.as_ref(), note, measured);
    println!(
        "rt: property run of {} sets: seed={} set_horizon_ms={} work_unit_us={} run_refused={}",
        sets,
        seed,
        set_horizon_ms,
        PROPERTY_WORK_UNIT_US,
        if run_refused { "yes (best effort)" } else { "no" }
    );
    let mut generator = Generator::new(seed);
    let (mut admitted, mut refused, mut admitted_with_misses) = (0u64, 0u64, 0u64);
    let (mut jobs, mut misses, mut worst_work_error_ppm, mut worst_decision_over) = (0u64, 0u64, 0i64, 0i64);
    let (mut refused_run, mut refused_with_misses) = (0u64, 0u64);
    for set in 0..sets {
        let policy = if set % 2 == 0 { "edf" } else { "rm" };
        let Some(mut scheduler) = sched::by_name(policy) else { return EXIT_BAD_PARAMETER };
        let target_ppm = 500_000 + set * 500_000 / (sets - 1).max(1);
        let task_count = 2 + generator.below(5) as usize;
        let constrained = set % 3 == 2;
        let tasks_us = generator.task_set(target_ppm, task_count, &PROPERTY_PERIODS_US, constrained);
        let Some(tasks) = scale_us(&tasks_us, tsc_hz) else { return EXIT_BAD_PARAMETER };
        let decision_ticks = measure_decision(&tasks, &mut *scheduler, work_unit_ticks, counters);
        let overheads = overheads_of(decision_ticks, work_unit_ticks, measured);
        let verdict = admit(policy, &tasks, &overheads, supply.as_ref());
        let utilisation_ppm = sched::utilisation_ppm(&tasks_us);
        let inflated_ppm = sched::utilisation_ppm(&admission::inflate(&tasks, &overheads));
        let head = alloc::format!(
            "rt: set {} scheduler={} tasks={} deadlines={} utilisation_ppm={} inflated_ppm={} verdict={} margin_us={} {}",
            set,
            policy,
            tasks.len(),
            if constrained { "constrained" } else { "implicit" },
            utilisation_ppm,
            inflated_ppm,
            if verdict.admitted { "admitted" } else { "refused" },
            signed_us(verdict.margin_ticks, tsc_hz),
            tightest(&verdict, tsc_hz)
        );
        if !verdict.admitted {
            refused += 1;
            if !run_refused {
                println!("{}", head);
                continue;
            }
        } else {
            admitted += 1;
        }
        let hyperperiod_us = sched::hyperperiod_ticks(&tasks_us).unwrap_or(u64::MAX);
        let longest_deadline_us = tasks_us.iter().map(|task| task.deadline_ticks).max().unwrap_or(0);
        let horizon_us = hyperperiod_us.saturating_add(longest_deadline_us).min(set_horizon_ms * 1000);
        if table.load(&tasks).is_err() {
            return EXIT_BAD_PARAMETER;
        }
        let time = run_set(
            table,
            &mut *scheduler,
            mul_div(horizon_us, tsc_hz, 1_000_000),
            work_unit_ticks,
            &measured.calibration.work,
            counters,
            measured.slot.interrupt_ticks(),
        );
        table.finish(mul_div(horizon_us, tsc_hz, 1_000_000));
        let totals = table.totals();
        let work_error = error_ppm(time.work_ticks, time.nominal_work_ticks);
        println!(
            "{}{} jobs={} misses={} max_jitter_us={} work_error_ppm={} decision_max={} charged={}",
            head,
            if verdict.admitted { "" } else { " best-effort" },
            totals.jobs_released,
            totals.misses,
            us(totals.max_release_jitter_ticks),
            work_error,
            time.max_decision_ticks,
            overheads.decision_ticks
        );
        if !verdict.admitted {
            refused_run += 1;
            refused_with_misses += u64::from(totals.misses > 0);
            continue;
        }
        jobs += totals.jobs_released;
        misses += totals.misses;
        if totals.misses > 0 {
            admitted_with_misses += 1;
        }
        if work_error.abs() > worst_work_error_ppm.abs() {
            worst_work_error_ppm = work_error;
        }
        worst_decision_over = worst_decision_over.max(time.max_decision_ticks as i64 - overheads.decision_ticks as i64);
    }
    if let Err((va, bits)) = check_pinned() {
        println!("rt: pinned memory lost: page {:#x} has bits {:#x}", va, bits);
        return EXIT_NOT_PINNED;
    }
    println!(
        "rt: property sets={} admitted={} refused={} admitted_with_misses={} jobs={} misses={} worst_work_error_ppm={} decision_over_charge={} refused_run={} refused_with_misses={} yielded={}",
        sets,
        admitted,
        refused,
        admitted_with_misses,
        jobs,
        misses,
        worst_work_error_ppm,
        worst_decision_over,
        refused_run,
        refused_with_misses,
        counters.yielded.load(Ordering::Relaxed)
    );
    println!("done");
    0
}

/// Microsecond tasks in ticks of a `tsc_hz` clock (`None` on overflow).
fn scale_us(tasks_us: &[Task], tsc_hz: u64) -> Option<Vec<Task>> {
    let ticks = |us: u64| {
        let value = us as u128 * tsc_hz as u128 / 1_000_000;
        u64::try_from(value).ok()
    };
    tasks_us
        .iter()
        .map(|task| {
            Some(Task::new(task.id, ticks(task.period_ticks)?, ticks(task.budget_ticks)?, ticks(task.deadline_ticks)?))
        })
        .collect()
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
    let admission = match env.param("admission").map(str::trim) {
        Some("strict") => AdmissionMode::Strict,
        None | Some("best-effort") => AdmissionMode::BestEffort,
        Some(other) => {
            println!("rt: admission = {:?}: expected best-effort or strict", other);
            return Err(());
        }
    };
    let property = match env.param("property_sets") {
        None => None,
        Some(_) => Some(Property {
            sets: number("property_sets", 1, 1000)?,
            seed: number("seed", 1, u64::MAX)?,
            set_horizon_ms: number("set_horizon_ms", DEFAULT_SET_HORIZON_MS, 10_000)?,
            run_refused: match env.param("run_refused").map(str::trim) {
                None | Some("no") => false,
                Some("yes") => true,
                Some(other) => {
                    println!("rt: run_refused = {:?}: expected yes or no", other);
                    return Err(());
                }
            },
        }),
    };
    Ok(Config {
        policy: env.param("scheduler").unwrap_or("edf").trim(),
        tasks_in_units,
        unit_us,
        horizon_ms,
        admission,
        property,
    })
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
        "rt: time work_us={} (budgeted {}, error={}; {} with upcalls and other slots) idle_us={} scheduling_us={}",
        us(time.work_ticks),
        us(time.nominal_work_ticks),
        percent(error_ppm(time.work_ticks, time.nominal_work_ticks)),
        us(time.gross_work_ticks),
        us(time.idle_ticks),
        us(time.total_ticks.saturating_sub(time.gross_work_ticks + time.idle_ticks))
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
/// once if the next slot is ours too. Times itself for the measurements.
fn on_slot_end(frame: &mut UpcallFrame) {
    let entry_tsc = rdtsc();
    if frame.vector != SLOT_END {
        return;
    }
    let counters = pinned_counters();
    if frame.fault_addr != 1 {
        let left = rdtsc();
        syscall::yield_now();
        let away_ticks = rdtsc() - left;
        if let Some(counters) = counters {
            counters.max_before_yield_ticks.fetch_max(left - entry_tsc, Ordering::Relaxed);
            counters.max_away_ticks.fetch_max(away_ticks, Ordering::Relaxed);
        }
    }
    if let Some(counters) = counters {
        counters.entry_tsc.store(entry_tsc, Ordering::Relaxed);
        // The count last: the main loop reads it first, then the times.
        let exit_tsc = rdtsc();
        counters.exit_tsc.store(exit_tsc, Ordering::Relaxed);
        counters.handler_ticks.fetch_add(exit_tsc - entry_tsc, Ordering::Relaxed);
        let count = if frame.fault_addr == 1 { &counters.own_next } else { &counters.yielded };
        count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where the run's time went (TSC ticks).
#[derive(Default)]
struct TimeSpent {
    total_ticks: u64,
    /// The work units' time net of slot-end upcalls and other
    /// environments' slots, what they were budgeted, and their wall time.
    work_ticks: u64,
    nominal_work_ticks: u64,
    gross_work_ticks: u64,
    /// Waiting for the next release with nothing ready (other slots included).
    idle_ticks: u64,
    /// The longest step of the loop outside its work unit, among steps no
    /// slot end interrupted.
    max_decision_ticks: u64,
}

/// The job "work": a loop whose iterations cost a known number of TSC
/// ticks (instructions under `-icount`), measured at start.
#[derive(Clone, Copy)]
struct Work {
    iterations: u64,
    ticks: u64,
}

impl Work {
    const SAMPLE_ITERATIONS: u64 = 20_000;

    /// Time the loop a few times and keep the fastest run: a slower one
    /// was interrupted.
    fn calibrate(sample_iterations: u64) -> Self {
        let ticks = (0..5)
            .map(|_| {
                let start = rdtsc();
                spin_work(sample_iterations);
                rdtsc() - start
            })
            .min()
            .unwrap_or(1)
            .max(1);
        Work { iterations: sample_iterations, ticks }
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

/// Signed ticks as signed microseconds (`i64::MIN` stays a marker: printed as `none`).
fn signed_us(ticks: i64, tsc_hz: u64) -> alloc::string::String {
    if ticks == i64::MIN {
        return alloc::string::String::from("none");
    }
    let magnitude = ticks_to_us(ticks.unsigned_abs(), tsc_hz);
    alloc::format!("{}{}", if ticks < 0 { "-" } else { "" }, magnitude)
}

/// Parts per million as a signed percentage with three decimals.
fn percent(ppm: i64) -> alloc::string::String {
    let sign = if ppm < 0 { "-" } else { "+" };
    let magnitude = ppm.unsigned_abs();
    alloc::format!("{}{}.{:03}%", sign, magnitude / 10_000, (magnitude % 10_000) / 10)
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
