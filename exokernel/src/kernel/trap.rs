//! Traps from ring 3 (all but system calls) and upcall delivery: every
//! discontinuity goes to the entry point the environment registered.

use super::{Kernel, KERNEL};
use crate::arch::paging::Flags;
use crate::arch::trap::{self, TrapFrame};
use crate::arch::{apic, cpu};
use crate::counters::{bump, COUNTERS};
use crate::umem::Pod;
use alloc::format;
use kcore::upcall::{self, PlaceError};
use shared_abi::net::NET_RX;
use shared_abi::upcall::{UpcallFrame, UpcallKind, FRAME_SIZE};

/// Every trap but system calls.
pub fn handle_trap(frame: &mut TrapFrame) {
    let vector = frame.vector;
    if vector == trap::TIMER_VECTOR as u64 {
        apic::eoi();
        bump(&COUNTERS.timer_ticks);
        if !frame.from_user() {
            return; // the idle loop
        }
        let mut guard = KERNEL.lock();
        let kernel = guard.as_mut().expect("kernel initialised");
        // Frames the NIC received go to their rings; a NET_RX upcall owed
        // to the running env is delivered first, so that a slot-end upcall
        // of this tick nests above it.
        kernel.poll_net();
        kernel.deliver_net_rx(frame);
        kernel.on_timer(frame);
        return;
    }
    if vector == trap::NIC_VECTOR as u64 {
        // Masked until the next poll has served the device (it deasserts
        // the line, takes the packets and unmasks).
        crate::arch::nic::irq_raised();
        apic::eoi();
        bump(&COUNTERS.nic_interrupts);
        if !frame.from_user() {
            return; // the idle loop polls next
        }
        let mut guard = KERNEL.lock();
        let kernel = guard.as_mut().expect("kernel initialised");
        kernel.poll_net();
        kernel.deliver_net_rx(frame);
        return;
    }
    if vector == trap::CONSOLE_VECTOR as u64 {
        // Bytes on COM1: into the console queue, waking its reader. From
        // the idle loop, the loop itself polls once `hlt` returns.
        apic::eoi();
        if frame.from_user() {
            let mut guard = KERNEL.lock();
            let kernel = guard.as_mut().expect("kernel initialised");
            kernel.poll_console();
        }
        return;
    }
    if vector >= 32 {
        log::warn!("unexpected interrupt vector {}", vector);
        return;
    }
    if vector == 2 {
        // NMI: a hardware event, not anyone's fault; resume what ran.
        return;
    }
    if !frame.from_user() {
        panic!(
            "kernel exception {} (error {:#x}, cr2 {:#x}) at {:#x}\n{:#x?}",
            vector,
            frame.error_code,
            cpu::cr2(),
            frame.rip,
            frame
        );
    }
    if vector == 18 {
        panic!("machine check while running an environment");
    }
    bump(&COUNTERS.exceptions);
    let (kind, addr) = if vector == 14 {
        bump(&COUNTERS.page_faults);
        (UpcallKind::PageFault, cpu::cr2())
    } else {
        (UpcallKind::Exception, 0)
    };
    let mut guard = KERNEL.lock();
    let kernel = guard.as_mut().expect("kernel initialised");
    let current = kernel.current();
    if vector == 14 && kernel.memory.stlb_refill(current, addr, frame.error_code, cpu::rdtsc()) {
        return;
    }
    if let Err(reason) = kernel.deliver_upcall(frame, kind, vector, frame.error_code, addr) {
        let what = if vector == 14 {
            format!("page fault at {:#x} (rip {:#x}, error {:#x}): {}", addr, frame.rip, frame.error_code, reason)
        } else {
            format!("exception {} at rip {:#x}: {}", vector, frame.rip, reason)
        };
        kernel.kill_current(what);
        kernel.run_rest_of_slot(frame);
    }
}

/// A page fault in the dynamic window, asked by the fast-upcall stub
/// before it delivers the upcall itself: refill from the software TLB if
/// it holds the mapping (the fault is then over), else let the stub deliver.
pub fn window_fault(va: u64, error_code: u64) -> trap::WindowFault {
    let mut guard = KERNEL.lock();
    let Some(kernel) = guard.as_mut() else { return trap::WindowFault::Slow };
    let current = kernel.current();
    if kernel.memory.stlb_refill(current, va, error_code, cpu::rdtsc()) {
        // Counted as the general path counts a refilled fault (a delivered
        // one is counted by the stub).
        bump(&COUNTERS.exceptions);
        bump(&COUNTERS.page_faults);
        return trap::WindowFault::Resolved;
    }
    trap::WindowFault::Deliver
}

impl Kernel {
    /// Hand a discontinuity to the current environment's registered entry:
    /// write an [`UpcallFrame`] on its upcall stack (placed by
    /// `kcore::upcall::place_frame`) and start the entry.
    pub fn deliver_upcall(
        &mut self,
        frame: &mut TrapFrame,
        kind: UpcallKind,
        vector: u64,
        error_code: u64,
        addr: u64,
    ) -> Result<(), &'static str> {
        let index = self.current();
        let env = self.envs.get(index);
        let table = env.upcalls;
        let entry = match kind {
            UpcallKind::Exception => table.exception_entry,
            UpcallKind::PageFault => table.page_fault_entry,
            UpcallKind::Interrupt => table.interrupt_entry,
            UpcallKind::ProtectedEntry => table.protected_entry,
            UpcallKind::Revocation => table.revocation_entry,
        };
        if entry == 0 {
            return Err("no handler registered");
        }
        let at = upcall::place_frame(env.upcall_stack(), frame.rsp, FRAME_SIZE as u64).map_err(|e| match e {
            PlaceError::Exhausted => "upcall stack exhausted",
        })?;
        let space = self.memory.space(index).ok_or("no address space")?;
        let mut out = UpcallFrame { kind: kind as u64, vector, error_code, fault_addr: addr, ..Default::default() };
        out.regs.rax = frame.rax;
        out.regs.rbx = frame.rbx;
        out.regs.rcx = frame.rcx;
        out.regs.rdx = frame.rdx;
        out.regs.rsi = frame.rsi;
        out.regs.rdi = frame.rdi;
        out.regs.rbp = frame.rbp;
        out.regs.r8 = frame.r8;
        out.regs.r9 = frame.r9;
        out.regs.r10 = frame.r10;
        out.regs.r11 = frame.r11;
        out.regs.r12 = frame.r12;
        out.regs.r13 = frame.r13;
        out.regs.r14 = frame.r14;
        out.regs.r15 = frame.r15;
        out.rip = frame.rip;
        out.rsp = frame.rsp;
        out.rflags = frame.rflags;
        // Translated afresh on every delivery: no translation of the upcall
        // stack outlives a mapping change (the stack may be in the dynamic
        // window, where `unmap`, `frame_free` and the abort protocol move it).
        if space.write_user_value(at, &out, Flags::WRITABLE).is_err() {
            // Straddling two pages (or not writable): copy byte-wise.
            space.write_user(at, out.as_bytes(), Flags::WRITABLE).map_err(|()| "upcall stack not writable")?;
        }
        frame.rip = entry;
        frame.rsp = at;
        frame.rdi = at;
        bump(&COUNTERS.upcalls);
        Ok(())
    }

    /// Deliver the `NET_RX` upcall owed to the current environment, if it
    /// is running its ordinary code (not in an upcall handler or an
    /// activation). Several deliveries before it runs make one upcall.
    pub fn deliver_net_rx(&mut self, frame: &mut TrapFrame) {
        let index = self.current();
        if !self.net.rx_owed(index) {
            return;
        }
        let env = self.envs.get(index);
        let in_handler = env.upcall_stack().holds(frame.rsp);
        if !frame.from_user() || !env.is_runnable() || self.cpu.in_activation(index) || in_handler {
            return;
        }
        self.net.clear_rx_owed(index);
        let _ = self.deliver_upcall(frame, UpcallKind::Interrupt, NET_RX, 0, 0);
    }
}
