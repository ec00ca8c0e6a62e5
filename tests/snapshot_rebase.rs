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
