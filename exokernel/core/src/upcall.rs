//! Where the kernel puts what it hands a libOS on its upcall stack.
//!
//! An upcall frame goes at the top of the registered upcall stack, or, if
//! the libOS was interrupted while already on that stack (a nested upcall),
//! below the interrupted stack pointer, leaving room for the resume sequence
//! the interrupted handler may have staged there. A protected-entry
//! activation starts on the same stack with room left for its own frames.

/// Bytes left below an interrupted upcall-stack `rsp` for the resume
/// sequence the runtime stages there (it needs 32; 128 for headroom).
pub const NESTED_GAP: u64 = 128;
/// Bytes left below an interrupted `rsp` when an activation starts.
pub const ACTIVATION_GAP: u64 = 256;
/// Least stack an activation must have above `stack_base`.
pub const ACTIVATION_MIN_STACK: u64 = 512;

/// Why nothing can be placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlaceError {
    /// The frame would fall below `stack_base`.
    Exhausted,
}

/// The registered upcall stack `[base, base + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpcallStack {
    pub base: u64,
    pub len: u64,
}

impl UpcallStack {
    fn top(&self) -> u64 {
        self.base.saturating_add(self.len)
    }

    /// Was code running on this stack at `rsp` (inside an upcall handler)?
    pub fn holds(&self, rsp: u64) -> bool {
        (self.base..=self.top()).contains(&rsp)
    }
}

/// Address of an upcall frame of `frame_size` bytes for a discontinuity
/// that interrupted code at `rsp`: 16-byte aligned, inside the stack.
pub fn place_frame(stack: UpcallStack, rsp: u64, frame_size: u64) -> Result<u64, PlaceError> {
    let below = if stack.holds(rsp) { rsp.checked_sub(NESTED_GAP) } else { Some(stack.top()) };
    let at = below.and_then(|b| b.checked_sub(frame_size)).ok_or(PlaceError::Exhausted)? & !15;
    if at < stack.base {
        return Err(PlaceError::Exhausted);
    }
    Ok(at)
}

/// Initial `rsp` of a protected-entry activation in an environment whose
/// own code was at `rsp`: as a call would leave it (16-byte aligned minus
/// 8), with at least [`ACTIVATION_MIN_STACK`] bytes above `stack_base`.
pub fn place_activation(stack: UpcallStack, rsp: u64) -> Result<u64, PlaceError> {
    let below = if stack.holds(rsp) { rsp.checked_sub(ACTIVATION_GAP) } else { Some(stack.top()) };
    let at = below.and_then(|b| (b & !15).checked_sub(8)).ok_or(PlaceError::Exhausted)?;
    if at < stack.base.saturating_add(ACTIVATION_MIN_STACK) {
        return Err(PlaceError::Exhausted);
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STACK: UpcallStack = UpcallStack { base: 0x10_0000, len: 0x4000 };
    const FRAME: u64 = 192;

    #[test]
    fn a_first_upcall_goes_at_the_top() {
        let at = place_frame(STACK, 0x7fff_0000, FRAME).unwrap();
        assert_eq!(at, 0x10_4000 - FRAME);
        assert_eq!(at % 16, 0);
    }

    #[test]
    fn a_nested_upcall_goes_below_the_interrupted_handler() {
        let rsp = 0x10_3e08;
        let at = place_frame(STACK, rsp, FRAME).unwrap();
        assert!(at + FRAME <= rsp - NESTED_GAP);
        assert_eq!(at % 16, 0);
        assert_eq!(at, (rsp - NESTED_GAP - FRAME) & !15);
    }

    #[test]
    fn an_exhausted_stack_is_refused() {
        assert_eq!(place_frame(STACK, STACK.base + 200, FRAME), Err(PlaceError::Exhausted));
        let tiny = UpcallStack { base: 0x1000, len: 100 };
        assert_eq!(place_frame(tiny, 0, FRAME), Err(PlaceError::Exhausted));
    }

    #[test]
    fn nothing_wraps_at_the_ends_of_the_address_space() {
        let low = UpcallStack { base: 0, len: 64 };
        assert_eq!(place_frame(low, 10, FRAME), Err(PlaceError::Exhausted));
        let high = UpcallStack { base: u64::MAX - 0x1000, len: u64::MAX };
        assert!(place_frame(high, 0, FRAME).is_ok_and(|at| at >= high.base));
    }

    #[test]
    fn an_activation_starts_like_a_call_with_room_left() {
        let at = place_activation(STACK, 0).unwrap();
        assert_eq!(at % 16, 8);
        assert_eq!(at, 0x10_4000 - 8);
        let nested = place_activation(STACK, 0x10_2000).unwrap();
        assert_eq!(nested, 0x10_2000 - ACTIVATION_GAP - 8);
        assert_eq!(place_activation(STACK, STACK.base + 600), Err(PlaceError::Exhausted));
    }
}
