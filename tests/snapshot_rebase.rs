//! After each snapshot the server moves its live tree onto the file it just wrote
//! (`server::rebase`): the file's nodes are then served in place and only later changes stay
//! in memory. These tests prove the move changes nothing a client can see: with a tiny
//! `snapCount`, so that dozens of snapshots and rebases happen under a stream of creates,
//! sets, deletes and ephemerals, every reply matches a model of the tree, before and after a
//! SIGKILL and restart. `ZOO_REBASE_SEED` picks another sequence of operations.

mod common;

use std::collections::BTreeMap;

use common::*;

fn mntr_value(port: u16, key: &str) -> u64 {
    let text = four_letter(port, "mntr").expect("mntr");
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{key} missing from mntr:\n{text}"))
}

/// Every key of the model is present with its data and version, and nothing else is.
fn assert_matches(client: &mut RawClient, model: &BTreeMap<String, (Vec<u8>, i32)>) {
    let mut children = client.get_children("/r").expect("/r exists");
    children.sort();
    let expected: Vec<String> = model
        .keys()
        .map(|p| p.trim_start_matches("/r/").to_string())
        .collect();
    assert_eq!(children, expected, "children of /r");
    for (p, (data, version)) in model {
        let (got, stat) = client.get_data(p, false).expect("modelled node exists");
        assert_eq!(&got, data, "{p}");
        assert_eq!(stat.version, *version, "{p}");
    }
}

#[test]
fn replies_match_a_model_across_many_snapshot_rebases_and_a_restart() {
    let mut server = ZooServer::start(&["snapCount=40"]);
    let port = server.port();
    let mut client = RawClient::connect(port);
    client.create("/r", b"", 0).unwrap();
    let mut model: BTreeMap<String, (Vec<u8>, i32)> = BTreeMap::new();
    let seed = std::env::var("ZOO_REBASE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let mut rng = Lcg(seed);
    for step in 0..3000u64 {
        let p = format!("/r/k{:02}", rng.next() % 40);
        let data = format!("v{step}").into_bytes();
        match rng.next() % 4 {
            0 | 1 => {
                let got = client.create(&p, &data, 0);
                match model.get(&p) {
                    Some(_) => assert_eq!(got, Err(err::NODE_EXISTS), "{p} at {step}"),
                    None => {
                        assert_eq!(got.as_deref(), Ok(p.as_str()), "{p} at {step}");
                        model.insert(p, (data, 0));
                    }
                }
            }
            2 => {
                let got = client.set_data(&p, &data, -1);
                match model.get_mut(&p) {
                    Some(entry) => {
                        let stat = got.unwrap_or_else(|e| panic!("{p} at {step}: {e}"));
                        entry.0 = data;
                        entry.1 += 1;
                        assert_eq!(stat.version, entry.1, "{p} at {step}");
                    }
                    None => assert_eq!(got.map(|_| ()), Err(err::NO_NODE), "{p} at {step}"),
                }
            }
            _ => {
                let got = client.delete(&p, -1);
                match model.remove(&p) {
                    Some(_) => assert_eq!(got, Ok(()), "{p} at {step}"),
                    None => assert_eq!(got, Err(err::NO_NODE), "{p} at {step}"),
                }
            }
        }
        if step % 500 == 499 {
            assert_matches(&mut client, &model);
        }
    }
    assert_matches(&mut client, &model);
    let rebases = mntr_value(port, "zoo_snapshot_rebases");
    assert!(rebases >= 10, "only {rebases} rebases happened");
    assert!(
        mntr_value(port, "zoo_tree_overlay_nodes") < 200,
        "the overlay holds only what changed since the last snapshot"
    );

    server.kill9();
    drop(client);
    server.restart();
    let mut after = RawClient::connect(port);
    assert_matches(&mut after, &model);
}

/// `zoo.idle_snapshot_ms`: once writes stop after enough txns, the server snapshots and moves
/// onto the file, so it keeps none of those znodes in memory, and a restart replays nothing
/// from before it went idle. Replies are the same before and after.
#[test]
fn an_idle_server_moves_its_tree_onto_a_snapshot_and_restarts_without_replay() {
    let mut server = ZooServer::start(&[
        "snapCount=100000",
        "zoo.idle_snapshot_ms=300",
        "zoo.idle_snapshot_min_txns=50",
    ]);
    let port = server.port();
    let mut client = RawClient::connect(port);
    client.create("/idle", b"", 0).unwrap();
    let mut model = BTreeMap::new();
    for i in 0..40 {
        let p = format!("/idle/n{i:02}");
        client.create(&p, format!("v{i}").as_bytes(), 0).unwrap();
        model.insert(p, (format!("v{i}").into_bytes(), 0));
    }
    // 41 creates and the session: below the minimum, so no idle snapshot yet.
    std::thread::sleep(std::time::Duration::from_millis(900));
    assert_eq!(mntr_value(port, "zoo_snapshot_rebases"), 0);
    for i in 40..60 {
        let p = format!("/idle/n{i:02}");
        client.create(&p, format!("v{i}").as_bytes(), 0).unwrap();
        model.insert(p, (format!("v{i}").into_bytes(), 0));
    }
    wait_for("the idle snapshot and the move onto it", || {
        (mntr_value(port, "zoo_snapshot_rebases") == 1
            && mntr_value(port, "zoo_tree_overlay_nodes") == 0)
            .then_some(())
    });
    let mut children = client.get_children("/idle").unwrap();
    children.sort();
    assert_eq!(children.len(), 60);
    for (p, (data, version)) in &model {
        let (got, stat) = client.get_data(p, false).unwrap();
        assert_eq!((&got, stat.version), (data, *version), "{p}");
    }
    // One idle snapshot per quiet period: reads alone do not start another.
    std::thread::sleep(std::time::Duration::from_millis(900));
    assert_eq!(mntr_value(port, "zoo_snapshot_rebases"), 1);

    drop(client);
    server.kill9();
    server.restart();
    let log = server.log_text();
    let restarted = log.rsplit("zoo: recovery:").next().unwrap();
    assert!(
        restarted.contains("replayed 0 log records"),
        "nothing before the idle snapshot is replayed:\n{log}"
    );
    let mut client = RawClient::connect(server.port());
    for (p, (data, _)) in &model {
        assert_eq!(&client.get_data(p, false).unwrap().0, data, "{p}");
    }
}
