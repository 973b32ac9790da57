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
use std::sync::mpsc::Receiver;
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
    GangBinding, GangScheduler, Scheduling, VcpuEvent, VcpuShared, VcpuState, VcpuThread,
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
    acks: Receiver<Result<(), String>>,
    thread: Option<JoinHandle<()>>,
}

/// A micro-VM.
pub struct Vm {
    shared: Arc<VmShared>,
    vcpus: Vec<Vcpu>,
    state: VmState,
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
    /// once when the guest ends.
    pub fn create(config: VmConfig, console: ConsoleOut, on_exit: OnExit) -> Result<Vm, VmmError> {
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
            loaded,
            fd: None,
            memory: None,
        };
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
                home: home.clone(),
                state: VcpuState::Created,
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
                thread: Some(handle),
            });
        }
        vm.fd = Some(fd);
        vm.memory = Some(memory);
        // The threads publish their ids first thing.
        for v in &vm.vcpus {
            let until = std::time::Instant::now() + OP_TIMEOUT;
            while v.shared.tid() == 0 && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_micros(50));
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
    /// any state before the guest exits; replaces a previous binding.
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
        let mut first_err = None;
        for (v, b) in self.vcpus.iter().zip(to) {
            let b: Option<GangBinding> = b.into();
            v.shared.release_gate();
            // Drain stale acknowledgements.
            while v.acks.try_recv().is_ok() {}
            let event = match &b {
                Some(b) => {
                    if let Ok(mut g) = v.shared.gate.lock() {
                        *g = Some(Arc::clone(&b.control));
                    }
                    Scheduling::Gang(b.clone())
                }
                None => Scheduling::Linux,
            };
            v.shared.send(VcpuEvent::Schedule(event));
            let r = match v.acks.recv_timeout(OP_TIMEOUT) {
                Ok(Ok(())) => Ok(()),
                Ok(Err(detail)) => Err(VmmError::Schedule {
                    vcpu: v.shared.vcpu.vcpu,
                    detail,
                }),
                Err(_) => Err(VmmError::Timeout(v.shared.vcpu.vcpu)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use VmState::*;

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
