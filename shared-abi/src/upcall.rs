//! Upcall layouts: the entry points a libOS registers and the frame the
//! kernel writes when it hands a discontinuity (exception, page fault,
//! interrupt, protected entry) to the libOS.
//!
//! Delivery: the kernel writes an [`UpcallFrame`] on the registered upcall
//! stack (below the interrupted `rsp` when the libOS was already running on
//! that stack, so upcalls nest), then starts the entry point in ring 3 with
//! `rsp` = `rdi` = the frame's address (16-byte aligned). The libOS resumes
//! the interrupted code itself, from the frame, without entering the kernel.

/// What kind of discontinuity an upcall reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum UpcallKind {
    /// A processor exception other than a page fault (`vector` says which).
    Exception = 1,
    /// A page fault: `fault_addr` is CR2, `error_code` the hardware error code.
    PageFault = 2,
    /// An interrupt or timer event.
    Interrupt = 3,
    /// A protected control transfer from another environment.
    ProtectedEntry = 4,
    /// Memory revocation: `vector` is [`REVOKE_REQUEST`] (give back
    /// `fault_addr` frames before TSC `error_code`) or [`REVOKE_ABORTED`]
    /// (the kernel took `fault_addr` frames by force; see the repossession
    /// vector).
    Revocation = 5,
}

/// `UpcallFrame::vector` of the end-of-slot interrupt upcall. Its
/// `fault_addr` is 1 when the next slot is this environment's too (a plain
/// tick: reschedule freely) and 0 when it must save its context and call
/// `yield` within `error_code` TSC ticks, or be preempted by force and pay
/// the overrun off its next slot.
pub const SLOT_END: u64 = 32;

/// `UpcallFrame::vector` of a repossession request.
pub const REVOKE_REQUEST: u64 = 0;
/// `UpcallFrame::vector` after the abort protocol took frames.
pub const REVOKE_ABORTED: u64 = 1;

impl UpcallKind {
    pub fn from_raw(raw: u64) -> Option<UpcallKind> {
        Some(match raw {
            1 => UpcallKind::Exception,
            2 => UpcallKind::PageFault,
            3 => UpcallKind::Interrupt,
            4 => UpcallKind::ProtectedEntry,
            5 => UpcallKind::Revocation,
            _ => return None,
        })
    }
}

/// The entry points a libOS registers with `set_upcalls`. Zero means "none":
/// an exception or page fault with no entry ends the environment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct UpcallTable {
    pub exception_entry: u64,
    pub page_fault_entry: u64,
    pub interrupt_entry: u64,
    pub protected_entry: u64,
    pub revocation_entry: u64,
    /// Lowest address of the upcall stack.
    pub stack_base: u64,
    /// Length of the upcall stack in bytes.
    pub stack_len: u64,
}

/// General-purpose registers of the interrupted code (all but `rsp`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Regs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

/// The frame an upcall receives. The handler may edit it (say, step `rip`
/// over a faulting instruction) before resuming.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, align(16))]
pub struct UpcallFrame {
    /// An [`UpcallKind`] as a number.
    pub kind: u64,
    /// Exception or interrupt vector.
    pub vector: u64,
    /// Hardware error code, or 0.
    pub error_code: u64,
    /// CR2 for page faults; the frame count for revocation upcalls; 1 or 0
    /// for SLOT_END (see [`SLOT_END`]).
    pub fault_addr: u64,
    pub regs: Regs,
    pub rip: u64,
    pub rsp: u64,
    pub rflags: u64,
    pub _pad: u64,
}

/// Byte offsets into [`UpcallFrame`], for the assembly trampolines.
pub mod offsets {
    pub const REGS: usize = 32;
    pub const RAX: usize = REGS;
    pub const RBX: usize = REGS + 8;
    pub const RCX: usize = REGS + 16;
    pub const RDX: usize = REGS + 24;
    pub const RSI: usize = REGS + 32;
    pub const RDI: usize = REGS + 40;
    pub const RBP: usize = REGS + 48;
    pub const R8: usize = REGS + 56;
    pub const R9: usize = REGS + 64;
    pub const R10: usize = REGS + 72;
    pub const R11: usize = REGS + 80;
    pub const R12: usize = REGS + 88;
    pub const R13: usize = REGS + 96;
    pub const R14: usize = REGS + 104;
    pub const R15: usize = REGS + 112;
    pub const RIP: usize = REGS + 120;
    pub const RSP: usize = REGS + 128;
    pub const RFLAGS: usize = REGS + 136;
}

/// Size of an upcall frame in bytes.
pub const FRAME_SIZE: usize = core::mem::size_of::<UpcallFrame>();

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    #[test]
    fn layout_matches_offsets() {
        assert_eq!(FRAME_SIZE, 192);
        assert_eq!(offset_of!(UpcallFrame, regs), offsets::REGS);
        assert_eq!(offset_of!(UpcallFrame, rip), offsets::RIP);
        assert_eq!(offset_of!(UpcallFrame, rsp), offsets::RSP);
        assert_eq!(offset_of!(UpcallFrame, rflags), offsets::RFLAGS);
        assert_eq!(offset_of!(Regs, r15), offsets::R15 - offsets::REGS);
    }
}
