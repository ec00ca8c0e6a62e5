//! zoo.cfg: ZooKeeper's `key=value` configuration file, plus zoo's own `zoo.*` keys.
//!
//! Unknown keys are logged and ignored (kazoo's harness and real deployments pass JVM-only
//! keys); a known key with a bad value fails start-up with the key and line number.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// One `server.N=host:quorumPort:electionPort[:role][;[clientAddr:]clientPort]` line, kept for
/// the ensemble.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLine {
    pub id: i64,
    pub spec: String,
}

/// A parsed `server.N` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: i64,
    pub host: String,
    pub quorum_port: u16,
    pub election_port: u16,
    pub observer: bool,
    /// `;[clientAddr:]clientPort`, when the line names one.
    pub client_address: Option<String>,
}

impl Member {
    /// Parses `host:quorumPort:electionPort[:participant|observer][;[clientAddr:]clientPort]`.
    pub fn parse(id: i64, spec: &str) -> Result<Member, String> {
        let (servers, client) = match spec.split_once(';') {
            Some((a, b)) => (a.trim(), Some(b.trim())),
            None => (spec.trim(), None),
        };
        // An IPv6 host is bracketed: [::1]:2888:3888.
        let (host, rest) = if let Some(stripped) = servers.strip_prefix('[') {
            let (h, r) = stripped
                .split_once(']')
                .ok_or("unterminated [ in the host")?;
            (h.to_owned(), r.strip_prefix(':').unwrap_or(r))
        } else {
            let (h, r) = servers
                .split_once(':')
                .ok_or("expected host:quorumPort:electionPort")?;
            (h.to_owned(), r)
        };
        let mut parts = rest.split(':');
        let port = |p: Option<&str>, what: &str| -> Result<u16, String> {
            p.and_then(|p| p.trim().parse::<u16>().ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{what} is not a port number"))
        };
        let quorum_port = port(parts.next(), "the quorum port")?;
        let election_port = port(parts.next(), "the election port")?;
        let observer = match parts.next().map(str::trim) {
            None | Some("participant") => false,
            Some("observer") => true,
            Some(other) => return Err(format!("unknown role '{other}'")),
        };
        if parts.next().is_some() {
            return Err("too many ':' fields".into());
        }
        let client_address = match client {
            None | Some("") => None,
            Some(c) if c.contains(':') => Some(c.to_owned()),
            Some(c) => Some(format!("0.0.0.0:{c}")),
        };
        Ok(Member {
            id,
            host,
            quorum_port,
            election_port,
            observer,
            client_address,
        })
    }

    /// The line's value as ZooKeeper writes it in `/zookeeper/config`.
    pub fn spec(&self) -> String {
        let role = if self.observer {
            "observer"
        } else {
            "participant"
        };
        let mut out = format!(
            "{}:{}:{}:{role}",
            self.host, self.quorum_port, self.election_port
        );
        if let Some(c) = &self.client_address {
            out.push(';');
            out.push_str(c);
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub tick_time_ms: i32,
    /// `initLimit`, in ticks: how long a server the ensemble is waiting for may take to
    /// catch up with the leader (a voter added by a reconfig of several voters).
    pub init_limit: i32,
    /// `syncLimit`, in ticks: a follower gives up on a silent leader, and a leader that
    /// cannot hear a quorum steps down, within `syncLimit × tickTime`
    /// ([`Config::election_ticks_within_sync_limit`]).
    pub sync_limit: i32,
    pub data_dir: PathBuf,
    pub data_log_dir: PathBuf,
    pub client_port: u16,
    pub client_port_address: Option<String>,
    /// Per client IP, across all shards; 0 = unlimited.
    pub max_client_connections: u32,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// Four-letter words allowed; `*` = all.
    pub four_letter_whitelist: Vec<String>,
    /// `jute.maxbuffer`: the largest frame accepted.
    pub jute_max_buffer: usize,
    pub extended_types_enabled: bool,
    pub super_digest: Option<String>,
    pub skip_acl: bool,
    /// `globalOutstandingLimit`: requests in progress across all connections.
    pub global_outstanding_limit: usize,
    pub server_id: i64,
    pub servers: Vec<ServerLine>,
    /// The ensemble, parsed from the `server.N` lines (empty when standalone).
    pub members: Vec<Member>,
    pub read_only_mode_enabled: bool,
    pub reconfig_enabled: bool,
    /// `znode.container.checkIntervalMs`.
    pub container_check_interval_ms: u64,
    /// `znode.container.maxPerMinute`.
    pub container_max_per_minute: u32,
    /// `snapCount`: txns between snapshots.
    pub snap_count: u64,
    /// `snapSizeLimitInKb`: log bytes between snapshots.
    pub snap_size_limit_bytes: u64,
    /// `autopurge.snapRetainCount` (at least 3).
    pub autopurge_snap_retain_count: usize,
    /// `autopurge.purgeInterval` in hours; 0 = never.
    pub autopurge_purge_interval_hours: u64,
    /// `zoo.shards`: executors serving clients; 0 = one per available core.
    pub shards: usize,
    /// `zoo.pin_cores`: pin each shard's executor to a core.
    pub pin_cores: bool,
    /// `zoo.commit_on_shard`: run the commit path on shard 0's executor instead of its own
    /// thread (always so when the process may use only one core).
    pub commit_on_shard: bool,
    /// `zoo.election_ticks`: election timeout lower bound in replication ticks (50 ms).
    pub election_ticks: u32,
    /// `zoo.snapshot_rebase`: after each snapshot, serve the tree from the new file and free
    /// the in-memory copy of what it holds (`server::rebase`; replicated servers too).
    pub snapshot_rebase: bool,
    /// `zoo.idle_snapshot_ms`: snapshot once writes have stopped this long (0: never)...
    pub idle_snapshot_ms: u64,
    /// ... after at least `zoo.idle_snapshot_min_txns` txns since the last snapshot.
    pub idle_snapshot_min_txns: u64,
    /// `zoo.log_retain_entries`: applied entries kept in memory for lagging followers.
    pub log_retain_entries: usize,
    /// Every key as read, for `conf`/`envi`.
    pub raw: BTreeMap<String, String>,
}

impl Default for Config {
    /// The embedded default: standalone, port 2181, data in ./data.
    fn default() -> Self {
        Config {
            tick_time_ms: 2000,
            init_limit: 10,
            sync_limit: 5,
            data_dir: PathBuf::from("./data"),
            data_log_dir: PathBuf::from("./data"),
            client_port: 2181,
            client_port_address: None,
            max_client_connections: 60,
            min_session_timeout_ms: 4000,
            max_session_timeout_ms: 40000,
            four_letter_whitelist: vec!["srvr".to_owned()],
            jute_max_buffer: 0xfffff,
            extended_types_enabled: false,
            super_digest: None,
            skip_acl: false,
            global_outstanding_limit: 1000,
            server_id: 0,
            servers: Vec::new(),
            members: Vec::new(),
            read_only_mode_enabled: false,
            reconfig_enabled: false,
            container_check_interval_ms: 60_000,
            container_max_per_minute: 10_000,
            snap_count: 100_000,
            snap_size_limit_bytes: 4 * 1024 * 1024 * 1024,
            autopurge_snap_retain_count: 3,
            autopurge_purge_interval_hours: 0,
            shards: 0,
            pin_cores: true,
            commit_on_shard: false,
            snapshot_rebase: true,
            idle_snapshot_ms: 2_000,
            idle_snapshot_min_txns: 10_000,
            election_ticks: crate::server::limits::RAFT_ELECTION_TICKS_DEFAULT,
            log_retain_entries: crate::server::limits::RAFT_LOG_RETAIN_ENTRIES_DEFAULT,
            raw: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub line: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "configuration key '{}': {}", self.key, self.message)
        } else {
            write!(
                f,
                "line {}: key '{}': {}",
                self.line, self.key, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" => Some(true),
        "false" | "no" => Some(false),
        _ => None,
    }
}

impl Config {
    /// The election timeout's lower bound in replication ticks: `zoo.election_ticks`, lowered
    /// where needed so that `syncLimit × tickTime` bounds what ZooKeeper bounds with it. A
    /// follower's timeout is drawn from [bound, 2 × bound) ticks, and a leader steps down
    /// when a majority was silent for a whole window of `bound` ticks, so within two.
    pub fn election_ticks_within_sync_limit(&self) -> u32 {
        let limit_ms = i64::from(self.sync_limit) * i64::from(self.tick_time_ms);
        let tick_ms = crate::server::limits::RAFT_TICK_MS as i64;
        let cap = (limit_ms / (2 * tick_ms)).clamp(2, i64::from(u32::MAX)) as u32;
        self.election_ticks.min(cap)
    }

    pub fn load(path: &Path) -> Result<(Config, Vec<String>), Box<dyn std::error::Error>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        let (mut config, warnings) = Config::parse(&text)?;
        config.read_myid()?;
        Ok((config, warnings))
    }

    /// Parses zoo.cfg text. Returns the config and a warning per ignored key.
    pub fn parse(text: &str) -> Result<(Config, Vec<String>), ConfigError> {
        let mut config = Config::default();
        let mut warnings = Vec::new();
        let mut min_timeout: Option<i32> = None;
        let mut max_timeout: Option<i32> = None;
        let mut data_log_dir: Option<PathBuf> = None;
        for (index, raw_line) in text.lines().enumerate() {
            let line_number = index + 1;
            let line = raw_line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(ConfigError {
                    line: line_number,
                    key: line.to_owned(),
                    message: "expected key=value".into(),
                });
            };
            let key = key.trim();
            let value = value.trim();
            config.raw.insert(key.to_owned(), value.to_owned());
            let bad = |message: &str| ConfigError {
                line: line_number,
                key: key.to_owned(),
                message: format!("{message}, got '{value}'"),
            };
            let int = |max: i64| -> Result<i64, ConfigError> {
                value
                    .parse::<i64>()
                    .ok()
                    .filter(|v| *v >= 0 && *v <= max)
                    .ok_or_else(|| bad(&format!("expected an integer from 0 to {max}")))
            };
            let boolean = || parse_bool(value).ok_or_else(|| bad("expected true or false"));
            match key {
                "tickTime" => config.tick_time_ms = int(i32::MAX as i64)?.max(1) as i32,
                "initLimit" | "syncLimit" => {
                    let ticks = value
                        .parse::<i32>()
                        .ok()
                        .filter(|v| *v >= 1)
                        .ok_or_else(|| bad("expected a positive number of ticks"))?;
                    if key == "initLimit" {
                        config.init_limit = ticks;
                    } else {
                        config.sync_limit = ticks;
                    }
                }
                "dataDir" => config.data_dir = PathBuf::from(value),
                "dataLogDir" => data_log_dir = Some(PathBuf::from(value)),
                "clientPort" => config.client_port = int(65535)? as u16,
                "clientPortAddress" => config.client_port_address = Some(value.to_owned()),
                "maxClientCnxns" => config.max_client_connections = int(u32::MAX as i64)? as u32,
                "minSessionTimeout" => min_timeout = Some(int(i32::MAX as i64)? as i32),
                "maxSessionTimeout" => max_timeout = Some(int(i32::MAX as i64)? as i32),
                "4lw.commands.whitelist" => {
                    config.four_letter_whitelist = value
                        .split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect();
                }
                "jute.maxbuffer" => {
                    config.jute_max_buffer = int(i32::MAX as i64)?.max(1024) as usize;
                }
                "extendedTypesEnabled" | "zookeeper.extendedTypesEnabled" => {
                    config.extended_types_enabled = boolean()?
                }
                "zookeeper.DigestAuthenticationProvider.superDigest" => {
                    if !value.contains(':') {
                        return Err(bad("expected user:base64digest"));
                    }
                    config.super_digest = Some(value.to_owned());
                }
                "skipACL" | "zookeeper.skipACL" => config.skip_acl = boolean()?,
                "globalOutstandingLimit" | "zookeeper.globalOutstandingLimit" => {
                    config.global_outstanding_limit = int(i32::MAX as i64)?.max(1) as usize
                }
                "readonlymode.enabled" => config.read_only_mode_enabled = boolean()?,
                "reconfigEnabled" => config.reconfig_enabled = boolean()?,
                "znode.container.checkIntervalMs" => {
                    config.container_check_interval_ms = int(i64::MAX)?.max(1) as u64
                }
                "znode.container.maxPerMinute" => {
                    config.container_max_per_minute = int(u32::MAX as i64)? as u32
                }
                "snapCount" | "zookeeper.snapCount" => {
                    config.snap_count = int(i64::MAX)?.max(1) as u64
                }
                "snapSizeLimitInKb" | "zookeeper.snapSizeLimitInKb" => {
                    config.snap_size_limit_bytes = (int(i64::MAX / 1024)?.max(1) as u64) * 1024
                }
                "autopurge.snapRetainCount" => {
                    config.autopurge_snap_retain_count = int(1 << 20)?.max(3) as usize
                }
                "autopurge.purgeInterval" => {
                    config.autopurge_purge_interval_hours = int(1 << 20)? as u64
                }
                "zoo.shards" => config.shards = int(4096)? as usize,
                "zoo.pin_cores" => config.pin_cores = boolean()?,
                "zoo.commit_on_shard" => config.commit_on_shard = boolean()?,
                "zoo.snapshot_rebase" => config.snapshot_rebase = boolean()?,
                "zoo.idle_snapshot_ms" => config.idle_snapshot_ms = int(1 << 40)? as u64,
                "zoo.idle_snapshot_min_txns" => {
                    config.idle_snapshot_min_txns = int(1 << 40)?.max(1) as u64
                }
                "zoo.election_ticks" => config.election_ticks = int(10_000)?.max(2) as u32,
                "zoo.log_retain_entries" => {
                    config.log_retain_entries = int(1 << 40)?.max(10) as usize
                }
                k if k.starts_with("server.") => {
                    let id = k["server.".len()..]
                        .parse::<i64>()
                        .ok()
                        .filter(|id| (0..=255).contains(id))
                        .ok_or_else(|| bad("server.N needs N from 0 to 255"))?;
                    let member = Member::parse(id, value).map_err(|m| bad(&m))?;
                    if config.members.iter().any(|m| m.id == id) {
                        return Err(bad("server id given twice"));
                    }
                    config.members.push(member);
                    config.servers.push(ServerLine {
                        id,
                        spec: value.to_owned(),
                    });
                }
                _ => warnings.push(format!("line {line_number}: ignoring unknown key '{key}'")),
            }
        }
        config.min_session_timeout_ms = min_timeout.unwrap_or(config.tick_time_ms * 2);
        config.max_session_timeout_ms = max_timeout.unwrap_or(config.tick_time_ms * 20);
        if config.min_session_timeout_ms > config.max_session_timeout_ms {
            return Err(ConfigError {
                line: 0,
                key: "minSessionTimeout".into(),
                message: format!(
                    "minSessionTimeout {} is larger than maxSessionTimeout {}",
                    config.min_session_timeout_ms, config.max_session_timeout_ms
                ),
            });
        }
        config.data_log_dir = data_log_dir.unwrap_or_else(|| config.data_dir.clone());
        Ok((config, warnings))
    }

    /// Reads `dataDir/myid` when the config names servers (as ZooKeeper does).
    fn read_myid(&mut self) -> Result<(), ConfigError> {
        if self.servers.is_empty() {
            return Ok(());
        }
        let myid_path = self.data_dir.join("myid");
        if let Ok(text) = std::fs::read_to_string(&myid_path) {
            self.server_id = text.trim().parse::<i64>().map_err(|_| ConfigError {
                line: 0,
                key: "myid".into(),
                message: format!("{} does not hold a server id", myid_path.display()),
            })?;
        }
        Ok(())
    }

    /// Replicated when two or more `server.N` lines are given; with one, ZooKeeper (with its
    /// default standaloneEnabled=true) runs standalone, and so do we.
    pub fn is_ensemble(&self) -> bool {
        self.members.len() >= 2
    }

    pub fn four_letter_allowed(&self, command: &str) -> bool {
        command == "srvr"
            || (command == "isro" && self.read_only_mode_enabled)
            || self
                .four_letter_whitelist
                .iter()
                .any(|w| w == "*" || w == command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lines_parse_in_every_zookeeper_form() {
        let m = Member::parse(2, "localhost:2888:3888").unwrap();
        assert_eq!(
            (m.host.as_str(), m.quorum_port, m.election_port),
            ("localhost", 2888, 3888)
        );
        assert!(!m.observer && m.client_address.is_none());
        let m = Member::parse(3, "10.0.0.3:2888:3888:observer;2181").unwrap();
        assert!(m.observer);
        assert_eq!(m.client_address.as_deref(), Some("0.0.0.0:2181"));
        let m = Member::parse(4, "[::1]:2888:3888:participant;127.0.0.1:2182").unwrap();
        assert_eq!(m.host, "::1");
        assert_eq!(m.client_address.as_deref(), Some("127.0.0.1:2182"));
        assert_eq!(m.spec(), "::1:2888:3888:participant;127.0.0.1:2182");
        for bad in [
            "localhost",
            "localhost:2888",
            "h:0:1",
            "h:1:2:leader",
            "h:1:2:observer:x",
        ] {
            assert!(Member::parse(1, bad).is_err(), "{bad}");
        }
        let e = Config::parse("server.1=localhost:x:3888\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (1, "server.1"));
    }

    #[test]
    fn defaults_follow_zookeeper() {
        let (c, w) = Config::parse("").unwrap();
        assert_eq!(c.client_port, 2181);
        assert_eq!(c.min_session_timeout_ms, 4000);
        assert_eq!(c.max_session_timeout_ms, 40000);
        assert_eq!(c.jute_max_buffer, 0xfffff);
        assert!(w.is_empty());
        assert!(c.four_letter_allowed("srvr"));
        assert!(!c.four_letter_allowed("ruok"));
    }

    #[test]
    fn known_keys_are_read() {
        let text = "tickTime=500\ndataDir=/tmp/z\nclientPort=2281\n\
                    4lw.commands.whitelist=ruok, stat\nserver.1=localhost:2888:3888\n\
                    zookeeper.extendedTypesEnabled=true\nzoo.shards=3\n";
        let (c, _) = Config::parse(text).unwrap();
        assert_eq!(c.tick_time_ms, 500);
        assert_eq!(c.min_session_timeout_ms, 1000);
        assert_eq!(c.client_port, 2281);
        assert_eq!(c.data_log_dir, PathBuf::from("/tmp/z"));
        assert!(c.four_letter_allowed("stat"));
        assert!(c.extended_types_enabled);
        assert_eq!(
            c.servers,
            vec![ServerLine {
                id: 1,
                spec: "localhost:2888:3888".into()
            }]
        );
        assert_eq!(c.shards, 3);
    }

    #[test]
    fn init_and_sync_limits_are_read_and_sync_limit_bounds_the_election_timeout() {
        let (c, w) = Config::parse("tickTime=2000\ninitLimit=4\nsyncLimit=2\n").unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!((c.init_limit, c.sync_limit), (4, 2));
        // 4 s allows the default bound of 20 ticks (1 to 2 s).
        assert_eq!(c.election_ticks_within_sync_limit(), c.election_ticks);
        // 2 × 500 ms = 1 s: the bound drops to 10 ticks, so timeouts of 0.5 to 1 s.
        let (c, _) = Config::parse("tickTime=500\nsyncLimit=2\n").unwrap();
        assert_eq!(c.election_ticks_within_sync_limit(), 10);
        let (c, _) = Config::parse("tickTime=1\nsyncLimit=1\n").unwrap();
        assert_eq!(
            c.election_ticks_within_sync_limit(),
            2,
            "never below two ticks"
        );
        let defaults = Config::default();
        assert_eq!((defaults.init_limit, defaults.sync_limit), (10, 5));
        for bad in ["initLimit=0", "syncLimit=-1", "syncLimit=x"] {
            let e = Config::parse(bad).unwrap_err();
            assert!(
                e.message.contains("positive number of ticks"),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn unknown_keys_warn_and_are_ignored() {
        let (_, w) = Config::parse("electionAlg=3\njava.foo=bar\n").unwrap();
        assert_eq!(w.len(), 2);
        assert!(w[1].contains("java.foo"));
    }

    #[test]
    fn bad_value_names_key_and_line() {
        let err = Config::parse("# comment\nclientPort=abc\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert_eq!(err.key, "clientPort");
        assert!(err.to_string().contains("line 2"));
    }
}
