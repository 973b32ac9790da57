//! How a runtime is set up: its pool, isolation, host slot, priorities,
//! state directory and clock ([`RuntimeConfig`]), and the host slot's
//! size for a grain.

use super::*;

/// How the pool's CPUs relate to the rest of the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Isolation {
    /// The CPUs stay usable by host tasks; gang threads use real-time
    /// priority to take precedence (for hosts too small to give CPUs away).
    Shared,
    /// The CPUs are taken from the host's cpuset (see `cgroup`).
    Exclusive,
}

/// Runtime parameters.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The pool.
    pub pool: PoolConfig,
    /// How far ahead of a boundary dispatchers decide (and how late an event
    /// may take effect: twice this).
    pub lead: Nanos,
    /// The least time before a switch a dispatcher stops sleeping and
    /// spins; each dispatcher spins longer when it measures its sleeps
    /// waking later (`clock::SpinTuner`), up to `spin_max`.
    pub spin: Nanos,
    /// The most a dispatcher spins before a switch (`spin`: a fixed spin).
    /// Must leave the decision time before it: at most `lead` minus 50 µs.
    pub spin_max: Nanos,
    /// SCHED_FIFO priority of dispatchers.
    pub dispatcher_priority: i32,
    /// SCHED_FIFO priority of vCPU threads (0: SCHED_OTHER).
    pub vcpu_priority: i32,
    /// How long a vCPU may run past its gate's closing before the watchdog
    /// demotes it.
    pub grace: Nanos,
    /// Record per-thread slot traces.
    pub trace: bool,
    /// The isolation mode (recorded in reports; exclusive CPU taking is done
    /// by the caller with `cgroup::Cgroups::shield`).
    pub isolation: Isolation,
    /// The host's own time-triggered slot on every pool CPU, `(period,
    /// active)` (Domain-0). Host tasks run in it (in exclusive mode only the
    /// per-CPU kernel threads are left); without it, vCPU threads
    /// at real-time priority would take 100% of a CPU, and the kernel's
    /// protection of normal tasks (RT throttling, the fair server) would stop
    /// every real-time thread on that CPU for tens of milliseconds at random
    /// times, dispatchers included, splitting gangs. `None`: no host slot.
    pub host_slot: Option<(Nanos, Nanos)>,
    /// The pool's name (for CPU claims and messages).
    pub name: String,
    /// Where CPU claims live (`None`: no machine-wide claims, for tests that
    /// own the machine). See `claim`.
    pub state_dir: Option<std::path::PathBuf>,
    /// Lift the kernel's real-time bandwidth limit while running (see
    /// `rtlimit`; needs a state directory). With it, a host slot of
    /// [`unlimited_host_slot_for`] is enough.
    pub lift_rt_limit: bool,
    /// The pool's time from a clock shared with other hosts (see
    /// `wallclock`): the runtime's epoch is then the latest cycle boundary
    /// after the base, not a moment of its own choosing. `None`: this
    /// host's monotonic clock from the start.
    pub shared_time: Option<gang_core::time::SharedTime>,
}

/// The default host slot for a pool grain: about 8% of every CPU, as
/// `(period, active)` in whole grains (4 ms every 50 ms at a 1 ms grain;
/// 10 ms every 120 ms at 10 ms). The kernel throttles real-time threads
/// past 95% of a CPU (`kernel.sched_rt_runtime_us`); vCPUs plus the
/// dispatchers' spinning must stay clear of that with a margin, or an
/// outgoing vCPU may be stopped by the kernel before it reaches its gate
/// (measured: rare gate violations at 6%). This holds in exclusive mode too:
/// with a 2% slot, `gang bench --exclusive --cpus 1` saw switches 20 ms late
/// and gate violations; with the limit lifted (`sched_rt_runtime_us = -1`)
/// a 1-2% slot was clean (`unlimited_host_slot_for`).
pub fn host_slot_for(grain: Nanos) -> (Nanos, Nanos) {
    let active = (4 * gang_core::MS).div_ceil(grain).max(1) * grain;
    let period = (active * 100 / 8 / grain).max(2) * grain;
    (period, active)
}

/// The host slot of an exclusive pool when the real-time limit is lifted
/// (`rtlimit`): one grain (at least 1 ms) in every 100, 1% of each CPU, for
/// the per-CPU kernel threads left on the pool's CPUs.
pub fn unlimited_host_slot_for(grain: Nanos) -> (Nanos, Nanos) {
    let active = gang_core::MS.div_ceil(grain).max(1) * grain;
    (100 * active, active)
}

/// The default SCHED_FIFO priority of dispatchers (above vCPU threads).
pub const DISPATCHER_PRIORITY: i32 = 50;

/// The domain id of the host's own slot in shared mode (Domain-0).
pub const HOST_DOMAIN: DomainId = DomainId(0);

impl RuntimeConfig {
    /// Defaults for `pool`: lead 300 µs, spin from 20 to 150 µs as measured
    /// (`clock::SpinTuner`), dispatchers at FIFO 50,
    /// vCPUs at FIFO 10, grace 2 ms, traces on, shared CPUs with a host slot
    /// of about 8% ([`host_slot_for`]).
    pub fn new(pool: PoolConfig) -> Self {
        RuntimeConfig {
            host_slot: Some(host_slot_for(pool.grain)),
            pool,
            lead: 300_000,
            spin: 20_000,
            spin_max: 150_000,
            dispatcher_priority: DISPATCHER_PRIORITY,
            vcpu_priority: 10,
            grace: 2_000_000,
            trace: true,
            isolation: Isolation::Shared,
            name: "gang".into(),
            state_dir: None,
            lift_rt_limit: false,
            shared_time: None,
        }
    }
}
