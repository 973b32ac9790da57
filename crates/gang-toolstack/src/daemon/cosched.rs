//! Where a gang pool's domains really ran, from the kernel's scheduler
//! events: every gang pool with a runtime has a
//! [`gang_host::sched_events::SchedRecorder`] on its CPUs (started with the
//! runtime, stopped with it; `/proc` sampling when perf is unavailable).
//!
//! It gives three things that the dispatchers' switch log cannot for a
//! domain whose threads are not ours (adopted QEMU vCPUs, whole programs,
//! frozen and thawed per slot: the switch log holds the thaw *request*):
//!
//! - `trace`'s slots of such a domain: each begins `late_ns` after its
//!   boundary, when its threads started running, and ends when they
//!   stopped ([`Daemon::real_trace_slots`]), so their co-start spread is
//!   measured;
//! - `list`'s and `top`'s run state: running when its threads ran in the
//!   last [`RUNNING_WINDOW`] for at least [`RUNNING_MIN`], not only when a
//!   `/proc` read happens to catch one on a CPU ([`Daemon::ran_recently`]),
//!   and `vcpu-list`'s per vCPU ([`Daemon::vcpus_ran_recently`]);
//! - the co-scheduling metrics of every domain of a gang pool (own threads
//!   included, computed the same way from their threads), over the last
//!   [`WINDOW`] ([`Daemon::cosched`]), for `list`/`top` and `sched-gang -v`.
//!
//! A recorder keeps only the threads of its pool's live domains
//! ([`Daemon::track_threads`], from the monitor's poll), so its memory is
//! bounded by them, not by the host's other threads.
//!
//! The "vCPUs" of the metrics are the domain's vCPU threads when it names
//! them, else (a whole program) its threads that ran in the window. A
//! sampling recorder (no perf) samples a domain's threads from the first
//! query that names them on, and gives no CPU per run: `trace` then keeps
//! the dispatchers' slots.

use gang_core::cosched::CoschedMetrics;
use gang_core::{CpuId, DomainId, Nanos, VcpuRef, MS, SEC, US};
use gang_host::runtime::{held_intervals, Runtime};
use gang_host::sched_events::{self, Run, SchedRecorder, Source};
use gang_host::sys::{self, Tid};
use gang_proto::{CoschedInfo, CoschedSource, TraceSlot};

use super::domains::Live;
use super::Daemon;
use crate::process;
use crate::store::{PoolId, PoolRecord};

/// The window of the co-scheduling metrics.
pub(super) const WINDOW: Nanos = SEC;
/// The window of "running now".
pub(super) const RUNNING_WINDOW: Nanos = 200 * MS;
/// Run time (all threads) in [`RUNNING_WINDOW`] that makes a domain
/// running: 5% of one CPU (a timer tick's work does not).
pub(super) const RUNNING_MIN: Nanos = 10 * MS;
/// Run time of one vCPU in [`RUNNING_WINDOW`] that makes it running.
pub(super) const VCPU_RUNNING_MIN: Nanos = 5 * MS;
/// A switch later than this is a late switch.
pub(super) const LATE: Nanos = 50 * US;
/// History the recorders keep (`trace` shows at most this far back for a
/// domain whose threads are not ours).
const HORIZON: Nanos = 10 * SEC;

/// A domain's threads.
enum Threads {
    /// Thread `i` is vCPU `i`.
    PerVcpu(Vec<Tid>),
    /// Every thread of its program(s): any may run on any of its CPUs.
    Program(Vec<Tid>),
}

impl Threads {
    fn of(live: &Live) -> Threads {
        match live.vcpu_tids() {
            Some(t) if !t.is_empty() => Threads::PerVcpu(t),
            _ => Threads::Program(
                live.backend
                    .processes(&live.record)
                    .into_iter()
                    .flat_map(|p| process::threads(p).into_iter().map(|(t, _)| t))
                    .collect(),
            ),
        }
    }

    fn tids(&self) -> &[Tid] {
        match self {
            Threads::PerVcpu(t) | Threads::Program(t) => t,
        }
    }
}

impl Daemon {
    /// Starts the recorder of a gang pool's CPUs (best effort: a pool
    /// without one shows what the switch log and `/proc` say).
    pub(super) fn start_recorder(&mut self, pool: &PoolRecord) {
        if self.recorders.contains_key(&pool.id) {
            return;
        }
        let cpus: Vec<_> = pool.cpus.iter().collect();
        match SchedRecorder::start(&cpus, HORIZON) {
            Ok(r) => {
                if r.source() == Source::Sampled {
                    self.log(format!(
                        "cpupool {}: scheduler events unavailable, sampling /proc",
                        pool.name
                    ));
                }
                self.recorders.insert(pool.id, r);
            }
            Err(e) => self.log(format!("cpupool {}: no scheduler recorder: {e}", pool.name)),
        }
    }

    /// Stops a pool's recorder (its perf events closed).
    pub(super) fn stop_recorder(&mut self, pool: PoolId) {
        self.recorders.remove(&pool);
    }

    /// A live domain's runtime, recorder and threads (sampled recorders
    /// are told to sample them).
    fn recorded(&self, id: DomainId) -> Option<(&Runtime, &SchedRecorder, Threads)> {
        let live = self.live.get(&id)?;
        let pool = live.admitted?;
        let rt = self.runtimes.get(&pool)?;
        let recorder = self.recorders.get(&pool)?;
        let threads = Threads::of(live);
        recorder.track(threads.tids().iter().copied());
        Some((rt, recorder, threads))
    }

    /// Tells each recorder the threads of its pool's live domains (the
    /// monitor's poll, every 100 ms: threads born since are recorded from
    /// then on, those of domains gone are forgotten).
    pub(super) fn track_threads(&self) {
        for (pool, recorder) in &self.recorders {
            let tids: Vec<Tid> = self
                .live
                .values()
                .filter(|l| l.admitted == Some(*pool))
                .flat_map(|l| Threads::of(l).tids().to_vec())
                .collect();
            recorder.track_only(tids);
        }
    }

    /// Whether domain `id`'s threads ran in the last [`RUNNING_WINDOW`]
    /// (`None`: not recorded, ask `/proc`).
    pub(super) fn ran_recently(&self, id: DomainId) -> Option<bool> {
        let (_, recorder, threads) = self.recorded(id)?;
        let now = sys::monotonic_ns();
        let spans = recorder.spans_of(threads.tids(), now - RUNNING_WINDOW, now);
        let ran: Nanos = spans
            .iter()
            .map(|s| sched_events::time_in(s, gang_core::cosched::VcpuState::Running))
            .sum();
        Some(ran >= RUNNING_MIN)
    }

    /// Per vCPU of domain `id`, the CPU it ran on last if it ran at least
    /// [`VCPU_RUNNING_MIN`] in the last [`RUNNING_WINDOW`] (`vcpu-list`'s
    /// `r`); a whole program's vCPU `v` is its map's CPU `v`, running while
    /// any of its threads runs there. `None`: not recorded, ask `/proc`.
    pub(super) fn vcpus_ran_recently(&self, id: DomainId) -> Option<Vec<Option<CpuId>>> {
        let (rt, recorder, threads) = self.recorded(id)?;
        if recorder.source() != Source::Events {
            return None;
        }
        let now = sys::monotonic_ns();
        let from = now - RUNNING_WINDOW;
        let runs = recorder.runs_of(threads.tids(), from, now);
        let ran = |rs: &mut dyn Iterator<Item = &Run>| -> Option<CpuId> {
            let mut total = 0;
            let mut last: Option<&Run> = None;
            for r in rs {
                total += r.end.min(now) - r.start.max(from);
                if last.is_none_or(|l| r.end > l.end) {
                    last = Some(r);
                }
            }
            (total >= VCPU_RUNNING_MIN).then_some(last?.cpu)
        };
        Some(match threads {
            Threads::PerVcpu(_) => runs.iter().map(|r| ran(&mut r.iter())).collect(),
            Threads::Program(_) => rt
                .cpu_map(id)?
                .iter()
                .map(|&cpu| ran(&mut runs.iter().flatten().filter(|r| r.cpu == cpu)))
                .collect(),
        })
    }

    /// Domain `id`'s co-scheduling metrics over the last [`WINDOW`]
    /// (`None` outside a running gang pool).
    pub(super) fn cosched(&self, id: DomainId) -> Option<CoschedInfo> {
        let (rt, recorder, threads) = self.recorded(id)?;
        let now = sys::monotonic_ns();
        let window = (now.saturating_sub(WINDOW), now);
        let mut vcpus = recorder.spans_of(threads.tids(), window.0, window.1);
        if let Threads::Program(_) = threads {
            let running = |s: &Vec<gang_core::cosched::StateSpan>| {
                sched_events::time_in(s, gang_core::cosched::VcpuState::Running) > 0
            };
            if vcpus.iter().any(running) {
                vcpus.retain(running);
            }
        }
        // The domain's slots (one per boundary, whatever its CPUs), on
        // CLOCK_MONOTONIC.
        let epoch = rt.clock().epoch();
        let switches = rt.recent_switches();
        let mut slots: Vec<(Nanos, Nanos)> = held_intervals(&switches, id)
            .into_iter()
            .map(|(_, _, a, b)| (epoch + a, epoch.saturating_add(b).min(now)))
            .filter(|&(a, b)| b > window.0 && a < window.1)
            .collect();
        slots.sort_unstable();
        slots.dedup_by_key(|s| s.0);
        let late = switches
            .iter()
            .filter(|s| s.vcpu.is_some_and(|v| v.domain == id) && s.late > LATE)
            .filter(|s| epoch + s.at >= window.0)
            .count() as u64;
        Some(CoschedInfo {
            metrics: CoschedMetrics::compute(&vcpus, window, Some(&slots), late),
            source: match recorder.source() {
                Source::Events => CoschedSource::Events,
                Source::Sampled => CoschedSource::Sampled,
            },
        })
    }

    /// `trace`'s slots of domain `id`, as its threads really ran them when
    /// they are not ours (adopted threads, whole programs: see the module
    /// docs): `start_ns` stays the boundary, `late_ns` becomes how long
    /// after it the threads started, `end_ns` when they stopped; a slot in
    /// which none of its threads ran is left out. Own
    /// threads' slots, and any slot without a recorder with events, are
    /// returned as the dispatchers made them.
    pub(super) fn real_trace_slots(&self, id: DomainId, slots: Vec<TraceSlot>) -> Vec<TraceSlot> {
        let Some((rt, recorder, threads)) = self.recorded(id) else {
            return slots;
        };
        let own = rt
            .control(VcpuRef {
                domain: id,
                vcpu: 0,
            })
            .is_some();
        if own || recorder.source() != Source::Events || slots.is_empty() {
            return slots;
        }
        let epoch = rt.clock().epoch();
        let from = epoch + slots.iter().map(|s| s.start_ns).min().unwrap_or(0);
        let until = sys::monotonic_ns();
        let runs = recorder.runs_of(threads.tids(), from, until);
        let mut all: Vec<Run> = runs.iter().flatten().copied().collect();
        all.sort_by_key(|r| r.start);
        let runs_of = |v: u32| -> &[Run] {
            match &threads {
                Threads::PerVcpu(_) => runs.get(v as usize).map_or(&[], Vec::as_slice),
                Threads::Program(_) => &all,
            }
        };
        let held: Vec<_> = slots
            .iter()
            .map(|s| (s.vcpu, s.cpu, s.start_ns, s.end_ns))
            .collect();
        let real = sched_events::real_slots(&held, runs_of, epoch, until);
        slots
            .into_iter()
            .zip(real)
            .filter_map(|(s, r)| {
                r.map(|(start, end_ns)| TraceSlot {
                    late_ns: start.saturating_sub(s.start_ns),
                    end_ns,
                    ..s
                })
            })
            .collect()
    }
}
