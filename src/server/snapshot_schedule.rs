//! When the next snapshot is due. ZooKeeper's `SyncRequestProcessor` decides it this way:
//! after a random number of txns between half of `snapCount` (exclusive) and all of it,
//! drawn again after each snapshot, or after a random share of `snapSizeLimitInKb` of log
//! bytes drawn the same way. The servers of an ensemble then do not all snapshot at once,
//! and on average a snapshot comes every 3/4 of `snapCount`. A snapshot that comes due while
//! the previous one is still being written is skipped, and the count starts afresh (ZooKeeper:
//! "Too busy to snap, skipping"). Under a write load the snapshot thread cannot keep up
//! with, snapshots then come a drawn count apart instead of back to back.
//!
//! zoo adds one rule ZooKeeper does not have (`zoo.idle_snapshot_ms`): once writes have
//! stopped for that long after at least `zoo.idle_snapshot_min_txns` txns, a snapshot is due
//! too. The server then moves its tree onto that file, so an idle server holds in memory
//! none of the znodes written before it went idle, and a restart replays no log.

/// One executor's snapshots, standalone or replicated alike: when the next one is due, and
/// whether one is being written (at most one at a time).
#[derive(Debug)]
pub struct Snapshots {
    pub schedule: SnapshotSchedule,
    in_progress: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Held by the snapshot thread for as long as it runs: clears the "snapshot in progress" flag
/// when dropped, whether the thread finishes, panics or never starts, so one failure cannot
/// stop snapshots (and log purging) for good.
pub struct SnapshotInProgress(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for SnapshotInProgress {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

impl Snapshots {
    pub fn new(schedule: SnapshotSchedule) -> Snapshots {
        Snapshots {
            schedule,
            in_progress: Default::default(),
        }
    }

    /// Claims the right to write the next snapshot: the guard to hand to the thread that
    /// writes it, with the count started afresh. `None` if one is still being written: as
    /// ZooKeeper ("Too busy to snap, skipping"), this one is skipped and the count starts
    /// afresh too, so the next comes a drawn count later instead of back to back.
    pub fn try_start(&mut self) -> Option<SnapshotInProgress> {
        if self
            .in_progress
            .swap(true, std::sync::atomic::Ordering::Acquire)
        {
            self.schedule.skipped();
            return None;
        }
        self.schedule.started();
        Some(SnapshotInProgress(self.in_progress.clone()))
    }

    /// Writes stopped after enough txns (`SnapshotSchedule::is_idle_due`) and no snapshot
    /// is being written.
    pub fn idle_due(&self) -> bool {
        self.schedule.is_idle_due(std::time::Instant::now())
            && !self.in_progress.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Txns and log bytes since the last snapshot, against this round's drawn thresholds.
#[derive(Debug)]
pub struct SnapshotSchedule {
    txns_max: u64,
    bytes_max: u64,
    txns_due: u64,
    bytes_due: u64,
    txns_since: u64,
    bytes_since: u64,
    /// Txns since the last snapshot that was taken (a skipped one restarts the count above,
    /// not this): what the idle rule waits to cover.
    txns_uncovered: u64,
    /// When `note` last counted a txn.
    last_txn: Option<std::time::Instant>,
    idle: IdleRule,
}

/// zoo's idle rule: `zoo.idle_snapshot_ms` (0: never) and `zoo.idle_snapshot_min_txns`.
#[derive(Debug, Clone, Copy)]
pub struct IdleRule {
    pub quiet_ms: u64,
    pub min_txns: u64,
}

impl IdleRule {
    pub const OFF: IdleRule = IdleRule {
        quiet_ms: 0,
        min_txns: 1,
    };

    pub fn of(config: &crate::config::Config) -> IdleRule {
        IdleRule {
            quiet_ms: config.idle_snapshot_ms,
            min_txns: config.idle_snapshot_min_txns,
        }
    }
}

/// A threshold in `max/2 + 1 ..= max` (1 for a `max` of 0 or 1), picked by `roll`.
fn threshold(max: u64, roll: u64) -> u64 {
    let max = max.max(1);
    let half = max / 2;
    half + 1 + roll % (max - half)
}

fn random_roll() -> u64 {
    let mut bytes = [0u8; 8];
    // Without randomness every round takes the full count, which is still a valid schedule.
    let _ = getrandom::getrandom(&mut bytes);
    u64::from_le_bytes(bytes)
}

impl SnapshotSchedule {
    /// `txns_max` is `snapCount`, `bytes_max` `snapSizeLimitInKb` in bytes.
    pub fn new(txns_max: u64, bytes_max: u64, idle: IdleRule) -> SnapshotSchedule {
        let mut schedule = SnapshotSchedule {
            txns_max,
            bytes_max,
            txns_due: 0,
            bytes_due: 0,
            txns_since: 0,
            bytes_since: 0,
            txns_uncovered: 0,
            last_txn: None,
            idle,
        };
        schedule.restart_with(random_roll(), random_roll());
        schedule
    }

    /// Counts what was just logged.
    pub fn note(&mut self, txns: u64, bytes: u64) {
        self.txns_since += txns;
        self.bytes_since += bytes;
        self.txns_uncovered += txns;
        if txns > 0 {
            self.last_txn = Some(std::time::Instant::now());
        }
    }

    /// When `note` last counted a txn: the executor's last write.
    pub fn last_txn(&self) -> Option<std::time::Instant> {
        self.last_txn
    }

    /// Whether writes stopped the idle rule's `quiet_ms` ago (0: never) after at least its
    /// `min_txns` txns since the last snapshot.
    pub fn is_idle_due(&self, now: std::time::Instant) -> bool {
        let IdleRule { quiet_ms, min_txns } = self.idle;
        quiet_ms > 0
            && self.txns_uncovered >= min_txns.max(1)
            && self.last_txn.is_some_and(|at| {
                now.saturating_duration_since(at) >= std::time::Duration::from_millis(quiet_ms)
            })
    }

    pub fn is_due(&self) -> bool {
        self.txns_since >= self.txns_due || self.bytes_since >= self.bytes_due
    }

    /// A snapshot was started: counts from zero against newly drawn thresholds.
    pub fn started(&mut self) {
        self.txns_uncovered = 0;
        self.restart_with(random_roll(), random_roll());
    }

    /// A snapshot came due while the previous one was still being written and was skipped:
    /// the next one is due a newly drawn count from now. The txns stay uncovered for the
    /// idle rule.
    pub fn skipped(&mut self) {
        self.restart_with(random_roll(), random_roll());
    }

    fn restart_with(&mut self, txns_roll: u64, bytes_roll: u64) {
        self.txns_since = 0;
        self.bytes_since = 0;
        self.txns_due = threshold(self.txns_max, txns_roll);
        self.bytes_due = threshold(self.bytes_max, bytes_roll);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_threshold_lies_between_half_and_all_of_the_limit_and_reaches_both_ends() {
        for max in [0u64, 1, 2, 3, 10, 97, 100_000] {
            let drawn: Vec<u64> = (0..20_000u64)
                .map(|i| threshold(max, i.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
                .collect();
            let low = max.max(1) / 2 + 1;
            let high = max.max(1);
            assert!(drawn.iter().all(|&t| (low..=high).contains(&t)), "{max}");
            if max <= 97 {
                assert!(drawn.contains(&low) && drawn.contains(&high), "{max}");
            }
        }
    }

    #[test]
    fn an_idle_snapshot_is_due_only_after_enough_txns_and_a_quiet_period() {
        let rule = IdleRule {
            quiet_ms: 500,
            min_txns: 10,
        };
        let mut s = SnapshotSchedule::new(100_000, u64::MAX, rule);
        let mut off = SnapshotSchedule::new(
            100_000,
            u64::MAX,
            IdleRule {
                quiet_ms: 0,
                ..rule
            },
        );
        let later = |ms| std::time::Instant::now() + std::time::Duration::from_millis(ms);
        assert!(!s.is_idle_due(later(10_000)), "no txns yet");
        s.note(9, 900);
        assert!(!s.is_idle_due(later(10_000)), "too few txns");
        s.note(1, 100);
        off.note(10, 1_000);
        assert!(!s.is_idle_due(std::time::Instant::now()), "not quiet yet");
        assert!(s.is_idle_due(later(600)));
        assert!(!off.is_idle_due(later(600)), "0 turns it off");
        s.skipped();
        assert!(
            s.is_idle_due(later(600)),
            "a skipped snapshot covers nothing: the txns still count"
        );
        s.started();
        assert!(
            !s.is_idle_due(later(600)),
            "counts from the last snapshot taken"
        );
    }

    #[test]
    fn one_snapshot_at_a_time_and_a_busy_one_skips_the_next() {
        let mut s = Snapshots::new(SnapshotSchedule::new(100, u64::MAX, IdleRule::OFF));
        let first = s.try_start().expect("nothing in progress");
        assert!(s.try_start().is_none(), "skipped while the first runs");
        drop(first);
        assert!(s.try_start().is_some(), "the guard's drop frees the slot");
    }

    #[test]
    fn a_snapshot_is_due_at_the_drawn_txn_count_or_byte_count_whichever_comes_first() {
        let mut s = SnapshotSchedule::new(100, 1_000, IdleRule::OFF);
        s.restart_with(9, 0);
        assert_eq!((s.txns_due, s.bytes_due), (60, 501));
        s.note(59, 500);
        assert!(!s.is_due());
        s.note(1, 0);
        assert!(s.is_due());
        s.restart_with(0, 0);
        assert!(!s.is_due());
        s.note(1, 501);
        assert!(s.is_due(), "the byte threshold alone makes it due");
    }
}
