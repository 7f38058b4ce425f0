//! Keyed physical frames: unforgeable frame keys, minted with a boot secret, checked by lookup.
//!
//! A library OS that is given a physical frame receives a [`FrameKey`]; every
//! later use of the frame (mapping, sharing, freeing) presents the key, and
//! the kernel checks it against its [`FrameTable`]. A forged key, another
//! environment's key, or a key from before the frame was freed or revoked is
//! refused with a [`KeyError`].
//!
//! # Key layout (ABI)
//!
//! A key is two 64-bit words, passed in two registers:
//!
//! ```text
//! handle: 63            32 31                 8 7        0
//!         | entry generation |     entry index     |  rights  |
//! mac:    63                                             0
//!         |  ChaCha8 keystream word under the boot-derived key |
//! ```
//!
//! * `rights` ([`Rights`]): what the key allows: `READ` = 1, `WRITE` = 2,
//!   `SHARE` = 4; bits 3..=7 are zero in every key the kernel mints.
//! * `entry index` (24 bits): the key's entry in the kernel's grant table.
//! * `entry generation` (32 bits): how many grants that entry held before
//!   this one. An entry's generation grows each time its grant is destroyed, so
//!   a key naming an older generation is recognisably [`KeyError::Stale`].
//! * `mac`: the next 64 bits of a ChaCha8 keystream whose 256-bit key is
//!   `SHA-256(secret ‖ "frame keys")` over the 32-byte boot-time `secret`
//!   (computed once). Each key minted since boot takes the next word of
//!   the stream, so no two keys share one, and the stream is produced in
//!   blocks of eight words ahead of the keys that take them.
//!
//! The frame number is not in the key: the kernel returns it beside the key
//! when it allocates, and [`FrameTable::query`] reports it.
//!
//! # Cost
//!
//! Minting (allocate, share) takes one word of a keystream computed eight
//! words at a time (one ChaCha8 block per eight keys, about a fifth of the
//! SipHash-2-4 per key it replaced, which was itself a fortieth of the
//! SHA-256 before it). Checking computes nothing: the grant table keeps
//! the key it minted, so [`FrameTable::check`] is an index, two word
//! compares, an environment compare and a rights test.
//!
//! Why a keystream word is as unforgeable as a MAC over the key's fields:
//! a key is valid only if it equals, word for word, the key the table
//! stored when it was minted, so what a forger must produce is the stored
//! 64-bit word of a grant it was not given. The word is ChaCha8 output under
//! a 256-bit key derived from the boot secret, at a position no other key
//! used; without the secret, seeing any number of other keys' words says
//! nothing about it (ChaCha is a pseudorandom function of the position), so
//! each guess is right with probability 2^-64, exactly as with a MAC. What
//! a MAC over (handle, frame, env, serial) added, binding the word to those
//! fields, the table's comparison already provides: the stored grant
//! records them. Working out *why* a key failed is a separate cold path.
//! Memory: one 72-byte grant-table entry per live key and one record per
//! held frame (in a hash map keyed under a per-boot secret seed), nothing
//! per idle frame.
//!
//! # Sharing, co-ownership and revocation
//!
//! The environment that allocated a frame owns it. An owner, or the holder
//! of a key with the `SHARE` right, can mint another environment a key with
//! the same or fewer rights. An owner can also make another environment a
//! *co-owner* ([`FrameTable::share`] with `co_own`): the frame then lives
//! while any owner holds it (a frame shared copy-on-write by a forked
//! process and its parent outlives whichever ends first), and each owner
//! pays for its own key. An owner that frees its key gives up its share of
//! the frame; the last owner's free frees the frame and destroys every key
//! to it, shares included. Revoking (the kernel) destroys every key at
//! once. A later allocation of the same frame mints keys under new
//! serials, so no old key comes back to life.

use alloc::vec::Vec;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha8;
use foldhash::fast::FixedState;
use hashbrown::HashMap;
use sha2::{Digest, Sha256};
use shared_abi::syscall::Error;

/// An environment id as the libOS sees it (1-based, as in `env.rs`).
pub type EnvId = u64;

/// Physical frame number (physical address / 4096).
pub type FrameNumber = u64;

/// What a frame key allows, and the key itself: the ABI's types, so the
/// kernel and the libOSes share one definition (layout in the module doc).
pub use shared_abi::syscall::{FrameKey, Rights};

/// Most grants (live keys) the table can hold at once: the entry index is 24 bits.
pub const MAX_GRANTS: usize = FrameKey::MAX_ENTRIES;

/// What a valid key tells the kernel about its frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    pub frame: FrameNumber,
    /// The rights of the presented key.
    pub rights: Rights,
    /// The environment that allocated the frame.
    pub owner: EnvId,
    /// The serial of the key minted when the frame was allocated: unique to
    /// this allocation of the frame, never reused after it is freed.
    pub generation: u64,
    /// The key is an owner's (minted at allocation or to a co-owner), not
    /// a share.
    pub owns: bool,
}

/// Why a key was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// The key was never minted (wrong MAC, entry or rights bits).
    Forged,
    /// A genuine key, but minted for another environment.
    WrongEnv,
    /// A key whose frame was since freed or revoked.
    Stale,
    /// The key lacks a right the operation needs.
    InsufficientRights,
    /// The kernel names a frame that no key covers.
    NoSuchFrame,
    /// Only the frame's owner may do this.
    NotOwner,
    /// The frame to allocate is already held under a key.
    InUse,
    /// The grant table is full ([`MAX_GRANTS`] live keys).
    TableFull,
}

/// A key that is not valid for the caller (forged, another's, stale) is
/// `BadKey`, and a valid key without the authority the call needs is
/// `PermissionDenied`, so a libOS can tell "my key is bad" from "my key does
/// not allow this". `WrongEnv` is not told apart from `Forged` at the ABI, so a guessed
/// key never reveals that it is genuine for someone else.
impl From<KeyError> for Error {
    fn from(error: KeyError) -> Error {
        match error {
            KeyError::Forged | KeyError::WrongEnv | KeyError::Stale => Error::BadKey,
            KeyError::InsufficientRights | KeyError::NotOwner => Error::PermissionDenied,
            KeyError::NoSuchFrame => Error::InvalidArgument,
            KeyError::InUse | KeyError::TableFull => Error::NoMemory,
        }
    }
}

/// Produces key MACs: a ChaCha8 keystream under a key derived from the
/// boot-time secret, one word per key. Deliberately not `Debug`: its state
/// must never reach a log.
pub struct KeyMinter {
    stream: ChaCha8,
    /// Words of the stream computed ahead (one block), taken from the back.
    ahead: [u64; 8],
    left: usize,
    /// Seed of the frame-record map's hasher, drawn from the stream.
    hash_seed: u64,
}

impl KeyMinter {
    /// A minter for this secret, which the kernel draws at boot from a
    /// hardware random source and never reveals.
    pub fn new(secret: [u8; 32]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(secret);
        hasher.update(b"frame keys");
        let digest: [u8; 32] = hasher.finalize().into();
        let stream = ChaCha8::new(&digest.into(), &[0u8; 12].into());
        let mut minter = KeyMinter { stream, ahead: [0; 8], left: 0, hash_seed: 0 };
        minter.hash_seed = minter.next_mac();
        minter
    }

    /// The next MAC word: never the same position of the stream twice.
    pub fn next_mac(&mut self) -> u64 {
        if self.left == 0 {
            // One block of keystream: ChaCha8 applied to zeros.
            let mut block = [0u8; 64];
            self.stream.apply_keystream(&mut block);
            for (word, bytes) in self.ahead.iter_mut().zip(block.as_chunks::<8>().0) {
                *word = u64::from_le_bytes(*bytes);
            }
            self.left = self.ahead.len();
        }
        self.left -= 1;
        self.ahead[self.left]
    }
}

/// One live key: the key as minted, whom it was minted for, what it
/// grants, and which environment's kernel-memory budget pays for it (the
/// allocator for an owner key, the sharer for a share).
#[derive(Clone, Copy)]
struct Grant {
    key: FrameKey,
    env: EnvId,
    payer: EnvId,
    info: FrameInfo,
}

/// An entry of the grant table.
struct GrantEntry {
    /// Bumped each time the entry's grant is destroyed; an entry whose
    /// generation reaches `u32::MAX` is retired (never reused) rather than
    /// wrapped, so a stale key can never match its entry again.
    generation: u32,
    grant: Option<Grant>,
}

/// The kernel's record of one allocated frame.
struct FrameRecord {
    /// Its owners and the entries of their keys: the allocator first, then
    /// co-owners in the order they were made.
    owners: Owners,
    /// The entries of every (non-owning) key shared since.
    shares: Vec<usize>,
}

/// A frame's owners: the first held inline (most frames have one owner,
/// and allocating must not cost a heap allocation for the list), the
/// co-owners beside it.
struct Owners {
    first: (EnvId, usize),
    more: Vec<(EnvId, usize)>,
}

impl Owners {
    fn one(env: EnvId, entry: usize) -> Owners {
        Owners { first: (env, entry), more: Vec::new() }
    }

    fn iter(&self) -> impl Iterator<Item = &(EnvId, usize)> + '_ {
        core::iter::once(&self.first).chain(self.more.iter())
    }

    fn len(&self) -> usize {
        1 + self.more.len()
    }

    fn push(&mut self, owner: (EnvId, usize)) {
        self.more.push(owner);
    }

    /// Take `env`'s entry out (there are at least two owners).
    fn remove(&mut self, env: EnvId) -> Option<(EnvId, usize)> {
        if self.first.0 == env {
            let next = self.more.remove(0);
            return Some(core::mem::replace(&mut self.first, next));
        }
        let at = self.more.iter().position(|&(owner, _)| owner == env)?;
        Some(self.more.remove(at))
    }
}

/// What freeing a key did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freed {
    /// It was the last owner's: the frame is free, every key to it destroyed.
    Frame(FrameNumber),
    /// Other owners still hold the frame; only this owner's key went.
    Released(FrameNumber),
}

/// Frame records by frame number, hashed under a per-boot secret seed (an
/// environment that names the frames it allocates cannot aim them at one
/// bucket without knowing the seed).
type FrameRecords = HashMap<FrameNumber, FrameRecord, FixedState>;

/// Every frame handed out under a key, and every live key.
pub struct FrameTable {
    minter: KeyMinter,
    /// Indexed by a key's entry index.
    entries: Vec<GrantEntry>,
    /// Vacant entries to reuse.
    free_entries: Vec<usize>,
    /// Allocated frames; only allocate, free, share and revoke use it.
    frames: FrameRecords,
    /// Keys minted so far; the next key's serial.
    minted: u64,
    /// Slots holding a grant.
    live: usize,
    /// Live grants by the environment that pays for them.
    /// (Indexed by id: ids are small and dense; O(1) on the map path.)
    paid: Vec<usize>,
    /// Live owner keys by holder, and live shares by holder and by payer
    /// (so reclaiming an environment looks only where it has keys).
    owner_keys: Vec<usize>,
    share_keys: Vec<usize>,
}

impl FrameTable {
    /// An empty table whose keys are MACed with `secret`.
    pub fn new(secret: [u8; 32]) -> Self {
        let minter = KeyMinter::new(secret);
        let frames = HashMap::with_hasher(FixedState::with_seed(minter.hash_seed));
        FrameTable {
            minter,
            entries: Vec::new(),
            free_entries: Vec::new(),
            frames,
            minted: 0,
            live: 0,
            paid: Vec::new(),
            owner_keys: Vec::new(),
            share_keys: Vec::new(),
        }
    }

    /// Drop the table's storage once no key is live and none can ever be
    /// presented again (every environment has ended): the retired entries
    /// that keep old keys stale are no longer needed.
    pub fn retire(&mut self) {
        debug_assert_eq!(self.live, 0);
        self.entries = Vec::new();
        self.free_entries = Vec::new();
        self.frames = HashMap::with_hasher(FixedState::with_seed(self.minter.hash_seed));
        self.paid = Vec::new();
        self.owner_keys = Vec::new();
        self.share_keys = Vec::new();
    }

    /// Live grants `env` pays for (its owner keys and the shares it minted):
    /// what the kernel charges to its kernel-memory budget.
    pub fn grants_paid_by(&self, env: EnvId) -> usize {
        usize::try_from(env).ok().and_then(|at| self.paid.get(at)).copied().unwrap_or(0)
    }

    /// A per-boot hash seed (from the key stream, not the secret), for the
    /// kernel's other maps keyed by numbers an environment can choose.
    pub fn hash_seed(&self) -> u64 {
        self.minter.hash_seed
    }

    /// Number of live keys (for statistics and tests).
    pub fn live_keys(&self) -> usize {
        self.live
    }

    /// Number of frames held under keys.
    pub fn frames_held(&self) -> usize {
        self.frames.len()
    }

    /// Record that `frame` (already taken from the frame bitmap by the
    /// kernel) now belongs to `env`, and mint its key with `rights`.
    pub fn alloc(&mut self, frame: FrameNumber, env: EnvId, rights: Rights) -> Result<FrameKey, KeyError> {
        if self.frames.contains_key(&frame) {
            return Err(KeyError::InUse);
        }
        let generation = self.minted;
        let info = FrameInfo { frame, rights, owner: env, generation, owns: true };
        let (owner_entry, key) = self.mint(env, env, info)?;
        self.frames.insert(frame, FrameRecord { owners: Owners::one(env, owner_entry), shares: Vec::new() });
        Ok(key)
    }

    /// Check `key` as presented by `env` for an operation that needs `need`;
    /// the hot path of every keyed system call. No hashing: the presented
    /// key is compared with the one stored when it was minted.
    #[inline]
    pub fn check(&self, key: FrameKey, env: EnvId, need: Rights) -> Result<FrameInfo, KeyError> {
        if let Some(GrantEntry { grant: Some(grant), .. }) = self.entries.get(key.entry_index()) {
            if grant.key == key && grant.env == env && grant.info.rights.contains(need) {
                return Ok(grant.info);
            }
        }
        Err(self.diagnose(key, env))
    }

    /// Why `check` refused `key`: kept off the hot path.
    #[cold]
    #[inline(never)]
    fn diagnose(&self, key: FrameKey, env: EnvId) -> KeyError {
        let Some(entry) = self.entries.get(key.entry_index()) else {
            return KeyError::Forged;
        };
        let key_generation = key.entry_generation();
        if key_generation < entry.generation {
            // The entry held a grant in that generation; it has been destroyed.
            return KeyError::Stale;
        }
        match &entry.grant {
            Some(grant) if key_generation == entry.generation && grant.key == key => {
                if grant.env != env {
                    KeyError::WrongEnv
                } else {
                    KeyError::InsufficientRights
                }
            }
            // A later generation, a vacant entry's current one (vacating bumps
            // the generation), or other bits than minted: never minted.
            _ => KeyError::Forged,
        }
    }

    /// What `key` grants `env`: the frame, the key's rights, the owner and
    /// the allocation's generation.
    pub fn query(&self, key: FrameKey, env: EnvId) -> Result<FrameInfo, KeyError> {
        self.check(key, env, Rights::NONE)
    }

    /// Mint `to_env` a key to the frame of `key` (presented by `from_env`)
    /// with `rights`, which must be among the key's own. `from_env` must own
    /// the frame or hold the `SHARE` right. The kernel checks beforehand
    /// that `to_env` exists; the table does not know environments.
    ///
    /// With `co_own`, `to_env` becomes an owner of the frame: only an owner
    /// may make one, `to_env` must not own it already, and the new key is
    /// paid for by `to_env` (a co-owner's key must not die with the budget
    /// of the environment that made it).
    pub fn share(
        &mut self,
        key: FrameKey,
        from_env: EnvId,
        to_env: EnvId,
        rights: Rights,
        co_own: bool,
    ) -> Result<FrameKey, KeyError> {
        let held = self.check(key, from_env, rights)?;
        let is_owner = self.owns(held.frame, from_env);
        if !is_owner && !held.rights.contains(Rights::SHARE) {
            return Err(KeyError::InsufficientRights);
        }
        if co_own {
            if !held.owns {
                // Only an owner's own key makes co-owners (not a share,
                // even one the owner minted to itself).
                return Err(KeyError::NotOwner);
            }
            let record = self.frames.get(&held.frame).expect("a live key's frame has a record");
            if record.owners.iter().any(|&(owner, _)| owner == to_env) {
                return Err(KeyError::InUse);
            }
            let (entry, shared) = self.mint(to_env, to_env, FrameInfo { rights, owner: to_env, owns: true, ..held })?;
            self.frames.get_mut(&held.frame).expect("checked above").owners.push((to_env, entry));
            return Ok(shared);
        }
        let (entry, shared) = self.mint(to_env, from_env, FrameInfo { rights, owns: false, ..held })?;
        self.frames.get_mut(&held.frame).expect("a live key's frame has a record").shares.push(entry);
        Ok(shared)
    }

    /// Does `env` own `frame` (alone or with co-owners)?
    pub fn owns(&self, frame: FrameNumber, env: EnvId) -> bool {
        self.frames.get(&frame).is_some_and(|r| r.owners.iter().any(|&(owner, _)| owner == env))
    }

    /// How many environments own `frame` (0 if no key covers it).
    pub fn owner_count(&self, frame: FrameNumber) -> usize {
        self.frames.get(&frame).map_or(0, |r| r.owners.len())
    }

    /// Free the frame of `key`; only an owner may. The last owner's free
    /// frees the frame: every key to it, shares included, becomes stale
    /// (`Freed::Frame`, for the kernel to unmap everywhere and give back to
    /// the frame bitmap). An owner among several gives up only its own key
    /// (`Freed::Released`), and with it every key it holds to the frame.
    /// Freeing twice fails with `Stale`: the first free destroyed the key.
    pub fn free(&mut self, key: FrameKey, env: EnvId) -> Result<Freed, KeyError> {
        let info = self.check(key, env, Rights::NONE)?;
        // Owning now, not when the key was minted: a share minted while
        // `env` owned the frame names it as owner, but may outlive that
        // ownership (passed back by another holder) while co-owners keep
        // the frame.
        if !self.owns(info.frame, env) {
            return Err(KeyError::NotOwner);
        }
        Ok(self.release_owner(info.frame, env))
    }

    /// `env` stops owning `frame`; the frame goes with its last owner.
    fn release_owner(&mut self, frame: FrameNumber, env: EnvId) -> Freed {
        let record = self.frames.get_mut(&frame).expect("an owner's frame has a record");
        if record.owners.len() == 1 {
            self.forget(frame, |_| {});
            return Freed::Frame(frame);
        }
        let (_, entry) = record.owners.remove(env).expect("env owns the frame");
        // Every key it holds to the frame goes with its ownership (as all
        // would if the frame were freed); shares it minted to others stay.
        let entries = &self.entries;
        let mut held = Vec::new();
        record.shares.retain(|&s| {
            let its = entries[s].grant.is_some_and(|g| g.env == env);
            if its {
                held.push(s);
            }
            !its
        });
        self.vacate(entry);
        for entry in held {
            self.vacate(entry);
        }
        Freed::Released(frame)
    }

    /// Kernel-initiated: destroy every key to `frame`. Returns the
    /// environments that held one (owner first, each once), whose mappings
    /// of the frame the kernel must remove before reusing it.
    pub fn revoke(&mut self, frame: FrameNumber) -> Result<Vec<EnvId>, KeyError> {
        if !self.frames.contains_key(&frame) {
            return Err(KeyError::NoSuchFrame);
        }
        let mut holders: Vec<EnvId> = Vec::new();
        self.forget(frame, |env| {
            if !holders.contains(&env) {
                holders.push(env);
            }
        });
        Ok(holders)
    }

    /// An environment ended: give up every frame it owns (those it was the
    /// last owner of are returned, in ascending order, for the kernel to
    /// unmap and give back) and destroy every key shared to it and every
    /// key it paid for (the shares it minted die with the budget that paid
    /// for them).
    ///
    /// `owned` lists the frames `env` owns (the kernel keeps that list per
    /// environment); a frame missing from it is still found, by a scan of
    /// every frame, which the list spares the common case. Likewise the
    /// shares are looked for only if `env` holds or paid for any.
    pub fn reclaim_env(&mut self, env: EnvId, owned: &[FrameNumber]) -> Vec<FrameNumber> {
        let mut freed = Vec::new();
        for &frame in owned {
            if self.owns(frame, env) {
                if let Freed::Frame(frame) = self.release_owner(frame, env) {
                    freed.push(frame);
                }
            }
        }
        if self.owner_keys_of(env) > 0 {
            let missed: Vec<FrameNumber> = self
                .frames
                .iter()
                .filter(|(_, r)| r.owners.iter().any(|&(owner, _)| owner == env))
                .map(|(frame, _)| *frame)
                .collect();
            for frame in missed {
                if let Freed::Frame(frame) = self.release_owner(frame, env) {
                    freed.push(frame);
                }
            }
            freed.sort_unstable();
        }
        if self.share_keys_of(env) == 0 {
            return freed;
        }
        let mut held_by_env = Vec::new();
        for record in self.frames.values_mut() {
            let entries = &self.entries;
            record.shares.retain(|&s| {
                let held = entries[s].grant.is_some_and(|g| g.env == env || g.payer == env);
                if held {
                    held_by_env.push(s);
                }
                !held
            });
        }
        for entry in held_by_env {
            self.vacate(entry);
        }
        freed
    }

    fn counter(counts: &[usize], env: EnvId) -> usize {
        usize::try_from(env).ok().and_then(|at| counts.get(at)).copied().unwrap_or(0)
    }

    fn count(counts: &mut Vec<usize>, env: EnvId, up: bool) {
        let at = env as usize;
        if counts.len() <= at {
            counts.resize(at + 1, 0);
        }
        if up {
            counts[at] += 1;
        } else {
            counts[at] -= 1;
        }
    }

    /// Owner keys `env` holds.
    fn owner_keys_of(&self, env: EnvId) -> usize {
        Self::counter(&self.owner_keys, env)
    }

    /// Shares `env` holds or paid for.
    fn share_keys_of(&self, env: EnvId) -> usize {
        Self::counter(&self.share_keys, env)
    }

    /// Store a new grant in a free entry and return its entry and key.
    fn mint(&mut self, env: EnvId, payer: EnvId, info: FrameInfo) -> Result<(usize, FrameKey), KeyError> {
        let entry = match self.free_entries.pop() {
            Some(entry) => entry,
            None if self.entries.len() < MAX_GRANTS => {
                self.entries.push(GrantEntry { generation: 0, grant: None });
                self.entries.len() - 1
            }
            None => return Err(KeyError::TableFull),
        };
        let handle = FrameKey::handle_for(info.rights, entry, self.entries[entry].generation);
        let key = FrameKey { handle, mac: self.minter.next_mac() };
        self.minted += 1;
        self.live += 1;
        self.entries[entry].grant = Some(Grant { key, env, payer, info });
        Self::count(&mut self.paid, payer, true);
        if info.owns {
            Self::count(&mut self.owner_keys, env, true);
        } else {
            Self::count(&mut self.share_keys, env, true);
            if payer != env {
                Self::count(&mut self.share_keys, payer, true);
            }
        }
        Ok((entry, key))
    }

    /// Destroy the grant in `entry` and make the entry reusable under a new generation.
    fn vacate(&mut self, entry: usize) {
        let cell = &mut self.entries[entry];
        let Some(grant) = cell.grant.take() else {
            return;
        };
        self.live -= 1;
        Self::count(&mut self.paid, grant.payer, false);
        if grant.info.owns {
            Self::count(&mut self.owner_keys, grant.env, false);
        } else {
            Self::count(&mut self.share_keys, grant.env, false);
            if grant.payer != grant.env {
                Self::count(&mut self.share_keys, grant.payer, false);
            }
        }
        // An entry that held a grant has a generation below the maximum.
        cell.generation += 1;
        if cell.generation < u32::MAX {
            self.free_entries.push(entry);
        }
    }

    /// Destroy every key to `frame` and drop its record; `holder` is told
    /// the environment of each key destroyed (owners first), so the free
    /// path, which needs none of them, allocates nothing.
    fn forget(&mut self, frame: FrameNumber, mut holder: impl FnMut(EnvId)) {
        let Some(record) = self.frames.remove(&frame) else {
            return;
        };
        let Owners { first, more } = record.owners;
        let owned = core::iter::once(first.1).chain(more.into_iter().map(|(_, entry)| entry));
        for entry in owned.chain(record.shares) {
            if let Some(grant) = self.entries[entry].grant {
                holder(grant.env);
            }
            self.vacate(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    const SECRET: [u8; 32] = [0x5a; 32];
    const A: EnvId = 1;
    const B: EnvId = 2;
    const C: EnvId = 3;
    const RW: Rights = Rights::READ.union(Rights::WRITE);

    /// Deterministic pseudo-random words (splitmix64) for forgeries.
    fn random_words(seed: u64) -> impl Iterator<Item = u64> {
        let mut state = seed;
        core::iter::repeat_with(move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        })
    }

    #[test]
    fn mint_and_check_round_trip() {
        let mut table = FrameTable::new(SECRET);
        let key = table.alloc(0x1234, A, Rights::ALL).unwrap();
        assert_eq!(key.rights(), Rights::ALL);
        let info = table.check(key, A, RW).unwrap();
        assert_eq!(info.frame, 0x1234);
        assert_eq!(info.owner, A);
        assert_eq!(info.rights, Rights::ALL);
        assert_eq!(table.query(key, A), Ok(info));
        assert_eq!(table.live_keys(), 1);
        assert_eq!(table.frames_held(), 1);
    }

    #[test]
    fn key_layout_matches_the_doc() {
        let mut table = FrameTable::new(SECRET);
        let first = table.alloc(10, A, Rights::READ).unwrap();
        let second = table.alloc(11, A, RW).unwrap();
        assert_eq!(first.handle, 0x0000_0000_0000_0001);
        assert_eq!(second.handle, 0x0000_0000_0000_0103);
        assert_eq!((second.entry_index(), second.entry_generation()), (1, 0));
        let mut minter = KeyMinter::new(SECRET);
        let (one, two) = (minter.next_mac(), minter.next_mac());
        assert_eq!((first.mac, second.mac), (one, two), "the first two words of the stream");
        table.free(first, A).unwrap();
        let reused = table.alloc(12, B, Rights::WRITE).unwrap();
        assert_eq!(reused.handle, 0x0000_0001_0000_0002, "entry 0, generation 1");
    }

    #[test]
    fn macs_are_a_chacha8_keystream_under_a_key_derived_from_the_secret() {
        // The stream: ChaCha8 (nonce 0) keyed with SHA-256(secret ‖ label),
        // taken a block of eight little-endian words at a time, each block
        // handed out last word first; the stream's first word seeds the
        // record map's hasher.
        let mut derive = Sha256::new();
        derive.update(SECRET);
        derive.update(b"frame keys");
        let key: [u8; 32] = derive.finalize().into();
        let mut stream = ChaCha8::new(&key.into(), &[0u8; 12].into());
        let mut bytes = [0u8; 192];
        stream.apply_keystream(&mut bytes);
        let words: Vec<u64> = bytes.as_chunks::<8>().0.iter().map(|b| u64::from_le_bytes(*b)).collect();
        let mut minter = KeyMinter::new(SECRET);
        assert_eq!(minter.hash_seed, words[7]);
        let minted: Vec<u64> = (0..23).map(|_| minter.next_mac()).collect();
        let mut expected: Vec<u64> = words[..7].iter().rev().copied().collect();
        expected.extend(words[8..16].iter().rev());
        expected.extend(words[16..24].iter().rev());
        assert_eq!(minted, expected);
    }

    #[test]
    fn macs_never_repeat_and_depend_on_the_secret() {
        let mut minter = KeyMinter::new(SECRET);
        let mut seen: Vec<u64> = (0..4096).map(|_| minter.next_mac()).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 4096);
        assert_ne!(KeyMinter::new([0x5b; 32]).next_mac(), KeyMinter::new(SECRET).next_mac());
    }

    #[test]
    fn random_macs_are_forged() {
        let mut table = FrameTable::new(SECRET);
        let key = table.alloc(7, A, Rights::ALL).unwrap();
        for mac in random_words(1).take(1000) {
            if mac == key.mac {
                continue;
            }
            let forged = FrameKey { mac, ..key };
            assert_eq!(table.check(forged, A, Rights::NONE), Err(KeyError::Forged));
        }
    }

    #[test]
    fn random_keys_are_refused() {
        let mut table = FrameTable::new(SECRET);
        table.alloc(7, A, Rights::ALL).unwrap();
        let mut words = random_words(2);
        for _ in 0..1000 {
            let forged = FrameKey { handle: words.next().unwrap(), mac: words.next().unwrap() };
            let refused = table.check(forged, A, Rights::NONE).unwrap_err();
            assert!(matches!(refused, KeyError::Forged | KeyError::Stale), "{refused:?}");
        }
    }

    #[test]
    fn every_single_bit_flip_is_refused() {
        let mut table = FrameTable::new(SECRET);
        // Populate several entries, some of them recycled, so that a flipped
        // entry index or generation can land on live grants.
        let mut keys = Vec::new();
        for frame in 0..40 {
            keys.push(table.alloc(frame, A, Rights::ALL).unwrap());
        }
        for key in keys.drain(..20) {
            table.free(key, A).unwrap();
        }
        for frame in 100..140 {
            keys.push(table.alloc(frame, A, Rights::ALL).unwrap());
        }
        let shared = table.share(keys[0], A, B, Rights::READ, false).unwrap();
        keys.push(shared);
        for key in keys {
            let env = table.query(key, A).map(|_| A).unwrap_or(B);
            for bit in 0..128 {
                let mut flipped = key;
                if bit < 64 {
                    flipped.handle ^= 1 << bit;
                } else {
                    flipped.mac ^= 1 << (bit - 64);
                }
                let refused = table.check(flipped, env, Rights::NONE).unwrap_err();
                let expected = matches!(refused, KeyError::Forged | KeyError::Stale);
                assert!(expected, "bit {bit}: {refused:?}");
            }
        }
    }

    #[test]
    fn another_environments_key_is_refused() {
        let mut table = FrameTable::new(SECRET);
        let key_a = table.alloc(5, A, Rights::ALL).unwrap();
        let key_b = table.alloc(6, B, Rights::ALL).unwrap();
        assert_eq!(table.check(key_a, B, Rights::NONE), Err(KeyError::WrongEnv));
        assert_eq!(table.check(key_b, A, Rights::READ), Err(KeyError::WrongEnv));
        assert_eq!(table.free(key_a, B), Err(KeyError::WrongEnv));
        assert_eq!(table.share(key_a, B, C, Rights::READ, false), Err(KeyError::WrongEnv));
        assert!(table.check(key_a, A, Rights::ALL).is_ok());
    }

    #[test]
    fn keys_are_stale_after_free() {
        let mut table = FrameTable::new(SECRET);
        let key = table.alloc(9, A, Rights::ALL).unwrap();
        let shared = table.share(key, A, B, Rights::READ, false).unwrap();
        assert_eq!(table.free(key, A), Ok(Freed::Frame(9)));
        assert_eq!(table.check(key, A, Rights::NONE), Err(KeyError::Stale));
        assert_eq!(table.check(shared, B, Rights::NONE), Err(KeyError::Stale));
        assert_eq!(table.live_keys(), 0);
        assert_eq!(table.frames_held(), 0);
    }

    #[test]
    fn old_keys_stay_dead_when_the_frame_is_allocated_again() {
        let mut table = FrameTable::new(SECRET);
        let old = table.alloc(9, A, Rights::ALL).unwrap();
        let old_info = table.query(old, A).unwrap();
        table.free(old, A).unwrap();
        let new = table.alloc(9, A, Rights::ALL).unwrap();
        assert_ne!(new, old);
        assert_eq!(new.entry_index(), old.entry_index(), "the entry is reused");
        assert_eq!(table.check(old, A, Rights::NONE), Err(KeyError::Stale));
        let new_info = table.query(new, A).unwrap();
        assert_ne!(new_info.generation, old_info.generation);
        // An old key with its generation field moved forward is still refused.
        let bumped = FrameKey { handle: old.handle + (1 << 32), ..old };
        assert_eq!(table.check(bumped, A, Rights::NONE), Err(KeyError::Forged));
    }

    #[test]
    fn keys_are_stale_after_revoke() {
        let mut table = FrameTable::new(SECRET);
        let key = table.alloc(3, A, Rights::ALL).unwrap();
        let to_b = table.share(key, A, B, RW, false).unwrap();
        let to_c = table.share(to_b, B, C, Rights::READ, false).unwrap_err();
        assert_eq!(to_c, KeyError::InsufficientRights, "B holds no SHARE right");
        let to_b_again = table.share(key, A, B, Rights::READ, false).unwrap();
        assert_eq!(table.revoke(3), Ok(vec![A, B]));
        for (key, env) in [(key, A), (to_b, B), (to_b_again, B)] {
            assert_eq!(table.check(key, env, Rights::NONE), Err(KeyError::Stale));
        }
        assert_eq!(table.revoke(3), Err(KeyError::NoSuchFrame));
        assert_eq!(table.free(key, A), Err(KeyError::Stale));
    }

    #[test]
    fn double_free_is_refused() {
        let mut table = FrameTable::new(SECRET);
        let key = table.alloc(4, A, Rights::ALL).unwrap();
        assert_eq!(table.free(key, A), Ok(Freed::Frame(4)));
        assert_eq!(table.free(key, A), Err(KeyError::Stale));
        // Even after the entry is reused by another allocation.
        let other = table.alloc(8, A, Rights::ALL).unwrap();
        assert_eq!(table.free(key, A), Err(KeyError::Stale));
        assert_eq!(table.free(other, A), Ok(Freed::Frame(8)));
    }

    #[test]
    fn an_entry_is_retired_rather_than_its_generation_wrapped() {
        let mut table = FrameTable::new(SECRET);
        let first = table.alloc(1, A, Rights::ALL).unwrap();
        table.free(first, A).unwrap();
        table.entries[0].generation = u32::MAX - 1;
        let last = table.alloc(1, A, Rights::ALL).unwrap();
        assert_eq!((last.entry_index(), last.entry_generation()), (0, u32::MAX - 1));
        table.free(last, A).unwrap();
        assert_eq!(table.entries[0].generation, u32::MAX);
        let next = table.alloc(1, A, Rights::ALL).unwrap();
        assert_eq!(next.entry_index(), 1, "entry 0 is never reused");
        assert_eq!(table.check(last, A, Rights::NONE), Err(KeyError::Stale));
        assert_eq!(table.check(first, A, Rights::NONE), Err(KeyError::Stale));
    }

    #[test]
    fn allocating_a_held_frame_is_refused() {
        let mut table = FrameTable::new(SECRET);
        table.alloc(4, A, Rights::ALL).unwrap();
        assert_eq!(table.alloc(4, B, Rights::ALL), Err(KeyError::InUse));
        assert_eq!(table.live_keys(), 1);
    }

    #[test]
    fn sharing_with_fewer_rights_works_and_more_is_refused() {
        let mut table = FrameTable::new(SECRET);
        let key = table.alloc(2, A, RW | Rights::SHARE).unwrap();
        let read_only = table.share(key, A, B, Rights::READ, false).unwrap();
        let info = table.check(read_only, B, Rights::READ).unwrap();
        assert_eq!((info.frame, info.owner, info.rights), (2, A, Rights::READ));
        assert_eq!(read_only.rights(), Rights::READ);
        assert_eq!(
            table.share(read_only, B, C, Rights::READ, false),
            Err(KeyError::InsufficientRights),
            "no SHARE right and not the owner"
        );
        let delegate = table.share(key, A, B, Rights::READ | Rights::SHARE, false).unwrap();
        assert_eq!(table.share(delegate, B, C, RW, false), Err(KeyError::InsufficientRights));
        let to_c = table.share(delegate, B, C, Rights::READ, false).unwrap();
        assert!(table.check(to_c, C, Rights::READ).is_ok());
        // The owner may share even without the SHARE right, never beyond its key.
        let plain = table.alloc(20, A, Rights::READ).unwrap();
        assert!(table.share(plain, A, B, Rights::READ, false).is_ok());
        assert_eq!(table.share(plain, A, B, RW, false), Err(KeyError::InsufficientRights));
    }

    #[test]
    fn read_only_share_cannot_write() {
        let mut table = FrameTable::new(SECRET);
        let key = table.alloc(2, A, Rights::ALL).unwrap();
        let read_only = table.share(key, A, B, Rights::READ, false).unwrap();
        assert_eq!(table.check(read_only, B, Rights::WRITE), Err(KeyError::InsufficientRights));
        assert_eq!(table.check(read_only, B, RW), Err(KeyError::InsufficientRights));
        // Claiming WRITE by editing the key's rights bits forges it.
        let handle = read_only.handle | Rights::WRITE.bits() as u64;
        let edited = FrameKey { handle, ..read_only };
        assert_eq!(table.check(edited, B, Rights::WRITE), Err(KeyError::Forged));
        assert!(table.check(key, A, Rights::WRITE).is_ok());
    }

    #[test]
    fn freeing_through_a_share_is_refused() {
        let mut table = FrameTable::new(SECRET);
        let key = table.alloc(2, A, Rights::ALL).unwrap();
        let shared = table.share(key, A, B, Rights::ALL, false).unwrap();
        assert_eq!(table.free(shared, B), Err(KeyError::NotOwner));
        assert!(table.check(shared, B, Rights::ALL).is_ok(), "a refused free changes nothing");
        // The owner may free through a key it shared to itself.
        let own_share = table.share(key, A, A, Rights::READ, false).unwrap();
        assert_eq!(table.free(own_share, A), Ok(Freed::Frame(2)));
        assert_eq!(table.check(key, A, Rights::NONE), Err(KeyError::Stale));
    }

    #[test]
    fn different_secrets_mint_different_keys() {
        let mut one = FrameTable::new([1; 32]);
        let mut two = FrameTable::new([2; 32]);
        let key_one = one.alloc(42, A, Rights::ALL).unwrap();
        let key_two = two.alloc(42, A, Rights::ALL).unwrap();
        assert_eq!(key_one.handle, key_two.handle);
        assert_ne!(key_one.mac, key_two.mac);
        assert_eq!(two.check(key_one, A, Rights::NONE), Err(KeyError::Forged));
        assert_eq!(one.check(key_two, A, Rights::NONE), Err(KeyError::Forged));
    }

    #[test]
    fn keys_never_repeat() {
        let mut table = FrameTable::new(SECRET);
        let mut seen = std::collections::HashSet::new();
        for round in 0..50 {
            let key = table.alloc(1, A, Rights::ALL).unwrap();
            let shared = table.share(key, A, B, Rights::READ, false).unwrap();
            assert!(seen.insert(key) && seen.insert(shared), "round {round}");
            table.free(key, A).unwrap();
        }
    }

    #[test]
    fn reclaiming_an_environment() {
        let mut table = FrameTable::new(SECRET);
        let a1 = table.alloc(30, A, Rights::ALL).unwrap();
        let a2 = table.alloc(31, A, Rights::ALL).unwrap();
        let b1 = table.alloc(40, B, Rights::ALL).unwrap();
        let a1_to_b = table.share(a1, A, B, Rights::READ, false).unwrap();
        let b1_to_a = table.share(b1, B, A, Rights::READ, false).unwrap();
        let b1_to_c = table.share(b1, B, C, Rights::READ, false).unwrap();
        assert_eq!(table.reclaim_env(A, &[31]), vec![30, 31]);
        for (key, env) in [(a1, A), (a2, A), (a1_to_b, B), (b1_to_a, A)] {
            assert_eq!(table.check(key, env, Rights::NONE), Err(KeyError::Stale));
        }
        assert!(table.check(b1, B, Rights::ALL).is_ok());
        assert!(table.check(b1_to_c, C, Rights::READ).is_ok());
        assert_eq!(table.revoke(40), Ok(vec![B, C]), "A's share was dropped from the record");
        assert_eq!(table.live_keys(), 0);
    }

    #[test]
    fn grants_are_paid_for_by_their_minter() {
        let mut table = FrameTable::new(SECRET);
        let a1 = table.alloc(30, A, Rights::ALL).unwrap();
        let b1 = table.alloc(40, B, Rights::ALL).unwrap();
        for _ in 0..5 {
            table.share(a1, A, A, Rights::READ, false).unwrap();
        }
        let a_to_c = table.share(a1, A, C, Rights::READ, false).unwrap();
        let b_to_c = table.share(b1, B, C, Rights::READ, false).unwrap();
        assert_eq!(table.grants_paid_by(A), 7);
        assert_eq!(table.grants_paid_by(B), 2);
        assert_eq!(table.grants_paid_by(C), 0, "receiving a key costs nothing");
        table.free(a1, A).unwrap();
        assert_eq!(table.grants_paid_by(A), 0, "every key to a freed frame is released");
        assert_eq!(table.check(a_to_c, C, Rights::READ), Err(KeyError::Stale));
        assert!(table.check(b_to_c, C, Rights::READ).is_ok());
        assert_eq!(table.live_keys(), 2);
    }

    #[test]
    fn shares_die_with_the_environment_that_paid_for_them() {
        let mut table = FrameTable::new(SECRET);
        let a1 = table.alloc(30, A, Rights::ALL).unwrap();
        let a_to_b = table.share(a1, A, B, Rights::READ | Rights::SHARE, false).unwrap();
        let b_to_c = table.share(a_to_b, B, C, Rights::READ, false).unwrap();
        assert_eq!(table.grants_paid_by(B), 1);
        assert_eq!(table.reclaim_env(B, &[]), vec![]);
        assert_eq!(table.grants_paid_by(B), 0);
        assert_eq!(table.check(b_to_c, C, Rights::READ), Err(KeyError::Stale));
        assert_eq!(table.check(a_to_b, B, Rights::READ), Err(KeyError::Stale));
        assert!(table.check(a1, A, Rights::ALL).is_ok());
        // The frame's record no longer lists the vacated entries: a reused
        // entry is never destroyed by freeing this frame.
        let other = table.alloc(31, A, Rights::ALL).unwrap();
        let reused = table.share(other, A, C, Rights::READ, false).unwrap();
        table.free(a1, A).unwrap();
        assert!(table.check(reused, C, Rights::READ).is_ok());
        assert_eq!(table.live_keys(), 2);
    }

    #[test]
    fn rights_sets() {
        assert_eq!(Rights::from_bits(3), Some(RW));
        assert_eq!(Rights::from_bits(8), None);
        assert!(Rights::ALL.contains(RW));
        assert!(RW.contains(Rights::NONE));
        assert!(!Rights::READ.contains(Rights::WRITE));
        let odd = FrameKey { handle: 0xff, mac: 0 };
        assert_eq!(odd.rights(), Rights::ALL, "unknown bits are not reported as rights");
    }

    #[test]
    fn errors_map_to_abi_codes() {
        let bad_key = [KeyError::Forged, KeyError::WrongEnv, KeyError::Stale];
        for error in bad_key {
            assert_eq!(Error::from(error), Error::BadKey);
        }
        assert_eq!(Error::from(KeyError::InsufficientRights), Error::PermissionDenied);
        assert_eq!(Error::from(KeyError::NotOwner), Error::PermissionDenied);
        assert_eq!(Error::from(KeyError::NoSuchFrame), Error::InvalidArgument);
        assert_eq!(Error::from(KeyError::InUse), Error::NoMemory);
        assert_eq!(Error::from(KeyError::TableFull), Error::NoMemory);
    }

    #[test]
    fn co_owned_frame_lives_until_its_last_owner_lets_go() {
        let mut table = FrameTable::new(SECRET);
        let key = table.alloc(7, A, RW).unwrap();
        let b_owns = table.share(key, A, B, RW, true).unwrap();
        assert_eq!(table.owner_count(7), 2);
        assert_eq!(table.check(b_owns, B, RW).unwrap().owner, B, "a co-owner's key names it as owner");
        assert_eq!(table.share(key, A, B, RW, true), Err(KeyError::InUse), "one owner key per environment");
        let plain = table.share(b_owns, B, C, Rights::READ, false).unwrap();
        assert_eq!(table.share(plain, C, A, Rights::READ, true), Err(KeyError::InsufficientRights));
        let self_share = table.share(key, A, A, RW, false).unwrap();
        assert_eq!(table.share(self_share, A, C, RW, true), Err(KeyError::NotOwner), "a share never makes owners");
        let second_self_share = table.share(key, A, A, RW, false).unwrap();
        // The allocator lets go (through a share it minted itself): the
        // frame stays with B, and B's share to C too; every key A held to
        // it goes.
        assert_eq!(table.free(second_self_share, A), Ok(Freed::Released(7)));
        for gone in [second_self_share, self_share, key] {
            assert_eq!(table.check(gone, A, Rights::READ), Err(KeyError::Stale));
        }
        assert!(table.check(plain, C, Rights::READ).is_ok());
        assert_eq!(table.owner_count(7), 1);
        assert_eq!(table.free(b_owns, B), Ok(Freed::Frame(7)));
        assert_eq!(table.check(plain, C, Rights::READ), Err(KeyError::Stale));
        assert_eq!(table.live_keys(), 0);
    }

    #[test]
    fn a_co_owner_pays_for_its_key_and_survives_the_maker() {
        let mut table = FrameTable::new(SECRET);
        let key = table.alloc(3, A, RW).unwrap();
        let b_owns = table.share(key, A, B, Rights::READ, true).unwrap();
        assert_eq!((table.grants_paid_by(A), table.grants_paid_by(B)), (1, 1));
        assert_eq!(table.reclaim_env(A, &[3]), vec![], "B still owns frame 3");
        assert!(table.check(b_owns, B, Rights::READ).is_ok());
        assert_eq!(table.reclaim_env(B, &[3]), vec![3]);
        assert_eq!(table.live_keys(), 0);
        // Revocation takes a co-owned frame from every owner at once.
        let key = table.alloc(4, A, RW).unwrap();
        let b_owns = table.share(key, A, B, RW, true).unwrap();
        let holders = table.revoke(4).unwrap();
        assert_eq!(holders, vec![A, B]);
        assert_eq!(table.check(b_owns, B, Rights::READ), Err(KeyError::Stale));
        assert_eq!(table.live_keys(), 0);
    }

    #[test]
    fn a_former_owner_cannot_free_through_a_share_minted_after_it_let_go() {
        let mut table = FrameTable::new(SECRET);
        let key = table.alloc(5, A, Rights::ALL).unwrap();
        let to_c = table.share(key, A, C, Rights::ALL, false).unwrap();
        table.share(key, A, B, Rights::ALL, true).unwrap();
        assert_eq!(table.free(key, A), Ok(Freed::Released(5)));
        assert!(table.check(to_c, C, Rights::READ).is_ok(), "C's share lives while B owns the frame");
        // C passes A a key again: it names A's old ownership, but A no
        // longer owns the frame, so it frees nothing.
        let back_to_a = table.share(to_c, C, A, Rights::ALL, false).unwrap();
        assert_eq!(table.free(back_to_a, A), Err(KeyError::NotOwner));
        assert_eq!(table.owner_count(5), 1);
        assert_eq!(table.share(back_to_a, A, C, Rights::READ, true), Err(KeyError::NotOwner));
    }
}
