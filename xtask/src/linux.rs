//! The Linux baseline of `cargo xtask bench`: our own C benchmark
//! (`xtask/linux/bench.c`) run as `/init` under a stock Debian cloud kernel
//! in QEMU, on the same machine model and with the same `-icount shift=0`
//! as the exokernel's bench, so both columns count guest instructions.
//!
//! Everything it needs (gcc, cpio, the kernel package) is fetched with
//! apt on first use and cached under `target/linux/`. When something cannot
//! be had, [`baseline`] says why and returns `None`: the bench goes on
//! without the Linux column.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use xtask::{qemu_binary, root};

/// Seconds before a Linux guest run is stopped (it takes about 10-20 s).
pub const DEFAULT_TIMEOUT: u64 = 120;

/// The metapackage that names the current Debian cloud kernel.
const METAPACKAGE: &str = "linux-image-cloud-amd64";

/// Exokernel operation → its Linux counterpart. A `*` in the exokernel
/// name matches any text (the TLB policy of the switch rows, which the
/// guest bench prints as `switch_<policy>_touch_<W>`).
pub const COUNTERPARTS: &[(&str, &str)] = &[
    ("null_syscall", "linux_getpid"),
    ("exception_int3_upcall", "linux_int3_sigtrap"),
    ("write_fault_upgrade", "linux_write_fault_mprotect"),
    ("demand_fault_alloc_map", "linux_demand_zero_fault"),
    ("pct_call_round_trip", "linux_pipe_round_trip"),
    ("switch_*_touch_1", "linux_switch_touch_w1"),
    ("switch_*_touch_8", "linux_switch_touch_w8"),
    ("switch_*_touch_64", "linux_switch_touch_w64"),
    ("switch_*_touch_512", "linux_switch_touch_w512"),
    ("fork_exit_wait", "linux_fork_exit_wait"),
    ("fork_exec_wait", "linux_fork_exec_wait"),
    ("pipe_round_trip", "linux_pipe_round_trip"),
    ("http_request_busy", "linux_http_request"),
];

/// The Linux operation an exokernel operation is compared with, if any.
pub fn counterpart(exo_op: &str) -> Option<&'static str> {
    COUNTERPARTS.iter().find(|(pattern, _)| matches(pattern, exo_op)).map(|(_, linux)| *linux)
}

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        Some((prefix, suffix)) => {
            name.len() >= prefix.len() + suffix.len() && name.starts_with(prefix) && name.ends_with(suffix)
        }
        None => pattern == name,
    }
}

/// One `LINUX op=...` line of the guest: instruction counts, floor already
/// subtracted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxRow {
    pub op: String,
    pub median: u64,
    pub min: u64,
    pub max: u64,
    /// The rdtsc back-to-back floor that was subtracted.
    pub floor: u64,
    pub iterations: u64,
    /// The TLB model's per-op figures of its marked runs (see
    /// `xtask::tlb::per_op_field`), when the guest ran under it.
    pub tlb: Option<String>,
}

impl LinuxRow {
    /// The row in `bench.csv`'s columns (op,unit,median,min,max,floor,target,events,linux,tlb).
    pub fn csv(&self) -> String {
        format!(
            "{},instructions,{},{},{},rdtsc_pair:{},-,-,,{}\n",
            self.op,
            self.median,
            self.min,
            self.max,
            self.floor,
            self.tlb.as_deref().unwrap_or("")
        )
    }

    /// The marker tag of the row's timed runs: the switch rows mark theirs
    /// with `0x400 + W`, as the exokernel's bench does.
    pub fn tag(&self) -> Option<u16> {
        let w: u16 = self.op.strip_prefix("linux_switch_touch_w")?.parse().ok()?;
        0x400u16.checked_add(w)
    }
}

/// The median of Linux operation `op`.
pub fn median(rows: &[LinuxRow], op: &str) -> Option<u64> {
    rows.iter().find(|r| r.op == op).map(|r| r.median)
}

/// Run the Linux guest; `None` (with the reason printed) when it cannot.
pub fn baseline(timeout: Duration, echo: bool) -> Option<Vec<LinuxRow>> {
    println!("linux baseline: booting the Debian cloud kernel under TCG with -icount shift=0");
    match measure(timeout, echo) {
        Ok(rows) => Some(rows),
        Err(error) => {
            println!("linux baseline: skipped: {error:#}");
            None
        }
    }
}

/// The Linux rows as a short table.
pub fn print_table(rows: &[LinuxRow]) {
    println!();
    println!(
        "{:<34} {:>10} {:>10} {:>10}  {:>12} {:>10}",
        "Linux guest (instructions, icount)", "median", "min", "max", "rdtsc floor", "iterations"
    );
    println!("{}", "-".repeat(92));
    for r in rows {
        println!("{:<34} {:>10} {:>10} {:>10}  {:>12} {:>10}", r.op, r.median, r.min, r.max, r.floor, r.iterations);
    }
}

fn measure(timeout: Duration, echo: bool) -> Result<Vec<LinuxRow>> {
    let dir = root().join("target").join("linux");
    std::fs::create_dir_all(&dir)?;
    ensure_tools().context("gcc and cpio cannot be had")?;
    let vmlinuz = kernel(&dir).context("the kernel package cannot be had")?;
    let initramfs = initramfs(&dir).context("building the initramfs")?;
    let started = Instant::now();
    // The TLB model rides along where it can be built (the exokernel
    // bench said why if not).
    let plugin = xtask::tlb::build_plugin().ok();
    let tlb_out = dir.join("linux.tlb");
    let _ = std::fs::remove_file(&tlb_out);
    let qemu_args = plugin.map(|p| xtask::tlb::qemu_args(&p, &tlb_out, "upper")).unwrap_or_default();
    let lines = boot(&vmlinuz, &initramfs, timeout, echo, &qemu_args)?;
    let mut rows = parse(&lines);
    if let Ok(text) = std::fs::read_to_string(&tlb_out) {
        let model = xtask::tlb::parse_report(&text);
        for row in rows.iter_mut() {
            if let Some(region) = row.tag().and_then(|t| model.regions.get(&t)) {
                row.tlb = Some(xtask::tlb::per_op_field(region, true));
            }
        }
    }
    let finished = lines.iter().any(|l| l.contains("LINUX-END"));
    for line in lines.iter().filter(|l| l.contains("LINUX-WARN") || l.contains("LINUX-ERROR")) {
        println!("linux baseline: guest: {}", line.trim());
    }
    if rows.is_empty() || !finished {
        println!("linux baseline: last lines of the guest's console:");
        for line in lines.iter().skip(lines.len().saturating_sub(20)) {
            println!("  {line}");
        }
    }
    if rows.is_empty() {
        bail!("the guest printed no LINUX lines");
    }
    if !finished {
        println!(
            "linux baseline: warning: the guest stopped before LINUX-END; using the {} rows it printed",
            rows.len()
        );
    }
    println!(
        "linux baseline: {} ({}) ran in {:.1} s",
        vmlinuz.file_name().unwrap_or_default().to_string_lossy(),
        METAPACKAGE,
        started.elapsed().as_secs_f64()
    );
    Ok(rows)
}

/// The `LINUX op=...` lines (anywhere in a console line: kernel messages
/// may share it).
fn parse(lines: &[String]) -> Vec<LinuxRow> {
    lines
        .iter()
        .filter_map(|line| {
            let at = line.find("LINUX op=")?;
            let fields: Vec<(&str, &str)> =
                line[at + "LINUX ".len()..].split_whitespace().filter_map(|f| f.split_once('=')).collect();
            let get = |k: &str| fields.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
            let num = |k: &str| get(k)?.parse::<u64>().ok();
            Some(LinuxRow {
                op: get("op")?.to_string(),
                median: num("median")?,
                min: num("min")?,
                max: num("max")?,
                floor: num("floor")?,
                iterations: num("iterations")?,
                tlb: None,
            })
        })
        .collect()
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

/// apt-get with root rights: directly as root, else through `sudo -n`
/// (which fails rather than ask for a password).
fn apt_get(args: &[&str]) -> Result<Output> {
    let mut cmd = if is_root() {
        Command::new("apt-get")
    } else {
        let mut sudo = Command::new("sudo");
        sudo.args(["-n", "apt-get"]);
        sudo
    };
    cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive").stdin(Stdio::null());
    cmd.output().with_context(|| format!("starting apt-get {}", args.join(" ")))
}

fn failure(what: &str, output: &Output) -> anyhow::Error {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
    anyhow::anyhow!("{what} failed ({}): {last}", output.status)
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// gcc and cpio, installed with apt-get if missing (after an `apt-get
/// update` if the first try fails).
fn ensure_tools() -> Result<()> {
    let missing: Vec<&str> = ["gcc", "cpio"].into_iter().filter(|tool| !have(tool)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("linux baseline: installing {} with apt-get", missing.join(" "));
    let args = [&["install", "-y", "-q"][..], &missing].concat();
    let mut output = apt_get(&args)?;
    if !output.status.success() {
        let _ = apt_get(&["update", "-q"]);
        output = apt_get(&args)?;
    }
    if !output.status.success() {
        return Err(failure(&format!("apt-get install {}", missing.join(" ")), &output));
    }
    match missing.iter().find(|tool| !have(tool)) {
        Some(tool) => bail!("{tool} still missing after apt-get install"),
        None => Ok(()),
    }
}

/// The modules the HTTP guest loads (in this order) to drive virtio-net:
/// Debian's cloud kernel builds the whole virtio stack as modules.
const NET_MODULES: [&str; 8] = [
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
];

/// The first file named `name` under `dir`.
fn walk_for(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = walk_for(&path, name) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
    }
    None
}

/// `boot/vmlinuz-*` under `dir`, if extracted already.
fn find_vmlinuz(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.join("boot"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
        .collect();
    found.sort();
    found.pop()
}

/// The kernel package the metapackage depends on now, e.g.
/// `linux-image-6.1.0-57-cloud-amd64`.
fn kernel_package() -> Result<String> {
    let query = || -> Option<String> {
        let output = Command::new("apt-cache").args(["depends", METAPACKAGE]).output().ok()?;
        String::from_utf8_lossy(&output.stdout).lines().find_map(|line| {
            let name = line.trim().trim_start_matches('|').strip_prefix("Depends:")?.trim();
            let name = name.trim_start_matches('<').trim_end_matches('>');
            name.starts_with("linux-image-").then(|| name.to_string())
        })
    };
    if let Some(package) = query() {
        return Ok(package);
    }
    let _ = apt_get(&["update", "-q"]);
    query().with_context(|| format!("apt-cache depends {METAPACKAGE} names no linux-image-* package"))
}

/// The kernel image, downloaded and unpacked into `dir/kernel/boot/` once.
fn kernel(dir: &Path) -> Result<PathBuf> {
    let extracted = dir.join("kernel");
    // (A cache from before the modules were kept is fetched again.)
    let have_modules = extracted.join("modules").join("virtio_net.ko").exists();
    if let Some(vmlinuz) = find_vmlinuz(&extracted).filter(|_| have_modules) {
        return Ok(vmlinuz);
    }
    let mut package = kernel_package()?;
    println!("linux baseline: downloading {package} (once; cached in {})", dir.display());
    let download = |package: &str| -> Result<Output> {
        Command::new("apt-get")
            .args(["download", "-q", package])
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .context("starting apt-get download")
    };
    let mut output = download(&package)?;
    if !output.status.success() {
        // A stale package list names a version the mirror no longer has.
        let _ = apt_get(&["update", "-q"]);
        package = kernel_package()?;
        output = download(&package)?;
    }
    if !output.status.success() {
        return Err(failure(&format!("apt-get download {package}"), &output));
    }
    let prefix = format!("{package}_");
    let deb = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(&prefix) && n.ends_with(".deb")
            })
        })
        .with_context(|| format!("apt-get download left no {prefix}*.deb in {}", dir.display()))?;
    // Unpack beside, keep only boot/ and the modules of the network
    // driver (the HTTP guest loads them; the rest is not needed: the
    // initramfs holds only our static programs).
    let partial = dir.join("kernel.partial");
    let _ = std::fs::remove_dir_all(&partial);
    let output = Command::new("dpkg").arg("-x").arg(&deb).arg(&partial).output().context("starting dpkg -x")?;
    if !output.status.success() {
        return Err(failure("dpkg -x", &output));
    }
    let _ = std::fs::remove_dir_all(&extracted);
    std::fs::create_dir_all(extracted.join("modules"))?;
    std::fs::rename(partial.join("boot"), extracted.join("boot"))?;
    for module in NET_MODULES {
        let found = walk_for(&partial.join("lib/modules"), &format!("{module}.ko"));
        if let Some(path) = found {
            std::fs::copy(&path, extracted.join("modules").join(format!("{module}.ko")))?;
        }
    }
    let _ = std::fs::remove_dir_all(&partial);
    let _ = std::fs::remove_file(&deb);
    find_vmlinuz(&extracted).with_context(|| format!("{} holds no boot/vmlinuz-*", deb.display()))
}

fn gcc(args: &[&str], source: &Path, out: &Path) -> Result<()> {
    let output = Command::new("gcc").args(args).arg("-o").arg(out).arg(source).output().context("starting gcc")?;
    if !output.status.success() {
        bail!("gcc {} failed:\n{}", source.display(), String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

/// Compile the benchmark and its exec target and pack them as a newc
/// archive: `/init` and `/hello`.
fn initramfs(dir: &Path) -> Result<PathBuf> {
    let sources = root().join("xtask").join("linux");
    let staging = dir.join("initramfs");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    gcc(&["-O2", "-static"], &sources.join("bench.c"), &staging.join("init"))?;
    gcc(&["-O2", "-static", "-nostdlib"], &sources.join("hello.c"), &staging.join("hello"))?;
    cpio(&staging, &["init", "hello"], &dir.join("initramfs.cpio"))
}

/// Pack `names` (paths under `staging`) into a newc archive at `archive`.
fn cpio(staging: &Path, names: &[&str], archive: &Path) -> Result<PathBuf> {
    let mut child = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(staging)
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(archive)?)
        .stderr(Stdio::piped())
        .spawn()
        .context("starting cpio")?;
    child.stdin.take().expect("piped stdin").write_all(format!("{}\n", names.join("\n")).as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        return Err(failure("cpio", &output));
    }
    Ok(archive.to_path_buf())
}

/// Boot the kernel with the initramfs; the console's lines. The machine
/// and CPU are QEMU's defaults (i440fx, qemu64), as in the exokernel's TCG
/// runs (`xtask::run_qemu` names neither).
fn boot(vmlinuz: &Path, initrd: &Path, timeout: Duration, echo: bool, qemu_args: &[String]) -> Result<Vec<String>> {
    boot_with(vmlinuz, initrd, "", qemu_args, timeout, echo)
}

/// [`boot`] with more kernel command line and more QEMU arguments.
fn boot_with(
    vmlinuz: &Path,
    initrd: &Path,
    append: &str,
    qemu_args: &[String],
    timeout: Duration,
    echo: bool,
) -> Result<Vec<String>> {
    let mut cmd = Command::new(qemu_binary());
    cmd.arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &format!("console=ttyS0 quiet panic=-1 {append}")])
        .args(["-serial", "stdio", "-display", "none", "-monitor", "none", "-no-reboot"])
        .args(["-m", "512M", "-accel", "tcg", "-icount", "shift=0"])
        .args(qemu_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("starting {}", qemu_binary()))?;
    let (status, lines) = xtask::collect_lines(&mut child, timeout, echo, None)?;
    match status {
        None => println!("linux baseline: the guest was stopped after {} s", timeout.as_secs()),
        Some(status) if !status.success() => {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            println!("linux baseline: qemu exited with {status}: {}", stderr.trim());
        }
        Some(_) => {}
    }
    Ok(lines)
}

/// What the Linux HTTP guest measured: requests after the first, and the
/// CPU time they took (all but idle and iowait, from /proc/stat).
#[derive(Clone, Debug)]
pub struct LinuxHttp {
    pub requests: u64,
    /// Busy nanoseconds (monotonic time minus idle sleep; 0 if the guest
    /// could not tell) and, coarser, busy jiffies.
    pub busy_ns: u64,
    pub busy_jiffies: u64,
    pub user_hz: u64,
    pub udp: xtask::load::UdpReport,
    pub http: xtask::load::HttpReport,
}

impl LinuxHttp {
    /// Busy guest instructions per request: under `-icount shift=0` one
    /// nanosecond of guest time is one instruction. From the tick code's
    /// idle accounting (nanoseconds) where the guest gave it, else from
    /// busy jiffies (granularity: one jiffy over the whole run).
    pub fn instructions_per_request(&self) -> Option<u64> {
        let busy_ns = match self.busy_ns {
            0 => self.busy_jiffies * 1_000_000_000 / self.user_hz.max(1),
            ns => ns,
        };
        xtask::load::instructions_per_request(busy_ns, self.requests)
    }
}

/// The `LINUX-HTTPD requests=...` line's fields.
fn parse_httpd(lines: &[String]) -> Option<(u64, u64, u64, u64)> {
    let line = lines.iter().find_map(|l| l.find("LINUX-HTTPD requests=").map(|at| &l[at..]))?;
    let get = |k: &str| xtask::load::field(line, k);
    Some((get("requests")?, get("busy_ns").unwrap_or(0), get("busy_jiffies")?, get("user_hz")?))
}

/// Serve the same file as libos-unix from our epoll server (`httpd.c`)
/// in the Debian cloud kernel, under the same QEMU (`-icount shift=0`, user
/// networking, virtio-net), and load it with the same client.
pub fn http_baseline(spec: &xtask::load::LoadSpec) -> Result<LinuxHttp> {
    let dir = root().join("target").join("linux");
    std::fs::create_dir_all(&dir)?;
    ensure_tools().context("gcc and cpio cannot be had")?;
    let vmlinuz = kernel(&dir).context("the kernel package cannot be had")?;
    let initrd = httpd_initramfs(&dir).context("building the httpd initramfs")?;
    let (udp_port, tcp_port) = xtask::free_net_ports(0, 0);
    let qemu_args: Vec<String> = [
        "-netdev",
        &xtask::net_backend(udp_port, tcp_port),
        "-device",
        "virtio-net-pci,netdev=n0",
        "-m",
        "512M",
        "-accel",
        "tcg",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(spec.icount.then(|| ["-icount".to_string(), "shift=0".to_string()]).into_iter().flatten())
    .collect();
    let append = format!("requests={}", spec.requests + 1);
    let (timeout, echo) = (spec.timeout, spec.echo);
    let guest = std::thread::spawn(move || boot_with(&vmlinuz, &initrd, &append, &qemu_args, timeout, echo));
    let (udp, http) = xtask::load::drive(spec, udp_port, tcp_port);
    let lines = guest.join().map_err(|_| anyhow::anyhow!("the QEMU thread panicked"))??;
    for line in lines.iter().filter(|l| l.contains("LINUX-ERROR")) {
        println!("linux httpd: guest: {}", line.trim());
    }
    let (requests, busy_ns, busy_jiffies, user_hz) = parse_httpd(&lines).with_context(|| {
        let tail: Vec<&str> = lines.iter().rev().take(15).map(String::as_str).collect();
        format!("the guest printed no LINUX-HTTPD line; last lines: {tail:?}")
    })?;
    Ok(LinuxHttp { requests, busy_ns, busy_jiffies, user_hz, udp, http })
}

/// `/init` (httpd.c), the network driver's modules and the file to serve.
fn httpd_initramfs(dir: &Path) -> Result<PathBuf> {
    let staging = dir.join("initramfs-httpd");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(staging.join("modules"))?;
    std::fs::create_dir_all(staging.join("www"))?;
    std::fs::create_dir_all(staging.join("proc"))?;
    gcc(&["-O2", "-static"], &root().join("xtask/linux/httpd.c"), &staging.join("init"))?;
    let mut names = vec!["init".to_string(), "proc".into(), "modules".into(), "www".into()];
    for module in NET_MODULES {
        let name = format!("modules/{module}.ko");
        std::fs::copy(dir.join("kernel").join(&name), staging.join(&name))
            .with_context(|| format!("copying {name}"))?;
        names.push(name);
    }
    std::fs::copy(root().join("libos-unix/rootfs/www/index.html"), staging.join("www/index.html"))?;
    names.push("www/index.html".into());
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    cpio(&staging, &names, &dir.join("initramfs-httpd.cpio"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counterparts() {
        assert_eq!(counterpart("null_syscall"), Some("linux_getpid"));
        assert_eq!(counterpart("switch_flush_touch_1"), Some("linux_switch_touch_w1"));
        assert_eq!(counterpart("switch_pcid=flush_touch_512"), Some("linux_switch_touch_w512"));
        assert_eq!(counterpart("switch_stlb_touch_64"), Some("linux_switch_touch_w64"));
        assert_eq!(counterpart("switch_stlb_touch_16"), None);
        assert_eq!(counterpart("fork_exec_wait"), Some("linux_fork_exec_wait"));
        assert_eq!(counterpart("bare_syscall_sysret"), None);
    }

    #[test]
    fn parses_lines_amid_kernel_messages() {
        let lines: Vec<String> = [
            "[    1.0] random: crng init done",
            "LINUX op=linux_getpid median=319 min=300 max=4000 floor=6 iterations=2001",
            "[    2.0] x LINUX op=linux_enosys median=200 min=190 max=900 floor=6 iterations=2001",
            "LINUX op=broken median=x",
            "LINUX-END",
        ]
        .map(String::from)
        .to_vec();
        let rows = parse(&lines);
        assert_eq!(rows.len(), 2);
        assert_eq!(median(&rows, "linux_getpid"), Some(319));
        assert_eq!(rows[1].op, "linux_enosys");
        assert_eq!(rows[1].floor, 6);
    }
}
