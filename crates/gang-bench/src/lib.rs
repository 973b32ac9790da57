//! # gang-bench: the benchmarks on real CPUs
//!
//! The applications that measure the runtime rather than the runtime
//! itself: `gang bench` (spin-barrier domains alone, under the Linux
//! scheduler and under the gang runtime, side by side on the same CPUs),
//! `gang bench-vm --qemu` (Linux guests in QEMU, gang against the Linux
//! scheduler), `gang bench-cluster` ([`cluster`]: pools of several
//! "hosts" on a shared clock against their own clocks) and `gang
//! bench-slurm` (two bulk-synchronous jobs sharing a node under Slurm:
//! Slurm's own gang scheduling against `gang`'s). The `gang` binary keeps
//! only their command lines.
//!
//! Modules: [`phases`] (the phases on this process's threads, and [`run`],
//! which runs them all), [`processes`] (the phases of adopted processes and
//! whole programs), [`noise`] (the host's interruptions of the pool CPUs,
//! shared by both benchmarks), [`report`] (what was measured, and the
//! `gang bench` table), [`qemu`] (`gang bench-vm --qemu`), [`slurm`] (`gang
//! bench-slurm`). What the gate traces say (co-start skew, TT accuracy,
//! [`Spread`]) is `gang_host::slot_stats`, which the runtime's own tests
//! read too.
//!
//! Invariant kept by every module: nothing a benchmark starts outlives it
//! (threads, processes, QEMUs, runtimes, cpuset shields, freezer cgroups,
//! state directories, the lifted real-time limit), on errors too.

pub mod cluster;
pub mod noise;
pub mod phases;
pub mod processes;
pub mod qemu;
pub mod report;
mod signals;
pub mod slurm;

pub use gang_host::slot_stats::Spread;
pub use noise::{measure_noise, render_noise, Noise, NOISE_WINDOW};
pub use phases::{run, BenchConfig, SpawnProgram, SpawnSpinner};
pub use report::{medians, render, BenchReport, Phase};
