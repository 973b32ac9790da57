//! cgroup adapters: taking CPUs from the host (cpuset) and stopping adopted
//! threads (freezer), with crash repair.
//!
//! # What this module does
//!
//! * [`Hierarchy::detect`] finds the cpuset and freezer controllers, on a
//!   cgroup v1 mount (one hierarchy per controller) or on the cgroup v2
//!   unified hierarchy, by reading `/proc/self/mountinfo`.
//! * [`Cgroups`] is one instance's view of the host's cgroups: the
//!   controllers, the directory its state files go into, and the prefix of
//!   its cgroups' names. Shields and freezers are made from it.
//! * [`Cgroups::shield`] makes a set of CPUs unavailable to every other host
//!   task and gives them back on [`CpuShield::release`] or drop.
//!   - v1: the root cpuset cannot be restricted, so, as `cset shield` does, a
//!     cpuset `<prefix>.host` gets all online CPUs minus the taken ones, every
//!     movable thread of the root cpuset is moved into it (per-CPU kernel
//!     threads refuse and are counted, not an error), and `<prefix>.pool`
//!     gets the taken CPUs, for our own threads ([`CpuShield::attach`]).
//!   - v2 with the cpuset controller (enabled in the root's
//!     `cgroup.subtree_control` if needed, disabled again on release if we
//!     enabled it and no other cgroup uses cpusets): `<prefix>.pool` is a
//!     *threaded* child of the root made a cpuset partition root, which
//!     removes its CPUs from every other cgroup. Threaded, because v2 moves
//!     a single thread only within its process's threaded domain: a thread
//!     of a process in the root cgroup can then join the pool alone. If the
//!     kernel refuses the partition (a sibling's cpuset overlaps, say; the
//!     reason is in [`ShieldReport::partition_refused`]), the v1-style
//!     shield is used, with a threaded `<prefix>.host` too, so that host
//!     threads moved there can still join the pool. Tested on a real v2
//!     hierarchy by `tests/cgroup_v2.rs`.
//! * [`Freezer`] is a per-domain freezer cgroup holding threads adopted from
//!   other processes; [`Freezer::freeze`] and [`Freezer::thaw`] wait until the
//!   kernel reports the state. On v1 a single thread of a multi-threaded
//!   process can be moved alone (measured on the development machine). On
//!   v2 ([`Cgroups::thread_freezer`]) an adopted thread's freezer is a threaded
//!   child of the cgroup the thread is in (the root, the pool, a domain's
//!   own cgroup), since a thread is in one v2 cgroup only and moves alone
//!   only within its threaded domain.
//! * [`repair`] undoes what a killed runtime left behind.
//! * [`measure_freezer`] and [`measure_priority_flip`] measure the two ways
//!   of stopping an adopted thread.
//!
//! # Invariants
//!
//! * Before changing anything, every owner of cgroup state writes a state
//!   file (`cgroup-*.json` in its state directory) naming its pid and process
//!   start time and every cgroup it creates; the file is removed only once
//!   the state is undone. So after any crash, either nothing was changed or a
//!   state file says what to undo.
//! * Every cgroup we create is named `<prefix>.<something>` (`gang.host`,
//!   `gang.pool`, `gang.t<tid>` for the system instance), directly under a
//!   hierarchy's root, except on v2 an adopted thread's freezer, which is
//!   inside the thread's cgroup; the prefix is the instance's ([`prefix_for`]
//!   its state directory), and a repair sweeps only its own (on v2 at any
//!   depth), and nothing else is ever removed.
//! * Tasks we move are moved back: shield tasks to the root cgroup (where
//!   they were taken from), frozen threads to the cgroup recorded when they
//!   were added. On v2 a cgroup is removed with its descendants, each
//!   emptied into its parent first (a thread cannot leave its threaded
//!   domain).
//! * The host always keeps at least one online CPU; a CPU is in at most one
//!   pool cgroup.
//! * Undoing is idempotent: a missing cgroup, an exited thread or a missing
//!   state file is not an error.
//!
//! # Where things are
//!
//! This file holds the shared vocabulary: [`Cgroups`], [`CgroupError`]
//! (the one error type of every submodule) and the small file helpers.
//! `detect` finds the controllers, `moves` moves tasks between cgroups and
//! removes them, `state` keeps the state files and their owners, `shield`
//! is the CPU shield, `freezer` the freezers, `repair` the crash repair and
//! `measure` the freezer and priority-flip measurements (a test and the
//! bench use them). The submodules are private: everything public is
//! re-exported here, so callers name `cgroup::X` only.

mod detect;
mod freezer;
mod measure;
mod moves;
mod repair;
mod shield;
mod state;

pub use detect::{CgroupVersion, Controller, Hierarchy};
pub use freezer::{freeze_file, set_frozen, thread_cgroup, threads_below, threads_of, Freezer};
pub use measure::{measure_freezer, measure_priority_flip, FlipStats, FreezeStats, LatencyStats};
pub use moves::{drain_and_remove, MoveCount};
pub use repair::{repair, repair_named, RepairReport};
pub use shield::{CpuShield, ShieldReport};
pub use state::{Owner, ShieldMode};

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use gang_core::{CpuId, CpuSet};

/// The name prefix of the system instance's cgroups (state in
/// [`SYSTEM_STATE_DIR`]).
pub const DEFAULT_PREFIX: &str = "gang";

/// The state directory of the system instance (the `gang` daemon).
pub const SYSTEM_STATE_DIR: &str = "/var/lib/gang";

/// The lock file that tests moving cgroup controllers between v1 and v2
/// (`tests/cgroup_v2.rs`) hold exclusively while the layout is changed.
pub const LAYOUT_LOCK: &str = "/tmp/gang-cgroup-layout.lock";

/// For test harnesses that use cgroups: holds a shared lock on
/// [`LAYOUT_LOCK`] for the rest of the process, so that a test which moves
/// controllers waits until no such process runs (test runners that run test
/// binaries in parallel). Best effort: a lock that cannot be had is skipped.
pub fn share_layout_for_this_process() {
    static HELD: std::sync::OnceLock<Option<fs::File>> = std::sync::OnceLock::new();
    HELD.get_or_init(|| {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(LAYOUT_LOCK)
            .ok()?;
        file.lock_shared().ok()?;
        Some(file)
    });
}

/// The cgroup name prefix of the instance whose state is in `state_dir`:
/// [`DEFAULT_PREFIX`] for the system's, `gang-<hash of the directory>` for
/// any other (tests, `gang bench`, a second daemon). A repair sweeps only
/// its own prefix, so instances never remove each other's cgroups.
pub fn prefix_for(state_dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    if state_dir == Path::new(SYSTEM_STATE_DIR) {
        return DEFAULT_PREFIX.into();
    }
    let canonical = state_dir
        .canonicalize()
        .unwrap_or_else(|_| state_dir.to_path_buf());
    let mut h = std::collections::hash_map::DefaultHasher::new();
    canonical.hash(&mut h);
    format!("{DEFAULT_PREFIX}-{:08x}", h.finish() as u32)
}

/// How long [`Freezer::freeze`] and [`Freezer::thaw`] wait by default.
pub const DEFAULT_FREEZE_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) const MOUNTINFO: &str = "/proc/self/mountinfo";
const ONLINE_CPUS: &str = "/sys/devices/system/cpu/online";
pub(super) const STATE_VERSION: u32 = 1;

/// Everything that can go wrong here. Messages name the file or CPU involved.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No mounted hierarchy offers the controller.
    #[error("no cgroup hierarchy with the {controller} controller is mounted (read {MOUNTINFO})")]
    NoController {
        /// `cpuset` or `freezer`.
        controller: &'static str,
    },
    /// A file or directory operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A file's content could not be understood.
    #[error("{path}: cannot parse {what} from {text:?}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was expected.
        what: &'static str,
        /// What was read.
        text: String,
    },
    /// A requested CPU does not exist, is offline or is not usable by the root.
    #[error("cpu {cpu} illegal or not free: {reason}")]
    CpuIllegal {
        /// The CPU.
        cpu: CpuId,
        /// Why.
        reason: &'static str,
    },
    /// A requested CPU is already taken by another shield.
    #[error("cpu {cpu} illegal or not free: already taken by {owner}")]
    CpuInUse {
        /// The CPU.
        cpu: CpuId,
        /// The pool cgroup that holds it.
        owner: PathBuf,
    },
    /// Taking the CPUs would leave the host none.
    #[error(
        "cannot take cpus {cpus}: the host must keep at least one of the online cpus {online}"
    )]
    WouldTakeAll {
        /// The requested CPUs.
        cpus: CpuSet,
        /// The online CPUs.
        online: CpuSet,
    },
    /// No CPU was requested.
    #[error("no cpus requested")]
    NoCpus,
    /// Another shield (or stale state of one) exists.
    #[error("{path} exists: another shield holds host tasks (release it, or run repair if its owner died)")]
    ShieldExists {
        /// The other shield's host cgroup.
        path: PathBuf,
    },
    /// Our own cgroup already exists.
    #[error("{path} already exists (stale state? run repair)")]
    Exists {
        /// The cgroup.
        path: PathBuf,
    },
    /// A name is not usable as a cgroup name.
    #[error(
        "invalid cgroup name {0:?}: use letters, digits, '-', '_' and '.', not starting with '.'"
    )]
    InvalidName(String),
    /// A freezer state was not reached in time.
    #[error("{path}: state {wanted} not reached within {timeout:?} (last read {last:?})")]
    Timeout {
        /// The state file.
        path: PathBuf,
        /// The awaited state.
        wanted: &'static str,
        /// The last state read.
        last: String,
        /// The wait.
        timeout: Duration,
    },
    /// A thread could not be moved into a cgroup.
    #[error("{path}: cannot move thread {tid}: {source}")]
    Move {
        /// The thread.
        tid: i32,
        /// The cgroup's task file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A cgroup could not be emptied before removal.
    #[error("{path}: {left} task(s) could not be moved out")]
    Busy {
        /// The cgroup.
        path: PathBuf,
        /// Tasks left.
        left: usize,
    },
    /// A state file is not valid JSON of the expected shape.
    #[error("state file {path}: {source}")]
    State {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The priority-flip callback failed.
    #[error("priority flip of thread {tid} failed: {source}")]
    Flip {
        /// The thread.
        tid: i32,
        /// The callback's error.
        #[source]
        source: io::Error,
    },
}

pub(super) type Result<T> = std::result::Result<T, CgroupError>;

pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(super) fn read_str(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(io_err(path))
}

/// Writes `text` with a single `write(2)`, as cgroup files require.
pub(super) fn write_str(path: &Path, text: &str) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(text.as_bytes()).map_err(io_err(path))
}

fn parse_cpus(path: &Path, text: &str) -> Result<CpuSet> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(CpuSet::new());
    }
    CpuSet::parse(t, None).map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        what: "cpu list",
        text: t.to_string(),
    })
}

pub(super) fn read_cpus(path: &Path) -> Result<CpuSet> {
    let text = read_str(path)?;
    parse_cpus(path, &text)
}

/// The CPUs Linux reports online.
pub fn online_cpus() -> Result<CpuSet> {
    read_cpus(Path::new(ONLINE_CPUS))
}

pub(super) fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(CgroupError::InvalidName(name.to_string()))
    }
}

/// One instance's cgroups: where the controllers are, where its state files
/// go, and the prefix of its cgroups' names (`<prefix>.<something>`).
///
/// The instance whose state is in a directory is [`Cgroups::detect`]ed;
/// [`Cgroups::new`] gives the parts explicitly (tests use unique prefixes,
/// owners that already know their freezer controller use
/// [`Hierarchy::of_freezer`]). It creates the instance's
/// [`CpuShield`] ([`Cgroups::shield`]) and [`Freezer`]s
/// ([`Cgroups::freezer`], [`Cgroups::thread_freezer`]).
///
/// It holds no cgroup itself and changes nothing until asked; the prefix
/// is checked when a cgroup is made, so a bad one is reported as
/// [`CgroupError::InvalidName`] by the first shield or freezer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroups {
    pub(super) hierarchy: Hierarchy,
    pub(super) state_dir: PathBuf,
    pub(super) prefix: String,
}

impl Cgroups {
    /// The instance whose state is in `state_dir`, with its own prefix
    /// ([`prefix_for`]), on the controllers mounted now.
    pub fn detect(state_dir: &Path) -> Result<Cgroups> {
        Ok(Cgroups::new(
            Hierarchy::detect()?,
            state_dir,
            &prefix_for(state_dir),
        ))
    }

    /// The cgroups named `<prefix>.*` on `hierarchy`'s controllers, with
    /// state files in `state_dir`.
    pub fn new(hierarchy: Hierarchy, state_dir: &Path, prefix: &str) -> Cgroups {
        Cgroups {
            hierarchy,
            state_dir: state_dir.to_path_buf(),
            prefix: prefix.to_string(),
        }
    }

    /// The controllers.
    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    /// The directory of the state files.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The prefix of the cgroups' names.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}
