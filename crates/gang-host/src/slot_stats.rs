//! What the gates' traces say about gang execution: co-start skew (first
//! to last vCPU of a gang passing its gate in the same slot), the time a
//! time-triggered gang received per period, and the share of the pool's
//! CPU time the vCPUs held; and [`Spread`], the percentiles they are
//! summed up in.
//!
//! Pure functions of [`SlotRun`] traces (see [`crate::gate`]): the runtime's
//! tests read them to prove gang execution, and the benchmarks (`gang
//! bench`, `gang_vmm::bench`) to report it. A slot counts only when every
//! vCPU of its domain has a run in it; later runs in a slot (resumptions
//! after a block) are not slot starts.

use std::collections::BTreeMap;

use gang_core::{DomainId, Nanos, VcpuRef};

use crate::gate::SlotRun;

/// Percentiles of a sample, in ns.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Spread {
    /// Number of samples.
    pub n: usize,
    /// 1st percentile.
    pub p1: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

impl Spread {
    /// Percentiles of `xs` (empty: all zero).
    pub fn of(mut xs: Vec<f64>) -> Spread {
        if xs.is_empty() {
            return Spread::default();
        }
        xs.sort_by(f64::total_cmp);
        let at = |q: f64| xs[((xs.len() - 1) as f64 * q).round() as usize];
        Spread {
            n: xs.len(),
            p1: at(0.01),
            p50: at(0.5),
            p99: at(0.99),
            max: xs[xs.len() - 1],
        }
    }
}

/// How late the dispatchers made the switches whose boundary lies in
/// `window` (pool time), ns.
pub fn switch_lateness(switches: &[crate::runtime::Switch], window: (Nanos, Nanos)) -> Spread {
    Spread::of(
        switches
            .iter()
            .filter(|s| s.at >= window.0 && s.at < window.1)
            .map(|s| s.late as f64)
            .collect(),
    )
}

/// For every slot of every domain: last minus first vCPU start.
pub fn co_start_skew(traces: &[(VcpuRef, Vec<SlotRun>)], window: (Nanos, Nanos)) -> Spread {
    Spread::of(co_start_skews(traces, window))
}

/// The co-start skew of every slot of every domain in `window`, ns.
pub fn co_start_skews(traces: &[(VcpuRef, Vec<SlotRun>)], window: (Nanos, Nanos)) -> Vec<f64> {
    let mut starts: BTreeMap<(DomainId, Nanos), Vec<Nanos>> = BTreeMap::new();
    for (v, runs) in traces {
        // Only the first run of each slot: later ones are resumptions after
        // a block, not slot starts.
        let mut seen = std::collections::BTreeSet::new();
        for r in runs
            .iter()
            .filter(|r| r.slot >= window.0 && r.slot < window.1)
        {
            if seen.insert(r.slot) {
                starts.entry((v.domain, r.slot)).or_default().push(r.start);
            }
        }
    }
    let vcpus_of = |d: DomainId| traces.iter().filter(|(v, _)| v.domain == d).count();
    starts
        .iter()
        .filter(|((d, _), s)| s.len() == vcpus_of(*d) && s.len() > 1)
        .map(|(_, s)| {
            (s.iter().max().copied().unwrap_or(0) - s.iter().min().copied().unwrap_or(0)) as f64
        })
        .collect()
}

/// Time the vCPUs ran within `window` ÷ (CPUs × window length).
pub fn efficiency(traces: &[(VcpuRef, Vec<SlotRun>)], window: (Nanos, Nanos), cpus: usize) -> f64 {
    let ran: Nanos = traces
        .iter()
        .flat_map(|(_, runs)| runs.iter())
        .map(|r| r.end.min(window.1).saturating_sub(r.start.max(window.0)))
        .sum();
    ran as f64 / ((window.1 - window.0) as f64 * cpus as f64)
}

/// Per TT domain and period fully inside the window: time its gang ran
/// (the mean over its vCPUs) ÷ `active`.
pub fn tt_accuracy(
    traces: &[(VcpuRef, Vec<SlotRun>)],
    window: (Nanos, Nanos),
    period: Nanos,
    active: Nanos,
    domains: u32,
) -> Spread {
    let mut samples = Vec::new();
    for d in 1..=domains {
        let mine: Vec<&Vec<SlotRun>> = traces
            .iter()
            .filter(|(v, _)| v.domain == DomainId(d))
            .map(|(_, r)| r)
            .collect();
        let mut p = window.0.div_ceil(period) * period;
        while p + period <= window.1 {
            let got: Nanos = mine
                .iter()
                .map(|runs| {
                    runs.iter()
                        .map(|r| r.end.min(p + period).saturating_sub(r.start.max(p)))
                        .sum::<Nanos>()
                })
                .sum::<Nanos>()
                / mine.len().max(1) as Nanos;
            samples.push(got as f64 / active as f64);
            p += period;
        }
    }
    Spread::of(samples)
}
