//! The dispatcher of one pool CPU: the real-time loop that applies the
//! replicated scheduler's decisions at every boundary (see [`Dispatcher`]
//! for its steps and the invariants of its switch path).

use super::*;

#[derive(Debug, Default)]
pub(super) struct DispatcherReport {
    pub(super) boundaries: u64,
    pub(super) violations: Vec<GateViolation>,
    pub(super) exited: Vec<VcpuRef>,
}

/// What a switch's timing was, for its [`Switch`] record.
#[derive(Debug, Clone, Copy)]
struct SwitchTiming {
    /// The spin before `b` it used.
    spin: Nanos,
    /// How long closing and opening the gates took.
    gate_ns: Nanos,
    /// How late after `b` the dispatcher blocked.
    late: Nanos,
}

/// The dispatcher of one CPU: its replica of the pool's scheduler and what
/// it remembers from one boundary to the next.
///
/// Each turn of its loop ([`Dispatcher::run`]) handles one boundary `b`, in
/// named steps: [`wait_for_boundary`](Dispatcher::wait_for_boundary)
/// (sleep until `lead` before `b`, folding in the log's events, which may
/// bring `b` forward, and watching the last outgoing vCPU),
/// [`decide`](Dispatcher::decide) (everything due by `b`, then the
/// decision), [`switch_gates`](Dispatcher::switch_gates) (before `b`: the
/// outgoing gate closed, the incoming one opened),
/// [`block_from`](Dispatcher::block_from) (spin to `b`, block at once) and
/// [`record_switch`](Dispatcher::record_switch) (the bookkeeping, after).
///
/// Invariants of the loop:
/// * The replica handles exactly the log's events, in log order, and the
///   same boundaries as every other replica, so every dispatcher makes the
///   same decisions on its own.
/// * The switch path, from the sleep before `b` until the dispatcher
///   blocks after `b`, neither allocates nor takes a lock: the registry's
///   read lock is taken before it (for the incoming gate), the switch log's
///   after it. The wait after `b` is worked out before `b`, so that at `b`
///   the dispatcher blocks at once and the incoming thread starts without
///   waiting for this one's bookkeeping.
/// * `current` is the gate this CPU opened (or asked to start) last and
///   has not closed; on stop it is closed (or asked to stop).
/// * `outgoing` is the last own vCPU whose gate this dispatcher closed,
///   until it parks, is opened again, or the watchdog demotes it; a
///   demoted vCPU is in `demoted` until its next slot opens, which
///   promotes it again.
pub(super) struct Dispatcher {
    shared: Arc<Shared>,
    replica: usize,
    cpu: CpuId,
    sched: Scheduler,
    clock: Clock,
    lead: Nanos,
    /// The log's entries taken and not yet handled (kept to reuse its
    /// allocation).
    entries: Vec<Entry>,
    current: Option<Gate>,
    /// The last vCPU whose gate this dispatcher closed, and when.
    outgoing: Option<(Arc<VcpuControl>, Nanos)>,
    demoted: Vec<VcpuRef>,
    tuner: SpinTuner,
    report: DispatcherReport,
    /// The last switch made: when, and to whom (for the CPU-time totals).
    last_switch: Option<(Nanos, Option<VcpuRef>)>,
}

impl Dispatcher {
    /// The body of the dispatcher thread of `cpu`: joins the pool's cpuset
    /// (exclusive mode), pins itself and takes its real-time priority, says
    /// on `ready` whether that worked, and if it did dispatches until the
    /// runtime stops.
    pub(super) fn run_on_cpu(
        shared: Arc<Shared>,
        replica: usize,
        cpu: CpuId,
        sched: Scheduler,
        ready: std::sync::mpsc::Sender<Result<(), HostError>>,
    ) -> DispatcherReport {
        let setup = Self::take_cpu(&shared, cpu);
        crate::best_effort(
            format_args!("dispatcher of CPU {cpu}: timer slack"),
            sys::minimise_timer_slack(),
        );
        let failed = setup.is_err();
        // The starter waits for this answer; it only goes away if it failed.
        crate::best_effort(
            format_args!("dispatcher of CPU {cpu}: start report"),
            ready.send(setup),
        );
        if failed {
            return DispatcherReport::default();
        }
        Dispatcher::new(shared, replica, cpu, sched).run()
    }

    /// Puts the calling thread in the pool's cpuset (if any), on `cpu`
    /// alone, at the dispatchers' priority.
    fn take_cpu(shared: &Shared, cpu: CpuId) -> Result<(), HostError> {
        let attach = match &shared.shield {
            Some(shield) => shield.attach(sys::gettid()).map_err(HostError::from),
            None => Ok(()),
        };
        attach
            .and_then(|()| {
                sys::set_affinity(0, &[cpu]).map_err(|e| HostError::Sys {
                    what: format!("pinning the dispatcher to CPU {cpu}"),
                    source: e,
                })
            })
            .and_then(|()| {
                sys::set_policy(0, SchedPolicy::Fifo(shared.config.dispatcher_priority))
                    .map_err(HostError::Privilege)
            })
    }

    fn new(shared: Arc<Shared>, replica: usize, cpu: CpuId, sched: Scheduler) -> Dispatcher {
        let clock = shared.clock;
        let lead = shared.config.lead;
        let tuner = SpinTuner::new(
            shared.config.spin,
            shared.config.spin_max.min(lead.saturating_sub(50_000)),
        );
        Dispatcher {
            shared,
            replica,
            cpu,
            sched,
            clock,
            lead,
            entries: Vec::new(),
            current: None,
            outgoing: None,
            demoted: Vec::new(),
            tuner,
            report: DispatcherReport::default(),
            last_switch: None,
        }
    }

    /// The loop: one boundary per turn, until the runtime stops.
    fn run(mut self) -> DispatcherReport {
        while let Some(b) = self.wait_for_boundary() {
            let Some(vcpu) = self.decide(b) else {
                continue;
            };
            let incoming = self.gate_of(vcpu);
            let (spin, gate_ns) = self.switch_gates(b, incoming.as_ref());
            let late = self.block_from(b);
            let timing = SwitchTiming {
                spin,
                gate_ns,
                late,
            };
            self.record_switch(b, vcpu, incoming, timing);
        }
        match self.current.take() {
            Some(Gate::Own(c)) => c.close(),
            Some(other) => other.request_stop(),
            None => {}
        }
        self.report
    }

    /// Sleeps until `lead` before the next boundary and returns it, folding
    /// in the events that take effect before it (they may bring it forward)
    /// and watching the last outgoing vCPU at every wake-up. `None`: the
    /// runtime stops.
    fn wait_for_boundary(&mut self) -> Option<Nanos> {
        loop {
            if self.shared.stop.load(Ordering::Acquire) {
                return None;
            }
            let seq = self.shared.log.seq().load(Ordering::Acquire);
            let b = self.sched.next();
            self.shared
                .log
                .take(self.replica, b, true, &mut self.entries);
            if !self.entries.is_empty() {
                self.apply_entries();
                continue;
            }
            let now = self.clock.now();
            self.watchdog(now);
            if b != Nanos::MAX && now + self.lead >= b {
                return Some(b);
            }
            let due = self.shared.log.next_due(self.replica);
            let wait = time_to_wake(&self.shared.config, b, due, now, self.outgoing.is_some());
            sys::futex_wait(self.shared.log.seq(), seq, Some(wait));
        }
    }

    /// Folds in everything due by `b` and decides `b`. `None`: nothing
    /// happens on this CPU at `b` (the boundary moved earlier, or this
    /// CPU's vCPU stays); `Some(vcpu)`: this CPU runs `vcpu` from `b`
    /// (`None`: nothing).
    fn decide(&mut self, b: Nanos) -> Option<Option<VcpuRef>> {
        // Everything due by `b` is in the log by now (see `log`).
        self.shared
            .log
            .take(self.replica, b, false, &mut self.entries);
        self.apply_entries();
        if self.sched.next() < b {
            return None;
        }
        let decision = self.sched.handle(b, Event::Boundary).ok()?;
        self.report.boundaries += 1;
        let cpu = self.cpu;
        decision
            .changes
            .iter()
            .find(|(c, _)| *c == cpu)
            .map(|&(_, vcpu)| vcpu)
    }

    /// Hands the entries taken from the log to the replica.
    fn apply_entries(&mut self) {
        for e in self.entries.drain(..) {
            // Identical on every replica: a refusal here was a refusal on
            // the reference too, and never entered the log (logged if it
            // ever happens: only then is there work off the fast path).
            crate::best_effort(
                "a replica refused a logged event",
                self.sched.handle(e.effect, e.event),
            );
        }
    }

    /// The gate of `vcpu`, if it is still registered.
    fn gate_of(&self, vcpu: Option<VcpuRef>) -> Option<Gate> {
        vcpu.and_then(|v| {
            self.shared
                .registry
                .read()
                .ok()
                .and_then(|r| r.get(&v).cloned())
        })
    }

    /// Before the boundary, while this dispatcher holds the CPU: the
    /// outgoing thread we own parks (the dispatcher blocks until it has: it
    /// would otherwise run first when the dispatcher blocks, ahead of the
    /// incoming thread at the same priority), and the incoming thread is
    /// woken, to run the moment the dispatcher blocks after `b`. Returns
    /// the spin used and how long the gates took.
    fn switch_gates(&mut self, b: Nanos, incoming: Option<&Gate>) -> (Nanos, Nanos) {
        let clock = self.clock;
        let spin = self.tuner.spin();
        let slept = clock.sleep_before(b, spin).is_some();
        let gate_start = clock.now();
        // A group this CPU keeps running is neither frozen nor thawed.
        let kept = Gate::same_group(self.current.as_ref(), incoming);
        match self.current.take() {
            Some(Gate::Own(old)) => {
                old.close_and_await_park(&clock, b);
                self.outgoing = Some((old, b));
            }
            // Adopted thread or group: frozen when it next runs, after the
            // dispatcher blocks at `b`.
            Some(old) if !kept => old.request_stop(),
            _ => {}
        }
        // Thawed now, it cannot run before the dispatcher blocks at `b`
        // either: the cgroup write is off the switch path.
        if let Some(new) = incoming.filter(|_| !kept) {
            new.request_start();
        }
        if let Some(Gate::Own(new)) = incoming {
            if let Some(pos) = self.demoted.iter().position(|v| *v == new.vcpu) {
                self.demoted.swap_remove(pos);
                let prio = self.shared.config.vcpu_priority;
                // Logged only if it fails (no work on the fast path then).
                crate::best_effort(
                    "restoring a demoted vCPU's priority",
                    sys::set_policy(
                        new.tid(),
                        if prio > 0 {
                            SchedPolicy::Fifo(prio)
                        } else {
                            SchedPolicy::Other
                        },
                    ),
                );
            }
            new.open(b);
        }
        let gate_ns = clock.now() - gate_start;
        if slept {
            // What the spin must cover: the sleep's lateness and the handover.
            self.tuner.record(clock.now().saturating_sub(b - spin));
        }
        (spin, gate_ns)
    }

    /// Spins until `b` and blocks at once, until the next wake-up; returns
    /// how late after `b` that was. How long to sleep is worked out before
    /// `b`, so that the incoming thread starts without waiting for this
    /// one's bookkeeping, or for the log's lock that the other dispatchers
    /// take right after their own switches.
    fn block_from(&mut self, b: Nanos) -> Nanos {
        let seq = self.shared.log.seq().load(Ordering::Acquire);
        let next = self.sched.next();
        let due = self.shared.log.next_due(self.replica);
        let late = self.clock.spin_until(b);
        let now = self.clock.now();
        let wait = time_to_wake(&self.shared.config, next, due, now, self.outgoing.is_some());
        sys::futex_wait(self.shared.log.seq(), seq, Some(wait));
        late
    }

    /// Off the switch path: notices an adopted thread whose process died or
    /// a group whose tasks all ended, makes `incoming` current, and logs the
    /// switch.
    fn record_switch(
        &mut self,
        b: Nanos,
        vcpu: Option<VcpuRef>,
        incoming: Option<Gate>,
        timing: SwitchTiming,
    ) {
        if let (Some(gate), Some(v)) = (&incoming, vcpu) {
            if gate.gone() && !self.report.exited.contains(&v) {
                self.report.exited.push(v);
            }
        }
        self.current = incoming;
        self.shared.counters.switched(timing.late);
        if let Some((since, held)) = self.last_switch.replace((b, vcpu)) {
            self.shared.counters.held(held, b.saturating_sub(since));
        }
        // Only readers of the log contend, rarely.
        if let Ok(mut log) = self.shared.switch_log[self.replica].lock() {
            if log.len() == SWITCH_LOG_CAPACITY {
                log.pop_front();
            }
            log.push_back(Switch {
                cpu: self.cpu,
                at: b,
                vcpu,
                late: timing.late,
                gate_ns: timing.gate_ns,
                spin: timing.spin,
                thread: self.current.is_some(),
            });
        }
    }

    /// Demotes a vCPU thread that kept running long after its gate closed.
    fn watchdog(&mut self, now: Nanos) {
        let Some((ctl, closed_at)) = &self.outgoing else {
            return;
        };
        if ctl.is_open() || !ctl.is_running() {
            self.outgoing = None; // parked as it should, or running in a new slot
            return;
        }
        if now < *closed_at + self.shared.config.grace {
            return;
        }
        let tid = ctl.tid();
        if tid > 0 && sys::set_policy(tid, SchedPolicy::Idle).is_ok() {
            self.demoted.push(ctl.vcpu);
        }
        self.shared.counters.violated();
        self.report.violations.push(GateViolation {
            vcpu: ctl.vcpu,
            closed_at: *closed_at,
            found_at: now,
        });
        self.outgoing = None;
    }
}

/// How long a dispatcher may sleep at pool time `now` when its next
/// boundary is `next`: until `lead` before it, or until the log's next entry
/// reported in advance is `due` (a timed wake-up, which may bring the
/// boundary forward; `EventLog::next_due`), and at most half the watchdog's
/// grace while an outgoing vCPU may still be running.
fn time_to_wake(
    config: &RuntimeConfig,
    next: Nanos,
    due: Option<Nanos>,
    now: Nanos,
    watching: bool,
) -> Nanos {
    let mut wake_at = if next == Nanos::MAX {
        now + 50_000_000
    } else {
        next.saturating_sub(config.lead)
    };
    if let Some(due) = due {
        wake_at = wake_at.min(due + 1);
    }
    let wait = wake_at.saturating_sub(now).clamp(1, 50_000_000);
    if watching {
        wait.min(config.grace / 2)
    } else {
        wait
    }
}
