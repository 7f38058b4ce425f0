//! libos-unix's policy logic: plain Rust, host-tested, linked into the libOS program
//! (pagers, process schedulers, the user-level thread table and the HTTP
//! server's logic).
//!
//! Design principles:
//! * The exokernel supplies mechanism (frames, mappings, accessed bits,
//!   revocation); every policy choice lives here, in the libOS.
//! * A policy is a trait with several implementations, chosen by name from
//!   the manifest (`pager=clock`), so swapping one is a line of
//!   configuration.
//! * Policies are pure: no system calls and no `unsafe`. The program
//!   (`main.rs`) feeds them what the kernel reports; the host unit tests
//!   feed them simulated workloads and run every implementation against
//!   the same trait tests.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod fs;
pub mod http;
pub mod pager;
pub mod sched;
pub mod uthread;
