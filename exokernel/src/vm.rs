//! The memory subsystem: virtual memory as secure bindings. It owns every
//! environment's address space, the grant table of frame keys, the pool,
//! TLB slots and software TLBs, guaranteed mappings, the reverse map, and
//! the revocation state; the kernel calls it with the environment index a
//! call concerns and whatever else it needs (the kernel-memory charges held
//! in other subsystems, the time).
//!
//! Revocation policy (the kernel's only memory policy, decided in
//! `kcore::revoke`): a libOS may hold its `quota_kib` of pool frames for
//! sure and may borrow more while the pool has them. When the pool is empty
//! and a libOS *within* its quota asks for a frame, the kernel asks the
//! libOS furthest over its quota to give back up to `REVOKE_BATCH` frames (a
//! revocation upcall with a deadline) and tells the asker `Again`. A libOS
//! that has not given them back by the deadline loses them by force (the
//! abort protocol): the kernel takes its most recently allocated frames,
//! removes every mapping of them, records them in its repossession vector
//! and tells it.

use crate::arch::memory;
use crate::arch::paging::{self, AddressSpace, Flags, MapError, PteRef};
use crate::counters::{bump, COUNTERS};
use crate::umem::{self, Pod};
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use kcore::keys::{EnvId, FrameInfo as KeyInfo, FrameTable, Freed};
use kcore::kmem::{KmemObject, KmemUse};
use kcore::revoke::{self, Holding};
use kcore::rmap::ReverseMap;
use kcore::slots::{Slot, SlotError, SlotSet};
use kcore::stlb::{page_number, Stlb, StlbEntry};
use shared_abi::manifest::TlbPolicy;
use shared_abi::start::{
    RepossessionVector, DYNAMIC_BASE, DYNAMIC_END, PROGRAM_BASE, REPOSSESSION_ADDR, REPOSSESSION_SLOTS,
};
use shared_abi::syscall::{map_bits, map_flags, EnvInfo, Error, FrameInfo, FrameKey, Rights};
use shared_abi::upcall::{UpcallKind, REVOKE_ABORTED, REVOKE_REQUEST};

/// Entries of each environment's software TLB (Aegis used 4096).
pub const STLB_ENTRIES: usize = 4096;
/// Entries of the software TLB of an environment created at run time
/// (paid from its kernel-memory budget, so smaller).
pub const RUN_TIME_STLB_ENTRIES: usize = 256;
// What a run-time environment pays per software-TLB entry covers the entry
// and the tag word the page-fault stub reads.
const _: () = assert!(
    core::mem::size_of::<Option<kcore::stlb::StlbEntry<paging::PteRef>>>() + core::mem::size_of::<u64>()
        <= kcore::kmem::PER_STLB_ENTRY as usize
);
/// Largest `env_write` in one call.
pub const MAX_ENV_WRITE: u64 = 64 * 1024;
/// Most guaranteed mappings an environment may hold through `map`.
pub const GUARANTEED_MAX: usize = 1024;

fn from_slot_error(error: SlotError) -> Error {
    match error {
        SlotError::NoSlots | SlotError::TooManyGuaranteed => Error::NoSlots,
        SlotError::NotMapped => Error::InvalidArgument,
    }
}

/// An upcall the kernel owes an environment, delivered when it next runs.
#[derive(Clone, Copy, Debug)]
pub struct PendingUpcall {
    pub kind: UpcallKind,
    pub vector: u64,
    pub fault_addr: u64,
    pub error_code: u64,
}

/// Upcalls owed to an environment, oldest first (a revocation request must
/// not hide an earlier abort notice). Bounded: the oldest is dropped if a
/// libOS without handlers lets them pile up.
#[derive(Default)]
pub struct PendingUpcalls(VecDeque<PendingUpcall>);

impl PendingUpcalls {
    const MAX: usize = 8;

    pub fn push(&mut self, upcall: PendingUpcall) {
        if self.0.len() == Self::MAX {
            self.0.pop_front();
        }
        self.0.push_back(upcall);
    }

    /// The oldest owed upcall.
    pub fn take(&mut self) -> Option<PendingUpcall> {
        self.0.pop_front()
    }
}

/// One environment's memory bindings.
struct EnvMemory {
    /// Its id, as keys name it.
    id: EnvId,
    /// None once it ended and everything was reclaimed.
    space: Option<AddressSpace>,
    slots: SlotSet,
    stlb: Stlb<PteRef>,
    quota_frames: u64,
    /// Pool frames it owns (frame numbers), oldest first.
    held: Vec<u64>,
    /// Frames still owed to an open repossession request, and its deadline.
    owed: u64,
    deadline_tsc: u64,
    pending: PendingUpcalls,
    /// PCID policy: its tagged TLB entries may be stale (flush on next load).
    needs_flush: bool,
    /// Page-table frames the kernel built for its `map` calls: pool frames
    /// charged to it like the ones it holds under keys, freed when it ends.
    page_table_frames: u64,
    /// Its kernel-memory budget in bytes (see `kcore::kmem`).
    kmem_limit: u64,
    /// Created at run time: its whole user half (above `PROGRAM_BASE`) is
    /// built from keyed frames, and it never borrows beyond its quota.
    run_time: bool,
    /// Bytes of its own kernel records it pays for (run-time envs only).
    record_bytes: u64,
}

impl EnvMemory {
    /// Pool frames charged to it: frames held under keys and page tables.
    fn charged_frames(&self) -> u64 {
        self.held.len() as u64 + self.page_table_frames
    }

    /// A fresh record: nothing held or owed yet.
    fn new(id: EnvId, space: Option<AddressSpace>, slots: SlotSet, stlb_entries: usize, quota: u64, kmem: u64) -> Self {
        EnvMemory {
            id,
            space,
            slots,
            stlb: Stlb::new(stlb_entries),
            quota_frames: quota,
            held: Vec::new(),
            owed: 0,
            deadline_tsc: 0,
            pending: PendingUpcalls::default(),
            needs_flush: false,
            page_table_frames: 0,
            kmem_limit: kmem,
            run_time: false,
            record_bytes: 0,
        }
    }

    /// An ended environment's record: nothing held, nothing allocated.
    fn ended(id: EnvId) -> Self {
        EnvMemory::new(id, None, SlotSet::new(0, 0), 1, 0, 0)
    }
}

/// What must be empty when every environment has ended.
pub struct Leftovers {
    pub live_keys: usize,
    pub rmap_entries: usize,
    pub pool_used: u64,
}

/// The memory subsystem.
pub struct Memory {
    table: FrameTable,
    /// Frames libOSes may hold through `frame_alloc` (and page tables), and
    /// how many they do.
    pool_frames: u64,
    pool_used: u64,
    /// The policy in force (PCID falls back to flush where the CPU lacks it).
    policy: TlbPolicy,
    revoke_deadline_tsc: u64,
    /// Every (frame, environment, page) mapped with `map`: an entry exists
    /// exactly while the page is in the environment's slots or software TLB
    /// naming the frame.
    rmap: ReverseMap,
    /// By environment index.
    envs: Vec<EnvMemory>,
    /// The boot address space (kernel half only, once envs run), and the
    /// root of the address space loaded in CR3.
    kernel_space: AddressSpace,
    loaded_root: u64,
    /// The manifest allows `key_bench`.
    benchmarks: bool,
}

fn page_flags(writable: bool) -> Flags {
    let mut flags = Flags::PRESENT | Flags::USER_ACCESSIBLE | Flags::NO_EXECUTE;
    if writable {
        flags |= Flags::WRITABLE;
    }
    flags
}

/// How a mapping is installed: writable, guaranteed, executable (never
/// both writable and executable; executable ones are guaranteed, so the
/// software TLB, which refills data mappings, never holds one).
#[derive(Clone, Copy)]
struct Mode {
    writable: bool,
    guaranteed: bool,
    exec: bool,
}

impl Mode {
    fn data(writable: bool, guaranteed: bool) -> Mode {
        Mode { writable, guaranteed, exec: false }
    }

    fn flags(self) -> Flags {
        let flags = page_flags(self.writable);
        if self.exec {
            flags - Flags::NO_EXECUTE
        } else {
            flags
        }
    }
}

/// Fold boot-time entropy into the 256-bit key-minting secret.
pub fn derive_secret(seed: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(seed).into()
}

/// Is `va` a page of the window libOSes booted from the manifest map into?
pub fn in_dynamic_window(va: u64) -> bool {
    (DYNAMIC_BASE..DYNAMIC_END).contains(&va)
}

/// Is `va` a page of the window an environment created at run time (and
/// its parent) maps into: its whole user half above `PROGRAM_BASE`?
pub fn in_run_time_window(va: u64) -> bool {
    (PROGRAM_BASE..shared_abi::USER_TOP).contains(&va)
}

/// What `env_create` asks of the memory subsystem for a child.
pub struct ChildMemory {
    pub quota_frames: u64,
    pub kmem_limit: u64,
    pub tlb_slots: u64,
}

impl Memory {
    /// The subsystem at boot, before any environment exists.
    pub fn new(
        secret: [u8; 32],
        pool_frames: u64,
        policy: TlbPolicy,
        revoke_deadline_tsc: u64,
        kernel_space: AddressSpace,
        benchmarks: bool,
    ) -> Memory {
        let table = FrameTable::new(secret);
        // A hash seed drawn from the key stream, never the secret itself.
        let rmap = ReverseMap::with_seed(table.hash_seed().rotate_left(32));
        Memory {
            table,
            pool_frames,
            pool_used: 0,
            policy,
            revoke_deadline_tsc,
            rmap,
            envs: Vec::new(),
            loaded_root: kernel_space.root(),
            kernel_space,
            benchmarks,
        }
    }

    /// The kernel's own address space (to build environments' from).
    pub fn kernel_space(&self) -> &AddressSpace {
        &self.kernel_space
    }

    /// Record environment `id`'s memory (its address space, if it was
    /// built); returns its index, which must match the kernel's.
    pub fn add_env(
        &mut self,
        id: EnvId,
        space: Option<AddressSpace>,
        quota_frames: u64,
        tlb_slots: u64,
        kmem_limit: u64,
    ) -> usize {
        let record = match space {
            Some(space) => EnvMemory::new(
                id,
                Some(space),
                SlotSet::new(tlb_slots as usize, GUARANTEED_MAX),
                STLB_ENTRIES,
                quota_frames,
                kmem_limit,
            ),
            None => EnvMemory::ended(id),
        };
        self.envs.push(record);
        self.envs.len() - 1
    }

    /// Record a child created at run time at `index` (a fresh index, or
    /// one whose environment ended and was reclaimed): an address space
    /// holding only the kernel half, a small software TLB, and the quota
    /// and budget carved from its parent (`carve`). `NoMemory` if the
    /// kernel cannot build the address space.
    pub fn add_child(&mut self, index: usize, id: EnvId, child: &ChildMemory) -> Result<(), Error> {
        let space = AddressSpace::new(&self.kernel_space, &mut memory::alloc_frame).ok_or(Error::NoMemory)?;
        let mut record = EnvMemory::new(
            id,
            Some(space),
            SlotSet::new(child.tlb_slots as usize, GUARANTEED_MAX),
            RUN_TIME_STLB_ENTRIES,
            child.quota_frames,
            child.kmem_limit,
        );
        record.run_time = true;
        // Its PCID may have tagged an ended environment's entries: flush
        // them at its first load.
        record.needs_flush = true;
        record.record_bytes = kcore::kmem::env_record_bytes(child.tlb_slots, RUN_TIME_STLB_ENTRIES as u64);
        if index == self.envs.len() {
            self.envs.push(record);
        } else {
            debug_assert!(self.envs[index].space.is_none(), "only an ended env's index is reused");
            self.envs[index] = record;
        }
        Ok(())
    }

    /// Take a child's quota and kernel-memory budget out of env `index`'s:
    /// it must have them to spare (frames it may hold but does not, and
    /// budget it has not used, counting `used` from other subsystems and
    /// the child's own records, which the child pays).
    pub fn carve(&mut self, index: usize, child: &ChildMemory, used: KmemUse) -> Result<(), Error> {
        let mem = &self.envs[index];
        if mem.quota_frames.saturating_sub(mem.charged_frames()) < child.quota_frames {
            return Err(Error::QuotaExceeded);
        }
        let records = kcore::kmem::env_record_bytes(child.tlb_slots, RUN_TIME_STLB_ENTRIES as u64);
        if child.kmem_limit < records + kcore::kmem::GRANT_BYTES {
            return Err(Error::InvalidArgument);
        }
        if self.kmem_charges(index).plus(used).bytes() + child.kmem_limit > mem.kmem_limit {
            return Err(Error::NoMemory);
        }
        let mem = &mut self.envs[index];
        mem.quota_frames -= child.quota_frames;
        mem.kmem_limit -= child.kmem_limit;
        Ok(())
    }

    /// A child of env `index` ended: its quota and budget come back.
    pub fn give_back(&mut self, index: usize, quota_frames: u64, kmem_limit: u64) {
        let mem = &mut self.envs[index];
        if mem.space.is_some() {
            mem.quota_frames += quota_frames;
            mem.kmem_limit += kmem_limit;
        }
    }

    /// Env `index`'s quota and budget (to give back when it ends).
    pub fn resources(&self, index: usize) -> (u64, u64) {
        (self.envs[index].quota_frames, self.envs[index].kmem_limit)
    }

    /// May env `index` map at `va`? Manifest envs: the dynamic window;
    /// run-time envs: their whole user half above `PROGRAM_BASE`.
    fn in_window(&self, index: usize, va: u64) -> bool {
        if self.envs[index].run_time {
            in_run_time_window(va)
        } else {
            in_dynamic_window(va)
        }
    }

    /// Is env `index` one created at run time?
    pub fn is_run_time(&self, index: usize) -> bool {
        self.envs[index].run_time
    }

    /// Env `index`'s address space (None once it ended).
    pub fn space(&self, index: usize) -> Option<&AddressSpace> {
        self.envs.get(index)?.space.as_ref()
    }

    fn space_of(&self, index: usize) -> Result<&AddressSpace, Error> {
        self.space(index).ok_or(Error::NoSuchEnv)
    }

    fn alive(&self, index: usize) -> bool {
        self.envs[index].space.is_some()
    }

    fn is_loaded(&self, index: usize) -> bool {
        self.envs[index].space.as_ref().is_some_and(|s| s.root() == self.loaded_root)
    }

    // ----- kernel-memory charges -----

    /// The kernel objects env `index` pays for that this subsystem holds
    /// (grant-table entries and reverse-map entries).
    pub fn kmem_charges(&self, index: usize) -> KmemUse {
        KmemUse {
            grants: self.table.grants_paid_by(self.envs[index].id) as u64,
            mappings: self.rmap.count_of(index),
            filters: 0,
            records: self.envs[index].record_bytes,
        }
    }

    /// Env `index`'s kernel-memory budget in bytes.
    pub fn kmem_limit(&self, index: usize) -> u64 {
        self.envs[index].kmem_limit
    }

    /// `NoMemory` unless env `index`, whose other subsystems hold `other`,
    /// may create one more `object`.
    fn kmem_room(&self, index: usize, other: KmemUse, object: KmemObject) -> Result<(), Error> {
        self.kmem_charges(index).plus(other).room_for(self.envs[index].kmem_limit, object)
    }

    /// Fill in the memory part of what `env_info` reports; `kmem_used`
    /// comes from the kernel, which adds every subsystem's charges.
    pub fn fill_info(&self, index: usize, kmem_used: u64, info: &mut EnvInfo) {
        let mem = &self.envs[index];
        info.kmem_used = kmem_used;
        info.kmem_limit = mem.kmem_limit;
        info.frames_charged = mem.charged_frames();
        info.page_table_frames = mem.page_table_frames;
        info.quota_frames = mem.quota_frames;
    }

    // ----- slots, page tables and the reverse map -----

    /// Remove the page-table entry of `va` in env `index` and flush it.
    fn drop_pte(&mut self, index: usize, va: u64) {
        let loaded = self.is_loaded(index);
        let env = &mut self.envs[index];
        if let Some(space) = env.space.as_mut() {
            space.unmap(va);
        }
        if loaded {
            paging::invlpg(va);
            bump(&COUNTERS.invlpg);
        } else {
            env.needs_flush = true;
        }
    }

    /// A slot the slot set pushed out: its page-table entry goes (it stays
    /// in the software TLB).
    fn evicted(&mut self, index: usize, evicted: Option<Slot>) {
        if let Some(old) = evicted {
            self.drop_pte(index, old.va_page << 12);
            self.forget_if_unmapped(index, old.va_page << 12, old.frame_pa);
            bump(&COUNTERS.slot_evictions);
        }
    }

    /// Keep the reverse map exact: drop the entry for (`frame_pa`, `va`) of
    /// env `index` once neither its slots nor its software TLB hold it.
    fn forget_if_unmapped(&mut self, index: usize, va: u64, frame_pa: u64) {
        let mem = &self.envs[index];
        let in_slot = mem.slots.get(va).is_some_and(|s| s.frame_pa == frame_pa);
        let in_stlb = mem.stlb.lookup(va).is_some_and(|e| e.frame_pa == frame_pa);
        if !in_slot && !in_stlb {
            self.rmap.remove(frame_pa, index, va);
        }
    }

    /// The pool has no frame for env `index`: what to answer. An env
    /// within its quota gets `Again` while the kernel asks the env furthest
    /// over its quota for frames back; one at or over its quota gets
    /// `QuotaExceeded`.
    fn pool_refusal(&mut self, index: usize, now: u64) -> Error {
        let me = &self.envs[index];
        if me.charged_frames() >= me.quota_frames {
            return Error::QuotaExceeded;
        }
        let holdings = self.envs.iter().map(|e| Holding {
            runnable: e.space.is_some(),
            charged: e.charged_frames(),
            quota: e.quota_frames,
        });
        match revoke::pick_victim(holdings, index) {
            Some(victim) => {
                self.request_revocation(victim, now);
                Error::Again
            }
            None => Error::NoMemory,
        }
    }

    /// Put a mapping into one of env `index`'s TLB slots (and its page
    /// table), evicting the oldest ordinary slot if they are all taken.
    ///
    /// Page tables it needs come out of the pool and are charged to the env
    /// like frames it holds, but only within its quota: a page table is
    /// never borrowed, because the kernel cannot take it back without
    /// tearing down the mappings it holds (the abort protocol takes frames,
    /// never tables). So page tables are bounded by the quotas, and what an
    /// environment holds beyond its quota is always revocable.
    fn install(&mut self, index: usize, va: u64, frame_pa: u64, mode: Mode, now: u64) -> Result<PteRef, Error> {
        let Mode { writable, guaranteed, .. } = mode;
        let evicted = self.envs[index].slots.insert(va, frame_pa, writable, guaranteed).map_err(from_slot_error)?;
        self.evicted(index, evicted);
        let loaded = self.is_loaded(index);
        let pool_room = self.pool_frames.saturating_sub(self.pool_used);
        let mem = &mut self.envs[index];
        let room = mem.quota_frames.saturating_sub(mem.charged_frames()).min(pool_room);
        let mut made = 0u64;
        let space = mem.space.as_mut().ok_or(Error::NoSuchEnv)?;
        let mut alloc = || {
            if made >= room {
                return None;
            }
            let frame = memory::alloc_frame()?;
            made += 1;
            Some(frame)
        };
        let result = space.map_replace(va, frame_pa, mode.flags(), &mut alloc);
        // Tables built are kept (and charged) even if the map failed further down.
        mem.page_table_frames += made;
        self.pool_used += made;
        let pte = match result {
            Ok(pte) => pte,
            Err(error) => {
                self.envs[index].slots.remove(va);
                return Err(match error {
                    // The frame allocator itself ran dry.
                    MapError::NoMemory if made < room => Error::NoMemory,
                    // Out of quota (QuotaExceeded), or the pool is full (Again).
                    MapError::NoMemory => self.pool_refusal(index, now),
                    _ => Error::BadAddress,
                });
            }
        };
        if loaded {
            paging::invlpg(va);
        }
        Ok(pte)
    }

    /// Remove every mapping of a frame in every environment (slots, page
    /// tables, software TLBs); returns the first page it was mapped at in
    /// env `owner`, if any.
    fn unmap_frame_everywhere(&mut self, frame_pa: u64, owner: usize) -> u64 {
        let mut owner_va = 0;
        for (index, va) in self.rmap.take_frame(frame_pa) {
            if self.envs[index].slots.get(va).is_some_and(|s| s.frame_pa == frame_pa) {
                self.envs[index].slots.remove(va);
                self.drop_pte(index, va);
            }
            if self.envs[index].stlb.lookup(va).is_some_and(|e| e.frame_pa == frame_pa) {
                self.envs[index].stlb.remove_va(va);
            }
            if index == owner && owner_va == 0 {
                owner_va = va;
            }
        }
        owner_va
    }

    /// Give a pool frame back to the allocator.
    fn release_pool_frame(&mut self, frame: u64) {
        memory::scrub_free(frame * 4096);
        self.pool_used -= 1;
    }

    // ----- the calls -----

    /// `frame_alloc(want_pa, rights, out_key_ptr)` for env `index`, the
    /// frame owned by env `owner` (the caller, or a child it acts for):
    /// charged to `owner`, the key `owner`'s, written to the caller's
    /// memory. `other` is what `owner` pays for in other subsystems.
    #[allow(clippy::too_many_arguments)] // the call's arguments, decoded
    pub fn frame_alloc(
        &mut self,
        index: usize,
        owner: usize,
        want_pa: u64,
        rights: Rights,
        out: u64,
        other: KmemUse,
        now: u64,
    ) -> Result<u64, Error> {
        if rights == Rights::NONE {
            return Err(Error::InvalidArgument);
        }
        if !want_pa.is_multiple_of(4096) {
            return Err(Error::Misaligned);
        }
        // The out pointer is checked by the write of the key at the end;
        // if that fails, everything taken is given back there.
        self.kmem_room(owner, other, KmemObject::Grant)?;
        let mem = &self.envs[owner];
        if mem.run_time && mem.charged_frames() >= mem.quota_frames {
            // A run-time environment never borrows beyond its quota.
            return Err(Error::QuotaExceeded);
        }
        if self.pool_used >= self.pool_frames {
            return Err(self.pool_refusal(owner, now));
        }
        // Never hand out a frame holding another environment's data: one
        // zeroed ahead of demand, or zeroed now.
        let frame = if want_pa == 0 {
            memory::alloc_zeroed_frame().ok_or(Error::NoMemory)?
        } else {
            let mut frame = memory::alloc_frame_at(want_pa).ok_or(Error::NoMemory)?;
            frame.zero();
            frame
        };
        let frame_pa = frame.into_user();
        let env_id = self.envs[owner].id;
        let key = match self.table.alloc(frame_pa / 4096, env_id, rights) {
            Ok(key) => key,
            Err(error) => {
                memory::free_frame(frame_pa);
                return Err(error.into());
            }
        };
        self.pool_used += 1;
        self.envs[owner].held.push(frame_pa / 4096);
        if let Err(error) = umem::write_value(self.space_of(index)?, out, &key) {
            let _ = self.table.free(key, env_id);
            self.envs[owner].held.pop();
            self.release_pool_frame(frame_pa / 4096);
            return Err(error);
        }
        Ok(frame_pa)
    }

    /// `frame_free(key)` for env `index`: the last owner frees the frame
    /// (unmapped everywhere); a co-owner gives up its share of it (unmapped
    /// from its own address space).
    pub fn frame_free(&mut self, index: usize, key: FrameKey) -> Result<u64, Error> {
        let frame = match self.table.free(key, self.envs[index].id)? {
            Freed::Frame(frame) => {
                self.unmap_frame_everywhere(frame * 4096, index);
                self.release_pool_frame(frame);
                frame
            }
            Freed::Released(frame) => {
                self.unmap_frame_in(frame * 4096, index);
                frame
            }
        };
        let mem = &mut self.envs[index];
        // Searched from the newest: frames are mostly freed soon after
        // they are allocated.
        if let Some(at) = mem.held.iter().rposition(|&f| f == frame) {
            mem.held.remove(at);
        }
        mem.owed = mem.owed.saturating_sub(1);
        Ok(0)
    }

    /// Remove env `index`'s own mappings of a frame.
    fn unmap_frame_in(&mut self, frame_pa: u64, index: usize) {
        for va in self.rmap.take_env_frame(frame_pa, index) {
            if self.envs[index].slots.get(va).is_some_and(|s| s.frame_pa == frame_pa) {
                self.envs[index].slots.remove(va);
                self.drop_pte(index, va);
            }
            if self.envs[index].stlb.lookup(va).is_some_and(|e| e.frame_pa == frame_pa) {
                self.envs[index].stlb.remove_va(va);
            }
        }
    }

    /// `frame_share(key, to_env, rights, out_key_ptr, co_own)` for env
    /// `index`; `to` is the index of `to_env` (the kernel resolved it), and
    /// `to_other` what it pays for in other subsystems (a co-owner pays
    /// for its own key and holds the frame within its quota).
    #[allow(clippy::too_many_arguments)] // the call's arguments, decoded
    pub fn frame_share(
        &mut self,
        index: usize,
        key: FrameKey,
        to: usize,
        rights: Rights,
        out: u64,
        co_own: bool,
        other: KmemUse,
        to_other: KmemUse,
    ) -> Result<u64, Error> {
        if !self.alive(to) {
            return Err(Error::NoSuchEnv);
        }
        // Check the out pointer is writable before minting anything.
        umem::write_value(self.space_of(index)?, out, &FrameKey::default())?;
        if co_own {
            self.kmem_room(to, to_other, KmemObject::Grant)?;
            let target = &self.envs[to];
            if target.charged_frames() >= target.quota_frames {
                return Err(Error::QuotaExceeded);
            }
        } else {
            self.kmem_room(index, other, KmemObject::Grant)?;
        }
        let to_env = self.envs[to].id;
        let shared = self.table.share(key, self.envs[index].id, to_env, rights, co_own)?;
        if co_own {
            let frame = self.table.check(shared, to_env, Rights::NONE)?.frame;
            self.envs[to].held.push(frame);
        }
        if let Err(error) = umem::write_value(self.space_of(index)?, out, &shared) {
            // Unreachable in practice (the pointer was checked above).
            if co_own {
                let _ = self.frame_free(to, shared);
            }
            return Err(error);
        }
        Ok(0)
    }

    /// `frame_query(key, out_ptr)` for env `index`.
    pub fn frame_query(&mut self, index: usize, key: FrameKey, out: u64) -> Result<u64, Error> {
        let env_id = self.envs[index].id;
        let info = self.table.query(key, env_id)?;
        let abi = FrameInfo {
            frame_pa: info.frame * 4096,
            rights: info.rights.bits() as u64,
            owner: self.table.owns(info.frame, env_id) as u64,
            generation: info.generation,
            owners: self.table.owner_count(info.frame) as u64,
        };
        umem::write_value(self.space_of(index)?, out, &abi)?;
        Ok(0)
    }

    /// Check a key env `index` presents for an operation needing `need`
    /// (the network's transmit uses it).
    pub fn check_key(&self, index: usize, key: FrameKey, need: Rights) -> Result<KeyInfo, Error> {
        bump(&COUNTERS.key_checks);
        Ok(self.table.check(key, self.envs[index].id, need)?)
    }

    /// `map(va, key, flags)` for env `index` (also `env_map`, which a
    /// parent makes for its child `index` with the child's key).
    pub fn map(
        &mut self,
        index: usize,
        va: u64,
        key: FrameKey,
        flags: u64,
        other: KmemUse,
        now: u64,
    ) -> Result<u64, Error> {
        self.check_map_request(index, va, flags)?;
        let info = self.check_key(index, key, Self::rights_to_map(flags))?;
        self.map_frame(index, va, info.frame * 4096, flags, other, now)
    }

    /// The rights a key needs for a mapping with `flags`.
    fn rights_to_map(flags: u64) -> Rights {
        if flags & map_flags::WRITE != 0 {
            Rights::READ | Rights::WRITE
        } else {
            Rights::READ
        }
    }

    /// The rest of `map` once the request and the key are checked: install
    /// `frame_pa` at `va` for env `index`.
    fn map_frame(
        &mut self,
        index: usize,
        va: u64,
        frame_pa: u64,
        flags: u64,
        other: KmemUse,
        now: u64,
    ) -> Result<u64, Error> {
        let writable = flags & map_flags::WRITE != 0;
        let mem = &self.envs[index];
        let mapped = mem.slots.get(va).is_some() || mem.stlb.lookup(va).is_some();
        if mapped && flags & map_flags::REPLACE == 0 {
            return Err(Error::AlreadyMapped);
        }
        let mode =
            Mode { writable, guaranteed: flags & map_flags::GUARANTEED != 0, exec: flags & map_flags::EXEC != 0 };
        if !mapped {
            self.kmem_room(index, other, KmemObject::Mapping)?;
        } else if self.replace_in_place(index, va, frame_pa, mode) {
            return Ok(0);
        } else {
            self.remove_mapping(index, va);
        }
        let pte = self.install(index, va, frame_pa, mode, now)?;
        let displaced = self.envs[index].stlb.insert(StlbEntry::new(va, frame_pa, writable).with_pte(pte));
        self.rmap.insert(frame_pa, index, va);
        if let Some(old) = displaced.filter(|old| old.va_page != page_number(va)) {
            // The software TLB is direct-mapped: the page that shared the
            // entry may still be in a slot; if not, its mapping is gone.
            self.forget_if_unmapped(index, old.page_va(), old.frame_pa);
        }
        Ok(0)
    }

    /// `map(REPLACE)` of a page already mapped to the same frame, with the
    /// same class, changing only whether it is writable (a write-fault
    /// upgrade, a copy-on-write downgrade): the slot, the software-TLB
    /// entry and the page-table entry are rewritten where they are (one
    /// `invlpg`), and the reverse map and kernel memory stay as they were.
    /// False: not that case, and nothing was changed that the general
    /// path (remove, then install) does not redo.
    fn replace_in_place(&mut self, index: usize, va: u64, frame_pa: u64, mode: Mode) -> bool {
        if mode.exec {
            return false;
        }
        let loaded = self.is_loaded(index);
        let mem = &mut self.envs[index];
        let (Some(slot), Some(entry)) = (mem.slots.get(va), mem.stlb.lookup(va)) else { return false };
        if slot.frame_pa != frame_pa
            || entry.frame_pa != frame_pa
            || slot.guaranteed != mode.guaranteed
            || !entry.pte.is_known()
        {
            return false;
        }
        // In place: same page, frame and class, so nothing is evicted.
        if mem.slots.insert(va, frame_pa, mode.writable, mode.guaranteed).is_err() {
            return false;
        }
        let Some(space) = mem.space.as_mut() else { return false };
        if !space.write_leaf(entry.pte, frame_pa, page_flags(mode.writable)) {
            return false;
        }
        mem.stlb.insert(StlbEntry { writable: mode.writable, ..entry });
        if loaded {
            paging::invlpg(va);
            bump(&COUNTERS.invlpg);
        } else {
            mem.needs_flush = true;
        }
        true
    }

    /// What `map` checks before it looks at the key: the flags (code is
    /// never writable, never refilled from the software TLB, and only
    /// environments built at run time load their own), the alignment and
    /// the window.
    fn check_map_request(&self, index: usize, va: u64, flags: u64) -> Result<(), Error> {
        if flags & !(map_flags::WRITE | map_flags::GUARANTEED | map_flags::REPLACE | map_flags::EXEC) != 0 {
            return Err(Error::InvalidArgument);
        }
        if flags & map_flags::EXEC != 0
            && (flags & map_flags::WRITE != 0 || flags & map_flags::GUARANTEED == 0 || !self.envs[index].run_time)
        {
            return Err(Error::InvalidArgument);
        }
        if !va.is_multiple_of(4096) {
            return Err(Error::Misaligned);
        }
        if !self.in_window(index, va) {
            return Err(Error::BadAddress);
        }
        Ok(())
    }

    /// A co-owning record of `env_map_batch`: make env `child` a co-owner,
    /// with `rights`, of the frame of env `index`'s owner key `key`, then
    /// map it at `va` in the child as `map` would (`flags`); returns the
    /// child's new key. All or nothing: the mapping request is checked
    /// before the key is minted, and a mapping that still cannot be made
    /// (rights, slots, budget, page tables) lets the new co-ownership go.
    /// `child_other` is what the child pays for in other subsystems.
    #[allow(clippy::too_many_arguments)] // the record's fields, decoded
    pub fn co_own_and_map(
        &mut self,
        index: usize,
        child: usize,
        key: FrameKey,
        rights: Rights,
        va: u64,
        flags: u64,
        child_other: KmemUse,
        now: u64,
    ) -> Result<FrameKey, Error> {
        self.check_map_request(child, va, flags)?;
        let mem = &self.envs[child];
        if flags & map_flags::REPLACE == 0 && (mem.slots.get(va).is_some() || mem.stlb.lookup(va).is_some()) {
            return Err(Error::AlreadyMapped);
        }
        self.kmem_room(child, child_other, KmemObject::Grant)?;
        let mem = &self.envs[child];
        if mem.charged_frames() >= mem.quota_frames {
            return Err(Error::QuotaExceeded);
        }
        let child_id = mem.id;
        bump(&COUNTERS.key_checks);
        let shared = self.table.share(key, self.envs[index].id, child_id, rights, true)?;
        let frame = self.table.check(shared, child_id, Rights::NONE)?.frame;
        self.envs[child].held.push(frame);
        // The new key is the child's, for this frame, with `rights`: what
        // `map` would check of it is whether the rights allow the mapping.
        let mapped = if rights.contains(Self::rights_to_map(flags)) {
            self.map_frame(child, va, frame * 4096, flags, child_other, now)
        } else {
            Err(Error::PermissionDenied)
        };
        if let Err(error) = mapped {
            // Undo the co-ownership: the caller still owns the frame, so
            // this only lets the child's key go.
            let _ = self.frame_free(child, shared);
            return Err(error);
        }
        Ok(shared)
    }

    /// `unmap(va)` for env `index`.
    pub fn unmap(&mut self, index: usize, va: u64) -> Result<u64, Error> {
        if !va.is_multiple_of(4096) {
            return Err(Error::Misaligned);
        }
        if !self.in_window(index, va) {
            return Err(Error::BadAddress);
        }
        if self.remove_mapping(index, va) {
            Ok(0)
        } else {
            Err(Error::InvalidArgument)
        }
    }

    /// Remove env `index`'s mapping at `va` from its slots, page table,
    /// software TLB and the reverse map; false if it had none.
    fn remove_mapping(&mut self, index: usize, va: u64) -> bool {
        let slot = self.envs[index].slots.remove(va);
        if slot.is_some() {
            self.drop_pte(index, va);
        }
        let entry = self.envs[index].stlb.lookup(va);
        self.envs[index].stlb.remove_va(va);
        let mut found = false;
        for frame_pa in [slot.map(|s| s.frame_pa), entry.map(|e| e.frame_pa)].into_iter().flatten() {
            self.rmap.remove(frame_pa, index, va);
            found = true;
        }
        found
    }

    /// `map_query(va, clear)` for env `index`.
    pub fn map_query(&mut self, index: usize, va: u64, clear: u64) -> Result<u64, Error> {
        if !self.in_window(index, va) {
            return Err(Error::BadAddress);
        }
        if clear & !3 != 0 {
            return Err(Error::InvalidArgument);
        }
        let mut clear_bits = Flags::empty();
        if clear & 1 != 0 {
            clear_bits |= Flags::ACCESSED;
        }
        if clear & 2 != 0 {
            clear_bits |= Flags::DIRTY;
        }
        let loaded = self.is_loaded(index);
        let env = &mut self.envs[index];
        if let Some(slot) = env.slots.get(va) {
            let mut bits = map_bits::MAPPED | map_bits::IN_SLOT;
            if slot.writable {
                bits |= map_bits::WRITABLE;
            }
            if slot.guaranteed {
                bits |= map_bits::GUARANTEED;
            }
            let space = env.space.as_mut().ok_or(Error::NoSuchEnv)?;
            let flags = if !clear_bits.is_empty() {
                let flags = space.take_bits(va, clear_bits);
                if loaded {
                    paging::invlpg(va);
                }
                flags
            } else {
                space.translate(va).map(|(_, f)| f)
            };
            if let Some(flags) = flags {
                if flags.contains(Flags::ACCESSED) {
                    bits |= map_bits::ACCESSED;
                }
                if flags.contains(Flags::DIRTY) {
                    bits |= map_bits::DIRTY;
                }
            }
            return Ok(bits);
        }
        match env.stlb.lookup(va) {
            Some(entry) => Ok(map_bits::MAPPED | if entry.writable { map_bits::WRITABLE } else { 0 }),
            None => Ok(0),
        }
    }

    /// `map_query_range(va, pages, out, flags)` for env `index`: one bit
    /// per page (dirty, or accessed with `REPORT_ACCESSED`) written to the
    /// bitmap at `out`, the bits cleared as `flags` asks, 64 pages at a
    /// time. Every argument is checked, and both ends of the bitmap (at
    /// most 512 bytes, so at most two pages) proven writable, before a bit
    /// is cleared, so a refused call changes nothing. A page counts as
    /// known when it has a page-table entry (it is in a TLB slot: `map` and
    /// refills install one, evictions and the `stlb` switch remove it); an
    /// unknown page reports 0, or 1 with `UNKNOWN_SET`. Returns the pages
    /// reported set.
    pub fn map_query_range(&mut self, index: usize, va: u64, pages: u64, out: u64, flags: u64) -> Result<u64, Error> {
        use shared_abi::syscall::query_range::{self, MAX_QUERY_PAGES};
        if flags & !query_range::ALL != 0 {
            return Err(Error::InvalidArgument);
        }
        if pages == 0 || pages > MAX_QUERY_PAGES {
            return Err(Error::BadLength);
        }
        if !va.is_multiple_of(4096) {
            return Err(Error::Misaligned);
        }
        // The window is one interval: first and last page in it, no wrap.
        let last = va.checked_add((pages - 1) * 4096);
        if !self.in_window(index, va) || !last.is_some_and(|last| self.in_window(index, last)) {
            return Err(Error::BadAddress);
        }
        let words = query_range::bitmap_words(pages);
        let loaded = self.is_loaded(index);
        let env = &mut self.envs[index];
        let space = env.space.as_mut().ok_or(Error::NoSuchEnv)?;
        // All of the bitmap proven writable before a bit is cleared or a
        // byte written: it is at most 512 bytes, so its first and last
        // words lie on every page it spans.
        kcore::usercheck::check_user_range(out, words * 8, 8)?;
        let writable = |va: u64| {
            let need = Flags::PRESENT | Flags::USER_ACCESSIBLE | Flags::WRITABLE;
            space.translate(va).is_some_and(|(_, flags)| flags.contains(need))
        };
        if !writable(out) || !writable(out + (words - 1) * 8) {
            return Err(Error::BadAddress);
        }
        let mut clear = Flags::empty();
        if flags & query_range::CLEAR_ACCESSED != 0 {
            clear |= Flags::ACCESSED;
        }
        if flags & query_range::CLEAR_DIRTY != 0 {
            clear |= Flags::DIRTY;
        }
        let report = if flags & query_range::REPORT_ACCESSED != 0 { Flags::ACCESSED } else { Flags::DIRTY };
        let unknown_set = flags & query_range::UNKNOWN_SET != 0;
        // A TLB entry may hold a bit only its page-table entry had: each
        // page whose entry lost a bit is flushed with invlpg, up to the
        // ceiling; past it the whole address space is flushed by a CR3
        // reload (Linux's tlb_single_page_flush_ceiling is 33).
        const INVLPG_CEILING: u64 = 32;
        let mut flushes = 0u64;
        let mut set = 0u64;
        for w in 0..words {
            let first = va + w * 64 * 4096;
            let count = (pages - w * 64).min(64);
            let bits = space.take_bits_run(first, count as usize, report, clear);
            let mut word = bits.reported;
            if unknown_set {
                word |= !bits.present & (u64::MAX >> (64 - count));
            }
            let mut cleared = bits.cleared;
            flushes += cleared.count_ones() as u64;
            while loaded && cleared != 0 && flushes <= INVLPG_CEILING {
                paging::invlpg(first + cleared.trailing_zeros() as u64 * 4096);
                bump(&COUNTERS.invlpg);
                cleared &= cleared - 1;
            }
            set += word.count_ones() as u64;
            umem::write_value(space, out + w * 8, &word)?;
        }
        if flushes > 0 && !loaded {
            env.needs_flush = true;
        } else if flushes > INVLPG_CEILING {
            paging::flush_loaded();
            bump(&COUNTERS.cr3_loads);
        }
        Ok(set)
    }

    /// `guarantee(va, on)` for env `index`.
    pub fn guarantee(&mut self, index: usize, va: u64, on: u64, now: u64) -> Result<u64, Error> {
        if !va.is_multiple_of(4096) {
            return Err(Error::Misaligned);
        }
        if !self.in_window(index, va) {
            return Err(Error::BadAddress);
        }
        let on = on != 0;
        if self.envs[index].slots.get(va).is_none() {
            // Only in the software TLB: bring it back into a slot first.
            let entry = self.envs[index].stlb.lookup(va).ok_or(Error::InvalidArgument)?;
            return self.install(index, va, entry.frame_pa, Mode::data(entry.writable, on), now).map(|_| 0);
        }
        let executable = self.envs[index]
            .space
            .as_ref()
            .and_then(|s| s.translate(va))
            .is_some_and(|(_, flags)| !flags.contains(Flags::NO_EXECUTE));
        if !on && executable {
            // Code stays guaranteed (the software TLB refills data only).
            return Err(Error::InvalidArgument);
        }
        let evicted = self.envs[index].slots.set_guaranteed(va, on).map_err(from_slot_error)?;
        self.evicted(index, evicted);
        Ok(0)
    }

    /// `env_write(child, va, src, len)`: copy `len` bytes from env
    /// `index`'s memory at `src` into env `child`'s at `va`. Every page
    /// written must be mapped in the child to a frame the child owns (so a
    /// parent writes only what its child could write with its own keys);
    /// the kernel writes read-only pages too, as the loader does.
    pub fn env_write(&mut self, index: usize, child: usize, va: u64, src: u64, len: u64) -> Result<u64, Error> {
        if len > MAX_ENV_WRITE {
            return Err(Error::BadLength);
        }
        let end = va.checked_add(len).ok_or(Error::BadAddress)?;
        if len > 0 && (!in_run_time_window(va) || !in_run_time_window(end - 1)) {
            return Err(Error::BadAddress);
        }
        kcore::usercheck::check_user_range(src, len, 1)?;
        self.prefault(index, src, len);
        let child_id = self.envs[child].id;
        let mut buf = [0u8; 4096];
        let mut done = 0u64;
        while done < len {
            let at = va + done;
            let page = at & !0xfff;
            let chunk = (4096 - (at - page)).min(len - done);
            let frame_pa = self.present_frame(child, page).ok_or(Error::BadAddress)?;
            // The child's alone: a frame others co-own (or that was shared
            // to the child read-only) is not the parent's to write.
            let frame = frame_pa / 4096;
            if !self.table.owns(frame, child_id) || self.table.owner_count(frame) != 1 {
                return Err(Error::PermissionDenied);
            }
            umem::UserSlice::new(self.space_of(index)?, src + done, chunk, 1)?.read(&mut buf[..chunk as usize])?;
            let space = self.space_of(child)?;
            space.write_user(at, &buf[..chunk as usize], Flags::empty()).map_err(|()| Error::BadAddress)?;
            done += chunk;
        }
        Ok(len)
    }

    /// Before the kernel reads or writes `[addr, addr + len)` of a run-time
    /// env `index` for a call: bring pages that are only in its software
    /// TLB back into its page table (its slots are drained on a switch
    /// under the `stlb` policy, and evicted when full), so a buffer it
    /// mapped is never refused for where the kernel keeps the mapping.
    pub fn prefault(&mut self, index: usize, addr: u64, len: u64) {
        if !self.envs[index].run_time || len == 0 {
            return;
        }
        let Some(last) = addr.checked_add(len - 1) else { return };
        let mut page = addr & !0xfff;
        // Bounded: the calls move at most 64 KiB.
        for _ in 0..32 {
            if page > last || !in_run_time_window(page) {
                break;
            }
            if self.envs[index].slots.get(page).is_none() {
                let _ = self.present_frame(index, page);
            }
            page += 4096;
        }
    }

    /// The frame env `index` maps at `page`, brought into its page table
    /// from the software TLB if it was only there.
    fn present_frame(&mut self, index: usize, page: u64) -> Option<u64> {
        if let Some(slot) = self.envs[index].slots.get(page) {
            return Some(slot.frame_pa);
        }
        let entry = self.envs[index].stlb.lookup(page)?;
        self.install(index, page, entry.frame_pa, Mode::data(entry.writable, false), 0).ok()?;
        Some(entry.frame_pa)
    }

    /// `key_bench(key, iterations)` for env `index`: benchmark scenarios only.
    pub fn key_bench(&mut self, index: usize, key: FrameKey, iterations: u64) -> Result<u64, Error> {
        if !self.benchmarks {
            return Err(Error::PermissionDenied);
        }
        if !(1..=100_000).contains(&iterations) {
            return Err(Error::InvalidArgument);
        }
        let env_id = self.envs[index].id;
        self.table.check(key, env_id, Rights::READ)?;
        let start = crate::arch::cpu::rdtsc();
        for _ in 0..iterations {
            // What a caller takes from a valid key: the frame it names.
            let _ = core::hint::black_box(
                self.table.check(core::hint::black_box(key), env_id, Rights::READ).map(|info| info.frame),
            );
        }
        Ok(crate::arch::cpu::rdtsc() - start)
    }

    /// `revoke_done()` for env `index`: frames still owed.
    pub fn revoke_done(&self, index: usize) -> u64 {
        self.envs[index].owed
    }

    // ----- faults and switches -----

    /// A not-present page fault at `va` in env `index`: refill it from the
    /// software TLB if the environment mapped that page before. True if
    /// refilled.
    pub fn stlb_refill(&mut self, index: usize, va: u64, error_code: u64, now: u64) -> bool {
        let present = error_code & 1 != 0;
        let write = error_code & 2 != 0;
        if present || !self.in_window(index, va) {
            return false;
        }
        let Some(entry) = self.envs[index].stlb.lookup(va) else {
            bump(&COUNTERS.stlb_misses);
            return false;
        };
        if write && !entry.writable {
            return false;
        }
        let page = va & !0xfff;
        let mut written = false;
        if entry.pte.is_known() {
            // The page-table entry is known: account the slot and write it.
            match self.envs[index].slots.insert(page, entry.frame_pa, entry.writable, false) {
                Ok(evicted) => self.evicted(index, evicted),
                Err(_) => return false,
            }
            // A not-present fault: no stale TLB entry to flush.
            written = self.envs[index]
                .space
                .as_mut()
                .is_some_and(|space| space.write_leaf(entry.pte, entry.frame_pa, page_flags(entry.writable)));
        }
        if !written && self.install(index, page, entry.frame_pa, Mode::data(entry.writable, false), now).is_err() {
            return false;
        }
        bump(&COUNTERS.stlb_hits);
        true
    }

    /// Where the page-fault stub finds env `index`'s software-TLB tags
    /// (manifest environments only: a run-time environment's faults all
    /// take the kernel's path).
    pub fn stlb_tags(&self, index: usize) -> Option<(*const u64, u64)> {
        let mem = self.envs.get(index)?;
        (!mem.run_time).then(|| mem.stlb.tags())
    }

    /// Make env `index`'s address space the loaded one (if it is not
    /// already), doing the context-switch TLB policy's work.
    pub fn activate(&mut self, index: usize) {
        let Some(root) = self.space(index).map(|s| s.root()) else { return };
        if root == self.loaded_root {
            return;
        }
        if self.policy == TlbPolicy::Stlb {
            // Only guaranteed mappings survive; the rest refault through
            // the software TLB. The CR3 load that follows flushes the TLB.
            let rmap = &mut self.rmap;
            let EnvMemory { slots, stlb, space, .. } = &mut self.envs[index];
            if let Some(space) = space.as_mut() {
                slots.drain_ordinary_with(|slot| {
                    let va = slot.va_page << 12;
                    space.unmap(va);
                    if !stlb.lookup(va).is_some_and(|e| e.frame_pa == slot.frame_pa) {
                        rmap.remove(slot.frame_pa, index, va);
                    }
                });
            }
        }
        let env = &mut self.envs[index];
        let space = env.space.as_ref().expect("checked above");
        if self.policy == TlbPolicy::Pcid {
            // Tagged by index, unique among live environments (a reused
            // index flushes its tag at its first load: `needs_flush`).
            space.activate_pcid(index as u16 + 1, env.needs_flush);
        } else {
            space.activate();
        }
        env.needs_flush = false;
        self.loaded_root = root;
        bump(&COUNTERS.cr3_loads);
    }

    /// The oldest upcall owed to env `index`.
    pub fn take_pending(&mut self, index: usize) -> Option<PendingUpcall> {
        self.envs[index].pending.take()
    }

    // ----- revocation -----

    /// Ask env `victim` to give back frames (no-op while a request is open).
    fn request_revocation(&mut self, victim: usize, now: u64) {
        let deadline = now + self.revoke_deadline_tsc;
        let mem = &mut self.envs[victim];
        if mem.owed > 0 {
            return;
        }
        mem.owed =
            revoke::frames_to_ask(&Holding { runnable: true, charged: mem.charged_frames(), quota: mem.quota_frames });
        mem.deadline_tsc = deadline;
        mem.pending.push(PendingUpcall {
            kind: UpcallKind::Revocation,
            vector: REVOKE_REQUEST,
            fault_addr: mem.owed,
            error_code: deadline,
        });
        bump(&COUNTERS.revocation_requests);
        log::debug!("asked env {} for {} frames", mem.id, mem.owed);
    }

    /// Called on every timer tick: run the abort protocol on every
    /// environment whose repossession deadline passed. Returns (index,
    /// frames taken) for each.
    pub fn check_revocation_deadlines(&mut self, now: u64) -> Vec<(usize, u64)> {
        let mut aborted = Vec::new();
        for index in 0..self.envs.len() {
            let mem = &self.envs[index];
            if mem.owed > 0 && now >= mem.deadline_tsc && self.alive(index) {
                aborted.push((index, self.abort_protocol(index)));
            }
        }
        aborted
    }

    /// Take the owed frames by force (`kcore::revoke::frames_to_take`: the
    /// newest), every mapping removed, each recorded in the repossession
    /// vector; then tell the libOS.
    fn abort_protocol(&mut self, index: usize) -> u64 {
        let mem = &self.envs[index];
        let taken: Vec<u64> = revoke::frames_to_take(&mem.held, mem.owed).to_vec();
        let keep = mem.held.len() - taken.len();
        self.envs[index].held.truncate(keep);
        for &frame in taken.iter().rev() {
            let va = self.unmap_frame_everywhere(frame * 4096, index);
            // Co-owners lose the frame too (the abort protocol takes it).
            for holder in self.table.revoke(frame).unwrap_or_default() {
                if let Some(other) = self.envs.iter_mut().find(|e| e.id == holder && e.space.is_some()) {
                    if let Some(at) = other.held.iter().rposition(|&f| f == frame) {
                        other.held.remove(at);
                    }
                }
            }
            self.release_pool_frame(frame);
            self.record_repossession(index, frame * 4096, va);
            bump(&COUNTERS.frames_repossessed);
        }
        let env = &mut self.envs[index];
        env.owed = 0;
        let count = taken.len() as u64;
        env.pending.push(PendingUpcall {
            kind: UpcallKind::Revocation,
            vector: REVOKE_ABORTED,
            fault_addr: count,
            error_code: 0,
        });
        count
    }

    /// Note a repossessed frame in env `index`'s repossession vector (a
    /// page the kernel built read-only for it).
    fn record_repossession(&mut self, index: usize, frame_pa: u64, va: u64) {
        let Some(space) = self.envs[index].space.as_ref() else { return };
        let mut vector = RepossessionVector::zeroed();
        if space.read_user(REPOSSESSION_ADDR, vector.as_bytes_mut(), Flags::empty()).is_err() {
            return;
        }
        let at = (vector.count as usize) % REPOSSESSION_SLOTS;
        vector.entries[at].frame_pa = frame_pa;
        vector.entries[at].va = va;
        vector.count += 1;
        let _ = space.write_user(REPOSSESSION_ADDR, vector.as_bytes(), Flags::empty());
    }

    // ----- the end of an environment -----

    /// Env `index` ended: unmap and return its pool frames, drop the keys
    /// shared to it and those it paid for, remove its mappings of others'
    /// frames, and free its address space (page tables included).
    pub fn reclaim(&mut self, index: usize) {
        let run_time = self.envs[index].run_time;
        let slots: Vec<Slot> = self.envs[index].slots.iter().collect();
        // Its reverse-map entries: exactly its slots and software-TLB entries.
        for slot in &slots {
            self.rmap.remove(slot.frame_pa, index, slot.va_page << 12);
        }
        for entry in self.envs[index].stlb.iter() {
            self.rmap.remove(entry.frame_pa, index, entry.page_va());
        }
        if self.rmap.count_of(index) > 0 {
            self.rmap.remove_env(index);
        }
        if !run_time {
            // A booted environment's tables also hold the loader's pages,
            // which `destroy` releases: clear the leaves of keyed frames first.
            if let Some(space) = self.envs[index].space.as_mut() {
                for slot in &slots {
                    space.unmap(slot.va_page << 12);
                }
            }
        }
        self.envs[index].stlb.clear();
        let owned = core::mem::take(&mut self.envs[index].held);
        let owned = self.table.reclaim_env(self.envs[index].id, &owned);
        for frame in owned {
            self.unmap_frame_everywhere(frame * 4096, index);
            self.release_pool_frame(frame);
        }
        let id = self.envs[index].id;
        let page_tables = self.envs[index].page_table_frames;
        if let Some(space) = self.envs[index].space.take() {
            if space.root() == self.loaded_root {
                self.kernel_space.activate();
                self.loaded_root = self.kernel_space.root();
                bump(&COUNTERS.cr3_loads);
            }
            if run_time {
                // Every page it maps is a keyed frame, held and freed
                // under keys: its tables go without a walk.
                space.destroy_tables();
            } else {
                space.destroy(&mut memory::free_frame);
            }
        }
        // Its page tables went with the address space: out of the pool.
        self.pool_used -= page_tables;
        // Drop what the kernel heap held for it (slots, software TLB, queue).
        self.envs[index] = EnvMemory::ended(id);
    }

    /// What is left once every environment has ended.
    pub fn leftovers(&self) -> Leftovers {
        Leftovers { live_keys: self.table.live_keys(), rmap_entries: self.rmap.len(), pool_used: self.pool_used }
    }

    /// Every environment has ended: drop per-environment records and the
    /// storage of empty tables (an emptied B-tree may keep its root node;
    /// the grant table keeps retired slots so old keys stay stale, which no
    /// one can present any more). Only what is empty is dropped, so a leak
    /// still shows.
    pub fn retire(&mut self) {
        self.envs = Vec::new();
        if self.table.live_keys() == 0 {
            self.table.retire();
        }
        if self.rmap.is_empty() {
            self.rmap = self.rmap.emptied();
        }
    }
}
