//! `cargo xtask`: the one entry point for building, running, testing and
//! benchmarking the exokernel.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use shared_abi::exit::Verdict;
use std::process::Command;
use std::time::{Duration, Instant};
use xtask::*;

mod linux;
mod report;

#[derive(Parser)]
#[command(about = "Build, run, test and benchmark the exokernel")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the kernel, every libOS and one disk image per scenario.
    Build,
    /// Build and boot a manifest (default: unix + gc + rt side by side).
    Run {
        /// Scenario manifest name under scenarios/ (without .manifest).
        #[arg(long, default_value = "default")]
        scenario: String,
        /// Use KVM (only where it really works; TCG otherwise).
        #[arg(long)]
        kvm: bool,
        /// Never use KVM, even if a smoke boot passes.
        #[arg(long, conflicts_with = "kvm")]
        no_kvm: bool,
        /// Run with `-icount shift=0`: the guest TSC counts instructions.
        #[arg(long)]
        bench: bool,
        /// Seconds before the run is stopped as "no verdict".
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// Kernel log level, overriding the manifest's `log` line.
        #[arg(long, value_parser = ["error", "warn", "info", "debug", "trace"])]
        log: Option<String>,
        /// Keep the kernel idling after every environment ended (the run then ends at --timeout).
        #[arg(long)]
        keep_running: bool,
        /// Boot through UEFI firmware (OVMF, package `ovmf`) instead of BIOS.
        #[arg(long)]
        uefi: bool,
        /// Boot without the virtio-net NIC (by default the guest gets one,
        /// with host UDP 5555 and TCP 8080 forwarded to its ports 7 and 80).
        #[arg(long)]
        no_net: bool,
    },
    /// Host unit tests, then every QEMU scenario test; prints a summary.
    Test,
    /// The habits CI checks first: `cargo fmt --check`, and clippy with
    /// warnings denied and every unsafe block documented, on the host
    /// crates and on the bare-metal ones.
    Lint,
    /// Boot the seeded fuzzer (the `attacker` program's `fuzz` mode) with
    /// seeds S, S+1, ... until the time is up; stop at the first run that
    /// breaks the kernel.
    Fuzz {
        /// Keep starting runs for this many seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// First seed (default: taken from the clock, and printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Stop after this many runs even if time is left (1: replay one seed).
        #[arg(long)]
        runs: Option<u64>,
        /// Calls each fuzzing environment makes.
        #[arg(long, default_value_t = 10000)]
        calls: u64,
        /// Fuzzing environments per run (1-8).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=8))]
        envs: u64,
        /// Seconds before one run is stopped as "no verdict".
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Have the guests print every raw call (for replaying a seed).
        #[arg(long)]
        trace: bool,
        /// Show each run's console output as it arrives.
        #[arg(long)]
        echo: bool,
    },
    /// The benchmark suite under `-icount shift=0`, printed as a table.
    Bench {
        /// Seconds before the run is stopped.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Run on real KVM and report TSC cycles instead of instructions.
        #[arg(long)]
        kvm: bool,
        /// Skip the Linux guest baseline (the `linux` and `ratio` columns).
        #[arg(long)]
        no_linux: bool,
        /// Which pages the TLB model treats as global: the kernel half
        /// (`upper`, as a kernel setting the G bit) or none (`none`).
        #[arg(long, default_value = "upper", value_parser = ["upper", "none"])]
        tlb_global: String,
    },
    /// Boot a scenario paused under QEMU's gdb stub and start gdb with the
    /// kernel's symbols (built again with symbols: the `gdb` profile).
    Gdb {
        /// Scenario manifest name under scenarios/ (without .manifest).
        #[arg(long, default_value = "default")]
        scenario: String,
        /// Also load this libOS program's symbols (e.g. `bench`, `libos-unix`); repeatable.
        #[arg(long)]
        libos: Vec<String>,
        /// Run this gdb command in batch mode (repeatable; gdb exits after the last).
        #[arg(long = "batch-cmd")]
        batch_cmd: Vec<String>,
        /// Seconds before a batch session is stopped.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Load the network service from the host (127.0.0.1 only): concurrent
    /// HTTP keep-alive clients on a cached file and a UDP echo run; prints
    /// requests per second, latency percentiles and the libOS's counters.
    Load {
        /// Concurrent HTTP clients.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// HTTP requests in all.
        #[arg(long, default_value_t = 10_000)]
        requests: usize,
        /// UDP datagrams to echo (1 to 1,472 bytes each).
        #[arg(long, default_value_t = 10_000)]
        datagrams: usize,
        /// Poll the NIC instead of taking its interrupts.
        #[arg(long)]
        polled: bool,
        /// Run with `-icount shift=0`, so busy ticks are guest instructions.
        #[arg(long)]
        icount: bool,
        /// Seconds before the guest is stopped.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Show the guest's console as it arrives.
        #[arg(long)]
        echo: bool,
        /// Then serve the same file from a Linux guest (our epoll server,
        /// `xtask/linux/httpd.c`) under the same load, and compare busy
        /// instructions per request (implies --icount).
        #[arg(long)]
        linux: bool,
    },
    /// Only the Linux guest baseline of `bench`: boot it, print its rows.
    #[command(hide = true)]
    LinuxBench {
        /// Seconds before the guest is stopped.
        #[arg(long, default_value_t = linux::DEFAULT_TIMEOUT)]
        timeout: u64,
        /// Show the guest's console as it arrives.
        #[arg(long)]
        echo: bool,
    },
    /// Redraw the bench report (SVG charts, bench.html) from an earlier bench.csv.
    #[command(hide = true)]
    BenchReport {
        /// The CSV to draw (default: target/exo/bench.csv).
        #[arg(long)]
        csv: Option<std::path::PathBuf>,
        /// Where to write the charts and bench.html (default: the CSV's folder).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

fn main() {
    if let Err(error) = dispatch(Cli::parse()) {
        eprintln!("xtask: {error:#}");
        std::process::exit(1);
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    if matches!(cli.command, Cmd::Lint) {
        return lint();
    }
    if let Cmd::BenchReport { csv, out } = cli.command {
        return bench_report(csv, out);
    }
    ensure_qemu()?;
    match cli.command {
        Cmd::Lint | Cmd::BenchReport { .. } => unreachable!("handled above"),
        Cmd::Build => {
            for (name, image) in build_all()? {
                println!("built {name}: {}", image.display());
            }
            Ok(())
        }
        Cmd::Run { scenario, kvm, no_kvm, bench, timeout, log, keep_running, uefi, no_net } => {
            run(&scenario, kvm, no_kvm, bench, timeout, log.as_deref(), keep_running, uefi, !no_net)
        }
        Cmd::Test => test(),
        Cmd::Fuzz { seconds, seed, runs, calls, envs, timeout, trace, echo } => {
            fuzz(seconds, seed, runs, calls, envs, timeout, trace, echo)
        }
        Cmd::Bench { timeout, kvm, no_linux, tlb_global } => bench(timeout, kvm, no_linux, &tlb_global),
        Cmd::Gdb { scenario, libos, batch_cmd, timeout } => xtask::gdb::run(&xtask::gdb::GdbOptions {
            scenario,
            libos,
            batch: batch_cmd,
            timeout: Duration::from_secs(timeout),
        })
        .map(|_| ()),
        Cmd::Load { clients, requests, datagrams, polled, icount, timeout, echo, linux } => {
            let spec = xtask::load::LoadSpec {
                clients,
                requests,
                datagrams,
                nic_irq: !polled,
                icount: icount || linux,
                timeout: Duration::from_secs(timeout),
                echo,
            };
            load(&spec, linux)
        }
        Cmd::LinuxBench { timeout, echo } => {
            let rows = linux::baseline(Duration::from_secs(timeout), echo).context("no Linux figures")?;
            linux::print_table(&rows);
            Ok(())
        }
    }
}

/// `cargo xtask lint`: formatting, then clippy (`-D warnings`, every unsafe
/// block with a SAFETY comment) on every crate, host and bare metal.
/// `needless_range_loop` is allowed: kernels and libOSes index parallel
/// tables by one index on purpose.
fn lint() -> Result<()> {
    let lints =
        ["--", "-D", "warnings", "-D", "clippy::undocumented_unsafe_blocks", "-A", "clippy::needless_range_loop"];
    let host = [
        "-p",
        "shared-abi",
        "-p",
        "kcore",
        "-p",
        "libos-runtime",
        "-p",
        "xtask",
        "-p",
        "exotlb",
        "-p",
        "tests",
        "--all-targets",
    ];
    let host_libs = ["-p", "libos-unix", "-p", "libos-rt", "-p", "libos-gc", "-p", "ulib", "--lib", "--tests"];
    let mut bare = vec!["--release", "--target", "x86_64-unknown-none"];
    for package in
        ["exokernel", "libos-unix", "libos-gc", "libos-rt", "guest-tests", "libos-runtime", "ulib", "unix-programs"]
    {
        bare.extend(["-p", package]);
    }
    let steps: [(&str, Vec<&str>); 4] = [
        ("rustfmt", vec!["fmt", "--all", "--check"]),
        ("clippy (host)", [&["clippy"][..], &host, &lints].concat()),
        ("clippy (host libraries)", [&["clippy"][..], &host_libs, &lints].concat()),
        ("clippy (x86_64-unknown-none)", [&["clippy"][..], &bare, &lints].concat()),
    ];
    for (name, args) in steps {
        println!("xtask lint: {name}");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(&args)
            .current_dir(xtask::root())
            .status()?;
        if !status.success() {
            bail!("{name} failed");
        }
    }
    println!("xtask lint: ok");
    Ok(())
}

/// Install QEMU with apt-get when running as root; otherwise name it exactly.
fn ensure_qemu() -> Result<()> {
    let have_qemu = Command::new(qemu_binary()).arg("--version").output().is_ok();
    let have_ovmf = std::path::Path::new(OVMF_CODE).exists();
    if have_qemu && have_ovmf {
        return Ok(());
    }
    let is_root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    if have_qemu {
        // QEMU alone runs everything but the UEFI boot test.
        if is_root {
            eprintln!("xtask: {OVMF_CODE} missing; installing ovmf with apt-get");
            let _ = Command::new("apt-get").args(["install", "-y", "ovmf"]).status();
        } else {
            eprintln!("xtask: {OVMF_CODE} missing: UEFI boots need `sudo apt-get install -y ovmf`");
        }
        return Ok(());
    }
    if is_root {
        eprintln!("xtask: {} missing; installing qemu-system-x86 and ovmf with apt-get", qemu_binary());
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "qemu-system-x86", "ovmf"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        let ok = install() || (Command::new("apt-get").arg("update").status().is_ok() && install());
        if ok {
            return Ok(());
        }
    }
    bail!("{} not found: install it with `sudo apt-get install -y qemu-system-x86 ovmf`", qemu_binary())
}

/// Put global `key = value` lines in front of a manifest (later global
/// lines would override them, so existing ones are dropped first).
fn override_globals(text: &str, overrides: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (key, value) in overrides {
        out.push_str(&format!("{key} = {value}\n"));
    }
    let mut in_env = false;
    for line in text.lines() {
        in_env |= line.trim() == "[env]";
        let key = line.split('=').next().unwrap_or("").trim();
        if !in_env && overrides.iter().any(|(k, _)| *k == key) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn run(
    scenario: &str,
    kvm: bool,
    no_kvm: bool,
    bench: bool,
    timeout: u64,
    log: Option<&str>,
    keep_running: bool,
    uefi: bool,
    net: bool,
) -> Result<()> {
    let started = Instant::now();
    let images = build_all()?;
    let mut image = images
        .iter()
        .find(|(name, _)| name == scenario)
        .map(|(_, path)| path.clone())
        .with_context(|| format!("no scenario named {scenario} under scenarios/"))?;
    let mut image_name = scenario.to_string();
    let mut overrides = Vec::new();
    if let Some(level) = log {
        overrides.push(("log", level.to_string()));
    }
    if keep_running {
        overrides.push(("keep_running", "true".to_string()));
    }
    if !overrides.is_empty() {
        let text = std::fs::read_to_string(root().join("scenarios").join(format!("{scenario}.manifest")))?;
        image_name = format!("{scenario}-custom");
        image = make_image(&image_name, &override_globals(&text, &overrides))?;
    }
    if uefi {
        anyhow::ensure!(
            std::path::Path::new(OVMF_CODE).exists(),
            "{OVMF_CODE} missing: install the firmware with `apt-get install -y ovmf`"
        );
        image = make_uefi_image(&image_name)?;
    }
    let use_kvm = if kvm {
        true
    } else if no_kvm || bench {
        false
    } else {
        let smoke = images.iter().find(|(n, _)| n == "smoke").map(|(_, p)| p.clone());
        let ok = smoke.is_some_and(|p| kvm_smoke_passes(&p));
        if std::path::Path::new("/dev/kvm").exists() && !ok {
            eprintln!("xtask: /dev/kvm present but a KVM smoke boot failed or was too slow; using TCG");
        }
        ok
    };
    let accel = match (use_kvm, bench, uefi) {
        (true, _, false) => "KVM",
        (true, _, true) => "KVM, UEFI",
        (false, true, _) => "TCG, -icount shift=0",
        (false, false, true) => "TCG, UEFI",
        (false, false, false) => "TCG",
    };
    println!("xtask: booting scenario {scenario} ({accel}); build took {:.1} s", started.elapsed().as_secs_f64());
    let net = net.then(|| free_net_ports(5555, 8080));
    if let Some((udp, tcp)) = net {
        println!(
            "xtask: guest network 10.0.2.15 (QEMU user networking): UDP echo `nc -u 127.0.0.1 {udp}`, HTTP `curl http://127.0.0.1:{tcp}/`"
        );
    }
    // A manifest that gives an environment the console gets the terminal:
    // raw mode, so the guest's shell sees every key (and echoes it).
    let manifest_text = std::fs::read_to_string(root().join("scenarios").join(format!("{scenario}.manifest")))?;
    let console = shared_abi::manifest::Manifest::parse(&manifest_text).is_ok_and(|m| m.envs.iter().any(|e| e.console));
    let interactive = console && std::io::IsTerminal::is_terminal(&std::io::stdin());
    // A person at a prompt is not hurried.
    let timeout = if interactive { timeout.max(3600) } else { timeout };
    let options = RunOptions {
        timeout: Duration::from_secs(timeout),
        icount: bench,
        kvm: use_kvm,
        uefi,
        echo: true,
        net,
        input: if interactive { xtask::Input::Interactive } else { xtask::Input::None },
        ..Default::default()
    };
    if interactive {
        println!("xtask: the console is yours: type commands; `exit` or ctrl-D ends the session\r");
    }
    let saved = interactive.then(|| terminal(&["-g"])).flatten();
    if interactive {
        terminal(&["raw", "-echo"]);
    }
    let outcome = run_qemu(&image, &options);
    if let Some(saved) = saved {
        terminal(&[saved.trim()]);
    }
    let outcome = outcome?;
    println!("xtask: {} after {:.2} s", outcome.describe(), outcome.wall.as_secs_f64());
    match outcome.verdict {
        Some(Verdict::Success) => Ok(()),
        _ => bail!("run ended: {}", outcome.describe()),
    }
}

/// Run `stty` on the controlling terminal; its output.
fn terminal(args: &[&str]) -> Option<String> {
    let tty = std::fs::File::open("/dev/tty").ok()?;
    let output = Command::new("stty").args(args).stdin(tty).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Run a cargo command, echo its output, and collect `test result:` lines.
fn cargo_test(args: &[&str], envs: &[(&str, String)]) -> Result<(bool, Vec<String>)> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root()).args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let output = cmd.output().with_context(|| format!("running cargo {args:?}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    print!("{stdout}");
    eprint!("{}", stderr.lines().filter(|l| !l.trim_start().starts_with("Compiling")).collect::<Vec<_>>().join("\n"));
    eprintln!();
    let results = stdout.lines().filter(|l| l.starts_with("test result:")).map(String::from).collect();
    Ok((output.status.success(), results))
}

fn count(results: &[String], word: &str) -> u64 {
    results
        .iter()
        .filter_map(|line| {
            let at = line.find(&format!(" {word}"))?;
            line[..at].rsplit(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok()
        })
        .sum()
}

fn test() -> Result<()> {
    let started = Instant::now();
    println!("== host unit tests");
    let (unit_ok, unit) = cargo_test(
        &[
            "test",
            "--no-fail-fast",
            "--lib",
            "-p",
            "shared-abi",
            "-p",
            "libos-runtime",
            "-p",
            "kcore",
            "-p",
            "xtask",
            "-p",
            "exotlb",
            "-p",
            "libos-unix",
            "-p",
            "libos-rt",
            "-p",
            "libos-gc",
            "-p",
            "ulib",
        ],
        &[],
    )?;
    println!("== building kernel, libOSes and scenario images");
    let images = build_all()?;
    println!("built {} scenario images", images.len());
    println!("== QEMU scenario tests");
    let (scenario_ok, scenarios) = cargo_test(
        &["test", "--no-fail-fast", "-p", "tests", "--", "--test-threads=2"],
        &[("EXO_IMAGE_DIR", image_dir().display().to_string())],
    )?;
    println!();
    println!("== summary");
    println!("host unit tests:     {:>4} passed, {:>3} failed", count(&unit, "passed"), count(&unit, "failed"));
    println!(
        "QEMU scenario tests: {:>4} passed, {:>3} failed",
        count(&scenarios, "passed"),
        count(&scenarios, "failed")
    );
    println!("total time: {:.1} s", started.elapsed().as_secs_f64());
    if unit_ok && scenario_ok {
        println!("result: ok");
        Ok(())
    } else {
        bail!("result: FAILED")
    }
}

#[allow(clippy::too_many_arguments)]
fn fuzz(
    seconds: u64,
    seed: Option<u64>,
    runs: Option<u64>,
    calls: u64,
    envs: u64,
    timeout: u64,
    trace: bool,
    echo: bool,
) -> Result<()> {
    use xtask::fuzz::{fuzz_manifest, fuzz_uses_nic, judge_fuzz_run, FuzzConfig};
    let first = seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() % 1_000_000).unwrap_or(1)
    });
    build_binaries()?;
    println!(
        "xtask: fuzzing for {seconds} s from seed {first}: {envs} env(s) x {calls} calls per run, {timeout} s per run"
    );
    let started = Instant::now();
    let (mut done, mut total_calls, mut total_errors) = (0u64, 0u64, 0u64);
    let mut killed = Vec::new();
    let mut seed = first;
    while started.elapsed() < Duration::from_secs(seconds) && runs.is_none_or(|n| done < n) {
        let config = FuzzConfig { seed, calls, envs, trace };
        let text = fuzz_manifest(&config);
        let image = make_image("fuzz-run", &text)?;
        let nic = fuzz_uses_nic(seed);
        let net = nic.then(|| free_net_ports(0, 0));
        let options = RunOptions { timeout: Duration::from_secs(timeout), echo, net, ..Default::default() };
        // With a NIC, datagrams from the host for the guest's filters (UDP
        // port 7) and ARP traffic from QEMU for them to claim.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let traffic = net.map(|(udp, _)| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let Ok(socket) = std::net::UdpSocket::bind("127.0.0.1:0") else { return };
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let payload: Vec<u8> = (0..(n % 1400) + 1).map(|i| (i ^ n) as u8).collect();
                    let _ = socket.send_to(&payload, ("127.0.0.1", udp));
                    n += 1;
                    std::thread::sleep(Duration::from_millis(3));
                }
            })
        });
        let outcome = run_qemu(&image, &options);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = traffic {
            let _ = thread.join();
        }
        let outcome = outcome?;
        match judge_fuzz_run(&outcome, envs) {
            Ok(report) => {
                println!(
                    "fuzz: seed {seed}: ok in {:.1} s{} ({} calls, {} errors returned{})",
                    outcome.wall.as_secs_f64(),
                    if nic { " with a NIC" } else { "" },
                    report.calls,
                    report.errors,
                    if report.killed.is_empty() {
                        String::new()
                    } else {
                        format!(", {} env(s) killed", report.killed.len())
                    }
                );
                for why in &report.killed {
                    println!("fuzz: seed {seed}: warning: {why}");
                }
                total_calls += report.calls;
                total_errors += report.errors;
                killed.extend(report.killed.into_iter().map(|k| format!("seed {seed} {k}")));
            }
            Err(reason) => {
                println!("fuzz: seed {seed} broke the kernel: {reason}{}", if nic { " (run with a NIC)" } else { "" });
                println!("--- last 30 lines of output:");
                for line in outcome.lines.iter().skip(outcome.lines.len().saturating_sub(30)) {
                    println!("{line}");
                }
                let log = image_dir().join(format!("fuzz-seed-{seed}.log"));
                let mut text_out = format!("{text}\n--- output ({}):\n", outcome.describe());
                for line in &outcome.lines {
                    text_out.push_str(line);
                    text_out.push('\n');
                }
                std::fs::write(&log, text_out)?;
                println!("---");
                println!("manifest and full output: {}", log.display());
                println!(
                    "replay: cargo xtask fuzz --seed {seed} --runs 1 --calls {calls} --envs {envs} --echo (add --trace to see every call)"
                );
                bail!("fuzz: seed {seed} broke the kernel after {} good run(s)", done);
            }
        }
        done += 1;
        seed += 1;
    }
    println!(
        "fuzz: summary: {done} run(s), seeds {first}..={}, all held; {total_calls} calls, {total_errors} refused with an error code, {} env(s) killed, {:.1} s",
        seed.saturating_sub(1).max(first),
        killed.len(),
        started.elapsed().as_secs_f64()
    );
    for k in &killed {
        println!("fuzz: killed: {k}");
    }
    Ok(())
}

fn bench(timeout: u64, kvm: bool, no_linux: bool, tlb_global: &str) -> Result<()> {
    build_all()?;
    let options = RunOptions { timeout: Duration::from_secs(timeout), icount: !kvm, kvm, ..Default::default() };
    if kvm {
        println!("xtask: running the benchmark suite on KVM: figures are TSC cycles, not instructions");
    } else {
        println!(
            "xtask: running the benchmark suite under TCG with -icount shift=0 (1 TSC tick = 1 guest instruction)"
        );
    }
    // The TLB model (a QEMU plugin) rides along under TCG where it can be built.
    let plugin = match kvm {
        true => None,
        false => match xtask::tlb::build_plugin() {
            Ok(path) => {
                println!("xtask: TLB model on: {} (docs/TLB_MODEL.md)", shown_path(&path));
                Some(path)
            }
            Err(why) => {
                println!("xtask: TLB model off: {why}; the bench runs without it");
                None
            }
        },
    };
    let mut tlb_config = None;
    // One boot per context-switch TLB policy (the first carries the kernel
    // rows), then the processes and GCBench under each write barrier.
    let mut rows: Vec<Vec<(String, String)>> = Vec::new();
    let mut notes = Vec::new();
    for scenario in ["bench", "bench_stlb", "bench_pcid", "bench_unix", "bench_gc_dirty", "bench_gc_cards"] {
        let mut options = options.clone();
        // bench_unix and GCBench have no marked operations: they run without the model.
        let tlb_out = image_dir().join(format!("{scenario}.tlb"));
        let model_on = plugin.is_some() && matches!(scenario, "bench" | "bench_stlb" | "bench_pcid");
        if let (Some(plugin), true) = (&plugin, model_on) {
            let _ = std::fs::remove_file(&tlb_out);
            options.qemu_args = xtask::tlb::qemu_args(plugin, &tlb_out, tlb_global);
        }
        let mut image = image_dir().join(format!("{scenario}.img"));
        if kvm {
            let text = std::fs::read_to_string(root().join("scenarios").join(format!("{scenario}.manifest")))?;
            image = make_image(&format!("{scenario}-kvm"), &text.replace("unit = instructions", "unit = cycles"))?;
        }
        let outcome = run_qemu(&image, &options)?;
        if outcome.verdict != Some(Verdict::Success) {
            for line in &outcome.lines {
                println!("{line}");
            }
            bail!("bench run {scenario} ended: {}", outcome.describe());
        }
        for line in outcome.lines.iter().filter(|l| l.contains("does not offer PCID")) {
            notes.push(format!("{scenario}: {}", line.trim_start_matches("[kernel] warn: ")));
        }
        let fallback = outcome.lines.iter().any(|l| l.contains("does not offer PCID"));
        let model =
            model_on.then(|| std::fs::read_to_string(&tlb_out).ok()).flatten().map(|t| xtask::tlb::parse_report(&t));
        if model_on && model.is_none() {
            println!("note: {scenario}: the TLB model wrote no report ({})", shown_path(&tlb_out));
        }
        if let Some(model) = &model {
            tlb_config.get_or_insert_with(|| model.config.clone());
        }
        rows.extend(
            outcome.lines.iter().filter_map(|l| l.split_once("BENCH ").map(|(_, rest)| rest)).map(parse_fields).map(
                |mut row| {
                    if fallback {
                        for (k, v) in row.iter_mut() {
                            if k == "op" {
                                *v = v.replace("switch_pcid", "switch_pcid=flush");
                            }
                        }
                    }
                    // The row's marked runs, as the model saw them. The PCID
                    // what-if is left out under stlb, which drops mappings
                    // at each switch on purpose (with PCID it would flush).
                    let tag = row.iter().find(|(k, _)| k == "tag").and_then(|(_, v)| v.parse::<u16>().ok());
                    if let Some(region) = tag.and_then(|t| model.as_ref()?.regions.get(&t)) {
                        let field = xtask::tlb::per_op_field(region, scenario != "bench_stlb");
                        row.push(("tlb".into(), field));
                    }
                    row
                },
            ),
        );
    }
    if rows.is_empty() {
        bail!("the bench scenarios printed no BENCH lines");
    }
    // The Linux baseline counts instructions under icount: no match for KVM cycles.
    let mut linux_rows = match (no_linux, kvm) {
        (true, _) => None,
        (false, true) => {
            println!("linux baseline: skipped under --kvm (it counts instructions under -icount)");
            None
        }
        (false, false) => linux::baseline(Duration::from_secs(linux::DEFAULT_TIMEOUT), false),
    };
    if !kvm {
        http_rows(&mut rows, linux_rows.as_mut());
    }
    print_table(&rows, linux_rows.as_deref());
    if let Some(config) = &tlb_config {
        let get = |row: &Vec<(String, String)>, k: &str| row.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let mut marked: Vec<(String, String)> =
            rows.iter().filter_map(|row| Some((get(row, "op")?, get(row, "tlb")?))).collect();
        marked.extend(linux_rows.iter().flatten().filter_map(|r| Some((r.op.clone(), r.tlb.clone()?))));
        xtask::tlb::print_table(&marked, config);
    }
    for note in &notes {
        println!("note: {note}");
    }
    if let Some(linux_rows) = &linux_rows {
        linux::print_table(linux_rows);
    }
    let csv = image_dir().join("bench.csv");
    let mut text = String::from("op,unit,median,min,max,floor,target,events,linux,tlb\n");
    for row in &rows {
        let get = |k: &str| row.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap_or_default();
        text.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{}\n",
            get("op"),
            get("unit"),
            get("median"),
            get("min"),
            get("max"),
            get("floor"),
            get("target"),
            get("events").replace(',', ";"),
            linux_median(&get("op"), linux_rows.as_deref()).map(|m| m.to_string()).unwrap_or_default(),
            get("tlb")
        ));
    }
    for row in linux_rows.iter().flatten() {
        text.push_str(&row.csv());
    }
    std::fs::write(&csv, text)?;
    println!("\nraw figures: {}", csv.display());
    // The charts are a view of the CSV: failing to draw them fails nothing.
    match report::write_report(&csv, &image_dir()) {
        Ok(files) => println!("report: {}", shown_path(files.last().unwrap_or(&csv))),
        Err(error) => println!("note: no bench report drawn: {error:#}"),
    }
    Ok(())
}

/// `cargo xtask bench-report`: redraw the charts and bench.html from a CSV.
fn bench_report(csv: Option<std::path::PathBuf>, out: Option<std::path::PathBuf>) -> Result<()> {
    let csv = csv.unwrap_or_else(|| image_dir().join("bench.csv"));
    let out = out.unwrap_or_else(|| csv.parent().map(std::path::Path::to_path_buf).unwrap_or_else(image_dir));
    for file in report::write_report(&csv, &out)? {
        println!("report: {}", shown_path(&file));
    }
    Ok(())
}

/// `path` relative to the workspace root where it lies inside it.
fn shown_path(path: &std::path::Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}

fn parse_fields(text: &str) -> Vec<(String, String)> {
    text.split_whitespace()
        .filter_map(|field| field.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The median of the Linux counterpart of exokernel operation `op`.
fn linux_median(op: &str, linux_rows: Option<&[linux::LinuxRow]>) -> Option<u64> {
    linux::median(linux_rows?, linux::counterpart(op)?)
}

/// The exokernel rows; with Linux figures, two more columns: the Linux
/// counterpart's median and exo median / Linux median.
fn print_table(rows: &[Vec<(String, String)>], linux_rows: Option<&[linux::LinuxRow]>) {
    let get = |row: &Vec<(String, String)>, k: &str| {
        row.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap_or_else(|| "-".into())
    };
    let linux_columns = |row: &Vec<(String, String)>| match linux_rows {
        None => String::new(),
        Some(_) => {
            let linux = linux_median(&get(row, "op"), linux_rows);
            let exo = get(row, "median").parse::<f64>().ok();
            let ratio = match (exo, linux) {
                (Some(exo), Some(linux)) if linux > 0 => format!("{:.2}", exo / linux as f64),
                _ => "-".into(),
            };
            format!(" {:>10} {:>6}", linux.map_or("-".into(), |m| m.to_string()), ratio)
        }
    };
    println!();
    println!(
        "{:<34} {:>10} {:>10} {:>10}{}  {:<30} {:>8}  events per op",
        if rows.iter().flatten().any(|(k, v)| k == "unit" && v == "cycles") {
            "operation (TSC cycles, KVM)"
        } else {
            "operation (instructions, icount)"
        },
        "median",
        "min",
        "max",
        if linux_rows.is_some() { format!(" {:>10} {:>6}", "linux", "ratio") } else { String::new() },
        "floor (same run)",
        "target"
    );
    println!("{}", "-".repeat(if linux_rows.is_some() { 148 } else { 130 }));
    for row in rows {
        println!(
            "{:<34} {:>10} {:>10} {:>10}{}  {:<30} {:>8}  {}",
            get(row, "op"),
            get(row, "median"),
            get(row, "min"),
            get(row, "max"),
            linux_columns(row),
            get(row, "floor"),
            get(row, "target"),
            get(row, "events")
        );
    }
}

/// `cargo xtask load`: boot the `net_load` scenario, load it, print the
/// numbers; with `linux`, the same against the Linux guest, and the ratio.
fn load(spec: &xtask::load::LoadSpec, linux: bool) -> Result<()> {
    use xtask::load::{field, instructions_per_request};
    build_binaries()?;
    println!(
        "xtask load: {} clients x {} requests of {} (keep-alive), {} UDP datagrams; NIC {}{}",
        spec.clients,
        spec.requests,
        xtask::load::LOAD_PATH,
        spec.datagrams,
        if spec.nic_irq { "interrupts" } else { "polled" },
        if spec.icount { ", -icount shift=0" } else { "" }
    );
    let result = xtask::load::run_load(spec)?;
    let (udp, http) = (&result.udp, &result.http);
    println!(
        "udp echo: {} of {} datagrams echoed byte-identical ({} bytes), {} mismatched, {} resent, {} lost, {:.2} s",
        udp.echoed,
        spec.datagrams,
        udp.bytes,
        udp.mismatched,
        udp.retries,
        udp.lost,
        udp.wall.as_secs_f64()
    );
    println!(
        "http: {} ok, {} errors, {} connections, {:.1} requests/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {:.2} s",
        http.ok,
        http.errors,
        http.connects,
        http.requests_per_second(),
        http.percentile(0.5).as_secs_f64() * 1e3,
        http.percentile(0.99).as_secs_f64() * 1e3,
        http.percentile(1.0).as_secs_f64() * 1e3,
        http.wall.as_secs_f64()
    );
    for why in &http.why {
        println!("  error: {why}");
    }
    match &result.summary {
        Some(summary) => {
            println!("guest: {}", summary.trim_start_matches("net: summary "));
            let busy = field(summary, "busy_ticks").unwrap_or(0);
            let served = field(summary, "busy_requests").unwrap_or(0);
            if let Some(per) = instructions_per_request(busy, served) {
                let unit = if spec.icount { "guest instructions" } else { "TSC ticks (no -icount: not instructions)" };
                println!("busy per request: {per} {unit} ({busy} busy over {served} requests, halted time excluded)");
            }
        }
        None => println!("guest: no summary line ({})", result.outcome.describe()),
    }
    if linux {
        let exo = result
            .summary
            .as_deref()
            .and_then(|s| instructions_per_request(field(s, "busy_ticks")?, field(s, "busy_requests")?));
        match linux::http_baseline(spec) {
            Ok(linux) => {
                println!(
                    "linux httpd: {} ok, {} errors, {:.1} requests/s, p50 {:.2} ms, p99 {:.2} ms; udp {} of {} echoed",
                    linux.http.ok,
                    linux.http.errors,
                    linux.http.requests_per_second(),
                    linux.http.percentile(0.5).as_secs_f64() * 1e3,
                    linux.http.percentile(0.99).as_secs_f64() * 1e3,
                    linux.udp.echoed,
                    spec.datagrams
                );
                let theirs = linux.instructions_per_request();
                println!(
                    "busy guest instructions per request: libos-unix {} linux {} ratio {} (Linux: {} busy ns, {} busy jiffies at {} Hz, over {} requests)",
                    exo.map_or("-".into(), |v| v.to_string()),
                    theirs.map_or("-".into(), |v| v.to_string()),
                    match (exo, theirs) {
                        (Some(e), Some(l)) if l > 0 => format!("{:.3}", e as f64 / l as f64),
                        _ => "-".into(),
                    },
                    linux.busy_ns,
                    linux.busy_jiffies,
                    linux.user_hz,
                    linux.requests
                );
            }
            Err(error) => println!("linux httpd: skipped: {error:#}"),
        }
    }
    println!("xtask load: guest run {}", result.outcome.describe());
    let clean = http.errors == 0
        && http.ok == spec.requests
        && udp.echoed == spec.datagrams
        && udp.mismatched == 0
        && result.outcome.verdict == Some(shared_abi::exit::Verdict::Success);
    if !clean {
        bail!("the load run was not clean");
    }
    Ok(())
}

/// The HTTP row of `bench`: busy guest instructions per request of
/// libos-unix under a small `cargo xtask load` (`-icount shift=0`), and
/// (with the Linux baseline) of our epoll server in the Linux guest under
/// the same load. A run that fails or is not clean adds no row.
fn http_rows(rows: &mut Vec<Vec<(String, String)>>, linux_rows: Option<&mut Vec<linux::LinuxRow>>) {
    use xtask::load::{field, instructions_per_request};
    let spec = xtask::load::LoadSpec {
        clients: 16,
        requests: 2000,
        datagrams: 100,
        nic_irq: true,
        icount: true,
        timeout: Duration::from_secs(240),
        echo: false,
    };
    let clean = |http: &xtask::load::HttpReport| http.ok == spec.requests && http.errors == 0;
    match xtask::load::run_load(&spec) {
        Ok(result) if clean(&result.http) => {
            let per = result
                .summary
                .as_deref()
                .and_then(|s| instructions_per_request(field(s, "busy_ticks")?, field(s, "busy_requests")?));
            if let Some(per) = per {
                let events = result.summary.as_deref().map_or(String::new(), |s| {
                    let requests = field(s, "busy_requests").unwrap_or(1).max(1);
                    format!(
                        "nic_irqs={},polls={}/{}req",
                        field(s, "nic_irqs").unwrap_or(0),
                        field(s, "polls").unwrap_or(0),
                        requests
                    )
                });
                let row = [
                    ("op", "http_request_busy".to_string()),
                    ("unit", "instructions".into()),
                    ("median", per.to_string()),
                    ("min", per.to_string()),
                    ("max", per.to_string()),
                    ("floor", "busy/requests".into()),
                    ("target", "<=linux/3".into()),
                    ("events", events),
                ];
                rows.push(row.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
            }
        }
        Ok(result) => println!("http bench: the load run was not clean ({} errors); no row", result.http.errors),
        Err(error) => println!("http bench: skipped: {error:#}"),
    }
    let Some(linux_rows) = linux_rows else { return };
    match linux::http_baseline(&spec) {
        Ok(linux) if clean(&linux.http) => {
            if let Some(per) = linux.instructions_per_request() {
                linux_rows.push(linux::LinuxRow {
                    op: "linux_http_request".into(),
                    median: per,
                    min: per,
                    max: per,
                    floor: 0,
                    iterations: linux.requests,
                    tlb: None,
                });
            }
        }
        Ok(linux) => println!("linux httpd: the load run was not clean ({} errors); no row", linux.http.errors),
        Err(error) => println!("linux httpd: skipped: {error:#}"),
    }
}
