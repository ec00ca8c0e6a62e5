//! Every acknowledged write survives a SIGKILL of the server (R2: durable before visible):
//! after a restart on the same data dir, nodes come back with identical data and Stat,
//! sessions can be resumed with their password (ephemerals intact), a wrong password is told
//! the session is expired, and a multi is present whole or not at all (R5).

mod common;

use common::*;

/// multi(ops) where each op is (opcode, body); returns the reply's err and per-op results
/// (op type, err) as the MultiResponse lists them.
fn multi(client: &mut RawClient, ops: &[(i32, Vec<u8>)]) -> (i32, Vec<(i32, i32)>) {
    let mut body = Vec::new();
    for (opcode, op_body) in ops {
        body.int(*opcode).boolean(false).int(-1);
        body.extend_from_slice(op_body);
    }
    body.int(-1).boolean(true).int(-1);
    let reply = client.call(op::MULTI, &body);
    let mut results = Vec::new();
    let mut c = Cursor::new(&reply.body);
    if c.remaining() == 0 {
        return (reply.err, results);
    }
    loop {
        let (kind, done, err) = (c.int(), c.boolean(), c.int());
        if done {
            break;
        }
        match kind {
            op::CREATE => {
                c.string();
            }
            op::SET_DATA => {
                Stat::decode(&mut c);
            }
            -1 => {
                c.int();
            }
            _ => {}
        }
        results.push((kind, err));
    }
    (reply.err, results)
}

#[test]
fn persistent_nodes_survive_kill_9_with_identical_data_and_stat() {
    let mut server = ZooServer::start(&[]);
    let mut client = RawClient::connect(server.port());
    client.create("/app", b"root data", 0).unwrap();
    client.create("/app/config", b"v1", 0).unwrap();
    client.set_data("/app/config", b"v2", -1).unwrap();
    client.set_data("/app/config", b"v3", 0).unwrap_err();
    client.set_data("/app/config", b"v3", 1).unwrap();
    client.create("/app/empty", b"", 0).unwrap();
    client.create("/app/gone", b"x", 0).unwrap();
    client.delete("/app/gone", -1).unwrap();
    // A sequential name carries the parent's stored cversion, the number of creates under it
    // (3: config, empty, gone); the Stat shows creates*2 - children (DataNode.copyStat).
    let seq = client.create("/app/seq-", b"s", 2).unwrap();
    assert_eq!(seq, "/app/seq-0000000003");
    assert_eq!(client.exists("/app", false).unwrap().cversion, 2 * 4 - 3);
    let big = vec![0xabu8; 500_000];
    client.create("/big", &big, 0).unwrap();

    let paths = ["/app", "/app/config", "/app/empty", seq.as_str(), "/big"];
    let before: Vec<(Vec<u8>, Stat)> = paths
        .iter()
        .map(|p| client.get_data(p, false).unwrap())
        .collect();
    let children_before = client.get_children("/app").unwrap();
    let last_zxid = client.last_zxid;

    server.kill9();
    drop(client);
    server.restart();

    let mut client = RawClient::connect(server.port());
    for (path, expected) in paths.iter().zip(&before) {
        let got = client.get_data(path, false).unwrap();
        assert_eq!(&got, expected, "{path} after restart");
    }
    assert_eq!(client.get_data("/app/config", false).unwrap().0, b"v3");
    assert_eq!(client.get_data("/app/config", false).unwrap().1.version, 2);
    assert_eq!(client.exists("/app/gone", false), Err(err::NO_NODE));
    let mut children_after = client.get_children("/app").unwrap();
    let mut children_before = children_before;
    children_after.sort();
    children_before.sort();
    assert_eq!(children_after, children_before);

    // The sequence counter (parent cversion) and zxids carry on from before the kill.
    let next = client.create("/app/seq-", b"s", 2).unwrap();
    assert_eq!(next, "/app/seq-0000000004");
    let (_, stat) = client.get_data(&next, false).unwrap();
    assert!(
        stat.czxid > last_zxid,
        "new zxid {:#x} must follow {last_zxid:#x}",
        stat.czxid
    );
}

#[test]
fn session_and_its_ephemeral_survive_restart_when_resumed_with_its_password() {
    let mut server = ZooServer::start(&[]);
    let port = server.port();
    let mut owner = RawClient::connect(port);
    let session_id = owner.session.session_id;
    let password = owner.session.password.clone();
    owner.create("/eph", b"mine", 1).unwrap();
    let (_, eph_stat) = owner.get_data("/eph", false).unwrap();
    assert_eq!(eph_stat.ephemeral_owner, session_id);
    let last_zxid = owner.last_zxid;

    server.kill9();
    drop(owner);
    server.restart();

    let mut resumed = RawClient::resume(port, session_id, &password, last_zxid).unwrap();
    assert_eq!(
        resumed.session.session_id, session_id,
        "the same session is resumed"
    );
    assert!(resumed.session.timeout_ms > 0);
    assert_eq!(resumed.session.password, password);
    let (data, stat) = resumed.get_data("/eph", false).unwrap();
    assert_eq!(data, b"mine");
    assert_eq!(stat, eph_stat);
    resumed.ping().unwrap();

    // Closing the resumed session deletes its ephemeral, as for any session.
    let reply = resumed.call(op::CLOSE_SESSION, &[]);
    assert_eq!(reply.err, 0);
    let mut other = RawClient::connect(port);
    assert_eq!(other.exists("/eph", false), Err(err::NO_NODE));
}

#[test]
fn resume_with_wrong_password_after_restart_is_told_session_expired() {
    let mut server = ZooServer::start(&[]);
    let port = server.port();
    let mut owner = RawClient::connect(port);
    let session_id = owner.session.session_id;
    let password = owner.session.password.clone();
    owner.create("/eph", b"mine", 1).unwrap();
    let last_zxid = owner.last_zxid;

    server.kill9();
    drop(owner);
    server.restart();

    let mut wrong = password.clone();
    wrong[0] ^= 0xff;
    let mut intruder = RawClient::resume(port, session_id, &wrong, last_zxid).unwrap();
    assert_eq!(intruder.session.session_id, 0, "expired: session id 0");
    assert_eq!(intruder.session.timeout_ms, 0, "expired: timeout 0");
    assert!(
        closed_by_peer(&mut intruder.stream),
        "the server closes after the expired response"
    );

    // The wrong password neither took over nor ended the session: the owner can resume it
    // and its ephemeral is still there.
    let mut resumed = RawClient::resume(port, session_id, &password, last_zxid).unwrap();
    assert_eq!(resumed.session.session_id, session_id);
    assert_eq!(resumed.get_data("/eph", false).unwrap().0, b"mine");
}

#[test]
fn multi_acknowledged_before_kill_is_whole_after_restart_and_failed_multi_left_nothing() {
    let mut server = ZooServer::start(&[]);
    let mut client = RawClient::connect(server.port());
    client.create("/m", b"m0", 0).unwrap();
    client.create("/m/old", b"old", 0).unwrap();

    let mut set = Vec::new();
    set.string("/m").buffer(b"m1").int(0);
    let mut del = Vec::new();
    del.string("/m/old").int(-1);
    let mut check = Vec::new();
    check.string("/m").int(1);
    let (e, results) = multi(
        &mut client,
        &[
            (op::CREATE, create_body("/m/a", b"a", 0)),
            (op::CREATE, create_body("/m/a/b", b"b", 0)),
            (op::SET_DATA, set),
            (op::DELETE, del),
            (op::CHECK, check),
        ],
    );
    assert_eq!(e, 0);
    assert_eq!(
        results,
        vec![
            (op::CREATE, 0),
            (op::CREATE, 0),
            (op::SET_DATA, 0),
            (op::DELETE, 0),
            (op::CHECK, 0)
        ]
    );

    // A multi whose last op fails (bad version) changes nothing. As in ZooKeeper, the reply
    // header says OK and the results carry the errors: OK for the ops before the failure.
    let mut bad_check = Vec::new();
    bad_check.string("/m").int(99);
    let (e, results) = multi(
        &mut client,
        &[
            (op::CREATE, create_body("/m/never", b"n", 0)),
            (op::CHECK, bad_check),
        ],
    );
    assert_eq!(e, 0);
    assert_eq!(results, vec![(-1, 0), (-1, err::BAD_VERSION)]);

    let snapshot = |c: &mut RawClient| {
        let mut out = Vec::new();
        for p in ["/m", "/m/a", "/m/a/b"] {
            out.push(c.get_data(p, false).unwrap());
        }
        out
    };
    let before = snapshot(&mut client);
    // One multi, one zxid (R5).
    assert_eq!(before[1].1.czxid, before[2].1.czxid);
    assert_eq!(before[0].1.mzxid, before[1].1.czxid);

    server.kill9();
    drop(client);
    server.restart();

    let mut client = RawClient::connect(server.port());
    assert_eq!(snapshot(&mut client), before);
    assert_eq!(client.get_data("/m", false).unwrap().0, b"m1");
    assert_eq!(client.exists("/m/old", false), Err(err::NO_NODE));
    assert_eq!(client.exists("/m/never", false), Err(err::NO_NODE));
    let mut children = client.get_children("/m").unwrap();
    children.sort();
    assert_eq!(children, vec!["a".to_owned()]);
}

/// An expired session's close is a txn like any other (R2): it is in the log before anyone
/// sees its ephemeral vanish, so a crash right after the expiry cannot bring the session or
/// its ephemeral back (another client may already hold the lock that ephemeral stood for).
#[test]
fn expired_session_stays_expired_and_its_ephemeral_gone_after_kill_9() {
    let mut server = ZooServer::start(&["tickTime=100"]);
    let port = server.port();
    let mut owner = RawClient::resume_with_timeout(port, 1500).unwrap();
    let session_id = owner.session.session_id;
    let password = owner.session.password.clone();
    owner.create("/lock-holder", b"mine", 1).unwrap();
    let last_zxid = owner.last_zxid;
    // The owner goes silent (no pings, no close): the server expires the session.
    let mut watcher = RawClient::connect(port);
    wait_for("the expired session's ephemeral to vanish", || {
        (watcher.exists("/lock-holder", false) == Err(err::NO_NODE)).then_some(())
    });
    drop(watcher);

    server.kill9();
    drop(owner);
    server.restart();

    let mut after = RawClient::connect(port);
    assert_eq!(
        after.exists("/lock-holder", false),
        Err(err::NO_NODE),
        "the ephemeral of an expired session came back after a restart"
    );
    let resumed = RawClient::resume(port, session_id, &password, last_zxid).unwrap();
    assert_eq!(
        resumed.session.session_id, 0,
        "the expired session stays expired"
    );
}
