//! Kicking a vCPU thread out of `KVM_RUN`: a real-time signal whose handler
//! sets `immediate_exit` in the thread's own `kvm_run` (Firecracker's way).
//!
//! Invariants:
//! - The handler is installed once per process ([`install_handler`]), with
//!   no `SA_RESTART`, so a `KVM_RUN` in progress returns `EINTR`.
//! - A vCPU thread publishes its `kvm_run` in a thread-local for its life
//!   ([`RunGuard`]); the handler touches only that, and only when set. A
//!   signal that arrives while the thread is outside `KVM_RUN` leaves
//!   `immediate_exit` set, so its next `KVM_RUN` returns at once: a kick is
//!   never lost. The thread clears `immediate_exit` after every return.
//! - A [`Kick`] signals a thread only while it is registered (from just
//!   after spawn until the thread's last act), under a lock, so no signal
//!   ever reaches a thread that exited or a reused thread id.

use std::cell::Cell;
use std::os::unix::thread::JoinHandleExt;
use std::sync::{Arc, Mutex, OnceLock};

use kvm_bindings::kvm_run;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

/// Offset of our signal from SIGRTMIN (Firecracker uses the same).
const KICK_SIGNAL_OFFSET: i32 = 0;

thread_local! {
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// The kick signal's number.
pub fn kick_signal() -> i32 {
    SIGRTMIN() + KICK_SIGNAL_OFFSET
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = KVM_RUN.with(Cell::get);
    if !run.is_null() {
        // SAFETY: the pointer is this thread's own mapped kvm_run, published
        // by `RunGuard` and cleared before the mapping goes away; a byte
        // store is async-signal-safe.
        unsafe { std::ptr::write_volatile(&raw mut (*run).immediate_exit, 1) };
    }
}

/// Installs the kick signal's handler (once per process; later calls return
/// the first call's result).
pub fn install_handler() -> Result<(), vmm_sys_util::errno::Error> {
    static RESULT: OnceLock<Result<(), i32>> = OnceLock::new();
    let r = RESULT
        .get_or_init(|| register_signal_handler(kick_signal(), handle_kick).map_err(|e| e.errno()));
    r.map_err(vmm_sys_util::errno::Error::new)
}

/// Publishes the calling thread's `kvm_run` to the kick handler while alive.
#[derive(Debug)]
pub struct RunGuard(());

impl RunGuard {
    /// Publishes `run` (the calling vCPU thread's own `kvm_run`).
    pub fn publish(run: &mut kvm_run) -> RunGuard {
        KVM_RUN.with(|c| c.set(run));
        // The signal must not be blocked in this thread.
        let _ = vmm_sys_util::signal::unblock_signal(kick_signal());
        RunGuard(())
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        KVM_RUN.with(|c| c.set(std::ptr::null_mut()));
    }
}

/// A thread that can be signalled: the pthread handle of a live thread.
struct Target(libc::pthread_t);

// SAFETY: `Target` is only built from a `JoinHandle` of a thread not yet
// joined, and used under `Kick`'s lock only while that thread is registered
// (it deregisters itself as its last act, before it can be joined).
unsafe impl Killable for Target {
    fn pthread_handle(&self) -> libc::pthread_t {
        self.0
    }
}

/// Kicks one vCPU thread. Cheap to clone; safe to call from any thread, at
/// any time, any number of times.
#[derive(Clone, Default)]
pub struct Kick {
    target: Arc<Mutex<TargetState>>,
}

#[derive(Default)]
enum TargetState {
    /// Spawned, not registered yet.
    #[default]
    Pending,
    Live(Target),
    /// The thread deregistered: never signalled again.
    Gone,
}

impl std::fmt::Debug for Kick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let live = self
            .target
            .lock()
            .map(|t| matches!(*t, TargetState::Live(_)))
            .unwrap_or(false);
        f.debug_struct("Kick").field("live", &live).finish()
    }
}

impl Kick {
    /// Registers the thread of `handle` (call right after spawning it; does
    /// nothing if the thread already deregistered).
    pub fn register<T>(&self, handle: &std::thread::JoinHandle<T>) {
        let t = Target(handle.as_pthread_t() as libc::pthread_t);
        if let Ok(mut g) = self.target.lock() {
            if matches!(*g, TargetState::Pending) {
                *g = TargetState::Live(t);
            }
        }
    }

    /// Deregisters (the thread's last act; no signal after this returns).
    pub fn deregister(&self) {
        if let Ok(mut g) = self.target.lock() {
            *g = TargetState::Gone;
        }
    }

    /// Sends the kick signal if the thread is registered.
    pub fn kick(&self) {
        if let Ok(g) = self.target.lock() {
            if let TargetState::Live(t) = &*g {
                let _ = t.kill(kick_signal());
            }
        }
    }
}
