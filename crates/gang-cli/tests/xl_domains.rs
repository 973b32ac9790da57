//! End to end, on this machine's real CPUs: the seed's walkthrough with
//! `gang` in place of `sudo xl`, including the steps that crashed the seed's
//! system (unpause in a gang pool, create directly in it); domains of type
//! "process" (a `gang workload` program whose threads are the vCPUs); gang
//! execution checked from the runtime's own trace; errors that change
//! nothing; `kill -9` of the daemon; and the host left as it was.
//!
//! Needs root, 2 CPUs and a cgroup freezer; each test says why it skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    assert_gang, can_run_domains, list_row, shared_pool, start, start_with, trace, wait_for,
    Daemon, Slot, TestDir,
};

fn gang_bin() -> &'static str {
    env!("CARGO_BIN_EXE_gang")
}

/// A process domain config running `gang workload KIND` with `threads`
/// threads named vcpu0.. for `duration`.
fn workload_cfg(dir: &Path, name: &str, kind: &str, threads: u32, extra: &str) -> String {
    let path = dir.join(format!("{name}.cfg"));
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\ntype = \"process\"\nvcpus = {threads}\n\
             command = [\"{}\", \"workload\", \"{kind}\", \"--threads\", \"{threads}\", \
             \"--duration\", \"10m\", \"--report-every\", \"10m\"]\n\
             vcpu_threads = \"vcpu*\"\n{extra}",
            gang_bin()
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// The row of `name` in `gang list -c`: (state, pool).
fn row(d: &Daemon, name: &str) -> Option<(String, String)> {
    list_row(d, name)
}

/// The threads of `pid` named vcpu*.
fn vcpu_threads(pid: u32) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .filter(|t: &u32| {
                    std::fs::read_to_string(format!("/proc/{pid}/task/{t}/comm"))
                        .is_ok_and(|c| c.starts_with("vcpu"))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// Processes whose command line mentions `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

fn cpus_allowed(pid: u32, tid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Cpus_allowed_list:"))
        .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
        .unwrap_or_default()
}

/// What the host looks like, to compare before and after.
fn host_snapshot() -> (String, Vec<String>) {
    let cpus = std::fs::read_to_string("/sys/fs/cgroup/cpuset/cpuset.effective_cpus")
        .or_else(|_| std::fs::read_to_string("/sys/devices/system/cpu/online"))
        .unwrap_or_default();
    let mut ours = Vec::new();
    for root in [
        "/sys/fs/cgroup/cpuset",
        "/sys/fs/cgroup/freezer",
        "/sys/fs/cgroup/memory",
    ] {
        if let Ok(dir) = std::fs::read_dir(root) {
            for e in dir.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with("gang") {
                    ours.push(format!("{root}/{n}"));
                }
            }
        }
    }
    ours.sort();
    (cpus.trim().to_string(), ours)
}

fn pid_of(d: &Daemon, name: &str) -> u32 {
    // The domain's process: the workload started with its config.
    let cfg = d.dir().join(format!("{name}.cfg"));
    let text = std::fs::read_to_string(cfg).unwrap();
    assert!(text.contains("workload"));
    let pids: Vec<u32> = processes_with("workload")
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cgroup")).is_ok_and(|c| c.contains("-d"))
        })
        .collect();
    // This daemon's cgroups (other tests' daemons run at the same time).
    let namespace = d.ok(&["info", "gang_cgroups"]).trim().to_string();
    let ids = d.ok(&["list"]);
    let id: u32 = ids
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap();
    *pids
        .iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cgroup")).is_ok_and(|c| {
                c.lines()
                    .any(|l| l.ends_with(&format!("/{namespace}-d{id}")))
            })
        })
        .unwrap_or_else(|| panic!("no process for {name} among {pids:?}"))
}

#[test]
fn the_seed_walkthrough_runs_gangs_where_the_seed_crashed_and_leaves_the_host_clean() {
    if !can_run_domains() {
        return;
    }
    let before = host_snapshot();
    let t = TestDir::new("walkthrough");
    let d = start(&t.0);
    // list, cpupool-list (-c)
    assert!(d.ok(&["list"]).contains("Domain-0"));
    assert!(d
        .ok(&["cpupool-list", "-c"])
        .contains("Pool-0             0,1"));
    // Take CPU 1 from Pool-0 for the gang pool.
    d.ok(&["cpupool-cpu-remove", "Pool-0", "1"]);
    d.ok(&[
        "cpupool-create",
        "name=\"GangSched-Pool\"",
        "sched=\"gang\"",
    ]);
    d.ok(&["cpupool-cpu-add", "GangSched-Pool", "1"]);
    // A domain in Pool-0: running, its vCPU on CPU 0.
    let cfg = workload_cfg(&t.0, "my-domain", "busy", 1, "");
    d.ok(&["create", &cfg]);
    let (state, pool) = row(&d, "my-domain").unwrap();
    assert_eq!(pool, "Pool-0");
    assert!(state.starts_with('r') || state.starts_with("-b"), "{state}");
    let pid = pid_of(&d, "my-domain");
    let vcpu = vcpu_threads(pid)[0];
    assert_eq!(cpus_allowed(pid, vcpu), "0");
    // pause, migrate to the gang pool, set the gang parameters.
    d.ok(&["pause", "my-domain"]);
    assert_eq!(row(&d, "my-domain").unwrap().0, "--p---");
    d.ok(&["cpupool-migrate", "my-domain", "GangSched-Pool"]);
    assert_eq!(row(&d, "my-domain").unwrap().1, "GangSched-Pool");
    d.ok(&["sched-gang", "-d", "my-domain", "-t", "tt,10ms,4ms"]);
    // unpause (the seed's system crashed here): it runs, gang-scheduled.
    d.ok(&["unpause", "my-domain"]);
    assert_eq!(
        cpus_allowed(pid, vcpu),
        "1",
        "the vCPU is pinned to the pool's CPU"
    );
    let tr = trace(&d, "my-domain", 30);
    assert!(tr.slots.len() >= 30, "{tr:?}");
    // The first slot may be the rest of a slot the unpause fell into.
    // Slots start on the 10 ms grid; an adopted thread's slot lasts from
    // when it really started to when it stopped (the kernel's scheduler
    // events): 4 ms give or take the switches' few tens of us.
    for s in tr.slots.iter().skip(1).filter(|s| s.end_ns != u64::MAX) {
        assert_eq!(s.start_ns % 10_000_000, 0, "{s:?}");
        let ran = s.end_ns - s.start_ns;
        assert!((3_500_000..=4_500_000).contains(&ran), "{s:?}");
        assert_eq!(s.cpu, 1);
    }
    let listing = d.ok(&["sched-gang"]);
    assert!(
        listing.contains("Cpupool GangSched-Pool: sched=gang"),
        "{listing}"
    );
    assert!(listing.contains("tt,10ms,4ms"), "{listing}");
    assert!(
        listing.contains("  dispatch (last 1s): ")
            && listing.contains(" switches, late p50/p99/max "),
        "a running pool shows how its dispatchers kept time: {listing}"
    );
    // The thread really ran about 40% of CPU 1.
    let cpu_ns = |tid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (c0, w0) = (cpu_ns(vcpu), Instant::now());
    std::thread::sleep(Duration::from_millis(1000));
    let share = (cpu_ns(vcpu) - c0) as f64 / w0.elapsed().as_nanos() as f64;
    assert!((0.25..=0.5).contains(&share), "share {share}");

    // Create a domain directly in the gang pool (the seed crashed here too).
    let cfg2 = workload_cfg(
        &t.0,
        "direct",
        "busy",
        1,
        "pool = \"GangSched-Pool\"\ngang_policy = \"tt,10ms,3ms\"\ncpus = \"1\"\n",
    );
    d.ok(&["create", &cfg2]);
    assert_eq!(row(&d, "direct").unwrap().1, "GangSched-Pool");
    let a = trace(&d, "my-domain", 30);
    let b = trace(&d, "direct", 30);
    assert!(b.slots.len() >= 30, "{b:?}");
    // The two share CPU 1 without overlap, as their threads really ran
    // (an adopted thread stops a few microseconds after its slot's end,
    // and the next one starts after that).
    // (Closed slots only: the traces were read at different times.)
    let closed = |s: &&Slot| s.end_ns != u64::MAX;
    for x in a
        .slots
        .iter()
        .filter(closed)
        .filter(|s| s.start_ns > b.slots[0].start_ns)
    {
        for y in b.slots.iter().filter(closed) {
            assert!(
                x.end_ns <= y.real_start() || y.end_ns <= x.real_start(),
                "{x:?} overlaps {y:?}"
            );
        }
    }
    // Admission control: a third reservation that does not fit is refused
    // and changes nothing.
    d.fails(&["sched-gang", "-d", "direct", "-t", "tt,10ms,6ms"], "");
    assert!(d
        .ok(&["sched-gang", "-d", "direct"])
        .contains("tt,10ms,3ms"));

    // A 2-vCPU gang needs both CPUs: a shared pool borrows them from Pool-0.
    d.ok(&["destroy", "direct"]);
    d.ok(&["destroy", "my-domain"]);
    d.ok(&["cpupool-cpu-remove", "GangSched-Pool", "1"]);
    d.ok(&["cpupool-cpu-add", "Pool-0", "1"]);
    shared_pool(&d, "Wide");
    let cfg3 = workload_cfg(
        &t.0,
        "pair",
        "spin-barrier",
        2,
        "pool = \"Wide\"\ngang_policy = \"be,256\"\n",
    );
    d.ok(&["create", &cfg3]);
    let tr = trace(&d, "pair", 40);
    assert_gang(&tr, 2);
    assert!(d.ok(&["vcpu-list", "pair"]).lines().count() == 3);
    d.ok(&["destroy", "pair"]);
    d.ok(&["cpupool-destroy", "Wide"]);
    d.ok(&["cpupool-destroy", "GangSched-Pool"]);
    assert!(d
        .ok(&["cpupool-list", "-c"])
        .contains("Pool-0             0,1"));
    assert!(d.ok(&["dmesg"]).contains("domain 3 (pair) destroyed"));
    drop(d);
    assert!(processes_with(&t.0.display().to_string()).is_empty());
    assert_eq!(host_snapshot(), before, "the host is as before");
}

#[test]
fn a_domain_created_paused_never_runs_until_unpaused() {
    if !can_run_domains() {
        return;
    }
    let t = TestDir::new("paused");
    let d = start(&t.0);
    let marker = t.0.join("ran");
    let cfg = t.0.join("p.cfg");
    std::fs::write(
        &cfg,
        format!(
            "name = \"p\"\ntype = \"process\"\ncommand = \"touch {}; sleep 600\"\n",
            marker.display()
        ),
    )
    .unwrap();
    d.ok(&["create", "-p", &cfg.display().to_string()]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(row(&d, "p").unwrap().0, "--p---");
    assert!(!marker.exists(), "a paused domain ran");
    d.ok(&["unpause", "p"]);
    wait_for("the program to run", || marker.exists());
    d.ok(&["destroy", "p"]);
    assert!(!d.ok(&["list"]).contains("\np "));
}

#[test]
fn exits_apply_their_actions_and_console_shows_the_output() {
    if !can_run_domains() {
        return;
    }
    let t = TestDir::new("exits");
    let d = start(&t.0);
    let cfg = |name: &str, cmd: &str, extra: &str| {
        let p = t.0.join(format!("{name}.cfg"));
        std::fs::write(
            &p,
            format!("name = \"{name}\"\ntype = \"process\"\ncommand = \"{cmd}\"\n{extra}"),
        )
        .unwrap();
        p.display().to_string()
    };
    // on_crash = "preserve": a failing command stays, crashed, with why.
    d.ok(&[
        "create",
        &cfg(
            "bad",
            "echo hello from bad; exit 3",
            "on_crash = \"preserve\"\n",
        ),
    ]);
    wait_for("the crash", || row(&d, "bad").unwrap().0 == "---sc-");
    assert!(
        d.ok(&["list", "-v"]).contains("exited with status 3")
            || d.ok(&["dmesg"]).contains("exited with status 3")
    );
    assert!(d.ok(&["console", "bad"]).contains("hello from bad"));
    // on_poweroff = destroy (the default): gone once it exits cleanly.
    d.ok(&["create", &cfg("good", "sleep 0.2", "")]);
    wait_for("the domain to go", || row(&d, "good").is_none());
    // shutdown: SIGTERM, then on_poweroff = preserve keeps it shut down.
    d.ok(&[
        "create",
        &cfg("term", "sleep 600", "on_poweroff = \"preserve\"\n"),
    ]);
    d.ok(&["shutdown", "-w", "term"]);
    assert_eq!(row(&d, "term").unwrap().0, "---s--");
    d.ok(&["destroy", "term"]);
    d.ok(&["destroy", "bad"]);
}

#[test]
fn bad_input_is_refused_with_xl_messages_and_changes_nothing() {
    if !can_run_domains() {
        return;
    }
    let t = TestDir::new("errors");
    let d = start(&t.0);
    let cfg = workload_cfg(&t.0, "x", "busy", 1, "");
    d.ok(&["create", &cfg]);
    d.ok(&["cpupool-create", "name=\"empty\"", "sched=\"gang\""]);
    let state = || (d.ok(&["list", "-c"]), d.ok(&["cpupool-list", "-c"]));
    let before = state();
    let strip_time = |s: String| -> String {
        s.lines()
            .map(|l| l.split_whitespace().take(5).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    for args in [
        &["pause", "nosuch"][..],
        &["unpause", "42"],
        &["destroy", "nosuch"],
        &["shutdown", "nosuch"],
        &["cpupool-migrate", "nosuch", "Pool-0"],
        &["sched-gang", "-d", "nosuch", "-t", "be,10"],
        &["vcpu-list", "nosuch"],
        &["console", "nosuch"],
    ] {
        d.fails(args, "is an invalid domain identifier (rc=-6)");
    }
    d.fails(
        &["cpupool-migrate", "x", "nopool"],
        "Pool 'nopool' does not exist",
    );
    d.fails(
        &["cpupool-migrate", "x", "empty"],
        "cpupool 'empty' has no cpus",
    );
    d.fails(&["sched-gang", "-d", "x", "-t", "be,10"], "gang pools");
    d.fails(&["sched-gang", "-d", "x", "-t", "tt,10ms"], "");
    d.fails(&["cpupool-cpu-add", "empty", "7-x"], "");
    d.fails(
        &["cpupool-destroy", "Pool-0"],
        "Can't destroy cpupool 'Pool-0'",
    );
    d.fails(
        &["cpupool-cpu-remove", "Pool-0", "0,1"],
        "Can't remove the last cpu",
    );
    let dup = workload_cfg(&t.0, "x", "busy", 1, "");
    d.fails(&["create", &dup], "Domain name \"x\" already exists");
    let broken = t.0.join("broken.cfg");
    std::fs::write(&broken, "name = \"y\"\nvcpus = [\n").unwrap();
    d.fails(
        &["create", &broken.display().to_string()],
        "config parsing error",
    );
    let nothreads = workload_cfg(&t.0, "few", "busy", 1, "vcpus = 3\n");
    d.fails(&["create", &nothreads], "has 1 thread(s) matching 'vcpu*'");
    let after = state();
    assert_eq!(strip_time(after.0), strip_time(before.0));
    assert_eq!(after.1, before.1);
    assert!(processes_with(&format!("{}", t.0.join("few.cfg").display())).is_empty());
    d.ok(&["destroy", "x"]);
}

#[test]
fn many_cli_calls_at_once_lose_no_update() {
    let t = TestDir::new("concurrent");
    let d = start(&t.0);
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let socket = t.0.join("gang.sock");
            std::thread::spawn(move || {
                std::process::Command::new(gang_bin())
                    .args([
                        "cpupool-create",
                        &format!("name=\"p{i}\""),
                        "sched=\"gang\"",
                    ])
                    .env("GANG_SOCKET", socket)
                    .output()
                    .unwrap()
                    .status
                    .success()
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap());
    }
    let listing = d.ok(&["cpupool-list"]);
    for i in 0..16 {
        assert!(listing.contains(&format!("p{i} ")), "{listing}");
    }
}

#[test]
fn after_kill_9_running_domains_are_reattached_and_dead_ones_show_crashed() {
    if !can_run_domains() {
        return;
    }
    let t = TestDir::new("kill9");
    let d = start(&t.0);
    d.ok(&[
        "cpupool-create",
        "name=\"G\"",
        "sched=\"gang\"",
        "cpus=\"0-1\"",
        "shared=1",
    ]);
    let keep = workload_cfg(
        &t.0,
        "keep",
        "spin-barrier",
        2,
        "pool = \"G\"\ngang_policy = \"tt,20ms,10ms\"\n",
    );
    d.ok(&["create", &keep]);
    let lost = workload_cfg(&t.0, "lost", "busy", 1, "");
    d.ok(&["create", &lost]);
    let keep_pid = pid_of(&d, "keep");
    let lost_pid = pid_of(&d, "lost");
    assert_gang(&trace(&d, "keep", 20), 2);
    let dir = d.kill9();
    // While the daemon is down, one process ends (a running one: a frozen
    // process would only die once thawed).
    let _ = std::process::Command::new("kill")
        .args(["-9", &lost_pid.to_string()])
        .status();
    std::thread::sleep(Duration::from_millis(200));
    let d = start(&dir);
    let (state, pool) = row(&d, "keep").unwrap();
    assert_eq!(pool, "G");
    assert!(state.starts_with('r') || state.starts_with("-b"), "{state}");
    assert_eq!(
        pid_of(&d, "keep"),
        keep_pid,
        "the same process, re-attached"
    );
    assert!(d.ok(&["sched-gang"]).contains("tt,20ms,10ms"));
    let tr = trace(&d, "keep", 20);
    assert!(tr.slots.len() >= 20);
    assert_gang(&tr, 2);
    assert_eq!(row(&d, "lost").unwrap().0, "---sc-");
    assert!(
        d.ok(&["list", "-v"])
            .contains("ended while the daemon was not running")
            || d.ok(&["dmesg"])
                .contains("ended while the daemon was not running")
    );
    d.ok(&["destroy", "keep"]);
    d.ok(&["destroy", "lost"]);
    assert!(processes_with(&keep).is_empty() || !Path::new(&format!("/proc/{keep_pid}")).exists());
}

#[test]
fn a_second_daemon_is_refused_where_one_answers_and_takes_over_a_dead_socket() {
    if !can_run_domains() {
        return;
    }
    let t = TestDir::new("second");
    let d = start(&t.0);
    let socket = t.0.join("gang.sock");
    let second = std::process::Command::new(gang_bin())
        .args(["daemon", "--state-dir"])
        .arg(t.0.join("other-state"))
        .arg("--socket")
        .arg(&socket)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another gang daemon answers on"), "{err}");
    assert!(
        d.ok(&["list"]).contains("Domain-0"),
        "the first still serves"
    );
    drop(d);
    // A socket whose listener accepts but never answers (what a killed
    // daemon's not-yet-executed child holds for a moment): replaced.
    let t2 = TestDir::new("dead-socket");
    let _held = std::os::unix::net::UnixListener::bind(t2.0.join("gang.sock")).unwrap();
    let d = start(&t2.0);
    assert!(d.ok(&["list"]).contains("Domain-0"));
}

#[test]
fn a_gang_pool_changes_cpus_under_a_running_domain() {
    if !can_run_domains() {
        return;
    }
    let t = TestDir::new("resize");
    let d = start(&t.0);
    d.ok(&[
        "cpupool-create",
        "name=\"G\"",
        "sched=\"gang\"",
        "cpus=\"0\"",
        "shared=1",
    ]);
    let cfg = workload_cfg(
        &t.0,
        "w",
        "busy",
        1,
        "pool = \"G\"\ngang_policy = \"tt,10ms,3ms\"\n",
    );
    d.ok(&["create", &cfg]);
    assert!(trace(&d, "w", 10).slots.iter().all(|s| s.cpu == 0));
    // A CPU more: the pool's dispatchers restart on both, the domain keeps
    // its parameters and runs on.
    d.ok(&["cpupool-cpu-add", "G", "1"]);
    d.ok(&["sched-gang", "-d", "w", "-c", "1", "-t", "tt,10ms,3ms"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = trace(&d, "w", 1);
        if t.slots.iter().rev().take(5).filter(|s| s.cpu == 1).count() == 5 {
            break;
        }
        assert!(Instant::now() < deadline, "never on CPU 1: {t:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = pid_of(&d, "w");
    assert_eq!(cpus_allowed(pid, vcpu_threads(pid)[0]), "1");
    // The CPU its map uses cannot leave; the other one can.
    d.fails(
        &["cpupool-cpu-remove", "G", "1"],
        "cpu 1 is in use by domain 'w'",
    );
    d.ok(&["cpupool-cpu-remove", "G", "0"]);
    assert!(trace(&d, "w", 10).slots.len() >= 10);
    assert!(d.ok(&["sched-gang"]).contains("cpus=1 "));
    d.ok(&["destroy", "w"]);
}

#[test]
fn the_socket_is_root_only_or_shared_with_a_configured_group() {
    // Giving the socket to a group needs root (chown).
    if !can_run_domains() {
        return;
    }
    let t = TestDir::new("socket");
    let mode = |d: &Daemon| {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let m = std::fs::metadata(d.dir().join("gang.sock")).unwrap();
        (m.permissions().mode() & 0o777, m.gid())
    };
    let d = start(&t.0);
    assert_eq!(mode(&d).0, 0o600);
    drop(d);
    let d = start_with(&t.0, &["--socket-group", "root"]);
    assert_eq!(mode(&d), (0o660, 0));
    drop(d);
    // An unknown group is a clear error at start.
    let out = std::process::Command::new(gang_bin())
        .args([
            "daemon",
            "--socket-group",
            "no-such-group-here",
            "--state-dir",
        ])
        .arg(t.0.join("state"))
        .arg("--socket")
        .arg(t.0.join("other.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("group 'no-such-group-here' does not exist")
    );
}

#[test]
fn a_running_program_is_adopted_by_pid_gang_scheduled_and_given_back() {
    if !can_run_domains() {
        return;
    }
    let t = TestDir::new("adopt-pid");
    let d = start(&t.0);
    // A parallel program started by someone else, outside gang.
    let mut program = std::process::Command::new(gang_bin())
        .args([
            "workload",
            "spin-barrier",
            "--threads",
            "2",
            "--duration",
            "10m",
        ])
        .args(["--report-every", "10m"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = program.id();
    wait_for("its threads", || vcpu_threads(pid).len() == 2);
    let before: Vec<String> = vcpu_threads(pid)
        .iter()
        .map(|&t| cpus_allowed(pid, t))
        .collect();
    d.ok(&[
        "cpupool-create",
        "name=\"G\"",
        "sched=\"gang\"",
        "cpus=\"0-1\"",
        "shared=1",
    ]);
    let cfg = t.0.join("adopted.cfg");
    std::fs::write(
        &cfg,
        format!(
            "name = \"adopted\"\ntype = \"process\"\npid = {pid}\nvcpus = 2\n\
             vcpu_threads = \"vcpu*\"\npool = \"G\"\ngang_policy = \"be,256\"\n"
        ),
    )
    .unwrap();
    d.ok(&["create", &cfg.display().to_string()]);
    assert_gang(&trace(&d, "adopted", 20), 2);
    let pinned: Vec<String> = vcpu_threads(pid)
        .iter()
        .map(|&t| cpus_allowed(pid, t))
        .collect();
    assert_eq!(pinned, ["0", "1"], "each vCPU on its own CPU");
    // destroy gives it back: still running, as it was.
    d.ok(&["destroy", "adopted"]);
    assert!(
        program.try_wait().unwrap().is_none(),
        "gang never kills what it did not start"
    );
    let after: Vec<String> = vcpu_threads(pid)
        .iter()
        .map(|&t| cpus_allowed(pid, t))
        .collect();
    assert_eq!(after, before, "its threads' CPUs given back");
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        !cgroups.contains("gang"),
        "out of gang's cgroups: {cgroups}"
    );
    let _ = program.kill();
    let _ = program.wait();
}

#[test]
fn memory_becomes_a_memory_limit_on_the_process() {
    if !can_run_domains() {
        return;
    }
    if !Path::new("/sys/fs/cgroup/memory").exists() {
        if Path::new("/sys/fs/cgroup/freezer").exists() {
            return common::skip_or_fail("no cgroup v1 memory controller beside the v1 freezer");
        }
        // Not strict: this test reads the v1 memory controller, and a
        // cgroup v2 host (a correct CI machine too) has none.
        return common::skip_plain("no cgroup v1 memory controller (a cgroup v2 host)");
    }
    let t = TestDir::new("memory");
    let d = start(&t.0);
    let cfg = t.0.join("m.cfg");
    std::fs::write(
        &cfg,
        "name = \"m\"\ntype = \"process\"\nmemory = 48\ncommand = \"exec sleep 600\"\n",
    )
    .unwrap();
    d.ok(&["create", &cfg.display().to_string()]);
    let list = d.ok(&["list"]);
    let row = list.lines().find(|l| l.starts_with("m ")).unwrap();
    assert_eq!(row.split_whitespace().nth(2), Some("48"), "{row}");
    // The process's memory cgroup carries the limit.
    let pid = processes_with("sleep")
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/environ"))
                .is_ok_and(|e| e.contains(&t.0.display().to_string()))
        })
        .unwrap();
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let memory = cgroups
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
        .unwrap();
    let limit = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/memory{memory}/memory.limit_in_bytes"
    ))
    .unwrap();
    assert_eq!(limit.trim(), (48u64 << 20).to_string());
    d.ok(&["destroy", "m"]);
    assert!(!Path::new(&format!("/sys/fs/cgroup/memory{memory}")).exists());
}

#[test]
fn top_shows_a_busy_domain_using_a_cpu() {
    if !can_run_domains() {
        return;
    }
    let t = TestDir::new("top");
    let d = start(&t.0);
    let cfg = workload_cfg(&t.0, "busy", "busy", 1, "");
    d.ok(&["create", &cfg]);
    let out = d.ok(&["top", "-d", "0.5", "-i", "1"]);
    let row = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some("busy"))
        .unwrap_or_else(|| panic!("{out}"));
    let pct: f64 = row.split_whitespace().nth(3).unwrap().parse().unwrap();
    // (Other tests' gang pools share these CPUs at real-time priority.)
    assert!(pct > 10.0, "a spinning vCPU shows CPU use: {row}");
    assert!(out.starts_with("                NAME  STATE"), "{out}");
    d.ok(&["destroy", "busy"]);
}
