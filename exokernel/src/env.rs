//! The environment table: who each library OS is (id and name), where it
//! is in its life, the upcall entry points it registered, and its console
//! line. Its memory, CPU and network state live in those subsystems, under
//! the same index.

use crate::arch::serial;
use alloc::string::String;
use alloc::vec::Vec;
use kcore::upcall::UpcallStack;
use shared_abi::syscall::EnvEnd;
use shared_abi::upcall::UpcallTable;

/// Most environments alive (or being built) at once, booted and created.
pub const MAX_LIVE_ENVS: usize = 64;
/// Most ended children whose end a parent has not collected yet.
pub const MAX_UNREAPED: usize = 64;

/// Where an environment is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvState {
    /// Created at run time, being built by its parent; not yet started.
    Created,
    Runnable,
    /// Ended by its own `exit` call with this code.
    Exited(i64),
    /// Ended by the kernel, with the reason.
    Killed(String),
}

/// The fast-upcall state the exception stub may use: (exception entry,
/// page-fault entry, stack low, stack high), set when the upcall stack
/// qualifies (see `syscalls::fast_upcall_state`).
pub type FastUpcall = (u64, u64, u64, u64);

pub struct Env {
    /// 1-based id, as the libOS sees it.
    pub id: u64,
    pub name: String,
    pub state: EnvState,
    pub upcalls: UpcallTable,
    /// Fast-upcall state for the exception stub, when the upcall stack
    /// qualifies.
    pub fast: Option<FastUpcall>,
    /// Console bytes since the last newline.
    pub line: Vec<u8>,
    /// The environment that created it (None: booted from the manifest,
    /// or its creator ended and it was handed to no one).
    pub parent: Option<usize>,
    /// Its family: the booted environment it descends from (itself for a
    /// booted one). A family shares its root's time slots.
    pub family: usize,
    /// Created at run time (its index is reused once it ended).
    pub run_time: bool,
    /// Its children that ended, until it collects them (`env_reap`).
    pub ended_children: Vec<EnvEnd>,
}

impl Env {
    pub fn new(id: u64, name: String) -> Env {
        Env {
            id,
            name,
            state: EnvState::Runnable,
            upcalls: UpcallTable::default(),
            fast: None,
            line: Vec::new(),
            parent: None,
            family: (id - 1) as usize,
            run_time: false,
            ended_children: Vec::new(),
        }
    }

    /// Has it ended?
    pub fn has_ended(&self) -> bool {
        matches!(self.state, EnvState::Exited(_) | EnvState::Killed(_))
    }

    pub fn is_runnable(&self) -> bool {
        self.state == EnvState::Runnable
    }

    /// Its registered upcall stack.
    pub fn upcall_stack(&self) -> UpcallStack {
        UpcallStack { base: self.upcalls.stack_base, len: self.upcalls.stack_len }
    }
}

/// Every environment, by index (id - 1).
#[derive(Default)]
pub struct EnvTable {
    envs: Vec<Env>,
    /// The family that owns the console (manifest `console = true`): it
    /// reads console input and prints without the name prefix.
    pub console_family: Option<usize>,
    /// Console input not yet read, and who waits for it.
    input: alloc::collections::VecDeque<u8>,
    input_waiter: Option<usize>,
    /// The id the next environment gets (ids are never reused, so a key
    /// or message naming an ended environment can never reach a new one).
    next_id: u64,
}

impl EnvTable {
    /// The id for the next environment.
    pub fn take_id(&mut self) -> u64 {
        self.next_id = self.next_id.max(self.envs.len() as u64) + 1;
        self.next_id
    }

    /// Where a new run-time environment goes: the index of one that ended
    /// (run-time ones only: booted ones stay for the summary), else a new
    /// one. None at `MAX_LIVE_ENVS`.
    pub fn free_index(&self) -> Option<usize> {
        let live = self.envs.iter().filter(|e| !e.has_ended()).count();
        if live >= MAX_LIVE_ENVS {
            return None;
        }
        Some(self.envs.iter().position(|e| e.run_time && e.has_ended()).unwrap_or(self.envs.len()))
    }

    /// Put `env` at `index` (from `free_index`).
    pub fn place(&mut self, index: usize, env: Env) {
        if index == self.envs.len() {
            self.envs.push(env);
        } else {
            self.envs[index] = env;
        }
    }

    /// The live children of env `index`.
    pub fn children_of(&self, index: usize) -> impl Iterator<Item = usize> + '_ {
        self.envs.iter().enumerate().filter(move |(_, e)| e.parent == Some(index) && !e.has_ended()).map(|(i, _)| i)
    }

    /// Is env `index` alive and in family `family`?
    pub fn in_family(&self, index: usize, family: usize) -> bool {
        self.envs.get(index).is_some_and(|e| e.family == family && !e.has_ended())
    }

    /// The index of a live (created or running) environment with id `id`.
    pub fn live_index_of(&self, id: u64) -> Option<usize> {
        self.envs.iter().position(|e| e.id == id && !e.has_ended())
    }
    pub fn push(&mut self, env: Env) -> usize {
        self.envs.push(env);
        self.envs.len() - 1
    }

    /// Environments recorded (ended ones included).
    pub fn len(&self) -> usize {
        self.envs.len()
    }

    pub fn get(&self, index: usize) -> &Env {
        &self.envs[index]
    }

    pub fn get_mut(&mut self, index: usize) -> &mut Env {
        &mut self.envs[index]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Env> {
        self.envs.iter()
    }

    /// The index of the running environment with id `id`.
    pub fn index_of(&self, id: u64) -> Option<usize> {
        self.envs.iter().position(|e| e.id == id && e.is_runnable())
    }

    /// Who waits for console input.
    pub fn input_waiter(&self) -> Option<usize> {
        self.input_waiter
    }

    /// Move what the console received into the input queue (bounded: a
    /// flood beyond it is dropped). Returns the waiter to wake, if bytes came.
    pub fn poll_input(&mut self) -> Option<usize> {
        const MAX_INPUT: usize = 4096;
        self.console_family?;
        let mut got = false;
        while let Some(byte) = serial::try_read() {
            if self.input.len() < MAX_INPUT {
                self.input.push_back(byte);
            }
            got = true;
        }
        if got {
            self.input_waiter.take()
        } else {
            None
        }
    }

    /// `console_read` for env `index`: up to `max` bytes of input; none
    /// makes it the waiter, to be woken when input comes. `Err(())` if its
    /// family does not own the console.
    pub fn take_input(&mut self, index: usize, max: usize) -> Result<alloc::vec::Vec<u8>, ()> {
        if self.console_family.is_none() || self.console_family != Some(self.envs[index].family) {
            return Err(());
        }
        let _ = self.poll_input();
        let count = max.min(self.input.len());
        if count == 0 {
            self.input_waiter = Some(index);
        }
        Ok(self.input.drain(..count).collect())
    }

    /// Input taken by `take_input` that could not be delivered goes back
    /// to the front of the queue, in order.
    pub fn put_back_input(&mut self, bytes: &[u8]) {
        for &byte in bytes.iter().rev() {
            self.input.push_front(byte);
        }
    }

    /// Append console output of env `index`; complete lines are printed
    /// with the environment's name in front (the console-owning family's
    /// bytes go out as they are).
    pub fn console_bytes(&mut self, index: usize, bytes: &[u8]) {
        const MAX_LINE: usize = 480;
        if self.console_family.is_some() && self.console_family == Some(self.envs[index].family) {
            serial::write_bytes(bytes);
            return;
        }
        let env = &mut self.envs[index];
        for &byte in bytes {
            if byte == b'\n' || env.line.len() >= MAX_LINE {
                serial::write_fmt(format_args!(
                    "[{}] {}\n",
                    env.name,
                    core::str::from_utf8(&env.line).unwrap_or("<bad utf-8>")
                ));
                env.line.clear();
                if byte == b'\n' {
                    continue;
                }
            }
            let printable = if byte == b'\t' || (0x20..0x7f).contains(&byte) { byte } else { b'?' };
            env.line.push(printable);
        }
    }

    /// Print what is left of env `index`'s console line.
    pub fn flush_console(&mut self, index: usize) {
        if !self.envs[index].line.is_empty() {
            self.console_bytes(index, b"\n");
        }
    }

    /// Every environment has ended and the summary is printed: drop them.
    pub fn retire(&mut self) {
        self.envs = Vec::new();
        self.input = alloc::collections::VecDeque::new();
        self.input_waiter = None;
    }
}
