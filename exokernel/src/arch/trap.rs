//! Trap entry and exit: the IDT, the assembly stubs that save a
//! [`TrapFrame`], the `syscall` entry, and the first entry into ring 3.
//!
//! Every entry from ring 3 (exception, interrupt, system call) builds the
//! same [`TrapFrame`] on the trap stack and calls into Rust with a pointer
//! to it. The Rust side may rewrite the frame completely (to resume another
//! environment, or to start an upcall) before the stub restores it.

use super::gdt;
use core::arch::global_asm;
use spin::Once;
use x86_64::registers::model_specific::{Efer, EferFlags, LStar, SFMask, Star};
use x86_64::registers::rflags::RFlags;
use x86_64::structures::idt::InterruptDescriptorTable;
use x86_64::{PrivilegeLevel, VirtAddr};

/// Vector of the local APIC timer.
pub const TIMER_VECTOR: u8 = 32;
/// Vector of the NIC's interrupt line (through the I/O APIC).
pub const NIC_VECTOR: u8 = 0x30;
/// Vector of COM1's receive interrupt (ISA IRQ 4 through the I/O APIC).
pub const CONSOLE_VECTOR: u8 = 0x31;
/// Vector whose handler is a bare `iretq`: the floor for exception dispatch.
pub const BARE_INT_VECTOR: u8 = 0x81;
/// Spurious-interrupt vector of the local APIC.
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// `TrapFrame::vector` value for a system call.
pub const SYSCALL_VECTOR: u64 = 0x100;
/// System-call number answered by the entry stub with an immediate
/// `sysretq`: the floor for the null system call.
pub const BARE_SYSCALL: u64 = 0x7fff_ffff;

pub const USER_CS: u64 = 0x23;
pub const USER_SS: u64 = 0x1b;

/// Register state saved on every entry into the kernel. The layout is
/// fixed by the stubs below: general registers pushed by software, then
/// vector and error code, then the hardware interrupt frame.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl TrapFrame {
    /// A frame that starts ring-3 code at `rip` with stack `rsp` and `rdi` = `arg`.
    pub fn new_user(rip: u64, rsp: u64, arg: u64) -> Self {
        TrapFrame {
            rip,
            rsp,
            rdi: arg,
            cs: USER_CS,
            ss: USER_SS,
            rflags: (RFlags::INTERRUPT_FLAG | RFlags::from_bits_truncate(0x2)).bits(),
            ..TrapFrame::default()
        }
    }

    /// Did the trap come from ring 3?
    #[allow(clippy::wrong_self_convention)] // "came from user mode", not a conversion
    pub fn from_user(&self) -> bool {
        self.cs & 3 == 3
    }

    /// Whatever the kernel wrote into a frame that returns to ring 3, it
    /// returns to ring 3: user selectors, interrupts on, no I/O privilege.
    /// So no handler can make `iretq` raise privilege.
    fn confine_to_user(&mut self) {
        self.cs = USER_CS;
        self.ss = USER_SS;
        let flags = RFlags::from_bits_truncate(self.rflags);
        self.rflags = ((flags | RFlags::INTERRUPT_FLAG) - RFlags::IOPL_HIGH - RFlags::IOPL_LOW - RFlags::NESTED_TASK)
            .bits()
            | 0x2;
    }
}

/// How the syscall stub returns to ring 3.
#[repr(u64)]
pub enum Return {
    /// `sysretq`: same environment, `rip`/`rflags` untouched by the kernel.
    Sysret = 0,
    /// `iretq`: the frame was rewritten (switch, upcall); restores everything.
    Iret = 1,
}

extern "C" {
    fn trap_stub_0();
    fn trap_stub_timer();
    fn trap_stub_48();
    fn trap_stub_49();
    fn trap_stub_spurious();
    fn trap_stub_bare();
    fn syscall_entry();
    fn enter_user_frame(frame: *const TrapFrame) -> !;
}

/// The Rust side of every trap: set by the kernel at init.
pub type TrapHandler = fn(&mut TrapFrame);
/// The Rust side of every system call.
pub type SyscallHandler = fn(&mut TrapFrame) -> Return;

/// What the page-fault stub does after asking the kernel about a
/// not-present fault in the dynamic window (`WindowFaultHandler`).
#[repr(u64)]
pub enum WindowFault {
    /// No software-TLB entry: deliver the upcall from the stub.
    Deliver = 0,
    /// Refilled from the software TLB: resume the faulting instruction.
    Resolved = 1,
    /// Take the general path.
    Slow = 2,
}

/// Asked by the page-fault stub, with the faulting address and error
/// code, before it delivers a fault in the dynamic window: the software
/// TLB may hold the mapping. Runs with only the scratch registers saved.
pub type WindowFaultHandler = fn(u64, u64) -> WindowFault;

static TRAP_HANDLER: Once<TrapHandler> = Once::new();
static WINDOW_FAULT_HANDLER: Once<WindowFaultHandler> = Once::new();

#[no_mangle]
extern "C" fn trap_window_fault(va: u64, error_code: u64) -> u64 {
    match WINDOW_FAULT_HANDLER.get() {
        Some(handler) => handler(va, error_code) as u64,
        None => WindowFault::Slow as u64,
    }
}

/// Scratch words for the fast-upcall stubs (user `rax` and `rcx` while
/// they build the frame). Exceptions enter through interrupt gates, so
/// nothing else runs on the CPU meanwhile; an NMI that lands in the stub
/// came from the kernel and takes the general path, which never touches them.
#[no_mangle]
static mut FAST_SCRATCH: [u64; 2] = [0; 2];
static SYSCALL_HANDLER: Once<SyscallHandler> = Once::new();

#[no_mangle]
extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    let from_user = frame.from_user();
    match TRAP_HANDLER.get() {
        Some(handler) => handler(frame),
        None => panic!("trap {} before the kernel was ready: {:#x?}", frame.vector, frame),
    }
    if from_user {
        frame.confine_to_user();
    }
}

#[no_mangle]
extern "C" fn syscall_dispatch(frame: &mut TrapFrame) -> u64 {
    let how = match SYSCALL_HANDLER.get() {
        Some(handler) => handler(frame),
        None => panic!("syscall before the kernel was ready"),
    };
    // `sysretq` takes its selectors from STAR and its flags from r11 (as
    // the `syscall` instruction saved them): only an `iretq` reads the frame's.
    if matches!(how, Return::Iret) {
        frame.confine_to_user();
    }
    how as u64
}

/// A system call that never switches environments: called straight from
/// the entry stub with the six arguments, returning `rax`.
pub type LightSyscall = extern "C" fn(u64, u64, u64, u64, u64, u64) -> u64;

/// Size of the light-call table (numbers at or above go the full path).
pub const LIGHT_TABLE_LEN: usize = 64;

/// Light handlers by system-call number; 0 = use the full path.
#[no_mangle]
static mut SYSCALL_LIGHT: [u64; LIGHT_TABLE_LEN] = [0; LIGHT_TABLE_LEN];

/// The running environment's fast-upcall state, read by the exception
/// stub. `enabled` is set only when the kernel validated that the whole
/// upcall stack is mapped user-writable by kernel-built mappings a libOS
/// cannot change (outside the dynamic window), so the stub may store to it
/// by virtual address. SMAP stays off, which this relies on.
#[repr(C)]
pub struct FastUpcall {
    pub enabled: u64,
    pub exception_entry: u64,
    pub page_fault_entry: u64,
    pub stack_lo: u64,
    pub stack_hi: u64,
    /// Exceptions (each also an upcall) and page faults taken on the fast path.
    pub exceptions: u64,
    pub page_faults: u64,
    /// The running environment's software-TLB tags (`kcore::stlb::Stlb::tags`:
    /// one word per entry, the page it holds) and index mask; 0: unknown
    /// (the stub asks the kernel).
    pub stlb_tags: u64,
    pub stlb_mask: u64,
    /// Not-present faults in the dynamic window the stub found missing
    /// from the software TLB (counted as STLB misses).
    pub stlb_misses: u64,
}

#[no_mangle]
static mut FAST_UPCALL: FastUpcall = FastUpcall {
    enabled: 0,
    exception_entry: 0,
    page_fault_entry: 0,
    stack_lo: 0,
    stack_hi: 0,
    exceptions: 0,
    page_faults: 0,
    stlb_tags: 0,
    stlb_mask: 0,
    stlb_misses: 0,
};

/// Install the fast-upcall state of the environment about to run (or
/// disable the fast path with `None`). A stack that does not lie in the
/// user half disables it: the stub stores to it with kernel privilege.
pub fn set_fast_upcall(state: Option<(u64, u64, u64, u64)>) {
    let state = state.filter(|&(_, _, lo, hi)| lo < hi && hi <= shared_abi::USER_TOP);
    // SAFETY: single CPU, interrupts off in the kernel: the stub cannot
    // read the fields while they change.
    unsafe {
        let fast = &raw mut FAST_UPCALL;
        match state {
            Some((exception_entry, page_fault_entry, stack_lo, stack_hi)) => {
                (*fast).exception_entry = exception_entry;
                (*fast).page_fault_entry = page_fault_entry;
                (*fast).stack_lo = stack_lo;
                (*fast).stack_hi = stack_hi;
                (*fast).enabled = 1;
            }
            None => {
                // The stubs test the entry itself: zero means "slow path".
                (*fast).enabled = 0;
                (*fast).exception_entry = 0;
                (*fast).page_fault_entry = 0;
            }
        }
    }
}

/// Where the page-fault stub looks for the running environment's software
/// TLB (`None`: nowhere; it asks the kernel). The tag array must stay put
/// while the environment runs (`Stlb::tags` promises it for the STLB's life).
pub fn set_fast_stlb(tags: Option<(*const u64, u64)>) {
    let (ptr, mask) = tags.map_or((0, 0), |(ptr, mask)| (ptr as u64, mask));
    // SAFETY: single CPU, interrupts off in the kernel: the stub cannot
    // read the fields while they change.
    unsafe {
        let fast = &raw mut FAST_UPCALL;
        (*fast).stlb_tags = ptr;
        (*fast).stlb_mask = mask;
    }
}

/// Software-TLB misses the page-fault stub found by itself.
pub fn fast_stlb_misses() -> u64 {
    // SAFETY: a plain read of a counter only the stub writes, single CPU.
    unsafe { core::ptr::read_volatile(&raw const FAST_UPCALL.stlb_misses) }
}

/// (exceptions, page faults) delivered on the fast path so far.
pub fn fast_upcall_counts() -> (u64, u64) {
    // SAFETY: plain reads of counters only the stub writes, single CPU.
    unsafe {
        let fast = &raw const FAST_UPCALL;
        (
            core::ptr::read_volatile(&raw const (*fast).exceptions),
            core::ptr::read_volatile(&raw const (*fast).page_faults),
        )
    }
}

/// Null system calls, answered by the entry stub itself.
#[no_mangle]
static mut NULL_SYSCALLS: u64 = 0;

/// How many null system calls the entry stub answered.
pub fn null_syscalls() -> u64 {
    // SAFETY: a plain read of a counter only the stub writes, single CPU.
    unsafe { core::ptr::read_volatile(&raw const NULL_SYSCALLS) }
}

/// Value of the kernel stack pointer the syscall stub switches to.
#[no_mangle]
static mut SYSCALL_KERNEL_RSP: u64 = 0;
/// Scratch slot for the user stack pointer during syscall entry.
#[no_mangle]
static mut SYSCALL_USER_RSP: u64 = 0;

static IDT: Once<InterruptDescriptorTable> = Once::new();

/// Build and load the IDT and set up the `syscall` MSRs.
pub fn init(
    selectors: &gdt::Selectors,
    trap: TrapHandler,
    window_fault: WindowFaultHandler,
    syscall: SyscallHandler,
    light: &[(u64, LightSyscall)],
) {
    TRAP_HANDLER.call_once(|| trap);
    WINDOW_FAULT_HANDLER.call_once(|| window_fault);
    SYSCALL_HANDLER.call_once(|| syscall);
    for &(number, handler) in light {
        assert!((number as usize) < LIGHT_TABLE_LEN);
        // SAFETY: single CPU, before any system call can happen (no
        // environment runs yet), so no one reads the table concurrently.
        unsafe { (&raw mut SYSCALL_LIGHT).cast::<u64>().add(number as usize).write(handler as usize as u64) };
    }
    let idt = IDT.call_once(|| {
        let mut idt = InterruptDescriptorTable::new();
        // The exception stubs are 16-byte aligned and each shorter than 16
        // bytes, so stub n sits at trap_stub_0 + 16 n.
        let stub_base = trap_stub_0 as *const () as u64;
        let stubs: [u64; 32] = core::array::from_fn(|n| stub_base + 16 * n as u64);
        // SAFETY: every address is a valid trap stub; the IST indices exist in the TSS.
        unsafe {
            for (vector, &stub) in stubs.iter().enumerate() {
                let addr = VirtAddr::new(stub);
                let options = match vector {
                    8 => idt.double_fault.set_handler_addr(addr),
                    2 => idt.non_maskable_interrupt.set_handler_addr(addr),
                    14 => idt.page_fault.set_handler_addr(addr),
                    0 => idt.divide_error.set_handler_addr(addr),
                    1 => idt.debug.set_handler_addr(addr),
                    3 => idt.breakpoint.set_handler_addr(addr),
                    4 => idt.overflow.set_handler_addr(addr),
                    5 => idt.bound_range_exceeded.set_handler_addr(addr),
                    6 => idt.invalid_opcode.set_handler_addr(addr),
                    7 => idt.device_not_available.set_handler_addr(addr),
                    10 => idt.invalid_tss.set_handler_addr(addr),
                    11 => idt.segment_not_present.set_handler_addr(addr),
                    12 => idt.stack_segment_fault.set_handler_addr(addr),
                    13 => idt.general_protection_fault.set_handler_addr(addr),
                    16 => idt.x87_floating_point.set_handler_addr(addr),
                    17 => idt.alignment_check.set_handler_addr(addr),
                    18 => idt.machine_check.set_handler_addr(addr),
                    19 => idt.simd_floating_point.set_handler_addr(addr),
                    20 => idt.virtualization.set_handler_addr(addr),
                    21 => idt.cp_protection_exception.set_handler_addr(addr),
                    28 => idt.hv_injection_exception.set_handler_addr(addr),
                    29 => idt.vmm_communication_exception.set_handler_addr(addr),
                    30 => idt.security_exception.set_handler_addr(addr),
                    _ => continue,
                };
                match vector {
                    8 => {
                        options.set_stack_index(gdt::DOUBLE_FAULT_IST);
                    }
                    2 => {
                        options.set_stack_index(gdt::NMI_IST);
                    }
                    14 => {
                        options.set_stack_index(gdt::PAGE_FAULT_IST);
                    }
                    // int3 and into may be raised on purpose from ring 3.
                    3 | 4 => {
                        options.set_privilege_level(PrivilegeLevel::Ring3);
                    }
                    _ => {}
                }
            }
            idt[TIMER_VECTOR].set_handler_addr(VirtAddr::new(trap_stub_timer as *const () as u64));
            idt[NIC_VECTOR].set_handler_addr(VirtAddr::new(trap_stub_48 as *const () as u64));
            idt[CONSOLE_VECTOR].set_handler_addr(VirtAddr::new(trap_stub_49 as *const () as u64));
            idt[SPURIOUS_VECTOR].set_handler_addr(VirtAddr::new(trap_stub_spurious as *const () as u64));
            idt[BARE_INT_VECTOR]
                .set_handler_addr(VirtAddr::new(trap_stub_bare as *const () as u64))
                .set_privilege_level(PrivilegeLevel::Ring3);
        }
        idt
    });
    idt.load();

    // SAFETY: single CPU, interrupts are still off; the stub reads this
    // value only on syscall entry.
    unsafe { SYSCALL_KERNEL_RSP = gdt::trap_stack_top() };
    // SAFETY: LSTAR points at the syscall stub; STAR's selectors were
    // checked by `Star::write`; SFMASK clears IF/TF/DF/AC on entry.
    unsafe {
        Star::write(selectors.user_code, selectors.user_data, selectors.kernel_code, selectors.kernel_data)
            .expect("GDT order fits sysret");
        LStar::write(VirtAddr::new(syscall_entry as *const () as u64));
        SFMask::write(RFlags::INTERRUPT_FLAG | RFlags::TRAP_FLAG | RFlags::DIRECTION_FLAG | RFlags::ALIGNMENT_CHECK);
        Efer::update(|f| f.insert(EferFlags::SYSTEM_CALL_EXTENSIONS));
    }
}

/// Start ring-3 code from `frame` (confined to ring 3); the trap stack is
/// reset.
pub fn enter_user(frame: &TrapFrame) -> ! {
    let mut frame = *frame;
    frame.confine_to_user();
    let top = gdt::trap_stack_top() - core::mem::size_of::<TrapFrame>() as u64;
    let slot = top as *mut TrapFrame;
    // SAFETY: the top of the trap stack is ours: nothing of the kernel runs
    // on it now (boot runs on the bootloader's stack), and the frame is a
    // ring-3 frame the kernel built, so iretq cannot raise privilege.
    unsafe {
        slot.write(frame);
        enter_user_frame(slot)
    }
}

global_asm!(
    r#"
.macro SAVE_REGS
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
.endm
.macro RESTORE_REGS
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
.endm
.macro STUB_NOERR n, to=trap_common
.balign 16
trap_stub_\n:
    push 0
    push \n
    jmp \to
.endm
.macro STUB_ERR n, to=trap_common
.balign 16
trap_stub_\n:
    push \n
    jmp \to
.endm

.section .text
// Fast upcalls. An exception from ring 3 (any vector below 32 but NMI, #DF,
// #MC and #PF) whose environment has a validated upcall stack (see
// `FastUpcall`; a zero entry means "not this environment") is written
// straight from the registers into the libOS's upcall frame, without a
// TrapFrame or Rust. A page fault does the same, after asking the kernel
// (`trap_window_fault`, caller-saved registers only) whether the software
// TLB refills a not-present fault in the dynamic window. On entry:
// [rsp] vector, err, rip, cs, rflags, rsp, ss.
.macro FAST_FRAME kind, entry_offset, counter_offset
    // rax: user rax saved; rcx: user rcx saved. Place the frame: below the
    // interrupted frame if it runs on the upcall stack, else at its top.
    mov rcx, [rsp + 40]
    cmp rcx, [rip + FAST_UPCALL + 24]
    jb 16f
    cmp rcx, [rip + FAST_UPCALL + 32]
    ja 16f
    sub rcx, 128
    jmp 17f
16:
    mov rcx, [rip + FAST_UPCALL + 32]
17:
    sub rcx, {frame_size}
    and rcx, -16
    cmp rcx, [rip + FAST_UPCALL + 24]
    jb 18f
    mov qword ptr [rcx], \kind
    mov rax, [rsp]
    mov [rcx + 8], rax
    mov rax, [rsp + 8]
    mov [rcx + 16], rax
    .if \kind == 2
    mov rax, cr2
    mov [rcx + 24], rax
    .else
    mov qword ptr [rcx + 24], 0
    .endif
    mov rax, [rip + FAST_SCRATCH]
    mov [rcx + 32], rax
    mov [rcx + 40], rbx
    mov rax, [rip + FAST_SCRATCH + 8]
    mov [rcx + 48], rax
    mov [rcx + 56], rdx
    mov [rcx + 64], rsi
    mov [rcx + 72], rdi
    mov [rcx + 80], rbp
    mov [rcx + 88], r8
    mov [rcx + 96], r9
    mov [rcx + 104], r10
    mov [rcx + 112], r11
    mov [rcx + 120], r12
    mov [rcx + 128], r13
    mov [rcx + 136], r14
    mov [rcx + 144], r15
    mov rax, [rsp + 16]
    mov [rcx + 152], rax
    mov rax, [rsp + 40]
    mov [rcx + 160], rax
    mov rax, [rsp + 32]
    mov [rcx + 168], rax
    // Resume at the entry, on the frame, with the frame's address in rdi.
    mov rax, [rip + FAST_UPCALL + \entry_offset]
    mov [rsp + 16], rax
    mov [rsp + 40], rcx
    mov rdi, rcx
    inc qword ptr [rip + FAST_UPCALL + 40]
    .if \kind == 2
    inc qword ptr [rip + FAST_UPCALL + 48]
    .endif
    // Every register but rip, rsp and rdi keeps its interrupted value.
    mov rax, [rip + FAST_SCRATCH]
    mov rcx, [rip + FAST_SCRATCH + 8]
    add rsp, 16
    iretq
18:
    // No room on the upcall stack: the general path decides.
    mov rax, [rip + FAST_SCRATCH]
    mov rcx, [rip + FAST_SCRATCH + 8]
    jmp trap_common
.endm

fast_exception:
    test byte ptr [rsp + 24], 3
    jz trap_common
    cmp qword ptr [rip + FAST_UPCALL + 8], 0
    je trap_common
    mov [rip + FAST_SCRATCH], rax
    mov [rip + FAST_SCRATCH + 8], rcx
    FAST_FRAME 1, 8, 40

fast_page_fault:
    test byte ptr [rsp + 24], 3
    jz trap_common
    cmp qword ptr [rip + FAST_UPCALL + 16], 0
    je trap_common
    mov [rip + FAST_SCRATCH], rax
    mov [rip + FAST_SCRATCH + 8], rcx
    mov rcx, cr2
    movabs rax, {dyn_base}
    cmp rcx, rax
    jb 21f
    movabs rax, {dyn_end}
    cmp rcx, rax
    jae 21f
    // In the dynamic window. A protection fault (present) has nothing to
    // refill: deliver. A not-present fault whose page the software TLB's
    // tag words do not hold is a miss: deliver, counted.
    test byte ptr [rsp + 8], 1
    jnz 21f
    mov rax, [rip + FAST_UPCALL + 56]
    test rax, rax
    jz 22f
    push rdx
    push rsi
    mov rdx, rcx
    shr rdx, 12
    mov rsi, rdx
    and rsi, [rip + FAST_UPCALL + 64]
    cmp [rax + rsi * 8], rdx
    pop rsi
    pop rdx
    je 22f
    inc qword ptr [rip + FAST_UPCALL + 72]
    jmp 21f
22:
    // The software TLB may hold the mapping: ask the kernel. The stack
    // holds 7 words here (16-byte aligned below them), 7 pushes keep the
    // call aligned.
    push rdx
    push rsi
    push rdi
    push r8
    push r9
    push r10
    push r11
    mov rdi, rcx
    mov rsi, [rsp + 64]
    cld
    call trap_window_fault
    pop r11
    pop r10
    pop r9
    pop r8
    pop rdi
    pop rsi
    pop rdx
    test rax, rax
    jz 21f
    mov rcx, [rip + FAST_SCRATCH + 8]
    cmp rax, 1
    mov rax, [rip + FAST_SCRATCH]
    jne trap_common
    // Refilled: retry the access.
    add rsp, 16
    iretq
21:
    FAST_FRAME 2, 16, 48

trap_common:
    SAVE_REGS
    mov rdi, rsp
    cld
    call trap_dispatch
.globl trap_return
trap_return:
    RESTORE_REGS
    add rsp, 16
    iretq

.globl enter_user_frame
enter_user_frame:
    mov rsp, rdi
    jmp trap_return

.globl trap_stub_0
// Vectors 2 (NMI), 8 (#DF), 18 (#MC), the timer (32), the NIC (48) and
// the console (49) always take the general path; the rest try the fast
// upcall first.
STUB_NOERR 0, fast_exception
STUB_NOERR 1, fast_exception
STUB_NOERR 2, trap_common
STUB_NOERR 3, fast_exception
STUB_NOERR 4, fast_exception
STUB_NOERR 5, fast_exception
STUB_NOERR 6, fast_exception
STUB_NOERR 7, fast_exception
STUB_ERR 8, trap_common
STUB_NOERR 9, fast_exception
STUB_ERR 10, fast_exception
STUB_ERR 11, fast_exception
STUB_ERR 12, fast_exception
STUB_ERR 13, fast_exception
STUB_ERR 14, fast_page_fault
STUB_NOERR 15, fast_exception
STUB_NOERR 16, fast_exception
STUB_ERR 17, fast_exception
STUB_NOERR 18, trap_common
STUB_NOERR 19, fast_exception
STUB_NOERR 20, fast_exception
STUB_ERR 21, fast_exception
STUB_NOERR 22, fast_exception
STUB_NOERR 23, fast_exception
STUB_NOERR 24, fast_exception
STUB_NOERR 25, fast_exception
STUB_NOERR 26, fast_exception
STUB_NOERR 27, fast_exception
STUB_NOERR 28, fast_exception
STUB_ERR 29, fast_exception
STUB_ERR 30, fast_exception
STUB_NOERR 31, fast_exception
STUB_NOERR 32, trap_common
STUB_NOERR 48, trap_common
STUB_NOERR 49, trap_common

.globl trap_stub_timer
trap_stub_timer:
    jmp trap_stub_32

.globl trap_stub_spurious
trap_stub_spurious:
    iretq

.globl trap_stub_bare
trap_stub_bare:
    iretq

.globl syscall_entry
syscall_entry:
    cmp rax, {bare}
    je 2f
    // The null call (number 0) is answered here: counted, rax = 0 = Ok(0).
    test rax, rax
    jz 4f
    mov [rip + SYSCALL_USER_RSP], rsp
    mov rsp, [rip + SYSCALL_KERNEL_RSP]
    push rcx
    push r11
    cmp rax, {count}
    jae 3f
    lea r11, [rip + SYSCALL_LIGHT]
    mov r11, [r11 + rax * 8]
    test r11, r11
    jz 3f
    // Light path: a handler that never switches environments. Save the
    // registers the C ABI lets it clobber; r10 is the fourth argument.
    push rdi
    push rsi
    push rdx
    push r8
    push r9
    push r10
    mov rcx, r10
    cld
    call r11
    pop r10
    pop r9
    pop r8
    pop rdx
    pop rsi
    pop rdi
    pop r11
    pop rcx
    mov rsp, [rip + SYSCALL_USER_RSP]
    sysretq
3:
    // Full path: a complete TrapFrame the handler may rewrite.
    pop r11
    pop rcx
    push {user_ss}
    push qword ptr [rip + SYSCALL_USER_RSP]
    push r11
    push {user_cs}
    push rcx
    push 0
    push {syscall_vector}
    SAVE_REGS
    mov rdi, rsp
    cld
    call syscall_dispatch
    test rax, rax
    jnz trap_return
    RESTORE_REGS
    add rsp, 16
    pop rcx
    add rsp, 8
    pop r11
    pop rsp
    sysretq
2:
    sysretq
4:
    inc qword ptr [rip + NULL_SYSCALLS]
    sysretq

"#,
    bare = const BARE_SYSCALL,
    user_ss = const USER_SS,
    user_cs = const USER_CS,
    syscall_vector = const SYSCALL_VECTOR,
    count = const LIGHT_TABLE_LEN,
    dyn_base = const shared_abi::start::DYNAMIC_BASE,
    dyn_end = const shared_abi::start::DYNAMIC_END,
    frame_size = const shared_abi::upcall::FRAME_SIZE,
);
