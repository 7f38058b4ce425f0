//! Environments created at run time, the exokernel way: a parent creates
//! an empty environment, builds its address space from frames it holds
//! keys for (`frame_alloc` for the child, `frame_share`, `env_map`,
//! `env_write`), sets its registers and upcall table, and starts it on its
//! family's time; it can end it (`env_kill`) and collect how it ended
//! (`env_reap`). The kernel keeps no process abstraction: fork, exec and
//! wait are the libOS's, built from these.
//!
//! Rules (each checked on every call):
//! * `env_map`, `env_write`, `env_start` and `frame_alloc(for_env)` act on
//!   the caller's own children only (`env_write` only into frames the child
//!   owns alone); `env_kill` on run-time members of the caller's family (a
//!   booted environment and everything created under it), never on the
//!   root; `env_wake` on any member of the family;
//! * a child's frame quota and kernel-memory budget are carved out of its
//!   parent's and come back when it ends; it never borrows beyond them;
//! * ending reclaims everything, whoever created it (see `end_env`).

use super::Kernel;
use crate::arch::trap::TrapFrame;
use crate::env::{Env, EnvState};
use crate::umem::{self, UserSlice};
use crate::vm::ChildMemory;
use alloc::format;
use alloc::string::String;
use kcore::kmem::KmemUse;
use kcore::usercheck::{check_user_entry, check_user_range};
use shared_abi::manifest::{MAX_KMEM_KIB, MAX_NAME_LEN};
use shared_abi::syscall::{
    batch_flags, EnvCreate, EnvEnd, Error, FrameKey, MapRecord, Rights, StartRegs, MAX_MAP_BATCH,
};
use shared_abi::upcall::UpcallTable;

/// Most TLB slots a run-time environment may have.
pub const MAX_CHILD_TLB_SLOTS: u64 = 512;
/// Bytes of one `env_map_batch` record.
const RECORD_BYTES: usize = core::mem::size_of::<MapRecord>();
/// Largest `archive_read` in one call.
pub const MAX_ARCHIVE_READ: u64 = 64 * 1024;

impl Kernel {
    /// The index of the caller's live child with id `id`.
    fn my_child(&self, id: u64) -> Result<usize, Error> {
        let child = self.envs.live_index_of(id).ok_or(Error::NoSuchEnv)?;
        if self.envs.get(child).parent != Some(self.current()) {
            return Err(Error::PermissionDenied);
        }
        Ok(child)
    }

    /// The index of a live run-time member of the caller's family with id
    /// `id` (not the caller).
    fn family_member(&self, id: u64) -> Result<usize, Error> {
        let me = self.current();
        let target = self.envs.live_index_of(id).ok_or(Error::NoSuchEnv)?;
        if target == me {
            return Err(Error::InvalidArgument);
        }
        let env = self.envs.get(target);
        if env.family != self.envs.get(me).family || !env.run_time {
            return Err(Error::PermissionDenied);
        }
        Ok(target)
    }

    /// `env_create(spec_ptr) -> child_id`.
    pub fn env_create(&mut self, spec_ptr: u64) -> Result<u64, Error> {
        let me = self.current();
        let space = self.current_space()?;
        let spec: EnvCreate = umem::read_value(space, spec_ptr)?;
        if spec.name_len == 0 || spec.name_len > MAX_NAME_LEN as u64 {
            return Err(Error::BadLength);
        }
        let mut name = [0u8; MAX_NAME_LEN];
        UserSlice::new(space, spec.name_ptr, spec.name_len, 1)?.read(&mut name[..spec.name_len as usize])?;
        let name = core::str::from_utf8(&name[..spec.name_len as usize]).map_err(|_| Error::InvalidArgument)?;
        if !(1..=MAX_CHILD_TLB_SLOTS).contains(&spec.tlb_slots) || !(16..=MAX_KMEM_KIB).contains(&spec.kmem_kib) {
            return Err(Error::InvalidArgument);
        }
        let index = self.envs.free_index().ok_or(Error::NoMemory)?;
        let child = ChildMemory {
            quota_frames: spec.quota_frames,
            kmem_limit: spec.kmem_kib * 1024,
            tlb_slots: spec.tlb_slots,
        };
        self.memory.carve(me, &child, self.kmem_elsewhere(me))?;
        let id = self.envs.take_id();
        if let Err(error) = self.memory.add_child(index, id, &child) {
            self.memory.give_back(me, child.quota_frames, child.kmem_limit);
            return Err(error);
        }
        let family = self.envs.get(me).family;
        let mut env = Env::new(id, String::from(name));
        env.state = EnvState::Created;
        env.parent = Some(me);
        env.family = family;
        env.run_time = true;
        self.envs.place(index, env);
        self.cpu.add_child(index, family);
        self.net.add_env(index);
        Ok(id)
    }

    /// `env_start(child, regs_ptr, upcalls_ptr)`.
    pub fn env_start(&mut self, child_id: u64, regs_ptr: u64, upcalls_ptr: u64) -> Result<u64, Error> {
        let child = self.my_child(child_id)?;
        if self.envs.get(child).state != EnvState::Created {
            return Err(Error::InvalidArgument);
        }
        let space = self.current_space()?;
        let regs: StartRegs = umem::read_value(space, regs_ptr)?;
        check_user_entry(regs.rip)?;
        check_user_range(regs.rsp.saturating_sub(8), 8, 1)?;
        let upcalls = if upcalls_ptr == 0 { UpcallTable::default() } else { check_upcalls(space, upcalls_ptr)? };
        let r = regs.regs;
        let mut context = TrapFrame::new_user(regs.rip, regs.rsp, r.rdi);
        (context.rax, context.rbx, context.rcx, context.rdx, context.rsi, context.rbp) =
            (r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rbp);
        (context.r8, context.r9, context.r10, context.r11) = (r.r8, r.r9, r.r10, r.r11);
        (context.r12, context.r13, context.r14, context.r15) = (r.r12, r.r13, r.r14, r.r15);
        let env = self.envs.get_mut(child);
        env.upcalls = upcalls;
        // A run-time environment's mappings can change under it (its
        // parent maps for it): its upcalls always take the slow path.
        env.fast = None;
        env.state = EnvState::Runnable;
        self.cpu.start(child, context);
        Ok(0)
    }

    /// `env_kill(target, code)`.
    pub fn env_kill(&mut self, target_id: u64, code: u64) -> Result<u64, Error> {
        let target = self.family_member(target_id)?;
        let by = self.envs.get(self.current()).id;
        self.end_env(target, EnvState::Killed(format!("ended by env {}", by)), code as i64);
        Ok(0)
    }

    /// `env_map(child, va, key, flags)`: the child's key, checked for the child.
    pub fn env_map(&mut self, child_id: u64, va: u64, key: FrameKey, flags: u64) -> Result<u64, Error> {
        let child = self.my_child(child_id)?;
        let other = self.kmem_elsewhere(child);
        self.memory.map(child, va, key, flags, other, crate::arch::cpu::rdtsc())
    }

    /// `env_map_batch(child, records_ptr, count) -> done`: the records are
    /// read (and checked writable) before any is acted on, done in order,
    /// each all or nothing, until one fails; the keys of co-owning records
    /// are written back. Returns the records done, or the first record's
    /// error if none was.
    pub fn env_map_batch(&mut self, child_id: u64, records_ptr: u64, count: u64) -> Result<u64, Error> {
        let child = self.my_child(child_id)?;
        if count > MAX_MAP_BATCH {
            return Err(Error::BadLength);
        }
        if count == 0 {
            return Ok(0);
        }
        let me = self.current();
        let len = count * RECORD_BYTES as u64;
        self.memory.prefault(me, records_ptr, len);
        let mut buf = [0u8; MAX_MAP_BATCH as usize * RECORD_BYTES];
        let bytes = &mut buf[..len as usize];
        {
            let records = UserSlice::new(self.current_space()?, records_ptr, len, 8)?;
            records.read(bytes)?;
            // Writable too (written back unchanged), so the keys minted
            // below can always be handed back.
            records.write(bytes)?;
        }
        let other = self.kmem_elsewhere(child);
        let now = crate::arch::cpu::rdtsc();
        let mut done = 0;
        let mut minted = false;
        let mut failure = None;
        for record in bytes.as_chunks_mut::<RECORD_BYTES>().0 {
            match self.map_record(me, child, record, other, now) {
                Ok(new_key) => minted |= new_key,
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
            done += 1;
        }
        if minted {
            UserSlice::new(self.current_space()?, records_ptr, len, 8)?.write(bytes)?;
        }
        match failure {
            Some(error) if done == 0 => Err(error),
            _ => Ok(done),
        }
    }

    /// Do one `env_map_batch` record (its 32 bytes, whose key a co-owning
    /// record replaces with the child's); true if it minted a key.
    fn map_record(
        &mut self,
        me: usize,
        child: usize,
        record: &mut [u8; RECORD_BYTES],
        other: KmemUse,
        now: u64,
    ) -> Result<bool, Error> {
        let word = |at: usize| u64::from_le_bytes(record[at * 8..at * 8 + 8].try_into().unwrap_or_default());
        let (va, flags, key) = (word(0), word(1), FrameKey { handle: word(2), mac: word(3) });
        if flags & !batch_flags::KNOWN != 0 {
            return Err(Error::InvalidArgument);
        }
        let map_flags = flags & 0xf;
        let rights = flags >> batch_flags::RIGHTS_SHIFT & 0x7;
        if flags & batch_flags::CO_OWN == 0 {
            if rights != 0 {
                return Err(Error::InvalidArgument);
            }
            self.memory.map(child, va, key, map_flags, other, now)?;
            return Ok(false);
        }
        let rights = Rights::from_word(rights).ok_or(Error::InvalidArgument)?;
        let new_key = self.memory.co_own_and_map(me, child, key, rights, va, map_flags, other, now)?;
        record[16..24].copy_from_slice(&new_key.handle.to_le_bytes());
        record[24..32].copy_from_slice(&new_key.mac.to_le_bytes());
        Ok(true)
    }

    /// `env_write(child, va, src, len)`.
    pub fn env_write(&mut self, child_id: u64, va: u64, src: u64, len: u64) -> Result<u64, Error> {
        let child = self.my_child(child_id)?;
        self.memory.env_write(self.current(), child, va, src, len)
    }

    /// The environment `frame_alloc(.., for_env)` allocates for: the caller
    /// (0) or one of its children.
    pub fn alloc_owner(&self, for_env: u64) -> Result<usize, Error> {
        if for_env == 0 {
            Ok(self.current())
        } else {
            self.my_child(for_env)
        }
    }

    /// `env_reap(out_ptr) -> child_id`.
    pub fn env_reap(&mut self, out: u64) -> Result<u64, Error> {
        let me = self.current();
        umem::write_value(self.current_space()?, out, &EnvEnd::default())?;
        if self.envs.get(me).ended_children.is_empty() {
            return Err(if self.envs.children_of(me).next().is_some() { Error::Again } else { Error::NoSuchEnv });
        }
        let end = self.envs.get_mut(me).ended_children.remove(0);
        umem::write_value(self.current_space()?, out, &end)?;
        Ok(end.id)
    }

    /// `env_wake(target)`.
    pub fn env_wake(&mut self, target_id: u64) -> Result<u64, Error> {
        let me = self.current();
        let target = self.envs.live_index_of(target_id).ok_or(Error::NoSuchEnv)?;
        if self.envs.get(target).family != self.envs.get(me).family {
            return Err(Error::PermissionDenied);
        }
        self.cpu.wake(target);
        Ok(0)
    }

    /// `archive_read(offset, buf, len) -> bytes`.
    pub fn archive_read(&mut self, offset: u64, buf: u64, len: u64) -> Result<u64, Error> {
        if len > MAX_ARCHIVE_READ {
            return Err(Error::BadLength);
        }
        let archive = self.archive;
        let start = usize::try_from(offset).ok().filter(|&o| o <= archive.len()).ok_or(Error::InvalidArgument)?;
        let count = (len as usize).min(archive.len() - start);
        if count == 0 {
            return Ok(0);
        }
        self.memory.prefault(self.current(), buf, count as u64);
        UserSlice::new(self.current_space()?, buf, count as u64, 1)?.write(&archive[start..start + count])?;
        Ok(count as u64)
    }
}

/// Read and check an upcall table from user memory: every entry a user
/// address (or 0), and a stack in the user half large enough for two
/// frames when any entry is set.
pub fn check_upcalls(space: &crate::arch::paging::AddressSpace, ptr: u64) -> Result<UpcallTable, Error> {
    let table: UpcallTable = umem::read_value(space, ptr)?;
    let entries = [
        table.exception_entry,
        table.page_fault_entry,
        table.interrupt_entry,
        table.protected_entry,
        table.revocation_entry,
    ];
    for entry in entries {
        if entry != 0 {
            check_user_entry(entry)?;
        }
    }
    if entries.iter().any(|&e| e != 0) {
        check_user_range(table.stack_base, table.stack_len, 16)?;
        if table.stack_len < 2 * shared_abi::upcall::FRAME_SIZE as u64 + 128 {
            return Err(Error::BadLength);
        }
    }
    Ok(table)
}
