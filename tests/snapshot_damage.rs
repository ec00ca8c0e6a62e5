//! A snapshot is served as soon as its checksums, trailer, root and special nodes pass; the
//! rest of its structure is checked in the background after start-up (docs/FORMAT.md,
//! "Loading"). These tests prove that a file whose checksum matches but whose structure does
//! not (a crafted or miswritten file) is still caught: the server moves it aside and stops,
//! and the next start recovers every acknowledged write from the older snapshot and the log.

mod common;

use std::path::{Path, PathBuf};

use common::*;

const HEADER_BYTES: usize = 64;

/// Snapshot files in the data dir, oldest first.
fn snapshots(data: &Path) -> Vec<PathBuf> {
    let dir = data.join("version-zoo");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("snapshot dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("snapshot.") && name.len() == "snapshot.".len() + 16
        })
        .collect();
    files.sort();
    files
}

/// Rewrites the body and header checksums after a change (header layout: body CRC32C at
/// 48..52, then the CRC32C of bytes 0..52).
fn reseal(bytes: &mut [u8]) {
    let crc = crc32c::crc32c(&bytes[HEADER_BYTES..]);
    bytes[48..52].copy_from_slice(&crc.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[..52]);
    bytes[52..56].copy_from_slice(&crc.to_be_bytes());
}

#[test]
fn a_resealed_damaged_snapshot_is_moved_aside_and_the_older_one_and_the_log_restore_every_write() {
    let mut server = ZooServer::start(&["snapCount=60"]);
    let mut client = RawClient::connect(server.port());
    client.create("/d", b"", 0).unwrap();
    let names: Vec<String> = (0..300).map(|i| format!("/d/node{i:04}")).collect();
    for (i, p) in names.iter().enumerate() {
        client.create(p, format!("v{i}").as_bytes(), 0).unwrap();
    }
    let data = server.data_dir();
    wait_for("two snapshots", || {
        (snapshots(&data).len() >= 2).then_some(())
    });
    drop(client);
    server.kill9();

    // Rename one persistent leaf in the newest snapshot: its path no longer matches its
    // index entry or its parent's order, which only the full structure check reads.
    let newest = snapshots(&data).pop().unwrap();
    let mut bytes = std::fs::read(&newest).unwrap();
    let needle = b"/d/node0007";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the leaf is in the newest snapshot");
    bytes[at + needle.len() - 1] = b'X';
    reseal(&mut bytes);
    std::fs::write(&newest, &bytes).unwrap();

    server.start_again_without_waiting();
    let status = server.wait_for_exit();
    assert!(!status.success(), "a damaged snapshot must stop the server");
    let log = server.log_text();
    assert!(
        log.contains("FATAL") && log.contains("corrupt at byte"),
        "the server says which file is damaged and why:\n{log}"
    );
    let mut aside = newest.clone().into_os_string();
    aside.push(".damaged");
    assert!(
        Path::new(&aside).exists() && !newest.exists(),
        "the damaged file is moved aside, not deleted:\n{log}"
    );

    server.start_again();
    let log = server.log_text();
    let restarted = log.rsplit("zoo: recovery:").next().unwrap();
    assert!(
        restarted.contains("loaded snapshot"),
        "the older snapshot is used:\n{log}"
    );
    let mut client = RawClient::connect(server.port());
    let mut children = client.get_children("/d").unwrap();
    children.sort();
    let expected: Vec<String> = names.iter().map(|p| p[3..].to_string()).collect();
    assert_eq!(children, expected);
    for (i, p) in names.iter().enumerate() {
        let (got, _) = client.get_data(p, false).unwrap();
        assert_eq!(got, format!("v{i}").as_bytes(), "{p}");
    }
}
