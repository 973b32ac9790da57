//! End to end: `gang bench-vm --qemu`, Linux guests in QEMU under the
//! Linux scheduler and under a gang runtime, a short run: every phase gives
//! every guest a positive rate, the JSON holds the table's row, and no QEMU
//! and no temporary directory is left behind.
//!
//! Needs root, 2 CPUs, a cgroup freezer, qemu-system-x86_64 and the Linux
//! guest image (built on first use with apt-get); says why it skipped, and
//! fails instead when GANG_REQUIRE_HOST=1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

/// Whether this machine can run the benchmark; says why not
/// ([`common::skip_or_fail`]).
fn can_run() -> bool {
    if !common::can_run_domains() {
        return false;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if !std::env::split_paths(&path).any(|d| d.join("qemu-system-x86_64").is_file()) {
        common::skip_or_fail("no qemu-system-x86_64 on PATH (Debian's qemu-system-x86)");
        return false;
    }
    if let Err(e) = gang_qemu::image::cached_test_image() {
        common::skip_or_fail(&format!("the Linux guest image cannot be built: {e}"));
        return false;
    }
    true
}

/// The command lines of the processes running now.
fn command_lines() -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
            out.push(String::from_utf8_lossy(&raw).replace('\0', " "));
        }
    }
    out
}

#[test]
fn bench_vm_qemu_measures_every_phase_and_leaves_nothing_behind() {
    if !can_run() {
        return;
    }
    let dir = common::TestDir::new("bench-qemu");
    let json_path = dir.0.join("bench.json");
    let child = Command::new(env!("CARGO_BIN_EXE_gang"))
        .args([
            "bench-vm",
            "--qemu",
            "--guests",
            "2",
            "--workloads",
            "barrier",
        ])
        .args(["--repeat", "1", "--duration", "3s", "--json"])
        .arg(&json_path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("gang starts");
    let pid = child.id();
    let out = child.wait_with_output().expect("gang runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}{stdout}");
    assert!(out.status.success(), "gang bench-vm --qemu failed");

    // Nothing left: no QEMU of that run, no temporary directory.
    let tmp = std::env::temp_dir().join(format!("gang-bench-vm-{pid}"));
    let marker = tmp.display().to_string();
    let left: Vec<String> = command_lines()
        .into_iter()
        .filter(|c| c.contains(&marker))
        .collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
    assert!(!tmp.exists(), "{} left behind", tmp.display());

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(report["guest_vcpus"], 2);
    assert!(report["accelerator"] == "tcg" || report["accelerator"] == "kvm");
    let workloads = report["workloads"].as_array().unwrap();
    assert_eq!(workloads.len(), 1);
    assert_eq!(workloads[0]["workload"], "barrier");
    let phases = workloads[0]["phases"].as_array().unwrap();
    let kinds: Vec<(&str, u64)> = phases
        .iter()
        .map(|p| (p["kind"].as_str().unwrap(), p["domains"].as_u64().unwrap()))
        .collect();
    assert_eq!(kinds, [("alone", 1), ("linux", 2), ("gang", 2)]);
    for p in phases {
        let rates = p["rounds_per_s"].as_array().unwrap();
        assert_eq!(rates.len() as u64, p["domains"].as_u64().unwrap(), "{p}");
        assert!(
            rates.iter().all(|r| r.as_f64().unwrap() > 0.0),
            "every guest made progress: {p}"
        );
    }
    let row = &report["rows"][0];
    assert_eq!(row["guests"], 2);
    for key in ["alone", "linux", "gang", "gang_vs_linux", "ideal_pct"] {
        assert!(row[key].as_f64().unwrap() > 0.0, "{key}: {row}");
    }
    assert_eq!(report["noise"].as_array().unwrap().len(), 2, "one per CPU");
    // The table went to stdout too.
    assert!(
        stdout.lines().any(|l| l.starts_with("barrier ")),
        "{stdout}"
    );
}
