//! The data tree at 1,000,000 znodes (100-byte values): the cost of a create, a getData and a
//! setData once the tree is big enough that lookups miss the CPU caches, and the persistence
//! tax the commit executor pays for publishing an O(1) clone to the shards before mutating.
//!
//! The tree is built once (about 20 s) through `CommitCore::process_write`, as the server
//! builds it. Writes go through the same validation, zxid assignment and apply as in the
//! server, without the log (see the `log_append` bench for that). Paths are picked at random
//! (a fixed seed) so the HAMT nodes touched are not cache-resident.
//!
//! * `create`: a new znode under an existing parent. Created nodes are deleted again between
//!   timed chunks, untimed, so the tree stays at 1M nodes however long criterion runs.
//! * `getData`: `core::read::execute` against the tree, as a shard serves a read.
//! * `setData`: a 100-byte setData on an existing znode, with no clone outstanding.
//! * `clone`: cloning the tree and dropping the clone (what publishing costs by itself).
//! * `clone+setData+drop`: clone (the published snapshot), one setData (which must now copy
//!   the HAMT path it touches instead of updating it in place), then drop the clone (freeing
//!   the old path, as the last shard to move on does). Minus `setData`, this is the tax a
//!   write pays when it is alone in its batch.
//! * `clone+1000_setData+drop`: the same with a batch of 1,000 setData on random paths after
//!   one clone; throughput is per write. Writes of a batch share the copies of the upper HAMT
//!   levels, but on a big tree most of them still copy the lower levels they touch, so the tax
//!   is paid per write, not only once per batch.
//!
//! `cargo bench --bench tree`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use zoo::core::read;
use zoo::jute::records::Request;

mod common;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NODES: usize = 1_000_000;
const VALUE_BYTES: usize = 100;
/// Creates timed per chunk before they are deleted again (untimed).
const CREATE_CHUNK: u64 = 4096;
/// Distinct random getData requests, cycled through (a power of two).
const READS: usize = 1 << 16;

fn tree_1m(c: &mut Criterion) {
    let started = Instant::now();
    let mut built = common::build_tree(NODES, VALUE_BYTES);
    eprintln!(
        "tree_1m: built {} znodes in {:.1?}",
        built.core.tree().node_count(),
        started.elapsed()
    );
    let ctx = built.ctx.clone();
    let mut rng = common::XorShift::new(0x5eed);
    let mut group = c.benchmark_group("tree_1m");

    let mut created = 0u64;
    group.bench_function("create", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let chunk = left.min(CREATE_CHUNK);
                left -= chunk;
                let paths: Vec<String> = (0..chunk)
                    .map(|_| {
                        created += 1;
                        format!("{}/new{created:012}", ctx.parent(rng.below(ctx.parents)))
                    })
                    .collect();
                let writes: Vec<_> = paths
                    .iter()
                    .map(|p| {
                        ctx.write(common::create_request(
                            p.clone(),
                            Some(vec![7u8; VALUE_BYTES]),
                        ))
                    })
                    .collect();
                let mut triggers = Vec::with_capacity(4);
                let mut outcomes = Vec::with_capacity(writes.len());
                let start = Instant::now();
                for write in writes {
                    outcomes.push(built.core.process_write(write, 0, &mut triggers));
                    triggers.clear();
                }
                total += start.elapsed();
                assert!(outcomes.iter().all(|o| o.reply.err == 0));
                drop(outcomes);
                for path in paths {
                    built.apply(Request::Delete { path, version: -1 });
                }
            }
            total
        })
    });

    let reads: Vec<Request> = (0..READS)
        .map(|_| Request::GetData {
            path: ctx.path(rng.below(NODES)),
            watch: false,
        })
        .collect();
    group.bench_function("getData", |b| {
        let tree = built.core.tree();
        let mut next = 0usize;
        b.iter(|| {
            let request = &reads[next & (READS - 1)];
            next += 1;
            let outcome = read::execute(tree, request, &ctx.auth, ctx.session_id);
            debug_assert!(outcome.result.is_ok());
            black_box(outcome)
        })
    });

    let set_data = |rng: &mut common::XorShift| {
        ctx.write(Request::SetData {
            path: ctx.path(rng.below(NODES)),
            data: Some(vec![9u8; VALUE_BYTES].into()),
            version: -1,
        })
    };

    group.bench_function("setData", |b| {
        let mut triggers = Vec::with_capacity(4);
        b.iter_batched(
            || set_data(&mut rng),
            |write| {
                let outcome = built.core.process_write(write, 0, &mut triggers);
                triggers.clear();
                outcome
            },
            BatchSize::SmallInput,
        )
    });

    group.bench_function("clone", |b| {
        let tree = built.core.tree();
        b.iter(|| drop(black_box(tree.clone())))
    });

    group.bench_function("clone+setData+drop", |b| {
        let mut triggers = Vec::with_capacity(4);
        b.iter_batched(
            || set_data(&mut rng),
            |write| {
                let published = black_box(built.core.tree().clone());
                let outcome = built.core.process_write(write, 0, &mut triggers);
                triggers.clear();
                drop(published);
                outcome
            },
            BatchSize::SmallInput,
        )
    });

    const BATCH: usize = 1000;
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("clone+1000_setData+drop", |b| {
        let mut triggers = Vec::with_capacity(4);
        b.iter_batched(
            || (0..BATCH).map(|_| set_data(&mut rng)).collect::<Vec<_>>(),
            |writes| {
                let published = black_box(built.core.tree().clone());
                let mut outcomes = Vec::with_capacity(writes.len());
                for write in writes {
                    outcomes.push(built.core.process_write(write, 0, &mut triggers));
                    triggers.clear();
                }
                drop(published);
                outcomes
            },
            BatchSize::PerIteration,
        )
    });

    group.finish();
    // Freeing a million nodes takes a while and measures nothing.
    std::mem::forget(built);
}

criterion_group!(benches, tree_1m);
criterion_main!(benches);
