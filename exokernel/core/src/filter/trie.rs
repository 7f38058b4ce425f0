//! The merged DPF-style decision trie ([`Demux`]): install (quota and
//! conflict check), remove, classify and the linear reference matcher
//! ([`Demux::classify_linear`]), retire.
//!
//! # The trie
//!
//! Every installed filter of every environment is a path from the root; a
//! node's outgoing edges are *tests*: a match test `(offset, width, mask)`
//! with a map from value to child ([`Branches`]: a few values inline, many
//! in a keyed hash table), and shift edges. Filters whose canonical atoms
//! agree on a prefix share its nodes, and where many filters test the same
//! field (offset, width, mask) in the same base state with different values
//! (a thousand port numbers) they share one test whose map holds a thousand
//! values: one load and one hash lookup, whatever their number. A node
//! lists the filters that end at it, and keeps the first of them as a
//! ready-made candidate answer. [`Demux::classify`] walks every test of
//! each node it reaches (depth first, bounded by the 32 atoms of the
//! longest filter) and keeps the best accepting filter (the `filter`
//! module doc, "Who gets a packet").
//!
//! # The fast path
//!
//! Most of a trie is *chains*: runs of nodes that each accept nothing and
//! have exactly one way on (one test with one branch, or one shift): the
//! prefix "ethertype IPv4, version 4, first fragment, protocol UDP, skip
//! the IP header" that every UDP filter shares, or the whole path of a lone
//! filter. The node heading a chain (its parent is not a link) holds the
//! chain compiled ([`Fused`], `fused.rs`): the match atoms between two
//! shifts become one to three 8-byte big-endian window compares, shifts
//! stay shifts. Classification runs from the root without recursion while
//! it meets a fused chain, a *switch* (a node with one test, no shift, no
//! accept: at most one child can match, one branch lookup) or an accepting
//! leaf; only a node with several ways on is handed to the general
//! depth-first walk. After an install or a removal, the chains through the
//! nodes on the filter's path are compiled again (every chain that runs
//! through a changed node starts at one of its ancestors, all on the path),
//! and so is the chain below a node that gained its second way on.
//!
//! # Conflicts
//!
//! [`Demux::install`] refuses a filter that conflicts with an installed
//! filter of another environment (the rule: the `filter` module doc; the
//! exact check of one pair, [`overlap`](fn@super::overlap), and its
//! budget: `overlap.rs`). An install examines at most
//! [`INSTALL_BUDGET_CASES`] cases in all; past that the filters are treated
//! as conflicting. To avoid checking every installed filter, the new
//! filter is first walked through the trie: while the trie path's shifts
//! are exactly
//! the new filter's, every node's test reads the same bytes as the new
//! filter's own atoms of that segment, so branches whose values contradict
//! them cannot hold a conflicting filter and are skipped (for a filter that
//! fixes the field, one hash lookup). Only filters the walk reaches are
//! checked exactly.
//!
//! # Cost
//!
//! Classification costs one evaluation per test edge reached (a fused
//! chain counts as the atoms it stands for): it grows with the number of
//! *distinct fields* tested at the nodes a packet reaches, not with the
//! number of filters (a thousand "UDP to port N" filters cost 6 evaluations
//! per packet, as one does). In instructions, the fast path makes one
//! filter or a thousand cheaper than a linear scan of one filter: the
//! UDP prefix is two window compares and a shift, the port one table
//! lookup. A libOS that installs filters on many distinct fields makes the
//! nodes it shares wider; the per-environment quota bounds that.
//! [`Demux::classify_counted`] and [`Demux::classify_linear_counted`]
//! report the evaluations, for the unit tests. Branch tables are keyed
//! with a per-boot secret seed (`branches.rs`, "Hash flooding").
//! Classification allocates nothing and recurses at most 32 deep (only
//! where a node has several matching tests). Installing walks the trie as
//! above (at most every node once), then at most [`INSTALL_BUDGET_CASES`]
//! cases in all on the filters it reaches, then compiles the chains on its
//! path (at most 33 nodes, each chain at most 32 atoms); its memory is one
//! trie node per atom not shared with an installed filter, plus the fused
//! steps of the chain heads on its path.

use super::branches::{Branches, HashKeys};
use super::fused::Fused;
use super::overlap::{overlap_within, Overlap, OVERLAP_BUDGET_CASES};
use super::verify::{verify, Verified};
use super::{EnvId, FilterError, FilterId};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::cell::Cell;
use core::ops::Range;
use shared_abi::filter::{load_field, matches_counted, shift_advance, Atom, Width};

/// Filters one environment may have installed at once, unless the kernel
/// chooses otherwise ([`Demux::with_filters_per_env`]).
pub const DEFAULT_FILTERS_PER_ENV: usize = 1024;

/// Most shift-value cases one install may examine over all the filters its
/// trie walk reaches, so that an install's cost is bounded whatever is
/// installed already.
pub const INSTALL_BUDGET_CASES: u32 = 65536;

const ROOT: u32 = 0;

/// A match test: `field & mask` selects the child through `branches`.
struct Test {
    offset: u16,
    width: Width,
    mask: u32,
    branches: Branches,
}

/// A shift edge: advance the base, go on at `child`.
struct ShiftEdge {
    offset: u16,
    width: Width,
    mask: u32,
    shift: i8,
    child: u32,
}

#[derive(Default)]
struct Node {
    /// Slots of the filters that end here, oldest first (all share their
    /// canonical atoms, so the first is the best of them).
    accepts: Vec<u32>,
    /// The first of `accepts` as a candidate (kept with `accepts`), so the
    /// walk ranks it without looking up its entry.
    accept: Option<Candidate>,
    tests: Vec<Test>,
    shifts: Vec<ShiftEdge>,
    /// At the head of a chain (a run of levels with one way on each, see
    /// [`Demux::link`]): the chain compiled, which the walk runs instead
    /// of visiting its levels.
    fused: Option<Fused>,
}

impl Node {
    fn is_unused(&self) -> bool {
        self.accepts.is_empty() && self.tests.is_empty() && self.shifts.is_empty()
    }
}

struct Installed {
    env: EnvId,
    filter: Verified,
    /// Install order: the tie-break between equally specific filters.
    sequence: u64,
}

struct FilterEntry {
    /// Bumped each time the entry's filter is removed; an entry at `u32::MAX`
    /// is retired rather than wrapped, so a stale handle never comes back.
    generation: u32,
    installed: Option<Installed>,
}

/// The best match found so far: its rank, and the answer it gives.
#[derive(Clone, Copy)]
struct Candidate {
    specificity: u32,
    sequence: u64,
    entry: u32,
    env: EnvId,
    /// The entry's generation while the filter is installed.
    generation: u32,
}

impl Candidate {
    fn answer(self) -> (EnvId, FilterId) {
        (self.env, FilterId::new(self.entry, self.generation))
    }
}

/// One step of a filter's path through the trie, for pruning on removal.
enum Edge {
    Test { test: usize, value: u32 },
    Shift { edge: usize },
}

/// Every installed filter of every environment, merged into one decision
/// trie.
pub struct Demux {
    nodes: Vec<Node>,
    free_nodes: Vec<u32>,
    entries: Vec<FilterEntry>,
    free_entries: Vec<u32>,
    filters_per_env: BTreeMap<EnvId, usize>,
    max_filters_per_env: usize,
    next_sequence: u64,
    hash_seed: u64,
    /// The branch tables' hash keys, derived from `hash_seed`.
    hash_keys: HashKeys,
    /// Cases [`overlap`](fn@super::overlap) may examine per filter checked,
    /// and per install.
    pub(super) overlap_budget_cases: u32,
    install_budget_cases: u32,
    live: usize,
}

impl Demux {
    /// An empty demultiplexer whose hash maps are seeded with `hash_seed`
    /// (drawn at boot; kept secret from libOSes).
    pub fn new(hash_seed: u64) -> Demux {
        Demux::with_filters_per_env(hash_seed, DEFAULT_FILTERS_PER_ENV)
    }

    /// As [`Demux::new`], allowing each environment `max_filters_per_env`
    /// filters.
    pub fn with_filters_per_env(hash_seed: u64, max_filters_per_env: usize) -> Demux {
        Demux {
            nodes: alloc::vec![Node::default()],
            free_nodes: Vec::new(),
            entries: Vec::new(),
            free_entries: Vec::new(),
            filters_per_env: BTreeMap::new(),
            max_filters_per_env,
            next_sequence: 0,
            hash_seed,
            hash_keys: HashKeys::from_seed(hash_seed),
            overlap_budget_cases: OVERLAP_BUDGET_CASES,
            install_budget_cases: INSTALL_BUDGET_CASES,
            live: 0,
        }
    }

    /// Installed filters.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Trie nodes in use, the root included.
    pub fn node_count(&self) -> usize {
        self.nodes.len() - self.free_nodes.len()
    }

    /// Drop the storage of an empty demultiplexer (every environment has
    /// ended): retired entries and freed nodes keep their memory otherwise.
    pub fn retire(&mut self) {
        if self.live == 0 {
            *self = Demux::with_filters_per_env(self.hash_seed, self.max_filters_per_env);
        }
    }

    /// Filters `env` has installed.
    pub fn filters_of(&self, env: EnvId) -> usize {
        self.filters_per_env.get(&env).copied().unwrap_or(0)
    }

    /// Verify the encoded filter and install it for `env`.
    pub fn install(&mut self, env: EnvId, encoded: &[u8]) -> Result<FilterId, FilterError> {
        let filter = verify(encoded)?;
        self.install_verified(env, filter)
    }

    /// Install a verified filter for `env`, unless `env` is at its quota or
    /// the filter conflicts with another environment's (module doc).
    pub fn install_verified(&mut self, env: EnvId, filter: Verified) -> Result<FilterId, FilterError> {
        if self.filters_of(env) >= self.max_filters_per_env {
            return Err(FilterError::QuotaExceeded);
        }
        if self.find_conflict(env, &filter).is_some() {
            return Err(FilterError::Conflict);
        }
        let entry_index = match self.free_entries.pop() {
            Some(index) => index,
            None => {
                let index = u32::try_from(self.entries.len()).map_err(|_| FilterError::QuotaExceeded)?;
                self.entries.push(FilterEntry { generation: 0, installed: None });
                index
            }
        };
        let sequence = self.next_sequence;
        let generation = self.entries[entry_index as usize].generation;
        let candidate = Candidate { specificity: filter.specificity, sequence, entry: entry_index, env, generation };
        self.insert_path(filter.atoms(), candidate);
        let entry = &mut self.entries[entry_index as usize];
        entry.installed = Some(Installed { env, filter, sequence });
        self.next_sequence += 1;
        *self.filters_per_env.entry(env).or_insert(0) += 1;
        self.live += 1;
        Ok(FilterId::new(entry_index, entry.generation))
    }

    /// Remove `env`'s filter `id`. A stale or unknown handle is
    /// `NoSuchFilter`; another environment's filter is `NotOwner`.
    pub fn remove(&mut self, env: EnvId, id: FilterId) -> Result<(), FilterError> {
        let entry = self
            .entries
            .get(id.entry_index())
            .filter(|entry| entry.generation == id.generation())
            .and_then(|entry| entry.installed.as_ref())
            .ok_or(FilterError::NoSuchFilter)?;
        if entry.env != env {
            return Err(FilterError::NotOwner);
        }
        self.remove_entry(id.entry_index() as u32);
        Ok(())
    }

    /// Remove every filter of `env` (it ended); returns how many.
    pub fn remove_env(&mut self, env: EnvId) -> usize {
        let owned: Vec<u32> = (0..self.entries.len() as u32)
            .filter(|&index| matches!(&self.entries[index as usize].installed, Some(i) if i.env == env))
            .collect();
        for &index in &owned {
            self.remove_entry(index);
        }
        owned.len()
    }

    fn remove_entry(&mut self, entry_index: u32) {
        let entry = &mut self.entries[entry_index as usize];
        let installed = entry.installed.take().expect("a live entry");
        entry.generation = entry.generation.saturating_add(1);
        if entry.generation != u32::MAX {
            self.free_entries.push(entry_index);
        }
        self.remove_path(installed.filter.atoms(), entry_index);
        let count = self.filters_per_env.get_mut(&installed.env).expect("an env with filters");
        *count -= 1;
        if *count == 0 {
            self.filters_per_env.remove(&installed.env);
        }
        self.live -= 1;
    }

    fn alloc_node(&mut self) -> u32 {
        match self.free_nodes.pop() {
            Some(index) => index,
            None => {
                self.nodes.push(Node::default());
                (self.nodes.len() - 1) as u32
            }
        }
    }

    fn free_node(&mut self, index: u32) {
        self.nodes[index as usize] = Node::default();
        self.free_nodes.push(index);
    }

    /// Follow (creating what is missing) the path of `atoms`; record the
    /// filter at its end.
    fn insert_path(&mut self, atoms: &[Atom], candidate: Candidate) {
        let mut node = ROOT;
        let mut path = Vec::with_capacity(atoms.len() + 1);
        // The one child of each path node that had one way on before.
        let mut links_before = Vec::with_capacity(atoms.len() + 1);
        for atom in atoms {
            path.push(node);
            links_before.push(self.link(node).map(|(_, child)| child));
            node = match *atom {
                Atom::Match { offset, width, mask, value } => {
                    let found = self.nodes[node as usize]
                        .tests
                        .iter()
                        .position(|t| t.offset == offset && t.width == width && t.mask == mask);
                    let test = match found {
                        Some(test) => test,
                        None => {
                            let branches = Branches::new();
                            let tests = &mut self.nodes[node as usize].tests;
                            tests.push(Test { offset, width, mask, branches });
                            tests.len() - 1
                        }
                    };
                    match self.nodes[node as usize].tests[test].branches.get(value) {
                        Some(child) => child,
                        None => {
                            let child = self.alloc_node();
                            let keys = self.hash_keys;
                            self.nodes[node as usize].tests[test].branches.insert_new(value, child, keys);
                            child
                        }
                    }
                }
                Atom::Shift { offset, width, mask, shift } => {
                    let found = self.nodes[node as usize]
                        .shifts
                        .iter()
                        .find(|e| e.offset == offset && e.width == width && e.mask == mask && e.shift == shift);
                    match found {
                        Some(edge) => edge.child,
                        None => {
                            let child = self.alloc_node();
                            let edge = ShiftEdge { offset, width, mask, shift, child };
                            self.nodes[node as usize].shifts.push(edge);
                            child
                        }
                    }
                }
            };
        }
        path.push(node);
        links_before.push(self.link(node).map(|(_, child)| child));
        let end = &mut self.nodes[node as usize];
        end.accepts.push(candidate.entry);
        if end.accept.is_none() {
            end.accept = Some(candidate);
        }
        // A node that now has a second way on (or accepts) ends the chain
        // it was part of: its old child heads a chain of its own.
        for (&parent, &old_child) in path.iter().zip(&links_before) {
            if let Some(old_child) = old_child {
                if self.link(parent).is_none() {
                    self.nodes[old_child as usize].fused = self.chain(old_child);
                }
            }
        }
        self.refuse_chains(&path);
    }

    /// The one way on from `node` if it has exactly one (one test with one
    /// branch, or one shift) and accepts nothing: a *link* of a chain. The
    /// atom it stands for, and the child.
    fn link(&self, node: u32) -> Option<(Atom, u32)> {
        let here = &self.nodes[node as usize];
        if !here.accepts.is_empty() {
            return None;
        }
        match (&here.tests[..], &here.shifts[..]) {
            ([test], []) if test.branches.len() == 1 => {
                let (value, child) = test.branches.iter().next()?;
                let (offset, width, mask) = (test.offset, test.width, test.mask);
                Some((Atom::Match { offset, width, mask, value }, child))
            }
            ([], [edge]) => {
                let (offset, width, mask, shift) = (edge.offset, edge.width, edge.mask, edge.shift);
                Some((Atom::Shift { offset, width, mask, shift }, edge.child))
            }
            _ => None,
        }
    }

    /// The chain of links from `node`, fused, if `node` is a link.
    fn chain(&self, node: u32) -> Option<Fused> {
        let mut atoms = Vec::new();
        let mut end = node;
        while let Some((atom, child)) = self.link(end) {
            atoms.push(atom);
            end = child;
        }
        (!atoms.is_empty()).then(|| Fused::compile(&atoms, end))
    }

    /// Recompute the fused chains of `path` (root first, each node the
    /// parent of the next) after it changed: a node heads a chain when its
    /// parent is not a link. Every chain that runs through a changed node
    /// starts at one of its ancestors, all on the path.
    fn refuse_chains(&mut self, path: &[u32]) {
        for (index, &node) in path.iter().enumerate() {
            let head = index == 0 || self.link(path[index - 1]).is_none();
            self.nodes[node as usize].fused = if head { self.chain(node) } else { None };
        }
    }

    /// Drop the filter from the end of its path and free the nodes no other
    /// filter uses any more.
    fn remove_path(&mut self, atoms: &[Atom], entry_index: u32) {
        let mut path: Vec<(u32, Edge, u32)> = Vec::with_capacity(atoms.len());
        let mut node = ROOT;
        for atom in atoms {
            let here = &self.nodes[node as usize];
            let (edge, child) = match *atom {
                Atom::Match { offset, width, mask, value } => {
                    let test = here
                        .tests
                        .iter()
                        .position(|t| t.offset == offset && t.width == width && t.mask == mask)
                        .expect("an installed filter's test");
                    (
                        Edge::Test { test, value },
                        here.tests[test].branches.get(value).expect("an installed filter's branch"),
                    )
                }
                Atom::Shift { offset, width, mask, shift } => {
                    let edge = here
                        .shifts
                        .iter()
                        .position(|e| e.offset == offset && e.width == width && e.mask == mask && e.shift == shift)
                        .expect("an installed filter's shift");
                    (Edge::Shift { edge }, here.shifts[edge].child)
                }
            };
            path.push((node, edge, child));
            node = child;
        }
        let accepts = &mut self.nodes[node as usize].accepts;
        let position = accepts.iter().position(|&s| s == entry_index).expect("the filter ends here");
        accepts.remove(position);
        let first = accepts.first().copied();
        self.nodes[node as usize].accept = first.map(|entry| self.candidate(entry));
        // Each level's edge index refers to its own parent, which no deeper
        // removal touched.
        let mut surviving: Vec<u32> = core::iter::once(ROOT).chain(path.iter().map(|&(_, _, child)| child)).collect();
        for (parent, edge, child) in path.into_iter().rev() {
            if !self.nodes[child as usize].is_unused() {
                break;
            }
            surviving.pop();
            self.free_node(child);
            let parent = &mut self.nodes[parent as usize];
            match edge {
                Edge::Test { test, value } => {
                    parent.tests[test].branches.remove(value);
                    if parent.tests[test].branches.is_empty() {
                        parent.tests.swap_remove(test);
                    }
                }
                Edge::Shift { edge } => {
                    parent.shifts.swap_remove(edge);
                }
            }
        }
        // A node left with one way on joins its child's chain: the child
        // no longer heads one.
        for &node in &surviving {
            if let Some((_, child)) = self.link(node) {
                self.nodes[child as usize].fused = None;
            }
        }
        self.refuse_chains(&surviving);
    }

    fn installed(&self, entry_index: u32) -> &Installed {
        self.entries[entry_index as usize].installed.as_ref().expect("a live entry")
    }

    /// An installed filter as a candidate answer.
    fn candidate(&self, entry_index: u32) -> Candidate {
        let entry = &self.entries[entry_index as usize];
        let installed = entry.installed.as_ref().expect("a live entry");
        Candidate {
            specificity: installed.filter.specificity,
            sequence: installed.sequence,
            entry: entry_index,
            env: installed.env,
            generation: entry.generation,
        }
    }
}

#[inline(always)]
fn consider_candidate(candidate: Candidate, best: &mut Option<Candidate>) {
    let rank = |c: &Candidate| (c.specificity, core::cmp::Reverse(c.sequence));
    let better = match best {
        None => true,
        Some(b) => rank(&candidate) > rank(b),
    };
    if better {
        *best = Some(candidate);
    }
}

impl Demux {
    /// The environment and filter that get `packet`, if any.
    pub fn classify(&self, packet: &[u8]) -> Option<(EnvId, FilterId)> {
        let mut uncounted = 0;
        self.classify_with::<false>(packet, &mut uncounted)
    }

    /// [`Demux::classify`], and the number of atom evaluations (trie test
    /// and shift edges; a fused chain counts as the atoms it stands for) it
    /// took.
    pub fn classify_counted(&self, packet: &[u8]) -> (Option<(EnvId, FilterId)>, u32) {
        let mut evaluations = 0;
        let answer = self.classify_with::<true>(packet, &mut evaluations);
        (answer, evaluations)
    }

    /// Classify, counting evaluations only if `COUNT` (so the kernel's
    /// path does no counting).
    #[inline(always)]
    fn classify_with<const COUNT: bool>(&self, packet: &[u8], evaluations: &mut u32) -> Option<(EnvId, FilterId)> {
        let mut best = None;
        let (mut node, mut base) = (ROOT, 0);
        // The fast path: fused chains, nodes with one test and nothing else
        // (switches: at most one child matches) and accepting leaves need
        // no recursion; the first node with several ways on goes to `walk`.
        loop {
            let here = &self.nodes[node as usize];
            if let Some(fused) = &here.fused {
                if COUNT {
                    *evaluations += fused.atoms;
                }
                match fused.run(packet, base) {
                    Some(end_base) => (node, base) = (fused.end, end_base),
                    None => break,
                }
                continue;
            }
            match (&here.tests[..], &here.shifts[..]) {
                ([test], []) if here.accept.is_none() => {
                    if COUNT {
                        *evaluations += 1;
                    }
                    let field = load_field(packet, base + test.offset as usize, test.width);
                    match field.and_then(|field| test.branches.get(field & test.mask)) {
                        Some(child) => node = child,
                        None => break,
                    }
                }
                ([], []) => {
                    if let Some(candidate) = here.accept {
                        consider_candidate(candidate, &mut best);
                    }
                    break;
                }
                _ => {
                    self.walk(node, base, packet, &mut best, evaluations);
                    break;
                }
            }
        }
        best.map(Candidate::answer)
    }

    /// Depth first from `node`: the last child a node selects is followed
    /// in the loop, earlier ones (several tests matching) by recursion, so a
    /// packet that follows one path costs no calls at all.
    fn walk(&self, mut node: u32, mut base: usize, packet: &[u8], best: &mut Option<Candidate>, evaluations: &mut u32) {
        loop {
            let here = &self.nodes[node as usize];
            if let Some(fused) = &here.fused {
                // A chain accepts nothing and has one way on.
                *evaluations += fused.atoms;
                match fused.run(packet, base) {
                    Some(end_base) => (node, base) = (fused.end, end_base),
                    None => return,
                }
                continue;
            }
            if let Some(candidate) = here.accept {
                consider_candidate(candidate, best);
            }
            let mut next: Option<(u32, usize)> = None;
            for test in &here.tests {
                *evaluations += 1;
                if let Some(field) = load_field(packet, base + test.offset as usize, test.width) {
                    if let Some(child) = test.branches.get(field & test.mask) {
                        if let Some((earlier, earlier_base)) = next.replace((child, base)) {
                            self.walk(earlier, earlier_base, packet, best, evaluations);
                        }
                    }
                }
            }
            for edge in &here.shifts {
                *evaluations += 1;
                if let Some(field) = load_field(packet, base + edge.offset as usize, edge.width) {
                    // Verified: at most MAX_FRAME_LEN per shift.
                    let advance = shift_advance(field, edge.mask, edge.shift) as usize;
                    if let Some((earlier, earlier_base)) = next.replace((edge.child, base + advance)) {
                        self.walk(earlier, earlier_base, packet, best, evaluations);
                    }
                }
            }
            match next {
                Some((child, child_base)) => (node, base) = (child, child_base),
                None => return,
            }
        }
    }

    /// The reference: evaluate every installed filter in turn. Same answer
    /// as [`Demux::classify`]; the cost grows with the number of filters.
    pub fn classify_linear(&self, packet: &[u8]) -> Option<(EnvId, FilterId)> {
        self.classify_linear_counted(packet).0
    }

    /// [`Demux::classify_linear`], and the number of atom evaluations.
    pub fn classify_linear_counted(&self, packet: &[u8]) -> (Option<(EnvId, FilterId)>, u32) {
        let mut best = None;
        let mut evaluations = 0;
        for (index, entry) in self.entries.iter().enumerate() {
            if let Some(installed) = &entry.installed {
                if matches_counted(installed.filter.atoms(), packet, &mut evaluations) {
                    consider_candidate(self.candidate(index as u32), &mut best);
                }
            }
        }
        (best.map(Candidate::answer), evaluations)
    }

    /// The entry of an installed filter of another environment that
    /// conflicts with `filter`, if any (module doc, "Conflicts").
    fn find_conflict(&self, env: EnvId, filter: &Verified) -> Option<u32> {
        if self.filters_per_env.keys().all(|&owner| owner == env) {
            return None;
        }
        let segments = segments(filter.atoms());
        let budget_cases = Cell::new(self.install_budget_cases);
        let walk = ConflictWalk { demux: self, env, filter, segments: &segments, budget_cases };
        walk.visit(ROOT, Some(0))
    }
}

/// A filter's segments: the match atoms between shifts, and the shift that
/// ends each (none for the last).
fn segments(atoms: &[Atom]) -> Vec<(Range<usize>, Option<Atom>)> {
    let mut segments = Vec::new();
    let mut start = 0;
    for (index, atom) in atoms.iter().enumerate() {
        if let Atom::Shift { .. } = atom {
            segments.push((start..index, Some(*atom)));
            start = index + 1;
        }
    }
    segments.push((start..atoms.len(), None));
    segments
}

/// What `matches` (match atoms, all at one base) require of the field
/// `(offset, width)` at that base: (known mask, value).
fn known_bits(matches: &[Atom], offset: u16, width: Width) -> (u32, u32) {
    let start = offset as usize;
    let end = start + width.bytes();
    let (mut known_mask, mut known_value) = (0u32, 0u32);
    for atom in matches {
        if let Atom::Match { offset, width, mask, value } = *atom {
            let atom_start = offset as usize;
            let atom_end = atom_start + width.bytes();
            for position in start.max(atom_start)..end.min(atom_end) {
                let atom_shift = 8 * (atom_end - 1 - position);
                let field_shift = 8 * (end - 1 - position);
                known_mask |= (mask >> atom_shift & 0xff) << field_shift;
                known_value |= (value >> atom_shift & 0xff) << field_shift;
            }
        }
    }
    (known_mask, known_value)
}

/// The trie walk of a new filter looking for conflicts.
struct ConflictWalk<'a> {
    demux: &'a Demux,
    env: EnvId,
    filter: &'a Verified,
    segments: &'a [(Range<usize>, Option<Atom>)],
    /// Cases left for this install.
    budget_cases: Cell<u32>,
}

impl ConflictWalk<'_> {
    /// Visit `node`. `aligned` is the new filter's segment whose base equals
    /// the node's (the path's shifts so far are exactly the filter's), or
    /// None once they differ. Returns a conflicting entry.
    fn visit(&self, node: u32, aligned: Option<usize>) -> Option<u32> {
        let node = &self.demux.nodes[node as usize];
        // Filters ending at one node share their atoms: one check suffices.
        let other = node.accepts.iter().copied().find(|&entry| self.demux.installed(entry).env != self.env);
        if let Some(entry) = other {
            let theirs = &self.demux.installed(entry).filter;
            let left = self.budget_cases.get();
            let mut budget = left.min(self.demux.overlap_budget_cases);
            let allowed = budget;
            let verdict = overlap_within(self.filter, theirs, &mut budget);
            self.budget_cases.set(left - (allowed - budget));
            if verdict != Overlap::Disjoint {
                return Some(entry);
            }
        }
        let segment_atoms = aligned.map(|segment| &self.filter.atoms()[self.segments[segment].0.clone()]);
        for test in &node.tests {
            let (known_mask, known_value) = match segment_atoms {
                Some(atoms) => known_bits(atoms, test.offset, test.width),
                None => (0, 0),
            };
            if known_mask & test.mask == test.mask {
                if let Some(child) = test.branches.get(known_value & test.mask) {
                    if let Some(entry) = self.visit(child, aligned) {
                        return Some(entry);
                    }
                }
                continue;
            }
            for (value, child) in test.branches.iter() {
                if (value ^ known_value) & known_mask & test.mask == 0 {
                    if let Some(entry) = self.visit(child, aligned) {
                        return Some(entry);
                    }
                }
            }
        }
        for edge in &node.shifts {
            let (offset, width, mask, shift) = (edge.offset, edge.width, edge.mask, edge.shift);
            let same_shift = Some(Atom::Shift { offset, width, mask, shift });
            let next = match aligned {
                Some(segment) if self.segments[segment].1 == same_shift => Some(segment + 1),
                _ => None,
            };
            if let Some(entry) = self.visit(edge.child, next) {
                return Some(entry);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::test_support::{
        env_of, ip_packet, random_atoms, random_packet, synthesised_packet, tcp, udp, verified, Rng, A, B, C, SEED,
    };
    use crate::filter::{overlap, verify_atoms};
    use alloc::vec;
    use shared_abi::filter::{proto, Filter, MAX_ATOMS};
    use shared_abi::syscall::Error;
    use std::println;

    /// An installed filter as the tests remember it: the atoms as written
    /// (not canonical), so the brute-force reference also checks
    /// canonicalisation.
    struct Reference {
        id: FilterId,
        env: EnvId,
        atoms: Vec<Atom>,
        specificity: u32,
        sequence: u64,
    }

    /// Brute force: every filter's original atoms, the most specific (then
    /// oldest) match. Also checks that every match belongs to one env.
    fn reference_classify(reference: &[Reference], packet: &[u8]) -> Option<(EnvId, FilterId)> {
        let matching: Vec<&Reference> =
            reference.iter().filter(|r| shared_abi::filter::matches(&r.atoms, packet)).collect();
        if let Some(first) = matching.first() {
            assert!(
                matching.iter().all(|r| r.env == first.env),
                "two environments' filters match one packet: {packet:?}"
            );
        }
        matching.iter().max_by_key(|r| (r.specificity, core::cmp::Reverse(r.sequence))).map(|r| (r.env, r.id))
    }

    #[test]
    fn udp_ports_are_demultiplexed_to_their_owners() {
        let mut demux = Demux::new(SEED);
        let echo = demux.install(A, &Filter::udp_dst_port(7).encode()).unwrap();
        let dns = demux.install(B, &Filter::udp_dst_port(53).encode()).unwrap();
        let http = demux.install(C, &Filter::tcp_dst_port(80).encode()).unwrap();
        assert_eq!(demux.classify(&udp(7)), Some((A, echo)));
        assert_eq!(demux.classify(&ip_packet(proto::IPPROTO_UDP, 2, 7)), Some((A, echo)), "IP options");
        assert_eq!(demux.classify(&udp(53)), Some((B, dns)));
        assert_eq!(demux.classify(&tcp(80)), Some((C, http)));
        assert_eq!(env_of(&demux, &udp(80)), None);
        assert_eq!(env_of(&demux, &tcp(7)), None);
        let packet = udp(7);
        for len in 0..packet.len() {
            let expected = if len >= 38 { Some(A) } else { None };
            assert_eq!(env_of(&demux, &packet[..len]), expected, "length {len}");
        }
        assert_eq!(demux.len(), 3);
    }

    #[test]
    fn identical_filter_from_another_env_is_refused() {
        let mut demux = Demux::new(SEED);
        let echo = Filter::udp_dst_port(7).encode();
        let first = demux.install(A, &echo).unwrap();
        assert_eq!(demux.install(B, &echo), Err(FilterError::Conflict));
        // The same filter written in another order is the same predicate.
        let reordered = Filter::new()
            .match_u8(proto::IPV4_PROTOCOL_OFFSET, proto::IPPROTO_UDP)
            .match_masked(proto::IPV4_FRAGMENT_OFFSET, Width::Two, 0x1fff, 0)
            .ipv4()
            .shift(proto::IPV4_OFFSET, Width::One, 0x0f, 2)
            .dst_port(7);
        assert_eq!(demux.install(B, &reordered.encode()), Err(FilterError::Conflict));
        // Its own environment may install it again; the older one wins.
        let second = demux.install(A, &echo).unwrap();
        assert_ne!(first, second);
        assert_eq!(demux.classify(&udp(7)), Some((A, first)));
        demux.remove(A, first).unwrap();
        assert_eq!(demux.classify(&udp(7)), Some((A, second)));
        assert_eq!(Error::from(demux.install(B, &echo).unwrap_err()), Error::PermissionDenied);
    }

    #[test]
    fn more_general_and_more_specific_filters_of_another_env_are_refused() {
        let mut demux = Demux::new(SEED);
        demux.install(A, &Filter::udp_dst_port(7).encode()).unwrap();
        // More general: would take A's port-7 packets.
        for general in [Filter::new().udp(), Filter::new().ipv4(), Filter::new().ethertype(0x0800)] {
            assert_eq!(demux.install(B, &general.encode()), Err(FilterError::Conflict), "{general:?}");
        }
        // More specific than A's: would steal the port-7 packets from one source port.
        let from_port_9 = Filter::udp_dst_port(7).src_port(9);
        assert_eq!(demux.install(B, &from_port_9.encode()), Err(FilterError::Conflict));

        let mut demux = Demux::new(SEED);
        demux.install(A, &Filter::new().udp().encode()).unwrap();
        assert_eq!(demux.install(B, &Filter::udp_dst_port(7).encode()), Err(FilterError::Conflict));
        let addressed = Filter::new().ipv4().ipv4_dst([10, 0, 2, 15]);
        assert_eq!(demux.install(B, &addressed.encode()), Err(FilterError::Conflict));
        assert!(demux.install(B, &Filter::tcp_dst_port(7).encode()).is_ok(), "TCP is not A's");
        assert!(demux.install(B, &Filter::new().ethertype(proto::ETHERTYPE_ARP).encode()).is_ok());
        assert!(demux.install(A, &Filter::udp_dst_port(7).encode()).is_ok(), "A may refine its own");
    }

    #[test]
    fn disjoint_filters_are_accepted() {
        let mut demux = Demux::new(SEED);
        for port in 0..64u16 {
            let env = 1 + port as u64 % 5;
            demux.install(env, &Filter::udp_dst_port(port).encode()).unwrap();
            demux.install(env + 10, &Filter::tcp_dst_port(port).encode()).unwrap();
        }
        // An address filter tests another field: a packet to that address
        // and one of the ports matches both, so it is refused.
        let addressed = Filter::new().ipv4().ipv4_dst([10, 0, 2, 16]);
        assert_eq!(demux.install(20, &addressed.encode()), Err(FilterError::Conflict));
        for port in 0..64u16 {
            assert_eq!(env_of(&demux, &udp(port)), Some(1 + port as u64 % 5));
            assert_eq!(env_of(&demux, &tcp(port)), Some(11 + port as u64 % 5));
        }
        assert_eq!(demux.len(), 128);
    }

    #[test]
    fn most_specific_filter_wins_within_an_env() {
        let mut demux = Demux::new(SEED);
        let all_udp = demux.install(A, &Filter::new().udp().encode()).unwrap();
        let echo = demux.install(A, &Filter::udp_dst_port(7).encode()).unwrap();
        let echo_from_9 = demux.install(A, &Filter::udp_dst_port(7).src_port(9).encode()).unwrap();
        let mut from_9 = udp(7);
        from_9[34..36].copy_from_slice(&9u16.to_be_bytes());
        assert_eq!(demux.classify(&from_9), Some((A, echo_from_9)));
        assert_eq!(demux.classify_linear(&from_9), Some((A, echo_from_9)));
        assert_eq!(demux.classify(&udp(7)), Some((A, echo)));
        assert_eq!(demux.classify(&udp(8)), Some((A, all_udp)));
        demux.remove(A, echo).unwrap();
        assert_eq!(demux.classify(&udp(7)), Some((A, all_udp)));
    }

    #[test]
    fn remove_restores_behaviour() {
        let mut demux = Demux::new(SEED);
        let nodes_when_empty = demux.node_count();
        let other = demux.install(B, &Filter::tcp_dst_port(80).encode()).unwrap();
        let nodes_with_one = demux.node_count();
        let echo = demux.install(A, &Filter::udp_dst_port(7).encode()).unwrap();
        assert_eq!(demux.install(C, &Filter::new().udp().encode()), Err(FilterError::Conflict));
        demux.remove(A, echo).unwrap();
        assert_eq!(demux.node_count(), nodes_with_one, "the UDP path is pruned");
        assert_eq!(env_of(&demux, &udp(7)), None);
        assert_eq!(env_of(&demux, &tcp(80)), Some(B));
        // What A's filter blocked is now free.
        let all_udp = demux.install(C, &Filter::new().udp().encode()).unwrap();
        assert_eq!(env_of(&demux, &udp(7)), Some(C));
        demux.remove(C, all_udp).unwrap();
        demux.remove(B, other).unwrap();
        assert_eq!(demux.node_count(), nodes_when_empty);
        assert!(demux.is_empty());
        assert_eq!(env_of(&demux, &tcp(80)), None);
    }

    #[test]
    fn stale_and_foreign_handles_are_refused() {
        let mut demux = Demux::new(SEED);
        let echo = demux.install(A, &Filter::udp_dst_port(7).encode()).unwrap();
        assert_eq!(demux.remove(B, echo), Err(FilterError::NotOwner));
        assert_eq!(env_of(&demux, &udp(7)), Some(A), "a refused removal changes nothing");
        demux.remove(A, echo).unwrap();
        assert_eq!(demux.remove(A, echo), Err(FilterError::NoSuchFilter));
        let reused = demux.install(A, &Filter::udp_dst_port(8).encode()).unwrap();
        assert_eq!(reused.entry_index(), echo.entry_index(), "the entry is reused");
        assert_eq!(demux.remove(A, echo), Err(FilterError::NoSuchFilter), "under a new generation");
        assert_eq!(demux.remove(A, FilterId::from_raw(12345)), Err(FilterError::NoSuchFilter));
        assert_eq!(demux.remove(A, FilterId::from_raw(reused.raw())), Ok(()));
    }

    #[test]
    fn an_ending_env_loses_every_filter() {
        let mut demux = Demux::new(SEED);
        for port in 0..10 {
            demux.install(A, &Filter::udp_dst_port(port).encode()).unwrap();
        }
        demux.install(B, &Filter::udp_dst_port(100).encode()).unwrap();
        assert_eq!(demux.filters_of(A), 10);
        assert_eq!(demux.remove_env(A), 10);
        assert_eq!(demux.filters_of(A), 0);
        assert_eq!(env_of(&demux, &udp(3)), None);
        assert_eq!(env_of(&demux, &udp(100)), Some(B));
        assert!(demux.install(B, &Filter::udp_dst_port(3).encode()).is_ok());
    }

    #[test]
    fn each_env_has_a_quota() {
        let mut demux = Demux::with_filters_per_env(SEED, 2);
        demux.install(A, &Filter::udp_dst_port(1).encode()).unwrap();
        let second = demux.install(A, &Filter::udp_dst_port(2).encode()).unwrap();
        assert_eq!(demux.install(A, &Filter::udp_dst_port(3).encode()), Err(FilterError::QuotaExceeded));
        assert!(demux.install(B, &Filter::udp_dst_port(3).encode()).is_ok());
        demux.remove(A, second).unwrap();
        assert!(demux.install(A, &Filter::udp_dst_port(4).encode()).is_ok());
    }

    #[test]
    fn an_install_has_a_total_budget() {
        // Three filters of A, each disjoint from B's only after two cases.
        let a = |k| Filter::new().shift(1, Width::One, 0x01, 0).match_u8(0, 7).match_u8(5, k);
        let b = Filter::new().match_u8(0, 1).match_masked(1, Width::One, 0xfe, 2);
        let mut demux = Demux::new(SEED);
        for k in 0..3 {
            demux.install(A, &a(k).encode()).unwrap();
        }
        demux.install_budget_cases = 5;
        assert_eq!(demux.install(B, &b.encode()), Err(FilterError::Conflict), "the third check runs out");
        demux.install_budget_cases = 6;
        assert!(demux.install(B, &b.encode()).is_ok());
    }

    #[test]
    fn aligned_trie_walk_decides_what_case_splitting_cannot() {
        // Two shifts of up to 1023 bytes each: a million cases to split, but
        // the same shifts in both filters, so the trie walk compares the
        // final bytes directly.
        let twice =
            |value| Filter::new().shift(0, Width::Two, 0x03ff, 0).shift(0, Width::Two, 0x03ff, 0).match_u8(0, value);
        assert_eq!(overlap(&verified(&twice(1)), &verified(&twice(2)), 4096), Overlap::Undecided);
        let mut demux = Demux::new(SEED);
        demux.install(A, &twice(1).encode()).unwrap();
        assert!(demux.install(B, &twice(2).encode()).is_ok());
        assert_eq!(demux.install(C, &twice(1).encode()), Err(FilterError::Conflict));
        // Base 2 after the first shift, 2 + 1 after the second: byte 3.
        assert_eq!(env_of(&demux, &[0, 2, 0, 1]), Some(A));
        assert_eq!(env_of(&demux, &[0, 2, 0, 2, 2]), Some(B));
        assert_eq!(env_of(&demux, &[0, 2, 0, 2, 3]), None);
    }

    /// Install `attempts` random filters for envs `1..=envs` (removing one
    /// now and then), classify `packets` random and synthesised packets
    /// after every batch, and require trie, linear matcher and brute force
    /// to agree.
    fn differential(seed: u64, envs: u64, attempts: usize, packets: usize) -> (usize, usize) {
        let mut rng = Rng(seed);
        let mut demux = Demux::with_filters_per_env(SEED, 100_000);
        let mut reference: Vec<Reference> = Vec::new();
        let mut refused = 0;
        let mut sequence = 0u64;
        for attempt in 0..attempts {
            let atoms = random_atoms(&mut rng);
            let env = 1 + rng.below(envs);
            let filter = verify_atoms(&atoms).unwrap();
            let specificity = filter.specificity();
            match demux.install_verified(env, filter) {
                Ok(id) => {
                    reference.push(Reference { id, env, atoms, specificity, sequence });
                    sequence += 1;
                }
                Err(FilterError::Conflict) => refused += 1,
                Err(other) => panic!("unexpected {other:?}"),
            }
            if rng.chance(1, 10) && !reference.is_empty() {
                let victim = reference.swap_remove(rng.below(reference.len() as u64) as usize);
                demux.remove(victim.env, victim.id).unwrap();
            }
            if attempt % (attempts / 4) == attempts / 4 - 1 {
                for _ in 0..packets / 4 {
                    let packet = if rng.chance(1, 2) || reference.is_empty() {
                        random_packet(&mut rng)
                    } else {
                        let source = &reference[rng.below(reference.len() as u64) as usize];
                        synthesised_packet(&mut rng, &verify_atoms(&source.atoms).unwrap())
                    };
                    let expected = reference_classify(&reference, &packet);
                    assert_eq!(demux.classify(&packet), expected, "trie on {packet:?}");
                    assert_eq!(demux.classify_linear(&packet), expected, "linear on {packet:?}");
                }
            }
        }
        assert_eq!(demux.len(), reference.len());
        // Removing everything leaves the bare root.
        for entry in &reference {
            demux.remove(entry.env, entry.id).unwrap();
        }
        assert_eq!(demux.node_count(), 1);
        (reference.len(), refused)
    }

    #[test]
    fn trie_agrees_with_linear_matcher_on_thousands_of_random_filters() {
        let (installed, refused) = differential(0x1234_5678, 1, 2000, 2000);
        assert_eq!(refused, 0, "one environment never conflicts with itself");
        assert!(installed > 1500, "{installed}");
    }

    #[test]
    fn trie_agrees_with_linear_matcher_with_conflicts_and_removals() {
        let (installed, refused) = differential(0x9abc_def0, 6, 2000, 2000);
        println!("6 envs: {installed} installed at the end, {refused} refused as conflicts");
        assert!(installed > 100 && refused > 1000, "{installed} installed, {refused} refused");
    }

    #[test]
    fn trie_conflict_walk_agrees_with_checking_every_filter() {
        let mut rng = Rng(0x5151_5151);
        let mut demux = Demux::with_filters_per_env(SEED, 100_000);
        let mut installed: Vec<(FilterId, EnvId, Verified)> = Vec::new();
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..1500 {
            let env = 1 + rng.below(4);
            let filter = verify_atoms(&random_atoms(&mut rng)).unwrap();
            let conflicts = installed.iter().any(|(_, other, theirs)| {
                *other != env && overlap(&filter, theirs, OVERLAP_BUDGET_CASES) != Overlap::Disjoint
            });
            match demux.install_verified(env, filter.clone()) {
                Ok(id) => {
                    assert!(!conflicts, "accepted a conflicting {filter:?}");
                    installed.push((id, env, filter));
                    accepted += 1;
                }
                Err(FilterError::Conflict) => {
                    assert!(conflicts, "refused a harmless {filter:?}");
                    refused += 1;
                }
                Err(other) => panic!("unexpected {other:?}"),
            }
            if rng.chance(1, 8) && !installed.is_empty() {
                let (id, env, _) = installed.swap_remove(rng.below(installed.len() as u64) as usize);
                demux.remove(env, id).unwrap();
            }
        }
        assert!(accepted > 100 && refused > 100, "{accepted} accepted, {refused} refused");
    }

    /// Mean evaluations per packet (trie, linear) with `count` UDP-port
    /// filters spread over 10 environments, over packets to installed ports;
    /// and (trie, linear) for a packet to a port nobody claims.
    fn cost_with(count: u16) -> ((f64, f64), (u32, u32)) {
        let mut demux = Demux::new(SEED);
        for i in 0..count {
            let env = 1 + i as u64 % 10;
            demux.install(env, &Filter::udp_dst_port(1000 + i).encode()).unwrap();
        }
        let probes: Vec<u16> = (0..64u16).map(|k| 1000 + (k as u32 * count as u32 / 64) as u16).collect();
        let (mut trie_total, mut linear_total) = (0u64, 0u64);
        for &port in &probes {
            let packet = udp(port);
            let (trie, trie_evaluations) = demux.classify_counted(&packet);
            let (linear, linear_evaluations) = demux.classify_linear_counted(&packet);
            assert_eq!(trie, linear);
            assert_eq!(trie.map(|(env, _)| env), Some(1 + (port - 1000) as u64 % 10));
            trie_total += trie_evaluations as u64;
            linear_total += linear_evaluations as u64;
        }
        let packets = probes.len() as f64;
        let miss = udp(999);
        let (nobody, trie_miss) = demux.classify_counted(&miss);
        let (also_nobody, linear_miss) = demux.classify_linear_counted(&miss);
        assert_eq!((nobody, also_nobody), (None, None));
        ((trie_total as f64 / packets, linear_total as f64 / packets), (trie_miss, linear_miss))
    }

    #[test]
    fn demultiplexing_cost_stays_flat_as_filters_are_added() {
        println!("filters  trie evals/packet  linear evals/packet  linear/trie  miss: trie  linear");
        let mut costs = Vec::new();
        for count in [1u16, 10, 100, 1000] {
            let ((trie, linear), (trie_miss, linear_miss)) = cost_with(count);
            let ratio = linear / trie;
            println!("{count:>7}  {trie:>17.1}  {linear:>19.1}  {ratio:>11.1}  {trie_miss:>10}  {linear_miss:>6}");
            costs.push((trie, linear));
        }
        let (trie_1, linear_1) = costs[0];
        let (trie_1000, linear_1000) = costs[3];
        assert!(trie_1000 <= 1.5 * trie_1, "trie cost grew: {trie_1} -> {trie_1000}");
        assert!(linear_1000 >= 500.0 * linear_1, "the linear matcher grows linearly");
        assert!(linear_1000 >= 50.0 * trie_1000, "the trie is at least 50x cheaper at 1000 filters");
    }

    /// Protocol-shaped filters (UDP and TCP ports, the same port field
    /// under different masks, addresses, source ports, ARP, raw bytes of the
    /// Ethernet header) from several environments, installed and removed at
    /// random; packets with IP headers of 5 to 15 words, fragments, other
    /// protocols, truncated anywhere. The fast path (fused chains, switches)
    /// must answer exactly as the linear matcher and the brute-force
    /// reference, and removing everything must leave the bare root.
    #[test]
    fn fast_path_agrees_on_protocol_shaped_filters_with_removals() {
        let mut rng = Rng(0x0dd_ba11);
        let mut demux = Demux::with_filters_per_env(SEED, 100_000);
        let mut reference: Vec<Reference> = Vec::new();
        let mut sequence = 0;
        let ports = [7u16, 53, 80, 0x1234, 0x1235, 0xff00, 10_000];
        let mut fused_heads_seen = 0;
        for round in 0..3000 {
            let port = rng.pick(&ports);
            let filter = match rng.below(9) {
                0 => Filter::udp_dst_port(port),
                1 => Filter::tcp_dst_port(port),
                2 => Filter::new().udp().match_masked(
                    proto::TRANSPORT_OFFSET + 2,
                    Width::Two,
                    0xff00,
                    port as u32 & 0xff00,
                ),
                3 => Filter::new().udp().match_masked(
                    proto::TRANSPORT_OFFSET + 2,
                    Width::Two,
                    0x00ff,
                    port as u32 & 0x00ff,
                ),
                4 => Filter::udp_dst_port(port).src_port(rng.pick(&ports)),
                5 => Filter::new().ipv4().ipv4_dst([10, 0, 2, rng.pick(&[15u8, 16])]),
                6 => Filter::new().ethertype(proto::ETHERTYPE_ARP),
                7 => Filter::new().match_u8(rng.below(6) as u16, rng.pick(&[0u8, 0x52])).udp(),
                _ => Filter::new().ipv4_protocol(rng.pick(&[proto::IPPROTO_UDP, proto::IPPROTO_TCP, 1])),
            };
            let atoms = filter.atoms.clone();
            let env = 1 + rng.below(4);
            let verified = verify_atoms(&atoms).unwrap();
            let specificity = verified.specificity();
            if let Ok(id) = demux.install_verified(env, verified) {
                reference.push(Reference { id, env, atoms, specificity, sequence });
                sequence += 1;
            }
            if rng.chance(2, 5) && !reference.is_empty() {
                let victim = reference.swap_remove(rng.below(reference.len() as u64) as usize);
                demux.remove(victim.env, victim.id).unwrap();
            }
            fused_heads_seen += demux.nodes.iter().filter(|node| node.fused.is_some()).count();
            for _ in 0..if round % 10 == 0 { 40 } else { 4 } {
                let protocol = rng.pick(&[proto::IPPROTO_UDP, proto::IPPROTO_UDP, proto::IPPROTO_TCP, 1]);
                let mut packet = ip_packet(protocol, rng.below(11) as usize, rng.pick(&ports));
                if rng.chance(1, 4) {
                    let from = rng.pick(&ports).to_be_bytes();
                    let at = 14 + (packet[14] as usize & 0x0f) * 4;
                    packet[at..at + 2].copy_from_slice(&from);
                }
                match rng.below(10) {
                    0 => packet[20] |= 0x01, // a later fragment
                    1 => packet[12..14].copy_from_slice(&proto::ETHERTYPE_ARP.to_be_bytes()),
                    2 => packet[17 + 16] = 16, // another destination address
                    3 => packet[rng.below(6) as usize] = 0x52,
                    4 => packet.truncate(rng.below(packet.len() as u64 + 1) as usize),
                    _ => {}
                }
                let expected = reference_classify(&reference, &packet);
                assert_eq!(demux.classify(&packet), expected, "trie on {packet:?}");
                assert_eq!(demux.classify_linear(&packet), expected, "linear on {packet:?}");
            }
        }
        assert!(fused_heads_seen > 1000, "the fast path was exercised: {fused_heads_seen}");
        for entry in &reference {
            demux.remove(entry.env, entry.id).unwrap();
        }
        assert_eq!(demux.node_count(), 1);
        assert!(demux.nodes[ROOT as usize].fused.is_none());
    }

    /// The shapes the fast path relies on, and that installs and removals
    /// keep them: one filter is one fused chain from the root to its leaf;
    /// a second port splits it into the shared prefix, a switch and two
    /// leaves; another protocol splits the prefix where the protocols part;
    /// a filter ending inside a chain ends it there; removing them joins
    /// the chain again.
    #[test]
    fn chains_are_fused_split_and_joined() {
        let mut demux = Demux::new(SEED);
        let fused_atoms = |demux: &Demux| -> Vec<u32> {
            let mut heads: Vec<u32> =
                demux.nodes.iter().filter_map(|node| node.fused.as_ref().map(|fused| fused.atoms)).collect();
            heads.sort();
            heads
        };
        let echo = demux.install(A, &Filter::udp_dst_port(7).encode()).unwrap();
        assert_eq!(fused_atoms(&demux), [6], "one chain: the whole filter");
        let dns = demux.install(A, &Filter::udp_dst_port(53).encode()).unwrap();
        assert_eq!(fused_atoms(&demux), [5], "the UDP prefix; the port test is a switch");
        let http = demux.install(B, &Filter::tcp_dst_port(80).encode()).unwrap();
        assert_eq!(
            fused_atoms(&demux),
            [1, 2, 3],
            "the shared ethertype, version, fragment; UDP's shift; TCP's shift and port"
        );
        demux.remove(B, http).unwrap();
        assert_eq!(fused_atoms(&demux), [5]);
        let udp_any = demux.install(A, &Filter::new().udp().encode()).unwrap();
        assert_eq!(fused_atoms(&demux), [5], "accepting at the chain's end keeps it");
        demux.remove(A, dns).unwrap();
        assert_eq!(fused_atoms(&demux), [5], "an accepting node is no link: its port test is walked");
        demux.remove(A, udp_any).unwrap();
        assert_eq!(fused_atoms(&demux), [6], "joined again");
        assert_eq!(demux.classify(&udp(7)), Some((A, echo)));
        assert_eq!(demux.classify(&ip_packet(proto::IPPROTO_UDP, 3, 7)), Some((A, echo)));
        assert_eq!(demux.classify(&udp(53)), None);
    }

    #[test]
    fn hostile_filters_and_packets_never_panic() {
        let deep: Vec<Atom> = (0..MAX_ATOMS)
            .map(|i| {
                if i % 2 == 0 {
                    Atom::Shift { offset: 1512, width: Width::Two, mask: 0x03ff, shift: 0 }
                } else {
                    Atom::Match { offset: 1510, width: Width::Four, mask: 0, value: 0 }
                }
            })
            .collect();
        let mut demux = Demux::new(SEED);
        demux.install_verified(A, verify_atoms(&deep).unwrap()).unwrap();
        let other = Filter::new().shift(1512, Width::Two, 0x03ff, 0).match_u8(0, 9);
        let _ = demux.install(B, &other.encode());
        for packet in [vec![], vec![0xff; 1514], vec![0xff; 64 * 1024], vec![0; 1514]] {
            let _ = demux.classify(&packet);
            assert_eq!(demux.classify(&packet), demux.classify_linear(&packet));
        }
    }
}
