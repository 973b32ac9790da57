//! The row-level helpers of the store's operations.
//!
//! # Purpose
//!
//! Every function here reads or writes rows inside the caller's
//! transaction ([`Store`](super::Store)'s `read` or `write`) and never
//! commits: the public operation that calls them decides, so that a failed
//! operation rolls back all of their writes together.
//!
//! # Invariants
//!
//! * A lookup by id or name that finds nothing is the `xl` error of the
//!   kind ([`StoreError::PoolNotFound`], [`StoreError::DomainNotFound`]).
//! * A stored value that cannot be decoded is [`StoreError::Corrupt`],
//!   never a default.
//! * A shared pool's CPUs are the rows of `lent_cpus`, any other pool's
//!   those of `pool_cpus` ([`pool_cpus`]).

use std::fmt;

use gang_core::{CpuId, CpuSet, DomainId, Policy};
use rusqlite::{params, OptionalExtension, Transaction};

use super::{
    DomainRecord, DomainRef, DomainState, PoolId, PoolRecord, PoolRef, ProcessIdentity, Result,
    StoreError,
};

/// SQLite integers are i64.
pub(super) fn sql_u64(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("value {v} too large to store")))
}

/// Allocates the next id of `kind` (`pool` or `domain`) from `counters`:
/// ids only grow, so a destroyed pool's or domain's id is never given again.
pub(super) fn next_id(tx: &Transaction<'_>, kind: &str) -> Result<u32> {
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

/// The CPUs that `sql` selects (its first column).
pub(super) fn cpu_query<P: rusqlite::Params>(
    tx: &Transaction<'_>,
    sql: &str,
    p: P,
) -> Result<CpuSet> {
    let mut stmt = tx.prepare(sql)?;
    let rows = stmt.query_map(p, |r| r.get::<_, CpuId>(0))?;
    let mut set = CpuSet::new();
    for cpu in rows {
        set.insert(cpu?);
    }
    Ok(set)
}

/// A pool's CPUs: its own, or for a shared pool those `Pool-0` lends it.
pub(super) fn pool_cpus(tx: &Transaction<'_>, pool: PoolId) -> Result<CpuSet> {
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

/// Whether the pool is a shared gang pool; a pool that does not exist is
/// not (callers resolve the pool first).
pub(super) fn pool_is_shared(tx: &Transaction<'_>, pool: PoolId) -> Result<bool> {
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
pub(super) fn first_lent(tx: &Transaction<'_>, cpus: &CpuSet) -> Result<Option<(CpuId, String)>> {
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
pub(super) fn add_to_pool(
    tx: &Transaction<'_>,
    pool: PoolId,
    shared: bool,
    cpus: &CpuSet,
) -> Result<()> {
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

/// The host CPUs that are in no pool (lent CPUs stay in `Pool-0`).
pub(super) fn free_cpus(tx: &Transaction<'_>) -> Result<CpuSet> {
    cpu_query(
        tx,
        "SELECT cpu FROM host_cpus WHERE cpu NOT IN (SELECT cpu FROM pool_cpus)",
        [],
    )
}

/// Every CPU must be a host CPU in no pool; the first that is not is named.
pub(super) fn check_free(tx: &Transaction<'_>, cpus: &CpuSet) -> Result<()> {
    let free = free_cpus(tx)?;
    match cpus.iter().find(|&c| !free.contains(c)) {
        Some(cpu) => Err(StoreError::CpuNotFree(cpu)),
        None => Ok(()),
    }
}

/// Puts `cpus` into the `pool_cpus` of `pool`; the primary key refuses a
/// CPU that is in a pool already (callers check first, for xl's message).
pub(super) fn insert_cpus(tx: &Transaction<'_>, pool: u32, cpus: &CpuSet) -> Result<()> {
    for cpu in cpus.iter() {
        tx.execute(
            "INSERT INTO pool_cpus (cpu, pool) VALUES (?1, ?2)",
            params![cpu, pool],
        )?;
    }
    Ok(())
}

/// The id of the pool named `name`, if there is one.
pub(super) fn find_pool_by_name(tx: &Transaction<'_>, name: &str) -> Result<Option<PoolId>> {
    Ok(tx
        .query_row("SELECT id FROM pools WHERE name = ?1", params![name], |r| {
            r.get(0)
        })
        .optional()?
        .map(PoolId))
}

/// The pool's id and name, or `Pool 'x' does not exist`.
pub(super) fn resolve_pool(tx: &Transaction<'_>, pool: &PoolRef) -> Result<(PoolId, String)> {
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

/// How many domains are in the pool.
pub(super) fn domain_count(tx: &Transaction<'_>, pool: PoolId) -> Result<u32> {
    Ok(tx.query_row(
        "SELECT COUNT(*) FROM domains WHERE pool = ?1",
        params![pool.0],
        |r| r.get(0),
    )?)
}

/// The whole record of a pool that exists (callers resolve it first).
pub(super) fn load_pool(tx: &Transaction<'_>, id: PoolId) -> Result<PoolRecord> {
    let (name, sched, time_json): (String, String, Option<String>) = tx.query_row(
        "SELECT name, sched, time_json FROM pools WHERE id = ?1",
        params![id.0],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let sched = sched
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("pool {id}: scheduler '{sched}'")))?;
    let time = time_json
        .map(|j| serde_json::from_str(&j))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("pool {id}: clock: {e}")))?;
    Ok(PoolRecord {
        id,
        name,
        sched,
        cpus: pool_cpus(tx, id)?,
        domain_count: domain_count(tx, id)?,
        shared: pool_is_shared(tx, id)?,
        time,
    })
}

/// The id of the domain named `name`, if there is one.
pub(super) fn find_domain_by_name(tx: &Transaction<'_>, name: &str) -> Result<Option<DomainId>> {
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
pub(super) fn resolve_domain(tx: &Transaction<'_>, domain: &DomainRef) -> Result<DomainId> {
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

/// The columns of `domains` that make a [`DomainRecord`], in [`DomainRow`]'s
/// order.
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

/// Reads the columns of [`DOMAIN_COLUMNS`], in that order.
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
    /// The record, or [`StoreError::Corrupt`] naming the column that cannot
    /// be read back.
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

/// One domain's record, or `<id> is an invalid domain identifier (rc=-6)`.
pub(super) fn load_domain(tx: &Transaction<'_>, id: DomainId) -> Result<DomainRecord> {
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
pub(super) fn load_domains(
    tx: &Transaction<'_>,
    pool: Option<PoolId>,
) -> Result<Vec<DomainRecord>> {
    let mut stmt = tx.prepare(&format!(
        "SELECT {DOMAIN_COLUMNS} FROM domains WHERE ?1 IS NULL OR pool = ?1 ORDER BY id"
    ))?;
    let rows = stmt.query_map(params![pool.map(|p| p.0)], domain_row)?;
    let rows: Vec<DomainRow> = rows.collect::<rusqlite::Result<_>>()?;
    rows.into_iter().map(DomainRow::decode).collect()
}
