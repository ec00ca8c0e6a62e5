//! Bad client input (malformed frames and records, invalid paths, unknown opcodes, refused
//! four-letter words, dropped connections) affects only the offending connection: the server
//! stays up and a bystander session opened beforehand keeps working (ARCHITECTURE.md, "Failure
//! handling").

mod common;

use common::*;

/// A server plus a bystander session opened before the bad input is sent.
struct Setup {
    server: ZooServer,
    bystander: RawClient,
}

impl Setup {
    fn new(extra_cfg_lines: &[&str]) -> Setup {
        let server = ZooServer::start(extra_cfg_lines);
        let mut bystander = RawClient::connect(server.port());
        bystander
            .create("/bystander", b"before", 0)
            .expect("bystander create");
        Setup { server, bystander }
    }

    /// The bystander session still reads and writes, a new session can be opened, and the
    /// server process is alive.
    fn assert_unaffected(mut self) {
        self.server.assert_alive();
        let by = &mut self.bystander;
        by.ping().expect("bystander ping");
        let stat = by
            .set_data("/bystander", b"after", -1)
            .expect("bystander setData");
        assert_eq!(stat.version, 1);
        let (data, _) = by.get_data("/bystander", false).expect("bystander getData");
        assert_eq!(data, b"after");
        by.create("/bystander/child", b"c", 0)
            .expect("bystander create child");
        by.delete("/bystander/child", -1)
            .expect("bystander delete child");
        let mut fresh = RawClient::connect(self.server.port());
        let (data, _) = fresh
            .get_data("/bystander", false)
            .expect("new session getData");
        assert_eq!(data, b"after");
        self.server.assert_alive();
    }
}

/// Expects the server to close `client`'s connection without ever sending a successful reply
/// (an error reply before the close is allowed).
fn assert_closed_without_success(client: &mut RawClient, what: &str) {
    let frames = client.expect_closed_by_server();
    for f in &frames {
        assert_ne!(
            f.err, 0,
            "{what}: the server answered a malformed request with success: {f:?}"
        );
    }
}

#[test]
fn negative_frame_length_closes_only_that_connection() {
    let setup = Setup::new(&[]);
    let port = setup.server.port();

    // After the handshake: length -1, then -2^31.
    for length in [-1i32, i32::MIN] {
        let mut bad = RawClient::connect(port);
        bad.send_raw(&length.to_be_bytes()).unwrap();
        assert_closed_without_success(&mut bad, &format!("length {length}"));
    }
    // As the very first frame (in place of the ConnectRequest).
    let mut raw = RawClient::socket(port);
    use std::io::Write;
    raw.write_all(&(-16i32).to_be_bytes()).unwrap();
    raw.write_all(&[0u8; 16]).unwrap();
    assert!(
        closed_by_peer(&mut raw),
        "a negative ConnectRequest length must close"
    );

    setup.assert_unaffected();
}

#[test]
fn oversized_frame_length_closes_connection_without_waiting_for_the_body() {
    let setup = Setup::new(&[]);
    let port = setup.server.port();

    // jute.maxbuffer defaults to 0xfffff; one byte more is rejected from the prefix alone
    // (the body is never sent, so a server waiting for it would keep the connection open).
    for length in [0x10_0000i32, i32::MAX] {
        let mut bad = RawClient::connect(port);
        bad.send_raw(&length.to_be_bytes()).unwrap();
        bad.send_raw(&request_frame(5, op::GET_DATA, &[])[4..])
            .unwrap();
        assert_closed_without_success(&mut bad, &format!("length {length:#x}"));
    }
    let mut raw = RawClient::socket(port);
    use std::io::Write;
    raw.write_all(&0x10_0000i32.to_be_bytes()).unwrap();
    assert!(
        closed_by_peer(&mut raw),
        "an oversized ConnectRequest length must close"
    );

    setup.assert_unaffected();
}

#[test]
fn frame_of_exactly_jute_maxbuffer_bytes_is_accepted() {
    let setup = Setup::new(&[]);
    let mut client = RawClient::connect(setup.server.port());
    // getData("/bystander") padded with trailing bytes up to 0xfffff bytes of payload:
    // jute ignores bytes after the record, and the frame is within the limit.
    let mut body = Vec::new();
    body.string("/bystander").boolean(false);
    let mut payload = Vec::new();
    payload.int(9).int(op::GET_DATA);
    payload.extend_from_slice(&body);
    payload.resize(0xfffff, 0);
    client.send_raw(&frame(&payload)).unwrap();
    let reply = client.read_response().expect("reply to a maximal frame");
    assert_eq!(
        (reply.xid, reply.err),
        (9, 0),
        "maximal frame must be served"
    );
    assert_eq!(Cursor::new(&reply.body).buffer().unwrap(), b"before");
    client.ping().expect("connection still usable");
    setup.assert_unaffected();
}

#[test]
fn truncated_record_closes_connection() {
    let mut setup = Setup::new(&[]);
    let port = setup.server.port();

    // zoo closes the connection on a record that does not decode (ARCHITECTURE.md, "Failure
    // handling"). Apache ZooKeeper 3.8.0 instead answers MARSHALLINGERROR (-5) and keeps the
    // connection; both never answer with success, which is what this test pins down.
    // getData whose path claims 10 bytes but the frame ends after 3 of them.
    let mut body = Vec::new();
    body.int(10);
    body.extend_from_slice(b"/by");
    let mut bad = RawClient::connect(port);
    bad.send_raw(&request_frame(3, op::GET_DATA, &body))
        .unwrap();
    assert_closed_without_success(&mut bad, "truncated getData path");

    // create whose frame ends inside the flags int.
    let full = create_body("/truncated", b"x", 0);
    let mut bad = RawClient::connect(port);
    bad.send_raw(&request_frame(4, op::CREATE, &full[..full.len() - 2]))
        .unwrap();
    assert_closed_without_success(&mut bad, "truncated create flags");

    // A frame too short for the RequestHeader itself (xid plus half an opcode).
    let mut bad = RawClient::connect(port);
    bad.send_raw(&frame(&[0, 0, 0, 5, 0, 0])).unwrap();
    assert_closed_without_success(&mut bad, "truncated request header");

    // A ConnectRequest cut inside its password buffer.
    let mut raw = RawClient::socket(port);
    let connect = connect_request(0, 10_000, 0, &[0; 16]);
    let cut = frame(&connect[4..connect.len() - 10]);
    use std::io::Write;
    raw.write_all(&cut).unwrap();
    assert!(
        closed_by_peer(&mut raw),
        "a truncated ConnectRequest must close"
    );

    assert_eq!(
        setup.bystander.exists("/truncated", false),
        Err(err::NO_NODE)
    );
    setup.assert_unaffected();
}

#[test]
fn vector_count_or_length_larger_than_frame_closes_connection() {
    let mut setup = Setup::new(&[]);
    let port = setup.server.port();

    // create("/v", "x") with an ACL vector count of 0x7fffffff and one ACL actually present.
    let mut body = Vec::new();
    body.string("/v").buffer(b"x").int(0x7fff_ffff);
    body.int(31).string("world").string("anyone").int(0);
    let mut bad = RawClient::connect(port);
    bad.send_raw(&request_frame(3, op::CREATE, &body)).unwrap();
    assert_closed_without_success(&mut bad, "ACL count 0x7fffffff");

    // getData whose path length is 0x7ffffff0.
    let mut body = Vec::new();
    body.int(0x7fff_fff0).extend_from_slice(b"/v\0");
    let mut bad = RawClient::connect(port);
    bad.send_raw(&request_frame(4, op::GET_DATA, &body))
        .unwrap();
    assert_closed_without_success(&mut bad, "path length 0x7ffffff0");

    // multi whose create carries data of length 0x40000000.
    let mut body = Vec::new();
    body.int(op::CREATE).boolean(false).int(-1);
    body.string("/v").int(0x4000_0000).extend_from_slice(b"xyz");
    let mut bad = RawClient::connect(port);
    bad.send_raw(&request_frame(5, op::MULTI, &body)).unwrap();
    assert_closed_without_success(&mut bad, "multi data length 0x40000000");

    assert_eq!(setup.bystander.exists("/v", false), Err(err::NO_NODE));
    setup.assert_unaffected();
}

/// Creates each path on one connection, expecting `expected` for every one, and checks the
/// connection stays usable and nothing was created.
fn create_invalid_paths(setup: Setup, paths: &[&str], expected: i32) {
    let mut client = RawClient::connect(setup.server.port());
    for path in paths {
        assert_eq!(
            client.create(path, b"x", 0),
            Err(expected),
            "create({path:?})"
        );
        // Same connection, next request: still served.
        let (data, _) = client
            .get_data("/bystander", false)
            .expect("getData after a rejected create");
        assert_eq!(data, b"before");
    }
    let mut root = client.get_children("/").unwrap();
    root.sort();
    assert_eq!(root, ["bystander", "zookeeper"], "nothing created");
    assert_eq!(
        client.get_children("/bystander").unwrap(),
        Vec::<String>::new()
    );
    client.ping().unwrap();
    setup.assert_unaffected();
}

#[test]
fn invalid_path_gets_badarguments_and_connection_stays_usable() {
    // ZooKeeper's PrepRequestProcessor looks up the parent first; with the parent present (or
    // no slash at all) the path check answers BADARGUMENTS (checked against Apache ZooKeeper
    // 3.8.0).
    let paths = [
        "",
        "noslash",
        "/bystander/",
        "/bystander/.",
        "/bystander/..",
        "/bystander/\u{1}x",
    ];
    create_invalid_paths(Setup::new(&[]), &paths, err::BAD_ARGUMENTS);
}

#[test]
fn invalid_path_under_a_missing_parent_gets_nonode_as_in_zookeeper() {
    // Apache ZooKeeper 3.8.0 answers these with NONODE: the parent ("a", "/a/", "/a",
    // "/bystander/", "/bystander/.") is looked up, and found missing, before the path itself
    // is validated.
    let paths = ["a/b", "/a//b", "/a/", "/bystander//b", "/bystander/./b"];
    create_invalid_paths(Setup::new(&[]), &paths, err::NO_NODE);
}

#[test]
fn unknown_opcode_gets_unimplemented_then_close() {
    let setup = Setup::new(&[]);
    let port = setup.server.port();
    // 999 is no opcode; 0 (notification) is server-to-client only.
    for (xid, opcode) in [(7, 999), (8, 0), (9, -5)] {
        let mut bad = RawClient::connect(port);
        bad.send_raw(&request_frame(xid, opcode, &[0, 0, 0, 1, b'/']))
            .unwrap();
        let frames = bad.expect_closed_by_server();
        assert_eq!(
            frames.len(),
            1,
            "opcode {opcode}: one reply, then close: {frames:?}"
        );
        assert_eq!(
            (frames[0].xid, frames[0].err),
            (xid, err::UNIMPLEMENTED),
            "opcode {opcode}"
        );
    }
    setup.assert_unaffected();
}

#[test]
fn top_level_check_gets_unimplemented_then_close() {
    let setup = Setup::new(&[]);
    // check (13) is only valid inside a multi (zk-protocol.md §1: not in Request.isValid()).
    // Apache ZooKeeper 3.8.0 leaves it unanswered; zoo answers UNIMPLEMENTED and closes.
    let mut body = Vec::new();
    body.string("/bystander").int(0);
    let mut bad = RawClient::connect(setup.server.port());
    bad.send_raw(&request_frame(11, op::CHECK, &body)).unwrap();
    let frames = bad.expect_closed_by_server();
    assert_eq!(frames.len(), 1, "one reply, then close: {frames:?}");
    assert_eq!((frames[0].xid, frames[0].err), (11, err::UNIMPLEMENTED));
    setup.assert_unaffected();
}

#[test]
fn non_whitelisted_four_letter_word_is_refused_with_zookeeper_text() {
    let setup = Setup::new(&["4lw.commands.whitelist=srvr"]);
    let port = setup.server.port();
    for command in ["ruok", "mntr", "stat", "envi"] {
        assert_eq!(
            four_letter(port, command).unwrap(),
            format!("{command} is not executed because it is not in the whitelist.\n")
        );
    }
    // srvr is always allowed.
    assert!(
        four_letter(port, "srvr")
            .unwrap()
            .contains("Zookeeper version:")
    );
    setup.assert_unaffected();
}

#[test]
fn garbage_bytes_close_the_connection() {
    let setup = Setup::new(&[]);
    let port = setup.server.port();
    let http = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let noise: Vec<u8> = (0u32..256)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();

    // After the handshake: an HTTP request ("GET " as a length is 0x47455420), noise starting
    // with 0xde (a negative length), and a well-framed payload of noise (its "opcode",
    // 0xefab6622, is no opcode).
    for (what, bytes) in [
        ("http", http.to_vec()),
        ("noise", [&[0xde, 0xad, 0xbe, 0xef][..], &noise].concat()),
        ("framed noise", frame(&noise)),
    ] {
        let mut bad = RawClient::connect(port);
        bad.send_raw(&bytes).unwrap();
        assert_closed_without_success(&mut bad, what);
    }
    // Before the handshake: HTTP on the client port.
    let mut raw = RawClient::socket(port);
    use std::io::Write;
    raw.write_all(http).unwrap();
    assert!(
        closed_by_peer(&mut raw),
        "HTTP in place of a ConnectRequest must close"
    );

    setup.assert_unaffected();
}

#[test]
fn connection_dropped_mid_frame_leaves_server_healthy() {
    let mut setup = Setup::new(&[]);
    let port = setup.server.port();
    use std::io::Write;

    // Half a create frame, then close: the create must not happen.
    let create = request_frame(2, op::CREATE, &create_body("/half", b"x", 0));
    let mut bad = RawClient::connect(port);
    bad.send_raw(&create[..create.len() / 2]).unwrap();
    drop(bad);

    // Only the length prefix, then close.
    let mut bad = RawClient::connect(port);
    bad.send_raw(&create[..4]).unwrap();
    drop(bad);

    // Half a ConnectRequest, then close.
    let mut raw = RawClient::socket(port);
    let connect = connect_request(0, 10_000, 0, &[0; 16]);
    raw.write_all(&connect[..connect.len() / 2]).unwrap();
    drop(raw);

    // Two bytes only: not even a length prefix.
    let mut raw = RawClient::socket(port);
    raw.write_all(&[0, 0]).unwrap();
    drop(raw);

    assert_eq!(setup.bystander.exists("/half", false), Err(err::NO_NODE));
    setup.assert_unaffected();
}

#[test]
fn a_malformed_multi_is_answered_after_the_requests_before_it() {
    let server = ZooServer::start(&["zoo.shards=1"]);
    let mut client = RawClient::connect(server.port());
    for i in 0..50 {
        let mut frames = Vec::new();
        let create = client.next_xid();
        frames.extend(request_frame(
            create,
            op::CREATE,
            &create_body(&format!("/m{i}"), b"", 0),
        ));
        let read = client.next_xid();
        let mut body = Vec::new();
        body.string(&format!("/m{i}")).boolean(false);
        frames.extend(request_frame(read, op::GET_DATA, &body));
        // A multi holding a getData: MARSHALLINGERROR, decided as soon as it is decoded.
        let multi = client.next_xid();
        let mut body = Vec::new();
        body.int(op::GET_DATA).boolean(false).int(-1);
        frames.extend(request_frame(multi, op::MULTI, &body));
        client.send_raw(&frames).unwrap();
        let replies: Vec<Reply> = (0..3).map(|_| client.read_response().unwrap()).collect();
        assert_eq!(
            replies.iter().map(|r| r.xid).collect::<Vec<_>>(),
            [create, read, multi],
            "replies in request order (R1)"
        );
        assert_eq!(replies[2].err, err::MARSHALLING_ERROR);
    }
}

#[test]
fn clients_that_vanish_with_requests_in_flight_leave_nothing_outstanding() {
    let server = ZooServer::start(&["zoo.shards=1"]);
    let mut setup = RawClient::connect(server.port());
    setup.create("/gone", b"", 0).unwrap();
    for i in 0..40 {
        let mut client = RawClient::connect(server.port());
        let mut frames = Vec::new();
        let xid = client.next_xid();
        frames.extend(request_frame(
            xid,
            op::CREATE,
            &create_body(&format!("/gone/a{i}"), b"", 0),
        ));
        for _ in 0..3 {
            let xid = client.next_xid();
            let mut body = Vec::new();
            body.string("/gone").boolean(false);
            frames.extend(request_frame(xid, op::GET_DATA, &body));
        }
        let xid = client.next_xid();
        frames.extend(request_frame(
            xid,
            op::CREATE,
            &create_body(&format!("/gone/b{i}"), b"", 0),
        ));
        client.send_raw(&frames).unwrap();
        drop(client);
    }
    // Requests of closed connections no longer count towards globalOutstandingLimit; if they
    // did, a shard would in time stop reading every socket.
    wait_for("zk_outstanding_requests back to 0", || {
        let text = four_letter(server.port(), "mntr").ok()?;
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["zk_outstanding_requests", "0"])
            .then_some(())
    });
    setup.create("/gone/after", b"", 0).unwrap();
}
