//! `gang bench`: the gang runtime against the Linux scheduler on real CPUs.
//! The command line only (its options, checks and help text, and how the
//! benchmark starts this binary's `gang workload` processes); the
//! benchmark is `gang_bench`.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use gang_bench::BenchConfig;
use gang_core::time::parse_duration;
use gang_core::{CpuSet, MS};

const LONG_ABOUT: &str = "\
Measure gang scheduling on this host's real CPUs against the Linux \
scheduler, side by side in one run, with spin-barrier domains (one vCPU \
thread per CPU, compute `--work`, then spin until every vCPU of the domain \
arrives: fine-grain synchronisation, as in a guest kernel's TLB shoot-downs \
or a parallel program's barriers).

PHASES (each --duration long, on the same CPUs)

  noise     first in every round, 0.3 s: a SCHED_FIFO thread spinning on
            each CPU counts how often and how long the host takes the CPU
            away (interrupts, higher kernel classes, a hypervisor): the
            floor under any co-start skew's tail, printed below the table
  alone     one domain, no runtime: the ideal (ideal for N domains = alone / N)
  linux     N domains, threads pinned to the CPUs, scheduled by Linux (SCHED_OTHER)
  gang-be   N domains under the gang runtime, best-effort with equal weights
  gang-adopt  N `gang workload spin-barrier` processes whose threads the
            runtime adopts (gated from outside with freezer cgroups),
            best-effort; skew from the threads' own resume timestamps
            (skip with --no-adopted)
  program-alone  one whole program (`gang workload program`: a sleeping
            main thread and one spin-barrier worker per CPU, all threads
            named `program`, nothing pinned), its affinity the pool's CPUs
            (the ideal for whole programs; skip these three with --no-program)
  program-linux  N such programs under the Linux scheduler
  gang-program   N such programs, each in a freezer cgroup adopted as a
            group (every task runs only in its domain's slots, on its CPUs,
            at its own policy), best-effort with equal weights; vs linux
            and % ideal against program-linux and program-alone (shared
            CPUs only)
  gang-tt   N domains under the gang runtime, time-triggered slots
            (period N x --tt-slot, active: the largest whole number of grains
            that keeps the pool's 10% best-effort reservation and the
            host's slot)

COLUMNS

  rounds/s/dom   barrier rounds per second, mean over the domains
  vs linux       gang / linux for the same N
  % ideal        rounds/s over (alone / N)
  skew           co-start skew: first to last vCPU of a gang passing its gate
                 in the same slot (p50/p99/max, microseconds); for adopted
                 threads, their first resumption in each slot the runtime
                 started (a pause inside a slot is not a start)
  effic.         time the domains' vCPUs ran / pool CPU time, and / the pool
                 CPU time left to gangs (without the host's slot, ~8%, that
                 shared mode keeps so that host tasks run at known times)
  TT recv/act    time a TT gang ran per period / active (p1/p50/p99)
  late p99       how late dispatchers made their switches (p99)

Every phase runs --repeat times, interleaved with the others; each row's \
rate and efficiency are the run with the median rate, with the lowest and \
highest rates beside it; its skew, TT and lateness percentiles are the \
medians of every run's percentiles, and max the largest of all runs; \
--json keeps every run.

Needs root (real-time priorities). The pool CPUs stay shared with the host \
(isolation: Shared); gang threads use SCHED_FIFO and nothing is left behind: \
every thread the benchmark starts ends with it.";

/// Arguments of `gang bench`.
#[derive(Debug, Args)]
#[command(about = "Measure gang scheduling against the Linux scheduler on real CPUs", long_about = LONG_ABOUT)]
pub struct BenchArgs {
    /// CPUs to use (xl CPU list); one vCPU of each domain per CPU.
    #[arg(long, default_value = "0-1")]
    cpus: String,
    /// Numbers of domains to compare, comma-separated.
    #[arg(long, default_value = "2,3", value_delimiter = ',')]
    domains: Vec<u32>,
    /// Length of each phase (units: us ms s; bare number: ms).
    #[arg(long, default_value = "1s")]
    duration: String,
    /// Spin-barrier work per round.
    #[arg(long, default_value = "1us")]
    work: String,
    /// Pool grain.
    #[arg(long, default_value = "1ms")]
    grain: String,
    /// Best-effort slice.
    #[arg(long, default_value = "10ms")]
    be_slice: String,
    /// Time-triggered slot per domain.
    #[arg(long, default_value = "10ms")]
    tt_slot: String,
    /// Skip the gang-adopt phases (they start `gang workload` processes).
    #[arg(long)]
    no_adopted: bool,
    /// Skip the whole-program phases (program-alone, program-linux,
    /// gang-program; they start `gang workload program` processes).
    #[arg(long)]
    no_program: bool,
    /// Take the pool CPUs from the host (a cpuset shield per phase, no host
    /// slot) instead of sharing them; the host keeps its other CPUs, so on a
    /// 2-CPU machine use --cpus 1.
    #[arg(long)]
    exclusive: bool,
    /// With --exclusive: lift the kernel's real-time limit
    /// (kernel.sched_rt_runtime_us = -1) during gang phases, restored after
    /// (and after a crash), and keep a 1% host slot instead of 8% (shared
    /// CPUs need the 8% for the host's own tasks).
    #[arg(long)]
    rt_unlimited: bool,
    /// Spin this long before every switch instead of learning how long from
    /// the dispatchers' measured wake-up latency (20-150 us); for comparing
    /// the two (units: us ms s; bare number: us).
    #[arg(long, value_name = "DURATION")]
    spin: Option<String>,
    /// Run all phases this many times, interleaved; the table shows the
    /// median of each phase (the machines are noisy).
    #[arg(long, default_value_t = 3)]
    repeat: u32,
    /// Also write the results as JSON to FILE (`-`: standard output).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// Starts this binary as `gang workload KIND --json ARGS...` for `duration`
/// with `work` per round, reporting every 20 ms on a pipe.
fn spawn_workload(
    kind_and_args: &[&str],
    work: gang_core::Nanos,
    duration: gang_core::Nanos,
) -> std::io::Result<std::process::Child> {
    std::process::Command::new(std::env::current_exe()?)
        .arg("workload")
        .args(kind_and_args)
        .args(["--json", "--work", &format!("{work}ns")])
        .args([
            "--duration",
            &format!("{duration}ns"),
            "--report-every",
            "20ms",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
}

/// `gang workload spin-barrier`, for the gang-adopt phases.
fn spawn_spinner(
    threads: u32,
    work: gang_core::Nanos,
    duration: gang_core::Nanos,
) -> std::io::Result<std::process::Child> {
    let threads = threads.to_string();
    let args = [
        "spin-barrier",
        "--resume-gap",
        "150us",
        "--threads",
        &threads,
    ];
    spawn_workload(&args, work, duration)
}

/// `gang workload program`, for the whole-program phases.
fn spawn_program(
    workers: u32,
    work: gang_core::Nanos,
    duration: gang_core::Nanos,
) -> std::io::Result<std::process::Child> {
    spawn_workload(
        &["program", "--workers", &workers.to_string()],
        work,
        duration,
    )
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let cpus = CpuSet::parse(&args.cpus, None).with_context(|| format!("--cpus {}", args.cpus))?;
    if args.rt_unlimited && !args.exclusive {
        bail!("--rt-unlimited applies to --exclusive pools (shared CPUs keep 8% for the host's tasks)");
    }
    // One CPU only measures dispatching (domains of one vCPU): allowed with
    // --exclusive, for hosts with too few CPUs to give a gang away.
    if cpus.len() < 2 && !args.exclusive {
        bail!(
            "--cpus {}: a gang needs at least 2 CPUs (with --exclusive, one CPU measures \
             dispatch efficiency with domains of one vCPU)",
            args.cpus
        );
    }
    if args.domains.is_empty() || args.domains.contains(&0) {
        bail!("--domains: give domain counts of at least 1");
    }
    let time =
        |text: &str, flag: &str| parse_duration(text, MS).with_context(|| format!("{flag} {text}"));
    let spin = match &args.spin {
        Some(text) => {
            let ns = parse_duration(text, 1_000).with_context(|| format!("--spin {text}"))?;
            if ns > 250_000 {
                bail!("--spin {text}: at most 250us (dispatchers decide 300us before a switch)");
            }
            Some(ns)
        }
        None => None,
    };
    let config = BenchConfig {
        cpus: cpus.iter().collect(),
        counts: args.domains.clone(),
        duration: time(&args.duration, "--duration")?,
        work: time(&args.work, "--work")?,
        grain: time(&args.grain, "--grain")?,
        be_slice: time(&args.be_slice, "--be-slice")?,
        tt_slot: time(&args.tt_slot, "--tt-slot")?,
        repeat: args.repeat.max(1),
        spawn_spinner: (!args.no_adopted).then_some(spawn_spinner as gang_bench::SpawnSpinner),
        spawn_program: (!args.no_program).then_some(spawn_program as gang_bench::SpawnProgram),
        lift_rt_limit: args.rt_unlimited,
        spin,
        isolation: if args.exclusive {
            gang_host::runtime::Isolation::Exclusive
        } else {
            gang_host::runtime::Isolation::Shared
        },
    };
    if !gang_host::sys::is_root() {
        bail!("needs root: the runtime uses real-time priorities");
    }
    let report = gang_bench::run(&config, |line| eprintln!("gang bench: {line}"))?;
    report_out(args.json.as_deref(), &report, &gang_bench::render(&report))
}

/// How every benchmark command ends: its report as JSON to `json` if
/// given (`-`: standard output, instead of the table), and the table on
/// standard output.
pub fn report_out(
    json: Option<&std::path::Path>,
    report: &impl serde::Serialize,
    table: &str,
) -> Result<()> {
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(report).context("encoding JSON")?;
        if path.as_os_str() == "-" {
            println!("{text}");
            return Ok(());
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    print!("{table}");
    Ok(())
}
