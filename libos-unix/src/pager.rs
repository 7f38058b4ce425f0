//! Page-replacement policies (FIFO, Clock, LRU-approx) and a simulator to compare them.
//!
//! The kernel tells the libOS which pages are resident and lets it read
//! (and clear) their hardware accessed bits; which page to give up when the
//! frame budget is spent is the libOS's choice, made by a [`Pager`]. The
//! policy is named in the manifest and built with [`by_name`].
//!
//! Protocol: the libOS calls [`Pager::on_resident`] when a page comes in and
//! [`Pager::on_evicted`] when it leaves, whether the pager chose it or the
//! kernel revoked it. [`Pager::choose_victim`] only names a page; it stays
//! a candidate until `on_evicted` reports it gone. Both notifications are
//! idempotent: a page already resident, or not resident, is ignored.
//!
//! [`Simulator`] models a frame budget with accessed and dirty bits, runs a
//! reference string through a pager and counts faults and page-outs.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;

/// A page-replacement policy over resident virtual pages (identified by page index).
pub trait Pager: Send {
    /// The policy's manifest name, as accepted by [`by_name`].
    fn name(&self) -> &'static str;

    /// `page` was brought in (ignored if it is already resident).
    fn on_resident(&mut self, page: usize);

    /// `page` left, chosen by us or taken by revocation (ignored if it is
    /// not resident).
    fn on_evicted(&mut self, page: usize);

    /// Choose a resident page to give up, or `None` if there is none.
    /// `accessed(page)` reads AND clears the hardware accessed bit of a
    /// resident page (the libOS gets it from the kernel). The victim stays
    /// resident until [`on_evicted`](Pager::on_evicted) reports it gone.
    fn choose_victim(&mut self, accessed: &mut dyn FnMut(usize) -> bool) -> Option<usize>;

    /// Periodic hook (e.g. on a timer upcall) for policies that sample
    /// accessed bits; `accessed` is as for [`choose_victim`](Pager::choose_victim).
    fn tick(&mut self, _accessed: &mut dyn FnMut(usize) -> bool) {}
}

/// Manifest names of every policy, for [`by_name`].
pub const NAMES: [&str; 3] = ["fifo", "clock", "lru"];

/// The policy a manifest names: `"fifo"`, `"clock"` or `"lru"` (LRU-approx).
pub fn by_name(name: &str) -> Option<Box<dyn Pager>> {
    match name {
        "fifo" => Some(Box::new(Fifo::new())),
        "clock" => Some(Box::new(Clock::new())),
        "lru" => Some(Box::new(LruApprox::new())),
        _ => None,
    }
}

/// Resident pages in arrival order, with O(log n) removal from anywhere.
#[derive(Default)]
struct ArrivalQueue {
    arrival_of: BTreeMap<usize, u64>,
    page_at: BTreeMap<u64, usize>,
    next_arrival: u64,
}

impl ArrivalQueue {
    /// Append `page` unless it is queued already; returns whether it was added.
    fn push_back(&mut self, page: usize) -> bool {
        if self.arrival_of.contains_key(&page) {
            return false;
        }
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        self.arrival_of.insert(page, arrival);
        self.page_at.insert(arrival, page);
        true
    }

    /// Take `page` out; returns whether it was queued.
    fn remove(&mut self, page: usize) -> bool {
        match self.arrival_of.remove(&page) {
            Some(arrival) => {
                self.page_at.remove(&arrival);
                true
            }
            None => false,
        }
    }

    /// The page that arrived first.
    fn front(&self) -> Option<usize> {
        self.page_at.first_key_value().map(|(_, &page)| page)
    }

    /// Requeue `page` as if it had just arrived.
    fn move_to_back(&mut self, page: usize) {
        if self.remove(page) {
            self.push_back(page);
        }
    }

    fn len(&self) -> usize {
        self.arrival_of.len()
    }

    /// Pages, oldest arrival first.
    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.page_at.values().copied()
    }
}

/// First in, first out: the page resident longest goes, however much it is
/// used. Ignores accessed bits.
#[derive(Default)]
pub struct Fifo {
    queue: ArrivalQueue,
}

impl Fifo {
    /// An empty FIFO pager.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Pager for Fifo {
    fn name(&self) -> &'static str {
        "fifo"
    }

    fn on_resident(&mut self, page: usize) {
        self.queue.push_back(page);
    }

    fn on_evicted(&mut self, page: usize) {
        self.queue.remove(page);
    }

    fn choose_victim(&mut self, _accessed: &mut dyn FnMut(usize) -> bool) -> Option<usize> {
        self.queue.front()
    }
}

/// Clock (second chance): the hand sweeps the resident pages in a circle;
/// an accessed page has its bit cleared and is passed over once, the first
/// page found unaccessed goes. Here the circle is the arrival queue and the
/// hand is its front: passing a page moves it to the back.
#[derive(Default)]
pub struct Clock {
    ring: ArrivalQueue,
}

impl Clock {
    /// An empty clock pager.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Pager for Clock {
    fn name(&self) -> &'static str {
        "clock"
    }

    fn on_resident(&mut self, page: usize) {
        // Inserted just behind the hand: the last page it will reach.
        self.ring.push_back(page);
    }

    fn on_evicted(&mut self, page: usize) {
        self.ring.remove(page);
    }

    fn choose_victim(&mut self, accessed: &mut dyn FnMut(usize) -> bool) -> Option<usize> {
        // One sweep clears every bit, so the second finds a victim; the bound
        // only matters if the bits are set again as fast as they are read.
        for _ in 0..2 * self.ring.len() {
            let page = self.ring.front()?;
            if !accessed(page) {
                return Some(page);
            }
            self.ring.move_to_back(page);
        }
        self.ring.front()
    }
}

/// LRU approximated by aging: each resident page has an 8-bit counter; every
/// tick shifts it right and puts the page's accessed bit in the top bit. The
/// page with the smallest counter (the oldest arrival among equals) goes.
/// Choosing a victim also folds in the bits set since the last tick, so a
/// page used just now is not taken for an unused one.
#[derive(Default)]
pub struct LruApprox {
    arrivals: ArrivalQueue,
    age_of: BTreeMap<usize, u8>,
}

impl LruApprox {
    /// An empty aging pager.
    pub fn new() -> Self {
        Self::default()
    }

    /// The aging counter of a resident page (for tests and statistics).
    pub fn age(&self, page: usize) -> Option<u8> {
        self.age_of.get(&page).copied()
    }
}

impl Pager for LruApprox {
    fn name(&self) -> &'static str {
        "lru"
    }

    fn on_resident(&mut self, page: usize) {
        // No history yet: the access that brought it in shows up in its
        // accessed bit.
        if self.arrivals.push_back(page) {
            self.age_of.insert(page, 0);
        }
    }

    fn on_evicted(&mut self, page: usize) {
        self.arrivals.remove(page);
        self.age_of.remove(&page);
    }

    fn choose_victim(&mut self, accessed: &mut dyn FnMut(usize) -> bool) -> Option<usize> {
        for (&page, age) in self.age_of.iter_mut() {
            if accessed(page) {
                *age |= 0x80;
            }
        }
        let age_of = &self.age_of;
        self.arrivals.iter().min_by_key(|page| age_of[page])
    }

    fn tick(&mut self, accessed: &mut dyn FnMut(usize) -> bool) {
        for (&page, age) in self.age_of.iter_mut() {
            *age = (*age >> 1) | if accessed(page) { 0x80 } else { 0 };
        }
    }
}

// ---------------------------------------------------------------------------
// Simulator

/// One memory reference of a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Page index.
    pub page: usize,
    /// A store (makes the page dirty) rather than a load.
    pub is_write: bool,
}

impl Access {
    /// A load from `page`.
    pub const fn read(page: usize) -> Self {
        Access { page, is_write: false }
    }

    /// A store to `page`.
    pub const fn write(page: usize) -> Self {
        Access { page, is_write: true }
    }
}

/// What a simulated run cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimReport {
    /// References run.
    pub access_count: u64,
    /// References that found their page not resident.
    pub fault_count: u64,
    /// Evictions (chosen or revoked) of dirty pages, which must be written back.
    pub page_out_count: u64,
}

/// A pager misbehaved under the simulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimError {
    /// Every frame was in use but the pager named no victim.
    NoVictim,
    /// The pager named a page that is not resident.
    VictimNotResident(usize),
}

/// The hardware bits of a resident page.
#[derive(Clone, Copy, Debug, Default)]
struct PageBits {
    accessed: bool,
    dirty: bool,
}

/// A frame budget, the resident pages with their accessed and dirty bits,
/// and a pager deciding what to evict.
pub struct Simulator {
    frame_budget: usize,
    tick_interval_accesses: u64,
    pager: Box<dyn Pager>,
    resident: BTreeMap<usize, PageBits>,
    report: SimReport,
}

impl Simulator {
    /// A simulator holding at most `frame_budget` pages (at least one) that
    /// calls the pager's `tick` after every `tick_interval_accesses`
    /// references (0: never).
    pub fn new(frame_budget: usize, tick_interval_accesses: u64, pager: Box<dyn Pager>) -> Self {
        Simulator {
            frame_budget: frame_budget.max(1),
            tick_interval_accesses,
            pager,
            resident: BTreeMap::new(),
            report: SimReport::default(),
        }
    }

    /// Run one reference; returns whether it faulted.
    pub fn access(&mut self, access: Access) -> Result<bool, SimError> {
        let faulted = !self.resident.contains_key(&access.page);
        if faulted {
            self.report.fault_count += 1;
            if self.resident.len() >= self.frame_budget {
                let resident = &mut self.resident;
                let mut accessed = |page| read_and_clear_accessed(resident, page);
                let victim = self.pager.choose_victim(&mut accessed).ok_or(SimError::NoVictim)?;
                if !self.evict(victim) {
                    return Err(SimError::VictimNotResident(victim));
                }
            }
            self.resident.insert(access.page, PageBits::default());
            self.pager.on_resident(access.page);
        }
        let bits = self.resident.get_mut(&access.page).expect("made resident above");
        bits.accessed = true;
        bits.dirty |= access.is_write;
        self.report.access_count += 1;
        if self.tick_interval_accesses != 0 && self.report.access_count.is_multiple_of(self.tick_interval_accesses) {
            let resident = &mut self.resident;
            self.pager.tick(&mut |page| read_and_clear_accessed(resident, page));
        }
        Ok(faulted)
    }

    /// Run every reference in order; returns the totals so far.
    pub fn run(&mut self, references: &[Access]) -> Result<SimReport, SimError> {
        for &access in references {
            self.access(access)?;
        }
        Ok(self.report)
    }

    /// The kernel takes `page` away (revocation). Returns whether it was resident.
    pub fn revoke(&mut self, page: usize) -> bool {
        self.evict(page)
    }

    fn evict(&mut self, page: usize) -> bool {
        match self.resident.remove(&page) {
            Some(bits) => {
                if bits.dirty {
                    self.report.page_out_count += 1;
                }
                self.pager.on_evicted(page);
                true
            }
            None => false,
        }
    }

    /// Whether `page` is resident.
    pub fn is_resident(&self, page: usize) -> bool {
        self.resident.contains_key(&page)
    }

    /// Number of resident pages (never more than the budget).
    pub fn resident_len(&self) -> usize {
        self.resident.len()
    }

    /// The frame budget.
    pub fn frame_budget(&self) -> usize {
        self.frame_budget
    }

    /// The totals so far.
    pub fn report(&self) -> SimReport {
        self.report
    }
}

fn read_and_clear_accessed(resident: &mut BTreeMap<usize, PageBits>, page: usize) -> bool {
    resident.get_mut(&page).is_some_and(|bits| core::mem::take(&mut bits.accessed))
}

/// Run `references` from an empty memory of `frame_budget` frames.
pub fn simulate(
    frame_budget: usize,
    tick_interval_accesses: u64,
    pager: Box<dyn Pager>,
    references: &[Access],
) -> Result<SimReport, SimError> {
    Simulator::new(frame_budget, tick_interval_accesses, pager).run(references)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeSet;
    use std::vec;
    use std::vec::Vec;

    fn policies() -> Vec<Box<dyn Pager>> {
        NAMES.iter().map(|name| by_name(name).unwrap()).collect()
    }

    fn never(_: usize) -> bool {
        false
    }

    fn always(_: usize) -> bool {
        true
    }

    /// A deterministic pseudo-random sequence (xorshift64).
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % bound
        }
    }

    /// `rounds` of: every hot page once (stores to the even ones), then
    /// `scan_per_round` pages never seen before.
    fn hot_set_plus_scan(hot_count: usize, scan_per_round: usize, rounds: usize) -> Vec<Access> {
        let mut references = Vec::new();
        let mut next_cold = 1000;
        for _ in 0..rounds {
            for page in 0..hot_count {
                references.push(if page % 2 == 0 { Access::write(page) } else { Access::read(page) });
            }
            for _ in 0..scan_per_round {
                references.push(Access::read(next_cold));
                next_cold += 1;
            }
        }
        references
    }

    // --- Every policy --------------------------------------------------------

    #[test]
    fn by_name_builds_every_policy() {
        for name in NAMES {
            assert_eq!(by_name(name).unwrap().name(), name);
        }
        assert!(by_name("lifo").is_none());
        assert!(by_name("").is_none());
    }

    #[test]
    fn no_victim_when_empty() {
        for mut pager in policies() {
            assert_eq!(pager.choose_victim(&mut always), None, "{}", pager.name());
            pager.on_resident(3);
            pager.on_evicted(3);
            assert_eq!(pager.choose_victim(&mut never), None, "{}", pager.name());
            pager.tick(&mut always);
            assert_eq!(pager.choose_victim(&mut always), None, "{}", pager.name());
        }
    }

    #[test]
    fn victims_are_resident_and_never_chosen_again_once_evicted() {
        for mut pager in policies() {
            let name = pager.name();
            let mut resident: BTreeSet<usize> = BTreeSet::new();
            for page in [7, 3, 9, 1, 4, 8] {
                pager.on_resident(page);
                resident.insert(page);
            }
            pager.on_resident(3); // already resident: ignored
            pager.on_evicted(9); // revoked behind the pager's back
            resident.remove(&9);
            pager.on_evicted(42); // never resident: ignored
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            let mut chosen = Vec::new();
            while let Some(victim) = pager.choose_victim(&mut |_| rng.below(2) == 0) {
                assert!(resident.remove(&victim), "{name}: victim {victim} is not resident");
                pager.on_evicted(victim);
                chosen.push(victim);
                pager.tick(&mut |_| rng.below(3) == 0);
            }
            assert!(resident.is_empty(), "{name}: {resident:?} never chosen");
            assert_eq!(chosen.len(), 5, "{name}: each page once: {chosen:?}");
        }
    }

    #[test]
    fn a_page_resident_again_is_a_candidate_again() {
        for mut pager in policies() {
            pager.on_resident(1);
            assert_eq!(pager.choose_victim(&mut never), Some(1));
            pager.on_evicted(1);
            pager.on_resident(1);
            assert_eq!(pager.choose_victim(&mut never), Some(1), "{}", pager.name());
        }
    }

    #[test]
    fn random_workload_never_exceeds_the_budget() {
        for pager in policies() {
            let name = pager.name();
            let mut sim = Simulator::new(5, 7, pager);
            let mut rng = Rng(0x2545_f491_4f6c_dd1d);
            for step in 0..4000u64 {
                let page = rng.below(12) as usize;
                if step % 97 == 0 {
                    sim.revoke(rng.below(12) as usize);
                }
                sim.access(Access { page, is_write: rng.below(4) == 0 }).unwrap();
                assert!(sim.is_resident(page), "{name}");
                assert!(sim.resident_len() <= sim.frame_budget(), "{name}");
            }
            let report = sim.report();
            assert_eq!(report.access_count, 4000);
            assert!(report.fault_count >= 12 && report.fault_count < 4000, "{name}: {report:?}");
            assert!(report.page_out_count <= report.fault_count, "{name}: {report:?}");
        }
    }

    #[test]
    fn looping_working_set_within_budget_has_only_compulsory_faults() {
        let references: Vec<Access> = (0..50).flat_map(|_| (0..6).map(Access::read)).collect();
        for pager in policies() {
            let name = pager.name();
            let report = simulate(8, 4, pager, &references).unwrap();
            assert_eq!(report.fault_count, 6, "{name}: one compulsory fault per page");
            assert_eq!(report.page_out_count, 0, "{name}");
        }
    }

    #[test]
    fn page_outs_count_only_dirty_evictions() {
        for pager in policies() {
            let name = pager.name();
            let mut sim = Simulator::new(1, 0, pager);
            sim.access(Access::write(0)).unwrap();
            sim.access(Access::read(1)).unwrap(); // evicts dirty 0
            sim.access(Access::read(0)).unwrap(); // evicts clean 1
            sim.access(Access::write(0)).unwrap(); // hit
            let report = sim.report();
            assert_eq!((report.fault_count, report.page_out_count), (3, 1), "{name}");
            assert!(sim.revoke(0), "{name}");
            assert!(!sim.revoke(0), "{name}");
            assert_eq!(sim.report().page_out_count, 2, "{name}: a revoked dirty page is written back");
            assert!(sim.access(Access::read(0)).unwrap(), "{name}: revoked page faults again");
        }
    }

    #[test]
    fn zero_budget_is_one_frame() {
        let report = simulate(0, 0, by_name("clock").unwrap(), &[Access::read(1), Access::read(2)]).unwrap();
        assert_eq!(report.fault_count, 2);
    }

    #[test]
    fn simulator_rejects_a_pager_that_names_no_victim() {
        struct Never;
        impl Pager for Never {
            fn name(&self) -> &'static str {
                "never"
            }
            fn on_resident(&mut self, _page: usize) {}
            fn on_evicted(&mut self, _page: usize) {}
            fn choose_victim(&mut self, _accessed: &mut dyn FnMut(usize) -> bool) -> Option<usize> {
                None
            }
        }
        let references = [Access::read(1), Access::read(2)];
        assert_eq!(simulate(1, 0, Box::new(Never), &references), Err(SimError::NoVictim));
    }

    // --- FIFO ----------------------------------------------------------------

    #[test]
    fn fifo_evicts_in_arrival_order_whatever_the_use() {
        let mut pager = Fifo::new();
        for page in [5, 2, 8] {
            pager.on_resident(page);
        }
        let mut order = Vec::new();
        while let Some(victim) = pager.choose_victim(&mut always) {
            pager.on_evicted(victim);
            order.push(victim);
        }
        assert_eq!(order, vec![5, 2, 8]);
    }

    #[test]
    fn fifo_loop_one_page_over_budget_faults_every_time() {
        let references: Vec<Access> = (0..20).flat_map(|_| (0..5).map(Access::read)).collect();
        let report = simulate(4, 0, Box::new(Fifo::new()), &references).unwrap();
        assert_eq!(report.fault_count, 100);
    }

    // --- Clock ---------------------------------------------------------------

    /// Accessed bits of pages 0.. as the closure the kernel would provide.
    fn bits_reader(bits: &mut [bool]) -> impl FnMut(usize) -> bool + '_ {
        move |page| core::mem::take(&mut bits[page])
    }

    #[test]
    fn clock_gives_an_accessed_page_a_second_chance() {
        let mut pager = Clock::new();
        for page in 0..3 {
            pager.on_resident(page);
        }
        let mut bits = [true, false, false];
        assert_eq!(pager.choose_victim(&mut bits_reader(&mut bits)), Some(1));
        assert!(!bits[0], "passing a page clears its bit");
        pager.on_evicted(1);
        // The hand moved on past page 0: page 2 is next, then 0.
        assert_eq!(pager.choose_victim(&mut bits_reader(&mut bits)), Some(2));
        pager.on_evicted(2);
        assert_eq!(pager.choose_victim(&mut bits_reader(&mut bits)), Some(0));
    }

    #[test]
    fn clock_with_every_bit_set_sweeps_once_then_takes_the_oldest() {
        let mut pager = Clock::new();
        for page in 0..4 {
            pager.on_resident(page);
        }
        let mut bits = [true; 4];
        assert_eq!(pager.choose_victim(&mut bits_reader(&mut bits)), Some(0));
        assert_eq!(bits, [false; 4]);
    }

    #[test]
    fn clock_terminates_when_bits_never_clear() {
        let mut pager = Clock::new();
        for page in 0..4 {
            pager.on_resident(page);
        }
        assert!(pager.choose_victim(&mut always).is_some());
    }

    // --- LRU-approx ----------------------------------------------------------

    #[test]
    fn lru_keeps_a_frequently_used_page_over_a_once_used_one() {
        let mut lru = LruApprox::new();
        let mut fifo = Fifo::new();
        for pager in [&mut lru as &mut dyn Pager, &mut fifo] {
            pager.on_resident(0); // used at every tick
            pager.on_resident(1); // used once, right after arriving
        }
        let mut bits = [true, true];
        lru.tick(&mut bits_reader(&mut bits));
        for _ in 0..4 {
            bits[0] = true;
            lru.tick(&mut bits_reader(&mut bits));
        }
        assert!(lru.age(0) > lru.age(1), "{:?} vs {:?}", lru.age(0), lru.age(1));
        assert_eq!(lru.choose_victim(&mut bits_reader(&mut bits)), Some(1));
        assert_eq!(fifo.choose_victim(&mut never), Some(0), "FIFO takes the older, hot page");
    }

    #[test]
    fn lru_counts_use_since_the_last_tick() {
        let mut pager = LruApprox::new();
        pager.on_resident(0);
        pager.on_resident(1);
        pager.tick(&mut never);
        let mut bits = [true, false];
        assert_eq!(pager.choose_victim(&mut bits_reader(&mut bits)), Some(1));
        assert_eq!(pager.age(0), Some(0x80));
    }

    #[test]
    fn lru_ages_and_breaks_ties_by_arrival() {
        let mut pager = LruApprox::new();
        for page in [4, 2, 6] {
            pager.on_resident(page);
        }
        assert_eq!(pager.choose_victim(&mut never), Some(4), "all equal: the oldest");
        pager.tick(&mut |page| page == 4);
        pager.tick(&mut never);
        assert_eq!(pager.age(4), Some(0x40), "shifted right once since");
        assert_eq!(pager.choose_victim(&mut never), Some(2));
        for _ in 0..7 {
            pager.tick(&mut never);
        }
        assert_eq!(pager.age(4), Some(0), "eight ticks unused forget the use");
        assert_eq!(pager.choose_victim(&mut never), Some(4));
    }

    // --- Comparisons -----------------------------------------------------------

    #[test]
    fn hot_set_plus_scan_favours_clock_and_lru_over_fifo() {
        let references = hot_set_plus_scan(4, 2, 200);
        let faults = |name: &str| simulate(8, 6, by_name(name).unwrap(), &references).unwrap();
        let (fifo, clock, lru) = (faults("fifo"), faults("clock"), faults("lru"));
        let compulsory = 4 + 2 * 200;
        assert!(fifo.fault_count > compulsory, "fifo {fifo:?}");
        assert!(clock.fault_count < fifo.fault_count, "clock {clock:?} vs fifo {fifo:?}");
        assert!(lru.fault_count < fifo.fault_count, "lru {lru:?} vs fifo {fifo:?}");
        assert!(clock.page_out_count < fifo.page_out_count, "clock {clock:?} vs fifo {fifo:?}");
        assert!(lru.page_out_count < fifo.page_out_count, "lru {lru:?} vs fifo {fifo:?}");
    }
}
