//! Human output of `oxmm bench faults`: per order, one seed-003 table per
//! target, then the ratios, then one summary table with every target's
//! `fault/wsec` side by side and as a percentage of the zero-fill limit.
//!
//! Ratios and percentages come two ways: of the medians, and *paired* —
//! the median over rounds of run `i` of one over run `i` of the other
//! (or over the zero-fill measurement of round `i`). The pairs are
//! measured back to back, so the paired figures are the steadier ones on
//! a host whose memory bandwidth drifts; the summary shows those.

use std::fmt::Write as _;
use std::time::Duration;

use super::faults::{FaultsReport, Order, Ratio, Row, Shape, RUN_PHASE_COUNTERS};

/// One table column: a header and how to render a row's cell.
pub struct Column<R> {
    header: String,
    cell: Box<dyn Fn(&R) -> String>,
}

impl<R> Column<R> {
    fn new(header: impl Into<String>, cell: impl Fn(&R) -> String + 'static) -> Self {
        Column { header: header.into(), cell: Box::new(cell) }
    }
}

fn fmt_secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

fn fmt_rate(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_string(), |r| format!("{r:.3}"))
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_string(), |r| format!("{r:.3}"))
}

fn fmt_pct(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_string(), |r| format!("{r:.1}%"))
}

fn shape_columns<R: 'static>(shape: fn(&R) -> &Shape) -> Vec<Column<R>> {
    vec![
        Column::new("Gb", move |r| shape(r).gb.to_string()),
        Column::new("Rep", move |r| shape(r).reps.to_string()),
        Column::new("Threads", move |r| shape(r).threads.to_string()),
    ]
}

/// The seed-003 columns, then unmap time, the share of the zero-fill
/// limit, pages per fault-handler entry, shared writes per fault (if the
/// target counts them), then the target's counters (touch phase, except
/// [`RUN_PHASE_COUNTERS`]: whole run).
fn target_columns(rows: &[&Row]) -> Vec<Column<Row>> {
    let mut cols = shape_columns(|r: &Row| &r.shape);
    cols.extend([
        Column::new("User", |r: &Row| fmt_secs(r.median.user)),
        Column::new("System", |r: &Row| fmt_secs(r.median.system)),
        Column::new("Wall", |r: &Row| fmt_secs(r.median.wall)),
        Column::new("flt/cpu/s", |r: &Row| fmt_rate(r.median.flt_per_cpu_s)),
        Column::new("fault/wsec", |r: &Row| fmt_rate(r.median.fault_per_wsec)),
        Column::new("unmap", |r: &Row| fmt_secs(r.median.unmap_wall)),
    ]);
    if rows.iter().any(|r| r.zero_fill_pct.is_some()) {
        cols.push(Column::new("%zero-fill", |r: &Row| fmt_pct(r.zero_fill_pct)));
    }
    if rows.iter().any(|r| r.zero_fill_pct_paired.is_some()) {
        cols.push(Column::new("%zf paired", |r: &Row| fmt_pct(r.zero_fill_pct_paired)));
    }
    if rows.iter().any(|r| r.median.pages_per_entry.is_some()) {
        cols.push(Column::new("pages/entry", |r: &Row| {
            r.median.pages_per_entry.map_or_else(|| "-".into(), |x| format!("{x:.2}"))
        }));
    }
    if rows.iter().any(|r| r.median.shared_writes_per_fault.is_some()) {
        cols.push(Column::new("shw/fault", |r: &Row| {
            r.median.shared_writes_per_fault.map_or_else(|| "-".into(), |x| format!("{x:.4}"))
        }));
    }
    let mut names: Vec<String> =
        rows.iter().flat_map(|r| r.median.touch_counters.keys().chain(r.median.counters.keys()).cloned()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let run_phase = RUN_PHASE_COUNTERS.contains(&name.as_str());
        let key = name.clone();
        cols.push(Column::new(name, move |r: &Row| {
            let map = if run_phase { &r.median.counters } else { &r.median.touch_counters };
            map.get(&key).map_or_else(|| "-".into(), u64::to_string)
        }));
    }
    cols
}

fn ratio_columns() -> Vec<Column<Ratio>> {
    let mut cols = shape_columns(|r: &Ratio| &r.shape);
    cols.extend([
        Column::new("flt/cpu/s", |r: &Ratio| fmt_ratio(r.flt_per_cpu_s)),
        Column::new("fault/wsec", |r: &Ratio| fmt_ratio(r.fault_per_wsec)),
        Column::new("paired", |r: &Ratio| fmt_ratio(r.fault_per_wsec_paired)),
        Column::new("entries", |r: &Ratio| fmt_ratio(r.entries_reduction)),
    ]);
    cols
}

/// Right-aligned columns, two spaces apart.
fn render<R>(out: &mut String, cols: &[Column<R>], rows: &[&R]) {
    let cells: Vec<Vec<String>> = rows.iter().map(|r| cols.iter().map(|c| (c.cell)(r)).collect()).collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| cells.iter().map(|r| r[i].len()).fold(c.header.len(), usize::max))
        .collect();
    let mut line = |fields: Vec<&str>| {
        let text: Vec<String> = fields.iter().zip(&widths).map(|(f, w)| format!("{f:>w$}")).collect();
        let _ = writeln!(out, "{}", text.join("  "));
    };
    line(cols.iter().map(|c| c.header.as_str()).collect());
    for r in &cells {
        line(r.iter().map(String::as_str).collect());
    }
}

fn order_title(o: Order) -> &'static str {
    match o {
        Order::Seq => "sequential",
        Order::Random => "random",
    }
}

/// A row of the summary table: one shape, every target.
struct SummaryRow<'r> {
    shape: Shape,
    report: &'r FaultsReport,
}

fn summary_columns(report: &FaultsReport) -> Vec<Column<SummaryRow<'_>>> {
    let mut cols: Vec<Column<SummaryRow<'_>>> = vec![
        Column::new("Order", |r: &SummaryRow<'_>| r.shape.order.name().to_string()),
        Column::new("Gb", |r: &SummaryRow<'_>| r.shape.gb.to_string()),
        Column::new("Threads", |r: &SummaryRow<'_>| r.shape.threads.to_string()),
    ];
    for t in &report.targets {
        let name = t.name.clone();
        cols.push(Column::new(t.name.clone(), move |r: &SummaryRow<'_>| {
            fmt_rate(r.report.row(&name, &r.shape).and_then(|x| x.median.fault_per_wsec))
        }));
    }
    for (target, baseline) in report.ratio_pairs() {
        let header = format!("{target}/{baseline}");
        cols.push(Column::new(header, move |r: &SummaryRow<'_>| {
            let x = r.report.ratios.iter().find(|x| x.target == target && x.baseline == baseline && x.shape == r.shape);
            fmt_ratio(x.and_then(|x| x.fault_per_wsec_paired))
        }));
    }
    if report.zero_fill.is_some() {
        for t in report.targets.iter().skip(1) {
            let name = t.name.clone();
            cols.push(Column::new(format!("{} %zf", t.name), move |r: &SummaryRow<'_>| {
                fmt_pct(r.report.row(&name, &r.shape).and_then(|x| x.zero_fill_pct_paired))
            }));
        }
        cols.push(Column::new("zf thr", |r: &SummaryRow<'_>| {
            r.report
                .rows
                .iter()
                .find(|x| x.shape == r.shape)
                .and_then(|x| x.zero_fill_threads)
                .map_or("-".into(), |t| t.to_string())
        }));
    }
    cols
}

/// The human-readable report.
pub fn render_table(report: &FaultsReport) -> String {
    let c = &report.config;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "faults: anonymous private memory, one write per page; fault/wsec counts pages first touched; \
         median of {} run{} (host: {} CPUs{})",
        c.runs,
        if c.runs == 1 { "" } else { "s" },
        c.host_cpus,
        c.host_kernel.as_deref().map(|k| format!(", Linux {k}")).unwrap_or_default(),
    );
    let width = report.targets.iter().map(|t| t.name.len()).max().unwrap_or(0);
    for t in &report.targets {
        let _ = writeln!(out, "  {:width$}  {}", t.name, t.description);
    }
    if let Some(zf) = &report.zero_fill {
        let _ = writeln!(
            out,
            "\nzero-fill limit: {} KiB memsets over a pre-touched {} MiB buffer per thread{}{} (median of {} each)",
            zf.chunk / 1024,
            zf.mib_per_thread,
            if zf.huge_pages_requested { ", THP requested as for the arena" } else { "" },
            zf.huge_page_share.map(|s| format!(", {:.1}% in huge pages", s * 100.0)).unwrap_or_default(),
            zf.limits.first().map_or(0, |l| l.runs.len()),
        );
        let one = zf.pages_per_s(1);
        for l in &zf.limits {
            let vs_one = match one {
                Some(one) if l.threads > 1 && one > 0.0 => format!(", {:.3}x one thread", l.pages_per_s / one),
                _ => String::new(),
            };
            // The spread over rounds: on a shared host two threads can be
            // in one of two bandwidth regimes from round to round.
            let lo = l.runs.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = l.runs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let spread =
                if l.runs.len() > 1 { format!("; rounds {:.2}–{:.2} M", lo / 1e6, hi / 1e6) } else { String::new() };
            let _ = writeln!(
                out,
                "  {} thread{}: {:.3} pages/s ({:.2} GB/s{vs_one}{spread})",
                l.threads,
                if l.threads == 1 { "" } else { "s" },
                l.pages_per_s,
                l.bytes_per_s / 1e9,
            );
        }
    }
    let shapes = report.shapes();
    let mut orders: Vec<Order> = shapes.iter().map(|s| s.order).collect();
    orders.dedup();
    for &order in &orders {
        let _ = writeln!(out, "\n=== {} order ===", order_title(order));
        for t in &report.targets {
            let rows: Vec<&Row> = report.rows.iter().filter(|r| r.target == t.name && r.shape.order == order).collect();
            if rows.is_empty() {
                continue;
            }
            let page = rows[0].page_size;
            let _ = writeln!(out, "\n{} ({page}-byte pages)", t.name);
            render(&mut out, &target_columns(&rows), &rows);
        }
        for (target, baseline) in report.ratio_pairs() {
            let ratios: Vec<&Ratio> = report
                .ratios
                .iter()
                .filter(|r| r.target == target && r.baseline == baseline && r.shape.order == order)
                .collect();
            if ratios.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "\nratio {target}/{baseline} (> 1: {target} faster; entries: {baseline}'s fault-handler entries \
                 over {target}'s)"
            );
            render(&mut out, &ratio_columns(), &ratios);
        }
    }
    let _ = writeln!(
        out,
        "\nsummary: fault/wsec per target (medians); paired ratios of fault/wsec{} — each the median over rounds \
         of one run over the other measured in the same round",
        if report.zero_fill.is_some() {
            ", and paired fault/wsec as % of the zero-fill limit of `zf thr` threads"
        } else {
            ""
        }
    );
    let rows: Vec<SummaryRow<'_>> = shapes.iter().map(|&shape| SummaryRow { shape, report }).collect();
    render(&mut out, &summary_columns(report), &rows.iter().collect::<Vec<_>>());
    out
}

#[cfg(test)]
mod tests {
    use super::super::faults::tests::sample_report;
    use super::*;

    #[test]
    fn table_has_seed_columns_ratios_and_summary() {
        let t = render_table(&sample_report());
        let words = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
        let lines: Vec<String> = t.lines().map(words).collect();
        let has = |l: &str| lines.iter().any(|x| x == l);
        let starts = |l: &str| lines.iter().any(|x| x.starts_with(l));
        assert!(has("kernel (4096-byte pages)"), "{t}");
        assert!(has("oxmm-pf3 (4096-byte pages)"), "{t}");
        assert!(has("=== sequential order ==="), "{t}");
        assert!(
            has("Gb Rep Threads User System Wall flt/cpu/s fault/wsec unmap %zero-fill %zf paired pages/entry minflt"),
            "{t}"
        );
        assert!(has("0.5 3 1 0.047s 2.163s 2.212s 88962.896 88882.459 0.000s 5.9% 5.9% 1.00 196608"), "{t}");
        assert!(
            has("Gb Rep Threads User System Wall flt/cpu/s fault/wsec unmap %zero-fill %zf paired pages/entry \
                 shw/fault pgfault prefault_unused shared_writes"),
            "{t}"
        );
        // Touch-phase counters, except prefault_unused (whole run).
        assert!(
            has("0.5 3 1 0.200s 0.000s 0.200s 983040.000 983040.000 0.000s 65.5% 65.5% 8.00 0.1250 24577 7 3072"),
            "{t}"
        );
        assert!(starts("ratio oxmm-pf3/oxmm-pf-off (> 1: oxmm-pf3 faster"), "{t}");
        assert!(has("Gb Rep Threads flt/cpu/s fault/wsec paired entries"), "{t}");
        assert!(has("0.5 3 1 1.500 1.500 1.500 8.000"), "{t}");
        assert!(starts("summary: fault/wsec per target (medians); paired ratios"), "{t}");
        assert!(starts("zero-fill limit: 4 KiB memsets over a pre-touched 64 MiB buffer per thread"), "{t}");
        assert!(has("2 threads: 2000000.000 pages/s (8.19 GB/s, 1.333x one thread)"), "{t}");
        // With several rounds, their spread follows.
        let mut r = sample_report();
        r.zero_fill = Some(super::super::zerofill::report(64, Some(1.0), vec![(2, vec![7.5e6, 13.0e6, 8.0e6])]));
        let t2 = render_table(&r);
        assert!(
            t2.lines().any(|l| words(l) == "2 threads: 8000000.000 pages/s (32.77 GB/s; rounds 7.50–13.00 M)"),
            "{t2}"
        );
        assert!(
            has("Order Gb Threads kernel oxmm-pf-off oxmm-pf3 oxmm-pf-off/kernel oxmm-pf3/kernel \
                 oxmm-pf3/oxmm-pf-off oxmm-pf-off %zf oxmm-pf3 %zf zf thr"),
            "{t}"
        );
        assert!(has("seq 0.5 1 88882.459 655360.000 983040.000 7.373 11.060 1.500 43.7% 65.5% 1"), "{t}");
        // Columns are right-aligned: every line of a table is equally wide.
        let i = t.lines().position(|l| l.trim_start().starts_with("Order")).unwrap();
        let table: Vec<&str> = t.lines().skip(i).take(2).collect();
        assert_eq!(table[0].len(), table[1].len(), "{t}");
    }
}
