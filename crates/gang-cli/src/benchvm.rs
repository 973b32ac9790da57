//! `gang bench-vm`: the micro-VM benchmark (issue 5's figures): how fast a
//! vCPU leaves `KVM_RUN` when kicked, and how closely the two vCPUs of a VM
//! domain start their slots under a gang runtime.

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

Example: gang bench-vm --kicks 5000 --gang-time 5s";

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
}

pub fn run(args: &BenchVmArgs) -> Result<()> {
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
