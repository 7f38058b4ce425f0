//! Environments: the kernel's record of each library OS: its address
//! space, saved registers, registered upcall entry points, and how it ended.

use crate::arch::paging::AddressSpace;
use crate::arch::trap::TrapFrame;
use alloc::string::String;
use alloc::vec::Vec;
use crate::sched::EnvCpu;
use crate::vm::EnvMemory;
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

pub struct Env {
    /// 1-based id, as the libOS sees it.
    pub id: u64,
    pub name: String,
    pub state: EnvState,
    /// None once the environment ended and its memory was reclaimed.
    pub space: Option<AddressSpace>,
    /// Registers to resume with when it next runs.
    pub frame: TrapFrame,
    pub upcalls: UpcallTable,
    /// Fast-upcall state (entries and a validated upcall stack) for the
    /// exception stub, when the upcall stack qualifies.
    pub fast: Option<(u64, u64, u64, u64)>,
    /// Console bytes since the last newline.
    pub line: Vec<u8>,
    /// Memory bindings: slots, software TLB, pool frames, revocation.
    pub mem: EnvMemory,
    /// CPU accounting, protected control transfer state.
    pub cpu: EnvCpu,
}

impl Env {
    pub fn is_runnable(&self) -> bool {
        self.state == EnvState::Runnable
    }
}
