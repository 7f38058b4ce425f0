//! libos-gc: a library OS for a garbage-collected runtime. Its heap is
//! built from keyed frames it maps itself: a nursery, collected often by
//! evacuating its survivors into an old generation, which major
//! collections mark and sweep (the collector is `libos_gc::heap`). The
//! write barrier is the MMU's dirty bit, read and cleared with `map_query`
//! (`barrier = dirty-bits`, the default), or software card marking
//! (`barrier = cards`). It answers revocation the way only a GC can:
//! collect, return the frames that collection emptied, and shrink the
//! nursery, instead of swapping.
//!
//! Manifest keys: `workload` (`lists`, the default boot's small workload,
//! or `gcbench`), `pages` (heap budget), `nursery` (nursery pages),
//! `reserve` (pages mapped up front), `cycles` (lists), `verify` (`end`,
//! `major`, `every`: when the live set is checked), GCBench's
//! `stretch_depth`, `long_lived_depth`, `min_depth`, `max_depth`,
//! `array_words`, `old_page_objects`, `rounds`, and `unit` (the BENCH lines' unit).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;
use libos_gc::heap::{Barrier, Cards, Config, DirtyBits, Heap, Memory, PAGE_BYTES, WINDOW_PAGES};
use libos_gc::workload::{GcBenchConfig, Lists, Mutator, Verify};
use libos_runtime::frames;
use libos_runtime::println;
use libos_runtime::revocation::{self, RevocationInbox};
use libos_runtime::rt::{self, Env};
use libos_runtime::start::DYNAMIC_BASE;
use libos_runtime::syscall::{self, map_bits, map_flags, query_range, rights, FrameKey};

libos_runtime::libos_main!(main);

/// The heap's window of the dynamic region, on keyed frames.
struct FrameMemory {
    keys: Vec<Option<FrameKey>>,
}

impl FrameMemory {
    fn new() -> Self {
        FrameMemory { keys: vec![None; WINDOW_PAGES] }
    }

    fn va(page: usize) -> u64 {
        DYNAMIC_BASE + page as u64 * PAGE_BYTES
    }
}

impl FrameMemory {
    /// Read and clear one page's dirty bit with the per-page `map_query`
    /// (the start-up check compares it with the batched call).
    fn take_dirty(&mut self, page: usize) -> bool {
        match syscall::map_query_clear(Self::va(page), map_bits::DIRTY) {
            // Only a page-table entry holds the bit; anything else: assume written.
            Ok(bits) if bits & map_bits::IN_SLOT != 0 => bits & map_bits::DIRTY != 0,
            _ => true,
        }
    }

    /// The batched query over pages `first..first + pages` (at most 64).
    fn dirty_word(&mut self, first: usize, pages: usize) -> u64 {
        let mut word = [0];
        self.take_dirty_range(first, pages, &mut word);
        word[0]
    }
}

impl Memory for FrameMemory {
    fn base(&self) -> u64 {
        DYNAMIC_BASE
    }

    #[inline(always)]
    fn load(&self, addr: u64) -> u64 {
        // SAFETY: the heap only reads words of pages it mapped through
        // `map_page`, in the dynamic window, where no Rust object lives; a
        // bug that read elsewhere would fault and end only this libOS.
        unsafe { core::ptr::read(addr as *const u64) }
    }

    #[inline(always)]
    fn store(&mut self, addr: u64, value: u64) {
        // SAFETY: as for `load`: a word of a heap page mapped writable,
        // which nothing else in this program aliases.
        unsafe { core::ptr::write(addr as *mut u64, value) }
    }

    fn map_page(&mut self, page: usize) -> bool {
        // Guaranteed: the dirty bit lives in the page-table entry, which a
        // slot eviction or a switch under the `stlb` policy would drop.
        let flags = map_flags::WRITE | map_flags::GUARANTEED;
        match frames::alloc_map(Self::va(page), rights::READ | rights::WRITE, flags) {
            Ok((_, key)) => {
                self.keys[page] = Some(key);
                true
            }
            Err(_) => false,
        }
    }

    fn unmap_page(&mut self, page: usize) {
        if let Some(key) = self.keys[page].take() {
            let _ = syscall::unmap(Self::va(page));
            let _ = syscall::frame_free(key);
        }
    }

    fn take_dirty_range(&mut self, first: usize, pages: usize, out: &mut [u64]) {
        // Only a page-table entry holds the bit; a page without one (not in
        // a slot) is reported set: assume written.
        let flags = query_range::CLEAR_DIRTY | query_range::UNKNOWN_SET;
        let most = query_range::MAX_QUERY_PAGES as usize;
        let mut done = 0;
        while done < pages {
            let run = (pages - done).min(most);
            let words = &mut out[done / 64..(done + run).div_ceil(64)];
            if syscall::map_query_range(Self::va(first + done), run as u64, words, flags).is_err() {
                // Cannot tell: every page of the run counts as written.
                for i in done..done + run {
                    out[i / 64] |= 1 << (i % 64);
                }
            }
            done += run;
        }
    }

    fn clock(&self) -> u64 {
        rt::rdtsc()
    }
}

/// What one dirty-bit query costs (the fewest ticks of 8): the per-page
/// `map_query` and the batched `map_query_range` over one page.
#[derive(Clone, Copy, Default)]
struct QueryCost {
    page_ticks: u64,
    range_ticks: u64,
}

/// Does this MMU set the dirty bit on a write, and does clearing it stick
/// until the next write? Checked on window page 0 before the heap uses it,
/// with the per-page query and with the batched one (over page 0 and the
/// unmapped page 1, which must report "unknown", set). Returns what a
/// query costs, if so.
fn dirty_bit_works(memory: &mut FrameMemory) -> Option<QueryCost> {
    if !memory.map_page(0) {
        return None;
    }
    let va = FrameMemory::va(0);
    memory.take_dirty(0);
    let _ = memory.load(va + 8);
    let clean_after_read = !memory.take_dirty(0);
    memory.store(va + 8, 1);
    let dirty_after_write = memory.take_dirty(0);
    let clean_after_clear = !memory.take_dirty(0);
    // The batched call: page 0 written, page 1 unknown; then cleared.
    memory.store(va + 8, 3);
    let range_dirty = memory.dirty_word(0, 2) == 0b11;
    let range_cleared = memory.dirty_word(0, 2) == 0b10;
    let _ = memory.load(va + 16);
    let range_clean_after_read = memory.dirty_word(0, 1) == 0;
    let mut cost = QueryCost { page_ticks: u64::MAX, range_ticks: u64::MAX };
    for _ in 0..8 {
        memory.store(va + 8, 2);
        let started = rt::rdtsc();
        memory.take_dirty(0);
        cost.page_ticks = cost.page_ticks.min(rt::rdtsc().wrapping_sub(started));
        memory.store(va + 8, 2);
        let started = rt::rdtsc();
        memory.dirty_word(0, 1);
        cost.range_ticks = cost.range_ticks.min(rt::rdtsc().wrapping_sub(started));
    }
    memory.unmap_page(0);
    let per_page = clean_after_read && dirty_after_write && clean_after_clear;
    let batched = range_dirty && range_cleared && range_clean_after_read;
    (per_page && batched).then_some(cost)
}

fn param<T: core::str::FromStr>(env: &Env, key: &str, default: T) -> T {
    env.param(key).and_then(|p| p.parse().ok()).unwrap_or(default)
}

/// What the libOS did for the kernel.
#[derive(Default)]
struct Revocations {
    frames_returned: u64,
    frames_lost: u64,
}

/// At a safe point: answer the kernel by collecting, giving empty pages
/// back and shrinking the nursery.
fn answer_kernel<M: Memory, B: Barrier>(
    heap: &mut Heap<M, B>,
    inbox: &RevocationInbox,
    quota_pages: usize,
    done: &mut Revocations,
) {
    let lost = inbox.take_aborted();
    if lost != 0 {
        done.frames_lost += lost;
        println!("revocation: the kernel took {} frame(s) by force", lost);
    }
    let owed = inbox.take_requested() as usize;
    if owed == 0 {
        return;
    }
    // Frames freed since the request count toward it (the kernel counts
    // down what we owe on every frame_free).
    let outstanding = syscall::revoke_done().unwrap_or(0) as usize;
    let (old, nursery) = heap.give_back(outstanding);
    let still_owed = syscall::revoke_done().unwrap_or(0);
    let returned = owed.saturating_sub(still_owed as usize);
    done.frames_returned += returned as u64;
    // Keep what is live; never plan below the quota, which the kernel
    // guarantees (it takes frames back from others for us).
    heap.set_budget_pages(heap.budget_pages().min(heap.mapped_pages().max(quota_pages)));
    println!(
        "revocation: asked for {} frame(s); collected and returned {} page(s) ({} empty old, {} of the nursery, now {} pages); {} pages mapped (still owed {})",
        owed,
        returned,
        old,
        nursery,
        heap.nursery_pages(),
        heap.mapped_pages(),
        still_owed
    );
}

fn main(env: &Env) -> i32 {
    let budget: usize = param(env, "pages", 64);
    let nursery: usize = param(env, "nursery", (budget / 4).max(1));
    let barrier = env.param("barrier").unwrap_or(DirtyBits::NAME);
    let mut memory = FrameMemory::new();
    match barrier {
        "dirty-bits" => match dirty_bit_works(&mut memory) {
            Some(cost) => {
                println!(
                    "gc: dirty-bit check ok: set by a write, not by a read, cleared by map_query and map_query_range ({} ticks a map_query, {} a map_query_range of one page)",
                    cost.page_ticks, cost.range_ticks
                );
                run::<DirtyBits>(env, memory, budget, nursery, cost)
            }
            None => {
                println!("gc: this MMU's dirty bit cannot be used; falling back to cards");
                run::<Cards>(env, memory, budget, nursery, QueryCost::default())
            }
        },
        "cards" => run::<Cards>(env, memory, budget, nursery, QueryCost::default()),
        other => {
            println!("gc: unknown barrier `{}` (dirty-bits or cards)", other);
            1
        }
    }
}

fn run<B: Barrier>(env: &Env, memory: FrameMemory, budget: usize, nursery: usize, query: QueryCost) -> i32 {
    let workload = env.param("workload").unwrap_or("lists");
    let verify = env.param("verify").and_then(Verify::parse).unwrap_or(Verify::Major);
    println!(
        "libos-gc up: env {} heap up to {} pages, nursery {} pages, barrier {}, workload {}",
        env.id,
        budget,
        nursery,
        B::NAME,
        workload
    );
    // The runtime's handler only notes the kernel's requests (it may
    // interrupt the collector); the workload answers them at safe points.
    let Ok(inbox) = revocation::listen() else {
        println!("cannot register the revocation handler");
        return 1;
    };
    let config = Config { budget_pages: budget, nursery_pages: nursery, poison: verify == Verify::Every };
    let Ok(mut heap) = Heap::<FrameMemory, B>::new(memory, config) else {
        println!("gc: cannot map the nursery");
        return 1;
    };
    // A runtime reserves its arena up front (`reserve` pages).
    let reserve: usize = param(env, "reserve", 0);
    if reserve > 0 {
        println!("gc: reserved {} pages", heap.reserve(reserve));
    }
    let quota_pages = env.quota_frames as usize;
    let mut done = Revocations::default();
    let code = match workload {
        "lists" => lists(env, &mut heap, verify, inbox, quota_pages, &mut done),
        "gcbench" => gcbench(env, &mut heap, verify, inbox, quota_pages, &mut done, query),
        other => {
            println!("gc: unknown workload `{}` (lists or gcbench)", other);
            1
        }
    };
    // Everything left is garbage once the roots go.
    let freed = heap.release_all();
    println!(
        "gc: frames returned on request {}, lost to force {}, freed at exit {}",
        done.frames_returned, done.frames_lost, freed
    );
    if code == 0 {
        println!("done");
    }
    code
}

/// The default boot's workload: lists that grow and are dropped, among
/// lots of short-lived garbage.
fn lists<B: Barrier>(
    env: &Env,
    heap: &mut Heap<FrameMemory, B>,
    verify: Verify,
    inbox: &RevocationInbox,
    quota_pages: usize,
    done: &mut Revocations,
) -> i32 {
    let cycles: u64 = param(env, "cycles", 5);
    let mut mutator = Mutator::new(heap, verify);
    let mut lists = Lists::new(&mut mutator);
    for cycle in 1..=cycles {
        for step in 0..2000u64 {
            if let Err(failure) = lists.step(&mut mutator, cycle, step) {
                println!("gc: {}", failure);
                return 1;
            }
            if step % 128 == 0 {
                answer_kernel(mutator.heap, inbox, quota_pages, done);
                syscall::yield_now();
            }
        }
        let stats = &mutator.heap.stats;
        println!(
            "cycle {}: {} objects allocated, {} live, {} pages mapped, {} collections ({} minor, {} major)",
            cycle,
            mutator.allocated,
            lists.live(),
            mutator.heap.mapped_pages(),
            stats.minors + stats.majors,
            stats.minors,
            stats.majors
        );
    }
    match mutator.verify_now("final") {
        Ok(walk) => {
            println!("gc: {} objects live and intact, {} live-set checks passed", walk.objects, mutator.checks);
            0
        }
        Err(failure) => {
            println!("gc: {}", failure);
            1
        }
    }
}

/// Boehm's GCBench, scaled down, with the figures `cargo xtask bench` reads.
fn gcbench<B: Barrier>(
    env: &Env,
    heap: &mut Heap<FrameMemory, B>,
    verify: Verify,
    inbox: &RevocationInbox,
    quota_pages: usize,
    done: &mut Revocations,
    query: QueryCost,
) -> i32 {
    let defaults = GcBenchConfig::default();
    let config = GcBenchConfig {
        stretch_depth: param(env, "stretch_depth", defaults.stretch_depth).min(20),
        long_lived_depth: param(env, "long_lived_depth", defaults.long_lived_depth).min(18),
        array_words: param(env, "array_words", defaults.array_words).clamp(1, 500),
        min_depth: param(env, "min_depth", defaults.min_depth).min(18),
        max_depth: param(env, "max_depth", defaults.max_depth).min(18),
        old_page_objects: param(env, "old_page_objects", defaults.old_page_objects),
        rounds: param(env, "rounds", defaults.rounds).max(1),
    };
    let unit = env.param("unit").unwrap_or("instructions");
    println!(
        "gcbench: stretch depth {}, long-lived tree depth {} and array of {} words, trees of depth {}..={}",
        config.stretch_depth, config.long_lived_depth, config.array_words, config.min_depth, config.max_depth
    );
    let started = rt::rdtsc();
    let mut mutator = Mutator::new(heap, verify);
    let result = mutator.gcbench(&config, |heap| answer_kernel(heap, inbox, quota_pages, done));
    let total = rt::rdtsc().wrapping_sub(started);
    let report = match result {
        Ok(report) => report,
        Err(failure) => {
            println!("gc: {}", failure);
            return 1;
        }
    };
    let stats = &heap.stats;
    let collection = stats.collection_ticks();
    let mutator_ticks = total.saturating_sub(collection);
    println!(
        "gcbench: {} old-page-only objects survived a minor collection intact; {} live-set checks passed",
        report.old_page_survivors, report.checks
    );
    println!(
        "gcbench: live objects {} checksum {:#018x} after {} allocated",
        report.live, report.checksum, report.allocated
    );
    println!(
        "gcbench: barrier {}: mutator {} {}, collection {} ({} minor, {} major), dirty-bit queries {}, old pages queried {} scanned {}, cards scanned {}, {} KiB scanned",
        B::NAME,
        mutator_ticks,
        unit,
        collection,
        stats.minors,
        stats.majors,
        stats.dirty_queries,
        stats.pages_queried,
        stats.pages_scanned,
        stats.cards_scanned,
        stats.bytes_scanned / 1024
    );
    let name = if B::CARDS { "cards" } else { "dirty" };
    println!(
        "BENCH op=gc_{}_mutator unit={} median={} min={} max={} target=- events=objects:{},trees:{}",
        name, unit, mutator_ticks, mutator_ticks, mutator_ticks, report.allocated, report.trees
    );
    println!(
        "BENCH op=gc_{}_collection unit={} median={} min={} max={} target=- events=minor:{},major:{},promoted:{}",
        name, unit, collection, collection, collection, stats.minors, stats.majors, stats.promoted
    );
    for (kind, pauses) in [("minor", &stats.minor_pauses), ("major", &stats.major_pauses)] {
        let mut sorted = pauses.clone();
        sorted.sort_unstable();
        if let (Some(&min), Some(&max)) = (sorted.first(), sorted.last()) {
            let mean = sorted.iter().sum::<u64>() / sorted.len() as u64;
            println!(
                "BENCH op=gc_{}_{}_pause unit={} median={} min={} max={} target=- events=count:{},mean:{}",
                name,
                kind,
                unit,
                sorted[sorted.len() / 2],
                min,
                max,
                sorted.len(),
                mean
            );
        }
    }
    let per_minor = |n: u64| n as f64 / stats.minors.max(1) as f64;
    println!(
        "BENCH op=gc_{}_scanned_per_minor unit=pages median={:.1} min={:.1} max={:.1} target=- events=queries:{:.1},pages_asked:{:.1},query:{},cards:{:.1},kib:{:.1},rs_ticks:{:.0}",
        name,
        per_minor(stats.pages_scanned),
        per_minor(stats.pages_scanned),
        per_minor(stats.pages_scanned),
        per_minor(stats.dirty_queries),
        per_minor(stats.pages_queried),
        query.range_ticks,
        per_minor(stats.cards_scanned),
        per_minor(stats.bytes_scanned) / 1024.0,
        per_minor(stats.remembered_set_ticks)
    );
    0
}
