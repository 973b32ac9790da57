//! The runtime: one dispatcher per pool CPU, each with a replica of the
//! pool's scheduler, and the control API that feeds them.
//!
//! **Dispatch.** A dispatcher is a thread pinned to its CPU with real-time
//! priority (above the vCPU threads). It sleeps until `lead` before the next
//! boundary `b` of its replica (or until an event is appended, which may bring
//! `b` forward), applies the log's events due by `b`, decides `b`, and if its
//! own CPU's vCPU changes, waits precisely until `b` (sleep, then spin) and
//! switches: it closes the outgoing vCPU's gate and opens the incoming one's.
//! No other CPU is involved at that moment: every replica made the same
//! decision on its own.
//!
//! **Control.** Configuration changes (add, remove, parameters, pause) are
//! checked against a reference copy of the scheduler at their effect time
//! before they enter the log, so a refusal is returned to the caller at once
//! and the replicas never see an event they would refuse.
//!
//! **Gates from outside.** Threads of other processes (`adopt`: one thread
//! per vCPU) and whole programs (`group`: every task of a freezer cgroup,
//! one group for all the vCPUs of its domain) cannot pass a gate: the
//! dispatcher asks for a freeze of the outgoing one and a thaw of the
//! incoming one before the boundary, without waiting ([`Gate`]). A CPU that
//! keeps the same group across a boundary does neither; the group itself
//! counts the CPUs running it, so it is frozen when none does.
//!
//! **Watchdog.** A vCPU thread still running more than `grace` after its gate
//! closed ignores its gate: the dispatcher demotes it to SCHED_IDLE (so it
//! cannot take the CPU from the next gang) and reports it; it is promoted
//! again when its next slot opens.
//!
//! **Leaving the host as found.** The runtime changes only its own threads'
//! priorities and affinities; stopping it (or dropping it) stops and joins
//! every dispatcher. vCPU threads are the caller's; [`Runtime::stop`] stops
//! their gates so they return from their next checkpoint.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use gang_core::{
    CpuId, CpuSet, DomainId, DomainSpec, EngineError, Event, Nanos, Policy, PoolConfig, RunState,
    Scheduler, VcpuRef,
};

use crate::clock::{Clock, SpinTuner};
use crate::gate::VcpuControl;
use crate::log::{Entry, EventLog};
use crate::sys::{self, SchedPolicy};

/// Runtime errors.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The scheduler refused (admission) or did not know the domain.
    #[error(transparent)]
    Core(#[from] EngineError),
    /// A pool CPU is not online on this host.
    #[error("cpu {0} illegal or not free: it is not online on this host")]
    CpuNotOnline(CpuId),
    /// Real-time scheduling needs privileges we lack.
    #[error("real-time scheduling needs root (or CAP_SYS_NICE): {0}")]
    Privilege(std::io::Error),
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// What we were doing.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The domain is not known to the runtime.
    #[error("domain {0} is not in this pool")]
    UnknownDomain(DomainId),
    /// A CPU is in another pool.
    #[error(transparent)]
    Claim(#[from] crate::claim::ClaimError),
    /// Taking the CPUs from the host failed.
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    /// A thread could not be adopted.
    #[error(transparent)]
    Adopt(#[from] crate::adopt::AdoptError),
    /// A group could not be adopted.
    #[error(transparent)]
    Group(#[from] crate::group::GroupError),
    /// Exclusive mode and adopted threads need a state directory.
    #[error("a state directory is needed: exclusive isolation and adopted threads keep crash-repair state there")]
    NoStateDir,
    /// The real-time limit could not be lifted or restored.
    #[error("the kernel's real-time limit: {0}")]
    RtLimit(crate::rtlimit::RtLimitError),
}

/// One switch a dispatcher made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Switch {
    /// The CPU.
    pub cpu: CpuId,
    /// The boundary.
    pub at: Nanos,
    /// The vCPU dispatched from then on (None: idle).
    pub vcpu: Option<VcpuRef>,
    /// How late the switch was made, in ns.
    pub late: Nanos,
    /// Time spent closing and opening the gates before the boundary
    /// (waiting for the outgoing thread to park included), in ns.
    pub gate_ns: Nanos,
    /// How long the dispatcher spun for (planned) before this switch, in ns.
    pub spin: Nanos,
    /// Whether a thread was started for `vcpu` (a vCPU whose thread is not
    /// attached yet, or gone, holds its slot idle).
    pub thread: bool,
}

/// The intervals a domain's vCPUs held CPUs, from a switch log sorted by
/// (cpu, time), as [`Runtime::recent_switches`] returns it: `(vcpu, cpu,
/// start, end)`, `end == u64::MAX` while running.
pub fn held_intervals(switches: &[Switch], id: DomainId) -> Vec<(u32, CpuId, Nanos, Nanos)> {
    let mut out: Vec<(u32, CpuId, Nanos, Nanos)> = Vec::new();
    for (i, s) in switches.iter().enumerate() {
        // Only slots in which a thread was started: a vCPU without its
        // thread (not attached yet, or exited) got nothing.
        let Some(v) = s.vcpu.filter(|v| v.domain == id && s.thread) else {
            continue;
        };
        let end = match switches.get(i + 1) {
            Some(next) if next.cpu == s.cpu => next.at,
            _ => u64::MAX,
        };
        // A switch to the vCPU already running (a decision that kept it)
        // continues its interval.
        if let Some(last) = out.last_mut() {
            if (last.0, last.1, last.3) == (v.vcpu, s.cpu, s.at) {
                last.3 = end;
                continue;
            }
        }
        out.push((v.vcpu, s.cpu, s.at, end));
    }
    out
}

/// A vCPU thread found running after its gate closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct GateViolation {
    /// The vCPU.
    pub vcpu: VcpuRef,
    /// When its gate closed.
    pub closed_at: Nanos,
    /// When the watchdog found it still running.
    pub found_at: Nanos,
}

/// What the dispatchers did, returned by [`Runtime::stop`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RuntimeReport {
    /// The switches, per CPU in time order (the last
    /// [`SWITCH_LOG_CAPACITY`] of each CPU).
    pub switches: Vec<Switch>,
    /// Boundaries decided (per replica; all replicas decide all).
    pub boundaries: u64,
    /// vCPUs that ignored their gates.
    pub violations: Vec<GateViolation>,
    /// Adopted vCPU threads found gone (their process exited).
    pub exited: Vec<VcpuRef>,
}

/// How a dispatcher starts and stops one vCPU thread.
#[derive(Debug, Clone)]
pub enum Gate {
    /// A thread we own: a futex gate it passes at its checkpoints.
    Own(Arc<VcpuControl>),
    /// A thread of another process: frozen between its slots.
    Adopted(Arc<crate::adopt::Adopted>),
    /// Every task of a freezer cgroup (a whole program), the same group for
    /// every vCPU of its domain: frozen while no CPU of its map runs it.
    Group(Arc<crate::group::AdoptedGroup>),
}

impl Gate {
    /// Whether `a` and `b` are the same group: a CPU that keeps running it
    /// across a boundary neither freezes nor thaws it.
    fn same_group(a: Option<&Gate>, b: Option<&Gate>) -> bool {
        matches!((a, b), (Some(Gate::Group(x)), Some(Gate::Group(y))) if Arc::ptr_eq(x, y))
    }

    /// A gate worked from outside (adopted thread, group): asks for it to
    /// be stopped (frozen) and returns at once. Nothing for our own threads.
    fn request_stop(&self) {
        match self {
            Gate::Own(_) => {}
            Gate::Adopted(a) => a.stop(),
            Gate::Group(g) => g.stop(),
        }
    }

    /// A gate worked from outside: asks for it to be started (thawed) and
    /// returns at once. Nothing for our own threads.
    fn request_start(&self) {
        match self {
            Gate::Own(_) => {}
            Gate::Adopted(a) => a.start(),
            Gate::Group(g) => g.start(),
        }
    }

    /// Whether the gate holds what adoption changed (given back by
    /// [`Gate::release`]).
    fn is_adopted(&self) -> bool {
        !matches!(self, Gate::Own(_))
    }

    /// Gives an adopted thread or group back as it was (idempotent).
    fn release(&self, shield: Option<&crate::cgroup::CpuShield>) {
        match self {
            Gate::Own(_) => {}
            Gate::Adopted(a) => a.release_from(shield),
            Gate::Group(g) => g.release(),
        }
    }

    /// Whether what the gate stops is gone: an adopted thread that exited, a
    /// group with no task left (checked off the switch path).
    fn gone(&self) -> bool {
        match self {
            Gate::Own(_) => false,
            Gate::Adopted(a) => a.check_gone(),
            Gate::Group(g) => g.is_empty(),
        }
    }
}

type Registry = RwLock<BTreeMap<VcpuRef, Gate>>;

/// How many switches each dispatcher keeps for [`Runtime::recent_switches`]
/// (about a minute at a 1 ms grain; the oldest are dropped).
pub const SWITCH_LOG_CAPACITY: usize = 1 << 16;

struct Shared {
    config: RuntimeConfig,
    /// Per dispatcher (replica order): its recent switches, oldest first.
    switch_log: Vec<Mutex<std::collections::VecDeque<Switch>>>,
    /// Exclusive mode: the cpuset holding the pool's CPUs.
    shield: Option<crate::cgroup::CpuShield>,
    clock: Clock,
    log: Arc<EventLog>,
    registry: Registry,
    stop: AtomicBool,
    /// What the dispatchers did, in total (for monitoring).
    counters: counters::Counters,
}

/// A running gang pool on real CPUs.
pub struct Runtime {
    shared: Arc<Shared>,
    /// Held for the runtime's life (released last, after the dispatchers).
    _claims: Option<crate::claim::CpuClaims>,
    /// The lifted real-time limit, restored after the dispatchers stopped.
    rt_limit: Option<crate::rtlimit::RtLimitLift>,
    reference: Mutex<Scheduler>,
    dispatchers: Vec<JoinHandle<DispatcherReport>>,
    /// On a shared clock: how far after the base the epoch is (whole
    /// cycles), and the base as a CLOCK_MONOTONIC instant when the runtime
    /// started (a later reading that differs is a step of the wall clock).
    shared_start: Option<(u64, i128)>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("cpus", &self.shared.config.pool.cpus)
            .finish()
    }
}

/// The CPUs this process may run on (the online CPUs for root at the top
/// cpuset).
pub fn allowed_cpus() -> Result<CpuSet, HostError> {
    let set = rustix::thread::sched_getaffinity(None).map_err(|e| HostError::Sys {
        what: "reading CPU affinity".into(),
        source: e.into(),
    })?;
    Ok((0..rustix::thread::CpuSet::MAX_CPU as CpuId)
        .filter(|&c| set.is_set(c as usize))
        .collect())
}

impl Runtime {
    /// Starts one dispatcher per pool CPU. Fails if a CPU is not usable or
    /// real-time priority cannot be had.
    pub fn start(config: RuntimeConfig) -> Result<Runtime, HostError> {
        // The system's online CPUs, not this process's affinity: a crashed
        // exclusive runtime may still confine us until repaired below.
        let online = crate::cgroup::online_cpus()?;
        if let Some(cpu) = config.pool.cpus.iter().find(|&c| !online.contains(c)) {
            return Err(HostError::CpuNotOnline(cpu));
        }
        let claims = match &config.state_dir {
            Some(dir) => Some(crate::claim::CpuClaims::claim(
                dir,
                &config.name,
                config.pool.cpus.iter(),
            )?),
            None => None,
        };
        // First give back what a runtime killed before us left (repairs only
        // touch state whose owner is dead): adopted threads' policies before
        // their freezers are thawed, then cpusets and freezers.
        if let Some(dir) = &config.state_dir {
            crate::adopt::repair(dir)?;
            crate::group::repair(dir);
            crate::cgroup::repair(dir)?;
            crate::rtlimit::repair(dir).map_err(HostError::RtLimit)?;
        }
        let rt_limit = match (config.lift_rt_limit, &config.state_dir) {
            (false, _) => None,
            (true, None) => return Err(HostError::NoStateDir),
            (true, Some(dir)) => {
                Some(crate::rtlimit::RtLimitLift::lift(dir).map_err(HostError::RtLimit)?)
            }
        };
        let shield = match config.isolation {
            Isolation::Exclusive => {
                let dir = config.state_dir.as_ref().ok_or(HostError::NoStateDir)?;
                Some(crate::cgroup::Cgroups::detect(dir)?.shield(&config.pool.cpus)?)
            }
            Isolation::Shared => None,
        };
        let mut reference = Scheduler::new(config.pool.clone())?;
        if let Some((period, active)) = config.host_slot {
            let cpus: Vec<CpuId> = config.pool.cpus.iter().collect();
            let spec = DomainSpec {
                id: HOST_DOMAIN,
                vcpus: cpus.len() as u32,
                cpu_map: Some(cpus),
                policy: Policy::TimeTriggered {
                    timing: gang_core::Periodic {
                        from: 0,
                        period,
                        active,
                    },
                    space_filling: false,
                    exact: false,
                },
            };
            let state = RunState::all_runnable(spec.vcpus, false);
            reference.handle(0, Event::DomainAdded { spec, state })?;
        }
        let cpus: Vec<CpuId> = config.pool.cpus.iter().collect();
        let (clock, shared_start) = match &config.shared_time {
            None => (Clock::new(config.pool.grain), None),
            Some(t) => {
                let (epoch, since_base) =
                    crate::wallclock::aligned_epoch(t).map_err(|e| HostError::Sys {
                        what: format!("taking the pool's time from the {} clock", t.clock),
                        source: std::io::Error::other(e.to_string()),
                    })?;
                (
                    Clock::with_epoch(epoch),
                    Some((since_base, crate::wallclock::epoch(t))),
                )
            }
        };
        let shared = Arc::new(Shared {
            clock,
            log: Arc::new(EventLog::new(cpus.len(), config.lead, clock)),
            registry: RwLock::new(BTreeMap::new()),
            stop: AtomicBool::new(false),
            counters: counters::Counters::default(),
            switch_log: cpus
                .iter()
                .map(|_| Mutex::new(std::collections::VecDeque::new()))
                .collect(),
            shield,
            config,
        });
        let mut runtime = Runtime {
            shared,
            _claims: claims,
            rt_limit,
            reference: Mutex::new(reference),
            dispatchers: Vec::new(),
            shared_start,
        };
        for (replica, &cpu) in cpus.iter().enumerate() {
            let shared = Arc::clone(&runtime.shared);
            let scheduler = runtime.reference().clone();
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let handle = std::thread::Builder::new()
                .name(format!("gang-dispatch-{cpu}"))
                .spawn(move || Dispatcher::run_on_cpu(shared, replica, cpu, scheduler, ready_tx))
                .map_err(|e| HostError::Sys {
                    what: "spawning a dispatcher".into(),
                    source: e,
                })?;
            runtime.dispatchers.push(handle);
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    drop(runtime); // stops the dispatchers already started
                    return Err(e);
                }
                Err(_) => {
                    return Err(HostError::Sys {
                        what: format!("dispatcher for CPU {cpu} died at start"),
                        source: std::io::Error::other("no start report"),
                    })
                }
            }
        }
        Ok(runtime)
    }

    fn reference(&self) -> std::sync::MutexGuard<'_, Scheduler> {
        self.reference.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The event log, for vCPU threads that report blocking and waking
    /// themselves ([`crate::workload::VcpuEnv::blocking`]).
    pub fn event_log(&self) -> Arc<EventLog> {
        Arc::clone(&self.shared.log)
    }

    /// The pool clock (time since the epoch).
    pub fn clock(&self) -> Clock {
        self.shared.clock
    }

    /// On a shared clock: pool time 0 is this long after the base (whole
    /// cycles), so a slot at pool time `t` is at `base + since_base + t` on
    /// the shared clock, on every host alike.
    pub fn since_base(&self) -> Option<u64> {
        self.shared_start.map(|(k, _)| k)
    }

    /// On a shared clock: how far the wall clock stepped since the runtime
    /// started (ns, signed; `None` on this host's own clock). The runtime
    /// keeps its epoch: a local gang is never split to follow a step.
    pub fn clock_step(&self) -> Option<i64> {
        let (_, base_then) = self.shared_start?;
        let t = self.shared.config.shared_time?;
        let moved = base_then - crate::wallclock::epoch(&t);
        Some(i64::try_from(moved).unwrap_or(i64::MAX))
    }

    /// The configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.shared.config
    }

    /// Feeds a configuration or run-state event through admission and into
    /// the log; returns its effect time.
    pub fn submit(&self, event: Event) -> Result<Nanos, HostError> {
        // Admission runs on the reference copy, outside any lock a
        // dispatcher takes; submissions serialise on the reference.
        let mut reference = self.reference();
        let at = self.boosted(|| self.shared.log.earliest_effect());
        reference.handle(at, event.clone())?;
        Ok(self.boosted(|| self.shared.log.append_at(at, event)))
    }

    /// Changes the registry (boosted: dispatchers read it).
    fn edit_registry<T>(&self, f: impl FnOnce(&mut BTreeMap<VcpuRef, Gate>) -> T) -> T {
        self.boosted(|| {
            let mut reg = self
                .shared
                .registry
                .write()
                .unwrap_or_else(|p| p.into_inner());
            f(&mut reg)
        })
    }

    /// Runs `f` (a short critical section on a lock dispatchers also take)
    /// with the calling thread raised above the dispatchers' priority, so
    /// that real-time vCPU threads cannot preempt it while it holds the
    /// lock: the dispatchers would wait for it (priority inversion). Threads
    /// already at real-time priority run `f` as they are.
    fn boosted<T>(&self, f: impl FnOnce() -> T) -> T {
        let before = sys::policy(0).ok();
        let raise = matches!(before, Some(SchedPolicy::Other | SchedPolicy::Idle));
        let boost = SchedPolicy::Fifo(self.shared.config.dispatcher_priority + 1);
        let raised = raise && sys::set_policy(0, boost).is_ok();
        let out = f();
        if let (true, Some(p)) = (raised, before) {
            crate::best_effort(
                "restoring the caller's scheduling policy",
                sys::set_policy(0, p),
            );
        }
        out
    }

    /// Adds a domain whose vCPU threads we own. Returns one control per
    /// vCPU: the threads must call [`VcpuControl::attach_current_thread`],
    /// pin themselves with [`Runtime::prepare_vcpu_thread`] and pass
    /// [`VcpuControl::checkpoint`] often.
    pub fn add_domain(
        &self,
        spec: DomainSpec,
        paused: bool,
    ) -> Result<Vec<Arc<VcpuControl>>, HostError> {
        // Gates first, then admission: every vCPU has its gate before the
        // domain's first slot, so no slot finds one vCPU with a thread and
        // its sibling without.
        let id = spec.id;
        let controls = self.register_gates(id, spec.vcpus);
        if let Err(e) = self.admit(spec, paused) {
            self.edit_registry(|reg| reg.retain(|v, _| v.domain != id));
            return Err(e);
        }
        Ok(controls)
    }

    /// The CPU map the scheduler gave a domain.
    pub fn cpu_map(&self, id: DomainId) -> Option<Vec<CpuId>> {
        self.reference().cpu_map(id).map(<[CpuId]>::to_vec)
    }

    /// The policy of a domain.
    pub fn policy(&self, id: DomainId) -> Option<Policy> {
        self.reference().policy(id)
    }

    /// Pins the calling thread to the CPU of `vcpu` and gives it the vCPU
    /// priority.
    pub fn prepare_vcpu_thread(&self, vcpu: VcpuRef) -> Result<(), HostError> {
        let map = self
            .cpu_map(vcpu.domain)
            .ok_or(HostError::UnknownDomain(vcpu.domain))?;
        let cpu = map[vcpu.vcpu as usize];
        if let Some(shield) = &self.shared.shield {
            shield.attach(sys::gettid())?;
        }
        sys::set_affinity(0, &[cpu]).map_err(|e| HostError::Sys {
            what: format!("pinning vCPU {} to CPU {cpu}", vcpu.vcpu),
            source: e,
        })?;
        let prio = self.shared.config.vcpu_priority;
        if prio > 0 {
            sys::set_policy(0, SchedPolicy::Fifo(prio)).map_err(HostError::Privilege)?;
        }
        Ok(())
    }

    /// Reports that a vCPU blocked (it will wait for something).
    pub fn vcpu_blocked(&self, vcpu: VcpuRef) {
        self.boosted(|| self.shared.log.append(Event::VcpuBlocked(vcpu)));
    }

    /// Reports that a vCPU became runnable.
    pub fn vcpu_woke(&self, vcpu: VcpuRef) {
        self.boosted(|| self.shared.log.append(Event::VcpuWoke(vcpu)));
    }

    /// Pauses a domain (from its effect time on, at the next boundary).
    pub fn pause(&self, id: DomainId) -> Result<Nanos, HostError> {
        self.submit(Event::Paused(id))
    }

    /// Unpauses a domain.
    pub fn unpause(&self, id: DomainId) -> Result<Nanos, HostError> {
        self.submit(Event::Unpaused(id))
    }

    /// Sets a domain's gang parameters. When its CPU map changes, its vCPU
    /// threads (adopted or ours) are pinned to their new CPUs.
    pub fn set_params(
        &self,
        id: DomainId,
        cpu_map: Option<Vec<CpuId>>,
        policy: Policy,
    ) -> Result<Nanos, HostError> {
        let before = self.cpu_map(id);
        let effect = self.submit(Event::ParamsSet {
            domain: id,
            cpu_map,
            policy,
        })?;
        let after = self.cpu_map(id);
        if let (Some(map), true) = (&after, after != before) {
            let reg = self
                .shared
                .registry
                .read()
                .unwrap_or_else(|p| p.into_inner());
            let mut placed: Option<&Arc<crate::group::AdoptedGroup>> = None;
            for (v, gate) in reg.iter().filter(|(v, _)| v.domain == id) {
                let tid = match gate {
                    Gate::Own(c) => c.tid(),
                    Gate::Adopted(a) => a.tid,
                    Gate::Group(g) => {
                        // One group for all the domain's vCPUs: placed once.
                        if !placed.is_some_and(|p| Arc::ptr_eq(p, g)) {
                            crate::best_effort(
                                format_args!("placing domain {id}'s program"),
                                g.set_cpus(map),
                            );
                            placed = Some(g);
                        }
                        continue;
                    }
                };
                if let (true, Some(&cpu)) = (tid > 0, map.get(v.vcpu as usize)) {
                    crate::best_effort(
                        format_args!("pinning vCPU thread {tid} to CPU {cpu}"),
                        sys::set_affinity(tid, &[cpu]),
                    );
                }
            }
        }
        Ok(effect)
    }

    /// Removes a domain: its threads are told to stop.
    pub fn remove_domain(&self, id: DomainId) -> Result<Nanos, HostError> {
        let effect = self.submit(Event::DomainRemoved(id))?;
        let reg = self
            .shared
            .registry
            .read()
            .unwrap_or_else(|p| p.into_inner());
        for (_, c) in reg.range(
            VcpuRef {
                domain: id,
                vcpu: 0,
            }..=VcpuRef {
                domain: id,
                vcpu: u32::MAX,
            },
        ) {
            if let Gate::Own(c) = c {
                c.stop();
            }
        }
        drop(reg);
        // Adopted threads are given back once no dispatcher can thaw them any
        // more: after the boundary that follows the removal's effect time.
        let grain = self.shared.config.pool.grain;
        self.shared.clock.wait_until(effect + 2 * grain, 0);
        let gone: Vec<Gate> = self.edit_registry(|reg| {
            let ids: Vec<VcpuRef> = reg.keys().filter(|v| v.domain == id).copied().collect();
            ids.iter().filter_map(|v| reg.remove(v)).collect()
        });
        // Slow (thaw, wait, move back): outside the lock.
        for gate in gone {
            gate.release(self.shared.shield.as_ref());
        }
        Ok(effect)
    }

    /// Admits a domain without threads yet (paused or not): its slots are
    /// reserved from its effect time on and stay idle until threads are
    /// attached with [`Runtime::adopt_threads`] or [`Runtime::add_gates`].
    /// Returns the CPU map the scheduler gave it. A refusal changes nothing.
    pub fn admit(&self, spec: DomainSpec, paused: bool) -> Result<Vec<CpuId>, HostError> {
        let id = spec.id;
        let state = RunState::all_runnable(spec.vcpus, paused);
        self.submit(Event::DomainAdded { spec, state })?;
        self.cpu_map(id).ok_or(HostError::UnknownDomain(id))
    }

    /// Gives an admitted domain one futex gate per vCPU, for threads we own
    /// (see [`Runtime::add_domain`]).
    ///
    /// A domain admitted running may have a slot start while the gates are
    /// being registered; admit it paused and unpause it after, so that its
    /// vCPUs start together from their first slot.
    pub fn add_gates(&self, id: DomainId) -> Result<Vec<Arc<VcpuControl>>, HostError> {
        let map = self.cpu_map(id).ok_or(HostError::UnknownDomain(id))?;
        Ok(self.register_gates(id, map.len() as u32))
    }

    fn register_gates(&self, id: DomainId, vcpus: u32) -> Vec<Arc<VcpuControl>> {
        let controls: Vec<Arc<VcpuControl>> = (0..vcpus)
            .map(|vcpu| {
                Arc::new(VcpuControl::new(
                    VcpuRef { domain: id, vcpu },
                    self.shared.config.trace,
                ))
            })
            .collect();
        self.edit_registry(|reg| {
            for c in &controls {
                reg.insert(c.vcpu, Gate::Own(Arc::clone(c)));
            }
        });
        controls
    }

    /// Adopts the threads `tids` of another process as the vCPUs of an
    /// admitted domain (vCPU `i` is `tids[i]`): each is frozen, pinned to its
    /// map CPU and given the vCPU priority, and from then on runs only in
    /// its domain's slots. Removing the domain or stopping the runtime gives
    /// the threads back as they were. Needs a state directory (for crash
    /// repair). On failure the threads adopted so far are given back and the
    /// domain stays admitted, without threads. As with [`Runtime::add_gates`],
    /// admit the domain paused and unpause it after.
    pub fn adopt_threads(&self, id: DomainId, tids: &[sys::Tid]) -> Result<(), HostError> {
        let dir = self.state_dir()?;
        let map = self.cpu_map(id).ok_or(HostError::UnknownDomain(id))?;
        if tids.len() != map.len() {
            return Err(HostError::Sys {
                what: format!(
                    "adopting {} threads as the {} vCPUs of domain {id}",
                    tids.len(),
                    map.len()
                ),
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            });
        }
        if let Some(&tid) = tids.iter().find(|&&t| !crate::adopt::thread_exists(t)) {
            return Err(crate::adopt::AdoptError::NoThread(tid).into());
        }
        let prio = self.shared.config.vcpu_priority;
        let mut adopted = Vec::new();
        for (i, &tid) in tids.iter().enumerate() {
            let vcpu = VcpuRef {
                domain: id,
                vcpu: i as u32,
            };
            let shield = self.shared.shield.as_ref();
            match crate::adopt::Adopted::adopt_into(vcpu, tid, map[i], prio, &dir, shield) {
                Ok(a) => adopted.push(a),
                Err(e) => {
                    for a in &adopted {
                        a.release_from(shield);
                    }
                    return Err(e.into());
                }
            }
        }
        self.edit_registry(|reg| {
            for a in adopted {
                reg.insert(a.vcpu, Gate::Adopted(Arc::new(a)));
            }
        });
        Ok(())
    }

    /// Adopts the threads `tids` of another process as the vCPUs of a new
    /// domain: [`Runtime::admit`] (paused, so that no slot starts before every
    /// thread is frozen and registered), [`Runtime::adopt_threads`], then
    /// unpause unless `paused`. On failure nothing is left admitted.
    pub fn adopt_domain(
        &self,
        mut spec: DomainSpec,
        tids: &[sys::Tid],
        paused: bool,
    ) -> Result<(), HostError> {
        if self.shared.config.state_dir.is_none() {
            return Err(HostError::NoStateDir);
        }
        if let Some(&tid) = tids.iter().find(|&&t| !crate::adopt::thread_exists(t)) {
            return Err(crate::adopt::AdoptError::NoThread(tid).into());
        }
        spec.vcpus = tids.len() as u32;
        self.admit_then(spec, paused, |id| self.adopt_threads(id, tids))
    }

    /// Admits `spec` paused, runs `attach` (nothing of the domain runs
    /// before it is done), removes the domain again if it fails, and
    /// unpauses it unless `paused`.
    fn admit_then(
        &self,
        spec: DomainSpec,
        paused: bool,
        attach: impl FnOnce(DomainId) -> Result<(), HostError>,
    ) -> Result<(), HostError> {
        let id = spec.id;
        self.admit(spec, true)?;
        if let Err(e) = attach(id) {
            // The attach's error is the one to report; a removal that
            // fails too leaves a paused domain without threads.
            let _removed = self.submit(Event::DomainRemoved(id));
            return Err(e);
        }
        if !paused {
            self.unpause(id)?;
        }
        Ok(())
    }

    /// Adopts every task of freezer cgroup `freezer` (a controller and the
    /// cgroup's directory; the caller owns and fills it, and keeps it) as
    /// the admitted domain `id`, a whole program as a gang: its `vcpus` is
    /// the number of CPUs the gang gets, and every task of the cgroup, those
    /// created later included, runs only in the domain's slots, on the
    /// domain's map CPUs, at its own policy (see `group`). Removing the
    /// domain or stopping the runtime thaws the cgroup and gives every task
    /// its affinity back. Needs a state directory (crash repair) and a
    /// shared pool. Admit the domain paused and unpause it after, as for
    /// [`Runtime::adopt_threads`]; on failure the domain stays admitted,
    /// without a group.
    pub fn adopt_group(
        &self,
        id: DomainId,
        freezer: (crate::cgroup::Controller, std::path::PathBuf),
    ) -> Result<(), HostError> {
        let dir = self.state_dir()?;
        if self.shared.shield.is_some() {
            return Err(HostError::Sys {
                what: format!(
                    "adopting {} as domain {id}: groups need a shared pool (an exclusive pool would have to move every task into its cpuset)",
                    freezer.1.display()
                ),
                source: std::io::Error::from(std::io::ErrorKind::Unsupported),
            });
        }
        let map = self.cpu_map(id).ok_or(HostError::UnknownDomain(id))?;
        let group = Arc::new(crate::group::AdoptedGroup::adopt(id, freezer, &map, &dir)?);
        self.edit_registry(|reg| {
            for vcpu in 0..map.len() as u32 {
                reg.insert(
                    VcpuRef { domain: id, vcpu },
                    Gate::Group(Arc::clone(&group)),
                );
            }
        });
        Ok(())
    }

    /// Adopts freezer cgroup `freezer` as a new domain (`spec.vcpus`: the
    /// CPUs its gang gets): [`Runtime::admit`] paused,
    /// [`Runtime::adopt_group`], then unpause unless `paused`. On failure
    /// nothing is left admitted.
    pub fn adopt_group_domain(
        &self,
        spec: DomainSpec,
        freezer: (crate::cgroup::Controller, std::path::PathBuf),
        paused: bool,
    ) -> Result<(), HostError> {
        if self.shared.config.state_dir.is_none() {
            return Err(HostError::NoStateDir);
        }
        self.admit_then(spec, paused, |id| self.adopt_group(id, freezer))
    }

    /// The state directory adoptions record what they change in (for the
    /// repair after a crash); adopting needs one.
    fn state_dir(&self) -> Result<std::path::PathBuf, HostError> {
        self.shared
            .config
            .state_dir
            .clone()
            .ok_or(HostError::NoStateDir)
    }

    /// The pool clock now (the time base of switches and traces).
    pub fn now(&self) -> Nanos {
        self.shared.clock.now()
    }

    /// The control block of a vCPU.
    pub fn control(&self, vcpu: VcpuRef) -> Option<Arc<VcpuControl>> {
        match self.shared.registry.read().ok()?.get(&vcpu)? {
            Gate::Own(c) => Some(Arc::clone(c)),
            Gate::Adopted(_) | Gate::Group(_) => None,
        }
    }

    /// Stops the dispatchers and every vCPU gate; returns what happened.
    pub fn stop(mut self) -> RuntimeReport {
        self.shutdown()
    }

    fn shutdown(&mut self) -> RuntimeReport {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.log.seq().fetch_add(1, Ordering::Release);
        sys::futex_wake_all(self.shared.log.seq());
        let mut report = RuntimeReport::default();
        for h in self.dispatchers.drain(..) {
            if let Ok(r) = h.join() {
                report.boundaries = report.boundaries.max(r.boundaries);
                report.violations.extend(r.violations);
                report.exited.extend(r.exited);
            }
        }
        let adopted: Vec<Gate> = self.edit_registry(|reg| {
            for gate in reg.values() {
                if let Gate::Own(c) = gate {
                    c.stop();
                }
            }
            let ids: Vec<VcpuRef> = reg
                .iter()
                .filter(|(_, g)| g.is_adopted())
                .map(|(v, _)| *v)
                .collect();
            ids.iter().filter_map(|v| reg.remove(v)).collect()
        });
        for gate in adopted {
            gate.release(self.shared.shield.as_ref());
        }
        report.switches = self.recent_switches();
        // Every thread is back to its own policy: the limit may come back.
        drop(self.rt_limit.take());
        report
    }

    /// What the dispatchers did since the runtime started, in total.
    pub fn counters(&self) -> CounterSnapshot {
        self.shared.counters.snapshot()
    }

    /// The recent switches of every dispatcher (at most
    /// [`SWITCH_LOG_CAPACITY`] per CPU), per CPU in time order: the record
    /// of what ran where, for `gang trace` and the CPU time a domain got.
    pub fn recent_switches(&self) -> Vec<Switch> {
        let mut all = Vec::new();
        for log in &self.shared.switch_log {
            let log = log.lock().unwrap_or_else(|p| p.into_inner());
            all.extend(log.iter().copied());
        }
        all.sort_by_key(|s| (s.cpu, s.at));
        all
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if !self.dispatchers.is_empty() {
            self.shutdown();
        }
    }
}

mod config;
mod counters;
mod dispatch;
pub use config::{
    host_slot_for, unlimited_host_slot_for, Isolation, RuntimeConfig, DISPATCHER_PRIORITY,
    HOST_DOMAIN,
};
pub use counters::{CounterSnapshot, LATE_SWITCH_NS};
use dispatch::{Dispatcher, DispatcherReport};
