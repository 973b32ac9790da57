//! What the VM tests share: whether they can run here, a console that
//! captures output, and exit notifications on a channel.
#![allow(dead_code)]

use std::io::Write;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gang_core::DomainId;
use gang_vmm::{Vm, VmConfig, VmExit};

// Not every test binary uses each.
#[allow(unused_imports)]
pub use gang_testkit::host::skip_or_fail;

/// Whether KVM tests can run: /dev/kvm usable. Says why not
/// ([`skip_or_fail`]).
pub fn can_run() -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) => {
            skip_or_fail(&format!("/dev/kvm is not usable here: {e}"));
            false
        }
    }
}

/// Whether gang-runtime tests can run: root and CPUs 0-1 besides KVM.
pub fn can_run_gang() -> bool {
    if !can_run() {
        return false;
    }
    if !gang_host::sys::is_root() {
        skip_or_fail("needs root (real-time priorities)");
        return false;
    }
    match gang_host::runtime::allowed_cpus() {
        Ok(c) if c.contains(0) && c.contains(1) => true,
        _ => {
            skip_or_fail("needs CPUs 0 and 1");
            false
        }
    }
}

/// A console that keeps everything written.
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    /// The output so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits until the output contains `what`.
    pub fn wait_for(&self, what: &str, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.text().contains(what) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

/// A VM of `image` with a captured console and its exit channel.
pub struct TestVm {
    pub vm: Vm,
    pub console: Capture,
    pub exits: Receiver<VmExit>,
}

impl TestVm {
    pub fn new(id: u32, image: &str, vcpus: u32, cmdline: &str) -> TestVm {
        let mut config = VmConfig::new(
            DomainId(id),
            gang_guests::image(image).expect("known image"),
            16,
            vcpus,
        );
        config.cmdline = cmdline.into();
        Self::with_config(config)
    }

    pub fn with_config(config: VmConfig) -> TestVm {
        let console = Capture::default();
        let (tx, exits) = std::sync::mpsc::channel();
        let tx = Mutex::new(tx);
        let vm = Vm::create(
            config,
            Box::new(console.clone()),
            Box::new(move |e| {
                let _ = tx.lock().map(|t| t.send(e));
            }),
        )
        .expect("VM created");
        TestVm { vm, console, exits }
    }

    /// Waits for the exit notification.
    pub fn wait_exit(&self, timeout: Duration) -> Result<VmExit, RecvTimeoutError> {
        self.exits.recv_timeout(timeout)
    }
}

/// Whether thread `tid` of this process exists.
pub fn thread_exists(tid: i32) -> bool {
    std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()
}
