//! Where threads really ran: the kernel's scheduler events, recorded.
//!
//! A [`SchedRecorder`] records, for the threads that run on a set of CPUs,
//! when each was running, runnable but not running, or blocked
//! ([`VcpuState`]), as [`StateSpan`]s on `CLOCK_MONOTONIC`. What the
//! dispatchers *asked* for (the switch log) is not what happened to a
//! thread we do not own (an adopted QEMU vCPU, a whole program): it runs
//! when the kernel runs it. The daemon takes its slots, run states and
//! co-scheduling metrics ([`gang_core::cosched`]) from here.
//!
//! **Events** ([`Source::Events`]): one perf event per CPU and tracepoint
//! (`sched:sched_switch`, `sched:sched_waking`, `sched:sched_wakeup`), with
//! ring buffers (the `perf-event2` crate: it keeps the `unsafe` of
//! `perf_event_open` and the mmap, so this module has none), timestamps on
//! CLOCK_MONOTONIC (`use_clockid`), raw samples parsed at the offsets the
//! tracepoints' `format` files give (`prev_pid`, `prev_state`, `next_pid`,
//! `pid`). A helper thread drains the buffers every [`DRAIN_PERIOD`]; every
//! query drains first. A switch out with `prev_state` running (preempted)
//! makes the thread runnable, any other state blocked (a frozen thread
//! sleeps: blocked); a wake-up makes a blocked thread runnable; a switch in
//! makes it run. Needs root (or `CAP_PERFMON`) and tracefs, for the
//! tracepoints' ids and formats: where none is mounted, they are read in a
//! private mount namespace, so the host's mounts never change
//! ([`TracingDir`]).
//!
//! **Sampled** ([`Source::Sampled`], when perf is unavailable): the
//! tracked threads' `/proc/TID/task/TID/schedstat` (run and run-queue wait
//! time) is read every period; each period gives a running span as long
//! as the run time it added and a runnable span as long as the wait time,
//! placed at the period's start (schedstat's totals are exact where
//! sampling `stat`'s state letter would only estimate them; overlaps
//! between threads are not exact: results say they are sampled). Runs
//! have no CPU in this mode.
//!
//! Events record every thread of the CPUs until
//! [`SchedRecorder::track_only`] names the ones to keep (the daemon names
//! its pool's domains' threads), which bounds the memory on a busy host.
//! A thread first seen leaving a CPU gets no run before that event (since
//! when it ran is not known).
//!
//! Invariants: a thread's spans are in time order and do not overlap;
//! history older than the horizon is dropped; the perf file descriptors and
//! mappings are closed when the recorder is dropped (its thread is joined
//! first). Only what happens on the recorder's CPUs is seen: a wake-up
//! issued from another CPU is seen at the woken thread's `sched_wakeup` on
//! one of them, or not at all (then the thread goes from blocked straight
//! to running).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use gang_core::cosched::{StateSpan, VcpuState};
use gang_core::{CpuId, Nanos, SEC};
use perf_event::events::Tracepoint;
use perf_event::{Builder, Clock, SampleFlag, Sampler};

use crate::sys::{self, Tid};

mod format;
use format::Layout;
pub use format::{Event, Format, TracingDir, TRACEPOINTS};

/// How often the helper thread drains the ring buffers (or samples).
pub const DRAIN_PERIOD: Duration = Duration::from_millis(20);

/// How much history is kept by default.
pub const DEFAULT_HORIZON: Nanos = 10 * SEC;

/// Ring buffer per CPU and tracepoint, bytes (a switch record is ~100
/// bytes: 5,000 switches per CPU per drain period).
const RING_BYTES: usize = 512 * 1024;

/// `PERF_RECORD_SAMPLE`, `PERF_RECORD_LOST`.
const RECORD_SAMPLE: u32 = 9;
const RECORD_LOST: u32 = 2;

/// What went wrong setting a recorder up.
#[derive(Debug, thiserror::Error)]
pub enum SchedEventsError {
    /// No tracefs with the `sched` events.
    #[error("no tracing directory with sched events (tried {0}); mount tracefs")]
    NoTracefs(String),
    /// A tracepoint's `format` or `id` file could not be read or lacks a field.
    #[error("tracepoint {path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// perf_event_open or its mmap failed.
    #[error("perf event {what} on CPU {cpu}: {source}")]
    Perf {
        /// The tracepoint.
        what: &'static str,
        /// The CPU.
        cpu: CpuId,
        /// The error.
        source: std::io::Error,
    },
    /// The helper thread could not be started.
    #[error("starting the recorder's thread: {0}")]
    Thread(std::io::Error),
}

/// Where a recorder's spans come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The kernel's scheduler events: exact.
    Events,
    /// `/proc` schedstat sampled: totals exact, placement within a period not.
    Sampled,
}

/// One run of a thread on a CPU, `[start, end)`, CLOCK_MONOTONIC ns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Run {
    /// When it was switched in.
    pub start: Nanos,
    /// When it was switched out (the query's end while it still runs).
    pub end: Nanos,
    /// The CPU.
    pub cpu: CpuId,
}

/// One thread's history.
#[derive(Debug, Default)]
struct Track {
    spans: VecDeque<StateSpan>,
    /// The state it is in now and since when.
    open: Option<(VcpuState, Nanos)>,
    /// Its runs (events only: a sampled thread has no CPU).
    runs: VecDeque<Run>,
    /// The CPU it runs on now.
    cpu: Option<CpuId>,
}

impl Track {
    fn enter(&mut self, state: VcpuState, at: Nanos) {
        if let Some((s, since)) = self.open {
            if s == state {
                return;
            }
            let at = at.max(since);
            if at > since {
                self.spans.push_back(StateSpan::new(since, at, s));
            }
            if let (VcpuState::Running, Some(cpu)) = (s, self.cpu.take()) {
                if at > since {
                    self.runs.push_back(Run {
                        start: since,
                        end: at,
                        cpu,
                    });
                }
            }
            self.open = Some((state, at));
        } else {
            self.open = Some((state, at));
        }
    }

    fn last_time(&self) -> Nanos {
        self.open
            .map(|(_, t)| t)
            .or_else(|| self.spans.back().map(|s| s.end))
            .unwrap_or(0)
    }
}

/// The per-thread state machines fed by events (pure: unit-tested).
#[derive(Debug)]
pub struct Tracks {
    horizon: Nanos,
    tids: HashMap<Tid, Track>,
    /// Only these threads (`None`: every thread).
    only: Option<HashSet<Tid>>,
}

impl Tracks {
    /// Empty, keeping `horizon` of history.
    pub fn new(horizon: Nanos) -> Tracks {
        Tracks {
            horizon,
            tids: HashMap::new(),
            only: None,
        }
    }

    /// Records only `tids` from now on (and forgets the others' history).
    pub fn only(&mut self, tids: HashSet<Tid>) {
        self.tids.retain(|t, _| tids.contains(t));
        self.only = Some(tids);
    }

    /// Adds threads to those recorded (when only some are).
    pub fn also(&mut self, tids: impl IntoIterator<Item = Tid>) {
        if let Some(only) = &mut self.only {
            only.extend(tids);
        }
    }

    fn wanted(&self, tid: Tid) -> bool {
        tid != 0 && self.only.as_ref().is_none_or(|o| o.contains(&tid))
    }

    /// Applies one event at `at` on `cpu` (events in time order).
    pub fn apply(&mut self, at: Nanos, cpu: CpuId, event: Event) {
        match event {
            Event::Switch {
                prev,
                preempted,
                next,
            } => {
                if self.wanted(prev) {
                    // First seen leaving a CPU: since when it ran is not
                    // known (it may have become wanted just now), so no
                    // run is made up for it.
                    let t = self.tids.entry(prev).or_default();
                    let state = if preempted {
                        VcpuState::Runnable
                    } else {
                        VcpuState::Blocked
                    };
                    t.enter(state, at);
                }
                if self.wanted(next) {
                    let t = self.tids.entry(next).or_default();
                    t.enter(VcpuState::Running, at);
                    t.cpu = Some(cpu);
                }
            }
            Event::Wake { tid } => {
                if !self.wanted(tid) {
                    return;
                }
                let t = self.tids.entry(tid).or_default();
                match t.open {
                    Some((VcpuState::Blocked, _)) | None => t.enter(VcpuState::Runnable, at),
                    _ => {}
                }
            }
        }
    }

    /// Adds a sampled period `[from, to)` of `tid`: `run` ns running then
    /// `wait` ns runnable from `from`, blocked for the rest.
    pub fn add_sampled(&mut self, tid: Tid, from: Nanos, to: Nanos, run: Nanos, wait: Nanos) {
        let t = self.tids.entry(tid).or_default();
        let from = from.max(t.last_time());
        let len = to.saturating_sub(from);
        let run = run.min(len);
        let wait = wait.min(len - run);
        for (a, b, s) in [
            (from, from + run, VcpuState::Running),
            (from + run, from + run + wait, VcpuState::Runnable),
            (from + run + wait, to, VcpuState::Blocked),
        ] {
            if b > a {
                t.spans.push_back(StateSpan::new(a, b, s));
            }
        }
        t.open = None;
    }

    /// `tid`'s spans clipped to `[from, to)`; its current state extends to
    /// `to`. A thread never seen has none (blocked, for the metrics).
    pub fn spans(&self, tid: Tid, from: Nanos, to: Nanos) -> Vec<StateSpan> {
        let Some(t) = self.tids.get(&tid) else {
            return Vec::new();
        };
        t.spans
            .iter()
            .copied()
            .chain(
                t.open
                    .map(|(s, since)| StateSpan::new(since, to.max(since), s)),
            )
            .map(|s| StateSpan::new(s.start.max(from), s.end.min(to), s.state))
            .filter(|s| s.start < s.end)
            .collect()
    }

    /// `tid`'s runs that overlap `[from, to)` (not clipped); one still
    /// going ends at `to`.
    pub fn runs(&self, tid: Tid, from: Nanos, to: Nanos) -> Vec<Run> {
        let Some(t) = self.tids.get(&tid) else {
            return Vec::new();
        };
        let open = match (t.open, t.cpu) {
            (Some((VcpuState::Running, since)), Some(cpu)) => Some(Run {
                start: since,
                end: to.max(since),
                cpu,
            }),
            _ => None,
        };
        t.runs
            .iter()
            .copied()
            .chain(open)
            .filter(|r| r.end > from && r.start < to)
            .collect()
    }

    /// The state `tid` is in now, if known.
    pub fn state(&self, tid: Tid) -> Option<VcpuState> {
        self.tids.get(&tid).and_then(|t| t.open.map(|(s, _)| s))
    }

    /// Drops history older than the horizon, and threads blocked since.
    pub fn prune(&mut self, now: Nanos) {
        let keep_from = now.saturating_sub(self.horizon);
        self.tids.retain(|_, t| {
            while t.spans.front().is_some_and(|s| s.end < keep_from) {
                t.spans.pop_front();
            }
            while t.runs.front().is_some_and(|r| r.end < keep_from) {
                t.runs.pop_front();
            }
            !(t.spans.is_empty()
                && t.open
                    .is_none_or(|(s, since)| s == VcpuState::Blocked && since < keep_from))
        });
    }

    /// Threads with a history.
    pub fn len(&self) -> usize {
        self.tids.len()
    }

    /// Whether no thread has a history.
    pub fn is_empty(&self) -> bool {
        self.tids.is_empty()
    }
}

/// The perf side: one sampler per CPU and tracepoint.
struct Perf {
    /// (sampler, is sched_switch).
    samplers: Vec<(Sampler, bool)>,
    layout: Layout,
}

impl Perf {
    fn open(cpus: &[CpuId]) -> Result<Perf, SchedEventsError> {
        let dir = TracingDir::open()?;
        let switch = Format::read(&dir, "sched_switch")?;
        let waking = Format::read(&dir, "sched_waking")?;
        let wakeup = Format::read(&dir, "sched_wakeup")?;
        let sw_path = dir.path("sched_switch", "format");
        let wk_path = dir.path("sched_waking", "format");
        let layout = Layout {
            prev_pid: switch.field("prev_pid", &sw_path)?,
            prev_state: switch.field("prev_state", &sw_path)?,
            next_pid: switch.field("next_pid", &sw_path)?,
            wake_pid: waking.field("pid", &wk_path)?,
        };
        let wu_path = dir.path("sched_wakeup", "format");
        if wakeup.field("pid", &wu_path)? != layout.wake_pid {
            return Err(SchedEventsError::Format {
                path: wu_path,
                reason: "pid is not where sched_waking has it".into(),
            });
        }
        let mut samplers = Vec::new();
        for &cpu in cpus {
            for (what, f, is_switch) in [
                ("sched_switch", &switch, true),
                ("sched_waking", &waking, false),
                ("sched_wakeup", &wakeup, false),
            ] {
                let perf = |source| SchedEventsError::Perf { what, cpu, source };
                let mut sampler = Builder::new(Tracepoint::with_id(f.id))
                    .any_pid()
                    .one_cpu(cpu as usize)
                    .exclude_kernel(false)
                    .sample_period(1)
                    .sample(SampleFlag::TIME | SampleFlag::CPU | SampleFlag::RAW)
                    .clockid(Clock::MONOTONIC)
                    .build()
                    .map_err(perf)?
                    .sampled(RING_BYTES)
                    .map_err(perf)?;
                sampler.enable().map_err(perf)?;
                samplers.push((sampler, is_switch));
            }
        }
        Ok(Perf { samplers, layout })
    }

    /// Everything in the buffers now, in time order; counts lost records.
    fn drain(&mut self, lost: &AtomicU64) -> Vec<(Nanos, CpuId, Event)> {
        let mut out = Vec::new();
        for (sampler, is_switch) in &mut self.samplers {
            while let Some(record) = sampler.next_record() {
                let bytes = record.to_contiguous();
                match record.ty() {
                    RECORD_SAMPLE => {
                        // time u64, cpu u32, reserved u32, raw size u32, raw.
                        let time = bytes.get(0..8).and_then(|b| b.try_into().ok());
                        let cpu = bytes.get(8..12).and_then(|b| b.try_into().ok());
                        let size = bytes.get(16..20).and_then(|b| b.try_into().ok());
                        let (Some(time), Some(cpu), Some(size)) = (time, cpu, size) else {
                            continue;
                        };
                        let size = u32::from_ne_bytes(size) as usize;
                        let Some(raw) = bytes.get(20..20 + size) else {
                            continue;
                        };
                        if let Some(e) = self.layout.parse(*is_switch, raw) {
                            out.push((
                                u64::from_ne_bytes(time),
                                u32::from_ne_bytes(cpu) as CpuId,
                                e,
                            ));
                        }
                    }
                    RECORD_LOST => {
                        if let Some(n) = bytes.get(8..16).and_then(|b| b.try_into().ok()) {
                            lost.fetch_add(u64::from_ne_bytes(n), Ordering::Relaxed);
                        }
                    }
                    _ => {}
                }
            }
        }
        // A switch and a wake-up at the same instant: the wake-up first
        // (a thread woken and switched in at once was runnable for 0 ns).
        out.sort_by_key(|(t, _, e)| (*t, matches!(e, Event::Switch { .. })));
        out
    }
}

struct Shared {
    stop: AtomicBool,
    tracks: Mutex<Tracks>,
    perf: Mutex<Option<Perf>>,
    tracked: Mutex<HashSet<Tid>>,
    /// Per tracked thread (sampled mode): the last (time, run, wait).
    last_sample: Mutex<HashMap<Tid, (Nanos, Nanos, Nanos)>>,
    lost: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// Moves what the buffers hold (or a new sample) into the tracks.
    fn drain(&self) {
        let now = sys::monotonic_ns();
        let mut perf = lock(&self.perf);
        if let Some(p) = perf.as_mut() {
            let events = p.drain(&self.lost);
            let mut tracks = lock(&self.tracks);
            for (at, cpu, e) in events {
                tracks.apply(at, cpu, e);
            }
            tracks.prune(now);
            return;
        }
        drop(perf);
        let tids: Vec<Tid> = lock(&self.tracked).iter().copied().collect();
        let mut last = lock(&self.last_sample);
        let mut tracks = lock(&self.tracks);
        for tid in tids {
            let Some((run, wait)) = schedstat(tid) else {
                last.remove(&tid);
                lock(&self.tracked).remove(&tid);
                continue;
            };
            if let Some((t0, r0, w0)) = last.insert(tid, (now, run, wait)) {
                tracks.add_sampled(
                    tid,
                    t0,
                    now,
                    run.saturating_sub(r0),
                    wait.saturating_sub(w0),
                );
            }
        }
        tracks.prune(now);
    }
}

/// A thread's (run, wait) ns from `/proc/TID/task/TID/schedstat`.
fn schedstat(tid: Tid) -> Option<(Nanos, Nanos)> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/task/{tid}/schedstat")).ok()?;
    let mut f = text.split_whitespace().map(|v| v.parse::<Nanos>().ok());
    Some((f.next()??, f.next()??))
}

/// Records what the threads on some CPUs do (module docs).
pub struct SchedRecorder {
    shared: Arc<Shared>,
    source: Source,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SchedRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedRecorder")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl SchedRecorder {
    /// Records the scheduler events of `cpus`, keeping `horizon` of history.
    pub fn events(cpus: &[CpuId], horizon: Nanos) -> Result<SchedRecorder, SchedEventsError> {
        let perf = Perf::open(cpus)?;
        SchedRecorder::spawn(Some(perf), Source::Events, horizon)
    }

    /// Samples the threads given to [`SchedRecorder::track`] every
    /// [`DRAIN_PERIOD`].
    pub fn sampled(horizon: Nanos) -> Result<SchedRecorder, SchedEventsError> {
        SchedRecorder::spawn(None, Source::Sampled, horizon)
    }

    /// Events if perf allows, else sampled (the reason is logged).
    pub fn start(cpus: &[CpuId], horizon: Nanos) -> Result<SchedRecorder, SchedEventsError> {
        match SchedRecorder::events(cpus, horizon) {
            Ok(r) => Ok(r),
            Err(e) => {
                tracing::warn!("scheduler events unavailable ({e}): sampling /proc instead");
                SchedRecorder::sampled(horizon)
            }
        }
    }

    fn spawn(
        perf: Option<Perf>,
        source: Source,
        horizon: Nanos,
    ) -> Result<SchedRecorder, SchedEventsError> {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            tracks: Mutex::new(Tracks::new(horizon)),
            perf: Mutex::new(perf),
            tracked: Mutex::new(HashSet::new()),
            last_sample: Mutex::new(HashMap::new()),
            lost: AtomicU64::new(0),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("gang-sched-events".into())
            .spawn(move || {
                while !s.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(DRAIN_PERIOD);
                    s.drain();
                }
            })
            .map_err(SchedEventsError::Thread)?;
        Ok(SchedRecorder {
            shared,
            source,
            thread: Some(thread),
        })
    }

    /// Where the spans come from.
    pub fn source(&self) -> Source {
        self.source
    }

    /// Adds threads to those recorded: sampled, or (once
    /// [`SchedRecorder::track_only`] was called) kept from the events. A
    /// thread that ended is dropped at the next sample.
    pub fn track(&self, tids: impl IntoIterator<Item = Tid>) {
        let tids: Vec<Tid> = tids.into_iter().collect();
        lock(&self.shared.tracks).also(tids.iter().copied());
        lock(&self.shared.tracked).extend(tids);
    }

    /// Records only `tids` from now on (events: the others' history is
    /// forgotten, which bounds the memory on a busy host; sampled: only
    /// they are sampled). Until called, events record every thread.
    pub fn track_only(&self, tids: impl IntoIterator<Item = Tid>) {
        let tids: HashSet<Tid> = tids.into_iter().collect();
        self.drain();
        lock(&self.shared.tracks).only(tids.clone());
        *lock(&self.shared.tracked) = tids;
    }

    /// Records lost because a ring buffer was full.
    pub fn lost(&self) -> u64 {
        self.shared.lost.load(Ordering::Relaxed)
    }

    /// Moves everything recorded so far into the history.
    pub fn drain(&self) {
        self.shared.drain();
    }

    /// `tid`'s spans in `[from, to)`, CLOCK_MONOTONIC ns (drains first).
    pub fn spans(&self, tid: Tid, from: Nanos, to: Nanos) -> Vec<StateSpan> {
        self.drain();
        lock(&self.shared.tracks).spans(tid, from, to)
    }

    /// The spans of several threads, one drain for all.
    pub fn spans_of(&self, tids: &[Tid], from: Nanos, to: Nanos) -> Vec<Vec<StateSpan>> {
        self.drain();
        let tracks = lock(&self.shared.tracks);
        tids.iter().map(|&t| tracks.spans(t, from, to)).collect()
    }

    /// The runs of several threads overlapping `[from, to)` (events only).
    pub fn runs_of(&self, tids: &[Tid], from: Nanos, to: Nanos) -> Vec<Vec<Run>> {
        self.drain();
        let tracks = lock(&self.shared.tracks);
        tids.iter().map(|&t| tracks.runs(t, from, to)).collect()
    }

    /// The state `tid` is in now, if known (events only).
    pub fn state(&self, tid: Tid) -> Option<VcpuState> {
        self.drain();
        lock(&self.shared.tracks).state(tid)
    }
}

/// Where a domain's slots really ran: for each interval `(vcpu, cpu,
/// start, end)` the dispatchers gave it (pool time, as
/// [`crate::runtime::held_intervals`] gives them), the runs on `cpu` of
/// the threads `runs_of(vcpu)` that overlap it, as `(first run's start,
/// last run's end)` in pool time (`epoch`: the pool's epoch on
/// CLOCK_MONOTONIC), aligned with `held`. `None`: no such thread ran in
/// it. The runs are those up to `until` (CLOCK_MONOTONIC; a run still
/// going ends there): an end of `u64::MAX` (still held) stays so while the
/// last run goes on. `runs_of` lists must be sorted by start (as
/// [`SchedRecorder::runs_of`] gives each thread's); each interval looks at
/// the runs that can overlap it only (a binary search), so a trace of many
/// slots costs O(slots · log runs).
pub fn real_slots<'a>(
    held: &[(u32, CpuId, Nanos, Nanos)],
    runs_of: impl Fn(u32) -> &'a [Run],
    epoch: Nanos,
    until: Nanos,
) -> Vec<Option<(Nanos, Nanos)>> {
    // The longest run of each list bounds how far before an interval a
    // run that overlaps it can start.
    let mut longest: HashMap<u32, Nanos> = HashMap::new();
    held.iter()
        .map(|&(vcpu, cpu, start, end)| {
            let (a, b) = (epoch + start, epoch.saturating_add(end));
            let runs = runs_of(vcpu);
            let reach = *longest
                .entry(vcpu)
                .or_insert_with(|| runs.iter().map(|r| r.end - r.start).max().unwrap_or(0));
            let lo = runs.partition_point(|r| r.start < a.saturating_sub(reach));
            let hi = runs.partition_point(|r| r.start < b);
            let mut mine = runs[lo..hi.max(lo)]
                .iter()
                .filter(|r| r.cpu == cpu && r.end > a);
            let first = mine.next()?;
            let last_end = mine.map(|r| r.end).fold(first.end, Nanos::max);
            let real_end = if end == u64::MAX && last_end >= until {
                u64::MAX
            } else {
                last_end - epoch
            };
            Some((first.start.saturating_sub(epoch), real_end))
        })
        .collect()
}

/// Time in `state` within `spans`, ns.
pub fn time_in(spans: &[StateSpan], state: VcpuState) -> Nanos {
    spans
        .iter()
        .filter(|s| s.state == state)
        .map(|s| s.end - s.start)
        .sum()
}

impl Drop for SchedRecorder {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            crate::best_effort(
                "joining the scheduler-event recorder",
                t.join().map_err(|_| "it panicked"),
            );
        }
        // Closes every perf fd and unmaps its buffer.
        lock(&self.shared.perf).take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use VcpuState::*;

    #[test]
    fn events_make_running_runnable_and_blocked_spans() {
        let mut t = Tracks::new(SEC);
        let sw = |prev, preempted, next| Event::Switch {
            prev,
            preempted,
            next,
        };
        t.apply(10, 0, sw(0, false, 5));
        t.apply(20, 0, sw(5, true, 6)); // 5 preempted
        t.apply(30, 0, sw(6, false, 5)); // 6 sleeps, 5 back
        t.apply(40, 0, sw(5, false, 0)); // 5 sleeps
        t.apply(50, 1, Event::Wake { tid: 5 });
        t.apply(55, 1, Event::Wake { tid: 5 }); // repeat: no-op
        t.apply(60, 1, sw(0, false, 5));
        assert_eq!(
            t.spans(5, 0, 70),
            vec![
                StateSpan::new(10, 20, Running),
                StateSpan::new(20, 30, Runnable),
                StateSpan::new(30, 40, Running),
                StateSpan::new(40, 50, Blocked),
                StateSpan::new(50, 60, Runnable),
                StateSpan::new(60, 70, Running),
            ]
        );
        // First seen leaving (8 at 30): no run made up before it.
        t.apply(30, 1, sw(8, false, 0));
        assert_eq!(t.spans(8, 0, 40), vec![StateSpan::new(30, 40, Blocked)]);
        assert_eq!(
            t.spans(6, 0, 100),
            vec![
                StateSpan::new(20, 30, Running),
                StateSpan::new(30, 100, Blocked)
            ]
        );
        assert_eq!(t.state(5), Some(Running));
        let run = |start, end, cpu| Run { start, end, cpu };
        assert_eq!(
            t.runs(5, 0, 70),
            vec![run(10, 20, 0), run(30, 40, 0), run(60, 70, 1)]
        );
        assert_eq!(t.runs(5, 35, 65), vec![run(30, 40, 0), run(60, 65, 1)]);
        assert_eq!(t.spans(5, 25, 35).len(), 2);
        t.prune(10 * SEC);
        assert_eq!(t.state(6), None, "blocked since long: dropped");
    }

    #[test]
    fn real_slots_start_when_the_threads_ran() {
        let run = |start, end, cpu| Run { start, end, cpu };
        let v0 = [
            run(1_010, 1_050, 0),
            run(1_060, 1_090, 0),
            run(1_300, 1_400, 0),
        ];
        let v1 = [run(1_004, 1_100, 1)];
        let held = [
            (0, 0, 10, 100),
            (1, 1, 0, 100),
            (0, 0, 200, 250), // it did not run then
            (0, 1, 300, 400), // another CPU: not its runs
        ];
        let slots = real_slots(
            &held,
            |v| if v == 0 { &v0[..] } else { &v1[..] },
            1_000,
            u64::MAX,
        );
        assert_eq!(slots, vec![Some((10, 90)), Some((4, 100)), None, None]);
        // A run that began long before an interval still counts in it, and
        // a slot still held whose last run goes on to the query's end is
        // still running (u64::MAX); queried later, it ended.
        let v1 = [run(1_004, 1_100, 1)];
        let held = [(1, 1, 50, 60), (1, 1, 90, u64::MAX)];
        let at = |until| real_slots(&held, |_| &v1[..], 1_000, until);
        assert_eq!(at(1_100), vec![Some((4, 100)), Some((4, u64::MAX))]);
        assert_eq!(at(2_000), vec![Some((4, 100)), Some((4, 100))]);
    }

    #[test]
    fn only_the_tracked_threads_are_kept() {
        let mut t = Tracks::new(SEC);
        let sw = |prev, next| Event::Switch {
            prev,
            preempted: false,
            next,
        };
        t.apply(10, 0, sw(0, 5));
        t.only([7].into());
        assert!(t.is_empty(), "5's history is forgotten");
        t.apply(20, 0, sw(5, 7));
        t.apply(30, 0, sw(7, 8));
        t.also([8]);
        t.apply(40, 0, sw(9, 8));
        assert_eq!(t.len(), 2);
        assert_eq!(t.spans(7, 0, 50).len(), 2);
        assert_eq!(t.state(8), Some(Running));
    }

    #[test]
    fn sampled_periods_keep_totals() {
        let mut t = Tracks::new(SEC);
        t.add_sampled(3, 0, 100, 60, 10);
        t.add_sampled(3, 100, 200, 500, 0); // more than the period: clipped
        let s = t.spans(3, 0, 200);
        assert_eq!(time_in(&s, Running), 160);
        assert_eq!(time_in(&s, Runnable), 10);
        assert_eq!(time_in(&s, Blocked), 30);
    }
}
