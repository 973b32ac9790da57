//! Detection: which cgroup controllers this host mounts, and where.
//!
//! [`Hierarchy::detect`] reads `/proc/self/mountinfo` (and the v2 root's
//! `cgroup.controllers`). A controller bound to a v1 hierarchy is preferred
//! (it is then not available on v2); without a v1 freezer, the v2 core
//! `cgroup.freeze` serves as one. Nothing here changes the host.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{read_str, CgroupError, Result, MOUNTINFO};

/// cgroup version of a hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupVersion {
    /// One hierarchy per controller (`cgroup` file system).
    V1,
    /// The unified hierarchy (`cgroup2` file system).
    V2,
}

/// Where a controller can be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Controller {
    /// Version of the hierarchy.
    pub version: CgroupVersion,
    /// Mount point of the hierarchy's root.
    pub mount: PathBuf,
}

impl Controller {
    /// The file listing a cgroup's tasks, by thread (v1 `tasks`, v2
    /// `cgroup.threads`).
    pub(super) fn threads_file(&self, cgroup: &Path) -> PathBuf {
        match self.version {
            CgroupVersion::V1 => cgroup.join("tasks"),
            CgroupVersion::V2 => cgroup.join("cgroup.threads"),
        }
    }

    /// The file used to move tasks in bulk: v1 moves single threads through
    /// `tasks`; v2 moves whole processes through `cgroup.procs`.
    pub(super) fn bulk_file(&self, cgroup: &Path) -> PathBuf {
        match self.version {
            CgroupVersion::V1 => cgroup.join("tasks"),
            CgroupVersion::V2 => cgroup.join("cgroup.procs"),
        }
    }
}

/// The cgroup controllers this host offers us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hierarchy {
    /// The cpuset controller, if mounted (v1 preferred when bound there: a
    /// controller bound to a v1 hierarchy is not available on v2).
    pub cpuset: Option<Controller>,
    /// The freezer: the v1 controller, else the v2 core `cgroup.freeze`.
    pub freezer: Option<Controller>,
    /// The memory controller (v1 preferred when bound there), for domains'
    /// memory limits.
    pub memory: Option<Controller>,
    /// The v2 unified hierarchy's mount point, if any.
    pub unified: Option<PathBuf>,
    /// Controllers available on the v2 hierarchy (its `cgroup.controllers`).
    pub unified_controllers: Vec<String>,
}

impl Hierarchy {
    /// Reads `/proc/self/mountinfo` (and the v2 root's `cgroup.controllers`).
    pub fn detect() -> Result<Hierarchy> {
        let text = read_str(Path::new(MOUNTINFO))?;
        Ok(Self::from_mountinfo(&text, |mount| {
            fs::read_to_string(mount.join("cgroup.controllers"))
                .map(|s| s.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default()
        }))
    }

    /// Builds the description from mountinfo text; `v2_controllers` lists the
    /// controllers of a v2 mount.
    pub fn from_mountinfo(text: &str, v2_controllers: impl Fn(&Path) -> Vec<String>) -> Hierarchy {
        let mut h = Hierarchy::default();
        for line in text.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            if l.len() < 5 || r.len() < 3 {
                continue;
            }
            let (root, mount) = (l[3], PathBuf::from(unescape_mount(l[4])));
            match r[0] {
                "cgroup" => {
                    let opts: Vec<&str> = r[2].split(',').collect();
                    let ctl = Controller {
                        version: CgroupVersion::V1,
                        mount,
                    };
                    // Prefer a mount of the hierarchy's root; keep the first.
                    for (name, slot) in [
                        ("cpuset", &mut h.cpuset),
                        ("freezer", &mut h.freezer),
                        ("memory", &mut h.memory),
                    ] {
                        if opts.contains(&name) && (slot.is_none() || root == "/") {
                            let replace = match slot {
                                None => true,
                                Some(c) => c.version == CgroupVersion::V2,
                            };
                            if replace {
                                *slot = Some(ctl.clone());
                            }
                        }
                    }
                }
                "cgroup2" if h.unified.is_none() => {
                    h.unified_controllers = v2_controllers(&mount);
                    h.unified = Some(mount);
                }
                _ => {}
            }
        }
        if let Some(mount) = &h.unified {
            let v2 = Controller {
                version: CgroupVersion::V2,
                mount: mount.clone(),
            };
            if h.cpuset.is_none() && h.unified_controllers.iter().any(|c| c == "cpuset") {
                h.cpuset = Some(v2.clone());
            }
            if h.memory.is_none() && h.unified_controllers.iter().any(|c| c == "memory") {
                h.memory = Some(v2.clone());
            }
            if h.freezer.is_none() {
                // cgroup.freeze is a core v2 file (Linux 5.2+), no controller.
                h.freezer = Some(v2);
            }
        }
        h
    }

    /// A hierarchy offering `freezer` alone: for an owner that already
    /// knows its freezer controller (see [`super::Cgroups::new`]).
    pub fn of_freezer(freezer: Controller) -> Hierarchy {
        Hierarchy {
            freezer: Some(freezer),
            ..Hierarchy::default()
        }
    }

    /// The cpuset controller, or a clear error.
    pub fn cpuset(&self) -> Result<&Controller> {
        self.cpuset.as_ref().ok_or(CgroupError::NoController {
            controller: "cpuset",
        })
    }

    /// The freezer, or a clear error.
    pub fn freezer(&self) -> Result<&Controller> {
        self.freezer.as_ref().ok_or(CgroupError::NoController {
            controller: "freezer",
        })
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\\ooo`.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b.get(i + 1..i + 4);
        if b[i] == b'\\' {
            if let Some(o) = oct.filter(|o| o.iter().all(|c| (b'0'..=b'7').contains(c))) {
                let v = o.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
