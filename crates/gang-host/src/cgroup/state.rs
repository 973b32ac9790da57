//! State files and their owners: what an owner of cgroup state records
//! before changing anything, so that [`super::repair`] can undo it after a
//! crash.
//!
//! Invariants: a state file is written atomically (temporary file, fsync,
//! rename) and names its owner by pid *and* start time, so that a reused
//! pid is not taken for the owner; removing a missing file is not an error.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use gang_core::CpuSet;
use serde::{Deserialize, Serialize};

use super::{io_err, read_str, CgroupError, Controller, Result};

/// The process that owns some cgroup state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Process id.
    pub pid: i32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22),
    /// so that a reused pid is not taken for the owner.
    pub start_time: u64,
}

impl Owner {
    /// The process `pid` if it runs (a zombie does not: a killed process
    /// whose other thread is frozen stays a zombie until thawed).
    pub fn of_pid(pid: i32) -> Option<Owner> {
        let stat = crate::proc::stat(pid, None).filter(|s| !s.is_dead())?;
        Some(Owner {
            pid,
            start_time: stat.start_time?,
        })
    }

    /// This process.
    pub fn current() -> Owner {
        let pid = rustix::process::getpid().as_raw_nonzero().get();
        Owner::of_pid(pid).unwrap_or(Owner { pid, start_time: 0 })
    }

    /// Whether this process still runs.
    pub fn is_alive(&self) -> bool {
        Owner::of_pid(self.pid).is_some_and(|o| o.start_time == self.start_time)
    }
}

/// How a shield takes its CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShieldMode {
    /// v1: host tasks moved into a `host` cpuset without the CPUs.
    V1Shield,
    /// v2: a cpuset partition root holding the CPUs.
    V2Partition,
    /// v2 without partitions: host processes moved into a `host` cgroup.
    V2Shield,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct FrozenThread {
    pub(super) tid: i32,
    pub(super) origin: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum StateRecord {
    Shield {
        version: u32,
        owner: Owner,
        controller: Controller,
        mode: ShieldMode,
        host: Option<PathBuf>,
        pool: PathBuf,
        cpus: CpuSet,
        enabled_cpuset: bool,
    },
    Freezer {
        version: u32,
        owner: Owner,
        controller: Controller,
        cgroup: PathBuf,
        #[serde(default)]
        keeper: Option<PathBuf>,
        threads: Vec<FrozenThread>,
    },
}

impl StateRecord {
    pub(super) fn owner(&self) -> Owner {
        match self {
            StateRecord::Shield { owner, .. } | StateRecord::Freezer { owner, .. } => *owner,
        }
    }

    pub(super) fn cgroups(&self) -> Vec<PathBuf> {
        match self {
            StateRecord::Shield { host, pool, .. } => {
                host.iter().cloned().chain([pool.clone()]).collect()
            }
            StateRecord::Freezer { cgroup, keeper, .. } => {
                [cgroup.clone()].into_iter().chain(keeper.clone()).collect()
            }
        }
    }
}

/// Writes the state file atomically (temporary file, fsync, rename).
pub(super) fn write_state(path: &Path, record: &StateRecord) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(record).map_err(|source| CgroupError::State {
        path: path.to_path_buf(),
        source,
    })?;
    let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(&text).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

pub(super) fn read_state(path: &Path) -> Result<StateRecord> {
    let text = read_str(path)?;
    serde_json::from_str(&text).map_err(|source| CgroupError::State {
        path: path.to_path_buf(),
        source,
    })
}

pub(super) fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CgroupError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

pub(super) fn shield_state_path(state_dir: &Path, prefix: &str) -> PathBuf {
    state_dir.join(format!("cgroup-shield-{prefix}.json"))
}

pub(super) fn freezer_state_path(state_dir: &Path, cgroup_name: &str) -> PathBuf {
    state_dir.join(format!("cgroup-freezer-{cgroup_name}.json"))
}
