//! Tests of the store: every rule and message, atomicity of failures,
//! persistence, concurrent handles, id allocation, schema versions.

use std::fmt::Debug;
use std::path::{Path, PathBuf};

use gang_core::{CpuId, CpuSet, DomainId, Periodic, Policy, MS};
use rusqlite::types::Value;
use rusqlite::Connection;
use tempfile::TempDir;

use super::schema::migrate_0_to_1;
use super::*;
use gang_core::time::{SharedTime, WallClock};

/// A temporary directory (kept alive by the caller) and a database path in it.
pub(super) fn temp_db() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    (dir, path)
}

fn cpus(list: &[CpuId]) -> CpuSet {
    list.iter().copied().collect()
}

/// A store on a 4-CPU host.
pub(super) fn open4(path: &Path) -> Store {
    Store::open(path, &CpuSet::first_n(4)).unwrap()
}

fn new_domain(name: &str, pool: &str) -> NewDomain {
    NewDomain {
        name: name.to_owned(),
        pool: PoolRef::parse(pool),
        vcpus: 2,
        memory_mb: 512,
        config_json: format!(r#"{{"name":"{name}","vcpus":2}}"#),
        policy: None,
        cpu_map: None,
        state: DomainState::Running,
        uuid: String::new(),
    }
}

fn tt_policy() -> Policy {
    Policy::TimeTriggered {
        timing: Periodic {
            from: 0,
            period: 100 * MS,
            active: 30 * MS,
        },
        space_filling: true,
        exact: false,
    }
}

/// Every row of every table, through a separate connection.
fn dump(path: &Path) -> String {
    let conn = Connection::open(path).unwrap();
    let mut out = String::new();
    for table in [
        "meta",
        "counters",
        "host_cpus",
        "pools",
        "pool_cpus",
        "domains",
    ] {
        out.push_str(table);
        out.push('\n');
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY 1"))
            .unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                (0..n)
                    .map(|i| r.get::<_, Value>(i))
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .unwrap();
        for row in rows {
            out.push_str(&format!("{:?}\n", row.unwrap()));
        }
    }
    out
}

/// `op` fails with exactly `message` and the database is unchanged.
fn assert_refused<T: Debug>(
    store: &mut Store,
    path: &Path,
    message: &str,
    op: impl FnOnce(&mut Store) -> Result<T>,
) {
    let before = dump(path);
    let err = op(store).expect_err(&format!("expected failure: {message}"));
    assert_eq!(err.to_string(), message);
    assert_eq!(
        dump(path),
        before,
        "a failed operation changed the database"
    );
}

fn pool_names(store: &Store) -> Vec<(u32, String)> {
    store
        .pools()
        .unwrap()
        .into_iter()
        .map(|p| (p.id.0, p.name))
        .collect()
}

#[test]
fn first_open_creates_pool0_with_all_host_cpus() {
    let (_dir, path) = temp_db();
    let store = open4(&path);
    let pools = store.pools().unwrap();
    assert_eq!(
        pools,
        vec![PoolRecord {
            id: PoolId(0),
            name: "Pool-0".into(),
            sched: Sched::Host,
            cpus: CpuSet::first_n(4),
            domain_count: 0,
            shared: false,
            time: None,
        }]
    );
    assert!(store.free_cpus().unwrap().is_empty());
    assert_eq!(store.host_cpus().unwrap(), CpuSet::first_n(4));
    assert!(store.domains().unwrap().is_empty());
    let conn = Connection::open(&path).unwrap();
    let version: String = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION.to_string());
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn pool_and_domain_refs_follow_the_digits_rule() {
    assert_eq!(PoolRef::parse("0"), PoolRef::Id(PoolId(0)));
    assert_eq!(PoolRef::parse("17"), PoolRef::Id(PoolId(17)));
    assert_eq!(PoolRef::parse("Pool-0"), PoolRef::Name("Pool-0".into()));
    assert_eq!(PoolRef::parse("1a"), PoolRef::Name("1a".into()));
    assert_eq!(PoolRef::parse(""), PoolRef::Name(String::new()));
    assert_eq!(DomainRef::parse("3"), DomainRef::Id(DomainId(3)));
    assert_eq!(DomainRef::parse("guest"), DomainRef::Name("guest".into()));
    // Too large for an id: still an id (that names nothing), not a name.
    assert_eq!(
        DomainRef::parse("99999999999"),
        DomainRef::Id(DomainId(u32::MAX))
    );

    let (_dir, path) = temp_db();
    let store = open4(&path);
    assert_eq!(store.pool(&PoolRef::parse("0")).unwrap().name, "Pool-0");
    assert_eq!(store.pool(&PoolRef::parse("Pool-0")).unwrap().id, PoolId(0));
    for (arg, msg) in [
        ("nope", "Pool 'nope' does not exist"),
        ("42", "Pool '42' does not exist"),
    ] {
        assert_eq!(
            store.pool(&PoolRef::parse(arg)).unwrap_err().to_string(),
            msg
        );
    }
}

#[test]
fn create_pool_rules_and_messages() {
    let (_dir, path) = temp_db();
    let mut store = open4(&path);
    store.remove_cpus("Pool-0", &cpus(&[2, 3])).unwrap();
    assert_eq!(store.free_cpus().unwrap(), cpus(&[2, 3]));

    let p1 = store
        .create_pool("gang1", Sched::Gang, &cpus(&[2]), false)
        .unwrap();
    assert_eq!(p1, PoolId(1));
    let p2 = store
        .create_pool("empty", Sched::Host, &CpuSet::new(), false)
        .unwrap();
    assert_eq!(p2, PoolId(2));
    let rec = store.pool(&"gang1".into()).unwrap();
    assert_eq!((rec.sched, rec.cpus.clone()), (Sched::Gang, cpus(&[2])));
    assert!(store.pool(&"empty".into()).unwrap().cpus.is_empty());

    let free3 = cpus(&[3]);
    assert_refused(
        &mut store,
        &path,
        "Pool name \"gang1\" already exists",
        |s| s.create_pool("gang1", Sched::Gang, &free3, false),
    );
    assert_refused(
        &mut store,
        &path,
        "Pool name \"Pool-0\" already exists",
        |s| s.create_pool("Pool-0", Sched::Host, &CpuSet::new(), false),
    );
    // In Pool-0, in another pool, not a host CPU; one bad CPU refuses all.
    assert_refused(&mut store, &path, "cpu 0 illegal or not free", |s| {
        s.create_pool("x", Sched::Gang, &cpus(&[0, 3]), false)
    });
    assert_refused(&mut store, &path, "cpu 2 illegal or not free", |s| {
        s.create_pool("x", Sched::Gang, &cpus(&[2, 3]), false)
    });
    assert_refused(&mut store, &path, "cpu 9 illegal or not free", |s| {
        s.create_pool("x", Sched::Gang, &cpus(&[3, 9]), false)
    });
    assert_refused(&mut store, &path, "invalid name '12'", |s| {
        s.create_pool("12", Sched::Gang, &free3, false)
    });
    assert_refused(&mut store, &path, "invalid name ''", |s| {
        s.create_pool("", Sched::Gang, &free3, false)
    });
    assert_eq!(store.free_cpus().unwrap(), cpus(&[3]));
}

#[test]
fn destroy_pool_rules_and_ids_never_reused() {
    let (_dir, path) = temp_db();
    let mut store = open4(&path);
    store.remove_cpus(PoolId(0), &cpus(&[1, 2, 3])).unwrap();
    let a = store
        .create_pool("a", Sched::Gang, &cpus(&[1, 2]), false)
        .unwrap();
    let b = store
        .create_pool("b", Sched::Gang, &cpus(&[3]), false)
        .unwrap();
    store.create_domain(&new_domain("d", "b")).unwrap();

    assert_refused(&mut store, &path, "Can't destroy cpupool 'Pool-0'", |s| {
        s.destroy_pool("Pool-0")
    });
    assert_refused(&mut store, &path, "Can't destroy cpupool 'Pool-0'", |s| {
        s.destroy_pool(PoolId(0))
    });
    assert_refused(&mut store, &path, "Can't destroy cpupool 'b'", |s| {
        s.destroy_pool("b")
    });
    assert_refused(&mut store, &path, "Pool 'zz' does not exist", |s| {
        s.destroy_pool("zz")
    });
    assert_refused(&mut store, &path, "Pool '7' does not exist", |s| {
        s.destroy_pool("7")
    });

    store.destroy_pool(a).unwrap();
    assert_eq!(store.free_cpus().unwrap(), cpus(&[1, 2]));
    assert_eq!(
        pool_names(&store),
        vec![(0, "Pool-0".into()), (b.0, "b".into())]
    );
    // A new pool, even of the same name, gets a new id.
    let a2 = store
        .create_pool("a", Sched::Host, &cpus(&[1]), false)
        .unwrap();
    assert_eq!((a, b, a2), (PoolId(1), PoolId(2), PoolId(3)));
    // Ids survive reopening too.
    store.destroy_pool(a2).unwrap();
    drop(store);
    let mut store = open4(&path);
    assert_eq!(
        store
            .create_pool("c", Sched::Gang, &CpuSet::new(), false)
            .unwrap(),
        PoolId(4)
    );
}

#[test]
fn rename_pool_rules() {
    let (_dir, path) = temp_db();
    let mut store = open4(&path);
    let p = store
        .create_pool("old", Sched::Gang, &CpuSet::new(), false)
        .unwrap();
    store
        .create_pool("other", Sched::Gang, &CpuSet::new(), false)
        .unwrap();
    store.rename_pool("old", "new").unwrap();
    assert_eq!(store.pool(&p.into()).unwrap().name, "new");
    store.rename_pool(p, "new").unwrap(); // to its own name: nothing to do
    assert_refused(
        &mut store,
        &path,
        "Pool name \"other\" already exists",
        |s| s.rename_pool("new", "other"),
    );
    assert_refused(&mut store, &path, "Pool 'old' does not exist", |s| {
        s.rename_pool("old", "x")
    });
    assert_refused(&mut store, &path, "invalid name '5'", |s| {
        s.rename_pool("new", "5")
    });
}

#[test]
fn add_cpus_takes_only_free_cpus_for_every_pool_including_pool0() {
    let (_dir, path) = temp_db();
    let mut store = open4(&path);
    store.remove_cpus("Pool-0", &cpus(&[2, 3])).unwrap();
    let g = store
        .create_pool("g", Sched::Gang, &cpus(&[2]), false)
        .unwrap();

    assert_refused(&mut store, &path, "cpu 2 illegal or not free", |s| {
        s.add_cpus("Pool-0", &cpus(&[2, 3]))
    });
    assert_refused(&mut store, &path, "cpu 0 illegal or not free", |s| {
        s.add_cpus(g, &cpus(&[0]))
    });
    assert_refused(&mut store, &path, "cpu 8 illegal or not free", |s| {
        s.add_cpus(g, &cpus(&[3, 8]))
    });
    assert_refused(&mut store, &path, "Pool 'h' does not exist", |s| {
        s.add_cpus("h", &cpus(&[3]))
    });

    store.add_cpus(g, &cpus(&[3])).unwrap();
    assert_eq!(store.pool(&g.into()).unwrap().cpus, cpus(&[2, 3]));
    store.remove_cpus(g, &cpus(&[3])).unwrap();
    store.add_cpus("Pool-0", &cpus(&[3])).unwrap();
    assert_eq!(store.pool(&"0".into()).unwrap().cpus, cpus(&[0, 1, 3]));
    assert!(store.free_cpus().unwrap().is_empty());
}

#[test]
fn remove_cpus_rules_and_messages() {
    let (_dir, path) = temp_db();
    let mut store = open4(&path);
    store.remove_cpus("Pool-0", &cpus(&[1, 2, 3])).unwrap();
    let busy = store
        .create_pool("busy", Sched::Gang, &cpus(&[1, 2]), false)
        .unwrap();
    let idle = store
        .create_pool("idle", Sched::Gang, &cpus(&[3]), false)
        .unwrap();
    let d = store.create_domain(&new_domain("d", "busy")).unwrap();

    assert_refused(
        &mut store,
        &path,
        "Can't remove the last cpu of cpupool 'Pool-0'",
        |s| s.remove_cpus("Pool-0", &cpus(&[0])),
    );
    assert_refused(&mut store, &path, "cpu 3 is not in cpupool 'busy'", |s| {
        s.remove_cpus(busy, &cpus(&[2, 3]))
    });
    assert_refused(
        &mut store,
        &path,
        "Can't remove the last cpu of cpupool 'busy'",
        |s| s.remove_cpus(busy, &cpus(&[1, 2])),
    );

    // A CPU in a domain's map cannot go (d has 2 vCPUs on 2 and 1).
    store
        .set_gang_params(d, Some(&tt_policy()), Some(&[2, 1]))
        .unwrap();
    assert_refused(&mut store, &path, "cpu 2 is in use by domain 'd'", |s| {
        s.remove_cpus(busy, &cpus(&[2]))
    });
    store.set_gang_params(d, None, None).unwrap();
    store.remove_cpus(busy, &cpus(&[2])).unwrap();
    assert_eq!(store.pool(&busy.into()).unwrap().cpus, cpus(&[1]));

    // A pool without domains may become empty; removed CPUs are free.
    store.remove_cpus(idle, &cpus(&[3])).unwrap();
    assert!(store.pool(&idle.into()).unwrap().cpus.is_empty());
    assert_eq!(store.free_cpus().unwrap(), cpus(&[2, 3]));
    // Removing nothing is allowed even from an empty pool.
    store.remove_cpus(idle, &CpuSet::new()).unwrap();
}

#[test]
fn create_domain_rules_and_lookups() {
    let (_dir, path) = temp_db();
    let mut store = open4(&path);
    store.remove_cpus("Pool-0", &cpus(&[3])).unwrap();
    store
        .create_pool("empty", Sched::Gang, &CpuSet::new(), false)
        .unwrap();

    let d1 = store
        .create_domain(&new_domain("guest1", "Pool-0"))
        .unwrap();
    let mut spec = new_domain("guest2", "0");
    spec.policy = Some(tt_policy());
    spec.cpu_map = Some(vec![2, 0]);
    spec.state = DomainState::Paused;
    let d2 = store.create_domain(&spec).unwrap();
    assert_eq!((d1, d2), (DomainId(1), DomainId(2)));

    let rec = store.domain(&"guest2".into()).unwrap();
    assert_eq!(rec.id, d2);
    assert_eq!(rec.pool, PoolId(0));
    assert_eq!((rec.vcpus, rec.memory_mb), (2, 512));
    assert_eq!(rec.config_json, spec.config_json);
    assert_eq!(rec.policy, Some(tt_policy()));
    assert_eq!(rec.cpu_map, Some(vec![2, 0]));
    assert_eq!(rec.state, DomainState::Paused);
    assert_eq!(rec.process, None);
    assert!(rec.created_at > 1_600_000_000);
    assert_eq!(store.domain(&"2".into()).unwrap(), rec);
    assert_eq!(store.pool(&"Pool-0".into()).unwrap().domain_count, 2);

    let dup = new_domain("guest1", "Pool-0");
    assert_refused(
        &mut store,
        &path,
        "Domain name \"guest1\" already exists",
        |s| s.create_domain(&dup),
    );
    let nowhere = new_domain("g", "nowhere");
    assert_refused(&mut store, &path, "Pool 'nowhere' does not exist", |s| {
        s.create_domain(&nowhere)
    });
    let in_empty = new_domain("g", "empty");
    assert_refused(&mut store, &path, "cpupool 'empty' has no cpus", |s| {
        s.create_domain(&in_empty)
    });
    let mut no_vcpu = new_domain("g", "Pool-0");
    no_vcpu.vcpus = 0;
    assert_refused(&mut store, &path, "invalid number of vcpus: 0", |s| {
        s.create_domain(&no_vcpu)
    });
    let digits = new_domain("123", "Pool-0");
    assert_refused(&mut store, &path, "invalid name '123'", |s| {
        s.create_domain(&digits)
    });
    let mut bad_map = new_domain("g", "Pool-0");
    bad_map.cpu_map = Some(vec![3, 0]);
    assert_refused(
        &mut store,
        &path,
        "invalid cpu map for domain 'g': cpu 3 is not in the domain's cpupool",
        |s| s.create_domain(&bad_map),
    );

    for (arg, msg) in [
        ("nope", "nope is an invalid domain identifier (rc=-6)"),
        ("7", "7 is an invalid domain identifier (rc=-6)"),
        ("0", "0 is an invalid domain identifier (rc=-6)"),
    ] {
        assert_eq!(
            store
                .domain(&DomainRef::parse(arg))
                .unwrap_err()
                .to_string(),
            msg
        );
    }
    let names: Vec<String> = store
        .domains()
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["guest1", "guest2"]);
}

#[test]
fn domain_ids_are_never_reused() {
    let (_dir, path) = temp_db();
    let mut store = open4(&path);
    let a = store.create_domain(&new_domain("a", "Pool-0")).unwrap();
    let b = store.create_domain(&new_domain("b", "Pool-0")).unwrap();
    store.destroy_domain(b).unwrap();
    store.destroy_domain(a).unwrap();
    assert!(store.domains().unwrap().is_empty());
    assert_eq!(store.pool(&"Pool-0".into()).unwrap().domain_count, 0);
    assert_refused(
        &mut store,
        &path,
        "2 is an invalid domain identifier (rc=-6)",
        |s| s.destroy_domain(b),
    );
    // Same name again: a new id.
    assert_eq!(
        store.create_domain(&new_domain("b", "Pool-0")).unwrap(),
        DomainId(3)
    );
    drop(store);
    let mut store = open4(&path);
    assert_eq!(
        store.create_domain(&new_domain("c", "Pool-0")).unwrap(),
        DomainId(4)
    );
}

#[test]
fn state_gang_params_and_process_updates() {
    let (_dir, path) = temp_db();
    let mut store = open4(&path);
    let d = store.create_domain(&new_domain("d", "Pool-0")).unwrap();
    let ghost = DomainId(99);

    for state in [
        DomainState::Paused,
        DomainState::Shutdown {
            reason: ShutdownReason::Reboot,
        },
        DomainState::Crashed {
            reason: "vcpu thread died: SIGSEGV".into(),
        },
        DomainState::Running,
    ] {
        store.set_state(d, &state).unwrap();
        assert_eq!(store.domain(&d.into()).unwrap().state, state);
    }

    let be = Policy::BestEffort {
        weight: 700,
        space_filling: true,
    };
    store.set_gang_params(d, Some(&be), Some(&[3, 1])).unwrap();
    let rec = store.domain(&d.into()).unwrap();
    assert_eq!((rec.policy, rec.cpu_map), (Some(be), Some(vec![3, 1])));
    store.set_gang_params(d, Some(&be), None).unwrap();
    assert_eq!(store.domain(&d.into()).unwrap().cpu_map, None);

    let id = ProcessIdentity {
        pid: 4242,
        start_time: 987_654_321,
    };
    store.set_process(d, Some(id)).unwrap();
    assert_eq!(store.domain(&d.into()).unwrap().process, Some(id));
    store.set_process(d, None).unwrap();
    assert_eq!(store.domain(&d.into()).unwrap().process, None);

    for (map, reason) in [
        (&[1][..], "1 cpus for 2 vcpus (need one per vcpu)"),
        (&[1, 2, 3][..], "3 cpus for 2 vcpus (need one per vcpu)"),
        (&[1, 1][..], "cpu 1 appears twice"),
        (&[1, 7][..], "cpu 7 is not in the domain's cpupool"),
    ] {
        let msg = format!("invalid cpu map for domain 'd': {reason}");
        assert_refused(&mut store, &path, &msg, |s| {
            s.set_gang_params(d, Some(&tt_policy()), Some(map))
        });
    }
    let msg = "99 is an invalid domain identifier (rc=-6)";
    assert_refused(&mut store, &path, msg, |s| {
        s.set_state(ghost, &DomainState::Paused)
    });
    assert_refused(&mut store, &path, msg, |s| {
        s.set_gang_params(ghost, None, None)
    });
    assert_refused(&mut store, &path, msg, |s| s.set_process(ghost, Some(id)));
    assert_refused(&mut store, &path, msg, |s| s.migrate(ghost, "Pool-0"));
}

#[test]
fn migrate_rules() {
    let (_dir, path) = temp_db();
    let mut store = open4(&path);
    store.remove_cpus("Pool-0", &cpus(&[2, 3])).unwrap();
    let g = store
        .create_pool("g", Sched::Gang, &cpus(&[2, 3]), false)
        .unwrap();
    store
        .create_pool("empty", Sched::Gang, &CpuSet::new(), false)
        .unwrap();
    let d = store.create_domain(&new_domain("d", "Pool-0")).unwrap();
    store
        .set_gang_params(d, Some(&tt_policy()), Some(&[1, 0]))
        .unwrap();

    assert_refused(&mut store, &path, "cpupool 'empty' has no cpus", |s| {
        s.migrate(d, "empty")
    });
    assert_refused(&mut store, &path, "Pool 'x' does not exist", |s| {
        s.migrate(d, "x")
    });
    // To its own pool: nothing changes, the map is kept.
    store.migrate(d, "Pool-0").unwrap();
    assert_eq!(store.domain(&d.into()).unwrap().cpu_map, Some(vec![1, 0]));

    store.migrate(d, g).unwrap();
    let rec = store.domain(&d.into()).unwrap();
    assert_eq!(rec.pool, g);
    assert_eq!(rec.cpu_map, None, "the old pool's map is dropped");
    assert_eq!(rec.policy, Some(tt_policy()), "the policy is kept");
    assert_eq!(store.pool(&g.into()).unwrap().domain_count, 1);
    assert_eq!(store.pool(&"Pool-0".into()).unwrap().domain_count, 0);
    // A new map must name CPUs of the new pool.
    store.set_gang_params(d, None, Some(&[3, 2])).unwrap();
    assert_refused(
        &mut store,
        &path,
        "invalid cpu map for domain 'd': cpu 0 is not in the domain's cpupool",
        |s| s.set_gang_params(d, None, Some(&[0, 1])),
    );
}

#[test]
fn reopening_gives_back_everything() {
    let (_dir, path) = temp_db();
    let (pools, domains, free) = {
        let mut store = open4(&path);
        store.remove_cpus("Pool-0", &cpus(&[1, 2, 3])).unwrap();
        let g = store
            .create_pool("gang", Sched::Gang, &cpus(&[1, 2]), false)
            .unwrap();
        store
            .create_pool("spare", Sched::Host, &CpuSet::new(), false)
            .unwrap();
        let mut spec = new_domain("web", "gang");
        spec.policy = Some(tt_policy());
        spec.cpu_map = Some(vec![2, 1]);
        let web = store.create_domain(&spec).unwrap();
        let db = store.create_domain(&new_domain("db", "Pool-0")).unwrap();
        store
            .set_state(
                db,
                &DomainState::Shutdown {
                    reason: ShutdownReason::Poweroff,
                },
            )
            .unwrap();
        store
            .set_process(
                web,
                Some(ProcessIdentity {
                    pid: 77,
                    start_time: 123,
                }),
            )
            .unwrap();
        store.rename_pool(g, "gangs").unwrap();
        (
            store.pools().unwrap(),
            store.domains().unwrap(),
            store.free_cpus().unwrap(),
        )
    };
    assert_eq!(pools.len(), 3);
    assert_eq!(domains.len(), 2);
    let store = open4(&path);
    assert_eq!(store.pools().unwrap(), pools);
    assert_eq!(store.domains().unwrap(), domains);
    assert_eq!(store.free_cpus().unwrap(), free);
    assert_eq!(free, cpus(&[3]));
}

#[test]
fn reopening_with_fewer_host_cpus_updates_free_cpus() {
    let (_dir, path) = temp_db();
    {
        let mut store = open4(&path);
        store.remove_cpus("Pool-0", &cpus(&[2, 3])).unwrap();
    }
    let store = Store::open(&path, &CpuSet::first_n(3)).unwrap();
    assert_eq!(store.host_cpus().unwrap(), CpuSet::first_n(3));
    assert_eq!(store.free_cpus().unwrap(), cpus(&[2]));
    assert_eq!(store.pool(&"0".into()).unwrap().cpus, cpus(&[0, 1]));
}

#[test]
fn a_newer_schema_is_refused() {
    let (_dir, path) = temp_db();
    drop(open4(&path));
    let before = {
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
            [],
        )
        .unwrap();
        dump(&path)
    };
    let err = Store::open(&path, &CpuSet::first_n(4)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "state database schema version 99 is newer than supported version {SCHEMA_VERSION}"
        )
    );
    assert_eq!(dump(&path), before);
}

#[test]
fn a_version_1_file_is_migrated_keeping_its_pools_and_domains() {
    let (_dir, path) = temp_db();
    {
        let mut conn = Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        migrate_0_to_1(&tx).unwrap();
        tx.execute_batch(
            "INSERT INTO meta (key, value) VALUES ('schema_version', '1');
             INSERT INTO host_cpus (cpu) VALUES (0), (1), (2), (3);
             INSERT INTO pools (id, name, sched) VALUES (0, 'Pool-0', 'host'), (1, 'g', 'gang');
             INSERT INTO pool_cpus (cpu, pool) VALUES (0, 0), (1, 0), (2, 1);
             INSERT INTO domains (id, name, pool, vcpus, memory_mb, config_json, state_json,
                                  created_at)
                 VALUES (1, 'd', 1, 1, 64, '{}', '{\"state\":\"paused\"}', 0);",
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let store = open4(&path);
    let pools = store.pools().unwrap();
    assert_eq!(pools.len(), 2);
    assert!(!pools[1].shared);
    assert_eq!(pools[1].cpus, cpus(&[2]));
    let d = store.domain(&DomainRef::parse("d")).unwrap();
    assert_eq!(d.state, DomainState::Paused);
    assert_eq!((d.uuid.as_str(), d.live_json), ("", None));
    assert_eq!(pools[1].time, None, "version 3 added no clock to old pools");
}

#[test]
fn concurrent_handles_lose_no_update() {
    const PER_THREAD: usize = 100;
    let (_dir, path) = temp_db();
    // Both handles open the fresh file at once: the schema and Pool-0 are
    // created exactly once.
    let workers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|tag| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut store = open4(&path);
                let mut ids = Vec::new();
                for i in 0..PER_THREAD {
                    let id = store
                        .create_domain(&new_domain(&format!("{tag}{i}"), "Pool-0"))
                        .unwrap();
                    ids.push(id);
                    if i % 10 == 0 {
                        // Interleave pool operations, each a transaction.
                        let name = format!("pool-{tag}{i}");
                        let p = store
                            .create_pool(&name, Sched::Gang, &CpuSet::new(), false)
                            .unwrap();
                        store.destroy_pool(p).unwrap();
                    }
                }
                // Destroy every other domain of ours.
                for id in ids.iter().step_by(2) {
                    store.destroy_domain(*id).unwrap();
                }
                ids
            })
        })
        .collect();
    let mut all: Vec<DomainId> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 2 * PER_THREAD, "every id was handed out once");
    assert_eq!(all.first(), Some(&DomainId(1)));
    assert_eq!(all.last(), Some(&DomainId(2 * PER_THREAD as u32)));

    let store = open4(&path);
    assert_eq!(store.domains().unwrap().len(), PER_THREAD);
    assert_eq!(
        store.pool(&"Pool-0".into()).unwrap().domain_count,
        PER_THREAD as u32
    );
    assert_eq!(pool_names(&store), vec![(0, "Pool-0".into())]);
    let conn = Connection::open(&path).unwrap();
    let next_pool: u32 = conn
        .query_row("SELECT next FROM counters WHERE kind = 'pool'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(next_pool, 1 + 2 * (PER_THREAD as u32 / 10));
}

#[test]
fn an_error_after_writes_rolls_the_whole_transaction_back() {
    let (_dir, path) = temp_db();
    let mut store = open4(&path);
    store.create_domain(&new_domain("d", "Pool-0")).unwrap();
    let before = dump(&path);
    let err = store
        .write(|tx| -> Result<()> {
            next_id(tx, "pool")?;
            tx.execute("DELETE FROM pool_cpus", [])?;
            tx.execute("DELETE FROM domains", [])?;
            Err(StoreError::PoolNotFound("late".into()))
        })
        .unwrap_err();
    assert_eq!(err.to_string(), "Pool 'late' does not exist");
    assert_eq!(dump(&path), before);
    // A database-level failure mid-way rolls back too.
    let err = store
        .write(|tx| -> Result<()> {
            tx.execute("DELETE FROM domains", [])?;
            tx.execute(
                "INSERT INTO pools (id, name, sched) VALUES (0, 'dup', 'host')",
                [],
            )?;
            Ok(())
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Database(_)), "{err}");
    assert_eq!(dump(&path), before);
}

/// The child side of [`concurrent_processes_lose_no_update`]: run only when
/// that test starts this binary again with the database in the environment.
#[test]
#[ignore = "run as a child process by concurrent_processes_lose_no_update"]
fn child_process_creates_domains() {
    let path = std::env::var("GANG_STORE_TEST_DB").expect("GANG_STORE_TEST_DB");
    let tag = std::env::var("GANG_STORE_TEST_TAG").expect("GANG_STORE_TEST_TAG");
    let mut store = open4(Path::new(&path));
    for i in 0..50 {
        let id = store
            .create_domain(&new_domain(&format!("{tag}{i}"), "Pool-0"))
            .unwrap();
        store.set_state(id, &DomainState::Paused).unwrap();
    }
}

#[test]
fn concurrent_processes_lose_no_update() {
    let (_dir, path) = temp_db();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = ["p", "q"]
        .into_iter()
        .map(|tag| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "store::tests::child_process_creates_domains",
                    "--ignored",
                    "--quiet",
                ])
                .env("GANG_STORE_TEST_DB", &path)
                .env("GANG_STORE_TEST_TAG", tag)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let store = open4(&path);
    let domains = store.domains().unwrap();
    assert_eq!(domains.len(), 100);
    let ids: Vec<u32> = domains.iter().map(|d| d.id.0).collect();
    assert_eq!(ids, (1..=100).collect::<Vec<_>>());
    assert!(domains.iter().all(|d| d.state == DomainState::Paused));
    assert_eq!(store.pools().unwrap().len(), 1);
}

#[test]
fn shared_pools_borrow_cpus_of_pool0_which_keeps_them() {
    let (_dir, path) = temp_db();
    let mut store = open4(&path);
    let s = store
        .create_pool("s", Sched::Gang, &cpus(&[0, 1]), true)
        .unwrap();
    let pools = store.pools().unwrap();
    assert_eq!(pools[0].cpus, cpus(&[0, 1, 2, 3]), "Pool-0 keeps lent cpus");
    assert!(pools[1].shared);
    assert_eq!(pools[1].cpus, cpus(&[0, 1]));
    assert_eq!(store.free_cpus().unwrap(), CpuSet::new());
    // A CPU is lent to one pool at most, and only a CPU of Pool-0 is lent.
    store
        .remove_cpus(PoolRef::Id(PoolId::POOL0), &cpus(&[3]))
        .unwrap();
    for (cpu, set) in [(1, cpus(&[1])), (3, cpus(&[3]))] {
        let before = store.pools().unwrap();
        let e = store.create_pool("t", Sched::Gang, &set, true).unwrap_err();
        assert_eq!(
            e.to_string().split(' ').nth(1),
            Some(cpu.to_string().as_str())
        );
        assert_eq!(store.pools().unwrap(), before, "refusal changes nothing");
    }
    // Pool-0 cannot lose a lent CPU; the shared pool can give it back.
    let e = store
        .remove_cpus(PoolRef::Id(PoolId::POOL0), &cpus(&[1]))
        .unwrap_err();
    assert_eq!(e.to_string(), "cpu 1 is shared with cpupool 's'");
    store.remove_cpus(PoolRef::Id(s), &cpus(&[1])).unwrap();
    store.add_cpus(PoolRef::Id(s), &cpus(&[2])).unwrap();
    assert_eq!(store.pool(&PoolRef::Id(s)).unwrap().cpus, cpus(&[0, 2]));
    assert!(matches!(
        store.create_pool("h", Sched::Host, &CpuSet::new(), true),
        Err(StoreError::SharedNeedsGang)
    ));
    // Domains can live in it; destroying the empty pool returns nothing to
    // the free list (Pool-0 never gave the CPUs away).
    store.destroy_pool(PoolRef::Id(s)).unwrap();
    assert_eq!(store.free_cpus().unwrap(), cpus(&[3]));
    store
        .remove_cpus(PoolRef::Id(PoolId::POOL0), &cpus(&[1]))
        .unwrap();
}

#[test]
fn a_gang_pool_keeps_its_shared_clock_and_a_host_pool_has_none() {
    let (_dir, path) = temp_db();
    let mut store = open4(&path);
    store.remove_cpus("Pool-0", &cpus(&[2, 3])).unwrap();
    let time = SharedTime {
        clock: WallClock::Tai,
        base_ns: 1_767_225_600_000_000_000,
        cycle_ns: 1_000_000_000,
        require_sync: false,
    };
    let g = store
        .create_pool_on("g", Sched::Gang, &cpus(&[2]), false, Some(time))
        .unwrap();
    assert_refused(
        &mut store,
        &path,
        "a cpupool on a shared clock must use the gang scheduler (its time is its table's)",
        |s| s.create_pool_on("h", Sched::Host, &cpus(&[3]), false, Some(time)),
    );
    drop(store);
    let store = open4(&path);
    assert_eq!(store.pool(&PoolRef::Id(g)).unwrap().time, Some(time));
    assert_eq!(store.pool(&"Pool-0".into()).unwrap().time, None);
}
