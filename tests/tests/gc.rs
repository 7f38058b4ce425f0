//! libos-gc's generational collector in QEMU: GCBench under both write
//! barriers (the MMU's dirty bits and card marking) with the live set
//! checked after every collection, and GCBench under memory pressure,
//! answering the kernel by collecting and shrinking its nursery.

use tests::*;

/// The value of `key` in `text`'s "key value" or "key=value" words.
fn after<'a>(line: &'a str, key: &str) -> &'a str {
    let rest = &line[line.find(key).unwrap_or_else(|| panic!("no `{key}` in `{line}`")) + key.len()..];
    rest.trim_start_matches([' ', '=']).split([' ', ',']).next().unwrap()
}

fn line<'a>(outcome: &'a xtask::Outcome, env: &str, prefix: &str) -> &'a str {
    outcome.env_lines(env).find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("{env} printed no `{prefix}` line"))
}

#[test]
fn both_barriers_keep_exactly_the_live_set_and_agree() {
    let outcome = boot_deterministic("gc_barriers", 240);
    assert_success(&outcome);
    let mut live_sets = Vec::new();
    for env in ["gc_dirty", "gc_cards"] {
        assert_exited(&outcome, env, 0);
        assert!(outcome.env_lines(env).any(|l| l == "done"), "{env} did not finish");
        // Every fresh object whose only reference was stored into an old
        // page came through a minor collection intact.
        let survivors = line(&outcome, env, "gcbench: ");
        assert!(
            outcome.env_lines(env).any(|l| l.starts_with("gcbench: 64 old-page-only objects survived")),
            "{env}: {survivors}"
        );
        // Live set checked after every collection against the shadow count.
        let checks: u64 = after(line(&outcome, env, "gcbench: 64 old-page-only"), "intact;").parse().unwrap();
        let stats = line(&outcome, env, "gcbench: barrier ");
        let minors: u64 = after(stats, "(").parse().unwrap();
        let majors: u64 = after(stats, "minor,").parse().unwrap();
        assert!(minors > 20 && majors > 0, "{env}: {stats}");
        assert_eq!(checks, minors + majors + 1, "{env}: a collection went unchecked: {stats}");
        let live = line(&outcome, env, "gcbench: live objects ");
        // The long-lived tree (depth 8), the array, 64 fresh objects and their children.
        assert_eq!(after(live, "live objects"), "640", "{env}: {live}");
        live_sets.push((after(live, "checksum").to_string(), after(live, "allocated").to_string()));
    }
    assert_eq!(live_sets[0], live_sets[1], "the barriers disagree on the live set");
    // The dirty-bit barrier asked the MMU and scanned only written pages,
    // with the batched call: one query per minor collection to find the
    // written pages and at most one more to clear its own writes (not one
    // per old page). The card barrier never asked.
    let dirty = line(&outcome, "gc_dirty", "gcbench: barrier dirty-bits");
    let queries: u64 = after(dirty, "dirty-bit queries").parse().unwrap();
    let queried: u64 = after(dirty, "queried").parse().unwrap();
    let scanned: u64 = after(dirty, "scanned").parse().unwrap();
    let minors: u64 = after(dirty, "(").parse().unwrap();
    assert!(queries >= minors && queries <= 2 * minors, "{dirty}");
    assert!(queried > 4 * queries, "each query should cover many pages: {dirty}");
    assert!(scanned > 0 && scanned * 4 < queried, "{dirty}");
    let check = line(&outcome, "gc_dirty", "gc: dirty-bit check");
    assert!(check.starts_with("gc: dirty-bit check ok") && check.contains("map_query_range"), "{check}");
    let cards = line(&outcome, "gc_cards", "gcbench: barrier cards");
    assert_eq!(after(cards, "queried"), "0", "{cards}");
    assert_ne!(after(cards, "cards scanned"), "0", "{cards}");
    assert_eq!(stat(&outcome, "frames_at_end"), stat(&outcome, "frames_at_boot"));
}

#[test]
fn gcbench_under_pressure_collects_and_shrinks_its_nursery() {
    let outcome = boot_deterministic("gc_pressure", 240);
    assert_success(&outcome);
    let answers: Vec<&str> = outcome.env_lines("gc").filter(|l| l.starts_with("revocation: asked for ")).collect();
    assert!(!answers.is_empty(), "gc was never asked for frames");
    let mut nursery_returned = 0;
    for answer in &answers {
        assert!(answer.ends_with("(still owed 0)"), "gc did not pay in full: {answer}");
        nursery_returned += after(answer, "old,").parse::<u64>().unwrap();
    }
    assert!(nursery_returned > 0, "the nursery never shrank: {answers:?}");
    assert!(!outcome.lines.iter().any(|l| l.contains("abort protocol") || l.contains("by force")));
    // GCBench went on in the smaller heap with its live set whole.
    let live = line(&outcome, "gc", "gcbench: live objects ");
    assert_eq!(after(live, "live objects"), "1088", "{live}");
    assert!(outcome.env_lines("claim").any(|l| l.starts_with("claim: got my quota of 24 frames")));
    for name in ["gc", "claim"] {
        assert_exited(&outcome, name, 0);
    }
    assert_eq!(stat(&outcome, "frames_at_end"), stat(&outcome, "frames_at_boot"));
}
