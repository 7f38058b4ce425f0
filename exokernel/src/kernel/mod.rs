//! The kernel: it composes the subsystems and carries out what involves
//! more than one of them. Each subsystem owns its state and is called with
//! what it needs:
//!
//! * `env::EnvTable`: who each environment is, its state, upcall entries,
//!   console line;
//! * `vm::Memory`: address spaces, frame keys, the pool, TLB slots, the
//!   software TLB, revocation;
//! * `sched::Cpu`: the slot vector, saved registers, accounting, protected
//!   control transfer state;
//! * `net::Net`: the NIC, receive rings, packet filters.
//!
//! This module holds boot; `trap.rs` dispatches traps and delivers upcalls;
//! `switch.rs` moves the CPU between environments (slots, yield, protected
//! control transfer); `lifecycle.rs` ends environments and the run. The
//! subsystems never call back into the kernel, so the kernel reads as a
//! stack: syscalls → kernel → subsystems → kcore, counters, arch.

mod children;
mod lifecycle;
mod switch;
mod trap;

pub use children::check_upcalls;
pub use trap::{handle_trap, window_fault};

use crate::arch::paging::AddressSpace;
use crate::arch::trap::TrapFrame;
use crate::arch::{self, apic, cpu, memory};
use crate::env::{Env, EnvState, EnvTable};
use crate::net::Net;
use crate::sched::Cpu;
use crate::vm::Memory;
use crate::{loader, logger};
use alloc::format;
use bootloader_api::BootInfo;
use kcore::kmem::{self, KmemObject, KmemUse};
use shared_abi::archive::{Archive, MANIFEST_NAME};
use shared_abi::manifest::{Manifest, TlbPolicy};
use shared_abi::syscall::Error;
use spin::Mutex;

/// A 256-bit secret for minting frame keys: RDRAND where the CPU has it,
/// else (QEMU's default CPU lacks RDRAND and RDSEED) TSC jitter folded
/// through SHA-256 with the boot memory layout. Never logged.
fn boot_secret() -> [u8; 32] {
    let mut words = [0u64; 4];
    if let Some(rng) = x86_64::instructions::random::RdRand::new() {
        for word in words.iter_mut() {
            *word = rng.get_u64().unwrap_or(0);
        }
    }
    let mut seed = [0u8; 64];
    for (i, word) in words.iter().enumerate() {
        seed[i * 8..i * 8 + 8].copy_from_slice(&word.to_le_bytes());
    }
    seed[32..40].copy_from_slice(&cpu::rdtsc().to_le_bytes());
    seed[40..48].copy_from_slice(&(boot_secret as *const () as u64).to_le_bytes());
    seed[48..56].copy_from_slice(&memory::free_frames().to_le_bytes());
    seed[56..64].copy_from_slice(&cpu::rdtsc().to_le_bytes());
    crate::vm::derive_secret(&seed)
}

pub struct Kernel {
    pub envs: EnvTable,
    pub memory: Memory,
    pub cpu: Cpu,
    pub net: Net,
    keep_running: bool,
    /// The boot archive (`archive_read` serves it).
    archive: &'static [u8],
    /// Free frames and kernel heap in use before any environment was
    /// built: once all have ended and been reclaimed, both must be back.
    frames_at_boot: u64,
    heap_at_boot: u64,
}

pub static KERNEL: Mutex<Option<Kernel>> = Mutex::new(None);

/// Boot: hardware, memory, manifest, environments; then run the first one.
pub fn boot(boot_info: &'static mut BootInfo) -> ! {
    arch::serial::init();
    logger::init(log::LevelFilter::Info);
    let phys_offset = boot_info.physical_memory_offset.into_option().expect("physical memory mapped");
    arch::paging::init(phys_offset);
    memory::init(&boot_info.memory_regions);
    let selectors = arch::gdt::init();
    arch::trap::init(selectors, handle_trap, window_fault, crate::syscalls::handle_syscall, crate::syscalls::LIGHT);
    cpu::enable_nxe_and_wp();

    let kernel_fn = boot as *const () as u64;
    assert!(
        kernel_fn >= shared_abi::USER_TOP && phys_offset >= shared_abi::USER_TOP,
        "kernel must live in the upper half"
    );

    let ramdisk = arch::pod::ramdisk(boot_info).expect("boot archive passed as ramdisk");
    let archive = Archive::parse(ramdisk).expect("boot archive is well formed");
    let manifest_text = archive.find(MANIFEST_NAME).expect("boot archive has a manifest");
    let manifest = Manifest::parse(core::str::from_utf8(manifest_text).unwrap_or(""))
        .unwrap_or_else(|e| panic!("boot manifest: {}", e));
    logger::init(logger::level_of(manifest.log));

    let mut kernel_space = AddressSpace::take_boot_space().expect("boot runs once");
    let window = (256..512u64)
        .rev()
        .map(|slot| 0xffff_0000_0000_0000 | (slot << 39))
        .find(|&va| kernel_space.top_level_free(va))
        .expect("a free top-level slot for the APIC window");
    apic::init(&mut kernel_space, window);
    let tsc_hz = apic::calibrate();
    // The NIC (if QEMU has one) maps its registers into a kernel window of
    // its own, before environments copy the kernel half of the page tables.
    let nic = (256..512u64)
        .rev()
        .map(|slot| 0xffff_0000_0000_0000 | (slot << 39))
        .find(|&va| kernel_space.top_level_free(va))
        .and_then(|nic_window| arch::nic::Nic::probe(nic_window, memory::ram_end()));
    if nic.is_none() {
        log::debug!("net: no virtio-net device; network calls will answer invalid-argument");
    }
    let global = kernel_space.make_kernel_half_global();
    cpu::enable_global_pages();
    log::debug!("paging: {} kernel-half leaves global", global);
    log::info!(
        "exokernel up: {} MiB free, tsc {} MHz, {} environment(s), quantum {} us",
        memory::free_frames() / 256,
        tsc_hz / 1_000_000,
        manifest.envs.len(),
        manifest.quantum_us
    );

    memory::zero_ahead(256);
    let frames_at_boot = memory::free_frames();
    let policy = match manifest.tlb_policy {
        TlbPolicy::Pcid if cpu::has_pcid() => {
            cpu::enable_pcid();
            TlbPolicy::Pcid
        }
        TlbPolicy::Pcid => {
            log::warn!("tlb_policy pcid: this CPU does not offer PCID (CPUID.01H:ECX bit 17); using flush");
            TlbPolicy::Flush
        }
        other => other,
    };
    let secret = boot_secret();
    let net_seed = crate::vm::derive_secret(&[&secret[..], b"demux"].concat());
    let hash_seed = u64::from_le_bytes(net_seed[..8].try_into().expect("8 bytes"));
    let mut net = Net::new(nic, hash_seed, manifest.envs.len(), manifest.benchmarks);
    if manifest.nic_irq && net.require_nic().is_ok() && !net.enable_irq(arch::trap::NIC_VECTOR) {
        log::info!("net: the NIC has no usable interrupt line; polling it");
    }
    let (_, heap_free) = memory::heap_usage();
    if !kmem::budgets_fit(manifest.envs.iter().map(|e| e.kmem_kib * 1024), heap_free) {
        panic!(
            "boot manifest: the environments' kernel-memory budgets (kmem_kib) exceed half of the {} KiB of free kernel heap",
            heap_free / 1024
        );
    }
    let revoke_deadline_tsc = tsc_hz / 1_000_000 * manifest.revoke_deadline_us;
    let mut memory = Memory::new(
        secret,
        manifest.frame_pool_kib / 4,
        policy,
        revoke_deadline_tsc,
        kernel_space,
        manifest.benchmarks,
    );
    log::info!(
        "memory: pool {} KiB, tlb policy {}, revocation deadline {} us",
        manifest.frame_pool_kib,
        policy.name(),
        manifest.revoke_deadline_us
    );
    let heap_at_boot = memory::heap_usage().0;

    let wanted: u64 = manifest.envs.iter().map(|e| e.slots).sum();
    let vector_len = if manifest.slot_count > 0 { manifest.slot_count } else { wanted.max(1) };
    let slot_ticks = tsc_hz / 1_000_000 * manifest.quantum_us;
    let save_bound_us = if manifest.save_bound_us > 0 { manifest.save_bound_us } else { manifest.quantum_us / 10 };
    let mut cpu_state = Cpu::new(vector_len as usize, slot_ticks, tsc_hz / 1_000_000 * save_bound_us, tsc_hz);

    let count = manifest.envs.len() as u64;
    let mut envs = EnvTable::default();
    for (index, spec) in manifest.envs.iter().enumerate() {
        let id = index as u64 + 1;
        let mut env = Env::new(id, spec.name.clone());
        let built = match archive.find(&spec.program) {
            None => Err((loader::LoadError::NoProgram, None)),
            Some(image) => loader::build(memory.kernel_space(), spec, image, id, count, tsc_hz),
        };
        let (space, context) = match built {
            Ok((space, entry)) => {
                log::debug!("env {} {}: {} loaded, entry {:#x}", id, spec.name, spec.program, entry);
                let context =
                    TrapFrame::new_user(entry, shared_abi::start::STACK_TOP, shared_abi::start::START_INFO_ADDR);
                (Some(space), context)
            }
            Err((error, space)) => {
                if let Some(space) = space {
                    space.destroy(&mut memory::free_frame);
                }
                env.state = EnvState::Killed(format!("not started: {:?} ({})", error, spec.program));
                crate::counters::bump(&crate::counters::COUNTERS.envs_ended);
                (None, TrapFrame::default())
            }
        };
        let alive = space.is_some();
        let at = [
            envs.push(env),
            memory.add_env(id, space, spec.quota_kib / 4, spec.tlb_slots, spec.kmem_kib * 1024),
            cpu_state.add_env(alive, context, spec.slots as usize),
        ];
        debug_assert!(at.iter().all(|&i| i == index), "subsystems index environments alike");
    }
    envs.console_family = manifest.envs.iter().position(|e| e.console);
    if envs.console_family.is_some() {
        // Input wakes a reader at once: COM1's receive interrupt (the UART
        // driver enables it) through the I/O APIC. The kernel still polls
        // at slot boundaries, so input is never lost without it.
        if apic::ioapic_route(arch::serial::IRQ, arch::trap::CONSOLE_VECTOR, false) {
            apic::ioapic_mask(arch::serial::IRQ, false);
        } else {
            log::info!("console: no I/O APIC input for COM1; polling it");
        }
    }
    log::info!("cpu: {} slots of {} us, end-of-slot save bound {} us", vector_len, manifest.quantum_us, save_bound_us);
    let mut kernel = Kernel {
        envs,
        memory,
        cpu: cpu_state,
        net,
        keep_running: manifest.keep_running,
        archive: ramdisk,
        frames_at_boot,
        heap_at_boot,
    };
    let Some(first) = kernel.first_slot() else { kernel.finish() };
    let frame = *kernel.cpu.context(first);
    *KERNEL.lock() = Some(kernel);
    arch::trap::enter_user(&frame)
}

impl Kernel {
    /// Index of the environment the CPU holds.
    pub fn current(&self) -> usize {
        self.cpu.current()
    }

    /// Before the kernel touches `[ptr, ptr + len)` of the caller's memory:
    /// pages it mapped that only the software TLB holds come back.
    pub fn prefault(&mut self, ptr: u64, len: u64) {
        self.memory.prefault(self.current(), ptr, len);
    }

    /// The current environment's address space.
    pub fn current_space(&self) -> Result<&AddressSpace, Error> {
        self.memory.space(self.current()).ok_or(Error::NoSuchEnv)
    }

    /// The kernel objects env `index` pays for, in every subsystem.
    pub fn kmem_use(&self, index: usize) -> KmemUse {
        self.memory.kmem_charges(index).plus(self.kmem_elsewhere(index))
    }

    /// What env `index` pays for outside the memory subsystem (which adds
    /// its own when it checks room).
    pub fn kmem_elsewhere(&self, index: usize) -> KmemUse {
        KmemUse { filters: self.net.filters_of(self.envs.get(index).id) as u64, ..KmemUse::default() }
    }

    /// `NoMemory` unless env `index` may create one more `object`.
    pub fn kmem_room(&self, index: usize, object: KmemObject) -> Result<(), Error> {
        self.kmem_use(index).room_for(self.memory.kmem_limit(index), object)
    }

    /// Console input arrived: wake whoever waits for it.
    pub fn poll_console(&mut self) {
        if let Some(waiter) = self.envs.poll_input() {
            self.cpu.wake(waiter);
        }
    }

    /// The network calls that need a NIC: refuse without one, else move
    /// what it received into the rings first.
    pub fn net_ready(&mut self) -> Result<(), Error> {
        self.net.require_nic()?;
        self.poll_net();
        Ok(())
    }

    /// Move frames the NIC received into their rings; wake each owner
    /// asleep in `block`.
    pub fn poll_net(&mut self) {
        let (envs, memory, cpu) = (&self.envs, &self.memory, &mut self.cpu);
        self.net.poll(
            |id| {
                let index = envs.index_of(id)?;
                Some((index, memory.space(index)?))
            },
            |index| cpu.wake(index),
        );
    }
}
