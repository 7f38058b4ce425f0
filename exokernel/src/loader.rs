//! Builds an environment's address space from a libOS program: ELF
//! segments, the initial stack, the heap the manifest grants, and the
//! read-only start page.

use crate::arch::memory::{alloc_frame, alloc_zeroed_frame, free_frame, Frame};
use crate::arch::paging::{AddressSpace, Flags, MapError};
use alloc::string::String;
use elf::abi::{EM_X86_64, ET_EXEC, PF_W, PF_X, PT_LOAD};
use elf::endian::LittleEndian;
use elf::ElfBytes;
use shared_abi::manifest::EnvSpec;
use shared_abi::start::*;

const PAGE: u64 = 4096;

/// Why a program could not be loaded (printed with `{:?}` in the env's summary).
#[derive(Debug)]
#[allow(dead_code)]
pub enum LoadError {
    NoProgram,
    BadElf(&'static str),
    NoMemory,
}

impl From<MapError> for LoadError {
    fn from(error: MapError) -> Self {
        match error {
            MapError::NoMemory => LoadError::NoMemory,
            _ => LoadError::BadElf("overlapping or misplaced segment"),
        }
    }
}

fn alloc() -> Option<Frame> {
    alloc_frame()
}

/// Map fresh zeroed frames over `[start, end)` with `flags`; pages already
/// mapped (two segments sharing a page) keep their frame and gain the flags.
fn map_zeroed(space: &mut AddressSpace, start: u64, end: u64, flags: Flags) -> Result<(), LoadError> {
    let mut page = start & !(PAGE - 1);
    while page < end {
        if let Some((_, old)) = space.translate(page) {
            let mut merged = old | flags;
            if !(old.contains(Flags::NO_EXECUTE) && flags.contains(Flags::NO_EXECUTE)) {
                merged.remove(Flags::NO_EXECUTE);
            }
            space.set_flags(page, merged);
        } else {
            let frame = alloc_zeroed_frame().ok_or(LoadError::NoMemory)?.into_user();
            if let Err(e) = space.map(page, frame, flags | Flags::USER_ACCESSIBLE, &mut alloc) {
                free_frame(frame);
                return Err(e.into());
            }
        }
        page += PAGE;
    }
    Ok(())
}

/// Copy bytes into pages of `space` that `map_zeroed` mapped (kernel-side:
/// read-only pages too).
fn copy_in(space: &AddressSpace, va: u64, bytes: &[u8]) -> Result<(), LoadError> {
    space.write_user(va, bytes, Flags::empty()).map_err(|()| LoadError::BadElf("segment not mapped"))
}

/// Load the ELF program into `space`; returns its entry point.
pub fn load_elf(space: &mut AddressSpace, image: &[u8]) -> Result<u64, LoadError> {
    let file = ElfBytes::<LittleEndian>::minimal_parse(image).map_err(|_| LoadError::BadElf("unparsable"))?;
    if file.ehdr.e_machine != EM_X86_64 || file.ehdr.e_type != ET_EXEC {
        return Err(LoadError::BadElf("not an x86_64 static executable"));
    }
    let entry = file.ehdr.e_entry;
    if !(PROGRAM_BASE..PROGRAM_END).contains(&entry) {
        return Err(LoadError::BadElf("entry outside the program window"));
    }
    let segments = file.segments().ok_or(LoadError::BadElf("no program headers"))?;
    for ph in segments.iter().filter(|ph| ph.p_type == PT_LOAD) {
        let start = ph.p_vaddr;
        let end = start.checked_add(ph.p_memsz).ok_or(LoadError::BadElf("segment wraps"))?;
        if start < PROGRAM_BASE || end > PROGRAM_END || ph.p_filesz > ph.p_memsz {
            return Err(LoadError::BadElf("segment outside the program window"));
        }
        let file_end = ph.p_offset.checked_add(ph.p_filesz).ok_or(LoadError::BadElf("segment wraps"))?;
        let data =
            image.get(ph.p_offset as usize..file_end as usize).ok_or(LoadError::BadElf("segment past end of file"))?;
        let mut flags = Flags::empty();
        if ph.p_flags & PF_W != 0 {
            flags |= Flags::WRITABLE;
        }
        if ph.p_flags & PF_X == 0 {
            flags |= Flags::NO_EXECUTE;
        }
        map_zeroed(space, start, end, flags)?;
        copy_in(space, start, data)?;
    }
    Ok(entry)
}

/// Build an environment's address space for `spec` from `image`.
/// Returns the space, the entry point and the start-record address.
pub fn build(
    kernel: &AddressSpace,
    spec: &EnvSpec,
    image: &[u8],
    env_id: u64,
    env_count: u64,
    tsc_hz: u64,
) -> Result<(AddressSpace, u64), (LoadError, Option<AddressSpace>)> {
    let mut space = AddressSpace::new(kernel, &mut alloc).ok_or((LoadError::NoMemory, None))?;
    let result = (|| {
        let entry = load_elf(&mut space, image)?;
        map_zeroed(&mut space, STACK_TOP - STACK_SIZE, STACK_TOP, Flags::WRITABLE | Flags::NO_EXECUTE)?;
        let heap_len = spec.memory_kib * 1024;
        map_zeroed(&mut space, HEAP_BASE, HEAP_BASE + heap_len, Flags::WRITABLE | Flags::NO_EXECUTE)?;

        let mut page = StartPage::default();
        let (name_ptr, name_len) = page.text(&spec.name, 64);
        let (args_ptr, args_len) = page.text(&spec.args, 1024);
        let mut params = String::new();
        for (key, value) in &spec.params {
            params.push_str(key);
            params.push('=');
            params.push_str(value);
            params.push('\n');
        }
        let (params_ptr, params_len) = page.text(&params, 2048);
        let info = StartInfo {
            magic: START_MAGIC,
            env_id,
            env_count,
            name_ptr,
            name_len,
            args_ptr,
            args_len,
            params_ptr,
            params_len,
            heap_base: HEAP_BASE,
            heap_len,
            stack_base: STACK_TOP - STACK_SIZE,
            stack_len: STACK_SIZE,
            tsc_hz,
            quota_frames: spec.quota_kib / 4,
            tlb_slots: spec.tlb_slots,
        };
        map_zeroed(&mut space, START_INFO_ADDR, START_INFO_ADDR + PAGE, Flags::NO_EXECUTE)?;
        copy_in(&space, START_INFO_ADDR, &page.finish(&info))?;
        // The repossession vector: read-only to the libOS, written by the kernel.
        map_zeroed(&mut space, REPOSSESSION_ADDR, REPOSSESSION_ADDR + PAGE, Flags::NO_EXECUTE)?;
        Ok(entry)
    })();
    match result {
        Ok(entry) => Ok((space, entry)),
        Err(e) => Err((e, Some(space))),
    }
}
