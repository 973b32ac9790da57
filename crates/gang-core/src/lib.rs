//! # gang-core: the gang scheduler's brain
//!
//! **Problem.** Co-schedule every vCPU of a domain on its own CPU, all at once
//! or not at all, under four policies (no-mux, time-triggered, event-triggered,
//! best-effort) plus space filling, and refuse any configuration whose
//! guarantees cannot be kept.
//!
//! **Approach.** This crate is pure: no threads, no clock, no I/O. A driver
//! (the simulator, or the host runtime) feeds [`engine::Event`]s stamped with
//! `now` into a [`engine::Scheduler`] and gets back a [`engine::Decision`]:
//! the CPUs whose vCPU changes and the next boundary at which to ask again.
//! Decisions are a function of the state and the time only, so replicas fed the
//! same events agree exactly.
//!
//! **Modules.**
//! - [`time`], [`cpuset`]: nanosecond times with units; CPU sets with xl syntax.
//! - [`model`]: domains, policies, pool configuration.
//! - [`cohort`]: domains linked by overlapping CPU maps.
//! - [`table`]: the static table of TT and ET reservations over a cohort's
//!   hyperperiod, built by gang EDF and verified slot by slot (admission for
//!   TT is exact by construction: dispatch is a lookup in the verified table).
//! - [`admission`]: parameter checks, CPU-map choice, utilisation caps, table
//!   building, with refusals that name the domain, CPU and time window.
//! - [`engine`]: the scheduler: events in, decisions out. Its run-time state
//!   (budgets, virtual times, pause and block states) is in `pool_state`, the
//!   five passes of the per-boundary decision in `passes` (both private).
//! - [`cosched`]: co-scheduling metrics of a domain (all-running, co-stop,
//!   ready time, co-start skew) from its vCPUs' state intervals, for the
//!   host and the simulator alike.

pub mod admission;
pub mod cohort;
pub mod cosched;
pub mod cpuset;
pub mod engine;
pub mod model;
mod passes;
mod pool_state;
pub mod table;
pub mod time;

pub use admission::AdmissionError;
pub use cpuset::{CpuId, CpuList, CpuSet};
pub use engine::{Decision, DomainStats, EngineError, Event, Scheduler};
pub use model::{
    with_domain_names, Class, DomainId, DomainSpec, Periodic, Policy, PoolConfig, RunState, VcpuRef,
};
pub use time::{Nanos, MS, SEC, US};
