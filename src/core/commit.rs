//! The commit core: the single ordered path every state change takes (ZooKeeper's
//! PrepRequestProcessor + FinalRequestProcessor for writes). Plain Rust, no I/O.
//!
//! `process_write` validates a write against the current tree, turns it into a [`Txn`] with the
//! next zxid, applies it and returns the reply plus the watch triggers. Failed writes change
//! nothing and consume no zxid. The caller (the commit runtime) decides when the new tree
//! becomes visible: only after the txn is durable (rule R2).

use std::sync::Arc;

use crate::config::Member;
use crate::core::acl::{self, perms};
use crate::core::membership::Membership;
use crate::core::path;
use crate::core::sessions::{ConnectionRef, Session, SessionTable};
use crate::core::tree::{self, DataTree, NodeKind, Trigger};
use crate::core::txn::{Txn, TxnHeader};
use crate::error::{ZkError, ZkResult};
use crate::jute::Writer;
use crate::jute::records::{CreateMode, CreateRequest, Id, Request, encode_multi_header, opcode};

/// The settings the commit core needs (from zoo.cfg).
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub server_id: i64,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub extended_types_enabled: bool,
    pub skip_acl: bool,
    pub reconfig_enabled: bool,
    /// A member of an ensemble: reconfig changes `/zookeeper/config` instead of failing.
    pub replicated: bool,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            server_id: 0,
            min_session_timeout_ms: 4000,
            max_session_timeout_ms: 40000,
            extended_types_enabled: false,
            skip_acl: false,
            reconfig_enabled: false,
            replicated: false,
        }
    }
}

/// A write as the commit path receives it from a shard.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub session_id: i64,
    pub xid: i32,
    pub request: Request,
    /// The connection's authenticated identities at the time of the request.
    pub auth: Arc<Vec<Id>>,
}

/// The reply to one write. `body` is the encoded response record (empty on error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteReply {
    pub xid: i32,
    pub zxid: i64,
    pub err: i32,
    pub body: Vec<u8>,
    /// closeSession: the connection is closed after this reply.
    pub close_connection: bool,
}

/// What applying one write produced.
#[derive(Debug)]
pub struct WriteOutcome {
    pub reply: WriteReply,
    /// The txn to make durable before the reply is released, if the write changed state.
    pub txn: Option<(TxnHeader, Txn)>,
}

#[derive(Clone)]
pub struct CommitCore {
    config: CoreConfig,
    tree: DataTree,
    sessions: SessionTable,
    /// The replication term: the first txn of a newer term gets zxid `epoch << 32 | 1`.
    /// Always 0 when standalone.
    epoch: u64,
}

/// The result of a handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attach {
    /// Session (new or resumed) attached; `previous` is a connection to close.
    Attached {
        session_id: i64,
        timeout_ms: i32,
        password: [u8; 16],
        previous: Option<ConnectionRef>,
    },
    /// Unknown session or wrong password: reply with the zeroed ConnectResponse.
    Expired,
}

impl CommitCore {
    pub fn new(config: CoreConfig, now_ms: i64) -> CommitCore {
        let sessions = SessionTable::new(config.server_id, now_ms);
        CommitCore {
            config,
            tree: DataTree::new(),
            sessions,
            epoch: 0,
        }
    }

    /// A core holding a recovered state: the tree and sessions of a snapshot.
    pub fn restore(
        config: CoreConfig,
        tree: DataTree,
        sessions: impl IntoIterator<Item = (i64, i32, [u8; 16])>,
        now_ms: i64,
    ) -> CommitCore {
        let mut core = CommitCore::new(config, now_ms);
        core.tree = tree;
        for (id, timeout_ms, password) in sessions {
            core.sessions.insert(Session {
                id,
                timeout_ms,
                password,
                last_heard_ms: now_ms,
                owner: None,
                closing: false,
            });
        }
        core
    }

    /// Every session as (id, timeout, password), for a snapshot.
    pub fn session_records(&self) -> Vec<(i64, i32, [u8; 16])> {
        let mut out: Vec<_> = self
            .sessions
            .iter()
            .map(|s| (s.id, s.timeout_ms, s.password))
            .collect();
        out.sort_by_key(|s| s.0);
        out
    }

    pub fn tree(&self) -> &DataTree {
        &self.tree
    }

    pub fn sessions(&self) -> &SessionTable {
        &self.sessions
    }

    pub fn last_zxid(&self) -> i64 {
        self.tree.last_zxid()
    }

    fn next_header(&self, session_id: i64, xid: i32, now_ms: i64) -> TxnHeader {
        TxnHeader {
            session_id,
            xid,
            zxid: self.next_zxid(),
            time_ms: now_ms,
        }
    }

    /// The zxid the next txn gets: dense within a term, `epoch << 32 | 1` when a new term
    /// begins (ZooKeeper's epoch and counter).
    pub fn next_zxid(&self) -> i64 {
        let last = self.tree.last_zxid();
        if ((last as u64) >> 32) < self.epoch {
            ((self.epoch << 32) | 1) as i64
        } else {
            last + 1
        }
    }

    /// Starts numbering txns in replication term `epoch`.
    pub fn set_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
    }

    /// A txn that changes nothing but takes the next zxid: a new leader's first entry, which
    /// commits every entry before it (Raft §5.4.2), and the barrier behind a replicated
    /// `sync`, which is answered only once a quorum has it (ARCHITECTURE.md R11).
    pub fn apply_noop(&mut self, now_ms: i64) -> (TxnHeader, Txn) {
        let header = self.next_header(0, 0, now_ms);
        let txn = Txn::Check;
        self.apply(&header, &txn, &mut Vec::new());
        (header, txn)
    }

    pub fn negotiate_timeout(&self, requested_ms: i32) -> i32 {
        requested_ms.clamp(
            self.config.min_session_timeout_ms,
            self.config.max_session_timeout_ms,
        )
    }

    /// Creates a session for a new connection (a createSession txn).
    pub fn create_session(
        &mut self,
        requested_timeout_ms: i32,
        password: [u8; 16],
        owner: ConnectionRef,
        now_ms: i64,
        triggers: &mut Vec<Trigger>,
    ) -> (Attach, (TxnHeader, Txn)) {
        let session_id = self.sessions.allocate_id();
        let timeout_ms = self.negotiate_timeout(requested_timeout_ms);
        let header = self.next_header(session_id, 0, now_ms);
        let txn = Txn::CreateSession {
            session_id,
            timeout_ms,
            password,
        };
        self.apply(&header, &txn, triggers);
        self.sessions
            .get_mut(session_id)
            .expect("just created")
            .owner = Some(owner);
        (
            Attach::Attached {
                session_id,
                timeout_ms,
                password,
                previous: None,
            },
            (header, txn),
        )
    }

    /// Re-attaches an existing session to a new connection. As in ZooKeeper, the session keeps
    /// the timeout negotiated at creation, and the client is told that one.
    pub fn reattach_session(
        &mut self,
        session_id: i64,
        password: &[u8],
        owner: ConnectionRef,
        now_ms: i64,
    ) -> Attach {
        if !self.sessions.password_matches(session_id, password) {
            return Attach::Expired;
        }
        let session = self.sessions.get_mut(session_id).expect("checked above");
        session.last_heard_ms = now_ms;
        let previous = session.owner.replace(owner).filter(|p| *p != owner);
        Attach::Attached {
            session_id,
            timeout_ms: session.timeout_ms,
            password: session.password,
            previous,
        }
    }

    /// The connection `owner` went away; the session lives on until it expires.
    pub fn detach(&mut self, session_id: i64, owner: ConnectionRef) {
        if let Some(s) = self.sessions.get_mut(session_id)
            && s.owner == Some(owner)
        {
            s.owner = None;
        }
    }

    /// After recovery: every session gets a full timeout from now to reconnect.
    pub fn restart_session_clocks(&mut self, now_ms: i64) {
        let ids: Vec<i64> = self.sessions.iter().map(|s| s.id).collect();
        for id in ids {
            if let Some(s) = self.sessions.get_mut(id) {
                s.last_heard_ms = now_ms;
                s.owner = None;
            }
        }
    }

    pub fn touch(&mut self, session_id: i64, now_ms: i64) {
        self.sessions.touch(session_id, now_ms);
    }

    pub fn session_owner(&self, session_id: i64) -> Option<ConnectionRef> {
        self.sessions.get(session_id).and_then(|s| s.owner)
    }

    pub fn expired_sessions(&self, now_ms: i64) -> Vec<i64> {
        self.sessions.expired(now_ms)
    }

    /// Closes a session (expiry or a server-side close): deletes its ephemerals.
    pub fn close_session(
        &mut self,
        session_id: i64,
        now_ms: i64,
        triggers: &mut Vec<Trigger>,
    ) -> Option<(TxnHeader, Txn)> {
        self.sessions.get(session_id)?;
        let header = self.next_header(session_id, 0, now_ms);
        let txn = Txn::CloseSession { session_id };
        self.apply(&header, &txn, triggers);
        Some((header, txn))
    }

    /// Applies a txn to the tree and the session table. Used for local writes, and for log
    /// replay and replicated txns (which arrive already validated).
    pub fn apply(&mut self, header: &TxnHeader, txn: &Txn, triggers: &mut Vec<Trigger>) {
        self.apply_to_sessions(header, txn);
        self.tree.apply(header, txn, triggers);
    }

    /// The session-table half of `apply` (createSession and closeSession).
    pub fn apply_to_sessions(&mut self, header: &TxnHeader, txn: &Txn) {
        match txn {
            Txn::CreateSession {
                session_id,
                timeout_ms,
                password,
            } => {
                self.sessions.insert(Session {
                    id: *session_id,
                    timeout_ms: *timeout_ms,
                    password: *password,
                    last_heard_ms: header.time_ms,
                    owner: None,
                    closing: false,
                });
            }
            Txn::CloseSession { session_id } => {
                self.sessions.remove(*session_id);
            }
            _ => {}
        }
    }

    /// Swaps in a tree equal to the current one (the same state rebuilt from the newest
    /// snapshot plus the log after it, `server::rebase`); returns the old one.
    pub fn replace_tree(&mut self, tree: DataTree) -> DataTree {
        self.tree.assert_same_figures(&tree);
        std::mem::replace(&mut self.tree, tree)
    }

    /// Takes a tree that already holds every txn up to its last zxid, computed elsewhere from
    /// this core's tree plus exactly those txns (the leader's speculative state, once they are
    /// committed); their session changes must be applied with `apply_to_sessions`.
    pub fn adopt_tree(&mut self, tree: DataTree) {
        assert!(
            tree.last_zxid() >= self.tree.last_zxid(),
            "an adopted tree never goes back"
        );
        self.tree = tree;
    }

    /// Validates and applies one write from a client session.
    pub fn process_write(
        &mut self,
        write: WriteRequest,
        now_ms: i64,
        triggers: &mut Vec<Trigger>,
    ) -> WriteOutcome {
        let WriteRequest {
            session_id,
            xid,
            request,
            auth,
        } = write;
        let last = self.tree.last_zxid();
        let error = |err: ZkError| WriteOutcome {
            reply: WriteReply {
                xid,
                zxid: last,
                err: err.code(),
                body: Vec::new(),
                close_connection: false,
            },
            txn: None,
        };
        if self.sessions.get(session_id).is_none() {
            return error(ZkError::SessionExpired);
        }
        let auth = self.effective_auth(auth);
        match request {
            Request::Sync { path } => {
                let mut body = Vec::new();
                body.put_ustring(&path);
                WriteOutcome {
                    reply: WriteReply {
                        xid,
                        zxid: last,
                        err: 0,
                        body,
                        close_connection: false,
                    },
                    txn: None,
                }
            }
            Request::Reconfig {
                joining,
                leaving,
                new_members,
                config_id,
            } => {
                if let Err(e) =
                    self.check_reconfig(&joining, &leaving, &new_members, config_id, &auth)
                {
                    return error(e);
                }
                match self.reconfig(
                    &joining,
                    &leaving,
                    &new_members,
                    config_id,
                    session_id,
                    xid,
                    now_ms,
                    triggers,
                ) {
                    Ok(outcome) => outcome,
                    Err(e) => error(e),
                }
            }
            Request::CloseSession => {
                let header = self.next_header(session_id, xid, now_ms);
                let txn = Txn::CloseSession { session_id };
                self.apply(&header, &txn, triggers);
                WriteOutcome {
                    reply: WriteReply {
                        xid,
                        zxid: header.zxid,
                        err: 0,
                        body: Vec::new(),
                        close_connection: true,
                    },
                    txn: Some((header, txn)),
                }
            }
            Request::Multi(ops) => {
                self.process_multi(session_id, xid, &ops, &auth, now_ms, triggers)
            }
            single => {
                let header = self.next_header(session_id, xid, now_ms);
                match prep(
                    &self.tree,
                    &self.config,
                    session_id,
                    &single,
                    &auth,
                    header.time_ms,
                ) {
                    Err(e) => error(e),
                    Ok(txn) => {
                        self.apply(&header, &txn, triggers);
                        let mut body = Vec::new();
                        encode_single_result(&self.tree, &single, &txn, &mut body);
                        WriteOutcome {
                            reply: WriteReply {
                                xid,
                                zxid: header.zxid,
                                err: 0,
                                body,
                                close_connection: false,
                            },
                            txn: Some((header, txn)),
                        }
                    }
                }
            }
        }
    }

    fn process_multi(
        &mut self,
        session_id: i64,
        xid: i32,
        ops: &[Request],
        auth: &[Id],
        now_ms: i64,
        triggers: &mut Vec<Trigger>,
    ) -> WriteOutcome {
        let header = self.next_header(session_id, xid, now_ms);
        let mut scratch = self.tree.clone();
        let mut txns = Vec::with_capacity(ops.len());
        let mut bodies: Vec<(i32, Vec<u8>)> = Vec::with_capacity(ops.len());
        let mut scratch_triggers = Vec::new();
        let mut failure: Option<(usize, ZkError)> = None;
        for (index, op) in ops.iter().enumerate() {
            match prep(&scratch, &self.config, session_id, op, auth, header.time_ms) {
                Ok(txn) => {
                    scratch.apply_op(&header, &txn, &mut scratch_triggers);
                    let mut body = Vec::new();
                    let result_type = encode_single_result(&scratch, op, &txn, &mut body);
                    bodies.push((result_type, body));
                    txns.push(txn);
                }
                Err(e) => {
                    failure = Some((index, e));
                    break;
                }
            }
        }
        let mut body = Vec::new();
        if let Some((failed_index, err)) = failure {
            for index in 0..ops.len() {
                let code = match index.cmp(&failed_index) {
                    std::cmp::Ordering::Less => 0,
                    std::cmp::Ordering::Equal => err.code(),
                    std::cmp::Ordering::Greater => ZkError::RuntimeInconsistency.code(),
                };
                encode_multi_header(opcode::ERROR, false, code, &mut body);
                body.put_i32(code);
            }
            encode_multi_header(-1, true, -1, &mut body);
            return WriteOutcome {
                reply: WriteReply {
                    xid,
                    zxid: self.tree.last_zxid(),
                    err: 0,
                    body,
                    close_connection: false,
                },
                txn: None,
            };
        }
        for (result_type, result_body) in &bodies {
            encode_multi_header(*result_type, false, 0, &mut body);
            body.extend_from_slice(result_body);
        }
        encode_multi_header(-1, true, -1, &mut body);
        if txns.is_empty() {
            // An empty multi changes nothing and takes no zxid.
            return WriteOutcome {
                reply: WriteReply {
                    xid,
                    zxid: self.tree.last_zxid(),
                    err: 0,
                    body,
                    close_connection: false,
                },
                txn: None,
            };
        }
        scratch.finish_multi(header.zxid);
        self.tree = scratch;
        triggers.extend(scratch_triggers);
        WriteOutcome {
            reply: WriteReply {
                xid,
                zxid: header.zxid,
                err: 0,
                body,
                close_connection: false,
            },
            txn: Some((header, Txn::Multi(txns))),
        }
    }

    /// Validates a reconfig the way ZooKeeper's leader does: enabled, well-formed input,
    /// WRITE on /zookeeper/config. A standalone server has no ensemble to change, so there
    /// every valid request is answered RECONFIGDISABLED.
    fn check_reconfig(
        &self,
        joining: &str,
        leaving: &str,
        new_members: &str,
        config_id: i64,
        auth: &[Id],
    ) -> Result<(), ZkError> {
        if !self.config.reconfig_enabled {
            return Err(ZkError::ReconfigDisabled);
        }
        // ZooKeeper's order: version, then input, then the ACL.
        let current_version = if self.config.replicated {
            self.membership().map_or(0, |m| m.version)
        } else {
            0
        };
        if config_id != -1 && config_id != current_version {
            return Err(ZkError::BadVersion);
        }
        let servers_ok = |list: &str| {
            list.split(',')
                .filter(|s| !s.trim().is_empty())
                .all(valid_server_spec)
        };
        let leaving_ok = leaving
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .all(|id| id.trim().parse::<i64>().is_ok());
        if !servers_ok(joining) || !servers_ok(new_members) || !leaving_ok {
            return Err(ZkError::BadArguments);
        }
        let config_acl = self
            .tree
            .get("/zookeeper/config")
            .map(|n| n.acl.clone())
            .unwrap_or_default();
        if !acl::check(&config_acl, perms::WRITE, auth) {
            return Err(ZkError::NoAuth);
        }
        if !self.config.replicated {
            return Err(ZkError::ReconfigDisabled);
        }
        Ok(())
    }

    /// For a valid reconfig that changes more than one voter, the single-voter memberships
    /// the leader commits one after another to carry it out (`Membership::steps_toward`,
    /// `leader` leaving last; docs/ARCHITECTURE.md R13). `None` for any other request, which
    /// `process_write` answers as usual (errors included).
    pub fn reconfig_steps(&self, write: &WriteRequest, leader: i64) -> Option<Vec<Vec<Member>>> {
        let Request::Reconfig {
            joining,
            leaving,
            new_members,
            config_id,
        } = &write.request
        else {
            return None;
        };
        self.sessions.get(write.session_id)?;
        let auth = self.effective_auth(write.auth.clone());
        self.check_reconfig(joining, leaving, new_members, *config_id, &auth)
            .ok()?;
        let current = self.membership()?;
        let target = current.target(joining, leaving, new_members).ok()?;
        (current.voter_changes(&target) > 1).then(|| current.steps_toward(&target, leader))
    }

    /// The identities a write is checked with: the super user's under `skipACL`.
    fn effective_auth(&self, auth: Arc<Vec<Id>>) -> Arc<Vec<Id>> {
        if self.config.skip_acl {
            Arc::new(vec![Id::new("super", "")])
        } else {
            auth
        }
    }

    /// The reconfig request that makes `members` the membership in one step: the bulk form,
    /// at whatever config id is current.
    pub fn reconfig_step_request(members: &[Member]) -> Request {
        Request::Reconfig {
            joining: String::new(),
            leaving: String::new(),
            new_members: members
                .iter()
                .map(|m| format!("server.{}={}", m.id, m.spec()))
                .collect::<Vec<_>>()
                .join(","),
            config_id: -1,
        }
    }

    /// The current membership, from `/zookeeper/config`.
    pub fn membership(&self) -> Option<Membership> {
        let node = self.tree.get("/zookeeper/config")?;
        let text = std::str::from_utf8(node.data.as_deref()?).ok()?;
        Membership::parse(text).ok()
    }

    /// Writes `members` into `/zookeeper/config` under the next zxid, which becomes the config
    /// id (the leader's first term writes the zoo.cfg membership this way).
    pub fn write_config(
        &mut self,
        members: &[Member],
        now_ms: i64,
        triggers: &mut Vec<Trigger>,
    ) -> (TxnHeader, Txn) {
        let header = self.next_header(0, 0, now_ms);
        let version = self
            .tree
            .get("/zookeeper/config")
            .map_or(0, |n| n.version + 1);
        let txn = Txn::SetData {
            path: "/zookeeper/config".into(),
            data: Some(Membership::render(members, header.zxid).into_bytes().into()),
            version,
        };
        self.apply(&header, &txn, triggers);
        (header, txn)
    }

    #[allow(clippy::too_many_arguments)]
    fn reconfig(
        &mut self,
        joining: &str,
        leaving: &str,
        new_members: &str,
        config_id: i64,
        session_id: i64,
        xid: i32,
        now_ms: i64,
        triggers: &mut Vec<Trigger>,
    ) -> Result<WriteOutcome, ZkError> {
        let current = self.membership().unwrap_or(Membership {
            members: Vec::new(),
            version: 0,
        });
        if config_id != -1 && config_id != current.version {
            return Err(ZkError::BadVersion);
        }
        let next = current.change(joining, leaving, new_members)?;
        let header = self.next_header(session_id, xid, now_ms);
        let version = self
            .tree
            .get("/zookeeper/config")
            .map_or(0, |n| n.version + 1);
        let data: Arc<[u8]> = Membership::render(&next, header.zxid).into_bytes().into();
        let txn = Txn::SetData {
            path: "/zookeeper/config".into(),
            data: Some(data.clone()),
            version,
        };
        self.apply(&header, &txn, triggers);
        let mut body = Vec::new();
        body.put_buffer(&data);
        self.tree
            .get("/zookeeper/config")
            .expect("system node")
            .stat()
            .encode(&mut body);
        Ok(WriteOutcome {
            reply: WriteReply {
                xid,
                zxid: header.zxid,
                err: 0,
                body,
                close_connection: false,
            },
            txn: Some((header, txn)),
        })
    }

    /// Containers with no children that have had children, and TTL nodes with no children
    /// not modified within their TTL (`ContainerManager.getCandidates`).
    pub fn reap_candidates(&self, now_ms: i64) -> Vec<String> {
        let mut out = Vec::new();
        for p in self.tree.containers() {
            if let Some(node) = self.tree.get(p)
                && node.children.is_empty()
                && node.cversion > 0
            {
                out.push(p.to_string());
            }
        }
        for p in self.tree.ttl_nodes() {
            if let Some(node) = self.tree.get(p)
                && let NodeKind::Ttl(ttl) = node.kind()
                && node.children.is_empty()
                && now_ms - node.mtime > ttl
            {
                out.push(p.to_string());
            }
        }
        out
    }

    /// Deletes a reap candidate if it still qualifies (a server-internal deleteContainer).
    pub fn reap(
        &mut self,
        p: &str,
        now_ms: i64,
        triggers: &mut Vec<Trigger>,
    ) -> Option<(TxnHeader, Txn)> {
        let node = self.tree.get(p)?;
        if !node.children.is_empty() {
            return None;
        }
        let header = self.next_header(0, 0, now_ms);
        let txn = Txn::Delete { path: p.into() };
        self.apply(&header, &txn, triggers);
        Some((header, txn))
    }
}

/// `server.N=host:quorumPort:electionPort[:participant|observer][;[clientAddress:]clientPort]`.
fn valid_server_spec(spec: &str) -> bool {
    let Some((key, value)) = spec.trim().split_once('=') else {
        return false;
    };
    let Some(id) = key.strip_prefix("server.") else {
        return false;
    };
    if id.parse::<i64>().is_err() {
        return false;
    }
    let (quorum, client) = match value.split_once(';') {
        Some((q, c)) => (q, Some(c)),
        None => (value, None),
    };
    let parts: Vec<&str> = quorum.split(':').collect();
    let port_ok = |p: &str| p.parse::<u16>().is_ok();
    let quorum_ok = match parts.as_slice() {
        [host, a, b] => !host.is_empty() && port_ok(a) && port_ok(b),
        [host, a, b, role] => {
            !host.is_empty()
                && port_ok(a)
                && port_ok(b)
                && matches!(*role, "participant" | "observer")
        }
        _ => false,
    };
    let client_ok = match client {
        None => true,
        Some(c) => match c.rsplit_once(':') {
            Some((address, port)) => !address.is_empty() && port_ok(port),
            None => port_ok(c),
        },
    };
    quorum_ok && client_ok
}

/// Nodes that exist from start-up and cannot be deleted.
fn is_system_path(p: &str) -> bool {
    matches!(
        p,
        "/" | "/zookeeper" | "/zookeeper/quota" | "/zookeeper/config"
    )
}

/// Validates one write op against `tree` and turns it into a txn (PrepRequestProcessor).
fn prep(
    tree: &DataTree,
    config: &CoreConfig,
    session_id: i64,
    request: &Request,
    auth: &[Id],
    _now_ms: i64,
) -> ZkResult<Txn> {
    match request {
        Request::Create(create) => prep_create(tree, config, session_id, create, auth),
        Request::Delete { path: p, version } => {
            // getParentPathAndValidate: no '/', a NUL, or a system node is BADARGUMENTS; any
            // other malformed path simply does not exist.
            if !p.contains('/') || p.contains('\0') || is_system_path(p) {
                return Err(ZkError::BadArguments);
            }
            let node = tree.get(p).ok_or(ZkError::NoNode)?;
            let parent = tree.get(path::parent(p)).ok_or(ZkError::NoNode)?;
            require(&parent.acl, perms::DELETE, auth)?;
            check_version(node.version, *version)?;
            if !node.children.is_empty() {
                return Err(ZkError::NotEmpty);
            }
            Ok(Txn::Delete {
                path: p.as_str().into(),
            })
        }
        Request::SetData {
            path: p,
            data,
            version,
        } => {
            path::validate(p)?;
            // The membership changes only through reconfig's checks (R13).
            if p == "/zookeeper/config" {
                return Err(ZkError::BadArguments);
            }
            let node = tree.get(p).ok_or(ZkError::NoNode)?;
            require(&node.acl, perms::WRITE, auth)?;
            let new_version = check_version(node.version, *version)?;
            Ok(Txn::SetData {
                path: p.as_str().into(),
                data: data.clone(),
                version: new_version,
            })
        }
        Request::SetAcl {
            path: p,
            acl,
            version,
        } => {
            path::validate(p)?;
            let node = tree.get(p).ok_or(ZkError::NoNode)?;
            require(&node.acl, perms::ADMIN, auth)?;
            let fixed = acl::fixup_shared(acl, auth)?;
            let new_version = check_version(node.aversion, *version)?;
            Ok(Txn::SetAcl {
                path: p.as_str().into(),
                acl: fixed,
                version: new_version,
            })
        }
        Request::Check { path: p, version } => {
            path::validate(p)?;
            let node = tree.get(p).ok_or(ZkError::NoNode)?;
            require(&node.acl, perms::READ, auth)?;
            check_version(node.version, *version)?;
            Ok(Txn::Check)
        }
        _ => Err(ZkError::BadArguments),
    }
}

fn prep_create(
    tree: &DataTree,
    config: &CoreConfig,
    session_id: i64,
    create: &CreateRequest,
    auth: &[Id],
) -> ZkResult<Txn> {
    let mode = CreateMode::from_flags(create.flags).ok_or(ZkError::BadArguments)?;
    if (mode.is_ttl() || create.opcode == opcode::CREATE_TTL) && !config.extended_types_enabled {
        return Err(ZkError::Unimplemented);
    }
    if mode.is_ttl() {
        if create.ttl <= 0 || create.ttl > tree::TTL_MAX_MS {
            return Err(ZkError::BadArguments);
        }
    } else if create.opcode == opcode::CREATE_TTL && create.ttl >= 0 {
        return Err(ZkError::BadArguments);
    }
    if create.opcode == opcode::CREATE_CONTAINER && mode != CreateMode::Container {
        return Err(ZkError::BadArguments);
    }
    let requested = &create.path;
    // ZooKeeper's order: the parent (everything before the last '/') is looked up first, so
    // a malformed path under a missing parent is NONODE; the full path is validated after.
    if !requested.contains('/') {
        return Err(ZkError::BadArguments);
    }
    if requested == "/" {
        return Err(ZkError::NodeExists);
    }
    let parent_path = path::parent(requested);
    let parent = tree.get(parent_path).ok_or(ZkError::NoNode)?;
    if mode.is_sequential() {
        path::validate(&format!("{requested}1"))?;
    } else {
        path::validate(requested)?;
    }
    require(&parent.acl, perms::CREATE, auth)?;
    let acl = acl::fixup_shared(&create.acl, auth)?;
    let final_path = if mode.is_sequential() {
        format!("{requested}{:010}", parent.cversion)
    } else {
        requested.clone()
    };
    path::validate(&final_path)?;
    if tree.contains(&final_path) {
        return Err(ZkError::NodeExists);
    }
    if matches!(parent.kind(), NodeKind::Ephemeral(_)) {
        return Err(ZkError::NoChildrenForEphemerals);
    }
    let ephemeral_owner = if mode.is_ephemeral() {
        session_id
    } else if mode == CreateMode::Container {
        tree::CONTAINER_OWNER
    } else if mode.is_ttl() {
        tree::ttl_owner(create.ttl)
    } else {
        0
    };
    Ok(Txn::Create {
        path: final_path.into(),
        data: create.data.clone(),
        acl,
        ephemeral_owner,
        parent_cversion: parent.cversion.wrapping_add(1),
    })
}

fn require(acl: &[crate::jute::records::Acl], perm: i32, auth: &[Id]) -> ZkResult<()> {
    if acl::check(acl, perm, auth) {
        Ok(())
    } else {
        Err(ZkError::NoAuth)
    }
}

/// `checkAndIncVersion`: -1 matches any version; returns the next version.
fn check_version(current: i32, expected: i32) -> ZkResult<i32> {
    if expected != -1 && expected != current {
        return Err(ZkError::BadVersion);
    }
    Ok(current.wrapping_add(1))
}

/// Encodes the response record of a successful single write; returns the multi result type.
fn encode_single_result(tree: &DataTree, request: &Request, txn: &Txn, out: &mut Vec<u8>) -> i32 {
    match (request, txn) {
        (Request::Create(create), Txn::Create { path: p, .. }) => {
            out.put_ustring(p);
            if create.opcode == opcode::CREATE {
                opcode::CREATE
            } else {
                tree.get(p).expect("created node exists").stat().encode(out);
                opcode::CREATE2
            }
        }
        (Request::Delete { .. }, _) => opcode::DELETE,
        (Request::SetData { path: p, .. }, _) | (Request::SetAcl { path: p, .. }, _) => {
            tree.get(p.as_str())
                .expect("changed node exists")
                .stat()
                .encode(out);
            if matches!(request, Request::SetData { .. }) {
                opcode::SET_DATA
            } else {
                opcode::SET_ACL
            }
        }
        (Request::Check { .. }, _) => opcode::CHECK,
        _ => unreachable!("encode_single_result called for a non-write"),
    }
}

#[cfg(test)]
mod tests;
