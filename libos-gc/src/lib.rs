//! libos-gc's collector and workloads: plain Rust, host-tested, linked
//! into the libOS program.
//!
//! Design principles:
//! * The exokernel gives the collector the MMU's own help: the dirty bit of
//!   each page, read and cleared with `map_query`. The old generation's
//!   write barrier is that bit, so the mutator runs no barrier code; a
//!   software card-marking barrier is the same collector with one type
//!   parameter changed, for comparison ([`heap::Barrier`]).
//! * The collector never touches memory, maps a page or asks the MMU except
//!   through [`heap::Memory`]: the libOS implements it with keyed frames
//!   and system calls, the host tests with an array that plays the MMU
//!   ([`sim`]).
//! * Nothing reachable is ever freed, and the workloads check it: a shadow
//!   count of the objects the mutator holds, against the collector's count
//!   and a verifying walk, and a checksum in every object ([`workload`]).
//! * No `unsafe`: the one place that turns addresses into memory accesses
//!   is the program's `Memory` implementation.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod heap;
pub mod sim;
pub mod workload;

#[cfg(test)]
mod tests;
