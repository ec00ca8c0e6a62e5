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
