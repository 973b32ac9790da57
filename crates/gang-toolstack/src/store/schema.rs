//! The database's schema: its tables, their migrations and version.
//!
//! # Purpose
//!
//! [`migrate`] brings a file of any older version up to [`SCHEMA_VERSION`]
//! inside the caller's transaction, so that [`Store::open`](super::Store::open)
//! either upgrades the file completely or not at all.
//!
//! # Invariants
//!
//! * The `meta` table holds `schema_version`, the number of migrations
//!   applied; a file without `meta` is version 0 (empty).
//! * `MIGRATIONS[i]` takes version `i` to `i + 1`. A migration, once
//!   released, is never edited: a file written by an earlier build must
//!   open unchanged (the store's tests pin the resulting schema text). A
//!   change to the schema is a new migration and a new [`SCHEMA_VERSION`].
//! * A file of a newer version than this code is refused, never touched.

use rusqlite::{params, OptionalExtension, Transaction};

use super::{Result, StoreError};

/// The schema version this code writes (the number of migrations).
pub const SCHEMA_VERSION: u32 = 4;

/// Brings the file's schema up to [`SCHEMA_VERSION`] and records that
/// version, inside the caller's transaction. A file written by a newer
/// version is refused ([`StoreError::SchemaTooNew`]).
pub(super) fn migrate(tx: &Transaction<'_>) -> Result<()> {
    let version = schema_version(tx)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    for migration in &MIGRATIONS[version as usize..] {
        migration(tx)?;
    }
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![SCHEMA_VERSION.to_string()],
    )?;
    Ok(())
}

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

/// A migration takes the file from version `i` to `i + 1`.
type Migration = fn(&Transaction<'_>) -> rusqlite::Result<()>;

/// `MIGRATIONS[i]` upgrades version `i` to `i + 1`.
const MIGRATIONS: [Migration; SCHEMA_VERSION as usize] = [
    migrate_0_to_1,
    migrate_1_to_2,
    migrate_2_to_3,
    migrate_3_to_4,
];

/// Version 1: the first schema.
pub(super) fn migrate_0_to_1(tx: &Transaction<'_>) -> rusqlite::Result<()> {
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

/// Version 3: a gang pool's time from a shared clock (`time_json`: a
/// `gang_core::time::SharedTime`, NULL for this host's monotonic clock).
fn migrate_2_to_3(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch("ALTER TABLE pools ADD COLUMN time_json TEXT;")
}

/// Version 4: the monitoring counters' totals (`metric_totals`), so that a
/// counter the daemon served never reads less after it restarts. A key is a
/// metric's name and labels in Prometheus' text form.
fn migrate_3_to_4(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE metric_totals (
             key   TEXT PRIMARY KEY,
             value REAL NOT NULL
         );",
    )
}
