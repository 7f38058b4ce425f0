//! Hostile: a libOS that attacks the kernel through its ABI. Each mode
//! proves the kernel answers with an error code or ends only this env.
//!
//! Modes (the manifest's `args`): `garbage` passes bad values to every
//! system call; `kernel-read` / `kernel-write` / `kernel-jump` touch kernel
//! memory with no handler; `bad-upcall-stack` registers an upcall stack the
//! kernel cannot write and then faults; `panic` panics, so the runtime's
//! panic handler reports and ends the env.
#![no_std]
#![no_main]

extern crate alloc;

use libos_runtime::println;
use libos_runtime::rt::Env;
use libos_runtime::syscall::{decode, nr, raw6, Error};
use libos_runtime::upcall::{UpcallKind, UpcallTable};

libos_runtime::libos_main!(main);

/// An address in the kernel half.
const KERNEL_ADDR: u64 = 0xffff_8000_0000_0000;

fn main(env: &Env) -> i32 {
    match env.args.trim() {
        "garbage" => garbage(),
        "kernel-read" => {
            println!("reading kernel memory at {:#x}", KERNEL_ADDR);
            // SAFETY: none; this access is meant to fault and end the env.
            let value = unsafe { core::ptr::read_volatile(KERNEL_ADDR as *const u64) };
            println!("UNEXPECTED: read {:#x} from kernel memory", value);
            1
        }
        "kernel-write" => {
            println!("writing kernel memory at {:#x}", KERNEL_ADDR);
            // SAFETY: none; this access is meant to fault and end the env.
            unsafe { core::ptr::write_volatile(KERNEL_ADDR as *mut u64, 0xdead) };
            println!("UNEXPECTED: wrote kernel memory");
            1
        }
        "kernel-jump" => {
            println!("jumping into the kernel half");
            // SAFETY: none; the jump is meant to fault and end the env.
            let f: extern "C" fn() = unsafe { core::mem::transmute(KERNEL_ADDR as usize) };
            f();
            println!("UNEXPECTED: returned from the kernel half");
            1
        }
        "bad-upcall-stack" => {
            let table = UpcallTable {
                exception_entry: 0x40_1000,
                page_fault_entry: 0x40_1000,
                interrupt_entry: 0,
                protected_entry: 0,
                revocation_entry: 0,
                // The start page: mapped, but read-only.
                stack_base: libos_runtime::start::START_INFO_ADDR,
                stack_len: 4096,
            };
            // SAFETY: deliberately hostile; the kernel must refuse to use it.
            let r = unsafe { libos_runtime::syscall::set_upcalls(&table) };
            println!("set_upcalls with a read-only stack -> {:?}", r.map_err(Error::name));
            // SAFETY: none; the fault is meant to end the env.
            unsafe { core::ptr::read_volatile(0x10 as *const u64) };
            println!("UNEXPECTED: survived a fault with an unwritable upcall stack");
            1
        }
        "panic" => {
            let depth = env.args.len();
            panic!("deliberate panic at depth {}", depth);
        }
        other => {
            println!("unknown mode {:?}", other);
            2
        }
    }
}

struct Attack {
    name: &'static str,
    number: u64,
    args: [u64; 6],
}

fn garbage() -> i32 {
    let stack_var = 0u64;
    let misaligned = (&stack_var as *const u64 as u64) + 1;
    let table_in_kernel = KERNEL_ADDR;
    let heap = alloc::vec![0u8; 64].leak();
    let bogus_table = UpcallTable {
        exception_entry: KERNEL_ADDR,
        page_fault_entry: 0,
        interrupt_entry: 0,
        protected_entry: 0,
        revocation_entry: 0,
        stack_base: heap.as_ptr() as u64,
        stack_len: 64,
    };
    let stats_len = core::mem::size_of::<libos_runtime::syscall::KernelStats>() as u64;
    let window = libos_runtime::start::DYNAMIC_BASE;
    let attacks = [
        Attack { name: "unknown-number", number: nr::COUNT, args: [0; 6] },
        Attack { name: "unknown-huge-number", number: u64::MAX, args: [1; 6] },
        Attack { name: "unknown-negative-number", number: (-5i64) as u64, args: [0; 6] },
        Attack { name: "console-null", number: nr::CONSOLE_WRITE, args: [0, 16, 0, 0, 0, 0] },
        Attack { name: "console-kernel-ptr", number: nr::CONSOLE_WRITE, args: [KERNEL_ADDR, 16, 0, 0, 0, 0] },
        Attack { name: "console-huge-len", number: nr::CONSOLE_WRITE, args: [0x40_0000, 1 << 40, 0, 0, 0, 0] },
        Attack {
            name: "console-negative-len",
            number: nr::CONSOLE_WRITE,
            args: [0x40_0000, (-1i64) as u64, 0, 0, 0, 0],
        },
        Attack { name: "console-wrapping", number: nr::CONSOLE_WRITE, args: [u64::MAX - 8, 4000, 0, 0, 0, 0] },
        Attack { name: "console-unmapped", number: nr::CONSOLE_WRITE, args: [0x7000_0000_0000, 16, 0, 0, 0, 0] },
        Attack {
            name: "console-straddles-top",
            number: nr::CONSOLE_WRITE,
            args: [libos_runtime::USER_TOP - 8, 16, 0, 0, 0, 0],
        },
        Attack { name: "set-upcalls-null", number: nr::SET_UPCALLS, args: [0; 6] },
        Attack { name: "set-upcalls-kernel-ptr", number: nr::SET_UPCALLS, args: [table_in_kernel, 0, 0, 0, 0, 0] },
        Attack { name: "set-upcalls-misaligned", number: nr::SET_UPCALLS, args: [misaligned, 0, 0, 0, 0, 0] },
        Attack {
            name: "set-upcalls-kernel-entry",
            number: nr::SET_UPCALLS,
            args: [&bogus_table as *const _ as u64, 0, 0, 0, 0, 0],
        },
        Attack { name: "stats-null", number: nr::STATS, args: [0, stats_len, 0, 0, 0, 0] },
        Attack { name: "stats-kernel-ptr", number: nr::STATS, args: [KERNEL_ADDR, stats_len, 0, 0, 0, 0] },
        Attack { name: "stats-bad-len", number: nr::STATS, args: [misaligned - 1, 7, 0, 0, 0, 0] },
        Attack { name: "stats-misaligned", number: nr::STATS, args: [misaligned, stats_len, 0, 0, 0, 0] },
        Attack {
            name: "stats-readonly-page",
            number: nr::STATS,
            args: [libos_runtime::start::START_INFO_ADDR, stats_len, 0, 0, 0, 0],
        },
        Attack { name: "stats-code-page", number: nr::STATS, args: [0x40_1000, stats_len, 0, 0, 0, 0] },
        Attack {
            name: "frame-alloc-bad-rights",
            number: nr::FRAME_ALLOC,
            args: [0, 0x100, heap.as_ptr() as u64, 0, 0, 0],
        },
        Attack {
            name: "frame-alloc-misaligned-frame",
            number: nr::FRAME_ALLOC,
            args: [0x12345, 1, heap.as_ptr() as u64, 0, 0, 0],
        },
        Attack { name: "frame-alloc-null-out", number: nr::FRAME_ALLOC, args: [0, 1, 0, 0, 0, 0] },
        Attack { name: "frame-free-garbage-key", number: nr::FRAME_FREE, args: [0xdead, 0xbeef, 0, 0, 0, 0] },
        Attack {
            name: "frame-share-to-missing-env",
            number: nr::FRAME_SHARE,
            args: [1, 2, 999, 1, heap.as_ptr() as u64, 0],
        },
        Attack {
            name: "frame-query-garbage-key",
            number: nr::FRAME_QUERY,
            args: [u64::MAX, u64::MAX, heap.as_ptr() as u64, 0, 0, 0],
        },
        Attack { name: "map-garbage-key", number: nr::MAP, args: [window, 7, 7, 0, 0, 0] },
        Attack { name: "map-kernel-va", number: nr::MAP, args: [KERNEL_ADDR, 7, 7, 0, 0, 0] },
        Attack { name: "unmap-unmapped", number: nr::UNMAP, args: [window, 0, 0, 0, 0, 0] },
        Attack { name: "map-query-kernel-va", number: nr::MAP_QUERY, args: [KERNEL_ADDR, 1, 0, 0, 0, 0] },
        Attack { name: "guarantee-unmapped", number: nr::GUARANTEE, args: [window, 1, 0, 0, 0, 0] },
        Attack { name: "key-bench-garbage-key", number: nr::KEY_BENCH, args: [1, 2, 10, 0, 0, 0] },
        Attack { name: "key-bench-huge-count", number: nr::KEY_BENCH, args: [1, 2, u64::MAX, 0, 0, 0] },
        Attack { name: "slot-alloc-out-of-range", number: nr::SLOT_ALLOC, args: [1 << 40, 0, 0, 0, 0, 0] },
        Attack { name: "slot-free-garbage-key", number: nr::SLOT_FREE, args: [u64::MAX, 0, 0, 0, 0, 0] },
        Attack { name: "pct-call-missing-env", number: nr::PCT_CALL, args: [u64::MAX, 1, 2, 3, 4, 0] },
        Attack { name: "pct-send-missing-env", number: nr::PCT_SEND, args: [0, 1, 2, 3, 4, 0] },
        Attack { name: "pct-reply-without-call", number: nr::PCT_REPLY, args: [1, 2, 3, 4, 0, 0] },
        Attack { name: "env-info-kernel-ptr", number: nr::ENV_INFO, args: [KERNEL_ADDR, 0, 0, 0, 0, 0] },
        Attack { name: "env-info-null", number: nr::ENV_INFO, args: [0, 0, 0, 0, 0, 0] },
        Attack {
            name: "net-info-kernel-ptr",
            number: libos_runtime::net::nr::NET_INFO,
            args: [KERNEL_ADDR, 0, 0, 0, 0, 0],
        },
        Attack {
            name: "demux-bench-no-filters",
            number: libos_runtime::net::nr::DEMUX_BENCH,
            args: [0, 0, 10, 0, 0, 0],
        },
        Attack {
            name: "demux-bench-huge",
            number: libos_runtime::net::nr::DEMUX_BENCH,
            args: [u64::MAX, 1, u64::MAX, 0, 0, 0],
        },
        Attack {
            name: "net-rx-ring-kernel",
            number: libos_runtime::net::nr::NET_RX_RING,
            args: [KERNEL_ADDR, 1 << 20, 0, 0, 0, 0],
        },
        Attack {
            name: "net-filter-garbage",
            number: libos_runtime::net::nr::NET_FILTER_INSTALL,
            args: [heap.as_ptr() as u64, 64, 0, 0, 0, 0],
        },
        Attack {
            name: "net-filter-remove-garbage",
            number: libos_runtime::net::nr::NET_FILTER_REMOVE,
            args: [u64::MAX, 0, 0, 0, 0, 0],
        },
        Attack { name: "net-tx-forged-key", number: libos_runtime::net::nr::NET_TX, args: [1, 2, 0, 64, 0, 0] },
    ];
    let mut refused = 0;
    for attack in &attacks {
        // SAFETY: every argument is garbage on purpose; the kernel checks them.
        let result = decode(unsafe {
            raw6(
                attack.number,
                attack.args[0],
                attack.args[1],
                attack.args[2],
                attack.args[3],
                attack.args[4],
                attack.args[5],
            )
        });
        match result {
            Err(error) => {
                refused += 1;
                println!("attack {} -> {}", attack.name, error.name());
            }
            Ok(value) => println!("attack {} -> UNEXPECTED success {}", attack.name, value),
        }
    }
    // A valid call still works after all that.
    let ok = libos_runtime::syscall::console_write(b"").is_ok() && libos_runtime::syscall::stats().is_ok();
    println!("garbage: {} of {} attacks refused, kernel still answers: {}", refused, attacks.len(), ok);
    let _ = UpcallKind::Exception;
    if refused == attacks.len() && ok {
        0
    } else {
        1
    }
}
