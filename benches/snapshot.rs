//! Snapshot write and load for a 100,000-znode tree (100-byte values): how long the background
//! snapshot thread takes to persist a state (`storage::snapshot::write_snapshot`: walk,
//! encode, checksum, write, fsync, rename, directory fsync) and how long a restart spends
//! loading it (`load_snapshot`: map, verify both checksums, check the structure and the path
//! index; nothing is decoded: the tree is served from the mapped file), and writing the next
//! snapshot from such a loaded tree (`write_from_frozen`: records copied from the old file).
//! Throughput is in znodes; scale by the node count to estimate larger trees.
//!
//! The load reads a file that was just written, so it comes from the page cache: this is the
//! CPU cost of loading, not the disk read. Dropping the loaded tree is not timed. The files
//! live in `$ZOO_BENCH_DIR` if set, else in cargo's target tmp directory.
//!
//! `cargo bench --bench snapshot`

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use zoo::storage::snapshot::{SessionRecord, load_snapshot, write_snapshot};

mod common;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NODES: usize = 100_000;

fn bench_dir() -> PathBuf {
    let base = std::env::var_os("ZOO_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    base.join(format!("zoo-snapshot-{}", std::process::id()))
}

fn snapshot(c: &mut Criterion) {
    let started = Instant::now();
    let built = common::build_tree(NODES, 100);
    let tree = built.core.tree();
    let sessions: Vec<SessionRecord> = built
        .core
        .session_records()
        .into_iter()
        .map(SessionRecord::from)
        .collect();
    eprintln!(
        "snapshot: built {} znodes in {:.1?}",
        tree.node_count(),
        started.elapsed()
    );
    let dir = bench_dir();
    let path = write_snapshot(&dir, tree, &sessions).expect("write the snapshot");
    let bytes = fs::metadata(&path).expect("snapshot metadata").len();
    eprintln!(
        "snapshot: {} ({:.1} MiB)",
        path.display(),
        bytes as f64 / (1 << 20) as f64
    );

    let mut group = c.benchmark_group("snapshot_100k");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(tree.node_count() as u64));
    group.bench_function("write", |b| {
        b.iter(|| write_snapshot(&dir, tree, &sessions).expect("write the snapshot"))
    });
    group.bench_function("load", |b| {
        b.iter_with_large_drop(|| {
            let loaded = load_snapshot(&path, |_, _| {}).expect("load the snapshot");
            assert_eq!(loaded.tree.node_count(), tree.node_count());
            loaded
        })
    });
    // A restarted server (or one that moved onto its last snapshot) writes its next snapshot
    // from a tree that is still frozen: unchanged records are copied from the old file.
    let frozen = load_snapshot(&path, |_, _| {})
        .expect("load the snapshot")
        .tree;
    let frozen_dir = dir.join("from-frozen");
    group.bench_function("write_from_frozen", |b| {
        b.iter(|| write_snapshot(&frozen_dir, &frozen, &sessions).expect("write the snapshot"))
    });
    group.finish();
    let _ = fs::remove_dir_all(&dir);
}

criterion_group!(benches, snapshot);
criterion_main!(benches);
