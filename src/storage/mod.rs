//! Durable state: the transaction log and snapshots (docs/FORMAT.md).

pub mod log;
pub mod recovery;
pub mod snapshot;
pub mod vote;
pub mod writeback;
