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

/// Waits (up to 30 s: other tests may hold the CPUs) for the one step
/// domain and returns its name.
fn the_step(d: &Daemon, c: &Cluster, srun: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut found = steps(d);
        if !found.is_empty() {
            assert_eq!(found.len(), 1, "{found:?}");
            return found.remove(0);
        }
        if let Some(status) = srun.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read as _;
            let _ = srun.stderr.take().unwrap().read_to_string(&mut err);
            panic!("srun ended ({status}) before its step was a domain: {err}");
        }
        if Instant::now() > deadline {
            let log = c.slurmd_log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "no step domain after 30 s; squeue: {}\nslurmd.log (last lines, newest first):\n{}",
                text(&c.run("squeue", &[]).stdout),
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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
    // Two levels that do not exist yet: the plugin makes them.
    let confs = t.0.join("run/spank");
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
    let mut srun = c.spawn(&[
        "-n",
        "2",
        "--gang=tt,20ms,10ms",
        "sh",
        "-c",
        "timeout 2 sh -c 'while :; do :; done'; echo done $SLURM_PROCID",
    ]);
    let name = the_step(&d, &c, &mut srun);
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
    let mut srun = c.spawn(&["-n", "2", "--gang=tt,20ms,10ms", "sleep", "30"]);
    let name = the_step(&d, &c, &mut srun);
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
    // The failed step's job may still be completing (`CG`): let it leave,
    // so that an empty queue after the refusals means nothing was queued.
    wait_for("earlier jobs to leave the queue", || queued().is_empty());
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

/// Policies, good and bad, for the plugin's check against gang's parser.
const POLICIES: &[&str] = &[
    "bogus",
    "no",
    "nomux",
    "no-mux",
    "no@2s",
    "no,1",
    "tt,10ms,4ms",
    "tt,10,4",
    "tt,10ms",
    "tt,10ms,4ms,exact",
    "tt,10ms,4ms,exact,sf",
    "tt,10ms,4ms,sf",
    "tt,10ms,4ms,sf,exact",
    "tt,10ms,4ms,exact,exact",
    "tt,10ms,4ms@2s",
    "tt,10ms,4ms@",
    "tt,10ms,4ms@x",
    "tt, 10ms , 4ms",
    "tt,10xs,4ms",
    "tt,1.5ms,0.5ms",
    "tt,1.0000005ms,1ms",
    "tt,0.0000001ns,1",
    "tt,.5,1",
    "tt,5.,1",
    "tt,1..2,1",
    "tt,,4",
    "tt,10ms,4 ms",
    "tt,10 ms,4ms",
    "tt,10µs,4us",
    "tt,10sec,4s",
    "tt,1h,1m",
    "tt,10min,1m",
    "tt,99999999999999999999,1",
    "tt,18446744073709551615ns,1",
    "tt,18446744073709551616ns,1",
    "et,10ms,4ms",
    "et,10ms,4ms,sf",
    "et,10ms,4ms,exact",
    "et,10ms,4ms,sf,sf",
    "be,1",
    "be,256,sf",
    "be,0",
    "be,65535",
    "be,65536",
    "be,+5",
    "be,-5",
    "be, 5",
    "be,5@1s",
    "be,5@0",
    "be,5,xx",
    "be",
    "TT,10,4",
    "tt,10,4,,",
    "tt@1",
    ",tt",
    "tt,10,4@1@2",
    "tt,18446744073709551616ns,1",
    "tt,18446744073709.551615ms,1",
    "tt,18446744073709.551616ms,1",
    "tt,0.1234567890123456789ms,1",
    "tt,0.123456789000000000000000000000ms,1",
    "tt,1.000000ns,1",
    "tt,5.5ns,1",
    "be,++5",
    "be,+",
    "be,05",
    "tt,1.000000000000000000000ms,1",
    "tt,1.00000000000000000000000000000000000000ms,1",
    "tt,1.000000000000000000000000000000000000000ms,1",
];

/// srun refuses what gang would refuse, and takes what gang takes: the
/// plugin's C check (`contrib/slurm/policy_check.c` runs it) against
/// `gang_core::Policy`'s parser, input by input.
#[test]
fn the_plugin_checks_policies_as_gang_does() {
    if !in_path("cc") || !Path::new("/usr/include/slurm/spank.h").is_file() {
        skip_or_fail("no cc or /usr/include/slurm/spank.h (apt-get install gcc libslurm-dev)");
        return;
    }
    let t = TestDir::new("slurm-policies");
    let bin = t.0.join("policy_check");
    let out = Command::new("cc")
        .args(["-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&bin)
        .arg(contrib().join("policy_check.c"))
        .output()
        .unwrap();
    assert!(out.status.success(), "cc: {}", text(&out.stderr));
    let mut child = Command::new(&bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        for p in POLICIES {
            writeln!(stdin, "{p}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let verdicts: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    assert_eq!(verdicts.len(), POLICIES.len());
    let mut taken = 0;
    for (p, v) in POLICIES.iter().zip(&verdicts) {
        let gang = p.parse::<gang_core::Policy>();
        assert_eq!(
            v.starts_with("OK\t"),
            gang.is_ok(),
            "--gang={p}: the plugin says {v:?}, gang says {gang:?}"
        );
        taken += usize::from(gang.is_ok());
    }
    assert!(taken > 20 && taken < POLICIES.len() - 20);
}
