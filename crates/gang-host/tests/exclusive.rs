//! Exclusive isolation: pool CPUs are taken from every other host task and
//! given back when the runtime stops, and after a `kill -9` the next start
//! repairs what the dead runtime left.
//!
//! Needs root, cgroup cpusets and 2 CPUs (the host keeps CPU 0, the pool takes
//! CPU 1); otherwise each test prints why it skipped. A guard repairs the
//! host even when an assertion fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use gang_core::{CpuSet, DomainId, DomainSpec, Policy, PoolConfig, MS};
use gang_host::cgroup;
use gang_host::runtime::{allowed_cpus, Isolation, Runtime, RuntimeConfig};
use gang_host::workload::{self, DomainState, VcpuEnv, Workload};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
const CHILD_ENV: &str = "GANG_TEST_EXCLUSIVE_CHILD_STATE";

fn can_run() -> bool {
    common::can_run(common::Needs::Cpuset)
}

fn config(state: &Path) -> RuntimeConfig {
    let mut c = RuntimeConfig::new(PoolConfig::new(CpuSet::parse("1", None).unwrap()));
    c.isolation = Isolation::Exclusive;
    c.state_dir = Some(state.to_path_buf());
    c.name = "exclusive-test".into();
    c
}

/// Domain 1: one best-effort vCPU on the pool's CPU.
fn one_vcpu_be() -> DomainSpec {
    DomainSpec {
        id: DomainId(1),
        vcpus: 1,
        cpu_map: None,
        policy: Policy::BestEffort {
            weight: 256,
            space_filling: false,
        },
    }
}

/// Repairs the host whatever happens, and removes the state directory.
struct Repair(PathBuf);

impl Drop for Repair {
    fn drop(&mut self) {
        let _ = cgroup::repair(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn state_dir(tag: &str) -> (PathBuf, Repair) {
    let dir = std::env::temp_dir().join(format!("gang-excl-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    (dir.clone(), Repair(dir))
}

fn gang_cgroups() -> Vec<String> {
    let Ok(h) = cgroup::Hierarchy::detect() else {
        return Vec::new();
    };
    let Ok(c) = h.cpuset() else { return Vec::new() };
    std::fs::read_dir(&c.mount)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("gang.") || n.starts_with("gang-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn exclusive_runtime_takes_its_cpu_and_gives_it_back() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !can_run() {
        return;
    }
    let (state, _repair) = state_dir("take");
    let before = allowed_cpus().unwrap();
    let rt = Arc::new(Runtime::start(config(&state)).expect("exclusive runtime"));
    assert!(
        !allowed_cpus().unwrap().contains(1),
        "host tasks lost CPU 1"
    );
    assert!(!gang_cgroups().is_empty());
    let ctl = rt.add_domain(one_vcpu_be(), false).unwrap();
    let clock = rt.clock();
    let state_ = Arc::new(DomainState::default());
    let env = VcpuEnv {
        control: Arc::clone(&ctl[0]),
        clock,
        log: None,
        deadline: clock.now() + 100 * MS,
        halt: Arc::new(AtomicBool::new(false)),
    };
    let (rt2, st) = (Arc::clone(&rt), Arc::clone(&state_));
    let cpu_seen = std::thread::spawn(move || {
        env.control.attach_current_thread();
        rt2.prepare_vcpu_thread(env.control.vcpu)
            .expect("vCPU thread in the pool");
        drop(rt2);
        let cpu = rustix::thread::sched_getcpu();
        workload::run(Workload::Busy, &env, &st, 1);
        cpu
    })
    .join()
    .unwrap();
    assert_eq!(cpu_seen, 1, "the vCPU ran on the pool CPU");
    assert!(state_.progress.load(Ordering::Relaxed) > 10);
    Arc::try_unwrap(rt).expect("sole owner").stop();
    assert_eq!(allowed_cpus().unwrap(), before, "CPU 1 given back");
    assert!(
        gang_cgroups().is_empty(),
        "cgroups removed: {:?}",
        gang_cgroups()
    );
}

/// An adopted thread whose domain leaves a running exclusive pool gets back
/// its own CPUs and the host's cpuset (it was adopted with the pool's CPUs
/// recorded as its affinity, and stayed in the pool's cpuset, before).
#[test]
fn an_adopted_thread_leaving_an_exclusive_pool_gets_its_own_cpus_back() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !can_run() || !common::can_run(common::Needs::Freezer) {
        return;
    }
    let (state, _repair) = state_dir("adopt");
    let mut child = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = child.id() as i32;
    let cpus_of = common::pid_cpus;
    let cpuset_of = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/cpuset")).unwrap();
    let (cpus_before, cpuset_before) = (cpus_of(pid), cpuset_of(pid));
    let rt = Runtime::start(config(&state)).expect("exclusive runtime");
    rt.adopt_domain(one_vcpu_be(), &[pid], false)
        .expect("adopted");
    assert_eq!(cpus_of(pid), "1", "pinned to the pool CPU while adopted");
    rt.remove_domain(DomainId(1)).unwrap();
    let host_side = cpuset_of(pid);
    assert!(
        !host_side.contains(".pool"),
        "left the pool's cpuset: {host_side}"
    );
    // Host tasks may use CPU 0 only while the shield is up.
    assert_eq!(cpus_of(pid), "0", "its affinity, within the host's CPUs");
    rt.stop();
    assert_eq!(
        cpus_of(pid),
        cpus_before,
        "its own CPUs once the pool is gone"
    );
    assert_eq!(cpuset_of(pid), cpuset_before);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Not a test on its own: the child process of the kill test. It takes CPU 1
/// exclusively, says so, and waits to be killed.
#[test]
#[ignore = "a child process of another test, which runs it with --ignored"]
fn child_process_holding_an_exclusive_runtime() {
    let Some(state) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let rt = Runtime::start(config(Path::new(&state))).expect("child runtime");
    println!("ready");
    std::thread::sleep(std::time::Duration::from_secs(30));
    drop(rt);
}

#[test]
fn a_killed_runtime_is_repaired_by_the_next_start() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !can_run() {
        return;
    }
    let (state, _repair) = state_dir("kill");
    let before = allowed_cpus().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_holding_an_exclusive_runtime",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &state)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("child starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.any(|l| l.map(|l| l.contains("ready")).unwrap_or(false));
    assert!(ready, "child took the CPU");
    assert!(
        !allowed_cpus().unwrap().contains(1),
        "CPU 1 taken by the child"
    );
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::KILL,
    )
    .expect("SIGKILL");
    child.wait().unwrap();
    assert!(
        !gang_cgroups().is_empty(),
        "a killed runtime cannot clean up: stale state is left"
    );
    // The next start repairs, takes, and gives back on stop.
    let rt = Runtime::start(config(&state)).expect("restart after the crash");
    assert!(!allowed_cpus().unwrap().contains(1));
    rt.stop();
    assert_eq!(
        allowed_cpus().unwrap(),
        before,
        "host CPU set restored after kill -9 and restart"
    );
    assert!(
        gang_cgroups().is_empty(),
        "nothing left: {:?}",
        gang_cgroups()
    );
}

#[test]
fn exclusive_mode_refuses_to_take_every_cpu_and_needs_a_state_dir() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !can_run() {
        return;
    }
    let (state, _repair) = state_dir("all");
    let before = allowed_cpus().unwrap();
    let mut all = config(&state);
    all.pool = PoolConfig::new(before.clone());
    let err = Runtime::start(all).expect_err("must leave the host a CPU");
    assert!(
        err.to_string().contains("cpu") || err.to_string().contains("CPU"),
        "{err}"
    );
    let mut no_dir = config(&state);
    no_dir.state_dir = None;
    let err = Runtime::start(no_dir).expect_err("needs a state dir");
    assert!(err.to_string().contains("state directory"), "{err}");
    assert_eq!(allowed_cpus().unwrap(), before);
    assert!(gang_cgroups().is_empty());
}
