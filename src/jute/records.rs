//! The client protocol's records (`zookeeper.jute`, module `proto` and `data`) and the decoded
//! form of every request the server accepts.

use std::sync::{Arc, LazyLock};

use super::{DecodeError, DecodeResult, Reader, Writer};

/// `ZooDefs.OpCode`.
pub mod opcode {
    pub const NOTIFICATION: i32 = 0;
    pub const CREATE: i32 = 1;
    pub const DELETE: i32 = 2;
    pub const EXISTS: i32 = 3;
    pub const GET_DATA: i32 = 4;
    pub const SET_DATA: i32 = 5;
    pub const GET_ACL: i32 = 6;
    pub const SET_ACL: i32 = 7;
    pub const GET_CHILDREN: i32 = 8;
    pub const SYNC: i32 = 9;
    pub const PING: i32 = 11;
    pub const GET_CHILDREN2: i32 = 12;
    pub const CHECK: i32 = 13;
    pub const MULTI: i32 = 14;
    pub const CREATE2: i32 = 15;
    pub const RECONFIG: i32 = 16;
    pub const CHECK_WATCHES: i32 = 17;
    pub const REMOVE_WATCHES: i32 = 18;
    pub const CREATE_CONTAINER: i32 = 19;
    pub const DELETE_CONTAINER: i32 = 20;
    pub const CREATE_TTL: i32 = 21;
    pub const MULTI_READ: i32 = 22;
    pub const AUTH: i32 = 100;
    pub const SET_WATCHES: i32 = 101;
    pub const SASL: i32 = 102;
    pub const GET_EPHEMERALS: i32 = 103;
    pub const GET_ALL_CHILDREN_NUMBER: i32 = 104;
    pub const SET_WATCHES2: i32 = 105;
    pub const ADD_WATCH: i32 = 106;
    pub const WHO_AM_I: i32 = 107;
    pub const CREATE_SESSION: i32 = -10;
    pub const CLOSE_SESSION: i32 = -11;
    pub const ERROR: i32 = -1;
}

/// Special xids.
pub mod xid {
    pub const NOTIFICATION: i32 = -1;
    pub const PING: i32 = -2;
    pub const AUTH: i32 = -4;
    pub const SET_WATCHES: i32 = -8;
}

/// `Watcher.Event.EventType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    NodeCreated = 1,
    NodeDeleted = 2,
    NodeDataChanged = 3,
    NodeChildrenChanged = 4,
}

/// `KeeperState.SyncConnected`, the state in every server-sent event.
pub const STATE_SYNC_CONNECTED: i32 = 3;

/// Size of a Stat on the wire.
pub const STAT_BYTES: usize = 68;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stat {
    pub czxid: i64,
    pub mzxid: i64,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    pub ephemeral_owner: i64,
    pub data_length: i32,
    pub num_children: i32,
    pub pzxid: i64,
}

impl Stat {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_i64(self.czxid);
        out.put_i64(self.mzxid);
        out.put_i64(self.ctime);
        out.put_i64(self.mtime);
        out.put_i32(self.version);
        out.put_i32(self.cversion);
        out.put_i32(self.aversion);
        out.put_i64(self.ephemeral_owner);
        out.put_i32(self.data_length);
        out.put_i32(self.num_children);
        out.put_i64(self.pzxid);
    }

    pub fn decode(r: &mut Reader<'_>) -> DecodeResult<Stat> {
        Ok(Stat {
            czxid: r.read_i64()?,
            mzxid: r.read_i64()?,
            ctime: r.read_i64()?,
            mtime: r.read_i64()?,
            version: r.read_i32()?,
            cversion: r.read_i32()?,
            aversion: r.read_i32()?,
            ephemeral_owner: r.read_i64()?,
            data_length: r.read_i32()?,
            num_children: r.read_i32()?,
            pzxid: r.read_i64()?,
        })
    }
}

/// `data.Id`: an authentication scheme and the identity within it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id {
    pub scheme: String,
    pub id: String,
}

impl Id {
    pub fn new(scheme: &str, id: &str) -> Id {
        Id {
            scheme: scheme.to_owned(),
            id: id.to_owned(),
        }
    }
}

/// `data.ACL`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Acl {
    pub perms: i32,
    pub id: Id,
}

pub fn encode_acls(acls: &[Acl], out: &mut Vec<u8>) {
    out.put_i32(acls.len() as i32);
    for acl in acls {
        out.put_i32(acl.perms);
        out.put_ustring(&acl.id.scheme);
        out.put_ustring(&acl.id.id);
    }
}

pub fn decode_acls(r: &mut Reader<'_>) -> DecodeResult<Vec<Acl>> {
    // perms + two string lengths.
    let count = r.read_count(12)?;
    let mut acls = Vec::with_capacity(count);
    for _ in 0..count {
        let perms = r.read_i32()?;
        let scheme = r.read_ustring()?;
        let id = r.read_ustring()?;
        acls.push(Acl {
            perms,
            id: Id { scheme, id },
        });
    }
    Ok(acls)
}

/// `world:anyone` with every permission, and read-only (`ZooDefs.Ids.OPEN_ACL_UNSAFE` and
/// `READ_ACL_UNSAFE`): one shared allocation each for the whole process, as ZooKeeper's ACL
/// cache makes them. Nearly every znode carries one of the two.
/// (`ZooDefs.Perms.ALL` is 31, `READ` is 1; `core::acl::perms` names them.)
static OPEN_ACL_UNSAFE: LazyLock<Arc<Vec<Acl>>> = LazyLock::new(|| well_known(31));
static READ_ACL_UNSAFE: LazyLock<Arc<Vec<Acl>>> = LazyLock::new(|| well_known(1));
static OPEN_ACL_BYTES: LazyLock<Vec<u8>> = LazyLock::new(|| encoded(&OPEN_ACL_UNSAFE));
static READ_ACL_BYTES: LazyLock<Vec<u8>> = LazyLock::new(|| encoded(&READ_ACL_UNSAFE));

fn well_known(perms: i32) -> Arc<Vec<Acl>> {
    Arc::new(vec![Acl {
        perms,
        id: Id::new("world", "anyone"),
    }])
}

fn encoded(acls: &[Acl]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_acls(acls, &mut out);
    out
}

pub fn open_acl_unsafe_shared() -> Arc<Vec<Acl>> {
    OPEN_ACL_UNSAFE.clone()
}

pub fn read_acl_unsafe_shared() -> Arc<Vec<Acl>> {
    READ_ACL_UNSAFE.clone()
}

/// Decodes an ACL list as a shared allocation. The two well-known lists are recognised by
/// their bytes and returned as the process-wide copies, with no allocation: every create
/// carries its ACL, in the request and again in its txn on every server.
pub fn decode_acls_shared(r: &mut Reader<'_>) -> DecodeResult<Arc<Vec<Acl>>> {
    if r.skip_if_next(&OPEN_ACL_BYTES) {
        return Ok(open_acl_unsafe_shared());
    }
    if r.skip_if_next(&READ_ACL_BYTES) {
        return Ok(read_acl_unsafe_shared());
    }
    Ok(Arc::new(decode_acls(r)?))
}

/// The first frame of a connection. `read_only` is `None` when the client omitted the
/// optional trailing byte (pre-3.4 clients); the reply then omits it too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    pub protocol_version: i32,
    pub last_zxid_seen: i64,
    pub timeout_ms: i32,
    pub session_id: i64,
    pub password: Vec<u8>,
    pub read_only: Option<bool>,
}

impl ConnectRequest {
    pub fn decode(r: &mut Reader<'_>) -> DecodeResult<ConnectRequest> {
        let protocol_version = r.read_i32()?;
        let last_zxid_seen = r.read_i64()?;
        let timeout_ms = r.read_i32()?;
        let session_id = r.read_i64()?;
        let password = r.read_buffer_vec()?;
        let read_only = if r.is_empty() {
            None
        } else {
            Some(r.read_u8()? != 0)
        };
        Ok(ConnectRequest {
            protocol_version,
            last_zxid_seen,
            timeout_ms,
            session_id,
            password,
            read_only,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_i32(self.protocol_version);
        out.put_i64(self.last_zxid_seen);
        out.put_i32(self.timeout_ms);
        out.put_i64(self.session_id);
        out.put_buffer(&self.password);
        if let Some(ro) = self.read_only {
            out.put_bool(ro);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectResponse {
    pub protocol_version: i32,
    pub timeout_ms: i32,
    pub session_id: i64,
    pub password: Vec<u8>,
    pub read_only: Option<bool>,
}

impl ConnectResponse {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_i32(self.protocol_version);
        out.put_i32(self.timeout_ms);
        out.put_i64(self.session_id);
        out.put_buffer(&self.password);
        if let Some(ro) = self.read_only {
            out.put_bool(ro);
        }
    }

    pub fn decode(r: &mut Reader<'_>) -> DecodeResult<ConnectResponse> {
        let protocol_version = r.read_i32()?;
        let timeout_ms = r.read_i32()?;
        let session_id = r.read_i64()?;
        let password = r.read_buffer_vec()?;
        let read_only = if r.is_empty() {
            None
        } else {
            Some(r.read_bool()?)
        };
        Ok(ConnectResponse {
            protocol_version,
            timeout_ms,
            session_id,
            password,
            read_only,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyHeader {
    pub xid: i32,
    pub zxid: i64,
    pub err: i32,
}

impl ReplyHeader {
    pub const BYTES: usize = 16;

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_i32(self.xid);
        out.put_i64(self.zxid);
        out.put_i32(self.err);
    }

    pub fn decode(r: &mut Reader<'_>) -> DecodeResult<ReplyHeader> {
        Ok(ReplyHeader {
            xid: r.read_i32()?,
            zxid: r.read_i64()?,
            err: r.read_i32()?,
        })
    }
}

/// `WatcherEvent` body of a notification.
pub fn encode_watcher_event(event_type: EventType, path: &str, out: &mut Vec<u8>) {
    out.put_i32(event_type as i32);
    out.put_i32(STATE_SYNC_CONNECTED);
    out.put_ustring(path);
}

/// Create flags as `CreateMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateMode {
    Persistent,
    Ephemeral,
    PersistentSequential,
    EphemeralSequential,
    Container,
    PersistentWithTtl,
    PersistentSequentialWithTtl,
}

impl CreateMode {
    pub fn from_flags(flags: i32) -> Option<CreateMode> {
        Some(match flags {
            0 => CreateMode::Persistent,
            1 => CreateMode::Ephemeral,
            2 => CreateMode::PersistentSequential,
            3 => CreateMode::EphemeralSequential,
            4 => CreateMode::Container,
            5 => CreateMode::PersistentWithTtl,
            6 => CreateMode::PersistentSequentialWithTtl,
            _ => return None,
        })
    }

    pub fn is_sequential(self) -> bool {
        matches!(
            self,
            CreateMode::PersistentSequential
                | CreateMode::EphemeralSequential
                | CreateMode::PersistentSequentialWithTtl
        )
    }

    pub fn is_ephemeral(self) -> bool {
        matches!(
            self,
            CreateMode::Ephemeral | CreateMode::EphemeralSequential
        )
    }

    pub fn is_ttl(self) -> bool {
        matches!(
            self,
            CreateMode::PersistentWithTtl | CreateMode::PersistentSequentialWithTtl
        )
    }
}

/// A create of any of the four create opcodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    pub opcode: i32,
    pub path: String,
    /// `None` when the client sent a null buffer; getData then returns null.
    pub data: Option<Arc<[u8]>>,
    pub acl: Arc<Vec<Acl>>,
    pub flags: i32,
    pub ttl: i64,
}

/// `WatcherType` in checkWatches/removeWatches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatcherType {
    Children = 1,
    Data = 2,
    Any = 3,
    Persistent = 4,
    PersistentRecursive = 5,
}

impl WatcherType {
    pub fn from_i32(v: i32) -> Option<WatcherType> {
        Some(match v {
            1 => WatcherType::Children,
            2 => WatcherType::Data,
            3 => WatcherType::Any,
            4 => WatcherType::Persistent,
            5 => WatcherType::PersistentRecursive,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetWatches {
    pub relative_zxid: i64,
    pub data: Vec<String>,
    pub exist: Vec<String>,
    pub child: Vec<String>,
    pub persistent: Vec<String>,
    pub persistent_recursive: Vec<String>,
}

/// Every request after the handshake, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Create(CreateRequest),
    Delete {
        path: String,
        version: i32,
    },
    Exists {
        path: String,
        watch: bool,
    },
    GetData {
        path: String,
        watch: bool,
    },
    SetData {
        path: String,
        data: Option<Arc<[u8]>>,
        version: i32,
    },
    GetAcl {
        path: String,
    },
    SetAcl {
        path: String,
        acl: Arc<Vec<Acl>>,
        version: i32,
    },
    GetChildren {
        path: String,
        watch: bool,
        with_stat: bool,
    },
    Sync {
        path: String,
    },
    Ping,
    Check {
        path: String,
        version: i32,
    },
    Multi(Vec<Request>),
    MultiRead(Vec<Request>),
    Reconfig {
        joining: String,
        leaving: String,
        new_members: String,
        config_id: i64,
    },
    CheckWatches {
        path: String,
        watcher_type: i32,
    },
    RemoveWatches {
        path: String,
        watcher_type: i32,
    },
    SetWatches(SetWatches),
    GetEphemerals {
        prefix: String,
    },
    GetAllChildrenNumber {
        path: String,
    },
    AddWatch {
        path: String,
        mode: i32,
    },
    WhoAmI,
    Auth {
        scheme: String,
        auth: Vec<u8>,
    },
    Sasl {
        token: Vec<u8>,
    },
    CloseSession,
}

/// Why a request frame could not be turned into a `Request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// Not an opcode the server accepts at top level: reply UNIMPLEMENTED and close.
    UnknownOpcode(i32),
    /// The body did not decode: close the connection.
    Malformed(DecodeError),
    /// A multi mixing reads and writes, or holding an op it may not: MARSHALLINGERROR.
    BadMulti,
}

impl From<DecodeError> for RequestError {
    fn from(e: DecodeError) -> Self {
        RequestError::Malformed(e)
    }
}

impl Request {
    /// Decodes the body of a request of type `op`.
    pub fn decode(op: i32, r: &mut Reader<'_>) -> Result<Request, RequestError> {
        use opcode::*;
        let request = match op {
            CREATE | CREATE2 | CREATE_CONTAINER | CREATE_TTL => {
                let path = r.read_ustring()?;
                let data = r.read_buffer()?.map(Arc::from);
                let acl = decode_acls_shared(r)?;
                let flags = r.read_i32()?;
                let ttl = if op == CREATE_TTL { r.read_i64()? } else { -1 };
                Request::Create(CreateRequest {
                    opcode: op,
                    path,
                    data,
                    acl,
                    flags,
                    ttl,
                })
            }
            DELETE => Request::Delete {
                path: r.read_ustring()?,
                version: r.read_i32()?,
            },
            EXISTS => Request::Exists {
                path: r.read_ustring()?,
                watch: r.read_bool()?,
            },
            GET_DATA => Request::GetData {
                path: r.read_ustring()?,
                watch: r.read_bool()?,
            },
            SET_DATA => Request::SetData {
                path: r.read_ustring()?,
                data: r.read_buffer()?.map(Arc::from),
                version: r.read_i32()?,
            },
            GET_ACL => Request::GetAcl {
                path: r.read_ustring()?,
            },
            SET_ACL => Request::SetAcl {
                path: r.read_ustring()?,
                acl: decode_acls_shared(r)?,
                version: r.read_i32()?,
            },
            GET_CHILDREN | GET_CHILDREN2 => Request::GetChildren {
                path: r.read_ustring()?,
                watch: r.read_bool()?,
                with_stat: op == GET_CHILDREN2,
            },
            SYNC => Request::Sync {
                path: r.read_ustring()?,
            },
            PING => Request::Ping,
            MULTI | MULTI_READ => Self::decode_multi(op, r)?,
            RECONFIG => Request::Reconfig {
                joining: r.read_ustring()?,
                leaving: r.read_ustring()?,
                new_members: r.read_ustring()?,
                config_id: r.read_i64()?,
            },
            CHECK_WATCHES => Request::CheckWatches {
                path: r.read_ustring()?,
                watcher_type: r.read_i32()?,
            },
            REMOVE_WATCHES => Request::RemoveWatches {
                path: r.read_ustring()?,
                watcher_type: r.read_i32()?,
            },
            SET_WATCHES | SET_WATCHES2 => {
                let relative_zxid = r.read_i64()?;
                let data = r.read_string_vec()?;
                let exist = r.read_string_vec()?;
                let child = r.read_string_vec()?;
                let (persistent, persistent_recursive) = if op == SET_WATCHES2 {
                    (r.read_string_vec()?, r.read_string_vec()?)
                } else {
                    (Vec::new(), Vec::new())
                };
                Request::SetWatches(SetWatches {
                    relative_zxid,
                    data,
                    exist,
                    child,
                    persistent,
                    persistent_recursive,
                })
            }
            GET_EPHEMERALS => Request::GetEphemerals {
                prefix: r.read_ustring()?,
            },
            GET_ALL_CHILDREN_NUMBER => Request::GetAllChildrenNumber {
                path: r.read_ustring()?,
            },
            ADD_WATCH => Request::AddWatch {
                path: r.read_ustring()?,
                mode: r.read_i32()?,
            },
            WHO_AM_I => Request::WhoAmI,
            AUTH => {
                let _type = r.read_i32()?;
                Request::Auth {
                    scheme: r.read_ustring()?,
                    auth: r.read_buffer_vec()?,
                }
            }
            SASL => Request::Sasl {
                token: r.read_buffer_vec()?,
            },
            CLOSE_SESSION => Request::CloseSession,
            other => return Err(RequestError::UnknownOpcode(other)),
        };
        Ok(request)
    }

    fn decode_multi(op: i32, r: &mut Reader<'_>) -> Result<Request, RequestError> {
        let mut ops = Vec::new();
        loop {
            let sub_type = r.read_i32()?;
            let done = r.read_bool()?;
            let _err = r.read_i32()?;
            if done {
                break;
            }
            let allowed = if op == opcode::MULTI {
                matches!(
                    sub_type,
                    opcode::CREATE
                        | opcode::CREATE2
                        | opcode::CREATE_CONTAINER
                        | opcode::CREATE_TTL
                        | opcode::DELETE
                        | opcode::SET_DATA
                        | opcode::CHECK
                )
            } else {
                matches!(sub_type, opcode::GET_CHILDREN | opcode::GET_DATA)
            };
            if !allowed {
                // Decode nothing more: we cannot know the sub-record's layout.
                return Err(RequestError::BadMulti);
            }
            let sub = if sub_type == opcode::CHECK {
                Request::Check {
                    path: r.read_ustring()?,
                    version: r.read_i32()?,
                }
            } else {
                Self::decode(sub_type, r)?
            };
            ops.push(sub);
        }
        Ok(if op == opcode::MULTI {
            Request::Multi(ops)
        } else {
            Request::MultiRead(ops)
        })
    }

    /// True for requests that change state and so go through the commit path.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Request::Create(_)
                | Request::Delete { .. }
                | Request::SetData { .. }
                | Request::SetAcl { .. }
                | Request::Multi(_)
                | Request::Reconfig { .. }
                | Request::CloseSession
                | Request::Sync { .. }
        )
    }
}

/// Encodes the `MultiHeader` record.
pub fn encode_multi_header(op_type: i32, done: bool, err: i32, out: &mut Vec<u8>) {
    out.put_i32(op_type);
    out.put_bool(done);
    out.put_i32(err);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_68_bytes_in_field_order() {
        let stat = Stat {
            czxid: 1,
            mzxid: 2,
            ctime: 3,
            mtime: 4,
            version: 5,
            cversion: 6,
            aversion: 7,
            ephemeral_owner: 8,
            data_length: 9,
            num_children: 10,
            pzxid: 11,
        };
        let mut out = Vec::new();
        stat.encode(&mut out);
        assert_eq!(out.len(), STAT_BYTES);
        let expected: Vec<u8> = [
            &1i64.to_be_bytes()[..],
            &2i64.to_be_bytes(),
            &3i64.to_be_bytes(),
            &4i64.to_be_bytes(),
            &5i32.to_be_bytes(),
            &6i32.to_be_bytes(),
            &7i32.to_be_bytes(),
            &8i64.to_be_bytes(),
            &9i32.to_be_bytes(),
            &10i32.to_be_bytes(),
            &11i64.to_be_bytes(),
        ]
        .concat();
        assert_eq!(out, expected);
        assert_eq!(Stat::decode(&mut Reader::new(&out, 100)).unwrap(), stat);
    }

    #[test]
    fn connect_request_without_read_only_byte_is_44_bytes() {
        let req = ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            timeout_ms: 30000,
            session_id: 0,
            password: vec![0; 16],
            read_only: None,
        };
        let mut out = Vec::new();
        req.encode(&mut out);
        assert_eq!(out.len(), 44);
        let decoded = ConnectRequest::decode(&mut Reader::new(&out, 1024)).unwrap();
        assert_eq!(decoded, req);
        let with_ro = ConnectRequest {
            read_only: Some(true),
            ..req
        };
        let mut out = Vec::new();
        with_ro.encode(&mut out);
        assert_eq!(out.len(), 45);
        assert_eq!(
            ConnectRequest::decode(&mut Reader::new(&out, 1024)).unwrap(),
            with_ro
        );
    }

    #[test]
    fn connect_response_bytes_match_zookeeper_layout() {
        let resp = ConnectResponse {
            protocol_version: 0,
            timeout_ms: 10000,
            session_id: 0x0102030405060708,
            password: vec![0xaa; 16],
            read_only: Some(false),
        };
        let mut out = Vec::new();
        resp.encode(&mut out);
        let mut expected = vec![
            0, 0, 0, 0, 0, 0, 0x27, 0x10, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 16,
        ];
        expected.extend_from_slice(&[0xaa; 16]);
        expected.push(0);
        assert_eq!(out, expected);
    }

    #[test]
    fn create_request_decodes_from_java_client_bytes() {
        // create("/a", "hi", OPEN_ACL_UNSAFE, EPHEMERAL) as the Java client encodes it.
        let mut body = Vec::new();
        body.put_ustring("/a");
        body.put_buffer(b"hi");
        body.put_i32(1);
        body.put_i32(31);
        body.put_ustring("world");
        body.put_ustring("anyone");
        body.put_i32(1);
        let req = Request::decode(opcode::CREATE, &mut Reader::new(&body, 1 << 20)).unwrap();
        assert_eq!(
            req,
            Request::Create(CreateRequest {
                opcode: opcode::CREATE,
                path: "/a".into(),
                data: Some(b"hi".to_vec().into()),
                acl: vec![Acl {
                    perms: 31,
                    id: Id::new("world", "anyone")
                }]
                .into(),
                flags: 1,
                ttl: -1,
            })
        );
    }

    #[test]
    fn multi_decodes_until_the_done_header() {
        let mut body = Vec::new();
        encode_multi_header(opcode::CHECK, false, -1, &mut body);
        body.put_ustring("/a");
        body.put_i32(3);
        encode_multi_header(opcode::DELETE, false, -1, &mut body);
        body.put_ustring("/b");
        body.put_i32(-1);
        encode_multi_header(-1, true, -1, &mut body);
        let req = Request::decode(opcode::MULTI, &mut Reader::new(&body, 1 << 20)).unwrap();
        assert_eq!(
            req,
            Request::Multi(vec![
                Request::Check {
                    path: "/a".into(),
                    version: 3
                },
                Request::Delete {
                    path: "/b".into(),
                    version: -1
                },
            ])
        );
    }

    #[test]
    fn multi_with_a_read_op_is_rejected() {
        let mut body = Vec::new();
        encode_multi_header(opcode::GET_DATA, false, -1, &mut body);
        body.put_ustring("/a");
        body.put_bool(false);
        encode_multi_header(-1, true, -1, &mut body);
        assert_eq!(
            Request::decode(opcode::MULTI, &mut Reader::new(&body, 1 << 20)),
            Err(RequestError::BadMulti)
        );
    }

    #[test]
    fn top_level_check_and_unknown_opcodes_are_unimplemented() {
        let body = Vec::new();
        assert_eq!(
            Request::decode(opcode::CHECK, &mut Reader::new(&body, 10)),
            Err(RequestError::UnknownOpcode(opcode::CHECK))
        );
        assert_eq!(
            Request::decode(999, &mut Reader::new(&body, 10)),
            Err(RequestError::UnknownOpcode(999))
        );
    }

    #[test]
    fn truncated_request_is_malformed() {
        let mut body = Vec::new();
        body.put_ustring("/abc");
        assert!(matches!(
            Request::decode(opcode::GET_DATA, &mut Reader::new(&body, 100)),
            Err(RequestError::Malformed(DecodeError::Truncated { .. }))
        ));
    }
}
