//! cgroup adapters: taking CPUs from the host (cpuset) and stopping adopted
//! threads (freezer), with crash repair.
//!
//! # What this module does
//!
//! * [`Hierarchy::detect`] finds the cpuset and freezer controllers, on a
//!   cgroup v1 mount (one hierarchy per controller) or on the cgroup v2
//!   unified hierarchy, by reading `/proc/self/mountinfo`.
//! * [`CpuShield::take`] makes a set of CPUs unavailable to every other host
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
//!   v2 ([`Freezer::for_thread`]) an adopted thread's freezer is a threaded
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

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gang_core::{CpuId, CpuSet};
use serde::{Deserialize, Serialize};

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

const MOUNTINFO: &str = "/proc/self/mountinfo";
const ONLINE_CPUS: &str = "/sys/devices/system/cpu/online";
const STATE_VERSION: u32 = 1;

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

type Result<T> = std::result::Result<T, CgroupError>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_str(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(io_err(path))
}

/// Writes `text` with a single `write(2)`, as cgroup files require.
fn write_str(path: &Path, text: &str) -> Result<()> {
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

fn read_cpus(path: &Path) -> Result<CpuSet> {
    let text = read_str(path)?;
    parse_cpus(path, &text)
}

/// The CPUs Linux reports online.
pub fn online_cpus() -> Result<CpuSet> {
    read_cpus(Path::new(ONLINE_CPUS))
}

fn check_name(name: &str) -> Result<()> {
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

// ---------------------------------------------------------------------------
// Detection
// ---------------------------------------------------------------------------

/// cgroup version of a hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupVersion {
    /// One hierarchy per controller (`cgroup` file system).
    V1,
    /// The unified hierarchy (`cgroup2` file system).
    V2,
}

/// Where a controller can be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Controller {
    /// Version of the hierarchy.
    pub version: CgroupVersion,
    /// Mount point of the hierarchy's root.
    pub mount: PathBuf,
}

impl Controller {
    /// The file listing a cgroup's tasks, by thread (v1 `tasks`, v2
    /// `cgroup.threads`).
    fn threads_file(&self, cgroup: &Path) -> PathBuf {
        match self.version {
            CgroupVersion::V1 => cgroup.join("tasks"),
            CgroupVersion::V2 => cgroup.join("cgroup.threads"),
        }
    }

    /// The file used to move tasks in bulk: v1 moves single threads through
    /// `tasks`; v2 moves whole processes through `cgroup.procs`.
    fn bulk_file(&self, cgroup: &Path) -> PathBuf {
        match self.version {
            CgroupVersion::V1 => cgroup.join("tasks"),
            CgroupVersion::V2 => cgroup.join("cgroup.procs"),
        }
    }
}

/// The cgroup controllers this host offers us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hierarchy {
    /// The cpuset controller, if mounted (v1 preferred when bound there: a
    /// controller bound to a v1 hierarchy is not available on v2).
    pub cpuset: Option<Controller>,
    /// The freezer: the v1 controller, else the v2 core `cgroup.freeze`.
    pub freezer: Option<Controller>,
    /// The memory controller (v1 preferred when bound there), for domains'
    /// memory limits.
    pub memory: Option<Controller>,
    /// The v2 unified hierarchy's mount point, if any.
    pub unified: Option<PathBuf>,
    /// Controllers available on the v2 hierarchy (its `cgroup.controllers`).
    pub unified_controllers: Vec<String>,
}

impl Hierarchy {
    /// Reads `/proc/self/mountinfo` (and the v2 root's `cgroup.controllers`).
    pub fn detect() -> Result<Hierarchy> {
        let text = read_str(Path::new(MOUNTINFO))?;
        Ok(Self::from_mountinfo(&text, |mount| {
            fs::read_to_string(mount.join("cgroup.controllers"))
                .map(|s| s.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default()
        }))
    }

    /// Builds the description from mountinfo text; `v2_controllers` lists the
    /// controllers of a v2 mount.
    pub fn from_mountinfo(text: &str, v2_controllers: impl Fn(&Path) -> Vec<String>) -> Hierarchy {
        let mut h = Hierarchy::default();
        for line in text.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            if l.len() < 5 || r.len() < 3 {
                continue;
            }
            let (root, mount) = (l[3], PathBuf::from(unescape_mount(l[4])));
            match r[0] {
                "cgroup" => {
                    let opts: Vec<&str> = r[2].split(',').collect();
                    let ctl = Controller {
                        version: CgroupVersion::V1,
                        mount,
                    };
                    // Prefer a mount of the hierarchy's root; keep the first.
                    for (name, slot) in [
                        ("cpuset", &mut h.cpuset),
                        ("freezer", &mut h.freezer),
                        ("memory", &mut h.memory),
                    ] {
                        if opts.contains(&name) && (slot.is_none() || root == "/") {
                            let replace = match slot {
                                None => true,
                                Some(c) => c.version == CgroupVersion::V2,
                            };
                            if replace {
                                *slot = Some(ctl.clone());
                            }
                        }
                    }
                }
                "cgroup2" if h.unified.is_none() => {
                    h.unified_controllers = v2_controllers(&mount);
                    h.unified = Some(mount);
                }
                _ => {}
            }
        }
        if let Some(mount) = &h.unified {
            let v2 = Controller {
                version: CgroupVersion::V2,
                mount: mount.clone(),
            };
            if h.cpuset.is_none() && h.unified_controllers.iter().any(|c| c == "cpuset") {
                h.cpuset = Some(v2.clone());
            }
            if h.memory.is_none() && h.unified_controllers.iter().any(|c| c == "memory") {
                h.memory = Some(v2.clone());
            }
            if h.freezer.is_none() {
                // cgroup.freeze is a core v2 file (Linux 5.2+), no controller.
                h.freezer = Some(v2);
            }
        }
        h
    }

    /// The cpuset controller, or a clear error.
    pub fn cpuset(&self) -> Result<&Controller> {
        self.cpuset.as_ref().ok_or(CgroupError::NoController {
            controller: "cpuset",
        })
    }

    /// The freezer, or a clear error.
    pub fn freezer(&self) -> Result<&Controller> {
        self.freezer.as_ref().ok_or(CgroupError::NoController {
            controller: "freezer",
        })
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\\ooo`.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b.get(i + 1..i + 4);
        if b[i] == b'\\' {
            if let Some(o) = oct.filter(|o| o.iter().all(|c| (b'0'..=b'7').contains(c))) {
                let v = o.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------
// Task moves
// ---------------------------------------------------------------------------

/// Counts of a bulk move.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MoveCount {
    /// Tasks moved.
    pub moved: usize,
    /// Of `moved`, kernel threads (unbound ones may be moved).
    pub moved_kernel: usize,
    /// Tasks the kernel refused to move (bound kernel threads: EINVAL).
    pub refused: usize,
    /// Of `refused`, tasks that are not kernel threads: these keep running
    /// on the taken CPUs, which the caller should surface.
    pub refused_user: usize,
    /// Tasks that exited during the move.
    pub vanished: usize,
    /// Up to 8 refused tasks: `(tid, comm)`, user tasks first.
    pub refused_sample: Vec<(i32, String)>,
}

impl MoveCount {
    fn add(&mut self, other: MoveCount) {
        self.moved += other.moved;
        self.moved_kernel += other.moved_kernel;
        self.refused += other.refused;
        self.refused_user += other.refused_user;
        self.vanished += other.vanished;
        for s in other.refused_sample {
            if self.refused_sample.len() < 8 {
                self.refused_sample.push(s);
            }
        }
    }
}

fn read_ids(path: &Path) -> Result<Vec<i32>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(CgroupError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// Whether `tid` is a kernel thread (`PF_KTHREAD` in `/proc/<tid>/stat`
/// flags); `None` if it is gone.
fn is_kernel_thread(tid: i32) -> Option<bool> {
    crate::proc::stat(tid, None).map(|s| s.is_kernel_thread())
}

fn comm(tid: i32) -> String {
    crate::proc::comm(tid, None)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Writes one id into a task file. `Ok(false)`: the task no longer exists.
fn write_id(f: &mut fs::File, id: i32) -> io::Result<bool> {
    match f.write_all(format!("{id}\n").as_bytes()) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
        Err(e) => Err(e),
    }
}

/// One pass: moves every id listed in `from_file` into `to_file`, skipping
/// `skip`. Refusals are counted and added to `skip`.
fn move_pass(from_file: &Path, to_file: &Path, skip: &mut HashSet<i32>) -> Result<MoveCount> {
    let ids = read_ids(from_file)?;
    let mut count = MoveCount::default();
    if ids.iter().all(|id| skip.contains(id)) {
        return Ok(count);
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(to_file)
        .map_err(io_err(to_file))?;
    for id in ids {
        if skip.contains(&id) {
            continue;
        }
        match write_id(&mut f, id) {
            Ok(true) => {
                count.moved += 1;
                if is_kernel_thread(id) == Some(true) {
                    count.moved_kernel += 1;
                }
            }
            Ok(false) => count.vanished += 1,
            Err(_) => {
                skip.insert(id);
                count.refused += 1;
                let user = is_kernel_thread(id) == Some(false);
                if user {
                    count.refused_user += 1;
                    count.refused_sample.insert(0, (id, comm(id)));
                    count.refused_sample.truncate(8);
                } else if count.refused_sample.len() < 8 {
                    count.refused_sample.push((id, comm(id)));
                }
            }
        }
    }
    Ok(count)
}

/// Moves all tasks out of `from` into `to` (both cgroup directories), in
/// passes until a pass moves nothing (tasks forked meanwhile are caught by the
/// next pass).
///
/// On v2, if either side is a threaded cgroup, threads move one by one
/// (`cgroup.threads`): a threaded cgroup's `cgroup.procs` cannot be read, and
/// moving whole processes would also pull their threads out of other
/// cgroups (a pool, a freezer).
fn move_all(ctl: &Controller, from: &Path, to: &Path) -> Result<MoveCount> {
    let (from_file, to_file) = if is_threaded(ctl, from) || is_threaded(ctl, to) {
        (from.join("cgroup.threads"), to.join("cgroup.threads"))
    } else {
        (ctl.bulk_file(from), ctl.bulk_file(to))
    };
    let mut skip = HashSet::new();
    let mut total = MoveCount::default();
    for _ in 0..8 {
        let c = move_pass(&from_file, &to_file, &mut skip)?;
        let done = c.moved == 0 && c.vanished == 0;
        total.add(c);
        if done {
            break;
        }
    }
    Ok(total)
}

/// v2: whether `cgroup` is a threaded cgroup (`cgroup.type` reads
/// `threaded`). Always false on v1.
fn is_threaded(ctl: &Controller, cgroup: &Path) -> bool {
    ctl.version == CgroupVersion::V2
        && fs::read_to_string(cgroup.join("cgroup.type")).is_ok_and(|t| t.trim() == "threaded")
}

/// v2: the cgroup directories directly below `cgroup`.
fn child_cgroups(cgroup: &Path) -> Vec<PathBuf> {
    fs::read_dir(cgroup)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Empties `cgroup` into `to` and removes it (retrying while exiting tasks
/// linger). A missing cgroup is fine.
///
/// On v2 a cgroup is removed with its descendants (an adopted thread's
/// freezer inside a pool, say): each child is thawed, dissolved if it is a
/// partition, and emptied into its parent first. A threaded cgroup's
/// threads go to its parent whatever `to` says: a thread can only move
/// within its process's threaded domain.
pub fn drain_and_remove(ctl: &Controller, cgroup: &Path, to: &Path) -> Result<MoveCount> {
    if !cgroup.exists() {
        return Ok(MoveCount::default());
    }
    let mut total = MoveCount::default();
    let parent;
    let to = if is_threaded(ctl, cgroup) {
        parent = cgroup.parent().unwrap_or(to).to_path_buf();
        parent.as_path()
    } else {
        to
    };
    if ctl.version == CgroupVersion::V2 {
        for child in child_cgroups(cgroup) {
            let _ = write_str(&child.join("cgroup.freeze"), "0");
            let part = child.join("cpuset.cpus.partition");
            if read_str(&part).is_ok_and(|p| p.trim() != "member") {
                let _ = write_str(&part, "member");
            }
            total.add(drain_and_remove(ctl, &child, cgroup)?);
        }
    }
    for attempt in 0..20 {
        total.add(move_all(ctl, cgroup, to)?);
        match fs::remove_dir(cgroup) {
            Ok(()) => return Ok(total),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(total),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 19 => {
                // Exiting tasks linger briefly in the cgroup.
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                let left = read_ids(&ctl.threads_file(cgroup)).map_or(0, |t| t.len());
                return Err(CgroupError::Busy {
                    path: cgroup.to_path_buf(),
                    left,
                });
            }
            Err(e) => {
                return Err(CgroupError::Io {
                    path: cgroup.to_path_buf(),
                    source: e,
                })
            }
        }
    }
    Ok(total)
}

fn mkdir(path: &Path) -> Result<()> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(CgroupError::Exists {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(CgroupError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

// ---------------------------------------------------------------------------
// State files and owners
// ---------------------------------------------------------------------------

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
struct FrozenThread {
    tid: i32,
    origin: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum StateRecord {
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
    fn owner(&self) -> Owner {
        match self {
            StateRecord::Shield { owner, .. } | StateRecord::Freezer { owner, .. } => *owner,
        }
    }

    fn cgroups(&self) -> Vec<PathBuf> {
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
fn write_state(path: &Path, record: &StateRecord) -> Result<()> {
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

fn read_state(path: &Path) -> Result<StateRecord> {
    let text = read_str(path)?;
    serde_json::from_str(&text).map_err(|source| CgroupError::State {
        path: path.to_path_buf(),
        source,
    })
}

fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CgroupError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

fn shield_state_path(state_dir: &Path, prefix: &str) -> PathBuf {
    state_dir.join(format!("cgroup-shield-{prefix}.json"))
}

fn freezer_state_path(state_dir: &Path, cgroup_name: &str) -> PathBuf {
    state_dir.join(format!("cgroup-freezer-{cgroup_name}.json"))
}

/// Undoes a shield record. Idempotent.
fn undo_shield(
    controller: &Controller,
    host: Option<&Path>,
    pool: &Path,
    enabled_cpuset: bool,
) -> Result<MoveCount> {
    let root = &controller.mount;
    let mut count = MoveCount::default();
    if let Some(host) = host {
        count.add(drain_and_remove(controller, host, root)?);
    }
    if controller.version == CgroupVersion::V2 && pool.exists() {
        // Dissolve the partition first so that its CPUs return at once.
        let _ = write_str(&pool.join("cpuset.cpus.partition"), "member");
    }
    count.add(drain_and_remove(controller, pool, root)?);
    // Disabling would silently strip every other cgroup's cpuset (another
    // instance's pool included): only when we enabled it and nobody uses it.
    if enabled_cpuset && !cpuset_in_use(root) {
        let _ = write_str(&root.join("cgroup.subtree_control"), "-cpuset");
    }
    Ok(count)
}

/// v2: whether any cgroup below `root` configures cpusets (CPUs, a
/// partition, or cpuset enabled for its own children).
fn cpuset_in_use(root: &Path) -> bool {
    child_cgroups(root).iter().any(|c| {
        let has = |file: &str, f: &dyn Fn(&str) -> bool| {
            fs::read_to_string(c.join(file)).is_ok_and(|t| f(t.trim()))
        };
        has("cpuset.cpus", &|t| !t.is_empty())
            || has("cpuset.cpus.exclusive", &|t| !t.is_empty())
            || has("cpuset.cpus.partition", &|t| t != "member")
            || has("cgroup.subtree_control", &|t| {
                t.split_whitespace().any(|c| c == "cpuset")
            })
    })
}

// ---------------------------------------------------------------------------
// CpuShield
// ---------------------------------------------------------------------------

/// What taking the CPUs did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShieldReport {
    /// How the CPUs were taken.
    pub mode: ShieldMode,
    /// Host tasks moved into the host cgroup (shield modes).
    pub tasks: MoveCount,
    /// Other non-empty cgroups of the cpuset hierarchy whose tasks were not
    /// moved and so may still use the taken CPUs (shield modes).
    pub unshielded: Vec<PathBuf>,
    /// Whether the pool cpuset is CPU-exclusive (v1), so the kernel itself
    /// refuses overlapping cpusets.
    pub exclusive: bool,
    /// v2: why the kernel refused the partition, when the shield fell back
    /// to moving host tasks ([`ShieldMode::V2Shield`]).
    pub partition_refused: Option<String>,
}

/// CPUs taken from the host. Released by [`CpuShield::release`] or drop.
#[derive(Debug)]
pub struct CpuShield {
    controller: Controller,
    mode: ShieldMode,
    host: Option<PathBuf>,
    pool: PathBuf,
    cpus: CpuSet,
    enabled_cpuset: bool,
    state_file: PathBuf,
    report: ShieldReport,
    released: bool,
}

impl CpuShield {
    /// Takes `cpus` from the host with the default cgroup names
    /// (`gang.host`, `gang.pool`); the state file goes into `state_dir`.
    pub fn take(cpus: &CpuSet, state_dir: &Path) -> Result<CpuShield> {
        Self::take_named(cpus, state_dir, &prefix_for(state_dir))
    }

    /// As [`CpuShield::take`], with cgroups named `<prefix>.host` and
    /// `<prefix>.pool` (tests use unique prefixes).
    pub fn take_named(cpus: &CpuSet, state_dir: &Path, prefix: &str) -> Result<CpuShield> {
        let h = Hierarchy::detect()?;
        Self::take_in(h.cpuset()?, cpus, state_dir, prefix)
    }

    /// As [`CpuShield::take_named`] on a given cpuset controller.
    pub fn take_in(
        controller: &Controller,
        cpus: &CpuSet,
        state_dir: &Path,
        prefix: &str,
    ) -> Result<CpuShield> {
        check_name(prefix)?;
        let root = &controller.mount;
        let online = online_cpus()?;
        let root_cpus = match controller.version {
            CgroupVersion::V1 => read_cpus(&root.join("cpuset.effective_cpus"))?,
            CgroupVersion::V2 => {
                let p = root.join("cpuset.cpus.effective");
                if p.exists() {
                    read_cpus(&p)?
                } else {
                    online.clone()
                }
            }
        };
        if controller.version == CgroupVersion::V2 {
            // A partition's CPUs are no longer in the root's effective set:
            // say who holds them rather than "not in the root cpuset".
            check_other_shields(controller, cpus)?;
        }
        validate_take(cpus, &online, &root_cpus)?;
        check_other_shields(controller, cpus)?;

        let host_path = root.join(format!("{prefix}.host"));
        let pool = root.join(format!("{prefix}.pool"));
        let state_file = shield_state_path(state_dir, prefix);
        for p in [&host_path, &pool] {
            if p.exists() {
                return Err(CgroupError::Exists { path: p.clone() });
            }
        }

        // v2: the cpuset controller must be enabled for the root's children.
        let mut enabled_cpuset = false;
        if controller.version == CgroupVersion::V2 {
            let sc = root.join("cgroup.subtree_control");
            enabled_cpuset = !read_str(&sc)?.split_whitespace().any(|c| c == "cpuset");
        }
        let mut mode = match controller.version {
            CgroupVersion::V1 => ShieldMode::V1Shield,
            CgroupVersion::V2 => ShieldMode::V2Partition,
        };
        let record = StateRecord::Shield {
            version: STATE_VERSION,
            owner: Owner::current(),
            controller: controller.clone(),
            mode,
            // The host path is recorded even for a partition, so that a crash
            // during the fallback to a shield is repaired too.
            host: Some(host_path.clone()),
            pool: pool.clone(),
            cpus: cpus.clone(),
            enabled_cpuset,
        };
        write_state(&state_file, &record)?;

        let mut shield = CpuShield {
            controller: controller.clone(),
            mode,
            host: None,
            pool: pool.clone(),
            cpus: cpus.clone(),
            enabled_cpuset,
            state_file,
            report: ShieldReport {
                mode,
                tasks: MoveCount::default(),
                unshielded: Vec::new(),
                exclusive: false,
                partition_refused: None,
            },
            released: false,
        };
        // From here on, dropping `shield` on error undoes whatever was done.
        if enabled_cpuset {
            write_str(&root.join("cgroup.subtree_control"), "+cpuset")?;
        }
        let mems = match controller.version {
            CgroupVersion::V1 => read_str(&root.join("cpuset.mems"))?.trim().to_string(),
            CgroupVersion::V2 => String::new(),
        };
        let host_cpus = {
            let mut h = root_cpus.clone();
            h.difference_with(cpus);
            h
        };

        mkdir(&pool)?;
        if controller.version == CgroupVersion::V2 {
            // Threaded, so that single threads (ours, adopted ones) can join
            // it from their process's cgroup: v2 moves single threads only
            // within a threaded domain (here the root's).
            make_threaded(&pool);
            write_str(&pool.join("cpuset.cpus"), &cpus.to_string())?;
            if let Err(why) = make_partition(&pool, cpus) {
                mode = ShieldMode::V2Shield;
                shield.mode = mode;
                shield.report.mode = mode;
                shield.report.partition_refused = Some(why);
            }
        } else {
            write_str(&pool.join("cpuset.cpus"), &cpus.to_string())?;
            write_str(&pool.join("cpuset.mems"), &mems)?;
            shield.report.exclusive = write_str(&pool.join("cpuset.cpu_exclusive"), "1").is_ok();
        }

        if mode != ShieldMode::V2Partition {
            mkdir(&host_path)?;
            shield.host = Some(host_path.clone());
            if controller.version == CgroupVersion::V2 {
                // Threaded like the pool, in the root's threaded domain:
                // threads move in one by one (only the root's own, as on
                // v1), and a host thread can still join the pool later.
                make_threaded(&host_path);
            }
            write_str(&host_path.join("cpuset.cpus"), &host_cpus.to_string())?;
            if controller.version == CgroupVersion::V1 {
                write_str(&host_path.join("cpuset.mems"), &mems)?;
            }
            shield.report.tasks = move_all(controller, root, &host_path)?;
            shield.report.unshielded = other_busy_cgroups(controller, &[&host_path, &pool]);
        }
        Ok(shield)
    }

    /// The taken CPUs.
    pub fn cpus(&self) -> &CpuSet {
        &self.cpus
    }

    /// How the CPUs were taken.
    pub fn mode(&self) -> ShieldMode {
        self.mode
    }

    /// What taking did.
    pub fn report(&self) -> &ShieldReport {
        &self.report
    }

    /// The pool cgroup (the taken CPUs).
    pub fn pool_path(&self) -> &Path {
        &self.pool
    }

    /// The host cgroup (shield modes).
    pub fn host_path(&self) -> Option<&Path> {
        self.host.as_deref()
    }

    /// The state file.
    pub fn state_file(&self) -> &Path {
        &self.state_file
    }

    /// Moves thread `tid` into the pool, so that it may run on the taken
    /// CPUs. On v2 the pool is a threaded child of the root, so the thread's
    /// process must be in the root's threaded domain (the root cgroup, or
    /// the shield's threaded host cgroup); a thread of a process in another
    /// cgroup (a systemd service, a domain's own cgroup) is refused by the
    /// kernel ([`CgroupError::Move`], saying so).
    pub fn attach(&self, tid: i32) -> Result<()> {
        let file = self.controller.threads_file(&self.pool);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .map_err(io_err(&file))?;
        f.write_all(format!("{tid}\n").as_bytes())
            .map_err(|source| {
                let source = match (self.controller.version, source.raw_os_error()) {
                    (CgroupVersion::V2, Some(libc::EOPNOTSUPP)) => {
                        let now = thread_cgroup(&self.controller, "cpuset", tid)
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|_| "?".into());
                        io::Error::new(
                            source.kind(),
                            format!(
                                "{source}: on cgroup v2 a single thread can only join the pool \
                                 from the root cgroup's threaded domain, and it is in {now}"
                            ),
                        )
                    }
                    _ => source,
                };
                CgroupError::Move {
                    tid,
                    path: file.clone(),
                    source,
                }
            })
    }

    /// Moves thread `tid` out of the pool to where the host's tasks run
    /// (the shield's host cgroup, or the root): for a thread given back
    /// while the shield stays up (an adopted vCPU whose domain left the
    /// pool). A thread that is gone is not an error.
    pub fn detach(&self, tid: i32) -> Result<()> {
        let target = self
            .host_cgroup()
            .unwrap_or_else(|| self.controller.mount.clone());
        let file = self.controller.threads_file(&target);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .map_err(io_err(&file))?;
        match f.write_all(format!("{tid}\n").as_bytes()) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            Err(source) => Err(CgroupError::Move {
                tid,
                path: file.clone(),
                source,
            }),
        }
    }

    /// The cgroup holding the host's tasks, if the shield made one (a v2
    /// partition has none; a fallback may have made one).
    fn host_cgroup(&self) -> Option<PathBuf> {
        self.host.clone().or_else(|| {
            let p = self.pool.with_file_name(host_name_of(&self.pool));
            p.exists().then_some(p)
        })
    }

    /// Gives the CPUs back: tasks return to the root cgroup, our cgroups and
    /// the state file are removed. Returns how many tasks moved back.
    pub fn release(mut self) -> Result<MoveCount> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<MoveCount> {
        if self.released {
            return Ok(MoveCount::default());
        }
        let host = self.host_cgroup();
        let count = undo_shield(
            &self.controller,
            host.as_deref(),
            &self.pool,
            self.enabled_cpuset,
        )?;
        remove_file(&self.state_file)?;
        self.released = true;
        Ok(count)
    }
}

impl Drop for CpuShield {
    fn drop(&mut self) {
        let _ = self.release_inner();
    }
}

/// v2: makes a new cgroup threaded. Best effort: without it (a kernel
/// before 4.14, or a parent that cannot be a threaded domain) whole
/// processes can still be moved in.
fn make_threaded(cgroup: &Path) {
    let _ = write_str(&cgroup.join("cgroup.type"), "threaded");
}

/// v2: makes `pool` (whose `cpuset.cpus` are `cpus`) a partition root and
/// checks that the kernel gave it exactly those CPUs. On refusal the pool
/// is a member again and the error says why (the kernel's reason, as in
/// `root invalid (Cpu list in cpuset.cpus not exclusive)`).
fn make_partition(pool: &Path, cpus: &CpuSet) -> std::result::Result<(), String> {
    let part = pool.join("cpuset.cpus.partition");
    if !part.exists() {
        return Err(format!(
            "{}: no cpuset partitions (Linux < 5.11)",
            part.display()
        ));
    }
    let check = || -> std::result::Result<(), String> {
        write_str(&part, "root").map_err(|e| e.to_string())?;
        let state = read_str(&part).map_err(|e| e.to_string())?;
        if state.trim() != "root" {
            return Err(format!("{}: {}", part.display(), state.trim()));
        }
        let eff = pool.join("cpuset.cpus.effective");
        let got = read_cpus(&eff).map_err(|e| e.to_string())?;
        if &got != cpus {
            return Err(format!(
                "{}: the partition got cpus {got}, not {cpus}",
                eff.display()
            ));
        }
        Ok(())
    };
    let r = check();
    if r.is_err() {
        let _ = write_str(&part, "member");
    }
    r
}

fn host_name_of(pool: &Path) -> String {
    let name = pool.file_name().and_then(|n| n.to_str()).unwrap_or("");
    format!("{}.host", name.strip_suffix(".pool").unwrap_or(name))
}

fn validate_take(cpus: &CpuSet, online: &CpuSet, root_cpus: &CpuSet) -> Result<()> {
    if cpus.is_empty() {
        return Err(CgroupError::NoCpus);
    }
    for cpu in cpus.iter() {
        if !online.contains(cpu) {
            let exists = Path::new(&format!("/sys/devices/system/cpu/cpu{cpu}")).exists();
            return Err(CgroupError::CpuIllegal {
                cpu,
                reason: if exists { "offline" } else { "no such cpu" },
            });
        }
        if !root_cpus.contains(cpu) {
            return Err(CgroupError::CpuIllegal {
                cpu,
                reason: "not in the root cpuset",
            });
        }
    }
    let mut rest = root_cpus.intersection(online);
    rest.difference_with(cpus);
    if rest.is_empty() {
        return Err(CgroupError::WouldTakeAll {
            cpus: cpus.clone(),
            online: online.clone(),
        });
    }
    Ok(())
}

/// Refuses CPUs held by another pool (`*.pool` cgroup) and a second shield
/// (`*.host` cgroup): host tasks can only be in one shield.
fn check_other_shields(controller: &Controller, cpus: &CpuSet) -> Result<()> {
    let root = &controller.mount;
    let Ok(entries) = fs::read_dir(root) else {
        return Ok(());
    };
    let mut hosts = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if !path.is_dir() {
            continue;
        }
        if name.ends_with(".pool") {
            let taken = read_cpus(&path.join("cpuset.cpus")).unwrap_or_default();
            if let Some(cpu) = taken.intersection(cpus).first() {
                return Err(CgroupError::CpuInUse { cpu, owner: path });
            }
        } else if name.ends_with(".host") {
            hosts.push(path);
        }
    }
    match hosts.into_iter().next() {
        Some(path) => Err(CgroupError::ShieldExists { path }),
        None => Ok(()),
    }
}

fn other_busy_cgroups(controller: &Controller, ours: &[&Path]) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(&controller.mount) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !ours.contains(&p.as_path()))
        .filter(|p| {
            let file = if is_threaded(controller, p) {
                p.join("cgroup.threads")
            } else {
                controller.bulk_file(p)
            };
            read_ids(&file).map(|v| !v.is_empty()).unwrap_or(false)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Freezer
// ---------------------------------------------------------------------------

/// A per-domain freezer cgroup holding adopted threads.
///
/// Threads return to the cgroup they came from on [`Freezer::remove`] or drop
/// (thawed first).
///
/// On v1 an empty sibling cgroup `<prefix>.<name>~keep` is kept frozen for the
/// freezer's lifetime: the kernel toggles a static key (code patching on all
/// CPUs) when the first cgroup freezes and the last one thaws, which on the
/// development machine cost about 80 µs at p50 and several ms at p99; with
/// one cgroup always frozen that key never toggles.
#[derive(Debug)]
pub struct Freezer {
    controller: Controller,
    path: PathBuf,
    keeper: Option<PathBuf>,
    threads: Vec<FrozenThread>,
    state_file: PathBuf,
    timeout: Duration,
    removed: bool,
    /// The freeze file, opened once for [`Freezer::request`] (a write per
    /// switch must not pay an open and a close).
    control: std::sync::OnceLock<fs::File>,
}

impl Freezer {
    /// Creates the freezer cgroup `gang.<name>`.
    pub fn new(name: &str, state_dir: &Path) -> Result<Freezer> {
        Self::new_named(&prefix_for(state_dir), name, state_dir)
    }

    /// Creates the freezer cgroup `<prefix>.<name>`.
    pub fn new_named(prefix: &str, name: &str, state_dir: &Path) -> Result<Freezer> {
        let h = Hierarchy::detect()?;
        Self::new_in(h.freezer()?, prefix, name, state_dir)
    }

    /// As [`Freezer::new_named`] on a given freezer controller.
    pub fn new_in(
        controller: &Controller,
        prefix: &str,
        name: &str,
        state_dir: &Path,
    ) -> Result<Freezer> {
        Self::create(controller, &controller.mount, prefix, name, state_dir)
    }

    /// Creates `<parent>/<prefix>.<name>` (a keeper beside it on v1).
    fn create(
        controller: &Controller,
        parent: &Path,
        prefix: &str,
        name: &str,
        state_dir: &Path,
    ) -> Result<Freezer> {
        check_name(prefix)?;
        check_name(name)?;
        let cg_name = format!("{prefix}.{name}");
        let path = parent.join(&cg_name);
        if path.exists() {
            return Err(CgroupError::Exists { path });
        }
        let state_file = freezer_state_path(state_dir, &cg_name);
        let keeper = (controller.version == CgroupVersion::V1)
            .then(|| controller.mount.join(format!("{cg_name}~keep")));
        let mut f = Freezer {
            controller: controller.clone(),
            path,
            keeper,
            threads: Vec::new(),
            state_file,
            timeout: DEFAULT_FREEZE_TIMEOUT,
            removed: false,
            control: std::sync::OnceLock::new(),
        };
        f.save()?;
        if let Err(e) = mkdir(&f.path) {
            f.removed = true;
            let _ = remove_file(&f.state_file);
            return Err(e);
        }
        // The keeper is an optimisation: without it freezing still works.
        if let Some(k) = &f.keeper {
            let ok = mkdir(k).is_ok() && write_str(&k.join("freezer.state"), "FROZEN").is_ok();
            if !ok {
                let _ = fs::remove_dir(k);
            }
        }
        Ok(f)
    }

    /// A freezer `<prefix>.<name>` holding thread `tid` alone (an adopted
    /// thread): [`Freezer::new_named`] and [`Freezer::add_thread`] on v1.
    ///
    /// On v2 a single thread can only move within its process's threaded
    /// domain, and a thread is in one cgroup only (the pool's cpuset too).
    /// So the freezer is made a threaded child of the cgroup the thread is
    /// in now (the root, a pool, a domain's own cgroup): the thread keeps
    /// its cpuset, and freezing an ancestor (a paused domain) still
    /// freezes it.
    pub fn for_thread(prefix: &str, name: &str, tid: i32, state_dir: &Path) -> Result<Freezer> {
        let h = Hierarchy::detect()?;
        Self::for_thread_in(h.freezer()?, prefix, name, tid, state_dir)
    }

    /// As [`Freezer::for_thread`] on a given freezer controller.
    pub fn for_thread_in(
        controller: &Controller,
        prefix: &str,
        name: &str,
        tid: i32,
        state_dir: &Path,
    ) -> Result<Freezer> {
        let mut f = match controller.version {
            CgroupVersion::V1 => Self::new_in(controller, prefix, name, state_dir)?,
            CgroupVersion::V2 => {
                let parent = thread_cgroup(controller, "freezer", tid)?;
                let f = Self::create(controller, &parent, prefix, name, state_dir)?;
                make_threaded(&f.path);
                f
            }
        };
        f.add_thread(tid)?; // on error, dropping `f` removes it
        Ok(f)
    }

    fn save(&self) -> Result<()> {
        write_state(
            &self.state_file,
            &StateRecord::Freezer {
                version: STATE_VERSION,
                owner: Owner::current(),
                controller: self.controller.clone(),
                cgroup: self.path.clone(),
                keeper: self.keeper.clone(),
                threads: self.threads.clone(),
            },
        )
    }

    /// The cgroup directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The threads added (some may have exited).
    pub fn threads(&self) -> Vec<i32> {
        self.threads.iter().map(|t| t.tid).collect()
    }

    /// Sets how long freeze and thaw wait for the kernel.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Moves thread `tid` (alone, not its whole process) into the freezer,
    /// recording its current cgroup first. A frozen freezer freezes it.
    ///
    /// v1 moves a single thread of a multi-threaded process (verified on the
    /// development machine). v2 moves single threads only within a threaded
    /// subtree (`cgroup.threads`); otherwise the kernel refuses and this
    /// returns [`CgroupError::Move`], except for a single-threaded process,
    /// which is moved whole (`cgroup.procs`).
    pub fn add_thread(&mut self, tid: i32) -> Result<()> {
        let origin = thread_cgroup(&self.controller, "freezer", tid)?;
        if origin == self.path {
            return Ok(());
        }
        self.threads.push(FrozenThread { tid, origin });
        self.save()?;
        let file = self.controller.threads_file(&self.path);
        if let Err(source) = move_thread(&self.controller, &self.path, tid) {
            self.threads.pop();
            let _ = self.save();
            return Err(CgroupError::Move {
                tid,
                path: file,
                source,
            });
        }
        Ok(())
    }

    /// Freezes the threads; returns once the kernel reports them frozen,
    /// with the time that took.
    pub fn freeze(&self) -> Result<Duration> {
        set_frozen(&self.controller, &self.path, true, self.timeout)
    }

    /// Thaws the threads; returns once the kernel reports them thawed.
    pub fn thaw(&self) -> Result<Duration> {
        set_frozen(&self.controller, &self.path, false, self.timeout)
    }

    /// Asks the kernel to freeze (`true`) or thaw the threads and returns
    /// at once, without waiting for the state to be reached: the runtime's
    /// dispatchers call this on their switch path. [`Freezer::is_frozen`]
    /// tells when it is done.
    pub fn request(&self, frozen: bool) -> Result<()> {
        let (file, value) = freeze_file(&self.controller, &self.path, frozen);
        let control = match self.control.get() {
            Some(f) => f,
            None => {
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(&file)
                    .map_err(io_err(&file))?;
                self.control.get_or_init(|| f)
            }
        };
        // Each request is one whole write at offset 0, as a fresh open would do.
        use std::os::unix::fs::FileExt;
        control
            .write_all_at(value.as_bytes(), 0)
            .map_err(io_err(&file))
    }

    /// Whether the kernel reports the cgroup frozen.
    pub fn is_frozen(&self) -> Result<bool> {
        Ok(read_frozen(&self.controller, &self.path)?.0)
    }

    /// Thaws, moves the threads back where they came from, removes the cgroup
    /// and the state file.
    pub fn remove(mut self) -> Result<MoveCount> {
        self.remove_inner()
    }

    fn remove_inner(&mut self) -> Result<MoveCount> {
        if self.removed {
            return Ok(MoveCount::default());
        }
        let count = undo_freezer(
            &self.controller,
            &self.path,
            self.keeper.as_deref(),
            &self.threads,
        )?;
        remove_file(&self.state_file)?;
        self.removed = true;
        Ok(count)
    }
}

impl Drop for Freezer {
    fn drop(&mut self) {
        let _ = self.remove_inner();
    }
}

/// The cgroup directory that holds thread `tid` in `controller`'s hierarchy;
/// `name` is the controller's name (`freezer`, `cpuset`), used on v1.
pub fn thread_cgroup(controller: &Controller, name: &str, tid: i32) -> Result<PathBuf> {
    let file = PathBuf::from(format!("/proc/{tid}/task/{tid}/cgroup"));
    let text = read_str(&file)?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let hit = match controller.version {
            CgroupVersion::V1 => ctls.split(',').any(|c| c == name),
            CgroupVersion::V2 => id == "0" && ctls.is_empty(),
        };
        if hit {
            return Ok(controller.mount.join(path.trim_start_matches('/')));
        }
    }
    Err(CgroupError::Parse {
        path: file,
        what: "the thread's cgroup",
        text,
    })
}

fn read_frozen(controller: &Controller, cgroup: &Path) -> Result<(bool, String)> {
    match controller.version {
        CgroupVersion::V1 => {
            let s = read_str(&cgroup.join("freezer.state"))?.trim().to_string();
            Ok((s == "FROZEN", s))
        }
        CgroupVersion::V2 => {
            let s = read_str(&cgroup.join("cgroup.events"))?;
            let frozen = s.lines().any(|l| l.trim() == "frozen 1");
            Ok((frozen, s.replace('\n', " ").trim().to_string()))
        }
    }
}

/// The threads in `cgroup` itself (v1 `tasks`, v2 `cgroup.threads`; not
/// its descendants'). A missing cgroup has none.
pub fn threads_of(controller: &Controller, cgroup: &Path) -> Result<Vec<i32>> {
    read_ids(&controller.threads_file(cgroup))
}

/// The threads of `cgroup` and of every cgroup below it (a batch system's
/// job cgroup keeps its tasks in step cgroups below the job's); a child
/// cgroup removed while it is read is skipped.
pub fn threads_below(controller: &Controller, cgroup: &Path) -> Result<Vec<i32>> {
    let mut out = threads_of(controller, cgroup)?;
    let Ok(entries) = fs::read_dir(cgroup) else {
        return Ok(out);
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(threads_below(controller, &e.path()).unwrap_or_default());
        }
    }
    Ok(out)
}

/// The file to write, and what, to freeze (`true`) or thaw `cgroup`, for
/// owners that request the state without waiting (see [`Freezer::request`]).
pub fn freeze_file(
    controller: &Controller,
    cgroup: &Path,
    frozen: bool,
) -> (PathBuf, &'static str) {
    match controller.version {
        CgroupVersion::V1 => (
            cgroup.join("freezer.state"),
            if frozen { "FROZEN" } else { "THAWED" },
        ),
        CgroupVersion::V2 => (cgroup.join("cgroup.freeze"), if frozen { "1" } else { "0" }),
    }
}

/// Freezes (`true`) or thaws every task of `cgroup` and waits (up to
/// `timeout`) until the kernel reports it done; returns how long it took.
pub fn set_frozen(
    controller: &Controller,
    cgroup: &Path,
    frozen: bool,
    timeout: Duration,
) -> Result<Duration> {
    let start = Instant::now();
    let (file, value) = freeze_file(controller, cgroup, frozen);
    write_str(&file, value)?;
    let mut polls = 0u32;
    loop {
        let (now_frozen, last) = read_frozen(controller, cgroup)?;
        if now_frozen == frozen {
            return Ok(start.elapsed());
        }
        // v2 freezing is hierarchical: below a frozen ancestor (a paused
        // domain holding an adopted thread's freezer) a cgroup stays frozen,
        // and thawing it is all we can do.
        if polls == 0 && !frozen && frozen_ancestor(controller, cgroup) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            return Err(CgroupError::Timeout {
                path: file,
                wanted: value,
                last,
                timeout,
            });
        }
        polls += 1;
        if polls > 200 {
            std::thread::sleep(Duration::from_micros(50));
        } else {
            std::hint::spin_loop();
        }
    }
}

/// v2: whether a cgroup between `cgroup` and the hierarchy's root is asked
/// to be frozen.
fn frozen_ancestor(controller: &Controller, cgroup: &Path) -> bool {
    controller.version == CgroupVersion::V2
        && cgroup
            .ancestors()
            .skip(1)
            .take_while(|a| *a != controller.mount && a.starts_with(&controller.mount))
            .any(|a| fs::read_to_string(a.join("cgroup.freeze")).is_ok_and(|t| t.trim() == "1"))
}

/// Moves one thread into `cgroup`. `Ok(false)`: the thread is gone. On v2 a
/// thread outside a threaded subtree cannot move alone; a single-threaded
/// process is then moved whole.
fn move_thread(controller: &Controller, cgroup: &Path, tid: i32) -> io::Result<bool> {
    let write = |file: PathBuf| {
        fs::OpenOptions::new()
            .write(true)
            .open(file)
            .and_then(|mut f| write_id(&mut f, tid))
    };
    match write(controller.threads_file(cgroup)) {
        Err(e) if controller.version == CgroupVersion::V2 && single_threaded_leader(tid) => {
            write(cgroup.join("cgroup.procs")).map_err(|_| e)
        }
        other => other,
    }
}

/// Whether `tid` is the only thread of its process.
fn single_threaded_leader(tid: i32) -> bool {
    crate::proc::status(tid).is_some_and(|s| s.tgid == Some(tid) && s.threads == Some(1))
}

/// Thaws, moves recorded threads back to their origin (or the root if the
/// origin is gone), moves any other task to the root, removes the cgroup.
fn undo_freezer(
    controller: &Controller,
    cgroup: &Path,
    keeper: Option<&Path>,
    threads: &[FrozenThread],
) -> Result<MoveCount> {
    let mut count = MoveCount::default();
    if let Some(k) = keeper.filter(|k| k.exists()) {
        // Empty by construction; anything found there is thawed and moved.
        count.add(undo_freezer(controller, k, None, &[])?);
    }
    if !cgroup.exists() {
        return Ok(count);
    }
    set_frozen(controller, cgroup, false, DEFAULT_FREEZE_TIMEOUT)?;
    let present: HashSet<i32> = read_ids(&controller.threads_file(cgroup))?
        .into_iter()
        .collect();
    // v1: the root. v2: the parent, in the threads' own threaded domain
    // (a freezer made by `Freezer::for_thread` sits in the thread's cgroup).
    let fallback = match controller.version {
        CgroupVersion::V1 => controller.mount.clone(),
        CgroupVersion::V2 => cgroup
            .parent()
            .map_or_else(|| controller.mount.clone(), Path::to_path_buf),
    };
    for t in threads.iter().filter(|t| present.contains(&t.tid)) {
        let dest = if t.origin.is_dir() {
            &t.origin
        } else {
            &fallback
        };
        match move_thread(controller, dest, t.tid) {
            Ok(true) => count.moved += 1,
            Ok(false) => count.vanished += 1,
            Err(_) => count.refused += 1,
        }
    }
    count.add(drain_and_remove(controller, cgroup, &fallback)?);
    Ok(count)
}

// ---------------------------------------------------------------------------
// Repair
// ---------------------------------------------------------------------------

/// What [`repair`] found and undid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Stale state files undone and removed.
    pub state_files: Vec<PathBuf>,
    /// Cgroups removed.
    pub cgroups_removed: Vec<PathBuf>,
    /// Tasks moved back.
    pub tasks: MoveCount,
    /// State files left alone because their owner is alive.
    pub live: Vec<PathBuf>,
    /// State files that could not be read, with the reason; left in place.
    /// Their cgroups, unclaimed, are removed as orphans.
    pub unreadable: Vec<(PathBuf, String)>,
}

impl RepairReport {
    /// Whether nothing stale was found.
    pub fn is_clean(&self) -> bool {
        self.state_files.is_empty() && self.cgroups_removed.is_empty()
    }
}

/// Undoes stale cgroup state of the instance whose state is in
/// `state_dir`: state files whose owner is dead, and cgroups of its prefix
/// ([`prefix_for`]) no live owner claims. Idempotent.
pub fn repair(state_dir: &Path) -> Result<RepairReport> {
    repair_named(state_dir, &prefix_for(state_dir))
}

/// As [`repair`] for cgroups named `<prefix>.*`.
pub fn repair_named(state_dir: &Path, prefix: &str) -> Result<RepairReport> {
    check_name(prefix)?;
    let h = Hierarchy::detect()?;
    let mut report = RepairReport::default();
    let mut claimed: HashSet<PathBuf> = HashSet::new();

    let mut files: Vec<PathBuf> = match fs::read_dir(state_dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("cgroup-") && n.ends_with(".json"))
            })
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(CgroupError::Io {
                path: state_dir.to_path_buf(),
                source: e,
            })
        }
    };
    files.sort();
    for file in files {
        let record = match read_state(&file) {
            Ok(r) => r,
            Err(e) => {
                report.unreadable.push((file, e.to_string()));
                continue;
            }
        };
        if record.owner().is_alive() {
            claimed.extend(record.cgroups());
            report.live.push(file);
            continue;
        }
        let existing: Vec<PathBuf> = record
            .cgroups()
            .into_iter()
            .filter(|p| p.exists())
            .collect();
        match &record {
            StateRecord::Shield {
                controller,
                host,
                pool,
                enabled_cpuset,
                ..
            } => {
                report.tasks.add(undo_shield(
                    controller,
                    host.as_deref(),
                    pool,
                    *enabled_cpuset,
                )?);
            }
            StateRecord::Freezer {
                controller,
                cgroup,
                keeper,
                threads,
                ..
            } => {
                report.tasks.add(undo_freezer(
                    controller,
                    cgroup,
                    keeper.as_deref(),
                    threads,
                )?);
            }
        }
        report.cgroups_removed.extend(existing);
        remove_file(&file)?;
        report.state_files.push(file);
    }

    // Cgroups with our prefix that no live state file claims.
    let mut roots: Vec<Controller> = Vec::new();
    for c in [&h.cpuset, &h.freezer].into_iter().flatten() {
        if !roots.contains(c) {
            roots.push(c.clone());
        }
    }
    let want = format!("{prefix}.");
    for ctl in roots {
        let mut orphans: Vec<PathBuf> = Vec::new();
        find_named(&ctl, &ctl.mount, &want, 0, &mut orphans);
        // v2: a live owner's cgroup may hold a dead one's (a pool holding
        // an adopted thread's freezer).
        let mut i = 0;
        while i < orphans.len() {
            if claimed.contains(&orphans[i]) {
                let live = orphans.remove(i);
                if ctl.version == CgroupVersion::V2 {
                    find_named(&ctl, &live, &want, 1, &mut orphans);
                }
            } else {
                i += 1;
            }
        }
        // Host cgroups first: their tasks go back before the pool goes.
        orphans.sort_by_key(|p| !p.to_string_lossy().ends_with(".host"));
        for p in orphans {
            // A claimed cgroup's orphaned descendant (v2) goes to its parent.
            let to = match p.parent() {
                Some(parent) if ctl.version == CgroupVersion::V2 => parent.to_path_buf(),
                _ => ctl.mount.clone(),
            };
            let is_freezer = h.freezer.as_ref() == Some(&ctl)
                && (p.join("freezer.state").exists() || p.join("cgroup.freeze").exists());
            if is_freezer {
                let _ = set_frozen(&ctl, &p, false, DEFAULT_FREEZE_TIMEOUT);
            }
            if ctl.version == CgroupVersion::V2 {
                let _ = write_str(&p.join("cpuset.cpus.partition"), "member");
            }
            report.tasks.add(drain_and_remove(&ctl, &p, &to)?);
            report.cgroups_removed.push(p);
        }
    }
    Ok(report)
}

/// Cgroups named `<want>*` below `dir`: on v1 directly under the root; on
/// v2 at any depth (an adopted thread's freezer sits in its thread's
/// cgroup), not looking inside a match (it is removed with its
/// descendants) and at most 8 levels down.
///
/// On v2 the names of systemd units (`gang.service`, `gang.slice`: the
/// system daemon's own cgroups on a systemd host) are never ours, and below
/// the root only threaded cgroups are (what [`Freezer::for_thread`] makes).
fn find_named(ctl: &Controller, dir: &Path, want: &str, depth: usize, out: &mut Vec<PathBuf>) {
    const UNITS: [&str; 6] = [".service", ".slice", ".scope", ".socket", ".mount", ".swap"];
    let v2 = ctl.version == CgroupVersion::V2;
    for child in child_cgroups(dir) {
        let name = child
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ours = name.starts_with(want)
            && !(v2 && UNITS.iter().any(|u| name.ends_with(u)))
            && (depth == 0 || is_threaded(ctl, &child));
        if ours {
            out.push(child);
        } else if v2 && depth < 8 {
            find_named(ctl, &child, want, depth + 1, out);
        }
    }
}

// ---------------------------------------------------------------------------
// Measurement
// ---------------------------------------------------------------------------

/// Latency percentiles of a sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencyStats {
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile (nearest rank).
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
}

impl LatencyStats {
    /// Percentiles of `samples` (nearest-rank).
    pub fn from_samples(mut samples: Vec<Duration>) -> LatencyStats {
        if samples.is_empty() {
            return LatencyStats::default();
        }
        samples.sort_unstable();
        let n = samples.len();
        let rank = |q: f64| samples[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        LatencyStats {
            n,
            p50: rank(0.50),
            p99: rank(0.99),
            max: samples[n - 1],
        }
    }
}

impl std::fmt::Display for LatencyStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs (n={})",
            self.p50.as_secs_f64() * 1e6,
            self.p99.as_secs_f64() * 1e6,
            self.max.as_secs_f64() * 1e6,
            self.n
        )
    }
}

/// Freezer latencies for a spinning thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FreezeStats {
    /// From writing FROZEN until the kernel reports FROZEN.
    pub freeze: LatencyStats,
    /// From writing FROZEN until the thread's last progress.
    pub stopped: LatencyStats,
    /// From writing THAWED until the kernel reports THAWED.
    pub thaw: LatencyStats,
    /// From writing THAWED until the thread progresses again.
    pub resumed: LatencyStats,
}

/// Priority-flip latencies for a spinning thread pinned to a CPU shared with
/// a normal-priority spinner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlipStats {
    /// From the flip to SCHED_IDLE until the thread's last progress.
    pub stop: LatencyStats,
    /// From the flip to SCHED_FIFO until the thread progresses again.
    pub start: LatencyStats,
    /// Flips to idle after which the thread did not stop within 20 ms.
    pub not_stopped: usize,
}

/// A thread spinning until told to stop or until its own deadline, recording
/// the time of its last progress.
struct Spinner {
    shared: Arc<SpinShared>,
    handle: Option<JoinHandle<()>>,
}

struct SpinShared {
    base: Instant,
    last_ns: AtomicU64,
    tid: AtomicI32,
    stop: AtomicBool,
    iterations: AtomicUsize,
}

impl Spinner {
    fn spawn(base: Instant, cpu: Option<CpuId>, lifetime: Duration) -> io::Result<Spinner> {
        let shared = Arc::new(SpinShared {
            base,
            last_ns: AtomicU64::new(0),
            tid: AtomicI32::new(0),
            stop: AtomicBool::new(false),
            iterations: AtomicUsize::new(0),
        });
        let s = shared.clone();
        let handle = std::thread::Builder::new()
            .name("gang-spin".into())
            .spawn(move || {
                let deadline = Instant::now() + lifetime;
                if let Some(cpu) = cpu {
                    let mut set = rustix::thread::CpuSet::new();
                    set.set(cpu as usize);
                    let _ = rustix::thread::sched_setaffinity(None, &set);
                }
                s.tid.store(
                    rustix::thread::gettid().as_raw_nonzero().get(),
                    Ordering::Release,
                );
                // The deadline is checked by the thread itself, so even a
                // SCHED_FIFO spinner ends.
                while !s.stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    s.last_ns.store(nanos(s.base, now), Ordering::Release);
                    s.iterations.fetch_add(1, Ordering::Relaxed);
                }
            })?;
        let sp = Spinner {
            shared,
            handle: Some(handle),
        };
        while sp.tid() == 0 {
            std::thread::yield_now();
        }
        Ok(sp)
    }

    fn tid(&self) -> i32 {
        self.shared.tid.load(Ordering::Acquire)
    }

    fn last(&self) -> u64 {
        self.shared.last_ns.load(Ordering::Acquire)
    }

    /// Waits until the spinner's progress is unchanged for `quiet`, up to
    /// `limit`; returns its last progress time, or `None` if it kept running.
    fn wait_stopped(&self, quiet: Duration, limit: Duration) -> Option<u64> {
        let start = Instant::now();
        let mut last = self.last();
        let mut since = Instant::now();
        while start.elapsed() < limit {
            let now = self.last();
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return Some(last);
            }
            std::hint::spin_loop();
        }
        None
    }

    /// Waits until the spinner progresses after `after_ns`; returns the time
    /// of that progress.
    fn wait_running(&self, after_ns: u64, limit: Duration) -> Option<u64> {
        let start = Instant::now();
        while start.elapsed() < limit {
            let now = self.last();
            if now > after_ns {
                return Some(now);
            }
            std::hint::spin_loop();
        }
        None
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn nanos(base: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(base).as_nanos() as u64
}

fn since(t0: u64, t: u64) -> Duration {
    Duration::from_nanos(t.saturating_sub(t0))
}

static MEASURE_SEQ: AtomicUsize = AtomicUsize::new(0);

/// Measures freezing and thawing a spinning thread, `iterations` times, in a
/// temporary freezer cgroup (`gangmeasure.<pid>-<n>`), removed afterwards.
/// On a busy host fewer iterations may run (see the stats' `n`): the spinner
/// ends by its own deadline, and measuring stops well before it.
pub fn measure_freezer(iterations: usize) -> Result<FreezeStats> {
    let pid = rustix::process::getpid().as_raw_nonzero().get();
    let n = MEASURE_SEQ.fetch_add(1, Ordering::Relaxed);
    let state_dir = std::env::temp_dir().join(format!("gang-measure-{pid}-{n}"));
    let base = Instant::now();
    let lifetime = Duration::from_millis(50) * (iterations as u32).max(1) + Duration::from_secs(2);
    // Declared before the freezer so that it is dropped after it (thawed).
    let spinner = Spinner::spawn(base, None, lifetime).map_err(io_err(Path::new("spawn")))?;
    let freezer = Freezer::for_thread(
        "gangmeasure",
        &format!("{pid}-{n}"),
        spinner.tid(),
        &state_dir,
    )?;
    let (mut fr, mut st, mut th, mut re) = (vec![], vec![], vec![], vec![]);
    for _ in 0..iterations {
        // Well inside the spinner's lifetime: fewer samples on a busy host.
        if base.elapsed() > lifetime / 2 {
            break;
        }
        std::thread::sleep(Duration::from_micros(300));
        let t0 = nanos(base, Instant::now());
        fr.push(freezer.freeze()?);
        if let Some(last) =
            spinner.wait_stopped(Duration::from_micros(200), Duration::from_millis(20))
        {
            st.push(since(t0, last));
        }
        std::thread::sleep(Duration::from_micros(300));
        let t1 = nanos(base, Instant::now());
        th.push(freezer.thaw()?);
        if let Some(run) = spinner.wait_running(t1, Duration::from_millis(50)) {
            re.push(since(t1, run));
        }
    }
    freezer.remove()?;
    drop(spinner);
    let _ = fs::remove_dir(&state_dir);
    Ok(FreezeStats {
        freeze: LatencyStats::from_samples(fr),
        stopped: LatencyStats::from_samples(st),
        thaw: LatencyStats::from_samples(th),
        resumed: LatencyStats::from_samples(re),
    })
}

/// Measures stopping and restarting a spinning thread by priority flips.
///
/// A spinner and a normal-priority competitor are pinned to `cpu`; `flip(tid,
/// true)` must make `tid` SCHED_FIFO and `flip(tid, false)` SCHED_IDLE (the
/// caller's `sys` module does the system call). Both threads end by their own
/// deadline whatever happens (measuring stops well before it, so a busy host
/// gives fewer samples); the spinner is flipped to idle before return.
pub fn measure_priority_flip(
    iterations: usize,
    cpu: CpuId,
    flip: impl Fn(i32, bool) -> io::Result<()>,
) -> Result<FlipStats> {
    let base = Instant::now();
    let lifetime = Duration::from_millis(30) * (iterations as u32).max(1) + Duration::from_secs(1);
    let spawn_err = io_err(Path::new("spawn"));
    let competitor = Spinner::spawn(base, Some(cpu), lifetime).map_err(spawn_err)?;
    let spinner = Spinner::spawn(base, Some(cpu), lifetime).map_err(io_err(Path::new("spawn")))?;
    let tid = spinner.tid();
    let do_flip = |fifo: bool| flip(tid, fifo).map_err(|source| CgroupError::Flip { tid, source });
    let run = || -> Result<FlipStats> {
        let (mut stop, mut start, mut not_stopped) = (vec![], vec![], 0);
        do_flip(false)?;
        spinner.wait_stopped(Duration::from_micros(500), Duration::from_millis(50));
        for _ in 0..iterations {
            // Well inside the spinners' lifetime: fewer samples on a busy host.
            if base.elapsed() > lifetime / 2 {
                break;
            }
            let t0 = nanos(base, Instant::now());
            do_flip(true)?;
            if let Some(run) = spinner.wait_running(t0, Duration::from_millis(20)) {
                start.push(since(t0, run));
            }
            std::thread::sleep(Duration::from_micros(500));
            let t1 = nanos(base, Instant::now());
            do_flip(false)?;
            match spinner.wait_stopped(Duration::from_micros(200), Duration::from_millis(20)) {
                Some(last) => stop.push(since(t1, last)),
                None => not_stopped += 1,
            }
        }
        Ok(FlipStats {
            stop: LatencyStats::from_samples(stop),
            start: LatencyStats::from_samples(start),
            not_stopped,
        })
    };
    let result = run();
    let _ = flip(tid, false);
    drop(spinner);
    drop(competitor);
    result
}
