//! The znodes the load generator uses, all under one root.

/// Everything lives under this node.
pub const ROOT: &str = "/loadgen";
/// Parent of nodes made by `create` / `create_ephemeral`.
pub const CREATED: &str = "/loadgen/c";
/// Parent of nodes made by `create_sequential` / `create_ephemeral_sequential`.
pub const SEQUENTIAL: &str = "/loadgen/s";
/// Parent of the lock nodes of the lock workload.
pub const LOCKS: &str = "/loadgen/locks";
/// The node every watcher of the watch storm watches.
pub const STORM: &str = "/loadgen/storm";

/// Parents created before any load runs.
pub const PARENTS: [&str; 5] = [ROOT, CREATED, SEQUENTIAL, LOCKS, STORM];

pub fn lock_node(index: u64) -> String {
    format!("{LOCKS}/lock-{index}")
}
