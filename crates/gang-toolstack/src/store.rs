//! The daemon's transactional state: cpupools and domains in one SQLite file.
//!
//! # Purpose
//!
//! [`Store`] is what xenstore plus the hypervisor's cpupool bookkeeping are to
//! Xen: the single source of truth for which pools exist, which host CPUs each
//! owns, which domains exist, where they run and with which gang parameters.
//! It survives daemon crashes: reopening the file gives everything back.
//!
//! # Transactions and concurrency
//!
//! * The database runs in WAL mode with a busy timeout, so several [`Store`]
//!   handles (threads or processes) can use the same file.
//! * Every public operation is exactly one SQLite transaction. Operations that
//!   change something take the write lock when they start (`BEGIN IMMEDIATE`),
//!   read, check every rule, then write; on any error the transaction is rolled
//!   back, so **a failed operation changes nothing**.
//!
//! # Invariants (the rules Xen's hypervisor enforces for `xl`)
//!
//! * A host CPU is in at most one pool; CPUs in no pool are *free*
//!   (`pool_cpus.cpu` is the primary key). Only host CPUs can be in a pool
//!   (`cpu N illegal or not free`).
//! * `Pool-0` (id 0, scheduler `host`, every host CPU at first) is created on
//!   the first open, can never be destroyed and keeps at least one CPU.
//! * Pool and domain ids increase and are never reused, even after destroy.
//!   Pool names and domain names are unique; a name is never all digits,
//!   because an argument of all digits is an id ("all digits = an id, else a
//!   name", as in `xl`).
//! * A *shared* gang pool borrows CPUs of `Pool-0` instead (`lent_cpus`): a
//!   CPU is lent to one pool at most, stays in `Pool-0`, and cannot leave
//!   `Pool-0` while lent (`cpu N is shared with cpupool 'x'`). It is how a
//!   host too small to give CPUs away runs gangs as wide as the host.
//! * A pool with domains can neither be destroyed nor lose its last CPU.
//! * A domain cannot be created in, or migrated to, a pool with no CPU.
//! * A domain's CPU map, when set, has one distinct CPU of its pool per vCPU;
//!   a CPU used by a map cannot be removed from the pool, and migrating a
//!   domain clears its map (the scheduler of the new pool picks CPUs).
//!
//! The domain configuration (`config_json`) is opaque here: the store keeps
//! the JSON text it is given.
//!
//! # Schema
//!
//! The `meta` table holds `schema_version`; [`Store::open`] applies the
//! migrations from the file's version up to [`SCHEMA_VERSION`] (version 0 is
//! an empty file). See `MIGRATIONS` for the tables.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gang_core::{CpuId, CpuSet, DomainId, Policy};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde::{Deserialize, Serialize};

/// The schema version this code writes (the number of migrations).
pub const SCHEMA_VERSION: u32 = 2;

/// The name of the host pool, id 0.
pub const POOL0_NAME: &str = "Pool-0";

/// How long an operation waits for another handle's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything that can go wrong. Messages that `xl` has are `xl`'s, exactly.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `sched` is neither `gang` nor `host`.
    #[error("Unknown scheduler")]
    UnknownScheduler,
    /// A pool of that name exists already.
    #[error("Pool name \"{0}\" already exists")]
    PoolExists(String),
    /// A CPU is not a host CPU or is in a pool already.
    #[error("cpu {0} illegal or not free")]
    CpuNotFree(CpuId),
    /// The pool argument (id or name, as given) names no pool.
    #[error("Pool '{0}' does not exist")]
    PoolNotFound(String),
    /// `Pool-0` can never be destroyed (xl's message for a refused destroy).
    #[error("Can't destroy cpupool '{0}'")]
    CannotDestroyPool0(String),
    /// The pool still has domains (xl's message for a refused destroy).
    #[error("Can't destroy cpupool '{0}'")]
    PoolHasDomains(String),
    /// A CPU to remove is not in the pool.
    #[error("cpu {cpu} is not in cpupool '{pool}'")]
    CpuNotInPool {
        /// The CPU.
        cpu: CpuId,
        /// The pool's name.
        pool: String,
    },
    /// A shared pool must use the gang scheduler.
    #[error("a shared cpupool must use the gang scheduler")]
    SharedNeedsGang,
    /// A CPU to lend to a shared pool is not in `Pool-0` or is lent already.
    #[error("cpu {0} illegal or not free (a shared cpupool takes cpus of Pool-0 that no other pool shares)")]
    CpuNotLendable(CpuId),
    /// A CPU of `Pool-0` is lent to a shared pool and cannot leave `Pool-0`.
    #[error("cpu {cpu} is shared with cpupool '{pool}'")]
    CpuLent {
        /// The CPU.
        cpu: CpuId,
        /// The shared pool's name.
        pool: String,
    },
    /// The removal would leave `Pool-0`, or a pool with domains, without CPU.
    #[error("Can't remove the last cpu of cpupool '{0}'")]
    LastCpu(String),
    /// A CPU to remove is in the CPU map of a domain of the pool.
    #[error("cpu {cpu} is in use by domain '{domain}'")]
    CpuInUse {
        /// The CPU.
        cpu: CpuId,
        /// The domain's name.
        domain: String,
    },
    /// A domain cannot be created in or moved to a pool without CPU.
    #[error("cpupool '{0}' has no cpus")]
    PoolHasNoCpus(String),
    /// A pool or domain name that is empty, all digits, or has control characters.
    #[error("invalid name '{0}'")]
    InvalidName(String),
    /// The domain argument (id or name, as given) names no domain.
    #[error("{0} is an invalid domain identifier (rc=-6)")]
    DomainNotFound(String),
    /// A domain of that name exists already.
    #[error("Domain name \"{0}\" already exists")]
    DomainExists(String),
    /// A domain must have at least one vCPU.
    #[error("invalid number of vcpus: {0}")]
    InvalidVcpus(u32),
    /// The CPU map does not fit the domain and its pool.
    #[error("invalid cpu map for domain '{domain}': {reason}")]
    InvalidCpuMap {
        /// The domain's name.
        domain: String,
        /// What is wrong.
        reason: String,
    },
    /// The file was written by a newer version of gang.
    #[error("state database schema version {found} is newer than supported version {supported}")]
    SchemaTooNew {
        /// The file's version.
        found: u32,
        /// [`SCHEMA_VERSION`].
        supported: u32,
    },
    /// A stored value cannot be read back (the file was edited or damaged).
    #[error("corrupt state database: {0}")]
    Corrupt(String),
    /// A value could not be encoded to JSON.
    #[error("cannot encode state: {0}")]
    Json(#[from] serde_json::Error),
    /// SQLite failed (I/O, lock timeout, ...).
    #[error("state database error: {0}")]
    Database(#[from] rusqlite::Error),
}

/// Result of the store's operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

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

/// A pool's scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sched {
    /// The gang scheduler (the daemon's dispatchers).
    Gang,
    /// Linux's scheduler, domains pinned to the pool's CPUs.
    Host,
}

impl Sched {
    /// The name used in configs and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Sched::Gang => "gang",
            Sched::Host => "host",
        }
    }
}

impl fmt::Display for Sched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Sched {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "gang" => Ok(Sched::Gang),
            "host" => Ok(Sched::Host),
            _ => Err(StoreError::UnknownScheduler),
        }
    }
}

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
}

/// Why a domain shut down (the reason letter of `xl list`'s state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShutdownReason {
    /// `-`
    Poweroff,
    /// `r`
    Reboot,
    /// `s`
    Suspend,
    /// `c`
    Crash,
    /// `w`
    Watchdog,
    /// `S`
    SoftReset,
}

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

/// What [`Store::create_domain`] needs.
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

/// A migration takes the file from version `i` to `i + 1`.
type Migration = fn(&Transaction<'_>) -> rusqlite::Result<()>;

/// `MIGRATIONS[i]` upgrades version `i` to `i + 1`.
const MIGRATIONS: [Migration; SCHEMA_VERSION as usize] = [migrate_0_to_1, migrate_1_to_2];

/// Version 1: the first schema.
fn migrate_0_to_1(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE meta (
             key   TEXT PRIMARY KEY,
             value TEXT NOT NULL
         );
         -- next id to allocate, per kind ('pool', 'domain'): ids never reused
         CREATE TABLE counters (
             kind TEXT PRIMARY KEY,
             next INTEGER NOT NULL
         );
         -- the host's CPUs, as given to the last open
         CREATE TABLE host_cpus (
             cpu INTEGER PRIMARY KEY
         );
         CREATE TABLE pools (
             id    INTEGER PRIMARY KEY,
             name  TEXT NOT NULL UNIQUE,
             sched TEXT NOT NULL CHECK (sched IN ('gang', 'host'))
         );
         -- cpu is the key: a CPU is in at most one pool
         CREATE TABLE pool_cpus (
             cpu  INTEGER PRIMARY KEY,
             pool INTEGER NOT NULL REFERENCES pools(id)
         );
         CREATE INDEX pool_cpus_pool ON pool_cpus(pool);
         CREATE TABLE domains (
             id            INTEGER PRIMARY KEY,
             name          TEXT NOT NULL UNIQUE,
             pool          INTEGER NOT NULL REFERENCES pools(id),
             vcpus         INTEGER NOT NULL CHECK (vcpus >= 1),
             memory_mb     INTEGER NOT NULL,
             config_json   TEXT NOT NULL,
             policy_json   TEXT,
             cpu_map_json  TEXT,
             state_json    TEXT NOT NULL,
             pid           INTEGER,
             start_time    INTEGER,
             created_at    INTEGER NOT NULL
         );
         CREATE INDEX domains_pool ON domains(pool);
         INSERT INTO counters (kind, next) VALUES ('pool', 1), ('domain', 1);",
    )
}

/// Version 2: shared gang pools (CPUs lent by `Pool-0`), domain UUIDs, and
/// the live facts of a running domain (its vCPU threads, console file).
fn migrate_1_to_2(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "ALTER TABLE pools ADD COLUMN shared INTEGER NOT NULL DEFAULT 0;
         -- CPUs of Pool-0 lent to a shared gang pool: at most one pool each
         CREATE TABLE lent_cpus (
             cpu  INTEGER PRIMARY KEY,
             pool INTEGER NOT NULL REFERENCES pools(id)
         );
         ALTER TABLE domains ADD COLUMN uuid TEXT NOT NULL DEFAULT '';
         ALTER TABLE domains ADD COLUMN live_json TEXT;",
    )
}

/// The daemon's state database. See the module documentation.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the database at `path`, brings its schema
    /// up to date, records `host_cpus` and, on first open, creates `Pool-0`
    /// with all of them. Reopening keeps every pool and domain.
    pub fn open(path: impl AsRef<Path>, host_cpus: &CpuSet) -> Result<Store> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Switching a new file to WAL and the first transaction can report
        // "busy" at once, without waiting, while another handle is opening
        // the same file (SQLite does so where waiting could deadlock): retry
        // the whole setup, which is idempotent, until the busy timeout.
        let deadline = Instant::now() + BUSY_TIMEOUT;
        loop {
            match setup(&mut conn, host_cpus) {
                Err(StoreError::Database(rusqlite::Error::SqliteFailure(e, _)))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e),
                Ok(()) => return Ok(Store { conn }),
            }
        }
    }

    /// Runs `f` in one write transaction (taken at once, `BEGIN IMMEDIATE`);
    /// commits if it succeeds, rolls back otherwise.
    fn write<T>(&mut self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    /// Runs `f` in one read transaction (a consistent snapshot).
    fn read<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let tx = self.conn.unchecked_transaction()?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    // ----- pools -------------------------------------------------------

    /// Creates a pool (`cpupool-create`). `sched` is `gang` or `host`; every
    /// CPU must be a free host CPU; `cpus` may be empty. A `shared` pool (gang
    /// only) instead borrows CPUs of `Pool-0`, which keeps them too.
    pub fn create_pool(
        &mut self,
        name: &str,
        sched: &str,
        cpus: &CpuSet,
        shared: bool,
    ) -> Result<PoolId> {
        let sched: Sched = sched.parse()?;
        if shared && sched != Sched::Gang {
            return Err(StoreError::SharedNeedsGang);
        }
        check_name(name)?;
        self.write(|tx| {
            if find_pool_by_name(tx, name)?.is_some() {
                return Err(StoreError::PoolExists(name.to_owned()));
            }
            let id = next_id(tx, "pool")?;
            tx.execute(
                "INSERT INTO pools (id, name, sched, shared) VALUES (?1, ?2, ?3, ?4)",
                params![id, name, sched.as_str(), shared],
            )?;
            add_to_pool(tx, PoolId(id), shared, cpus)?;
            Ok(PoolId(id))
        })
    }

    /// Destroys a pool (`cpupool-destroy`): never `Pool-0`, never while it
    /// has domains. Its CPUs become free.
    pub fn destroy_pool(&mut self, pool: impl Into<PoolRef>) -> Result<()> {
        let pool = pool.into();
        self.write(|tx| {
            let (id, name) = resolve_pool(tx, &pool)?;
            if id == PoolId::POOL0 {
                return Err(StoreError::CannotDestroyPool0(name));
            }
            if domain_count(tx, id)? > 0 {
                return Err(StoreError::PoolHasDomains(name));
            }
            tx.execute("DELETE FROM pool_cpus WHERE pool = ?1", params![id.0])?;
            tx.execute("DELETE FROM lent_cpus WHERE pool = ?1", params![id.0])?;
            tx.execute("DELETE FROM pools WHERE id = ?1", params![id.0])?;
            Ok(())
        })
    }

    /// Renames a pool (`cpupool-rename`).
    pub fn rename_pool(&mut self, pool: impl Into<PoolRef>, new_name: &str) -> Result<()> {
        let pool = pool.into();
        check_name(new_name)?;
        self.write(|tx| {
            let (id, _) = resolve_pool(tx, &pool)?;
            match find_pool_by_name(tx, new_name)? {
                Some(other) if other == id => return Ok(()),
                Some(_) => return Err(StoreError::PoolExists(new_name.to_owned())),
                None => {}
            }
            tx.execute(
                "UPDATE pools SET name = ?1 WHERE id = ?2",
                params![new_name, id.0],
            )?;
            Ok(())
        })
    }

    /// Adds CPUs to a pool (`cpupool-cpu-add`). Each must be a free host CPU
    /// (for `Pool-0` too: a CPU is never taken from another pool), or for a
    /// shared pool a CPU of `Pool-0` that no pool shares yet. All or nothing.
    pub fn add_cpus(&mut self, pool: impl Into<PoolRef>, cpus: &CpuSet) -> Result<()> {
        let pool = pool.into();
        self.write(|tx| {
            let (id, _) = resolve_pool(tx, &pool)?;
            let shared = pool_is_shared(tx, id)?;
            add_to_pool(tx, id, shared, cpus)
        })
    }

    /// Removes CPUs from a pool (`cpupool-cpu-remove`); they become free.
    /// Each must be in the pool and in no domain's CPU map; `Pool-0` and a
    /// pool with domains keep at least one CPU. All or nothing.
    pub fn remove_cpus(&mut self, pool: impl Into<PoolRef>, cpus: &CpuSet) -> Result<()> {
        let pool = pool.into();
        self.write(|tx| {
            let (id, name) = resolve_pool(tx, &pool)?;
            let owned = pool_cpus(tx, id)?;
            for cpu in cpus.iter() {
                if !owned.contains(cpu) {
                    return Err(StoreError::CpuNotInPool {
                        cpu,
                        pool: name.clone(),
                    });
                }
            }
            let mut left = owned;
            left.difference_with(cpus);
            if left.is_empty()
                && !cpus.is_empty()
                && (id == PoolId::POOL0 || domain_count(tx, id)? > 0)
            {
                return Err(StoreError::LastCpu(name));
            }
            for domain in load_domains(tx, Some(id))? {
                if let Some(cpu) = domain
                    .cpu_map
                    .iter()
                    .flatten()
                    .copied()
                    .find(|&c| cpus.contains(c))
                {
                    return Err(StoreError::CpuInUse {
                        cpu,
                        domain: domain.name,
                    });
                }
            }
            if id == PoolId::POOL0 {
                if let Some((cpu, pool)) = first_lent(tx, cpus)? {
                    return Err(StoreError::CpuLent { cpu, pool });
                }
            }
            let table = if pool_is_shared(tx, id)? {
                "lent_cpus"
            } else {
                "pool_cpus"
            };
            for cpu in cpus.iter() {
                tx.execute(&format!("DELETE FROM {table} WHERE cpu = ?1"), params![cpu])?;
            }
            Ok(())
        })
    }

    /// Every pool, by id.
    pub fn pools(&self) -> Result<Vec<PoolRecord>> {
        self.read(|tx| {
            let ids: Vec<u32> = {
                let mut stmt = tx.prepare("SELECT id FROM pools ORDER BY id")?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            ids.into_iter()
                .map(|id| load_pool(tx, PoolId(id)))
                .collect()
        })
    }

    /// One pool, by id or name (`Pool 'x' does not exist`).
    pub fn pool(&self, pool: &PoolRef) -> Result<PoolRecord> {
        self.read(|tx| {
            let (id, _) = resolve_pool(tx, pool)?;
            load_pool(tx, id)
        })
    }

    /// The host CPUs that are in no pool.
    pub fn free_cpus(&self) -> Result<CpuSet> {
        self.read(free_cpus)
    }

    /// The host CPUs recorded by the last [`Store::open`].
    pub fn host_cpus(&self) -> Result<CpuSet> {
        self.read(|tx| cpu_query(tx, "SELECT cpu FROM host_cpus", []))
    }

    // ----- domains -----------------------------------------------------

    /// Creates a domain record (ids from 1 up, never reused). The name must
    /// be unique; the pool must exist and have CPUs; the CPU map, if any,
    /// must fit (one distinct CPU of the pool per vCPU).
    pub fn create_domain(&mut self, new: &NewDomain) -> Result<DomainId> {
        check_name(&new.name)?;
        if new.vcpus == 0 {
            return Err(StoreError::InvalidVcpus(new.vcpus));
        }
        let policy_json = new.policy.as_ref().map(serde_json::to_string).transpose()?;
        let map_json = new
            .cpu_map
            .as_ref()
            .map(serde_json::to_string)
            .transpose()?;
        let state_json = serde_json::to_string(&new.state)?;
        let memory_mb = sql_u64(new.memory_mb)?;
        let created_at = sql_u64(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        )?;
        self.write(|tx| {
            if find_domain_by_name(tx, &new.name)?.is_some() {
                return Err(StoreError::DomainExists(new.name.clone()));
            }
            let (pool, pool_name) = resolve_pool(tx, &new.pool)?;
            let cpus = pool_cpus(tx, pool)?;
            if cpus.is_empty() {
                return Err(StoreError::PoolHasNoCpus(pool_name));
            }
            if let Some(map) = &new.cpu_map {
                check_cpu_map(&new.name, new.vcpus, map, &cpus)?;
            }
            let id = next_id(tx, "domain")?;
            tx.execute(
                "INSERT INTO domains (id, name, pool, vcpus, memory_mb, config_json,
                     policy_json, cpu_map_json, state_json, pid, start_time, created_at, uuid)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, NULL, ?10, ?11)",
                params![
                    id,
                    new.name,
                    pool.0,
                    new.vcpus,
                    memory_mb,
                    new.config_json,
                    policy_json,
                    map_json,
                    state_json,
                    created_at,
                    new.uuid
                ],
            )?;
            Ok(DomainId(id))
        })
    }

    /// One domain, by id or name
    /// (`<arg> is an invalid domain identifier (rc=-6)`).
    pub fn domain(&self, domain: &DomainRef) -> Result<DomainRecord> {
        self.read(|tx| {
            let id = resolve_domain(tx, domain)?;
            load_domain(tx, id)
        })
    }

    /// Every domain, by id.
    pub fn domains(&self) -> Result<Vec<DomainRecord>> {
        self.read(|tx| load_domains(tx, None))
    }

    /// Sets a domain's lifecycle state.
    pub fn set_state(&mut self, id: DomainId, state: &DomainState) -> Result<()> {
        let state_json = serde_json::to_string(state)?;
        self.write(|tx| {
            resolve_domain(tx, &DomainRef::Id(id))?;
            tx.execute(
                "UPDATE domains SET state_json = ?1 WHERE id = ?2",
                params![state_json, id.0],
            )?;
            Ok(())
        })
    }

    /// Sets a domain's gang policy and CPU map (`None` clears them). The map
    /// must have one distinct CPU of the domain's pool per vCPU.
    pub fn set_gang_params(
        &mut self,
        id: DomainId,
        policy: Option<&Policy>,
        cpu_map: Option<&[CpuId]>,
    ) -> Result<()> {
        let policy_json = policy.map(serde_json::to_string).transpose()?;
        let map_json = cpu_map.map(serde_json::to_string).transpose()?;
        self.write(|tx| {
            let domain = load_domain(tx, id)?;
            if let Some(map) = cpu_map {
                let cpus = pool_cpus(tx, domain.pool)?;
                check_cpu_map(&domain.name, domain.vcpus, map, &cpus)?;
            }
            tx.execute(
                "UPDATE domains SET policy_json = ?1, cpu_map_json = ?2 WHERE id = ?3",
                params![policy_json, map_json, id.0],
            )?;
            Ok(())
        })
    }

    /// Moves a domain to another pool (`cpupool-migrate`); the target must
    /// have CPUs. The CPU map is cleared (it named CPUs of the old pool); the
    /// policy is kept. Migrating to the domain's own pool changes nothing.
    pub fn migrate(&mut self, id: DomainId, pool: impl Into<PoolRef>) -> Result<()> {
        let pool = pool.into();
        self.write(|tx| {
            let domain = load_domain(tx, id)?;
            let (target, target_name) = resolve_pool(tx, &pool)?;
            if target == domain.pool {
                return Ok(());
            }
            if pool_cpus(tx, target)?.is_empty() {
                return Err(StoreError::PoolHasNoCpus(target_name));
            }
            tx.execute(
                "UPDATE domains SET pool = ?1, cpu_map_json = NULL WHERE id = ?2",
                params![target.0, id.0],
            )?;
            Ok(())
        })
    }

    /// Records (or with `None` forgets) a domain's host process.
    pub fn set_process(&mut self, id: DomainId, process: Option<ProcessIdentity>) -> Result<()> {
        let (pid, start) = match process {
            Some(p) => (Some(p.pid), Some(sql_u64(p.start_time)?)),
            None => (None, None),
        };
        self.write(|tx| {
            resolve_domain(tx, &DomainRef::Id(id))?;
            tx.execute(
                "UPDATE domains SET pid = ?1, start_time = ?2 WHERE id = ?3",
                params![pid, start, id.0],
            )?;
            Ok(())
        })
    }

    /// Records (or with `None` forgets) the daemon's live facts of a domain.
    pub fn set_live(&mut self, id: DomainId, live_json: Option<&str>) -> Result<()> {
        self.write(|tx| {
            resolve_domain(tx, &DomainRef::Id(id))?;
            tx.execute(
                "UPDATE domains SET live_json = ?1 WHERE id = ?2",
                params![live_json, id.0],
            )?;
            Ok(())
        })
    }

    /// Removes a domain's record. Its id is never given again.
    pub fn destroy_domain(&mut self, id: DomainId) -> Result<()> {
        self.write(|tx| {
            resolve_domain(tx, &DomainRef::Id(id))?;
            tx.execute("DELETE FROM domains WHERE id = ?1", params![id.0])?;
            Ok(())
        })
    }
}

/// [`Store::open`]'s work on a connection: WAL mode, schema migrations,
/// host CPUs and `Pool-0`, in one transaction.
fn setup(conn: &mut Connection, host_cpus: &CpuSet) -> Result<()> {
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupt(format!(
            "cannot use WAL journal mode (got {mode})"
        )));
    }
    conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;")?;

    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version = schema_version(&tx)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    for migration in &MIGRATIONS[version as usize..] {
        migration(&tx)?;
    }
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![SCHEMA_VERSION.to_string()],
    )?;
    tx.execute("DELETE FROM host_cpus", [])?;
    for cpu in host_cpus.iter() {
        tx.execute("INSERT INTO host_cpus (cpu) VALUES (?1)", params![cpu])?;
    }
    let has_pool0: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM pools WHERE id = 0)",
        [],
        |r| r.get(0),
    )?;
    if !has_pool0 {
        tx.execute(
            "INSERT INTO pools (id, name, sched) VALUES (0, ?1, 'host')",
            params![POOL0_NAME],
        )?;
        insert_cpus(&tx, 0, host_cpus)?;
    }
    tx.commit()?;
    Ok(())
}

// ----- helpers (all run inside the caller's transaction) ----------------

/// The file's schema version: 0 when it has no `meta` table yet.
fn schema_version(tx: &Transaction<'_>) -> Result<u32> {
    let has_meta: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta')",
        [],
        |r| r.get(0),
    )?;
    if !has_meta {
        return Ok(0);
    }
    let value: Option<String> = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    match value {
        None => Ok(0),
        Some(v) => v
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("schema_version '{v}'"))),
    }
}

/// Names are non-empty, not all digits (those are ids) and printable.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || parse_id(name).is_some() || name.chars().any(char::is_control) {
        return Err(StoreError::InvalidName(name.to_owned()));
    }
    Ok(())
}

/// SQLite integers are i64.
fn sql_u64(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("value {v} too large to store")))
}

fn next_id(tx: &Transaction<'_>, kind: &str) -> Result<u32> {
    let next: u32 = tx.query_row(
        "SELECT next FROM counters WHERE kind = ?1",
        params![kind],
        |r| r.get(0),
    )?;
    let after = next
        .checked_add(1)
        .ok_or_else(|| StoreError::Corrupt(format!("{kind} ids exhausted")))?;
    tx.execute(
        "UPDATE counters SET next = ?1 WHERE kind = ?2",
        params![after, kind],
    )?;
    Ok(next)
}

fn cpu_query<P: rusqlite::Params>(tx: &Transaction<'_>, sql: &str, p: P) -> Result<CpuSet> {
    let mut stmt = tx.prepare(sql)?;
    let rows = stmt.query_map(p, |r| r.get::<_, CpuId>(0))?;
    let mut set = CpuSet::new();
    for cpu in rows {
        set.insert(cpu?);
    }
    Ok(set)
}

/// A pool's CPUs: its own, or for a shared pool those `Pool-0` lends it.
fn pool_cpus(tx: &Transaction<'_>, pool: PoolId) -> Result<CpuSet> {
    let table = if pool_is_shared(tx, pool)? {
        "lent_cpus"
    } else {
        "pool_cpus"
    };
    cpu_query(
        tx,
        &format!("SELECT cpu FROM {table} WHERE pool = ?1"),
        params![pool.0],
    )
}

fn pool_is_shared(tx: &Transaction<'_>, pool: PoolId) -> Result<bool> {
    Ok(tx
        .query_row(
            "SELECT shared FROM pools WHERE id = ?1",
            params![pool.0],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(false))
}

/// The first of `cpus` that `Pool-0` lends to a shared pool, with that
/// pool's name.
fn first_lent(tx: &Transaction<'_>, cpus: &CpuSet) -> Result<Option<(CpuId, String)>> {
    for cpu in cpus.iter() {
        let pool: Option<String> = tx
            .query_row(
                "SELECT p.name FROM lent_cpus l JOIN pools p ON p.id = l.pool WHERE l.cpu = ?1",
                params![cpu],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(pool) = pool {
            return Ok(Some((cpu, pool)));
        }
    }
    Ok(None)
}

/// Puts `cpus` into a pool: free CPUs into an ordinary pool, CPUs of
/// `Pool-0` that nobody shares yet into a shared one.
fn add_to_pool(tx: &Transaction<'_>, pool: PoolId, shared: bool, cpus: &CpuSet) -> Result<()> {
    if !shared {
        check_free(tx, cpus)?;
        return insert_cpus(tx, pool.0, cpus);
    }
    let pool0 = pool_cpus(tx, PoolId::POOL0)?;
    let lent = cpu_query(tx, "SELECT cpu FROM lent_cpus", [])?;
    if let Some(cpu) = cpus
        .iter()
        .find(|&c| !pool0.contains(c) || lent.contains(c))
    {
        return Err(StoreError::CpuNotLendable(cpu));
    }
    for cpu in cpus.iter() {
        tx.execute(
            "INSERT INTO lent_cpus (cpu, pool) VALUES (?1, ?2)",
            params![cpu, pool.0],
        )?;
    }
    Ok(())
}

fn free_cpus(tx: &Transaction<'_>) -> Result<CpuSet> {
    cpu_query(
        tx,
        "SELECT cpu FROM host_cpus WHERE cpu NOT IN (SELECT cpu FROM pool_cpus)",
        [],
    )
}

/// Every CPU must be a host CPU in no pool; the first that is not is named.
fn check_free(tx: &Transaction<'_>, cpus: &CpuSet) -> Result<()> {
    let free = free_cpus(tx)?;
    match cpus.iter().find(|&c| !free.contains(c)) {
        Some(cpu) => Err(StoreError::CpuNotFree(cpu)),
        None => Ok(()),
    }
}

fn insert_cpus(tx: &Transaction<'_>, pool: u32, cpus: &CpuSet) -> Result<()> {
    for cpu in cpus.iter() {
        tx.execute(
            "INSERT INTO pool_cpus (cpu, pool) VALUES (?1, ?2)",
            params![cpu, pool],
        )?;
    }
    Ok(())
}

fn find_pool_by_name(tx: &Transaction<'_>, name: &str) -> Result<Option<PoolId>> {
    Ok(tx
        .query_row("SELECT id FROM pools WHERE name = ?1", params![name], |r| {
            r.get(0)
        })
        .optional()?
        .map(PoolId))
}

/// The pool's id and name, or `Pool 'x' does not exist`.
fn resolve_pool(tx: &Transaction<'_>, pool: &PoolRef) -> Result<(PoolId, String)> {
    let found: Option<(u32, String)> = match pool {
        PoolRef::Id(id) => tx
            .query_row(
                "SELECT id, name FROM pools WHERE id = ?1",
                params![id.0],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?,
        PoolRef::Name(name) => tx
            .query_row(
                "SELECT id, name FROM pools WHERE name = ?1",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?,
    };
    found
        .map(|(id, name)| (PoolId(id), name))
        .ok_or_else(|| StoreError::PoolNotFound(pool.to_string()))
}

fn domain_count(tx: &Transaction<'_>, pool: PoolId) -> Result<u32> {
    Ok(tx.query_row(
        "SELECT COUNT(*) FROM domains WHERE pool = ?1",
        params![pool.0],
        |r| r.get(0),
    )?)
}

fn load_pool(tx: &Transaction<'_>, id: PoolId) -> Result<PoolRecord> {
    let (name, sched): (String, String) = tx.query_row(
        "SELECT name, sched FROM pools WHERE id = ?1",
        params![id.0],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let sched = sched
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("pool {id}: scheduler '{sched}'")))?;
    Ok(PoolRecord {
        id,
        name,
        sched,
        cpus: pool_cpus(tx, id)?,
        domain_count: domain_count(tx, id)?,
        shared: pool_is_shared(tx, id)?,
    })
}

fn find_domain_by_name(tx: &Transaction<'_>, name: &str) -> Result<Option<DomainId>> {
    Ok(tx
        .query_row(
            "SELECT id FROM domains WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )
        .optional()?
        .map(DomainId))
}

/// The domain's id, or `<arg> is an invalid domain identifier (rc=-6)`.
fn resolve_domain(tx: &Transaction<'_>, domain: &DomainRef) -> Result<DomainId> {
    let found = match domain {
        DomainRef::Id(id) => tx
            .query_row("SELECT id FROM domains WHERE id = ?1", params![id.0], |r| {
                r.get(0)
            })
            .optional()?
            .map(DomainId),
        DomainRef::Name(name) => find_domain_by_name(tx, name)?,
    };
    found.ok_or_else(|| StoreError::DomainNotFound(domain.to_string()))
}

/// One distinct CPU of the pool per vCPU.
fn check_cpu_map(domain: &str, vcpus: u32, map: &[CpuId], pool_cpus: &CpuSet) -> Result<()> {
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

const DOMAIN_COLUMNS: &str = "id, name, pool, vcpus, memory_mb, config_json, policy_json, \
                              cpu_map_json, state_json, pid, start_time, created_at, uuid, \
                              live_json";

/// The raw columns of a domain row.
struct DomainRow {
    id: u32,
    name: String,
    pool: u32,
    vcpus: u32,
    memory_mb: i64,
    config_json: String,
    policy_json: Option<String>,
    cpu_map_json: Option<String>,
    state_json: String,
    pid: Option<u32>,
    start_time: Option<i64>,
    created_at: i64,
    uuid: String,
    live_json: Option<String>,
}

fn domain_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DomainRow> {
    Ok(DomainRow {
        id: r.get(0)?,
        name: r.get(1)?,
        pool: r.get(2)?,
        vcpus: r.get(3)?,
        memory_mb: r.get(4)?,
        config_json: r.get(5)?,
        policy_json: r.get(6)?,
        cpu_map_json: r.get(7)?,
        state_json: r.get(8)?,
        pid: r.get(9)?,
        start_time: r.get(10)?,
        created_at: r.get(11)?,
        uuid: r.get(12)?,
        live_json: r.get(13)?,
    })
}

impl DomainRow {
    fn decode(self) -> Result<DomainRecord> {
        let id = self.id;
        let corrupt = |what: &str, e: &dyn fmt::Display| {
            StoreError::Corrupt(format!("domain {id}: {what}: {e}"))
        };
        let policy = self
            .policy_json
            .map(|j| serde_json::from_str::<Policy>(&j))
            .transpose()
            .map_err(|e| corrupt("policy", &e))?;
        let cpu_map = self
            .cpu_map_json
            .map(|j| serde_json::from_str::<Vec<CpuId>>(&j))
            .transpose()
            .map_err(|e| corrupt("cpu map", &e))?;
        let state = serde_json::from_str::<DomainState>(&self.state_json)
            .map_err(|e| corrupt("state", &e))?;
        let process = match (self.pid, self.start_time) {
            (Some(pid), Some(start)) => Some(ProcessIdentity {
                pid,
                start_time: u64::try_from(start).map_err(|e| corrupt("start time", &e))?,
            }),
            _ => None,
        };
        Ok(DomainRecord {
            id: DomainId(id),
            name: self.name,
            pool: PoolId(self.pool),
            vcpus: self.vcpus,
            memory_mb: u64::try_from(self.memory_mb).map_err(|e| corrupt("memory", &e))?,
            config_json: self.config_json,
            policy,
            cpu_map,
            state,
            process,
            created_at: u64::try_from(self.created_at).map_err(|e| corrupt("created_at", &e))?,
            uuid: self.uuid,
            live_json: self.live_json,
        })
    }
}

fn load_domain(tx: &Transaction<'_>, id: DomainId) -> Result<DomainRecord> {
    let row = tx
        .query_row(
            &format!("SELECT {DOMAIN_COLUMNS} FROM domains WHERE id = ?1"),
            params![id.0],
            domain_row,
        )
        .optional()?
        .ok_or_else(|| StoreError::DomainNotFound(id.to_string()))?;
    row.decode()
}

/// Every domain (of `pool`, if given), by id.
fn load_domains(tx: &Transaction<'_>, pool: Option<PoolId>) -> Result<Vec<DomainRecord>> {
    let mut stmt = tx.prepare(&format!(
        "SELECT {DOMAIN_COLUMNS} FROM domains WHERE ?1 IS NULL OR pool = ?1 ORDER BY id"
    ))?;
    let rows = stmt.query_map(params![pool.map(|p| p.0)], domain_row)?;
    let rows: Vec<DomainRow> = rows.collect::<rusqlite::Result<_>>()?;
    rows.into_iter().map(DomainRow::decode).collect()
}

#[cfg(test)]
mod tests;
