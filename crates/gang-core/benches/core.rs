//! Core benchmarks: `cargo bench -p gang-core --bench core`.
//!
//! - the cost of one decision on pools of 8, 64 and 1,024 CPUs, each one
//!   cohort spanning the pool (TT, ET and BE gangs whose maps chain every
//!   CPU): the worst case, as a decision is per cohort;
//! - admission of 1,000 TT domains with harmonic periods on 256 CPUs, as one
//!   batch, and the cost of admitting one more domain on top of them.
//!
//! Each figure is the median of several runs (the machines are shared and
//! noisy); the spread (min..max) is printed beside it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Instant;

use gang_core::*;

fn median(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(|a, b| a.total_cmp(b));
    (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
}

fn spec(id: u32, vcpus: u32, policy: &str) -> (DomainSpec, RunState) {
    (
        DomainSpec {
            id: DomainId(id),
            vcpus,
            cpu_map: None,
            policy: policy.parse().expect("policy"),
        },
        RunState::all_runnable(vcpus, false),
    )
}

/// A pool of `n` CPUs forming one cohort: n/4 TT gangs of 4 on CPUs
/// [4k, 4k+4), n/4 ET gangs of 2 on (4k+1, 4k+2), and n/2 BE gangs of 2 on
/// (2k+1, 2k+2 mod n) that chain every CPU together.
fn one_cohort_pool(n: u32) -> Scheduler {
    let mut s = Scheduler::new(PoolConfig::new(CpuSet::first_n(n))).expect("pool");
    let mut domains = Vec::new();
    let mut id = 1;
    let mut push = |map: Vec<CpuId>, policy: &str| {
        let (mut spec, state) = spec(id, map.len() as u32, policy);
        spec.cpu_map = Some(map);
        domains.push((spec, state));
        id += 1;
    };
    for k in 0..n / 4 {
        push((4 * k..4 * k + 4).collect(), "tt,16ms,2ms");
    }
    for k in 0..n / 4 {
        push(vec![4 * k + 1, 4 * k + 2], "et,32ms,2ms");
    }
    for k in 0..n / 2 {
        push(vec![2 * k + 1, (2 * k + 2) % n], "be,256");
    }
    s.add_domains(0, domains).expect("admitted");
    s
}

fn bench_decision(n: u32) -> (f64, f64, f64, usize) {
    let base = one_cohort_pool(n);
    let cohorts = base.cohorts().len();
    let mut runs = Vec::new();
    for _ in 0..7 {
        let mut s = base.clone();
        let boundaries = (100_000 / n as usize).max(100);
        let before = s.decisions_made();
        let start = Instant::now();
        // Follow the scheduler's own boundaries (table segments, budgets,
        // BE slices): every one is a real decision of the cohort.
        for _ in 0..boundaries {
            let t = s.next();
            black_box(s.handle(t, Event::Boundary).expect("decision"));
        }
        let elapsed = start.elapsed().as_secs_f64();
        let decided = s.decisions_made() - before;
        assert!(
            decided >= boundaries as u64,
            "every boundary decided the cohort"
        );
        runs.push(elapsed * 1e6 / decided as f64);
    }
    let (m, lo, hi) = median(runs);
    (m, lo, hi, cohorts)
}

fn tt_batch(n: usize) -> Vec<(DomainSpec, RunState)> {
    // Harmonic periods 20/40/80/160 ms, gangs of 1, 2 or 4 vCPUs, 5% or 10%
    // of a CPU each: 1,000 domains fill 256 CPUs to about 66% on average.
    (0..n)
        .map(|i| {
            let period = 20 << (i % 4);
            let active = period / 20 * (1 + (i % 2));
            let vcpus = [1, 2, 4, 2][i % 4];
            spec(i as u32 + 1, vcpus, &format!("tt,{period}ms,{active}ms"))
        })
        .collect()
}

fn bench_admission() -> ((f64, f64, f64), (f64, f64, f64), usize) {
    let mut batch_runs = Vec::new();
    let mut one_runs = Vec::new();
    let mut cohorts = 0;
    for _ in 0..5 {
        let mut s = Scheduler::new(PoolConfig::new(CpuSet::first_n(256))).expect("pool");
        let start = Instant::now();
        s.add_domains(0, tt_batch(1000))
            .expect("1,000 TT domains admitted");
        batch_runs.push(start.elapsed().as_secs_f64() * 1e3);
        cohorts = s.cohorts().len();
        let start = Instant::now();
        let (extra, state) = spec(5000, 2, "tt,20ms,1ms");
        s.handle(0, Event::DomainAdded { spec: extra, state })
            .expect("one more admitted");
        one_runs.push(start.elapsed().as_secs_f64() * 1e3);
    }
    (median(batch_runs), median(one_runs), cohorts)
}

fn main() {
    // `cargo test --benches` runs this binary with `--bench` absent: keep it quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    println!(
        "gang-core benchmarks (median of runs, min..max){}",
        if quick { " [quick]" } else { "" }
    );
    let sizes: &[u32] = if quick { &[8] } else { &[8, 64, 1024] };
    for &n in sizes {
        let (m, lo, hi, cohorts) = bench_decision(n);
        println!("decision, {n:>5} CPUs ({cohorts} cohort(s)): {m:>9.2} us  ({lo:.2}..{hi:.2})");
    }
    if quick {
        return;
    }
    let ((m, lo, hi), (m1, lo1, hi1), cohorts) = bench_admission();
    println!("admission, 1,000 TT domains on 256 CPUs, batch ({cohorts} cohort(s)): {m:>8.2} ms  ({lo:.2}..{hi:.2})  goal < 100 ms");
    println!(
        "admission, one more TT domain on top:                {m1:>8.2} ms  ({lo1:.2}..{hi1:.2})"
    );
}
