//! The end of an environment (reclaiming everything it held, from every
//! subsystem) and the end of the run (the summary and the invariants).

use super::Kernel;
use crate::arch::{self, cpu, memory};
use crate::counters::{bump, COUNTERS};
use crate::env::EnvState;
use alloc::string::String;
use shared_abi::exit::Verdict;

impl Kernel {
    /// End the current environment and reclaim everything it held.
    pub fn end_current(&mut self, state: EnvState) {
        let index = self.current();
        self.envs.flush_console(index);
        let env = self.envs.get_mut(index);
        match &state {
            EnvState::Killed(reason) => log::info!("env {} ({}) killed: {}", env.id, env.name, reason),
            EnvState::Exited(code) => log::debug!("env {} ({}) exited with {}", env.id, env.name, code),
            EnvState::Runnable => {}
        }
        env.state = state;
        env.fast = None;
        env.line = alloc::vec::Vec::new();
        let id = env.id;
        self.net.env_ended(index, id);
        self.memory.reclaim(index);
        self.cpu.release(index);
        bump(&COUNTERS.envs_ended);
    }

    pub fn kill_current(&mut self, reason: String) {
        self.end_current(EnvState::Killed(reason));
    }

    /// Every environment has ended: print the summary and end the run.
    pub fn finish(&mut self) -> ! {
        self.cpu.account(cpu::rdtsc());
        let stats = COUNTERS.snapshot();
        for (index, env) in self.envs.iter().enumerate() {
            let (ticks, overruns) = (self.cpu.cpu_ticks(index), self.cpu.overruns(index));
            match &env.state {
                EnvState::Exited(code) => arch::serial::write_fmt(format_args!(
                    "EXO-SUMMARY env={} name={} status=exited code={} cpu_ticks={} overruns={}\n",
                    env.id, env.name, code, ticks, overruns
                )),
                EnvState::Killed(reason) => arch::serial::write_fmt(format_args!(
                    "EXO-SUMMARY env={} name={} status=killed cpu_ticks={} overruns={} reason=\"{}\"\n",
                    env.id, env.name, ticks, overruns, reason
                )),
                EnvState::Runnable => {}
            }
        }
        arch::serial::write_fmt(format_args!(
            "EXO-STATS syscalls={} upcalls={} exceptions={} page_faults={} timer_ticks={} context_switches={} cr3_loads={} overruns={} pct_calls={} frames_at_boot={} frames_at_end={}\n",
            stats.syscalls,
            stats.upcalls,
            stats.exceptions,
            stats.page_faults,
            stats.timer_ticks,
            stats.context_switches,
            stats.cr3_loads,
            stats.overruns,
            stats.pct_calls,
            self.frames_at_boot,
            memory::free_frames()
        ));
        if self.keep_running {
            log::info!("all environments ended; idling (keep_running)");
            cpu::idle_forever();
        }
        let verdict = if self.check_invariants() { Verdict::Success } else { Verdict::Failure };
        let word = if verdict == Verdict::Success { "success" } else { "failure" };
        arch::serial::write_fmt(format_args!("EXO-END verdict={}\n", word));
        arch::exit_qemu(verdict)
    }

    /// Every environment has ended: everything they held must be back.
    /// Free frames and kernel heap in use return to their values from
    /// before the first environment was built, and no key, mapping, filter
    /// or pool frame is left. Prints the `EXO-INVARIANTS` line; false if
    /// one does not hold (the run then ends with verdict failure).
    fn check_invariants(&mut self) -> bool {
        let left = self.memory.leftovers();
        let filters = self.net.filter_count();
        // The state built for the environments goes (the summary is
        // printed), and each subsystem drops the storage of its empty
        // tables; only what is empty is dropped, so a leak still shows.
        self.envs.retire();
        self.cpu.retire();
        self.memory.retire();
        self.net.retire_filters();
        let heap_at_end = memory::heap_usage().0;
        let frames_at_end = memory::free_frames();
        let ok = frames_at_end == self.frames_at_boot
            && heap_at_end == self.heap_at_boot
            && left.live_keys == 0
            && left.rmap_entries == 0
            && left.pool_used == 0
            && filters == 0;
        arch::serial::write_fmt(format_args!(
            "EXO-INVARIANTS frames_at_boot={} frames_at_end={} heap_at_boot={} heap_at_end={} live_keys={} rmap_entries={} pool_used={} filters={} ok={}\n",
            self.frames_at_boot, frames_at_end, self.heap_at_boot, heap_at_end, left.live_keys, left.rmap_entries, left.pool_used, filters, ok
        ));
        ok
    }
}
