//! Unit tests of the commit core; each cites the ARCHITECTURE.md rule it checks.

use super::*;
use crate::core::txn::{Txn, TxnHeader};
use crate::jute::records::Acl;

fn open() -> Vec<Acl> {
    acl::open_acl_unsafe()
}

fn core_with_session() -> (CommitCore, i64) {
    core_with_session_in(CoreConfig::default())
}

fn core_with_session_in(config: CoreConfig) -> (CommitCore, i64) {
    let mut core = CommitCore::new(config, 1_000);
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
        acl: open().into(),
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

/// R4: zxids are assigned only to txns that change state, in order.
#[test]
fn failed_writes_consume_no_zxid() {
    let (mut core, s) = core_with_session();
    let before = core.last_zxid();
    let out = write(&mut core, s, create("/missing/child", 0));
    assert_eq!(out.reply.err, ZkError::NoNode.code());
    assert!(out.txn.is_none());
    assert_eq!(core.last_zxid(), before);
}

/// R5: a multi is all-or-nothing, with ZooKeeper's per-op error layout.
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
        acl: open().into(),
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
            data: Some(vec![1].into()),
            version: 3,
        },
    );
    assert_eq!(bad.reply.err, ZkError::BadVersion.code());
    let ok = write(
        &mut core,
        s,
        Request::SetData {
            path: "/v".into(),
            data: Some(vec![1].into()),
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
fn the_membership_node_is_not_written_by_set_data_even_by_the_super_user() {
    let (mut core, session_id) = core_with_session_in(CoreConfig {
        skip_acl: true,
        ..Default::default()
    });
    let set = Request::SetData {
        path: "/zookeeper/config".into(),
        data: Some(b"server.1=h:1:2:participant".to_vec().into()),
        version: -1,
    };
    assert_eq!(
        write(&mut core, session_id, set.clone()).reply.err,
        ZkError::BadArguments.code(),
        "only reconfig changes the membership"
    );
    let multi = write(&mut core, session_id, Request::Multi(vec![set]));
    assert!(multi.txn.is_none(), "nor inside a multi");
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

/// A random mix of writes (creates of every kind, sets, deletes, multis, session churn).
fn random_workload(core: &mut CommitCore, seed: u64, steps: usize) -> Vec<(TxnHeader, Txn)> {
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    let mut log = Vec::new();
    let mut sessions = vec![];
    let mut paths: Vec<String> = vec!["/".into()];
    for step in 0..steps {
        let now = 10_000 + step as i64;
        if sessions.is_empty() || next() % 20 == 0 {
            let owner = ConnectionRef {
                shard: 0,
                connection_id: step as u64,
            };
            let (attach, txn) = core.create_session(5_000, [3; 16], owner, now, &mut Vec::new());
            if let Attach::Attached { session_id, .. } = attach {
                sessions.push(session_id);
            }
            log.push(txn);
            continue;
        }
        let session = sessions[next() as usize % sessions.len()];
        let target = paths[next() as usize % paths.len()].clone();
        let request = match next() % 8 {
            0..=2 => Request::Create(CreateRequest {
                opcode: if next() % 2 == 0 {
                    opcode::CREATE
                } else {
                    opcode::CREATE2
                },
                path: crate::core::path::join(&target, &format!("n{}", next() % 50)),
                data: (next() % 5 != 0).then(|| vec![next() as u8; (next() % 20) as usize].into()),
                acl: open().into(),
                flags: (next() % 5) as i32,
                ttl: -1,
            }),
            3 => Request::SetData {
                path: target,
                data: Some(vec![1, 2, 3].into()),
                version: -1,
            },
            4 => Request::Delete {
                path: target,
                version: -1,
            },
            5 => Request::SetAcl {
                path: target,
                acl: acl::read_acl_unsafe().into(),
                version: -1,
            },
            6 => Request::Multi(vec![
                create(&format!("/m{}", next() % 30), 0),
                Request::SetData {
                    path: target,
                    data: None,
                    version: -1,
                },
            ]),
            _ => {
                if next() % 3 == 0 {
                    let closing = sessions.swap_remove(next() as usize % sessions.len());
                    if let Some(txn) = core.close_session(closing, now, &mut Vec::new()) {
                        log.push(txn);
                    }
                }
                continue;
            }
        };
        let auth = Arc::new(vec![Id::new("ip", "127.0.0.1")]);
        let out = core.process_write(
            WriteRequest {
                session_id: session,
                xid: step as i32,
                request,
                auth,
            },
            now,
            &mut Vec::new(),
        );
        if let Some(txn) = out.txn {
            if let Txn::Create { path, .. } = &txn.1 {
                paths.push(path.to_string());
            }
            log.push(txn);
        }
    }
    log
}

fn assert_same_state(a: &CommitCore, b: &CommitCore) {
    assert_eq!(a.last_zxid(), b.last_zxid());
    assert_eq!(a.session_records(), b.session_records());
    assert_eq!(a.tree().node_count(), b.tree().node_count());
    assert_eq!(a.tree().data_bytes(), b.tree().data_bytes());
    assert_eq!(a.tree().ephemeral_owners(), b.tree().ephemeral_owners());
    a.tree().walk("/", &mut |p, node| {
        let other = b
            .tree()
            .get(p)
            .unwrap_or_else(|| panic!("{p} missing in the replay"));
        assert_eq!(node.stat(), other.stat(), "{p}");
        assert_eq!(node.data, other.data, "{p}");
        assert_eq!(node.acl, other.acl, "{p}");
    });
}

/// R2/R4: replaying the log's bytes in zxid order rebuilds exactly the state that was
/// acknowledged live.
#[test]
fn log_replay_equals_live_apply_for_many_seeds() {
    for seed in 0..40 {
        let mut live = CommitCore::new(CoreConfig::default(), 0);
        let log = random_workload(&mut live, seed, 400);
        // Through the log's byte encoding, as recovery reads it.
        let mut bytes = Vec::new();
        for (header, txn) in &log {
            crate::storage::log::encode_record(header, txn, &mut bytes);
        }
        let mut replayed = CommitCore::new(CoreConfig::default(), 0);
        let mut offset = 0;
        while offset < bytes.len() {
            let length = u32::from_be_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
            let zxid = i64::from_be_bytes(bytes[offset + 8..offset + 16].try_into().unwrap());
            let mut r =
                crate::jute::Reader::new(&bytes[offset + 16..offset + 16 + length], 1 << 24);
            let header = TxnHeader::decode(zxid, &mut r).unwrap();
            let txn = Txn::decode(&mut r).unwrap();
            replayed.apply(&header, &txn, &mut Vec::new());
            offset += 16 + length;
        }
        assert_same_state(&live, &replayed);
    }
}

#[test]
fn snapshot_plus_log_tail_equals_live_apply() {
    let mut live = CommitCore::new(CoreConfig::default(), 0);
    let log = random_workload(&mut live, 99, 600);
    let cut = log.len() / 2;
    let mut at_cut = CommitCore::new(CoreConfig::default(), 0);
    for (header, txn) in &log[..cut] {
        at_cut.apply(header, txn, &mut Vec::new());
    }
    let dir = std::env::temp_dir().join(format!("zoo-commit-snap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sessions: Vec<_> = at_cut
        .session_records()
        .into_iter()
        .map(
            |(id, timeout_ms, password)| crate::storage::snapshot::SessionRecord {
                id,
                timeout_ms,
                password,
            },
        )
        .collect();
    let path = crate::storage::snapshot::write_snapshot(&dir, at_cut.tree(), &sessions).unwrap();
    let loaded = crate::storage::snapshot::load_snapshot(&path, |_, _| {}).unwrap();
    let mut restored = CommitCore::restore(
        CoreConfig::default(),
        loaded.tree,
        loaded
            .sessions
            .into_iter()
            .map(|s| (s.id, s.timeout_ms, s.password)),
        0,
    );
    for (header, txn) in &log[cut..] {
        restored.apply(header, txn, &mut Vec::new());
    }
    assert_same_state(&live, &restored);
}

#[test]
fn empty_used_containers_and_expired_ttl_nodes_are_reaped() {
    let config = CoreConfig {
        extended_types_enabled: true,
        ..CoreConfig::default()
    };
    let mut core = CommitCore::new(config, 0);
    let owner = ConnectionRef {
        shard: 0,
        connection_id: 1,
    };
    let (Attach::Attached { session_id: s, .. }, _) =
        core.create_session(10_000, [1; 16], owner, 0, &mut Vec::new())
    else {
        panic!("attached")
    };
    write(&mut core, s, create("/never-used", 4));
    write(&mut core, s, create("/used", 4));
    write(&mut core, s, create("/used/child", 0));
    let ttl = |path: &str| {
        Request::Create(CreateRequest {
            opcode: opcode::CREATE_TTL,
            path: path.into(),
            data: None,
            acl: open().into(),
            flags: 5,
            ttl: 1_000,
        })
    };
    assert_eq!(write(&mut core, s, ttl("/ttl")).reply.err, 0);
    // A container that never had children and one that still has a child are kept.
    assert!(
        core.reap_candidates(2_500)
            .iter()
            .all(|p| p != "/never-used" && p != "/used")
    );
    write(
        &mut core,
        s,
        Request::Delete {
            path: "/used/child".into(),
            version: -1,
        },
    );
    let now = 2_000 + 1_001; // the TTL node was last modified at 2,000 (see `write`)
    let candidates = core.reap_candidates(now);
    assert!(candidates.contains(&"/used".to_string()), "{candidates:?}");
    assert!(candidates.contains(&"/ttl".to_string()), "{candidates:?}");
    for p in candidates {
        core.reap(&p, now, &mut Vec::new())
            .expect("still qualifies");
    }
    assert!(!core.tree().contains("/used") && !core.tree().contains("/ttl"));
    assert!(core.tree().contains("/never-used"));
    // The TTL is measured from the last modification: a fresh TTL node is kept.
    write(&mut core, s, ttl("/ttl2"));
    assert!(core.reap_candidates(2_500).is_empty());
}
