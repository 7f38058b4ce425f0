//! The plugin's state between QEMU's callbacks: per vCPU, two TLB
//! hierarchies fed the same accesses (one flushing non-global entries on
//! every CR3 write, as this kernel's CPU does; one tagging entries by
//! address space, as PCID would); the executed-instruction count; and the
//! regions between the guest's markers, which count every vCPU. Pure
//! logic; `qemu.rs` only forwards callbacks.

use crate::model::{Access, Config, Costs, Counters, Cr3Mode, Hierarchy, Translation};
use shared_abi::marker::MarkerOp;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Which pages are global (the G bit): the plugin cannot read page tables,
/// so the rule is by address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobalRule {
    /// The kernel half (from `0xffff_8000_0000_0000`) is global, as in a
    /// kernel that sets G on its own mappings (Linux does).
    UpperHalf,
    /// No page is global (a kernel that leaves G clear or CR4.PGE off).
    None,
}

/// The plugin's settings, from its `-plugin` arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub global: GlobalRule,
    /// Where the report goes at exit (stderr if none).
    pub out: Option<String>,
    pub config: Config,
    pub costs: Costs,
}

impl Options {
    /// Parse `key=value` arguments: `out=PATH`, `global=upper|none`.
    pub fn parse<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<Options, String> {
        let mut options =
            Options { global: GlobalRule::UpperHalf, out: None, config: Config::SKYLAKE, costs: Costs::DEFAULT };
        for arg in args {
            match arg.split_once('=') {
                Some(("out", path)) if !path.is_empty() => options.out = Some(path.to_string()),
                Some(("global", "upper")) => options.global = GlobalRule::UpperHalf,
                Some(("global", "none")) => options.global = GlobalRule::None,
                _ => return Err(format!("exotlb: unknown argument {arg:?} (expected out=PATH or global=upper|none)")),
            }
        }
        Ok(options)
    }
}

/// What the plugin learned about one translation block when QEMU
/// translated it: its instruction count and the pages its code lies on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TbInfo {
    pub insns: u64,
    /// (virtual page, frame key) of each code page, in order.
    pub pages: Vec<(u64, u64)>,
}

/// An instruction's event, carried in the callback's user data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Cr3Write,
    Cr4Write,
    Invlpg,
    /// A marker; `after` is how many instructions of its translation block
    /// follow it (already counted when the block started).
    Marker {
        op: MarkerOp,
        tag: u16,
        after: u32,
    },
}

impl Event {
    /// Packed into a pointer-sized word.
    pub fn encode(self) -> u64 {
        match self {
            Event::Cr3Write => 1,
            Event::Cr4Write => 2,
            Event::Invlpg => 3,
            Event::Marker { op, tag, after } => 4 | (op as u64) << 4 | (tag as u64) << 8 | (after as u64) << 24,
        }
    }

    pub fn decode(word: u64) -> Option<Event> {
        match word & 0xf {
            1 => Some(Event::Cr3Write),
            2 => Some(Event::Cr4Write),
            3 => Some(Event::Invlpg),
            4 => {
                let op = match (word >> 4) & 0xf {
                    1 => MarkerOp::Begin,
                    2 => MarkerOp::End,
                    _ => return None,
                };
                Some(Event::Marker { op, tag: (word >> 8) as u16, after: (word >> 24) as u32 })
            }
            _ => None,
        }
    }
}

/// The counts at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Snapshot {
    insns: u64,
    flush: Counters,
    pcid: Counters,
}

/// Everything measured between the begin and end markers of one tag,
/// summed over its regions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Region {
    pub count: u64,
    pub insns: u64,
    /// The CPU as modelled: CR3 writes flush non-global entries.
    pub flush: Counters,
    /// What-if: entries tagged by address space (PCID), never flushed by CR3.
    pub pcid: Counters,
}

/// One vCPU's TLBs: as modelled, and the PCID what-if.
struct Cpu {
    flush: Hierarchy,
    pcid: Hierarchy,
}

/// The plugin's whole state.
pub struct Plugin {
    pub options: Options,
    /// By vCPU index (grown as vCPUs appear).
    cpus: Vec<Cpu>,
    insns: u64,
    cr3_writes: u64,
    cr4_writes: u64,
    invlpgs: u64,
    unmatched_ends: u64,
    open: BTreeMap<u16, Snapshot>,
    regions: BTreeMap<u16, Region>,
}

/// Where the kernel half starts.
const KERNEL_HALF: u64 = 0xffff_8000_0000_0000;

impl Plugin {
    pub fn new(options: Options) -> Self {
        Plugin {
            cpus: Vec::new(),
            options,
            insns: 0,
            cr3_writes: 0,
            cr4_writes: 0,
            invlpgs: 0,
            unmatched_ends: 0,
            open: BTreeMap::new(),
            regions: BTreeMap::new(),
        }
    }

    fn translation(&self, vaddr: u64, frame: u64) -> Translation {
        let global = self.options.global == GlobalRule::UpperHalf && vaddr >= KERNEL_HALF;
        Translation { vpn: vaddr >> 12, frame, global }
    }

    /// vCPU `vcpu`'s TLBs (made on first use).
    fn cpu(&mut self, vcpu: usize) -> &mut Cpu {
        let config = self.options.config;
        if vcpu >= self.cpus.len() {
            self.cpus.resize_with(vcpu + 1, || Cpu {
                flush: Hierarchy::new(config, Cr3Mode::FlushNonGlobal),
                pcid: Hierarchy::new(config, Cr3Mode::Tagged),
            });
        }
        &mut self.cpus[vcpu]
    }

    fn access(&mut self, vcpu: usize, kind: Access, t: &Translation) {
        let cpu = self.cpu(vcpu);
        cpu.flush.access(kind, t);
        cpu.pcid.access(kind, t);
    }

    /// A translation block starts executing on `vcpu`: its instructions
    /// count and its code pages go through the iTLB.
    pub fn tb_exec(&mut self, vcpu: usize, tb: &TbInfo) {
        self.insns += tb.insns;
        for &(vpn, frame) in &tb.pages {
            let t = self.translation(vpn << 12, frame);
            self.access(vcpu, Access::Fetch, &t);
        }
    }

    /// A load or store on `vcpu` at `vaddr`, in the frame `frame`.
    pub fn data(&mut self, vcpu: usize, vaddr: u64, frame: u64) {
        let t = self.translation(vaddr, frame);
        self.access(vcpu, Access::Data, &t);
    }

    /// Event counts summed over the vCPUs: (as modelled, PCID what-if).
    fn counters(&self) -> (Counters, Counters) {
        let mut sums = (Counters::default(), Counters::default());
        for cpu in &self.cpus {
            sums.0.add(&cpu.flush.counters);
            sums.1.add(&cpu.pcid.counters);
        }
        sums
    }

    fn snapshot(&self, executed: u64) -> Snapshot {
        let (flush, pcid) = self.counters();
        Snapshot { insns: executed, flush, pcid }
    }

    /// An instruction with an event is about to execute on `vcpu`.
    pub fn event(&mut self, vcpu: usize, event: Event) {
        match event {
            Event::Cr3Write => {
                self.cr3_writes += 1;
                let cpu = self.cpu(vcpu);
                cpu.flush.cr3_write();
                cpu.pcid.cr3_write();
            }
            Event::Cr4Write => {
                self.cr4_writes += 1;
                let cpu = self.cpu(vcpu);
                cpu.flush.flush_all();
                cpu.pcid.flush_all();
            }
            // The operand is a register QEMU 7.2's plugin API cannot read:
            // counted only. A page remapped to another frame still misses
            // (entries carry their frame); see docs/TLB_MODEL.md.
            Event::Invlpg => self.invlpgs += 1,
            Event::Marker { op, tag, after } => {
                // Instructions up to and including the marker.
                let executed = self.insns.saturating_sub(after as u64);
                match op {
                    MarkerOp::Begin => {
                        let now = self.snapshot(executed);
                        self.open.insert(tag, now);
                    }
                    MarkerOp::End => match self.open.remove(&tag) {
                        Some(start) => {
                            let (flush, pcid) = self.counters();
                            let region = self.regions.entry(tag).or_default();
                            region.count += 1;
                            region.insns += executed - start.insns;
                            region.flush.add(&flush.since(&start.flush));
                            region.pcid.add(&pcid.since(&start.pcid));
                        }
                        None => self.unmatched_ends += 1,
                    },
                }
            }
        }
    }

    /// The regions measured so far, by tag.
    pub fn regions(&self) -> &BTreeMap<u16, Region> {
        &self.regions
    }

    /// The report `cargo xtask` parses: one `exotlb config` line, one
    /// `exotlb region` line per tag (sums over its regions), one
    /// `exotlb total` line.
    pub fn report(&self) -> String {
        let o = &self.options;
        let c = &o.config;
        let mut text = String::new();
        let _ = writeln!(
            text,
            "exotlb config cpu=skylake l1i={}x{} l1d={}x{} stlb={}x{} page=4k global={} cost_insn={} cost_l1_miss={} cost_walk={}",
            c.l1i.entries,
            c.l1i.ways,
            c.l1d.entries,
            c.l1d.ways,
            c.stlb.entries,
            c.stlb.ways,
            if o.global == GlobalRule::UpperHalf { "upper" } else { "none" },
            o.costs.insn_cycles,
            o.costs.l1_miss_cycles,
            o.costs.walk_cycles
        );
        for (tag, r) in &self.regions {
            let _ = writeln!(
                text,
                "exotlb region tag={tag} count={} insns={} l1i_miss={} l1d_miss={} stlb_hit={} walks={} cycles={} \
                 pcid_l1i_miss={} pcid_l1d_miss={} pcid_walks={} pcid_cycles={}",
                r.count,
                r.insns,
                r.flush.l1i_misses,
                r.flush.l1d_misses,
                r.flush.stlb_hits,
                r.flush.walks,
                o.costs.cycles(r.insns, &r.flush),
                r.pcid.l1i_misses,
                r.pcid.l1d_misses,
                r.pcid.walks,
                o.costs.cycles(r.insns, &r.pcid)
            );
        }
        let (f, _) = self.counters();
        let _ = writeln!(
            text,
            "exotlb total insns={} l1i_miss={} l1d_miss={} stlb_hit={} walks={} cr3_writes={} cr4_writes={} invlpg={} unmatched_ends={} open={}",
            self.insns,
            f.l1i_misses,
            f.l1d_misses,
            f.stlb_hits,
            f.walks,
            self.cr3_writes,
            self.cr4_writes,
            self.invlpgs,
            self.unmatched_ends,
            self.open.len()
        );
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin() -> Plugin {
        Plugin::new(Options::parse([]).unwrap())
    }

    fn marker(op: MarkerOp, tag: u16, after: u32) -> Event {
        Event::Marker { op, tag, after }
    }

    #[test]
    fn events_survive_their_encoding() {
        for e in [Event::Cr3Write, Event::Cr4Write, Event::Invlpg, marker(MarkerOp::End, 0xffff, 511)] {
            assert_eq!(Event::decode(e.encode()), Some(e));
        }
        assert_eq!(Event::decode(0), None);
    }

    #[test]
    fn parses_arguments() {
        let o = Options::parse(["out=/tmp/x", "global=none"]).unwrap();
        assert_eq!((o.out.as_deref(), o.global), (Some("/tmp/x"), GlobalRule::None));
        assert!(Options::parse(["bogus"]).is_err());
        assert!(Options::parse(["global=maybe"]).is_err());
    }

    #[test]
    fn a_region_counts_the_instructions_after_begin_through_end() {
        let mut p = plugin();
        // Block of 10 instructions, begin is its 4th (6 follow it).
        p.tb_exec(0, &TbInfo { insns: 10, pages: vec![(0x100, 1)] });
        p.event(0, marker(MarkerOp::Begin, 7, 6));
        // Another block of 20; end is its 3rd (17 follow).
        p.tb_exec(0, &TbInfo { insns: 20, pages: vec![(0x100, 1)] });
        p.event(0, marker(MarkerOp::End, 7, 17));
        let r = p.regions()[&7];
        // 6 after begin in block 1, plus 3 in block 2 (up to the end marker).
        assert_eq!((r.count, r.insns), (1, 9));
    }

    #[test]
    fn a_switch_loop_shows_what_flushing_costs_and_what_pcid_saves() {
        // Two address spaces alternate, each touching the same 16 pages
        // (their own frames), with a CR3 write at each switch.
        let mut p = plugin();
        let code = TbInfo { insns: 5, pages: vec![(KERNEL_HALF >> 12, 77)] };
        for round in 0..10 {
            p.tb_exec(0, &code);
            p.event(0, marker(MarkerOp::Begin, 1, 0));
            for space in [0u64, 1] {
                p.event(0, Event::Cr3Write);
                for page in 0..16u64 {
                    p.data(0, 0x2000_0000_0000 + page * 4096, 1000 * (space + 1) + page);
                }
            }
            p.event(0, marker(MarkerOp::End, 1, 0));
            let _ = round;
        }
        let r = p.regions()[&1];
        assert_eq!(r.count, 10);
        // Flushing: every switch walks all 16 pages again.
        assert_eq!(r.flush.walks, 10 * 2 * 16);
        // Tagged: only the first round walks (32 translations fit the STLB),
        // and the kernel code page is global: no walk after the first.
        assert_eq!(r.pcid.walks, 2 * 16);
        assert!(p.report().contains("exotlb region tag=1 count=10"));
        // The kernel page (global) walked once in the whole run.
        assert_eq!(p.counters().0.l1i_misses, 1);
    }

    #[test]
    fn each_vcpu_has_its_own_tlb_and_regions_count_them_all() {
        let mut p = plugin();
        let page = TbInfo { insns: 4, pages: vec![(0x10, 1)] };
        p.tb_exec(0, &page);
        p.event(0, marker(MarkerOp::Begin, 9, 0));
        p.tb_exec(1, &page); // vCPU 1 misses on the page vCPU 0 holds
        p.tb_exec(0, &page); // vCPU 0 hits
        p.event(1, Event::Cr3Write); // flushes vCPU 1 only
        p.tb_exec(0, &page);
        p.tb_exec(1, &page); // vCPU 1 misses again
        p.event(0, marker(MarkerOp::End, 9, 0));
        let r = p.regions()[&9];
        assert_eq!((r.insns, r.flush.l1i_misses, r.flush.walks), (16, 2, 2));
        assert_eq!(r.pcid.walks, 1);
    }

    #[test]
    fn an_end_without_a_begin_is_counted_not_trusted() {
        let mut p = plugin();
        p.event(0, marker(MarkerOp::End, 3, 0));
        assert!(p.regions().is_empty());
        assert!(p.report().contains("unmatched_ends=1"));
    }

    #[test]
    fn with_no_global_pages_the_kernel_walks_after_each_switch() {
        let mut p = Plugin::new(Options::parse(["global=none"]).unwrap());
        let code = TbInfo { insns: 5, pages: vec![(KERNEL_HALF >> 12, 77)] };
        for _ in 0..4 {
            p.tb_exec(0, &code);
            p.event(0, Event::Cr3Write);
        }
        assert_eq!(p.counters().0.walks, 4);
        assert_eq!(p.counters().1.walks, 1);
    }
}
