//! Shared helpers of the loadgen tests: temp dirs, free ports, a `zoo` server child process,
//! running the `zoo-loadgen` binary and reading its JSON results.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use zoo_loadgen::report::{self, RunResult};

/// How long a server may take to accept connections: only there so a broken start cannot hang.
pub const START_WAIT_MAX: Duration = Duration::from_secs(20);

/// A fresh directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "zoo-loadgen-test-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Waits until something accepts connections on `port`.
pub fn wait_for_port(port: u16, child: &mut Child) {
    let deadline = Instant::now() + START_WAIT_MAX;
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the server exited before listening on {port}: {status}");
        }
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `zoo` server binary: `$ZOO_BIN`, or the workspace's target/release/zoo.
pub fn zoo_binary() -> PathBuf {
    if let Ok(p) = std::env::var("ZOO_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/zoo");
    assert!(
        p.exists(),
        "the zoo server binary is missing at {}: build it first with `cargo build --release -p zoo` \
         (or point ZOO_BIN at one)",
        p.display()
    );
    p
}

/// A `zoo server` on a free port with a fresh data dir; killed on drop.
pub struct Zoo {
    pub port: u16,
    _child: ChildGuard,
    _dir: TempDir,
}

impl Zoo {
    pub fn start() -> Zoo {
        let dir = TempDir::new("zoo");
        let port = free_port();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let cfg = dir.file(
            "zoo.cfg",
            &format!(
                "tickTime=2000\ndataDir={}\nclientPort={port}\nzoo.shards=1\nzoo.pin_cores=false\nmaxClientCnxns=0\n",
                data.display()
            ),
        );
        let mut child = Command::new(zoo_binary())
            .arg("server")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start zoo");
        wait_for_port(port, &mut child);
        Zoo {
            port,
            _child: ChildGuard(child),
            _dir: dir,
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

pub fn loadgen() -> Command {
    Command::new(env!("CARGO_BIN_EXE_zoo-loadgen"))
}

/// Runs `zoo-loadgen` with `args` plus quiet, unpinned, one-core defaults.
pub fn run_loadgen(args: &[&str]) -> Output {
    loadgen()
        .args(args)
        .args(["--quiet", "--no-pin", "--cores", "1"])
        .stdin(Stdio::null())
        .output()
        .expect("run zoo-loadgen")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The single run in a `--json` file.
pub fn read_run(path: &Path) -> RunResult {
    let json = std::fs::read_to_string(path).expect("read results");
    match serde_json::from_str::<report::Output>(&json).expect("parse results") {
        report::Output::Run(r) => *r,
        report::Output::Comparison(_) => panic!("expected one run, got a comparison"),
    }
}

/// The checks every run must pass: the counts add up and the histograms are ordered.
pub fn assert_consistent(run: &RunResult) {
    let sum: u64 = run.ops.iter().map(|o| o.count).sum();
    assert_eq!(run.ops_total, sum, "ops_total is the sum over op types");
    assert_eq!(run.overall.count, run.ops_total);
    assert_eq!(run.overall.histogram_count, run.ops_total);
    for m in run
        .ops
        .iter()
        .chain(&run.derived)
        .chain(std::iter::once(&run.overall))
    {
        assert_eq!(
            m.histogram_count, m.count,
            "{}: histogram count equals op count",
            m.name
        );
        if m.count > 0 {
            assert!(m.min_us > 0, "{}: min > 0", m.name);
            assert!(m.min_us <= m.p50_us, "{}: min <= p50", m.name);
            assert!(m.p50_us <= m.p90_us, "{}: p50 <= p90", m.name);
            assert!(m.p90_us <= m.p99_us, "{}: p90 <= p99", m.name);
            assert!(m.p99_us <= m.p999_us, "{}: p99 <= p99.9", m.name);
            assert!(m.p999_us <= m.max_us, "{}: p99.9 <= max", m.name);
        }
    }
    let per_second: u64 = run.per_second.iter().map(|s| s.ops).sum();
    assert_eq!(
        per_second, run.primary.count,
        "the per-second series covers the primary measure"
    );
}
