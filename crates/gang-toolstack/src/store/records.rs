//! The store's records and the ids and arguments that name them.
//!
//! # Purpose
//!
//! The types the rest of the toolstack reads and writes through
//! [`Store`](super::Store): [`PoolRecord`], [`DomainRecord`], [`NewDomain`],
//! a domain's [`DomainState`] and [`ProcessIdentity`], the ids
//! ([`PoolId`]; `DomainId` is `gang_core`'s) and the arguments that name a
//! pool or a domain ([`Ref`]). They are plain values: nothing here touches
//! the database.
//!
//! # Invariants
//!
//! * An argument of all digits is an id, anything else a name (`xl`'s rule,
//!   [`Ref::parse`]); hence [`check_name`] refuses names of all digits, as
//!   well as empty names and names with control characters.
//! * A CPU map has one distinct CPU of the domain's pool per vCPU
//!   ([`check_cpu_map`]).
//!
//! A [`DomainState`] (with its [`ShutdownReason`]) is stored as its serde
//! JSON form (`domains.state_json`): renaming one of their variants or
//! fields changes the file format.

use std::fmt;

use gang_core::time::SharedTime;
use gang_core::{CpuId, CpuSet, DomainId, Policy};
use serde::{Deserialize, Serialize};

use super::{Result, StoreError};

/// A pool's identifier; `Pool-0` is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PoolId(pub u32);

impl PoolId {
    /// `Pool-0`.
    pub const POOL0: PoolId = PoolId(0);
}

impl fmt::Display for PoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An argument naming a pool or a domain, as xl takes it: all digits = an
/// id, else a name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ref<I> {
    /// By id.
    Id(I),
    /// By name.
    Name(String),
}

/// A pool argument.
pub type PoolRef = Ref<PoolId>;
/// A domain argument.
pub type DomainRef = Ref<DomainId>;

/// Ids that an argument of all digits names.
pub trait RawId: Sized {
    /// The id with this number.
    fn from_raw(raw: u32) -> Self;
}

impl RawId for PoolId {
    fn from_raw(raw: u32) -> Self {
        PoolId(raw)
    }
}

impl RawId for DomainId {
    fn from_raw(raw: u32) -> Self {
        DomainId(raw)
    }
}

impl<I: RawId> Ref<I> {
    /// `xl`'s rule: all digits = an id, else a name.
    pub fn parse(arg: &str) -> Ref<I> {
        match parse_id(arg) {
            Some(id) => Ref::Id(I::from_raw(id)),
            None => Ref::Name(arg.to_owned()),
        }
    }
}

impl<I: fmt::Display> fmt::Display for Ref<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ref::Id(id) => write!(f, "{id}"),
            Ref::Name(name) => f.write_str(name),
        }
    }
}

impl From<PoolId> for PoolRef {
    fn from(id: PoolId) -> Self {
        Ref::Id(id)
    }
}

impl From<DomainId> for DomainRef {
    fn from(id: DomainId) -> Self {
        Ref::Id(id)
    }
}

impl<I: RawId> From<&str> for Ref<I> {
    fn from(arg: &str) -> Self {
        Ref::parse(arg)
    }
}

impl<I: Clone> From<&Ref<I>> for Ref<I> {
    fn from(r: &Ref<I>) -> Self {
        r.clone()
    }
}

/// All digits (and at least one) = an id. Digits that overflow `u32` name
/// nothing, so they are kept as an id that cannot exist.
fn parse_id(arg: &str) -> Option<u32> {
    if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(arg.parse::<u32>().unwrap_or(u32::MAX))
}

/// A pool's scheduler: the API's type (stored as its name, `gang` or
/// `host`).
pub use gang_proto::Sched;

/// One pool as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRecord {
    /// Its id.
    pub id: PoolId,
    /// Its unique name.
    pub name: String,
    /// Its scheduler.
    pub sched: Sched,
    /// The host CPUs it owns (a shared pool: the CPUs `Pool-0` lends it).
    pub cpus: CpuSet,
    /// How many domains are in it.
    pub domain_count: u32,
    /// A gang pool sharing its CPUs with `Pool-0`.
    pub shared: bool,
    /// Its time from a clock shared with other hosts (`None`: this host's
    /// monotonic clock from when its runtime starts).
    #[serde(default)]
    pub time: Option<SharedTime>,
}

/// Why a domain shut down: the API's type (stored as its kebab-case name).
pub use gang_proto::ShutdownReason;

/// A domain's lifecycle state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum DomainState {
    /// Running (its vCPUs may be blocked).
    Running,
    /// Paused by the toolstack.
    Paused,
    /// Shut down, not yet destroyed.
    Shutdown {
        /// Why.
        reason: ShutdownReason,
    },
    /// Crashed (its process died unexpectedly), not yet destroyed.
    Crashed {
        /// What happened, for people.
        reason: String,
    },
}

/// Identifies the host process of a domain across pid reuse: a pid and the
/// process's start time (e.g. field 22 of `/proc/PID/stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessIdentity {
    /// The process id.
    pub pid: u32,
    /// The process's start time (clock ticks since boot).
    pub start_time: u64,
}

/// What [`Store::create_domain`](super::Store::create_domain) needs.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDomain {
    /// Unique name (not all digits).
    pub name: String,
    /// The pool to create it in (must have CPUs).
    pub pool: PoolRef,
    /// Number of vCPUs (≥ 1).
    pub vcpus: u32,
    /// Memory in MB.
    pub memory_mb: u64,
    /// The whole xl configuration as JSON (opaque to the store).
    pub config_json: String,
    /// Gang policy, if any.
    pub policy: Option<Policy>,
    /// CPU map (one distinct pool CPU per vCPU), if any.
    pub cpu_map: Option<Vec<CpuId>>,
    /// Initial state (`Running`, or `Paused` for `create -p`).
    pub state: DomainState,
    /// Its UUID.
    pub uuid: String,
}

/// One domain as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRecord {
    /// Its id (≥ 1; 0 is the host).
    pub id: DomainId,
    /// Its unique name.
    pub name: String,
    /// Its pool.
    pub pool: PoolId,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Memory in MB.
    pub memory_mb: u64,
    /// The whole xl configuration as JSON.
    pub config_json: String,
    /// Gang policy, if set.
    pub policy: Option<Policy>,
    /// CPU map, if set: vCPU i runs on `cpu_map[i]`.
    pub cpu_map: Option<Vec<CpuId>>,
    /// Lifecycle state.
    pub state: DomainState,
    /// Its host process, once started.
    pub process: Option<ProcessIdentity>,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: u64,
    /// Its UUID (given at creation).
    pub uuid: String,
    /// The daemon's live facts about the running domain (JSON, opaque here).
    pub live_json: Option<String>,
}

/// Names are non-empty, not all digits (those are ids) and printable.
pub(super) fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || parse_id(name).is_some() || name.chars().any(char::is_control) {
        return Err(StoreError::InvalidName(name.to_owned()));
    }
    Ok(())
}

/// One distinct CPU of the pool per vCPU.
pub(super) fn check_cpu_map(
    domain: &str,
    vcpus: u32,
    map: &[CpuId],
    pool_cpus: &CpuSet,
) -> Result<()> {
    let bad = |reason: String| StoreError::InvalidCpuMap {
        domain: domain.to_owned(),
        reason,
    };
    if map.len() != vcpus as usize {
        return Err(bad(format!(
            "{} cpus for {vcpus} vcpus (need one per vcpu)",
            map.len()
        )));
    }
    let mut seen = CpuSet::new();
    for &cpu in map {
        if !pool_cpus.contains(cpu) {
            return Err(bad(format!("cpu {cpu} is not in the domain's cpupool")));
        }
        if !seen.insert(cpu) {
            return Err(bad(format!("cpu {cpu} appears twice")));
        }
    }
    Ok(())
}
