//! `gang bench`: the gang runtime against the Linux scheduler, side by side
//! on the same CPUs in one run.
//!
//! Phases, each `duration` long, on the same CPUs:
//! - *alone*: one spin-barrier domain (one vCPU per CPU), no runtime: the
//!   ideal;
//! - *linux N*: N such domains, threads pinned to the same CPUs, scheduled by
//!   Linux (SCHED_OTHER), no runtime;
//! - *gang BE N*: the same N domains under the runtime, best-effort with
//!   equal weights;
//! - *gang TT N*: the same N domains under the runtime with time-triggered
//!   slots (period `N·tt_slot`, active the largest whole number of grains
//!   that keeps the 10% BE reservation);
//! - *program-alone*, *program-linux N*, *gang-program N* (with
//!   [`BenchConfig::spawn_program`], shared CPUs): whole unmodified programs
//!   (`gang workload program`: a sleeping main thread and one spin-barrier
//!   worker per CPU, all named alike, nothing pinned), one alone and N under
//!   Linux with the pool's CPUs as their affinity, and N each in a freezer
//!   cgroup adopted as a group (`group`), best-effort with equal weights.
//!
//! From the gate traces: co-start skew (first to last vCPU of a gang passing
//! its gate in the same slot), and for TT the time received per period ÷
//! `active`. From the kernel: CPU efficiency (the vCPU threads' CPU time over
//! the window, from `schedstat`, ÷ pool CPU time; the traces' slot time is
//! kept in the JSON as `efficiency`, and overstates it by the time
//! dispatchers preempt running vCPUs).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use gang_core::{
    CpuId, CpuSet, DomainId, DomainSpec, Nanos, Periodic, Policy, PoolConfig, VcpuRef, MS,
};

use crate::clock::Clock;
use crate::gate::SlotRun;
use crate::runtime::{HostError, Isolation, Runtime, RuntimeConfig};
use crate::sys::{self, SchedPolicy};
use crate::workload::{self, DomainState, VcpuEnv, Workload};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The CPUs (one vCPU of each domain per CPU).
    pub cpus: Vec<CpuId>,
    /// Domain counts to compare.
    pub counts: Vec<u32>,
    /// Length of each phase.
    pub duration: Nanos,
    /// Spin-barrier work per round.
    pub work: Nanos,
    /// Pool grain.
    pub grain: Nanos,
    /// BE slice.
    pub be_slice: Nanos,
    /// TT slot per domain (the TT period is `count × tt_slot`).
    pub tt_slot: Nanos,
    /// Rounds of all phases, interleaved; the table shows medians.
    pub repeat: u32,
    /// Starts a process running a spin-barrier domain of `threads` threads
    /// (`work`, for `duration`) that announces its thread ids and records
    /// its resumptions, as `gang workload spin-barrier --json --resume-gap`
    /// does. With it, the `gang-adopt` phases adopt such processes.
    pub spawn_spinner: Option<SpawnSpinner>,
    /// Starts a whole program (`gang workload program --json`: a sleeping
    /// main thread and `workers` spin-barrier workers doing `work`, for
    /// `duration`, announcing its pid and reporting its rounds). With it
    /// (and shared CPUs), the `program-alone`, `program-linux` and
    /// `gang-program` phases run.
    pub spawn_program: Option<SpawnProgram>,
    /// Shared CPUs (a host slot on each) or exclusive ones (taken from the
    /// host with a cpuset shield for each phase, no host slot; the host
    /// must keep at least one CPU).
    pub isolation: Isolation,
    /// Lift the kernel's real-time limit during gang phases and give the
    /// host a 1% slot instead of 8% (`rtlimit`).
    pub lift_rt_limit: bool,
    /// A fixed dispatcher spin before each switch (`None`: the runtime's
    /// default, learnt from the measured wake-up latency; see
    /// `clock::SpinTuner`).
    pub spin: Option<Nanos>,
}

/// See [`BenchConfig::spawn_program`].
pub type SpawnProgram =
    fn(workers: u32, work: Nanos, duration: Nanos) -> std::io::Result<std::process::Child>;

/// See [`BenchConfig::spawn_spinner`].
pub type SpawnSpinner =
    fn(threads: u32, work: Nanos, duration: Nanos) -> std::io::Result<std::process::Child>;

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            cpus: vec![0, 1],
            counts: vec![2, 3],
            duration: 2_000 * MS,
            work: 1_000,
            grain: MS,
            be_slice: 10 * MS,
            tt_slot: 10 * MS,
            repeat: 3,
            spawn_spinner: None,
            spawn_program: None,
            isolation: Isolation::Shared,
            lift_rt_limit: false,
            spin: None,
        }
    }
}

/// Percentiles of a sample, in ns.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Spread {
    /// Number of samples.
    pub n: usize,
    /// 1st percentile.
    pub p1: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

impl Spread {
    /// Percentiles of `xs` (empty: all zero).
    pub fn of(mut xs: Vec<f64>) -> Spread {
        if xs.is_empty() {
            return Spread::default();
        }
        xs.sort_by(f64::total_cmp);
        let at = |q: f64| xs[((xs.len() - 1) as f64 * q).round() as usize];
        Spread {
            n: xs.len(),
            p1: at(0.01),
            p50: at(0.5),
            p99: at(0.99),
            max: xs[xs.len() - 1],
        }
    }
}

/// The result of one phase.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Phase {
    /// `alone`, `linux`, `gang-be` or `gang-tt`.
    pub kind: String,
    /// Number of domains.
    pub domains: u32,
    /// Barrier rounds per second, per domain.
    pub rounds_per_s: Vec<f64>,
    /// Co-start skew of gangs, ns (gang phases).
    pub skew_ns: Option<Spread>,
    /// Time vCPUs held their slots (gate open to gate closed, from the
    /// gate traces) ÷ pool CPU time (gang phases). Counts the time a
    /// dispatcher preempts a running vCPU (its spin before a switch, its
    /// wake-ups) as run time: see `cpu_efficiency`.
    pub efficiency: Option<f64>,
    /// The vCPU threads' CPU time from the kernel (`schedstat`) over the
    /// window ÷ pool CPU time: what the domains really got (gang phases).
    pub cpu_efficiency: Option<f64>,
    /// `cpu_efficiency` ÷ the pool CPU time left to gangs (without the host
    /// slot): the dispatch overhead alone.
    pub gang_efficiency: Option<f64>,
    /// TT: received ÷ active per period.
    pub tt_accuracy: Option<Spread>,
    /// Switches made and their lateness, ns (gang phases).
    pub switch_late_ns: Option<Spread>,
    /// From a slot's boundary to each vCPU passing its gate, ns.
    pub start_delay_ns: Option<Spread>,
    /// vCPUs that ignored their gate (must be zero).
    pub gate_violations: usize,
}

impl Phase {
    /// A phase that measured only rates (the others are added by the
    /// caller with struct update syntax).
    pub fn rates(kind: &str, domains: u32, rounds_per_s: Vec<f64>) -> Phase {
        Phase {
            kind: kind.to_string(),
            domains,
            rounds_per_s,
            skew_ns: None,
            efficiency: None,
            cpu_efficiency: None,
            gang_efficiency: None,
            tt_accuracy: None,
            switch_late_ns: None,
            start_delay_ns: None,
            gate_violations: 0,
        }
    }

    /// Mean rounds per second over the domains.
    pub fn mean_rate(&self) -> f64 {
        self.rounds_per_s.iter().sum::<f64>() / self.rounds_per_s.len().max(1) as f64
    }
}

/// The whole run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// Isolation mode used.
    pub isolation: Isolation,
    /// The CPUs.
    pub cpus: Vec<CpuId>,
    /// Phase length, ns.
    pub duration_ns: Nanos,
    /// Spin-barrier work per round, ns.
    pub work_ns: Nanos,
    /// Calibrated loop iterations per µs.
    pub iterations_per_us: u64,
    /// The phases in the order run.
    pub phases: Vec<Phase>,
    /// The host's own interruptions of the pool CPUs, measured once per
    /// round (see [`Noise`]).
    pub noise: Vec<Noise>,
}

/// How often the host takes a pool CPU away from a real-time thread that
/// never sleeps (interrupts, kernel threads of higher class, and on a
/// virtual machine the hypervisor running something else): a spinning
/// SCHED_FIFO thread at the dispatchers' priority on each CPU reads the
/// clock in a loop and counts the gaps. A gang's co-start skew cannot be
/// smaller than such a gap when one lands on one of its CPUs at a slot's
/// start, so this is the floor under the skew's tail, measured in the same
/// run.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Noise {
    /// The CPU.
    pub cpu: CpuId,
    /// How long the thread spun, ns.
    pub window_ns: Nanos,
    /// Gaps longer than 10 µs, per second.
    pub over_10us_per_s: f64,
    /// Gaps longer than 20 µs, per second.
    pub over_20us_per_s: f64,
    /// Gaps longer than 50 µs, per second.
    pub over_50us_per_s: f64,
    /// Gaps longer than 100 µs, per second.
    pub over_100us_per_s: f64,
    /// The longest gap, ns.
    pub longest_ns: Nanos,
    /// The share of the window lost in gaps longer than 2 µs.
    pub lost: f64,
}

/// How long each round's noise measurement spins (well within the kernel's
/// real-time limit of 950 ms per second).
pub const NOISE_WINDOW: Nanos = 300 * MS;

/// Measures [`Noise`] on every CPU of `cpus` at once, for `window`.
pub fn measure_noise(
    cpus: &[CpuId],
    priority: i32,
    window: Nanos,
) -> Result<Vec<Noise>, HostError> {
    let start = sys::monotonic_ns() + 5 * MS;
    let threads: Vec<_> = cpus
        .iter()
        .map(|&cpu| {
            std::thread::spawn(move || -> Result<Noise, HostError> {
                sys::set_affinity(0, &[cpu]).map_err(|e| HostError::Sys {
                    what: format!("pinning to CPU {cpu}"),
                    source: e,
                })?;
                sys::set_policy(0, SchedPolicy::Fifo(priority)).map_err(HostError::Privilege)?;
                let end = start + window;
                let mut noise = Noise {
                    cpu,
                    window_ns: window,
                    ..Noise::default()
                };
                let mut counts = [0u64; 4];
                let mut lost = 0;
                while sys::monotonic_ns() < start {
                    std::hint::spin_loop();
                }
                let mut last = sys::monotonic_ns();
                while last < end {
                    let now = sys::monotonic_ns();
                    let gap = now - last;
                    if gap > 2_000 {
                        lost += gap;
                        for (count, limit) in
                            counts.iter_mut().zip([10_000, 20_000, 50_000, 100_000])
                        {
                            *count += u64::from(gap > limit);
                        }
                        noise.longest_ns = noise.longest_ns.max(gap);
                    }
                    last = now;
                }
                // Back to normal before the thread ends (it ends at once).
                let _ = sys::set_policy(0, SchedPolicy::Other);
                let secs = window as f64 / 1e9;
                noise.over_10us_per_s = counts[0] as f64 / secs;
                noise.over_20us_per_s = counts[1] as f64 / secs;
                noise.over_50us_per_s = counts[2] as f64 / secs;
                noise.over_100us_per_s = counts[3] as f64 / secs;
                noise.lost = lost as f64 / window as f64;
                Ok(noise)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in threads {
        out.push(t.join().map_err(|_| HostError::Sys {
            what: "measuring host noise".into(),
            source: std::io::Error::other("the measuring thread panicked"),
        })??);
    }
    Ok(out)
}

/// Runs the benchmark, calling `progress` with a line before each phase.
pub fn run(config: &BenchConfig, mut progress: impl FnMut(&str)) -> Result<BenchReport, HostError> {
    let iterations_per_us = workload::calibrate();
    let mut phases = Vec::new();
    let mut noise = Vec::new();
    let secs = config.duration as f64 / 1e9;
    let rounds = config.repeat.max(1);
    for r in 1..=rounds {
        let tag = format!("[{r}/{rounds}]");
        progress(&format!(
            "{tag} noise: a spinning FIFO thread on each CPU, {:.1}s",
            NOISE_WINDOW as f64 / 1e9
        ));
        noise.extend(measure_noise(
            &config.cpus,
            crate::runtime::DISPATCHER_PRIORITY,
            NOISE_WINDOW,
        )?);
        progress(&format!(
            "{tag} alone: 1 spin-barrier domain on CPUs {:?}, {secs:.1}s",
            config.cpus
        ));
        phases.push(linux_phase(config, 1, "alone")?);
        let program = config
            .spawn_program
            .filter(|_| config.isolation == Isolation::Shared);
        if let Some(spawn) = program {
            progress(&format!(
                "{tag} program-alone: 1 whole program, Linux scheduler, {secs:.1}s"
            ));
            phases.push(program_phase(config, 1, spawn, false)?);
        }
        for &n in &config.counts {
            progress(&format!(
                "{tag} linux: {n} domains, Linux scheduler, {secs:.1}s"
            ));
            phases.push(linux_phase(config, n, "linux")?);
            progress(&format!(
                "{tag} gang-be: {n} domains, best-effort equal weights, {secs:.1}s"
            ));
            phases.push(gang_phase(config, n, false)?);
            progress(&format!(
                "{tag} gang-tt: {n} domains, time-triggered slots, {secs:.1}s"
            ));
            phases.push(gang_phase(config, n, true)?);
            if let Some(spawn) = config.spawn_spinner {
                progress(&format!(
                    "{tag} gang-adopt: {n} adopted processes, best-effort, {secs:.1}s"
                ));
                phases.push(adopt_phase(config, n, spawn)?);
            }
            if let Some(spawn) = program {
                progress(&format!(
                    "{tag} program-linux: {n} whole programs, Linux scheduler, {secs:.1}s"
                ));
                phases.push(program_phase(config, n, spawn, false)?);
                progress(&format!(
                    "{tag} gang-program: {n} whole programs adopted as groups, best-effort, {secs:.1}s"
                ));
                phases.push(program_phase(config, n, spawn, true)?);
            }
        }
    }
    Ok(BenchReport {
        isolation: config.isolation,
        cpus: config.cpus.clone(),
        duration_ns: config.duration,
        work_ns: config.work,
        iterations_per_us,
        phases,
        noise,
    })
}

fn spin(config: &BenchConfig) -> Workload {
    Workload::SpinBarrier { work: config.work }
}

/// `n` domains under Linux: pinned threads, SCHED_OTHER, no runtime.
fn linux_phase(config: &BenchConfig, n: u32, kind: &str) -> Result<Phase, HostError> {
    let clock = Clock::new(MS);
    let start = clock.now() + 20 * MS;
    let deadline = start + config.duration;
    let halt = Arc::new(AtomicBool::new(false));
    let vcpus = config.cpus.len() as u32;
    let states: Vec<Arc<DomainState>> = (0..n).map(|_| Arc::new(DomainState::default())).collect();
    let mut threads = Vec::new();
    for d in 0..n {
        for (v, &cpu) in config.cpus.iter().enumerate() {
            let env = VcpuEnv::unmanaged(
                VcpuRef {
                    domain: DomainId(d + 1),
                    vcpu: v as u32,
                },
                clock,
                deadline,
                Arc::clone(&halt),
                false,
            );
            let state = Arc::clone(&states[d as usize]);
            let w = spin(config);
            threads.push(std::thread::spawn(move || -> Result<(), HostError> {
                sys::set_affinity(0, &[cpu]).map_err(|e| HostError::Sys {
                    what: format!("pinning to CPU {cpu}"),
                    source: e,
                })?;
                sys::set_policy(0, SchedPolicy::Other).map_err(HostError::Privilege)?;
                clock.wait_until(start, 0);
                workload::run(w, &env, &state, vcpus);
                Ok(())
            }));
        }
    }
    let mut result = Ok(());
    for t in threads {
        match t.join() {
            Ok(Err(e)) if result.is_ok() => result = Err(e),
            _ => {}
        }
    }
    result?;
    let secs = config.duration as f64 / 1e9;
    Ok(Phase::rates(
        kind,
        n,
        states
            .iter()
            .map(|s| s.progress.load(Ordering::Relaxed) as f64 / secs)
            .collect(),
    ))
}

/// The runtime configuration of a phase: exclusive phases get a state
/// directory (the shield's crash record), removed by the returned guard.
fn phase_runtime_config(config: &BenchConfig, pool: PoolConfig) -> (RuntimeConfig, StateDir) {
    let mut rt = RuntimeConfig::new(pool);
    let mut dir = StateDir(None);
    if let Some(spin) = config.spin {
        rt.spin = spin;
        rt.spin_max = spin;
    }
    if config.lift_rt_limit {
        rt.lift_rt_limit = true;
        rt.host_slot = Some(crate::runtime::unlimited_host_slot_for(rt.pool.grain));
    }
    if config.isolation == Isolation::Exclusive || config.lift_rt_limit {
        rt.isolation = config.isolation;
        let path = std::env::temp_dir().join(format!(
            "gang-bench-exclusive-{}-{}",
            std::process::id(),
            STATE_DIRS.fetch_add(1, Ordering::Relaxed)
        ));
        if std::fs::create_dir_all(&path).is_ok() {
            rt.state_dir = Some(path.clone());
            dir = StateDir(Some(path));
        }
    }
    (rt, dir)
}

static STATE_DIRS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A temporary state directory, removed on drop.
struct StateDir(Option<std::path::PathBuf>);

impl Drop for StateDir {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// `n` domains under the gang runtime (BE, or TT when `tt`).
fn gang_phase(config: &BenchConfig, n: u32, tt: bool) -> Result<Phase, HostError> {
    let cpus: CpuSet = config.cpus.iter().copied().collect();
    let mut pool = PoolConfig::new(cpus);
    pool.grain = config.grain;
    pool.be_slice = config.be_slice;
    let (rt_config, _state) = phase_runtime_config(config, pool.clone());
    let host_share = rt_config
        .host_slot
        .map_or(0.0, |(p, a)| a as f64 / p as f64);
    let host_pct = rt_config
        .host_slot
        .map_or(0, |(p, a)| (a * 100).div_ceil(p));
    let runtime = Arc::new(Runtime::start(rt_config)?);
    let clock = runtime.clock();
    let vcpus = config.cpus.len() as u32;
    let period = config.tt_slot * u64::from(n);
    // The largest whole number of grains per domain that keeps the BE
    // reserve and leaves the host its slot.
    let budget = period * (100 - u64::from(pool.be_reserve_pct) - host_pct) / 100 / u64::from(n);
    let active = budget / config.grain * config.grain;
    let halt = Arc::new(AtomicBool::new(false));
    let states: Vec<Arc<DomainState>> = (0..n).map(|_| Arc::new(DomainState::default())).collect();
    let start = clock.now() + 50 * MS;
    let deadline = start + config.duration;
    let mut threads = Vec::new();
    let mut controls = Vec::new();
    for d in 0..n {
        let id = DomainId(d + 1);
        let policy = if tt {
            Policy::TimeTriggered {
                timing: Periodic {
                    from: 0,
                    period,
                    active,
                },
                space_filling: false,
                exact: false,
            }
        } else {
            Policy::BestEffort {
                weight: 256,
                space_filling: false,
            }
        };
        let spec = DomainSpec {
            id,
            vcpus,
            cpu_map: Some(config.cpus.clone()),
            policy,
        };
        let ctls = runtime.add_domain(spec, false)?;
        for ctl in &ctls {
            let env = VcpuEnv {
                control: Arc::clone(ctl),
                clock,
                log: None,
                deadline,
                halt: Arc::clone(&halt),
            };
            let state = Arc::clone(&states[d as usize]);
            let rt = Arc::clone(&runtime);
            let w = spin(config);
            let vcpu = ctl.vcpu;
            threads.push(std::thread::spawn(move || -> Result<(), HostError> {
                env.control.attach_current_thread();
                let prepared = rt.prepare_vcpu_thread(vcpu);
                drop(rt);
                prepared?;
                workload::run(w, &env, &state, vcpus);
                Ok(())
            }));
        }
        controls.extend(ctls);
    }
    // The vCPU threads' CPU time from the kernel, over the window less its
    // last 50 ms (threads end at the deadline, and an ended thread's CPU
    // time can no longer be read).
    clock.wait_until(start, 0);
    let first = cpu_time_of(&controls, clock);
    clock.wait_until(deadline.saturating_sub(50 * MS).max(start), 0);
    let last = cpu_time_of(&controls, clock);
    let cpu_efficiency = (last.0 > first.0).then(|| {
        (last.1.saturating_sub(first.1)) as f64
            / ((last.0 - first.0) as f64 * config.cpus.len() as f64)
    });
    // Let the threads run until the deadline, then stop everything.
    clock.wait_until(deadline + 5 * MS, 0);
    halt.store(true, Ordering::Release);
    for c in &controls {
        c.stop();
    }
    let mut result = Ok(());
    for t in threads {
        match t.join() {
            Ok(Err(e)) if result.is_ok() => result = Err(e),
            _ => {}
        }
    }
    let report = match Arc::try_unwrap(runtime) {
        Ok(rt) => rt.stop(),
        Err(_) => Default::default(),
    };
    result?;
    let traces: Vec<(VcpuRef, Vec<SlotRun>)> =
        controls.iter().map(|c| (c.vcpu, c.trace())).collect();
    let window = (start, deadline);
    let secs = config.duration as f64 / 1e9;
    Ok(Phase {
        kind: if tt { "gang-tt" } else { "gang-be" }.to_string(),
        domains: n,
        rounds_per_s: states
            .iter()
            .map(|s| s.progress.load(Ordering::Relaxed) as f64 / secs)
            .collect(),
        skew_ns: Some(co_start_skew(&traces, window)),
        efficiency: Some(efficiency(&traces, window, config.cpus.len())),
        cpu_efficiency,
        gang_efficiency: cpu_efficiency.map(|e| e / (1.0 - host_share)),
        tt_accuracy: tt.then(|| tt_accuracy(&traces, window, period, active, n)),
        switch_late_ns: Some(Spread::of(
            report
                .switches
                .iter()
                .filter(|s| s.at >= window.0 && s.at < window.1)
                .map(|s| s.late as f64)
                .collect(),
        )),
        start_delay_ns: Some(Spread::of(
            traces
                .iter()
                .flat_map(|(_, runs)| runs.iter())
                .filter(|r| r.slot >= window.0 && r.slot < window.1 && r.start >= r.slot)
                .map(|r| (r.start - r.slot) as f64)
                .collect(),
        )),
        gate_violations: report.violations.len(),
    })
}

/// `n` processes (spin-barrier domains, one thread per CPU) adopted by the
/// runtime as best-effort domains: rounds/s from their progress reports
/// within the managed window, co-start skew from their resumptions.
fn adopt_phase(config: &BenchConfig, n: u32, spawn: SpawnSpinner) -> Result<Phase, HostError> {
    use std::io::{BufRead, BufReader};
    let io = |what: &str, e: std::io::Error| HostError::Sys {
        what: what.to_string(),
        source: e,
    };
    let cpus: CpuSet = config.cpus.iter().copied().collect();
    let mut pool = PoolConfig::new(cpus);
    pool.grain = config.grain;
    pool.be_slice = config.be_slice;
    let state = std::env::temp_dir().join(format!("gang-bench-adopt-{}", std::process::id()));
    std::fs::create_dir_all(&state).map_err(|e| io("creating a state directory", e))?;
    let (mut rt_config, _exclusive_state) = phase_runtime_config(config, pool);
    rt_config.state_dir = Some(state.clone());
    let runtime = Runtime::start(rt_config)?;
    let threads = config.cpus.len() as u32;
    let child_life = config.duration + 400 * MS;
    let mut children = Vec::new();
    let mut readers = Vec::new();
    for d in 0..n {
        let mut child = spawn(threads, config.work, child_life)
            .map_err(|e| io("starting a workload process", e))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io("reading a workload", std::io::Error::other("no stdout")))?;
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let hello: serde_json::Value = serde_json::from_str(&first).unwrap_or_default();
        let tids: Vec<i32> = hello["tids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_i64().map(|t| t as i32))
                    .collect()
            })
            .unwrap_or_default();
        children.push(child);
        readers.push(std::thread::spawn(move || {
            lines.map_while(Result::ok).collect::<Vec<String>>()
        }));
        let spec = DomainSpec {
            id: DomainId(d + 1),
            vcpus: threads,
            cpu_map: Some(config.cpus.clone()),
            policy: Policy::BestEffort {
                weight: 256,
                space_filling: false,
            },
        };
        runtime.adopt_domain(spec, &tids, false)?;
    }
    let start = sys::monotonic_ns() + 50 * MS;
    let end = start + config.duration;
    sys::sleep_until_monotonic(end);
    for d in 0..n {
        runtime.remove_domain(DomainId(d + 1))?;
    }
    let epoch = runtime.clock().epoch();
    let report = runtime.stop();
    for c in &mut children {
        let _ = c.wait();
    }
    let _ = std::fs::remove_dir_all(&state);
    let window = (start.saturating_sub(epoch), end.saturating_sub(epoch));
    let mut rates = Vec::new();
    let mut skews = Vec::new();
    for (d, r) in readers.into_iter().enumerate() {
        let lines = r.join().unwrap_or_default();
        let values: Vec<serde_json::Value> = lines
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        rates.extend(rate_between(&values, start, end));
        let resumes: Vec<(u32, Nanos)> = values
            .iter()
            .filter_map(|v| v["resumes_monotonic_ns"].as_array().cloned())
            .flatten()
            .filter_map(|p| Some((p[0].as_u64()? as u32, p[1].as_u64()?.checked_sub(epoch)?)))
            .collect();
        skews.extend(adopted_start_skews(
            &report.switches,
            DomainId(d as u32 + 1),
            threads,
            &resumes,
            window,
        ));
    }
    Ok(Phase {
        skew_ns: Some(Spread::of(skews)),
        switch_late_ns: Some(switch_lateness(&report, epoch, start, end)),
        gate_violations: report.violations.len(),
        ..Phase::rates("gang-adopt", n, rates)
    })
}

/// Progress per second between the reports (`monotonic_ns`, `progress`, as
/// `gang workload --json` prints them) nearest to monotonic times `start`
/// and `end`.
fn rate_between(values: &[serde_json::Value], start: u64, end: u64) -> Option<f64> {
    let reports: Vec<(u64, u64)> = values
        .iter()
        .filter_map(|v| Some((v["monotonic_ns"].as_u64()?, v["progress"].as_u64()?)))
        .collect();
    let at = |t: u64| reports.iter().min_by_key(|(m, _)| m.abs_diff(t)).copied();
    let ((m0, p0), (m1, p1)) = (at(start)?, at(end)?);
    (m1 > m0).then(|| p1.saturating_sub(p0) as f64 / ((m1 - m0) as f64 / 1e9))
}

/// Whole programs started by `spawn`, killed and waited for on drop, their
/// freezer cgroups (the bench's own, as a daemon's domain cgroups would be)
/// thawed and removed.
struct Programs {
    children: Vec<std::process::Child>,
    cgroups: Vec<(crate::cgroup::Controller, std::path::PathBuf)>,
}

impl Drop for Programs {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
        }
        for (ctl, cg) in &self.cgroups {
            let _ = crate::cgroup::set_frozen(ctl, cg, false, std::time::Duration::from_secs(1));
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
        for (ctl, cg) in &self.cgroups {
            let _ = crate::cgroup::drain_and_remove(ctl, cg, &ctl.mount);
        }
    }
}

/// `n` whole programs (one barrier worker per CPU, a sleeping main thread),
/// under Linux with the pool's CPUs as their affinity, or (`gang`) each in
/// a freezer cgroup adopted as a group, best-effort with equal weights:
/// rounds/s from their reports within the window.
fn program_phase(
    config: &BenchConfig,
    n: u32,
    spawn: SpawnProgram,
    gang: bool,
) -> Result<Phase, HostError> {
    use std::io::{BufRead, BufReader};
    let io = |what: String, e: std::io::Error| HostError::Sys { what, source: e };
    let workers = config.cpus.len() as u32;
    let child_life = config.duration + 400 * MS;
    let mut programs = Programs {
        children: Vec::new(),
        cgroups: Vec::new(),
    };
    let controller = if gang {
        Some(crate::cgroup::Hierarchy::detect()?.freezer()?.clone())
    } else {
        None
    };
    let mut pids = Vec::new();
    let mut readers = Vec::new();
    for d in 0..n {
        let mut child = spawn(workers, config.work, child_life)
            .map_err(|e| io("starting a program".into(), e))?;
        let stdout = child.stdout.take();
        programs.children.push(child);
        let stdout = stdout.ok_or_else(|| {
            io(
                "reading a program".into(),
                std::io::Error::other("no stdout"),
            )
        })?;
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let hello: serde_json::Value = serde_json::from_str(&first).unwrap_or_default();
        let pid = hello["pid"].as_i64().unwrap_or(0) as i32;
        if pid <= 0 {
            return Err(io(
                "starting a program".into(),
                std::io::Error::other(format!("no pid announced: {first:?}")),
            ));
        }
        pids.push(pid);
        readers.push(std::thread::spawn(move || {
            lines.map_while(Result::ok).collect::<Vec<String>>()
        }));
        if let Some(ctl) = &controller {
            let cg = ctl
                .mount
                .join(format!("gang-bench-program-{}-{d}", std::process::id()));
            std::fs::create_dir_all(&cg)
                .map_err(|e| io(format!("creating {}", cg.display()), e))?;
            programs.cgroups.push((ctl.clone(), cg.clone()));
            let procs = cg.join("cgroup.procs");
            std::fs::write(&procs, pid.to_string())
                .map_err(|e| io(format!("writing {}", procs.display()), e))?;
        } else {
            // Linux: the pool's CPUs, like the other phases (threads born
            // later inherit it).
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
                .map_err(|e| io(format!("listing the threads of {pid}"), e))?;
            for t in tasks.flatten() {
                if let Ok(tid) = t.file_name().to_string_lossy().parse::<i32>() {
                    let _ = sys::set_affinity(tid, &config.cpus);
                }
            }
        }
    }
    let mut report = None;
    let (start, end);
    if gang {
        let cpus: CpuSet = config.cpus.iter().copied().collect();
        let mut pool = PoolConfig::new(cpus);
        pool.grain = config.grain;
        pool.be_slice = config.be_slice;
        let state = StateDir(Some(std::env::temp_dir().join(format!(
            "gang-bench-program-{}-{}",
            std::process::id(),
            STATE_DIRS.fetch_add(1, Ordering::Relaxed)
        ))));
        let dir = state.0.clone().unwrap_or_default();
        std::fs::create_dir_all(&dir).map_err(|e| io("creating a state directory".into(), e))?;
        let (mut rt_config, _exclusive_state) = phase_runtime_config(config, pool);
        rt_config.state_dir = Some(dir);
        let runtime = Runtime::start(rt_config)?;
        for (d, group) in programs.cgroups.iter().enumerate() {
            let spec = DomainSpec {
                id: DomainId(d as u32 + 1),
                vcpus: workers,
                cpu_map: Some(config.cpus.clone()),
                policy: Policy::BestEffort {
                    weight: 256,
                    space_filling: false,
                },
            };
            runtime.adopt_group_domain(spec, group.clone(), false)?;
        }
        start = sys::monotonic_ns() + 50 * MS;
        end = start + config.duration;
        sys::sleep_until_monotonic(end);
        for d in 0..n {
            runtime.remove_domain(DomainId(d + 1))?;
        }
        let epoch = runtime.clock().epoch();
        let r = runtime.stop();
        report = Some((r, epoch));
    } else {
        start = sys::monotonic_ns() + 50 * MS;
        end = start + config.duration;
        sys::sleep_until_monotonic(end);
    }
    for c in &mut programs.children {
        let _ = c.wait();
    }
    drop(programs);
    let mut rates = Vec::new();
    for r in readers {
        let lines = r.join().unwrap_or_default();
        let values: Vec<serde_json::Value> = lines
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        rates.extend(rate_between(&values, start, end));
    }
    let kind = match (gang, n) {
        (true, _) => "gang-program",
        (false, 1) => "program-alone",
        (false, _) => "program-linux",
    };
    let Some((report, epoch)) = report else {
        return Ok(Phase::rates(kind, n, rates));
    };
    Ok(Phase {
        switch_late_ns: Some(switch_lateness(&report, epoch, start, end)),
        gate_violations: report.violations.len(),
        ..Phase::rates(kind, n, rates)
    })
}

/// How late the runtime's switches were in the window [`start`, `end`)
/// (times since `epoch`).
fn switch_lateness(
    report: &crate::runtime::RuntimeReport,
    epoch: Nanos,
    start: Nanos,
    end: Nanos,
) -> Spread {
    Spread::of(
        report
            .switches
            .iter()
            .filter(|s| s.at + epoch >= start && s.at + epoch < end)
            .map(|s| s.late as f64)
            .collect(),
    )
}

/// Co-start skews of an adopted domain, from its threads' own resumption
/// times (`(vcpu, pool time)`, as `gang workload --resume-gap` records them):
/// for every slot the runtime started on all of the domain's CPUs at once
/// (from its switch log) within `window`, the first resumption of each vCPU
/// in that slot; skew = last minus first. A thread stopped for a moment
/// inside its slot by something else (an interrupt, the hypervisor) also
/// records a resumption, but that is not the start of a slot and is not
/// counted. A slot in which some vCPU records no resumption before its CPU's
/// next switch gives no sample. `switches` as the runtime reports them:
/// sorted by (CPU, time), see [`crate::runtime::held_intervals`].
pub fn adopted_start_skews(
    switches: &[crate::runtime::Switch],
    domain: DomainId,
    vcpus: u32,
    resumes: &[(u32, Nanos)],
    window: (Nanos, Nanos),
) -> Vec<f64> {
    // Slot starts: boundary -> (vcpu, until its CPU's next switch).
    let mut starts: BTreeMap<Nanos, Vec<(u32, Nanos)>> = BTreeMap::new();
    for (vcpu, _, start, end) in crate::runtime::held_intervals(switches, domain) {
        if start >= window.0 && start < window.1 {
            starts.entry(start).or_default().push((vcpu, end));
        }
    }
    let mut skews = Vec::new();
    for (b, slot) in starts {
        if slot.len() < vcpus as usize {
            continue; // not a start on every CPU of the domain
        }
        let firsts: Option<Vec<Nanos>> = slot
            .iter()
            .map(|&(v, until)| {
                resumes
                    .iter()
                    .filter(|&&(w, t)| w == v && t >= b && t < until)
                    .map(|&(_, t)| t)
                    .min()
            })
            .collect();
        if let Some(firsts) = firsts {
            let first = firsts.iter().min().copied().unwrap_or(0);
            let last = firsts.iter().max().copied().unwrap_or(0);
            skews.push((last - first) as f64);
        }
    }
    skews
}

/// For every slot of every domain: last minus first vCPU start.
pub fn co_start_skew(traces: &[(VcpuRef, Vec<SlotRun>)], window: (Nanos, Nanos)) -> Spread {
    Spread::of(co_start_skews(traces, window))
}

/// The co-start skew of every slot of every domain in `window`, ns.
pub fn co_start_skews(traces: &[(VcpuRef, Vec<SlotRun>)], window: (Nanos, Nanos)) -> Vec<f64> {
    let mut starts: BTreeMap<(DomainId, Nanos), Vec<Nanos>> = BTreeMap::new();
    for (v, runs) in traces {
        // Only the first run of each slot: later ones are resumptions after
        // a block, not slot starts.
        let mut seen = std::collections::BTreeSet::new();
        for r in runs
            .iter()
            .filter(|r| r.slot >= window.0 && r.slot < window.1)
        {
            if seen.insert(r.slot) {
                starts.entry((v.domain, r.slot)).or_default().push(r.start);
            }
        }
    }
    let vcpus_of = |d: DomainId| traces.iter().filter(|(v, _)| v.domain == d).count();
    starts
        .iter()
        .filter(|((d, _), s)| s.len() == vcpus_of(*d) && s.len() > 1)
        .map(|(_, s)| {
            (s.iter().max().copied().unwrap_or(0) - s.iter().min().copied().unwrap_or(0)) as f64
        })
        .collect()
}

/// `(now, total CPU time of the vCPU threads)`, both in ns.
fn cpu_time_of(controls: &[Arc<crate::gate::VcpuControl>], clock: Clock) -> (Nanos, Nanos) {
    let total = controls
        .iter()
        .map(|c| sys::thread_cpu_ns(std::process::id() as i32, c.tid()).unwrap_or(0))
        .sum();
    (clock.now(), total)
}

/// Time the vCPUs ran within `window` ÷ (CPUs × window length).
pub fn efficiency(traces: &[(VcpuRef, Vec<SlotRun>)], window: (Nanos, Nanos), cpus: usize) -> f64 {
    let ran: Nanos = traces
        .iter()
        .flat_map(|(_, runs)| runs.iter())
        .map(|r| r.end.min(window.1).saturating_sub(r.start.max(window.0)))
        .sum();
    ran as f64 / ((window.1 - window.0) as f64 * cpus as f64)
}

/// Per TT domain and period fully inside the window: time its gang ran
/// (the mean over its vCPUs) ÷ `active`.
pub fn tt_accuracy(
    traces: &[(VcpuRef, Vec<SlotRun>)],
    window: (Nanos, Nanos),
    period: Nanos,
    active: Nanos,
    domains: u32,
) -> Spread {
    let mut samples = Vec::new();
    for d in 1..=domains {
        let mine: Vec<&Vec<SlotRun>> = traces
            .iter()
            .filter(|(v, _)| v.domain == DomainId(d))
            .map(|(_, r)| r)
            .collect();
        let mut p = window.0.div_ceil(period) * period;
        while p + period <= window.1 {
            let got: Nanos = mine
                .iter()
                .map(|runs| {
                    runs.iter()
                        .map(|r| r.end.min(p + period).saturating_sub(r.start.max(p)))
                        .sum::<Nanos>()
                })
                .sum::<Nanos>()
                / mine.len().max(1) as Nanos;
            samples.push(got as f64 / active as f64);
            p += period;
        }
    }
    Spread::of(samples)
}

/// The run of each (kind, N) whose mean rate is the median of its repeats,
/// with the lowest and highest mean rates seen, in the order first run.
pub fn medians(phases: &[Phase]) -> Vec<(&Phase, f64, f64, Vec<&Phase>)> {
    let mut keys: Vec<(&str, u32)> = Vec::new();
    for p in phases {
        if !keys.contains(&(p.kind.as_str(), p.domains)) {
            keys.push((p.kind.as_str(), p.domains));
        }
    }
    keys.into_iter()
        .filter_map(|(kind, n)| {
            let mut runs: Vec<&Phase> = phases
                .iter()
                .filter(|p| p.kind == kind && p.domains == n)
                .collect();
            runs.sort_by(|a, b| a.mean_rate().total_cmp(&b.mean_rate()));
            let lo = runs.first()?.mean_rate();
            let hi = runs.last()?.mean_rate();
            Some((runs[runs.len() / 2], lo, hi, runs))
        })
        .collect()
}

/// A spread over the runs of a phase: the median of the runs' p1, p50 and
/// p99, the largest max. Robust to one disturbed run without hiding it (its
/// max stays), and not tied to the run the rate picked.
fn across_runs(runs: &[&Phase], f: impl Fn(&Phase) -> Option<Spread>) -> Option<Spread> {
    let spreads: Vec<Spread> = runs
        .iter()
        .filter_map(|p| f(p))
        .filter(|s| s.n > 0)
        .collect();
    if spreads.is_empty() {
        return None;
    }
    let median = |g: fn(&Spread) -> f64| {
        let mut xs: Vec<f64> = spreads.iter().map(g).collect();
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    Some(Spread {
        n: spreads.iter().map(|s| s.n).sum(),
        p1: median(|s| s.p1),
        p50: median(|s| s.p50),
        p99: median(|s| s.p99),
        max: spreads.iter().map(|s| s.max).fold(0.0, f64::max),
    })
}

/// The table `gang bench` prints: per phase, the run with the median rate
/// (rates and efficiency) and the medians of every run's percentiles (skew,
/// TT accuracy, lateness; see `across_runs`).
pub fn render(report: &BenchReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let rows = medians(&report.phases);
    let rate_of = |kind: &str, n: u32| {
        rows.iter()
            .find(|(p, _, _, _)| p.kind == kind && p.domains == n)
            .map_or(0.0, |(p, _, _, _)| p.mean_rate())
    };
    let alone = rate_of("alone", 1);
    let repeats = report.phases.iter().filter(|p| p.kind == "alone").count();
    let _ = writeln!(
        out,
        "gang bench: spin-barrier domains of {} vCPUs on CPUs {:?}, work {} ns/round, {:.1} s per phase, median of {repeats} runs, isolation {:?}",
        report.cpus.len(),
        report.cpus,
        report.work_ns,
        report.duration_ns as f64 / 1e9,
        report.isolation
    );
    let _ = writeln!(out, "alone (ideal for 1 domain): {alone:.0} rounds/s");
    let _ = writeln!(
        out,
        "{:<13} {:>2} {:>12} {:>17} {:>8} {:>7} {:>20} {:>16} {:>20} {:>12}",
        "phase",
        "N",
        "rounds/s/dom",
        "(min..max)",
        "vs linux",
        "% ideal",
        "skew p50/p99/max us",
        "effic. pool/gang",
        "TT recv/act p1/50/99",
        "late p99 us"
    );
    let program_alone = rate_of("program-alone", 1);
    if program_alone > 0.0 {
        let _ = writeln!(
            out,
            "program-alone (ideal for 1 whole program): {program_alone:.0} rounds/s"
        );
    }
    for (p, lo, hi, runs) in &rows {
        // Whole programs against whole programs.
        let (linux, alone) = if p.kind.contains("program") {
            (rate_of("program-linux", p.domains), program_alone)
        } else {
            (rate_of("linux", p.domains), alone)
        };
        let ideal = alone / f64::from(p.domains);
        let ratio = if p.kind.starts_with("gang") && linux > 0.0 {
            format!("{:.2}x", p.mean_rate() / linux)
        } else {
            "-".into()
        };
        let skew = across_runs(runs, |r| r.skew_ns).map_or("-".into(), |s| {
            format!("{:.1}/{:.1}/{:.1}", s.p50 / 1e3, s.p99 / 1e3, s.max / 1e3)
        });
        let eff = match (p.cpu_efficiency, p.gang_efficiency) {
            (Some(e), Some(g)) => format!("{:.1}/{:.1}%", e * 100.0, g * 100.0),
            _ => "-".into(),
        };
        let tt = across_runs(runs, |r| r.tt_accuracy).map_or("-".into(), |s| {
            format!("{:.3}/{:.3}/{:.3}", s.p1, s.p50, s.p99)
        });
        let late = across_runs(runs, |r| r.switch_late_ns)
            .map_or("-".into(), |s| format!("{:.1}", s.p99 / 1e3));
        let _ = writeln!(
            out,
            "{:<13} {:>2} {:>12.0} {:>17} {:>8} {:>6.1}% {:>20} {:>16} {:>20} {:>12}",
            p.kind,
            p.domains,
            p.mean_rate(),
            format!("({lo:.0}..{hi:.0})"),
            ratio,
            if ideal > 0.0 {
                p.mean_rate() / ideal * 100.0
            } else {
                0.0
            },
            skew,
            eff,
            tt,
            late
        );
        let violations: usize = report
            .phases
            .iter()
            .filter(|q| q.kind == p.kind && q.domains == p.domains)
            .map(|q| q.gate_violations)
            .sum();
        if violations > 0 {
            let _ = writeln!(out, "  warning: {violations} gate violations over all runs");
        }
    }
    out.push_str(&render_noise(&report.cpus, &report.noise));
    out
}

/// A line per CPU of `cpus` summing up `noise` (all rounds together).
pub fn render_noise(cpus: &[CpuId], noise: &[Noise]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for cpu in cpus {
        let runs: Vec<&Noise> = noise.iter().filter(|n| n.cpu == *cpu).collect();
        if runs.is_empty() {
            continue;
        }
        let window: Nanos = runs.iter().map(|n| n.window_ns).sum();
        let rate = |f: fn(&Noise) -> f64| {
            runs.iter().map(|n| f(n) * n.window_ns as f64).sum::<f64>() / window as f64
        };
        let _ = writeln!(
            out,
            "host noise CPU {cpu}: interrupted >10us {:.0}/s, >20us {:.0}/s, >50us {:.0}/s, >100us {:.1}/s, longest {:.0} us, {:.2}% of the time lost ({:.1} s spun)",
            rate(|n| n.over_10us_per_s),
            rate(|n| n.over_20us_per_s),
            rate(|n| n.over_50us_per_s),
            rate(|n| n.over_100us_per_s),
            runs.iter().map(|n| n.longest_ns).max().unwrap_or(0) as f64 / 1e3,
            rate(|n| n.lost) * 100.0,
            window as f64 / 1e9
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Switch;

    fn switch(cpu: CpuId, at: Nanos, vcpu: Option<(u32, u32)>) -> Switch {
        Switch {
            cpu,
            at,
            vcpu: vcpu.map(|(d, v)| VcpuRef {
                domain: DomainId(d),
                vcpu: v,
            }),
            late: 0,
            gate_ns: 0,
            spin: 0,
            thread: true,
        }
    }

    #[test]
    fn adopted_skew_counts_slot_starts_only() {
        // Domain 1 on CPUs 0 and 1, slots at 1000 and 3000 (domain 2 in
        // between); at 5000 only CPU 0 starts it (not a gang start).
        // Sorted by (CPU, time), as the runtime reports them.
        let switches = vec![
            switch(0, 1000, Some((1, 0))),
            switch(0, 2000, Some((2, 0))),
            switch(0, 3000, Some((1, 0))),
            switch(0, 4000, None),
            switch(0, 5000, Some((1, 0))),
            switch(1, 1000, Some((1, 1))),
            switch(1, 2000, Some((2, 1))),
            switch(1, 3000, Some((1, 1))),
            switch(1, 4000, None),
            switch(1, 9000, Some((1, 1))),
        ];
        let resumes = vec![
            (0, 1005),
            (1, 1012),
            (0, 1500), // a pause inside the slot: not a start
            (0, 3003),
            // vCPU 1 records nothing in the slot at 3000: no sample
            (1, 4100), // after its CPU's next switch
            (0, 5002),
        ];
        let skews = adopted_start_skews(&switches, DomainId(1), 2, &resumes, (0, 10_000));
        assert_eq!(skews, vec![7.0]);
        // Outside the window, nothing.
        assert!(
            adopted_start_skews(&switches, DomainId(1), 2, &resumes, (2000, 10_000)).is_empty()
        );
        // Another domain's starts are not this one's.
        assert!(adopted_start_skews(&switches, DomainId(2), 2, &resumes, (0, 10_000)).is_empty());
    }

    #[test]
    fn spreads_across_runs_are_medians_with_the_largest_max() {
        let run = |p99: f64, max: f64| Phase {
            skew_ns: Some(Spread {
                n: 100,
                p1: 1.0,
                p50: p99 / 2.0,
                p99,
                max,
            }),
            ..Phase::rates("gang-be", 2, vec![1.0])
        };
        let runs = [run(10.0, 12.0), run(3000.0, 4000.0), run(20.0, 25.0)];
        let refs: Vec<&Phase> = runs.iter().collect();
        let s = across_runs(&refs, |p| p.skew_ns).expect("spread");
        assert_eq!((s.n, s.p50, s.p99, s.max), (300, 10.0, 20.0, 4000.0));
        assert!(across_runs(&refs, |p| p.tt_accuracy).is_none());
    }

    #[test]
    fn noise_is_measured_on_every_cpu_asked() {
        if !sys::is_root() {
            return sys::skip_or_fail("needs root for a real-time priority");
        }
        let noise = measure_noise(&[0], 10, 20 * MS).expect("noise");
        assert_eq!(noise.len(), 1);
        let n = noise[0];
        assert_eq!((n.cpu, n.window_ns), (0, 20 * MS));
        assert!(n.over_10us_per_s >= n.over_20us_per_s);
        assert!(n.over_20us_per_s >= n.over_50us_per_s);
        assert!(n.over_50us_per_s >= n.over_100us_per_s);
        assert!((0.0..1.0).contains(&n.lost), "{n:?}");
        assert_eq!(
            sys::policy(0).expect("policy"),
            SchedPolicy::Other,
            "the test thread's policy is untouched"
        );
    }
}
