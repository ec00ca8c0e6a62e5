//! Every queue, buffer and bound of the load generator, named in one place.

use std::time::Duration;

/// Largest reply frame accepted from a server (ZooKeeper's default `jute.maxbuffer` is 1 MiB;
/// a getChildren of a big node can approach it). A larger length prefix is a protocol error.
pub const REPLY_FRAME_BYTES_MAX: usize = 4 << 20;
/// The trivial server writes its replies once they reach this many bytes (or the read's
/// requests are all answered).
pub const TRIVIAL_OUTPUT_BYTES_MAX: usize = 1 << 20;
/// Largest request frame the trivial server accepts.
pub const REQUEST_FRAME_BYTES_MAX: usize = 1 << 20;
/// Size of one socket read (the frame buffer grows beyond it only for a frame that needs it).
pub const READ_CHUNK_BYTES: usize = 64 << 10;
/// A session's writer stops adding requests to one `write` once its buffer holds this much.
pub const WRITE_BATCH_BYTES_MAX: usize = 256 << 10;

/// Most requests in flight on one session (`in_flight`).
pub const IN_FLIGHT_MAX: u64 = 4096;
/// Most sessions in one run (`sessions`).
pub const SESSIONS_MAX: u64 = 100_000;
/// Most executor cores (`--cores`).
pub const CORES_MAX: usize = 256;
/// CPU numbers `--server-cpus` accepts are below this (the kernel's `CPU_SETSIZE`).
pub const SERVER_CPU_MAX: usize = 1024;
/// Most keys in the key space (`key_count`); the zipf table holds one f64 per key.
pub const KEY_COUNT_MAX: u64 = 10_000_000;
/// Largest value (`value_size`), below ZooKeeper's default `jute.maxbuffer`.
pub const VALUE_SIZE_MAX: u64 = 1_000_000;
/// Most sub-operations in one multi (`multi_size`).
pub const MULTI_SIZE_MAX: u64 = 1000;
/// Most lock nodes in the lock workload (`lock.lock_count`).
pub const LOCK_COUNT_MAX: u64 = 100_000;
/// Most rounds of the watch storm (`watch_storm.rounds`).
pub const STORM_ROUNDS_MAX: u64 = 10_000_000;
/// Longest warm-up or timed phase, seconds.
pub const PHASE_SECS_MAX: f64 = 86_400.0;
/// Highest target rate, ops/s.
pub const TARGET_RATE_MAX: f64 = 100_000_000.0;

/// Paths of nodes a session created and may delete later; beyond this, new ones are forgotten
/// (the nodes stay on the server).
pub const CREATED_PATHS_MAX: usize = 65_536;
/// Watch notifications a recipe connection holds before it must consume them; more is an error.
pub const PENDING_EVENTS_MAX: usize = 4096;
/// Seconds of the timed phase kept in the per-second series (progress, SVG); later seconds
/// still count in the totals.
pub const SECONDS_TRACKED_MAX: usize = 3600;
/// Requests pre-population keeps in flight on its connection.
pub const POPULATE_WINDOW: usize = 256;

/// Highest latency a histogram can hold; larger values are clamped to it.
pub const LATENCY_MAX_US: u64 = 60_000_000;
/// Significant digits of the per-operation histograms.
pub const HISTOGRAM_SIGFIGS: u8 = 3;
/// Significant digits of the per-second histograms (cheaper: one per second per core).
pub const SECOND_HISTOGRAM_SIGFIGS: u8 = 2;

/// TCP connect plus handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// No reply for this long while requests are outstanding is an error (OPERATIONTIMEOUT).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// A watch-storm round waits this long for arming or notifications before it fails.
pub const STORM_ROUND_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a waiting recipe checks whether the run is over.
pub const STOP_CHECK_INTERVAL: Duration = Duration::from_millis(200);
/// Session timeout asked for in the ConnectRequest.
pub const SESSION_TIMEOUT_MS: i32 = 30_000;

/// io_uring memory each executor registers (no DMA buffers are used).
pub const EXECUTOR_IO_MEMORY_BYTES: usize = 512 << 10;
/// How long closing a session waits for the closeSession reply.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Distinct failure messages kept for the report.
pub const MESSAGES_MAX: usize = 10;
/// Sessions a core connects at once (a burst of connects can overflow a server's backlog).
pub const CONNECT_CONCURRENCY: usize = 64;
