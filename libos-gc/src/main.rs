//! libos-gc: a library OS for a garbage-collected runtime. Its heap is
//! built from keyed frames it maps itself; objects live in fixed-size cells
//! on those pages; a mark phase from the roots finds live cells and every
//! page with none left is reused, or, when the kernel wants frames, unmapped
//! and its frame given back. So it answers revocation the way only a GC
//! can: collect, and return the frames that collection emptied, instead of
//! swapping.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;
use libos_runtime::frames;
use libos_runtime::println;
use libos_runtime::revocation::{self, RevocationInbox};
use libos_runtime::rt::Env;
use libos_runtime::start::DYNAMIC_BASE;
use libos_runtime::syscall::{self, map_flags, rights, FrameKey};

libos_runtime::libos_main!(main);

const PAGE: u64 = 4096;
/// Bytes per object cell.
const CELL: u64 = 64;
const CELLS_PER_PAGE: usize = (PAGE / CELL) as usize;
/// Pages of virtual address space the heap may use.
const HEAP_PAGES: usize = 512;

/// A reference to an object: heap page and cell.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct ObjRef {
    page: u32,
    cell: u32,
}

/// An object header as stored in its cell: a reference to the next object
/// of its list (or none), then payload words.
const NO_NEXT: u64 = u64::MAX;

struct HeapPage {
    key: FrameKey,
    /// Cells handed out on this page (bump allocation).
    used: usize,
}

struct GcHeap {
    pages: Vec<Option<HeapPage>>,
    /// The page objects are being bump-allocated from.
    current: Option<usize>,
    /// Pages we may map at most (shrinks when the kernel takes frames).
    page_budget: usize,
    /// Pages the kernel guarantees us (our quota).
    quota_pages: usize,
    collections: u64,
    frames_returned: u64,
    frames_lost: u64,
}

fn cell_addr(obj: ObjRef) -> *mut u64 {
    (DYNAMIC_BASE + obj.page as u64 * PAGE + obj.cell as u64 * CELL) as *mut u64
}

fn read_next(obj: ObjRef) -> Option<ObjRef> {
    // SAFETY: live objects sit on mapped heap pages.
    let raw = unsafe { core::ptr::read_volatile(cell_addr(obj)) };
    (raw != NO_NEXT).then_some(ObjRef { page: (raw >> 32) as u32, cell: raw as u32 })
}

fn encode(next: Option<ObjRef>) -> u64 {
    next.map(|o| (o.page as u64) << 32 | o.cell as u64).unwrap_or(NO_NEXT)
}

impl GcHeap {
    fn new(page_budget: usize, quota_pages: usize) -> Self {
        GcHeap {
            pages: (0..HEAP_PAGES).map(|_| None).collect(),
            current: None,
            page_budget: page_budget.min(HEAP_PAGES),
            quota_pages,
            collections: 0,
            frames_returned: 0,
            frames_lost: 0,
        }
    }

    fn mapped_pages(&self) -> usize {
        self.pages.iter().filter(|p| p.is_some()).count()
    }

    /// Map a fresh page; None if the budget or the kernel says no.
    fn grow(&mut self) -> Option<usize> {
        if self.mapped_pages() >= self.page_budget {
            return None;
        }
        let index = self.pages.iter().position(|p| p.is_none())?;
        let va = DYNAMIC_BASE + index as u64 * PAGE;
        let (_, key) = frames::alloc_map(va, rights::READ | rights::WRITE, map_flags::WRITE).ok()?;
        self.pages[index] = Some(HeapPage { key, used: 0 });
        Some(index)
    }

    /// Allocate an object linked to `next`; collect when out of room.
    fn alloc(&mut self, next: Option<ObjRef>, payload: u64, roots: &[Option<ObjRef>]) -> Option<ObjRef> {
        for attempt in 0..2 {
            let page = match self.current.filter(|&p| self.pages[p].as_ref().is_some_and(|h| h.used < CELLS_PER_PAGE)) {
                Some(page) => Some(page),
                // A page the last collection emptied, else a fresh one.
                None => self.pages.iter().position(|p| p.as_ref().is_some_and(|h| h.used == 0)).or_else(|| self.grow()),
            };
            if let Some(page) = page {
                self.current = Some(page);
                let heap_page = self.pages[page].as_mut().expect("current page is mapped");
                let obj = ObjRef { page: page as u32, cell: heap_page.used as u32 };
                heap_page.used += 1;
                // SAFETY: the cell is on a page we just checked is mapped.
                unsafe {
                    core::ptr::write_volatile(cell_addr(obj), encode(next));
                    core::ptr::write_volatile(cell_addr(obj).add(1), payload);
                }
                return Some(obj);
            }
            if attempt == 0 {
                self.collect(roots, 0);
            }
        }
        None
    }

    /// Mark from the roots. Pages with no live cell are dead: up to
    /// `give_back` of them are unmapped and their frames returned to the
    /// kernel (discarded, never written out); the rest are kept and reused.
    /// Returns how many frames were freed.
    fn collect(&mut self, roots: &[Option<ObjRef>], give_back: usize) -> usize {
        self.collections += 1;
        let mut live = vec![0u32; HEAP_PAGES];
        for root in roots.iter().flatten() {
            let mut at = Some(*root);
            while let Some(obj) = at {
                live[obj.page as usize] += 1;
                at = read_next(obj);
            }
        }
        let mut freed = 0;
        for index in 0..HEAP_PAGES {
            if live[index] == 0 && freed < give_back {
                if let Some(page) = self.pages[index].take() {
                    let _ = syscall::unmap(DYNAMIC_BASE + index as u64 * PAGE);
                    let _ = syscall::frame_free(page.key);
                    if self.current == Some(index) {
                        self.current = None;
                    }
                    freed += 1;
                }
            } else if live[index] == 0 {
                if let Some(page) = self.pages[index].as_mut() {
                    page.used = 0;
                }
            }
        }
        freed
    }

    /// At a safe point: answer the kernel by collecting.
    fn answer_kernel(&mut self, inbox: &RevocationInbox, roots: &[Option<ObjRef>]) {
        let lost = inbox.take_aborted();
        if lost != 0 {
            self.frames_lost += lost;
            println!("revocation: the kernel took {} frame(s) by force", lost);
        }
        let owed = inbox.take_requested() as usize;
        if owed == 0 {
            return;
        }
        // Frames freed by any collection since the request count toward it
        // (the kernel decrements what we owe on every frame_free).
        let outstanding = syscall::revoke_done().unwrap_or(0) as usize;
        self.collect(roots, outstanding);
        let still_owed = syscall::revoke_done().unwrap_or(0);
        let returned = owed.saturating_sub(still_owed as usize);
        self.frames_returned += returned as u64;
        // Keep what is live; never plan below the quota, which the kernel
        // guarantees (it takes frames back from others for us).
        self.page_budget = self.page_budget.min(self.mapped_pages().max(self.quota_pages)).max(1);
        println!(
            "revocation: asked for {} frame(s); collected and returned {} dead page(s); {} pages mapped (still owed {})",
            owed,
            returned,
            self.mapped_pages(),
            still_owed
        );
    }
}

fn main(env: &Env) -> i32 {
    let budget = env.param("pages").and_then(|p| p.parse().ok()).unwrap_or(64usize);
    let cycles = env.param("cycles").and_then(|p| p.parse().ok()).unwrap_or(5u64);
    println!("libos-gc up: env {} heap up to {} pages of {} cells", env.id, budget, CELLS_PER_PAGE);
    // The runtime's handler only notes the kernel's requests (it may
    // interrupt the collector); the loop answers them at safe points.
    let Ok(inbox) = revocation::listen() else {
        println!("cannot register the revocation handler");
        return 1;
    };
    let mut heap = GcHeap::new(budget, env.quota_frames as usize);
    // A runtime reserves its arena up front (`reserve` pages).
    let reserve = env.param("reserve").and_then(|p| p.parse().ok()).unwrap_or(0usize);
    while heap.mapped_pages() < reserve.min(budget) {
        if heap.grow().is_none() {
            break;
        }
    }
    if reserve > 0 {
        println!("gc: reserved {} pages", heap.mapped_pages());
    }
    // Roots: a ring of lists; each cycle replaces some lists with new ones
    // and makes lots of short-lived garbage in between.
    const LISTS: usize = 16;
    const MAX_LIST: usize = 12;
    let mut roots: Vec<Option<ObjRef>> = vec![None; LISTS];
    let mut lengths = [0usize; LISTS];
    let mut allocated = 0u64;
    for cycle in 1..=cycles {
        for step in 0..2000u64 {
            let list = (step as usize * 7 + cycle as usize) % LISTS;
            let keep = step % 4 == 0;
            if keep {
                // Extend a live list; a long list is dropped whole (garbage).
                lengths[list] += 1;
                let head = if lengths[list] > MAX_LIST {
                    lengths[list] = 1;
                    None
                } else {
                    roots[list]
                };
                match heap.alloc(head, cycle << 32 | step, &roots) {
                    Some(obj) => roots[list] = Some(obj),
                    None => {
                        println!("gc: out of memory");
                        return 1;
                    }
                }
            } else if heap.alloc(None, step, &roots).is_none() {
                println!("gc: out of memory");
                return 1;
            }
            allocated += 1;
            if step % 128 == 0 {
                heap.answer_kernel(inbox, &roots);
                syscall::yield_now();
            }
        }
        let live: usize = roots.iter().map(|r| core::iter::successors(*r, |o| read_next(*o)).count()).sum();
        println!(
            "cycle {}: {} objects allocated, {} live, {} pages mapped, {} collections",
            cycle,
            allocated,
            live,
            heap.mapped_pages(),
            heap.collections
        );
    }
    // Everything left is garbage once the roots go.
    let freed = heap.collect(&[], usize::MAX);
    println!(
        "gc: frames returned on request {}, lost to force {}, freed at exit {}",
        heap.frames_returned, heap.frames_lost, freed
    );
    println!("done");
    0
}
