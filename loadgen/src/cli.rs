//! The command line: `run` (the default), `check`, `trivial-server`.

use std::path::PathBuf;

use crate::report::{Comparison, Output, RunResult};
use crate::runner::{self, RunConfig};
use crate::svg;
use crate::trivial;
use crate::workload::{Overrides, Workload};

pub const USAGE: &str = "\
zoo-loadgen: load generator for ZooKeeper-protocol servers

USAGE:
  zoo-loadgen [run] WORKLOAD.toml [OPTIONS]      run a workload against a server
  zoo-loadgen check WORKLOAD.toml...             validate workload files
  zoo-loadgen trivial-server --port P [--bind ADDR] [--cores N] [--data-size BYTES] [--no-pin]
                                                 canned-reply server to measure the loadgen itself
                                                 (also: zoo-loadgen --trivial-server P)

RUN OPTIONS:
  --server HOST:PORT     server to load (default 127.0.0.1:2181)
  --compare A B          run against A, then against B, and print B/A ratios
  --label NAME           name of the run in reports (default: the address)
  --labels NAME_A,NAME_B names of the two runs of --compare (default A,B)
  --cores C              executors, one pinned per core (default: every core this process may use)
  --no-pin               do not pin executors to cores
  --sessions S           override the workload's sessions
  --in-flight K          override requests in flight per session
  --duration SECS        override the timed phase
  --warmup SECS          override the warm-up
  --rate OPS             override the target rate (ops/s; 0 = closed loop)
  --key-count N          override the key count
  --rounds N             override watch_storm.rounds
  --json PATH            write the results as JSON
  --svg PATH             write an SVG report (latency over time, percentile curve)
  --quiet                no progress line each second
  --server-cpus LIST     the server runs on this host on these CPUs (taskset list, like 0 or 0-3):
                         report how busy they were over the measured phase (from /proc/stat)

EXIT STATUS: 0 clean run, 1 run finished with errors, 2 usage error or run failed";

#[derive(Debug, Default)]
struct RunArgs {
    workload: Option<PathBuf>,
    server: Option<String>,
    compare: Option<(String, String)>,
    label: Option<String>,
    labels: Option<(String, String)>,
    cores: Option<usize>,
    no_pin: bool,
    overrides: Overrides,
    json: Option<PathBuf>,
    svg: Option<PathBuf>,
    quiet: bool,
    server_cpus: Option<(String, Vec<usize>)>,
}

fn value<'a>(args: &'a [String], i: &mut usize, flag: &str) -> Result<&'a str, String> {
    *i += 1;
    args.get(*i)
        .map(|s| s.as_str())
        .ok_or_else(|| format!("{flag} needs a value"))
}

fn number<T: std::str::FromStr>(args: &[String], i: &mut usize, flag: &str) -> Result<T, String> {
    let v = value(args, i, flag)?;
    v.parse()
        .map_err(|_| format!("{flag}: '{v}' is not a number"))
}

fn parse_run(args: &[String]) -> Result<RunArgs, String> {
    let mut r = RunArgs::default();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "--server" => r.server = Some(value(args, &mut i, a)?.to_string()),
            "--compare" => {
                let first = value(args, &mut i, a)?.to_string();
                let second = value(args, &mut i, a)?.to_string();
                r.compare = Some((first, second));
            }
            "--label" => r.label = Some(value(args, &mut i, a)?.to_string()),
            "--labels" => {
                let v = value(args, &mut i, a)?;
                let (x, y) = v
                    .split_once(',')
                    .ok_or_else(|| format!("--labels wants NAME_A,NAME_B, got '{v}'"))?;
                r.labels = Some((x.to_string(), y.to_string()));
            }
            "--cores" => r.cores = Some(number(args, &mut i, a)?),
            "--no-pin" => r.no_pin = true,
            "--sessions" => r.overrides.sessions = Some(number(args, &mut i, a)?),
            "--in-flight" => r.overrides.in_flight = Some(number(args, &mut i, a)?),
            "--duration" => r.overrides.duration_secs = Some(number(args, &mut i, a)?),
            "--warmup" => r.overrides.warmup_secs = Some(number(args, &mut i, a)?),
            "--rate" => r.overrides.target_rate = Some(number(args, &mut i, a)?),
            "--key-count" => r.overrides.key_count = Some(number(args, &mut i, a)?),
            "--rounds" => r.overrides.rounds = Some(number(args, &mut i, a)?),
            "--json" => r.json = Some(PathBuf::from(value(args, &mut i, a)?)),
            "--svg" => r.svg = Some(PathBuf::from(value(args, &mut i, a)?)),
            "--quiet" => r.quiet = true,
            "--server-cpus" => {
                let v = value(args, &mut i, a)?;
                let cpus = crate::host_cpu::parse_cpu_list(v).map_err(|e| format!("{a}: {e}"))?;
                r.server_cpus = Some((v.to_string(), cpus));
            }
            _ if a.starts_with("--") => return Err(format!("unknown option {a}")),
            _ => {
                if r.workload.is_some() {
                    return Err(format!("unexpected argument '{a}' (one workload per run)"));
                }
                r.workload = Some(PathBuf::from(a));
            }
        }
        i += 1;
    }
    if r.compare.is_some() && r.server.is_some() {
        return Err("--compare names both servers: drop --server".into());
    }
    Ok(r)
}

fn write_file(path: &PathBuf, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn run_command(args: &[String]) -> Result<bool, String> {
    let r = parse_run(args)?;
    let path = r.workload.ok_or("no workload file given")?;
    let mut workload = Workload::from_file(&path)?;
    workload
        .apply(&r.overrides)
        .map_err(|e| format!("{}: {e} (from the command line)", path.display()))?;
    let cores = r
        .cores
        .unwrap_or_else(|| runner::allowed_cpus().len())
        .max(1);
    let config = |server: &str, label: String| RunConfig {
        server: server.to_string(),
        label,
        cores,
        pin: !r.no_pin,
        progress: !r.quiet,
        server_cpus: r.server_cpus.clone(),
    };
    let (output, runs): (Output, Vec<RunResult>) = match &r.compare {
        Some((a, b)) => {
            let (label_a, label_b) = r.labels.clone().unwrap_or(("A".into(), "B".into()));
            let result_a = runner::run(&workload, &config(a, label_a))?;
            println!("{}", result_a.to_text());
            let result_b = runner::run(&workload, &config(b, label_b))?;
            println!("{}", result_b.to_text());
            let comparison = Comparison::new(result_a.clone(), result_b.clone());
            println!("{}", comparison.to_text());
            (
                Output::Comparison(Box::new(comparison)),
                vec![result_a, result_b],
            )
        }
        None => {
            let server = r.server.clone().unwrap_or_else(|| "127.0.0.1:2181".into());
            let label = r.label.clone().unwrap_or_else(|| server.clone());
            let result = runner::run(&workload, &config(&server, label))?;
            println!("{}", result.to_text());
            (Output::Run(Box::new(result.clone())), vec![result])
        }
    };
    if let Some(json) = &r.json {
        let text = serde_json::to_string_pretty(&output)
            .map_err(|e| format!("cannot encode results: {e}"))?;
        write_file(json, &text)?;
    }
    if let Some(path) = &r.svg {
        let refs: Vec<&RunResult> = runs.iter().collect();
        write_file(path, &svg::render(&refs))?;
    }
    Ok(runs.iter().any(|r| r.has_errors()))
}

fn check_command(args: &[String]) -> Result<(), String> {
    if args.is_empty() {
        return Err("check: no workload file given".into());
    }
    let mut failed = Vec::new();
    for a in args {
        match Workload::from_file(&PathBuf::from(a)) {
            Ok(w) => println!(
                "{a}: ok ({} workload, {} sessions)",
                w.kind.name(),
                w.sessions
            ),
            Err(e) => failed.push(e),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("\n"))
    }
}

fn trivial_command(args: &[String]) -> Result<(), String> {
    let (mut port, mut bind, mut cores, mut data_size, mut pin) =
        (None, "127.0.0.1".to_string(), 1usize, 100usize, true);
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "--port" => port = Some(number::<u16>(args, &mut i, a)?),
            "--bind" => bind = value(args, &mut i, a)?.to_string(),
            "--cores" => cores = number(args, &mut i, a)?,
            "--data-size" => data_size = number(args, &mut i, a)?,
            "--no-pin" => pin = false,
            _ => return Err(format!("trivial-server: unknown argument {a}")),
        }
        i += 1;
    }
    let port = port.ok_or("trivial-server: --port is required")?;
    if data_size > crate::limits::VALUE_SIZE_MAX as usize {
        return Err(format!(
            "--data-size: at most {}",
            crate::limits::VALUE_SIZE_MAX
        ));
    }
    trivial::serve(&bind, port, cores, data_size, pin)
}

/// Runs the command line; returns the exit status.
pub fn main(args: &[String]) -> i32 {
    let outcome = match args.first().map(|s| s.as_str()) {
        None | Some("-h") | Some("--help") | Some("help") => {
            println!("{USAGE}");
            return if args.is_empty() { 2 } else { 0 };
        }
        Some("check") => check_command(&args[1..]).map(|_| false),
        Some("trivial-server") => trivial_command(&args[1..]).map(|_| false),
        Some("--trivial-server") => {
            let mut rest = vec!["--port".to_string()];
            rest.extend(args[1..].iter().cloned());
            trivial_command(&rest).map(|_| false)
        }
        Some("run") => run_command(&args[1..]),
        Some(_) => run_command(args),
    };
    match outcome {
        Ok(false) => 0,
        Ok(true) => {
            eprintln!("zoo-loadgen: the run finished with errors (see 'errors by code')");
            1
        }
        Err(e) => {
            eprintln!("zoo-loadgen: {e}");
            2
        }
    }
}
