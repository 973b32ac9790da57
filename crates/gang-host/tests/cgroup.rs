//! Tests of the cgroup adapters on the real machine.
//!
//! Tests that need root or a missing controller print why they skip, and
//! fail instead when `GANG_REQUIRE_HOST=1` (CI); the ones that need the
//! other cgroup version than the host's skip either way. Every
//! test uses its own cgroup prefix (`gangtest-<pid>-<n>`) and state directory,
//! restores what it changed through drop guards, and tests that move host
//! tasks or pin threads hold `HOST_LOCK`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

// Only its skip helpers: `common::can_run` wants CPUs 0 and 1 and a
// runtime's controllers, these tests their own.
mod common;
use common::{skip_or_fail, skip_plain};

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gang_core::CpuSet;
use gang_host::cgroup::{
    self, CgroupError, CgroupVersion, Cgroups, Hierarchy, LatencyStats, ShieldMode,
};

static HOST_LOCK: Mutex<()> = Mutex::new(());
static SEQ: AtomicUsize = AtomicUsize::new(0);

fn host_lock() -> MutexGuard<'static, ()> {
    HOST_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A unique prefix and a state directory removed on drop.
struct Scratch {
    prefix: String,
    dir: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("gangtest-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { prefix, dir }
    }

    /// This scratch instance's cgroups, on the controllers mounted now.
    fn cgroups(&self) -> Cgroups {
        Cgroups::new(Hierarchy::detect().unwrap(), &self.dir, &self.prefix)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Whatever happened, leave nothing with our prefix behind.
        let _ = cgroup::repair_named(&self.dir, &self.prefix);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn hierarchy_or_skip(need_cpuset: bool) -> Option<Hierarchy> {
    if !is_root() {
        skip_or_fail("needs root");
        return None;
    }
    cgroup::share_layout_for_this_process();
    let h = Hierarchy::detect().unwrap();
    if need_cpuset && h.cpuset.is_none() {
        skip_or_fail("no cpuset controller");
        return None;
    }
    if need_cpuset
        && h.cpuset
            .as_ref()
            .is_some_and(|c| c.version != CgroupVersion::V1)
    {
        // These assert the v1 shield (host tasks moved into a host cpuset);
        // tests/cgroup_v2.rs covers v2 partitions and its fallback. Not
        // strict: a v2 host is as right for CI as a v1 one.
        skip_plain("the v1 shield tests need the v1 cpuset (found v2)");
        return None;
    }
    if h.freezer.is_none() {
        skip_or_fail("no freezer");
        return None;
    }
    Some(h)
}

fn gettid() -> i32 {
    rustix::thread::gettid().as_raw_nonzero().get()
}

fn cgroup_line(tid: i32, controller: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{tid}/task/{tid}/cgroup")).unwrap();
    text.lines()
        .find(|l| {
            l.split(':')
                .nth(1)
                .unwrap_or("")
                .split(',')
                .any(|c| c == controller)
        })
        .map(|l| l.splitn(3, ':').nth(2).unwrap().to_string())
        .unwrap_or_default()
}

fn affinity(tid: i32) -> Vec<usize> {
    let pid = rustix::process::Pid::from_raw(tid);
    let set = rustix::thread::sched_getaffinity(pid).unwrap();
    (0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&c| set.is_set(c))
        .collect()
}

/// A helper thread that spins (or parks) until stopped or until its deadline.
struct TestThread {
    stop: Arc<AtomicBool>,
    progress: Arc<AtomicU64>,
    tid: i32,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl TestThread {
    fn spawn(spin: bool, pin: Option<usize>) -> TestThread {
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(AtomicU64::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let (s, p) = (stop.clone(), progress.clone());
        let handle = std::thread::spawn(move || {
            if let Some(cpu) = pin {
                let mut set = rustix::thread::CpuSet::new();
                set.set(cpu);
                rustix::thread::sched_setaffinity(None, &set).unwrap();
            }
            tx.send(gettid()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                p.fetch_add(1, Ordering::Relaxed);
                if !spin {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        let tid = rx.recv().unwrap();
        TestThread {
            stop,
            progress,
            tid,
            handle: Some(handle),
        }
    }

    fn progress(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }
}

impl Drop for TestThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[test]
fn mountinfo_parsing_finds_v1_and_v2() {
    let text = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
41 31 0:38 / /sys/fs/cgroup/uni\\040fied rw,relatime - cgroup2 cgroup2 rw
";
    let h = Hierarchy::from_mountinfo(text, |_| vec!["hugetlb".into()]);
    let cs = h.cpuset.unwrap();
    assert_eq!(cs.version, CgroupVersion::V1);
    assert_eq!(cs.mount, Path::new("/sys/fs/cgroup/cpuset"));
    assert_eq!(
        h.freezer.unwrap().mount,
        Path::new("/sys/fs/cgroup/freezer")
    );
    assert_eq!(h.unified.unwrap(), Path::new("/sys/fs/cgroup/uni fied"));

    // Pure v2 with cpuset enabled: both from the unified hierarchy.
    let v2 = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
    let h = Hierarchy::from_mountinfo(v2, |_| vec!["cpuset".into(), "cpu".into()]);
    assert_eq!(h.cpuset.as_ref().unwrap().version, CgroupVersion::V2);
    assert_eq!(h.freezer.as_ref().unwrap().version, CgroupVersion::V2);

    // Nothing mounted: clear errors.
    let h = Hierarchy::from_mountinfo("", |_| vec![]);
    let e = h.cpuset().unwrap_err().to_string();
    assert!(e.contains("cpuset") && e.contains("mountinfo"), "{e}");
}

#[test]
fn detect_on_this_machine() {
    let h = Hierarchy::detect().unwrap();
    eprintln!("detected: {h:#?}");
}

#[test]
fn latency_stats_percentiles() {
    let s = LatencyStats::from_samples((1..=100).map(Duration::from_micros).collect());
    assert_eq!(s.p50, Duration::from_micros(50));
    assert_eq!(s.p99, Duration::from_micros(99));
    assert_eq!(s.max, Duration::from_micros(100));
    assert_eq!(LatencyStats::from_samples(vec![]).n, 0);
}

#[test]
fn shield_refuses_bad_requests() {
    let Some(_h) = hierarchy_or_skip(true) else {
        return;
    };
    let sc = Scratch::new();
    let online = cgroup::online_cpus().unwrap();
    let e = sc.cgroups().shield(&online).unwrap_err();
    assert!(matches!(e, CgroupError::WouldTakeAll { .. }), "{e}");
    let e = sc
        .cgroups()
        .shield(&[999].into_iter().collect())
        .unwrap_err();
    assert_eq!(e.to_string(), "cpu 999 illegal or not free: no such cpu");
    let e = sc.cgroups().shield(&CpuSet::new()).unwrap_err();
    assert!(matches!(e, CgroupError::NoCpus), "{e}");
    let e = Cgroups::new(Hierarchy::detect().unwrap(), &sc.dir, "../etc")
        .shield(&online)
        .unwrap_err();
    assert!(matches!(e, CgroupError::InvalidName(_)), "{e}");
    // Nothing was changed: no state file.
    assert_eq!(std::fs::read_dir(&sc.dir).unwrap().count(), 0);
}

#[test]
fn shield_takes_and_gives_back_cpu() {
    let Some(h) = hierarchy_or_skip(true) else {
        return;
    };
    let online = cgroup::online_cpus().unwrap();
    if online.len() < 2 {
        skip_or_fail("needs 2 online CPUs");
        return;
    }
    let _lock = host_lock();
    let sc = Scratch::new();
    let cpu = online.iter().last().unwrap();
    let taken: CpuSet = [cpu].into_iter().collect();
    let other = online.iter().next().unwrap() as usize;

    // A thread pinned by the user to the CPU we take, and an unpinned one.
    let pinned = TestThread::spawn(false, Some(cpu as usize));
    let free = TestThread::spawn(false, None);
    let pinned_before = affinity(pinned.tid);
    let free_before = affinity(free.tid);

    let shield = sc.cgroups().shield(&taken).unwrap();
    let r = shield.report().clone();
    eprintln!(
        "shield {:?}: moved {} ({} kernel threads), refused {} ({} user tasks), vanished {}; \
         refused sample {:?}; unshielded {:?}; exclusive {}",
        r.mode,
        r.tasks.moved,
        r.tasks.moved_kernel,
        r.tasks.refused,
        r.tasks.refused_user,
        r.tasks.vanished,
        r.tasks.refused_sample,
        r.unshielded,
        r.exclusive
    );
    assert!(r.tasks.moved > 0);
    assert_eq!(r.tasks.refused_user, 0, "{:?}", r.tasks.refused_sample);
    assert!(shield.state_file().exists());
    if shield.mode() == ShieldMode::V1Shield {
        let host = shield.host_path().unwrap();
        let host_name = host.file_name().unwrap().to_str().unwrap();
        assert_eq!(cgroup_line(free.tid, "cpuset"), format!("/{host_name}"));
        assert_eq!(affinity(free.tid), vec![other]);
        // The kernel falls back to the cpuset for a thread pinned outside it.
        assert_eq!(affinity(pinned.tid), vec![other]);
    }

    // A second shield on the same CPU is refused.
    let sc2 = Scratch::new();
    let e = sc2.cgroups().shield(&taken).unwrap_err();
    assert!(
        matches!(e, CgroupError::CpuInUse { cpu: c, .. } if c == cpu),
        "{e}"
    );
    assert!(e
        .to_string()
        .contains(&format!("cpu {cpu} illegal or not free")));

    // Our own thread can run on the pool.
    let worker = TestThread::spawn(false, None);
    shield.attach(worker.tid).unwrap();
    assert_eq!(affinity(worker.tid), vec![cpu as usize]);

    let back = shield.release().unwrap();
    eprintln!("released: {} tasks moved back", back.moved);
    assert!(back.moved > 0); // tasks may exit meanwhile: no exact count
    assert!(!h
        .cpuset
        .as_ref()
        .unwrap()
        .mount
        .join(format!("{}.host", sc.prefix))
        .exists());
    assert!(!h
        .cpuset
        .as_ref()
        .unwrap()
        .mount
        .join(format!("{}.pool", sc.prefix))
        .exists());
    assert_eq!(std::fs::read_dir(&sc.dir).unwrap().count(), 0);
    assert_eq!(cgroup_line(free.tid, "cpuset"), "/");
    assert_eq!(cgroup_line(worker.tid, "cpuset"), "/");
    // User affinities survive the round trip (Linux ≥ 6.2 keeps them).
    assert_eq!(affinity(free.tid), free_before);
    assert_eq!(affinity(pinned.tid), pinned_before);
    assert!(pinned.progress() > 0);
}

#[test]
fn shield_drop_gives_back() {
    let Some(h) = hierarchy_or_skip(true) else {
        return;
    };
    let online = cgroup::online_cpus().unwrap();
    if online.len() < 2 {
        skip_or_fail("needs 2 online CPUs");
        return;
    }
    let _lock = host_lock();
    let sc = Scratch::new();
    let taken: CpuSet = [online.iter().last().unwrap()].into_iter().collect();
    let pool = h
        .cpuset
        .as_ref()
        .unwrap()
        .mount
        .join(format!("{}.pool", sc.prefix));
    let r = std::panic::catch_unwind(|| {
        let _shield = sc.cgroups().shield(&taken).unwrap();
        assert!(pool.exists());
        panic!("deliberate");
    });
    assert!(r.is_err());
    assert!(!pool.exists());
    assert_eq!(cgroup_line(gettid(), "cpuset"), "/");
    let rep = cgroup::repair_named(&sc.dir, &sc.prefix).unwrap();
    assert!(rep.is_clean(), "{rep:?}");
}

#[test]
fn freezer_stops_single_thread_of_process() {
    let Some(h) = hierarchy_or_skip(false) else {
        return;
    };
    let ctl = h.freezer.clone().unwrap();
    if ctl.version != CgroupVersion::V1 {
        // Not strict: v2 freezes whole processes only, and a v2 host is as
        // right for CI as a v1 one (tests/cgroup_v2.rs covers v2).
        skip_plain("single-thread freezing needs the v1 freezer (found v2)");
        return;
    }
    let sc = Scratch::new();
    let spinner = TestThread::spawn(true, None);
    let origin = cgroup_line(spinner.tid, "freezer");
    let mut fz = sc.cgroups().freezer("dom1").unwrap();
    fz.add_thread(spinner.tid).unwrap();
    let name = format!("/{}.dom1", sc.prefix);
    assert_eq!(cgroup_line(spinner.tid, "freezer"), name);
    // Only that thread moved: this thread stays where it was.
    assert_eq!(cgroup_line(gettid(), "freezer"), origin);

    let took = fz.freeze().unwrap();
    assert!(fz.is_frozen().unwrap());
    let p0 = spinner.progress();
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(spinner.progress(), p0, "frozen thread made progress");
    let mine = Instant::now();
    while mine.elapsed() < Duration::from_millis(5) {} // the process still runs
    let thawed = fz.thaw().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(spinner.progress() > p0, "thawed thread made no progress");
    eprintln!("single thread of a multi-threaded process: freeze {took:?}, thaw {thawed:?}");

    fz.remove().unwrap();
    assert_eq!(cgroup_line(spinner.tid, "freezer"), origin);
    assert!(!ctl.mount.join(&name[1..]).exists());
    assert!(!ctl.mount.join(format!("{}~keep", &name[1..])).exists());
    assert_eq!(std::fs::read_dir(&sc.dir).unwrap().count(), 0);
}

#[test]
fn freezer_drop_thaws_and_restores() {
    let Some(h) = hierarchy_or_skip(false) else {
        return;
    };
    if h.freezer.as_ref().unwrap().version != CgroupVersion::V1 {
        skip_plain("needs the v1 freezer (found v2)"); // as above: not strict
        return;
    }
    let sc = Scratch::new();
    let spinner = TestThread::spawn(true, None);
    let path;
    {
        let mut fz = sc.cgroups().freezer("drop").unwrap();
        path = fz.path().to_path_buf();
        fz.add_thread(spinner.tid).unwrap();
        fz.freeze().unwrap();
    }
    assert!(!path.exists());
    let p0 = spinner.progress();
    std::thread::sleep(Duration::from_millis(20));
    assert!(spinner.progress() > p0);
    assert_eq!(cgroup_line(spinner.tid, "freezer"), "/");
    drop(spinner); // joins: it is not frozen
}

#[test]
fn measure_freezer_latency() {
    let Some(h) = hierarchy_or_skip(false) else {
        return;
    };
    if h.freezer.as_ref().unwrap().version != CgroupVersion::V1 {
        skip_plain("needs the v1 freezer (found v2)"); // as above: not strict
        return;
    }
    // Not while a shield squeezes every task onto one CPU.
    let _lock = host_lock();
    let s = cgroup::measure_freezer(200).unwrap();
    eprintln!("freezer: freeze  {}", s.freeze);
    eprintln!("freezer: stopped {}", s.stopped);
    eprintln!("freezer: thaw    {}", s.thaw);
    eprintln!("freezer: resumed {}", s.resumed);
    assert!(s.freeze.n > 0);
    assert!(s.freeze.p50 < Duration::from_millis(100));
}

/// Tiny adapter: SCHED_FIFO priority 1 or SCHED_IDLE for thread `tid`.
#[allow(unsafe_code)]
fn set_fifo_or_idle(tid: i32, fifo: bool) -> io::Result<()> {
    let (policy, prio) = if fifo {
        (libc::SCHED_FIFO, 1)
    } else {
        (libc::SCHED_IDLE, 0)
    };
    let param = libc::sched_param {
        sched_priority: prio,
    };
    // SAFETY: `param` is a valid, initialised sched_param that outlives the
    // call; the kernel only reads it.
    let rc = unsafe { libc::sched_setscheduler(tid, policy, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[test]
fn measure_priority_flip_latency() {
    if !is_root() {
        skip_or_fail("needs root for SCHED_FIFO");
        return;
    }
    let online = cgroup::online_cpus().unwrap();
    if online.len() < 2 {
        skip_or_fail("needs 2 online CPUs");
        return;
    }
    let _lock = host_lock();
    let cpu = online.iter().last().unwrap();
    let s = cgroup::measure_priority_flip(200, cpu, set_fifo_or_idle).unwrap();
    eprintln!("flip: to idle, stopped after {}", s.stop);
    eprintln!("flip: to fifo, running after {}", s.start);
    eprintln!("flip: not stopped within 20 ms: {}", s.not_stopped);
    assert!(s.start.n > 0);
}

const CHILD_ENV: &str = "GANG_CGROUP_CRASH_CHILD";
const READY: &str = "GANG-CRASH-CHILD-READY";

/// Not a test on its own: the child of `repair_after_kill9` (it does nothing
/// unless the environment says so). It takes a shield and a freezer holding
/// one of its frozen threads, says it is ready and waits to be killed.
#[test]
fn crash_child() {
    let Ok(arg) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (prefix, dir) = arg.split_once(':').unwrap();
    let dir = Path::new(dir);
    let online = cgroup::online_cpus().unwrap();
    let taken: CpuSet = [online.iter().last().unwrap()].into_iter().collect();
    let cgroups = Cgroups::new(Hierarchy::detect().unwrap(), dir, prefix);
    let shield = cgroups.shield(&taken).unwrap();
    let spinner = TestThread::spawn(false, None);
    let mut fz = cgroups.freezer("crash").unwrap();
    fz.add_thread(spinner.tid).unwrap();
    fz.freeze().unwrap();
    println!("\n{READY}");
    // The parent kills us. If it does not, give everything back.
    std::thread::sleep(Duration::from_secs(10));
    drop(fz);
    drop(shield);
}

/// Kills the child on every path (before `Scratch` repairs).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let deadline = Instant::now() + Duration::from_secs(2);
        while pid_running(self.0.id()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn pid_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(')').next().unwrap_or("").split_whitespace().next();
            !matches!(state, Some("Z" | "X"))
        })
        .unwrap_or(false)
}

#[test]
fn repair_after_kill9() {
    let Some(h) = hierarchy_or_skip(true) else {
        return;
    };
    if cgroup::online_cpus().unwrap().len() < 2 {
        skip_or_fail("needs 2 online CPUs");
        return;
    }
    let _lock = host_lock();
    let sc = Scratch::new();
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, format!("{}:{}", sc.prefix, sc.dir.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in io::BufRead::lines(io::BufReader::new(stdout)) {
            let Ok(line) = line else { break };
            if line.contains(READY) {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("child did not get ready");
    let cs = h.cpuset.as_ref().unwrap().mount.clone();
    let fz = h.freezer.as_ref().unwrap().mount.clone();
    let host = cs.join(format!("{}.host", sc.prefix));
    let frz = fz.join(format!("{}.crash", sc.prefix));
    assert!(host.exists() && frz.exists());
    child.0.kill().unwrap(); // SIGKILL
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_running(pid) {
        assert!(Instant::now() < deadline, "killed child still runs");
        std::thread::sleep(Duration::from_millis(5));
    }

    // A frozen thread holds its killed process (a zombie) until thawed:
    // repair thaws it.
    let rep = cgroup::repair_named(&sc.dir, &sc.prefix).unwrap();
    eprintln!("repair after kill -9: {rep:?}");
    assert_eq!(rep.state_files.len(), 2, "{rep:?}");
    assert!(!host.exists() && !frz.exists());
    assert!(!cs.join(format!("{}.pool", sc.prefix)).exists());
    assert_eq!(cgroup_line(gettid(), "cpuset"), "/");
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "killed child did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }

    // Idempotent.
    let again = cgroup::repair_named(&sc.dir, &sc.prefix).unwrap();
    assert!(again.is_clean(), "{again:?}");
}

#[test]
fn repair_removes_orphan_cgroups_without_state() {
    let Some(h) = hierarchy_or_skip(false) else {
        return;
    };
    let sc = Scratch::new();
    let ctl = h.freezer.clone().unwrap();
    let orphan = ctl.mount.join(format!("{}.orphan", sc.prefix));
    std::fs::create_dir(&orphan).unwrap();
    // A live owner's state is left alone.
    let live = sc.cgroups().freezer("live").unwrap();
    let rep = cgroup::repair_named(&sc.dir, &sc.prefix).unwrap();
    assert_eq!(rep.cgroups_removed, vec![orphan.clone()]);
    assert_eq!(rep.live.len(), 1);
    assert!(!orphan.exists());
    assert!(live.path().exists());
    live.remove().unwrap();
    assert!(cgroup::repair_named(&sc.dir, &sc.prefix)
        .unwrap()
        .is_clean());
}

#[test]
fn repair_reports_unreadable_state_and_goes_on() {
    let sc = Scratch::new();
    let bad = sc.dir.join(format!("cgroup-shield-{}.json", sc.prefix));
    std::fs::write(&bad, "{ not json").unwrap();
    let rep = cgroup::repair_named(&sc.dir, &sc.prefix).unwrap();
    assert_eq!(rep.unreadable.len(), 1, "{rep:?}");
    assert!(rep.unreadable[0].1.contains(bad.to_str().unwrap()));
    assert!(bad.exists(), "an unreadable state file is left for a human");
    std::fs::remove_file(&bad).unwrap();
}

#[test]
fn v2_freezer_moves_single_threaded_process_not_single_thread() {
    if !is_root() {
        return skip_or_fail("needs root");
    }
    let h = Hierarchy::detect().unwrap();
    let Some(mount) = h.unified.clone() else {
        // Not strict: a v1-only host mounts no cgroup2 (layout, not lack).
        return skip_plain("no cgroup v2 hierarchy");
    };
    let ctl = cgroup::Controller {
        version: CgroupVersion::V2,
        mount,
    };
    let sc = Scratch::new();
    let mut fz = match Cgroups::new(Hierarchy::of_freezer(ctl), &sc.dir, &sc.prefix).freezer("v2") {
        Ok(f) => f,
        Err(e) => {
            // Strict: root and a mounted cgroup2 should allow it.
            return skip_or_fail(&format!("cannot create a v2 cgroup: {e}"));
        }
    };
    if !fz.path().join("cgroup.freeze").exists() {
        // Not strict: the kernel's version, not something CI lacks.
        return skip_plain("no cgroup.freeze (Linux < 5.2)");
    }
    // One thread of this multi-threaded process: refused on v2.
    let t = TestThread::spawn(false, None);
    let e = fz.add_thread(t.tid).unwrap_err();
    eprintln!("v2, single thread of a multi-threaded process: {e}");
    assert!(matches!(e, CgroupError::Move { .. }));
    assert!(fz.threads().is_empty());

    // A single-threaded process moves whole, freezes and comes back.
    let child = KillOnDrop(Command::new("sleep").arg("10").spawn().unwrap());
    let pid = child.0.id() as i32;
    // Only the v2 line: a concurrent shield test may move it in cpuset v1.
    let v2_line = || {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("0::"))
            .unwrap()
            .to_string()
    };
    let origin = v2_line();
    fz.add_thread(pid).unwrap();
    let took = fz.freeze().unwrap();
    assert!(fz.is_frozen().unwrap());
    let thawed = fz.thaw().unwrap();
    eprintln!("v2 cgroup.freeze of a process: freeze {took:?}, thaw {thawed:?}");
    fz.remove().unwrap();
    assert_eq!(v2_line(), origin);
}

#[test]
fn a_repair_leaves_other_instances_cgroups_alone() {
    let Some(_h) = hierarchy_or_skip(false) else {
        return;
    };
    // Two instances (a daemon, a `gang bench`), each with its state.
    let (a, b) = (Scratch::new(), Scratch::new());
    assert_ne!(cgroup::prefix_for(&a.dir), cgroup::prefix_for(&b.dir));
    let theirs = Cgroups::detect(&a.dir).unwrap().freezer("t1").unwrap();
    // b starts and repairs: a's fresh (still empty) freezer must survive.
    let rep = cgroup::repair(&b.dir).unwrap();
    assert!(
        !rep.cgroups_removed.contains(&theirs.path().to_path_buf()),
        "{rep:?}"
    );
    assert!(theirs.path().exists());
    let name = theirs
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with(&format!("{}.", cgroup::prefix_for(&a.dir))),
        "{name}"
    );
    theirs.remove().unwrap();
    assert!(cgroup::repair(&a.dir).unwrap().is_clean());
}
