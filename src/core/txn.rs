//! Transactions: the deterministic, already-validated state changes that the commit path
//! orders, will log and replicate, and that every replica applies in zxid order.

use crate::jute::records::Acl;

/// Who caused a txn and when (`TxnHeader` in ZooKeeper).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnHeader {
    pub session_id: i64,
    pub xid: i32,
    pub zxid: i64,
    /// Wall-clock time chosen by the commit path; becomes ctime/mtime.
    pub time_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Txn {
    CreateSession {
        session_id: i64,
        timeout_ms: i32,
        password: [u8; 16],
    },
    /// Removes the session and deletes its ephemerals.
    CloseSession {
        session_id: i64,
    },
    Create {
        path: String,
        data: Vec<u8>,
        acl: Vec<Acl>,
        ephemeral_owner: i64,
        parent_cversion: i32,
    },
    Delete {
        path: String,
    },
    SetData {
        path: String,
        data: Vec<u8>,
        version: i32,
    },
    SetAcl {
        path: String,
        acl: Vec<Acl>,
        version: i32,
    },
    /// A multi's version check: no state change.
    Check,
    /// The ops of a multi, applied atomically under one zxid.
    Multi(Vec<Txn>),
}
