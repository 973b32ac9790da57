//! The Linux guest image, built on this machine from Debian's packages
//! (`cached_test_image`: once per machine) and booted in QEMU directly, with
//! TCG and two vCPUs. Skipped, saying why, where there is no
//! qemu-system-x86_64 or no apt-get, unless GANG_REQUIRE_HOST=1.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use gang_qemu::image::{cached_test_image, ImageError, LinuxImage};
use gang_qemu::qmp::{Qmp, RunState};

const QEMU: &str = "qemu-system-x86_64";
/// How long a boot may take to show what a test waits for (TCG on a loaded
/// 2-CPU machine; a boot takes about 2 s when idle).
const DEADLINE: Duration = Duration::from_secs(60);

fn require_host() -> bool {
    std::env::var("GANG_REQUIRE_HOST").is_ok_and(|v| v == "1")
}

/// A test cannot run for lack of the host (QEMU, apt-get): prints
/// `skipped: WHY` past the harness's capture (so a passing run's output
/// shows it too), or fails the test under `GANG_REQUIRE_HOST=1`.
fn skip(why: &str) -> Option<LinuxImage> {
    use std::io::Write as _;
    assert!(!require_host(), "GANG_REQUIRE_HOST=1 but {why}");
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let _ = std::io::stderr().write_all(format!("skipped: {why} [{test}]\n").as_bytes());
    None
}

/// The image, or None (having said why) where this machine cannot boot it.
fn image() -> Option<LinuxImage> {
    match Command::new(QEMU).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => return skip(&format!("{QEMU} --version failed: {}", o.status)),
        Err(e) => return skip(&format!("{QEMU} not found ({e})")),
    }
    match cached_test_image() {
        Ok(image) => Some(image),
        Err(e @ (ImageError::NoApt { .. } | ImageError::NoDpkgDeb)) => skip(&e.to_string()),
        Err(e) => panic!("building the test image: {e}"),
    }
}

/// A QEMU process, killed when dropped (also when a test fails).
struct Vm {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Vm {
    /// Boots `image` with `gang.workload=WORKLOAD` and `extra` QEMU
    /// arguments; the console goes to a file, QMP to a socket.
    fn boot(image: &LinuxImage, workload: &str, extra: &[&str]) -> Vm {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let console = dir.path().join("console.log");
        let qmp = dir.path().join("qmp.sock");
        let child = Command::new(QEMU)
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-accel", "tcg,thread=multi", "-smp", "2", "-m", "256"])
            .arg("-kernel")
            .arg(&image.kernel)
            .arg("-initrd")
            .arg(&image.initrd)
            .arg("-append")
            .arg(format!("console=ttyS0 gang.workload={workload}"))
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .args(extra)
            .stdin(Stdio::null())
            .spawn()
            .expect("starting qemu-system-x86_64");
        Vm { child, dir }
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }

    fn qmp(&self) -> Qmp {
        Qmp::connect(&self.dir.path().join("qmp.sock"), Duration::from_secs(10))
            .expect("connecting to QEMU's QMP socket")
    }

    /// Waits until `done(console)` holds; panics with the console after
    /// [`DEADLINE`] or if QEMU ends first.
    fn wait_for(&mut self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let text = self.console();
            if done(&text) {
                return text;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("QEMU ended ({status}) before {what}; console:\n{text}");
            }
            assert!(
                start.elapsed() < DEADLINE,
                "no {what} within {DEADLINE:?}; console:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for QEMU to end by itself.
    fn wait_exit(&mut self, what: &str) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for QEMU") {
                return status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "QEMU still runs {DEADLINE:?} after {what}; console:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The N of every `gang-guest: barrier N rounds/s` line.
fn barrier_rates(console: &str) -> Vec<u64> {
    console
        .lines()
        .filter_map(|l| {
            let rest = l.split("gang-guest: barrier ").nth(1)?;
            rest.trim_end().strip_suffix(" rounds/s")?.parse().ok()
        })
        .collect()
}

/// The line of the console that starts with `prefix` (after any noise).
fn line_with<'a>(console: &'a str, prefix: &str) -> Option<&'a str> {
    console
        .lines()
        .find_map(|l| l.find(prefix).map(|at| l[at..].trim_end()))
}

#[test]
fn the_barrier_workload_runs_on_both_vcpus() {
    let Some(image) = image() else { return };
    let start = Instant::now();
    let mut vm = Vm::boot(&image, "barrier", &[]);
    let up = vm.wait_for("gang-guest: up", |c| c.contains("gang-guest: up, "));
    let booted = start.elapsed();
    assert_eq!(
        line_with(&up, "gang-guest: up, "),
        Some("gang-guest: up, 2 cpus"),
        "console:\n{up}"
    );
    let text = vm.wait_for("two barrier rates", |c| barrier_rates(c).len() >= 2);
    let rates = barrier_rates(&text);
    eprintln!(
        "up after {booted:?}, rates {rates:?} after {:?}; initrd {} KiB",
        start.elapsed(),
        std::fs::metadata(&image.initrd).unwrap().len() / 1024
    );
    assert!(rates.iter().all(|&r| r > 0), "{rates:?}; console:\n{text}");
    assert!(
        text.contains("gang-guest: barrier started, 2 threads"),
        "{text}"
    );
}

#[test]
fn the_poweroff_workload_ends_qemu() {
    let Some(image) = image() else { return };
    let mut vm = Vm::boot(&image, "poweroff", &[]);
    let status = vm.wait_exit("booting to power off");
    let text = vm.console();
    assert!(status.success(), "QEMU: {status}; console:\n{text}");
    assert!(text.contains("gang-guest: up, 2 cpus"), "{text}");
    assert!(text.contains("gang-guest: powering off"), "{text}");
}

/// Disks, a NIC and the ACPI power button: the shell workload with a
/// virtio disk, an IDE CD-ROM and a virtio NIC shows them on the console,
/// and QMP's `system_powerdown` (an ACPI power-button press, handled by
/// busybox acpid) powers the guest off.
#[test]
fn devices_are_listed_and_the_power_button_powers_off() {
    let Some(image) = image() else { return };
    let scratch = tempfile::tempdir().unwrap();
    let disk = scratch.path().join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let drive = format!("file={},format=raw,if=virtio", disk.display());
    // Any readable file serves as the CD-ROM's medium.
    let cdrom = format!(
        "file={},format=raw,media=cdrom,if=ide",
        image.initrd.display()
    );
    let mut vm = Vm::boot(
        &image,
        "shell",
        &[
            "-drive",
            &drive,
            "-drive",
            &cdrom,
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-pci,netdev=n0",
        ],
    );
    let text = vm.wait_for("the shell", |c| c.contains("gang-guest: a shell"));
    assert_eq!(
        line_with(&text, "gang-guest: disks"),
        Some("gang-guest: disks sr0 vda"),
        "console:\n{text}"
    );
    assert_eq!(
        line_with(&text, "gang-guest: nics"),
        Some("gang-guest: nics eth0"),
        "console:\n{text}"
    );
    // acpid starts before the workload; give the shell a moment anyway.
    std::thread::sleep(Duration::from_millis(500));
    let mut qmp = vm.qmp();
    qmp.execute("system_powerdown", None).unwrap();
    let status = vm.wait_exit("system_powerdown");
    let text = vm.console();
    assert!(status.success(), "QEMU: {status}; console:\n{text}");
    assert!(
        text.contains("gang-guest: power button pressed, powering off"),
        "{text}"
    );
}

/// The panic workload panics the kernel, and QEMU's ISA pvpanic device
/// (driven by the pvpanic-mmio module) reports it: with `-action
/// panic=pause` QEMU keeps the guest in the guest-panicked state.
#[test]
fn the_panic_workload_is_reported_by_pvpanic() {
    let Some(image) = image() else { return };
    let mut vm = Vm::boot(
        &image,
        "panic",
        &["-device", "pvpanic", "-action", "panic=pause"],
    );
    let mut qmp = vm.qmp();
    let text = vm.wait_for("the panic", |c| c.contains("Kernel panic"));
    assert!(text.contains("gang-guest: panicking"), "{text}");
    let start = Instant::now();
    loop {
        let state = qmp.status().unwrap();
        if state == RunState::GuestPanicked {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "QEMU's state stays {state:?} after the panic; console:\n{}",
            vm.console()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let events: Vec<String> = qmp.take_events().into_iter().map(|e| e.name).collect();
    assert!(events.iter().any(|e| e == "GUEST_PANICKED"), "{events:?}");
}

/// The reboot workload resets the machine; with -no-reboot QEMU ends.
#[test]
fn the_reboot_workload_resets_the_machine() {
    let Some(image) = image() else { return };
    let mut vm = Vm::boot(&image, "reboot", &["-no-reboot"]);
    let status = vm.wait_exit("booting to reboot");
    let text = vm.console();
    assert!(status.success(), "QEMU: {status}; console:\n{text}");
    assert!(text.contains("gang-guest: rebooting"), "{text}");
}

/// The initramfs as built from the real packages: read back with an
/// independent cpio reader, it holds gang's /init and userland, a console
/// node, and the modules in an order where each real `.ko`'s `.modinfo`
/// dependencies come first.
#[test]
fn the_initramfs_holds_real_modules_in_dependency_order() {
    let image = match cached_test_image() {
        Ok(image) => image,
        Err(e @ (ImageError::NoApt { .. } | ImageError::NoDpkgDeb)) => {
            skip(&e.to_string());
            return;
        }
        Err(e) => panic!("building the test image: {e}"),
    };
    let bytes = std::fs::read(&image.initrd).expect("reading the initramfs");
    let mut files = std::collections::HashMap::new();
    let mut rest: &[u8] = &bytes;
    loop {
        let mut entry = cpio::NewcReader::new(rest).expect("a newc entry");
        if entry.entry().is_trailer() {
            break;
        }
        let (name, mode) = (entry.entry().name().to_owned(), entry.entry().mode());
        let rdev = (entry.entry().rdev_major(), entry.entry().rdev_minor());
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).expect("entry data");
        files.insert(name, (mode, rdev, data));
        rest = entry.finish().expect("the next entry");
    }
    assert_eq!(files["init"].0, 0o100755);
    assert!(files["init"].2.starts_with(b"#!/bin/busybox sh\n"));
    assert_eq!(files["bin/gang-guest"].2, gang_guests::LINUX_USERLAND);
    assert_eq!(files["bin/busybox"].0, 0o100755);
    assert_eq!(
        (files["dev/console"].0, files["dev/console"].1),
        (0o020600, (5, 1))
    );

    let order = String::from_utf8(files["lib/modules/gang-load-order"].2.clone()).unwrap();
    let mut loaded: Vec<String> = Vec::new();
    for line in order.lines() {
        let path = line.split_whitespace().next().unwrap();
        let inside = path.strip_prefix('/').unwrap();
        assert!(
            inside.starts_with(&format!("lib/modules/{}/kernel/", image.kernel_version)),
            "{line}"
        );
        let ko = &files
            .get(inside)
            .unwrap_or_else(|| panic!("{inside} missing"))
            .2;
        for dep in gang_qemu::image::module_depends(ko).unwrap() {
            assert!(
                loaded.contains(&dep),
                "{path} needs {dep} first: {loaded:?}"
            );
        }
        loaded.push(gang_qemu::image::module_name(path));
    }
    for wanted in [
        "virtio_pci",
        "virtio_blk",
        "virtio_net",
        "pvpanic_mmio",
        "button",
        "evdev",
    ] {
        assert!(loaded.iter().any(|m| m == wanted), "{wanted}: {loaded:?}");
    }
    assert!(order.contains("scsi_mod.ko scan=sync"), "{order}");
}
