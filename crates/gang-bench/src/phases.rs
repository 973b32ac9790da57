//! The `gang bench` phases on threads of this process: *alone*, *linux N*,
//! *gang BE N* and *gang TT N*, and [`run`], which runs every phase
//! (those of [`crate::processes`] too) `repeat` times, interleaved.
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
//! - the adopted and whole-program phases of [`crate::processes`].
//!
//! From the gate traces: co-start skew (first to last vCPU of a gang passing
//! its gate in the same slot), and for TT the time received per period ÷
//! `active`. From the kernel: CPU efficiency (the vCPU threads' CPU time over
//! the window, from `schedstat`, ÷ pool CPU time; the traces' slot time is
//! kept in the JSON as `efficiency`, and overstates it by the time
//! dispatchers preempt running vCPUs).
//!
//! Invariants: every thread a phase starts has ended when the phase
//! returns, on errors too; every runtime is stopped (its CPUs, shield and
//! real-time limit given back) and every state directory removed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use gang_core::{
    CpuId, CpuSet, DomainId, DomainSpec, Nanos, Periodic, Policy, PoolConfig, VcpuRef, MS,
};
use gang_host::cgroup::{Cgroups, CpuShield};
use gang_host::clock::Clock;
use gang_host::gate::{SlotRun, VcpuControl};
use gang_host::runtime::{HostError, Isolation, Runtime, RuntimeConfig};
use gang_host::slot_stats::{co_start_skew, efficiency, tt_accuracy, Spread};
use gang_host::sys::{self, SchedPolicy};
use gang_host::workload::{self, DomainState, VcpuEnv, Workload};

use crate::noise::{measure_noise, NOISE_WINDOW};
use crate::processes::{adopt_phase, program_phase};
use crate::report::{BenchReport, Phase};

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
            gang_host::runtime::DISPATCHER_PRIORITY,
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

/// `n` domains under Linux: pinned threads, SCHED_OTHER, no runtime; with
/// exclusive isolation, on CPUs taken from the host's tasks as the gang
/// phases' are (see `baseline_shield`).
fn linux_phase(config: &BenchConfig, n: u32, kind: &str) -> Result<Phase, HostError> {
    let (shield, _state) = baseline_shield(config)?;
    let shielded = shield.is_some();
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
            let shield = shield.clone();
            threads.push(std::thread::spawn(move || -> Result<(), HostError> {
                if let Some(shield) = &shield {
                    shield.attach(sys::gettid())?;
                }
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
    // Every thread has ended, and with it its handle on the shield.
    if let Some(shield) = shield.and_then(Arc::into_inner) {
        shield.release()?;
    }
    result?;
    let secs = config.duration as f64 / 1e9;
    Ok(Phase {
        shielded,
        ..Phase::rates(
            kind,
            n,
            states
                .iter()
                .map(|s| s.progress.load(Ordering::Relaxed) as f64 / secs)
                .collect(),
        )
    })
}

/// With exclusive isolation, the pool CPUs taken from the host's tasks for
/// a phase without a runtime (alone, linux), with the cpuset shield the
/// runtime takes for the gang phases; `None` with shared CPUs. Without it
/// the baselines would compete with the host's load that the gang phases
/// never see, and `% ideal` would mean nothing (250% was seen with
/// `--cpus 1 --exclusive` on a busy host). The shield is released when
/// dropped, before the state directory (its crash record) is removed.
fn baseline_shield(config: &BenchConfig) -> Result<(Option<Arc<CpuShield>>, StateDir), HostError> {
    if config.isolation != Isolation::Exclusive {
        return Ok((None, StateDir(None)));
    }
    let path = std::env::temp_dir().join(format!(
        "gang-bench-exclusive-{}-{}",
        std::process::id(),
        STATE_DIRS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&path).map_err(|e| HostError::Sys {
        what: format!("creating {}", path.display()),
        source: e,
    })?;
    let state = StateDir(Some(path.clone()));
    let cpus: CpuSet = config.cpus.iter().copied().collect();
    let shield = Cgroups::detect(&path)?.shield(&cpus)?;
    Ok((Some(Arc::new(shield)), state))
}

/// The runtime configuration of a phase: exclusive phases get a state
/// directory (the shield's crash record), removed by the returned guard.
pub(crate) fn phase_runtime_config(
    config: &BenchConfig,
    pool: PoolConfig,
) -> (RuntimeConfig, StateDir) {
    let mut rt = RuntimeConfig::new(pool);
    let mut dir = StateDir(None);
    if let Some(spin) = config.spin {
        rt.spin = spin;
        rt.spin_max = spin;
    }
    if config.lift_rt_limit {
        rt.lift_rt_limit = true;
        rt.host_slot = Some(gang_host::runtime::unlimited_host_slot_for(rt.pool.grain));
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

pub(crate) static STATE_DIRS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A temporary state directory, removed on drop.
pub(crate) struct StateDir(pub(crate) Option<std::path::PathBuf>);

impl Drop for StateDir {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            gang_host::best_effort(
                "bench clean-up: removing its state directory",
                std::fs::remove_dir_all(p),
            );
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
        shielded: config.isolation == Isolation::Exclusive,
        rounds_per_s: states
            .iter()
            .map(|s| s.progress.load(Ordering::Relaxed) as f64 / secs)
            .collect(),
        skew_ns: Some(co_start_skew(&traces, window)),
        efficiency: Some(efficiency(&traces, window, config.cpus.len())),
        cpu_efficiency,
        gang_efficiency: cpu_efficiency.map(|e| e / (1.0 - host_share)),
        tt_accuracy: tt.then(|| tt_accuracy(&traces, window, period, active, n)),
        switch_late_ns: Some(gang_host::slot_stats::switch_lateness(
            &report.switches,
            window,
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

/// `(now, total CPU time of the vCPU threads)`, both in ns.
fn cpu_time_of(controls: &[Arc<VcpuControl>], clock: Clock) -> (Nanos, Nanos) {
    let total = controls
        .iter()
        .map(|c| sys::thread_cpu_ns(std::process::id() as i32, c.tid()).unwrap_or(0))
        .sum();
    (clock.now(), total)
}
