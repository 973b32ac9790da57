//! The decision engine: run-time state of one pool and the decision at every
//! boundary.
//!
//! **Contract.** A driver feeds [`Event`]s stamped with a non-decreasing
//! `now` into [`Scheduler::handle`] and applies the returned [`Decision`]: the
//! CPUs whose dispatched vCPU changes now, and `next`, the time of the next
//! [`Event::Boundary`]. Domain-level switches happen only at boundaries, which
//! fall on multiples of the pool grain. Between boundaries, a dispatched vCPU
//! that blocks leaves its CPU idle and runs again at once when it wakes; that
//! is the driver's business (but it reports both, as events).
//!
//! **Decision at a boundary `t`**, per cohort, in precedence order:
//! 1. *no-mux* domains (active since `from`) hold their CPUs;
//! 2. the table segment at `t` names the TT/ET reservations holding CPUs now;
//!    an owner holds them if it is runnable, active and has budget left in its
//!    current window; otherwise they are a *hole*;
//! 3. *ET* domains that are runnable with budget left and not in their slot
//!    run early, by earliest window end, on CPUs nobody holds (free or holes):
//!    event triggering, ahead of best-effort;
//! 4. *BE* domains take free, unreserved CPUs by lowest virtual time (CPU time
//!    ÷ weight); the reservations of the pool's *lending* domain (the host's
//!    slot, [`PoolConfig::lending`]) count as unreserved while it cannot run.
//!    BE slices are aligned on the pool's `be_slice` grid: between grid points
//!    a running BE gang keeps its CPUs unless a higher class takes one;
//! 5. *space fillers* (any class with `sf`) take what is left, holes included,
//!    by least filler time. Every boundary is at or before the end of the
//!    current table segment, so a filler never runs past its hole's end.
//!
//! A domain is dispatched on all CPUs of its map or on none (gang). TT and ET
//! budgets are `active` per window `[from + k·period, from + (k+1)·period)`
//! and are never exceeded: a dispatch is cut at the budget's end. ET's budget
//! is replenished at each window start (a deferrable server aligned on its
//! table windows; ARCHITECTURE.md says why this replaced a pure sporadic
//! server).
//!
//! **Where.** This module handles the events, keeps the domains and cohorts in
//! step with admission, and applies each decision to the per-CPU dispatch;
//! the run-time state of a domain and a cohort (budget windows, charging) is
//! in `pool_state`, and the five passes of a cohort's decision in `passes`.
//!
//! **Determinism.** All state is in ordered maps and vectors, ties break on
//! domain id, arithmetic is integer: two schedulers fed the same events at the
//! same times make identical decisions.

use std::sync::Arc;

use serde::Serialize;

use crate::admission::{self, AdmissionError, Placed};
use crate::cpuset::{CpuId, CpuSet};
use crate::model::{Class, DomainId, DomainSpec, Policy, PoolConfig, RunState, VcpuRef};
use crate::passes;
use crate::pool_state::{CohortState, DomainState};
pub use crate::pool_state::{Dispatch, DomainStats};
use crate::table::Table;
use crate::time::{ceil_to, Duration, Nanos};

/// Inputs to the scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `now` is a boundary the scheduler asked for ([`Decision::next`]).
    Boundary,
    /// A vCPU stopped being runnable (it waits for something).
    VcpuBlocked(VcpuRef),
    /// A vCPU became runnable.
    VcpuWoke(VcpuRef),
    /// The toolstack paused the domain (takes effect at the next boundary).
    Paused(DomainId),
    /// The toolstack unpaused the domain.
    Unpaused(DomainId),
    /// A domain enters the pool (created in it or migrated in), with its run
    /// state. Admission-checked.
    DomainAdded {
        /// What it asks for.
        spec: DomainSpec,
        /// Paused / runnable vCPUs.
        state: RunState,
    },
    /// A domain leaves the pool (destroyed or migrated out); its CPUs are
    /// released at once.
    DomainRemoved(DomainId),
    /// New gang parameters, admission-checked. `cpu_map: None` keeps the
    /// current map (a map the scheduler chose may be chosen again).
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
    /// CPUs leave the pool; domains whose map the scheduler chose move off
    /// them, domains with explicit maps make it fail.
    CpusRemoved(CpuSet),
}

/// What the driver must apply.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Decision {
    /// Time of the decision.
    pub at: Nanos,
    /// CPUs whose dispatched vCPU changes now (`None`: idle), in CPU order.
    pub changes: Vec<(CpuId, Option<VcpuRef>)>,
    /// When to deliver the next [`Event::Boundary`] (`Nanos::MAX`: none is
    /// needed until another event).
    pub next: Nanos,
}

/// Engine errors. A failed event changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// Admission refused the change.
    #[error(transparent)]
    Refused(#[from] AdmissionError),
    /// No such domain in this pool.
    #[error("domain {0} is not in this pool")]
    UnknownDomain(DomainId),
    /// No such vCPU.
    #[error("domain {0} has no vCPU {1}")]
    UnknownVcpu(DomainId, u32),
    /// The run state does not match the vCPU count.
    #[error("domain {domain}: run state lists {given} vCPUs, the domain has {vcpus}")]
    RunStateLength {
        /// The domain.
        domain: DomainId,
        /// Entries given.
        given: usize,
        /// vCPUs.
        vcpus: u32,
    },
    /// CPUs added that are already in the pool, or removed that are not.
    #[error("CPUs {0} {1}")]
    CpuMembership(CpuSet, &'static str),
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
#[derive(Debug, Clone)]
pub struct Scheduler {
    config: PoolConfig,
    /// Sorted by id; cohorts refer to domains by index into this vector.
    domains: Vec<DomainState>,
    cohorts: Vec<CohortState>,
    /// Indexed by CPU number.
    dispatched: Vec<Option<VcpuRef>>,
    /// Changes made outside a boundary (removals, remaps), reported with the
    /// next decision returned.
    pending: Vec<(CpuId, Option<VcpuRef>)>,
    /// After a reconfiguration, the next decision also clears CPUs left
    /// dispatched to a vCPU that no longer maps there.
    sweep: bool,
    last_now: Nanos,
    /// Cohort decisions made so far.
    decisions: u64,
    /// A per-CPU buffer reused by every decision.
    scratch: Vec<Option<VcpuRef>>,
    /// Buffers reused by every decision (no allocation on the hot path).
    buffers: passes::Buffers,
}

impl Scheduler {
    /// A scheduler for a pool with no domains.
    pub fn new(config: PoolConfig) -> Result<Self, EngineError> {
        admission::validate_pool(&config)?;
        Ok(Scheduler {
            config,
            domains: Vec::new(),
            cohorts: Vec::new(),
            dispatched: Vec::new(),
            pending: Vec::new(),
            sweep: false,
            last_now: 0,
            decisions: 0,
            scratch: Vec::new(),
            buffers: passes::Buffers::default(),
        })
    }

    /// The pool configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// Feeds one event at `now` and returns what to apply. On error nothing
    /// changed.
    pub fn handle(&mut self, now: Nanos, event: Event) -> Result<Decision, EngineError> {
        if now < self.last_now {
            return Err(EngineError::TimeWentBackwards {
                now,
                last: self.last_now,
            });
        }
        self.last_now = now;
        match event {
            Event::Boundary => return Ok(self.decide(now)),
            Event::VcpuBlocked(v) => self.set_runnable(now, v, false)?,
            Event::VcpuWoke(v) => self.set_runnable(now, v, true)?,
            Event::Paused(id) => self.set_paused(now, id, true)?,
            Event::Unpaused(id) => self.set_paused(now, id, false)?,
            Event::DomainAdded { spec, state } => self.add_domain(now, spec, state)?,
            Event::DomainRemoved(id) => {
                self.remove_domain(now, id)?;
            }
            Event::ParamsSet {
                domain,
                cpu_map,
                policy,
            } => self.set_params(now, domain, cpu_map, policy)?,
            Event::CpusAdded(cpus) => self.add_cpus(now, cpus)?,
            Event::CpusRemoved(cpus) => self.remove_cpus(now, cpus)?,
        }
        Ok(Decision {
            at: now,
            changes: self.take_changes(),
            next: self.next(),
        })
    }

    /// The changes made since the last decision returned, one per CPU (the
    /// latest wins), in CPU order.
    fn take_changes(&mut self) -> Vec<(CpuId, Option<VcpuRef>)> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let mut changes = std::mem::take(&mut self.pending);
        changes.reverse();
        changes.sort_by_key(|&(cpu, _)| cpu); // stable: the latest stays first
        changes.dedup_by_key(|&mut (cpu, _)| cpu);
        changes
    }

    /// How many cohort decisions were made so far (a cohort decided at a
    /// boundary counts one).
    pub fn decisions_made(&self) -> u64 {
        self.decisions
    }

    /// The earliest boundary any cohort needs.
    pub fn next(&self) -> Nanos {
        self.cohorts
            .iter()
            .map(|c| c.next)
            .min()
            .unwrap_or(Nanos::MAX)
    }

    /// The vCPU dispatched on `cpu` now.
    pub fn dispatched(&self, cpu: CpuId) -> Option<VcpuRef> {
        self.dispatched.get(cpu as usize).copied().flatten()
    }

    /// How the domain holds its CPUs now, if it does.
    pub fn dispatch_of(&self, id: DomainId) -> Option<Dispatch> {
        self.find(id).and_then(|d| d.how)
    }

    /// A domain's CPU map.
    pub fn cpu_map(&self, id: DomainId) -> Option<&[CpuId]> {
        self.find(id).map(|d| d.placed.map.as_slice())
    }

    /// A domain's policy.
    pub fn policy(&self, id: DomainId) -> Option<Policy> {
        self.find(id).map(|d| d.placed.policy)
    }

    /// A domain's run state.
    pub fn run_state(&self, id: DomainId) -> Option<RunState> {
        self.find(id).map(|d| RunState {
            paused: d.paused,
            runnable: d.runnable.clone(),
        })
    }

    /// TT/ET: budget left at `t` in the domain's window (`None` for other
    /// classes or unknown domains). Does not change any state.
    pub fn budget_left(&self, id: DomainId, t: Nanos) -> Option<Nanos> {
        let d = self.find(id)?;
        let timing = d.placed.policy.timing()?;
        if DomainState::window_of(timing, t) != d.window_start {
            return Some(timing.active);
        }
        Some(timing.active.saturating_sub(d.used))
    }

    /// A domain's statistics.
    pub fn stats(&self, id: DomainId) -> Option<DomainStats> {
        self.find(id).map(|d| d.stats)
    }

    /// Domains in id order.
    pub fn domains(&self) -> Vec<DomainId> {
        self.domains.iter().map(DomainState::id).collect()
    }

    /// The cohorts: their CPUs and members.
    pub fn cohorts(&self) -> Vec<(CpuSet, Vec<DomainId>)> {
        self.cohorts
            .iter()
            .map(|c| (c.cpus.clone(), c.members.clone()))
            .collect()
    }

    /// The TT/ET domain whose table slot holds `cpu` at time `t`, if any
    /// (whether or not it uses it).
    pub fn reservation_at(&self, cpu: CpuId, t: Nanos) -> Option<DomainId> {
        let cohort = self.cohorts.iter().find(|c| c.cpus.contains(cpu))?;
        let table = cohort.table.as_ref()?;
        let seg = table.segment_at((t / self.config.grain) % table.length());
        seg.entries
            .iter()
            .map(|&e| &table.reservations()[e as usize])
            .find(|r| r.cpus.contains(cpu))
            .map(|r| r.owner)
    }

    /// A human-readable dump of the whole state: pool, cohorts, tables,
    /// domains with budgets and dispatch (the seed's dumps were empty).
    pub fn dump(&self) -> String {
        let g = self.config.grain;
        let mut out = String::new();
        push_line(
            &mut out,
            format_args!(
                "pool cpus={} grain={} be_slice={} be_reserve={}% domains={} cohorts={} now={}",
                self.config.cpus,
                Duration(g),
                Duration(self.config.be_slice),
                self.config.be_reserve_pct,
                self.domains.len(),
                self.cohorts.len(),
                self.last_now
            ),
        );
        for (i, c) in self.cohorts.iter().enumerate() {
            let members: Vec<String> = c.members.iter().map(|d| d.to_string()).collect();
            push_line(
                &mut out,
                format_args!(
                    "cohort {i}: cpus={} members=[{}] next={}",
                    c.cpus,
                    members.join(","),
                    c.next
                ),
            );
            if let Some(t) = &c.table {
                push_line(
                    &mut out,
                    format_args!(
                        "  table: {} grains, {} segments",
                        t.length(),
                        t.segments().len()
                    ),
                );
                for s in t.segments().iter().take(64) {
                    let owners: Vec<String> = s
                        .entries
                        .iter()
                        .map(|&e| t.reservations()[e as usize].owner.to_string())
                        .collect();
                    push_line(
                        &mut out,
                        format_args!(
                            "    [{}, {}) {}",
                            Duration(s.start * g),
                            Duration(s.end * g),
                            if owners.is_empty() {
                                "-".to_string()
                            } else {
                                owners.join(",")
                            }
                        ),
                    );
                }
                if t.segments().len() > 64 {
                    push_line(
                        &mut out,
                        format_args!("    ... {} more segments", t.segments().len() - 64),
                    );
                }
            }
        }
        for d in self.domains.iter() {
            let map: Vec<String> = d.placed.map.iter().map(|c| c.to_string()).collect();
            push_line(&mut out, format_args!("domain {}: policy={} map=[{}]{} paused={} runnable={}/{} how={:?} used={} held={} vruntime={}",
                d.id(),
                d.placed.policy,
                map.join(","),
                if d.placed.auto_map { " (auto)" } else { "" },
                d.paused,
                d.n_runnable,
                d.runnable.len(),
                d.how,
                Duration(d.used),
                Duration(d.stats.held_ns),
                d.vruntime
            ));
        }
        out
    }

    // ----- run-state events -------------------------------------------------

    fn position(&self, id: DomainId) -> Result<usize, usize> {
        self.domains.binary_search_by_key(&id, DomainState::id)
    }

    fn find(&self, id: DomainId) -> Option<&DomainState> {
        self.position(id).ok().map(|i| &self.domains[i])
    }

    fn find_mut(&mut self, id: DomainId) -> Option<&mut DomainState> {
        self.position(id).ok().map(|i| &mut self.domains[i])
    }

    fn domain_mut(&mut self, id: DomainId) -> Result<&mut DomainState, EngineError> {
        self.find_mut(id).ok_or(EngineError::UnknownDomain(id))
    }

    fn set_runnable(&mut self, now: Nanos, v: VcpuRef, runnable: bool) -> Result<(), EngineError> {
        let d = self.domain_mut(v.domain)?;
        let was = d.runnable();
        let slot = d
            .runnable
            .get_mut(v.vcpu as usize)
            .ok_or(EngineError::UnknownVcpu(v.domain, v.vcpu))?;
        if *slot == runnable {
            return Ok(());
        }
        *slot = runnable;
        if runnable {
            d.n_runnable += 1;
        } else {
            d.n_runnable -= 1;
        }
        self.after_run_state_change(now, v.domain, was);
        Ok(())
    }

    fn set_paused(&mut self, now: Nanos, id: DomainId, paused: bool) -> Result<(), EngineError> {
        let d = self.domain_mut(id)?;
        let was = d.runnable();
        d.paused = paused;
        self.after_run_state_change(now, id, was);
        Ok(())
    }

    /// A domain-level change of runnability asks for a decision at the next
    /// boundary; a BE domain that becomes runnable starts no earlier in
    /// virtual time than its cohort's least runnable one.
    fn after_run_state_change(&mut self, now: Nanos, id: DomainId, was_runnable: bool) {
        let Some(d) = self.find(id) else {
            return;
        };
        if d.runnable() == was_runnable {
            return;
        }
        let ci = d.cohort;
        let Some(c) = self.cohorts.get(ci) else {
            return;
        };
        let at = ceil_to(now, self.config.grain);
        if c.next <= at {
            return; // a decision is already due by then
        }
        // Decide at the next boundary only if that decision can differ from
        // the current one; otherwise the next natural boundary will do (a
        // skipped decision would have been identical, so this is exact).
        let class = d.placed.policy.class();
        let mask = &d.placed.mask;
        let must_decide = if d.runnable() {
            match class {
                Class::BestEffort => {
                    !mask.intersects(&c.taken) && !mask.intersects(&c.reserved)
                        || d.placed.policy.space_filling() && !mask.intersects(&c.taken)
                }
                _ => true,
            }
        } else {
            d.how.is_some()
        };
        let waits = d.runnable() && !must_decide;
        let be_slice = self.config.be_slice;
        if d.runnable() && class == Class::BestEffort {
            // Exact, not the floor cached at the last decision: a cohort may
            // make no decision for a long time (one gang running alone), and
            // a stale floor would credit the newcomer with all that time.
            self.charge(ci, now);
            self.normalise_vruntime(id);
        }
        let c = &mut self.cohorts[ci];
        if must_decide {
            c.next = at;
        } else if waits {
            c.next = c.next.min(ceil_to(now, be_slice).max(at));
        }
    }

    fn normalise_vruntime(&mut self, id: DomainId) {
        let Some(d) = self.find(id) else {
            return;
        };
        if d.placed.policy.class() != Class::BestEffort {
            return;
        }
        let Some(c) = self.cohorts.get(d.cohort) else {
            return;
        };
        let floor = c
            .idx
            .iter()
            .map(|&i| &self.domains[i])
            .filter(|o| o.id() != id)
            .filter(|o| o.placed.policy.class() == Class::BestEffort && o.runnable())
            .map(|o| o.vruntime)
            .min();
        if let (Some(floor), Some(d)) = (floor, self.find_mut(id)) {
            d.vruntime = d.vruntime.max(floor);
        }
    }

    // ----- configuration events ---------------------------------------------

    fn placed_all(&self) -> Vec<Placed> {
        self.domains.iter().map(|d| d.placed.clone()).collect()
    }

    fn tables(&self) -> Vec<Arc<Table>> {
        self.cohorts
            .iter()
            .filter_map(|c| c.table.clone())
            .collect()
    }

    /// Admits `candidate` (the whole new set of domains under `config`),
    /// trying each of `maps` for the domain `choose` when given.
    fn admit(
        &self,
        config: &PoolConfig,
        mut candidate: Vec<Placed>,
        choose: Option<(DomainId, Vec<Vec<CpuId>>)>,
    ) -> Result<(Vec<Placed>, Vec<admission::CohortPlan>), AdmissionError> {
        let previous = self.tables();
        let Some((id, maps)) = choose else {
            let plan = admission::plan(config, &candidate, &previous)?;
            return Ok((candidate, plan));
        };
        let idx = candidate.iter().position(|p| p.id == id).unwrap_or(0);
        let mut first = None;
        let tried = maps.len();
        for map in maps {
            candidate[idx] = Placed::new(id, map, candidate[idx].policy, true);
            match admission::plan(config, &candidate, &previous) {
                Ok(plan) => return Ok((candidate, plan)),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        Err(match first {
            Some(e) if tried == 1 => e,
            Some(e) => AdmissionError::NoMapFits {
                domain: id,
                tried,
                first: Box::new(e),
            },
            None => AdmissionError::NoMapFits {
                domain: id,
                tried: 0,
                first: Box::new(AdmissionError::TooManyVcpus {
                    domain: id,
                    vcpus: candidate[idx].map.len() as u32,
                    cpus: config.cpus.len(),
                }),
            },
        })
    }

    /// Charges every cohort up to `now`.
    fn charge_all(&mut self, now: Nanos) {
        for i in 0..self.cohorts.len() {
            self.charge(i, now);
        }
    }

    fn charge(&mut self, cohort: usize, now: Nanos) {
        let c = &mut self.cohorts[cohort];
        let from = c.charged_to;
        c.charged_to = now;
        for &i in &c.idx {
            let d = &mut self.domains[i];
            if let Some(how) = d.how {
                d.charge(how, from, now);
            }
        }
    }

    /// Installs an admitted plan: new cohorts, every cohort decided at the
    /// next boundary.
    fn install(&mut self, now: Nanos, plan: Vec<admission::CohortPlan>) {
        let at = ceil_to(now, self.config.grain);
        self.cohorts = plan
            .into_iter()
            .enumerate()
            .map(|(i, p)| CohortState::new(i, p, &mut self.domains, now, at))
            .collect();
        self.sweep = true;
    }

    /// Stops a domain at once: its CPUs go idle now.
    fn unassign(&mut self, id: DomainId) {
        let Ok(pos) = self.position(id) else {
            return;
        };
        let d = &mut self.domains[pos];
        d.how = None;
        for (i, &cpu) in d.placed.map.iter().enumerate() {
            if let Some(slot) = self.dispatched.get_mut(cpu as usize) {
                if *slot
                    == Some(VcpuRef {
                        domain: id,
                        vcpu: i as u32,
                    })
                {
                    *slot = None;
                    self.pending.push((cpu, None));
                }
            }
        }
    }

    /// Checks a domain about to join `existing`: a new id, a run state that
    /// matches its vCPUs, a vCPU count and policy the pool allows.
    fn validate_new(
        &self,
        existing: &[Placed],
        spec: &DomainSpec,
        state: &RunState,
    ) -> Result<(), EngineError> {
        let id = spec.id;
        if existing.iter().any(|p| p.id == id) {
            return Err(AdmissionError::DuplicateDomain(id).into());
        }
        if state.runnable.len() != spec.vcpus as usize {
            return Err(EngineError::RunStateLength {
                domain: id,
                given: state.runnable.len(),
                vcpus: spec.vcpus,
            });
        }
        admission::validate_vcpus(&self.config, id, spec.vcpus)?;
        admission::validate_policy(&self.config, id, &spec.policy)?;
        Ok(())
    }

    fn add_domain(
        &mut self,
        now: Nanos,
        spec: DomainSpec,
        state: RunState,
    ) -> Result<(), EngineError> {
        let id = spec.id;
        let mut candidate = self.placed_all();
        self.validate_new(&candidate, &spec, &state)?;
        let choose = match &spec.cpu_map {
            Some(map) => {
                admission::validate_map(&self.config, id, spec.vcpus, map)?;
                candidate.push(Placed::new(id, map.clone(), spec.policy, false));
                None
            }
            None => {
                let maps =
                    admission::candidate_maps(&self.config, &candidate, spec.vcpus, &spec.policy);
                candidate.push(Placed::new(id, Vec::new(), spec.policy, true));
                Some((id, maps))
            }
        };
        let (candidate, plan) = self.admit(&self.config, candidate, choose)?;
        self.charge_all(now);
        let placed = candidate
            .into_iter()
            .find(|p| p.id == id)
            .ok_or(EngineError::UnknownDomain(id))?;
        self.insert_domain(now, placed, state);
        self.install(now, plan);
        self.normalise_vruntime(id);
        Ok(())
    }

    /// Admits a whole set of domains at once, all or nothing (a daemon
    /// restoring its state, a scenario, a what-if question). Domains without
    /// a map get the least-loaded CPUs in turn; unlike [`Event::DomainAdded`],
    /// no alternative maps are tried. One admission check covers the set, so
    /// this is much cheaper than adding the domains one by one.
    pub fn add_domains(
        &mut self,
        now: Nanos,
        domains: Vec<(DomainSpec, RunState)>,
    ) -> Result<Decision, EngineError> {
        if now < self.last_now {
            return Err(EngineError::TimeWentBackwards {
                now,
                last: self.last_now,
            });
        }
        let mut candidate = self.placed_all();
        for (spec, state) in &domains {
            let id = spec.id;
            self.validate_new(&candidate, spec, state)?;
            let placed = match &spec.cpu_map {
                Some(map) => {
                    admission::validate_map(&self.config, id, spec.vcpus, map)?;
                    Placed::new(id, map.clone(), spec.policy, false)
                }
                None => {
                    let map = admission::candidate_maps(
                        &self.config,
                        &candidate,
                        spec.vcpus,
                        &spec.policy,
                    )
                    .into_iter()
                    .next()
                    .ok_or_else(|| AdmissionError::NoMapFits {
                        domain: id,
                        tried: 0,
                        first: Box::new(AdmissionError::TooManyVcpus {
                            domain: id,
                            vcpus: spec.vcpus,
                            cpus: self.config.cpus.len(),
                        }),
                    })?;
                    Placed::new(id, map, spec.policy, true)
                }
            };
            candidate.push(placed);
        }
        let (candidate, plan) = self.admit(&self.config, candidate, None)?;
        self.last_now = now;
        self.charge_all(now);
        let ids: Vec<DomainId> = domains.iter().map(|(s, _)| s.id).collect();
        for (spec, state) in domains {
            let placed = candidate
                .iter()
                .find(|p| p.id == spec.id)
                .cloned()
                .ok_or(EngineError::UnknownDomain(spec.id))?;
            self.insert_domain(now, placed, state);
        }
        self.install(now, plan);
        for id in ids {
            self.normalise_vruntime(id);
        }
        Ok(Decision {
            at: now,
            changes: self.take_changes(),
            next: self.next(),
        })
    }

    fn insert_domain(&mut self, now: Nanos, placed: Placed, state: RunState) {
        let n_runnable = state.runnable.iter().filter(|&&r| r).count();
        let window_start = placed
            .policy
            .timing()
            .map_or(0, |timing| DomainState::window_of(timing, now));
        let d = DomainState {
            placed,
            paused: state.paused,
            runnable: state.runnable,
            n_runnable,
            window_start,
            used: 0,
            window_held: 0,
            vruntime: 0,
            how: None,
            cohort: 0,
            stats: DomainStats::default(),
        };
        match self.position(d.id()) {
            Ok(i) => self.domains[i] = d,
            Err(i) => self.domains.insert(i, d),
        }
    }

    /// Removes a domain; returns what it asked for and its run state (for a
    /// migration to another pool).
    pub fn remove_domain(
        &mut self,
        now: Nanos,
        id: DomainId,
    ) -> Result<(DomainSpec, RunState), EngineError> {
        if self.find(id).is_none() {
            return Err(EngineError::UnknownDomain(id));
        }
        let rest: Vec<Placed> = self
            .placed_all()
            .into_iter()
            .filter(|p| p.id != id)
            .collect();
        let (_, plan) = self.admit(&self.config, rest, None)?;
        self.charge_all(now);
        self.unassign(id);
        let pos = self
            .position(id)
            .map_err(|_| EngineError::UnknownDomain(id))?;
        let d = self.domains.remove(pos);
        self.install(now, plan);
        let spec = DomainSpec {
            id,
            vcpus: d.runnable.len() as u32,
            cpu_map: if d.placed.auto_map {
                None
            } else {
                Some(d.placed.map.clone())
            },
            policy: d.placed.policy,
        };
        Ok((
            spec,
            RunState {
                paused: d.paused,
                runnable: d.runnable,
            },
        ))
    }

    fn set_params(
        &mut self,
        now: Nanos,
        id: DomainId,
        cpu_map: Option<Vec<CpuId>>,
        policy: Policy,
    ) -> Result<(), EngineError> {
        let current = self.find(id).ok_or(EngineError::UnknownDomain(id))?;
        let vcpus = current.runnable.len() as u32;
        let old = current.placed.clone();
        admission::validate_policy(&self.config, id, &policy)?;
        let mut candidate = self.placed_all();
        let idx = candidate
            .iter()
            .position(|p| p.id == id)
            .ok_or(EngineError::UnknownDomain(id))?;
        let choose = match cpu_map {
            Some(map) => {
                admission::validate_map(&self.config, id, vcpus, &map)?;
                candidate[idx] = Placed::new(id, map, policy, false);
                None
            }
            None => {
                candidate[idx].policy = policy;
                if old.auto_map {
                    // Keep the current map first; other choices only if it
                    // does not admit.
                    let others: Vec<Placed> =
                        candidate.iter().filter(|p| p.id != id).cloned().collect();
                    let mut maps = vec![old.map.clone()];
                    for m in admission::candidate_maps(&self.config, &others, vcpus, &policy) {
                        if !maps.contains(&m) {
                            maps.push(m);
                        }
                    }
                    Some((id, maps))
                } else {
                    None
                }
            }
        };
        let (candidate, plan) = self.admit(&self.config, candidate, choose)?;
        self.charge_all(now);
        let placed = candidate
            .into_iter()
            .find(|p| p.id == id)
            .ok_or(EngineError::UnknownDomain(id))?;
        if placed.map != old.map {
            self.unassign(id);
        }
        let d = self.domain_mut(id)?;
        // Keep the budget already used in the current period.
        let used = match (old.policy.timing(), policy.timing()) {
            (Some(_), Some(_)) => {
                d.roll(now);
                d.used
            }
            _ => 0,
        };
        d.placed = placed;
        if let Some(timing) = policy.timing() {
            d.window_start = DomainState::window_of(timing, now);
            d.used = used.min(timing.active);
        }
        self.install(now, plan);
        self.normalise_vruntime(id);
        Ok(())
    }

    fn add_cpus(&mut self, _now: Nanos, cpus: CpuSet) -> Result<(), EngineError> {
        if cpus.intersects(&self.config.cpus) {
            return Err(EngineError::CpuMembership(
                cpus.intersection(&self.config.cpus),
                "are already in the pool",
            ));
        }
        self.config.cpus.union_with(&cpus);
        Ok(())
    }

    fn remove_cpus(&mut self, now: Nanos, cpus: CpuSet) -> Result<(), EngineError> {
        if !cpus.is_subset(&self.config.cpus) {
            let mut extra = cpus.clone();
            extra.difference_with(&self.config.cpus);
            return Err(EngineError::CpuMembership(extra, "are not in the pool"));
        }
        let mut config = self.config.clone();
        config.cpus.difference_with(&cpus);
        let all = self.placed_all();
        let pinned: Vec<DomainId> = all
            .iter()
            .filter(|p| !p.auto_map && p.mask.intersects(&cpus))
            .map(|p| p.id)
            .collect();
        if !pinned.is_empty() {
            return Err(AdmissionError::CpusInUse {
                cpus,
                domains: pinned,
            }
            .into());
        }
        // Move auto-mapped domains off the leaving CPUs, one by one.
        let (mut keep, moving): (Vec<Placed>, Vec<Placed>) =
            all.into_iter().partition(|p| !p.mask.intersects(&cpus));
        let mut plan = None;
        for p in moving {
            admission::validate_vcpus(&config, p.id, p.map.len() as u32)?;
            let maps = admission::candidate_maps(&config, &keep, p.map.len() as u32, &p.policy);
            keep.push(Placed::new(p.id, Vec::new(), p.policy, true));
            let (admitted, pl) = self.admit(&config, keep, Some((p.id, maps)))?;
            keep = admitted;
            plan = Some(pl);
        }
        let plan = match plan {
            Some(p) => p,
            None => admission::plan(&config, &keep, &self.tables())?,
        };
        self.charge_all(now);
        for p in keep {
            let moved = self.find(p.id).is_some_and(|d| d.placed.map != p.map);
            if moved {
                self.unassign(p.id);
            }
            if let Some(d) = self.find_mut(p.id) {
                d.placed = p;
            }
        }
        self.config = config;
        self.install(now, plan);
        Ok(())
    }

    // ----- decisions --------------------------------------------------------

    /// Decides every cohort due at `now`.
    fn decide(&mut self, now: Nanos) -> Decision {
        if self.sweep {
            self.sweep = false;
            self.sweep_stale();
        }
        for i in 0..self.cohorts.len() {
            if self.cohorts[i].next <= now {
                self.decide_cohort(i, now);
            }
        }
        Decision {
            at: now,
            changes: self.take_changes(),
            next: self.next(),
        }
    }

    /// Clears CPUs dispatched to vCPUs that no longer map there.
    fn sweep_stale(&mut self) {
        for cpu in 0..self.dispatched.len() {
            if let Some(v) = self.dispatched[cpu] {
                let valid = self
                    .find(v.domain)
                    .is_some_and(|d| d.placed.map.get(v.vcpu as usize) == Some(&(cpu as CpuId)));
                if !valid {
                    self.dispatched[cpu] = None;
                    self.pending.push((cpu as CpuId, None));
                }
            }
        }
    }

    /// Decides cohort `ci` at boundary `t` ([`passes::decide_cohort`]) and
    /// applies the decision: every CPU of the cohort whose dispatched vCPU
    /// changes is reported with the next decision returned.
    fn decide_cohort(&mut self, ci: usize, t: Nanos) {
        self.decisions += 1;
        self.charge(ci, t);
        let cohort = &self.cohorts[ci];
        let next = passes::decide_cohort(
            &self.config,
            cohort,
            &mut self.domains,
            &mut self.buffers,
            t,
        );
        let how = &self.buffers.how;

        // Apply: the cohort's new per-CPU dispatch, reporting what changed.
        if let Some(max) = cohort.cpus.iter().last() {
            if self.dispatched.len() <= max as usize {
                self.dispatched.resize(max as usize + 1, None);
            }
        }
        let scratch = &mut self.scratch;
        scratch.clear();
        scratch.resize(self.dispatched.len(), None);
        for (j, &i) in cohort.idx.iter().enumerate() {
            if how[j].is_some() {
                let d = &self.domains[i];
                for (vcpu, &cpu) in d.placed.map.iter().enumerate() {
                    scratch[cpu as usize] = Some(VcpuRef {
                        domain: d.id(),
                        vcpu: vcpu as u32,
                    });
                }
            }
        }
        for cpu in cohort.cpus.iter() {
            let v = scratch[cpu as usize];
            if self.dispatched[cpu as usize] != v {
                self.dispatched[cpu as usize] = v;
                self.pending.push((cpu, v));
            }
        }
        let cohort = &mut self.cohorts[ci];
        cohort.next = next;
        cohort.taken.clone_from(&self.buffers.taken);
        cohort.reserved.clone_from(&self.buffers.reserved);
    }
}

/// Appends one line to a [`Scheduler::dump`]. Writing to a `String` cannot
/// fail (`fmt::Write for String` never returns an error; only a broken
/// `Display` could, and `format!` panics on that too), so no error is
/// dropped here.
fn push_line(out: &mut String, line: std::fmt::Arguments<'_>) {
    use std::fmt::Write as _;
    out.write_fmt(line)
        .expect("a String takes any text; a Display returned an error");
    out.push('\n');
}
