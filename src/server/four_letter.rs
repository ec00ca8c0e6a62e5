//! Four-letter words on the client port, in ZooKeeper's text formats (monitoring tools parse
//! `mntr` and `srvr`; kazoo parses `envi` for the server version).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::core::tree::DataTree;
use crate::server::limits::FOUR_LETTER_REPLY_BYTES_MAX;
use crate::server::shard::Shard;

/// The version reported to clients and tools: the ZooKeeper protocol level we implement.
pub const ZOOKEEPER_VERSION: &str = "3.9.0";

pub const COMMANDS: [&str; 18] = [
    "conf", "cons", "crst", "dirs", "dump", "envi", "gtmk", "ruok", "stmk", "srst", "srvr", "stat",
    "wchc", "wchp", "wchs", "mntr", "isro", "hash",
];

/// The command named by the first four bytes of a connection, if they are one.
pub fn command_of(prefix: [u8; 4]) -> Option<&'static str> {
    COMMANDS.iter().copied().find(|c| c.as_bytes() == prefix)
}

fn version_line() -> String {
    format!(
        "{ZOOKEEPER_VERSION}-zoo-{}, built on unknown",
        env!("CARGO_PKG_VERSION")
    )
}

/// Builds the reply to `command`.
pub fn respond(shard: &Shard, command: &str, tree: Option<Arc<DataTree>>) -> String {
    if !shard.config.four_letter_allowed(command) {
        return format!("{command} is not executed because it is not in the whitelist.\n");
    }
    let stats = &shard.stats;
    let mut out = String::new();
    match command {
        "ruok" => out.push_str("imok"),
        // ZooKeeper prints no newline here, and clients compare the reply with "rw" exactly.
        "isro" => {
            if stats.mode() == crate::server::stats::ServerMode::ReadOnly {
                out.push_str("ro")
            } else {
                out.push_str("rw")
            }
        }
        "srvr" | "stat" => {
            let _ = writeln!(out, "Zookeeper version: {}", version_line());
            if command == "stat" {
                out.push_str("Clients:\n");
                for_each_connection(shard, |c| {
                    let _ = writeln!(
                        out,
                        " /{}[1](queued={},recved={},sent={})",
                        c.peer, c.queued, c.received, c.sent
                    );
                });
                out.push('\n');
            }
            let (min, avg, max) = stats.latency_ms();
            let _ = writeln!(out, "Latency min/avg/max: {min:.0}/{avg:.4}/{max:.0}");
            let _ = writeln!(out, "Received: {}", stats.sum(|s| &s.packets_received));
            let _ = writeln!(out, "Sent: {}", stats.sum(|s| &s.packets_sent));
            let _ = writeln!(out, "Connections: {}", stats.sum(|s| &s.connections));
            let _ = writeln!(out, "Outstanding: {}", stats.sum(|s| &s.outstanding));
            let _ = writeln!(out, "Zxid: 0x{:x}", stats.commit.last_zxid.load(Relaxed));
            let _ = writeln!(out, "Mode: {}", stats.mode().name());
            let _ = writeln!(out, "Node count: {}", stats.commit.node_count.load(Relaxed));
        }
        "mntr" => {
            let (min, avg, max) = stats.latency_ms();
            let commit = &stats.commit;
            let batches = commit.batches.load(Relaxed).max(1);
            let rows: Vec<(&str, String)> = vec![
                ("zk_version", version_line()),
                ("zk_server_state", stats.mode().name().into()),
                ("zk_avg_latency", format!("{avg:.4}")),
                ("zk_max_latency", format!("{max:.0}")),
                ("zk_min_latency", format!("{min:.0}")),
                (
                    "zk_packets_received",
                    stats.sum(|s| &s.packets_received).to_string(),
                ),
                (
                    "zk_packets_sent",
                    stats.sum(|s| &s.packets_sent).to_string(),
                ),
                (
                    "zk_num_alive_connections",
                    stats.sum(|s| &s.connections).to_string(),
                ),
                (
                    "zk_outstanding_requests",
                    stats.sum(|s| &s.outstanding).to_string(),
                ),
                (
                    "zk_znode_count",
                    commit.node_count.load(Relaxed).to_string(),
                ),
                ("zk_watch_count", stats.sum(|s| &s.watch_count).to_string()),
                (
                    "zk_ephemerals_count",
                    commit.ephemerals.load(Relaxed).to_string(),
                ),
                (
                    "zk_approximate_data_size",
                    commit.data_bytes.load(Relaxed).to_string(),
                ),
                (
                    "zk_open_file_descriptor_count",
                    open_file_descriptors().to_string(),
                ),
                (
                    "zk_max_file_descriptor_count",
                    max_file_descriptors().to_string(),
                ),
                (
                    "zk_global_sessions",
                    commit.sessions.load(Relaxed).to_string(),
                ),
                ("zk_uptime", stats.started.elapsed().as_millis().to_string()),
                ("zoo_shards", stats.shards.len().to_string()),
                (
                    "zoo_commit_batches",
                    commit.batches.load(Relaxed).to_string(),
                ),
                (
                    "zoo_commit_batch_avg_writes",
                    format!(
                        "{:.2}",
                        commit.batched_writes.load(Relaxed) as f64 / batches as f64
                    ),
                ),
                (
                    "zoo_commit_batch_max_writes",
                    commit.batch_max.load(Relaxed).to_string(),
                ),
                ("zoo_fsyncs", commit.fsyncs.load(Relaxed).to_string()),
                (
                    "zoo_tree_publications",
                    commit.tree_publications.load(Relaxed).to_string(),
                ),
                (
                    "zoo_leader_sealed_batches",
                    commit.sealed_batches.load(Relaxed).to_string(),
                ),
                (
                    "zoo_leader_sealed_trees",
                    commit.sealed_trees.load(Relaxed).to_string(),
                ),
                (
                    "zoo_tree_overlay_nodes",
                    commit.overlay_nodes.load(Relaxed).to_string(),
                ),
                (
                    "zoo_snapshot_rebases",
                    commit.rebases.load(Relaxed).to_string(),
                ),
                (
                    "zoo_snapshot_rebases_abandoned",
                    commit.rebases_abandoned.load(Relaxed).to_string(),
                ),
                (
                    "zoo_snapshot_rebase_swap_max_micros",
                    commit.rebase_swap_max_micros.load(Relaxed).to_string(),
                ),
                (
                    "zoo_memory_release_max_micros",
                    commit.memory_release_max_micros.load(Relaxed).to_string(),
                ),
                (
                    "zoo_fsync_avg_micros",
                    format!(
                        "{:.1}",
                        commit.fsync_micros_total.load(Relaxed) as f64
                            / commit.fsyncs.load(Relaxed).max(1) as f64
                    ),
                ),
            ];
            let mut rows = rows;
            if let Some(state) = stats.mode().peer_state() {
                rows.push(("zk_peer_state", state.to_owned()));
                rows.push(("zk_quorum_size", commit.voters.load(Relaxed).to_string()));
            }
            if stats.mode() == crate::server::stats::ServerMode::Leader {
                rows.push(("zk_learners", commit.learners.load(Relaxed).to_string()));
                rows.push(("zk_followers", commit.followers.load(Relaxed).to_string()));
                rows.push((
                    "zk_synced_followers",
                    commit.synced_followers.load(Relaxed).to_string(),
                ));
                rows.push((
                    "zk_synced_observers",
                    commit.synced_observers.load(Relaxed).to_string(),
                ));
                rows.push((
                    "zk_pending_syncs",
                    commit.pending_syncs.load(Relaxed).to_string(),
                ));
            }
            for (key, value) in rows {
                let _ = writeln!(out, "{key}\t{value}");
            }
        }
        "conf" => {
            let c = &shard.config;
            let _ = writeln!(out, "clientPort={}", c.client_port);
            if let Some(address) = &c.client_port_address {
                let _ = writeln!(out, "clientPortAddress={address}");
            }
            let _ = writeln!(out, "dataDir={}", c.data_dir.display());
            let _ = writeln!(out, "dataLogDir={}", c.data_log_dir.display());
            let _ = writeln!(out, "tickTime={}", c.tick_time_ms);
            let _ = writeln!(out, "maxClientCnxns={}", c.max_client_connections);
            let _ = writeln!(out, "minSessionTimeout={}", c.min_session_timeout_ms);
            let _ = writeln!(out, "maxSessionTimeout={}", c.max_session_timeout_ms);
            let _ = writeln!(out, "serverId={}", c.server_id);
            let _ = writeln!(out, "zoo.shards={}", stats.shards.len());
        }
        "envi" => {
            out.push_str("Environment:\n");
            let _ = writeln!(out, "zookeeper.version={}", version_line());
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            let _ = writeln!(out, "host.name={}", host.trim());
            let _ = writeln!(out, "zoo.version={}", env!("CARGO_PKG_VERSION"));
            let _ = writeln!(out, "os.name=Linux");
            let _ = writeln!(out, "os.arch={}", std::env::consts::ARCH);
            if let Ok(dir) = std::env::current_dir() {
                let _ = writeln!(out, "user.dir={}", dir.display());
            }
        }
        "cons" => {
            for_each_connection(shard, |c| {
                let _ = writeln!(
                    out,
                    " /{}[1](queued={},recved={},sent={},sid=0x{:x},lzxid=0x{:x},to={},est={})",
                    c.peer,
                    c.queued,
                    c.received,
                    c.sent,
                    c.session_id,
                    c.last_zxid,
                    c.timeout_ms,
                    c.established_ms
                );
            });
            out.push('\n');
        }
        "crst" => {
            out.push_str("Connection stats reset.\n");
        }
        "srst" => {
            for s in &stats.shards {
                s.reset();
            }
            out.push_str("Server stats reset.\n");
        }
        "wchs" => {
            shard.refresh_listing();
            let mut connections = 0;
            let mut paths = std::collections::HashSet::new();
            for s in &stats.shards {
                let listing = s.listing.lock().expect("listing lock");
                connections += listing.watches_by_session.len();
                paths.extend(listing.watches_by_path.iter().map(|(p, _)| p.clone()));
            }
            let _ = writeln!(
                out,
                "{connections} connections watching {} paths",
                paths.len()
            );
            let _ = writeln!(out, "Total watches:{}", stats.sum(|s| &s.watch_count));
        }
        "wchc" => {
            shard.refresh_listing();
            for s in &stats.shards {
                let listing = s.listing.lock().expect("listing lock");
                for (session, paths) in &listing.watches_by_session {
                    let _ = writeln!(out, "0x{session:x}");
                    for p in paths {
                        let _ = writeln!(out, "\t{p}");
                    }
                }
            }
        }
        "wchp" => {
            shard.refresh_listing();
            for s in &stats.shards {
                let listing = s.listing.lock().expect("listing lock");
                for (p, sessions) in &listing.watches_by_path {
                    let _ = writeln!(out, "{p}");
                    for session in sessions {
                        let _ = writeln!(out, "\t0x{session:x}");
                    }
                }
            }
        }
        "dump" => {
            let tree = tree.expect("dump is given the current tree");
            let _ = writeln!(out, "SessionTracker dump:");
            let _ = writeln!(
                out,
                "Global Sessions({}):",
                stats.commit.sessions.load(Relaxed)
            );
            let _ = writeln!(out, "ephemeral nodes dump:");
            let owners = tree.ephemeral_owners();
            let _ = writeln!(out, "Sessions with Ephemerals ({}):", owners.len());
            for (session, paths) in owners {
                let _ = writeln!(out, "0x{session:x}:");
                for p in paths {
                    let _ = writeln!(out, "\t{p}");
                }
                if out.len() > FOUR_LETTER_REPLY_BYTES_MAX {
                    break;
                }
            }
            let _ = writeln!(out, "Connections dump:");
            let _ = writeln!(
                out,
                "Connections Sets (1)/({}):",
                stats.sum(|s| &s.connections)
            );
            for_each_connection(shard, |c| {
                let _ = writeln!(out, "0x{:x}", c.session_id);
            });
        }
        "dirs" => {
            let c = &shard.config;
            let _ = writeln!(out, "datadir_size: {}", directory_bytes(&c.data_dir));
            let _ = writeln!(out, "logdir_size: {}", directory_bytes(&c.data_log_dir));
        }
        "gtmk" => out.push_str("0\n"),
        "stmk" => out.push_str("0\n"),
        "hash" => {
            let _ = writeln!(out, "zxid=0x{:x}", stats.commit.last_zxid.load(Relaxed));
        }
        _ => {}
    }
    out.truncate(FOUR_LETTER_REPLY_BYTES_MAX);
    out
}

fn for_each_connection(
    shard: &Shard,
    mut visit: impl FnMut(&crate::server::stats::ConnectionInfo),
) {
    shard.refresh_listing();
    for s in &shard.stats.shards {
        let listing = s.listing.lock().expect("listing lock");
        for c in &listing.connections {
            visit(c);
        }
    }
}

fn open_file_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn max_file_descriptors() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn directory_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => directory_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_recognised_by_their_bytes() {
        assert_eq!(command_of(*b"ruok"), Some("ruok"));
        assert_eq!(command_of(*b"mntr"), Some("mntr"));
        assert_eq!(command_of([0, 0, 0, 44]), None);
    }

    #[test]
    fn every_command_is_larger_than_any_frame() {
        for c in COMMANDS {
            let b = c.as_bytes();
            let as_length = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            assert!(as_length > 0xfffff * 64, "{c}");
        }
    }
}
