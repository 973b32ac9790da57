//! `gang bench-slurm`: two bulk-synchronous jobs sharing one node under
//! Slurm, with Slurm's own gang scheduling and with `gang`, in one run.
//!
//! **The cluster.** A private one-node Slurm cluster on this host,
//! `contrib/slurm/test-cluster.sh` (built into the binary, written to a
//! temporary directory with `contrib/slurm/gang_spank.c`, which is compiled
//! there with `cc`), and a private gang daemon (its own state directory and
//! socket there) with a gang pool `G` over every CPU, shared with the host,
//! that the SPANK plugin gives `srun --gang=POLICY` steps to.
//!
//! **The jobs.** A job is `sbatch -n 1 -c CPUS --wrap 'gang workload program
//! --workers CPUS --work W'` (in the gang mode the program runs as a step,
//! `srun --gang=POLICY gang workload ...`, see `start_job`): CPUS ranks
//! (threads, nothing pinned) computing `W` then meeting at a spin barrier,
//! over and over; its progress is the number of rounds (barriers passed),
//! reported every [`REPORT_EVERY`] on CLOCK_MONOTONIC in its output file. Two such jobs want twice the node. The
//! work loop's speed is measured once, by the bench, and given to every job
//! (`--iterations-per-us`): a job measuring its own while Slurm or gang
//! freezes it, or the host preempts it, would get a figure many times too
//! low and rounds far too short (seen: one job at 40,000 rounds/s, the other
//! at 14,000, alone at 1,300).
//!
//! **The modes**, each run for `duration` after both jobs have started
//! (plus [`WARM_UP`]), one after another in one invocation, `repeat` times
//! (the order reversed on every other repeat, so drift and config restarts
//! fall on every mode alike):
//!
//! * `alone`: one job on the node: R rounds/s, the ideal (two jobs sharing
//!   the node ideally get R/2 each, R together);
//! * `linux`: two jobs, partition `OverSubscribe=FORCE:2` without gang
//!   scheduling: both run at once, the Linux scheduler shares the CPUs;
//! * `slurm-gang`: Slurm's gang scheduling, `PreemptMode=GANG`,
//!   `SchedulerTimeSlice=slice` (5 s, its minimum, by default): Slurm
//!   suspends and resumes whole jobs (freezes their step cgroups);
//! * `gang`: as `linux`, each step started with `srun --gang=POLICY`, a gang
//!   domain of the node's gang pool (its tasks frozen outside its slots).
//!
//! A job's rate is its progress between the window's ends (interpolated
//! between its reports; a frozen job's reports are late, not missing: each
//! carries the time it was due) over the window's length. Every
//! [`RUN_SAMPLE`] of the window, the bench also reads which jobs can run:
//! their step cgroup (`job_J/step_batch`, or `step_0` in the gang mode, in
//! Slurm's freezer tree: the cgroup Slurm's suspend and gang freeze) thawed
//! and none of its processes stopped (Slurm suspends with SIGSTOP first and
//! freezes about 2 s later). The share of the window with both, one or
//! neither job able to run says what each scheduler actually did.
//!
//! **Clean-up.** [`Session`] holds the cluster, the daemon and the
//! directory; its drop (also on errors and panics) runs `test-cluster.sh
//! down` (jobs killed, Slurm's cgroups removed, the host restored), stops the
//! daemon with SIGTERM (it gives its domains back) and removes the
//! directory. SIGINT, SIGTERM and SIGHUP end the run through the same path.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gang_core::{Nanos, Policy, MS};
use gang_host::sys;

use crate::signals::Signals;

mod report;
pub use report::{median, parse_line, progress_at, rate, render, Report, Run, Sample};

/// The test cluster script, as in the repository.
const TEST_CLUSTER: &str = include_str!("../../../../contrib/slurm/test-cluster.sh");
/// The SPANK plugin's source, as in the repository.
const GANG_SPANK: &str = include_str!("../../../../contrib/slurm/gang_spank.c");

/// How often a job reports its progress.
pub const REPORT_EVERY: Nanos = 100 * MS;
/// Skipped after both jobs have started, before the window.
pub const WARM_UP: Nanos = 500 * MS;
/// How often the window samples which jobs can run.
pub const RUN_SAMPLE: Nanos = 50 * MS;
/// Slurm's shortest `SchedulerTimeSlice`, seconds.
pub const MIN_SLICE_S: u32 = 5;
/// The gang pool's name in the private daemon.
const POOL: &str = "G";
/// How long the jobs may take to start (Slurm's gang scheduling can keep
/// the second one suspended for its first slice and more).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What `gang bench-slurm` failed on.
#[derive(Debug, thiserror::Error)]
pub enum SlurmBenchError {
    #[error("{0}")]
    Options(String),
    #[error("needs {0}")]
    Host(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{0}")]
    Job(String),
    #[error("interrupted by a signal: the cluster and the daemon were taken down")]
    Interrupted,
}

type Result<T> = std::result::Result<T, SlurmBenchError>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SlurmBenchError {
    let what = what.into();
    move |source| SlurmBenchError::Io { what, source }
}

/// A mode of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Alone,
    Linux,
    SlurmGang,
    Gang,
}

impl Mode {
    /// In the order of a repeat (reversed every other repeat).
    pub const ALL: [Mode; 4] = [Mode::Alone, Mode::Linux, Mode::Gang, Mode::SlurmGang];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Alone => "alone",
            Mode::Linux => "linux",
            Mode::SlurmGang => "slurm-gang",
            Mode::Gang => "gang",
        }
    }

    /// How many jobs share the node.
    pub fn jobs(self) -> usize {
        if self == Mode::Alone {
            1
        } else {
            2
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `gang` binary: the daemon, the jobs' workload, the plugin's gang.
    pub gang: PathBuf,
    /// The window of each mode.
    pub duration: Nanos,
    pub repeat: u32,
    /// Slurm's `SchedulerTimeSlice`, seconds (at least [`MIN_SLICE_S`]).
    pub slice_s: u32,
    /// The steps' `--gang=` policy (gang's `sched-gang -t` syntax).
    pub policy: String,
    /// Compute per round.
    pub work: Nanos,
}

impl Options {
    /// Checks the options before anything is started.
    pub fn check(&self) -> Result<()> {
        if self.duration < 500 * MS {
            return Err(SlurmBenchError::Options(format!(
                "--duration {}: give at least 500ms",
                gang_core::time::Duration(self.duration)
            )));
        }
        if self.repeat == 0 {
            return Err(SlurmBenchError::Options(
                "--repeat 0: give at least 1".into(),
            ));
        }
        if self.slice_s < MIN_SLICE_S || self.slice_s > 65533 {
            return Err(SlurmBenchError::Options(format!(
                "--slice {}: Slurm's SchedulerTimeSlice is {MIN_SLICE_S}..65533 seconds",
                self.slice_s
            )));
        }
        self.policy
            .parse::<Policy>()
            .map_err(|e| SlurmBenchError::Options(format!("--policy {}: {e}", self.policy)))?;
        if self.work == 0 {
            return Err(SlurmBenchError::Options("--work: must be positive".into()));
        }
        Ok(())
    }
}

/// The cluster, the daemon and the directory, taken down when dropped.
#[derive(Debug)]
struct Session {
    dir: PathBuf,
    cluster: PathBuf,
    script: PathBuf,
    daemon: Option<Child>,
    socket: PathBuf,
    gang: PathBuf,
    cluster_up: bool,
    /// The jobs' loop iterations per µs of work (measured once, here).
    iterations_per_us: u64,
}

impl Session {
    fn conf(&self) -> PathBuf {
        self.cluster.join("etc/slurm.conf")
    }

    fn slurm(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", self.conf());
        c
    }

    /// `test-cluster.sh up` for `mode`'s configuration (restarts the daemons
    /// when it differs from the running one).
    fn up(&mut self, mode: Mode, opts: &Options) -> Result<()> {
        let plugin = format!(
            "{} gang={} socket={} pool={POOL} dir={}",
            self.dir.join("gang_spank.so").display(),
            self.gang.display(),
            self.socket.display(),
            self.dir.join("spank").display()
        );
        let mut c = Command::new(&self.script);
        c.arg("up")
            .arg(&self.cluster)
            .env("SPANK_PLUGIN", plugin)
            .env_remove("SLURM_GANG_SLICE")
            .env_remove("SLURM_OVERSUBSCRIBE")
            .stdin(Stdio::null());
        if mode == Mode::SlurmGang {
            c.env("SLURM_GANG_SLICE", opts.slice_s.to_string());
        } else {
            c.env("SLURM_OVERSUBSCRIBE", "2");
        }
        self.cluster_up = true;
        run_ok(c, "test-cluster.sh up").map(drop)
    }

    fn down(&mut self) {
        if !self.cluster_up {
            return;
        }
        self.cluster_up = false;
        let status = Command::new(&self.script)
            .arg("down")
            .arg(&self.cluster)
            .stdin(Stdio::null())
            .status();
        gang_host::best_effort("bench-slurm clean-up: test-cluster.sh down", status);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.down();
        if let Some(mut d) = self.daemon.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &d.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while d.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
        gang_host::best_effort(
            "bench-slurm clean-up: removing its directory",
            std::fs::remove_dir_all(&self.dir),
        );
    }
}

/// Runs `c`, its standard output if it succeeds.
fn run_ok(mut c: Command, what: &str) -> Result<String> {
    let out = c.output().map_err(io(what))?;
    if !out.status.success() {
        return Err(SlurmBenchError::Command {
            what: what.to_string(),
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn in_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// What this host lacks for the benchmark, if anything.
pub fn host_missing() -> Option<String> {
    if !sys::is_root() {
        return Some("root (Slurm's daemons, cgroups, the gang daemon)".into());
    }
    if !Path::new("/sys/fs/cgroup/freezer").is_dir() {
        return Some("the cgroup v1 freezer (Slurm's proctrack/cgroup)".into());
    }
    for program in ["slurmctld", "slurmd", "srun", "munged", "cc"] {
        if !in_path(program) {
            return Some(format!(
                "{program} (contrib/install-host-packages.sh: apt-get install slurm-wlm munge libslurm-dev gcc)"
            ));
        }
    }
    if !Path::new("/usr/include/slurm/spank.h").is_file() {
        return Some("/usr/include/slurm/spank.h (apt-get install libslurm-dev)".into());
    }
    None
}

/// Sleeps `d` in small steps; `Interrupted` if a signal came.
fn sleep(signals: &Signals, d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        if signals.caught() {
            return Err(SlurmBenchError::Interrupted);
        }
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// `s` quoted for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A job: its id, and its output file (the batch script's, where its
/// srun's output goes) read as it grows.
#[derive(Debug)]
struct Job {
    name: String,
    id: String,
    out: PathBuf,
    read: usize,
    samples: Vec<Sample>,
    /// Consecutive checks that did not find it queued.
    missing: u32,
}

impl Job {
    /// Reads what the job printed since the last call.
    fn poll(&mut self) {
        let Ok(text) = std::fs::read(&self.out) else {
            return;
        };
        let Some(complete) = text.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        if complete < self.read {
            return;
        }
        for line in String::from_utf8_lossy(&text[self.read..=complete]).lines() {
            if let Some(sample) = parse_line(line) {
                self.samples.push(sample);
            }
        }
        self.read = complete + 1;
        self.samples.sort_unstable();
    }

    fn first(&self) -> Option<u64> {
        self.samples.first().map(|s| s.0)
    }

    fn last(&self) -> Option<u64> {
        self.samples.last().map(|s| s.0)
    }

    /// Fails if the job is no longer in the queue (it never ends before it
    /// is cancelled), with what it printed.
    fn check_alive(&mut self, s: &Session) -> Result<()> {
        let mut q = s.slurm("squeue");
        q.args(["-h", "-o", "%T", "-j", &self.id])
            .stdin(Stdio::null());
        // squeue failing (slurmctld busy) says nothing about the job.
        let Ok(state) = run_ok(q, "squeue") else {
            return Ok(());
        };
        let state = state.trim();
        if matches!(
            state,
            "RUNNING" | "SUSPENDED" | "PENDING" | "CONFIGURING" | "RESIZING"
        ) {
            self.missing = 0;
            return Ok(());
        }
        // Gone or ending: twice in a row (a second apart) before it counts.
        self.missing += 1;
        if self.missing < 2 {
            return Ok(());
        }
        let out = std::fs::read_to_string(&self.out).unwrap_or_default();
        let tail: Vec<&str> = out.lines().rev().take(10).collect();
        Err(SlurmBenchError::Job(format!(
            "{}: job {} ended early (state '{state}'); its last lines, newest first:\n{}",
            self.name,
            self.id,
            tail.join("\n")
        )))
    }
}

/// Submits job `j` of `mode`: `sbatch --wrap 'exec gang workload program
/// ...'`, in the gang mode `sbatch --wrap 'exec srun --gang=POLICY gang
/// workload program ...'` (the plugin makes steps domains, not batch
/// scripts). Not srun from here, nor srun in the batch script of the other
/// modes: under Slurm's gang scheduling a job suspended as soon as it is
/// allocated, or again before its step is launched, leaves srun's step
/// creation retrying for a long while (seen: a job running for 4 s without
/// its step; another with no step after 60 s).
fn start_job(s: &Session, mode: Mode, j: usize, opts: &Options, cpus: u32) -> Result<Job> {
    let name = format!("{} job {}", mode.name(), j + 1);
    let out = s.dir.join(format!("{}-{}.out", mode.name(), j + 1));
    let _ = std::fs::remove_file(&out);
    // Longer than it will be needed: it is cancelled after its window.
    let life = opts.duration + START_TIMEOUT.as_nanos() as u64 + 120_000 * MS;
    let mut step: Vec<String> = Vec::new();
    if mode == Mode::Gang {
        step.extend(["srun".into(), "-n".into(), "1".into(), "-c".into()]);
        step.push(cpus.to_string());
        step.push(format!("--gang={}", opts.policy));
    }
    step.push(s.gang.display().to_string());
    for a in [
        "workload".to_string(),
        "program".into(),
        "--json".into(),
        "--workers".into(),
        cpus.to_string(),
        "--work".into(),
        format!("{}ns", opts.work),
        "--duration".into(),
        format!("{life}ns"),
        "--report-every".into(),
        format!("{REPORT_EVERY}ns"),
        "--iterations-per-us".into(),
        s.iterations_per_us.to_string(),
    ] {
        step.push(a);
    }
    let wrap = format!(
        "exec {}",
        step.iter()
            .map(|a| sh_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut c = s.slurm("sbatch");
    c.args([
        "--parsable",
        "-J",
        &format!("bench-{}-{}", mode.name(), j + 1),
    ])
    .args(["-n", "1", "-c", &cpus.to_string()])
    .arg("-o")
    .arg(&out)
    .args(["--wrap", &wrap])
    .stdin(Stdio::null());
    let id = run_ok(c, "sbatch")?;
    let id = id.trim().split(';').next().unwrap_or_default().to_string();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SlurmBenchError::Job(format!(
            "{name}: sbatch printed no job id ('{id}')"
        )));
    }
    Ok(Job {
        name,
        id,
        out,
        read: 0,
        samples: Vec::new(),
        missing: 0,
    })
}

/// Cancels every job of the private cluster and waits until none is left.
fn cancel_all(s: &Session, signals: &Signals) -> Result<()> {
    let mut c = s.slurm("scancel");
    c.args(["--quiet", "--user=root"]).stdin(Stdio::null());
    gang_host::best_effort("bench-slurm: scancel", run_ok(c, "scancel"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut q = s.slurm("squeue");
        q.arg("-h").stdin(Stdio::null());
        if run_ok(q, "squeue").is_ok_and(|o| o.trim().is_empty()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(SlurmBenchError::Job(
                "jobs still there 30 s after scancel".into(),
            ));
        }
        sleep(signals, Duration::from_millis(100))?;
    }
}

/// One mode: its jobs started, the window measured, the jobs cancelled.
fn run_mode(
    s: &mut Session,
    mode: Mode,
    repeat: u32,
    opts: &Options,
    cpus: u32,
    signals: &Signals,
    progress: &mut dyn FnMut(&str),
) -> Result<Run> {
    s.up(mode, opts)?;
    progress(&format!("  {}: cluster up, submitting", mode.name()));
    let mut jobs = Vec::new();
    for j in 0..mode.jobs() {
        jobs.push(start_job(s, mode, j, opts, cpus)?);
    }
    let result = measure(s, mode, &mut jobs, opts, signals, progress);
    let cancelled = cancel_all(s, signals);
    let (rates, running) = result?;
    cancelled?;
    Ok(Run {
        mode,
        repeat,
        rounds_per_s: rates,
        window_s: opts.duration as f64 / 1e9,
        running,
    })
}

fn measure(
    s: &Session,
    mode: Mode,
    jobs: &mut [Job],
    opts: &Options,
    signals: &Signals,
    progress: &mut dyn FnMut(&str),
) -> Result<(Vec<f64>, [f64; 3])> {
    let started = Instant::now();
    let mut checked = Instant::now();
    // Every second: is every job still there?
    let mut check = |jobs: &mut [Job]| -> Result<()> {
        if checked.elapsed() >= Duration::from_secs(1) {
            checked = Instant::now();
            for job in jobs.iter_mut() {
                job.check_alive(s)?;
            }
        }
        Ok(())
    };
    let begun = loop {
        jobs.iter_mut().for_each(Job::poll);
        check(jobs)?;
        let firsts: Vec<Option<u64>> = jobs.iter().map(Job::first).collect();
        if firsts.iter().all(Option::is_some) {
            break firsts.into_iter().flatten().max().unwrap_or(0);
        }
        if started.elapsed() > START_TIMEOUT {
            return Err(SlurmBenchError::Job(format!(
                "{}: the jobs did not all start within {} s",
                mode.name(),
                START_TIMEOUT.as_secs()
            )));
        }
        sleep(signals, Duration::from_millis(50))?;
    };
    let start = begun + WARM_UP;
    let end = start + opts.duration;
    progress(&format!(
        "  {}: {} job(s) started after {:.1} s; measuring {:.1} s",
        mode.name(),
        jobs.len(),
        started.elapsed().as_secs_f64(),
        opts.duration as f64 / 1e9
    ));
    let now = sys::monotonic_ns();
    if start > now {
        sleep(signals, Duration::from_nanos(start - now))?;
    }
    let mut counts = [0u64; 3];
    let mut next = start;
    while next < end {
        let step = if mode == Mode::Gang {
            "step_0"
        } else {
            "step_batch"
        };
        let n = jobs.iter().filter(|j| step_running(&j.id, step)).count();
        counts[n.min(2)] += 1;
        next += RUN_SAMPLE;
        let now = sys::monotonic_ns();
        if next > now {
            sleep(signals, Duration::from_nanos(next - now))?;
        }
    }
    let total = counts.iter().sum::<u64>().max(1) as f64;
    let running = counts.map(|c| c as f64 / total);
    // A frozen job reports when it is thawed (up to a slice later).
    let late = Duration::from_secs(2 * u64::from(opts.slice_s) + 5);
    let waited = Instant::now();
    loop {
        jobs.iter_mut().for_each(Job::poll);
        if jobs.iter().all(|j| j.last().is_some_and(|t| t >= end)) || waited.elapsed() > late {
            break;
        }
        check(jobs)?;
        sleep(signals, Duration::from_millis(50))?;
    }
    let mut rates = Vec::new();
    for job in jobs.iter() {
        let samples = &job.samples;
        let mut at_end = samples.clone();
        // No report due at or after `end` yet: it was frozen since its last.
        if let Some(&(t, p)) = samples.last() {
            if t < end {
                at_end.push((end, p));
            }
        }
        let r = rate(&at_end, start, end).ok_or_else(|| {
            SlurmBenchError::Job(format!(
                "{}: no progress reports around the window ({} reports)",
                job.name,
                samples.len()
            ))
        })?;
        rates.push(r);
    }
    Ok((rates, running))
}

/// Whether job `id`'s `step` (`step_batch`, or `step_0`: the srun in its
/// batch script) can run: its freezer cgroup is thawed and none of its
/// processes is stopped. (Slurm suspends a job in two stages: SIGSTOP, then
/// about 2 s later the freezer; it resumes by thawing, then SIGCONT.)
fn step_running(id: &str, step: &str) -> bool {
    let Ok(roots) = std::fs::read_dir("/sys/fs/cgroup/freezer") else {
        return false;
    };
    for root in roots.flatten() {
        if !root.file_name().to_string_lossy().starts_with("slurm") {
            continue;
        }
        for uid in std::fs::read_dir(root.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let cg = uid.path().join(format!("job_{id}/{step}"));
            let Ok(state) = std::fs::read_to_string(cg.join("freezer.state")) else {
                continue;
            };
            if state.trim() != "THAWED" {
                return false;
            }
            let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
            return !procs.lines().any(|pid| {
                std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
                    .ok()
                    .and_then(|st| st.rsplit_once(") ").map(|(_, rest)| rest.to_string()))
                    .is_some_and(|rest| rest.starts_with('T') || rest.starts_with('t'))
            });
        }
    }
    false
}

/// Runs the benchmark; `progress` gets a line as each step starts and ends.
pub fn run(opts: &Options, progress: &mut dyn FnMut(&str)) -> Result<Report> {
    opts.check()?;
    if let Some(missing) = host_missing() {
        return Err(SlurmBenchError::Host(missing));
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let signals = Signals::catch().map_err(io("catching signals"))?;
    let dir = std::env::temp_dir().join(format!("gang-bench-slurm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(io(format!("making {}", dir.display())))?;
    let mut s = Session {
        cluster: dir.join("cluster"),
        script: dir.join("test-cluster.sh"),
        socket: dir.join("gang.sock"),
        gang: opts.gang.clone(),
        daemon: None,
        cluster_up: false,
        iterations_per_us: gang_host::workload::calibrate(),
        dir,
    };
    prepare(&mut s, cpus, &signals, progress)?;
    let mut slurm_version = String::new();
    let node = run_ok(
        {
            let mut h = Command::new("hostname");
            h.arg("-s");
            h
        },
        "hostname",
    )
    .map(|h| h.trim().to_string())
    .unwrap_or_default();
    let load_before = loadavg();
    let mut runs = Vec::new();
    for k in 1..=opts.repeat {
        let mut order = Mode::ALL.to_vec();
        if k % 2 == 0 {
            order.reverse();
        }
        progress(&format!(
            "repeat {k}/{}: {}",
            opts.repeat,
            order
                .iter()
                .map(|m| m.name())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        for mode in order {
            let run = run_mode(&mut s, mode, k, opts, cpus, &signals, progress)?;
            if slurm_version.is_empty() {
                let mut version = s.slurm("sinfo");
                version.arg("-V");
                slurm_version = run_ok(version, "sinfo -V")
                    .map(|v| v.trim().to_string())
                    .unwrap_or_default();
            }
            let each: Vec<String> = run.rounds_per_s.iter().map(|x| format!("{x:.1}")).collect();
            progress(&format!(
                "  {}: rounds/s {} (sum {:.1})",
                mode.name(),
                each.join(", "),
                run.sum()
            ));
            runs.push(run);
        }
    }
    progress("taking the cluster and the daemon down");
    let s_iterations = s.iterations_per_us;
    drop(s);
    Ok(Report {
        cpus,
        node,
        slurm_version,
        duration_ns: opts.duration,
        repeat: opts.repeat,
        slice_s: opts.slice_s,
        policy: opts.policy.clone(),
        work_ns: opts.work,
        iterations_per_us: s_iterations,
        load_before,
        load_after: loadavg(),
        runs,
    })
}

/// The files, the plugin, the daemon and its pool.
fn prepare(
    s: &mut Session,
    cpus: u32,
    signals: &Signals,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(&s.script, TEST_CLUSTER).map_err(io("writing test-cluster.sh"))?;
    std::fs::set_permissions(&s.script, std::fs::Permissions::from_mode(0o755))
        .map_err(io("making test-cluster.sh executable"))?;
    let source = s.dir.join("gang_spank.c");
    std::fs::write(&source, GANG_SPANK).map_err(io("writing gang_spank.c"))?;
    let mut cc = Command::new("cc");
    cc.args(["-shared", "-fPIC", "-o"])
        .arg(s.dir.join("gang_spank.so"))
        .arg(&source);
    run_ok(cc, "cc gang_spank.c")?;
    progress(&format!(
        "starting a private gang daemon ({}) and its pool {POOL} of CPUs 0-{}",
        s.socket.display(),
        cpus - 1
    ));
    let log = std::fs::File::create(s.dir.join("daemon.log")).map_err(io("the daemon's log"))?;
    let daemon = Command::new(&s.gang)
        .arg("daemon")
        .arg("--state-dir")
        .arg(s.dir.join("state"))
        .arg("--socket")
        .arg(&s.socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(io("starting the gang daemon"))?;
    s.daemon = Some(daemon);
    let xl = |args: &[&str]| {
        let mut c = Command::new(&s.gang);
        c.args(args)
            .env("GANG_SOCKET", &s.socket)
            .stdin(Stdio::null());
        c
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while run_ok(xl(&["info"]), "gang info").is_err() {
        if Instant::now() > deadline {
            return Err(SlurmBenchError::Command {
                what: "the gang daemon".into(),
                detail: format!(
                    "not answering after 30 s; its log: {}",
                    std::fs::read_to_string(s.dir.join("daemon.log")).unwrap_or_default()
                ),
            });
        }
        sleep(signals, Duration::from_millis(50))?;
    }
    run_ok(
        xl(&[
            "cpupool-create",
            &format!("name=\"{POOL}\""),
            "sched=\"gang\"",
            &format!("cpus=\"0-{}\"", cpus - 1),
            "shared=1",
        ]),
        "gang cpupool-create",
    )?;
    progress("bringing the private Slurm cluster up (contrib/slurm/test-cluster.sh)");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    #[test]
    fn options_are_checked_before_anything_starts() {
        let ok = Options {
            gang: "gang".into(),
            duration: 20_000 * MS,
            repeat: 3,
            slice_s: 5,
            policy: "tt,10ms,4ms".into(),
            work: 200_000,
        };
        ok.check().unwrap();
        let bad = |f: &dyn Fn(&mut Options), want: &str| {
            let mut o = ok.clone();
            f(&mut o);
            let e = o.check().unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        };
        bad(&|o| o.duration = 100 * MS, "--duration 100ms");
        bad(&|o| o.repeat = 0, "--repeat 0");
        bad(
            &|o| o.slice_s = 4,
            "--slice 4: Slurm's SchedulerTimeSlice is 5..65533",
        );
        bad(&|o| o.policy = "fifo".into(), "--policy fifo");
        bad(&|o| o.work = 0, "--work");
    }
}
