//! The official Java CLI (zkCli.sh, ZooKeeper 3.8 client from Debian's `zookeeper` package)
//! works against zoo: creates (sequential, ephemeral), get/set with versions, watches fired by
//! another session, ls -R, ACLs and digest auth, and its error messages.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::*;

const ZKCLI: &str = "/usr/share/zookeeper/bin/zkCli.sh";

fn zkcli_command(server: &ZooServer) -> Command {
    assert!(
        Path::new(ZKCLI).exists(),
        "{ZKCLI} is missing: install the Debian package `zookeeper` (apt-get install zookeeper)"
    );
    let mut command = Command::new(ZKCLI);
    command.arg("-server").arg(server.address());
    command
}

/// Runs one zkCli session that executes `commands` then quits; returns stdout + stderr.
fn zkcli(server: &ZooServer, commands: &[&str]) -> String {
    let input = format!("{}\nquit\n", commands.join("\n"));
    let output = run_with_input(zkcli_command(server), &input);
    let all = output.all();
    assert!(
        all.contains("WatchedEvent state:SyncConnected type:None path:null"),
        "zkCli did not connect:\n{all}"
    );
    all
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().map(str::trim_end).collect()
}

#[test]
fn create_sequential_ephemeral_gets_ten_digit_counter_and_ends_with_the_session() {
    let server = ZooServer::start(&[]);
    let out = zkcli(
        &server,
        &[
            "create /q",
            "create -s -e /q/job- a",
            "create -s -e /q/job- b",
            "create -e /q/plain c",
            "ls /q",
        ],
    );
    let out_lines = lines(&out);
    assert!(out_lines.contains(&"Created /q/job-0000000001"), "{out}");
    assert!(out_lines.contains(&"Created /q/job-0000000000"), "{out}");
    assert!(
        out_lines.contains(&"[job-0000000000, job-0000000001, plain]"),
        "{out}"
    );
    // The ephemerals went with the first session's close.
    let out = zkcli(&server, &["ls /q", "stat /q"]);
    assert!(lines(&out).contains(&"[]"), "{out}");
    assert!(lines(&out).contains(&"numChildren = 0"), "{out}");
}

#[test]
fn create_get_set_and_get_s_show_data_and_data_version() {
    let server = ZooServer::start(&[]);
    let out = zkcli(
        &server,
        &["create /d hello", "get /d", "set /d world", "get -s /d"],
    );
    let out_lines = lines(&out);
    assert!(out_lines.contains(&"Created /d"), "{out}");
    let hello = out_lines.iter().position(|l| *l == "hello").expect(&out);
    let world = out_lines.iter().position(|l| *l == "world").expect(&out);
    assert!(hello < world, "{out}");
    for line in [
        "dataVersion = 1",
        "dataLength = 5",
        "numChildren = 0",
        "aclVersion = 0",
        "ephemeralOwner = 0x0",
    ] {
        assert!(out_lines.contains(&line), "missing {line:?}:\n{out}");
    }
    // A second session sees the committed value.
    let out = zkcli(&server, &["get /d"]);
    assert!(lines(&out).contains(&"world"), "{out}");
}

#[test]
fn get_w_watch_fires_when_another_session_sets_the_node() {
    let server = ZooServer::start(&[]);
    zkcli(&server, &["create /n v0"]);

    // Session A stays open with a data watch on /n.
    let mut a = KillOnDrop::spawn(zkcli_command(&server));
    let mut a_in = a.0.stdin.take().unwrap();
    let a_out = Arc::new(Mutex::new(String::new()));
    let sink = a_out.clone();
    let stdout = a.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    let a_text = || a_out.lock().unwrap().clone();
    a_in.write_all(b"get -w /n\n").unwrap();
    wait_for("session A to print v0", || {
        lines(&a_text()).contains(&"v0").then_some(())
    });

    // Session B changes the node.
    let b = zkcli(&server, &["set /n v1"]);
    assert!(!b.contains("Exception"), "{b}");

    let event = "WatchedEvent state:SyncConnected type:NodeDataChanged path:/n";
    wait_for("session A to print the watch event", || {
        a_text().contains(event).then_some(())
    });
    a_in.write_all(b"get /n\nquit\n").unwrap();
    drop(a_in);
    let status = wait_for("session A to exit", || a.0.try_wait().unwrap());
    assert!(status.success(), "zkCli exit status {status}");
    reader.join().unwrap();
    let text = a_text();
    let event_at = text.find(event).unwrap();
    // The event was printed before the later get showed the new value.
    let v1_at = text.find("\nv1\n").expect(&text);
    assert!(event_at < v1_at, "{text}");
    // The watch was one-shot: exactly one event.
    assert_eq!(text.matches("type:NodeDataChanged").count(), 1, "{text}");
}

#[test]
fn errors_and_delete_are_reported_with_zookeeper_messages() {
    let server = ZooServer::start(&[]);
    let out = zkcli(
        &server,
        &[
            "create /x",
            "create /x",
            "get /nope",
            "create /x/child",
            "delete /x",
            "set -v 7 /x data",
            "delete /x/child",
            "delete /x",
            "get /x",
            "ls /",
        ],
    );
    let out_lines = lines(&out);
    for line in [
        "Created /x",
        "Node already exists: /x",
        "Node does not exist: /nope",
        "Node not empty: /x",
        "version No is not valid : /x",
        "Node does not exist: /x",
        "[zookeeper]",
    ] {
        assert!(out_lines.contains(&line), "missing {line:?}:\n{out}");
    }
}

#[test]
fn ls_r_lists_nested_paths() {
    let server = ZooServer::start(&[]);
    let out = zkcli(
        &server,
        &[
            "create /r",
            "create /r/a",
            "create /r/a/b",
            "create /r/a/b/c",
            "create /r/d",
            "ls -R /r",
        ],
    );
    let listed: Vec<&str> = lines(&out)
        .into_iter()
        .filter(|l| *l == "/r" || l.starts_with("/r/"))
        .collect();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["/r", "/r/a", "/r/a/b", "/r/a/b/c", "/r/d"],
        "{out}"
    );
    assert_eq!(listed[0], "/r", "{out}");
}

#[test]
fn set_acl_world_read_only_is_shown_by_get_acl_and_enforced() {
    let server = ZooServer::start(&[]);
    let out = zkcli(
        &server,
        &[
            "create /a data",
            "getAcl /a",
            "setAcl /a world:anyone:r",
            "getAcl /a",
            "set /a other",
            "get -s /a",
        ],
    );
    let out_lines = lines(&out);
    let default = out_lines
        .windows(2)
        .any(|w| w == ["'world,'anyone", ": cdrwa"]);
    assert!(default, "default ACL is world:anyone:cdrwa:\n{out}");
    let read_only = out_lines.windows(2).any(|w| w == ["'world,'anyone", ": r"]);
    assert!(read_only, "getAcl after setAcl:\n{out}");
    assert!(out_lines.contains(&"Insufficient permission : /a"), "{out}");
    assert!(out_lines.contains(&"data"), "{out}");
    assert!(out_lines.contains(&"aclVersion = 1"), "{out}");
    assert!(out_lines.contains(&"dataVersion = 0"), "{out}");
}

#[test]
fn digest_auth_acl_is_shown_by_get_acl_and_enforced_for_other_sessions() {
    let server = ZooServer::start(&[]);
    // base64(sha1("user:pass")), as DigestAuthenticationProvider stores it.
    let digest_id = "'digest,'user:smGaoVKd/cQkjm7b88GyorAUz20=";
    let out = zkcli(
        &server,
        &[
            "addauth digest user:pass",
            "create /sec secret auth::cdrwa",
            "getAcl /sec",
            "get /sec",
        ],
    );
    let out_lines = lines(&out);
    assert!(
        out_lines.windows(2).any(|w| w == [digest_id, ": cdrwa"]),
        "{out}"
    );
    assert!(out_lines.contains(&"secret"), "{out}");

    // No auth, or the wrong password: refused.
    for auth in [None, Some("addauth digest user:wrong")] {
        let mut commands: Vec<&str> = auth.into_iter().collect();
        commands.extend(["get /sec", "set /sec stolen"]);
        let out = zkcli(&server, &commands);
        assert_eq!(
            out.matches("Insufficient permission : /sec").count(),
            2,
            "get and set refused ({auth:?}):\n{out}"
        );
        assert!(!lines(&out).contains(&"secret"), "{out}");
    }
    let out = zkcli(&server, &["addauth digest user:pass", "get /sec"]);
    assert!(lines(&out).contains(&"secret"), "{out}");
}
