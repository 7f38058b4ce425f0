//! Measurement markers: a magic no-op instruction that brackets a region of
//! guest code for the TLB-model QEMU plugin (`xtask/tlb-plugin`), which
//! counts the instructions and modelled TLB misses executed between a
//! `begin` and an `end` of the same tag.
//!
//! The marker is the 8-byte no-op `nopl disp32(%rax,%rax,1)`
//! (`0F 1F 84 00` + a 32-bit displacement), the same instruction compilers
//! emit as alignment padding with a zero displacement. A marker's
//! displacement, little-endian, is `[tag low, tag high, op, 0xE5]`. It
//! executes as a no-op in any ring, on any x86-64 CPU, with or without the
//! plugin, so the same binary runs everywhere; the plugin recognises it by
//! its bytes when it translates the code. The tag is a constant of the
//! instruction (a QEMU 7.2 plugin cannot read registers), so each
//! measured site has its own tag.
//!
//! This module holds only the encoding (pure, host-tested); the inline
//! assembly that emits it is `libos_runtime::marker`, and
//! `xtask/linux/exo_marker.h` emits the same bytes from C.

/// The first four bytes of every marker: opcode `0F 1F`, ModRM `84`
/// (disp32 + SIB, reg field 0), SIB `00` (base rax, index rax, scale 1).
pub const MARKER_PREFIX: [u8; 4] = [0x0f, 0x1f, 0x84, 0x00];
/// The displacement's top byte in every marker.
pub const MARKER_MAGIC: u8 = 0xe5;
/// The length of a marker instruction in bytes.
pub const MARKER_LEN: usize = 8;

/// What a marker tells the plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkerOp {
    /// A region of this tag starts after this instruction.
    Begin = 1,
    /// The region of this tag ends with this instruction.
    End = 2,
}

impl MarkerOp {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(MarkerOp::Begin),
            2 => Some(MarkerOp::End),
            _ => None,
        }
    }
}

/// The 32-bit displacement of the marker `op` with `tag`.
pub const fn displacement(op: MarkerOp, tag: u16) -> u32 {
    ((MARKER_MAGIC as u32) << 24) | ((op as u32) << 16) | tag as u32
}

/// The eight bytes of the marker `op` with `tag`.
pub const fn encode(op: MarkerOp, tag: u16) -> [u8; MARKER_LEN] {
    let d = displacement(op, tag).to_le_bytes();
    [MARKER_PREFIX[0], MARKER_PREFIX[1], MARKER_PREFIX[2], MARKER_PREFIX[3], d[0], d[1], d[2], d[3]]
}

/// The marker at the start of `bytes` (an instruction's bytes), if it is one.
pub fn decode(bytes: &[u8]) -> Option<(MarkerOp, u16)> {
    if bytes.len() < MARKER_LEN || bytes[..4] != MARKER_PREFIX || bytes[7] != MARKER_MAGIC {
        return None;
    }
    let op = MarkerOp::from_byte(bytes[6])?;
    Some((op, u16::from_le_bytes([bytes[4], bytes[5]])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_decodes_every_op() {
        for op in [MarkerOp::Begin, MarkerOp::End] {
            for tag in [0u16, 1, 0x1ff, 0xffff] {
                let bytes = encode(op, tag);
                assert_eq!(decode(&bytes), Some((op, tag)));
            }
        }
        assert_eq!(encode(MarkerOp::Begin, 0x0102), [0x0f, 0x1f, 0x84, 0x00, 0x02, 0x01, 0x01, 0xe5]);
    }

    #[test]
    fn compiler_padding_and_other_bytes_are_not_markers() {
        // The padding form compilers emit: nopl 0x0(%rax,%rax,1).
        assert_eq!(decode(&[0x0f, 0x1f, 0x84, 0x00, 0, 0, 0, 0]), None);
        // Unknown op byte.
        assert_eq!(decode(&[0x0f, 0x1f, 0x84, 0x00, 1, 0, 3, 0xe5]), None);
        // Too short, and a different opcode.
        assert_eq!(decode(&encode(MarkerOp::End, 5)[..7]), None);
        assert_eq!(decode(&[0x0f, 0x1f, 0x80, 0x00, 1, 0, 1, 0xe5]), None);
    }
}
