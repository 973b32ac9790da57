//! Threads adopted from another process (any parallel program, or the vCPU
//! threads of QEMU, Firecracker, Cloud Hypervisor): they cannot cooperate
//! with a gate, so each one is stopped and started from outside.
//!
//! **Mechanism.** Each adopted thread gets its own freezer cgroup. While its
//! domain is not dispatched on its CPU it is frozen, so it cannot run on a
//! pool CPU outside its slots, not even when the CPU is otherwise idle. The
//! dispatcher of its CPU asks the kernel to thaw it at the start of a slot
//! and to freeze it at the end, without waiting (see `cgroup`). The thread is
//! pinned to its map CPU and, in shared mode, given the vCPU real-time
//! priority. On cgroup v2, where a thread is in one cgroup only and moves
//! alone only within its process's threaded domain, the freezer is a
//! threaded cgroup inside the one the thread is in (the pool's, in an
//! exclusive pool), so the thread keeps the pool's CPUs.
//!
//! **Why the freezer and not priority flips.** Measured here (`cgroup/measure.rs`):
//! a flip to SCHED_IDLE stops a spinning thread in 7–9 µs p50, the freezer in
//! 16–20 µs p50, and both restart it in 12–50 µs. But a SCHED_IDLE thread
//! still runs whenever its CPU has nothing else to do (the next gang's vCPU
//! blocked, a hole in the table), which breaks "no descheduled domain runs".
//! The freezer stops it unconditionally, for about 10 µs more.
//!
//! **Leaving the process as found.** The thread's policy, priority and CPU
//! affinity are saved at adoption and restored, thawed, when the domain is
//! removed or the runtime stops (and the freezer cgroup is removed, putting
//! the thread back in its original cgroup). A runtime killed meanwhile leaves
//! frozen threads, and threads at real-time priority: each adoption writes
//! the thread's original policy and affinity to the state directory first,
//! and on the next start [`repair`] puts them back (if the thread still
//! runs and its owner is dead) before `cgroup::repair` thaws it, so no
//! adopted thread is left spinning at real-time priority.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use gang_core::{CpuId, VcpuRef};

use crate::best_effort;
use crate::cgroup::{CgroupError, Cgroups, Freezer, Owner};
use crate::sys::{self, SchedPolicy, Tid};

/// Why a thread could not be adopted.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// No such thread.
    #[error("thread {0} does not exist")]
    NoThread(Tid),
    /// The freezer cgroup could not be set up.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// Reading or changing the thread's scheduling failed.
    #[error("thread {tid}: {what}: {source}")]
    Sched {
        /// The thread.
        tid: Tid,
        /// What we did.
        what: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// One adopted thread.
#[derive(Debug)]
pub struct Adopted {
    /// The vCPU it is.
    pub vcpu: VcpuRef,
    /// Its TID.
    pub tid: Tid,
    freezer: Mutex<Option<Freezer>>,
    saved_policy: SchedPolicy,
    saved_affinity: Vec<CpuId>,
    gone: AtomicBool,
    record: PathBuf,
}

/// What an adoption changed, kept in the state directory until undone.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Record {
    /// The runtime's process.
    owner: Owner,
    /// The adopted thread (its start time tells a reused TID apart).
    thread: Owner,
    policy: SchedPolicy,
    affinity: Vec<CpuId>,
}

/// Removes an adopted thread's record once there is nothing left to undo.
fn remove_record(record: &Path) {
    best_effort(
        format_args!("removing {}", record.display()),
        std::fs::remove_file(record),
    );
}

fn record_path(state_dir: &Path, tid: Tid) -> PathBuf {
    state_dir.join(format!("adopted-{tid}.json"))
}

/// Gives back the threads of adoptions whose runtime died (policy and
/// affinity as they were); returns how many. Threads of live runtimes are
/// left alone. Run before `cgroup::repair` thaws them.
pub fn repair(state_dir: &Path) -> Result<usize, AdoptError> {
    let mut restored = 0;
    let Ok(dir) = std::fs::read_dir(state_dir) else {
        return Ok(0);
    };
    for entry in dir.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("adopted-") && name.ends_with(".json")) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(record) = serde_json::from_str::<Record>(&text) else {
            // Unreadable: nothing to undo.
            best_effort(
                format_args!("removing the unreadable record {}", path.display()),
                std::fs::remove_file(&path),
            );
            continue;
        };
        if record.owner.is_alive() {
            continue;
        }
        if record.thread.is_alive() {
            let tid = record.thread.pid;
            sys::set_policy(tid, record.policy).map_err(|source| AdoptError::Sched {
                tid,
                what: "restoring its policy",
                source,
            })?;
            best_effort(
                format_args!("giving thread {tid} its affinity back"),
                sys::set_affinity(tid, &record.affinity),
            );
            restored += 1;
        }
        remove_record(&path);
    }
    Ok(restored)
}

/// Whether thread `tid` exists (in any process).
pub fn thread_exists(tid: Tid) -> bool {
    Path::new(&format!("/proc/{tid}")).exists()
}

/// The CPU affinity of thread `tid`, sorted.
pub(crate) fn affinity_of(tid: Tid) -> std::io::Result<Vec<CpuId>> {
    let set = rustix::thread::sched_getaffinity(rustix::thread::Pid::from_raw(tid))?;
    Ok((0..rustix::thread::CpuSet::MAX_CPU as CpuId)
        .filter(|&c| set.is_set(c as usize))
        .collect())
}

impl Adopted {
    /// Adopts `tid` as `vcpu` on `cpu`: frozen (until its first slot),
    /// pinned, and at `priority` (SCHED_FIFO; 0 keeps its policy).
    pub fn adopt(
        vcpu: VcpuRef,
        tid: Tid,
        cpu: CpuId,
        priority: i32,
        state_dir: &Path,
    ) -> Result<Adopted, AdoptError> {
        Adopted::adopt_into(vcpu, tid, cpu, priority, state_dir, None)
    }

    /// [`Adopted::adopt`] into an exclusive pool: the thread joins the
    /// `shield`'s cpuset after its policy and affinity are recorded (joining
    /// first would record the pool's CPUs as its own affinity, and give them
    /// back to it on release). An affinity of exactly the host's CPUs is the
    /// shield's doing and is recorded as all online CPUs.
    pub fn adopt_into(
        vcpu: VcpuRef,
        tid: Tid,
        cpu: CpuId,
        priority: i32,
        state_dir: &Path,
        shield: Option<&crate::cgroup::CpuShield>,
    ) -> Result<Adopted, AdoptError> {
        if !thread_exists(tid) {
            return Err(AdoptError::NoThread(tid));
        }
        let sched = |what, source| AdoptError::Sched { tid, what, source };
        let saved_policy = sys::policy(tid).map_err(|e| sched("reading its policy", e))?;
        let mut saved_affinity =
            affinity_of(tid).map_err(|e| sched("reading its CPU affinity", e))?;
        if let Some(shield) = shield {
            // Confined by the shield itself (every host task is, while it is
            // up): its own affinity is unknown, and was most likely all CPUs.
            // Restoring the host's CPUs would keep it off the pool's CPUs
            // after the pool is gone.
            let online = crate::cgroup::online_cpus()?;
            let host: Vec<CpuId> = online
                .iter()
                .filter(|&c| !shield.cpus().contains(c))
                .collect();
            if saved_affinity == host {
                saved_affinity = online.iter().collect();
            }
        }
        // Record what we are about to change before changing it.
        let thread = Owner::of_pid(tid).ok_or(AdoptError::NoThread(tid))?;
        let record = Record {
            owner: Owner::current(),
            thread,
            policy: saved_policy,
            affinity: saved_affinity.clone(),
        };
        let record_file = record_path(state_dir, tid);
        let text = serde_json::to_string(&record)
            .map_err(|e| sched("recording it", std::io::Error::other(e)))?;
        let tmp = record_file.with_extension("tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &record_file))
            .map_err(|e| sched("recording it", e))?;
        // Into the pool's cpuset before the freezer (on v2 the freezer is a
        // child of the thread's cgroup) and before pinning (pinning to a
        // pool CPU fails while the thread's cpuset is the host's).
        if let Some(shield) = shield {
            if let Err(e) = shield.attach(tid) {
                remove_record(&record_file);
                return Err(e.into());
            }
        }
        // Named after the thread, not the vCPU: unique on the host even when
        // several runtimes (daemons with their own state) adopt at once. On
        // cgroup v2 it is a threaded cgroup inside the thread's own (the
        // pool's, when a shield has attached it): see `Cgroups::thread_freezer`.
        let freezer = match Cgroups::detect(state_dir)
            .and_then(|cgroups| cgroups.thread_freezer(&format!("t{tid}"), tid))
        {
            Ok(f) => f,
            Err(e) => {
                remove_record(&record_file);
                return Err(e.into());
            }
        };
        if let Err(e) = freezer.freeze() {
            drop(freezer); // thaws and moves the thread back
            remove_record(&record_file);
            return Err(e.into());
        }
        let adopted = Adopted {
            vcpu,
            tid,
            freezer: Mutex::new(Some(freezer)),
            saved_policy,
            saved_affinity,
            gone: AtomicBool::new(false),
            record: record_file,
        };
        // From here on, a failure is undone by `release` (Drop).
        sys::set_affinity(tid, &[cpu]).map_err(|e| sched("pinning it", e))?;
        if priority > 0 {
            sys::set_policy(tid, SchedPolicy::Fifo(priority))
                .map_err(|e| sched("raising its priority", e))?;
        }
        Ok(adopted)
    }

    /// Dispatcher: the slot starts (thaw, without waiting).
    pub fn start(&self) {
        self.request(false);
    }

    /// Dispatcher: the slot ends (freeze, without waiting).
    pub fn stop(&self) {
        self.request(true);
    }

    fn request(&self, frozen: bool) {
        if let Ok(guard) = self.freezer.lock() {
            if let Some(f) = guard.as_ref() {
                // The switch path, where nothing is logged: a request that
                // failed leaves the thread as it was until the next one.
                let _ = f.request(frozen);
            }
        }
    }

    /// Whether the thread has exited (checked after switches, off the switch
    /// path).
    pub fn check_gone(&self) -> bool {
        if !self.gone.load(Ordering::Relaxed) && !thread_exists(self.tid) {
            self.gone.store(true, Ordering::Relaxed);
        }
        self.gone.load(Ordering::Relaxed)
    }

    /// Gives the thread back: thawed, original cgroup, policy and affinity.
    /// Idempotent.
    pub fn release(&self) {
        self.release_from(None);
    }

    /// [`Adopted::release`] from an exclusive pool whose `shield` stays up:
    /// the thread also leaves the pool's cpuset, before its affinity is
    /// restored (inside the pool it would be clipped to the pool's CPUs).
    pub fn release_from(&self, shield: Option<&crate::cgroup::CpuShield>) {
        // Take the freezer out under the lock, undo it outside: a dispatcher
        // may be waiting for this lock on its switch path.
        let freezer = self.freezer.lock().ok().and_then(|mut g| g.take());
        let Some(freezer) = freezer else { return };
        // Its own policy before it thaws: never an unscheduled thread at
        // real-time priority.
        let tid = self.tid;
        if thread_exists(tid) {
            best_effort(
                format_args!("giving thread {tid} its policy back"),
                sys::set_policy(tid, self.saved_policy),
            );
        }
        best_effort(
            format_args!("thawing thread {tid} and moving it back"),
            freezer.remove(),
        );
        if let Some(shield) = shield {
            best_effort(
                format_args!("taking thread {tid} out of the pool's cpuset"),
                shield.detach(tid),
            );
        }
        if thread_exists(tid) {
            best_effort(
                format_args!("giving thread {tid} its affinity back"),
                sys::set_affinity(tid, &self.saved_affinity),
            );
        }
        remove_record(&self.record);
    }
}

impl Drop for Adopted {
    fn drop(&mut self) {
        self.release();
    }
}
