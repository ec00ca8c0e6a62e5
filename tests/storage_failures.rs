//! Proves that a disk failure is fatal for writes and loses nothing acknowledged (rule R2, the
//! fsyncgate lesson): with a failpoint making fdatasync fail (EIO) or appends fail (ENOSPC),
//! the server stops without acknowledging the failed batch, and after a restart on a healthy
//! disk every write acknowledged before the failure is present.

mod common;

use common::{RawClient, ZooServer};

/// Creates nodes one at a time until the server stops answering; returns the acknowledged ones.
fn create_until_failure(server: &ZooServer) -> (Vec<String>, Option<String>) {
    let mut client = RawClient::resume(server.port(), 0, &[0; 16], 0).expect("handshake");
    let mut acked = Vec::new();
    for i in 0..10_000 {
        let path = format!("/n{i:05}");
        let frame = common::request_frame(
            i + 2,
            common::op::CREATE,
            &common::create_body(&path, &[7; 100], 0),
        );
        if client.send_raw(&frame).is_err() {
            return (acked, Some(path));
        }
        match client.read_response() {
            Ok(reply) if reply.err == 0 => acked.push(path),
            Ok(reply) => panic!("create {path} failed with {}", reply.err),
            Err(_) => return (acked, Some(path)),
        }
    }
    (acked, None)
}

fn check_failure_then_recovery(env: (&str, &str)) {
    let mut server = ZooServer::start_with_env(&[], &[env]);
    let (acked, failed_at) = create_until_failure(&server);
    assert!(failed_at.is_some(), "the failpoint never fired");
    assert!(
        !acked.is_empty(),
        "nothing was acknowledged before the failpoint"
    );
    let status = server.wait_for_exit();
    assert!(
        !status.success(),
        "a failed sync must stop the server with an error status"
    );
    assert!(
        server.log_text().contains("FATAL"),
        "the server says why it stopped"
    );
    server.set_env(&[]);
    server.restart();
    let mut client = RawClient::connect(server.port());
    for path in &acked {
        assert!(
            client.exists(path, false).is_ok(),
            "acknowledged {path} lost after the disk failure"
        );
    }
}

#[test]
fn failed_fdatasync_stops_the_server_and_no_acknowledged_write_is_lost() {
    check_failure_then_recovery(("ZOO_FAILPOINT_FSYNC_FAIL_AFTER", "40"));
}

#[test]
fn disk_full_stops_the_server_and_no_acknowledged_write_is_lost() {
    check_failure_then_recovery(("ZOO_FAILPOINT_ENOSPC_AFTER_BYTES", "8000"));
}
