//! Transactions: the deterministic, already-validated state changes that the commit path
//! orders, will log and replicate, and that every replica applies in zxid order.

use std::sync::Arc;

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

/// Paths, data and ACLs are shared allocations: the tree keeps them as they are (a create's
/// path becomes the node's key, its data the node's data), and a decoded ACL that is one of
/// the common lists is the process-wide copy (`jute::records::decode_acls_shared`), so
/// applying a txn allocates none of them again.
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
        path: Arc<str>,
        data: Option<Arc<[u8]>>,
        acl: Arc<Vec<Acl>>,
        ephemeral_owner: i64,
        parent_cversion: i32,
    },
    Delete {
        path: Arc<str>,
    },
    SetData {
        path: Arc<str>,
        data: Option<Arc<[u8]>>,
        version: i32,
    },
    SetAcl {
        path: Arc<str>,
        acl: Arc<Vec<Acl>>,
        version: i32,
    },
    /// A multi's version check: no state change.
    Check,
    /// The ops of a multi, applied atomically under one zxid.
    Multi(Vec<Txn>),
}

use crate::jute::records::{decode_acls_shared as decode_acls, encode_acls, opcode};
use crate::jute::{DecodeError, DecodeResult, Reader, Writer};

/// Deepest nesting of multis accepted when decoding (a multi holds no multi in practice).
const TXN_NESTING_MAX: usize = 2;

impl Txn {
    /// Encodes the txn body (layout in docs/FORMAT.md, "Txn payload").
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Txn::CreateSession {
                session_id,
                timeout_ms,
                password,
            } => {
                out.put_i32(opcode::CREATE_SESSION);
                out.put_i64(*session_id);
                out.put_i32(*timeout_ms);
                out.put_buffer(password);
            }
            Txn::CloseSession { session_id } => {
                out.put_i32(opcode::CLOSE_SESSION);
                out.put_i64(*session_id);
            }
            Txn::Create {
                path,
                data,
                acl,
                ephemeral_owner,
                parent_cversion,
            } => {
                out.put_i32(opcode::CREATE);
                out.put_ustring(path);
                put_data(data, out);
                encode_acls(acl, out);
                out.put_i64(*ephemeral_owner);
                out.put_i32(*parent_cversion);
            }
            Txn::Delete { path } => {
                out.put_i32(opcode::DELETE);
                out.put_ustring(path);
            }
            Txn::SetData {
                path,
                data,
                version,
            } => {
                out.put_i32(opcode::SET_DATA);
                out.put_ustring(path);
                put_data(data, out);
                out.put_i32(*version);
            }
            Txn::SetAcl { path, acl, version } => {
                out.put_i32(opcode::SET_ACL);
                out.put_ustring(path);
                encode_acls(acl, out);
                out.put_i32(*version);
            }
            Txn::Check => out.put_i32(opcode::CHECK),
            Txn::Multi(txns) => {
                out.put_i32(opcode::MULTI);
                out.put_i32(txns.len() as i32);
                for t in txns {
                    t.encode(out);
                }
            }
        }
    }

    pub fn decode(r: &mut Reader<'_>) -> DecodeResult<Txn> {
        Self::decode_nested(r, 0)
    }

    fn decode_nested(r: &mut Reader<'_>, depth: usize) -> DecodeResult<Txn> {
        let txn = match r.read_i32()? {
            opcode::CREATE_SESSION => {
                let session_id = r.read_i64()?;
                let timeout_ms = r.read_i32()?;
                let bytes = r.read_buffer()?.unwrap_or_default();
                let password: [u8; 16] = bytes
                    .try_into()
                    .map_err(|_| DecodeError::InvalidValue("session password"))?;
                Txn::CreateSession {
                    session_id,
                    timeout_ms,
                    password,
                }
            }
            opcode::CLOSE_SESSION => Txn::CloseSession {
                session_id: r.read_i64()?,
            },
            opcode::CREATE => Txn::Create {
                path: r.read_ustring_arc()?,
                data: r.read_buffer()?.map(Arc::from),
                acl: decode_acls(r)?,
                ephemeral_owner: r.read_i64()?,
                parent_cversion: r.read_i32()?,
            },
            opcode::DELETE => Txn::Delete {
                path: r.read_ustring_arc()?,
            },
            opcode::SET_DATA => Txn::SetData {
                path: r.read_ustring_arc()?,
                data: r.read_buffer()?.map(Arc::from),
                version: r.read_i32()?,
            },
            opcode::SET_ACL => Txn::SetAcl {
                path: r.read_ustring_arc()?,
                acl: decode_acls(r)?,
                version: r.read_i32()?,
            },
            opcode::CHECK => Txn::Check,
            opcode::MULTI => {
                if depth >= TXN_NESTING_MAX {
                    return Err(DecodeError::InvalidValue("multi nesting"));
                }
                let count = r.read_count(4)?;
                let mut txns = Vec::with_capacity(count);
                for _ in 0..count {
                    txns.push(Self::decode_nested(r, depth + 1)?);
                }
                Txn::Multi(txns)
            }
            _ => return Err(DecodeError::InvalidValue("txn type")),
        };
        Ok(txn)
    }
}

fn put_data(data: &Option<Arc<[u8]>>, out: &mut Vec<u8>) {
    match data {
        Some(d) => out.put_buffer(d),
        None => out.put_null_buffer(),
    }
}

/// Bytes `TxnHeader::encode` writes: session id, xid, time (the zxid is the record's).
pub const TXN_HEADER_BYTES: usize = 20;

impl TxnHeader {
    /// Encodes everything but the zxid, which the log record carries.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_i64(self.session_id);
        out.put_i32(self.xid);
        out.put_i64(self.time_ms);
    }

    pub fn decode(zxid: i64, r: &mut Reader<'_>) -> DecodeResult<TxnHeader> {
        Ok(TxnHeader {
            session_id: r.read_i64()?,
            xid: r.read_i32()?,
            zxid,
            time_ms: r.read_i64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_header_is_txn_header_bytes_long() {
        let mut out = Vec::new();
        TxnHeader {
            session_id: 1,
            xid: 2,
            zxid: 3,
            time_ms: 4,
        }
        .encode(&mut out);
        assert_eq!(out.len(), TXN_HEADER_BYTES);
    }

    use super::*;
    use crate::jute::records::{Acl, Id};

    #[test]
    fn every_txn_kind_round_trips() {
        let acl = Arc::new(vec![Acl {
            perms: 31,
            id: Id::new("world", "anyone"),
        }]);
        let digest = Arc::new(vec![Acl {
            perms: 1,
            id: Id::new("digest", "u:x"),
        }]);
        let txns = vec![
            Txn::CreateSession {
                session_id: 7,
                timeout_ms: 3000,
                password: [9; 16],
            },
            Txn::CloseSession { session_id: 7 },
            Txn::Create {
                path: "/a".into(),
                data: Some(Arc::from(&[1u8, 2][..])),
                acl: acl.clone(),
                ephemeral_owner: 7,
                parent_cversion: 3,
            },
            Txn::Delete { path: "/a".into() },
            Txn::SetData {
                path: "/a".into(),
                data: None,
                version: 4,
            },
            Txn::SetAcl {
                path: "/a".into(),
                acl,
                version: 1,
            },
            Txn::SetAcl {
                path: "/a".into(),
                acl: digest,
                version: 2,
            },
            Txn::Multi(vec![Txn::Check, Txn::Delete { path: "/b".into() }]),
        ];
        for txn in txns {
            let mut out = Vec::new();
            txn.encode(&mut out);
            let mut r = Reader::new(&out, 1 << 20);
            assert_eq!(Txn::decode(&mut r).unwrap(), txn);
            assert!(r.is_empty());
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let bytes = [0, 0, 0, 14, 0x7f, 0xff, 0xff, 0xff];
        assert!(Txn::decode(&mut Reader::new(&bytes, 1 << 20)).is_err());
        assert!(Txn::decode(&mut Reader::new(&[1, 2], 1 << 20)).is_err());
    }
}
