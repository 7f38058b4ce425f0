//! The seeded fuzzer's host side: the manifest one seed boots (the guest
//! program is `attacker` in its `fuzz` mode) and the verdict on a run.
//!
//! A seed fixes everything the manifest says: the kernel configuration
//! (TLB policy, quantum, pool, slots, budgets) and each environment's call
//! stream (the guest mixes its env id into the seed). The interleaving of
//! the environments still depends on timing, so a replay is faithful for
//! one environment and close for several.

use crate::Outcome;
use shared_abi::exit::Verdict;

/// What a fuzz run is made of.
#[derive(Clone, Copy, Debug)]
pub struct FuzzConfig {
    pub seed: u64,
    /// Calls each environment makes.
    pub calls: u64,
    /// Fuzzing environments (1..=8).
    pub envs: u64,
    /// Print every raw call (for replaying a seed).
    pub trace: bool,
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether the run for this seed gets a NIC (and host traffic to it), so
/// the network calls reach past their argument checks.
pub fn fuzz_uses_nic(seed: u64) -> bool {
    splitmix(seed ^ 0x6e69_6300).is_multiple_of(3)
}

/// The boot manifest of one fuzz run.
pub fn fuzz_manifest(config: &FuzzConfig) -> String {
    let pick = |salt: u64, n: u64| splitmix(config.seed ^ salt.wrapping_mul(0x2545_f491_4f6c_dd1d)) % n;
    let policy = ["flush", "pcid", "stlb"][pick(1, 3) as usize];
    let quantum = [500, 1000, 2000][pick(2, 3) as usize];
    let pool: u64 = [512, 2048, 8192][pick(3, 3) as usize];
    let envs = config.envs.clamp(1, 8);
    let mut text = format!(
        "# cargo xtask fuzz: seed {seed}, {envs} env(s) of {calls} calls\nlog = warn\ntlb_policy = {policy}\nquantum_us = {quantum}\nframe_pool_kib = {pool}\n",
        seed = config.seed,
        calls = config.calls
    );
    let trace = if config.trace { " trace=1" } else { "" };
    for env in 1..=envs {
        let slots = [8, 64, 512][pick(10 + env, 3) as usize];
        // Quotas never promise more than the pool holds (then a libOS
        // within its quota always gets a frame, if only after `again`).
        let quota = [64u64, 256, 1024][pick(20 + env, 3) as usize].min(pool / envs / 4 * 4);
        let kmem = [32, 256][pick(30 + env, 2) as usize];
        // The envs end one after another (the last makes all its calls), so
        // the others keep using keys, mappings and transfers of ended ones.
        let calls = config.calls - (envs - env) * config.calls / (2 * envs);
        text.push_str(&format!(
            "\n[env]\nname = fuzz{env}\nprogram = attacker\nargs = fuzz seed={seed} calls={calls}{trace}\nmemory_kib = 4096\ntlb_slots = {slots}\nquota_kib = {quota}\nkmem_kib = {kmem}\n",
            seed = config.seed,
        ));
    }
    text
}

/// A run that held: what the environments reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FuzzReport {
    pub calls: u64,
    /// Calls the kernel answered with an error code.
    pub errors: u64,
    /// Environments the kernel ended (a fuzzer slip, not a kernel bug).
    pub killed: Vec<String>,
}

/// Judge a fuzz run: `Err(reason)` if the kernel broke (no success
/// verdict, a panic, its end-of-run invariants failed) or an environment
/// caught it misbehaving (a nonzero exit, a `fuzz: FAIL` line).
pub fn judge_fuzz_run(outcome: &Outcome, envs: u64) -> Result<FuzzReport, String> {
    if let Some(line) = outcome.lines.iter().find(|l| l.contains("KERNEL PANIC")) {
        return Err(format!("kernel panic: {}", line.trim()));
    }
    match outcome.verdict {
        Some(Verdict::Success) => {}
        _ => return Err(format!("run ended: {}", outcome.describe())),
    }
    let invariants = outcome
        .lines
        .iter()
        .find_map(|l| l.find("EXO-INVARIANTS ").map(|at| &l[at..]))
        .ok_or_else(|| "no EXO-INVARIANTS line".to_string())?;
    if !invariants.split_whitespace().any(|f| f == "ok=true") {
        return Err(format!("invariants broken: {invariants}"));
    }
    let mut report = FuzzReport::default();
    for env in 1..=envs.clamp(1, 8) {
        let name = format!("fuzz{env}");
        let summary = outcome.summary(&name).ok_or_else(|| format!("no summary for {name}"))?;
        let prefix = format!("[{name}] ");
        let lines: Vec<&str> = outcome.lines.iter().filter_map(|l| l.strip_prefix(prefix.as_str())).collect();
        if let Some(fail) = lines
            .iter()
            .find(|l| l.starts_with("fuzz: FAIL") || l.starts_with("upcall: FAIL") || l.starts_with("FAIL: "))
        {
            return Err(format!("{name}: {fail}"));
        }
        if summary.contains("status=killed") {
            report.killed.push(format!("{name}: {}", summary.split("reason=").nth(1).unwrap_or(summary)));
            continue;
        }
        if !summary.contains("status=exited code=0 ") {
            return Err(format!("{name} did not exit cleanly: {summary}"));
        }
        let done = lines
            .iter()
            .find(|l| l.starts_with("fuzz: done ") && l.ends_with(" ok"))
            .ok_or_else(|| format!("{name}: no `fuzz: done ... ok` line"))?;
        let field =
            |key: &str| done.split_whitespace().find_map(|f| f.strip_prefix(key)?.parse::<u64>().ok()).unwrap_or(0);
        report.calls += field("calls=");
        report.errors += field("errors=");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_seed_gives_a_valid_manifest() {
        for seed in 0..64 {
            let text = fuzz_manifest(&FuzzConfig { seed, calls: 100, envs: 3, trace: seed % 2 == 0 });
            let manifest =
                shared_abi::manifest::Manifest::parse(&text).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
            assert_eq!(manifest.envs.len(), 3);
            let quotas: u64 = manifest.envs.iter().map(|e| e.quota_kib).sum();
            assert!(quotas <= manifest.frame_pool_kib, "seed {seed}: quotas overcommit the pool\n{text}");
            assert!(manifest
                .envs
                .iter()
                .all(|e| e.program == "attacker" && e.args.starts_with(&format!("fuzz seed={seed} calls="))));
            let calls: Vec<&str> = manifest.envs.iter().map(|e| e.args.as_str()).collect();
            assert!(
                calls[0].contains("calls=67") && calls[1].contains("calls=84") && calls[2].contains("calls=100"),
                "{calls:?}"
            );
        }
        assert_eq!(
            fuzz_manifest(&FuzzConfig { seed: 5, calls: 1, envs: 1, trace: false }),
            fuzz_manifest(&FuzzConfig { seed: 5, calls: 1, envs: 1, trace: false })
        );
    }

    fn outcome(verdict: Option<Verdict>, lines: &[&str]) -> Outcome {
        Outcome {
            verdict,
            timed_out: verdict.is_none(),
            status: None,
            lines: lines.iter().map(|s| s.to_string()).collect(),
            wall: Duration::ZERO,
        }
    }

    #[test]
    fn judging_runs() {
        let good = [
            "[fuzz1] fuzz: seed=3 calls=10 env=1",
            "[fuzz1] fuzz: done seed=3 calls=10 errors=4 ok",
            "EXO-SUMMARY env=1 name=fuzz1 status=exited code=0 cpu_ticks=1 overruns=0",
            "EXO-INVARIANTS frames_at_boot=1 frames_at_end=1 ok=true",
        ];
        assert_eq!(
            judge_fuzz_run(&outcome(Some(Verdict::Success), &good), 1),
            Ok(FuzzReport { calls: 10, errors: 4, killed: vec![] })
        );
        assert!(judge_fuzz_run(&outcome(None, &good), 1).unwrap_err().contains("timeout"));
        let broken = [good[0], good[1], good[2], "EXO-INVARIANTS frames_at_boot=1 frames_at_end=0 ok=false"];
        assert!(judge_fuzz_run(&outcome(Some(Verdict::Success), &broken), 1)
            .unwrap_err()
            .contains("invariants broken"));
        let panic = ["[kernel] KERNEL PANIC: oops", "EXO-END verdict=failure"];
        assert!(judge_fuzz_run(&outcome(Some(Verdict::Failure), &panic), 1).unwrap_err().contains("oops"));
        let failed = [good[0], "[fuzz1] fuzz: FAIL step=9 a stale or forged key was accepted", good[2], good[3]];
        assert!(judge_fuzz_run(&outcome(Some(Verdict::Success), &failed), 1).unwrap_err().contains("stale"));
        let killed = [
            good[0],
            "EXO-SUMMARY env=1 name=fuzz1 status=killed cpu_ticks=1 overruns=0 reason=\"upcall stack not writable\"",
            good[3],
        ];
        let report = judge_fuzz_run(&outcome(Some(Verdict::Success), &killed), 1).unwrap();
        assert_eq!(report.killed.len(), 1);
    }
}
