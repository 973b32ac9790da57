//! Tests of the store's file: the schema each version has (pinned), and
//! the monitoring totals' table.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::Connection;

use super::schema::SCHEMA_VERSION;
use super::tests::{open4, temp_db};

/// Every table and index of the file: SQLite's `CREATE` text of each, one
/// line per object, runs of white space made one space.
fn schema_text(path: &Path) -> String {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type, name",
        )
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            let (kind, name, sql): (String, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
            let sql = sql.split_whitespace().collect::<Vec<_>>().join(" ");
            Ok(format!("{kind} {name}: {sql}\n"))
        })
        .unwrap();
    rows.collect::<rusqlite::Result<String>>().unwrap()
}

/// The schema that version 4 files have. A file written by any earlier
/// build of this version must open unchanged, so moving or reformatting the
/// migrations must leave this text as it is; a schema change is a new
/// migration and a new [`SCHEMA_VERSION`].
const SCHEMA_V4: &str = "\
index domains_pool: CREATE INDEX domains_pool ON domains(pool)
index pool_cpus_pool: CREATE INDEX pool_cpus_pool ON pool_cpus(pool)
table counters: CREATE TABLE counters ( kind TEXT PRIMARY KEY, next INTEGER NOT NULL )
table domains: CREATE TABLE domains ( id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, \
pool INTEGER NOT NULL REFERENCES pools(id), vcpus INTEGER NOT NULL CHECK (vcpus >= 1), \
memory_mb INTEGER NOT NULL, config_json TEXT NOT NULL, policy_json TEXT, cpu_map_json TEXT, \
state_json TEXT NOT NULL, pid INTEGER, start_time INTEGER, created_at INTEGER NOT NULL , \
uuid TEXT NOT NULL DEFAULT '', live_json TEXT)
table host_cpus: CREATE TABLE host_cpus ( cpu INTEGER PRIMARY KEY )
table lent_cpus: CREATE TABLE lent_cpus ( cpu INTEGER PRIMARY KEY, pool INTEGER NOT NULL REFERENCES pools(id) )
table meta: CREATE TABLE meta ( key TEXT PRIMARY KEY, value TEXT NOT NULL )
table metric_totals: CREATE TABLE metric_totals ( key TEXT PRIMARY KEY, value REAL NOT NULL )
table pool_cpus: CREATE TABLE pool_cpus ( cpu INTEGER PRIMARY KEY, pool INTEGER NOT NULL REFERENCES pools(id) )
table pools: CREATE TABLE pools ( id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, \
sched TEXT NOT NULL CHECK (sched IN ('gang', 'host')) , shared INTEGER NOT NULL DEFAULT 0, \
time_json TEXT)
";

#[test]
fn the_schema_of_version_4_is_pinned() {
    assert_eq!(SCHEMA_VERSION, 4, "a new version needs a new pinned schema");
    let (_dir, path) = temp_db();
    drop(open4(&path));
    assert_eq!(schema_text(&path), SCHEMA_V4);
    // Reopening an existing file migrates nothing and changes no table.
    drop(open4(&path));
    assert_eq!(schema_text(&path), SCHEMA_V4);
}

#[test]
fn metric_totals_are_kept_and_never_go_back() {
    let (_dir, path) = temp_db();
    let mut store = open4(&path);
    assert!(store.metric_totals().unwrap().is_empty());
    let mut t = BTreeMap::new();
    t.insert("gang_x_total{pool=\"a\"}".to_string(), 5.0);
    store.save_metric_totals(&t).unwrap();
    t.insert("gang_x_total{pool=\"a\"}".to_string(), 3.0);
    t.insert("gang_y_total".to_string(), 1.5);
    store.save_metric_totals(&t).unwrap();
    drop(store);
    let got = open4(&path).metric_totals().unwrap();
    assert_eq!(got.get("gang_x_total{pool=\"a\"}"), Some(&5.0));
    assert_eq!(got.get("gang_y_total"), Some(&1.5));
}
