//! What the host tests need from the machine, checked once per test: each
//! test that cannot run here says why it skipped, and fails instead when
//! `GANG_REQUIRE_HOST=1` (CI).
#![allow(dead_code)]

use gang_host::cgroup;
use gang_host::runtime::allowed_cpus;

// Not every test binary uses each.
#[allow(unused_imports)]
pub use gang_testkit::host::{host_required, skip_or_fail, skip_plain};

/// The `Cpus_allowed_list` field of a `/proc/.../status` text.
pub fn status_cpus(status: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("a status text lists Cpus_allowed_list")
        .trim()
        .to_string()
}

/// `Cpus_allowed_list` of process (or thread) `pid`.
pub fn pid_cpus(pid: i32) -> String {
    status_cpus(&std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status"))
}

/// A cgroup controller a test needs.
#[derive(Debug, Clone, Copy)]
pub enum Needs {
    /// Real-time priorities only.
    Nothing,
    /// The cpuset controller.
    Cpuset,
    /// The freezer controller.
    Freezer,
}

/// Whether a test can run here: root, CPUs 0 and 1, and the controller.
/// Says why not ([`skip_or_fail`]).
pub fn can_run(needs: Needs) -> bool {
    if !gang_host::sys::is_root() {
        skip_or_fail("needs root (real-time priorities, cgroups)");
        return false;
    }
    cgroup::share_layout_for_this_process();
    let controller = cgroup::Hierarchy::detect().and_then(|h| match needs {
        Needs::Nothing => Ok(()),
        Needs::Cpuset => h.cpuset().map(|_| ()),
        Needs::Freezer => h.freezer().map(|_| ()),
    });
    if let Err(e) = controller {
        skip_or_fail(&format!("{needs:?} controller unavailable: {e}"));
        return false;
    }
    match allowed_cpus() {
        Ok(c) if c.contains(0) && c.contains(1) => true,
        _ => {
            skip_or_fail("needs CPUs 0 and 1");
            false
        }
    }
}
