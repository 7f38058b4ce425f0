//! `kcore`: the exokernel's pure logic (Hubris's kerncore is the model).
//!
//! Everything here is plain Rust with no hardware access and no `unsafe`:
//! the data structures behind the secure bindings (frame keys and the grant
//! table, kernel-memory charges, the reverse map, TLB slots, the software
//! TLB, the slot vector, packet filters) and the decisions the kernel makes
//! with them. The kernel binary (`exokernel/src`) links it and wires it to
//! the hardware through its `arch` module; `cargo test -p kcore` runs its
//! unit tests on the host.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod cpu;
pub mod filter;
pub mod frames;
pub mod keys;
pub mod kmem;
pub mod revoke;
pub mod rmap;
pub mod slots;
pub mod slotvec;
pub mod stlb;
pub mod upcall;
pub mod usercheck;
