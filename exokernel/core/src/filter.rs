//! Downloaded packet filters: install-time verifier, reference matcher, merged DPF-style decision trie.
//!
//! A library OS claims packets by installing a filter in the language of
//! [`shared_abi::filter`]. The kernel verifies it ([`verify`]), refuses it
//! if it would take packets another environment already claims, and merges
//! it with every other installed filter into one decision trie
//! ([`Demux`], DPF style), so that demultiplexing a packet costs about the
//! same with one filter or a thousand.
//!
//! # Verifier (install time)
//!
//! The encoding is decoded ([`shared_abi::filter::decode`]) and each atom
//! checked. Refused as [`Error::BadLength`]: more than [`MAX_ATOMS`] (32)
//! atoms, or more than [`MAX_ENCODED_LEN`](shared_abi::filter::MAX_ENCODED_LEN)
//! (392) bytes; the system call should check the length before copying.
//! Refused as [`Error::InvalidArgument`]: a truncated encoding or bytes
//! after it, a bad version, reserved bytes not zero, an unknown atom kind, a
//! width other than 1, 2 or 4, no atoms at all, a field reaching past
//! [`MAX_FRAME_LEN`] (`offset + width > 1514`), a mask wider than its
//! width, a match value with bits outside its mask, a shift amount outside
//! `SHIFT_MIN ..= SHIFT_MAX` (-15 ..= 7), or a shift that could advance the
//! base by more than [`MAX_FRAME_LEN`] bytes.
//!
//! * Bounded: at most 32 atoms, each evaluated once.
//! * No loops: the language has no jumps; every atom kind is known (an
//!   unknown kind is refused), so evaluation is one pass.
//! * No out-of-bounds reads: every read is bounds-checked against the
//!   packet's length when it is evaluated, and an atom whose bytes lie past
//!   the end of the packet does not match. The offset and shift limits only
//!   keep arithmetic small (a base never exceeds 32 * 1514).
//!
//! A verified filter is put in canonical form: within each segment (the
//! match atoms between two shifts, which all read relative to the same
//! base) the match atoms are sorted by (offset, width, mask, value) and
//! exact duplicates dropped. A conjunction does not depend on its order, so
//! the meaning is unchanged, and filters testing the same fields share trie
//! nodes whatever order their libOS wrote them in.
//!
//! # Who gets a packet
//!
//! Every packet goes to at most one environment. Among the matching filters
//! (which, by the conflict rule, all belong to one environment) the most
//! specific wins: the highest [`Verified::specificity`] (64 times the number
//! of mask bits its match atoms test, plus its atom count), and among equals
//! the one installed first.
//!
//! # Conflicts
//!
//! Two filters of different environments *conflict* when some packet (of
//! any length and content) matches both. [`Demux::install`] refuses a filter
//! that conflicts with any installed filter of another environment, so an
//! identical filter, a more general one (it would take the other's packets)
//! and a more specific one (it would steal a share of them) are all refused,
//! while filters that can never match the same packet (different ports,
//! UDP against TCP) are accepted. The same environment may install
//! overlapping filters.
//!
//! The decision is exact ([`overlap`]): both filters are evaluated
//! symbolically over a packet whose bytes are unknown, collecting per-bit
//! constraints; a shift whose field is not yet determined is split into one
//! case per possible value of the bits that move the base. A consistent end
//! state yields a witness packet matching both; contradictions in every
//! case prove them disjoint. If the split would need more than
//! [`OVERLAP_BUDGET_CASES`] cases for one pair of filters, or
//! [`INSTALL_BUDGET_CASES`] over one install, the filters are treated as
//! conflicting, so the rule errs only towards refusing, never towards
//! letting a steal through. To avoid checking every installed filter, the new filter is
//! first walked through the trie: while the trie path's shifts are exactly
//! the new filter's, every node's test reads the same bytes as the new
//! filter's own atoms of that segment, so branches whose values contradict
//! them cannot hold a conflicting filter and are skipped (for a filter that
//! fixes the field, one hash lookup). Only filters the walk reaches are
//! checked exactly.
//!
//! # The trie
//!
//! Every installed filter of every environment is a path from the root; a
//! node's outgoing edges are *tests*: a match test `(offset, width, mask)`
//! with a hash map from value to child, and shift edges. Filters whose
//! canonical atoms agree on a prefix share its nodes, and where many filters
//! test the same field (offset, width, mask) in the same base state with
//! different values (a thousand port numbers) they share one test whose map
//! holds a thousand values: one load and one hash lookup, whatever their
//! number. A node lists the filters that end at it. [`Demux::classify`]
//! walks every test of each node it reaches (depth first, bounded by the 32
//! atoms of the longest filter) and keeps the best accepting filter.
//!
//! # Cost
//!
//! Classification costs one evaluation per test edge reached: it grows
//! with the number of *distinct fields* tested at the nodes a packet
//! reaches, not with the number of filters (a thousand "UDP to port N"
//! filters cost 6 evaluations per packet, as one does). A libOS that
//! installs filters on many distinct fields makes the nodes it shares wider;
//! the per-environment quota bounds that. [`Demux::classify_counted`] and
//! [`Demux::classify_linear_counted`] report the evaluations, for the
//! benchmark. Hash maps are keyed with a per-boot secret seed (foldhash: a
//! fast hash with some resistance to chosen collisions, not a cryptographic
//! one). Classification allocates nothing and recurses at most 32 deep (only
//! where a node has several matching tests). Installing walks the trie as
//! above (at most every node once), then at most [`INSTALL_BUDGET_CASES`]
//! cases in all on the filters it reaches; its memory is one trie node per
//! atom not shared with an installed filter.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::cell::Cell;
use core::ops::Range;
use foldhash::fast::FixedState;
use hashbrown::HashMap;
use shared_abi::filter::{
    decode, load_field, matches_counted, shift_advance, shift_effective_mask, Atom, DecodeError, Width,
    MAX_ATOMS, MAX_FRAME_LEN, SHIFT_MAX, SHIFT_MIN,
};
use shared_abi::syscall::Error;

/// An environment id as the libOS sees it.
pub type EnvId = u64;

/// Filters one environment may have installed at once, unless the kernel
/// chooses otherwise ([`Demux::with_filters_per_env`]).
pub const DEFAULT_FILTERS_PER_ENV: usize = 1024;

/// Most shift-value cases [`overlap`] examines for one pair of filters
/// before it gives up and the install is refused as a (possible) conflict.
pub const OVERLAP_BUDGET_CASES: u32 = 4096;

/// Most shift-value cases one install may examine over all the filters its
/// trie walk reaches, so that an install's cost is bounded whatever is
/// installed already.
pub const INSTALL_BUDGET_CASES: u32 = 65536;

/// A handle to an installed filter: `generation << 32 | slot index`. A
/// handle from before its filter was removed is stale and refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FilterId(u64);

impl FilterId {
    fn new(slot_index: u32, generation: u32) -> FilterId {
        FilterId((generation as u64) << 32 | slot_index as u64)
    }

    /// The handle as passed through the ABI.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// A handle as presented by a libOS: only an allegation until
    /// [`Demux::remove`] finds it live.
    pub const fn from_raw(raw: u64) -> FilterId {
        FilterId(raw)
    }

    fn slot_index(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// Why a filter was refused, or a removal failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterError {
    /// The bytes are not a filter encoding (the ABI decoder's verdict:
    /// oversize, truncated, bad version, unknown kind, bad width...).
    Decode(DecodeError),
    /// No atoms: a filter must test something.
    Empty,
    /// A field reaches past [`MAX_FRAME_LEN`] bytes from the base.
    OffsetOutOfRange,
    /// A mask has bits above the field's width.
    MaskWiderThanWidth,
    /// A match value has bits outside its mask (it could never match).
    ValueOutsideMask,
    /// A shift amount outside `SHIFT_MIN ..= SHIFT_MAX`.
    ShiftOutOfRange,
    /// A shift could advance the base by more than [`MAX_FRAME_LEN`].
    AdvanceTooLarge,
    /// Some packet would match both this filter and one of another
    /// environment (or deciding it would take too long).
    Conflict,
    /// The environment has as many filters as it may.
    QuotaExceeded,
    /// The handle names no installed filter (never issued, or removed).
    NoSuchFilter,
    /// The filter belongs to another environment.
    NotOwner,
}

impl From<DecodeError> for FilterError {
    fn from(error: DecodeError) -> FilterError {
        FilterError::Decode(error)
    }
}

/// Oversize filters are `BadLength`; malformed ones and stale handles
/// `InvalidArgument`; a conflict with another environment's filter, or
/// removing another environment's filter, `PermissionDenied`.
impl From<FilterError> for Error {
    fn from(error: FilterError) -> Error {
        match error {
            FilterError::Decode(DecodeError::TooLong | DecodeError::TooManyAtoms) => Error::BadLength,
            FilterError::Decode(_)
            | FilterError::Empty
            | FilterError::OffsetOutOfRange
            | FilterError::MaskWiderThanWidth
            | FilterError::ValueOutsideMask
            | FilterError::ShiftOutOfRange
            | FilterError::AdvanceTooLarge
            | FilterError::NoSuchFilter => Error::InvalidArgument,
            FilterError::Conflict | FilterError::NotOwner => Error::PermissionDenied,
            FilterError::QuotaExceeded => Error::QuotaExceeded,
        }
    }
}

/// A filter the verifier accepted, in canonical form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    atoms: Vec<Atom>,
    specificity: u32,
}

impl Verified {
    /// The canonical atoms (see the module doc).
    pub fn atoms(&self) -> &[Atom] {
        &self.atoms
    }

    /// How specific the filter is: 64 times the mask bits its match atoms
    /// test, plus its atom count. The most specific matching filter wins.
    pub fn specificity(&self) -> u32 {
        self.specificity
    }

    /// Whether `packet` matches.
    pub fn matches(&self, packet: &[u8]) -> bool {
        matches_counted(&self.atoms, packet, &mut 0)
    }

    fn canonical(atoms: &[Atom]) -> Verified {
        let mut canonical = Vec::with_capacity(atoms.len());
        let mut segment_start = 0;
        for atom in atoms {
            if let Atom::Shift { .. } = atom {
                sort_segment(&mut canonical, segment_start);
                canonical.push(*atom);
                segment_start = canonical.len();
            } else {
                canonical.push(*atom);
            }
        }
        sort_segment(&mut canonical, segment_start);
        let mask_bits: u32 = canonical
            .iter()
            .map(|atom| match atom {
                Atom::Match { mask, .. } => mask.count_ones(),
                Atom::Shift { .. } => 0,
            })
            .sum();
        let specificity = mask_bits * 64 + canonical.len() as u32;
        Verified { atoms: canonical, specificity }
    }
}

/// Sort the match atoms from `start` to the end and drop exact duplicates.
fn sort_segment(atoms: &mut Vec<Atom>, start: usize) {
    let mut segment = atoms.split_off(start);
    segment.sort_unstable();
    segment.dedup();
    atoms.extend_from_slice(&segment);
}

/// Decode and verify a filter as a libOS passed it.
pub fn verify(encoded: &[u8]) -> Result<Verified, FilterError> {
    let filter = decode(encoded)?;
    verify_atoms(&filter.atoms)
}

/// Verify decoded atoms (the value rules of the module doc).
pub fn verify_atoms(atoms: &[Atom]) -> Result<Verified, FilterError> {
    if atoms.len() > MAX_ATOMS {
        return Err(FilterError::Decode(DecodeError::TooManyAtoms));
    }
    if atoms.is_empty() {
        return Err(FilterError::Empty);
    }
    for atom in atoms {
        check_atom(atom)?;
    }
    Ok(Verified::canonical(atoms))
}

fn check_atom(atom: &Atom) -> Result<(), FilterError> {
    let width = atom.width();
    if atom.offset() as usize + width.bytes() > MAX_FRAME_LEN {
        return Err(FilterError::OffsetOutOfRange);
    }
    if atom.mask() & !width.full_mask() != 0 {
        return Err(FilterError::MaskWiderThanWidth);
    }
    match *atom {
        Atom::Match { mask, value, .. } => {
            if value & !mask != 0 {
                return Err(FilterError::ValueOutsideMask);
            }
        }
        Atom::Shift { mask, shift, .. } => {
            if !(SHIFT_MIN..=SHIFT_MAX).contains(&shift) {
                return Err(FilterError::ShiftOutOfRange);
            }
            if shift_advance(mask, mask, shift) > MAX_FRAME_LEN as u64 {
                return Err(FilterError::AdvanceTooLarge);
            }
        }
    }
    Ok(())
}

/// Whether two verified filters can match the same packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Overlap {
    /// No packet matches both.
    Disjoint,
    /// This packet matches both.
    Witness(Vec<u8>),
    /// Deciding would take more than the budget of cases.
    Undecided,
}

/// Decide exactly whether some packet matches both `first` and `second`,
/// examining at most `budget_cases` shift-value cases (module doc,
/// "Conflicts"). `overlap(f, f)` gives a packet that matches `f`, or
/// `Disjoint` when nothing can.
pub fn overlap(first: &Verified, second: &Verified, budget_cases: u32) -> Overlap {
    overlap_within(first, second, &mut { budget_cases })
}

/// [`overlap`], taking the cases it examines from `budget_cases`.
fn overlap_within(first: &Verified, second: &Verified, budget_cases: &mut u32) -> Overlap {
    let filters = [first.atoms(), second.atoms()];
    let mut cursors = [Cursor::default(); 2];
    let mut constraints = Constraints::default();
    let mut pending: Vec<Split> = Vec::new();
    loop {
        match advance_both(filters, &mut cursors, &mut constraints) {
            Step::Consistent => return Overlap::Witness(constraints.witness()),
            Step::Split(case) => pending.push(Split {
                cursors,
                constraints: core::mem::take(&mut constraints),
                case,
                next_subset: 0,
                more: true,
            }),
            Step::Contradiction => {}
        }
        // Resume with the next case of the innermost split that has one.
        loop {
            let Some(split) = pending.last_mut() else {
                return Overlap::Disjoint;
            };
            if !split.more {
                pending.pop();
                continue;
            }
            if *budget_cases == 0 {
                return Overlap::Undecided;
            }
            *budget_cases -= 1;
            let case = split.case;
            let value = case.fixed_bits | split.next_subset;
            split.next_subset = split.next_subset.wrapping_sub(case.free_bits) & case.free_bits;
            split.more = split.next_subset != 0;
            constraints = split.constraints.clone();
            let consistent = constraints.require(case.position, case.width, case.effective_mask, value);
            debug_assert!(consistent, "a case only sets bits that were free");
            cursors = split.cursors;
            let cursor = &mut cursors[case.filter];
            cursor.base += shift_advance(value, case.effective_mask, case.shift) as usize;
            cursor.next += 1;
            break;
        }
    }
}

/// Where one filter's symbolic evaluation stands.
#[derive(Clone, Copy, Debug, Default)]
struct Cursor {
    /// The next atom to evaluate.
    next: usize,
    base: usize,
}

/// What is known of the packet: required bits by byte position, and the
/// length it needs for every read so far to be in bounds.
#[derive(Clone, Debug, Default)]
struct Constraints {
    /// `(position, mask, value)`, sorted by position.
    bytes: Vec<(usize, u8, u8)>,
    len: usize,
}

impl Constraints {
    fn known_byte(&self, position: usize) -> (u8, u8) {
        match self.bytes.binary_search_by_key(&position, |entry| entry.0) {
            Ok(index) => (self.bytes[index].1, self.bytes[index].2),
            Err(_) => (0, 0),
        }
    }

    /// The known bits (mask, value) of the field at `position`.
    fn known(&self, position: usize, width: Width) -> (u32, u32) {
        let (mut mask, mut value) = (0u32, 0u32);
        for i in 0..width.bytes() {
            let (byte_mask, byte_value) = self.known_byte(position + i);
            mask = mask << 8 | byte_mask as u32;
            value = value << 8 | byte_value as u32;
        }
        (mask, value)
    }

    /// Require the read of `width` bytes at `position` to be in bounds and
    /// `field & mask == value`; false if that contradicts what is known.
    fn require(&mut self, position: usize, width: Width, mask: u32, value: u32) -> bool {
        self.len = self.len.max(position + width.bytes());
        for i in 0..width.bytes() {
            let shift = 8 * (width.bytes() - 1 - i);
            let byte_mask = (mask >> shift) as u8;
            let byte_value = (value >> shift) as u8 & byte_mask;
            if byte_mask == 0 {
                continue;
            }
            match self.bytes.binary_search_by_key(&(position + i), |entry| entry.0) {
                Ok(index) => {
                    let (_, known_mask, known_value) = &mut self.bytes[index];
                    if (*known_value ^ byte_value) & *known_mask & byte_mask != 0 {
                        return false;
                    }
                    *known_mask |= byte_mask;
                    *known_value |= byte_value;
                }
                Err(index) => self.bytes.insert(index, (position + i, byte_mask, byte_value)),
            }
        }
        true
    }

    /// A packet meeting every constraint (free bits zero).
    fn witness(&self) -> Vec<u8> {
        let mut packet = alloc::vec![0u8; self.len];
        for &(position, _, value) in &self.bytes {
            packet[position] = value;
        }
        packet
    }
}

/// A shift whose advance is not yet determined: one case per value of its
/// free bits.
#[derive(Clone, Copy, Debug)]
struct ShiftCase {
    /// Which of the two filters it belongs to.
    filter: usize,
    position: usize,
    width: Width,
    /// The mask bits that move the base.
    effective_mask: u32,
    shift: i8,
    /// Bits of the effective mask already known, and their values.
    fixed_bits: u32,
    /// Bits of the effective mask still free.
    free_bits: u32,
}

struct Split {
    cursors: [Cursor; 2],
    constraints: Constraints,
    case: ShiftCase,
    /// The free-bit subset of the next case to try.
    next_subset: u32,
    more: bool,
}

enum Step {
    Contradiction,
    Consistent,
    Split(ShiftCase),
}

/// Evaluate both filters symbolically as far as possible without a case
/// split: all their match atoms, and every shift whose field is known.
fn advance_both(filters: [&[Atom]; 2], cursors: &mut [Cursor; 2], constraints: &mut Constraints) -> Step {
    'progress: loop {
        for (atoms, cursor) in filters.iter().zip(cursors.iter_mut()) {
            while let Some(&Atom::Match { offset, width, mask, value }) = atoms.get(cursor.next) {
                if !constraints.require(cursor.base + offset as usize, width, mask, value) {
                    return Step::Contradiction;
                }
                cursor.next += 1;
            }
        }
        let mut undetermined = None;
        for (filter, (atoms, cursor)) in filters.iter().zip(cursors.iter_mut()).enumerate() {
            if let Some(&Atom::Shift { offset, width, mask, shift }) = atoms.get(cursor.next) {
                let position = cursor.base + offset as usize;
                let effective_mask = shift_effective_mask(mask, shift);
                let (known_mask, known_value) = constraints.known(position, width);
                if known_mask & effective_mask == effective_mask {
                    constraints.require(position, width, 0, 0);
                    cursor.base += shift_advance(known_value, effective_mask, shift) as usize;
                    cursor.next += 1;
                    continue 'progress;
                }
                undetermined.get_or_insert(ShiftCase {
                    filter,
                    position,
                    width,
                    effective_mask,
                    shift,
                    fixed_bits: known_value & known_mask & effective_mask,
                    free_bits: effective_mask & !known_mask,
                });
            }
        }
        return match undetermined {
            Some(case) => Step::Split(case),
            None => Step::Consistent,
        };
    }
}

const ROOT: u32 = 0;

type Branches = HashMap<u32, u32, FixedState>;

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
    tests: Vec<Test>,
    shifts: Vec<ShiftEdge>,
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

struct Slot {
    /// Bumped each time the slot's filter is removed; a slot at `u32::MAX`
    /// is retired rather than wrapped, so a stale handle never comes back.
    generation: u32,
    installed: Option<Installed>,
}

/// The best match found so far.
#[derive(Clone, Copy)]
struct Candidate {
    specificity: u32,
    sequence: u64,
    slot: u32,
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
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    filters_per_env: BTreeMap<EnvId, usize>,
    max_filters_per_env: usize,
    next_sequence: u64,
    hash_seed: u64,
    /// Cases [`overlap`] may examine per filter checked, and per install.
    overlap_budget_cases: u32,
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
            slots: Vec::new(),
            free_slots: Vec::new(),
            filters_per_env: BTreeMap::new(),
            max_filters_per_env,
            next_sequence: 0,
            hash_seed,
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
    /// ended): retired slots and freed nodes keep their memory otherwise.
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
        let slot_index = match self.free_slots.pop() {
            Some(index) => index,
            None => {
                let index = u32::try_from(self.slots.len()).map_err(|_| FilterError::QuotaExceeded)?;
                self.slots.push(Slot { generation: 0, installed: None });
                index
            }
        };
        self.insert_path(filter.atoms(), slot_index);
        let slot = &mut self.slots[slot_index as usize];
        slot.installed = Some(Installed { env, filter, sequence: self.next_sequence });
        self.next_sequence += 1;
        *self.filters_per_env.entry(env).or_insert(0) += 1;
        self.live += 1;
        Ok(FilterId::new(slot_index, slot.generation))
    }

    /// Remove `env`'s filter `id`. A stale or unknown handle is
    /// `NoSuchFilter`; another environment's filter is `NotOwner`.
    pub fn remove(&mut self, env: EnvId, id: FilterId) -> Result<(), FilterError> {
        let slot = self
            .slots
            .get(id.slot_index())
            .filter(|slot| slot.generation == id.generation())
            .and_then(|slot| slot.installed.as_ref())
            .ok_or(FilterError::NoSuchFilter)?;
        if slot.env != env {
            return Err(FilterError::NotOwner);
        }
        self.remove_slot(id.slot_index() as u32);
        Ok(())
    }

    /// Remove every filter of `env` (it ended); returns how many.
    pub fn remove_env(&mut self, env: EnvId) -> usize {
        let owned: Vec<u32> = (0..self.slots.len() as u32)
            .filter(|&index| matches!(&self.slots[index as usize].installed, Some(i) if i.env == env))
            .collect();
        for &index in &owned {
            self.remove_slot(index);
        }
        owned.len()
    }

    fn remove_slot(&mut self, slot_index: u32) {
        let slot = &mut self.slots[slot_index as usize];
        let installed = slot.installed.take().expect("a live slot");
        slot.generation = slot.generation.saturating_add(1);
        if slot.generation != u32::MAX {
            self.free_slots.push(slot_index);
        }
        self.remove_path(installed.filter.atoms(), slot_index);
        let count = self.filters_per_env.get_mut(&installed.env).expect("an env with filters");
        *count -= 1;
        if *count == 0 {
            self.filters_per_env.remove(&installed.env);
        }
        self.live -= 1;
    }

    fn new_branches(&self) -> Branches {
        HashMap::with_hasher(FixedState::with_seed(self.hash_seed))
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
    fn insert_path(&mut self, atoms: &[Atom], slot_index: u32) {
        let mut node = ROOT;
        for atom in atoms {
            node = match *atom {
                Atom::Match { offset, width, mask, value } => {
                    let found = self.nodes[node as usize]
                        .tests
                        .iter()
                        .position(|t| t.offset == offset && t.width == width && t.mask == mask);
                    let test = match found {
                        Some(test) => test,
                        None => {
                            let branches = self.new_branches();
                            let tests = &mut self.nodes[node as usize].tests;
                            tests.push(Test { offset, width, mask, branches });
                            tests.len() - 1
                        }
                    };
                    match self.nodes[node as usize].tests[test].branches.get(&value) {
                        Some(&child) => child,
                        None => {
                            let child = self.alloc_node();
                            self.nodes[node as usize].tests[test].branches.insert(value, child);
                            child
                        }
                    }
                }
                Atom::Shift { offset, width, mask, shift } => {
                    let found = self.nodes[node as usize].shifts.iter().find(|e| {
                        e.offset == offset && e.width == width && e.mask == mask && e.shift == shift
                    });
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
        self.nodes[node as usize].accepts.push(slot_index);
    }

    /// Drop the filter from the end of its path and free the nodes no other
    /// filter uses any more.
    fn remove_path(&mut self, atoms: &[Atom], slot_index: u32) {
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
                    (Edge::Test { test, value }, here.tests[test].branches[&value])
                }
                Atom::Shift { offset, width, mask, shift } => {
                    let edge = here
                        .shifts
                        .iter()
                        .position(|e| {
                            e.offset == offset && e.width == width && e.mask == mask && e.shift == shift
                        })
                        .expect("an installed filter's shift");
                    (Edge::Shift { edge }, here.shifts[edge].child)
                }
            };
            path.push((node, edge, child));
            node = child;
        }
        let accepts = &mut self.nodes[node as usize].accepts;
        let position = accepts.iter().position(|&s| s == slot_index).expect("the filter ends here");
        accepts.remove(position);
        // Each level's edge index refers to its own parent, which no deeper
        // removal touched.
        for (parent, edge, child) in path.into_iter().rev() {
            if !self.nodes[child as usize].is_unused() {
                break;
            }
            self.free_node(child);
            let parent = &mut self.nodes[parent as usize];
            match edge {
                Edge::Test { test, value } => {
                    parent.tests[test].branches.remove(&value);
                    if parent.tests[test].branches.is_empty() {
                        parent.tests.swap_remove(test);
                    }
                }
                Edge::Shift { edge } => {
                    parent.shifts.swap_remove(edge);
                }
            }
        }
    }

    fn installed(&self, slot_index: u32) -> &Installed {
        self.slots[slot_index as usize].installed.as_ref().expect("a live slot")
    }

    fn answer(&self, slot_index: u32) -> (EnvId, FilterId) {
        let slot = &self.slots[slot_index as usize];
        let installed = slot.installed.as_ref().expect("a live slot");
        (installed.env, FilterId::new(slot_index, slot.generation))
    }

    #[inline]
    fn consider(&self, slot_index: u32, best: &mut Option<Candidate>) {
        let installed = self.installed(slot_index);
        let candidate = Candidate {
            specificity: installed.filter.specificity,
            sequence: installed.sequence,
            slot: slot_index,
        };
        let rank = |c: &Candidate| (c.specificity, core::cmp::Reverse(c.sequence));
        let better = match best {
            None => true,
            Some(b) => rank(&candidate) > rank(b),
        };
        if better {
            *best = Some(candidate);
        }
    }

    /// The environment and filter that get `packet`, if any.
    pub fn classify(&self, packet: &[u8]) -> Option<(EnvId, FilterId)> {
        self.classify_counted(packet).0
    }

    /// [`Demux::classify`], and the number of atom evaluations (trie test
    /// and shift edges) it took.
    pub fn classify_counted(&self, packet: &[u8]) -> (Option<(EnvId, FilterId)>, u32) {
        let mut best = None;
        let mut evaluations = 0;
        self.walk(ROOT, 0, packet, &mut best, &mut evaluations);
        (best.map(|c| self.answer(c.slot)), evaluations)
    }

    /// Depth first from `node`: the last child a node selects is followed
    /// in the loop, earlier ones (several tests matching) by recursion, so a
    /// packet that follows one path costs no calls at all.
    fn walk(
        &self,
        mut node: u32,
        mut base: usize,
        packet: &[u8],
        best: &mut Option<Candidate>,
        evaluations: &mut u32,
    ) {
        loop {
            let here = &self.nodes[node as usize];
            if let Some(&slot_index) = here.accepts.first() {
                self.consider(slot_index, best);
            }
            let mut next: Option<(u32, usize)> = None;
            for test in &here.tests {
                *evaluations += 1;
                if let Some(field) = load_field(packet, base + test.offset as usize, test.width) {
                    if let Some(&child) = test.branches.get(&(field & test.mask)) {
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
        for (index, slot) in self.slots.iter().enumerate() {
            if let Some(installed) = &slot.installed {
                if matches_counted(installed.filter.atoms(), packet, &mut evaluations) {
                    self.consider(index as u32, &mut best);
                }
            }
        }
        (best.map(|c| self.answer(c.slot)), evaluations)
    }

    /// The slot of an installed filter of another environment that
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
    /// None once they differ. Returns a conflicting slot.
    fn visit(&self, node: u32, aligned: Option<usize>) -> Option<u32> {
        let node = &self.demux.nodes[node as usize];
        // Filters ending at one node share their atoms: one check suffices.
        let other = node.accepts.iter().copied().find(|&slot| self.demux.installed(slot).env != self.env);
        if let Some(slot) = other {
            let theirs = &self.demux.installed(slot).filter;
            let left = self.budget_cases.get();
            let mut budget = left.min(self.demux.overlap_budget_cases);
            let allowed = budget;
            let verdict = overlap_within(self.filter, theirs, &mut budget);
            self.budget_cases.set(left - (allowed - budget));
            if verdict != Overlap::Disjoint {
                return Some(slot);
            }
        }
        let segment_atoms = aligned.map(|segment| &self.filter.atoms()[self.segments[segment].0.clone()]);
        for test in &node.tests {
            let (known_mask, known_value) = match segment_atoms {
                Some(atoms) => known_bits(atoms, test.offset, test.width),
                None => (0, 0),
            };
            if known_mask & test.mask == test.mask {
                if let Some(&child) = test.branches.get(&(known_value & test.mask)) {
                    if let Some(slot) = self.visit(child, aligned) {
                        return Some(slot);
                    }
                }
                continue;
            }
            for (&value, &child) in &test.branches {
                if (value ^ known_value) & known_mask & test.mask == 0 {
                    if let Some(slot) = self.visit(child, aligned) {
                        return Some(slot);
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
            if let Some(slot) = self.visit(edge.child, next) {
                return Some(slot);
            }
        }
        None
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use shared_abi::filter::{proto, Filter, ATOM_LEN, HEADER_LEN, MAX_ENCODED_LEN};
    use std::println;

    const SEED: u64 = 0x5eed_f117e5;
    const A: EnvId = 1;
    const B: EnvId = 2;
    const C: EnvId = 3;

    /// Ethernet + IPv4 (`options_words` words of options) + a 20-byte
    /// transport header with source port 4000 and destination `dst_port`.
    fn ip_packet(protocol: u8, options_words: usize, dst_port: u16) -> Vec<u8> {
        let mut packet = vec![0u8; 14];
        packet[12..14].copy_from_slice(&proto::ETHERTYPE_IPV4.to_be_bytes());
        let ihl = 5 + options_words;
        let mut ip = vec![0u8; ihl * 4];
        ip[0] = 0x40 | ihl as u8;
        ip[9] = protocol;
        ip[16..20].copy_from_slice(&[10, 0, 2, 15]);
        packet.extend_from_slice(&ip);
        let mut transport = vec![0u8; 20];
        transport[0..2].copy_from_slice(&4000u16.to_be_bytes());
        transport[2..4].copy_from_slice(&dst_port.to_be_bytes());
        packet.extend_from_slice(&transport);
        packet
    }

    fn udp(dst_port: u16) -> Vec<u8> {
        ip_packet(proto::IPPROTO_UDP, 0, dst_port)
    }

    fn tcp(dst_port: u16) -> Vec<u8> {
        ip_packet(proto::IPPROTO_TCP, 0, dst_port)
    }

    fn env_of(demux: &Demux, packet: &[u8]) -> Option<EnvId> {
        let trie = demux.classify(packet);
        assert_eq!(trie, demux.classify_linear(packet), "trie and linear matcher disagree");
        trie.map(|(env, _)| env)
    }

    fn verified(filter: &Filter) -> Verified {
        verify(&filter.encode()).expect("a valid filter")
    }

    /// xorshift64*: deterministic pseudo-random numbers for the tests.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }

        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len() as u64) as usize]
        }

        fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
            self.below(denominator) < numerator
        }
    }

    /// A filter from a small space of offsets, masks and values, so that
    /// random filters often overlap.
    fn random_atoms(rng: &mut Rng) -> Vec<Atom> {
        let count = 1 + rng.below(4);
        (0..count)
            .map(|_| {
                if rng.chance(1, 5) {
                    Atom::Shift {
                        offset: rng.below(3) as u16,
                        width: Width::One,
                        mask: rng.pick(&[0x03, 0x0c, 0x0f]),
                        shift: rng.pick(&[0, 1, -2]),
                    }
                } else {
                    let width = rng.pick(&[Width::One, Width::One, Width::Two, Width::Four]);
                    let mask = rng.pick(&[u32::MAX, u32::MAX, 0x0f0f_0f0f, 0xf0f0_f0f0, 0x0300_0003, 0])
                        & width.full_mask();
                    let value = rng.pick(&[0, 0x0101_0101, 0x0202_0202, 0x1111_1111, 0x0302_0100]) & mask;
                    Atom::Match { offset: rng.below(7) as u16, width, mask, value }
                }
            })
            .collect()
    }

    fn random_packet(rng: &mut Rng) -> Vec<u8> {
        const ALPHABET: [u8; 8] = [0x00, 0x01, 0x02, 0x03, 0x11, 0x10, 0x0f, 0x21];
        let len = rng.below(33) as usize;
        (0..len).map(|_| rng.pick(&ALPHABET)).collect()
    }

    /// A packet matching `filter` (if any does), then perhaps damaged.
    fn synthesised_packet(rng: &mut Rng, filter: &Verified) -> Vec<u8> {
        let Overlap::Witness(mut packet) = overlap(filter, filter, OVERLAP_BUDGET_CASES) else {
            return random_packet(rng);
        };
        packet.extend((0..rng.below(6)).map(|_| rng.pick(&[0u8, 1, 2, 3, 0x11])));
        if rng.chance(1, 3) && !packet.is_empty() {
            let at = rng.below(packet.len() as u64) as usize;
            packet[at] = rng.pick(&[0u8, 1, 2, 3, 0x11, 0xff]);
        }
        if rng.chance(1, 6) {
            packet.truncate(rng.below(packet.len() as u64 + 1) as usize);
        }
        packet
    }

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
        matching
            .iter()
            .max_by_key(|r| (r.specificity, core::cmp::Reverse(r.sequence)))
            .map(|r| (r.env, r.id))
    }

    #[test]
    fn verifier_rejects_each_class_of_bad_filter() {
        let byte = |offset, mask, value| Atom::Match { offset, width: Width::One, mask, value };
        let encode = |atoms: Vec<Atom>| Filter { atoms }.encode();
        let good = Filter::udp_dst_port(7).encode();
        assert!(verify(&good).is_ok());

        // Oversize: BadLength.
        let too_many = encode(vec![byte(0, 0xff, 1); MAX_ATOMS + 1]);
        assert_eq!(verify(&too_many), Err(FilterError::Decode(DecodeError::TooLong)));
        let mut count_only = good[..HEADER_LEN].to_vec();
        count_only[2] = MAX_ATOMS as u8 + 1;
        assert_eq!(verify(&count_only), Err(FilterError::Decode(DecodeError::TooManyAtoms)));
        assert_eq!(verify(&vec![0; MAX_ENCODED_LEN + 1]), Err(FilterError::Decode(DecodeError::TooLong)));
        assert!(verify(&encode(vec![byte(0, 0xff, 1); MAX_ATOMS])).is_ok(), "32 atoms are allowed");
        assert_eq!(verify_atoms(&vec![byte(0, 0xff, 1); MAX_ATOMS + 1]), Err(FilterError::Decode(DecodeError::TooManyAtoms)));

        // Malformed encodings: InvalidArgument.
        assert_eq!(verify(&good[..5]), Err(FilterError::Decode(DecodeError::Truncated)));
        assert_eq!(verify(&good[..good.len() - ATOM_LEN / 2]), Err(FilterError::Decode(DecodeError::Truncated)));
        assert_eq!(verify(&[good.as_slice(), &[0]].concat()), Err(FilterError::Decode(DecodeError::TrailingBytes)));
        let mut version = good.clone();
        version[0] = 0;
        assert_eq!(verify(&version), Err(FilterError::Decode(DecodeError::BadVersion)));
        let mut reserved = good.clone();
        reserved[5] = 1;
        assert_eq!(verify(&reserved), Err(FilterError::Decode(DecodeError::ReservedNonZero)));
        for kind in [0u8, 3, 0xff] {
            let mut unknown = good.clone();
            unknown[HEADER_LEN + ATOM_LEN] = kind;
            assert_eq!(verify(&unknown), Err(FilterError::Decode(DecodeError::UnknownKind)), "kind {kind}");
        }
        for width in [0u8, 3, 8] {
            let mut bad = good.clone();
            bad[HEADER_LEN + 1] = width;
            assert_eq!(verify(&bad), Err(FilterError::Decode(DecodeError::BadWidth)), "width {width}");
        }
        assert_eq!(verify(&Filter::new().encode()), Err(FilterError::Empty));

        // Value rules: InvalidArgument.
        let at = |offset, width| Atom::Match { offset, width, mask: 0, value: 0 };
        assert!(verify(&encode(vec![at(1512, Width::Two)])).is_ok());
        assert_eq!(verify(&encode(vec![at(1513, Width::Two)])), Err(FilterError::OffsetOutOfRange));
        assert_eq!(verify(&encode(vec![at(1511, Width::Four)])), Err(FilterError::OffsetOutOfRange));
        assert_eq!(verify(&encode(vec![at(u16::MAX, Width::One)])), Err(FilterError::OffsetOutOfRange));
        assert_eq!(verify(&encode(vec![byte(0, 0x1ff, 1)])), Err(FilterError::MaskWiderThanWidth));
        let wide = Atom::Match { offset: 0, width: Width::Two, mask: 0x1_0000, value: 0 };
        assert_eq!(verify(&encode(vec![wide])), Err(FilterError::MaskWiderThanWidth));
        assert_eq!(verify(&encode(vec![byte(0, 0x0f, 0x10)])), Err(FilterError::ValueOutsideMask));
        let shift = |width, mask, shift| Atom::Shift { offset: 0, width, mask, shift };
        assert!(verify(&encode(vec![shift(Width::One, 0xff, SHIFT_MIN)])).is_ok());
        assert!(verify(&encode(vec![shift(Width::One, 0x07, SHIFT_MAX)])).is_ok());
        assert_eq!(verify(&encode(vec![shift(Width::One, 0x0f, 8)])), Err(FilterError::ShiftOutOfRange));
        assert_eq!(verify(&encode(vec![shift(Width::One, 0x0f, -16)])), Err(FilterError::ShiftOutOfRange));
        let far_right = encode(vec![shift(Width::One, 0x0f, i8::MIN)]);
        assert_eq!(verify(&far_right), Err(FilterError::ShiftOutOfRange));
        assert_eq!(verify(&encode(vec![shift(Width::One, 0x1ff, 0)])), Err(FilterError::MaskWiderThanWidth));
        assert!(verify(&encode(vec![shift(Width::Two, 0x03ff, 0)])).is_ok(), "advance up to 1023");
        assert_eq!(verify(&encode(vec![shift(Width::Two, 0x0fff, 0)])), Err(FilterError::AdvanceTooLarge));
        assert_eq!(verify(&encode(vec![shift(Width::One, 0xff, 3)])), Err(FilterError::AdvanceTooLarge));
        assert_eq!(
            verify(&encode(vec![shift(Width::Four, u32::MAX, -15)])),
            Err(FilterError::AdvanceTooLarge)
        );
    }

    #[test]
    fn errors_map_to_abi_codes() {
        for oversize in [FilterError::Decode(DecodeError::TooLong), FilterError::Decode(DecodeError::TooManyAtoms)] {
            assert_eq!(Error::from(oversize), Error::BadLength);
        }
        let malformed = [
            FilterError::Decode(DecodeError::Truncated),
            FilterError::Decode(DecodeError::TrailingBytes),
            FilterError::Decode(DecodeError::BadVersion),
            FilterError::Decode(DecodeError::ReservedNonZero),
            FilterError::Decode(DecodeError::UnknownKind),
            FilterError::Decode(DecodeError::BadWidth),
            FilterError::Empty,
            FilterError::OffsetOutOfRange,
            FilterError::MaskWiderThanWidth,
            FilterError::ValueOutsideMask,
            FilterError::ShiftOutOfRange,
            FilterError::AdvanceTooLarge,
            FilterError::NoSuchFilter,
        ];
        for error in malformed {
            assert_eq!(Error::from(error), Error::InvalidArgument, "{error:?}");
        }
        assert_eq!(Error::from(FilterError::Conflict), Error::PermissionDenied);
        assert_eq!(Error::from(FilterError::NotOwner), Error::PermissionDenied);
        assert_eq!(Error::from(FilterError::QuotaExceeded), Error::QuotaExceeded);
    }

    #[test]
    fn canonical_form_sorts_segments_and_drops_duplicates() {
        let written = Filter::new()
            .match_u8(proto::IPV4_PROTOCOL_OFFSET, proto::IPPROTO_UDP)
            .ethertype(proto::ETHERTYPE_IPV4)
            .match_u8(proto::IPV4_PROTOCOL_OFFSET, proto::IPPROTO_UDP)
            .shift(proto::IPV4_OFFSET, Width::One, 0x0f, 2)
            .dst_port(7)
            .src_port(9);
        let canonical = verified(&written);
        let expected = Filter::new()
            .ethertype(proto::ETHERTYPE_IPV4)
            .match_u8(proto::IPV4_PROTOCOL_OFFSET, proto::IPPROTO_UDP)
            .shift(proto::IPV4_OFFSET, Width::One, 0x0f, 2)
            .src_port(9)
            .dst_port(7);
        assert_eq!(canonical.atoms(), expected.atoms.as_slice());
        assert_eq!(canonical.specificity(), (16 + 8 + 16 + 16) * 64 + 5);
        let packet = udp(7);
        let mut with_source = packet.clone();
        with_source[34..36].copy_from_slice(&9u16.to_be_bytes());
        for candidate in [&packet, &with_source] {
            assert_eq!(canonical.matches(candidate), written.matches(candidate));
        }
        assert!(canonical.matches(&with_source));
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
    fn overlap_across_different_header_layouts_is_found() {
        // A steps over the IPv4 header; B assumes a 20-byte header and reads
        // the port at a fixed offset. They overlap on packets without options.
        let mut demux = Demux::new(SEED);
        demux.install(A, &Filter::udp_dst_port(7).encode()).unwrap();
        let fixed = Filter::new()
            .ipv4_protocol(proto::IPPROTO_UDP)
            .match_u16(proto::IPV4_OFFSET + 20 + 2, 7);
        let echo = verified(&Filter::udp_dst_port(7));
        let Overlap::Witness(packet) = overlap(&verified(&fixed), &echo, OVERLAP_BUDGET_CASES) else {
            panic!("they overlap");
        };
        assert!(fixed.matches(&packet) && Filter::udp_dst_port(7).matches(&packet));
        assert_eq!(demux.install(B, &fixed.encode()), Err(FilterError::Conflict));
        // Requiring IP options (IHL 6) makes them disjoint only for another port.
        let with_options = Filter::new()
            .ipv4_protocol(proto::IPPROTO_UDP)
            .match_masked(proto::IPV4_OFFSET, Width::One, 0x0f, 6)
            .match_u16(proto::IPV4_OFFSET + 24 + 2, 8);
        assert!(demux.install(B, &with_options.encode()).is_ok());
        assert_eq!(env_of(&demux, &ip_packet(proto::IPPROTO_UDP, 1, 8)), Some(B));
        assert_eq!(env_of(&demux, &ip_packet(proto::IPPROTO_UDP, 1, 7)), Some(A));
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
        assert_eq!(reused.slot_index(), echo.slot_index(), "the slot is reused");
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
    fn an_undecided_overlap_is_refused() {
        // A steps by bit 0 of byte 1 and wants 7 at the new base; B fixes
        // byte 0 and all of byte 1 but bit 0. Disjoint, but proving it takes
        // a split of A's shift into two cases.
        let a = Filter::new().shift(1, Width::One, 0x01, 0).match_u8(0, 7);
        let b = Filter::new().match_u8(0, 1).match_masked(1, Width::One, 0xfe, 2);
        assert_eq!(overlap(&verified(&b), &verified(&a), 2), Overlap::Disjoint);
        assert_eq!(overlap(&verified(&b), &verified(&a), 1), Overlap::Undecided);
        let mut demux = Demux::new(SEED);
        demux.install(A, &a.encode()).unwrap();
        demux.overlap_budget_cases = 1;
        assert_eq!(demux.install(B, &b.encode()), Err(FilterError::Conflict), "refused when unsure");
        demux.overlap_budget_cases = OVERLAP_BUDGET_CASES;
        assert!(demux.install(B, &b.encode()).is_ok());
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
        let twice = |value| {
            Filter::new()
                .shift(0, Width::Two, 0x03ff, 0)
                .shift(0, Width::Two, 0x03ff, 0)
                .match_u8(0, value)
        };
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

    #[test]
    fn overlap_witnesses_match_both_and_disjoint_filters_share_no_packet() {
        let mut rng = Rng(0x0bad_cafe);
        let (mut overlapping, mut disjoint) = (0, 0);
        for _ in 0..3000 {
            let first = verify_atoms(&random_atoms(&mut rng)).unwrap();
            let second = verify_atoms(&random_atoms(&mut rng)).unwrap();
            match overlap(&first, &second, OVERLAP_BUDGET_CASES) {
                Overlap::Witness(packet) => {
                    overlapping += 1;
                    assert!(first.matches(&packet) && second.matches(&packet), "{first:?} {second:?}");
                    assert_ne!(overlap(&second, &first, OVERLAP_BUDGET_CASES), Overlap::Disjoint);
                }
                Overlap::Disjoint => {
                    disjoint += 1;
                    for _ in 0..20 {
                        let packet = match rng.below(3) {
                            0 => random_packet(&mut rng),
                            1 => synthesised_packet(&mut rng, &first),
                            _ => synthesised_packet(&mut rng, &second),
                        };
                        assert!(!(first.matches(&packet) && second.matches(&packet)), "{first:?} {second:?}");
                    }
                    assert_eq!(overlap(&second, &first, OVERLAP_BUDGET_CASES), Overlap::Disjoint);
                }
                Overlap::Undecided => panic!("the small space never needs the budget"),
            }
        }
        assert!(overlapping > 300 && disjoint > 300, "{overlapping} overlapping, {disjoint} disjoint");
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
