//! The discrete-event engine: virtual time, vCPUs, workloads, accounting.
//!
//! **Problem.** Run the same synthetic workloads under different scheduler
//! models (the gang core, the host model) for up to hours of simulated time
//! on tens of CPUs, fast and deterministically.
//!
//! **Approach.** The world owns every vCPU's state and its domain's workload;
//! a [`Model`] owns the scheduling decisions. They talk through two channels:
//! the world tells the model when a vCPU blocks or wakes (`blocked`/`woke`,
//! and timers the model asked for), and the model answers with an [`Out`]:
//! which vCPU is dispatched on which CPU, and timers to (re)arm. A vCPU
//! *runs*, and its workload progresses, iff it is dispatched on a CPU and
//! runnable (not blocked).
//!
//! Events live in a binary heap ordered by (time, class, sequence): at equal
//! times workload events (class 0) come before scheduler timers (class 1), and
//! block/wake notices raised while handling an event are delivered to the
//! model before the next heap event, so the model always hears about vCPU
//! changes at an instant before its boundary at that instant. Stale events
//! are cancelled lazily by generation counters (per vCPU for work completion,
//! per timer key for model timers).
//!
//! **Fast-forward.** A vCPU in a compute phase has `remaining` CPU work and a
//! single pending completion event while it runs; `busy` has no events at all.
//! A `spin-barrier` domain without jitter whose vCPUs all run enters *sync*
//! mode at a round completion: rounds then complete every `work` with no
//! events, and the state is materialised (rounds += elapsed / work, every vCPU
//! left with the same remainder) only when one of its vCPUs stops running.
//!
//! **Invariants.** `running_since.is_some()` ⇔ (`on_cpu.is_some()` ∧
//! `runnable`) after every applied change; a domain's `n_running` counts its
//! running vCPUs; a vCPU with a pending completion event is running and its
//! event's generation equals its own; a domain in sync mode has every vCPU
//! running and no pending completion events. Time never goes backwards.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Instant;

use gang_core::cosched::{CoschedAccumulator, CoschedMetrics, VcpuState};
use gang_core::{CpuId, Nanos};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::metrics::Histogram;
use crate::scenario::{Scenario, Workload};

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The gang core refused to admit a domain.
    #[error("domain \"{domain}\": refused by the gang scheduler: {reason}")]
    Refused {
        /// The domain's name.
        domain: String,
        /// The core's reason, with the scenario's domain names.
        reason: String,
    },
    /// The gang core failed on an event.
    #[error("gang scheduler at {at} ns: {source}")]
    Engine {
        /// Simulated time.
        at: Nanos,
        /// The core's error.
        #[source]
        source: gang_core::EngineError,
    },
    /// The gang core made a decision that breaks the driver's contract.
    #[error("gang scheduler at {at} ns: {what}")]
    BadDecision {
        /// Simulated time.
        at: Nanos,
        /// What was wrong.
        what: String,
    },
}

/// What a model asks the world to apply.
#[derive(Debug, Default)]
pub(crate) struct Out {
    /// (CPU index, vCPU index or idle).
    pub dispatch: Vec<(usize, Option<usize>)>,
    /// (timer key, when; `Nanos::MAX` cancels). Replaces the key's timer.
    pub timers: Vec<(usize, Nanos)>,
    /// Mark this instant as a scheduling decision in the timeline.
    pub mark: bool,
}

/// Counters a model keeps for the report.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ModelCounters {
    pub decisions: u64,
    pub boundaries: u64,
    pub context_switches: u64,
}

/// A scheduler model driven by the world.
pub(crate) trait Model {
    /// Number of timer keys the model uses (keys are `0..n`).
    fn timer_keys(&self) -> usize;
    /// Adds every domain at time 0 (`runnable[v]` is each vCPU's initial state).
    fn start(&mut self, runnable: &[bool], out: &mut Out) -> Result<(), SimError>;
    /// vCPU `v` stopped being runnable at `now`.
    fn blocked(&mut self, now: Nanos, v: usize, out: &mut Out) -> Result<(), SimError>;
    /// vCPU `v` became runnable at `now`.
    fn woke(&mut self, now: Nanos, v: usize, out: &mut Out) -> Result<(), SimError>;
    /// Timer `key` fired at `now`.
    fn timer(&mut self, now: Nanos, key: usize, out: &mut Out) -> Result<(), SimError>;
    /// Counters for the report.
    fn counters(&self) -> ModelCounters;
}

/// Static shape of a scenario: CPUs, domains, vCPUs.
#[derive(Debug, Clone)]
pub(crate) struct Topo {
    /// Pool CPU ids, ascending; CPU index = position.
    pub cpus: Vec<CpuId>,
    /// CPU id → index (`usize::MAX`: not in the pool).
    pub cpu_index: Vec<usize>,
    /// Domain → first vCPU index; `first[d+1] - first[d]` vCPUs.
    pub first: Vec<usize>,
    /// vCPU → domain.
    pub dom_of: Vec<u32>,
}

impl Topo {
    pub(crate) fn new(s: &Scenario) -> Topo {
        let cpus: Vec<CpuId> = s.pool.cpus.iter().collect();
        let max = cpus.last().copied().unwrap_or(0) as usize;
        let mut cpu_index = vec![usize::MAX; max + 1];
        for (i, &c) in cpus.iter().enumerate() {
            cpu_index[c as usize] = i;
        }
        let mut first = vec![0];
        let mut dom_of = Vec::new();
        for (d, def) in s.domains.iter().enumerate() {
            first.push(first[d] + def.vcpus as usize);
            dom_of.extend(std::iter::repeat_n(d as u32, def.vcpus as usize));
        }
        Topo {
            cpus,
            cpu_index,
            first,
            dom_of,
        }
    }

    pub(crate) fn cpu_idx(&self, cpu: CpuId) -> Option<usize> {
        self.cpu_index
            .get(cpu as usize)
            .copied()
            .filter(|&i| i != usize::MAX)
    }
}

/// A recorded running interval, for the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Interval {
    pub cpu: u32,
    /// The vCPU's index in its domain.
    pub vcpu: u32,
    pub start: Nanos,
    pub end: Nanos,
    pub dom: u32,
}

/// Progress callback payload.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Which scheduler is running.
    pub scheduler: crate::SchedKind,
    /// Simulated time reached.
    pub now: Nanos,
    /// Simulated time to reach.
    pub end: Nanos,
    /// Wall time since the run started.
    pub wall: std::time::Duration,
}

const CLASS_WORK: u8 = 0;
const CLASS_TIMER: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// vCPU finished its compute phase (if `gen` is current).
    Done { v: u32, gen: u32 },
    /// Periodic job release.
    Release { v: u32 },
    /// Sleep-wake: the sleep is over.
    Wake { v: u32 },
    /// Model timer.
    Timer { key: u32, gen: u32 },
}

/// A queued event. Ordered by (`at`, `ord`) only: `ord` is the class in the
/// top bit and a unique sequence number below, so ties break by class, then
/// by insertion order (the comparison is two integer compares: the heap is
/// the hottest structure of the simulator).
#[derive(Debug, Clone, Copy)]
struct Entry {
    at: Nanos,
    ord: u64,
    kind: Kind,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.ord) == (other.at, other.ord)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.ord).cmp(&(other.at, other.ord))
    }
}

fn ord(class: u8, seq: u64) -> u64 {
    (u64::from(class) << 63) | seq
}

#[derive(Debug)]
struct Vcpu {
    dom: u32,
    runnable: bool,
    on_cpu: Option<u32>,
    running_since: Option<Nanos>,
    /// The CPU it runs (or last ran) on.
    run_cpu: u32,
    /// CPU work left in the current phase (`Nanos::MAX`: unbounded).
    remaining: Nanos,
    /// When `remaining` was last brought up to date (while running).
    anchor: Nanos,
    gen: u32,
    cpu_ns: Nanos,
    woke_at: Option<Nanos>,
    /// Periodic: releases of pending jobs (front = current).
    jobs: VecDeque<Nanos>,
    job_started: bool,
    rng: ChaCha8Rng,
}

/// Per-domain results of one run.
#[derive(Debug, Clone, Default)]
pub(crate) struct DomResult {
    pub cpu_ns: Nanos,
    pub progress: u64,
    pub any_ns: Nanos,
    pub all_ns: Nanos,
    pub released: u64,
    pub misses: u64,
    pub wake_lat: Histogram,
    pub release_lat: Histogram,
    /// Co-start skews of its gang starts.
    pub skews: Histogram,
    /// Its co-scheduling metrics over the run (the host's names).
    pub cosched: CoschedMetrics,
}

#[derive(Debug)]
struct Dom {
    wl: Workload,
    n: u32,
    n_running: u32,
    since: Nanos,
    arrived: u32,
    /// Spin-barrier fast-forward: time of the last round completion.
    sync: Option<Nanos>,
    /// Its vCPUs' states, for the co-scheduling metrics.
    acc: CoschedAccumulator,
    res: DomResult,
}

/// Results of one run.
#[derive(Debug)]
pub(crate) struct RunResult {
    pub doms: Vec<DomResult>,
    pub events: u64,
    pub stale: u64,
    pub counters: ModelCounters,
    pub intervals: Vec<Interval>,
    pub marks: Vec<Nanos>,
    pub wall: std::time::Duration,
}

/// One simulation run.
pub(crate) struct World<'a> {
    topo: &'a Topo,
    now: Nanos,
    end: Nanos,
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    notices: VecDeque<(usize, bool)>,
    vcpus: Vec<Vcpu>,
    doms: Vec<Dom>,
    cpu_cur: Vec<Option<usize>>,
    timer_gen: Vec<u32>,
    timer_at: Vec<Nanos>,
    touched: Vec<usize>,
    events: u64,
    stale: u64,
    window: Option<(Nanos, Nanos)>,
    intervals: Vec<Interval>,
    marks: Vec<Nanos>,
}

impl std::fmt::Debug for World<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("now", &self.now)
            .field("events", &self.events)
            .finish()
    }
}

fn jittered(x: Nanos, jitter: u8, rng: &mut ChaCha8Rng) -> Nanos {
    if jitter == 0 {
        return x;
    }
    let delta = (u128::from(x) * u128::from(jitter) / 100) as u64;
    (x - delta + rng.random_range(0..=2 * delta)).max(1)
}

impl<'a> World<'a> {
    /// A world at time 0 for `s`, ending at `end`; `window` limits interval
    /// recording.
    pub(crate) fn new(
        s: &Scenario,
        topo: &'a Topo,
        end: Nanos,
        window: Option<(Nanos, Nanos)>,
    ) -> Self {
        let mut vcpus = Vec::with_capacity(topo.dom_of.len());
        let mut doms = Vec::with_capacity(s.domains.len());
        let mut heap = BinaryHeap::new();
        let mut seq = 0;
        for (d, def) in s.domains.iter().enumerate() {
            for i in 0..def.vcpus {
                let gi = vcpus.len();
                let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
                rng.set_stream(gi as u64);
                let (runnable, remaining) = match def.workload {
                    Workload::Busy => (true, Nanos::MAX),
                    Workload::SpinBarrier { work, jitter }
                    | Workload::BlockingBarrier { work, jitter } => {
                        (true, jittered(work, jitter, &mut rng))
                    }
                    Workload::Periodic { offset, .. } => {
                        heap.push(Reverse(Entry {
                            at: offset,
                            ord: ord(CLASS_WORK, seq),
                            kind: Kind::Release { v: gi as u32 },
                        }));
                        seq += 1;
                        (false, 0)
                    }
                    Workload::SleepWake { run, jitter, .. } => {
                        (true, jittered(run, jitter, &mut rng))
                    }
                };
                let _ = i;
                vcpus.push(Vcpu {
                    dom: d as u32,
                    runnable,
                    on_cpu: None,
                    running_since: None,
                    run_cpu: 0,
                    remaining,
                    anchor: 0,
                    gen: 0,
                    cpu_ns: 0,
                    woke_at: None,
                    jobs: VecDeque::new(),
                    job_started: false,
                    rng,
                });
            }
            let initial: Vec<VcpuState> = vcpus[vcpus.len() - def.vcpus as usize..]
                .iter()
                .map(|v| {
                    if v.runnable {
                        VcpuState::Runnable
                    } else {
                        VcpuState::Blocked
                    }
                })
                .collect();
            doms.push(Dom {
                wl: def.workload,
                n: def.vcpus,
                n_running: 0,
                since: 0,
                arrived: 0,
                sync: None,
                acc: CoschedAccumulator::new(0, &initial),
                res: DomResult::default(),
            });
        }
        World {
            topo,
            now: 0,
            end,
            heap,
            seq,
            notices: VecDeque::new(),
            vcpus,
            doms,
            cpu_cur: vec![None; topo.cpus.len()],
            timer_gen: Vec::new(),
            timer_at: Vec::new(),
            touched: Vec::new(),
            events: 0,
            stale: 0,
            window,
            intervals: Vec::new(),
            marks: Vec::new(),
        }
    }

    fn push(&mut self, at: Nanos, class: u8, kind: Kind) {
        self.heap.push(Reverse(Entry {
            at,
            ord: ord(class, self.seq),
            kind,
        }));
        self.seq += 1;
    }

    /// Runs `model` to the end. `progress` is called every ~0.5 s of wall time.
    pub(crate) fn run(
        mut self,
        model: &mut dyn Model,
        kind: crate::SchedKind,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<RunResult, SimError> {
        let started = Instant::now();
        let mut last_report = started;
        let keys = model.timer_keys();
        self.timer_gen = vec![0; keys];
        self.timer_at = vec![Nanos::MAX; keys];
        let mut out = Out::default();
        let runnable: Vec<bool> = self.vcpus.iter().map(|v| v.runnable).collect();
        model.start(&runnable, &mut out)?;
        self.apply(&mut out);
        let mut iter: u32 = 0;
        loop {
            while let Some((v, woke)) = self.notices.pop_front() {
                self.events += 1;
                if woke {
                    model.woke(self.now, v, &mut out)?;
                } else {
                    model.blocked(self.now, v, &mut out)?;
                }
                self.apply(&mut out);
            }
            let Some(Reverse(e)) = self.heap.pop() else {
                break;
            };
            // The run covers [0, end]: work completing exactly at `end`
            // counts (as fast-forwarded rounds do); releases, wakes and
            // timers at `end` would only start something new: skipped.
            if e.at > self.end {
                break;
            }
            if e.at == self.end && !matches!(e.kind, Kind::Done { .. }) {
                continue;
            }
            debug_assert!(e.at >= self.now);
            self.now = e.at;
            iter = iter.wrapping_add(1);
            if iter.is_multiple_of(65_536) {
                let t = Instant::now();
                if t.duration_since(last_report).as_millis() >= 500 {
                    last_report = t;
                    progress(&Progress {
                        scheduler: kind,
                        now: self.now,
                        end: self.end,
                        wall: t.duration_since(started),
                    });
                }
            }
            match e.kind {
                Kind::Done { v, gen } => {
                    if self.vcpus[v as usize].gen != gen {
                        self.stale += 1;
                        continue;
                    }
                    self.events += 1;
                    self.done(v as usize);
                }
                Kind::Release { v } => {
                    self.events += 1;
                    self.release(v as usize);
                }
                Kind::Wake { v } => {
                    self.events += 1;
                    let v = v as usize;
                    let dom = self.vcpus[v].dom as usize;
                    if let Workload::SleepWake { run, jitter, .. } = self.doms[dom].wl {
                        let vc = &mut self.vcpus[v];
                        vc.remaining = jittered(run, jitter, &mut vc.rng);
                        vc.woke_at = Some(self.now);
                    }
                    self.set_runnable(v, true);
                }
                Kind::Timer { key, gen } => {
                    let key = key as usize;
                    if self.timer_gen[key] != gen {
                        self.stale += 1;
                        continue;
                    }
                    self.events += 1;
                    self.timer_at[key] = Nanos::MAX;
                    model.timer(self.now, key, &mut out)?;
                    self.apply(&mut out);
                }
            }
        }
        self.finish(model, started)
    }

    fn finish(mut self, model: &mut dyn Model, started: Instant) -> Result<RunResult, SimError> {
        let end = self.end;
        self.now = end;
        for v in 0..self.vcpus.len() {
            if self.vcpus[v].running_since.is_some() {
                self.stop(v);
            }
        }
        for d in 0..self.doms.len() {
            self.account(d);
        }
        let mut doms = Vec::with_capacity(self.doms.len());
        for (d, dom) in self.doms.iter_mut().enumerate() {
            let vs = self.topo.first[d]..self.topo.first[d + 1];
            dom.res.cpu_ns = self.vcpus[vs.clone()].iter().map(|v| v.cpu_ns).sum();
            if let Workload::Periodic { deadline, .. } = dom.wl {
                // Unfinished jobs whose deadline has passed are misses too.
                for v in &self.vcpus[vs] {
                    dom.res.misses += v
                        .jobs
                        .iter()
                        .filter(|&&rel| rel.saturating_add(deadline) < end)
                        .count() as u64;
                }
            }
            if dom.wl == Workload::Busy {
                dom.res.progress = dom.res.cpu_ns;
            }
            // No late switches in virtual time.
            let (p50, p99) = (dom.res.skews.quantile(0.5), dom.res.skews.quantile(0.99));
            dom.res.cosched = dom.acc.finish(end, p50, p99, 0);
            doms.push(std::mem::take(&mut dom.res));
        }
        Ok(RunResult {
            doms,
            events: self.events,
            stale: self.stale,
            counters: model.counters(),
            intervals: self.intervals,
            marks: self.marks,
            wall: started.elapsed(),
        })
    }

    /// Applies a model's output at `now`.
    fn apply(&mut self, out: &mut Out) {
        if out.mark {
            out.mark = false;
            if let Some((a, b)) = self.window {
                if self.now >= a && self.now <= b && self.marks.last() != Some(&self.now) {
                    self.marks.push(self.now);
                }
            }
        }
        if !out.dispatch.is_empty() {
            for (cpu, new) in out.dispatch.drain(..) {
                let old = self.cpu_cur[cpu];
                if old == new {
                    continue;
                }
                self.cpu_cur[cpu] = new;
                if let Some(o) = old {
                    if self.vcpus[o].on_cpu == Some(cpu as u32) {
                        self.vcpus[o].on_cpu = None;
                        self.touched.push(o);
                    }
                }
                if let Some(n) = new {
                    if let Some(prev) = self.vcpus[n].on_cpu {
                        // Moved without being taken off its old CPU first.
                        if self.cpu_cur[prev as usize] == Some(n) {
                            self.cpu_cur[prev as usize] = None;
                        }
                    }
                    self.vcpus[n].on_cpu = Some(cpu as u32);
                    self.touched.push(n);
                }
            }
            let mut touched = std::mem::take(&mut self.touched);
            for &v in &touched {
                let vc = &self.vcpus[v];
                if vc.running_since.is_some() && !(vc.on_cpu.is_some() && vc.runnable) {
                    self.stop(v);
                }
            }
            for &v in &touched {
                let vc = &self.vcpus[v];
                if vc.running_since.is_none() && vc.on_cpu.is_some() && vc.runnable {
                    self.start(v);
                }
            }
            touched.clear();
            self.touched = touched;
        }
        for (key, when) in out.timers.drain(..) {
            if self.timer_at[key] == when {
                continue;
            }
            self.timer_gen[key] = self.timer_gen[key].wrapping_add(1);
            self.timer_at[key] = when;
            if when != Nanos::MAX {
                let gen = self.timer_gen[key];
                self.push(
                    when.max(self.now),
                    CLASS_TIMER,
                    Kind::Timer {
                        key: key as u32,
                        gen,
                    },
                );
            }
        }
    }

    /// Brings a domain's co-scheduling accounting up to `now`.
    fn account(&mut self, d: usize) {
        let dom = &mut self.doms[d];
        let el = self.now - dom.since;
        if dom.n_running > 0 {
            dom.res.any_ns += el;
            if dom.n_running == dom.n {
                dom.res.all_ns += el;
            }
        }
        dom.since = self.now;
    }

    /// Tells the domain's co-scheduling accounting vCPU `v`'s state now.
    fn observe(&mut self, v: usize) {
        let vc = &self.vcpus[v];
        let state = match (vc.running_since.is_some(), vc.runnable) {
            (true, _) => VcpuState::Running,
            (false, true) => VcpuState::Runnable,
            (false, false) => VcpuState::Blocked,
        };
        let d = vc.dom as usize;
        let i = v - self.topo.first[d];
        let dom = &mut self.doms[d];
        if let Some(skew) = dom.acc.set(self.now, i, state) {
            dom.res.skews.record(skew);
        }
    }

    fn set_runnable(&mut self, v: usize, runnable: bool) {
        let vc = &mut self.vcpus[v];
        if vc.runnable == runnable {
            return;
        }
        vc.runnable = runnable;
        let on = vc.on_cpu.is_some();
        self.notices.push_back((v, runnable));
        if on {
            if runnable {
                self.start(v);
            } else {
                self.stop(v);
            }
        }
        self.observe(v);
    }

    fn start(&mut self, v: usize) {
        let now = self.now;
        let d = self.vcpus[v].dom as usize;
        self.account(d);
        self.doms[d].n_running += 1;
        self.vcpus[v].running_since = Some(now);
        self.observe(v);
        let dom = &mut self.doms[d];
        let vc = &mut self.vcpus[v];
        vc.run_cpu = vc.on_cpu.unwrap_or(0);
        if let Some(w) = vc.woke_at.take() {
            dom.res.wake_lat.record(now - w);
        }
        if !vc.job_started {
            if let Some(&rel) = vc.jobs.front() {
                vc.job_started = true;
                dom.res.release_lat.record(now - rel);
            }
        }
        if vc.remaining != 0 && vc.remaining != Nanos::MAX && dom.sync.is_none() {
            vc.anchor = now;
            vc.gen = vc.gen.wrapping_add(1);
            let (at, gen) = (now + vc.remaining, vc.gen);
            self.push(at, CLASS_WORK, Kind::Done { v: v as u32, gen });
        }
    }

    fn stop(&mut self, v: usize) {
        let now = self.now;
        let Some(since) = self.vcpus[v].running_since.take() else {
            return;
        };
        let d = self.vcpus[v].dom as usize;
        self.account(d);
        self.doms[d].n_running -= 1;
        self.observe(v);
        let vc = &mut self.vcpus[v];
        vc.cpu_ns += now - since;
        if let Some((a, b)) = self.window {
            if since < b && now > a && now > since {
                self.intervals.push(Interval {
                    cpu: vc.run_cpu,
                    vcpu: (v - self.topo.first[d]) as u32,
                    start: since.max(a),
                    end: now.min(b),
                    dom: d as u32,
                });
            }
        }
        let vc = &mut self.vcpus[v];
        if self.doms[d].sync.is_some() {
            self.materialize(d);
        } else if vc.remaining != Nanos::MAX && vc.remaining != 0 {
            vc.remaining -= (now - vc.anchor).min(vc.remaining);
            vc.gen = vc.gen.wrapping_add(1);
        }
    }

    /// Leaves spin-barrier sync mode at `now`.
    fn materialize(&mut self, d: usize) {
        let now = self.now;
        let dom = &mut self.doms[d];
        let Some(ta) = dom.sync.take() else { return };
        let Workload::SpinBarrier { work, .. } = dom.wl else {
            return;
        };
        let el = now - ta;
        dom.res.progress += el / work;
        let r = work - el % work;
        for u in self.topo.first[d]..self.topo.first[d + 1] {
            let vc = &mut self.vcpus[u];
            vc.remaining = r;
            vc.gen = vc.gen.wrapping_add(1);
            if vc.running_since.is_some() {
                vc.anchor = now;
                let gen = vc.gen;
                self.push(now + r, CLASS_WORK, Kind::Done { v: u as u32, gen });
            }
        }
    }

    /// vCPU `v` completed its compute phase at `now`.
    fn done(&mut self, v: usize) {
        let now = self.now;
        let d = self.vcpus[v].dom as usize;
        self.vcpus[v].remaining = 0;
        match self.doms[d].wl {
            Workload::Busy => {}
            Workload::SpinBarrier { work, jitter } => {
                let dom = &mut self.doms[d];
                dom.arrived += 1;
                if dom.arrived < dom.n {
                    return;
                }
                dom.arrived = 0;
                dom.res.progress += 1;
                let sync = jitter == 0 && dom.n_running == dom.n;
                if sync {
                    dom.sync = Some(now);
                }
                for u in self.topo.first[d]..self.topo.first[d + 1] {
                    let vc = &mut self.vcpus[u];
                    vc.remaining = jittered(work, jitter, &mut vc.rng);
                    vc.gen = vc.gen.wrapping_add(1);
                    if !sync && vc.running_since.is_some() {
                        vc.anchor = now;
                        let (at, gen) = (now + vc.remaining, vc.gen);
                        self.push(at, CLASS_WORK, Kind::Done { v: u as u32, gen });
                    }
                }
            }
            Workload::BlockingBarrier { work, jitter } => {
                let dom = &mut self.doms[d];
                dom.arrived += 1;
                if dom.arrived < dom.n {
                    self.set_runnable(v, false);
                    return;
                }
                dom.arrived = 0;
                dom.res.progress += 1;
                for u in self.topo.first[d]..self.topo.first[d + 1] {
                    let vc = &mut self.vcpus[u];
                    vc.remaining = jittered(work, jitter, &mut vc.rng);
                    vc.gen = vc.gen.wrapping_add(1);
                    if u == v {
                        vc.anchor = now;
                        let (at, gen) = (now + vc.remaining, vc.gen);
                        self.push(at, CLASS_WORK, Kind::Done { v: u as u32, gen });
                    } else {
                        vc.woke_at = Some(now);
                        self.set_runnable(u, true);
                    }
                }
            }
            Workload::Periodic {
                exec,
                deadline,
                jitter,
                ..
            } => {
                let dom = &mut self.doms[d];
                let vc = &mut self.vcpus[v];
                dom.res.progress += 1;
                if let Some(rel) = vc.jobs.pop_front() {
                    if now > rel.saturating_add(deadline) {
                        dom.res.misses += 1;
                    }
                }
                vc.job_started = false;
                if let Some(&next) = vc.jobs.front() {
                    vc.remaining = jittered(exec, jitter, &mut vc.rng);
                    vc.job_started = true;
                    dom.res.release_lat.record(now - next);
                    vc.anchor = now;
                    vc.gen = vc.gen.wrapping_add(1);
                    let (at, gen) = (now + vc.remaining, vc.gen);
                    self.push(at, CLASS_WORK, Kind::Done { v: v as u32, gen });
                } else {
                    self.set_runnable(v, false);
                }
            }
            Workload::SleepWake { sleep, jitter, .. } => {
                self.doms[d].res.progress += 1;
                let vc = &mut self.vcpus[v];
                let s = jittered(sleep, jitter, &mut vc.rng);
                self.set_runnable(v, false);
                self.push(now + s, CLASS_WORK, Kind::Wake { v: v as u32 });
            }
        }
    }

    /// A periodic job is released for vCPU `v` at `now`.
    fn release(&mut self, v: usize) {
        let now = self.now;
        let d = self.vcpus[v].dom as usize;
        let Workload::Periodic {
            period,
            exec,
            jitter,
            ..
        } = self.doms[d].wl
        else {
            return;
        };
        self.push(now + period, CLASS_WORK, Kind::Release { v: v as u32 });
        self.doms[d].res.released += 1;
        let vc = &mut self.vcpus[v];
        vc.jobs.push_back(now);
        if vc.jobs.len() == 1 {
            vc.remaining = jittered(exec, jitter, &mut vc.rng);
            vc.job_started = false;
            self.set_runnable(v, true);
        }
    }
}
