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
        "domains", "clear", "bytes", "extra",
    ];
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
