//! End to end: whole programs as gangs. A process domain without
//! `vcpu_threads` holds every thread of its program, threads created later
//! included, and a job of several processes (`pids = [...]`) is one gang;
//! `list -l` shows the threads each domain holds.
//!
//! Needs root, 2 CPUs and a cgroup freezer (python3 for the two-process
//! job); says why it skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{can_run_domains, list_row, shared_pool, start, wait_for, Daemon, TestDir};

/// Kills a test's own child process when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A thread's CPU time so far, ns (schedstat).
fn cpu_ns(pid: i32, tid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn cpus_allowed(pid: i32, tid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The threads `list -l` says domain `name` holds: (pid, tid, name).
fn held_threads(d: &Daemon, name: &str) -> Vec<(i32, i32, String)> {
    let all: serde_json::Value = serde_json::from_str(&d.ok(&["list", "-l", name])).unwrap();
    all[0]["threads"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    (
                        t["pid"].as_i64().unwrap_or(0) as i32,
                        t["tid"].as_i64().unwrap_or(0) as i32,
                        t["name"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// CPU time of the threads over `window` (ns each).
fn cpu_growth(threads: &[(i32, i32, String)], window: Duration) -> Vec<u64> {
    let before: Vec<u64> = threads.iter().map(|t| cpu_ns(t.0, t.1)).collect();
    std::thread::sleep(window);
    threads
        .iter()
        .zip(before)
        .map(|(t, b)| cpu_ns(t.0, t.1).saturating_sub(b))
        .collect()
}

#[test]
fn a_program_without_vcpu_threads_is_a_gang_of_all_its_threads_late_ones_included() {
    let _turn = common::one_at_a_time();
    if !can_run_domains() {
        return;
    }
    let t = TestDir::new("program-late");
    let d = start(&t.0);
    shared_pool(&d, "Wide");
    // A shell that sleeps, then becomes a program with two spinning
    // workers: its threads appear a second after the domain was created.
    let cfg = t.0.join("late.cfg");
    std::fs::write(
        &cfg,
        format!(
            "name = \"late\"\ntype = \"process\"\nvcpus = 2\npool = \"Wide\"\n\
             command = \"sleep 1; exec {} workload spin-barrier --threads 2 --duration 10m \
             --report-every 10m\"\n",
            env!("CARGO_BIN_EXE_gang")
        ),
    )
    .unwrap();
    d.ok(&["create", &cfg.display().to_string()]);
    wait_for("the late workers", || {
        held_threads(&d, "late")
            .iter()
            .filter(|t| t.2.starts_with("vcpu"))
            .count()
            == 2
    });
    let threads = held_threads(&d, "late");
    let workers: Vec<_> = threads
        .iter()
        .filter(|t| t.2.starts_with("vcpu"))
        .cloned()
        .collect();
    // Placed on the gang's CPUs, and running in its slots.
    for w in &workers {
        assert_eq!(cpus_allowed(w.0, w.1), "0-1", "{w:?}");
    }
    wait_for("the workers to run", || {
        cpu_growth(&workers, Duration::from_millis(200))
            .iter()
            .all(|&g| g > 10_000_000)
    });
    // vcpu-list: its two vCPUs are its gang's two CPUs, not paused.
    let rows: Vec<String> = d
        .ok(&["vcpu-list", "late"])
        .lines()
        .filter(|l| l.starts_with("late "))
        .map(str::to_string)
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| !r.split_whitespace().nth(4).unwrap_or("p").contains('p')),
        "{rows:?}"
    );
    // Paused (descheduled for good): not one of its threads runs.
    d.ok(&["pause", "late"]);
    std::thread::sleep(Duration::from_millis(100));
    let grown = cpu_growth(&threads, Duration::from_millis(500));
    assert!(
        grown.iter().all(|&g| g < 1_000_000),
        "threads ran while paused: {grown:?} ns ({threads:?})"
    );
    d.ok(&["unpause", "late"]);
    wait_for("the workers to run again", || {
        cpu_growth(&workers, Duration::from_millis(200))
            .iter()
            .all(|&g| g > 10_000_000)
    });
    // vcpu-list and the state.
    assert!(list_row(&d, "late").is_some_and(|r| r.0 == "r-----" || r.0 == "-b----"));
    d.ok(&["destroy", "late"]);
}

/// A job of two processes meeting at a barrier in shared memory; writes
/// its pids and then `rounds N` once a second to `out`.
fn two_process_job(out: &Path) -> Option<Killed> {
    const JOB: &str = r#"
import mmap, os, struct, sys, time
buf = mmap.mmap(-1, 16)
pid = os.fork()
me = 0 if pid else 1
other = 1 - me
n = 0
if me == 0:
    out = open(sys.argv[1], "w", buffering=1)
    out.write(f"pids {os.getpid()} {pid}\n")
    last, t0 = 0, time.monotonic()
while True:
    n += 1
    struct.pack_into("q", buf, 8 * me, n)
    while struct.unpack_from("q", buf, 8 * other)[0] < n:
        pass
    if me == 0 and n % 256 == 0:
        t = time.monotonic()
        if t - t0 >= 1.0:
            out.write(f"rounds {int((n - last) / (t - t0))}\n")
            last, t0 = n, t
"#;
    let child = Command::new("python3")
        .args(["-c", JOB])
        .arg(out)
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .ok()?;
    Some(Killed(child))
}

use std::os::unix::process::CommandExt as _;

/// The job's (parent, child) pids, once it wrote them.
fn job_pids(out: &Path) -> (u32, u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(out).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.starts_with("pids ")) {
            let p: Vec<u32> = l[5..].split(' ').map(|x| x.parse().unwrap()).collect();
            return (p[0], p[1]);
        }
        assert!(Instant::now() < deadline, "the job did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The median of the job's per-second rates reported after `skip` lines.
fn median_rate(out: &Path, skip: usize, want: usize) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rates: Vec<u64> = std::fs::read_to_string(out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("rounds ")?.parse().ok())
            .skip(skip)
            .collect();
        if rates.len() >= want || Instant::now() > deadline {
            let mut r = rates;
            r.sort_unstable();
            return r.get(r.len() / 2).copied().unwrap_or(0);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn reported(out: &Path) -> usize {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("rounds "))
        .count()
}

#[test]
fn a_job_of_two_processes_is_one_gang_and_beats_linux() {
    let _turn = common::one_at_a_time();
    if !can_run_domains() {
        return;
    }
    if Command::new("python3").arg("--version").output().is_err() {
        return common::skip_or_fail("needs python3 for the two-process job");
    }
    let t = TestDir::new("program-job");
    let outs = [t.0.join("job-a.out"), t.0.join("job-b.out")];
    let _jobs: Vec<Killed> = outs.iter().filter_map(|o| two_process_job(o)).collect();
    let pids: Vec<(u32, u32)> = outs.iter().map(|o| job_pids(o)).collect();
    // Job 0 starts in a cgroup of its own: destroy must put it back there.
    let origin = JobCgroup::new(&format!("gang-test-origin-{}", std::process::id()));
    origin.add(pids[0].0);
    origin.add(pids[0].1);
    // Under the Linux scheduler: both jobs on both CPUs.
    let linux: Vec<u64> = outs.iter().map(|o| median_rate(o, 1, 4)).collect();
    let d = start(&t.0);
    shared_pool(&d, "Wide");
    for (i, (a, b)) in pids.iter().enumerate() {
        let cfg = t.0.join(format!("job{i}.cfg"));
        std::fs::write(
            &cfg,
            format!(
                "name = \"job{i}\"\ntype = \"process\"\nvcpus = 2\npool = \"Wide\"\n\
                 pids = [{a}, {b}]\n"
            ),
        )
        .unwrap();
        d.ok(&["create", &cfg.display().to_string()]);
        let held = held_threads(&d, &format!("job{i}"));
        let held_pids: std::collections::BTreeSet<i32> = held.iter().map(|t| t.0).collect();
        assert_eq!(
            held_pids,
            [*a as i32, *b as i32].into_iter().collect(),
            "{held:?}"
        );
    }
    let seen: Vec<usize> = outs.iter().map(|o| reported(o)).collect();
    let gang: Vec<u64> = outs
        .iter()
        .zip(&seen)
        .map(|(o, &s)| median_rate(o, s + 1, 4))
        .collect();
    eprintln!("rounds/s under Linux {linux:?}, as gangs {gang:?}");
    for (l, g) in linux.iter().zip(&gang) {
        assert!(g > l, "gang {g} rounds/s is not above Linux {l}");
    }
    // Destroy gives the processes back: they run on, under Linux.
    d.ok(&["destroy", "job0"]);
    d.ok(&["destroy", "job1"]);
    let n = reported(&outs[0]);
    wait_for("the job to run on after destroy", || {
        reported(&outs[0]) >= n + 2
    });
    for (a, b) in &pids {
        for p in [a, b] {
            assert!(Path::new(&format!("/proc/{p}")).exists(), "{p} was killed");
        }
    }
    let step = origin.0.join("step_0");
    let back = std::fs::read_to_string(step.join("cgroup.procs")).unwrap_or_default();
    for p in [pids[0].0, pids[0].1] {
        assert!(
            back.lines().any(|l| l == p.to_string()),
            "{p} is not back in {}: {back:?}",
            step.display()
        );
    }
}

/// A freezer cgroup a "batch system" made, removed (thawed, emptied) when
/// dropped.
struct JobCgroup(std::path::PathBuf);

impl JobCgroup {
    fn new(name: &str) -> JobCgroup {
        let root = if Path::new("/sys/fs/cgroup/freezer").exists() {
            Path::new("/sys/fs/cgroup/freezer")
        } else {
            Path::new("/sys/fs/cgroup")
        };
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        JobCgroup(dir)
    }

    /// Puts `pid` in a step cgroup below the job's, as batch systems do.
    fn add(&self, pid: u32) {
        let step = self.0.join("step_0");
        std::fs::create_dir_all(&step).unwrap();
        std::fs::write(step.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for JobCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("freezer.state"), "THAWED");
        let _ = std::fs::write(self.0.join("cgroup.freeze"), "0");
        let root = self.0.parent().unwrap().join("cgroup.procs");
        for dir in [self.0.join("step_0"), self.0.clone()] {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for p in procs.lines() {
                let _ = std::fs::write(&root, p);
            }
            for _ in 0..50 {
                if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[test]
fn a_job_cgroup_made_by_a_launcher_is_one_gang_and_is_left_as_found() {
    let _turn = common::one_at_a_time();
    if !can_run_domains() {
        return;
    }
    let t = TestDir::new("program-cgroup");
    let job = JobCgroup::new(&format!("gang-test-job-{}", std::process::id()));
    let program = Command::new(env!("CARGO_BIN_EXE_gang"))
        .args(["workload", "spin-barrier", "--threads", "2"])
        .args(["--duration", "10m", "--report-every", "10m"])
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = program.id();
    let _program = Killed(program);
    job.add(pid);
    let d = start(&t.0);
    shared_pool(&d, "Wide");
    let cfg = t.0.join("job.cfg");
    std::fs::write(
        &cfg,
        format!(
            "name = \"job\"\ntype = \"process\"\nvcpus = 2\npool = \"Wide\"\ncgroup = \"{}\"\n",
            job.0.display()
        ),
    )
    .unwrap();
    d.ok(&["create", &cfg.display().to_string()]);
    let threads = held_threads(&d, "job");
    assert!(
        threads.iter().all(|t| t.0 == pid as i32) && threads.len() >= 3,
        "{threads:?}"
    );
    d.ok(&["pause", "job"]);
    std::thread::sleep(Duration::from_millis(100));
    let grown = cpu_growth(&threads, Duration::from_millis(500));
    assert!(
        grown.iter().all(|&g| g < 1_000_000),
        "ran while paused: {grown:?}"
    );
    d.ok(&["unpause", "job"]);
    d.ok(&["destroy", "job"]);
    // The launcher's cgroup is still there, thawed, with the program in it.
    assert!(job.0.is_dir());
    let procs = std::fs::read_to_string(job.0.join("step_0").join("cgroup.procs")).unwrap();
    assert!(procs.lines().any(|l| l == pid.to_string()), "{procs}");
    let workers: Vec<_> = threads
        .iter()
        .filter(|t| t.2.starts_with("vcpu"))
        .cloned()
        .collect();
    wait_for("the program to run on", || {
        cpu_growth(&workers, Duration::from_millis(200))
            .iter()
            .all(|&g| g > 10_000_000)
    });
}

#[test]
fn a_whole_program_survives_a_killed_daemon_and_is_a_gang_again_after_restart() {
    let _turn = common::one_at_a_time();
    if !can_run_domains() {
        return;
    }
    let t = TestDir::new("program-kill9");
    let d = start(&t.0);
    shared_pool(&d, "Wide");
    let cfg = t.0.join("p.cfg");
    std::fs::write(
        &cfg,
        format!(
            "name = \"p\"\ntype = \"process\"\nvcpus = 2\npool = \"Wide\"\n\
             command = [\"{}\", \"workload\", \"spin-barrier\", \"--threads\", \"2\", \
             \"--duration\", \"10m\", \"--report-every\", \"10m\"]\n",
            env!("CARGO_BIN_EXE_gang")
        ),
    )
    .unwrap();
    d.ok(&["create", &cfg.display().to_string()]);
    wait_for("its workers", || {
        held_threads(&d, "p")
            .iter()
            .filter(|t| t.2.starts_with("vcpu"))
            .count()
            == 2
    });
    let threads = held_threads(&d, "p");
    let dir = d.kill9();
    let d = start(&dir);
    let dmesg = d.ok(&["dmesg"]);
    assert!(dmesg.contains("(p) re-attached"), "{dmesg}");
    assert_eq!(held_threads(&d, "p"), threads);
    let workers: Vec<_> = threads
        .iter()
        .filter(|t| t.2.starts_with("vcpu"))
        .cloned()
        .collect();
    wait_for("the workers to run after the restart", || {
        cpu_growth(&workers, Duration::from_millis(200))
            .iter()
            .all(|&g| g > 10_000_000)
    });
    d.ok(&["pause", "p"]);
    std::thread::sleep(Duration::from_millis(100));
    let grown = cpu_growth(&threads, Duration::from_millis(500));
    assert!(
        grown.iter().all(|&g| g < 1_000_000),
        "ran while paused: {grown:?}"
    );
    d.ok(&["destroy", "p"]);
}
