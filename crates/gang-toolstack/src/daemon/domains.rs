//! Domain life cycle: create, pause, unpause, migrate, shutdown, reboot,
//! destroy, exits and their `on_*` actions, and re-attachment after a
//! daemon restart.
//!
//! A process domain's parts and who undoes them:
//!
//! | part | made by | undone by |
//! |---|---|---|
//! | store record | `create` | `destroy`, a failed `create`, action `destroy` |
//! | cgroups (freezer, memory) | `bring_up` | `tear_down` |
//! | admission in the pool's runtime | `bring_up`, `migrate` | `tear_down`, `migrate` |
//! | the process | `bring_up` (spawn) or the user (pid) | `tear_down` kills only what we spawned |
//! | adopted vCPU threads | `attach_threads` | the runtime's `remove_domain` |
//!
//! Every step that can fail comes before the ones that cannot be undone,
//! and a failure undoes the steps before it: a failed request leaves the
//! domain as it was.

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use gang_config::{Action, Command, DomainConfig, DomainType};
use gang_core::{CpuSet, DomainId, DomainSpec};
use gang_proto::{ApiError, ErrorCode, ResponseBody};
use rustix::process::Signal;
use serde::{Deserialize, Serialize};

use super::{internal, refused, store_error, Daemon};
use crate::domain_cgroup::DomainCgroup;
use crate::process::{self, Program, Tid};
use crate::store::{
    DomainRecord, DomainState, NewDomain, PoolId, PoolRecord, PoolRef, ProcessIdentity, Sched,
    ShutdownReason,
};

/// Guest RAM of a `pvh` domain without `memory`, MB.
const DEFAULT_VM_MEMORY_MB: u64 = 64;

/// How long a new process has to show its vCPU threads.
const THREAD_TIMEOUT: Duration = Duration::from_secs(10);

/// A restarted domain whose process lives less than this is not restarted
/// again (it would loop).
const MIN_LIFETIME: Duration = Duration::from_secs(1);

/// What the daemon keeps in the store about a running domain, to re-attach
/// it after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveRecord {
    /// The process.
    pub process: ProcessIdentity,
    /// Whether gang started it (else it was adopted by pid).
    pub spawned: bool,
    /// Its vCPU threads with their start times, once known.
    pub vcpu_threads: Option<Vec<(Tid, u64)>>,
    /// Where its output goes.
    pub console: PathBuf,
    /// Created paused: the FIFO its program waits on before it starts
    /// (opened by the first unpause).
    #[serde(default)]
    pub start_gate: Option<PathBuf>,
}

/// The live side of a running or paused domain.
pub(super) struct Live {
    pub(super) record: LiveRecord,
    /// Set when this daemon started the process (it can reap it and read its
    /// exit status).
    child: Option<Child>,
    /// Process domains: their cgroups (a VM gets empty ones).
    cgroup: DomainCgroup,
    /// A `pvh` domain: the micro-VM (its vCPU threads are the daemon's).
    pub(super) vm: Option<Box<gang_vmm::Vm>>,
    /// A shutdown or reboot asked for, not yet happened.
    requested: Option<ShutdownReason>,
    /// The pool runtime the domain is admitted to, if a gang pool.
    pub(super) admitted: Option<PoolId>,
    started: Instant,
}

impl Live {
    fn pid(&self) -> i32 {
        self.record.process.pid as i32
    }

    /// The vCPU thread ids, once known.
    pub(super) fn vcpu_tids(&self) -> Option<Vec<Tid>> {
        self.record
            .vcpu_threads
            .as_ref()
            .map(|v| v.iter().map(|t| t.0).collect())
    }

    pub(super) fn any_vcpu_running(&self) -> bool {
        let pid = self.pid();
        match self.vcpu_tids() {
            Some(tids) => tids
                .iter()
                .any(|&t| process::thread_state(pid, t) == Some('R')),
            None => process::threads(pid)
                .iter()
                .any(|&(t, _)| process::thread_state(pid, t) == Some('R')),
        }
    }

    pub(super) fn cpu_time_ns(&self) -> u64 {
        match (&self.vm, self.vcpu_tids()) {
            (Some(_), Some(tids)) => tids
                .iter()
                .map(|&t| process::cpu_time_ns(self.pid(), Some(t)))
                .sum(),
            _ => process::cpu_time_ns(self.pid(), None),
        }
    }

    /// Resident memory of the process, MB.
    pub(super) fn rss_mb(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))?
                    .split_whitespace()
                    .nth(1)?
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kb| kb.div_ceil(1024))
    }

    /// Whether the process ended; with its exit status when we are its
    /// parent.
    fn exited(&mut self) -> Option<Option<std::process::ExitStatus>> {
        if self.vm.is_some() {
            return None; // VMs report their end on the daemon's channel
        }
        if let Some(child) = &mut self.child {
            return match child.try_wait() {
                Ok(Some(status)) => Some(Some(status)),
                Ok(None) => None,
                Err(_) => (!process::is_alive(&self.record.process)).then_some(None),
            };
        }
        (!process::is_alive(&self.record.process)).then_some(None)
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, message)
}

fn config_of(rec: &DomainRecord) -> Result<DomainConfig, ApiError> {
    serde_json::from_str(&rec.config_json)
        .map_err(|e| internal(format!("domain {}: stored configuration: {e}", rec.name)))
}

fn new_uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[16..20],
        &h[20..32]
    )
}

impl Daemon {
    fn console_path(&self, id: DomainId) -> PathBuf {
        self.state_dir.join("console").join(format!("{}.log", id.0))
    }

    /// The CPUs a domain's process (all of it, or its non-vCPU threads in a
    /// gang pool) may use: a host pool's CPUs, else `Pool-0`'s.
    fn process_cpus(&self, pool: &PoolRecord) -> CpuSet {
        if pool.sched == Sched::Host {
            return pool.cpus.clone();
        }
        self.store
            .pool(&PoolRef::Id(PoolId::POOL0))
            .map(|p| p.cpus)
            .unwrap_or_else(|_| self.host_cpus.clone())
    }

    /// Re-applies host-pool CPU affinity to every live process (after CPUs
    /// moved between pools).
    pub(super) fn apply_host_affinity(&mut self) {
        let Ok(domains) = self.store.domains() else {
            return;
        };
        for d in domains {
            let (Some(live), Ok(pool)) =
                (self.live.get(&d.id), self.store.pool(&PoolRef::Id(d.pool)))
            else {
                continue;
            };
            let cpus = self.process_cpus(&pool);
            let pid = live.pid();
            let vcpus = live.vcpu_tids().unwrap_or_default();
            for (tid, _) in process::threads(pid) {
                // Adopted vCPU threads are pinned by their runtime.
                if live.admitted.is_some() && vcpus.contains(&tid) {
                    continue;
                }
                let list: Vec<_> = cpus.iter().collect();
                let _ = gang_host::sys::set_affinity(tid, &list);
            }
        }
    }

    /// `create`: checks the configuration, records the domain, brings it up;
    /// on any failure the record is removed again.
    pub(super) fn create(
        &mut self,
        config: serde_json::Value,
        paused: bool,
    ) -> Result<DomainId, ApiError> {
        let cfg: DomainConfig = serde_json::from_value(config.clone())
            .map_err(|e| bad(format!("not a domain configuration: {e}")))?;
        match cfg.domain_type {
            DomainType::Process => {}
            DomainType::Pvh => {
                if cfg.kernel.is_none() {
                    return Err(bad("a pvh domain needs `kernel` (an ELF image)"));
                }
            }
            DomainType::Pv | DomainType::Hvm => {
                return Err(refused(
                    "only type = \"process\" and type = \"pvh\" domains are supported",
                ))
            }
        }
        match (&cfg.command, cfg.pid) {
            _ if cfg.domain_type == DomainType::Pvh => {}
            (Some(_), Some(_)) => return Err(bad(
                "a process domain has either `command` (start it) or `pid` (adopt it), not both",
            )),
            (None, None) => {
                return Err(bad(
                    "a process domain needs `command` (a program to start) or `pid` (a running \
                     process to adopt)",
                ))
            }
            (None, Some(pid)) if process::identity(pid as i32).is_none() => {
                return Err(refused(format!("process {pid} does not exist")))
            }
            _ => {}
        }
        let policy = cfg
            .gang_policy
            .as_deref()
            .map(str::parse::<gang_core::Policy>)
            .transpose()
            .map_err(|e| bad(e.to_string()))?;
        let pool_arg = cfg
            .pool
            .clone()
            .unwrap_or_else(|| crate::store::POOL0_NAME.into());
        let pool = self
            .store
            .pool(&PoolRef::parse(&pool_arg))
            .map_err(store_error)?;
        let cpu_map = match (&cfg.cpus, pool.sched) {
            (Some(text), Sched::Gang) => Some(self.cpu_map_arg(text, cfg.vcpus, &pool, &cfg.name)?),
            _ => None,
        };
        let new = NewDomain {
            name: cfg.name.clone(),
            pool: PoolRef::Id(pool.id),
            vcpus: cfg.vcpus,
            memory_mb: cfg.memory_mb.unwrap_or(match cfg.domain_type {
                DomainType::Pvh => DEFAULT_VM_MEMORY_MB,
                _ => 0,
            }),
            config_json: config.to_string(),
            policy,
            cpu_map,
            state: if paused {
                DomainState::Paused
            } else {
                DomainState::Running
            },
            uuid: new_uuid(),
        };
        let id = self.store.create_domain(&new).map_err(store_error)?;
        if let Err(e) = self.bring_up(id, paused) {
            let _ = self.store.destroy_domain(id);
            let _ = std::fs::remove_file(self.console_path(id));
            return Err(e);
        }
        self.log(format!(
            "domain {} ({}) created in cpupool {}{}",
            id.0,
            cfg.name,
            pool.name,
            if paused { ", paused" } else { "" }
        ));
        Ok(id)
    }

    /// A CPU map argument: one CPU of the pool per vCPU, in CPU order.
    pub(super) fn cpu_map_arg(
        &self,
        text: &str,
        vcpus: u32,
        pool: &PoolRecord,
        name: &str,
    ) -> Result<Vec<gang_core::CpuId>, ApiError> {
        let set = CpuSet::parse(text, Some(&pool.cpus)).map_err(|e| bad(e.to_string()))?;
        if set.len() != vcpus as usize {
            return Err(bad(format!(
                "domain '{name}' has {vcpus} vcpu(s): its cpus in a gang pool name one cpu per \
                 vcpu, got {} ({set})",
                set.len()
            )));
        }
        if let Some(c) = set.iter().find(|&c| !pool.cpus.contains(c)) {
            return Err(bad(format!("cpu {c} is not in cpupool '{}'", pool.name)));
        }
        Ok(set.iter().collect())
    }

    /// What the pool's scheduler is asked for (no policy set: best effort).
    pub(super) fn spec_of(rec: &DomainRecord) -> DomainSpec {
        DomainSpec {
            id: rec.id,
            vcpus: rec.vcpus,
            cpu_map: rec.cpu_map.clone(),
            policy: rec.policy.unwrap_or_default(),
        }
    }

    /// Admits a domain to its gang pool's runtime (started if needed),
    /// paused there until its threads are attached (`start_in_runtime`), and
    /// records the CPU map the scheduler gave it.
    fn admit(&mut self, rec: &DomainRecord) -> Result<PoolId, ApiError> {
        let pool = self
            .store
            .pool(&PoolRef::Id(rec.pool))
            .map_err(store_error)?;
        let rt = self.ensure_runtime(&pool)?;
        let policy = rec.policy.unwrap_or_default();
        // Paused until its threads are attached (see `Runtime::add_gates`).
        let map = match rt.admit(Self::spec_of(rec), true) {
            Ok(map) => map,
            Err(e) => {
                self.stop_runtime_if_idle(pool.id);
                return Err(refused(e.to_string()));
            }
        };
        self.store
            .set_gang_params(rec.id, Some(&policy), Some(&map))
            .map_err(store_error)?;
        Ok(pool.id)
    }

    /// Starts a recorded domain: cgroups, admission, process, vCPU threads.
    /// Undoes everything it did when a step fails.
    pub(super) fn bring_up(&mut self, id: DomainId, paused: bool) -> Result<(), ApiError> {
        let rec = self.store.domain(&id.into()).map_err(store_error)?;
        let cfg = config_of(&rec)?;
        let pool = self
            .store
            .pool(&PoolRef::Id(rec.pool))
            .map_err(store_error)?;
        if cfg.domain_type == DomainType::Pvh {
            return self.bring_up_vm(&rec, &cfg, paused);
        }
        let cgroup = DomainCgroup::open(&self.hierarchy, &self.namespace, id, cfg.memory_mb)
            .map_err(|e| internal(e.to_string()))?;
        let undo_cgroup = |cg: DomainCgroup| {
            let _ = cg.remove();
        };
        let admitted = if pool.sched == Sched::Gang {
            match self.admit(&rec) {
                Ok(p) => Some(p),
                Err(e) => {
                    undo_cgroup(cgroup);
                    return Err(e);
                }
            }
        } else {
            None
        };
        let console = self.console_path(id);
        let start_gate = (paused && cfg.command.is_some()).then(|| console.with_extension("start"));
        let cpus = self.process_cpus(&pool);
        let started = match (&cfg.command, cfg.pid) {
            (Some(command), _) => {
                let program = match command {
                    Command::Argv(v) if !v.is_empty() => Program::Argv(v.clone()),
                    Command::Argv(_) => Program::Line(String::new()),
                    Command::Line(l) => Program::Line(l.clone()),
                };
                process::spawn(
                    &program,
                    &console,
                    &cgroup.procs_files(),
                    &cpus,
                    start_gate.as_deref(),
                )
                .map_err(|e| refused(e.to_string()))
                .and_then(|child| {
                    let pid = child.id() as i32;
                    // It may have ended already: its exit is handled like
                    // any other (on_poweroff, on_crash).
                    match process::identity_or_zombie(pid) {
                        Some(identity) => Ok((identity, Some(child), true)),
                        None => Err(refused(format!(
                            "the domain's command (pid {pid}) ended at once; see {}",
                            console.display()
                        ))),
                    }
                })
            }
            (None, Some(pid)) => {
                let pid = pid as i32;
                let _ = process::open_console(&console).map(|mut f| {
                    use std::io::Write as _;
                    let _ = writeln!(
                        f,
                        "gang: domain adopted from running process {pid}; its output is not captured"
                    );
                });
                match process::identity(pid) {
                    Some(identity) => cgroup
                        .add_process(pid)
                        .map(|()| {
                            process::set_process_affinity(pid, &cpus);
                            (identity, None, false)
                        })
                        .map_err(|e| refused(e.to_string())),
                    None => Err(refused(format!("process {pid} does not exist"))),
                }
            }
            (None, None) => Err(bad("no command and no pid")),
        };
        let started = started.and_then(|s| {
            if paused {
                cgroup
                    .set_frozen(true)
                    .map_err(|e| internal(e.to_string()))?;
            }
            Ok(s)
        });
        let (identity, child, spawned) = match started {
            Ok(s) => s,
            Err(e) => {
                if let Some(p) = admitted {
                    self.leave_runtime(id, p);
                }
                undo_cgroup(cgroup);
                return Err(e);
            }
        };
        let mut live = Live {
            record: LiveRecord {
                process: identity,
                spawned,
                vcpu_threads: None,
                console,
                start_gate,
            },
            child,
            cgroup,
            vm: None,
            requested: None,
            admitted,
            started: Instant::now(),
        };
        if !paused {
            if let Err(e) = self.attach_threads(&rec, &cfg, &mut live) {
                self.tear_down(id, live);
                return Err(e);
            }
        }
        self.save_live(id, &live);
        self.live.insert(id, live);
        Ok(())
    }

    /// Starts a `pvh` domain: the micro-VM (paused or running), admitted to
    /// its gang pool and handed to the runtime there.
    fn bring_up_vm(
        &mut self,
        rec: &DomainRecord,
        cfg: &DomainConfig,
        paused: bool,
    ) -> Result<(), ApiError> {
        let id = rec.id;
        let pool = self
            .store
            .pool(&PoolRef::Id(rec.pool))
            .map_err(store_error)?;
        let kernel = cfg.kernel.clone().unwrap_or_default();
        let mut vm_config =
            gang_vmm::VmConfig::new(id, PathBuf::from(&kernel), rec.memory_mb.max(2), rec.vcpus);
        vm_config.ramdisk = cfg.ramdisk.as_ref().map(|r| PathBuf::from(r).into());
        vm_config.cmdline = match (&cfg.cmdline, &cfg.root, &cfg.extra) {
            (Some(c), _, _) => c.clone(),
            (None, root, extra) => [root.as_ref().map(|r| format!("root={r}")), extra.clone()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" "),
        };
        let console = self.console_path(id);
        let out = process::open_console(&console).map_err(|e| internal(e.to_string()))?;
        let tx = std::sync::Mutex::new(self.vm_exits.0.clone());
        let on_exit: gang_vmm::OnExit = Box::new(move |exit| {
            let _ = tx.lock().map(|t| t.send(exit));
        });
        let mut vm = gang_vmm::Vm::create(vm_config, Box::new(out), on_exit)
            .map_err(|e| refused(format!("cannot create the VM: {e}")))?;
        let cgroup = DomainCgroup::open(&self.hierarchy, &self.namespace, id, None)
            .map_err(|e| internal(e.to_string()))?;
        let admitted = if pool.sched == Sched::Gang {
            match self.admit(rec) {
                Ok(p) => Some(p),
                Err(e) => {
                    let _ = cgroup.remove();
                    vm.destroy();
                    return Err(e);
                }
            }
        } else {
            None
        };
        let me = process::identity(std::process::id() as i32)
            .ok_or_else(|| internal("cannot read the daemon's own process"))?;
        let pid = me.pid as i32;
        let threads = vm
            .vcpu_threads()
            .into_iter()
            .map(|t| (t, process::thread_start(pid, t).unwrap_or(0)))
            .collect();
        let mut live = Live {
            record: LiveRecord {
                process: me,
                spawned: false,
                vcpu_threads: Some(threads),
                console,
                start_gate: None,
            },
            child: None,
            cgroup,
            vm: Some(Box::new(vm)),
            requested: None,
            admitted,
            started: Instant::now(),
        };
        let started = self.attach_threads(rec, cfg, &mut live).and_then(|()| {
            live.vm
                .as_mut()
                .map_or(Ok(()), |vm| vm.start(paused))
                .map_err(|e| internal(format!("starting the VM: {e}")))
        });
        if let Err(e) = started {
            self.tear_down(id, live);
            return Err(e);
        }
        self.save_live(id, &live);
        self.live.insert(id, live);
        Ok(())
    }

    fn save_live(&mut self, id: DomainId, live: &Live) {
        if let Ok(json) = serde_json::to_string(&live.record) {
            let _ = self.store.set_live(id, Some(&json));
        }
    }

    /// Finds the domain's vCPU threads (waiting for the process to create
    /// them) and, in a gang pool, has the runtime adopt them.
    fn attach_threads(
        &mut self,
        rec: &DomainRecord,
        cfg: &DomainConfig,
        live: &mut Live,
    ) -> Result<(), ApiError> {
        if let Some(vm) = &mut live.vm {
            if let Some(pool) = live.admitted {
                let rt = self
                    .runtimes
                    .get(&pool)
                    .ok_or_else(|| internal("the pool's runtime is not running"))?;
                let controls = rt.add_gates(rec.id).map_err(|e| internal(e.to_string()))?;
                let scheduler: std::sync::Arc<dyn gang_vmm::GangScheduler> = rt.clone();
                vm.attach(scheduler, controls)
                    .map_err(|e| internal(format!("handing the vCPUs to the pool: {e}")))?;
            }
            return self.start_in_runtime(rec, live);
        }
        let pid = live.pid();
        // A program may replace threads while it starts: a thread that is
        // gone by the time it is adopted is looked for again (3 tries).
        let mut attempt = 0;
        let threads = loop {
            attempt += 1;
            let tids = match live.vcpu_tids() {
                Some(t) if attempt == 1 => t,
                _ => match process::wait_vcpu_threads(
                    &live.record.process,
                    rec.vcpus,
                    cfg.vcpu_threads.as_deref(),
                    THREAD_TIMEOUT,
                ) {
                    Ok(t) => t,
                    // It ended: not an error of the request; its exit is
                    // handled by `poll_exits` with its status.
                    Err(process::ProcessError::Ended { .. }) => return Ok(()),
                    Err(e) => return Err(refused(e.to_string())),
                },
            };
            let threads: Vec<(Tid, u64)> = tids
                .iter()
                .map(|&t| (t, process::thread_start(pid, t).unwrap_or(0)))
                .collect();
            let Some(pool) = live.admitted else {
                break threads;
            };
            let rt = self
                .runtimes
                .get(&pool)
                .ok_or_else(|| internal("the pool's runtime is not running"))?;
            match rt.adopt_threads(rec.id, &tids) {
                Ok(()) => break threads,
                Err(_)
                    if attempt < 3 && tids.iter().any(|&t| !gang_host::adopt::thread_exists(t)) =>
                {
                    live.record.vcpu_threads = None;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(refused(format!("adopting the vCPU threads: {e}"))),
            }
        };
        // Recorded once adopted: a failed adoption is tried again by the
        // next unpause.
        live.record.vcpu_threads = Some(threads);
        self.start_in_runtime(rec, live)
    }

    /// A running domain, admitted paused to its runtime (see `admit`), runs
    /// there once every vCPU has its thread: all start in the same slot.
    fn start_in_runtime(&self, rec: &DomainRecord, live: &Live) -> Result<(), ApiError> {
        if rec.state != DomainState::Running {
            return Ok(());
        }
        match live.admitted.and_then(|p| self.runtimes.get(&p)) {
            Some(rt) => rt
                .unpause(rec.id)
                .map(|_| ())
                .map_err(|e| internal(e.to_string())),
            None => Ok(()),
        }
    }

    /// Removes a domain from a runtime (its threads given back) and stops
    /// the runtime if it has no domain left.
    fn leave_runtime(&mut self, id: DomainId, pool: PoolId) {
        if let Some(rt) = self.runtimes.get(&pool) {
            let _ = rt.remove_domain(id);
        }
        self.stop_runtime_if_idle(pool);
    }

    /// Ends a domain's live side: out of its runtime, its process killed if
    /// we started it (else given back), its cgroups removed.
    fn tear_down(&mut self, id: DomainId, mut live: Live) {
        if let Some(vm) = &mut live.vm {
            let _ = vm.detach();
        }
        if let Some(pool) = live.admitted.take() {
            self.leave_runtime(id, pool);
        }
        if let Some(mut vm) = live.vm.take() {
            vm.destroy();
        }
        if live.record.spawned && process::is_alive(&live.record.process) {
            let _ = process::signal(live.pid(), true, Signal::KILL);
            let _ = live.cgroup.set_frozen(false); // a frozen task dies when thawed
            let deadline = Instant::now() + Duration::from_secs(5);
            while process::is_alive(&live.record.process) && Instant::now() < deadline {
                if let Some(c) = &mut live.child {
                    if let Ok(Some(_)) = c.try_wait() {
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        if let Some(c) = &mut live.child {
            let _ = c.try_wait();
        }
        let _ = live.cgroup.remove();
        let _ = self.store.set_live(id, None);
    }

    pub(super) fn pause(&mut self, arg: &str) -> Result<(), ApiError> {
        let rec = self.domain_ref(arg)?;
        match rec.state {
            DomainState::Paused => return Ok(()),
            DomainState::Running => {}
            _ => return Err(refused(format!("domain '{}' is not running", rec.name))),
        }
        let live = self
            .live
            .get_mut(&rec.id)
            .ok_or_else(|| internal(format!("domain '{}' has no process", rec.name)))?;
        if let Some(vm) = &mut live.vm {
            vm.pause().map_err(|e| internal(e.to_string()))?;
        }
        live.cgroup
            .set_frozen(true)
            .map_err(|e| internal(e.to_string()))?;
        if let Some(pool) = live.admitted {
            if let Some(rt) = self.runtimes.get(&pool) {
                if let Err(e) = rt.pause(rec.id) {
                    let _ = live.cgroup.set_frozen(false);
                    return Err(internal(e.to_string()));
                }
            }
        }
        self.store
            .set_state(rec.id, &DomainState::Paused)
            .map_err(store_error)?;
        self.log(format!("domain {} ({}) paused", rec.id.0, rec.name));
        Ok(())
    }

    pub(super) fn unpause(&mut self, arg: &str) -> Result<(), ApiError> {
        let rec = self.domain_ref(arg)?;
        match rec.state {
            DomainState::Running => return Ok(()),
            DomainState::Paused => {}
            _ => return Err(refused(format!("domain '{}' is not paused", rec.name))),
        }
        let cfg = config_of(&rec)?;
        let mut live = self
            .live
            .remove(&rec.id)
            .ok_or_else(|| internal(format!("domain '{}' has no process", rec.name)))?;
        let result = (|| {
            live.cgroup
                .set_frozen(false)
                .map_err(|e| internal(e.to_string()))?;
            if let Some(vm) = &mut live.vm {
                vm.resume().map_err(|e| internal(e.to_string()))?;
            }
            if let Some(gate) = live.record.start_gate.take() {
                process::open_start_gate(&gate, &live.record.process)
                    .map_err(|e| internal(format!("starting the program: {e}")))?;
            }
            if live.record.vcpu_threads.is_none() {
                // Created paused: the program runs from now on, and shows its
                // threads.
                if let Err(e) = self.attach_threads(&rec, &cfg, &mut live) {
                    let _ = live.cgroup.set_frozen(true);
                    return Err(e);
                }
            }
            if let Some(pool) = live.admitted {
                if let Some(rt) = self.runtimes.get(&pool) {
                    rt.unpause(rec.id).map_err(|e| internal(e.to_string()))?;
                }
            }
            Ok(())
        })();
        self.save_live(rec.id, &live);
        self.live.insert(rec.id, live);
        result?;
        self.store
            .set_state(rec.id, &DomainState::Running)
            .map_err(store_error)?;
        self.log(format!("domain {} ({}) unpaused", rec.id.0, rec.name));
        Ok(())
    }

    /// `cpupool-migrate`, in any state. Admission in the target pool comes
    /// first: a refusal changes nothing.
    pub(super) fn migrate(&mut self, arg: &str, pool_arg: &str) -> Result<(), ApiError> {
        let rec = self.domain_ref(arg)?;
        let target = self
            .store
            .pool(&PoolRef::parse(pool_arg))
            .map_err(store_error)?;
        if target.id == rec.pool {
            return Ok(());
        }
        if target.cpus.is_empty() {
            return Err(store_error(crate::store::StoreError::PoolHasNoCpus(
                target.name,
            )));
        }
        let Some(mut live) = self.live.remove(&rec.id) else {
            // Not running: only the record moves.
            self.store.migrate(rec.id, target.id).map_err(store_error)?;
            return Ok(());
        };
        // The target's admission first, with the scheduler choosing CPUs.
        let mut moved = rec.clone();
        moved.pool = target.id;
        moved.cpu_map = None;
        let admitted = if target.sched == Sched::Gang {
            let rt = match self.ensure_runtime(&target) {
                Ok(rt) => rt,
                Err(e) => {
                    self.live.insert(rec.id, live);
                    return Err(e);
                }
            };
            // Paused until its threads are attached (`start_in_runtime`).
            if let Err(e) = rt.admit(Self::spec_of(&moved), true) {
                self.live.insert(rec.id, live);
                self.stop_runtime_if_idle(target.id);
                return Err(refused(e.to_string()));
            }
            Some(target.id)
        } else {
            None
        };
        if let Err(e) = self.store.migrate(rec.id, target.id) {
            if let Some(p) = admitted {
                self.leave_runtime(rec.id, p);
            }
            self.live.insert(rec.id, live);
            return Err(store_error(e));
        }
        // Leave the old pool: adopted threads are given back, a VM's vCPUs
        // go back to Linux scheduling.
        if let Some(vm) = &mut live.vm {
            let _ = vm.detach();
        }
        if let Some(old) = live.admitted.take() {
            self.leave_runtime(rec.id, old);
        }
        live.admitted = admitted;
        if let Some(p) = admitted {
            let map = self.runtimes.get(&p).and_then(|rt| rt.cpu_map(rec.id));
            let policy = rec.policy.unwrap_or_default();
            let _ = self
                .store
                .set_gang_params(rec.id, Some(&policy), map.as_deref());
        }
        let cpus = self.process_cpus(&target);
        process::set_process_affinity(live.pid(), &cpus);
        let mut result = Ok(());
        if live.record.vcpu_threads.is_some() || live.vm.is_some() {
            let cfg = config_of(&rec)?;
            result = self.attach_threads(&moved, &cfg, &mut live);
        }
        self.save_live(rec.id, &live);
        self.live.insert(rec.id, live);
        self.log(format!(
            "domain {} ({}) migrated to cpupool {}",
            rec.id.0, rec.name, target.name
        ));
        result
    }

    /// `shutdown` / `reboot`: asks the process to end (SIGTERM); its exit
    /// is then handled as that reason.
    pub(super) fn request_shutdown(
        &mut self,
        arg: &str,
        reason: ShutdownReason,
    ) -> Result<(), ApiError> {
        let rec = self.domain_ref(arg)?;
        let live = self
            .live
            .get_mut(&rec.id)
            .ok_or_else(|| refused(format!("domain '{}' is not running", rec.name)))?;
        live.requested = Some(reason);
        if let Some(vm) = &live.vm {
            let r = if reason == ShutdownReason::Reboot {
                vm.reboot()
            } else {
                vm.shutdown()
            };
            r.map_err(|e| refused(e.to_string()))?;
            self.log(format!(
                "domain {} ({}): {reason:?} requested",
                rec.id.0, rec.name
            ));
            return Ok(());
        }
        let group = live.record.spawned;
        process::signal(live.pid(), group, Signal::TERM)
            .map_err(|e| internal(format!("signalling process {}: {e}", live.pid())))?;
        let what = if reason == ShutdownReason::Reboot {
            "reboot"
        } else {
            "shutdown"
        };
        self.log(format!(
            "domain {} ({}): {what} requested",
            rec.id.0, rec.name
        ));
        Ok(())
    }

    /// `destroy`: at once, in any state.
    pub(super) fn destroy(&mut self, arg: &str) -> Result<(), ApiError> {
        let rec = self.domain_ref(arg)?;
        if let Some(live) = self.live.remove(&rec.id) {
            self.tear_down(rec.id, live);
        }
        self.store.destroy_domain(rec.id).map_err(store_error)?;
        let _ = std::fs::remove_file(self.console_path(rec.id));
        self.log(format!("domain {} ({}) destroyed", rec.id.0, rec.name));
        Ok(())
    }

    /// `console`: the file the domain's output goes to.
    pub(super) fn console(&mut self, arg: &str) -> Result<ResponseBody, ApiError> {
        let rec = self.domain_ref(arg)?;
        let path = self.console_path(rec.id);
        if !path.exists() {
            return Err(refused(format!(
                "domain '{}' has no console output",
                rec.name
            )));
        }
        Ok(ResponseBody::Console {
            path: path.display().to_string(),
            live: self.live.contains_key(&rec.id),
        })
    }

    /// `console` input: to a VM's serial port.
    pub(super) fn console_input(&mut self, arg: &str, bytes: &[u8]) -> Result<(), ApiError> {
        let rec = self.domain_ref(arg)?;
        let live = self
            .live
            .get(&rec.id)
            .ok_or_else(|| refused(format!("domain '{}' is not running", rec.name)))?;
        match &live.vm {
            Some(vm) => {
                vm.console_input(bytes);
                Ok(())
            }
            None => Err(refused(format!(
                "domain '{}' is a process: its console is output only (its stdin is /dev/null)",
                rec.name
            ))),
        }
    }

    /// Notices domains whose process ended and applies their actions.
    pub fn poll_exits(&mut self) {
        let ended: Vec<(DomainId, Option<std::process::ExitStatus>)> = self
            .live
            .iter_mut()
            .filter_map(|(id, live)| live.exited().map(|s| (*id, s)))
            .collect();
        for (id, status) in ended {
            if let Some(live) = self.live.remove(&id) {
                let (reason, detail) = process_exit(live.requested, status);
                self.handle_exit(id, live, reason, detail);
            }
        }
        while let Ok(exit) = self.vm_exits.1.try_recv() {
            if let Some(live) = self.live.remove(&exit.id) {
                let (reason, detail) = match exit.reason {
                    gang_vmm::ExitReason::Poweroff => (
                        live.requested.unwrap_or(ShutdownReason::Poweroff),
                        "the guest powered off".to_string(),
                    ),
                    gang_vmm::ExitReason::Reboot => {
                        (ShutdownReason::Reboot, "the guest rebooted".to_string())
                    }
                    gang_vmm::ExitReason::Crash(why) => {
                        (ShutdownReason::Crash, format!("the guest crashed: {why}"))
                    }
                };
                self.handle_exit(exit.id, live, reason, detail);
            }
        }
    }

    fn handle_exit(&mut self, id: DomainId, live: Live, reason: ShutdownReason, detail: String) {
        let Ok(rec) = self.store.domain(&id.into()) else {
            return;
        };
        let is_vm = live.vm.is_some();
        let lived = live.started.elapsed();
        let pid = live.pid();
        self.tear_down(id, live);
        let cfg = config_of(&rec).ok();
        let action = cfg.as_ref().map_or(Action::Destroy, |c| match reason {
            ShutdownReason::Reboot => c.on_reboot,
            ShutdownReason::Crash => c.on_crash,
            ShutdownReason::Watchdog => c.on_watchdog,
            _ => c.on_poweroff,
        });
        let what = match reason {
            ShutdownReason::Reboot => "rebooted",
            ShutdownReason::Crash => "crashed",
            _ => "shut down",
        };
        self.log(format!(
            "domain {} ({}) {what}: {}{detail}; action {action:?}",
            id.0,
            rec.name,
            if is_vm {
                String::new()
            } else {
                format!("process {pid} ")
            }
        ));
        let preserved = if reason == ShutdownReason::Crash {
            DomainState::Crashed {
                reason: detail.clone(),
            }
        } else {
            DomainState::Shutdown { reason }
        };
        match action {
            Action::Destroy | Action::CoredumpDestroy => {
                let _ = self.store.destroy_domain(id);
                let _ = std::fs::remove_file(self.console_path(id));
            }
            Action::Preserve => {
                let _ = self.store.set_state(id, &preserved);
            }
            Action::Restart | Action::RenameRestart | Action::CoredumpRestart => {
                if lived < MIN_LIFETIME && reason != ShutdownReason::Reboot {
                    let _ = self.store.set_state(
                        id,
                        &DomainState::Crashed {
                            reason: format!(
                                "{detail} after {lived:?}; not restarted (it would loop)"
                            ),
                        },
                    );
                    return;
                }
                let _ = self.store.set_state(id, &DomainState::Running);
                if let Err(e) = self.bring_up(id, false) {
                    self.log(format!(
                        "domain {} ({}): restart failed: {e}",
                        id.0, rec.name
                    ));
                    let _ = self.store.set_state(
                        id,
                        &DomainState::Crashed {
                            reason: format!("restart failed: {e}"),
                        },
                    );
                } else {
                    self.log(format!("domain {} ({}) restarted", id.0, rec.name));
                }
            }
        }
    }

    /// At start: re-attaches every running or paused domain whose process
    /// lives; marks the others crashed.
    pub(super) fn recover(&mut self) {
        let Ok(domains) = self.store.domains() else {
            return;
        };
        let mut kept = Vec::new();
        for rec in domains {
            let paused = match rec.state {
                DomainState::Running => false,
                DomainState::Paused => true,
                _ => continue,
            };
            if config_of(&rec).is_ok_and(|c| c.domain_type == DomainType::Pvh) {
                self.mark_crashed(&rec, "its VM ran in the daemon, which ended".into());
                continue;
            }
            let record: Option<LiveRecord> = rec
                .live_json
                .as_deref()
                .and_then(|j| serde_json::from_str(j).ok());
            let alive = record
                .as_ref()
                .is_some_and(|r| process::is_alive(&r.process));
            let pid = record.as_ref().map_or(0, |r| r.process.pid);
            let Some(record) = record.filter(|_| alive) else {
                let reason = format!("its process ({pid}) ended while the daemon was not running");
                self.mark_crashed(&rec, reason);
                continue;
            };
            match self.reattach(&rec, record, paused) {
                Ok(()) => {
                    kept.push(rec.id);
                    self.log(format!("domain {} ({}) re-attached", rec.id.0, rec.name));
                }
                Err(e) => self.mark_crashed(&rec, format!("could not be re-attached: {e}")),
            }
        }
        crate::domain_cgroup::sweep(&self.hierarchy, &self.namespace, &kept);
    }

    /// Recovery: a domain that cannot run again is shown crashed, with why.
    fn mark_crashed(&mut self, rec: &DomainRecord, reason: String) {
        self.log(format!(
            "domain {} ({}) crashed: {reason}",
            rec.id.0, rec.name
        ));
        let _ = self
            .store
            .set_state(rec.id, &DomainState::Crashed { reason });
        let _ = self.store.set_live(rec.id, None);
    }

    fn reattach(
        &mut self,
        rec: &DomainRecord,
        mut record: LiveRecord,
        paused: bool,
    ) -> Result<(), ApiError> {
        let cfg = config_of(rec)?;
        let cgroup = DomainCgroup::open(&self.hierarchy, &self.namespace, rec.id, cfg.memory_mb)
            .map_err(|e| internal(e.to_string()))?;
        let pid = record.process.pid as i32;
        cgroup
            .add_process(pid)
            .and_then(|()| cgroup.set_frozen(paused))
            .map_err(|e| internal(e.to_string()))?;
        // Threads that are gone or were replaced are found again.
        if let Some(threads) = &record.vcpu_threads {
            if threads
                .iter()
                .any(|&(t, start)| process::thread_start(pid, t) != Some(start))
            {
                record.vcpu_threads = None;
            }
        }
        let pool = self
            .store
            .pool(&PoolRef::Id(rec.pool))
            .map_err(store_error)?;
        let admitted = if pool.sched == Sched::Gang {
            Some(self.admit(rec)?)
        } else {
            None
        };
        let mut live = Live {
            record,
            child: None,
            cgroup,
            vm: None,
            requested: None,
            admitted,
            started: Instant::now(),
        };
        if live.record.vcpu_threads.is_some() || !paused {
            if let Err(e) = self.attach_threads(rec, &cfg, &mut live) {
                if let Some(p) = live.admitted.take() {
                    self.leave_runtime(rec.id, p);
                }
                return Err(e);
            }
        }
        self.save_live(rec.id, &live);
        self.live.insert(rec.id, live);
        Ok(())
    }
}

/// Why a process ended: the shutdown asked for, else its exit status.
fn process_exit(
    requested: Option<ShutdownReason>,
    status: Option<std::process::ExitStatus>,
) -> (ShutdownReason, String) {
    use std::os::unix::process::ExitStatusExt as _;
    match (requested, status) {
        (Some(r), _) => (r, "as requested".to_string()),
        (None, Some(s)) if s.success() => (ShutdownReason::Poweroff, "exited".into()),
        (None, Some(s)) => match (s.code(), s.signal()) {
            (Some(c), _) => (ShutdownReason::Crash, format!("exited with status {c}")),
            (_, Some(sig)) => (ShutdownReason::Crash, format!("killed by signal {sig}")),
            _ => (ShutdownReason::Crash, "ended".into()),
        },
        (None, None) => (
            ShutdownReason::Poweroff,
            "ended (exit status unknown: it was started by an earlier daemon or adopted)".into(),
        ),
    }
}
