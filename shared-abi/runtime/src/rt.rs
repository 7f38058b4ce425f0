//! The minimal libOS runtime, written once for every libOS: entry point,
//! heap over the memory the kernel granted, console macros, upcall
//! trampolines, and a panic handler that reports and ends the environment.
//!
//! A libOS program is `#![no_std] #![no_main]`, depends on
//! `libos-runtime`, and names its main function with
//! [`libos_main!`](crate::libos_main); it prints with
//! [`println!`](crate::println).
//!
//! The entry point, the global allocator and the panic handler exist only
//! on the bare-metal target (`target_os = "none"`), so a libOS's policy
//! library that depends on this crate still builds and runs its unit tests
//! on the host.

#[cfg(target_os = "none")]
use crate::start::{StartInfo, START_MAGIC};
use crate::syscall;
use crate::upcall::{offsets, UpcallFrame, UpcallKind, UpcallTable};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicUsize, Ordering};
#[cfg(target_os = "none")]
use linked_list_allocator::LockedHeap;

#[cfg(target_os = "none")]
#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// What a libOS knows about itself at start.
pub struct Env {
    pub id: u64,
    pub env_count: u64,
    pub name: &'static str,
    pub args: &'static str,
    /// `key=value` lines: the manifest keys the kernel did not interpret.
    pub params: &'static str,
    pub heap_base: u64,
    pub heap_len: u64,
    pub tsc_hz: u64,
    /// Pool frames this environment may hold for sure.
    pub quota_frames: u64,
    /// Its TLB slots (ordinary mappings the hardware sees at once).
    pub tlb_slots: u64,
}

impl Env {
    /// A manifest policy key, such as `pager` or `scheduler`.
    pub fn param(&self, key: &str) -> Option<&'static str> {
        self.params.lines().filter_map(|line| line.split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The whitespace-separated words of `args`.
    pub fn arg_words(&self) -> impl Iterator<Item = &'static str> {
        self.args.split_whitespace()
    }
}

extern "Rust" {
    fn __libos_main(env: &Env) -> i32;
}

#[cfg(target_os = "none")]
core::arch::global_asm!(
    ".globl _start",
    "_start:",
    "and rsp, -16",
    "call {start}",
    "ud2",
    start = sym rt_start,
);

/// # Safety
/// Called once, by `_start`, with the kernel's start record in `rdi`.
#[cfg(target_os = "none")]
unsafe extern "C" fn rt_start(info: *const StartInfo) -> ! {
    // SAFETY: the kernel maps the start page before entry and never unmaps it.
    let info = unsafe { &*info };
    if info.magic != START_MAGIC {
        syscall::exit(-2);
    }
    // SAFETY: the kernel mapped [heap_base, heap_base + heap_len) for us alone.
    unsafe { HEAP.lock().init(info.heap_base as *mut u8, info.heap_len as usize) };
    // SAFETY: the strings live on the start page, which stays mapped read-only.
    let text = |ptr: u64, len: u64| unsafe {
        core::str::from_utf8(core::slice::from_raw_parts(ptr as *const u8, len as usize)).unwrap_or("")
    };
    let env = Env {
        id: info.env_id,
        env_count: info.env_count,
        name: text(info.name_ptr, info.name_len),
        args: text(info.args_ptr, info.args_len),
        params: text(info.params_ptr, info.params_len),
        heap_base: info.heap_base,
        heap_len: info.heap_len,
        tsc_hz: info.tsc_hz,
        quota_frames: info.quota_frames,
        tlb_slots: info.tlb_slots,
    };
    // SAFETY: `libos_main!` defines this symbol in every libOS program.
    let code = unsafe { __libos_main(&env) };
    syscall::exit(code)
}

/// Console writer: buffers up to a line, then one `console_write` call.
pub struct Console {
    buf: [u8; 256],
    len: usize,
}

impl Console {
    pub const fn new() -> Self {
        Console { buf: [0; 256], len: 0 }
    }

    pub fn flush(&mut self) {
        if self.len > 0 {
            let _ = syscall::console_write(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl Default for Console {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &byte in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = byte;
            self.len += 1;
            if byte == b'\n' {
                self.flush();
            }
        }
        Ok(())
    }
}

/// What [`print!`](crate::print) and [`println!`](crate::println) call.
#[doc(hidden)]
pub fn _print(args: fmt::Arguments) {
    let mut console = Console::new();
    let _ = console.write_fmt(args);
    console.flush();
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    match info.location() {
        Some(at) => _print(format_args!("panic: {} (at {}:{})\n", info.message(), at.file(), at.line())),
        None => _print(format_args!("panic: {}\n", info.message())),
    }
    syscall::exit(101)
}

// ---------------------------------------------------------------------------
// Upcalls

/// A libOS upcall handler. It may edit the frame; returning resumes the
/// interrupted code from the (edited) frame.
pub type Handler = fn(&mut UpcallFrame);

static HANDLERS: [AtomicUsize; 5] = [const { AtomicUsize::new(0) }; 5];
static UPCALL_STACK: AtomicUsize = AtomicUsize::new(0);
static UPCALL_STACK_SIZE: AtomicUsize = AtomicUsize::new(UPCALL_STACK_LEN);
const UPCALL_STACK_LEN: usize = 32 * 1024;

/// Run handlers on `[base, base + len)` instead of a stack from the heap
/// (a libOS whose heap is demand-paged by the handlers themselves needs a
/// stack that is mapped before the first upcall). Takes effect at the next
/// handler registration.
///
/// # Safety
/// The range must be mapped writable, 16-byte aligned, at least 8 KiB, and
/// used for nothing else while handlers are registered.
pub unsafe fn use_upcall_stack(base: u64, len: u64) {
    UPCALL_STACK.store(base as usize, Ordering::SeqCst);
    UPCALL_STACK_SIZE.store(len as usize, Ordering::SeqCst);
}

/// Install (or replace) the handler for one kind of upcall and register
/// the runtime's trampoline for it with the kernel.
///
/// Protected entries use their own convention: install them with
/// [`set_pct_handler`]; `ProtectedEntry` here is refused.
pub fn set_handler(kind: UpcallKind, handler: Handler) -> Result<(), syscall::Error> {
    if kind == UpcallKind::ProtectedEntry {
        return Err(syscall::Error::InvalidArgument);
    }
    let previous = HANDLERS[kind as usize - 1].swap(handler as usize, Ordering::SeqCst);
    let result = register();
    if result.is_err() {
        // The kernel kept the old table: forget the handler too.
        HANDLERS[kind as usize - 1].store(previous, Ordering::SeqCst);
    }
    result
}

/// A protected-entry handler: runs in its own activation when another
/// environment calls (`pct_call`) or sends (`pct_send`, `is_async`); its
/// return value is the reply.
pub type PctHandler = fn(caller: u64, msg: [u64; 4], is_async: bool) -> [u64; 4];

static PCT_HANDLER: AtomicUsize = AtomicUsize::new(0);

/// Accept protected control transfers with `handler`.
pub fn set_pct_handler(handler: PctHandler) -> Result<(), syscall::Error> {
    let previous = PCT_HANDLER.swap(handler as usize, Ordering::SeqCst);
    let result = register();
    if result.is_err() {
        PCT_HANDLER.store(previous, Ordering::SeqCst);
    }
    result
}

/// Tell the kernel the entry points for every handler installed.
fn register() -> Result<(), syscall::Error> {
    if UPCALL_STACK.load(Ordering::SeqCst) == 0 {
        let layout = core::alloc::Layout::from_size_align(UPCALL_STACK_LEN, 16).expect("valid layout");
        // SAFETY: the layout has a nonzero size; the block is never freed.
        let stack = unsafe { alloc::alloc::alloc_zeroed(layout) } as usize;
        if stack == 0 {
            return Err(syscall::Error::NoMemory);
        }
        UPCALL_STACK.store(stack, Ordering::SeqCst);
    }
    let table = upcall_table();
    // SAFETY: the trampolines handle what the kernel sends them and the stack is ours.
    unsafe { syscall::set_upcalls(&table) }.map(|_| ())
}

/// The upcall table for the handlers installed now (what `register`
/// gives the kernel; a forked child starts with the same one).
pub fn upcall_table() -> UpcallTable {
    let entry = |k: UpcallKind| {
        if HANDLERS[k as usize - 1].load(Ordering::SeqCst) != 0 {
            upcall_entry as *const () as u64
        } else {
            0
        }
    };
    let protected_entry = if PCT_HANDLER.load(Ordering::SeqCst) != 0 { pct_entry as *const () as u64 } else { 0 };
    UpcallTable {
        exception_entry: entry(UpcallKind::Exception),
        page_fault_entry: entry(UpcallKind::PageFault),
        interrupt_entry: entry(UpcallKind::Interrupt),
        protected_entry,
        revocation_entry: entry(UpcallKind::Revocation),
        stack_base: UPCALL_STACK.load(Ordering::SeqCst) as u64,
        stack_len: UPCALL_STACK_SIZE.load(Ordering::SeqCst) as u64,
    }
}

/// Where a protected-entry activation starts: the kernel enters with the
/// caller's id and the message in the argument registers (`flags` bit 0:
/// asynchronous), on a fresh stack.
extern "C" fn pct_entry(caller: u64, m0: u64, m1: u64, m2: u64, m3: u64, flags: u64) -> ! {
    let handler = PCT_HANDLER.load(Ordering::SeqCst);
    let reply = if handler == 0 {
        [0; 4]
    } else {
        // SAFETY: only `set_pct_handler` stores into PCT_HANDLER, always a `PctHandler`.
        let handler: PctHandler = unsafe { core::mem::transmute::<usize, PctHandler>(handler) };
        handler(caller, [m0, m1, m2, m3], flags & 1 != 0)
    };
    syscall::pct_reply(reply)
}

extern "C" fn dispatch(frame: &mut UpcallFrame) {
    let handler =
        UpcallKind::from_raw(frame.kind).map(|kind| HANDLERS[kind as usize - 1].load(Ordering::SeqCst)).unwrap_or(0);
    if handler == 0 {
        _print(format_args!("upcall kind {} with no handler\n", frame.kind));
        syscall::exit(102);
    }
    // SAFETY: only `set_handler` stores into HANDLERS, always a `Handler`.
    let handler: Handler = unsafe { core::mem::transmute::<usize, Handler>(handler) };
    handler(frame);
}

extern "C" {
    fn upcall_entry();
}

// The trampoline: the kernel enters with rsp = rdi = frame (16-aligned).
// Call the Rust dispatcher, then resume the interrupted code from the
// frame: rbx, rax, rflags and rip are staged on the interrupted stack (32
// bytes below its rsp; libOS code has no red zone); every other register
// is loaded while rsp still points into the upcall stack, so an upcall
// that nests at any point here is placed below this frame and cannot
// overwrite it; switching rsp is the last step before the pops.
core::arch::global_asm!(
    ".globl upcall_entry",
    "upcall_entry:",
    "mov rbx, rdi",
    "call {dispatch}",
    "mov rax, [rbx + {rsp}]",
    "sub rax, 32",
    "mov rcx, [rbx + {rip}]",
    "mov [rax + 24], rcx",
    "mov rcx, [rbx + {rflags}]",
    "mov [rax + 16], rcx",
    "mov rcx, [rbx + {rax}]",
    "mov [rax + 8], rcx",
    "mov rcx, [rbx + {rbx}]",
    "mov [rax], rcx",
    "mov rcx, [rbx + {rcx}]",
    "mov rdx, [rbx + {rdx}]",
    "mov rsi, [rbx + {rsi}]",
    "mov rdi, [rbx + {rdi}]",
    "mov rbp, [rbx + {rbp}]",
    "mov r8, [rbx + {r8}]",
    "mov r9, [rbx + {r9}]",
    "mov r10, [rbx + {r10}]",
    "mov r11, [rbx + {r11}]",
    "mov r12, [rbx + {r12}]",
    "mov r13, [rbx + {r13}]",
    "mov r14, [rbx + {r14}]",
    "mov r15, [rbx + {r15}]",
    "mov rsp, rax",
    "pop rbx",
    "pop rax",
    "popfq",
    "ret",
    dispatch = sym dispatch,
    rsp = const offsets::RSP,
    rip = const offsets::RIP,
    rflags = const offsets::RFLAGS,
    rax = const offsets::RAX,
    rbx = const offsets::RBX,
    rcx = const offsets::RCX,
    rdx = const offsets::RDX,
    rsi = const offsets::RSI,
    rdi = const offsets::RDI,
    rbp = const offsets::RBP,
    r8 = const offsets::R8,
    r9 = const offsets::R9,
    r10 = const offsets::R10,
    r11 = const offsets::R11,
    r12 = const offsets::R12,
    r13 = const offsets::R13,
    r14 = const offsets::R14,
    r15 = const offsets::R15,
);

/// Read the time-stamp counter (instructions under `-icount shift=0`).
#[inline(always)]
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc only reads a counter; CR4.TSD is clear.
    unsafe { core::arch::x86_64::_rdtsc() }
}
