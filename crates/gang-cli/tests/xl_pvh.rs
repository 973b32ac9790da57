//! End to end: `type = "pvh"` domains (gang's own KVM micro-VMs, booting
//! the in-repo test guests written by `gang guest-image`) through the real
//! daemon and CLI: console output, power-off, crashes confined to their
//! domain, gang execution of a 2-vCPU VM from the runtime's trace, pause,
//! migration both ways, shutdown requests, destroy of a looping guest.
//!
//! Needs root, 2 CPUs, a cgroup freezer and /dev/kvm; says why it skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{can_run_domains, list_row, start, type_into_console, wait_for, Daemon, TestDir};

fn can_run_vms() -> bool {
    if !can_run_domains() {
        return false;
    }
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        common::skip_or_fail("/dev/kvm is not usable here");
        return false;
    }
    true
}

/// Writes guest `image` and a pvh config around it; returns the config path.
fn vm_cfg(d: &Daemon, dir: &Path, name: &str, image: &str, extra: &str) -> String {
    let kernel = dir.join(format!("{image}.elf"));
    if !kernel.exists() {
        d.ok(&["guest-image", image, "-o", &kernel.display().to_string()]);
    }
    let cfg = dir.join(format!("{name}.cfg"));
    std::fs::write(
        &cfg,
        format!(
            "name = \"{name}\"\ntype = \"pvh\"\nkernel = \"{}\"\nmemory = 16\n{extra}",
            kernel.display()
        ),
    )
    .unwrap();
    cfg.display().to_string()
}

fn state(d: &Daemon, name: &str) -> Option<String> {
    list_row(d, name).map(|r| r.0)
}

/// What the domain printed so far (`gang console` follows a running
/// domain's output until it ends, so the file is read directly).
fn console(d: &Daemon, name: &str) -> String {
    let id = d
        .ok(&["list"])
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        .unwrap();
    let path = d
        .dir()
        .join("state")
        .join("console")
        .join(format!("{id}.log"));
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The last round number vCPU 0 of the barrier guest printed.
fn last_round(text: &str) -> u64 {
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("round ")?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_hello_guest_prints_and_powers_off_and_a_crash_stays_in_its_domain() {
    if !can_run_vms() {
        return;
    }
    let t = TestDir::new("pvh-hello");
    let d = start(&t.0);
    // A guest that runs meanwhile, unaffected by the crashes.
    let looping = vm_cfg(&d, &t.0, "looping", "loop", "");
    d.ok(&["create", &looping]);
    let hello = vm_cfg(&d, &t.0, "hello", "hello", "on_poweroff = \"preserve\"\n");
    d.ok(&["create", &hello]);
    wait_for("hello to power off", || {
        state(&d, "hello").as_deref() == Some("---s--")
    });
    // A domain that ended: `gang console` prints its output and returns.
    assert!(d
        .ok(&["console", "hello"])
        .contains("Hello from gang guest"));
    for (name, image) in [("bad-op", "ud2"), ("wild", "wild-write")] {
        let cfg = vm_cfg(&d, &t.0, name, image, "on_crash = \"preserve\"\n");
        d.ok(&["create", &cfg]);
        wait_for("the crash", || state(&d, name).as_deref() == Some("---sc-"));
    }
    let dmesg = d.ok(&["dmesg"]);
    assert!(
        dmesg.contains("domain 3 (bad-op) crashed: the guest crashed"),
        "{dmesg}"
    );
    assert!(
        dmesg.contains("domain 4 (wild) crashed: the guest crashed"),
        "{dmesg}"
    );
    // The daemon answers and the looping guest still runs; destroy ends it.
    let s = state(&d, "looping").unwrap();
    assert!(s == "r-----" || s == "-b----", "{s}");
    for name in ["looping", "hello", "bad-op", "wild"] {
        d.ok(&["destroy", name]);
    }
    assert_eq!(
        d.ok(&["list"]).lines().count(),
        2,
        "only the header and Domain-0"
    );
}

#[test]
fn a_two_vcpu_vm_is_gang_scheduled_pauses_migrates_and_shuts_down() {
    if !can_run_vms() {
        return;
    }
    let t = TestDir::new("pvh-gang");
    let d = start(&t.0);
    d.ok(&[
        "cpupool-create",
        "name=\"Wide\"",
        "sched=\"gang\"",
        "cpus=\"0-1\"",
        "shared=1",
    ]);
    let cfg = vm_cfg(
        &d,
        &t.0,
        "pair",
        "barrier",
        "vcpus = 2\ncmdline = \"rounds=0 every=100\"\npool = \"Wide\"\n\
         gang_policy = \"tt,20ms,10ms\"\non_poweroff = \"preserve\"\n",
    );
    d.ok(&["create", &cfg]);
    wait_for("rounds", || last_round(&console(&d, "pair")) >= 200);
    // Gang execution, from the dispatchers' own record (`slots: N, gang
    // slots: M ...`), over at least 10 slots.
    let counts = || -> (Vec<u64>, String) {
        let trace = d.ok(&["trace", "pair"]);
        let summary = trace
            .lines()
            .find(|l| l.starts_with("slots: "))
            .unwrap_or_default()
            .to_string();
        let counts = summary
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        (counts, summary)
    };
    wait_for("10 slots", || counts().0.first().is_some_and(|&n| n >= 10));
    let (counts, summary) = counts();
    assert_eq!(counts[0], counts[1], "every slot a gang slot: {summary}");
    assert!(d.ok(&["sched-gang", "-d", "pair"]).contains("tt,20ms,10ms"));
    // Pause: no round is printed while paused.
    d.ok(&["pause", "pair"]);
    let paused_at = last_round(&console(&d, "pair"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(last_round(&console(&d, "pair")), paused_at);
    // Migrate to Pool-0 while paused, run there under Linux, and back.
    d.ok(&["cpupool-migrate", "pair", "Pool-0"]);
    d.ok(&["unpause", "pair"]);
    wait_for("rounds in Pool-0", || {
        last_round(&console(&d, "pair")) > paused_at + 100
    });
    d.ok(&["cpupool-migrate", "pair", "Wide"]);
    let before = last_round(&console(&d, "pair"));
    wait_for("rounds back in the gang pool", || {
        last_round(&console(&d, "pair")) > before + 100
    });
    // The guest polls its power port: shutdown is a clean power-off.
    d.ok(&["shutdown", "-w", "pair"]);
    assert_eq!(state(&d, "pair").as_deref(), Some("---s--"));
    d.ok(&["destroy", "pair"]);
    d.ok(&["cpupool-destroy", "Wide"]);
}

#[test]
fn console_input_reaches_a_vm_serial_port() {
    if !can_run_vms() {
        return;
    }
    let t = TestDir::new("pvh-echo");
    let d = start(&t.0);
    let cfg = vm_cfg(&d, &t.0, "echo", "echo", "");
    d.ok(&["create", &cfg]);
    let mut attached = type_into_console(&d, "echo", b"hello-gang-echo\n");
    wait_for("the echo", || {
        console(&d, "echo").contains("hello-gang-echo")
    });
    let _ = attached.kill();
    let _ = attached.wait();
    d.ok(&["destroy", "echo"]);
}

#[test]
fn create_c_shows_the_guest_console_until_it_powers_off() {
    if !can_run_vms() {
        return;
    }
    let t = TestDir::new("pvh-create-c");
    let d = start(&t.0);
    let cfg = vm_cfg(&d, &t.0, "hello", "hello", "");
    // on_poweroff = destroy (the default): the console ends with the domain.
    let out = d.ok(&["create", "-c", &cfg]);
    assert!(out.contains("Hello from gang guest"), "{out}");
    assert!(state(&d, "hello").is_none(), "destroyed at power-off");
}
