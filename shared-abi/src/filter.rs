//! Packet filters as they cross the ABI: the atom language, its binary encoding, and builders.
//!
//! A library OS claims the packets it wants by installing a filter; the
//! kernel verifies it, merges it into its decision trie and delivers every
//! packet the filter matches to the installing environment. This module is
//! the part both sides share: what a filter means ([`matches()`]), how it is
//! encoded ([`Filter::encode`], [`decode`]), and builders for the common
//! protocols ([`Filter::udp_dst_port`] claims "UDP to port 7" in one call).
//!
//! # The language
//!
//! A filter is a conjunction of at most [`MAX_ATOMS`] atoms, evaluated in
//! order with a *base* register that starts at 0:
//!
//! * [`Atom::Match`] `{ offset, width, mask, value }` holds when the
//!   `width`-byte big-endian (network order) field at `base + offset`, ANDed
//!   with `mask`, equals `value`.
//! * [`Atom::Shift`] `{ offset, width, mask, shift }` steps over a
//!   variable-length header: it reads the field at `base + offset` the same
//!   way and adds `(field & mask) << shift` to the base (a negative `shift`
//!   shifts right). IPv4: `base += (byte 14 & 0x0f) << 2`. Later atoms'
//!   offsets are relative to the new base.
//!
//! A packet matches when every atom holds. An atom whose bytes lie, even in
//! part, past the end of the packet does not hold: a filter never reads out
//! of bounds, and a short packet simply does not match. There are no jumps,
//! so there are no loops: evaluating a filter is one pass over its atoms.
//!
//! # Encoding (version 1)
//!
//! Fixed-size little-endian records: an 8-byte header, then `atom_count`
//! 12-byte atom records, nothing after them.
//!
//! ```text
//! header: 0..2  version     u16  (= VERSION, 1)
//!         2..4  atom_count  u16  (1 ..= MAX_ATOMS)
//!         4..8  reserved    u32  (= 0)
//! atom:   0     kind        u8   (KIND_MATCH = 1, KIND_SHIFT = 2)
//!         1     width       u8   (1, 2 or 4 bytes)
//!         2..4  offset      u16  (bytes from the base; offset + width <= MAX_FRAME_LEN)
//!         4..8  mask        u32  (only the low `width` bytes may be set)
//!         8..12 match: value u32 (no bit outside `mask`)
//!               shift: byte 8 = shift as i8 (SHIFT_MIN ..= SHIFT_MAX), bytes 9..12 = 0
//! ```
//!
//! [`decode`] checks the structure (length, version, kinds, widths, reserved
//! bytes); the kernel's install-time verifier checks the value rules noted
//! above and that a shift never advances the base by more than
//! [`MAX_FRAME_LEN`] bytes.

use alloc::vec::Vec;

/// The encoding version this crate writes and the kernel accepts.
pub const VERSION: u16 = 1;
/// Bytes of the header.
pub const HEADER_LEN: usize = 8;
/// Bytes of one atom record.
pub const ATOM_LEN: usize = 12;
/// Most atoms one filter may have.
pub const MAX_ATOMS: usize = 32;
/// Longest valid encoding.
pub const MAX_ENCODED_LEN: usize = HEADER_LEN + MAX_ATOMS * ATOM_LEN;
/// The largest Ethernet frame without FCS: no atom offset reaches past it,
/// and no shift advances the base by more.
pub const MAX_FRAME_LEN: usize = 1514;
/// Record kind of [`Atom::Match`].
pub const KIND_MATCH: u8 = 1;
/// Record kind of [`Atom::Shift`].
pub const KIND_SHIFT: u8 = 2;
/// Smallest shift amount: a right shift by 15 (takes the top nibble of a
/// 16-bit field down to its low bits).
pub const SHIFT_MIN: i8 = -15;
/// Largest shift amount: a left shift by 7 (multiply by 128).
pub const SHIFT_MAX: i8 = 7;

/// Well-known protocol numbers and header offsets (Ethernet II framing).
pub mod proto {
    /// Offset of the EtherType in an Ethernet II header.
    pub const ETHERTYPE_OFFSET: u16 = 12;
    /// EtherType of IPv4.
    pub const ETHERTYPE_IPV4: u16 = 0x0800;
    /// EtherType of ARP.
    pub const ETHERTYPE_ARP: u16 = 0x0806;
    /// Offset of the IPv4 header (just after the Ethernet header).
    pub const IPV4_OFFSET: u16 = 14;
    /// Offset of the IPv4 flags + fragment-offset field.
    pub const IPV4_FRAGMENT_OFFSET: u16 = IPV4_OFFSET + 6;
    /// Offset of the IPv4 protocol byte.
    pub const IPV4_PROTOCOL_OFFSET: u16 = IPV4_OFFSET + 9;
    /// Offset of the IPv4 source address.
    pub const IPV4_SRC_OFFSET: u16 = IPV4_OFFSET + 12;
    /// Offset of the IPv4 destination address.
    pub const IPV4_DST_OFFSET: u16 = IPV4_OFFSET + 16;
    /// IP protocol number of TCP.
    pub const IPPROTO_TCP: u8 = 6;
    /// IP protocol number of UDP.
    pub const IPPROTO_UDP: u8 = 17;
    /// After the shift over the IPv4 header (base = IHL * 4), the transport
    /// header starts at `base + TRANSPORT_OFFSET`.
    pub const TRANSPORT_OFFSET: u16 = IPV4_OFFSET;
}

/// Width of a field an atom reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Width {
    One = 1,
    Two = 2,
    Four = 4,
}

impl Width {
    /// The width with this many bytes, if it is 1, 2 or 4.
    pub const fn from_bytes(bytes: u8) -> Option<Width> {
        match bytes {
            1 => Some(Width::One),
            2 => Some(Width::Two),
            4 => Some(Width::Four),
            _ => None,
        }
    }

    /// Bytes the field spans.
    pub const fn bytes(self) -> usize {
        self as usize
    }

    /// The mask with every bit of the field set.
    pub const fn full_mask(self) -> u32 {
        match self {
            Width::One => 0xff,
            Width::Two => 0xffff,
            Width::Four => 0xffff_ffff,
        }
    }
}

/// One test of a filter. The module doc gives the meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Atom {
    /// `(field at base + offset) & mask == value`.
    Match { offset: u16, width: Width, mask: u32, value: u32 },
    /// `base += (field at base + offset) & mask`, shifted left by `shift`
    /// (right by `-shift` when negative).
    Shift { offset: u16, width: Width, mask: u32, shift: i8 },
}

impl Atom {
    /// Offset (from the base) of the field the atom reads.
    pub const fn offset(&self) -> u16 {
        match *self {
            Atom::Match { offset, .. } | Atom::Shift { offset, .. } => offset,
        }
    }

    /// Width of the field the atom reads.
    pub const fn width(&self) -> Width {
        match *self {
            Atom::Match { width, .. } | Atom::Shift { width, .. } => width,
        }
    }

    /// The mask the atom applies to its field.
    pub const fn mask(&self) -> u32 {
        match *self {
            Atom::Match { mask, .. } | Atom::Shift { mask, .. } => mask,
        }
    }
}

/// The bits of a shift atom's `mask` that can change the advance: a right
/// shift by `r` discards the low `r` bits.
pub const fn shift_effective_mask(mask: u32, shift: i8) -> u32 {
    if shift >= 0 {
        mask
    } else {
        let discarded = -(shift as i32) as u32;
        if discarded >= 32 {
            0
        } else {
            mask & !((1u32 << discarded) - 1)
        }
    }
}

/// How far a shift atom moves the base when its field reads `field`.
/// Computed in 64 bits: a verified atom never advances by more than
/// [`MAX_FRAME_LEN`], and an unverified one cannot overflow here.
pub const fn shift_advance(field: u32, mask: u32, shift: i8) -> u64 {
    let masked = (field & mask) as u64;
    if shift >= 0 {
        masked << (shift as u32 & 63)
    } else {
        masked >> ((-(shift as i32)) as u32 & 63)
    }
}

/// The `width`-byte big-endian field at `position`, or None if any of its
/// bytes lies past the end of `packet`.
#[inline(always)]
pub fn load_field(packet: &[u8], position: usize, width: Width) -> Option<u32> {
    match width {
        Width::One => packet.get(position).map(|&byte| byte as u32),
        Width::Two => {
            let bytes = packet.get(position..position.checked_add(2)?)?;
            Some(u16::from_be_bytes([bytes[0], bytes[1]]) as u32)
        }
        Width::Four => {
            let bytes = packet.get(position..position.checked_add(4)?)?;
            Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
        }
    }
}

/// Whether `packet` matches the filter `atoms`: the normative meaning of a
/// filter. `evaluations` grows by one for every atom evaluated (the unit in
/// which demultiplexing cost is reported).
pub fn matches_counted(atoms: &[Atom], packet: &[u8], evaluations: &mut u32) -> bool {
    let mut base: usize = 0;
    for atom in atoms {
        *evaluations += 1;
        let Some(position) = base.checked_add(atom.offset() as usize) else {
            return false;
        };
        let Some(field) = load_field(packet, position, atom.width()) else {
            return false;
        };
        match *atom {
            Atom::Match { mask, value, .. } => {
                if field & mask != value {
                    return false;
                }
            }
            Atom::Shift { mask, shift, .. } => {
                // Any advance past the packet makes every later read fail,
                // so saturating is exact.
                let advance = shift_advance(field, mask, shift).min(usize::MAX as u64) as usize;
                base = base.saturating_add(advance);
            }
        }
    }
    true
}

/// Whether `packet` matches the filter `atoms`.
pub fn matches(atoms: &[Atom], packet: &[u8]) -> bool {
    matches_counted(atoms, packet, &mut 0)
}

/// Why bytes are not a filter encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Longer than [`MAX_ENCODED_LEN`].
    TooLong,
    /// The header claims more than [`MAX_ATOMS`] atoms.
    TooManyAtoms,
    /// Shorter than the header, or than the atoms the header announces.
    Truncated,
    /// Bytes after the last announced atom.
    TrailingBytes,
    /// A version other than [`VERSION`].
    BadVersion,
    /// A reserved byte is not zero.
    ReservedNonZero,
    /// An atom kind other than [`KIND_MATCH`] or [`KIND_SHIFT`].
    UnknownKind,
    /// A width other than 1, 2 or 4.
    BadWidth,
}

/// A filter: the atoms a libOS builds and the kernel decodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub atoms: Vec<Atom>,
}

impl Filter {
    /// A filter with no atoms yet (the kernel refuses an empty filter).
    pub fn new() -> Filter {
        Filter { atoms: Vec::new() }
    }

    /// Append an atom.
    pub fn atom(mut self, atom: Atom) -> Filter {
        self.atoms.push(atom);
        self
    }

    /// Append `(field at base + offset) & mask == value`.
    pub fn match_masked(self, offset: u16, width: Width, mask: u32, value: u32) -> Filter {
        self.atom(Atom::Match { offset, width, mask, value })
    }

    /// Append "the byte at base + offset is `value`".
    pub fn match_u8(self, offset: u16, value: u8) -> Filter {
        self.match_masked(offset, Width::One, 0xff, value as u32)
    }

    /// Append "the 16-bit big-endian field at base + offset is `value`".
    pub fn match_u16(self, offset: u16, value: u16) -> Filter {
        self.match_masked(offset, Width::Two, 0xffff, value as u32)
    }

    /// Append "the 32-bit big-endian field at base + offset is `value`".
    pub fn match_u32(self, offset: u16, value: u32) -> Filter {
        self.match_masked(offset, Width::Four, 0xffff_ffff, value)
    }

    /// Append `base += (field at base + offset & mask) << shift`.
    pub fn shift(self, offset: u16, width: Width, mask: u32, shift: i8) -> Filter {
        self.atom(Atom::Shift { offset, width, mask, shift })
    }

    /// Append "the EtherType is `ethertype`".
    pub fn ethertype(self, ethertype: u16) -> Filter {
        self.match_u16(proto::ETHERTYPE_OFFSET, ethertype)
    }

    /// Append "an IPv4 packet": EtherType IPv4 and IP version 4.
    pub fn ipv4(self) -> Filter {
        self.ethertype(proto::ETHERTYPE_IPV4).match_masked(proto::IPV4_OFFSET, Width::One, 0xf0, 0x40)
    }

    /// Append "an IPv4 packet of IP protocol `protocol`".
    pub fn ipv4_protocol(self, protocol: u8) -> Filter {
        self.ipv4().match_u8(proto::IPV4_PROTOCOL_OFFSET, protocol)
    }

    /// Append "addressed to IPv4 `address`" (use after [`Filter::ipv4`],
    /// before any transport test).
    pub fn ipv4_dst(self, address: [u8; 4]) -> Filter {
        self.match_u32(proto::IPV4_DST_OFFSET, u32::from_be_bytes(address))
    }

    /// Append "IPv4 protocol `protocol`, first (or only) fragment", then
    /// step over the IPv4 header (`base += IHL * 4`), so that the transport
    /// header starts at `base + TRANSPORT_OFFSET`. Later fragments carry no
    /// transport header and are not matched.
    pub fn transport(self, protocol: u8) -> Filter {
        self.ipv4_protocol(protocol).match_masked(proto::IPV4_FRAGMENT_OFFSET, Width::Two, 0x1fff, 0).shift(
            proto::IPV4_OFFSET,
            Width::One,
            0x0f,
            2,
        )
    }

    /// Append "a UDP datagram" (see [`Filter::transport`]).
    pub fn udp(self) -> Filter {
        self.transport(proto::IPPROTO_UDP)
    }

    /// Append "a TCP segment" (see [`Filter::transport`]).
    pub fn tcp(self) -> Filter {
        self.transport(proto::IPPROTO_TCP)
    }

    /// Append "transport source port `port`" (after [`Filter::udp`] or [`Filter::tcp`]).
    pub fn src_port(self, port: u16) -> Filter {
        self.match_u16(proto::TRANSPORT_OFFSET, port)
    }

    /// Append "transport destination port `port`" (after [`Filter::udp`] or [`Filter::tcp`]).
    pub fn dst_port(self, port: u16) -> Filter {
        self.match_u16(proto::TRANSPORT_OFFSET + 2, port)
    }

    /// "UDP to port `port`", in one call.
    pub fn udp_dst_port(port: u16) -> Filter {
        Filter::new().udp().dst_port(port)
    }

    /// "TCP to port `port`", in one call.
    pub fn tcp_dst_port(port: u16) -> Filter {
        Filter::new().tcp().dst_port(port)
    }

    /// Whether `packet` matches this filter (see [`matches()`]).
    pub fn matches(&self, packet: &[u8]) -> bool {
        matches(&self.atoms, packet)
    }

    /// Bytes of the encoding.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.atoms.len() * ATOM_LEN
    }

    /// The binary encoding, ready to pass to the kernel. A filter with more
    /// than `u16::MAX` atoms is encoded with a saturated count, which the
    /// kernel refuses as too long.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        let count = self.atoms.len().min(u16::MAX as usize) as u16;
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        for atom in &self.atoms {
            out.extend_from_slice(&encode_atom(atom));
        }
        out
    }
}

/// One atom's 12-byte record.
pub fn encode_atom(atom: &Atom) -> [u8; ATOM_LEN] {
    let mut record = [0u8; ATOM_LEN];
    let (kind, last) = match *atom {
        Atom::Match { value, .. } => (KIND_MATCH, value.to_le_bytes()),
        Atom::Shift { shift, .. } => (KIND_SHIFT, [shift as u8, 0, 0, 0]),
    };
    record[0] = kind;
    record[1] = atom.width() as u8;
    record[2..4].copy_from_slice(&atom.offset().to_le_bytes());
    record[4..8].copy_from_slice(&atom.mask().to_le_bytes());
    record[8..12].copy_from_slice(&last);
    record
}

fn le_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Decode one atom record.
pub fn decode_atom(record: &[u8; ATOM_LEN]) -> Result<Atom, DecodeError> {
    let width = Width::from_bytes(record[1]);
    let offset = le_u16(record, 2);
    let mask = le_u32(record, 4);
    match record[0] {
        KIND_MATCH => {
            let width = width.ok_or(DecodeError::BadWidth)?;
            Ok(Atom::Match { offset, width, mask, value: le_u32(record, 8) })
        }
        KIND_SHIFT => {
            let width = width.ok_or(DecodeError::BadWidth)?;
            if record[9..12] != [0, 0, 0] {
                return Err(DecodeError::ReservedNonZero);
            }
            Ok(Atom::Shift { offset, width, mask, shift: record[8] as i8 })
        }
        _ => Err(DecodeError::UnknownKind),
    }
}

/// Decode a filter, checking its structure (not the value rules, which are
/// the kernel verifier's). Errors are reported in this order: too long,
/// truncated header, version, reserved header bytes, too many atoms,
/// truncated or trailing body, then each atom in turn.
pub fn decode(bytes: &[u8]) -> Result<Filter, DecodeError> {
    if bytes.len() > MAX_ENCODED_LEN {
        return Err(DecodeError::TooLong);
    }
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::Truncated);
    }
    if le_u16(bytes, 0) != VERSION {
        return Err(DecodeError::BadVersion);
    }
    if le_u32(bytes, 4) != 0 {
        return Err(DecodeError::ReservedNonZero);
    }
    let count = le_u16(bytes, 2) as usize;
    if count > MAX_ATOMS {
        return Err(DecodeError::TooManyAtoms);
    }
    let want = HEADER_LEN + count * ATOM_LEN;
    if bytes.len() < want {
        return Err(DecodeError::Truncated);
    }
    if bytes.len() > want {
        return Err(DecodeError::TrailingBytes);
    }
    let atoms = bytes[HEADER_LEN..]
        .as_chunks::<ATOM_LEN>()
        .0
        .iter()
        .map(decode_atom)
        .collect::<Result<Vec<Atom>, DecodeError>>()?;
    Ok(Filter { atoms })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// An Ethernet + IPv4 (+ `options` words of IP options) + UDP/TCP header.
    fn ipv4_packet(protocol: u8, options_words: usize, dst_port: u16) -> Vec<u8> {
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

    #[test]
    fn udp_to_port_7_in_one_call() {
        let filter = Filter::udp_dst_port(7);
        assert!(filter.matches(&ipv4_packet(proto::IPPROTO_UDP, 0, 7)));
        assert!(filter.matches(&ipv4_packet(proto::IPPROTO_UDP, 3, 7)), "IP options are stepped over");
        assert!(!filter.matches(&ipv4_packet(proto::IPPROTO_UDP, 0, 8)));
        assert!(!filter.matches(&ipv4_packet(proto::IPPROTO_TCP, 0, 7)));
        assert!(Filter::tcp_dst_port(7).matches(&ipv4_packet(proto::IPPROTO_TCP, 1, 7)));
        let mut fragment = ipv4_packet(proto::IPPROTO_UDP, 0, 7);
        fragment[21] = 1; // fragment offset 8 bytes: no UDP header here
        assert!(!filter.matches(&fragment));
        let addressed = Filter::new().ipv4().ipv4_dst([10, 0, 2, 15]);
        assert!(addressed.matches(&ipv4_packet(proto::IPPROTO_TCP, 0, 1)));
    }

    #[test]
    fn reads_past_the_end_do_not_match() {
        let packet = ipv4_packet(proto::IPPROTO_UDP, 0, 7);
        let filter = Filter::udp_dst_port(7);
        let header_end = 14 + 20 + 4; // through the destination port
        assert!(filter.matches(&packet[..header_end]));
        for len in 0..header_end {
            assert!(!filter.matches(&packet[..len]), "length {len}");
        }
        let far = Filter::new().match_masked(u16::MAX, Width::Four, 0, 0);
        assert!(!far.matches(&packet));
        // A shift that moves the base far past the end makes later reads fail.
        let jump = Filter::new().shift(0, Width::Four, u32::MAX, 7).match_masked(0, Width::One, 0, 0);
        assert!(!jump.matches(&[0xff; 8]));
        assert!(jump.matches(&[0; 8]));
    }

    #[test]
    fn shift_arithmetic() {
        // TCP data offset: top nibble of byte 12, times 4.
        assert_eq!(shift_advance(0x50, 0xf0, -2), 20);
        assert_eq!(shift_advance(0x45, 0x0f, 2), 20);
        assert_eq!(shift_effective_mask(0xf3, -2), 0xf0);
        assert_eq!(shift_effective_mask(0xf3, 3), 0xf3);
        let evaluations = &mut 0;
        assert!(matches_counted(&Filter::udp_dst_port(9).atoms, &ipv4_packet(17, 0, 9), evaluations));
        assert_eq!(*evaluations, 6);
        assert_eq!(shift_effective_mask(u32::MAX, i8::MIN), 0);
    }

    #[test]
    fn encode_decode_round_trip() {
        let filters = [
            Filter::udp_dst_port(7),
            Filter::tcp_dst_port(80),
            Filter::new().ethertype(proto::ETHERTYPE_ARP),
            Filter::new().shift(3, Width::Two, 0x0ff0, -4).match_masked(1, Width::Four, 0x00ff_ff00, 0x0012_3400),
            Filter::new().shift(0, Width::One, 0xff, SHIFT_MIN).shift(0, Width::One, 1, SHIFT_MAX),
        ];
        for filter in filters {
            let bytes = filter.encode();
            assert_eq!(bytes.len(), filter.encoded_len());
            assert_eq!(decode(&bytes), Ok(filter));
        }
    }

    #[test]
    fn encoding_layout() {
        let bytes = Filter::new().match_u16(12, 0x0800).shift(14, Width::One, 0x0f, -1).encode();
        assert_eq!(&bytes[..8], &[1, 0, 2, 0, 0, 0, 0, 0]);
        assert_eq!(&bytes[8..20], &[1, 2, 12, 0, 0xff, 0xff, 0, 0, 0x00, 0x08, 0, 0]);
        assert_eq!(&bytes[20..32], &[2, 1, 14, 0, 0x0f, 0, 0, 0, 0xff, 0, 0, 0]);
    }

    #[test]
    fn decode_refuses_malformed_encodings() {
        let good = Filter::udp_dst_port(7).encode();
        assert_eq!(decode(&good[..4]), Err(DecodeError::Truncated));
        assert_eq!(decode(&good[..good.len() - 1]), Err(DecodeError::Truncated));
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(decode(&trailing), Err(DecodeError::TrailingBytes));
        let mut version = good.clone();
        version[0] = 2;
        assert_eq!(decode(&version), Err(DecodeError::BadVersion));
        let mut reserved = good.clone();
        reserved[7] = 1;
        assert_eq!(decode(&reserved), Err(DecodeError::ReservedNonZero));
        let mut count = good.clone();
        count[2] = MAX_ATOMS as u8 + 1;
        assert_eq!(decode(&count), Err(DecodeError::TooManyAtoms));
        assert_eq!(decode(&vec![0; MAX_ENCODED_LEN + 1]), Err(DecodeError::TooLong));
        let mut kind = good.clone();
        kind[HEADER_LEN] = 3;
        assert_eq!(decode(&kind), Err(DecodeError::UnknownKind));
        let mut width = good.clone();
        width[HEADER_LEN + 1] = 3;
        assert_eq!(decode(&width), Err(DecodeError::BadWidth));
        let shift_at = HEADER_LEN + 4 * ATOM_LEN; // the IPv4 header shift
        assert_eq!(good[shift_at], KIND_SHIFT);
        let mut shift_reserved = good.clone();
        shift_reserved[shift_at + 11] = 1;
        assert_eq!(decode(&shift_reserved), Err(DecodeError::ReservedNonZero));
        let any = Atom::Match { offset: 0, width: Width::One, mask: 0, value: 0 };
        let too_many = Filter { atoms: vec![any; MAX_ATOMS + 1] };
        assert_eq!(decode(&too_many.encode()), Err(DecodeError::TooLong));
    }
}
