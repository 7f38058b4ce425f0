//! The bench report: `bench.csv` drawn as SVG charts (with `plotters`'
//! SVG backend, text as SVG `<text>`, no font files) and a small static
//! `bench.html` that shows them above the table of figures.
//!
//! - `bench-vs-linux.svg`: exokernel vs Linux guest, one pair of bars per
//!   operation that has a Linux counterpart, log scale.
//! - `bench-switch.svg`: context switch + touching W pages against W, one
//!   line per TLB policy and one for Linux, log-log.
//! - `bench-kernel.svg`: the exokernel's own operations, log scale, with
//!   their targets marked where a numeric target exists.
//! - `bench-tlb.svg`: the switch rows' modelled cycles (the TLB-model
//!   plugin's instructions plus TLB-miss costs) against W, one line per
//!   policy and one for the modelled PCID what-if.
//!
//! It reads the CSV rather than the bench's rows so that
//! `cargo xtask bench-report` can redraw an earlier run without QEMU.

use anyhow::{anyhow, Context, Result};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One line of `bench.csv` (op,unit,median,min,max,floor,target,events,linux,tlb).
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub op: String,
    pub unit: String,
    pub median: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub target: String,
    /// The median of the Linux counterpart, where the bench had one.
    pub linux: Option<f64>,
    /// The TLB model's per-op figures (`insns:N;l1i:N;...`), if it ran.
    pub tlb: Option<String>,
}

impl Row {
    fn is_linux(&self) -> bool {
        self.op.starts_with("linux_")
    }

    /// Exo median / Linux median.
    fn ratio(&self) -> Option<f64> {
        match (self.median, self.linux) {
            (Some(exo), Some(linux)) if linux > 0.0 => Some(exo / linux),
            _ => None,
        }
    }

    /// The target as a number: `40` as is, `linux/2` as half the Linux median.
    fn numeric_target(&self) -> Option<f64> {
        let text = self.target.trim().trim_start_matches("<=").trim_start_matches('<').trim();
        if let Some(divisor) = text.strip_prefix("linux/") {
            let divisor: f64 = divisor.trim().parse().ok()?;
            return self.linux.filter(|_| divisor > 0.0).map(|linux| linux / divisor);
        }
        text.parse().ok().filter(|t: &f64| *t > 0.0)
    }
}

/// The rows of a `bench.csv` text (the header and malformed lines skipped).
pub fn parse_csv(text: &str) -> Vec<Row> {
    let number = |s: &str| s.trim().parse::<f64>().ok();
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with("op,"))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let field = |i: usize| fields.get(i).copied().unwrap_or("").trim();
            if fields.len() < 3 || field(0).is_empty() {
                return None;
            }
            Some(Row {
                op: field(0).to_string(),
                unit: field(1).to_string(),
                median: number(field(2)),
                min: number(field(3)),
                max: number(field(4)),
                target: field(6).to_string(),
                linux: number(field(8)),
                tlb: Some(field(9).to_string()).filter(|t| !t.is_empty()),
            })
        })
        .collect()
}

/// Draw the report of the bench CSV at `csv` into `dir`: the charts that
/// have data, then `bench.html`. Returns the files written, `bench.html`
/// last.
pub fn write_report(csv: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(csv).with_context(|| format!("reading {}", csv.display()))?;
    let rows = parse_csv(&text);
    if rows.is_empty() {
        return Err(anyhow!("{} has no rows", csv.display()));
    }
    std::fs::create_dir_all(dir)?;
    // A plotting bug must not take the bench down with it.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| draw_all(&rows, dir)))
        .map_err(|_| anyhow!("the chart drawing panicked"))?
}

fn draw_all(rows: &[Row], dir: &Path) -> Result<Vec<PathBuf>> {
    let unit = unit_of(rows);
    let charts: [(&str, Option<String>); 4] = [
        ("bench-vs-linux.svg", vs_linux_svg(rows, unit)?),
        ("bench-switch.svg", switch_svg(rows, unit)?),
        ("bench-kernel.svg", kernel_svg(rows, unit)?),
        ("bench-tlb.svg", tlb_svg(rows)?),
    ];
    let mut written = Vec::new();
    let mut shown = Vec::new();
    for (name, svg) in charts {
        if let Some(svg) = svg {
            let path = dir.join(name);
            std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
            written.push(path);
            shown.push(name);
        }
    }
    let html = dir.join("bench.html");
    std::fs::write(&html, html_page(rows, unit, &shown)).with_context(|| format!("writing {}", html.display()))?;
    written.push(html);
    Ok(written)
}

/// The counting unit of the run: `cycles` for a KVM run, else `instructions`.
fn unit_of(rows: &[Row]) -> &'static str {
    if rows.iter().any(|r| r.unit == "cycles") {
        "cycles"
    } else {
        "instructions"
    }
}

fn unit_words(unit: &str) -> &'static str {
    if unit == "cycles" {
        "TSC cycles (KVM)"
    } else {
        "guest instructions"
    }
}

const EXO: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const LINUX: RGBColor = RGBColor(0xe0, 0x6c, 0x00);
const MET: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);
const OVER: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const NO_TARGET: RGBColor = RGBColor(0x7f, 0x8c, 0x9a);
const POLICY_COLORS: [RGBColor; 4] =
    [RGBColor(0x1f, 0x77, 0xb4), RGBColor(0x2c, 0xa0, 0x2c), RGBColor(0x94, 0x67, 0xbd), RGBColor(0x8c, 0x56, 0x4b)];
const FONT: &str = "sans-serif";

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Draw into an SVG string of `size` with `draw`.
fn render(size: (u32, u32), draw: impl FnOnce(&Area) -> Result<()>) -> Result<String> {
    let mut svg = String::new();
    {
        let area = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        area.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        draw(&area)?;
        area.present().map_err(|e| anyhow!("{e}"))?;
    }
    Ok(svg)
}

/// A log axis range from the decade below the smallest of `values` to
/// `headroom` times the largest, and its key points: decades bold, 2x and
/// 5x light.
fn log_axis(values: impl Iterator<Item = f64>, headroom: f64) -> (f64, f64, Vec<f64>, Vec<f64>) {
    let (lo, hi) = values.filter(|v| *v > 0.0).fold((f64::MAX, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let lo = if lo == f64::MAX { 1.0 } else { lo };
    let lo = 10f64.powf(lo.log10().floor()).max(1.0);
    let hi = (hi * headroom).max(lo * 10.0);
    let mut bold = Vec::new();
    let mut light = Vec::new();
    let mut decade = lo;
    while decade <= hi * 1.0001 {
        bold.push(decade);
        for m in [2.0, 5.0] {
            if decade * m < hi {
                light.push(decade * m);
            }
        }
        decade *= 10.0;
    }
    (lo, hi, bold, light)
}

/// `1`, `10`, `100`, `1k`, `10k`, `100k`, `1M`, ...
fn short_number(v: f64) -> String {
    let v = v.round();
    if v >= 1e6 && (v / 1e6).fract() == 0.0 {
        format!("{}M", v / 1e6)
    } else if v >= 1e3 && (v / 1e3).fract() == 0.0 {
        format!("{}k", v / 1e3)
    } else {
        format!("{v}")
    }
}

/// Pixels to leave for the widest of `labels` at `px` font size (the SVG
/// backend has no font metrics: an estimate).
fn label_width(labels: impl Iterator<Item = usize>, px: u32) -> u32 {
    labels.max().unwrap_or(8) as u32 * px * 6 / 10 + 16
}

/// The category axis of a bar chart: `n` bands centred on 0, 1, ..., n-1,
/// one tick (and label) per band.
struct Bands(usize);

impl Ranged for Bands {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let share = (value + 0.5) / self.0.max(1) as f64;
        limit.0 + (f64::from(limit.1 - limit.0) * share).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            (0..self.0).map(|i| i as f64).collect()
        }
    }

    fn range(&self) -> Range<f64> {
        -0.5..self.0 as f64 - 0.5
    }
}

/// One category of a horizontal bar chart: its label and bars
/// (value, colour) drawn from top to bottom, plus a target mark.
struct Group {
    label: String,
    bars: Vec<(f64, RGBColor)>,
    target: Option<f64>,
}

/// Horizontal bars on a log axis, one band per group, top to bottom.
fn hbar_chart(title: &str, x_desc: &str, groups: &[Group], legend: &[(&str, RGBColor, bool)]) -> Result<String> {
    let n = groups.len();
    let per_group = groups.iter().map(|g| g.bars.len()).max().unwrap_or(1).max(1);
    let band = 14 * per_group as u32 + 10;
    let height = 130 + band * n as u32;
    let label_px = 13;
    let y_area = label_width(groups.iter().map(|g| g.label.len()), label_px);
    let width = 860 + y_area;
    let values = groups.iter().flat_map(|g| g.bars.iter().map(|b| b.0).chain(g.target));
    let (lo, hi, bold, light) = log_axis(values, 4.0);
    render((width, height), |area| {
        let mut chart = ChartBuilder::on(area)
            .caption(title, (FONT, 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(y_area)
            .build_cartesian_2d((lo..hi).log_scale().with_key_points(bold).with_light_points(light), Bands(n))
            .map_err(|e| anyhow!("{e}"))?;
        let label_of = |y: &f64| {
            let i = y.round();
            if i < 0.0 || i as usize >= n {
                String::new()
            } else {
                groups[n - 1 - i as usize].label.clone()
            }
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc(x_desc)
            .x_label_formatter(&|v| short_number(*v))
            .y_label_formatter(&label_of)
            .label_style((FONT, label_px))
            .axis_desc_style((FONT, 14))
            .light_line_style(RGBColor(0xee, 0xee, 0xee))
            .bold_line_style(RGBColor(0xcc, 0xcc, 0xcc))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        let thickness = 0.8 / per_group as f64;
        let value_style = TextStyle::from((FONT, 11).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        for (index, group) in groups.iter().enumerate() {
            let centre = (n - 1 - index) as f64;
            let top = centre + 0.4;
            for (k, (value, color)) in group.bars.iter().enumerate() {
                let y1 = top - thickness * k as f64;
                let y0 = y1 - thickness * 0.9;
                let value = value.max(lo);
                chart
                    .draw_series([Rectangle::new([(lo, y0), (value, y1)], color.filled())])
                    .map_err(|e| anyhow!("{e}"))?;
                // After the bar, or after the target mark where that lies beyond.
                let at = value.max(group.target.unwrap_or(0.0) * 1.08);
                chart
                    .draw_series([Text::new(format!(" {}", value.round()), (at, (y0 + y1) / 2.0), value_style.clone())])
                    .map_err(|e| anyhow!("{e}"))?;
            }
            if let Some(target) = group.target {
                chart
                    .draw_series([PathElement::new(
                        vec![(target, centre - 0.45), (target, centre + 0.45)],
                        BLACK.stroke_width(3),
                    )])
                    .map_err(|e| anyhow!("{e}"))?;
            }
        }
        for &(name, color, is_line) in legend {
            let series = chart.draw_series(std::iter::empty::<Rectangle<(f64, f64)>>()).map_err(|e| anyhow!("{e}"))?;
            series.label(name);
            if is_line {
                series.legend(move |(x, y)| {
                    PathElement::new(vec![(x + 5, y - 7), (x + 5, y + 7)], color.stroke_width(3))
                });
            } else {
                series.legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
            }
        }
        if !legend.is_empty() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font((FONT, 13))
                .background_style(WHITE.mix(0.9))
                .border_style(RGBColor(0xbb, 0xbb, 0xbb))
                .draw()
                .map_err(|e| anyhow!("{e}"))?;
        }
        Ok(())
    })
}

/// The exokernel rows counted in the run's unit.
fn exo_rows<'a>(rows: &'a [Row], unit: &'a str) -> impl Iterator<Item = &'a Row> {
    rows.iter().filter(move |r| !r.is_linux() && r.unit == unit && r.median.is_some())
}

/// Chart a: exokernel vs Linux guest, for every operation with a Linux figure.
fn vs_linux_svg(rows: &[Row], unit: &str) -> Result<Option<String>> {
    let groups: Vec<Group> = exo_rows(rows, unit)
        .filter_map(|r| {
            let ratio = r.ratio()?;
            Some(Group {
                label: format!("{}  ({ratio:.2}x)", r.op),
                bars: vec![(r.median?, EXO), (r.linux?, LINUX)],
                target: None,
            })
        })
        .collect();
    if groups.is_empty() {
        return Ok(None);
    }
    let title = format!("Exokernel vs Linux guest: median {} per operation (log scale)", unit_words(unit));
    let desc = format!("{} per operation (log scale); in brackets: exokernel / Linux", unit_words(unit));
    hbar_chart(&title, &desc, &groups, &[("exokernel", EXO, false), ("Linux guest (counterpart)", LINUX, false)])
        .map(Some)
}

/// Chart c: the exokernel's own operations, coloured by their target.
fn kernel_svg(rows: &[Row], unit: &str) -> Result<Option<String>> {
    let groups: Vec<Group> = exo_rows(rows, unit)
        .map(|r| {
            let median = r.median.unwrap_or(1.0);
            let target = r.numeric_target();
            let color = match target {
                Some(t) if median <= t => MET,
                Some(_) => OVER,
                None => NO_TARGET,
            };
            Group { label: r.op.clone(), bars: vec![(median, color)], target }
        })
        .collect();
    if groups.is_empty() {
        return Ok(None);
    }
    let title = format!("Exokernel operations: median {} (log scale)", unit_words(unit));
    let desc = format!("{} per operation (log scale)", unit_words(unit));
    let legend = [
        ("within target", MET, false),
        ("over target", OVER, false),
        ("no target", NO_TARGET, false),
        ("target", BLACK, true),
    ];
    hbar_chart(&title, &desc, &groups, &legend).map(Some)
}

/// The switch rows: `switch_<policy>_touch_<W>` → (policy, W).
fn switch_point(op: &str) -> Option<(String, f64)> {
    let (policy, w) = op.strip_prefix("switch_")?.rsplit_once("_touch_")?;
    Some((policy.to_string(), w.parse().ok()?))
}

/// A policy's legend text.
fn policy_label(policy: &str) -> String {
    match policy {
        "flush" => "exokernel, flush (CR3 reload)".into(),
        "stlb" => "exokernel, software TLB refill".into(),
        "pcid" => "exokernel, PCID".into(),
        "pcid=flush" => "exokernel, PCID policy (no PCID: ran as flush)".into(),
        other => format!("exokernel, {other}"),
    }
}

/// One line of a chart against W.
struct WLine {
    label: String,
    points: Vec<(f64, f64)>,
    color: RGBColor,
    /// Dashed with hollow markers (a fallback policy, or a what-if).
    dashed: bool,
    /// The Linux guest: thicker, with triangle markers.
    linux: bool,
}

/// A log-log chart of figures against W (pages touched after a switch),
/// one line each, the W axis keyed at the Ws the lines have.
fn w_chart(caption: &str, y_desc: &str, lines: &[WLine]) -> Result<Option<String>> {
    let mut ws: Vec<f64> = lines.iter().filter(|l| !l.linux).flat_map(|l| l.points.iter().map(|q| q.0)).collect();
    ws.sort_by(f64::total_cmp);
    ws.dedup();
    let (Some(&w_lo), Some(&w_hi)) = (ws.first(), ws.last()) else { return Ok(None) };
    let (lo, hi, bold, light) = log_axis(lines.iter().flat_map(|l| l.points.iter().map(|q| q.1)), 1.5);
    render((900, 560), |area| {
        let mut chart = ChartBuilder::on(area)
            .caption(caption, (FONT, 18))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(
                ((w_lo / 1.5)..(w_hi * 1.5)).log_scale().with_key_points(ws.clone()),
                (lo..hi).log_scale().with_key_points(bold).with_light_points(light),
            )
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("W: pages touched after the switch (log scale)")
            .y_desc(y_desc)
            .x_label_formatter(&|v| short_number(*v))
            .y_label_formatter(&|v| short_number(*v))
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .light_line_style(RGBColor(0xee, 0xee, 0xee))
            .bold_line_style(RGBColor(0xcc, 0xcc, 0xcc))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        for line in lines {
            let color = line.color;
            let width = if line.linux { 3 } else { 2 };
            let style = color.stroke_width(width);
            let series = if line.dashed {
                chart
                    .draw_series(DashedLineSeries::new(line.points.clone(), 8, 6, style))
                    .map_err(|e| anyhow!("{e}"))?
            } else {
                chart.draw_series(LineSeries::new(line.points.clone(), style)).map_err(|e| anyhow!("{e}"))?
            };
            series
                .label(line.label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width)));
            if line.linux {
                chart
                    .draw_series(line.points.iter().map(|p| TriangleMarker::new(*p, 6, color.filled())))
                    .map_err(|e| anyhow!("{e}"))?;
            } else if line.dashed {
                chart
                    .draw_series(line.points.iter().map(|p| Circle::new(*p, 7, color.stroke_width(2))))
                    .map_err(|e| anyhow!("{e}"))?;
            } else {
                chart
                    .draw_series(line.points.iter().map(|p| Circle::new(*p, 4, color.filled())))
                    .map_err(|e| anyhow!("{e}"))?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(0xbb, 0xbb, 0xbb))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        Ok(())
    })
    .map(Some)
}

/// Points grouped into named lines, each sorted by W.
fn group_lines(points: impl Iterator<Item = (String, f64, f64)>) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut lines: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for (name, w, value) in points {
        match lines.iter_mut().find(|(p, _)| *p == name) {
            Some((_, points)) => points.push((w, value)),
            None => lines.push((name, vec![(w, value)])),
        }
    }
    for (_, points) in lines.iter_mut() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    lines
}

/// Chart b: switch + touch W pages against W, one line per policy and Linux.
fn switch_svg(rows: &[Row], unit: &str) -> Result<Option<String>> {
    let policies = group_lines(exo_rows(rows, unit).filter_map(|r| {
        let (policy, w) = switch_point(&r.op)?;
        Some((policy, w, r.median.unwrap_or(1.0).max(1.0)))
    }));
    if policies.is_empty() {
        return Ok(None);
    }
    let mut lines: Vec<WLine> = policies
        .into_iter()
        .enumerate()
        .map(|(index, (policy, points))| WLine {
            label: policy_label(&policy),
            // A policy that fell back to another draws dashed over it, with
            // hollow markers, so both stay visible.
            dashed: policy.contains('='),
            points,
            color: POLICY_COLORS[index % POLICY_COLORS.len()],
            linux: false,
        })
        .collect();
    let linux: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| Some((r.op.strip_prefix("linux_switch_touch_w")?.parse().ok()?, r.median?.max(1.0))))
        .collect();
    if !linux.is_empty() {
        lines.push(WLine {
            label: "Linux guest (process switch via pipe)".into(),
            points: linux,
            color: LINUX,
            dashed: false,
            linux: true,
        });
    }
    let words = unit_words(unit);
    w_chart(&format!("Context switch + touching W pages: {words} (log-log)"), &format!("{words} (log scale)"), &lines)
}

/// A TLB-model figure of a row.
fn tlb_value(row: &Row, key: &str) -> Option<f64> {
    xtask::tlb::field_value(row.tlb.as_deref()?, key)
}

/// Chart d: modelled cycles of switch + touch W pages against W, one line
/// per policy, and the PCID what-if of the flush policy's runs.
fn tlb_svg(rows: &[Row]) -> Result<Option<String>> {
    let mut points = Vec::new();
    for r in rows.iter().filter(|r| r.is_linux()) {
        let Some(w) = r.op.strip_prefix("linux_switch_touch_w").and_then(|w| w.parse::<f64>().ok()) else { continue };
        if let Some(cycles) = tlb_value(r, "cycles") {
            points.push(("Linux guest (process switch)".to_string(), w, cycles.max(1.0)));
        }
    }
    for r in rows.iter().filter(|r| !r.is_linux()) {
        let Some((policy, w)) = switch_point(&r.op) else { continue };
        // A policy that fell back to another ran as that one: same figures.
        if policy.contains('=') {
            continue;
        }
        if let Some(cycles) = tlb_value(r, "cycles") {
            points.push((policy_label(&policy), w, cycles.max(1.0)));
        }
        if policy == "flush" {
            if let Some(cycles) = tlb_value(r, "pcid_cycles") {
                points.push(("what-if: flush policy with PCID (modelled)".to_string(), w, cycles.max(1.0)));
            }
        }
    }
    let lines: Vec<WLine> = group_lines(points.into_iter())
        .into_iter()
        .enumerate()
        .map(|(index, (name, points))| WLine {
            color: if name.starts_with("Linux") { LINUX } else { POLICY_COLORS[index % POLICY_COLORS.len()] },
            dashed: name.starts_with("what-if"),
            linux: false,
            label: name,
            points,
        })
        .collect();
    if lines.is_empty() {
        return Ok(None);
    }
    w_chart(
        "Context switch + touching W pages: modelled cycles (TLB model, log-log)",
        "instructions + 7 x L1 TLB misses + 30 x walks (log scale)",
        &lines,
    )
}

/// The TLB model's table in `bench.html`: the rows that carry its figures.
fn tlb_table(rows: &[Row]) -> String {
    let marked: Vec<&Row> = rows.iter().filter(|r| r.tlb.is_some()).collect();
    if marked.is_empty() {
        return String::new();
    }
    let mut html = String::from(
        "<h2>TLB model</h2>\n<p>From the TLB-model QEMU plugin (docs/TLB_MODEL.md): Skylake-sized L1 iTLB (128, 8-way), \
         L1 dTLB (64, 4-way) and STLB (1,536, 12-way); per operation, means over its marked runs. Modelled cycles = \
         instructions + 7 per L1 miss + 30 per walk. The PCID columns are a <em>what-if</em>, modelled: the same runs \
         with entries tagged by address space instead of flushed at each CR3 write.</p>\n<table>\n<tr><th>op</th>\
         <th class=\"n\">insns</th><th class=\"n\">L1i miss</th><th class=\"n\">L1d miss</th><th class=\"n\">STLB hit</th>\
         <th class=\"n\">walks (STLB misses)</th><th class=\"n\">cycles</th><th class=\"n\">PCID walks (what-if)</th>\
         <th class=\"n\">PCID cycles (what-if)</th></tr>\n",
    );
    for r in marked {
        let cells: String = ["insns", "l1i", "l1d", "stlb_hit", "walks", "cycles", "pcid_walks", "pcid_cycles"]
            .iter()
            .map(|key| format!("<td class=\"n\">{}</td>", figure(tlb_value(r, key))))
            .collect();
        html.push_str(&format!("<tr><td>{}</td>{cells}</tr>\n", escape(&r.op)));
    }
    html.push_str("</table>\n");
    html
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn figure(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| if v.fract() == 0.0 { format!("{v}") } else { format!("{v:.1}") })
}

/// `bench.html`: the charts in `shown`, then the tables.
fn html_page(rows: &[Row], unit: &str, shown: &[&str]) -> String {
    let mut page = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Exokernel bench report</title>\n<style>\n\
         body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }\n\
         img { max-width: 100%; display: block; margin: 1.5em 0; border: 1px solid #ddd; }\n\
         table { border-collapse: collapse; font-size: 14px; }\n\
         th, td { padding: 3px 10px; border-bottom: 1px solid #e4e4e4; }\n\
         td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }\n\
         .over { color: #d62728; } .met { color: #2ca02c; }\n\
         </style>\n</head>\n<body>\n<h1>Exokernel bench report</h1>\n",
    );
    page.push_str(&if unit == "cycles" {
        "<p>Figures are TSC cycles on KVM (medians per operation; lower is better).</p>\n".to_string()
    } else {
        "<p>Figures are guest instructions under QEMU <code>-icount shift=0</code> (1 TSC tick = 1 guest \
         instruction; medians per operation; lower is better).</p>\n"
            .to_string()
    });
    for name in shown {
        page.push_str(&format!("<img src=\"{name}\" alt=\"{name}\">\n"));
    }
    page.push_str(
        "<h2>Figures</h2>\n<table>\n<tr><th>op</th><th>unit</th><th class=\"n\">median</th><th class=\"n\">min</th>\
         <th class=\"n\">max</th><th class=\"n\">linux</th><th class=\"n\">ratio</th><th class=\"n\">target</th></tr>\n",
    );
    for r in rows.iter().filter(|r| !r.is_linux()) {
        let target = match (r.numeric_target(), r.median) {
            (Some(t), Some(m)) => {
                let class = if m <= t { "met" } else { "over" };
                format!("<span class=\"{class}\">{}</span>", escape(&r.target))
            }
            _ => escape(if r.target.is_empty() { "-" } else { &r.target }),
        };
        page.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{target}</td></tr>\n",
            escape(&r.op),
            escape(&r.unit),
            figure(r.median),
            figure(r.min),
            figure(r.max),
            figure(r.linux),
            r.ratio().map_or("-".into(), |x| format!("{x:.2}")),
        ));
    }
    page.push_str("</table>\n");
    page.push_str(&tlb_table(rows));
    let linux: Vec<&Row> = rows.iter().filter(|r| r.is_linux()).collect();
    if !linux.is_empty() {
        page.push_str(
            "<h2>Linux guest baseline</h2>\n<table>\n<tr><th>op</th><th class=\"n\">median</th><th class=\"n\">min</th>\
             <th class=\"n\">max</th></tr>\n",
        );
        for r in linux {
            page.push_str(&format!(
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>\n",
                escape(&r.op),
                figure(r.median),
                figure(r.min),
                figure(r.max)
            ));
        }
        page.push_str("</table>\n");
    }
    page.push_str("</body>\n</html>\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "op,unit,median,min,max,floor,target,events,linux\n\
        null_syscall,instructions,36,36,36,bare:11,40,syscalls:1,310\n\
        pct_call_round_trip,instructions,927,927,927,-,150,syscalls:2,10551\n\
        frame_alloc,instructions,1909,1657,3715,-,-,syscalls:1,\n\
        fork_exit_wait,instructions,223351,222947,255717,,linux/2,syscalls:117,159666\n\
        switch_flush_touch_1,instructions,1901,1901,1901,-,-,cr3:2,4475,insns:1914;l1i:3.0;l1d:5.0;stlb_hit:3.0;walks:5.0;cycles:2120;pcid_walks:0.0;pcid_cycles:1970\n\
        switch_flush_touch_8,instructions,1913,1913,1913,-,-,cr3:2,4531,insns:1926;l1i:3.0;l1d:12.0;stlb_hit:6.0;walks:9.0;cycles:2301;pcid_walks:0.0;pcid_cycles:2031\n\
        switch_stlb_touch_1,instructions,2518,2518,2518,-,-,cr3:2,4475,insns:2531;l1i:3.0;l1d:6.0;stlb_hit:4.0;walks:5.0;cycles:2744\n\
        switch_stlb_touch_8,instructions,6716,6716,6716,-,-,cr3:2,4531\n\
        switch_pcid=flush_touch_1,instructions,1901,1901,1901,-,-,cr3:2,4475\n\
        switch_pcid=flush_touch_8,instructions,1913,1913,1913,-,-,cr3:2,4531\n\
        pipe_throughput,bytes_per_1000_instructions,791,791,791,,-,bytes:524288,\n\
        linux_getpid,instructions,310,310,310,rdtsc_pair:5,-,-,\n\
        linux_switch_touch_w1,instructions,4475,4475,26544,rdtsc_pair:5,-,-,\n\
        linux_switch_touch_w8,instructions,4531,4531,4731,rdtsc_pair:5,-,-,,insns:4600;l1i:9.0;l1d:12.0;stlb_hit:9.0;walks:12.0;cycles:5107;pcid_walks:0.0;pcid_cycles:4600\n";

    #[test]
    fn parses_rows_and_targets() {
        let rows = parse_csv(CSV);
        assert_eq!(rows.len(), 14);
        assert_eq!(rows[0].op, "null_syscall");
        assert_eq!(rows[0].numeric_target(), Some(40.0));
        assert_eq!(rows[0].linux, Some(310.0));
        assert_eq!(rows[0].tlb, None);
        assert_eq!(tlb_value(&rows[4], "walks"), Some(5.0));
        assert_eq!(tlb_value(&rows[6], "pcid_cycles"), None);
        assert_eq!(rows[2].numeric_target(), None);
        assert_eq!(rows[3].numeric_target(), Some(159666.0 / 2.0));
        assert_eq!(switch_point("switch_pcid=flush_touch_8"), Some(("pcid=flush".into(), 8.0)));
        assert_eq!(short_number(10000.0), "10k");
    }

    #[test]
    fn draws_every_chart_and_the_page() {
        let dir = std::env::temp_dir().join(format!("xtask-report-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let csv = dir.join("bench.csv");
        std::fs::write(&csv, CSV).unwrap();
        let written = write_report(&csv, &dir).unwrap();
        let names: Vec<String> =
            written.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(
            names,
            ["bench-vs-linux.svg", "bench-switch.svg", "bench-kernel.svg", "bench-tlb.svg", "bench.html"]
        );
        for path in &written[..4] {
            let svg = std::fs::read_to_string(path).unwrap();
            assert!(svg.contains("<svg"), "{}", path.display());
            assert!(svg.trim_end().ends_with("</svg>"), "{}", path.display());
        }
        let html = std::fs::read_to_string(dir.join("bench.html")).unwrap();
        assert!(html.contains("<img src=\"bench-switch.svg\""));
        assert!(html.contains("-icount shift=0"));
        assert!(html.contains("<td>pct_call_round_trip</td>"));
        assert!(html.contains("<h2>TLB model</h2>"));
        assert!(html.contains("<td class=\"n\">2120</td>"));
        let tlb = std::fs::read_to_string(dir.join("bench-tlb.svg")).unwrap();
        assert!(tlb.contains("what-if: flush policy with PCID (modelled)"));
        assert!(tlb.contains("Linux guest (process switch)"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn without_linux_figures_skips_that_chart() {
        let dir = std::env::temp_dir().join(format!("xtask-report-test-nolinux-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let csv = dir.join("bench.csv");
        std::fs::write(
            &csv,
            "op,unit,median,min,max,floor,target,events,linux\nnull_syscall,cycles,90,80,99,-,40,-,\n",
        )
        .unwrap();
        let written = write_report(&csv, &dir).unwrap();
        assert_eq!(written.len(), 2, "{written:?}");
        assert!(std::fs::read_to_string(dir.join("bench.html")).unwrap().contains("TSC cycles"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
