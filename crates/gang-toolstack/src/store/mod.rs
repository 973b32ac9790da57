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
//! an empty file). See the `schema` module for the tables.
//!
//! # Layout
//!
//! This file holds [`Store`], its operations (each one transaction, checking
//! every rule above) and [`StoreError`]; the submodules hold what the
//! operations are made of, and everything public is re-exported here, so
//! `store::X` is the one path to each item:
//!
//! * `records`: the record, id and argument types ([`PoolRecord`],
//!   [`DomainRecord`], [`NewDomain`], [`PoolRef`], ...) and the checks of
//!   names and CPU maps;
//! * `schema`: [`SCHEMA_VERSION`], the migrations and the version check;
//! * `queries`: the row-level reads and writes that run inside an
//!   operation's transaction.

mod queries;
mod records;
mod schema;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gang_core::time::SharedTime;
use gang_core::{CpuId, CpuSet, DomainId, Policy};
use rusqlite::{params, Connection, Transaction, TransactionBehavior};

use queries::{
    add_to_pool, cpu_query, domain_count, find_domain_by_name, find_pool_by_name, first_lent,
    insert_cpus, load_domain, load_domains, load_pool, next_id, pool_cpus, pool_is_shared,
    resolve_domain, resolve_pool, sql_u64,
};
use records::{check_cpu_map, check_name};
pub use records::{
    DomainRecord, DomainRef, DomainState, NewDomain, PoolId, PoolRecord, PoolRef, ProcessIdentity,
    RawId, Ref, Sched, ShutdownReason,
};
pub use schema::SCHEMA_VERSION;

/// The name of the host pool, id 0.
pub const POOL0_NAME: &str = "Pool-0";

/// How long an operation waits for another handle's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything that can go wrong. Messages that `xl` has are `xl`'s, exactly.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
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
    /// A pool on a shared clock must use the gang scheduler.
    #[error("a cpupool on a shared clock must use the gang scheduler (its time is its table's)")]
    ClockNeedsGang,
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
        sched: Sched,
        cpus: &CpuSet,
        shared: bool,
    ) -> Result<PoolId> {
        self.create_pool_on(name, sched, cpus, shared, None)
    }

    /// [`Store::create_pool`], its time taken from a shared clock (`time`;
    /// gang pools only).
    pub fn create_pool_on(
        &mut self,
        name: &str,
        sched: Sched,
        cpus: &CpuSet,
        shared: bool,
        time: Option<SharedTime>,
    ) -> Result<PoolId> {
        if shared && sched != Sched::Gang {
            return Err(StoreError::SharedNeedsGang);
        }
        if time.is_some() && sched != Sched::Gang {
            return Err(StoreError::ClockNeedsGang);
        }
        check_name(name)?;
        let time_json = time.map(|t| serde_json::to_string(&t)).transpose()?;
        self.write(|tx| {
            if find_pool_by_name(tx, name)?.is_some() {
                return Err(StoreError::PoolExists(name.to_owned()));
            }
            let id = next_id(tx, "pool")?;
            tx.execute(
                "INSERT INTO pools (id, name, sched, shared, time_json) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, name, sched.as_str(), shared, time_json],
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
        self.read(queries::free_cpus)
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
        // Nothing decides on the creation time: a clock set before the epoch
        // records 0 rather than refusing the domain, and says so.
        let created_at = sql_u64(match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(since_epoch) => since_epoch.as_secs(),
            Err(e) => {
                tracing::warn!(
                    "domain '{}': the clock is before the Unix epoch ({e}); \
                     recording creation time 0",
                    new.name
                );
                0
            }
        })?;
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

    /// The monitoring counters' totals as last saved, by key (a metric's
    /// name and labels in Prometheus' text form).
    pub fn metric_totals(&self) -> Result<BTreeMap<String, f64>> {
        self.read(|tx| {
            let mut stmt = tx.prepare("SELECT key, value FROM metric_totals")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<BTreeMap<String, f64>>>()?)
        })
    }

    /// Saves the monitoring counters' totals: each key's stored value
    /// becomes the larger of the stored and the given one (a total never
    /// goes back, also when an older snapshot is saved late).
    pub fn save_metric_totals(&mut self, totals: &BTreeMap<String, f64>) -> Result<()> {
        self.write(|tx| {
            let mut stmt = tx.prepare(
                "INSERT INTO metric_totals (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
            )?;
            for (key, value) in totals {
                stmt.execute(params![key, value])?;
            }
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
    schema::migrate(&tx)?;
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

#[cfg(test)]
mod schema_tests;
#[cfg(test)]
mod tests;
