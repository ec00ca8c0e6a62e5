//! The built-in trivial server (used to measure the loadgen's own ceiling) answers every op
//! the loadgen sends, so a run against it completes with no errors and consistent counts; and
//! `--compare` against two of them reports both runs and the B/A ratios.

mod common;

use std::process::Stdio;

use common::{
    ChildGuard, TempDir, assert_consistent, free_port, loadgen, read_run, run_loadgen, text,
    wait_for_port,
};
use zoo_loadgen::report::Output;

/// Starts a trivial server on a free port and waits until it listens. The servers listen
/// with SO_REUSEPORT (glommio), so two tests that drew the same free port would both bind
/// it and one's readiness check could reach the other's server: one start at a time, each
/// holding its port before the next draws one, rules that out.
fn start_trivial() -> (u16, ChildGuard) {
    static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    let port = free_port();
    let mut child = loadgen()
        .args(["trivial-server", "--port", &port.to_string(), "--no-pin"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start trivial server");
    wait_for_port(port, &mut child);
    (port, ChildGuard(child))
}

const MIX: &str = "sessions = 4\nin_flight = 8\nkey_count = 100\nwarmup_secs = 0.2\nduration_secs = 1\n\
                   [mix]\nget = 50\nset = 10\nexists = 10\nget_children = 10\ncreate = 5\ncreate_sequential = 5\nmulti = 5\ndelete = 5\n";

#[test]
fn trivial_server_answers_every_op() {
    let (port, _server) = start_trivial();
    let dir = TempDir::new("trivial");
    let workload = dir.file("mix.toml", MIX);
    let json = dir.path().join("out.json");
    let server = format!("127.0.0.1:{port}");
    let out = run_loadgen(&[
        workload.to_str().unwrap(),
        "--server",
        &server,
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let run = read_run(&json);
    assert_consistent(&run);
    assert_eq!(run.errors_total, 0, "{:?}", run.errors);
    assert!(run.ops_total > 0);
}

#[test]
fn compare_runs_both_endpoints_and_reports_ratios() {
    let (port_a, _a) = start_trivial();
    let (port_b, _b) = start_trivial();
    let dir = TempDir::new("compare");
    let workload = dir.file("reads.toml", "sessions = 2\nin_flight = 4\nkey_count = 10\nwarmup_secs = 0\nduration_secs = 0.5\n[mix]\nget = 1\n");
    let json = dir.path().join("out.json");
    let svg = dir.path().join("out.svg");
    let a = format!("127.0.0.1:{port_a}");
    let b = format!("127.0.0.1:{port_b}");
    let out = run_loadgen(&[
        workload.to_str().unwrap(),
        "--compare",
        &a,
        &b,
        "--labels",
        "first,second",
        "--json",
        json.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("B/A"), "{stdout}");
    let parsed: Output = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let Output::Comparison(c) = parsed else {
        panic!("expected a comparison")
    };
    assert_eq!(
        (c.a.label.as_str(), c.b.label.as_str()),
        ("first", "second")
    );
    assert_eq!(
        (c.a.server.as_str(), c.b.server.as_str()),
        (a.as_str(), b.as_str())
    );
    assert_consistent(&c.a);
    assert_consistent(&c.b);
    assert!(c.throughput_ratio_b_over_a > 0.0 && c.p99_ratio_b_over_a > 0.0);
    let svg_text = std::fs::read_to_string(&svg).unwrap();
    assert!(svg_text.contains("first p50") && svg_text.contains("second p99"));
}
