//! Measures the resident memory of a data tree holding N znodes of 100-byte values, built
//! through the commit core exactly as the server builds it. `cargo run --release --example
//! tree_rss -- 1000000`
use std::sync::Arc;
use zoo::core::commit::{Attach, CommitCore, CoreConfig, WriteRequest};
use zoo::core::sessions::ConnectionRef;
use zoo::jute::records::{CreateRequest, Id, Request, opcode};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let before = rss_kib();
    let mut core = CommitCore::new(CoreConfig::default(), 0);
    let owner = ConnectionRef {
        shard: 0,
        connection_id: 1,
    };
    let (Attach::Attached { session_id, .. }, _) =
        core.create_session(10_000, [0; 16], owner, 0, &mut Vec::new())
    else {
        panic!()
    };
    let auth = Arc::new(vec![Id::new("ip", "127.0.0.1")]);
    let started = std::time::Instant::now();
    let parents = (n / 1000).max(1);
    for p in 0..parents {
        let request = Request::Create(CreateRequest {
            opcode: opcode::CREATE,
            path: format!("/p{p:06}"),
            data: None,
            acl: zoo::core::acl::open_acl_unsafe().into(),
            flags: 0,
            ttl: -1,
        });
        core.process_write(
            WriteRequest {
                session_id,
                xid: 0,
                request,
                auth: auth.clone(),
            },
            0,
            &mut Vec::new(),
        );
    }
    let mut published = Vec::new();
    for i in 0..n {
        let request = Request::Create(CreateRequest {
            opcode: opcode::CREATE,
            path: format!("/p{:06}/k{i:09}", i % parents),
            data: Some(vec![7u8; 100].into()),
            acl: zoo::core::acl::open_acl_unsafe().into(),
            flags: 0,
            ttl: -1,
        });
        let out = core.process_write(
            WriteRequest {
                session_id,
                xid: 0,
                request,
                auth: auth.clone(),
            },
            0,
            &mut Vec::new(),
        );
        assert_eq!(out.reply.err, 0);
        if i % 1000 == 0 {
            published.push(core.tree().clone());
            if published.len() > 2 {
                published.remove(0);
            }
        }
    }
    let elapsed = started.elapsed();
    drop(published);
    let report = format!(
        "{n} znodes: {:.0} creates/s in the commit core alone; RSS {} MiB (+{} MiB)",
        n as f64 / elapsed.as_secs_f64(),
        rss_kib() / 1024,
        (rss_kib() - before) / 1024
    );
    println!("{report}");
    if std::env::args().any(|a| a == "--snapshot") {
        let dir = std::env::temp_dir().join(format!("zoo-tree-rss-{}", std::process::id()));
        let started = std::time::Instant::now();
        let path = zoo::storage::snapshot::write_snapshot(&dir, core.tree(), &[]).unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        println!(
            "snapshot written in {:?} ({} MiB)",
            started.elapsed(),
            size >> 20
        );
        let started = std::time::Instant::now();
        let loaded = zoo::storage::snapshot::load_snapshot(&path, |_, _| {}).unwrap();
        println!(
            "snapshot loaded in {:?} ({} nodes)",
            started.elapsed(),
            loaded.tree.node_count()
        );
        std::mem::forget(loaded);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
