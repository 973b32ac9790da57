//! What `gang bench` measured ([`BenchReport`], one [`Phase`] per run of a
//! phase) and the table it prints ([`render`]): per phase and domain count,
//! the run with the median rate, and the medians of every run's
//! percentiles.

use gang_core::{CpuId, Nanos};
use gang_host::runtime::Isolation;
use gang_host::slot_stats::Spread;

use crate::noise::{render_noise, Noise};

/// The result of one phase.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Phase {
    /// `alone`, `linux`, `gang-be` or `gang-tt`.
    pub kind: String,
    /// Number of domains.
    pub domains: u32,
    /// Barrier rounds per second, per domain.
    pub rounds_per_s: Vec<f64>,
    /// Co-start skew of gangs, ns (gang phases).
    pub skew_ns: Option<Spread>,
    /// Time vCPUs held their slots (gate open to gate closed, from the
    /// gate traces) ÷ pool CPU time (gang phases). Counts the time a
    /// dispatcher preempts a running vCPU (its spin before a switch, its
    /// wake-ups) as run time: see `cpu_efficiency`.
    pub efficiency: Option<f64>,
    /// The vCPU threads' CPU time from the kernel (`schedstat`) over the
    /// window ÷ pool CPU time: what the domains really got (gang phases).
    pub cpu_efficiency: Option<f64>,
    /// `cpu_efficiency` ÷ the pool CPU time left to gangs (without the host
    /// slot): the dispatch overhead alone.
    pub gang_efficiency: Option<f64>,
    /// TT: received ÷ active per period.
    pub tt_accuracy: Option<Spread>,
    /// Switches made and their lateness, ns (gang phases).
    pub switch_late_ns: Option<Spread>,
    /// From a slot's boundary to each vCPU passing its gate, ns.
    pub start_delay_ns: Option<Spread>,
    /// vCPUs that ignored their gate (must be zero).
    pub gate_violations: usize,
}

impl Phase {
    /// A phase that measured only rates (the others are added by the
    /// caller with struct update syntax).
    pub fn rates(kind: &str, domains: u32, rounds_per_s: Vec<f64>) -> Phase {
        Phase {
            kind: kind.to_string(),
            domains,
            rounds_per_s,
            skew_ns: None,
            efficiency: None,
            cpu_efficiency: None,
            gang_efficiency: None,
            tt_accuracy: None,
            switch_late_ns: None,
            start_delay_ns: None,
            gate_violations: 0,
        }
    }

    /// Mean rounds per second over the domains.
    pub fn mean_rate(&self) -> f64 {
        self.rounds_per_s.iter().sum::<f64>() / self.rounds_per_s.len().max(1) as f64
    }
}

/// The whole run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// Isolation mode used.
    pub isolation: Isolation,
    /// The CPUs.
    pub cpus: Vec<CpuId>,
    /// Phase length, ns.
    pub duration_ns: Nanos,
    /// Spin-barrier work per round, ns.
    pub work_ns: Nanos,
    /// Calibrated loop iterations per µs.
    pub iterations_per_us: u64,
    /// The phases in the order run.
    pub phases: Vec<Phase>,
    /// The host's own interruptions of the pool CPUs, measured once per
    /// round (see [`Noise`]).
    pub noise: Vec<Noise>,
}

/// The run of each (kind, N) whose mean rate is the median of its repeats,
/// with the lowest and highest mean rates seen, in the order first run.
pub fn medians(phases: &[Phase]) -> Vec<(&Phase, f64, f64, Vec<&Phase>)> {
    let mut keys: Vec<(&str, u32)> = Vec::new();
    for p in phases {
        if !keys.contains(&(p.kind.as_str(), p.domains)) {
            keys.push((p.kind.as_str(), p.domains));
        }
    }
    keys.into_iter()
        .filter_map(|(kind, n)| {
            let mut runs: Vec<&Phase> = phases
                .iter()
                .filter(|p| p.kind == kind && p.domains == n)
                .collect();
            runs.sort_by(|a, b| a.mean_rate().total_cmp(&b.mean_rate()));
            let lo = runs.first()?.mean_rate();
            let hi = runs.last()?.mean_rate();
            Some((runs[runs.len() / 2], lo, hi, runs))
        })
        .collect()
}

/// A spread over the runs of a phase: the median of the runs' p1, p50 and
/// p99, the largest max. Robust to one disturbed run without hiding it (its
/// max stays), and not tied to the run the rate picked.
fn across_runs(runs: &[&Phase], f: impl Fn(&Phase) -> Option<Spread>) -> Option<Spread> {
    let spreads: Vec<Spread> = runs
        .iter()
        .filter_map(|p| f(p))
        .filter(|s| s.n > 0)
        .collect();
    if spreads.is_empty() {
        return None;
    }
    let median = |g: fn(&Spread) -> f64| {
        let mut xs: Vec<f64> = spreads.iter().map(g).collect();
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    Some(Spread {
        n: spreads.iter().map(|s| s.n).sum(),
        p1: median(|s| s.p1),
        p50: median(|s| s.p50),
        p99: median(|s| s.p99),
        max: spreads.iter().map(|s| s.max).fold(0.0, f64::max),
    })
}

/// The table `gang bench` prints: per phase, the run with the median rate
/// (rates and efficiency) and the medians of every run's percentiles (skew,
/// TT accuracy, lateness; see `across_runs`).
pub fn render(report: &BenchReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let rows = medians(&report.phases);
    let rate_of = |kind: &str, n: u32| {
        rows.iter()
            .find(|(p, _, _, _)| p.kind == kind && p.domains == n)
            .map_or(0.0, |(p, _, _, _)| p.mean_rate())
    };
    let alone = rate_of("alone", 1);
    let repeats = report.phases.iter().filter(|p| p.kind == "alone").count();
    let _ = writeln!(
        out,
        "gang bench: spin-barrier domains of {} vCPUs on CPUs {:?}, work {} ns/round, {:.1} s per phase, median of {repeats} runs, isolation {:?}",
        report.cpus.len(),
        report.cpus,
        report.work_ns,
        report.duration_ns as f64 / 1e9,
        report.isolation
    );
    let _ = writeln!(out, "alone (ideal for 1 domain): {alone:.0} rounds/s");
    let _ = writeln!(
        out,
        "{:<13} {:>2} {:>12} {:>17} {:>8} {:>7} {:>20} {:>16} {:>20} {:>12}",
        "phase",
        "N",
        "rounds/s/dom",
        "(min..max)",
        "vs linux",
        "% ideal",
        "skew p50/p99/max us",
        "effic. pool/gang",
        "TT recv/act p1/50/99",
        "late p99 us"
    );
    let program_alone = rate_of("program-alone", 1);
    if program_alone > 0.0 {
        let _ = writeln!(
            out,
            "program-alone (ideal for 1 whole program): {program_alone:.0} rounds/s"
        );
    }
    for (p, lo, hi, runs) in &rows {
        // Whole programs against whole programs.
        let (linux, alone) = if p.kind.contains("program") {
            (rate_of("program-linux", p.domains), program_alone)
        } else {
            (rate_of("linux", p.domains), alone)
        };
        let ideal = alone / f64::from(p.domains);
        let ratio = if p.kind.starts_with("gang") && linux > 0.0 {
            format!("{:.2}x", p.mean_rate() / linux)
        } else {
            "-".into()
        };
        let skew = across_runs(runs, |r| r.skew_ns).map_or("-".into(), |s| {
            format!("{:.1}/{:.1}/{:.1}", s.p50 / 1e3, s.p99 / 1e3, s.max / 1e3)
        });
        let eff = match (p.cpu_efficiency, p.gang_efficiency) {
            (Some(e), Some(g)) => format!("{:.1}/{:.1}%", e * 100.0, g * 100.0),
            _ => "-".into(),
        };
        let tt = across_runs(runs, |r| r.tt_accuracy).map_or("-".into(), |s| {
            format!("{:.3}/{:.3}/{:.3}", s.p1, s.p50, s.p99)
        });
        let late = across_runs(runs, |r| r.switch_late_ns)
            .map_or("-".into(), |s| format!("{:.1}", s.p99 / 1e3));
        let _ = writeln!(
            out,
            "{:<13} {:>2} {:>12.0} {:>17} {:>8} {:>6.1}% {:>20} {:>16} {:>20} {:>12}",
            p.kind,
            p.domains,
            p.mean_rate(),
            format!("({lo:.0}..{hi:.0})"),
            ratio,
            if ideal > 0.0 {
                p.mean_rate() / ideal * 100.0
            } else {
                0.0
            },
            skew,
            eff,
            tt,
            late
        );
        let violations: usize = report
            .phases
            .iter()
            .filter(|q| q.kind == p.kind && q.domains == p.domains)
            .map(|q| q.gate_violations)
            .sum();
        if violations > 0 {
            let _ = writeln!(out, "  warning: {violations} gate violations over all runs");
        }
    }
    out.push_str(&render_noise(&report.cpus, &report.noise));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_across_runs_are_medians_with_the_largest_max() {
        let run = |p99: f64, max: f64| Phase {
            skew_ns: Some(Spread {
                n: 100,
                p1: 1.0,
                p50: p99 / 2.0,
                p99,
                max,
            }),
            ..Phase::rates("gang-be", 2, vec![1.0])
        };
        let runs = [run(10.0, 12.0), run(3000.0, 4000.0), run(20.0, 25.0)];
        let refs: Vec<&Phase> = runs.iter().collect();
        let s = across_runs(&refs, |p| p.skew_ns).expect("spread");
        assert_eq!((s.n, s.p50, s.p99, s.max), (300, 10.0, 20.0, 4000.0));
        assert!(across_runs(&refs, |p| p.tt_accuracy).is_none());
    }
}
