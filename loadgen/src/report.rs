//! Results: built from the merged [`Stats`], printed as text, written as JSON; and the
//! comparison of two runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::runner::RunConfig;
use crate::stats::{METRIC_COUNT, Metric, Stats, Timing};
use crate::workload::{Kind, Workload};

/// Latency figures of one metric (microseconds) over the timed phase.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetricResult {
    pub name: String,
    pub count: u64,
    /// Values in the histogram (equals `count`: every completion is recorded).
    pub histogram_count: u64,
    pub errors: u64,
    pub per_sec: f64,
    pub min_us: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl MetricResult {
    fn from_histogram(
        name: &str,
        count: u64,
        errors: u64,
        secs: f64,
        h: &Histogram<u64>,
    ) -> MetricResult {
        let empty = h.is_empty();
        let q = |p: f64| if empty { 0 } else { h.value_at_quantile(p) };
        MetricResult {
            name: name.to_string(),
            count,
            histogram_count: h.len(),
            errors,
            per_sec: if secs > 0.0 { count as f64 / secs } else { 0.0 },
            min_us: if empty { 0 } else { h.min() },
            mean_us: if empty { 0.0 } else { h.mean() },
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if empty { 0 } else { h.max() },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SecondPoint {
    pub second: u64,
    pub ops: u64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CurvePoint {
    pub percentile: f64,
    pub latency_us: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    pub label: String,
    pub server: String,
    pub workload: String,
    pub kind: String,
    pub sessions: u64,
    pub in_flight: u64,
    pub cores: usize,
    /// ops/s offered; 0 = closed loop.
    pub target_rate: f64,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    /// Seconds the throughput figures are divided by.
    pub measured_secs: f64,
    /// Requests completed in the timed phase (the sum of `ops[].count`).
    pub ops_total: u64,
    pub ops_per_sec: f64,
    /// Error replies plus client-side failures.
    pub errors_total: u64,
    /// By ZooKeeper error code: `NONODE (-101)`; client-side failures use CONNECTIONLOSS (-4),
    /// OPERATIONTIMEOUT (-7) and MARSHALLINGERROR (-5).
    pub errors: BTreeMap<String, u64>,
    /// Requests sent that never got a reply.
    pub lost_requests: u64,
    pub warmup_completed: u64,
    /// One entry per request type used.
    pub ops: Vec<MetricResult>,
    /// All requests together.
    pub overall: MetricResult,
    /// Recipe-level measures (lock_acquire, watch_notify).
    pub derived: Vec<MetricResult>,
    /// The headline: `overall` for a mix, else the recipe measure.
    pub primary: MetricResult,
    pub per_second: Vec<SecondPoint>,
    /// Latency by percentile of the primary measure.
    pub percentile_curve: Vec<CurvePoint>,
    pub messages: Vec<String>,
    /// CPU seconds the load generator used from the start to the end of the run (all phases).
    #[serde(default)]
    pub loadgen_cpu_secs: f64,
    /// That CPU time over (wall time x cores): near 1.0 means the loadgen itself was saturated.
    #[serde(default)]
    pub loadgen_cpu_share: f64,
    /// The server's CPUs over the measured phase, with `--server-cpus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cpu: Option<ServerCpu>,
}

/// How busy the server's CPUs were over the measured phase (`crate::host_cpu`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServerCpu {
    /// The CPUs, as given on the command line (`0`, `0-3`).
    pub cpus: String,
    /// Wall seconds between the two samples.
    pub secs: f64,
    /// CPU seconds the CPUs spent busy, all of them together.
    pub busy_secs: f64,
    /// Busy time over all the CPUs' time: 1.0 is every listed CPU busy throughout.
    pub busy_share: f64,
    /// Busy microseconds per unit of the primary measure: per op of a mix, per lock
    /// acquired, per watch-storm round.
    pub busy_us_per_unit: f64,
}

impl ServerCpu {
    pub fn new(cpus: String, usage: crate::host_cpu::Usage, units: u64) -> ServerCpu {
        let busy_secs = usage.ticks.busy as f64 / usage.ticks_per_sec;
        ServerCpu {
            cpus,
            secs: usage.secs,
            busy_secs,
            busy_share: usage.ticks.busy as f64 / (usage.ticks.total as f64).max(1.0),
            busy_us_per_unit: busy_secs * 1e6 / (units as f64).max(1.0),
        }
    }
}

/// Percentiles for the curve: 0..90 in steps of 10, then 90, 99, 99.9 ... in tenth-decades.
fn curve_percentiles() -> Vec<f64> {
    let mut out: Vec<f64> = (0..9).map(|i| i as f64 * 10.0).collect();
    for step in 10..=50 {
        out.push(100.0 * (1.0 - 10f64.powf(-(step as f64) / 10.0)));
    }
    out
}

impl RunResult {
    pub fn build(
        workload: &Workload,
        config: &RunConfig,
        cores: usize,
        timing: &Timing,
        stats: Stats,
    ) -> RunResult {
        let duration = workload.duration_secs;
        let measured_secs = match workload.kind {
            // Rounds may end before the time is up.
            Kind::WatchStorm(_) => stats
                .last_measured
                .map(|l| {
                    l.saturating_duration_since(timing.measure_start)
                        .as_secs_f64()
                })
                .unwrap_or(duration)
                .clamp(1e-3, duration),
            _ => duration,
        };
        let mut ops = Vec::new();
        let mut derived = Vec::new();
        let mut overall_hist = crate::stats::new_histogram(crate::limits::HISTOGRAM_SIGFIGS);
        let (mut ops_total, mut op_errors) = (0, 0);
        for index in 0..METRIC_COUNT {
            let Some(h) = &stats.hist[index] else {
                continue;
            };
            let metric = Metric::from_index(index);
            let result = MetricResult::from_histogram(
                metric.name(),
                stats.counts[index],
                stats.op_errors[index],
                measured_secs,
                h,
            );
            if metric.is_op() {
                overall_hist.add(h).expect("histograms share bounds");
                ops_total += stats.counts[index];
                op_errors += stats.op_errors[index];
                ops.push(result);
            } else {
                derived.push(result);
            }
        }
        let overall =
            MetricResult::from_histogram("all", ops_total, op_errors, measured_secs, &overall_hist);
        let primary_metric = match workload.kind {
            Kind::Mix(_) => None,
            Kind::Lock(_) => Some(Metric::LockAcquire),
            Kind::WatchStorm(_) => Some(Metric::WatchNotify),
        };
        let (primary, primary_hist) = match primary_metric {
            None => (overall.clone(), overall_hist),
            Some(m) => match &stats.hist[m.index()] {
                Some(h) => (
                    derived
                        .iter()
                        .find(|d| d.name == m.name())
                        .cloned()
                        .expect("derived metric present"),
                    h.clone(),
                ),
                None => {
                    let empty = crate::stats::new_histogram(crate::limits::HISTOGRAM_SIGFIGS);
                    (
                        MetricResult::from_histogram(m.name(), 0, 0, measured_secs, &empty),
                        empty,
                    )
                }
            },
        };
        let percentile_curve = if primary_hist.is_empty() {
            Vec::new()
        } else {
            curve_percentiles()
                .into_iter()
                .map(|p| CurvePoint {
                    percentile: p,
                    latency_us: primary_hist.value_at_quantile(p / 100.0),
                })
                .chain(std::iter::once(CurvePoint {
                    percentile: 100.0,
                    latency_us: primary_hist.max(),
                }))
                .collect()
        };
        let per_second = stats
            .seconds
            .iter()
            .enumerate()
            .map(|(i, s)| SecondPoint {
                second: i as u64,
                ops: s.ops,
                errors: s.errors,
                p50_us: if s.hist.is_empty() {
                    0
                } else {
                    s.hist.value_at_quantile(0.5)
                },
                p99_us: if s.hist.is_empty() {
                    0
                } else {
                    s.hist.value_at_quantile(0.99)
                },
            })
            .collect();
        RunResult {
            label: config.label.clone(),
            server: config.server.clone(),
            workload: workload.name.clone(),
            kind: workload.kind.name().to_string(),
            sessions: workload.sessions,
            in_flight: workload.in_flight,
            cores,
            target_rate: workload.target_rate,
            warmup_secs: workload.warmup_secs,
            duration_secs: duration,
            measured_secs,
            ops_total,
            ops_per_sec: ops_total as f64 / measured_secs,
            errors_total: stats.errors.values().sum(),
            errors: stats.errors,
            lost_requests: stats.lost,
            warmup_completed: stats.warmup_completed,
            ops,
            overall,
            derived,
            primary,
            per_second,
            percentile_curve,
            messages: stats.messages,
            loadgen_cpu_secs: 0.0,
            loadgen_cpu_share: 0.0,
            server_cpu: None,
        }
    }

    /// Whether the run saw errors of any kind.
    pub fn has_errors(&self) -> bool {
        self.errors_total > 0
    }

    /// The run as text: header, per-metric table, errors.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "== {} against {} ({}) ==",
            self.workload, self.server, self.label
        );
        let mode = if self.target_rate > 0.0 {
            format!("open loop at {} ops/s", self.target_rate)
        } else if self.kind == "mix" {
            format!("closed loop, {} in flight per session", self.in_flight)
        } else {
            "closed loop".to_string()
        };
        let _ = writeln!(
            s,
            "{} workload, {} sessions on {} core(s), {mode}; {:.1} s measured after {:.1} s warm-up",
            self.kind, self.sessions, self.cores, self.measured_secs, self.warmup_secs
        );
        let _ = writeln!(
            s,
            "throughput: {:.0} ops/s ({} requests), errors: {}",
            self.ops_per_sec, self.ops_total, self.errors_total
        );
        if self.kind != "mix" {
            let _ = writeln!(
                s,
                "{}: {:.1}/s ({} measured)",
                self.primary.name, self.primary.per_sec, self.primary.count
            );
        }
        let _ = writeln!(
            s,
            "{:<28} {:>10} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
            "latency (ms)", "count", "per s", "p50", "p90", "p99", "p99.9", "max", "errors"
        );
        let ms = |us: u64| us as f64 / 1000.0;
        for m in self
            .ops
            .iter()
            .chain(std::iter::once(&self.overall))
            .chain(&self.derived)
        {
            let _ = writeln!(
                s,
                "{:<28} {:>10} {:>12.1} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>8}",
                m.name,
                m.count,
                m.per_sec,
                ms(m.p50_us),
                ms(m.p90_us),
                ms(m.p99_us),
                ms(m.p999_us),
                ms(m.max_us),
                m.errors
            );
        }
        if !self.errors.is_empty() {
            let _ = writeln!(s, "errors by code:");
            for (label, n) in &self.errors {
                let _ = writeln!(s, "  {label:<32} {n}");
            }
        }
        if self.loadgen_cpu_secs > 0.0 {
            let _ = writeln!(
                s,
                "loadgen CPU: {:.1} s, {:.0}% of {} core(s)",
                self.loadgen_cpu_secs,
                self.loadgen_cpu_share * 100.0,
                self.cores
            );
        }
        if let Some(c) = &self.server_cpu {
            let _ = writeln!(
                s,
                "server CPU(s) {}: {:.0}% busy over the measured {:.1} s, {:.2} µs per {}",
                c.cpus,
                c.busy_share * 100.0,
                c.secs,
                c.busy_us_per_unit,
                match self.kind.as_str() {
                    "lock" => "lock",
                    "watch_storm" => "round",
                    _ => "op",
                }
            );
        }
        if self.lost_requests > 0 {
            let _ = writeln!(s, "requests without a reply: {}", self.lost_requests);
        }
        for m in &self.messages {
            let _ = writeln!(s, "note: {m}");
        }
        s
    }
}

/// One workload against two servers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Comparison {
    pub a: RunResult,
    pub b: RunResult,
    /// B's primary throughput over A's.
    pub throughput_ratio_b_over_a: f64,
    /// B's primary p99 over A's (below 1: B is faster).
    pub p99_ratio_b_over_a: f64,
}

fn ratio(b: f64, a: f64) -> f64 {
    if a > 0.0 { b / a } else { 0.0 }
}

impl Comparison {
    pub fn new(a: RunResult, b: RunResult) -> Comparison {
        Comparison {
            throughput_ratio_b_over_a: ratio(b.primary.per_sec, a.primary.per_sec),
            p99_ratio_b_over_a: ratio(b.primary.p99_us as f64, a.primary.p99_us as f64),
            a,
            b,
        }
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let name = &self.a.primary.name;
        let _ = writeln!(s, "== comparison ({}; {name}) ==", self.a.workload);
        let _ = writeln!(
            s,
            "{:<24} {:>14} {:>14} {:>8}",
            "", self.a.label, self.b.label, "B/A"
        );
        let _ = writeln!(
            s,
            "{:<24} {:>14.0} {:>14.0} {:>8.2}",
            "throughput (/s)",
            self.a.primary.per_sec,
            self.b.primary.per_sec,
            self.throughput_ratio_b_over_a
        );
        for (what, a, b) in [
            ("p50 (ms)", self.a.primary.p50_us, self.b.primary.p50_us),
            ("p99 (ms)", self.a.primary.p99_us, self.b.primary.p99_us),
            ("p99.9 (ms)", self.a.primary.p999_us, self.b.primary.p999_us),
        ] {
            let _ = writeln!(
                s,
                "{what:<24} {:>14.3} {:>14.3} {:>8.2}",
                a as f64 / 1000.0,
                b as f64 / 1000.0,
                ratio(b as f64, a as f64)
            );
        }
        if let (Some(a), Some(b)) = (&self.a.server_cpu, &self.b.server_cpu) {
            let _ = writeln!(
                s,
                "{:<24} {:>13.0}% {:>13.0}% {:>8.2}",
                "server CPU busy",
                a.busy_share * 100.0,
                b.busy_share * 100.0,
                ratio(b.busy_share, a.busy_share)
            );
            let _ = writeln!(
                s,
                "{:<24} {:>14.2} {:>14.2} {:>8.2}",
                "server CPU µs per unit",
                a.busy_us_per_unit,
                b.busy_us_per_unit,
                ratio(b.busy_us_per_unit, a.busy_us_per_unit)
            );
        }
        let _ = writeln!(
            s,
            "{:<24} {:>14} {:>14}",
            "errors", self.a.errors_total, self.b.errors_total
        );
        s
    }
}

/// What `--json` writes: one run, or a comparison.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Output {
    Comparison(Box<Comparison>),
    Run(Box<RunResult>),
}
