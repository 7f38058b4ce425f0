//! The host tool's library: build the kernel and libOS programs, pack the
//! boot archive, make disk images, and boot them in QEMU with a timeout.
//! Both the `cargo xtask` CLI and the scenario tests in `tests/` use it.

use anyhow::{bail, Context, Result};
use shared_abi::exit::Verdict;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use wait_timeout::ChildExt;

pub mod fuzz;
pub mod gdb;
pub mod load;
pub mod tlb;

/// The bare-metal target of the kernel and every libOS.
pub const TARGET: &str = "x86_64-unknown-none";
/// LibOS programs packed into every boot archive.
pub const PROGRAMS: &[(&str, &str)] = &[
    ("libos-unix", "libos-unix"),
    ("libos-gc", "libos-gc"),
    ("libos-rt", "libos-rt"),
    ("guest-tests", "hostile"),
    ("guest-tests", "smoke"),
    ("guest-tests", "bench"),
    ("guest-tests", "memtest"),
    ("guest-tests", "cpu"),
    ("guest-tests", "netecho"),
    ("guest-tests", "attacker"),
    ("guest-tests", "fastpath"),
];

/// Unix programs a manifest's `files` may name (packed as `bin/NAME`).
pub const UNIX_PROGRAMS: &[&str] = &[
    "hello",
    "forktest",
    "forkbomb",
    "forkbench",
    "sh",
    "iotest",
    "echo",
    "cat",
    "ls",
    "wc",
    "grep",
    "head",
    "mkdir",
    "rm",
    "mv",
    "ps",
    "kill",
    "sleep",
    "true",
    "false",
    "memhog",
];
/// The package that builds them.
const UNIX_PACKAGE: &str = "unix-programs";

/// The workspace root, found at run time (so a copied or moved checkout
/// builds and boots its own images): `EXO_ROOT` if set, else the nearest
/// directory above the working directory, then above this executable, that
/// holds this workspace (a `Cargo.toml` with `[workspace]` beside `xtask/`
/// and `exokernel/`); the directory xtask was compiled in only as a last
/// resort.
pub fn root() -> PathBuf {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        if let Some(root) = std::env::var_os("EXO_ROOT") {
            return PathBuf::from(root);
        }
        let starts = [std::env::current_dir().ok(), std::env::current_exe().ok()];
        starts
            .into_iter()
            .flatten()
            .find_map(|start| start.ancestors().find(|dir| is_workspace_root(dir)).map(Path::to_path_buf))
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace").to_path_buf()
            })
    })
    .clone()
}

fn is_workspace_root(dir: &Path) -> bool {
    dir.join("xtask").is_dir()
        && dir.join("exokernel").is_dir()
        && std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|text| text.contains("[workspace]"))
}

/// Where built images live.
pub fn image_dir() -> PathBuf {
    std::env::var_os("EXO_IMAGE_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target/exo"))
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn run_checked(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("command failed ({status}): {cmd:?}");
    }
    Ok(())
}

/// Build the kernel and the libOS programs (release, bare-metal target).
/// Two cargo invocations, so the kernel's build never shares features or
/// dependencies with the libOS programs' (which link `libos-runtime`: its
/// entry point, allocator and panic handler must never reach the kernel).
pub fn build_binaries() -> Result<()> {
    run_checked(cargo().args(["build", "--release", "--target", TARGET, "-p", "exokernel"]))?;
    let mut cmd = cargo();
    cmd.args(["build", "--release", "--target", TARGET]);
    let mut packages: Vec<&str> = PROGRAMS.iter().map(|(p, _)| *p).collect();
    packages.push(UNIX_PACKAGE);
    packages.sort();
    packages.dedup();
    for package in packages {
        cmd.args(["-p", package]);
    }
    run_checked(&mut cmd)
}

fn binary(name: &str) -> PathBuf {
    root().join("target").join(TARGET).join("release").join(name)
}

/// Every scenario manifest under `scenarios/`, by name.
pub fn scenarios() -> Result<Vec<(String, PathBuf)>> {
    let mut list = Vec::new();
    for entry in std::fs::read_dir(root().join("scenarios"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "manifest") {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            list.push((name, path));
        }
    }
    list.sort();
    Ok(list)
}

/// The files under `libos-unix/rootfs/`, named by their path inside it.
fn rootfs_files() -> Result<Vec<(String, Vec<u8>)>> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, base, out)?;
            } else {
                let name = path.strip_prefix(base)?.to_string_lossy().replace('\\', "/");
                out.push((name, std::fs::read(&path)?));
            }
        }
        Ok(())
    }
    let base = root().join("libos-unix/rootfs");
    let mut out = Vec::new();
    if base.is_dir() {
        walk(&base, &base, &mut out)?;
    }
    Ok(out)
}

/// Pack the programs and `manifest_text` into a boot archive.
pub fn pack_archive(manifest_text: &str) -> Result<Vec<u8>> {
    pack_archive_from(manifest_text, &binary(""))
}

/// Pack `manifest_text` with the programs built in `bin_dir` (a profile's
/// output directory, such as `target/x86_64-unknown-none/gdb/`).
pub fn pack_archive_from(manifest_text: &str, bin_dir: &Path) -> Result<Vec<u8>> {
    let manifest = shared_abi::manifest::Manifest::parse(manifest_text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut files: Vec<(String, Vec<u8>)> = vec![("manifest".into(), manifest_text.as_bytes().to_vec())];
    // Only the programs the manifest boots: a smaller ramdisk boots faster.
    let mut wanted: Vec<&str> = manifest.envs.iter().map(|e| e.program.as_str()).collect();
    wanted.sort();
    wanted.dedup();
    for program in wanted {
        if !PROGRAMS.iter().any(|(_, p)| *p == program) {
            bail!("the manifest names program {program:?}, which xtask does not build");
        }
        let path = bin_dir.join(program);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        files.push((program.into(), bytes));
    }
    if !manifest.files.is_empty() {
        for program in &manifest.files {
            if !UNIX_PROGRAMS.contains(&program.as_str()) {
                bail!("the manifest's files name {program:?}, which is no Unix program xtask builds");
            }
            let path = bin_dir.join(program);
            let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            files.push((format!("bin/{program}"), bytes));
        }
    }
    // libos-unix's files: its file system's seed, and what its HTTP
    // server serves (`www/`).
    if !manifest.files.is_empty() || manifest.envs.iter().any(|e| e.program == "libos-unix") {
        files.extend(rootfs_files()?);
    }
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
    shared_abi::archive::pack(&refs).map_err(|e| anyhow::anyhow!("packing archive: {e:?}"))
}

/// Make a BIOS disk image that boots the kernel with `manifest_text`.
pub fn make_image(name: &str, manifest_text: &str) -> Result<PathBuf> {
    let archive = pack_archive(manifest_text).with_context(|| format!("scenario {name}"))?;
    make_image_from_archive(name, &archive)
}

/// Make a BIOS disk image from raw boot-archive bytes (tests use this to
/// hand the kernel a broken archive on purpose).
pub fn make_image_from_archive(name: &str, archive_bytes: &[u8]) -> Result<PathBuf> {
    make_image_with_kernel(name, archive_bytes, &binary("exokernel"))
}

/// Make a BIOS disk image of the kernel ELF at `kernel` (`cargo xtask gdb`
/// boots one with symbols) and raw boot-archive bytes.
pub fn make_image_with_kernel(name: &str, archive_bytes: &[u8], kernel: &Path) -> Result<PathBuf> {
    let dir = image_dir();
    std::fs::create_dir_all(&dir)?;
    let archive = dir.join(format!("{name}.archive"));
    std::fs::write(&archive, archive_bytes)?;
    let image = dir.join(format!("{name}.img"));
    let mut config = bootloader::BootConfig::default();
    config.serial_logging = false;
    config.frame_buffer_logging = false;
    let mut builder = bootloader::DiskImageBuilder::new(kernel.to_path_buf());
    builder.set_ramdisk(archive).set_boot_config(&config);
    // Write beside and rename, so a QEMU still running the old image keeps it.
    let partial = dir.join(format!("{name}.img.partial"));
    builder.create_bios_image(&partial).with_context(|| format!("creating {}", image.display()))?;
    std::fs::rename(&partial, &image)?;
    Ok(image)
}

/// Where Debian's `ovmf` package puts the UEFI firmware.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";

/// Make a UEFI disk image from a scenario's boot archive (built already by
/// `make_image`); boot it with [`RunOptions::uefi`].
pub fn make_uefi_image(name: &str) -> Result<PathBuf> {
    let dir = image_dir();
    let archive = dir.join(format!("{name}.archive"));
    anyhow::ensure!(archive.exists(), "{} missing: build the BIOS image first", archive.display());
    let image = dir.join(format!("{name}-uefi.img"));
    let mut config = bootloader::BootConfig::default();
    config.serial_logging = false;
    config.frame_buffer_logging = false;
    let mut builder = bootloader::DiskImageBuilder::new(binary("exokernel"));
    builder.set_ramdisk(archive).set_boot_config(&config);
    let partial = dir.join(format!("{name}-uefi.img.partial"));
    builder.create_uefi_image(&partial).with_context(|| format!("creating {}", image.display()))?;
    std::fs::rename(&partial, &image)?;
    Ok(image)
}

/// Build everything and one image per scenario manifest.
pub fn build_all() -> Result<Vec<(String, PathBuf)>> {
    build_binaries()?;
    let mut images = Vec::new();
    for (name, path) in scenarios()? {
        let text = std::fs::read_to_string(&path)?;
        images.push((name.clone(), make_image(&name, &text)?));
    }
    Ok(images)
}

/// How QEMU runs the guest.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Seconds before the run is killed and judged "no verdict".
    pub timeout: Duration,
    /// `-icount shift=0`: the guest TSC counts instructions.
    pub icount: bool,
    /// With icount: `sleep=off`, so virtual time follows instructions only.
    pub icount_nosleep: bool,
    pub kvm: bool,
    /// Boot with UEFI firmware (OVMF) instead of BIOS.
    pub uefi: bool,
    /// Copy the guest's serial output to our stdout as it arrives.
    pub echo: bool,
    pub memory_mib: u32,
    /// A virtio-net NIC on QEMU user networking, with host ports
    /// `(udp, tcp)` on 127.0.0.1 forwarded to the guest's (10.0.2.15)
    /// UDP port 7 and TCP port 80. The kernel reaches PCI configuration
    /// space through ports 0xCF8/0xCFC, so the default machine (i440fx)
    /// serves; no `-machine q35` is needed.
    pub net: Option<(u16, u16)>,
    /// What the guest's console receives: bytes typed in (written to the
    /// serial port's input, then closed), or the terminal itself
    /// (`Interactive`, for a person at a prompt).
    pub input: Input,
    /// More QEMU arguments, last on its command line (the TLB-model
    /// plugin's `-plugin`, the gdb stub's `-s -S`).
    pub qemu_args: Vec<String>,
}

/// The guest console's input.
#[derive(Clone, Debug, Default)]
pub enum Input {
    #[default]
    None,
    Bytes(Vec<u8>),
    Interactive,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            timeout: Duration::from_secs(60),
            icount: false,
            icount_nosleep: false,
            kvm: false,
            uefi: false,
            echo: false,
            memory_mib: 256,
            net: None,
            input: Input::None,
            qemu_args: Vec::new(),
        }
    }
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The kernel's verdict, or None: timeout, reset, crash ("no verdict").
    pub verdict: Option<Verdict>,
    pub timed_out: bool,
    pub status: Option<i32>,
    pub lines: Vec<String>,
    pub wall: Duration,
}

impl Outcome {
    pub fn describe(&self) -> String {
        match (self.verdict, self.timed_out) {
            (Some(Verdict::Success), _) => "success".into(),
            (Some(Verdict::Failure), _) => "failure".into(),
            (None, true) => "no verdict (timeout)".into(),
            (None, false) => format!("no verdict (qemu status {:?})", self.status),
        }
    }

    /// Lines printed by the environment named `env` (prefix stripped).
    pub fn env_lines<'a>(&'a self, env: &str) -> impl Iterator<Item = &'a str> + 'a {
        let prefix = format!("[{env}] ");
        self.lines.iter().filter_map(move |l| l.strip_prefix(prefix.as_str()))
    }

    /// The summary line of environment `name`.
    pub fn summary(&self, name: &str) -> Option<&str> {
        let key = format!(" name={name} ");
        self.lines.iter().find(|l| l.starts_with("EXO-SUMMARY ") && l.contains(&key)).map(|s| s.as_str())
    }
}

/// The QEMU binary.
pub fn qemu_binary() -> &'static str {
    "qemu-system-x86_64"
}

/// The `-netdev` argument of [`RunOptions::net`].
pub fn net_backend(udp: u16, tcp: u16) -> String {
    format!("user,id=n0,hostfwd=udp:127.0.0.1:{udp}-:7,hostfwd=tcp:127.0.0.1:{tcp}-:80")
}

/// Host ports for [`RunOptions::net`]: `(udp, tcp)` as asked if both are
/// free on 127.0.0.1, else ports the OS picks (bound, then released).
pub fn free_net_ports(udp: u16, tcp: u16) -> (u16, u16) {
    let udp = std::net::UdpSocket::bind(("127.0.0.1", udp))
        .or_else(|_| std::net::UdpSocket::bind(("127.0.0.1", 0)))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or(udp);
    let tcp = std::net::TcpListener::bind(("127.0.0.1", tcp))
        .or_else(|_| std::net::TcpListener::bind(("127.0.0.1", 0)))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or(tcp);
    (udp, tcp)
}

/// Collect `child`'s output lines (echoed if `echo`) until it exits or
/// `timeout` passes (then it is killed: status None). `first_line` hears
/// when the first line arrives.
pub fn collect_lines(
    child: &mut std::process::Child,
    timeout: Duration,
    echo: bool,
    first_line: Option<mpsc::Sender<()>>,
) -> Result<(Option<std::process::ExitStatus>, Vec<String>)> {
    let stdout = child.stdout.take();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let Some(stdout) = stdout else { return };
        let mut first_line = first_line;
        for line in BufReader::new(stdout).split(b'\n') {
            if let Some(ready) = first_line.take() {
                let _ = ready.send(());
            }
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line).trim_end_matches('\r').to_string();
            if echo {
                println!("{line}");
            }
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let status = child.wait_timeout(timeout)?;
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = reader.join();
    Ok((status, rx.try_iter().collect()))
}

/// Boot `image` in QEMU and collect its serial output until it exits or
/// the timeout passes.
pub fn run_qemu(image: &Path, options: &RunOptions) -> Result<Outcome> {
    let mut cmd = Command::new(qemu_binary());
    cmd.arg("-drive")
        .arg(format!("format=raw,snapshot=on,file={}", image.display()))
        .args(["-serial", "stdio", "-display", "none", "-monitor", "none", "-no-reboot"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .args(["-m", &format!("{}M", options.memory_mib)]);
    if options.uefi {
        cmd.args(["-bios", OVMF_CODE]);
    }
    if let Some((udp, tcp)) = options.net {
        cmd.args(["-netdev", &net_backend(udp, tcp), "-device", "virtio-net-pci,netdev=n0"]);
        // `EXO_PCAP=file`: QEMU records the guest's frames (filter-dump).
        if let Some(pcap) = std::env::var_os("EXO_PCAP") {
            cmd.arg("-object").arg(format!("filter-dump,id=f1,netdev=n0,file={}", pcap.to_string_lossy()));
        }
    }
    if options.kvm {
        cmd.args(["-enable-kvm", "-cpu", "host,-arch-capabilities"]);
    } else if options.icount {
        cmd.args(["-icount", if options.icount_nosleep { "shift=0,sleep=off" } else { "shift=0" }]);
    }
    cmd.args(&options.qemu_args);
    let stdin = match options.input {
        Input::None => Stdio::null(),
        Input::Bytes(_) => Stdio::piped(),
        Input::Interactive => Stdio::inherit(),
    };
    // A person at the console sees the guest's bytes as they come (a
    // prompt has no newline); lines are collected only otherwise.
    let stdout = if matches!(options.input, Input::Interactive) { Stdio::inherit() } else { Stdio::piped() };
    cmd.stdin(stdin).stdout(stdout).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {} (install it: apt-get install -y qemu-system-x86)", qemu_binary()))?;
    // Typed input waits for the guest's first line (its serial port is
    // set up by then: bytes sent earlier are lost in the boot's reset of
    // the port), then goes from a thread, which QEMU drains only as fast as
    // the guest's serial port takes bytes.
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    if let (Input::Bytes(bytes), Some(mut pipe)) = (&options.input, child.stdin.take()) {
        let bytes = bytes.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            if ready_rx.recv().is_ok() {
                let _ = pipe.write_all(&bytes);
            }
        });
    }
    let (status, lines) = collect_lines(&mut child, options.timeout, options.echo, Some(ready_tx))?;
    let timed_out = status.is_none();
    let code = status.and_then(|s| s.code());
    if let Some(mut stderr) = child.stderr.take() {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        if !text.trim().is_empty() && code.and_then(Verdict::from_qemu_status).is_none() {
            eprintln!("qemu stderr: {}", text.trim());
        }
    }
    Ok(Outcome {
        verdict: if timed_out { None } else { code.and_then(Verdict::from_qemu_status) },
        timed_out,
        status: code,
        lines,
        wall: start.elapsed(),
    })
}

/// Is there a KVM that boots this kernel quickly and correctly? Boots the
/// `smoke` scenario under KVM with a short timeout; a slow or broken KVM
/// (a paravirtual shim where ring 3 fails) is rejected.
pub fn kvm_smoke_passes(smoke_image: &Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") else {
        return false;
    };
    drop(file);
    let options = RunOptions { timeout: Duration::from_secs(8), kvm: true, ..RunOptions::default() };
    match run_qemu(smoke_image, &options) {
        Ok(outcome) => {
            outcome.verdict == Some(Verdict::Success)
                && outcome.summary("smoke").is_some_and(|s| s.contains("status=exited code=0"))
        }
        Err(_) => false,
    }
}
