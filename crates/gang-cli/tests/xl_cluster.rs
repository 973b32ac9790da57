//! Pools on a shared clock, end to end: two gang daemons on this machine
//! (own state directories and sockets, each with a gang pool on one CPU,
//! standing for two hosts) with the same `clock`, `base` and `cycle` run
//! their tables in phase: the slots of one domain on each start at the same
//! instants of the shared clock (`gang trace --json`: `since_base_ns` plus a
//! slot's start). The same two daemons with bases 30 ms apart are 30 ms out
//! of phase: the mechanism, not luck. And the settings' bad input is
//! refused with reasons, nothing made.
//!
//! Both "hosts" read the same clock here, so what is measured is how well
//! two runtimes started independently agree on the epoch and keep their
//! switches on time, not clock synchronisation: the skew printed is the
//! floor that PTP's or chrony's error adds to.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

fn gang_bin() -> &'static str {
    env!("CARGO_BIN_EXE_gang")
}

/// A one-vCPU spinning process domain with a TT policy.
fn spin_cfg(dir: &Path, name: &str, policy: &str) -> String {
    spin_cfg_with(dir, name, policy, "")
}

/// [`spin_cfg`] with more keys.
fn spin_cfg_with(dir: &Path, name: &str, policy: &str, extra: &str) -> String {
    let path = dir.join(format!("{name}.cfg"));
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\ntype = \"process\"\nvcpus = 1\npool = \"C\"\n\
             gang_policy = \"{policy}\"\n{extra}\
             command = [\"{}\", \"workload\", \"busy\", \"--threads\", \"1\", \
             \"--duration\", \"10m\", \"--report-every\", \"10m\"]\n\
             vcpu_threads = \"vcpu*\"\n",
            gang_bin()
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// A domain's slots as both clocks see them: (planned start on the shared
/// clock, ns after the base; actual start on this host's CLOCK_MONOTONIC,
/// the switch's lateness included).
fn starts(d: &Daemon, name: &str) -> Vec<(u64, u64)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let v: serde_json::Value = serde_json::from_str(&d.ok(&["trace", "--json", name])).unwrap();
        let since = v["since_base_ns"]
            .as_u64()
            .expect("a pool on a shared clock says where its time starts");
        let epoch = v["epoch_mono_ns"].as_u64().unwrap();
        let starts: Vec<(u64, u64)> = v["slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let start = s["start_ns"].as_u64().unwrap();
                let late = s["late_ns"].as_u64().unwrap();
                (since + start, epoch + start + late)
            })
            .collect();
        if starts.len() >= 20 || std::time::Instant::now() > deadline {
            return starts;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// For each start of `a` in the time both cover, the distance to the
/// nearest start of `b` (ns).
fn skews(a: &[u64], b: &[u64]) -> Vec<u64> {
    // Each trace's first slot started when the domain's thread was
    // attached, possibly inside that slot: not a switch, left out.
    let (a, b) = (&a[1..], &b[1..]);
    let (lo, hi) = (a[0].max(b[0]), a[a.len() - 1].min(b[b.len() - 1]));
    a.iter()
        .filter(|&&t| t >= lo && t <= hi)
        .map(|&t| b.iter().map(|&u| u.abs_diff(t)).min().unwrap())
        .collect()
}

fn p(sorted: &[u64], q: f64) -> u64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

/// Daemon `i` ("host" `i`) with a shared gang pool `C` on CPU `i` on the
/// realtime clock from `base`, cycle 1 s.
fn host(t: &TestDir, i: usize, base: &str) -> Daemon {
    let dir = t.0.join(format!("host{i}"));
    std::fs::create_dir_all(&dir).unwrap();
    let d = start(&dir);
    d.ok(&[
        "cpupool-create",
        "name=\"C\"",
        "sched=\"gang\"",
        &format!("cpus=\"{i}\""),
        "shared=1",
        "clock=\"realtime\"",
        &format!("base=\"{base}\""),
        "cycle=\"1s\"",
    ]);
    d
}

/// Two "hosts": daemon `i` gets a shared gang pool `C` on CPU `i` with the
/// given base, and a domain `s` in it.
fn two_hosts(t: &TestDir, bases: [&str; 2]) -> [Daemon; 2] {
    let mk = |i: usize| {
        let d = host(t, i, bases[i]);
        d.ok(&[
            "create",
            "-q",
            &spin_cfg(&t.0.join(format!("host{i}")), "s", "tt,100ms,20ms"),
        ]);
        d
    };
    [mk(0), mk(1)]
}

/// The planned starts (shared clock, after the base) in the time both
/// traces cover. Each trace's first slot is left out: it starts when the
/// domain's thread was attached, which may be inside its first slot.
fn planned(a: &[(u64, u64)], b: &[(u64, u64)]) -> (Vec<u64>, Vec<u64>) {
    let pa: Vec<u64> = a.iter().skip(1).map(|s| s.0).collect();
    let pb: Vec<u64> = b.iter().skip(1).map(|s| s.0).collect();
    let (lo, hi) = (pa[0].max(pb[0]), pa[pa.len() - 1].min(pb[pb.len() - 1]));
    let keep =
        |v: Vec<u64>| -> Vec<u64> { v.into_iter().filter(|&t| t >= lo && t <= hi).collect() };
    (keep(pa), keep(pb))
}

/// Host 0 runs a local domain `local` (tt,100ms,30ms) and both run `part`
/// with `part_extra` keys; returns the two daemons.
fn differing_hosts(t: &TestDir, base: &str, part_extra: &str) -> (Daemon, Daemon) {
    let (a, b) = (host(t, 0, base), host(t, 1, base));
    a.ok(&[
        "create",
        "-q",
        &spin_cfg(&t.0.join("host0"), "local", "tt,100ms,30ms"),
    ]);
    for (d, i) in [(&a, 0), (&b, 1)] {
        let dir = t.0.join(format!("host{i}"));
        d.ok(&[
            "create",
            "-q",
            &spin_cfg_with(&dir, "part", "tt,100ms,20ms", part_extra),
        ]);
    }
    (a, b)
}

#[test]
fn a_cluster_gang_lines_up_where_the_hosts_tables_differ() {
    if !can_run_domains() {
        return;
    }
    let _serial = one_at_a_time();
    let base = "2026-12-01T00:00:00Z";
    // Without gang_group: host 0's local domain comes first in every
    // period, host 1 has none, and the same policy lands 30 ms apart.
    let t = TestDir::new("cluster-plain");
    let (a, b) = differing_hosts(&t, base, "");
    let (pa, pb) = planned(&starts(&a, "part"), &starts(&b, "part"));
    assert!(!pa.is_empty() && !pb.is_empty());
    assert!(
        pa.iter().all(|x| !pb.contains(x)),
        "the plain policy happened to line up: {pa:?} {pb:?}"
    );
    drop((a, b));

    // With gang_group: the same exact slot on both, from the group's name
    // (job-7's phase is clear of host 0's local slot at 0-30 ms).
    let t = TestDir::new("cluster-group");
    let (a, b) = differing_hosts(&t, base, "gang_group = \"job-7\"\n");
    let (sa, sb) = (starts(&a, "part"), starts(&b, "part"));
    let (pa, pb) = planned(&sa, &sb);
    assert!(pa.len() >= 5, "{pa:?}");
    assert_eq!(pa, pb, "the parts' slots are at the same instants");
    let actual = |x: &[(u64, u64)]| x.iter().map(|s| s.1).collect::<Vec<u64>>();
    let mut skew = skews(&actual(&sa), &actual(&sb));
    skew.sort_unstable();
    note(&format!(
        "xl_cluster: a cluster gang over differing tables: {} slot pairs, co-start skew p50 {:.1} us, p99 {:.1} us",
        skew.len(),
        p(&skew, 0.5) as f64 / 1e3,
        p(&skew, 0.99) as f64 / 1e3
    ));
    assert!(a.ok(&["sched-gang"]).contains(",exact@"));
}

#[test]
fn two_daemons_on_one_shared_clock_run_their_slots_at_the_same_instants() {
    if !can_run_domains() {
        return;
    }
    let _serial = one_at_a_time();
    let t = TestDir::new("cluster");
    let base = "2026-12-01T00:00:00Z";
    let [a, b] = two_hosts(&t, [base, base]);
    let (sa, sb) = (starts(&a, "s"), starts(&b, "s"));
    // The plan: the same instants of the shared clock.
    let planned = |x: &[(u64, u64)]| x.iter().map(|s| s.0).collect::<Vec<u64>>();
    let (pa, pb) = (planned(&sa), planned(&sb));
    let common: Vec<&u64> = pa.iter().filter(|t| pb.contains(t)).collect();
    assert!(
        common.len() >= 10,
        "too few common planned starts: {pa:?} {pb:?}"
    );
    // What happened: the actual starts, on the one clock both hosts read.
    let actual = |x: &[(u64, u64)]| x.iter().map(|s| s.1).collect::<Vec<u64>>();
    let mut skew = skews(&actual(&sa), &actual(&sb));
    assert!(skew.len() >= 10, "too few common slots: {sa:?} {sb:?}");
    skew.sort_unstable();
    let (p50, p99, max) = (p(&skew, 0.5), p(&skew, 0.99), skew[skew.len() - 1]);
    note(&format!(
        "xl_cluster: same base: {} slot pairs, co-start skew p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        skew.len(),
        p50 as f64 / 1e3,
        p99 as f64 / 1e3,
        max as f64 / 1e3
    ));
    // Slots are 100 ms apart: anything below a few ms is the same slot
    // started late (a dispatcher's lateness, measured). The median is the
    // alignment itself; the tail is this loaded 2-CPU machine's lateness.
    // (On this 2-CPU machine both CPUs are gang pools: the host's own work,
    // and the kernel's fair server for it, delay a dispatcher by up to a
    // few ms now and then. The mechanism is the median and the plan.)
    assert!(p50 < 1_000_000, "same base, out of phase: skews {skew:?}");
    assert!(max < 20_000_000, "same base, out of phase: skews {skew:?}");
    assert!(a
        .ok(&["sched-gang"])
        .contains("clock=realtime base=2026-12-01T00:00:00Z cycle=1s"));
    // The clock's state is reported by the daemon as it finds it, without
    // being asked (its monitor looks every second).
    let synced = gang_host::wallclock::ClockStatus::read()
        .expect("adjtimex reads")
        .synchronised;
    let dmesg = a.ok(&["dmesg"]);
    assert_eq!(
        dmesg.contains("this host's clock is not synchronised"),
        !synced,
        "synchronised: {synced}; dmesg: {dmesg}"
    );
    assert!(!dmesg.contains("stepped"), "{dmesg}");
    drop((a, b));

    // Bases 30 ms apart: every slot of the second is 30 ms later.
    let t2 = TestDir::new("cluster-offset");
    let [a, b] = two_hosts(&t2, [base, "2026-12-01T00:00:00.030Z"]);
    // The actual starts, on the one clock both hosts read: the second's
    // are 30 ms after the first's.
    let (sa, sb) = (starts(&a, "s"), starts(&b, "s"));
    let sa: Vec<u64> = sa.iter().map(|s| s.1).collect();
    let sb: Vec<u64> = sb.iter().map(|s| s.1).collect();
    let mut off: Vec<i64> = sa
        .iter()
        .filter_map(|&x| {
            sb.iter()
                .map(|&y| y as i64 - x as i64)
                .filter(|d| d.abs() < 50_000_000)
                .min_by_key(|d| d.abs())
        })
        .collect();
    off.sort_unstable();
    let median = off[off.len() / 2];
    note(&format!(
        "xl_cluster: bases 30 ms apart: median offset {:.3} ms over {} slots",
        median as f64 / 1e6,
        off.len()
    ));
    assert!(
        (median - 30_000_000).abs() < 2_000_000,
        "expected 30 ms out of phase, got {median} ns"
    );
}

#[test]
fn shared_clock_settings_are_checked() {
    if !can_run_domains() {
        return;
    }
    let _serial = one_at_a_time();
    let t = TestDir::new("cluster-bad");
    let d = start(&t.0);
    let before = d.ok(&["cpupool-list", "-c"]);
    for (args, message) in [
        (
            vec!["clock=\"tai\"", "base=\"2199-01-01T00:00:00Z\""],
            "in the future on the tai clock",
        ),
        (
            vec!["clock=\"tai\"", "base=\"last tuesday\""],
            "is not an RFC 3339 UTC time",
        ),
        (
            vec!["clock=\"gps\"", "base=\"2026-01-01T00:00:00Z\""],
            "unknown clock 'gps' (expected tai or realtime)",
        ),
        (vec!["clock=\"tai\""], "clock= needs base="),
        (
            vec![
                "clock=\"tai\"",
                "base=\"2026-01-01T00:00:00Z\"",
                "cycle=\"70ms\"",
            ],
            "is not a multiple of the host slot's period",
        ),
    ] {
        let mut all = vec![
            "cpupool-create",
            "name=\"X\"",
            "sched=\"gang\"",
            "cpus=\"1\"",
            "shared=1",
        ];
        all.extend(args);
        d.fails(&all, message);
    }
    d.fails(
        &[
            "cpupool-create",
            "name=\"X\"",
            "sched=\"host\"",
            "clock=\"tai\"",
            "base=\"2026-01-01T00:00:00Z\"",
        ],
        "a cpupool on a shared clock must use the gang scheduler",
    );
    assert_eq!(d.ok(&["cpupool-list", "-c"]), before, "nothing made");
    // A period that does not divide the cycle is refused by admission.
    d.ok(&[
        "cpupool-create",
        "name=\"C\"",
        "sched=\"gang\"",
        "cpus=\"1\"",
        "shared=1",
        "clock=\"tai\"",
        "base=\"2026-01-01T00:00:00Z\"",
    ]);
    let out = d.gang(&["create", "-q", &spin_cfg(&t.0, "s", "tt,300ms,20ms")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not divide cpupool 'C''s cycle 1s"),
        "{err}"
    );
    // Refusals name the host's own slot as the user knows it.
    let out = d.gang(&["create", "-q", &spin_cfg(&t.0, "full", "tt,20ms,19ms")]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("'Domain-0'") && err.contains("'full'"),
        "{err}"
    );
    // A cluster gang needs a TT policy, and a pool on a shared clock.
    let out = d.gang(&[
        "create",
        "-q",
        &spin_cfg_with(&t.0, "g", "be,256", "gang_group = \"job-1\"\n"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("needs a time-triggered policy"), "{err}");
    d.ok(&[
        "cpupool-create",
        "name=\"L\"",
        "sched=\"gang\"",
        "cpus=\"0\"",
        "shared=1",
    ]);
    let cfg = spin_cfg_with(&t.0, "h", "tt,100ms,20ms", "gang_group = \"job-1\"\n");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("pool = \"C\"", "pool = \"L\"");
    std::fs::write(&cfg, text).unwrap();
    let out = d.gang(&["create", "-q", &cfg]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("a cluster gang runs in a gang pool on a shared clock"),
        "{err}"
    );
    let list = d.ok(&["list"]);
    assert!(
        !list.contains("\ng ") && !list.contains("\nh "),
        "nothing made: {list}"
    );
    // sync="required": the pool starts only on a synchronised clock (this
    // host's state decides which answer is right; adjtimex says it).
    d.ok(&["cpupool-destroy", "L"]);
    let synced = gang_host::wallclock::ClockStatus::read()
        .expect("adjtimex reads")
        .synchronised;
    d.ok(&[
        "cpupool-create",
        "name=\"S\"",
        "sched=\"gang\"",
        "cpus=\"0\"",
        "shared=1",
        "clock=\"tai\"",
        "base=\"2026-01-01T00:00:00Z\"",
        "sync=\"required\"",
    ]);
    assert!(d.ok(&["sched-gang", "-p", "S"]).contains("sync=required"));
    let cfg = spin_cfg(&t.0, "r", "tt,100ms,20ms");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("pool = \"C\"", "pool = \"S\"");
    std::fs::write(&cfg, text).unwrap();
    let out = d.gang(&["create", "-q", &cfg]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    if synced {
        assert!(out.status.success(), "{err}");
        d.ok(&["destroy", "r"]);
    } else {
        assert!(
            err.contains("requires a synchronised tai clock") && err.contains("not synchronised"),
            "{err}"
        );
        assert!(!d.ok(&["list"]).contains("\nr "), "nothing made");
    }
    d.fails(
        &[
            "cpupool-create",
            "name=\"Y\"",
            "sched=\"gang\"",
            "clock=\"tai\"",
            "base=\"2026-01-01T00:00:00Z\"",
            "sync=\"maybe\"",
        ],
        "expected \"required\" or \"optional\"",
    );
}

#[test]
fn bench_cluster_measures_both_phases_and_refuses_bad_options() {
    for (args, why) in [
        (vec!["--policy", "be,256"], "needs tt,PERIOD,ACTIVE"),
        (
            vec!["--policy", "tt,300ms,40ms"],
            "must divide the shared clock's 1 s cycle",
        ),
        (vec!["--duration", "50ms"], "at least 10 periods"),
        (vec!["--repeat", "0"], "at least one round"),
        (vec!["--cpus", "0"], "two CPUs or more"),
        (vec!["--cpus", "x"], "--cpus x"),
    ] {
        let out = Command::new(gang_bin())
            .arg("bench-cluster")
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must be refused");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    if !can_run_domains() {
        return;
    }
    let _serial = one_at_a_time();
    let out = Command::new(gang_bin())
        .args([
            "bench-cluster",
            "--duration",
            "500ms",
            "--repeat",
            "1",
            "--json",
            "-",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let phases = v["phases"].as_array().unwrap();
    let kinds: Vec<&str> = phases.iter().map(|p| p["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["aligned", "own-clocks"]);
    for p in phases {
        // 500 ms of 10 ms periods: about 49 slots paired.
        assert!(p["skew"]["n"].as_u64().unwrap() >= 30, "{p}");
        assert_eq!(p["lateness"].as_array().unwrap().len(), 2, "{p}");
    }
    assert_eq!(v["noise"].as_array().unwrap().len(), 1);
    note(&format!(
        "xl_cluster: bench-cluster 500 ms: aligned skew p50 {} ns, own clocks {} ns",
        phases[0]["skew"]["p50"], phases[1]["skew"]["p50"]
    ));
}
