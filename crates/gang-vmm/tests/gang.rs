//! VMs under a gang runtime (shared mode on CPUs 0-1): progress, gang
//! execution from the gates' traces, moving between Linux scheduling and a
//! runtime while paused or running, HLT reported as blocked, and the
//! benchmark. Needs root and /dev/kvm; each test prints why it skipped.
//! Tests run one at a time (they share the CPUs) and clean up on failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{can_run_gang, TestVm};
use gang_core::{CpuSet, DomainId, DomainSpec, Nanos, Policy, PoolConfig, MS};
use gang_host::gate::{SlotRun, VcpuControl};
use gang_host::runtime::{Runtime, RuntimeConfig};
use gang_host::sys::{self, SchedPolicy};
use gang_vmm::{ExitReason, GangScheduler, VmState};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
const T: Duration = Duration::from_secs(20);

/// A runtime and the VMs in it; dropping it (also on a failed assertion)
/// destroys the VMs, then stops the runtime.
struct Pool {
    rt: Option<Arc<Runtime>>,
    vms: Vec<TestVm>,
}

impl Pool {
    fn start() -> Pool {
        let mut pool = PoolConfig::new(CpuSet::from_iter([0, 1]));
        pool.be_slice = 5 * MS;
        let rt = Runtime::start(RuntimeConfig::new(pool)).expect("runtime starts");
        Pool {
            rt: Some(Arc::new(rt)),
            vms: Vec::new(),
        }
    }

    fn rt(&self) -> &Arc<Runtime> {
        self.rt.as_ref().unwrap()
    }

    /// Adds a 2-vCPU best-effort domain for `vm` and hands its vCPUs over.
    fn admit(&self, vm: &mut TestVm) -> Vec<Arc<VcpuControl>> {
        let spec = DomainSpec {
            id: vm.vm.id(),
            vcpus: vm.vm.vcpu_count(),
            cpu_map: Some(vec![0, 1]),
            policy: Policy::BestEffort {
                weight: 256,
                space_filling: false,
            },
        };
        let controls = self.rt().add_domain(spec, false).expect("admitted");
        let sched: Arc<dyn GangScheduler> = Arc::clone(self.rt()) as _;
        vm.vm.attach(sched, controls.clone()).expect("attached");
        controls
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for t in &mut self.vms {
            t.vm.destroy();
        }
        if let Some(rt) = self.rt.take() {
            for t in &self.vms {
                let _ = rt.remove_domain(t.vm.id());
            }
            match Arc::try_unwrap(rt) {
                Ok(rt) => {
                    rt.stop();
                }
                Err(rt) => drop(rt),
            }
        }
    }
}

fn rounds(out: &str) -> usize {
    out.lines().filter(|l| l.starts_with("round ")).count()
}

fn traces(controls: &[Arc<VcpuControl>]) -> Vec<(gang_core::VcpuRef, Vec<SlotRun>)> {
    controls.iter().map(|c| (c.vcpu, c.trace())).collect()
}

#[test]
fn barrier_vms_in_a_gang_pool_progress_and_are_co_scheduled() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !can_run_gang() {
        return;
    }
    let mut pool = Pool::start();
    let mut controls = Vec::new();
    for id in [31, 32] {
        let mut t = TestVm::new(id, "barrier", 2, "every=50");
        controls.push(pool.admit(&mut t));
        t.vm.start(false).unwrap();
        pool.vms.push(t);
    }
    let clock = pool.rt().clock();
    let start = clock.now() + 50 * MS;
    let end = start + 1000 * MS;
    clock.wait_until(end, 0);
    for t in &pool.vms {
        let out = t.console.text();
        assert!(rounds(&out) >= 2, "no progress: {out}");
        assert_eq!(t.vm.state(), VmState::Running);
    }
    // Every slot of a domain starts both its vCPUs, within a bound that
    // tolerates the VM host's own preemptions (statistically).
    const SKEW_BOUND: Nanos = 1_000_000;
    for c in &controls {
        let tr = traces(c);
        let skew = gang_host::slot_stats::co_start_skew(&tr, (start, end));
        assert!(skew.n >= 20, "too few slots with both vCPUs: {}", skew.n);
        assert!(skew.p50 <= 100_000.0, "co-start skew p50 {} ns", skew.p50);
        let slow = gang_host::slot_stats::co_start_skews(&tr, (start, end))
            .into_iter()
            .filter(|&s| s > SKEW_BOUND as f64)
            .count();
        assert!(slow * 20 <= skew.n, "{slow} of {} slots split", skew.n);
        // The two domains never ran at once on the same CPU: each vCPU's
        // runs lie in slots where its own domain was dispatched (the two
        // domains' slots differ).
        let slots: std::collections::BTreeSet<Nanos> = tr[0].1.iter().map(|r| r.slot).collect();
        let other = &controls[usize::from(std::ptr::eq(c, &controls[0]))];
        let other_slots: std::collections::BTreeSet<Nanos> =
            other[0].trace().iter().map(|r| r.slot).collect();
        assert!(
            slots.intersection(&other_slots).count() == 0,
            "shared slots"
        );
    }
    // Shutting the pool down leaves nothing behind (Drop, checked below).
    let tids: Vec<i32> = pool.vms.iter().flat_map(|t| t.vm.vcpu_threads()).collect();
    drop(pool);
    assert!(tids.iter().all(|&t| !common::thread_exists(t)));
}

fn policy_and_affinity(tid: i32) -> (SchedPolicy, usize) {
    let policy = sys::policy(tid).unwrap();
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string();
    let cpus = CpuSet::parse(&list, None).unwrap().iter().count();
    (policy, cpus)
}

#[test]
fn a_vm_moves_between_linux_and_a_gang_runtime_paused_or_running() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !can_run_gang() {
        return;
    }
    let mut pool = Pool::start();
    let mut t = TestVm::new(41, "barrier-pvh", 2, "every=20");
    let home = policy_and_affinity(t.vm.vcpu_threads()[0]);
    // Pool-0 first.
    t.vm.start(false).unwrap();
    assert!(t.console.wait_for("round 20\n", T));
    // Paused move into the gang pool.
    t.vm.pause().unwrap();
    let controls = pool.admit(&mut t);
    let tid = t.vm.vcpu_threads()[1];
    assert_eq!(
        policy_and_affinity(tid),
        (SchedPolicy::Fifo(10), 1),
        "pinned, FIFO"
    );
    t.vm.resume().unwrap();
    let before = rounds(&t.console.text());
    let until = std::time::Instant::now() + T;
    while rounds(&t.console.text()) < before + 3 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        rounds(&t.console.text()) >= before + 3,
        "progress in the pool"
    );
    assert!(controls.iter().all(|c| !c.trace().is_empty()), "gated runs");
    // Running move back to Linux; the runtime forgets the domain.
    t.vm.detach().unwrap();
    pool.rt().remove_domain(t.vm.id()).unwrap();
    assert_eq!(policy_and_affinity(tid), home, "policy and CPUs restored");
    let before = rounds(&t.console.text());
    assert!(t
        .console
        .wait_for(&format!("round {}\n", (before + 2) * 20), T));
    // Running move into the pool again, then the runtime drops the domain
    // by itself: the VM falls back to Linux and keeps running.
    pool.admit(&mut t);
    let before = rounds(&t.console.text());
    assert!(t
        .console
        .wait_for(&format!("round {}\n", (before + 2) * 20), T));
    pool.rt().remove_domain(t.vm.id()).unwrap();
    let before = rounds(&t.console.text());
    assert!(t
        .console
        .wait_for(&format!("round {}\n", (before + 2) * 20), T));
    assert_eq!(policy_and_affinity(tid), home);
    t.vm.shutdown().unwrap();
    assert_eq!(t.wait_exit(T).unwrap().reason, ExitReason::Poweroff);
    pool.vms.push(t);
}

#[test]
fn a_halted_vcpu_is_off_its_gate_and_wakes_for_input_in_a_gang_pool() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !can_run_gang() {
        return;
    }
    let mut pool = Pool::start();
    let mut t = TestVm::new(51, "echo", 2, "");
    let controls = pool.admit(&mut t);
    t.vm.start(false).unwrap();
    assert!(t.console.wait_for("echo ready\n", T));
    std::thread::sleep(Duration::from_millis(50));
    // Both vCPUs halted (vCPU 1 forever): not running at their gates.
    assert!(controls.iter().all(|c| !c.is_running()));
    t.vm.console_input(b"gang\n");
    assert!(
        t.console.wait_for("gang\n", T),
        "no echo; console: {:?}\n{}",
        t.console.text(),
        where_they_wait(&t, &controls, pool.rt())
    );
    t.vm.console_input(b"q");
    assert_eq!(t.wait_exit(T).unwrap().reason, ExitReason::Poweroff);
    pool.vms.push(t);
}

/// For a failure message: where each vCPU thread is (kernel state and wait
/// channel), whether its gate is open and it runs there, and the domain's
/// last switches as the runtime made them.
fn where_they_wait(t: &TestVm, controls: &[Arc<VcpuControl>], rt: &Runtime) -> String {
    let mut out = String::new();
    for (tid, c) in t.vm.vcpu_threads().into_iter().zip(controls) {
        let stat =
            std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(") ")
            .next()
            .and_then(|r| r.split(' ').next())
            .unwrap_or("?");
        let wchan =
            std::fs::read_to_string(format!("/proc/self/task/{tid}/wchan")).unwrap_or_default();
        out += &format!(
            "vCPU {} (tid {tid}): state {state}, wchan {wchan}, gate open {}, running {}\n",
            c.vcpu.vcpu,
            c.is_open(),
            c.is_running()
        );
    }
    let switches: Vec<_> = rt
        .recent_switches()
        .into_iter()
        .filter(|s| s.vcpu.is_none_or(|v| v.domain == t.vm.id()))
        .collect();
    let tail = &switches[switches.len().saturating_sub(8)..];
    out += &format!("now {} ns; last switches: {tail:?}", rt.now());
    out
}

#[test]
fn a_crash_in_a_gang_pool_ends_only_that_vm() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !can_run_gang() {
        return;
    }
    let mut pool = Pool::start();
    let mut bad = TestVm::new(61, "ud2", 2, "");
    let mut good = TestVm::new(62, "barrier", 2, "every=20");
    pool.admit(&mut bad);
    pool.admit(&mut good);
    bad.vm.start(false).unwrap();
    good.vm.start(false).unwrap();
    assert!(matches!(
        bad.wait_exit(T).unwrap().reason,
        ExitReason::Crash(_)
    ));
    pool.rt().remove_domain(bad.vm.id()).unwrap();
    assert!(
        good.console.wait_for("round 60\n", T),
        "{}",
        good.console.text()
    );
    assert_eq!(good.vm.state(), VmState::Running);
    pool.vms.push(bad);
    pool.vms.push(good);
}

#[test]
fn the_benchmark_measures_kicks_and_skew() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !can_run_gang() {
        return;
    }
    let mut opts = gang_vmm::bench::BenchOptions::new(
        gang_guests::image("loop").unwrap(),
        gang_guests::image("barrier").unwrap(),
    );
    opts.kicks = 300;
    opts.gang_millis = 500;
    let report = gang_vmm::bench::run(&opts).unwrap_or_else(|e| panic!("bench: {e}"));
    println!("{report}");
    assert!(report.kick.n >= 290, "{report}");
    assert!(report.kick.p50 > 0.0 && report.kick.p50 < 1e6, "{report}");
    let skew = report.skew.expect("measured as root");
    assert!(skew.n > 0 && skew.p50 < 100_000.0, "{report}");
    assert!(report.to_string().contains("kick latency"));
    let _ = DomainId(0);
}
