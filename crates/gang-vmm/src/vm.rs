//! A micro-VM: guest RAM, one thread per vCPU, the devices, and the life
//! cycle the toolstack drives.
//!
//! **Life cycle** ([`VmState`], checked by [`valid_transition`] before any
//! operation; a refused operation changes nothing):
//!
//! | from \ to | Running | Paused | Exited | Destroyed |
//! |---|---|---|---|---|
//! | Created | `start(false)`, `resume` | `start(true)`, `pause` | – | `destroy` |
//! | Running | `resume` (no-op) | `pause` | guest exit | `destroy` |
//! | Paused | `resume` | `pause` (no-op) | – | `destroy` |
//! | Exited | – | – | – | `destroy` |
//! | Destroyed | – | – | – | `destroy` (no-op) |
//!
//! The guest ends the VM (power off,
//! reboot, crash: [`ExitReason`]); the VMM never restarts it: a reboot is
//! reported and the toolstack applies `on_reboot` (destroy and create
//! again). The first vCPU to end the VM stops its siblings, and the
//! `on_exit` callback is called once, from that vCPU's thread.
//!
//! **Invariants.** After `pause` returns, no vCPU runs guest code until
//! `resume`. After `destroy` returns, every vCPU thread has been joined and
//! guest memory is unmapped. Nothing a guest does panics the process or
//! touches another VM. Dropping a `Vm` destroys it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use gang_core::{DomainId, VcpuRef};
use gang_host::gate::VcpuControl;
use gang_host::sys::Tid;
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::boot::{self, BootError, Image, Loaded};
use crate::devices::{ConsoleOut, Devices, REQUEST_POWEROFF, REQUEST_REBOOT};
use crate::vcpu::{
    GangBinding, GangScheduler, ScheduleAck, Scheduling, VcpuEvent, VcpuShared, VcpuState,
    VcpuThread,
};

/// How long a VM operation waits for its vCPU threads.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// What to boot.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The domain id (names the vCPUs to a gang runtime).
    pub id: DomainId,
    /// An ELF kernel: PVH entry if it has the Xen PVH note, else 64-bit.
    pub kernel: Image,
    /// A ramdisk, passed as PVH module 0.
    pub ramdisk: Option<Image>,
    /// The command line, passed in the PVH start info.
    pub cmdline: String,
    /// Guest RAM in MiB (2 to 3072).
    pub memory_mib: u64,
    /// vCPUs (1 to 64).
    pub vcpus: u32,
}

impl VmConfig {
    /// A configuration with no ramdisk and an empty command line.
    pub fn new(id: DomainId, kernel: impl Into<Image>, memory_mib: u64, vcpus: u32) -> Self {
        VmConfig {
            id,
            kernel: kernel.into(),
            ramdisk: None,
            cmdline: String::new(),
            memory_mib,
            vcpus,
        }
    }
}

/// Why a guest ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest powered off.
    Poweroff,
    /// The guest asked for a reboot.
    Reboot,
    /// The guest crashed; why.
    Crash(String),
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReason::Poweroff => write!(f, "poweroff"),
            ExitReason::Reboot => write!(f, "reboot"),
            ExitReason::Crash(why) => write!(f, "crash: {why}"),
        }
    }
}

/// The exit notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmExit {
    /// The VM.
    pub id: DomainId,
    /// Why it ended.
    pub reason: ExitReason,
}

/// Called once when the guest ends (from a vCPU thread: must not block
/// long, must not call back into the `Vm`; send it to a channel).
pub type OnExit = Box<dyn Fn(VmExit) + Send + Sync>;

/// A VM's life-cycle state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmState {
    /// Created, no guest code ran.
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// The guest ended; threads are gone or going.
    Exited(ExitReason),
    /// Destroyed: threads joined, memory freed.
    Destroyed,
}

/// Whether `from` may become `to` (see the module docs).
pub fn valid_transition(from: &VmState, to: &VmState) -> bool {
    use VmState::*;
    matches!(
        (from, to),
        (Created, Running | Paused | Destroyed)
            | (Running, Running | Paused | Exited(_) | Destroyed)
            | (Paused, Running | Paused | Destroyed)
            | (Exited(_), Destroyed)
            | (Destroyed, Destroyed)
    )
}

/// VM errors.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The configuration is out of range.
    #[error("invalid VM configuration: {0}")]
    Config(String),
    /// /dev/kvm could not be used.
    #[error("KVM: {what}: {source}")]
    Kvm {
        /// What we were doing.
        what: &'static str,
        /// Why it failed.
        source: kvm_ioctls::Error,
    },
    /// Guest memory could not be allocated.
    #[error("allocating {mib} MiB of guest memory: {detail}")]
    Memory {
        /// How much.
        mib: u64,
        /// Why.
        detail: String,
    },
    /// Loading the guest failed.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// The operation is not valid in this state.
    #[error("cannot go from {from:?} to {to:?}")]
    InvalidTransition {
        /// The state.
        from: VmState,
        /// The state asked for.
        to: VmState,
    },
    /// A vCPU thread did not answer in time.
    #[error("vCPU {0} did not answer within {OP_TIMEOUT:?}")]
    Timeout(u32),
    /// A vCPU thread did not acknowledge a scheduling change (attach or
    /// detach) in time. The change is abandoned: the vCPU is put back under
    /// Linux scheduling before it runs guest code again, even if its thread
    /// completes the change late.
    #[error(
        "vCPU {vcpu} did not acknowledge its scheduling change within {timeout:?}: \
         the change is abandoned and the vCPU falls back to Linux scheduling"
    )]
    ScheduleTimeout {
        /// Which.
        vcpu: u32,
        /// How long we waited.
        timeout: Duration,
    },
    /// A vCPU thread did not start (publish its thread id) in time; the VM
    /// was not created and every thread already started was joined.
    #[error("vCPU thread {vcpu} did not start within {timeout:?}; the VM was not created")]
    ThreadStart {
        /// Which.
        vcpu: u32,
        /// How long we waited.
        timeout: Duration,
    },
    /// A vCPU thread could not be started.
    #[error("starting vCPU thread {vcpu}: {source}")]
    Thread {
        /// Which.
        vcpu: u32,
        /// Why.
        source: std::io::Error,
    },
    /// A gang runtime refused a vCPU (pinning, priority).
    #[error("vCPU {vcpu}: {detail}")]
    Schedule {
        /// Which.
        vcpu: u32,
        /// Why.
        detail: String,
    },
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
    move |source| VmmError::Kvm { what, source }
}

/// What the vCPU threads of a VM share.
pub struct VmShared {
    id: DomainId,
    /// The devices.
    pub devices: Devices,
    exit: Mutex<Option<ExitReason>>,
    on_exit: OnExit,
    vcpus: Mutex<Vec<Arc<VcpuShared>>>,
    wake_seq: AtomicU64,
}

impl std::fmt::Debug for VmShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmShared")
            .field("id", &self.id)
            .field("exit", &self.exit)
            .finish()
    }
}

impl VmShared {
    /// The wake sequence (see `vcpu`).
    pub fn wake_seq(&self) -> u64 {
        self.wake_seq.load(Ordering::SeqCst)
    }

    /// Wakes halted vCPUs after a device change they may wait for.
    fn wake(&self) {
        self.wake_seq.fetch_add(1, Ordering::SeqCst);
        for v in self.vcpus.lock().map(|v| v.clone()).unwrap_or_default() {
            if v.is_halted() {
                v.send(VcpuEvent::Wake);
            }
        }
    }

    /// The guest ended: the first reason wins; siblings are stopped and
    /// `on_exit` is called once.
    pub fn end(&self, reason: ExitReason) {
        {
            let mut exit = self.exit.lock().unwrap_or_else(|p| p.into_inner());
            if exit.is_some() {
                return;
            }
            *exit = Some(reason.clone());
        }
        for v in self.vcpus.lock().map(|v| v.clone()).unwrap_or_default() {
            v.send(VcpuEvent::Stop);
            v.release_gate();
        }
        (self.on_exit)(VmExit {
            id: self.id,
            reason,
        });
    }

    fn exit_reason(&self) -> Option<ExitReason> {
        self.exit.lock().map(|e| e.clone()).unwrap_or(None)
    }
}

struct Vcpu {
    shared: Arc<VcpuShared>,
    acks: Receiver<ScheduleAck>,
    /// The number of the last `Schedule` request sent.
    schedule_seq: u64,
    thread: Option<JoinHandle<()>>,
}

/// How a `Schedule` request ended, as the VM side saw it.
enum Answer {
    Acked(Result<(), String>),
    TimedOut,
    /// The thread is gone (the guest ended meanwhile).
    Gone,
}

impl Vcpu {
    /// Sends a `Schedule` request; returns its number.
    fn request(&mut self, to: Scheduling) -> u64 {
        self.schedule_seq += 1;
        let seq = self.schedule_seq;
        self.shared.send(VcpuEvent::Schedule { seq, to });
        seq
    }

    /// Waits for the answer to request `seq`, discarding late answers to
    /// earlier requests.
    fn answer(&self, seq: u64, timeout: Duration) -> Answer {
        let until = std::time::Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match self.acks.recv_timeout(left) {
                Ok(ack) if ack.seq == seq => return Answer::Acked(ack.result),
                Ok(_) => {} // an earlier request's, which timed out
                Err(RecvTimeoutError::Timeout) => return Answer::TimedOut,
                Err(RecvTimeoutError::Disconnected) => return Answer::Gone,
            }
        }
    }
}

/// How [`Vm::create`] waits (tests shorten it and slow a thread down).
#[derive(Debug, Clone)]
struct Tuning {
    /// How long to wait for the vCPU threads to start.
    start_timeout: Duration,
    /// Test only: this vCPU's thread waits this long before it starts.
    #[cfg(test)]
    slow_start: Option<(u32, Duration)>,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            start_timeout: OP_TIMEOUT,
            #[cfg(test)]
            slow_start: None,
        }
    }
}

/// A micro-VM.
pub struct Vm {
    shared: Arc<VmShared>,
    vcpus: Vec<Vcpu>,
    state: VmState,
    /// How long a scheduling change waits for each vCPU thread.
    schedule_timeout: Duration,
    loaded: Loaded,
    // Dropped in this order: the VM fd before the memory it maps.
    fd: Option<VmFd>,
    memory: Option<GuestMemoryMmap>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("id", &self.shared.id)
            .field("state", &self.state())
            .field("vcpus", &self.vcpus.len())
            .field("entry", &self.loaded.entry)
            .finish()
    }
}

impl Vm {
    /// Creates the VM: memory, guest image, devices and one thread per
    /// vCPU, waiting in `Created` for [`Vm::start`] under Linux
    /// scheduling. `console` receives COM1 output; `on_exit` is called
    /// once when the guest ends. Every vCPU thread must start (publish its
    /// id) within a bounded time, else [`VmmError::ThreadStart`], and the
    /// threads started are stopped and joined and every KVM fd is closed.
    pub fn create(config: VmConfig, console: ConsoleOut, on_exit: OnExit) -> Result<Vm, VmmError> {
        Vm::create_tuned(config, console, on_exit, Tuning::default())
    }

    fn create_tuned(
        config: VmConfig,
        console: ConsoleOut,
        on_exit: OnExit,
        tuning: Tuning,
    ) -> Result<Vm, VmmError> {
        if !(boot::MIN_MEMORY_MIB..=boot::MAX_MEMORY_MIB).contains(&config.memory_mib) {
            return Err(VmmError::Config(format!(
                "memory {} MiB: must be {} to {} MiB",
                config.memory_mib,
                boot::MIN_MEMORY_MIB,
                boot::MAX_MEMORY_MIB
            )));
        }
        if !(1..=64).contains(&config.vcpus) {
            return Err(VmmError::Config(format!(
                "{} vCPUs: must be 1 to 64",
                config.vcpus
            )));
        }
        crate::kick::install_handler().map_err(|e| VmmError::Kvm {
            what: "installing the kick signal handler",
            source: e,
        })?;
        let kvm = Kvm::new().map_err(kvm_err("opening /dev/kvm"))?;
        let fd = kvm.create_vm().map_err(kvm_err("creating a VM"))?;
        fd.set_tss_address(0xfffb_d000)
            .map_err(kvm_err("setting the TSS address"))?;
        let size = config.memory_mib << 20;
        let memory =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size as usize)]).map_err(|e| {
                VmmError::Memory {
                    mib: config.memory_mib,
                    detail: e.to_string(),
                }
            })?;
        crate::sys::register_memory(&fd, &memory).map_err(kvm_err("registering guest memory"))?;
        let loaded = boot::load(
            &memory,
            size,
            &config.kernel,
            config.ramdisk.as_ref(),
            &config.cmdline,
        )?;
        let cpuid = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("reading supported CPUID"))?;
        let shared = Arc::new(VmShared {
            id: config.id,
            devices: Devices::new(console),
            exit: Mutex::new(None),
            on_exit,
            vcpus: Mutex::new(Vec::new()),
            wake_seq: AtomicU64::new(0),
        });
        let home: Vec<gang_core::CpuId> = gang_host::runtime::allowed_cpus()
            .map(|s| s.iter().collect())
            .unwrap_or_default();
        let mut vm = Vm {
            shared: Arc::clone(&shared),
            vcpus: Vec::new(),
            state: VmState::Created,
            schedule_timeout: OP_TIMEOUT,
            loaded,
            fd: None,
            memory: None,
        };
        let (started_tx, started) = std::sync::mpsc::channel();
        for index in 0..config.vcpus {
            let vcpu_fd = fd
                .create_vcpu(u64::from(index))
                .map_err(kvm_err("creating a vCPU"))?;
            boot::setup_vcpu(&vcpu_fd, &cpuid, loaded.entry, index, config.vcpus)
                .map_err(kvm_err("setting up a vCPU"))?;
            let vref = VcpuRef {
                domain: config.id,
                vcpu: index,
            };
            let (vshared, events) = VcpuShared::new(vref);
            let (ack_tx, acks) = std::sync::mpsc::channel();
            let thread = VcpuThread {
                fd: vcpu_fd,
                shared: Arc::clone(&vshared),
                vm: Arc::clone(&shared),
                events,
                acks: ack_tx,
                started: started_tx.clone(),
                home: home.clone(),
                state: VcpuState::Created,
                #[cfg(test)]
                start_delay: match tuning.slow_start {
                    Some((i, d)) if i == index => d,
                    _ => Duration::ZERO,
                },
            };
            let handle = std::thread::Builder::new()
                .name(format!("vcpu-{}.{index}", config.id.0))
                .spawn(move || thread.run())
                .map_err(|source| VmmError::Thread {
                    vcpu: index,
                    source,
                })?;
            vshared.kick.register(&handle);
            if let Ok(mut v) = shared.vcpus.lock() {
                v.push(Arc::clone(&vshared));
            }
            vm.vcpus.push(Vcpu {
                shared: vshared,
                acks,
                schedule_seq: 0,
                thread: Some(handle),
            });
        }
        vm.fd = Some(fd);
        vm.memory = Some(memory);
        // Every thread publishes its id first thing, then says so. Without
        // every id there is no VM: dropping `vm` stops and joins the threads
        // started and closes every KVM fd.
        drop(started_tx);
        let until = std::time::Instant::now() + tuning.start_timeout;
        while let Some(slow) = vm.vcpus.iter().position(|v| v.shared.tid() == 0) {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if started.recv_timeout(left).is_err() {
                return Err(VmmError::ThreadStart {
                    vcpu: slow as u32,
                    timeout: tuning.start_timeout,
                });
            }
        }
        Ok(vm)
    }

    /// The domain id.
    pub fn id(&self) -> DomainId {
        self.shared.id
    }

    /// How the guest was entered.
    pub fn boot_entry(&self) -> boot::Entry {
        self.loaded.entry
    }

    /// The state.
    pub fn state(&self) -> VmState {
        match (&self.state, self.shared.exit_reason()) {
            (VmState::Destroyed, _) => VmState::Destroyed,
            (_, Some(r)) => VmState::Exited(r),
            (s, None) => s.clone(),
        }
    }

    /// Why the guest ended, once it did.
    pub fn exit_reason(&self) -> Option<ExitReason> {
        self.shared.exit_reason()
    }

    fn check(&self, to: VmState) -> Result<(), VmmError> {
        let from = self.state();
        if valid_transition(&from, &to) {
            Ok(())
        } else {
            Err(VmmError::InvalidTransition { from, to })
        }
    }

    /// Starts the vCPUs (running, or paused).
    pub fn start(&mut self, paused: bool) -> Result<(), VmmError> {
        if self.state() != VmState::Created {
            return Err(VmmError::InvalidTransition {
                from: self.state(),
                to: if paused {
                    VmState::Paused
                } else {
                    VmState::Running
                },
            });
        }
        if paused {
            self.state = VmState::Paused;
        } else {
            self.send_all(|| VcpuEvent::Resume);
            self.state = VmState::Running;
        }
        Ok(())
    }

    /// Pauses: when this returns, no vCPU runs guest code until `resume`.
    pub fn pause(&mut self) -> Result<(), VmmError> {
        self.check(VmState::Paused)?;
        if self.state == VmState::Created {
            self.state = VmState::Paused;
            return Ok(());
        }
        self.send_all(|| VcpuEvent::Pause);
        for v in &self.vcpus {
            if !v.shared.wait_outside_guest(OP_TIMEOUT) {
                return Err(VmmError::Timeout(v.shared.vcpu.vcpu));
            }
        }
        self.state = VmState::Paused;
        Ok(())
    }

    /// Resumes (or starts) the vCPUs.
    pub fn resume(&mut self) -> Result<(), VmmError> {
        self.check(VmState::Running)?;
        self.send_all(|| VcpuEvent::Resume);
        self.state = VmState::Running;
        Ok(())
    }

    /// Asks the guest to power off: the power port reads
    /// [`REQUEST_POWEROFF`] from now on and halted vCPUs are woken. A guest
    /// that does not poll the port ignores it (then `destroy`).
    pub fn shutdown(&self) -> Result<(), VmmError> {
        self.request(REQUEST_POWEROFF)
    }

    /// Asks the guest to reboot (the power port reads [`REQUEST_REBOOT`]).
    pub fn reboot(&self) -> Result<(), VmmError> {
        self.request(REQUEST_REBOOT)
    }

    fn request(&self, what: u8) -> Result<(), VmmError> {
        let s = self.state();
        if !matches!(s, VmState::Created | VmState::Running | VmState::Paused) {
            return Err(VmmError::InvalidTransition {
                from: s,
                to: VmState::Exited(ExitReason::Poweroff),
            });
        }
        self.shared.devices.request(what);
        self.shared.wake();
        Ok(())
    }

    /// Feeds bytes to COM1's receiver (and wakes halted vCPUs).
    pub fn console_input(&self, bytes: &[u8]) {
        self.shared.devices.console_input(bytes);
        self.shared.wake();
    }

    /// The vCPU threads' ids, in vCPU order (dead threads included until
    /// `destroy`).
    pub fn vcpu_threads(&self) -> Vec<Tid> {
        self.vcpus.iter().map(|v| v.shared.tid()).collect()
    }

    /// Number of vCPUs.
    pub fn vcpu_count(&self) -> u32 {
        self.vcpus.len() as u32
    }

    /// Hands the vCPUs to a gang runtime: vCPU `i` passes `controls[i]`
    /// (from `Runtime::add_domain`) and is pinned by the runtime. Works in
    /// any state before the guest exits; replaces a previous binding. A
    /// vCPU whose thread does not acknowledge in time is put back under
    /// Linux scheduling ([`VmmError::ScheduleTimeout`]); the others are
    /// still attached.
    pub fn attach(
        &mut self,
        scheduler: Arc<dyn GangScheduler>,
        controls: Vec<Arc<VcpuControl>>,
    ) -> Result<(), VmmError> {
        if controls.len() != self.vcpus.len() {
            return Err(VmmError::Config(format!(
                "{} gate controls for {} vCPUs",
                controls.len(),
                self.vcpus.len()
            )));
        }
        let bindings = controls
            .into_iter()
            .map(|control| GangBinding {
                control,
                scheduler: Arc::clone(&scheduler),
            })
            .collect();
        self.schedule(bindings)
    }

    /// Gives the vCPUs back to Linux scheduling (Pool-0): ordinary policy,
    /// the CPUs the VM was created with. The old gates are stopped.
    pub fn detach(&mut self) -> Result<(), VmmError> {
        let n = self.vcpus.len();
        self.schedule(
            vec![None; n]
                .into_iter()
                .collect::<Vec<Option<GangBinding>>>(),
        )
    }

    fn schedule<B: Into<Option<GangBinding>>>(&mut self, to: Vec<B>) -> Result<(), VmmError> {
        let s = self.state();
        if !matches!(s, VmState::Created | VmState::Running | VmState::Paused) {
            return Err(VmmError::InvalidTransition {
                from: s.clone(),
                to: s,
            });
        }
        let timeout = self.schedule_timeout;
        let mut first_err = None;
        for (v, b) in self.vcpus.iter_mut().zip(to) {
            let b: Option<GangBinding> = b.into();
            v.shared.release_gate();
            let to = match &b {
                Some(b) => {
                    if let Ok(mut g) = v.shared.gate.lock() {
                        *g = Some(Arc::clone(&b.control));
                    }
                    Scheduling::Gang(b.clone())
                }
                None => Scheduling::Linux,
            };
            let seq = v.request(to);
            let vcpu = v.shared.vcpu.vcpu;
            let r = match v.answer(seq, timeout) {
                Answer::Acked(Ok(())) => Ok(()),
                Answer::Acked(Err(detail)) => Err(VmmError::Schedule { vcpu, detail }),
                Answer::TimedOut => {
                    // Abandon the change: whenever the thread gets to it,
                    // it applies this next, before any guest code.
                    v.request(Scheduling::Linux);
                    Err(VmmError::ScheduleTimeout { vcpu, timeout })
                }
                Answer::Gone => Err(VmmError::Schedule {
                    vcpu,
                    detail: "its thread has ended (the guest ended)".into(),
                }),
            };
            if let Err(e) = r {
                if let Ok(mut g) = v.shared.gate.lock() {
                    *g = None;
                }
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn send_all(&self, event: impl Fn() -> VcpuEvent) {
        for v in &self.vcpus {
            v.shared.send(event());
        }
    }

    /// Stops and joins every vCPU thread and frees guest memory. Works in
    /// every state; a second call does nothing.
    pub fn destroy(&mut self) {
        if self.state == VmState::Destroyed {
            return;
        }
        for v in &self.vcpus {
            v.shared.send(VcpuEvent::Stop);
            v.shared.release_gate();
        }
        for v in &mut self.vcpus {
            if let Some(t) = v.thread.take() {
                let _ = t.join();
            }
        }
        if let Ok(mut v) = self.shared.vcpus.lock() {
            v.clear();
        }
        self.fd = None;
        self.memory = None;
        self.state = VmState::Destroyed;
    }

    /// The vCPUs' shared blocks (for the benchmark).
    pub(crate) fn vcpu_shared(&self, index: usize) -> Option<&Arc<VcpuShared>> {
        self.vcpus.get(index).map(|v| &v.shared)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// For this crate's unit tests (see `gang_testkit::host`).
#[cfg(test)]
pub(crate) use gang_testkit::host::skip_or_fail;

#[cfg(test)]
mod tests {
    use super::*;
    use gang_host::clock::Clock;
    use std::sync::Condvar;
    use std::time::Instant;
    use VmState::*;

    /// The tests that create VMs run one at a time (they count the
    /// process's KVM file descriptors).
    static KVM_TESTS: Mutex<()> = Mutex::new(());

    fn kvm_usable() -> bool {
        let ok = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        if !ok {
            skip_or_fail("/dev/kvm is not usable here");
        }
        ok
    }

    fn config(id: u32, image: &str, vcpus: u32) -> VmConfig {
        VmConfig::new(
            DomainId(id),
            gang_guests::image(image).expect("known image"),
            16,
            vcpus,
        )
    }

    fn create(config: VmConfig, tuning: Tuning) -> Result<(Vm, Receiver<VmExit>), VmmError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = Mutex::new(tx);
        let on_exit: OnExit = Box::new(move |e| {
            let _ = tx.lock().map(|t| t.send(e));
        });
        Vm::create_tuned(config, Box::new(std::io::sink()), on_exit, tuning).map(|vm| (vm, rx))
    }

    /// A gang scheduler whose `prepare_vcpu_thread` waits while held, then
    /// answers `answer`.
    struct Slow {
        held: Mutex<bool>,
        released: Condvar,
        answer: Result<(), String>,
        clock: Clock,
    }

    impl Slow {
        fn new(held: bool, answer: Result<(), String>) -> Arc<Slow> {
            Arc::new(Slow {
                held: Mutex::new(held),
                released: Condvar::new(),
                answer,
                clock: Clock::new(1_000_000),
            })
        }

        fn release(&self) {
            *self.held.lock().unwrap() = false;
            self.released.notify_all();
        }
    }

    impl GangScheduler for Slow {
        fn prepare_vcpu_thread(&self, _: VcpuRef) -> Result<(), String> {
            let held = self.held.lock().unwrap();
            let _ = self
                .released
                .wait_timeout_while(held, Duration::from_secs(20), |h| *h);
            self.answer.clone()
        }
        fn vcpu_blocked(&self, _: VcpuRef) {}
        fn vcpu_woke(&self, _: VcpuRef) {}
        fn clock(&self) -> Clock {
            self.clock
        }
    }

    fn control(id: u32) -> Arc<VcpuControl> {
        Arc::new(VcpuControl::new(
            VcpuRef {
                domain: DomainId(id),
                vcpu: 0,
            },
            false,
        ))
    }

    /// Stops a gate when dropped, so that a thread wrongly left parked at
    /// it cannot hang the VM's destruction when a test fails.
    struct StopOnDrop(Arc<VcpuControl>);

    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.stop();
        }
    }

    #[test]
    fn a_late_acknowledgement_is_not_taken_by_the_next_attach() {
        if !kvm_usable() {
            return;
        }
        let _serial = KVM_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let (mut vm, _exits) = create(config(9101, "loop", 1), Tuning::default()).unwrap();
        let (ca, cb) = (control(9101), control(9101));
        let _stop = (StopOnDrop(Arc::clone(&ca)), StopOnDrop(Arc::clone(&cb)));
        // The first attach times out: the thread is stuck in the runtime's
        // preparation, which will succeed late.
        vm.schedule_timeout = Duration::from_millis(100);
        let a = Slow::new(true, Ok(()));
        assert!(vm.attach(Arc::clone(&a) as _, vec![ca]).is_err());
        // The second attach is refused by its runtime. The first one's late
        // "ok" arrives while the second waits (released as soon as the
        // second request was sent).
        vm.schedule_timeout = OP_TIMEOUT;
        let v0 = Arc::clone(&vm.vcpus[0].shared);
        let sent_before = v0.pending();
        let releaser = std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(10);
            while v0.pending() <= sent_before && Instant::now() < until {
                std::thread::sleep(Duration::from_micros(200));
            }
            a.release();
        });
        let b = Slow::new(false, Err("runtime b refuses".into()));
        let second = vm.attach(b, vec![cb]);
        releaser.join().unwrap();
        match second {
            Err(VmmError::Schedule { vcpu: 0, detail }) => assert_eq!(detail, "runtime b refuses"),
            r => panic!("the second attach took another request's answer: {r:?}"),
        }
        vm.destroy();
    }

    #[test]
    fn a_timed_out_attach_leaves_the_vcpu_under_linux_scheduling() {
        if !kvm_usable() {
            return;
        }
        let _serial = KVM_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let (mut vm, exits) = create(config(9102, "hello", 1), Tuning::default()).unwrap();
        let ca = control(9102);
        let _stop = StopOnDrop(Arc::clone(&ca));
        vm.schedule_timeout = Duration::from_millis(100);
        let a = Slow::new(true, Ok(()));
        let err = vm.attach(Arc::clone(&a) as _, vec![Arc::clone(&ca)]);
        // The runtime's preparation completes late; its gate never opens.
        a.release();
        vm.start(false).unwrap();
        // Under Linux scheduling the guest runs to its power off; left at
        // the abandoned gate it would never run.
        let exit = exits.recv_timeout(Duration::from_secs(5));
        assert_eq!(exit.map(|e| e.reason), Ok(ExitReason::Poweroff));
        match err {
            Err(e @ VmmError::ScheduleTimeout { vcpu: 0, .. }) => {
                assert!(e.to_string().contains("falls back to Linux"), "{e}")
            }
            r => panic!("{r:?}"),
        }
        vm.destroy();
    }

    /// The process's threads named `vcpu-<id>.<n>`.
    fn vcpu_threads_of(id: u32) -> usize {
        let prefix = format!("vcpu-{id}.");
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|c| c.starts_with(&prefix))
            .count()
    }

    /// The process's open KVM file descriptors (/dev/kvm, VMs, vCPUs).
    fn kvm_fds() -> usize {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|f| std::fs::read_link(f.ok()?.path()).ok())
            .filter(|l| {
                let l = l.to_string_lossy();
                l == "/dev/kvm" || l.starts_with("anon_inode:kvm")
            })
            .count()
    }

    #[test]
    fn create_fails_cleanly_when_a_vcpu_thread_is_slow_to_start() {
        if !kvm_usable() {
            return;
        }
        let _serial = KVM_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let fds = kvm_fds();
        let timeout = Duration::from_millis(50);
        let tuning = Tuning {
            start_timeout: timeout,
            slow_start: Some((1, Duration::from_millis(500))),
        };
        let started = Instant::now();
        match create(config(9103, "loop", 3), tuning) {
            Err(e @ VmmError::ThreadStart { vcpu: 1, .. }) => {
                assert!(e.to_string().contains("did not start within 50ms"), "{e}")
            }
            Err(e) => panic!("{e}"),
            Ok((vm, _)) => panic!("created with thread ids {:?}", vm.vcpu_threads()),
        }
        // Every thread started was joined (the slow one too) and every KVM
        // file descriptor closed.
        assert!(started.elapsed() >= Duration::from_millis(500));
        assert_eq!(vcpu_threads_of(9103), 0);
        assert_eq!(kvm_fds(), fds);
        // Untouched, the same VM starts.
        let (vm, _) = create(config(9103, "loop", 3), Tuning::default()).unwrap();
        assert!(vm.vcpu_threads().iter().all(|&t| t > 0));
        assert_eq!(vcpu_threads_of(9103), 3);
        drop(vm);
        assert_eq!((vcpu_threads_of(9103), kvm_fds()), (0, fds));
    }

    #[test]
    fn the_transition_table() {
        let crash = || Exited(ExitReason::Crash("x".into()));
        let all = [Created, Running, Paused, crash(), Destroyed];
        for from in &all {
            for to in &all {
                let ok = valid_transition(from, to);
                let expected = match (from, to) {
                    (_, Created) => false,
                    (Destroyed, t) => *t == Destroyed,
                    (Exited(_), t) => *t == Destroyed,
                    (Created | Paused, Exited(_)) => false,
                    _ => true,
                };
                assert_eq!(ok, expected, "{from:?} -> {to:?}");
            }
        }
    }
}
