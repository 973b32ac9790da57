//! The daemon: the single owner of pools, domains and their parameters. It
//! serves the `gang-proto` API on a Unix socket and drives the host: one
//! `gang_host::Runtime` per gang pool that has live domains, the domains'
//! processes and cgroups.
//!
//! # Shape
//!
//! * [`Daemon`] holds the store (the source of truth, SQLite), the running
//!   gang runtimes, and the live side of every running domain (its process,
//!   cgroups, vCPU threads). [`Daemon::handle`] answers one request.
//! * [`run`] serves connections, one thread each; every request takes the
//!   daemon's lock for its whole duration, so requests never interleave and
//!   many CLI calls at once lose no update. A monitor thread takes the same
//!   lock every 100 ms to notice domains whose process ended
//!   ([`Daemon::poll_exits`]) and apply their `on_poweroff`/`on_crash`, and
//!   every second to report changes of the clocks under pools on a shared
//!   clock ([`Daemon::watch_clocks`]).
//!
//! # Invariants
//!
//! * **A failed request changes nothing**: every request checks what it can
//!   before acting (store rules, admission control in the pool's runtime),
//!   and undoes what it did when a later step fails (see `domains`).
//! * **The store says what should be; the host is made to match it.** At
//!   start ([`Daemon::open`]) what a killed daemon left on the host is
//!   repaired first (adopted threads given back, cgroups undone), then every
//!   domain whose process still lives (same pid *and* start time) is
//!   re-attached: its pool's runtime started, the domain admitted with its
//!   stored parameters and CPU map, its vCPU threads adopted again, its
//!   pause state re-applied. A domain whose process ended meanwhile is shown
//!   crashed, with the reason.
//! * A gang pool costs nothing while it has no live domain: its runtime
//!   (dispatchers, CPU claims, exclusive cpuset) starts with the first one and
//!   stops with the last.
//! * Nothing is killed that gang did not start: a domain adopted by pid is
//!   given back, not killed, when destroyed.

mod backend;
mod clockwatch;
mod cosched;
mod domains;
mod gang;
mod metrics;
mod serve;
mod trace;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use gang_core::{CpuSet, DomainId};
use gang_host::best_effort;
use gang_host::cgroup::Hierarchy;
use gang_host::runtime::Runtime;
use gang_proto::{ApiError, DomainInfo, ErrorCode, PoolInfo, RequestBody, ResponseBody, RunState};

use crate::store::{DomainRef, DomainState, PoolId, PoolRef, ShutdownReason, Store, StoreError};

pub use backend::LiveRecord;
pub use metrics::{serve as serve_metrics, MetricsError, MetricsTarget};
use serve::{lock_state_dir, make_private, LOCK_FILE, LOCK_WAIT};
pub use serve::{run, SocketAccess};

/// The state directory of the system daemon.
pub const DEFAULT_STATE_DIR: &str = gang_host::cgroup::SYSTEM_STATE_DIR;

/// How many lines `gang dmesg` keeps.
const DMESG_LINES: usize = 1000;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The state could not be opened.
    #[error("state database {path}: {source}")]
    Store {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: StoreError,
    },
    /// The state directory could not be created.
    #[error("state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// What a killed daemon left could not be repaired.
    #[error("repairing what a previous daemon left: {0}")]
    Repair(String),
    /// The socket could not be created.
    #[error("socket {path}: {source}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The socket's group does not exist.
    #[error("group '{0}' does not exist (see /etc/group)")]
    NoGroup(String),
    /// Another daemon uses the state directory.
    #[error(
        "another gang daemon{} uses the state directory {path} (its lock {lock} is held)",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        lock = path.join(LOCK_FILE).display()
    )]
    Busy {
        /// The state directory.
        path: PathBuf,
        /// The holder, as it wrote itself into the lock file.
        pid: Option<u32>,
    },
    /// Another daemon answers on the socket.
    #[error("another gang daemon answers on {0}: stop it first, or use another --socket")]
    Answered(PathBuf),
}

/// How the daemon is set up.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Where the database, console files and crash-repair records live.
    pub state_dir: PathBuf,
    /// The host's online CPUs.
    pub host_cpus: CpuSet,
    /// Lift the kernel's real-time limit while gang pools run, and give the
    /// host a 1% slot of each pool CPU instead of 8% (`gang_host::rtlimit`).
    pub lift_rt_limit: bool,
    /// QEMU's accelerator: measured (`auto`), or forced.
    pub qemu_accel: gang_qemu::accel::AccelSetting,
    /// The user QEMU runs as once it has opened its files (`None`: root).
    pub qemu_user: Option<String>,
}

/// Who sent a request: the socket peer's credentials (`SO_PEERCRED`, as
/// the kernel saw them when the client connected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The client's user id.
    pub uid: u32,
    /// The client's process id.
    pub pid: i32,
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "by uid {} pid {}", self.uid, self.pid)
    }
}

/// The daemon's state: the store plus what runs on the host.
pub struct Daemon {
    store: Store,
    host_cpus: CpuSet,
    state_dir: PathBuf,
    /// Names this daemon's cgroups (`gang` for the system daemon).
    namespace: String,
    hierarchy: Hierarchy,
    /// The running gang runtimes, by pool.
    runtimes: BTreeMap<PoolId, Arc<Runtime>>,
    /// Per running gang pool: where its threads really ran (`cosched`).
    recorders: BTreeMap<PoolId, gang_host::sched_events::SchedRecorder>,
    /// How QEMU guests run (the accelerator is chosen at the first one).
    qemu_accel: gang_qemu::accel::AccelSetting,
    qemu_user: Option<String>,
    qemu_settings: Option<backend::qemu::QemuSettings>,
    /// The live side of every running or paused domain.
    live: BTreeMap<DomainId, domains::Live>,
    dmesg: VecDeque<String>,
    /// What was last reported about the clock under each running pool on
    /// a shared clock (`clockwatch`).
    clock_watches: BTreeMap<PoolId, clockwatch::ClockWatch>,
    /// The monitoring counters' totals of what stopped (`metrics`).
    metric_totals: metrics::Totals,
    /// What it did to gang pools' domains, typed, for `trace`.
    pool_events: trace::PoolEvents,
    /// Who asked for the state change being handled now (its log lines
    /// name them).
    caller: Option<Caller>,
    started: Instant,
    lift_rt_limit: bool,
    /// The exclusive lock on the state directory, held while the daemon
    /// lives (see [`lock_state_dir`]).
    _instance: std::fs::File,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("state_dir", &self.state_dir)
            .field("runtimes", &self.runtimes.keys().collect::<Vec<_>>())
            .field("live", &self.live.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn store_error(e: StoreError) -> ApiError {
    let code = match &e {
        StoreError::PoolNotFound(_) | StoreError::DomainNotFound(_) => ErrorCode::NotFound,
        StoreError::Database(_)
        | StoreError::Json(_)
        | StoreError::Corrupt(_)
        | StoreError::SchemaTooNew { .. } => ErrorCode::Internal,
        _ => ErrorCode::Refused,
    };
    ApiError::new(code, e.to_string())
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, message)
}

fn refused(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Refused, message)
}

fn internal(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Internal, message)
}

/// The CPUs a list names, `all` being the host's.
fn cpus_of(list: &gang_core::CpuList, universe: &CpuSet) -> Result<CpuSet, ApiError> {
    list.resolve(Some(universe)).map_err(|e| bad(e.to_string()))
}

/// A stored domain state as the API's run state; `on_cpu`: a vCPU of a
/// running domain is on a CPU now.
fn run_state(state: &DomainState, on_cpu: bool) -> RunState {
    match state {
        DomainState::Running => RunState {
            running: on_cpu,
            blocked: !on_cpu,
            ..RunState::default()
        },
        DomainState::Paused => RunState {
            paused: true,
            ..RunState::default()
        },
        DomainState::Shutdown { reason } => RunState {
            shutdown: Some(*reason),
            ..RunState::default()
        },
        DomainState::Crashed { .. } => RunState {
            shutdown: Some(ShutdownReason::Crash),
            ..RunState::default()
        },
    }
}

impl Daemon {
    /// Opens (or creates) the state, repairs what a killed daemon left and
    /// re-attaches the domains whose processes still run.
    pub fn open(config: DaemonConfig) -> Result<Daemon, DaemonError> {
        let dir = &config.state_dir;
        let state_dir_err = |source| DaemonError::StateDir {
            path: dir.clone(),
            source,
        };
        let mut tightened = make_private(dir).map_err(state_dir_err)?;
        // Before anything is read or repaired: one daemon per state.
        let instance = lock_state_dir(dir, LOCK_WAIT)?;
        let path = dir.join("state.db");
        let store = Store::open(&path, &config.host_cpus).map_err(|source| DaemonError::Store {
            path: path.clone(),
            source,
        })?;
        let saved_totals = store
            .metric_totals()
            .map_err(|source| DaemonError::Store { path, source })?;
        // SQLite gives its -wal and -shm files the database's mode; an old
        // daemon's may be looser.
        tightened.extend(make_private(dir).map_err(state_dir_err)?);
        // Threads a killed daemon's runtimes adopted: policies and affinity
        // back, then their freezers thawed and removed, the cpusets undone.
        gang_host::adopt::repair(dir).map_err(|e| DaemonError::Repair(e.to_string()))?;
        // Whole programs a killed runtime held (thawed, affinity back) now,
        // not when the pool's runtime next starts: that may be in the middle
        // of `recover`, after a domain that left the pool was re-attached
        // paused, whose cgroup it would thaw.
        gang_host::group::repair(dir);
        gang_host::cgroup::repair(dir).map_err(|e| DaemonError::Repair(e.to_string()))?;
        gang_host::rtlimit::repair(dir).map_err(|e| DaemonError::Repair(e.to_string()))?;
        let hierarchy = Hierarchy::detect().unwrap_or_default();
        let mut daemon = Daemon {
            store,
            host_cpus: config.host_cpus,
            namespace: gang_host::cgroup::prefix_for(dir),
            state_dir: dir.clone(),
            hierarchy,
            runtimes: BTreeMap::new(),
            recorders: BTreeMap::new(),
            qemu_accel: config.qemu_accel,
            qemu_user: config.qemu_user.clone(),
            qemu_settings: None,
            live: BTreeMap::new(),
            dmesg: VecDeque::new(),
            clock_watches: BTreeMap::new(),
            metric_totals: metrics::Totals::from_saved(saved_totals),
            pool_events: trace::PoolEvents::default(),
            caller: None,
            started: Instant::now(),
            lift_rt_limit: config.lift_rt_limit,
            _instance: instance,
        };
        daemon.log(format!(
            "gang daemon {} started, state in {}",
            env!("CARGO_PKG_VERSION"),
            dir.display()
        ));
        for line in tightened {
            daemon.warn(line);
        }
        daemon.recover();
        Ok(daemon)
    }

    /// Adds a line to the message ring (`gang dmesg`) and the log; during a
    /// state change a client asked for, with who asked (`(by uid U pid P)`).
    fn log(&mut self, line: String) {
        let line = match self.caller {
            Some(c) => format!("{line} ({c})"),
            None => line,
        };
        tracing::info!("{line}");
        self.ring(line);
    }

    /// As [`Daemon::log`], at warning level: something an operator should
    /// act on (the daemon does not wait for a request to say it).
    fn warn(&mut self, line: String) {
        tracing::warn!("{line}");
        self.ring(line);
    }

    /// Adds a line to `gang dmesg`'s ring, with the daemon's uptime.
    fn ring(&mut self, line: String) {
        let t = self.started.elapsed().as_secs_f64();
        if self.dmesg.len() == DMESG_LINES {
            self.dmesg.pop_front();
        }
        self.dmesg.push_back(format!("[{t:12.6}] {line}"));
    }

    /// Gives every domain back to the host and stops every runtime (on a
    /// clean exit of the daemon). The processes keep running; the next start
    /// re-attaches them.
    pub fn shutdown(&mut self) {
        // VMs run in the daemon: they end with it (their domains show as
        // crashed at the next start). Processes and QEMU guests go on.
        for live in self.live.values_mut() {
            if !live.survives_daemon() {
                live.backend.detach();
                live.backend.tear_down(&live.record);
            }
        }
        for (pool, rt) in std::mem::take(&mut self.runtimes) {
            self.retire_counters(pool, &rt);
            if let Ok(rt) = Arc::try_unwrap(rt) {
                drop(rt.stop());
            }
        }
        self.recorders.clear();
        self.live.clear();
    }

    /// Answers one request of `caller`: what a state change logs names
    /// them.
    pub fn handle_from(
        &mut self,
        caller: Option<Caller>,
        body: RequestBody,
    ) -> Result<ResponseBody, ApiError> {
        self.caller = caller.filter(|_| body.changes_state());
        let result = self.handle(body);
        self.caller = None;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) if e.code == ErrorCode::Refused => "refused",
            Err(_) => "error",
        };
        self.metric_totals.count(metrics::request_key(outcome));
        result
    }

    /// Answers one request (of nobody in particular: see
    /// [`Daemon::handle_from`]).
    pub fn handle(&mut self, body: RequestBody) -> Result<ResponseBody, ApiError> {
        // The scheduler knows domains by id; people know them by name.
        self.answer(body).map_err(|e| self.with_names(e))
    }

    /// An error naming domains by id (the scheduler's) names them as
    /// their users did.
    fn with_names(&self, mut e: ApiError) -> ApiError {
        let mut names: BTreeMap<u32, String> = self
            .store
            .domains()
            .map(|ds| ds.into_iter().map(|d| (d.id.0, d.name)).collect())
            .unwrap_or_default();
        // The host's own slot in every gang pool is domain 0.
        names.insert(0, "Domain-0".into());
        e.message = gang_core::with_domain_names(&e.message, |id| names.get(&id.0).cloned());
        e
    }

    fn answer(&mut self, body: RequestBody) -> Result<ResponseBody, ApiError> {
        let done = |r: Result<(), ApiError>| r.map(|()| ResponseBody::Done);
        match body {
            RequestBody::Info => Ok(ResponseBody::Info {
                fields: self.info()?,
            }),
            RequestBody::ListPools => Ok(ResponseBody::Pools {
                pools: self.pools()?,
            }),
            RequestBody::ListDomains { detail } => Ok(ResponseBody::Domains {
                domains: self.domain_infos(detail)?,
            }),
            RequestBody::CreatePool {
                name,
                sched,
                cpus,
                shared,
                time,
            } => {
                let cpus = cpus_of(&cpus, &self.host_cpus)?;
                if let Some(t) = &time {
                    gang_host::wallclock::check_started(t).map_err(|e| bad(e.to_string()))?;
                    // The host's own slot is in every running gang pool.
                    let (host_period, _) = gang_host::runtime::host_slot_for(gang_core::MS);
                    if !t.fits(host_period) {
                        return Err(bad(format!(
                            "cycle {} is not a multiple of the host slot's period {}: the \
                             pool's schedule would not repeat every cycle",
                            gang_core::time::Duration(t.cycle_ns),
                            gang_core::time::Duration(host_period)
                        )));
                    }
                }
                let id = self
                    .store
                    .create_pool_on(&name, sched, &cpus, shared, time)
                    .map_err(store_error)?;
                let on = time.map_or_else(String::new, |t| {
                    format!(
                        ", clock={} base={} cycle={}",
                        t.clock,
                        t.base_text(),
                        gang_core::time::Duration(t.cycle_ns)
                    )
                });
                self.log(format!(
                    "cpupool {name} created (sched={sched}, cpus={cpus}{on})"
                ));
                let pools = self.pools()?.into_iter().filter(|p| p.id == id.0).collect();
                Ok(ResponseBody::Pools { pools })
            }
            RequestBody::DestroyPool { pool } => {
                let p = self
                    .store
                    .pool(&PoolRef::parse(&pool))
                    .map_err(store_error)?;
                self.store.destroy_pool(p.id).map_err(store_error)?;
                self.log(format!("cpupool {} destroyed", p.name));
                Ok(ResponseBody::Done)
            }
            RequestBody::RenamePool { pool, name } => {
                let r = self.store.rename_pool(PoolRef::parse(&pool), &name);
                r.map_err(store_error)?;
                self.log(format!("cpupool {pool} renamed to {name}"));
                Ok(ResponseBody::Done)
            }
            RequestBody::PoolCpuAdd { pool, cpus } => {
                let cpus = cpus_of(&cpus, &self.host_cpus)?;
                done(self.change_pool_cpus(&pool, &cpus, true))
            }
            RequestBody::PoolCpuRemove { pool, cpus } => {
                let cpus = cpus_of(&cpus, &self.host_cpus)?;
                done(self.change_pool_cpus(&pool, &cpus, false))
            }
            RequestBody::PoolMigrate { domain, pool } => done(self.migrate(&domain, &pool)),
            RequestBody::CreateDomain { config, paused } => {
                let id = self.create(*config, paused)?;
                Ok(ResponseBody::Created { id: id.0 })
            }
            RequestBody::Pause { domain } => done(self.pause(&domain)),
            RequestBody::Unpause { domain } => done(self.unpause(&domain)),
            RequestBody::Shutdown { domain } => {
                done(self.request_shutdown(&domain, ShutdownReason::Poweroff))
            }
            RequestBody::Reboot { domain } => {
                done(self.request_shutdown(&domain, ShutdownReason::Reboot))
            }
            RequestBody::Destroy { domain } => done(self.destroy(&domain)),
            RequestBody::SchedGangGet { pool, domain } => Ok(ResponseBody::SchedGang {
                pools: self.sched_gang_get(pool.as_deref(), domain.as_deref())?,
            }),
            RequestBody::SchedGangSet {
                domain,
                cpus,
                policy,
            } => done(self.sched_gang_set(&domain, cpus.as_ref(), policy)),
            RequestBody::VcpuList { domains } => Ok(ResponseBody::Vcpus {
                vcpus: self.vcpu_list(&domains)?,
            }),
            RequestBody::Dmesg { clear } => {
                let lines = self.dmesg.iter().cloned().collect();
                if clear {
                    self.dmesg.clear();
                }
                Ok(ResponseBody::Dmesg { lines })
            }
            RequestBody::Console { domain } => self.console(&domain),
            RequestBody::ConsoleInput { domain, bytes } => {
                done(self.console_input(&domain, &bytes))
            }
            body @ RequestBody::Trace { .. } => self.trace(&body),
        }
    }

    /// `info`: xl's fields in xl's order, with the host's values; the
    /// `xen_*` fields describe gang (its version, scheduler, domain types).
    fn info(&self) -> Result<Vec<(String, String)>, ApiError> {
        let uts = rustix::system::uname();
        let text = |s: &std::ffi::CStr| s.to_string_lossy().into_owned();
        let free = self.store.free_cpus().map_err(store_error)?;
        let field = |k: &str, v: String| (k.to_string(), v);
        let (total_mb, free_mb) = meminfo();
        let topo = host_topology(&self.host_cpus);
        let mut version = env!("CARGO_PKG_VERSION").splitn(3, '.');
        let (major, minor, patch) = (
            version.next().unwrap_or("0").to_string(),
            version.next().unwrap_or("0").to_string(),
            version.next().unwrap_or("0").to_string(),
        );
        let qemu = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .any(|d| d.join("qemu-system-x86_64").exists());
        let caps = match (Path::new("/dev/kvm").exists(), qemu) {
            (true, true) => "process pvh hvm",
            (true, false) => "process pvh",
            (false, true) => "process hvm",
            (false, false) => "process",
        };
        Ok(vec![
            field("host", text(uts.nodename())),
            field("release", text(uts.release())),
            field("version", text(uts.version())),
            field("machine", text(uts.machine())),
            field("nr_cpus", self.host_cpus.len().to_string()),
            field(
                "max_cpu_id",
                self.host_cpus.iter().last().map_or(0, |c| c).to_string(),
            ),
            field("nr_nodes", topo.nodes.to_string()),
            field("cores_per_socket", topo.cores_per_socket.to_string()),
            field("threads_per_core", topo.threads_per_core.to_string()),
            field("cpu_mhz", topo.mhz),
            field("hw_caps", "-".into()),
            field(
                "virt_caps",
                if caps.contains("pvh") || caps.contains("hvm") {
                    "hvm"
                } else {
                    "-"
                }
                .into(),
            ),
            field("total_memory", total_mb.to_string()),
            field("free_memory", free_mb.to_string()),
            field("sharing_freed_memory", "0".into()),
            field("sharing_used_memory", "0".into()),
            field("outstanding_claims", "0".into()),
            field("free_cpus", free.len().to_string()),
            field("xen_major", major),
            field("xen_minor", minor),
            field("xen_extra", format!(".{patch}")),
            field("xen_version", format!("gang {}", env!("CARGO_PKG_VERSION"))),
            field("xen_caps", caps.into()),
            field("xen_scheduler", "gang".into()),
            field("xen_pagesize", rustix::param::page_size().to_string()),
            field("platform_params", "-".into()),
            field("xen_changeset", "-".into()),
            field(
                "xen_commandline",
                std::fs::read_to_string("/proc/cmdline")
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            ),
            field("cc_compiler", "rustc".into()),
            field("cc_compile_by", "-".into()),
            field("cc_compile_domain", "-".into()),
            field("cc_compile_date", "-".into()),
            field("build_id", "-".into()),
            field("xend_config_format", "4".into()),
            field("gang_state_dir", self.state_dir.display().to_string()),
            field("gang_cgroups", self.namespace.clone()),
            field(
                "gang_qemu_accel",
                self.qemu_settings.as_ref().map_or_else(
                    || "chosen at the first QEMU guest".into(),
                    |q| format!("{:?}: {}", q.accel, q.accel_reason),
                ),
            ),
        ])
    }

    fn pools(&self) -> Result<Vec<PoolInfo>, ApiError> {
        Ok(self
            .store
            .pools()
            .map_err(store_error)?
            .into_iter()
            .map(|p| PoolInfo {
                id: p.id.0,
                name: p.name,
                sched: p.sched,
                cpus: p.cpus.iter().collect(),
                domains: p.domain_count,
                shared: p.shared,
            })
            .collect())
    }

    /// Every domain, Domain-0 first; with `detail`, each one's
    /// configuration and the host threads it holds (`list -l`).
    fn domain_infos(&self, detail: bool) -> Result<Vec<DomainInfo>, ApiError> {
        let pools = self.store.pools().map_err(store_error)?;
        let (total_mb, _) = meminfo();
        let mut out = vec![DomainInfo {
            id: 0,
            name: "Domain-0".into(),
            memory_mb: total_mb,
            vcpus: self.host_cpus.len() as u32,
            state: RunState {
                running: true,
                ..RunState::default()
            },
            cpu_time_s: host_cpu_seconds(),
            pool: crate::store::POOL0_NAME.into(),
            uuid: "00000000-0000-0000-0000-000000000000".into(),
            reason: None,
            config: None,
            threads: Vec::new(),
            cosched: None,
        }];
        for d in self.store.domains().map_err(store_error)? {
            let live = self.live.get(&d.id);
            // Where its threads really ran, in a gang pool (`cosched`).
            let on_cpu = self
                .ran_recently(d.id)
                .unwrap_or_else(|| live.is_some_and(domains::Live::any_vcpu_running));
            let reason = match &d.state {
                DomainState::Crashed { reason } => Some(reason.clone()),
                _ => None,
            };
            let pool = pools
                .iter()
                .find(|p| p.id == d.pool)
                .map_or_else(String::new, |p| p.name.clone());
            let config = if detail {
                match serde_json::from_str(&d.config_json) {
                    Ok(c) => Some(Box::new(c)),
                    Err(e) => {
                        tracing::warn!("domain {} ({}): stored configuration: {e}", d.id.0, d.name);
                        None
                    }
                }
            } else {
                None
            };
            out.push(DomainInfo {
                id: d.id.0,
                // The configured limit, else what the process uses.
                memory_mb: match (d.memory_mb, live) {
                    (0, Some(l)) => l.rss_mb(),
                    (m, _) => m,
                },
                vcpus: d.vcpus,
                state: run_state(&d.state, on_cpu),
                cpu_time_s: live.map_or(0.0, |l| l.cpu_time_ns() as f64 / 1e9),
                pool,
                uuid: d.uuid,
                reason,
                config,
                threads: match (detail, live) {
                    (true, Some(l)) => l.threads(),
                    _ => Vec::new(),
                },
                cosched: self.cosched(d.id),
                name: d.name,
            });
        }
        Ok(out)
    }

    /// `cpupool-cpu-add` / `cpupool-cpu-remove`: the store's rules first;
    /// a gang pool with a running runtime is restarted on its new CPUs (its
    /// domains re-admitted with their parameters); if that fails the CPU
    /// change is undone.
    fn change_pool_cpus(&mut self, pool: &str, cpus: &CpuSet, add: bool) -> Result<(), ApiError> {
        let p = self
            .store
            .pool(&PoolRef::parse(pool))
            .map_err(store_error)?;
        let r = if add {
            self.store.add_cpus(p.id, cpus)
        } else {
            self.store.remove_cpus(p.id, cpus)
        };
        r.map_err(store_error)?;
        if self.runtimes.contains_key(&p.id) {
            if let Err(e) = self.restart_runtime(p.id) {
                let undo = if add {
                    self.store.remove_cpus(p.id, cpus)
                } else {
                    self.store.add_cpus(p.id, cpus)
                };
                best_effort(
                    format_args!("undoing the CPU change of cpupool {}", p.name),
                    undo,
                );
                best_effort(
                    format_args!("restarting cpupool {} on its CPUs before", p.name),
                    self.restart_runtime(p.id),
                );
                return Err(e);
            }
        }
        self.apply_host_affinity();
        let verb = if add { "added to" } else { "removed from" };
        self.log(format!("cpus {cpus} {verb} cpupool {}", p.name));
        Ok(())
    }

    fn domain_ref(&self, arg: &str) -> Result<crate::store::DomainRecord, ApiError> {
        self.store
            .domain(&DomainRef::parse(arg))
            .map_err(store_error)
    }
}

/// xl's shutdown reason letter and code.
/// What `info` says of the host's CPUs.
struct Topology {
    nodes: usize,
    cores_per_socket: usize,
    threads_per_core: usize,
    mhz: String,
}

/// NUMA nodes, cores per socket and threads per core of the host (sysfs),
/// and the first CPU's clock (`/proc/cpuinfo`).
fn host_topology(cpus: &CpuSet) -> Topology {
    let count = |path: String| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| CpuSet::parse(t.trim(), None).ok())
            .map_or(1, |s| s.len().max(1))
    };
    let first = cpus.iter().next().unwrap_or(0);
    let base = format!("/sys/devices/system/cpu/cpu{first}/topology");
    let threads_per_core = count(format!("{base}/core_cpus_list"));
    let per_package = count(format!("{base}/package_cpus_list"));
    let nodes = std::fs::read_dir("/sys/devices/system/node")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.strip_prefix("node")
                        .is_some_and(|r| r.parse::<u32>().is_ok())
                })
                .count()
        })
        .unwrap_or(1)
        .max(1);
    let mhz = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("cpu MHz"))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .map_or_else(|| "-".to_string(), |m| format!("{}", m.round() as u64));
    Topology {
        nodes,
        cores_per_socket: per_package / threads_per_core,
        threads_per_core,
        mhz,
    }
}

/// Total and available memory, MB (`/proc/meminfo`).
fn meminfo() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

/// CPU time the host spent outside idle, seconds (`/proc/stat`).
fn host_cpu_seconds() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().next() else {
        return 0.0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| x)
        .sum();
    let hz = 100.0; // USER_HZ on Linux
    busy as f64 / hz
}
