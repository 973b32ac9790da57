//! Task moves: moving every task of a cgroup into another, and removing a
//! cgroup once it is empty.
//!
//! Invariants: a bulk move counts what the kernel refused (bound kernel
//! threads) rather than failing; on v2 threads move one by one whenever a
//! threaded cgroup is involved, so that no process is pulled whole out of
//! other cgroups; a cgroup is removed with its descendants, each emptied
//! into its parent first. A missing cgroup or an exited task is not an
//! error.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::best_effort;

use super::{io_err, read_str, write_str, CgroupError, CgroupVersion, Controller, Result};

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
    pub(super) fn add(&mut self, other: MoveCount) {
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

pub(super) fn read_ids(path: &Path) -> Result<Vec<i32>> {
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
pub(super) fn write_id(f: &mut fs::File, id: i32) -> io::Result<bool> {
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
pub(super) fn move_all(ctl: &Controller, from: &Path, to: &Path) -> Result<MoveCount> {
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
pub(super) fn is_threaded(ctl: &Controller, cgroup: &Path) -> bool {
    ctl.version == CgroupVersion::V2
        && fs::read_to_string(cgroup.join("cgroup.type")).is_ok_and(|t| t.trim() == "threaded")
}

/// v2: the cgroup directories directly below `cgroup`.
pub(super) fn child_cgroups(cgroup: &Path) -> Vec<PathBuf> {
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
            best_effort(
                "thawing a child cgroup before removing it",
                write_str(&child.join("cgroup.freeze"), "0"),
            );
            let part = child.join("cpuset.cpus.partition");
            if read_str(&part).is_ok_and(|p| p.trim() != "member") {
                best_effort(
                    "dissolving a child partition before removing it",
                    write_str(&part, "member"),
                );
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

pub(super) fn mkdir(path: &Path) -> Result<()> {
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
