//! The libOS side of the ABI: everything a library OS links besides its own
//! code. The kernel never links this crate; it links only `shared-abi`.
//!
//! Design principles:
//! * One crate to depend on: the ABI's definitions are re-exported here
//!   ([`archive`], [`exit`], [`filter`], [`manifest`], [`start`], [`upcall`],
//!   [`PAGE_SIZE`], [`USER_TOP`]), and [`syscall`] and [`net`] are
//!   `shared_abi`'s modules of the same name plus the user-side stubs that
//!   make the calls.
//! * The minimal runtime is written once in [`rt`]: the `_start` entry, a
//!   heap over the memory the kernel granted, the console behind
//!   [`print!`]/[`println!`], upcall trampolines and dispatch, the
//!   protected-entry dispatcher and a panic handler. A program names its
//!   main function with [`libos_main!`].
//! * What every libOS would otherwise write again is written once, on top
//!   of the stubs: [`net::RxRing`] (consume the receive ring),
//!   [`net::TxPage`] (a mapped frame to build and send packets in),
//!   [`revocation::RevocationInbox`] (note the kernel's requests in an
//!   upcall, answer them at a safe point), [`revocation::RepossessionReader`]
//!   (what the abort protocol took) and [`frames::alloc_map`] (a frame,
//!   waiting out `Again`, mapped).
//! * The `unsafe` code of the libOS side lives here, each block with its
//!   `// SAFETY:` argument; a libOS needs `unsafe` only to touch memory it
//!   mapped itself or for its own assembly.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

pub mod frames;
pub mod marker;
pub mod net;
pub mod revocation;
pub mod rt;
pub mod syscall;

pub use shared_abi::{archive, exit, filter, manifest, start, upcall, PAGE_SIZE, USER_TOP};

/// Define the libOS's main function: `fn(&Env) -> i32`, its exit code.
///
/// ```ignore
/// libos_runtime::libos_main!(main);
///
/// fn main(env: &libos_runtime::rt::Env) -> i32 {
///     libos_runtime::println!("hello from env {}", env.id);
///     0
/// }
/// ```
#[macro_export]
macro_rules! libos_main {
    ($main:path) => {
        #[no_mangle]
        fn __libos_main(env: &$crate::rt::Env) -> i32 {
            let main: fn(&$crate::rt::Env) -> i32 = $main;
            main(env)
        }
    };
}

/// Print to the console (the kernel prefixes each line with the env name).
/// Formats into a 256-byte buffer on the stack: no allocation.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::rt::_print(format_args!($($arg)*)) };
}

/// Print a line to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::rt::_print(format_args!("{}\n", format_args!($($arg)*))) };
}
