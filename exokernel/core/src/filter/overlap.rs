//! The exact conflict check between two filters ([`overlap`]), and its
//! budget ([`OVERLAP_BUDGET_CASES`]).
//!
//! # Conflicts
//!
//! Two filters of different environments *conflict* when some packet (of
//! any length and content) matches both;
//! [`Demux::install`](super::Demux::install) refuses a filter that
//! conflicts with an installed filter of another environment (the rule:
//! the `filter` module doc, "Conflicts"; which installed filters are
//! checked: `trie.rs`).
//!
//! The decision is exact ([`overlap`]): both filters are evaluated
//! symbolically over a packet whose bytes are unknown, collecting per-bit
//! constraints; a shift whose field is not yet determined is split into one
//! case per possible value of the bits that move the base. A consistent end
//! state yields a witness packet matching both; contradictions in every
//! case prove them disjoint. If the split would need more than
//! [`OVERLAP_BUDGET_CASES`] cases for one pair of filters, or
//! [`INSTALL_BUDGET_CASES`](super::INSTALL_BUDGET_CASES) over one install,
//! the filters are treated as conflicting, so the rule errs only towards
//! refusing, never towards letting a steal through.

use super::Verified;
use alloc::vec::Vec;
use shared_abi::filter::{shift_advance, shift_effective_mask, Atom, Width};

/// Most shift-value cases [`overlap`] examines for one pair of filters
/// before it gives up and the install is refused as a (possible) conflict.
pub const OVERLAP_BUDGET_CASES: u32 = 4096;

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
pub(super) fn overlap_within(first: &Verified, second: &Verified, budget_cases: &mut u32) -> Overlap {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::test_support::{
        env_of, ip_packet, random_atoms, random_packet, synthesised_packet, verified, Rng, A, B, SEED,
    };
    use crate::filter::{verify_atoms, Demux, FilterError};
    use shared_abi::filter::{proto, Filter};

    #[test]
    fn overlap_across_different_header_layouts_is_found() {
        // A steps over the IPv4 header; B assumes a 20-byte header and reads
        // the port at a fixed offset. They overlap on packets without options.
        let mut demux = Demux::new(SEED);
        demux.install(A, &Filter::udp_dst_port(7).encode()).unwrap();
        let fixed = Filter::new().ipv4_protocol(proto::IPPROTO_UDP).match_u16(proto::IPV4_OFFSET + 20 + 2, 7);
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
}
