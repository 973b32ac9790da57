//! Gates: how a dispatcher starts and stops a vCPU thread that we own.
//!
//! A gate is one futex word per vCPU: open or closed. The dispatcher of the
//! vCPU's CPU opens it at the start of a slot (and wakes the thread) and
//! closes it at the end. The thread passes [`VcpuControl::checkpoint`] often
//! (our workloads: every loop iteration, about every µs; our VMM: on every
//! exit from KVM_RUN); at a closed gate it records the end of its slot and
//! sleeps on the futex until the gate opens again. A thread that ignores its
//! gate is detected by the dispatcher's watchdog (it is still `running` long
//! after its gate closed) and demoted (see `runtime`).
//!
//! Each control also carries the per-thread trace: the start and end of every
//! slot as the thread saw it, which tests and `gang bench` read to prove gang
//! execution and to measure co-start skew.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use gang_core::{Nanos, VcpuRef};

use crate::clock::Clock;
use crate::sys;

const CLOSED: u32 = 0;
const OPEN: u32 = 1;

/// One interval during which a vCPU thread ran in a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SlotRun {
    /// The boundary that opened the slot (pool time).
    pub slot: Nanos,
    /// When the thread passed its gate (pool time).
    pub start: Nanos,
    /// When it noticed the gate closed, or stopped (pool time).
    pub end: Nanos,
}

/// How to get a thread out of a blocking call it makes on the guest's
/// behalf (a VMM's `KVM_RUN`): called by the dispatcher right after it closed
/// the gate, and by [`VcpuControl::stop`]. Must be quick and must not block.
pub type Kicker = Box<dyn Fn() + Send + Sync>;

/// The shared control block of one vCPU thread.
pub struct VcpuControl {
    /// Which vCPU.
    pub vcpu: VcpuRef,
    gate: AtomicU32,
    /// The boundary at which the gate was last opened.
    slot: AtomicU64,
    stop: AtomicBool,
    /// True from passing the gate to parking at it.
    running: AtomicBool,
    /// Counts the thread's parkings: the futex word a dispatcher waiting for
    /// it to park sleeps on ([`VcpuControl::close_and_await_park`]).
    parks: AtomicU32,
    /// Whether a dispatcher waits on `parks` (the thread then wakes it).
    awaited: AtomicBool,
    /// The thread's TID once it started (0 before).
    tid: AtomicI32,
    trace: Mutex<Vec<SlotRun>>,
    trace_enabled: bool,
    kicker: OnceLock<Kicker>,
}

impl std::fmt::Debug for VcpuControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcpuControl")
            .field("vcpu", &self.vcpu)
            .field("open", &self.is_open())
            .field("running", &self.is_running())
            .field("tid", &self.tid())
            .field("kicker", &self.kicker.get().is_some())
            .finish()
    }
}

impl VcpuControl {
    /// A closed gate for `vcpu`.
    pub fn new(vcpu: VcpuRef, trace: bool) -> Self {
        VcpuControl {
            vcpu,
            gate: AtomicU32::new(CLOSED),
            slot: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            running: AtomicBool::new(false),
            parks: AtomicU32::new(0),
            awaited: AtomicBool::new(false),
            tid: AtomicI32::new(0),
            trace: Mutex::new(Vec::new()),
            trace_enabled: trace,
            kicker: OnceLock::new(),
        }
    }

    /// Thread owner: installs the kicker that interrupts the thread when its
    /// gate closes (once; a second call is ignored and returns `false`).
    pub fn set_kicker(&self, kicker: Kicker) -> bool {
        self.kicker.set(kicker).is_ok()
    }

    fn kick(&self) {
        if let Some(k) = self.kicker.get() {
            k();
        }
    }

    /// Dispatcher: opens the gate for the slot starting at `slot`.
    pub fn open(&self, slot: Nanos) {
        self.slot.store(slot, Ordering::Relaxed);
        self.gate.store(OPEN, Ordering::Release);
        sys::futex_wake_all(&self.gate);
    }

    /// Dispatcher: closes the gate; the thread parks at its next checkpoint
    /// (a thread with a kicker is kicked towards it; always, because a
    /// thread that just passed its gate may not show as running yet, and a
    /// kick of a parked thread costs only a spurious wake-up).
    pub fn close(&self) {
        self.gate.store(CLOSED, Ordering::Release);
        self.kick();
    }

    /// Dispatcher, before a boundary: closes the gate and gives the CPU to
    /// the thread until it has parked (or until pool time `until`), so that
    /// the boundary's incoming thread is the only one left to run when the
    /// dispatcher blocks. Returns whether the thread is parked (or not
    /// running at all: blocked outside its gate, or not started).
    ///
    /// Must be called on the thread's CPU by a thread of higher real-time
    /// priority (the dispatcher): it blocks, the vCPU thread runs to its
    /// next checkpoint, parks and wakes the dispatcher, which preempts it at
    /// once; no timer and no other CPU is involved.
    pub fn close_and_await_park(&self, clock: &Clock, until: Nanos) -> bool {
        // Dekker-style: the dispatcher stores `awaited` then reads `parks` and
        // `running`; the thread stores `running` and `parks` then reads
        // `awaited`. SeqCst on both sides: one of them sees the other.
        self.awaited.store(true, Ordering::SeqCst);
        let seen = self.parks.load(Ordering::SeqCst);
        self.close();
        let parked = loop {
            if !self.running.load(Ordering::SeqCst) {
                break true;
            }
            let now = clock.now();
            if now >= until {
                break false;
            }
            if self.parks.load(Ordering::SeqCst) != seen {
                continue; // parked; `running` is false by now
            }
            sys::futex_wait(&self.parks, seen, Some(until - now));
        };
        self.awaited.store(false, Ordering::SeqCst);
        parked
    }

    /// Whether the gate is open.
    pub fn is_open(&self) -> bool {
        self.gate.load(Ordering::Acquire) == OPEN
    }

    /// Whether the thread is between passing its gate and parking.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// The thread's TID (0 if it has not started).
    pub fn tid(&self) -> sys::Tid {
        self.tid.load(Ordering::Acquire)
    }

    /// Asks the thread to stop for good (it returns `false` from its next
    /// checkpoint) and wakes it if parked.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.gate.store(OPEN, Ordering::Release);
        sys::futex_wake_all(&self.gate);
        self.kick();
    }

    /// Whether [`VcpuControl::stop`] was called.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Thread: registers the calling thread as this vCPU.
    pub fn attach_current_thread(&self) {
        self.tid.store(sys::gettid(), Ordering::Release);
    }

    /// Thread: the fast path is one load. At a closed gate: records the end
    /// of the slot, parks until the gate opens, records the start of the new
    /// slot. Returns `false` when the vCPU must stop.
    #[inline]
    pub fn checkpoint(&self, clock: &Clock) -> bool {
        if self.gate.load(Ordering::Acquire) == OPEN && self.running.load(Ordering::Relaxed) {
            return !self.stop.load(Ordering::Relaxed);
        }
        self.park(clock)
    }

    #[cold]
    fn park(&self, clock: &Clock) -> bool {
        self.stopped_running(clock);
        loop {
            if self.stop.load(Ordering::Acquire) {
                return false;
            }
            if self.gate.load(Ordering::Acquire) == OPEN {
                break;
            }
            sys::futex_wait(&self.gate, CLOSED, None);
        }
        let start = clock.now();
        self.running.store(true, Ordering::Release);
        if self.trace_enabled {
            let slot = self.slot.load(Ordering::Relaxed);
            if let Ok(mut t) = self.trace.lock() {
                t.push(SlotRun {
                    slot,
                    start,
                    end: Nanos::MAX,
                });
            }
        }
        !self.stop.load(Ordering::Relaxed)
    }

    /// Thread: records that it stopped running now (it exits, or blocks for
    /// good); the open run in the trace is closed.
    pub fn finish(&self, clock: &Clock) {
        self.stopped_running(clock);
    }

    /// The thread stops running (parks, blocks or ends): the open run in
    /// the trace ends now, and a dispatcher waiting for it is woken.
    fn stopped_running(&self, clock: &Clock) {
        if self.running.swap(false, Ordering::SeqCst) {
            self.record_end(clock.now());
        }
        self.parks.fetch_add(1, Ordering::SeqCst);
        if self.awaited.load(Ordering::SeqCst) {
            sys::futex_wake_all(&self.parks);
        }
    }

    fn record_end(&self, now: Nanos) {
        if !self.trace_enabled {
            return;
        }
        if let Ok(mut t) = self.trace.lock() {
            if let Some(last) = t.last_mut() {
                if last.end == Nanos::MAX {
                    last.end = now;
                }
            }
        }
    }

    /// The trace so far (runs still open have `end == Nanos::MAX`).
    pub fn trace(&self) -> Vec<SlotRun> {
        self.trace.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gang_core::DomainId;
    use std::sync::Arc;

    #[test]
    fn a_thread_parks_at_a_closed_gate_and_runs_when_opened() {
        let clock = Clock::new(1000);
        let ctl = Arc::new(VcpuControl::new(
            VcpuRef {
                domain: DomainId(1),
                vcpu: 0,
            },
            true,
        ));
        let c = Arc::clone(&ctl);
        let worker = std::thread::spawn(move || {
            c.attach_current_thread();
            let mut laps = 0u64;
            while c.checkpoint(&clock) {
                laps += 1;
                std::hint::spin_loop();
            }
            c.finish(&clock);
            laps
        });
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(!ctl.is_running(), "closed gate: parked");
        ctl.open(7);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(ctl.is_running());
        ctl.close();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(!ctl.is_running(), "parked again after close");
        ctl.stop();
        let laps = worker.join().expect("worker");
        assert!(laps > 0);
        let trace = ctl.trace();
        assert_eq!(trace.len(), 1, "{trace:?}");
        assert_eq!(trace[0].slot, 7);
        assert!(trace[0].end > trace[0].start && trace[0].end != Nanos::MAX);
        assert!(ctl.tid() > 0);
    }

    fn vcpu0() -> VcpuRef {
        VcpuRef {
            domain: DomainId(1),
            vcpu: 0,
        }
    }

    #[test]
    fn a_dispatcher_awaiting_a_park_returns_once_the_thread_parked() {
        let clock = Clock::new(1000);
        let ctl = Arc::new(VcpuControl::new(vcpu0(), true));
        let c = Arc::clone(&ctl);
        let worker = std::thread::spawn(move || {
            c.attach_current_thread();
            while c.checkpoint(&clock) {
                std::hint::spin_loop();
            }
            c.finish(&clock);
        });
        ctl.open(3);
        while !ctl.is_running() {
            std::thread::yield_now();
        }
        let before = clock.now();
        assert!(ctl.close_and_await_park(&clock, before + 5_000_000_000));
        let after = clock.now();
        assert!(!ctl.is_running(), "parked when the wait returns");
        assert!(
            after - before < 1_000_000_000,
            "woken by the park, not the timeout"
        );
        let trace = ctl.trace();
        assert!(
            trace[0].end <= after,
            "the run ended before the wait returned: {trace:?}"
        );
        // A thread that is not running at all needs no wait.
        let before = clock.now();
        assert!(ctl.close_and_await_park(&clock, before + 5_000_000_000));
        assert!(clock.now() - before < 1_000_000_000);
        ctl.stop();
        worker.join().expect("worker");
    }

    #[test]
    fn a_dispatcher_stops_awaiting_a_thread_that_ignores_its_gate() {
        let clock = Clock::new(1000);
        let ctl = Arc::new(VcpuControl::new(vcpu0(), false));
        let c = Arc::clone(&ctl);
        let release = Arc::new(AtomicBool::new(false));
        let r = Arc::clone(&release);
        let worker = std::thread::spawn(move || {
            c.attach_current_thread();
            if c.checkpoint(&clock) {
                // Runs without passing its gate until released.
                while !r.load(Ordering::Acquire) {
                    std::hint::spin_loop();
                }
            }
            c.finish(&clock);
        });
        ctl.open(1);
        while !ctl.is_running() {
            std::thread::yield_now();
        }
        let until = clock.now() + 20_000_000;
        assert!(!ctl.close_and_await_park(&clock, until), "it never parked");
        assert!(clock.now() >= until, "waited until the deadline");
        release.store(true, Ordering::Release);
        worker.join().expect("worker");
        assert!(!ctl.is_running());
    }

    #[test]
    fn closing_and_stopping_kick_a_thread_blocked_outside_its_checkpoints() {
        let clock = Clock::new(1000);
        let ctl = Arc::new(VcpuControl::new(
            VcpuRef {
                domain: DomainId(1),
                vcpu: 0,
            },
            false,
        ));
        // The thread blocks in something that is not a checkpoint (as a VMM
        // thread blocks in KVM_RUN); its kicker is the only way out.
        let (kick_tx, kick_rx) = std::sync::mpsc::channel::<()>();
        let kick_tx = Mutex::new(kick_tx);
        assert!(ctl.set_kicker(Box::new(move || {
            // The worker may be gone when the last kick comes.
            if let Ok(t) = kick_tx.lock() {
                crate::best_effort("kicking the worker", t.send(()));
            }
        })));
        assert!(!ctl.set_kicker(Box::new(|| {})), "installed once");
        let c = Arc::clone(&ctl);
        let worker = std::thread::spawn(move || {
            let mut kicks = 0;
            while c.checkpoint(&clock) {
                if kick_rx.recv().is_err() {
                    break;
                }
                kicks += 1;
            }
            kicks
        });
        ctl.open(1);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(ctl.is_running(), "inside its blocking call");
        ctl.close();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(!ctl.is_running(), "kicked out and parked at the gate");
        ctl.stop();
        assert_eq!(worker.join().expect("worker"), 1);
    }
}
