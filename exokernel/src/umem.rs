//! User memory is an allegation until checked: typed wrappers that
//! validate range, alignment and the environment's own page-table entries
//! before the kernel reads or writes a byte of it.

use crate::arch::paging::{AddressSpace, Flags};
use kcore::usercheck::check_user_range;
use shared_abi::syscall::Error;

/// A checked range of an environment's memory.
pub struct UserSlice<'a> {
    space: &'a AddressSpace,
    addr: u64,
    len: u64,
}

impl<'a> UserSlice<'a> {
    /// Check range and alignment; the pages are checked on access.
    pub fn new(space: &'a AddressSpace, addr: u64, len: u64, align: u64) -> Result<Self, Error> {
        check_user_range(addr, len, align)?;
        Ok(UserSlice { space, addr, len })
    }

    /// Check every page is readable, then copy it all into `out` (same length).
    pub fn read(&self, out: &mut [u8]) -> Result<(), Error> {
        debug_assert_eq!(out.len() as u64, self.len);
        self.space.read_user(self.addr, out, Flags::empty()).map_err(|()| Error::BadAddress)
    }

    /// Check every page is writable, then copy `bytes` (same length) in.
    pub fn write(&self, bytes: &[u8]) -> Result<(), Error> {
        debug_assert_eq!(bytes.len() as u64, self.len);
        self.space.write_user(self.addr, bytes, Flags::WRITABLE).map_err(|()| Error::BadAddress)
    }
}

/// Read a plain-old-data value (`repr(C)`, every bit pattern valid) from
/// user memory.
pub fn read_value<T: Pod>(space: &AddressSpace, addr: u64) -> Result<T, Error> {
    let slice = UserSlice::new(space, addr, core::mem::size_of::<T>() as u64, core::mem::align_of::<T>() as u64)?;
    let mut value = T::zeroed();
    slice.read(value.as_bytes_mut())?;
    Ok(value)
}

/// Write a plain-old-data value to user memory.
pub fn write_value<T: Pod>(space: &AddressSpace, addr: u64, value: &T) -> Result<(), Error> {
    let slice = UserSlice::new(space, addr, core::mem::size_of::<T>() as u64, core::mem::align_of::<T>() as u64)?;
    // Within one page (the common case): one walk and one typed store.
    if space.write_user_value(addr, value, Flags::WRITABLE).is_ok() {
        return Ok(());
    }
    slice.write(value.as_bytes())
}

pub use crate::arch::pod::Pod;
