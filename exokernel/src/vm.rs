//! Virtual memory as secure bindings: keyed frames from a shared pool,
//! TLB slots and the software TLB, guaranteed mappings, quotas, visible
//! revocation and the abort protocol.
//!
//! Revocation policy (the kernel's only memory policy): a libOS may hold
//! its `quota_kib` of pool frames for sure and may borrow more while the
//! pool has them. When the pool is empty and a libOS *within* its quota
//! asks for a frame, the kernel asks the libOS furthest over its quota to
//! give back up to [`REVOKE_BATCH`] frames (a revocation upcall with a
//! deadline) and tells the asker `Again`. A libOS that has not given them
//! back by the deadline loses them by force (the abort protocol): the
//! kernel takes its most recently allocated frames, removes every mapping
//! of them, records them in its repossession vector and tells it.

use crate::arch::memory;
use crate::arch::paging::{self, Flags, MapError, PteRef};
use crate::kernel::{bump, Kernel, COUNTERS};
use crate::umem::{self, Pod};
use alloc::vec::Vec;
use kcore::keys::{FrameKey as KernelKey, FrameTable, Rights};
use kcore::kmem::{KmemObject, KmemUse};
use kcore::rmap::ReverseMap;
use kcore::slots::{Slot, SlotError, SlotSet};
use kcore::stlb::{page_number, Stlb, StlbEntry};
use shared_abi::manifest::TlbPolicy;
use shared_abi::start::{RepossessionVector, DYNAMIC_BASE, DYNAMIC_END, REPOSSESSION_ADDR, REPOSSESSION_SLOTS};
use shared_abi::syscall::{map_bits, map_flags, Error, FrameInfo, FrameKey};
use shared_abi::upcall::{UpcallKind, REVOKE_ABORTED, REVOKE_REQUEST};

/// Frames asked back in one repossession request.
pub const REVOKE_BATCH: u64 = 8;
/// Entries of each environment's software TLB (Aegis used 4096).
pub const STLB_ENTRIES: usize = 4096;
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
pub struct PendingUpcalls(alloc::collections::VecDeque<PendingUpcall>);

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
pub struct EnvMemory {
    pub slots: SlotSet,
    pub stlb: Stlb<PteRef>,
    pub quota_frames: u64,
    /// Pool frames it owns (frame numbers), oldest first.
    pub held: Vec<u64>,
    /// Frames still owed to an open repossession request, and its deadline.
    pub owed: u64,
    pub deadline_tsc: u64,
    pub pending: PendingUpcalls,
    /// PCID policy: its tagged TLB entries may be stale (flush on next load).
    pub needs_flush: bool,
    /// Page-table frames the kernel built for its `map` calls: pool frames
    /// charged to it like the ones it holds under keys, freed when it ends.
    pub page_table_frames: u64,
    /// Its kernel-memory budget in bytes (see `kcore::kmem`).
    pub kmem_limit: u64,
}

impl EnvMemory {
    pub fn new(quota_frames: u64, tlb_slots: u64, kmem_limit: u64) -> Self {
        EnvMemory {
            slots: SlotSet::new(tlb_slots as usize, GUARANTEED_MAX),
            stlb: Stlb::new(STLB_ENTRIES),
            quota_frames,
            held: Vec::new(),
            owed: 0,
            deadline_tsc: 0,
            pending: PendingUpcalls::default(),
            needs_flush: false,
            page_table_frames: 0,
            kmem_limit,
        }
    }

    /// An ended environment's record: nothing held, nothing allocated.
    pub fn ended() -> Self {
        EnvMemory {
            slots: SlotSet::new(0, 0),
            stlb: Stlb::new(1),
            quota_frames: 0,
            held: Vec::new(),
            owed: 0,
            deadline_tsc: 0,
            pending: PendingUpcalls::default(),
            needs_flush: false,
            page_table_frames: 0,
            kmem_limit: 0,
        }
    }

    /// Pool frames charged to it: frames held under keys and page tables.
    pub fn charged_frames(&self) -> u64 {
        self.held.len() as u64 + self.page_table_frames
    }
}

/// Kernel-wide memory state.
pub struct Vm {
    pub table: FrameTable,
    /// Frames libOSes may hold through `frame_alloc`, and how many they do.
    pub pool_frames: u64,
    pub pool_used: u64,
    /// The policy in force (PCID falls back to flush where the CPU lacks it).
    pub policy: TlbPolicy,
    pub revoke_deadline_tsc: u64,
    /// Every (frame, environment, page) mapped with `map`: an entry exists
    /// exactly while the page is in the environment's slots or software
    /// TLB naming the frame.
    pub rmap: ReverseMap,
}

fn to_abi(key: KernelKey) -> FrameKey {
    FrameKey { lo: key.handle, hi: key.mac }
}

fn from_abi(lo: u64, hi: u64) -> KernelKey {
    KernelKey { handle: lo, mac: hi }
}

fn page_flags(writable: bool) -> Flags {
    let mut flags = Flags::PRESENT | Flags::USER_ACCESSIBLE | Flags::NO_EXECUTE;
    if writable {
        flags |= Flags::WRITABLE;
    }
    flags
}

/// Fold boot-time entropy into the 256-bit key-minting secret.
pub fn derive_secret(seed: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(seed).into()
}

/// Is `va` a page of the window libOSes map into?
pub fn in_dynamic_window(va: u64) -> bool {
    (DYNAMIC_BASE..DYNAMIC_END).contains(&va)
}

impl Kernel {
    fn env_id(&self, index: usize) -> u64 {
        self.envs[index].id
    }

    fn is_loaded(&self, index: usize) -> bool {
        self.envs[index].space.as_ref().is_some_and(|s| s.root() == self.loaded_root)
    }

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
            env.mem.needs_flush = true;
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
        let mem = &self.envs[index].mem;
        let in_slot = mem.slots.get(va).is_some_and(|s| s.frame_pa == frame_pa);
        let in_stlb = mem.stlb.lookup(va).is_some_and(|e| e.frame_pa == frame_pa);
        if !in_slot && !in_stlb {
            self.vm.rmap.remove(frame_pa, index, va);
        }
    }

    /// The kernel objects env `index` pays for.
    pub fn kmem_use(&self, index: usize) -> KmemUse {
        let id = self.envs[index].id;
        KmemUse {
            grants: self.vm.table.grants_paid_by(id) as u64,
            mappings: self.vm.rmap.count_of(index),
            filters: self.net.filters_of(id) as u64,
        }
    }

    /// `NoMemory` unless env `index` may create one more `object`.
    pub fn kmem_room(&self, index: usize, object: KmemObject) -> Result<(), Error> {
        if self.kmem_use(index).has_room(self.envs[index].mem.kmem_limit, object) {
            Ok(())
        } else {
            Err(Error::NoMemory)
        }
    }

    /// The pool has no frame for env `index`: what to answer. An env
    /// within its quota gets `Again` while the kernel asks the env furthest
    /// over its quota for frames back; one at or over its quota gets
    /// `QuotaExceeded`.
    fn pool_refusal(&mut self, index: usize) -> Error {
        let me = &self.envs[index].mem;
        if me.charged_frames() >= me.quota_frames {
            return Error::QuotaExceeded;
        }
        match self.pick_victim(index) {
            Some(victim) => {
                self.request_revocation(victim);
                Error::Again
            }
            None => Error::NoMemory,
        }
    }

    /// Put a mapping into one of env `index`'s TLB slots (and its page
    /// table), evicting the oldest ordinary slot if they are all taken.
    /// Page tables it needs come out of the pool and are charged to env
    /// `index` like frames it holds, but only within its quota: a page
    /// table is never borrowed, because the kernel cannot take it back
    /// without tearing down the mappings it holds (the abort protocol takes
    /// frames, never tables). So page tables are bounded by the quotas, and
    /// what an environment holds beyond its quota is always revocable.
    fn install(&mut self, index: usize, va: u64, frame_pa: u64, writable: bool, guaranteed: bool) -> Result<PteRef, Error> {
        let evicted = self.envs[index].mem.slots.insert(va, frame_pa, writable, guaranteed).map_err(from_slot_error)?;
        self.evicted(index, evicted);
        let loaded = self.is_loaded(index);
        let pool_room = self.vm.pool_frames.saturating_sub(self.vm.pool_used);
        let mem = &self.envs[index].mem;
        let room = mem.quota_frames.saturating_sub(mem.charged_frames()).min(pool_room);
        let mut made = 0u64;
        let space = self.envs[index].space.as_mut().ok_or(Error::NoSuchEnv)?;
        let mut alloc = || {
            if made >= room {
                return None;
            }
            let frame = memory::alloc_frame()?;
            made += 1;
            Some(frame)
        };
        let result = space.map_replace(va, frame_pa, page_flags(writable), &mut alloc);
        // Tables built are kept (and charged) even if the map failed further down.
        self.envs[index].mem.page_table_frames += made;
        self.vm.pool_used += made;
        let pte = match result {
            Ok(pte) => pte,
            Err(error) => {
                self.envs[index].mem.slots.remove(va);
                return Err(match error {
                    // The frame allocator itself ran dry.
                    MapError::NoMemory if made < room => Error::NoMemory,
                    // Out of quota (QuotaExceeded), or the pool is full (Again).
                    MapError::NoMemory => self.pool_refusal(index),
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
        for (index, va) in self.vm.rmap.take_frame(frame_pa) {
            if self.envs[index].mem.slots.get(va).is_some_and(|s| s.frame_pa == frame_pa) {
                self.envs[index].mem.slots.remove(va);
                self.drop_pte(index, va);
            }
            if self.envs[index].mem.stlb.lookup(va).is_some_and(|e| e.frame_pa == frame_pa) {
                self.envs[index].mem.stlb.remove_va(va);
            }
            if index == owner && owner_va == 0 {
                owner_va = va;
            }
        }
        owner_va
    }

    /// Give a pool frame back to the allocator.
    fn release_pool_frame(&mut self, frame: u64) {
        memory::free_frame(frame * 4096);
        self.vm.pool_used -= 1;
    }

    pub fn frame_alloc(&mut self, want_pa: u64, rights: u64, out: u64) -> Result<u64, Error> {
        let rights = u8::try_from(rights).ok().and_then(Rights::from_bits).ok_or(Error::InvalidArgument)?;
        if rights == Rights::NONE {
            return Err(Error::InvalidArgument);
        }
        let index = self.current;
        if want_pa % 4096 != 0 {
            return Err(Error::Misaligned);
        }
        // Check the out pointer (writable, by writing a blank key) before
        // taking anything.
        umem::write_value(self.envs[index].space.as_ref().ok_or(Error::NoSuchEnv)?, out, &FrameKey::default())?;
        self.kmem_room(index, KmemObject::Grant)?;
        if self.vm.pool_used >= self.vm.pool_frames {
            return Err(self.pool_refusal(index));
        }
        let mut frame = if want_pa == 0 {
            memory::alloc_frame().ok_or(Error::NoMemory)?
        } else {
            memory::alloc_frame_at(want_pa).ok_or(Error::NoMemory)?
        };
        // Never hand out a frame holding another environment's data.
        frame.zero();
        let frame_pa = frame.into_user();
        let env_id = self.env_id(index);
        let key = match self.vm.table.alloc(frame_pa / 4096, env_id, rights) {
            Ok(key) => key,
            Err(error) => {
                memory::free_frame(frame_pa);
                return Err(error.into());
            }
        };
        self.vm.pool_used += 1;
        self.envs[index].mem.held.push(frame_pa / 4096);
        let space = self.envs[index].space.as_ref().ok_or(Error::NoSuchEnv)?;
        if let Err(error) = umem::write_value(space, out, &to_abi(key)) {
            let _ = self.vm.table.free(key, env_id);
            self.envs[index].mem.held.pop();
            self.release_pool_frame(frame_pa / 4096);
            return Err(error);
        }
        Ok(frame_pa)
    }

    pub fn frame_free(&mut self, lo: u64, hi: u64) -> Result<u64, Error> {
        let index = self.current;
        let frame = self.vm.table.free(from_abi(lo, hi), self.env_id(index))?;
        self.unmap_frame_everywhere(frame * 4096, index);
        let mem = &mut self.envs[index].mem;
        if let Some(at) = mem.held.iter().position(|&f| f == frame) {
            mem.held.remove(at);
        }
        mem.owed = mem.owed.saturating_sub(1);
        self.release_pool_frame(frame);
        Ok(0)
    }

    pub fn frame_share(&mut self, lo: u64, hi: u64, to_env: u64, rights: u64, out: u64) -> Result<u64, Error> {
        let rights = u8::try_from(rights).ok().and_then(Rights::from_bits).ok_or(Error::InvalidArgument)?;
        let index = self.current;
        if !self.envs.iter().any(|e| e.id == to_env && e.is_runnable()) {
            return Err(Error::NoSuchEnv);
        }
        // Check the out pointer is writable before minting anything.
        umem::write_value(self.envs[index].space.as_ref().ok_or(Error::NoSuchEnv)?, out, &FrameKey::default())?;
        self.kmem_room(index, KmemObject::Grant)?;
        let shared = self.vm.table.share(from_abi(lo, hi), self.env_id(index), to_env, rights)?;
        let space = self.envs[index].space.as_ref().ok_or(Error::NoSuchEnv)?;
        umem::write_value(space, out, &to_abi(shared))?;
        Ok(0)
    }

    pub fn frame_query(&mut self, lo: u64, hi: u64, out: u64) -> Result<u64, Error> {
        let index = self.current;
        let env_id = self.env_id(index);
        let info = self.vm.table.query(from_abi(lo, hi), env_id)?;
        let abi = FrameInfo {
            frame_pa: info.frame * 4096,
            rights: info.rights.bits() as u64,
            owner: (info.owner == env_id) as u64,
            generation: info.generation,
        };
        let space = self.envs[index].space.as_ref().ok_or(Error::NoSuchEnv)?;
        umem::write_value(space, out, &abi)?;
        Ok(0)
    }

    pub fn map(&mut self, va: u64, lo: u64, hi: u64, flags: u64) -> Result<u64, Error> {
        if flags & !(map_flags::WRITE | map_flags::GUARANTEED) != 0 {
            return Err(Error::InvalidArgument);
        }
        if va % 4096 != 0 {
            return Err(Error::Misaligned);
        }
        if !in_dynamic_window(va) {
            return Err(Error::BadAddress);
        }
        let index = self.current;
        let writable = flags & map_flags::WRITE != 0;
        let need = if writable { Rights::READ | Rights::WRITE } else { Rights::READ };
        bump(&COUNTERS.key_checks);
        let info = self.vm.table.check(from_abi(lo, hi), self.env_id(index), need)?;
        let mem = &self.envs[index].mem;
        if mem.slots.get(va).is_some() || mem.stlb.lookup(va).is_some() {
            return Err(Error::AlreadyMapped);
        }
        self.kmem_room(index, KmemObject::Mapping)?;
        let frame_pa = info.frame * 4096;
        let pte = self.install(index, va, frame_pa, writable, flags & map_flags::GUARANTEED != 0)?;
        let displaced = self.envs[index].mem.stlb.insert(StlbEntry::new(va, frame_pa, writable).with_pte(pte));
        self.vm.rmap.insert(frame_pa, index, va);
        if let Some(old) = displaced.filter(|old| old.va_page != page_number(va)) {
            // The software TLB is direct-mapped: the page that shared the
            // entry may still be in a slot; if not, its mapping is gone.
            self.forget_if_unmapped(index, old.page_va(), old.frame_pa);
        }
        Ok(0)
    }

    pub fn unmap(&mut self, va: u64) -> Result<u64, Error> {
        if va % 4096 != 0 {
            return Err(Error::Misaligned);
        }
        if !in_dynamic_window(va) {
            return Err(Error::BadAddress);
        }
        let index = self.current;
        let slot = self.envs[index].mem.slots.remove(va);
        if slot.is_some() {
            self.drop_pte(index, va);
        }
        let entry = self.envs[index].mem.stlb.lookup(va);
        self.envs[index].mem.stlb.remove_va(va);
        let mut found = false;
        for frame_pa in [slot.map(|s| s.frame_pa), entry.map(|e| e.frame_pa)].into_iter().flatten() {
            self.vm.rmap.remove(frame_pa, index, va);
            found = true;
        }
        if found {
            Ok(0)
        } else {
            Err(Error::InvalidArgument)
        }
    }

    pub fn map_query(&mut self, va: u64, clear: u64) -> Result<u64, Error> {
        if !in_dynamic_window(va) {
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
        let index = self.current;
        let loaded = self.is_loaded(index);
        let env = &mut self.envs[index];
        if let Some(slot) = env.mem.slots.get(va) {
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
        match env.mem.stlb.lookup(va) {
            Some(entry) => Ok(map_bits::MAPPED | if entry.writable { map_bits::WRITABLE } else { 0 }),
            None => Ok(0),
        }
    }

    pub fn guarantee(&mut self, va: u64, on: u64) -> Result<u64, Error> {
        if va % 4096 != 0 {
            return Err(Error::Misaligned);
        }
        if !in_dynamic_window(va) {
            return Err(Error::BadAddress);
        }
        let index = self.current;
        let on = on != 0;
        if self.envs[index].mem.slots.get(va).is_none() {
            // Only in the software TLB: bring it back into a slot first.
            let entry = self.envs[index].mem.stlb.lookup(va).ok_or(Error::InvalidArgument)?;
            return self.install(index, va, entry.frame_pa, entry.writable, on).map(|_| 0);
        }
        let evicted = self.envs[index].mem.slots.set_guaranteed(va, on).map_err(from_slot_error)?;
        self.evicted(index, evicted);
        Ok(0)
    }

    pub fn key_bench(&mut self, lo: u64, hi: u64, iterations: u64) -> Result<u64, Error> {
        if !self.benchmarks {
            return Err(Error::PermissionDenied);
        }
        if !(1..=100_000).contains(&iterations) {
            return Err(Error::InvalidArgument);
        }
        let env_id = self.env_id(self.current);
        let key = from_abi(lo, hi);
        self.vm.table.check(key, env_id, Rights::READ)?;
        let start = crate::arch::cpu::rdtsc();
        for _ in 0..iterations {
            let _ = core::hint::black_box(self.vm.table.check(core::hint::black_box(key), env_id, Rights::READ));
        }
        Ok(crate::arch::cpu::rdtsc() - start)
    }

    pub fn revoke_done(&mut self) -> Result<u64, Error> {
        Ok(self.envs[self.current].mem.owed)
    }

    /// A not-present page fault at `va`: refill it from the software TLB
    /// if the environment mapped that page before. True if refilled.
    pub fn stlb_refill(&mut self, va: u64, error_code: u64) -> bool {
        let present = error_code & 1 != 0;
        let write = error_code & 2 != 0;
        if present || !in_dynamic_window(va) {
            return false;
        }
        let index = self.current;
        let Some(entry) = self.envs[index].mem.stlb.lookup(va) else {
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
            match self.envs[index].mem.slots.insert(page, entry.frame_pa, entry.writable, false) {
                Ok(evicted) => self.evicted(index, evicted),
                Err(_) => return false,
            }
            // A not-present fault: no stale TLB entry to flush.
            written = self.envs[index]
                .space
                .as_mut()
                .is_some_and(|space| space.write_leaf(entry.pte, entry.frame_pa, page_flags(entry.writable)));
        }
        if !written && self.install(index, page, entry.frame_pa, entry.writable, false).is_err() {
            return false;
        }
        bump(&COUNTERS.stlb_hits);
        true
    }

    /// The context-switch policy's work when env `index` is switched in.
    pub fn switch_in_tlb(&mut self, index: usize) {
        if self.vm.policy == TlbPolicy::Stlb {
            // Only guaranteed mappings survive; the rest refault through
            // the software TLB. The CR3 load that follows flushes the TLB.
            let env = &mut self.envs[index];
            let rmap = &mut self.vm.rmap;
            let EnvMemory { slots, stlb, .. } = &mut env.mem;
            if let Some(space) = env.space.as_mut() {
                slots.drain_ordinary_with(|slot| {
                    let va = slot.va_page << 12;
                    space.unmap(va);
                    if !stlb.lookup(va).is_some_and(|e| e.frame_pa == slot.frame_pa) {
                        rmap.remove(slot.frame_pa, index, va);
                    }
                });
            }
        }
    }

    /// The environment furthest over its quota, other than `asker`.
    fn pick_victim(&self, asker: usize) -> Option<usize> {
        self.envs
            .iter()
            .enumerate()
            .filter(|(i, e)| *i != asker && e.is_runnable())
            .map(|(i, e)| (i, e.mem.charged_frames() as i64 - e.mem.quota_frames as i64))
            .filter(|&(_, over)| over > 0)
            .max_by_key(|&(_, over)| over)
            .map(|(i, _)| i)
    }

    /// Ask env `victim` to give back frames (no-op while a request is open).
    fn request_revocation(&mut self, victim: usize) {
        let now = crate::arch::cpu::rdtsc();
        let deadline = now + self.vm.revoke_deadline_tsc;
        let mem = &mut self.envs[victim].mem;
        if mem.owed > 0 {
            return;
        }
        let over = mem.charged_frames().saturating_sub(mem.quota_frames);
        mem.owed = over.min(REVOKE_BATCH);
        mem.deadline_tsc = deadline;
        mem.pending.push(PendingUpcall {
            kind: UpcallKind::Revocation,
            vector: REVOKE_REQUEST,
            fault_addr: mem.owed,
            error_code: deadline,
        });
        bump(&COUNTERS.revocation_requests);
        log::debug!("asked env {} for {} frames", self.envs[victim].id, self.envs[victim].mem.owed);
    }

    /// Called on every timer tick: run the abort protocol on every
    /// environment whose repossession deadline passed.
    pub fn check_revocation_deadlines(&mut self) {
        let now = crate::arch::cpu::rdtsc();
        for index in 0..self.envs.len() {
            let mem = &self.envs[index].mem;
            if mem.owed > 0 && now >= mem.deadline_tsc && self.envs[index].is_runnable() {
                self.abort_protocol(index);
            }
        }
    }

    /// Take the owed frames by force: newest first, every mapping removed,
    /// each recorded in the repossession vector; then tell the libOS.
    fn abort_protocol(&mut self, index: usize) {
        let take = self.envs[index].mem.owed.min(self.envs[index].mem.held.len() as u64);
        for _ in 0..take {
            let Some(frame) = self.envs[index].mem.held.pop() else { break };
            let va = self.unmap_frame_everywhere(frame * 4096, index);
            let _ = self.vm.table.revoke(frame);
            self.release_pool_frame(frame);
            self.record_repossession(index, frame * 4096, va);
            bump(&COUNTERS.frames_repossessed);
        }
        let env = &mut self.envs[index];
        env.mem.owed = 0;
        env.mem.pending.push(PendingUpcall { kind: UpcallKind::Revocation, vector: REVOKE_ABORTED, fault_addr: take, error_code: 0 });
        log::info!("abort protocol: took {} frame(s) from env {} ({})", take, env.id, env.name);
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

    /// An environment ended: unmap and return its pool frames, drop the
    /// keys shared to it and those it paid for, and remove its mappings of
    /// others' frames.
    pub fn reclaim_memory(&mut self, index: usize) {
        let slots: Vec<Slot> = self.envs[index].mem.slots.iter().collect();
        if let Some(space) = self.envs[index].space.as_mut() {
            for slot in &slots {
                space.unmap(slot.va_page << 12);
            }
        }
        self.envs[index].mem.stlb.clear();
        self.vm.rmap.remove_env(index);
        let owned = self.vm.table.reclaim_env(self.env_id(index));
        for frame in owned {
            self.unmap_frame_everywhere(frame * 4096, index);
            self.release_pool_frame(frame);
        }
        self.envs[index].mem.held.clear();
        self.envs[index].mem.owed = 0;
    }
}
