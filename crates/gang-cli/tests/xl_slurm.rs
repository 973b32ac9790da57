//! Slurm job steps as gang domains, end to end: `contrib/slurm/gang_spank.c`
//! built and loaded into a private one-node Slurm cluster
//! (`contrib/slurm/test-cluster.sh`) whose steps go to a private gang
//! daemon's pool on a shared clock. `srun --gang=POLICY` makes the step a
//! domain over its freezer cgroup while it runs (slots in its trace), and
//! the domain goes when the step ends, is cancelled or fails; a bad policy
//! is refused by srun before anything is submitted, and a policy the pool
//! cannot admit fails the step with gang's message, nothing left behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/slurm")
}

fn in_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// The private cluster, taken down (jobs killed, cgroups removed) when
/// dropped, also when the test fails half-way.
struct Cluster {
    dir: PathBuf,
}

impl Cluster {
    fn up(dir: PathBuf, spank_plugin: &str) -> Cluster {
        let c = Cluster { dir };
        let out = Command::new(contrib().join("test-cluster.sh"))
            .arg("up")
            .arg(&c.dir)
            .env("SPANK_PLUGIN", spank_plugin)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "test-cluster.sh up: {}\nslurmd.log: {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(c.dir.join("log/slurmd.log")).unwrap_or_default()
        );
        c
    }

    fn conf(&self) -> PathBuf {
        self.dir.join("etc/slurm.conf")
    }

    fn cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new(program);
        c.args(args).env("SLURM_CONF", self.conf());
        c
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        self.cmd(program, args).output().unwrap()
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.cmd("srun", args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn slurmd_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log/slurmd.log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(contrib().join("test-cluster.sh"))
            .arg("down")
            .arg(&self.dir)
            .status();
    }
}

/// The step domains (`slurm-J.S`) the daemon has.
fn steps(d: &Daemon) -> Vec<String> {
    d.ok(&["list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("slurm-"))
        .map(String::from)
        .collect()
}

/// Waits for the one step domain and returns its name.
fn the_step(d: &Daemon) -> String {
    let mut found = Vec::new();
    wait_for("the step's domain", || {
        found = steps(d);
        !found.is_empty()
    });
    assert_eq!(found.len(), 1, "{found:?}");
    found.remove(0)
}

fn wait_child(mut c: Child, within: Duration) -> Output {
    let deadline = Instant::now() + within;
    while c.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = c.kill();
            panic!("srun did not end within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    c.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// What the plugin leaves in its directory (nothing once a step is over).
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn slurm_steps_with_gang_run_as_gang_domains() {
    if !can_run_domains() {
        return;
    }
    if !Path::new("/sys/fs/cgroup/freezer").is_dir() {
        skip_plain("Slurm's proctrack/cgroup here needs the cgroup v1 freezer");
        return;
    }
    for program in ["slurmctld", "slurmd", "srun", "munged", "cc"] {
        if !in_path(program) {
            skip_or_fail(&format!(
                "no {program} (apt-get install slurm-wlm munge libslurm-dev gcc)"
            ));
            return;
        }
    }
    if !Path::new("/usr/include/slurm/spank.h").is_file() {
        skip_or_fail("no /usr/include/slurm/spank.h (apt-get install libslurm-dev)");
        return;
    }
    let started = Instant::now();
    let t = TestDir::new("slurm");
    let plugin = t.0.join("gang_spank.so");
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&plugin)
        .arg(contrib().join("gang_spank.c"))
        .output()
        .unwrap();
    assert!(out.status.success(), "cc: {}", text(&out.stderr));

    let d = start(&t.0);
    d.ok(&[
        "cpupool-create",
        "name=\"G\"",
        "sched=\"gang\"",
        "cpus=\"0-1\"",
        "shared=1",
        "clock=\"realtime\"",
        "base=\"2026-12-01T00:00:00Z\"",
    ]);
    let confs = t.0.join("spank");
    let args = format!(
        "{} gang={} socket={} pool=G dir={} cluster=1",
        plugin.display(),
        env!("CARGO_BIN_EXE_gang"),
        d.dir().join("gang.sock").display(),
        confs.display()
    );
    // Dropped before the daemon: steps end while it still answers.
    let c = Cluster::up(t.0.join("cluster"), &args);

    // (1) A 2-task step that spins ~2 s: a 2-vCPU domain with slots while
    // it runs, gone when it has ended.
    let srun = c.spawn(&[
        "-n",
        "2",
        "--gang=tt,20ms,10ms",
        "sh",
        "-c",
        "timeout 2 sh -c 'while :; do :; done'; echo done $SLURM_PROCID",
    ]);
    let name = the_step(&d);
    assert!(name.ends_with(".0"), "{name}");
    let trace = trace(&d, &name, 4);
    assert_gang(&trace, 2);
    let cfg = std::fs::read_to_string(confs.join(format!("{name}.cfg"))).unwrap();
    assert!(cfg.contains(&format!("gang_group = \"{name}\"")), "{cfg}");
    assert!(cfg.contains("/step_0\""), "{cfg}");
    let out = wait_child(srun, Duration::from_secs(20));
    assert!(out.status.success(), "srun: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout).matches("done").count(), 2, "{out:?}");
    wait_for("the ended step's domain to go", || steps(&d).is_empty());
    wait_for("its config to go", || leftovers(&confs).is_empty());
    note(&format!(
        "xl_slurm: step {name}: {} slots in its trace while it ran, gone after",
        trace.slots.len()
    ));

    // (2) scancel of a running step.
    let srun = c.spawn(&["-n", "2", "--gang=tt,20ms,10ms", "sleep", "30"]);
    let name = the_step(&d);
    let job = name
        .trim_start_matches("slurm-")
        .split('.')
        .next()
        .unwrap()
        .to_string();
    let out = c.run("scancel", &[&job]);
    assert!(out.status.success(), "scancel: {}", text(&out.stderr));
    let out = wait_child(srun, Duration::from_secs(15));
    assert!(!out.status.success());
    wait_for("the cancelled step's domain to go", || steps(&d).is_empty());
    wait_for("its config to go", || leftovers(&confs).is_empty());

    // (3) A failing step: srun says so, the domain goes.
    let out = c.run(
        "srun",
        &["-n", "2", "--gang=tt,20ms,10ms", "sh", "-c", "exit 3"],
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let job3 = (job.parse::<u32>().unwrap() + 1).to_string();
    assert!(
        c.slurmd_log()
            .contains(&format!("step {job3}.0 is gang domain slurm-{job3}.0")),
        "the failing step was not a domain:\n{}",
        c.slurmd_log()
    );
    wait_for("the failed step's domain to go", || steps(&d).is_empty());
    wait_for("its config to go", || leftovers(&confs).is_empty());

    // (4) Not a policy: srun and sbatch refuse it, nothing is submitted.
    let queued = || text(&c.run("squeue", &["-h"]).stdout);
    for bad in [
        "bogus",
        "tt,10ms",
        "tt,10xs,4ms",
        "be,0",
        "et,10ms,4ms,exact",
    ] {
        let out = c.run("srun", &["-n", "2", &format!("--gang={bad}"), "true"]);
        assert!(!out.status.success(), "--gang={bad} was taken");
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("--gang={bad}")) && err.contains("not a gang policy"),
            "{err}"
        );
    }
    let out = c.run("sbatch", &["--gang=bogus", "--wrap", "true"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--gang=bogus"), "{out:?}");
    assert_eq!(queued(), "");
    assert!(steps(&d).is_empty());

    // (5) A policy the pool cannot admit: the step fails with the
    // admission's reason, its program never runs, nothing is left.
    let out = c.run(
        "srun",
        &["-n", "2", "--gang=tt,10ms,10ms", "sh", "-c", "echo RAN"],
    );
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(!text(&out.stdout).contains("RAN"), "{out:?}");
    assert!(
        err.contains("refused by gang") && err.contains("reserved"),
        "{err}"
    );
    assert!(steps(&d).is_empty());
    wait_for("the refused step's files to go", || {
        leftovers(&confs).is_empty()
    });
    // The pool still takes a step after that.
    let out = c.run("srun", &["-n", "2", "--gang=tt,20ms,5ms", "true"]);
    assert!(out.status.success(), "{out:?}");
    note(&format!(
        "xl_slurm: 5 cases in {:.1} s (refusal shown to the user: {})",
        started.elapsed().as_secs_f64(),
        err.lines()
            .find(|l| l.contains("refused by gang"))
            .unwrap_or("")
    ));
    drop(c);
    drop(d);
}
