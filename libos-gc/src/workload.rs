//! The workloads that drive the heap, and the checks that keep the
//! collector honest: a shadow count of the objects the mutator holds
//! reachable, compared with the collector's own live count after every
//! major collection and with a verifying walk of the live graph after
//! every minor one; and a checksum in every object.
//!
//! Every object has at least one data word: word 0 is its serial number
//! `id`, word `k >= 1` is `mix(id + k)`. A walk checks each one, so a
//! freed-and-reused or half-copied object cannot pass unseen.

use crate::heap::{Barrier, Heap, Memory};
use alloc::vec::Vec;
use core::fmt;

/// A 64-bit mixer (splitmix64's finaliser): the checksum of a field.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// When the live set is checked against the shadow count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verify {
    /// Only at the end of the run.
    End,
    /// After every major collection (the collector's count) and at the end.
    Major,
    /// Also after every minor collection (a walk of the live graph).
    Every,
}

impl Verify {
    /// `end`, `major` or `every`.
    pub fn parse(text: &str) -> Option<Verify> {
        match text {
            "end" => Some(Verify::End),
            "major" => Some(Verify::Major),
            "every" => Some(Verify::Every),
            _ => None,
        }
    }
}

/// Why a run stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The heap had no room even after collecting.
    OutOfMemory,
    /// The live count disagreed with the mutator's shadow count.
    LiveMismatch { after: &'static str, counted: u64, shadow: u64 },
    /// A reachable pointer did not lead to an object the heap holds.
    Dangling { pointer: u64 },
    /// An object's checksum words did not match its id.
    Corrupt { object: u64, id: u64 },
    /// An object stored only in an old page was not found intact.
    OldPagePointerLost { index: usize },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Failure::OutOfMemory => write!(f, "out of memory"),
            Failure::LiveMismatch { after, counted, shadow } => {
                write!(f, "after a {after} collection {counted} objects live, the mutator holds {shadow}")
            }
            Failure::Dangling { pointer } => write!(f, "dangling pointer {pointer:#x}"),
            Failure::Corrupt { object, id } => write!(f, "object {object:#x} (id {id}) corrupt"),
            Failure::OldPagePointerLost { index } => {
                write!(f, "object {index} referenced only from an old page was lost")
            }
        }
    }
}

/// The mutator: allocates through the heap, keeps the shadow count and
/// runs the checks.
pub struct Mutator<'h, M: Memory, B: Barrier> {
    pub heap: &'h mut Heap<M, B>,
    /// Objects the mutator holds reachable (by construction).
    pub shadow: u64,
    /// Objects allocated.
    pub allocated: u64,
    next_id: u64,
    /// Per root: does it own a tree no other root reaches (walk it)?
    owning: Vec<bool>,
    verify: Verify,
    /// Live-set checks passed.
    pub checks: u64,
}

/// The result of a verifying walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Walk {
    pub objects: u64,
    /// Folds every object's id in depth-first order: equal for equal graphs.
    pub checksum: u64,
}

impl<'h, M: Memory, B: Barrier> Mutator<'h, M, B> {
    pub fn new(heap: &'h mut Heap<M, B>, verify: Verify) -> Self {
        Mutator { heap, shadow: 0, allocated: 0, next_id: 1, owning: Vec::new(), verify, checks: 0 }
    }

    /// Allocate an object with `ptrs` pointer fields and `data` (>= 1) data
    /// words holding its id and checksums; counts it in the shadow (the
    /// caller makes it reachable before its next allocation, or calls
    /// [`Mutator::dropped`]).
    pub fn new_object(&mut self, ptrs: usize, data: usize) -> Result<u64, Failure> {
        let (minors, majors) = (self.heap.stats.minors, self.heap.stats.majors);
        let obj = self.heap.alloc(ptrs, data).map_err(|_| Failure::OutOfMemory)?;
        if self.verify >= Verify::Major && self.heap.stats.majors != majors {
            self.check_count("major", self.heap.stats.last_major_live)?;
        }
        if self.verify == Verify::Every && self.heap.stats.minors != minors {
            let walk = self.walk()?;
            self.check_count("minor", walk.objects)?;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.heap.set_data(obj, ptrs, 0, id);
        for k in 1..data {
            self.heap.set_data(obj, ptrs, k, mix(id + k as u64));
        }
        self.shadow += 1;
        self.allocated += 1;
        Ok(obj)
    }

    /// `objects` the mutator held are now unreachable.
    pub fn dropped(&mut self, objects: u64) {
        self.shadow -= objects;
    }

    fn check_count(&mut self, after: &'static str, counted: u64) -> Result<(), Failure> {
        if counted != self.shadow {
            return Err(Failure::LiveMismatch { after, counted, shadow: self.shadow });
        }
        self.checks += 1;
        Ok(())
    }

    /// Push a root; `owning` if no other root reaches what it points to.
    pub fn push_root(&mut self, obj: u64, owning: bool) -> usize {
        self.owning.push(owning);
        self.heap.push_root(obj)
    }

    /// Drop roots down to `len`.
    pub fn truncate_roots(&mut self, len: usize) {
        self.owning.truncate(len);
        self.heap.truncate_roots(len);
    }

    /// Walk everything reachable from the owning roots, checking that each
    /// pointer leads to an object and each object's checksums.
    pub fn walk(&self) -> Result<Walk, Failure> {
        let mut walk = Walk { objects: 0, checksum: 0 };
        let mut stack = Vec::new();
        for (index, &owning) in self.owning.iter().enumerate() {
            if owning {
                stack.push(self.heap.root(index));
            }
        }
        while let Some(obj) = stack.pop() {
            if obj == 0 {
                continue;
            }
            if !self.heap.is_object(obj) {
                return Err(Failure::Dangling { pointer: obj });
            }
            let id = self.check_object(obj)?;
            walk.objects += 1;
            walk.checksum = walk.checksum.rotate_left(5) ^ mix(id);
            let ptrs = (self.heap.header(obj) >> 16 & 0xffff) as usize;
            for i in (0..ptrs).rev() {
                stack.push(self.heap.field(obj, i));
            }
        }
        Ok(walk)
    }

    /// Check `obj`'s checksum words; returns its id.
    pub fn check_object(&self, obj: u64) -> Result<u64, Failure> {
        let header = self.heap.header(obj);
        let ptrs = (header >> 16 & 0xffff) as usize;
        let data = (header >> 32 & 0xffff) as usize;
        let id = self.heap.data(obj, ptrs, 0);
        if data == 0 || id == 0 || id >= self.next_id {
            return Err(Failure::Corrupt { object: obj, id });
        }
        for k in 1..data {
            if self.heap.data(obj, ptrs, k) != mix(id + k as u64) {
                return Err(Failure::Corrupt { object: obj, id });
            }
        }
        Ok(id)
    }

    /// The final check: a walk whose count must equal the shadow count.
    pub fn verify_now(&mut self, after: &'static str) -> Result<Walk, Failure> {
        let walk = self.walk()?;
        self.check_count(after, walk.objects)?;
        Ok(walk)
    }
}

// ----- GCBench -----

/// The shape of a GCBench run (Boehm's GCBench, scaled down: the same
/// trees at smaller depths).
#[derive(Clone, Copy, Debug)]
pub struct GcBenchConfig {
    /// Depth of the tree built once and dropped at the start.
    pub stretch_depth: u32,
    /// Depth of the tree that lives through the whole run.
    pub long_lived_depth: u32,
    /// Data words of the long-lived array (pointer-free, pretenured).
    pub array_words: usize,
    /// Short-lived trees are built at depths min, min+2, ..., max.
    pub min_depth: u32,
    pub max_depth: u32,
    /// Fresh objects whose only reference is stored into an old object.
    pub old_page_objects: usize,
    /// Times the short-lived trees are built over (a longer run, same heap).
    pub rounds: u32,
}

impl Default for GcBenchConfig {
    fn default() -> Self {
        GcBenchConfig {
            stretch_depth: 12,
            long_lived_depth: 10,
            array_words: 500,
            min_depth: 4,
            max_depth: 10,
            old_page_objects: 32,
            rounds: 1,
        }
    }
}

/// Nodes in a complete binary tree of `depth` (a lone node is depth 0).
pub fn tree_size(depth: u32) -> u64 {
    (1u64 << (depth + 1)) - 1
}

/// A tree node: left, right; id and checksum.
const NODE_PTRS: usize = 2;
const NODE_DATA: usize = 2;

/// What a GCBench run saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct GcBenchReport {
    pub allocated: u64,
    /// Objects live at the end, by the final walk (and the shadow count).
    pub live: u64,
    pub checksum: u64,
    /// Live-set checks passed along the way.
    pub checks: u64,
    /// Short-lived trees built.
    pub trees: u64,
    /// Objects stored only in an old page that survived a minor collection.
    pub old_page_survivors: u64,
}

impl<'h, M: Memory, B: Barrier> Mutator<'h, M, B> {
    fn new_node(&mut self) -> Result<u64, Failure> {
        self.new_object(NODE_PTRS, NODE_DATA)
    }

    /// Boehm's Populate: give the node in root `at` two children, `depth`
    /// levels down, top-down (every node is reachable once made).
    fn populate(&mut self, depth: u32, at: usize) -> Result<(), Failure> {
        if depth == 0 {
            return Ok(());
        }
        let left = self.new_node()?;
        let node = self.heap.root(at);
        self.heap.set_field(node, 0, left);
        let right = self.new_node()?;
        let node = self.heap.root(at);
        self.heap.set_field(node, 1, right);
        let base = self.heap.roots_len();
        for side in 0..2 {
            let child = self.heap.field(self.heap.root(at), side);
            let child_root = self.push_root(child, false);
            self.populate(depth - 1, child_root)?;
            self.truncate_roots(base);
        }
        Ok(())
    }

    /// Boehm's MakeTree: a tree of `depth` built bottom-up (subtrees are
    /// held by roots until their parent exists). The caller roots it.
    fn make_tree(&mut self, depth: u32) -> Result<u64, Failure> {
        if depth == 0 {
            return self.new_node();
        }
        let base = self.heap.roots_len();
        let left = self.make_tree(depth - 1)?;
        self.push_root(left, true);
        let right = self.make_tree(depth - 1)?;
        self.push_root(right, true);
        let node = self.new_node()?;
        self.heap.set_field(node, 0, self.heap.root(base));
        self.heap.set_field(node, 1, self.heap.root(base + 1));
        self.truncate_roots(base);
        Ok(node)
    }

    /// The leaf of the tree at root `at` (of `depth`) reached by the bits
    /// of `path` (bit i set: go right at level i).
    fn leaf(&self, at: usize, depth: u32, path: u64) -> u64 {
        let mut node = self.heap.root(at);
        for level in 0..depth {
            node = self.heap.field(node, (path >> level & 1) as usize);
        }
        node
    }

    /// Run GCBench; `safe_point` is called between trees (the libOS answers
    /// the kernel there).
    pub fn gcbench(
        &mut self,
        config: &GcBenchConfig,
        mut safe_point: impl FnMut(&mut Heap<M, B>),
    ) -> Result<GcBenchReport, Failure> {
        let mut report = GcBenchReport::default();
        let base = self.heap.roots_len();
        // Stretch the heap with one big tree, then drop it.
        let stretch = self.make_tree(config.stretch_depth)?;
        let _ = stretch;
        self.dropped(tree_size(config.stretch_depth));
        // The long-lived tree (top-down) and array.
        let tree = self.new_node()?;
        let tree_root = self.push_root(tree, true);
        self.populate(config.long_lived_depth, tree_root)?;
        let array = self.new_object(0, config.array_words.max(1))?;
        self.push_root(array, true);
        // Make both old, then store the only reference to fresh objects
        // (each with a child) into old leaves and collect the nursery.
        self.heap.minor();
        self.verify_now("minor")?;
        report.old_page_survivors = self.old_page_pointers(tree_root, config)?;
        safe_point(self.heap);
        // Short-lived trees, top-down and bottom-up, at each depth.
        let mut depth = config.min_depth;
        let mut round = 1;
        while depth <= config.max_depth {
            let iterations = (2 * tree_size(config.stretch_depth) / tree_size(depth)).max(1);
            for _ in 0..iterations {
                let temp = self.new_node()?;
                let temp_root = self.push_root(temp, true);
                self.populate(depth, temp_root)?;
                self.truncate_roots(temp_root);
                self.dropped(tree_size(depth));
                let bottom_up = self.make_tree(depth)?;
                let _ = bottom_up;
                self.dropped(tree_size(depth));
                report.trees += 2;
                safe_point(self.heap);
            }
            depth += 2;
            if depth > config.max_depth && round < config.rounds {
                round += 1;
                depth = config.min_depth;
            }
        }
        // Both long-lived structures must still be whole.
        let walk = self.verify_now("final")?;
        self.truncate_roots(base);
        report.allocated = self.allocated;
        report.live = walk.objects;
        report.checksum = walk.checksum;
        report.checks = self.checks;
        Ok(report)
    }

    /// The remembered-set test: for `n` distinct leaves of the (old)
    /// long-lived tree, allocate a node with a child in the nursery and
    /// store the only reference to it into the leaf; run a minor
    /// collection; each must be found, moved out of the nursery, intact.
    fn old_page_pointers(&mut self, tree_root: usize, config: &GcBenchConfig) -> Result<u64, Failure> {
        let depth = config.long_lived_depth;
        let leaves = 1u64 << depth;
        let n = (config.old_page_objects as u64).min(leaves);
        let mut expected = Vec::new();
        for k in 0..n {
            let path = k * (leaves / n.max(1));
            if self.heap.in_nursery(self.leaf(tree_root, depth, path)) {
                return Err(Failure::OldPagePointerLost { index: k as usize });
            }
            let fresh = self.new_node()?;
            let leaf = self.leaf(tree_root, depth, path);
            self.heap.set_field(leaf, 0, fresh);
            let child = self.new_node()?;
            let fresh = self.heap.field(self.leaf(tree_root, depth, path), 0);
            self.heap.set_field(fresh, 0, child);
            let fresh_id = self.heap.data(fresh, NODE_PTRS, 0);
            expected.push((path, fresh_id));
        }
        self.heap.minor();
        for (k, &(path, id)) in expected.iter().enumerate() {
            let lost = Failure::OldPagePointerLost { index: k };
            let fresh = self.heap.field(self.leaf(tree_root, depth, path), 0);
            if !self.heap.is_object(fresh) || self.heap.in_nursery(fresh) || self.check_object(fresh)? != id {
                return Err(lost);
            }
            let child = self.heap.field(fresh, 0);
            if !self.heap.is_object(child) || self.heap.in_nursery(child) || self.check_object(child)? != id + 1 {
                return Err(lost);
            }
        }
        let walk = self.walk()?;
        self.check_count("minor", walk.objects)?;
        Ok(n)
    }
}

// ----- lists: the default boot's small workload -----

/// Lists of the default boot: `LISTS` roots, each a list that grows by one
/// object every fourth step and is dropped whole past `MAX_LIST`; the
/// other steps make garbage.
pub const LISTS: usize = 16;
pub const MAX_LIST: usize = 12;

/// State of the lists workload.
pub struct Lists {
    lengths: [u64; LISTS],
    first_root: usize,
}

impl Lists {
    /// Push the list roots.
    pub fn new<M: Memory, B: Barrier>(mutator: &mut Mutator<'_, M, B>) -> Self {
        let first_root = mutator.heap.roots_len();
        for _ in 0..LISTS {
            mutator.push_root(0, true);
        }
        Lists { lengths: [0; LISTS], first_root }
    }

    /// One step: extend a list (dropping a long one) or make garbage.
    pub fn step<M: Memory, B: Barrier>(
        &mut self,
        mutator: &mut Mutator<'_, M, B>,
        cycle: u64,
        step: u64,
    ) -> Result<(), Failure> {
        let list = (step as usize * 7 + cycle as usize) % LISTS;
        let root = self.first_root + list;
        if !step.is_multiple_of(4) {
            mutator.new_object(1, 2)?;
            mutator.dropped(1);
            return Ok(());
        }
        if self.lengths[list] >= MAX_LIST as u64 {
            mutator.heap.set_root(root, 0);
            mutator.dropped(self.lengths[list]);
            self.lengths[list] = 0;
        }
        let obj = mutator.new_object(1, 2)?;
        let head = mutator.heap.root(root);
        mutator.heap.set_field(obj, 0, head);
        mutator.heap.set_root(root, obj);
        self.lengths[list] += 1;
        Ok(())
    }

    /// Objects on the lists now.
    pub fn live(&self) -> u64 {
        self.lengths.iter().sum()
    }
}
