//! `gang sim` end to end: outputs and exit codes.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

fn gang() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gang"))
}

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

/// A directory of its own for one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("gang-cli-test-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn runs_an_example_with_json_and_svg() {
    let dir = TempDir::new("example");
    let (json, svg) = (dir.file("r.json"), dir.file("r.svg"));
    let out = gang()
        .args([
            "sim",
            "--duration",
            "20ms",
            "--quiet",
            "--svg-window",
            "5ms..15ms",
        ])
        .arg(example("spin-overcommit-2.toml"))
        .arg("--json")
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("== gang ==") && text.contains("== host ==") && text.contains("gang / host")
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["scenario"]["duration_ns"], 20_000_000);
    assert_eq!(report["runs"].as_array().unwrap().len(), 2);
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("5ms"));
}

#[test]
fn json_to_stdout_replaces_the_table() {
    let out = gang()
        .args([
            "sim",
            "--duration",
            "5ms",
            "--scheduler",
            "host",
            "--seed",
            "9",
            "--json",
            "-",
        ])
        .arg(example("spin-overcommit-3.toml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["scenario"]["seed"], 9);
    assert_eq!(v["runs"][0]["scheduler"], "host");
}

#[test]
fn scenario_errors_exit_1_naming_the_file() {
    let dir = TempDir::new("errors");
    let bad = dir.file("bad.toml");
    std::fs::write(&bad, "duration = \"1s\"\n[pool]\ncpus = \"0\"\n[[domain]]\nname = \"a\"\nvcpus = 1\npolicy = \"rr\"\n")
        .unwrap();
    let out = gang().arg("sim").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with(&format!(
            "gang sim: {}:7:10: domain \"a\": policy: unknown policy `rr`",
            bad.display()
        )),
        "{err}"
    );
    let out = gang().args(["sim", "/nonexistent.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["sim"][..],
        &["sim", "x.toml", "--scheduler", "cfs"],
        &["sim", "x.toml", "--duration", "soon"],
        &[
            "sim",
            "x.toml",
            "--svg",
            "a.svg",
            "--svg-window",
            "9ms..1ms",
        ],
        &["frobnicate"],
    ] {
        let out = gang().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let help = gang().args(["sim", "--help"]).output().unwrap();
    let text = String::from_utf8(help.stdout).unwrap();
    assert!(
        text.contains("SCENARIO FORMAT")
            && text.contains("METRICS")
            && text.contains("--svg-window")
    );
}
