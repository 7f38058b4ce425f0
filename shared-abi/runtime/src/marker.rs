//! Measurement markers in a libOS: `begin::<TAG>()` and `end::<TAG>()`
//! emit the magic no-op of [`shared_abi::marker`], which the TLB-model
//! QEMU plugin (`xtask/tlb-plugin`) turns into per-tag counts of
//! instructions and modelled TLB misses. Without the plugin they are
//! 8-byte no-ops (one instruction each).

use shared_abi::marker::{displacement, MarkerOp};

/// Start a measured region of `TAG`.
#[inline(always)]
pub fn begin<const TAG: u16>() {
    // SAFETY: the bytes are `nopl disp32(%rax,%rax,1)`, a no-op that
    // reads no memory (the address is only computed), writes no register
    // and leaves the flags alone. No `nomem`: the compiler keeps memory
    // operations on their side of the marker.
    unsafe {
        core::arch::asm!(
            ".byte 0x0f, 0x1f, 0x84, 0x00",
            ".4byte {d}",
            d = const displacement(MarkerOp::Begin, TAG),
            options(nostack, preserves_flags)
        )
    }
}

/// End the measured region of `TAG`.
#[inline(always)]
pub fn end<const TAG: u16>() {
    // SAFETY: as in `begin`: a no-op instruction.
    unsafe {
        core::arch::asm!(
            ".byte 0x0f, 0x1f, 0x84, 0x00",
            ".4byte {d}",
            d = const displacement(MarkerOp::End, TAG),
            options(nostack, preserves_flags)
        )
    }
}
