//! The outstanding limit (`globalOutstandingLimit`, ARCHITECTURE.md rule R15): a shard with
//! that many requests in progress stops reading its sockets, and its connections read again
//! first come, first served. These tests start the real server and load it with clients
//! that keep more writes in flight than the limit allows.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;

use common::{Jute, RawClient, ZooServer, op, request_frame};

const LIMIT: usize = 10;
const HOGS: usize = 12;
const HOG_IN_FLIGHT: usize = 16;

/// Keeps `HOG_IN_FLIGHT` setData requests in flight until `stop`, counting the replies.
fn hog(port: u16, index: usize, replies: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let mut client = RawClient::connect(port);
    let path = format!("/hog{index}");
    client.create(&path, b"", 0).unwrap();
    let mut body = Vec::new();
    body.string(&path).buffer(b"some data").int(-1);
    for _ in 0..HOG_IN_FLIGHT {
        let xid = client.next_xid();
        client
            .send_raw(&request_frame(xid, op::SET_DATA, &body))
            .unwrap();
    }
    while !stop.load(Ordering::SeqCst) {
        let reply = client.read_response().unwrap();
        assert_eq!(reply.err, 0, "setData failed");
        replies.fetch_add(1, Ordering::SeqCst);
        let xid = client.next_xid();
        client
            .send_raw(&request_frame(xid, op::SET_DATA, &body))
            .unwrap();
    }
    for _ in 0..HOG_IN_FLIGHT {
        client.read_response().unwrap();
    }
}

#[test]
fn a_client_held_at_the_outstanding_limit_is_served_before_later_arrivals() {
    let limit = format!("globalOutstandingLimit={LIMIT}");
    let server = ZooServer::start(&["zoo.shards=1", &limit]);
    let port = server.port();
    let replies = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let hogs: Vec<_> = (0..HOGS)
        .map(|i| {
            let (replies, stop) = (replies.clone(), stop.clone());
            thread::spawn(move || hog(port, i, replies, stop))
        })
        .collect();
    common::wait_for("the hogs' first 2,000 replies", || {
        (replies.load(Ordering::SeqCst) >= 2_000).then_some(())
    });

    // Each call after the first finds the connection held: it had read its last request
    // while the hogs kept the shard at the limit. Count the hogs' replies that overtake it.
    let mut client = RawClient::connect(port);
    client.exists("/", false).unwrap();
    let mut overtaken = Vec::new();
    for _ in 0..50 {
        let before = replies.load(Ordering::SeqCst);
        client.exists("/", false).unwrap();
        overtaken.push(replies.load(Ordering::SeqCst) - before);
    }
    stop.store(true, Ordering::SeqCst);
    for hog in hogs {
        hog.join().unwrap();
    }

    // Queued first come, first served, the client waits for at most the connections ahead
    // of it in the queue, each reading what its client has sent (up to HOG_IN_FLIGHT
    // requests), plus the requests already in progress: about one round of every hog's
    // window. The bound allows four rounds. Before the queue, a held connection with no
    // request of its own in progress was only woken by a 1 ms poll, and the hogs, woken by
    // their replies, read first every time.
    let bound = (4 * HOGS * HOG_IN_FLIGHT) as u64;
    let worst = overtaken.iter().copied().max().unwrap();
    assert!(
        worst <= bound,
        "a read waited for {worst} of the hogs' writes (bound {bound}): {overtaken:?}"
    );
}
