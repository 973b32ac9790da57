//! The cluster simulation's claims, on a test-sized cluster (8 hosts of 4
//! CPUs, 1 simulated second): a shared clock with no error lines the job's
//! slots up exactly, skew follows clock error, and hosts without a shared
//! clock are far worse.

#![allow(clippy::unwrap_used)]

use gang_core::{MS, SEC, US};
use gang_sim::cluster::{simulate_cluster, ClusterConfig, ClusterError, Mode, ModeReport};

fn small() -> ClusterConfig {
    ClusterConfig {
        hosts: 8,
        cpus: 4,
        duration: SEC,
        seed: 7,
        ..ClusterConfig::default()
    }
}

fn aligned(clock_error: u64) -> Mode {
    Mode::Aligned { clock_error }
}

fn run(config: &ClusterConfig, modes: &[Mode]) -> Vec<ModeReport> {
    simulate_cluster(config, modes).unwrap().modes
}

#[test]
fn aligned_hosts_without_clock_error_start_together_at_the_ideal_rate() {
    let report = simulate_cluster(&small(), &[aligned(0)]).unwrap();
    let row = &report.modes[0];
    assert!(row.skew.slots >= 90, "about one slot per 10 ms measured");
    assert_eq!((row.skew.p50, row.skew.p99, row.skew.max), (0, 0, 0));
    assert!(row.barriers > 0);
    assert!((row.pct_of_ideal - 100.0).abs() < 1e-9, "{row:?}");
    // 4 ms of every 10 ms in quanta of 200 us: 20 barriers a slot.
    assert!((report.ideal_barriers_per_s - 2000.0).abs() <= 20.0);
    assert!(report.job_policy.exact());
}

#[test]
fn skew_grows_with_clock_error_and_stays_within_twice_the_bound() {
    let errors = [0, US, 50 * US, MS];
    let modes: Vec<Mode> = errors.iter().map(|&e| aligned(e)).collect();
    let rows = run(&small(), &modes);
    for (row, &bound) in rows.iter().zip(&errors) {
        assert!(
            row.skew.max <= 2 * bound,
            "{row:?}: two clocks differ by at most 2E"
        );
    }
    for pair in rows.windows(2) {
        assert!(pair[1].skew.p50 > pair[0].skew.p50, "{pair:?}");
        assert!(pair[1].skew.max > pair[0].skew.max, "{pair:?}");
        assert!(
            pair[1].pct_of_ideal <= pair[0].pct_of_ideal + 0.5,
            "{pair:?}"
        );
    }
    // A millisecond of error costs a 4 ms slot a visible share of barriers.
    assert!(rows[3].pct_of_ideal < 90.0, "{:?}", rows[3]);
    assert!(rows[1].pct_of_ideal > 99.0, "{:?}", rows[1]);
}

#[test]
fn unaligned_hosts_are_much_worse_than_aligned_ones() {
    let rows = run(&small(), &[aligned(50 * US), Mode::Unaligned]);
    let (good, bad) = (&rows[0], &rows[1]);
    assert!(
        bad.skew.p50 > 20 * good.skew.p50.max(1),
        "{good:?} vs {bad:?}"
    );
    assert!(
        bad.barriers_per_s * 3.0 < good.barriers_per_s,
        "{good:?} vs {bad:?}"
    );
}

#[test]
fn a_run_is_deterministic_for_a_seed_and_differs_across_seeds() {
    let modes = [aligned(50 * US), Mode::Unaligned];
    let a = simulate_cluster(&small(), &modes).unwrap();
    let b = simulate_cluster(&small(), &modes).unwrap();
    assert_eq!(a, b);
    let other = simulate_cluster(&ClusterConfig { seed: 8, ..small() }, &modes).unwrap();
    assert_ne!(a.modes, other.modes);
}

#[test]
fn refuses_what_it_cannot_measure() {
    let err = |c: ClusterConfig| simulate_cluster(&c, &[aligned(0)]).unwrap_err();
    assert!(matches!(
        err(ClusterConfig {
            hosts: 0,
            ..small()
        }),
        ClusterError::Empty { .. }
    ));
    assert!(matches!(
        err(ClusterConfig {
            quantum: 0,
            ..small()
        }),
        ClusterError::Parameter(_)
    ));
    assert!(matches!(
        err(ClusterConfig {
            duration: 20 * MS,
            ..small()
        }),
        ClusterError::TooShort { .. }
    ));
    let e = err(ClusterConfig {
        job_active: 10 * MS,
        ..small()
    });
    assert!(
        matches!(e, ClusterError::Engine { host: 0, .. }),
        "a job taking every CPU all the time leaves no BE reserve: {e}"
    );
}
