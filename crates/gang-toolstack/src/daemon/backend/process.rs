//! Host processes as domains (`type = "process"`): a command gang spawns
//! into the domain's cgroups, or a running process adopted by `pid`.
//!
//! Its vCPU threads are the first `vcpus` threads whose name matches
//! `vcpu_threads`, in TID order; a gang runtime adopts them (a freezer per
//! thread). Pause freezes the whole process (its domain cgroup); a shutdown
//! request is SIGTERM to the process group gang started (or to the adopted
//! process). Only what gang spawned is killed by `tear_down`. A spawned
//! command runs as the domain's `user` and `group` (names resolved before
//! anything is made; default root, as the daemon); adopted processes keep
//! their own.

use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gang_config::{Command, DomainConfig};
use gang_core::{CpuSet, DomainId};
use gang_host::runtime::Runtime;
use gang_proto::ApiError;
use rustix::process::Signal;

use super::{Backend, Ended, LiveRecord, StartFailed, THREAD_TIMEOUT};
use crate::daemon::{internal, refused};
use crate::domain_cgroup::DomainCgroup;
use crate::process::{self, Program, Tid};
use crate::store::ShutdownReason;

/// What starting a process domain gives: its (first) process, the child
/// handle when gang spawned it, whether it did, a job's other processes
/// and the cgroups adopted processes came from.
type Started = (
    crate::store::ProcessIdentity,
    Option<Child>,
    bool,
    Vec<crate::store::ProcessIdentity>,
    Vec<crate::domain_cgroup::Origin>,
);

/// A process domain's live side.
pub(in crate::daemon) struct ProcessBackend {
    /// Set when this daemon started the process (it can reap it and read
    /// its exit status).
    child: Option<Child>,
    cgroup: DomainCgroup,
    /// A whole program handed to a gang runtime: the runtime freezes and
    /// thaws the cgroup (in the domain's slots only), so pause must not.
    group_in_runtime: bool,
}

impl ProcessBackend {
    /// Starts the domain's command (or adopts its `pid`) in `cgroup`, on
    /// `cpus`; a domain created paused waits at a start gate, frozen.
    pub(in crate::daemon) fn start(
        cfg: &DomainConfig,
        cgroup: DomainCgroup,
        console: &Path,
        cpus: &CpuSet,
        paused: bool,
    ) -> Result<(ProcessBackend, LiveRecord), StartFailed> {
        let start_gate = (paused && cfg.command.is_some()).then(|| console.with_extension("start"));
        let started = match (&cfg.command, cfg.pid) {
            (Some(command), _) => {
                let program = match command {
                    Command::Argv(v) if !v.is_empty() => Program::Argv(v.clone()),
                    Command::Argv(_) => Program::Line(String::new()),
                    Command::Line(l) => Program::Line(l.clone()),
                };
                process::RunAs::resolve(cfg.user.as_deref(), cfg.group.as_deref())
                    .map_err(refused)
                    .and_then(|run_as| {
                        process::spawn_as(
                            &program,
                            console,
                            &cgroup.procs_files(),
                            cpus,
                            start_gate.as_deref(),
                            run_as.as_ref(),
                        )
                        .map_err(|e| refused(e.to_string()))
                    })
                    .and_then(|child| {
                        let pid = child.id() as i32;
                        // It may have ended already: its exit is handled like
                        // any other (on_poweroff, on_crash).
                        match process::identity_or_zombie(pid) {
                            Some(identity) => {
                                Ok((identity, Some(child), true, Vec::new(), Vec::new()))
                            }
                            None => Err(refused(format!(
                                "the domain's command (pid {pid}) ended at once; see {}",
                                console.display()
                            ))),
                        }
                    })
            }
            (None, _) if !cgroup.is_owned() => Self::join(&cgroup),
            (None, _) => Self::adopt(cfg, &cgroup, console, cpus),
        };
        let started = started.and_then(|s| {
            if paused {
                cgroup
                    .set_frozen(true)
                    .map_err(|e| internal(e.to_string()))?;
            }
            Ok(s)
        });
        match started {
            Ok((identity, child, spawned, members, origins)) => Ok((
                ProcessBackend {
                    child,
                    cgroup,
                    group_in_runtime: false,
                },
                LiveRecord {
                    process: identity,
                    spawned,
                    vcpu_threads: None,
                    console: console.to_path_buf(),
                    start_gate,
                    qemu: None,
                    members,
                    origins,
                    group: cfg.vcpu_threads.is_none(),
                },
            )),
            Err(e) => Err(Box::new((e, cgroup))),
        }
    }

    /// A job cgroup another launcher made (`cgroup = PATH`): the domain is
    /// what runs in it (recorded: the processes there now).
    fn join(cgroup: &DomainCgroup) -> Result<Started, ApiError> {
        let mut identities = cgroup.processes().into_iter().filter_map(process::identity);
        let first = identities.next().ok_or_else(|| {
            refused(format!(
                "cgroup {} has no process to gang-schedule",
                cgroup.freezer().1.display()
            ))
        })?;
        Ok((first, None, false, identities.collect(), Vec::new()))
    }

    /// Adopts running processes (`pid`, or a job's `pids`, with their
    /// descendants when `children = 1`) into the domain's cgroup.
    fn adopt(
        cfg: &DomainConfig,
        cgroup: &DomainCgroup,
        console: &Path,
        cpus: &CpuSet,
    ) -> Result<Started, ApiError> {
        let mut pids: Vec<i32> = cfg.pid.iter().chain(&cfg.pids).map(|&p| p as i32).collect();
        if cfg.children {
            let mut all = pids.clone();
            for &p in &pids {
                all.extend(process::descendants(p));
            }
            all.sort_unstable();
            all.dedup();
            pids = all;
        }
        let mut identities = Vec::new();
        for &pid in &pids {
            match process::identity(pid) {
                Some(identity) => identities.push(identity),
                None => return Err(refused(format!("process {pid} does not exist"))),
            }
        }
        if let Err(e) = process::open_console(console).map(|mut f| {
            use std::io::Write as _;
            writeln!(
                f,
                "gang: domain adopted from running process(es) {pids:?}; their output is not \
                 captured"
            )
        }) {
            tracing::warn!("console {}: {e}", console.display());
        }
        // Where they came from, recorded before they move.
        let origins: Vec<_> = pids.iter().map(|&p| cgroup.origin_of(p)).collect();
        for &pid in &pids {
            if let Err(e) = cgroup.add_process(pid) {
                for o in &origins {
                    cgroup.give_back(o);
                }
                return Err(refused(e.to_string()));
            }
            process::set_process_affinity(pid, cpus);
        }
        let mut identities = identities.into_iter();
        let first = identities
            .next()
            .ok_or_else(|| refused("a process domain needs `command`, `pid` or `pids`"))?;
        Ok((first, None, false, identities.collect(), origins))
    }

    /// Takes a running process back after a daemon restart: into its
    /// cgroup again, frozen if paused.
    pub(in crate::daemon) fn reattach(
        record: &LiveRecord,
        cgroup: DomainCgroup,
        paused: bool,
    ) -> Result<ProcessBackend, StartFailed> {
        let pid = record.pid();
        let joined = if cgroup.is_owned() {
            cgroup.add_process(pid)
        } else {
            Ok(())
        };
        match joined.and_then(|()| cgroup.set_frozen(paused)) {
            Ok(()) => Ok(ProcessBackend {
                child: None,
                cgroup,
                group_in_runtime: false,
            }),
            Err(e) => Err(Box::new((internal(e.to_string()), cgroup))),
        }
    }
}

impl Backend for ProcessBackend {
    fn kind(&self) -> &'static str {
        "process"
    }

    fn vcpu_threads(
        &mut self,
        record: &LiveRecord,
        vcpus: u32,
        pattern: Option<&str>,
    ) -> Result<Option<Vec<Tid>>, ApiError> {
        if record.group {
            // The whole program: no thread is singled out.
            return Ok(record.any_alive().then(Vec::new));
        }
        match process::wait_vcpu_threads(&record.process, vcpus, pattern, THREAD_TIMEOUT) {
            Ok(t) => Ok(Some(t)),
            // It ended: not an error of the request; its exit is handled by
            // `poll_exit` with its status.
            Err(process::ProcessError::Ended { .. }) => Ok(None),
            Err(e) => Err(refused(e.to_string())),
        }
    }

    fn attach(&mut self, rt: &Arc<Runtime>, id: DomainId, tids: &[Tid]) -> Result<(), ApiError> {
        if tids.is_empty() {
            let (controller, dir) = self.cgroup.freezer();
            rt.adopt_group(id, (controller.clone(), dir.to_path_buf()))
                .map_err(|e| refused(format!("adopting the program's threads: {e}")))?;
            self.group_in_runtime = true;
            return Ok(());
        }
        rt.adopt_threads(id, tids)
            .map_err(|e| refused(format!("adopting the vCPU threads: {e}")))
    }

    fn processes(&self, record: &LiveRecord) -> Vec<i32> {
        // Everything in the domain's cgroup: children and a job's members.
        let mut pids = self.cgroup.processes();
        if pids.is_empty() {
            pids.push(record.pid());
        }
        pids
    }

    fn detach(&mut self) {
        // The runtime thaws the group as it gives it back.
        self.group_in_runtime = false;
    }

    fn pause(&mut self, _record: &LiveRecord) -> Result<(), ApiError> {
        if self.group_in_runtime {
            return Ok(()); // the runtime's pause keeps the group frozen
        }
        self.cgroup
            .set_frozen(true)
            .map_err(|e| internal(e.to_string()))
    }

    fn resume(&mut self, record: &mut LiveRecord) -> Result<(), ApiError> {
        if !self.group_in_runtime {
            self.cgroup
                .set_frozen(false)
                .map_err(|e| internal(e.to_string()))?;
        }
        if let Some(gate) = record.start_gate.take() {
            process::open_start_gate(&gate, &record.process)
                .map_err(|e| internal(format!("starting the program: {e}")))?;
        }
        Ok(())
    }

    fn request(&mut self, record: &LiveRecord, _reason: ShutdownReason) -> Result<(), ApiError> {
        process::signal(record.pid(), record.spawned, Signal::TERM)
            .map_err(|e| internal(format!("signalling process {}: {e}", record.pid())))
    }

    fn console_input(&mut self, _bytes: &[u8]) -> Result<(), String> {
        Err("a process: its console is output only (its stdin is /dev/null)".into())
    }

    fn poll_exit(
        &mut self,
        record: &LiveRecord,
        requested: Option<ShutdownReason>,
    ) -> Option<Ended> {
        let status = match &mut self.child {
            Some(child) => match child.try_wait() {
                Ok(Some(status)) => Some(status),
                Ok(None) => return None,
                Err(_) if process::is_alive(&record.process) => return None,
                Err(_) => None,
            },
            // Adopted: it ends when nothing of it runs any more (a job's
            // cgroup: when its last process left).
            None if record.any_alive() || !self.cgroup.processes().is_empty() => return None,
            None => None,
        };
        Some(process_exit(requested, status))
    }

    fn tear_down(&mut self, record: &LiveRecord) {
        if record.spawned && process::is_alive(&record.process) {
            if let Err(e) = process::signal(record.pid(), true, Signal::KILL) {
                tracing::warn!("killing process group {}: {e}", record.pid());
            }
            // A frozen task dies only when thawed.
            if let Err(e) = self.cgroup.set_frozen(false) {
                tracing::warn!("thawing process {}: {e}", record.pid());
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while process::is_alive(&record.process) && Instant::now() < deadline {
                if let Some(c) = &mut self.child {
                    if let Ok(Some(_)) = c.try_wait() {
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        if let Some(c) = &mut self.child {
            let _reaped = c.try_wait();
        }
        // Adopted processes go back to the cgroups they came from (thawed
        // first: a frozen task cannot move out of a frozen v1 cgroup).
        if !record.origins.is_empty() {
            if let Err(e) = self.cgroup.set_frozen(false) {
                tracing::debug!("thawing before giving back: {e}");
            }
            for origin in &record.origins {
                self.cgroup.give_back(origin);
            }
        }
        if let Err(e) = self.cgroup.remove_in_place() {
            tracing::warn!("removing the cgroups of process {}: {e}", record.pid());
        }
    }
}

/// Why a process ended: the shutdown asked for, else its exit status.
pub(in crate::daemon) fn process_exit(
    requested: Option<ShutdownReason>,
    status: Option<std::process::ExitStatus>,
) -> Ended {
    use std::os::unix::process::ExitStatusExt as _;
    match (requested, status) {
        (Some(r), _) => Ended::new(r, "as requested"),
        (None, Some(s)) if s.success() => Ended::new(ShutdownReason::Poweroff, "exited"),
        (None, Some(s)) => match (s.code(), s.signal()) {
            (Some(c), _) => Ended::new(ShutdownReason::Crash, format!("exited with status {c}")),
            (_, Some(sig)) => Ended::new(ShutdownReason::Crash, format!("killed by signal {sig}")),
            _ => Ended::new(ShutdownReason::Crash, "ended"),
        },
        (None, None) => Ended::new(
            ShutdownReason::Poweroff,
            "ended (exit status unknown: it was started by an earlier daemon or adopted)",
        ),
    }
}
