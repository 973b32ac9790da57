//! # gang-host: gang schedules on real CPUs
//!
//! The host runtime applies gang-core's decisions to real threads in real
//! time. One dispatcher thread per pool CPU, pinned to it and running with
//! real-time priority, holds its own replica of the pool's scheduler; all
//! replicas are fed the same events at the same effect times through a shared
//! log, so they make the same decisions with no message between CPUs on the
//! switch path (the seed's replicated design). At each boundary a dispatcher
//! closes the gate of its CPU's outgoing vCPU and opens the incoming one's.
//!
//! Modules: [`sys`] (the system calls), [`clock`] (pool time, precise waits),
//! [`gate`] (futex gates and per-thread traces), [`log`] (the replicated event
//! log), [`proc`] (the one reader of `/proc/PID` files), [`runtime`]
//! (dispatchers and the control API), [`adopt`] (another process's threads
//! as vCPUs), [`group`] (every task of a cgroup, a whole
//! program, as one gang), [`wallclock`] (pools on a clock shared with other
//! hosts, and the host's clock status), [`workload`] (the simulator's
//! workloads on real threads), [`slot_stats`] (what the gate traces say:
//! co-start skew, time received per period). The benchmarks that run on
//! top of it are the `gang-bench` crate.

#[allow(unsafe_code)]
pub mod sys;

pub mod adopt;
pub mod cgroup;
pub mod claim;
pub mod clock;
pub mod gate;
pub mod group;
pub mod log;
pub mod proc;
pub mod rtlimit;
pub mod runtime;
pub mod slot_stats;
pub mod wallclock;
pub mod workload;
