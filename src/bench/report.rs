//! `millrace bench --report DIR`: the run as JSON (`bench.json`) and SVG
//! charts drawn with `plotters` (text left to the viewer: no fonts needed):
//!
//! - `throughput.svg`: every throughput beside Redis's limits, the redis-rs
//!   ceilings and BullMQ's figures of the same run;
//! - `limits.svg`: each millrace throughput as a share of its limit;
//! - `cpu.svg`: the Redis server's and the process's CPU per message;
//! - `latency.svg`: the idle publish → handler latency distribution (every
//!   sample, as a cumulative share);
//! - `scale.svg`: the scale curves, throughput as one thing varies
//!   (payload size, partitions, worker processes, cluster primaries).

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{BenchReport, Figure};
use crate::error::{Error, Result};

const SIZE: (u32, u32) = (960, 540);
const LIMIT: RGBColor = RGBColor(90, 90, 90);
const CEILING: RGBColor = RGBColor(170, 170, 170);
const MILLRACE: RGBColor = RGBColor(31, 119, 180);
const BULLMQ: RGBColor = RGBColor(230, 120, 20);
const CLIENT: RGBColor = RGBColor(120, 180, 220);

fn chart_error(e: impl std::fmt::Display) -> Error {
    Error::invalid("bench report", format!("drawing a chart failed: {e}"))
}

/// One bar: its label, value and colour.
type Bar = (String, f64, RGBColor);

/// The bars of `throughput.svg`: limits, ceilings, millrace, then BullMQ's
/// figures (from the peer's JSON) under their own names.
pub(crate) fn throughput_bars(r: &BenchReport) -> Vec<Bar> {
    let mut bars: Vec<Bar> = r
        .figures
        .iter()
        .filter(|f| f.unit == "msg/s" && !f.name.starts_with("serve."))
        .map(|f| {
            let colour = if f.name.starts_with("limit.") {
                LIMIT
            } else if f.name.starts_with("ceiling.") {
                CEILING
            } else {
                MILLRACE
            };
            (f.name.clone(), f.value, colour)
        })
        .collect();
    if let Some(b) = &r.bullmq {
        for (key, label) in [
            ("add_per_s", "bullmq.add"),
            ("worker_c100_per_s", "bullmq.worker.c100"),
            ("worker_c1_per_s", "bullmq.worker.c1"),
        ] {
            if let Some(v) = b.get(key).and_then(serde_json::Value::as_f64) {
                bars.push((label.to_string(), v, BULLMQ));
            }
        }
    }
    bars
}

/// The bars of `limits.svg`: millrace's throughputs as shares of their
/// limit.
pub(crate) fn limit_bars(r: &BenchReport) -> Vec<Bar> {
    r.figures
        .iter()
        .filter(|f| !f.name.starts_with("ceiling."))
        .filter_map(|f| Some((f.name.clone(), f.ratio_to_limit?, MILLRACE)))
        .collect()
}

/// One line of a scale panel: its label and (x, msg/s) points.
type Line = (&'static str, Vec<(f64, f64)>);

/// One panel of `scale.svg`.
pub(crate) struct Panel {
    title: &'static str,
    x_desc: &'static str,
    lines: Vec<Line>,
}

/// The scale curves found in `r`: per panel, the lines with at least one
/// point (x from the scenario's name).
pub(crate) fn scale_panels(r: &BenchReport) -> Vec<Panel> {
    let value = |name: &str| {
        r.figures
            .iter()
            .find(|f| f.name == name && f.unit == "msg/s")
            .map(|f| f.value)
    };
    let line = |label: &'static str, points: &[(f64, String)]| -> Line {
        let pts = points
            .iter()
            .filter_map(|(x, name)| Some((*x, value(name)?)))
            .collect();
        (label, pts)
    };
    let payloads = |kind: &str| -> Vec<(f64, String)> {
        [(0.1, "100b"), (1.0, "1kb"), (16.0, "16kb")]
            .iter()
            .map(|(x, n)| (*x, format!("scale.payload.{n}.{kind}")))
            .collect()
    };
    let counted = |counts: &[u32], f: &dyn Fn(u32) -> String| -> Vec<(f64, String)> {
        counts.iter().map(|c| (f64::from(*c), f(*c))).collect()
    };
    let panels = vec![
        Panel {
            title: "Payload size",
            x_desc: "KB per message",
            lines: vec![
                line("produce", &payloads("produce")),
                line("consume", &payloads("consume")),
            ],
        },
        Panel {
            title: "Partitions (ordered consume)",
            x_desc: "partitions",
            lines: vec![line(
                "consume",
                &counted(&[1, 8, 64], &|c| format!("scale.partitions.{c}.consume")),
            )],
        },
        Panel {
            title: "Worker processes (ordered, one group)",
            x_desc: "processes",
            lines: vec![line(
                "consume",
                &counted(&[1, 2, 4], &|c| format!("scale.processes.{c}.consume")),
            )],
        },
        Panel {
            title: "Cluster primaries (12 partitions)",
            x_desc: "primaries",
            lines: vec![
                line(
                    "produce",
                    &counted(&[1, 3], &|c| format!("scale.cluster.{c}.produce")),
                ),
                line(
                    "consume",
                    &counted(&[1, 3], &|c| format!("scale.cluster.{c}.consume")),
                ),
            ],
        },
    ];
    panels
        .into_iter()
        .map(|mut p| {
            p.lines.retain(|l| !l.1.is_empty());
            p
        })
        .filter(|p| !p.lines.is_empty())
        .collect()
}

/// The scale panels side by side, two per row, x on a log scale.
fn scale(path: &Path, panels: &[Panel]) -> Result<()> {
    let rows = panels.len().div_ceil(2) as u32;
    let root = SVGBackend::new(path, (SIZE.0, 60 + 320 * rows)).into_drawing_area();
    root.fill(&WHITE).map_err(chart_error)?;
    let root = root
        .titled(
            "Scale: messages per second as one thing varies",
            ("sans-serif", 20),
        )
        .map_err(chart_error)?;
    let areas = root.split_evenly((rows as usize, 2));
    for (panel, area) in panels.iter().zip(areas) {
        let points = panel.lines.iter().flat_map(|l| l.1.iter());
        let (lo, hi, top) = points.fold((f64::MAX, 0.0f64, 0.0f64), |(lo, hi, top), (x, y)| {
            (lo.min(*x), hi.max(*x), top.max(*y))
        });
        let (lo, hi) = (lo * 0.8, hi * 1.25);
        let mut chart = ChartBuilder::on(&area)
            .caption(panel.title, ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d((lo..hi).log_scale(), 0.0..top.max(1e-9) * 1.15)
            .map_err(chart_error)?;
        chart
            .configure_mesh()
            .x_desc(panel.x_desc)
            .y_label_formatter(&|v| short(*v))
            .draw()
            .map_err(chart_error)?;
        for (i, (label, pts)) in panel.lines.iter().enumerate() {
            let colour = if i == 0 { MILLRACE } else { BULLMQ };
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), colour.stroke_width(2)))
                .map_err(chart_error)?
                .label(*label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 3, colour.filled())))
                .map_err(chart_error)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(chart_error)?;
    }
    root.present().map_err(chart_error)?;
    Ok(())
}

/// `v` short: `812k`, `1.2M`, `0.25`.
fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Horizontal bars, top to bottom in order, their labels on the left and
/// each bar's value at its end.
fn bars(path: &Path, title: &str, x_desc: &str, bars: &[Bar]) -> Result<()> {
    let n = bars.len().max(1);
    let height = 90 + 26 * n as u32;
    let root = SVGBackend::new(path, (SIZE.0, height)).into_drawing_area();
    root.fill(&WHITE).map_err(chart_error)?;
    let top = bars.iter().map(|b| b.1).fold(0.0f64, f64::max).max(1e-9) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(230)
        .build_cartesian_2d(0.0..top, (0..n as i32 - 1).into_segmented())
        .map_err(chart_error)?;
    // Row i from the top is segment n-1-i.
    let row = |i: usize| (n - 1 - i) as i32;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(x_desc)
        .x_label_formatter(&|v| short(*v))
        .y_labels(n)
        .y_label_formatter(&|y| match y {
            SegmentValue::CenterOf(r) if *r >= 0 && (*r as usize) < n => {
                bars[n - 1 - *r as usize].0.clone()
            }
            _ => String::new(),
        })
        .draw()
        .map_err(chart_error)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(row(i))),
                    (b.1, SegmentValue::Exact(row(i) + 1)),
                ],
                b.2.filled(),
            );
            bar.set_margin(3, 3, 0, 0);
            bar
        }))
        .map_err(chart_error)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            Text::new(
                format!(" {}", short(b.1)),
                (b.1, SegmentValue::CenterOf(row(i))),
                TextStyle::from(("sans-serif", 12).into_font())
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            )
        }))
        .map_err(chart_error)?;
    root.present().map_err(chart_error)?;
    Ok(())
}

/// The latency samples as a cumulative distribution.
fn latency(path: &Path, samples: &[f64]) -> Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(chart_error)?;
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let top = sorted.last().copied().unwrap_or(1.0).max(1e-6) * 1.05;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Idle publish → handler latency (cumulative share of samples)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..top, 0.0..1.0)
        .map_err(chart_error)?;
    chart
        .configure_mesh()
        .x_desc("ms")
        .y_desc("share of publishes")
        .draw()
        .map_err(chart_error)?;
    let n = sorted.len().max(1) as f64;
    chart
        .draw_series(LineSeries::new(
            sorted
                .iter()
                .enumerate()
                .map(|(i, v)| (*v, (i + 1) as f64 / n)),
            MILLRACE.stroke_width(2),
        ))
        .map_err(chart_error)?;
    root.present().map_err(chart_error)?;
    Ok(())
}

/// Writes `bench.json` and the charts into `dir` (created if missing);
/// returns the files written.
pub fn write(r: &BenchReport, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::invalid(
            "bench report",
            format!("cannot create {}: {e}", dir.display()),
        )
    })?;
    let mut written = Vec::new();
    let json = dir.join("bench.json");
    let text = serde_json::to_vec_pretty(r).map_err(|e| Error::Decode(e.to_string()))?;
    std::fs::write(&json, text).map_err(|e| {
        Error::invalid(
            "bench report",
            format!("cannot write {}: {e}", json.display()),
        )
    })?;
    written.push(json);
    let throughput = throughput_bars(r);
    if !throughput.is_empty() {
        let p = dir.join("throughput.svg");
        bars(
            &p,
            "Throughput: Redis's limits (dark), redis-rs ceilings (grey), millrace (blue), BullMQ (orange)",
            "messages per second",
            &throughput,
        )?;
        written.push(p);
    }
    let shares = limit_bars(r);
    if !shares.is_empty() {
        let p = dir.join("limits.svg");
        bars(
            &p,
            "Share of Redis's own limit (limit.xadd for produce, limit.read_ack for consume)",
            "throughput / limit",
            &shares,
        )?;
        written.push(p);
    }
    let metered: Vec<&Figure> = r
        .figures
        .iter()
        .filter(|f| f.server_cpu_us.is_some())
        .collect();
    if !metered.is_empty() {
        // Per scenario the server's bar, then the process's.
        let pairs: Vec<Bar> = metered
            .iter()
            .flat_map(|f| {
                [
                    (
                        format!("{} (redis)", f.name),
                        f.server_cpu_us.unwrap_or(0.0),
                        MILLRACE,
                    ),
                    (
                        format!("{} (client)", f.name),
                        f.client_cpu_us.unwrap_or(0.0),
                        CLIENT,
                    ),
                ]
            })
            .collect();
        let p = dir.join("cpu.svg");
        bars(
            &p,
            "CPU per message: the Redis server (dark blue) and this process (light blue)",
            "microseconds per message",
            &pairs,
        )?;
        written.push(p);
    }
    let panels = scale_panels(r);
    if !panels.is_empty() {
        let p = dir.join("scale.svg");
        scale(&p, &panels)?;
        written.push(p);
    }
    if !r.latency_ms.is_empty() {
        let p = dir.join("latency.svg");
        latency(&p, &r.latency_ms)?;
        written.push(p);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(name: &str, value: f64, unit: &'static str, to_limit: Option<f64>) -> Figure {
        Figure {
            name: name.into(),
            value,
            unit,
            ratio_to_limit: to_limit,
            ..Figure::default()
        }
    }

    #[test]
    fn bars_take_throughputs_with_their_kind_and_shares_of_millrace_only() {
        let r = BenchReport {
            figures: vec![
                figure("limit.read_ack", 800.0, "msg/s", None),
                figure("ceiling.read_ack", 400.0, "msg/s", Some(0.5)),
                figure("consume.ordered.c100", 200.0, "msg/s", Some(0.25)),
                figure("latency.p50", 0.2, "ms", None),
                figure("serve.publish", 50.0, "msg/s", None),
            ],
            bullmq: Some(serde_json::json!({"worker_c100_per_s": 20.0})),
            ..BenchReport::default()
        };
        let t = throughput_bars(&r);
        let names: Vec<(&str, f64)> = t.iter().map(|b| (b.0.as_str(), b.1)).collect();
        assert_eq!(
            names,
            [
                ("limit.read_ack", 800.0),
                ("ceiling.read_ack", 400.0),
                ("consume.ordered.c100", 200.0),
                ("bullmq.worker.c100", 20.0)
            ]
        );
        assert_eq!(
            (t[0].2, t[1].2, t[2].2, t[3].2),
            (LIMIT, CEILING, MILLRACE, BULLMQ)
        );
        let s = limit_bars(&r);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].0.as_str(), s[0].1), ("consume.ordered.c100", 0.25));
    }

    #[test]
    fn scale_panels_take_the_points_that_ran() {
        let r = BenchReport {
            figures: vec![
                figure("scale.payload.100b.produce", 700.0, "msg/s", None),
                figure("scale.payload.16kb.produce", 40.0, "msg/s", None),
                figure("scale.partitions.8.consume", 200.0, "msg/s", None),
                figure("scale.processes.2.consume", 150.0, "msg/s", None),
                figure("scale.cluster.3.consume.busiest_share", 0.4, "share", None),
            ],
            ..BenchReport::default()
        };
        let p = scale_panels(&r);
        let shown: Vec<(&str, Vec<Line>)> = p.iter().map(|p| (p.title, p.lines.clone())).collect();
        assert_eq!(
            shown,
            [
                (
                    "Payload size",
                    vec![("produce", vec![(0.1, 700.0), (16.0, 40.0)])]
                ),
                (
                    "Partitions (ordered consume)",
                    vec![("consume", vec![(8.0, 200.0)])]
                ),
                (
                    "Worker processes (ordered, one group)",
                    vec![("consume", vec![(2.0, 150.0)])]
                ),
            ]
        );
    }
}
