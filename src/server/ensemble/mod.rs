//! The commit executor of a replicated server (docs/ARCHITECTURE.md, "Replication").
//!
//! Every server keeps `applied`, the committed state, and applies committed entries to it in
//! zxid order; shards read only trees published from it. The leader also keeps `speculative`,
//! the committed state plus its proposals in flight, against which new writes are validated
//! and turned into txns (ZooKeeper's outstanding changes). A write's reply is held until the
//! state at its `ready_at` zxid is applied on the server the client is connected to, so a
//! client reads its own writes and sees replies in FIFO order (R1, R10).
//!
//! Followers and observers forward writes and new sessions to the leader and report session
//! traffic to it; the leader alone expires sessions. When the leader changes, requests that
//! may not have committed are answered by closing their connections: the client reconnects
//! and learns the outcome by reading, as with ZooKeeper.

mod arrived;
mod bulk_reconfig;
mod catch_up;
mod forwarding;
mod leader;
mod read_only;
mod rebase;

use std::collections::VecDeque;

use ahash::AHashMap as HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use glommio::channels::local_channel::{self, LocalSender};
use glommio::channels::shared_channel::{ConnectedSender, SharedReceiver, SharedSender};

use crate::config::{Config, Member};
use crate::consensus::{Entry, HardState, NodeId, Replica, Role, Timing};
use crate::core::commit::{Attach, CommitCore, WriteReply, WriteRequest};
use crate::core::sessions::ConnectionRef;
use crate::core::tree::Trigger;
use crate::core::txn::{Txn, TxnHeader};
use crate::jute::Reader;
use crate::jute::records::Request;
use crate::server::commit_executor::{
    ShardLinks, link_shards, next_batch, spawn_expiry_and_reap_timers, spawn_timer,
};
use crate::server::limits::{
    COMMIT_BATCH_MAX, ENCODE_SCRATCH_KEPT_BYTES, FORWARD_TIMEOUT_MS, LEADER_APPLIED_LAG_MS,
    PEER_QUEUE_FRAMES_MAX, RAFT_APPEND_ENTRIES_MAX, RAFT_TICK_MS, SNAPSHOT_BYTES_MAX,
    SNAPSHOT_CHUNK_BYTES,
};
use crate::server::log_writer::LogWriter;
use crate::server::messages::{ConnectResult, ShardReply, ToCommit, ToShard};
use crate::server::peer::{self, PeerMessage};
use crate::server::publication::{Publisher, TreeDemand};
use crate::server::stats::{ServerMode, ServerStats};
use crate::server::wall_clock_ms;
use crate::storage::log::encode_record;
use crate::storage::snapshot::{self, SessionRecord};
use crate::storage::vote;
use arrived::Arrived;
use bulk_reconfig::BulkReconfig;
use catch_up::CatchUp;
use forwarding::{ForwardStream, connection_key};
use leader::SpecBatch;

/// The owner given to sessions in the leader's speculative state: connections are tracked
/// only in `applied`, on the server the client is connected to.
const NO_CONNECTION: ConnectionRef = ConnectionRef {
    shard: usize::MAX,
    connection_id: 0,
};

/// Where the answer to a request goes.
#[derive(Debug, Clone, Copy)]
enum Origin {
    Local(ConnectionRef),
    Remote { server: NodeId, request: u64 },
}

/// An answer waiting until the state at its zxid is applied here.
enum Held {
    Write(ConnectionRef, WriteReply),
    Connect {
        connection: ConnectionRef,
        session_id: i64,
        password: [u8; 16],
    },
    /// A close that waits for the committed answers queued before it (`close`).
    Close(ConnectionRef),
}

impl Held {
    fn connection(&self) -> ConnectionRef {
        match self {
            Held::Write(c, _) | Held::Close(c) => *c,
            Held::Connect { connection, .. } => *connection,
        }
    }
}

/// What the durable state of a restarted replicated server holds.
pub struct Recovered {
    pub applied: CommitCore,
    pub records: Vec<(i64, Vec<u8>)>,
    pub hard: HardState,
}

struct Ensemble {
    config: Arc<Config>,
    me: NodeId,
    replica: Replica,
    applied: CommitCore,
    speculative: Option<CommitCore>,
    log: LogWriter,
    log_dir: PathBuf,
    snapshot_dir: PathBuf,
    vote_path: PathBuf,
    shards: Vec<ConnectedSender<ToShard>>,
    peers: HashMap<NodeId, LocalSender<Arc<Vec<u8>>>>,
    stats: Arc<ServerStats>,
    held: VecDeque<(i64, Held)>,
    /// Forwarded requests waiting for the leader's answer, with the time their
    /// FORWARD_TIMEOUT_MS counts from.
    forwarded_writes: HashMap<u64, (ConnectionRef, i64)>,
    /// Follower: per client connection, its next forward seq and the request ids of its
    /// forwarded writes not yet answered, in order.
    forward_streams: HashMap<ConnectionRef, ForwardStream>,
    /// Leader: per (follower, connection), the next forward seq it accepts; `u64::MAX` once a
    /// gap was seen (everything after it is refused). With the time last heard, for pruning.
    forward_expected: HashMap<(NodeId, u64), (u64, i64)>,
    /// Random per process start; see `connection_key`.
    incarnation: u64,
    forwarded_connects: HashMap<u64, (ConnectionRef, i64)>,
    next_request: u64,
    /// (term, leader) as last seen, to notice a change of leader.
    seen_leader: (u64, Option<NodeId>),
    /// The term in which this server caught up with its leader (serves clients only then).
    synced_term: Option<u64>,
    /// The leader's first zxid of its term: it serves once that is applied.
    epoch_start: i64,
    replies: Vec<Vec<ShardReply>>,
    triggers: Vec<(i64, Trigger)>,
    /// When the shards get the applied tree (`server::publication`).
    publisher: Publisher,
    snapshots: crate::server::snapshot_schedule::Snapshots,
    catch_up: CatchUp,
    reap_per_tick_max: usize,
    /// Read-only sessions (local to this server, never replicated) and their connections.
    read_only_sessions: HashMap<i64, ConnectionRef>,
    next_read_only_session: i64,
    was_serving: bool,
    /// The membership in force (from `/zookeeper/config` once written, zoo.cfg before).
    members: Vec<Member>,
    members_version: i64,
    /// Leader: its speculative state at the end of each cycle's proposals, published as is
    /// once committed instead of applying the same txns a second time.
    sealed: VecDeque<SpecBatch>,
    sealed_upto: i64,
    /// Follower: entries decoded on arrival, for their apply.
    arrived: Arrived,
    /// When the leader last sealed a batch with its tree.
    tree_sealed_at: std::time::Instant,
    spec_triggers: Vec<(i64, Trigger)>,
    spec_sessions: Vec<(TxnHeader, Txn)>,
    /// A catch-up snapshot arriving in pieces: (from, term, zxid, total, bytes so far).
    incoming_snapshot: Option<(NodeId, u64, i64, u64, Vec<u8>)>,
    /// Moving the applied tree onto this server's newest snapshot (`server::rebase`, as
    /// standalone; see `rebase.rs` here for the leader's trees).
    rebase: crate::server::rebase::Rebasing,
    /// Leader: a reconfig of several voters, made one voter at a time (`bulk_reconfig.rs`).
    bulk_reconfig: Option<BulkReconfig>,
    /// Every server's address as last seen in zoo.cfg or a membership change, so that a peer
    /// the replica takes on (from its log, before the change is applied) can be dialled.
    known_members: HashMap<NodeId, Member>,
    /// The replica's membership epoch and leader `peers` was last matched to, and the
    /// address each peer was dialled at.
    dialed: (u64, Option<NodeId>),
    dialed_addresses: HashMap<NodeId, Member>,
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}:{port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}:{port} resolves to no address"))
}

/// The address this server takes other servers' connections on (its quorum port).
pub fn quorum_address(config: &Config) -> Result<SocketAddr, String> {
    let me = config.server_id;
    let mine = config
        .members
        .iter()
        .find(|m| m.id == me)
        .ok_or_else(|| format!("server {me} is not among the server.N lines"))?;
    resolve(&mine.host, mine.quorum_port)
}

/// Checks what the ensemble needs from zoo.cfg before anything starts.
pub fn validate(config: &Config) -> Result<(), String> {
    let me = config.server_id;
    if !config.members.iter().any(|m| m.id == me) {
        return Err(format!(
            "this server's id {me} (from {}/myid) is not among the server.N lines",
            config.data_dir.display()
        ));
    }
    if !config.members.iter().any(|m| !m.observer) {
        return Err("the ensemble has no voting member".into());
    }
    for m in &config.members {
        resolve(&m.host, m.quorum_port)?;
    }
    Ok(())
}

pub async fn run(
    config: Arc<Config>,
    recovered: Recovered,
    log_dir: PathBuf,
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
    let me = config.server_id;
    let Recovered {
        applied,
        records,
        hard,
    } = recovered;
    // Once written, the replicated /zookeeper/config is the membership; zoo.cfg only seeds it.
    let (members, members_version) = match applied.membership() {
        Some(m) if !m.members.is_empty() => (m.members, m.version),
        _ => (config.members.clone(), 0),
    };
    let listen_address = quorum_address(&config).expect("validated");
    glommio::spawn_local(peer::listen(listen_address, merged_tx.clone())).detach();
    // Dialled by `follow_replica_members` once the replica says who its peers are.
    let peers = HashMap::new();
    spawn_timer(merged_tx.clone(), RAFT_TICK_MS, || ToCommit::RaftTick);
    let per_tick = spawn_expiry_and_reap_timers(&config, &merged_tx);

    let entries: Vec<Entry> = records
        .into_iter()
        .map(|(zxid, bytes)| Entry {
            zxid,
            payload: bytes.into(),
        })
        .collect();
    let voters: Vec<NodeId> = members
        .iter()
        .filter(|m| !m.observer)
        .map(|m| m.id)
        .collect();
    let observers: Vec<NodeId> = members
        .iter()
        .filter(|m| m.observer)
        .map(|m| m.id)
        .collect();
    let mut seed = [0u8; 8];
    let _ = getrandom::getrandom(&mut seed);
    let timing = Timing {
        election_ticks: config.election_ticks_within_sync_limit(),
        heartbeat_ticks: 1,
        append_entries_max: RAFT_APPEND_ENTRIES_MAX,
        snapshot_retry_ticks: 200,
    };
    let mut known_members: HashMap<NodeId, Member> = HashMap::new();
    for m in config.members.iter().chain(members.iter()) {
        known_members.insert(m.id, m.clone());
    }
    for e in &entries {
        for m in members_in_entry(&e.payload).unwrap_or_default() {
            known_members.insert(m.id, m);
        }
    }
    let durable = crate::consensus::Durable {
        hard,
        base_zxid: applied.last_zxid(),
        entries,
    };
    let replica = Replica::new(
        me,
        voters,
        observers,
        durable,
        timing,
        u64::from_le_bytes(seed),
    )
    .with_membership_in_log(membership_in_entry);
    let log = match LogWriter::create(&log_dir, replica.last_zxid() + 1).await {
        Ok(log) => log,
        Err(e) => {
            eprintln!(
                "zoo: FATAL: cannot start a log segment in {}: {e}",
                log_dir.display()
            );
            std::process::exit(1);
        }
    };
    let mut ensemble = Ensemble {
        me,
        replica,
        applied,
        speculative: None,
        log,
        log_dir,
        snapshot_dir: snapshot::snapshot_directory(&config.data_dir),
        vote_path: vote::vote_path(&config.data_dir),
        replies: (0..shards.len()).map(|_| Vec::new()).collect(),
        shards,
        peers,
        stats,
        held: VecDeque::new(),
        forwarded_writes: HashMap::new(),
        forward_streams: HashMap::new(),
        forward_expected: HashMap::new(),
        incarnation: u64::from_le_bytes(seed) & 0xffff,
        forwarded_connects: HashMap::new(),
        next_request: 1,
        seen_leader: (0, None),
        synced_term: None,
        epoch_start: i64::MAX,
        triggers: Vec::new(),
        publisher: Publisher::new(demand),
        snapshots: crate::server::snapshot_schedule::Snapshots::new(
            crate::server::snapshot_schedule::SnapshotSchedule::new(
                config.snap_count,
                u64::MAX,
                crate::server::snapshot_schedule::IdleRule::of(&config),
            ),
        ),
        catch_up: Arc::new(Mutex::new(Vec::new())),
        reap_per_tick_max: per_tick,
        read_only_sessions: HashMap::new(),
        was_serving: false,
        members,
        members_version,
        sealed: VecDeque::new(),
        sealed_upto: 0,
        arrived: Arrived::default(),
        tree_sealed_at: std::time::Instant::now(),
        spec_triggers: Vec::new(),
        spec_sessions: Vec::new(),
        incoming_snapshot: None,
        rebase: Default::default(),
        bulk_reconfig: None,
        known_members,
        dialed: (u64::MAX, None),
        dialed_addresses: HashMap::new(),
        // Read-only session ids: this server's id in the top byte, a distinct range below.
        next_read_only_session: (me << 56) | (0xff << 48) | (wall_clock_ms() & 0xffff_ffff),
        config,
    };
    ensemble.follow_replica_members();
    ensemble.publish_stats();
    eprintln!(
        "zoo: server {me} joining the ensemble of {} ({} in the log after zxid {:#x})",
        ensemble.config.members.len(),
        ensemble.replica.log_len(),
        ensemble.applied.last_zxid()
    );
    let mut batch = Vec::with_capacity(COMMIT_BATCH_MAX);
    while next_batch(&merged_rx, &mut batch).await {
        for message in batch.drain(..) {
            ensemble.handle(message);
        }
        ensemble.cycle().await;
    }
    drop(pumps);
}

/// Starts the task that keeps a connection to `member`; `None` if its address does not
/// resolve (it is then unreachable until a later reconfig names it again).
fn dial_member(me: NodeId, member: &Member) -> Option<LocalSender<Arc<Vec<u8>>>> {
    let address = match resolve(&member.host, member.quorum_port) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("zoo: server {}: {e}", member.id);
            return None;
        }
    };
    let (tx, rx) = local_channel::new_bounded::<Arc<Vec<u8>>>(PEER_QUEUE_FRAMES_MAX);
    glommio::spawn_local(peer::dial(me, member.id, address, rx)).detach();
    Some(tx)
}

fn decode_record(payload: &[u8]) -> (TxnHeader, Txn) {
    // Entries are records we encoded or that `record_is_sound` accepted from the leader, and
    // the log verifies what it reads back: a bad one here is a broken invariant.
    crate::storage::log::decode_record(payload).expect("replicated record decodes")
}

/// A txn as a log record in one exactly sized allocation: encoded into a buffer kept for the
/// next one (growing a fresh `Vec` field by field took several reallocations per proposal).
fn encode(header: &TxnHeader, txn: &Txn) -> Arc<[u8]> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with_borrow_mut(|bytes| {
        bytes.clear();
        encode_record(header, txn, bytes);
        let record = Arc::from(&bytes[..]);
        if bytes.capacity() > ENCODE_SCRATCH_KEPT_BYTES {
            *bytes = Vec::new(); // after a rare large record, do not keep its buffer
        }
        record
    })
}

impl Ensemble {
    fn is_leader(&self) -> bool {
        self.replica.role() == Role::Leader && self.speculative.is_some()
    }

    fn serving(&self) -> bool {
        match self.replica.role() {
            Role::Leader => self.applied.last_zxid() >= self.epoch_start,
            _ => self.replica.leader().is_some() && self.synced_term == Some(self.replica.term()),
        }
    }

    /// Queues a message for `to`; false if it was dropped (queue full, or no such peer).
    fn send_peer(&mut self, to: NodeId, message: &PeerMessage) -> bool {
        match self.peers.get(&to) {
            // Full: dropped; see the module comment of `peer`.
            Some(tx) => tx.try_send(Arc::new(message.to_frame())).is_ok(),
            None => false,
        }
    }

    fn reply(&mut self, connection: ConnectionRef, reply: ShardReply) {
        if let Some(r) = self.replies.get_mut(connection.shard) {
            r.push(reply);
        }
    }

    /// Closes the connection of every session attached to this server.
    fn close_all_clients(&mut self) {
        let owners: Vec<ConnectionRef> = self
            .applied
            .sessions()
            .iter()
            .filter_map(|s| s.owner)
            .filter(|o| *o != NO_CONNECTION)
            .collect();
        for owner in owners {
            self.close(owner);
        }
    }

    /// Closes `connection` once the answers held for it that are committed have gone out
    /// (R1: a reply already decided is not lost behind the close); at once if it has none, or
    /// one that is not committed (that one is dropped: the client retries).
    fn close(&mut self, connection: ConnectionRef) {
        let committed = self.applied.last_zxid().max(self.replica.commit());
        let last_held = self
            .held
            .iter()
            .filter(|(_, h)| h.connection() == connection)
            .map(|(z, _)| *z)
            .max();
        match last_held {
            Some(z) if z <= committed => self.held.push_back((z, Held::Close(connection))),
            _ => self.close_now(connection),
        }
    }

    fn close_now(&mut self, connection: ConnectionRef) {
        self.reply(
            connection,
            ShardReply::Close {
                connection_id: connection.connection_id,
            },
        );
    }

    fn handle(&mut self, message: ToCommit) {
        let now = wall_clock_ms();
        match message {
            ToCommit::Connect(attempt) => {
                let connection = attempt.connection;
                let result = if !self.serving()
                    && self.config.read_only_mode_enabled
                    && attempt.read_only_allowed
                {
                    Some(self.read_only_session(
                        connection,
                        attempt.timeout_ms,
                        attempt.new_password,
                    ))
                } else if !self.serving() {
                    Some(ConnectResult::NotServing)
                } else if attempt.last_zxid_seen > self.applied.last_zxid() {
                    Some(ConnectResult::ZxidAhead)
                } else if attempt.session_id == 0 {
                    if self.is_leader() {
                        self.leader_create_session(
                            Origin::Local(connection),
                            attempt.timeout_ms,
                            attempt.new_password,
                        );
                    } else {
                        let leader = self.replica.leader().expect("serving");
                        let request = self.next_request;
                        self.next_request += 1;
                        self.forwarded_connects.insert(request, (connection, now));
                        self.send_peer(
                            leader,
                            &PeerMessage::ForwardConnect {
                                request,
                                timeout_ms: attempt.timeout_ms,
                                password: attempt.new_password,
                            },
                        );
                    }
                    None
                } else {
                    let attach = self.applied.reattach_session(
                        attempt.session_id,
                        &attempt.password,
                        connection,
                        now,
                    );
                    self.touch(vec![attempt.session_id]);
                    Some(self.attach_result(attach))
                };
                if let Some(result) = result {
                    self.reply(
                        connection,
                        ShardReply::Connect {
                            connection_id: connection.connection_id,
                            result,
                        },
                    );
                }
            }
            ToCommit::Write {
                connection,
                write,
                frame,
            } => {
                if self.read_only_sessions.contains_key(&write.session_id) {
                    let (err, close_connection) = match write.request {
                        Request::CloseSession => (0, true),
                        _ => (crate::error::ZkError::NotReadOnly.code(), false),
                    };
                    let reply = WriteReply {
                        xid: write.xid,
                        zxid: self.applied.last_zxid(),
                        err,
                        body: Vec::new(),
                        close_connection,
                    };
                    self.reply(
                        connection,
                        ShardReply::Write {
                            connection_id: connection.connection_id,
                            reply,
                        },
                    );
                } else if self.is_leader() {
                    self.leader_write(Origin::Local(connection), write);
                } else if let (Some(leader), Some(frame)) = (self.replica.leader(), frame) {
                    let stream = self.forward_streams.entry(connection).or_default();
                    if stream.broken {
                        // Closing: a write after a lost one must not go ahead of it.
                        return;
                    }
                    stream.next_seq += 1;
                    let seq = stream.next_seq;
                    let request = self.next_request;
                    self.next_request += 1;
                    // Counted from when FORWARD_TIMEOUT_MS starts: a reconfig may wait for
                    // new voters to catch up (bulk_reconfig.rs), and a write is answered only
                    // after the ones before it on its connection.
                    let mut timed_from = now;
                    if matches!(write.request, Request::Reconfig { .. }) {
                        timed_from += 2
                            * i64::from(self.config.init_limit)
                            * i64::from(self.config.tick_time_ms);
                    }
                    if let Some((_, previous)) = stream
                        .outstanding
                        .back()
                        .and_then(|(r, _)| self.forwarded_writes.get(r))
                    {
                        timed_from = timed_from.max(*previous);
                    }
                    stream.outstanding.push_back((request, seq));
                    let oldest = stream.outstanding.front().map_or(seq, |(_, s)| *s);
                    self.forwarded_writes
                        .insert(request, (connection, timed_from));
                    let message = PeerMessage::ForwardWrite {
                        request,
                        session_id: write.session_id,
                        connection: connection_key(self.incarnation, connection),
                        seq,
                        oldest,
                        auth: write.auth.as_ref().clone(),
                        frame,
                    };
                    if !self.send_peer(leader, &message) {
                        self.break_stream(connection);
                    }
                } else {
                    // No leader: the write cannot be ordered. Closing lets the client retry
                    // elsewhere; nothing was acknowledged.
                    self.close(connection);
                }
            }
            ToCommit::Touch { sessions } => self.touch(sessions),
            ToCommit::Disconnected {
                connection,
                session_id,
            } => {
                self.forward_streams.remove(&connection);
                if self.read_only_sessions.remove(&session_id).is_none() {
                    self.applied.detach(session_id, connection);
                }
            }
            ToCommit::ExpiryTick => {
                // is_leader: a tick earlier in this batch may have demoted the replica.
                if !self.is_leader() {
                    return;
                }
                let Some(spec) = self.speculative.as_ref() else {
                    return;
                };
                let sessions = spec.expired_sessions(now);
                self.propose_each(sessions, |spec, session, scratch| {
                    spec.close_session(session, now, scratch)
                });
            }
            ToCommit::ReapTick => {
                if !self.is_leader() {
                    return;
                }
                let Some(spec) = self.speculative.as_ref() else {
                    return;
                };
                let candidates: Vec<_> = spec
                    .reap_candidates(now)
                    .into_iter()
                    .take(self.reap_per_tick_max)
                    .collect();
                self.propose_each(candidates, |spec, p, scratch| spec.reap(&p, now, scratch));
            }
            ToCommit::RaftTick => {
                self.rebase
                    .release_memory_if_due(self.snapshots.schedule.last_txn(), &self.stats.commit);
                // Not while a snapshot is being written: skipping would count afresh and lose
                // the txns the idle rule is waiting to cover.
                if self.snapshots.idle_due() {
                    self.start_snapshot();
                }
                self.replica.tick();
                self.expire_forwarded(now);
                if self.is_leader() && self.speculative.is_some() {
                    self.advance_bulk_reconfig(now);
                }
                let ready: Vec<_> = std::mem::take(&mut *self.catch_up.lock().expect("no panic"));
                for (peer, zxid, data) in ready {
                    eprintln!(
                        "zoo: sending server {peer} a snapshot at {zxid:#x} ({} bytes)",
                        data.len()
                    );
                    self.replica.send_snapshot(peer, zxid, data);
                }
            }
            ToCommit::NeedTree => self.publisher.force(),
            ToCommit::PeerLost { from } => {
                // A follower that reconnects (or restarted) starts its streams afresh.
                self.forward_expected.retain(|(f, _), _| *f != from);
                self.replica.peer_lost(from)
            }
            ToCommit::Peer { from, message } => self.on_peer(from, message, now),
        }
    }

    fn touch(&mut self, sessions: Vec<i64>) {
        let now = wall_clock_ms();
        if let Some(spec) = self.speculative.as_mut() {
            for s in sessions {
                spec.touch(s, now);
            }
        } else if let Some(leader) = self.replica.leader()
            && leader != self.me
        {
            self.send_peer(leader, &PeerMessage::Touch { sessions });
        }
    }

    fn on_peer(&mut self, from: NodeId, message: PeerMessage, now: i64) {
        match message {
            PeerMessage::Raft(m) => {
                if let crate::consensus::Message::Append { entries, .. } = &m
                    && let Some(bad) = entries.iter().find(|e| !self.arrived.check(e))
                {
                    // Untrusted bytes: a damaged entry is refused before it reaches the log.
                    eprintln!(
                        "zoo: dropping an append from server {from}: entry {:#x} is not a sound record",
                        bad.zxid
                    );
                    return;
                }
                self.replica.step(from, m)
            }
            PeerMessage::SnapshotChunk {
                term,
                zxid,
                offset,
                total,
                data,
            } => self.on_snapshot_chunk(from, term, zxid, offset, total, data),
            PeerMessage::ForwardWrite {
                request,
                session_id,
                connection,
                seq,
                oldest,
                auth,
                frame,
            } => {
                let origin = Origin::Remote {
                    server: from,
                    request,
                };
                if !self.is_leader() {
                    self.answer_write(origin, i64::MIN, not_leader_reply());
                    return;
                }
                // FIFO across a lossy hop: accept only the next seq of this connection, or a
                // first forward with nothing older unanswered; after a gap, refuse the rest.
                let expected = self.forward_expected.get(&(from, connection)).map(|e| e.0);
                let in_order = match expected {
                    Some(next) => seq == next,
                    None => oldest == seq,
                };
                let entry = self
                    .forward_expected
                    .entry((from, connection))
                    .or_insert((0, now));
                entry.1 = now;
                if !in_order {
                    entry.0 = u64::MAX;
                    self.answer_write(origin, i64::MIN, not_leader_reply());
                    return;
                }
                entry.0 = seq + 1;
                let mut reader = Reader::new(&frame, self.config.jute_max_buffer * 2);
                let decoded = reader.read_i32().and_then(|xid| {
                    let op = reader.read_i32()?;
                    Ok((xid, op))
                });
                let request_decoded = decoded
                    .ok()
                    .and_then(|(xid, op)| Request::decode(op, &mut reader).ok().map(|r| (xid, r)));
                match request_decoded {
                    Some((xid, request)) => self.leader_write(
                        origin,
                        WriteRequest {
                            session_id,
                            xid,
                            request,
                            auth: Arc::new(auth),
                        },
                    ),
                    // The follower decoded it before forwarding; a mismatch means the peer
                    // is broken. Closing the client's connection is the safe answer.
                    None => self.answer_write(origin, i64::MIN, not_leader_reply()),
                }
            }
            PeerMessage::ForwardConnect {
                request,
                timeout_ms,
                password,
            } => {
                let origin = Origin::Remote {
                    server: from,
                    request,
                };
                if self.is_leader() {
                    self.leader_create_session(origin, timeout_ms, password);
                } else {
                    self.send_peer(
                        from,
                        &PeerMessage::ConnectDone {
                            request,
                            ready_at: i64::MIN,
                            session_id: 0,
                            timeout_ms: 0,
                            password: [0; 16],
                        },
                    );
                }
            }
            PeerMessage::Touch { sessions } => {
                if let Some(spec) = self.speculative.as_mut() {
                    for s in sessions {
                        spec.touch(s, now);
                    }
                }
            }
            PeerMessage::WriteDone {
                request,
                ready_at,
                reply,
            } => {
                if let Some((connection, _)) = self.forwarded_writes.remove(&request) {
                    let in_order =
                        self.forward_streams.get_mut(&connection).is_some_and(|s| {
                            match s.outstanding.front() {
                                Some((r, _)) if *r == request => {
                                    s.outstanding.pop_front();
                                    true
                                }
                                _ => false,
                            }
                        });
                    if ready_at == i64::MIN || !in_order {
                        // Refused, or an earlier reply of this connection was lost.
                        self.break_stream(connection);
                    } else {
                        self.held
                            .push_back((ready_at, Held::Write(connection, reply)));
                    }
                }
            }
            PeerMessage::ConnectDone {
                request,
                ready_at,
                session_id,
                password,
                ..
            } => {
                if let Some((connection, _)) = self.forwarded_connects.remove(&request) {
                    if session_id == 0 {
                        self.close(connection);
                    } else {
                        self.held.push_back((
                            ready_at,
                            Held::Connect {
                                connection,
                                session_id,
                                password,
                            },
                        ));
                    }
                }
            }
        }
    }

    fn attach_result(&mut self, attach: Attach) -> ConnectResult {
        match attach {
            Attach::Attached {
                session_id,
                timeout_ms,
                password,
                previous,
            } => {
                if let Some(previous) = previous {
                    self.close(previous);
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

    /// A new leader (or none): what was in flight may not commit.
    fn on_leader_change(&mut self) {
        let term = self.replica.term();
        let leader = self.replica.leader();
        eprintln!(
            "zoo: server {}: term {term}, leader {}",
            self.me,
            leader.map_or("unknown".to_owned(), |l| l.to_string())
        );
        self.abandon_bulk_reconfig();
        self.speculative = None;
        self.sealed.clear();
        self.spec_triggers.clear();
        self.spec_sessions.clear();
        self.epoch_start = i64::MAX;
        // Committed answers are kept: their state is applied here whatever the leader.
        let applied = self.applied.last_zxid().max(self.replica.commit());
        let pending: Vec<(i64, Held)> = self.held.drain(..).collect();
        let mut dropped = Vec::new();
        for (ready_at, held) in pending {
            if ready_at <= applied {
                self.held.push_back((ready_at, held));
            } else {
                dropped.push(held.connection());
            }
        }
        for connection in dropped {
            self.close(connection);
        }
        let writes: Vec<ConnectionRef> = self.forwarded_writes.values().map(|(c, _)| *c).collect();
        for c in writes {
            self.break_stream(c);
        }
        self.forwarded_writes.clear();
        let connects: Vec<ConnectionRef> = self
            .forwarded_connects
            .drain()
            .map(|(_, (c, _))| c)
            .collect();
        for c in connects {
            self.close(c);
        }
        self.forward_expected.clear();
    }

    async fn cycle(&mut self) {
        self.seal();
        for _ in 0..4 {
            let ready = self.replica.take_ready();
            let (term, leader) = (self.replica.term(), self.replica.leader());
            if (term, leader) != self.seen_leader {
                self.seen_leader = (term, leader);
                self.on_leader_change();
            }
            if ready.became_leader {
                self.become_leader();
                self.seal();
            }
            let mut more = ready.became_leader;
            if let Some(state) = ready.hard_state
                && let Err(e) = vote::store(&self.vote_path, state)
            {
                eprintln!(
                    "zoo: FATAL: cannot record the vote of term {}: {e}",
                    state.term
                );
                std::process::exit(1);
            }
            let mut to_persist = ready.to_persist;
            for e in &to_persist {
                let members = members_in_entry(&e.payload);
                self.learn_members(members);
            }
            self.follow_replica_members();
            let mut installed = false;
            if let Some((zxid, data)) = ready.install_snapshot {
                installed = self.install_snapshot(zxid, &data).await;
                more = true;
            }
            if installed {
                // The log was replaced: what this round meant to append (and acknowledge) is
                // gone with it; the leader resends from the snapshot on.
                to_persist.clear();
            }
            if let Some(after) = ready.truncated_after {
                self.discard_log_after(after).await;
            }
            let mut later = Vec::new();
            for (to, message, after_persist) in ready.messages {
                if after_persist && installed {
                    continue;
                } else if after_persist {
                    later.push((to, message));
                } else {
                    self.send_raft(to, message);
                }
            }
            if let Some(last) = to_persist.last().map(|e| e.zxid) {
                let mut records = Vec::new();
                for e in &to_persist {
                    records.extend_from_slice(&e.payload);
                }
                let first = to_persist[0].zxid;
                if let Err(e) = self.log.append_and_sync(records, first).await {
                    eprintln!("zoo: FATAL: the transaction log could not be made durable: {e}");
                    std::process::exit(1);
                }
                self.replica.persisted(last);
                more = true;
                self.stats
                    .commit
                    .fsyncs
                    .store(self.log.syncs, std::sync::atomic::Ordering::Relaxed);
            }
            for (to, message) in later {
                self.send_raft(to, message);
            }
            if !ready.snapshots_needed.is_empty() {
                self.prepare_catch_up(ready.snapshots_needed);
            }
            self.apply_committed();
            if !more {
                break;
            }
        }
        if self.is_leader() && self.speculative.is_some() {
            self.advance_bulk_reconfig(wall_clock_ms());
        }
        self.release_held();
        let serving = self.serving();
        if serving && !self.read_only_sessions.is_empty() {
            self.end_read_only_sessions();
        }
        if self.was_serving && !serving {
            // Out of the quorum: as ZooKeeper does, drop every client so that each finds a
            // server that is in it (or comes back read-only, where allowed).
            self.close_all_clients();
        }
        self.was_serving = serving;
        self.publish().await;
    }

    fn apply_committed(&mut self) {
        self.poll_rebase();
        let commit = self.replica.commit();
        let from = self.applied.last_zxid();
        let applied_before = from;
        if commit <= from {
            self.note_synced();
            return;
        }
        let mut applied_txns = 0u64;
        // The leader adopts its sealed speculative trees: same state, no second apply. It
        // moves to the newest committed batch that kept its tree, over the batches before it
        // that did not (leader.rs).
        while self
            .sealed
            .front()
            .is_some_and(|b| b.last <= self.applied.last_zxid())
        {
            self.sealed.pop_front();
        }
        let from = self.applied.last_zxid();
        let chained = self.sealed.front().is_some_and(|b| b.prev == from);
        let adopt = if chained {
            self.sealed
                .iter()
                .take_while(|b| b.last <= commit)
                .enumerate()
                .filter(|(_, b)| b.tree.is_some())
                .map(|(i, _)| i + 1)
                .last()
                .unwrap_or(0)
        } else {
            0
        };
        for batch in self.sealed.drain(..adopt).collect::<Vec<_>>() {
            for (header, txn) in &batch.sessions {
                self.close_expired_owner(header, txn);
                self.applied.apply_to_sessions(header, txn);
            }
            if let Some(tree) = batch.tree {
                self.applied.adopt_tree(tree);
            }
            self.triggers.extend(batch.triggers);
            self.publisher.changed();
            applied_txns += batch.entries;
        }
        // Committed batches sealed without a tree wait for a later one that has it; without
        // such a chain (a follower, or a leader's batch committed only in part), the
        // committed entries are applied from the log.
        let waits_for_tree = self
            .sealed
            .front()
            .is_some_and(|b| b.prev == self.applied.last_zxid() && b.tree.is_none());
        let from = self.applied.last_zxid();
        let apply_upto = if waits_for_tree { from } else { commit };
        let payloads: Vec<Arc<[u8]>> = self
            .replica
            .entries_between(from, apply_upto)
            .map(|e| e.payload.clone())
            .collect();
        let mut scratch = Vec::new();
        for payload in payloads {
            let (header, txn) = self.arrived.take(&payload);
            self.close_expired_owner(&header, &txn);
            self.applied.apply(&header, &txn, &mut scratch);
            self.triggers
                .extend(scratch.drain(..).map(|t| (header.zxid, t)));
            self.publisher.changed();
            applied_txns += 1;
        }
        self.snapshots.schedule.note(applied_txns, 0);
        self.note_synced();
        self.offer_to_rebase(applied_before);
        if let Some(m) = self.applied.membership()
            && m.version != self.members_version
            && !m.members.is_empty()
        {
            self.adopt_members(m.members, m.version);
        }
        if self.snapshots.schedule.is_due() {
            self.start_snapshot();
        }
        // Keep a window of applied entries for followers that lag a little.
        let applied = self.applied.last_zxid();
        let retain = self.config.log_retain_entries;
        if self.replica.log_len() > 2 * retain {
            let cut = self
                .replica
                .entries_between(self.replica.base_zxid(), applied)
                .nth(retain)
                .map(|e| e.zxid);
            if let Some(cut) = cut {
                self.replica.compact(cut);
            }
        }
    }

    /// A session expired by the leader loses its connection here too. (A close the client
    /// asked for, xid != 0, is answered by its reply, which closes after it is flushed.)
    fn close_expired_owner(&mut self, header: &TxnHeader, txn: &Txn) {
        if let Txn::CloseSession { session_id } = txn
            && header.xid == 0
            && let Some(owner) = self.applied.session_owner(*session_id)
            && owner != NO_CONNECTION
        {
            self.close(owner);
        }
    }

    /// A committed reconfig: new voters and observers take part from now on.
    fn adopt_members(&mut self, members: Vec<Member>, version: i64) {
        eprintln!(
            "zoo: server {} adopts config {version:#x}: {}",
            self.me,
            members
                .iter()
                .map(|m| format!("{}{}", m.id, if m.observer { "(observer)" } else { "" }))
                .collect::<Vec<_>>()
                .join(", ")
        );
        // The replica took this membership on when the change reached its log (R13).
        self.learn_members(Some(members.clone()));
        self.members = members;
        self.members_version = version;
    }

    /// Remembers the addresses in a membership change; a changed one is dialled again.
    pub(super) fn learn_members(&mut self, members: Option<Vec<Member>>) {
        for m in members.unwrap_or_default() {
            if self.known_members.get(&m.id) != Some(&m) {
                self.dialed = (u64::MAX, None);
                self.known_members.insert(m.id, m);
            }
        }
    }

    /// Connects to every peer of the replica's membership and drops the others, except the
    /// leader: the replica changes membership as soon as a change is in its log, and a leader
    /// that removed itself leads until that change is committed, so its appends must still be
    /// answered.
    pub(super) fn follow_replica_members(&mut self) {
        let leader = self.replica.leader();
        let state = (self.replica.membership_epoch(), leader);
        if state == self.dialed {
            return;
        }
        self.dialed = state;
        let me = self.me;
        let mut wanted: Vec<NodeId> = self.replica.peers().collect();
        wanted.extend(leader.filter(|l| *l != me && !wanted.contains(l)));
        self.peers.retain(|id, _| wanted.contains(id));
        self.dialed_addresses.retain(|id, _| wanted.contains(id));
        for id in wanted {
            let Some(m) = self.known_members.get(&id) else {
                eprintln!("zoo: server {me}: no address known for server {id}");
                continue;
            };
            // Dialled already, at the address the membership names now.
            if self.peers.contains_key(&id) && self.dialed_addresses.get(&id) == Some(m) {
                continue;
            }
            let m = m.clone();
            self.peers.remove(&id);
            if let Some(tx) = dial_member(me, &m) {
                self.peers.insert(id, tx);
                self.dialed_addresses.insert(id, m);
            }
        }
    }

    fn note_synced(&mut self) {
        if self.replica.leader().is_some()
            && self.replica.role() != Role::Leader
            && self.applied.last_zxid() >= self.replica.commit()
            && self.replica.commit() > 0
            && self.synced_term != Some(self.replica.term())
        {
            self.synced_term = Some(self.replica.term());
            eprintln!(
                "zoo: server {} is in sync with leader {} at zxid {:#x}; serving clients",
                self.me,
                self.replica.leader().unwrap_or(0),
                self.applied.last_zxid()
            );
        }
    }

    fn release_held(&mut self) {
        let applied = self.applied.last_zxid();
        let now = wall_clock_ms();
        while self.held.front().is_some_and(|(z, _)| *z <= applied) {
            let (_, held) = self.held.pop_front().expect("checked");
            match held {
                Held::Write(connection, reply) => self.reply(
                    connection,
                    ShardReply::Write {
                        connection_id: connection.connection_id,
                        reply,
                    },
                ),
                Held::Connect {
                    connection,
                    session_id,
                    password,
                } => {
                    let attach = self
                        .applied
                        .reattach_session(session_id, &password, connection, now);
                    let result = self.attach_result(attach);
                    self.reply(
                        connection,
                        ShardReply::Connect {
                            connection_id: connection.connection_id,
                            result,
                        },
                    );
                }
                Held::Close(connection) => self.close_now(connection),
            }
        }
    }

    async fn publish(&mut self) {
        let tree = self
            .publisher
            .tree_to_send(self.applied.tree(), &self.stats.commit);
        self.publish_stats();
        crate::server::commit_executor::send_to_shards(
            &self.shards,
            self.replies.iter_mut().map(std::mem::take),
            std::mem::take(&mut self.triggers),
            tree,
            self.applied.last_zxid(),
        )
        .await;
    }

    fn publish_stats(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        crate::server::commit_executor::publish_commit_stats(&self.applied, &self.stats);
        let mode = match self.replica.role() {
            Role::Leader => ServerMode::Leader,
            Role::Follower if self.serving() => ServerMode::Follower,
            Role::Observer if self.serving() => ServerMode::Observer,
            _ if self.config.read_only_mode_enabled => ServerMode::ReadOnly,
            _ => ServerMode::Looking,
        };
        self.stats.commit.mode.store(mode as u8, Relaxed);
        self.stats
            .commit
            .synced_followers
            .store(self.replica.synced_followers() as u64, Relaxed);
        let voters = self.replica.voters();
        let followers = voters.len() - usize::from(voters.contains(&self.me));
        self.stats.commit.followers.store(followers as u64, Relaxed);
        let learners = self.replica.peers().count();
        self.stats.commit.learners.store(learners as u64, Relaxed);
        self.stats.commit.voters.store(voters.len() as u64, Relaxed);
        self.stats
            .commit
            .synced_observers
            .store(self.replica.synced_observers() as u64, Relaxed);
        self.stats
            .commit
            .pending_syncs
            .store(self.replica.pending_syncs() as u64, Relaxed);
        self.stats
            .commit
            .leader_id
            .store(self.replica.leader().unwrap_or(-1), Relaxed);
    }
}

/// Voter ids and observer ids of a membership.
fn split_roles(members: &[Member]) -> (Vec<NodeId>, Vec<NodeId>) {
    let ids = |observer: bool| {
        members
            .iter()
            .filter(|m| m.observer == observer)
            .map(|m| m.id)
            .collect()
    };
    (ids(false), ids(true))
}

/// The membership a log entry writes: `reconfig`'s, or the first leader's, setData of
/// `/zookeeper/config` (the only writes of it: a client's setData of it is refused).
fn members_in_entry(payload: &[u8]) -> Option<Vec<Member>> {
    // Every entry passes here: look at the opcode and path before decoding anything.
    let at = crate::storage::log::RECORD_HEADER_BYTES + crate::core::txn::TXN_HEADER_BYTES;
    if !payload.get(at..)?.starts_with(&config_write_prefix()) {
        return None;
    }
    let (_, txn) = crate::storage::log::decode_record(payload).ok()?;
    let Txn::SetData {
        data: Some(data), ..
    } = txn
    else {
        return None;
    };
    let text = std::str::from_utf8(&data).ok()?;
    let membership = crate::core::membership::Membership::parse(text).ok()?;
    // A membership without a voter is no membership (reconfig refuses to write one).
    membership
        .members
        .iter()
        .any(|m| !m.observer)
        .then_some(membership.members)
}

/// What a setData of `/zookeeper/config` starts with after the txn header: its opcode and
/// the path, as `Txn::encode` writes them.
fn config_write_prefix() -> [u8; 25] {
    let mut out = [0u8; 25];
    out[..4].copy_from_slice(&crate::jute::records::opcode::SET_DATA.to_be_bytes());
    out[4..8].copy_from_slice(&17i32.to_be_bytes());
    out[8..].copy_from_slice(b"/zookeeper/config");
    out
}

/// For `Replica::with_membership_in_log`: voter and observer ids of a membership change.
fn membership_in_entry(payload: &[u8]) -> Option<(Vec<NodeId>, Vec<NodeId>)> {
    members_in_entry(payload).map(|m| split_roles(&m))
}

fn not_leader_reply() -> WriteReply {
    WriteReply {
        xid: 0,
        zxid: 0,
        err: crate::error::ZkError::ConnectionLoss.code(),
        body: Vec::new(),
        close_connection: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(txn: &Txn) -> Vec<u8> {
        let header = TxnHeader {
            session_id: 7,
            xid: 3,
            zxid: 0x1_0000_0005,
            time_ms: 9,
        };
        let mut out = Vec::new();
        encode_record(&header, txn, &mut out);
        out
    }

    #[test]
    fn membership_changes_are_found_in_log_entries_and_nothing_else_is() {
        let text = "server.1=h:1:2:participant\nserver.2=h:3:4:participant\n\
                    server.3=h:5:6:observer;2181\nversion=100000005";
        let config = record(&Txn::SetData {
            path: "/zookeeper/config".into(),
            data: Some(text.as_bytes().into()),
            version: 1,
        });
        let members = members_in_entry(&config).expect("a membership change");
        assert_eq!(members.len(), 3);
        assert_eq!(membership_in_entry(&config), Some((vec![1, 2], vec![3])));
        let other = record(&Txn::SetData {
            path: "/zookeeper/configs".into(),
            data: Some(text.as_bytes().into()),
            version: 1,
        });
        assert_eq!(members_in_entry(&other), None);
        let create = record(&Txn::Create {
            path: "/zookeeper/config".into(),
            data: Some(text.as_bytes().into()),
            acl: crate::core::acl::open_acl_unsafe().into(),
            ephemeral_owner: 0,
            parent_cversion: 0,
        });
        assert_eq!(members_in_entry(&create), None);
        assert_eq!(members_in_entry(&config[..30]), None, "a short payload");
    }
}
