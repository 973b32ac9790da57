//! The harness of the end-to-end tests: a private `gang daemon` (its own
//! state directory, socket and cgroup namespace) and the CLI run against it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

// Not every test binary uses each.
#[allow(unused_imports)]
pub use gang_testkit::host::{host_required, skip_or_fail, skip_plain};

pub struct Daemon {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
    /// Cleared by [`Daemon::kill9`]: what the daemon left is for the next
    /// daemon to find, not for the harness to remove.
    clean_up: bool,
}

pub fn start(dir: &Path) -> Daemon {
    start_with(dir, &[])
}

/// A daemon with more options (`--socket-group G`, ...).
pub fn start_with(dir: &Path, extra: &[&str]) -> Daemon {
    let socket = dir.join("gang.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_gang"))
        .args(["daemon"])
        .args(extra)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--socket")
        .arg(&socket)
        // Inherited by every domain process it starts: found and killed by
        // the harness if a test fails half-way.
        .env("GANG_TEST_MARKER", dir)
        // Its log, kept with the test's files (printed if the test fails
        // while the directory is kept).
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("daemon.log"))
                .expect("daemon log"),
        )
        .spawn()
        .expect("daemon starts");
    // Generous: other tests' gang pools may hold both CPUs at real-time
    // priority, leaving a starting daemon only the host's slot.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !answers(&socket) {
        assert!(
            Instant::now() < deadline,
            "daemon did not listen; its log:\n{}",
            std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Daemon {
        child,
        dir: dir.to_path_buf(),
        socket,
        clean_up: true,
    }
}

/// Whether a daemon answers a request on `socket` (accepting a connection
/// is not enough: a child a killed daemon forked may hold its old listening
/// socket for a moment).
fn answers(socket: &Path) -> bool {
    let Ok(stream) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .is_ok()
        && gang_proto::Client::over(stream)
            .and_then(|mut c| c.call(gang_proto::RequestBody::Info))
            .is_ok()
}

impl Daemon {
    /// The state directory's parent (the test's directory).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn gang(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_gang"))
            .args(args)
            .env("GANG_SOCKET", &self.socket)
            .output()
            .unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.gang(args);
        assert!(
            out.status.success(),
            "gang {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn fails(&self, args: &[&str], message: &str) {
        let out = self.gang(args);
        assert_eq!(out.status.code(), Some(1), "gang {args:?} must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(message),
            "gang {args:?}: expected {message:?}, got {err:?}"
        );
    }

    pub fn kill9(mut self) -> PathBuf {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
        self.clean_up = false;
        self.dir.clone()
    }
}

impl Drop for Daemon {
    /// Stops the daemon as a service manager would (SIGTERM: domains given
    /// back), kills what its domains left running, and removes its cgroups.
    fn drop(&mut self) {
        if !self.clean_up {
            return;
        }
        let namespace = self
            .gang(&["info", "gang_cgroups"])
            .stdout
            .iter()
            .map(|&b| b as char)
            .collect::<String>()
            .trim()
            .to_string();
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_marked(&self.dir);
        remove_cgroups(&namespace);
    }
}

/// Kills the processes started by a daemon of the test in `dir`.
pub fn kill_marked(dir: &Path) {
    let marker = format!("GANG_TEST_MARKER={}", dir.display());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in procs.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if env.split(|&b| b == 0).any(|v| v == marker.as_bytes()) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// Removes the (emptied) cgroups of a daemon's namespace.
pub fn remove_cgroups(namespace: &str) {
    if !namespace.starts_with("gang-") {
        return; // never the system daemon's
    }
    for root in [
        "/sys/fs/cgroup/freezer",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/unified",
    ] {
        let Ok(dir) = std::fs::read_dir(root) else {
            continue;
        };
        for e in dir.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{namespace}."))
                || e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{namespace}-d"))
            {
                let path = e.path();
                let _ = std::fs::write(path.join("freezer.state"), "THAWED");
                // Processes a test adopted are still in there after the
                // daemon ended (it leaves them for its next start): back
                // to the root, so that the cgroup can go.
                let procs = std::fs::read_to_string(path.join("cgroup.procs")).unwrap_or_default();
                for p in procs.lines() {
                    let _ = std::fs::write(Path::new(root).join("cgroup.procs"), p);
                }
                for _ in 0..50 {
                    if std::fs::remove_dir(&path).is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

/// Whether this machine can run the host-side tests (root, 2 CPUs, cgroup
/// freezer); says why not ([`skip_or_fail`]).
pub fn can_run_domains() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0");
    if !root {
        skip_or_fail("needs root (cgroups, real-time priorities)");
        return false;
    }
    gang_host::cgroup::share_layout_for_this_process();
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        skip_or_fail("needs 2 CPUs");
        return false;
    }
    if !Path::new("/sys/fs/cgroup/freezer").exists()
        && !Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
    {
        skip_or_fail("no cgroup freezer");
        return false;
    }
    true
}

/// A fresh temporary directory for one test, removed by [`TestDir`]'s drop.
pub struct TestDir(pub PathBuf);

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let dir = std::env::temp_dir().join(format!("gang-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TestDir(dir)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// xorshift64*: small, seeded, good enough to pick requests, operations
/// and delays in the randomised tests (their seed replays them).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// In `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// One of `xs` (not empty).
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

/// The seed of a randomised test: `$var` if set (to replay a run), else
/// one from the clock (odd: xorshift needs a non-zero state).
pub fn seed_from(var: &str) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        })
}

/// The CPUs of an xl CPU list as the CLI prints them (`0-1,3`; empty:
/// none), through gang-core's parser.
pub fn parse_cpus(text: &str) -> std::collections::BTreeSet<u32> {
    let text = text.trim();
    if text.is_empty() {
        return Default::default();
    }
    gang_core::CpuSet::parse(text, None)
        .unwrap_or_else(|e| panic!("not a CPU list: {text:?}: {e}"))
        .iter()
        .collect()
}

/// A line for the person running the tests, past the harness's capture
/// (figures a test measured, the seed it used).
pub fn note(line: &str) {
    use std::io::Write as _;
    // Nothing to do if stderr is gone.
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

/// Waits (up to 20 s) until `f` holds; fails the test naming `what`.
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A domain's row in `gang list -c`: (state, pool).
pub fn list_row(d: &Daemon, name: &str) -> Option<(String, String)> {
    let out = d.ok(&["list", "-c"]);
    out.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[4].to_string(), f[6].to_string())
        })
}

#[derive(Debug, serde::Deserialize)]
pub struct Slot {
    pub vcpu: u32,
    pub cpu: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    /// How long after `start_ns` the slot really began (adopted threads:
    /// when they began to run).
    #[serde(default)]
    pub late_ns: u64,
}

impl Slot {
    /// When the slot really began.
    pub fn real_start(&self) -> u64 {
        self.start_ns + self.late_ns
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct Trace {
    pub slots: Vec<Slot>,
}

/// The domain's trace (waits until it has at least `min` slots).
pub fn trace(d: &Daemon, name: &str, min: usize) -> Trace {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t: Trace = serde_json::from_str(&d.ok(&["trace", name, "--json"])).unwrap();
        if t.slots.len() >= min || Instant::now() > deadline {
            return t;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Gang execution from the trace: at every boundary the vCPUs that ran
/// did so on distinct CPUs, and at the last 20 boundaries of vCPU 0 (the
/// callers' workloads keep every vCPU busy by then) every vCPU ran. An
/// adopted domain's trace holds only the slots its threads really ran in
/// (the kernel's scheduler events): a guest's vCPU idle while it boots
/// has none.
pub fn assert_gang(t: &Trace, vcpus: u32) {
    let firsts: Vec<&Slot> = t.slots.iter().filter(|s| s.vcpu == 0).collect();
    assert!(!firsts.is_empty(), "no slots: {t:?}");
    let recent = firsts.len().saturating_sub(20);
    for (i, s) in firsts.iter().enumerate() {
        for v in 1..vcpus {
            let partner = t
                .slots
                .iter()
                .find(|p| p.vcpu == v && p.start_ns == s.start_ns);
            match partner {
                Some(p) => assert_ne!(p.cpu, s.cpu, "two vCPUs of a gang on one CPU"),
                None => assert!(i < recent, "vCPU {v} missing in slot {s:?}"),
            }
        }
    }
}

/// Creates a gang pool named `name` on CPUs 0-1 shared with Pool-0 (how a
/// 2-vCPU gang runs on this 2-CPU machine).
pub fn shared_pool(d: &Daemon, name: &str) {
    d.ok(&[
        "cpupool-create",
        &format!("name=\"{name}\""),
        "sched=\"gang\"",
        "cpus=\"0-1\"",
        "shared=1",
    ]);
}

/// `gang console DOMAIN` with `input` typed into it; the caller kills it.
pub fn type_into_console(d: &Daemon, domain: &str, input: &[u8]) -> Child {
    use std::io::Write as _;
    let mut attached = Command::new(env!("CARGO_BIN_EXE_gang"))
        .args(["console", domain])
        .env("GANG_SOCKET", &d.socket)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = attached.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    attached
}

/// This test binary's tests one at a time, for those that measure
/// scheduling or hold both CPUs (another test's gang pool would disturb
/// them). Each test binary has its own lock; a failed test's poison is
/// ignored.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Waits for this binary's turn (see [`ONE_AT_A_TIME`]); the turn lasts as
/// long as the guard.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
