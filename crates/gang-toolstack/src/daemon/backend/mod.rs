//! What runs a domain: one backend per kind, behind one interface.
//!
//! | kind | config | what runs | vCPU threads | pause | power requests | exits seen by |
//! |---|---|---|---|---|---|---|
//! | [`process::ProcessBackend`] | `type = "process"` | a host process gang spawned, or adopted by `pid` | named by `vcpu_threads` (a glob), in TID order | freezer cgroup | SIGTERM to its process group | its exit status |
//! | [`microvm::MicroVmBackend`] | `type = "pvh"` | a `gang_vmm::Vm` inside the daemon | the VM's own vCPU threads, gated | the VM's vCPU state machines | the power port | the VM's exit callback |
//! | [`qemu::QemuBackend`] | `type = "hvm"`, or `device_model = "qemu"` | a QEMU process gang spawned (Xen's device model) | QMP's `query-cpus-fast` | QMP `stop`/`cont` | ACPI power button / `system_reset` over QMP | QMP events, then QEMU's state |
//!
//! The daemon (`domains`) owns everything that is the same for every kind:
//! the store record, admission in the pool's runtime, `on_*` actions, and
//! the order in which a domain is brought up and torn down. A backend owns
//! what differs: how the domain's threads are found and handed to a gang
//! runtime, how it is paused, asked to shut down, and how its end is seen.
//!
//! # Invariants
//!
//! * A backend is made running or paused, with its threads known or not:
//!   the daemon calls [`Backend::vcpu_threads`] and then
//!   [`Backend::attach`] (in a gang pool) before [`Backend::start`].
//! * [`Backend::tear_down`] leaves nothing on the host that the backend
//!   made (processes it started, cgroups, tap devices, sockets) and gives
//!   back what it adopted.
//! * [`Backend::poll_exit`] reports a domain's end once.

pub(super) mod microvm;
pub(super) mod process;
pub(super) mod qemu;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gang_core::DomainId;
use gang_host::runtime::Runtime;
use gang_proto::ApiError;
use serde::{Deserialize, Serialize};

use crate::process::Tid;
use crate::store::{ProcessIdentity, ShutdownReason};

/// How long a new domain has to show its vCPU threads.
pub(super) const THREAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What the daemon keeps in the store about a running domain, to re-attach
/// it after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveRecord {
    /// The process (the daemon's own for a micro-VM).
    pub process: ProcessIdentity,
    /// Whether gang started it (else it was adopted by pid).
    pub spawned: bool,
    /// Its vCPU threads with their start times, once known.
    pub vcpu_threads: Option<Vec<(Tid, u64)>>,
    /// Where its output goes.
    pub console: PathBuf,
    /// Created paused: the FIFO its program waits on before it starts
    /// (opened by the first unpause).
    #[serde(default)]
    pub start_gate: Option<PathBuf>,
    /// A QEMU domain: how to reach it again.
    #[serde(default)]
    pub qemu: Option<qemu::QemuRecord>,
    /// A job of several processes (`pids`): the others.
    #[serde(default)]
    pub members: Vec<ProcessIdentity>,
    /// Adopted processes: the cgroups they came from, to go back to.
    #[serde(default)]
    pub origins: Vec<crate::domain_cgroup::Origin>,
    /// A whole program as one gang (no `vcpu_threads`): every thread of
    /// its cgroup runs in the domain's slots, on its CPUs.
    #[serde(default)]
    pub group: bool,
}

impl LiveRecord {
    /// The vCPU thread ids, once known.
    pub(super) fn vcpu_tids(&self) -> Option<Vec<Tid>> {
        self.vcpu_threads
            .as_ref()
            .map(|v| v.iter().map(|t| t.0).collect())
    }

    pub(super) fn pid(&self) -> i32 {
        self.process.pid as i32
    }

    /// Whether any of its processes still runs.
    pub(super) fn any_alive(&self) -> bool {
        std::iter::once(&self.process)
            .chain(&self.members)
            .any(crate::process::is_alive)
    }
}

/// A backend that could not start, and the cgroup it was given (for the
/// daemon to remove).
pub(super) type StartFailed = Box<(ApiError, crate::domain_cgroup::DomainCgroup)>;

/// Why a domain ended, as its backend saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Ended {
    /// Shut down, rebooted or crashed.
    pub(super) reason: ShutdownReason,
    /// What happened, for `dmesg` and the crashed state.
    pub(super) detail: String,
}

impl Ended {
    pub(super) fn new(reason: ShutdownReason, detail: impl Into<String>) -> Ended {
        Ended {
            reason,
            detail: detail.into(),
        }
    }
}

/// One kind of domain. See the module docs.
pub(super) trait Backend: Send {
    /// What the domain is, for messages ("process", "VM", "QEMU guest").
    fn kind(&self) -> &'static str;

    /// The domain's vCPU threads, waiting up to [`THREAD_TIMEOUT`] for a
    /// new process to create them. `Ok(None)`: the domain ended meanwhile
    /// (its end is reported by [`Backend::poll_exit`]).
    fn vcpu_threads(
        &mut self,
        record: &LiveRecord,
        vcpus: u32,
        pattern: Option<&str>,
    ) -> Result<Option<Vec<Tid>>, ApiError>;

    /// Hands the vCPU threads to a gang pool's runtime, where the domain
    /// is admitted.
    fn attach(&mut self, rt: &Arc<Runtime>, id: DomainId, tids: &[Tid]) -> Result<(), ApiError>;

    /// Takes the vCPUs back before the domain leaves its runtime (threads
    /// adopted by the runtime are given back by the runtime itself).
    fn detach(&mut self) {}

    /// Lets a new domain's vCPUs run, or leaves it paused.
    fn start(&mut self, _paused: bool) -> Result<(), ApiError> {
        Ok(())
    }

    /// Stops every vCPU of the domain (`pause`).
    fn pause(&mut self, record: &LiveRecord) -> Result<(), ApiError>;

    /// Undoes [`Backend::pause`].
    fn resume(&mut self, record: &mut LiveRecord) -> Result<(), ApiError>;

    /// Asks the guest or program to power off or reboot.
    fn request(&mut self, record: &LiveRecord, reason: ShutdownReason) -> Result<(), ApiError>;

    /// Types into the domain's console.
    fn console_input(&mut self, bytes: &[u8]) -> Result<(), String>;

    /// Whether the domain ended, and why (`requested`: what was asked for).
    fn poll_exit(
        &mut self,
        record: &LiveRecord,
        requested: Option<ShutdownReason>,
    ) -> Option<Ended>;

    /// Ends what the backend runs and removes what it made.
    fn tear_down(&mut self, record: &LiveRecord);

    /// The processes whose threads the domain holds now.
    fn processes(&self, record: &LiveRecord) -> Vec<i32> {
        std::iter::once(&record.process)
            .chain(&record.members)
            .filter(|p| crate::process::is_alive(p))
            .map(|p| p.pid as i32)
            .collect()
    }

    /// Whether it goes on running when the daemon ends (a micro-VM runs
    /// inside the daemon and does not).
    fn outlives_daemon(&self) -> bool {
        true
    }

    /// Whether the domain's CPU time is its vCPU threads' only (else its
    /// whole process's).
    fn counts_vcpu_time_only(&self) -> bool {
        false
    }
}
