//! The `gang bench-vm --qemu` table: per workload and guest count, the
//! median run of each phase ([`crate::report::medians`]), gang ÷ linux and
//! gang's share of the ideal; the other processes' load during the windows;
//! the report as JSON.

use std::fmt::Write as _;

use gang_core::{CpuId, Nanos};
use gang_host::slot_stats::Spread;

use super::{PhaseDetail, WorkloadRuns};
use crate::noise::{render_noise, Noise};
use crate::report::{medians, Phase};

/// A line of the table: the medians for one workload and guest count.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The workload.
    pub workload: String,
    /// Its unit.
    pub unit: String,
    /// Guests.
    pub guests: u32,
    /// One guest alone (the ideal sum for any N).
    pub alone: f64,
    /// N guests under Linux: the sum over the guests.
    pub linux: f64,
    /// The slowest and fastest guest of that run.
    pub linux_guests: (f64, f64),
    /// N guests under gang: the sum over the guests.
    pub gang: f64,
    /// The slowest and fastest guest of that run.
    pub gang_guests: (f64, f64),
    /// gang ÷ linux.
    pub gang_vs_linux: Option<f64>,
    /// gang ÷ alone, in percent.
    pub ideal_pct: Option<f64>,
    /// Gate violations over every gang run (must be 0).
    pub gate_violations: usize,
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct Report {
    /// `kvm` or `tcg`.
    pub accelerator: String,
    /// Why that accelerator.
    pub accel_reason: String,
    /// The guest kernel's release.
    pub kernel: String,
    /// The pool CPUs.
    pub cpus: Vec<CpuId>,
    /// vCPUs per guest.
    pub guest_vcpus: u32,
    /// Memory per guest, MB.
    pub guest_memory_mb: u64,
    /// The measured window of each phase, ns.
    pub duration_ns: Nanos,
    /// Reports skipped per guest after each phase's change.
    pub skipped_reports: usize,
    /// Rounds.
    pub repeat: u32,
    /// Per workload, every run.
    pub workloads: Vec<WorkloadRuns>,
    /// The table.
    pub rows: Vec<Row>,
    /// The host's noise, once per round and workload.
    pub noise: Vec<Noise>,
}

impl Report {
    /// The report as JSON: every field, every phase of every workload.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let workloads: Vec<_> = self
            .workloads
            .iter()
            .map(|w| {
                json!({
                    "workload": w.workload,
                    "unit": w.unit,
                    "boot_s": w.boot_s,
                    "phases": w.phases,
                    "details": w.details.iter().map(|d| json!({
                        "reports": d.reports,
                        "others_cpu": d.others_cpu,
                        "steal": d.steal,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let rows: Vec<_> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "workload": r.workload,
                    "unit": r.unit,
                    "guests": r.guests,
                    "alone": r.alone,
                    "linux": r.linux,
                    "linux_guest_min": r.linux_guests.0,
                    "linux_guest_max": r.linux_guests.1,
                    "gang": r.gang,
                    "gang_guest_min": r.gang_guests.0,
                    "gang_guest_max": r.gang_guests.1,
                    "gang_vs_linux": r.gang_vs_linux,
                    "ideal_pct": r.ideal_pct,
                    "gate_violations": r.gate_violations,
                })
            })
            .collect();
        json!({
            "accelerator": self.accelerator,
            "accel_reason": self.accel_reason,
            "kernel": self.kernel,
            "cpus": self.cpus,
            "guest_vcpus": self.guest_vcpus,
            "guest_memory_mb": self.guest_memory_mb,
            "duration_ns": self.duration_ns,
            "skipped_reports": self.skipped_reports,
            "repeat": self.repeat,
            "workloads": workloads,
            "rows": rows,
            "noise": self.noise,
        })
    }
}

/// The sum over a phase's guests, and its slowest and fastest guest.
fn totals(p: &Phase) -> (f64, (f64, f64)) {
    let r = &p.rounds_per_s;
    let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = r.iter().copied().fold(0.0, f64::max);
    (r.iter().sum(), (if r.is_empty() { 0.0 } else { lo }, hi))
}

/// The table's rows for one workload: per guest count, the median run of
/// each phase.
pub fn rows(runs: &WorkloadRuns, guests: &[u32]) -> Vec<Row> {
    let medians = medians(&runs.phases);
    let median = |kind: &str, n: u32| {
        medians
            .iter()
            .find(|(p, ..)| p.kind == kind && p.domains == n)
            .map_or((0.0, (0.0, 0.0)), |(p, ..)| totals(p))
    };
    let alone = median("alone", 1).0;
    guests
        .iter()
        .map(|&n| {
            let (linux, linux_guests) = median("linux", n);
            let (gang, gang_guests) = median("gang", n);
            Row {
                workload: runs.workload.clone(),
                unit: runs.unit.clone(),
                guests: n,
                alone,
                linux,
                linux_guests,
                gang,
                gang_guests,
                gang_vs_linux: (linux > 0.0).then(|| gang / linux),
                ideal_pct: (alone > 0.0).then(|| gang / alone * 100.0),
                gate_violations: runs
                    .phases
                    .iter()
                    .filter(|p| p.kind == "gang" && p.domains == n)
                    .map(|p| p.gate_violations)
                    .sum(),
            }
        })
        .collect()
}

/// The table, the accelerator and the host's noise.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "gang bench-vm --qemu: Linux guests (kernel {}) of {} vCPUs, {} MB, on CPUs {:?} shared with the host",
        report.kernel, report.guest_vcpus, report.guest_memory_mb, report.cpus
    );
    let _ = writeln!(
        out,
        "accelerator {}: {}",
        report.accelerator, report.accel_reason
    );
    let _ = writeln!(
        out,
        "{:.1} s per phase after {} skipped report(s); a guest's rate is the median of its per-second reports, \
         a phase's the sum over its guests; medians of {} interleaved runs",
        report.duration_ns as f64 / 1e9,
        report.skipped_reports,
        report.repeat
    );
    let _ = writeln!(
        out,
        "{:<8} {:<8} {:>2} {:>9} {:>9} {:>19} {:>9} {:>19} {:>10} {:>7}",
        "workload",
        "unit",
        "N",
        "alone",
        "linux",
        "(guest min..max)",
        "gang",
        "(guest min..max)",
        "gang/linux",
        "% ideal"
    );
    for r in &report.rows {
        let span = |(lo, hi): (f64, f64)| format!("({lo:.0}..{hi:.0})");
        let _ = writeln!(
            out,
            "{:<8} {:<8} {:>2} {:>9.0} {:>9.0} {:>19} {:>9.0} {:>19} {:>10} {:>7}",
            r.workload,
            r.unit,
            r.guests,
            r.alone,
            r.linux,
            span(r.linux_guests),
            r.gang,
            span(r.gang_guests),
            r.gang_vs_linux.map_or("-".into(), |x| format!("{x:.2}x")),
            r.ideal_pct.map_or("-".into(), |x| format!("{x:.1}%")),
        );
        if r.gate_violations > 0 {
            let _ = writeln!(
                out,
                "  warning: {} gate violations over the gang runs",
                r.gate_violations
            );
        }
    }
    for w in &report.workloads {
        out.push_str(&load_summary(w));
    }
    out.push_str(&render_noise(&report.cpus, &report.noise));
    out
}

/// A line saying how much of the pool CPUs other processes and the
/// hypervisor took during each phase (median over its runs).
pub fn load_summary(runs: &WorkloadRuns) -> String {
    let keys: Vec<(&str, u32)> = medians(&runs.phases)
        .iter()
        .map(|(p, ..)| (p.kind.as_str(), p.domains))
        .collect();
    let median = |kind: &str, n: u32, f: fn(&PhaseDetail) -> Option<f64>| {
        let xs: Vec<f64> = runs
            .phases
            .iter()
            .zip(&runs.details)
            .filter(|(p, _)| p.kind == kind && p.domains == n)
            .filter_map(|(_, d)| f(d))
            .collect();
        (!xs.is_empty()).then(|| Spread::of(xs).p50 * 100.0)
    };
    let parts: Vec<String> = keys
        .iter()
        .filter_map(|&(kind, n)| {
            let others = median(kind, n, |d| d.others_cpu)?;
            let steal = median(kind, n, |d| d.steal).unwrap_or(0.0);
            let name = if kind == "alone" {
                kind.to_string()
            } else {
                format!("{kind} {n}")
            };
            Some(format!("{name} {others:.0}% (steal {steal:.0}%)"))
        })
        .collect();
    if parts.is_empty() {
        return String::new();
    }
    format!(
        "{}: other processes' share of CPUs 0-1 during the windows, median: {}\n",
        runs.workload,
        parts.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::CPUS;
    use gang_core::MS;

    #[test]
    fn the_load_line_gives_medians_per_phase() {
        let mut w = runs(vec![
            Phase::rates("alone", 1, vec![1.0]),
            Phase::rates("gang", 2, vec![1.0, 1.0]),
            Phase::rates("alone", 1, vec![1.0]),
            Phase::rates("gang", 2, vec![1.0, 1.0]),
            Phase::rates("alone", 1, vec![1.0]),
        ]);
        let d = |o: f64| PhaseDetail {
            others_cpu: Some(o),
            steal: Some(0.01),
            ..PhaseDetail::default()
        };
        w.details = vec![d(0.1), d(0.02), d(0.5), d(0.04), d(0.3)];
        assert_eq!(
            load_summary(&w),
            "barrier: other processes' share of CPUs 0-1 during the windows, median: \
             alone 30% (steal 1%), gang 2 4% (steal 1%)\n"
        );
        w.details = vec![PhaseDetail::default(); 5];
        assert_eq!(load_summary(&w), "");
    }

    fn runs(phases: Vec<Phase>) -> WorkloadRuns {
        WorkloadRuns {
            workload: "barrier".into(),
            unit: "rounds/s".into(),
            boot_s: 3.0,
            phases,
            details: Vec::new(),
        }
    }

    #[test]
    fn rows_take_the_median_run_of_each_phase_and_compare_sums() {
        let mut phases = Vec::new();
        for (alone, linux, gang) in [
            (200.0, [10.0, 30.0], [95.0, 90.0]),
            (220.0, [1.0, 2.0], [91.0, 93.0]),
            (260.0, [25.0, 27.0], [80.0, 85.0]),
        ] {
            phases.push(Phase::rates("alone", 1, vec![alone]));
            phases.push(Phase::rates("linux", 2, linux.to_vec()));
            phases.push(Phase {
                gate_violations: 1,
                ..Phase::rates("gang", 2, gang.to_vec())
            });
        }
        let rows = rows(&runs(phases), &[2]);
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!((r.guests, r.alone), (2, 220.0));
        // Linux sums 40, 3, 52: the median run is the first.
        assert_eq!((r.linux, r.linux_guests), (40.0, (10.0, 30.0)));
        // gang sums 185, 184, 165: the median run is the second.
        assert_eq!((r.gang, r.gang_guests), (184.0, (91.0, 93.0)));
        assert_eq!(r.gang_vs_linux, Some(184.0 / 40.0));
        assert_eq!(r.ideal_pct, Some(184.0 / 220.0 * 100.0));
        assert_eq!(r.gate_violations, 3);
    }

    #[test]
    fn missing_phases_give_no_ratio_and_the_table_says_so() {
        let phases = vec![
            Phase::rates("alone", 1, vec![0.0]),
            Phase::rates("gang", 3, vec![1.0, 2.0, 3.0]),
        ];
        let rows = rows(&runs(phases), &[3]);
        let r = &rows[0];
        assert_eq!((r.linux, r.gang, r.gang_guests), (0.0, 6.0, (1.0, 3.0)));
        assert_eq!((r.gang_vs_linux, r.ideal_pct), (None, None));
        let report = Report {
            accelerator: "tcg".into(),
            accel_reason: "because".into(),
            kernel: "6.1".into(),
            cpus: CPUS.to_vec(),
            guest_vcpus: 2,
            guest_memory_mb: 256,
            duration_ns: 8_000 * MS,
            skipped_reports: 1,
            repeat: 1,
            workloads: Vec::new(),
            rows,
            noise: Vec::new(),
        };
        let table = render(&report);
        assert!(table.contains("accelerator tcg: because"), "{table}");
        let line = table
            .lines()
            .find(|l| l.starts_with("barrier"))
            .expect("a row");
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cols,
            ["barrier", "rounds/s", "3", "0", "0", "(0..0)", "6", "(1..3)", "-", "-"]
        );
    }
}
