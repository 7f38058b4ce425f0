//! Fused chains ([`Fused`]): a run of trie levels that each have one way on, compiled into a few wide compares.
//!
//! Most of a trie is chains: every "UDP to port N" filter shares
//! "ethertype IPv4, version 4, first fragment, protocol UDP, skip the IP
//! header" before the port test fans out, and a lone filter is one chain
//! from the root to its accepting node. Walking such a chain level by
//! level costs a node visit, a field load and a branch lookup per atom.
//! [`Fused::compile`] turns the chain's atoms into *steps*:
//!
//! * The match atoms between two shifts (all read at one base) become
//!   big-endian *windows* of up to 8 bytes covering the bytes they test, from
//!   the lowest to the highest: each window is one load, one mask, one
//!   compare (`window & mask == value`), where the mask and value hold
//!   every atom's bits at their byte positions. The windows cover every
//!   byte up to the furthest atom's end, so the loads' bounds checks are
//!   exactly the atoms' (all atoms pass only if the packet holds the
//!   furthest byte).
//! * A shift stays a shift (one load, one advance).
//! * Atoms that contradict each other (two tests of one bit with different
//!   values) make the chain [`Step::Never`]: no packet passes, as none
//!   passes the atoms.
//!
//! [`Fused::run`] therefore answers exactly what evaluating the chain's
//! atoms in order does (a conjunction at each base; evaluation order does
//! not matter, only that every read is in bounds), which the unit tests
//! check against [`shared_abi::filter::matches`] on random chains.

use alloc::vec::Vec;
use shared_abi::filter::{load_field, Atom, Width};

/// One step of a fused chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The 8 bytes that end at `base + end`, big-endian: `& mask == value`.
    /// (When `base + end` is less than 8, the bytes from the packet's start,
    /// as if zeros came before it; the mask never covers bytes before the
    /// base.)
    Window { end: u16, mask: u64, value: u64 },
    /// `base += (field at base + offset) & mask << left >> right`: the
    /// shift atom's advance with its direction resolved
    /// (`shared_abi::filter::shift_advance`).
    Shift { offset: u16, width: Width, mask: u32, left: u8, right: u8 },
    /// `Shift` of a one-byte field (the IPv4 header length).
    ShiftByte { offset: u16, mask: u8, left: u8, right: u8 },
    /// The atoms contradict each other: nothing passes.
    Never,
}

/// A chain of trie levels compiled into steps, and where it leads.
#[derive(Debug)]
pub struct Fused {
    steps: Vec<Step>,
    /// The trie node the chain ends at.
    pub end: u32,
    /// Atoms the chain stands for (the walk's evaluation count).
    pub atoms: u32,
}

impl Fused {
    /// Compile `atoms` (a chain's atoms in walk order) leading to `end`.
    pub fn compile(atoms: &[Atom], end: u32) -> Fused {
        let mut steps = Vec::new();
        let mut segment: Vec<Atom> = Vec::new();
        for atom in atoms {
            match *atom {
                Atom::Match { .. } => segment.push(*atom),
                Atom::Shift { offset, width, mask, shift } => {
                    windows(&segment, &mut steps);
                    segment.clear();
                    let (left, right) = if shift >= 0 { (shift as u8, 0) } else { (0, shift.unsigned_abs()) };
                    steps.push(match width {
                        Width::One => Step::ShiftByte { offset, mask: mask as u8, left, right },
                        _ => Step::Shift { offset, width, mask, left, right },
                    });
                }
            }
        }
        windows(&segment, &mut steps);
        if steps.contains(&Step::Never) {
            steps = alloc::vec![Step::Never];
        }
        steps.shrink_to_fit();
        Fused { steps, end, atoms: atoms.len() as u32 }
    }

    /// Run the chain on `packet` from `base`: the base at its end, or None
    /// if the packet fails it.
    #[inline(always)]
    pub fn run(&self, packet: &[u8], mut base: usize) -> Option<usize> {
        for step in &self.steps {
            match *step {
                Step::Window { end, mask, value } => {
                    // No overflow: the base is at most 32 shifts of at most
                    // MAX_FRAME_LEN each.
                    let end = base + end as usize;
                    let window = match end.checked_sub(8) {
                        Some(start) => u64::from_be_bytes(packet.get(start..end)?.try_into().ok()?),
                        None => load_head(packet, end)?,
                    };
                    if window & mask != value {
                        return None;
                    }
                }
                Step::Shift { offset, width, mask, left, right } => {
                    let field = load_field(packet, base + offset as usize, width)?;
                    // Verified: at most MAX_FRAME_LEN per shift.
                    base += ((field & mask) as usize) << left >> right;
                }
                Step::ShiftByte { offset, mask, left, right } => {
                    let field = *packet.get(base + offset as usize)?;
                    base += ((field & mask) as usize) << left >> right;
                }
                Step::Never => return None,
            }
        }
        Some(base)
    }

    #[cfg(test)]
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }
}

/// The packet's first `end` (0..=7) bytes as a big-endian number, if it
/// holds them all.
#[cold]
#[inline(never)]
fn load_head(packet: &[u8], end: usize) -> Option<u64> {
    let bytes = packet.get(..end)?;
    Some(bytes.iter().fold(0u64, |window, &byte| window << 8 | byte as u64))
}

/// Append the windows testing `matches` (match atoms at one base).
fn windows(matches: &[Atom], steps: &mut Vec<Step>) {
    let mut low = usize::MAX;
    let mut high = 0;
    for atom in matches {
        low = low.min(atom.offset() as usize);
        high = high.max(atom.offset() as usize + atom.width().bytes());
    }
    let mut cursor = low;
    while cursor < high {
        // 8-byte windows, the last one ending at `high` (reaching back
        // over bytes already covered, or before the base, rather than past
        // the furthest atom: only the furthest byte decides the bounds).
        let end = (cursor + 8).min(high);
        let (start, len) = (end.saturating_sub(8), end.min(8));
        let (mut mask, mut value) = (0u64, 0u64);
        for atom in matches {
            let Atom::Match { offset, width, mask: atom_mask, value: atom_value } = *atom else { continue };
            for index in 0..width.bytes() {
                let position = offset as usize + index;
                if position < start || position >= start + len {
                    continue;
                }
                let atom_shift = 8 * (width.bytes() - 1 - index);
                let byte_mask = (atom_mask >> atom_shift & 0xff) as u64;
                let byte_value = (atom_value >> atom_shift & 0xff) as u64;
                let window_shift = 8 * (start + len - 1 - position);
                let (known, known_value) = (mask >> window_shift & 0xff, value >> window_shift & 0xff);
                if (known_value ^ byte_value) & known & byte_mask != 0 {
                    steps.push(Step::Never);
                    return;
                }
                mask |= byte_mask << window_shift;
                value |= byte_value << window_shift;
            }
        }
        steps.push(Step::Window { end: end as u16, mask, value });
        cursor = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::test_support::{random_atoms, random_packet, udp, Rng};
    use shared_abi::filter::{matches, shift_advance, Filter};

    #[test]
    fn udp_prefix_is_two_windows_and_a_shift() {
        let atoms = crate::filter::verify(&Filter::udp_dst_port(7).encode()).unwrap().atoms().to_vec();
        let fused = Fused::compile(&atoms, 5);
        assert_eq!(fused.atoms, 6);
        let kinds: Vec<&str> = fused
            .steps()
            .iter()
            .map(|s| match s {
                Step::Window { .. } => "window",
                Step::Shift { .. } | Step::ShiftByte { .. } => "shift",
                Step::Never => "never",
            })
            .collect();
        assert_eq!(kinds, ["window", "window", "shift", "window"]);
        assert!(fused.run(&udp(7), 0).is_some());
        assert!(fused.run(&udp(8), 0).is_none());
    }

    #[test]
    fn contradicting_atoms_never_pass() {
        let atoms = [
            Atom::Match { offset: 2, width: Width::Two, mask: 0xffff, value: 0x0102 },
            Atom::Match { offset: 3, width: Width::One, mask: 0x0f, value: 0x03 },
        ];
        let fused = Fused::compile(&atoms, 1);
        assert_eq!(fused.steps(), [Step::Never]);
        assert!(fused.run(&[0, 0, 1, 3, 0], 0).is_none());
        // Agreeing overlaps are fine.
        let agreeing = [atoms[0], Atom::Match { offset: 3, width: Width::One, mask: 0x0f, value: 0x02 }];
        assert_eq!(Fused::compile(&agreeing, 1).run(&[0, 0, 1, 2], 0), Some(0));
    }

    /// Random chains (overlapping fields, different masks on one field,
    /// shifts, short and long spans) on random packets and packets built to
    /// pass them: the fused chain agrees with evaluating the atoms, and
    /// ends at the same base.
    #[test]
    fn fused_chains_agree_with_the_atoms() {
        let mut rng = Rng(0xf05e_d0c4);
        let mut passed = 0;
        for round in 0..20_000 {
            let mut atoms = random_atoms(&mut rng);
            if round % 3 == 0 {
                // Reach further than the first 8 bytes now and then.
                atoms.push(Atom::Match { offset: 9 + rng.below(8) as u16, width: Width::Two, mask: 0x0ff0, value: 0 });
            }
            let fused = Fused::compile(&atoms, 1);
            for _ in 0..4 {
                let mut packet = random_packet(&mut rng);
                if rng.chance(1, 2) {
                    packet.resize(packet.len() + rng.below(24) as usize, 0);
                }
                let expected = matches(&atoms, &packet);
                let got = fused.run(&packet, 0);
                assert_eq!(got.is_some(), expected, "{atoms:?} on {packet:?}");
                if let Some(base) = got {
                    passed += 1;
                    assert_eq!(base, end_base(&atoms, &packet), "{atoms:?} on {packet:?}");
                }
            }
        }
        assert!(passed > 1000, "{passed}");
    }

    fn end_base(atoms: &[Atom], packet: &[u8]) -> usize {
        let mut base = 0;
        for atom in atoms {
            if let Atom::Shift { offset, width, mask, shift } = *atom {
                base += shift_advance(load_field(packet, base + offset as usize, width).unwrap(), mask, shift) as usize;
            }
        }
        base
    }
}
