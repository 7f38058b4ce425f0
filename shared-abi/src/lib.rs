//! The one ABI crate both sides link: the exokernel and every library OS.
//!
//! Design principles:
//! * Everything that crosses the user/kernel boundary is defined here once:
//!   system-call numbers and error codes ([`syscall`]), the frames the kernel
//!   writes for upcalls ([`upcall`]), the start record a libOS receives
//!   ([`start`]), the boot archive and manifest ([`archive`], [`manifest`]),
//!   the packet-filter language and its encoding ([`filter`]), and the QEMU
//!   exit codes a run ends with ([`exit`]).
//! * No libOS hand-rolls a system call: the user stubs live in [`syscall`].
//! * The minimal libOS runtime (entry, upcall trampolines, heap, console,
//!   panic handler) is written once in [`rt`], behind the `runtime` feature,
//!   which only libOS programs enable.
//! * Pure data and logic is plain Rust, unit-tested on the host.
#![no_std]
#![cfg_attr(not(feature = "runtime"), forbid(unsafe_code))]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod archive;
pub mod exit;
pub mod filter;
pub mod manifest;
pub mod net;
pub mod start;
pub mod syscall;
pub mod upcall;

#[cfg(feature = "runtime")]
pub mod rt;

/// Size of a page (and of a physical frame) in bytes.
pub const PAGE_SIZE: u64 = 4096;

/// First address above the user half: environments own `[0, USER_TOP)`.
pub const USER_TOP: u64 = 0x0000_8000_0000_0000;
