//! The commit executor: one glommio executor that orders every state change.
//!
//! It merges the shards' queues into one inbox, takes up to `COMMIT_BATCH_MAX` messages at a
//! time, runs each through the I/O-free [`CommitCore`], then publishes the new tree and the
//! batch's watch triggers to every shard, followed by each shard's replies (ARCHITECTURE.md
//! rules R1-R3). The durable log slots in between "apply" and "publish": a reply is only
//! released once the txns before it are durable.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use glommio::channels::local_channel::{self, LocalSender};
use glommio::channels::shared_channel::{ConnectedSender, SharedReceiver, SharedSender};

use crate::config::Config;
use crate::core::commit::{Attach, CommitCore, CoreConfig};
use crate::core::tree::Trigger;
use crate::server::limits::{COMMIT_BATCH_MAX, COMMIT_INBOX_MAX};
use crate::server::log_writer::LogWriter;
use crate::server::messages::{ConnectResult, ShardReply, ToCommit, ToShard};
use crate::server::publication::{Publisher, TreeDemand};
use crate::server::rebase::{self, Rebasing};
use crate::server::snapshot_schedule::{IdleRule, SnapshotInProgress, SnapshotSchedule, Snapshots};
use crate::server::stats::ServerStats;
use crate::server::wall_clock_ms;
use crate::storage::log::encode_record;
use crate::storage::snapshot::SessionRecord;

pub fn core_config(config: &Config) -> CoreConfig {
    CoreConfig {
        server_id: config.server_id,
        min_session_timeout_ms: config.min_session_timeout_ms,
        max_session_timeout_ms: config.max_session_timeout_ms,
        extended_types_enabled: config.extended_types_enabled,
        skip_acl: config.skip_acl,
        reconfig_enabled: config.reconfig_enabled,
        replicated: config.is_ensemble(),
    }
}

struct CommitExecutor {
    core: CommitCore,
    log: LogWriter,
    snapshots: Snapshots,
    snapshot_dir: std::path::PathBuf,
    /// `zoo.snapshot_rebase`.
    snapshot_rebase: bool,
    shards: Vec<ConnectedSender<ToShard>>,
    stats: Arc<ServerStats>,
    reap_per_tick_max: usize,
    /// Moving the tree onto the newest snapshot (`server::rebase`).
    rebase: Rebasing,
    /// When the shards get the tree (`server::publication`).
    publisher: Publisher,
}

/// Runs the commit executor until every shard has hung up.
pub async fn run(
    config: Arc<Config>,
    core: CommitCore,
    log_dir: std::path::PathBuf,
    inboxes: Vec<SharedReceiver<ToCommit>>,
    outboxes: Vec<SharedSender<ToShard>>,
    stats: Arc<ServerStats>,
    demand: Arc<TreeDemand>,
) {
    let ShardLinks {
        merged_tx,
        merged_rx,
        pumps,
        shards,
    } = link_shards(inboxes, outboxes).await;
    let per_tick = spawn_expiry_and_reap_timers(&config, &merged_tx);
    let log = match LogWriter::create(&log_dir, core.last_zxid() + 1).await {
        Ok(log) => log,
        Err(e) => {
            eprintln!(
                "zoo: FATAL: cannot start a log segment in {}: {e}",
                log_dir.display()
            );
            std::process::exit(1);
        }
    };
    let snapshots = Snapshots::new(SnapshotSchedule::new(
        config.snap_count,
        config.snap_size_limit_bytes,
        IdleRule::of(&config),
    ));
    let mut executor = CommitExecutor {
        core,
        log,
        snapshots,
        snapshot_dir: crate::storage::snapshot::snapshot_directory(&config.data_dir),
        snapshot_rebase: config.snapshot_rebase,
        shards,
        stats,
        reap_per_tick_max: per_tick,
        rebase: Rebasing::default(),
        publisher: Publisher::new(demand),
    };
    executor.publish_stats();
    let mut batch = Vec::with_capacity(COMMIT_BATCH_MAX);
    while next_batch(&merged_rx, &mut batch).await {
        executor.process_batch(&mut batch).await;
    }
    drop(pumps);
}

/// Waits for the next message, then takes whatever else is already queued, up to
/// `COMMIT_BATCH_MAX`, into `batch`. False once every sender has gone.
pub(crate) async fn next_batch(
    rx: &local_channel::LocalReceiver<ToCommit>,
    batch: &mut Vec<ToCommit>,
) -> bool {
    let Some(first) = rx.recv().await else {
        return false;
    };
    batch.push(first);
    while batch.len() < COMMIT_BATCH_MAX {
        match future::poll_once(rx.recv()).await {
            Some(Some(message)) => batch.push(message),
            _ => break,
        }
    }
    true
}

/// The commit side's ends of the shard channels.
pub(crate) struct ShardLinks {
    /// Every shard's messages and the timers', in one inbox.
    pub merged_tx: Rc<LocalSender<ToCommit>>,
    pub merged_rx: local_channel::LocalReceiver<ToCommit>,
    /// One task per shard moving its queue into the merged inbox; dropped at shutdown.
    pub pumps: Vec<glommio::Task<()>>,
    pub shards: Vec<ConnectedSender<ToShard>>,
}

/// Connects the shard channels, standalone or replicated alike.
pub(crate) async fn link_shards(
    inboxes: Vec<SharedReceiver<ToCommit>>,
    outboxes: Vec<SharedSender<ToShard>>,
) -> ShardLinks {
    let (merged_tx, merged_rx) = local_channel::new_bounded::<ToCommit>(COMMIT_INBOX_MAX);
    let merged_tx = Rc::new(merged_tx);
    let mut pumps = Vec::new();
    for inbox in inboxes {
        let tx = merged_tx.clone();
        pumps.push(glommio::spawn_local(async move {
            let rx = inbox.connect().await;
            while let Some(message) = rx.recv().await {
                if tx.send(message).await.is_err() {
                    break;
                }
            }
        }));
    }
    // Connect our outgoing ends only after the pumps exist: each shard connects its sender
    // to us before it connects its inbox, so the reverse order would deadlock at start-up.
    let mut shards = Vec::with_capacity(outboxes.len());
    for outbox in outboxes {
        shards.push(outbox.connect().await);
    }
    ShardLinks {
        merged_tx,
        merged_rx,
        pumps,
        shards,
    }
}

/// Starts the session-expiry and container/TTL-reaping timers; returns how many nodes one
/// reap tick may delete (`znode.container.maxPerMinute` spread over the ticks).
pub(crate) fn spawn_expiry_and_reap_timers(
    config: &Config,
    tx: &Rc<LocalSender<ToCommit>>,
) -> usize {
    let tick_ms = (config.tick_time_ms as u64 / 2).clamp(10, 500);
    spawn_timer(tx.clone(), tick_ms, || ToCommit::ExpiryTick);
    spawn_timer(tx.clone(), config.container_check_interval_ms, || {
        ToCommit::ReapTick
    });
    (config.container_max_per_minute as u64 * config.container_check_interval_ms / 60_000).max(1)
        as usize
}

pub(crate) fn spawn_timer(tx: Rc<LocalSender<ToCommit>>, period_ms: u64, make: fn() -> ToCommit) {
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(Duration::from_millis(period_ms)).await;
            if tx.send(make()).await.is_err() {
                break;
            }
        }
    })
    .detach();
}

impl CommitExecutor {
    async fn process_batch(&mut self, batch: &mut Vec<ToCommit>) {
        let now = wall_clock_ms();
        let mut replies: Vec<Vec<ShardReply>> =
            (0..self.shards.len()).map(|_| Vec::new()).collect();
        let mut triggers: Vec<(i64, Trigger)> = Vec::new();
        let mut scratch: Vec<Trigger> = Vec::new();
        let mut changed = false;
        let mut ticked = false;
        let mut writes = 0u64;
        let mut records: Vec<u8> = Vec::new();
        let mut txn_count = 0u64;
        self.poll_rebase();
        for message in batch.drain(..) {
            match message {
                ToCommit::Connect(attempt) => {
                    let connection = attempt.connection;
                    let result = if attempt.last_zxid_seen > self.core.last_zxid() {
                        ConnectResult::ZxidAhead
                    } else if attempt.session_id == 0 {
                        let (attach, (header, txn)) = self.core.create_session(
                            attempt.timeout_ms,
                            attempt.new_password,
                            connection,
                            now,
                            &mut scratch,
                        );
                        changed = true;
                        encode_record(&header, &txn, &mut records);
                        txn_count += 1;
                        triggers.extend(scratch.drain(..).map(|t| (header.zxid, t)));
                        attach_result(attach, &mut replies)
                    } else {
                        let attach = self.core.reattach_session(
                            attempt.session_id,
                            &attempt.password,
                            connection,
                            now,
                        );
                        attach_result(attach, &mut replies)
                    };
                    replies[connection.shard].push(ShardReply::Connect {
                        connection_id: connection.connection_id,
                        result,
                    });
                }
                ToCommit::Write {
                    connection, write, ..
                } => {
                    writes += 1;
                    self.core.touch(write.session_id, now);
                    let outcome = self.core.process_write(write, now, &mut scratch);
                    if let Some((header, txn)) = &outcome.txn {
                        changed = true;
                        encode_record(header, txn, &mut records);
                        txn_count += 1;
                        triggers.extend(scratch.drain(..).map(|t| (header.zxid, t)));
                    }
                    scratch.clear();
                    replies[connection.shard].push(ShardReply::Write {
                        connection_id: connection.connection_id,
                        reply: outcome.reply,
                    });
                }
                ToCommit::Touch { sessions } => {
                    for session in sessions {
                        self.core.touch(session, now);
                    }
                }
                ToCommit::Disconnected {
                    connection,
                    session_id,
                } => {
                    self.core.detach(session_id, connection);
                }
                ToCommit::ExpiryTick => {
                    ticked = true;
                    self.rebase.release_memory_if_due(
                        self.snapshots.schedule.last_txn(),
                        &self.stats.commit,
                    );
                    for session in self.core.expired_sessions(now) {
                        let owner = self.core.session_owner(session);
                        if let Some((header, txn)) =
                            self.core.close_session(session, now, &mut scratch)
                        {
                            changed = true;
                            encode_record(&header, &txn, &mut records);
                            txn_count += 1;
                            triggers.extend(scratch.drain(..).map(|t| (header.zxid, t)));
                        }
                        if let Some(owner) = owner {
                            replies[owner.shard].push(ShardReply::Close {
                                connection_id: owner.connection_id,
                            });
                        }
                    }
                }
                ToCommit::NeedTree => self.publisher.force(),
                ToCommit::Peer { .. } | ToCommit::PeerLost { .. } | ToCommit::RaftTick => {
                    unreachable!("no peers when standalone")
                }
                ToCommit::ReapTick => {
                    let candidates = self.core.reap_candidates(now);
                    for p in candidates.into_iter().take(self.reap_per_tick_max) {
                        if let Some((header, txn)) = self.core.reap(&p, now, &mut scratch) {
                            changed = true;
                            encode_record(&header, &txn, &mut records);
                            txn_count += 1;
                            triggers.extend(scratch.drain(..).map(|t| (header.zxid, t)));
                        }
                    }
                }
            }
        }
        // Group commit: one append and one fdatasync for the whole batch, before anything is
        // published or replied (rule R2). A failed sync is fatal: never retry-and-ack.
        if !records.is_empty() {
            self.rebase.offer(&records, &self.stats.commit);
            let next_zxid = self.core.last_zxid() + 1;
            let record_bytes = records.len() as u64;
            if let Err(e) = self.log.append_and_sync(records, next_zxid).await {
                eprintln!("zoo: FATAL: the transaction log could not be made durable: {e}");
                eprintln!("zoo: stopping without acknowledging the writes of this batch");
                std::process::exit(1);
            }
            self.snapshots.schedule.note(txn_count, record_bytes);
            // Started, or skipped if one is still being written (`start_snapshot`).
            if self.snapshots.schedule.is_due() {
                self.start_snapshot().await;
            }
            use std::sync::atomic::Ordering::Relaxed;
            self.stats.commit.fsyncs.store(self.log.syncs, Relaxed);
            self.stats
                .commit
                .fsync_micros_total
                .store(self.log.sync_micros_total, Relaxed);
        } else if ticked && self.snapshots.idle_due() {
            self.start_snapshot().await;
        }
        if changed {
            self.publisher.changed();
        }
        let tree = self
            .publisher
            .tree_to_send(self.core.tree(), &self.stats.commit);
        // Figures first, so a client that saw its write acknowledged sees it counted in 4lw.
        self.publish_stats();
        send_to_shards(&self.shards, replies, triggers, tree, self.core.last_zxid()).await;
        if writes > 0 {
            let commit = &self.stats.commit;
            use std::sync::atomic::Ordering::Relaxed;
            commit.batches.fetch_add(1, Relaxed);
            commit.batched_writes.fetch_add(writes, Relaxed);
            commit.batch_max.fetch_max(writes, Relaxed);
        }
    }

    /// Swaps in the rebased tree if the snapshot thread has it ready, and has it published
    /// at once, so that the shards do not keep the old one alive.
    fn poll_rebase(&mut self) {
        let Some(tree) = self.rebase.poll(self.core.last_zxid(), &self.stats.commit) else {
            return;
        };
        let old = self.core.replace_tree(tree);
        self.rebase.swapped(old, &self.stats.commit);
        self.publisher.changed();
        self.publisher.force();
    }

    /// Starts a new log segment at the next zxid and writes a snapshot of the current state
    /// on a background thread: the tree clone is O(1), so writes do not stall.
    async fn start_snapshot(&mut self) {
        let Some(in_progress) = self.snapshots.try_start() else {
            return;
        };
        // The previous snapshot thread has finished, so its rebased tree (if any) is ready.
        self.poll_rebase();
        let next_zxid = self.core.last_zxid() + 1;
        if let Err(e) = self.log.roll(next_zxid).await {
            eprintln!("zoo: FATAL: cannot start a new log segment: {e}");
            std::process::exit(1);
        }
        let tree = self.core.tree().clone();
        let sessions = SessionRecord::all_of(&self.core);
        let dir = self.snapshot_dir.clone();
        let feed = self.snapshot_rebase.then(|| self.rebase.start());
        write_snapshot_on_worker(dir, tree, sessions, in_progress, feed, self.rebase.worker());
    }

    fn publish_stats(&self) {
        publish_commit_stats(&self.core, &self.stats);
    }
}

/// Sends one batch's outcome to the shards, standalone or replicated alike: to each, the
/// triggers of the batch's txns, the tree if it is published, the last zxid and that shard's
/// `replies` (rule R3 and R8: `ToShard`). A shard with nothing to receive gets no message.
pub(crate) async fn send_to_shards(
    shards: &[ConnectedSender<ToShard>],
    replies: impl IntoIterator<Item = Vec<ShardReply>>,
    triggers: Vec<(i64, Trigger)>,
    tree: Option<Arc<crate::core::tree::DataTree>>,
    last_zxid: i64,
) {
    let triggers = (!triggers.is_empty()).then(|| Arc::new(triggers));
    for (shard, shard_replies) in shards.iter().zip(replies) {
        if tree.is_none() && triggers.is_none() && shard_replies.is_empty() {
            continue;
        }
        let message = ToShard {
            triggers: triggers.clone(),
            tree: tree.clone(),
            last_zxid,
            replies: shard_replies,
        };
        // A shard that has gone away is shutting down; nothing to deliver to.
        let _ = shard.send(message).await;
    }
}

/// Copies the commit core's figures into the shared stats (4lw reads them).
pub fn publish_commit_stats(core: &CommitCore, stats: &ServerStats) {
    use std::sync::atomic::Ordering::Relaxed;
    let commit = &stats.commit;
    let tree = core.tree();
    commit.last_zxid.store(tree.last_zxid(), Relaxed);
    commit.sessions.store(core.sessions().len() as u64, Relaxed);
    commit.node_count.store(tree.node_count() as u64, Relaxed);
    commit
        .ephemerals
        .store(tree.ephemeral_count() as u64, Relaxed);
    commit.data_bytes.store(tree.data_bytes(), Relaxed);
    commit
        .overlay_nodes
        .store(tree.overlay_len() as u64, Relaxed);
}

/// Writes a snapshot of `tree` on the executor's snapshot thread, which holds `in_progress`
/// while it runs; with a `feed`, the thread then moves the executor's tree onto the file it
/// wrote.
pub(crate) fn write_snapshot_on_worker(
    dir: std::path::PathBuf,
    tree: crate::core::tree::DataTree,
    sessions: Vec<SessionRecord>,
    in_progress: SnapshotInProgress,
    feed: Option<rebase::RebaseFeed>,
    worker: &mut crate::server::snapshot_worker::SnapshotWorker,
) {
    worker.run(move || {
        let _in_progress = in_progress;
        let started = std::time::Instant::now();
        match crate::storage::snapshot::write_checked_snapshot(&dir, &tree, &sessions) {
            Ok((path, loaded)) => {
                eprintln!(
                    "zoo: wrote snapshot {} ({} nodes) in {:?}",
                    path.display(),
                    tree.node_count(),
                    started.elapsed()
                );
                drop(tree);
                // The check before the rename mapped the file: the move onto it serves
                // that mapping.
                if let Some(feed) = feed {
                    feed.catch_up(loaded.tree);
                }
            }
            // The log still holds everything: a failed snapshot costs only replay time.
            Err(e) => eprintln!("zoo: snapshot at zxid {:#x} failed: {e}", tree.last_zxid()),
        }
    });
}

fn attach_result(attach: Attach, replies: &mut [Vec<ShardReply>]) -> ConnectResult {
    match attach {
        Attach::Attached {
            session_id,
            timeout_ms,
            password,
            previous,
        } => {
            if let Some(previous) = previous {
                replies[previous.shard].push(ShardReply::Close {
                    connection_id: previous.connection_id,
                });
            }
            ConnectResult::Attached {
                session_id,
                timeout_ms,
                password,
            }
        }
        Attach::Expired => ConnectResult::Expired,
    }
}
