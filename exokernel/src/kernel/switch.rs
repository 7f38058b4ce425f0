//! Moving the CPU between environments: slot boundaries and save bounds,
//! `yield`, and protected control transfer. Each step composes the CPU
//! subsystem (who runs, saved registers, accounting) with memory (the
//! address space and its TLB policy, owed revocation upcalls) and the
//! network (owed receive upcalls).

use super::Kernel;
use crate::arch::cpu;
use crate::arch::trap::{self, Return, TrapFrame};
use crate::counters::{bump, COUNTERS};
use shared_abi::syscall::{encode, Error};
use shared_abi::upcall::{UpcallKind, SLOT_END};

impl Kernel {
    /// Resume env `index` from `frame`, saving the running env's registers
    /// first when `save` (and it still runs).
    pub fn switch_to(&mut self, index: usize, frame: &mut TrapFrame, save: bool) {
        let now = cpu::rdtsc();
        self.cpu.account(now);
        let current = self.current();
        if save && self.envs.get(current).is_runnable() {
            *self.cpu.context_mut(current) = *frame;
        }
        if self.cpu.set_current(index) {
            bump(&COUNTERS.context_switches);
        }
        self.load(index);
        // An asynchronous transfer waiting for it starts first (dequeued
        // only once it starts: with no room on the upcall stack now, it
        // stays queued for a later switch).
        if let Some((sender, msg)) = self.cpu.next_send(index) {
            let env = self.envs.get(index);
            let (entry, stack) = (env.upcalls.protected_entry, env.upcall_stack());
            if self.cpu.start_activation(index, entry, stack, None, sender, msg, 1).is_ok() {
                self.cpu.send_started(index);
            }
        }
        *frame = *self.cpu.context(index);
        if let Some(pending) = self.memory.take_pending(index) {
            // A revocation notice: the handler runs first, then resumes.
            // No handler: the abort protocol will act at the deadline.
            let _ = self.deliver_upcall(frame, pending.kind, pending.vector, pending.error_code, pending.fault_addr);
        }
        // Packets arrived for it: one NET_RX upcall (unless it is now in a handler).
        self.deliver_net_rx(frame);
    }

    /// Start slot `pos`: switch to its runner and arm the timer for the
    /// slot, shortened by any penalty the runner owes. No runner: every
    /// environment has ended.
    fn begin_slot(&mut self, pos: usize, runner: Option<usize>, frame: &mut TrapFrame, save: bool) {
        let Some(runner) = runner else { self.finish() };
        self.switch_to(runner, frame, save);
        self.cpu.begin_slot(pos, runner);
    }

    /// Who runs slot `pos`. If nobody can but environments are asleep in
    /// `block`, they are woken rather than the run ended (a `block` may
    /// return without a wake-up). None: every environment has ended.
    ///
    /// When every environment is asleep and one waits for a deadline or for
    /// console input, the CPU halts until the next timer interrupt and looks
    /// again (no environment is woken for nothing), for up to a tenth of a
    /// second. After that, or when none can ever be woken so, all are
    /// woken: each `block` returns and its caller checks again, rather
    /// than the machine stopping.
    pub fn next_runner(&mut self, pos: usize) -> Option<usize> {
        // Halted at most a tenth of a second at a time: then every sleeper
        // is woken to look again (a far deadline is no reason to stop).
        let give_up = cpu::rdtsc() + self.cpu.tsc_hz() / 10;
        let mut idled = false;
        loop {
            self.poll_console();
            self.poll_net();
            let now = cpu::rdtsc();
            self.cpu.wake_due(now);
            if let Some(runner) = self.cpu.runner_for_slot(pos) {
                if idled {
                    // The halt used the timer: the runner gets a slot's
                    // length from now, so it can still be preempted.
                    self.cpu.rearm();
                }
                return Some(runner);
            }
            // Console input, and packets from a polled NIC, are looked
            // for at slot boundaries.
            let input_waited = self.envs.input_waiter().is_some() || self.net.needs_polling();
            match self.cpu.idle_until(now, input_waited).filter(|_| now < give_up) {
                Some(until) => {
                    idled = true;
                    // Idle time zeroes frames ahead of demand.
                    crate::arch::memory::zero_ahead(64);
                    let until = until.min(give_up);
                    crate::arch::apic::arm_oneshot(until.saturating_sub(now).max(1), self.cpu.tsc_hz());
                    let halted_at = cpu::rdtsc();
                    cpu::wait_for_interrupt();
                    COUNTERS.halted_ticks.fetch_add(cpu::rdtsc() - halted_at, core::sync::atomic::Ordering::Relaxed);
                }
                None => {
                    if idled {
                        self.cpu.rearm();
                    }
                    return self.cpu.wake_all_asleep().then(|| self.cpu.runner_for_slot(pos))?;
                }
            }
        }
    }

    /// `block`: sleep until woken; returns at once if a wake-up is pending.
    pub fn sys_block(&mut self, frame: &mut TrapFrame) -> Return {
        let deadline = frame.rdi;
        frame.rax = 0;
        let me = self.current();
        if !self.cpu.block(me, deadline) {
            return Return::Sysret;
        }
        *self.cpu.context_mut(me) = *frame;
        match self.next_runner(self.cpu.slot_pos()) {
            Some(runner) => self.switch_to(runner, frame, false),
            None => self.finish(),
        }
        Return::Iret
    }

    /// First slot at boot: returns the env to enter.
    pub fn first_slot(&mut self) -> Option<usize> {
        let runner = self.next_runner(0)?;
        self.load(runner);
        self.cpu.begin_first_slot(runner, cpu::rdtsc());
        Some(runner)
    }

    /// Make env `index`'s address space and fast-upcall state the
    /// hardware's.
    fn load(&mut self, index: usize) {
        self.memory.activate(index);
        self.install_fast_paths(index);
    }

    /// Give the entry stubs env `index`'s fast-upcall state and software-TLB
    /// tags (at each switch, and when it registers new upcalls).
    pub fn install_fast_paths(&self, index: usize) {
        trap::set_fast_upcall(self.envs.get(index).fast);
        trap::set_fast_stlb(self.memory.stlb_tags(index));
    }

    /// The timer: a slot boundary, or the end of a save bound.
    pub fn on_timer(&mut self, frame: &mut TrapFrame) {
        let now = cpu::rdtsc();
        self.cpu.wake_due(now);
        self.poll_console();
        for (index, taken) in self.memory.check_revocation_deadlines(now) {
            let env = self.envs.get(index);
            log::info!("abort protocol: took {} frame(s) from env {} ({})", taken, env.id, env.name);
        }
        if let Some(grace) = self.cpu.take_grace() {
            // Overrun: it did not yield within the bound. Preempt by force;
            // the time it took past its slot comes off its next slot.
            let overrun = self.cpu.charge_overrun(grace, now);
            bump(&COUNTERS.overruns);
            log::debug!("env {} overran its save bound by {} ticks", self.envs.get(grace.env).id, overrun);
            let runner = self.next_runner(grace.next_pos);
            self.begin_slot(grace.next_pos, runner, frame, true);
            return;
        }
        let next_pos = self.cpu.next_pos();
        let runner = self.next_runner(next_pos);
        let cur = self.current();
        let env = self.envs.get(cur);
        let wants_upcall =
            frame.from_user() && env.is_runnable() && !self.cpu.in_activation(cur) && env.upcalls.interrupt_entry != 0;
        if wants_upcall {
            if runner == Some(cur) {
                // A tick: the next slot is its own too.
                if self.deliver_upcall(frame, UpcallKind::Interrupt, SLOT_END, 0, 1).is_ok() {
                    bump(&COUNTERS.slot_end_upcalls);
                }
                self.cpu.account(now);
                self.cpu.begin_slot(next_pos, cur);
                return;
            }
            if self.deliver_upcall(frame, UpcallKind::Interrupt, SLOT_END, self.cpu.save_bound_ticks(), 0).is_ok() {
                bump(&COUNTERS.slot_end_upcalls);
                self.cpu.begin_grace(next_pos, now);
                return;
            }
        }
        self.begin_slot(next_pos, runner, frame, true);
    }

    /// `yield`: inside a save bound, the libOS saved its context: start the
    /// next slot. Otherwise give the rest of this slot to another env.
    pub fn sys_yield(&mut self, frame: &mut TrapFrame) -> Return {
        frame.rax = 0;
        let me = self.current();
        if let Some(grace) = self.cpu.take_grace_of(me) {
            let runner = self.next_runner(grace.next_pos);
            self.begin_slot(grace.next_pos, runner, frame, true);
            return Return::Iret;
        }
        match self.cpu.other_runner(me) {
            Some(other) => {
                self.switch_to(other, frame, true);
                Return::Iret
            }
            None => Return::Sysret,
        }
    }

    /// The running env ended: someone else gets the rest of the slot.
    pub fn run_rest_of_slot(&mut self, frame: &mut TrapFrame) {
        let runner = self.next_runner(self.cpu.slot_pos());
        let Some(runner) = runner else { self.finish() };
        self.switch_to(runner, frame, false);
    }

    /// `pct_call(target, m0..m3)`: donate the CPU to the target's protected
    /// entry and block until it replies.
    pub fn pct_call(&mut self, frame: &mut TrapFrame) -> Return {
        let me = self.current();
        let result = (|| {
            let t = self.envs.index_of(frame.rdi).ok_or(Error::NoSuchEnv)?;
            if t == me {
                return Err(Error::InvalidArgument);
            }
            if self.cpu.busy(t) {
                return Err(Error::Again);
            }
            let target = self.envs.get(t);
            let (entry, stack) = (target.upcalls.protected_entry, target.upcall_stack());
            let msg = [frame.rsi, frame.rdx, frame.r10, frame.r8];
            self.cpu.start_activation(t, entry, stack, Some(me), self.envs.get(me).id, msg, 0)?;
            Ok(t)
        })();
        match result {
            Ok(t) => {
                bump(&COUNTERS.pct_calls);
                self.cpu.block_on(me, t, frame);
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
        let me = self.current();
        let Some(activation) = self.cpu.end_activation(me) else {
            frame.rax = encode(Err(Error::InvalidArgument));
            return Return::Sysret;
        };
        let reply = [frame.rdi, frame.rsi, frame.rdx, frame.r10];
        match activation.caller {
            Some(c) if self.cpu.wake_with_reply(c, me, reply) => self.switch_to(c, frame, false),
            _ => self.switch_to(me, frame, false),
        }
        Return::Iret
    }

    /// `pct_send(target, m0..m3)`: queue an asynchronous transfer.
    pub fn pct_send(&mut self, target: u64, msg: [u64; 4]) -> Result<u64, Error> {
        let t = self.envs.index_of(target).ok_or(Error::NoSuchEnv)?;
        if self.envs.get(t).upcalls.protected_entry == 0 {
            return Err(Error::InvalidArgument);
        }
        let sender = self.envs.get(self.current()).id;
        self.cpu.queue_send(t, sender, msg)?;
        Ok(0)
    }
}
