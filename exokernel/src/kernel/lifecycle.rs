//! The end of an environment (reclaiming everything it held, from every
//! subsystem) and the end of the run (the summary and the invariants).

use super::Kernel;
use crate::arch::{self, cpu, memory};
use crate::counters::{bump, COUNTERS};
use crate::env::EnvState;
use crate::env::MAX_UNREAPED;
use alloc::string::String;
use shared_abi::exit::Verdict;
use shared_abi::syscall::EnvEnd;

impl Kernel {
    /// End the current environment and reclaim everything it held.
    pub fn end_current(&mut self, state: EnvState) {
        self.end_env(self.current(), state, -1);
    }

    /// End env `index` and reclaim everything it held, in every subsystem.
    /// Its family follows the rules of run-time environments:
    ///
    /// * a booted environment (a family root) takes every environment
    ///   created under it along: they run on its time and were built from
    ///   its quota;
    /// * a run-time environment's live children pass to its parent (as
    ///   Unix orphans pass to init), and its quota and kernel-memory budget
    ///   go back to that parent, which is told (`env_reap`) and woken; a
    ///   killed one's end carries `kill_code`.
    pub fn end_env(&mut self, index: usize, state: EnvState, kill_code: i64) {
        if self.envs.get(index).has_ended() {
            return;
        }
        let env = self.envs.get(index);
        let (id, parent, run_time) = (env.id, env.parent, env.run_time);
        if !run_time {
            let family: alloc::vec::Vec<usize> = (0..self.envs.len())
                .filter(|&i| i != index && self.envs.in_family(i, index) && self.envs.get(i).run_time)
                .collect();
            for member in family {
                self.end_env(member, EnvState::Killed(String::from("its family's root ended")), -1);
            }
        }
        let heir = parent.filter(|&p| !self.envs.get(p).has_ended()).unwrap_or(self.envs.get(index).family);
        let orphans: alloc::vec::Vec<usize> = self.envs.children_of(index).collect();
        for orphan in orphans {
            self.envs.get_mut(orphan).parent = Some(heir);
        }

        self.envs.flush_console(index);
        let env = self.envs.get_mut(index);
        match &state {
            EnvState::Killed(reason) if !run_time => log::info!("env {} ({}) killed: {}", env.id, env.name, reason),
            EnvState::Killed(reason) => log::debug!("env {} ({}) killed: {}", env.id, env.name, reason),
            EnvState::Exited(code) => log::debug!("env {} ({}) exited with {}", env.id, env.name, code),
            EnvState::Runnable | EnvState::Created => {}
        }
        let end = match &state {
            EnvState::Exited(code) => EnvEnd { id, exited: 1, code: *code },
            _ => EnvEnd { id, exited: 0, code: kill_code },
        };
        env.state = state;
        env.fast = None;
        env.line = alloc::vec::Vec::new();
        env.ended_children = alloc::vec::Vec::new();
        self.net.env_ended(index, id);
        let (quota, kmem) = self.memory.resources(index);
        self.memory.reclaim(index);
        self.cpu.release(index);
        bump(&COUNTERS.envs_ended);
        if run_time && !self.envs.get(heir).has_ended() {
            self.memory.give_back(heir, quota, kmem);
            let told = &mut self.envs.get_mut(heir).ended_children;
            if told.len() >= MAX_UNREAPED {
                told.remove(0);
            }
            told.push(end);
            self.cpu.wake(heir);
        }
    }

    pub fn kill_current(&mut self, reason: String) {
        self.end_current(EnvState::Killed(reason));
    }

    /// Every environment has ended: print the summary and end the run.
    pub fn finish(&mut self) -> ! {
        self.cpu.account(cpu::rdtsc());
        let stats = COUNTERS.snapshot();
        for (index, env) in self.envs.iter().enumerate().filter(|(_, e)| !e.run_time) {
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
                EnvState::Runnable | EnvState::Created => {}
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
