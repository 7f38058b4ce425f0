//! CPU: the time-slot vector and protected control transfer under test.
//! Modes: `server` (a protected entry that adds up messages), `client`
//! (synchronous and asynchronous transfers, and transfers to missing and
//! ended environments), `spinner` (its end-of-slot handler spins far past
//! the save bound), `worker` (measures the CPU share it gets), `slots`
//! (allocates and frees slots with keys, stale keys included).
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::{AtomicU64, Ordering};
use libos_runtime::println;
use libos_runtime::rt::{rdtsc, set_handler, set_pct_handler, Env};
use libos_runtime::syscall::{self, nr, Error};
use libos_runtime::upcall::{UpcallFrame, UpcallKind, SLOT_END};

libos_runtime::libos_main!(main);

fn main(env: &Env) -> i32 {
    match env.args.trim() {
        "server" => server(),
        "client" => client(env),
        "spinner" => spinner(env),
        "worker" => worker(env),
        "slots" => slots(),
        "early" => {
            println!("early: exiting at once");
            0
        }
        other => {
            println!("unknown mode {:?}", other);
            2
        }
    }
}

static CALLS: AtomicU64 = AtomicU64::new(0);
static SENDS: AtomicU64 = AtomicU64::new(0);
static SEND_SUM: AtomicU64 = AtomicU64::new(0);

fn serve(caller: u64, msg: [u64; 4], is_async: bool) -> [u64; 4] {
    if is_async {
        SENDS.fetch_add(1, Ordering::SeqCst);
        SEND_SUM.fetch_add(msg[0], Ordering::SeqCst);
        return [0; 4];
    }
    CALLS.fetch_add(1, Ordering::SeqCst);
    [msg[0] + msg[1] + msg[2] + msg[3], caller, msg[0] * 2, 0x5e7e]
}

/// Serve protected calls until every other environment has ended.
fn server() -> i32 {
    set_pct_handler(serve).expect("register protected entry");
    println!("server: ready");
    let others = syscall::stats().map(|s| s.envs_ended).unwrap_or(0);
    let _ = others;
    loop {
        let ended = syscall::stats().map(|s| s.envs_ended).unwrap_or(u64::MAX);
        // Everyone but us (and the early env, which counts as ended) is done.
        if ended >= ENVS_BESIDES_SERVER.load(Ordering::Relaxed) {
            break;
        }
        syscall::yield_now();
    }
    println!(
        "server: served {} calls and {} sends (sum {})",
        CALLS.load(Ordering::SeqCst),
        SENDS.load(Ordering::SeqCst),
        SEND_SUM.load(Ordering::SeqCst)
    );
    0
}

/// The server ends once this many other environments have ended.
static ENVS_BESIDES_SERVER: AtomicU64 = AtomicU64::new(2);

fn client(env: &Env) -> i32 {
    let server = env.param("server").and_then(|s| s.parse().ok()).unwrap_or(1u64);
    let early = env.param("early").and_then(|s| s.parse().ok()).unwrap_or(3u64);
    let mut ok = true;
    // Synchronous calls: the reply comes back in registers.
    let mut replies = 0;
    for i in 0..100u64 {
        match syscall::pct_call(server, [i, 1, 2, 3]) {
            Ok(reply) if reply == [i + 6, env.id, i * 2, 0x5e7e] => replies += 1,
            Ok(reply) => {
                println!("client: wrong reply {:?}", reply);
                ok = false;
            }
            // The server may not have registered its entry yet.
            Err(Error::InvalidArgument) | Err(Error::Again) => syscall::yield_now(),
            Err(error) => {
                println!("client: call failed: {}", error.name());
                ok = false;
            }
        }
    }
    println!("client: {} synchronous calls answered correctly", replies);
    // Asynchronous sends.
    let mut sent = 0;
    for i in 1..=5u64 {
        if syscall::pct_send(server, [i, 0, 0, 0]).is_ok() {
            sent += 1;
        }
    }
    println!("client: {} asynchronous sends queued", sent);
    // Missing, self and ended targets.
    let check = |what: &str, result: Result<[u64; 4], Error>, want: Error| match result {
        Err(error) if error == want => println!("check {} -> {}", what, error.name()),
        other => println!("check {} -> UNEXPECTED {:?}", what, other.map_err(Error::name)),
    };
    check("call-missing-env", syscall::pct_call(99, [0; 4]), Error::NoSuchEnv);
    check("call-self", syscall::pct_call(env.id, [0; 4]), Error::InvalidArgument);
    while syscall::stats().map(|s| s.envs_ended).unwrap_or(0) == 0 {
        syscall::yield_now();
    }
    check("call-ended-env", syscall::pct_call(early, [0; 4]), Error::NoSuchEnv);
    check("send-ended-env", syscall::pct_send(early, [0; 4]).map(|_| [0; 4]), Error::NoSuchEnv);
    // SAFETY: a reply with no activation is refused, not obeyed.
    let stray = syscall::decode(unsafe { syscall::raw6(nr::PCT_REPLY, 1, 2, 3, 4, 0, 0) });
    println!("check stray-reply -> {}", stray.err().map(Error::name).unwrap_or("UNEXPECTED ok"));
    if replies == 100 && sent == 5 && ok {
        0
    } else {
        1
    }
}

static BOUND_START: AtomicU64 = AtomicU64::new(0);
static SPIN_TICKS: AtomicU64 = AtomicU64::new(0);

/// End-of-slot handler that ignores the bound: spins ten bounds long.
fn spin_past_the_bound(frame: &mut UpcallFrame) {
    if frame.vector == SLOT_END && frame.fault_addr == 0 {
        let start = rdtsc();
        BOUND_START.store(start, Ordering::Relaxed);
        while rdtsc() - start < SPIN_TICKS.load(Ordering::Relaxed) {
            core::hint::spin_loop();
        }
        syscall::yield_now();
    }
}

fn spinner(env: &Env) -> i32 {
    let info = syscall::env_info().expect("env info");
    SPIN_TICKS.store(info.save_bound_ticks * 10, Ordering::Relaxed);
    set_handler(UpcallKind::Interrupt, spin_past_the_bound).expect("register slot-end handler");
    let run_ms = env.param("run_ms").and_then(|s| s.parse().ok()).unwrap_or(200u64);
    let end = rdtsc() + env.tsc_hz / 1000 * run_ms;
    while rdtsc() < end {
        core::hint::spin_loop();
    }
    let info = syscall::env_info().expect("env info");
    println!("spinner: overruns={} penalty_ticks={}", info.overruns, info.penalty_ticks);
    0
}

/// Compute for `run_ms` of wall time and report the share of it we got.
fn worker(env: &Env) -> i32 {
    let run_ms = env.param("run_ms").and_then(|s| s.parse().ok()).unwrap_or(200u64);
    let before = syscall::env_info().expect("env info");
    let start = rdtsc();
    let end = start + env.tsc_hz / 1000 * run_ms;
    while rdtsc() < end {
        core::hint::spin_loop();
    }
    let after = syscall::env_info().expect("env info");
    let elapsed = rdtsc() - start;
    let share_ppm = (after.cpu_ticks - before.cpu_ticks) * 1_000_000 / elapsed.max(1);
    let slot_share_ppm = after.slots_owned * 1_000_000 / after.vector_len.max(1);
    println!("worker: share_ppm={} slot_share_ppm={} overruns={}", share_ppm, slot_share_ppm, after.overruns);
    0
}

/// Slot keys: allocate by position and by count, free, stale and foreign keys.
fn slots() -> i32 {
    let info = syscall::env_info().expect("env info");
    println!("slots: vector of {}, I own {}", info.vector_len, info.slots_owned);
    let free_slot = syscall::slot_alloc(nr::ANY_SLOT);
    let Ok(key) = free_slot else {
        println!("slots: no free slot: {:?}", free_slot.map_err(Error::name));
        return 1;
    };
    let position = key.position() as u64;
    let after = syscall::env_info().expect("env info");
    println!("slots: allocated position {} (now own {})", position, after.slots_owned);
    let taken = syscall::slot_alloc(position);
    println!("check slot-taken -> {}", taken.err().map(Error::name).unwrap_or("UNEXPECTED ok"));
    let range = syscall::slot_alloc(10_000);
    println!("check slot-out-of-range -> {}", range.err().map(Error::name).unwrap_or("UNEXPECTED ok"));
    syscall::slot_free(key).expect("free");
    let stale = syscall::slot_free(key);
    println!("check slot-stale-key -> {}", stale.err().map(Error::name).unwrap_or("UNEXPECTED ok"));
    let forged = syscall::slot_free(syscall::SlotKey(0xdead_0000_0000 | position));
    println!("check slot-forged-key -> {}", forged.err().map(Error::name).unwrap_or("UNEXPECTED ok"));
    0
}
