//! The CPU subsystem: the time-slot vector and where in it the CPU is,
//! each environment's saved registers, CPU accounting and overrun
//! penalties, and the state of protected control transfers (who waits on
//! whom, activations, queued asynchronous messages). Who runs a slot is
//! decided in `kcore::cpu`; the kernel composes switches from this and the
//! other subsystems (`kernel/switch.rs`).
//!
//! At every slot boundary the kernel upcalls the running libOS (if it
//! registered an interrupt entry) with `SLOT_END`. If the next slot is its
//! own, that is just a tick. Otherwise it must save its context and `yield`
//! within the save bound; if it overruns, the kernel preempts it by force
//! and the overrun is taken off its next slot. Slots nobody owns (or whose
//! owner cannot run) go round-robin to the runnable environments.

use crate::arch::apic;
use crate::arch::trap::TrapFrame;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use kcore::cpu::{self, Runnable, States};
use kcore::slotvec::{apply_penalty, SlotVecError, SlotVector};
use kcore::upcall::{self, UpcallStack};
use shared_abi::syscall::{encode, nr, EnvInfo, Error, SlotKey};

/// Most asynchronous transfers queued for one environment.
pub const PCT_QUEUE_MAX: usize = 8;

/// A protected-entry activation running in an environment. Its registers
/// are the environment's current context; the environment's own state
/// waits in the other of its two contexts until the activation ends.
#[derive(Clone, Copy, Debug)]
pub struct Activation {
    /// The caller blocked on it (None for an asynchronous send).
    pub caller: Option<usize>,
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
struct EnvCpu {
    /// Not ended: may be given the CPU.
    alive: bool,
    /// Registers to resume it with when it next runs: `contexts[active]`.
    /// The other holds its own state while an activation runs, so starting
    /// and ending one (each protected call) copies no frame.
    contexts: [TrapFrame; 2],
    active: usize,
    cpu_ticks: u64,
    overruns: u64,
    penalty_owed: u64,
    penalty_total: u64,
    /// Blocked in `pct_call` on this environment index.
    waiting_on: Option<usize>,
    activation: Option<Activation>,
    /// Queued asynchronous transfers: (sender id, message).
    pct_queue: VecDeque<(u64, [u64; 4])>,
    /// The family root whose time it runs on (run-time environments).
    share_of: Option<usize>,
    /// Asleep in `block`, and a wake-up that came while it was awake.
    blocked: bool,
    wake_pending: bool,
    /// Asleep with a deadline: woken at the first slot boundary past it.
    wake_at: u64,
    /// For a family root: the member that last had the family's time.
    family_last: usize,
}

impl EnvCpu {
    fn context(&self) -> &TrapFrame {
        &self.contexts[self.active]
    }

    fn context_mut(&mut self) -> &mut TrapFrame {
        &mut self.contexts[self.active]
    }
}

pub fn from_slot_error(error: SlotVecError) -> Error {
    match error {
        SlotVecError::OutOfRange => Error::InvalidArgument,
        SlotVecError::Taken => Error::PermissionDenied,
        SlotVecError::BadKey => Error::BadKey,
    }
}

/// The CPU subsystem.
pub struct Cpu {
    slots: SlotVector,
    /// The slot running now, its length and the end-of-slot save bound.
    slot_pos: usize,
    slot_ticks: u64,
    save_bound_ticks: u64,
    /// An environment inside its save bound.
    grace: Option<Grace>,
    last_switch_tsc: u64,
    tsc_hz: u64,
    /// Index of the environment whose state the CPU holds.
    current: usize,
    envs: Vec<EnvCpu>,
    /// Run-time environments alive (members of some family besides its root).
    members: usize,
}

impl States for Cpu {
    fn count(&self) -> usize {
        self.envs.len()
    }

    fn state(&self, env: usize) -> Runnable {
        self.envs[env].runnable()
    }
}

/// A set of environment indexes (family roots are few and low: booted
/// environments come first).
#[derive(Default)]
struct Roots(u128);

impl Roots {
    fn insert(&mut self, index: usize) {
        if index < 128 {
            self.0 |= 1 << index;
        }
    }

    fn contains(&self, index: usize) -> bool {
        index < 128 && self.0 & (1 << index) != 0
    }
}

/// The environments' states, for `kcore::cpu`'s decisions.
struct EnvStates<'a>(&'a [EnvCpu]);

impl States for EnvStates<'_> {
    fn count(&self) -> usize {
        self.0.len()
    }

    fn state(&self, env: usize) -> Runnable {
        self.0[env].runnable()
    }
}

/// Who would run the time of `root` now (not `except`): a family root's
/// members take turns (`kcore::cpu::family_runner`); a run-time
/// environment that owns a slot itself runs it alone.
fn family_peek(envs: &[EnvCpu], root: usize, except: Option<usize>) -> Option<usize> {
    let states = EnvStates(envs);
    let env = envs.get(root)?;
    if env.share_of.is_some() {
        return cpu::owner_runner(&states, root).filter(|&r| Some(r) != except);
    }
    let member = |e: usize| Some(e) != except && (e == root || envs[e].share_of == Some(root));
    cpu::family_runner(&states, root, env.family_last, member)
}

impl EnvCpu {
    fn runnable(&self) -> Runnable {
        Runnable { alive: self.alive, waiting_on: self.waiting_on, blocked: self.blocked }
    }
}

impl Cpu {
    pub fn new(vector_len: usize, slot_ticks: u64, save_bound_ticks: u64, tsc_hz: u64) -> Cpu {
        Cpu {
            slots: SlotVector::new(vector_len),
            slot_pos: 0,
            slot_ticks,
            save_bound_ticks,
            grace: None,
            last_switch_tsc: 0,
            tsc_hz,
            current: 0,
            envs: Vec::new(),
            members: 0,
        }
    }

    /// Record an environment (runnable or not) starting from `context`,
    /// owning `slots` slots spread over the vector; returns its index.
    pub fn add_env(&mut self, alive: bool, context: TrapFrame, slots: usize) -> usize {
        self.envs.push(EnvCpu { alive, contexts: [context, TrapFrame::default()], ..Default::default() });
        let index = self.envs.len() - 1;
        if alive {
            self.slots.alloc_spread(slots, index);
        }
        index
    }

    /// Record a run-time environment at `index` (new, or an ended one's
    /// index): not runnable until started, it runs on the time of family
    /// root `root`.
    pub fn add_child(&mut self, index: usize, root: usize) {
        let record = EnvCpu { share_of: Some(root), family_last: index, ..Default::default() };
        if index == self.envs.len() {
            self.envs.push(record);
        } else {
            self.envs[index] = record;
        }
    }

    /// Start a created run-time environment with `context`.
    pub fn start(&mut self, index: usize, context: TrapFrame) {
        let env = &mut self.envs[index];
        *env.context_mut() = context;
        if !env.alive && env.share_of.is_some() {
            self.members += 1;
        }
        env.alive = true;
    }

    /// `block` for env `index`: false (and the pending wake-up is used up)
    /// if one came since it last blocked; else it is asleep now.
    pub fn block(&mut self, index: usize, deadline: u64) -> bool {
        let env = &mut self.envs[index];
        if env.wake_pending {
            env.wake_pending = false;
            return false;
        }
        env.blocked = true;
        env.wake_at = deadline;
        true
    }

    /// Wake the environments whose `block` deadline has passed.
    pub fn wake_due(&mut self, now: u64) {
        for env in self.envs.iter_mut().filter(|e| e.blocked && e.wake_at != 0 && e.wake_at <= now) {
            env.blocked = false;
            env.wake_at = 0;
        }
    }

    /// Wake env `index` (or note the wake-up for its next `block`).
    pub fn wake(&mut self, index: usize) {
        let Some(env) = self.envs.get_mut(index) else { return };
        if env.blocked {
            env.blocked = false;
            env.wake_at = 0;
        } else if env.alive {
            env.wake_pending = true;
        }
    }

    /// Nobody can run: until when may the CPU halt? The nearest `block`
    /// deadline, or (someone waits for console input) the end of a slot's
    /// length; None if no sleeper can be woken by time or input.
    pub fn idle_until(&self, now: u64, input_waited: bool) -> Option<u64> {
        let deadline = self.envs.iter().filter(|e| e.alive && e.blocked && e.wake_at != 0).map(|e| e.wake_at).min();
        let poll = input_waited.then(|| now + self.slot_ticks);
        match (deadline, poll) {
            (Some(d), Some(p)) => Some(d.min(p)),
            (d, p) => d.or(p),
        }
    }

    pub fn tsc_hz(&self) -> u64 {
        self.tsc_hz
    }

    /// Nobody can run, but some environments are asleep: wake them all
    /// (a `block` may return without a wake-up; the libOS checks again),
    /// rather than stop the machine. True if any was woken.
    pub fn wake_all_asleep(&mut self) -> bool {
        let mut any = false;
        for env in self.envs.iter_mut().filter(|e| e.alive && e.blocked) {
            env.blocked = false;
            env.wake_at = 0;
            any = true;
        }
        any
    }

    pub fn current(&self) -> usize {
        self.current
    }

    pub fn slot_pos(&self) -> usize {
        self.slot_pos
    }

    /// The position after the one running now.
    pub fn next_pos(&self) -> usize {
        (self.slot_pos + 1) % self.slots.len().max(1)
    }

    pub fn save_bound_ticks(&self) -> u64 {
        self.save_bound_ticks
    }

    // ----- contexts -----

    /// Env `index`'s saved registers.
    pub fn context(&self, index: usize) -> &TrapFrame {
        self.envs[index].context()
    }

    pub fn context_mut(&mut self, index: usize) -> &mut TrapFrame {
        self.envs[index].context_mut()
    }

    /// Is env `index` running a protected-entry activation?
    pub fn in_activation(&self, index: usize) -> bool {
        self.envs[index].activation.is_some()
    }

    // ----- who runs -----

    /// Who runs slot `pos`: its owner (or whom it donates to), else the
    /// next runnable environment round-robin.
    pub fn runner_for_slot(&mut self, pos: usize) -> Option<usize> {
        if self.members == 0 {
            // No family has members: each root runs alone (the short path).
            if let Some(runner) = self.slots.owner(pos).and_then(|owner| cpu::owner_runner(self, owner)) {
                return Some(runner);
            }
            let count = self.envs.len();
            let envs = &self.envs;
            return self.slots.next_unowned_runner(count, |e| envs[e].runnable().schedulable());
        }
        if let Some(runner) = self.slots.owner(pos).and_then(|owner| self.family_turn(owner, None)) {
            return Some(runner);
        }
        let count = self.envs.len();
        let ready = self.ready_roots(None);
        let envs = &self.envs;
        let root = self.slots.next_unowned_runner(count, |e| envs[e].share_of.is_none() && ready.contains(e))?;
        self.family_turn(root, None)
    }

    /// The roots of families with a member that can run on its own
    /// behalf now (not `except`), or a root that donates along a call:
    /// one pass over the environments.
    fn ready_roots(&self, except: Option<usize>) -> Roots {
        let mut roots = Roots::default();
        for (e, env) in self.envs.iter().enumerate() {
            if Some(e) != except && env.runnable().schedulable() {
                roots.insert(env.share_of.unwrap_or(e));
            } else if env.share_of.is_none() && env.waiting_on.is_some() {
                roots.insert(e);
            }
        }
        roots
    }

    /// Someone other than `me` to give the rest of a slot to (`yield`):
    /// another member of its family first, else another family.
    pub fn other_runner(&mut self, me: usize) -> Option<usize> {
        if self.members == 0 {
            let count = self.envs.len();
            let envs = &self.envs;
            return self.slots.next_unowned_runner(count, |e| e != me && envs[e].runnable().schedulable());
        }
        let root = self.root_of(me);
        if let Some(member) = self.family_turn(root, Some(me)) {
            return Some(member);
        }
        let count = self.envs.len();
        let ready = self.ready_roots(Some(me));
        let envs = &self.envs;
        let other =
            self.slots.next_unowned_runner(count, |e| e != root && envs[e].share_of.is_none() && ready.contains(e))?;
        self.family_turn(other, Some(me))
    }

    /// The family root env `index` runs under (itself for a root).
    fn root_of(&self, index: usize) -> usize {
        self.envs[index].share_of.unwrap_or(index)
    }

    /// As `family_peek`, and the turn passes.
    fn family_turn(&mut self, root: usize, except: Option<usize>) -> Option<usize> {
        let runner = family_peek(&self.envs, root, except)?;
        if let Some(env) = self.envs.get_mut(root) {
            env.family_last = runner;
        }
        Some(runner)
    }

    // ----- time -----

    /// Charge the CPU time since the last switch to the running env.
    pub fn account(&mut self, now: u64) {
        let used = now.saturating_sub(self.last_switch_tsc);
        if let Some(env) = self.envs.get_mut(self.current) {
            env.cpu_ticks += used;
        }
        self.last_switch_tsc = now;
    }

    /// The CPU now holds env `index`.
    pub fn set_current(&mut self, index: usize) -> bool {
        let switched = index != self.current;
        self.current = index;
        switched
    }

    /// Start slot `pos` for `runner`: the timer is armed for the slot,
    /// shortened by any penalty the runner owes.
    pub fn begin_slot(&mut self, pos: usize, runner: usize) {
        self.slot_pos = pos;
        let env = &mut self.envs[runner];
        let (len, owed) = apply_penalty(self.slot_ticks, env.penalty_owed, self.slot_ticks / 10);
        env.penalty_owed = owed;
        self.arm(len);
    }

    /// The very first slot, at boot.
    pub fn begin_first_slot(&mut self, runner: usize, now: u64) {
        self.last_switch_tsc = now;
        self.slot_pos = 0;
        self.current = runner;
        self.arm(self.slot_ticks);
    }

    /// Start a save bound for the running env, which was told its slot ended.
    pub fn begin_grace(&mut self, next_pos: usize, now: u64) {
        self.grace = Some(Grace { env: self.current, next_pos, started_tsc: now });
        self.arm(self.save_bound_ticks);
    }

    /// The save bound running, if any (it ends now).
    pub fn take_grace(&mut self) -> Option<Grace> {
        self.grace.take()
    }

    /// The save bound of env `index`, if it is inside one (it ends now).
    pub fn take_grace_of(&mut self, index: usize) -> Option<Grace> {
        let grace = self.grace.filter(|g| g.env == index)?;
        self.grace = None;
        Some(grace)
    }

    /// Env `grace.env` did not yield within its bound: it pays the overrun
    /// off its next slots. Returns the overrun.
    pub fn charge_overrun(&mut self, grace: Grace, now: u64) -> u64 {
        let overrun = now.saturating_sub(grace.started_tsc);
        let env = &mut self.envs[grace.env];
        env.overruns += 1;
        env.penalty_owed = cpu::charge_overrun(env.penalty_owed, overrun);
        env.penalty_total = env.penalty_total.saturating_add(overrun);
        overrun
    }

    /// Arm the timer for a slot's length from now (after the CPU halted,
    /// which used the timer).
    pub fn rearm(&self) {
        self.arm(self.slot_ticks);
    }

    fn arm(&self, tsc_ticks: u64) {
        apic::arm_oneshot(tsc_ticks, self.tsc_hz);
    }

    /// Whole time the run took so far, charged.
    pub fn cpu_ticks(&self, index: usize) -> u64 {
        self.envs[index].cpu_ticks
    }

    pub fn overruns(&self, index: usize) -> u64 {
        self.envs[index].overruns
    }

    // ----- protected control transfer -----

    /// Can env `t` take a synchronous call now?
    pub fn busy(&self, t: usize) -> bool {
        self.envs[t].activation.is_some() || self.envs[t].waiting_on.is_some()
    }

    /// Make env `t` run its protected entry `entry` on its upcall stack for
    /// `sender` with `msg`; `caller` blocks on it (None: asynchronous).
    #[allow(clippy::too_many_arguments)] // the transfer's parts, in registers
    pub fn start_activation(
        &mut self,
        t: usize,
        entry: u64,
        stack: UpcallStack,
        caller: Option<usize>,
        sender: u64,
        msg: [u64; 4],
        flags: u64,
    ) -> Result<(), Error> {
        if entry == 0 {
            return Err(Error::InvalidArgument);
        }
        let env = &mut self.envs[t];
        let rsp = upcall::place_activation(stack, env.context().rsp).map_err(|_| Error::NoMemory)?;
        // Built in the other context; its own state stays where it is.
        env.active ^= 1;
        let activation = env.context_mut();
        *activation = TrapFrame::new_user(entry, rsp, sender);
        activation.rsi = msg[0];
        activation.rdx = msg[1];
        activation.rcx = msg[2];
        activation.r8 = msg[3];
        activation.r9 = flags;
        env.activation = Some(Activation { caller });
        Ok(())
    }

    /// `caller` blocks on env `t` (its registers are saved first).
    pub fn block_on(&mut self, caller: usize, t: usize, frame: &TrapFrame) {
        let env = &mut self.envs[caller];
        *env.context_mut() = *frame;
        env.waiting_on = Some(t);
    }

    /// End env `me`'s activation: its own state comes back; returns the
    /// activation, or None if it ran none.
    pub fn end_activation(&mut self, me: usize) -> Option<Activation> {
        let env = &mut self.envs[me];
        let activation = env.activation.take()?;
        env.active ^= 1;
        Some(activation)
    }

    /// Wake `caller`, blocked on `me`, with `reply`; false if it is not
    /// (any more) waiting on `me`.
    pub fn wake_with_reply(&mut self, caller: usize, me: usize, reply: [u64; 4]) -> bool {
        let Some(env) = self.envs.get_mut(caller) else { return false };
        if !env.alive || env.waiting_on != Some(me) {
            return false;
        }
        env.waiting_on = None;
        let context = env.context_mut();
        context.rax = 0;
        context.rsi = reply[0];
        context.rdx = reply[1];
        context.r10 = reply[2];
        context.r8 = reply[3];
        true
    }

    /// Queue an asynchronous transfer for env `t`.
    pub fn queue_send(&mut self, t: usize, sender: u64, msg: [u64; 4]) -> Result<(), Error> {
        let queue = &mut self.envs[t].pct_queue;
        if queue.len() >= PCT_QUEUE_MAX {
            return Err(Error::Again);
        }
        queue.push_back((sender, msg));
        self.wake(t);
        Ok(())
    }

    /// The oldest transfer queued for env `t`, if it can start one now.
    pub fn next_send(&self, t: usize) -> Option<(u64, [u64; 4])> {
        if self.envs[t].activation.is_some() {
            return None;
        }
        self.envs[t].pct_queue.front().copied()
    }

    /// The transfer `next_send` gave has started.
    pub fn send_started(&mut self, t: usize) {
        self.envs[t].pct_queue.pop_front();
    }

    // ----- slots -----

    pub fn slot_alloc(&mut self, index: usize, position: u64) -> Result<u64, Error> {
        let position = if position == nr::ANY_SLOT { None } else { Some(position as usize) };
        self.slots.alloc(position, index).map_err(from_slot_error)
    }

    pub fn slot_free(&mut self, index: usize, key: SlotKey) -> Result<u64, Error> {
        self.slots.free(key.0, index).map_err(from_slot_error).map(|_| 0)
    }

    /// Fill in the CPU part of what `env_info` reports (the time is
    /// charged first).
    pub fn fill_info(&mut self, index: usize, now: u64, info: &mut EnvInfo) {
        self.account(now);
        let env = &self.envs[index];
        info.cpu_ticks = env.cpu_ticks;
        info.overruns = env.overruns;
        info.penalty_ticks = env.penalty_total;
        info.slots_owned = self.slots.owned_by(index) as u64;
        info.vector_len = self.slots.len() as u64;
        info.slot_ticks = self.slot_ticks;
        info.save_bound_ticks = self.save_bound_ticks;
        info.slot_position = self.slot_pos as u64;
    }

    // ----- the end of an environment -----

    /// Env `index` ended: free its slots and its queue, end its save bound,
    /// and fail the calls blocked on it with `NoSuchEnv`.
    pub fn release(&mut self, index: usize) {
        self.slots.release_env(index);
        if self.grace.is_some_and(|g| g.env == index) {
            self.grace = None;
        }
        for env in self.envs.iter_mut() {
            if env.waiting_on == Some(index) {
                env.waiting_on = None;
                env.context_mut().rax = encode(Err(Error::NoSuchEnv));
            }
        }
        let env = &mut self.envs[index];
        if env.alive && env.share_of.is_some() {
            self.members -= 1;
        }
        env.alive = false;
        if env.activation.take().is_some() {
            env.active ^= 1;
        }
        env.pct_queue = VecDeque::new();
        env.blocked = false;
        env.wake_pending = false;
    }

    /// Every environment has ended: drop what was built for them.
    pub fn retire(&mut self) {
        self.slots = SlotVector::new(0);
        self.grace = None;
        self.envs = Vec::new();
    }
}
