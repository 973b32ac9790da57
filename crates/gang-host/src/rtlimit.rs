//! Lifting the kernel's real-time bandwidth limit while a runtime needs it.
//!
//! # Problem
//!
//! The kernel lets real-time threads use at most `sched_rt_runtime_us` of
//! every `sched_rt_period_us` (950 ms of 1 s by default) on a CPU; past it,
//! they are stopped for the rest of the period. A pool's vCPUs run at
//! real-time priority, so the runtime keeps a host slot of about 8% on every
//! pool CPU (`runtime::host_slot_for`) to stay under the limit: that slot is
//! what keeps the pool's efficiency at ~92% of its time. With the limit
//! lifted (`-1`), an exclusive pool needs only a 1% slot for its CPUs' kernel
//! threads (measured with `gang bench --cpus 1 --exclusive --rt-unlimited`:
//! 98.9% of the pool's time to gangs at 1 and 10 ms grains, switches late by
//! 15-36 us at p99). Shared pools keep 8%: the host's own tasks need it.
//!
//! # Approach
//!
//! An opt-in [`RtLimitLift`] writes `-1` and restores the previous value when
//! the last lifter in any process is gone. Every lifter first records itself
//! and the value to restore in `rt-limit-<pid>.json` in its state directory;
//! [`repair`] restores the value when a crashed lifter's record is the last
//! one. Safe while lifted: a runtime's vCPUs are gated (parked or frozen in
//! the host slot), its dispatchers sleep between boundaries, and a vCPU that
//! ignores its gate is demoted by the watchdog, so every pool CPU still gets
//! its host slot of non-real-time time.
//!
//! # Invariants
//!
//! * The limit is lifted only while at least one live lifter is recorded.
//! * The value restored is the one read before the first lift (a lifter that
//!   finds the limit already lifted by another takes that one's record).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::best_effort;
use crate::cgroup::Owner;

const SYSCTL: &str = "/proc/sys/kernel/sched_rt_runtime_us";

/// Why lifting or restoring failed.
#[derive(Debug, thiserror::Error)]
pub enum RtLimitError {
    /// The sysctl or a record could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The sysctl holds something else than a number.
    #[error("{SYSCTL}: unexpected value '{0}'")]
    Value(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RtLimitError + '_ {
    move |source| RtLimitError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    owner: Owner,
    previous: i64,
}

fn read_limit() -> Result<i64, RtLimitError> {
    let text = std::fs::read_to_string(SYSCTL).map_err(io(Path::new(SYSCTL)))?;
    text.trim()
        .parse()
        .map_err(|_| RtLimitError::Value(text.trim().to_string()))
}

fn write_limit(value: i64) -> Result<(), RtLimitError> {
    std::fs::write(SYSCTL, value.to_string()).map_err(io(Path::new(SYSCTL)))
}

/// Every record in `dir`: (file, record).
fn records(dir: &Path) -> Vec<(PathBuf, Record)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("rt-limit-") && n.ends_with(".json")
        })
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path()).ok()?;
            Some((e.path(), serde_json::from_str(&text).ok()?))
        })
        .collect()
}

/// The real-time limit lifted for as long as this value lives.
#[derive(Debug)]
pub struct RtLimitLift {
    record: PathBuf,
    dir: PathBuf,
}

impl RtLimitLift {
    /// Records this process as a lifter in `state_dir` and lifts the limit.
    pub fn lift(state_dir: &Path) -> Result<RtLimitLift, RtLimitError> {
        let owner = Owner::current();
        let current = read_limit()?;
        // Already lifted by a live lifter: restore what that one found.
        let previous = records(state_dir)
            .into_iter()
            .find(|(_, r)| r.owner.is_alive())
            .map_or(current, |(_, r)| r.previous);
        let record = state_dir.join(format!("rt-limit-{}.json", owner.pid));
        let text = serde_json::to_string(&Record { owner, previous })
            .map_err(|e| io(&record)(std::io::Error::other(e)))?;
        std::fs::write(&record, text).map_err(io(&record))?;
        if let Err(e) = write_limit(-1) {
            remove_record(&record);
            return Err(e);
        }
        Ok(RtLimitLift {
            record,
            dir: state_dir.to_path_buf(),
        })
    }
}

impl Drop for RtLimitLift {
    fn drop(&mut self) {
        let mine = std::fs::read_to_string(&self.record)
            .ok()
            .and_then(|t| serde_json::from_str::<Record>(&t).ok());
        remove_record(&self.record);
        let others_alive = records(&self.dir).iter().any(|(_, r)| r.owner.is_alive());
        if let (Some(r), false) = (mine, others_alive) {
            best_effort(
                format_args!("restoring {SYSCTL} to {}", r.previous),
                write_limit(r.previous),
            );
        }
    }
}

/// Restores the limit recorded by lifters that died, if no live lifter
/// remains; removes their records. Returns whether it restored.
pub fn repair(state_dir: &Path) -> Result<bool, RtLimitError> {
    let all = records(state_dir);
    let (alive, dead): (Vec<_>, Vec<_>) = all.into_iter().partition(|(_, r)| r.owner.is_alive());
    let mut restored = false;
    if alive.is_empty() {
        if let Some((_, r)) = dead.first() {
            write_limit(r.previous)?;
            restored = true;
        }
    }
    for (path, _) in dead {
        remove_record(&path);
    }
    Ok(restored)
}

/// Removes a lifter's record once there is nothing left to undo.
fn remove_record(record: &Path) {
    best_effort(
        format_args!("removing {}", record.display()),
        std::fs::remove_file(record),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn can_run() -> bool {
        if !crate::sys::is_root() || read_limit().is_err() {
            crate::sys::skip_or_fail(&format!("needs root and {SYSCTL}"));
            return false;
        }
        true
    }

    #[test]
    fn the_limit_is_lifted_while_held_and_restored_after_or_by_repair() {
        if !can_run() {
            return;
        }
        let dir = tempfile_dir("rtlimit");
        let before = read_limit().unwrap();
        // Whatever fails below, the host gets its limit back.
        struct Restore(i64);
        impl Drop for Restore {
            fn drop(&mut self) {
                best_effort("restoring the limit after the test", write_limit(self.0));
            }
        }
        let _restore = Restore(before);
        {
            let _lift = RtLimitLift::lift(&dir).unwrap();
            assert_eq!(read_limit().unwrap(), -1);
        }
        assert_eq!(read_limit().unwrap(), before, "restored on drop");
        // A lifter that died (its record names a process that is gone): the
        // next start's repair restores the value it recorded.
        write_limit(-1).unwrap();
        let dead = Owner {
            pid: i32::MAX,
            start_time: 1,
        };
        let text = serde_json::to_string(&Record {
            owner: dead,
            previous: before,
        })
        .unwrap();
        std::fs::write(dir.join("rt-limit-2147483647.json"), text).unwrap();
        assert!(repair(&dir).unwrap());
        assert_eq!(read_limit().unwrap(), before);
        assert!(records(&dir).is_empty());
        best_effort("removing the test's records", std::fs::remove_dir_all(&dir));
    }

    fn tempfile_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("gang-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
