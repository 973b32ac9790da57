//! Many hosts, one bulk-synchronous job: what a shared clock buys a cluster
//! gang (issue 13, item 4, "scale by simulation").
//!
//! **What is modelled.** `hosts` hosts, each a real `gang_core::Scheduler`
//! for a pool of `cpus` CPUs running on its own clock. Every host runs
//! (a) one part of a bulk-synchronous job, a *cluster gang* of `cpus` vCPUs
//! whose exact time-triggered slot comes from
//! [`Policy::for_cluster_gang`] (default `tt,10ms,4ms`, phase from the group's
//! name), and (b) `local_domains` local domains drawn per host from a seeded
//! stream (TT gangs of random width, period and budget, refused ones dropped,
//! and BE gangs), so that no two hosts' tables are alike. Each host's
//! scheduler is driven boundary by boundary in its own pool time and the
//! intervals in which the job's part is dispatched are recorded; nothing else
//! is simulated at event level (the local domains matter only through the
//! decisions, which is all the job sees). The job's vCPUs compute or spin, so
//! they are always runnable.
//!
//! **Clocks.** A host's pool time is `true time + epoch + error(true time)`.
//! *Aligned* hosts share a clock (`gang_core::time::SharedTime`): the same
//! epoch (a cycle boundary) and an error held within `±E` by a servo (PTP,
//! chrony): at every sync (each `sync_interval`, at a random phase per host)
//! the error is set to a fresh draw, uniform in `±E`, and between syncs it
//! drifts at the host's residual rate (uniform in `±drift_ppb`), clamped at
//! `±E` (so `local = true·(1 + drift) + offset` between syncs). *Unaligned*
//! hosts are what a per-host gang scheduler without a shared clock gives:
//! each pool's epoch at a random point of a second, and the job as a plain
//! `tt,P,A` whose slot each host's own table places. The random draws are
//! common to every clock error (the error is a fixed per-host shape scaled by
//! `E`), so the modes are compared on the same hosts.
//!
//! **What is measured, in true time.** *Co-start skew*: for each slot start
//! of host 0 (away from the ends of the run), the spread (latest − earliest)
//! of every host's nearest slot start; p50, p99 and max over slots.
//! *Barrier rate*: the job computes a quantum of `quantum` CPU time per vCPU
//! in its slots, then meets a global barrier, which completes when every
//! host's part has done its quantum (the network costs nothing here, in every
//! mode); the next quantum starts then. Barriers per second are compared with
//! the ideal: every host's slots at the same true instants (host 0's alone).
//!
//! **Invariants.** A run is a pure function of the configuration (seed
//! included): one ChaCha8 stream per host and purpose, hosts simulated
//! independently (in parallel threads) and combined in host order. At clock
//! error 0 the aligned hosts' slots coincide exactly: skew 0 and 100% of the
//! ideal.
//!
//! **Figures** (`gang sim-cluster --hosts 64 --cpus 64 --seconds 4 --seed 1`,
//! release build, 0.4 s of wall time on one shared CPU pair: 64 hosts of 64
//! CPUs, job `tt,10ms,4ms,exact@3ms`, quantum 200 µs, 505 local domains over
//! the hosts, residual drift ±0.1 ppm, a sync every second):
//!
//! ```text
//! mode         error   skew p50   skew p99   skew max  barriers/s  % ideal
//! aligned          0          0          0          0      2000.0   100.0%
//! aligned        1us     1.98us     2.00us     2.00us      1999.8   100.0%
//! aligned       50us    99.41us    99.97us    99.97us      1994.8    99.7%
//! aligned        1ms     1.99ms     2.00ms     2.00ms      1099.2    55.0%
//! unaligned        -     9.63ms     9.63ms     9.63ms       162.2     8.1%
//! ```
//!
//! With 64 hosts the spread is nearly the full `2E` in every slot. A
//! quantum's slack absorbs skew shorter than itself (at `--quantum 20us`,
//! 50 µs costs 2.0% and 1 ms 49%); beyond it a barrier loses about the skew
//! from every slot. Without a shared clock the parts' slots are spread over
//! the whole period, and a quantum mostly waits a period for the last host:
//! 12 times fewer barriers than perfectly aligned hosts, 7 times fewer
//! than at 1 ms of error.

use std::thread;

use gang_core::engine::EngineError;
use gang_core::time::{floor_to, Duration};
use gang_core::{
    CpuSet, DomainId, DomainSpec, Event, Nanos, Periodic, Policy, PoolConfig, RunState, Scheduler,
    MS, SEC,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The name of the job's cluster gang: its phase derives from it.
pub const JOB_GROUP: &str = "bsp-job";

/// The job's domain id on every host; local domains follow it.
const JOB_ID: DomainId = DomainId(1);

/// Parts of a host's random stream, one ChaCha8 stream each.
const STREAM_LOAD: u64 = 0;
const STREAM_CLOCK: u64 = 1;
const STREAM_EPOCH: u64 = 2;

/// Resolution of the per-host unit draws (offsets, drift) in `[-1, 1]`.
const UNIT: i64 = 1_000_000;

/// What to simulate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Number of hosts.
    pub hosts: usize,
    /// CPUs of each host's pool; the job has this many vCPUs per host.
    pub cpus: u32,
    /// Simulated (true) time.
    pub duration: Nanos,
    /// Seed of every random choice.
    pub seed: u64,
    /// The job's period.
    pub job_period: Nanos,
    /// The job's slot in every period.
    pub job_active: Nanos,
    /// CPU time per vCPU between two barriers.
    pub quantum: Nanos,
    /// Local domains drawn per host (TT ones that do not fit are dropped).
    pub local_domains: usize,
    /// Bound of each host's residual clock drift, parts per billion: what
    /// is left of the oscillator's few ppm after the servo's frequency
    /// correction (2 ppm uncorrected would leave a 1 s sync interval 2 µs
    /// apart, more than a 1 µs bound).
    pub drift_ppb: u64,
    /// How often the clock servo resynchronises.
    pub sync_interval: Nanos,
    /// The pools' grain.
    pub grain: Nanos,
}

impl Default for ClusterConfig {
    /// 64 hosts of 64 CPUs for 4 s, job `tt,10ms,4ms`, quantum 200 µs, 8
    /// local domains, residual drift ±0.1 ppm, sync every second, 1 ms grain.
    fn default() -> Self {
        ClusterConfig {
            hosts: 64,
            cpus: 64,
            duration: 4 * SEC,
            seed: 1,
            job_period: 10 * MS,
            job_active: 4 * MS,
            quantum: 200 * gang_core::US,
            local_domains: 8,
            drift_ppb: 100,
            sync_interval: SEC,
            grain: MS,
        }
    }
}

/// How the hosts' clocks relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A shared clock, each host's error within `±clock_error`; the job's
    /// slot is exact.
    Aligned {
        /// The bound `E`.
        clock_error: Nanos,
    },
    /// No shared clock: random epochs, the job a plain TT domain.
    Unaligned,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Mode::Aligned { .. } => "aligned",
            Mode::Unaligned => "unaligned",
        })
    }
}

/// Skew of the job's slot starts across hosts, ns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Skew {
    /// Slots measured.
    pub slots: usize,
    /// Median spread.
    pub p50: Nanos,
    /// 99th percentile.
    pub p99: Nanos,
    /// Largest.
    pub max: Nanos,
}

/// The outcome of one mode.
#[derive(Debug, Clone, PartialEq)]
pub struct ModeReport {
    /// The mode.
    pub mode: Mode,
    /// Co-start skew.
    pub skew: Skew,
    /// Barriers completed within the run.
    pub barriers: u64,
    /// Barriers per second of simulated time.
    pub barriers_per_s: f64,
    /// Percentage of the ideal barrier rate.
    pub pct_of_ideal: f64,
}

/// A finished cluster simulation.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterReport {
    /// The job's policy on aligned hosts (exact, with its phase).
    pub job_policy: Policy,
    /// Local domains admitted, over all hosts (same in every mode).
    pub local_domains: usize,
    /// Scheduler decisions made, over all hosts and modes.
    pub decisions: u64,
    /// Barriers per second with every host's slots at the same instants.
    pub ideal_barriers_per_s: f64,
    /// One row per mode, in the order asked.
    pub modes: Vec<ModeReport>,
}

/// Why a cluster simulation could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// No hosts or no CPUs.
    #[error(
        "a cluster needs at least one host of at least one CPU (got {hosts} hosts of {cpus} CPUs)"
    )]
    Empty {
        /// Hosts asked for.
        hosts: usize,
        /// CPUs per host.
        cpus: u32,
    },
    /// A zero quantum, grain or sync interval, or a slot longer than its
    /// period.
    #[error("invalid job or clock parameter: {0}")]
    Parameter(String),
    /// The run must cover a few job periods to measure anything.
    #[error("simulated time {run} is shorter than three job periods ({period} each)")]
    TooShort {
        /// Simulated time.
        run: Duration,
        /// The job's period.
        period: Duration,
    },
    /// A host's scheduler refused the job's part or failed.
    #[error("host {host}: {source}")]
    Engine {
        /// The host.
        host: usize,
        /// The engine's error.
        source: EngineError,
    },
}

/// Runs every mode of `modes` on the cluster of `config`.
pub fn simulate_cluster(
    config: &ClusterConfig,
    modes: &[Mode],
) -> Result<ClusterReport, ClusterError> {
    validate(config)?;
    let c = config;
    let plain = Policy::TimeTriggered {
        timing: Periodic {
            from: 0,
            period: c.job_period,
            active: c.job_active,
        },
        space_filling: false,
        exact: false,
    };
    let exact = plain
        .for_cluster_gang(JOB_GROUP, c.grain)
        .map_err(ClusterError::Parameter)?;
    let any_unaligned = modes.contains(&Mode::Unaligned);
    let max_error = modes
        .iter()
        .map(|m| match *m {
            Mode::Aligned { clock_error } => clock_error,
            Mode::Unaligned => 0,
        })
        .max()
        .unwrap_or(0);
    if max_error > SEC {
        return Err(ClusterError::Parameter(format!(
            "a clock error of {} is beyond any servo's bound (at most 1s)",
            Duration(max_error)
        )));
    }
    let per_host = for_each_host(c.hosts, |host| {
        simulate_host(c, host, exact, any_unaligned.then_some(plain), max_error)
    })?;

    let ideal = barriers(
        &[true_intervals(
            &per_host[0].aligned,
            &per_host[0]
                .clock
                .scaled(0, Mode::Aligned { clock_error: 0 }),
            c.duration,
        )],
        c.quantum,
        c.duration,
    );
    let ideal_per_s = ideal as f64 / (c.duration as f64 / SEC as f64);
    let mut reports = Vec::with_capacity(modes.len());
    for &mode in modes {
        let intervals: Vec<Vec<(i64, i64)>> = per_host
            .iter()
            .map(|h| {
                let (local, bound) = match mode {
                    Mode::Aligned { clock_error } => (&h.aligned, clock_error),
                    Mode::Unaligned => (&h.unaligned, 0),
                };
                true_intervals(local, &h.clock.scaled(bound, mode), c.duration)
            })
            .collect();
        let done = barriers(&intervals, c.quantum, c.duration);
        let per_s = done as f64 / (c.duration as f64 / SEC as f64);
        reports.push(ModeReport {
            mode,
            skew: skew(&intervals, c.job_period, c.duration),
            barriers: done,
            barriers_per_s: per_s,
            pct_of_ideal: if ideal_per_s > 0.0 {
                100.0 * per_s / ideal_per_s
            } else {
                0.0
            },
        });
    }
    Ok(ClusterReport {
        job_policy: exact,
        local_domains: per_host.iter().map(|h| h.local_domains).sum(),
        decisions: per_host.iter().map(|h| h.decisions).sum(),
        ideal_barriers_per_s: ideal_per_s,
        modes: reports,
    })
}

fn validate(c: &ClusterConfig) -> Result<(), ClusterError> {
    if c.hosts == 0 || c.cpus == 0 {
        return Err(ClusterError::Empty {
            hosts: c.hosts,
            cpus: c.cpus,
        });
    }
    let bad = |what: &str| Err(ClusterError::Parameter(what.to_string()));
    if c.quantum == 0 {
        return bad("the quantum must be longer than 0");
    }
    if c.grain == 0 || c.sync_interval == 0 {
        return bad("the grain and the sync interval must be longer than 0");
    }
    if c.job_active == 0 || c.job_active > c.job_period {
        return bad("the job's slot must be longer than 0 and fit its period");
    }
    if c.duration < 3 * c.job_period {
        return Err(ClusterError::TooShort {
            run: Duration(c.duration),
            period: Duration(c.job_period),
        });
    }
    Ok(())
}

/// Runs `f` for every host on a few threads; results in host order, or the
/// first host's error.
fn for_each_host<T: Send>(
    hosts: usize,
    f: impl Fn(usize) -> Result<T, ClusterError> + Sync,
) -> Result<Vec<T>, ClusterError> {
    let workers = thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(hosts);
    let mut slots: Vec<Option<Result<T, ClusterError>>> = (0..hosts).map(|_| None).collect();
    thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                scope.spawn(move || {
                    (w..hosts)
                        .step_by(workers)
                        .map(|h| (h, f(h)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for handle in handles {
            match handle.join() {
                Ok(done) => {
                    for (h, r) in done {
                        slots[h] = Some(r);
                    }
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    slots
        .into_iter()
        .map(|r| r.unwrap_or_else(|| unreachable!("every host is simulated")))
        .collect()
}

/// What one host contributes: its job's dispatch intervals in pool time,
/// aligned and unaligned, and its clock's shape.
#[derive(Debug)]
struct HostRun {
    aligned: Vec<(Nanos, Nanos)>,
    unaligned: Vec<(Nanos, Nanos)>,
    clock: ClockShape,
    local_domains: usize,
    decisions: u64,
}

fn host_rng(seed: u64, host: usize, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(host as u64 * 3 + stream);
    rng
}

fn simulate_host(
    c: &ClusterConfig,
    host: usize,
    exact: Policy,
    unaligned_job: Option<Policy>,
    max_error: Nanos,
) -> Result<HostRun, ClusterError> {
    let locals = local_load(c, host);
    let clock = ClockShape::draw(c, host);
    // Enough pool time before and after the run for any clock error or slot
    // that straddles its ends.
    let margin = c.job_period + max_error + c.grain;
    let aligned = job_intervals(c, host, exact, &locals, clock.aligned_epoch, margin)?;
    let mut decisions = aligned.decisions;
    let unaligned = match unaligned_job {
        Some(plain) => {
            let run = job_intervals(c, host, plain, &locals, clock.random_epoch, margin)?;
            decisions += run.decisions;
            run.intervals
        }
        None => Vec::new(),
    };
    Ok(HostRun {
        aligned: aligned.intervals,
        unaligned,
        clock,
        local_domains: aligned.admitted,
        decisions,
    })
}

/// The local domains of a host: TT gangs (width a power of two, period 10,
/// 20, 50 or 100 ms, up to a fifth of it) and BE gangs, always runnable.
fn local_load(c: &ClusterConfig, host: usize) -> Vec<DomainSpec> {
    let mut rng = host_rng(c.seed, host, STREAM_LOAD);
    let widths = u32::BITS - c.cpus.leading_zeros(); // powers of two <= cpus
    (0..c.local_domains)
        .map(|i| {
            let vcpus = 1u32 << rng.random_range(0..widths);
            let policy = if rng.random_bool(0.6) {
                let period = [10, 20, 50, 100][rng.random_range(0..4)] * MS;
                let grains = (period / c.grain / 5).max(1);
                Policy::TimeTriggered {
                    timing: Periodic {
                        from: 0,
                        period,
                        active: rng.random_range(1..=grains) * c.grain,
                    },
                    space_filling: false,
                    exact: false,
                }
            } else {
                Policy::BestEffort {
                    weight: rng.random_range(64..=512),
                    space_filling: rng.random_bool(0.5),
                }
            };
            DomainSpec {
                id: DomainId(JOB_ID.0 + 1 + i as u32),
                vcpus,
                cpu_map: None,
                policy,
            }
        })
        .collect()
}

/// One host's scheduler driven over the run.
#[derive(Debug)]
struct JobRun {
    /// When the job's part was dispatched, in pool time.
    intervals: Vec<(Nanos, Nanos)>,
    /// Local domains admitted beside it.
    admitted: usize,
    /// Decisions made.
    decisions: u64,
}

/// Drives one host's scheduler from `epoch - margin` to `epoch + duration +
/// margin` (pool time) and returns the intervals in which the job's part is
/// dispatched, the local domains admitted and the decisions made.
fn job_intervals(
    c: &ClusterConfig,
    host: usize,
    job: Policy,
    locals: &[DomainSpec],
    epoch: Nanos,
    margin: Nanos,
) -> Result<JobRun, ClusterError> {
    let engine = |source| ClusterError::Engine { host, source };
    let mut pool = PoolConfig::new(CpuSet::first_n(c.cpus));
    pool.grain = c.grain;
    pool.be_slice = floor_to(pool.be_slice, c.grain).max(c.grain);
    let mut sched = Scheduler::new(pool).map_err(engine)?;
    let start = floor_to(epoch.saturating_sub(margin), c.grain);
    let end = epoch + c.duration + margin;
    sched
        .handle(
            start,
            Event::DomainAdded {
                spec: DomainSpec {
                    id: JOB_ID,
                    vcpus: c.cpus,
                    cpu_map: Some((0..c.cpus).collect()),
                    policy: job,
                },
                state: RunState::all_runnable(c.cpus, false),
            },
        )
        .map_err(engine)?;
    let mut admitted = 0;
    for spec in locals {
        let state = RunState::all_runnable(spec.vcpus, false);
        let event = Event::DomainAdded {
            spec: spec.clone(),
            state,
        };
        match sched.handle(start, event) {
            Ok(_) => admitted += 1,
            Err(EngineError::Refused(_)) => {} // does not fit beside the job: dropped
            Err(e) => return Err(engine(e)),
        }
    }
    let mut intervals = Vec::new();
    let mut running_since: Option<Nanos> = None;
    let mut now = start;
    while now < end {
        let decision = sched.handle(now, Event::Boundary).map_err(engine)?;
        let running = sched.dispatch_of(JOB_ID).is_some();
        match (running_since, running) {
            (None, true) => running_since = Some(now),
            (Some(since), false) => {
                intervals.push((since, now));
                running_since = None;
            }
            _ => {}
        }
        if decision.next <= now {
            break; // no further boundary: nothing changes any more
        }
        now = decision.next;
    }
    if let Some(since) = running_since {
        intervals.push((since, now.max(end)));
    }
    Ok(JobRun {
        intervals,
        admitted,
        decisions: sched.decisions_made(),
    })
}

/// A host's clock error, drawn once and scaled by the bound `E` of each
/// mode: offsets at each sync as units of `E`, a residual drift, and two
/// epochs (a shared cycle boundary, or a random point of a second).
#[derive(Debug, Clone)]
struct ClockShape {
    aligned_epoch: Nanos,
    random_epoch: Nanos,
    /// First sync, before true time 0.
    first_sync: i64,
    sync_interval: i64,
    /// Per sync, in units of `E / UNIT`.
    offset_units: Vec<i64>,
    drift_ppb: i64,
}

impl ClockShape {
    fn draw(c: &ClusterConfig, host: usize) -> ClockShape {
        let mut rng = host_rng(c.seed, host, STREAM_CLOCK);
        let interval = c.sync_interval as i64;
        let phase = rng.random_range(0..interval);
        let syncs = (c.duration as i64 + 2 * SEC as i64) / interval + 3;
        let offset_units = (0..syncs).map(|_| rng.random_range(-UNIT..=UNIT)).collect();
        let drift = c.drift_ppb as i64;
        let drift_ppb = rng.random_range(-drift..=drift);
        let mut epoch_rng = host_rng(c.seed, host, STREAM_EPOCH);
        ClockShape {
            aligned_epoch: SEC,
            random_epoch: SEC + epoch_rng.random_range(0..SEC),
            // Syncs at first_sync + k·interval; one falls in (-2 s, -1 s].
            first_sync: phase - SEC as i64 - interval,
            sync_interval: interval,
            offset_units,
            drift_ppb,
        }
    }

    /// This clock with its error bound and epoch for `mode`.
    fn scaled(&self, bound: Nanos, mode: Mode) -> Clock<'_> {
        Clock {
            shape: self,
            bound: bound as i64,
            epoch: match mode {
                Mode::Aligned { .. } => self.aligned_epoch as i64,
                Mode::Unaligned => self.random_epoch as i64,
            },
        }
    }
}

/// A host's clock in one mode: pool time = true + epoch + error(true).
#[derive(Debug, Clone, Copy)]
struct Clock<'a> {
    shape: &'a ClockShape,
    bound: i64,
    epoch: i64,
}

impl Clock<'_> {
    /// The error at true time `t`: the last sync's offset plus the drift
    /// since, held within `±bound`.
    fn error(&self, t: i64) -> i64 {
        if self.bound == 0 {
            return 0;
        }
        let s = self.shape;
        let k = (t - s.first_sync)
            .div_euclid(s.sync_interval)
            .clamp(0, s.offset_units.len() as i64 - 1);
        let since = t - (s.first_sync + k * s.sync_interval);
        let offset =
            i128::from(s.offset_units[k as usize]) * i128::from(self.bound) / i128::from(UNIT);
        let drift = i128::from(s.drift_ppb) * i128::from(since) / 1_000_000_000;
        (offset + drift).clamp(-i128::from(self.bound), i128::from(self.bound)) as i64
    }

    /// The true time at which this host's pool time reads `local`.
    fn true_of(&self, local: Nanos) -> i64 {
        let nominal = local as i64 - self.epoch;
        let mut t = nominal;
        for _ in 0..3 {
            t = nominal - self.error(t); // converges: the error moves at ppm rates
        }
        t
    }
}

/// The job's intervals of one host in true time, clipped to `[0, duration)`.
fn true_intervals(local: &[(Nanos, Nanos)], clock: &Clock<'_>, duration: Nanos) -> Vec<(i64, i64)> {
    let end = duration as i64;
    local
        .iter()
        .map(|&(a, b)| (clock.true_of(a).max(0), clock.true_of(b).min(end)))
        .filter(|&(a, b)| a < b)
        .collect()
}

/// The spread of the hosts' slot starts nearest to each of host 0's slot
/// starts in `[period, duration - period]`.
fn skew(intervals: &[Vec<(i64, i64)>], period: Nanos, duration: Nanos) -> Skew {
    let (lo, hi) = (period as i64, (duration - period) as i64);
    let starts: Vec<Vec<i64>> = intervals
        .iter()
        .map(|iv| iv.iter().map(|&(a, _)| a).collect())
        .collect();
    let mut spreads: Vec<Nanos> = starts[0]
        .iter()
        .filter(|&&r| (lo..=hi).contains(&r))
        .map(|&r| {
            let (mut min, mut max) = (i64::MAX, i64::MIN);
            for host in &starts {
                let i = host.partition_point(|&s| s < r);
                let nearest = [i.checked_sub(1), Some(i)]
                    .into_iter()
                    .flatten()
                    .filter_map(|j| host.get(j))
                    .min_by_key(|&&s| (s - r).abs());
                if let Some(&s) = nearest {
                    min = min.min(s);
                    max = max.max(s);
                }
            }
            (max - min) as Nanos
        })
        .collect();
    spreads.sort_unstable();
    let rank = |q: f64| {
        let n = spreads.len();
        spreads[((q * n as f64).ceil() as usize).clamp(1, n) - 1]
    };
    if spreads.is_empty() {
        return Skew::default();
    }
    Skew {
        slots: spreads.len(),
        p50: rank(0.5),
        p99: rank(0.99),
        max: rank(1.0),
    }
}

/// Barriers completed by `duration`: each quantum starts on every host when
/// the last barrier completed and runs in that host's intervals; a barrier
/// completes when the last host finishes its quantum.
fn barriers(intervals: &[Vec<(i64, i64)>], quantum: Nanos, duration: Nanos) -> u64 {
    let quantum = quantum as i64;
    let mut cursors = vec![0usize; intervals.len()];
    let mut barrier = 0i64;
    let mut done = 0;
    'run: loop {
        let mut last = barrier;
        for (host, iv) in intervals.iter().enumerate() {
            let cursor = &mut cursors[host];
            let mut need = quantum;
            let mut finished = None;
            while let Some(&(a, b)) = iv.get(*cursor) {
                let from = a.max(barrier);
                if from < b {
                    if b - from >= need {
                        finished = Some(from + need);
                        break;
                    }
                    need -= b - from;
                }
                *cursor += 1;
            }
            match finished {
                Some(t) => last = last.max(t),
                None => break 'run,
            }
        }
        if last > duration as i64 {
            break;
        }
        barrier = last;
        done += 1;
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barriers_wait_for_the_slowest_host() {
        // One host alone: 4 quanta of 1 in [0, 4), 4 more in [10, 14).
        let one = vec![(0, 4), (10, 14)];
        assert_eq!(barriers(std::slice::from_ref(&one), 1, 20), 8);
        // A second host shifted by 1: each quantum waits for it, and a
        // quantum straddling its slot's end finishes in the next slot.
        let shifted = vec![(1, 5), (11, 15)];
        assert_eq!(barriers(&[one.clone(), shifted], 1, 20), 7);
        // Disjoint slots: a quantum needs a slot of each host in turn.
        let disjoint = vec![(5, 9), (15, 19)];
        assert_eq!(barriers(&[one, disjoint], 1, 20), 3);
    }

    #[test]
    fn skew_is_the_spread_of_the_nearest_starts() {
        let hosts = vec![
            vec![(10, 14), (20, 24), (30, 34)],
            vec![(12, 16), (19, 23), (30, 34)],
        ];
        let s = skew(&hosts, 10, 40);
        assert_eq!((s.slots, s.p50, s.p99, s.max), (3, 1, 2, 2));
    }

    #[test]
    fn a_clock_stays_within_its_bound_and_maps_back() {
        let c = ClusterConfig {
            drift_ppb: 50_000,
            ..ClusterConfig::default()
        };
        let shape = ClockShape::draw(&c, 3);
        let clock = shape.scaled(
            50_000,
            Mode::Aligned {
                clock_error: 50_000,
            },
        );
        for t in (0..4 * SEC as i64).step_by(7_777_777) {
            let e = clock.error(t);
            assert!(e.abs() <= 50_000, "error {e} at {t}");
            let local = (t + clock.epoch + e) as Nanos;
            assert!((clock.true_of(local) - t).abs() <= 1, "maps back at {t}");
        }
        assert_eq!(shape.scaled(0, Mode::Unaligned).error(123), 0);
    }
}
