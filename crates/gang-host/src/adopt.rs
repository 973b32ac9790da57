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
//! priority.
//!
//! **Why the freezer and not priority flips.** Measured here (cgroup.rs):
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
//! frozen threads: `cgroup::repair` on the next start thaws them.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use gang_core::{CpuId, VcpuRef};

use crate::cgroup::{CgroupError, Freezer};
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
}

/// Whether thread `tid` exists (in any process).
pub fn thread_exists(tid: Tid) -> bool {
    Path::new(&format!("/proc/{tid}")).exists()
}

fn affinity_of(tid: Tid) -> std::io::Result<Vec<CpuId>> {
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
        if !thread_exists(tid) {
            return Err(AdoptError::NoThread(tid));
        }
        let sched = |what, source| AdoptError::Sched { tid, what, source };
        let saved_policy = sys::policy(tid).map_err(|e| sched("reading its policy", e))?;
        let saved_affinity = affinity_of(tid).map_err(|e| sched("reading its CPU affinity", e))?;
        let mut freezer = Freezer::new(&format!("d{}v{}", vcpu.domain, vcpu.vcpu), state_dir)?;
        freezer.add_thread(tid)?;
        freezer.freeze()?;
        let adopted = Adopted {
            vcpu,
            tid,
            freezer: Mutex::new(Some(freezer)),
            saved_policy,
            saved_affinity,
            gone: AtomicBool::new(false),
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
        // Take the freezer out under the lock, undo it outside: a dispatcher
        // may be waiting for this lock on its switch path.
        let freezer = self.freezer.lock().ok().and_then(|mut g| g.take());
        let Some(freezer) = freezer else { return };
        let _ = freezer.remove();
        if thread_exists(self.tid) {
            let _ = sys::set_policy(self.tid, self.saved_policy);
            let _ = sys::set_affinity(self.tid, &self.saved_affinity);
        }
    }
}

impl Drop for Adopted {
    fn drop(&mut self) {
        self.release();
    }
}
