//! Every piece of hardware-touching unsafe code in the kernel lives here:
//! serial port, GDT/TSS, IDT and trap stubs, the `syscall` entry, the local
//! APIC timer, page tables, the virtio-net NIC, and the QEMU exit device.
//! Each unsafe block carries a `// SAFETY:` comment. The rest of the kernel
//! calls the safe functions this module exports.

pub mod apic;
pub mod cpu;
pub mod gdt;
pub mod memory;
pub mod nic;
pub mod paging;
pub mod pod;
pub mod serial;
pub mod trap;

use shared_abi::exit::{Verdict, DEBUG_EXIT_PORT};

/// End the QEMU run with `verdict` (through isa-debug-exit); halts forever
/// if the device is absent.
pub fn exit_qemu(verdict: Verdict) -> ! {
    // SAFETY: writing to the isa-debug-exit port only makes QEMU exit; on a
    // machine without the device the write is ignored.
    unsafe {
        x86_64::instructions::port::Port::<u32>::new(DEBUG_EXIT_PORT).write(verdict as u32);
    }
    cpu::halt_forever()
}
