//! What `gang bench-slurm` measured and how it is shown: each mode's runs,
//! their medians and ratios, the table, and the jobs' progress reports
//! read back (rates interpolated between reports).

use super::*;

/// One mode's run: each job's rounds/s over the window.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Run {
    pub mode: Mode,
    /// 1-based.
    pub repeat: u32,
    pub rounds_per_s: Vec<f64>,
    pub window_s: f64,
    /// Over the window, sampled every [`RUN_SAMPLE`]: the share of samples
    /// with 0, 1 and 2 of the jobs able to run (step cgroup thawed, no
    /// process stopped: what Slurm's and gang's suspending actually did).
    pub running: [f64; 3],
}

impl Run {
    pub fn sum(&self) -> f64 {
        self.rounds_per_s.iter().sum()
    }
}

/// What was measured, with the configuration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub cpus: u32,
    pub node: String,
    pub slurm_version: String,
    pub duration_ns: Nanos,
    pub repeat: u32,
    pub slice_s: u32,
    pub policy: String,
    pub work_ns: Nanos,
    /// The work loop's iterations per µs, measured once by the bench and
    /// given to every job (so that every job's round is the same work).
    pub iterations_per_us: u64,
    /// /proc/loadavg at the start and the end.
    pub load_before: String,
    pub load_after: String,
    pub runs: Vec<Run>,
}

/// The median of `xs` (the upper one of an even count), 0 if empty.
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

impl Report {
    /// The runs of `mode`.
    pub fn runs_of(&self, mode: Mode) -> impl Iterator<Item = &Run> {
        self.runs.iter().filter(move |r| r.mode == mode)
    }

    /// The median over the repeats of `mode`'s sum of rates.
    pub fn median_sum(&self, mode: Mode) -> f64 {
        median(&self.runs_of(mode).map(Run::sum).collect::<Vec<_>>())
    }

    /// The median over the repeats of job `j`'s rate in `mode`.
    pub fn median_job(&self, mode: Mode, j: usize) -> Option<f64> {
        let xs: Vec<f64> = self
            .runs_of(mode)
            .filter_map(|r| r.rounds_per_s.get(j).copied())
            .collect();
        (!xs.is_empty()).then(|| median(&xs))
    }

    /// Per repeat, `a`'s sum over `b`'s (repeats that ran both, `b` > 0).
    pub fn ratios(&self, a: Mode, b: Mode) -> Vec<f64> {
        (1..=self.repeat)
            .filter_map(|k| {
                let of = |m: Mode| self.runs_of(m).find(|r| r.repeat == k).map(Run::sum);
                let (x, y) = (of(a)?, of(b)?);
                (y > 0.0).then(|| x / y)
            })
            .collect()
    }
}

/// The table `gang bench-slurm` prints.
pub fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let dur = gang_core::time::Duration(r.duration_ns);
    let _ = writeln!(
        out,
        "gang bench-slurm: 2 bulk-synchronous jobs sharing node {} ({} CPUs) under {}",
        r.node, r.cpus, r.slurm_version
    );
    let _ = writeln!(
        out,
        "  job: sbatch -n 1 -c {c} --wrap 'gang workload program --workers {c} --work {} --iterations-per-us {}' (rounds = spin barriers passed)",
        gang_core::time::Duration(r.work_ns),
        r.iterations_per_us,
        c = r.cpus
    );
    let _ = writeln!(
        out,
        "  window {dur} per mode (after both jobs started + {}), {} repeat(s); medians over the repeats",
        gang_core::time::Duration(WARM_UP),
        r.repeat
    );
    let _ = writeln!(
        out,
        "  linux:      OverSubscribe=FORCE:2, no gang scheduling (Linux shares the CPUs)"
    );
    let _ = writeln!(
        out,
        "  slurm-gang: PreemptMode=GANG SchedulerTimeSlice={} s OverSubscribe=FORCE:2",
        r.slice_s
    );
    let _ = writeln!(
        out,
        "  gang:       OverSubscribe=FORCE:2, the program as a step: srun -n 1 -c {} --gang={} (gang pool of CPUs 0-{}, shared with the host)",
        r.cpus,
        r.policy,
        r.cpus.saturating_sub(1)
    );
    let _ = writeln!(
        out,
        "  load average before: {}  after: {}",
        r.load_before, r.load_after
    );
    let alone = r.median_sum(Mode::Alone);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<11} {:>12} {:>12} {:>12} {:>8}   rounds/s (median)",
        "mode", "job 1", "job 2", "sum", "% ideal"
    );
    for mode in Mode::ALL {
        if r.runs_of(mode).next().is_none() {
            continue;
        }
        let job = |j| {
            r.median_job(mode, j)
                .map_or("-".to_string(), |x| format!("{x:.1}"))
        };
        let sum = r.median_sum(mode);
        let ideal = if alone > 0.0 {
            format!("{:.1}", 100.0 * sum / alone)
        } else {
            "-".into()
        };
        let _ = writeln!(
            out,
            "{:<11} {:>12} {:>12} {:>12.1} {:>8}",
            mode.name(),
            job(0),
            job(1),
            sum,
            ideal
        );
    }
    let _ = writeln!(
        out,
        "(ideal: each job alone does R = {alone:.1} rounds/s; two sharing the node get R/2 = {:.1} each, R together)",
        alone / 2.0
    );
    let _ = writeln!(out);
    for (a, b) in [
        (Mode::Gang, Mode::SlurmGang),
        (Mode::Gang, Mode::Linux),
        (Mode::SlurmGang, Mode::Linux),
    ] {
        let each = r.ratios(a, b);
        if each.is_empty() {
            continue;
        }
        let list: Vec<String> = each.iter().map(|x| format!("{x:.2}")).collect();
        let _ = writeln!(
            out,
            "{:<22} {:.2}x median (per repeat: {})",
            format!("{} / {}:", a.name(), b.name()),
            median(&each),
            list.join(" ")
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "every run (rounds/s: job 1, job 2; share of the window with both, one or no job able to run):"
    );
    for run in &r.runs {
        let jobs: Vec<String> = run.rounds_per_s.iter().map(|x| format!("{x:.1}")).collect();
        let _ = writeln!(
            out,
            "  repeat {} {:<11} {}  sum {:.1}  (running: both {:.0}%, one {:.0}%, none {:.0}%)",
            run.repeat,
            run.mode.name(),
            jobs.join(", "),
            run.sum(),
            100.0 * run.running[2],
            100.0 * run.running[1],
            100.0 * run.running[0]
        );
    }
    out
}

/// A progress report of a job: (CLOCK_MONOTONIC ns it was due, rounds).
pub type Sample = (u64, u64);

/// A line of `gang workload program --json`: the first one (`epoch_ns`, no
/// progress yet: 0 rounds) or a report (`monotonic_ns`, `progress`).
pub fn parse_line(line: &str) -> Option<Sample> {
    let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    if let (Some(t), Some(p)) = (v["monotonic_ns"].as_u64(), v["progress"].as_u64()) {
        return Some((t, p));
    }
    v["epoch_ns"].as_u64().map(|t| (t, 0))
}

/// A job's progress at `t`, interpolated between the samples around it
/// (sorted by time); `None` before the first or after the last.
pub fn progress_at(samples: &[Sample], t: u64) -> Option<f64> {
    let i = samples.partition_point(|&(m, _)| m < t);
    let (m1, p1) = *samples.get(i)?;
    if m1 == t {
        return Some(p1 as f64);
    }
    let (m0, p0) = *samples.get(i.checked_sub(1)?)?;
    let f = (t - m0) as f64 / (m1 - m0) as f64;
    Some(p0 as f64 + f * (p1 as f64 - p0 as f64))
}

/// Rounds/s between monotonic times `start` and `end`.
pub fn rate(samples: &[Sample], start: u64, end: u64) -> Option<f64> {
    let (a, b) = (progress_at(samples, start)?, progress_at(samples, end)?);
    (end > start).then(|| (b - a).max(0.0) / ((end - start) as f64 / 1e9))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn run(mode: Mode, repeat: u32, rates: &[f64]) -> Run {
        Run {
            mode,
            repeat,
            rounds_per_s: rates.to_vec(),
            window_s: 20.0,
            running: [0.0, 0.25, 0.75],
        }
    }

    fn report() -> Report {
        Report {
            cpus: 2,
            node: "vm".into(),
            slurm_version: "slurm-wlm 22.05.8".into(),
            duration_ns: 20_000 * MS,
            repeat: 3,
            slice_s: 5,
            policy: "be,256".into(),
            work_ns: 200_000,
            iterations_per_us: 250,
            load_before: "1.00 1.00 1.00".into(),
            load_after: "2.00 1.50 1.20".into(),
            runs: vec![
                run(Mode::Alone, 1, &[4000.0]),
                run(Mode::Linux, 1, &[100.0, 300.0]),
                run(Mode::Gang, 1, &[1500.0, 1500.0]),
                run(Mode::SlurmGang, 1, &[1000.0, 900.0]),
                run(Mode::SlurmGang, 2, &[1200.0, 800.0]),
                run(Mode::Gang, 2, &[1800.0, 1800.0]),
                run(Mode::Linux, 2, &[200.0, 200.0]),
                run(Mode::Alone, 2, &[5000.0]),
                run(Mode::Alone, 3, &[4500.0]),
                run(Mode::Linux, 3, &[150.0, 150.0]),
                run(Mode::Gang, 3, &[1000.0, 1000.0]),
                run(Mode::SlurmGang, 3, &[2000.0, 0.0]),
            ],
        }
    }

    #[test]
    fn medians_and_ratios_are_per_mode_and_per_repeat() {
        let r = report();
        assert_eq!(r.median_sum(Mode::Alone), 4500.0);
        assert_eq!(r.median_sum(Mode::Gang), 3000.0);
        assert_eq!(r.median_sum(Mode::SlurmGang), 2000.0);
        assert_eq!(r.median_job(Mode::Linux, 1), Some(200.0));
        assert_eq!(r.median_job(Mode::Alone, 1), None);
        assert_eq!(
            r.ratios(Mode::Gang, Mode::SlurmGang),
            vec![3000.0 / 1900.0, 1.8, 1.0]
        );
        assert_eq!(
            r.ratios(Mode::Gang, Mode::Linux),
            vec![7.5, 9.0, 2000.0 / 300.0]
        );
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0]), 3.0);
    }

    #[test]
    fn the_table_has_every_mode_the_ideal_the_ratios_and_the_configuration() {
        let text = render(&report());
        for needle in [
            "SchedulerTimeSlice=5 s",
            "--gang=be,256",
            "window 20s per mode",
            "3 repeat(s)",
            "--work 200us --iterations-per-us 250",
            "slurm-wlm 22.05.8",
            "R = 4500.0 rounds/s",
            "R/2 = 2250.0 each",
            "gang / slurm-gang:     1.58x median (per repeat: 1.58 1.80 1.00)",
            "gang / linux:          7.50x median",
            "repeat 3 slurm-gang  2000.0, 0.0  sum 2000.0  (running: both 75%, one 25%, none 0%)",
        ] {
            assert!(text.contains(needle), "{needle:?} not in:\n{text}");
        }
        let row = |mode: &str| {
            text.lines()
                .find(|l| {
                    l.split_whitespace().count() == 5 && l.split_whitespace().next() == Some(mode)
                })
                .unwrap()
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        assert_eq!(row("alone"), ["alone", "4500.0", "-", "4500.0", "100.0"]);
        assert_eq!(row("gang"), ["gang", "1500.0", "1500.0", "3000.0", "66.7"]);
        assert_eq!(row("linux"), ["linux", "150.0", "200.0", "400.0", "8.9"]);
        assert_eq!(
            row("slurm-gang"),
            ["slurm-gang", "1200.0", "800.0", "2000.0", "44.4"]
        );
    }

    #[test]
    fn lines_and_rates_from_the_workload_reports() {
        assert_eq!(
            parse_line(r#"{"epoch_ns":100,"pid":1,"tids":[1,2,3]}"#),
            Some((100, 0))
        );
        assert_eq!(
            parse_line(r#"{"monotonic_ns":200,"progress":7,"rate_per_s":1.0}"#),
            Some((200, 7))
        );
        assert_eq!(parse_line("srun: error: something"), None);
        assert_eq!(parse_line(r#"{"other":1}"#), None);
        let s = [
            (1_000_000_000, 0),
            (2_000_000_000, 100),
            (3_000_000_000, 300),
        ];
        assert_eq!(progress_at(&s, 1_500_000_000), Some(50.0));
        assert_eq!(progress_at(&s, 3_000_000_000), Some(300.0));
        assert_eq!(progress_at(&s, 999), None);
        assert_eq!(progress_at(&s, 3_000_000_001), None);
        assert_eq!(rate(&s, 1_500_000_000, 2_500_000_000), Some(150.0));
        assert_eq!(rate(&s, 2_000_000_000, 2_000_000_000), None);
    }
}
