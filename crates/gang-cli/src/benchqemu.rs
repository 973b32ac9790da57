//! `gang bench-vm --qemu`: Linux guests in QEMU, gang against the Linux
//! scheduler on the same CPUs.
//!
//! Per workload (`barrier`, `pipes`: the guest image's `gang.workload=`),
//! the largest number of guests asked for boots once, all at once (QEMU
//! started with `-S`, vCPU threads from QMP, then `cont`), and every phase
//! runs on those same guests; a guest a phase does not use is stopped over
//! QMP (its vCPUs then sleep in QEMU and its clock stands still). Phases,
//! on the pool CPUs (0-1), interleaved over `repeat` rounds:
//!
//! * `alone`: guest 1, Linux scheduler: the ideal (N guests: alone / N each);
//! * `linux` N: guests 1..N, Linux scheduler (SCHED_OTHER, every QEMU thread
//!   allowed on the pool CPUs);
//! * `gang` N: guests 1..N with their vCPU threads adopted by one gang
//!   runtime on the pool CPUs, shared mode, best-effort, equal weights, as
//!   `gang bench`'s `gang-adopt` phase; given back when the phase ends.
//!
//! **What is measured.** The guests print their rate once a second on their
//! serial console (QEMU's console log, read here as it grows and stamped with
//! the host's clock). After a phase's change (a guest continued or stopped,
//! threads adopted), each guest's first report is skipped, since it covers
//! time before the change; the window starts once every guest has printed
//! it and lasts `duration`. A guest's rate is the median of its reports in
//! the window; a phase's figure is the sum over its guests (with the
//! per-guest spread). The table shows, per (workload, N), the median run of
//! each phase (`gang_host::bench::medians`), gang/linux and gang's share of
//! the ideal (gang's sum ÷ alone's rate). Every round starts with `gang
//! bench`'s host-noise measurement, all guests stopped, and every window
//! records how much of the pool CPUs other processes and the hypervisor
//! took (`/proc/stat` less this process's and its QEMUs' CPU time): the
//! Linux phases share the CPUs with them, the gang phases (real-time
//! vCPUs) mostly do not.
//!
//! **Measured** (these 2-CPU machines, TCG, defaults, 2m46s, others'
//! share of the CPUs 0%): barrier, 2 guests: alone 2.71 M rounds/s, linux
//! 528 (each guest ~260: its two vCPUs rarely run at once), gang 2.64 M =
//! 97% of ideal; 3 guests: linux 0.27 M (one guest at times lucky, the
//! others ~200), gang 2.51 M = 93%. pipes: gang 0.83x (2 guests) and 0.92x
//! (3) linux, 82% and 88% of ideal: pipes does not need its vCPUs together
//! (Linux's time slicing keeps 96-98% of alone), so gang can only lose
//! there: the host's 8% slot, and a few points more not accounted for (a
//! guess: QEMU's main-loop threads, SCHED_OTHER, run only in the host slot
//! during gang phases). A pipes guest alone keeps both CPUs busy (QEMU's
//! CPU time), so it is not idle vCPUs holding their slots. The `alone` run
//! is itself subject to the Linux scheduler: in one run a window had guest
//! 1 at ~270 rounds/s (as under `linux`), which lowered the median and put
//! gang above 100% of ideal.
//!
//! **Clean-up.** Every QEMU is a [`Qemu`] guard (QMP `quit`, then SIGKILL,
//! then wait), the runtime gives its threads back when dropped, and
//! SIGINT, SIGTERM and SIGHUP end the run through the same path; only a
//! SIGKILL of `gang` itself leaves QEMUs running (stopped or not).

use std::fmt::Write as _;
use std::fs::File;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use gang_core::{CpuId, CpuSet, DomainId, DomainSpec, Nanos, Policy, PoolConfig, MS};
use gang_host::bench::{self as hostbench, BenchConfig, Noise, Phase, Spread};
use gang_host::runtime::{Runtime, RuntimeConfig};
use gang_host::sys;
use gang_qemu::accel::{AccelSetting, Accelerator};
use gang_qemu::qmp::Qmp;

/// The pool CPUs (this benchmark's guests have one vCPU per CPU).
pub const CPUS: [CpuId; 2] = [0, 1];
/// vCPUs per guest.
pub const GUEST_VCPUS: u32 = 2;
/// Guest memory, MB.
pub const GUEST_MEMORY_MB: u64 = 256;
/// Reports skipped after a phase's change, per guest.
pub const SKIP_REPORTS: usize = 1;
/// How long the guests have to boot and start their workload.
const BOOT_TIMEOUT: Nanos = 240_000 * MS;
/// How long the skipped reports may take.
const SKIP_TIMEOUT: Nanos = 15_000 * MS;
/// How long after the window a guest with no report in it may still give
/// one.
const LATE_REPORT: Nanos = 5_000 * MS;
/// How often the consoles are read while waiting.
const POLL: Nanos = 25 * MS;
/// How long QEMU has to exit after `quit`.
const QUIT_TIMEOUT: Nanos = 3_000 * MS;

/// A workload of the guest image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestWorkload {
    /// A spin barrier over the vCPUs.
    Barrier,
    /// Processes ping-ponging through pipes (kernel-heavy).
    Pipes,
}

impl GuestWorkload {
    /// Its name on the kernel command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            GuestWorkload::Barrier => "barrier",
            GuestWorkload::Pipes => "pipes",
        }
    }

    /// The unit of its reports.
    pub fn unit(self) -> &'static str {
        match self {
            GuestWorkload::Barrier => "rounds/s",
            GuestWorkload::Pipes => "msgs/s",
        }
    }
}

impl std::str::FromStr for GuestWorkload {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "barrier" => Ok(GuestWorkload::Barrier),
            "pipes" => Ok(GuestWorkload::Pipes),
            _ => Err(format!(
                "no guest workload {s:?} (barrier: a spin barrier; pipes: pipe ping-pong)"
            )),
        }
    }
}

/// The guest's rate report in `line` (`gang-guest: barrier N rounds/s`),
/// if it is one for `workload`.
pub fn parse_rate(line: &str, workload: GuestWorkload) -> Option<u64> {
    let (_, rest) = line.split_once("gang-guest: ")?;
    let mut words = rest.split_whitespace();
    if words.next()? != workload.name() {
        return None;
    }
    let n = words.next()?.parse().ok()?;
    (words.next()? == workload.unit() && words.next().is_none()).then_some(n)
}

/// The CPUs the guest counts in its `gang-guest: up, N cpus` line, if
/// `line` is that line.
pub fn parse_up(line: &str) -> Option<u32> {
    let (_, rest) = line.split_once("gang-guest: up, ")?;
    rest.trim().strip_suffix(" cpus")?.trim().parse().ok()
}

/// The command line's choices.
#[derive(Debug, Clone)]
pub struct Options {
    /// How many guests each `linux` and `gang` phase runs (one phase each).
    pub guests: Vec<u32>,
    /// The guests' workloads, one boot of guests each, in this order.
    pub workloads: Vec<GuestWorkload>,
    /// How many times every phase runs, interleaved.
    pub repeat: u32,
    /// The measured window of each phase, after the skipped reports.
    pub duration: Nanos,
    /// QEMU's accelerator (`auto` measures KVM first).
    pub accel: AccelSetting,
}

/// One workload's runs.
#[derive(Debug, Clone)]
pub struct WorkloadRuns {
    /// `barrier` or `pipes`.
    pub workload: String,
    /// The unit of the phases' rates (`rounds_per_s` holds each guest's
    /// rate in this unit).
    pub unit: String,
    /// From starting the QEMUs to every guest reporting its workload, s.
    pub boot_s: f64,
    /// Every phase in the order run (`alone`, `linux`, `gang`).
    pub phases: Vec<Phase>,
    /// Per phase, in the same order: what else was measured.
    pub details: Vec<PhaseDetail>,
}

/// What a phase measured besides its rates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PhaseDetail {
    /// Per guest, its reports in the window.
    pub reports: Vec<Vec<u64>>,
    /// The share of the pool CPUs' time that processes other than this
    /// benchmark and its QEMUs used during the window (other users of the
    /// machine, kernel threads, interrupts).
    pub others_cpu: Option<f64>,
    /// The share the hypervisor took from the pool CPUs (steal time).
    pub steal: Option<f64>,
}

/// CPU time counters, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTicks {
    /// Busy time of the pool CPUs (user, nice, system, irq, softirq).
    pub busy: u64,
    /// Time the hypervisor took from them.
    pub steal: u64,
    /// All their time.
    pub total: u64,
    /// This benchmark's and its QEMUs' CPU time (every thread, any CPU).
    pub ours: u64,
}

/// `(busy, steal, total)` of `cpus` from `/proc/stat`'s text.
pub fn parse_proc_stat(text: &str, cpus: &[CpuId]) -> Option<(u64, u64, u64)> {
    let mut sums = (0, 0, 0);
    for &cpu in cpus {
        let name = format!("cpu{cpu}");
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let [user, nice, system, idle, iowait, irq, softirq, steal] = f[..] else {
            return None;
        };
        sums.0 += user + nice + system + irq + softirq;
        sums.1 += steal;
        sums.2 += user + nice + system + idle + iowait + irq + softirq + steal;
    }
    Some(sums)
}

/// The counters now, for the pool CPUs and the processes `pids`.
fn cpu_ticks(pids: &[u32]) -> Option<CpuTicks> {
    let (busy, steal, total) =
        parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?, &CPUS)?;
    let ours = pids
        .iter()
        .filter_map(|&p| Some(gang_host::proc::stat(p as i32, None)?.cpu_ticks()))
        .sum();
    Some(CpuTicks {
        busy,
        steal,
        total,
        ours,
    })
}

/// The others' share and the steal between two samples.
pub fn load_between(a: CpuTicks, b: CpuTicks) -> Option<(f64, f64)> {
    let total = b.total.checked_sub(a.total).filter(|&t| t > 0)? as f64;
    let busy = b.busy.saturating_sub(a.busy);
    let ours = b.ours.saturating_sub(a.ours);
    Some((
        busy.saturating_sub(ours) as f64 / total,
        b.steal.saturating_sub(a.steal) as f64 / total,
    ))
}

/// A line of the table: the medians for one workload and guest count.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The workload.
    pub workload: String,
    /// Its unit.
    pub unit: String,
    /// Guests.
    pub guests: u32,
    /// One guest alone (the ideal sum for any N).
    pub alone: f64,
    /// N guests under Linux: the sum over the guests.
    pub linux: f64,
    /// The slowest and fastest guest of that run.
    pub linux_guests: (f64, f64),
    /// N guests under gang: the sum over the guests.
    pub gang: f64,
    /// The slowest and fastest guest of that run.
    pub gang_guests: (f64, f64),
    /// gang ÷ linux.
    pub gang_vs_linux: Option<f64>,
    /// gang ÷ alone, in percent.
    pub ideal_pct: Option<f64>,
    /// Gate violations over every gang run (must be 0).
    pub gate_violations: usize,
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct Report {
    /// `kvm` or `tcg`.
    pub accelerator: String,
    /// Why that accelerator.
    pub accel_reason: String,
    /// The guest kernel's release.
    pub kernel: String,
    /// The pool CPUs.
    pub cpus: Vec<CpuId>,
    /// vCPUs per guest.
    pub guest_vcpus: u32,
    /// Memory per guest, MB.
    pub guest_memory_mb: u64,
    /// The measured window of each phase, ns.
    pub duration_ns: Nanos,
    /// Reports skipped per guest after each phase's change.
    pub skipped_reports: usize,
    /// Rounds.
    pub repeat: u32,
    /// Per workload, every run.
    pub workloads: Vec<WorkloadRuns>,
    /// The table.
    pub rows: Vec<Row>,
    /// The host's noise, once per round and workload.
    pub noise: Vec<Noise>,
}

impl Report {
    /// The report as JSON: every field, every phase of every workload.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let workloads: Vec<_> = self
            .workloads
            .iter()
            .map(|w| {
                json!({
                    "workload": w.workload,
                    "unit": w.unit,
                    "boot_s": w.boot_s,
                    "phases": w.phases,
                    "details": w.details.iter().map(|d| json!({
                        "reports": d.reports,
                        "others_cpu": d.others_cpu,
                        "steal": d.steal,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let rows: Vec<_> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "workload": r.workload,
                    "unit": r.unit,
                    "guests": r.guests,
                    "alone": r.alone,
                    "linux": r.linux,
                    "linux_guest_min": r.linux_guests.0,
                    "linux_guest_max": r.linux_guests.1,
                    "gang": r.gang,
                    "gang_guest_min": r.gang_guests.0,
                    "gang_guest_max": r.gang_guests.1,
                    "gang_vs_linux": r.gang_vs_linux,
                    "ideal_pct": r.ideal_pct,
                    "gate_violations": r.gate_violations,
                })
            })
            .collect();
        json!({
            "accelerator": self.accelerator,
            "accel_reason": self.accel_reason,
            "kernel": self.kernel,
            "cpus": self.cpus,
            "guest_vcpus": self.guest_vcpus,
            "guest_memory_mb": self.guest_memory_mb,
            "duration_ns": self.duration_ns,
            "skipped_reports": self.skipped_reports,
            "repeat": self.repeat,
            "workloads": workloads,
            "rows": rows,
            "noise": self.noise,
        })
    }
}

/// The sum over a phase's guests, and its slowest and fastest guest.
fn totals(p: &Phase) -> (f64, (f64, f64)) {
    let r = &p.rounds_per_s;
    let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = r.iter().copied().fold(0.0, f64::max);
    (r.iter().sum(), (if r.is_empty() { 0.0 } else { lo }, hi))
}

/// The table's rows for one workload: per guest count, the median run of
/// each phase.
pub fn rows(runs: &WorkloadRuns, guests: &[u32]) -> Vec<Row> {
    let medians = hostbench::medians(&runs.phases);
    let median = |kind: &str, n: u32| {
        medians
            .iter()
            .find(|(p, ..)| p.kind == kind && p.domains == n)
            .map_or((0.0, (0.0, 0.0)), |(p, ..)| totals(p))
    };
    let alone = median("alone", 1).0;
    guests
        .iter()
        .map(|&n| {
            let (linux, linux_guests) = median("linux", n);
            let (gang, gang_guests) = median("gang", n);
            Row {
                workload: runs.workload.clone(),
                unit: runs.unit.clone(),
                guests: n,
                alone,
                linux,
                linux_guests,
                gang,
                gang_guests,
                gang_vs_linux: (linux > 0.0).then(|| gang / linux),
                ideal_pct: (alone > 0.0).then(|| gang / alone * 100.0),
                gate_violations: runs
                    .phases
                    .iter()
                    .filter(|p| p.kind == "gang" && p.domains == n)
                    .map(|p| p.gate_violations)
                    .sum(),
            }
        })
        .collect()
}

/// The table, the accelerator and the host's noise.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "gang bench-vm --qemu: Linux guests (kernel {}) of {} vCPUs, {} MB, on CPUs {:?} shared with the host",
        report.kernel, report.guest_vcpus, report.guest_memory_mb, report.cpus
    );
    let _ = writeln!(
        out,
        "accelerator {}: {}",
        report.accelerator, report.accel_reason
    );
    let _ = writeln!(
        out,
        "{:.1} s per phase after {} skipped report(s); a guest's rate is the median of its per-second reports, \
         a phase's the sum over its guests; medians of {} interleaved runs",
        report.duration_ns as f64 / 1e9,
        report.skipped_reports,
        report.repeat
    );
    let _ = writeln!(
        out,
        "{:<8} {:<8} {:>2} {:>9} {:>9} {:>19} {:>9} {:>19} {:>10} {:>7}",
        "workload",
        "unit",
        "N",
        "alone",
        "linux",
        "(guest min..max)",
        "gang",
        "(guest min..max)",
        "gang/linux",
        "% ideal"
    );
    for r in &report.rows {
        let span = |(lo, hi): (f64, f64)| format!("({lo:.0}..{hi:.0})");
        let _ = writeln!(
            out,
            "{:<8} {:<8} {:>2} {:>9.0} {:>9.0} {:>19} {:>9.0} {:>19} {:>10} {:>7}",
            r.workload,
            r.unit,
            r.guests,
            r.alone,
            r.linux,
            span(r.linux_guests),
            r.gang,
            span(r.gang_guests),
            r.gang_vs_linux.map_or("-".into(), |x| format!("{x:.2}x")),
            r.ideal_pct.map_or("-".into(), |x| format!("{x:.1}%")),
        );
        if r.gate_violations > 0 {
            let _ = writeln!(
                out,
                "  warning: {} gate violations over the gang runs",
                r.gate_violations
            );
        }
    }
    for w in &report.workloads {
        out.push_str(&load_summary(w));
    }
    out.push_str(&hostbench::render_noise(&report.cpus, &report.noise));
    out
}

/// A line saying how much of the pool CPUs other processes and the
/// hypervisor took during each phase (median over its runs).
pub fn load_summary(runs: &WorkloadRuns) -> String {
    let keys: Vec<(&str, u32)> = hostbench::medians(&runs.phases)
        .iter()
        .map(|(p, ..)| (p.kind.as_str(), p.domains))
        .collect();
    let median = |kind: &str, n: u32, f: fn(&PhaseDetail) -> Option<f64>| {
        let xs: Vec<f64> = runs
            .phases
            .iter()
            .zip(&runs.details)
            .filter(|(p, _)| p.kind == kind && p.domains == n)
            .filter_map(|(_, d)| f(d))
            .collect();
        (!xs.is_empty()).then(|| Spread::of(xs).p50 * 100.0)
    };
    let parts: Vec<String> = keys
        .iter()
        .filter_map(|&(kind, n)| {
            let others = median(kind, n, |d| d.others_cpu)?;
            let steal = median(kind, n, |d| d.steal).unwrap_or(0.0);
            let name = if kind == "alone" {
                kind.to_string()
            } else {
                format!("{kind} {n}")
            };
            Some(format!("{name} {others:.0}% (steal {steal:.0}%)"))
        })
        .collect();
    if parts.is_empty() {
        return String::new();
    }
    format!(
        "{}: other processes' share of CPUs 0-1 during the windows, median: {}\n",
        runs.workload,
        parts.join(", ")
    )
}

/// The guest's console log, read as it grows; each line stamped with the
/// host's monotonic clock when it was read.
#[derive(Debug)]
struct ConsoleTail {
    path: PathBuf,
    file: Option<File>,
    partial: Vec<u8>,
    lines: Vec<(Nanos, String)>,
}

impl ConsoleTail {
    fn new(path: PathBuf) -> ConsoleTail {
        ConsoleTail {
            path,
            file: None,
            partial: Vec::new(),
            lines: Vec::new(),
        }
    }

    /// Reads what was appended since the last call.
    fn poll(&mut self) -> Result<()> {
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(f) => self.file = Some(f),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e).with_context(|| format!("{}", self.path.display())),
            }
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)
            .with_context(|| format!("reading {}", self.path.display()))?;
        if buf.is_empty() {
            return Ok(());
        }
        let now = sys::monotonic_ns();
        self.partial.extend_from_slice(&buf);
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            let text = String::from_utf8_lossy(&line);
            self.lines
                .push((now, text.trim_end_matches(['\r', '\n']).to_owned()));
        }
        Ok(())
    }

    /// The `workload` reports read after `after`, with their times.
    fn rates_after(&self, workload: GuestWorkload, after: Nanos) -> Vec<(Nanos, u64)> {
        self.lines
            .iter()
            .filter(|(t, _)| *t > after)
            .filter_map(|(t, l)| Some((*t, parse_rate(l, workload)?)))
            .collect()
    }

    /// The last lines, for error messages.
    fn tail(&self, n: usize) -> String {
        let from = self.lines.len().saturating_sub(n);
        self.lines[from..]
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The rate of one guest in `(from, to]`: the median of its reports there.
fn window_rate(reports: &[(Nanos, u64)], from: Nanos, to: Nanos) -> Option<f64> {
    let xs: Vec<f64> = reports
        .iter()
        .filter(|(t, _)| *t > from && *t <= to)
        .map(|&(_, r)| r as f64)
        .collect();
    (!xs.is_empty()).then(|| Spread::of(xs).p50)
}

/// A QEMU process: asked to quit, then killed, when dropped.
#[derive(Debug)]
struct Qemu {
    child: Child,
    qmp: Option<Qmp>,
    log: PathBuf,
}

impl Qemu {
    /// Why QEMU ended, if it did.
    fn ended(&mut self) -> Option<String> {
        let status = self.child.try_wait().ok()??;
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let last = text.lines().rev().find(|l| !l.trim().is_empty());
        Some(format!(
            "QEMU ended ({status}): {} (its log: {})",
            last.unwrap_or("no message"),
            self.log.display()
        ))
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Some(mut qmp) = self.qmp.take() {
            let _ = qmp.quit();
        }
        let deadline = sys::monotonic_ns() + QUIT_TIMEOUT;
        while matches!(self.child.try_wait(), Ok(None)) && sys::monotonic_ns() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One guest.
#[derive(Debug)]
struct Guest {
    number: u32,
    qemu: Qemu,
    tids: Vec<i32>,
    console: ConsoleTail,
    running: bool,
}

impl Guest {
    fn qmp(&mut self) -> Result<&mut Qmp> {
        self.qemu
            .qmp
            .as_mut()
            .context("QEMU's QMP connection is closed")
    }

    /// Lets the guest's vCPUs run (QMP `cont`) or stops them (`stop`),
    /// unless they already are.
    fn set_running(&mut self, run: bool) -> Result<()> {
        if self.running != run {
            let n = self.number;
            let qmp = self.qmp()?;
            let done = if run { qmp.cont() } else { qmp.stop() };
            done.with_context(|| format!("guest {n}: {}", if run { "cont" } else { "stop" }))?;
            self.running = run;
        }
        Ok(())
    }
}

/// SIGINT, SIGTERM and SIGHUP set a flag for the run's waits, while held.
#[derive(Debug)]
struct Signals {
    flag: Arc<AtomicBool>,
    ids: Vec<signal_hook::SigId>,
}

impl Signals {
    fn catch() -> Result<Signals> {
        let flag = Arc::new(AtomicBool::new(false));
        let mut ids = Vec::new();
        for sig in [
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGHUP,
        ] {
            ids.push(
                signal_hook::flag::register(sig, Arc::clone(&flag)).context("catching signals")?,
            );
        }
        Ok(Signals { flag, ids })
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// A directory removed, with what is in it, when dropped.
#[derive(Debug)]
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What every step of the run needs.
struct Bench<'a> {
    opts: &'a Options,
    image: gang_qemu::image::LinuxImage,
    accel: gang_qemu::args::Accel,
    dir: PathBuf,
    signals: Signals,
    progress: &'a mut dyn FnMut(&str),
    runtimes: u32,
}

impl Bench<'_> {
    /// Reads the consoles until `until`, failing if a QEMU ended or a
    /// signal came; stops early when `done` holds.
    fn wait(
        &mut self,
        guests: &mut [Guest],
        until: Nanos,
        mut done: impl FnMut(&[Guest]) -> bool,
    ) -> Result<bool> {
        loop {
            for g in guests.iter_mut() {
                g.console.poll()?;
                if let Some(why) = g.qemu.ended() {
                    bail!(
                        "guest {}: {why}; its console's last lines:\n{}",
                        g.number,
                        g.console.tail(10)
                    );
                }
            }
            if self.signals.flag.load(Ordering::Relaxed) {
                bail!("interrupted: every QEMU is stopped and the CPUs given back");
            }
            if done(guests) {
                return Ok(true);
            }
            let now = sys::monotonic_ns();
            if now >= until {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_nanos(POLL.min(until - now)));
        }
    }

    /// Starts `count` guests running `workload` and waits until each
    /// reports its workload's rate.
    fn boot(&mut self, workload: GuestWorkload, count: u32) -> Result<(Vec<Guest>, f64)> {
        let cpus: CpuSet = CPUS.iter().copied().collect();
        let started = sys::monotonic_ns();
        let mut guests = Vec::new();
        for number in 1..=count {
            (self.progress)(&format!(
                "{}: booting guest {number}/{count} ({} vCPUs, {} MB)",
                workload.name(),
                GUEST_VCPUS,
                GUEST_MEMORY_MB
            ));
            let dir = self.dir.join(format!("{}-{number}", workload.name()));
            std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
            let text = format!(
                "name = {}\ntype = \"hvm\"\nvcpus = {GUEST_VCPUS}\nmemory = {GUEST_MEMORY_MB}\n\
                 kernel = {}\nramdisk = {}\nextra = {}\n",
                gang_config::Value::Str(format!("bench-vm-{}-{number}", workload.name())),
                gang_config::Value::Str(self.image.kernel.display().to_string()),
                gang_config::Value::Str(self.image.initrd.display().to_string()),
                gang_config::Value::Str(format!(
                    "console=ttyS0 quiet gang.workload={}",
                    workload.name()
                )),
            );
            let config = gang_config::Config::parse("bench-vm", &text)
                .context("the guest's configuration")?;
            let domain = gang_config::DomainConfig::from_config(&config)
                .context("the guest's configuration")?;
            let paths = gang_qemu::args::QemuPaths {
                qmp_socket: dir.join("qmp.sock"),
                serial_socket: dir.join("console.sock"),
                console_log: dir.join("console.log"),
            };
            let launch = gang_qemu::args::launch(
                &domain,
                &paths,
                &gang_qemu::args::LaunchOptions {
                    domid: number,
                    accel: self.accel,
                    run_as: None,
                },
            )
            .context("QEMU's command line")?;
            let mut argv = vec![launch.binary.display().to_string()];
            argv.extend(launch.args.iter().map(|a| a.to_string_lossy().into_owned()));
            let log = dir.join("qemu.log");
            let child = gang_toolstack::process::spawn(
                &gang_toolstack::process::Program::Argv(argv),
                &log,
                &[],
                &cpus,
                None,
            )
            .context("starting QEMU")?;
            let mut qemu = Qemu {
                child,
                qmp: None,
                log,
            };
            let qmp = Qmp::connect(&paths.qmp_socket, Duration::from_secs(20));
            let mut qmp = match qmp {
                Ok(q) => q,
                Err(e) => bail!(
                    "guest {number}: {e}{}",
                    qemu.ended().map_or(String::new(), |w| format!(" ({w})"))
                ),
            };
            let tids = qmp
                .vcpu_threads()
                .with_context(|| format!("guest {number}: its vCPU threads"))?;
            if tids.len() != GUEST_VCPUS as usize {
                bail!(
                    "guest {number}: QEMU reports {} vCPU threads, not {GUEST_VCPUS}",
                    tids.len()
                );
            }
            qemu.qmp = Some(qmp);
            guests.push(Guest {
                number,
                qemu,
                tids,
                console: ConsoleTail::new(paths.console_log),
                running: false,
            });
        }
        for g in &mut guests {
            g.set_running(true)?;
        }
        let booted = self.wait(&mut guests, started + BOOT_TIMEOUT, |gs| {
            gs.iter()
                .all(|g| !g.console.rates_after(workload, 0).is_empty())
        })?;
        if !booted {
            let late = guests
                .iter()
                .find(|g| g.console.rates_after(workload, 0).is_empty());
            if let Some(g) = late {
                bail!(
                    "guest {} did not report its {} workload within {} s; its console's last lines:\n{}",
                    g.number,
                    workload.name(),
                    BOOT_TIMEOUT / 1_000_000_000,
                    g.console.tail(10)
                );
            }
        }
        for g in &guests {
            let cpus = g.console.lines.iter().find_map(|(_, l)| parse_up(l));
            if cpus != Some(GUEST_VCPUS) {
                bail!(
                    "guest {} reports {cpus:?} CPUs, not {GUEST_VCPUS}",
                    g.number
                );
            }
        }
        let secs = (sys::monotonic_ns() - started) as f64 / 1e9;
        (self.progress)(&format!(
            "{}: {count} guests up and running their workload after {secs:.1} s",
            workload.name()
        ));
        Ok((guests, secs))
    }

    /// One phase on guests `1..=n` (`kind`: alone, linux or gang).
    fn phase(
        &mut self,
        guests: &mut [Guest],
        workload: GuestWorkload,
        kind: &str,
        n: u32,
    ) -> Result<(Phase, PhaseDetail)> {
        let n_usize = n as usize;
        for g in guests[n_usize..].iter_mut() {
            g.set_running(false)?;
        }
        let runtime = if kind == "gang" {
            Some(self.adopt(&guests[..n_usize])?)
        } else {
            None
        };
        let active = &mut guests[..n_usize];
        for g in active.iter_mut() {
            g.set_running(true)?;
        }
        let changed = sys::monotonic_ns();
        // The first report after the change covers time before it.
        let skipped = self.wait(active, changed + SKIP_TIMEOUT, |gs| {
            gs.iter()
                .all(|g| g.console.rates_after(workload, changed).len() >= SKIP_REPORTS)
        })?;
        if !skipped {
            (self.progress)(&format!(
                "  warning: not every guest reported within {} s of the phase's start",
                SKIP_TIMEOUT / 1_000_000_000
            ));
        }
        let mut pids = vec![std::process::id()];
        pids.extend(guests.iter().map(|g| g.qemu.child.id()));
        let before = cpu_ticks(&pids);
        let active = &mut guests[..n_usize];
        let from = sys::monotonic_ns();
        let to = from + self.opts.duration;
        self.wait(active, to, |_| false)?;
        let load = before
            .zip(cpu_ticks(&pids))
            .and_then(|(a, b)| load_between(a, b));
        // A guest starved of CPU may report late: give it a little longer.
        let late = to + LATE_REPORT;
        self.wait(active, late, |gs| {
            gs.iter()
                .all(|g| !g.console.rates_after(workload, from).is_empty())
        })?;
        let mut rates = Vec::new();
        let mut samples = Vec::new();
        for g in active.iter() {
            let reports = g.console.rates_after(workload, from);
            let mut inside: Vec<u64> = reports
                .iter()
                .filter(|&&(t, _)| t <= to)
                .map(|&(_, r)| r)
                .collect();
            let rate = window_rate(&reports, from, to).or_else(|| {
                let &(_, first) = reports.first()?;
                inside.push(first);
                Some(first as f64)
            });
            samples.push(inside);
            if rate.is_none() {
                (self.progress)(&format!(
                    "  warning: guest {} gave no report in the window: counted as 0",
                    g.number
                ));
            }
            rates.push(rate.unwrap_or(0.0));
        }
        let mut phase = Phase::rates(kind, n, rates);
        if let Some((runtime, state)) = runtime {
            let epoch = runtime.clock().epoch();
            let report = runtime.stop();
            let _ = std::fs::remove_dir_all(&state);
            let window = (from.saturating_sub(epoch), to.saturating_sub(epoch));
            phase.gate_violations = report.violations.len();
            phase.switch_late_ns = Some(Spread::of(
                report
                    .switches
                    .iter()
                    .filter(|s| s.at >= window.0 && s.at < window.1)
                    .map(|s| s.late as f64)
                    .collect(),
            ));
        }
        let detail = PhaseDetail {
            reports: samples,
            others_cpu: load.map(|l| l.0),
            steal: load.map(|l| l.1),
        };
        Ok((phase, detail))
    }

    /// A gang runtime on [`CPUS`], shared with the host, with `guests`'
    /// vCPU threads adopted as best-effort domains of equal weight.
    fn adopt(&mut self, guests: &[Guest]) -> Result<(Runtime, PathBuf)> {
        self.runtimes += 1;
        let state = self.dir.join(format!("runtime-{}", self.runtimes));
        std::fs::create_dir_all(&state).with_context(|| format!("{}", state.display()))?;
        let defaults = BenchConfig::default();
        let mut pool = PoolConfig::new(CPUS.iter().copied().collect());
        pool.grain = defaults.grain;
        pool.be_slice = defaults.be_slice;
        let mut config = RuntimeConfig::new(pool);
        config.state_dir = Some(state.clone());
        let runtime = Runtime::start(config).context("starting the gang runtime")?;
        for g in guests {
            let spec = DomainSpec {
                id: DomainId(g.number),
                vcpus: GUEST_VCPUS,
                cpu_map: Some(CPUS.to_vec()),
                policy: Policy::BestEffort {
                    weight: 256,
                    space_filling: false,
                },
            };
            runtime
                .adopt_domain(spec, &g.tids, false)
                .with_context(|| format!("adopting guest {}'s vCPU threads", g.number))?;
        }
        Ok((runtime, state))
    }
}

/// Looks `name` up on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs the benchmark; `progress` gets a line at every step.
pub fn run(opts: &Options, progress: &mut dyn FnMut(&str)) -> Result<Report> {
    if opts.guests.is_empty() || opts.guests.contains(&0) {
        bail!("--guests: give guest counts of at least 1");
    }
    if opts.workloads.is_empty() {
        bail!("--workloads: give at least one workload");
    }
    if opts.duration < 1_000 * MS {
        bail!("--duration: at least 1s (the guests report once a second)");
    }
    if !sys::is_root() {
        bail!("needs root: the gang runtime uses real-time priorities and freezer cgroups");
    }
    let online = gang_host::cgroup::online_cpus().context("the online CPUs")?;
    if let Some(cpu) = CPUS.iter().find(|&&c| !online.contains(c)) {
        bail!("CPU {cpu} is not online: the guests run on CPUs {CPUS:?}");
    }
    gang_host::cgroup::share_layout_for_this_process();
    let binary = gang_qemu::args::DEFAULT_BINARY;
    if on_path(binary).is_none() {
        bail!("{binary} not found on PATH (Debian's package: qemu-system-x86)");
    }
    progress("the Linux guest image (built on first use with apt-get)");
    let image = gang_qemu::image::cached_test_image().context("the Linux guest image")?;
    let choice = gang_qemu::accel::choose(opts.accel).context("the accelerator")?;
    progress(&format!(
        "accelerator {}: {}",
        choice.accelerator, choice.reason
    ));
    let accel = match choice.accelerator {
        Accelerator::Kvm => gang_qemu::args::Accel::Kvm,
        Accelerator::Tcg => gang_qemu::args::Accel::Tcg,
    };
    let dir = TempDir(std::env::temp_dir().join(format!("gang-bench-vm-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).with_context(|| format!("{}", dir.0.display()))?;
    let mut bench = Bench {
        opts,
        image,
        accel,
        dir: dir.0.clone(),
        signals: Signals::catch()?,
        progress,
        runtimes: 0,
    };
    let count = opts.guests.iter().copied().max().unwrap_or(1);
    let rounds = opts.repeat.max(1);
    let secs = opts.duration as f64 / 1e9;
    let mut noise = Vec::new();
    let mut workloads = Vec::new();
    let mut table = Vec::new();
    for &workload in &opts.workloads {
        let (mut guests, boot_s) = bench.boot(workload, count)?;
        let mut phases = Vec::new();
        let mut details = Vec::new();
        let mut record = |(phase, detail)| {
            phases.push(phase);
            details.push(detail);
        };
        for r in 1..=rounds {
            let tag = format!("[{} {r}/{rounds}]", workload.name());
            (bench.progress)(&format!(
                "{tag} noise: every guest stopped, a spinning FIFO thread on each CPU, {:.1} s",
                hostbench::NOISE_WINDOW as f64 / 1e9
            ));
            for g in &mut guests {
                g.set_running(false)?;
            }
            noise.extend(
                hostbench::measure_noise(
                    &CPUS,
                    gang_host::runtime::DISPATCHER_PRIORITY,
                    hostbench::NOISE_WINDOW,
                )
                .context("measuring the host's noise")?,
            );
            (bench.progress)(&format!(
                "{tag} alone: guest 1, Linux scheduler, {secs:.1} s"
            ));
            record(bench.phase(&mut guests, workload, "alone", 1)?);
            for &n in &opts.guests {
                (bench.progress)(&format!(
                    "{tag} linux: {n} guests, Linux scheduler, {secs:.1} s"
                ));
                record(bench.phase(&mut guests, workload, "linux", n)?);
                (bench.progress)(&format!(
                    "{tag} gang: {n} guests adopted, best-effort equal weights, {secs:.1} s"
                ));
                record(bench.phase(&mut guests, workload, "gang", n)?);
            }
        }
        drop(guests);
        let runs = WorkloadRuns {
            workload: workload.name().into(),
            unit: workload.unit().into(),
            boot_s,
            phases,
            details,
        };
        table.extend(rows(&runs, &opts.guests));
        workloads.push(runs);
    }
    Ok(Report {
        accelerator: choice.accelerator.to_string(),
        accel_reason: choice.reason,
        kernel: bench.image.kernel_version.clone(),
        cpus: CPUS.to_vec(),
        guest_vcpus: GUEST_VCPUS,
        guest_memory_mb: GUEST_MEMORY_MB,
        duration_ns: opts.duration,
        skipped_reports: SKIP_REPORTS,
        repeat: rounds,
        workloads,
        rows: table,
        noise,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_reports_are_parsed_for_their_workload_only() {
        let b = GuestWorkload::Barrier;
        let p = GuestWorkload::Pipes;
        assert_eq!(
            parse_rate("gang-guest: barrier 91234 rounds/s", b),
            Some(91234)
        );
        assert_eq!(parse_rate("gang-guest: barrier 7 rounds/s\r", b), Some(7));
        // After kernel noise on the same line.
        assert_eq!(
            parse_rate("[   12.3] x gang-guest: pipes 40000 msgs/s", p),
            Some(40000)
        );
        assert_eq!(parse_rate("gang-guest: pipes 40000 msgs/s", b), None);
        assert_eq!(
            parse_rate("gang-guest: barrier started, 2 threads", b),
            None
        );
        assert_eq!(parse_rate("gang-guest: barrier 12 msgs/s", b), None);
        assert_eq!(parse_rate("gang-guest: barrier -3 rounds/s", b), None);
        assert_eq!(parse_rate("gang-guest: barrier 3 rounds/s and", b), None);
        assert_eq!(parse_rate("barrier 3 rounds/s", b), None);
        assert_eq!(parse_rate("gang-guest: barrier 4 rounds/s", b), Some(4));
        assert_eq!("pipes".parse::<GuestWorkload>(), Ok(p));
        assert!("shell".parse::<GuestWorkload>().is_err());
    }

    #[test]
    fn up_lines_give_the_cpu_count() {
        assert_eq!(parse_up("gang-guest: up, 2 cpus"), Some(2));
        assert_eq!(parse_up("gang-guest: up, 2 cpus\r"), Some(2));
        assert_eq!(parse_up("gang-guest: up, many cpus"), None);
        assert_eq!(parse_up("gang-guest: workload barrier"), None);
    }

    #[test]
    fn the_console_is_read_in_lines_as_it_grows() {
        let dir = std::env::temp_dir().join(format!("gang-benchqemu-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let _cleanup = TempDir(dir.clone());
        let path = dir.join("console.log");
        let mut tail = ConsoleTail::new(path.clone());
        tail.poll().expect("no file yet is no line");
        assert!(tail.lines.is_empty());
        std::fs::write(
            &path,
            "boot\r\ngang-guest: up, 2 cpus\r\ngang-guest: barrier 5",
        )
        .expect("w");
        tail.poll().expect("poll");
        assert_eq!(tail.lines.len(), 2);
        let t0 = tail.lines[1].0;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        std::io::Write::write_all(&mut f, b" rounds/s\r\ngang-guest: barrier 6 rounds/s\n")
            .expect("append");
        tail.poll().expect("poll");
        let rates: Vec<u64> = tail
            .rates_after(GuestWorkload::Barrier, 0)
            .iter()
            .map(|&(_, r)| r)
            .collect();
        assert_eq!(rates, vec![5, 6]);
        assert!(tail.rates_after(GuestWorkload::Barrier, t0).len() <= 2);
        assert_eq!(tail.tail(1), "gang-guest: barrier 6 rounds/s");
        assert_eq!(
            tail.lines.iter().find_map(|(_, l)| parse_up(l)),
            Some(2),
            "the up line"
        );
    }

    #[test]
    fn a_guest_rate_is_the_median_of_its_reports_in_the_window() {
        let reports = [(10, 1), (20, 100), (30, 300), (40, 200), (50, 9000)];
        // (10, 50]: 100, 300, 200, 9000 -> the upper middle, as Spread's p50.
        assert_eq!(window_rate(&reports, 10, 50), Some(300.0));
        assert_eq!(window_rate(&reports, 10, 40), Some(200.0));
        assert_eq!(window_rate(&reports, 50, 90), None);
    }

    #[test]
    fn cpu_time_is_read_from_proc() {
        let stat = "cpu  9 9 9 9 9 9 9 9 0 0\n\
                    cpu0 100 1 20 500 5 2 3 7 0 0\n\
                    cpu1 200 0 10 400 0 0 0 3 0 0\n\
                    cpu2 999 0 0 0 0 0 0 0 0 0\n";
        // busy: 126 + 210; steal 10; total 638 + 613.
        assert_eq!(parse_proc_stat(stat, &[0, 1]), Some((336, 10, 1251)));
        assert_eq!(parse_proc_stat(stat, &[3]), None);
        let pid = "42 (qemu (x) y) S 1 42 42 0 -1 4194304 100 0 0 0 150 25 0 0 20 0 9 0";
        let ticks = |text| gang_host::proc::Stat::parse(text).map(|s| s.cpu_ticks());
        assert_eq!(ticks(pid), Some(175));
        assert_eq!(ticks("42 (q"), None);
        let a = CpuTicks {
            busy: 100,
            steal: 0,
            total: 1000,
            ours: 50,
        };
        let b = CpuTicks {
            busy: 700,
            steal: 20,
            total: 2000,
            ours: 450,
        };
        assert_eq!(load_between(a, b), Some((0.2, 0.02)));
        assert_eq!(load_between(b, b), None);
    }

    #[test]
    fn the_load_line_gives_medians_per_phase() {
        let mut w = runs(vec![
            Phase::rates("alone", 1, vec![1.0]),
            Phase::rates("gang", 2, vec![1.0, 1.0]),
            Phase::rates("alone", 1, vec![1.0]),
            Phase::rates("gang", 2, vec![1.0, 1.0]),
            Phase::rates("alone", 1, vec![1.0]),
        ]);
        let d = |o: f64| PhaseDetail {
            others_cpu: Some(o),
            steal: Some(0.01),
            ..PhaseDetail::default()
        };
        w.details = vec![d(0.1), d(0.02), d(0.5), d(0.04), d(0.3)];
        assert_eq!(
            load_summary(&w),
            "barrier: other processes' share of CPUs 0-1 during the windows, median: \
             alone 30% (steal 1%), gang 2 4% (steal 1%)\n"
        );
        w.details = vec![PhaseDetail::default(); 5];
        assert_eq!(load_summary(&w), "");
    }

    fn runs(phases: Vec<Phase>) -> WorkloadRuns {
        WorkloadRuns {
            workload: "barrier".into(),
            unit: "rounds/s".into(),
            boot_s: 3.0,
            phases,
            details: Vec::new(),
        }
    }

    #[test]
    fn rows_take_the_median_run_of_each_phase_and_compare_sums() {
        let mut phases = Vec::new();
        for (alone, linux, gang) in [
            (200.0, [10.0, 30.0], [95.0, 90.0]),
            (220.0, [1.0, 2.0], [91.0, 93.0]),
            (260.0, [25.0, 27.0], [80.0, 85.0]),
        ] {
            phases.push(Phase::rates("alone", 1, vec![alone]));
            phases.push(Phase::rates("linux", 2, linux.to_vec()));
            phases.push(Phase {
                gate_violations: 1,
                ..Phase::rates("gang", 2, gang.to_vec())
            });
        }
        let rows = rows(&runs(phases), &[2]);
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!((r.guests, r.alone), (2, 220.0));
        // Linux sums 40, 3, 52: the median run is the first.
        assert_eq!((r.linux, r.linux_guests), (40.0, (10.0, 30.0)));
        // gang sums 185, 184, 165: the median run is the second.
        assert_eq!((r.gang, r.gang_guests), (184.0, (91.0, 93.0)));
        assert_eq!(r.gang_vs_linux, Some(184.0 / 40.0));
        assert_eq!(r.ideal_pct, Some(184.0 / 220.0 * 100.0));
        assert_eq!(r.gate_violations, 3);
    }

    #[test]
    fn missing_phases_give_no_ratio_and_the_table_says_so() {
        let phases = vec![
            Phase::rates("alone", 1, vec![0.0]),
            Phase::rates("gang", 3, vec![1.0, 2.0, 3.0]),
        ];
        let rows = rows(&runs(phases), &[3]);
        let r = &rows[0];
        assert_eq!((r.linux, r.gang, r.gang_guests), (0.0, 6.0, (1.0, 3.0)));
        assert_eq!((r.gang_vs_linux, r.ideal_pct), (None, None));
        let report = Report {
            accelerator: "tcg".into(),
            accel_reason: "because".into(),
            kernel: "6.1".into(),
            cpus: CPUS.to_vec(),
            guest_vcpus: 2,
            guest_memory_mb: 256,
            duration_ns: 8_000 * MS,
            skipped_reports: 1,
            repeat: 1,
            workloads: Vec::new(),
            rows,
            noise: Vec::new(),
        };
        let table = render(&report);
        assert!(table.contains("accelerator tcg: because"), "{table}");
        let line = table
            .lines()
            .find(|l| l.starts_with("barrier"))
            .expect("a row");
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cols,
            ["barrier", "rounds/s", "3", "0", "0", "(0..0)", "6", "(1..3)", "-", "-"]
        );
    }
}
