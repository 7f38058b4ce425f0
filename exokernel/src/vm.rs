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

use crate::arch::paging::{self, Flags};
use crate::kernel::{bump, Kernel, COUNTERS};
use crate::memory;
use crate::umem;
use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use exokernel::keys::{FrameKey as KernelKey, FrameTable, Rights};
use exokernel::slots::{Slot, SlotError, SlotSet};
use exokernel::stlb::{Stlb, StlbEntry};
use shared_abi::manifest::TlbPolicy;
use shared_abi::start::{RepossessionVector, DYNAMIC_BASE, DYNAMIC_END, REPOSSESSION_SLOTS};
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
    pub stlb: Stlb,
    pub quota_frames: u64,
    /// Pool frames it owns (frame numbers), oldest first.
    pub held: Vec<u64>,
    /// Frames still owed to an open repossession request, and its deadline.
    pub owed: u64,
    pub deadline_tsc: u64,
    /// Frame of its read-only repossession vector page.
    pub repossession_pa: u64,
    pub pending: PendingUpcalls,
    /// PCID policy: its tagged TLB entries may be stale (flush on next load).
    pub needs_flush: bool,
}

impl EnvMemory {
    pub fn new(quota_frames: u64, tlb_slots: u64, repossession_pa: u64) -> Self {
        EnvMemory {
            slots: SlotSet::new(tlb_slots as usize, GUARANTEED_MAX),
            stlb: Stlb::new(STLB_ENTRIES),
            quota_frames,
            held: Vec::new(),
            owed: 0,
            deadline_tsc: 0,
            repossession_pa,
            pending: PendingUpcalls::default(),
            needs_flush: false,
        }
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
    /// Reverse map: every (environment index, page) a frame was mapped at
    /// with `map`, so freeing or revoking a frame finds its mappings
    /// without scanning every software TLB.
    /// Ordered by frame, so one frame's mappings are one range.
    pub rmap: BTreeSet<(u64, usize, u64)>,
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
            bump(&COUNTERS.slot_evictions);
        }
    }

    /// Put a mapping into one of env `index`'s TLB slots (and its page
    /// table), evicting the oldest ordinary slot if they are all taken.
    fn install(&mut self, index: usize, va: u64, frame_pa: u64, writable: bool, guaranteed: bool) -> Result<u64, Error> {
        let evicted = self.envs[index].mem.slots.insert(va, frame_pa, writable, guaranteed).map_err(from_slot_error)?;
        self.evicted(index, evicted);
        let loaded = self.is_loaded(index);
        let space = self.envs[index].space.as_mut().ok_or(Error::NoSuchEnv)?;
        let pte_pa = match space.map_replace(va, frame_pa, page_flags(writable), &mut memory::alloc_frame) {
            Ok(pte_pa) => pte_pa,
            Err(error) => {
                self.envs[index].mem.slots.remove(va);
                return Err(match error {
                    paging::MapError::NoMemory => Error::NoMemory,
                    _ => Error::BadAddress,
                });
            }
        };
        if loaded {
            paging::invlpg(va);
        }
        Ok(pte_pa)
    }

    /// Remove every mapping of a frame in every environment (slots, page
    /// tables, software TLBs); returns the first page it was mapped at in
    /// env `owner`, if any.
    fn unmap_frame_everywhere(&mut self, frame_pa: u64, owner: usize) -> u64 {
        let mut owner_va = 0;
        let mappings: Vec<(u64, usize, u64)> = self.vm.rmap.range((frame_pa, 0, 0)..=(frame_pa, usize::MAX, u64::MAX)).copied().collect();
        for &mapping in &mappings {
            self.vm.rmap.remove(&mapping);
        }
        for (_, index, va) in mappings {
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

    fn rmap_remove(&mut self, frame_pa: u64, index: usize, va: u64) {
        self.vm.rmap.remove(&(frame_pa, index, va));
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
        if self.vm.pool_used >= self.vm.pool_frames {
            let me = &self.envs[index].mem;
            if me.held.len() as u64 >= me.quota_frames {
                return Err(Error::QuotaExceeded);
            }
            return match self.pick_victim(index) {
                Some(victim) => {
                    self.request_revocation(victim);
                    Err(Error::Again)
                }
                None => Err(Error::NoMemory),
            };
        }
        let frame_pa = if want_pa == 0 {
            memory::alloc_frame().ok_or(Error::NoMemory)?
        } else {
            if !memory::alloc_frame_at(want_pa) {
                return Err(Error::NoMemory);
            }
            want_pa
        };
        paging::zero_frame(frame_pa);
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
        let frame_pa = info.frame * 4096;
        let pte_pa = self.install(index, va, frame_pa, writable, flags & map_flags::GUARANTEED != 0)?;
        self.envs[index].mem.stlb.insert(StlbEntry::new(va, frame_pa, writable).with_pte(pte_pa));
        self.vm.rmap.insert((frame_pa, index, va));
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
        match slot.map(|s| s.frame_pa).or(entry.map(|e| e.frame_pa)) {
            Some(frame_pa) => {
                self.rmap_remove(frame_pa, index, va);
                Ok(0)
            }
            None => Err(Error::InvalidArgument),
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
        if entry.pte_pa != 0 {
            // The page-table entry is known: account the slot and write it.
            match self.envs[index].mem.slots.insert(page, entry.frame_pa, entry.writable, false) {
                Ok(evicted) => self.evicted(index, evicted),
                Err(_) => return false,
            }
            // A not-present fault: no stale TLB entry to flush.
            paging::write_pte(entry.pte_pa, entry.frame_pa, page_flags(entry.writable));
        } else if self.install(index, page, entry.frame_pa, entry.writable, false).is_err() {
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
            if let Some(space) = env.space.as_mut() {
                env.mem.slots.drain_ordinary_with(|slot| {
                    space.unmap(slot.va_page << 12);
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
            .map(|(i, e)| (i, e.mem.held.len() as u64 as i64 - e.mem.quota_frames as i64))
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
        let over = mem.held.len() as u64 - mem.quota_frames.min(mem.held.len() as u64);
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
            let vector = paging::phys_mut::<RepossessionVector>(self.envs[index].mem.repossession_pa);
            let at = (vector.count as usize) % REPOSSESSION_SLOTS;
            vector.entries[at].frame_pa = frame * 4096;
            vector.entries[at].va = va;
            vector.count += 1;
            bump(&COUNTERS.frames_repossessed);
        }
        let env = &mut self.envs[index];
        env.mem.owed = 0;
        env.mem.pending.push(PendingUpcall { kind: UpcallKind::Revocation, vector: REVOKE_ABORTED, fault_addr: take, error_code: 0 });
        log::info!("abort protocol: took {} frame(s) from env {} ({})", take, env.id, env.name);
    }

    /// An environment ended: unmap and return its pool frames, drop the
    /// keys shared to it, and remove its mappings of others' frames.
    pub fn reclaim_memory(&mut self, index: usize) {
        let slots: Vec<Slot> = self.envs[index].mem.slots.iter().collect();
        if let Some(space) = self.envs[index].space.as_mut() {
            for slot in &slots {
                space.unmap(slot.va_page << 12);
            }
        }
        self.envs[index].mem.stlb.clear();
        self.vm.rmap.retain(|&(_, i, _)| i != index);
        let owned = self.vm.table.reclaim_env(self.env_id(index));
        for frame in owned {
            self.unmap_frame_everywhere(frame * 4096, index);
            self.release_pool_frame(frame);
        }
        self.envs[index].mem.held.clear();
        self.envs[index].mem.owed = 0;
    }
}
