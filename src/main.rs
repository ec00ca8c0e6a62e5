use std::path::PathBuf;
use std::process::ExitCode;

use zoo::config::Config;
use zoo::core::commit::CommitCore;
use zoo::storage::log;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage:
  zoo server [PATH/zoo.cfg]   start a server (no path: standalone, port 2181, data in ./data)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("server") => server(args.get(1).map(PathBuf::from)),
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

fn server(config_path: Option<PathBuf>) -> ExitCode {
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
    let mut core = CommitCore::new(zoo::server::commit_executor::core_config(&config), now);
    let log_dir = log::log_directory(&config.data_log_dir);
    let started = std::time::Instant::now();
    let recovered = log::recover(&log_dir, |header, txn| {
        core.apply(&header, &txn, &mut Vec::new())
    });
    match recovered {
        Ok(stats) => {
            if stats.records > 0 || stats.torn_tail_truncated {
                eprintln!(
                    "zoo: recovered {} txns from {} log segment(s) in {:?}, last zxid {:#x}{}",
                    stats.records,
                    stats.segments,
                    started.elapsed(),
                    stats.last_zxid,
                    if stats.torn_tail_truncated {
                        " (a torn tail was truncated)"
                    } else {
                        ""
                    }
                );
            }
        }
        Err(e) => {
            eprintln!("zoo: cannot start: {e}");
            eprintln!(
                "zoo: the log is left untouched; restore the data directory or remove the damaged segment by hand"
            );
            return ExitCode::FAILURE;
        }
    }
    core.restart_session_clocks(zoo::server::wall_clock_ms());
    match zoo::server::run(config, core) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zoo: {e}");
            ExitCode::FAILURE
        }
    }
}
