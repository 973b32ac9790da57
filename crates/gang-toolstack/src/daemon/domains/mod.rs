//! Domain life cycle: create, pause, unpause, migrate, shutdown, reboot,
//! destroy, exits and their `on_*` actions, and re-attachment after a
//! daemon restart. What differs between kinds of domain (processes,
//! micro-VMs, QEMU guests) is in `backend`; this module holds what is the
//! same for all of them.
//!
//! A domain's parts and who undoes them:
//!
//! | part | made by | undone by |
//! |---|---|---|
//! | store record | `create` | `destroy`, a failed `create`, action `destroy` |
//! | cgroups (freezer, memory) | `bring_up` | the backend's `tear_down` |
//! | admission in the pool's runtime | `bring_up`, `migrate` | `tear_down`, `migrate` |
//! | the process, VM or QEMU (and its taps) | the backend's start (or the user: `pid`) | the backend's `tear_down` kills only what gang started |
//! | adopted or gated vCPU threads | `attach_threads` | the runtime's `remove_domain` (after the backend's `detach`) |
//!
//! Every step that can fail comes before the ones that cannot be undone,
//! and a failure undoes the steps before it: a failed request leaves the
//! domain as it was.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use gang_config::{Action, DomainConfig, DomainType};
use gang_core::{CpuSet, DomainId, DomainSpec};
use gang_host::best_effort;
use gang_proto::{ApiError, ResponseBody, TraceEventKind};

use super::backend::microvm::MicroVmBackend;
use super::backend::process::ProcessBackend;
use super::backend::qemu::{QemuBackend, QemuPlace};
use super::backend::{Backend, Ended, LiveRecord};
use super::{bad, internal, refused, store_error, Daemon};
use crate::domain_cgroup::DomainCgroup;
use crate::process::{self, Tid};
use crate::store::{
    DomainRecord, DomainState, NewDomain, PoolId, PoolRecord, PoolRef, Sched, ShutdownReason,
};

mod exits;
mod live;
pub(super) use live::Live;

/// Guest RAM of a QEMU domain without `memory`, MB (xl's default for HVM).
const DEFAULT_QEMU_MEMORY_MB: u64 = 128;

/// A restarted domain whose process lives less than this is not restarted
/// again (it would loop).
const MIN_LIFETIME: Duration = Duration::from_secs(1);

/// The live record a domain's store row keeps, if any.
fn record_of(rec: &DomainRecord) -> Option<LiveRecord> {
    rec.live_json
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok())
}

/// After a failed re-attachment: what gang started for the domain is ended
/// (a QEMU or a command nobody controls any more would run on unseen), what
/// it adopted is left to its owner.
fn end_orphan(record: &Option<LiveRecord>) {
    let Some(record) = record else { return };
    if record.spawned && process::is_alive(&record.process) {
        if let Err(e) = process::signal(record.pid(), true, rustix::process::Signal::KILL) {
            tracing::warn!(
                "ending process {} of a domain that crashed: {e}",
                record.pid()
            );
        }
    }
    if let Some(q) = &record.qemu {
        let deadline = Instant::now() + Duration::from_secs(3);
        while process::is_alive(&record.process) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        super::backend::qemu::remove_leftovers(q);
    }
}

/// Which backend runs a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Process,
    MicroVm,
    Qemu,
}

fn kind_of(cfg: &DomainConfig) -> Result<Kind, ApiError> {
    use gang_config::DeviceModel;
    match (cfg.domain_type, cfg.device_model) {
        (DomainType::Process, None) => Ok(Kind::Process),
        (DomainType::Process, Some(_)) => {
            Err(bad("device_model: a process domain has no device model"))
        }
        (DomainType::Hvm, None | Some(DeviceModel::Qemu)) => Ok(Kind::Qemu),
        (DomainType::Hvm, Some(DeviceModel::Gang)) => Err(refused(
            "device_model = \"gang\": an hvm guest needs QEMU (gang's micro-VM boots PVH \
             kernels only; use type = \"pvh\")",
        )),
        (DomainType::Pvh, None | Some(DeviceModel::Gang)) => Ok(Kind::MicroVm),
        (DomainType::Pvh, Some(DeviceModel::Qemu)) => Ok(Kind::Qemu),
        (DomainType::Pv, _) => Err(refused(
            "type = \"pv\" needs Xen's PV interfaces: use type = \"hvm\" (a guest in QEMU), \
             \"pvh\" or \"process\"",
        )),
    }
}

fn config_of(rec: &DomainRecord) -> Result<DomainConfig, ApiError> {
    serde_json::from_str(&rec.config_json)
        .map_err(|e| internal(format!("domain {}: stored configuration: {e}", rec.name)))
}

fn new_uuid() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
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
                // Adopted vCPU threads (a whole program's: all of them) are
                // pinned by their runtime.
                if live.admitted.is_some() && (live.record.group || vcpus.contains(&tid)) {
                    continue;
                }
                let list: Vec<_> = cpus.iter().collect();
                process::set_thread_affinity(tid, &list);
            }
        }
    }

    /// `create`: checks the configuration, records the domain, brings it up;
    /// on any failure the record is removed again.
    pub(super) fn create(&mut self, cfg: DomainConfig, paused: bool) -> Result<DomainId, ApiError> {
        let kind = kind_of(&cfg)?;
        match kind {
            Kind::Process => {}
            Kind::MicroVm if cfg.kernel.is_none() => {
                return Err(bad("a pvh domain needs `kernel` (an ELF image)"))
            }
            Kind::MicroVm => {}
            Kind::Qemu if cfg.kernel.is_none() && cfg.disks.is_empty() => {
                return Err(bad(format!(
                    "domain '{}' has nothing to boot: give `kernel` (and `ramdisk`, `extra`) \
                     or a `disk`",
                    cfg.name
                )))
            }
            Kind::Qemu => {}
        }
        let adopted: Vec<u32> = cfg.pid.iter().chain(&cfg.pids).copied().collect();
        match (&cfg.command, adopted.is_empty()) {
            _ if kind != Kind::Process => {}
            (Some(_), false) => {
                return Err(bad(
                    "a process domain has either `command` (start it) or `pid`/`pids` (adopt \
                 them), not both",
                ))
            }
            (None, true) if cfg.cgroup.is_none() => {
                return Err(bad(
                    "a process domain needs `command` (a program to start), `pid` (a running \
                     process to adopt), `pids` (a job of several) or `cgroup` (a job's cgroup)",
                ))
            }
            _ => {}
        }
        if cfg.cgroup.is_some() && cfg.vcpu_threads.is_some() {
            return Err(bad(
                "a job's cgroup is gang-scheduled as a whole program: leave out `vcpu_threads`",
            ));
        }
        if cfg.user.is_some() || cfg.group.is_some() {
            if kind != Kind::Process || cfg.command.is_none() {
                return Err(bad(
                    "`user` and `group` apply to a process domain's `command`: processes \
                     adopted by `pid`, `pids` or `cgroup` keep their own users, and QEMU runs \
                     as the daemon's --qemu-user",
                ));
            }
            // An unknown name is refused before anything is made.
            process::RunAs::resolve(cfg.user.as_deref(), cfg.group.as_deref()).map_err(refused)?;
        }
        if let Some(pid) = adopted
            .iter()
            .find(|&&p| process::identity(p as i32).is_none())
        {
            return Err(refused(format!("process {pid} does not exist")));
        }
        let policy = cfg
            .gang_policy
            .as_deref()
            .map(str::parse::<gang_core::Policy>)
            .transpose()
            .map_err(|e| bad(format!("gang_policy: {e}")))?;
        let pool_arg = cfg
            .pool
            .clone()
            .unwrap_or_else(|| crate::store::POOL0_NAME.into());
        let pool = self
            .store
            .pool(&PoolRef::parse(&pool_arg))
            .map_err(store_error)?;
        let policy = match &cfg.gang_group {
            None => policy,
            Some(group) => {
                if pool.time.is_none() || pool.sched != Sched::Gang {
                    return Err(refused(format!(
                        "gang_group = \"{group}\": a cluster gang runs in a gang pool on a shared \
                         clock, and cpupool '{}' is not one (cpupool-create ... clock=\"tai\" \
                         base=\"...\")",
                        pool.name
                    )));
                }
                let tt = policy.ok_or_else(|| {
                    refused(format!(
                        "gang_group = \"{group}\": a cluster gang needs gang_policy = \
                         \"tt,PERIOD,ACTIVE\""
                    ))
                })?;
                Some(tt.for_cluster_gang(group, gang_core::MS).map_err(refused)?)
            }
        };
        let cpu_map = match (&cfg.cpus, pool.sched) {
            (Some(text), Sched::Gang) => {
                let list = gang_core::CpuList::parse(text).map_err(|e| bad(e.to_string()))?;
                Some(self.cpu_map_arg(&list, cfg.vcpus, &pool, &cfg.name)?)
            }
            _ => None,
        };
        let new = NewDomain {
            name: cfg.name.clone(),
            pool: PoolRef::Id(pool.id),
            vcpus: cfg.vcpus,
            memory_mb: cfg.memory_mb.unwrap_or(match kind {
                Kind::MicroVm => super::backend::microvm::DEFAULT_MEMORY_MB,
                Kind::Qemu => DEFAULT_QEMU_MEMORY_MB,
                Kind::Process => 0,
            }),
            config_json: serde_json::to_string(&cfg)
                .map_err(|e| internal(format!("domain '{}': its configuration: {e}", cfg.name)))?,
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
            let e = self.with_names(e); // while the record is there
            self.forget(id);
            return Err(e);
        }
        let vnc = self
            .live
            .get(&id)
            .and_then(|l| l.record.qemu.as_ref()?.vnc.clone())
            .map_or_else(String::new, |v| format!("; VNC display on {v}"));
        let line = format!(
            "domain {} ({}) created in cpupool {}{}{vnc}",
            id.0,
            cfg.name,
            pool.name,
            if paused { ", paused" } else { "" }
        );
        self.log_event(pool.id, id, TraceEventKind::Admission, line);
        Ok(id)
    }

    /// Removes a domain's record and console (a failed create, action
    /// `destroy`).
    fn forget(&mut self, id: DomainId) {
        if let Err(e) = self.store.destroy_domain(id) {
            self.log(format!("domain {}: removing its record: {e}", id.0));
        }
        self.remove_console_files(id);
    }

    /// Removes a domain's console file and QEMU's log.
    fn remove_console_files(&self, id: DomainId) {
        let console = self.console_path(id);
        for f in [console.clone(), console.with_extension("qemu.log")] {
            if let Err(e) = std::fs::remove_file(&f) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("{}: {e}", f.display());
                }
            }
        }
    }

    /// A CPU map argument: one CPU of the pool per vCPU, in CPU order.
    pub(super) fn cpu_map_arg(
        &self,
        list: &gang_core::CpuList,
        vcpus: u32,
        pool: &PoolRecord,
        name: &str,
    ) -> Result<Vec<gang_core::CpuId>, ApiError> {
        let set = list
            .resolve(Some(&pool.cpus))
            .map_err(|e| bad(e.to_string()))?;
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
        let policy = rec.policy.unwrap_or_default();
        Self::check_cycle(&pool, &policy)?;
        let rt = self.ensure_runtime(&pool)?;
        // Paused until its threads are attached (see `Runtime::add_gates`).
        let map = match rt.admit(Self::spec_of(rec), true) {
            Ok(map) => map,
            Err(e) => {
                self.count_refusal(&pool.name);
                self.stop_runtime_if_idle(pool.id);
                return Err(refused(e.to_string()));
            }
        };
        self.store
            .set_gang_params(rec.id, Some(&policy), Some(&map))
            .map_err(store_error)?;
        Ok(pool.id)
    }

    /// Starts a recorded domain: its backend (process, VM or QEMU),
    /// admission, vCPU threads. Undoes everything it did when a step fails.
    pub(super) fn bring_up(&mut self, id: DomainId, paused: bool) -> Result<(), ApiError> {
        let rec = self.store.domain(&id.into()).map_err(store_error)?;
        let cfg = config_of(&rec)?;
        let kind = kind_of(&cfg)?;
        let pool = self
            .store
            .pool(&PoolRef::Id(rec.pool))
            .map_err(store_error)?;
        let console = self.console_path(id);
        let cpus = self.process_cpus(&pool);
        if kind == Kind::Qemu {
            self.choose_qemu_settings()?;
        }
        // Admission first: a refusal starts nothing.
        let admitted = if pool.sched == Sched::Gang {
            Some(self.admit(&rec)?)
        } else {
            None
        };
        let backend = self.start_backend(kind, &rec, &cfg, console, &cpus, paused);
        let (backend, record) = match backend {
            Ok(b) => b,
            Err(e) => {
                if let Some(p) = admitted {
                    self.leave_runtime(id, p);
                }
                return Err(e);
            }
        };
        let mut live = Live::new(record, backend);
        live.admitted = admitted;
        // A process created paused shows its threads only once it runs.
        let threads_now = kind != Kind::Process || !paused;
        let result = if threads_now {
            self.attach_threads(&rec, &cfg, &mut live)
        } else {
            Ok(())
        };
        let result = result.and_then(|()| live.backend.start(paused));
        if let Err(e) = result {
            self.tear_down(id, live);
            return Err(e);
        }
        self.save_live(id, &live);
        self.live.insert(id, live);
        Ok(())
    }

    /// The domain's cgroup: gang's own (`<namespace>-d<ID>`), or the job
    /// cgroup a launcher made (`cgroup = PATH`).
    fn domain_cgroup(
        &self,
        cfg: &DomainConfig,
        id: DomainId,
        memory_mb: Option<u64>,
    ) -> Result<DomainCgroup, ApiError> {
        match &cfg.cgroup {
            Some(path) => DomainCgroup::external(&self.hierarchy, std::path::Path::new(path))
                .map_err(|e| refused(e.to_string())),
            None => DomainCgroup::open(&self.hierarchy, &self.namespace, id, memory_mb)
                .map_err(|e| internal(e.to_string())),
        }
    }

    /// Chooses QEMU's accelerator once per daemon (measured: see
    /// `gang_qemu::accel`) and says so in `dmesg`.
    fn choose_qemu_settings(&mut self) -> Result<(), ApiError> {
        if self.qemu_settings.is_some() {
            return Ok(());
        }
        let choice =
            gang_qemu::accel::choose(self.qemu_accel).map_err(|e| refused(e.to_string()))?;
        let accel = match choice.accelerator {
            gang_qemu::accel::Accelerator::Kvm => gang_qemu::args::Accel::Kvm,
            gang_qemu::accel::Accelerator::Tcg => gang_qemu::args::Accel::Tcg,
        };
        self.log(format!("QEMU guests use {accel:?}: {}", choice.reason));
        self.qemu_settings = Some(super::backend::qemu::QemuSettings {
            accel,
            accel_reason: choice.reason,
            run_as: self.qemu_user.clone(),
        });
        Ok(())
    }

    /// Makes the domain's backend: the process, VM or QEMU, with its
    /// cgroups; on failure nothing of it is left.
    fn start_backend(
        &self,
        kind: Kind,
        rec: &DomainRecord,
        cfg: &DomainConfig,
        console: PathBuf,
        cpus: &CpuSet,
        paused: bool,
    ) -> Result<(Box<dyn Backend>, LiveRecord), ApiError> {
        let id = rec.id;
        Ok(match kind {
            Kind::MicroVm => {
                let (b, r) = MicroVmBackend::create(id, cfg, rec.memory_mb, rec.vcpus, console)?;
                (Box::new(b), r)
            }
            Kind::Process | Kind::Qemu => {
                // QEMU's memory is the guest's plus its own: no limit.
                let limit = (kind == Kind::Process).then_some(cfg.memory_mb).flatten();
                let cgroup = self.domain_cgroup(cfg, id, limit)?;
                let started = if kind == Kind::Process {
                    ProcessBackend::start(cfg, cgroup, &console, cpus, paused)
                        .map(|(b, r)| (Box::new(b) as Box<dyn Backend>, r))
                } else {
                    let settings = self
                        .qemu_settings
                        .clone()
                        .ok_or_else(|| internal("QEMU settings not chosen"))?;
                    let place = QemuPlace {
                        id,
                        dir: self.state_dir.join("qemu").join(id.0.to_string()),
                        console,
                        cpus,
                    };
                    QemuBackend::start(cfg, &place, &settings, cgroup)
                        .map(|(b, r)| (Box::new(b) as Box<dyn Backend>, r))
                };
                match started {
                    Ok(s) => s,
                    Err(failed) => {
                        let (e, cgroup) = *failed;
                        if let Err(err) = cgroup.remove() {
                            tracing::warn!("domain {}: removing its cgroups: {err}", id.0);
                        }
                        return Err(e);
                    }
                }
            }
        })
    }

    fn save_live(&mut self, id: DomainId, live: &Live) {
        let saved = serde_json::to_string(&live.record)
            .map_err(|e| e.to_string())
            .and_then(|json| {
                self.store
                    .set_live(id, Some(&json))
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = saved {
            // The domain runs; only a daemon restart would lose track of it.
            self.log(format!(
                "domain {}: recording its process failed ({e}): it will not be re-attached \
                 after a daemon restart",
                id.0
            ));
        }
    }

    /// Finds the domain's vCPU threads (waiting for a new process to create
    /// them) and, in a gang pool, hands them to the runtime.
    fn attach_threads(
        &mut self,
        rec: &DomainRecord,
        cfg: &DomainConfig,
        live: &mut Live,
    ) -> Result<(), ApiError> {
        let pid = live.pid();
        // A program may replace threads while it starts: a thread that is
        // gone by the time it is adopted is looked for again (3 tries).
        let mut attempt = 0;
        let threads = loop {
            attempt += 1;
            let tids = match live.vcpu_tids() {
                Some(t) if attempt == 1 => t,
                _ => match live.backend.vcpu_threads(
                    &live.record,
                    rec.vcpus,
                    cfg.vcpu_threads.as_deref(),
                )? {
                    Some(t) => t,
                    // It ended: not an error of the request; its end is
                    // handled by `poll_exits`.
                    None => return Ok(()),
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
            match live.backend.attach(rt, rec.id, &tids) {
                Ok(()) => break threads,
                Err(_)
                    if attempt < 3 && tids.iter().any(|&t| !gang_host::adopt::thread_exists(t)) =>
                {
                    live.record.vcpu_threads = None;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        };
        // Recorded once attached: a failed attachment is tried again by the
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
            if let Err(e) = rt.remove_domain(id) {
                self.log(format!("domain {}: leaving its pool's runtime: {e}", id.0));
            }
        }
        self.stop_runtime_if_idle(pool);
    }

    /// Ends a domain's live side: out of its runtime, then its backend torn
    /// down (what gang started is ended, what it adopted given back).
    fn tear_down(&mut self, id: DomainId, mut live: Live) {
        live.backend.detach();
        if let Some(pool) = live.admitted.take() {
            self.leave_runtime(id, pool);
        }
        live.backend.tear_down(&live.record);
        if let Err(e) = self.store.set_live(id, None) {
            self.log(format!("domain {}: clearing its process record: {e}", id.0));
        }
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
        // The backend first, while the vCPUs still get their slots (QEMU
        // waits for every vCPU to stop).
        live.backend.pause(&live.record)?;
        if let Some(pool) = live.admitted {
            if let Some(rt) = self.runtimes.get(&pool) {
                if let Err(e) = rt.pause(rec.id) {
                    if let Err(undo) = live.backend.resume(&mut live.record) {
                        tracing::warn!("domain {}: undoing its pause: {undo}", rec.name);
                    }
                    return Err(internal(e.to_string()));
                }
            }
        }
        self.store
            .set_state(rec.id, &DomainState::Paused)
            .map_err(store_error)?;
        let line = format!("domain {} ({}) paused", rec.id.0, rec.name);
        self.log_event(rec.pool, rec.id, TraceEventKind::Pause, line);
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
            if live.record.vcpu_threads.is_none() {
                // Created paused: the program runs from now on and shows its
                // threads; the runtime lets it run once all are attached.
                live.backend.resume(&mut live.record)?;
                let running = DomainRecord {
                    state: DomainState::Running,
                    ..rec.clone()
                };
                if let Err(e) = self.attach_threads(&running, &cfg, &mut live) {
                    if let Err(undo) = live.backend.pause(&live.record) {
                        tracing::warn!("domain {}: pausing it again: {undo}", rec.name);
                    }
                    return Err(e);
                }
                return Ok(());
            }
            // The runtime first: a vCPU let run by the backend gets its
            // slots at once.
            if let Some(pool) = live.admitted {
                if let Some(rt) = self.runtimes.get(&pool) {
                    rt.unpause(rec.id).map_err(|e| internal(e.to_string()))?;
                }
            }
            live.backend.resume(&mut live.record)
        })();
        self.save_live(rec.id, &live);
        self.live.insert(rec.id, live);
        result?;
        self.store
            .set_state(rec.id, &DomainState::Running)
            .map_err(store_error)?;
        let line = format!("domain {} ({}) unpaused", rec.id.0, rec.name);
        self.log_event(rec.pool, rec.id, TraceEventKind::Unpause, line);
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
        // What the target cannot run is refused before anything moves: an
        // exclusive gang pool cannot run a whole program (its runtime would
        // have to move every task of the program into its cpuset). A paused
        // one may go there, as it may be created there paused: it stays
        // paused, and `unpause` says why it cannot run.
        if live.record.group
            && rec.state != DomainState::Paused
            && target.sched == Sched::Gang
            && !target.shared
        {
            self.live.insert(rec.id, live);
            return Err(refused(format!(
                "domain '{}' is a whole program (no vcpu_threads): cpupool '{}' is an exclusive \
                 gang pool, which runs named vCPU threads only; use a shared gang pool \
                 (shared=1) or name its vCPU threads",
                rec.name, target.name
            )));
        }
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
                self.count_refusal(&target.name);
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
        live.backend.detach();
        if let Some(old) = live.admitted.take() {
            self.leave_runtime(rec.id, old);
        }
        live.admitted = admitted;
        // A paused whole program that leaves a runtime was thawed by it: in
        // a host pool its pause is the cgroup's freezer again.
        if admitted.is_none() && live.record.group && rec.state == DomainState::Paused {
            if let Err(e) = live.backend.pause(&live.record) {
                self.log(format!(
                    "domain {}: pausing it in {}: {e}",
                    rec.name, target.name
                ));
            }
        }
        if let Some(p) = admitted {
            let map = self.runtimes.get(&p).and_then(|rt| rt.cpu_map(rec.id));
            let policy = rec.policy.unwrap_or_default();
            if let Err(e) = self
                .store
                .set_gang_params(rec.id, Some(&policy), map.as_deref())
            {
                self.log(format!("domain {}: recording its CPU map: {e}", rec.name));
            }
        }
        let cpus = self.process_cpus(&target);
        process::set_process_affinity(live.pid(), &cpus);
        // A paused whole program entering an exclusive gang pool is not
        // attached (it could not be): it stays paused there, as one created
        // there paused does, and `unpause` attaches it, or says why not.
        if live.record.group && admitted.is_some() && !target.shared {
            live.record.vcpu_threads = None;
        }
        let mut result = Ok(());
        if live.record.vcpu_threads.is_some() {
            let cfg = config_of(&rec)?;
            result = self.attach_threads(&moved, &cfg, &mut live);
        }
        self.save_live(rec.id, &live);
        self.live.insert(rec.id, live);
        let line = format!(
            "domain {} ({}) migrated to cpupool {}",
            rec.id.0, rec.name, target.name
        );
        self.note_event(rec.pool, rec.id, TraceEventKind::Migrate, line.clone());
        self.log_event(target.id, rec.id, TraceEventKind::Migrate, line);
        result
    }

    /// `shutdown` / `reboot`: asks the guest or program; its end is then
    /// handled as that reason.
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
        live.backend.request(&live.record, reason)?;
        live.requested = Some(reason);
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
        self.remove_console_files(rec.id);
        let line = format!("domain {} ({}) destroyed", rec.id.0, rec.name);
        self.log_event(rec.pool, rec.id, TraceEventKind::Admission, line);
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

    /// `console` input: to a guest's serial port.
    pub(super) fn console_input(&mut self, arg: &str, bytes: &[u8]) -> Result<(), ApiError> {
        let rec = self.domain_ref(arg)?;
        let live = self
            .live
            .get_mut(&rec.id)
            .ok_or_else(|| refused(format!("domain '{}' is not running", rec.name)))?;
        live.backend
            .console_input(bytes)
            .map_err(|e| refused(format!("domain '{}' is {e}", rec.name)))
    }
}

#[cfg(test)]
mod tests {
    use super::new_uuid;

    #[test]
    fn new_uuids_are_random_rfc4122_v4() {
        let text = new_uuid();
        let u = uuid::Uuid::parse_str(&text).expect("a UUID");
        assert_eq!(u.get_variant(), uuid::Variant::RFC4122, "{text}");
        assert_eq!(u.get_version(), Some(uuid::Version::Random), "{text}");
        assert_eq!(text, u.hyphenated().to_string(), "lower-case, hyphenated");
        // The variant nibble: 8, 9, a or b.
        assert!(
            matches!(text.as_bytes()[19], b'8' | b'9' | b'a' | b'b'),
            "{text}"
        );
        assert_ne!(new_uuid(), text);
    }
}
