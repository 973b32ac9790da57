//! Property tests of the scheduling invariants over random admitted
//! configurations and random event sequences.
//!
//! Invariants checked at every decision:
//! - gang: a domain is dispatched on all CPUs of its map or on none, and
//!   each of its vCPUs only on its own map CPU;
//! - space fillers run only in holes (CPUs no eligible reservation holds), and
//!   plain best-effort never runs in a reserved slot, except one of the
//!   pool's lending domain while that domain cannot run;
//! - precedence: an ET domain that is eligible (runnable, budget left) but not
//!   dispatched is blocked by a no-mux, TT or ET holder, never by a lower class.
//!
//! And over the whole run:
//! - every TT domain that is never paused or blocked receives exactly
//!   `active` in every window of its period;
//! - no TT or ET domain ever receives more than `active` per window from its
//!   reservation and events (space filling aside);
//! - an ET domain that is never blocked receives exactly `active` per window;
//! - decisions are deterministic: a replica fed the same events agrees;
//! - a refused change leaves the scheduler unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Driver;
use gang_core::engine::Dispatch;
use gang_core::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct DomainGen {
    vcpus: u32,
    map_seed: Option<u64>,
    class: u8,
    period_pow: u32,
    active_frac: u64,
    weight: u16,
    sf: bool,
    from: u64,
    /// Never paused or blocked (so its guarantees can be checked exactly).
    steady: bool,
}

fn domain_gen() -> impl Strategy<Value = DomainGen> {
    (
        1u32..=4,
        prop::option::of(any::<u64>()),
        0u8..10,
        2u32..=5,
        1u64..=100,
        1u16..=1000,
        any::<bool>(),
        0u64..8,
        any::<bool>(),
    )
        .prop_map(
            |(vcpus, map_seed, class, period_pow, active_frac, weight, sf, from, steady)| {
                DomainGen {
                    vcpus,
                    map_seed,
                    class,
                    period_pow,
                    active_frac,
                    weight,
                    sf,
                    from,
                    steady,
                }
            },
        )
}

#[derive(Debug, Clone)]
enum Op {
    Block(usize, u32),
    Wake(usize, u32),
    Pause(usize),
    Unpause(usize),
}

fn op_gen() -> impl Strategy<Value = (u64, Op)> {
    let op = prop_oneof![
        (0usize..8, 0u32..4).prop_map(|(d, v)| Op::Block(d, v)),
        (0usize..8, 0u32..4).prop_map(|(d, v)| Op::Wake(d, v)),
        (0usize..8).prop_map(Op::Pause),
        (0usize..8).prop_map(Op::Unpause),
    ];
    (0u64..200_000, op)
}

fn policy_of(g: &DomainGen) -> Policy {
    let period = (1u64 << g.period_pow) * MS;
    let active = ((period / MS) * g.active_frac / 100).max(1) * MS;
    let timing = Periodic {
        from: g.from * MS,
        period,
        active,
    };
    match g.class {
        0 => Policy::NoMux { from: g.from * MS },
        1..=3 => Policy::TimeTriggered {
            timing,
            space_filling: g.sf,
            exact: false,
        },
        4..=5 => Policy::EventTriggered {
            timing,
            space_filling: g.sf,
        },
        _ => Policy::BestEffort {
            weight: g.weight,
            space_filling: g.sf,
        },
    }
}

fn map_of(g: &DomainGen, ncpus: u32) -> Option<Vec<CpuId>> {
    let seed = g.map_seed?;
    let mut cpus: Vec<CpuId> = (0..ncpus).collect();
    // A seeded shuffle.
    let mut x = seed | 1;
    for i in (1..cpus.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        cpus.swap(i, (x % (i as u64 + 1)) as usize);
    }
    Some(cpus.into_iter().take(g.vcpus as usize).collect())
}

struct Setup {
    ncpus: u32,
    admitted: Vec<(DomainId, DomainGen)>,
    events: Vec<(u64, Event)>,
}

/// Admits what fits (checking that refusals change nothing) and turns the
/// ops into events on admitted, non-steady domains.
fn setup(ncpus: u32, gens: &[DomainGen], ops: &[(u64, Op)], lending: bool) -> (Scheduler, Setup) {
    let mut pool = PoolConfig::new(CpuSet::first_n(ncpus));
    // Domain 1 (if admitted) lends its reservations, like the host's slot.
    pool.lending = lending.then_some(DomainId(1));
    let mut sched = Scheduler::new(pool).unwrap();
    let mut admitted = Vec::new();
    for (i, g) in gens.iter().enumerate() {
        let id = DomainId(i as u32 + 1);
        let vcpus = g.vcpus.min(ncpus);
        let g = DomainGen { vcpus, ..g.clone() };
        let spec = DomainSpec {
            id,
            vcpus,
            cpu_map: map_of(&g, ncpus),
            policy: policy_of(&g),
        };
        let before = sched.dump();
        match sched.handle(
            0,
            Event::DomainAdded {
                spec,
                state: RunState::all_runnable(vcpus, false),
            },
        ) {
            Ok(_) => admitted.push((id, g)),
            Err(_) => assert_eq!(sched.dump(), before, "a refusal changed the state"),
        }
    }
    let mut events: Vec<(u64, Event)> = Vec::new();
    let movable: Vec<&(DomainId, DomainGen)> = admitted.iter().filter(|(_, g)| !g.steady).collect();
    if !movable.is_empty() {
        for (t, op) in ops {
            let pick = |i: usize| movable[i % movable.len()];
            let ev = match *op {
                Op::Block(i, v) => {
                    let (id, g) = pick(i);
                    Event::VcpuBlocked(VcpuRef {
                        domain: *id,
                        vcpu: v % g.vcpus,
                    })
                }
                Op::Wake(i, v) => {
                    let (id, g) = pick(i);
                    Event::VcpuWoke(VcpuRef {
                        domain: *id,
                        vcpu: v % g.vcpus,
                    })
                }
                Op::Pause(i) => Event::Paused(pick(i).0),
                Op::Unpause(i) => Event::Unpaused(pick(i).0),
            };
            events.push((t * 1000, ev));
        }
    }
    (
        sched,
        Setup {
            ncpus,
            admitted,
            events,
        },
    )
}

const RUN: Nanos = 256 * MS;

fn check_decision(s: &Scheduler, t: Nanos, ncpus: u32) {
    let grain = s.config().grain;
    for id in s.domains() {
        let map = s.cpu_map(id).unwrap();
        let on: usize = map
            .iter()
            .enumerate()
            .filter(|(i, &cpu)| {
                s.dispatched(cpu)
                    == Some(VcpuRef {
                        domain: id,
                        vcpu: *i as u32,
                    })
            })
            .count();
        assert!(
            on == 0 || on == map.len(),
            "domain {id} dispatched on {on} of {} CPUs at {t}",
            map.len()
        );
        assert_eq!(
            on > 0,
            s.dispatch_of(id).is_some(),
            "dispatch kind of {id} at {t}"
        );
    }
    for cpu in 0..ncpus {
        let Some(v) = s.dispatched(cpu) else { continue };
        assert_eq!(
            s.cpu_map(v.domain).unwrap()[v.vcpu as usize],
            cpu,
            "vCPU off its map CPU"
        );
        let owner = s.reservation_at(cpu, t);
        match s.dispatch_of(v.domain) {
            Some(Dispatch::Filler) => {
                if let Some(o) = owner {
                    assert_ne!(
                        s.dispatch_of(o),
                        Some(Dispatch::Reserved),
                        "filler in a used slot at {t}"
                    );
                }
            }
            Some(Dispatch::BestEffort) => {
                let lent = owner.is_some_and(|o| {
                    let rs = s.run_state(o).unwrap();
                    s.config().lending == Some(o) && (rs.paused || !rs.runnable.contains(&true))
                });
                assert!(
                    owner.is_none() || lent,
                    "plain BE domain {} in a reserved slot of {owner:?} on CPU {cpu} at {t}",
                    v.domain
                )
            }
            _ => {}
        }
    }
    for id in s.domains() {
        let policy = s.policy(id).unwrap();
        if policy.class() != Class::EventTriggered || s.dispatch_of(id).is_some() {
            continue;
        }
        let rs = s.run_state(id).unwrap();
        let eligible = !rs.paused
            && rs.runnable.iter().any(|&r| r)
            && t >= policy.from()
            && s.budget_left(id, t).unwrap() >= grain;
        if eligible {
            let blocked_by_higher = s.cpu_map(id).unwrap().iter().any(|&cpu| {
                s.dispatched(cpu).is_some_and(|v| {
                    matches!(
                        s.dispatch_of(v.domain),
                        Some(Dispatch::NoMux | Dispatch::Reserved | Dispatch::EventTriggered)
                    )
                })
            });
            assert!(
                blocked_by_higher,
                "eligible ET domain {id} delayed by a lower class at {t}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn scheduling_invariants_hold(
        ncpus in 1u32..=6,
        gens in prop::collection::vec(domain_gen(), 1..8),
        ops in prop::collection::vec(op_gen(), 0..40),
        lending in any::<bool>(),
    ) {
        let (sched, st) = setup(ncpus, &gens, &ops, lending);
        let replica = sched.clone();
        let mut drv = Driver::new(sched);
        for (t, ev) in &st.events {
            drv.at(*t, ev.clone());
        }
        drv.apply(Event::Boundary);
        drv.run_until_checked(RUN, |s, t| check_decision(s, t, st.ncpus));

        for (id, g) in &st.admitted {
            let policy = drv.sched.policy(*id).unwrap();
            let Some(timing) = policy.timing() else { continue };
            let mut w = timing.from;
            while w + timing.period <= RUN {
                let own = drv.held(*id, w, w + timing.period, Some(Dispatch::Reserved))
                    + drv.held(*id, w, w + timing.period, Some(Dispatch::EventTriggered));
                prop_assert!(own <= timing.active, "domain {} got {} > active in window {}", id, own, w);
                if g.steady {
                    prop_assert_eq!(own, timing.active, "steady domain {} in window at {}", id, w);
                }
                w += timing.period;
            }
        }

        // Determinism: a replica fed the same events decides the same.
        let mut again = Driver::new(replica);
        for (t, ev) in &st.events {
            again.at(*t, ev.clone());
        }
        again.apply(Event::Boundary);
        again.run_until(RUN);
        prop_assert_eq!(&drv.decisions, &again.decisions);
    }

    #[test]
    fn be_shares_follow_weights_within_the_lag_bound(
        width in 1u32..=3,
        weights in prop::collection::vec(1u16..=16, 2..5),
    ) {
        let cpus: Vec<CpuId> = (0..width).collect();
        let config = PoolConfig::new(CpuSet::first_n(width));
        let slice = config.be_slice;
        let mut drv = Driver::new(Scheduler::new(config).unwrap());
        for (i, &w) in weights.iter().enumerate() {
            drv.apply(Event::DomainAdded {
                spec: DomainSpec {
                    id: DomainId(i as u32 + 1),
                    vcpus: width,
                    cpu_map: Some(cpus.clone()),
                    policy: Policy::BestEffort { weight: w, space_filling: false },
                },
                state: RunState::all_runnable(width, false),
            });
        }
        drv.apply(Event::Boundary);
        let total = 4 * SEC;
        drv.run_until(total);
        let sum_w: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let min_w = u64::from(*weights.iter().min().unwrap());
        let mut held_sum = 0;
        for (i, &w) in weights.iter().enumerate() {
            let held = drv.held(DomainId(i as u32 + 1), 0, total, None);
            held_sum += held;
            let expected = total * u64::from(w) / sum_w;
            let bound = slice * u64::from(w) / min_w + slice;
            prop_assert!(held.abs_diff(expected) <= bound,
                "weight {} got {} expected {} (bound {})", w, held, expected, bound);
        }
        prop_assert_eq!(held_sum, total, "work conserving");
    }
}
