//! libos-unix's file system: a tree of directories and files in memory,
//! seeded at boot from the boot archive, served to every process of the
//! libOS by init (so all see one consistent tree). Pure logic, host-tested;
//! `init.rs` serves it over protected control transfer.
//!
//! Files seeded from the archive are read from it until first written (a
//! program in `/bin` costs nothing until someone changes it). Open files
//! are shared descriptions (offset, mode) with a reference count, as Unix
//! has them: `dup` and fork share one; the last `close` ends it. A file
//! unlinked while open lives until its last close.

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

pub type Ino = u32;
/// The root directory.
pub const ROOT: Ino = 0;
/// Longest name in a directory.
pub const NAME_MAX: usize = 60;
/// Most inodes, open descriptions, and bytes of file data held.
pub const MAX_INODES: usize = 1024;
pub const MAX_OPEN: usize = 256;
pub const MAX_BYTES: usize = 8 * 1024 * 1024;

/// Open flags (Linux's values), as the protocol carries them.
pub use ulib::fsproto::flags;

/// Why an operation failed (each maps to one errno).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsError {
    NotFound,
    NotDir,
    IsDir,
    Exists,
    NotEmpty,
    BadHandle,
    Invalid,
    NoSpace,
    NameTooLong,
    Busy,
    Access,
}

impl FsError {
    /// The Unix error number.
    pub fn errno(self) -> i64 {
        match self {
            FsError::NotFound => 2,
            FsError::NotDir => 20,
            FsError::IsDir => 21,
            FsError::Exists => 17,
            FsError::NotEmpty => 39,
            FsError::BadHandle => 9,
            FsError::Invalid => 22,
            FsError::NoSpace => 28,
            FsError::NameTooLong => 36,
            FsError::Busy => 16,
            FsError::Access => 13,
        }
    }
}

pub type Result<T> = core::result::Result<T, FsError>;

/// Where seeded files' bytes come from (the boot archive).
pub trait Backing {
    /// Read up to `buf.len()` bytes at `offset`; how many were read.
    fn read(&self, offset: u64, buf: &mut [u8]) -> usize;
}

#[derive(Clone, Debug)]
enum Data {
    Bytes(Vec<u8>),
    /// Still the archive's bytes at `offset` (until first written).
    Archive {
        offset: u64,
        len: u64,
    },
}

#[derive(Clone, Debug)]
enum Node {
    File(Data),
    Dir(BTreeMap<String, Ino>),
}

#[derive(Clone, Debug)]
struct Inode {
    node: Node,
    /// Directory entries naming it.
    links: u32,
    /// Open descriptions of it.
    opens: u32,
    /// Bumped at every change (an `ls -l` "modified" stamp).
    version: u64,
}

/// What `stat` tells (the protocol's own record).
pub use ulib::fsproto::{Stat, KIND_DIR, KIND_FILE};

#[derive(Clone, Copy, Debug)]
struct Open {
    ino: Ino,
    offset: u64,
    flags: u64,
    refs: u32,
}

/// The file system.
pub struct Fs {
    inodes: Vec<Option<Inode>>,
    opens: Vec<Option<Open>>,
    /// Bytes of file data held in memory.
    bytes: usize,
    clock: u64,
}

impl Default for Fs {
    fn default() -> Self {
        Self::new()
    }
}

/// The parts of an absolute path (`.` dropped, `..` applied); `Invalid`
/// for a relative one.
pub fn components(path: &str) -> Result<Vec<&str>> {
    if !path.starts_with('/') {
        return Err(FsError::Invalid);
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name if name.len() > NAME_MAX => return Err(FsError::NameTooLong),
            name => parts.push(name),
        }
    }
    Ok(parts)
}

/// `dir` joined with `path` (which wins if absolute), normalised.
pub fn join(dir: &str, path: &str) -> String {
    let full = if path.starts_with('/') { path.to_string() } else { alloc::format!("{}/{}", dir, path) };
    ulib::fsproto::normalise(&full)
}

impl Fs {
    /// An empty tree: the root directory alone.
    pub fn new() -> Fs {
        let root = Inode { node: Node::Dir(BTreeMap::new()), links: 1, opens: 0, version: 0 };
        Fs { inodes: alloc::vec![Some(root)], opens: Vec::new(), bytes: 0, clock: 0 }
    }

    fn inode(&self, ino: Ino) -> Result<&Inode> {
        self.inodes.get(ino as usize).and_then(Option::as_ref).ok_or(FsError::NotFound)
    }

    fn inode_mut(&mut self, ino: Ino) -> Result<&mut Inode> {
        self.inodes.get_mut(ino as usize).and_then(Option::as_mut).ok_or(FsError::NotFound)
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn dir(&self, ino: Ino) -> Result<&BTreeMap<String, Ino>> {
        match &self.inode(ino)?.node {
            Node::Dir(entries) => Ok(entries),
            Node::File(_) => Err(FsError::NotDir),
        }
    }

    fn dir_mut(&mut self, ino: Ino) -> Result<&mut BTreeMap<String, Ino>> {
        match &mut self.inode_mut(ino)?.node {
            Node::Dir(entries) => Ok(entries),
            Node::File(_) => Err(FsError::NotDir),
        }
    }

    /// The inode an absolute path names.
    pub fn lookup(&self, path: &str) -> Result<Ino> {
        let mut ino = ROOT;
        for part in components(path)? {
            ino = *self.dir(ino)?.get(part).ok_or(FsError::NotFound)?;
        }
        Ok(ino)
    }

    /// The directory holding `path`'s last part, and that part.
    fn parent<'p>(&self, path: &'p str) -> Result<(Ino, &'p str)> {
        let mut parts = components(path)?;
        let name = parts.pop().ok_or(FsError::Invalid)?;
        let mut ino = ROOT;
        for part in parts {
            ino = *self.dir(ino)?.get(part).ok_or(FsError::NotFound)?;
        }
        self.dir(ino)?;
        Ok((ino, name))
    }

    fn alloc_inode(&mut self, node: Node) -> Result<Ino> {
        let version = self.tick();
        let inode = Inode { node, links: 1, opens: 0, version };
        if let Some(at) = self.inodes.iter().position(Option::is_none) {
            self.inodes[at] = Some(inode);
            return Ok(at as Ino);
        }
        if self.inodes.len() >= MAX_INODES {
            return Err(FsError::NoSpace);
        }
        self.inodes.push(Some(inode));
        Ok((self.inodes.len() - 1) as Ino)
    }

    /// Free `ino` if nothing names it and nothing has it open.
    fn maybe_free(&mut self, ino: Ino) {
        let Ok(inode) = self.inode(ino) else { return };
        if inode.links == 0 && inode.opens == 0 {
            if let Node::File(Data::Bytes(bytes)) = &inode.node {
                self.bytes -= bytes.len();
            }
            self.inodes[ino as usize] = None;
        }
    }

    /// Seed: a file whose bytes are the archive's at `offset`, creating
    /// the directories on its path.
    pub fn add_archive_file(&mut self, path: &str, offset: u64, len: u64) -> Result<Ino> {
        let parts = components(path)?;
        let (name, dirs) = parts.split_last().ok_or(FsError::Invalid)?;
        let mut ino = ROOT;
        for part in dirs {
            ino = match self.dir(ino)?.get(*part) {
                Some(&next) => next,
                None => {
                    let next = self.alloc_inode(Node::Dir(BTreeMap::new()))?;
                    self.dir_mut(ino)?.insert(part.to_string(), next);
                    next
                }
            };
        }
        let file = self.alloc_inode(Node::File(Data::Archive { offset, len }))?;
        self.dir_mut(ino)?.insert(name.to_string(), file);
        Ok(file)
    }

    pub fn mkdir(&mut self, path: &str) -> Result<()> {
        let (parent, name) = self.parent(path)?;
        if self.dir(parent)?.contains_key(name) {
            return Err(FsError::Exists);
        }
        let ino = self.alloc_inode(Node::Dir(BTreeMap::new()))?;
        let name = name.to_string();
        self.dir_mut(parent)?.insert(name, ino);
        Ok(())
    }

    pub fn rmdir(&mut self, path: &str) -> Result<()> {
        let (parent, name) = self.parent(path)?;
        let ino = *self.dir(parent)?.get(name).ok_or(FsError::NotFound)?;
        if !self.dir(ino)?.is_empty() {
            return Err(FsError::NotEmpty);
        }
        if self.inode(ino)?.opens > 0 {
            return Err(FsError::Busy);
        }
        self.dir_mut(parent)?.remove(name);
        self.inode_mut(ino)?.links = 0;
        self.maybe_free(ino);
        Ok(())
    }

    pub fn unlink(&mut self, path: &str) -> Result<()> {
        let (parent, name) = self.parent(path)?;
        let ino = *self.dir(parent)?.get(name).ok_or(FsError::NotFound)?;
        if let Node::Dir(_) = self.inode(ino)?.node {
            return Err(FsError::IsDir);
        }
        self.dir_mut(parent)?.remove(name);
        let inode = self.inode_mut(ino)?;
        inode.links -= 1;
        self.maybe_free(ino);
        Ok(())
    }

    /// `rename(from, to)`: `to` is replaced if it is a file (or an empty
    /// directory when `from` is one); a directory cannot move into itself.
    pub fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        let (from_dir, from_name) = self.parent(from)?;
        let ino = *self.dir(from_dir)?.get(from_name).ok_or(FsError::NotFound)?;
        let (to_dir, to_name) = self.parent(to)?;
        let moving_dir = matches!(self.inode(ino)?.node, Node::Dir(_));
        if moving_dir {
            let (from_parts, to_parts) = (components(from)?, components(to)?);
            if to_parts.len() > from_parts.len() && to_parts[..from_parts.len()] == from_parts[..] {
                return Err(FsError::Invalid);
            }
        }
        if let Some(&old) = self.dir(to_dir)?.get(to_name) {
            if old == ino {
                return Ok(());
            }
            match (&self.inode(old)?.node, moving_dir) {
                (Node::Dir(entries), true) if entries.is_empty() => {}
                (Node::Dir(_), true) => return Err(FsError::NotEmpty),
                (Node::Dir(_), false) => return Err(FsError::IsDir),
                (Node::File(_), true) => return Err(FsError::NotDir),
                (Node::File(_), false) => {}
            }
            self.dir_mut(to_dir)?.remove(to_name);
            self.inode_mut(old)?.links -= 1;
            self.maybe_free(old);
        }
        self.dir_mut(from_dir)?.remove(from_name);
        self.dir_mut(to_dir)?.insert(to_name.to_string(), ino);
        Ok(())
    }

    fn stat_of(&self, ino: Ino) -> Result<Stat> {
        let inode = self.inode(ino)?;
        let (kind, size) = match &inode.node {
            Node::Dir(entries) => (KIND_DIR, entries.len() as u64),
            Node::File(Data::Bytes(bytes)) => (KIND_FILE, bytes.len() as u64),
            Node::File(Data::Archive { len, .. }) => (KIND_FILE, *len),
        };
        Ok(Stat { ino: ino as u64, kind, size, links: inode.links as u64, version: inode.version })
    }

    pub fn stat(&self, path: &str) -> Result<Stat> {
        self.stat_of(self.lookup(path)?)
    }

    /// The names in a directory, with their kinds, in order.
    pub fn readdir(&self, path: &str) -> Result<Vec<(String, u64)>> {
        let dir = self.dir(self.lookup(path)?)?;
        dir.iter()
            .map(|(name, &ino)| {
                let kind = if matches!(self.inode(ino)?.node, Node::Dir(_)) { KIND_DIR } else { KIND_FILE };
                Ok((name.clone(), kind))
            })
            .collect()
    }

    // ----- open files -----

    /// Open `path` with `flags`; returns a handle to a new description.
    pub fn open(&mut self, path: &str, open_flags: u64) -> Result<u32> {
        use flags::*;
        let access = open_flags & O_ACCMODE;
        if access == 3 {
            return Err(FsError::Invalid);
        }
        let ino = match self.lookup(path) {
            Ok(_) if open_flags & O_CREAT != 0 && open_flags & O_EXCL != 0 => return Err(FsError::Exists),
            Ok(ino) => ino,
            Err(FsError::NotFound) if open_flags & O_CREAT != 0 => {
                let (parent, name) = self.parent(path)?;
                let ino = self.alloc_inode(Node::File(Data::Bytes(Vec::new())))?;
                let name = name.to_string();
                self.dir_mut(parent)?.insert(name, ino);
                ino
            }
            Err(error) => return Err(error),
        };
        let is_dir = matches!(self.inode(ino)?.node, Node::Dir(_));
        if is_dir && access != O_RDONLY {
            return Err(FsError::IsDir);
        }
        if !is_dir && open_flags & O_DIRECTORY != 0 {
            return Err(FsError::NotDir);
        }
        if open_flags & O_TRUNC != 0 && access != O_RDONLY {
            self.truncate(ino)?;
        }
        let slot = match self.opens.iter().position(Option::is_none) {
            Some(at) => at,
            None if self.opens.len() < MAX_OPEN => {
                self.opens.push(None);
                self.opens.len() - 1
            }
            None => return Err(FsError::NoSpace),
        };
        self.opens[slot] = Some(Open { ino, offset: 0, flags: open_flags, refs: 1 });
        self.inode_mut(ino)?.opens += 1;
        Ok(slot as u32)
    }

    fn truncate(&mut self, ino: Ino) -> Result<()> {
        let version = self.tick();
        let inode = self.inode_mut(ino)?;
        let freed = match &inode.node {
            Node::File(Data::Bytes(bytes)) => bytes.len(),
            _ => 0,
        };
        inode.node = Node::File(Data::Bytes(Vec::new()));
        inode.version = version;
        self.bytes -= freed;
        Ok(())
    }

    fn open_mut(&mut self, handle: u32) -> Result<&mut Open> {
        self.opens.get_mut(handle as usize).and_then(Option::as_mut).ok_or(FsError::BadHandle)
    }

    /// Another reference to the description (`dup`, fork).
    pub fn dup(&mut self, handle: u32) -> Result<()> {
        self.open_mut(handle)?.refs += 1;
        Ok(())
    }

    pub fn close(&mut self, handle: u32) -> Result<()> {
        let open = self.open_mut(handle)?;
        open.refs -= 1;
        if open.refs > 0 {
            return Ok(());
        }
        let ino = open.ino;
        self.opens[handle as usize] = None;
        self.inode_mut(ino)?.opens -= 1;
        self.maybe_free(ino);
        Ok(())
    }

    pub fn fstat(&mut self, handle: u32) -> Result<Stat> {
        let ino = self.open_mut(handle)?.ino;
        self.stat_of(ino)
    }

    /// Read at the description's offset into `buf`; how many bytes.
    pub fn read(&mut self, handle: u32, buf: &mut [u8], backing: &dyn Backing) -> Result<usize> {
        let open = *self.open_mut(handle)?;
        if open.flags & flags::O_ACCMODE == flags::O_WRONLY {
            return Err(FsError::BadHandle);
        }
        let count = match &self.inode(open.ino)?.node {
            Node::Dir(_) => return Err(FsError::IsDir),
            Node::File(Data::Bytes(bytes)) => {
                let start = (open.offset as usize).min(bytes.len());
                let count = buf.len().min(bytes.len() - start);
                buf[..count].copy_from_slice(&bytes[start..start + count]);
                count
            }
            Node::File(Data::Archive { offset, len }) => {
                let start = open.offset.min(*len);
                let count = (buf.len() as u64).min(len - start) as usize;
                backing.read(offset + start, &mut buf[..count])
            }
        };
        self.open_mut(handle)?.offset += count as u64;
        Ok(count)
    }

    /// Write `data` at the description's offset (at the end with
    /// `O_APPEND`); how many bytes.
    pub fn write(&mut self, handle: u32, data: &[u8], backing: &dyn Backing) -> Result<usize> {
        let open = *self.open_mut(handle)?;
        if open.flags & flags::O_ACCMODE == flags::O_RDONLY {
            return Err(FsError::BadHandle);
        }
        let version = self.tick();
        let held = self.bytes;
        let inode = self.inode_mut(open.ino)?;
        if let Node::File(Data::Archive { offset, len }) = inode.node {
            // First write to a seeded file: its bytes come over from the archive.
            let mut bytes = alloc::vec![0u8; len as usize];
            let got = backing.read(offset, &mut bytes);
            bytes.truncate(got);
            if held + bytes.len() > MAX_BYTES {
                return Err(FsError::NoSpace);
            }
            let seeded = bytes.len();
            inode.node = Node::File(Data::Bytes(bytes));
            self.bytes += seeded;
        }
        let held = self.bytes;
        let inode = self.inode_mut(open.ino)?;
        let Node::File(Data::Bytes(bytes)) = &mut inode.node else { return Err(FsError::IsDir) };
        let start = if open.flags & flags::O_APPEND != 0 { bytes.len() } else { open.offset as usize };
        let end = start.checked_add(data.len()).ok_or(FsError::Invalid)?;
        let before = bytes.len();
        let grown = end.saturating_sub(before);
        if held + grown > MAX_BYTES {
            return Err(FsError::NoSpace);
        }
        if end > before {
            bytes.resize(end, 0);
        }
        bytes[start..end].copy_from_slice(data);
        let after = bytes.len();
        inode.version = version;
        self.bytes = self.bytes + after - before;
        self.open_mut(handle)?.offset = end as u64;
        Ok(data.len())
    }

    /// `lseek(handle, offset, whence)`: 0 set, 1 current, 2 end.
    pub fn seek(&mut self, handle: u32, offset: i64, whence: u64) -> Result<u64> {
        let open = *self.open_mut(handle)?;
        let size = self.stat_of(open.ino)?.size as i64;
        let base = match whence {
            0 => 0,
            1 => open.offset as i64,
            2 => size,
            _ => return Err(FsError::Invalid),
        };
        let target = base.checked_add(offset).filter(|&t| t >= 0).ok_or(FsError::Invalid)?;
        self.open_mut(handle)?.offset = target as u64;
        Ok(target as u64)
    }

    /// Bytes of file data held in memory (not counting seeded files).
    pub fn bytes_held(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::flags::*;
    use super::*;

    struct Text(&'static [u8]);
    impl Backing for Text {
        fn read(&self, offset: u64, buf: &mut [u8]) -> usize {
            let start = (offset as usize).min(self.0.len());
            let count = buf.len().min(self.0.len() - start);
            buf[..count].copy_from_slice(&self.0[start..start + count]);
            count
        }
    }

    const ARCHIVE: Text = Text(b"....hello world\n");

    fn read_all(fs: &mut Fs, path: &str) -> Vec<u8> {
        let h = fs.open(path, O_RDONLY).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 5];
        loop {
            let n = fs.read(h, &mut buf, &ARCHIVE).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        fs.close(h).unwrap();
        out
    }

    #[test]
    fn paths_normalise() {
        assert_eq!(join("/home", "a/../b/./c"), "/home/b/c");
        assert_eq!(join("/home", "/etc"), "/etc");
        assert_eq!(join("/", ".."), "/");
        assert_eq!(components("relative"), Err(FsError::Invalid));
    }

    #[test]
    fn seeded_files_read_from_the_archive_until_written() {
        let mut fs = Fs::new();
        fs.add_archive_file("/etc/motd", 4, 12).unwrap();
        assert_eq!(read_all(&mut fs, "/etc/motd"), b"hello world\n");
        assert_eq!(fs.bytes_held(), 0);
        let h = fs.open("/etc/motd", O_WRONLY | O_APPEND).unwrap();
        fs.write(h, b"more\n", &ARCHIVE).unwrap();
        fs.close(h).unwrap();
        assert_eq!(read_all(&mut fs, "/etc/motd"), b"hello world\nmore\n");
        assert_eq!(fs.bytes_held(), 17);
        assert_eq!(fs.stat("/etc").unwrap().kind, KIND_DIR);
    }

    #[test]
    fn create_truncate_seek_and_errors() {
        let mut fs = Fs::new();
        fs.mkdir("/home").unwrap();
        assert_eq!(fs.mkdir("/home"), Err(FsError::Exists));
        assert_eq!(fs.open("/home/x", O_RDONLY), Err(FsError::NotFound));
        assert_eq!(fs.open("/nodir/x", O_CREAT | O_WRONLY), Err(FsError::NotFound));
        let h = fs.open("/home/x", O_CREAT | O_RDWR).unwrap();
        fs.write(h, b"abcdef", &ARCHIVE).unwrap();
        assert_eq!(fs.seek(h, 2, 0).unwrap(), 2);
        fs.write(h, b"ZZ", &ARCHIVE).unwrap();
        assert_eq!(fs.seek(h, -1, 0), Err(FsError::Invalid));
        fs.close(h).unwrap();
        assert_eq!(fs.close(h), Err(FsError::BadHandle));
        assert_eq!(read_all(&mut fs, "/home/x"), b"abZZef");
        let h = fs.open("/home/x", O_WRONLY | O_TRUNC).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(fs.read(h, &mut buf, &ARCHIVE), Err(FsError::BadHandle), "write-only");
        fs.close(h).unwrap();
        assert_eq!(fs.stat("/home/x").unwrap().size, 0);
        assert_eq!(fs.open("/home", O_WRONLY), Err(FsError::IsDir));
        assert_eq!(fs.open("/home/x", O_CREAT | O_EXCL | O_WRONLY), Err(FsError::Exists));
        assert_eq!(fs.open("/home/x/y", O_RDONLY), Err(FsError::NotDir));
    }

    #[test]
    fn unlink_rename_rmdir_and_open_unlinked_files() {
        let mut fs = Fs::new();
        fs.mkdir("/d").unwrap();
        let h = fs.open("/d/f", O_CREAT | O_RDWR).unwrap();
        fs.write(h, b"data", &ARCHIVE).unwrap();
        assert_eq!(fs.rmdir("/d"), Err(FsError::NotEmpty));
        fs.unlink("/d/f").unwrap();
        assert_eq!(fs.stat("/d/f"), Err(FsError::NotFound));
        // Still readable through the open description.
        fs.seek(h, 0, 0).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(fs.read(h, &mut buf, &ARCHIVE).unwrap(), 4);
        fs.close(h).unwrap();
        assert_eq!(fs.bytes_held(), 0, "freed at the last close");
        fs.rmdir("/d").unwrap();
        fs.mkdir("/a").unwrap();
        let h = fs.open("/a/one", O_CREAT | O_WRONLY).unwrap();
        fs.close(h).unwrap();
        fs.rename("/a/one", "/a/two").unwrap();
        assert!(fs.stat("/a/two").is_ok() && fs.stat("/a/one").is_err());
        assert_eq!(fs.rename("/a", "/a/inside"), Err(FsError::Invalid));
        assert_eq!(fs.unlink("/a"), Err(FsError::IsDir));
        let names: Vec<String> = fs.readdir("/").unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a"]);
    }

    #[test]
    fn descriptions_are_shared_by_dup() {
        let mut fs = Fs::new();
        let h = fs.open("/f", O_CREAT | O_WRONLY).unwrap();
        fs.dup(h).unwrap();
        fs.write(h, b"ab", &ARCHIVE).unwrap();
        fs.close(h).unwrap();
        fs.write(h, b"cd", &ARCHIVE).unwrap();
        fs.close(h).unwrap();
        assert_eq!(read_all(&mut fs, "/f"), b"abcd");
    }
}
