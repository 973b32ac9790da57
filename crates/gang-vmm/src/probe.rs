//! How fast KVM runs guest code here: a one-vCPU VM runs a counted loop
//! and [`guest_speed`] times it.
//!
//! `/dev/kvm` existing says nothing about speed. On a host with hardware
//! virtualisation a guest's `dec ecx; jnz` loop runs at native speed (about
//! one iteration per cycle, 1e9 or more a second); under nested
//! virtualisation without hardware support the same `/dev/kvm` emulates the
//! guest's instructions, orders of magnitude slower. Callers (gang-qemu's
//! accelerator choice) decide by the measured rate.
//!
//! **The guest.** 64 KiB of RAM; at [`CODE_ADDR`] the three instructions
//! `l: dec ecx; jnz l; hlt`, entered in 32-bit protected mode with paging
//! off (the PVH entry state of [`boot::setup_vcpu`]), the
//! iteration count in `ecx`. Protected mode rather than real mode: a
//! kernel's code runs there, and KVM on Intel without "unrestricted guest"
//! emulates real mode even where protected mode runs natively.
//!
//! **The measurement.** Runs of growing length: 16 Ki iterations first,
//! then each run sized from the rate measured so far to take about a quarter
//! of the budget (at least twice the previous run), until one run takes an
//! eighth of the budget or more; its iterations over its wall time (the
//! `KVM_RUN` calls included) are the rate. A watchdog kicks the vCPU out of
//! `KVM_RUN` (the [`kick`](crate::kick) signal) once the budget is spent, and
//! the iterations a cut-short run did are read back from `ecx`, so a slow
//! `/dev/kvm` ends the probe at the budget with a valid figure. The budget
//! counts from the end of the VM's set-up (a few milliseconds, reported
//! apart).
//!
//! **Measured** on the development machines (nested `/dev/kvm`, no `vmx` in
//! the guest's CPU flags): 0.3–0.75 M iterations/s, the first 16 Ki-iteration
//! run already taking 30–50 ms, so the probe ends after that one run, ~30–75
//! ms in all with ~1–4 ms of set-up; the same loop run natively on that CPU:
//! 0.8–1.8 G iterations/s.
//!
//! The vCPU runs on a thread of its own (the kick signals a thread); the
//! caller's thread is the watchdog.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::boot::{self, Entry};
use crate::kick::{Kick, RunGuard};

/// Where the loop is (guest-physical; RAM is `0..MEMORY_SIZE`).
pub const CODE_ADDR: u64 = 0x8000;
/// The guest's RAM.
const MEMORY_SIZE: usize = 0x10000;
/// `l: dec ecx` (0x49 in 32-bit mode); `jnz l` (rel8 -3); `hlt`.
const LOOP_CODE: [u8; 4] = [0x49, 0x75, 0xfd, 0xf4];
/// The first run's iterations.
const FIRST_RUN: u32 = 1 << 14;
/// How often the watchdog kicks once the budget is spent (a kick that lands
/// outside `KVM_RUN` ends the next `KVM_RUN` at once; repeating covers one
/// that lands before the thread published its `kvm_run`).
const KICK_REPEAT: Duration = Duration::from_millis(5);
/// Where KVM puts its real-mode TSS (as [`crate::vm`] does).
const TSS_ADDR: usize = 0xfffb_d000;

/// What [`guest_speed`] measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuestSpeed {
    /// Loop iterations (`dec ecx; jnz`) per second of wall time.
    pub per_second: f64,
    /// Iterations of the run the rate comes from.
    pub iterations: u64,
    /// That run's wall time.
    pub elapsed: Duration,
    /// Whether that run was cut short at the budget (a slow `/dev/kvm`).
    pub cut_short: bool,
    /// Runs made.
    pub runs: u32,
    /// Creating and setting up the VM.
    pub setup: Duration,
    /// The whole probe, set-up and thread included.
    pub total: Duration,
}

/// Why [`guest_speed`] has no figure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProbeError {
    /// `/dev/kvm` could not be opened (`ENOENT`: there is none).
    #[error("opening /dev/kvm: {}", std::io::Error::from_raw_os_error(*errno))]
    Open {
        /// Why (an `errno`).
        errno: i32,
    },
    /// A KVM call failed.
    #[error("{what}: {source}")]
    Kvm {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: kvm_ioctls::Error,
    },
    /// The guest's RAM could not be mapped or written.
    #[error("guest memory: {0}")]
    Memory(String),
    /// The vCPU left `KVM_RUN` for something the loop never does.
    #[error("the probe's vCPU exited unexpectedly: {0}")]
    Exit(String),
    /// The probe's thread could not be started or died.
    #[error("the probe thread: {0}")]
    Thread(String),
}

impl ProbeError {
    /// Whether the error is that there is no `/dev/kvm` at all.
    pub fn no_kvm(&self) -> bool {
        matches!(self, ProbeError::Open { errno } if *errno == libc::ENOENT)
    }
}

fn kvm_err(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> ProbeError {
    move |source| ProbeError::Kvm { what, source }
}

/// What the vCPU thread tells the watchdog.
enum Report {
    /// Set-up done; the runs end by this instant.
    Deadline(Instant),
    /// The result.
    Done(Result<GuestSpeed, ProbeError>),
}

/// Measures how fast KVM runs guest code: the iterations per second of a
/// `dec ecx; jnz` loop in a one-vCPU VM. Spends about `budget` running the
/// guest (less on a fast host; a slow one is cut off at `budget`), plus the
/// VM's set-up.
pub fn guest_speed(budget: Duration) -> Result<GuestSpeed, ProbeError> {
    let start = Instant::now();
    // Fail on a missing /dev/kvm before starting a thread.
    let kvm = Kvm::new().map_err(|e| ProbeError::Open { errno: e.errno() })?;
    crate::kick::install_handler().map_err(kvm_err("installing the kick signal handler"))?;
    let kick = Kick::default();
    let (tx, rx) = mpsc::channel();
    let thread_kick = kick.clone();
    let handle = std::thread::Builder::new()
        .name("gang-kvm-probe".into())
        .spawn(move || {
            let result = probe_thread(kvm, budget, start, &tx);
            thread_kick.deregister();
            let _ = tx.send(Report::Done(result));
        })
        .map_err(|e| ProbeError::Thread(e.to_string()))?;
    kick.register(&handle);
    let mut deadline: Option<Instant> = None;
    let result = loop {
        let report = match deadline {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
        };
        match report {
            Ok(Report::Deadline(d)) => deadline = Some(d),
            Ok(Report::Done(r)) => break r,
            Err(RecvTimeoutError::Timeout) => {
                kick.kick();
                deadline = Some(Instant::now() + KICK_REPEAT);
            }
            Err(RecvTimeoutError::Disconnected) => {
                break Err(ProbeError::Thread("it died without a result".into()))
            }
        }
    };
    if handle.join().is_err() {
        return Err(ProbeError::Thread("it panicked".into()));
    }
    result
}

/// The vCPU thread: sets the VM up, then runs the loop (see the module
/// docs).
fn probe_thread(
    kvm: Kvm,
    budget: Duration,
    start: Instant,
    tx: &mpsc::Sender<Report>,
) -> Result<GuestSpeed, ProbeError> {
    // Declared before the VM fd, so dropped after it (sys's invariant).
    let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEMORY_SIZE)])
        .map_err(|e| ProbeError::Memory(e.to_string()))?;
    memory
        .write_slice(&LOOP_CODE, GuestAddress(CODE_ADDR))
        .map_err(|e| ProbeError::Memory(e.to_string()))?;
    let vm = kvm.create_vm().map_err(kvm_err("creating a VM"))?;
    vm.set_tss_address(TSS_ADDR)
        .map_err(kvm_err("setting the TSS address"))?;
    crate::sys::register_memory(&vm, &memory).map_err(kvm_err("registering guest memory"))?;
    let cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("reading supported CPUID"))?;
    let mut vcpu = vm.create_vcpu(0).map_err(kvm_err("creating a vCPU"))?;
    boot::setup_vcpu(&vcpu, &cpuid, Entry::Pvh(CODE_ADDR), 0, 1)
        .map_err(kvm_err("setting up the vCPU"))?;
    // Dropped before the vCPU fd whose kvm_run it publishes.
    let _guard = RunGuard::publish(vcpu.get_kvm_run());
    let setup = start.elapsed();
    let deadline = Instant::now() + budget;
    let _ = tx.send(Report::Deadline(deadline));

    let mut n = FIRST_RUN;
    let mut runs = 0;
    loop {
        let run = run_loop(&mut vcpu, n, deadline)?;
        runs += 1;
        let secs = run.elapsed.as_secs_f64().max(1e-9);
        let per_second = run.iterations as f64 / secs;
        let done = run.cut_short
            || run.elapsed >= budget / 8
            || n == u32::MAX
            || Instant::now() >= deadline;
        if done {
            return Ok(GuestSpeed {
                per_second,
                iterations: run.iterations,
                elapsed: run.elapsed,
                cut_short: run.cut_short,
                runs,
                setup,
                total: start.elapsed(),
            });
        }
        n = next_run(n, per_second, budget);
    }
}

/// The next run's iterations: about a quarter of `budget` at `per_second`,
/// at least twice `n`, at most `u32::MAX` (`ecx`).
fn next_run(n: u32, per_second: f64, budget: Duration) -> u32 {
    let sized = per_second * budget.as_secs_f64() / 4.0;
    let at_least = f64::from(n) * 2.0;
    sized.max(at_least).min(f64::from(u32::MAX)) as u32
}

/// One run of the loop.
#[derive(Debug)]
struct Run {
    iterations: u64,
    elapsed: Duration,
    cut_short: bool,
}

/// Runs the loop `n` times, or until a kick after `deadline`.
fn run_loop(vcpu: &mut VcpuFd, n: u32, deadline: Instant) -> Result<Run, ProbeError> {
    let mut regs = vcpu.get_regs().map_err(kvm_err("reading registers"))?;
    regs.rip = CODE_ADDR;
    regs.rcx = u64::from(n);
    regs.rflags = 0x2;
    vcpu.set_regs(&regs).map_err(kvm_err("setting registers"))?;
    let t0 = Instant::now();
    loop {
        match vcpu.run() {
            Ok(VcpuExit::Hlt) => {
                return Ok(Run {
                    iterations: u64::from(n),
                    elapsed: t0.elapsed(),
                    cut_short: false,
                })
            }
            Ok(exit) => return Err(ProbeError::Exit(format!("{exit:?}"))),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                let elapsed = t0.elapsed();
                vcpu.set_kvm_immediate_exit(0);
                if Instant::now() < deadline {
                    // A late kick meant for an earlier run: carry on.
                    continue;
                }
                let regs = vcpu.get_regs().map_err(kvm_err("reading registers"))?;
                let left = regs.rcx & 0xffff_ffff;
                return Ok(Run {
                    iterations: u64::from(n).saturating_sub(left),
                    elapsed,
                    cut_short: true,
                });
            }
            Err(e) => return Err(kvm_err("running the vCPU")(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_grow_and_stay_in_ecx() {
        // Overhead-dominated first run: at least doubles.
        assert_eq!(next_run(1000, 10.0, Duration::from_millis(200)), 2000);
        // Sized from the rate: a quarter of the budget.
        assert_eq!(
            next_run(1 << 14, 1e8, Duration::from_millis(200)),
            5_000_000
        );
        // Capped at ecx's range.
        assert_eq!(next_run(1 << 30, 1e12, Duration::from_secs(1)), u32::MAX);
    }

    #[test]
    fn a_missing_dev_kvm_is_told_apart() {
        let e = ProbeError::Open {
            errno: libc::ENOENT,
        };
        assert!(e.no_kvm());
        assert!(e.to_string().starts_with("opening /dev/kvm: "), "{e}");
        assert!(!ProbeError::Open {
            errno: libc::EACCES
        }
        .no_kvm());
    }

    #[test]
    fn probe_measures_a_positive_rate() {
        let speed = match guest_speed(Duration::from_millis(200)) {
            Ok(s) => s,
            // No /dev/kvm, or one this user may not open (not root, not in
            // the kvm group): the host's lack.
            Err(e @ ProbeError::Open { .. }) => {
                return crate::vm::skip_or_fail(&format!("/dev/kvm is not usable here ({e})"));
            }
            Err(e) => panic!("probe failed: {e}"),
        };
        eprintln!("{speed:?}");
        assert!(speed.per_second > 0.0 && speed.per_second.is_finite());
        assert!(speed.iterations > 0);
        // The budget holds (a generous margin for a loaded machine).
        assert!(speed.total < speed.setup + Duration::from_millis(200 + 300));
    }

    #[test]
    fn a_tiny_budget_cuts_the_run_short_with_a_figure() {
        let speed = match guest_speed(Duration::from_micros(1)) {
            Ok(s) => s,
            // No /dev/kvm, or one this user may not open (not root, not in
            // the kvm group): the host's lack.
            Err(e @ ProbeError::Open { .. }) => {
                return crate::vm::skip_or_fail(&format!("/dev/kvm is not usable here ({e})"));
            }
            Err(e) => panic!("probe failed: {e}"),
        };
        assert_eq!(speed.runs, 1);
        assert!(speed.per_second.is_finite());
    }
}
