//! # gang-proto: the daemon's API (our libxl)
//!
//! **Wire format.** Newline-delimited JSON over a Unix stream socket: the
//! client writes one [`Request`] per line, the daemon answers each with one
//! [`Response`] line carrying the same `id`, in order. Every message carries
//! the API `version`; a daemon refuses a request of another major version
//! with [`ErrorCode::Version`] and a message saying both versions, so an old
//! CLI never misreads a new daemon. Plain text on purpose: `socat` can talk
//! to the daemon, and the messages are the documentation.
//!
//! **Errors** are values: [`ApiError`] has a machine-readable [`ErrorCode`]
//! and the message the CLI prints, worded as xl words it (`Pool 'x' does not
//! exist`, `cpu 3 illegal or not free`).
//!
//! **Invariants.** One response per request, in request order; a malformed
//! line is answered (with [`ErrorCode::BadRequest`]), never dropped; a line
//! longer than [`MAX_LINE`] is refused before it is parsed.
//!
//! The request set grows with the toolstack; this version carries the pool
//! and domain life cycle and the gang parameters.

mod cosched;
mod trace;
mod wire;
pub mod xl;

pub use trace::{
    TraceDomain, TraceEvent, TraceEventKind, TraceMeta, TraceSlot, TRACE_LATE_SWITCH_NS,
};

use serde::{Deserialize, Serialize};

pub use cosched::{CoschedInfo, CoschedSource};
pub use gang_config::DomainConfig;
pub use gang_core::time::{SharedTime, WallClock};
pub use gang_core::{CpuId, CpuList, CpuSet, Policy};
pub use wire::{parse_request, serve, Client, ClientError, Request, Response};

/// The API version this crate speaks. Version 2 made the values typed
/// (policies, CPU lists, run states, domain configurations) where version 1
/// sent display strings; a version-1 request is refused with both versions
/// named (see ARCHITECTURE.md, "The API").
pub const VERSION: u32 = 2;

/// Longest accepted message line, in bytes.
pub const MAX_LINE: usize = 4 << 20;

/// A pool named by id (all digits) or by name, as xl takes it.
pub type PoolArg = String;
/// A domain named by id (all digits) or by name, as xl takes it.
pub type DomainArg = String;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum RequestBody {
    /// Host and toolstack facts (`gang info`).
    Info,
    /// All domains (`gang list`).
    ListDomains {
        /// With each domain's configuration and the threads it holds
        /// (`list -l`; reading every thread costs).
        #[serde(default)]
        detail: bool,
    },
    /// All pools (`gang cpupool-list`).
    ListPools,
    /// A new pool.
    CreatePool {
        /// Its name.
        name: String,
        /// Its scheduler.
        sched: Sched,
        /// Its CPUs (`all` is the host's; empty for none).
        cpus: CpuList,
        /// A gang pool that shares its CPUs with `Pool-0` (they stay in
        /// `Pool-0` too; the host keeps a slot of each): for hosts too small
        /// to give CPUs away.
        #[serde(default)]
        shared: bool,
        /// Its time from a clock shared with other hosts (gang pools).
        #[serde(default)]
        time: Option<SharedTime>,
    },
    /// Remove a pool.
    DestroyPool {
        /// Which.
        pool: PoolArg,
    },
    /// Rename a pool.
    RenamePool {
        /// Which.
        pool: PoolArg,
        /// The new name.
        name: String,
    },
    /// Move free CPUs into a pool.
    PoolCpuAdd {
        /// Which.
        pool: PoolArg,
        /// CPUs (`all` is the host's).
        cpus: CpuList,
    },
    /// Free CPUs of a pool.
    PoolCpuRemove {
        /// Which.
        pool: PoolArg,
        /// CPUs (`all` is the host's).
        cpus: CpuList,
    },
    /// Move a domain to another pool, in any state.
    PoolMigrate {
        /// The domain.
        domain: DomainArg,
        /// The target pool.
        pool: PoolArg,
    },
    /// Create a domain from a parsed xl config.
    CreateDomain {
        /// The domain configuration.
        config: Box<DomainConfig>,
        /// Leave it paused.
        paused: bool,
    },
    /// Pause a domain.
    Pause {
        /// Which.
        domain: DomainArg,
    },
    /// Unpause a domain.
    Unpause {
        /// Which.
        domain: DomainArg,
    },
    /// Ask a domain to shut down (a process gets SIGTERM; a VM a power-off
    /// request).
    Shutdown {
        /// Which.
        domain: DomainArg,
    },
    /// Ask a domain to reboot.
    Reboot {
        /// Which.
        domain: DomainArg,
    },
    /// Destroy a domain at once.
    Destroy {
        /// Which.
        domain: DomainArg,
    },
    /// Read gang parameters (`gang sched-gang`), of one pool or all, of one
    /// domain or all.
    SchedGangGet {
        /// The pool, or all.
        pool: Option<PoolArg>,
        /// The domain, or all.
        #[serde(default)]
        domain: Option<DomainArg>,
    },
    /// Set a domain's gang parameters (`gang sched-gang -d … [-t …] [-c …]`).
    SchedGangSet {
        /// The domain.
        domain: DomainArg,
        /// Its CPU map (one CPU of its pool per vCPU, in CPU order; `all`
        /// is the pool's), or `None`: keep it (or let the scheduler choose).
        cpus: Option<CpuList>,
        /// Its policy, or `None`: keep the one it has.
        policy: Option<Policy>,
    },
    /// The vCPUs of some domains (`gang vcpu-list`); empty: all.
    VcpuList {
        /// The domains.
        domains: Vec<DomainArg>,
    },
    /// The daemon's message ring (`gang dmesg`).
    Dmesg {
        /// Clear it after reading.
        clear: bool,
    },
    /// Where a domain's console output is (`gang console`).
    Console {
        /// Which.
        domain: DomainArg,
    },
    /// Bytes typed at a domain's console (a VM's serial port receives
    /// them; process domains have no console input).
    ConsoleInput {
        /// Which.
        domain: DomainArg,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// The recent slots a gang pool's dispatchers gave a domain's vCPUs, or
    /// every domain's of a pool (`gang trace DOM | --pool POOL`): the
    /// runtime's own record of what ran where, with what the daemon did
    /// meanwhile. Exactly one of `domain` and `pool`. (Both optional since
    /// `pool` came: a request naming a domain is what it always was.)
    Trace {
        /// The domain.
        #[serde(default)]
        domain: Option<DomainArg>,
        /// The gang pool: all its domains.
        #[serde(default)]
        pool: Option<PoolArg>,
        /// Only what ended in the last this-many ns (`None`: all the
        /// runtime still holds).
        #[serde(default)]
        last_ns: Option<u64>,
    },
}

impl RequestBody {
    /// Whether the request changes the daemon's state (pools, domains,
    /// their parameters): the daemon records who asked for these. Reading
    /// (lists, `sched-gang` without `-t`, `dmesg`, `console`, `trace`) and
    /// typing at a console do not.
    pub fn changes_state(&self) -> bool {
        match self {
            RequestBody::CreatePool { .. }
            | RequestBody::DestroyPool { .. }
            | RequestBody::RenamePool { .. }
            | RequestBody::PoolCpuAdd { .. }
            | RequestBody::PoolCpuRemove { .. }
            | RequestBody::PoolMigrate { .. }
            | RequestBody::CreateDomain { .. }
            | RequestBody::Pause { .. }
            | RequestBody::Unpause { .. }
            | RequestBody::Shutdown { .. }
            | RequestBody::Reboot { .. }
            | RequestBody::Destroy { .. }
            | RequestBody::SchedGangSet { .. } => true,
            RequestBody::Info
            | RequestBody::ListDomains { .. }
            | RequestBody::ListPools
            | RequestBody::SchedGangGet { .. }
            | RequestBody::VcpuList { .. }
            | RequestBody::Dmesg { .. }
            | RequestBody::Console { .. }
            | RequestBody::ConsoleInput { .. }
            | RequestBody::Trace { .. } => false,
        }
    }
}

/// A pool's scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sched {
    /// The gang scheduler (the daemon's dispatchers).
    Gang,
    /// Linux's scheduler, domains pinned to the pool's CPUs.
    Host,
}

impl Sched {
    /// The name in configs and output (`sched="gang"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Sched::Gang => "gang",
            Sched::Host => "host",
        }
    }
}

impl std::fmt::Display for Sched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A scheduler name other than `gang` and `host`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Unknown scheduler")]
pub struct UnknownScheduler;

impl std::str::FromStr for Sched {
    type Err = UnknownScheduler;
    fn from_str(s: &str) -> Result<Self, UnknownScheduler> {
        match s {
            "gang" => Ok(Sched::Gang),
            "host" => Ok(Sched::Host),
            _ => Err(UnknownScheduler),
        }
    }
}

/// A domain's run state: xl's six flags (`list` prints them as `r-----`,
/// see [`RunState::xl_flags`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    /// Running on a CPU now (`r`).
    pub running: bool,
    /// Runnable or blocked, not on a CPU now (`b`).
    pub blocked: bool,
    /// Paused (`p`).
    pub paused: bool,
    /// Shut down, and why (`s` and the reason's letter).
    pub shutdown: Option<ShutdownReason>,
    /// Being destroyed (`d`).
    pub dying: bool,
}

/// Why a domain shut down: Xen's shutdown codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShutdownReason {
    /// Powered off (its program ended well).
    Poweroff,
    /// Rebooted.
    Reboot,
    /// Suspended.
    Suspend,
    /// Crashed.
    Crash,
    /// Its watchdog fired.
    Watchdog,
    /// Soft reset.
    SoftReset,
}

impl ShutdownReason {
    /// Xen's code (`list -v`'s Reason-Code).
    pub fn code(self) -> u32 {
        match self {
            ShutdownReason::Poweroff => 0,
            ShutdownReason::Reboot => 1,
            ShutdownReason::Suspend => 2,
            ShutdownReason::Crash => 3,
            ShutdownReason::Watchdog => 4,
            ShutdownReason::SoftReset => 5,
        }
    }

    /// xl's letter in the state's fifth column.
    pub fn letter(self) -> char {
        match self {
            ShutdownReason::Poweroff => '-',
            ShutdownReason::Reboot => 'r',
            ShutdownReason::Suspend => 's',
            ShutdownReason::Crash => 'c',
            ShutdownReason::Watchdog => 'w',
            ShutdownReason::SoftReset => 'S',
        }
    }
}

impl RunState {
    /// xl's six characters: `r` running, `b` blocked, `p` paused, `s` shut
    /// down, the shutdown reason's letter (`-` poweroff, `r` reboot, `s`
    /// suspend, `c` crash, `w` watchdog, `S` soft reset), `d` dying; `-`
    /// where not set.
    pub fn xl_flags(&self) -> String {
        let flag = |on: bool, c: char| if on { c } else { '-' };
        [
            flag(self.running, 'r'),
            flag(self.blocked, 'b'),
            flag(self.paused, 'p'),
            flag(self.shutdown.is_some(), 's'),
            self.shutdown.map_or('-', ShutdownReason::letter),
            flag(self.dying, 'd'),
        ]
        .iter()
        .collect()
    }

    /// Shut down or crashed: its program no longer runs.
    pub fn ended(&self) -> bool {
        self.shutdown.is_some()
    }

    /// The state xl's six characters show ([`RunState::xl_flags`] read
    /// back), for scripts and tests that read `list`; `None` if `text` is
    /// not six such characters.
    pub fn parse_xl_flags(text: &str) -> Option<RunState> {
        let c: Vec<char> = text.chars().collect();
        if c.len() != 6 {
            return None;
        }
        let flag = |i: usize, on: char| match c[i] {
            '-' => Some(false),
            x if x == on => Some(true),
            _ => None,
        };
        let reason = match c[4] {
            '-' => ShutdownReason::Poweroff,
            'r' => ShutdownReason::Reboot,
            's' => ShutdownReason::Suspend,
            'c' => ShutdownReason::Crash,
            'w' => ShutdownReason::Watchdog,
            'S' => ShutdownReason::SoftReset,
            _ => return None,
        };
        let shut = flag(3, 's')?;
        if !shut && c[4] != '-' {
            return None;
        }
        Some(RunState {
            running: flag(0, 'r')?,
            blocked: flag(1, 'b')?,
            paused: flag(2, 'p')?,
            shutdown: shut.then_some(reason),
            dying: flag(5, 'd')?,
        })
    }
}

/// A pool as the daemon reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolInfo {
    /// Pool id (`Pool-0` is 0).
    pub id: u32,
    /// Name.
    pub name: String,
    /// Scheduler.
    pub sched: Sched,
    /// Its CPUs.
    pub cpus: Vec<CpuId>,
    /// Number of domains in it.
    pub domains: u32,
    /// A gang pool sharing its CPUs with `Pool-0`.
    #[serde(default)]
    pub shared: bool,
}

/// A domain as the daemon reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainInfo {
    /// Domain id.
    pub id: u32,
    /// Name.
    pub name: String,
    /// Memory, MiB.
    pub memory_mb: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// Its run state.
    pub state: RunState,
    /// CPU time, seconds.
    pub cpu_time_s: f64,
    /// Its pool's name.
    pub pool: String,
    /// Its UUID.
    #[serde(default)]
    pub uuid: String,
    /// Why it crashed or shut down, for people.
    #[serde(default)]
    pub reason: Option<String>,
    /// Its whole configuration (asked with `detail`: `list -l`).
    #[serde(default)]
    pub config: Option<Box<DomainConfig>>,
    /// The host threads it holds now, process by process (asked with
    /// `detail`).
    #[serde(default)]
    pub threads: Vec<ThreadInfo>,
    /// Its co-scheduling metrics over the last second, for a running
    /// domain of a gang pool (`top`'s ALLRUN, COSTOP, READY, SKEW99
    /// columns). Added within version 2: absent from older daemons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cosched: Option<CoschedInfo>,
}

/// A host thread a domain holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadInfo {
    /// Its process.
    pub pid: i32,
    /// The thread.
    pub tid: i32,
    /// Its name (`comm`).
    pub name: String,
    /// The vCPU it is, when the domain names vCPU threads (else the
    /// domain's gang holds every thread of its program).
    pub vcpu: Option<u32>,
    /// Its state letter (`R` running or runnable, `S` sleeping, ...).
    pub state: String,
    /// The CPU it ran on last.
    pub cpu: Option<CpuId>,
}

/// One vCPU (`vcpu-list`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VcpuInfo {
    /// Domain name.
    pub domain: String,
    /// Domain id.
    pub domid: u32,
    /// vCPU number.
    pub vcpu: u32,
    /// The CPU it is on now, if running.
    pub cpu: Option<CpuId>,
    /// Running now.
    pub running: bool,
    /// Blocked (waiting for something).
    pub blocked: bool,
    /// Paused or offline.
    pub paused: bool,
    /// CPU time, seconds.
    pub time_s: f64,
    /// Hard affinity (xl CPU list, `all` or `none`).
    pub hard_affinity: String,
    /// Soft affinity.
    pub soft_affinity: String,
}

/// One domain's gang parameters (`sched-gang`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedGangDomain {
    /// Name.
    pub name: String,
    /// Id.
    pub id: u32,
    /// Its policy, if one is set.
    pub policy: Option<Policy>,
    /// The CPU map (vCPU i on the i-th CPU), if set.
    pub cpu_map: Option<Vec<CpuId>>,
    /// The accounting window: the policy's period (1 s for `be`/`no`), ns.
    pub window_ns: u64,
    /// CPU time its vCPUs were given in the last window, ns (all vCPUs).
    pub received_ns: u64,
    /// Its co-scheduling metrics over the last second, while it runs
    /// (`sched-gang -v`). Added within version 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cosched: Option<CoschedInfo>,
}

/// One gang pool's parameters (`sched-gang`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedGangPool {
    /// Pool name.
    pub name: String,
    /// Pool id.
    pub id: u32,
    /// Scheduling grain, ns.
    pub grain_ns: u64,
    /// Its CPUs.
    pub cpus: Vec<CpuId>,
    /// Shares its CPUs with `Pool-0`.
    pub shared: bool,
    /// The host's own slot per CPU in a shared pool, `(period, active)` ns.
    pub host_slot_ns: Option<(u64, u64)>,
    /// Whether its dispatchers are running (a pool starts them with its first
    /// domain).
    pub active: bool,
    /// Its domains.
    pub domains: Vec<SchedGangDomain>,
    /// How its dispatchers kept time lately (running pools with switches).
    #[serde(default)]
    pub dispatch: Option<DispatchHealth>,
    /// Its time from a clock shared with other hosts, if so.
    #[serde(default)]
    pub time: Option<SharedTime>,
    /// That clock's state on this host (pools on a shared clock).
    #[serde(default)]
    pub clock: Option<ClockInfo>,
}

/// How well this host's wall clock is disciplined (the kernel's `adjtimex`
/// state that chrony or ptp4l keep), and whether it stepped under a
/// running pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockInfo {
    /// Synchronised (neither `TIME_ERROR` nor `STA_UNSYNC`).
    pub synchronised: bool,
    /// Estimated error, µs.
    pub est_error_us: i64,
    /// Maximum error, µs.
    pub max_error_us: i64,
    /// TAI - UTC as the kernel was told, s (0: CLOCK_TAI equals REALTIME).
    pub tai_offset_s: i32,
    /// How far the clock stepped against the running pool's epoch, ns
    /// (beyond the noise): the pool keeps its epoch and is out of phase
    /// with other hosts by this much until it restarts.
    pub stepped_ns: Option<i64>,
}

/// How a running gang pool's dispatchers kept time in a recent window
/// (`sched-gang`), from the runtime's switch log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchHealth {
    /// The window, ns (the last second).
    pub window_ns: u64,
    /// Switches made in it, all CPUs together.
    pub switches: u64,
    /// How late those switches were, ns: median, 99th percentile, largest.
    pub late_p50_ns: u64,
    /// See `late_p50_ns`.
    pub late_p99_ns: u64,
    /// See `late_p50_ns`.
    pub late_max_ns: u64,
    /// The dispatchers' spin before a switch (learnt from their wake-up
    /// latency), median, ns.
    pub spin_ns: u64,
}

/// What the daemon answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ResponseBody {
    /// Done, nothing to report.
    Done,
    /// `Info`: ordered field/value pairs, xl's `info` fields.
    Info {
        /// The fields.
        fields: Vec<(String, String)>,
    },
    /// `ListDomains`.
    Domains {
        /// The domains.
        domains: Vec<DomainInfo>,
    },
    /// `ListPools`.
    Pools {
        /// The pools.
        pools: Vec<PoolInfo>,
    },
    /// A new pool or domain.
    Created {
        /// Its id.
        id: u32,
    },
    /// `SchedGangGet`.
    SchedGang {
        /// The gang pools.
        pools: Vec<SchedGangPool>,
    },
    /// `VcpuList`.
    Vcpus {
        /// The vCPUs, by domain then vCPU.
        vcpus: Vec<VcpuInfo>,
    },
    /// `Dmesg`.
    Dmesg {
        /// The lines, oldest first.
        lines: Vec<String>,
    },
    /// `Console`.
    Console {
        /// The file the domain's console output goes to.
        path: String,
        /// Whether the domain is still running (more output may come).
        live: bool,
    },
    /// `Trace`.
    Trace {
        /// The pool clock now, ns.
        now_ns: u64,
        /// The slots, oldest first, at most the newest 65,536.
        slots: Vec<TraceSlot>,
        /// On a shared clock: pool time 0 is this long after the pool's
        /// base (whole cycles), so a slot's start on the shared clock is
        /// `base + since_base_ns + start_ns`, comparable across hosts.
        #[serde(default)]
        since_base_ns: Option<u64>,
        /// Pool time 0 on this host's CLOCK_MONOTONIC, ns (to compare
        /// pools of two daemons on one host).
        #[serde(default)]
        epoch_mono_ns: u64,
        /// The domains the slots name.
        #[serde(default)]
        domains: Vec<TraceDomain>,
        /// Pauses, migrations, admission changes and late switches in the
        /// window, oldest first.
        #[serde(default)]
        events: Vec<TraceEvent>,
        /// Host, pool, clock, grain and window.
        #[serde(default)]
        meta: TraceMeta,
    },
}

/// Machine-readable error classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// Not parseable as a request of this version.
    BadRequest,
    /// Another API version.
    Version,
    /// No such domain or pool.
    NotFound,
    /// Refused: the request is valid but the state does not allow it
    /// (admission control, xl's rules).
    Refused,
    /// The caller may not do this.
    Permission,
    /// The daemon failed (the state is unchanged).
    Internal,
}

/// An error answer: a class, and the message the CLI prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The class.
    pub code: ErrorCode,
    /// What to print (xl's wording where xl has one).
    pub message: String,
}

impl ApiError {
    /// An error of class `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    use std::path::Path;

    fn handler(body: RequestBody) -> Result<ResponseBody, ApiError> {
        match body {
            RequestBody::ListPools => Ok(ResponseBody::Pools {
                pools: vec![PoolInfo {
                    id: 0,
                    name: "Pool-0".into(),
                    sched: Sched::Host,
                    cpus: vec![0, 1],
                    domains: 0,
                    shared: false,
                }],
            }),
            RequestBody::DestroyPool { pool } if pool == "Pool-0" => Err(ApiError::new(
                ErrorCode::Refused,
                "Can't destroy cpupool 'Pool-0'",
            )),
            RequestBody::CreatePool { .. } => Ok(ResponseBody::Created { id: 1 }),
            _ => Ok(ResponseBody::Done),
        }
    }

    fn pair() -> (Client, std::thread::JoinHandle<std::io::Result<()>>) {
        let (a, b) = UnixStream::pair().expect("socket pair");
        let server = std::thread::spawn(move || serve(b, handler));
        (Client::over(a).expect("client"), server)
    }

    #[test]
    fn requests_round_trip_in_order_with_errors_as_values() {
        let (mut client, server) = pair();
        match client.call(RequestBody::ListPools).unwrap() {
            ResponseBody::Pools { pools } => assert_eq!(pools[0].name, "Pool-0"),
            other => panic!("{other:?}"),
        }
        let created = client
            .call(RequestBody::CreatePool {
                name: "GangSched-Pool".into(),
                sched: Sched::Gang,
                cpus: CpuList::default(),
                shared: false,
                time: None,
            })
            .unwrap();
        assert_eq!(created, ResponseBody::Created { id: 1 });
        match client.call(RequestBody::DestroyPool {
            pool: "Pool-0".into(),
        }) {
            Err(ClientError::Api(e)) => {
                assert_eq!(e.code, ErrorCode::Refused);
                assert_eq!(e.to_string(), "Can't destroy cpupool 'Pool-0'");
            }
            other => panic!("{other:?}"),
        }
        drop(client);
        server.join().unwrap().unwrap();
    }

    fn raw(line: &str) -> Response {
        let (a, b) = UnixStream::pair().expect("socket pair");
        let server = std::thread::spawn(move || serve(b, handler));
        let mut w = a.try_clone().unwrap();
        w.write_all(line.as_bytes()).unwrap();
        w.write_all(b"\n").unwrap();
        let mut answer = String::new();
        BufReader::new(a).read_line(&mut answer).unwrap();
        drop(w);
        let _ = server;
        serde_json::from_str(answer.trim_end()).unwrap()
    }

    #[test]
    fn malformed_lines_get_an_answer_not_silence() {
        let r = raw("this is not json");
        assert_eq!(r.result.unwrap_err().code, ErrorCode::BadRequest);
        let r = raw(r#"{"version":2,"id":7,"op":"no-such-op"}"#);
        assert_eq!(r.id, 7);
        assert_eq!(r.result.unwrap_err().code, ErrorCode::BadRequest);
        let r = raw(r#"{"id":3,"op":"info"}"#);
        assert!(r.result.unwrap_err().message.contains("no API version"));
    }

    #[test]
    fn another_version_is_refused_naming_both() {
        let r = raw(r#"{"version":1,"id":5,"op":"info"}"#);
        assert_eq!(r.id, 5);
        let e = r.result.unwrap_err();
        assert_eq!(e.code, ErrorCode::Version);
        assert_eq!(
            e.message,
            "the client speaks API version 1, this daemon speaks version 2"
        );
    }

    #[test]
    fn messages_are_plain_self_describing_json() {
        let req = Request {
            version: VERSION,
            id: 9,
            body: RequestBody::SchedGangSet {
                domain: "my-domain".into(),
                cpus: Some(CpuList::parse("1-2").unwrap()),
                policy: Some("tt,100ms,40ms".parse().unwrap()),
            },
        };
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(
            text,
            r#"{"version":2,"id":9,"op":"sched-gang-set","domain":"my-domain","cpus":"1-2","policy":{"policy":"time-triggered","timing":{"from":0,"period":100000000,"active":40000000},"space_filling":false}}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), req);
    }

    #[test]
    fn changes_are_told_from_reads() {
        let pause = RequestBody::Pause { domain: "d".into() };
        assert!(pause.changes_state());
        assert!(!RequestBody::ListDomains { detail: true }.changes_state());
        assert!(!RequestBody::Dmesg { clear: false }.changes_state());
        assert!(RequestBody::SchedGangSet {
            domain: "d".into(),
            cpus: None,
            policy: None
        }
        .changes_state());
    }

    #[test]
    fn an_oversized_line_is_refused_before_parsing() {
        let r = raw(&"x".repeat(MAX_LINE + 10));
        let e = r.result.unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.message.contains("longer than the limit"), "{}", e.message);
    }

    #[test]
    fn a_missing_daemon_is_a_clear_error() {
        let err = Client::connect(Path::new("/nonexistent/gang.sock")).unwrap_err();
        assert!(
            err.to_string().contains("is `gang daemon` running?"),
            "{err}"
        );
    }
}
