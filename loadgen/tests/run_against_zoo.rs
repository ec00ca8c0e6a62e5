//! Short runs against a real `zoo` server: every op type, the lock recipe and the watch storm
//! complete without errors, their counts add up, and their histograms are sane.

mod common;

use common::{TempDir, Zoo, assert_consistent, read_run, run_loadgen, text};

/// Runs `workload` (TOML text) against `zoo` with extra `args`; returns the parsed result.
fn run(zoo: &Zoo, workload: &str, args: &[&str]) -> zoo_loadgen::report::RunResult {
    let dir = TempDir::new("run");
    let file = dir.file("workload.toml", workload);
    let json = dir.path().join("out.json");
    let svg = dir.path().join("out.svg");
    let server = zoo.address();
    let mut all = vec![
        file.to_str().unwrap(),
        "--server",
        &server,
        "--json",
        json.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let out = run_loadgen(&all);
    assert!(
        out.status.success(),
        "zoo-loadgen failed ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    let svg_text = std::fs::read_to_string(&svg).expect("svg written");
    assert!(svg_text.starts_with("<svg") && svg_text.trim_end().ends_with("</svg>"));
    read_run(&json)
}

#[test]
fn read_only_run_on_prepopulated_keys_has_no_errors_and_consistent_counts() {
    let zoo = Zoo::start();
    let r = run(
        &zoo,
        r#"
name = "read-only"
sessions = 4
in_flight = 4
key_count = 200
distribution = "zipf"
zipf_exponent = 0.9
warmup_secs = 0.3
duration_secs = 1.5
[mix]
get = 60
exists = 20
get_children = 20
"#,
        &[],
    );
    assert_consistent(&r);
    assert!(r.ops_total > 0);
    assert_eq!(r.errors_total, 0, "{:?}", r.errors);
    assert_eq!(r.lost_requests, 0);
    let names: Vec<&str> = r.ops.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["get", "exists", "get_children"]);
    assert!(
        r.server_cpu.is_none(),
        "without --server-cpus no server_cpu section is written"
    );
}

#[test]
fn every_write_op_of_the_mix_succeeds() {
    let zoo = Zoo::start();
    let r = run(
        &zoo,
        r#"
sessions = 3
in_flight = 3
key_count = 50
warmup_secs = 0
duration_secs = 1
multi_size = 3
[mix]
create = 10
create_sequential = 10
create_ephemeral = 10
create_ephemeral_sequential = 10
set = 10
multi = 10
delete = 30
"#,
        &[],
    );
    assert_consistent(&r);
    assert_eq!(r.errors_total, 0, "{:?}", r.errors);
    for op in [
        "create",
        "create_sequential",
        "create_ephemeral",
        "set",
        "multi",
        "delete",
    ] {
        assert!(
            r.ops.iter().any(|o| o.name == op && o.count > 0),
            "{op} ran"
        );
    }
}

#[test]
fn open_loop_offers_at_most_the_target_rate() {
    let zoo = Zoo::start();
    let r = run(
        &zoo,
        "sessions = 4\nin_flight = 8\nkey_count = 20\nwarmup_secs = 0.2\nduration_secs = 1\ntarget_rate = 400\n[mix]\nget = 1\n",
        &[],
    );
    assert_consistent(&r);
    assert_eq!(r.errors_total, 0);
    assert!(r.ops_total > 0);
    // One request per scheduled slot: rate x duration, plus one slot per session at the edge.
    assert!(
        r.ops_total <= 400 + 4,
        "{} requests for 400 slots",
        r.ops_total
    );
    assert_eq!(r.target_rate, 400.0);
}

#[test]
fn lock_recipe_acquires_without_errors() {
    let zoo = Zoo::start();
    let r = run(
        &zoo,
        "kind = \"lock\"\nsessions = 4\nwarmup_secs = 0\nduration_secs = 1\n[lock]\nlock_count = 1\n",
        &[],
    );
    assert_consistent(&r);
    assert_eq!(r.errors_total, 0, "{:?}", r.errors);
    assert_eq!(r.primary.name, "lock_acquire");
    assert!(r.primary.count > 0);
    // Every acquired lock is released: one delete per create (an attempt cut short by the end
    // of the run still deletes its node).
    let count = |name: &str| r.ops.iter().find(|o| o.name == name).map_or(0, |o| o.count);
    assert_eq!(count("create_ephemeral_sequential"), count("delete"));
}

#[test]
fn watch_storm_measures_every_round() {
    let zoo = Zoo::start();
    let r = run(
        &zoo,
        "kind = \"watch_storm\"\nsessions = 5\nwarmup_secs = 0\nduration_secs = 60\n[watch_storm]\nrounds = 20\n",
        &[],
    );
    assert_consistent(&r);
    assert_eq!(r.errors_total, 0, "{:?}", r.errors);
    assert_eq!(r.primary.name, "watch_notify");
    // The run ends after its 20 rounds (the 60 s duration is only a cap).
    assert_eq!(r.primary.count, 20, "all rounds measured");
    let fanout = r
        .derived
        .iter()
        .find(|d| d.name == "watch_fanout")
        .expect("fan-out measured");
    assert_eq!(fanout.count, 20);
    // Each round re-arms every watcher: at least 5 getData per round.
    let gets = r
        .ops
        .iter()
        .find(|o| o.name == "get")
        .map_or(0, |o| o.count);
    assert!(gets >= 5 * 20, "{gets} getData for 20 rounds of 5 watchers");
}

/// The CPUs this test may run on, as a `--server-cpus` list (`0,1,...`).
fn allowed_cpu_list() -> String {
    zoo_loadgen::runner::allowed_cpus()
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn server_cpus_are_sampled_over_the_measured_phase_only() {
    let zoo = Zoo::start();
    let cpus = allowed_cpu_list();
    let r = run(
        &zoo,
        "sessions = 4\nin_flight = 8\nkey_count = 50\nwarmup_secs = 0.5\nduration_secs = 1.5\n[mix]\nget = 9\nset = 1\n",
        &["--server-cpus", &cpus],
    );
    assert_consistent(&r);
    assert_eq!(r.errors_total, 0, "{:?}", r.errors);
    let c = r
        .server_cpu
        .expect("--server-cpus gives a server_cpu section");
    assert_eq!(c.cpus, cpus);
    // Sampled when the measured phase starts and when it ends (each as soon as the polling
    // thread wakes there), so about the 1.5 s phase, not the 2 s run.
    assert!((1.3..1.9).contains(&c.secs), "sampled over {} s", c.secs);
    // The server and the loadgen both ran on these CPUs during the phase.
    assert!(c.busy_secs > 0.0, "{c:?}");
    assert!(c.busy_share > 0.0 && c.busy_share <= 1.0, "{c:?}");
    let cores = zoo_loadgen::runner::allowed_cpus().len() as f64;
    assert!(c.busy_secs <= c.secs * cores * 1.05, "{c:?}");
    let expected = c.busy_secs * 1e6 / r.primary.count as f64;
    assert!(
        (c.busy_us_per_unit - expected).abs() <= expected * 1e-9,
        "{c:?} over {} ops",
        r.primary.count
    );
}

#[test]
fn a_server_cpu_this_host_lacks_is_reported_after_the_run_not_a_panic() {
    let zoo = Zoo::start();
    let dir = TempDir::new("cpu");
    let file = dir.file(
        "w.toml",
        "sessions = 2\nin_flight = 2\nkey_count = 10\nwarmup_secs = 0\nduration_secs = 0.5\n[mix]\nget = 1\n",
    );
    let server = zoo.address();
    let out = run_loadgen(&[
        file.to_str().unwrap(),
        "--server",
        &server,
        "--quiet",
        "--server-cpus",
        "1023",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("--server-cpus") && err.contains("CPU 1023"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
