use std::path::PathBuf;
use std::process::ExitCode;

use zoo::config::Config;
use zoo::storage::recovery;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage:
  zoo server [PATH/zoo.cfg]                      start a server (no path: standalone, port 2181,
                                                 data in ./data)
  zoo snapshot inspect FILE [--json] [--data]    print a snapshot's sessions and nodes
  zoo log dump FILE_OR_DIR [--json]              print the txns of a log segment or directory";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("server") => server(args.get(1).map(PathBuf::from)),
        Some("snapshot")
            if args.get(1).map(String::as_str) == Some("inspect") && args.len() >= 3 =>
        {
            let json = args.iter().any(|a| a == "--json");
            let data = args.iter().any(|a| a == "--data");
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            report(zoo::tools::inspect_snapshot(
                std::path::Path::new(&args[2]),
                json,
                data,
                &mut out,
            ))
        }
        Some("log") if args.get(1).map(String::as_str) == Some("dump") && args.len() >= 3 => {
            let json = args.iter().any(|a| a == "--json");
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            report(zoo::tools::dump_log(
                std::path::Path::new(&args[2]),
                json,
                &mut out,
            ))
        }
        Some("-h") | Some("--help") | Some("help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zoo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn server(config_path: Option<PathBuf>) -> ExitCode {
    zoo::server::register_memory_barriers_early();
    zoo::server::memory::keep_heap_in_small_pages();
    let config = match config_path {
        None => Config::default(),
        Some(path) => match Config::load(&path) {
            Ok((config, warnings)) => {
                for warning in warnings {
                    eprintln!("zoo: {}: {warning}", path.display());
                }
                config
            }
            Err(e) => {
                eprintln!("zoo: {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let now = zoo::server::wall_clock_ms();
    let log_dir = zoo::storage::log::log_directory(&config.data_log_dir);
    let snapshot_dir = zoo::storage::snapshot::snapshot_directory(&config.data_dir);
    let core_config = zoo::server::commit_executor::core_config(&config);
    let progress = |done: u64, total: u64| {
        eprintln!("zoo: loading snapshot: {}%", done * 100 / total.max(1));
    };
    let recovered = if config.is_ensemble() {
        let hard = match zoo::storage::vote::load(&zoo::storage::vote::vote_path(&config.data_dir))
        {
            Ok(h) => h,
            Err(e) => {
                eprintln!("zoo: cannot start: {e}");
                return ExitCode::FAILURE;
            }
        };
        recovery::recover_replicated(core_config, &snapshot_dir, &log_dir, now, progress).map(
            |(applied, records, report)| {
                (
                    zoo::server::Start::Replicated(zoo::server::ensemble::Recovered {
                        applied,
                        records,
                        hard,
                    }),
                    report,
                )
            },
        )
    } else {
        recovery::recover_state(core_config, &snapshot_dir, &log_dir, now, progress)
            .map(|(core, report)| (zoo::server::Start::Standalone(core), report))
    };
    let (start, mut report) = match recovered {
        Ok(v) => v,
        Err(e) => {
            eprintln!("zoo: cannot start: {e}");
            eprintln!(
                "zoo: nothing was changed on disk; restore the data directory from a backup, \
                 or move the damaged file aside if an older snapshot and the log cover it"
            );
            return ExitCode::FAILURE;
        }
    };
    eprintln!("zoo: recovery: {report}");
    match zoo::server::run(config, start, report.deferred_check.take()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zoo: {e}");
            ExitCode::FAILURE
        }
    }
}
