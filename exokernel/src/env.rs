//! The environment table: who each library OS is (id and name), where it
//! is in its life, the upcall entry points it registered, and its console
//! line. Its memory, CPU and network state live in those subsystems, under
//! the same index.

use crate::arch::serial;
use alloc::string::String;
use alloc::vec::Vec;
use kcore::upcall::UpcallStack;
use shared_abi::upcall::UpcallTable;

/// Where an environment is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvState {
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
}

impl Env {
    pub fn new(id: u64, name: String) -> Env {
        Env { id, name, state: EnvState::Runnable, upcalls: UpcallTable::default(), fast: None, line: Vec::new() }
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
}

impl EnvTable {
    pub fn push(&mut self, env: Env) -> usize {
        self.envs.push(env);
        self.envs.len() - 1
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

    /// Append console output of env `index`; complete lines are printed
    /// with the environment's name in front.
    pub fn console_bytes(&mut self, index: usize, bytes: &[u8]) {
        const MAX_LINE: usize = 480;
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
    }
}
