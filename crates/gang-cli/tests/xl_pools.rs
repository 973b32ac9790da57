//! End to end: a private `gang daemon` (its own state directory and socket)
//! and the xl pool commands of the seed's walkthrough, with xl's output and
//! errors, and the state surviving `kill -9` of the daemon.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::start;
use std::process::Command;

fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[test]
fn the_seed_walkthrough_pool_steps_with_xl_output_and_errors() {
    if online_cpus() < 2 {
        return common::skip_or_fail("needs 2 CPUs");
    }
    let dir = std::env::temp_dir().join(format!("gang-e2e-pools-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = start(&dir);
    let listing = d.ok(&["cpupool-list"]);
    assert!(
        listing.starts_with("Name               CPUs   Sched     Active   Domain count\nPool-0   "),
        "{listing}"
    );
    assert!(d
        .ok(&["cpupool-list", "-c"])
        .contains("Pool-0             0,1"));
    // Remove all but CPU 0 from Pool-0, create the gang pool, give it CPU 1.
    d.ok(&["cpupool-cpu-remove", "Pool-0", "1"]);
    let created = d.gang(&[
        "cpupool-create",
        "name=\"GangSched-Pool\"",
        "sched=\"gang\"",
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&created.stdout),
        "cpupool name:   GangSched-Pool\nscheduler:      gang\nnumber of cpus: 0\n"
    );
    assert!(String::from_utf8_lossy(&created.stderr).contains("Using config file \"command line\""));
    d.ok(&["cpupool-cpu-add", "GangSched-Pool", "1"]);
    assert_eq!(
        d.ok(&["cpupool-list", "-c"]),
        "Name               CPU list\nPool-0             0\nGangSched-Pool     1\n"
    );
    // A prefix of a sub-command works, as in xl.
    assert!(d
        .ok(&["cpupool-l", "GangSched-Pool"])
        .contains("GangSched-Pool       1      gang       y          0"));
    // Errors: xl's message, exit 1, nothing changed.
    let before = d.ok(&["cpupool-list", "-c"]);
    d.fails(
        &["cpupool-destroy", "Pool-0"],
        "Can't destroy cpupool 'Pool-0'",
    );
    d.fails(&["cpupool-list", "nope"], "Pool 'nope' does not exist");
    d.fails(&["cpupool-cpu-remove", "Pool-0", "0"], "");
    d.fails(
        &["cpupool-cpu-add", "Pool-0", "1"],
        "cpu 1 illegal or not free",
    );
    d.fails(
        &["cpupool-cpu-add", "Pool-0", "3-1"],
        "Invalid pcpu range: 3-1.",
    );
    d.fails(
        &["cpupool-create", "name=\"GangSched-Pool\""],
        "Pool name \"GangSched-Pool\" already exists",
    );
    d.fails(
        &["cpupool-create", "name=\"x\"", "sched=\"credit\""],
        "Unknown scheduler",
    );
    d.fails(&["cpupool-create", "name=\"x"], "config parsing error");
    assert_eq!(
        d.ok(&["cpupool-list", "-c"]),
        before,
        "failed commands changed nothing"
    );
    assert!(d.ok(&["info"]).contains("xen_scheduler          : gang"));
    assert_eq!(d.ok(&["info", "nr_cpus"]).trim(), online_cpus().to_string());
    assert!(d.ok(&["list"]).starts_with(
        "Name                                        ID   Mem VCPUs\tState\tTime(s)\n"
    ));
    // The state survives kill -9 of the daemon.
    let dir = d.kill9();
    let d = start(&dir);
    assert_eq!(d.ok(&["cpupool-list", "-c"]), before);
    d.ok(&["cpupool-cpu-remove", "GangSched-Pool", "1"]);
    d.ok(&["cpupool-destroy", "GangSched-Pool"]);
    d.ok(&["cpupool-cpu-add", "Pool-0", "1"]);
    assert!(d
        .ok(&["cpupool-list", "-c"])
        .ends_with("Pool-0             0,1\n"));
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_a_daemon_the_error_says_so() {
    let out = Command::new(env!("CARGO_BIN_EXE_gang"))
        .args(["cpupool-list"])
        .env("GANG_SOCKET", "/nonexistent/gang.sock")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is `gang daemon` running?"));
}

#[test]
fn info_prints_xls_fields_in_xls_order() {
    let dir = std::env::temp_dir().join(format!("gang-e2e-info-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = start(&dir);
    let out = d.ok(&["info"]);
    let names: Vec<&str> = out
        .lines()
        .map(|l| l.split_once(" : ").map_or("", |(n, _)| n.trim_end()))
        .collect();
    // XL-REFERENCE's order (gang's own fields follow).
    let xl = [
        "host",
        "release",
        "version",
        "machine",
        "nr_cpus",
        "max_cpu_id",
        "nr_nodes",
        "cores_per_socket",
        "threads_per_core",
        "cpu_mhz",
        "hw_caps",
        "virt_caps",
        "total_memory",
        "free_memory",
        "sharing_freed_memory",
        "sharing_used_memory",
        "outstanding_claims",
        "free_cpus",
        "xen_major",
        "xen_minor",
        "xen_extra",
        "xen_version",
        "xen_caps",
        "xen_scheduler",
        "xen_pagesize",
        "platform_params",
        "xen_changeset",
        "xen_commandline",
        "cc_compiler",
        "cc_compile_by",
        "cc_compile_domain",
        "cc_compile_date",
        "build_id",
        "xend_config_format",
    ];
    assert_eq!(&names[..xl.len()], &xl[..], "{out}");
    assert!(
        out.lines().all(|l| l.len() > 25 && &l[23..25] == ": "),
        "{out}"
    );
    let nr_cpus = d.ok(&["info", "nr_cpus"]);
    assert_eq!(
        nr_cpus.trim(),
        std::thread::available_parallelism().unwrap().to_string()
    );
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}
