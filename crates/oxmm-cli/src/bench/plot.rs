//! `--svg FILE`: fault/wsec against threads, one line per target (and per
//! order and size when there are several), plus the zero-fill limit.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use super::faults::FaultsReport;

/// One line of the plot.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// `(threads, fault/wsec)`, by threads.
    pub points: Vec<(f64, f64)>,
}

/// The lines to draw: one per (target, order, size) with at least one
/// rate, named by target and — only if the report has several — order and
/// size; then the zero-fill limit, if measured.
pub fn series(report: &FaultsReport) -> Vec<Series> {
    let shapes = report.shapes();
    let mut orders: Vec<_> = shapes.iter().map(|s| s.order).collect();
    orders.sort();
    orders.dedup();
    let mut sizes: Vec<f64> = shapes.iter().map(|s| s.gb).collect();
    sizes.sort_by(f64::total_cmp);
    sizes.dedup();
    let mut out = Vec::new();
    for t in &report.targets {
        for &order in &orders {
            for &gb in &sizes {
                let mut points: Vec<(f64, f64)> = report
                    .rows
                    .iter()
                    .filter(|r| r.target == t.name && r.shape.order == order && r.shape.gb == gb)
                    .filter_map(|r| Some((r.shape.threads as f64, r.median.fault_per_wsec?)))
                    .collect();
                if points.is_empty() {
                    continue;
                }
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                let mut name = t.name.clone();
                if orders.len() > 1 {
                    name += &format!(" {}", order.name());
                }
                if sizes.len() > 1 {
                    name += &format!(" {gb} GiB");
                }
                out.push(Series { name, points });
            }
        }
    }
    if let Some(zf) = &report.zero_fill {
        let points: Vec<(f64, f64)> = zf.limits.iter().map(|l| (l.threads as f64, l.pages_per_s)).collect();
        if !points.is_empty() {
            out.push(Series { name: "zero-fill limit (4 KiB memset)".into(), points });
        }
    }
    out
}

/// Write the plot of `report` to `path`.
pub fn write_svg(report: &FaultsReport, path: &Path) -> anyhow::Result<()> {
    let series = series(report);
    let xs = || series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let x_min = xs().fold(f64::INFINITY, f64::min).min(1.0);
    let x_max = xs().fold(1.0, f64::max);
    let y_max = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(1.0, f64::max) * 1.1;
    let err = |e: &dyn std::fmt::Display| anyhow!("{e}");

    let root = SVGBackend::new(path, (1100, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("oxmm bench faults: pages first touched per wall second", ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(90)
        .build_cartesian_2d((x_min - 0.25)..(x_max + 0.25), 0.0..y_max)
        .map_err(|e| err(&e))?;
    let n_threads = {
        let mut t: Vec<i64> = xs().map(|x| x as i64).collect();
        t.sort_unstable();
        t.dedup();
        t.len().max(2)
    };
    chart
        .configure_mesh()
        .x_desc("threads")
        .y_desc("fault/wsec")
        .x_labels(n_threads)
        .x_label_formatter(&|x| {
            if (x - x.round()).abs() < 1e-9 {
                format!("{}", x.round() as i64)
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{:.2}M", y / 1e6))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let style = color.stroke_width(2);
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), style))
            .map_err(|e| err(&e))?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 4, color.filled()))).map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::faults::tests::{fig, row_of, sample_report, shape};
    use super::super::faults::{Order, Shape};
    use super::*;

    #[test]
    fn series_per_target_order_and_size() {
        let r = sample_report();
        let s = series(&r);
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["kernel", "oxmm-pf-off", "oxmm-pf3", "zero-fill limit (4 KiB memset)"]);
        assert_eq!(s[3].points, [(1.0, 1_500_000.0), (2.0, 2_000_000.0)]);

        let mut r = sample_report();
        let random = Shape { order: Order::Random, gb: 4.0, ..shape(2) };
        r.rows.push(row_of("oxmm-pf3", random, fig(0, 10, 10).derive(1000, None)));
        r.rows.push(row_of("oxmm-pf3", Shape { threads: 4, ..random }, fig(0, 10, 5).derive(1000, None)));
        let s = series(&r);
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&"kernel seq 0.5 GiB"), "{names:?}");
        assert!(names.contains(&"oxmm-pf3 random 4 GiB"), "{names:?}");
        let line = s.iter().find(|s| s.name == "oxmm-pf3 random 4 GiB").unwrap();
        assert_eq!(line.points, [(2.0, 100_000.0), (4.0, 200_000.0)]);
    }

    #[test]
    fn svg_is_well_formed_with_every_series() {
        let path = std::env::temp_dir().join(format!("oxmm-plot-test-{}.svg", std::process::id()));
        write_svg(&sample_report(), &path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let doc = roxmltree::Document::parse(&text).expect("well-formed XML");
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let texts: Vec<&str> =
            doc.descendants().filter(|n| n.has_tag_name("text")).filter_map(|n| n.text()).map(str::trim).collect();
        for name in ["kernel", "oxmm-pf-off", "oxmm-pf3", "zero-fill limit (4 KiB memset)", "threads", "fault/wsec"] {
            assert!(texts.contains(&name), "no {name:?} in {texts:?}");
        }
        // One polyline per series (plus the legend's samples).
        let lines = doc.descendants().filter(|n| n.has_tag_name("polyline")).count();
        assert!(lines >= 4, "{lines} polylines");
    }
}
