//! The kernel proper: boot, the environment table, and dispatch of every
//! trap from ring 3 to the libOS that owns it (the CPU's time-slot vector
//! is in `sched.rs`, memory bindings in `vm.rs`).

use crate::arch::paging::{AddressSpace, Flags};
use crate::arch::trap::{self, TrapFrame};
use crate::arch::{self, apic, cpu, memory};
use crate::env::{Env, EnvState};
use crate::umem::Pod;
use crate::{loader, logger};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use bootloader_api::BootInfo;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use shared_abi::archive::{Archive, MANIFEST_NAME};
use shared_abi::exit::Verdict;
use shared_abi::manifest::Manifest;
use shared_abi::syscall::KernelStats;
use shared_abi::upcall::{UpcallFrame, UpcallKind, FRAME_SIZE};
use kcore::kmem;
use crate::vm::EnvMemory;
use shared_abi::manifest::TlbPolicy;
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

/// Event counters, reported by the `stats` call and the end-of-run summary.
pub struct Counters {
    pub syscalls: AtomicU64,
    pub upcalls: AtomicU64,
    pub exceptions: AtomicU64,
    pub page_faults: AtomicU64,
    pub timer_ticks: AtomicU64,
    pub context_switches: AtomicU64,
    pub cr3_loads: AtomicU64,
    pub invlpg: AtomicU64,
    pub envs_ended: AtomicU64,
    pub stlb_hits: AtomicU64,
    pub stlb_misses: AtomicU64,
    pub slot_evictions: AtomicU64,
    pub key_checks: AtomicU64,
    pub revocation_requests: AtomicU64,
    pub frames_repossessed: AtomicU64,
    pub slot_end_upcalls: AtomicU64,
    pub overruns: AtomicU64,
    pub pct_calls: AtomicU64,
}

pub static COUNTERS: Counters = Counters {
    syscalls: AtomicU64::new(0),
    upcalls: AtomicU64::new(0),
    exceptions: AtomicU64::new(0),
    page_faults: AtomicU64::new(0),
    timer_ticks: AtomicU64::new(0),
    context_switches: AtomicU64::new(0),
    cr3_loads: AtomicU64::new(0),
    invlpg: AtomicU64::new(0),
    envs_ended: AtomicU64::new(0),
    stlb_hits: AtomicU64::new(0),
    stlb_misses: AtomicU64::new(0),
    slot_evictions: AtomicU64::new(0),
    key_checks: AtomicU64::new(0),
    revocation_requests: AtomicU64::new(0),
    frames_repossessed: AtomicU64::new(0),
    slot_end_upcalls: AtomicU64::new(0),
    overruns: AtomicU64::new(0),
    pct_calls: AtomicU64::new(0),
};

impl Counters {
    pub fn snapshot(&self) -> KernelStats {
        let (fast_exceptions, fast_page_faults) = trap::fast_upcall_counts();
        KernelStats {
            syscalls: self.syscalls.load(Relaxed),
            upcalls: self.upcalls.load(Relaxed) + fast_exceptions,
            exceptions: self.exceptions.load(Relaxed) + fast_exceptions,
            page_faults: self.page_faults.load(Relaxed) + fast_page_faults,
            timer_ticks: self.timer_ticks.load(Relaxed),
            context_switches: self.context_switches.load(Relaxed),
            cr3_loads: self.cr3_loads.load(Relaxed),
            invlpg: self.invlpg.load(Relaxed),
            envs_ended: self.envs_ended.load(Relaxed),
            stlb_hits: self.stlb_hits.load(Relaxed),
            stlb_misses: self.stlb_misses.load(Relaxed),
            slot_evictions: self.slot_evictions.load(Relaxed),
            key_checks: self.key_checks.load(Relaxed),
            revocation_requests: self.revocation_requests.load(Relaxed),
            frames_repossessed: self.frames_repossessed.load(Relaxed),
            slot_end_upcalls: self.slot_end_upcalls.load(Relaxed),
            overruns: self.overruns.load(Relaxed),
            pct_calls: self.pct_calls.load(Relaxed),
        }
    }
}

pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

pub struct Kernel {
    pub envs: Vec<Env>,
    /// Index of the environment whose state the CPU holds.
    pub current: usize,
    /// The boot address space (kernel half only, once envs run).
    pub kernel_space: AddressSpace,
    /// Root of the address space loaded in CR3.
    pub loaded_root: u64,
    pub keep_running: bool,
    pub vm: crate::vm::Vm,
    /// The time-slot vector and where in it the CPU is.
    pub slots: kcore::slotvec::SlotVector,
    pub slot_pos: usize,
    pub slot_ticks: u64,
    pub save_bound_ticks: u64,
    pub grace: Option<crate::sched::Grace>,
    pub last_switch_tsc: u64,
    pub tsc_hz: u64,
    /// Free frames before any environment was built: once all have ended
    /// and been reclaimed, the count must be back to this.
    pub frames_at_boot: u64,
    /// Kernel heap in use before any environment was built: the same
    /// invariant for kernel memory.
    pub heap_at_boot: u64,
    /// The manifest allows the benchmark-only calls.
    pub benchmarks: bool,
    /// The network binding: NIC, filters, receive rings.
    pub net: crate::net::Net,
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
    trap::init(selectors, handle_trap, crate::syscalls::handle_syscall, crate::syscalls::LIGHT);
    cpu::enable_nxe_and_wp();

    let kernel_fn = boot as *const () as u64;
    assert!(kernel_fn >= shared_abi::USER_TOP && phys_offset >= shared_abi::USER_TOP, "kernel must live in the upper half");

    let ramdisk_addr = boot_info.ramdisk_addr.into_option().expect("boot archive passed as ramdisk");
    let ramdisk = arch::pod::ramdisk(ramdisk_addr, boot_info.ramdisk_len);
    let archive = Archive::parse(ramdisk).expect("boot archive is well formed");
    let manifest_text = archive.find(MANIFEST_NAME).expect("boot archive has a manifest");
    let manifest = Manifest::parse(core::str::from_utf8(manifest_text).unwrap_or(""))
        .unwrap_or_else(|e| panic!("boot manifest: {}", e));
    logger::init(logger::level_of(manifest.log));

    let mut kernel_space = AddressSpace::current();
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
    log::info!(
        "exokernel up: {} MiB free, tsc {} MHz, {} environment(s), quantum {} us",
        memory::free_frames() / 256,
        tsc_hz / 1_000_000,
        manifest.envs.len(),
        manifest.quantum_us
    );

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
    let net = crate::net::Net::new(nic, u64::from_le_bytes(net_seed[..8].try_into().expect("8 bytes")), manifest.envs.len());
    let (_, heap_free) = memory::heap_usage();
    let budgets = manifest.envs.iter().map(|e| e.kmem_kib * 1024);
    if !kmem::budgets_fit(budgets, heap_free) {
        panic!(
            "boot manifest: the environments' kernel-memory budgets (kmem_kib) exceed half of the {} KiB of free kernel heap",
            heap_free / 1024
        );
    }
    let vm = crate::vm::Vm {
        table: kcore::keys::FrameTable::new(secret),
        pool_frames: manifest.frame_pool_kib / 4,
        pool_used: 0,
        policy,
        revoke_deadline_tsc: tsc_hz / 1_000_000 * manifest.revoke_deadline_us,
        rmap: Default::default(),
    };
    log::info!(
        "memory: pool {} KiB, tlb policy {}, revocation deadline {} us",
        manifest.frame_pool_kib,
        policy.name(),
        manifest.revoke_deadline_us
    );
    let count = manifest.envs.len() as u64;
    let heap_at_boot = memory::heap_usage().0;
    let mut envs = Vec::new();
    for (index, spec) in manifest.envs.iter().enumerate() {
        let id = index as u64 + 1;
        let mut env = Env {
            id,
            name: spec.name.clone(),
            state: EnvState::Runnable,
            space: None,
            frame: TrapFrame::default(),
            upcalls: Default::default(),
            fast: None,
            line: Vec::new(),
            mem: EnvMemory::new(spec.quota_kib / 4, spec.tlb_slots, spec.kmem_kib * 1024),
            cpu: Default::default(),
        };
        let built = match archive.find(&spec.program) {
            None => Err((loader::LoadError::NoProgram, None)),
            Some(image) => loader::build(&kernel_space, spec, image, id, count, tsc_hz),
        };
        match built {
            Ok((space, entry)) => {
                log::debug!("env {} {}: {} loaded, entry {:#x}", id, spec.name, spec.program, entry);
                env.frame = TrapFrame::new_user(entry, shared_abi::start::STACK_TOP, shared_abi::start::START_INFO_ADDR);
                env.space = Some(space);
            }
            Err((error, space)) => {
                if let Some(space) = space {
                    reclaim(space);
                }
                env.state = EnvState::Killed(format!("not started: {:?} ({})", error, spec.program));
                env.mem = EnvMemory::ended();
                bump(&COUNTERS.envs_ended);
            }
        }
        envs.push(env);
    }
    let wanted: u64 = manifest.envs.iter().map(|e| e.slots).sum();
    let vector_len = if manifest.slot_count > 0 { manifest.slot_count } else { wanted.max(1) };
    let mut slots = kcore::slotvec::SlotVector::new(vector_len as usize);
    for (index, spec) in manifest.envs.iter().enumerate() {
        if envs[index].is_runnable() {
            slots.alloc_spread(spec.slots as usize, index);
        }
    }
    let slot_ticks = tsc_hz / 1_000_000 * manifest.quantum_us;
    let save_bound_us = if manifest.save_bound_us > 0 { manifest.save_bound_us } else { manifest.quantum_us / 10 };
    log::info!("cpu: {} slots of {} us, end-of-slot save bound {} us", vector_len, manifest.quantum_us, save_bound_us);
    let mut kernel = Kernel {
        envs,
        current: 0,
        loaded_root: kernel_space.root(),
        kernel_space,
        keep_running: manifest.keep_running,
        frames_at_boot,
        heap_at_boot,
        benchmarks: manifest.benchmarks,
        vm,
        slots,
        slot_pos: 0,
        slot_ticks,
        save_bound_ticks: tsc_hz / 1_000_000 * save_bound_us,
        grace: None,
        last_switch_tsc: 0,
        tsc_hz,
        net,
    };
    let Some(first) = kernel.first_slot() else { kernel.finish() };
    let frame = kernel.envs[first].frame;
    *KERNEL.lock() = Some(kernel);
    trap::enter_user(&frame)
}

/// Free every frame of an address space; returns how many were page tables.
fn reclaim(space: AddressSpace) -> u64 {
    space.destroy(&mut memory::free_frame)
}

/// Every trap but system calls.
fn handle_trap(frame: &mut TrapFrame) {
    let vector = frame.vector;
    if vector == trap::TIMER_VECTOR as u64 {
        apic::eoi();
        bump(&COUNTERS.timer_ticks);
        if !frame.from_user() {
            return; // the idle loop
        }
        let mut guard = KERNEL.lock();
        let kernel = guard.as_mut().expect("kernel initialised");
        // Frames the NIC received go to their rings; a NET_RX upcall owed
        // to the running env is delivered first, so that a slot-end upcall
        // of this tick nests above it.
        kernel.poll_net();
        kernel.deliver_net_rx(frame);
        kernel.on_timer(frame);
        return;
    }
    if vector >= 32 {
        log::warn!("unexpected interrupt vector {}", vector);
        return;
    }
    if vector == 2 {
        // NMI: a hardware event, not anyone's fault; resume what ran.
        return;
    }
    if !frame.from_user() {
        panic!(
            "kernel exception {} (error {:#x}, cr2 {:#x}) at {:#x}\n{:#x?}",
            vector,
            frame.error_code,
            cpu::cr2(),
            frame.rip,
            frame
        );
    }
    if vector == 18 {
        panic!("machine check while running an environment");
    }
    bump(&COUNTERS.exceptions);
    let (kind, addr) = if vector == 14 {
        bump(&COUNTERS.page_faults);
        (UpcallKind::PageFault, cpu::cr2())
    } else {
        (UpcallKind::Exception, 0)
    };
    let mut guard = KERNEL.lock();
    let kernel = guard.as_mut().expect("kernel initialised");
    if vector == 14 && kernel.stlb_refill(addr, frame.error_code) {
        return;
    }
    if let Err(reason) = kernel.deliver_upcall(frame, kind, vector, frame.error_code, addr) {
        let what = if vector == 14 {
            format!("page fault at {:#x} (rip {:#x}, error {:#x}): {}", addr, frame.rip, frame.error_code, reason)
        } else {
            format!("exception {} at rip {:#x}: {}", vector, frame.rip, reason)
        };
        kernel.kill_current(what);
        kernel.run_rest_of_slot(frame);
    }
}

impl Kernel {
    pub fn current_env(&mut self) -> &mut Env {
        &mut self.envs[self.current]
    }

    /// Hand a discontinuity to the current environment's registered entry:
    /// write an [`UpcallFrame`] on its upcall stack and start the entry.
    pub fn deliver_upcall(
        &mut self,
        frame: &mut TrapFrame,
        kind: UpcallKind,
        vector: u64,
        error_code: u64,
        addr: u64,
    ) -> Result<(), &'static str> {
        let env = &mut self.envs[self.current];
        let table = env.upcalls;
        let entry = match kind {
            UpcallKind::Exception => table.exception_entry,
            UpcallKind::PageFault => table.page_fault_entry,
            UpcallKind::Interrupt => table.interrupt_entry,
            UpcallKind::ProtectedEntry => table.protected_entry,
            UpcallKind::Revocation => table.revocation_entry,
        };
        if entry == 0 {
            return Err("no handler registered");
        }
        let (base, top) = (table.stack_base, table.stack_base + table.stack_len);
        // Nested upcall: continue below the interrupted rsp, leaving room for
        // the resume sequence the libOS stages there.
        let below = if (base..=top).contains(&frame.rsp) { frame.rsp.saturating_sub(128) } else { top };
        let at = below.saturating_sub(FRAME_SIZE as u64) & !15;
        if at < base {
            return Err("upcall stack exhausted");
        }
        let space = env.space.as_ref().ok_or("no address space")?;
        let write = |out: &mut UpcallFrame| {
            out.kind = kind as u64;
            out.vector = vector;
            out.error_code = error_code;
            out.fault_addr = addr;
            out.regs.rax = frame.rax;
            out.regs.rbx = frame.rbx;
            out.regs.rcx = frame.rcx;
            out.regs.rdx = frame.rdx;
            out.regs.rsi = frame.rsi;
            out.regs.rdi = frame.rdi;
            out.regs.rbp = frame.rbp;
            out.regs.r8 = frame.r8;
            out.regs.r9 = frame.r9;
            out.regs.r10 = frame.r10;
            out.regs.r11 = frame.r11;
            out.regs.r12 = frame.r12;
            out.regs.r13 = frame.r13;
            out.regs.r14 = frame.r14;
            out.regs.r15 = frame.r15;
            out.rip = frame.rip;
            out.rsp = frame.rsp;
            out.rflags = frame.rflags;
        };
        // Translated afresh on every delivery: no translation of the upcall
        // stack outlives a mapping change (the stack may be in the dynamic
        // window, where `unmap`, `frame_free` and the abort protocol move it).
        let mut upcall = UpcallFrame::default();
        write(&mut upcall);
        space.write_user(at, upcall.as_bytes(), Flags::WRITABLE).map_err(|()| "upcall stack not writable")?;
        frame.rip = entry;
        frame.rsp = at;
        frame.rdi = at;
        bump(&COUNTERS.upcalls);
        Ok(())
    }

    /// Make `index`'s address space the loaded one (if it is not already),
    /// doing the context-switch TLB policy's work.
    pub fn load_space(&mut self, index: usize) {
        let Some(root) = self.envs[index].space.as_ref().map(|s| s.root()) else { return };
        if root == self.loaded_root {
            return;
        }
        self.switch_in_tlb(index);
        let env = &mut self.envs[index];
        let space = env.space.as_ref().expect("checked above");
        if self.vm.policy == TlbPolicy::Pcid {
            space.activate_pcid(env.id as u16, env.mem.needs_flush);
        } else {
            space.activate();
        }
        env.mem.needs_flush = false;
        self.loaded_root = root;
        bump(&COUNTERS.cr3_loads);
    }

    /// End the current environment and reclaim its memory.
    pub fn end_current(&mut self, state: EnvState) {
        let index = self.current;
        self.flush_console(index);
        let env = &mut self.envs[index];
        match &state {
            EnvState::Killed(reason) => log::info!("env {} ({}) killed: {}", env.id, env.name, reason),
            EnvState::Exited(code) => log::debug!("env {} ({}) exited with {}", env.id, env.name, code),
            EnvState::Runnable => {}
        }
        env.state = state;
        self.net_env_ended(index);
        self.reclaim_memory(index);
        self.release_cpu(index);
        let env = &mut self.envs[index];
        if let Some(space) = env.space.take() {
            if space.root() == self.loaded_root {
                self.kernel_space.activate();
                self.loaded_root = self.kernel_space.root();
                bump(&COUNTERS.cr3_loads);
            }
            reclaim(space);
        }
        // Its page tables went with the address space: out of the pool.
        self.vm.pool_used -= env.mem.page_table_frames;
        // Drop what the kernel heap held for it (slots, software TLB,
        // queues); the record stays for the end-of-run summary.
        env.mem = EnvMemory::ended();
        env.line = Vec::new();
        env.cpu.pct_queue = Default::default();
        bump(&COUNTERS.envs_ended);
    }

    pub fn kill_current(&mut self, reason: String) {
        self.end_current(EnvState::Killed(reason));
    }

    fn flush_console(&mut self, index: usize) {
        if !self.envs[index].line.is_empty() {
            self.console_bytes(index, b"\n");
        }
    }

    /// Append console output of env `index`; complete lines are printed
    /// with the environment's name in front.
    pub fn console_bytes(&mut self, index: usize, bytes: &[u8]) {
        const MAX_LINE: usize = 480;
        let env = &mut self.envs[index];
        for &byte in bytes {
            if byte == b'\n' || env.line.len() >= MAX_LINE {
                arch::serial::write_fmt(format_args!(
                    "[{}] {}\n",
                    env.name,
                    core::str::from_utf8(&env.line).unwrap_or("<bad utf-8>")
                ));
                env.line.clear();
                if byte == b'\n' {
                    continue;
                }
            }
            let printable = if byte == b'\t' || (0x20..0x7f).contains(&byte) { byte } else { b'?' };
            env.line.push(printable);
        }
    }

    /// Every environment has ended: print the summary and end the run.
    pub fn finish(&mut self) -> ! {
        let now = cpu::rdtsc();
        let used = now.saturating_sub(self.last_switch_tsc);
        if self.envs.get(self.current).is_some_and(|e| e.is_runnable()) || used > 0 {
            if let Some(env) = self.envs.get_mut(self.current) {
                env.cpu.cpu_ticks += used;
            }
        }
        self.last_switch_tsc = now;
        let stats = COUNTERS.snapshot();
        for env in &self.envs {
            match &env.state {
                EnvState::Exited(code) => arch::serial::write_fmt(format_args!(
                    "EXO-SUMMARY env={} name={} status=exited code={} cpu_ticks={} overruns={}\n",
                    env.id, env.name, code, env.cpu.cpu_ticks, env.cpu.overruns
                )),
                EnvState::Killed(reason) => arch::serial::write_fmt(format_args!(
                    "EXO-SUMMARY env={} name={} status=killed cpu_ticks={} overruns={} reason=\"{}\"\n",
                    env.id, env.name, env.cpu.cpu_ticks, env.cpu.overruns, reason
                )),
                EnvState::Runnable => {}
            }
        }
        arch::serial::write_fmt(format_args!(
            "EXO-STATS syscalls={} upcalls={} exceptions={} page_faults={} timer_ticks={} context_switches={} cr3_loads={} overruns={} pct_calls={} frames_at_boot={} frames_at_end={}\n",
            stats.syscalls,
            stats.upcalls,
            stats.exceptions,
            stats.page_faults,
            stats.timer_ticks,
            stats.context_switches,
            stats.cr3_loads,
            stats.overruns,
            stats.pct_calls,
            self.frames_at_boot,
            memory::free_frames()
        ));
        if self.keep_running {
            log::info!("all environments ended; idling (keep_running)");
            cpu::idle_forever();
        }
        let verdict = if self.check_invariants() { Verdict::Success } else { Verdict::Failure };
        let word = if verdict == Verdict::Success { "success" } else { "failure" };
        arch::serial::write_fmt(format_args!("EXO-END verdict={}\n", word));
        arch::exit_qemu(verdict)
    }

    /// Every environment has ended: everything they held must be back.
    /// Free frames and kernel heap in use return to their values from
    /// before the first environment was built, and no key, mapping, filter
    /// or pool frame is left. Prints the `EXO-INVARIANTS` line; false if
    /// one does not hold (the run then ends with verdict failure).
    fn check_invariants(&mut self) -> bool {
        let live_keys = self.vm.table.live_keys();
        let rmap_entries = self.vm.rmap.len();
        let pool_used = self.vm.pool_used;
        let filters = self.net.filter_count();
        // The state built for the environments goes: their records (the
        // summary is printed), the slot vector, and the containers whose
        // storage outlives their contents (the grant table keeps retired
        // slots so that old keys stay stale; no key can be presented now),
        // each only once it is empty, so a leak still shows.
        drop(core::mem::take(&mut self.envs));
        self.slots = kcore::slotvec::SlotVector::new(0);
        self.grace = None;
        if live_keys == 0 {
            self.vm.table.retire();
        }
        if rmap_entries == 0 {
            // An emptied B-tree may keep its root node.
            self.vm.rmap = kcore::rmap::ReverseMap::new();
        }
        if filters == 0 {
            self.net.retire_filters();
        }
        let heap_at_end = memory::heap_usage().0;
        let frames_at_end = memory::free_frames();
        let ok = frames_at_end == self.frames_at_boot
            && heap_at_end == self.heap_at_boot
            && live_keys == 0
            && rmap_entries == 0
            && pool_used == 0
            && filters == 0;
        arch::serial::write_fmt(format_args!(
            "EXO-INVARIANTS frames_at_boot={} frames_at_end={} heap_at_boot={} heap_at_end={} live_keys={} rmap_entries={} pool_used={} filters={} ok={}\n",
            self.frames_at_boot, frames_at_end, self.heap_at_boot, heap_at_end, live_keys, rmap_entries, pool_used, filters, ok
        ));
        ok
    }
}
