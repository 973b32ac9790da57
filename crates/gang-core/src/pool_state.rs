//! Run-time state of a pool's domains and cohorts: what the engine remembers
//! between events.
//!
//! **Per domain** ([`DomainState`]): the placed domain (map and policy), its
//! run state (paused, runnable vCPUs), its TT/ET budget window and the budget
//! used in it, its BE virtual time, how it holds its CPUs now, and its
//! statistics. **Per cohort** ([`CohortState`]): its members, its verified
//! table, when it must be decided next and what its last decision took.
//!
//! Invariants: a TT/ET domain's budget window is always one of
//! `[from + k·period, from + (k+1)·period)` (before `from`, the first one),
//! moved forward by [`DomainState::roll`] as time passes, and `used` counts
//! only time inside it; time is charged to a domain once, under the
//! [`Dispatch`] it held over that time ([`CohortState::charged_to`] marks how
//! far). All arithmetic is integer, so the state is a function of the events
//! and their times only.

use std::sync::Arc;

use serde::Serialize;

use crate::admission::{CohortPlan, Placed};
use crate::cpuset::CpuSet;
use crate::model::{Class, DomainId, Periodic, Policy};
use crate::table::Table;
use crate::time::Nanos;

/// How a domain holds its CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Dispatch {
    /// A no-mux domain on its own CPUs.
    NoMux,
    /// A TT or ET domain in its table slot.
    Reserved,
    /// An ET domain running early, on an event, outside its slot.
    EventTriggered,
    /// A BE domain in its share.
    BestEffort,
    /// Any space-filling domain in a hole.
    Filler,
}

/// Per-domain accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct DomainStats {
    /// Wall time the domain was dispatched (all its vCPUs together).
    pub held_ns: Nanos,
    /// CPU time given: held time × vCPU count.
    pub cpu_ns: Nanos,
    /// Held time as a space filler.
    pub filler_ns: Nanos,
    /// TT/ET: time held in the last completed window of its period.
    pub last_window_ns: Nanos,
    /// Number of times it was dispatched (slot starts).
    pub dispatches: u64,
}

/// Run-time state of one domain.
#[derive(Debug, Clone)]
pub(crate) struct DomainState {
    pub(crate) placed: Placed,
    pub(crate) paused: bool,
    pub(crate) runnable: Vec<bool>,
    pub(crate) n_runnable: usize,
    /// TT/ET: start of the current budget window, and budget used in it.
    pub(crate) window_start: Nanos,
    pub(crate) used: Nanos,
    /// Held time in the current window (any kind), for `last_window_ns`.
    pub(crate) window_held: Nanos,
    /// BE: virtual time, CPU-ns × 2^16 / weight.
    pub(crate) vruntime: u128,
    pub(crate) how: Option<Dispatch>,
    /// Index of its cohort in the scheduler's cohorts.
    pub(crate) cohort: usize,
    pub(crate) stats: DomainStats,
}

impl DomainState {
    pub(crate) fn id(&self) -> DomainId {
        self.placed.id
    }

    pub(crate) fn width(&self) -> u64 {
        self.placed.map.len() as u64
    }

    pub(crate) fn runnable(&self) -> bool {
        !self.paused && self.n_runnable > 0
    }

    pub(crate) fn active(&self, t: Nanos) -> bool {
        t >= self.placed.policy.from()
    }

    /// The budget window containing `t` (the first window before `from`).
    pub(crate) fn window_of(timing: Periodic, t: Nanos) -> Nanos {
        if t < timing.from {
            timing.from
        } else {
            t - (t - timing.from) % timing.period
        }
    }

    /// Moves the budget window forward to the one containing `t`.
    pub(crate) fn roll(&mut self, t: Nanos) {
        let Some(timing) = self.placed.policy.timing() else {
            return;
        };
        let start = Self::window_of(timing, t);
        if start != self.window_start {
            self.stats.last_window_ns = if start == self.window_start + timing.period {
                self.window_held
            } else {
                0
            };
            self.window_start = start;
            self.used = 0;
            self.window_held = 0;
        }
    }

    /// Budget left at `t` in the current window (0 for other classes).
    pub(crate) fn budget_left(&mut self, t: Nanos) -> Nanos {
        match self.placed.policy.timing() {
            Some(timing) => {
                self.roll(t);
                timing.active.saturating_sub(self.used)
            }
            None => 0,
        }
    }

    /// Charges `[a, b)` of holding under `how`.
    pub(crate) fn charge(&mut self, how: Dispatch, a: Nanos, b: Nanos) {
        if b <= a {
            return;
        }
        let dt = b - a;
        self.stats.held_ns += dt;
        self.stats.cpu_ns += dt * self.width();
        match how {
            Dispatch::Filler => self.stats.filler_ns += dt,
            Dispatch::BestEffort => {
                if let Policy::BestEffort { weight, .. } = self.placed.policy {
                    self.vruntime +=
                        ((u128::from(dt) * u128::from(self.width())) << 16) / u128::from(weight);
                }
            }
            Dispatch::Reserved | Dispatch::EventTriggered => {
                if let Some(timing) = self.placed.policy.timing() {
                    self.roll(a);
                    let end = self.window_start.max(timing.from) + timing.period;
                    if b <= end {
                        self.used += dt;
                    } else {
                        self.used += end.saturating_sub(a);
                        self.window_held += end.saturating_sub(a);
                        self.roll(b);
                        self.used += b - self.window_start;
                        self.window_held += b - self.window_start;
                        return;
                    }
                }
            }
            Dispatch::NoMux => {}
        }
        if self.placed.policy.timing().is_some() {
            self.roll(a);
            self.window_held += dt;
        }
    }
}

/// Run-time state of one cohort.
#[derive(Debug, Clone)]
pub(crate) struct CohortState {
    pub(crate) cpus: CpuSet,
    /// Member ids, ascending.
    pub(crate) members: Vec<DomainId>,
    /// The members' indices into `Scheduler::domains`.
    pub(crate) idx: Vec<usize>,
    pub(crate) table: Option<Arc<Table>>,
    /// When this cohort must be decided next.
    pub(crate) next: Nanos,
    /// Holding is charged up to here.
    pub(crate) charged_to: Nanos,
    /// At the last decision: CPUs held and CPUs reserved by the table
    /// segment.
    pub(crate) taken: CpuSet,
    pub(crate) reserved: CpuSet,
    /// Which classes and flags its members have (passes with nothing to do
    /// are skipped).
    pub(crate) has_nomux: bool,
    pub(crate) has_et: bool,
    pub(crate) has_filler: bool,
    /// Member positions of the BE members, and of the space fillers.
    pub(crate) be_order: Vec<usize>,
    pub(crate) filler_order: Vec<usize>,
}

impl CohortState {
    /// The state of cohort number `index` of an admitted plan, due for a
    /// decision at `at` and charged up to `now`. Points each member's
    /// [`DomainState::cohort`] at it; `domains` is sorted by id.
    pub(crate) fn new(
        index: usize,
        plan: CohortPlan,
        domains: &mut [DomainState],
        now: Nanos,
        at: Nanos,
    ) -> Self {
        let idx: Vec<usize> = plan
            .members
            .iter()
            .filter_map(|&id| domains.binary_search_by_key(&id, DomainState::id).ok())
            .collect();
        let (mut has_nomux, mut has_et, mut has_filler) = (false, false, false);
        let (mut be_order, mut filler_order) = (Vec::new(), Vec::new());
        for (pos, &j) in idx.iter().enumerate() {
            let d = &mut domains[j];
            if d.placed.policy.class() == Class::BestEffort {
                be_order.push(pos);
            }
            if d.placed.policy.space_filling() {
                filler_order.push(pos);
            }
            d.cohort = index;
            has_nomux |= d.placed.policy.class() == Class::NoMux;
            has_et |= d.placed.policy.class() == Class::EventTriggered;
            has_filler |= d.placed.policy.space_filling();
        }
        CohortState {
            cpus: plan.cpus,
            members: plan.members,
            idx,
            table: plan.table,
            next: at,
            charged_to: now,
            taken: CpuSet::new(),
            reserved: CpuSet::new(),
            has_nomux,
            has_et,
            has_filler,
            be_order,
            filler_order,
        }
    }
}
