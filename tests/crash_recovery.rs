//! Proves rule R2 (durable before visible) and R5 (multi is atomic) across real crashes: several
//! sessions write (creates and two-node multis) while the zoo process is SIGKILLed at a random
//! moment; after every restart each acknowledged write is present and no multi is half applied.
//! `ZOO_CRASH_CYCLES` sets the number of cycles (default 200), `ZOO_CRASH_SEED` the seed.

mod common;

use std::collections::HashSet;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Cursor, Jute, Lcg, RawClient, ZooServer, create_body, op, request_frame};

const WRITERS: usize = 3;

/// A multi creating `a` and `b`, as the Java client encodes it.
fn multi_body(a: &str, b: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for p in [a, b] {
        body.int(op::CREATE).boolean(false).int(-1);
        body.extend_from_slice(&create_body(p, b"m", 0));
    }
    body.int(-1).boolean(true).int(-1);
    body
}

/// One request/reply without panicking when the server dies under us.
fn call(client: &mut RawClient, xid: i32, op_code: i32, body: &[u8]) -> io::Result<(i32, Vec<u8>)> {
    client.send_raw(&request_frame(xid, op_code, body))?;
    let reply = client.read_response()?;
    if reply.xid != xid {
        return Err(io::Error::other("reply out of order"));
    }
    Ok((reply.err, reply.body))
}

#[derive(Default)]
struct Acked {
    creates: Vec<String>,
    multis: Vec<(String, String)>,
    /// Every multi sent, acknowledged or not: each must be all-or-nothing after the crash.
    attempted_multis: Vec<(String, String)>,
}

fn writer(port: u16, cycle: usize, writer: usize, stop: Arc<AtomicBool>) -> Acked {
    let mut acked = Acked::default();
    let Ok(mut client) = RawClient::resume(port, 0, &[0; 16], 0) else {
        return acked;
    };
    let mut xid = 1;
    while !stop.load(Ordering::Relaxed) {
        xid += 1;
        let name = format!("c{cycle}-w{writer}-{xid}");
        let result = if xid % 3 == 0 {
            let (a, b) = (format!("/crash/{name}-a"), format!("/crash/{name}-b"));
            acked.attempted_multis.push((a.clone(), b.clone()));
            call(&mut client, xid, op::MULTI, &multi_body(&a, &b)).map(|(err, body)| {
                // Top-level err is 0 even on failure; the first result says whether it applied.
                let first_result_type = Cursor::new(&body).int();
                if err == 0 && first_result_type == op::CREATE {
                    acked.multis.push((a, b));
                }
            })
        } else {
            let p = format!("/crash/{name}");
            call(&mut client, xid, op::CREATE, &create_body(&p, b"c", 0)).map(|(err, _)| {
                if err == 0 {
                    acked.creates.push(p);
                }
            })
        };
        if result.is_err() {
            break;
        }
    }
    acked
}

fn children_of_crash(port: u16) -> HashSet<String> {
    let mut client = RawClient::connect(port);
    client
        .get_children("/crash")
        .expect("/crash exists after restart")
        .into_iter()
        .map(|name| format!("/crash/{name}"))
        .collect()
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_write_and_no_multi_is_half_applied() {
    let cycles: usize = std::env::var("ZOO_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let seed: u64 = std::env::var("ZOO_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash test: {cycles} cycles, ZOO_CRASH_SEED={seed}");
    let mut rng = Lcg(seed);
    // Small snapCount: snapshots and log rolls happen many times during the run.
    let mut server = ZooServer::start(&["snapCount=97"]);
    RawClient::connect(server.port())
        .create("/crash", b"", 0)
        .expect("create /crash");
    let mut all_creates: Vec<String> = Vec::new();
    let mut all_multis: Vec<(String, String)> = Vec::new();
    let mut total_acked = 0usize;
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let port = server.port();
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let stop = stop.clone();
                std::thread::spawn(move || writer(port, cycle, w, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(2 + rng.next() % 40));
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        let mut attempted = Vec::new();
        for handle in writers {
            let acked = handle.join().expect("writer thread");
            total_acked += acked.creates.len() + acked.multis.len();
            all_creates.extend(acked.creates);
            all_multis.extend(acked.multis);
            attempted.extend(acked.attempted_multis);
        }
        server.restart();
        let present = children_of_crash(server.port());
        for p in &all_creates {
            assert!(
                present.contains(p),
                "cycle {cycle} (seed {seed}): acknowledged create {p} lost"
            );
        }
        for (a, b) in &all_multis {
            assert!(
                present.contains(a) && present.contains(b),
                "cycle {cycle} (seed {seed}): acknowledged multi {a} + {b} lost"
            );
        }
        for (a, b) in &attempted {
            assert_eq!(
                present.contains(a),
                present.contains(b),
                "cycle {cycle} (seed {seed}): multi {a} + {b} half applied"
            );
        }
    }
    eprintln!("crash test: {total_acked} acknowledged writes survived {cycles} SIGKILLs");
    assert!(
        total_acked > 0,
        "the writers never got a write acknowledged"
    );
}
