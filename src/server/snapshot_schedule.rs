//! When the next snapshot is due. ZooKeeper's `SyncRequestProcessor` decides it this way:
//! after a random number of txns between half of `snapCount` (exclusive) and all of it,
//! drawn again after each snapshot, or after a random share of `snapSizeLimitInKb` of log
//! bytes drawn the same way. The servers of an ensemble then do not all snapshot at once,
//! and on average a snapshot comes every 3/4 of `snapCount`.

/// Txns and log bytes since the last snapshot, against this round's drawn thresholds.
#[derive(Debug)]
pub struct SnapshotSchedule {
    txns_max: u64,
    bytes_max: u64,
    txns_due: u64,
    bytes_due: u64,
    txns_since: u64,
    bytes_since: u64,
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
    pub fn new(txns_max: u64, bytes_max: u64) -> SnapshotSchedule {
        let mut schedule = SnapshotSchedule {
            txns_max,
            bytes_max,
            txns_due: 0,
            bytes_due: 0,
            txns_since: 0,
            bytes_since: 0,
        };
        schedule.restart_with(random_roll(), random_roll());
        schedule
    }

    /// Counts what was just logged.
    pub fn note(&mut self, txns: u64, bytes: u64) {
        self.txns_since += txns;
        self.bytes_since += bytes;
    }

    pub fn is_due(&self) -> bool {
        self.txns_since >= self.txns_due || self.bytes_since >= self.bytes_due
    }

    /// A snapshot was started: counts from zero against newly drawn thresholds.
    pub fn restart(&mut self) {
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
    fn a_snapshot_is_due_at_the_drawn_txn_count_or_byte_count_whichever_comes_first() {
        let mut s = SnapshotSchedule::new(100, 1_000);
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
