//! Running `gang bench-vm --qemu`: booting the guests (QEMU with `-S`,
//! vCPU threads from QMP), every phase on them, their consoles read as they
//! grow; see the [module](super) for what is measured.
//!
//! Invariants: every QEMU is a [`Qemu`] guard (QMP `quit`, then SIGKILL,
//! then wait), every runtime is stopped and gives its threads back, and
//! SIGINT, SIGTERM and SIGHUP end the run through the same path.

use std::fs::File;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use gang_core::{CpuSet, DomainId, DomainSpec, Nanos, Policy, PoolConfig, MS};
use gang_host::runtime::{Runtime, RuntimeConfig};
use gang_host::slot_stats::Spread;
use gang_host::sys;
use gang_qemu::accel::Accelerator;
use gang_qemu::qmp::Qmp;

use super::*;
use crate::noise::{measure_noise, NOISE_WINDOW};
use crate::report::Phase;
use crate::signals::Signals;
use crate::BenchConfig;

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
            gang_host::best_effort("bench clean-up: asking QEMU to quit", qmp.quit());
        }
        let deadline = sys::monotonic_ns() + QUIT_TIMEOUT;
        while matches!(self.child.try_wait(), Ok(None)) && sys::monotonic_ns() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        gang_host::best_effort("bench clean-up: killing QEMU", self.child.kill());
        gang_host::best_effort("bench clean-up: waiting for QEMU", self.child.wait());
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

/// A directory removed, with what is in it, when dropped.
#[derive(Debug)]
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        gang_host::best_effort(
            "bench clean-up: removing its state directory",
            std::fs::remove_dir_all(&self.0),
        );
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
            gang_host::best_effort(
                "bench clean-up: removing its state directory",
                std::fs::remove_dir_all(&state),
            );
            let window = (from.saturating_sub(epoch), to.saturating_sub(epoch));
            phase.gate_violations = report.violations.len();
            phase.switch_late_ns = Some(gang_host::slot_stats::switch_lateness(
                &report.switches,
                window,
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
        signals: Signals::catch().context("catching signals")?,
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
                NOISE_WINDOW as f64 / 1e9
            ));
            for g in &mut guests {
                g.set_running(false)?;
            }
            noise.extend(
                measure_noise(&CPUS, gang_host::runtime::DISPATCHER_PRIORITY, NOISE_WINDOW)
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
}
