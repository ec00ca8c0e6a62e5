//! A hand-written SVG report: latency over time (p50 and p99 of each second) and the percentile
//! curve, one colour per run, log-scale latency axes.

use std::fmt::Write as _;

use crate::report::RunResult;

const WIDTH: f64 = 1000.0;
const PANEL_HEIGHT: f64 = 330.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 240.0;
const TOP: f64 = 60.0;
const GAP: f64 = 90.0;
const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
/// Rightmost x of the percentile curve: 99.999% (five nines).
const NINES_MAX: f64 = 5.0;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A log-scale latency axis covering whole decades of microseconds.
struct LogAxis {
    low_decade: i32,
    high_decade: i32,
}

impl LogAxis {
    fn covering(values: impl Iterator<Item = u64>) -> LogAxis {
        let (mut low, mut high) = (u64::MAX, 1u64);
        for v in values {
            let v = v.max(1);
            low = low.min(v);
            high = high.max(v);
        }
        if low == u64::MAX {
            low = 1;
        }
        let low_decade = (low as f64).log10().floor() as i32;
        let mut high_decade = (high as f64).log10().ceil() as i32;
        if high_decade <= low_decade {
            high_decade = low_decade + 1;
        }
        LogAxis {
            low_decade,
            high_decade,
        }
    }

    /// 0 at the bottom decade, 1 at the top one.
    fn fraction(&self, us: u64) -> f64 {
        let v = (us.max(1) as f64).log10();
        ((v - self.low_decade as f64) / (self.high_decade - self.low_decade) as f64).clamp(0.0, 1.0)
    }
}

fn decade_label(decade: i32) -> String {
    let ms = 10f64.powi(decade) / 1000.0;
    if ms >= 1.0 {
        format!("{ms:.0} ms")
    } else {
        let digits = (-decade + 3).max(0) as usize;
        format!("{ms:.digits$} ms")
    }
}

struct Panel {
    top: f64,
    height: f64,
    width: f64,
}

impl Panel {
    fn x(&self, fraction: f64) -> f64 {
        LEFT + fraction * self.width
    }
    fn y(&self, fraction: f64) -> f64 {
        self.top + (1.0 - fraction) * self.height
    }

    fn frame(&self, s: &mut String, title: &str, x_label: &str, axis: &LogAxis) {
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" font-size="16" font-weight="bold">{}</text>"##,
            LEFT,
            self.top - 14.0,
            escape(title)
        );
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{}" width="{}" height="{}" fill="none" stroke="#444"/>"##,
            self.top, self.width, self.height
        );
        for decade in axis.low_decade..=axis.high_decade {
            let y = self.y(axis.fraction(10f64.powi(decade) as u64));
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
                LEFT + self.width,
                LEFT - 6.0,
                y + 4.0,
                decade_label(decade)
            );
        }
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"##,
            LEFT + self.width / 2.0,
            self.top + self.height + 36.0,
            escape(x_label)
        );
    }
}

fn polyline(s: &mut String, points: &[(f64, f64)], colour: &str, dashed: bool) {
    if points.is_empty() {
        return;
    }
    let mut coords = String::new();
    for (x, y) in points {
        let _ = write!(coords, "{x:.1},{y:.1} ");
    }
    let dash = if dashed {
        r#" stroke-dasharray="6,4""#
    } else {
        ""
    };
    let _ = writeln!(
        s,
        r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>"#,
        coords.trim_end()
    );
}

fn legend(s: &mut String, top: f64, entries: &[(String, &str, bool)]) {
    for (i, (text, colour, dashed)) in entries.iter().enumerate() {
        let x = WIDTH - RIGHT + 16.0;
        let y = top + 12.0 + i as f64 * 20.0;
        let dash = if *dashed {
            r#" stroke-dasharray="6,4""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{colour}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
            x + 24.0,
            x + 30.0,
            y + 4.0,
            escape(text)
        );
    }
}

/// The SVG document for `runs` (one run, or the two of a comparison).
pub fn render(runs: &[&RunResult]) -> String {
    let plot_width = WIDTH - LEFT - RIGHT;
    let height = TOP + 2.0 * PANEL_HEIGHT + GAP + 60.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">"##
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let title = match runs.first() {
        Some(r) => format!("zoo-loadgen: {} ({})", r.workload, r.primary.name),
        None => "zoo-loadgen".to_string(),
    };
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="24" font-size="18" font-weight="bold">{}</text>"##,
        escape(&title)
    );

    // Latency over time.
    let time = Panel {
        top: TOP + 20.0,
        height: PANEL_HEIGHT - 20.0,
        width: plot_width,
    };
    let axis = LogAxis::covering(
        runs.iter()
            .flat_map(|r| r.per_second.iter().flat_map(|p| [p.p50_us, p.p99_us])),
    );
    let seconds = runs
        .iter()
        .map(|r| r.per_second.len())
        .max()
        .unwrap_or(0)
        .max(1);
    time.frame(
        &mut s,
        "Latency per second of the timed phase (p50 solid, p99 dashed)",
        "second",
        &axis,
    );
    let step = (seconds as f64 / 10.0).ceil().max(1.0) as usize;
    for second in (0..=seconds).step_by(step) {
        let x = time.x(second as f64 / seconds as f64);
        let _ = writeln!(
            s,
            r##"<text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{second}</text>"##,
            time.top + time.height + 16.0
        );
    }
    let mut entries = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let point = |sec: u64, us: u64| {
            (
                time.x((sec as f64 + 0.5) / seconds as f64),
                time.y(axis.fraction(us)),
            )
        };
        let p50: Vec<_> = run
            .per_second
            .iter()
            .filter(|p| p.ops > 0)
            .map(|p| point(p.second, p.p50_us))
            .collect();
        let p99: Vec<_> = run
            .per_second
            .iter()
            .filter(|p| p.ops > 0)
            .map(|p| point(p.second, p.p99_us))
            .collect();
        polyline(&mut s, &p50, colour, false);
        polyline(&mut s, &p99, colour, true);
        entries.push((format!("{} p50", run.label), colour, false));
        entries.push((format!("{} p99", run.label), colour, true));
    }
    legend(&mut s, time.top, &entries);

    // Percentile curve.
    let curve = Panel {
        top: TOP + PANEL_HEIGHT + GAP,
        height: PANEL_HEIGHT - 20.0,
        width: plot_width,
    };
    let axis = LogAxis::covering(
        runs.iter()
            .flat_map(|r| r.percentile_curve.iter().map(|p| p.latency_us)),
    );
    curve.frame(&mut s, "Latency by percentile", "percentile", &axis);
    let nines = |p: f64| (-(1.0 - p / 100.0).max(1e-9).log10()).clamp(0.0, NINES_MAX) / NINES_MAX;
    for (label, p) in [
        ("0%", 0.0),
        ("90%", 90.0),
        ("99%", 99.0),
        ("99.9%", 99.9),
        ("99.99%", 99.99),
        ("99.999%", 99.999),
    ] {
        let x = curve.x(nines(p));
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{label}</text>"##,
            curve.top,
            curve.top + curve.height,
            curve.top + curve.height + 16.0
        );
    }
    let mut entries = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<_> = run
            .percentile_curve
            .iter()
            .filter(|p| p.percentile < 100.0)
            .map(|p| {
                (
                    curve.x(nines(p.percentile)),
                    curve.y(axis.fraction(p.latency_us)),
                )
            })
            .collect();
        polyline(&mut s, &points, colour, false);
        entries.push((
            format!(
                "{} (max {:.3} ms)",
                run.label,
                run.primary.max_us as f64 / 1000.0
            ),
            colour,
            false,
        ));
    }
    legend(&mut s, curve.top, &entries);
    let _ = writeln!(s, "</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_axis_spans_whole_decades() {
        let axis = LogAxis::covering([150u64, 2500].into_iter());
        assert_eq!((axis.low_decade, axis.high_decade), (2, 4));
        assert_eq!(axis.fraction(100), 0.0);
        assert_eq!(axis.fraction(10_000), 1.0);
        assert_eq!(decade_label(3), "1 ms");
        assert_eq!(decade_label(1), "0.01 ms");
    }
}
