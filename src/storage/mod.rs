//! Durable state: the transaction log (docs/FORMAT.md).

pub mod log;
