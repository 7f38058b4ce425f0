//! The system-call ABI: numbers, error codes, flags, key types and the
//! return convention. The user-side stubs that make the calls are in the
//! libOS runtime (`libos_runtime::syscall`).
//!
//! Convention: the `syscall` instruction with the number in `rax` and up to
//! six arguments in `rdi, rsi, rdx, r10, r8, r9`. The kernel returns one
//! value in `rax`: a non-negative value is success, `-(code)` an [`Error`].
//! `rcx` and `r11` are clobbered by the instruction itself; every other
//! register is preserved. An unknown number returns
//! [`Error::UnknownSyscall`], never anything worse.

/// System-call numbers. docs/ABI.md describes each one.
pub mod nr {
    /// Do nothing and return 0: the user/kernel crossing alone.
    pub const NULL: u64 = 0;
    /// `console_write(ptr, len) -> len`: write bytes to the console.
    pub const CONSOLE_WRITE: u64 = 1;
    /// `exit(code) -> !`: end the calling environment.
    pub const EXIT: u64 = 2;
    /// `yield() -> 0`: give the rest of the time slice to the next environment.
    pub const YIELD: u64 = 3;
    /// `set_upcalls(table_ptr) -> 0`: register the upcall entry points.
    pub const SET_UPCALLS: u64 = 4;
    /// `stats(out_ptr, len) -> len`: copy the kernel's event counters.
    pub const STATS: u64 = 5;
    /// `frame_alloc(want_pa, rights, out_key_ptr, for_env) -> frame_pa`:
    /// allocate a frame (any when `want_pa` is 0, else that one) and write
    /// its key. `for_env` 0 is the caller; else one of the caller's
    /// children, which then owns the frame (charged to its quota) and the
    /// key written is the child's, which the parent may present for it
    /// (`env_map`).
    pub const FRAME_ALLOC: u64 = 6;
    /// `frame_free(key_lo, key_hi) -> 0`: give a frame back (owner only).
    pub const FRAME_FREE: u64 = 7;
    /// `frame_share(key_lo, key_hi, to_env, rights, out_key_ptr, flags) -> 0`:
    /// mint `to_env` a key with equal or fewer rights; with
    /// [`share_flags::CO_OWN`](super::share_flags::CO_OWN) the new key co-owns the frame.
    pub const FRAME_SHARE: u64 = 8;
    /// `frame_query(key_lo, key_hi, out_ptr) -> 0`: describe a frame.
    pub const FRAME_QUERY: u64 = 9;
    /// `map(va, key_lo, key_hi, flags) -> 0`: install a mapping of a keyed
    /// frame into one of the caller's TLB slots (see [`map_flags`](super::map_flags)).
    pub const MAP: u64 = 10;
    /// `unmap(va) -> 0`: remove a mapping from slots and software TLB.
    pub const UNMAP: u64 = 11;
    /// `map_query(va, clear) -> bits`: state of a mapping (see
    /// [`map_bits`](super::map_bits)); `clear` may ask to clear the accessed bit (1) and the
    /// dirty bit (2) after reading them.
    pub const MAP_QUERY: u64 = 12;
    /// `guarantee(va, on) -> 0`: make a mapping guaranteed (survives every
    /// context switch, never evicted) or ordinary again.
    pub const GUARANTEE: u64 = 13;
    /// `revoke_done() -> frames_still_owed`: the answer to a repossession
    /// request is complete (frames were freed with `frame_free`).
    pub const REVOKE_DONE: u64 = 14;
    /// `key_bench(key_lo, key_hi, iterations) -> tsc_ticks`: a measurement
    /// call: run the kernel's hot-path key check `iterations` (1..=100000)
    /// times on the key and return the TSC ticks it took (instructions
    /// under `-icount`). Checks the key once first: a bad key is an error.
    pub const KEY_BENCH: u64 = 15;
    /// `slot_alloc(position) -> slot_key`: own time slot `position` of the
    /// slot vector (`ANY_SLOT`: the first free one). The key is
    /// `generation << 32 | position`.
    pub const SLOT_ALLOC: u64 = 16;
    /// `slot_free(slot_key) -> 0`: give a slot back.
    pub const SLOT_FREE: u64 = 17;
    /// `pct_call(target_env, m0, m1, m2, m3) -> 0`: protected control
    /// transfer: donate the CPU to `target_env`'s protected entry with the
    /// message in registers and wait for its reply, which comes back in
    /// `rsi, rdx, r10, r8`.
    pub const PCT_CALL: u64 = 18;
    /// `pct_reply(r0, r1, r2, r3) -> !`: end the protected-entry activation;
    /// for a call, resume the caller with the reply.
    pub const PCT_REPLY: u64 = 19;
    /// `pct_send(target_env, m0, m1, m2, m3) -> 0`: asynchronous transfer:
    /// queue the message; the target's protected entry runs it when the
    /// target next runs.
    pub const PCT_SEND: u64 = 20;
    /// `env_info(out_ptr) -> 0`: the caller's CPU accounting ([`EnvInfo`](super::EnvInfo)).
    pub const ENV_INFO: u64 = 21;
    /// `env_create(spec_ptr) -> child_id`: create an empty environment
    /// (an address space holding only the kernel half) as the caller's
    /// child, with a frame quota and kernel-memory budget carved out of the
    /// caller's ([`EnvCreate`](super::EnvCreate)). It runs only once started.
    pub const ENV_CREATE: u64 = 28;
    /// `env_start(child, regs_ptr, upcalls_ptr) -> 0`: start a created
    /// child with these registers ([`StartRegs`](super::StartRegs)) and
    /// upcall table (0: none); it runs on its family's time slots.
    pub const ENV_START: u64 = 29;
    /// `env_kill(target, code) -> 0`: end a run-time environment of the
    /// caller's family (not the caller) and reclaim everything it held.
    pub const ENV_KILL: u64 = 30;
    /// `env_map(child, va, key_lo, key_hi, flags) -> 0`: `map` into a
    /// child's address space, with a key the child holds.
    pub const ENV_MAP: u64 = 31;
    /// `env_write(child, va, src_ptr, len) -> len`: copy bytes of the
    /// caller's memory into pages mapped in a child (up to 64 KiB).
    pub const ENV_WRITE: u64 = 32;
    /// `env_reap(out_ptr) -> child_id`: collect the end of one ended child
    /// ([`EnvEnd`](super::EnvEnd)); `Again` while children live but none
    /// has ended, `NoSuchEnv` when there are none.
    pub const ENV_REAP: u64 = 33;
    /// `block(deadline_tsc) -> 0`: sleep until woken (`env_wake`, a
    /// child's end, an asynchronous transfer, console input it waits for)
    /// or, if `deadline_tsc` is not 0, until the TSC passes it (checked at
    /// slot boundaries); returns at once if a wake-up is pending.
    pub const BLOCK: u64 = 34;
    /// `env_wake(target) -> 0`: wake an environment of the caller's family.
    pub const ENV_WAKE: u64 = 35;
    /// `archive_read(offset, buf, len) -> bytes`: copy bytes of the boot
    /// archive (`crate::archive`), read-only public data, at most 64 KiB a call.
    pub const ARCHIVE_READ: u64 = 36;
    /// `console_read(buf, len) -> bytes`: take bytes the console received
    /// (only the family of the environment the manifest names `console =
    /// true`); `Again` when none are waiting (the caller is woken when some
    /// arrive).
    pub const CONSOLE_READ: u64 = 37;
    /// `map_query_range(va, pages, out_ptr, flags) -> pages_set`: one bit
    /// per page of `pages` (1..=[`MAX_QUERY_PAGES`](super::query_range::MAX_QUERY_PAGES))
    /// pages from `va`: the dirty (or accessed) bit of its page-table
    /// entry, written as `u64` words at `out_ptr` (page `i` is bit `i % 64`
    /// of word `i / 64`), and cleared as `flags` asks
    /// ([`query_range`](super::query_range)). Appel and Li's DIRTY for a
    /// whole range in one kernel entry.
    pub const MAP_QUERY_RANGE: u64 = 38;
    /// `env_map_batch(child, records_ptr, count) -> done`: up to
    /// [`MAX_MAP_BATCH`](super::MAX_MAP_BATCH) `env_map` calls in one entry,
    /// each record ([`MapRecord`](super::MapRecord)) optionally making the
    /// child a co-owner of the caller's frame first (its new key written
    /// back into the record). Stops at the first record that fails:
    /// returns the records done, or that record's error if it was the first.
    pub const ENV_MAP_BATCH: u64 = 39;
    /// One past the highest number in use (22..=27 are the network
    /// calls, numbered in [`crate::net::nr`]).
    pub const COUNT: u64 = 40;
    /// `slot_alloc` position meaning "any free slot".
    pub const ANY_SLOT: u64 = u64::MAX;
}

/// Flags for [`nr::MAP`].
pub mod map_flags {
    /// Map writable (the key must carry the write right).
    pub const WRITE: u64 = 1;
    /// Mark the mapping guaranteed at once.
    pub const GUARANTEED: u64 = 2;
    /// Replace a mapping the page already has (else `AlreadyMapped`).
    pub const REPLACE: u64 = 4;
    /// Map executable: only with `GUARANTEED` and without `WRITE`, and only
    /// by an environment created at run time (or its parent for it), whose
    /// program is built from keyed frames.
    pub const EXEC: u64 = 8;
}

/// Flags for [`nr::FRAME_SHARE`].
pub mod share_flags {
    /// The new key co-owns the frame: the frame lives while any owner
    /// holds it, and is charged to each owner's quota.
    pub const CO_OWN: u64 = 1;
}

/// Most records one `env_map_batch` call takes.
pub const MAX_MAP_BATCH: u64 = 64;

/// One record of `env_map_batch` (32 bytes, in the caller's memory, which
/// the kernel reads and writes back).
///
/// `flags`: the [`map_flags`] of the mapping in bits 0-3;
/// [`batch_flags::CO_OWN`] in bit 8; with it, the rights of the child's
/// new key in bits 16-18 ([`batch_flags::RIGHTS_SHIFT`]). Without
/// `CO_OWN`, `key` is a key the child holds (as for `env_map`); with it,
/// `key` is the caller's owner key to the frame, and the kernel replaces it
/// with the child's new co-owner key once the record is done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct MapRecord {
    pub va: u64,
    pub flags: u64,
    pub key: FrameKey,
}

impl MapRecord {
    /// Map `key` (the child's) at `va` with `map_flags`.
    pub const fn map(va: u64, key: FrameKey, map_flags: u64) -> MapRecord {
        MapRecord { va, flags: map_flags, key }
    }

    /// Make the child co-owner (with `rights`) of the frame of `key` (the
    /// caller's own), then map it at `va` with `map_flags`.
    pub const fn co_own(va: u64, key: FrameKey, rights: Rights, map_flags: u64) -> MapRecord {
        MapRecord {
            va,
            flags: map_flags | batch_flags::CO_OWN | (rights.bits() as u64) << batch_flags::RIGHTS_SHIFT,
            key,
        }
    }
}

/// Bits of [`MapRecord::flags`] beside the map flags.
pub mod batch_flags {
    /// The child becomes a co-owner of the frame first (`frame_share` with
    /// `CO_OWN`), and the record's key is replaced by the child's.
    pub const CO_OWN: u64 = 1 << 8;
    /// Where the new key's rights sit (with `CO_OWN`).
    pub const RIGHTS_SHIFT: u32 = 16;
    /// Every bit a record may set.
    pub const KNOWN: u64 = 0xf | CO_OWN | 0x7 << RIGHTS_SHIFT;
}

/// What `env_create` reads: the child's resources, carved out of the
/// caller's (returned when the child ends).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct EnvCreate {
    /// Pool frames the child may hold (taken from the caller's quota; a
    /// run-time environment never borrows beyond it).
    pub quota_frames: u64,
    /// Its kernel-memory budget in KiB (taken from the caller's).
    pub kmem_kib: u64,
    /// Its TLB slots.
    pub tlb_slots: u64,
    /// Its name (console prefix), at most 16 bytes of UTF-8.
    pub name_ptr: u64,
    pub name_len: u64,
}

/// The registers a child starts with (`env_start`): where it starts, its
/// stack, and the general-purpose registers in an upcall frame's layout.
/// Interrupts are on and the segment registers are the kernel's user
/// selectors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct StartRegs {
    pub rip: u64,
    pub rsp: u64,
    pub regs: crate::upcall::Regs,
}

/// How a child ended (`env_reap`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct EnvEnd {
    pub id: u64,
    /// 1: it called `exit`; 0: it was ended (`env_kill`, or by the kernel).
    pub exited: u64,
    /// The `exit` code, or the code `env_kill` gave (the kernel uses -1).
    pub code: i64,
}

/// Bits returned by [`nr::MAP_QUERY`].
pub mod map_bits {
    /// The kernel holds the mapping (in a slot or in the software TLB).
    pub const MAPPED: u64 = 1;
    /// The mapping is in a TLB slot (present in the hardware page table).
    pub const IN_SLOT: u64 = 2;
    pub const WRITABLE: u64 = 4;
    pub const GUARANTEED: u64 = 8;
    /// The hardware set the accessed bit since it was last cleared.
    pub const ACCESSED: u64 = 16;
    /// The hardware set the dirty bit.
    pub const DIRTY: u64 = 32;
}

/// Flags and limits of [`nr::MAP_QUERY_RANGE`].
pub mod query_range {
    /// Clear each page's accessed bit after reading it.
    pub const CLEAR_ACCESSED: u64 = 1;
    /// Clear each page's dirty bit after reading it.
    pub const CLEAR_DIRTY: u64 = 2;
    /// Report the accessed bit instead of the dirty bit.
    pub const REPORT_ACCESSED: u64 = 4;
    /// Report a page whose bits the kernel cannot know (no page-table
    /// entry: not mapped, or only in the software TLB) as set, not clear:
    /// "unknown counts as written", what a write barrier needs.
    pub const UNKNOWN_SET: u64 = 8;
    /// Every flag bit.
    pub const ALL: u64 = CLEAR_ACCESSED | CLEAR_DIRTY | REPORT_ACCESSED | UNKNOWN_SET;
    /// Most pages one call covers (a bitmap of 64 words, 512 bytes).
    pub const MAX_QUERY_PAGES: u64 = 4096;
    /// `u64` words of the bitmap for `pages` pages.
    pub const fn bitmap_words(pages: u64) -> u64 {
        pages.div_ceil(64)
    }
}

bitflags::bitflags! {
    /// What a frame key allows. In registers: the low 8 bits of a word;
    /// the kernel refuses a word with any other bit set.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Rights: u8 {
        /// Map the frame readable.
        const READ = 1;
        /// Map the frame writable.
        const WRITE = 2;
        /// Mint other environments keys to the frame.
        const SHARE = 4;
    }
}

impl Rights {
    /// No rights: the key still names the frame (and lets the owner free it).
    pub const NONE: Rights = Rights::empty();
    /// Every right.
    pub const ALL: Rights = Rights::READ.union(Rights::WRITE).union(Rights::SHARE);

    /// The rights a register word names; None if it has an unknown bit.
    pub const fn from_word(word: u64) -> Option<Rights> {
        if word > u8::MAX as u64 {
            return None;
        }
        Rights::from_bits(word as u8)
    }

    /// The register word for these rights.
    pub const fn word(self) -> u64 {
        self.bits() as u64
    }
}

/// The rights as constants, for `rights::READ | rights::WRITE`.
pub mod rights {
    use super::Rights;
    pub const READ: Rights = Rights::READ;
    pub const WRITE: Rights = Rights::WRITE;
    /// May mint keys for other environments.
    pub const SHARE: Rights = Rights::SHARE;
    pub const ALL: Rights = Rights::ALL;
}

/// An unforgeable frame key, as the kernel minted it: the one key type of
/// both sides (the kernel's grant table stores and compares these). Passed
/// in two registers, `handle` then `mac`.
///
/// ```text
/// handle: 63             32 31                 8 7        0
///         | entry generation |     entry index    |  rights  |
/// mac:    SipHash-2-4(key derived from the boot secret; handle, frame, env, serial)
/// ```
///
/// To a libOS it is opaque but for [`FrameKey::rights`]; only a key the
/// kernel minted (and has not destroyed since) is accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct FrameKey {
    /// Rights, grant-table entry index and entry generation.
    pub handle: u64,
    /// The MAC that makes the key unguessable.
    pub mac: u64,
}

impl FrameKey {
    const RIGHTS_MASK: u64 = 0xff;
    const ENTRY_SHIFT: u32 = 8;
    const ENTRY_MASK: u64 = (1 << 24) - 1;
    const GENERATION_SHIFT: u32 = 32;

    /// Most live keys one grant table can hold: the entry index is 24 bits.
    pub const MAX_ENTRIES: usize = 1 << 24;

    /// The handle word of a key with these parts.
    pub const fn handle_for(rights: Rights, entry_index: usize, entry_generation: u32) -> u64 {
        (entry_generation as u64) << Self::GENERATION_SHIFT
            | (entry_index as u64) << Self::ENTRY_SHIFT
            | rights.bits() as u64
    }

    /// The rights the key claims (unknown bits dropped).
    pub const fn rights(self) -> Rights {
        Rights::from_bits_truncate((self.handle & Self::RIGHTS_MASK) as u8)
    }

    /// The grant-table entry the key names.
    pub const fn entry_index(self) -> usize {
        ((self.handle >> Self::ENTRY_SHIFT) & Self::ENTRY_MASK) as usize
    }

    /// The generation of that entry the key was minted in.
    pub const fn entry_generation(self) -> u32 {
        (self.handle >> Self::GENERATION_SHIFT) as u32
    }
}

/// The key to a time slot a libOS owns (`slot_alloc`, `slot_free`):
/// `generation << 32 | position`. Opaque.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct SlotKey(pub u64);

impl core::fmt::Display for SlotKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl SlotKey {
    /// The slot's position in the vector.
    pub const fn position(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }
}

/// What `env_info` reports: the caller's share of the CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct EnvInfo {
    /// TSC ticks this environment has run.
    pub cpu_ticks: u64,
    /// Times it overran its end-of-slot bound and was preempted by force.
    pub overruns: u64,
    /// TSC ticks taken off its slots as penalties so far.
    pub penalty_ticks: u64,
    /// Slots of the vector it owns now.
    pub slots_owned: u64,
    /// Length of the slot vector and of one slot (TSC ticks).
    pub vector_len: u64,
    pub slot_ticks: u64,
    /// The end-of-slot save bound (TSC ticks).
    pub save_bound_ticks: u64,
    /// The slot position running now.
    pub slot_position: u64,
    /// Kernel memory (bytes) this environment has caused the kernel to
    /// allocate (grants, reverse-map entries, filters), and its budget.
    pub kmem_used: u64,
    pub kmem_limit: u64,
    /// Pool frames charged to it: frames held under keys plus page-table
    /// frames the kernel built for its mappings; and its quota (frames).
    pub frames_charged: u64,
    pub page_table_frames: u64,
    pub quota_frames: u64,
    /// Its id, and its parent's (0 for an environment the manifest booted).
    pub env_id: u64,
    pub parent_id: u64,
}

/// What `frame_query` reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct FrameInfo {
    pub frame_pa: u64,
    pub rights: u64,
    /// 1 if the caller owns the frame, 0 if it holds a share.
    pub owner: u64,
    pub generation: u64,
    /// Environments owning the frame now (co-owners included).
    pub owners: u64,
}

/// Why a system call failed. Returned in `rax` as `-(code)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum Error {
    /// No system call has this number.
    UnknownSyscall = 1,
    /// A pointer is null, outside the user half, or not mapped for the access.
    BadAddress = 2,
    /// A length is zero where that is meaningless, negative, or too large.
    BadLength = 3,
    /// A pointer is not aligned for the type it points at.
    Misaligned = 4,
    /// An argument is out of range or inconsistent.
    InvalidArgument = 5,
    /// The named environment does not exist or has ended.
    NoSuchEnv = 6,
    /// The kernel could not find the memory the call needs.
    NoMemory = 7,
    /// The caller lacks the right it would use.
    PermissionDenied = 8,
    /// A frame key is forged, another environment's, or stale (the frame
    /// was freed or revoked since it was minted).
    BadKey = 9,
    /// Every TLB slot is taken by guaranteed mappings (or there are none).
    NoSlots = 10,
    /// Not now: the kernel is taking frames back for the caller; yield and retry.
    Again = 11,
    /// The caller holds its quota and nobody has frames to spare.
    QuotaExceeded = 12,
    /// The page is already mapped.
    AlreadyMapped = 13,
}

impl Error {
    /// Every error, for tables and tests.
    pub const ALL: [Error; 13] = [
        Error::UnknownSyscall,
        Error::BadAddress,
        Error::BadLength,
        Error::Misaligned,
        Error::InvalidArgument,
        Error::NoSuchEnv,
        Error::NoMemory,
        Error::PermissionDenied,
        Error::BadKey,
        Error::NoSlots,
        Error::Again,
        Error::QuotaExceeded,
        Error::AlreadyMapped,
    ];

    /// The error with this code.
    pub fn from_code(code: i64) -> Option<Error> {
        Error::ALL.iter().copied().find(|e| *e as i64 == code)
    }

    /// A short lowercase name, as printed in scenario lines.
    pub fn name(self) -> &'static str {
        match self {
            Error::UnknownSyscall => "unknown-syscall",
            Error::BadAddress => "bad-address",
            Error::BadLength => "bad-length",
            Error::Misaligned => "misaligned",
            Error::InvalidArgument => "invalid-argument",
            Error::NoSuchEnv => "no-such-env",
            Error::NoMemory => "no-memory",
            Error::PermissionDenied => "permission-denied",
            Error::BadKey => "bad-key",
            Error::NoSlots => "no-slots",
            Error::Again => "again",
            Error::QuotaExceeded => "quota-exceeded",
            Error::AlreadyMapped => "already-mapped",
        }
    }
}

/// Encode a result the way the kernel returns it in `rax`.
pub fn encode(result: Result<u64, Error>) -> u64 {
    match result {
        Ok(value) => value,
        Err(error) => (-(error as i64)) as u64,
    }
}

/// Decode a raw `rax` value. A negative value that is no known error code
/// decodes as `InvalidArgument` rather than being trusted as a value.
pub fn decode(raw: u64) -> Result<u64, Error> {
    let signed = raw as i64;
    if signed >= 0 {
        Ok(raw)
    } else {
        Err(Error::from_code(signed.wrapping_neg()).unwrap_or(Error::InvalidArgument))
    }
}

/// The kernel's event counters, as copied out by `stats`. Benchmarks print
/// them beside instruction counts so the cost on real hardware can be
/// reasoned about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct KernelStats {
    pub syscalls: u64,
    pub upcalls: u64,
    pub exceptions: u64,
    pub page_faults: u64,
    pub timer_ticks: u64,
    pub context_switches: u64,
    pub cr3_loads: u64,
    pub invlpg: u64,
    pub envs_ended: u64,
    /// Page faults refilled from the software TLB without an upcall.
    pub stlb_hits: u64,
    /// Page faults the software TLB could not answer (sent to the libOS).
    pub stlb_misses: u64,
    /// Ordinary mappings pushed out of a TLB slot.
    pub slot_evictions: u64,
    pub key_checks: u64,
    pub revocation_requests: u64,
    /// Frames taken by force (abort protocol).
    pub frames_repossessed: u64,
    /// End-of-slot upcalls delivered, and forced preemptions after overruns.
    pub slot_end_upcalls: u64,
    pub overruns: u64,
    pub pct_calls: u64,
    /// TSC ticks the CPU spent halted because nothing could run (under
    /// `-icount`, virtual ticks; the rest of the run is busy time).
    pub halted_ticks: u64,
    /// Interrupts the NIC raised (`nic_irq = true`).
    pub nic_interrupts: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_records_are_laid_out_as_the_abi_says() {
        assert_eq!(core::mem::size_of::<MapRecord>(), 32);
        assert_eq!(core::mem::offset_of!(MapRecord, key), 16);
        let key = FrameKey { handle: 0x1234, mac: 0x5678 };
        let plain = MapRecord::map(0x40_0000, key, map_flags::WRITE | map_flags::GUARANTEED);
        assert_eq!((plain.va, plain.flags, plain.key), (0x40_0000, 3, key));
        let co =
            MapRecord::co_own(0x41_0000, key, Rights::READ | Rights::SHARE, map_flags::EXEC | map_flags::GUARANTEED);
        assert_eq!(co.flags, 0xa | 1 << 8 | 5 << 16);
        assert_eq!(co.flags & !batch_flags::KNOWN, 0);
        assert_eq!(batch_flags::KNOWN, 0x7_010f);
    }

    #[test]
    fn encode_decode_round_trip() {
        for error in Error::ALL {
            assert_eq!(decode(encode(Err(error))), Err(error));
            assert_eq!(Error::from_code(error as i64), Some(error));
        }
        assert_eq!(decode(encode(Ok(42))), Ok(42));
        assert_eq!(decode((-999i64) as u64), Err(Error::InvalidArgument));
    }
}
