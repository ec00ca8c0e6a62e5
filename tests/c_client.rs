//! The official C client (cli_mt from Debian's `zookeeper-bin` package) works against zoo:
//! create, get, ls, set, delete, and the NONODE error code.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

use common::*;

const CLI_MT: &str = "/usr/lib/zookeeper/bin/cli_mt";

fn cli_mt() -> Command {
    assert!(
        Path::new(CLI_MT).exists(),
        "{CLI_MT} is missing: install the Debian package `zookeeper-bin` (apt-get install zookeeper-bin)"
    );
    Command::new(CLI_MT)
}

/// Batch mode: `cli_mt -h HOST:PORT -c "COMMAND"`; returns stdout + stderr (most goes to
/// stderr).
fn batch(server: &ZooServer, command: &str) -> String {
    let mut c = cli_mt();
    c.arg("-h").arg(server.address()).arg("-c").arg(command);
    let all = run_with_input(c, "").all();
    assert!(
        all.contains("state = CONNECTED_STATE"),
        "cli_mt did not connect:\n{all}"
    );
    all
}

/// Interactive mode: sends each command, waiting after each for `marker(command)` to appear
/// in the output, then `quit`. Returns stdout + stderr.
fn interactive(server: &ZooServer, steps: &[(&str, &str)]) -> String {
    let mut c = cli_mt();
    c.arg(server.address());
    let mut child = KillOnDrop::spawn(c);
    let mut stdin = child.0.stdin.take().unwrap();
    let collected = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut readers = Vec::new();
    for stream in [
        Box::new(child.0.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.0.stderr.take().unwrap()),
    ] {
        let sink = collected.clone();
        readers.push(std::thread::spawn(move || {
            let mut stream = stream;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }));
    }
    let text = || collected.lock().unwrap().clone();
    for (command, marker) in steps {
        let seen = text().matches(marker).count();
        stdin.write_all(format!("{command}\n").as_bytes()).unwrap();
        wait_for(
            &format!("cli_mt to answer {command:?} with {marker:?}"),
            || (text().matches(marker).count() > seen).then_some(()),
        );
    }
    stdin.write_all(b"quit\n").unwrap();
    drop(stdin);
    wait_for("cli_mt to exit", || child.0.try_wait().unwrap());
    for r in readers {
        r.join().unwrap();
    }
    text()
}

#[test]
fn create_then_get_returns_new() {
    let server = ZooServer::start(&[]);
    let out = batch(&server, "create /c1");
    assert!(out.contains("[/c1]: rc = 0"), "{out}");
    assert!(out.contains("name = /c1"), "{out}");
    let out = batch(&server, "get /c1");
    assert!(out.contains("/c1: rc = 0"), "{out}");
    assert!(out.contains(" value_len = 3\nnew\n"), "{out}");
    assert!(out.contains("version=0"), "{out}");
}

#[test]
fn ls_lists_children() {
    let server = ZooServer::start(&[]);
    interactive(
        &server,
        &[
            ("create /p", "[/p]: rc = 0"),
            ("create /p/a", "[/p/a]: rc = 0"),
            ("create /p/b", "[/p/b]: rc = 0"),
        ],
    );
    let out = batch(&server, "ls /p");
    assert!(out.contains("/p: rc = 0"), "{out}");
    let mut children: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix('\t')).collect();
    children.sort();
    assert_eq!(children, ["a", "b"], "{out}");
}

#[test]
fn set_then_get_shows_new_value_and_version() {
    let server = ZooServer::start(&[]);
    let out = interactive(
        &server,
        &[
            ("create /y", "[/y]: rc = 0"),
            ("set /y hello", "/y: rc = 0"),
            ("get /y", "value_len = 5"),
        ],
    );
    assert!(out.contains(" value_len = 5\nhello\n"), "{out}");
    assert!(out.contains("version=1"), "{out}");
    let out = batch(&server, "get /y");
    assert!(out.contains(" value_len = 5\nhello\n"), "{out}");
}

#[test]
fn delete_removes_the_node() {
    let server = ZooServer::start(&[]);
    batch(&server, "create /gone");
    let out = batch(&server, "delete /gone");
    assert!(out.contains("/gone: rc = 0"), "{out}");
    let out = batch(&server, "get /gone");
    assert!(out.contains("/gone: rc = -101"), "{out}");
    let out = batch(&server, "ls /");
    assert!(!out.contains("\tgone"), "{out}");
}

#[test]
fn get_of_missing_node_reports_nonode() {
    let server = ZooServer::start(&[]);
    let out = batch(&server, "get /nope");
    assert!(out.contains("/nope: rc = -101"), "{out}");
    let out = batch(&server, "delete /nope");
    assert!(out.contains("/nope: rc = -101"), "{out}");
}
