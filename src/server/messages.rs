//! The typed messages between shards and the commit executor.
//!
//! Direction rule (ARCHITECTURE.md R7): shards send [`ToCommit`] on bounded channels and may
//! wait when they are full; the commit executor sends [`ToShard`] on bounded channels, and each
//! shard drains its inbox in a task that never waits on the commit executor. So the graph of
//! waits has no cycle and cannot deadlock.

use std::sync::Arc;

use crate::core::commit::{WriteReply, WriteRequest};
use crate::core::sessions::ConnectionRef;
use crate::core::tree::{DataTree, Trigger};

/// A handshake as the commit executor needs it.
#[derive(Debug)]
pub struct ConnectAttempt {
    pub connection: ConnectionRef,
    pub session_id: i64,
    pub password: Vec<u8>,
    pub timeout_ms: i32,
    pub last_zxid_seen: i64,
    /// A fresh random password, used if a new session is created.
    pub new_password: [u8; 16],
    /// The client accepts a read-only session (ConnectRequest.readOnly).
    pub read_only_allowed: bool,
}

#[derive(Debug)]
pub enum ToCommit {
    Connect(ConnectAttempt),
    Write {
        connection: ConnectionRef,
        write: WriteRequest,
        /// The request frame as received, kept only in an ensemble, where a follower forwards
        /// it to the leader.
        frame: Option<Vec<u8>>,
    },
    /// Sessions that had traffic since the last report.
    Touch {
        sessions: Vec<i64>,
    },
    /// A connection closed without closeSession; its session lives until it expires.
    Disconnected {
        connection: ConnectionRef,
        session_id: i64,
    },
    /// Timer: check session expiry.
    ExpiryTick,
    /// Timer: reap empty containers and expired TTL nodes.
    ReapTick,
    /// Ensemble: a message from another server.
    Peer {
        from: i64,
        message: crate::server::peer::PeerMessage,
    },
    /// Ensemble: the connection from another server broke.
    PeerLost {
        from: i64,
    },
    /// Ensemble: the replication clock.
    RaftTick,
    /// A shard holds reads until it has a tree as new as the replies it has delivered
    /// (`server::publication`).
    NeedTree,
}

/// What a handshake came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectResult {
    Attached {
        session_id: i64,
        timeout_ms: i32,
        password: [u8; 16],
    },
    /// Unknown session or wrong password: zeroed ConnectResponse, then close.
    Expired,
    /// A read-only session on a server cut off from its quorum (readonlymode.enabled): it
    /// lives only on this server, reads the last state this server applied, and its writes
    /// fail with NOTREADONLY.
    ReadOnly {
        session_id: i64,
        timeout_ms: i32,
        password: [u8; 16],
    },
    /// The client has seen a newer zxid than this server: close without a response.
    ZxidAhead,
    /// In an ensemble, this server is not following a leader: close without a response, so
    /// that the client tries another server (as ZooKeeper does while it is LOOKING).
    NotServing,
}

/// Watch triggers of txns, in zxid order, each with its zxid; shared by every shard.
pub type Triggers = Arc<Vec<(i64, Trigger)>>;

#[derive(Debug)]
pub enum ShardReply {
    Write {
        connection_id: u64,
        reply: WriteReply,
    },
    Connect {
        connection_id: u64,
        result: ConnectResult,
    },
    /// Close this connection (session expired or moved to another connection).
    Close { connection_id: u64 },
}

/// One commit batch as seen by one shard: first the triggers of its txns, then the new tree
/// (only when the commit executor publishes one: `server::publication`), then this shard's
/// replies (rule R3: events before the replies that follow them).
#[derive(Debug)]
pub struct ToShard {
    /// Triggers of every txn since the previous message (None: no txn).
    pub triggers: Option<Triggers>,
    pub tree: Option<Arc<DataTree>>,
    /// The commit executor's last applied (and durable) zxid: a shard whose tree is older
    /// holds its reads until a tree this new arrives (rule R8).
    pub last_zxid: i64,
    pub replies: Vec<ShardReply>,
}
