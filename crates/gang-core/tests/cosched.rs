//! Property tests of `gang_core::cosched`: the invariants its module docs
//! promise, over random per-vCPU state timelines.

use gang_core::cosched::{
    co_start_skews, CoschedAccumulator, CoschedMetrics, StateSpan, VcpuState,
};
use proptest::prelude::*;

const WINDOW: (u64, u64) = (100, 10_100);

fn state() -> impl Strategy<Value = VcpuState> {
    prop_oneof![
        Just(VcpuState::Running),
        Just(VcpuState::Runnable),
        Just(VcpuState::Blocked),
    ]
}

/// A timeline: consecutive spans from 0 with random lengths and states,
/// past the window's end (so clipping is exercised at both edges).
fn timeline() -> impl Strategy<Value = Vec<StateSpan>> {
    prop::collection::vec((1u64..800, state()), 1..40).prop_map(|steps| {
        let mut t = 0;
        steps
            .into_iter()
            .map(|(d, s)| {
                let span = StateSpan::new(t, t + d, s);
                t += d;
                span
            })
            .collect()
    })
}

fn running_share(spans: &[StateSpan]) -> f64 {
    let ran: u64 = spans
        .iter()
        .filter(|s| s.state == VcpuState::Running)
        .map(|s| s.end.min(WINDOW.1).saturating_sub(s.start.max(WINDOW.0)))
        .sum();
    ran as f64 / (WINDOW.1 - WINDOW.0) as f64
}

/// A vCPU's state at `t` in a consecutive timeline (blocked past its end).
fn state_at(spans: &[StateSpan], t: u64) -> VcpuState {
    spans
        .iter()
        .find(|s| s.start <= t && t < s.end)
        .map_or(VcpuState::Blocked, |s| s.state)
}

/// Feeds the timelines' changes inside the window to an accumulator (at
/// one instant, starts first: a vCPU starting as another stops keeps the
/// gang start open, as the sweep sees it).
fn accumulate(vcpus: &[Vec<StateSpan>]) -> (CoschedMetrics, Vec<u64>) {
    let initial: Vec<VcpuState> = vcpus.iter().map(|v| state_at(v, WINDOW.0)).collect();
    let mut acc = CoschedAccumulator::new(WINDOW.0, &initial);
    let mut changes: Vec<(u64, usize, VcpuState)> = Vec::new();
    for (i, v) in vcpus.iter().enumerate() {
        for s in v {
            if s.start > WINDOW.0 && s.start < WINDOW.1 {
                changes.push((s.start, i, s.state));
            }
        }
        if let Some(last) = v.last() {
            if last.end > WINDOW.0 && last.end < WINDOW.1 {
                changes.push((last.end, i, VcpuState::Blocked));
            }
        }
    }
    changes.sort_by_key(|&(t, i, s)| (t, s != VcpuState::Running, i));
    let mut skews = Vec::new();
    for (t, i, s) in changes {
        skews.extend(acc.set(t, i, s));
    }
    (acc.finish(WINDOW.1, 0, 0, 7), skews)
}

proptest! {
    #[test]
    fn the_accumulator_agrees_with_compute(vcpus in prop::collection::vec(timeline(), 1..5)) {
        let m = CoschedMetrics::compute(&vcpus, WINDOW, None, 7);
        let (a, mut skews) = accumulate(&vcpus);
        for (x, y) in [
            (m.all_running, a.all_running),
            (m.co_stop, a.co_stop),
            (m.ready, a.ready),
            (m.running, a.running),
            (m.blocked, a.blocked),
        ] {
            prop_assert!((x - y).abs() < 1e-9, "{m:?} vs {a:?}");
        }
        let mut expected = co_start_skews(&vcpus, WINDOW, None);
        expected.sort_unstable();
        skews.sort_unstable();
        prop_assert_eq!(&skews, &expected);
        prop_assert_eq!(a.skew_samples as usize, expected.len());
    }

    #[test]
    fn shares_are_fractions_that_add_up(vcpus in prop::collection::vec(timeline(), 1..5)) {
        let m = CoschedMetrics::compute(&vcpus, WINDOW, None, 7);
        for share in [m.all_running, m.co_stop, m.ready, m.running, m.blocked] {
            prop_assert!((0.0..=1.0).contains(&share), "{m:?}");
        }
        prop_assert!((m.running + m.ready + m.blocked - 1.0).abs() < 1e-9, "{m:?}");
        prop_assert!(m.all_running + m.co_stop <= 1.0 + 1e-9, "{m:?}");
        prop_assert_eq!(m.late_switches, 7);
        prop_assert_eq!(m.vcpus as usize, vcpus.len());
        prop_assert!(m.skew_p50_ns <= m.skew_p99_ns);
    }

    #[test]
    fn all_running_is_at_most_every_vcpus_running_share(
        vcpus in prop::collection::vec(timeline(), 1..5)
    ) {
        let m = CoschedMetrics::compute(&vcpus, WINDOW, None, 0);
        for v in &vcpus {
            prop_assert!(m.all_running <= running_share(v) + 1e-9, "{m:?}");
        }
        let mean: f64 = vcpus.iter().map(|v| running_share(v)).sum::<f64>() / vcpus.len() as f64;
        prop_assert!((m.running - mean).abs() < 1e-9, "{m:?} vs mean {mean}");
    }

    #[test]
    fn vcpus_in_lockstep_have_no_co_stop_and_no_skew(v in timeline(), n in 1usize..5) {
        let vcpus = vec![v.clone(); n];
        let m = CoschedMetrics::compute(&vcpus, WINDOW, None, 0);
        prop_assert_eq!(m.co_stop, 0.0);
        prop_assert_eq!(m.skew_p99_ns, 0);
        prop_assert!((m.all_running - running_share(&v)).abs() < 1e-9);
    }

    #[test]
    fn one_vcpu_never_co_stops(v in timeline()) {
        let m = CoschedMetrics::compute(&[v], WINDOW, None, 0);
        prop_assert_eq!(m.co_stop, 0.0);
        prop_assert!((m.all_running - m.running).abs() < 1e-9);
    }

    #[test]
    fn a_shifted_copy_starts_late_by_the_shift(v in timeline(), shift in 0u64..50) {
        // Every gang start's skew is at most the shift (a sibling's run is
        // the same run `shift` later, possibly merged with its neighbour).
        let late: Vec<StateSpan> = v
            .iter()
            .map(|s| StateSpan::new(s.start + shift, s.end + shift, s.state))
            .collect();
        for s in co_start_skews(&[v, late], WINDOW, None) {
            prop_assert!(s <= shift, "skew {s} > shift {shift}");
        }
    }
}
