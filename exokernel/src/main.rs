//! The exokernel binary: boots, multiplexes the hardware among library
//! operating systems, and does nothing more.
//!
//! Design principles:
//! * Mechanism, not policy: the kernel checks and multiplexes; libOSes
//!   decide (paging, scheduling, abstractions).
//! * Bad input from a libOS is answered with an error code; a libOS that
//!   faults without a handler is ended alone. The kernel never panics on
//!   user input.
//! * All hardware `unsafe` lives in `arch`; pure logic lives in the
//!   host-tested library (`lib.rs`).
//! * Single CPU, non-preemptible kernel: every trap runs with interrupts off
//!   on one trap stack, so kernel state needs no fine-grained locking.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
// Unsafe code lives in `arch` alone (which allows it, and comments each
// block); everything else is safe Rust over the API `arch` exports.
#![deny(unsafe_code)]

extern crate alloc;

#[allow(unsafe_code)]
mod arch;
mod counters;
mod env;
mod kernel;
mod loader;
mod logger;
mod net;
mod sched;
mod syscalls;
mod umem;
mod vm;

use bootloader_api::config::{BootloaderConfig, Mapping};
use bootloader_api::BootInfo;
use shared_abi::exit::Verdict;

/// Everything the bootloader maps lives in the upper half, so the lower
/// half of every address space is free for environments.
const BOOTLOADER_CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.physical_memory = Some(Mapping::Dynamic);
    config.mappings.dynamic_range_start = Some(0xffff_8000_0000_0000);
    config.kernel_stack_size = 256 * 1024;
    config
};

bootloader_api::entry_point!(kernel_main, config = &BOOTLOADER_CONFIG);

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    kernel::boot(boot_info)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    match info.location() {
        Some(at) => arch::serial::write_fmt_panicking(format_args!(
            "\n[kernel] KERNEL PANIC: {} (at {}:{})\n",
            info.message(),
            at.file(),
            at.line()
        )),
        None => arch::serial::write_fmt_panicking(format_args!("\n[kernel] KERNEL PANIC: {}\n", info.message())),
    }
    arch::serial::write_fmt_panicking(format_args!("EXO-END verdict=failure\n"));
    arch::exit_qemu(Verdict::Failure)
}
