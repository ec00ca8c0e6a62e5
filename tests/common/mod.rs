//! Shared test helpers: a `zoo` server process per test (fresh data dir, free port, killed on
//! drop) and a small raw ZooKeeper protocol client over `std::net::TcpStream`.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Read/write timeout on every test socket: only there so a broken server cannot hang a test.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for a server to start, a condition to become true, or a child to exit.
pub const WAIT_MAX: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Temp dirs, ports, server process

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "zoo-test-{tag}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port nobody listens on (bind 127.0.0.1:0), never handed out twice in this process.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        let mut used = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !used.contains(&port) {
            used.push(port);
            return port;
        }
    }
}

/// Polls `condition` until it returns `Some`, or panics with `what` after [`WAIT_MAX`].
pub fn wait_for<T>(what: &str, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        if let Some(v) = condition() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `zoo server` process on a fresh data dir; killed (SIGKILL) on drop.
pub struct ZooServer {
    dir: TempDir,
    cfg: PathBuf,
    log: PathBuf,
    port: u16,
    child: Option<Child>,
    /// Environment for the server process (failpoints).
    env: Vec<(String, String)>,
}

impl ZooServer {
    /// Writes zoo.cfg (tickTime=500, fresh dataDir, a free clientPort,
    /// 4lw.commands.whitelist=*, then `extra_cfg_lines`; an extra line naming one of those keys
    /// replaces the default) and starts the server, waiting until it answers `srvr`.
    pub fn start(extra_cfg_lines: &[&str]) -> ZooServer {
        ZooServer::start_with_env(extra_cfg_lines, &[])
    }

    /// As `start`, with extra environment variables for the server process (kept on restart).
    pub fn start_with_env(extra_cfg_lines: &[&str], env: &[(&str, &str)]) -> ZooServer {
        let mut server = ZooServer::configure(free_port(), None, extra_cfg_lines, env);
        server.spawn();
        server
    }

    /// Writes the config (and `myid`, for an ensemble member) without starting the server.
    pub fn configure(
        port: u16,
        myid: Option<i64>,
        extra_cfg_lines: &[&str],
        env: &[(&str, &str)],
    ) -> ZooServer {
        let dir = TempDir::new("server");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("create data dir");
        if let Some(id) = myid {
            std::fs::write(data.join("myid"), id.to_string()).expect("write myid");
        }
        let key = |line: &str| line.split('=').next().unwrap_or("").trim().to_owned();
        let extra_keys: Vec<String> = extra_cfg_lines.iter().map(|l| key(l)).collect();
        let mut text = String::new();
        for line in [
            "tickTime=500".to_owned(),
            format!("dataDir={}", data.display()),
            format!("clientPort={port}"),
            "4lw.commands.whitelist=*".to_owned(),
        ] {
            if !extra_keys.contains(&key(&line)) {
                text.push_str(&line);
                text.push('\n');
            }
        }
        for line in extra_cfg_lines {
            text.push_str(line);
            text.push('\n');
        }
        let cfg = dir.path().join("zoo.cfg");
        std::fs::write(&cfg, text).expect("write zoo.cfg");
        let log = dir.path().join("server.log");
        ZooServer {
            dir,
            cfg,
            log,
            port,
            child: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The process id, for signals (SIGSTOP/SIGCONT).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts a configured server that is not running.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.spawn();
    }

    /// Stops the server (SIGKILL) and keeps its data for `start_again`.
    pub fn stop(&mut self) {
        self.kill9();
    }

    /// Sends a signal (`libc::SIGSTOP`, `libc::SIGCONT`, ...) to the server process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is shared.
        let rc = unsafe { libc::kill(self.pid() as i32, signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, as client tools want it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's data directory (`dataDir`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (with the server's log) unless the process is still running.
    pub fn assert_alive(&mut self) {
        let child = self.child.as_mut().expect("server was killed by the test");
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "zoo server exited ({status}); its log:\n{}",
                self.log_text()
            );
        }
    }

    /// Waits until the server process exits by itself (e.g. after a fatal disk error).
    pub fn wait_for_exit(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("server is running");
        let status = wait_for("the server to exit", || child.try_wait().ok().flatten());
        self.child = None;
        status
    }

    /// Replaces the environment used by later restarts.
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// SIGKILL: no shutdown code runs, as in a crash or power cut.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs and starts it again on the same config and data dir.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Starts a configured server that is not running, without waiting for it to answer
    /// (it may be expected to stop by itself).
    pub fn start_again_without_waiting(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.spawn_process();
    }

    fn spawn(&mut self) {
        self.spawn_process();
        let port = self.port;
        wait_for("the server to answer srvr", || {
            self.assert_alive();
            let text = four_letter(port, "srvr").ok()?;
            text.contains("Zookeeper version").then_some(())
        });
    }

    fn spawn_process(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open server log");
        let child = Command::new(env!("CARGO_BIN_EXE_zoo"))
            .arg("server")
            .arg(&self.cfg)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn zoo server");
        self.child = Some(child);
    }
}

impl Drop for ZooServer {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("---- zoo server log ----\n{}", self.log_text());
        }
    }
}

/// Servers of one ensemble on loopback, each with its own data dir and ports.
pub struct ZooEnsemble {
    pub servers: Vec<ZooServer>,
    /// The config lines every server got (server.N lines and extras).
    pub lines: Vec<String>,
}

impl ZooEnsemble {
    /// `voters` participants then `observers` observers, started together; returns once one
    /// leads and every other follows or observes.
    pub fn start(voters: usize, observers: usize, extra_cfg_lines: &[&str]) -> ZooEnsemble {
        let n = voters + observers;
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let mut lines: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, q, e))| {
                let role = if i < voters {
                    "participant"
                } else {
                    "observer"
                };
                format!("server.{}=127.0.0.1:{q}:{e}:{role}", i + 1)
            })
            .collect();
        lines.extend(extra_cfg_lines.iter().map(|l| l.to_string()));
        let line_refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut servers: Vec<ZooServer> = ports
            .iter()
            .enumerate()
            .map(|(i, (client, _, _))| {
                ZooServer::configure(*client, Some(i as i64 + 1), &line_refs, &[])
            })
            .collect();
        for s in servers.iter_mut() {
            s.spawn();
        }
        let ensemble = ZooEnsemble { servers, lines };
        ensemble.wait_until_serving();
        ensemble
    }

    /// Configures (does not start) server `id` that knows the ensemble plus itself, as a
    /// server about to join with `reconfig` would. Returns it and its `server.N=` spec.
    pub fn configure_joiner(&self, id: i64, role: &str) -> (ZooServer, String) {
        let (client, quorum, election) = (free_port(), free_port(), free_port());
        let spec = format!("server.{id}=127.0.0.1:{quorum}:{election}:{role}");
        let mut lines = self.lines.clone();
        lines.push(spec.clone());
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        (ZooServer::configure(client, Some(id), &refs, &[]), spec)
    }

    /// `Mode:` of server `i` from `srvr` ("leader", "follower", "observer", "looking").
    pub fn mode(&self, i: usize) -> Option<String> {
        if !self.servers[i].is_running() {
            return None;
        }
        let text = four_letter(self.servers[i].port(), "srvr").ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("Mode: "))
            .map(str::to_owned)
    }

    /// Waits until one running server leads and every other running one follows or observes.
    pub fn wait_until_serving(&self) -> usize {
        wait_for_long("the ensemble to elect a leader and sync", || {
            let modes: Vec<Option<String>> =
                (0..self.servers.len()).map(|i| self.mode(i)).collect();
            let leaders: Vec<usize> = modes
                .iter()
                .enumerate()
                .filter(|(_, m)| m.as_deref() == Some("leader"))
                .map(|(i, _)| i)
                .collect();
            let all_ok = modes.iter().enumerate().all(|(i, m)| {
                !self.servers[i].is_running()
                    || matches!(m.as_deref(), Some("leader" | "follower" | "observer"))
            });
            (leaders.len() == 1 && all_ok).then(|| leaders[0])
        })
    }

    pub fn leader(&self) -> usize {
        self.wait_until_serving()
    }
}

/// As [`wait_for`], with a 30 s limit (elections, catch-up).
pub fn wait_for_long<T>(what: &str, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = condition() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends a four-letter word on a fresh connection and returns the text up to the close.
pub fn four_letter(port: u16, command: &str) -> io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(command.as_bytes())?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

// ---------------------------------------------------------------------------------------------
// Jute encoding and decoding

pub mod op {
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
}

pub mod err {
    pub const OK: i32 = 0;
    pub const MARSHALLING_ERROR: i32 = -5;
    pub const UNIMPLEMENTED: i32 = -6;
    pub const BAD_ARGUMENTS: i32 = -8;
    pub const NO_NODE: i32 = -101;
    pub const BAD_VERSION: i32 = -103;
    pub const NODE_EXISTS: i32 = -110;
}

/// Big-endian jute writers on a byte vector.
pub trait Jute {
    fn int(&mut self, v: i32) -> &mut Self;
    fn long(&mut self, v: i64) -> &mut Self;
    fn boolean(&mut self, v: bool) -> &mut Self;
    fn buffer(&mut self, v: &[u8]) -> &mut Self;
    fn string(&mut self, v: &str) -> &mut Self;
    /// `[ACL{perms=31, world:anyone}]`, ZooDefs.Ids.OPEN_ACL_UNSAFE.
    fn open_acl(&mut self) -> &mut Self;
}

impl Jute for Vec<u8> {
    fn int(&mut self, v: i32) -> &mut Self {
        self.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn long(&mut self, v: i64) -> &mut Self {
        self.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn boolean(&mut self, v: bool) -> &mut Self {
        self.push(v as u8);
        self
    }
    fn buffer(&mut self, v: &[u8]) -> &mut Self {
        self.int(v.len() as i32);
        self.extend_from_slice(v);
        self
    }
    fn string(&mut self, v: &str) -> &mut Self {
        self.buffer(v.as_bytes())
    }
    fn open_acl(&mut self) -> &mut Self {
        self.int(1).int(31).string("world").string("anyone")
    }
}

/// A length-prefixed frame around `payload`.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + payload.len());
    out.int(payload.len() as i32);
    out.extend_from_slice(payload);
    out
}

/// A framed request: RequestHeader{xid, type} + body.
pub fn request_frame(xid: i32, op: i32, body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(8 + body.len());
    payload.int(xid).int(op);
    payload.extend_from_slice(body);
    frame(&payload)
}

/// CreateRequest body with OPEN_ACL_UNSAFE.
pub fn create_body(path: &str, data: &[u8], flags: i32) -> Vec<u8> {
    let mut b = Vec::new();
    b.string(path).buffer(data).open_acl().int(flags);
    b
}

/// A cursor over received bytes; panics on truncation (a malformed reply fails the test).
pub struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { bytes, pos: 0 }
    }
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        assert!(
            n <= self.remaining(),
            "reply truncated: need {n} bytes, {} left",
            self.remaining()
        );
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        s
    }
    pub fn int(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    pub fn long(&mut self) -> i64 {
        i64::from_be_bytes(self.take(8).try_into().unwrap())
    }
    pub fn boolean(&mut self) -> bool {
        self.take(1)[0] != 0
    }
    /// A buffer; `None` for the null buffer (length -1).
    pub fn buffer(&mut self) -> Option<Vec<u8>> {
        let n = self.int();
        (n >= 0).then(|| self.take(n as usize).to_vec())
    }
    pub fn string(&mut self) -> String {
        String::from_utf8(self.buffer().unwrap_or_default()).expect("utf-8 string")
    }
}

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
    pub fn decode(c: &mut Cursor<'_>) -> Stat {
        Stat {
            czxid: c.long(),
            mzxid: c.long(),
            ctime: c.long(),
            mtime: c.long(),
            version: c.int(),
            cversion: c.int(),
            aversion: c.int(),
            ephemeral_owner: c.long(),
            data_length: c.int(),
            num_children: c.int(),
            pzxid: c.long(),
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

/// A server frame after the handshake: ReplyHeader + body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub xid: i32,
    pub zxid: i64,
    pub err: i32,
    pub body: Vec<u8>,
}

// ---------------------------------------------------------------------------------------------
// Raw client

/// A framed ConnectRequest (protocolVersion 0, readOnly byte false).
pub fn connect_request(
    last_zxid: i64,
    timeout_ms: i32,
    session_id: i64,
    password: &[u8],
) -> Vec<u8> {
    connect_request_with_read_only(last_zxid, timeout_ms, session_id, password, false)
}

/// A framed ConnectRequest whose readOnly byte is `read_only` (the client accepts a
/// read-only server).
pub fn connect_request_with_read_only(
    last_zxid: i64,
    timeout_ms: i32,
    session_id: i64,
    password: &[u8],
    read_only: bool,
) -> Vec<u8> {
    let mut b = Vec::new();
    b.int(0)
        .long(last_zxid)
        .int(timeout_ms)
        .long(session_id)
        .buffer(password)
        .boolean(read_only);
    frame(&b)
}

/// One connection speaking the ZooKeeper client protocol, with blocking reads and timeouts.
pub struct RawClient {
    pub stream: TcpStream,
    /// The handshake's answer (session id 0 when the server said the session is expired).
    pub session: ConnectResponse,
    /// Watch notifications (xid -1) read while waiting for replies.
    pub events: Vec<Reply>,
    /// Highest zxid seen in a reply.
    pub last_zxid: i64,
    next_xid: i32,
}

impl RawClient {
    /// Opens a socket with read/write timeouts, without any handshake.
    pub fn socket(port: u16) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to zoo");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
    }

    /// A new session (requested timeout 10 s).
    pub fn connect(port: u16) -> RawClient {
        let c = RawClient::resume(port, 0, &[0; 16], 0).expect("handshake");
        assert_ne!(c.session.session_id, 0, "the server refused a new session");
        c
    }

    /// Handshake for `session_id` with `password` (0 and zeros for a new session).
    pub fn resume(
        port: u16,
        session_id: i64,
        password: &[u8],
        last_zxid: i64,
    ) -> io::Result<RawClient> {
        RawClient::handshake(port, session_id, password, last_zxid, 10_000)
    }

    /// A new session asking for `timeout_ms`.
    pub fn resume_with_timeout(port: u16, timeout_ms: i32) -> io::Result<RawClient> {
        RawClient::handshake(port, 0, &[0; 16], 0, timeout_ms)
    }

    /// A new session from a client that accepts a read-only server (readOnly byte true).
    pub fn connect_allowing_read_only(port: u16) -> io::Result<RawClient> {
        let request = connect_request_with_read_only(0, 10_000, 0, &[0; 16], true);
        RawClient::handshake_with(port, &request, 0)
    }

    fn handshake(
        port: u16,
        session_id: i64,
        password: &[u8],
        last_zxid: i64,
        timeout_ms: i32,
    ) -> io::Result<RawClient> {
        let request = connect_request(last_zxid, timeout_ms, session_id, password);
        RawClient::handshake_with(port, &request, last_zxid)
    }

    fn handshake_with(port: u16, request: &[u8], last_zxid: i64) -> io::Result<RawClient> {
        let mut stream = RawClient::socket(port);
        stream.write_all(request)?;
        let payload = read_frame(&mut stream)?;
        let mut c = Cursor::new(&payload);
        let session = ConnectResponse {
            protocol_version: c.int(),
            timeout_ms: c.int(),
            session_id: c.long(),
            password: c.buffer().unwrap_or_default(),
            read_only: (c.remaining() > 0).then(|| c.boolean()),
        };
        Ok(RawClient {
            stream,
            session,
            events: Vec::new(),
            last_zxid,
            next_xid: 1,
        })
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The next frame's payload.
    pub fn read_frame(&mut self) -> io::Result<Vec<u8>> {
        read_frame(&mut self.stream)
    }

    /// The next frame, parsed as ReplyHeader + body (notifications included).
    pub fn read_reply(&mut self) -> io::Result<Reply> {
        let payload = self.read_frame()?;
        let mut c = Cursor::new(&payload);
        let (xid, zxid, err) = (c.int(), c.long(), c.int());
        self.last_zxid = self.last_zxid.max(zxid);
        Ok(Reply {
            xid,
            zxid,
            err,
            body: payload[16..].to_vec(),
        })
    }

    /// The next reply that is not a watch notification (those go to `events`).
    pub fn read_response(&mut self) -> io::Result<Reply> {
        loop {
            let reply = self.read_reply()?;
            if reply.xid == -1 {
                self.events.push(reply);
            } else {
                return Ok(reply);
            }
        }
    }

    pub fn next_xid(&mut self) -> i32 {
        self.next_xid += 1;
        self.next_xid
    }

    /// Sends one request and returns its reply; replies must come in request order (R1).
    pub fn call(&mut self, op: i32, body: &[u8]) -> Reply {
        let xid = self.next_xid();
        self.send_raw(&request_frame(xid, op, body))
            .expect("send request");
        let reply = self.read_response().expect("read reply");
        assert_eq!(reply.xid, xid, "reply xid out of order (R1)");
        reply
    }

    /// As `call`, but a broken connection is an `Err` instead of a panic.
    pub fn try_call(&mut self, op: i32, body: &[u8]) -> io::Result<Reply> {
        let xid = self.next_xid();
        self.send_raw(&request_frame(xid, op, body))?;
        let reply = self.read_response()?;
        assert_eq!(reply.xid, xid, "reply xid out of order (R1)");
        Ok(reply)
    }

    /// A create whose outcome may be unknown (`Err(io)`: the connection broke first).
    pub fn try_create(
        &mut self,
        path: &str,
        data: &[u8],
        flags: i32,
    ) -> io::Result<Result<String, i32>> {
        let r = self.try_call(op::CREATE, &create_body(path, data, flags))?;
        if r.err != 0 {
            return Ok(Err(r.err));
        }
        Ok(Ok(Cursor::new(&r.body).string()))
    }

    pub fn create(&mut self, path: &str, data: &[u8], flags: i32) -> Result<String, i32> {
        let r = self.call(op::CREATE, &create_body(path, data, flags));
        if r.err != 0 {
            return Err(r.err);
        }
        Ok(Cursor::new(&r.body).string())
    }

    pub fn get_data(&mut self, path: &str, watch: bool) -> Result<(Vec<u8>, Stat), i32> {
        let mut b = Vec::new();
        b.string(path).boolean(watch);
        let r = self.call(op::GET_DATA, &b);
        if r.err != 0 {
            return Err(r.err);
        }
        let mut c = Cursor::new(&r.body);
        let data = c.buffer().unwrap_or_default();
        Ok((data, Stat::decode(&mut c)))
    }

    pub fn exists(&mut self, path: &str, watch: bool) -> Result<Stat, i32> {
        let mut b = Vec::new();
        b.string(path).boolean(watch);
        let r = self.call(op::EXISTS, &b);
        if r.err != 0 {
            return Err(r.err);
        }
        Ok(Stat::decode(&mut Cursor::new(&r.body)))
    }

    pub fn set_data(&mut self, path: &str, data: &[u8], version: i32) -> Result<Stat, i32> {
        let mut b = Vec::new();
        b.string(path).buffer(data).int(version);
        let r = self.call(op::SET_DATA, &b);
        if r.err != 0 {
            return Err(r.err);
        }
        Ok(Stat::decode(&mut Cursor::new(&r.body)))
    }

    pub fn delete(&mut self, path: &str, version: i32) -> Result<(), i32> {
        let mut b = Vec::new();
        b.string(path).int(version);
        match self.call(op::DELETE, &b).err {
            0 => Ok(()),
            e => Err(e),
        }
    }

    pub fn get_children(&mut self, path: &str) -> Result<Vec<String>, i32> {
        let mut b = Vec::new();
        b.string(path).boolean(false);
        let r = self.call(op::GET_CHILDREN, &b);
        if r.err != 0 {
            return Err(r.err);
        }
        let mut c = Cursor::new(&r.body);
        let n = c.int();
        Ok((0..n.max(0)).map(|_| c.string()).collect())
    }

    /// Ping (xid -2): answered with a reply of xid -2.
    pub fn ping(&mut self) -> io::Result<()> {
        self.send_raw(&request_frame(-2, op::PING, &[]))?;
        let reply = self.read_response()?;
        assert_eq!((reply.xid, reply.err), (-2, 0), "ping reply");
        Ok(())
    }

    /// Reads until the server closes the connection; returns the frames it sent first.
    /// Panics if the connection is still open after [`IO_TIMEOUT`].
    pub fn expect_closed_by_server(&mut self) -> Vec<Reply> {
        let mut before_close = Vec::new();
        loop {
            match self.read_frame() {
                Ok(payload) => {
                    let mut c = Cursor::new(&payload);
                    if payload.len() >= 16 {
                        let (xid, zxid, err) = (c.int(), c.long(), c.int());
                        before_close.push(Reply {
                            xid,
                            zxid,
                            err,
                            body: payload[16..].to_vec(),
                        });
                    }
                }
                Err(e) if is_timeout(&e) => {
                    panic!("the server kept the connection open (frames so far: {before_close:?})")
                }
                Err(_) => return before_close,
            }
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Reads one length-prefixed frame; EOF before a full frame is `UnexpectedEof`.
pub fn read_frame(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = i32::from_be_bytes(len);
    if !(0..=64 << 20).contains(&len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame length {len}"),
        ));
    }
    let mut payload = vec![0; len as usize];
    stream.read_exact(&mut payload)?;
    Ok(payload)
}

/// True once the peer has closed `stream` (EOF or reset); false if it stays open past the
/// read timeout. Any bytes received first are discarded.
pub fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if is_timeout(&e) => return false,
            Err(_) => return true,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// External client programs

/// Output of a child process run to completion.
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// stdout then stderr, for `contains` checks.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs `command` with `stdin` as its input, killing it if it has not exited after 60 s.
pub fn run_with_input(command: Command, stdin: &str) -> Output {
    let mut child = KillOnDrop::spawn(command);
    let mut input = child.0.stdin.take().unwrap();
    let stdin = stdin.to_owned();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(stdin.as_bytes());
    });
    let out_reader = read_all_in_thread(child.0.stdout.take().unwrap());
    let err_reader = read_all_in_thread(child.0.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.0.try_wait().expect("wait for client").is_none() {
        assert!(
            Instant::now() < deadline,
            "client program did not exit within 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(child);
    let _ = writer.join();
    Output {
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

fn read_all_in_thread(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = r.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    })
}

/// A child process in its own process group, with piped stdio; the whole group is killed
/// (SIGKILL) on drop, so a wrapper script's JVM goes too.
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    pub fn spawn(mut command: Command) -> KillOnDrop {
        use std::os::unix::process::CommandExt;
        let child = command
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        KillOnDrop(child)
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this struct created.
        unsafe {
            libc::kill(-(self.0.id() as i32), libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

/// A small deterministic generator, so a failing seed can be replayed.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}
