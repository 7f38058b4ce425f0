//! The instructions the plugin acts on, recognised by their bytes when
//! QEMU translates them: writes to CR3 and CR4, `invlpg`, and the
//! measurement markers of `shared_abi::marker`.

use shared_abi::marker::{self, MarkerOp};

/// What an instruction means to the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Special {
    /// `mov cr3, reg` (`0F 22 /3`): a new address space.
    Cr3Write,
    /// `mov cr4, reg` (`0F 22 /4`): may toggle PGE or PCIDE, which flushes
    /// everything; modelled as a full flush.
    Cr4Write,
    /// `invlpg m` (`0F 01 /7`, memory operand).
    Invlpg,
    /// A measurement marker.
    Marker(MarkerOp, u16),
}

/// Legacy prefixes that may stand before a system instruction.
fn is_legacy_prefix(byte: u8) -> bool {
    matches!(byte, 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65)
}

/// Classify one instruction from its bytes.
pub fn classify(bytes: &[u8]) -> Option<Special> {
    if let Some((op, tag)) = marker::decode(bytes) {
        return Some(Special::Marker(op, tag));
    }
    let mut at = 0;
    while at < bytes.len() && is_legacy_prefix(bytes[at]) {
        at += 1;
    }
    if at < bytes.len() && (0x40..=0x4f).contains(&bytes[at]) {
        at += 1; // REX
    }
    let rest = &bytes[at..];
    let [0x0f, opcode, modrm, ..] = *rest else { return None };
    let (mode, reg) = (modrm >> 6, (modrm >> 3) & 7);
    match (opcode, reg) {
        // mov to a control register: ModRM's reg field names it (REX.R
        // would make it CR11/CR12, which do not exist).
        (0x22, 3) => Some(Special::Cr3Write),
        (0x22, 4) => Some(Special::Cr4Write),
        // Group 7, /7 with a memory operand (mod 3 is swapgs/rdtscp).
        (0x01, 7) if mode != 3 => Some(Special::Invlpg),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_system_instructions() {
        assert_eq!(classify(&[0x0f, 0x22, 0xd8]), Some(Special::Cr3Write)); // mov cr3, rax
        assert_eq!(classify(&[0x41, 0x0f, 0x22, 0xd8]), Some(Special::Cr3Write)); // mov cr3, r8
        assert_eq!(classify(&[0x0f, 0x22, 0xdf]), Some(Special::Cr3Write)); // mov cr3, rdi
        assert_eq!(classify(&[0x0f, 0x22, 0xe0]), Some(Special::Cr4Write)); // mov cr4, rax
        assert_eq!(classify(&[0x0f, 0x01, 0x38]), Some(Special::Invlpg)); // invlpg [rax]
        assert_eq!(classify(&[0x0f, 0x01, 0x3f]), Some(Special::Invlpg)); // invlpg [rdi]
        assert_eq!(classify(&[0x41, 0x0f, 0x01, 0x38]), Some(Special::Invlpg)); // invlpg [r8]
        assert_eq!(classify(&[0x0f, 0x01, 0x7c, 0x24, 0x08]), Some(Special::Invlpg));
        // invlpg [rsp+8]
    }

    #[test]
    fn leaves_look_alikes_alone() {
        assert_eq!(classify(&[0x0f, 0x20, 0xd8]), None); // mov rax, cr3 (a read)
        assert_eq!(classify(&[0x0f, 0x22, 0xc0]), None); // mov cr0, rax
        assert_eq!(classify(&[0x0f, 0x01, 0xf8]), None); // swapgs
        assert_eq!(classify(&[0x0f, 0x01, 0xf9]), None); // rdtscp
        assert_eq!(classify(&[0x0f, 0x01, 0x10]), None); // lgdt [rax]
        assert_eq!(classify(&[0x0f, 0x31]), None); // rdtsc
        assert_eq!(classify(&[0x90]), None);
        assert_eq!(classify(&[]), None);
        assert_eq!(classify(&[0x0f, 0x1f, 0x84, 0x00, 0, 0, 0, 0]), None); // padding nop
    }

    #[test]
    fn recognises_markers() {
        let bytes = shared_abi::marker::encode(MarkerOp::End, 0x404);
        assert_eq!(classify(&bytes), Some(Special::Marker(MarkerOp::End, 0x404)));
    }
}
