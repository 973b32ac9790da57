//! # gang-sim: the gang scheduler in virtual time
//!
//! Drives the real `gang_core::Scheduler` with synthetic workloads in a
//! discrete-event simulation, and runs the same workloads under a model of the
//! uncoordinated Linux scheduler for comparison. For research ("what does
//! gang scheduling buy a spin-barrier program?"), for what-if questions ("will
//! this table work on 64 CPUs?") and for tests of the core.
//!
//! **Modules.**
//! - [`scenario`], `generate`: TOML scenario files and `[[generate]]`
//!   tables; every error names the file, line, domain and field.
//! - `world`: the event engine (virtual nanoseconds, binary heap with
//!   generation-cancelled events, analytic fast-forward) and the workloads'
//!   semantics; generic over a scheduler model.
//! - `gang`, `host`: the two scheduler models.
//! - [`metrics`], [`report`], [`timeline`]: latency histograms, the JSON
//!   report and text tables, and the timelines recorded in a window, written
//!   as SVG or Chrome trace files by `gang_timeline` (the writer the live
//!   runtime's `gang trace` uses too).
//! - [`cluster`]: many hosts, each a `Scheduler` on its own clock, running a
//!   cluster gang: cross-host co-start skew and barrier rate of a
//!   bulk-synchronous job against clock error, and without a shared clock.
//!
//! **Determinism.** A run is a pure function of the scenario (seed
//! included): randomness comes from one ChaCha8 stream per vCPU, so the k-th
//! jittered job of a vCPU is the same under every scheduler; ties in the event
//! queue break by insertion order; outputs use vectors in scenario order.
//! Only the wall-clock figures under `timing` vary.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let scenario = gang_sim::Scenario::load("examples/spin-overcommit-2.toml".as_ref())?;
//! let outcome = gang_sim::simulate(&scenario, None, &mut |_| {})?;
//! print!("{}", outcome.report.to_text());
//! # Ok(()) }
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod cluster;
mod gang;
mod generate;
mod host;
pub mod metrics;
pub mod report;
pub mod scenario;
pub mod timeline;
mod world;

use gang_core::{CpuId, Nanos};

pub use report::Report;
pub use scenario::{DomainDef, Scenario, ScenarioError, SchedKind, Workload};
pub use timeline::Timeline;
pub use world::{Progress, SimError};

/// A finished simulation: the report, and the timeline when one was asked for.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The measurements.
    pub report: Report,
    /// Intervals inside the recording window (empty runs when none).
    pub timeline: Timeline,
}

/// Runs every scheduler of `s.schedulers` over `s.duration`. `window`: record
/// running intervals in `[a, b)` for a timeline. `progress` is called about
/// twice a second of wall time during long runs.
pub fn simulate(
    s: &Scenario,
    window: Option<(Nanos, Nanos)>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Outcome, SimError> {
    let topo = world::Topo::new(s);
    let mut runs = Vec::new();
    let mut timeline = Timeline {
        runs: Vec::new(),
        window: window.unwrap_or((0, 0)),
    };
    let mut maps: Option<Vec<Vec<CpuId>>> = None;
    for &kind in &s.schedulers {
        let w = world::World::new(s, &topo, s.duration, window);
        let (res, run_maps, gang_stats) = match kind {
            SchedKind::Gang => {
                let mut model = gang::GangModel::new(s, &topo)?;
                let res = w.run(&mut model, kind, progress)?;
                let sched = model.scheduler();
                let mut run_maps = Vec::with_capacity(s.domains.len());
                let mut stats = Vec::with_capacity(s.domains.len());
                for d in 0..s.domains.len() {
                    let id = gang::domain_id(d);
                    run_maps.push(sched.cpu_map(id).map(<[CpuId]>::to_vec).unwrap_or_default());
                    stats.push(sched.stats(id).map(|st| report::GangStats {
                        held_ns: st.held_ns,
                        cpu_ns: st.cpu_ns,
                        filler_ns: st.filler_ns,
                    }));
                }
                maps = Some(run_maps.clone());
                (res, run_maps, stats)
            }
            SchedKind::Host => {
                let m = match &maps {
                    Some(m) => m.clone(),
                    None => gang::core_maps(s).unwrap_or_else(|_| gang::fallback_maps(s)),
                };
                let policies: Vec<_> = s.domains.iter().map(|d| d.policy).collect();
                let mut model = host::HostModel::new(&topo, &m, &policies, s.seed);
                let res = w.run(&mut model, kind, progress)?;
                (res, m, vec![None; s.domains.len()])
            }
        };
        let wall = res.wall.as_secs_f64();
        let secs = s.duration as f64 / 1e9;
        let domains = s
            .domains
            .iter()
            .enumerate()
            .map(|(d, def)| {
                let r = &res.doms[d];
                let periodic = matches!(def.workload, Workload::Periodic { .. });
                let wakes = matches!(
                    def.workload,
                    Workload::SleepWake { .. } | Workload::BlockingBarrier { .. }
                );
                report::DomainReport {
                    name: def.name.clone(),
                    id: gang::domain_id(d).0,
                    vcpus: def.vcpus,
                    policy: def.policy.to_string(),
                    workload: def.workload.to_string(),
                    cpu_map: run_maps[d].clone(),
                    cpu_ns: r.cpu_ns,
                    progress: r.progress,
                    progress_unit: def.workload.progress_unit(),
                    progress_per_s: r.progress as f64 / secs,
                    cosched_fraction: if r.any_ns == 0 {
                        0.0
                    } else {
                        r.all_ns as f64 / r.any_ns as f64
                    },
                    any_running_ns: r.any_ns,
                    all_running_ns: r.all_ns,
                    cosched: r.cosched,
                    jobs_released: periodic.then_some(r.released),
                    deadline_misses: periodic.then_some(r.misses),
                    wake_latency: wakes.then(|| r.wake_lat.summary()),
                    release_latency: periodic.then(|| r.release_lat.summary()),
                    gang: gang_stats[d],
                }
            })
            .collect();
        runs.push(report::RunReport {
            scheduler: kind,
            sim_ns: s.duration,
            events: res.events,
            stale_events: res.stale,
            decisions: res.counters.decisions,
            boundaries: res.counters.boundaries,
            context_switches: res.counters.context_switches,
            timing: report::Timing {
                wall_s: wall,
                events_per_s: if wall > 0.0 {
                    res.events as f64 / wall
                } else {
                    0.0
                },
                speedup: if wall > 0.0 { secs / wall } else { 0.0 },
            },
            domains,
        });
        if window.is_some() {
            timeline.runs.push((
                kind,
                res.intervals.into_iter().map(Into::into).collect(),
                res.marks,
            ));
        }
    }
    let comparison = match (
        runs.iter().find(|r| r.scheduler == SchedKind::Gang),
        runs.iter().find(|r| r.scheduler == SchedKind::Host),
    ) {
        (Some(g), Some(h)) => g
            .domains
            .iter()
            .zip(&h.domains)
            .map(|(g, h)| report::Comparison {
                domain: g.name.clone(),
                unit: g.progress_unit,
                gang: g.progress,
                host: h.progress,
                ratio: (h.progress > 0).then(|| g.progress as f64 / h.progress as f64),
            })
            .collect(),
        _ => Vec::new(),
    };
    let report = Report {
        scenario: report::ScenarioInfo {
            name: s.name.clone(),
            file: s.file.clone(),
            duration_ns: s.duration,
            seed: s.seed,
            cpus: s.pool.cpus.to_string(),
            grain_ns: s.pool.grain,
            be_slice_ns: s.pool.be_slice,
            be_reserve_pct: s.pool.be_reserve_pct,
            domains: s.domains.len(),
            vcpus: s.vcpus(),
        },
        runs,
        comparison,
    };
    Ok(Outcome { report, timeline })
}

/// An outcome's timeline in the writer's model (`gang_timeline`).
pub fn timeline_model(s: &Scenario, outcome: &Outcome) -> gang_timeline::Timeline {
    let cpus: Vec<CpuId> = s.pool.cpus.iter().collect();
    let names: Vec<String> = s.domains.iter().map(|d| d.name.clone()).collect();
    let extra = vec![
        ("scenario".to_string(), s.file.clone()),
        ("seed".to_string(), s.seed.to_string()),
        ("duration_ns".to_string(), s.duration.to_string()),
    ];
    timeline::to_model(
        &outcome.timeline,
        &timeline::Describe {
            title: &s.name,
            cpus: &cpus,
            names: &names,
            grain: s.pool.grain,
            extra: &extra,
        },
    )
}

/// Renders an outcome's timeline as SVG.
pub fn render_svg(s: &Scenario, outcome: &Outcome) -> String {
    gang_timeline::svg::render(&timeline_model(s, outcome))
}

/// Writes an outcome's timeline in Perfetto's protobuf format.
pub fn render_perfetto(
    s: &Scenario,
    outcome: &Outcome,
) -> Result<Vec<u8>, gang_timeline::TimelineError> {
    gang_timeline::perfetto::write(&timeline_model(s, outcome))
}

/// Writes an outcome's timeline as a Chrome trace (Trace Event JSON, for
/// Perfetto and chrome://tracing).
pub fn render_chrome(
    s: &Scenario,
    outcome: &Outcome,
) -> Result<String, gang_timeline::TimelineError> {
    gang_timeline::chrome::write(&timeline_model(s, outcome))
}
