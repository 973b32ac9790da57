//! End to end: `gang daemon --rt-unlimited` lifts the kernel's real-time
//! limit only while an exclusive gang pool runs, gives it a 1% host slot,
//! and puts the limit back when the pool stops. (A binary of its own: the
//! limit is machine-wide, and exclusive pools must not overlap another
//! test's.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{can_run_domains, start_with, wait_for, TestDir};

const SYSCTL: &str = "/proc/sys/kernel/sched_rt_runtime_us";

fn limit() -> String {
    std::fs::read_to_string(SYSCTL).unwrap().trim().to_string()
}

#[test]
fn the_rt_limit_is_lifted_only_while_an_exclusive_pool_runs() {
    if !can_run_domains() {
        return;
    }
    let before = limit();
    let t = TestDir::new("rt-limit");
    let d = start_with(&t.0, &["--rt-unlimited"]);
    d.ok(&["cpupool-cpu-remove", "Pool-0", "1"]);
    d.ok(&[
        "cpupool-create",
        "name=\"X\"",
        "sched=\"gang\"",
        "cpus=\"1\"",
    ]);
    assert_eq!(limit(), before, "no pool runs yet");
    let cfg = t.0.join("w.cfg");
    std::fs::write(
        &cfg,
        format!(
            "name = \"w\"\ntype = \"process\"\npool = \"X\"\ngang_policy = \"be,256\"\n\
             command = [\"{}\", \"workload\", \"busy\", \"--threads\", \"1\", \"--duration\", \
             \"10m\", \"--report-every\", \"10m\"]\nvcpu_threads = \"vcpu*\"\n",
            env!("CARGO_BIN_EXE_gang")
        ),
    )
    .unwrap();
    d.ok(&["create", &cfg.display().to_string()]);
    assert_eq!(limit(), "-1", "lifted while the exclusive pool runs");
    let line = d.ok(&["sched-gang"]);
    assert!(line.contains("host-slot=1ms/100ms"), "{line}");
    wait_for("slots", || d.ok(&["trace", "w"]).lines().count() > 20);
    d.ok(&["destroy", "w"]);
    assert_eq!(limit(), before, "put back when the pool stops");
    d.ok(&["cpupool-destroy", "X"]);
    d.ok(&["cpupool-cpu-add", "Pool-0", "1"]);
}
