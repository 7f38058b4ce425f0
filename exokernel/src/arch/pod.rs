//! Plain-old-data views of the ABI structs the kernel copies to and from
//! user memory, and the boot-time views of memory the bootloader handed us
//! (the ramdisk, the kernel heap).

/// Types made only of `u64` fields (or a `u64`), so any bytes are a valid value.
pub trait Pod: Copy {
    fn zeroed() -> Self;
    fn as_bytes(&self) -> &[u8];
    fn as_bytes_mut(&mut self) -> &mut [u8];
}

macro_rules! pod {
    ($($t:ty),*) => {$(
        impl Pod for $t {
            fn zeroed() -> Self { Self::default() }
            fn as_bytes(&self) -> &[u8] {
                // SAFETY: the type is repr(C) with only u64 fields: no padding,
                // no invalid bit patterns.
                unsafe { core::slice::from_raw_parts(self as *const Self as *const u8, core::mem::size_of::<Self>()) }
            }
            fn as_bytes_mut(&mut self) -> &mut [u8] {
                // SAFETY: as above; any bytes written form a valid value.
                unsafe { core::slice::from_raw_parts_mut(self as *mut Self as *mut u8, core::mem::size_of::<Self>()) }
            }
        }
    )*};
}

pod!(
    shared_abi::upcall::UpcallTable,
    shared_abi::upcall::UpcallFrame,
    shared_abi::syscall::KernelStats,
    shared_abi::start::StartInfo,
    shared_abi::syscall::FrameKey,
    shared_abi::syscall::FrameInfo,
    shared_abi::start::RepossessionVector,
    shared_abi::syscall::EnvInfo,
    shared_abi::syscall::EnvCreate,
    shared_abi::syscall::StartRegs,
    shared_abi::syscall::EnvEnd,
    shared_abi::net::RxRingHeader,
    shared_abi::net::NetInfo,
    u64
);

/// The ramdisk the bootloader loaded, as a byte slice (None if it loaded
/// none).
pub fn ramdisk(boot_info: &bootloader_api::BootInfo) -> Option<&'static [u8]> {
    let addr = boot_info.ramdisk_addr.into_option()?;
    // SAFETY: the bootloader maps the ramdisk at `addr` for `ramdisk_len`
    // bytes and never reclaims it; the kernel only reads it.
    Some(unsafe { core::slice::from_raw_parts(addr as *const u8, boot_info.ramdisk_len as usize) })
}

/// Give the kernel heap `[start_pa, start_pa + size)` of physical memory.
/// The caller takes the range out of the frame allocator.
pub fn init_heap(heap: &linked_list_allocator::LockedHeap, start_pa: u64, size: u64) {
    let virt = super::paging::phys_to_virt(start_pa);
    // SAFETY: the range is usable RAM that nothing else has claimed (the
    // caller reserves it in the frame bitmap), mapped through the
    // physical-memory window, and the heap is initialised once, at boot.
    unsafe { heap.lock().init(virt as *mut u8, size as usize) };
}
