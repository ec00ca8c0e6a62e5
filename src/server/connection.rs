//! One client connection on a shard: framing, the handshake, per-session request order, and the
//! output queue. Replies leave strictly in request order (rule R1): a read that arrives while an
//! earlier write of the same session is in the commit path waits behind it, as in ZooKeeper's
//! CommitProcessor, so a session always reads its own writes.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use futures_lite::future;
use futures_lite::io::AsyncWriteExt;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;

use crate::core::acl;
use crate::core::commit::{WriteReply, WriteRequest};
use crate::core::read;
use crate::core::sessions::ConnectionRef;
use crate::core::watches::WatchKind;
use crate::error::ZkError;
use crate::jute::Reader;
use crate::jute::records::{
    ConnectRequest, ConnectResponse, EventType, Id, ReplyHeader, Request, RequestError,
    WatcherType, encode_watcher_event, opcode, xid,
};
use crate::server::four_letter;
use crate::server::frame_reader::{Frame, FrameReader};
use crate::server::limits::{
    CONNECTION_OUTPUT_BYTES_MAX, CONNECTION_READ_CHUNK_BYTES, HANDSHAKE_TIMEOUT_MS,
    OUTSTANDING_PER_CONNECTION_MAX,
};
use crate::server::messages::{ConnectAttempt, ConnectResult, ToCommit};
use crate::server::shard::{Shard, frame_finish, frame_start};
use crate::server::stats::ConnectionInfo;
use crate::server::wall_clock_ms;

/// A wake-up flag between tasks of one executor: `notify` never blocks, `wait` returns once
/// after any number of notifies.
struct Signal {
    tx: LocalSender<()>,
    rx: LocalReceiver<()>,
}

impl Signal {
    fn new() -> Signal {
        let (tx, rx) = local_channel::new_bounded(1);
        Signal { tx, rx }
    }
    fn notify(&self) {
        let _ = self.tx.try_send(());
    }
    async fn wait(&self) {
        let _ = self.rx.recv().await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    Open,
    /// Flush what is queued, then close (after closeSession, UNIMPLEMENTED, AUTHFAILED).
    FlushThenClose,
    /// Close without flushing (expired, moved, overflow, I/O error).
    Closed,
}

enum Pending {
    /// A write (or sync) in the commit path.
    AwaitingCommit { xid: i32, started: Instant },
    /// A write's reply, held until the requests before it have been answered.
    Answered { reply: WriteReply, started: Instant },
    /// A local request that arrived behind a pending write.
    Queued {
        xid: i32,
        request: Request,
        started: Instant,
    },
}

struct State {
    session_id: i64,
    timeout_ms: i32,
    auth: Arc<Vec<Id>>,
    pending: VecDeque<Pending>,
    received: u64,
    sent: u64,
    last_zxid: i64,
}

pub struct Connection {
    pub id: u64,
    pub peer: SocketAddr,
    shard: Rc<Shard>,
    state: RefCell<State>,
    output: RefCell<Vec<u8>>,
    output_signal: Signal,
    resume_signal: Signal,
    connect_result: RefCell<Option<ConnectResult>>,
    connect_signal: Signal,
    close_signal: Signal,
    lifecycle: Cell<Lifecycle>,
    established_ms: i64,
}

/// What the reader must do after a frame.
enum Next {
    Continue,
    Forward(ToCommit),
    Stop,
}

impl Connection {
    fn new(id: u64, peer: SocketAddr, shard: Rc<Shard>) -> Connection {
        let ip = Id::new("ip", &peer.ip().to_canonical().to_string());
        Connection {
            id,
            peer,
            shard,
            state: RefCell::new(State {
                session_id: 0,
                timeout_ms: 0,
                auth: Arc::new(vec![ip]),
                pending: VecDeque::new(),
                received: 0,
                sent: 0,
                last_zxid: 0,
            }),
            output: RefCell::new(Vec::new()),
            output_signal: Signal::new(),
            resume_signal: Signal::new(),
            connect_result: RefCell::new(None),
            connect_signal: Signal::new(),
            close_signal: Signal::new(),
            lifecycle: Cell::new(Lifecycle::Open),
            established_ms: wall_clock_ms(),
        }
    }

    pub fn session_id(&self) -> i64 {
        self.state.borrow().session_id
    }

    pub fn auth(&self) -> Arc<Vec<Id>> {
        self.state.borrow().auth.clone()
    }

    pub fn info(&self) -> ConnectionInfo {
        let s = self.state.borrow();
        ConnectionInfo {
            peer: self.peer.to_string(),
            session_id: s.session_id,
            timeout_ms: s.timeout_ms,
            queued: s.pending.len(),
            received: s.received,
            sent: s.sent,
            last_zxid: s.last_zxid,
            established_ms: self.established_ms,
        }
    }

    fn connection_ref(&self) -> ConnectionRef {
        ConnectionRef {
            shard: self.shard.index,
            connection_id: self.id,
        }
    }

    /// Queues one complete frame for the writer.
    pub fn push_frame(&self, frame: &[u8]) {
        if self.lifecycle.get() == Lifecycle::Closed {
            return;
        }
        let overflow = {
            let mut output = self.output.borrow_mut();
            output.extend_from_slice(frame);
            output.len() > CONNECTION_OUTPUT_BYTES_MAX
        };
        self.state.borrow_mut().sent += 1;
        self.shard.my_stats().packets_sent.fetch_add(1, Relaxed);
        if overflow {
            self.close_now();
        } else {
            self.output_signal.notify();
        }
    }

    fn push_reply(&self, xid: i32, zxid: i64, result: Result<&[u8], ZkError>) {
        let body: &[u8] = match result {
            Ok(body) => body,
            Err(_) => &[],
        };
        let mut frame = Vec::with_capacity(4 + ReplyHeader::BYTES + body.len());
        frame_start(&mut frame);
        let err = result.err().map(ZkError::code).unwrap_or(0);
        ReplyHeader { xid, zxid, err }.encode(&mut frame);
        frame.extend_from_slice(body);
        frame_finish(&mut frame);
        self.state.borrow_mut().last_zxid = zxid;
        self.push_frame(&frame);
    }

    fn push_notification(&self, event: EventType, path: &str, zxid: i64) {
        let mut frame = Vec::with_capacity(64 + path.len());
        frame_start(&mut frame);
        ReplyHeader {
            xid: xid::NOTIFICATION,
            zxid,
            err: 0,
        }
        .encode(&mut frame);
        encode_watcher_event(event, path, &mut frame);
        frame_finish(&mut frame);
        self.push_frame(&frame);
    }

    pub fn close_now(&self) {
        self.lifecycle.set(Lifecycle::Closed);
        self.output_signal.notify();
        self.close_signal.notify();
        self.resume_signal.notify();
        self.connect_signal.notify();
    }

    pub fn close_after_flush(&self) {
        if self.lifecycle.get() == Lifecycle::Open {
            self.lifecycle.set(Lifecycle::FlushThenClose);
        }
        self.output_signal.notify();
        self.resume_signal.notify();
    }

    pub fn on_connect_result(&self, result: ConnectResult) {
        *self.connect_result.borrow_mut() = Some(result);
        self.connect_signal.notify();
    }

    /// A reply decided on arrival (a malformed multi's error) that must still leave after
    /// the replies of the requests before it (R1).
    fn reply_in_order(&self, reply: WriteReply) {
        self.shard.my_stats().outstanding.fetch_add(1, Relaxed);
        self.state
            .borrow_mut()
            .pending
            .push_back(Pending::Answered {
                reply,
                started: Instant::now(),
            });
        self.run_queued();
    }

    /// The commit executor answered this connection's oldest write. Its reply goes out after
    /// every request before it (R1), held as `Answered` while any is still waiting.
    pub fn on_write_reply(&self, reply: WriteReply) {
        {
            let mut state = self.state.borrow_mut();
            let slot = state
                .pending
                .iter_mut()
                .find(|p| matches!(p, Pending::AwaitingCommit { .. }))
                .expect("a write reply arrived for a connection with no write pending");
            let Pending::AwaitingCommit { xid, started } = *slot else {
                unreachable!("found above")
            };
            assert_eq!(xid, reply.xid, "write replies arrive in request order");
            *slot = Pending::Answered { reply, started };
        }
        self.run_queued();
    }

    fn record_latency(&self, started: Instant) {
        self.shard
            .my_stats()
            .record_latency(started.elapsed().as_micros() as u64);
    }

    /// Sends, in request order, the answered writes and the local requests at the front of
    /// the queue, up to the first write still in the commit path; a local request waits while
    /// the shard's tree is behind (rule R8).
    pub fn run_queued(&self) {
        loop {
            let next = {
                let mut state = self.state.borrow_mut();
                match state.pending.front() {
                    Some(Pending::Queued { .. }) if self.shard.is_behind() => {
                        drop(state);
                        self.shard.wait_for_tree(self.id);
                        break;
                    }
                    Some(Pending::Queued { .. } | Pending::Answered { .. }) => {
                        state.pending.pop_front()
                    }
                    _ => None,
                }
            };
            let Some(next) = next else {
                break;
            };
            self.shard.my_stats().outstanding.fetch_sub(1, Relaxed);
            match next {
                Pending::Queued {
                    xid,
                    request,
                    started,
                } => {
                    self.execute_local(xid, &request);
                    self.record_latency(started);
                }
                Pending::Answered { reply, started } => {
                    self.record_latency(started);
                    let result = if reply.err == 0 {
                        Ok(&reply.body[..])
                    } else {
                        Err(ZkError::from_code(reply.err).unwrap_or(ZkError::SystemError))
                    };
                    self.push_reply(reply.xid, reply.zxid, result);
                    if reply.close_connection {
                        self.close_after_flush();
                        return;
                    }
                }
                Pending::AwaitingCommit { .. } => unreachable!("not taken from the queue"),
            }
            if self.lifecycle.get() != Lifecycle::Open {
                break;
            }
        }
        self.resume_signal.notify();
        self.shard.wake_next_reader();
    }

    /// Serves a request that does not go through the commit path.
    fn execute_local(&self, request_xid: i32, request: &Request) {
        let tree = self.shard.tree_for_read();
        let zxid = tree.last_zxid();
        let (session_id, auth) = {
            let s = self.state.borrow();
            (s.session_id, s.auth.clone())
        };
        match request {
            Request::SetWatches(set) => {
                let rel = set.relative_zxid;
                let mut watches = self.shard.watches.borrow_mut();
                for p in &set.data {
                    match tree.get(p) {
                        None => self.push_notification(EventType::NodeDeleted, p, zxid),
                        Some(n) if n.mzxid > rel => {
                            self.push_notification(EventType::NodeDataChanged, p, zxid)
                        }
                        Some(_) => watches.add(WatchKind::Data, p, self.id),
                    }
                }
                for p in &set.exist {
                    if tree.contains(p) {
                        self.push_notification(EventType::NodeCreated, p, zxid);
                    } else {
                        watches.add(WatchKind::Data, p, self.id);
                    }
                }
                for p in &set.child {
                    match tree.get(p) {
                        None => self.push_notification(EventType::NodeDeleted, p, zxid),
                        Some(n) if n.pzxid > rel => {
                            self.push_notification(EventType::NodeChildrenChanged, p, zxid)
                        }
                        Some(_) => watches.add(WatchKind::Child, p, self.id),
                    }
                }
                for p in &set.persistent {
                    watches.add(WatchKind::Persistent, p, self.id);
                }
                for p in &set.persistent_recursive {
                    watches.add(WatchKind::PersistentRecursive, p, self.id);
                }
                drop(watches);
                self.push_reply(xid::SET_WATCHES, zxid, Ok(&[]));
            }
            Request::AddWatch { path: p, mode } => {
                let kind = match mode {
                    0 => Some(WatchKind::Persistent),
                    1 => Some(WatchKind::PersistentRecursive),
                    _ => None,
                };
                let result = match (kind, crate::core::path::validate(p)) {
                    (Some(kind), Ok(())) => {
                        self.shard.watches.borrow_mut().add(kind, p, self.id);
                        Ok(())
                    }
                    (None, _) => Err(ZkError::BadArguments),
                    (_, Err(e)) => Err(e),
                };
                match result {
                    Ok(()) => self.push_reply(request_xid, zxid, Ok(&0i32.to_be_bytes())),
                    Err(e) => self.push_reply(request_xid, zxid, Err(e)),
                }
            }
            Request::CheckWatches {
                path: p,
                watcher_type,
            }
            | Request::RemoveWatches {
                path: p,
                watcher_type,
            } => {
                let remove = matches!(request, Request::RemoveWatches { .. });
                let result = match WatcherType::from_i32(*watcher_type) {
                    None => Err(ZkError::BadArguments),
                    Some(t) => {
                        let mut watches = self.shard.watches.borrow_mut();
                        let found = if remove {
                            watches.remove(p, self.id, t)
                        } else {
                            watches.contains(p, self.id, t)
                        };
                        if found {
                            Ok(())
                        } else {
                            Err(ZkError::NoWatcher)
                        }
                    }
                };
                self.push_reply(request_xid, zxid, result.map(|_| &[][..]));
            }
            Request::Sasl { .. } => {
                // No SASL mechanism is configured: the client is told authentication failed.
                self.push_reply(request_xid, zxid, Err(ZkError::AuthFailed));
                self.close_after_flush();
            }
            other => {
                let outcome = read::execute(&tree, other, &auth, session_id);
                if let Some((kind, p)) = outcome.watch {
                    self.shard.watches.borrow_mut().add(kind, &p, self.id);
                }
                match outcome.result {
                    Ok(body) => self.push_reply(request_xid, zxid, Ok(&body)),
                    Err(e) => self.push_reply(request_xid, zxid, Err(e)),
                }
            }
        }
    }

    /// `addauth`: applied at once, before any later request is forwarded.
    fn authenticate(&self, scheme: &str, auth: &[u8]) -> Result<(), ZkError> {
        match scheme {
            "digest" => {
                let text = std::str::from_utf8(auth).map_err(|_| ZkError::AuthFailed)?;
                if !text.contains(':') {
                    return Err(ZkError::AuthFailed);
                }
                let id = acl::digest_id(text);
                let is_super = self.shard.config.super_digest.as_deref() == Some(id.as_str());
                let mut state = self.state.borrow_mut();
                let ids = Arc::make_mut(&mut state.auth);
                let digest = Id::new("digest", &id);
                if !ids.contains(&digest) {
                    ids.push(digest);
                }
                if is_super && !ids.iter().any(|i| i.scheme == "super") {
                    ids.push(Id::new("super", ""));
                }
                Ok(())
            }
            _ => Err(ZkError::AuthFailed),
        }
    }

    /// Handles one request frame after the handshake.
    fn on_frame(&self, frame: &[u8]) -> Next {
        let mut reader = Reader::new(frame, self.shard.config.jute_max_buffer * 2);
        let (request_xid, op) = match (reader.read_i32(), reader.read_i32()) {
            (Ok(x), Ok(o)) => (x, o),
            _ => return Next::Stop,
        };
        let stats = self.shard.my_stats();
        stats.packets_received.fetch_add(1, Relaxed);
        let session_id = {
            let mut s = self.state.borrow_mut();
            s.received += 1;
            s.session_id
        };
        self.shard.touch(session_id);
        let zxid = self.shard.last_zxid();
        if op == opcode::PING {
            self.push_reply(xid::PING, zxid, Ok(&[]));
            return Next::Continue;
        }
        let request = match Request::decode(op, &mut reader) {
            Ok(request) => request,
            Err(RequestError::UnknownOpcode(_)) => {
                self.push_reply(request_xid, zxid, Err(ZkError::Unimplemented));
                self.close_after_flush();
                return Next::Stop;
            }
            Err(RequestError::BadMulti) => {
                self.reply_in_order(WriteReply {
                    xid: request_xid,
                    zxid,
                    err: ZkError::MarshallingError.code(),
                    body: Vec::new(),
                    close_connection: false,
                });
                return Next::Continue;
            }
            Err(RequestError::Malformed(_)) => return Next::Stop,
        };
        if let Request::Auth { scheme, auth } = &request {
            return match self.authenticate(scheme, auth) {
                Ok(()) => {
                    self.push_reply(xid::AUTH, 0, Ok(&[]));
                    Next::Continue
                }
                Err(e) => {
                    self.push_reply(xid::AUTH, 0, Err(e));
                    self.close_after_flush();
                    Next::Stop
                }
            };
        }
        let started = Instant::now();
        stats.outstanding.fetch_add(1, Relaxed);
        if request.is_write() {
            self.state
                .borrow_mut()
                .pending
                .push_back(Pending::AwaitingCommit {
                    xid: request_xid,
                    started,
                });
            let write = WriteRequest {
                session_id,
                xid: request_xid,
                request,
                auth: self.auth(),
            };
            let frame = self.shard.config.is_ensemble().then(|| frame.to_vec());
            return Next::Forward(ToCommit::Write {
                connection: self.connection_ref(),
                write,
                frame,
            });
        }
        let behind_a_write = !self.state.borrow().pending.is_empty();
        if behind_a_write || self.shard.is_behind() {
            self.state.borrow_mut().pending.push_back(Pending::Queued {
                xid: request_xid,
                request,
                started,
            });
            if !behind_a_write {
                self.shard.wait_for_tree(self.id);
            }
            return Next::Continue;
        }
        stats.outstanding.fetch_sub(1, Relaxed);
        self.execute_local(request_xid, &request);
        self.record_latency(started);
        Next::Continue
    }

    /// Waits until no read of this connection waits in its queue (false if the connection
    /// closes first). ZooKeeper serves a session's requests in order, so a read sent between
    /// two writes sees the first and not the second (R1); a write goes to the commit path only
    /// after the reads before it have been served, since two writes in one commit batch would
    /// otherwise both be in the tree those reads are served from. Frames after the write are
    /// not read meanwhile, so every waiting read is one sent before it.
    async fn reads_before_served(&self) -> bool {
        loop {
            let reads_waiting = self
                .state
                .borrow()
                .pending
                .iter()
                .any(|p| matches!(p, Pending::Queued { .. }));
            if !reads_waiting {
                return true;
            }
            if self.lifecycle.get() != Lifecycle::Open {
                return false;
            }
            // run_queued signals after serving, and closing signals too; no timer, whose
            // registration would cost a ring submission per write.
            self.resume_signal.wait().await;
        }
    }

    /// This connection alone has as many requests in progress as one may
    /// (`OUTSTANDING_PER_CONNECTION_MAX`); its own replies resume it.
    fn must_pause_reading(&self) -> bool {
        self.state.borrow().pending.len() >= OUTSTANDING_PER_CONNECTION_MAX
    }

    /// Waits until something may have changed for a paused reader: this connection's
    /// requests finished, it closed, the shard gave it its turn to read, or 1 ms passed (the
    /// poll is a safety net; the signals are what normally wake it).
    async fn pause(&self) {
        let resumed = async {
            self.resume_signal.wait().await;
        };
        let poll = async {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        };
        future::or(resumed, poll).await;
    }

    /// The shard's turn to read has come to this connection (R15).
    pub fn resume(&self) {
        self.resume_signal.notify();
    }
}

/// Waits in the shard's queue until this connection may read its socket again (rule R15).
/// False if the connection closed meanwhile.
///
/// Before the queue, a connection waiting at the limit was woken by its own replies or
/// by a 1 ms poll. One whose requests had all been answered had only the poll, and the
/// connections with requests still in progress, woken at once by their replies, read first
/// every time. With 256 sessions × 16 writes in flight on one core, p99 was 521-684 ms and
/// the slowest write 0.95-1.27 s; with the queue, 150-173 ms and 172-209 ms.
async fn wait_read_turn(connection: &Connection) -> bool {
    /// Leaves the queue however the wait ends, the connection task's cancellation included.
    struct Place<'a>(&'a Connection);
    impl Drop for Place<'_> {
        fn drop(&mut self) {
            self.0.shard.leave_read_queue(self.0.id);
        }
    }
    connection.shard.queue_to_read(connection.id);
    let _place = Place(connection);
    loop {
        if connection.lifecycle.get() != Lifecycle::Open {
            return false;
        }
        if connection.shard.take_read_turn(connection.id) {
            return true;
        }
        connection.pause().await;
    }
}

/// The two halves of one socket, used by the connection's reader and writer tasks. Both run on
/// the same executor thread and borrow the stream only inside a single poll, so a `RefCell`
/// is enough: no lock on the request path.
struct SocketHalf<S>(Rc<RefCell<S>>);

fn split<S>(stream: S) -> (SocketHalf<S>, SocketHalf<S>) {
    let shared = Rc::new(RefCell::new(stream));
    (SocketHalf(shared.clone()), SocketHalf(shared))
}

impl<S: futures_lite::AsyncRead + Unpin> futures_lite::AsyncRead for SocketHalf<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl<S: futures_lite::AsyncWrite + Unpin> futures_lite::AsyncWrite for SocketHalf<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}

/// Serves one accepted plain connection until it closes.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let Ok(peer) = stream.peer_addr() else { return };
    let _ = stream.set_nodelay(true);
    serve_stream(shard, stream, peer).await;
}

/// Serves one connection on secureClientPort: the TLS handshake (bounded by the handshake
/// timeout), then the same protocol as on the plain port.
pub async fn serve_tls(shard: Rc<Shard>, stream: TcpStream, acceptor: futures_rustls::TlsAcceptor) {
    let Ok(peer) = stream.peer_addr() else { return };
    let _ = stream.set_nodelay(true);
    let handshake = async { acceptor.accept(stream).await.ok() };
    let timeout = async {
        glommio::timer::sleep(Duration::from_millis(HANDSHAKE_TIMEOUT_MS)).await;
        None
    };
    if let Some(tls) = future::or(handshake, timeout).await {
        serve_stream(shard, tls, peer).await;
    }
}

async fn serve_stream<S>(shard: Rc<Shard>, stream: S, peer: std::net::SocketAddr)
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + 'static,
{
    let ip = peer.ip().to_canonical();
    if !shard
        .limiter
        .try_acquire(ip, shard.config.max_client_connections)
    {
        // Too many connections from this address (maxClientCnxns): close at once.
        return;
    }
    let id = shard.allocate_connection_id();
    let connection = Rc::new(Connection::new(id, peer, shard.clone()));
    shard.register(connection.clone());
    let (mut socket_reader, mut socket_writer) = split(stream);

    let writer_connection = connection.clone();
    let writer = glommio::spawn_local(async move {
        let c = writer_connection;
        loop {
            if c.lifecycle.get() == Lifecycle::Closed {
                break;
            }
            let chunk = std::mem::take(&mut *c.output.borrow_mut());
            if !chunk.is_empty() {
                if socket_writer.write_all(&chunk).await.is_err() {
                    c.close_now();
                    break;
                }
                let _ = socket_writer.flush().await;
                continue;
            }
            if c.lifecycle.get() == Lifecycle::FlushThenClose {
                break;
            }
            c.output_signal.wait().await;
            // Let the tasks already runnable (this and other connections' readers, the
            // shard's deliveries) run first, so the send goes after them instead of in the
            // middle of their work. By hand this gave 2-19% more mixed 90/10 throughput in
            // six alternating pairs, with as many replies per send as before.
            futures_lite::future::yield_now().await;
        }
        let _ = socket_writer.close().await;
        c.close_now();
    });

    read_loop(&connection, &mut socket_reader).await;

    connection.close_after_flush();
    writer.await;
    let session_id = connection.session_id();
    shard.unregister(id);
    // Requests this connection leaves unanswered no longer count against the shard's
    // outstanding limit (no reply can reach it once it is unregistered).
    let abandoned = std::mem::take(&mut connection.state.borrow_mut().pending).len();
    shard
        .my_stats()
        .outstanding
        .fetch_sub(abandoned as u64, Relaxed);
    shard.wake_next_reader();
    shard.limiter.release(ip);
    if session_id != 0 {
        shard
            .send_to_commit(ToCommit::Disconnected {
                connection: connection.connection_ref(),
                session_id,
            })
            .await;
    }
}

/// Reads one more chunk unless the connection is told to close first.
async fn read_more<R: futures_lite::AsyncRead + Unpin>(
    connection: &Connection,
    frames: &mut FrameReader,
    socket: &mut R,
) -> bool {
    if connection.lifecycle.get() != Lifecycle::Open {
        return false;
    }
    let read = async { frames.fill(socket).await.unwrap_or(false) };
    let closed = async {
        connection.close_signal.wait().await;
        false
    };
    future::or(read, closed).await && connection.lifecycle.get() == Lifecycle::Open
}

async fn read_loop<R: futures_lite::AsyncRead + Unpin>(
    connection: &Rc<Connection>,
    socket: &mut R,
) {
    let shard = connection.shard.clone();
    let config = shard.config.clone();
    // Four-letter words are recognised before the frame length is checked: as integers they
    // are all larger than any allowed frame.
    let mut frames = FrameReader::new(config.jute_max_buffer, CONNECTION_READ_CHUNK_BYTES);
    let handshake = async {
        while frames.buffered() < 4 {
            if !read_more(connection, &mut frames, socket).await {
                return false;
            }
        }
        true
    };
    let timeout = async {
        glommio::timer::sleep(Duration::from_millis(HANDSHAKE_TIMEOUT_MS)).await;
        false
    };
    if !future::or(handshake, timeout).await {
        return;
    }
    if let Some(command) = frames.peek_prefix().and_then(four_letter::command_of) {
        // `dump` lists ephemerals from the tree: wait for one as new as the shard knows of.
        let tree = if command == "dump" {
            Some(shard.current_tree().await)
        } else {
            None
        };
        let text = four_letter::respond(&shard, command, tree);
        connection.push_frame(text.as_bytes());
        return;
    }
    // The ConnectRequest.
    let range = loop {
        match frames.next_frame() {
            Frame::Complete(a, b) => break (a, b),
            Frame::BadLength => return,
            Frame::NeedMore => {
                if !read_more(connection, &mut frames, socket).await {
                    return;
                }
            }
        }
    };
    let Ok(request) = ConnectRequest::decode(&mut Reader::new(
        frames.frame(range),
        config.jute_max_buffer,
    )) else {
        return;
    };
    let mut new_password = [0u8; 16];
    if getrandom::getrandom(&mut new_password).is_err() {
        return;
    }
    shard
        .send_to_commit(ToCommit::Connect(ConnectAttempt {
            connection: connection.connection_ref(),
            session_id: request.session_id,
            password: request.password.clone(),
            timeout_ms: request.timeout_ms,
            last_zxid_seen: request.last_zxid_seen,
            new_password,
            read_only_allowed: request.read_only == Some(true),
        }))
        .await;
    let result = loop {
        if let Some(result) = connection.connect_result.borrow_mut().take() {
            break result;
        }
        if connection.lifecycle.get() != Lifecycle::Open {
            return;
        }
        connection.connect_signal.wait().await;
    };
    let read_only = request.read_only.map(|_| false);
    let response = match result {
        ConnectResult::ZxidAhead | ConnectResult::NotServing => return,
        ConnectResult::Expired => {
            let response = ConnectResponse {
                protocol_version: 0,
                timeout_ms: 0,
                session_id: 0,
                password: vec![0; 16],
                read_only,
            };
            send_connect_response(connection, &response);
            return;
        }
        ConnectResult::Attached {
            session_id,
            timeout_ms,
            password,
        }
        | ConnectResult::ReadOnly {
            session_id,
            timeout_ms,
            password,
        } => {
            let read_only = if matches!(result, ConnectResult::ReadOnly { .. }) {
                Some(true)
            } else {
                read_only
            };
            {
                let mut state = connection.state.borrow_mut();
                state.session_id = session_id;
                state.timeout_ms = timeout_ms;
            }
            ConnectResponse {
                protocol_version: 0,
                timeout_ms,
                session_id,
                password: password.to_vec(),
                read_only,
            }
        }
    };
    send_connect_response(connection, &response);

    loop {
        loop {
            match frames.next_frame() {
                Frame::Complete(a, b) => {
                    let next = connection.on_frame(frames.frame((a, b)));
                    match next {
                        Next::Continue => {}
                        Next::Stop => return,
                        Next::Forward(message) => {
                            if !connection.reads_before_served().await {
                                return;
                            }
                            shard.send_to_commit(message).await
                        }
                    }
                }
                Frame::BadLength => return,
                Frame::NeedMore => break,
            }
        }
        while connection.must_pause_reading() && connection.lifecycle.get() == Lifecycle::Open {
            connection.pause().await;
        }
        if shard.must_queue_to_read() && !wait_read_turn(connection).await {
            return;
        }
        if !read_more(connection, &mut frames, socket).await {
            return;
        }
    }
}

fn send_connect_response(connection: &Connection, response: &ConnectResponse) {
    let mut frame = Vec::with_capacity(64);
    frame_start(&mut frame);
    response.encode(&mut frame);
    frame_finish(&mut frame);
    connection.push_frame(&frame);
}
