//! A server that closes the connection mid-run is reported as an error (CONNECTIONLOSS counted,
//! exit status 1, the requests without a reply counted), not a panic; one that closes every
//! connection right after the handshake makes the run fail cleanly (exit status 2).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{TempDir, read_run, run_loadgen, text};

fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let len = i32::from_be_bytes(len);
    if !(0..=1 << 20).contains(&len) {
        return None;
    }
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body).ok()?;
    Some(body)
}

/// ConnectResponse with the trailing readOnly byte (the loadgen sends one).
fn handshake_reply(session: i64) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&0i32.to_be_bytes());
    body.extend_from_slice(&30_000i32.to_be_bytes());
    body.extend_from_slice(&session.to_be_bytes());
    body.extend_from_slice(&16i32.to_be_bytes());
    body.extend_from_slice(&[0; 16]);
    body.push(0);
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// A fake server: accepts the handshake, answers the first `replies` requests of each
/// connection with a bare OK header, then closes the connection.
fn fake_server(replies: usize) -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = stop.clone();
    std::thread::spawn(move || {
        let mut session = 1i64;
        for stream in listener.incoming() {
            if stop_flag.load(Ordering::SeqCst) {
                return;
            }
            let Ok(mut stream) = stream else { continue };
            session += 1;
            let id = session;
            std::thread::spawn(move || {
                if read_frame(&mut stream).is_none() {
                    return;
                }
                if stream.write_all(&handshake_reply(id)).is_err() {
                    return;
                }
                for _ in 0..replies {
                    let Some(request) = read_frame(&mut stream) else {
                        return;
                    };
                    let mut reply = 16i32.to_be_bytes().to_vec();
                    reply.extend_from_slice(&request[0..4]); // xid
                    reply.extend_from_slice(&1i64.to_be_bytes()); // zxid
                    reply.extend_from_slice(&0i32.to_be_bytes()); // err
                    if stream.write_all(&reply).is_err() {
                        return;
                    }
                }
                let _ = stream.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    (port, stop)
}

const READS: &str = "sessions = 2\nin_flight = 4\nkey_count = 4\nwarmup_secs = 0\nduration_secs = 2\n[mix]\nget = 1\n";

#[test]
fn server_closing_mid_run_is_an_error_not_a_panic() {
    // Enough replies for setup (5 parents + close) and pre-population (4 keys + close).
    let (port, stop) = fake_server(50);
    let dir = TempDir::new("loss");
    let workload = dir.file("reads.toml", READS);
    let json = dir.path().join("out.json");
    let server = format!("127.0.0.1:{port}");
    let out = run_loadgen(&[
        workload.to_str().unwrap(),
        "--server",
        &server,
        "--json",
        json.to_str().unwrap(),
    ]);
    stop.store(true, Ordering::SeqCst);
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit status 1 = finished with errors\n{stderr}"
    );
    let run = read_run(&json);
    assert!(
        run.errors.get("CONNECTIONLOSS (-4)").copied().unwrap_or(0) >= 1,
        "{:?}",
        run.errors
    );
    assert!(
        run.lost_requests > 0,
        "in-flight requests are counted as lost"
    );
    assert!(
        run.messages
            .iter()
            .any(|m| m.contains("closed the connection")),
        "{:?}",
        run.messages
    );
    assert!(text(&out.stdout).contains("CONNECTIONLOSS"));
}

#[test]
fn server_closing_after_every_handshake_fails_the_run_cleanly() {
    let (port, stop) = fake_server(0);
    let dir = TempDir::new("loss");
    let workload = dir.file("reads.toml", READS);
    let server = format!("127.0.0.1:{port}");
    let out = run_loadgen(&[workload.to_str().unwrap(), "--server", &server]);
    stop.store(true, Ordering::SeqCst);
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("closed the connection"), "{stderr}");
}

#[test]
fn nothing_listening_fails_the_run_cleanly() {
    let port = common::free_port();
    let dir = TempDir::new("loss");
    let workload = dir.file("reads.toml", READS);
    let server = format!("127.0.0.1:{port}");
    let out = run_loadgen(&[workload.to_str().unwrap(), "--server", &server]);
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&server), "{stderr}");
}
