//! Every queue, batch and buffer in the runtime has a named maximum, collected here.
//! `tuning/LIMITS.md` explains each one and how to size it.

/// Messages a shard may have queued towards the commit executor before its connections stop
/// being read (backpressure).
pub const COMMIT_QUEUE_PER_SHARD_MAX: usize = 1024;

/// Messages the commit executor may have queued towards one shard. Shards drain their inbox
/// in a task that never sends to the commit executor, so this queue always makes progress.
pub const SHARD_INBOX_MAX: usize = 1024;

/// The commit executor's merged inbox (all shards plus timers).
pub const COMMIT_INBOX_MAX: usize = 4096;

/// Writes taken into one commit batch: one tree publication (and, with the durable log, one
/// fsync) covers the whole batch.
pub const COMMIT_BATCH_MAX: usize = 1024;

/// Longest a changed tree goes unpublished while shards do not read (`server::publication`):
/// bounds how long a shard pins a superseded tree and the memory only it still uses.
pub const SHARD_TREE_REFRESH_MS: u64 = 1000;

/// Largest buffer the leader keeps for encoding its next proposal's log record; a larger one
/// (after a rare large record) is freed.
pub const ENCODE_SCRATCH_KEPT_BYTES: usize = 64 * 1024;

/// Entries a follower keeps decoded between their arrival (where they are checked) and their
/// apply (`server::ensemble`, `Arrived`); past it, an entry is decoded again when applied.
pub const DECODED_AHEAD_MAX: usize = 8192;

/// Longest a leader with no one waiting on it goes without keeping a sealed tree
/// (`server::ensemble::leader`): bounds how far its applied state (snapshots, `mntr`) trails
/// the commits. The same bound as `SHARD_TREE_REFRESH_MS`: a tree no one reads is brought up
/// to date once a second either way.
pub const LEADER_APPLIED_LAG_MS: u64 = 1000;

/// Requests one connection may have in progress (queued behind a write or awaiting commit)
/// before the server stops reading its socket.
pub const OUTSTANDING_PER_CONNECTION_MAX: usize = 1000;

/// Bytes of replies and events waiting to be written to one connection. A client that does not
/// read its socket past this is disconnected (its session survives until expiry).
pub const CONNECTION_OUTPUT_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Size of each connection's socket read buffer; frames larger than this are read in pieces.
pub const CONNECTION_READ_CHUNK_BYTES: usize = 64 * 1024;

/// How long a new connection may take to send its ConnectRequest.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

/// Sessions touched on a shard are reported to the commit executor at this period (capped by
/// tickTime/2).
pub const TOUCH_REPORT_INTERVAL_MS: u64 = 500;

/// Largest four-letter-word reply we build (dump/cons on a very busy server are cut here).
pub const FOUR_LETTER_REPLY_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Commit batches queued for the snapshot thread while it moves the tree onto the snapshot it
/// just wrote (`server::rebase`). A full queue abandons that rebase, never the commit path.
pub const REBASE_QUEUE_BATCHES_MAX: usize = 65_536;

/// Bytes of log records the commit executor keeps for the end of a rebase (everything
/// committed since the snapshot); past this the rebase is abandoned.
pub const REBASE_BACKLOG_BYTES_MAX: usize = 256 << 20;

/// Largest frame accepted from another server (an append of many large entries).
pub const PEER_FRAME_BYTES_MAX: usize = 1 << 30;

/// Size of each server-to-server connection's read buffer: the frames that arrived together
/// (forwarded writes, their answers, replication messages) are taken in one read. A larger
/// frame is read in a buffer grown to its size.
pub const PEER_READ_CHUNK_BYTES: usize = 256 * 1024;

/// A catch-up snapshot travels in pieces of this size.
pub const SNAPSHOT_CHUNK_BYTES: usize = 4 << 20;

/// Largest catch-up snapshot a server accepts.
pub const SNAPSHOT_BYTES_MAX: u64 = 1 << 40;

/// Frames queued for one other server before new ones are dropped (replication retries).
pub const PEER_QUEUE_FRAMES_MAX: usize = 65_536;

/// A write or new session forwarded to the leader and not answered within this long closes
/// its client's connection (the client retries; nothing was acknowledged).
pub const FORWARD_TIMEOUT_MS: i64 = 10_000;

/// Pause between attempts to connect to another server.
pub const PEER_RECONNECT_MS: u64 = 100;

/// The replication clock: heartbeats go out every tick.
pub const RAFT_TICK_MS: u64 = 50;

/// Election timeout lower bound, in ticks (drawn from [1, 2) × this; `zoo.election_ticks`).
pub const RAFT_ELECTION_TICKS_DEFAULT: u32 = 20;

/// Most entries in one append message.
pub const RAFT_APPEND_ENTRIES_MAX: usize = 4096;

/// Applied entries kept in memory so that a lagging server catches up from the log rather
/// than from a snapshot (`zoo.log_retain_entries`).
pub const RAFT_LOG_RETAIN_ENTRIES_DEFAULT: usize = 50_000;

/// How long after the tree moves onto a new snapshot the commit executor returns the old
/// tree's freed pages to the system (`server::memory`); the old tree is freed one second
/// after the swap, so this must be longer.
pub const TREE_MEMORY_RELEASE_DELAY_MS: u64 = 3_000;
/// The return of free memory after a move onto a snapshot waits until no writes were
/// committed for this long: it stalls the commit path for tens of milliseconds.
pub const MEMORY_RELEASE_QUIET_MS: u64 = 250;
