//! `exotlb`: a QEMU TCG plugin that models an x86-64 TLB (after Skylake)
//! under the guest, and counts executed guest instructions and TLB misses
//! between the guest's measurement markers (`shared_abi::marker`).
//!
//! Design principles:
//! * The model ([`model`]), the instruction decoder ([`decode`]) and the
//!   plugin's state machine ([`plugin`]) are plain Rust, tested on the
//!   host with synthetic traces; `qemu.rs` is the only FFI, and holds all
//!   of the crate's `unsafe`.
//! * QEMU 7.2's plugin API (version 1) cannot read registers or guest
//!   memory, so what the guest tells the plugin is in instruction bytes
//!   (markers with constant tags), and what the plugin cannot see
//!   (`invlpg`'s operand, the G bit) is modelled by stated rules; see
//!   `docs/TLB_MODEL.md`.
//! * A separate tool: built by `cargo xtask` as a host shared library,
//!   loaded with `qemu-system-x86_64 -plugin libexotlb.so,out=FILE`; never
//!   linked into the kernel or a libOS.

pub mod decode;
pub mod model;
pub mod plugin;
#[cfg(not(test))]
mod qemu;
