//! Deterministic simulation of replicas on one seed: a lossy, reordering, duplicating network
//! with partitions, crashes that lose whatever was not yet durable, and compaction with
//! snapshot catch-up. Checked on every run (docs/ARCHITECTURE.md R8–R12):
//! R8 at most one leader per term; R9 a committed entry is never lost or changed;
//! R10 replicas apply the same entries in the same order; R11 after healing every replica
//! converges to the same state holding every acknowledged proposal;
//! R12 zxids handed to clients only grow. With `reconfig` set, leaders also change the
//! membership one voter at a time while the faults go on (R13): each server uses the newest
//! change in its log (`Replica::with_membership_in_log`), as the server does, and the same
//! checks hold for the final members.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::*;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.next() % 1000 < per_mille
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What a node keeps on its simulated disk.
#[derive(Clone, Default)]
struct Disk {
    hard: HardState,
    /// The snapshot: applied entries up to its zxid.
    snapshot: Vec<(i64, Vec<u8>)>,
    snapshot_zxid: i64,
    log: Vec<Entry>,
}

struct Node {
    replica: Replica,
    disk: Disk,
    /// Applied entries, in order (the state machine).
    applied: Vec<(i64, Vec<u8>)>,
    applied_zxid: i64,
    up: bool,
    /// Ready output not yet durable: (hard, truncate, entries, messages after persist).
    pending: Vec<Unsynced>,
}

/// One driver cycle's output not yet durable: (vote, truncation, entries, messages that
/// wait for them).
type Unsynced = (
    Option<HardState>,
    Option<i64>,
    Vec<Entry>,
    Vec<(NodeId, Message)>,
);

struct Flight {
    at: u64,
    from: NodeId,
    to: NodeId,
    message: Message,
}

struct Sim {
    rng: Rng,
    now: u64,
    nodes: BTreeMap<NodeId, Node>,
    voters: Vec<NodeId>,
    observers: Vec<NodeId>,
    /// Servers outside the first membership, configured as a joining server is: the first
    /// voters plus themselves.
    spares: Vec<NodeId>,
    /// Leaders propose single-voter membership changes (R13).
    reconfig: bool,
    network: Vec<Flight>,
    /// Pairs that cannot talk (both directions).
    cut: BTreeSet<(NodeId, NodeId)>,
    drop_per_mille: u64,
    dup_per_mille: u64,
    leaders_by_term: HashMap<u64, NodeId>,
    /// Every committed entry ever seen: zxid -> payload (R9).
    committed: BTreeMap<i64, Vec<u8>>,
    /// Proposals acknowledged to a client (committed on their leader).
    acknowledged: Vec<Vec<u8>>,
    proposals: HashMap<i64, (NodeId, u64, Vec<u8>)>,
    next_client_op: u64,
    last_acknowledged_zxid: i64,
    /// Proposals are real txns (sessions, ephemerals), checked through the commit core.
    txns: Option<Clients>,
    /// Catch-up snapshots built, by the server they were built for.
    snapshots_built: BTreeMap<NodeId, u64>,
    /// Membership changes proposed (`reconfig`).
    membership_changes: u64,
}

/// Simulated clients for the state-machine checks: open sessions and each one's next request
/// number (its xid, which must commit in increasing order: per-session FIFO).
#[derive(Default)]
struct Clients {
    open: Vec<i64>,
    next_session: i64,
    next_xid: HashMap<i64, i32>,
}

fn timing() -> Timing {
    Timing {
        election_ticks: 10,
        heartbeat_ticks: 2,
        append_entries_max: 16,
        snapshot_retry_ticks: 30,
    }
}

fn encode_state(applied: &[(i64, Vec<u8>)]) -> Arc<[u8]> {
    let mut out = Vec::new();
    for (z, p) in applied {
        out.extend_from_slice(&z.to_be_bytes());
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(p);
    }
    out.into()
}

fn decode_state(mut bytes: &[u8]) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let z = i64::from_be_bytes(bytes[..8].try_into().unwrap());
        let n = u32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
        out.push((z, bytes[12..12 + n].to_vec()));
        bytes = &bytes[12 + n..];
    }
    out
}

/// A membership change as the simulated state machine holds it: `cfg:` then the voters and
/// the observers, comma-separated, split by `;`.
fn cfg_payload(voters: &[NodeId], observers: &[NodeId]) -> Vec<u8> {
    let list = |ids: &[NodeId]| {
        ids.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    format!("cfg:{};{}", list(voters), list(observers)).into_bytes()
}

fn parse_cfg(payload: &[u8]) -> Option<(Vec<NodeId>, Vec<NodeId>)> {
    let text = std::str::from_utf8(payload.strip_prefix(b"cfg:")?).ok()?;
    let (voters, observers) = text.split_once(';')?;
    let list = |s: &str| -> Vec<NodeId> {
        s.split(',')
            .filter(|x| !x.is_empty())
            .map(|x| x.parse().expect("simulated cfg"))
            .collect()
    };
    Some((list(voters), list(observers)))
}

/// The newest membership in applied entries, if any was written.
fn membership_of(applied: &[(i64, Vec<u8>)]) -> Option<(Vec<NodeId>, Vec<NodeId>)> {
    applied.iter().rev().find_map(|(_, p)| parse_cfg(p))
}

impl Sim {
    fn new(seed: u64, voters: usize, observers: usize) -> Sim {
        Sim::with_spares(seed, voters, observers, 0)
    }

    fn with_spares(seed: u64, voters: usize, observers: usize, spares: usize) -> Sim {
        let voter_ids: Vec<NodeId> = (1..=voters as NodeId).collect();
        let observer_ids: Vec<NodeId> =
            (voters as NodeId + 1..=(voters + observers) as NodeId).collect();
        let spare_ids: Vec<NodeId> = ((voters + observers) as NodeId + 1
            ..=(voters + observers + spares) as NodeId)
            .collect();
        let mut nodes = BTreeMap::new();
        for id in voter_ids
            .iter()
            .chain(observer_ids.iter())
            .chain(spare_ids.iter())
        {
            let (v, o) = Sim::configured(&voter_ids, &observer_ids, *id);
            let replica = Replica::new(
                *id,
                v,
                o,
                Durable::default(),
                timing(),
                seed.wrapping_mul(31).wrapping_add(*id as u64),
            )
            .with_membership_in_log(parse_cfg);
            nodes.insert(
                *id,
                Node {
                    replica,
                    disk: Disk::default(),
                    applied: Vec::new(),
                    applied_zxid: 0,
                    up: true,
                    pending: Vec::new(),
                },
            );
        }
        Sim {
            rng: Rng(seed | 1),
            now: 0,
            nodes,
            voters: voter_ids,
            observers: observer_ids,
            spares: spare_ids,
            reconfig: false,
            network: Vec::new(),
            cut: BTreeSet::new(),
            drop_per_mille: 0,
            dup_per_mille: 0,
            leaders_by_term: HashMap::new(),
            committed: BTreeMap::new(),
            acknowledged: Vec::new(),
            proposals: HashMap::new(),
            next_client_op: 0,
            snapshots_built: BTreeMap::new(),
            membership_changes: 0,
            last_acknowledged_zxid: 0,
            txns: None,
        }
    }

    /// The membership server `id` starts from before it has applied one: the first one, or
    /// for a spare, the first voters plus itself (as `configure_joiner` writes zoo.cfg).
    fn configured(
        voters: &[NodeId],
        observers: &[NodeId],
        id: NodeId,
    ) -> (Vec<NodeId>, Vec<NodeId>) {
        let mut v = voters.to_vec();
        if !voters.contains(&id) && !observers.contains(&id) {
            v.push(id);
        }
        (v, observers.to_vec())
    }

    fn all_ids(&self) -> Vec<NodeId> {
        self.voters
            .iter()
            .chain(self.observers.iter())
            .chain(self.spares.iter())
            .copied()
            .collect()
    }

    fn send(&mut self, from: NodeId, to: NodeId, message: Message) {
        if self.cut.contains(&(from.min(to), from.max(to))) || self.rng.chance(self.drop_per_mille)
        {
            return;
        }
        let copies = if self.rng.chance(self.dup_per_mille) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = self.now + 1 + self.rng.below(4);
            self.network.push(Flight {
                at,
                from,
                to,
                message: message.clone(),
            });
        }
    }

    /// Runs the driver cycle for one node: take ready, persist (now or later), send, apply.
    fn drive(&mut self, id: NodeId) {
        let defer = self.rng.chance(300);
        let node = self.nodes.get_mut(&id).unwrap();
        if !node.up {
            return;
        }
        let ready = node.replica.take_ready();
        if ready.became_leader {
            let term = node.replica.term();
            if let Some(other) = self.leaders_by_term.insert(term, id) {
                assert_eq!(other, id, "R8: two leaders in term {term}");
            }
            // The term's first entry, as the server's driver proposes it.
            node.replica.propose(|_| Arc::from(&b"noop"[..]));
        }
        if let Some((zxid, data)) = ready.install_snapshot {
            let state = decode_state(&data);
            node.disk.snapshot = state.clone();
            node.disk.snapshot_zxid = zxid;
            node.disk.log.clear();
            node.applied = state;
            node.applied_zxid = zxid;
            node.replica
                .snapshot_installed(zxid, membership_of(&node.applied));
        }
        let mut now_messages = Vec::new();
        let mut later_messages = Vec::new();
        for (to, m, after) in ready.messages {
            if after {
                later_messages.push((to, m));
            } else {
                now_messages.push((to, m));
            }
        }
        node.pending.push((
            ready.hard_state,
            ready.truncated_after,
            ready.to_persist,
            later_messages,
        ));
        if !defer {
            self.flush(id);
        }
        for (to, m) in now_messages {
            self.send(id, to, m);
        }
        let node = self.nodes.get_mut(&id).unwrap();
        for peer in ready.snapshots_needed {
            *self.snapshots_built.entry(peer).or_default() += 1;
            let data = encode_state(&node.applied);
            let zxid = node.applied_zxid;
            node.replica.send_snapshot(peer, zxid, data);
        }
        self.apply_committed(id, ready.commit);
    }

    fn flush(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap();
        let pending = std::mem::take(&mut node.pending);
        let mut out = Vec::new();
        for (hard, truncate, entries, messages) in pending {
            if let Some(h) = hard {
                node.disk.hard = h;
            }
            if let Some(after) = truncate {
                node.disk.log.retain(|e| e.zxid <= after);
            }
            let last = entries.last().map(|e| e.zxid);
            node.disk.log.extend(entries);
            if let Some(last) = last {
                node.replica.persisted(last);
            }
            out.extend(messages);
        }
        for (to, m) in out {
            self.send(id, to, m);
        }
    }

    fn apply_committed(&mut self, id: NodeId, commit: i64) {
        let node = self.nodes.get_mut(&id).unwrap();
        let newly: Vec<(i64, Vec<u8>)> = node
            .replica
            .entries_between(node.applied_zxid, commit)
            .map(|e| (e.zxid, e.payload.to_vec()))
            .collect();
        for (zxid, payload) in newly {
            match self.committed.get(&zxid) {
                Some(p) => assert_eq!(p, &payload, "R9: committed entry {zxid:#x} changed"),
                None => {
                    assert!(
                        self.committed
                            .keys()
                            .next_back()
                            .is_none_or(|last| *last < zxid),
                        "R10: entry {zxid:#x} committed out of order"
                    );
                    self.committed.insert(zxid, payload.clone());
                }
            }
            node.applied.push((zxid, payload.clone()));
            node.applied_zxid = zxid;
            if let Some((leader, _, p)) = self.proposals.remove(&zxid)
                && leader == id
                && p == payload
            {
                assert!(zxid > self.last_acknowledged_zxid, "R12: zxids only grow");
                self.last_acknowledged_zxid = zxid;
                self.acknowledged.push(p);
            }
        }
        // Compaction: keep the log short so that snapshots get exercised.
        if node.replica.log_len() > 40 {
            let upto = node.applied_zxid;
            let keep = node
                .replica
                .entries_between(node.replica.base_zxid(), upto)
                .nth(20)
                .map(|e| e.zxid);
            if let Some(z) = keep {
                node.disk.snapshot = node
                    .applied
                    .iter()
                    .take_while(|(x, _)| *x <= z)
                    .cloned()
                    .collect();
                node.disk.snapshot_zxid = z;
                node.disk.log.retain(|e| e.zxid > z);
                node.replica.compact(z);
            }
        }
    }

    fn crash(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap();
        node.up = false;
        node.pending.clear();
        self.network.retain(|f| f.to != id);
    }

    fn restart(&mut self, id: NodeId) {
        let seed = self.rng.next();
        let node = self.nodes.get_mut(&id).unwrap();
        let disk = node.disk.clone();
        // As the server: the snapshot's membership, else what zoo.cfg says.
        let (voters, observers) = membership_of(&disk.snapshot)
            .unwrap_or_else(|| Sim::configured(&self.voters, &self.observers, id));
        node.replica = Replica::new(
            id,
            voters,
            observers,
            Durable {
                hard: disk.hard,
                base_zxid: disk.snapshot_zxid,
                entries: disk.log.clone(),
            },
            timing(),
            seed,
        )
        .with_membership_in_log(parse_cfg);
        node.applied = disk.snapshot.clone();
        node.applied_zxid = disk.snapshot_zxid;
        node.up = true;
    }

    fn step_network(&mut self) {
        let now = self.now;
        let mut due = Vec::new();
        let mut i = 0;
        while i < self.network.len() {
            if self.network[i].at <= now {
                due.push(self.network.swap_remove(i));
            } else {
                i += 1;
            }
        }
        // swap_remove scrambles order: that is reordering, which the protocol must tolerate.
        for f in due {
            let Some(node) = self.nodes.get_mut(&f.to) else {
                continue;
            };
            if !node.up {
                continue;
            }
            node.replica.step(f.from, f.message);
            self.drive(f.to);
        }
    }

    fn up_leaders(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.up && n.replica.role() == Role::Leader)
            .map(|(id, _)| *id)
            .collect()
    }

    fn propose_somewhere(&mut self) {
        let leaders = self.up_leaders();
        for id in leaders {
            self.next_client_op += 1;
            if self.txns.is_some() {
                self.propose_txn(id);
                continue;
            }
            let payload = format!("op-{}", self.next_client_op).into_bytes();
            let node = self.nodes.get_mut(&id).unwrap();
            let term = node.replica.term();
            let p = payload.clone();
            if let Some(zxid) = node.replica.propose(move |_| p.into()) {
                self.proposals.insert(zxid, (id, term, payload));
            }
        }
    }

    /// A leader proposes a membership change, as `reconfig` does: only once an entry of its
    /// own term is applied (it serves) and its previous change is applied (else
    /// RECONFIGINPROGRESS), and only one voter differs (R13): a voter added (from the
    /// observers or outside), a voter removed (possibly the leader itself), or an observer
    /// added or removed.
    fn propose_membership_change(&mut self) {
        let ids = self.all_ids();
        let leaders = self.up_leaders();
        for id in leaders {
            let node = &self.nodes[&id];
            let term = node.replica.term();
            let serving = zxid_term(node.applied_zxid) == term;
            let pending = node
                .replica
                .entries_between(node.applied_zxid, i64::MAX)
                .any(|e| e.payload.starts_with(b"cfg:"));
            if !serving || pending {
                continue;
            }
            let (mut voters, mut observers) = membership_of(&node.applied)
                .unwrap_or_else(|| (self.voters.clone(), self.observers.clone()));
            let outside: Vec<NodeId> = ids
                .iter()
                .copied()
                .filter(|i| !voters.contains(i))
                .collect();
            match self.rng.below(4) {
                0 | 1 if voters.len() < 5 && !outside.is_empty() => {
                    let add = outside[self.rng.below(outside.len() as u64) as usize];
                    observers.retain(|o| *o != add);
                    voters.push(add);
                }
                0 | 1 if voters.len() > 2 => {
                    let remove = voters[self.rng.below(voters.len() as u64) as usize];
                    voters.retain(|v| *v != remove);
                }
                _ => {
                    let pick = ids[self.rng.below(ids.len() as u64) as usize];
                    if observers.contains(&pick) {
                        observers.retain(|o| *o != pick);
                    } else if !voters.contains(&pick) {
                        observers.push(pick);
                    }
                }
            }
            voters.sort_unstable();
            observers.sort_unstable();
            let payload = cfg_payload(&voters, &observers);
            let node = self.nodes.get_mut(&id).unwrap();
            let p = payload.clone();
            if let Some(zxid) = node.replica.propose(move |_| p.into()) {
                self.proposals.insert(zxid, (id, term, payload));
                self.membership_changes += 1;
            }
        }
    }

    /// A client request as the leader would turn it into a txn: a new session, a close
    /// (expiry), or a create (half of them ephemeral) by an open session.
    fn propose_txn(&mut self, leader: NodeId) {
        use crate::core::txn::{Txn, TxnHeader};
        let roll = self.rng.below(100);
        let clients = self.txns.as_mut().expect("txn mode");
        let (session_id, xid, txn) = if roll < 15 || clients.open.is_empty() {
            clients.next_session += 1;
            let id = clients.next_session;
            clients.open.push(id);
            (
                id,
                0,
                Txn::CreateSession {
                    session_id: id,
                    timeout_ms: 1000,
                    password: [0; 16],
                },
            )
        } else {
            let pick = self.rng.below(clients.open.len() as u64) as usize;
            let session = clients.open[pick];
            if roll < 25 {
                clients.open.swap_remove(pick);
                (
                    session,
                    0,
                    Txn::CloseSession {
                        session_id: session,
                    },
                )
            } else {
                let xid = clients.next_xid.entry(session).or_insert(0);
                *xid += 1;
                let ephemeral = roll.is_multiple_of(2);
                (
                    session,
                    *xid,
                    Txn::Create {
                        path: format!("/s{session}-{xid}").into(),
                        data: Some(vec![1; 8].into()),
                        acl: crate::core::acl::open_acl_unsafe().into(),
                        ephemeral_owner: if ephemeral { session } else { 0 },
                        parent_cversion: 0,
                    },
                )
            }
        };
        let node = self.nodes.get_mut(&leader).unwrap();
        let term = node.replica.term();
        let mut kept = Vec::new();
        let zxid = node.replica.propose(|zxid| {
            let header = TxnHeader {
                session_id,
                xid,
                zxid,
                time_ms: 0,
            };
            crate::storage::log::encode_record(&header, &txn, &mut kept);
            Arc::from(kept.as_slice())
        });
        if let Some(zxid) = zxid {
            self.proposals.insert(zxid, (leader, term, kept));
        }
    }

    /// R11 for the state machine: the committed txns, applied by the real commit core, leave
    /// no ephemeral of a closed session, and each session's requests committed in the order
    /// it sent them (FIFO).
    fn check_state_machine(&self) {
        use crate::core::txn::{Txn, TxnHeader};
        let reference = &self.nodes[&self.voters[0]].applied;
        let mut core = crate::core::commit::CommitCore::new(Default::default(), 0);
        let mut closed = std::collections::HashSet::new();
        let mut last_xid: HashMap<i64, i32> = HashMap::new();
        for (zxid, payload) in reference {
            if payload == b"noop" {
                continue;
            }
            let (header, txn) = crate::storage::log::decode_record(payload).expect("a record");
            if let Txn::CloseSession { session_id } = &txn {
                closed.insert(*session_id);
            }
            if header.xid > 0 {
                let last = last_xid.entry(header.session_id).or_insert(0);
                assert!(
                    header.xid > *last,
                    "FIFO: session {} committed xid {} after {}",
                    header.session_id,
                    header.xid,
                    last
                );
                *last = header.xid;
            }
            // The zxid of a snapshot-installed prefix is kept; the core only needs order.
            let header = TxnHeader {
                zxid: *zxid,
                ..header
            };
            core.apply(&header, &txn, &mut Vec::new());
        }
        for session in &closed {
            assert!(
                core.tree().ephemerals_of(*session).is_empty(),
                "ephemerals of closed session {session} survived"
            );
            assert!(core.sessions().get(*session).is_none());
        }
        assert!(!closed.is_empty(), "the run closed a session");
    }

    fn tick_all(&mut self) {
        self.now += 1;
        for id in self.all_ids() {
            if self.nodes[&id].up {
                self.nodes.get_mut(&id).unwrap().replica.tick();
                if self.rng.chance(700) {
                    self.flush(id);
                }
                self.drive(id);
            }
        }
        self.step_network();
    }

    fn chaos(&mut self, rounds: u64) {
        for _ in 0..rounds {
            if self.rng.chance(300) {
                self.propose_somewhere();
            }
            if self.reconfig && self.rng.chance(15) {
                self.propose_membership_change();
            }
            let ids = self.all_ids();
            if self.rng.chance(8) {
                let id = ids[self.rng.below(ids.len() as u64) as usize];
                if self.nodes[&id].up {
                    self.crash(id);
                } else {
                    self.restart(id);
                }
            }
            if self.rng.chance(6) {
                let a = ids[self.rng.below(ids.len() as u64) as usize];
                let b = ids[self.rng.below(ids.len() as u64) as usize];
                if a != b {
                    let key = (a.min(b), a.max(b));
                    if !self.cut.remove(&key) {
                        self.cut.insert(key);
                    }
                }
            }
            self.tick_all();
        }
    }

    fn heal(&mut self, rounds: u64) {
        self.cut.clear();
        self.drop_per_mille = 0;
        self.dup_per_mille = 0;
        for id in self.all_ids() {
            if !self.nodes[&id].up {
                self.restart(id);
            }
        }
        for i in 0..rounds {
            if i % 10 == 0 && i < rounds / 2 {
                self.propose_somewhere();
            }
            self.tick_all();
        }
    }

    fn check_converged(&self) {
        // The servers of the final membership (the one the most advanced replica applied).
        let newest = self
            .nodes
            .iter()
            .max_by_key(|(_, n)| n.applied_zxid)
            .map(|(id, _)| *id)
            .expect("a server");
        let (voters, observers) = membership_of(&self.nodes[&newest].applied)
            .unwrap_or_else(|| (self.voters.clone(), self.observers.clone()));
        let reference = &self.nodes[&newest].applied;
        for (id, node) in &self.nodes {
            if !voters.contains(id) && !observers.contains(id) {
                continue;
            }
            assert_eq!(
                node.applied_zxid, self.nodes[&newest].applied_zxid,
                "R11: replica {id} did not converge"
            );
            // Compare the suffixes both hold (a snapshot-installed replica holds everything).
            assert_eq!(&node.applied, reference, "R11: replica {id} differs");
        }
        let applied: BTreeSet<&Vec<u8>> = reference.iter().map(|(_, p)| p).collect();
        for op in &self.acknowledged {
            assert!(
                applied.contains(op),
                "R11: acknowledged {} lost",
                String::from_utf8_lossy(op)
            );
        }
        assert!(!self.acknowledged.is_empty(), "the run committed something");
    }
}

fn run_seed_with_txns(seed: u64) {
    let mut sim = Sim::new(seed, 3, 1);
    sim.txns = Some(Clients::default());
    sim.drop_per_mille = 50;
    sim.dup_per_mille = 30;
    sim.chaos(3_000);
    sim.heal(1_500);
    sim.check_converged();
    sim.check_state_machine();
}

#[test]
fn sessions_ephemerals_and_fifo_survive_the_same_faults_through_the_commit_core() {
    for seed in 1..=20 {
        let outcome = std::panic::catch_unwind(|| run_seed_with_txns(seed * 104_729));
        assert!(outcome.is_ok(), "seed {} failed", seed * 104_729);
    }
}

fn run_seed(seed: u64, voters: usize, observers: usize) {
    let mut sim = Sim::new(seed, voters, observers);
    sim.drop_per_mille = 50;
    sim.dup_per_mille = 30;
    sim.chaos(3_000);
    sim.heal(1_500);
    sim.check_converged();
}

#[test]
fn three_voters_survive_drops_duplicates_reorders_partitions_and_crashes() {
    let seeds: u64 = std::env::var("ZOO_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    for seed in 1..=seeds {
        let outcome = std::panic::catch_unwind(|| run_seed(seed, 3, 0));
        assert!(
            outcome.is_ok(),
            "seed {seed} failed (keep it as a regression test)"
        );
    }
}

#[test]
fn five_voters_and_an_observer_survive_the_same_faults() {
    let seeds: u64 = std::env::var("ZOO_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
        / 2;
    for seed in 1..=seeds {
        let outcome = std::panic::catch_unwind(|| run_seed(seed * 7919, 5, 1));
        assert!(outcome.is_ok(), "seed {} failed", seed * 7919);
    }
}

fn run_seed_with_reconfig(seed: u64) -> u64 {
    let mut sim = Sim::with_spares(seed, 3, 1, 2);
    sim.reconfig = true;
    sim.drop_per_mille = 50;
    sim.dup_per_mille = 30;
    sim.chaos(3_000);
    sim.heal(1_500);
    sim.check_converged();
    sim.membership_changes
}

#[test]
fn voters_and_observers_changed_one_at_a_time_survive_the_same_faults() {
    let seeds: u64 = std::env::var("ZOO_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let mut changes = 0;
    for seed in 1..=seeds {
        match std::panic::catch_unwind(|| run_seed_with_reconfig(seed * 6_007)) {
            Ok(n) => changes += n,
            Err(_) => panic!(
                "seed {} failed (keep it as a regression test)",
                seed * 6_007
            ),
        }
    }
    assert!(
        changes >= seeds,
        "the runs changed the membership: {changes}"
    );
}

#[test]
fn a_single_voter_elects_itself_and_commits() {
    let mut sim = Sim::new(3, 1, 0);
    sim.heal(200);
    sim.check_converged();
}

#[test]
fn a_rejoining_server_cannot_depose_a_healthy_leader() {
    let mut sim = Sim::new(11, 3, 0);
    sim.heal(100);
    let leader = sim.leaders_by_term.values().copied().max().unwrap();
    let term = sim.nodes[&leader].replica.term();
    // Isolate a follower long enough to time out many times, then let it back.
    let follower = *sim.voters.iter().find(|v| **v != leader).unwrap();
    for other in sim.all_ids() {
        if other != follower {
            sim.cut.insert((other.min(follower), other.max(follower)));
        }
    }
    for _ in 0..300 {
        sim.tick_all();
    }
    assert_eq!(
        sim.nodes[&follower].replica.term(),
        term,
        "pre-votes do not raise an isolated server's term"
    );
    sim.cut.clear();
    for _ in 0..100 {
        sim.tick_all();
    }
    assert_eq!(sim.nodes[&leader].replica.role(), Role::Leader);
    assert_eq!(
        sim.nodes[&leader].replica.term(),
        term,
        "pre-vote kept the term"
    );
}

/// A leader does not keep building catch-up snapshots for a server that went down again
/// before its snapshot arrived (every retry would serialize the whole state for nobody);
/// once the server answers again, a snapshot brings it up.
#[test]
fn no_catch_up_snapshot_is_built_while_the_server_is_down() {
    let mut sim = Sim::new(5, 3, 0);
    sim.heal(100);
    let leader = sim.leaders_by_term.values().copied().max().unwrap();
    let follower = *sim.voters.iter().find(|v| **v != leader).unwrap();
    sim.crash(follower);
    for i in 0..300 {
        if i % 3 == 0 {
            sim.propose_somewhere();
        }
        sim.tick_all();
    }
    assert!(
        sim.nodes[&leader].replica.base_zxid() > sim.nodes[&follower].applied_zxid,
        "the leader compacted past the follower, so only a snapshot can bring it up"
    );
    // The follower comes back, is offered a snapshot, and goes down before taking it.
    sim.restart(follower);
    let mut ticks = 0;
    while !sim.snapshots_built.contains_key(&follower) {
        sim.tick_all();
        ticks += 1;
        assert!(ticks < 200, "a returning server is offered a snapshot");
    }
    sim.crash(follower);
    let built = sim.snapshots_built[&follower];
    for i in 0..600 {
        if i % 3 == 0 {
            sim.propose_somewhere();
        }
        sim.tick_all();
    }
    assert_eq!(sim.nodes[&leader].replica.role(), Role::Leader);
    assert_eq!(
        sim.snapshots_built[&follower], built,
        "none built while it is down"
    );
    sim.heal(200);
    assert!(sim.snapshots_built[&follower] > built);
    sim.check_converged();
}

#[test]
fn zxids_carry_the_term_in_their_high_bits() {
    assert_eq!(make_zxid(3, 7), 0x3_0000_0007);
    assert_eq!(zxid_term(make_zxid(3, 7)), 3);
    assert!(make_zxid(2, u32::MAX) < make_zxid(3, 1));
}

#[test]
fn messages_round_trip_and_garbage_is_rejected() {
    let messages = vec![
        Message::PreVote {
            term: 4,
            last_zxid: 9,
        },
        Message::VoteReply {
            term: 4,
            granted: true,
        },
        Message::Append {
            term: 5,
            prev_zxid: make_zxid(4, 2),
            entries: vec![Entry {
                zxid: make_zxid(5, 1),
                payload: Arc::from(&b"x"[..]),
            }],
            commit: make_zxid(4, 2),
        },
        Message::AppendReply {
            term: 5,
            success: false,
            last_zxid: 3,
        },
        Message::Snapshot {
            term: 5,
            zxid: 8,
            data: Arc::from(&b"state"[..]),
        },
    ];
    for m in messages {
        let mut bytes = Vec::new();
        encode_message(&m, &mut bytes);
        let decoded = decode_message(&mut crate::jute::Reader::new(&bytes, 1 << 20)).unwrap();
        assert_eq!(decoded, m);
        for cut in 0..bytes.len() {
            assert!(decode_message(&mut crate::jute::Reader::new(&bytes[..cut], 1 << 20)).is_err());
        }
    }
    assert!(decode_message(&mut crate::jute::Reader::new(&[99], 1 << 20)).is_err());
}

#[test]
fn a_late_snapshot_offer_does_not_erase_acknowledged_entries_seed_1404() {
    // Found by the simulation: a delayed snapshot at 3:7 reached a follower that had already
    // acknowledged 3:8 and 3:9; installing it dropped them, and a crash then lost a commit.
    run_seed(1404, 3, 0);
}

#[test]
fn a_server_with_the_newest_log_but_an_older_term_is_elected_seed_913064() {
    // Found by the simulation with membership changes: server 1 held the newest log at term
    // 5 while the others, after elections that ended without a leader, were at terms 15 and
    // 19. Every pre-vote of server 1 was refused for its term, every other server's for its
    // log, and no leader was elected again. Refusals now carry the voter's term.
    run_seed_with_reconfig(913_064);
}

#[test]
fn a_server_that_has_not_applied_the_newest_membership_cannot_lead_a_second_leader_seed_330385() {
    // Found by the simulation with membership changes, when servers adopted a change only
    // once they applied it: server 3 held the changes that added voters 4 and 6 in its log,
    // unapplied, and won term 4 with the votes of {1, 2, 3} while server 4 won it with those
    // of {1, 2, 3, 4, 6}. Each server now uses the newest membership in its log (R13).
    run_seed_with_reconfig(330_385);
}

#[test]
fn a_pre_vote_refusal_carries_the_voters_term_and_older_replies_still_decode() {
    let reply = Message::PreVoteReply {
        term: 6,
        granted: false,
        current_term: 19,
    };
    let mut bytes = Vec::new();
    encode_message(&reply, &mut bytes);
    let read = |b: &[u8]| decode_message(&mut crate::jute::Reader::new(b, 1 << 20));
    assert_eq!(read(&bytes).unwrap(), reply);
    // A server of the previous version sends no current term: read as 0, which moves no one.
    let old = &bytes[..bytes.len() - 8];
    assert_eq!(
        read(old).unwrap(),
        Message::PreVoteReply {
            term: 6,
            granted: false,
            current_term: 0,
        }
    );
    for cut in (0..old.len()).chain(old.len() + 1..bytes.len()) {
        assert!(read(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    // The refused pre-candidate moves to the voter's term.
    let mut r = Replica::new(1, vec![1, 2, 3], vec![], Durable::default(), timing(), 7);
    r.step(2, reply);
    assert_eq!(r.term(), 19);
    assert_eq!(r.role(), Role::Follower);
}

#[test]
fn a_server_added_by_a_change_it_has_not_received_still_votes_seed_612714() {
    // Found by the simulation with membership changes: the newest membership made servers 4
    // and 5 voters, but their logs were far behind and still called them observers, so they
    // refused every vote and no leader could be elected. Votes are now granted whatever the
    // voter's own membership says; a candidate counts only its own voters.
    run_seed_with_reconfig(612_714);
}

fn entry(term: u64, counter: u32, payload: &[u8]) -> Entry {
    Entry {
        zxid: make_zxid(term, counter),
        payload: Arc::from(payload),
    }
}

#[test]
fn membership_follows_the_log_through_truncation_compaction_and_snapshots() {
    let mut r = Replica::new(2, vec![1, 2, 3], vec![], Durable::default(), timing(), 1)
        .with_membership_in_log(parse_cfg);
    let voters = |r: &Replica| r.voters().iter().copied().collect::<Vec<_>>();
    r.step(
        1,
        Message::Append {
            term: 1,
            prev_zxid: 0,
            entries: vec![entry(1, 1, b"noop"), entry(1, 2, b"cfg:1,2,3,4;")],
            commit: 0,
        },
    );
    assert_eq!(
        voters(&r),
        vec![1, 2, 3, 4],
        "in force once in the log, uncommitted"
    );
    // Leader 3 of term 2 never had (1, 2): it is cut, and its membership with it.
    r.step(
        3,
        Message::Append {
            term: 2,
            prev_zxid: make_zxid(1, 1),
            entries: vec![entry(2, 1, b"x")],
            commit: 0,
        },
    );
    assert_eq!(voters(&r), vec![1, 2, 3], "back to the one before");
    r.step(
        3,
        Message::Append {
            term: 2,
            prev_zxid: make_zxid(2, 1),
            entries: vec![entry(2, 2, b"cfg:1,2,3,5;")],
            commit: make_zxid(2, 2),
        },
    );
    r.persisted(make_zxid(2, 2));
    r.compact(make_zxid(2, 2));
    assert_eq!(r.log_len(), 0);
    assert_eq!(
        voters(&r),
        vec![1, 2, 3, 5],
        "a compacted change stays in force"
    );
    let epoch = r.membership_epoch();
    r.snapshot_installed(make_zxid(2, 9), Some((vec![1, 2], vec![9])));
    assert_eq!(voters(&r), vec![1, 2]);
    assert_eq!(r.peers().collect::<Vec<_>>(), vec![1, 9]);
    assert!(r.membership_epoch() > epoch, "the driver is told");
    r.snapshot_installed(make_zxid(2, 10), None);
    assert_eq!(voters(&r), vec![1, 2], "a snapshot without one keeps it");
}

#[test]
fn a_server_outside_its_own_membership_still_grants_its_vote() {
    // Server 4 observes as far as its log knows; the candidate's membership may make it a
    // voter, and only the candidate counts votes.
    let mut r = Replica::new(4, vec![1, 2, 3], vec![4], Durable::default(), timing(), 1)
        .with_membership_in_log(parse_cfg);
    assert_eq!(r.role(), Role::Observer);
    r.step(
        1,
        Message::Vote {
            term: 1,
            last_zxid: 0,
        },
    );
    let ready = r.take_ready();
    assert!(
        ready.messages.iter().any(|(to, m, _)| *to == 1
            && *m
                == Message::VoteReply {
                    term: 1,
                    granted: true
                }),
        "{:?}",
        ready.messages
    );
}

#[test]
fn a_leader_that_removes_itself_commits_the_change_tells_the_others_then_steps_down() {
    let mut sim = Sim::new(21, 3, 0);
    sim.heal(100);
    let leader = *sim
        .nodes
        .iter()
        .find(|(_, n)| n.replica.role() == Role::Leader)
        .expect("a leader")
        .0;
    let others: Vec<NodeId> = sim
        .voters
        .iter()
        .copied()
        .filter(|v| *v != leader)
        .collect();
    let payload = cfg_payload(&others, &[]);
    let zxid = sim
        .nodes
        .get_mut(&leader)
        .unwrap()
        .replica
        .propose(|_| payload.into())
        .expect("proposed");
    let node = &sim.nodes[&leader];
    assert_eq!(
        node.replica.role(),
        Role::Leader,
        "leads until the change commits"
    );
    assert!(!node.replica.voters().contains(&leader));
    // Each other server stops following it as soon as it learns the change is committed,
    // instead of waiting out the leader's lease before electing a successor.
    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        sim.tick_all();
        for o in &others {
            if sim.nodes[o].applied_zxid >= zxid && seen.insert(*o) {
                assert_ne!(
                    sim.nodes[o].replica.leader(),
                    Some(leader),
                    "server {o} still follows the leader that left"
                );
            }
        }
    }
    assert_ne!(
        sim.nodes[&leader].replica.role(),
        Role::Leader,
        "then steps down"
    );
    for o in &others {
        assert!(
            sim.nodes[o].applied_zxid >= zxid,
            "server {o} was told the commit point and applied the change"
        );
    }
    sim.heal(300);
    let new_leader = sim
        .nodes
        .iter()
        .find(|(_, n)| n.replica.role() == Role::Leader)
        .map(|(id, _)| *id);
    assert!(new_leader.is_some_and(|l| others.contains(&l)));
    sim.check_converged();
}
