//! A process domain's own cgroups: a freezer (to pause the whole process)
//! and a memory cgroup (its `memory` limit).
//!
//! # Purpose
//!
//! A domain of `type = "process"` is a whole host process; its vCPU threads
//! are adopted by a gang pool's runtime (each into a freezer of its own, see
//! `gang_host::adopt`), the other threads stay in the domain's cgroups. These
//! cgroups are what `pause` freezes and what carries the memory limit.
//!
//! # Invariants
//!
//! * The cgroups are named `<namespace>-d<ID>` directly under each
//!   hierarchy's root, one per controller we use (freezer, memory). The
//!   namespace is the daemon's cgroup prefix (`gang` for the system daemon;
//!   daemons with private state get their own, `gang_host::cgroup::prefix_for`),
//!   so the name is a function of the daemon and the domain id only: a
//!   restarted daemon finds them again ([`DomainCgroup::open`] is idempotent)
//!   and [`sweep`] removes those of its domains that no longer exist, never
//!   another daemon's. The `-d` (not `.`) keeps them out of the runtimes'
//!   own repair, which sweeps `<namespace>.*`.
//! * [`DomainCgroup::remove`] thaws first, moves every task left back to the
//!   hierarchy's root and removes the directories; a missing directory or a
//!   task that exited meanwhile is not an error.
//! * Nothing else under a hierarchy is ever created or removed.

use std::ffi::CString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gang_core::DomainId;
use gang_host::best_effort;
use gang_host::cgroup::{CgroupVersion, Controller, Hierarchy};

/// How long a freeze or thaw may take before it is an error.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a cgroup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No freezer is available on this host.
    #[error("no cgroup freezer is mounted: cannot pause process domains")]
    NoFreezer,
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Freezing, thawing or removing failed (gang-host's cgroup adapter).
    #[error(transparent)]
    Host(#[from] gang_host::cgroup::CgroupError),
    /// `cgroup = PATH` names no cgroup of the freezer hierarchy.
    #[error("cgroup {path}: not a cgroup below the freezer hierarchy at {mount}")]
    NotAFreezer {
        /// The path given.
        path: PathBuf,
        /// Where the freezer hierarchy is mounted.
        mount: PathBuf,
    },
    /// A memory limit was asked for but no memory controller is mounted.
    #[error("no cgroup memory controller is mounted: cannot limit memory to {0} MB")]
    NoMemory(u64),
}

type Result<T, E = CgroupError> = std::result::Result<T, E>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where an adopted process was before it joined a domain's cgroups.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Origin {
    /// The process.
    pub pid: i32,
    /// Its freezer cgroup, relative to the hierarchy's mount.
    pub freezer: Option<String>,
    /// Its memory cgroup, likewise.
    pub memory: Option<String>,
}

/// The cgroups of one domain.
#[derive(Debug)]
pub struct DomainCgroup {
    freezer: (Controller, PathBuf),
    memory: Option<(Controller, PathBuf)>,
    /// Made by gang (else a cgroup another launcher made, such as a batch
    /// system's job cgroup: frozen and thawed, never removed).
    owned: bool,
}

fn cgroup_name(namespace: &str, id: DomainId) -> String {
    format!("{namespace}-d{}", id.0)
}

impl DomainCgroup {
    /// Opens the domain's cgroups, creating them if needed, and sets the
    /// memory limit (`None`: none).
    pub fn open(
        hierarchy: &Hierarchy,
        namespace: &str,
        id: DomainId,
        memory_mb: Option<u64>,
    ) -> Result<Self> {
        let freezer = hierarchy.freezer.clone().ok_or(CgroupError::NoFreezer)?;
        let name = cgroup_name(namespace, id);
        let fpath = freezer.mount.join(&name);
        fs::create_dir_all(&fpath).map_err(io(&fpath))?;
        let memory = match (memory_mb, &hierarchy.memory) {
            (None, _) => None,
            (Some(mb), None) => return Err(CgroupError::NoMemory(mb)),
            (Some(mb), Some(ctl)) => {
                let mpath = ctl.mount.join(&name);
                // On v2 the freezer and memory cgroup are the same directory.
                fs::create_dir_all(&mpath).map_err(io(&mpath))?;
                let (file, value) = match ctl.version {
                    CgroupVersion::V1 => ("memory.limit_in_bytes", mb << 20),
                    CgroupVersion::V2 => ("memory.max", mb << 20),
                };
                let f = mpath.join(file);
                fs::write(&f, value.to_string()).map_err(io(&f))?;
                Some((ctl.clone(), mpath))
            }
        };
        Ok(DomainCgroup {
            freezer: (freezer, fpath),
            memory,
            owned: true,
        })
    }

    /// A freezer cgroup that another launcher made and fills (`cgroup =
    /// PATH`, e.g. a batch system's job cgroup): the domain is whatever runs
    /// in it, processes joining and leaving included. It must be in the
    /// host's freezer hierarchy; gang never removes it.
    pub fn external(hierarchy: &Hierarchy, path: &Path) -> Result<Self> {
        let freezer = hierarchy.freezer.clone().ok_or(CgroupError::NoFreezer)?;
        let inside = path.is_absolute()
            && path.starts_with(&freezer.mount)
            && path != freezer.mount
            && path.is_dir();
        if !inside {
            return Err(CgroupError::NotAFreezer {
                path: path.to_path_buf(),
                mount: freezer.mount.clone(),
            });
        }
        Ok(DomainCgroup {
            freezer: (freezer, path.to_path_buf()),
            memory: None,
            owned: false,
        })
    }

    /// The `cgroup.procs` files a new process must join (as C strings, to be
    /// written from a forked child before it executes anything).
    pub fn procs_files(&self) -> Vec<CString> {
        let mut dirs = vec![&self.freezer.1];
        if let Some((_, m)) = &self.memory {
            if m != &self.freezer.1 {
                dirs.push(m);
            }
        }
        dirs.iter()
            .filter_map(|d| CString::new(d.join("cgroup.procs").into_os_string().into_vec()).ok())
            .collect()
    }

    /// The freezer cgroup (a gang runtime freezes and thaws it in the
    /// domain's slots when the domain is a whole program).
    pub fn freezer(&self) -> (&Controller, &Path) {
        (&self.freezer.0, &self.freezer.1)
    }

    /// Where `pid` is now in the hierarchies this domain uses (relative to
    /// each mount), to be put back by [`DomainCgroup::give_back`].
    pub fn origin_of(&self, pid: i32) -> Origin {
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let path_of = |ctl: &Controller, name: &str| -> Option<String> {
            text.lines().find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
                let matches = match ctl.version {
                    CgroupVersion::V1 => controllers.split(',').any(|c| c == name),
                    CgroupVersion::V2 => controllers.is_empty(),
                };
                matches.then(|| path.trim_start_matches('/').to_string())
            })
        };
        Origin {
            pid,
            freezer: path_of(&self.freezer.0, "freezer"),
            memory: self.memory.as_ref().and_then(|(c, _)| path_of(c, "memory")),
        }
    }

    /// Puts an adopted process back where it was (before the domain's
    /// cgroups are removed); a cgroup gone meanwhile leaves it where it is
    /// (the removal then moves it to the root).
    pub fn give_back(&self, origin: &Origin) {
        let mut back = vec![(&self.freezer.0, &origin.freezer)];
        if let Some((c, _)) = &self.memory {
            back.push((c, &origin.memory));
        }
        for (ctl, path) in back {
            let Some(path) = path else { continue };
            let file = ctl.mount.join(path).join("cgroup.procs");
            if let Err(e) = fs::write(&file, origin.pid.to_string()) {
                tracing::debug!("{}: {e}", file.display());
            }
        }
    }

    /// Whether gang made it (else it is another launcher's `cgroup = PATH`).
    pub fn is_owned(&self) -> bool {
        self.owned
    }

    /// The processes in the domain's cgroup and the cgroups below it now.
    pub fn processes(&self) -> Vec<i32> {
        fn walk(dir: &Path, out: &mut Vec<i32>) {
            out.extend(
                fs::read_to_string(dir.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse::<i32>().ok()),
            );
            for e in fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), out);
                }
            }
        }
        let mut pids = Vec::new();
        walk(&self.freezer.1, &mut pids);
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Moves a whole running process (every thread) into the cgroups.
    pub fn add_process(&self, pid: i32) -> Result<()> {
        let mut dirs = vec![&self.freezer.1];
        if let Some((_, m)) = &self.memory {
            if m != &self.freezer.1 {
                dirs.push(m);
            }
        }
        for d in dirs {
            let f = d.join("cgroup.procs");
            fs::write(&f, pid.to_string()).map_err(io(&f))?;
        }
        Ok(())
    }

    /// Freezes (`true`) or thaws every task of the domain's freezer and
    /// waits until the kernel reports it done.
    pub fn set_frozen(&self, frozen: bool) -> Result<()> {
        let (ctl, dir) = &self.freezer;
        gang_host::cgroup::set_frozen(ctl, dir, frozen, FREEZE_TIMEOUT)?;
        Ok(())
    }

    /// Thaws, moves every task left back to the root cgroups and removes the
    /// cgroups.
    pub fn remove(self) -> Result<()> {
        self.remove_in_place()
    }

    /// [`DomainCgroup::remove`] through a reference (for owners that are
    /// torn down in place); removing twice is harmless.
    pub fn remove_in_place(&self) -> Result<()> {
        if let Err(e) = self.set_frozen(false) {
            tracing::debug!("thawing before removal: {e}");
        }
        if !self.owned {
            return Ok(()); // another launcher's: only thawed
        }
        let mut all = vec![&self.freezer];
        all.extend(self.memory.as_ref());
        for (ctl, dir) in all {
            if dir.exists() {
                remove_dir(ctl, dir)?;
            }
        }
        Ok(())
    }
}

/// Moves the tasks of `dir` to its hierarchy's root and removes it.
fn remove_dir(ctl: &Controller, dir: &Path) -> Result<()> {
    gang_host::cgroup::drain_and_remove(ctl, dir, &ctl.mount)?;
    Ok(())
}

/// Kills every task left in the freezer cgroup of domain `id` (thawed
/// first: a frozen task dies only when thawed) and waits up to 2 s for it
/// to empty; returns how many processes were signalled. For recovery: the
/// processes a killed daemon spawned for a domain it could not re-attach
/// (killed before it recorded them, or after they ended) are nobody's, and
/// [`sweep`] would only move them to the root, leaving them running.
pub fn kill_tasks(hierarchy: &Hierarchy, namespace: &str, id: DomainId) -> usize {
    let Some(ctl) = hierarchy.freezer.as_ref() else {
        return 0;
    };
    let dir = ctl.mount.join(cgroup_name(namespace, id));
    if !dir.exists() {
        return 0;
    }
    let procs = || -> Vec<i32> {
        fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    let mut signalled = Vec::new();
    // A thaw that fails is reported once, not every round.
    let mut thaw_failed = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let pids = procs();
        if pids.is_empty() || std::time::Instant::now() > deadline {
            return signalled.len();
        }
        for &pid in &pids {
            let Some(p) = rustix::process::Pid::from_raw(pid) else {
                continue;
            };
            if rustix::process::kill_process(p, rustix::process::Signal::KILL).is_ok()
                && !signalled.contains(&pid)
            {
                signalled.push(pid);
            }
        }
        let thawed = gang_host::cgroup::set_frozen(ctl, &dir, false, FREEZE_TIMEOUT);
        if !thaw_failed {
            thaw_failed = best_effort(
                format_args!("thawing {} to kill its tasks", dir.display()),
                thawed,
            )
            .is_none();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Removes the domain cgroups of `namespace` of every domain not in `keep`
/// (left by a daemon that was killed); returns how many were removed.
pub fn sweep(hierarchy: &Hierarchy, namespace: &str, keep: &[DomainId]) -> usize {
    let prefix = format!("{namespace}-d");
    let mut removed = 0;
    let ctls = [hierarchy.freezer.as_ref(), hierarchy.memory.as_ref()];
    for ctl in ctls.into_iter().flatten() {
        let Ok(dir) = fs::read_dir(&ctl.mount) else {
            continue;
        };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name
                .strip_prefix(prefix.as_str())
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if keep.contains(&DomainId(id)) {
                continue;
            }
            let path = entry.path();
            // Thaw first (a frozen task cannot leave on v1).
            let thaw = if ctl.version == CgroupVersion::V1 && path.join("freezer.state").exists() {
                Some(fs::write(path.join("freezer.state"), "THAWED"))
            } else if ctl.version == CgroupVersion::V2 {
                Some(fs::write(path.join("cgroup.freeze"), "0"))
            } else {
                None
            };
            if let Some(thaw) = thaw {
                best_effort(
                    format_args!("thawing {} before removing it", path.display()),
                    thaw,
                );
            }
            if remove_dir(ctl, &path).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

use std::os::unix::ffi::OsStringExt as _;

#[cfg(test)]
mod tests {
    use super::*;

    use gang_testkit::host::skip_or_fail;

    fn can_run() -> Option<Hierarchy> {
        if !rustix::process::geteuid().is_root() {
            skip_or_fail("needs root to create cgroups");
            return None;
        }
        match Hierarchy::detect() {
            Ok(h) if h.freezer.is_some() => Some(h),
            _ => {
                skip_or_fail("no cgroup freezer on this host");
                None
            }
        }
    }

    #[test]
    fn a_domain_cgroup_freezes_a_whole_process_limits_its_memory_and_goes_away() {
        let Some(h) = can_run() else { return };
        let id = DomainId(1);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = child.id() as i32;
        let mem = h.memory.as_ref().map(|_| 64);
        let cg = DomainCgroup::open(&h, "gang-test-a", id, mem).expect("open");
        cg.add_process(pid).expect("add");
        let state = |pid: i32| {
            let s = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            s.rsplit(')').next().unwrap_or("").trim().chars().next()
        };
        cg.set_frozen(true).expect("freeze");
        let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        assert!(cgroups.contains("/gang-test-a-d1"), "{cgroups}");
        cg.set_frozen(false).expect("thaw");
        assert_ne!(state(pid), None);
        if let Some((_, m)) = &cg.memory {
            let limit = fs::read_to_string(m.join("memory.limit_in_bytes"))
                .or_else(|_| fs::read_to_string(m.join("memory.max")))
                .unwrap();
            assert_eq!(limit.trim(), (64u64 << 20).to_string());
        }
        let dir = cg.freezer.1.clone();
        cg.remove().expect("remove");
        assert!(!dir.exists());
        let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        assert!(!cgroups.contains("gang-test-a"), "moved back: {cgroups}");
        best_effort("killing the test's program", child.kill());
        best_effort("reaping the test's program", child.wait());
    }

    #[test]
    fn sweep_removes_cgroups_of_unknown_domains_only() {
        let Some(h) = can_run() else { return };
        let (a, b) = (DomainId(1), DomainId(2));
        let ca = DomainCgroup::open(&h, "gang-test-b", a, None).expect("a");
        let cb = DomainCgroup::open(&h, "gang-test-b", b, None).expect("b");
        let other = DomainCgroup::open(&h, "gang-test-c", b, None).expect("other");
        let (pa, pb, po) = (
            ca.freezer.1.clone(),
            cb.freezer.1.clone(),
            other.freezer.1.clone(),
        );
        assert_eq!(sweep(&h, "gang-test-b", &[a]), 1);
        assert!(pa.exists() && !pb.exists() && po.exists(), "only its own");
        other.remove().expect("remove other");
        ca.remove().expect("remove");
        assert!(!pa.exists());
    }
}
