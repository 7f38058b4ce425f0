//! GDT with kernel and user segments, and a TSS whose RSP0 is the kernel
//! trap stack and whose IST entries give double fault, NMI and page fault
//! stacks of their own.

use spin::Once;
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

pub const DOUBLE_FAULT_IST: u16 = 0;
pub const NMI_IST: u16 = 1;
pub const PAGE_FAULT_IST: u16 = 2;

const STACK_SIZE: usize = 64 * 1024;

#[repr(C, align(16))]
struct Stack([u8; STACK_SIZE]);

/// The stack every trap and system call from ring 3 runs on. Stacks are
/// `static mut` so they land in writable .bss; Rust code never forms a
/// reference to them, only their addresses.
static mut TRAP_STACK: Stack = Stack([0; STACK_SIZE]);
static mut IST_STACKS: [Stack; 3] = [const { Stack([0; STACK_SIZE]) }; 3];

fn stack_top(stack: *const Stack) -> VirtAddr {
    VirtAddr::from_ptr(stack) + STACK_SIZE as u64
}

/// Top of the trap stack (16-byte aligned).
pub fn trap_stack_top() -> u64 {
    stack_top(&raw const TRAP_STACK).as_u64()
}

pub struct Selectors {
    pub kernel_code: SegmentSelector,
    pub kernel_data: SegmentSelector,
    pub user_data: SegmentSelector,
    pub user_code: SegmentSelector,
    pub tss: SegmentSelector,
}

static TSS: Once<TaskStateSegment> = Once::new();
static GDT: Once<(GlobalDescriptorTable, Selectors)> = Once::new();

/// Load the GDT and TSS.
pub fn init() -> &'static Selectors {
    let tss = TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        let ist = &raw const IST_STACKS as *const Stack;
        tss.privilege_stack_table[0] = stack_top(&raw const TRAP_STACK);
        tss.interrupt_stack_table[DOUBLE_FAULT_IST as usize] = stack_top(ist);
        tss.interrupt_stack_table[NMI_IST as usize] = stack_top(ist.wrapping_add(1));
        tss.interrupt_stack_table[PAGE_FAULT_IST as usize] = stack_top(ist.wrapping_add(2));
        tss
    });
    let (gdt, selectors) = GDT.call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        // Order matters for sysret: user data must sit 8 below user code.
        let kernel_code = gdt.append(Descriptor::kernel_code_segment());
        let kernel_data = gdt.append(Descriptor::kernel_data_segment());
        let user_data = gdt.append(Descriptor::user_data_segment());
        let user_code = gdt.append(Descriptor::user_code_segment());
        let tss = gdt.append(Descriptor::tss_segment(tss));
        (gdt, Selectors { kernel_code, kernel_data, user_data, user_code, tss })
    });
    gdt.load();
    // SAFETY: the selectors index the GDT just loaded, with the kinds the
    // registers need.
    unsafe {
        CS::set_reg(selectors.kernel_code);
        SS::set_reg(selectors.kernel_data);
        DS::set_reg(SegmentSelector(0));
        ES::set_reg(SegmentSelector(0));
        load_tss(selectors.tss);
    }
    selectors
}
