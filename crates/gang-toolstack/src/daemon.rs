//! The daemon: serves the `gang-proto` API on a Unix socket, one request at a
//! time, against the state store.
//!
//! **Serialisation.** Connections are accepted one after the other and each
//! request is handled to completion before the next: every change is one
//! store transaction, and no two changes interleave, so many CLI calls at
//! once lose no update. (Requests are short; a slow client only delays
//! others, it cannot corrupt anything.)
//!
//! **Access.** The socket is created mode 0600 (root only) in a directory the
//! daemon creates; a stale socket left by a killed daemon is replaced.
//!
//! **Scope today.** Pools (`cpupool-*`), `info` and `list` are served from
//! the store: the state is kept and survives `kill -9`, but the daemon does
//! not yet take CPUs from the host or run domains (that is `gang-host`'s
//! runtime, wired in by the next step of issue 4). Other requests are
//! answered with a clear "not supported yet" error.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use gang_core::CpuSet;
use gang_proto::{ApiError, DomainInfo, ErrorCode, PoolInfo, RequestBody, ResponseBody};

use crate::store::{DomainRef, DomainState, PoolRef, ShutdownReason, Store, StoreError};

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
    /// The socket could not be created.
    #[error("socket {path}: {source}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The daemon's request handler over its store.
#[derive(Debug)]
pub struct Daemon {
    store: Store,
    host_cpus: CpuSet,
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

fn cpus_arg(text: &str, universe: &CpuSet) -> Result<CpuSet, ApiError> {
    if text.trim().is_empty() {
        return Ok(CpuSet::new());
    }
    CpuSet::parse(text, Some(universe))
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))
}

fn not_yet(what: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Refused,
        format!("{what} is not supported by this daemon yet"),
    )
}

impl Daemon {
    /// Opens (or creates) the state in `state_dir` for a host with
    /// `host_cpus`.
    pub fn open(state_dir: &Path, host_cpus: CpuSet) -> Result<Daemon, DaemonError> {
        let path = state_dir.join("state.db");
        std::fs::create_dir_all(state_dir).map_err(|e| DaemonError::Store {
            path: path.clone(),
            source: StoreError::Corrupt(e.to_string()),
        })?;
        let store =
            Store::open(&path, &host_cpus).map_err(|source| DaemonError::Store { path, source })?;
        Ok(Daemon { store, host_cpus })
    }

    /// Answers one request.
    pub fn handle(&mut self, body: RequestBody) -> Result<ResponseBody, ApiError> {
        let done = |r: Result<(), StoreError>| r.map(|()| ResponseBody::Done).map_err(store_error);
        match body {
            RequestBody::Info => Ok(ResponseBody::Info {
                fields: self.info()?,
            }),
            RequestBody::ListPools => Ok(ResponseBody::Pools {
                pools: self.pools()?,
            }),
            RequestBody::ListDomains => Ok(ResponseBody::Domains {
                domains: self.domains()?,
            }),
            RequestBody::CreatePool {
                name,
                sched,
                cpus,
                shared,
            } => {
                let cpus = cpus_arg(&cpus, &self.host_cpus)?;
                let id = self
                    .store
                    .create_pool(&name, &sched, &cpus, shared)
                    .map_err(store_error)?;
                Ok(ResponseBody::Created { id: id.0 })
            }
            RequestBody::DestroyPool { pool } => {
                done(self.store.destroy_pool(PoolRef::parse(&pool)))
            }
            RequestBody::RenamePool { pool, name } => {
                done(self.store.rename_pool(PoolRef::parse(&pool), &name))
            }
            RequestBody::PoolCpuAdd { pool, cpus } => {
                let cpus = cpus_arg(&cpus, &self.host_cpus)?;
                done(self.store.add_cpus(PoolRef::parse(&pool), &cpus))
            }
            RequestBody::PoolCpuRemove { pool, cpus } => {
                let cpus = cpus_arg(&cpus, &self.host_cpus)?;
                done(self.store.remove_cpus(PoolRef::parse(&pool), &cpus))
            }
            RequestBody::PoolMigrate { domain, pool } => {
                let d = self
                    .store
                    .domain(&DomainRef::parse(&domain))
                    .map_err(store_error)?;
                done(self.store.migrate(d.id, PoolRef::parse(&pool)))
            }
            RequestBody::CreateDomain { .. } => Err(not_yet("creating domains")),
            RequestBody::Pause { .. } | RequestBody::Unpause { .. } => {
                Err(not_yet("pausing domains"))
            }
            RequestBody::Shutdown { .. } | RequestBody::Destroy { .. } => {
                Err(not_yet("stopping domains"))
            }
            RequestBody::SchedGangGet { .. } | RequestBody::SchedGangSet { .. } => {
                Err(not_yet("sched-gang"))
            }
            _ => Err(not_yet("this request")),
        }
    }

    fn info(&self) -> Result<Vec<(String, String)>, ApiError> {
        let uts = rustix::system::uname();
        let text = |s: &std::ffi::CStr| s.to_string_lossy().into_owned();
        let free = self.store.free_cpus().map_err(store_error)?;
        let field = |k: &str, v: String| (k.to_string(), v);
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
            field("free_cpus", free.len().to_string()),
            field("xen_scheduler", "gang".into()),
            field("xen_version", format!("gang {}", env!("CARGO_PKG_VERSION"))),
            field("xend_config_format", "4".into()),
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
                sched: p.sched.as_str().to_string(),
                cpus: p.cpus.iter().collect(),
                domains: p.domain_count,
                shared: false,
            })
            .collect())
    }

    fn domains(&self) -> Result<Vec<DomainInfo>, ApiError> {
        let pools = self.store.pools().map_err(store_error)?;
        Ok(self
            .store
            .domains()
            .map_err(store_error)?
            .into_iter()
            .map(|d| {
                let state = match &d.state {
                    DomainState::Running => gang_proto::xl::state(true, false, false, None, false),
                    DomainState::Paused => gang_proto::xl::state(false, false, true, None, false),
                    DomainState::Shutdown { reason } => {
                        let c = match reason {
                            ShutdownReason::Poweroff => '-',
                            ShutdownReason::Reboot => 'r',
                            ShutdownReason::Suspend => 's',
                            ShutdownReason::Crash => 'c',
                            ShutdownReason::Watchdog => 'w',
                            ShutdownReason::SoftReset => 'S',
                        };
                        gang_proto::xl::state(false, false, false, Some(c), false)
                    }
                    DomainState::Crashed { .. } => {
                        gang_proto::xl::state(false, false, false, Some('c'), false)
                    }
                };
                let pool = pools
                    .iter()
                    .find(|p| p.id == d.pool)
                    .map_or_else(String::new, |p| p.name.clone());
                DomainInfo {
                    id: d.id.0,
                    name: d.name,
                    memory_mb: d.memory_mb,
                    vcpus: d.vcpus,
                    state,
                    cpu_time_s: 0.0,
                    pool,
                    uuid: String::new(),
                    shutdown_code: None,
                    reason: None,
                    config: serde_json::Value::Null,
                }
            })
            .collect())
    }
}

/// Binds the socket (root only) and serves requests until killed.
pub fn run(daemon: &mut Daemon, socket: &Path) -> Result<(), DaemonError> {
    let sock_err = |source| DaemonError::Socket {
        path: socket.to_path_buf(),
        source,
    };
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(sock_err)?;
    }
    // A socket left by a killed daemon: nobody answers on it any more.
    if socket.exists() && std::os::unix::net::UnixStream::connect(socket).is_err() {
        std::fs::remove_file(socket).map_err(sock_err)?;
    }
    let listener = UnixListener::bind(socket).map_err(sock_err)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(sock_err)?;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        // One connection at a time: requests never interleave.
        let _ = gang_proto::serve(stream, |body| daemon.handle(body));
    }
    Ok(())
}
