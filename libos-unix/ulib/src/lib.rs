//! ulib: the Unix library of libos-unix, what libc was to ExOS. A Unix
//! process is an exokernel environment; everything that makes it a
//! process is here, at user level, on the kernel's secure bindings:
//!
//! * [`process`]: the entry point every program links ([`program_main!`]),
//!   the page-fault handler that demand-zeroes heap and stack, resolves
//!   copy-on-write and maps again what the kernel's caches dropped (from
//!   the process's own page table, [`pmap`]), and exit, wait, kill,
//!   getpid and getppid;
//! * [`fork`]: a child environment whose address space the parent builds
//!   from its own page table: text co-owned, data copied, heap and stack
//!   shared copy-on-write;
//! * [`spawn`]: a new environment from a static ELF program in the boot
//!   archive (exec, and how init starts the first program);
//! * [`table`]: the process table every process maps (ExOS kept it in
//!   shared pages too), over [`proctab`].
//!
//! A program is a `main(args) -> i32` and a line in the manifest's `files`:
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//! ulib::program_main!(main);
//! fn main(args: &[&str]) -> i32 { ulib::println!("hello"); 0 }
//! ```
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod cli;
pub mod env;
pub mod errno;
pub mod fork;
pub mod fsproto;
pub mod io;
pub mod layout;
pub mod pmap;
pub mod process;
pub mod proctab;
pub mod spawn;
pub mod table;

pub use errno::Errno;
pub use libos_runtime as runtime;
pub use libos_runtime::{print, println};

/// Print to standard output (descriptor 1: the console, a file or a pipe).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::io::print_to(1, format_args!($($arg)*)) };
}

/// Print a line to standard output.
#[macro_export]
macro_rules! outln {
    () => { $crate::out!("\n") };
    ($($arg:tt)*) => { $crate::io::print_to(1, format_args!("{}\n", format_args!($($arg)*))) };
}

/// Print a line to standard error (descriptor 2).
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => { $crate::io::print_to(2, format_args!("{}\n", format_args!($($arg)*))) };
}
pub use proctab::WaitStatus;

/// Define a Unix program's main function: `fn(&[&str]) -> i32`, given
/// its arguments (the program's name first); its return value is the exit
/// status its parent's `wait` reports.
#[macro_export]
macro_rules! program_main {
    ($main:path) => {
        $crate::runtime::libos_main!(__ulib_program_main);
        fn __ulib_program_main(env: &$crate::runtime::rt::Env) -> i32 {
            $crate::process::start(env, $main)
        }
    };
}
