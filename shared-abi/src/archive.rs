//! The boot archive: libOS programs and the boot manifest packed into one
//! blob that the bootloader hands the kernel as its ramdisk.
//!
//! Layout (all integers little endian):
//! ```text
//! 0   magic  "EXOARC01"
//! 8   count  u32, reserved u32
//! 16  count directory entries of 64 bytes: name [u8; 48] (NUL padded),
//!     offset u64 (from the archive start), len u64
//! ..  data, each file starting on a 16-byte boundary
//! ```

use alloc::vec::Vec;

/// First eight bytes of every archive.
pub const MAGIC: &[u8; 8] = b"EXOARC01";
/// Longest file name an entry can carry.
pub const NAME_LEN: usize = 48;
const HEADER_LEN: usize = 16;
const ENTRY_LEN: usize = NAME_LEN + 16;
/// Name of the boot manifest inside the archive.
pub const MANIFEST_NAME: &str = "manifest";

/// Why an archive could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveError {
    BadMagic,
    Truncated,
    BadEntry,
}

/// A read-only view of an archive in memory.
#[derive(Clone, Copy)]
pub struct Archive<'a> {
    bytes: &'a [u8],
    count: usize,
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

impl<'a> Archive<'a> {
    /// Check the header and every directory entry; nothing is trusted.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ArchiveError> {
        if bytes.len() < HEADER_LEN {
            return Err(ArchiveError::Truncated);
        }
        if &bytes[..8] != MAGIC {
            return Err(ArchiveError::BadMagic);
        }
        let count = read_u32(bytes, 8).ok_or(ArchiveError::Truncated)? as usize;
        let dir_end =
            count.checked_mul(ENTRY_LEN).and_then(|d| d.checked_add(HEADER_LEN)).ok_or(ArchiveError::Truncated)?;
        if dir_end > bytes.len() {
            return Err(ArchiveError::Truncated);
        }
        let archive = Archive { bytes, count };
        for index in 0..count {
            archive.entry(index).ok_or(ArchiveError::BadEntry)?;
        }
        Ok(archive)
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The `index`th file as (name, contents).
    pub fn entry(&self, index: usize) -> Option<(&'a str, &'a [u8])> {
        if index >= self.count {
            return None;
        }
        let at = HEADER_LEN + index * ENTRY_LEN;
        let raw_name = self.bytes.get(at..at + NAME_LEN)?;
        let name_len = raw_name.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
        let name = core::str::from_utf8(&raw_name[..name_len]).ok()?;
        let offset = usize::try_from(read_u64(self.bytes, at + NAME_LEN)?).ok()?;
        let len = usize::try_from(read_u64(self.bytes, at + NAME_LEN + 8)?).ok()?;
        let data = self.bytes.get(offset..offset.checked_add(len)?)?;
        Some((name, data))
    }

    /// Find a file by name.
    pub fn find(&self, name: &str) -> Option<&'a [u8]> {
        (0..self.count).filter_map(|i| self.entry(i)).find(|(n, _)| *n == name).map(|(_, data)| data)
    }

    /// Iterate over (name, contents).
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + '_ {
        (0..self.count).filter_map(move |i| self.entry(i))
    }
}

/// Pack named files into an archive (host side, used by xtask).
pub fn pack(files: &[(&str, &[u8])]) -> Result<Vec<u8>, ArchiveError> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(files.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    let mut offset = HEADER_LEN + files.len() * ENTRY_LEN;
    let mut placements = Vec::new();
    for (name, data) in files {
        if name.len() > NAME_LEN || name.as_bytes().contains(&0) {
            return Err(ArchiveError::BadEntry);
        }
        offset = (offset + 15) & !15;
        placements.push(offset);
        offset += data.len();
    }
    for ((name, data), place) in files.iter().zip(&placements) {
        let mut raw_name = [0u8; NAME_LEN];
        raw_name[..name.len()].copy_from_slice(name.as_bytes());
        out.extend_from_slice(&raw_name);
        out.extend_from_slice(&(*place as u64).to_le_bytes());
        out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    }
    for ((_, data), place) in files.iter().zip(&placements) {
        out.resize(*place, 0);
        out.extend_from_slice(data);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_then_parse() {
        let blob = pack(&[("manifest", b"log = info\n"), ("libos-unix", &[1, 2, 3])]).unwrap();
        let archive = Archive::parse(&blob).unwrap();
        assert_eq!(archive.len(), 2);
        assert_eq!(archive.find("manifest"), Some(&b"log = info\n"[..]));
        assert_eq!(archive.find("libos-unix"), Some(&[1u8, 2, 3][..]));
        assert_eq!(archive.find("nope"), None);
    }

    #[test]
    fn corrupt_archives_are_refused() {
        assert_eq!(Archive::parse(b"EXOARC0").err(), Some(ArchiveError::Truncated));
        assert_eq!(Archive::parse(b"XXXXXXXX\0\0\0\0\0\0\0\0").err(), Some(ArchiveError::BadMagic));
        let mut blob = pack(&[("a", b"hello")]).unwrap();
        // Point the entry's length past the end.
        let len_at = HEADER_LEN + NAME_LEN + 8;
        blob[len_at..len_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(Archive::parse(&blob).err(), Some(ArchiveError::BadEntry));
        let mut blob = pack(&[("a", b"hello")]).unwrap();
        blob[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Archive::parse(&blob).err(), Some(ArchiveError::Truncated));
    }
}
