//! vCPU threads: one per vCPU, each an explicit state machine driven by
//! typed events.
//!
//! **States** ([`VcpuState`]): `Created` (no guest code yet), `Running`,
//! `Halted` (the guest executed HLT; waits for a wake), `Paused { halted }`,
//! `Exited`. **Events** ([`VcpuEvent`]): `Resume`, `Pause`, `Wake`,
//! `Schedule { seq, to }`, `Stop`. [`VcpuState::on`] is the whole transition
//! table (pure, tested); scheduling is orthogonal to the run state.
//!
//! **Scheduling** ([`Scheduling`]): `Linux` (Pool-0: the thread is an
//! ordinary thread on the CPUs it was created with) or `Gang` (a gang
//! runtime's gate: [`GangBinding`] = the vCPU's `VcpuControl` plus the
//! runtime's hooks, [`GangScheduler`]). A gated thread passes its gate
//! before every `KVM_RUN`; the gate's kicker (installed by the thread)
//! signals it out of `KVM_RUN` when the gate closes (see `kick`). HLT is
//! reported to the runtime as blocked and the wake-up as woke, so the gang
//! core can give the slot to space fillers. A gate stopped from the runtime
//! side (domain removed, runtime stopped) drops the vCPU back to Linux
//! scheduling: the VM keeps running, as in Pool-0.
//!
//! **Delivery.** The VM side sends an event, then kicks the thread. A
//! thread reads events after every exit from `KVM_RUN`, and blocks on them
//! when not running. Before entering the guest it publishes `in_guest`
//! and then re-checks for pending events (and the VM side counts pending
//! events before sending): so once [`VcpuShared::wait_outside_guest`] has
//! seen `in_guest == false` after an event was sent, the guest does not
//! run again before the thread has applied the event. That is how `pause`
//! is synchronous without waiting for a thread parked at a closed gate.
//! Whenever a gated thread waits outside its gate (paused, halted), it
//! first ends its slot run (`VcpuControl::finish`), so the runtime's
//! watchdog never takes it for a thread ignoring its gate.
//!
//! **Scheduling changes are acknowledged unambiguously.** Each
//! `Schedule` carries a per-vCPU sequence number and its [`ScheduleAck`]
//! the same number: the VM side takes only the answer to the request it
//! waits for and discards late answers to earlier requests that timed out.
//! A VM side that gives up on a request sends `Schedule` to `Linux` right
//! after it, so the thread, which applies events in order before it runs
//! guest code again, never keeps an abandoned binding.
//!
//! **Exits.** Port I/O goes to `devices`. Everything that ends the VM ends
//! only that VM: power off / reboot through the power port or the i8042
//! reset; `Crash(reason)` for a triple fault (`KVM_EXIT_SHUTDOWN`),
//! `KVM_EXIT_INTERNAL_ERROR`, `KVM_EXIT_FAIL_ENTRY`, any MMIO exit (an
//! access to a guest-physical address with neither RAM nor a device: we
//! have no MMIO devices), an exit we do not expect, or a failing `KVM_RUN`.
//! No path panics.
//!
//! **HLT** (no interrupt controller: our guests poll). A halted vCPU waits
//! for a wake: console input or a host request at the power port. No wake
//! is lost: the VM side changes the device state, bumps a wake sequence and
//! wakes every vCPU it sees halted; a vCPU that halts re-reads the sequence
//! after publishing that it is halted and does not wait if it moved since
//! its previous halt (at worst one HLT returns at once).

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gang_core::{CpuId, VcpuRef};
use gang_host::clock::Clock;
use gang_host::gate::VcpuControl;
use gang_host::runtime::Runtime;
use gang_host::sys::{self, SchedPolicy};
use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::kick::{Kick, RunGuard};
use crate::vm::{ExitReason, VmShared};

/// The scheduling hooks of a gang runtime, as a vCPU thread needs them.
/// Implemented by `gang_host::runtime::Runtime`.
pub trait GangScheduler: Send + Sync {
    /// Called on the vCPU thread: pin it and give it its priority.
    fn prepare_vcpu_thread(&self, vcpu: VcpuRef) -> Result<(), String>;
    /// The vCPU blocked (HLT).
    fn vcpu_blocked(&self, vcpu: VcpuRef);
    /// The vCPU is runnable again.
    fn vcpu_woke(&self, vcpu: VcpuRef);
    /// The runtime's clock (for the gate's trace).
    fn clock(&self) -> Clock;
}

impl GangScheduler for Runtime {
    fn prepare_vcpu_thread(&self, vcpu: VcpuRef) -> Result<(), String> {
        Runtime::prepare_vcpu_thread(self, vcpu).map_err(|e| e.to_string())
    }
    fn vcpu_blocked(&self, vcpu: VcpuRef) {
        Runtime::vcpu_blocked(self, vcpu);
    }
    fn vcpu_woke(&self, vcpu: VcpuRef) {
        Runtime::vcpu_woke(self, vcpu);
    }
    fn clock(&self) -> Clock {
        Runtime::clock(self)
    }
}

/// One vCPU's place in a gang runtime.
#[derive(Clone)]
pub struct GangBinding {
    /// The vCPU's gate.
    pub control: Arc<VcpuControl>,
    /// The runtime's hooks.
    pub scheduler: Arc<dyn GangScheduler>,
}

impl std::fmt::Debug for GangBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GangBinding")
            .field("control", &self.control)
            .finish()
    }
}

/// Who schedules a vCPU thread.
#[derive(Debug, Clone)]
pub enum Scheduling {
    /// Linux, on the CPUs the thread was created with (Pool-0).
    Linux,
    /// A gang runtime's gate.
    Gang(GangBinding),
}

/// What a vCPU thread is told.
#[derive(Debug)]
pub enum VcpuEvent {
    /// Run guest code (from `Created` or `Paused`).
    Resume,
    /// Stop running guest code until `Resume`.
    Pause,
    /// Something a halted guest may wait for happened.
    Wake,
    /// Change who schedules the thread; answered by a [`ScheduleAck`]
    /// carrying the same `seq`.
    Schedule {
        /// The request's number (per vCPU, increasing): tells its
        /// acknowledgement from those of earlier requests that timed out.
        seq: u64,
        /// Who schedules the thread from now on.
        to: Scheduling,
    },
    /// Exit the thread.
    Stop,
}

/// The answer to [`VcpuEvent::Schedule`] number `seq`.
#[derive(Debug)]
pub struct ScheduleAck {
    /// The request answered.
    pub seq: u64,
    /// Whether the change was made.
    pub result: Result<(), String>,
}

/// A vCPU thread's run state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuState {
    /// Set up, not started.
    Created,
    /// Running guest code (or waiting at its gate).
    Running,
    /// Executed HLT; waits for a wake.
    Halted,
    /// Paused by the VMM; `halted` is what it returns to.
    Paused {
        /// It was halted when paused.
        halted: bool,
    },
    /// Done.
    Exited,
}

impl VcpuState {
    /// The transition table.
    pub fn on(self, event: &VcpuEvent) -> VcpuState {
        use VcpuState::*;
        match (self, event) {
            (Exited, _) | (_, VcpuEvent::Stop) => Exited,
            (Created, VcpuEvent::Resume) => Running,
            (Paused { halted: false }, VcpuEvent::Resume) => Running,
            (Paused { halted: true }, VcpuEvent::Resume) => Halted,
            (Running, VcpuEvent::Pause) => Paused { halted: false },
            (Halted, VcpuEvent::Pause) => Paused { halted: true },
            (Halted, VcpuEvent::Wake) => Running,
            (Paused { .. }, VcpuEvent::Wake) => Paused { halted: false },
            (s, _) => s,
        }
    }

    fn halted(self) -> bool {
        matches!(self, VcpuState::Halted | VcpuState::Paused { halted: true })
    }
}

/// What the VM side shares with one vCPU thread.
#[derive(Debug)]
pub struct VcpuShared {
    /// Which vCPU.
    pub vcpu: VcpuRef,
    events: Mutex<Sender<VcpuEvent>>,
    pending: AtomicU32,
    in_guest: AtomicBool,
    /// Published by the thread: it waits in `Halted`.
    halted: AtomicBool,
    tid: AtomicI32,
    /// The thread's kick.
    pub kick: Kick,
    /// The gate of the current gang binding (to wake a parked thread).
    pub gate: Mutex<Option<Arc<VcpuControl>>>,
    /// CLOCK_MONOTONIC ns of the last return from `KVM_RUN` with EINTR.
    pub last_kick_exit: AtomicU64,
}

impl VcpuShared {
    /// A new one and the receiving end of its events.
    pub fn new(vcpu: VcpuRef) -> (Arc<VcpuShared>, Receiver<VcpuEvent>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let s = VcpuShared {
            vcpu,
            events: Mutex::new(tx),
            pending: AtomicU32::new(0),
            in_guest: AtomicBool::new(false),
            halted: AtomicBool::new(false),
            tid: AtomicI32::new(0),
            kick: Kick::default(),
            gate: Mutex::new(None),
            last_kick_exit: AtomicU64::new(0),
        };
        (Arc::new(s), rx)
    }

    /// Sends `event` and kicks the thread out of `KVM_RUN`.
    pub fn send(&self, event: VcpuEvent) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        let sent = self
            .events
            .lock()
            .map(|tx| tx.send(event).is_ok())
            .unwrap_or(false);
        if !sent {
            self.pending.fetch_sub(1, Ordering::SeqCst); // the thread is gone
        }
        self.kick.kick();
    }

    /// Whether the thread waits in `Halted`.
    pub fn is_halted(&self) -> bool {
        self.halted.load(Ordering::SeqCst)
    }

    /// The thread's id (0 before it started).
    pub fn tid(&self) -> sys::Tid {
        self.tid.load(Ordering::Acquire)
    }

    /// Waits until the thread is outside the guest (see the module docs);
    /// false on timeout.
    pub fn wait_outside_guest(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        let mut kicked = Instant::now();
        while self.in_guest.load(Ordering::SeqCst) {
            if Instant::now() > until {
                return false;
            }
            if kicked.elapsed() > Duration::from_millis(1) {
                self.kick.kick(); // the first kick may have raced its entry
                kicked = Instant::now();
            }
            std::thread::sleep(Duration::from_micros(20));
        }
        true
    }

    /// Test only: events sent and not yet taken by the thread.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> u32 {
        self.pending.load(Ordering::SeqCst)
    }

    /// Wakes the thread if it is parked at its gate, so it reads its events
    /// (the gate is stopped: it is not used again).
    pub fn release_gate(&self) {
        if let Some(g) = self.gate.lock().ok().and_then(|mut g| g.take()) {
            g.stop();
        }
    }
}

/// Everything a vCPU thread owns.
pub(crate) struct VcpuThread {
    /// KVM's vCPU.
    pub fd: VcpuFd,
    /// Shared with the VM side.
    pub shared: Arc<VcpuShared>,
    /// Shared by the VM's vCPUs.
    pub vm: Arc<VmShared>,
    /// Events.
    pub events: Receiver<VcpuEvent>,
    /// Acknowledgements of `Schedule` events.
    pub acks: Sender<ScheduleAck>,
    /// Told the vCPU index once the thread published its id.
    pub started: Sender<u32>,
    /// Where the thread runs under Linux scheduling.
    pub home: Vec<CpuId>,
    /// Started in this state.
    pub state: VcpuState,
    /// Test only: how long the thread waits before publishing its id.
    #[cfg(test)]
    pub start_delay: Duration,
}

impl VcpuThread {
    /// The thread's body.
    pub(crate) fn run(mut self) {
        #[cfg(test)]
        std::thread::sleep(self.start_delay);
        self.shared.tid.store(sys::gettid(), Ordering::Release);
        let _ = self.started.send(self.shared.vcpu.vcpu);
        let guard = RunGuard::publish(self.fd.get_kvm_run());
        let mut gang: Option<GangBinding> = None;
        let mut state = self.state;
        let mut last_wake = self.vm.wake_seq();
        loop {
            // Apply what was sent.
            while let Ok(ev) = self.events.try_recv() {
                self.shared.pending.fetch_sub(1, Ordering::SeqCst);
                state = self.apply(state, ev, &mut gang, &mut last_wake);
            }
            match state {
                VcpuState::Exited => break,
                VcpuState::Running => {}
                _ => {
                    // Wait outside the gate for the next event.
                    if let Some(g) = &gang {
                        g.control.finish(&g.scheduler.clock());
                    }
                    if state == VcpuState::Halted {
                        // Publish, then re-read the wake sequence (module docs).
                        self.shared.halted.store(true, Ordering::SeqCst);
                        if self.vm.wake_seq() != last_wake {
                            self.shared.halted.store(false, Ordering::SeqCst);
                            state = self.apply(state, VcpuEvent::Wake, &mut gang, &mut last_wake);
                            continue;
                        }
                    }
                    let ev = self.events.recv();
                    self.shared.halted.store(false, Ordering::SeqCst);
                    match ev {
                        Ok(ev) => {
                            self.shared.pending.fetch_sub(1, Ordering::SeqCst);
                            state = self.apply(state, ev, &mut gang, &mut last_wake);
                        }
                        Err(_) => state = VcpuState::Exited,
                    }
                    continue;
                }
            }
            if let Some(g) = &gang {
                if !g.control.checkpoint(&g.scheduler.clock()) {
                    // The runtime let go of this vCPU: back to Linux.
                    self.ungate(&mut gang);
                    continue;
                }
            }
            self.shared.in_guest.store(true, Ordering::SeqCst);
            if self.shared.pending.load(Ordering::SeqCst) > 0 {
                self.shared.in_guest.store(false, Ordering::SeqCst);
                continue;
            }
            let outcome = self.run_once();
            if let Outcome::End(reason) = &outcome {
                // Before leaving `in_guest`: once `pause` returns, the VM
                // cannot end any more.
                self.vm.end(reason.clone());
            }
            self.shared.in_guest.store(false, Ordering::SeqCst);
            match outcome {
                Outcome::Continue => {}
                Outcome::Halt => {
                    state = VcpuState::Halted;
                    if let Some(g) = &gang {
                        g.scheduler.vcpu_blocked(self.shared.vcpu);
                    }
                }
                Outcome::End(_) => state = VcpuState::Exited,
            }
        }
        if let Some(g) = &gang {
            g.control.finish(&g.scheduler.clock());
        }
        drop(guard);
        self.shared.kick.deregister();
    }

    fn apply(
        &mut self,
        state: VcpuState,
        ev: VcpuEvent,
        gang: &mut Option<GangBinding>,
        last_wake: &mut u64,
    ) -> VcpuState {
        if let VcpuEvent::Schedule { seq, to } = &ev {
            let result = self.schedule(to.clone(), gang);
            if result.is_ok() && state.halted() {
                if let Some(g) = gang.as_ref() {
                    g.scheduler.vcpu_blocked(self.shared.vcpu);
                }
            }
            let _ = self.acks.send(ScheduleAck { seq: *seq, result });
        }
        let next = state.on(&ev);
        if state.halted() && !next.halted() && next != VcpuState::Exited {
            *last_wake = self.vm.wake_seq();
            if let Some(g) = gang.as_ref() {
                g.scheduler.vcpu_woke(self.shared.vcpu);
            }
        }
        next
    }

    fn schedule(&mut self, to: Scheduling, gang: &mut Option<GangBinding>) -> Result<(), String> {
        match to {
            Scheduling::Linux => {
                self.ungate(gang);
                Ok(())
            }
            Scheduling::Gang(b) => {
                b.scheduler.prepare_vcpu_thread(self.shared.vcpu)?;
                b.control.attach_current_thread();
                let kick = self.shared.kick.clone();
                // Ignored if a kicker is there already (the same control
                // bound again: it kicks this thread too).
                let _ = b.control.set_kicker(Box::new(move || kick.kick()));
                *gang = Some(b);
                Ok(())
            }
        }
    }

    /// Leaves the gang runtime: ordinary policy, home CPUs.
    fn ungate(&mut self, gang: &mut Option<GangBinding>) {
        if let Some(g) = gang.take() {
            g.control.finish(&g.scheduler.clock());
            let _ = sys::set_policy(0, SchedPolicy::Other);
            let _ = sys::set_affinity(0, &self.home);
        }
    }

    /// One `KVM_RUN` and its exit.
    fn run_once(&mut self) -> Outcome {
        let exit = self.fd.run();
        let result = match exit {
            Ok(VcpuExit::IoOut(port, data)) => match self.vm.devices.io_out(port, data) {
                Some(reason) => Outcome::End(reason),
                None => Outcome::Continue,
            },
            Ok(VcpuExit::IoIn(port, data)) => {
                self.vm.devices.io_in(port, data);
                Outcome::Continue
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => Outcome::End(ExitReason::Crash(format!(
                "write of {} bytes to guest-physical {addr:#x}, which has no RAM and no device",
                data.len()
            ))),
            Ok(VcpuExit::MmioRead(addr, data)) => Outcome::End(ExitReason::Crash(format!(
                "read of {} bytes from guest-physical {addr:#x}, which has no RAM and no device",
                data.len()
            ))),
            Ok(VcpuExit::Hlt) => Outcome::Halt,
            Ok(VcpuExit::Shutdown) => Outcome::End(ExitReason::Crash(
                "triple fault (KVM_EXIT_SHUTDOWN)".into(),
            )),
            Ok(VcpuExit::InternalError) => Outcome::End(ExitReason::Crash(
                "KVM internal error (KVM_EXIT_INTERNAL_ERROR): an instruction KVM could not emulate".into(),
            )),
            Ok(VcpuExit::FailEntry(reason, cpu)) => Outcome::End(ExitReason::Crash(format!(
                "KVM_EXIT_FAIL_ENTRY: hardware entry failure reason {reason:#x} on CPU {cpu}"
            ))),
            Ok(VcpuExit::SystemEvent(kind, _)) => Outcome::End(match kind {
                kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => ExitReason::Poweroff,
                kvm_bindings::KVM_SYSTEM_EVENT_RESET => ExitReason::Reboot,
                k => ExitReason::Crash(format!("KVM system event {k}")),
            }),
            Ok(VcpuExit::Intr) => Outcome::Continue,
            Ok(VcpuExit::MemoryFault { gpa, size, .. }) => Outcome::End(ExitReason::Crash(
                format!("memory fault at guest-physical {gpa:#x} ({size} bytes)"),
            )),
            Ok(other) => {
                Outcome::End(ExitReason::Crash(format!("unexpected KVM exit {other:?}")))
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.shared
                    .last_kick_exit
                    .store(sys::monotonic_ns(), Ordering::Release);
                Outcome::Continue
            }
            Err(e) => Outcome::End(ExitReason::Crash(format!("KVM_RUN failed: {e}"))),
        };
        self.fd.set_kvm_immediate_exit(0);
        let result = match result {
            Outcome::End(ExitReason::Crash(why)) => {
                let rip = self.fd.get_regs().map(|r| r.rip).unwrap_or(0);
                Outcome::End(ExitReason::Crash(format!(
                    "vCPU {}: {why} (rip {rip:#x})",
                    self.shared.vcpu.vcpu
                )))
            }
            r => r,
        };
        result
    }
}

enum Outcome {
    Continue,
    Halt,
    End(ExitReason),
}

#[cfg(test)]
mod tests {
    use super::VcpuEvent as E;
    use super::VcpuState::{self, *};

    #[test]
    fn the_transition_table() {
        let all = [
            Created,
            Running,
            Halted,
            Paused { halted: false },
            Paused { halted: true },
            Exited,
        ];
        for s in all {
            assert_eq!(s.on(&E::Stop), Exited, "{s:?}");
            let schedule = E::Schedule {
                seq: 1,
                to: super::Scheduling::Linux,
            };
            assert_eq!(s.on(&schedule), s, "{s:?}");
        }
        assert_eq!(Created.on(&E::Resume), Running);
        assert_eq!(Created.on(&E::Pause), Created);
        assert_eq!(Created.on(&E::Wake), Created);
        assert_eq!(Running.on(&E::Pause), Paused { halted: false });
        assert_eq!(Running.on(&E::Resume), Running);
        assert_eq!(Running.on(&E::Wake), Running);
        assert_eq!(Halted.on(&E::Wake), Running);
        assert_eq!(Halted.on(&E::Pause), Paused { halted: true });
        assert_eq!(Halted.on(&E::Resume), Halted);
        assert_eq!(Paused { halted: true }.on(&E::Resume), Halted);
        assert_eq!(
            Paused { halted: true }.on(&E::Wake),
            Paused { halted: false }
        );
        assert_eq!(Paused { halted: false }.on(&E::Resume), Running);
        for e in [E::Resume, E::Pause, E::Wake] {
            assert_eq!(Exited.on(&e), Exited);
        }
        assert!(Paused { halted: true }.halted() && Halted.halted() && !Running.halted());
        let _: VcpuState = Running;
    }
}
