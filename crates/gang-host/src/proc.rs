//! The one reader of a process's and a thread's files under `/proc`:
//! `stat`, `schedstat`, `status`, `comm` and the `task` directory.
//!
//! Why our own module and not the `procfs` crate: we read six fields of
//! `stat`, one of `schedstat` and three of `status`. That is one short parse
//! each, here, against `procfs` plus `procfs-core` and their dependencies
//! (bitflags, hex, chrono or a time crate, ...) compiled on every build for a
//! few lines of use; and `procfs` parses every field of a line eagerly and
//! refuses a short one, where we want what is there. What makes the hand
//! parsing robust is that it is done once: the name in `stat` may hold
//! spaces and parentheses (`(qemu (x) y)`), so the fields are split after the
//! *last* `)` of the line, by [`Stat::parse`] only, with the unit tests below.
//!
//! Every reader returns `None` when the process or thread is gone (or the
//! file does not parse): callers treat both the same.

use crate::sys::Tid;
use gang_core::cpuset::CpuId;
use gang_core::time::Nanos;

/// The fields of `/proc/PID/stat` (or `/proc/PID/task/TID/stat`) we use.
///
/// Fields 3 to 15 are in every kernel's line; the later ones are optional,
/// so that a short line (an old kernel, a test sample) still yields the
/// earlier ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Field 3: `R`, `S`, `D`, `Z`, `X`, `t`, ...
    pub state: char,
    /// Field 4: the parent process.
    pub ppid: i32,
    /// Field 9: the kernel's `PF_*` flags.
    pub flags: u64,
    /// Field 14: user time, clock ticks.
    pub utime: u64,
    /// Field 15: system time, clock ticks.
    pub stime: u64,
    /// Field 22: start time, clock ticks since boot.
    pub start_time: Option<u64>,
    /// Field 39: the CPU it last ran on.
    pub processor: Option<CpuId>,
    /// Field 40: real-time priority (0 for a normal policy).
    pub rt_priority: Option<u32>,
    /// Field 41: scheduling policy (`SCHED_*`).
    pub policy: Option<u32>,
}

/// `PF_KTHREAD`: the task is a kernel thread.
pub const PF_KTHREAD: u64 = 0x0020_0000;

impl Stat {
    /// Parses a `stat` line.
    pub fn parse(text: &str) -> Option<Stat> {
        // The name (field 2) may contain spaces and parentheses: the fields
        // from 3 on follow its last ')'.
        let (_, rest) = text.rsplit_once(')')?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        // Field n is f[n - 3].
        let field = |n: usize| f.get(n - 3).copied();
        let num = |n: usize| field(n)?.parse().ok();
        Some(Stat {
            state: field(3)?.chars().next()?,
            ppid: field(4)?.parse().ok()?,
            flags: num(9)?,
            utime: num(14)?,
            stime: num(15)?,
            start_time: num(22),
            processor: field(39).and_then(|v| v.parse().ok()),
            rt_priority: field(40).and_then(|v| v.parse().ok()),
            policy: field(41).and_then(|v| v.parse().ok()),
        })
    }

    /// User plus system time, clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        self.utime + self.stime
    }

    /// Whether it is a zombie or dead (`Z`, `X`, `x`).
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }

    /// Whether it is a kernel thread.
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }
}

/// `/proc/PID/stat`, or with a thread `/proc/PID/task/TID/stat`.
pub fn stat(pid: i32, tid: Option<Tid>) -> Option<Stat> {
    Stat::parse(&std::fs::read_to_string(task_file(pid, tid, "stat")).ok()?)
}

/// CPU time of thread `tid` of process `pid` so far, ns (the first field of
/// `/proc/PID/task/TID/schedstat`).
pub fn schedstat_ns(pid: i32, tid: Tid) -> Option<Nanos> {
    let text = std::fs::read_to_string(task_file(pid, Some(tid), "schedstat")).ok()?;
    parse_schedstat(&text)
}

/// The run time, ns, of a `schedstat` line (`run_ns wait_ns slices`).
pub fn parse_schedstat(text: &str) -> Option<Nanos> {
    text.split_whitespace().next()?.parse().ok()
}

/// The threads of process `pid`, in TID order (empty if it is gone).
pub fn threads(pid: i32) -> Vec<Tid> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut tids: Vec<Tid> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    tids
}

/// The name (`comm`) of a process, or with `tid` of one of its threads,
/// without the newline.
pub fn comm(pid: i32, tid: Option<Tid>) -> Option<String> {
    let text = std::fs::read_to_string(task_file(pid, tid, "comm")).ok()?;
    Some(text.strip_suffix('\n').unwrap_or(&text).to_string())
}

/// The fields of `/proc/PID/status` we use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    /// `Tgid:`, the process a thread belongs to.
    pub tgid: Option<i32>,
    /// `Threads:`, how many threads the process has.
    pub threads: Option<u32>,
    /// `VmRSS:`, resident memory, kB (none for a kernel thread).
    pub rss_kb: Option<u64>,
}

impl Status {
    /// Parses the text of a `status` file.
    pub fn parse(text: &str) -> Status {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))?
                .split_whitespace()
                .next()
        };
        Status {
            tgid: field("Tgid:").and_then(|v| v.parse().ok()),
            threads: field("Threads:").and_then(|v| v.parse().ok()),
            rss_kb: field("VmRSS:").and_then(|v| v.parse().ok()),
        }
    }
}

/// `/proc/PID/status` (a TID in place of the PID gives the thread's).
pub fn status(pid: i32) -> Option<Status> {
    Some(Status::parse(
        &std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
    ))
}

fn task_file(pid: i32, tid: Option<Tid>, file: &str) -> String {
    match tid {
        Some(tid) => format!("/proc/{pid}/task/{tid}/{file}"),
        None => format!("/proc/{pid}/{file}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real line (a kernel 6.x `cat /proc/self/stat`) with its name
    /// replaced.
    fn line(name: &str) -> String {
        format!(
            "4242 ({name}) S 4100 4242 4100 34816 4242 4194560 110 0 0 0 7 3 0 0 20 0 1 0 \
             987654 5828608 230 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 \
             0 0 0 0 0 0 0 0 0 0 0"
        )
    }

    #[test]
    fn a_stat_line_yields_its_fields() {
        let s = Stat::parse(&line("cat")).unwrap();
        assert_eq!(
            s,
            Stat {
                state: 'S',
                ppid: 4100,
                flags: 4194560,
                utime: 7,
                stime: 3,
                start_time: Some(987654),
                processor: Some(3),
                rt_priority: Some(0),
                policy: Some(0),
            }
        );
        assert_eq!(s.cpu_ticks(), 10);
        assert!(!s.is_dead() && !s.is_kernel_thread());
    }

    #[test]
    fn a_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let plain = Stat::parse(&line("cat")).unwrap();
        for name in ["qemu (x) y", "a) S 1 2 3", ")", "((", "x y z", ""] {
            assert_eq!(Stat::parse(&line(name)), Some(plain), "{name:?}");
        }
    }

    #[test]
    fn a_short_line_yields_the_early_fields_and_a_broken_one_none() {
        let short = "42 (qemu (x) y) S 1 42 42 0 -1 4194304 100 0 0 0 150 25 0 0 20 0 9 0";
        let s = Stat::parse(short).unwrap();
        assert_eq!((s.ppid, s.cpu_ticks(), s.start_time), (1, 175, None));
        assert_eq!(s.processor, None);
        assert_eq!(Stat::parse("42 (q"), None);
        assert_eq!(Stat::parse("42 (q) S 1 2"), None);
        assert_eq!(Stat::parse(""), None);
    }

    #[test]
    fn state_and_flags_read_as_the_kernel_means_them() {
        let zombie = line("z").replacen(") S ", ") Z ", 1);
        assert!(Stat::parse(&zombie).unwrap().is_dead());
        let kthread = line("kworker/0:1").replacen(" 4194560 ", " 2129984 ", 1);
        assert!(Stat::parse(&kthread).unwrap().is_kernel_thread());
    }

    #[test]
    fn schedstat_and_status_parse() {
        assert_eq!(parse_schedstat("123456789 2000 17\n"), Some(123456789));
        assert_eq!(parse_schedstat(""), None);
        let text = "Name:\tcat\nUmask:\t0022\nState:\tR (running)\nTgid:\t4242\n\
                    Ngid:\t0\nPid:\t4243\nVmRSS:\t    1876 kB\nThreads:\t3\n";
        let s = Status::parse(text);
        assert_eq!(
            s,
            Status {
                tgid: Some(4242),
                threads: Some(3),
                rss_kb: Some(1876)
            }
        );
        assert_eq!(Status::parse("Name:\tkthreadd\nTgid:\t2\n").rss_kb, None);
    }

    #[test]
    fn this_process_reads_as_itself_and_a_missing_one_as_none() {
        let pid = std::process::id() as i32;
        let tid = crate::sys::gettid();
        let s = stat(pid, None).unwrap();
        assert!(s.start_time.is_some() && s.processor.is_some());
        let me = stat(pid, Some(tid)).unwrap();
        assert_eq!((me.state, me.ppid), ('R', s.ppid));
        assert!(threads(pid).contains(&tid));
        assert!(schedstat_ns(pid, tid).is_some());
        assert_eq!(status(tid).unwrap().tgid, Some(pid));
        assert!(status(pid).unwrap().rss_kb.is_some());
        assert!(comm(pid, Some(tid)).is_some_and(|c| !c.ends_with('\n')));
        assert_eq!(stat(pid, Some(0)), None);
        assert_eq!(schedstat_ns(pid, 0), None);
        assert_eq!(comm(pid, Some(0)), None);
        assert!(threads(-1).is_empty());
    }
}
