//! A reconfig that changes more than one voter, carried out by the leader as a sequence of
//! single-voter changes (`Membership::steps_toward`, docs/ARCHITECTURE.md R13). Each step is
//! an ordinary reconfig txn under the client's session. The first brings every new voter in
//! as an observer; each later one is proposed once the one before is applied here and every
//! new voter has caught up with it, so every committed membership overlaps the one before in
//! a majority and a new voter counts only once it holds the log. The client is answered once,
//! with the last step's config; its session's later writes wait behind the reconfig (R1).
//!
//! If the new voters do not catch up within `initLimit × tickTime` of the first step, that
//! step is undone (an observer-only change) and the client gets NEWCONFIGNOQUORUM, as from
//! ZooKeeper: no voter changed. If one falls behind later (each wait is bounded by
//! `initLimit × tickTime`, all of them by twice that), the reconfig stops there with
//! NEWCONFIGNOQUORUM and the steps already committed stay (the config text says which). If the
//! leader loses its leadership midway, the client's connection is closed, as for any write
//! whose outcome it cannot report; the steps committed so far stay.

use super::*;

pub(super) struct BulkReconfig {
    origin: Origin,
    /// The client's request: session, xid and identities for every step.
    write: WriteRequest,
    /// The membership before the first step, to undo a first step that changed no voter.
    original: Vec<Member>,
    /// Voters of the requested membership that were not voters before: each must hold a
    /// step before the next is proposed.
    new_voters: Vec<NodeId>,
    /// Memberships still to propose, in order; the last is the one asked for.
    steps: VecDeque<Vec<Member>>,
    /// The zxid of the step proposed last (before the first, what was applied), and whether
    /// it changed no voter (the observer step that brings the new voters in).
    in_flight: (i64, bool),
    /// When that step was proposed, and when the first was (wall clock, ms).
    since: i64,
    started: i64,
    /// Later writes of the same session, proposed once the reconfig is answered.
    queued: Vec<(Origin, WriteRequest)>,
}

impl Ensemble {
    /// Starts `write` as a stepwise reconfig if it is a valid one that changes several voters;
    /// returns it otherwise, for the usual path.
    pub(super) fn start_bulk_reconfig(
        &mut self,
        origin: Origin,
        write: WriteRequest,
        now: i64,
    ) -> Option<(Origin, WriteRequest)> {
        let spec = self.speculative.as_ref().expect("leader");
        let Some(steps) = spec.reconfig_steps(&write, self.me) else {
            return Some((origin, write));
        };
        let original = self.members.clone();
        let was_voter = |id: NodeId| original.iter().any(|m| m.id == id && !m.observer);
        let new_voters: Vec<NodeId> = steps
            .last()
            .expect("at least one step")
            .iter()
            .filter(|m| !m.observer && !was_voter(m.id))
            .map(|m| m.id)
            .collect();
        eprintln!(
            "zoo: server {}: reconfig of session {:#x} changes several voters: {} steps",
            self.me,
            write.session_id,
            steps.len()
        );
        self.bulk_reconfig = Some(BulkReconfig {
            origin,
            write,
            original,
            new_voters,
            steps: steps.into(),
            // An observer to be promoted must hold what is applied before the first step.
            in_flight: (self.applied.last_zxid(), false),
            since: now,
            started: now,
            queued: Vec::new(),
        });
        self.advance_bulk_reconfig(now);
        None
    }

    /// Holds a write of the session whose stepwise reconfig is under way; returns it when it
    /// can go ahead.
    pub(super) fn queue_behind_bulk_reconfig(
        &mut self,
        origin: Origin,
        write: WriteRequest,
    ) -> Option<(Origin, WriteRequest)> {
        match self.bulk_reconfig.as_mut() {
            Some(bulk) if bulk.write.session_id == write.session_id => {
                bulk.queued.push((origin, write));
                None
            }
            _ => Some((origin, write)),
        }
    }

    /// Proposes the next step once the one before is applied and every new voter that is a
    /// member holds it; answers the client after the last. Called after every cycle and tick
    /// on the leader.
    pub(super) fn advance_bulk_reconfig(&mut self, now: i64) {
        let Some(bulk) = self.bulk_reconfig.as_ref() else {
            return;
        };
        let (zxid, changed_no_voter) = bulk.in_flight;
        let applied = self.applied.last_zxid() >= zxid;
        // New voters count once they are members (the first step brings them in).
        let behind: Vec<NodeId> = bulk
            .new_voters
            .iter()
            .copied()
            .filter(|id| self.replica.peers().any(|p| p == *id))
            .filter(|id| self.replica.matched(*id) < zxid)
            .collect();
        if !applied {
            return;
        }
        if !behind.is_empty() {
            // Each wait is bounded, and all of them together by twice that (a follower that
            // forwarded the request waits that much longer for its answer: mod.rs).
            let limit = i64::from(self.config.init_limit) * i64::from(self.config.tick_time_ms);
            if now - bulk.since > limit || now - bulk.started > 2 * limit {
                eprintln!(
                    "zoo: server {}: reconfig stopped: {behind:?} did not catch up within \
                     initLimit × tickTime ({limit} ms)",
                    self.me
                );
                let undo = changed_no_voter.then(|| bulk.original.clone());
                self.stop_bulk_reconfig(undo, now);
            }
            return;
        }
        let bulk = self.bulk_reconfig.as_mut().expect("checked");
        let step = bulk
            .steps
            .pop_front()
            .expect("a step is left until the reply");
        let last = bulk.steps.is_empty();
        let changes_no_voter = self
            .applied
            .membership()
            .is_some_and(|m| m.voter_changes(&step) == 0);
        match self.propose_step(&step, now) {
            Err(reply) => self.finish_bulk_reconfig(reply),
            Ok((zxid, reply)) if last => {
                let bulk = self.bulk_reconfig.take().expect("checked");
                self.answer_write(bulk.origin, zxid, reply);
                self.release_queued(bulk.queued);
            }
            Ok((zxid, _)) => {
                let bulk = self.bulk_reconfig.as_mut().expect("checked");
                bulk.in_flight = (zxid, changes_no_voter);
                bulk.since = now;
            }
        }
    }

    /// Proposes `members` as one reconfig step of the client's session: its zxid and the
    /// reply it would get, or the refusal to answer with.
    fn propose_step(
        &mut self,
        members: &[Member],
        now: i64,
    ) -> Result<(i64, WriteReply), WriteReply> {
        let bulk = self.bulk_reconfig.as_ref().expect("under way");
        let request = WriteRequest {
            request: CommitCore::reconfig_step_request(members),
            ..bulk.write.clone()
        };
        let spec = self.speculative.as_mut().expect("leader");
        let mut scratch = Vec::new();
        let outcome = spec.process_write(request, now, &mut scratch);
        let Some((header, txn)) = outcome.txn else {
            return Err(outcome.reply);
        };
        self.spec_triggers
            .extend(scratch.into_iter().map(|t| (header.zxid, t)));
        self.propose(&header, &txn);
        Ok((header.zxid, outcome.reply))
    }

    /// NEWCONFIGNOQUORUM: a new voter did not catch up. `undo`, the membership before the
    /// first step when that step changed no voter, is proposed again first.
    fn stop_bulk_reconfig(&mut self, undo: Option<Vec<Member>>, now: i64) {
        let err = crate::error::ZkError::NewConfigNoQuorum.code();
        let xid = self.bulk_reconfig.as_ref().expect("under way").write.xid;
        let refusal = WriteReply {
            xid,
            zxid: self.applied.last_zxid(),
            err,
            body: Vec::new(),
            close_connection: false,
        };
        if let Some(original) = undo {
            // Answered once the undo is applied: a client that reads the config then sees
            // the membership it had.
            if let Ok((zxid, _)) = self.propose_step(&original, now) {
                let bulk = self.bulk_reconfig.take().expect("under way");
                self.answer_write(bulk.origin, zxid, WriteReply { zxid, ..refusal });
                self.release_queued(bulk.queued);
                return;
            }
        }
        self.finish_bulk_reconfig(refusal);
    }

    /// Ends the reconfig early with `reply`.
    fn finish_bulk_reconfig(&mut self, reply: WriteReply) {
        let bulk = self.bulk_reconfig.take().expect("under way");
        let ready_at = self.replica.last_zxid();
        self.answer_write(bulk.origin, ready_at, reply);
        self.release_queued(bulk.queued);
    }

    fn release_queued(&mut self, queued: Vec<(Origin, WriteRequest)>) {
        for (origin, write) in queued {
            self.leader_write(origin, write);
        }
    }

    /// Leadership lost midway: the client cannot be told how far the reconfig got, so its
    /// connection (and those of the writes queued behind it) is closed. A follower's client is
    /// closed by its server when that server sees the leader change.
    pub(super) fn abandon_bulk_reconfig(&mut self) {
        let Some(bulk) = self.bulk_reconfig.take() else {
            return;
        };
        eprintln!(
            "zoo: server {}: leadership lost during a stepwise reconfig; {} steps not made",
            self.me,
            bulk.steps.len()
        );
        let origins = std::iter::once(bulk.origin).chain(bulk.queued.into_iter().map(|(o, _)| o));
        for origin in origins {
            if let Origin::Local(connection) = origin {
                self.close(connection);
            }
        }
    }
}
