//! `gang bench-cluster`: cluster gangs on a shared clock against the same
//! pools on their own clocks (issue "Beyond one host"). The command line
//! only: the benchmark is `gang_bench::cluster`.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use gang_core::time::parse_duration;
use gang_core::{CpuSet, Policy, MS};

const LONG_ABOUT: &str = "\
Measure how closely gang pools of several hosts start a cluster gang's slots \
when their tables run on a shared clock, against the same pools on their own \
clocks, in the same run.

Each CPU of --cpus stands for one host: a gang runtime of its own (its own \
dispatcher, scheduler replica, epoch and event log, as separate daemons have) \
running one part of cluster gang `bench` (a single-vCPU domain computing \
without pause) with --policy made exact at the phase the group's name gives, \
as `gang_group = \"bench\"` does in a domain's config. Phases, each \
--duration long, alternate --repeat times:

  aligned     every host on the REALTIME clock from one base, cycle 1 s \
(cpupool-create ... clock=\"realtime\" base=... cycle=\"1s\"): the same slot \
at the same instant of the shared clock on every host
  own-clocks  every host's table from its own instant, anything within a \
period from the first host's (a different base per host, to the \
nanosecond): what hosts whose clocks are not synchronised get

The vCPU threads' gate traces say when each slot really started (on \
CLOCK_MONOTONIC, which every host here reads: the clock error of real hosts, \
PTP's sub-microsecond or chrony's tens of microseconds, adds to these figures). \
Per phase: the cross-host co-start skew (for each slot of the first host, the \
distance to the nearest slot start of each other host) p50/p99/max, and each \
host's lateness (real start after the planned one) p50/p99. Before each round, \
the host's noise on those CPUs (as `gang bench`): the tail of the skew is the \
host taking a CPU from a dispatcher, not the alignment.

Needs root (real-time priorities). Runs in shared mode: the host keeps its \
slot of every CPU. Nothing outlives the run.

Example: gang bench-cluster --cpus 0-1 --policy tt,10ms,4ms --duration 5s --repeat 3";

/// `gang bench-cluster`.
#[derive(Debug, Args)]
#[command(
    about = "Measure cluster gangs on a shared clock against hosts on their own clocks",
    long_about = LONG_ABOUT
)]
pub struct BenchClusterArgs {
    /// The hosts' CPUs, one host per CPU (xl's CPU list syntax).
    #[arg(long, default_value = "0-1")]
    cpus: String,
    /// The cluster gang's time-triggered policy, tt,PERIOD,ACTIVE; every
    /// period must divide the 1 s cycle.
    #[arg(long, default_value = "tt,10ms,4ms")]
    policy: String,
    /// Each phase's length (units: ms s; bare number: ms).
    #[arg(long, default_value = "3s")]
    duration: String,
    /// Rounds of both phases; the table shows each and their medians.
    #[arg(long, default_value_t = 3)]
    repeat: u32,
    /// Also write every phase as JSON to FILE (`-`: standard output,
    /// instead of the table).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

pub fn run(args: &BenchClusterArgs) -> Result<()> {
    let cpus = CpuSet::parse(&args.cpus, None).with_context(|| format!("--cpus {}", args.cpus))?;
    let policy: Policy = args
        .policy
        .parse()
        .with_context(|| format!("--policy {}", args.policy))?;
    let timing = policy
        .timing()
        .filter(|_| matches!(policy, Policy::TimeTriggered { .. }))
        .with_context(|| {
            format!(
                "--policy {}: a cluster gang needs tt,PERIOD,ACTIVE",
                args.policy
            )
        })?;
    if !gang_core::SEC.is_multiple_of(timing.period) {
        bail!(
            "--policy {}: the period must divide the shared clock's 1 s cycle",
            args.policy
        );
    }
    let duration = parse_duration(&args.duration, MS)
        .with_context(|| format!("--duration {}", args.duration))?;
    if duration < 10 * timing.period {
        bail!("--duration {}: give at least 10 periods", args.duration);
    }
    if args.repeat == 0 {
        bail!("--repeat 0: run at least one round");
    }
    let opts = gang_bench::cluster::ClusterOptions {
        cpus: cpus.iter().collect(),
        policy,
        duration,
        repeat: args.repeat,
    };
    let report =
        gang_bench::cluster::run(&opts, &mut |line| eprintln!("gang bench-cluster: {line}"))?;
    crate::bench::report_out(
        args.json.as_deref(),
        &report,
        &gang_bench::cluster::render(&report),
    )
}
