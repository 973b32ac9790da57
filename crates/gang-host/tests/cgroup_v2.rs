//! The cgroup v2 paths of gang-host on a real v2 hierarchy: taking CPUs
//! with a cpuset partition (and the fallback when the kernel refuses one),
//! single threads in the pool, `cgroup.freeze` for adopted threads, crash
//! repair after a SIGKILL, and an exclusive runtime adopting another
//! process's thread.
//!
//! # The layout
//!
//! Development machines mount the cpuset and freezer controllers on cgroup
//! v1 and an empty cgroup2 at `/sys/fs/cgroup/unified`. A v1 hierarchy with
//! no child cgroups is released when unmounted, and its controller becomes
//! available on v2. So, when root and when the v1 cpuset hierarchy (and the
//! freezer's, optional) has no children and is mounted alone once, the test
//! moves the controllers to v2 for its duration ([`Layout`]) and always
//! gives them back:
//!
//! * first it takes an exclusive `flock` on `/tmp/gang-cgroup-layout.lock`,
//!   which other test runs hold while they use v1 cpusets (waiting up to
//!   `GANG_LAYOUT_LOCK_TIMEOUT_S` seconds, 180 by default; a lock held by
//!   an ancestor, as in `flock /tmp/gang-cgroup-layout.lock cargo test`, is
//!   ours);
//! * before unmounting anything it writes what it moves, and every cgroup
//!   prefix it uses, to `/tmp/gang-cgroup-v2-test.state`;
//! * on success or panic a drop guard removes those cgroups, disables
//!   `cpuset` in the v2 root's `cgroup.subtree_control` and mounts the v1
//!   hierarchies back; after a kill, the next run finds the state file (or
//!   an unmounted, empty `/sys/fs/cgroup/cpuset` with cpuset on v2) and
//!   restores first.
//!
//! When it cannot run it prints why it skipped and passes: not root or
//! fewer than 2 CPUs fail instead under `GANG_REQUIRE_HOST=1` (CI); a
//! layout it cannot move (a hierarchy busy or shared, cpuset on v2 already,
//! the lock not had in time) is a plain skip even then, since it depends on
//! what else the host runs, not on what it lacks. Everything runs in one
//! `#[test]`, so nothing else in this binary sees the layout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gang_core::{CpuSet, DomainId, DomainSpec, Policy, PoolConfig, VcpuRef};
use gang_host::adopt::Adopted;
use gang_host::cgroup::{
    self, CgroupError, CgroupVersion, Cgroups, Hierarchy, ShieldMode, LAYOUT_LOCK,
};
use gang_host::runtime::{allowed_cpus, Isolation, Runtime, RuntimeConfig};

// Only its /proc and skip helpers: `common::can_run` takes the layout lock
// shared, and this test holds it exclusively.
mod common;
use common::{pid_cpus, skip_or_fail, skip_plain, status_cpus};

const LOCK: &str = LAYOUT_LOCK;
const MARKER: &str = "/tmp/gang-cgroup-v2-test.state";
const CHILD_ENV: &str = "GANG_CGROUP_V2_CHILD";
const READY: &str = "GANG-V2-CHILD-READY";

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

fn read(path: impl AsRef<Path>) -> String {
    fs::read_to_string(path.as_ref())
        .unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
        .trim()
        .to_string()
}

fn cpus(list: &str) -> CpuSet {
    CpuSet::parse(list, None).unwrap()
}

/// `Cpus_allowed_list` of a fresh child process (what a new host task gets).
fn fresh_child_cpus() -> String {
    let out = Command::new("cat")
        .arg("/proc/self/status")
        .output()
        .unwrap();
    status_cpus(&String::from_utf8_lossy(&out.stdout))
}

fn gettid() -> i32 {
    rustix::thread::gettid().as_raw_nonzero().get()
}

fn affinity(tid: i32) -> Vec<usize> {
    let set = rustix::thread::sched_getaffinity(rustix::process::Pid::from_raw(tid)).unwrap();
    (0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&c| set.is_set(c))
        .collect()
}

/// The v2 cgroup of a thread (of any process), as `/a/b`.
fn v2_cgroup(tid: i32) -> String {
    read(format!("/proc/{tid}/task/{tid}/cgroup"))
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("?")
        .to_string()
}

/// CPU time of a thread of any process, in ns (`schedstat`).
fn cpu_ns(tid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{tid}/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Whether thread `tid` gets more than 1 ms of CPU time within `d` (the
/// child spinners run half of the time). Not "any CPU time": v2 reports a
/// cgroup `frozen 1` as soon as its last task enters the freezer's trap,
/// and a task caught running then still spends some µs before it sleeps
/// (seen: 18 µs of CPU time after `frozen 1`, the task in state R).
fn runs_within(tid: i32, d: Duration) -> bool {
    let t0 = cpu_ns(tid);
    std::thread::sleep(d);
    cpu_ns(tid) > t0 + 1_000_000
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A thread of this process that spins (recording the CPU it is on) until
/// dropped or for 30 s.
struct Spinner {
    stop: Arc<AtomicBool>,
    progress: Arc<AtomicU64>,
    cpu: Arc<AtomicI32>,
    tid: i32,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Spinner {
    fn spawn(pin: Option<usize>) -> Spinner {
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(AtomicU64::new(0));
        let cpu = Arc::new(AtomicI32::new(-1));
        let (tx, rx) = std::sync::mpsc::channel();
        let (s, p, c) = (stop.clone(), progress.clone(), cpu.clone());
        let handle = std::thread::spawn(move || {
            if let Some(cpu) = pin {
                let mut set = rustix::thread::CpuSet::new();
                set.set(cpu);
                rustix::thread::sched_setaffinity(None, &set).unwrap();
            }
            tx.send(gettid()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                p.fetch_add(1, Ordering::Relaxed);
                c.store(rustix::thread::sched_getcpu() as i32, Ordering::Relaxed);
                // Sleep a little: never hog a CPU the host needs.
                let t = Instant::now();
                while t.elapsed() < Duration::from_micros(200) {}
                std::thread::sleep(Duration::from_micros(300));
            }
        });
        let tid = rx.recv().unwrap();
        Spinner {
            stop,
            progress,
            cpu,
            tid,
            handle: Some(handle),
        }
    }

    fn progress(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    /// Whether it progresses within `d`.
    fn runs(&self, d: Duration) -> bool {
        let p0 = self.progress();
        std::thread::sleep(d);
        self.progress() > p0
    }

    /// The CPU it last ran on, after it has run again.
    fn cpu_now(&self) -> i32 {
        self.cpu.store(-1, Ordering::Relaxed);
        wait_for("the spinner to run", Duration::from_secs(2), || {
            self.cpu.load(Ordering::Relaxed) >= 0
        });
        self.cpu.load(Ordering::Relaxed)
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A child process (this binary in a child mode), killed on drop.
struct ChildProc {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl ChildProc {
    fn spawn(mode: &str) -> ChildProc {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "v2_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, mode)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        ChildProc { child, lines }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Reads lines until one contains `READY`; returns what follows it.
    fn ready(&mut self) -> String {
        for line in self.lines.by_ref() {
            let line = line.unwrap();
            if let Some((_, rest)) = line.split_once(READY) {
                return rest.trim().to_string();
            }
        }
        panic!("child ended before it was ready");
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A state directory and a cgroup prefix registered with the layout (so
/// that even a killed run's cgroups are removed by the next), repaired and
/// removed on drop.
struct Scratch {
    prefix: String,
    dir: PathBuf,
}

impl Scratch {
    fn new(layout: &Layout) -> Scratch {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("gangv2t-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        // The instance's own prefix (runtimes, adoptions derive it from the
        // state directory); tests that name cgroups use it too.
        let prefix = cgroup::prefix_for(&dir);
        layout.note(&format!("prefix {prefix} {}", dir.display()));
        Scratch { prefix, dir }
    }

    /// This scratch instance's cgroups, on the controllers mounted now.
    fn cgroups(&self) -> Cgroups {
        Cgroups::new(Hierarchy::detect().unwrap(), &self.dir, &self.prefix)
    }

    fn state_files(&self) -> usize {
        fs::read_dir(&self.dir).map(|d| d.count()).unwrap_or(0)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = cgroup::repair_named(&self.dir, &self.prefix);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------
// The layout guard
// ---------------------------------------------------------------------------

/// A v1 hierarchy as it was mounted.
#[derive(Debug, Clone)]
struct V1Mount {
    controller: String,
    mount: PathBuf,
    source: String,
    /// Mount flags and super options, for `mount -o`.
    options: String,
    /// The hierarchy's controllers and names (super options but rw/ro).
    supers: Vec<String>,
}

/// `/proc/cgroups`: (hierarchy id, number of cgroups) of a controller.
fn proc_cgroups(controller: &str) -> Option<(u32, u32)> {
    read("/proc/cgroups").lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.first() != Some(&controller) {
            return None;
        }
        Some((f.get(1)?.parse().ok()?, f.get(2)?.parse().ok()?))
    })
}

/// The v1 mounts of `controller` and the cgroup2 mount point.
fn mounts(controller: &str) -> (Vec<V1Mount>, Option<PathBuf>) {
    let mut v1 = Vec::new();
    let mut unified = None;
    for line in read("/proc/self/mountinfo").lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 6 || r.len() < 3 {
            continue;
        }
        match r[0] {
            "cgroup2" if unified.is_none() => unified = Some(PathBuf::from(l[4])),
            "cgroup" => {
                let supers: Vec<&str> = r[2].split(',').collect();
                if supers.contains(&controller) {
                    let extra: Vec<&str> = supers
                        .iter()
                        .copied()
                        .filter(|o| *o != "rw" && *o != "ro")
                        .collect();
                    v1.push(V1Mount {
                        controller: controller.to_string(),
                        mount: PathBuf::from(l[4]),
                        source: r[1].to_string(),
                        options: format!("{},{}", l[5], extra.join(",")),
                        supers: extra.iter().map(|s| s.to_string()).collect(),
                    });
                }
            }
            _ => {}
        }
    }
    (v1, unified)
}

fn is_mounted(path: &Path) -> bool {
    let want = path.to_string_lossy();
    read("/proc/self/mountinfo")
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&want))
}

/// The v1 controllers moved to v2 for the test and the layout lock; gives
/// everything back on drop.
struct Layout {
    _lock: fs::File,
    unified: PathBuf,
    moved: Vec<V1Mount>,
}

impl Layout {
    /// Takes the lock, repairs a killed run's layout, and moves cpuset (and
    /// freezer, if free) to v2. `Err`: why the layout cannot be moved here
    /// (the caller has checked root and CPUs).
    fn acquire() -> Result<Layout, String> {
        let lock = take_lock()?;
        restore_leftovers();

        let (cs, unified) = mounts("cpuset");
        let unified = unified.ok_or("no cgroup2 hierarchy is mounted")?;
        if fs::read_to_string(unified.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "cpuset"))
            && cs.is_empty()
        {
            return Err("cpuset is on cgroup v2 already (not this test's layout)".into());
        }
        let cpuset = free_hierarchy("cpuset", cs)?;
        let freezer = match free_hierarchy("freezer", mounts("freezer").0) {
            Ok(m) => Some(m),
            Err(why) => {
                eprintln!("note: the v1 freezer stays ({why}): v2 freezer parts skipped");
                None
            }
        };
        let mut layout = Layout {
            _lock: lock,
            unified: unified.clone(),
            moved: Vec::new(),
        };
        for m in [Some(cpuset), freezer].into_iter().flatten() {
            // Recorded before it is unmounted: a kill after this line is
            // repaired by the next run.
            layout.note(&format!(
                "moved {} {} {} {}",
                m.controller,
                m.mount.display(),
                m.source,
                m.options
            ));
            let ok = Command::new("umount")
                .arg(&m.mount)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err(format!("umount {} failed", m.mount.display()));
            }
            layout.moved.push(m.clone());
            let t0 = Instant::now();
            let released = || match m.controller.as_str() {
                "cpuset" => fs::read_to_string(unified.join("cgroup.controllers"))
                    .is_ok_and(|c| c.split_whitespace().any(|c| c == "cpuset")),
                other => proc_cgroups(other).is_some_and(|(h, _)| h == 0),
            };
            while !released() {
                if t0.elapsed() > Duration::from_secs(10) {
                    return Err(format!("{} did not leave cgroup v1", m.controller));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(layout)
    }

    fn has_v2_freezer(&self) -> bool {
        self.moved.iter().any(|m| m.controller == "freezer")
    }

    /// Appends a line to the state file (synced: it must survive a kill).
    fn note(&self, line: &str) {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(MARKER)
            .unwrap();
        writeln!(f, "{line}").unwrap();
        f.sync_all().unwrap();
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        let text = fs::read_to_string(MARKER).unwrap_or_default();
        if restore(&text, &self.unified) {
            let _ = fs::remove_file(MARKER);
        } else {
            eprintln!("layout NOT fully restored: {MARKER} kept for the next run");
        }
        for m in &self.moved {
            eprintln!(
                "{} back on v1: {:?}, mounted at {}: {}",
                m.controller,
                proc_cgroups(&m.controller),
                m.mount.display(),
                is_mounted(&m.mount)
            );
        }
    }
}

/// The only mount of a controller's v1 hierarchy, alone on it and without
/// child cgroups: unmounting it hands the controller to v2.
fn free_hierarchy(controller: &str, mounts: Vec<V1Mount>) -> Result<V1Mount, String> {
    let [m] = <[V1Mount; 1]>::try_from(mounts)
        .map_err(|v| format!("the v1 {controller} hierarchy is mounted {} times", v.len()))?;
    if m.supers != [controller] {
        return Err(format!(
            "{controller} shares its v1 hierarchy: {}",
            m.options
        ));
    }
    // Cgroups just removed (by the test binary run before this one) are
    // freed asynchronously: wait for them while no child directory is left.
    let t0 = Instant::now();
    let has_children = || {
        fs::read_dir(&m.mount)
            .is_ok_and(|d| d.flatten().any(|e| e.file_type().is_ok_and(|t| t.is_dir())))
    };
    while proc_cgroups(controller).is_some_and(|(_, n)| n > 1)
        && !has_children()
        && t0.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    match proc_cgroups(controller) {
        Some((h, 1)) if h > 0 => Ok(m),
        Some((_, n)) => Err(format!(
            "the v1 {controller} hierarchy has {} child cgroup(s)",
            n.saturating_sub(1)
        )),
        None => Err(format!("no {controller} controller in /proc/cgroups")),
    }
}

/// The layout lock: a lock held by an ancestor (`flock LOCK cargo test`) is
/// ours; otherwise waits for it.
fn take_lock() -> Result<fs::File, String> {
    use rustix::fs::{flock, FlockOperation};
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o666)
        .open(LOCK)
        .map_err(|e| format!("{LOCK}: {e}"))?;
    let _ = fs::set_permissions(LOCK, fs::Permissions::from_mode(0o666));
    let ino = file.metadata().map(|m| m.ino()).unwrap_or(0);
    let holder = |ino: u64| -> Option<i32> {
        read("/proc/locks").lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let hit = f.get(1) == Some(&"FLOCK")
                && f.get(5)
                    .is_some_and(|d| d.rsplit(':').next() == Some(&ino.to_string()));
            hit.then(|| f.get(4)?.parse().ok())?
        })
    };
    let ancestors = {
        let mut v = Vec::new();
        let mut pid = std::process::id() as i32;
        while pid > 1 {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().nth(1))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if ppid <= 0 {
                break;
            }
            v.push(ppid);
            pid = ppid;
        }
        v
    };
    let timeout = std::env::var("GANG_LAYOUT_LOCK_TIMEOUT_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(180), Duration::from_secs);
    let t0 = Instant::now();
    let mut said = false;
    loop {
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(file),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {}
            Err(e) => return Err(format!("flock {LOCK}: {e}")),
        }
        let who = holder(ino);
        if let Some(pid) = who.filter(|p| ancestors.contains(p)) {
            eprintln!("{LOCK} is held by our ancestor {pid}: the layout is ours");
            return Ok(file);
        }
        if t0.elapsed() > timeout {
            return Err(format!(
                "{LOCK} held by pid {} for over {timeout:?} (someone uses the v1 cpusets)",
                who.map_or("?".into(), |p| p.to_string())
            ));
        }
        if !said {
            eprintln!(
                "waiting up to {timeout:?} for {LOCK} (held by pid {})",
                who.map_or("?".into(), |p| p.to_string())
            );
            said = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A killed run's layout, restored before anything else (under the lock).
fn restore_leftovers() {
    let text = fs::read_to_string(MARKER).unwrap_or_default();
    let (_, unified) = mounts("cpuset");
    let Some(unified) = unified else { return };
    let mut text = text;
    // No state file, but the layout this test leaves mid-way: an empty,
    // unmounted /sys/fs/cgroup/<ctl> and the controller off v1.
    for ctl in ["cpuset", "freezer"] {
        let dir = Path::new("/sys/fs/cgroup").join(ctl);
        let empty = fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_none());
        let off_v1 = proc_cgroups(ctl).is_some_and(|(h, _)| h == 0);
        if empty && off_v1 && !is_mounted(&dir) && !text.contains(&format!("moved {ctl} ")) {
            text.push_str(&format!(
                "moved {ctl} {} cgroup rw,relatime,{ctl}\n",
                dir.display()
            ));
        }
    }
    if text.trim().is_empty() {
        return;
    }
    eprintln!("restoring the layout a killed run left:\n{text}");
    if restore(&text, &unified) {
        let _ = fs::remove_file(MARKER);
    } else {
        panic!("could not restore the cgroup layout a killed run left ({MARKER})");
    }
}

/// Removes the recorded prefixes' cgroups from v2, disables cpuset there
/// and mounts the moved hierarchies back. Whether all is back.
fn restore(text: &str, unified: &Path) -> bool {
    let mut moved = Vec::new();
    let mut prefixes = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        match f.as_slice() {
            ["moved", ctl, mount, source, options] => moved.push(V1Mount {
                controller: ctl.to_string(),
                mount: PathBuf::from(mount),
                source: source.to_string(),
                options: options.to_string(),
                supers: vec![ctl.to_string()],
            }),
            ["prefix", prefix, dir] => prefixes.push((prefix.to_string(), PathBuf::from(dir))),
            _ => {}
        }
    }
    // What the code under test would repair, then by force.
    for (prefix, dir) in &prefixes {
        let _ = gang_host::adopt::repair(dir);
        let _ = cgroup::repair_named(dir, prefix);
    }
    let mut found = Vec::new();
    find_prefixed(unified, &prefixes, 0, &mut found);
    for dir in found {
        force_remove(&dir);
    }
    for (_, dir) in &prefixes {
        let ours = dir.starts_with(std::env::temp_dir())
            && dir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("gangv2t-"));
        if ours {
            let _ = fs::remove_dir_all(dir);
        }
    }
    let sc = unified.join("cgroup.subtree_control");
    if fs::read_to_string(&sc).is_ok_and(|t| t.split_whitespace().any(|c| c == "cpuset")) {
        if let Err(e) = fs::write(&sc, "-cpuset") {
            eprintln!("{}: -cpuset: {e}", sc.display());
        }
    }
    let mut all = true;
    for m in moved {
        if is_mounted(&m.mount) {
            continue;
        }
        let t0 = Instant::now();
        loop {
            let out = Command::new("mount")
                .args(["-t", "cgroup", "-o", &m.options, &m.source])
                .arg(&m.mount)
                .output();
            if is_mounted(&m.mount) {
                break;
            }
            // The controller's last v2 cgroups are freed asynchronously.
            if t0.elapsed() > Duration::from_secs(20) {
                eprintln!(
                    "mount {} failed: {:?}",
                    m.mount.display(),
                    out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                );
                all = false;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    all
}

fn find_prefixed(dir: &Path, prefixes: &[(String, PathBuf)], depth: usize, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = prefixes.iter().any(|(p, _)| {
            name.strip_prefix(p.as_str())
                .is_some_and(|r| r.starts_with('.') || r.starts_with('-'))
        });
        if ours {
            out.push(e.path());
        } else if depth < 8 {
            find_prefixed(&e.path(), prefixes, depth + 1, out);
        }
    }
}

/// Thaws, dissolves, empties into the parent and removes a v2 cgroup and
/// its descendants, without the code under test.
fn force_remove(dir: &Path) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            force_remove(&e.path());
        }
    }
    let _ = fs::write(dir.join("cgroup.freeze"), "0");
    let _ = fs::write(dir.join("cpuset.cpus.partition"), "member");
    let parent = dir.parent().unwrap();
    for _ in 0..200 {
        for file in ["cgroup.threads", "cgroup.procs"] {
            let ids = fs::read_to_string(dir.join(file)).unwrap_or_default();
            for id in ids.lines() {
                let _ = fs::write(parent.join(file), id);
            }
        }
        if fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    eprintln!("could not remove {}", dir.display());
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

#[test]
fn cgroup_v2_paths() {
    if !rustix::process::geteuid().is_root() {
        return skip_or_fail("needs root (mounts cgroup hierarchies)");
    }
    if cgroup::online_cpus().map(|c| c.len()).unwrap_or(0) < 2 {
        return skip_or_fail("needs 2 online CPUs");
    }
    let layout = match Layout::acquire() {
        Ok(l) => l,
        // Not strict: the layout depends on what else the host runs.
        Err(why) => return skip_plain(&why),
    };
    let h = Hierarchy::detect().unwrap();
    eprintln!("detected on the test layout: {h:#?}");
    let cs = h.cpuset.clone().expect("cpuset on v2");
    assert_eq!(cs.version, CgroupVersion::V2);
    assert_eq!(cs.mount, layout.unified);
    let online = cgroup::online_cpus().unwrap();
    let cpu = online.iter().last().unwrap();
    let u = layout.unified.clone();

    partition_takes_and_gives_back(&layout, &u, &online, cpu);
    fallback_when_the_partition_is_refused(&layout, &u, &online, cpu);
    drop_on_panic_gives_back(&layout, &u, &online, cpu);
    repair_after_sigkill(&layout, &u, &online, cpu);
    repair_sweeps_nested_orphans_but_not_units(&layout, &u);
    if layout.has_v2_freezer() {
        assert_eq!(
            Hierarchy::detect().unwrap().freezer.unwrap().version,
            CgroupVersion::V2
        );
        adopted_threads_freeze_on_v2(&layout, &u, cpu);
        exclusive_runtime_adopts_on_v2(&layout, &u, &online, cpu);
    } else {
        eprintln!("skipped the v2 freezer parts: the v1 freezer could not be moved");
    }
    // Nothing of ours is left on v2.
    let mut left = Vec::new();
    find_prefixed(&u, &[("gangv2t".into(), PathBuf::new())], 0, &mut left);
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(cpus(&read(u.join("cpuset.cpus.effective"))), online);
}

/// The default: `<prefix>.pool` becomes a threaded partition root, and the
/// CPU is gone from every other cgroup until released.
fn partition_takes_and_gives_back(layout: &Layout, u: &Path, online: &CpuSet, cpu: u32) {
    let sc = Scratch::new(layout);
    let taken: CpuSet = [cpu].into_iter().collect();
    let mut rest = online.clone();
    rest.difference_with(&taken);
    let rest_list: Vec<usize> = rest.iter().map(|c| c as usize).collect();
    assert_eq!(fresh_child_cpus(), online.to_string());
    assert!(!read(u.join("cgroup.subtree_control")).contains("cpuset"));

    let pinned = Spinner::spawn(Some(cpu as usize));
    let free = Spinner::spawn(None);
    let (pinned_before, free_before) = (affinity(pinned.tid), affinity(free.tid));

    let shield = sc.cgroups().shield(&taken).unwrap();
    let r = shield.report().clone();
    eprintln!("v2 shield: {r:?}");
    assert_eq!(shield.mode(), ShieldMode::V2Partition);
    assert_eq!(r.partition_refused, None);
    assert!(shield.host_path().is_none());
    assert_eq!(r.tasks.moved, 0, "a partition moves no task");
    let pool = shield.pool_path().to_path_buf();
    assert_eq!(pool, u.join(format!("{}.pool", sc.prefix)));
    assert_eq!(read(pool.join("cgroup.type")), "threaded");
    assert_eq!(read(pool.join("cpuset.cpus.partition")), "root");
    assert_eq!(cpus(&read(pool.join("cpuset.cpus.effective"))), taken);
    assert!(read(u.join("cgroup.subtree_control")).contains("cpuset"));
    assert!(shield.state_file().exists());

    // No host task can run on the CPU: the root's cpuset, a fresh child,
    // init, this process, a thread pinned to it before.
    assert_eq!(cpus(&read(u.join("cpuset.cpus.effective"))), rest);
    assert_eq!(fresh_child_cpus(), rest.to_string());
    assert_eq!(pid_cpus(1), rest.to_string());
    assert!(!allowed_cpus().unwrap().contains(cpu));
    assert_eq!(affinity(free.tid), rest_list);
    assert_eq!(affinity(pinned.tid), rest_list);
    assert!(pinned.runs(Duration::from_millis(50)));

    // The CPU is refused to a second instance, by name; the host's last CPU
    // too.
    let sc2 = Scratch::new(layout);
    let e = sc2.cgroups().shield(&taken).unwrap_err();
    assert!(
        matches!(e, CgroupError::CpuInUse { cpu: c, .. } if c == cpu),
        "{e}"
    );
    let e = sc2.cgroups().shield(&rest).unwrap_err();
    assert!(matches!(e, CgroupError::WouldTakeAll { .. }), "{e}");
    assert_eq!(sc2.state_files(), 0);

    // A single thread of this process joins the pool and runs there.
    let worker = Spinner::spawn(None);
    shield.attach(worker.tid).unwrap();
    assert_eq!(v2_cgroup(worker.tid), format!("/{}.pool", sc.prefix));
    assert_eq!(affinity(worker.tid), vec![cpu as usize]);
    assert_eq!(worker.cpu_now(), cpu as i32);
    assert_eq!(v2_cgroup(gettid()), "/", "only that thread moved");

    // Its freezer (an adopted thread's) is a threaded cgroup inside the
    // pool: the thread keeps the pool's CPU, frozen and thawed.
    let fz = sc.cgroups().thread_freezer("w", worker.tid).unwrap();
    assert_eq!(fz.path(), pool.join(format!("{}.w", sc.prefix)));
    assert_eq!(read(fz.path().join("cgroup.type")), "threaded");
    assert_eq!(v2_cgroup(worker.tid), format!("/{0}.pool/{0}.w", sc.prefix));
    assert_eq!(affinity(worker.tid), vec![cpu as usize]);
    fz.freeze().unwrap();
    assert!(fz.is_frozen().unwrap());
    assert!(!worker.runs(Duration::from_millis(40)), "frozen thread ran");
    fz.thaw().unwrap();
    assert!(
        worker.runs(Duration::from_millis(200)),
        "thawed thread did not run"
    );
    assert_eq!(worker.cpu_now(), cpu as i32);
    fz.remove().unwrap();
    assert_eq!(v2_cgroup(worker.tid), format!("/{}.pool", sc.prefix));

    let back = shield.release().unwrap();
    eprintln!("released: {back:?}");
    assert!(back.moved >= 1, "the worker went back to the root");
    assert!(!pool.exists());
    assert_eq!(cpus(&read(u.join("cpuset.cpus.effective"))), *online);
    assert_eq!(fresh_child_cpus(), online.to_string());
    assert_eq!(pid_cpus(1), online.to_string());
    assert_eq!(v2_cgroup(worker.tid), "/");
    assert_eq!(sc.state_files(), 0);
    assert!(
        !read(u.join("cgroup.subtree_control")).contains("cpuset"),
        "cpuset disabled again: we enabled it and nobody else uses it"
    );
    // User affinities survive the round trip (Linux >= 6.2 keeps them).
    assert_eq!(affinity(pinned.tid), pinned_before);
    assert_eq!(affinity(free.tid), free_before);
    assert!(worker.runs(Duration::from_millis(50)));
}

/// A sibling that uses the CPU (a systemd slice's AllowedCPUs, say) makes
/// the kernel refuse the partition: the host's tasks move into a threaded
/// `<prefix>.host` instead, and our own threads can still join the pool.
fn fallback_when_the_partition_is_refused(layout: &Layout, u: &Path, online: &CpuSet, cpu: u32) {
    let sc = Scratch::new(layout);
    let taken: CpuSet = [cpu].into_iter().collect();
    let mut rest = online.clone();
    rest.difference_with(&taken);
    let sc_file = u.join("cgroup.subtree_control");
    fs::write(&sc_file, "+cpuset").unwrap();
    let blocker = u.join(format!("{}-blocker", sc.prefix));
    fs::create_dir(&blocker).unwrap();
    fs::write(blocker.join("cpuset.cpus"), taken.to_string()).unwrap();

    let pinned = Spinner::spawn(Some(cpu as usize));
    let shield = sc.cgroups().shield(&taken).unwrap();
    let r = shield.report().clone();
    eprintln!(
        "v2 fallback: mode {:?}, refused partition: {:?}; moved {} ({} kernel threads), \
         refused {} ({} user: {:?}), unshielded {:?}",
        r.mode,
        r.partition_refused,
        r.tasks.moved,
        r.tasks.moved_kernel,
        r.tasks.refused,
        r.tasks.refused_user,
        r.tasks.refused_sample,
        r.unshielded
    );
    assert_eq!(shield.mode(), ShieldMode::V2Shield);
    let why = r.partition_refused.clone().unwrap();
    assert!(why.contains("invalid"), "{why}");
    let host = shield.host_path().unwrap().to_path_buf();
    let pool = shield.pool_path().to_path_buf();
    assert_eq!(read(host.join("cgroup.type")), "threaded");
    assert_eq!(read(pool.join("cgroup.type")), "threaded");
    assert_eq!(read(pool.join("cpuset.cpus.partition")), "member");
    assert_eq!(cpus(&read(host.join("cpuset.cpus.effective"))), rest);
    assert!(r.tasks.moved > 0);
    assert_eq!(r.tasks.refused_user, 0, "{:?}", r.tasks.refused_sample);
    let host_name = format!("/{}.host", sc.prefix);
    assert_eq!(v2_cgroup(gettid()), host_name);
    assert_eq!(v2_cgroup(1), host_name);
    assert_eq!(fresh_child_cpus(), rest.to_string());
    assert_eq!(pid_cpus(1), rest.to_string());
    assert_eq!(
        affinity(pinned.tid),
        rest.iter().map(|c| c as usize).collect::<Vec<_>>()
    );

    // A thread of a host process (this one) still joins the pool.
    let worker = Spinner::spawn(None);
    shield.attach(worker.tid).unwrap();
    assert_eq!(affinity(worker.tid), vec![cpu as usize]);
    assert_eq!(worker.cpu_now(), cpu as i32);

    let back = shield.release().unwrap();
    assert!(back.moved > 0);
    assert!(!host.exists() && !pool.exists());
    assert_eq!(v2_cgroup(gettid()), "/");
    assert_eq!(v2_cgroup(1), "/");
    assert_eq!(v2_cgroup(worker.tid), "/");
    assert_eq!(fresh_child_cpus(), online.to_string());
    assert_eq!(sc.state_files(), 0);
    // cpuset was enabled before the shield: it stays for the blocker.
    assert!(read(&sc_file).contains("cpuset"));
    fs::remove_dir(&blocker).unwrap();
    fs::write(&sc_file, "-cpuset").unwrap();
}

fn drop_on_panic_gives_back(layout: &Layout, u: &Path, online: &CpuSet, cpu: u32) {
    let sc = Scratch::new(layout);
    let taken: CpuSet = [cpu].into_iter().collect();
    let pool = u.join(format!("{}.pool", sc.prefix));
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {})); // the panic below is expected
    let r = std::panic::catch_unwind(|| {
        let _shield = sc.cgroups().shield(&taken).unwrap();
        assert!(pool.exists());
        panic!("deliberate");
    });
    std::panic::set_hook(hook);
    assert!(r.is_err());
    assert!(!pool.exists());
    assert_eq!(cpus(&read(u.join("cpuset.cpus.effective"))), *online);
    assert!(cgroup::repair_named(&sc.dir, &sc.prefix)
        .unwrap()
        .is_clean());
}

/// A child takes the CPU (partition), puts a thread in the pool and a
/// frozen thread's freezer inside it, and is SIGKILLed: the CPU stays
/// taken until `repair` of the same state directory gives it back.
fn repair_after_sigkill(layout: &Layout, u: &Path, online: &CpuSet, cpu: u32) {
    let sc = Scratch::new(layout);
    let mut rest = online.clone();
    rest.remove(cpu);
    let mut child = ChildProc::spawn(&format!("crash {cpu} {} {}", sc.prefix, sc.dir.display()));
    let pid = child.pid();
    let what = child.ready();
    eprintln!("crash child {pid}: {what}");
    let pool = u.join(format!("{}.pool", sc.prefix));
    let frz = pool.join(format!("{}.crash", sc.prefix));
    assert_eq!(read(pool.join("cpuset.cpus.partition")), "root");
    assert!(frz.exists());
    assert_eq!(fresh_child_cpus(), rest.to_string());

    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    // v2 lets SIGKILL through the freezer: the child dies even frozen.
    let t0 = Instant::now();
    while child.child.try_wait().unwrap().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "killed child did not exit"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(pool.exists(), "a killed owner cannot clean up");
    assert_eq!(
        cpus(&read(u.join("cpuset.cpus.effective"))),
        rest,
        "the CPU stays taken"
    );

    let rep = cgroup::repair_named(&sc.dir, &sc.prefix).unwrap();
    eprintln!("repair after kill -9: {rep:?}");
    assert_eq!(rep.state_files.len(), 2, "{rep:?}");
    assert!(!pool.exists() && !frz.exists());
    assert_eq!(cpus(&read(u.join("cpuset.cpus.effective"))), *online);
    assert_eq!(fresh_child_cpus(), online.to_string());
    assert!(!read(u.join("cgroup.subtree_control")).contains("cpuset"));
    assert_eq!(sc.state_files(), 0);
    let again = cgroup::repair_named(&sc.dir, &sc.prefix).unwrap();
    assert!(again.is_clean(), "{again:?}");
}

/// Without state files, a repair removes its prefix's orphans: at the root,
/// and an adopted thread's (threaded) freezer inside another cgroup; never
/// a systemd unit's cgroup that happens to share the prefix (the system
/// daemon's `gang.service`).
fn repair_sweeps_nested_orphans_but_not_units(layout: &Layout, u: &Path) {
    let sc = Scratch::new(layout);
    let p = &sc.prefix;
    let orphan = u.join(format!("{p}.orphan"));
    let unit = u.join(format!("{p}.service"));
    let dom = u.join(format!("{p}-d2"));
    let nested = dom.join(format!("{p}.t999999"));
    let unit_child = unit.join(format!("{p}.scope"));
    for d in [&orphan, &unit, &dom, &nested, &unit_child] {
        fs::create_dir(d).unwrap();
    }
    fs::write(nested.join("cgroup.type"), "threaded").unwrap();
    let rep = cgroup::repair_named(&sc.dir, p).unwrap();
    eprintln!("sweep: {rep:?}");
    let mut removed = rep.cgroups_removed.clone();
    removed.sort();
    let mut want = vec![orphan.clone(), nested.clone()];
    want.sort();
    assert_eq!(removed, want);
    assert!(!orphan.exists() && !nested.exists());
    assert!(unit.exists() && unit_child.exists() && dom.exists());
    for d in [&unit_child, &unit, &dom] {
        fs::remove_dir(d).unwrap();
    }
}

/// `adopt::Adopted` on v2: a thread of a multi-threaded process, in the
/// root and in a domain's own cgroup (the daemon's `<ns>-d<ID>`), frozen
/// between slots by `cgroup.freeze`, given back as it was.
fn adopted_threads_freeze_on_v2(layout: &Layout, u: &Path, cpu: u32) {
    let sc = Scratch::new(layout);
    let vcpu = VcpuRef {
        domain: DomainId(1),
        vcpu: 0,
    };
    // A thread of this process (in the root cgroup).
    let t = Spinner::spawn(None);
    let before = affinity(t.tid);
    let a = Adopted::adopt(vcpu, t.tid, cpu, 0, &sc.dir).unwrap();
    let fz = u.join(format!("{}.t{}", sc.prefix, t.tid));
    assert_eq!(v2_cgroup(t.tid), format!("/{}.t{}", sc.prefix, t.tid));
    assert_eq!(read(fz.join("cgroup.type")), "threaded");
    assert_eq!(v2_cgroup(gettid()), "/");
    assert!(
        !t.runs(Duration::from_millis(40)),
        "adopted thread runs frozen"
    );
    a.start();
    assert!(
        t.runs(Duration::from_millis(200)),
        "started thread did not run"
    );
    assert_eq!(t.cpu_now(), cpu as i32);
    a.stop();
    wait_for("the freeze", Duration::from_secs(1), || {
        read(fz.join("cgroup.events")).contains("frozen 1")
    });
    assert!(!t.runs(Duration::from_millis(40)));
    a.release();
    assert!(!fz.exists());
    assert_eq!(v2_cgroup(t.tid), "/");
    assert_eq!(affinity(t.tid), before);
    assert!(t.runs(Duration::from_millis(50)));
    assert_eq!(sc.state_files(), 0);

    // A thread of another process that lives in its domain's own cgroup.
    let mut child = ChildProc::spawn("spin 20000");
    let tid: i32 = child.ready().parse().unwrap();
    let pid = child.pid();
    let dom = u.join(format!("{}-d1", sc.prefix));
    fs::create_dir(&dom).unwrap();
    fs::write(dom.join("cgroup.procs"), pid.to_string()).unwrap();
    let dom_name = format!("/{}-d1", sc.prefix);
    assert_eq!(v2_cgroup(tid), dom_name);
    let a = Adopted::adopt(vcpu, tid, cpu, 0, &sc.dir).unwrap();
    let fz = dom.join(format!("{}.t{tid}", sc.prefix));
    assert_eq!(v2_cgroup(tid), format!("{dom_name}/{}.t{tid}", sc.prefix));
    assert_eq!(v2_cgroup(pid), dom_name, "the other threads stay");
    assert!(!runs_within(tid, Duration::from_millis(40)));
    a.start();
    assert!(runs_within(tid, Duration::from_millis(200)));
    // Pausing the domain freezes its adopted thread too, and a release
    // while paused neither hangs nor fails.
    fs::write(dom.join("cgroup.freeze"), "1").unwrap();
    wait_for("the domain freeze", Duration::from_secs(1), || {
        read(dom.join("cgroup.events")).contains("frozen 1")
    });
    assert!(!runs_within(tid, Duration::from_millis(40)));
    let t0 = Instant::now();
    a.release();
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    assert!(!fz.exists());
    assert_eq!(v2_cgroup(tid), dom_name);
    fs::write(dom.join("cgroup.freeze"), "0").unwrap();
    assert!(runs_within(tid, Duration::from_millis(200)));
    // The domain's cgroup goes with the gang-host helper the daemon uses.
    let ctl = Hierarchy::detect().unwrap().freezer.unwrap();
    cgroup::drain_and_remove(&ctl, &dom, u).unwrap();
    assert!(!dom.exists());
    assert_eq!(v2_cgroup(pid), "/");
    drop(child);
    assert_eq!(sc.state_files(), 0);
}

/// A whole exclusive runtime on v2: the pool is a partition, dispatchers
/// join it, another process's thread is adopted into it (its freezer
/// nested in the pool), and everything is given back on stop.
fn exclusive_runtime_adopts_on_v2(layout: &Layout, u: &Path, online: &CpuSet, cpu: u32) {
    let sc = Scratch::new(layout);
    let mut child = ChildProc::spawn("spin 20000");
    let tid: i32 = child.ready().parse().unwrap();
    let affinity_before = affinity(tid);
    let mut config = RuntimeConfig::new(PoolConfig::new([cpu].into_iter().collect()));
    config.isolation = Isolation::Exclusive;
    config.state_dir = Some(sc.dir.clone());
    config.name = "v2-test".into();
    let rt = Runtime::start(config).expect("exclusive runtime on v2");
    let pool = u.join(format!("{}.pool", sc.prefix));
    assert_eq!(read(pool.join("cpuset.cpus.partition")), "root");
    assert!(!allowed_cpus().unwrap().contains(cpu));
    let spec = DomainSpec {
        id: DomainId(1),
        vcpus: 1,
        cpu_map: None,
        policy: Policy::BestEffort {
            weight: 256,
            space_filling: false,
        },
    };
    rt.adopt_domain(spec, &[tid], false).expect("adopted on v2");
    assert_eq!(v2_cgroup(tid), format!("/{0}.pool/{0}.t{tid}", sc.prefix));
    assert_eq!(affinity(tid), vec![cpu as usize]);
    assert!(
        runs_within(tid, Duration::from_millis(300)),
        "adopted thread got no slot"
    );
    let ran = rt
        .recent_switches()
        .iter()
        .any(|s| s.cpu == cpu && s.thread && s.vcpu.is_some_and(|v| v.domain == DomainId(1)));
    assert!(ran, "the dispatcher started the adopted thread");
    rt.remove_domain(DomainId(1)).unwrap();
    // Given back while the pool runs on: out of the pool, its own affinity
    // (within the host's CPUs while the partition holds `cpu`).
    assert_eq!(v2_cgroup(tid), "/");
    let host_cpus: Vec<usize> = affinity_before
        .iter()
        .copied()
        .filter(|&c| c != cpu as usize)
        .collect();
    assert_eq!(affinity(tid), host_cpus);
    rt.stop();
    assert!(!pool.exists());
    assert_eq!(v2_cgroup(tid), "/");
    assert_eq!(
        affinity(tid),
        affinity_before,
        "its own CPUs once the pool is gone"
    );
    assert!(runs_within(tid, Duration::from_millis(100)));
    assert_eq!(cpus(&read(u.join("cpuset.cpus.effective"))), *online);
    assert!(allowed_cpus().unwrap().contains(cpu));
    drop(child);
}

/// Not a test on its own: the child processes of `cgroup_v2_paths`.
/// `spin MS`: a spinning thread (its TID follows READY). `crash CPU PREFIX
/// DIR`: takes CPU, attaches a thread to the pool and freezes it, then waits
/// to be killed.
#[test]
#[ignore = "a child process of cgroup_v2_paths, which runs it with --ignored"]
fn v2_child() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    // Killed with the test, even by SIGKILL: no stray child.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL)).unwrap();
    let f: Vec<&str> = mode.split(' ').collect();
    match f.as_slice() {
        ["spin", ms] => {
            let ms: u64 = ms.parse().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let h = std::thread::spawn(move || {
                tx.send(gettid()).unwrap();
                let end = Instant::now() + Duration::from_millis(ms);
                while Instant::now() < end {
                    let t = Instant::now();
                    while t.elapsed() < Duration::from_micros(500) {}
                    std::thread::sleep(Duration::from_micros(500));
                }
            });
            println!("\n{READY} {}", rx.recv().unwrap());
            h.join().unwrap();
        }
        ["crash", cpu, prefix, dir] => {
            let dir = Path::new(dir);
            let taken: CpuSet = [cpu.parse().unwrap()].into_iter().collect();
            let cgroups = Cgroups::new(Hierarchy::detect().unwrap(), dir, prefix);
            let shield = cgroups.shield(&taken).unwrap();
            let t = Spinner::spawn(None);
            shield.attach(t.tid).unwrap();
            let fz = cgroups.thread_freezer("crash", t.tid).unwrap();
            fz.freeze().unwrap();
            println!(
                "\n{READY} mode {:?}, frozen thread {}",
                shield.mode(),
                t.tid
            );
            std::thread::sleep(Duration::from_secs(20));
            drop(fz);
            drop(shield);
        }
        _ => panic!("unknown child mode {mode:?}"),
    }
}
