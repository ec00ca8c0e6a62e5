//! The ZooKeeper client wire protocol, as much of it as the load generator speaks: frame and
//! record encoding of requests, decoding of replies, opcodes and error codes. Independent of
//! the `zoo` crate so it can load any ZooKeeper-protocol server.
//!
//! Every frame is `int32 len` + payload; integers are big-endian; strings and buffers carry an
//! `int32` length (−1 = null).

use std::fmt;

pub mod opcode {
    pub const CREATE: i32 = 1;
    pub const DELETE: i32 = 2;
    pub const EXISTS: i32 = 3;
    pub const GET_DATA: i32 = 4;
    pub const SET_DATA: i32 = 5;
    pub const GET_CHILDREN: i32 = 8;
    pub const PING: i32 = 11;
    pub const CHECK: i32 = 13;
    pub const MULTI: i32 = 14;
    pub const CLOSE_SESSION: i32 = -11;
    pub const ERROR: i32 = -1;
}

pub mod xid {
    pub const NOTIFICATION: i32 = -1;
    pub const PING: i32 = -2;
}

pub mod flags {
    pub const PERSISTENT: i32 = 0;
    pub const EPHEMERAL: i32 = 1;
    pub const SEQUENTIAL: i32 = 2;
    pub const EPHEMERAL_SEQUENTIAL: i32 = 3;
}

pub mod code {
    pub const OK: i32 = 0;
    pub const CONNECTION_LOSS: i32 = -4;
    pub const MARSHALLING_ERROR: i32 = -5;
    pub const OPERATION_TIMEOUT: i32 = -7;
    pub const NO_NODE: i32 = -101;
    pub const NODE_EXISTS: i32 = -110;
}

/// Name of a ZooKeeper error code (KeeperException.Code).
pub fn error_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        -1 => "SYSTEMERROR",
        -2 => "RUNTIMEINCONSISTENCY",
        -3 => "DATAINCONSISTENCY",
        -4 => "CONNECTIONLOSS",
        -5 => "MARSHALLINGERROR",
        -6 => "UNIMPLEMENTED",
        -7 => "OPERATIONTIMEOUT",
        -8 => "BADARGUMENTS",
        -12 => "UNKNOWNSESSION",
        -13 => "NEWCONFIGNOQUORUM",
        -14 => "RECONFIGINPROGRESS",
        -100 => "APIERROR",
        -101 => "NONODE",
        -102 => "NOAUTH",
        -103 => "BADVERSION",
        -108 => "NOCHILDRENFOREPHEMERALS",
        -110 => "NODEEXISTS",
        -111 => "NOTEMPTY",
        -112 => "SESSIONEXPIRED",
        -113 => "INVALIDCALLBACK",
        -114 => "INVALIDACL",
        -115 => "AUTHFAILED",
        -118 => "SESSIONMOVED",
        -119 => "NOTREADONLY",
        -120 => "EPHEMERALONLOCALSESSION",
        -121 => "NOWATCHER",
        -122 => "REQUESTTIMEOUT",
        -123 => "RECONFIGDISABLED",
        -124 => "SESSIONCLOSEDREQUIRESASLAUTH",
        -125 => "QUOTAEXCEEDED",
        -127 => "THROTTLEDOP",
        _ => "UNKNOWN",
    }
}

/// The label errors are counted under: `NONODE (-101)`.
pub fn error_label(code: i32) -> String {
    format!("{} ({code})", error_name(code))
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Starts a frame in `buf`; returns where its length prefix is, for [`end_frame`].
pub fn begin_frame(buf: &mut Vec<u8>) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    at
}

/// Writes the length prefix of the frame begun at `at`.
pub fn end_frame(buf: &mut [u8], at: usize) {
    let len = (buf.len() - at - 4) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn put_i32(buf: &mut Vec<u8>, v: i32) {
    buf.extend_from_slice(&v.to_be_bytes());
}

pub fn put_i64(buf: &mut Vec<u8>, v: i64) {
    buf.extend_from_slice(&v.to_be_bytes());
}

pub fn put_bool(buf: &mut Vec<u8>, v: bool) {
    buf.push(v as u8);
}

pub fn put_bytes(buf: &mut Vec<u8>, v: &[u8]) {
    put_i32(buf, v.len() as i32);
    buf.extend_from_slice(v);
}

pub fn put_str(buf: &mut Vec<u8>, v: &str) {
    put_bytes(buf, v.as_bytes());
}

/// `vector<ACL>` holding the one ACL `world:anyone` with all permissions (OPEN_ACL_UNSAFE).
fn put_open_acl(buf: &mut Vec<u8>) {
    put_i32(buf, 1);
    put_i32(buf, 31);
    put_str(buf, "world");
    put_str(buf, "anyone");
}

/// ConnectRequest for a new session (with the trailing readOnly byte, as 3.4+ clients send).
pub fn connect_request(buf: &mut Vec<u8>, timeout_ms: i32) {
    let at = begin_frame(buf);
    put_i32(buf, 0); // protocolVersion
    put_i64(buf, 0); // lastZxidSeen
    put_i32(buf, timeout_ms);
    put_i64(buf, 0); // sessionId
    put_bytes(buf, &[0; 16]);
    put_bool(buf, false);
    end_frame(buf, at);
}

fn header(buf: &mut Vec<u8>, xid: i32, op: i32) -> usize {
    let at = begin_frame(buf);
    put_i32(buf, xid);
    put_i32(buf, op);
    at
}

/// getData / exists / getChildren share the `{path, watch}` layout.
fn path_watch(buf: &mut Vec<u8>, xid: i32, op: i32, path: &str, watch: bool) {
    let at = header(buf, xid, op);
    put_str(buf, path);
    put_bool(buf, watch);
    end_frame(buf, at);
}

pub fn get_data(buf: &mut Vec<u8>, xid: i32, path: &str, watch: bool) {
    path_watch(buf, xid, opcode::GET_DATA, path, watch);
}

pub fn exists(buf: &mut Vec<u8>, xid: i32, path: &str, watch: bool) {
    path_watch(buf, xid, opcode::EXISTS, path, watch);
}

pub fn get_children(buf: &mut Vec<u8>, xid: i32, path: &str, watch: bool) {
    path_watch(buf, xid, opcode::GET_CHILDREN, path, watch);
}

fn set_data_record(buf: &mut Vec<u8>, path: &str, data: &[u8], version: i32) {
    put_str(buf, path);
    put_bytes(buf, data);
    put_i32(buf, version);
}

pub fn set_data(buf: &mut Vec<u8>, xid: i32, path: &str, data: &[u8], version: i32) {
    let at = header(buf, xid, opcode::SET_DATA);
    set_data_record(buf, path, data, version);
    end_frame(buf, at);
}

pub fn create(buf: &mut Vec<u8>, xid: i32, path: &str, data: &[u8], flags: i32) {
    let at = header(buf, xid, opcode::CREATE);
    put_str(buf, path);
    put_bytes(buf, data);
    put_open_acl(buf);
    put_i32(buf, flags);
    end_frame(buf, at);
}

pub fn delete(buf: &mut Vec<u8>, xid: i32, path: &str, version: i32) {
    let at = header(buf, xid, opcode::DELETE);
    put_str(buf, path);
    put_i32(buf, version);
    end_frame(buf, at);
}

/// A multi of setData(path, data, any version) on each of `paths`.
pub fn multi_set_data<'a>(
    buf: &mut Vec<u8>,
    xid: i32,
    paths: impl Iterator<Item = &'a str>,
    data: &[u8],
) {
    let at = header(buf, xid, opcode::MULTI);
    for path in paths {
        put_i32(buf, opcode::SET_DATA);
        put_bool(buf, false);
        put_i32(buf, -1);
        set_data_record(buf, path, data, -1);
    }
    put_i32(buf, -1);
    put_bool(buf, true);
    put_i32(buf, -1);
    end_frame(buf, at);
}

pub fn close_session(buf: &mut Vec<u8>, xid: i32) {
    let at = header(buf, xid, opcode::CLOSE_SESSION);
    end_frame(buf, at);
}

// ---------------------------------------------------------------------------------------------
// Decoding

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed record: {}", self.0)
    }
}

/// Reads records from a byte slice; every length is checked against the bytes left.
pub struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Cursor<'a> {
        Cursor { data, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError(format!(
                "needs {n} bytes at offset {}, {} left",
                self.pos,
                self.remaining()
            )));
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        Ok(self.take(1)?[0] != 0)
    }

    /// A `buffer`; null (−1) reads as empty.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(&[]);
        }
        self.take(len as usize)
    }

    pub fn string(&mut self) -> Result<String, DecodeError> {
        let b = self.bytes()?;
        Ok(String::from_utf8_lossy(b).into_owned())
    }

    /// Skips a Stat (68 bytes).
    pub fn skip_stat(&mut self) -> Result<(), DecodeError> {
        self.take(STAT_BYTES).map(|_| ())
    }
}

pub const STAT_BYTES: usize = 68;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyHeader {
    pub xid: i32,
    pub zxid: i64,
    pub err: i32,
}

impl ReplyHeader {
    pub fn decode(c: &mut Cursor<'_>) -> Result<ReplyHeader, DecodeError> {
        Ok(ReplyHeader {
            xid: c.i32()?,
            zxid: c.i64()?,
            err: c.i32()?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectResponse {
    pub timeout_ms: i32,
    pub session_id: i64,
}

impl ConnectResponse {
    pub fn decode(frame: &[u8]) -> Result<ConnectResponse, DecodeError> {
        let mut c = Cursor::new(frame);
        let _protocol_version = c.i32()?;
        let timeout_ms = c.i32()?;
        let session_id = c.i64()?;
        let _passwd = c.bytes()?;
        Ok(ConnectResponse {
            timeout_ms,
            session_id,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatcherEvent {
    pub event_type: i32,
    pub state: i32,
    pub path: String,
}

impl WatcherEvent {
    pub fn decode(c: &mut Cursor<'_>) -> Result<WatcherEvent, DecodeError> {
        Ok(WatcherEvent {
            event_type: c.i32()?,
            state: c.i32()?,
            path: c.string()?,
        })
    }
}

/// The first non-zero error among a MultiResponse's results (0 when all succeeded). A multi's
/// top-level error stays 0 when one of its ops fails, so the results must be read.
pub fn multi_first_error(c: &mut Cursor<'_>) -> Result<i32, DecodeError> {
    let mut results = 0usize;
    loop {
        let op = c.i32()?;
        let done = c.bool()?;
        let err = c.i32()?;
        if done {
            return Ok(0);
        }
        results += 1;
        if results > crate::limits::MULTI_SIZE_MAX as usize {
            return Err(DecodeError("multi response has too many results".into()));
        }
        match op {
            opcode::ERROR => {
                let code = c.i32()?;
                if code != 0 {
                    return Ok(code);
                }
            }
            opcode::CREATE => {
                c.string()?;
            }
            opcode::SET_DATA => c.skip_stat()?,
            15 => {
                c.string()?;
                c.skip_stat()?;
            }
            opcode::DELETE | opcode::CHECK => {}
            other => {
                return Err(DecodeError(format!("unexpected multi result type {other}")));
            }
        }
        if err != 0 {
            return Ok(err);
        }
    }
}

/// `vector<ustring>` of a GetChildrenResponse.
pub fn children(c: &mut Cursor<'_>) -> Result<Vec<String>, DecodeError> {
    let count = c.i32()?;
    if count < 0 {
        return Ok(Vec::new());
    }
    // Each entry takes at least 4 bytes: bound the allocation by what is there.
    if count as usize > c.remaining() / 4 {
        return Err(DecodeError(format!(
            "{count} children in {} bytes",
            c.remaining()
        )));
    }
    (0..count).map(|_| c.string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_length_prefix_counts_the_payload() {
        let mut buf = Vec::new();
        get_data(&mut buf, 7, "/a", true);
        let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        assert_eq!(len, buf.len() - 4);
        let mut c = Cursor::new(&buf[4..]);
        assert_eq!(c.i32().unwrap(), 7);
        assert_eq!(c.i32().unwrap(), opcode::GET_DATA);
        assert_eq!(c.string().unwrap(), "/a");
        assert!(c.bool().unwrap());
        assert_eq!(c.remaining(), 0);
    }

    #[test]
    fn multi_response_reports_the_failing_op() {
        let mut body = Vec::new();
        // op 1: error result with code 0 (it was fine), op 2: the failure
        put_i32(&mut body, opcode::ERROR);
        put_bool(&mut body, false);
        put_i32(&mut body, 0);
        put_i32(&mut body, 0);
        put_i32(&mut body, opcode::ERROR);
        put_bool(&mut body, false);
        put_i32(&mut body, -101);
        put_i32(&mut body, -101);
        put_i32(&mut body, -1);
        put_bool(&mut body, true);
        put_i32(&mut body, -1);
        assert_eq!(multi_first_error(&mut Cursor::new(&body)).unwrap(), -101);
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        let mut c = Cursor::new(&[0, 0, 0, 9, 1]);
        assert!(c.bytes().is_err());
        let mut c = Cursor::new(&[0x7f, 0xff, 0xff, 0xff]);
        assert!(children(&mut c).is_err());
    }
}
