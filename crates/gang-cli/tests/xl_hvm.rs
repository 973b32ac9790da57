//! End to end: `type = "hvm"` domains, Linux guests in QEMU started,
//! controlled over QMP and gang-scheduled by the real daemon, booting the
//! image of `gang guest-image linux` (Debian's cloud kernel, busybox and
//! gang's own init and workloads).
//!
//! What they show: the guest's boot and workload on its console, a
//! shutdown through the ACPI power button, a kernel panic marked crashed
//! with the reason, `on_reboot = "restart"`; gang execution of a 2-vCPU
//! guest from the runtime's trace, pause stopping its progress, migration
//! to Pool-0 and back; a config in the style of Xen's `xlexample.hvm`;
//! `kill -9` of the daemon with two guests running; and bad input refused
//! with nothing left behind.
//!
//! Needs root, 2 CPUs, a cgroup freezer, QEMU (Debian's qemu-system-x86)
//! and the guest image (built on first use with apt-get); says why it
//! skipped, and fails instead when GANG_REQUIRE_HOST=1 (CI).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    assert_gang, can_run_domains, list_row, shared_pool, start, trace, type_into_console, wait_for,
    Daemon, TestDir,
};

/// The guest image (with this test's turn), or why these tests cannot run
/// here.
fn image() -> Option<(
    gang_qemu::image::LinuxImage,
    std::sync::MutexGuard<'static, ()>,
)> {
    let turn = common::one_at_a_time();
    let skip = |why: String| {
        common::skip_or_fail(&why);
        None
    };
    if !can_run_domains() {
        return None; // it said why
    }
    if std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
    {
        return skip(
            "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)".into(),
        );
    }
    match gang_qemu::image::cached_test_image() {
        Ok(i) => Some((i, turn)),
        Err(e) => skip(format!("no Linux guest image: {e}")),
    }
}

/// Writes an hvm config booting the guest image with `workload`; returns
/// its path.
fn linux_cfg(
    img: &gang_qemu::image::LinuxImage,
    dir: &Path,
    name: &str,
    workload: &str,
    extra: &str,
) -> String {
    let cfg = dir.join(format!("{name}.cfg"));
    std::fs::write(
        &cfg,
        format!(
            "name = \"{name}\"\ntype = \"hvm\"\nvcpus = 2\nmemory = 192\n\
             kernel = \"{}\"\nramdisk = \"{}\"\n\
             extra = \"console=ttyS0 quiet gang.workload={workload}\"\n{extra}",
            img.kernel.display(),
            img.initrd.display()
        ),
    )
    .unwrap();
    cfg.display().to_string()
}

fn domid(d: &Daemon, name: &str) -> Option<u32> {
    d.ok(&["list"])
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

/// What the guest printed on its serial console so far.
fn console(d: &Daemon, id: u32) -> String {
    std::fs::read_to_string(
        d.dir()
            .join("state")
            .join("console")
            .join(format!("{id}.log")),
    )
    .unwrap_or_default()
}

/// Waits (up to `secs`) until the console of `id` shows `text`.
fn wait_console(d: &Daemon, id: u32, text: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !console(d, id).contains(text) {
        assert!(
            Instant::now() < deadline,
            "console of domain {id} never showed {text:?}:\n{}\ndaemon log:\n{}",
            console(d, id),
            std::fs::read_to_string(d.dir().join("daemon.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The barrier lines of the console: rounds per second, in order.
fn barrier_rates(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| {
            let rest = l.split("gang-guest: barrier ").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

fn state(d: &Daemon, name: &str) -> Option<String> {
    list_row(d, name).map(|r| r.0)
}

/// QEMU processes started for the daemon of `dir` (by their QMP socket).
fn qemus(dir: &Path) -> Vec<u32> {
    let needle = dir.join("state").display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains("qemu-system") && c.contains(&needle)
            })
        })
        .collect()
}

/// The domain cgroups of a daemon (its namespace from `gang info`).
fn domain_cgroups(d: &Daemon) -> Vec<PathBuf> {
    let ns = d.ok(&["info", "gang_cgroups"]).trim().to_string();
    let mut out = Vec::new();
    for root in ["/sys/fs/cgroup/freezer", "/sys/fs/cgroup/memory"] {
        if let Ok(dir) = std::fs::read_dir(root) {
            out.extend(
                dir.flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .starts_with(&format!("{ns}-d"))
                    })
                    .map(|e| e.path()),
            );
        }
    }
    out
}

#[test]
fn a_linux_guest_boots_shuts_down_panics_and_restarts() {
    let Some((img, _turn)) = image() else { return };
    let t = TestDir::new("hvm-life");
    let d = start(&t.0);
    // Boot to the workload, then the ACPI power button.
    let cfg = linux_cfg(
        &img,
        &t.0,
        "linux",
        "barrier",
        "on_poweroff = \"preserve\"\n",
    );
    // Without `quiet`: the kernel's own boot messages show too.
    let text = std::fs::read_to_string(&cfg).unwrap().replace(" quiet", "");
    std::fs::write(&cfg, text).unwrap();
    d.ok(&["create", &cfg]);
    let id = domid(&d, "linux").unwrap();
    wait_console(&d, id, "gang-guest: up, 2 cpus", 60);
    wait_console(&d, id, "rounds/s", 30);
    let text = console(&d, id);
    assert!(
        text.contains("Linux version"),
        "the kernel's boot shows: {text}"
    );
    let info = d.ok(&["list", "-l", "linux"]);
    assert!(info.contains("\"hvm\""), "{info}");
    let out = d.gang(&["shutdown", "-w", "linux"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(state(&d, "linux").as_deref(), Some("---s--"));
    let dmesg = d.ok(&["dmesg"]);
    assert!(
        dmesg.contains("(linux) shut down: QEMU guest") && dmesg.contains("powered off"),
        "{dmesg}"
    );
    assert!(qemus(&t.0).is_empty(), "QEMU ended with its guest");
    d.ok(&["destroy", "linux"]);

    // A kernel panic: crashed, with the reason.
    let cfg = linux_cfg(&img, &t.0, "panicky", "panic", "on_crash = \"preserve\"\n");
    d.ok(&["create", &cfg]);
    wait_for("the panic", || {
        state(&d, "panicky").as_deref() == Some("---sc-")
    });
    let dmesg = d.ok(&["dmesg"]);
    assert!(
        dmesg.contains("(panicky) crashed") && dmesg.contains("the guest kernel panicked"),
        "{dmesg}"
    );
    d.ok(&["destroy", "panicky"]);

    // A guest that reboots is started again (on_reboot defaults to restart).
    let cfg = linux_cfg(&img, &t.0, "rebooter", "reboot", "");
    d.ok(&["create", &cfg]);
    let id = domid(&d, "rebooter").unwrap();
    wait_for("a restart", || {
        d.ok(&["dmesg"]).contains("(rebooter) restarted")
    });
    wait_console(&d, id, "gang-guest: up", 60);
    d.ok(&["destroy", "rebooter"]);
    assert!(qemus(&t.0).is_empty(), "destroy ends QEMU");
    assert!(domain_cgroups(&d).is_empty(), "{:?}", domain_cgroups(&d));
}

#[test]
fn a_guest_in_a_gang_pool_runs_as_a_gang_pauses_and_migrates() {
    let Some((img, _turn)) = image() else { return };
    let t = TestDir::new("hvm-gang");
    let d = start(&t.0);
    shared_pool(&d, "Wide");
    let cfg = linux_cfg(&img, &t.0, "g", "barrier", "pool = \"Wide\"\n");
    d.ok(&["create", &cfg]);
    let id = domid(&d, "g").unwrap();
    wait_console(&d, id, "rounds/s", 90);
    // Every slot of the guest is a gang slot of both vCPU threads.
    assert_gang(&trace(&d, "g", 30), 2);
    // Paused: the workload prints nothing more.
    d.ok(&["pause", "g"]);
    std::thread::sleep(Duration::from_millis(300));
    let before = barrier_rates(&console(&d, id)).len();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        barrier_rates(&console(&d, id)).len(),
        before,
        "a paused guest runs"
    );
    d.ok(&["unpause", "g"]);
    wait_for("progress after unpause", || {
        barrier_rates(&console(&d, id)).len() >= before + 2
    });
    // To Pool-0 and back, running.
    d.ok(&["cpupool-migrate", "g", "Pool-0"]);
    let n = barrier_rates(&console(&d, id)).len();
    wait_for("progress in Pool-0", || {
        barrier_rates(&console(&d, id)).len() >= n + 2
    });
    d.fails(&["trace", "g"], "not running in a gang pool");
    d.ok(&["cpupool-migrate", "g", "Wide"]);
    assert_gang(&trace(&d, "g", 30), 2);
    let n = barrier_rates(&console(&d, id)).len();
    wait_for("progress back in the gang pool", || {
        barrier_rates(&console(&d, id)).len() >= n + 2
    });
    // vcpu-list shows QEMU's vCPU threads running on the pool's CPUs.
    let vcpus = d.ok(&["vcpu-list", "g"]);
    assert_eq!(
        vcpus.lines().filter(|l| l.starts_with("g ")).count(),
        2,
        "{vcpus}"
    );
    d.ok(&["destroy", "g"]);
}

#[test]
fn an_xlexample_hvm_config_boots_with_its_disk_vif_and_vnc() {
    let Some((img, _turn)) = image() else { return };
    let t = TestDir::new("hvm-example");
    let d = start(&t.0);
    let disk = t.0.join("guest-volume.img");
    std::fs::write(&disk, vec![0u8; 4 << 20]).unwrap();
    let qcow = t.0.join("data.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&qcow)
        .arg("8M")
        .status()
        .unwrap();
    assert!(made.success());
    // Xen's xlexample.hvm, with our kernel so that the guest reports what
    // it found.
    let cfg = t.0.join("example.hvm");
    std::fs::write(
        &cfg,
        format!(
            "name = \"example.hvm\"\ntype = \"hvm\"\nmemory = 192\nvcpus = 2\n\
             vif = [ '' ]\n\
             disk = [ '{},raw,xvda,rw', 'format=qcow2,vdev=xvdb,access=ro,target={}' ]\n\
             vnc = 1\nvnclisten = '127.0.0.1'\n\
             kernel = \"{}\"\nramdisk = \"{}\"\n\
             extra = \"console=ttyS0 quiet gang.workload=shell\"\n",
            disk.display(),
            qcow.display(),
            img.kernel.display(),
            img.initrd.display()
        ),
    )
    .unwrap();
    d.ok(&["create", &cfg.display().to_string()]);
    let id = domid(&d, "example.hvm").unwrap();
    // VNC: the address QEMU chose is in dmesg, and an RFB server answers.
    let dmesg = d.ok(&["dmesg"]);
    let vnc = dmesg
        .split("VNC display on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no VNC display in dmesg: {dmesg}"))
        .to_string();
    assert!(vnc.starts_with("127.0.0.1:59"), "{vnc}");
    let mut banner = [0u8; 12];
    let mut rfb = std::net::TcpStream::connect(&vnc).unwrap();
    std::io::Read::read_exact(&mut rfb, &mut banner).unwrap();
    assert!(banner.starts_with(b"RFB "), "{banner:?}");
    drop(rfb);
    wait_console(&d, id, "gang-guest: disks", 90);
    let text = console(&d, id);
    let disks = text
        .lines()
        .find(|l| l.contains("gang-guest: disks"))
        .unwrap();
    assert!(disks.contains("vda") && disks.contains("vdb"), "{disks}");
    let nics = text
        .lines()
        .find(|l| l.contains("gang-guest: nics"))
        .unwrap();
    assert!(nics.contains("eth0"), "{nics}");
    // The console takes input: a command typed into the guest's shell.
    let mut attached = type_into_console(&d, "example.hvm", b"echo typed-$((6*7))\n");
    wait_console(&d, id, "typed-42", 20);
    let _ = attached.kill();
    let _ = attached.wait();
    // Unsupported keys are refused by name, creating nothing.
    let refused = t.0.join("refused.hvm");
    std::fs::write(
        &refused,
        format!(
            "name = \"refused\"\ntype = \"hvm\"\nkernel = \"{}\"\nsdl = 1\nsoundhw = 'sb16'\n",
            img.kernel.display()
        ),
    )
    .unwrap();
    let out = d.gang(&["create", &refused.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sdl") && err.contains("soundhw"), "{err}");
    assert!(list_row(&d, "refused").is_none());
    d.ok(&["destroy", "example.hvm"]);
    // A PVH-typed domain can use QEMU too, and another QEMU binary.
    let cfg = linux_cfg(
        &img,
        &t.0,
        "pvhq",
        "poweroff",
        "on_poweroff = \"preserve\"\ndevice_model = \"qemu\"\n\
         device_model_override = \"/usr/bin/qemu-system-x86_64\"\n",
    );
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("type = \"hvm\"", "type = \"pvh\"");
    std::fs::write(&cfg, text).unwrap();
    d.ok(&["create", &cfg]);
    wait_for("the pvh guest in QEMU to power off", || {
        state(&d, "pvhq").as_deref() == Some("---s--")
    });
    d.ok(&["destroy", "pvhq"]);
}

#[test]
fn guests_outlive_a_killed_daemon_and_are_reattached_still_gang_scheduled() {
    let Some((img, _turn)) = image() else { return };
    let t = TestDir::new("hvm-kill9");
    let d = start(&t.0);
    shared_pool(&d, "Wide");
    for name in ["a", "b"] {
        let cfg = linux_cfg(&img, &t.0, name, "barrier", "pool = \"Wide\"\n");
        d.ok(&["create", &cfg]);
    }
    let ids = [domid(&d, "a").unwrap(), domid(&d, "b").unwrap()];
    for &id in &ids {
        wait_console(&d, id, "rounds/s", 120);
    }
    let before = qemus(&t.0);
    assert_eq!(before.len(), 2);
    let dir = d.kill9();
    // Both keep running without a daemon (the runtime's repair is the next
    // daemon's first act).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(qemus(&dir), before);
    let d = start(&dir);
    let dmesg = d.ok(&["dmesg"]);
    assert!(
        dmesg.contains("(a) re-attached") && dmesg.contains("(b) re-attached"),
        "{dmesg}"
    );
    for name in ["a", "b"] {
        let s = state(&d, name).unwrap();
        assert!(s == "r-----" || s == "-b----", "{name}: {s}");
        assert_gang(&trace(&d, name, 30), 2);
    }
    for &id in &ids {
        let n = barrier_rates(&console(&d, id)).len();
        wait_for("progress after re-attachment", || {
            barrier_rates(&console(&d, id)).len() >= n + 2
        });
    }
    d.ok(&["destroy", "a"]);
    d.ok(&["destroy", "b"]);
    assert!(qemus(&t.0).is_empty());
}

#[test]
fn bad_input_is_refused_and_leaves_nothing_behind() {
    let Some((img, _turn)) = image() else { return };
    let t = TestDir::new("hvm-bad");
    let d = start(&t.0);
    d.ok(&[
        "cpupool-create",
        "name=\"One\"",
        "sched=\"gang\"",
        "cpus=\"1\"",
        "shared=1",
    ]);
    let base = |extra: &str| linux_cfg(&img, &t.0, "bad", "shell", extra);
    let cases: &[(&str, &str)] = &[
        (
            "device_model_override = \"/nonexistent/qemu\"\n",
            "QEMU not found: /nonexistent/qemu",
        ),
        (
            "kernel = \"/nonexistent/vmlinuz\"\n",
            "/nonexistent/vmlinuz",
        ),
        (
            "disk = [ '/nonexistent/disk.img,raw,xvda,rw' ]\n",
            "/nonexistent/disk.img",
        ),
        ("vif = [ 'bridge=gangnobr0' ]\n", "gangnobr0"),
        (
            "pool = \"One\"\n",
            "domain 'bad' has 2 vCPUs but the pool has only 1",
        ),
    ];
    for (extra, message) in cases {
        let cfg = base(extra);
        d.fails(&["create", &cfg], message);
        assert!(
            list_row(&d, "bad").is_none(),
            "{extra}: a state row is left"
        );
        assert!(qemus(&t.0).is_empty(), "{extra}: a QEMU is left");
        assert!(domain_cgroups(&d).is_empty(), "{extra}: a cgroup is left");
        assert!(
            !Path::new("/sys/class/net/vif1.0").exists(),
            "{extra}: a tap is left"
        );
    }
    // An unknown disk format is the parser's error, before the daemon.
    let cfg = base("disk = [ 'format=vmdk2,vdev=xvda,target=/tmp/x' ]\n");
    let out = d.gang(&["create", &cfg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(list_row(&d, "bad").is_none());
}

/// A 512-byte boot sector: prints `gang: booted from disk` on COM1, halts.
fn boot_sector() -> Vec<u8> {
    let mut code = vec![
        0x31, 0xC0, // xor ax, ax
        0x8E, 0xD8, // mov ds, ax
        0xBE, 0x16, 0x7C, // mov si, 0x7c16 (the message)
        0xBA, 0xF8, 0x03, // mov dx, 0x3f8 (COM1)
        0xAC, // next: lodsb
        0x84, 0xC0, // test al, al
        0x74, 0x03, // jz done
        0xEE, // out dx, al
        0xEB, 0xF8, // jmp next
        0xFA, // done: cli
        0xF4, // hlt
        0xEB, 0xFC, // jmp done
    ];
    assert_eq!(code.len(), 0x16);
    code.extend_from_slice(b"gang: booted from disk\r\n\0");
    code.resize(510, 0);
    code.extend_from_slice(&[0x55, 0xAA]);
    code
}

/// An isolated bridge for one test, removed when dropped.
struct Bridge(&'static str);

impl Bridge {
    fn new(name: &'static str) -> Option<Bridge> {
        let _ = std::process::Command::new("ip")
            .args(["link", "delete", name])
            .output();
        let made = std::process::Command::new("ip")
            .args(["link", "add", name, "type", "bridge"])
            .status()
            .ok()?
            .success();
        made.then_some(Bridge(name))
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "delete", self.0])
            .status();
    }
}

#[test]
fn firmware_boots_a_disk_and_a_bridged_vif_gets_a_tap_on_its_bridge() {
    let Some((_img, _turn)) = image() else { return };
    let t = TestDir::new("hvm-disk");
    let d = start(&t.0);
    let Some(bridge) = Bridge::new("gangtestbr0") else {
        panic!("cannot make a bridge with `ip link add ... type bridge`");
    };
    let disk = t.0.join("boot.img");
    let mut bytes = boot_sector();
    bytes.resize(1 << 20, 0);
    std::fs::write(&disk, bytes).unwrap();
    let cfg = t.0.join("disk.hvm");
    std::fs::write(
        &cfg,
        format!(
            "name = \"disk\"\ntype = \"hvm\"\nmemory = 64\nboot = \"c\"\n\
             disk = [ '{},raw,hda,rw' ]\n\
             vif = [ 'bridge={},mac=00:16:3e:00:00:42' ]\n",
            disk.display(),
            bridge.0
        ),
    )
    .unwrap();
    d.ok(&["create", &cfg.display().to_string()]);
    let id = domid(&d, "disk").unwrap();
    wait_console(&d, id, "gang: booted from disk", 60);
    // The tap is on the bridge, up.
    let tap = format!("vif{id}.0");
    let master = std::fs::read_link(format!("/sys/class/net/{tap}/master")).unwrap();
    assert!(master.ends_with(bridge.0), "{}", master.display());
    d.ok(&["destroy", "disk"]);
    assert!(
        !Path::new(&format!("/sys/class/net/{tap}")).exists(),
        "destroy removes the tap"
    );
}
