//! Unit tests of the commit core; each cites the ARCHITECTURE.md rule it checks.

use super::*;
use crate::jute::records::Acl;

fn open() -> Vec<Acl> {
    acl::open_acl_unsafe()
}

fn core_with_session() -> (CommitCore, i64) {
    let mut core = CommitCore::new(CoreConfig::default(), 1_000);
    let owner = ConnectionRef {
        shard: 0,
        connection_id: 1,
    };
    let (attach, _) = core.create_session(10_000, [1; 16], owner, 1_000, &mut Vec::new());
    let Attach::Attached { session_id, .. } = attach else {
        panic!("attached")
    };
    (core, session_id)
}

fn write(core: &mut CommitCore, session_id: i64, request: Request) -> WriteOutcome {
    let auth = Arc::new(vec![Id::new("ip", "127.0.0.1")]);
    core.process_write(
        WriteRequest {
            session_id,
            xid: 1,
            request,
            auth,
        },
        2_000,
        &mut Vec::new(),
    )
}

fn create(path: &str, flags: i32) -> Request {
    Request::Create(CreateRequest {
        opcode: opcode::CREATE,
        path: path.into(),
        data: None,
        acl: open(),
        flags,
        ttl: -1,
    })
}

#[test]
fn sequential_names_use_the_parent_create_count() {
    let (mut core, s) = core_with_session();
    write(&mut core, s, create("/q", 0));
    for expected in ["/q/n0000000000", "/q/n0000000001"] {
        let out = write(&mut core, s, create("/q/n", 2));
        let mut r = crate::jute::Reader::new(&out.reply.body, 1 << 20);
        assert_eq!(r.read_ustring().unwrap(), expected);
    }
    // Deleting a child does not reuse a sequence number.
    write(
        &mut core,
        s,
        Request::Delete {
            path: "/q/n0000000001".into(),
            version: -1,
        },
    );
    let out = write(&mut core, s, create("/q/n", 2));
    let mut r = crate::jute::Reader::new(&out.reply.body, 1 << 20);
    assert_eq!(r.read_ustring().unwrap(), "/q/n0000000002");
}

#[test]
fn failed_writes_consume_no_zxid() {
    let (mut core, s) = core_with_session();
    let before = core.last_zxid();
    let out = write(&mut core, s, create("/missing/child", 0));
    assert_eq!(out.reply.err, ZkError::NoNode.code());
    assert!(out.txn.is_none());
    assert_eq!(core.last_zxid(), before);
}

#[test]
fn failed_multi_changes_nothing_and_reports_per_op_errors() {
    let (mut core, s) = core_with_session();
    let out = write(
        &mut core,
        s,
        Request::Multi(vec![
            create("/a", 0),
            Request::Check {
                path: "/a".into(),
                version: 5,
            },
            create("/b", 0),
        ]),
    );
    assert_eq!(out.reply.err, 0);
    assert!(!core.tree().contains("/a"));
    let mut r = crate::jute::Reader::new(&out.reply.body, 1 << 20);
    let mut errors = Vec::new();
    loop {
        let t = r.read_i32().unwrap();
        let done = r.read_bool().unwrap();
        let err = r.read_i32().unwrap();
        if done {
            break;
        }
        assert_eq!(t, opcode::ERROR);
        assert_eq!(r.read_i32().unwrap(), err);
        errors.push(err);
    }
    assert_eq!(
        errors,
        vec![
            0,
            ZkError::BadVersion.code(),
            ZkError::RuntimeInconsistency.code()
        ]
    );
}

#[test]
fn ephemerals_cannot_have_children() {
    let (mut core, s) = core_with_session();
    write(&mut core, s, create("/e", 1));
    let out = write(&mut core, s, create("/e/c", 0));
    assert_eq!(out.reply.err, ZkError::NoChildrenForEphemerals.code());
}

#[test]
fn ttl_needs_extended_types() {
    let (mut core, s) = core_with_session();
    let ttl = Request::Create(CreateRequest {
        opcode: opcode::CREATE_TTL,
        path: "/t".into(),
        data: None,
        acl: open(),
        flags: 5,
        ttl: 100,
    });
    assert_eq!(
        write(&mut core, s, ttl).reply.err,
        ZkError::Unimplemented.code()
    );
}

#[test]
fn versions_are_checked_and_bumped() {
    let (mut core, s) = core_with_session();
    write(&mut core, s, create("/v", 0));
    let bad = write(
        &mut core,
        s,
        Request::SetData {
            path: "/v".into(),
            data: Some(vec![1]),
            version: 3,
        },
    );
    assert_eq!(bad.reply.err, ZkError::BadVersion.code());
    let ok = write(
        &mut core,
        s,
        Request::SetData {
            path: "/v".into(),
            data: Some(vec![1]),
            version: 0,
        },
    );
    assert_eq!(ok.reply.err, 0);
    assert_eq!(core.tree().get("/v").unwrap().version, 1);
}

#[test]
fn close_session_deletes_ephemerals_and_session() {
    let (mut core, s) = core_with_session();
    write(&mut core, s, create("/e", 1));
    let out = write(&mut core, s, Request::CloseSession);
    assert!(out.reply.close_connection);
    assert!(!core.tree().contains("/e"));
    assert!(core.sessions().get(s).is_none());
    let after = write(&mut core, s, create("/x", 0));
    assert_eq!(after.reply.err, ZkError::SessionExpired.code());
}

#[test]
fn reconfig_is_validated_then_refused_in_standalone() {
    let mut config = CoreConfig::default();
    let reconfig = |joining: &str| Request::Reconfig {
        joining: joining.into(),
        leaving: String::new(),
        new_members: String::new(),
        config_id: -1,
    };
    let mut core = CommitCore::new(config.clone(), 0);
    let owner = ConnectionRef {
        shard: 0,
        connection_id: 1,
    };
    let (Attach::Attached { session_id, .. }, _) =
        core.create_session(10_000, [1; 16], owner, 0, &mut Vec::new())
    else {
        panic!()
    };
    let good = "server.5=10.0.0.1:2888:3888:observer;2181";
    assert_eq!(
        write(&mut core, session_id, reconfig(good)).reply.err,
        ZkError::ReconfigDisabled.code()
    );
    config.reconfig_enabled = true;
    let mut core = CommitCore::new(config, 0);
    let (Attach::Attached { session_id, .. }, _) =
        core.create_session(10_000, [1; 16], owner, 0, &mut Vec::new())
    else {
        panic!()
    };
    assert_eq!(
        write(&mut core, session_id, reconfig("some thing"))
            .reply
            .err,
        ZkError::BadArguments.code()
    );
    assert_eq!(
        write(&mut core, session_id, reconfig(good)).reply.err,
        ZkError::NoAuth.code()
    );
}
