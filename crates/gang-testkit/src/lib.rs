//! # gang-testkit: what gang's test suites share
//!
//! Used as a dev-dependency only.
//!
//! * [`fuzz`]: runs a property over a bounded number of generated cases and
//!   prints how many ran and how long they took, so that the fuzzers in the
//!   suite (the xl.cfg parser, the scenario format, the wire protocol, the
//!   daemon's API) report what they covered (`cargo test -- --nocapture`).
//! * [`api`]: the request names and fields of gang's JSON API, for
//!   request-shaped fuzz input.
//! * [`host`]: how a test that needs the host (root, cgroup controllers,
//!   2 CPUs, /dev/kvm, QEMU) skips, or fails under `GANG_REQUIRE_HOST=1`
//!   (CI, which has all of it).

use std::sync::atomic::{AtomicU32, Ordering};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestRunner};

/// Runs `check` on `cases` values of `strategy` (a panic in `check` fails
/// the test with proptest's minimal case), then prints `NAME: N cases in T`.
pub fn fuzz<S: Strategy>(name: &str, cases: u32, strategy: S, check: impl FnMut(S::Value)) {
    let ran = AtomicU32::new(0);
    let check = std::cell::RefCell::new(check);
    let started = std::time::Instant::now();
    let mut runner = TestRunner::new(Config::with_cases(cases));
    let result = runner.run(&strategy, |v| {
        ran.fetch_add(1, Ordering::Relaxed);
        (check.borrow_mut())(v);
        Ok(())
    });
    println!(
        "{name}: {} cases in {:.2?}",
        ran.load(Ordering::Relaxed),
        started.elapsed()
    );
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

/// The shape of gang's JSON API requests (`gang_proto::RequestBody`), for
/// request-shaped fuzz input.
pub mod api {
    /// Every request's `op`, and one that is none.
    pub const OPS: &[&str] = &[
        "info",
        "list-domains",
        "list-pools",
        "create-pool",
        "destroy-pool",
        "rename-pool",
        "pool-cpu-add",
        "pool-cpu-remove",
        "pool-migrate",
        "create-domain",
        "pause",
        "unpause",
        "shutdown",
        "reboot",
        "destroy",
        "sched-gang-get",
        "sched-gang-set",
        "vcpu-list",
        "dmesg",
        "console",
        "console-input",
        "trace",
        "nope",
    ];

    /// Every field a request may carry, and one that none does.
    pub const FIELDS: &[&str] = &[
        "name", "sched", "cpus", "shared", "pool", "domain", "config", "paused", "policy",
        "domains", "clear", "bytes", "detail", "last_ns", "extra",
    ];
}

/// Tests that need the host: skip where it lacks something, fail in CI.
pub mod host {
    /// Whether `GANG_REQUIRE_HOST=1` (CI): a test that lacks the host fails
    /// instead of skipping.
    pub fn host_required() -> bool {
        std::env::var("GANG_REQUIRE_HOST").is_ok_and(|v| v == "1")
    }

    /// A test cannot run for lack of the host (root, a controller, 2 CPUs,
    /// /dev/kvm, a tool): prints `skipped: WHY`, or fails the test under
    /// `GANG_REQUIRE_HOST=1`, where CI has all of it.
    pub fn skip_or_fail(why: &str) {
        assert!(!host_required(), "GANG_REQUIRE_HOST=1 but {why}");
        say("skipped", why);
    }

    /// A skip that is right on every host, CI's too, since it depends on
    /// the host's layout (cgroup v1 or v2), not on what it lacks: printed
    /// as `skipped (layout): WHY`, never a failure.
    pub fn skip_plain(why: &str) {
        say("skipped (layout)", why);
    }

    /// One line on stderr past the test harness's capture, so that a
    /// passing run's output shows every skip too (`.ci/run` counts them),
    /// with the test's name.
    fn say(what: &str, why: &str) {
        use std::io::Write as _;
        let test = std::thread::current().name().unwrap_or("?").to_string();
        let line = format!("{what}: {why} [{test}]\n");
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_runs_every_case_and_fails_on_a_panic() {
        let mut seen = 0;
        fuzz("count", 20, 0u32..10, |_| seen += 1);
        assert_eq!(seen, 20);
        let failed = std::panic::catch_unwind(|| {
            fuzz("fail", 20, 0u32..10, |v| assert!(v < 5));
        });
        assert!(failed.is_err());
    }
}
