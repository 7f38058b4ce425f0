//! Downloaded packet filters: install-time verifier, reference matcher, merged DPF-style decision trie.
//!
//! A library OS claims packets by installing a filter in the language of
//! [`shared_abi::filter`]. The kernel verifies it ([`verify()`]), refuses it
//! if it would take packets another environment already claims, and merges
//! it with every other installed filter into one decision trie
//! ([`Demux`], DPF style), so that demultiplexing a packet costs about the
//! same with one filter or a thousand.
//!
//! # Layout
//!
//! * `filter/mod.rs` (this file): this overview, the types every part
//!   shares ([`EnvId`], [`FilterId`], [`FilterError`] and the ABI error
//!   codes it maps to), and the re-exports that keep every public item at
//!   `kcore::filter::X`.
//! * `filter/verify.rs`: the install-time verifier ([`verify()`],
//!   [`verify_atoms`]) and the canonical form of an accepted filter
//!   ([`Verified`]).
//! * `filter/overlap.rs`: the exact conflict check between two filters
//!   ([`overlap()`], [`Overlap`]) and its budget
//!   ([`OVERLAP_BUDGET_CASES`]).
//! * `filter/trie.rs`: the merged decision trie ([`Demux`]): install (with
//!   the per-environment quota, [`DEFAULT_FILTERS_PER_ENV`], and the trie
//!   walk that picks the installed filters to check for conflicts, within
//!   [`INSTALL_BUDGET_CASES`]), remove, classify, the linear reference
//!   matcher ([`Demux::classify_linear`]), retire; and the fast path that
//!   classifies without recursion.
//! * `filter/branches.rs`: a test's map from value to child: a few values
//!   inline, many in an open-addressing table under a keyed hash (and why
//!   a libOS cannot flood it).
//! * `filter/fused.rs`: chains of single-way trie levels compiled into
//!   8-byte window compares and shifts.
//!
//! Each file's module doc has the details; in brief:
//!
//! # Verifier (install time)
//!
//! The encoding is decoded ([`shared_abi::filter::decode`]) and each atom
//! checked (sizes, widths, masks, values, offset and shift limits). A
//! verified filter is bounded (at most
//! [`MAX_ATOMS`](shared_abi::filter::MAX_ATOMS) atoms, each evaluated once),
//! has no loops, and never reads out of bounds (every read is checked
//! against the packet's length). It is kept in canonical form: the match
//! atoms of each segment sorted, exact duplicates dropped, so that filters
//! testing the same fields share trie nodes.
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
//! The decision is exact ([`overlap()`]), and errs only towards refusing
//! when it would take more than its budget; the trie limits the check to
//! the installed filters a walk of the new filter reaches.
//!
//! # The trie
//!
//! Every installed filter of every environment is a path from the root;
//! filters that test the same field with different values (a thousand port
//! numbers) share one test whose hash table holds every value, so
//! classification costs about the same with one filter or a thousand. Runs
//! of levels with one way on (the protocol prefix every UDP filter shares)
//! are compiled into a few wide compares, so that a thousand filters cost
//! less than a linear scan of one.

mod branches;
mod fused;
mod overlap;
mod trie;
mod verify;

pub use overlap::{overlap, Overlap, OVERLAP_BUDGET_CASES};
pub use trie::{Demux, DEFAULT_FILTERS_PER_ENV, INSTALL_BUDGET_CASES};
pub use verify::{verify, verify_atoms, Verified};

use shared_abi::filter::DecodeError;
use shared_abi::syscall::Error;

/// An environment id as the libOS sees it.
pub type EnvId = u64;

/// A handle to an installed filter: `generation << 32 | entry index`. A
/// handle from before its filter was removed is stale and refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FilterId(u64);

impl FilterId {
    fn new(entry_index: u32, generation: u32) -> FilterId {
        FilterId((generation as u64) << 32 | entry_index as u64)
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

    fn entry_index(self) -> usize {
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
    /// A field reaches past
    /// [`MAX_FRAME_LEN`](shared_abi::filter::MAX_FRAME_LEN) bytes from the
    /// base.
    OffsetOutOfRange,
    /// A mask has bits above the field's width.
    MaskWiderThanWidth,
    /// A match value has bits outside its mask (it could never match).
    ValueOutsideMask,
    /// A shift amount outside `SHIFT_MIN ..= SHIFT_MAX`.
    ShiftOutOfRange,
    /// A shift could advance the base by more than
    /// [`MAX_FRAME_LEN`](shared_abi::filter::MAX_FRAME_LEN).
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

/// Helpers the unit tests of every part share: packets, filters, and a
/// deterministic pseudo-random generator.
#[cfg(test)]
mod test_support {
    use super::{overlap, verify, Demux, EnvId, Overlap, Verified, OVERLAP_BUDGET_CASES};
    use alloc::vec;
    use alloc::vec::Vec;
    use shared_abi::filter::{proto, Atom, Filter, Width};

    pub(super) const SEED: u64 = 0x5eed_f117e5;
    pub(super) const A: EnvId = 1;
    pub(super) const B: EnvId = 2;
    pub(super) const C: EnvId = 3;

    /// Ethernet + IPv4 (`options_words` words of options) + a 20-byte
    /// transport header with source port 4000 and destination `dst_port`.
    pub(super) fn ip_packet(protocol: u8, options_words: usize, dst_port: u16) -> Vec<u8> {
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

    pub(super) fn udp(dst_port: u16) -> Vec<u8> {
        ip_packet(proto::IPPROTO_UDP, 0, dst_port)
    }

    pub(super) fn tcp(dst_port: u16) -> Vec<u8> {
        ip_packet(proto::IPPROTO_TCP, 0, dst_port)
    }

    pub(super) fn env_of(demux: &Demux, packet: &[u8]) -> Option<EnvId> {
        let trie = demux.classify(packet);
        assert_eq!(trie, demux.classify_linear(packet), "trie and linear matcher disagree");
        trie.map(|(env, _)| env)
    }

    pub(super) fn verified(filter: &Filter) -> Verified {
        verify(&filter.encode()).expect("a valid filter")
    }

    /// xorshift64*: deterministic pseudo-random numbers for the tests.
    pub(super) struct Rng(pub(super) u64);

    impl Rng {
        pub(super) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        pub(super) fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }

        pub(super) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len() as u64) as usize]
        }

        pub(super) fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
            self.below(denominator) < numerator
        }
    }

    /// A filter from a small space of offsets, masks and values, so that
    /// random filters often overlap.
    pub(super) fn random_atoms(rng: &mut Rng) -> Vec<Atom> {
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
                    let mask =
                        rng.pick(&[u32::MAX, u32::MAX, 0x0f0f_0f0f, 0xf0f0_f0f0, 0x0300_0003, 0]) & width.full_mask();
                    let value = rng.pick(&[0, 0x0101_0101, 0x0202_0202, 0x1111_1111, 0x0302_0100]) & mask;
                    Atom::Match { offset: rng.below(7) as u16, width, mask, value }
                }
            })
            .collect()
    }

    pub(super) fn random_packet(rng: &mut Rng) -> Vec<u8> {
        const ALPHABET: [u8; 8] = [0x00, 0x01, 0x02, 0x03, 0x11, 0x10, 0x0f, 0x21];
        let len = rng.below(33) as usize;
        (0..len).map(|_| rng.pick(&ALPHABET)).collect()
    }

    /// A packet matching `filter` (if any does), then perhaps damaged.
    pub(super) fn synthesised_packet(rng: &mut Rng, filter: &Verified) -> Vec<u8> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
