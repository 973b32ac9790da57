//! The tracepoints' side of the recorder: where their ids and formats are
//! read ([`TracingDir`]: the host's tracing directory, or a copy taken in a
//! private mount namespace), the field offsets a `format` file gives
//! ([`Format`]), and a raw sample parsed at them ([`Layout`] into an
//! [`Event`]).

use super::*;

/// The tracepoints the recorder reads.
pub const TRACEPOINTS: [&str; 3] = ["sched_switch", "sched_waking", "sched_wakeup"];

/// Where the tracepoints' ids and formats are read: the host's tracing
/// directory (`/sys/kernel/tracing`, else the debugfs one) where one is
/// mounted; else a copy of the files taken in a private mount namespace
/// (`unshare --mount`, tracefs mounted there only), so the host's mounts
/// never change, even if this process is killed half-way (the namespace
/// dies with the helper). The ids and formats are the kernel's, not the
/// mount's: they stay valid.
#[derive(Debug)]
pub enum TracingDir {
    /// The host's mounted tracing directory.
    Host(PathBuf),
    /// The files of [`TRACEPOINTS`], by path under `events/sched/`.
    Copied(HashMap<String, String>),
}

/// Where the copy is mounted inside the private namespace.
const PRIVATE_MOUNT: &str = "/sys/kernel/tracing";

impl TracingDir {
    /// The host's directory, or a private copy (root, for the mount).
    pub fn open() -> Result<TracingDir, SchedEventsError> {
        let candidates = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
        let has = |d: &Path| d.join("events/sched/sched_switch/id").exists();
        if let Some(d) = candidates.iter().find(|d| has(Path::new(d))) {
            return Ok(TracingDir::Host(PathBuf::from(d)));
        }
        // Each file between marker lines: `==> NAME/FILE` then its text.
        let mut script = format!("mount -t tracefs nodev {PRIVATE_MOUNT} || exit 1\n");
        for name in TRACEPOINTS {
            for file in ["id", "format"] {
                script += &format!(
                    "echo '==> {name}/{file}'; cat {PRIVATE_MOUNT}/events/sched/{name}/{file} || exit 1\n"
                );
            }
        }
        let out = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .ok_or_else(|| {
                SchedEventsError::NoTracefs(format!(
                    "{}, nor tracefs in a private mount namespace (unshare --mount)",
                    candidates.join(", ")
                ))
            })?;
        let mut files = HashMap::new();
        let text = String::from_utf8_lossy(&out.stdout);
        let mut current: Option<(String, String)> = None;
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("==> ") {
                files.extend(current.take());
                current = Some((name.to_string(), String::new()));
            } else if let Some((_, body)) = current.as_mut() {
                body.push_str(line);
                body.push('\n');
            }
        }
        files.extend(current);
        Ok(TracingDir::Copied(files))
    }

    /// The text of `events/sched/NAME/FILE`.
    pub fn read(&self, name: &str, file: &str) -> Result<String, SchedEventsError> {
        match self {
            TracingDir::Host(dir) => std::fs::read_to_string(self.path(name, file)).map_err(|e| {
                SchedEventsError::Format {
                    path: dir.join("events/sched").join(name).join(file),
                    reason: e.to_string(),
                }
            }),
            TracingDir::Copied(files) => {
                files
                    .get(&format!("{name}/{file}"))
                    .cloned()
                    .ok_or_else(|| SchedEventsError::Format {
                        path: self.path(name, file),
                        reason: "not copied from the private mount".into(),
                    })
            }
        }
    }

    /// Where `events/sched/NAME/FILE` is (or was, for a copy), for messages.
    pub fn path(&self, name: &str, file: &str) -> PathBuf {
        let dir = match self {
            TracingDir::Host(dir) => dir.as_path(),
            TracingDir::Copied(_) => Path::new(PRIVATE_MOUNT),
        };
        dir.join("events/sched").join(name).join(file)
    }
}

/// A tracepoint: its id and the byte offsets and sizes of its fields in a
/// raw sample.
#[derive(Debug, Clone)]
pub struct Format {
    /// The perf config (the tracepoint's id).
    pub id: u64,
    fields: HashMap<String, (usize, usize)>,
}

impl Format {
    /// Parses an `id` and a `format` file's text.
    pub fn parse(id: &str, format: &str) -> Option<Format> {
        let mut fields = HashMap::new();
        for line in format.lines() {
            let Some(rest) = line.trim().strip_prefix("field:") else {
                continue;
            };
            let mut parts = rest.split(';').map(str::trim);
            let decl = parts.next()?;
            let name = decl.split_whitespace().last()?;
            let name = name.split('[').next()?.to_string();
            let num = |key: &str, p: Option<&str>| -> Option<usize> {
                p?.strip_prefix(key)?.trim().parse().ok()
            };
            let offset = num("offset:", parts.next())?;
            let size = num("size:", parts.next())?;
            fields.insert(name, (offset, size));
        }
        Some(Format {
            id: id.trim().parse().ok()?,
            fields,
        })
    }

    /// Reads tracepoint `name`'s `id` and `format`.
    pub fn read(dir: &TracingDir, name: &str) -> Result<Format, SchedEventsError> {
        Format::parse(&dir.read(name, "id")?, &dir.read(name, "format")?).ok_or_else(|| {
            SchedEventsError::Format {
                path: dir.path(name, "format"),
                reason: "does not parse".into(),
            }
        })
    }

    /// The field `name`'s (offset, size), or an error naming it.
    pub(super) fn field(
        &self,
        name: &str,
        path: &Path,
    ) -> Result<(usize, usize), SchedEventsError> {
        self.fields
            .get(name)
            .copied()
            .ok_or_else(|| SchedEventsError::Format {
                path: path.to_path_buf(),
                reason: format!("no field {name}"),
            })
    }
}

/// Reads a little-endian signed integer field of `size` bytes.
fn int_at(raw: &[u8], (offset, size): (usize, usize)) -> Option<i64> {
    let b = raw.get(offset..offset + size)?;
    Some(match size {
        1 => i64::from(b[0] as i8),
        2 => i64::from(i16::from_ne_bytes([b[0], b[1]])),
        4 => i64::from(i32::from_ne_bytes(b.try_into().ok()?)),
        8 => i64::from_ne_bytes(b.try_into().ok()?),
        _ => return None,
    })
}

/// One scheduler event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `prev` left the CPU (still runnable if `preempted`), `next` got it.
    Switch {
        /// The outgoing thread (0: idle).
        prev: Tid,
        /// Whether it left runnable (its `prev_state` was running).
        preempted: bool,
        /// The incoming thread (0: idle).
        next: Tid,
    },
    /// `tid` was woken (`sched_waking` or `sched_wakeup`).
    Wake {
        /// The thread.
        tid: Tid,
    },
}

/// How a raw sample of each tracepoint is read.
#[derive(Debug, Clone, Copy)]
pub(super) struct Layout {
    pub(super) prev_pid: (usize, usize),
    pub(super) prev_state: (usize, usize),
    pub(super) next_pid: (usize, usize),
    pub(super) wake_pid: (usize, usize),
}

/// `TASK_REPORT`'s state bits; a switch-out with none of them set left the
/// thread runnable (`R`, or `R+` when preempted: bit 0x100 on newer kernels).
const TASK_REPORT_MASK: i64 = 0xff;

impl Layout {
    pub(super) fn parse(&self, switch: bool, raw: &[u8]) -> Option<Event> {
        if switch {
            Some(Event::Switch {
                prev: int_at(raw, self.prev_pid)? as Tid,
                preempted: int_at(raw, self.prev_state)? & TASK_REPORT_MASK == 0,
                next: int_at(raw, self.next_pid)? as Tid,
            })
        } else {
            Some(Event::Wake {
                tid: int_at(raw, self.wake_pid)? as Tid,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SWITCH_FORMAT: &str = "name: sched_switch\nID: 372\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
        \tfield:pid_t prev_pid;\toffset:24;\tsize:4;\tsigned:1;\n\
        \tfield:long prev_state;\toffset:32;\tsize:8;\tsigned:1;\n\
        \tfield:pid_t next_pid;\toffset:56;\tsize:4;\tsigned:1;\n\nprint fmt: \"...\"\n";

    #[test]
    fn formats_give_ids_and_offsets() {
        let f = Format::parse("372\n", SWITCH_FORMAT).unwrap();
        assert_eq!(f.id, 372);
        assert_eq!(f.fields["prev_pid"], (24, 4));
        assert_eq!(f.fields["prev_comm"], (8, 16));
        assert_eq!(f.fields["prev_state"], (32, 8));
        let mut raw = vec![0u8; 64];
        raw[24..28].copy_from_slice(&77i32.to_ne_bytes());
        raw[32..40].copy_from_slice(&0x100i64.to_ne_bytes());
        raw[56..60].copy_from_slice(&9i32.to_ne_bytes());
        let layout = Layout {
            prev_pid: f.fields["prev_pid"],
            prev_state: f.fields["prev_state"],
            next_pid: f.fields["next_pid"],
            wake_pid: (24, 4),
        };
        assert_eq!(
            layout.parse(true, &raw),
            Some(Event::Switch {
                prev: 77,
                preempted: true,
                next: 9
            })
        );
        raw[32..40].copy_from_slice(&1i64.to_ne_bytes());
        assert!(matches!(
            layout.parse(true, &raw),
            Some(Event::Switch {
                preempted: false,
                ..
            })
        ));
        assert_eq!(layout.parse(false, &raw), Some(Event::Wake { tid: 77 }));
        assert_eq!(layout.parse(true, &raw[..30]), None);
    }
}
