//! Server-to-server messages and their transport (docs/FORMAT.md, "Peer messages").
//!
//! Each server dials every other server on its quorum port and only writes on the connection
//! it dialled; it reads from the connections others dialled to it. A connection starts with a
//! hello frame naming the sender. Frames are `u32 length | body`. A full outgoing queue drops
//! the frame: replication recovers from loss by retrying (docs/ARCHITECTURE.md R9), and a
//! forwarded request that is lost costs its client a reconnect, never a wrong answer.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::AsyncWriteExt;
use glommio::channels::local_channel::{LocalReceiver, LocalSender};
use glommio::net::{TcpListener, TcpStream};

use crate::consensus::{self, Message};
use crate::core::commit::WriteReply;
use crate::jute::records::Id;
use crate::jute::{DecodeError, DecodeResult, Reader, Writer};
use crate::server::frame_reader::{Frame, FrameReader};
use crate::server::limits::{PEER_FRAME_BYTES_MAX, PEER_READ_CHUNK_BYTES, PEER_RECONNECT_MS};
use crate::server::messages::ToCommit;

const HELLO_MAGIC: &[u8; 8] = b"ZOOPEER1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMessage {
    Raft(Message),
    /// A follower passes a client's write to the leader. `frame` is the request as the client
    /// sent it (xid, opcode, body). `connection` names the client connection on the follower,
    /// `seq` numbers its forwarded writes from 1, and `oldest` is the seq of its oldest write
    /// still unanswered: the leader accepts only an unbroken sequence, so a lost forward can
    /// never let a later write of the same client commit without it (FIFO, R10).
    ForwardWrite {
        request: u64,
        session_id: i64,
        connection: u64,
        seq: u64,
        oldest: u64,
        auth: Vec<Id>,
        frame: Vec<u8>,
    },
    /// A follower asks the leader to create a session for a new client.
    ForwardConnect {
        request: u64,
        timeout_ms: i32,
        password: [u8; 16],
    },
    /// Sessions with recent traffic on the sender (the leader expires sessions).
    Touch {
        sessions: Vec<i64>,
    },
    /// The leader's answer to a forwarded write: release it once the state at `ready_at` is
    /// applied on the follower.
    WriteDone {
        request: u64,
        ready_at: i64,
        reply: WriteReply,
    },
    /// One piece of a catch-up snapshot (a replication `Snapshot` message, sent in pieces so
    /// that no frame is huge and the receiver can report progress).
    SnapshotChunk {
        term: u64,
        zxid: i64,
        offset: u64,
        total: u64,
        data: Vec<u8>,
    },
    /// The leader's answer to a forwarded connect (`session_id` 0: refused).
    ConnectDone {
        request: u64,
        ready_at: i64,
        session_id: i64,
        timeout_ms: i32,
        password: [u8; 16],
    },
}

const RAFT: u8 = 1;
const FORWARD_WRITE: u8 = 2;
const FORWARD_CONNECT: u8 = 3;
const TOUCH: u8 = 4;
const WRITE_DONE: u8 = 5;
const CONNECT_DONE: u8 = 6;
const SNAPSHOT_CHUNK: u8 = 7;

impl PeerMessage {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            PeerMessage::Raft(m) => {
                out.put_u8(RAFT);
                consensus::encode_message(m, out);
            }
            PeerMessage::ForwardWrite {
                request,
                session_id,
                connection,
                seq,
                oldest,
                auth,
                frame,
            } => {
                out.put_u8(FORWARD_WRITE);
                out.put_i64(*request as i64);
                out.put_i64(*session_id);
                out.put_i64(*connection as i64);
                out.put_i64(*seq as i64);
                out.put_i64(*oldest as i64);
                out.put_i32(auth.len() as i32);
                for id in auth {
                    out.put_ustring(&id.scheme);
                    out.put_ustring(&id.id);
                }
                out.put_buffer(frame);
            }
            PeerMessage::ForwardConnect {
                request,
                timeout_ms,
                password,
            } => {
                out.put_u8(FORWARD_CONNECT);
                out.put_i64(*request as i64);
                out.put_i32(*timeout_ms);
                out.put_buffer(password);
            }
            PeerMessage::Touch { sessions } => {
                out.put_u8(TOUCH);
                out.put_i32(sessions.len() as i32);
                for s in sessions {
                    out.put_i64(*s);
                }
            }
            PeerMessage::WriteDone {
                request,
                ready_at,
                reply,
            } => {
                out.put_u8(WRITE_DONE);
                out.put_i64(*request as i64);
                out.put_i64(*ready_at);
                out.put_i32(reply.xid);
                out.put_i64(reply.zxid);
                out.put_i32(reply.err);
                out.put_buffer(&reply.body);
                out.put_bool(reply.close_connection);
            }
            PeerMessage::SnapshotChunk {
                term,
                zxid,
                offset,
                total,
                data,
            } => {
                out.put_u8(SNAPSHOT_CHUNK);
                out.put_i64(*term as i64);
                out.put_i64(*zxid);
                out.put_i64(*offset as i64);
                out.put_i64(*total as i64);
                out.put_buffer(data);
            }
            PeerMessage::ConnectDone {
                request,
                ready_at,
                session_id,
                timeout_ms,
                password,
            } => {
                out.put_u8(CONNECT_DONE);
                out.put_i64(*request as i64);
                out.put_i64(*ready_at);
                out.put_i64(*session_id);
                out.put_i32(*timeout_ms);
                out.put_buffer(password);
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> DecodeResult<PeerMessage> {
        let mut r = Reader::new(bytes, PEER_FRAME_BYTES_MAX);
        let password = |r: &mut Reader<'_>| -> DecodeResult<[u8; 16]> {
            r.read_buffer()?
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .ok_or(DecodeError::InvalidValue("password is not 16 bytes"))
        };
        let message = match r.read_u8()? {
            RAFT => return consensus::decode_message(&mut r).map(PeerMessage::Raft),
            FORWARD_WRITE => {
                let request = r.read_i64()? as u64;
                let session_id = r.read_i64()?;
                let connection = r.read_i64()? as u64;
                let seq = r.read_i64()? as u64;
                let oldest = r.read_i64()? as u64;
                let count = r.read_count(8)?;
                let mut auth = Vec::with_capacity(count);
                for _ in 0..count {
                    let scheme = r.read_ustring()?;
                    let id = r.read_ustring()?;
                    auth.push(Id { scheme, id });
                }
                PeerMessage::ForwardWrite {
                    request,
                    session_id,
                    connection,
                    seq,
                    oldest,
                    auth,
                    frame: r.read_buffer_vec()?,
                }
            }
            FORWARD_CONNECT => PeerMessage::ForwardConnect {
                request: r.read_i64()? as u64,
                timeout_ms: r.read_i32()?,
                password: password(&mut r)?,
            },
            TOUCH => {
                let count = r.read_count(8)?;
                let mut sessions = Vec::with_capacity(count);
                for _ in 0..count {
                    sessions.push(r.read_i64()?);
                }
                PeerMessage::Touch { sessions }
            }
            WRITE_DONE => PeerMessage::WriteDone {
                request: r.read_i64()? as u64,
                ready_at: r.read_i64()?,
                reply: WriteReply {
                    xid: r.read_i32()?,
                    zxid: r.read_i64()?,
                    err: r.read_i32()?,
                    body: r.read_buffer_vec()?,
                    close_connection: r.read_bool()?,
                },
            },
            SNAPSHOT_CHUNK => {
                let number = |r: &mut Reader<'_>| -> DecodeResult<u64> {
                    let v = r.read_i64()?;
                    u64::try_from(v).map_err(|_| DecodeError::InvalidValue("negative field"))
                };
                let term = number(&mut r)?;
                let zxid = r.read_i64()?;
                let offset = number(&mut r)?;
                let total = number(&mut r)?;
                let data = r.read_buffer_vec()?;
                if offset
                    .checked_add(data.len() as u64)
                    .is_none_or(|end| end > total)
                {
                    return Err(DecodeError::InvalidValue("snapshot chunk past its total"));
                }
                PeerMessage::SnapshotChunk {
                    term,
                    zxid,
                    offset,
                    total,
                    data,
                }
            }
            CONNECT_DONE => PeerMessage::ConnectDone {
                request: r.read_i64()? as u64,
                ready_at: r.read_i64()?,
                session_id: r.read_i64()?,
                timeout_ms: r.read_i32()?,
                password: password(&mut r)?,
            },
            _ => return Err(DecodeError::InvalidValue("unknown peer message")),
        };
        if !r.is_empty() {
            return Err(DecodeError::InvalidValue("trailing bytes in peer message"));
        }
        Ok(message)
    }

    /// The frame body for the wire.
    pub fn to_frame(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.encode(&mut out);
        out
    }
}

/// Accepts other servers' connections and feeds their messages into the commit inbox.
pub async fn listen(address: SocketAddr, inbox: Rc<LocalSender<ToCommit>>) {
    let listener = loop {
        match TcpListener::bind(address) {
            Ok(l) => break l,
            Err(e) => {
                eprintln!("zoo: cannot listen for servers on {address}: {e}; retrying");
                glommio::timer::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(read_peer(stream, inbox.clone())).detach();
            }
            Err(e) => {
                eprintln!("zoo: accepting a server connection failed: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn read_peer(mut stream: TcpStream, inbox: Rc<LocalSender<ToCommit>>) {
    let _ = stream.set_nodelay(true);
    let mut frames = FrameReader::new(PEER_FRAME_BYTES_MAX, PEER_READ_CHUNK_BYTES);
    // Named by the hello frame, which comes first.
    let mut from: Option<i64> = None;
    loop {
        let range = match frames.next_frame() {
            Frame::Complete(a, b) => (a, b),
            Frame::NeedMore => {
                if frames.fill(&mut stream).await.unwrap_or(false) {
                    continue;
                }
                break;
            }
            Frame::BadLength => {
                eprintln!(
                    "zoo: a frame over {PEER_FRAME_BYTES_MAX} bytes from server {}; dropping the connection",
                    from.map_or("?".to_owned(), |f| f.to_string())
                );
                break;
            }
        };
        let body = frames.frame(range);
        let Some(from) = from else {
            if body.len() != 16 || &body[..8] != HELLO_MAGIC {
                return;
            }
            from = Some(i64::from_be_bytes(body[8..16].try_into().expect("8 bytes")));
            continue;
        };
        match PeerMessage::decode(body) {
            Ok(message) => {
                if inbox.send(ToCommit::Peer { from, message }).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                eprintln!(
                    "zoo: undecodable message from server {from}: {e}; dropping the connection"
                );
                break;
            }
        }
    }
    if let Some(from) = from {
        let _ = inbox.send(ToCommit::PeerLost { from }).await;
    }
}

/// Keeps a connection to `peer` open and writes the frames queued for it, several per write.
pub async fn dial(me: i64, peer: i64, address: SocketAddr, frames: LocalReceiver<Arc<Vec<u8>>>) {
    let mut hello = Vec::with_capacity(20);
    hello.extend_from_slice(&16u32.to_be_bytes());
    hello.extend_from_slice(HELLO_MAGIC);
    hello.extend_from_slice(&me.to_be_bytes());
    let mut out = Vec::new();
    'connect: loop {
        let mut stream = match TcpStream::connect(address).await {
            Ok(s) => s,
            Err(_) => {
                // Unreachable: what is queued for it would only go stale (replication resends
                // from where the peer is when it comes back), so it is dropped, not hoarded.
                // Once the server no longer wants this peer (its sender is gone), stop.
                loop {
                    match futures_lite::future::poll_once(frames.recv()).await {
                        Some(Some(_)) => {}
                        Some(None) => return,
                        None => break,
                    }
                }
                glommio::timer::sleep(Duration::from_millis(PEER_RECONNECT_MS)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if stream.write_all(&hello).await.is_err() {
            continue;
        }
        loop {
            let Some(first) = frames.recv().await else {
                return;
            };
            out.clear();
            out.extend_from_slice(&(first.len() as u32).to_be_bytes());
            out.extend_from_slice(&first);
            while out.len() < 1 << 20 {
                match futures_lite::future::poll_once(frames.recv()).await {
                    Some(Some(frame)) => {
                        out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
                        out.extend_from_slice(&frame);
                    }
                    _ => break,
                }
            }
            if stream.write_all(&out).await.is_err() || stream.flush().await.is_err() {
                eprintln!("zoo: connection to server {peer} broke; reconnecting");
                continue 'connect;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_messages_round_trip_and_truncations_are_errors() {
        let messages = vec![
            PeerMessage::ForwardWrite {
                request: 9,
                session_id: 77,
                connection: 3,
                seq: 12,
                oldest: 11,
                auth: vec![Id::new("digest", "u:x")],
                frame: vec![0, 0, 0, 1, 0, 0, 0, 5],
            },
            PeerMessage::ForwardConnect {
                request: 1,
                timeout_ms: 4000,
                password: [7; 16],
            },
            PeerMessage::Touch {
                sessions: vec![1, 2, 3],
            },
            PeerMessage::WriteDone {
                request: 3,
                ready_at: 0x1_0000_0004,
                reply: WriteReply {
                    xid: 5,
                    zxid: 0x1_0000_0004,
                    err: -110,
                    body: vec![1, 2],
                    close_connection: false,
                },
            },
            PeerMessage::ConnectDone {
                request: 4,
                ready_at: 8,
                session_id: 1 << 56,
                timeout_ms: 6000,
                password: [1; 16],
            },
            PeerMessage::Raft(Message::VoteReply {
                term: 3,
                granted: true,
            }),
            PeerMessage::SnapshotChunk {
                term: 3,
                zxid: 0x3_0000_0009,
                offset: 4,
                total: 10,
                data: vec![9; 6],
            },
        ];
        for m in messages {
            let bytes = m.to_frame();
            assert_eq!(PeerMessage::decode(&bytes).unwrap(), m);
            for cut in 0..bytes.len() {
                assert!(
                    PeerMessage::decode(&bytes[..cut]).is_err(),
                    "{m:?} cut at {cut}"
                );
            }
        }
    }
}
