//! Workloads are data: a TOML file names the kind of load, the op mix and its sizes. This module
//! parses and validates one; every error names the offending field.
//!
//! ```toml
//! name = "mixed-90-10"
//! kind = "mix"              # mix | lock | watch_storm
//! sessions = 32             # S sessions, spread over the cores
//! in_flight = 16            # K requests in flight per session (mix only)
//! key_count = 10000         # pre-populated keys /loadgen/k0000000..
//! value_size = 100          # bytes written by create/set and at pre-population
//! distribution = "zipf"     # uniform | zipf
//! zipf_exponent = 0.99
//! warmup_secs = 2
//! duration_secs = 10
//! target_rate = 0           # total ops/s; 0 = closed loop
//! multi_size = 3            # setData ops per multi
//! [mix]
//! get = 90
//! set = 10
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::limits;

/// One kind of ZooKeeper request the mix can issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Create,
    CreateSequential,
    CreateEphemeral,
    CreateEphemeralSequential,
    Get,
    Set,
    Exists,
    GetChildren,
    Multi,
    Delete,
}

impl Op {
    pub const ALL: [Op; 10] = [
        Op::Create,
        Op::CreateSequential,
        Op::CreateEphemeral,
        Op::CreateEphemeralSequential,
        Op::Get,
        Op::Set,
        Op::Exists,
        Op::GetChildren,
        Op::Multi,
        Op::Delete,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::CreateSequential => "create_sequential",
            Op::CreateEphemeral => "create_ephemeral",
            Op::CreateEphemeralSequential => "create_ephemeral_sequential",
            Op::Get => "get",
            Op::Set => "set",
            Op::Exists => "exists",
            Op::GetChildren => "get_children",
            Op::Multi => "multi",
            Op::Delete => "delete",
        }
    }

    pub fn from_name(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn is_create(self) -> bool {
        matches!(
            self,
            Op::Create | Op::CreateSequential | Op::CreateEphemeral | Op::CreateEphemeralSequential
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distribution {
    Uniform,
    /// P(rank k) proportional to 1 / k^exponent.
    Zipf(f64),
}

/// The op mix: ops with their weights, and a cumulative table to pick from.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    pub weights: Vec<(Op, f64)>,
    cumulative: Vec<f64>,
    total: f64,
    /// What a delete issues when its session has no node of its own left to delete.
    pub delete_fallback: Option<Op>,
}

impl Mix {
    /// Picks an op from `unit`, uniform in [0, 1).
    pub fn pick(&self, unit: f64) -> Op {
        let target = unit * self.total;
        let index = self.cumulative.partition_point(|c| *c <= target);
        self.weights[index.min(self.weights.len() - 1)].0
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LockConfig {
    /// Lock nodes /loadgen/locks/lock-N contended for (1 = every session on one lock).
    pub lock_count: u64,
    /// How long a holder keeps the lock before releasing it.
    pub hold_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StormConfig {
    /// Measured rounds (setData + all notifications), after the warm-up.
    pub rounds: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Mix(Mix),
    Lock(LockConfig),
    WatchStorm(StormConfig),
}

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Mix(_) => "mix",
            Kind::Lock(_) => "lock",
            Kind::WatchStorm(_) => "watch_storm",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub name: String,
    pub kind: Kind,
    pub sessions: u64,
    pub in_flight: u64,
    pub key_count: u64,
    pub value_size: u64,
    pub distribution: Distribution,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    pub target_rate: f64,
    pub multi_size: u64,
}

/// A workload that cannot be used, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for WorkloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "invalid workload: {}", self.message)
        } else {
            write!(
                f,
                "invalid workload field `{}`: {}",
                self.field, self.message
            )
        }
    }
}

impl std::error::Error for WorkloadError {}

fn bad(field: &str, message: impl Into<String>) -> WorkloadError {
    WorkloadError {
        field: field.to_string(),
        message: message.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    name: Option<String>,
    kind: Option<String>,
    sessions: Option<i64>,
    in_flight: Option<i64>,
    key_count: Option<i64>,
    value_size: Option<i64>,
    distribution: Option<String>,
    zipf_exponent: Option<f64>,
    warmup_secs: Option<f64>,
    duration_secs: Option<f64>,
    target_rate: Option<f64>,
    multi_size: Option<i64>,
    mix: Option<BTreeMap<String, toml::Value>>,
    lock: Option<RawLock>,
    watch_storm: Option<RawStorm>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLock {
    lock_count: Option<i64>,
    hold_ms: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorm {
    rounds: Option<i64>,
}

/// An integer field in `[min, max]`.
fn int_field(
    field: &str,
    value: Option<i64>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, WorkloadError> {
    let Some(v) = value else {
        return Ok(default);
    };
    if v < min as i64 || v as u64 > max {
        return Err(bad(
            field,
            format!("must be between {min} and {max}, got {v}"),
        ));
    }
    Ok(v as u64)
}

/// A real field in `[min, max]`.
fn real_field(
    field: &str,
    value: Option<f64>,
    default: f64,
    min: f64,
    max: f64,
) -> Result<f64, WorkloadError> {
    let Some(v) = value else {
        return Ok(default);
    };
    if !v.is_finite() || v < min || v > max {
        return Err(bad(
            field,
            format!("must be between {min} and {max}, got {v}"),
        ));
    }
    Ok(v)
}

fn parse_mix(raw: &BTreeMap<String, toml::Value>) -> Result<Mix, WorkloadError> {
    let mut weights = Vec::new();
    for (name, value) in raw {
        let field = format!("mix.{name}");
        let Some(op) = Op::from_name(name) else {
            let known: Vec<&str> = Op::ALL.iter().map(|o| o.name()).collect();
            return Err(bad(
                &field,
                format!("unknown op `{name}` (known ops: {})", known.join(", ")),
            ));
        };
        let weight = match value {
            toml::Value::Integer(i) => *i as f64,
            toml::Value::Float(f) => *f,
            other => {
                return Err(bad(&field, format!("weight must be a number, got {other}")));
            }
        };
        if !weight.is_finite() || weight < 0.0 {
            return Err(bad(&field, format!("weight must be >= 0, got {weight}")));
        }
        if weight > 0.0 {
            weights.push((op, weight));
        }
    }
    let total: f64 = weights.iter().map(|(_, w)| w).sum();
    if weights.is_empty() || total <= 0.0 {
        return Err(bad(
            "mix",
            "weights sum to 0: give at least one op a weight > 0",
        ));
    }
    let mut cumulative = Vec::with_capacity(weights.len());
    let mut running = 0.0;
    for (_, w) in &weights {
        running += w;
        cumulative.push(running);
    }
    let has = |op: Op| weights.iter().any(|(o, _)| *o == op);
    let delete_fallback = [
        Op::CreateEphemeral,
        Op::Create,
        Op::CreateSequential,
        Op::CreateEphemeralSequential,
    ]
    .into_iter()
    .find(|op| has(*op));
    if has(Op::Delete) && delete_fallback.is_none() {
        return Err(bad(
            "mix.delete",
            "delete removes nodes the session created: the mix needs a create op too",
        ));
    }
    Ok(Mix {
        weights,
        cumulative,
        total,
        delete_fallback,
    })
}

impl Workload {
    /// Parses and validates a workload from TOML text.
    pub fn from_toml_str(text: &str) -> Result<Workload, WorkloadError> {
        let raw: RawWorkload = toml::from_str(text).map_err(|e| {
            // toml names the field in its message ("unknown field `x`", or a snippet of the line)
            bad("", e.to_string().trim_end().to_string())
        })?;
        Workload::from_raw(raw)
    }

    /// Reads, parses and validates a workload file.
    pub fn from_file(path: &Path) -> Result<Workload, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read workload {}: {e}", path.display()))?;
        let mut workload =
            Workload::from_toml_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if workload.name.is_empty() {
            workload.name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        Ok(workload)
    }

    fn from_raw(raw: RawWorkload) -> Result<Workload, WorkloadError> {
        let kind_name = raw.kind.as_deref().unwrap_or("mix");
        let kind = match kind_name {
            "mix" => {
                let Some(mix) = &raw.mix else {
                    return Err(bad(
                        "mix",
                        "a `[mix]` table of op weights is required for kind = \"mix\"",
                    ));
                };
                Kind::Mix(parse_mix(mix)?)
            }
            "lock" => {
                let lock = raw.lock.as_ref();
                Kind::Lock(LockConfig {
                    lock_count: int_field(
                        "lock.lock_count",
                        lock.and_then(|l| l.lock_count),
                        1,
                        1,
                        limits::LOCK_COUNT_MAX,
                    )?,
                    hold_ms: int_field("lock.hold_ms", lock.and_then(|l| l.hold_ms), 0, 0, 60_000)?,
                })
            }
            "watch_storm" => Kind::WatchStorm(StormConfig {
                rounds: int_field(
                    "watch_storm.rounds",
                    raw.watch_storm.as_ref().and_then(|s| s.rounds),
                    100,
                    1,
                    limits::STORM_ROUNDS_MAX,
                )?,
            }),
            other => {
                return Err(bad(
                    "kind",
                    format!("unknown kind `{other}` (known: mix, lock, watch_storm)"),
                ));
            }
        };
        if raw.mix.is_some() && !matches!(kind, Kind::Mix(_)) {
            return Err(bad(
                "mix",
                format!("only used with kind = \"mix\", not \"{kind_name}\""),
            ));
        }
        if raw.lock.is_some() && !matches!(kind, Kind::Lock(_)) {
            return Err(bad(
                "lock",
                format!("only used with kind = \"lock\", not \"{kind_name}\""),
            ));
        }
        if raw.watch_storm.is_some() && !matches!(kind, Kind::WatchStorm(_)) {
            return Err(bad(
                "watch_storm",
                format!("only used with kind = \"watch_storm\", not \"{kind_name}\""),
            ));
        }
        let distribution = match raw.distribution.as_deref().unwrap_or("uniform") {
            "uniform" => {
                if raw.zipf_exponent.is_some() {
                    return Err(bad(
                        "zipf_exponent",
                        "only used with distribution = \"zipf\"",
                    ));
                }
                Distribution::Uniform
            }
            "zipf" => Distribution::Zipf(real_field(
                "zipf_exponent",
                raw.zipf_exponent,
                0.99,
                0.0,
                10.0,
            )?),
            other => {
                return Err(bad(
                    "distribution",
                    format!("unknown distribution `{other}` (known: uniform, zipf)"),
                ));
            }
        };
        let workload = Workload {
            name: raw.name.unwrap_or_default(),
            sessions: int_field("sessions", raw.sessions, 16, 1, limits::SESSIONS_MAX)?,
            in_flight: int_field("in_flight", raw.in_flight, 1, 1, limits::IN_FLIGHT_MAX)?,
            key_count: int_field("key_count", raw.key_count, 1000, 1, limits::KEY_COUNT_MAX)?,
            value_size: int_field("value_size", raw.value_size, 100, 0, limits::VALUE_SIZE_MAX)?,
            distribution,
            warmup_secs: real_field(
                "warmup_secs",
                raw.warmup_secs,
                1.0,
                0.0,
                limits::PHASE_SECS_MAX,
            )?,
            duration_secs: real_field(
                "duration_secs",
                raw.duration_secs,
                10.0,
                0.001,
                limits::PHASE_SECS_MAX,
            )?,
            target_rate: real_field(
                "target_rate",
                raw.target_rate,
                0.0,
                0.0,
                limits::TARGET_RATE_MAX,
            )?,
            multi_size: int_field("multi_size", raw.multi_size, 3, 1, limits::MULTI_SIZE_MAX)?,
            kind,
        };
        Ok(workload)
    }

    /// Applies command-line overrides and checks them like the file's values.
    pub fn apply(&mut self, overrides: &Overrides) -> Result<(), WorkloadError> {
        if let Some(v) = overrides.sessions {
            self.sessions = int_field("sessions", Some(v), 0, 1, limits::SESSIONS_MAX)?;
        }
        if let Some(v) = overrides.in_flight {
            self.in_flight = int_field("in_flight", Some(v), 0, 1, limits::IN_FLIGHT_MAX)?;
        }
        if let Some(v) = overrides.duration_secs {
            self.duration_secs =
                real_field("duration_secs", Some(v), 0.0, 0.001, limits::PHASE_SECS_MAX)?;
        }
        if let Some(v) = overrides.warmup_secs {
            self.warmup_secs =
                real_field("warmup_secs", Some(v), 0.0, 0.0, limits::PHASE_SECS_MAX)?;
        }
        if let Some(v) = overrides.target_rate {
            self.target_rate =
                real_field("target_rate", Some(v), 0.0, 0.0, limits::TARGET_RATE_MAX)?;
        }
        if let Some(v) = overrides.key_count {
            self.key_count = int_field("key_count", Some(v), 0, 1, limits::KEY_COUNT_MAX)?;
        }
        if let (Some(v), Kind::WatchStorm(storm)) = (overrides.rounds, &mut self.kind) {
            storm.rounds = int_field(
                "watch_storm.rounds",
                Some(v),
                0,
                1,
                limits::STORM_ROUNDS_MAX,
            )?;
        }
        Ok(())
    }

    pub fn is_open_loop(&self) -> bool {
        self.target_rate > 0.0
    }
}

/// Values given on the command line that replace the workload file's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub sessions: Option<i64>,
    pub in_flight: Option<i64>,
    pub duration_secs: Option<f64>,
    pub warmup_secs: Option<f64>,
    pub target_rate: Option<f64>,
    pub key_count: Option<i64>,
    pub rounds: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_pick_follows_the_weights() {
        let w = Workload::from_toml_str("[mix]\nget = 90\nset = 10\n").unwrap();
        let Kind::Mix(mix) = &w.kind else { panic!() };
        assert_eq!(mix.pick(0.0), Op::Get);
        assert_eq!(mix.pick(0.899), Op::Get);
        assert_eq!(mix.pick(0.95), Op::Set);
        assert_eq!(mix.pick(0.999_999), Op::Set);
    }

    #[test]
    fn defaults_apply() {
        let w = Workload::from_toml_str("[mix]\nget = 1\n").unwrap();
        assert_eq!(w.distribution, Distribution::Uniform);
        assert_eq!(w.target_rate, 0.0);
        assert!(w.sessions >= 1);
    }
}
