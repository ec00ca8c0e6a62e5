//! Snapshots of a replicated server: its own (of the committed state, in the background),
//! the ones it builds for followers the log cannot reach (sent in pieces), the ones it
//! installs from its leader, and cutting a log that diverged from the leader's.

use super::*;

/// Snapshots built in the background for followers: (peer, zxid, bytes).
pub(super) type CatchUp = Arc<Mutex<Vec<(NodeId, i64, Arc<[u8]>)>>>;

impl Ensemble {
    /// Sends a replication message; a snapshot goes in `SNAPSHOT_CHUNK_BYTES` pieces.
    pub(super) fn send_raft(&mut self, to: NodeId, message: crate::consensus::Message) {
        let crate::consensus::Message::Snapshot { term, zxid, data } = message else {
            self.send_peer(to, &PeerMessage::Raft(message));
            return;
        };
        let total = data.len() as u64;
        eprintln!(
            "zoo: sending server {to} the snapshot at {zxid:#x}: {} MiB in {} pieces",
            total >> 20,
            data.len().div_ceil(SNAPSHOT_CHUNK_BYTES).max(1)
        );
        let mut offset = 0usize;
        loop {
            let end = (offset + SNAPSHOT_CHUNK_BYTES).min(data.len());
            let chunk = PeerMessage::SnapshotChunk {
                term,
                zxid,
                offset: offset as u64,
                total,
                data: data[offset..end].to_vec(),
            };
            self.send_peer(to, &chunk);
            offset = end;
            if offset >= data.len() {
                break;
            }
        }
    }

    /// Reassembles a catch-up snapshot; a piece out of order drops what arrived so far (the
    /// leader offers the snapshot again after `snapshot_retry_ticks`).
    pub(super) fn on_snapshot_chunk(
        &mut self,
        from: NodeId,
        term: u64,
        zxid: i64,
        offset: u64,
        total: u64,
        data: Vec<u8>,
    ) {
        if total > SNAPSHOT_BYTES_MAX {
            eprintln!("zoo: refusing a {total}-byte snapshot from server {from}");
            return;
        }
        if offset == 0 {
            self.incoming_snapshot = Some((from, term, zxid, total, Vec::new()));
        }
        let Some((f, t, z, n, bytes)) = self.incoming_snapshot.as_mut() else {
            return;
        };
        if *f != from || *t != term || *z != zxid || *n != total || bytes.len() as u64 != offset {
            self.incoming_snapshot = None;
            return;
        }
        let before = bytes.len() as u64 * 10 / total.max(1);
        bytes.extend_from_slice(&data);
        let after = bytes.len() as u64 * 10 / total.max(1);
        if after > before && (bytes.len() as u64) < total {
            eprintln!(
                "zoo: receiving the snapshot at {zxid:#x} from server {from}: {}%",
                after * 10
            );
        }
        if bytes.len() as u64 == total {
            let (_, term, zxid, _, bytes) = self.incoming_snapshot.take().expect("present");
            self.replica.step(
                from,
                crate::consensus::Message::Snapshot {
                    term,
                    zxid,
                    data: bytes.into(),
                },
            );
        }
    }

    /// Writes a snapshot of the applied (committed) state in the background.
    pub(super) fn start_snapshot(&mut self) {
        let Some(in_progress) = self.snapshots.try_start() else {
            return;
        };
        // The previous snapshot thread has finished, so its rebased tree (if any) is ready.
        self.poll_rebase();
        let tree = self.applied.tree().clone();
        let sessions = SessionRecord::all_of(&self.applied);
        let dir = self.snapshot_dir.clone();
        let feed = self.config.snapshot_rebase.then(|| self.rebase.start());
        crate::server::commit_executor::write_snapshot_on_worker(
            dir,
            tree,
            sessions,
            in_progress,
            feed,
            self.rebase.worker(),
        );
    }

    /// Builds the committed state as snapshot bytes for followers the log cannot reach; the
    /// result is sent from the next tick.
    pub(super) fn prepare_catch_up(&mut self, peers: Vec<NodeId>) {
        let tree = self.applied.tree().clone();
        let zxid = tree.last_zxid();
        let sessions = SessionRecord::all_of(&self.applied);
        // A scratch directory: catch-up copies are not part of this server's own snapshots
        // (and would otherwise pile up when a follower stays away).
        let dir = self.snapshot_dir.join("catch-up");
        let out = self.catch_up.clone();
        let _ = std::thread::Builder::new()
            .name("zoo-catch-up".into())
            .spawn(move || {
                let bytes = snapshot::write_snapshot(&dir, &tree, &sessions).and_then(|path| {
                    let bytes = std::fs::read(&path);
                    let _ = std::fs::remove_file(&path);
                    bytes
                });
                match bytes {
                    Ok(bytes) => {
                        let data: Arc<[u8]> = bytes.into();
                        let mut out = out.lock().expect("no panic");
                        for p in peers {
                            out.push((p, zxid, data.clone()));
                        }
                    }
                    Err(e) => eprintln!("zoo: cannot build a catch-up snapshot: {e}"),
                }
            });
    }

    /// Replaces this server's state with the leader's snapshot at `zxid`: the snapshot is made
    /// durable first, then the log (older than it, or divergent) is removed.
    pub(super) async fn install_snapshot(&mut self, zxid: i64, data: &[u8]) -> bool {
        eprintln!(
            "zoo: server {} installing the leader's snapshot at {zxid:#x} ({} bytes)",
            self.me,
            data.len()
        );
        let loaded = match write_durably(&self.snapshot_dir, zxid, data) {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                // Checksummed end to end, and checked before it is renamed into place: a bad
                // snapshot from the leader is not installed.
                eprintln!("zoo: the leader's snapshot is unusable ({e}); waiting for another");
                return false;
            }
            Err(e) => {
                eprintln!("zoo: FATAL: cannot store the leader's snapshot: {e}");
                std::process::exit(1);
            }
        };
        let sessions = loaded
            .sessions
            .into_iter()
            .map(|s| (s.id, s.timeout_ms, s.password));
        // As ZooKeeper does on a snapshot sync: this server's clients reconnect, since the
        // watch events between the old state and the snapshot cannot be produced.
        self.close_all_clients();
        let config = crate::server::commit_executor::core_config(&self.config);
        self.rebase.abandon();
        self.applied = CommitCore::restore(config, loaded.tree, sessions, wall_clock_ms());
        self.restart_log(zxid).await;
        let members = self
            .applied
            .membership()
            .map(|m| m.members)
            .filter(|m| m.iter().any(|x| !x.observer));
        self.replica
            .snapshot_installed(zxid, members.as_ref().map(|m| split_roles(m)));
        self.learn_members(members);
        self.publisher.changed();
        self.publisher.force();
        self.triggers.clear();
        true
    }

    /// Entries after `after` were discarded (they conflicted with the leader's): they are cut
    /// from the log in place, so that a restart cannot replay them, and appends continue in a
    /// new segment. Entries at or below `after` stay where they are.
    pub(super) async fn discard_log_after(&mut self, after: i64) {
        eprintln!(
            "zoo: server {}: log diverged from the leader's after {after:#x}; cutting it there",
            self.me
        );
        if let Err(e) = crate::storage::log::truncate_after(&self.log_dir, after) {
            eprintln!("zoo: FATAL: cannot cut the log after {after:#x}: {e}");
            std::process::exit(1);
        }
        self.start_segment(after + 1).await;
    }

    /// Deletes every log segment and starts a new one after `zxid` (covered by a snapshot).
    pub(super) async fn restart_log(&mut self, zxid: i64) {
        let segments = crate::storage::log::list_segments(&self.log_dir).unwrap_or_default();
        for (_, path) in segments {
            if let Err(e) = std::fs::remove_file(&path) {
                eprintln!("zoo: FATAL: cannot remove {}: {e}", path.display());
                std::process::exit(1);
            }
        }
        self.start_segment(zxid + 1).await;
    }

    /// Appends continue in a new segment whose first record will be `first_zxid`.
    async fn start_segment(&mut self, first_zxid: i64) {
        match LogWriter::create(&self.log_dir, first_zxid).await {
            Ok(log) => self.log = log,
            Err(e) => {
                eprintln!("zoo: FATAL: cannot start a log segment: {e}");
                std::process::exit(1);
            }
        }
    }
}

/// Stores snapshot bytes received from the leader: temp file, fsync, full check, rename,
/// directory fsync. The inner error says why the bytes did not pass the check (the temp file
/// is removed); the outer one is an I/O failure.
pub(super) fn write_durably(
    dir: &std::path::Path,
    zxid: i64,
    data: &[u8],
) -> std::io::Result<Result<snapshot::LoadedSnapshot, snapshot::SnapshotError>> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(snapshot::snapshot_name(zxid));
    let temp = dir.join(format!("{}.tmp", snapshot::snapshot_name(zxid)));
    {
        let mut f = std::fs::File::create(&temp)?;
        crate::storage::writeback::write_paced(&mut f, data)?;
        f.sync_all()?;
    }
    snapshot::check_then_rename(&temp, &path)
}
