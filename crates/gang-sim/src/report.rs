//! Results: the JSON report and the human table.
//!
//! [`Report`] is plain data (`serde::Serialize`), in scenario order, with no
//! hash-ordered collections, so the same scenario and seed give byte-identical
//! JSON except for the wall-clock figures, which are all under `timing`
//! ([`Report::without_timing`] clears them for comparisons).

use std::fmt::Write as _;

use gang_core::time::Duration;
use gang_core::{CpuId, Nanos, MS, SEC, US};
use serde::Serialize;

use crate::metrics::LatencySummary;
use crate::scenario::SchedKind;

/// Everything one `gang sim` invocation measured.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// What was simulated.
    pub scenario: ScenarioInfo,
    /// One run per scheduler, in the order run.
    pub runs: Vec<RunReport>,
    /// Per domain, gang progress ÷ host progress (when both ran).
    pub comparison: Vec<Comparison>,
}

/// The scenario's shape.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ScenarioInfo {
    /// Title.
    pub name: String,
    /// File.
    pub file: String,
    /// Simulated time.
    pub duration_ns: Nanos,
    /// Seed.
    pub seed: u64,
    /// Pool CPUs (xl list).
    pub cpus: String,
    /// Pool grain.
    pub grain_ns: Nanos,
    /// BE slice.
    pub be_slice_ns: Nanos,
    /// BE reservation.
    pub be_reserve_pct: u8,
    /// Domain count.
    pub domains: usize,
    /// vCPU count.
    pub vcpus: usize,
}

/// One scheduler's run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunReport {
    /// Which scheduler.
    pub scheduler: SchedKind,
    /// Simulated time.
    pub sim_ns: Nanos,
    /// Events handled (workload events, block/wake notices, timers).
    pub events: u64,
    /// Cancelled events skipped.
    pub stale_events: u64,
    /// Gang: calls into the core (`Scheduler::handle`: one per event fed,
    /// boundaries included).
    pub decisions: u64,
    /// Gang: boundaries delivered.
    pub boundaries: u64,
    /// Host: context switches.
    pub context_switches: u64,
    /// Wall-clock figures (not deterministic).
    pub timing: Timing,
    /// Per domain, in scenario order.
    pub domains: Vec<DomainReport>,
}

/// Wall-clock figures of a run.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Default)]
pub struct Timing {
    /// Wall time of the run, seconds.
    pub wall_s: f64,
    /// Events per wall second.
    pub events_per_s: f64,
    /// Simulated seconds per wall second.
    pub speedup: f64,
}

/// One domain in one run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DomainReport {
    /// Name.
    pub name: String,
    /// Domain id (1-based scenario order).
    pub id: u32,
    /// vCPUs.
    pub vcpus: u32,
    /// Policy (seed syntax).
    pub policy: String,
    /// Workload.
    pub workload: String,
    /// CPU map used.
    pub cpu_map: Vec<CpuId>,
    /// CPU time of all its vCPUs (spinning included).
    pub cpu_ns: Nanos,
    /// Progress in `progress_unit`.
    pub progress: u64,
    /// rounds, jobs, cycles or cpu-ns.
    pub progress_unit: &'static str,
    /// Progress per simulated second.
    pub progress_per_s: f64,
    /// Time all vCPUs ran together ÷ time any ran (0 when none ran).
    pub cosched_fraction: f64,
    /// Time at least one vCPU ran.
    pub any_running_ns: Nanos,
    /// Time every vCPU ran.
    pub all_running_ns: Nanos,
    /// The co-scheduling metrics, with the names `gang list -l`, `gang
    /// top` and `gang sched-gang -v` give a host run's (`all_running`,
    /// `co_stop`, `ready`, `running`, `blocked`, `skew_p50_ns`,
    /// `skew_p99_ns`, `skew_samples`, `late_switches`), computed by the same
    /// code (`gang_core::cosched`) over the whole run.
    pub cosched: gang_core::cosched::CoschedMetrics,
    /// Periodic: jobs released.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs_released: Option<u64>,
    /// Periodic: jobs finished after their deadline, or unfinished past it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_misses: Option<u64>,
    /// Wake-to-run latency (sleep-wake, blocking-barrier wakes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wake_latency: Option<LatencySummary>,
    /// Periodic: release-to-first-run latency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_latency: Option<LatencySummary>,
    /// Gang: the core's own accounting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gang: Option<GangStats>,
}

/// The core's statistics for a domain.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct GangStats {
    /// Dispatched (all vCPUs together).
    pub held_ns: Nanos,
    /// CPU time given.
    pub cpu_ns: Nanos,
    /// Held as a space filler.
    pub filler_ns: Nanos,
}

/// Gang vs host for one domain.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Comparison {
    /// Domain.
    pub domain: String,
    /// Unit of progress.
    pub unit: &'static str,
    /// Gang progress.
    pub gang: u64,
    /// Host progress.
    pub host: u64,
    /// gang ÷ host (`None` when host made none).
    pub ratio: Option<f64>,
}

impl Report {
    /// The report with every wall-clock figure zeroed: equal for equal
    /// scenarios and seeds.
    pub fn without_timing(&self) -> Report {
        let mut r = self.clone();
        for run in &mut r.runs {
            run.timing = Timing::default();
        }
        r
    }

    /// The run of `kind`, if it ran.
    pub fn run(&self, kind: SchedKind) -> Option<&RunReport> {
        self.runs.iter().find(|r| r.scheduler == kind)
    }

    /// The human-readable tables.
    pub fn to_text(&self) -> String {
        let s = &self.scenario;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "scenario \"{}\": pool {} ({} CPUs), {} domains, {} vCPUs, {} simulated, seed {}",
            s.name,
            s.cpus,
            gang_core::CpuSet::parse(&s.cpus, None)
                .map(|c| c.len())
                .unwrap_or(0),
            s.domains,
            s.vcpus,
            Duration(s.duration_ns),
            s.seed
        );
        for run in &self.runs {
            let _ = writeln!(o);
            let t = run.timing;
            let sched = match run.scheduler {
                SchedKind::Gang => {
                    format!(
                        "{} boundaries, {} core calls",
                        run.boundaries, run.decisions
                    )
                }
                SchedKind::Host => format!("{} context switches", run.context_switches),
            };
            let _ = writeln!(
                o,
                "== {} == {} simulated in {:.3} s wall ({:.1}x real time); {} events ({:.2} M/s); {}",
                run.scheduler,
                human(run.sim_ns),
                t.wall_s,
                t.speedup,
                run.events,
                t.events_per_s / 1e6,
                sched
            );
            let rows: Vec<[String; 14]> = run
                .domains
                .iter()
                .map(|d| {
                    let lat = d.release_latency.or(d.wake_latency);
                    [
                        d.name.clone(),
                        d.vcpus.to_string(),
                        d.policy.clone(),
                        d.workload.clone(),
                        human(d.cpu_ns),
                        progress_text(d.progress, d.progress_unit),
                        rate_text(d.progress_per_s, d.progress_unit),
                        format!("{:.1}%", d.cosched_fraction * 100.0),
                        format!("{:.1}%", d.cosched.all_running * 100.0),
                        format!("{:.1}%", d.cosched.co_stop * 100.0),
                        format!("{:.1}%", d.cosched.ready * 100.0),
                        if d.cosched.skew_samples == 0 {
                            "-".into()
                        } else {
                            human(d.cosched.skew_p99_ns)
                        },
                        lat.map_or("-".into(), |l| {
                            format!("{}/{}", human(l.p50_ns), human(l.p99_ns))
                        }),
                        d.deadline_misses.map_or("-".into(), |m| {
                            format!("{m}/{}", d.jobs_released.unwrap_or(0))
                        }),
                    ]
                })
                .collect();
            let header = [
                "domain",
                "vcpus",
                "policy",
                "workload",
                "cpu",
                "progress",
                "per s",
                "co-sched",
                "allrun",
                "costop",
                "ready",
                "skew99",
                "lat p50/p99",
                "misses",
            ]
            .map(String::from);
            table(
                &mut o,
                &header,
                &rows,
                &[
                    false, true, false, false, true, true, true, true, true, true, true, true,
                    true, true,
                ],
            );
        }
        if !self.comparison.is_empty() {
            let _ = writeln!(o);
            let _ = writeln!(o, "== gang / host progress ==");
            let rows: Vec<[String; 4]> = self
                .comparison
                .iter()
                .map(|c| {
                    [
                        c.domain.clone(),
                        progress_text(c.gang, c.unit),
                        progress_text(c.host, c.unit),
                        c.ratio.map_or("-".into(), |r| format!("{r:.2}x")),
                    ]
                })
                .collect();
            let header = ["domain", "gang", "host", "ratio"].map(String::from);
            table(&mut o, &header, &rows, &[false, true, true, true]);
        }
        o
    }
}

fn table<const N: usize>(
    o: &mut String,
    header: &[String; N],
    rows: &[[String; N]],
    right: &[bool; N],
) {
    let mut w = [0usize; N];
    for r in std::iter::once(header).chain(rows) {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    for r in std::iter::once(header).chain(rows) {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = w[i] - c.chars().count();
            if right[i] {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(c);
            } else {
                line.push_str(c);
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        let _ = writeln!(o, "{}", line.trim_end());
    }
}

/// A duration with 3-4 significant digits: `1.234s`, `15.0ms`, `850us`, `120ns`.
pub fn human(ns: Nanos) -> String {
    let f = ns as f64;
    if ns >= 3600 * SEC {
        format!("{:.2}h", f / 3600e9)
    } else if ns >= SEC {
        format!("{:.3}s", f / 1e9)
    } else if ns >= MS {
        format!("{:.2}ms", f / 1e6)
    } else if ns >= US {
        format!("{:.1}us", f / 1e3)
    } else {
        format!("{ns}ns")
    }
}

fn progress_text(p: u64, unit: &str) -> String {
    if unit == "cpu-ns" {
        format!("{} cpu", human(p))
    } else {
        format!("{p} {unit}")
    }
}

fn rate_text(r: f64, unit: &str) -> String {
    if unit == "cpu-ns" {
        return format!("{:.2} cpu", r / 1e9);
    }
    if r >= 1e6 {
        format!("{:.3}M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.2}k", r / 1e3)
    } else {
        format!("{r:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human(1_234_000_000), "1.234s");
        assert_eq!(human(15 * MS), "15.00ms");
        assert_eq!(human(850 * US), "850.0us");
        assert_eq!(human(120), "120ns");
        assert_eq!(human(7200 * SEC), "2.00h");
        assert_eq!(progress_text(1500 * MS, "cpu-ns"), "1.500s cpu");
        assert_eq!(rate_text(1_100_000.0, "rounds"), "1.100M");
    }
}
