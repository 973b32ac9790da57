//! The `gang` model: drives `gang_core::Scheduler` exactly as a host runtime
//! would.
//!
//! Contract with the core (from its API): every block and wake is reported;
//! every returned [`gang_core::Decision`] is applied at once (its `changes`
//! say which vCPU is dispatched on each CPU), and its `next` replaces the
//! pending boundary, delivered as [`gang_core::Event::Boundary`] at that time
//! (`Nanos::MAX`: none). The world delivers vCPU events before a boundary at
//! the same instant. Domain ids are `1 + index` in scenario order.
//!
//! **Invariants checked.** A decision names only pool CPUs and known vCPUs,
//! and dispatches a vCPU only on the CPU of its map (otherwise the run fails
//! with [`SimError::BadDecision`] rather than simulating nonsense).

use gang_core::{
    CpuId, Decision, DomainId, DomainSpec, Event, Nanos, RunState, Scheduler, VcpuRef,
};

use crate::scenario::Scenario;
use crate::world::{Model, ModelCounters, Out, SimError, Topo};

/// The gang model.
#[derive(Debug)]
pub(crate) struct GangModel<'a> {
    scenario: &'a Scenario,
    topo: &'a Topo,
    sched: Scheduler,
    /// Per vCPU: its CPU index, once the core's map is known.
    map: Vec<usize>,
    counters: ModelCounters,
}

/// The domain id of scenario domain `d`.
pub(crate) fn domain_id(d: usize) -> DomainId {
    DomainId(d as u32 + 1)
}

/// The core's spec for scenario domain `d`.
pub(crate) fn spec(s: &Scenario, d: usize) -> DomainSpec {
    let def = &s.domains[d];
    DomainSpec {
        id: domain_id(d),
        vcpus: def.vcpus,
        cpu_map: def.cpu_map.clone(),
        policy: def.policy,
    }
}

impl<'a> GangModel<'a> {
    pub(crate) fn new(scenario: &'a Scenario, topo: &'a Topo) -> Result<Self, SimError> {
        let sched = Scheduler::new(scenario.pool.clone())
            .map_err(|source| SimError::Engine { at: 0, source })?;
        Ok(GangModel {
            scenario,
            topo,
            sched,
            map: vec![usize::MAX; topo.dom_of.len()],
            counters: ModelCounters::default(),
        })
    }

    /// The scheduler (for maps and statistics after a run).
    pub(crate) fn scheduler(&self) -> &Scheduler {
        &self.sched
    }

    fn vcpu_index(&self, v: VcpuRef) -> Option<usize> {
        let d = (v.domain.0 as usize).checked_sub(1)?;
        let first = *self.topo.first.get(d)?;
        let next = *self.topo.first.get(d + 1)?;
        let gi = first + v.vcpu as usize;
        (gi < next).then_some(gi)
    }

    fn vcpu_ref(&self, gi: usize) -> VcpuRef {
        let d = self.topo.dom_of[gi] as usize;
        VcpuRef {
            domain: domain_id(d),
            vcpu: (gi - self.topo.first[d]) as u32,
        }
    }

    fn apply(&mut self, now: Nanos, dec: Decision, out: &mut Out) -> Result<(), SimError> {
        self.counters.decisions += 1;
        if !dec.changes.is_empty() {
            out.mark = true;
        }
        for (cpu, v) in dec.changes {
            let bad = |what: String| SimError::BadDecision { at: now, what };
            let ci = self
                .topo
                .cpu_idx(cpu)
                .ok_or_else(|| bad(format!("dispatch on CPU {cpu}, which is not in the pool")))?;
            let gi = match v {
                None => None,
                Some(r) => {
                    let gi = self.vcpu_index(r).ok_or_else(|| {
                        bad(format!("dispatch of unknown vCPU {}.{}", r.domain, r.vcpu))
                    })?;
                    if self.map[gi] != ci {
                        return Err(bad(format!(
                            "vCPU {}.{} dispatched on CPU {cpu}, not on its map's CPU",
                            r.domain, r.vcpu
                        )));
                    }
                    Some(gi)
                }
            };
            out.dispatch.push((ci, gi));
        }
        out.timers.push((0, dec.next));
        Ok(())
    }

    fn learn_map(&mut self, d: usize) -> Result<(), SimError> {
        let id = domain_id(d);
        let map: Vec<CpuId> = self
            .sched
            .cpu_map(id)
            .ok_or_else(|| SimError::BadDecision {
                at: 0,
                what: format!("domain {id} was admitted but has no CPU map"),
            })?
            .to_vec();
        let first = self.topo.first[d];
        let n = self.topo.first[d + 1] - first;
        if map.len() != n {
            return Err(SimError::BadDecision {
                at: 0,
                what: format!("domain {id} has {n} vCPUs but a map of {} CPUs", map.len()),
            });
        }
        for (i, cpu) in map.into_iter().enumerate() {
            self.map[first + i] = self
                .topo
                .cpu_idx(cpu)
                .ok_or_else(|| SimError::BadDecision {
                    at: 0,
                    what: format!("domain {id} mapped on CPU {cpu}, which is not in the pool"),
                })?;
        }
        Ok(())
    }

    fn handle(&mut self, now: Nanos, ev: Event, out: &mut Out) -> Result<(), SimError> {
        let dec = self
            .sched
            .handle(now, ev)
            .map_err(|source| SimError::Engine { at: now, source })?;
        self.apply(now, dec, out)
    }
}

impl Model for GangModel<'_> {
    fn timer_keys(&self) -> usize {
        1
    }

    fn start(&mut self, runnable: &[bool], out: &mut Out) -> Result<(), SimError> {
        for d in 0..self.scenario.domains.len() {
            let state = RunState {
                paused: false,
                runnable: runnable[self.topo.first[d]..self.topo.first[d + 1]].to_vec(),
            };
            let spec = spec(self.scenario, d);
            let dec = self
                .sched
                .handle(0, Event::DomainAdded { spec, state })
                .map_err(|source| refused(self.scenario, d, &source))?;
            self.learn_map(d)?;
            self.apply(0, dec, out)?;
        }
        Ok(())
    }

    fn blocked(&mut self, now: Nanos, v: usize, out: &mut Out) -> Result<(), SimError> {
        let r = self.vcpu_ref(v);
        self.handle(now, Event::VcpuBlocked(r), out)
    }

    fn woke(&mut self, now: Nanos, v: usize, out: &mut Out) -> Result<(), SimError> {
        let r = self.vcpu_ref(v);
        self.handle(now, Event::VcpuWoke(r), out)
    }

    fn timer(&mut self, now: Nanos, _key: usize, out: &mut Out) -> Result<(), SimError> {
        self.counters.boundaries += 1;
        self.handle(now, Event::Boundary, out)
    }

    fn counters(&self) -> ModelCounters {
        self.counters
    }
}

/// The core's refusal of domain `d`, naming every domain as the scenario
/// does (ids are indices + 1, see [`domain_id`]).
fn refused(s: &Scenario, d: usize, source: &gang_core::EngineError) -> SimError {
    SimError::Refused {
        domain: s.domains[d].name.clone(),
        reason: gang_core::with_domain_names(&source.to_string(), |id| {
            let index = (id.0 as usize).checked_sub(1)?;
            s.domains.get(index).map(|def| def.name.clone())
        }),
    }
}

/// CPU maps for every domain as the core would choose them: explicit maps
/// as written, the others from a scratch scheduler fed the same domains.
/// `Err` when the core refuses the set (the caller may fall back to
/// [`fallback_maps`]).
pub(crate) fn core_maps(s: &Scenario) -> Result<Vec<Vec<CpuId>>, SimError> {
    if s.domains.iter().all(|d| d.cpu_map.is_some()) {
        return Ok(s.domains.iter().filter_map(|d| d.cpu_map.clone()).collect());
    }
    let mut sched =
        Scheduler::new(s.pool.clone()).map_err(|source| SimError::Engine { at: 0, source })?;
    let mut maps = Vec::with_capacity(s.domains.len());
    for (d, def) in s.domains.iter().enumerate() {
        let state = RunState::all_runnable(def.vcpus, true);
        sched
            .handle(
                0,
                Event::DomainAdded {
                    spec: spec(s, d),
                    state,
                },
            )
            .map_err(|source| refused(s, d, &source))?;
        let map = sched
            .cpu_map(domain_id(d))
            .ok_or_else(|| SimError::BadDecision {
                at: 0,
                what: format!("domain {} was admitted but has no CPU map", domain_id(d)),
            })?;
        maps.push(map.to_vec());
    }
    Ok(maps)
}

/// A simple deterministic placement for when the core refuses the scenario
/// (a host-only what-if): explicit maps as written, the others on the pool
/// CPUs with the fewest vCPUs so far (ties: lowest id).
pub(crate) fn fallback_maps(s: &Scenario) -> Vec<Vec<CpuId>> {
    let cpus: Vec<CpuId> = s.pool.cpus.iter().collect();
    let mut load = vec![0u32; cpus.len()];
    for d in &s.domains {
        for c in d.cpu_map.iter().flatten() {
            if let Some(i) = cpus.iter().position(|x| x == c) {
                load[i] += 1;
            }
        }
    }
    s.domains
        .iter()
        .map(|d| match &d.cpu_map {
            Some(m) => m.clone(),
            None => {
                let mut order: Vec<usize> = (0..cpus.len()).collect();
                order.sort_by_key(|&i| (load[i], i));
                let mut pick: Vec<usize> = order[..d.vcpus as usize].to_vec();
                pick.sort_unstable();
                for &i in &pick {
                    load[i] += 1;
                }
                pick.into_iter().map(|i| cpus[i]).collect()
            }
        })
        .collect()
}
