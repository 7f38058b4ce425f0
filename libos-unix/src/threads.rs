//! Preemptive user-level threads: end-of-slot upcalls preempt, `int3` enters the scheduler on purpose.
//!
//! The exokernel knows nothing of threads. At every slot end it upcalls
//! the libOS (`SLOT_END`) with the interrupted registers in the frame; a
//! thread switch is: save the frame as the current thread's context, ask
//! the [`ThreadTable`] (and through it the manifest's policy) who runs
//! next, load that thread's context into the frame, return. When the next
//! slot is another environment's (`fault_addr == 0`) the handler does the
//! same and then yields within the save bound. A thread that sleeps or
//! finishes enters the same switch through `int3` (an exception upcall
//! with `rip` already past the instruction).
//!
//! Locking: only the two handlers touch the table, and only when they
//! interrupted thread code (checked by `rsp`), which never holds the
//! table's lock nor allocates. Threads talk to the handlers through
//! atomics. A tick that arrives while a handler runs (nested upcall) or
//! while the main loop holds the table is skipped (and still yields when
//! it must). Threads are spawned before [`run`] and stay allocation-free,
//! because the handler allocates in the policy's queues and must never
//! find the heap lock taken by the code it interrupted.
//!
//! Defence in depth: an older runtime trampoline moved `rsp` to the
//! thread's stack before loading the remaining registers, so a slot-end
//! upcall landing in between overwrote the frame being read. The runtime
//! now loads every register first; the handlers still remember the context
//! the trampoline is resuming and, should a tick land in such a window,
//! resume the thread from it directly ([`repair_interrupted_resume`]).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use libos_runtime::println;
use libos_runtime::rt::{rdtsc, set_handler, Env};
use libos_runtime::start::{STACK_SIZE, STACK_TOP};
use libos_runtime::syscall;
use libos_runtime::upcall::{Regs, UpcallFrame, UpcallKind, SLOT_END};
use libos_unix::sched::ProcScheduler;
use libos_unix::uthread::{Event, ThreadState, ThreadTable, IDLE};
use spin::Mutex;

/// Most threads, [`IDLE`] included.
pub const MAX_THREADS: usize = 16;
/// Stack of every spawned thread.
const STACK_BYTES: usize = 16 * 1024;
/// Written at the bottom of every thread stack; checked at the end.
const STACK_CANARY: u128 = 0x5afe_57ac_c0de_0000_5afe_57ac_c0de_0000;
/// Interrupts enabled, reserved bit 1 set.
const INITIAL_RFLAGS: u64 = 0x202;

/// A thread's registers while it is not running.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context {
    regs: Regs,
    rip: u64,
    rsp: u64,
    rflags: u64,
}

impl Context {
    fn save(frame: &UpcallFrame) -> Context {
        Context { regs: frame.regs, rip: frame.rip, rsp: frame.rsp, rflags: frame.rflags }
    }

    fn restore(&self, frame: &mut UpcallFrame) {
        frame.regs = self.regs;
        frame.rip = self.rip;
        frame.rsp = self.rsp;
        frame.rflags = self.rflags;
    }
}

/// A thread body: runs with its argument, then the thread finishes.
pub type Body = fn(usize);

static TABLE: Mutex<Option<ThreadTable<Context>>> = Mutex::new(None);
/// Thread stacks, touched only by the main code (spawn and report).
static STACKS: Mutex<Vec<Box<[u128]>>> = Mutex::new(Vec::new());

/// The handlers schedule threads only while this is set (by [`run`]).
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The running thread, as the handlers last switched.
static CURRENT: AtomicUsize = AtomicUsize::new(IDLE);
static SPAWNED: AtomicUsize = AtomicUsize::new(1);
/// Per thread: the TSC time it sleeps until (0: awake); cleared when it runs again.
static SLEEP_UNTIL: [AtomicU64; MAX_THREADS] = [const { AtomicU64::new(0) }; MAX_THREADS];
/// Per thread: its body returned, or an exception killed it.
static FINISHED: [AtomicBool; MAX_THREADS] = [const { AtomicBool::new(false) }; MAX_THREADS];
/// Per thread: its stack, `[lo, hi)`; `rsp` inside tells thread code from handler code.
static STACK_LO: [AtomicU64; MAX_THREADS] = [const { AtomicU64::new(0) }; MAX_THREADS];
static STACK_HI: [AtomicU64; MAX_THREADS] = [const { AtomicU64::new(0) }; MAX_THREADS];
/// The table's CPU accounting, mirrored at every decision for the threads to read.
static CPU_TICKS: [AtomicU64; MAX_THREADS] = [const { AtomicU64::new(0) }; MAX_THREADS];
static CHARGED_UNTIL_TSC: AtomicU64 = AtomicU64::new(0);
/// Threads ended by an exception.
static KILLED: AtomicU64 = AtomicU64::new(0);
/// Ticks that found a handler or the main code in the way and did not schedule.
static SKIPPED_TICKS: AtomicU64 = AtomicU64::new(0);

/// Build the thread table with `policy` and take the end-of-slot and
/// exception upcalls. The caller becomes [`IDLE`].
pub fn init(policy: Box<dyn ProcScheduler>) -> Result<(), &'static str> {
    STACK_LO[IDLE].store(STACK_TOP - STACK_SIZE, SeqCst);
    STACK_HI[IDLE].store(STACK_TOP, SeqCst);
    *TABLE.lock() = Some(ThreadTable::new(policy, Context::default(), rdtsc()));
    set_handler(UpcallKind::Interrupt, on_interrupt).map_err(|_| "interrupt handler")?;
    set_handler(UpcallKind::Exception, on_exception).map_err(|_| "exception handler")?;
    Ok(())
}

/// Create a runnable thread that runs `body(arg)` on a stack of its own.
/// Only before [`run`]: spawning allocates.
pub fn spawn(body: Body, arg: usize) -> Result<usize, &'static str> {
    if ACTIVE.load(SeqCst) {
        return Err("spawn while the scheduler runs");
    }
    let tid = SPAWNED.load(SeqCst);
    if tid >= MAX_THREADS {
        return Err("too many threads");
    }
    let mut stack = alloc::vec![0u128; STACK_BYTES / 16].into_boxed_slice();
    stack[0] = STACK_CANARY;
    let lo = stack.as_ptr() as u64;
    let hi = lo + STACK_BYTES as u64;
    let mut context = Context { rip: thread_start as *const () as u64, rflags: INITIAL_RFLAGS, ..Context::default() };
    // As if `thread_start` had been called: rsp + 8 is 16-aligned, and the
    // (zero) word at rsp is its return address.
    context.rsp = hi - 8;
    context.regs.rdi = tid as u64;
    context.regs.rsi = body as usize as u64;
    context.regs.rdx = arg as u64;
    STACKS.lock().push(stack);
    STACK_LO[tid].store(lo, SeqCst);
    STACK_HI[tid].store(hi, SeqCst);
    let spawned = TABLE.lock().as_mut().ok_or("threads::init first")?.spawn(context);
    debug_assert_eq!(spawned, tid);
    SPAWNED.store(tid + 1, SeqCst);
    Ok(tid)
}

/// Where every thread starts: run the body, then finish for good.
extern "C" fn thread_start(tid: usize, body: usize, arg: usize) -> ! {
    // SAFETY: `spawn` put a `Body` in rsi, and `Body` is a plain fn pointer.
    let body: Body = unsafe { core::mem::transmute::<usize, Body>(body) };
    body(arg);
    FINISHED[tid].store(true, SeqCst);
    loop {
        enter_scheduler();
    }
}

/// Trap into the thread scheduler (an exception upcall); returns when the
/// scheduler next runs the caller.
#[inline(always)]
fn enter_scheduler() {
    // SAFETY: `int3` raises an exception upcall; the handler saves every
    // register and resumes here later with all of them (flags included)
    // as they were. It may let other threads write memory meanwhile, so
    // the asm is not `nomem`. The resume staging below rsp is safe: libOS
    // code has no red zone.
    unsafe { asm!("int3") };
}

/// The running thread's id.
pub fn current() -> usize {
    CURRENT.load(SeqCst)
}

/// Block the calling thread until the TSC reaches `until_tsc`.
pub fn sleep_until(until_tsc: u64) {
    let me = current();
    SLEEP_UNTIL[me].store(until_tsc.max(1), SeqCst);
    while SLEEP_UNTIL[me].load(SeqCst) != 0 {
        enter_scheduler();
    }
}

/// CPU ticks the calling thread has received so far.
pub fn my_cpu_ticks() -> u64 {
    let me = current();
    loop {
        let before = CPU_TICKS[me].load(SeqCst);
        let since = CHARGED_UNTIL_TSC.load(SeqCst);
        let now = rdtsc();
        // A switch in between changes the mirror: read it again.
        if CPU_TICKS[me].load(SeqCst) == before && CHARGED_UNTIL_TSC.load(SeqCst) == since {
            return before + now.saturating_sub(since);
        }
    }
}

/// Run the threads until all have finished; the caller idles meanwhile,
/// waking sleepers when they are due and otherwise offering the CPU to
/// other environments.
pub fn run() {
    ACTIVE.store(true, SeqCst);
    enter_scheduler();
    loop {
        let spawned = SPAWNED.load(SeqCst);
        if (1..spawned).all(|tid| FINISHED[tid].load(SeqCst)) {
            break;
        }
        let now = rdtsc();
        let due = (1..spawned).any(|tid| {
            let until = SLEEP_UNTIL[tid].load(SeqCst);
            until != 0 && until <= now
        });
        if due {
            enter_scheduler();
        } else {
            syscall::yield_now();
        }
    }
    ACTIVE.store(false, SeqCst);
}

/// The context the runtime's trampoline resumes after this module's
/// handlers last returned to thread code.
static RESUMING: Mutex<Option<Context>> = Mutex::new(None);
/// Ticks that landed in the trampoline's resume window and were repaired.
static REPAIRED_RESUMES: AtomicU64 = AtomicU64::new(0);
/// The runtime's trampoline is shorter than this many bytes.
const TRAMPOLINE_MAX_BYTES: u64 = 256;

extern "C" {
    /// The runtime's upcall trampoline (libos-runtime `rt`), where resumes run.
    fn upcall_entry();
}

/// If the upcall interrupted the trampoline after it moved `rsp` onto the
/// resumed thread's stack (within the 32 bytes it stages there), put the
/// remembered context of that thread in the frame: the trampoline's own
/// progress is lost with the overwritten frame, the thread's state is not.
fn repair_interrupted_resume(frame: &mut UpcallFrame) {
    let entry = upcall_entry as *const () as u64;
    if !(entry..entry + TRAMPOLINE_MAX_BYTES).contains(&frame.rip) {
        return;
    }
    let Some(resuming) = RESUMING.try_lock().and_then(|guard| *guard) else {
        return;
    };
    if (resuming.rsp.saturating_sub(32)..resuming.rsp).contains(&frame.rsp) {
        resuming.restore(frame);
        REPAIRED_RESUMES.fetch_add(1, SeqCst);
    }
}

/// The handler that interrupted thread code is about to return to the
/// trampoline, which will resume `frame`.
fn remember_resume(frame: &UpcallFrame) {
    if let Some(mut resuming) = RESUMING.try_lock() {
        *resuming = Some(Context::save(frame));
    }
}

/// Did the upcall interrupt the current thread's own code (not a handler)?
fn interrupted_thread_code(frame: &UpcallFrame) -> bool {
    let tid = CURRENT.load(SeqCst);
    (STACK_LO[tid].load(SeqCst)..=STACK_HI[tid].load(SeqCst)).contains(&frame.rsp)
}

/// Take `event` for the current thread and leave the frame holding the
/// context of the thread that runs next.
fn switch(table: &mut ThreadTable<Context>, frame: &mut UpcallFrame, event: Event, now_tsc: u64) {
    let from = table.current();
    let to = table.handle(event, now_tsc);
    if to != from {
        *table.context_mut(from) = Context::save(frame);
        table.context(to).restore(frame);
        CURRENT.store(to, SeqCst);
    }
    SLEEP_UNTIL[to].store(0, SeqCst);
    mirror(table);
}

fn mirror(table: &ThreadTable<Context>) {
    for tid in 0..table.len() {
        CPU_TICKS[tid].store(table.stats(tid).cpu_ticks, SeqCst);
    }
    CHARGED_UNTIL_TSC.store(table.charged_until_tsc(), SeqCst);
}

/// End of a time slot: a tick for the thread scheduler; when another
/// environment's slot is next, also yield (within `frame.error_code` ticks).
fn on_interrupt(frame: &mut UpcallFrame) {
    if frame.vector != SLOT_END {
        return;
    }
    let must_yield = frame.fault_addr == 0;
    let mut scheduled = false;
    repair_interrupted_resume(frame);
    let thread_code = interrupted_thread_code(frame);
    if ACTIVE.load(SeqCst) {
        if thread_code {
            if let Some(table) = TABLE.try_lock().as_mut().and_then(|guard| guard.as_mut()) {
                switch(table, frame, Event::Tick, rdtsc());
                scheduled = true;
            }
        }
        if !scheduled {
            SKIPPED_TICKS.fetch_add(1, SeqCst);
        }
    }
    if must_yield {
        let left_tsc = rdtsc();
        syscall::yield_now();
        if scheduled {
            if let Some(table) = TABLE.try_lock().as_mut().and_then(|guard| guard.as_mut()) {
                table.resumed(left_tsc, rdtsc());
                mirror(table);
            }
        }
    }
    if thread_code {
        remember_resume(frame);
    }
}

/// `int3` from a thread: it sleeps, finishes or yields. Any other
/// exception kills the thread that raised it.
fn on_exception(frame: &mut UpcallFrame) {
    let tid = CURRENT.load(SeqCst);
    if !ACTIVE.load(SeqCst) || !interrupted_thread_code(frame) {
        println!("threads: exception {} at {:#x} outside any thread", frame.vector, frame.rip);
        syscall::exit(3);
    }
    let event = if frame.vector == 3 {
        if FINISHED[tid].load(SeqCst) {
            Event::Finish
        } else {
            match SLEEP_UNTIL[tid].load(SeqCst) {
                0 => Event::Yield,
                until_tsc => Event::Sleep { until_tsc },
            }
        }
    } else {
        println!("thread {}: exception {} at {:#x}: thread killed", tid, frame.vector, frame.rip);
        KILLED.fetch_add(1, SeqCst);
        FINISHED[tid].store(true, SeqCst);
        Event::Finish
    };
    let mut guard = TABLE.try_lock();
    let Some(table) = guard.as_mut().and_then(|guard| guard.as_mut()) else {
        // Thread code never holds the table: this is a bug, not a race.
        println!("threads: thread table busy at an int3 from thread {}", tid);
        syscall::exit(3);
    };
    switch(table, frame, event, rdtsc());
    remember_resume(frame);
}

// ---------------------------------------------------------------------------
// Workloads

/// What one run of the scheduler left behind.
struct Report {
    policy: &'static str,
    switches: u64,
    stats: Vec<libos_unix::uthread::ThreadStats>,
    all_finished: bool,
    stacks_intact: bool,
}

/// Stop scheduling and collect the table's figures.
fn report() -> Report {
    let guard = TABLE.lock();
    let table = guard.as_ref().expect("thread table");
    let stacks_intact = STACKS.lock().iter().all(|stack| stack[0] == STACK_CANARY);
    Report {
        policy: table.policy_name(),
        switches: table.switches(),
        stats: (0..table.len()).map(|tid| table.stats(tid)).collect(),
        all_finished: table.all_finished() && (1..table.len()).all(|tid| table.state(tid) == ThreadState::Finished),
        stacks_intact,
    }
}

fn start(env: &Env, mode: &str) -> Result<(), i32> {
    let name = env.param("scheduler").unwrap_or("rr");
    let Some(policy) = libos_unix::sched::by_name(name) else {
        println!("{}: unknown scheduler {:?} (rr, mlfq)", mode, name);
        return Err(2);
    };
    if let Err(what) = init(policy) {
        println!("{}: {}", mode, what);
        return Err(1);
    }
    Ok(())
}

fn param_u64(env: &Env, key: &str, default: u64) -> u64 {
    env.param(key).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// When the `threads` workload stops (TSC).
static END_TSC: AtomicU64 = AtomicU64::new(0);
static TSC_PER_MS: AtomicU64 = AtomicU64::new(1_000_000);
/// Work units each thread completed.
static WORK: [AtomicU64; MAX_THREADS] = [const { AtomicU64::new(0) }; MAX_THREADS];
/// The interactive thread's own view: how late past its deadline it ran.
static OVERSLEEP_MAX_TICKS: AtomicU64 = AtomicU64::new(0);
static OVERSLEEP_TOTAL_TICKS: AtomicU64 = AtomicU64::new(0);

/// One unit of CPU-bound work (a few thousand instructions).
fn work_unit(seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..500 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    core::hint::black_box(x)
}

/// A CPU-bound thread: works until the end time.
fn batch(_arg: usize) {
    let me = current();
    let end = END_TSC.load(SeqCst);
    let mut seed = me as u64;
    while rdtsc() < end {
        seed = work_unit(seed);
        WORK[me].fetch_add(1, SeqCst);
    }
}

/// Work units of one interactive burst (a small fraction of a tick).
const BURST_UNITS: u64 = 40;

/// An interactive thread: a short burst, then a sleep of 2 to 5 ms
/// (pseudo-random, so wake-ups fall at every phase of the quanta).
fn interactive(_arg: usize) {
    let me = current();
    let end = END_TSC.load(SeqCst);
    let tsc_per_ms = TSC_PER_MS.load(SeqCst);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    while rdtsc() < end {
        for _ in 0..BURST_UNITS {
            rng = work_unit(rng);
            WORK[me].fetch_add(1, SeqCst);
        }
        let sleep_ticks = 2 * tsc_per_ms + rng % (3 * tsc_per_ms);
        let deadline = rdtsc() + sleep_ticks;
        sleep_until(deadline);
        let late = rdtsc().saturating_sub(deadline);
        OVERSLEEP_TOTAL_TICKS.fetch_add(late, SeqCst);
        OVERSLEEP_MAX_TICKS.fetch_max(late, SeqCst);
    }
}

/// `args = threads`: three CPU-bound threads and one interactive thread
/// under the manifest's scheduler for `run_ms` (default 300); reports the
/// CPU each got and the interactive thread's wake-to-run latency.
pub fn threads_workload(env: &Env) -> i32 {
    const BATCH: usize = 3;
    if let Err(code) = start(env, "threads") {
        return code;
    }
    let run_ms = param_u64(env, "run_ms", 300);
    let tsc_per_ms = (env.tsc_hz / 1000).max(1);
    let us = |ticks: u64| ticks * 1000 / tsc_per_ms;
    TSC_PER_MS.store(tsc_per_ms, SeqCst);
    END_TSC.store(rdtsc() + run_ms * tsc_per_ms, SeqCst);
    let mut batch_tids = Vec::new();
    for i in 0..BATCH {
        batch_tids.push(spawn(batch, i).expect("spawn batch thread"));
    }
    let interactive_tid = spawn(interactive, 0).expect("spawn interactive thread");
    let policy_name = env.param("scheduler").unwrap_or("rr");
    println!("threads: scheduler={} {} batch threads, 1 interactive, {} ms", policy_name, BATCH, run_ms);
    run();

    let report = report();
    let batch_total: u64 = batch_tids.iter().map(|&tid| report.stats[tid].cpu_ticks).sum::<u64>().max(1);
    let mut share_min = u64::MAX;
    let mut share_max = 0;
    for &tid in &batch_tids {
        let stats = report.stats[tid];
        let share_ppm = stats.cpu_ticks * 1_000_000 / batch_total;
        share_min = share_min.min(share_ppm);
        share_max = share_max.max(share_ppm);
        println!(
            "thread {} batch: cpu_us={} share_ppm={} slices={} work={}",
            tid,
            us(stats.cpu_ticks),
            share_ppm,
            stats.slices,
            WORK[tid].load(SeqCst)
        );
    }
    let inter = report.stats[interactive_tid];
    println!(
        "thread {} interactive: cpu_us={} slices={} wakeups={} latency_max_us={} latency_avg_us={} oversleep_max_us={} oversleep_avg_us={} work={}",
        interactive_tid,
        us(inter.cpu_ticks),
        inter.slices,
        inter.wakeups,
        us(inter.latency_max_ticks),
        us(inter.latency_avg_ticks()),
        us(OVERSLEEP_MAX_TICKS.load(SeqCst)),
        us(OVERSLEEP_TOTAL_TICKS.load(SeqCst) / inter.wakeups.max(1)),
        WORK[interactive_tid].load(SeqCst)
    );
    println!(
        "thread 0 idle: cpu_us={} skipped_ticks={} repaired_resumes={}",
        us(report.stats[IDLE].cpu_ticks),
        SKIPPED_TICKS.load(SeqCst),
        REPAIRED_RESUMES.load(SeqCst)
    );
    println!(
        "threads: scheduler={} switches={} interactive_latency_max_us={} interactive_latency_avg_us={} batch_share_min_ppm={} batch_share_max_ppm={}",
        report.policy,
        report.switches,
        us(inter.latency_max_ticks),
        us(inter.latency_avg_ticks()),
        share_min,
        share_max
    );
    finish_line("threads", &report)
}

fn finish_line(mode: &str, report: &Report) -> i32 {
    let killed = KILLED.load(SeqCst);
    if report.all_finished && killed == 0 && report.stacks_intact {
        println!("{}: all finished", mode);
        0
    } else {
        println!(
            "{}: FAILED: all_finished={} killed={} stacks_intact={}",
            mode, report.all_finished, killed, report.stacks_intact
        );
        1
    }
}

/// CPU each hog thread burns, in ticks.
static HOG_TICKS: AtomicU64 = AtomicU64::new(0);

/// A CPU hog: works until it has had its CPU budget, printing progress.
fn hog(_arg: usize) {
    let me = current();
    let budget = HOG_TICKS.load(SeqCst);
    let tsc_per_ms = TSC_PER_MS.load(SeqCst);
    let step = 50 * tsc_per_ms;
    let mut next_report = step;
    let mut seed = me as u64;
    loop {
        seed = work_unit(seed);
        WORK[me].fetch_add(1, SeqCst);
        let used = my_cpu_ticks();
        if used >= next_report.min(budget) {
            println!("hog: thread {} at {} ms of cpu", me, used / tsc_per_ms);
            next_report += step;
        }
        if used >= budget {
            break;
        }
    }
}

/// `args = hog`: three threads that each burn `hog_ms` (default 130) of
/// CPU under the manifest's scheduler, printing progress, then `done`.
pub fn hog_workload(env: &Env) -> i32 {
    const THREADS: usize = 3;
    if let Err(code) = start(env, "hog") {
        return code;
    }
    let hog_ms = param_u64(env, "hog_ms", 130);
    let tsc_per_ms = (env.tsc_hz / 1000).max(1);
    TSC_PER_MS.store(tsc_per_ms, SeqCst);
    HOG_TICKS.store(hog_ms * tsc_per_ms, SeqCst);
    let mut tids = Vec::new();
    for i in 0..THREADS {
        tids.push(spawn(hog, i).expect("spawn hog thread"));
    }
    println!("hog: scheduler={} {} threads of {} ms cpu each", env.param("scheduler").unwrap_or("rr"), THREADS, hog_ms);
    let started = rdtsc();
    run();
    let wall_ms = (rdtsc() - started) / tsc_per_ms;
    let report = report();
    let cpu_ms: u64 = tids.iter().map(|&tid| report.stats[tid].cpu_ticks).sum::<u64>() / tsc_per_ms;
    let info = syscall::env_info().unwrap_or_default();
    println!(
        "hog: scheduler={} switches={} cpu_ms={} wall_ms={} overruns={} skipped_ticks={} repaired_resumes={}",
        report.policy,
        report.switches,
        cpu_ms,
        wall_ms,
        info.overruns,
        SKIPPED_TICKS.load(SeqCst),
        REPAIRED_RESUMES.load(SeqCst)
    );
    let code = finish_line("hog", &report);
    println!("done");
    code
}
