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
//! co-start skew, time received per period), [`sched_events`] (where
//! threads really ran: the kernel's scheduler events). The benchmarks that run on
//! top of it are the `gang-bench` crate.
//!
//! **Errors are returned or logged, never dropped.** An error that matters
//! to the caller is returned; an operation that is best effort (cleanup,
//! giving a thread its priority back, a thaw before a removal, a send to a
//! receiver that may be gone) goes through [`best_effort`], which says so in
//! the log. Logging is `tracing`; the real-time switch path logs only a
//! failure.

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
pub mod sched_events;
pub mod slot_stats;
pub mod wallclock;
pub mod workload;

/// Best effort, but say so: the result of an operation whose failure the
/// caller can go on without. Its error is logged at `warn`, after `what`
/// was attempted, instead of being dropped; the value, if any, is returned.
///
/// `what` is only formatted when there is an error to log: pass
/// `format_args!` for a message with values in it. On the real-time switch
/// path only where a failure is rare: nothing is done unless it fails.
pub fn best_effort<T, E: std::fmt::Display>(
    what: impl std::fmt::Display,
    result: Result<T, E>,
) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(e) => {
            tracing::warn!("{what}: {e} (best effort: going on)");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::best_effort;

    #[test]
    fn best_effort_gives_the_value_or_nothing() {
        assert_eq!(best_effort("adding", Ok::<_, String>(3)), Some(3));
        assert_eq!(
            best_effort(format_args!("removing {}", 7), Err::<u8, _>("gone")),
            None
        );
    }
}
