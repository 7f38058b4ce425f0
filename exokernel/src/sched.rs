//! CPU multiplexing: the time-slot vector, the bounded end-of-slot context
//! save with overrun penalties, and protected control transfer.
//!
//! At every slot boundary the kernel upcalls the running libOS (if it
//! registered an interrupt entry) with `SLOT_END`. If the next slot is its
//! own, that is just a tick. Otherwise it must save its context and `yield`
//! within the save bound; if it overruns, the kernel preempts it by force
//! and the overrun is taken off its next slot. Slots nobody owns (or whose
//! owner cannot run) go round-robin to the runnable environments.

use crate::arch::trap::{Return, TrapFrame};
use crate::arch::{apic, cpu};
use crate::kernel::{bump, Kernel, COUNTERS};
use crate::umem;
use kcore::slotvec::{apply_penalty, SlotVecError};
use shared_abi::syscall::{encode, nr, EnvInfo, Error};
use shared_abi::upcall::{UpcallKind, SLOT_END};

/// Most asynchronous transfers queued for one environment.
pub const PCT_QUEUE_MAX: usize = 8;

/// A protected-entry activation running in an environment.
#[derive(Clone, Copy, Debug)]
pub struct Activation {
    /// The caller blocked on it (None for an asynchronous send).
    pub caller: Option<usize>,
    /// The environment's own state, resumed when the activation ends.
    pub stash: TrapFrame,
}

/// An environment told to save its context: who runs next, and when the
/// bound started.
#[derive(Clone, Copy, Debug)]
pub struct Grace {
    pub env: usize,
    pub next_pos: usize,
    pub started_tsc: u64,
}

/// Per-environment CPU state.
#[derive(Default)]
pub struct EnvCpu {
    pub cpu_ticks: u64,
    pub overruns: u64,
    pub penalty_owed: u64,
    pub penalty_total: u64,
    /// Blocked in `pct_call` on this environment index.
    pub waiting_on: Option<usize>,
    pub activation: Option<Activation>,
    /// Queued asynchronous transfers: (sender id, message).
    pub pct_queue: alloc::collections::VecDeque<(u64, [u64; 4])>,
}

fn from_slot_error(error: SlotVecError) -> Error {
    match error {
        SlotVecError::OutOfRange => Error::InvalidArgument,
        SlotVecError::Taken => Error::PermissionDenied,
        SlotVecError::BadKey => Error::BadKey,
    }
}

impl Kernel {
    /// Can env `e` be given the CPU on its own behalf?
    fn schedulable(&self, e: usize) -> bool {
        self.envs[e].is_runnable() && self.envs[e].cpu.waiting_on.is_none()
    }

    /// Follow donation: an env blocked in a call runs its callee.
    fn resolve(&self, mut e: usize) -> usize {
        for _ in 0..self.envs.len() {
            match self.envs[e].cpu.waiting_on {
                Some(t) if self.envs[t].is_runnable() => e = t,
                _ => break,
            }
        }
        e
    }

    /// Who runs slot `pos`: its owner (or whom it donated to), else the
    /// next runnable environment round-robin.
    fn runner_for_slot(&mut self, pos: usize) -> Option<usize> {
        if let Some(owner) = self.slots.owner(pos) {
            if self.envs[owner].is_runnable() {
                let r = self.resolve(owner);
                if self.envs[r].is_runnable() && (r != owner || self.schedulable(owner)) {
                    return Some(r);
                }
            }
        }
        let count = self.envs.len();
        let envs = &self.envs;
        self.slots.next_unowned_runner(count, |e| envs[e].is_runnable() && envs[e].cpu.waiting_on.is_none())
    }

    /// Charge the CPU time since the last switch to the running env.
    fn account(&mut self, now: u64) {
        let used = now.saturating_sub(self.last_switch_tsc);
        self.envs[self.current].cpu.cpu_ticks += used;
        self.last_switch_tsc = now;
    }

    fn arm(&self, tsc_ticks: u64) {
        apic::arm_oneshot(tsc_ticks, self.tsc_hz);
    }

    /// Resume env `index` from `frame`, saving the running env's registers
    /// first when `save` (and it still runs).
    pub fn switch_to(&mut self, index: usize, frame: &mut TrapFrame, save: bool) {
        let now = cpu::rdtsc();
        self.account(now);
        if save && self.envs[self.current].is_runnable() {
            self.envs[self.current].frame = *frame;
        }
        if index != self.current {
            bump(&COUNTERS.context_switches);
        }
        self.current = index;
        self.load_space(index);
        crate::arch::trap::set_fast_upcall(self.envs[index].fast);
        // An asynchronous transfer waiting for it starts first.
        if self.envs[index].cpu.activation.is_none() {
            if let Some(&(sender, msg)) = self.envs[index].cpu.pct_queue.front() {
                // Dequeue only once it starts (no room on the upcall stack
                // now: it stays queued for a later switch).
                if self.start_activation(index, None, sender, msg, 1).is_ok() {
                    self.envs[index].cpu.pct_queue.pop_front();
                }
            }
        }
        *frame = self.envs[index].frame;
        if let Some(pending) = self.envs[index].mem.pending.take() {
            // A revocation notice: the handler runs first, then resumes.
            // No handler: the abort protocol will act at the deadline.
            let _ = self.deliver_upcall(frame, pending.kind, pending.vector, pending.error_code, pending.fault_addr);
        }
        // Packets arrived for it: one NET_RX upcall (unless it is now in a handler).
        self.deliver_net_rx(frame);
    }

    /// Start slot `pos`: switch to its runner and arm the timer for the
    /// slot, shortened by any penalty the runner owes.
    fn begin_slot(&mut self, pos: usize, runner: Option<usize>, frame: &mut TrapFrame, save: bool) {
        self.slot_pos = pos;
        let Some(runner) = runner else { self.finish() };
        self.switch_to(runner, frame, save);
        let cpu = &mut self.envs[runner].cpu;
        let (len, owed) = apply_penalty(self.slot_ticks, cpu.penalty_owed, self.slot_ticks / 10);
        cpu.penalty_owed = owed;
        self.arm(len);
    }

    /// First slot at boot: returns the env to enter.
    pub fn first_slot(&mut self) -> Option<usize> {
        self.last_switch_tsc = cpu::rdtsc();
        let runner = self.runner_for_slot(0)?;
        self.slot_pos = 0;
        self.current = runner;
        self.load_space(runner);
        crate::arch::trap::set_fast_upcall(self.envs[runner].fast);
        self.arm(self.slot_ticks);
        Some(runner)
    }

    /// The timer: a slot boundary, or the end of a save bound.
    pub fn on_timer(&mut self, frame: &mut TrapFrame) {
        self.check_revocation_deadlines();
        let now = cpu::rdtsc();
        if let Some(grace) = self.grace.take() {
            // Overrun: it did not yield within the bound. Preempt by force;
            // the time it took past its slot comes off its next slot.
            let overrun = now.saturating_sub(grace.started_tsc);
            let cpu = &mut self.envs[grace.env].cpu;
            cpu.overruns += 1;
            cpu.penalty_owed += overrun;
            cpu.penalty_total += overrun;
            bump(&COUNTERS.overruns);
            log::debug!("env {} overran its save bound by {} ticks", self.envs[grace.env].id, overrun);
            let runner = self.runner_for_slot(grace.next_pos);
            self.begin_slot(grace.next_pos, runner, frame, true);
            return;
        }
        let next_pos = (self.slot_pos + 1) % self.slots.len().max(1);
        let runner = self.runner_for_slot(next_pos);
        let cur = self.current;
        let env = &self.envs[cur];
        let wants_upcall = frame.from_user()
            && env.is_runnable()
            && env.cpu.activation.is_none()
            && env.upcalls.interrupt_entry != 0;
        if wants_upcall {
            if runner == Some(cur) {
                // A tick: the next slot is its own too.
                if self.deliver_upcall(frame, UpcallKind::Interrupt, SLOT_END, 0, 1).is_ok() {
                    bump(&COUNTERS.slot_end_upcalls);
                }
                self.slot_pos = next_pos;
                self.account(now);
                let cpu = &mut self.envs[cur].cpu;
                let (len, owed) = apply_penalty(self.slot_ticks, cpu.penalty_owed, self.slot_ticks / 10);
                cpu.penalty_owed = owed;
                self.arm(len);
                return;
            }
            if self.deliver_upcall(frame, UpcallKind::Interrupt, SLOT_END, self.save_bound_ticks, 0).is_ok() {
                bump(&COUNTERS.slot_end_upcalls);
                self.grace = Some(Grace { env: cur, next_pos, started_tsc: now });
                self.arm(self.save_bound_ticks);
                return;
            }
        }
        self.begin_slot(next_pos, runner, frame, true);
    }

    /// `yield`: inside a save bound, the libOS saved its context: start the
    /// next slot. Otherwise give the rest of this slot to another env.
    pub fn sys_yield(&mut self, frame: &mut TrapFrame) -> Return {
        frame.rax = 0;
        if let Some(grace) = self.grace.filter(|g| g.env == self.current) {
            self.grace = None;
            let runner = self.runner_for_slot(grace.next_pos);
            self.begin_slot(grace.next_pos, runner, frame, true);
            return Return::Iret;
        }
        let me = self.current;
        let count = self.envs.len();
        let envs = &self.envs;
        let other = self
            .slots
            .next_unowned_runner(count, |e| e != me && envs[e].is_runnable() && envs[e].cpu.waiting_on.is_none());
        match other {
            Some(other) => {
                self.switch_to(other, frame, true);
                Return::Iret
            }
            None => Return::Sysret,
        }
    }

    /// The running env ended: someone else gets the rest of the slot.
    pub fn run_rest_of_slot(&mut self, frame: &mut TrapFrame) {
        if self.grace.is_some_and(|g| g.env == self.current) {
            self.grace = None;
        }
        let runner = self.runner_for_slot(self.slot_pos);
        let Some(runner) = runner else { self.finish() };
        self.switch_to(runner, frame, false);
    }

    /// An env ended: free its slots, fail calls blocked on it.
    pub fn release_cpu(&mut self, index: usize) {
        self.slots.release_env(index);
        for e in 0..self.envs.len() {
            if self.envs[e].cpu.waiting_on == Some(index) {
                self.envs[e].cpu.waiting_on = None;
                self.envs[e].frame.rax = encode(Err(Error::NoSuchEnv));
            }
        }
        self.envs[index].cpu.pct_queue.clear();
    }

    /// Make env `t` run its protected entry for `sender` with `msg`.
    fn start_activation(&mut self, t: usize, caller: Option<usize>, sender: u64, msg: [u64; 4], flags: u64) -> Result<(), Error> {
        let env = &mut self.envs[t];
        let table = env.upcalls;
        if table.protected_entry == 0 {
            return Err(Error::InvalidArgument);
        }
        let (base, top) = (table.stack_base, table.stack_base + table.stack_len);
        let normal = env.frame;
        let below = if (base..=top).contains(&normal.rsp) { normal.rsp.saturating_sub(256) } else { top };
        let rsp = (below & !15).saturating_sub(8);
        if rsp < base + 512 {
            return Err(Error::NoMemory);
        }
        let mut activation = TrapFrame::new_user(table.protected_entry, rsp, sender);
        activation.rsi = msg[0];
        activation.rdx = msg[1];
        activation.rcx = msg[2];
        activation.r8 = msg[3];
        activation.r9 = flags;
        env.cpu.activation = Some(Activation { caller, stash: normal });
        env.frame = activation;
        Ok(())
    }

    fn env_index(&self, id: u64) -> Option<usize> {
        self.envs.iter().position(|e| e.id == id && e.is_runnable())
    }

    /// `pct_call(target, m0..m3)`: donate the CPU to the target's protected
    /// entry and block until it replies.
    pub fn pct_call(&mut self, frame: &mut TrapFrame) -> Return {
        let me = self.current;
        let result = (|| {
            let t = self.env_index(frame.rdi).ok_or(Error::NoSuchEnv)?;
            if t == me {
                return Err(Error::InvalidArgument);
            }
            let target = &self.envs[t];
            if target.cpu.activation.is_some() || target.cpu.waiting_on.is_some() {
                return Err(Error::Again);
            }
            self.start_activation(t, Some(me), self.envs[me].id, [frame.rsi, frame.rdx, frame.r10, frame.r8], 0)?;
            Ok(t)
        })();
        match result {
            Ok(t) => {
                bump(&COUNTERS.pct_calls);
                self.envs[me].frame = *frame;
                self.envs[me].cpu.waiting_on = Some(t);
                self.switch_to(t, frame, false);
                Return::Iret
            }
            Err(error) => {
                frame.rax = encode(Err(error));
                Return::Sysret
            }
        }
    }

    /// `pct_reply(r0..r3)`: end the activation; wake the caller with the reply.
    pub fn pct_reply(&mut self, frame: &mut TrapFrame) -> Return {
        let me = self.current;
        let Some(activation) = self.envs[me].cpu.activation.take() else {
            frame.rax = encode(Err(Error::InvalidArgument));
            return Return::Sysret;
        };
        let reply = [frame.rdi, frame.rsi, frame.rdx, frame.r10];
        self.envs[me].frame = activation.stash;
        match activation.caller {
            Some(c) if self.envs[c].is_runnable() && self.envs[c].cpu.waiting_on == Some(me) => {
                let caller = &mut self.envs[c];
                caller.cpu.waiting_on = None;
                caller.frame.rax = 0;
                caller.frame.rsi = reply[0];
                caller.frame.rdx = reply[1];
                caller.frame.r10 = reply[2];
                caller.frame.r8 = reply[3];
                self.switch_to(c, frame, false);
            }
            _ => self.switch_to(me, frame, false),
        }
        Return::Iret
    }

    /// `pct_send(target, m0..m3)`: queue an asynchronous transfer.
    pub fn pct_send(&mut self, target: u64, msg: [u64; 4]) -> Result<u64, Error> {
        let t = self.env_index(target).ok_or(Error::NoSuchEnv)?;
        if self.envs[t].upcalls.protected_entry == 0 {
            return Err(Error::InvalidArgument);
        }
        let sender = self.envs[self.current].id;
        let queue = &mut self.envs[t].cpu.pct_queue;
        if queue.len() >= PCT_QUEUE_MAX {
            return Err(Error::Again);
        }
        queue.push_back((sender, msg));
        Ok(0)
    }

    pub fn slot_alloc(&mut self, position: u64) -> Result<u64, Error> {
        let position = if position == nr::ANY_SLOT { None } else { Some(position as usize) };
        self.slots.alloc(position, self.current).map_err(from_slot_error)
    }

    pub fn slot_free(&mut self, key: u64) -> Result<u64, Error> {
        self.slots.free(key, self.current).map_err(from_slot_error).map(|_| 0)
    }

    pub fn env_info(&mut self, out: u64) -> Result<u64, Error> {
        self.account(cpu::rdtsc());
        let index = self.current;
        let cpu = &self.envs[index].cpu;
        let info = EnvInfo {
            cpu_ticks: cpu.cpu_ticks,
            overruns: cpu.overruns,
            penalty_ticks: cpu.penalty_total,
            slots_owned: self.slots.owned_by(index) as u64,
            vector_len: self.slots.len() as u64,
            slot_ticks: self.slot_ticks,
            save_bound_ticks: self.save_bound_ticks,
            slot_position: self.slot_pos as u64,
            kmem_used: self.kmem_use(index).bytes(),
            kmem_limit: self.envs[index].mem.kmem_limit,
            frames_charged: self.envs[index].mem.charged_frames(),
            page_table_frames: self.envs[index].mem.page_table_frames,
            quota_frames: self.envs[index].mem.quota_frames,
        };
        let space = self.envs[index].space.as_ref().ok_or(Error::NoSuchEnv)?;
        umem::write_value(space, out, &info)?;
        Ok(0)
    }
}
