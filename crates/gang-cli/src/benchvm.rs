//! `gang bench-vm`: the micro-VM benchmark (issue 5's figures): how fast a
//! vCPU leaves `KVM_RUN` when kicked, and how closely the two vCPUs of a VM
//! domain start their slots under a gang runtime; with `--qemu`, Linux
//! guests in QEMU under gang against the Linux scheduler
//! (`gang_bench::qemu`). The command line only: the benchmarks are
//! `gang_vmm::bench` and `gang_bench::qemu`.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use gang_core::time::parse_duration;
use gang_core::MS;

const LONG_ABOUT: &str = "\
Measure gang's micro-VMs on this machine (needs /dev/kvm; the co-start part \
needs root for real-time priorities and runs a gang pool on CPUs 0-1 in \
shared mode).

  kick latency   a vCPU thread spinning in the built-in `loop` guest is \
kicked (immediate_exit plus a signal, as the dispatcher does at the end of a \
slot); the time from sending the signal to KVM_RUN returning EINTR, p50/p99 \
over --kicks kicks
  co-start skew  a 2-vCPU `barrier` guest runs under a gang runtime for \
--gang-time alongside another; per slot, the spread between its two vCPUs \
passing their gates (just before re-entering KVM_RUN), p50/p99

Example: gang bench-vm --kicks 5000 --gang-time 5s

WITH --qemu: LINUX GUESTS IN QEMU, GANG AGAINST THE LINUX SCHEDULER

Boots Linux guests of 2 vCPUs in QEMU (the image of `gang guest-image \
linux`, built on first use into /var/tmp/gang-test-linux-image; TCG or KVM \
as `--accel` decides: auto uses KVM only where it runs guest code at native \
speed) with a workload of the image (`gang.workload=`): barrier (a spin \
barrier over the vCPUs, rounds/s) and pipes (processes ping-ponging through \
pipes, kernel-heavy, msgs/s). Per workload the largest guest count boots \
once; phases run on those guests, the ones a phase leaves out stopped over \
QMP, on CPUs 0-1:

  alone   guest 1 under the Linux scheduler: the ideal (N guests: alone/N each)
  linux   N guests under the Linux scheduler
  gang    N guests whose vCPU threads (from QMP) a gang runtime adopts,
          shared with the host, best-effort, equal weights

Each phase --duration long, after each guest's first report since the \
phase's change (it covers time before it); a guest's rate is the median of \
its per-second reports, a phase's the sum over its guests. All phases run \
--repeat times, interleaved (alone, linux N, gang N, ..., alone, ...); the \
table shows the median run of each: alone, linux and gang with their \
slowest and fastest guest, gang/linux, and % ideal = gang / alone. Each \
round first measures the host's noise (as `gang bench`) with every guest \
stopped, and below the table a line per workload says how much of CPUs 0-1 \
other processes and the hypervisor (steal) took during the windows: the \
linux and alone phases compete with them, the gang phases' real-time vCPUs \
mostly do not. --json keeps every run (`rounds_per_s`: each guest's rate in the \
workload's unit).

Needs root and qemu-system-x86_64. Every QEMU is stopped when the run ends, \
fails, panics or gets SIGINT/SIGTERM/SIGHUP, and the runtime gives the \
threads back.

Example: gang bench-vm --qemu --guests 2,3 --workloads barrier,pipes --repeat 3";

/// `gang bench-vm`.
#[derive(Debug, Args)]
#[command(about = "Measure micro-VM kick latency and co-start skew", long_about = LONG_ABOUT)]
pub struct BenchVmArgs {
    /// Kicks to time.
    #[arg(long, default_value_t = 2000)]
    kicks: usize,
    /// How long the gang part runs (0 skips it; bare number: ms).
    #[arg(long, default_value = "2s")]
    gang_time: String,
    /// Linux guests in QEMU, gang against the Linux scheduler (see below).
    #[arg(long, conflicts_with_all = ["kicks", "gang_time"])]
    qemu: bool,
    /// With --qemu: guest counts to compare, comma-separated.
    #[arg(long, default_value = "2,3", value_delimiter = ',', requires = "qemu")]
    guests: Vec<u32>,
    /// With --qemu: guest workloads, comma-separated (barrier, pipes).
    #[arg(
        long,
        default_value = "barrier,pipes",
        value_delimiter = ',',
        requires = "qemu"
    )]
    workloads: Vec<gang_bench::qemu::GuestWorkload>,
    /// With --qemu: rounds of all phases, interleaved; the table shows medians.
    #[arg(long, default_value_t = 3, requires = "qemu")]
    repeat: u32,
    /// With --qemu: the measured part of each phase (units: ms s; bare
    /// number: ms).
    #[arg(long, default_value = "4s", requires = "qemu")]
    duration: String,
    /// With --qemu: QEMU's accelerator (auto, kvm, tcg).
    #[arg(long, default_value = "auto", requires = "qemu")]
    accel: gang_qemu::accel::AccelSetting,
    /// With --qemu: also write every run as JSON to FILE (`-`: standard
    /// output, instead of the table).
    #[arg(long, value_name = "FILE", requires = "qemu")]
    json: Option<PathBuf>,
}

fn run_qemu(args: &BenchVmArgs) -> Result<()> {
    let opts = gang_bench::qemu::Options {
        guests: args.guests.clone(),
        workloads: args.workloads.clone(),
        repeat: args.repeat,
        duration: parse_duration(&args.duration, MS)
            .with_context(|| format!("--duration {}", args.duration))?,
        accel: args.accel,
    };
    let report = gang_bench::qemu::run(&opts, &mut |line| eprintln!("gang bench-vm: {line}"))?;
    crate::bench::report_out(
        args.json.as_deref(),
        &report.to_json(),
        &gang_bench::qemu::render(&report),
    )
}

pub fn run(args: &BenchVmArgs) -> Result<()> {
    if args.qemu {
        return run_qemu(args);
    }
    if args.kicks == 0 {
        bail!("--kicks 0: give at least one kick");
    }
    let gang = parse_duration(&args.gang_time, MS).context("--gang-time")?;
    let (Some(spin), Some(barrier)) = (gang_guests::image("loop"), gang_guests::image("barrier"))
    else {
        bail!("the built-in guest images are missing from this build");
    };
    let mut opts = gang_vmm::bench::BenchOptions::new(spin, barrier);
    opts.kicks = args.kicks;
    opts.gang_millis = gang / MS;
    let report = gang_vmm::bench::run(&opts)?;
    print!("{report}");
    Ok(())
}
