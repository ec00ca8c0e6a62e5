//! zoo: a ZooKeeper-compatible coordination service on a thread-per-core engine.
//!
//! Theory of operation (the full version, with the numbered ordering rules that tests cite,
//! is `docs/ARCHITECTURE.md`):
//!
//! * `jute` decodes and encodes ZooKeeper's wire records; every length is checked against
//!   the bytes left before anything is allocated.
//! * `core` is plain Rust with no I/O: the data tree, sessions, watches, ACL checks, the
//!   commit core that turns writes into txns, and the read executor.
//! * `server` is the runtime: one glommio executor per shard owns its connections, decodes
//!   requests, serves reads from its tree snapshot and delivers watch events; one commit
//!   executor orders every write, applies it, and publishes the new tree to all shards.
//! * `storage` holds the transaction log (formats in `docs/FORMAT.md`).
//! * `config` reads zoo.cfg.

pub mod config;
pub mod consensus;
pub mod core;
pub mod error;
pub mod jute;
pub mod server;
pub mod storage;
pub mod tls;
pub mod tools;
