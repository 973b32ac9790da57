//! Whole programs as gangs: every task of a freezer cgroup runs only in its
//! domain's slots, on its domain's CPUs.
//!
//! **What a group is.** [`crate::adopt`] makes N named threads the N vCPUs
//! of a domain, one pinned thread per CPU. Real parallel programs (MPI ranks,
//! OpenMP teams, pthread pools) do not fit that: their threads are not named
//! after vCPUs, some sleep, some are created later, there may be several
//! processes. A group takes them all: the tasks of a freezer cgroup that the
//! caller owns and fills (the daemon's domain cgroup; a program's future
//! threads and children join it by themselves). The domain's `vcpus` is the
//! number of CPUs its gang gets; in its slots all of the group's tasks run on
//! the domain's map CPUs, Linux sharing those CPUs among them.
//!
//! **Mechanism.** The cgroup is frozen between the domain's slots. Every
//! vCPU of the domain has the same [`AdoptedGroup`] as its gate; at a switch
//! the dispatcher of each CPU asks for a thaw ([`AdoptedGroup::start`]) or a
//! freeze ([`AdoptedGroup::stop`]) without waiting, before the boundary, as
//! for an adopted thread. The group counts the CPUs running it: the first
//! start thaws it, the last stop freezes it (a dispatcher whose CPU keeps the
//! group across a boundary does neither), so it is frozen whenever no CPU of
//! its map runs it: paused, removed, descheduled. The count and the write
//! happen under one lock, so two CPUs' requests cannot land out of order.
//! Since a freezer is one switch for all tasks, a group runs on all of its
//! map CPUs or on none: if the scheduler ever dispatched only some of its
//! vCPUs, its tasks could also use the map's other CPUs in that slot (gang-
//! core dispatches a runnable gang whole, and a group's vCPUs never block).
//!
//! **Placement.** At adoption, and then every [`PLACEMENT_PERIOD`] from a
//! helper thread of the group (off every switch path), each task of the
//! cgroup gets the affinity of the domain's map CPUs. New threads inherit it
//! from their creator; the periodic pass catches tasks that change their own
//! affinity and tasks the caller moves into the cgroup later. A changed CPU
//! map is applied at once ([`AdoptedGroup::set_cpus`]).
//!
//! **Policies are left alone** (SCHED_OTHER for normal programs): a program
//! with more threads than CPUs must time-share inside its slots, and at
//! SCHED_FIFO a spinning thread would starve its siblings on its CPU for
//! ever. So group tasks do not preempt host tasks in their slots the way a
//! real-time vCPU does; the dispatchers and the other gangs' real-time vCPUs
//! still preempt them.
//!
//! **Leaving the program as found, crash-safe.** Before a task's affinity is
//! changed, its original affinity and policy are written to the state
//! directory (`group-*.json`, with the owner's pid and start time). On
//! [`AdoptedGroup::release`] (domain removed, runtime stopped) every task
//! gets its affinity back and the cgroup is thawed. A task born inside the
//! group (its affinity is the map's: inherited) gets the affinity its
//! process had when it was adopted, else all online CPUs. After a `kill -9`,
//! [`repair`] on the next start does the same for groups whose owner is
//! dead. The policy is recorded but never changed, so never restored. The
//! cgroup is the caller's: it is never removed, and its tasks stay in it.
//! On cgroup v1 an empty frozen freezer of ours ([`crate::cgroup::Freezer`],
//! with its own crash record) is kept for the group's life, so that thawing
//! the last frozen cgroup never toggles the kernel's freezer static key on
//! the switch path (see `cgroup`).
//!
//! **Limits.** Only the cgroup's own tasks are placed, not those of its
//! descendant cgroups; groups are for shared pools (an exclusive pool would
//! have to move every task into its cpuset, not done).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use gang_core::{CpuId, DomainId};

use crate::best_effort;
use crate::cgroup::{self, CgroupError, Cgroups, Controller, Freezer, Hierarchy, Owner};
use crate::sys::{self, SchedPolicy, Tid};

/// How often a group's tasks are checked and given the map's affinity.
pub const PLACEMENT_PERIOD: Duration = Duration::from_millis(50);

/// How long adoption and release wait for the kernel to freeze or thaw.
const FREEZE_WAIT: Duration = Duration::from_secs(1);

/// Why a group could not be adopted.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// The cgroup is missing or cannot be frozen.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// Recording, reading or changing a task failed.
    #[error("group {cgroup}: {what}: {source}")]
    Io {
        /// The cgroup.
        cgroup: PathBuf,
        /// What we did.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// A task's state before the group changed it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Saved {
    /// The task (its start time tells a reused TID apart).
    task: Owner,
    /// Its process.
    tgid: i32,
    policy: SchedPolicy,
    affinity: Vec<CpuId>,
}

/// What a group changed, in the state directory until undone.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Record {
    /// The runtime's process.
    owner: Owner,
    domain: u32,
    controller: Controller,
    cgroup: PathBuf,
    /// The map's CPUs (a task with exactly this affinity was born inside).
    cpus: Vec<CpuId>,
    /// Each process's affinity when it was adopted (its leader's, else its
    /// first task's): what its tasks born later get back.
    processes: Vec<Saved>,
    /// Every task whose affinity was changed.
    tasks: Vec<Saved>,
}

/// The dispatchers' side: the freeze file and how many CPUs run the group.
#[derive(Debug)]
struct Switching {
    /// `None` once released: requests are ignored from then on.
    control: Option<fs::File>,
    running: u32,
}

#[derive(Debug)]
struct Inner {
    controller: Controller,
    cgroup: PathBuf,
    record_file: PathBuf,
    record: Mutex<Record>,
    switching: Mutex<Switching>,
    /// The cgroup had no task at the last placement pass.
    empty: AtomicBool,
    released: AtomicBool,
}

/// A freezer cgroup adopted as a domain (see the module docs).
#[derive(Debug)]
pub struct AdoptedGroup {
    /// The domain.
    pub domain: DomainId,
    inner: Arc<Inner>,
    helper: Mutex<Option<(Sender<()>, JoinHandle<()>)>>,
    keeper: Mutex<Option<Freezer>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn tgid_of(tid: Tid) -> Option<i32> {
    crate::proc::status(tid)?.tgid
}

fn online() -> Vec<CpuId> {
    cgroup::online_cpus()
        .map(|s| s.iter().collect())
        .unwrap_or_default()
}

fn record_path(state_dir: &Path, domain: DomainId, cgroup: &Path) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    cgroup.hash(&mut h);
    state_dir.join(format!(
        "group-d{}-{:08x}.json",
        domain.0,
        h.finish() as u32
    ))
}

fn write_record(path: &Path, record: &Record) -> std::io::Result<()> {
    let text = serde_json::to_string(record).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text)?;
    fs::rename(&tmp, path)
}

impl Record {
    /// The affinity task `tid` (now in the cgroup, or moved out of it) must
    /// get back, if any.
    fn original_affinity(&self, tid: Tid, online: &[CpuId]) -> Option<Vec<CpuId>> {
        let owner = Owner::of_pid(tid)?;
        if let Some(s) = self.tasks.iter().find(|s| s.task == owner) {
            return Some(s.affinity.clone());
        }
        // Not recorded: born inside the group after the last pass (it
        // inherited the map's affinity), or it changed its own since.
        let now = crate::adopt::affinity_of(tid).ok()?;
        if now != self.cpus {
            return None;
        }
        let tgid = tgid_of(tid)?;
        let process = Owner::of_pid(tgid);
        match self
            .processes
            .iter()
            .find(|p| Some(p.task) == process && p.tgid == tgid)
        {
            Some(p) => Some(p.affinity.clone()),
            None => Some(online.to_vec()),
        }
    }

    /// Gives every task its affinity back: those in the cgroup now and
    /// recorded ones that left it.
    fn restore(&self) -> usize {
        let online = online();
        let mut tids = cgroup::threads_below(&self.controller, &self.cgroup).unwrap_or_default();
        tids.extend(self.tasks.iter().map(|s| s.task.pid));
        tids.sort_unstable();
        tids.dedup();
        let mut restored = 0;
        for tid in tids {
            if let Some(cpus) = self.original_affinity(tid, &online) {
                if sys::set_affinity(tid, &cpus).is_ok() {
                    restored += 1;
                }
            }
        }
        restored
    }
}

/// Gives back the groups of runtimes that died (affinities restored, cgroup
/// thawed); returns how many. Groups of live runtimes are left alone.
pub fn repair(state_dir: &Path) -> usize {
    let mut repaired = 0;
    let Ok(dir) = fs::read_dir(state_dir) else {
        return 0;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("group-") && name.ends_with(".json")) {
            continue;
        }
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let Ok(record) = serde_json::from_str::<Record>(&text) else {
            // Unreadable: nothing to undo.
            best_effort(
                format_args!("removing the unreadable record {}", path.display()),
                fs::remove_file(&path),
            );
            continue;
        };
        if record.owner.is_alive() {
            continue;
        }
        record.restore();
        if record.cgroup.exists() {
            best_effort(
                format_args!("thawing {}", record.cgroup.display()),
                cgroup::set_frozen(&record.controller, &record.cgroup, false, FREEZE_WAIT),
            );
        }
        best_effort(
            format_args!("removing {}", path.display()),
            fs::remove_file(&path),
        );
        repaired += 1;
    }
    repaired
}

impl Inner {
    fn io(&self, what: impl Into<String>) -> impl FnOnce(std::io::Error) -> GroupError + '_ {
        let what = what.into();
        move |source| GroupError::Io {
            cgroup: self.cgroup.clone(),
            what,
            source,
        }
    }

    /// One placement pass: records the tasks not seen before, then gives
    /// every task the map's affinity. `initial`: the pass at adoption, when
    /// every task's affinity is its own.
    fn place(&self, initial: bool) -> Result<(), GroupError> {
        if self.released.load(Ordering::Acquire) {
            return Ok(());
        }
        let tids = cgroup::threads_below(&self.controller, &self.cgroup)?;
        self.empty.store(tids.is_empty(), Ordering::Relaxed);
        let mut record = lock(&self.record);
        let cpus = record.cpus.clone();
        let before = (record.tasks.len(), record.processes.len());
        let online = online();
        let mut current = Vec::new();
        for &tid in &tids {
            let Some(task) = Owner::of_pid(tid) else {
                continue;
            };
            current.push(task);
            if record.tasks.iter().any(|s| s.task == task) {
                continue;
            }
            let (Some(tgid), Ok(policy), Ok(mine)) = (
                tgid_of(tid),
                sys::policy(tid),
                crate::adopt::affinity_of(tid),
            ) else {
                continue; // exited meanwhile
            };
            let process = Owner::of_pid(tgid);
            let known = record
                .processes
                .iter()
                .position(|p| p.tgid == tgid && Some(p.task) == process);
            // Born inside the group: it inherited the map's affinity, and
            // gets its process's back (or all CPUs).
            let affinity = if mine == cpus && !initial {
                known.map_or_else(|| online.clone(), |i| record.processes[i].affinity.clone())
            } else {
                mine
            };
            let saved = Saved {
                task,
                tgid,
                policy,
                affinity,
            };
            match (known, process) {
                (None, Some(p)) => record.processes.push(Saved {
                    task: p,
                    ..saved.clone()
                }),
                // The leader's own affinity is its process's.
                (Some(i), _) if tid == tgid && initial => {
                    record.processes[i].affinity = saved.affinity.clone();
                }
                _ => {}
            }
            record.tasks.push(saved);
        }
        // Tasks that left the cgroup (exited, or moved out by the caller):
        // those still alive get their affinity back.
        let (stay, left): (Vec<Saved>, Vec<Saved>) = std::mem::take(&mut record.tasks)
            .into_iter()
            .partition(|s| current.contains(&s.task));
        record.tasks = stay;
        for s in left {
            if Owner::of_pid(s.task.pid) == Some(s.task) {
                best_effort(
                    format_args!("giving task {} its affinity back", s.task.pid),
                    sys::set_affinity(s.task.pid, &s.affinity),
                );
            }
        }
        record
            .processes
            .retain(|p| Owner::of_pid(p.tgid) == Some(p.task));
        if (record.tasks.len(), record.processes.len()) != before || initial {
            // What we are about to change, before changing it.
            write_record(&self.record_file, &record).map_err(self.io("recording its tasks"))?;
        }
        drop(record);
        for &tid in &tids {
            if crate::adopt::affinity_of(tid).is_ok_and(|a| a != cpus) {
                match sys::set_affinity(tid, &cpus) {
                    // It exited since it was listed: nothing to place.
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    r => {
                        best_effort(format_args!("pinning task {tid} to the group's CPUs"), r);
                    }
                }
            }
        }
        Ok(())
    }

    fn request(&self, start: bool) {
        let mut s = lock(&self.switching);
        let write = if start {
            s.running += 1;
            s.running == 1
        } else {
            s.running = s.running.saturating_sub(1);
            s.running == 0
        };
        if let (true, Some(control)) = (write, s.control.as_ref()) {
            let (_, value) = cgroup::freeze_file(&self.controller, &self.cgroup, !start);
            use std::os::unix::fs::FileExt;
            // The switch path, where nothing is logged: a write that failed
            // leaves the group as it was until the next request.
            let _ = control.write_all_at(value.as_bytes(), 0);
        }
    }
}

impl AdoptedGroup {
    /// Adopts the tasks of freezer cgroup `freezer` (a controller and the
    /// cgroup's directory) as domain `domain` on CPUs `cpus`: frozen (until
    /// its first slot), every task's affinity recorded in `state_dir` and
    /// set to `cpus`, and a helper thread that keeps placing new tasks.
    pub fn adopt(
        domain: DomainId,
        freezer: (Controller, PathBuf),
        cpus: &[CpuId],
        state_dir: &Path,
    ) -> Result<AdoptedGroup, GroupError> {
        let (controller, cgroup) = freezer;
        let mut cpus = cpus.to_vec();
        cpus.sort_unstable();
        cpus.dedup();
        let (file, _) = cgroup::freeze_file(&controller, &cgroup, true);
        let control = fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .map_err(|source| GroupError::Io {
                cgroup: cgroup.clone(),
                what: format!("opening {}", file.display()),
                source,
            })?;
        let record = Record {
            owner: Owner::current(),
            domain: domain.0,
            controller: controller.clone(),
            cgroup: cgroup.clone(),
            cpus,
            processes: Vec::new(),
            tasks: Vec::new(),
        };
        let record_file = record_path(state_dir, domain, &cgroup);
        // First the record (a crash from here on is repaired: thawed).
        write_record(&record_file, &record).map_err(|source| GroupError::Io {
            cgroup: cgroup.clone(),
            what: "recording it".into(),
            source,
        })?;
        // v1: an always-frozen empty freezer (its `~keep`), so that our
        // thaws never toggle the kernel's static key; an optimisation only.
        let keeper = (controller.version == cgroup::CgroupVersion::V1)
            .then(|| {
                let name = record_file.file_stem()?.to_string_lossy().replace('-', "_");
                let hierarchy = Hierarchy::of_freezer(controller.clone());
                Cgroups::new(hierarchy, state_dir, &cgroup::prefix_for(state_dir))
                    .freezer(&name)
                    .ok()
            })
            .flatten();
        let inner = Arc::new(Inner {
            controller,
            cgroup,
            record_file,
            record: Mutex::new(record),
            switching: Mutex::new(Switching {
                control: Some(control),
                running: 0,
            }),
            empty: AtomicBool::new(false),
            released: AtomicBool::new(false),
        });
        let group = AdoptedGroup {
            domain,
            inner: Arc::clone(&inner),
            helper: Mutex::new(None),
            keeper: Mutex::new(keeper),
        };
        // From here on a failure is undone by `release` (Drop).
        match cgroup::set_frozen(&inner.controller, &inner.cgroup, true, FREEZE_WAIT) {
            // A task in an uninterruptible sleep may take longer: it freezes
            // when it returns, and no slot thaws the group before then.
            Ok(_) | Err(CgroupError::Timeout { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        inner.place(true)?;
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let placer = Arc::clone(&inner);
        let handle = std::thread::Builder::new()
            .name(format!("gang-group-{}", domain.0))
            .spawn(move || {
                // Never at the caller's real-time priority: placement is
                // background work.
                best_effort(
                    "leaving real-time priority for group placement",
                    sys::set_policy(0, SchedPolicy::Other),
                );
                // A failing pass is reported once, not every period, until
                // one succeeds again.
                let mut failing = false;
                while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(PLACEMENT_PERIOD) {
                    let pass = placer.place(false);
                    failing = if failing {
                        pass.is_err()
                    } else {
                        best_effort("placing the group's tasks", pass).is_none()
                    };
                }
            })
            .map_err(inner.io("starting its placement thread"))?;
        *lock(&group.helper) = Some((tx, handle));
        Ok(group)
    }

    /// Dispatcher: a CPU of the map starts running the group (the first
    /// one thaws it, without waiting).
    pub fn start(&self) {
        self.inner.request(true);
    }

    /// Dispatcher: a CPU of the map stops running it (the last one freezes
    /// it, without waiting).
    pub fn stop(&self) {
        self.inner.request(false);
    }

    /// Whether the cgroup had no task left at the last placement pass.
    pub fn is_empty(&self) -> bool {
        self.inner.empty.load(Ordering::Relaxed)
    }

    /// The cgroup.
    pub fn cgroup(&self) -> &Path {
        &self.inner.cgroup
    }

    /// The domain's CPUs changed: every task gets the new ones now.
    pub fn set_cpus(&self, cpus: &[CpuId]) -> Result<(), GroupError> {
        {
            let mut record = lock(&self.inner.record);
            let mut cpus = cpus.to_vec();
            cpus.sort_unstable();
            cpus.dedup();
            record.cpus = cpus;
        }
        self.inner.place(false)
    }

    /// One placement pass now (the helper makes one every
    /// [`PLACEMENT_PERIOD`]).
    pub fn place(&self) -> Result<(), GroupError> {
        self.inner.place(false)
    }

    /// Gives the tasks back: affinities restored, cgroup thawed (it stays,
    /// with its tasks: it is the caller's). Idempotent.
    pub fn release(&self) {
        if self.inner.released.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some((tx, handle)) = lock(&self.helper).take() {
            drop(tx);
            best_effort(
                "stopping the placement thread",
                handle.join().map_err(|_| "it panicked"),
            );
        }
        // No dispatcher request from here on.
        lock(&self.inner.switching).control = None;
        let record = lock(&self.inner.record).clone();
        record.restore();
        best_effort(
            format_args!("thawing {}", self.inner.cgroup.display()),
            cgroup::set_frozen(
                &self.inner.controller,
                &self.inner.cgroup,
                false,
                FREEZE_WAIT,
            ),
        );
        best_effort(
            format_args!("removing {}", self.inner.record_file.display()),
            fs::remove_file(&self.inner.record_file),
        );
        drop(lock(&self.keeper).take());
    }
}

impl Drop for AdoptedGroup {
    fn drop(&mut self) {
        self.release();
    }
}
