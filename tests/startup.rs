//! Proves that a second server on a port that is already served refuses to start (as a
//! ZooKeeper server's bind would) instead of silently sharing it through SO_REUSEPORT.

mod common;

use std::process::{Command, Stdio};

use common::{TempDir, ZooServer};

#[test]
fn a_second_server_on_a_busy_port_refuses_to_start() {
    let first = ZooServer::start(&[]);
    let dir = TempDir::new("second");
    let cfg = dir.path().join("zoo.cfg");
    let config = format!(
        "dataDir={}\nclientPort={}\n",
        dir.path().join("data").display(),
        first.port()
    );
    std::fs::write(&cfg, config).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_zoo"))
        .arg("server")
        .arg(&cfg)
        .stdin(Stdio::null())
        .output()
        .expect("run a second zoo");
    assert!(
        !output.status.success(),
        "the second server started on a busy port"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot listen"),
        "unexpected message: {stderr}"
    );
}
