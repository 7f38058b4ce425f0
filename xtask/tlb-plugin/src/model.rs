//! The TLB model: set-associative, LRU, first-level instruction and data
//! TLBs in front of a unified second-level TLB (STLB), after Intel
//! Skylake client cores. Every first-level miss looks in the STLB; every
//! STLB miss is one page walk. Pure logic, fed by the plugin (and by the
//! unit tests' synthetic traces).

/// One TLB's geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub entries: usize,
    pub ways: usize,
}

impl Geometry {
    pub fn sets(&self) -> usize {
        (self.entries / self.ways).max(1)
    }
}

/// The geometry of the three TLBs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub l1i: Geometry,
    pub l1d: Geometry,
    pub stlb: Geometry,
}

impl Config {
    /// Skylake client (4 KiB pages): L1 iTLB 128 entries 8-way, L1 dTLB
    /// 64 entries 4-way, STLB 1,536 entries 12-way.
    pub const SKYLAKE: Config = Config {
        l1i: Geometry { entries: 128, ways: 8 },
        l1d: Geometry { entries: 64, ways: 4 },
        stlb: Geometry { entries: 1536, ways: 12 },
    };
}

/// Cycles charged per event by the modelled cycle figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Costs {
    /// Every executed instruction.
    pub insn_cycles: u64,
    /// A first-level miss (the STLB lookup), whether the STLB hits or not.
    pub l1_miss_cycles: u64,
    /// A page walk (an STLB miss), on top of its first-level miss.
    pub walk_cycles: u64,
}

impl Costs {
    /// 1 cycle per instruction, 7 per first-level miss, 30 more per walk
    /// (a walk whose page-table reads hit the caches, Skylake).
    pub const DEFAULT: Costs = Costs { insn_cycles: 1, l1_miss_cycles: 7, walk_cycles: 30 };

    /// The modelled cycles of `insns` instructions with `events`.
    pub fn cycles(&self, insns: u64, events: &Counters) -> u64 {
        insns * self.insn_cycles
            + (events.l1i_misses + events.l1d_misses) * self.l1_miss_cycles
            + events.walks * self.walk_cycles
    }
}

/// What a CR3 write does to the entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cr3Mode {
    /// Without PCID: every non-global entry goes.
    FlushNonGlobal,
    /// With PCID (and the no-flush bit): entries stay, tagged by their
    /// address space, so another space's entries never match.
    Tagged,
}

/// Event counts (monotonic).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub fetch_lookups: u64,
    pub data_lookups: u64,
    pub l1i_misses: u64,
    pub l1d_misses: u64,
    pub stlb_hits: u64,
    /// STLB misses: one page walk each.
    pub walks: u64,
}

impl Counters {
    /// `self - earlier`, field by field.
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            fetch_lookups: self.fetch_lookups - earlier.fetch_lookups,
            data_lookups: self.data_lookups - earlier.data_lookups,
            l1i_misses: self.l1i_misses - earlier.l1i_misses,
            l1d_misses: self.l1d_misses - earlier.l1d_misses,
            stlb_hits: self.stlb_hits - earlier.stlb_hits,
            walks: self.walks - earlier.walks,
        }
    }

    /// `self += other`, field by field.
    pub fn add(&mut self, other: &Counters) {
        self.fetch_lookups += other.fetch_lookups;
        self.data_lookups += other.data_lookups;
        self.l1i_misses += other.l1i_misses;
        self.l1d_misses += other.l1d_misses;
        self.stlb_hits += other.stlb_hits;
        self.walks += other.walks;
    }
}

/// A translation: the virtual page, the frame it maps to (so an entry for
/// another address space's, or a remapped, page never matches), and
/// whether it is global (survives a CR3 write).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub vpn: u64,
    pub frame: u64,
    pub global: bool,
}

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    valid: bool,
    vpn: u64,
    frame: u64,
    global: bool,
    last_use: u64,
}

/// One set-associative TLB with least-recently-used replacement.
#[derive(Clone, Debug)]
pub struct Tlb {
    geometry: Geometry,
    entries: Vec<Entry>,
    clock: u64,
}

impl Tlb {
    pub fn new(geometry: Geometry) -> Self {
        let geometry = Geometry { entries: geometry.sets() * geometry.ways.max(1), ways: geometry.ways.max(1) };
        Tlb { geometry, entries: vec![Entry::default(); geometry.entries], clock: 0 }
    }

    fn set(&mut self, vpn: u64) -> &mut [Entry] {
        let sets = self.geometry.sets() as u64;
        let start = (vpn % sets) as usize * self.geometry.ways;
        &mut self.entries[start..start + self.geometry.ways]
    }

    /// Look `t` up; a hit makes it the most recently used.
    pub fn lookup(&mut self, t: &Translation) -> bool {
        self.clock += 1;
        let now = self.clock;
        match self.set(t.vpn).iter_mut().find(|e| e.valid && e.vpn == t.vpn && e.frame == t.frame) {
            Some(entry) => {
                entry.last_use = now;
                true
            }
            None => false,
        }
    }

    /// Put `t` in, evicting the least recently used entry of its set.
    pub fn fill(&mut self, t: &Translation) {
        self.clock += 1;
        let now = self.clock;
        let set = self.set(t.vpn);
        let victim = match set.iter().position(|e| !e.valid) {
            Some(free) => free,
            None => (0..set.len()).min_by_key(|&i| set[i].last_use).unwrap_or(0),
        };
        set[victim] = Entry { valid: true, vpn: t.vpn, frame: t.frame, global: t.global, last_use: now };
    }

    /// Drop every entry for which `drop` holds.
    fn invalidate(&mut self, drop: impl Fn(&Entry) -> bool) {
        for entry in self.entries.iter_mut().filter(|e| e.valid) {
            if drop(entry) {
                entry.valid = false;
            }
        }
    }

    /// Valid entries (for tests and reports).
    pub fn occupancy(&self) -> usize {
        self.entries.iter().filter(|e| e.valid).count()
    }
}

/// The whole hierarchy: L1 iTLB and dTLB, unified STLB, and its counts.
#[derive(Clone, Debug)]
pub struct Hierarchy {
    pub config: Config,
    pub cr3_mode: Cr3Mode,
    l1i: Tlb,
    l1d: Tlb,
    stlb: Tlb,
    pub counters: Counters,
}

/// Which first-level TLB an access goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Fetch,
    Data,
}

impl Hierarchy {
    pub fn new(config: Config, cr3_mode: Cr3Mode) -> Self {
        Hierarchy {
            config,
            cr3_mode,
            l1i: Tlb::new(config.l1i),
            l1d: Tlb::new(config.l1d),
            stlb: Tlb::new(config.stlb),
            counters: Counters::default(),
        }
    }

    /// One access through the TLBs.
    pub fn access(&mut self, kind: Access, t: &Translation) {
        let l1 = match kind {
            Access::Fetch => {
                self.counters.fetch_lookups += 1;
                &mut self.l1i
            }
            Access::Data => {
                self.counters.data_lookups += 1;
                &mut self.l1d
            }
        };
        if l1.lookup(t) {
            return;
        }
        match kind {
            Access::Fetch => self.counters.l1i_misses += 1,
            Access::Data => self.counters.l1d_misses += 1,
        }
        if self.stlb.lookup(t) {
            self.counters.stlb_hits += 1;
        } else {
            self.counters.walks += 1;
            self.stlb.fill(t);
        }
        match kind {
            Access::Fetch => self.l1i.fill(t),
            Access::Data => self.l1d.fill(t),
        }
    }

    /// A write to CR3 (without PCID's no-flush: every non-global entry goes;
    /// tagged: nothing goes).
    pub fn cr3_write(&mut self) {
        if self.cr3_mode == Cr3Mode::FlushNonGlobal {
            for tlb in [&mut self.l1i, &mut self.l1d, &mut self.stlb] {
                tlb.invalidate(|e| !e.global);
            }
        }
    }

    /// `invlpg`: the page's entries go, global or not.
    pub fn invlpg(&mut self, vpn: u64) {
        for tlb in [&mut self.l1i, &mut self.l1d, &mut self.stlb] {
            tlb.invalidate(|e| e.vpn == vpn);
        }
    }

    /// Every entry goes, global ones too (a CR4 write toggling PGE).
    pub fn flush_all(&mut self) {
        for tlb in [&mut self.l1i, &mut self.l1d, &mut self.stlb] {
            tlb.invalidate(|_| true);
        }
    }

    /// Valid entries in (L1i, L1d, STLB).
    pub fn occupancy(&self) -> (usize, usize, usize) {
        (self.l1i.occupancy(), self.l1d.occupancy(), self.stlb.occupancy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(vpn: u64) -> Translation {
        Translation { vpn, frame: vpn + 1000, global: false }
    }

    fn kernel(vpn: u64) -> Translation {
        Translation { vpn, frame: vpn + 5000, global: true }
    }

    /// `rounds` loops touching `pages` consecutive pages as data.
    fn loop_over(h: &mut Hierarchy, pages: u64, rounds: u64) {
        for _ in 0..rounds {
            for vpn in 0..pages {
                h.access(Access::Data, &user(vpn));
            }
        }
    }

    #[test]
    fn a_loop_that_fits_misses_only_on_first_touch() {
        for pages in [1, 8, 64] {
            let mut h = Hierarchy::new(Config::SKYLAKE, Cr3Mode::FlushNonGlobal);
            loop_over(&mut h, pages, 10);
            assert_eq!(h.counters.l1d_misses, pages, "{pages} pages");
            assert_eq!(h.counters.walks, pages);
            assert_eq!(h.counters.data_lookups, pages * 10);
        }
    }

    #[test]
    fn a_loop_over_the_l1_but_within_the_stlb_hits_the_stlb() {
        // 512 pages: every L1d set (4 ways) sees 32 pages in turn, so LRU
        // misses every time; the STLB (128 sets x 12 ways) holds them all.
        let mut h = Hierarchy::new(Config::SKYLAKE, Cr3Mode::FlushNonGlobal);
        loop_over(&mut h, 512, 5);
        assert_eq!(h.counters.l1d_misses, 512 * 5);
        assert_eq!(h.counters.walks, 512);
        assert_eq!(h.counters.stlb_hits, 512 * 4);
    }

    #[test]
    fn more_pages_than_ways_in_one_set_miss_every_time_under_lru() {
        // A 4-entry, 2-way TLB alone (one level): 3 pages in the same set
        // evict each other in a cyclic loop.
        let mut tlb = Tlb::new(Geometry { entries: 4, ways: 2 });
        let mut misses = 0;
        for _ in 0..10 {
            for vpn in [0u64, 2, 4] {
                if !tlb.lookup(&user(vpn)) {
                    misses += 1;
                    tlb.fill(&user(vpn));
                }
            }
        }
        assert_eq!(misses, 30);
        // Two pages of that set fit: only compulsory misses.
        let mut tlb = Tlb::new(Geometry { entries: 4, ways: 2 });
        let mut misses = 0;
        for _ in 0..10 {
            for vpn in [0u64, 2] {
                if !tlb.lookup(&user(vpn)) {
                    misses += 1;
                    tlb.fill(&user(vpn));
                }
            }
        }
        assert_eq!(misses, 2);
    }

    #[test]
    fn a_loop_beyond_the_stlb_walks_every_time() {
        // 2048 pages > 1536 STLB entries, a cyclic loop: LRU keeps none.
        let mut h = Hierarchy::new(Config::SKYLAKE, Cr3Mode::FlushNonGlobal);
        loop_over(&mut h, 2048, 3);
        assert_eq!(h.counters.walks, 2048 * 3);
    }

    #[test]
    fn cr3_write_flushes_non_global_and_keeps_global() {
        let mut h = Hierarchy::new(Config::SKYLAKE, Cr3Mode::FlushNonGlobal);
        for vpn in 0..10 {
            h.access(Access::Data, &user(vpn));
            h.access(Access::Fetch, &kernel(0xffff_8000_0000 + vpn));
        }
        assert_eq!(h.counters.walks, 20);
        h.cr3_write();
        assert_eq!(h.occupancy(), (10, 0, 10));
        for vpn in 0..10 {
            h.access(Access::Data, &user(vpn));
            h.access(Access::Fetch, &kernel(0xffff_8000_0000 + vpn));
        }
        // The user pages walk again; the global kernel pages still hit in L1.
        assert_eq!(h.counters.walks, 30);
        assert_eq!(h.counters.l1i_misses, 10);
    }

    #[test]
    fn tagged_entries_survive_cr3_writes_and_never_match_another_space() {
        let mut h = Hierarchy::new(Config::SKYLAKE, Cr3Mode::Tagged);
        let space_a = |vpn| Translation { vpn, frame: 100 + vpn, global: false };
        let space_b = |vpn| Translation { vpn, frame: 900 + vpn, global: false };
        for vpn in 0..8 {
            h.access(Access::Data, &space_a(vpn));
        }
        h.cr3_write();
        for vpn in 0..8 {
            h.access(Access::Data, &space_b(vpn)); // same addresses, other frames: misses
        }
        h.cr3_write();
        let before = h.counters;
        for vpn in 0..8 {
            h.access(Access::Data, &space_a(vpn)); // A's entries are still there
        }
        assert_eq!(h.counters.walks, 16);
        assert_eq!(h.counters.l1d_misses, before.l1d_misses);
        // Flushing instead, the same trace walks every time.
        let mut f = Hierarchy::new(Config::SKYLAKE, Cr3Mode::FlushNonGlobal);
        for space in [space_a, space_b, space_a] {
            f.cr3_write();
            for vpn in 0..8 {
                f.access(Access::Data, &space(vpn));
            }
        }
        assert_eq!(f.counters.walks, 24);
    }

    #[test]
    fn invlpg_flushes_one_page_only() {
        let mut h = Hierarchy::new(Config::SKYLAKE, Cr3Mode::FlushNonGlobal);
        for vpn in 0..4 {
            h.access(Access::Data, &user(vpn));
        }
        h.invlpg(2);
        for vpn in 0..4 {
            h.access(Access::Data, &user(vpn));
        }
        assert_eq!(h.counters.walks, 5);
        assert_eq!(h.counters.l1d_misses, 5);
        // A global page goes too.
        h.access(Access::Data, &kernel(0xffff_8000_1234));
        h.invlpg(0xffff_8000_1234);
        h.access(Access::Data, &kernel(0xffff_8000_1234));
        assert_eq!(h.counters.walks, 7);
    }

    #[test]
    fn a_remapped_page_misses() {
        let mut h = Hierarchy::new(Config::SKYLAKE, Cr3Mode::FlushNonGlobal);
        h.access(Access::Data, &Translation { vpn: 7, frame: 1, global: false });
        h.access(Access::Data, &Translation { vpn: 7, frame: 2, global: false });
        assert_eq!(h.counters.walks, 2);
    }

    #[test]
    fn flush_all_drops_global_entries_too() {
        let mut h = Hierarchy::new(Config::SKYLAKE, Cr3Mode::FlushNonGlobal);
        h.access(Access::Fetch, &kernel(1));
        h.flush_all();
        assert_eq!(h.occupancy(), (0, 0, 0));
    }

    #[test]
    fn instruction_and_data_share_the_stlb() {
        let mut h = Hierarchy::new(Config::SKYLAKE, Cr3Mode::FlushNonGlobal);
        h.access(Access::Fetch, &user(3));
        h.access(Access::Data, &user(3));
        assert_eq!((h.counters.l1i_misses, h.counters.l1d_misses), (1, 1));
        assert_eq!((h.counters.walks, h.counters.stlb_hits), (1, 1));
    }

    #[test]
    fn cycles_follow_the_stated_costs() {
        let events = Counters { l1i_misses: 2, l1d_misses: 3, walks: 4, ..Counters::default() };
        assert_eq!(Costs::DEFAULT.cycles(100, &events), 100 + 5 * 7 + 4 * 30);
    }
}
