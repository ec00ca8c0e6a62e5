//! Reads against a lazily published tree (ARCHITECTURE.md rule R8, `server::publication`):
//! the commit executor hands the shards a new tree only when they read, so a shard can hold
//! replies and watch triggers of txns its tree lacks. These tests start the real server and
//! show that a read then waits for a tree with those txns, so that a client sees what was
//! acknowledged to it (or what a `sync` covered) and no watch misses a change.

mod common;

use common::{Cursor, Jute, RawClient, ZooServer};

const SYNC: i32 = 9;

fn mntr_value(server: &ZooServer, key: &str) -> u64 {
    let text = common::four_letter(server.port(), "mntr").expect("mntr");
    text.lines()
        .find_map(|line| {
            let mut parts = line.split_whitespace();
            (parts.next() == Some(key)).then(|| parts.next().unwrap_or("0").parse().unwrap())
        })
        .unwrap_or_else(|| panic!("mntr has no {key}:\n{text}"))
}

#[test]
fn writes_with_no_reads_are_published_seldom_and_a_read_still_sees_every_one() {
    let server = ZooServer::start(&["zoo.shards=1"]);
    let mut writer = RawClient::connect(server.port());
    writer.create("/lazy", b"", 0).unwrap();
    let before = mntr_value(&server, "zoo_tree_publications");
    for i in 0..300 {
        writer.create(&format!("/lazy/n{i}"), b"x", 0).unwrap();
    }
    let published = mntr_value(&server, "zoo_tree_publications") - before;
    // One batch per create (each waits for its reply): eager publication made 300. The bound
    // allows one publication per refresh interval however slow the machine is, and is far
    // from 300 unless each create takes a refresh interval (SHARD_TREE_REFRESH_MS).
    assert!(
        published < 100,
        "{published} trees published for 300 creates with no reads"
    );
    let mut reader = RawClient::connect(server.port());
    let children = reader.get_children("/lazy").unwrap();
    assert_eq!(children.len(), 300, "a read sees every acknowledged create");
}

#[test]
fn a_session_reads_its_own_writes_when_its_shard_tree_is_behind() {
    let server = ZooServer::start(&["zoo.shards=1"]);
    let mut client = RawClient::connect(server.port());
    client.create("/own", b"0", 0).unwrap();
    for i in 1..=200 {
        // Two writes, then reads: the first batch may publish (a read came before it), the
        // second leaves the shard behind until the read asks for a tree.
        client
            .set_data("/own", format!("{i}a").as_bytes(), -1)
            .unwrap();
        client.create(&format!("/own/c{i}"), b"", 0).unwrap();
        let (data, stat) = client.get_data("/own", false).unwrap();
        assert_eq!(data, format!("{i}a").as_bytes());
        assert_eq!(stat.num_children, i);
        client.exists(&format!("/own/c{i}"), false).unwrap();
    }
}

#[test]
fn another_session_on_the_same_shard_sees_an_acknowledged_write() {
    let server = ZooServer::start(&["zoo.shards=1"]);
    let mut writer = RawClient::connect(server.port());
    let mut reader = RawClient::connect(server.port());
    writer.create("/seen", b"", 0).unwrap();
    for i in 0..200 {
        writer.set_data("/seen", &i32::to_be_bytes(i), -1).unwrap();
        writer.create(&format!("/seen/k{i}"), b"", 0).unwrap();
        let (data, _) = reader.get_data("/seen", false).unwrap();
        assert_eq!(data, i32::to_be_bytes(i));
        reader.exists(&format!("/seen/k{i}"), false).unwrap();
    }
}

#[test]
fn after_sync_a_read_on_any_shard_sees_writes_acknowledged_before_it() {
    let server = ZooServer::start(&["zoo.shards=2"]);
    let mut writer = RawClient::connect(server.port());
    // Several readers, so that some land on the other shard (SO_REUSEPORT spreads them).
    let mut readers: Vec<RawClient> = (0..6).map(|_| RawClient::connect(server.port())).collect();
    writer.create("/synced", b"", 0).unwrap();
    for i in 0..100 {
        writer.create(&format!("/synced/s{i}"), b"", 0).unwrap();
        for reader in &mut readers {
            let mut body = Vec::new();
            body.string("/synced");
            let reply = reader.call(SYNC, &body);
            assert_eq!(reply.err, 0);
            assert_eq!(Cursor::new(&reply.body).string(), "/synced");
            reader.exists(&format!("/synced/s{i}"), false).unwrap();
        }
    }
}

#[test]
fn a_watch_set_while_the_shard_is_behind_misses_no_change() {
    let server = ZooServer::start(&["zoo.shards=1"]);
    let mut writer = RawClient::connect(server.port());
    let mut watcher = RawClient::connect(server.port());
    for round in 0..50 {
        let p = format!("/w{round}");
        // No read since the last publication: the create's tree stays unpublished, and the
        // shard has already processed its NodeCreated trigger. A read from the old tree
        // would answer NONODE and set an exists-watch that no later trigger would fire for
        // the create, leaving the watcher with a wrong view and no event.
        writer.create(&p, b"v0", 0).unwrap();
        let stat = watcher
            .exists(&p, true)
            .unwrap_or_else(|e| panic!("round {round}: exists after the create: error {e}"));
        assert_eq!(stat.version, 0);
        writer.set_data(&p, b"v1", -1).unwrap();
        let event = loop {
            if let Some(event) = watcher.events.pop() {
                break event;
            }
            let reply = watcher.read_reply().expect("the watch event arrives");
            assert_eq!(reply.xid, -1, "only an event is outstanding");
            watcher.events.push(reply);
        };
        let mut c = Cursor::new(&event.body);
        assert_eq!(c.int(), 3, "NodeDataChanged");
        assert_eq!(c.int(), 3, "SyncConnected");
        assert_eq!(c.string(), p);
        let (data, _) = watcher.get_data(&p, false).unwrap();
        assert_eq!(data, b"v1");
    }
}

#[test]
fn pipelined_reads_between_writes_are_answered_in_order_while_trees_lag() {
    let server = ZooServer::start(&["zoo.shards=2"]);
    for _connection in 0..4 {
        let mut client = RawClient::connect(server.port());
        client.create("/pipe", b"", 0).ok();
        // Writes and reads in flight together: some reads wait for a tree behind a write
        // that is already in the commit path, whose reply must then wait for them (R1).
        let rounds = 400;
        let mut frames = Vec::new();
        let mut expected = Vec::new();
        for i in 0..rounds {
            let xid = client.next_xid();
            let mut body = Vec::new();
            body.string("/pipe").buffer(&i32::to_be_bytes(i)).int(-1);
            frames.extend(common::request_frame(xid, common::op::SET_DATA, &body));
            expected.push((xid, "set", i));
            let xid = client.next_xid();
            let mut body = Vec::new();
            body.string("/pipe").boolean(false);
            frames.extend(common::request_frame(xid, common::op::GET_DATA, &body));
            expected.push((xid, "get", i));
        }
        client.send_raw(&frames).unwrap();
        for (xid, kind, i) in expected {
            let reply = client.read_response().expect("every request is answered");
            assert_eq!(reply.xid, xid, "replies in request order (R1)");
            assert_eq!(reply.err, 0, "{kind} {i}");
            if kind == "get" {
                let mut c = Cursor::new(&reply.body);
                let data = c.buffer().unwrap();
                let seen = i32::from_be_bytes(data[..4].try_into().unwrap());
                // Its own earlier set, and not the next one, which is held until it is served.
                assert_eq!(seen, i, "a read between set {i} and set {}", i + 1);
            }
        }
    }
}

#[test]
fn a_read_between_two_writes_of_a_session_sees_the_first_and_not_the_second() {
    // ZooKeeper serves a session's requests in order: a read sent after one write and before
    // the next sees the first applied and the second not yet (R1). Sent back to back, the two
    // writes could share a commit batch; the second must not reach the commit path before
    // the read between them has been served.
    let server = ZooServer::start(&["zoo.shards=1"]);
    let mut client = RawClient::connect(server.port());
    client.create("/order", b"", 0).unwrap();
    for i in 0..200 {
        let (first, second) = (format!("/order/a{i}"), format!("/order/b{i}"));
        let mut frames = Vec::new();
        let w0 = client.next_xid();
        frames.extend(common::request_frame(
            w0,
            common::op::CREATE,
            &common::create_body(&first, b"", 0),
        ));
        let r1 = client.next_xid();
        let mut body = Vec::new();
        body.string(&second).boolean(false);
        frames.extend(common::request_frame(r1, common::op::EXISTS, &body));
        let r2 = client.next_xid();
        let mut body = Vec::new();
        body.string(&first).boolean(false);
        frames.extend(common::request_frame(r2, common::op::EXISTS, &body));
        let w1 = client.next_xid();
        frames.extend(common::request_frame(
            w1,
            common::op::CREATE,
            &common::create_body(&second, b"", 0),
        ));
        client.send_raw(&frames).unwrap();
        let replies: Vec<_> = (0..4).map(|_| client.read_response().unwrap()).collect();
        assert_eq!(
            replies.iter().map(|r| r.xid).collect::<Vec<_>>(),
            [w0, r1, r2, w1],
            "replies in request order (R1)"
        );
        assert_eq!(replies[0].err, 0);
        assert_eq!(
            replies[1].err,
            common::err::NO_NODE,
            "round {i}: a read saw a write its session sent after it"
        );
        assert_eq!(
            replies[2].err, 0,
            "round {i}: a read missed its session's earlier write"
        );
        assert_eq!(replies[3].err, 0);
    }
}
