//! The install-time verifier ([`verify`], [`verify_atoms`]) and the
//! canonical form of a filter it accepted ([`Verified`]).
//!
//! # Verifier (install time)
//!
//! The encoding is decoded ([`shared_abi::filter::decode`]) and each atom
//! checked. Refused as
//! [`Error::BadLength`](shared_abi::syscall::Error::BadLength): more than
//! [`MAX_ATOMS`] (32) atoms, or more than
//! [`MAX_ENCODED_LEN`](shared_abi::filter::MAX_ENCODED_LEN) (392) bytes;
//! the system call should check the length before copying. Refused as
//! [`Error::InvalidArgument`](shared_abi::syscall::Error::InvalidArgument):
//! a truncated encoding or bytes after it, a bad version, reserved bytes
//! not zero, an unknown atom kind, a
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
//! # Canonical form
//!
//! A verified filter is put in canonical form: within each segment (the
//! match atoms between two shifts, which all read relative to the same
//! base) the match atoms are sorted by (offset, width, mask, value) and
//! exact duplicates dropped. A conjunction does not depend on its order, so
//! the meaning is unchanged, and filters testing the same fields share trie
//! nodes whatever order their libOS wrote them in.

use super::FilterError;
use alloc::vec::Vec;
use shared_abi::filter::{
    decode, matches_counted, shift_advance, Atom, DecodeError, MAX_ATOMS, MAX_FRAME_LEN, SHIFT_MAX, SHIFT_MIN,
};

/// A filter the verifier accepted, in canonical form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    atoms: Vec<Atom>,
    pub(super) specificity: u32,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::test_support::{udp, verified};
    use alloc::vec;
    use shared_abi::filter::{proto, Filter, Width, ATOM_LEN, HEADER_LEN, MAX_ENCODED_LEN};

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
        assert_eq!(
            verify_atoms(&vec![byte(0, 0xff, 1); MAX_ATOMS + 1]),
            Err(FilterError::Decode(DecodeError::TooManyAtoms))
        );

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
        assert_eq!(verify(&encode(vec![shift(Width::Four, u32::MAX, -15)])), Err(FilterError::AdvanceTooLarge));
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
}
