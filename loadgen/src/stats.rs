//! What a run measures. Each core keeps its own [`Stats`] (no sharing on the hot path) and the
//! runner merges them at the end; [`Progress`] holds the only cross-core counters, one padded
//! pair per core, read once a second for the progress line.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::limits;
use crate::protocol::error_label;
use crate::workload::Op;

/// What a latency is recorded under: a ZooKeeper request type, or a recipe-level measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Op(Op),
    /// Lock workload: from the attempt's (intended) start until the lock is held.
    LockAcquire,
    /// Watch storm: from the setData reply to the last notification of the round (0 when every
    /// notification was read before the reply).
    WatchNotify,
    /// Watch storm: from sending the setData to the last notification of the round.
    WatchFanout,
}

pub const METRIC_COUNT: usize = Op::ALL.len() + 3;

impl Metric {
    pub fn index(self) -> usize {
        match self {
            Metric::Op(op) => op.index(),
            Metric::LockAcquire => Op::ALL.len(),
            Metric::WatchNotify => Op::ALL.len() + 1,
            Metric::WatchFanout => Op::ALL.len() + 2,
        }
    }

    pub fn from_index(index: usize) -> Metric {
        if index < Op::ALL.len() {
            Metric::Op(Op::ALL[index])
        } else if index == Op::ALL.len() {
            Metric::LockAcquire
        } else if index == Op::ALL.len() + 1 {
            Metric::WatchNotify
        } else {
            Metric::WatchFanout
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::Op(op) => op.name(),
            Metric::LockAcquire => "lock_acquire",
            Metric::WatchNotify => "watch_notify",
            Metric::WatchFanout => "watch_fanout",
        }
    }

    pub fn is_op(self) -> bool {
        matches!(self, Metric::Op(_))
    }
}

/// Which latencies feed the per-second series and the headline figure: every request (mix), or
/// one recipe measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Primary {
    Ops,
    Metric(Metric),
}

impl Primary {
    pub fn covers(self, metric: Metric) -> bool {
        match self {
            Primary::Ops => metric.is_op(),
            Primary::Metric(m) => m == metric,
        }
    }
}

/// The run's clock: requests meant to start before `measure_start` are warm-up, none start at or
/// after `measure_end`.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub start: Instant,
    pub measure_start: Instant,
    pub measure_end: Instant,
}

impl Timing {
    pub fn new(start: Instant, warmup: Duration, duration: Duration) -> Timing {
        Timing {
            start,
            measure_start: start + warmup,
            measure_end: start + warmup + duration,
        }
    }
}

pub fn new_histogram(sigfigs: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, limits::LATENCY_MAX_US, sigfigs).expect("valid histogram bounds")
}

fn micros(latency: Duration) -> u64 {
    (latency.as_micros() as u64).clamp(1, limits::LATENCY_MAX_US)
}

pub struct Second {
    pub hist: Histogram<u64>,
    pub ops: u64,
    pub errors: u64,
}

pub struct Stats {
    pub primary: Primary,
    /// Per metric, created on first use.
    pub hist: Vec<Option<Histogram<u64>>>,
    pub counts: [u64; METRIC_COUNT],
    pub op_errors: [u64; METRIC_COUNT],
    /// Error label (`NONODE (-101)`) → count, replies and client-side failures alike.
    pub errors: BTreeMap<String, u64>,
    /// Per second of the timed phase, primary metric only.
    pub seconds: Vec<Second>,
    pub warmup_completed: u64,
    /// Requests sent that never got a reply (connection lost or timed out).
    pub lost: u64,
    /// Latest completion of a measured primary item.
    pub last_measured: Option<Instant>,
    /// What went wrong, in words (distinct, at most `MESSAGES_MAX`).
    pub messages: Vec<String>,
}

impl Stats {
    pub fn new(primary: Primary) -> Stats {
        Stats {
            primary,
            hist: (0..METRIC_COUNT).map(|_| None).collect(),
            counts: [0; METRIC_COUNT],
            op_errors: [0; METRIC_COUNT],
            errors: BTreeMap::new(),
            seconds: Vec::new(),
            warmup_completed: 0,
            lost: 0,
            last_measured: None,
            messages: Vec::new(),
        }
    }

    /// Keeps `message` for the report (distinct messages, at most `MESSAGES_MAX`).
    pub fn note(&mut self, message: String) {
        if self.messages.len() < limits::MESSAGES_MAX && !self.messages.contains(&message) {
            self.messages.push(message);
        }
    }

    /// Records one completed item meant to start at `intended`, finished at `done`, with ZooKeeper
    /// error code `err` (0 = success). Returns whether it fell in the timed phase.
    pub fn record(
        &mut self,
        timing: &Timing,
        metric: Metric,
        intended: Instant,
        done: Instant,
        err: i32,
    ) -> bool {
        let latency = done.saturating_duration_since(intended);
        self.record_latency(timing, metric, intended, latency, done, err)
    }

    /// Like [`Stats::record`] with the latency given: the item meant to start at `intended`
    /// (which decides its phase and second) took `latency`, and was done at `done`.
    pub fn record_latency(
        &mut self,
        timing: &Timing,
        metric: Metric,
        intended: Instant,
        latency: Duration,
        done: Instant,
        err: i32,
    ) -> bool {
        if intended < timing.measure_start {
            self.warmup_completed += 1;
            return false;
        }
        if intended >= timing.measure_end {
            return false;
        }
        let us = micros(latency);
        let index = metric.index();
        let hist = self.hist[index].get_or_insert_with(|| new_histogram(limits::HISTOGRAM_SIGFIGS));
        hist.saturating_record(us);
        self.counts[index] += 1;
        if err != 0 {
            self.op_errors[index] += 1;
            *self.errors.entry(error_label(err)).or_insert(0) += 1;
        }
        if self.primary.covers(metric) {
            self.last_measured = Some(self.last_measured.map_or(done, |l| l.max(done)));
            let second = intended.duration_since(timing.measure_start).as_secs() as usize;
            if second < limits::SECONDS_TRACKED_MAX {
                while self.seconds.len() <= second {
                    self.seconds.push(Second {
                        hist: new_histogram(limits::SECOND_HISTOGRAM_SIGFIGS),
                        ops: 0,
                        errors: 0,
                    });
                }
                let s = &mut self.seconds[second];
                s.hist.saturating_record(us);
                s.ops += 1;
                if err != 0 {
                    s.errors += 1;
                }
            }
        }
        true
    }

    /// A failure that is not a reply (connection lost, timeout, protocol violation): counted
    /// under `label`, with `lost` requests that will never complete.
    pub fn record_failure(&mut self, label: &str, lost: u64) {
        *self.errors.entry(label.to_string()).or_insert(0) += 1;
        self.lost += lost;
    }

    pub fn merge(&mut self, other: Stats) {
        for (index, h) in other.hist.into_iter().enumerate() {
            if let Some(h) = h {
                match &mut self.hist[index] {
                    Some(mine) => mine.add(&h).expect("histograms share bounds"),
                    slot => *slot = Some(h),
                }
            }
        }
        for i in 0..METRIC_COUNT {
            self.counts[i] += other.counts[i];
            self.op_errors[i] += other.op_errors[i];
        }
        for (label, n) in other.errors {
            *self.errors.entry(label).or_insert(0) += n;
        }
        for (i, s) in other.seconds.into_iter().enumerate() {
            if i < self.seconds.len() {
                let mine = &mut self.seconds[i];
                mine.hist.add(&s.hist).expect("histograms share bounds");
                mine.ops += s.ops;
                mine.errors += s.errors;
            } else {
                self.seconds.push(s);
            }
        }
        for m in other.messages {
            self.note(m);
        }
        self.warmup_completed += other.warmup_completed;
        self.lost += other.lost;
        self.last_measured = match (self.last_measured, other.last_measured) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

/// One core's counters, on its own cache lines so cores do not share them.
#[repr(align(128))]
#[derive(Default)]
pub struct CoreCounters {
    pub completed: AtomicU64,
    pub errors: AtomicU64,
}

/// Counters the progress line reads; each core writes only its own slot.
pub struct Progress {
    pub cores: Vec<CoreCounters>,
}

impl Progress {
    pub fn new(cores: usize) -> Progress {
        Progress {
            cores: (0..cores).map(|_| CoreCounters::default()).collect(),
        }
    }

    pub fn add(&self, core: usize, completed: u64, errors: u64) {
        let c = &self.cores[core];
        c.completed.fetch_add(completed, Relaxed);
        if errors != 0 {
            c.errors.fetch_add(errors, Relaxed);
        }
    }

    /// (completed, errors) over all cores.
    pub fn totals(&self) -> (u64, u64) {
        self.cores.iter().fold((0, 0), |(c, e), core| {
            (
                c + core.completed.load(Relaxed),
                e + core.errors.load(Relaxed),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_and_late_items_stay_out_of_the_histograms() {
        let start = Instant::now();
        let timing = Timing::new(start, Duration::from_secs(1), Duration::from_secs(2));
        let mut stats = Stats::new(Primary::Ops);
        let m = Metric::Op(Op::Get);
        assert!(!stats.record(&timing, m, start, start + Duration::from_millis(1), 0));
        let t = start + Duration::from_millis(1500);
        assert!(stats.record(&timing, m, t, t + Duration::from_micros(300), 0));
        assert!(stats.record(&timing, m, t, t + Duration::from_micros(300), -101));
        assert!(!stats.record(
            &timing,
            m,
            start + Duration::from_secs(3),
            start + Duration::from_secs(4),
            0
        ));
        assert_eq!(stats.counts[m.index()], 2);
        assert_eq!(stats.hist[m.index()].as_ref().unwrap().len(), 2);
        assert_eq!(stats.warmup_completed, 1);
        assert_eq!(stats.errors.get("NONODE (-101)"), Some(&1));
        assert_eq!(stats.seconds.len(), 1);
    }
}
