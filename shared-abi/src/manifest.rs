//! The boot manifest: which libOSes boot, with which arguments and resources.
//!
//! A small line-oriented text format, parsed the same way by xtask (to check
//! a manifest before it is packed) and by the kernel (at boot):
//!
//! ```text
//! # comments start with '#'
//! log = info              # kernel log level: error, warn, info, debug, trace
//! keep_running = false    # true: the kernel idles instead of exiting when all envs end
//! quantum_us = 2000       # length of one time slot
//! slot_count = 12         # slots in the vector (default: one per env)
//! save_bound_us = 200     # end-of-slot context-save bound (default: quantum/10)
//! tlb_policy = flush      # context switch: flush, pcid (falls back to flush where absent), stlb
//! frame_pool_kib = 8192   # frames libOSes can allocate with keys (frame_alloc)
//! revoke_deadline_us = 20000  # time a libOS has to answer a repossession request
//! benchmarks = false      # true: the benchmark-only calls (key_bench, demux_bench) answer
//! nic_irq = true          # the NIC interrupts (I/O APIC); false: the kernel polls it
//! files = hello forktest  # Unix programs packed into the archive as bin/NAME, with the
//!                         # libos-unix/rootfs tree (xtask; the kernel ignores it)
//!
//! [env]                   # one section per environment, booted in this order
//! name = unix             # console prefix; at most 16 characters
//! program = libos-unix    # file in the boot archive
//! memory_kib = 2048       # heap memory the kernel maps for it at start
//! quota_kib = 1024        # pool frames it may hold for sure (it may borrow more)
//! tlb_slots = 64          # ordinary mappings the hardware sees at once
//! slots = 2               # time slots it owns from boot (default 1)
//! kmem_kib = 256          # kernel-memory budget: grants, mappings, filters it causes
//! console = false         # true: its family reads console input and prints unprefixed
//! args = demo             # passed to the libOS
//! pager = clock           # any other key is libOS policy: passed on untouched
//! ```
//!
//! Keys the kernel does not interpret are handed to the libOS in its start
//! record as `key=value` lines, so a policy choice (pager, scheduler) is one
//! line of configuration and never needs a kernel rebuild.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// Longest environment name.
pub const MAX_NAME_LEN: usize = 16;
/// Most environments one manifest may boot.
pub const MAX_ENVS: usize = 16;
/// Largest heap one environment may ask for at boot.
pub const MAX_MEMORY_KIB: u64 = 64 * 1024;
/// Default kernel-memory budget of an environment (`kmem_kib`).
pub const DEFAULT_KMEM_KIB: u64 = 256;
/// Largest kernel-memory budget one environment may be given.
pub const MAX_KMEM_KIB: u64 = 4096;

/// Kernel log level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn parse(text: &str) -> Option<LogLevel> {
        Some(match text {
            "error" => LogLevel::Error,
            "warn" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => return None,
        })
    }
}

/// The context-switch TLB policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlbPolicy {
    /// Reload CR3 on every switch: the hardware TLB is flushed.
    Flush,
    /// Tag address spaces with PCIDs where the CPU offers them.
    Pcid,
    /// Aegis style: only guaranteed mappings survive a switch; the rest
    /// refault through the software TLB.
    Stlb,
}

impl TlbPolicy {
    fn parse(text: &str) -> Option<TlbPolicy> {
        Some(match text {
            "flush" => TlbPolicy::Flush,
            "pcid" => TlbPolicy::Pcid,
            "stlb" => TlbPolicy::Stlb,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            TlbPolicy::Flush => "flush",
            TlbPolicy::Pcid => "pcid",
            TlbPolicy::Stlb => "stlb",
        }
    }
}

/// One environment to boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvSpec {
    pub name: String,
    pub program: String,
    pub args: String,
    pub memory_kib: u64,
    pub quota_kib: u64,
    pub tlb_slots: u64,
    /// Time slots owned from boot.
    pub slots: u64,
    /// Kernel-memory budget: the kernel heap this environment may cause
    /// the kernel to allocate (grant-table entries, reverse-map entries,
    /// packet filters), in KiB.
    pub kmem_kib: u64,
    /// Keys the kernel does not interpret, in manifest order.
    pub params: Vec<(String, String)>,
    /// Owns the console: its family reads console input and prints raw.
    pub console: bool,
}

impl EnvSpec {
    /// A libOS parameter by key.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A parsed manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub log: LogLevel,
    pub keep_running: bool,
    pub quantum_us: u64,
    pub tlb_policy: TlbPolicy,
    pub frame_pool_kib: u64,
    pub revoke_deadline_us: u64,
    /// Length of the slot vector (0: as many slots as the envs ask for).
    pub slot_count: u64,
    /// End-of-slot save bound (0: a tenth of `quantum_us`).
    pub save_bound_us: u64,
    /// Whether the benchmark-only calls (`key_bench`, `demux_bench`)
    /// answer; outside benchmark scenarios they are refused.
    /// The NIC raises interrupts (true, the default) or is polled.
    pub nic_irq: bool,
    pub benchmarks: bool,
    /// Unix programs to pack as `bin/NAME` beside the `rootfs` tree
    /// (xtask reads this; the kernel does not).
    pub files: Vec<String>,
    pub envs: Vec<EnvSpec>,
}

/// A manifest error with the 1-based line it was found on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError {
    pub line: usize,
    pub message: &'static str,
}

impl core::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "manifest line {}: {}", self.line, self.message)
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "yes" | "1" => Some(true),
        "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

impl Manifest {
    /// Parse and validate a manifest.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let mut manifest = Manifest {
            log: LogLevel::Info,
            keep_running: false,
            quantum_us: 2000,
            tlb_policy: TlbPolicy::Flush,
            frame_pool_kib: 8192,
            revoke_deadline_us: 20_000,
            slot_count: 0,
            save_bound_us: 0,
            benchmarks: false,
            nic_irq: true,
            files: Vec::new(),
            envs: Vec::new(),
        };
        let mut current: Option<EnvSpec> = None;
        let mut last_line = 0;
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            last_line = line_no;
            let err = |message| ManifestError { line: line_no, message };
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if line == "[env]" {
                if let Some(env) = current.take() {
                    manifest.push_env(env, line_no)?;
                }
                current = Some(EnvSpec {
                    name: String::new(),
                    program: String::new(),
                    args: String::new(),
                    memory_kib: 256,
                    quota_kib: 1024,
                    tlb_slots: 64,
                    slots: 1,
                    kmem_kib: DEFAULT_KMEM_KIB,
                    params: Vec::new(),
                    console: false,
                });
                continue;
            }
            if line.starts_with('[') {
                return Err(err("unknown section (only [env] exists)"));
            }
            let (key, value) = line.split_once('=').ok_or(err("expected key = value"))?;
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(err("bad key"));
            }
            match current.as_mut() {
                None => match key {
                    "log" => manifest.log = LogLevel::parse(value).ok_or(err("bad log level"))?,
                    "keep_running" => manifest.keep_running = parse_bool(value).ok_or(err("expected true or false"))?,
                    "quantum_us" => {
                        manifest.quantum_us = value.parse().map_err(|_| err("expected a number"))?;
                        if !(100..=1_000_000).contains(&manifest.quantum_us) {
                            return Err(err("quantum_us must lie in 100..=1000000"));
                        }
                    }
                    "tlb_policy" => {
                        manifest.tlb_policy = TlbPolicy::parse(value).ok_or(err("tlb_policy: flush, pcid or stlb"))?
                    }
                    "frame_pool_kib" => {
                        manifest.frame_pool_kib = value.parse().map_err(|_| err("expected a number"))?;
                        if manifest.frame_pool_kib > 1024 * 1024 {
                            return Err(err("frame_pool_kib out of range"));
                        }
                    }
                    "revoke_deadline_us" => {
                        manifest.revoke_deadline_us = value.parse().map_err(|_| err("expected a number"))?;
                        if !(100..=10_000_000).contains(&manifest.revoke_deadline_us) {
                            return Err(err("revoke_deadline_us must lie in 100..=10000000"));
                        }
                    }
                    "slot_count" => {
                        manifest.slot_count = value.parse().map_err(|_| err("expected a number"))?;
                        if manifest.slot_count > 256 {
                            return Err(err("slot_count must lie in 0..=256"));
                        }
                    }
                    "save_bound_us" => {
                        manifest.save_bound_us = value.parse().map_err(|_| err("expected a number"))?;
                        if manifest.save_bound_us > 1_000_000 {
                            return Err(err("save_bound_us out of range"));
                        }
                    }
                    "benchmarks" => manifest.benchmarks = parse_bool(value).ok_or(err("expected true or false"))?,
                    "nic_irq" => manifest.nic_irq = parse_bool(value).ok_or(err("expected true or false"))?,
                    "files" => {
                        manifest.files = value.split([' ', ',']).filter(|f| !f.is_empty()).map(String::from).collect()
                    }
                    _ => return Err(err("unknown global key")),
                },
                Some(env) => match key {
                    "name" => env.name = value.to_string(),
                    "program" => env.program = value.to_string(),
                    "args" => env.args = value.to_string(),
                    "memory_kib" => {
                        env.memory_kib = value.parse().map_err(|_| err("expected a number"))?;
                        if env.memory_kib == 0 || env.memory_kib > MAX_MEMORY_KIB {
                            return Err(err("memory_kib out of range"));
                        }
                    }
                    "quota_kib" => {
                        env.quota_kib = value.parse().map_err(|_| err("expected a number"))?;
                        if env.quota_kib > 1024 * 1024 {
                            return Err(err("quota_kib out of range"));
                        }
                    }
                    "tlb_slots" => {
                        env.tlb_slots = value.parse().map_err(|_| err("expected a number"))?;
                        if !(1..=4096).contains(&env.tlb_slots) {
                            return Err(err("tlb_slots must lie in 1..=4096"));
                        }
                    }
                    "slots" => {
                        env.slots = value.parse().map_err(|_| err("expected a number"))?;
                        if env.slots > 256 {
                            return Err(err("slots must lie in 0..=256"));
                        }
                    }
                    "console" => {
                        env.console = parse_bool(value).ok_or(err("expected true or false"))?;
                        if env.console && manifest.envs.iter().any(|e| e.console) {
                            return Err(err("only one environment may own the console"));
                        }
                    }
                    "kmem_kib" => {
                        env.kmem_kib = value.parse().map_err(|_| err("expected a number"))?;
                        if !(16..=MAX_KMEM_KIB).contains(&env.kmem_kib) {
                            return Err(err("kmem_kib must lie in 16..=4096"));
                        }
                    }
                    _ => {
                        if env.params.iter().any(|(k, _)| k == key) {
                            return Err(err("duplicate key"));
                        }
                        env.params.push((key.to_string(), value.to_string()));
                    }
                },
            }
        }
        if let Some(env) = current.take() {
            manifest.push_env(env, last_line)?;
        }
        if manifest.envs.is_empty() {
            return Err(ManifestError { line: last_line, message: "no [env] section" });
        }
        Ok(manifest)
    }

    fn push_env(&mut self, env: EnvSpec, line: usize) -> Result<(), ManifestError> {
        let err = |message| ManifestError { line, message };
        if env.name.is_empty() || env.name.len() > MAX_NAME_LEN {
            return Err(err("env name missing or longer than 16"));
        }
        if env.program.is_empty() {
            return Err(err("env program missing"));
        }
        if self.envs.iter().any(|e| e.name == env.name) {
            return Err(err("duplicate env name"));
        }
        if self.envs.len() == MAX_ENVS {
            return Err(err("too many envs"));
        }
        self.envs.push(env);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# demo\nlog = debug\nquantum_us = 500\ntlb_policy = stlb\n\n[env]\nname = unix\nprogram = libos-unix\nargs = demo x\nmemory_kib = 1024\npager = clock # policy\n\n[env]\nname = rt\nprogram = libos-rt\n";

    #[test]
    fn parses_sample() {
        let m = Manifest::parse(SAMPLE).unwrap();
        assert_eq!(m.log, LogLevel::Debug);
        assert_eq!(m.quantum_us, 500);
        assert_eq!(m.tlb_policy, TlbPolicy::Stlb);
        assert_eq!(m.frame_pool_kib, 8192);
        assert!(!m.keep_running);
        assert!(m.nic_irq, "the NIC interrupts unless told otherwise");
        assert!(!Manifest::parse("nic_irq = false\n[env]\nname=a\nprogram=b").unwrap().nic_irq);
        assert_eq!(m.envs.len(), 2);
        assert_eq!(m.envs[0].args, "demo x");
        assert_eq!(m.envs[0].memory_kib, 1024);
        assert_eq!(m.envs[0].param("pager"), Some("clock"));
        assert_eq!(m.envs[1].memory_kib, 256);
    }

    #[test]
    fn rejects_bad_manifests() {
        let cases = [
            ("", "no [env] section"),
            ("bogus = 1\n[env]\nname=a\nprogram=b", "unknown global key"),
            ("[env]\nprogram=b", "env name missing or longer than 16"),
            ("[env]\nname=a", "env program missing"),
            ("[env]\nname=a\nprogram=b\n[env]\nname=a\nprogram=c", "duplicate env name"),
            ("[env]\nname=a\nprogram=b\nmemory_kib=0", "memory_kib out of range"),
            ("[env]\nname=a\nprogram=b\nmemory_kib=x", "expected a number"),
            ("[envs]\n", "unknown section (only [env] exists)"),
            ("log = loud\n[env]\nname=a\nprogram=b", "bad log level"),
            ("[env]\nname=a\nprogram=b\nnovalue", "expected key = value"),
            ("[env]\nname=a\nprogram=b\nk=1\nk=2", "duplicate key"),
            ("tlb_policy = magic\n[env]\nname=a\nprogram=b", "tlb_policy: flush, pcid or stlb"),
            ("[env]\nname=a\nprogram=b\ntlb_slots=0", "tlb_slots must lie in 1..=4096"),
            ("[env]\nname=a\nprogram=b\nkmem_kib=1", "kmem_kib must lie in 16..=4096"),
            ("benchmarks = maybe\n[env]\nname=a\nprogram=b", "expected true or false"),
        ];
        for (text, message) in cases {
            assert_eq!(Manifest::parse(text).unwrap_err().message, message, "{text:?}");
        }
    }
}
