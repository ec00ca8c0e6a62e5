//! Four-letter words on the client port answer in Apache ZooKeeper's text formats, which
//! monitoring tools and client libraries (kazoo, the Java client) parse.

mod common;

use common::*;

fn mntr(port: u16) -> Vec<(String, String)> {
    four_letter(port, "mntr")
        .unwrap()
        .lines()
        .map(|line| {
            let parts: Vec<&str> = line.split('\t').collect();
            assert_eq!(parts.len(), 2, "mntr line is not key<TAB>value: {line:?}");
            (parts[0].to_owned(), parts[1].to_owned())
        })
        .collect()
}

fn mntr_number(port: u16, key: &str) -> i64 {
    let rows = mntr(port);
    let value = &rows
        .iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("mntr has no {key}: {rows:?}"))
        .1;
    value
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number: {value:?}"))
}

/// The number after `prefix` on a line of `text`.
fn number_after(text: &str, prefix: &str) -> Option<i64> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn ruok_answers_imok() {
    let server = ZooServer::start(&[]);
    assert_eq!(four_letter(server.port(), "ruok").unwrap(), "imok");
}

#[test]
fn isro_answers_rw_on_a_read_write_server() {
    let server = ZooServer::start(&[]);
    // Apache ZooKeeper's IsroCommand writes "rw" with no newline; kazoo compares the bytes
    // it receives with b"rw" exactly when looking for a read-write server.
    assert_eq!(four_letter(server.port(), "isro").unwrap(), "rw");
}

#[test]
fn srvr_reports_version_standalone_mode_and_node_count() {
    let server = ZooServer::start(&[]);
    let port = server.port();
    let text = four_letter(port, "srvr").unwrap();
    assert!(text.starts_with("Zookeeper version: 3.9"), "{text}");
    for line in [
        "Latency min/avg/max: ",
        "Received: ",
        "Sent: ",
        "Connections: ",
        "Outstanding: ",
        "Zxid: 0x",
        "Mode: standalone",
        "Node count: ",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(line)),
            "srvr lacks {line:?}:\n{text}"
        );
    }
    assert!(number_after(&text, "Node count: ").is_some(), "{text}");
    // Once a session is connected the commit executor has published its stats.
    let mut client = RawClient::connect(port);
    let before = number_after(&four_letter(port, "srvr").unwrap(), "Node count: ").unwrap();
    client.create("/counted", b"", 0).unwrap();
    // The count follows the acknowledged create (polled: stats are published per batch).
    wait_for("srvr node count to include the new node", || {
        let text = four_letter(port, "srvr").unwrap();
        let now = number_after(&text, "Node count: ").unwrap();
        assert!(now <= before + 1, "one create added {} nodes", now - before);
        (now == before + 1).then_some(())
    });
}

#[test]
fn mntr_lines_are_tab_separated_pairs_with_the_standard_keys() {
    let server = ZooServer::start(&[]);
    let port = server.port();
    let rows = mntr(port);
    for (key, value) in &rows {
        // zk_* as in ZooKeeper; zoo_* are zoo's own additions.
        assert!(
            key.starts_with("zk_") || key.starts_with("zoo_"),
            "unexpected key {key}"
        );
        assert!(!value.is_empty(), "{key} has an empty value");
    }
    assert_eq!(
        rows.iter()
            .find(|(k, _)| k == "zk_server_state")
            .map(|r| r.1.as_str()),
        Some("standalone")
    );
    assert!(
        !rows
            .iter()
            .any(|(k, _)| k == "zk_peer_state" || k == "zk_quorum_size"),
        "a standalone server has no peer state, as in ZooKeeper: {rows:?}"
    );
    assert!(
        rows.iter()
            .any(|(k, v)| k == "zk_version" && v.starts_with("3.9")),
        "{rows:?}"
    );
    for key in [
        "zk_znode_count",
        "zk_num_alive_connections",
        "zk_watch_count",
        "zk_avg_latency",
        "zk_max_latency",
        "zk_min_latency",
        "zk_packets_received",
        "zk_packets_sent",
        "zk_outstanding_requests",
        "zk_ephemerals_count",
        "zk_approximate_data_size",
    ] {
        let value = rows
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("mntr lacks {key}: {rows:?}"));
        assert!(
            value.1.parse::<f64>().is_ok(),
            "{key} is not numeric: {value:?}"
        );
    }

    // With one session open, its connection is counted; its ephemeral and watch too.
    let mut client = RawClient::connect(port);
    assert!(mntr_number(port, "zk_num_alive_connections") >= 1);
    let nodes_before = mntr_number(port, "zk_znode_count");
    client.create("/e", b"", 1).unwrap();
    client.get_data("/e", true).unwrap();
    wait_for("mntr to count the new znode, ephemeral and watch", || {
        (mntr_number(port, "zk_znode_count") == nodes_before + 1
            && mntr_number(port, "zk_ephemerals_count") == 1
            && mntr_number(port, "zk_watch_count") >= 1)
            .then_some(())
    });
}

#[test]
fn envi_reports_the_zookeeper_version() {
    let server = ZooServer::start(&[]);
    let text = four_letter(server.port(), "envi").unwrap();
    assert!(text.starts_with("Environment:"), "{text}");
    // kazoo's server_version() parses this line.
    assert!(
        text.lines().any(|l| l.starts_with("zookeeper.version=3.9")),
        "{text}"
    );
}

#[test]
fn stat_lists_a_connected_client() {
    let server = ZooServer::start(&[]);
    let port = server.port();
    let mut client = RawClient::connect(port);
    client.ping().unwrap();
    let me = format!(" /{}[", client.stream.local_addr().unwrap());
    // Listings of other shards are refreshed periodically, so poll for our line.
    let text = wait_for("stat to list our connection", || {
        let text = four_letter(port, "stat").unwrap();
        text.contains(&me).then_some(text)
    });
    assert!(text.starts_with("Zookeeper version: 3.9"), "{text}");
    assert!(text.contains("Clients:\n"), "{text}");
    assert!(text.contains("Mode: standalone\n"), "{text}");
    let line = text.lines().find(|l| l.starts_with(&me)).unwrap();
    assert!(line.contains("](queued="), "{line}");
    assert!(
        line.contains(",recved=") && line.contains(",sent="),
        "{line}"
    );
}

#[test]
fn wchs_counts_a_data_watch_until_it_fires() {
    let server = ZooServer::start(&[]);
    let port = server.port();
    let mut watcher = RawClient::connect(port);
    watcher.create("/watched", b"v0", 0).unwrap();
    watcher.get_data("/watched", true).unwrap();
    let total = |text: &str| number_after(text, "Total watches:");
    let text = wait_for("wchs to report the watch", || {
        let text = four_letter(port, "wchs").unwrap();
        (total(&text)? >= 1).then_some(text)
    });
    assert!(
        text.starts_with("1 connections watching 1 paths\n"),
        "{text}"
    );

    // Another session's write fires the one-shot watch; the count goes back to zero.
    let mut writer = RawClient::connect(port);
    writer.set_data("/watched", b"v1", -1).unwrap();
    let event = watcher.read_reply().unwrap();
    // R6: the watch registered by the read is in place for the next write's triggers.
    assert_eq!(event.xid, -1, "the watcher gets a notification");
    let mut c = Cursor::new(&event.body);
    assert_eq!(
        (c.int(), c.int(), c.string()),
        (3, 3, "/watched".to_owned())
    );
    wait_for("wchs to drop the fired watch", || {
        let text = four_letter(port, "wchs").unwrap();
        (total(&text)? == 0).then_some(())
    });
}

/// Group commit is observable: after acknowledged writes, `mntr` counts at least one fsync and
/// at least one write per batch (R2: a write is acknowledged only after its fsync).
#[test]
fn mntr_counts_fsyncs_and_commit_batches_after_writes() {
    let server = ZooServer::start(&[]);
    let mut client = common::RawClient::connect(server.port());
    for i in 0..5 {
        client.create(&format!("/f{i}"), b"x", 0).expect("create");
    }
    let fsyncs = mntr_number(server.port(), "zoo_fsyncs");
    let batches = mntr_number(server.port(), "zoo_commit_batches");
    assert!(fsyncs >= 1, "no fsync counted after acknowledged writes");
    assert!((1..=6).contains(&batches), "batches: {batches}");
    assert!(mntr_number(server.port(), "zoo_commit_batch_max_writes") >= 1);
}
