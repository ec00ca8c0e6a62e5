//! Replication: Raft's rules (Ongaro & Ousterhout, "In Search of an Understandable Consensus
//! Algorithm", with pre-vote and check-quorum from Ongaro's thesis §9.6 and §6.2), keyed by
//! ZooKeeper's zxid instead of a separate log index. docs/ARCHITECTURE.md, "Replication",
//! explains the choice; rules R8–R12 there are the invariants the simulation checks.
//!
//! A zxid is `term << 32 | counter`: the counter starts at 1 in each term and grows by one per
//! entry, so zxids are totally ordered the way Raft orders (last term, last index), and one
//! leader per term makes a zxid name exactly one entry (log matching). An append carries the
//! zxid of the entry before its first entry; a follower that holds that entry keeps the leader's
//! entries position by position and cuts its own log at the first entry that differs.
//!
//! This module does no I/O. The driver calls [`Replica::tick`], [`Replica::step`] and
//! [`Replica::propose`], then takes a [`Ready`]: it must make `hard_state` and `to_persist`
//! durable (after removing what `truncated_after` discards) before it sends `messages` marked
//! `after_persist`, and it reports durability with [`Replica::persisted`].

mod wire;

pub use wire::{decode_message, encode_message};

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

pub type NodeId = i64;

/// One replicated entry: its zxid and its opaque payload (the driver's encoded log record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub zxid: i64,
    pub payload: Arc<[u8]>,
}

fn members_of(decode: MembershipOf, payload: &[u8]) -> Option<Members> {
    let (voters, observers) = decode(payload)?;
    Some((
        voters.into_iter().collect(),
        observers.into_iter().collect(),
    ))
}

pub fn zxid_term(zxid: i64) -> u64 {
    (zxid as u64) >> 32
}

pub fn make_zxid(term: u64, counter: u32) -> i64 {
    ((term << 32) | counter as u64) as i64
}

/// What must survive a restart besides the log: Raft's currentTerm and votedFor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardState {
    pub term: u64,
    pub voted_for: Option<NodeId>,
}

/// What a replica finds on disk at start: its vote, the applied prefix ending at
/// `base_zxid` (a snapshot), and the durable entries after it.
#[derive(Debug, Clone, Default)]
pub struct Durable {
    pub hard: HardState,
    pub base_zxid: i64,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// "Would you vote for me in `term`?" Changes no state on the receiver.
    PreVote {
        term: u64,
        last_zxid: i64,
    },
    /// `term` is the one asked about; `current_term` the voter's own, so that a refused
    /// pre-candidate that is behind catches up with it (else it could never be granted).
    PreVoteReply {
        term: u64,
        granted: bool,
        current_term: u64,
    },
    Vote {
        term: u64,
        last_zxid: i64,
    },
    VoteReply {
        term: u64,
        granted: bool,
    },
    /// Entries after `prev_zxid` (none for a heartbeat) and the leader's commit point.
    Append {
        term: u64,
        prev_zxid: i64,
        entries: Vec<Entry>,
        commit: i64,
    },
    /// `success`: the receiver holds the leader's log up to `last_zxid`. Otherwise `last_zxid`
    /// is a hint: the newest entry the receiver holds below the append's `prev_zxid`.
    AppendReply {
        term: u64,
        success: bool,
        last_zxid: i64,
    },
    /// The whole state at `zxid` (opaque to this module), for a follower the log cannot reach.
    Snapshot {
        term: u64,
        zxid: i64,
        data: Arc<[u8]>,
    },
}

impl Message {
    pub fn term(&self) -> u64 {
        match self {
            Message::PreVote { term, .. }
            | Message::PreVoteReply { term, .. }
            | Message::Vote { term, .. }
            | Message::VoteReply { term, .. }
            | Message::Append { term, .. }
            | Message::AppendReply { term, .. }
            | Message::Snapshot { term, .. } => *term,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
    /// A non-voting member (ZooKeeper's observer): follows the log, never campaigns.
    Observer,
}

/// Timing in ticks. The driver decides how long a tick is.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Election timeout lower bound; the actual timeout is drawn from [min, 2 × min).
    pub election_ticks: u32,
    pub heartbeat_ticks: u32,
    /// Most entries in one append.
    pub append_entries_max: usize,
    /// Ticks before a snapshot offer to an unresponsive follower is repeated.
    pub snapshot_retry_ticks: u32,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            election_ticks: 10,
            heartbeat_ticks: 1,
            append_entries_max: 4096,
            snapshot_retry_ticks: 50,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Progress {
    /// Newest zxid known to be durable on the peer and equal to ours.
    matched: i64,
    /// Newest zxid sent (optimistically assumed to arrive).
    sent: i64,
    /// Heard from in the current check-quorum window.
    active: bool,
    /// A snapshot is being sent; appends wait. Counts down to a retry.
    snapshot_wait: u32,
}

/// What the driver must do after a step.
#[derive(Debug, Default)]
pub struct Ready {
    pub hard_state: Option<HardState>,
    /// Entries after this zxid were discarded: remove them from disk before persisting.
    pub truncated_after: Option<i64>,
    /// New entries to make durable, in order.
    pub to_persist: Vec<Entry>,
    /// (to, message, after_persist): messages marked `true` may only leave once everything
    /// above is durable.
    pub messages: Vec<(NodeId, Message, bool)>,
    /// The commit point (entries up to it may be applied).
    pub commit: i64,
    /// A snapshot to install before anything else is applied.
    pub install_snapshot: Option<(i64, Arc<[u8]>)>,
    /// Peers that need a snapshot: call [`Replica::snapshot_for`]'s counterpart in the driver
    /// and send [`Message::Snapshot`] via [`Replica::send_snapshot`].
    pub snapshots_needed: Vec<NodeId>,
    /// This replica has just become leader of its term: propose the term's first entry now.
    pub became_leader: bool,
}

/// Reads a membership change out of an entry's payload (the driver's format): the voters and
/// the observers it makes, or `None` for any other entry.
pub type MembershipOf = fn(&[u8]) -> Option<(Vec<NodeId>, Vec<NodeId>)>;

/// Voters and observers.
type Members = (BTreeSet<NodeId>, BTreeSet<NodeId>);

pub struct Replica {
    id: NodeId,
    voters: BTreeSet<NodeId>,
    observers: BTreeSet<NodeId>,
    /// Membership changes are taken from the log (`with_membership_in_log`): each server
    /// uses the newest one its log holds, committed or not, as Raft requires for
    /// single-server changes (docs/ARCHITECTURE.md R13).
    membership_of: Option<MembershipOf>,
    /// The membership as of `base_zxid`, and the changes in the log after it, in order.
    base_members: Members,
    log_members: Vec<(i64, Members)>,
    /// Counts membership changes adopted, so that the driver can follow them.
    membership_epoch: u64,
    hard: HardState,
    hard_dirty: bool,
    role: Role,
    leader: Option<NodeId>,
    /// Entries after `base_zxid`. Everything up to `base_zxid` is committed and applied.
    log: VecDeque<Entry>,
    base_zxid: i64,
    unpersisted_from: usize,
    durable_zxid: i64,
    commit: i64,
    truncated_after: Option<i64>,
    election_elapsed: u32,
    election_timeout: u32,
    heartbeat_elapsed: u32,
    votes: BTreeMap<NodeId, bool>,
    progress: BTreeMap<NodeId, Progress>,
    outbox: Vec<(NodeId, Message, bool)>,
    install: Option<(i64, Arc<[u8]>)>,
    snapshots_needed: Vec<NodeId>,
    became_leader: bool,
    commit_sent: i64,
    timing: Timing,
    rng: u64,
}

impl Replica {
    /// A replica restarted from its durable state (see [`Durable`]).
    pub fn new(
        id: NodeId,
        voters: impl IntoIterator<Item = NodeId>,
        observers: impl IntoIterator<Item = NodeId>,
        durable: Durable,
        timing: Timing,
        seed: u64,
    ) -> Replica {
        let Durable {
            hard,
            base_zxid,
            entries,
        } = durable;
        let voters: BTreeSet<NodeId> = voters.into_iter().collect();
        let observers: BTreeSet<NodeId> = observers.into_iter().collect();
        let log: VecDeque<Entry> = entries.into();
        let durable_zxid = log.back().map(|e| e.zxid).unwrap_or(base_zxid);
        let role = if voters.contains(&id) {
            Role::Follower
        } else {
            Role::Observer
        };
        let mut replica = Replica {
            id,
            base_members: (voters.clone(), observers.clone()),
            voters,
            observers,
            membership_of: None,
            log_members: Vec::new(),
            membership_epoch: 0,
            hard,
            hard_dirty: false,
            role,
            leader: None,
            unpersisted_from: log.len(),
            log,
            base_zxid,
            durable_zxid,
            commit: base_zxid,
            truncated_after: None,
            election_elapsed: 0,
            election_timeout: timing.election_ticks,
            heartbeat_elapsed: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            outbox: Vec::new(),
            install: None,
            snapshots_needed: Vec::new(),
            became_leader: false,
            commit_sent: base_zxid,
            timing,
            rng: seed | 1,
        };
        replica.reset_election_timeout();
        replica
    }

    /// Takes membership changes from the log from now on: the voters and observers given to
    /// [`Replica::new`] are the membership as of the durable base, and the newest change in
    /// the durable entries after it applies at once.
    pub fn with_membership_in_log(mut self, membership_of: MembershipOf) -> Replica {
        self.membership_of = Some(membership_of);
        let found: Vec<(i64, Members)> = self
            .log
            .iter()
            .filter_map(|e| Some((e.zxid, members_of(membership_of, &e.payload)?)))
            .collect();
        self.log_members = found;
        self.adopt_newest_members();
        self
    }

    /// Bumped each time the membership in use changes.
    pub fn membership_epoch(&self) -> u64 {
        self.membership_epoch
    }

    fn note_appended(&mut self, entry: &Entry) {
        if let Some(decode) = self.membership_of
            && let Some(m) = members_of(decode, &entry.payload)
        {
            self.log_members.push((entry.zxid, m));
            self.adopt_newest_members();
        }
    }

    /// `leader` removed itself and that change is committed: it steps down as it sends this
    /// (`maybe_commit`). Stop following it, as when its connection is lost, so that the
    /// voters elect a successor within a few ticks instead of waiting out its lease.
    fn successor_wanted(&mut self, leader: NodeId) {
        if self.leader == Some(leader)
            && self.role != Role::Leader
            && !self.voters.contains(&leader)
            && self.commit >= self.newest_members_zxid()
        {
            self.leader = None;
            let jitter = 1 + (self.random() % 3) as u32;
            self.election_elapsed = self.election_timeout.saturating_sub(jitter);
        }
    }

    /// After entries above `kept` were discarded: their membership changes go with them.
    fn note_truncated(&mut self, kept: i64) {
        let before = self.log_members.len();
        self.log_members.retain(|(z, _)| *z <= kept);
        if self.log_members.len() != before {
            self.adopt_newest_members();
        }
    }

    fn adopt_newest_members(&mut self) {
        let (voters, observers) = self
            .log_members
            .last()
            .map_or(&self.base_members, |(_, m)| m)
            .clone();
        if voters != self.voters || observers != self.observers {
            self.set_membership(voters, observers);
        }
    }

    /// The zxid of the newest membership change in the log (0 if none after the base).
    fn newest_members_zxid(&self) -> i64 {
        self.log_members.last().map_or(0, |(z, _)| *z)
    }

    pub fn id(&self) -> NodeId {
        self.id
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    pub fn term(&self) -> u64 {
        self.hard.term
    }
    pub fn commit(&self) -> i64 {
        self.commit
    }
    pub fn last_zxid(&self) -> i64 {
        self.log.back().map(|e| e.zxid).unwrap_or(self.base_zxid)
    }
    pub fn base_zxid(&self) -> i64 {
        self.base_zxid
    }
    pub fn voters(&self) -> &BTreeSet<NodeId> {
        &self.voters
    }
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters
            .iter()
            .chain(self.observers.iter())
            .copied()
            .filter(move |p| *p != self.id)
    }
    /// Observers that have the leader's committed state (for `mntr`).
    pub fn synced_observers(&self) -> usize {
        self.synced_among(&self.observers)
    }

    /// Peers in `set` that hold what the leader last sent as committed.
    fn synced_among(&self, set: &BTreeSet<NodeId>) -> usize {
        self.progress
            .iter()
            .filter(|(id, p)| set.contains(id) && p.matched >= self.commit_sent.min(self.commit))
            .count()
    }

    /// Learners being sent a catch-up snapshot (for `mntr`'s `zk_pending_syncs`).
    pub fn pending_syncs(&self) -> usize {
        self.progress
            .values()
            .filter(|p| p.snapshot_wait > 0)
            .count()
    }

    /// Leader: the last zxid `peer` is known to hold (0 when not known).
    pub fn matched(&self, peer: NodeId) -> i64 {
        self.progress.get(&peer).map_or(0, |p| p.matched)
    }

    /// Voters other than this one that the leader heard from recently (for `mntr`).
    pub fn synced_followers(&self) -> usize {
        self.synced_among(&self.voters)
    }

    /// The zxid the next proposal will get (leader only).
    pub fn next_zxid(&self) -> i64 {
        let last = self.last_zxid();
        if zxid_term(last) == self.hard.term {
            last + 1
        } else {
            make_zxid(self.hard.term, 1)
        }
    }

    /// The entries in (after, upto], in order, for applying committed entries.
    pub fn entries_between(&self, after: i64, upto: i64) -> impl Iterator<Item = &Entry> {
        let start = self.position_after(after);
        self.log.range(start..).take_while(move |e| e.zxid <= upto)
    }

    /// Index of the first entry with zxid > `zxid`.
    fn position_after(&self, zxid: i64) -> usize {
        self.log.partition_point(|e| e.zxid <= zxid)
    }

    fn find(&self, zxid: i64) -> Option<usize> {
        let i = self.log.partition_point(|e| e.zxid < zxid);
        (i < self.log.len() && self.log[i].zxid == zxid).then_some(i)
    }

    fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: deterministic for a seed, good enough for jitter.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn reset_election_timeout(&mut self) {
        let min = self.timing.election_ticks.max(1);
        self.election_timeout = min + (self.random() % min as u64) as u32;
        self.election_elapsed = 0;
    }

    fn send(&mut self, to: NodeId, message: Message, after_persist: bool) {
        self.outbox.push((to, message, after_persist));
    }

    fn set_term(&mut self, term: u64) {
        if term != self.hard.term {
            self.hard = HardState {
                term,
                voted_for: None,
            };
            self.hard_dirty = true;
        }
    }

    fn become_follower(&mut self, term: u64, leader: Option<NodeId>) {
        self.set_term(term);
        self.role = if self.voters.contains(&self.id) {
            Role::Follower
        } else {
            Role::Observer
        };
        self.leader = leader;
        self.votes.clear();
        self.progress.clear();
        self.reset_election_timeout();
    }

    /// Adopts a membership (at most one voter differs from the one before; see
    /// core::membership). New peers start from our last entry. A leader that is no longer a
    /// voter goes on leading, without counting itself, until the change is committed
    /// (`maybe_commit`), then steps down.
    fn set_membership(
        &mut self,
        voters: impl IntoIterator<Item = NodeId>,
        observers: impl IntoIterator<Item = NodeId>,
    ) {
        self.voters = voters.into_iter().collect();
        self.observers = observers.into_iter().collect();
        self.membership_epoch += 1;
        let is_voter = self.voters.contains(&self.id);
        match self.role {
            Role::Leader => {
                let last = self.last_zxid();
                let peers: Vec<NodeId> = self.peers().collect();
                self.progress.retain(|id, _| peers.contains(id));
                for p in peers {
                    self.progress.entry(p).or_insert(Progress {
                        matched: 0,
                        sent: last,
                        active: true,
                        snapshot_wait: 0,
                    });
                }
                self.maybe_commit();
            }
            Role::Observer if is_voter => self.role = Role::Follower,
            Role::Follower | Role::PreCandidate | Role::Candidate if !is_voter => {
                self.role = Role::Observer
            }
            _ => {}
        }
    }

    /// The connection to `peer` broke. If it was the leader, stop waiting for it: a killed
    /// leader is noticed at once instead of after an election timeout, and this replica's
    /// pre-vote lease no longer protects it.
    pub fn peer_lost(&mut self, peer: NodeId) {
        if self.leader == Some(peer) && self.role != Role::Leader {
            self.leader = None;
            let jitter = 1 + (self.random() % 3) as u32;
            self.election_elapsed = self.election_timeout.saturating_sub(jitter);
        }
        if let Some(p) = self.progress.get_mut(&peer) {
            // Resend from what is known to have arrived.
            p.sent = p.matched;
        }
    }

    pub fn tick(&mut self) {
        match self.role {
            Role::Leader => {
                self.heartbeat_elapsed += 1;
                self.election_elapsed += 1;
                if self.election_elapsed >= self.timing.election_ticks {
                    self.election_elapsed = 0;
                    // Check quorum: a leader that cannot hear a majority steps down, so that a
                    // partitioned leader stops accepting writes it can never commit.
                    // A leader that removed itself (leading until that commits) is not one of
                    // the majority.
                    let active = usize::from(self.voters.contains(&self.id))
                        + self
                            .progress
                            .iter()
                            .filter(|(id, p)| self.voters.contains(id) && p.active)
                            .count();
                    for p in self.progress.values_mut() {
                        p.active = false;
                    }
                    if active < self.quorum() {
                        let term = self.hard.term;
                        self.become_follower(term, None);
                        return;
                    }
                }
                let waiting: Vec<NodeId> = self
                    .progress
                    .iter()
                    .filter(|(_, p)| p.snapshot_wait > 0)
                    .map(|(id, _)| *id)
                    .collect();
                for peer in waiting {
                    let p = self.progress.get_mut(&peer).expect("listed");
                    p.snapshot_wait -= 1;
                    if p.snapshot_wait == 0 {
                        p.sent = p.matched;
                    }
                }
                if self.heartbeat_elapsed >= self.timing.heartbeat_ticks {
                    self.heartbeat_elapsed = 0;
                    self.broadcast_append(true);
                }
            }
            Role::Observer => {
                self.election_elapsed += 1;
                if self.election_elapsed >= self.election_timeout {
                    // Silent leader (a partition without a reset): stop claiming to follow it.
                    self.leader = None;
                }
            }
            Role::Follower | Role::PreCandidate | Role::Candidate => {
                self.election_elapsed += 1;
                if self.election_elapsed >= self.election_timeout {
                    self.start_pre_vote();
                }
            }
        }
    }

    fn start_pre_vote(&mut self) {
        if !self.voters.contains(&self.id) {
            return;
        }
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.id, true);
        self.reset_election_timeout();
        if self.voters.len() == 1 {
            self.start_election();
            return;
        }
        let term = self.hard.term + 1;
        let last_zxid = self.last_zxid();
        let me = self.id;
        let voters: Vec<NodeId> = self.voters.iter().copied().filter(|v| *v != me).collect();
        for v in voters {
            self.send(v, Message::PreVote { term, last_zxid }, false);
        }
    }

    fn start_election(&mut self) {
        let term = self.hard.term + 1;
        self.set_term(term);
        self.hard.voted_for = Some(self.id);
        self.hard_dirty = true;
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.id, true);
        self.reset_election_timeout();
        if self.voters.len() == 1 {
            self.become_leader();
            return;
        }
        let last_zxid = self.last_zxid();
        let me = self.id;
        let voters: Vec<NodeId> = self.voters.iter().copied().filter(|v| *v != me).collect();
        for v in voters {
            // Sent after the vote for ourselves is durable.
            self.send(v, Message::Vote { term, last_zxid }, true);
        }
    }

    fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.votes.clear();
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        let last = self.last_zxid();
        let peers: Vec<NodeId> = self.peers().collect();
        self.progress = peers
            .into_iter()
            .map(|p| {
                (
                    p,
                    Progress {
                        matched: 0,
                        sent: last,
                        active: true,
                        snapshot_wait: 0,
                    },
                )
            })
            .collect();
        self.commit_sent = i64::MIN;
        self.became_leader = true;
    }

    fn tally(&self) -> (usize, usize) {
        let granted = self.votes.values().filter(|g| **g).count();
        let refused = self.votes.values().filter(|g| !**g).count();
        (granted, refused)
    }

    fn log_is_current(&self, last_zxid: i64) -> bool {
        last_zxid >= self.last_zxid()
    }

    /// Heard from a live leader within the minimum election timeout.
    fn leader_lease_holds(&self) -> bool {
        self.leader.is_some() && self.election_elapsed < self.timing.election_ticks
    }

    pub fn step(&mut self, from: NodeId, message: Message) {
        let term = message.term();
        match &message {
            Message::PreVote { .. } => {}
            Message::PreVoteReply {
                granted: false,
                current_term,
                ..
            } if *current_term > self.hard.term => {
                // The voter is in a later term (elections that did not end in a leader):
                // move to it, as for any message from a later term, so that our next
                // pre-vote asks about a term it can grant. Without this, a server with the
                // newest log but an older term is refused by every pre-vote while the others
                // cannot win without it, and no leader is ever elected.
                let current = *current_term;
                self.become_follower(current, None);
                return;
            }
            Message::PreVoteReply { .. } => {}
            Message::Vote { .. } if term > self.hard.term => {
                if self.leader_lease_holds() && self.role != Role::Leader {
                    // Disruptive candidate while our leader is alive: ignore it entirely.
                    return;
                }
                self.become_follower(term, None);
            }
            _ if term > self.hard.term => {
                let leader = matches!(message, Message::Append { .. } | Message::Snapshot { .. })
                    .then_some(from);
                self.become_follower(term, leader);
            }
            _ => {}
        }
        if self.role == Role::Leader
            && let Some(p) = self.progress.get_mut(&from)
        {
            p.active = true;
        }
        match message {
            Message::PreVote { term, last_zxid } => {
                let granted = term > self.hard.term
                    && !self.leader_lease_holds()
                    && self.role != Role::Leader
                    && self.log_is_current(last_zxid);
                let current_term = self.hard.term;
                self.send(
                    from,
                    Message::PreVoteReply {
                        term,
                        granted,
                        current_term,
                    },
                    false,
                );
            }
            Message::PreVoteReply { term, granted, .. } => {
                if self.role == Role::PreCandidate
                    && term == self.hard.term + 1
                    && self.voters.contains(&from)
                {
                    self.votes.insert(from, granted);
                    let (yes, no) = self.tally();
                    if yes >= self.quorum() {
                        self.start_election();
                    } else if no >= self.quorum() {
                        let t = self.hard.term;
                        self.become_follower(t, None);
                    }
                }
            }
            Message::Vote { term, last_zxid } => {
                // Whatever this server's own membership says: a server added by a change
                // it has not received yet is a voter all the same, and the candidate counts
                // only the votes of its own voters (Raft's single-server changes).
                let granted = term == self.hard.term
                    && self.hard.voted_for.is_none_or(|v| v == from)
                    && self.log_is_current(last_zxid);
                if granted {
                    if self.hard.voted_for != Some(from) {
                        self.hard.voted_for = Some(from);
                        self.hard_dirty = true;
                    }
                    self.reset_election_timeout();
                }
                let reply_term = self.hard.term;
                self.send(
                    from,
                    Message::VoteReply {
                        term: reply_term,
                        granted,
                    },
                    true,
                );
            }
            Message::VoteReply { term, granted } => {
                if self.role == Role::Candidate
                    && term == self.hard.term
                    && self.voters.contains(&from)
                {
                    self.votes.insert(from, granted);
                    let (yes, no) = self.tally();
                    if yes >= self.quorum() {
                        self.become_leader();
                    } else if no >= self.quorum() {
                        let t = self.hard.term;
                        self.become_follower(t, None);
                    }
                }
            }
            Message::Append {
                term,
                prev_zxid,
                entries,
                commit,
            } => {
                if term < self.hard.term {
                    let t = self.hard.term;
                    let last = self.last_zxid();
                    self.send(
                        from,
                        Message::AppendReply {
                            term: t,
                            success: false,
                            last_zxid: last,
                        },
                        false,
                    );
                    return;
                }
                if self.role != Role::Follower && self.role != Role::Observer {
                    self.become_follower(term, Some(from));
                }
                self.leader = Some(from);
                self.election_elapsed = 0;
                if self.install.is_some() {
                    // A snapshot is about to replace the log: anything appended now would be
                    // acknowledged and then dropped. The leader resends after the install.
                    return;
                }
                self.on_append(from, prev_zxid, entries, commit);
            }
            Message::AppendReply {
                term,
                success,
                last_zxid,
            } => {
                if self.role == Role::Leader && term == self.hard.term {
                    self.on_append_reply(from, success, last_zxid);
                }
            }
            Message::Snapshot { term, zxid, data } => {
                if term < self.hard.term {
                    return;
                }
                self.leader = Some(from);
                self.election_elapsed = 0;
                if zxid <= self.commit || self.find(zxid).is_some() {
                    // Already have it all (a late or repeated offer): installing it would
                    // throw away entries after it that we may have acknowledged.
                    let last = self.commit.max(zxid);
                    self.send(
                        from,
                        Message::AppendReply {
                            term: self.hard.term,
                            success: true,
                            last_zxid: last,
                        },
                        true,
                    );
                    return;
                }
                self.install = Some((zxid, data));
            }
        }
    }

    fn on_append(&mut self, from: NodeId, prev_zxid: i64, entries: Vec<Entry>, commit: i64) {
        let term = self.hard.term;
        let mut entries = entries.into_iter().peekable();
        // Entries at or below our base are committed, hence identical: skip them.
        let mut prev = prev_zxid;
        if prev < self.base_zxid {
            while let Some(e) = entries.peek() {
                if e.zxid > self.base_zxid {
                    break;
                }
                prev = e.zxid;
                entries.next();
            }
            if prev != self.base_zxid {
                let base = self.base_zxid;
                self.send(
                    from,
                    Message::AppendReply {
                        term,
                        success: false,
                        last_zxid: base,
                    },
                    false,
                );
                return;
            }
        }
        let mut position = if prev == self.base_zxid {
            0
        } else {
            match self.find(prev) {
                Some(i) => i + 1,
                None => {
                    // Hint: our newest entry below `prev`.
                    let below = self.log.partition_point(|e| e.zxid < prev);
                    let hint = if below == 0 {
                        self.base_zxid
                    } else {
                        self.log[below - 1].zxid
                    };
                    self.send(
                        from,
                        Message::AppendReply {
                            term,
                            success: false,
                            last_zxid: hint,
                        },
                        false,
                    );
                    return;
                }
            }
        };
        let mut last_new = prev;
        for entry in entries {
            if position < self.log.len() {
                if self.log[position].zxid == entry.zxid {
                    position += 1;
                    last_new = entry.zxid;
                    continue;
                }
                assert!(
                    self.log[position].zxid > self.commit,
                    "a committed entry ({:#x}) is never overwritten",
                    self.log[position].zxid
                );
                let keep_until = if position == 0 {
                    self.base_zxid
                } else {
                    self.log[position - 1].zxid
                };
                self.log.truncate(position);
                self.note_truncated(keep_until);
                self.truncated_after = Some(
                    self.truncated_after
                        .map_or(keep_until, |t| t.min(keep_until)),
                );
                self.unpersisted_from = self.unpersisted_from.min(position);
                self.durable_zxid = self.durable_zxid.min(keep_until);
            }
            last_new = entry.zxid;
            self.note_appended(&entry);
            self.log.push_back(entry);
            position += 1;
        }
        let new_commit = commit.min(last_new);
        if new_commit > self.commit {
            self.commit = new_commit;
            self.successor_wanted(from);
        }
        self.send(
            from,
            Message::AppendReply {
                term,
                success: true,
                last_zxid: last_new,
            },
            true,
        );
    }

    fn on_append_reply(&mut self, from: NodeId, success: bool, last_zxid: i64) {
        let base = self.base_zxid;
        let last = self.last_zxid();
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        if success {
            p.snapshot_wait = 0;
            if last_zxid > p.matched {
                p.matched = last_zxid.min(last);
            }
            if p.sent < p.matched {
                p.sent = p.matched;
            }
            self.maybe_commit();
            return;
        }
        // Rejected: back off to the newest of our entries at or below the hint.
        if last_zxid < base {
            if p.snapshot_wait == 0 {
                p.snapshot_wait = self.timing.snapshot_retry_ticks.max(1);
                self.snapshots_needed.push(from);
            }
            return;
        }
        let at_or_below = self.log.partition_point(|e| e.zxid <= last_zxid);
        let resume = if at_or_below == 0 {
            base
        } else {
            self.log[at_or_below - 1].zxid
        };
        let p = self.progress.get_mut(&from).expect("checked");
        // Entries the peer acknowledged were durable and equal to ours; they stay matched.
        p.sent = resume.max(p.matched);
        self.send_append(from, false);
    }

    fn maybe_commit(&mut self) {
        let mut matched: Vec<i64> = self
            .voters
            .iter()
            .map(|v| {
                if *v == self.id {
                    self.durable_zxid
                } else {
                    self.progress.get(v).map_or(0, |p| p.matched)
                }
            })
            .collect();
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&candidate) = matched.get(self.quorum() - 1) else {
            return;
        };
        // Only an entry of the current term commits by counting (Raft §5.4.2); earlier ones
        // commit with it.
        if candidate > self.commit && zxid_term(candidate) == self.hard.term {
            self.commit = candidate;
        }
        // A leader that removed itself leads until that change is committed, then tells the
        // others the commit point (so that they apply the change and the replies waiting for
        // it) and steps down.
        if !self.voters.contains(&self.id) && self.commit >= self.newest_members_zxid() {
            self.broadcast_append(true);
            let term = self.hard.term;
            self.become_follower(term, None);
        }
    }

    /// Appends a new entry as leader. `payload` is given the entry's zxid.
    pub fn propose(&mut self, payload: impl FnOnce(i64) -> Arc<[u8]>) -> Option<i64> {
        if self.role != Role::Leader {
            return None;
        }
        let zxid = self.next_zxid();
        assert!(
            (zxid as u64 & 0xffff_ffff) != 0,
            "zxid counter exhausted in term {}",
            self.hard.term
        );
        let entry = Entry {
            zxid,
            payload: payload(zxid),
        };
        self.note_appended(&entry);
        self.log.push_back(entry);
        Some(zxid)
    }

    /// Entries up to `zxid` are durable on this server.
    pub fn persisted(&mut self, zxid: i64) {
        if zxid > self.durable_zxid {
            self.durable_zxid = zxid.min(self.last_zxid());
        }
        if self.role == Role::Leader {
            self.maybe_commit();
        }
    }

    /// The driver installed the snapshot at `zxid` (its state now equals that point);
    /// `members` is the membership that state holds, if it holds one.
    pub fn snapshot_installed(&mut self, zxid: i64, members: Option<(Vec<NodeId>, Vec<NodeId>)>) {
        self.log.clear();
        self.log_members.clear();
        if let Some((voters, observers)) = members {
            self.base_members = (
                voters.into_iter().collect(),
                observers.into_iter().collect(),
            );
        }
        self.adopt_newest_members();
        self.unpersisted_from = 0;
        self.base_zxid = zxid;
        self.durable_zxid = zxid;
        // A snapshot is only accepted above our commit point (see `step`).
        self.commit = zxid;
        if let Some(leader) = self.leader {
            let term = self.hard.term;
            self.send(
                leader,
                Message::AppendReply {
                    term,
                    success: true,
                    last_zxid: zxid,
                },
                true,
            );
        }
    }

    /// The driver sends the state at `zxid` (applied, so committed) to `peer`.
    pub fn send_snapshot(&mut self, peer: NodeId, zxid: i64, data: Arc<[u8]>) {
        if self.role != Role::Leader {
            return;
        }
        let term = self.hard.term;
        if let Some(p) = self.progress.get_mut(&peer) {
            p.sent = zxid;
        }
        self.send(peer, Message::Snapshot { term, zxid, data }, false);
    }

    /// Forgets entries up to `zxid` (applied, and no longer needed for followers' catch-up).
    pub fn compact(&mut self, zxid: i64) {
        let zxid = zxid.min(self.commit).min(self.durable_zxid);
        let n = self.position_after(zxid);
        if n == 0 {
            return;
        }
        self.base_zxid = self.log[n - 1].zxid;
        self.log.drain(..n);
        let base = self.base_zxid;
        if let Some(i) = self.log_members.iter().rposition(|(z, _)| *z <= base) {
            self.base_members = self.log_members[i].1.clone();
            self.log_members.drain(..=i);
        }
        self.unpersisted_from = self.unpersisted_from.saturating_sub(n);
    }

    pub fn log_len(&self) -> usize {
        self.log.len()
    }

    fn send_append(&mut self, peer: NodeId, heartbeat: bool) {
        let Some(p) = self.progress.get(&peer) else {
            return;
        };
        if p.snapshot_wait > 0 {
            return;
        }
        let sent = p.sent;
        let last = self.last_zxid();
        if sent >= last && !heartbeat && self.commit_sent >= self.commit {
            return;
        }
        if sent < self.base_zxid {
            let p = self.progress.get_mut(&peer).expect("checked");
            if !p.active {
                // Not heard from in this check-quorum window: it may be down for hours, so
                // probe with an empty append (at heartbeats only) instead of building a
                // snapshot every retry. Its answer marks it active, and the next append (or
                // the rejection) sends one.
                if !heartbeat {
                    return;
                }
                let (term, commit) = (self.hard.term, self.commit);
                self.send(
                    peer,
                    Message::Append {
                        term,
                        prev_zxid: sent,
                        entries: Vec::new(),
                        commit,
                    },
                    false,
                );
                return;
            }
            p.snapshot_wait = self.timing.snapshot_retry_ticks.max(1);
            self.snapshots_needed.push(peer);
            return;
        }
        let start = self.position_after(sent);
        let entries: Vec<Entry> = self
            .log
            .range(start..)
            .take(self.timing.append_entries_max)
            .cloned()
            .collect();
        let new_sent = entries.last().map_or(sent, |e| e.zxid);
        let term = self.hard.term;
        let commit = self.commit;
        self.progress.get_mut(&peer).expect("checked").sent = new_sent;
        self.send(
            peer,
            Message::Append {
                term,
                prev_zxid: sent,
                entries,
                commit,
            },
            false,
        );
    }

    fn broadcast_append(&mut self, heartbeat: bool) {
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for peer in peers {
            self.send_append(peer, heartbeat);
        }
        self.commit_sent = self.commit;
    }

    /// Collects what the driver must do. Leaders send new entries and commit advances here,
    /// once per driver cycle, so one append carries a whole batch.
    pub fn take_ready(&mut self) -> Ready {
        if self.role == Role::Leader {
            self.maybe_commit();
            let behind = self.progress.values().any(|p| p.sent < self.last_zxid());
            if behind || self.commit_sent < self.commit {
                self.broadcast_append(false);
            }
        }
        let to_persist: Vec<Entry> = self.log.range(self.unpersisted_from..).cloned().collect();
        self.unpersisted_from = self.log.len();
        Ready {
            hard_state: std::mem::take(&mut self.hard_dirty).then_some(self.hard),
            truncated_after: self.truncated_after.take(),
            to_persist,
            messages: std::mem::take(&mut self.outbox),
            commit: self.commit,
            install_snapshot: self.install.take(),
            snapshots_needed: std::mem::take(&mut self.snapshots_needed),
            became_leader: std::mem::take(&mut self.became_leader),
        }
    }
}

#[cfg(test)]
mod simulation;
