//! Lending the host's slot to the gangs while the host has nothing to run.
//!
//! Every pool CPU keeps a time-triggered slot for the host (Domain-0, see
//! `runtime::host_slot_for`). Reserved whether used or not, it caps the
//! gangs' share of the pool at about 92%. When the kernel's real-time limit
//! is lifted (`rtlimit`), nothing forces real-time threads off a CPU any
//! more, so the slot can follow the host's demand instead: the pool is made
//! with the host as its *lending* domain (`PoolConfig::lending`), and this
//! module's monitor blocks the host's vCPUs while no host task waits for a
//! CPU (the slot then goes to best-effort gangs) and wakes them as soon as
//! one does (the host takes its slot back at the next boundary).
//!
//! **Signal.** The kernel's pressure-stall information for CPUs
//! (`/proc/pressure/cpu`, "some" total): the time during which at least one
//! runnable task waited for a CPU. Gated vCPU threads sleep (futex or
//! freezer), so they add nothing; running ones wait only while a dispatcher
//! preempts them around a switch (well under 1% of the time). A host task
//! left runnable on a lent CPU shows up as waiting at once, for the whole
//! time it waits. The figure is machine-wide: a host busy on CPUs outside
//! the pool keeps the slot too (the safe side).
//!
//! **Invariants.** Lending is decided by [`LendPolicy`], a pure state
//! machine with hysteresis (reclaim on one busy tick, lend after a run of
//! quiet ones), so a steady host does not flap. The monitor never leaves the
//! slot lent behind it: when it stops, or cannot read the pressure, the host
//! gets its slot back.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use gang_core::{Event, Nanos, VcpuRef};

use crate::log::EventLog;
use crate::sys::{self, SchedPolicy};

/// Where the kernel reports CPU pressure.
pub const PSI_CPU: &str = "/proc/pressure/cpu";

/// Errors of the lending monitor.
#[derive(Debug, thiserror::Error)]
pub enum LendError {
    /// The kernel has no pressure-stall information (`CONFIG_PSI`, or
    /// booted with `psi=0`).
    #[error("cannot read {path} (a kernel with pressure-stall information is needed to lend the host slot): {source}")]
    Unavailable {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file did not have the expected "some ... total=N" line.
    #[error("unexpected contents of {0}")]
    Format(String),
}

/// Reads the machine's cumulative CPU "some" stall time.
#[derive(Debug)]
pub struct Pressure {
    file: File,
    path: String,
    buf: Vec<u8>,
}

impl Pressure {
    /// Opens the kernel's CPU pressure file.
    pub fn open() -> Result<Pressure, LendError> {
        Pressure::open_at(Path::new(PSI_CPU))
    }

    /// Opens a pressure file at `path` (tests use a plain file).
    pub fn open_at(path: &Path) -> Result<Pressure, LendError> {
        let file = File::open(path).map_err(|source| LendError::Unavailable {
            path: path.display().to_string(),
            source,
        })?;
        let mut p = Pressure {
            file,
            path: path.display().to_string(),
            buf: vec![0; 256],
        };
        p.some_total_ns()?;
        Ok(p)
    }

    /// The total time, in ns, during which some runnable task waited for a
    /// CPU, since boot.
    pub fn some_total_ns(&mut self) -> Result<Nanos, LendError> {
        // A pread from offset 0 regenerates the file: one system call.
        let n = self
            .file
            .read_at(&mut self.buf, 0)
            .map_err(|source| LendError::Unavailable {
                path: self.path.clone(),
                source,
            })?;
        parse_some_total(&self.buf[..n])
            .map(|us| us * 1000)
            .ok_or_else(|| LendError::Format(self.path.clone()))
    }
}

/// The "some" line's `total=` (µs) of a pressure file.
pub fn parse_some_total(text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?;
    let line = text.lines().find(|l| l.starts_with("some "))?;
    let total = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?;
    total.parse().ok()
}

/// Whether the host's slot is lent, and when to change that: a pure state
/// machine fed one pressure figure per tick.
#[derive(Debug, Clone, PartialEq)]
pub struct LendPolicy {
    /// Reclaim at once when tasks waited this fraction of a tick or more.
    pub reclaim_above: f64,
    /// A tick is quiet when tasks waited less than this fraction of it.
    pub quiet_below: f64,
    /// Lend after this many quiet ticks in a row.
    pub quiet_ticks: u32,
    lent: bool,
    quiet_run: u32,
}

/// What the monitor must do after a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LendAction {
    /// Block the host's vCPUs: its slot goes to the gangs.
    Lend,
    /// Wake the host's vCPUs: it takes its slot back.
    Reclaim,
}

impl LendPolicy {
    /// Reclaims at 20% waiting in a tick, lends after `quiet_ticks` ticks
    /// below 10%. Our own threads wait too: a dispatcher preempts the
    /// outgoing vCPU for its spin before each switch (60 µs), up to 6% of
    /// the time with a switch every 1 ms grain; a host task left on a lent
    /// CPU waits all the time.
    pub fn new(quiet_ticks: u32) -> Self {
        LendPolicy {
            reclaim_above: 0.2,
            quiet_below: 0.1,
            quiet_ticks,
            lent: false,
            quiet_run: 0,
        }
    }

    /// Whether the slot is lent now.
    pub fn lent(&self) -> bool {
        self.lent
    }

    /// Takes the fraction of the last tick during which some task waited
    /// for a CPU; says what to change, if anything.
    pub fn tick(&mut self, waiting: f64) -> Option<LendAction> {
        if waiting >= self.reclaim_above {
            self.quiet_run = 0;
            if self.lent {
                self.lent = false;
                return Some(LendAction::Reclaim);
            }
            return None;
        }
        if waiting < self.quiet_below {
            self.quiet_run = self.quiet_run.saturating_add(1);
        } else {
            self.quiet_run = 0;
        }
        if !self.lent && self.quiet_run >= self.quiet_ticks {
            self.lent = true;
            return Some(LendAction::Lend);
        }
        None
    }
}

/// What the monitor did, for reports.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct LendReport {
    /// Time the host's slot was lent, in ns.
    pub lent_ns: Nanos,
    /// Time monitored, in ns.
    pub monitored_ns: Nanos,
    /// How many times the host took its slot back.
    pub reclaims: u64,
    /// Why the monitor stopped early, if it did (the slot stays with the
    /// host from then on).
    pub failed: Option<String>,
}

/// The monitor's settings.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// The host domain's vCPUs (one per pool CPU).
    pub host_vcpus: Vec<VcpuRef>,
    /// How often pressure is read.
    pub tick: Nanos,
    /// The decision rule.
    pub policy: LendPolicy,
    /// SCHED_FIFO priority of the monitor (above vCPUs, below dispatchers:
    /// it must run while gangs hold every CPU).
    pub priority: i32,
}

/// Runs the monitor until `stop` is set (and `seq` bumped, as the
/// dispatchers are stopped), keeping `lent` up to date for readers; gives
/// the slot back to the host on every exit.
pub fn monitor(
    config: MonitorConfig,
    mut pressure: Pressure,
    log: Arc<EventLog>,
    stop: &AtomicBool,
    seq: &AtomicU32,
    lent: &AtomicBool,
) -> LendReport {
    let mut report = LendReport::default();
    let mut policy = config.policy;
    if let Err(e) = sys::set_policy(0, SchedPolicy::Fifo(config.priority)) {
        report.failed = Some(format!("real-time priority for the monitor: {e}"));
        return report;
    }
    let set_host = |runnable: bool| {
        lent.store(!runnable, Ordering::Release);
        for &v in &config.host_vcpus {
            log.append(if runnable {
                Event::VcpuWoke(v)
            } else {
                Event::VcpuBlocked(v)
            });
        }
    };
    let mut last = (sys::monotonic_ns(), pressure.some_total_ns().unwrap_or(0));
    while !stop.load(Ordering::Acquire) {
        let s = seq.load(Ordering::Acquire);
        sys::futex_wait(seq, s, Some(config.tick));
        if stop.load(Ordering::Acquire) {
            break;
        }
        let now = sys::monotonic_ns();
        let total = match pressure.some_total_ns() {
            Ok(t) => t,
            Err(e) => {
                report.failed = Some(e.to_string());
                break;
            }
        };
        let elapsed = now.saturating_sub(last.0);
        if elapsed < config.tick / 2 {
            continue; // woken early by an unrelated log append
        }
        let waiting = total.saturating_sub(last.1) as f64 / elapsed as f64;
        report.monitored_ns += elapsed;
        if policy.lent() {
            report.lent_ns += elapsed;
        }
        last = (now, total);
        match policy.tick(waiting) {
            Some(LendAction::Lend) => set_host(false),
            Some(LendAction::Reclaim) => {
                report.reclaims += 1;
                set_host(true);
            }
            None => {}
        }
    }
    if policy.lent() {
        set_host(true);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernel_format() {
        let text = b"some avg10=0.12 avg60=2.52 avg300=9.75 total=1885406699\n\
                     full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(parse_some_total(text), Some(1_885_406_699));
        assert_eq!(parse_some_total(b"full total=3\n"), None);
        assert_eq!(parse_some_total(b"some avg10=0.00 total=x\n"), None);
    }

    #[test]
    fn lends_after_a_quiet_run_and_reclaims_on_one_busy_tick() {
        let mut p = LendPolicy::new(3);
        assert_eq!(p.tick(0.0), None);
        assert_eq!(p.tick(0.07), None);
        assert_eq!(p.tick(0.0), Some(LendAction::Lend));
        assert!(p.lent());
        assert_eq!(p.tick(0.0), None, "stays lent");
        assert_eq!(p.tick(0.15), None, "below the reclaim mark");
        assert_eq!(p.tick(0.5), Some(LendAction::Reclaim));
        assert!(!p.lent());
        assert_eq!(p.tick(0.5), None, "already held");
    }

    #[test]
    fn a_middling_tick_breaks_the_quiet_run() {
        let mut p = LendPolicy::new(2);
        assert_eq!(p.tick(0.0), None);
        assert_eq!(p.tick(0.15), None, "not quiet, not busy");
        assert_eq!(p.tick(0.0), None, "the run starts again");
        assert_eq!(p.tick(0.0), Some(LendAction::Lend));
    }

    /// The monitor thread against a pressure file the test writes: it lends
    /// after the quiet run, reclaims on a busy tick, keeps `lent` true to
    /// the log, and gives the slot back when stopped while lent.
    #[test]
    fn the_monitor_blocks_and_wakes_the_host_vcpus() {
        if !sys::is_root() {
            eprintln!("skipped: the monitor needs real-time priority (root)");
            return;
        }
        let dir = std::env::temp_dir().join(format!("gang-lend-mon-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cpu");
        // Rewritten in place at a fixed width: the monitor must never read
        // a half-written file.
        let rewrite = |us: u64| {
            use std::os::unix::fs::FileExt as _;
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&file)
                .unwrap();
            f.write_all_at(format!("some avg10=0.00 total={us:020}\n").as_bytes(), 0)
                .unwrap();
        };
        rewrite(0);
        let pressure = Pressure::open_at(&file).unwrap();
        let clock = crate::clock::Clock::new(gang_core::MS);
        let log = Arc::new(EventLog::new(1, 100_000, clock));
        let stop = Arc::new(AtomicBool::new(false));
        let lent = Arc::new(AtomicBool::new(false));
        let host = VcpuRef {
            domain: gang_core::DomainId(0),
            vcpu: 0,
        };
        let config = MonitorConfig {
            host_vcpus: vec![host],
            tick: 5 * gang_core::MS,
            policy: LendPolicy::new(3),
            priority: 1,
        };
        let handle = {
            let (log, stop, lent) = (Arc::clone(&log), Arc::clone(&stop), Arc::clone(&lent));
            std::thread::spawn(move || {
                monitor(config, pressure, Arc::clone(&log), &stop, log.seq(), &lent)
            })
        };
        let wait_for = |what: &str, f: &dyn Fn() -> bool| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !f() {
                assert!(std::time::Instant::now() < deadline, "timed out: {what}");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        };
        wait_for("lent after quiet ticks", &|| lent.load(Ordering::Acquire));
        // Pressure: 1 s of waiting at once is far above any tick.
        rewrite(1_000_000);
        wait_for("taken back", &|| !lent.load(Ordering::Acquire));
        wait_for("lent again", &|| lent.load(Ordering::Acquire));
        stop.store(true, Ordering::Release);
        log.seq().fetch_add(1, Ordering::Release);
        sys::futex_wake_all(log.seq());
        let report = handle.join().unwrap();
        assert_eq!(report.reclaims, 1);
        assert!(report.lent_ns > 0 && report.lent_ns < report.monitored_ns);
        assert_eq!(report.failed, None);
        let mut entries = Vec::new();
        std::thread::sleep(std::time::Duration::from_millis(1));
        log.take(0, Nanos::MAX, false, &mut entries);
        let events: Vec<Event> = entries.into_iter().map(|e| e.event).collect();
        assert_eq!(
            events,
            vec![
                Event::VcpuBlocked(host),
                Event::VcpuWoke(host),
                Event::VcpuBlocked(host),
                Event::VcpuWoke(host),
            ],
            "lend, reclaim, lend, and the slot given back at the stop"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_or_garbled_file_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("gang-lend-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = Pressure::open_at(&dir.join("nope")).unwrap_err();
        assert!(missing.to_string().contains("pressure-stall"), "{missing}");
        let garbled = dir.join("cpu");
        std::fs::write(&garbled, "nothing here\n").unwrap();
        let err = Pressure::open_at(&garbled).unwrap_err();
        assert!(matches!(err, LendError::Format(_)), "{err}");
        std::fs::write(&garbled, "some avg10=0.00 total=42\n").unwrap();
        assert_eq!(
            Pressure::open_at(&garbled)
                .unwrap()
                .some_total_ns()
                .unwrap(),
            42_000
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
