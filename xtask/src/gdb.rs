//! `cargo xtask gdb`: boot a scenario paused under QEMU's gdb stub and
//! attach gdb with the kernel's symbols (and, on request, a libOS's).
//!
//! The release profile strips its binaries, so this builds the kernel and
//! the scenario's programs again in the `gdb` profile (the release build
//! with symbols and debug info, `Cargo.toml`) and boots an image of those,
//! `target/exo/NAME-gdb.img`, with the unstripped kernel ELF beside it as
//! `NAME-gdb.elf`. The kernel is a static PIE that the bootloader loads at
//! the start of its dynamic range (no ASLR): [`KERNEL_LOAD_BASE`]. LibOS
//! programs are static executables linked at fixed addresses, so their
//! ELF's own addresses hold.

use crate::{cargo, image_dir, pack_archive_from, qemu_binary, root, run_checked, PROGRAMS, TARGET, UNIX_PACKAGE};
use anyhow::{bail, Context, Result};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Where the bootloader puts the kernel: the first level-4 entry of the
/// dynamic range the kernel's `BOOTLOADER_CONFIG` starts at
/// `0xffff_8000_0000_0000`, with ASLR off.
pub const KERNEL_LOAD_BASE: u64 = 0xffff_8000_0000_0000;

/// The cargo profile with symbols.
pub const PROFILE: &str = "gdb";

/// Output directory of the `gdb` profile's bare-metal builds.
pub fn bin_dir() -> PathBuf {
    root().join("target").join(TARGET).join(PROFILE)
}

/// How `cargo xtask gdb` runs.
#[derive(Clone, Debug, Default)]
pub struct GdbOptions {
    pub scenario: String,
    /// LibOS programs whose symbols gdb loads too (by program name).
    pub libos: Vec<String>,
    /// gdb commands to run in batch mode (gdb then exits); none: interactive.
    pub batch: Vec<String>,
    /// Seconds before QEMU and gdb are stopped (batch mode).
    pub timeout: Duration,
}

/// Is gdb there? If not and we are root, install it as xtask installs QEMU.
pub fn ensure_gdb() -> Result<()> {
    let have = || Command::new("gdb").arg("--version").output().is_ok_and(|o| o.status.success());
    if have() {
        return Ok(());
    }
    let is_root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    if is_root {
        eprintln!("xtask: gdb missing; installing it with apt-get");
        let install = || Command::new("apt-get").args(["install", "-y", "gdb"]).status().is_ok_and(|s| s.success());
        if install() || (Command::new("apt-get").arg("update").status().is_ok() && install()) {
            return Ok(());
        }
    }
    bail!("gdb not found: install it with `sudo apt-get install -y gdb`")
}

/// Build the kernel and the scenario's programs with symbols; make the
/// image and keep the kernel ELF beside it. Returns (image, kernel ELF).
pub fn build_image(scenario: &str) -> Result<(PathBuf, PathBuf)> {
    let manifest_path = root().join("scenarios").join(format!("{scenario}.manifest"));
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("no scenario named {scenario} under scenarios/"))?;
    let manifest = shared_abi::manifest::Manifest::parse(&text).map_err(|e| anyhow::anyhow!("{e}"))?;
    run_checked(cargo().args(["build", "--profile", PROFILE, "--target", TARGET, "-p", "exokernel"]))?;
    let mut packages: Vec<&str> = manifest
        .envs
        .iter()
        .filter_map(|env| PROGRAMS.iter().find(|(_, program)| *program == env.program).map(|(package, _)| *package))
        .collect();
    if !manifest.files.is_empty() {
        packages.push(UNIX_PACKAGE);
    }
    packages.sort();
    packages.dedup();
    let mut cmd = cargo();
    cmd.args(["build", "--profile", PROFILE, "--target", TARGET]);
    for package in &packages {
        cmd.args(["-p", package]);
    }
    run_checked(&mut cmd)?;
    let name = format!("{scenario}-gdb");
    let archive = pack_archive_from(&text, &bin_dir())?;
    let kernel = bin_dir().join("exokernel");
    let image = crate::make_image_with_kernel(&name, &archive, &kernel)?;
    let elf = image_dir().join(format!("{name}.elf"));
    std::fs::copy(&kernel, &elf).with_context(|| format!("copying {} beside the image", kernel.display()))?;
    Ok((image, elf))
}

/// The gdb commands that load the symbols and connect to QEMU's stub.
pub fn setup_script(kernel_elf: &Path, libos_elves: &[PathBuf], port: u16) -> String {
    let mut script = String::from("set pagination off\nset confirm off\n");
    script.push_str(&format!("symbol-file -o {KERNEL_LOAD_BASE:#x} {}\n", kernel_elf.display()));
    for elf in libos_elves {
        script.push_str(&format!("add-symbol-file {}\n", elf.display()));
    }
    script.push_str(&format!("target remote 127.0.0.1:{port}\n"));
    script
}

/// From now on, ctrl-C at the terminal does not end xtask (gdb, in the
/// same process group, takes it to interrupt the guest), so xtask lives
/// to stop QEMU when gdb exits. Children spawned earlier keep their own
/// disposition.
fn ignore_ctrl_c() {
    // SAFETY: SIG_IGN installs no handler code; the disposition is
    // process-wide and xtask only waits for gdb and stops QEMU after it.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// Boot the scenario paused under the gdb stub and run gdb against it.
/// In batch mode, gdb's output lines (also echoed).
pub fn run(options: &GdbOptions) -> Result<Vec<String>> {
    ensure_gdb()?;
    let (image, elf) = build_image(&options.scenario)?;
    let mut libos_elves = Vec::new();
    for program in &options.libos {
        let path = bin_dir().join(program);
        anyhow::ensure!(
            path.exists(),
            "no {} built with symbols: is {program} a program of scenario {}?",
            path.display(),
            options.scenario
        );
        libos_elves.push(path);
    }
    let port = free_port()?;
    let script_path = image_dir().join(format!("{}-gdb.gdbinit", options.scenario));
    std::fs::write(&script_path, setup_script(&elf, &libos_elves, port))?;
    println!("xtask: {} paused under QEMU's gdb stub on 127.0.0.1:{port}", image.display());
    println!(
        "xtask: kernel symbols {} (loaded at {KERNEL_LOAD_BASE:#x}); gdb setup {}",
        elf.display(),
        script_path.display()
    );
    // QEMU in a process group of its own: ctrl-C at the terminal is gdb's
    // (it interrupts the guest) and must not end QEMU.
    let mut qemu = Command::new(qemu_binary())
        .arg("-drive")
        .arg(format!("format=raw,snapshot=on,file={}", image.display()))
        .args(["-serial", "stdio", "-display", "none", "-monitor", "none", "-no-reboot"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-m", "256M"])
        .args(["-gdb", &format!("tcp:127.0.0.1:{port}"), "-S"])
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", qemu_binary()))?;
    let mut gdb = Command::new("gdb");
    gdb.args(["-q", "-nx", "-x"]).arg(&script_path);
    if !options.batch.is_empty() {
        gdb.arg("-batch");
        for command in &options.batch {
            gdb.args(["-ex", command]);
        }
        gdb.stdin(Stdio::null()).stdout(Stdio::piped());
    }
    let gdb_outcome = gdb.spawn().context("starting gdb").and_then(|mut child| {
        if options.batch.is_empty() {
            ignore_ctrl_c();
            Ok((Some(child.wait()?), Vec::new()))
        } else {
            crate::collect_lines(&mut child, options.timeout, true, None)
        }
    });
    // gdb is done with it: QEMU goes too (if gdb's `kill` has not ended it).
    if qemu.try_wait()?.is_none() {
        let _ = qemu.kill();
    }
    let _ = qemu.wait();
    match gdb_outcome? {
        (Some(status), lines) if status.success() => Ok(lines),
        (Some(status), _) => bail!("gdb ended with {status}"),
        (None, _) => bail!("gdb did not finish within {} s", options.timeout.as_secs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setup_script_loads_the_kernel_at_its_base_and_connects() {
        let script = setup_script(Path::new("/x/k.elf"), &[PathBuf::from("/x/bench")], 4321);
        assert!(script.contains("symbol-file -o 0xffff800000000000 /x/k.elf\n"));
        assert!(script.contains("add-symbol-file /x/bench\n"));
        assert!(script.ends_with("target remote 127.0.0.1:4321\n"));
    }
}
