//! The decision engine (API stub; being implemented).
use crate::admission::AdmissionError;
use crate::cpuset::{CpuId, CpuSet};
use crate::model::{DomainId, DomainSpec, Policy, PoolConfig, RunState, VcpuRef};
use crate::time::Nanos;

/// Inputs to the scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `now` is a boundary the scheduler asked for (`Decision::next`).
    Boundary,
    /// A vCPU stopped being runnable (it waits for something).
    VcpuBlocked(VcpuRef),
    /// A vCPU became runnable.
    VcpuWoke(VcpuRef),
    /// The toolstack paused the domain.
    Paused(DomainId),
    /// The toolstack unpaused the domain.
    Unpaused(DomainId),
    /// A domain enters the pool (created in it or migrated in), with its run state.
    DomainAdded {
        /// What it asks for.
        spec: DomainSpec,
        /// Paused / runnable vCPUs.
        state: RunState,
    },
    /// A domain leaves the pool (destroyed or migrated out).
    DomainRemoved(DomainId),
    /// New gang parameters (`cpu_map: None` keeps the current map, or picks
    /// one if the domain had none).
    ParamsSet {
        /// The domain.
        domain: DomainId,
        /// The new map, if given.
        cpu_map: Option<Vec<CpuId>>,
        /// The new policy.
        policy: Policy,
    },
    /// CPUs join the pool.
    CpusAdded(CpuSet),
    /// CPUs leave the pool.
    CpusRemoved(CpuSet),
}

/// What the driver must apply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// Time of the decision.
    pub at: Nanos,
    /// CPUs whose dispatched vCPU changes (None: idle).
    pub changes: Vec<(CpuId, Option<VcpuRef>)>,
    /// When to deliver the next [`Event::Boundary`] (`Nanos::MAX`: only after an event).
    pub next: Nanos,
}

/// Per-domain accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DomainStats {
    /// Wall time the domain was dispatched (all its vCPUs together).
    pub held_ns: Nanos,
    /// CPU time given: held time × vCPU count.
    pub cpu_ns: Nanos,
    /// Held time as a space filler.
    pub filler_ns: Nanos,
    /// TT/ET: time received in the last completed window of its period.
    pub last_window_ns: Nanos,
}

/// Engine errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// Admission refused the change; nothing changed.
    #[error(transparent)]
    Refused(#[from] AdmissionError),
    /// No such domain in this scheduler.
    #[error("domain {0} is not in this pool")]
    UnknownDomain(DomainId),
    /// No such vCPU.
    #[error("domain {0} has no vCPU {1}")]
    UnknownVcpu(DomainId, u32),
    /// `now` went backwards.
    #[error("time went backwards: {now} < {last}")]
    TimeWentBackwards {
        /// Given.
        now: Nanos,
        /// Last seen.
        last: Nanos,
    },
}

/// A pool's gang scheduler.
#[derive(Debug)]
pub struct Scheduler {
    config: PoolConfig,
}

impl Scheduler {
    /// A scheduler for an empty pool.
    pub fn new(config: PoolConfig) -> Result<Self, EngineError> {
        Ok(Scheduler { config })
    }
    /// The pool configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }
    /// Feeds one event at `now`.
    pub fn handle(&mut self, _now: Nanos, _event: Event) -> Result<Decision, EngineError> {
        unimplemented!()
    }
    /// The vCPU dispatched on `cpu` now.
    pub fn dispatched(&self, _cpu: CpuId) -> Option<VcpuRef> {
        unimplemented!()
    }
    /// A domain's CPU map.
    pub fn cpu_map(&self, _id: DomainId) -> Option<&[CpuId]> {
        unimplemented!()
    }
    /// A domain's policy.
    pub fn policy(&self, _id: DomainId) -> Option<Policy> {
        unimplemented!()
    }
    /// A domain's statistics.
    pub fn stats(&self, _id: DomainId) -> Option<DomainStats> {
        unimplemented!()
    }
    /// Domains in id order.
    pub fn domains(&self) -> Vec<DomainId> {
        unimplemented!()
    }
}
