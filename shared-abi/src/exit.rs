//! Exit codes a run ends with, through QEMU's isa-debug-exit device.
//!
//! The kernel writes a value `v` to I/O port [`DEBUG_EXIT_PORT`]; QEMU then
//! exits with status `(v << 1) | 1`. Any other QEMU status (a reset, a
//! timeout, a crash) is "no verdict".

/// I/O port of the `isa-debug-exit` device (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// The kernel's verdict at the end of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Verdict {
    /// Every environment ran to its end and the kernel stayed healthy.
    Success = 0x10,
    /// The kernel hit a panic or an internal invariant broke.
    Failure = 0x11,
}

impl Verdict {
    /// The process exit status QEMU reports for this verdict.
    pub const fn qemu_status(self) -> i32 {
        ((self as u32) << 1 | 1) as i32
    }

    /// Map a QEMU process exit status back to a verdict (None: no verdict).
    pub fn from_qemu_status(status: i32) -> Option<Verdict> {
        match status {
            s if s == Verdict::Success.qemu_status() => Some(Verdict::Success),
            s if s == Verdict::Failure.qemu_status() => Some(Verdict::Failure),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trip() {
        assert_eq!(Verdict::Success.qemu_status(), 33);
        assert_eq!(Verdict::Failure.qemu_status(), 35);
        assert_eq!(Verdict::from_qemu_status(33), Some(Verdict::Success));
        assert_eq!(Verdict::from_qemu_status(35), Some(Verdict::Failure));
        assert_eq!(Verdict::from_qemu_status(0), None);
        assert_eq!(Verdict::from_qemu_status(1), None);
    }
}
