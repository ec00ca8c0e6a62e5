//! Proves that a second server on a port that is already served refuses to start (as a
//! ZooKeeper server's bind would) instead of silently sharing it through SO_REUSEPORT: the
//! client port, and an ensemble member's quorum port.

mod common;

use std::process::{Command, Stdio};

use common::{TempDir, ZooServer, free_port};

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

#[test]
fn an_ensemble_member_whose_quorum_port_is_served_refuses_to_start() {
    // A previous process that has not exited yet accepts on the quorum port, bound as zoo
    // binds (SO_REUSEPORT, so a second bind would succeed and share it).
    let busy = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    busy.set_reuse_port(true).unwrap();
    busy.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    busy.listen(16).unwrap();
    let quorum_port = busy.local_addr().unwrap().as_socket().unwrap().port();
    let dir = TempDir::new("quorum");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("myid"), "1").unwrap();
    let cfg = dir.path().join("zoo.cfg");
    let config = format!(
        "dataDir={}\nclientPort={}\nserver.1=127.0.0.1:{quorum_port}:{}\nserver.2=127.0.0.1:{}:{}\n",
        data.display(),
        free_port(),
        free_port(),
        free_port(),
        free_port()
    );
    std::fs::write(&cfg, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_zoo"))
        .arg("server")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run zoo");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            panic!("the server started sharing a busy quorum port:\n{stderr}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(!status.success(), "the server exited successfully");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("cannot listen") && stderr.contains(&quorum_port.to_string()),
        "unexpected message: {stderr}"
    );
    drop(busy);
}
