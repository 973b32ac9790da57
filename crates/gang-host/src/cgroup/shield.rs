//! The CPU shield: taking a set of CPUs from every other host task (a v1
//! shield like `cset shield`, a v2 cpuset partition, or a v2 shield when
//! the kernel refuses the partition), and giving them back.
//!
//! Invariants: the state file is written before anything changes, and a
//! shield dropped half-built undoes what was done; the host keeps at least
//! one online CPU; a CPU is in at most one pool cgroup and host tasks are
//! in at most one shield; the cpuset controller is disabled again on v2
//! only if we enabled it and no other cgroup uses cpusets.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use gang_core::CpuSet;

use crate::best_effort;

use super::freezer::thread_cgroup;
use super::moves::{child_cgroups, drain_and_remove, is_threaded, mkdir, move_all, read_ids};
use super::state::{remove_file, shield_state_path, write_state, Owner, ShieldMode, StateRecord};
use super::{
    check_name, io_err, online_cpus, read_cpus, read_str, write_str, CgroupError, CgroupVersion,
    Cgroups, Controller, MoveCount, Result, STATE_VERSION,
};

/// Undoes a shield record. Idempotent.
pub(super) fn undo_shield(
    controller: &Controller,
    host: Option<&Path>,
    pool: &Path,
    enabled_cpuset: bool,
) -> Result<MoveCount> {
    let root = &controller.mount;
    let mut count = MoveCount::default();
    if let Some(host) = host {
        count.add(drain_and_remove(controller, host, root)?);
    }
    if controller.version == CgroupVersion::V2 && pool.exists() {
        // Dissolve the partition first so that its CPUs return at once.
        best_effort(
            "dissolving the pool's partition",
            write_str(&pool.join("cpuset.cpus.partition"), "member"),
        );
    }
    count.add(drain_and_remove(controller, pool, root)?);
    // Disabling would silently strip every other cgroup's cpuset (another
    // instance's pool included): only when we enabled it and nobody uses it.
    if enabled_cpuset && !cpuset_in_use(root) {
        best_effort(
            "disabling the cpuset controller we enabled",
            write_str(&root.join("cgroup.subtree_control"), "-cpuset"),
        );
    }
    Ok(count)
}

/// v2: whether any cgroup below `root` configures cpusets (CPUs, a
/// partition, or cpuset enabled for its own children).
fn cpuset_in_use(root: &Path) -> bool {
    child_cgroups(root).iter().any(|c| {
        let has = |file: &str, f: &dyn Fn(&str) -> bool| {
            fs::read_to_string(c.join(file)).is_ok_and(|t| f(t.trim()))
        };
        has("cpuset.cpus", &|t| !t.is_empty())
            || has("cpuset.cpus.exclusive", &|t| !t.is_empty())
            || has("cpuset.cpus.partition", &|t| t != "member")
            || has("cgroup.subtree_control", &|t| {
                t.split_whitespace().any(|c| c == "cpuset")
            })
    })
}

/// What taking the CPUs did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShieldReport {
    /// How the CPUs were taken.
    pub mode: ShieldMode,
    /// Host tasks moved into the host cgroup (shield modes).
    pub tasks: MoveCount,
    /// Other non-empty cgroups of the cpuset hierarchy whose tasks were not
    /// moved and so may still use the taken CPUs (shield modes).
    pub unshielded: Vec<PathBuf>,
    /// Whether the pool cpuset is CPU-exclusive (v1), so the kernel itself
    /// refuses overlapping cpusets.
    pub exclusive: bool,
    /// v2: why the kernel refused the partition, when the shield fell back
    /// to moving host tasks ([`ShieldMode::V2Shield`]).
    pub partition_refused: Option<String>,
}

/// CPUs taken from the host ([`Cgroups::shield`]). Released by
/// [`CpuShield::release`] or drop.
#[derive(Debug)]
pub struct CpuShield {
    controller: Controller,
    mode: ShieldMode,
    host: Option<PathBuf>,
    pool: PathBuf,
    cpus: CpuSet,
    enabled_cpuset: bool,
    state_file: PathBuf,
    report: ShieldReport,
    released: bool,
}

impl Cgroups {
    /// Takes `cpus` from the host, with cgroups `<prefix>.host` and
    /// `<prefix>.pool` on the cpuset controller and the state file in the
    /// state directory.
    pub fn shield(&self, cpus: &CpuSet) -> Result<CpuShield> {
        CpuShield::take(
            self.hierarchy.cpuset()?,
            cpus,
            &self.state_dir,
            &self.prefix,
        )
    }
}

impl CpuShield {
    /// Takes `cpus` on `controller` (see [`Cgroups::shield`]).
    fn take(
        controller: &Controller,
        cpus: &CpuSet,
        state_dir: &Path,
        prefix: &str,
    ) -> Result<CpuShield> {
        check_name(prefix)?;
        let root = &controller.mount;
        let online = online_cpus()?;
        let root_cpus = match controller.version {
            CgroupVersion::V1 => read_cpus(&root.join("cpuset.effective_cpus"))?,
            CgroupVersion::V2 => {
                let p = root.join("cpuset.cpus.effective");
                if p.exists() {
                    read_cpus(&p)?
                } else {
                    online.clone()
                }
            }
        };
        if controller.version == CgroupVersion::V2 {
            // A partition's CPUs are no longer in the root's effective set:
            // say who holds them rather than "not in the root cpuset".
            check_other_shields(controller, cpus)?;
        }
        validate_take(cpus, &online, &root_cpus)?;
        check_other_shields(controller, cpus)?;

        let host_path = root.join(format!("{prefix}.host"));
        let pool = root.join(format!("{prefix}.pool"));
        let state_file = shield_state_path(state_dir, prefix);
        for p in [&host_path, &pool] {
            if p.exists() {
                return Err(CgroupError::Exists { path: p.clone() });
            }
        }

        // v2: the cpuset controller must be enabled for the root's children.
        let mut enabled_cpuset = false;
        if controller.version == CgroupVersion::V2 {
            let sc = root.join("cgroup.subtree_control");
            enabled_cpuset = !read_str(&sc)?.split_whitespace().any(|c| c == "cpuset");
        }
        let mut mode = match controller.version {
            CgroupVersion::V1 => ShieldMode::V1Shield,
            CgroupVersion::V2 => ShieldMode::V2Partition,
        };
        let record = StateRecord::Shield {
            version: STATE_VERSION,
            owner: Owner::current(),
            controller: controller.clone(),
            mode,
            // The host path is recorded even for a partition, so that a crash
            // during the fallback to a shield is repaired too.
            host: Some(host_path.clone()),
            pool: pool.clone(),
            cpus: cpus.clone(),
            enabled_cpuset,
        };
        write_state(&state_file, &record)?;

        let mut shield = CpuShield {
            controller: controller.clone(),
            mode,
            host: None,
            pool: pool.clone(),
            cpus: cpus.clone(),
            enabled_cpuset,
            state_file,
            report: ShieldReport {
                mode,
                tasks: MoveCount::default(),
                unshielded: Vec::new(),
                exclusive: false,
                partition_refused: None,
            },
            released: false,
        };
        // From here on, dropping `shield` on error undoes whatever was done.
        if enabled_cpuset {
            write_str(&root.join("cgroup.subtree_control"), "+cpuset")?;
        }
        let mems = match controller.version {
            CgroupVersion::V1 => read_str(&root.join("cpuset.mems"))?.trim().to_string(),
            CgroupVersion::V2 => String::new(),
        };
        let host_cpus = {
            let mut h = root_cpus.clone();
            h.difference_with(cpus);
            h
        };

        mkdir(&pool)?;
        if controller.version == CgroupVersion::V2 {
            // Threaded, so that single threads (ours, adopted ones) can join
            // it from their process's cgroup: v2 moves single threads only
            // within a threaded domain (here the root's).
            make_threaded(&pool);
            write_str(&pool.join("cpuset.cpus"), &cpus.to_string())?;
            if let Err(why) = make_partition(&pool, cpus) {
                mode = ShieldMode::V2Shield;
                shield.mode = mode;
                shield.report.mode = mode;
                shield.report.partition_refused = Some(why);
            }
        } else {
            write_str(&pool.join("cpuset.cpus"), &cpus.to_string())?;
            write_str(&pool.join("cpuset.mems"), &mems)?;
            shield.report.exclusive = write_str(&pool.join("cpuset.cpu_exclusive"), "1").is_ok();
        }

        if mode != ShieldMode::V2Partition {
            mkdir(&host_path)?;
            shield.host = Some(host_path.clone());
            if controller.version == CgroupVersion::V2 {
                // Threaded like the pool, in the root's threaded domain:
                // threads move in one by one (only the root's own, as on
                // v1), and a host thread can still join the pool later.
                make_threaded(&host_path);
            }
            write_str(&host_path.join("cpuset.cpus"), &host_cpus.to_string())?;
            if controller.version == CgroupVersion::V1 {
                write_str(&host_path.join("cpuset.mems"), &mems)?;
            }
            shield.report.tasks = move_all(controller, root, &host_path)?;
            shield.report.unshielded = other_busy_cgroups(controller, &[&host_path, &pool]);
        }
        Ok(shield)
    }

    /// The taken CPUs.
    pub fn cpus(&self) -> &CpuSet {
        &self.cpus
    }

    /// How the CPUs were taken.
    pub fn mode(&self) -> ShieldMode {
        self.mode
    }

    /// What taking did.
    pub fn report(&self) -> &ShieldReport {
        &self.report
    }

    /// The pool cgroup (the taken CPUs).
    pub fn pool_path(&self) -> &Path {
        &self.pool
    }

    /// The host cgroup (shield modes).
    pub fn host_path(&self) -> Option<&Path> {
        self.host.as_deref()
    }

    /// The state file.
    pub fn state_file(&self) -> &Path {
        &self.state_file
    }

    /// Moves thread `tid` into the pool, so that it may run on the taken
    /// CPUs. On v2 the pool is a threaded child of the root, so the thread's
    /// process must be in the root's threaded domain (the root cgroup, or
    /// the shield's threaded host cgroup); a thread of a process in another
    /// cgroup (a systemd service, a domain's own cgroup) is refused by the
    /// kernel ([`CgroupError::Move`], saying so).
    pub fn attach(&self, tid: i32) -> Result<()> {
        let file = self.controller.threads_file(&self.pool);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .map_err(io_err(&file))?;
        f.write_all(format!("{tid}\n").as_bytes())
            .map_err(|source| {
                let source = match (self.controller.version, source.raw_os_error()) {
                    (CgroupVersion::V2, Some(libc::EOPNOTSUPP)) => {
                        let now = thread_cgroup(&self.controller, "cpuset", tid)
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|_| "?".into());
                        io::Error::new(
                            source.kind(),
                            format!(
                                "{source}: on cgroup v2 a single thread can only join the pool \
                                 from the root cgroup's threaded domain, and it is in {now}"
                            ),
                        )
                    }
                    _ => source,
                };
                CgroupError::Move {
                    tid,
                    path: file.clone(),
                    source,
                }
            })
    }

    /// Moves thread `tid` out of the pool to where the host's tasks run
    /// (the shield's host cgroup, or the root): for a thread given back
    /// while the shield stays up (an adopted vCPU whose domain left the
    /// pool). A thread that is gone is not an error.
    pub fn detach(&self, tid: i32) -> Result<()> {
        let target = self
            .host_cgroup()
            .unwrap_or_else(|| self.controller.mount.clone());
        let file = self.controller.threads_file(&target);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .map_err(io_err(&file))?;
        match f.write_all(format!("{tid}\n").as_bytes()) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            Err(source) => Err(CgroupError::Move {
                tid,
                path: file.clone(),
                source,
            }),
        }
    }

    /// The cgroup holding the host's tasks, if the shield made one (a v2
    /// partition has none; a fallback may have made one).
    fn host_cgroup(&self) -> Option<PathBuf> {
        self.host.clone().or_else(|| {
            let p = self.pool.with_file_name(host_name_of(&self.pool));
            p.exists().then_some(p)
        })
    }

    /// Gives the CPUs back: tasks return to the root cgroup, our cgroups and
    /// the state file are removed. Returns how many tasks moved back.
    pub fn release(mut self) -> Result<MoveCount> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<MoveCount> {
        if self.released {
            return Ok(MoveCount::default());
        }
        let host = self.host_cgroup();
        let count = undo_shield(
            &self.controller,
            host.as_deref(),
            &self.pool,
            self.enabled_cpuset,
        )?;
        remove_file(&self.state_file)?;
        self.released = true;
        Ok(count)
    }
}

impl Drop for CpuShield {
    fn drop(&mut self) {
        let released = self.release_inner();
        best_effort(
            format_args!("releasing the CPU shield {}", self.pool.display()),
            released,
        );
    }
}

/// v2: makes a new cgroup threaded. Best effort: without it (a kernel
/// before 4.14, or a parent that cannot be a threaded domain) whole
/// processes can still be moved in.
pub(super) fn make_threaded(cgroup: &Path) {
    best_effort(
        "making a cgroup threaded (whole processes only without it)",
        write_str(&cgroup.join("cgroup.type"), "threaded"),
    );
}

/// v2: makes `pool` (whose `cpuset.cpus` are `cpus`) a partition root and
/// checks that the kernel gave it exactly those CPUs. On refusal the pool
/// is a member again and the error says why (the kernel's reason, as in
/// `root invalid (Cpu list in cpuset.cpus not exclusive)`).
fn make_partition(pool: &Path, cpus: &CpuSet) -> std::result::Result<(), String> {
    let part = pool.join("cpuset.cpus.partition");
    if !part.exists() {
        return Err(format!(
            "{}: no cpuset partitions (Linux < 5.11)",
            part.display()
        ));
    }
    let check = || -> std::result::Result<(), String> {
        write_str(&part, "root").map_err(|e| e.to_string())?;
        let state = read_str(&part).map_err(|e| e.to_string())?;
        if state.trim() != "root" {
            return Err(format!("{}: {}", part.display(), state.trim()));
        }
        let eff = pool.join("cpuset.cpus.effective");
        let got = read_cpus(&eff).map_err(|e| e.to_string())?;
        if &got != cpus {
            return Err(format!(
                "{}: the partition got cpus {got}, not {cpus}",
                eff.display()
            ));
        }
        Ok(())
    };
    let r = check();
    if r.is_err() {
        best_effort(
            "making a refused partition a member again",
            write_str(&part, "member"),
        );
    }
    r
}

fn host_name_of(pool: &Path) -> String {
    let name = pool.file_name().and_then(|n| n.to_str()).unwrap_or("");
    format!("{}.host", name.strip_suffix(".pool").unwrap_or(name))
}

fn validate_take(cpus: &CpuSet, online: &CpuSet, root_cpus: &CpuSet) -> Result<()> {
    if cpus.is_empty() {
        return Err(CgroupError::NoCpus);
    }
    for cpu in cpus.iter() {
        if !online.contains(cpu) {
            let exists = Path::new(&format!("/sys/devices/system/cpu/cpu{cpu}")).exists();
            return Err(CgroupError::CpuIllegal {
                cpu,
                reason: if exists { "offline" } else { "no such cpu" },
            });
        }
        if !root_cpus.contains(cpu) {
            return Err(CgroupError::CpuIllegal {
                cpu,
                reason: "not in the root cpuset",
            });
        }
    }
    let mut rest = root_cpus.intersection(online);
    rest.difference_with(cpus);
    if rest.is_empty() {
        return Err(CgroupError::WouldTakeAll {
            cpus: cpus.clone(),
            online: online.clone(),
        });
    }
    Ok(())
}

/// Refuses CPUs held by another pool (`*.pool` cgroup) and a second shield
/// (`*.host` cgroup): host tasks can only be in one shield.
fn check_other_shields(controller: &Controller, cpus: &CpuSet) -> Result<()> {
    let root = &controller.mount;
    let Ok(entries) = fs::read_dir(root) else {
        return Ok(());
    };
    let mut hosts = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if !path.is_dir() {
            continue;
        }
        if name.ends_with(".pool") {
            let taken = read_cpus(&path.join("cpuset.cpus")).unwrap_or_default();
            if let Some(cpu) = taken.intersection(cpus).first() {
                return Err(CgroupError::CpuInUse { cpu, owner: path });
            }
        } else if name.ends_with(".host") {
            hosts.push(path);
        }
    }
    match hosts.into_iter().next() {
        Some(path) => Err(CgroupError::ShieldExists { path }),
        None => Ok(()),
    }
}

fn other_busy_cgroups(controller: &Controller, ours: &[&Path]) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(&controller.mount) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !ours.contains(&p.as_path()))
        .filter(|p| {
            let file = if is_threaded(controller, p) {
                p.join("cgroup.threads")
            } else {
                controller.bulk_file(p)
            };
            read_ids(&file).map(|v| !v.is_empty()).unwrap_or(false)
        })
        .collect()
}
