//! The one ABI crate both sides link: the exokernel and every library OS.
//!
//! Design principles:
//! * Everything that crosses the user/kernel boundary is defined here once:
//!   system-call numbers and error codes ([`syscall`]), the frames the kernel
//!   writes for upcalls ([`upcall`]), the start record a libOS receives and
//!   the repossession vector ([`start`]), the boot archive and manifest
//!   ([`archive`], [`manifest`]), the packet-filter language and its
//!   encoding ([`filter`]), the network binding's ring layout ([`net`]), and
//!   the QEMU exit codes a run ends with ([`exit`]), and the bytes of the
//!   measurement markers the TLB-model plugin recognises ([`marker`]).
//! * Only types, numbers, formats and pure logic: no system call, no
//!   assembly, no `unsafe`. The code that runs in a libOS (the user-side
//!   system-call stubs, the entry point, heap, console, upcall trampolines
//!   and the helpers built on them) is the crate `libos-runtime`
//!   (`shared-abi/runtime/`), which builds on this one; the kernel never
//!   links it.
//! * Pure data and logic is plain Rust, unit-tested on the host.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod archive;
pub mod exit;
pub mod filter;
pub mod manifest;
pub mod marker;
pub mod net;
pub mod start;
pub mod syscall;
pub mod upcall;

/// Size of a page (and of a physical frame) in bytes.
pub const PAGE_SIZE: u64 = 4096;

/// First address above the user half: environments own `[0, USER_TOP)`.
pub const USER_TOP: u64 = 0x0000_8000_0000_0000;
