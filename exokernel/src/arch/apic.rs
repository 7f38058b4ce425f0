//! The local APIC timer, calibrated against the PIT; the legacy PICs are
//! remapped and masked; the I/O APIC routes device interrupt lines (the
//! NIC's PCI INTx) to vectors.

use super::paging::{AddressSpace, Flags};
use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::instructions::port::Port;
use x86_64::registers::model_specific::Msr;

const IA32_APIC_BASE: u32 = 0x1b;
const REG_EOI: u64 = 0xb0;
const REG_SVR: u64 = 0xf0;
const REG_LVT_TIMER: u64 = 0x320;
const REG_TIMER_INIT: u64 = 0x380;
const REG_TIMER_CURRENT: u64 = 0x390;
const REG_TIMER_DIVIDE: u64 = 0x3e0;
const LVT_MASKED: u32 = 1 << 16;

/// Where every PC chipset QEMU emulates puts the (first) I/O APIC.
const IOAPIC_PHYS: u64 = 0xfec0_0000;
const IOAPIC_REG_VERSION: u32 = 1;
const IOAPIC_REG_REDIRECT: u32 = 0x10;
/// Redirection entry bits: level triggered, masked.
const REDIRECT_LEVEL: u32 = 1 << 15;
const REDIRECT_MASKED: u32 = 1 << 16;

static APIC_VIRT: AtomicU64 = AtomicU64::new(0);
/// The I/O APIC's register window (0: none found) and its input count.
static IOAPIC_VIRT: AtomicU64 = AtomicU64::new(0);
static IOAPIC_INPUTS: AtomicU64 = AtomicU64::new(0);
static TICKS_PER_MS: AtomicU64 = AtomicU64::new(0);

fn write(reg: u64, value: u32) {
    let base = APIC_VIRT.load(Ordering::Relaxed);
    // SAFETY: `base` maps the local APIC's 4 KiB register page uncached;
    // `reg` is one of the documented 32-bit registers.
    unsafe { core::ptr::write_volatile((base + reg) as *mut u32, value) };
}

fn read(reg: u64) -> u32 {
    let base = APIC_VIRT.load(Ordering::Relaxed);
    // SAFETY: as for `write`.
    unsafe { core::ptr::read_volatile((base + reg) as *const u32) }
}

fn disable_pic() {
    // SAFETY: the standard 8259 remap sequence (to vectors 0x20..0x2f, away
    // from the exceptions) followed by masking every line; the kernel uses
    // the local APIC only.
    unsafe {
        let mut cmd1 = Port::<u8>::new(0x20);
        let mut data1 = Port::<u8>::new(0x21);
        let mut cmd2 = Port::<u8>::new(0xa0);
        let mut data2 = Port::<u8>::new(0xa1);
        cmd1.write(0x11);
        cmd2.write(0x11);
        data1.write(0x20);
        data2.write(0x28);
        data1.write(4);
        data2.write(2);
        data1.write(1);
        data2.write(1);
        data1.write(0xff);
        data2.write(0xff);
    }
}

/// Map and enable the local APIC at `window` (a kernel virtual address in
/// an unused top-level slot).
pub fn init(kernel: &mut AddressSpace, window: u64) {
    disable_pic();
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU.
    let base_msr = unsafe { Msr::new(IA32_APIC_BASE).read() };
    let phys = base_msr & 0x000f_ffff_ffff_f000;
    kernel
        .map_kernel(window, phys, Flags::WRITABLE | Flags::NO_CACHE | Flags::WRITE_THROUGH | Flags::NO_EXECUTE)
        .expect("map the local APIC");
    APIC_VIRT.store(window, Ordering::Relaxed);
    // SAFETY: setting the global-enable bit keeps the APIC at its address.
    unsafe { Msr::new(IA32_APIC_BASE).write(base_msr | (1 << 11)) };
    write(REG_SVR, 0x100 | super::trap::SPURIOUS_VECTOR as u32);
    write(REG_LVT_TIMER, LVT_MASKED);
    // The I/O APIC goes in the page after the local APIC's.
    let io_window = window + 0x1000;
    let mapped = kernel.map_kernel(
        io_window,
        IOAPIC_PHYS,
        Flags::WRITABLE | Flags::NO_CACHE | Flags::WRITE_THROUGH | Flags::NO_EXECUTE,
    );
    if mapped.is_ok() {
        IOAPIC_VIRT.store(io_window, Ordering::Relaxed);
        let version = ioapic_read(IOAPIC_REG_VERSION);
        let inputs = if version == u32::MAX { 0 } else { ((version >> 16) & 0xff) as u64 + 1 };
        IOAPIC_INPUTS.store(inputs, Ordering::Relaxed);
        for input in 0..inputs as u32 {
            ioapic_write(IOAPIC_REG_REDIRECT + 2 * input, REDIRECT_MASKED);
        }
    }
}

fn ioapic_read(reg: u32) -> u32 {
    let base = IOAPIC_VIRT.load(Ordering::Relaxed);
    // SAFETY: `base` maps the I/O APIC's register page uncached: IOREGSEL
    // at +0, IOWIN at +0x10; the kernel runs with interrupts off, so the
    // select/access pair is not interleaved with another.
    unsafe {
        core::ptr::write_volatile(base as *mut u32, reg);
        core::ptr::read_volatile((base + 0x10) as *const u32)
    }
}

fn ioapic_write(reg: u32, value: u32) {
    let base = IOAPIC_VIRT.load(Ordering::Relaxed);
    // SAFETY: as for `ioapic_read`.
    unsafe {
        core::ptr::write_volatile(base as *mut u32, reg);
        core::ptr::write_volatile((base + 0x10) as *mut u32, value);
    }
}

/// Route I/O APIC input `input` to `vector` on this CPU (local APIC 0),
/// active high, level triggered if `level` (PCI INTx in QEMU's PIIX) else
/// edge (ISA); left masked. False if there is no such input.
pub fn ioapic_route(input: u8, vector: u8, level: bool) -> bool {
    if IOAPIC_VIRT.load(Ordering::Relaxed) == 0 || input as u64 >= IOAPIC_INPUTS.load(Ordering::Relaxed) {
        return false;
    }
    let reg = IOAPIC_REG_REDIRECT + 2 * input as u32;
    ioapic_write(reg + 1, 0); // destination: local APIC id 0
    ioapic_write(reg, vector as u32 | if level { REDIRECT_LEVEL } else { 0 } | REDIRECT_MASKED);
    true
}

/// Mask or unmask I/O APIC input `input` (routed earlier).
pub fn ioapic_mask(input: u8, masked: bool) {
    if IOAPIC_VIRT.load(Ordering::Relaxed) == 0 || input as u64 >= IOAPIC_INPUTS.load(Ordering::Relaxed) {
        return;
    }
    let reg = IOAPIC_REG_REDIRECT + 2 * input as u32;
    let low = ioapic_read(reg);
    ioapic_write(reg, if masked { low | REDIRECT_MASKED } else { low & !REDIRECT_MASKED });
}

/// Measure the APIC timer and the TSC against 10 ms of PIT channel 2.
/// Returns TSC ticks per second.
pub fn calibrate() -> u64 {
    const PIT_HZ: u64 = 1_193_182;
    const MS: u64 = 10;
    let count = (PIT_HZ * MS / 1000) as u16;
    write(REG_TIMER_DIVIDE, 0x3); // divide by 16
                                  // SAFETY: port 0x61 gates PIT channel 2 (speaker off), 0x43/0x42 program
                                  // it in one-shot mode; no other code uses the PIT.
    let (apic_ticks, tsc_ticks) = unsafe {
        let mut gate = Port::<u8>::new(0x61);
        let mut command = Port::<u8>::new(0x43);
        let mut channel2 = Port::<u8>::new(0x42);
        let g = gate.read();
        gate.write((g & !0x02) & !0x01);
        command.write(0b1011_0000); // channel 2, lo/hi, mode 0, binary
        channel2.write(count as u8);
        channel2.write((count >> 8) as u8);
        write(REG_TIMER_INIT, u32::MAX);
        let tsc0 = super::cpu::rdtsc();
        let g = gate.read();
        gate.write(g | 0x01); // start counting
        while gate.read() & 0x20 == 0 {}
        let tsc1 = super::cpu::rdtsc();
        let current = read(REG_TIMER_CURRENT);
        write(REG_TIMER_INIT, 0);
        (u32::MAX - current, tsc1 - tsc0)
    };
    TICKS_PER_MS.store((apic_ticks as u64 / MS).max(1), Ordering::Relaxed);
    tsc_ticks * (1000 / MS)
}

/// Arm the timer to interrupt once, `tsc_ticks` TSC ticks from now (the
/// slot vector reprograms it at every slot end and save deadline).
pub fn arm_oneshot(tsc_ticks: u64, tsc_hz: u64) {
    let apic_per_ms = TICKS_PER_MS.load(Ordering::Relaxed) as u128;
    let ticks = (tsc_ticks as u128 * apic_per_ms * 1000 / tsc_hz.max(1) as u128).clamp(1, u32::MAX as u128);
    write(REG_TIMER_DIVIDE, 0x3);
    write(REG_LVT_TIMER, super::trap::TIMER_VECTOR as u32);
    write(REG_TIMER_INIT, ticks as u32);
}

/// Signal end of interrupt.
pub fn eoi() {
    write(REG_EOI, 0);
}
