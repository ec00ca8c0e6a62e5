//! Group commit of the transaction log: encode N records (`storage::log::encode_record`, a
//! create of a 100-byte znode each), append them with one `write` and make them durable with
//! one `fdatasync`, for N = 1, 16 and 256. The time reported is per batch; the throughput
//! line (records/s) shows how batching amortises the fdatasync, which dominates on any real
//! disk. This is why the commit executor batches (`COMMIT_BATCH_MAX`, tuning/LIMITS.md).
//!
//! The server's log writer does the same through glommio/io_uring; this bench uses
//! `std::fs::File` (`write_all` + `sync_data`), which issues the same write and fdatasync
//! system calls, so the disk cost is the same and the bench stays runtime-free.
//!
//! The file lives in `$ZOO_BENCH_DIR` if set, else in cargo's target tmp directory (not
//! /tmp, which may be tmpfs where fdatasync costs nothing): point ZOO_BENCH_DIR at the
//! filesystem that will hold dataLogDir. Like a log segment, the file grows by appending; it
//! is truncated (untimed) whenever it passes 64 MiB.
//!
//! `ZOO_BENCH_DIR=/var/lib/zoo/log cargo bench --bench log_append`

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use zoo::core::txn::{Txn, TxnHeader};
use zoo::storage::log::{LOG_SEGMENT_BYTES_MAX, encode_record};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench_dir() -> PathBuf {
    let base = std::env::var_os("ZOO_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    base.join(format!("zoo-log-append-{}", std::process::id()))
}

fn txn(zxid: i64) -> (TxnHeader, Txn) {
    (
        TxnHeader {
            session_id: 0x0100_0000_0000_0007,
            xid: zxid as i32,
            zxid,
            time_ms: 1_700_000_000_000 + zxid,
        },
        Txn::Create {
            path: format!("/app/jobs/job-{zxid:010}").into(),
            data: Some(vec![7u8; 100].into()),
            acl: zoo::core::acl::open_acl_unsafe().into(),
            ephemeral_owner: 0,
            parent_cversion: zxid as i32,
        },
    )
}

fn log_append(c: &mut Criterion) {
    let dir = bench_dir();
    fs::create_dir_all(&dir).expect("create the bench directory");
    let path = dir.join("log.bench");
    let mut file: File = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .expect("open the bench log");
    eprintln!("log_append: appending to {}", path.display());

    let mut group = c.benchmark_group("log_append");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    let mut buffer = Vec::with_capacity(1 << 20);
    for batch in [1usize, 16, 256] {
        // The txns exist before the commit executor logs them: building them is not timed.
        // The same records are appended again each iteration; their content does not matter.
        let txns: Vec<(TxnHeader, Txn)> = (1..=batch as i64).map(txn).collect();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(
            BenchmarkId::new("encode+write+fdatasync", batch),
            &batch,
            |b, _| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        buffer.clear();
                        for (header, txn) in &txns {
                            encode_record(header, txn, &mut buffer);
                        }
                        file.write_all(&buffer).expect("append");
                        file.sync_data().expect("fdatasync");
                        total += start.elapsed();
                        if file.stream_position().expect("position") > LOG_SEGMENT_BYTES_MAX {
                            file.set_len(0).expect("truncate");
                            file.seek(SeekFrom::Start(0)).expect("rewind");
                            file.sync_all().expect("fsync");
                        }
                    }
                    total
                })
            },
        );
    }
    group.finish();
    drop(file);
    let _ = fs::remove_dir_all(&dir);
}

criterion_group!(benches, log_append);
criterion_main!(benches);
