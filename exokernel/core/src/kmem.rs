//! Kernel memory a libOS can cause the kernel to allocate, bounded and
//! charged to it (seL4's lesson: the kernel never allocates on a user's
//! behalf from a pool nobody pays for).
//!
//! Every kernel object a system call creates on the heap is charged to one
//! environment's kernel-memory budget (`kmem_kib` in the manifest), at a
//! fixed cost per object that covers the object and its share of the
//! container holding it:
//!
//! * a grant-table entry (each key minted by `frame_alloc` or
//!   `frame_share`), paid by the environment that minted it;
//! * a reverse-map entry (each live mapping made with `map`, whether it is
//!   in a TLB slot, only in the software TLB, or both);
//! * an installed packet filter (its verified atoms and trie nodes).
//!
//! A call that would take an environment past its budget fails with
//! `NoMemory` and changes nothing. The kernel checks at boot that the
//! budgets of all environments fit in its heap, so no environment can
//! exhaust the heap for another. Page-table frames are not kernel heap:
//! they are charged to the environment's frame quota (see `vm`). Queued
//! messages and owed upcalls have fixed per-environment bounds
//! (`PCT_QUEUE_MAX`, the pending-upcall queue) and are paid at creation.

use shared_abi::syscall::Error;

/// Bytes charged per grant-table entry: the 72-byte slot, the frame
/// record's index to it, and the slack of the vectors that hold them.
pub const GRANT_BYTES: u64 = 128;
/// Bytes charged per reverse-map entry (its share of a hash-map slot and
/// of a frame's mapping list).
pub const MAPPING_BYTES: u64 = 64;
/// Bytes charged per installed filter: up to 32 verified atoms and the
/// trie nodes (144 bytes each, with a node's cached answer and compiled
/// chain) and branch-table entries they add, about 6 KiB at worst.
pub const FILTER_BYTES: u64 = 8192;

/// The kernel objects an environment pays for, counted where they live
/// (the grant table, the reverse map, the demultiplexer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KmemUse {
    pub grants: u64,
    pub mappings: u64,
    pub filters: u64,
    /// Bytes of fixed records: an environment created at run time pays for
    /// its own record (see [`env_record_bytes`]).
    pub records: u64,
}

/// Bytes charged to an environment created at run time for its own kernel
/// records: the environment, CPU and memory records, its TLB-slot table
/// and its software TLB (`stlb_entries` entries), and the bounded queues
/// every environment has.
pub const fn env_record_bytes(tlb_slots: u64, stlb_entries: u64) -> u64 {
    const BASE: u64 = 4096;
    const PER_SLOT: u64 = 64;
    BASE + tlb_slots * PER_SLOT + stlb_entries * PER_STLB_ENTRY
}

/// Bytes charged per software-TLB entry of an environment created at run
/// time: the entry and its tag word (the kernel checks at compile time
/// that they fit).
pub const PER_STLB_ENTRY: u64 = 48;

/// One more object of a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KmemObject {
    Grant,
    Mapping,
    Filter,
}

impl KmemObject {
    /// Its charge in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            KmemObject::Grant => GRANT_BYTES,
            KmemObject::Mapping => MAPPING_BYTES,
            KmemObject::Filter => FILTER_BYTES,
        }
    }
}

impl KmemUse {
    /// Bytes charged for these objects.
    pub const fn bytes(&self) -> u64 {
        self.grants * GRANT_BYTES + self.mappings * MAPPING_BYTES + self.filters * FILTER_BYTES + self.records
    }

    /// May one more `object` be created within `limit` bytes?
    pub const fn has_room(&self, limit: u64, object: KmemObject) -> bool {
        self.bytes() + object.bytes() <= limit
    }

    /// As [`has_room`](KmemUse::has_room), as the system calls answer:
    /// `NoMemory` when the budget is spent.
    pub fn room_for(&self, limit: u64, object: KmemObject) -> Result<(), Error> {
        if self.has_room(limit, object) {
            Ok(())
        } else {
            Err(Error::NoMemory)
        }
    }

    /// These objects and `other`'s together (charges held in two places).
    pub const fn plus(self, other: KmemUse) -> KmemUse {
        KmemUse {
            grants: self.grants + other.grants,
            mappings: self.mappings + other.mappings,
            filters: self.filters + other.filters,
            records: self.records + other.records,
        }
    }
}

/// Do the budgets (bytes) fit in `heap_free` bytes of kernel heap, leaving
/// half of it for fragmentation and the kernel's own growth?
pub fn budgets_fit(budgets: impl IntoIterator<Item = u64>, heap_free: u64) -> bool {
    let total: u64 = budgets.into_iter().fold(0u64, |sum, b| sum.saturating_add(b));
    total <= heap_free / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_add_up() {
        let used = KmemUse { grants: 2, mappings: 3, filters: 1, records: 0 };
        assert_eq!(used.bytes(), 2 * 128 + 3 * 64 + 8192);
    }

    #[test]
    fn room_is_checked_before_the_object_exists() {
        let limit = 16 * 1024;
        let mut used = KmemUse::default();
        let mut made = 0;
        while used.has_room(limit, KmemObject::Grant) {
            used.grants += 1;
            made += 1;
        }
        assert_eq!(made, 16 * 1024 / GRANT_BYTES);
        assert!(used.bytes() <= limit);
        assert!(!used.has_room(limit, KmemObject::Mapping));
        used.grants -= 1;
        assert!(used.has_room(limit, KmemObject::Mapping));
        assert!(!used.has_room(limit, KmemObject::Filter));
        assert_eq!(used.room_for(limit, KmemObject::Filter), Err(Error::NoMemory));
        assert_eq!(used.room_for(limit, KmemObject::Mapping), Ok(()));
    }

    #[test]
    fn charges_held_in_two_places_add_up() {
        let memory = KmemUse { grants: 3, mappings: 5, filters: 0, records: 100 };
        let net = KmemUse { filters: 2, ..KmemUse::default() };
        assert_eq!(memory.plus(net), KmemUse { grants: 3, mappings: 5, filters: 2, records: 100 });
        assert_eq!(memory.plus(net).bytes(), memory.bytes() + net.bytes());
    }

    #[test]
    fn budgets_must_fit_in_half_the_heap() {
        assert!(budgets_fit([256 * 1024; 4], 2 * 1024 * 1024));
        assert!(!budgets_fit([256 * 1024; 5], 2 * 1024 * 1024));
        assert!(!budgets_fit([u64::MAX, 1], u64::MAX), "no overflow");
    }
}
