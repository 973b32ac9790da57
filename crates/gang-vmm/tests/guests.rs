//! Booting the test guests: output, exits, crashes confined to their VM,
//! and the life cycle in every state. Needs /dev/kvm (skips otherwise).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{can_run, thread_exists, TestVm};
use gang_vmm::boot::Entry;
use gang_vmm::{ExitReason, VmState};

const T: Duration = Duration::from_secs(20);

#[test]
fn hello_prints_its_line_and_powers_off_through_pvh() {
    if !can_run() {
        return;
    }
    let mut t = TestVm::new(1, "hello", 1, "console=ttyS0 answer=42");
    assert!(matches!(t.vm.boot_entry(), Entry::Pvh(_)));
    t.vm.start(false).unwrap();
    let exit = t.wait_exit(T).expect("exit notification");
    assert_eq!(exit.reason, ExitReason::Poweroff, "{}", t.console.text());
    assert_eq!(exit.id, gang_core::DomainId(1));
    let out = t.console.text();
    assert!(out.contains("Hello from gang guest"), "{out}");
    assert!(out.contains("cmdline: console=ttyS0 answer=42"), "{out}");
    assert_eq!(t.vm.state(), VmState::Exited(ExitReason::Poweroff));
    t.vm.destroy();
    assert_eq!(t.vm.state(), VmState::Destroyed);
}

#[test]
fn hello64_boots_through_the_64_bit_entry_with_a_ramdisk() {
    if !can_run() {
        return;
    }
    let mut config = gang_vmm::VmConfig::new(
        gang_core::DomainId(2),
        gang_guests::image("hello64").unwrap(),
        8,
        2,
    );
    config.cmdline = "x=1".into();
    config.ramdisk = Some(b"initrd-contents-here".to_vec().into());
    let t = TestVm::with_config(config);
    let mut t = t;
    assert!(matches!(t.vm.boot_entry(), Entry::Elf64(_)));
    t.vm.start(false).unwrap();
    assert_eq!(t.wait_exit(T).unwrap().reason, ExitReason::Poweroff);
    let out = t.console.text();
    assert!(out.contains("Hello from gang guest (vcpus: 2)"), "{out}");
    assert!(out.contains("ramdisk: 20 bytes: initrd-contents-"), "{out}");
}

fn expect_crash(image: &str, what: &str) {
    let mut bad = TestVm::new(10, image, 1, "");
    let mut good = TestVm::new(11, "hello", 1, "");
    bad.vm.start(false).unwrap();
    good.vm.start(false).unwrap();
    let exit = bad.wait_exit(T).expect("the faulting VM ends");
    match &exit.reason {
        ExitReason::Crash(why) => assert!(why.contains(what), "{image}: {why}"),
        other => panic!("{image}: {other:?}, console: {}", bad.console.text()),
    }
    assert!(matches!(
        bad.vm.state(),
        VmState::Exited(ExitReason::Crash(_))
    ));
    assert_eq!(good.wait_exit(T).unwrap().reason, ExitReason::Poweroff);
    assert!(good.console.text().contains("Hello from gang guest"));
    let tids = bad.vm.vcpu_threads();
    bad.vm.destroy();
    assert!(tids.iter().all(|&t| !thread_exists(t)));
}

#[test]
fn an_invalid_instruction_crashes_only_its_vm() {
    if !can_run() {
        return;
    }
    expect_crash("ud2", "triple fault");
}

#[test]
fn a_write_to_unmapped_memory_crashes_only_its_vm() {
    if !can_run() {
        return;
    }
    expect_crash("wild-write", "0xd0000000");
}

#[test]
fn a_looping_guest_keeps_running_and_destroy_ends_its_threads() {
    if !can_run() {
        return;
    }
    let mut t = TestVm::new(12, "loop", 2, "");
    t.vm.start(false).unwrap();
    assert!(
        t.console.wait_for("looping forever", T),
        "{:?}",
        t.console.text()
    );
    // It ignores a shutdown request and keeps running.
    t.vm.shutdown().unwrap();
    assert!(t.wait_exit(Duration::from_millis(300)).is_err());
    assert_eq!(t.vm.state(), VmState::Running);
    // One line, from vCPU 0 only: lines printed by both vCPUs at once
    // interleaved byte by byte, and then neither held "looping forever"
    // (the wait above timed out in about 1 run of 20).
    assert_eq!(t.console.text(), "loop guest: looping forever\n");
    let tids = t.vm.vcpu_threads();
    assert!(tids.iter().all(|&t| t > 0 && thread_exists(t)));
    t.vm.destroy();
    assert_eq!(t.vm.state(), VmState::Destroyed);
    assert!(tids.iter().all(|&t| !thread_exists(t)), "threads gone");
}

/// The number in the last complete `round N` line (a pause may fall in the
/// middle of a line).
fn last_round(out: &str) -> u64 {
    let complete = &out[..out.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("round ")?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn barrier_guest_makes_progress_under_linux_and_stops_after_its_rounds() {
    if !can_run() {
        return;
    }
    let mut t = TestVm::new(13, "barrier", 2, "rounds=300 every=100");
    t.vm.start(false).unwrap();
    let exit = t.wait_exit(T).expect("ends after its rounds");
    let out = t.console.text();
    assert_eq!(exit.reason, ExitReason::Poweroff, "{out}");
    assert!(out.contains("barrier: vcpus 2 rounds 300"), "{out}");
    assert_eq!(last_round(&out), 300, "{out}");
    assert!(out.contains("barrier done: 300 rounds"), "{out}");
}

#[test]
fn pause_stops_guest_progress_and_resume_continues_it() {
    if !can_run() {
        return;
    }
    let mut t = TestVm::new(14, "barrier-pvh", 2, "every=20");
    t.vm.start(false).unwrap();
    assert!(t.console.wait_for("round 20\n", T), "{}", t.console.text());
    t.vm.pause().unwrap();
    assert_eq!(t.vm.state(), VmState::Paused);
    let frozen = t.console.text();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(t.console.text(), frozen, "no output while paused");
    t.vm.resume().unwrap();
    let next = format!("round {}\n", last_round(&frozen) + 20);
    assert!(t.console.wait_for(&next, T), "{}", t.console.text());
    // A graceful shutdown: the guest polls the power port.
    t.vm.shutdown().unwrap();
    assert_eq!(t.wait_exit(T).unwrap().reason, ExitReason::Poweroff);
    assert!(t.console.text().contains("barrier done"));
}

#[test]
fn life_cycle_operations_in_every_state() {
    if !can_run() {
        return;
    }
    use VmState::*;
    // Created.
    let mut t = TestVm::new(15, "loop", 1, "");
    assert_eq!(t.vm.state(), Created);
    assert!(t.vm.resume().is_ok(), "resume of a created VM starts it");
    assert!(t.console.wait_for("looping", T));
    let mut t = TestVm::new(16, "loop", 1, "");
    t.vm.pause().unwrap();
    assert_eq!(t.vm.state(), Paused);
    t.vm.destroy();
    let mut t = TestVm::new(17, "loop", 1, "");
    t.vm.start(true).unwrap();
    assert_eq!(t.vm.state(), Paused);
    assert!(t.vm.start(false).is_err(), "start twice");
    t.vm.pause().unwrap();
    t.vm.resume().unwrap();
    assert!(t.console.wait_for("looping", T));
    // Running.
    t.vm.resume().unwrap();
    assert_eq!(t.vm.state(), Running);
    t.vm.pause().unwrap();
    t.vm.pause().unwrap();
    assert_eq!(t.vm.state(), Paused);
    // Paused: destroy.
    t.vm.destroy();
    assert_eq!(t.vm.state(), Destroyed);
    // Destroyed: only destroy.
    assert!(t.vm.pause().is_err());
    assert!(t.vm.resume().is_err());
    assert!(t.vm.shutdown().is_err());
    assert!(t.vm.start(false).is_err());
    t.vm.destroy();
    // Exited.
    let mut t = TestVm::new(18, "hello", 1, "");
    t.vm.start(false).unwrap();
    t.wait_exit(T).unwrap();
    assert!(matches!(t.vm.state(), Exited(ExitReason::Poweroff)));
    assert!(t.vm.pause().is_err());
    assert!(t.vm.resume().is_err());
    assert!(t.vm.shutdown().is_err());
    t.vm.destroy();
    assert_eq!(t.vm.state(), Destroyed);
    // Running, destroyed directly; a dropped VM is destroyed too.
    let mut t = TestVm::new(19, "loop", 2, "");
    t.vm.start(false).unwrap();
    let tids = t.vm.vcpu_threads();
    drop(t);
    assert!(tids.iter().all(|&t| !thread_exists(t)));
}

#[test]
fn console_input_wakes_a_halted_guest_and_it_echoes() {
    if !can_run() {
        return;
    }
    let mut t = TestVm::new(20, "echo", 1, "");
    t.vm.start(false).unwrap();
    assert!(t.console.wait_for("echo ready\n", T));
    for chunk in [&b"hello "[..], b"gang\n"] {
        std::thread::sleep(Duration::from_millis(20)); // let it halt
        t.vm.console_input(chunk);
    }
    assert!(
        t.console.wait_for("hello gang\n", T),
        "{}",
        t.console.text()
    );
    // More input than the 16550's FIFO holds (no `q` or `r`: commands).
    let long: String = (0..300)
        .map(|i| char::from(b'a' + (i % 16) as u8))
        .collect();
    t.vm.console_input(long.as_bytes());
    assert!(t.console.wait_for(&long, T), "{}", t.console.text());
    t.vm.console_input(b"r");
    assert_eq!(t.wait_exit(T).unwrap().reason, ExitReason::Reboot);
}

#[test]
fn shutdown_wakes_a_halted_guest_that_then_powers_off() {
    if !can_run() {
        return;
    }
    let mut t = TestVm::new(21, "echo", 1, "");
    t.vm.start(false).unwrap();
    assert!(t.console.wait_for("echo ready\n", T));
    std::thread::sleep(Duration::from_millis(20));
    t.vm.pause().unwrap();
    t.vm.shutdown().unwrap();
    assert!(t.wait_exit(Duration::from_millis(100)).is_err(), "paused");
    t.vm.resume().unwrap();
    assert_eq!(t.wait_exit(T).unwrap().reason, ExitReason::Poweroff);
    assert!(t.console.text().contains("shutdown requested"));
}
