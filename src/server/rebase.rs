//! Moving the live tree onto the snapshot just written (ARCHITECTURE.md, "Durability").
//!
//! Without this, every node created since the server started stays in the in-memory overlay,
//! even though the newest snapshot file holds it and could serve it in place. After a
//! snapshot at zxid Z is written, the snapshot thread maps the file (with the same checks as a
//! restart) and replays onto it the log records the commit executor committed after Z, which
//! the executor streams to it batch by batch. When the stream is momentarily drained, it hands
//! the caught-up tree back; the commit executor applies the last few batches itself and swaps
//! the tree in. The old overlay is then freed, so memory holds only what changed since the
//! last snapshot.
//!
//! This is exactly recovery (snapshot plus log replay, the path the crash tests exercise) run
//! while the server is up, so the swapped-in tree equals the live one; the swap
//! (`CommitCore::replace_tree`) still checks the zxid, node count, data size and ephemeral
//! count, and asserts on a mismatch.
//!
//! The commit path never waits on it: records are offered with a non-blocking send, and a
//! full queue or a backlog past its limit abandons the rebase (the tree simply stays as it
//! is until the next snapshot).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};

use crate::core::tree::DataTree;
use crate::server::limits::{
    MEMORY_RELEASE_QUIET_MS, REBASE_BACKLOG_BYTES_MAX, REBASE_QUEUE_BATCHES_MAX,
    TREE_MEMORY_RELEASE_DELAY_MS,
};
use crate::server::stats::CommitStats;
use crate::storage::log::{RECORD_HEADER_BYTES, decode_record, record_zxid};

/// An executor's side of moving onto its snapshots (standalone and replicated alike): the
/// link while a move is under way, and when to return memory to the system after the last
/// swap (`server::memory`).
#[derive(Default)]
pub struct Rebasing {
    link: Option<RebaseLink>,
    release_memory_at: Option<std::time::Instant>,
    /// When `poll` handed out a rebased tree: the swap runs until `swapped`.
    swap_started: Option<std::time::Instant>,
    /// Writes the snapshots, runs the moves and frees the replaced trees.
    worker: crate::server::snapshot_worker::SnapshotWorker,
}

impl Rebasing {
    /// Starts a move onto the snapshot being written now; returns the snapshot thread's end.
    pub fn start(&mut self) -> RebaseFeed {
        let (link, feed) = link();
        self.link = Some(link);
        feed
    }

    /// Gives up the move under way (the executor's tree is being replaced from elsewhere).
    pub fn abandon(&mut self) {
        self.link = None;
    }

    pub fn is_under_way(&self) -> bool {
        self.link.is_some()
    }

    /// Offers a committed batch (see [`RebaseLink::offer`]); a full queue abandons the move.
    pub fn offer(&mut self, batch: &[u8], stats: &CommitStats) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let progress = link.offer(batch);
        assert!(
            self.settle(progress, stats).is_none(),
            "an offer never completes a move"
        );
    }

    /// The moved tree, caught up to `live_zxid`, once the snapshot thread has it: the caller
    /// swaps it in and passes what it replaced to [`Rebasing::swapped`].
    pub fn poll(&mut self, live_zxid: i64, stats: &CommitStats) -> Option<DataTree> {
        let started = std::time::Instant::now();
        let progress = self.link.as_mut()?.poll(live_zxid);
        let tree = self.settle(progress, stats)?;
        self.swap_started = Some(started);
        Some(tree)
    }

    /// The thread that writes this executor's snapshots (`server::snapshot_worker`).
    pub fn worker(&mut self) -> &mut crate::server::snapshot_worker::SnapshotWorker {
        &mut self.worker
    }

    fn settle(&mut self, progress: Progress, stats: &CommitStats) -> Option<DataTree> {
        use std::sync::atomic::Ordering::Relaxed;
        match progress {
            Progress::Pending => None,
            Progress::Abandoned(why) => {
                eprintln!("zoo: snapshot rebase abandoned: {why}");
                self.link = None;
                stats.rebases_abandoned.fetch_add(1, Relaxed);
                None
            }
            Progress::Ready(tree) => {
                self.link = None;
                stats.rebases.fetch_add(1, Relaxed);
                Some(tree)
            }
        }
    }

    /// After a swap: frees the replaced trees later, off the commit path, and schedules
    /// returning their memory `TREE_MEMORY_RELEASE_DELAY_MS` from now. Counts how long the
    /// commit path spent on the swap, from `poll` (`zoo_snapshot_rebase_swap_max_micros`).
    pub fn swapped(&mut self, replaced: impl Send + 'static, stats: &CommitStats) {
        use std::sync::atomic::Ordering::Relaxed;
        self.worker.drop_later(replaced);
        if let Some(started) = self.swap_started.take() {
            let micros = started.elapsed().as_micros() as u64;
            stats.rebase_swap_max_micros.fetch_max(micros, Relaxed);
        }
        self.release_memory_at = Some(
            std::time::Instant::now()
                + std::time::Duration::from_millis(TREE_MEMORY_RELEASE_DELAY_MS),
        );
    }

    /// On a timer tick: returns free memory to the system if a swap scheduled it, it is due,
    /// and no writes were committed for `MEMORY_RELEASE_QUIET_MS` (`last_writes`: when the
    /// executor last committed one, as its snapshot schedule counted it). The return runs on the
    /// commit path and takes tens of milliseconds after a large tree was freed
    /// (`zoo_memory_release_max_micros`), so under steady writes it waits: they reuse the
    /// freed memory anyway.
    pub fn release_memory_if_due(
        &mut self,
        last_writes: Option<std::time::Instant>,
        stats: &CommitStats,
    ) {
        use std::sync::atomic::Ordering::Relaxed;
        let now = std::time::Instant::now();
        let quiet = last_writes.is_none_or(|at| {
            now.duration_since(at) >= std::time::Duration::from_millis(MEMORY_RELEASE_QUIET_MS)
        });
        if quiet && self.release_memory_at.is_some_and(|at| at <= now) {
            self.release_memory_at = None;
            crate::server::memory::release_free_pages();
            let micros = now.elapsed().as_micros() as u64;
            stats.memory_release_max_micros.fetch_max(micros, Relaxed);
        }
    }
}

/// Encoded log records of one commit batch, as appended to the log.
pub type RecordBatch = Arc<Vec<u8>>;

/// The commit executor's end of a rebase in progress.
pub struct RebaseLink {
    records: SyncSender<RecordBatch>,
    result: Receiver<DataTree>,
    /// Every batch offered since the snapshot, for the final catch-up, with the zxid of its
    /// last record: the catch-up skips a batch the snapshot thread has wholly replayed
    /// without reading it.
    backlog: VecDeque<(i64, RecordBatch)>,
    backlog_bytes: usize,
}

/// The snapshot thread's end.
pub struct RebaseFeed {
    records: Receiver<RecordBatch>,
    result: SyncSender<DataTree>,
}

pub fn link() -> (RebaseLink, RebaseFeed) {
    let (records_tx, records_rx) = std::sync::mpsc::sync_channel(REBASE_QUEUE_BATCHES_MAX);
    let (result_tx, result_rx) = std::sync::mpsc::sync_channel(1);
    (
        RebaseLink {
            records: records_tx,
            result: result_rx,
            backlog: VecDeque::new(),
            backlog_bytes: 0,
        },
        RebaseFeed {
            records: records_rx,
            result: result_tx,
        },
    )
}

/// What the commit executor should do with its link after an offer or a poll.
pub enum Progress {
    Pending,
    /// The rebase cannot finish: drop the link.
    Abandoned(&'static str),
    /// The tree to swap in, caught up to the executor's last zxid.
    Ready(DataTree),
}

impl RebaseLink {
    /// Offers a committed batch (records after the snapshot's zxid, in order).
    pub fn offer(&mut self, batch: &[u8]) -> Progress {
        let last_zxid = last_record_zxid(batch);
        let batch: RecordBatch = Arc::new(batch.to_vec());
        self.backlog_bytes += batch.len();
        if self.backlog_bytes > REBASE_BACKLOG_BYTES_MAX {
            return Progress::Abandoned("too many writes while the snapshot was written");
        }
        match self.records.try_send(batch.clone()) {
            // Disconnected: the snapshot thread has finished, with its tree waiting for `poll`
            // or with none (then `poll` abandons); either way the backlog covers this batch.
            Ok(()) | Err(TrySendError::Disconnected(_)) => {
                self.backlog.push_back((last_zxid, batch));
                Progress::Pending
            }
            Err(TrySendError::Full(_)) => Progress::Abandoned("the replay fell behind"),
        }
    }

    /// Checks for the snapshot thread's tree; if it is there, applies the batches it has not
    /// seen, so the result holds everything up to `live_zxid`.
    pub fn poll(&mut self, live_zxid: i64) -> Progress {
        let mut tree = match self.result.try_recv() {
            Ok(tree) => tree,
            Err(TryRecvError::Empty) => return Progress::Pending,
            Err(TryRecvError::Disconnected) => {
                return Progress::Abandoned("the snapshot thread quit");
            }
        };
        // The snapshot thread replayed all but the last batch or two. Skipping a replayed batch
        // by its last zxid matters: walking the records of a backlog of several megabytes
        // took 5–6 ms of the commit path per swap.
        for (last_zxid, batch) in self.backlog.drain(..) {
            if last_zxid > tree.last_zxid() {
                apply_records(&mut tree, &batch);
            }
        }
        assert_eq!(tree.last_zxid(), live_zxid, "a rebased tree is caught up");
        Progress::Ready(tree)
    }
}

/// The records of `batch` (encoded, as appended to the log), each with its zxid, read from
/// the record header without decoding the rest.
fn records_of(batch: &[u8]) -> impl Iterator<Item = (i64, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= batch.len() {
            return None;
        }
        let length = u32::from_be_bytes(batch[at..at + 4].try_into().expect("4 bytes")) as usize;
        let record = &batch[at..at + RECORD_HEADER_BYTES + length];
        at += record.len();
        Some((record_zxid(record).expect("a whole record"), record))
    })
}

/// The zxid of the last record in `batch`, or `i64::MAX` for an empty batch, which then is
/// never skipped. Reads the record headers only; the batch was just encoded, so its bytes
/// are in cache.
fn last_record_zxid(batch: &[u8]) -> i64 {
    records_of(batch).last().map_or(i64::MAX, |(zxid, _)| zxid)
}

/// Applies the records of `batch` that `tree` does not hold yet.
fn apply_records(tree: &mut DataTree, batch: &[u8]) {
    let mut scratch = Vec::new();
    for (zxid, record) in records_of(batch) {
        // A batch the snapshot thread was replaying when it handed its tree back is partly
        // applied: look at the zxid before decoding.
        if zxid <= tree.last_zxid() {
            continue;
        }
        let (header, txn) = decode_record(record).expect("our own encoded record");
        tree.apply(&header, &txn, &mut scratch);
        scratch.clear();
    }
}

impl RebaseFeed {
    /// Replays the streamed batches onto `tree` (the snapshot just written, mapped) until the
    /// stream is drained, then hands the tree back. Returns quietly if the executor gave up.
    pub fn catch_up(self, mut tree: DataTree) {
        loop {
            match self.records.try_recv() {
                Ok(batch) => apply_records(&mut tree, &batch),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        let _ = self.result.send(tree);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::txn::{Txn, TxnHeader};
    use crate::storage::log::encode_record;

    /// Records of `count` creates, the first at `first_zxid`: "/n<zxid>" under the root.
    fn batch(first_zxid: i64, count: i64) -> Vec<u8> {
        let mut out = Vec::new();
        for zxid in first_zxid..first_zxid + count {
            let header = TxnHeader {
                session_id: 0,
                xid: 1,
                zxid,
                time_ms: 0,
            };
            let txn = Txn::Create {
                path: format!("/n{zxid}").into(),
                data: Some(Arc::from(&b"v"[..])),
                acl: crate::jute::records::open_acl_unsafe_shared(),
                ephemeral_owner: 0,
                parent_cversion: 0,
            };
            encode_record(&header, &txn, &mut out);
        }
        out
    }

    #[test]
    fn the_last_record_zxid_is_read_from_the_length_prefixes() {
        assert_eq!(last_record_zxid(&batch(7, 1)), 7);
        assert_eq!(last_record_zxid(&batch(7, 5)), 11);
        assert_eq!(last_record_zxid(&[]), i64::MAX);
    }

    /// The snapshot thread replays the first two batches and hands its tree back; the last two
    /// reach only the backlog. The catch-up skips the replayed batches unread and applies the
    /// rest, so the result equals the tree that applied all twelve creates directly (`poll`
    /// also asserts the zxid). To show they are not read, the two replayed batches' bytes in
    /// the backlog are swapped for a create at zxid 100: read, it would be applied and the
    /// zxid check would fail.
    #[test]
    fn a_rebase_skips_the_replayed_batches_and_applies_the_rest() {
        let batches: Vec<Vec<u8>> = (0..4).map(|i| batch(1 + 3 * i, 3)).collect();
        let (mut link, feed) = link();
        for b in &batches[..2] {
            assert!(matches!(link.offer(b), Progress::Pending));
        }
        feed.catch_up(DataTree::new());
        for b in &batches[2..] {
            assert!(matches!(link.offer(b), Progress::Pending));
        }
        for (_, replayed) in link.backlog.iter_mut().take(2) {
            *replayed = Arc::new(batch(100, 1));
        }
        let Progress::Ready(rebased) = link.poll(12) else {
            panic!("the snapshot thread's tree is ready");
        };
        let mut direct = DataTree::new();
        for b in &batches {
            apply_records(&mut direct, b);
        }
        direct.assert_same_figures(&rebased);
        for zxid in 1..=12 {
            let p = format!("/n{zxid}");
            assert_eq!(rebased.get(&p).map(|n| n.czxid), Some(zxid), "{p}");
        }
    }
}
