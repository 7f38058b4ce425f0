//! Page tables through the bootloader's physical-memory mapping: creating
//! an environment's address space (sharing the kernel half), mapping,
//! translating, unmapping, and tearing it down; plus raw frame access.

use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::structures::paging::{PageTable, PageTableFlags, PhysFrame};
use x86_64::PhysAddr;

pub use x86_64::structures::paging::PageTableFlags as Flags;

static PHYS_OFFSET: AtomicU64 = AtomicU64::new(0);

/// Record where the bootloader mapped all of physical memory.
pub fn init(phys_offset: u64) {
    PHYS_OFFSET.store(phys_offset, Ordering::Relaxed);
}

/// Kernel virtual address of a physical address.
pub fn phys_to_virt(pa: u64) -> u64 {
    PHYS_OFFSET.load(Ordering::Relaxed) + pa
}

const FRAME: usize = 4096;

/// Fill a frame with zeros. The caller owns the frame.
pub fn zero_frame(pa: u64) {
    debug_assert!(pa % FRAME as u64 == 0);
    // SAFETY: every physical frame is mapped at PHYS_OFFSET + pa, and the
    // caller owns this frame (fresh from the frame allocator), so nothing
    // else reads or writes it concurrently.
    unsafe { core::ptr::write_bytes(phys_to_virt(pa) as *mut u8, 0, FRAME) };
}

/// Copy `bytes` into a frame at `offset`; out-of-frame parts are cut off.
pub fn write_frame(pa: u64, offset: usize, bytes: &[u8]) {
    let len = bytes.len().min(FRAME.saturating_sub(offset));
    // SAFETY: the destination lies inside one frame, mapped through the
    // physical-memory window; the kernel is single-threaded.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), (phys_to_virt(pa) + offset as u64) as *mut u8, len) };
}

/// Copy from a frame at `offset` into `out`; out-of-frame parts are cut off.
pub fn read_frame(pa: u64, offset: usize, out: &mut [u8]) {
    let len = out.len().min(FRAME.saturating_sub(offset));
    // SAFETY: as for `write_frame`, reading instead of writing.
    unsafe { core::ptr::copy_nonoverlapping((phys_to_virt(pa) + offset as u64) as *const u8, out.as_mut_ptr(), len) };
}

/// A mutable view of a plain value at physical address `pa`, which must
/// lie with the whole value inside one frame the caller has checked it may
/// write (the environment's own writable memory).
pub fn phys_mut<T: super::pod::Pod>(pa: u64) -> &'static mut T {
    assert!((pa & 0xfff) as usize + core::mem::size_of::<T>() <= FRAME);
    assert!(pa as usize % core::mem::align_of::<T>() == 0);
    // SAFETY: in bounds of one frame (checked above), aligned, reached
    // through the physical-memory window; every bit pattern is a valid
    // `Pod`; the kernel is single-threaded and drops the reference before
    // returning to user mode.
    unsafe { &mut *(phys_to_virt(pa) as *mut T) }
}

/// Rewrite a leaf page-table entry found earlier by [`AddressSpace::map_replace`].
pub fn write_pte(pte_pa: u64, frame_pa: u64, flags: PageTableFlags) {
    assert!(pte_pa % 8 == 0);
    let value = (frame_pa & 0x000f_ffff_ffff_f000) | (flags | PageTableFlags::PRESENT).bits();
    // SAFETY: `pte_pa` is the 8-byte-aligned address of a leaf entry in a
    // page table of a live address space (map_replace returned it; tables
    // live until the space is destroyed); the caller checked the mapping
    // with the environment's key when it was established.
    unsafe { core::ptr::write_volatile(phys_to_virt(pte_pa) as *mut u64, value) };
}

fn table(pa: u64) -> &'static mut PageTable {
    // SAFETY: `pa` is a page-table frame owned by an address space the
    // kernel manages, reached through the physical-memory window; the
    // kernel is single-threaded, so no other reference is live.
    unsafe { &mut *(phys_to_virt(pa) as *mut PageTable) }
}

/// Why a mapping could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    AlreadyMapped,
    NoMemory,
    /// The walk met a huge page or the address is not in the user half.
    BadAddress,
}

/// A four-level address space. The upper half is the kernel's, shared by
/// every address space; the lower half belongs to one environment.
pub struct AddressSpace {
    pml4: u64,
}

const INTERMEDIATE: PageTableFlags = PageTableFlags::PRESENT
    .union(PageTableFlags::WRITABLE)
    .union(PageTableFlags::USER_ACCESSIBLE);

fn indices(va: u64) -> [usize; 4] {
    [
        ((va >> 39) & 511) as usize,
        ((va >> 30) & 511) as usize,
        ((va >> 21) & 511) as usize,
        ((va >> 12) & 511) as usize,
    ]
}

impl AddressSpace {
    /// The address space active now (the kernel's, at boot).
    pub fn current() -> Self {
        AddressSpace { pml4: Cr3::read().0.start_address().as_u64() }
    }

    /// A new address space whose kernel half is that of `kernel`.
    pub fn new(kernel: &AddressSpace, alloc: &mut dyn FnMut() -> Option<u64>) -> Option<Self> {
        let pml4 = alloc()?;
        zero_frame(pml4);
        let (src, dst) = (table(kernel.pml4), table(pml4));
        for i in 256..512 {
            dst[i] = src[i].clone();
        }
        Some(AddressSpace { pml4 })
    }

    /// Physical address of the top-level table (the CR3 value).
    pub fn root(&self) -> u64 {
        self.pml4
    }

    /// Make this address space the active one (a CR3 load: flushes the
    /// non-global TLB entries).
    pub fn activate(&self) {
        let frame = PhysFrame::containing_address(PhysAddr::new(self.pml4));
        // SAFETY: the kernel half of every address space is identical, so
        // the kernel keeps running after the switch.
        unsafe { Cr3::write(frame, Cr3Flags::empty()) };
    }

    /// Walk to the last-level entry of `va`, creating tables if `alloc` is given.
    fn leaf(
        &self,
        va: u64,
        mut alloc: Option<&mut dyn FnMut() -> Option<u64>>,
    ) -> Result<&'static mut x86_64::structures::paging::page_table::PageTableEntry, MapError> {
        let idx = indices(va);
        let mut current = table(self.pml4);
        for &i in &idx[..3] {
            let entry = &mut current[i];
            if entry.flags().contains(PageTableFlags::HUGE_PAGE) {
                return Err(MapError::BadAddress);
            }
            if entry.is_unused() {
                let alloc = alloc.as_mut().ok_or(MapError::BadAddress)?;
                let frame = alloc().ok_or(MapError::NoMemory)?;
                zero_frame(frame);
                entry.set_addr(PhysAddr::new(frame), INTERMEDIATE);
            }
            current = table(entry.addr().as_u64());
        }
        Ok(&mut current[idx[3]])
    }

    /// Map the page at `va` (user half) to the frame at `pa`.
    pub fn map(
        &mut self,
        va: u64,
        pa: u64,
        flags: PageTableFlags,
        alloc: &mut dyn FnMut() -> Option<u64>,
    ) -> Result<(), MapError> {
        if va >= shared_abi::USER_TOP || va % 4096 != 0 {
            return Err(MapError::BadAddress);
        }
        let entry = self.leaf(va, Some(alloc))?;
        if !entry.is_unused() {
            return Err(MapError::AlreadyMapped);
        }
        entry.set_addr(PhysAddr::new(pa), flags | PageTableFlags::PRESENT);
        Ok(())
    }

    /// Map the page at `va` (user half) to `pa`, replacing any mapping it
    /// had (one walk). Returns the physical address of the page-table entry,
    /// which stays valid until the address space is destroyed (tables are
    /// never freed before), so a refill can rewrite it with [`write_pte`].
    /// The caller flushes the old TLB entry if needed.
    pub fn map_replace(
        &mut self,
        va: u64,
        pa: u64,
        flags: PageTableFlags,
        alloc: &mut dyn FnMut() -> Option<u64>,
    ) -> Result<u64, MapError> {
        if va >= shared_abi::USER_TOP || va % 4096 != 0 {
            return Err(MapError::BadAddress);
        }
        let entry = self.leaf(va, Some(alloc))?;
        entry.set_addr(PhysAddr::new(pa), flags | PageTableFlags::PRESENT);
        let entry_virt = entry as *const _ as u64;
        Ok(entry_virt - PHYS_OFFSET.load(Ordering::Relaxed))
    }

    /// Map a page anywhere (kernel use at boot: MMIO windows).
    pub fn map_kernel(&mut self, va: u64, pa: u64, flags: PageTableFlags, alloc: &mut dyn FnMut() -> Option<u64>) -> Result<(), MapError> {
        let entry = self.leaf(va, Some(alloc))?;
        if !entry.is_unused() {
            return Err(MapError::AlreadyMapped);
        }
        // Intermediate tables carry the user bit (as in the user half), but
        // the leaf does not, so ring 3 can never reach the page.
        entry.set_addr(PhysAddr::new(pa), flags | PageTableFlags::PRESENT);
        Ok(())
    }

    /// Is the PML4 slot for `va` unused? (Finding a free kernel window.)
    pub fn top_level_free(&self, va: u64) -> bool {
        table(self.pml4)[indices(va)[0]].is_unused()
    }

    /// Translate `va` to (physical address of its page, flags).
    pub fn translate(&self, va: u64) -> Option<(u64, PageTableFlags)> {
        let entry = self.leaf(va & !0xfff, None).ok()?;
        if entry.is_unused() || !entry.flags().contains(PageTableFlags::PRESENT) {
            return None;
        }
        Some((entry.addr().as_u64(), entry.flags()))
    }

    /// Remove the mapping of the page at `va`; returns its frame. The
    /// caller flushes the TLB entry if this address space is loaded.
    pub fn unmap(&mut self, va: u64) -> Option<u64> {
        if va >= shared_abi::USER_TOP {
            return None;
        }
        let entry = self.leaf(va & !0xfff, None).ok()?;
        if entry.is_unused() {
            return None;
        }
        let pa = entry.addr().as_u64();
        entry.set_unused();
        Some(pa)
    }

    /// Clear `bits` (accessed and/or dirty) of the page at `va`; returns
    /// the flags it had.
    pub fn take_bits(&mut self, va: u64, bits: PageTableFlags) -> Option<PageTableFlags> {
        let entry = self.leaf(va & !0xfff, None).ok()?;
        if entry.is_unused() {
            return None;
        }
        let flags = entry.flags();
        let addr = entry.addr();
        entry.set_addr(addr, flags - (bits & (PageTableFlags::ACCESSED | PageTableFlags::DIRTY)));
        Some(flags)
    }

    /// Make this address space the active one tagged with `pcid` (CR4.PCIDE
    /// must be set). With `flush`, that tag's TLB entries are dropped (its
    /// mappings changed while it was not loaded); otherwise they are kept.
    pub fn activate_pcid(&self, pcid: u16, flush: bool) {
        // SAFETY: as for `activate`; the caller enabled PCIDs. Bit 63
        // (no-flush) keeps the tagged entries only when `flush` is false,
        // which the kernel passes only if every unmap in this address space
        // was followed by invlpg while it was loaded; otherwise the load
        // flushes the tag.
        unsafe {
            let no_flush = if flush { 0 } else { 1 << 63 };
            let value = self.pml4 | (pcid as u64 & 0xfff) | no_flush;
            core::arch::asm!("mov cr3, {}", in(reg) value, options(nostack, preserves_flags));
        }
    }

    /// Change the flags of a mapped page; returns false if it is unmapped.
    pub fn set_flags(&mut self, va: u64, flags: PageTableFlags) -> bool {
        match self.leaf(va & !0xfff, None) {
            Ok(entry) if !entry.is_unused() => {
                let addr = entry.addr();
                entry.set_addr(addr, flags | PageTableFlags::PRESENT);
                true
            }
            _ => false,
        }
    }

    /// Free every user-half page-table frame and hand each mapped frame to
    /// `release`; the address space must not be active.
    pub fn destroy(self, release: &mut dyn FnMut(u64), free_table: &mut dyn FnMut(u64)) {
        fn walk(pa: u64, level: usize, release: &mut dyn FnMut(u64), free_table: &mut dyn FnMut(u64)) {
            let t = table(pa);
            for entry in t.iter_mut() {
                if entry.is_unused() {
                    continue;
                }
                let child = entry.addr().as_u64();
                if level == 1 {
                    release(child);
                } else {
                    walk(child, level - 1, release, free_table);
                }
                entry.set_unused();
            }
            free_table(pa);
        }
        let root = table(self.pml4);
        for i in 0..256 {
            if !root[i].is_unused() {
                walk(root[i].addr().as_u64(), 3, release, free_table);
                root[i].set_unused();
            }
        }
        free_table(self.pml4);
    }
}

/// Invalidate the TLB entry of one page in the loaded address space.
pub fn invlpg(va: u64) {
    x86_64::instructions::tlb::flush(x86_64::VirtAddr::new_truncate(va));
}
