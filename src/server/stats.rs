//! Counters the shards and the commit executor publish for four-letter words. Plain atomics
//! updated with relaxed ordering on the request path; the per-connection listing is refreshed
//! by each shard about once a second (it is not on the request path).

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

#[derive(Debug, Clone, Default)]
pub struct ConnectionInfo {
    pub peer: String,
    pub session_id: i64,
    pub timeout_ms: i32,
    pub queued: usize,
    pub received: u64,
    pub sent: u64,
    pub last_zxid: i64,
    pub established_ms: i64,
}

/// A shard's detail view, refreshed periodically.
#[derive(Debug, Clone, Default)]
pub struct ShardListing {
    pub connections: Vec<ConnectionInfo>,
    /// session id -> watched paths.
    pub watches_by_session: Vec<(i64, Vec<String>)>,
    /// path -> watching session ids.
    pub watches_by_path: Vec<(String, Vec<i64>)>,
}

#[derive(Debug, Default)]
pub struct ShardStats {
    pub packets_received: AtomicU64,
    pub packets_sent: AtomicU64,
    pub connections: AtomicU64,
    pub outstanding: AtomicU64,
    pub latency_min_us: AtomicU64,
    pub latency_max_us: AtomicU64,
    pub latency_total_us: AtomicU64,
    pub latency_count: AtomicU64,
    pub watch_count: AtomicU64,
    pub watched_paths: AtomicU64,
    pub listing: Mutex<ShardListing>,
}

impl ShardStats {
    pub fn new() -> ShardStats {
        let s = ShardStats::default();
        s.latency_min_us.store(u64::MAX, Ordering::Relaxed);
        s
    }

    pub fn record_latency(&self, micros: u64) {
        self.latency_min_us.fetch_min(micros, Ordering::Relaxed);
        self.latency_max_us.fetch_max(micros, Ordering::Relaxed);
        self.latency_total_us.fetch_add(micros, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn reset(&self) {
        self.packets_received.store(0, Ordering::Relaxed);
        self.packets_sent.store(0, Ordering::Relaxed);
        self.latency_min_us.store(u64::MAX, Ordering::Relaxed);
        self.latency_max_us.store(0, Ordering::Relaxed);
        self.latency_total_us.store(0, Ordering::Relaxed);
        self.latency_count.store(0, Ordering::Relaxed);
    }
}

/// What this server is, as `srvr` and `mntr` say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ServerMode {
    Standalone = 0,
    Leader = 1,
    Follower = 2,
    Observer = 3,
    /// In an ensemble, without a leader it follows (ZooKeeper's LOOKING).
    Looking = 4,
    /// Looking, and serving read-only sessions (readonlymode.enabled).
    ReadOnly = 5,
}

impl ServerMode {
    pub fn from_u8(v: u8) -> ServerMode {
        match v {
            1 => ServerMode::Leader,
            2 => ServerMode::Follower,
            3 => ServerMode::Observer,
            4 => ServerMode::Looking,
            5 => ServerMode::ReadOnly,
            _ => ServerMode::Standalone,
        }
    }

    /// ZooKeeper's `zk_peer_state` (its state and Zab phase) for a member of an ensemble;
    /// `None` standalone, where ZooKeeper prints none.
    pub fn peer_state(self) -> Option<&'static str> {
        match self {
            ServerMode::Standalone => None,
            ServerMode::Leader => Some("leading - broadcast"),
            ServerMode::Follower => Some("following - broadcast"),
            ServerMode::Observer => Some("observing - broadcast"),
            ServerMode::Looking | ServerMode::ReadOnly => Some("looking - election"),
        }
    }

    /// The word ZooKeeper prints after `Mode:` and as `zk_server_state`.
    pub fn name(self) -> &'static str {
        match self {
            ServerMode::Standalone => "standalone",
            ServerMode::Leader => "leader",
            ServerMode::Follower => "follower",
            ServerMode::Observer => "observer",
            ServerMode::Looking => "looking",
            ServerMode::ReadOnly => "read-only",
        }
    }
}

/// Figures the commit executor publishes.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// A [`ServerMode`] as u8.
    pub mode: std::sync::atomic::AtomicU8,
    /// Voters other than the leader that have the leader's committed state (leader only).
    pub synced_followers: AtomicU64,
    /// Voters other than the leader, and every other member, in the membership in force
    /// (after any reconfig; leader only).
    pub followers: AtomicU64,
    pub learners: AtomicU64,
    /// Observers that have the leader's committed state, and learners being sent a
    /// catch-up snapshot (leader only).
    pub synced_observers: AtomicU64,
    pub pending_syncs: AtomicU64,
    /// Voters in the membership in force (ZooKeeper's `zk_quorum_size`).
    pub voters: AtomicU64,
    /// The leader this server follows; -1 when none.
    pub leader_id: AtomicI64,
    pub last_zxid: AtomicI64,
    pub sessions: AtomicU64,
    pub node_count: AtomicU64,
    pub ephemerals: AtomicU64,
    pub data_bytes: AtomicU64,
    pub batches: AtomicU64,
    pub batched_writes: AtomicU64,
    pub batch_max: AtomicU64,
    pub fsyncs: AtomicU64,
    pub fsync_micros_total: AtomicU64,
    /// Nodes (and tombstones) held in memory rather than served from the snapshot file.
    pub overlay_nodes: AtomicU64,
    pub rebases: AtomicU64,
    pub rebases_abandoned: AtomicU64,
    /// Trees handed to the shards (`server::publication`); fewer than batches when the
    /// shards do not read.
    pub tree_publications: AtomicU64,
    /// Leader: batches of proposals sealed, and how many of them kept their tree
    /// (`server::ensemble::leader`).
    pub sealed_batches: AtomicU64,
    pub sealed_trees: AtomicU64,
    /// Longest swap onto a rebased tree, in the commit path (µs).
    pub rebase_swap_max_micros: AtomicU64,
    /// Longest return of free memory to the system, in the commit path (µs).
    pub memory_release_max_micros: AtomicU64,
}

#[derive(Debug)]
pub struct ServerStats {
    pub started: Instant,
    pub shards: Vec<ShardStats>,
    pub commit: CommitStats,
}

impl ServerStats {
    pub fn mode(&self) -> ServerMode {
        ServerMode::from_u8(self.commit.mode.load(std::sync::atomic::Ordering::Relaxed))
    }

    pub fn new(shards: usize) -> ServerStats {
        ServerStats {
            started: Instant::now(),
            shards: (0..shards).map(|_| ShardStats::new()).collect(),
            commit: CommitStats::default(),
        }
    }

    pub fn sum(&self, f: impl Fn(&ShardStats) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|s| f(s).load(Ordering::Relaxed))
            .sum()
    }

    /// (min, avg, max) request latency in milliseconds, as `srvr` prints it.
    pub fn latency_ms(&self) -> (f64, f64, f64) {
        let count = self.sum(|s| &s.latency_count);
        if count == 0 {
            return (0.0, 0.0, 0.0);
        }
        let min = self
            .shards
            .iter()
            .map(|s| s.latency_min_us.load(Ordering::Relaxed))
            .min();
        let max = self
            .shards
            .iter()
            .map(|s| s.latency_max_us.load(Ordering::Relaxed))
            .max();
        let total = self.sum(|s| &s.latency_total_us);
        (
            min.unwrap_or(0) as f64 / 1000.0,
            total as f64 / count as f64 / 1000.0,
            max.unwrap_or(0) as f64 / 1000.0,
        )
    }
}
