//! The leader's side: validating writes against its speculative state, proposing their
//! txns, answering the clients (its own and the followers'), and sealing its speculative tree
//! after each cycle so that it is published as is once committed.
//!
//! A sealed tree is a clone of the speculative one, and every clone costs the next cycle's
//! writes a copy of each map branch on their way (copy-on-write), and the holder of the old
//! tree its freeing. So a cycle keeps a tree only when someone on this server is waiting for
//! the applied state to move: a client connected here (its replies are held until its write
//! is applied, its reads and watches are served from published trees), a shard asking for a
//! tree, a reconfiguration in progress, or `LEADER_APPLIED_LAG_MS` since the last kept tree.
//! Otherwise the batch is sealed without one, and the applied state moves, over every batch
//! committed by then, when the next batch that has a tree commits (ARCHITECTURE.md R14). A
//! leader whose clients are all on followers thus copies its map about once a second instead
//! of every cycle.

use super::*;

/// The leader's speculative tree after the entries (prev, last], with what applying them
/// produced: watch triggers and session-table changes.
pub(super) struct SpecBatch {
    pub(super) prev: i64,
    pub(super) last: i64,
    /// The speculative tree at `last`; `None` when no one was waiting for it (module doc).
    pub(super) tree: Option<crate::core::tree::DataTree>,
    pub(super) triggers: Vec<(i64, Trigger)>,
    pub(super) sessions: Vec<(TxnHeader, Txn)>,
    pub(super) entries: u64,
}

impl Ensemble {
    /// Server-side writes (session expiry, container and TTL reaping): `make` runs each item
    /// against the speculative state; every txn it returns is proposed, its triggers kept for
    /// when it commits.
    pub(super) fn propose_each<T>(
        &mut self,
        items: Vec<T>,
        mut make: impl FnMut(
            &mut CommitCore,
            T,
            &mut Vec<crate::core::tree::Trigger>,
        ) -> Option<(TxnHeader, Txn)>,
    ) {
        let Some(spec) = self.speculative.as_mut() else {
            return;
        };
        let mut proposals = Vec::new();
        for item in items {
            let mut scratch = Vec::new();
            if let Some(t) = make(spec, item, &mut scratch) {
                self.spec_triggers
                    .extend(scratch.into_iter().map(|x| (t.0.zxid, x)));
                proposals.push(t);
            }
        }
        for (header, txn) in proposals {
            self.propose(&header, &txn);
        }
    }

    pub(super) fn propose(&mut self, header: &TxnHeader, txn: &Txn) {
        if matches!(txn, Txn::CreateSession { .. } | Txn::CloseSession { .. }) {
            self.spec_sessions.push((*header, txn.clone()));
        }
        let payload = encode(header, txn);
        let zxid = self
            .replica
            .propose(|zxid| {
                assert_eq!(zxid, header.zxid, "speculative zxids follow the log");
                payload
            })
            .expect("only the leader proposes");
        debug_assert_eq!(zxid, header.zxid);
    }

    pub(super) fn leader_write(&mut self, origin: Origin, write: WriteRequest) {
        let now = wall_clock_ms();
        let Some((origin, write)) = self.queue_behind_bulk_reconfig(origin, write) else {
            return;
        };
        if matches!(write.request, Request::Reconfig { .. }) {
            let version = |c: &CommitCore| c.membership().map_or(0, |m| m.version);
            let spec = self.speculative.as_ref().expect("leader");
            // One change at a time: the previous one is not committed yet. Nor before the
            // leader's first entry of its term is (Raft's single-server changes: a change
            // proposed earlier could overlap one of a previous leader that never committed).
            if version(spec) != version(&self.applied)
                || self.bulk_reconfig.is_some()
                || self.applied.last_zxid() < self.epoch_start
            {
                let reply = WriteReply {
                    xid: write.xid,
                    zxid: self.applied.last_zxid(),
                    err: crate::error::ZkError::ReconfigInProgress.code(),
                    body: Vec::new(),
                    close_connection: false,
                };
                let ready_at = self.replica.last_zxid();
                self.answer_write(origin, ready_at, reply);
                return;
            }
        }
        let Some((origin, write)) = (match write.request {
            Request::Reconfig { .. } => self.start_bulk_reconfig(origin, write, now),
            _ => Some((origin, write)),
        }) else {
            return;
        };
        let spec = self.speculative.as_mut().expect("leader");
        spec.touch(write.session_id, now);
        let is_sync = matches!(write.request, Request::Sync { .. });
        let mut scratch = Vec::new();
        let outcome = spec.process_write(write, now, &mut scratch);
        if let Some((header, _)) = &outcome.txn {
            let zxid = header.zxid;
            self.spec_triggers
                .extend(scratch.into_iter().map(|t| (zxid, t)));
        }
        let spec = self.speculative.as_mut().expect("leader");
        let ready_at = match &outcome.txn {
            Some((header, txn)) => {
                let (header, txn) = (*header, txn.clone());
                self.propose(&header, &txn);
                header.zxid
            }
            // sync: a barrier entry, answered once a quorum holds it. A deposed leader that
            // has not noticed yet cannot commit it, so sync-then-read is linearizable (R11).
            None if is_sync && outcome.reply.err == 0 => {
                let (header, txn) = spec.apply_noop(now);
                self.propose(&header, &txn);
                header.zxid
            }
            None => self.replica.last_zxid(),
        };
        self.answer_write(origin, ready_at, outcome.reply);
    }

    pub(super) fn answer_write(&mut self, origin: Origin, ready_at: i64, reply: WriteReply) {
        match origin {
            Origin::Local(connection) => self
                .held
                .push_back((ready_at, Held::Write(connection, reply))),
            Origin::Remote { server, request } => {
                // If dropped, the follower notices the gap at the next answer or times out.
                self.send_peer(
                    server,
                    &PeerMessage::WriteDone {
                        request,
                        ready_at,
                        reply,
                    },
                );
            }
        }
    }

    pub(super) fn leader_create_session(
        &mut self,
        origin: Origin,
        timeout_ms: i32,
        password: [u8; 16],
    ) {
        let now = wall_clock_ms();
        let spec = self.speculative.as_mut().expect("leader");
        let (attach, (header, txn)) =
            spec.create_session(timeout_ms, password, NO_CONNECTION, now, &mut Vec::new());
        // (createSession fires no watch.)
        self.propose(&header, &txn);
        let Attach::Attached {
            session_id,
            timeout_ms,
            password,
            ..
        } = attach
        else {
            unreachable!("a new session attaches");
        };
        match origin {
            Origin::Local(connection) => self.held.push_back((
                header.zxid,
                Held::Connect {
                    connection,
                    session_id,
                    password,
                },
            )),
            Origin::Remote { server, request } => {
                // If dropped, the follower's FORWARD_TIMEOUT_MS closes the client.
                self.send_peer(
                    server,
                    &PeerMessage::ConnectDone {
                        request,
                        ready_at: header.zxid,
                        session_id,
                        timeout_ms,
                        password,
                    },
                );
            }
        }
    }

    pub(super) fn become_leader(&mut self) {
        let now = wall_clock_ms();
        let mut spec = self.applied.clone();
        spec.set_epoch(self.replica.term());
        // Entries after the applied state are in the log but not yet committed; the new
        // leader's state includes them (Raft: a leader never drops its own entries).
        let pending: Vec<Arc<[u8]>> = self
            .replica
            .entries_between(self.applied.last_zxid(), i64::MAX)
            .map(|e| e.payload.clone())
            .collect();
        self.sealed.clear();
        self.arrived.clear();
        self.sealed_upto = self.applied.last_zxid();
        self.spec_triggers.clear();
        self.spec_sessions.clear();
        for payload in pending {
            let (header, txn) = decode_record(&payload);
            let mut scratch = Vec::new();
            spec.apply(&header, &txn, &mut scratch);
            self.spec_triggers
                .extend(scratch.into_iter().map(|t| (header.zxid, t)));
            if matches!(txn, Txn::CreateSession { .. } | Txn::CloseSession { .. }) {
                self.spec_sessions.push((header, txn));
            }
        }
        spec.restart_session_clocks(now);
        let (header, txn) = spec.apply_noop(now);
        let seed_config = spec
            .membership()
            .is_none_or(|m| m.members.is_empty())
            .then(|| {
                let mut scratch = Vec::new();
                let t = spec.write_config(&self.members, now, &mut scratch);
                self.spec_triggers
                    .extend(scratch.into_iter().map(|x| (t.0.zxid, x)));
                t
            });
        self.speculative = Some(spec);
        self.propose(&header, &txn);
        self.epoch_start = header.zxid;
        if let Some((header, txn)) = seed_config {
            self.propose(&header, &txn);
        }
        eprintln!(
            "zoo: server {} leads term {} from zxid {:#x}",
            self.me,
            self.replica.term(),
            header.zxid
        );
    }

    /// Leader: remembers the speculative state after this cycle's proposals (see SpecBatch),
    /// with the tree itself only when it is wanted (module doc).
    pub(super) fn seal(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        // A follower has no speculative state: it returns before asking whether a tree is
        // wanted.
        let Some(spec) = self.speculative.as_ref() else {
            return;
        };
        let now = std::time::Instant::now();
        let wanted = self.applied_tree_wanted(now);
        let last = spec.last_zxid();
        if last <= self.sealed_upto {
            // Nothing proposed since: the speculative tree is the state at the newest batch's
            // end, so that batch can still take it (and once the leader is idle, the time
            // limit makes it do so).
            if wanted
                && let Some(newest) = self.sealed.back_mut()
                && newest.tree.is_none()
                && newest.last == last
            {
                newest.tree = Some(spec.tree().clone());
                self.tree_sealed_at = now;
                self.stats.commit.sealed_trees.fetch_add(1, Relaxed);
            }
            return;
        }
        let entries = self.replica.entries_between(self.sealed_upto, last).count() as u64;
        let tree = wanted.then(|| spec.tree().clone());
        self.stats.commit.sealed_batches.fetch_add(1, Relaxed);
        if tree.is_some() {
            self.tree_sealed_at = now;
            self.stats.commit.sealed_trees.fetch_add(1, Relaxed);
        }
        self.sealed.push_back(SpecBatch {
            prev: self.sealed_upto,
            last,
            tree,
            triggers: std::mem::take(&mut self.spec_triggers),
            sessions: std::mem::take(&mut self.spec_sessions),
            entries,
        });
        self.sealed_upto = last;
    }

    /// True if this cycle's batch must keep its tree: someone on this server waits for the
    /// applied state to move (module doc).
    fn applied_tree_wanted(&self, now: std::time::Instant) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let membership_version = |c: &CommitCore| c.membership().map_or(0, |m| m.version);
        !self.held.is_empty()
            || self
                .stats
                .shards
                .iter()
                .any(|s| s.connections.load(Relaxed) > 0)
            || self.publisher.is_wanted()
            || self
                .speculative
                .as_ref()
                .is_some_and(|s| membership_version(s) != membership_version(&self.applied))
            || self.bulk_reconfig.is_some()
            || now.saturating_duration_since(self.tree_sealed_at)
                >= std::time::Duration::from_millis(LEADER_APPLIED_LAG_MS)
    }
}
