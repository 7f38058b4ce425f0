//! Event counters, a leaf module: every subsystem bumps them, the `stats`
//! call and the end-of-run summary read them. They count what matters on
//! real hardware (CR3 loads, invlpg, faults, upcalls, STLB hits and misses)
//! beside the instruction counts of the benchmarks.

use crate::arch::trap;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use shared_abi::syscall::KernelStats;

/// Event counters, reported by the `stats` call and the end-of-run summary.
pub struct Counters {
    pub syscalls: AtomicU64,
    pub upcalls: AtomicU64,
    pub exceptions: AtomicU64,
    pub page_faults: AtomicU64,
    pub timer_ticks: AtomicU64,
    pub context_switches: AtomicU64,
    pub cr3_loads: AtomicU64,
    pub invlpg: AtomicU64,
    pub envs_ended: AtomicU64,
    pub stlb_hits: AtomicU64,
    pub stlb_misses: AtomicU64,
    pub slot_evictions: AtomicU64,
    pub key_checks: AtomicU64,
    pub revocation_requests: AtomicU64,
    pub frames_repossessed: AtomicU64,
    pub slot_end_upcalls: AtomicU64,
    pub overruns: AtomicU64,
    pub pct_calls: AtomicU64,
    pub halted_ticks: AtomicU64,
    pub nic_interrupts: AtomicU64,
}

pub static COUNTERS: Counters = Counters {
    syscalls: AtomicU64::new(0),
    upcalls: AtomicU64::new(0),
    exceptions: AtomicU64::new(0),
    page_faults: AtomicU64::new(0),
    timer_ticks: AtomicU64::new(0),
    context_switches: AtomicU64::new(0),
    cr3_loads: AtomicU64::new(0),
    invlpg: AtomicU64::new(0),
    envs_ended: AtomicU64::new(0),
    stlb_hits: AtomicU64::new(0),
    stlb_misses: AtomicU64::new(0),
    slot_evictions: AtomicU64::new(0),
    key_checks: AtomicU64::new(0),
    revocation_requests: AtomicU64::new(0),
    frames_repossessed: AtomicU64::new(0),
    slot_end_upcalls: AtomicU64::new(0),
    overruns: AtomicU64::new(0),
    pct_calls: AtomicU64::new(0),
    halted_ticks: AtomicU64::new(0),
    nic_interrupts: AtomicU64::new(0),
};

impl Counters {
    pub fn snapshot(&self) -> KernelStats {
        let (fast_exceptions, fast_page_faults) = trap::fast_upcall_counts();
        KernelStats {
            syscalls: self.syscalls.load(Relaxed) + trap::null_syscalls(),
            upcalls: self.upcalls.load(Relaxed) + fast_exceptions,
            exceptions: self.exceptions.load(Relaxed) + fast_exceptions,
            page_faults: self.page_faults.load(Relaxed) + fast_page_faults,
            timer_ticks: self.timer_ticks.load(Relaxed),
            context_switches: self.context_switches.load(Relaxed),
            cr3_loads: self.cr3_loads.load(Relaxed),
            invlpg: self.invlpg.load(Relaxed),
            envs_ended: self.envs_ended.load(Relaxed),
            stlb_hits: self.stlb_hits.load(Relaxed),
            stlb_misses: self.stlb_misses.load(Relaxed) + trap::fast_stlb_misses(),
            slot_evictions: self.slot_evictions.load(Relaxed),
            key_checks: self.key_checks.load(Relaxed),
            revocation_requests: self.revocation_requests.load(Relaxed),
            frames_repossessed: self.frames_repossessed.load(Relaxed),
            slot_end_upcalls: self.slot_end_upcalls.load(Relaxed),
            overruns: self.overruns.load(Relaxed),
            pct_calls: self.pct_calls.load(Relaxed),
            halted_ticks: self.halted_ticks.load(Relaxed),
            nic_interrupts: self.nic_interrupts.load(Relaxed),
        }
    }
}

pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}
