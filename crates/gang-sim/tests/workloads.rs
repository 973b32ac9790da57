//! Workload semantics, scheduler comparisons, determinism and the shipped
//! examples, through the public API.
#![allow(clippy::unwrap_used)]

use gang_core::MS;
use gang_sim::report::DomainReport;
use gang_sim::{simulate, Report, Scenario, SchedKind};

fn run(text: &str) -> Report {
    let s = Scenario::parse("t.toml", text).unwrap();
    simulate(&s, None, &mut |_| {}).unwrap().report
}

fn dom<'a>(r: &'a Report, kind: SchedKind, name: &str) -> &'a DomainReport {
    r.run(kind)
        .unwrap()
        .domains
        .iter()
        .find(|d| d.name == name)
        .unwrap()
}

fn alone(cpus: &str, vcpus: u32, workload: &str, duration: &str) -> String {
    format!(
        "duration = \"{duration}\"\n[pool]\ncpus = \"{cpus}\"\n[[domain]]\nname = \"a\"\nvcpus = {vcpus}\nworkload = {workload}\n"
    )
}

#[test]
fn spin_barrier_alone_does_one_round_per_work() {
    let r = run(&alone(
        "0-1",
        2,
        r#"{ kind = "spin-barrier", work = "1us" }"#,
        "10ms",
    ));
    for kind in [SchedKind::Gang, SchedKind::Host] {
        let d = dom(&r, kind, "a");
        assert_eq!(d.progress, 10_000, "{kind}");
        assert_eq!(d.cpu_ns, 20 * MS, "{kind}");
        assert_eq!(d.cosched_fraction, 1.0, "{kind}");
    }
    // Fast-forward: no per-round events.
    assert!(r.run(SchedKind::Gang).unwrap().events < 100);
}

#[test]
fn spin_barrier_with_jitter_waits_for_the_slowest() {
    // Work 100us ± 50%: each round lasts as long as the slower vCPU's work,
    // so fewer rounds than 100 in 10 ms but more than 10ms / 150us.
    let r = run(&alone(
        "0-1",
        2,
        r#"{ kind = "spin-barrier", work = "100us", jitter = 50 }"#,
        "10ms",
    ));
    for kind in [SchedKind::Gang, SchedKind::Host] {
        let p = dom(&r, kind, "a").progress;
        assert!((67..100).contains(&p), "{kind}: {p}");
    }
    assert_eq!(
        dom(&r, SchedKind::Gang, "a").progress,
        dom(&r, SchedKind::Host, "a").progress
    );
}

#[test]
fn busy_gets_all_its_cpus() {
    let r = run(&alone("0-3", 3, r#"{ kind = "busy" }"#, "50ms"));
    for kind in [SchedKind::Gang, SchedKind::Host] {
        let d = dom(&r, kind, "a");
        assert_eq!(d.cpu_ns, 150 * MS);
        assert_eq!(d.progress, 150 * MS);
        assert_eq!(d.progress_unit, "cpu-ns");
    }
}

#[test]
fn blocking_barrier_rounds_and_wakes() {
    let r = run(&alone(
        "0-2",
        3,
        r#"{ kind = "blocking-barrier", work = "100us" }"#,
        "10ms",
    ));
    for kind in [SchedKind::Gang, SchedKind::Host] {
        let d = dom(&r, kind, "a");
        assert_eq!(d.progress, 100, "{kind}");
        // All arrive together, so the last arriver wakes two others each
        // round.
        let w = d.wake_latency.unwrap();
        assert_eq!(w.count, 2 * 100, "{kind}");
        assert_eq!(w.p99_ns, 0, "{kind}: alone, a woken vCPU runs at once");
    }
    // With jitter, vCPUs block and CPU time drops below 3 × duration.
    let r = run(&alone(
        "0-2",
        3,
        r#"{ kind = "blocking-barrier", work = "100us", jitter = 40 }"#,
        "10ms",
    ));
    let d = dom(&r, SchedKind::Host, "a");
    assert!(
        d.cpu_ns < 30 * MS && d.progress < 100 && d.progress > 60,
        "{d:?}"
    );
    assert!(d.cosched_fraction < 1.0);
}

#[test]
fn periodic_counts_jobs_and_deadline_misses() {
    let ok = run(&alone(
        "0",
        1,
        r#"{ kind = "periodic", period = "10ms", exec = "2ms" }"#,
        "100ms",
    ));
    for kind in [SchedKind::Gang, SchedKind::Host] {
        let d = dom(&ok, kind, "a");
        assert_eq!(
            (d.progress, d.jobs_released, d.deadline_misses),
            (10, Some(10), Some(0))
        );
        assert_eq!(d.cpu_ns, 20 * MS);
        let l = d.release_latency.unwrap();
        assert_eq!((l.count, l.p99_ns), (10, 0));
    }
    // exec 12ms every 10ms: job k completes at 12(k+1) > its deadline 10(k+1).
    // In 100ms: 8 jobs done (all late), the job released at 80ms is
    // unfinished past its deadline (90ms): 9 misses; the job released at
    // 90ms has its deadline at the end: not a miss yet.
    let late = run(&alone(
        "0",
        1,
        r#"{ kind = "periodic", period = "10ms", exec = "12ms" }"#,
        "100ms",
    ));
    for kind in [SchedKind::Gang, SchedKind::Host] {
        let d = dom(&late, kind, "a");
        assert_eq!(
            (d.progress, d.jobs_released, d.deadline_misses),
            (8, Some(10), Some(9))
        );
        // Queued jobs start when the previous one ends: 2, 4, … ms late.
        assert_eq!(d.release_latency.unwrap().max_ns, 16 * MS);
    }
    // A shorter deadline turns on-time jobs into misses.
    let tight = run(&alone(
        "0",
        1,
        r#"{ kind = "periodic", period = "10ms", exec = "2ms", deadline = "1ms" }"#,
        "100ms",
    ));
    assert_eq!(dom(&tight, SchedKind::Host, "a").deadline_misses, Some(10));
}

#[test]
fn sleep_wake_cycles() {
    let r = run(&alone(
        "0",
        1,
        r#"{ kind = "sleep-wake", run = "1ms", sleep = "1ms" }"#,
        "10ms",
    ));
    for kind in [SchedKind::Gang, SchedKind::Host] {
        let d = dom(&r, kind, "a");
        assert_eq!(d.progress, 5, "{kind}");
        assert_eq!(d.cpu_ns, 5 * MS);
        let w = d.wake_latency.unwrap();
        assert_eq!((w.count, w.max_ns), (4, 0), "{kind}");
    }
}

#[test]
fn host_wakeup_preemption_gives_sleepers_low_latency() {
    // A sleeper next to a CPU hog on one CPU: CFS's sleeper credit lets it
    // preempt the hog on wake-up.
    let text = r#"
duration = "1s"
schedulers = ["host"]
[pool]
cpus = "0"
[[domain]]
name = "hog"
vcpus = 1
workload = { kind = "busy" }
[[domain]]
name = "sleeper"
vcpus = 1
workload = { kind = "sleep-wake", run = "100us", sleep = "10ms" }
"#;
    let r = run(text);
    let s = dom(&r, SchedKind::Host, "sleeper");
    let w = s.wake_latency.unwrap();
    assert!(w.count > 90, "{w:?}");
    assert_eq!(w.p50_ns, 0, "{w:?}");
    let hog = dom(&r, SchedKind::Host, "hog");
    assert_eq!(hog.cpu_ns + s.cpu_ns, 1_000 * MS, "the CPU is never idle");
}

const OVERCOMMIT: &str = r#"
duration = "200ms"
seed = 3
[pool]
cpus = "0-1"
[[domain]]
name = "a"
vcpus = 2
workload = { kind = "spin-barrier", work = "1us" }
[[domain]]
name = "b"
vcpus = 2
workload = { kind = "spin-barrier", work = "1us" }
"#;

#[test]
fn gang_co_schedules_and_host_does_not() {
    let r = run(OVERCOMMIT);
    for name in ["a", "b"] {
        let g = dom(&r, SchedKind::Gang, name);
        let h = dom(&r, SchedKind::Host, name);
        assert_eq!(g.cosched_fraction, 1.0);
        assert!(h.cosched_fraction < 0.6, "{}", h.cosched_fraction);
        // Gang: half the CPUs each, one round per microsecond held.
        assert!((95_000..=105_000).contains(&g.progress), "{}", g.progress);
        assert!(
            h.progress * 3 < g.progress * 2,
            "host {} gang {}",
            h.progress,
            g.progress
        );
    }
    let c = &r.comparison;
    assert_eq!(c.len(), 2);
    assert!(c.iter().all(|c| c.ratio.unwrap() > 1.5), "{c:?}");
}

#[test]
fn same_seed_same_report_other_seed_other_report() {
    let text = format!(
        "{OVERCOMMIT}[[domain]]\nname = \"j\"\nvcpus = 2\nworkload = {{ kind = \"blocking-barrier\", work = \"300us\", jitter = 30 }}\n"
    )
    .replace("cpus = \"0-1\"", "cpus = \"0-2\"");
    let a = run(&text).without_timing();
    let b = run(&text).without_timing();
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    let c = run(&text.replace("seed = 3", "seed = 4")).without_timing();
    assert_ne!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&c).unwrap()
    );
}

#[test]
fn timeline_records_only_the_window() {
    let s = Scenario::parse("t.toml", OVERCOMMIT).unwrap();
    let o = simulate(&s, Some((10 * MS, 30 * MS)), &mut |_| {}).unwrap();
    assert_eq!(o.timeline.runs.len(), 2);
    for (kind, intervals, marks) in &o.timeline.runs {
        assert!(!intervals.is_empty(), "{kind}");
        assert!(intervals
            .iter()
            .all(|i| i.start >= 10 * MS && i.end <= 30 * MS && i.start < i.end));
        if *kind == SchedKind::Gang {
            assert!(!marks.is_empty() && marks.iter().all(|&m| (10 * MS..=30 * MS).contains(&m)));
        }
    }
    let svg = gang_sim::render_svg(&s, &o);
    assert!(svg.contains("<svg") && svg.contains("gang") && svg.contains("host"));
    assert!(simulate(&s, None, &mut |_| {})
        .unwrap()
        .timeline
        .runs
        .is_empty());
}

#[test]
fn refused_domains_are_errors_not_panics() {
    // Two no-mux domains on the same CPU: admission must refuse.
    let text = r#"
duration = "10ms"
schedulers = ["gang"]
[pool]
cpus = "0"
[[domain]]
name = "x"
vcpus = 1
policy = "no"
[[domain]]
name = "y"
vcpus = 1
policy = "no"
"#;
    let s = Scenario::parse("t.toml", text).unwrap();
    let e = simulate(&s, None, &mut |_| {}).unwrap_err().to_string();
    assert!(
        e.starts_with("domain \"y\": refused by the gang scheduler"),
        "{e}"
    );
}

#[test]
fn every_example_parses_and_runs() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    names.sort();
    assert!(names.len() >= 4, "{names:?}");
    for path in names {
        let mut s = Scenario::load(&path).unwrap();
        s.duration = 20 * MS;
        let r = simulate(&s, Some((0, 20 * MS)), &mut |_| {})
            .unwrap()
            .report;
        assert_eq!(r.runs.len(), s.schedulers.len(), "{}", path.display());
        for run in &r.runs {
            let cpu: u64 = run.domains.iter().map(|d| d.cpu_ns).sum();
            assert!(
                cpu > 0 && cpu <= 20 * MS * s.pool.cpus.len() as u64,
                "{}",
                path.display()
            );
        }
    }
}

#[test]
fn short_sleep_wake_cycles_over_a_long_run() {
    let text = alone(
        "0",
        1,
        r#"{ kind = "sleep-wake", run = "10us", sleep = "10us" }"#,
        "2s",
    );
    let s = Scenario::parse("t.toml", &text).unwrap();
    let mut last = 0;
    let r = simulate(&s, None, &mut |p| {
        assert!(p.now >= last && p.now <= p.end);
        last = p.now;
    })
    .unwrap()
    .report;
    for kind in [SchedKind::Gang, SchedKind::Host] {
        assert_eq!(dom(&r, kind, "a").progress, 100_000, "{kind}");
    }
}

#[test]
fn co_stop_is_zero_for_gangs_and_not_for_the_host_model() {
    // Two spin-barrier pairs on two CPUs (examples/spin-overcommit-2.toml):
    // gangs run both vCPUs of a pair or neither; the host model time-shares
    // four threads, so a pair's vCPU often runs while its partner waits.
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/spin-overcommit-2.toml"
    ))
    .unwrap();
    let r = run(&text);
    for name in ["pair-a", "pair-b"] {
        let gang = dom(&r, SchedKind::Gang, name).cosched;
        let host = dom(&r, SchedKind::Host, name).cosched;
        assert_eq!(gang.co_stop, 0.0, "{gang:?}");
        assert!(host.co_stop > 0.1, "{host:?}");
        assert!(gang.all_running > host.all_running, "{gang:?} vs {host:?}");
        assert_eq!((gang.skew_p99_ns, gang.vcpus), (0, 2), "{gang:?}");
        assert!(gang.skew_samples > 0, "{gang:?}");
        for m in [gang, host] {
            assert!(
                (m.running + m.ready + m.blocked - 1.0).abs() < 1e-9,
                "{m:?}"
            );
        }
        // The accumulated all-running share is the report's own count.
        let d = dom(&r, SchedKind::Gang, name);
        let all = d.all_running_ns as f64 / r.scenario.duration_ns as f64;
        assert!((gang.all_running - all).abs() < 1e-9, "{gang:?} vs {all}");
    }
}
