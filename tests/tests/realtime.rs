//! libos-rt in QEMU: EDF meets a task set rate-monotonic cannot, rt keeps
//! its deadlines beside a CPU hog in the slot it does not own, its work
//! loop burns budgets to within 1%, and its overhead-aware admission is
//! honest: every generated task set it admits meets every deadline. All
//! under `-icount shift=0,sleep=off`, so time is virtual and exact.

use tests::*;

/// The `rt: scheduler=...` summary line, as `(key, value)` pairs.
fn summary(outcome: &Outcome) -> Vec<(String, String)> {
    fields(line(outcome, "rt: scheduler="))
}

/// The first rt line starting with `prefix`.
fn line<'a>(outcome: &'a Outcome, prefix: &str) -> &'a str {
    outcome.env_lines("rt").find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no `{prefix}` line"))
}

/// The `key=value` words of a line, as `(key, value)` pairs (other words skipped).
fn fields(line: &str) -> Vec<(String, String)> {
    line.split_whitespace()
        .filter_map(|word| word.split_once('='))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// A signed percentage with three decimals (`-0.012%`, `+0.061%`), in parts per million.
fn percent_ppm(text: &str) -> i64 {
    let text = text.trim_end_matches([',', ';', ')']).trim_end_matches('%');
    let negative = text.starts_with('-');
    let (whole, thousandths) = text.trim_start_matches(['+', '-']).split_once('.').expect("a percentage");
    let ppm =
        whole.parse::<i64>().expect("whole percent") * 10_000 + thousandths.parse::<i64>().expect("decimals") * 10;
    if negative {
        -ppm
    } else {
        ppm
    }
}

/// The work loop burned budgets to within 1%: at its check after
/// calibration, and over the whole run (net of upcalls and other slots).
fn check_budgets_burned_within_one_percent(outcome: &Outcome) {
    let calibration = line(outcome, "rt: calibration: ");
    let check = fields(calibration);
    let error_ppm = percent_ppm(field(&check, "error"));
    assert!(error_ppm.abs() <= 10_000, "calibration check off by more than 1%: {calibration}");
    let time = line(outcome, "rt: time work_us=");
    let run = fields(time);
    let error_ppm = percent_ppm(field(&run, "error"));
    assert!(error_ppm.abs() <= 10_000, "work off its budget by more than 1%: {time}");
    assert!(number(&run, "work_us") > 0, "{time}");
}

fn field<'a>(summary: &'a [(String, String)], key: &str) -> &'a str {
    summary.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("no {key} in {summary:?}"))
}

fn number(summary: &[(String, String)], key: &str) -> u64 {
    field(summary, key).parse().unwrap_or_else(|_| panic!("{key} is not a number in {summary:?}"))
}

/// Checks every rt run shares: success, exit 0, pinned memory, `done` last.
fn check_rt_run(outcome: &Outcome) {
    assert_success(outcome);
    assert_exited(outcome, "rt", 0);
    let lines: Vec<&str> = outcome.env_lines("rt").collect();
    assert!(lines.iter().any(|l| l.starts_with("rt: memory pinned: 1 pages guaranteed")), "{lines:?}");
    assert_eq!(lines.last(), Some(&"done"));
    assert_eq!(stat(outcome, "frames_at_end"), stat(outcome, "frames_at_boot"), "pinned frames not reclaimed");
}

#[test]
fn edf_meets_every_deadline_of_a_set_above_the_rm_bound() {
    let outcome = boot_deterministic("rt_edf", 120);
    check_rt_run(&outcome);
    let summary = summary(&outcome);
    assert_eq!(field(&summary, "scheduler"), "edf");
    assert_eq!(number(&summary, "utilisation_ppm"), 971_429);
    // 350 ms of 5 ms and 7 ms periods.
    assert_eq!(number(&summary, "jobs"), 70 + 50);
    assert_eq!(number(&summary, "misses"), 0, "EDF is optimal below full load");
}

#[test]
fn rate_monotonic_misses_deadlines_of_the_same_set() {
    let outcome = boot_deterministic("rt_rm", 120);
    check_rt_run(&outcome);
    let summary = summary(&outcome);
    assert_eq!(field(&summary, "scheduler"), "rm");
    assert_eq!(number(&summary, "jobs"), 70 + 50);
    assert!(number(&summary, "misses") > 0, "U ~ 0.971 is above the RM bound and fails its exact test");
    // Only the longer-period (lower-priority) task misses.
    let task0 = outcome.env_lines("rt").find(|l| l.starts_with("rt: task 0 ")).expect("task 0 line");
    assert!(task0.contains(" misses=0 "), "{task0}");
}

#[test]
fn rt_meets_its_deadlines_beside_a_cpu_hog() {
    let outcome = boot_deterministic("rt_hog", 120);
    check_rt_run(&outcome);
    check_budgets_burned_within_one_percent(&outcome);
    let summary = summary(&outcome);
    assert_eq!(number(&summary, "jobs"), 20 + 10);
    assert_eq!(number(&summary, "misses"), 0);
    assert_eq!(field(&summary, "admitted"), "yes", "admitted on its 3 slots of 4");
    // The hog outlives rt's run, so every fourth slot (50 in 200 ms) was
    // the hog's: rt yielded at each, within the save bound.
    let slot_ends = outcome.env_lines("rt").find(|l| l.starts_with("rt: slot ends: ")).expect("slot ends line");
    let yielded: u64 = slot_ends
        .split_whitespace()
        .find_map(|f| f.strip_prefix("yielded=")?.parse().ok())
        .unwrap_or_else(|| panic!("no yielded= in {slot_ends}"));
    assert!(yielded >= 45, "the hog did not hold its slot through rt's run: {slot_ends}");
    assert!(outcome.summary("rt").is_some_and(|s| s.contains(" overruns=0")));
    assert_exited(&outcome, "unix", 0);
    assert!(outcome.env_lines("unix").any(|l| l == "done"));
}

#[test]
fn admission_reports_its_margin_and_budgets_are_burned_within_one_percent() {
    let outcome = boot_deterministic("rt_edf", 120);
    check_rt_run(&outcome);
    check_budgets_burned_within_one_percent(&outcome);
    // Measured at boot: the slot-end path and a decision cost something.
    let measured = fields(line(&outcome, "rt: overheads measured: "));
    assert!(number(&measured, "slot_end_tick") > 0);
    assert!(number(&measured, "null_syscall") > 0);
    let admission = fields(line(&outcome, "rt: admission "));
    assert_eq!(field(&admission, "test"), "processor-demand");
    assert_eq!(field(&admission, "verdict"), "admitted");
    assert!(number(&admission, "margin_us") > 0);
    assert!(number(&admission, "inflated_ppm") > number(&admission, "utilisation_ppm"), "overheads inflate the set");
    // The decision cost seen in the run stays within what was charged.
    let run = fields(line(&outcome, "rt: overheads in the run: "));
    let charged = line(&outcome, "rt: overheads in the run: ");
    let charged: u64 =
        charged.split("(charged ").nth(1).and_then(|rest| rest.trim_end_matches(')').parse().ok()).unwrap();
    assert!(number(&run, "decision_max") <= charged, "{run:?} charged {charged}");
    assert_eq!(field(&summary(&outcome), "admitted"), "yes");
    check_no_faults(&outcome);
}

/// rt runs alone and its loop keeps its promise of no page faults (nor
/// any other exception): nothing but slot ends took the processor from it,
/// and those its measurements leave out.
fn check_no_faults(outcome: &Outcome) {
    assert_eq!(stat(outcome, "page_faults"), 0, "the real-time loop took a page fault");
    assert_eq!(stat(outcome, "exceptions"), 0, "the real-time loop took an exception");
    assert_eq!(stat(outcome, "context_switches"), 0, "rt shared the processor");
}

#[test]
fn response_time_analysis_refuses_the_set_rm_misses_and_says_it_runs_best_effort() {
    let outcome = boot_deterministic("rt_rm", 120);
    check_rt_run(&outcome);
    let admission = fields(line(&outcome, "rt: admission "));
    assert_eq!(field(&admission, "test"), "response-time");
    assert_eq!(field(&admission, "verdict"), "refused");
    assert_eq!(number(&admission, "worst_task"), 1, "the longer-period task");
    assert!(field(&admission, "margin_us").starts_with('-'));
    assert!(outcome.env_lines("rt").any(|l| l.contains("running best-effort, deadlines are NOT guaranteed")));
    let summary = summary(&outcome);
    assert_eq!(field(&summary, "admitted"), "no");
    assert!(number(&summary, "misses") > 0, "overload still runs, misses counted");
}

/// The property run's checks: every set reported, every admitted set
/// met every deadline and burned its budgets to within 1%; some sets
/// admitted, the refused ones counted. Returns (admitted, refused).
fn check_property_run(outcome: &Outcome, sets: u64) -> (u64, u64) {
    assert_success(outcome);
    assert_exited(outcome, "rt", 0);
    let lines: Vec<&str> = outcome.env_lines("rt").collect();
    assert_eq!(lines.last(), Some(&"done"));
    let set_lines: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with("rt: set ")).collect();
    assert_eq!(set_lines.len() as u64, sets, "one line per set");
    let (mut admitted, mut refused) = (0, 0);
    for set in &set_lines {
        let set_fields = fields(set);
        let utilisation_ppm = number(&set_fields, "utilisation_ppm");
        assert!((490_000..=1_000_000).contains(&utilisation_ppm), "{set}");
        match field(&set_fields, "verdict") {
            "admitted" => {
                admitted += 1;
                assert!(number(&set_fields, "jobs") > 0, "{set}");
                assert_eq!(number(&set_fields, "misses"), 0, "an admitted set missed a deadline: {set}");
                // A margin that parses as unsigned is not negative.
                number(&set_fields, "margin_us");
                let work_error: i64 = field(&set_fields, "work_error_ppm").parse().unwrap();
                assert!(work_error.abs() <= 10_000, "budget burned off by more than 1%: {set}");
                assert!(number(&set_fields, "decision_max") <= number(&set_fields, "charged"), "{set}");
            }
            "refused" => {
                refused += 1;
                // Run as best effort only when asked, and said so.
                assert_eq!(set.contains(" jobs="), set.contains(" best-effort "), "{set}");
            }
            other => panic!("verdict {other} in {set}"),
        }
    }
    for scheduler in ["edf", "rm"] {
        assert!(set_lines.iter().any(|l| l.contains(&format!(" scheduler={scheduler} "))), "no {scheduler} set");
    }
    let totals = fields(line(outcome, "rt: property sets="));
    let totals = &totals;
    assert_eq!(number(totals, "sets"), sets);
    assert_eq!((number(totals, "admitted"), number(totals, "refused")), (admitted, refused));
    assert_eq!(number(totals, "admitted_with_misses"), 0);
    assert_eq!(number(totals, "misses"), 0);
    assert!(admitted > 0, "nothing admitted: the property is vacuous");
    println!("property: {admitted} admitted, {refused} refused of {sets}");
    (admitted, refused)
}

#[test]
fn every_generated_set_admitted_on_a_whole_processor_meets_every_deadline() {
    let outcome = boot_deterministic("rt_admission", 120);
    let (admitted, _refused) = check_property_run(&outcome, 20);
    // Owning the processor, most sets pass, up to high utilisation.
    assert!(admitted >= 10, "only {admitted} of 20 admitted");
    let high = outcome
        .env_lines("rt")
        .filter(|l| l.starts_with("rt: set ") && l.contains("verdict=admitted"))
        .any(|l| number(&fields(l), "utilisation_ppm") >= 900_000);
    assert!(high, "no set at U >= 0.9 admitted");
    check_no_faults(&outcome);
}

#[test]
fn every_generated_set_admitted_beside_a_hog_meets_every_deadline() {
    let outcome = boot_deterministic("rt_admission_shared", 120);
    let (_admitted, refused) = check_property_run(&outcome, 16);
    // A quarter of the processor is the hog's: the supply says so, and
    // sets above what is left are refused.
    let supply = fields(line(&outcome, "rt: supply "));
    assert_eq!(field(&supply, "slots"), "3/4");
    assert!(number(&supply, "share_ppm") < 750_000, "{supply:?}");
    assert!(refused > 0);
    let totals = fields(line(&outcome, "rt: property sets="));
    // The hog held its slot: rt yielded to it at its slot ends.
    assert!(number(&totals, "yielded") > 100, "{totals:?}");
    // The refused sets ran as best effort, and some missed: the analysis
    // refused what the processor could not carry.
    assert_eq!(number(&totals, "refused_run"), refused);
    assert!(number(&totals, "refused_with_misses") > 0, "{totals:?}");
    assert_exited(&outcome, "unix", 0);
}
