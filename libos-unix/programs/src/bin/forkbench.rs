//! Benchmarks of libos-unix's processes, pipes and files: fork + exit +
//! wait, fork + exec + wait of a small program (`hello -q`), a pipe round
//! trip between two processes, pipe throughput, and open + read + close of
//! a small file; in guest instructions under `-icount shift=0`, with the
//! kernel's events per operation beside them.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use ulib::fork::fork;
use ulib::println;
use ulib::process::{exit, waitpid};
use ulib::runtime::rt::rdtsc;
use ulib::runtime::syscall::{self, KernelStats};
use ulib::spawn::exec;

ulib::program_main!(main);

const ROUNDS: usize = 41;

fn report(op: &str, unit: &str, mut samples: Vec<u64>, before: KernelStats, after: KernelStats, target: &str) {
    samples.sort_unstable();
    let n = samples.len() as u64;
    let per = |a: u64, b: u64| (b - a) as f64 / n as f64;
    println!(
        "BENCH op={} unit={} median={} min={} max={} target={} events=syscalls:{:.0},upcalls:{:.1},page_faults:{:.1},cr3_loads:{:.1},context_switches:{:.1}",
        op,
        unit,
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1],
        target,
        per(before.syscalls, after.syscalls),
        per(before.upcalls, after.upcalls),
        per(before.page_faults, after.page_faults),
        per(before.cr3_loads, after.cr3_loads),
        per(before.context_switches, after.context_switches),
    );
}

fn run(op: &str, unit: &str, target: &str, child: fn() -> !) {
    let mut samples = Vec::with_capacity(ROUNDS);
    let before = syscall::stats().unwrap_or_default();
    for _ in 0..ROUNDS {
        let start = rdtsc();
        let pid = match fork() {
            Ok(0) => child(),
            Ok(pid) => pid,
            Err(error) => {
                println!("forkbench: fork failed: {}", error);
                return;
            }
        };
        let _ = waitpid(Some(pid), false);
        samples.push(rdtsc() - start);
    }
    let after = syscall::stats().unwrap_or_default();
    report(op, unit, samples, before, after, target);
}

fn exit_at_once() -> ! {
    exit(0)
}

fn exec_hello() -> ! {
    let error = exec("/bin/hello", &["hello", "-q"]);
    println!("forkbench: exec failed: {}", error);
    exit(1)
}

/// The calls fork makes, one by one (where its time goes).
fn parts() {
    use ulib::runtime::syscall::{map_flags, rights};
    let t = rdtsc;
    let a = t();
    let child = syscall::env_create(64, 128, 256, "part").expect("create");
    let b = t();
    let (_, k1) = syscall::frame_alloc_for(child, rights::ALL).expect("alloc for");
    let c = t();
    syscall::env_map(child, 0x1000_0000_0000, k1, map_flags::WRITE).expect("map");
    let d = t();
    let (_, k2) = syscall::frame_alloc_for(child, rights::ALL).expect("alloc for");
    let e = t();
    syscall::env_map(child, 0x1000_0000_1000, k2, map_flags::WRITE).expect("map");
    let f = t();
    let page = alloc::vec![5u8; 4096];
    let g = t();
    syscall::env_write(child, 0x1000_0000_1000, &page).expect("write");
    let h = t();
    let (_, mine) = syscall::frame_alloc(0, rights::ALL).expect("alloc");
    let i = t();
    let co = syscall::frame_co_own(mine, child, rights::ALL).expect("co-own");
    let j = t();
    syscall::env_map(child, 0x1000_0000_2000, co, 0).expect("map");
    let k = t();
    syscall::env_kill(child, 0).expect("kill");
    let l = t();
    let _ = syscall::env_reap();
    let m = t();
    let _ = syscall::frame_free(mine);
    let _ = syscall::env_info();
    let n = t();
    let _ = syscall::env_info();
    let o = t();
    println!(
        "forkbench: parts env_create={} frame_alloc_for={} env_map_first={} frame_alloc_for2={} env_map_next={} env_write_page={} frame_alloc={} co_own={} env_map_co={} env_kill={} env_reap={} env_info={}",
        b - a, c - b, d - c, e - d, f - e, h - g, i - h, j - i, k - j, l - k, m - l, o - n
    );
}

/// One byte there and back between two processes over two pipes.
fn pipe_round_trip(unit: &str) {
    use ulib::io;
    let (Ok((to_child, from_parent)), Ok((from_child, to_parent))) = (io::pipe(), io::pipe()) else {
        println!("forkbench: pipe failed");
        return;
    };
    let pid = match fork() {
        Ok(0) => {
            let _ = (io::close(from_parent), io::close(from_child));
            let mut byte = [0u8; 1];
            while io::read(to_child, &mut byte) == Ok(1) {
                if io::write(to_parent, &byte).is_err() {
                    break;
                }
            }
            exit(0)
        }
        Ok(pid) => pid,
        Err(_) => return,
    };
    let _ = (io::close(to_child), io::close(to_parent));
    let mut samples = Vec::with_capacity(ROUNDS * 4);
    let before = syscall::stats().unwrap_or_default();
    let mut byte = [7u8; 1];
    for _ in 0..ROUNDS * 4 {
        let start = rdtsc();
        let _ = io::write(from_parent, &byte);
        let _ = io::read(from_child, &mut byte);
        samples.push(rdtsc() - start);
    }
    let after = syscall::stats().unwrap_or_default();
    let _ = (io::close(from_parent), io::close(from_child));
    let _ = waitpid(Some(pid), false);
    report("pipe_round_trip", unit, samples, before, after, "linux/10");
}

/// Bytes through a pipe per 1000 instructions (one writer, one reader).
fn pipe_throughput(unit: &str) {
    use ulib::io;
    const TOTAL: usize = 512 * 1024;
    let Ok((read_end, write_end)) = io::pipe() else { return };
    let start = rdtsc();
    let pid = match fork() {
        Ok(0) => {
            let _ = io::close(read_end);
            let chunk = [0x5au8; 4000];
            let mut sent = 0;
            while sent < TOTAL {
                match io::write(write_end, &chunk[..(TOTAL - sent).min(4000)]) {
                    Ok(n) => sent += n,
                    Err(_) => break,
                }
            }
            exit(0)
        }
        Ok(pid) => pid,
        Err(_) => return,
    };
    let _ = io::close(write_end);
    let mut got = 0;
    let mut buf = [0u8; 4096];
    while let Ok(n) = io::read(read_end, &mut buf) {
        if n == 0 {
            break;
        }
        got += n;
    }
    let _ = io::close(read_end);
    let _ = waitpid(Some(pid), false);
    let ticks = rdtsc() - start;
    let rate = got as u64 * 1000 / ticks.max(1);
    println!(
        "BENCH op=pipe_throughput unit=bytes_per_1000_{} median={} min={} max={} target=- events=bytes:{},{}:{}",
        unit, rate, rate, rate, got, unit, ticks
    );
}

/// open + read + close of a small file (the file server in init).
fn open_read_close(unit: &str) {
    use ulib::io;
    let mut samples = Vec::with_capacity(ROUNDS);
    let before = syscall::stats().unwrap_or_default();
    let mut buf = [0u8; 256];
    for _ in 0..ROUNDS {
        let start = rdtsc();
        if let Ok(fd) = io::open("/etc/motd", io::O_RDONLY) {
            let _ = io::read(fd, &mut buf);
            let _ = io::close(fd);
        }
        samples.push(rdtsc() - start);
    }
    let after = syscall::stats().unwrap_or_default();
    report("open_read_close", unit, samples, before, after, "-");
}

fn main(args: &[&str]) -> i32 {
    let unit = args.iter().find_map(|a| a.strip_prefix("unit=")).unwrap_or("tsc-ticks");
    parts();
    run("fork_exit_wait", unit, "linux/2", exit_at_once);
    run("fork_exec_wait", unit, "-", exec_hello);
    pipe_round_trip(unit);
    pipe_throughput(unit);
    open_read_close(unit);
    0
}
