//! Where a process keeps what, in the whole user half the kernel lets a
//! run-time environment map. Program segments sit where their ELF file
//! says (inside `start::PROGRAM_BASE..PROGRAM_END`); the start page at
//! `start::START_INFO_ADDR`; the rest is the library's choice, made here.
//! Init, booted from the manifest, maps the process table in its dynamic
//! window instead (`INIT_PROCTAB_VA`).

use libos_runtime::start::{STACK_TOP, START_INFO_ADDR};

pub const PAGE: u64 = 4096;

/// The library's own pages lie from here, above the stack and below the
/// start page, in the 2 MiB both lie in: one page table maps the three
/// (and the heap is in the same GiB, so it adds only its own). Each kind
/// is apart from the next by unmapped pages, so a run past its end faults.
pub const REGION_VA: u64 = STACK_TOP + 0x1_0000;
/// The process table (one page, shared by every process).
pub const PROCTAB_VA: u64 = REGION_VA;
/// Where init maps the process table (inside its dynamic window, where an
/// environment booted from the manifest maps).
pub const INIT_PROCTAB_VA: u64 = 0x0000_6fff_f000_0000;
/// The process's own page table ([`crate::pmap`]): it grows a page at a
/// time up to `PMAP_MAX_PAGES`.
pub const PMAP_VA: u64 = REGION_VA + 0x1_0000;
pub const PMAP_MAX_PAGES: usize = 16;
/// The stack upcall handlers run on.
pub const UPCALL_VA: u64 = REGION_VA + 0x2_1000;
pub const UPCALL_PAGES: u64 = 4;
/// Fork's own stack and the child's page-table image it builds: the
/// parent's alone, never inherited.
pub const FORK_STACK_VA: u64 = REGION_VA + 0x3_0000;
pub const FORK_STACK_PAGES: u64 = 2;
pub const FORKBUF_VA: u64 = REGION_VA + 0x4_0000;
/// A page to copy through (copy-on-write, fork).
pub const SCRATCH_VA: u64 = REGION_VA + 0x6_0000;
/// The channel page to init's file server (the process's own; not inherited).
pub const CHANNEL_VA: u64 = REGION_VA + 0x7_0000;
/// Pipe pages, one per pipe (`io::MAX_PIPES` of them), inherited co-owned.
pub const PIPE_VA: u64 = REGION_VA + 0x8_0000;
/// Where init maps the processes' channel pages (in its dynamic window).
pub const INIT_CHANNELS_VA: u64 = 0x0000_6ff0_0000_0000;

/// The heap, demand-zeroed by the page-fault handler: at the start of the
/// GiB that holds the stack, so the two share their upper page tables.
pub const HEAP_VA: u64 = STACK_TOP & !(GIB - 1);
const GIB: u64 = 1 << 30;
pub const HEAP_LEN: u64 = 16 * 1024 * 1024;
/// The stack, demand-zeroed down from `STACK_TOP`.
pub const STACK_LEN: u64 = 256 * 1024;
pub const STACK_LOW: u64 = STACK_TOP - STACK_LEN;

/// TLB slots a process asks for (its text, data, page table and upcall
/// stack are guaranteed mappings inside them).
pub const TLB_SLOTS: u64 = 64;

const _: () = {
    assert!(PMAP_VA + PMAP_MAX_PAGES as u64 * PAGE < UPCALL_VA);
    assert!(UPCALL_VA + UPCALL_PAGES * PAGE < FORK_STACK_VA);
    assert!(FORK_STACK_VA + FORK_STACK_PAGES * PAGE < FORKBUF_VA);
    assert!(FORKBUF_VA + PMAP_MAX_PAGES as u64 * PAGE < SCRATCH_VA);
    assert!(PIPE_VA + 32 * PAGE < START_INFO_ADDR);
    const TWO_MIB: u64 = !(0x20_0000 - 1);
    assert!(STACK_LOW & TWO_MIB == REGION_VA & TWO_MIB && START_INFO_ADDR & TWO_MIB == REGION_VA & TWO_MIB);
    assert!(HEAP_VA + HEAP_LEN < STACK_LOW);
};

/// May the handler demand-zero this page?
pub fn demand_zero(va: u64) -> bool {
    (HEAP_VA..HEAP_VA + HEAP_LEN).contains(&va) || (STACK_LOW..STACK_TOP).contains(&va)
}
