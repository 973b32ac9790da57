//! Repair: undoing what a killed instance left behind.
//!
//! Invariants: only state files whose owner is dead are undone, and only
//! cgroups of the instance's own prefix that no live owner claims are
//! removed (on v2 at any depth, never systemd units'); undoing is
//! idempotent, and an unreadable state file is reported and left alone.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::best_effort;

use super::freezer::{set_frozen, undo_freezer};
use super::moves::{child_cgroups, drain_and_remove, is_threaded};
use super::shield::undo_shield;
use super::state::{read_state, remove_file, StateRecord};
use super::{
    check_name, prefix_for, write_str, CgroupError, CgroupVersion, Controller, Hierarchy,
    MoveCount, Result, DEFAULT_FREEZE_TIMEOUT,
};

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
                best_effort(
                    format_args!("thawing {} before removing it", p.display()),
                    set_frozen(&ctl, &p, false, DEFAULT_FREEZE_TIMEOUT),
                );
            }
            if ctl.version == CgroupVersion::V2 {
                best_effort(
                    "dissolving a partition before removing it",
                    write_str(&p.join("cpuset.cpus.partition"), "member"),
                );
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
/// the root only threaded cgroups are (what [`super::Cgroups::thread_freezer`] makes).
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
