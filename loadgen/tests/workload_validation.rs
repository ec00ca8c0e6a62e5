//! Invalid workload files are rejected with an error that names the offending field (in the
//! library and on the command line), and every shipped workload in loadgen/workloads/ is valid.

mod common;

use common::{TempDir, loadgen, text};
use zoo_loadgen::workload::{Overrides, Workload};

/// Parses `toml`, expects an error, and returns its text.
fn error_of(toml: &str) -> String {
    match Workload::from_toml_str(toml) {
        Ok(w) => panic!("accepted an invalid workload: {w:?}"),
        Err(e) => e.to_string(),
    }
}

fn assert_names(toml: &str, field: &str) {
    let e = error_of(toml);
    assert!(e.contains(field), "error {e:?} does not name `{field}`");
}

#[test]
fn unknown_op_names_the_op() {
    assert_names("[mix]\nget = 1\nfrobnicate = 2\n", "mix.frobnicate");
    assert!(error_of("[mix]\nfrobnicate = 2\n").contains("known ops"));
}

#[test]
fn negative_value_size_is_rejected() {
    assert_names("value_size = -5\n[mix]\nget = 1\n", "value_size");
}

#[test]
fn weights_summing_to_zero_are_rejected() {
    assert_names("[mix]\nget = 0\nset = 0\n", "mix");
    assert!(error_of("[mix]\nget = 0\n").contains("sum to 0"));
    assert_names("[mix]\nget = -1\nset = 2\n", "mix.get");
}

#[test]
fn other_bad_fields_are_named() {
    assert_names("sessions = 0\n[mix]\nget = 1\n", "sessions");
    assert_names("in_flight = 0\n[mix]\nget = 1\n", "in_flight");
    assert_names("key_count = 0\n[mix]\nget = 1\n", "key_count");
    assert_names("duration_secs = -1\n[mix]\nget = 1\n", "duration_secs");
    assert_names("target_rate = -10\n[mix]\nget = 1\n", "target_rate");
    assert_names(
        "distribution = \"pareto\"\n[mix]\nget = 1\n",
        "distribution",
    );
    assert_names(
        "distribution = \"zipf\"\nzipf_exponent = -1\n[mix]\nget = 1\n",
        "zipf_exponent",
    );
    assert_names("kind = \"dance\"\n", "kind");
    assert_names("[mix]\ndelete = 1\nget = 1\n", "mix.delete");
    assert_names(
        "kind = \"lock\"\n[lock]\nlock_count = 0\n",
        "lock.lock_count",
    );
    assert_names(
        "kind = \"watch_storm\"\n[watch_storm]\nrounds = 0\n",
        "watch_storm.rounds",
    );
    assert_names("kind = \"lock\"\n[mix]\nget = 1\n", "mix");
    assert_names("name = \"x\"\n", "mix");
    // Unknown keys and wrong types: the TOML error quotes the key.
    assert_names("sesions = 3\n[mix]\nget = 1\n", "sesions");
    assert_names("sessions = \"ten\"\n[mix]\nget = 1\n", "sessions");
    assert_names("[mix]\nget = \"lots\"\n", "mix.get");
}

#[test]
fn command_line_overrides_are_checked_too() {
    let mut w = Workload::from_toml_str("[mix]\nget = 1\n").unwrap();
    let bad = Overrides {
        in_flight: Some(-3),
        ..Overrides::default()
    };
    assert!(w.apply(&bad).unwrap_err().to_string().contains("in_flight"));
}

#[test]
fn check_command_reports_the_file_and_field() {
    let dir = TempDir::new("validation");
    let file = dir.file("bad.toml", "value_size = -1\n[mix]\nget = 1\n");
    let out = loadgen()
        .arg("check")
        .arg(&file)
        .output()
        .expect("run zoo-loadgen");
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("value_size"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn shipped_workloads_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("workloads dir") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            Workload::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
            names.push(path.file_stem().unwrap().to_string_lossy().into_owned());
        }
    }
    names.sort();
    for expected in [
        "ephemeral-churn",
        "lock-contention",
        "mixed-90-10",
        "read-heavy",
        "watch-fanout",
        "write-heavy",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected}.toml is shipped"
        );
    }
}

#[test]
fn a_bad_server_cpu_list_is_a_usage_error_naming_the_flag() {
    let dir = TempDir::new("validation");
    let file = dir.file("ok.toml", "[mix]\nget = 1\n");
    for bad in ["3-1", "x", "0,,1"] {
        let out = loadgen()
            .arg(&file)
            .args(["--server-cpus", bad])
            .output()
            .expect("run zoo-loadgen");
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = text(&out.stderr);
        assert!(err.contains("--server-cpus") && err.contains(bad), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
