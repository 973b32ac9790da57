//! The scheduler-event recorder against an independent measurement: a
//! thread that runs 30 ms and sleeps 30 ms, eight times, is recorded
//! running as long as its own `/proc/self/task/TID/schedstat` says it ran.
//! (For the sampled fallback, which reads schedstat itself, this checks
//! that no period is lost or double-counted, not an independent measure.)
//!
//! Needs root and perf events (the sampled fallback needs neither); else
//! prints why it skipped, and fails instead when `GANG_REQUIRE_HOST=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use gang_core::cosched::VcpuState;
use gang_core::SEC;
use gang_host::runtime::allowed_cpus;
use gang_host::sched_events::{time_in, SchedRecorder, Source};
use gang_host::{proc, sys};

/// Runs the 30/30 ms thread; returns its tid, the monotonic window and its
/// schedstat run time over that window, ns.
fn run_and_sleep(on_start: impl FnOnce(sys::Tid)) -> (sys::Tid, (u64, u64), u64) {
    let (tx, rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        let tid = sys::gettid();
        tx.send(tid).unwrap();
        go_rx.recv().unwrap();
        let pid = std::process::id() as i32;
        let t0 = sys::monotonic_ns();
        let r0 = proc::schedstat_ns(pid, tid).unwrap();
        for _ in 0..8 {
            let until = Instant::now() + Duration::from_millis(30);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        let r1 = proc::schedstat_ns(pid, tid).unwrap();
        let t1 = sys::monotonic_ns();
        ((t0, t1), r1 - r0)
    });
    let tid = rx.recv().unwrap();
    on_start(tid);
    // Let a sampler take its first sample before the thread starts.
    std::thread::sleep(Duration::from_millis(50));
    go_tx.send(()).unwrap();
    let (window, ran) = worker.join().unwrap();
    (tid, window, ran)
}

/// One test at a time: the other's thread would take half the CPU time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn check(recorder: &SchedRecorder, tolerance: f64) {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (tid, window, ran) = run_and_sleep(|tid| recorder.track([tid]));
    // The sampler's last period ends after the thread's.
    std::thread::sleep(Duration::from_millis(50));
    // The thread waited before and after its window (a sampled period is
    // placed at its start, which can be before the window's).
    let spans = recorder.spans(tid, window.0 - SEC / 10, window.1 + SEC / 10);
    let recorded = time_in(&spans, VcpuState::Running);
    let err = (recorded as f64 - ran as f64).abs() / ran as f64;
    println!(
        "{:?}: recorded running {:.3} ms, schedstat {:.3} ms ({:.2}% apart), {} spans, \
         runnable {:.3} ms, lost {}",
        recorder.source(),
        recorded as f64 / 1e6,
        ran as f64 / 1e6,
        err * 100.0,
        spans.len(),
        time_in(&spans, VcpuState::Runnable) as f64 / 1e6,
        recorder.lost()
    );
    // ~240 ms on an idle machine; less when other work shares the CPUs.
    assert!(
        ran > 100_000_000,
        "the thread ran {ran} ns, expected ~240 ms"
    );
    assert!(
        err < tolerance,
        "recorded {recorded} ns running, schedstat says {ran} ns"
    );
    assert!(
        spans
            .iter()
            .filter(|s| s.state == VcpuState::Running)
            .count()
            >= 8,
        "eight runs at least: {spans:?}"
    );
}

#[test]
fn recorded_run_time_matches_schedstat() {
    if !sys::is_root() {
        common::skip_or_fail("needs root (perf events on every CPU)");
        return;
    }
    let cpus: Vec<_> = allowed_cpus().unwrap().iter().collect();
    let recorder = match SchedRecorder::events(&cpus, 10 * SEC) {
        Ok(r) => r,
        Err(e) => {
            common::skip_or_fail(&format!("perf events unavailable: {e}"));
            return;
        }
    };
    assert_eq!(recorder.source(), Source::Events);
    check(&recorder, 0.03);
}

#[test]
fn sampled_run_time_matches_schedstat() {
    let recorder = SchedRecorder::sampled(10 * SEC).unwrap();
    check(&recorder, 0.05);
}

#[test]
fn reading_the_tracepoints_leaves_the_hosts_mounts_as_they_were() {
    if !sys::is_root() {
        common::skip_or_fail("needs root (tracefs, mounted privately where none is)");
        return;
    }
    let tracefs = || {
        std::fs::read_to_string("/proc/self/mounts")
            .unwrap()
            .lines()
            .filter(|l| l.split(' ').nth(2) == Some("tracefs"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let before = tracefs();
    let dir = gang_host::sched_events::TracingDir::open().expect("a tracing directory");
    for name in gang_host::sched_events::TRACEPOINTS {
        let f = gang_host::sched_events::Format::read(&dir, name).expect("a format");
        assert!(f.id > 0, "{name}");
    }
    drop(dir);
    assert_eq!(tracefs(), before, "tracefs mounts changed");
}
