//! The TLB-model plugin (`xtask/tlb-plugin`, library `libexotlb.so`) from
//! the host tool's side: build it where it can be built, the QEMU
//! arguments that load it, and its report read back per marker tag.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The plugin's cargo package.
pub const PACKAGE: &str = "exotlb";

/// Where cargo puts the plugin (host target, release profile).
pub fn plugin_path() -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| crate::root().join("target"));
    target.join("release").join(format!("lib{PACKAGE}.so"))
}

/// Does this QEMU take `-plugin` (built with plugin support)?
pub fn qemu_has_plugins() -> bool {
    Command::new(crate::qemu_binary())
        .arg("-help")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim_start().starts_with("-plugin")))
}

/// Build the plugin; the library's path, or why it cannot be had.
/// `EXO_TLB_MODEL=off` turns it off (the bench then runs as where it
/// cannot be built).
pub fn build_plugin() -> Result<PathBuf, String> {
    if std::env::var("EXO_TLB_MODEL").is_ok_and(|v| v == "off") {
        return Err("turned off by EXO_TLB_MODEL=off".into());
    }
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        return Err("the plugin is built for x86-64 Linux hosts only".into());
    }
    if Command::new("cc").arg("--version").output().map(|o| !o.status.success()).unwrap_or(true) {
        return Err("no C toolchain (`cc`) to link the plugin".into());
    }
    if !qemu_has_plugins() {
        return Err(format!("{} was built without TCG plugin support (-plugin)", crate::qemu_binary()));
    }
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(crate::root())
        .args(["build", "--release", "--quiet", "-p", PACKAGE])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building {PACKAGE} failed ({status})"));
    }
    let path = plugin_path();
    if path.exists() {
        Ok(path)
    } else {
        Err(format!("{} missing after the build", path.display()))
    }
}

/// QEMU arguments that load `plugin`, writing its report to `out` at exit,
/// with `global` (`upper` or `none`) as its rule for global pages.
pub fn qemu_args(plugin: &Path, out: &Path, global: &str) -> Vec<String> {
    vec!["-plugin".into(), format!("{},out={},global={global}", plugin.display(), out.display())]
}

/// One tag's sums over its regions, as the plugin reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Region {
    pub count: u64,
    pub insns: u64,
    pub l1i_miss: u64,
    pub l1d_miss: u64,
    pub stlb_hit: u64,
    pub walks: u64,
    pub cycles: u64,
    pub pcid_l1i_miss: u64,
    pub pcid_l1d_miss: u64,
    pub pcid_walks: u64,
    pub pcid_cycles: u64,
}

/// The plugin's report: its `exotlb config` line and the regions by tag.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub config: String,
    pub regions: BTreeMap<u16, Region>,
}

/// Read the plugin's report text (unknown lines and fields are skipped).
pub fn parse_report(text: &str) -> Report {
    let mut report = Report::default();
    for line in text.lines() {
        if let Some(config) = line.strip_prefix("exotlb config ") {
            report.config = config.trim().to_string();
        }
        let Some(fields) = line.strip_prefix("exotlb region ") else { continue };
        let mut tag = None;
        let mut r = Region::default();
        for (key, value) in fields.split_whitespace().filter_map(|f| f.split_once('=')) {
            let Ok(n) = value.parse::<u64>() else { continue };
            match key {
                "tag" => tag = u16::try_from(n).ok(),
                "count" => r.count = n,
                "insns" => r.insns = n,
                "l1i_miss" => r.l1i_miss = n,
                "l1d_miss" => r.l1d_miss = n,
                "stlb_hit" => r.stlb_hit = n,
                "walks" => r.walks = n,
                "cycles" => r.cycles = n,
                "pcid_l1i_miss" => r.pcid_l1i_miss = n,
                "pcid_l1d_miss" => r.pcid_l1d_miss = n,
                "pcid_walks" => r.pcid_walks = n,
                "pcid_cycles" => r.pcid_cycles = n,
                _ => {}
            }
        }
        if let (Some(tag), true) = (tag, r.count > 0) {
            report.regions.insert(tag, r);
        }
    }
    report
}

/// Per-operation means of a region, as one bench field:
/// `insns:N;l1i:N;l1d:N;stlb_hit:N;walks:N;cycles:N[;pcid_walks:N;pcid_cycles:N]`
/// (the PCID what-if only `with_pcid`).
pub fn per_op_field(r: &Region, with_pcid: bool) -> String {
    let per = |x: u64| {
        let mean = x as f64 / r.count.max(1) as f64;
        if mean >= 100.0 {
            format!("{mean:.0}")
        } else {
            format!("{mean:.1}")
        }
    };
    let mut field = format!(
        "insns:{};l1i:{};l1d:{};stlb_hit:{};walks:{};cycles:{}",
        per(r.insns),
        per(r.l1i_miss),
        per(r.l1d_miss),
        per(r.stlb_hit),
        per(r.walks),
        per(r.cycles)
    );
    if with_pcid {
        field.push_str(&format!(";pcid_walks:{};pcid_cycles:{}", per(r.pcid_walks), per(r.pcid_cycles)));
    }
    field
}

/// The value of `key` in a `per_op_field` text.
pub fn field_value(field: &str, key: &str) -> Option<f64> {
    field.split(';').filter_map(|kv| kv.split_once(':')).find(|(k, _)| *k == key).and_then(|(_, v)| v.parse().ok())
}

/// Print the model's figures of the bench operations in `marked`
/// (operation, `per_op_field` text): per operation, means over its marked runs.
pub fn print_table(marked: &[(String, String)], config: &str) {
    if marked.is_empty() {
        return;
    }
    println!();
    println!("TLB model ({config}); per operation, means over its marked runs; walks = STLB (L2) misses;");
    println!("cycles = insns x 1 + L1 misses x 7 + walks x 30; 'PCID what-if' = the same run with entries tagged by address space instead of flushed at CR3 writes (modelled)");
    println!(
        "{:<34} {:>10} {:>8} {:>8} {:>9} {:>8} {:>11}  {:>11} {:>11}",
        "operation", "insns", "L1i miss", "L1d miss", "STLB hit", "walks", "cycles", "PCID walks", "PCID cycles"
    );
    println!("{}", "-".repeat(120));
    for (op, field) in marked {
        let v = |key: &str| field_value(field, key).map_or("-".to_string(), |x| format!("{x}"));
        println!(
            "{:<34} {:>10} {:>8} {:>8} {:>9} {:>8} {:>11}  {:>11} {:>11}",
            op,
            v("insns"),
            v("l1i"),
            v("l1d"),
            v("stlb_hit"),
            v("walks"),
            v("cycles"),
            v("pcid_walks"),
            v("pcid_cycles")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "exotlb config cpu=skylake l1i=128x8 l1d=64x4 stlb=1536x12 page=4k global=upper cost_insn=1 cost_l1_miss=7 cost_walk=30\n\
        exotlb region tag=1025 count=201 insns=357981 l1i_miss=603 l1d_miss=1609 stlb_hit=1207 walks=1005 cycles=403615 pcid_l1i_miss=0 pcid_l1d_miss=1207 pcid_walks=0 pcid_cycles=366430\n\
        exotlb region tag=99999 count=1 insns=1\n\
        exotlb total insns=208699187 walks=133051\n";

    #[test]
    fn reads_regions_by_tag_and_gives_per_op_means() {
        let report = parse_report(REPORT);
        assert!(report.config.starts_with("cpu=skylake"));
        // tag 99999 does not fit a u16: skipped.
        assert_eq!(report.regions.len(), 1);
        let r = report.regions[&1025];
        assert_eq!((r.count, r.walks, r.pcid_cycles), (201, 1005, 366430));
        let field = per_op_field(&r, true);
        assert_eq!(field_value(&field, "insns"), Some(1781.0));
        assert_eq!(field_value(&field, "walks"), Some(5.0));
        assert_eq!(field_value(&field, "l1i"), Some(3.0));
        assert_eq!(field_value(&field, "pcid_cycles"), Some(1823.0));
        assert_eq!(field_value(&per_op_field(&r, false), "pcid_cycles"), None);
    }

    #[test]
    fn the_c_marker_header_matches_the_abi() {
        let header = std::fs::read_to_string(crate::root().join("xtask/linux/exo_marker.h")).unwrap();
        let magic = format!("0x{:02x}", shared_abi::marker::MARKER_MAGIC);
        assert!(header.contains(&magic), "exo_marker.h must use the magic byte {magic}");
        assert!(header.contains(".byte 0x0f, 0x1f, 0x84, 0x00"));
        for (name, op) in [("EXO_MARKER_BEGIN", 1), ("EXO_MARKER_END", 2)] {
            assert!(header.contains(&format!("#define {name} {op}")), "{name} must be {op}");
        }
    }
}
