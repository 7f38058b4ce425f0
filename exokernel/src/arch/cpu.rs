//! Small CPU operations: halting, the TSC, control registers, CPUID bits.

use x86_64::instructions::{hlt, interrupts};

/// Disable interrupts and halt forever.
pub fn halt_forever() -> ! {
    interrupts::disable();
    loop {
        hlt();
    }
}

/// Halt with interrupts enabled forever (the kernel's idle loop).
pub fn idle_forever() -> ! {
    loop {
        interrupts::enable_and_hlt();
    }
}

/// Halt until the next interrupt (the timer, armed by the caller), then
/// go on with interrupts off again. The timer handler returns at once for
/// an interrupt taken here in ring 0.
pub fn wait_for_interrupt() {
    interrupts::enable_and_hlt();
    interrupts::disable();
}

/// Read the time-stamp counter.
#[inline(always)]
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Read CR2 (the faulting address of the last page fault).
pub fn cr2() -> u64 {
    x86_64::registers::control::Cr2::read_raw()
}

/// Enable no-execute pages (EFER.NXE) and write protection in ring 0.
pub fn enable_nxe_and_wp() {
    use x86_64::registers::control::{Cr0, Cr0Flags};
    use x86_64::registers::model_specific::{Efer, EferFlags};
    // SAFETY: NXE only adds meaning to bit 63 of page-table entries, which
    // the bootloader already relies on; WP makes the kernel honour
    // read-only pages, which never loosens protection.
    unsafe {
        Efer::update(|f| f.insert(EferFlags::NO_EXECUTE_ENABLE));
        Cr0::update(|f| f.insert(Cr0Flags::WRITE_PROTECT));
    }
}

/// Does the CPU offer process-context identifiers (CPUID.01H:ECX.PCID)?
/// Turn on global pages (CR4.PGE): leaves marked global survive CR3 loads.
/// Setting the bit flushes the whole TLB, so marks made before take effect.
pub fn enable_global_pages() {
    use x86_64::registers::control::{Cr4, Cr4Flags};
    // SAFETY: only the kernel half is marked global, and it is the same in
    // every address space and never changes after boot, so no entry kept
    // across a CR3 load can be stale.
    unsafe { Cr4::update(|f| f.insert(Cr4Flags::PAGE_GLOBAL)) };
}

pub fn has_pcid() -> bool {
    let leaf = core::arch::x86_64::__cpuid(1);
    leaf.ecx & (1 << 17) != 0
}

/// Turn on CR4.PCIDE (only call when `has_pcid`, with CR3's PCID field 0).
pub fn enable_pcid() {
    use x86_64::registers::control::{Cr4, Cr4Flags};
    // SAFETY: the CPU offers PCIDs (checked by the caller) and the current
    // CR3 has PCID 0, the architectural precondition for setting PCIDE.
    unsafe { Cr4::update(|f| f.insert(Cr4Flags::PCID)) };
}
