//! The simulator's workloads on real threads, so that the same programs run
//! as real domains under the gang runtime and under plain Linux.
//!
//! A workload thread runs in a [`VcpuEnv`]: it passes the env's checkpoint
//! every few microseconds (where a gated thread parks when its slot ends) and
//! wraps every wait in [`VcpuEnv::blocking`], which tells the scheduler the
//! vCPU blocked and woke. Without a runtime (the Linux baseline) the same
//! code runs with an always-open gate.
//!
//! Work is a calibrated arithmetic loop ([`calibrate`]): `work = 1us` means
//! about one microsecond of computation on an otherwise idle CPU.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use gang_core::{Nanos, VcpuRef};

use crate::best_effort;
use crate::clock::Clock;
use crate::gate::VcpuControl;
use crate::log::EventLog;
use crate::sys;

/// A workload, per vCPU (all vCPUs of a domain run the same one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Workload {
    /// Always computing; progress counts work units.
    Busy,
    /// Compute `work`, then spin until every vCPU of the domain arrives.
    SpinBarrier {
        /// Work per round.
        work: Nanos,
    },
    /// Compute `work`, then block until every vCPU arrives.
    BlockingBarrier {
        /// Work per round.
        work: Nanos,
    },
    /// A job every `period` needing `exec` of computation, due by the next
    /// release; progress counts jobs, misses count late ones.
    Periodic {
        /// Release period.
        period: Nanos,
        /// Computation per job.
        exec: Nanos,
    },
    /// Compute `run`, sleep `sleep`, repeat; progress counts cycles.
    SleepWake {
        /// Computation per cycle.
        run: Nanos,
        /// Sleep per cycle.
        sleep: Nanos,
    },
}

/// [`calibrate`]'s figure, once known or set.
static ITERS_PER_US: AtomicU64 = AtomicU64::new(0);

/// Loop iterations per microsecond of [`work`], measured once per process
/// (unless [`set_calibration`] gave it).
pub fn calibrate() -> u64 {
    let known = ITERS_PER_US.load(Ordering::Relaxed);
    if known != 0 {
        return known;
    }
    let mut best = u64::MAX;
    for _ in 0..5 {
        let t0 = sys::monotonic_ns();
        work(200_000);
        best = best.min(sys::monotonic_ns() - t0);
    }
    let per_us = (200_000 * 1000 / best.max(1)).max(1);
    ITERS_PER_US.store(per_us, Ordering::Relaxed);
    per_us
}

/// Uses `per_us` iterations per microsecond instead of measuring: processes
/// whose work must be the same (jobs compared with each other) take one
/// figure measured once, rather than each its own, which a process
/// preempted or frozen while measuring would get far too low.
pub fn set_calibration(per_us: u64) {
    ITERS_PER_US.store(per_us.max(1), Ordering::Relaxed);
}

/// Computes for `iters` iterations of a dependent arithmetic chain.
#[inline(never)]
pub fn work(iters: u64) -> u64 {
    let mut x = black_box(0x9e37_79b9_7f4a_7c15u64);
    for _ in 0..iters {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
    }
    black_box(x)
}

/// A vCPU arrives at the domain's barrier: `None` if it was the last (the
/// round is done and the others are released), else the generation to wait
/// on.
fn arrive(state: &DomainState, vcpus: u32) -> Option<u32> {
    let gen = state.generation.load(Ordering::Acquire);
    if state.arrived.fetch_add(1, Ordering::AcqRel) + 1 == vcpus {
        state.arrived.store(0, Ordering::Relaxed);
        state.progress.fetch_add(1, Ordering::Relaxed);
        state.generation.fetch_add(1, Ordering::Release);
        None
    } else {
        Some(gen)
    }
}

/// State shared by the vCPU threads of one domain.
#[derive(Debug, Default)]
pub struct DomainState {
    /// Barrier rounds, jobs, cycles or work units done.
    pub progress: AtomicU64,
    /// Jobs finished after their deadline.
    pub misses: AtomicU64,
    /// Sleep-wake: from the end of each sleep to running again, ns.
    pub wake_latencies: std::sync::Mutex<Vec<Nanos>>,
    /// Spin-barrier, when set: record `(vcpu, pool time)` whenever a thread
    /// resumes after a gap of more than this (it was stopped from outside:
    /// frozen, preempted); 0 records nothing.
    pub resume_gap: AtomicU64,
    /// The recorded resumptions.
    pub resumes: std::sync::Mutex<Vec<(u32, Nanos)>>,
    arrived: AtomicU32,
    generation: AtomicU32,
}

/// Where a workload thread runs: its gate (if managed), the clock, where to
/// report blocking, and when to stop.
#[derive(Debug, Clone)]
pub struct VcpuEnv {
    /// The vCPU's control block (an always-open one when unmanaged).
    pub control: Arc<VcpuControl>,
    /// Pool time.
    pub clock: Clock,
    /// Where to report block and wake (None: unmanaged).
    pub log: Option<Arc<EventLog>>,
    /// Stop at this pool time.
    pub deadline: Nanos,
    /// Set by anyone to stop every thread of the run.
    pub halt: Arc<AtomicBool>,
}

impl VcpuEnv {
    /// An unmanaged env (plain Linux scheduling): the gate is always open.
    pub fn unmanaged(
        vcpu: VcpuRef,
        clock: Clock,
        deadline: Nanos,
        halt: Arc<AtomicBool>,
        trace: bool,
    ) -> Self {
        let control = Arc::new(VcpuControl::new(vcpu, trace));
        control.open(0);
        VcpuEnv {
            control,
            clock,
            log: None,
            deadline,
            halt,
        }
    }

    /// Whether to go on: parks at a closed gate; false once stopped or past
    /// the deadline.
    #[inline]
    pub fn checkpoint(&self) -> bool {
        self.control.checkpoint(&self.clock)
            && !self.halt.load(Ordering::Relaxed)
            && self.clock.now() < self.deadline
    }

    /// Runs `wait` (which blocks the thread) reporting the block and the
    /// wake-up to the scheduler; then passes a checkpoint. When the thread
    /// knows when it will wake (`wakes_at`, a timed sleep), the wake-up is
    /// reported before it sleeps, to take effect then: once awake, the
    /// thread may have no CPU to run on (another gang's vCPU holds it at the
    /// same priority) until its own domain is dispatched, which needs the
    /// scheduler to know it woke. Otherwise whoever wakes it should report it
    /// ([`VcpuEnv::report_woke`]); the thread reports it too, once it runs.
    pub fn blocking(&self, wakes_at: Option<Nanos>, wait: impl FnOnce()) -> bool {
        self.control.finish(&self.clock);
        let me = self.control.vcpu;
        if let Some(log) = &self.log {
            log.append(gang_core::Event::VcpuBlocked(me));
            if let Some(at) = wakes_at {
                log.append_at(at, gang_core::Event::VcpuWoke(me));
            }
        }
        wait();
        self.report_woke(me);
        self.checkpoint()
    }

    /// Reports that `vcpu` (this thread's or a partner's) is runnable again.
    pub fn report_woke(&self, vcpu: VcpuRef) {
        if let Some(log) = &self.log {
            log.append(gang_core::Event::VcpuWoke(vcpu));
        }
    }
}

/// Runs `workload` as vCPU `index` of a domain of `vcpus` vCPUs until the
/// env says stop. Returns when done; the caller joins.
pub fn run(workload: Workload, env: &VcpuEnv, state: &DomainState, vcpus: u32) {
    let per_us = calibrate();
    let iters = |ns: Nanos| (ns * per_us / 1000).max(1);
    if !env.checkpoint() {
        env.control.finish(&env.clock);
        return;
    }
    match workload {
        Workload::Busy => {
            let unit = iters(1000);
            while env.checkpoint() {
                work(unit);
                state.progress.fetch_add(1, Ordering::Relaxed);
            }
        }
        Workload::SpinBarrier { work: w } => {
            let unit = iters(w);
            let gap = state.resume_gap.load(Ordering::Relaxed);
            let mut last = env.clock.now();
            let mut note_resume = |now: Nanos| {
                if gap > 0 && now - last > gap {
                    if let Ok(mut r) = state.resumes.lock() {
                        r.push((env.control.vcpu.vcpu, now));
                    }
                }
                last = now;
            };
            'rounds: while env.checkpoint() {
                if gap > 0 {
                    note_resume(env.clock.now());
                }
                work(unit);
                if let Some(gen) = arrive(state, vcpus) {
                    let mut spins = 0u32;
                    while state.generation.load(Ordering::Acquire) == gen {
                        spins = spins.wrapping_add(1);
                        if spins.is_multiple_of(64) {
                            if !env.checkpoint() {
                                break 'rounds;
                            }
                            if gap > 0 {
                                note_resume(env.clock.now());
                            }
                        }
                        std::hint::spin_loop();
                    }
                }
            }
        }
        Workload::BlockingBarrier { work: w } => {
            let unit = iters(w);
            'rounds: while env.checkpoint() {
                work(unit);
                if let Some(gen) = arrive(state, vcpus) {
                    let go_on = env.blocking(None, || {
                        while state.generation.load(Ordering::Acquire) == gen
                            && !env.halt.load(Ordering::Relaxed)
                            && env.clock.now() < env.deadline
                        {
                            sys::futex_wait(&state.generation, gen, Some(10_000_000));
                        }
                    });
                    if !go_on {
                        break 'rounds;
                    }
                } else {
                    // The waker reports the partners' wake-ups: they may
                    // have no CPU to run on until their domain is dispatched.
                    for v in (0..vcpus).filter(|&v| v != env.control.vcpu.vcpu) {
                        env.report_woke(VcpuRef {
                            domain: env.control.vcpu.domain,
                            vcpu: v,
                        });
                    }
                    sys::futex_wake_all(&state.generation);
                }
            }
            // Wake partners waiting at a barrier we will never reach.
            state.generation.fetch_add(1, Ordering::Release);
            sys::futex_wake_all(&state.generation);
        }
        Workload::Periodic { period, exec } => {
            let chunks = (exec / 1000).max(1);
            let unit = iters(exec / chunks);
            let mut release = env.clock.now().div_ceil(period) * period;
            'jobs: loop {
                let target = release.min(env.deadline);
                let go_on = env.blocking(Some(target), || {
                    env.clock.wait_until(target, 0);
                });
                if !go_on {
                    break;
                }
                for _ in 0..chunks {
                    if !env.checkpoint() {
                        break 'jobs;
                    }
                    work(unit);
                }
                state.progress.fetch_add(1, Ordering::Relaxed);
                let done = env.clock.now();
                if done > release + period {
                    state.misses.fetch_add(1, Ordering::Relaxed);
                }
                release += period;
                while release + period < done {
                    release += period; // skipped releases are not queued
                }
            }
        }
        Workload::SleepWake { run: r, sleep } => {
            let chunks = (r / 1000).max(1);
            let unit = iters(r / chunks);
            'cycles: loop {
                for _ in 0..chunks {
                    if !env.checkpoint() {
                        break 'cycles;
                    }
                    work(unit);
                }
                state.progress.fetch_add(1, Ordering::Relaxed);
                let until = (env.clock.now() + sleep).min(env.deadline);
                if !env.blocking(Some(until), || {
                    env.clock.wait_until(until, 0);
                }) {
                    break;
                }
                // Passed the gate: the wake-up reached the scheduler and a
                // slot started (or the gate was open all along).
                if let Ok(mut l) = state.wake_latencies.lock() {
                    l.push(env.clock.now().saturating_sub(until));
                }
            }
        }
    }
    env.control.finish(&env.clock);
}

/// A program of the shape people gang-schedule, as a whole process (a
/// group, see `group`): the calling thread is its main thread and sleeps
/// (it reports, or waits), `workers` threads compute `work` and meet at a
/// spin barrier (progress: rounds), more busy workers may be added later
/// ([`Program::add_busy_worker`], progress in work units), and every
/// thread, the main one included, has the same name. Nothing is pinned:
/// the threads run where their affinity lets them.
#[derive(Debug)]
pub struct Program {
    /// The barrier workers' state (progress: rounds).
    pub barrier: Arc<DomainState>,
    /// The busy workers' state (progress: 1 µs work units).
    pub busy: Arc<DomainState>,
    name: String,
    halt: Arc<AtomicBool>,
    clock: Clock,
    threads: Vec<std::thread::JoinHandle<()>>,
    tids: std::sync::mpsc::Receiver<sys::Tid>,
    tx: std::sync::mpsc::Sender<sys::Tid>,
    known: Vec<sys::Tid>,
}

/// Names the calling thread (its `comm`, at most 15 bytes).
pub fn name_current_thread(name: &str) -> std::io::Result<()> {
    let short: String = name.chars().take(15).collect();
    std::fs::write(format!("/proc/self/task/{}/comm", sys::gettid()), short)
}

impl Program {
    /// Starts the barrier workers and names the calling thread `name`.
    pub fn start(name: &str, workers: u32, work: Nanos) -> std::io::Result<Program> {
        name_current_thread(name)?;
        let (tx, tids) = std::sync::mpsc::channel();
        let mut p = Program {
            barrier: Arc::new(DomainState::default()),
            busy: Arc::new(DomainState::default()),
            name: name.to_string(),
            halt: Arc::new(AtomicBool::new(false)),
            clock: Clock::with_epoch(sys::monotonic_ns()),
            threads: Vec::new(),
            tids,
            tx,
            known: vec![sys::gettid()],
        };
        for v in 0..workers {
            let state = Arc::clone(&p.barrier);
            p.spawn(v, move |env| {
                run(Workload::SpinBarrier { work }, env, &state, workers)
            })?;
        }
        Ok(p)
    }

    fn spawn(
        &mut self,
        index: u32,
        body: impl FnOnce(&VcpuEnv) + Send + 'static,
    ) -> std::io::Result<()> {
        let env = VcpuEnv::unmanaged(
            VcpuRef {
                domain: gang_core::DomainId(1),
                vcpu: index,
            },
            self.clock,
            Nanos::MAX,
            Arc::clone(&self.halt),
            false,
        );
        let tx = self.tx.clone();
        let t = std::thread::Builder::new()
            .name(self.name.chars().take(15).collect())
            .spawn(move || {
                // The receiver goes with the workload, which may be gone.
                best_effort("reporting a worker's thread id", tx.send(sys::gettid()));
                body(&env);
            })?;
        self.threads.push(t);
        Ok(())
    }

    /// Starts one more worker, computing on its own (not at the barrier).
    pub fn add_busy_worker(&mut self) -> std::io::Result<()> {
        let state = Arc::clone(&self.busy);
        let index = self.threads.len() as u32;
        self.spawn(index, move |env| run(Workload::Busy, env, &state, 1))
    }

    /// Every thread's TID so far, the main thread's first, then the
    /// workers' in start order (waits until each started one reported).
    pub fn tids(&mut self) -> Vec<sys::Tid> {
        while self.known.len() < self.threads.len() + 1 {
            match self.tids.recv() {
                Ok(t) => self.known.push(t),
                Err(_) => break,
            }
        }
        self.known.clone()
    }

    /// Stops every worker and joins them.
    pub fn stop(mut self) {
        self.halt.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            best_effort("stopping a worker", t.join().map_err(|_| "it panicked"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gang_core::DomainId;

    fn spawn_unmanaged(workload: Workload, vcpus: u32, millis: u64) -> Arc<DomainState> {
        let clock = Clock::new(1000);
        let deadline = clock.now() + millis * 1_000_000;
        let halt = Arc::new(AtomicBool::new(false));
        let state = Arc::new(DomainState::default());
        let threads: Vec<_> = (0..vcpus)
            .map(|v| {
                let env = VcpuEnv::unmanaged(
                    VcpuRef {
                        domain: DomainId(1),
                        vcpu: v,
                    },
                    clock,
                    deadline,
                    Arc::clone(&halt),
                    false,
                );
                let state = Arc::clone(&state);
                std::thread::spawn(move || run(workload, &env, &state, vcpus))
            })
            .collect();
        for t in threads {
            t.join().expect("workload thread");
        }
        state
    }

    #[test]
    fn calibration_is_plausible() {
        let per_us = calibrate();
        assert!(
            per_us > 10 && per_us < 100_000,
            "{per_us} iterations per us"
        );
    }

    #[test]
    fn spin_barrier_makes_rounds_and_stops_at_its_deadline() {
        let state = spawn_unmanaged(Workload::SpinBarrier { work: 1000 }, 2, 50);
        let rounds = state.progress.load(Ordering::Relaxed);
        assert!(
            rounds > 100,
            "{rounds} rounds, {} iterations per us",
            calibrate()
        );
    }

    #[test]
    fn blocking_barrier_and_sleep_wake_progress() {
        let s = spawn_unmanaged(Workload::BlockingBarrier { work: 5000 }, 2, 50);
        assert!(s.progress.load(Ordering::Relaxed) > 10);
        let s = spawn_unmanaged(
            Workload::SleepWake {
                run: 100_000,
                sleep: 1_000_000,
            },
            1,
            30,
        );
        assert!(s.progress.load(Ordering::Relaxed) >= 5);
    }

    #[test]
    fn periodic_jobs_meet_deadlines_on_an_idle_cpu() {
        let s = spawn_unmanaged(
            Workload::Periodic {
                period: 5_000_000,
                exec: 500_000,
            },
            1,
            60,
        );
        let jobs = s.progress.load(Ordering::Relaxed);
        assert!(jobs >= 8, "{jobs} jobs");
        assert!(s.misses.load(Ordering::Relaxed) <= 2);
    }
}
