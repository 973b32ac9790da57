//! `gang bench-slurm`: two bulk-synchronous jobs sharing one node under
//! Slurm, with no gang scheduling, with Slurm's own and with gang's, in one
//! run. The command line only: the benchmark is `gang_bench::slurm`.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use gang_core::time::parse_duration;
use gang_core::MS;

const LONG_ABOUT: &str = "\
Measure what gang gives bulk-synchronous jobs that share a node under Slurm, \
against Slurm's own gang scheduling and against none, in one run.

WHAT IS MEASURED

Two jobs, each `sbatch -n 1 -c CPUS --wrap 'gang workload program --workers \
CPUS --work WORK'` (in the gang mode the program is a step of the batch \
script, `srun -n 1 -c CPUS --gang=POLICY gang workload ...`: gang's plugin \
makes steps domains): CPUS ranks (threads) that compute WORK and then meet at a spin \
barrier, over and over, as MPI ranks do; progress is rounds (barriers \
passed) per second. CPUS is this node's CPU count, so the two jobs want \
twice the node. The work loop's speed is measured once, by the bench, and \
passed to every job (--iterations-per-us), so that a round is the same work \
in every job and mode. Modes, each --duration long once both jobs have started:

  alone       one job on the node: R rounds/s, the ideal (two jobs sharing
              the node ideally get R/2 each, R together)
  linux       two jobs at once (partition OverSubscribe=FORCE:2), no gang
              scheduling: the Linux scheduler shares the CPUs
  slurm-gang  Slurm's gang scheduling: PreemptMode=GANG,
              SchedulerTimeSlice=--slice seconds (5, Slurm's shortest),
              OverSubscribe=FORCE:2: Slurm suspends and resumes whole jobs
  gang        as linux, each job's step started with srun --gang=--policy:
              a gang domain of the node's gang pool (gang's SPANK plugin)

The report gives per mode each job's rounds/s, their sum and the sum's share \
of the ideal (% ideal = sum / R), the medians over --repeat repeats, the \
ratios gang/slurm-gang, gang/linux and slurm-gang/linux per repeat and their \
medians, every run with the share of its window in which both, one or \
neither job could run (its step's freezer cgroup thawed and none of its \
processes stopped, sampled every 50 ms: what Slurm's and gang's suspending \
actually did), the exact configuration, and \
the load average before and \
after (this is a real machine shared with other work: compare ratios within \
a run, not figures across runs). Progress is printed on standard error.

HOW

A private one-node Slurm cluster in a temporary directory \
(contrib/slurm/test-cluster.sh, built into gang; its own munged, slurmctld \
and slurmd, nothing in /etc), gang's SPANK plugin (contrib/slurm/gang_spank.c, \
compiled with cc) loaded into it, and a private gang daemon (its own state \
directory and socket there) with a gang pool over every CPU shared with the \
host. Every repeat runs the four modes one after another (the order reversed \
every other repeat), the cluster reconfigured between them as needed. A job's \
rate is its progress between the window's ends, from its reports every 100 ms \
(each stamped with the CLOCK_MONOTONIC time it was due, so that a frozen job's \
late reports still count at the right time), over the window's length.

The cluster is taken down (`test-cluster.sh down`: jobs killed, Slurm's \
cgroups removed) and the daemon stopped when the run ends, fails, panics, or \
gets SIGINT, SIGTERM or SIGHUP; only a SIGKILL of gang itself leaves them \
(then run `test-cluster.sh down DIR` on the directory it printed).

Needs root, the cgroup v1 freezer, and Debian's slurm-wlm, munge, \
libslurm-dev and gcc (contrib/install-host-packages.sh). Takes about \
repeat x (4 x duration + 40 s).

Example: gang bench-slurm --duration 20s --repeat 3
         gang bench-slurm --policy tt,10ms,4ms --slice 5 --work 200us";

/// `gang bench-slurm`.
#[derive(Debug, Args)]
#[command(
    about = "Two bulk-synchronous jobs under Slurm: no gang, Slurm's gang scheduling, gang",
    long_about = LONG_ABOUT
)]
pub struct BenchSlurmArgs {
    /// The measured window of each mode (units: ms s m; bare number: ms).
    #[arg(long, default_value = "20s")]
    duration: String,
    /// Repeats of all modes; the report shows medians.
    #[arg(long, default_value_t = 3)]
    repeat: u32,
    /// Slurm's SchedulerTimeSlice in seconds for the slurm-gang mode (5 is
    /// Slurm's minimum).
    #[arg(long, default_value_t = gang_bench::slurm::MIN_SLICE_S)]
    slice: u32,
    /// The gang mode's `srun --gang=` policy (gang sched-gang -t syntax:
    /// tt,PERIOD,ACTIVE | et,PERIOD,ACTIVE[,sf] | be,WEIGHT).
    #[arg(long, default_value = "be,256")]
    policy: String,
    /// Compute per round, per rank (units: us ms; bare number: ms).
    #[arg(long, default_value = "200us")]
    work: String,
    /// Also write the report as JSON to FILE (`-`: standard output, instead
    /// of the table).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

pub fn run(args: &BenchSlurmArgs) -> Result<()> {
    let opts = gang_bench::slurm::Options {
        gang: std::env::current_exe().context("finding the gang binary")?,
        duration: parse_duration(&args.duration, MS)
            .with_context(|| format!("--duration {}", args.duration))?,
        repeat: args.repeat,
        slice_s: args.slice,
        policy: args.policy.clone(),
        work: parse_duration(&args.work, MS).with_context(|| format!("--work {}", args.work))?,
    };
    let started = std::time::Instant::now();
    let report = gang_bench::slurm::run(&opts, &mut |line| {
        eprintln!(
            "gang bench-slurm: [{:6.1}s] {line}",
            started.elapsed().as_secs_f64()
        );
    })?;
    crate::bench::report_out(
        args.json.as_deref(),
        &report,
        &gang_bench::slurm::render(&report),
    )
}
