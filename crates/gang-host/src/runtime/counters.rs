//! Running totals of what a runtime's dispatchers did, for monitoring
//! (the daemon's metrics endpoint): switches made, switches made late,
//! their total lateness, gate violations, and how the pool's CPU time went
//! (to domains, to the host's slot, idle; a slot counts when it ends). Dispatchers add with relaxed
//! atomics on their switch path (one `fetch_add` each, no lock); readers
//! take a [`CounterSnapshot`]. Totals only grow while the runtime lives.

use std::sync::atomic::{AtomicU64, Ordering};

use gang_core::{Nanos, VcpuRef};

use super::HOST_DOMAIN;

/// A switch made more than this after its boundary counts as late (the
/// dispatchers' own lead is tens of microseconds; a switch this late means
/// the host took the CPU from the dispatcher).
pub const LATE_SWITCH_NS: Nanos = 100_000;

/// The totals, shared by the runtime's dispatchers.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    switches: AtomicU64,
    late_switches: AtomicU64,
    late_ns: AtomicU64,
    violations: AtomicU64,
    domains_ns: AtomicU64,
    host_ns: AtomicU64,
    idle_ns: AtomicU64,
}

/// The totals at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Boundaries at which a dispatcher switched its CPU (idle included).
    pub switches: u64,
    /// Of those, the ones made more than [`LATE_SWITCH_NS`] late.
    pub late_switches: u64,
    /// The lateness of all switches together, ns.
    pub late_ns: u64,
    /// vCPU threads found still running long after their gate closed (and
    /// demoted).
    pub violations: u64,
    /// CPU time the dispatchers gave domains' vCPUs, ns (all CPUs).
    pub domains_ns: u64,
    /// CPU time in the host's slot, ns.
    pub host_ns: u64,
    /// CPU time with nothing dispatched, ns.
    pub idle_ns: u64,
}

impl Counters {
    /// A dispatcher made a switch `late` ns after its boundary.
    pub(crate) fn switched(&self, late: Nanos) {
        self.switches.fetch_add(1, Ordering::Relaxed);
        self.late_ns.fetch_add(late, Ordering::Relaxed);
        if late > LATE_SWITCH_NS {
            self.late_switches.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A dispatcher's CPU went to `vcpu` (None: idle) for `ns`.
    pub(crate) fn held(&self, vcpu: Option<VcpuRef>, ns: Nanos) {
        let total = match vcpu {
            None => &self.idle_ns,
            Some(v) if v.domain == HOST_DOMAIN => &self.host_ns,
            Some(_) => &self.domains_ns,
        };
        total.fetch_add(ns, Ordering::Relaxed);
    }

    /// A dispatcher found a gate violation.
    pub(crate) fn violated(&self) {
        self.violations.fetch_add(1, Ordering::Relaxed);
    }

    /// The totals now.
    pub(crate) fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            switches: self.switches.load(Ordering::Relaxed),
            late_switches: self.late_switches.load(Ordering::Relaxed),
            late_ns: self.late_ns.load(Ordering::Relaxed),
            violations: self.violations.load(Ordering::Relaxed),
            domains_ns: self.domains_ns.load(Ordering::Relaxed),
            host_ns: self.host_ns.load(Ordering::Relaxed),
            idle_ns: self.idle_ns.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_switches_are_those_beyond_the_threshold_and_cpu_time_goes_where_it_was_held() {
        let c = Counters::default();
        c.switched(10);
        c.switched(LATE_SWITCH_NS);
        c.switched(LATE_SWITCH_NS + 1);
        c.violated();
        let v = |domain| VcpuRef {
            domain: gang_core::DomainId(domain),
            vcpu: 0,
        };
        c.held(Some(v(3)), 7);
        c.held(Some(v(0)), 5);
        c.held(None, 2);
        c.held(Some(v(4)), 1);
        assert_eq!(
            c.snapshot(),
            CounterSnapshot {
                switches: 3,
                late_switches: 1,
                late_ns: 10 + 2 * LATE_SWITCH_NS + 1,
                violations: 1,
                domains_ns: 8,
                host_ns: 5,
                idle_ns: 2,
            }
        );
    }
}
