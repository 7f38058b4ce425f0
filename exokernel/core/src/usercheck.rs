//! Checks on user-supplied addresses that need no page tables: range,
//! overflow, alignment. The kernel's typed user-memory wrapper runs these
//! first, then walks the environment's page tables for each page.

use shared_abi::syscall::Error;
use shared_abi::USER_TOP;

/// Largest buffer one system call may pass (bounds kernel work per call).
pub const MAX_USER_LEN: u64 = 1 << 20;

/// Check that `[addr, addr + len)` is a non-null, non-wrapping range in the
/// user half, aligned to `align` (a power of two), at most [`MAX_USER_LEN`].
pub fn check_user_range(addr: u64, len: u64, align: u64) -> Result<(), Error> {
    if addr == 0 {
        return Err(Error::BadAddress);
    }
    if len > MAX_USER_LEN {
        return Err(Error::BadLength);
    }
    if align > 1 && !addr.is_multiple_of(align) {
        return Err(Error::Misaligned);
    }
    let end = addr.checked_add(len).ok_or(Error::BadAddress)?;
    if end > USER_TOP {
        return Err(Error::BadAddress);
    }
    Ok(())
}

/// Check a code address the kernel will make the libOS jump to.
pub fn check_user_entry(addr: u64) -> Result<(), Error> {
    if addr == 0 || addr >= USER_TOP {
        return Err(Error::BadAddress);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(check_user_range(0x1000, 16, 8), Ok(()));
        assert_eq!(check_user_range(0, 16, 1), Err(Error::BadAddress));
        assert_eq!(check_user_range(0x1001, 16, 8), Err(Error::Misaligned));
        assert_eq!(check_user_range(u64::MAX - 4, 16, 1), Err(Error::BadAddress));
        assert_eq!(check_user_range(USER_TOP - 8, 16, 1), Err(Error::BadAddress));
        assert_eq!(check_user_range(0xffff_8000_0000_0000, 8, 1), Err(Error::BadAddress));
        assert_eq!(check_user_range(0x1000, u64::MAX, 1), Err(Error::BadLength));
        assert_eq!(check_user_range(0x1000, (-1i64) as u64, 1), Err(Error::BadLength));
        assert_eq!(check_user_range(USER_TOP - 8, 8, 8), Ok(()));
        assert_eq!(check_user_entry(0x40_0000), Ok(()));
        assert_eq!(check_user_entry(USER_TOP), Err(Error::BadAddress));
        assert_eq!(check_user_entry(0), Err(Error::BadAddress));
    }
}
