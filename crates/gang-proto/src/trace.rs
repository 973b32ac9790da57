//! The types of a `trace` answer ([`ResponseBody::Trace`](crate::ResponseBody::Trace)):
//! slots, the domains they name, the events in the window, and where and on
//! which clock it was taken. All times are the pool's time (ns since its
//! epoch on the host's CLOCK_MONOTONIC). Fields added since version 2 first
//! shipped carry serde defaults, so an older daemon's answer still reads.

use serde::{Deserialize, Serialize};

use crate::{CpuId, SharedTime};

/// One slot a vCPU was given (`trace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceSlot {
    /// The vCPU.
    pub vcpu: u32,
    /// The CPU.
    pub cpu: CpuId,
    /// Start (pool time, ns).
    pub start_ns: u64,
    /// End (pool time, ns; `u64::MAX` if still running).
    pub end_ns: u64,
    /// How late the dispatcher made the switch that started it, ns: the
    /// slot really began at `start_ns + late_ns`. For threads that are not
    /// gang's own (adopted vCPUs, whole programs), measured from when they
    /// really started running (the kernel's scheduler events), and
    /// `end_ns` is when they stopped.
    #[serde(default)]
    pub late_ns: u64,
    /// The domain's id (0 from a daemon older than `trace --pool`).
    #[serde(default)]
    pub domain: u32,
}

/// A domain a trace names (`trace`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceDomain {
    /// Its id.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// Its vCPUs.
    pub vcpus: u32,
}

/// What a trace event records (`trace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TraceEventKind {
    /// A domain was paused.
    Pause,
    /// A domain was unpaused.
    Unpause,
    /// A domain's vCPUs moved: a new CPU map, into or out of the pool.
    Migrate,
    /// A domain was admitted to the pool's runtime, left it, or had its
    /// gang parameters changed.
    Admission,
    /// A dispatcher's switch later than [`TRACE_LATE_SWITCH_NS`].
    LateSwitch,
}

/// A switch this late (ns) is a `late-switch` event of a trace: well above
/// the p99 of a quiet host (15-25 us), and a tenth of the 1 ms grain.
pub const TRACE_LATE_SWITCH_NS: u64 = 100_000;

/// Something the daemon or a dispatcher did at one instant (`trace`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEvent {
    /// When (pool time, ns).
    pub at_ns: u64,
    /// On which CPU (`None`: the whole pool).
    #[serde(default)]
    pub cpu: Option<CpuId>,
    /// What.
    pub kind: TraceEventKind,
    /// The domain it concerns, if one.
    #[serde(default)]
    pub domain: Option<u32>,
    /// In words (the daemon's log line).
    pub text: String,
}

/// Where and on which clock a trace was taken (`trace`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceMeta {
    /// The host's name (its `uname` node name).
    pub host: String,
    /// The pool's name.
    pub pool: String,
    /// The pool's CPUs.
    pub cpus: Vec<CpuId>,
    /// The pool's grain, ns.
    pub grain_ns: u64,
    /// The pool's shared clock, if it runs on one.
    #[serde(default)]
    pub time: Option<SharedTime>,
    /// The start of the window the answer covers (pool time, ns): `now_ns`
    /// minus `last_ns`, or the oldest slot's start.
    pub from_ns: u64,
}
