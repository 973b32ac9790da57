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
    /// Whether the phase ran on CPUs taken from the host's tasks (a cpuset
    /// shield: exclusive isolation), not shared with them. Phases compare
    /// (`vs linux`, `% ideal`) only when they agree on it.
    pub shielded: bool,
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
            shielded: false,
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
    let median_of = |kind: &str, n: u32| {
        rows.iter()
            .find(|(p, _, _, _)| p.kind == kind && p.domains == n)
            .map(|(p, _, _, _)| *p)
    };
    let rate_of = |kind: &str, n: u32| median_of(kind, n).map_or(0.0, Phase::mean_rate);
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
    let mut not_comparable = false;
    for (p, lo, hi, runs) in &rows {
        // Whole programs against whole programs.
        let (linux, alone) = if p.kind.contains("program") {
            (
                median_of("program-linux", p.domains),
                median_of("program-alone", 1),
            )
        } else {
            (median_of("linux", p.domains), median_of("alone", 1))
        };
        let vs_linux = if p.kind.starts_with("gang") {
            versus(p, linux, 1)
        } else {
            Versus::NotApplicable
        };
        let ideal = versus(p, alone, p.domains);
        not_comparable |= vs_linux == Versus::NotComparable || ideal == Versus::NotComparable;
        let ratio = vs_linux.ratio().map_or("-".into(), |r| format!("{r:.2}x"));
        let ideal = ideal
            .ratio()
            .map_or("-".into(), |r| format!("{:.1}%", r * 100.0));
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
            "{:<13} {:>2} {:>12.0} {:>17} {:>8} {:>7} {:>20} {:>16} {:>20} {:>12}",
            p.kind,
            p.domains,
            p.mean_rate(),
            format!("({lo:.0}..{hi:.0})"),
            ratio,
            ideal,
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
    if not_comparable {
        let _ = writeln!(
            out,
            "note: vs linux or % ideal not shown (-) where the phase and its baseline did not \
             both run on CPUs taken from the host's tasks: the host's load made them differ"
        );
    }
    if report.cpus.len() == 1 {
        let _ = writeln!(
            out,
            "note: 1 CPU: domains of one vCPU, whose barrier never waits: rates measure the CPU \
             time each domain got (no co-start skew)"
        );
    }
    out.push_str(&render_noise(&report.cpus, &report.noise));
    out
}

/// A phase's rate against a baseline's, as the table compares them.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Versus {
    /// `rate ÷ (baseline ÷ per)`.
    Ratio(f64),
    /// No baseline phase, or it did nothing.
    NotApplicable,
    /// One ran on CPUs taken from the host's tasks, the other on CPUs shared
    /// with them: the ratio would measure the host's load, not the
    /// scheduler (with `--exclusive`, before the baselines were shielded
    /// too, `% ideal` read 200-250% on a busy host).
    NotComparable,
}

impl Versus {
    fn ratio(self) -> Option<f64> {
        match self {
            Versus::Ratio(r) => Some(r),
            Versus::NotApplicable | Versus::NotComparable => None,
        }
    }
}

/// `phase`'s mean rate ÷ (`baseline`'s ÷ `per`): against `linux N`,
/// `per` is 1; against `alone` (the ideal for one domain), `per` is N.
fn versus(phase: &Phase, baseline: Option<&Phase>, per: u32) -> Versus {
    match baseline {
        Some(b) if b.mean_rate() > 0.0 => {
            if b.shielded == phase.shielded {
                Versus::Ratio(phase.mean_rate() / (b.mean_rate() / f64::from(per.max(1))))
            } else {
                Versus::NotComparable
            }
        }
        _ => Versus::NotApplicable,
    }
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

    /// The `gang bench` table's columns of one row, split on whitespace.
    fn row<'a>(table: &'a str, kind: &str) -> Vec<&'a str> {
        table
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|cols| {
                cols.first() == Some(&kind) && cols.get(1).is_some_and(|n| n.parse::<u32>().is_ok())
            })
            .unwrap_or_else(|| panic!("no {kind} row in\n{table}"))
    }

    fn report(cpus: Vec<CpuId>, baselines_shielded: bool) -> BenchReport {
        let phase = |kind: &str, n: u32, rate: f64, shielded: bool| Phase {
            shielded,
            ..Phase::rates(kind, n, vec![rate; n as usize])
        };
        BenchReport {
            isolation: Isolation::Exclusive,
            cpus,
            duration_ns: 1_000_000_000,
            work_ns: 1_000,
            iterations_per_us: 100,
            phases: vec![
                phase("alone", 1, 1000.0, baselines_shielded),
                phase("linux", 2, 400.0, baselines_shielded),
                phase("gang-be", 2, 480.0, true),
            ],
            noise: Vec::new(),
        }
    }

    #[test]
    fn ratios_between_differently_isolated_phases_are_not_printed() {
        // Exclusive gang phases against baselines that shared their CPUs
        // with the host's tasks: no ratio, and a note says why.
        let table = render(&report(vec![1], false));
        let gang = row(&table, "gang-be");
        assert_eq!(&gang[..4], ["gang-be", "2", "480", "(480..480)"]);
        assert_eq!((gang[4], gang[5]), ("-", "-"), "{table}");
        assert!(
            table.contains("note: vs linux or % ideal not shown"),
            "{table}"
        );
        // Baselines are still compared with themselves.
        assert_eq!(row(&table, "alone")[5], "100.0%", "{table}");
        assert_eq!(row(&table, "linux")[5], "80.0%", "{table}");
        // One CPU: domains of one vCPU, said once.
        assert_eq!(table.matches("note: 1 CPU").count(), 1, "{table}");

        // Every phase on taken CPUs: the ratios, and no notes.
        let table = render(&report(vec![0, 1], true));
        let gang = row(&table, "gang-be");
        assert_eq!((gang[4], gang[5]), ("1.20x", "96.0%"), "{table}");
        assert!(!table.contains("note:"), "{table}");
    }

    #[test]
    fn a_missing_baseline_gives_no_ratio() {
        let report = BenchReport {
            phases: vec![Phase::rates("gang-tt", 3, vec![10.0; 3])],
            ..report(vec![0, 1], true)
        };
        let table = render(&report);
        let gang = row(&table, "gang-tt");
        assert_eq!((gang[4], gang[5]), ("-", "-"), "{table}");
        assert!(!table.contains("note:"), "{table}");
    }
}
