//! Host-testable pure logic of the exokernel.
//!
//! Everything here is plain Rust with no hardware access and no `unsafe`:
//! it is compiled into the kernel binary and unit-tested on the host with
//! `cargo test -p exokernel --lib`. The binary (`main.rs`) wires it to the
//! hardware through the `arch` module.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod filter;
pub mod frames;
pub mod keys;
pub mod kmem;
pub mod rmap;
pub mod slots;
pub mod slotvec;
pub mod stlb;
pub mod usercheck;
