//! `gang bench-cluster`: how closely gang pools of different "hosts" start
//! a cluster gang's slots when they share a clock, against the same pools
//! on their own clocks, in the same run.
//!
//! Each CPU of `--cpus` stands for one host: a runtime of its own (its own
//! dispatcher, replica of the scheduler, epoch and event log, as separate
//! daemons have; daemons add nothing on the switch path) with one
//! single-vCPU domain, a part of cluster gang `bench`: the same exact
//! time-triggered policy at the phase the group's name gives
//! ([`Policy::for_cluster_gang`]). The vCPU threads compute
//! ([`Workload::Busy`]) and pass their gate every few microseconds; the gate
//! traces say when each thread really started its slot, on
//! CLOCK_MONOTONIC, which every "host" here reads.
//!
//! * **aligned**: every runtime on the REALTIME clock from one base, cycle
//!   1 s (`clock="realtime" base=...`): the slots fall on the same instants
//!   of the shared clock;
//! * **own clocks**: the same runtimes, each host's table running from its
//!   own instant, anything within a period from host 0's (what hosts whose
//!   clocks are not synchronised get; modelled as a different base on the
//!   one clock every "host" here reads, to the nanosecond as real clocks
//!   differ, rather than as start times, which a pool rounds to its grain).
//!
//! For each slot of the first host, the distance to the nearest slot start
//! of every other host is its *cross-host co-start skew*; also reported is
//! each host's lateness (a slot's real start after its planned start) and
//! the host's noise before the run (what takes the CPUs from real-time
//! threads: the tail of the skew is there, not in the alignment).
//!
//! Invariants: every runtime is stopped and every thread joined before a
//! phase returns, on errors too; a run on a host that cannot run it says
//! why.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use gang_core::time::{SharedTime, WallClock};
use gang_core::{CpuId, CpuSet, DomainId, DomainSpec, Nanos, Policy, PoolConfig, VcpuRef, SEC};
use gang_host::gate::{SlotRun, VcpuControl};
use gang_host::runtime::HostError;
use gang_host::runtime::{Runtime, RuntimeConfig};
use gang_host::workload::{self, DomainState, VcpuEnv, Workload};

use crate::noise::{measure_noise, Noise, NOISE_WINDOW};

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The options cannot make a run.
    #[error("{0}")]
    Options(String),
    /// The host refused a runtime, a domain or a thread.
    #[error(transparent)]
    Host(#[from] HostError),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// One "host" per CPU.
    pub cpus: Vec<CpuId>,
    /// The cluster gang's time-triggered policy (made exact, phased by the
    /// group's name).
    pub policy: Policy,
    /// How long each phase runs.
    pub duration: Nanos,
    /// Phases to run (aligned and own clocks alternate).
    pub repeat: u32,
}

/// A distribution's summary, ns.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Dist {
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

impl Dist {
    /// The summary of `xs` (sorted here).
    pub fn of(mut xs: Vec<u64>) -> Dist {
        if xs.is_empty() {
            return Dist::default();
        }
        xs.sort_unstable();
        let at = |q: f64| xs[((xs.len() - 1) as f64 * q).round() as usize];
        Dist {
            n: xs.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: xs[xs.len() - 1],
        }
    }
}

/// One phase's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterPhase {
    /// `aligned` or `own-clocks`.
    pub kind: String,
    /// Cross-host co-start skew, ns.
    pub skew: Dist,
    /// Per host: its slots' lateness (real start after the planned one),
    /// ns.
    pub lateness: Vec<Dist>,
}

/// The whole run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterReport {
    /// The policy, as written in configs.
    pub policy: String,
    /// The hosts' CPUs.
    pub cpus: Vec<CpuId>,
    /// Each phase's length, ns.
    pub duration_ns: Nanos,
    /// Every phase, in the order run.
    pub phases: Vec<ClusterPhase>,
    /// The noise on the CPUs before each aligned phase.
    pub noise: Vec<Vec<Noise>>,
}

/// A slot as one host ran it: planned and real start, CLOCK_MONOTONIC ns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Start {
    planned: u64,
    real: u64,
}

/// Runs every phase. `progress` hears a line per phase.
pub fn run(
    opts: &ClusterOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<ClusterReport, ClusterError> {
    if opts.cpus.len() < 2 {
        return Err(ClusterError::Options(
            "bench-cluster needs two CPUs or more (one per host)".into(),
        ));
    }
    let mut phases = Vec::new();
    let mut noise = Vec::new();
    for round in 1..=opts.repeat {
        noise.push(measure_noise(&opts.cpus, 50, NOISE_WINDOW)?);
        for aligned in [true, false] {
            let kind = if aligned { "aligned" } else { "own-clocks" };
            progress(&format!(
                "round {round}/{}: {kind}, {} hosts, {:.1} s",
                opts.repeat,
                opts.cpus.len(),
                opts.duration as f64 / 1e9
            ));
            let starts = run_phase(opts, aligned, round)?;
            phases.push(summarise(kind, &starts));
        }
    }
    Ok(ClusterReport {
        policy: opts.policy.to_string(),
        cpus: opts.cpus.clone(),
        duration_ns: opts.duration,
        phases,
        noise,
    })
}

/// The skew and lateness of one phase's starts (one list per host).
fn summarise(kind: &str, starts: &[Vec<Start>]) -> ClusterPhase {
    let first: Vec<u64> = starts[0].iter().map(|s| s.real).collect();
    let mut skew = Vec::new();
    for other in &starts[1..] {
        let theirs: Vec<u64> = other.iter().map(|s| s.real).collect();
        skew.extend(nearest(&first, &theirs));
    }
    ClusterPhase {
        kind: kind.to_string(),
        skew: Dist::of(skew),
        lateness: starts
            .iter()
            .map(|s| Dist::of(s.iter().map(|x| x.real.saturating_sub(x.planned)).collect()))
            .collect(),
    }
}

/// For each time of `a` within the span both cover, the distance to the
/// nearest time of `b` (both sorted).
fn nearest(a: &[u64], b: &[u64]) -> Vec<u64> {
    let (Some(&a0), Some(&b0), Some(&a1), Some(&b1)) = (a.first(), b.first(), a.last(), b.last())
    else {
        return Vec::new();
    };
    let (lo, hi) = (a0.max(b0), a1.min(b1));
    a.iter()
        .filter(|&&t| t >= lo && t <= hi)
        .map(|&t| {
            let i = b.partition_point(|&u| u < t);
            [i.checked_sub(1), Some(i)]
                .into_iter()
                .flatten()
                .filter_map(|j| b.get(j))
                .map(|&u| u.abs_diff(t))
                .min()
                .unwrap_or(u64::MAX)
        })
        .collect()
}

/// A base that every host of the phase shares: a whole second, a minute
/// ago (any past instant would do).
fn shared_base() -> i64 {
    let now = gang_host::wallclock::now(&SharedTime {
        clock: WallClock::Realtime,
        base_ns: 0,
        cycle_ns: SEC,
        require_sync: false,
    });
    let whole = (now / i128::from(SEC) - 60) * i128::from(SEC);
    i64::try_from(whole).unwrap_or(0)
}

/// One phase: a runtime per CPU, one cluster-gang part each; returns each
/// host's slot starts (the first slot of each left out: it began when the
/// thread attached, inside the slot).
fn run_phase(
    opts: &ClusterOptions,
    aligned: bool,
    round: u32,
) -> Result<Vec<Vec<Start>>, ClusterError> {
    let base = shared_base();
    let grain = PoolConfig::new(CpuSet::from_iter([opts.cpus[0]])).grain;
    let policy = opts
        .policy
        .for_cluster_gang("bench", grain)
        .map_err(ClusterError::Options)?;
    let period = policy.timing().map_or(SEC, |t| t.period);
    let halt = Arc::new(AtomicBool::new(false));
    let mut hosts: Vec<(Arc<Runtime>, Arc<VcpuControl>)> = Vec::new();
    let mut threads = Vec::new();
    let mut result: Result<(), ClusterError> = Ok(());
    for (i, &cpu) in opts.cpus.iter().enumerate() {
        let mut config = RuntimeConfig::new(PoolConfig::new(CpuSet::from_iter([cpu])));
        config.name = format!("bench-cluster-{i}");
        // Hosts on their own clocks are as far apart as their clocks
        // happen to be: anything within a period (host 0 is the
        // reference). Modelled as each host's own base on the one clock
        // they all read here, to the nanosecond, as real clocks differ.
        let offset = if aligned || i == 0 {
            0
        } else {
            i64::try_from(own_clock_offset(round, i, period)).unwrap_or(0)
        };
        config.shared_time = Some(SharedTime {
            clock: WallClock::Realtime,
            base_ns: base + offset,
            cycle_ns: SEC,
            require_sync: false,
        });
        config.trace = true;
        let rt = match Runtime::start(config) {
            Ok(rt) => Arc::new(rt),
            Err(e) => {
                result = Err(e.into());
                break;
            }
        };
        let spec = DomainSpec {
            id: DomainId(1),
            vcpus: 1,
            cpu_map: Some(vec![cpu]),
            policy,
        };
        let ctl = match rt.add_domain(spec, false) {
            Ok(mut c) => c.remove(0),
            Err(e) => {
                stop(rt);
                result = Err(e.into());
                break;
            }
        };
        let env = VcpuEnv {
            control: Arc::clone(&ctl),
            clock: rt.clock(),
            log: None,
            deadline: Nanos::MAX,
            halt: Arc::clone(&halt),
        };
        let thread_rt = Arc::clone(&rt);
        threads.push(std::thread::spawn(move || -> Result<(), HostError> {
            env.control.attach_current_thread();
            let prepared = thread_rt.prepare_vcpu_thread(VcpuRef {
                domain: DomainId(1),
                vcpu: 0,
            });
            drop(thread_rt);
            prepared?;
            workload::run(Workload::Busy, &env, &DomainState::default(), 1);
            Ok(())
        }));
        hosts.push((rt, ctl));
    }
    if result.is_ok() {
        std::thread::sleep(std::time::Duration::from_nanos(opts.duration));
    }
    halt.store(true, Ordering::Release);
    for (_, c) in &hosts {
        c.stop();
    }
    for t in threads {
        match t.join() {
            Ok(Err(e)) if result.is_ok() => result = Err(e.into()),
            _ => {}
        }
    }
    let mut starts = Vec::new();
    for (rt, ctl) in hosts {
        let epoch = rt.clock().epoch();
        starts.push(real_starts(&ctl.trace(), epoch));
        stop(rt);
    }
    result.map(|()| starts)
}

/// How far host `i`'s own clock is from host 0's in `round`: anything
/// within a period, the same for the same inputs (a Weyl sequence on the
/// golden ratio).
fn own_clock_offset(round: u32, i: usize, period: Nanos) -> Nanos {
    let x = (u64::from(round) * 7 + i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((x >> 11) as f64 / (1u64 << 53) as f64 * period as f64) as Nanos
}

/// Each slot's first run, as CLOCK_MONOTONIC times (pool time + `epoch`);
/// the first slot left out.
fn real_starts(trace: &[SlotRun], epoch: u64) -> Vec<Start> {
    let mut out: Vec<Start> = Vec::new();
    for r in trace {
        if out.last().is_some_and(|s| s.planned == epoch + r.slot) {
            continue; // a later run in the same slot (after a preemption)
        }
        out.push(Start {
            planned: epoch + r.slot,
            real: epoch + r.start,
        });
    }
    out.into_iter().skip(1).collect()
}

fn stop(rt: Arc<Runtime>) {
    if let Ok(rt) = Arc::try_unwrap(rt) {
        drop(rt.stop());
    }
}

/// The report as a table: per phase kind, the median over rounds of each
/// figure, and the ratio own-clocks/aligned of the skew.
pub fn render(r: &ClusterReport) -> String {
    use std::fmt::Write as _;
    let us = |ns: u64| format!("{:.1}", ns as f64 / 1e3);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "gang bench-cluster: {} hosts (CPUs {:?}, one runtime each), cluster gang policy {}, \
         {:.1} s per phase, {} rounds",
        r.cpus.len(),
        r.cpus,
        r.policy,
        r.duration_ns as f64 / 1e9,
        r.noise.len()
    );
    let _ = writeln!(
        out,
        "{:<11} {:>6} {:>12} {:>12} {:>12} {:>16} {:>16}",
        "phase", "slots", "skew p50 us", "skew p99 us", "skew max us", "late p50 us", "late p99 us"
    );
    let median = |mut v: Vec<u64>| {
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    let mut skew_p50 = BTreeMap::new();
    for kind in ["aligned", "own-clocks"] {
        let ps: Vec<&ClusterPhase> = r.phases.iter().filter(|p| p.kind == kind).collect();
        if ps.is_empty() {
            continue;
        }
        for p in &ps {
            let late50: Vec<String> = p.lateness.iter().map(|d| us(d.p50)).collect();
            let late99: Vec<String> = p.lateness.iter().map(|d| us(d.p99)).collect();
            let _ = writeln!(
                out,
                "{:<11} {:>6} {:>12} {:>12} {:>12} {:>16} {:>16}",
                p.kind,
                p.skew.n,
                us(p.skew.p50),
                us(p.skew.p99),
                us(p.skew.max),
                late50.join("/"),
                late99.join("/")
            );
        }
        skew_p50.insert(kind, median(ps.iter().map(|p| p.skew.p50).collect()));
        let _ = writeln!(
            out,
            "{:<11} median over rounds: skew p50 {} us, p99 {} us",
            kind,
            us(skew_p50[kind]),
            us(median(ps.iter().map(|p| p.skew.p99).collect()))
        );
    }
    if let (Some(&a), Some(&o)) = (skew_p50.get("aligned"), skew_p50.get("own-clocks")) {
        let _ = writeln!(
            out,
            "own clocks / aligned, skew p50: {:.0}x",
            o as f64 / (a.max(1)) as f64
        );
    }
    for (i, n) in r.noise.iter().enumerate() {
        let cpus: Vec<String> = n
            .iter()
            .map(|x| {
                format!(
                    "CPU {}: {:.0}/s > 20 us, longest {} us",
                    x.cpu,
                    x.over_20us_per_s,
                    x.longest_ns / 1_000
                )
            })
            .collect();
        let _ = writeln!(out, "noise before round {}: {}", i + 1, cpus.join("; "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gang_core::MS;

    #[test]
    fn the_nearest_start_is_found_within_the_common_span() {
        // Only 20 and 30 lie in [12, 33], the span both cover.
        assert_eq!(nearest(&[10, 20, 30, 40], &[12, 19, 33]), vec![1, 3]);
        assert!(nearest(&[], &[1]).is_empty());
        assert!(nearest(&[5], &[]).is_empty());
    }

    #[test]
    fn own_clock_offsets_are_within_a_period_and_differ() {
        let ds: Vec<Nanos> = (1..5).map(|i| own_clock_offset(1, i, 10 * MS)).collect();
        assert!(ds.iter().all(|&d| d < 10 * MS), "{ds:?}");
        assert!(ds.windows(2).all(|w| w[0] != w[1]), "{ds:?}");
        assert_eq!(
            own_clock_offset(2, 1, 10 * MS),
            own_clock_offset(2, 1, 10 * MS)
        );
    }

    #[test]
    fn a_distribution_is_summarised_at_its_ranks() {
        let d = Dist::of((1..=100).collect());
        assert_eq!((d.n, d.p50, d.p99, d.max), (100, 51, 99, 100));
        assert_eq!(Dist::of(Vec::new()), Dist::default());
    }

    #[test]
    fn the_first_run_of_each_slot_is_its_start_and_the_first_slot_is_left_out() {
        let runs = [
            SlotRun {
                slot: 0,
                start: 5,
                end: 9,
            },
            SlotRun {
                slot: 100,
                start: 103,
                end: 110,
            },
            SlotRun {
                slot: 100,
                start: 115,
                end: 120,
            },
            SlotRun {
                slot: 200,
                start: 201,
                end: 220,
            },
        ];
        assert_eq!(
            real_starts(&runs, 1000),
            vec![
                Start {
                    planned: 1100,
                    real: 1103
                },
                Start {
                    planned: 1200,
                    real: 1201
                }
            ]
        );
    }

    #[test]
    fn skew_pairs_each_host_with_the_first() {
        let s = |v: &[u64]| {
            v.iter()
                .map(|&t| Start {
                    planned: t,
                    real: t,
                })
                .collect::<Vec<_>>()
        };
        let p = summarise("aligned", &[s(&[100, 200, 300]), s(&[101, 203, 300])]);
        // 100 is before the second host's first start: left out.
        assert_eq!(p.skew.n, 2);
        assert_eq!(p.skew.max, 3);
        assert_eq!(p.lateness.len(), 2);
    }
}
