//! Watch trigger fan-out in a shard's `core::watches::WatchTable`: 1, 100 and 10,000
//! connections hold a data watch on one path (a config node, a leader-election node); one
//! setData fires it. Each iteration is `trigger` (take every one-shot watcher of the path) plus
//! re-adding the watches, as the clients do when they re-read the node, so the table is the
//! same at the start of every iteration. This is the shard-side cost of a watch storm, before
//! any notification is encoded or written; throughput is in watches fired.
//!
//! `cargo bench --bench watches`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use zoo::core::watches::{WatchKind, WatchTable};
use zoo::jute::records::EventType;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WATCHED: &str = "/app/config/cluster-settings";

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("watch_fan_out");
    for connections in [1u64, 100, 10_000] {
        let mut table = WatchTable::default();
        // Other watches on the shard, so the trigger's lookup is not in a one-entry map.
        for other in 0..1_000u64 {
            table.add(
                WatchKind::Data,
                &format!("/app/nodes/n{other:06}"),
                1_000_000 + other,
            );
        }
        for connection in 0..connections {
            table.add(WatchKind::Data, WATCHED, connection);
        }
        group.throughput(Throughput::Elements(connections));
        group.bench_with_input(
            BenchmarkId::new("trigger+readd", connections),
            &connections,
            |b, &connections| {
                b.iter(|| {
                    let fired = table.trigger(black_box(WATCHED), EventType::NodeDataChanged);
                    debug_assert_eq!(fired.len() as u64, connections);
                    for connection in fired {
                        table.add(WatchKind::Data, WATCHED, connection);
                    }
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, fan_out);
criterion_main!(benches);
