//! Page tables through the bootloader's physical-memory mapping: creating
//! an environment's address space (sharing the kernel half), mapping,
//! translating, unmapping, and tearing it down; and the kernel's only way
//! into environment memory, the user-memory copies of [`AddressSpace`].
//!
//! Soundness rests on two rules this module keeps: page-table frames come
//! from owned [`Frame`]s and are freed only when their address space is
//! destroyed; user-half leaf entries point only at environment memory
//! (frames handed out with [`Frame::into_user`]), never at page tables or
//! the kernel heap. So writing through a user-half translation can corrupt
//! only an environment's memory, never the kernel's, and a [`PteRef`]
//! names a live leaf entry for as long as its address space lives.

use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::structures::paging::{PageTable, PageTableFlags, PhysFrame};
use x86_64::PhysAddr;

use super::memory::{self, Frame};

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

/// Fill a frame with zeros: only for a frame its caller owns (a
/// [`Frame`], or DMA memory this module allocated).
pub(super) fn zero_owned(pa: u64) {
    debug_assert!(pa.is_multiple_of(FRAME as u64));
    // SAFETY: every physical frame is mapped at PHYS_OFFSET + pa, and the
    // caller owns this frame (a `Frame` value, or fresh DMA pages), so
    // nothing else reads or writes it concurrently.
    unsafe { core::ptr::write_bytes(phys_to_virt(pa) as *mut u8, 0, FRAME) };
}

/// Copy `bytes` into environment memory at `offset` of frame `pa`; parts
/// past the frame are cut off. Only for frames reached through a user-half
/// leaf entry (environment memory, see the module doc).
fn write_env_frame(pa: u64, offset: usize, bytes: &[u8]) {
    let len = bytes.len().min(FRAME.saturating_sub(offset));
    // SAFETY: the destination lies inside one frame of environment memory
    // (never kernel heap or page tables), mapped through the
    // physical-memory window; the kernel holds no reference into it and is
    // single-threaded, so the copy aliases nothing.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), (phys_to_virt(pa) + offset as u64) as *mut u8, len) };
}

/// Copy from environment memory at `offset` of frame `pa` into `out`.
pub(super) fn read_env_frame(pa: u64, offset: usize, out: &mut [u8]) {
    let len = out.len().min(FRAME.saturating_sub(offset));
    // SAFETY: as for `write_env_frame`, reading instead of writing.
    unsafe { core::ptr::copy_nonoverlapping((phys_to_virt(pa) + offset as u64) as *const u8, out.as_mut_ptr(), len) };
}

/// A leaf page-table entry of one address space, found by
/// [`AddressSpace::map_replace`], so a refill can rewrite it without a
/// walk ([`AddressSpace::write_leaf`]). Only this module makes one; the
/// default value names no entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PteRef {
    space: u64,
    pa: u64,
}

impl PteRef {
    /// Does it name an entry (not the default)?
    pub fn is_known(&self) -> bool {
        self.space != 0
    }
}

/// Source of address-space identities (0 is never used).
static NEXT_SPACE_ID: AtomicU64 = AtomicU64::new(1);

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

/// What [`AddressSpace::take_bits_run`] found: one bit per page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PteBits {
    /// The page has a present last-level entry.
    pub present: u64,
    /// ... with a bit of the asked-for `report` set.
    pub reported: u64,
    /// ... that had a bit of `clear` set, now cleared.
    pub cleared: u64,
}

/// A four-level address space. The upper half is the kernel's, shared by
/// every address space; the lower half belongs to one environment.
pub struct AddressSpace {
    pml4: u64,
    /// Unique for the kernel's life: ties [`PteRef`]s to this space.
    id: u64,
    /// Every table below the PML4 this space allocated, so it can be torn
    /// down without walking all 512 entries of each.
    tables: alloc::vec::Vec<u64>,
}

/// A frame for a new page table.
pub type TableAlloc<'a> = &'a mut dyn FnMut() -> Option<Frame>;

const INTERMEDIATE: PageTableFlags =
    PageTableFlags::PRESENT.union(PageTableFlags::WRITABLE).union(PageTableFlags::USER_ACCESSIBLE);

fn indices(va: u64) -> [usize; 4] {
    [((va >> 39) & 511) as usize, ((va >> 30) & 511) as usize, ((va >> 21) & 511) as usize, ((va >> 12) & 511) as usize]
}

/// The last-level table that maps `va`, if the tables above it exist
/// (present, not huge pages); None otherwise. Never allocates.
fn existing_leaf_table(pml4: u64, va: u64) -> Option<&'static mut PageTable> {
    let mut current = table(pml4);
    for &i in &indices(va)[..3] {
        let flags = current[i].flags();
        if !flags.contains(PageTableFlags::PRESENT) || flags.contains(PageTableFlags::HUGE_PAGE) {
            return None;
        }
        current = table(current[i].addr().as_u64());
    }
    Some(current)
}

/// Walk `pml4`'s tables to the last-level entry of `va`, creating the
/// tables on the way if `alloc` is given (each recorded in `tables`).
fn walk_leaf(
    pml4: u64,
    va: u64,
    mut alloc: Option<TableAlloc>,
    mut tables: Option<&mut alloc::vec::Vec<u64>>,
) -> Result<&'static mut x86_64::structures::paging::page_table::PageTableEntry, MapError> {
    let idx = indices(va);
    let mut current = table(pml4);
    for &i in &idx[..3] {
        let entry = &mut current[i];
        if entry.flags().contains(PageTableFlags::HUGE_PAGE) {
            return Err(MapError::BadAddress);
        }
        if entry.is_unused() {
            let alloc = alloc.as_mut().ok_or(MapError::BadAddress)?;
            let mut frame = alloc().ok_or(MapError::NoMemory)?;
            frame.zero();
            let pa = frame.into_table();
            if let Some(tables) = tables.as_mut() {
                tables.push(pa);
            }
            entry.set_addr(PhysAddr::new(pa), INTERMEDIATE);
        }
        current = table(entry.addr().as_u64());
    }
    Ok(&mut current[idx[3]])
}

impl AddressSpace {
    /// The boot address space, once: a second owner of it could destroy
    /// the tables the kernel runs on. None after the first call.
    pub fn take_boot_space() -> Option<Self> {
        static TAKEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
        if TAKEN.swap(true, Ordering::Relaxed) {
            return None;
        }
        Some(Self::current())
    }

    /// A handle to the address space active now, for arch's own kernel-half
    /// mappings at boot (never destroyed).
    pub(super) fn current() -> Self {
        AddressSpace {
            pml4: Cr3::read().0.start_address().as_u64(),
            id: NEXT_SPACE_ID.fetch_add(1, Ordering::Relaxed),
            tables: alloc::vec::Vec::new(),
        }
    }

    /// A new address space whose kernel half is that of `kernel`.
    pub fn new(kernel: &AddressSpace, alloc: TableAlloc) -> Option<Self> {
        let mut frame = alloc()?;
        frame.zero();
        let pml4 = frame.into_table();
        let (src, dst) = (table(kernel.pml4), table(pml4));
        for i in 256..512 {
            dst[i] = src[i].clone();
        }
        Some(AddressSpace { pml4, id: NEXT_SPACE_ID.fetch_add(1, Ordering::Relaxed), tables: alloc::vec::Vec::new() })
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

    /// Walk to the last-level entry of `va`, creating tables if `alloc` is
    /// given (and recording them).
    fn leaf(
        &mut self,
        va: u64,
        alloc: Option<TableAlloc>,
    ) -> Result<&'static mut x86_64::structures::paging::page_table::PageTableEntry, MapError> {
        walk_leaf(self.pml4, va, alloc, Some(&mut self.tables))
    }

    /// Walk to the last-level entry of `va` if its tables exist.
    fn existing_leaf(
        &self,
        va: u64,
    ) -> Result<&'static mut x86_64::structures::paging::page_table::PageTableEntry, MapError> {
        walk_leaf(self.pml4, va, None, None)
    }

    /// Map the page at `va` (user half) to the frame at `pa`, which must be
    /// environment memory ([`Frame::into_user`]).
    pub fn map(&mut self, va: u64, pa: u64, flags: PageTableFlags, alloc: TableAlloc) -> Result<(), MapError> {
        if va >= shared_abi::USER_TOP || !va.is_multiple_of(4096) {
            return Err(MapError::BadAddress);
        }
        let entry = self.leaf(va, Some(alloc))?;
        if !entry.is_unused() {
            return Err(MapError::AlreadyMapped);
        }
        entry.set_addr(PhysAddr::new(pa), flags | PageTableFlags::PRESENT);
        Ok(())
    }

    /// Map the page at `va` (user half) to `pa` (environment memory),
    /// replacing any mapping it had (one walk). Returns a reference to the
    /// leaf entry, valid while this address space lives (tables are never
    /// freed before), so a refill can rewrite it with
    /// [`write_leaf`](AddressSpace::write_leaf). The caller flushes the old
    /// TLB entry if needed.
    pub fn map_replace(
        &mut self,
        va: u64,
        pa: u64,
        flags: PageTableFlags,
        alloc: TableAlloc,
    ) -> Result<PteRef, MapError> {
        if va >= shared_abi::USER_TOP || !va.is_multiple_of(4096) {
            return Err(MapError::BadAddress);
        }
        let entry = self.leaf(va, Some(alloc))?;
        entry.set_addr(PhysAddr::new(pa), flags | PageTableFlags::PRESENT);
        let entry_virt = entry as *const _ as u64;
        Ok(PteRef { space: self.id, pa: entry_virt - PHYS_OFFSET.load(Ordering::Relaxed) })
    }

    /// Rewrite the leaf entry `pte` of this address space to map `frame_pa`
    /// (environment memory) with `flags`. False, changing nothing, if `pte`
    /// is not one of this address space's entries.
    pub fn write_leaf(&mut self, pte: PteRef, frame_pa: u64, flags: PageTableFlags) -> bool {
        if pte.space != self.id || !pte.pa.is_multiple_of(8) {
            return false;
        }
        let value = (frame_pa & 0x000f_ffff_ffff_f000) | (flags | PageTableFlags::PRESENT).bits();
        // SAFETY: `pte` was made by `map_replace` of this address space (the
        // identity matches, and identities are never reused), so it is an
        // aligned leaf entry in one of its page tables, which live until the
        // space is destroyed; `self` is borrowed mutably, so it is alive.
        unsafe { core::ptr::write_volatile(phys_to_virt(pte.pa) as *mut u64, value) };
        true
    }

    /// Copy `bytes` to user memory at `va`. Every page must be mapped
    /// present and user-accessible with the flags in `need` (WRITABLE for a
    /// write on the environment's behalf; none for the kernel's own writes
    /// into read-only pages it built, such as the start page); otherwise
    /// nothing is written and the result is `Err`.
    pub fn write_user(&self, va: u64, bytes: &[u8], need: PageTableFlags) -> Result<(), ()> {
        if let Some(frame) = self.one_user_page(va, bytes.len(), need)? {
            write_env_frame(frame, (va & 0xfff) as usize, bytes);
            return Ok(());
        }
        self.user_chunks(va, bytes.len(), need, |_, _, _, _| {})?;
        self.user_chunks(va, bytes.len(), need, |frame, offset, at, len| {
            write_env_frame(frame, offset, &bytes[at..at + len])
        })
    }

    /// Write a plain value to user memory at `va`, aligned, in one page
    /// mapped present and user-accessible with the flags in `need`: one walk
    /// and one typed store (the upcall path). `Err` if it spans pages, is
    /// misaligned or is not mapped so.
    pub fn write_user_value<T: super::pod::Pod>(&self, va: u64, value: &T, need: PageTableFlags) -> Result<(), ()> {
        if !va.is_multiple_of(core::mem::align_of::<T>() as u64) {
            return Err(());
        }
        let frame = self.one_user_page(va, core::mem::size_of::<T>(), need)?.ok_or(())?;
        let at = phys_to_virt(frame) + (va & 0xfff);
        // SAFETY: `[at, at + size_of::<T>())` lies in one frame of
        // environment memory (the walk checked present, user and `need`),
        // aligned for `T`, reached through the physical-memory window; the
        // kernel holds no reference into environment memory and runs alone.
        unsafe { core::ptr::write(at as *mut T, *value) };
        Ok(())
    }

    /// Copy user memory at `va` into `out`; every page must be mapped
    /// present and user-accessible with the flags in `need`.
    pub fn read_user(&self, va: u64, out: &mut [u8], need: PageTableFlags) -> Result<(), ()> {
        if let Some(frame) = self.one_user_page(va, out.len(), need)? {
            read_env_frame(frame, (va & 0xfff) as usize, out);
            return Ok(());
        }
        self.user_chunks(va, out.len(), need, |_, _, _, _| {})?;
        self.user_chunks(va, out.len(), need, |frame, offset, at, len| {
            read_env_frame(frame, offset, &mut out[at..at + len])
        })
    }

    /// The common case of a copy, one walk: if `[va, va + len)` lies in one
    /// page, its frame (checked for `need`); None if the range spans pages.
    fn one_user_page(&self, va: u64, len: usize, need: PageTableFlags) -> Result<Option<u64>, ()> {
        if (va & 0xfff) as usize + len > FRAME || len == 0 {
            return Ok(None);
        }
        if va >= shared_abi::USER_TOP {
            return Err(());
        }
        let (frame, flags) = self.translate(va).ok_or(())?;
        if !flags.contains(PageTableFlags::PRESENT | PageTableFlags::USER_ACCESSIBLE | need) {
            return Err(());
        }
        Ok(Some(frame))
    }

    /// Walk the user pages of `[va, va + len)`, giving (frame, offset in
    /// frame, offset in the buffer, chunk length) for each.
    fn user_chunks(
        &self,
        va: u64,
        len: usize,
        need: PageTableFlags,
        mut each: impl FnMut(u64, usize, usize, usize),
    ) -> Result<(), ()> {
        let end = va.checked_add(len as u64).ok_or(())?;
        if end > shared_abi::USER_TOP {
            return Err(());
        }
        let mut done = 0usize;
        while done < len {
            let at = va + done as u64;
            let (frame, flags) = self.translate(at).ok_or(())?;
            if !flags.contains(PageTableFlags::PRESENT | PageTableFlags::USER_ACCESSIBLE | need) {
                return Err(());
            }
            let offset = (at & 0xfff) as usize;
            let chunk = (FRAME - offset).min(len - done);
            each(frame, offset, done, chunk);
            done += chunk;
        }
        Ok(())
    }

    /// Map a page of the kernel half (MMIO windows at boot).
    pub(super) fn map_kernel(&mut self, va: u64, pa: u64, flags: PageTableFlags) -> Result<(), MapError> {
        let alloc: TableAlloc = &mut memory::alloc_frame;
        let entry = self.leaf(va, Some(alloc))?;
        if !entry.is_unused() {
            return Err(MapError::AlreadyMapped);
        }
        // Intermediate tables carry the user bit (as in the user half), but
        // the leaf does not, so ring 3 can never reach the page.
        entry.set_addr(PhysAddr::new(pa), flags | PageTableFlags::PRESENT);
        Ok(())
    }

    /// Mark every leaf of the kernel half global (the kernel image, its
    /// stacks, the physical-memory window, the MMIO windows mapped so far),
    /// so a CR3 load keeps the kernel's TLB entries: a switch then refills
    /// only the user half. Leaves only: the G bit is reserved in upper-level
    /// entries on some CPUs. The kernel half never changes after boot, so
    /// no global entry can go stale. Returns how many leaves were marked.
    /// The caller then turns on CR4.PGE (`cpu::enable_global_pages`).
    pub fn make_kernel_half_global(&mut self) -> usize {
        fn mark(table_pa: u64, level: u8) -> usize {
            let mut marked = 0;
            for entry in table(table_pa).iter_mut() {
                let flags = entry.flags();
                if !flags.contains(PageTableFlags::PRESENT) {
                    continue;
                }
                if level == 1 || flags.contains(PageTableFlags::HUGE_PAGE) {
                    entry.set_flags(flags | PageTableFlags::GLOBAL);
                    marked += 1;
                } else {
                    marked += mark(entry.addr().as_u64(), level - 1);
                }
            }
            marked
        }
        let mut marked = 0;
        for i in 256..512 {
            let entry = &table(self.pml4)[i];
            if entry.flags().contains(PageTableFlags::PRESENT) {
                marked += mark(entry.addr().as_u64(), 3);
            }
        }
        marked
    }

    /// Is the PML4 slot for `va` unused? (Finding a free kernel window.)
    pub fn top_level_free(&self, va: u64) -> bool {
        table(self.pml4)[indices(va)[0]].is_unused()
    }

    /// Translate `va` to (physical address of its page, flags).
    pub fn translate(&self, va: u64) -> Option<(u64, PageTableFlags)> {
        let entry = self.existing_leaf(va & !0xfff).ok()?;
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
        let entry = self.existing_leaf(va & !0xfff).ok()?;
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
        let entry = self.existing_leaf(va & !0xfff).ok()?;
        if entry.is_unused() {
            return None;
        }
        let flags = entry.flags();
        let addr = entry.addr();
        entry.set_addr(addr, flags - (bits & (PageTableFlags::ACCESSED | PageTableFlags::DIRTY)));
        Some(flags)
    }

    /// The hardware bits of up to 64 pages from the page-aligned `va`, bit
    /// `i` of each mask for page `i`: which have a present last-level
    /// entry, which of those have a bit of `report` set, and which had a
    /// bit of `clear` (accessed and/or dirty), now cleared. One walk per
    /// 2 MiB, then a tight loop over the table. Pages at or above
    /// `USER_TOP` (the caller checks its window first) count as not
    /// present and are never touched. The caller flushes the TLB entries
    /// of the pages in `cleared` (see [`flush_loaded`]).
    pub fn take_bits_run(&mut self, va: u64, pages: usize, report: PageTableFlags, clear: PageTableFlags) -> PteBits {
        let clear = clear & (PageTableFlags::ACCESSED | PageTableFlags::DIRTY);
        let mut bits = PteBits::default();
        let pages = pages.min(64);
        let mut done = 0;
        while done < pages {
            let at = (va & !0xfff).wrapping_add(done as u64 * 4096);
            let first = indices(at)[3];
            let run = (512 - first).min(pages - done);
            let leaf = if at < shared_abi::USER_TOP { existing_leaf_table(self.pml4, at) } else { None };
            if let Some(leaf) = leaf {
                let (report, clear) = (report.bits(), clear.bits());
                for k in 0..run {
                    let entry = &mut leaf[first + k];
                    let flags = entry.flags();
                    let raw = flags.bits();
                    if raw & PageTableFlags::PRESENT.bits() == 0 {
                        continue;
                    }
                    let bit = 1u64 << (done + k);
                    bits.present |= bit;
                    if raw & report != 0 {
                        bits.reported |= bit;
                    }
                    if raw & clear != 0 {
                        bits.cleared |= bit;
                        entry.set_flags(PageTableFlags::from_bits_retain(raw & !clear));
                    }
                }
            }
            done += run;
        }
        bits
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
        match self.existing_leaf(va & !0xfff) {
            Ok(entry) if !entry.is_unused() => {
                let addr = entry.addr();
                entry.set_addr(addr, flags | PageTableFlags::PRESENT);
                true
            }
            _ => false,
        }
    }

    /// Free every user-half page-table frame and hand each mapped frame to
    /// `release`; the address space must not be active. Returns how many
    /// page-table frames were freed (the top level included).
    /// Tear down an address space none of whose pages needs releasing
    /// here (every frame mapped in it is held and freed elsewhere, under
    /// keys): free its tables without walking them. The caller must not
    /// have it loaded. Returns the tables freed.
    pub fn destroy_tables(self) -> u64 {
        for &pa in &self.tables {
            memory::free_frame(pa);
        }
        memory::free_frame(self.pml4);
        self.tables.len() as u64 + 1
    }

    pub fn destroy(self, release: &mut dyn FnMut(u64)) -> u64 {
        let mut tables = 0;
        let mut free_table = |pa: u64| {
            tables += 1;
            memory::free_frame(pa);
        };
        let free_table: &mut dyn FnMut(u64) = &mut free_table;
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
        tables
    }
}

/// Invalidate the TLB entry of one page in the loaded address space.
pub fn invlpg(va: u64) {
    x86_64::instructions::tlb::flush(x86_64::VirtAddr::new_truncate(va));
}

/// Flush every non-global TLB entry of the loaded address space (under
/// PCIDs: those tagged with the loaded PCID): CR3 reloaded with the value
/// it holds, PCID bits included, bit 63 (no-flush) clear.
pub fn flush_loaded() {
    let (frame, low_bits) = Cr3::read_raw();
    // SAFETY: the same root table and PCID are loaded again, so every
    // mapping stays as it was; only cached translations are dropped.
    unsafe { Cr3::write_raw(frame, low_bits) };
}
