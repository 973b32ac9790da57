//! Host processes as domains: starting a domain's command inside its
//! cgroups, telling a process apart from a later one with the same pid,
//! finding its vCPU threads, and reading what it used, from `/proc`.
//!
//! # Invariants
//!
//! * A process is identified by its pid *and* its start time (field 22 of
//!   `/proc/PID/stat`), never by pid alone: [`is_alive`] is false for a
//!   recycled pid.
//! * [`spawn`] puts the child into the domain's cgroups and on its CPUs
//!   *before* it executes the command, so a domain created paused never runs
//!   an instruction of its program before `unpause`, and a memory limit
//!   holds from the first page. The child leads a new process group, so
//!   signals reach everything the command started.
//! * vCPU threads are chosen deterministically: the threads whose name
//!   matches the pattern (every thread without one), in TID order, the first
//!   `vcpus` of them.
//!
//! The only unsafe code is the `pre_exec` hook of [`spawn`], which calls
//! async-signal-safe system calls only.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gang_core::{CpuId, CpuSet};
use gang_host::{best_effort, proc};

use crate::store::ProcessIdentity;

/// A thread or process id.
pub type Tid = i32;

/// Why a process operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The domain's command could not be started.
    #[error("cannot start `{command}`: {source}")]
    Spawn {
        /// The command, as configured.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// The console file could not be opened.
    #[error("console file {path}: {source}")]
    Console {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// No such process.
    #[error("process {0} does not exist")]
    NoProcess(i32),
    /// The process ended before its vCPU threads could be found.
    #[error("process {pid} ended before its {vcpus} vCPU thread(s) appeared")]
    Ended {
        /// The process.
        pid: i32,
        /// How many were expected.
        vcpus: u32,
    },
    /// Not enough matching threads appeared in time.
    #[error(
        "process {pid} has {found} thread(s){matching} after {waited:?}, the domain has {vcpus} \
         vCPU(s): set `vcpus` to the number of threads or `vcpu_threads` to a pattern of their \
         names"
    )]
    TooFewThreads {
        /// The process.
        pid: i32,
        /// Threads found.
        found: usize,
        /// `" matching 'PATTERN'"` or empty.
        matching: String,
        /// vCPUs configured.
        vcpus: u32,
        /// How long we waited.
        waited: Duration,
    },
}

type Result<T, E = ProcessError> = std::result::Result<T, E>;

/// The state letter and start time of a process or of one of its threads.
fn stat_of(pid: i32, tid: Option<Tid>) -> Option<(char, u64)> {
    let stat = proc::stat(pid, tid)?;
    Some((stat.state, stat.start_time?))
}

/// The identity of a live process (not a zombie).
pub fn identity(pid: i32) -> Option<ProcessIdentity> {
    gang_host::cgroup::Owner::of_pid(pid).map(|o| ProcessIdentity {
        pid: pid as u32,
        start_time: o.start_time,
    })
}

/// The identity of a process that may have exited already but is not yet
/// reaped (a zombie child of ours).
pub fn identity_or_zombie(pid: i32) -> Option<ProcessIdentity> {
    let (_, start_time) = stat_of(pid, None)?;
    Some(ProcessIdentity {
        pid: pid as u32,
        start_time,
    })
}

/// Whether the process is still the one identified (not exited, not a
/// zombie, pid not reused).
pub fn is_alive(id: &ProcessIdentity) -> bool {
    identity(id.pid as i32).is_some_and(|now| now.start_time == id.start_time)
}

/// The start time of thread `tid` of process `pid`, if it exists.
pub fn thread_start(pid: i32, tid: Tid) -> Option<u64> {
    stat_of(pid, Some(tid)).map(|(_, s)| s)
}

/// The state letter of a thread (`R`, `S`, `D`, ...).
pub fn thread_state(pid: i32, tid: Tid) -> Option<char> {
    stat_of(pid, Some(tid)).map(|(s, _)| s)
}

/// The CPU a thread last ran on (field 39 of its stat).
pub fn thread_cpu(pid: i32, tid: Tid) -> Option<CpuId> {
    proc::stat(pid, Some(tid))?.processor
}

/// The processes descended from `pid` (children, their children, ...), from
/// the parent field of every process's stat.
pub fn descendants(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(i32, i32)> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|p| Some((p, proc::stat(p, None)?.ppid)))
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|&&(_, pp)| pp == parent)
                .map(|&(p, _)| p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// The threads of a process with their names, in TID order.
pub fn threads(pid: i32) -> Vec<(Tid, String)> {
    proc::threads(pid)
        .into_iter()
        .map(|tid| {
            let comm = proc::comm(pid, Some(tid)).unwrap_or_default();
            (tid, comm.trim_end().to_string())
        })
        .collect()
}

/// CPU time of a thread or process so far, ns (`schedstat`'s first field;
/// for a process, the sum over its live threads).
pub fn cpu_time_ns(pid: i32, tid: Option<Tid>) -> u64 {
    let one = |t: Tid| proc::schedstat_ns(pid, t).unwrap_or(0);
    match tid {
        Some(t) => one(t),
        None => threads(pid).iter().map(|&(t, _)| one(t)).sum(),
    }
}

/// Shell-style name matching (the `glob` crate's patterns: `*` any run,
/// `?` one character, `[...]` a class, anything else itself). A malformed
/// pattern matches nothing (the config parser refuses one).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    glob::Pattern::new(pattern).is_ok_and(|p| p.matches(name))
}

/// The vCPU threads of `pid` now: the first `vcpus` threads whose name
/// matches `pattern` (all threads without one), in TID order; `None` while
/// there are fewer.
pub fn select_vcpu_threads(pid: i32, vcpus: u32, pattern: Option<&str>) -> Option<Vec<Tid>> {
    let matching: Vec<Tid> = threads(pid)
        .into_iter()
        .filter(|(_, comm)| pattern.is_none_or(|p| glob_match(p, comm)))
        .map(|(t, _)| t)
        .collect();
    (matching.len() >= vcpus as usize).then(|| matching[..vcpus as usize].to_vec())
}

/// Waits (up to `timeout`) until the process has its vCPU threads.
pub fn wait_vcpu_threads(
    id: &ProcessIdentity,
    vcpus: u32,
    pattern: Option<&str>,
    timeout: Duration,
) -> Result<Vec<Tid>> {
    let pid = id.pid as i32;
    let start = Instant::now();
    loop {
        if !is_alive(id) {
            return Err(ProcessError::Ended { pid, vcpus });
        }
        if let Some(t) = select_vcpu_threads(pid, vcpus, pattern) {
            return Ok(t);
        }
        if start.elapsed() > timeout {
            let found = threads(pid)
                .iter()
                .filter(|(_, c)| pattern.is_none_or(|p| glob_match(p, c)))
                .count();
            return Err(ProcessError::TooFewThreads {
                pid,
                found,
                matching: pattern.map_or_else(String::new, |p| format!(" matching '{p}'")),
                vcpus,
                waited: timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Sets the CPU affinity of every thread of a process (best effort: see
/// [`set_thread_affinity`]).
pub fn set_process_affinity(pid: i32, cpus: &CpuSet) {
    let list: Vec<CpuId> = cpus.iter().collect();
    for (tid, _) in threads(pid) {
        set_thread_affinity(tid, &list);
    }
}

/// Sets the CPU affinity of a thread, best effort: a thread that exited
/// since it was listed is fine, any other failure is logged.
pub fn set_thread_affinity(tid: i32, cpus: &[CpuId]) {
    match gang_host::sys::set_affinity(tid, cpus) {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error()) => {}
        r => {
            best_effort(format_args!("setting the CPUs of thread {tid}"), r);
        }
    }
}

/// What to run: an argument vector, or a line for `/bin/sh -c`.
#[derive(Debug, Clone)]
pub enum Program {
    /// `["prog", "arg", ...]`.
    Argv(Vec<String>),
    /// A shell command line.
    Line(String),
}

impl Program {
    fn describe(&self) -> String {
        match self {
            Program::Argv(v) => v.join(" "),
            Program::Line(l) => l.clone(),
        }
    }
}

/// Who a spawned program runs as: a user and group other than the
/// daemon's (root), resolved before the fork (the child cannot read files
/// between `fork` and `exec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The user's name (for `HOME`, `USER`, `LOGNAME`), if a user was given.
    pub name: Option<String>,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary groups (the user's, or none).
    pub groups: Vec<u32>,
    /// The user's home directory, if a user was given.
    pub home: Option<String>,
}

/// One line of /etc/passwd or /etc/group, split at `:`.
fn db_entries(file: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(':').map(str::to_owned).collect())
        .collect()
}

impl RunAs {
    /// Resolves `user` and `group` (names, or numeric ids) from
    /// /etc/passwd and /etc/group; `None` when neither is given (root, as
    /// the daemon). A user brings its primary group and the groups that
    /// list it as a member; `group` replaces the primary group. An unknown
    /// name is an error that names it.
    pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Option<RunAs>, String> {
        if user.is_none() && group.is_none() {
            return Ok(None);
        }
        let passwd = db_entries("/etc/passwd");
        let groups = db_entries("/etc/group");
        let mut run_as = RunAs {
            name: None,
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            home: None,
        };
        if let Some(user) = user {
            let entry = passwd.iter().find(|e| e[0] == user).or_else(|| {
                passwd
                    .iter()
                    .find(|e| e.get(2).map(String::as_str) == Some(user))
            });
            match entry {
                Some(e) if e.len() >= 4 => {
                    let id = |i: usize| {
                        e[i].parse::<u32>().map_err(|_| {
                            format!(
                                "user '{user}': /etc/passwd has no number in field {}",
                                i + 1
                            )
                        })
                    };
                    run_as.uid = id(2)?;
                    run_as.gid = id(3)?;
                    run_as.name = Some(e[0].clone());
                    run_as.home = e.get(5).cloned();
                    run_as.groups = groups
                        .iter()
                        .filter(|g| g.get(3).is_some_and(|m| m.split(',').any(|m| m == e[0])))
                        .filter_map(|g| g.get(2)?.parse().ok())
                        .collect();
                }
                Some(_) => return Err(format!("user '{user}': unreadable /etc/passwd entry")),
                None => match user.parse::<u32>() {
                    Ok(uid) => {
                        run_as.uid = uid;
                        run_as.gid = uid;
                    }
                    Err(_) => {
                        return Err(format!("user '{user}' does not exist (see /etc/passwd)"))
                    }
                },
            }
        }
        if let Some(group) = group {
            let entry = groups.iter().find(|g| g[0] == group).or_else(|| {
                groups
                    .iter()
                    .find(|g| g.get(2).map(String::as_str) == Some(group))
            });
            run_as.gid = match entry.and_then(|g| g.get(2)?.parse().ok()) {
                Some(gid) => gid,
                None => group
                    .parse::<u32>()
                    .map_err(|_| format!("group '{group}' does not exist (see /etc/group)"))?,
            };
        }
        if !run_as.groups.contains(&run_as.gid) {
            run_as.groups.insert(0, run_as.gid);
        }
        Ok(Some(run_as))
    }
}

/// Opens (creating) a domain's console file for appending.
pub fn open_console(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ProcessError::Console {
            path: dir.display().to_string(),
            source,
        })?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| ProcessError::Console {
            path: path.display().to_string(),
            source,
        })
}

/// Starts `program` with its standard output and error appended to
/// `console`, standard input from /dev/null, in a new process group, inside
/// the cgroups whose `cgroup.procs` files are `cgroups`, on `cpus`.
///
/// With a `start_gate`, a FIFO is made at that path and the program waits
/// in a shell for [`open_start_gate`] before it is executed: a domain
/// created paused runs nothing of its program until unpaused. (It cannot be
/// frozen before `exec` instead: `spawn` waits for the `exec`.)
pub fn spawn(
    program: &Program,
    console: &Path,
    cgroups: &[CString],
    cpus: &CpuSet,
    start_gate: Option<&Path>,
) -> Result<Child> {
    spawn_as(program, console, cgroups, cpus, start_gate, None)
}

/// [`spawn`], run as `run_as` (`None`: as the daemon, root). The child
/// joins its cgroups and CPUs as root, then sets its supplementary groups,
/// its group, and last its user, before `exec`; `HOME`, `USER` and
/// `LOGNAME` are the user's. The console is opened by the daemon, so it
/// stays writable; the start gate is the child's standard input (opened
/// by the daemon), so the child needs no path in the state directory.
pub fn spawn_as(
    program: &Program,
    console: &Path,
    cgroups: &[CString],
    cpus: &CpuSet,
    start_gate: Option<&Path>,
    run_as: Option<&RunAs>,
) -> Result<Child> {
    let out = open_console(console)?;
    let err = out.try_clone().map_err(|source| ProcessError::Console {
        path: console.display().to_string(),
        source,
    })?;
    let argv: Vec<String> = match program {
        Program::Argv(v) => v.clone(),
        Program::Line(l) => vec!["/bin/sh".into(), "-c".into(), l.clone()],
    };
    let mut gate = None;
    let argv = match start_gate {
        None => argv,
        Some(fifo) => {
            // A stale gate from an earlier start goes; none is the usual case.
            match std::fs::remove_file(fifo) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(ProcessError::Spawn {
                        command: program.describe(),
                        source: e,
                    })
                }
                _ => {}
            }
            rustix::fs::mknodat(
                rustix::fs::CWD,
                fifo,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o600),
                0,
            )
            .map_err(|e| ProcessError::Spawn {
                command: program.describe(),
                source: e.into(),
            })?;
            // Read and write: the open does not wait for a writer, and
            // the shell's read sees no end of file before the gate opens
            // (Linux's FIFO semantics, fifo(7)).
            let fd = rustix::fs::open(
                fifo,
                rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| ProcessError::Spawn {
                command: program.describe(),
                source: e.into(),
            })?;
            gate = Some(fd);
            let mut w = vec![
                "/bin/sh".to_string(),
                "-c".into(),
                "read _ && exec \"$@\" < /dev/null".into(),
                "gang-start-gate".into(),
            ];
            w.extend(argv);
            w
        }
    };
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    cmd.stdin(gate.map_or_else(Stdio::null, Stdio::from))
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0);
    if let Some(r) = run_as {
        if let Some(name) = &r.name {
            cmd.env("USER", name).env("LOGNAME", name);
        }
        if let Some(home) = &r.home {
            cmd.env("HOME", home);
        }
    }
    // Everything the hook needs is prepared here, before the fork.
    let cgroups: Vec<CString> = cgroups.to_vec();
    let mut affinity = rustix::thread::CpuSet::new();
    for cpu in cpus.iter() {
        affinity.set(cpu as usize);
    }
    let identity = run_as.map(|r| {
        (
            rustix::process::Uid::from_raw(r.uid),
            rustix::process::Gid::from_raw(r.gid),
            r.groups
                .iter()
                .map(|&g| rustix::process::Gid::from_raw(g))
                .collect::<Vec<_>>(),
        )
    });
    let parent = rustix::process::getpid();
    // SAFETY: the hook runs in the forked child before exec, where only
    // async-signal-safe operations are allowed. It only makes system calls
    // (prctl, getppid, open, write, close, sched_setaffinity, setgroups,
    // setgid, setuid) through rustix, on data prepared before the fork (C
    // strings, a CPU set, ids); it allocates nothing and takes no lock. The
    // child has one thread, so rustix's per-thread credential calls change
    // the process.
    unsafe {
        cmd.pre_exec(move || {
            use rustix::fs::{open, Mode, OFlags};
            use rustix::process::{getppid, set_parent_process_death_signal, Signal};
            // Until it executes its program the child holds copies of the
            // daemon's descriptors (its listening socket, its state lock,
            // its CPU claims), and joining a cgroup can take a while: if
            // the daemon is killed meanwhile, the child ends with it
            // rather than run a program nobody recorded, and keep the
            // daemon's socket open for its successor to mistake for a
            // live daemon.
            set_parent_process_death_signal(Some(Signal::KILL))?;
            if getppid() != Some(parent) {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            for procs in &cgroups {
                let fd = open(procs.as_c_str(), OFlags::WRONLY, Mode::empty())?;
                // "0": the writing process itself.
                rustix::io::write(&fd, b"0")?;
            }
            if affinity.count() != 0 {
                rustix::thread::sched_setaffinity(None, &affinity)?;
            }
            // Groups first (setgroups and setgid need root), the user last.
            if let Some((uid, gid, groups)) = &identity {
                rustix::thread::set_thread_groups(groups)?;
                rustix::thread::set_thread_gid(*gid)?;
                rustix::thread::set_thread_uid(*uid)?;
            }
            // The program outlives the daemon.
            set_parent_process_death_signal(None)?;
            Ok(())
        });
    }
    cmd.spawn().map_err(|source| ProcessError::Spawn {
        command: program.describe(),
        source,
    })
}

/// Lets a program started with a start gate run (the process must be
/// thawed: its shell opens the FIFO then). Waits up to 5 s for the shell;
/// removes the FIFO.
pub fn open_start_gate(fifo: &Path, id: &ProcessIdentity) -> std::io::Result<()> {
    use rustix::fs::{open, Mode, OFlags};
    let deadline = Instant::now() + Duration::from_secs(5);
    let result = loop {
        match open(fifo, OFlags::WRONLY | OFlags::NONBLOCK, Mode::empty()) {
            Ok(fd) => {
                break rustix::io::write(&fd, b"go\n")
                    .map(|_| ())
                    .map_err(Into::into)
            }
            // No reader yet: the shell has not reached the FIFO.
            Err(rustix::io::Errno::NXIO) if Instant::now() < deadline && is_alive(id) => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => break Err(e.into()),
        }
    };
    best_effort(
        format_args!("removing the start gate {}", fifo.display()),
        std::fs::remove_file(fifo),
    );
    result
}

/// Sends `signal` to a process, or to its whole process group.
pub fn signal(pid: i32, group: bool, signal: rustix::process::Signal) -> std::io::Result<()> {
    let p = rustix::process::Pid::from_raw(pid).ok_or(std::io::ErrorKind::InvalidInput)?;
    if group {
        rustix::process::kill_process_group(p, signal)?;
    } else {
        rustix::process::kill_process(p, signal)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_a_shell() {
        assert!(glob_match("vcpu*", "vcpu0"));
        assert!(glob_match("CPU ?/KVM", "CPU 1/KVM"));
        assert!(glob_match("fc_vcpu *", "fc_vcpu 12"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(!glob_match("vcpu?", "vcpu10"));
        assert!(!glob_match("vcpu", "vcpu0"));
        assert!(glob_match("CPU [0-3]/KVM", "CPU 2/KVM"));
        assert!(!glob_match("CPU [0-3]/KVM", "CPU 7/KVM"));
        assert!(!glob_match("[", "["), "malformed: nothing");
    }

    #[test]
    fn a_process_is_known_by_pid_and_start_time() {
        let me = identity(std::process::id() as i32).expect("self");
        assert!(is_alive(&me));
        let other = ProcessIdentity {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!is_alive(&other), "same pid, another start time");
        assert!(identity(i32::MAX).is_none());
    }

    #[test]
    fn vcpu_threads_are_the_first_matching_threads_in_tid_order() {
        let pid = std::process::id() as i32;
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::Builder::new()
            .name("vcpuX".into())
            .spawn(move || {
                // Parks until the test drops its sender: the error is the
                // signal to end.
                while rx.recv().is_ok() {}
            })
            .expect("thread");
        let me = identity(pid).expect("self");
        let found = wait_vcpu_threads(&me, 1, Some("vcpuX"), Duration::from_secs(5)).unwrap();
        assert_eq!(
            threads(pid).iter().find(|t| t.0 == found[0]).unwrap().1,
            "vcpuX"
        );
        let e = wait_vcpu_threads(&me, 2, Some("vcpuX"), Duration::from_millis(20)).unwrap_err();
        assert!(
            e.to_string().contains("has 1 thread(s) matching 'vcpuX'"),
            "{e}"
        );
        let all = select_vcpu_threads(pid, 1, None).unwrap();
        assert_eq!(all, vec![pid], "without a pattern, the main thread first");
        drop(tx);
        worker.join().unwrap();
        assert!(cpu_time_ns(pid, None) > 0);
    }

    #[test]
    fn a_spawned_command_writes_to_its_console_and_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let console = dir.path().join("c.log");
        let mut child = spawn(
            &Program::Line("echo hello; echo oops >&2".into()),
            &console,
            &[],
            &CpuSet::new(),
            None,
        )
        .unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(std::fs::read_to_string(&console).unwrap(), "hello\noops\n");
        let e = spawn(
            &Program::Argv(vec!["/nonexistent/prog".into()]),
            &console,
            &[],
            &CpuSet::new(),
            None,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot start `/nonexistent/prog`"),
            "{e}"
        );
    }

    #[test]
    fn users_and_groups_are_resolved_before_the_fork() {
        assert_eq!(RunAs::resolve(None, None), Ok(None));
        let root = RunAs::resolve(Some("root"), None).unwrap().unwrap();
        assert_eq!(
            (root.uid, root.gid, root.name.as_deref()),
            (0, 0, Some("root"))
        );
        assert!(root.groups.contains(&0));
        let e = RunAs::resolve(Some("no-such-user-here"), None).unwrap_err();
        assert_eq!(
            e,
            "user 'no-such-user-here' does not exist (see /etc/passwd)"
        );
        let e = RunAs::resolve(Some("root"), Some("no-such-group-here")).unwrap_err();
        assert_eq!(
            e,
            "group 'no-such-group-here' does not exist (see /etc/group)"
        );
        let numeric = RunAs::resolve(Some("4242"), Some("4343")).unwrap().unwrap();
        assert_eq!(
            (numeric.uid, numeric.gid, numeric.groups),
            (4242, 4343, vec![4343])
        );
    }

    #[test]
    fn a_program_runs_as_its_user_and_group_gated_or_not() {
        if !rustix::process::geteuid().is_root() {
            return; // only root can become another user
        }
        let run_as = RunAs {
            name: Some("gang-test".into()),
            uid: 4242,
            gid: 4343,
            groups: vec![4343, 4444],
            home: Some("/nonexistent".into()),
        };
        let dir = tempfile::tempdir().unwrap();
        for gated in [false, true] {
            let console = dir.path().join(format!("c{gated}.log"));
            let gate = dir.path().join("gate");
            let mut child = spawn_as(
                &Program::Line("echo $(id -u) $(id -g) $(id -G) $USER $HOME".into()),
                &console,
                &[],
                &CpuSet::new(),
                gated.then_some(gate.as_path()),
                Some(&run_as),
            )
            .unwrap();
            if gated {
                let id = identity(child.id() as i32).unwrap();
                open_start_gate(&gate, &id).unwrap();
            }
            assert!(child.wait().unwrap().success());
            assert_eq!(
                std::fs::read_to_string(&console).unwrap(),
                "4242 4343 4343 4444 gang-test /nonexistent\n",
                "gated: {gated}"
            );
        }
    }

    #[test]
    fn a_gated_program_waits_for_its_gate_before_it_runs() {
        let dir = tempfile::tempdir().unwrap();
        let (console, gate, ran) = (
            dir.path().join("c.log"),
            dir.path().join("gate"),
            dir.path().join("ran"),
        );
        let mut child = spawn(
            &Program::Argv(vec!["touch".into(), ran.display().to_string()]),
            &console,
            &[],
            &CpuSet::new(),
            Some(&gate),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(!ran.exists(), "ran before its gate opened");
        let id = identity(child.id() as i32).unwrap();
        open_start_gate(&gate, &id).unwrap();
        assert!(child.wait().unwrap().success());
        assert!(ran.exists() && !gate.exists());
    }

    #[test]
    fn a_program_outlives_the_thread_that_started_it() {
        // The daemon starts programs from a connection's thread, which ends
        // with the connection; the child's guard against its parent's death
        // (a parent-death signal while it prepares) must be gone by then.
        let dir = tempfile::tempdir().unwrap();
        let console = dir.path().join("c.log");
        let mut child = std::thread::spawn(move || {
            spawn(
                &Program::Argv(vec!["sleep".into(), "30".into()]),
                &console,
                &[],
                &CpuSet::new(),
                None,
            )
            .unwrap()
        })
        .join()
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let ended = child.try_wait().unwrap();
        best_effort("killing the test's program", child.kill());
        best_effort("reaping the test's program", child.wait());
        assert_eq!(ended, None, "the program ended with its starting thread");
    }
}
