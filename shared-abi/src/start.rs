//! The start record: what the kernel tells a libOS when it starts it, and
//! the fixed parts of every environment's address space.
//!
//! At entry `rdi` holds the address of a [`StartInfo`] on a read-only page;
//! `rsp` is the top of a mapped stack. The strings the record points at live
//! on the same page.

/// The start page (read-only to the libOS).
pub const START_INFO_ADDR: u64 = 0x0000_7fff_ffff_f000;
/// Top of the initial stack (exclusive); a guard page lies below the stack.
pub const STACK_TOP: u64 = 0x0000_7fff_fff0_0000;
/// Size of the initial stack.
pub const STACK_SIZE: u64 = 64 * 1024;
/// Where the heap the manifest grants (`memory_kib`) is mapped.
pub const HEAP_BASE: u64 = 0x0000_1000_0000_0000;
/// Program segments must lie inside `[PROGRAM_BASE, PROGRAM_END)`.
pub const PROGRAM_BASE: u64 = 0x0000_0000_0010_0000;
pub const PROGRAM_END: u64 = 0x0000_0000_4000_0000;

/// `StartInfo::magic`.
pub const START_MAGIC: u64 = 0x4558_4f53_5441_5254; // "EXOSTART"

/// The start record.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct StartInfo {
    pub magic: u64,
    /// This environment's id (1-based, as printed in summaries).
    pub env_id: u64,
    /// Number of environments the manifest boots.
    pub env_count: u64,
    pub name_ptr: u64,
    pub name_len: u64,
    /// The manifest's `args` value.
    pub args_ptr: u64,
    pub args_len: u64,
    /// The libOS policy keys, as `key=value` lines.
    pub params_ptr: u64,
    pub params_len: u64,
    pub heap_base: u64,
    pub heap_len: u64,
    pub stack_base: u64,
    pub stack_len: u64,
    /// TSC ticks per second as calibrated by the kernel.
    pub tsc_hz: u64,
}
