//! gang's own KVM micro-VMs (`type = "pvh"`): a `gang_vmm::Vm` inside the
//! daemon. Its vCPU threads are the daemon's; in a gang pool they get gates
//! (`Runtime::add_gates`) and are kicked out of `KVM_RUN` when their slot
//! ends. Pause and power requests go to the VM's vCPU state machines; the
//! VM reports its end through a callback. A micro-VM cannot outlive the
//! daemon: after a restart its domain is shown crashed.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};

use gang_config::DomainConfig;
use gang_core::DomainId;
use gang_host::runtime::Runtime;
use gang_proto::ApiError;

use super::{Backend, Ended, LiveRecord};
use crate::daemon::{internal, refused};
use crate::process::{self, Tid};
use crate::store::ShutdownReason;

/// Guest RAM of a `pvh` domain without `memory`, MB.
pub(in crate::daemon) const DEFAULT_MEMORY_MB: u64 = 64;

/// A micro-VM domain's live side.
pub(in crate::daemon) struct MicroVmBackend {
    vm: gang_vmm::Vm,
    exits: Receiver<gang_vmm::VmExit>,
}

impl MicroVmBackend {
    /// Creates the VM (its vCPUs not yet running: see [`Backend::start`]).
    pub(in crate::daemon) fn create(
        id: DomainId,
        cfg: &DomainConfig,
        memory_mb: u64,
        vcpus: u32,
        console: PathBuf,
    ) -> Result<(MicroVmBackend, LiveRecord), ApiError> {
        let kernel = cfg.kernel.clone().unwrap_or_default();
        let mut vm_config =
            gang_vmm::VmConfig::new(id, PathBuf::from(&kernel), memory_mb.max(2), vcpus);
        vm_config.ramdisk = cfg.ramdisk.as_ref().map(|r| PathBuf::from(r).into());
        vm_config.cmdline = cfg.cmdline.clone().unwrap_or_default();
        let out = process::open_console(&console).map_err(|e| internal(e.to_string()))?;
        let (tx, exits) = mpsc::channel();
        let tx = Mutex::new(tx);
        let on_exit: gang_vmm::OnExit = Box::new(move |exit| {
            if let Ok(t) = tx.lock() {
                // The receiver is gone only once the domain was torn down.
                let _ignored = t.send(exit);
            }
        });
        let vm = gang_vmm::Vm::create(vm_config, Box::new(out), on_exit)
            .map_err(|e| refused(format!("cannot create the VM: {e}")))?;
        let me = process::identity(std::process::id() as i32)
            .ok_or_else(|| internal("cannot read the daemon's own process"))?;
        let pid = me.pid as i32;
        let threads = vm
            .vcpu_threads()
            .into_iter()
            .map(|t| (t, process::thread_start(pid, t).unwrap_or(0)))
            .collect();
        let record = LiveRecord {
            process: me,
            spawned: false,
            vcpu_threads: Some(threads),
            console,
            start_gate: None,
            qemu: None,
            members: Vec::new(),
            origins: Vec::new(),
            group: false,
        };
        Ok((MicroVmBackend { vm, exits }, record))
    }
}

impl Backend for MicroVmBackend {
    fn kind(&self) -> &'static str {
        "VM"
    }

    fn vcpu_threads(
        &mut self,
        _record: &LiveRecord,
        _vcpus: u32,
        _pattern: Option<&str>,
    ) -> Result<Option<Vec<Tid>>, ApiError> {
        Ok(Some(self.vm.vcpu_threads()))
    }

    fn attach(&mut self, rt: &Arc<Runtime>, id: DomainId, _tids: &[Tid]) -> Result<(), ApiError> {
        let controls = rt.add_gates(id).map_err(|e| internal(e.to_string()))?;
        let scheduler: Arc<dyn gang_vmm::GangScheduler> = rt.clone();
        self.vm
            .attach(scheduler, controls)
            .map_err(|e| internal(format!("handing the vCPUs to the pool: {e}")))
    }

    fn detach(&mut self) {
        if let Err(e) = self.vm.detach() {
            tracing::warn!("VM {}: taking its vCPUs back: {e}", self.vm.id().0);
        }
    }

    fn start(&mut self, paused: bool) -> Result<(), ApiError> {
        self.vm
            .start(paused)
            .map_err(|e| internal(format!("starting the VM: {e}")))
    }

    fn pause(&mut self, _record: &LiveRecord) -> Result<(), ApiError> {
        self.vm.pause().map_err(|e| internal(e.to_string()))
    }

    fn resume(&mut self, _record: &mut LiveRecord) -> Result<(), ApiError> {
        self.vm.resume().map_err(|e| internal(e.to_string()))
    }

    fn request(&mut self, _record: &LiveRecord, reason: ShutdownReason) -> Result<(), ApiError> {
        let r = if reason == ShutdownReason::Reboot {
            self.vm.reboot()
        } else {
            self.vm.shutdown()
        };
        r.map_err(|e| refused(e.to_string()))
    }

    fn console_input(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.vm.console_input(bytes);
        Ok(())
    }

    fn poll_exit(
        &mut self,
        _record: &LiveRecord,
        requested: Option<ShutdownReason>,
    ) -> Option<Ended> {
        let exit = self.exits.try_recv().ok()?;
        Some(match exit.reason {
            gang_vmm::ExitReason::Poweroff => Ended::new(
                requested.unwrap_or(ShutdownReason::Poweroff),
                "the guest powered off",
            ),
            gang_vmm::ExitReason::Reboot => {
                Ended::new(ShutdownReason::Reboot, "the guest rebooted")
            }
            gang_vmm::ExitReason::Crash(why) => {
                Ended::new(ShutdownReason::Crash, format!("the guest crashed: {why}"))
            }
        })
    }

    fn tear_down(&mut self, _record: &LiveRecord) {
        self.detach();
        self.vm.destroy();
    }

    fn outlives_daemon(&self) -> bool {
        false
    }

    fn counts_vcpu_time_only(&self) -> bool {
        true
    }
}
