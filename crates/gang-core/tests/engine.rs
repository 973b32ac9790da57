//! Engine behaviour per policy, per life-cycle case (including the seed's
//! KNOWN ISSUES) and per refusal reason, through the public API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Driver;
use gang_core::engine::Dispatch;
use gang_core::*;

fn pool(cpus: &str) -> PoolConfig {
    PoolConfig::new(CpuSet::parse(cpus, None).unwrap())
}

fn sched(cpus: &str) -> Scheduler {
    Scheduler::new(pool(cpus)).unwrap()
}

fn add(id: u32, vcpus: u32, map: Option<Vec<CpuId>>, policy: &str) -> Event {
    Event::DomainAdded {
        spec: DomainSpec {
            id: DomainId(id),
            vcpus,
            cpu_map: map,
            policy: policy.parse().unwrap(),
        },
        state: RunState::all_runnable(vcpus, false),
    }
}

fn d(id: u32) -> DomainId {
    DomainId(id)
}

fn v(id: u32, vcpu: u32) -> VcpuRef {
    VcpuRef {
        domain: DomainId(id),
        vcpu,
    }
}

#[test]
fn tt_domain_gets_exactly_active_in_every_period() {
    let mut drv = Driver::new(sched("0-1"));
    drv.apply(add(1, 2, None, "tt,10ms,3ms"));
    drv.apply(add(2, 2, None, "be,256"));
    drv.run_until(100 * MS);
    for k in 0..10 {
        assert_eq!(
            drv.held(d(1), k * 10 * MS, (k + 1) * 10 * MS, None),
            3 * MS,
            "period {k}"
        );
    }
    // BE gets all the rest.
    assert_eq!(drv.held(d(2), 0, 100 * MS, None), 70 * MS);
}

#[test]
fn tt_from_delays_activation() {
    let mut drv = Driver::new(sched("0"));
    drv.apply(add(1, 1, None, "tt,10,2@25ms"));
    drv.run_until(60 * MS);
    assert_eq!(drv.held(d(1), 0, 25 * MS, None), 0);
    assert_eq!(drv.held(d(1), 25 * MS, 35 * MS, None), 2 * MS);
}

#[test]
fn no_mux_owns_its_cpus_from_its_start() {
    let mut drv = Driver::new(sched("0-3"));
    drv.apply(add(1, 2, Some(vec![0, 1]), "no@5ms"));
    drv.apply(add(2, 2, Some(vec![2, 3]), "be,256"));
    drv.run_until(20 * MS);
    assert_eq!(drv.held(d(1), 0, 5 * MS, None), 0);
    assert_eq!(
        drv.held(d(1), 5 * MS, 20 * MS, Some(Dispatch::NoMux)),
        15 * MS
    );
    assert_eq!(drv.sched.dispatched(1), Some(v(1, 1)));
}

#[test]
fn et_runs_on_wake_ahead_of_be_within_its_budget() {
    let mut drv = Driver::new(sched("0-1"));
    drv.apply(add(1, 2, None, "et,20ms,5ms"));
    drv.apply(add(2, 2, None, "be,256"));
    // The ET domain sleeps until 7.5 ms, then wakes (an event).
    drv.apply(Event::VcpuBlocked(v(1, 0)));
    drv.apply(Event::VcpuBlocked(v(1, 1)));
    drv.at(7 * MS + MS / 2, Event::VcpuWoke(v(1, 0)));
    drv.run_until(20 * MS);
    // Dispatched at the next boundary (8 ms), ahead of BE, for its 5 ms budget.
    assert_eq!(drv.held(d(1), 0, 8 * MS, None), 0);
    assert_eq!(drv.held(d(1), 8 * MS, 13 * MS, None), 5 * MS);
    assert_eq!(
        drv.held(d(1), 0, 20 * MS, None),
        5 * MS,
        "never more than its budget"
    );
    assert_eq!(drv.held(d(2), 13 * MS, 20 * MS, None), 7 * MS);
}

#[test]
fn et_always_runnable_gets_exactly_active_per_window() {
    let mut drv = Driver::new(sched("0-1"));
    drv.apply(add(1, 2, None, "et,10ms,4ms"));
    drv.apply(add(2, 1, Some(vec![0]), "tt,10ms,5ms"));
    drv.apply(add(3, 2, None, "be,256"));
    drv.run_until(100 * MS);
    for k in 0..10 {
        assert_eq!(drv.held(d(1), k * 10 * MS, (k + 1) * 10 * MS, None), 4 * MS);
        assert_eq!(drv.held(d(2), k * 10 * MS, (k + 1) * 10 * MS, None), 5 * MS);
    }
}

#[test]
fn be_shares_follow_weights() {
    let mut drv = Driver::new(sched("0-1"));
    drv.apply(add(1, 2, None, "be,100"));
    drv.apply(add(2, 2, None, "be,300"));
    drv.run_until(4 * SEC);
    let (a, b) = (
        drv.held(d(1), 0, 4 * SEC, None),
        drv.held(d(2), 0, 4 * SEC, None),
    );
    assert_eq!(a + b, 4 * SEC, "work conserving");
    let share = a as f64 / (a + b) as f64;
    assert!((share - 0.25).abs() < 0.01, "share {share}");
}

#[test]
fn paused_tt_slot_goes_to_space_fillers_only() {
    let mut drv = Driver::new(sched("0-1"));
    drv.apply(add(1, 2, None, "tt,10ms,5ms"));
    drv.apply(add(2, 2, None, "be,256,sf"));
    drv.apply(add(3, 2, None, "be,256"));
    drv.apply(Event::Paused(d(1)));
    drv.run_until(100 * MS);
    assert_eq!(drv.held(d(1), 0, 100 * MS, None), 0);
    // The 50 ms of TT holes went to the filler, never to the plain BE domain.
    assert_eq!(drv.held(d(2), 0, 100 * MS, Some(Dispatch::Filler)), 50 * MS);
    for s in &drv.spans {
        if s.how.contains_key(&d(3)) {
            assert!(
                drv.sched.reservation_at(0, s.start).is_none(),
                "plain BE in a reserved slot at {}",
                s.start
            );
        }
    }
}

#[test]
fn blocked_domain_lends_its_slot_and_gets_it_back() {
    let mut drv = Driver::new(sched("0-1"));
    drv.apply(add(1, 2, None, "tt,10ms,5ms"));
    drv.apply(add(2, 2, None, "be,256,sf"));
    drv.at(0, Event::VcpuBlocked(v(1, 0)));
    drv.at(0, Event::VcpuBlocked(v(1, 1)));
    drv.at(20 * MS, Event::VcpuWoke(v(1, 1)));
    drv.run_until(40 * MS);
    assert_eq!(drv.held(d(1), 0, 20 * MS, None), 0);
    assert_eq!(drv.held(d(1), 20 * MS, 30 * MS, None), 5 * MS);
    assert_eq!(drv.held(d(2), 0, 20 * MS, Some(Dispatch::Filler)), 10 * MS);
}

#[test]
fn a_lending_domain_gives_its_slot_to_best_effort_while_blocked() {
    let run = |lending: bool| {
        let mut config = pool("0-1");
        config.lending = lending.then_some(d(1));
        let mut drv = Driver::new(Scheduler::new(config).unwrap());
        drv.apply(add(1, 2, None, "tt,10ms,5ms"));
        drv.apply(add(2, 2, None, "be,256"));
        drv.at(0, Event::VcpuBlocked(v(1, 0)));
        drv.at(0, Event::VcpuBlocked(v(1, 1)));
        // Wakes 2 ms into its slot [30, 35) ms.
        drv.at(32 * MS, Event::VcpuWoke(v(1, 0)));
        drv.run_until(50 * MS);
        drv
    };
    let lent = run(true);
    // Blocked: every CPU went to the BE gang, the slot included.
    assert_eq!(lent.held(d(1), 0, 30 * MS, None), 0);
    assert_eq!(lent.held(d(2), 0, 30 * MS, None), 30 * MS);
    // Woken mid-slot: it takes the slot back at the next boundary and keeps
    // it to the slot's end; after that, its full slot every period.
    assert_eq!(lent.held(d(1), 30 * MS, 35 * MS, None), 3 * MS);
    assert_eq!(lent.held(d(2), 30 * MS, 35 * MS, None), 2 * MS);
    assert_eq!(lent.held(d(1), 40 * MS, 50 * MS, None), 5 * MS);
    // Without lending, the blocked slot is a hole that plain BE never uses.
    let kept = run(false);
    assert_eq!(kept.held(d(2), 0, 30 * MS, None), 15 * MS);
}

#[test]
fn known_issue_unpause_in_a_gang_pool_just_works() {
    let mut drv = Driver::new(sched("0-1"));
    drv.apply(Event::DomainAdded {
        spec: DomainSpec {
            id: d(1),
            vcpus: 2,
            cpu_map: None,
            policy: Policy::default(),
        },
        state: RunState::all_runnable(2, true),
    });
    drv.run_until(5 * MS);
    assert_eq!(drv.held(d(1), 0, 5 * MS, None), 0, "paused: not dispatched");
    drv.apply(Event::Unpaused(d(1)));
    drv.run_until(10 * MS);
    assert_eq!(drv.held(d(1), 5 * MS, 10 * MS, None), 5 * MS);
}

#[test]
fn known_issue_create_directly_in_a_gang_pool_runs_at_once() {
    let mut drv = Driver::new(sched("0-1"));
    drv.run_until(3 * MS + 300 * US);
    drv.apply(add(7, 2, Some(vec![1, 0]), "tt,10ms,4ms"));
    drv.run_until(30 * MS);
    assert_eq!(drv.sched.cpu_map(d(7)), Some(&[1, 0][..]));
    assert!(drv.held(d(7), 0, 14 * MS, None) > 0);
    assert_eq!(drv.held(d(7), 20 * MS, 30 * MS, None), 4 * MS);
}

#[test]
fn known_issue_migrate_in_while_running() {
    let mut a = Driver::new(sched("0-1"));
    let mut b = Driver::new(sched("2-3"));
    a.apply(add(1, 2, None, "be,256"));
    b.apply(add(2, 2, None, "be,256"));
    a.run_until(5 * MS);
    b.run_until(5 * MS);
    assert_eq!(a.sched.dispatched(0).map(|v| v.domain), Some(d(1)));
    // Move domain 1, running, from pool A to pool B.
    let (spec, state) = a.sched.remove_domain(5 * MS, d(1)).unwrap();
    assert!(!state.paused);
    assert_eq!(a.sched.dispatched(0), None, "released at once");
    b.apply(Event::DomainAdded { spec, state });
    b.run_until(100 * MS);
    let (x, y) = (
        b.held(d(1), 5 * MS, 100 * MS, None),
        b.held(d(2), 5 * MS, 100 * MS, None),
    );
    assert!(x > 40 * MS && y > 40 * MS, "both share pool B: {x} {y}");
}

#[test]
fn reconfiguration_keeps_budget_used_in_the_current_period() {
    let mut drv = Driver::new(sched("0"));
    drv.apply(add(1, 1, None, "tt,20ms,8ms"));
    drv.apply(add(2, 1, None, "be,256"));
    drv.run_until(4 * MS);
    let used = drv.held(d(1), 0, 4 * MS, None);
    assert_eq!(used, 4 * MS);
    // Shrink active to 6 ms mid-period: only 2 ms more in this period.
    drv.apply(Event::ParamsSet {
        domain: d(1),
        cpu_map: None,
        policy: "tt,20ms,6ms".parse().unwrap(),
    });
    drv.run_until(60 * MS);
    assert_eq!(drv.held(d(1), 0, 20 * MS, None), 6 * MS);
    assert_eq!(drv.held(d(1), 20 * MS, 40 * MS, None), 6 * MS);
    assert_eq!(drv.held(d(1), 40 * MS, 60 * MS, None), 6 * MS);
}

#[test]
fn pause_takes_effect_at_the_next_boundary() {
    let mut drv = Driver::new(sched("0-1"));
    drv.apply(add(1, 2, None, "be,256"));
    drv.run_until(2 * MS + 100 * US);
    drv.apply(Event::Paused(d(1)));
    drv.run_until(10 * MS);
    assert_eq!(drv.held(d(1), 0, 10 * MS, None), 3 * MS);
    assert_eq!(drv.sched.dispatched(0), None);
}

#[test]
fn refusals_change_nothing() {
    let mut s = sched("0-2");
    s.handle(0, add(1, 2, Some(vec![0, 1]), "tt,10,4")).unwrap();
    s.handle(0, add(2, 2, Some(vec![1, 2]), "tt,10,4")).unwrap();
    let before = s.dump();
    let err = s
        .handle(0, add(3, 2, Some(vec![0, 2]), "tt,10,4"))
        .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::Refused(AdmissionError::WindowMissed { .. })
        ),
        "{err}"
    );
    assert_eq!(s.dump(), before);
    let err = s.handle(0, add(1, 1, None, "be,1")).unwrap_err();
    assert_eq!(
        err,
        EngineError::Refused(AdmissionError::DuplicateDomain(d(1)))
    );
    let err = s.handle(0, add(4, 4, None, "be,1")).unwrap_err();
    assert!(matches!(
        err,
        EngineError::Refused(AdmissionError::TooManyVcpus { .. })
    ));
    let err = s.handle(0, add(4, 1, Some(vec![9]), "be,1")).unwrap_err();
    assert!(matches!(
        err,
        EngineError::Refused(AdmissionError::CpuNotInPool { cpu: 9, .. })
    ));
    let err = s.handle(0, add(4, 1, None, "no")).unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::Refused(AdmissionError::NoMuxNotAlone { .. })
                | EngineError::Refused(AdmissionError::NoMapFits { .. })
        ),
        "{err}"
    );
    let err = s
        .handle(
            0,
            Event::ParamsSet {
                domain: d(1),
                cpu_map: None,
                policy: "tt,10,9".parse().unwrap(),
            },
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::Refused(AdmissionError::Overutilised { .. })
        ),
        "{err}"
    );
    let err = s.handle(0, Event::Paused(d(99))).unwrap_err();
    assert_eq!(err, EngineError::UnknownDomain(d(99)));
    let err = s.handle(0, Event::VcpuWoke(v(1, 5))).unwrap_err();
    assert_eq!(err, EngineError::UnknownVcpu(d(1), 5));
    let err = s
        .handle(0, Event::CpusRemoved(CpuSet::parse("1", None).unwrap()))
        .unwrap_err();
    assert!(matches!(
        err,
        EngineError::Refused(AdmissionError::CpusInUse { .. })
    ));
    assert_eq!(s.dump(), before);
    s.handle(5, Event::Boundary).unwrap();
    assert!(matches!(
        s.handle(4, Event::Boundary),
        Err(EngineError::TimeWentBackwards { .. })
    ));
}

#[test]
fn removing_a_cpu_moves_auto_mapped_domains() {
    let mut s = sched("0-3");
    s.handle(0, add(1, 2, None, "be,256")).unwrap();
    let map: Vec<CpuId> = s.cpu_map(d(1)).unwrap().to_vec();
    let leaving: CpuSet = [map[0]].into_iter().collect();
    s.handle(0, Event::CpusRemoved(leaving.clone())).unwrap();
    let new_map = s.cpu_map(d(1)).unwrap();
    assert!(!new_map.contains(&map[0]));
    assert!(!s.config().cpus.contains(map[0]));
    s.handle(0, Event::CpusAdded(leaving)).unwrap();
    assert_eq!(s.config().cpus.len(), 4);
}

#[test]
fn dump_shows_tables_and_domains() {
    let mut s = sched("0-1");
    s.handle(0, add(1, 2, None, "tt,10,4")).unwrap();
    s.handle(0, add(2, 1, None, "be,256,sf")).unwrap();
    let dump = s.dump();
    assert!(dump.contains("table: 10 grains"), "{dump}");
    assert!(dump.contains("domain 1: policy=tt,10ms,4ms"), "{dump}");
    assert!(dump.contains("domain 2: policy=be,256,sf"), "{dump}");
}

#[test]
fn an_unpaused_be_domain_shares_from_now_on_and_does_not_catch_up() {
    // Domain 1 runs alone for 100 ms (nothing else is runnable, so the
    // cohort makes no decision). Domain 2, admitted paused at 0, is unpaused
    // at 100 ms: from then on the two share equally; domain 2 gets no
    // credit for the time it was paused.
    let mut drv = Driver::new(sched("0-1"));
    drv.apply(add(1, 2, None, "be,256"));
    drv.apply(Event::DomainAdded {
        spec: DomainSpec {
            id: d(2),
            vcpus: 2,
            cpu_map: None,
            policy: Policy::default(),
        },
        state: RunState::all_runnable(2, true),
    });
    drv.run_until(100 * MS);
    drv.apply(Event::Unpaused(d(2)));
    drv.run_until(300 * MS);
    let (a, b) = (
        drv.held(d(1), 100 * MS, 300 * MS, None),
        drv.held(d(2), 100 * MS, 300 * MS, None),
    );
    assert!(
        a.abs_diff(b) <= 20 * MS,
        "shares after the unpause: {a} vs {b}"
    );
}

#[test]
fn invalid_pools_and_unplaceable_domains_are_refused() {
    let mut bad = pool("0-1");
    bad.grain = 0;
    assert!(matches!(
        Scheduler::new(bad),
        Err(EngineError::Refused(AdmissionError::InvalidPool(_)))
    ));
    let mut bad = pool("0-1");
    bad.be_slice = 1500 * US;
    let err = Scheduler::new(bad).unwrap_err();
    assert!(err.to_string().contains("multiple of the grain"), "{err}");
    let mut bad = pool("0-1");
    bad.be_reserve_pct = 101;
    assert!(Scheduler::new(bad).is_err());
    // Every auto-chosen map refused: the reason names the domain and the
    // first refusal.
    let mut s = sched("0-3");
    for (id, map) in [(1, [0, 1]), (2, [2, 3])] {
        s.handle(0, add(id, 2, Some(map.to_vec()), "tt,10,8"))
            .unwrap();
    }
    let err = s.handle(0, add(3, 2, None, "tt,10,2")).unwrap_err();
    match &err {
        EngineError::Refused(AdmissionError::NoMapFits { domain, tried, .. }) => {
            assert_eq!(*domain, d(3));
            assert!(*tried > 1);
        }
        other => panic!("expected NoMapFits, got {other:?}"),
    }
    assert!(
        err.to_string().contains("no CPU map for domain 3 fits"),
        "{err}"
    );
}
