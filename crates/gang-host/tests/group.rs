//! Whole programs as gangs: every task of a freezer cgroup runs only in its
//! domain's slots (`group`).
//!
//! The programs are this test binary re-executed in a child mode: a
//! sleeping main thread and two workers at a spin barrier, all named alike,
//! and a third (busy) worker started about a second after adoption. Two
//! such programs, each in its own freezer cgroup, are adopted as groups by
//! one shared runtime on CPUs 0-1 (best effort, equal weights).
//!
//! Needs root, a freezer and CPUs 0 and 1; otherwise each test prints why it
//! skipped, and fails instead when `GANG_REQUIRE_HOST=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use gang_core::{CpuSet, DomainId, DomainSpec, Policy, PoolConfig, MS};
use gang_host::cgroup::{self, Controller};
use gang_host::runtime::{held_intervals, Runtime, RuntimeConfig};
use gang_host::sys;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
const CHILD_ENV: &str = "GANG_TEST_GROUP_CHILD_LATE_MS";

fn can_run() -> bool {
    common::can_run(common::Needs::Freezer)
}

/// The child: the program. Prints its pid, then its late worker's TID once
/// started, then its rounds every 20 ms until its stdin closes.
#[test]
#[ignore = "a child process of another test, which runs it with --ignored"]
fn child_program() {
    let Some(late) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let late_ms: u64 = late.to_string_lossy().parse().unwrap();
    // Wait to be put into the cgroup and adopted.
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let mut program = gang_host::workload::Program::start("program", 2, 1_000).unwrap();
    let tids = program.tids();
    println!("tids {}", join(&tids));
    let start = sys::monotonic_ns();
    let mut late_started = false;
    // Stdin closing ends the program.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::stdin().read_line(&mut rest);
        let _ = done_tx.send(());
    });
    // That reader is a thread of the program too; the test knows it from
    // the cgroup, like any helper thread.
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
        done_rx.recv_timeout(std::time::Duration::from_millis(20))
    {
        if !late_started && sys::monotonic_ns() - start >= late_ms * 1_000_000 {
            program.add_busy_worker().unwrap();
            late_started = true;
            let tids = program.tids();
            println!("late {}", tids.last().unwrap());
        }
        let rounds = program
            .barrier
            .progress
            .load(std::sync::atomic::Ordering::Relaxed);
        if writeln!(std::io::stdout(), "rounds {rounds}").is_err() {
            break;
        }
        let _ = std::io::stdout().flush();
    }
    program.stop();
}

fn join(tids: &[i32]) -> String {
    tids.iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A program in its own freezer cgroup; killed, and the cgroup thawed and
/// removed, on drop (whatever the test did).
struct ChildProgram {
    child: Child,
    controller: Controller,
    cgroup: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ChildProgram {
    fn spawn(tag: &str, late_ms: u64) -> ChildProgram {
        let controller = cgroup::Hierarchy::detect()
            .unwrap()
            .freezer()
            .unwrap()
            .clone();
        let cgroup = controller
            .mount
            .join(format!("gang-test-group-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&cgroup).unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "child_program", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(CHILD_ENV, late_ms.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        let p = ChildProgram {
            child,
            controller,
            cgroup,
            lines,
            reader: Some(reader),
        };
        // The whole process (every thread) into the cgroup; threads created
        // later join it by themselves.
        std::fs::write(p.cgroup.join("cgroup.procs"), p.child.id().to_string()).unwrap();
        p
    }

    /// Lets the program start its workers; returns its first TIDs (main
    /// thread first).
    fn go(&mut self) -> Vec<i32> {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
        self.wait_line("tids ")
            .split_whitespace()
            .map(|t| t.parse().unwrap())
            .collect()
    }

    fn wait_line(&self, prefix: &str) -> String {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find_map(|l| l.find(prefix).map(|i| &l[i + prefix.len()..]))
            {
                return l.to_string();
            }
            assert!(
                std::time::Instant::now() < until,
                "no '{prefix}' line from the program"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    fn rounds(&self) -> u64 {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find_map(|l| {
                let i = l.find("rounds ")?;
                l[i + 7..].trim().parse().ok()
            })
            .unwrap_or(0)
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn tasks(&self) -> Vec<i32> {
        cgroup::threads_of(&self.controller, &self.cgroup).unwrap()
    }

    fn freezer(&self) -> (Controller, PathBuf) {
        (self.controller.clone(), self.cgroup.clone())
    }

    fn cpu_ns(&self, tid: i32) -> u64 {
        sys::thread_cpu_ns(self.pid(), tid).unwrap_or(0)
    }
}

impl Drop for ChildProgram {
    fn drop(&mut self) {
        let _ = cgroup::set_frozen(
            &self.controller,
            &self.cgroup,
            false,
            std::time::Duration::from_secs(1),
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let _ = cgroup::drain_and_remove(&self.controller, &self.cgroup, &self.controller.mount);
    }
}

/// A state directory, removed on drop.
struct StateDir(PathBuf);

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn state_dir(name: &str) -> StateDir {
    let dir = std::env::temp_dir().join(format!("gang-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    StateDir(dir)
}

fn spec(id: u32) -> DomainSpec {
    DomainSpec {
        id: DomainId(id),
        vcpus: 2,
        cpu_map: Some(vec![0, 1]),
        policy: Policy::BestEffort {
            weight: 256,
            space_filling: false,
        },
    }
}

#[test]
fn two_programs_run_as_gangs_and_are_given_back() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !can_run() {
        return;
    }
    let state = state_dir("group");
    let dir = state.0.clone();
    let mut config = RuntimeConfig::new(PoolConfig::new(CpuSet::parse("0-1", None).unwrap()));
    config.state_dir = Some(dir.clone());
    config.name = "group-test".into();
    let runtime = Runtime::start(config).unwrap();
    let mut programs = [
        ChildProgram::spawn("a", 1000),
        ChildProgram::spawn("b", 1000),
    ];
    let mut first = Vec::new();
    for p in &mut programs {
        let tids = p.go();
        // Something of its own to give back: the main thread on CPU 0 (and
        // the process's leader, if the test harness runs the program's main
        // thread in a thread of its own: threads born later get the
        // leader's affinity back).
        sys::set_affinity(tids[0], &[0]).unwrap();
        sys::set_affinity(p.pid(), &[0]).unwrap();
        first.push(tids);
    }
    for (i, p) in programs.iter().enumerate() {
        runtime
            .adopt_group_domain(spec(i as u32 + 1), p.freezer(), false)
            .unwrap();
    }
    for p in &programs {
        for t in p.tasks() {
            assert_eq!(common::pid_cpus(t), "0-1", "task {t} placed on the map");
        }
    }
    // The late workers appear about a second after adoption.
    let late: Vec<i32> = programs
        .iter()
        .map(|p| p.wait_line("late ").trim().parse().unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    for (p, &l) in programs.iter().zip(&late) {
        assert!(p.tasks().contains(&l), "the late worker joined the cgroup");
        assert_eq!(common::pid_cpus(l), "0-1", "late worker on the map");
    }

    // Pause program a for 300 ms: none of its threads gains CPU time, and
    // program b goes on.
    let paused_at = runtime.pause(DomainId(1)).unwrap();
    runtime.clock().wait_until(paused_at + 4 * MS, 0);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let a_tasks = programs[0].tasks();
    let before: Vec<u64> = a_tasks.iter().map(|&t| programs[0].cpu_ns(t)).collect();
    let b_rounds = programs[1].rounds();
    let window_start = runtime.now();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let window_end = runtime.now();
    let after: Vec<u64> = a_tasks.iter().map(|&t| programs[0].cpu_ns(t)).collect();
    let b_rounds_after = programs[1].rounds();
    runtime.unpause(DomainId(1)).unwrap();
    for ((t, b), a) in a_tasks.iter().zip(&before).zip(&after) {
        assert!(
            a.saturating_sub(*b) <= 1_000_000,
            "task {t} of the paused program ran {} us",
            (a - b) / 1000
        );
    }
    assert!(
        a_tasks.contains(&late[0]),
        "the late worker was checked too"
    );
    assert!(
        b_rounds_after > b_rounds,
        "the other program went on: {b_rounds} -> {b_rounds_after}"
    );
    let switches = runtime.recent_switches();
    let held = held_intervals(&switches, DomainId(1));
    assert!(
        held.iter()
            .all(|&(_, _, s, e)| e <= window_start || s >= window_end),
        "the paused domain held no CPU in the window: {held:?}"
    );

    // Both make progress, and only in their slots: while b holds both
    // CPUs, a's tasks gain (almost) nothing.
    let r0: Vec<u64> = programs.iter().map(ChildProgram::rounds).collect();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let r1: Vec<u64> = programs.iter().map(ChildProgram::rounds).collect();
    for i in 0..2 {
        // (Slowly: with the late worker, three threads share two CPUs in
        // each slot, and a barrier worker spins while its partner waits.)
        assert!(r1[i] > r0[i], "program {i} progresses: {r0:?} -> {r1:?}");
    }
    let both = held_intervals(&runtime.recent_switches(), DomainId(2));
    assert!(!both.is_empty(), "b was dispatched");

    // Removal gives every thread back: the main thread's own CPU 0, the
    // workers all CPUs, the late worker its process's CPU 0 (it was born
    // inside the group), nobody frozen.
    runtime.remove_domain(DomainId(1)).unwrap();
    runtime.remove_domain(DomainId(2)).unwrap();
    for (i, p) in programs.iter().enumerate() {
        assert_eq!(common::pid_cpus(first[i][0]), "0", "main thread restored");
        for &t in &first[i][1..] {
            assert_eq!(common::pid_cpus(t), "0-1", "worker {t} restored");
        }
        assert_eq!(common::pid_cpus(late[i]), "0", "late worker: its process's");
        assert!(!cgroup::threads_of(&p.controller, &p.cgroup)
            .unwrap()
            .is_empty());
        let state = std::fs::read_to_string(p.cgroup.join("freezer.state"))
            .or_else(|_| std::fs::read_to_string(p.cgroup.join("cgroup.freeze")))
            .unwrap_or_default();
        assert!(
            matches!(state.trim(), "THAWED" | "0"),
            "program {i} thawed: {state}"
        );
        let t = late[i];
        let c0 = p.cpu_ns(t);
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(p.cpu_ns(t) > c0, "thawed: the late worker runs");
    }
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with("group-"))
        .collect();
    assert!(left.is_empty(), "records removed: {left:?}");
    let report = runtime.stop();
    assert!(report.violations.is_empty());
    drop(programs);
}

#[test]
fn a_dead_runtimes_group_is_thawed_and_given_back() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !can_run() {
        return;
    }
    let state = state_dir("group-repair");
    let dir = state.0.clone();
    let mut p = ChildProgram::spawn("repair", 60_000);
    let tids = p.go();
    sys::set_affinity(tids[0], &[1]).unwrap();
    // A runtime in a child process adopts the group, then is killed.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_runtime", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(
            RUNTIME_ENV,
            format!("{}|{}", dir.display(), p.cgroup.display()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.find(|l| l.as_ref().is_ok_and(|l| l.ends_with("adopted")));
    assert!(ready.is_some(), "the child runtime adopted the group");
    assert_eq!(common::pid_cpus(tids[0]), "0-1");
    child.kill().unwrap();
    child.wait().unwrap();
    // Frozen or not at the kill, the group's record is there.
    assert!(std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("group-")));
    assert_eq!(gang_host::group::repair(&dir), 1);
    assert_eq!(common::pid_cpus(tids[0]), "1", "main thread restored");
    assert_eq!(common::pid_cpus(tids[1]), "0-1");
    let c0 = p.cpu_ns(tids[1]);
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(p.cpu_ns(tids[1]) > c0, "thawed");
    let _ = cgroup::repair(&dir); // the keeper of the dead runtime
    drop(p);
}

const RUNTIME_ENV: &str = "GANG_TEST_GROUP_RUNTIME";

/// The child: a runtime that adopts a group, says so, and waits to be
/// killed.
#[test]
#[ignore = "a child process of another test, which runs it with --ignored"]
fn child_runtime() {
    let Some(arg) = std::env::var_os(RUNTIME_ENV) else {
        return;
    };
    let arg = arg.to_string_lossy().into_owned();
    let (dir, cg) = arg.split_once('|').unwrap();
    let mut config = RuntimeConfig::new(PoolConfig::new(CpuSet::parse("0-1", None).unwrap()));
    config.state_dir = Some(PathBuf::from(dir));
    config.name = "group-repair-test".into();
    let runtime = Runtime::start(config).unwrap();
    let controller = cgroup::Hierarchy::detect()
        .unwrap()
        .freezer()
        .unwrap()
        .clone();
    runtime
        .adopt_group_domain(spec(1), (controller, PathBuf::from(cg)), false)
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    println!("adopted");
    let _ = std::io::stdout().flush();
    std::thread::sleep(std::time::Duration::from_secs(30));
    drop(runtime);
}
