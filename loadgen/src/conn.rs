//! Connections: framing over a glommio socket, the session handshake, the two halves of a socket
//! for the pipelined sessions, and [`SeqConn`], a one-request-at-a-time client for recipes
//! (locks, watch storms, setup) that keeps watch notifications aside.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::limits;
use crate::protocol::{self, ConnectResponse, Cursor, ReplyHeader, WatcherEvent, code, xid};

/// Why a connection stopped being usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnError {
    /// The server closed the connection.
    Closed,
    Io(String),
    /// No reply within the timeout.
    Timeout,
    /// Bytes that do not follow the protocol (bad length, undecodable record, xid out of order).
    Protocol(String),
}

impl ConnError {
    /// The ZooKeeper client-side code the failure is counted under.
    pub fn code(&self) -> i32 {
        match self {
            ConnError::Closed | ConnError::Io(_) => code::CONNECTION_LOSS,
            ConnError::Timeout => code::OPERATION_TIMEOUT,
            ConnError::Protocol(_) => code::MARSHALLING_ERROR,
        }
    }

    pub fn label(&self) -> String {
        protocol::error_label(self.code())
    }
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Closed => write!(f, "the server closed the connection"),
            ConnError::Io(e) => write!(f, "socket error: {e}"),
            ConnError::Timeout => write!(f, "no reply within the timeout"),
            ConnError::Protocol(e) => write!(f, "protocol error: {e}"),
        }
    }
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> ConnError {
        match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ConnError::Timeout,
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => ConnError::Closed,
            _ => ConnError::Io(e.to_string()),
        }
    }
}

impl From<protocol::DecodeError> for ConnError {
    fn from(e: protocol::DecodeError) -> ConnError {
        ConnError::Protocol(e.to_string())
    }
}

fn glommio_io<T>(e: glommio::GlommioError<T>) -> ConnError {
    ConnError::from(io::Error::from(e))
}

/// Incoming bytes cut into frames. Frame ranges stay valid until the next [`FrameBuffer::fill`].
pub struct FrameBuffer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    frame_bytes_max: usize,
}

impl FrameBuffer {
    pub fn new(frame_bytes_max: usize) -> FrameBuffer {
        FrameBuffer {
            buf: vec![0; limits::READ_CHUNK_BYTES],
            start: 0,
            end: 0,
            frame_bytes_max,
        }
    }

    /// The next complete frame's payload range, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<(usize, usize)>, ConnError> {
        let available = self.end - self.start;
        if available < 4 {
            return Ok(None);
        }
        let b = &self.buf[self.start..self.start + 4];
        let len = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        if len < 0 || len as usize > self.frame_bytes_max {
            return Err(ConnError::Protocol(format!("frame length {len}")));
        }
        let len = len as usize;
        if available - 4 < len {
            return Ok(None);
        }
        let range = (self.start + 4, self.start + 4 + len);
        self.start += 4 + len;
        Ok(Some(range))
    }

    pub fn frame(&self, range: (usize, usize)) -> &[u8] {
        &self.buf[range.0..range.1]
    }

    /// Reads once more from `socket`, making room first. `Ok(0)` at end of stream.
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, socket: &mut R) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        // Room for the frame being read (its length is known once 4 bytes are here).
        let mut needed = limits::READ_CHUNK_BYTES / 4;
        if self.end - self.start >= 4 {
            let b = &self.buf[self.start..self.start + 4];
            let len = i32::from_be_bytes([b[0], b[1], b[2], b[3]]).max(0) as usize;
            needed = needed.max((4 + len).saturating_sub(self.end - self.start));
        }
        if self.buf.len() - self.end < needed {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() - self.end < needed {
                self.buf
                    .resize(self.end + needed.max(limits::READ_CHUNK_BYTES), 0);
            }
        }
        let n = socket.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }
}

/// Opens a TCP connection and a new session on it.
pub async fn connect(
    address: SocketAddr,
    timeout_ms: i32,
) -> Result<(TcpStream, ConnectResponse, FrameBuffer), ConnError> {
    let mut stream = TcpStream::connect_timeout(address, limits::CONNECT_TIMEOUT)
        .await
        .map_err(|e| ConnError::Io(format!("cannot connect to {address}: {e}")))?;
    stream.set_nodelay(true).map_err(glommio_io)?;
    stream
        .set_read_timeout(Some(limits::CONNECT_TIMEOUT))
        .map_err(glommio_io)?;
    let mut out = Vec::with_capacity(64);
    protocol::connect_request(&mut out, timeout_ms);
    stream.write_all(&out).await?;
    let mut frames = FrameBuffer::new(limits::REPLY_FRAME_BYTES_MAX);
    let response = loop {
        if let Some(range) = frames.next_frame()? {
            break ConnectResponse::decode(frames.frame(range))?;
        }
        if frames.fill(&mut stream).await? == 0 {
            return Err(ConnError::Closed);
        }
    };
    if response.session_id == 0 {
        return Err(ConnError::Protocol("the server refused the session".into()));
    }
    stream
        .set_read_timeout(Some(limits::REPLY_TIMEOUT))
        .map_err(glommio_io)?;
    Ok((stream, response, frames))
}

/// One half of a socket shared by a reader task and a writer task of the same executor. Each
/// borrows the stream only inside one poll, so the `RefCell` is never contended.
#[derive(Clone)]
pub struct SocketHalf(pub Rc<RefCell<TcpStream>>);

impl SocketHalf {
    pub fn split(stream: TcpStream) -> (SocketHalf, SocketHalf) {
        let shared = Rc::new(RefCell::new(stream));
        (SocketHalf(shared.clone()), SocketHalf(shared))
    }
}

impl AsyncRead for SocketHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for SocketHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}

enum Incoming {
    Event(WatcherEvent, Instant),
    Reply(ReplyHeader, Vec<u8>),
}

/// A reply to a [`SeqConn`] request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub err: i32,
    pub body: Vec<u8>,
    pub sent: Instant,
    pub done: Instant,
}

/// A session that sends one request and waits for its reply (or a window of them, for
/// pre-population). Watch notifications that arrive meanwhile are queued for [`SeqConn::next_event`].
pub struct SeqConn {
    stream: TcpStream,
    frames: FrameBuffer,
    next_xid: i32,
    out: Vec<u8>,
    events: VecDeque<(WatcherEvent, Instant)>,
    read_timeout: Duration,
    pub session_id: i64,
}

impl SeqConn {
    pub async fn open(address: SocketAddr) -> Result<SeqConn, ConnError> {
        let (stream, response, frames) = connect(address, limits::SESSION_TIMEOUT_MS).await?;
        Ok(SeqConn {
            stream,
            frames,
            next_xid: 1,
            out: Vec::with_capacity(1024),
            events: VecDeque::new(),
            read_timeout: limits::REPLY_TIMEOUT,
            session_id: response.session_id,
        })
    }

    fn take_xid(&mut self) -> i32 {
        let x = self.next_xid;
        self.next_xid = if x == i32::MAX { 1 } else { x + 1 };
        x
    }

    fn set_timeout(&mut self, timeout: Duration) -> Result<(), ConnError> {
        if self.read_timeout != timeout {
            self.stream
                .set_read_timeout(Some(timeout))
                .map_err(glommio_io)?;
            self.read_timeout = timeout;
        }
        Ok(())
    }

    /// The next notification or reply (ping replies are dropped).
    async fn read_one(&mut self) -> Result<Incoming, ConnError> {
        loop {
            if let Some(range) = self.frames.next_frame()? {
                let frame = self.frames.frame(range);
                let mut c = Cursor::new(frame);
                let header = ReplyHeader::decode(&mut c)?;
                match header.xid {
                    xid::NOTIFICATION => {
                        let event = WatcherEvent::decode(&mut c)?;
                        return Ok(Incoming::Event(event, Instant::now()));
                    }
                    xid::PING => continue,
                    _ => {
                        let body = frame[frame.len() - c.remaining()..].to_vec();
                        return Ok(Incoming::Reply(header, body));
                    }
                }
            }
            if self.frames.fill(&mut self.stream).await? == 0 {
                return Err(ConnError::Closed);
            }
        }
    }

    /// The next reply; notifications that come first are queued for [`SeqConn::next_event`].
    async fn next_reply(&mut self) -> Result<(ReplyHeader, Vec<u8>), ConnError> {
        loop {
            match self.read_one().await? {
                Incoming::Reply(header, body) => return Ok((header, body)),
                Incoming::Event(event, at) => {
                    if self.events.len() >= limits::PENDING_EVENTS_MAX {
                        return Err(ConnError::Protocol(format!(
                            "more than {} watch notifications pending",
                            limits::PENDING_EVENTS_MAX
                        )));
                    }
                    self.events.push_back((event, at));
                }
            }
        }
    }

    /// Sends the request `encode` writes (given its xid) and waits for its reply.
    pub async fn call(
        &mut self,
        encode: impl FnOnce(&mut Vec<u8>, i32),
    ) -> Result<Reply, ConnError> {
        self.call_within(limits::REPLY_TIMEOUT, encode).await
    }

    async fn call_within(
        &mut self,
        timeout: Duration,
        encode: impl FnOnce(&mut Vec<u8>, i32),
    ) -> Result<Reply, ConnError> {
        self.set_timeout(timeout)?;
        let request_xid = self.take_xid();
        self.out.clear();
        encode(&mut self.out, request_xid);
        let sent = Instant::now();
        self.stream.write_all(&self.out).await?;
        let (header, body) = self.next_reply().await?;
        if header.xid != request_xid {
            return Err(ConnError::Protocol(format!(
                "reply xid {} for request xid {request_xid}",
                header.xid
            )));
        }
        Ok(Reply {
            err: header.err,
            body,
            sent,
            done: Instant::now(),
        })
    }

    /// Sends `count` requests keeping up to `window` in flight; `on_reply(index, err)` for each.
    pub async fn call_many(
        &mut self,
        count: usize,
        window: usize,
        mut encode: impl FnMut(&mut Vec<u8>, i32, usize),
        mut on_reply: impl FnMut(usize, i32),
    ) -> Result<(), ConnError> {
        self.set_timeout(limits::REPLY_TIMEOUT)?;
        let mut xids = VecDeque::with_capacity(window);
        let mut sent = 0;
        let mut done = 0;
        while done < count {
            self.out.clear();
            while sent < count && sent - done < window {
                let x = self.take_xid();
                encode(&mut self.out, x, sent);
                xids.push_back(x);
                sent += 1;
            }
            if !self.out.is_empty() {
                self.stream.write_all(&self.out).await?;
            }
            let (header, _) = self.next_reply().await?;
            let expected = xids.pop_front().unwrap_or(0);
            if header.xid != expected {
                return Err(ConnError::Protocol(format!(
                    "reply xid {} for request xid {expected}",
                    header.xid
                )));
            }
            on_reply(done, header.err);
            done += 1;
        }
        Ok(())
    }

    /// The next watch notification, waiting at most `timeout` for it (then `ConnError::Timeout`).
    /// A reply arriving here is a protocol error: no request is outstanding.
    pub async fn next_event(
        &mut self,
        timeout: Duration,
    ) -> Result<(WatcherEvent, Instant), ConnError> {
        if let Some(e) = self.events.pop_front() {
            return Ok(e);
        }
        self.set_timeout(timeout)?;
        match self.read_one().await? {
            Incoming::Event(event, at) => Ok((event, at)),
            Incoming::Reply(header, _) => Err(ConnError::Protocol(format!(
                "reply xid {} with no request outstanding",
                header.xid
            ))),
        }
    }

    /// Closes the session (closeSession) and the connection; failures are ignored.
    pub async fn close(mut self) {
        let _ = self
            .call_within(limits::CLOSE_TIMEOUT, protocol::close_session)
            .await;
        let _ = self.stream.close().await;
    }
}
