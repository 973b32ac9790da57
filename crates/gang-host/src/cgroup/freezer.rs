//! Freezers: a per-domain freezer cgroup holding threads adopted from other
//! processes, and the freeze and thaw primitives other owners of freezer
//! cgroups (a daemon's domains, adopted groups) use too.
//!
//! Invariants: a thread's cgroup is recorded (in the state file) before it
//! is moved, and it goes back there (or to the root, v1, or the parent,
//! v2, if that cgroup is gone), thawed, on removal or drop; on v2 an
//! adopted thread's freezer is a threaded child of the cgroup the thread is
//! in, since a thread moves alone only within its threaded domain.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::best_effort;

use super::moves::{drain_and_remove, mkdir, read_ids, write_id};
use super::shield::make_threaded;
use super::state::{
    freezer_state_path, remove_file, write_state, FrozenThread, Owner, StateRecord,
};
use super::{
    check_name, io_err, read_str, write_str, CgroupError, CgroupVersion, Cgroups, Controller,
    MoveCount, Result, DEFAULT_FREEZE_TIMEOUT, STATE_VERSION,
};

/// A per-domain freezer cgroup holding adopted threads, made by
/// [`Cgroups::freezer`] or [`Cgroups::thread_freezer`].
///
/// Threads return to the cgroup they came from on [`Freezer::remove`] or drop
/// (thawed first).
///
/// On v1 an empty sibling cgroup `<prefix>.<name>~keep` is kept frozen for the
/// freezer's lifetime: the kernel toggles a static key (code patching on all
/// CPUs) when the first cgroup freezes and the last one thaws, which on the
/// development machine cost about 80 µs at p50 and several ms at p99; with
/// one cgroup always frozen that key never toggles.
#[derive(Debug)]
pub struct Freezer {
    controller: Controller,
    path: PathBuf,
    keeper: Option<PathBuf>,
    threads: Vec<FrozenThread>,
    state_file: PathBuf,
    timeout: Duration,
    removed: bool,
    /// The freeze file, opened once for [`Freezer::request`] (a write per
    /// switch must not pay an open and a close).
    control: std::sync::OnceLock<fs::File>,
}

impl Cgroups {
    /// Creates the freezer cgroup `<prefix>.<name>` (at the freezer
    /// hierarchy's root), for threads added by [`Freezer::add_thread`].
    pub fn freezer(&self, name: &str) -> Result<Freezer> {
        let controller = self.hierarchy.freezer()?;
        Freezer::create(
            controller,
            &controller.mount,
            &self.prefix,
            name,
            &self.state_dir,
        )
    }

    /// A freezer `<prefix>.<name>` holding thread `tid` alone (an adopted
    /// thread): [`Cgroups::freezer`] and [`Freezer::add_thread`] on v1.
    ///
    /// On v2 a single thread can only move within its process's threaded
    /// domain, and a thread is in one cgroup only (the pool's cpuset too).
    /// So the freezer is made a threaded child of the cgroup the thread is
    /// in now (the root, a pool, a domain's own cgroup): the thread keeps
    /// its cpuset, and freezing an ancestor (a paused domain) still
    /// freezes it.
    pub fn thread_freezer(&self, name: &str, tid: i32) -> Result<Freezer> {
        let controller = self.hierarchy.freezer()?;
        let parent = match controller.version {
            CgroupVersion::V1 => controller.mount.clone(),
            CgroupVersion::V2 => thread_cgroup(controller, "freezer", tid)?,
        };
        let mut f = Freezer::create(controller, &parent, &self.prefix, name, &self.state_dir)?;
        if controller.version == CgroupVersion::V2 {
            make_threaded(&f.path);
        }
        f.add_thread(tid)?; // on error, dropping `f` removes it
        Ok(f)
    }
}

impl Freezer {
    /// Creates `<parent>/<prefix>.<name>` (a keeper beside it on v1).
    fn create(
        controller: &Controller,
        parent: &Path,
        prefix: &str,
        name: &str,
        state_dir: &Path,
    ) -> Result<Freezer> {
        check_name(prefix)?;
        check_name(name)?;
        let cg_name = format!("{prefix}.{name}");
        let path = parent.join(&cg_name);
        if path.exists() {
            return Err(CgroupError::Exists { path });
        }
        let state_file = freezer_state_path(state_dir, &cg_name);
        let keeper = (controller.version == CgroupVersion::V1)
            .then(|| controller.mount.join(format!("{cg_name}~keep")));
        let mut f = Freezer {
            controller: controller.clone(),
            path,
            keeper,
            threads: Vec::new(),
            state_file,
            timeout: DEFAULT_FREEZE_TIMEOUT,
            removed: false,
            control: std::sync::OnceLock::new(),
        };
        f.save()?;
        if let Err(e) = mkdir(&f.path) {
            f.removed = true;
            best_effort(
                "removing the record of a freezer never made",
                remove_file(&f.state_file),
            );
            return Err(e);
        }
        // The keeper is an optimisation: without it freezing still works.
        if let Some(k) = &f.keeper {
            let ok = mkdir(k).is_ok() && write_str(&k.join("freezer.state"), "FROZEN").is_ok();
            if !ok && k.exists() {
                best_effort(
                    format_args!("removing the unusable keeper {}", k.display()),
                    fs::remove_dir(k),
                );
            }
        }
        Ok(f)
    }

    fn save(&self) -> Result<()> {
        write_state(
            &self.state_file,
            &StateRecord::Freezer {
                version: STATE_VERSION,
                owner: Owner::current(),
                controller: self.controller.clone(),
                cgroup: self.path.clone(),
                keeper: self.keeper.clone(),
                threads: self.threads.clone(),
            },
        )
    }

    /// The cgroup directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The threads added (some may have exited).
    pub fn threads(&self) -> Vec<i32> {
        self.threads.iter().map(|t| t.tid).collect()
    }

    /// Sets how long freeze and thaw wait for the kernel.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Moves thread `tid` (alone, not its whole process) into the freezer,
    /// recording its current cgroup first. A frozen freezer freezes it.
    ///
    /// v1 moves a single thread of a multi-threaded process (verified on the
    /// development machine). v2 moves single threads only within a threaded
    /// subtree (`cgroup.threads`); otherwise the kernel refuses and this
    /// returns [`CgroupError::Move`], except for a single-threaded process,
    /// which is moved whole (`cgroup.procs`).
    pub fn add_thread(&mut self, tid: i32) -> Result<()> {
        let origin = thread_cgroup(&self.controller, "freezer", tid)?;
        if origin == self.path {
            return Ok(());
        }
        self.threads.push(FrozenThread { tid, origin });
        self.save()?;
        let file = self.controller.threads_file(&self.path);
        if let Err(source) = move_thread(&self.controller, &self.path, tid) {
            self.threads.pop();
            best_effort(
                format_args!("recording the freezer without thread {tid}"),
                self.save(),
            );
            return Err(CgroupError::Move {
                tid,
                path: file,
                source,
            });
        }
        Ok(())
    }

    /// Freezes the threads; returns once the kernel reports them frozen,
    /// with the time that took.
    pub fn freeze(&self) -> Result<Duration> {
        set_frozen(&self.controller, &self.path, true, self.timeout)
    }

    /// Thaws the threads; returns once the kernel reports them thawed.
    pub fn thaw(&self) -> Result<Duration> {
        set_frozen(&self.controller, &self.path, false, self.timeout)
    }

    /// Asks the kernel to freeze (`true`) or thaw the threads and returns
    /// at once, without waiting for the state to be reached: the runtime's
    /// dispatchers call this on their switch path. [`Freezer::is_frozen`]
    /// tells when it is done.
    pub fn request(&self, frozen: bool) -> Result<()> {
        let (file, value) = freeze_file(&self.controller, &self.path, frozen);
        let control = match self.control.get() {
            Some(f) => f,
            None => {
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(&file)
                    .map_err(io_err(&file))?;
                self.control.get_or_init(|| f)
            }
        };
        // Each request is one whole write at offset 0, as a fresh open would do.
        use std::os::unix::fs::FileExt;
        control
            .write_all_at(value.as_bytes(), 0)
            .map_err(io_err(&file))
    }

    /// Whether the kernel reports the cgroup frozen.
    pub fn is_frozen(&self) -> Result<bool> {
        Ok(read_frozen(&self.controller, &self.path)?.0)
    }

    /// Thaws, moves the threads back where they came from, removes the cgroup
    /// and the state file.
    pub fn remove(mut self) -> Result<MoveCount> {
        self.remove_inner()
    }

    fn remove_inner(&mut self) -> Result<MoveCount> {
        if self.removed {
            return Ok(MoveCount::default());
        }
        let count = undo_freezer(
            &self.controller,
            &self.path,
            self.keeper.as_deref(),
            &self.threads,
        )?;
        remove_file(&self.state_file)?;
        self.removed = true;
        Ok(count)
    }
}

impl Drop for Freezer {
    fn drop(&mut self) {
        let removed = self.remove_inner();
        best_effort(
            format_args!("removing the freezer {}", self.path.display()),
            removed,
        );
    }
}

/// The cgroup directory that holds thread `tid` in `controller`'s hierarchy;
/// `name` is the controller's name (`freezer`, `cpuset`), used on v1.
pub fn thread_cgroup(controller: &Controller, name: &str, tid: i32) -> Result<PathBuf> {
    let file = PathBuf::from(format!("/proc/{tid}/task/{tid}/cgroup"));
    let text = read_str(&file)?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let hit = match controller.version {
            CgroupVersion::V1 => ctls.split(',').any(|c| c == name),
            CgroupVersion::V2 => id == "0" && ctls.is_empty(),
        };
        if hit {
            return Ok(controller.mount.join(path.trim_start_matches('/')));
        }
    }
    Err(CgroupError::Parse {
        path: file,
        what: "the thread's cgroup",
        text,
    })
}

fn read_frozen(controller: &Controller, cgroup: &Path) -> Result<(bool, String)> {
    match controller.version {
        CgroupVersion::V1 => {
            let s = read_str(&cgroup.join("freezer.state"))?.trim().to_string();
            Ok((s == "FROZEN", s))
        }
        CgroupVersion::V2 => {
            let s = read_str(&cgroup.join("cgroup.events"))?;
            let frozen = s.lines().any(|l| l.trim() == "frozen 1");
            Ok((frozen, s.replace('\n', " ").trim().to_string()))
        }
    }
}

/// The threads in `cgroup` itself (v1 `tasks`, v2 `cgroup.threads`; not
/// its descendants'). A missing cgroup has none.
pub fn threads_of(controller: &Controller, cgroup: &Path) -> Result<Vec<i32>> {
    read_ids(&controller.threads_file(cgroup))
}

/// The threads of `cgroup` and of every cgroup below it (a batch system's
/// job cgroup keeps its tasks in step cgroups below the job's); a child
/// cgroup removed while it is read is skipped.
pub fn threads_below(controller: &Controller, cgroup: &Path) -> Result<Vec<i32>> {
    let mut out = threads_of(controller, cgroup)?;
    let Ok(entries) = fs::read_dir(cgroup) else {
        return Ok(out);
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(threads_below(controller, &e.path()).unwrap_or_default());
        }
    }
    Ok(out)
}

/// The file to write, and what, to freeze (`true`) or thaw `cgroup`, for
/// owners that request the state without waiting (see [`Freezer::request`]).
pub fn freeze_file(
    controller: &Controller,
    cgroup: &Path,
    frozen: bool,
) -> (PathBuf, &'static str) {
    match controller.version {
        CgroupVersion::V1 => (
            cgroup.join("freezer.state"),
            if frozen { "FROZEN" } else { "THAWED" },
        ),
        CgroupVersion::V2 => (cgroup.join("cgroup.freeze"), if frozen { "1" } else { "0" }),
    }
}

/// Freezes (`true`) or thaws every task of `cgroup` and waits (up to
/// `timeout`) until the kernel reports it done; returns how long it took.
pub fn set_frozen(
    controller: &Controller,
    cgroup: &Path,
    frozen: bool,
    timeout: Duration,
) -> Result<Duration> {
    let start = Instant::now();
    let (file, value) = freeze_file(controller, cgroup, frozen);
    write_str(&file, value)?;
    let mut polls = 0u32;
    loop {
        let (now_frozen, last) = read_frozen(controller, cgroup)?;
        if now_frozen == frozen {
            return Ok(start.elapsed());
        }
        // v2 freezing is hierarchical: below a frozen ancestor (a paused
        // domain holding an adopted thread's freezer) a cgroup stays frozen,
        // and thawing it is all we can do.
        if polls == 0 && !frozen && frozen_ancestor(controller, cgroup) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            return Err(CgroupError::Timeout {
                path: file,
                wanted: value,
                last,
                timeout,
            });
        }
        polls += 1;
        if polls > 200 {
            std::thread::sleep(Duration::from_micros(50));
        } else {
            std::hint::spin_loop();
        }
    }
}

/// v2: whether a cgroup between `cgroup` and the hierarchy's root is asked
/// to be frozen.
fn frozen_ancestor(controller: &Controller, cgroup: &Path) -> bool {
    controller.version == CgroupVersion::V2
        && cgroup
            .ancestors()
            .skip(1)
            .take_while(|a| *a != controller.mount && a.starts_with(&controller.mount))
            .any(|a| fs::read_to_string(a.join("cgroup.freeze")).is_ok_and(|t| t.trim() == "1"))
}

/// Moves one thread into `cgroup`. `Ok(false)`: the thread is gone. On v2 a
/// thread outside a threaded subtree cannot move alone; a single-threaded
/// process is then moved whole.
fn move_thread(controller: &Controller, cgroup: &Path, tid: i32) -> io::Result<bool> {
    let write = |file: PathBuf| {
        fs::OpenOptions::new()
            .write(true)
            .open(file)
            .and_then(|mut f| write_id(&mut f, tid))
    };
    match write(controller.threads_file(cgroup)) {
        Err(e) if controller.version == CgroupVersion::V2 && single_threaded_leader(tid) => {
            write(cgroup.join("cgroup.procs")).map_err(|_| e)
        }
        other => other,
    }
}

/// Whether `tid` is the only thread of its process.
fn single_threaded_leader(tid: i32) -> bool {
    crate::proc::status(tid).is_some_and(|s| s.tgid == Some(tid) && s.threads == Some(1))
}

/// Thaws, moves recorded threads back to their origin (or the root if the
/// origin is gone), moves any other task to the root, removes the cgroup.
pub(super) fn undo_freezer(
    controller: &Controller,
    cgroup: &Path,
    keeper: Option<&Path>,
    threads: &[FrozenThread],
) -> Result<MoveCount> {
    let mut count = MoveCount::default();
    if let Some(k) = keeper.filter(|k| k.exists()) {
        // Empty by construction; anything found there is thawed and moved.
        count.add(undo_freezer(controller, k, None, &[])?);
    }
    if !cgroup.exists() {
        return Ok(count);
    }
    set_frozen(controller, cgroup, false, DEFAULT_FREEZE_TIMEOUT)?;
    let present: HashSet<i32> = read_ids(&controller.threads_file(cgroup))?
        .into_iter()
        .collect();
    // v1: the root. v2: the parent, in the threads' own threaded domain
    // (a freezer made by `Cgroups::thread_freezer` sits in the thread's cgroup).
    let fallback = match controller.version {
        CgroupVersion::V1 => controller.mount.clone(),
        CgroupVersion::V2 => cgroup
            .parent()
            .map_or_else(|| controller.mount.clone(), Path::to_path_buf),
    };
    for t in threads.iter().filter(|t| present.contains(&t.tid)) {
        let dest = if t.origin.is_dir() {
            &t.origin
        } else {
            &fallback
        };
        match move_thread(controller, dest, t.tid) {
            Ok(true) => count.moved += 1,
            Ok(false) => count.vanished += 1,
            Err(_) => count.refused += 1,
        }
    }
    count.add(drain_and_remove(controller, cgroup, &fallback)?);
    Ok(count)
}
