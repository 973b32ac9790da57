//! End to end: `gang daemon --rt-unlimited` lifts the kernel's real-time
//! limit only while a gang pool runs, lends the host slot to the gangs while
//! the host idles and takes it back when host tasks wait for a CPU, and puts
//! the limit back when the pool stops. (A binary of its own: the limit is
//! machine-wide, host load is what it reacts to, and exclusive pools must
//! not overlap another test's.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{can_run_domains, start_with, wait_for, TestDir};

const SYSCTL: &str = "/proc/sys/kernel/sched_rt_runtime_us";

fn limit() -> String {
    std::fs::read_to_string(SYSCTL).unwrap().trim().to_string()
}

#[test]
fn the_rt_limit_is_lifted_while_a_pool_runs_and_the_host_slot_follows_the_host() {
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
    let pool_line = || {
        d.ok(&["sched-gang"])
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    };
    assert!(
        pool_line().contains("host-slot=4ms/50ms"),
        "{}",
        pool_line()
    );
    wait_for("slots", || d.ok(&["trace", "w"]).lines().count() > 20);
    // An idle host lends its slot: the domain gets all of the pool's CPU.
    wait_for("the host slot lent", || pool_line().contains("lent=yes"));
    // `Recv` covers the last second: once a whole second was lent, the
    // domain had more than the 92% a kept slot leaves.
    wait_for("more than 97% of the CPU", || {
        let out = d.ok(&["sched-gang"]);
        let share = received_share(&out, "w");
        if share <= 0.97 {
            eprintln!("{share:.3} of the CPU so far:\n{out}");
        }
        share > 0.97
    });
    // Host tasks waiting for a CPU (here CFS spinners on the host's CPU:
    // pressure is machine-wide) take it back; it is lent again when they end.
    let hogs = Hogs::start(3);
    wait_for("the host slot taken back", || {
        pool_line().contains("lent=no")
    });
    drop(hogs);
    wait_for("the host slot lent again", || {
        pool_line().contains("lent=yes")
    });
    d.ok(&["destroy", "w"]);
    assert_eq!(limit(), before, "put back when the pool stops");
    d.ok(&["cpupool-destroy", "X"]);
    d.ok(&["cpupool-cpu-add", "Pool-0", "1"]);
}

/// The `received/period` of a domain's `sched-gang` row, as a fraction.
fn received_share(out: &str, name: &str) -> f64 {
    let row = out
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no row for {name} in:\n{out}"));
    let recv = row.split_whitespace().last().unwrap();
    let (got, period) = recv.split_once('/').unwrap();
    let ns = |t: &str| -> f64 {
        let unit = t.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
        let value: f64 = t[..t.len() - unit.len()].parse().unwrap();
        value
            * match unit {
                "ns" => 1.0,
                "us" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                other => panic!("unit {other} in {recv}"),
            }
    };
    ns(got) / ns(period)
}

/// CFS busy loops on CPU 0 (the host's), killed on drop.
struct Hogs(Vec<std::process::Child>);

impl Hogs {
    fn start(n: usize) -> Hogs {
        Hogs(
            (0..n)
                .map(|_| {
                    std::process::Command::new("taskset")
                        .args(["-c", "0", "sh", "-c", "while :; do :; done"])
                        .spawn()
                        .unwrap()
                })
                .collect(),
        )
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
