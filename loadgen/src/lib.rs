//! zoo-loadgen: a load generator that speaks the ZooKeeper client protocol itself, so it can
//! load any ZooKeeper-protocol server (zoo, Apache ZooKeeper, ClickHouse Keeper).
//!
//! Thread-per-core: one pinned glommio executor per core, each owning its share of the sessions;
//! workloads are TOML data ([`workload`]); results are text, JSON and SVG ([`report`], [`svg`]).

pub mod cli;
pub mod conn;
pub mod dist;
pub mod host_cpu;
pub mod limits;
pub mod mix;
pub mod paths;
pub mod protocol;
pub mod recipes;
pub mod report;
pub mod runner;
pub mod stats;
pub mod svg;
pub mod trivial;
pub mod workload;
