//! `gang bench-slurm` end to end, short: its private Slurm cluster and gang
//! daemon come up, every mode (alone, linux, gang, slurm-gang) makes
//! progress, the report has its table, ratios and configuration, and the
//! host is as it was afterwards (no Slurm or munge daemon, no Slurm cgroup,
//! no gang daemon, no directory), also when the run gets SIGTERM half-way.
//! Its input errors are refused before anything starts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn in_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The run's private directory (named after the bench's pid).
fn run_dir(pid: u32) -> PathBuf {
    std::env::temp_dir().join(format!("gang-bench-slurm-{pid}"))
}

/// What of a run is still on the host: processes whose command line names
/// its directory (Slurm's and munge's daemons, the gang daemon, jobs),
/// Slurm's cgroups, the directory.
fn leftovers(pid: u32) -> Vec<String> {
    let dir = run_dir(pid);
    let mut left = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        let cmdline = text(&cmdline).replace('\0', " ");
        if cmdline.contains(dir.to_str().unwrap()) {
            left.push(format!("process {p}: {cmdline}"));
        }
        let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
        if ["slurmctld", "slurmd", "slurmstepd"].contains(&comm.trim()) {
            left.push(format!("process {p}: {}", comm.trim()));
        }
    }
    for c in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        for e in std::fs::read_dir(c.path()).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with("slurm") {
                left.push(format!("cgroup {}", e.path().display()));
            }
        }
    }
    if dir.exists() {
        left.push(format!("directory {}", dir.display()));
    }
    left
}

fn host_ready() -> bool {
    if !can_run_domains() {
        return false;
    }
    if !Path::new("/sys/fs/cgroup/freezer").is_dir() {
        skip_plain("Slurm's proctrack/cgroup here needs the cgroup v1 freezer");
        return false;
    }
    for program in ["slurmctld", "slurmd", "srun", "sbatch", "munged", "cc"] {
        if !in_path(program) {
            skip_or_fail(&format!(
                "no {program} (apt-get install slurm-wlm munge libslurm-dev gcc)"
            ));
            return false;
        }
    }
    if !Path::new("/usr/include/slurm/spank.h").is_file() {
        skip_or_fail("no /usr/include/slurm/spank.h (apt-get install libslurm-dev)");
        return false;
    }
    true
}

/// A full short run: every mode, the report, the host restored; then a run
/// stopped with SIGTERM once its cluster is up: restored too.
#[test]
fn bench_slurm_measures_every_mode_and_restores_the_host() {
    if !host_ready() {
        return;
    }
    let started = Instant::now();
    let t = TestDir::new("bench-slurm");
    let json = t.0.join("report.json");
    let child = Command::new(env!("CARGO_BIN_EXE_gang"))
        .args(["bench-slurm", "--duration", "2s", "--repeat", "1"])
        .arg("--json")
        .arg(&json)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}\n{stdout}");
    assert_eq!(leftovers(pid), Vec::<String>::new(), "{stderr}");

    // Progress while it ran.
    for needle in [
        "starting a private gang daemon",
        "repeat 1/1: alone, linux, gang, slurm-gang",
        "slurm-gang: 2 job(s) started",
        "taking the cluster and the daemon down",
    ] {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    }
    // The table, the ratios and the configuration.
    for needle in [
        "SchedulerTimeSlice=5 s",
        "--gang=be,256",
        "window 2s per mode",
        "--work 200us",
        "gang / slurm-gang:",
        "gang / linux:",
        "(ideal: each job alone does R = ",
    ] {
        assert!(stdout.contains(needle), "{needle:?} not in {stdout}");
    }
    for mode in ["alone", "linux", "gang", "slurm-gang"] {
        let row: Vec<&str> = stdout
            .lines()
            .find(|l| l.split_whitespace().count() == 5 && l.starts_with(&format!("{mode} ")))
            .unwrap_or_else(|| panic!("no {mode} row in {stdout}"))
            .split_whitespace()
            .collect();
        let sum: f64 = row[3].parse().unwrap();
        assert!(sum > 0.0, "{mode} made no progress: {stdout}");
    }
    // Every run, every job (Slurm's 5 s slices may keep one of its jobs
    // suspended for a whole 2 s window, and on a machine where other gang
    // pools hold the CPUs at real-time priority a gang job may not get a
    // slot in 2 s: there only the sum must move).
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4, "{report}");
    for run in runs {
        let rates: Vec<f64> = run["rounds_per_s"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_f64().unwrap())
            .collect();
        let mode = run["mode"].as_str().unwrap();
        assert_eq!(rates.len(), if mode == "alone" { 1 } else { 2 }, "{run}");
        if mode == "slurm-gang" || mode == "gang" {
            assert!(rates.iter().sum::<f64>() > 0.0, "{run}");
        } else {
            assert!(rates.iter().all(|&r| r > 0.0), "{run}");
        }
        let running: f64 = run["running"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_f64().unwrap())
            .sum();
        assert!((running - 1.0).abs() < 1e-9, "{run}");
    }
    assert_eq!(report["slice_s"], 5);
    assert_eq!(report["policy"], "be,256");
    note(&format!(
        "xl_bench_slurm: full run in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        stdout
            .lines()
            .filter(|l| l.contains(" / "))
            .collect::<Vec<_>>()
            .join("; ")
    ));

    // SIGTERM once the cluster is up and jobs are submitted.
    let mut child = Command::new(env!("CARGO_BIN_EXE_gang"))
        .args(["bench-slurm", "--duration", "30s", "--repeat", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("job(s) started") {
            break;
        }
    }
    assert!(
        seen.last().is_some_and(|l| l.contains("job(s) started")),
        "{seen:?}"
    );
    let signalled = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(
        rest.iter().any(|l| l.contains("interrupted by a signal")),
        "{rest:?}"
    );
    assert!(signalled.elapsed() < Duration::from_secs(30));
    assert_eq!(leftovers(pid), Vec::<String>::new(), "{rest:?}");
    note(&format!(
        "xl_bench_slurm: SIGTERM run down in {:.1} s; both in {:.1} s",
        signalled.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    ));
}

/// Bad input is refused with its reason before anything starts (no root
/// needed).
#[test]
fn bench_slurm_refuses_bad_input() {
    for (args, want) in [
        (
            &["--duration", "0"][..],
            "gang bench-slurm: --duration 0: give at least 500ms",
        ),
        (&["--duration", "10xs"], "gang bench-slurm: --duration 10xs"),
        (&["--policy", "fifo"], "gang bench-slurm: --policy fifo:"),
        (
            &["--policy", "tt,10ms"],
            "gang bench-slurm: --policy tt,10ms:",
        ),
        (
            &["--slice", "4"],
            "--slice 4: Slurm's SchedulerTimeSlice is 5..65533 seconds",
        ),
        (&["--repeat", "0"], "--repeat 0: give at least 1"),
        (&["--work", "0"], "--work: must be positive"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_gang"))
            .arg("bench-slurm")
            .args(args)
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("starting a private gang daemon"), "{err}");
    }
}
