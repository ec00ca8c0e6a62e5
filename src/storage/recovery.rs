//! Start-up recovery (newest usable snapshot + log replay) and retention (purging old
//! snapshots and log segments). docs/FORMAT.md, "Loading" and "Retention".

use std::path::Path;
use std::time::{Duration, Instant};

use crate::core::commit::{CommitCore, CoreConfig};
use crate::core::txn::{Txn, TxnHeader};
use crate::storage::log::{self, RecoveryError};
use crate::storage::snapshot::{self, SnapshotError};

/// What recovery found, for the start-up message.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    pub snapshot_zxid: Option<i64>,
    pub snapshot_nodes: u64,
    pub snapshot_load_time: Duration,
    pub log_records: u64,
    pub log_replay_time: Duration,
    pub torn_tail_truncated: bool,
    /// Snapshots skipped because they were damaged, with why.
    pub skipped_snapshots: Vec<String>,
    /// The structure check of the snapshot the state was built on, still to run
    /// (docs/FORMAT.md, "Loading"): the caller runs it in the background.
    pub deferred_check: Option<snapshot::DeferredCheck>,
}

impl std::fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.snapshot_zxid {
            Some(zxid) => write!(
                f,
                "loaded snapshot {zxid:#x} ({} nodes) in {:?}; ",
                self.snapshot_nodes, self.snapshot_load_time
            )?,
            None => write!(f, "no snapshot; ")?,
        }
        write!(
            f,
            "replayed {} log records in {:?}",
            self.log_records, self.log_replay_time
        )?;
        if self.torn_tail_truncated {
            write!(f, "; truncated a torn log tail")?;
        }
        for s in &self.skipped_snapshots {
            write!(f, "; skipped damaged {s}")?;
        }
        Ok(())
    }
}

/// Rebuilds the commit core from `snapshot_dir` and `log_dir`. Tries snapshots newest first;
/// a damaged one is reported and the next older one tried, which works only while the log
/// still holds every txn after it.
pub fn recover_state(
    config: CoreConfig,
    snapshot_dir: &Path,
    log_dir: &Path,
    now_ms: i64,
    progress: impl FnMut(u64, u64),
) -> Result<(CommitCore, RecoveryReport), String> {
    let (core, (), report) = recover_with(
        config,
        snapshot_dir,
        log_dir,
        now_ms,
        progress,
        |core, (), header, txn| core.apply(&header, &txn, &mut Vec::new()),
    )?;
    Ok((core, report))
}

/// Encoded log records with their zxids, in log order.
pub type LogRecords = Vec<(i64, Vec<u8>)>;

/// For a replicated server: the newest usable snapshot becomes the state, and the log records
/// after it are returned unapplied, encoded, because they may not be committed (the leader
/// says which are; ARCHITECTURE.md R9).
pub fn recover_replicated(
    config: CoreConfig,
    snapshot_dir: &Path,
    log_dir: &Path,
    now_ms: i64,
    progress: impl FnMut(u64, u64),
) -> Result<(CommitCore, LogRecords, RecoveryReport), String> {
    recover_with(
        config,
        snapshot_dir,
        log_dir,
        now_ms,
        progress,
        |_core, records: &mut LogRecords, header, txn| {
            let mut bytes = Vec::new();
            log::encode_record(&header, &txn, &mut bytes);
            records.push((header.zxid, bytes));
        },
    )
}

fn recover_with<T: Default>(
    config: CoreConfig,
    snapshot_dir: &Path,
    log_dir: &Path,
    now_ms: i64,
    mut progress: impl FnMut(u64, u64),
    mut replay: impl FnMut(&mut CommitCore, &mut T, TxnHeader, Txn),
) -> Result<(CommitCore, T, RecoveryReport), String> {
    let mut report = RecoveryReport::default();
    let snapshots = snapshot::list_snapshots(snapshot_dir, true)
        .map_err(|e| format!("cannot list snapshots in {}: {e}", snapshot_dir.display()))?;
    let mut last_error: Option<String> = None;
    let mut candidates: Vec<Option<&Path>> =
        snapshots.iter().map(|(_, p)| Some(p.as_path())).collect();
    // With no usable snapshot, the log alone may still hold the whole history.
    candidates.push(None);
    for candidate in candidates {
        let started = Instant::now();
        let mut deferred_check = None;
        let mut core = match candidate {
            Some(path) => match snapshot::map_snapshot(path, &mut progress) {
                Ok((loaded, check)) => {
                    deferred_check = Some(check);
                    report.snapshot_zxid = Some(loaded.header.zxid);
                    report.snapshot_nodes = loaded.header.node_count;
                    let sessions = loaded
                        .sessions
                        .into_iter()
                        .map(|s| (s.id, s.timeout_ms, s.password));
                    CommitCore::restore(config.clone(), loaded.tree, sessions, now_ms)
                }
                Err(e @ SnapshotError::Corrupt { .. }) | Err(e @ SnapshotError::Io(..)) => {
                    report.skipped_snapshots.push(e.to_string());
                    last_error = Some(e.to_string());
                    continue;
                }
            },
            None => {
                report.snapshot_zxid = None;
                report.snapshot_nodes = 0;
                CommitCore::new(config.clone(), now_ms)
            }
        };
        report.snapshot_load_time = started.elapsed();
        let started = Instant::now();
        let after = core.last_zxid();
        let mut collected = T::default();
        let replayed = log::recover_after(log_dir, after, |header, txn| {
            replay(&mut core, &mut collected, header, txn);
        });
        match replayed {
            Ok(stats) => {
                report.log_records = stats.records;
                report.torn_tail_truncated = stats.torn_tail_truncated;
                report.log_replay_time = started.elapsed();
                report.deferred_check = deferred_check;
                core.restart_session_clocks(now_ms);
                // Replay read pages of the mapped snapshot; they stay in the page cache.
                core.tree().release_frozen_pages();
                return Ok((core, collected, report));
            }
            Err(e @ RecoveryError::Corrupt(_)) => {
                last_error = Some(e.to_string());
                if candidate.is_none() {
                    break;
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(last_error.unwrap_or_else(|| "no usable state found".into()))
}

/// Keeps the `retain` newest snapshots (at least 3) and deletes older ones, then every log
/// segment whose txns all precede the oldest retained snapshot. Returns the files deleted.
pub fn purge(snapshot_dir: &Path, log_dir: &Path, retain: usize) -> std::io::Result<Vec<String>> {
    let retain = retain.max(3);
    let snapshots = snapshot::list_snapshots(snapshot_dir, false)?;
    let mut deleted = Vec::new();
    if snapshots.len() <= retain {
        return Ok(deleted);
    }
    for (_, path) in &snapshots[retain..] {
        std::fs::remove_file(path)?;
        deleted.push(path.display().to_string());
    }
    let oldest_kept = snapshots[retain - 1].0;
    let segments = log::list_segments(log_dir).map_err(|e| std::io::Error::other(e.to_string()))?;
    for pair in segments.windows(2) {
        let (_, path) = &pair[0];
        let (next_first_zxid, _) = pair[1];
        if next_first_zxid <= oldest_kept + 1 {
            std::fs::remove_file(path)?;
            deleted.push(path.display().to_string());
        }
    }
    Ok(deleted)
}
