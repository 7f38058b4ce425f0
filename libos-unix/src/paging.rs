//! Demand paging over frames from the kernel: a region of virtual pages,
//! a frame budget, a replacement policy from the manifest, and a backing
//! store in the heap. Also the answer to the kernel's repossession
//! requests: page out and give the frames back.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use libos_runtime::frames;
use libos_runtime::println;
use libos_runtime::revocation::{RepossessionReader, INBOX};
use libos_runtime::syscall::{self, map_bits, map_flags, rights, Error, FrameKey};
use libos_runtime::upcall::UpcallFrame;
use libos_unix::pager::Pager;
use spin::Mutex;

const PAGE: u64 = 4096;

pub static REGION: Mutex<Option<Region>> = Mutex::new(None);

/// What paging did, for the scenario report.
#[derive(Clone, Copy, Default, Debug)]
pub struct PagingStats {
    pub faults: u64,
    pub page_ins: u64,
    pub page_outs: u64,
    pub frames_returned: u64,
    pub frames_lost: u64,
}

pub struct Region {
    pub base: u64,
    page_count: usize,
    /// The frame each resident page lives in.
    resident: Vec<Option<(FrameKey, u64)>>,
    /// Page contents written out when the page was evicted dirty.
    backing: Vec<Option<Box<[u8]>>>,
    pager: Box<dyn Pager>,
    /// Frames we may hold (shrinks when we give frames back).
    budget: usize,
    held: usize,
    /// The entries of the repossession vector already reconciled.
    repossessions: RepossessionReader,
    pub stats: PagingStats,
}

impl Region {
    pub fn new(base: u64, page_count: usize, budget: usize, pager: Box<dyn Pager>) -> Self {
        Region {
            base,
            page_count,
            resident: vec![None; page_count],
            backing: (0..page_count).map(|_| None).collect(),
            pager,
            budget,
            held: 0,
            repossessions: RepossessionReader::new(),
            stats: PagingStats::default(),
        }
    }

    pub fn pager_name(&self) -> &'static str {
        self.pager.name()
    }

    fn va(&self, page: usize) -> u64 {
        self.base + page as u64 * PAGE
    }

    pub fn contains(&self, va: u64) -> bool {
        va >= self.base && va < self.base + self.page_count as u64 * PAGE
    }

    /// Allocate a fresh frame, waiting while the kernel takes frames back for us.
    fn new_frame() -> Result<(FrameKey, u64), Error> {
        frames::alloc_frame(rights::READ | rights::WRITE).map(|(pa, key)| (key, pa))
    }

    /// Write a resident page out (if dirty) and unmap it; returns its frame.
    fn evict(&mut self, page: usize) -> Option<(FrameKey, u64)> {
        let (key, pa) = self.resident[page].take()?;
        let va = self.va(page);
        let bits = syscall::map_query(va, false).unwrap_or(0);
        // Outside a slot the kernel no longer knows the dirty bit: assume dirty.
        let dirty = bits & map_bits::DIRTY != 0 || bits & map_bits::IN_SLOT == 0;
        // A clean page keeps its backing copy (or was never written: zero).
        if dirty {
            // SAFETY: the page is still mapped (we unmap below) and ours.
            let contents = unsafe { core::slice::from_raw_parts(va as *const u8, PAGE as usize) };
            self.backing[page] = Some(contents.into());
            self.stats.page_outs += 1;
        }
        let _ = syscall::unmap(va);
        self.pager.on_evicted(page);
        Some((key, pa))
    }

    fn choose_victim(&mut self) -> Option<usize> {
        let base = self.base;
        let mut accessed =
            |page: usize| syscall::map_query(base + page as u64 * PAGE, true).unwrap_or(0) & map_bits::ACCESSED != 0;
        self.pager.choose_victim(&mut accessed)
    }

    /// The page-fault path: make `va`'s page resident.
    pub fn fault(&mut self, va: u64) -> Result<(), Error> {
        self.stats.faults += 1;
        let page = ((va - self.base) / PAGE) as usize;
        if let Some((key, _)) = self.resident[page] {
            // Resident, yet it faulted: the kernel's software TLB is a cache
            // and dropped the mapping. Our page table is the authority:
            // establish it again with the same frame.
            let page_va = self.va(page);
            let _ = syscall::unmap(page_va);
            return syscall::map(page_va, key, map_flags::WRITE);
        }
        let mut fresh = None;
        if self.held < self.budget {
            match Self::new_frame() {
                Ok(frame) => {
                    self.held += 1;
                    fresh = Some(frame);
                }
                // Nobody can spare a frame: live within what we hold.
                Err(Error::QuotaExceeded) | Err(Error::NoMemory) if self.held > 0 => self.budget = self.held,
                Err(error) => return Err(error),
            }
        }
        let frame = match fresh {
            Some(frame) => frame,
            None => {
                let victim = self.choose_victim().ok_or(Error::NoMemory)?;
                self.evict(victim).ok_or(Error::NoMemory)?
            }
        };
        let va = self.va(page);
        syscall::map(va, frame.0, map_flags::WRITE)?;
        match &self.backing[page] {
            Some(saved) => {
                // SAFETY: just mapped writable, ours alone.
                unsafe { core::ptr::copy_nonoverlapping(saved.as_ptr(), va as *mut u8, PAGE as usize) };
                self.stats.page_ins += 1;
            }
            // A reused frame still holds its last page: zero-fill.
            // SAFETY: as above.
            None => unsafe { core::ptr::write_bytes(va as *mut u8, 0, PAGE as usize) },
        }
        // Our own copy-in dirtied the page; only later writes should count.
        let _ = syscall::map_query_clear(va, map_bits::DIRTY);
        self.resident[page] = Some(frame);
        self.pager.on_resident(page);
        Ok(())
    }

    /// A periodic hook: let the pager sample accessed bits.
    pub fn tick(&mut self) {
        let base = self.base;
        let mut accessed =
            |page: usize| syscall::map_query(base + page as u64 * PAGE, true).unwrap_or(0) & map_bits::ACCESSED != 0;
        self.pager.tick(&mut accessed);
    }

    /// At a safe point: answer an open repossession request by paging out
    /// and freeing frames, and account for frames the kernel took by force.
    pub fn answer_kernel(&mut self) {
        if INBOX.take_aborted() != 0 {
            for entry in self.repossessions.new_entries() {
                if self.contains(entry.va) {
                    let page = ((entry.va - self.base) / PAGE) as usize;
                    if self.resident[page].take().is_some() {
                        self.pager.on_evicted(page);
                        self.held -= 1;
                        self.budget = self.budget.min(self.held.max(1));
                        self.stats.frames_lost += 1;
                    }
                }
            }
        }
        let owed = INBOX.take_requested();
        if owed == 0 {
            return;
        }
        let mut returned = 0;
        for _ in 0..owed {
            let Some(victim) = self.choose_victim() else { break };
            let Some((key, _)) = self.evict(victim) else { break };
            if syscall::frame_free(key).is_ok() {
                returned += 1;
                self.held -= 1;
            }
        }
        self.budget = self.budget.min(self.held.max(1));
        self.stats.frames_returned += returned;
        let still_owed = syscall::revoke_done().unwrap_or(0);
        println!(
            "revocation: asked for {} frame(s), paged out and returned {}; budget now {} (still owed {})",
            owed, returned, self.budget, still_owed
        );
    }
}

/// Page-fault upcall: demand-page the region; anything else is a bug.
pub fn on_page_fault(frame: &mut UpcallFrame) {
    let mut guard = REGION.lock();
    match guard.as_mut() {
        Some(region) if region.contains(frame.fault_addr) => {
            if let Err(error) = region.fault(frame.fault_addr) {
                println!("paging: cannot bring in {:#x}: {}", frame.fault_addr, error.name());
                syscall::exit(3);
            }
        }
        _ => {
            println!("segfault at {:#x} (rip {:#x})", frame.fault_addr, frame.rip);
            syscall::exit(139);
        }
    }
}

/// Reach a safe point: answer the kernel if it asked for anything. The
/// revocation upcall only notes its notice in the runtime's inbox
/// (`revocation::listen`), because the region may be locked by the code it
/// interrupted; the workload answers here, well within the deadline.
pub fn safe_point() {
    if INBOX.pending() {
        if let Some(region) = REGION.lock().as_mut() {
            region.answer_kernel();
        }
    }
}
