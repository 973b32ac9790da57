//! Measurements of the two ways of stopping an adopted thread (a freezer,
//! a priority flip), used by a test and by the bench.
//!
//! Invariants: every thread spawned here ends by its own deadline whatever
//! happens (even a SCHED_FIFO one), and the temporary freezer cgroup and
//! state directory are removed before returning.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gang_core::CpuId;

use crate::best_effort;

use super::{io_err, CgroupError, Cgroups, Hierarchy, Result};

/// Latency percentiles of a sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencyStats {
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile (nearest rank).
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
}

impl LatencyStats {
    /// Percentiles of `samples` (nearest-rank).
    pub fn from_samples(mut samples: Vec<Duration>) -> LatencyStats {
        if samples.is_empty() {
            return LatencyStats::default();
        }
        samples.sort_unstable();
        let n = samples.len();
        let rank = |q: f64| samples[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        LatencyStats {
            n,
            p50: rank(0.50),
            p99: rank(0.99),
            max: samples[n - 1],
        }
    }
}

impl std::fmt::Display for LatencyStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs (n={})",
            self.p50.as_secs_f64() * 1e6,
            self.p99.as_secs_f64() * 1e6,
            self.max.as_secs_f64() * 1e6,
            self.n
        )
    }
}

/// Freezer latencies for a spinning thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FreezeStats {
    /// From writing FROZEN until the kernel reports FROZEN.
    pub freeze: LatencyStats,
    /// From writing FROZEN until the thread's last progress.
    pub stopped: LatencyStats,
    /// From writing THAWED until the kernel reports THAWED.
    pub thaw: LatencyStats,
    /// From writing THAWED until the thread progresses again.
    pub resumed: LatencyStats,
}

/// Priority-flip latencies for a spinning thread pinned to a CPU shared with
/// a normal-priority spinner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlipStats {
    /// From the flip to SCHED_IDLE until the thread's last progress.
    pub stop: LatencyStats,
    /// From the flip to SCHED_FIFO until the thread progresses again.
    pub start: LatencyStats,
    /// Flips to idle after which the thread did not stop within 20 ms.
    pub not_stopped: usize,
}

/// A thread spinning until told to stop or until its own deadline, recording
/// the time of its last progress.
struct Spinner {
    shared: Arc<SpinShared>,
    handle: Option<JoinHandle<()>>,
}

struct SpinShared {
    base: Instant,
    last_ns: AtomicU64,
    tid: AtomicI32,
    stop: AtomicBool,
    iterations: AtomicUsize,
}

impl Spinner {
    fn spawn(base: Instant, cpu: Option<CpuId>, lifetime: Duration) -> io::Result<Spinner> {
        let shared = Arc::new(SpinShared {
            base,
            last_ns: AtomicU64::new(0),
            tid: AtomicI32::new(0),
            stop: AtomicBool::new(false),
            iterations: AtomicUsize::new(0),
        });
        let s = shared.clone();
        let handle = std::thread::Builder::new()
            .name("gang-spin".into())
            .spawn(move || {
                let deadline = Instant::now() + lifetime;
                if let Some(cpu) = cpu {
                    let mut set = rustix::thread::CpuSet::new();
                    set.set(cpu as usize);
                    best_effort(
                        format_args!("pinning the measuring spinner to CPU {cpu}"),
                        rustix::thread::sched_setaffinity(None, &set),
                    );
                }
                s.tid.store(
                    rustix::thread::gettid().as_raw_nonzero().get(),
                    Ordering::Release,
                );
                // The deadline is checked by the thread itself, so even a
                // SCHED_FIFO spinner ends.
                while !s.stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    s.last_ns.store(nanos(s.base, now), Ordering::Release);
                    s.iterations.fetch_add(1, Ordering::Relaxed);
                }
            })?;
        let sp = Spinner {
            shared,
            handle: Some(handle),
        };
        while sp.tid() == 0 {
            std::thread::yield_now();
        }
        Ok(sp)
    }

    fn tid(&self) -> i32 {
        self.shared.tid.load(Ordering::Acquire)
    }

    fn last(&self) -> u64 {
        self.shared.last_ns.load(Ordering::Acquire)
    }

    /// Waits until the spinner's progress is unchanged for `quiet`, up to
    /// `limit`; returns its last progress time, or `None` if it kept running.
    fn wait_stopped(&self, quiet: Duration, limit: Duration) -> Option<u64> {
        let start = Instant::now();
        let mut last = self.last();
        let mut since = Instant::now();
        while start.elapsed() < limit {
            let now = self.last();
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return Some(last);
            }
            std::hint::spin_loop();
        }
        None
    }

    /// Waits until the spinner progresses after `after_ns`; returns the time
    /// of that progress.
    fn wait_running(&self, after_ns: u64, limit: Duration) -> Option<u64> {
        let start = Instant::now();
        while start.elapsed() < limit {
            let now = self.last();
            if now > after_ns {
                return Some(now);
            }
            std::hint::spin_loop();
        }
        None
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            best_effort(
                "stopping the measuring spinner",
                h.join().map_err(|_| "it panicked"),
            );
        }
    }
}

fn nanos(base: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(base).as_nanos() as u64
}

fn since(t0: u64, t: u64) -> Duration {
    Duration::from_nanos(t.saturating_sub(t0))
}

static MEASURE_SEQ: AtomicUsize = AtomicUsize::new(0);

/// Measures freezing and thawing a spinning thread, `iterations` times, in a
/// temporary freezer cgroup (`gangmeasure.<pid>-<n>`), removed afterwards.
/// On a busy host fewer iterations may run (see the stats' `n`): the spinner
/// ends by its own deadline, and measuring stops well before it.
pub fn measure_freezer(iterations: usize) -> Result<FreezeStats> {
    let pid = rustix::process::getpid().as_raw_nonzero().get();
    let n = MEASURE_SEQ.fetch_add(1, Ordering::Relaxed);
    let state_dir = std::env::temp_dir().join(format!("gang-measure-{pid}-{n}"));
    let base = Instant::now();
    let lifetime = Duration::from_millis(50) * (iterations as u32).max(1) + Duration::from_secs(2);
    // Declared before the freezer so that it is dropped after it (thawed).
    let spinner = Spinner::spawn(base, None, lifetime).map_err(io_err(Path::new("spawn")))?;
    let freezer = Cgroups::new(Hierarchy::detect()?, &state_dir, "gangmeasure")
        .thread_freezer(&format!("{pid}-{n}"), spinner.tid())?;
    let (mut fr, mut st, mut th, mut re) = (vec![], vec![], vec![], vec![]);
    for _ in 0..iterations {
        // Well inside the spinner's lifetime: fewer samples on a busy host.
        if base.elapsed() > lifetime / 2 {
            break;
        }
        std::thread::sleep(Duration::from_micros(300));
        let t0 = nanos(base, Instant::now());
        fr.push(freezer.freeze()?);
        if let Some(last) =
            spinner.wait_stopped(Duration::from_micros(200), Duration::from_millis(20))
        {
            st.push(since(t0, last));
        }
        std::thread::sleep(Duration::from_micros(300));
        let t1 = nanos(base, Instant::now());
        th.push(freezer.thaw()?);
        if let Some(run) = spinner.wait_running(t1, Duration::from_millis(50)) {
            re.push(since(t1, run));
        }
    }
    freezer.remove()?;
    drop(spinner);
    best_effort(
        format_args!("removing {}", state_dir.display()),
        fs::remove_dir(&state_dir),
    );
    Ok(FreezeStats {
        freeze: LatencyStats::from_samples(fr),
        stopped: LatencyStats::from_samples(st),
        thaw: LatencyStats::from_samples(th),
        resumed: LatencyStats::from_samples(re),
    })
}

/// Measures stopping and restarting a spinning thread by priority flips.
///
/// A spinner and a normal-priority competitor are pinned to `cpu`; `flip(tid,
/// true)` must make `tid` SCHED_FIFO and `flip(tid, false)` SCHED_IDLE (the
/// caller's `sys` module does the system call). Both threads end by their own
/// deadline whatever happens (measuring stops well before it, so a busy host
/// gives fewer samples); the spinner is flipped to idle before return.
pub fn measure_priority_flip(
    iterations: usize,
    cpu: CpuId,
    flip: impl Fn(i32, bool) -> io::Result<()>,
) -> Result<FlipStats> {
    let base = Instant::now();
    let lifetime = Duration::from_millis(30) * (iterations as u32).max(1) + Duration::from_secs(1);
    let spawn_err = io_err(Path::new("spawn"));
    let competitor = Spinner::spawn(base, Some(cpu), lifetime).map_err(spawn_err)?;
    let spinner = Spinner::spawn(base, Some(cpu), lifetime).map_err(io_err(Path::new("spawn")))?;
    let tid = spinner.tid();
    let do_flip = |fifo: bool| flip(tid, fifo).map_err(|source| CgroupError::Flip { tid, source });
    let run = || -> Result<FlipStats> {
        let (mut stop, mut start, mut not_stopped) = (vec![], vec![], 0);
        do_flip(false)?;
        spinner.wait_stopped(Duration::from_micros(500), Duration::from_millis(50));
        for _ in 0..iterations {
            // Well inside the spinners' lifetime: fewer samples on a busy host.
            if base.elapsed() > lifetime / 2 {
                break;
            }
            let t0 = nanos(base, Instant::now());
            do_flip(true)?;
            if let Some(run) = spinner.wait_running(t0, Duration::from_millis(20)) {
                start.push(since(t0, run));
            }
            std::thread::sleep(Duration::from_micros(500));
            let t1 = nanos(base, Instant::now());
            do_flip(false)?;
            match spinner.wait_stopped(Duration::from_micros(200), Duration::from_millis(20)) {
                Some(last) => stop.push(since(t1, last)),
                None => not_stopped += 1,
            }
        }
        Ok(FlipStats {
            stop: LatencyStats::from_samples(stop),
            start: LatencyStats::from_samples(start),
            not_stopped,
        })
    };
    let result = run();
    best_effort(
        format_args!("flipping the spinner {tid} to idle"),
        flip(tid, false),
    );
    drop(spinner);
    drop(competitor);
    result
}
