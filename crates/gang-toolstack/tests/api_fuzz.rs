//! Fuzzing the daemon's API: a `Daemon` on a temporary state directory is
//! fed random well-formed requests and random raw JSON lines. It answers
//! each (a result or an error), never panics, and a refused request leaves
//! the state (`ListPools`, `ListDomains`, `SchedGangGet`) as it was.
//!
//! No domain is ever started: a `CreateDomain` whose configuration reads as
//! a domain configuration has what would start or adopt anything (command,
//! pid, pids, cgroup, kernel, disks) removed first, so it is refused. No
//! gang runtime starts either (they start with a pool's first domain).

use std::sync::atomic::{AtomicU32, Ordering};

use gang_config::{Config, DomainConfig};
use gang_core::time::{SharedTime, WallClock};
use gang_core::{CpuList, CpuSet, Policy};
use gang_proto::{parse_request, Request, RequestBody, ResponseBody, Sched, VERSION};
use gang_testkit::api::{FIELDS, OPS};
use gang_testkit::fuzz;
use gang_toolstack::daemon::{Daemon, DaemonConfig};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Cases per property (each a sequence of requests): a few seconds in a
/// debug build.
const CASES: u32 = 500;

/// A daemon on a fresh temporary state directory.
fn open_daemon() -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = Daemon::open(DaemonConfig {
        state_dir: dir.path().join("state"),
        host_cpus: CpuSet::parse("0-3", None).expect("cpus"),
        lift_rt_limit: false,
        qemu_accel: Default::default(),
        qemu_user: None,
    })
    .expect("a daemon opens on a temporary directory");
    (dir, daemon)
}

/// What the state looks like through the API.
fn snapshot(d: &mut Daemon) -> Vec<ResponseBody> {
    [
        RequestBody::ListPools,
        RequestBody::ListDomains { detail: true },
        RequestBody::SchedGangGet {
            pool: None,
            domain: None,
        },
    ]
    .into_iter()
    .map(|r| {
        let mut answer = d.handle(r.clone()).unwrap_or_else(|e| panic!("{r:?}: {e}"));
        // What the host's own domain uses moves on by itself.
        if let ResponseBody::Domains { domains } = &mut answer {
            for dom in domains.iter_mut() {
                dom.cpu_time_s = 0.0;
                if dom.id == 0 {
                    dom.memory_mb = 0;
                }
            }
        }
        answer
    })
    .collect()
}

/// Makes `body` harmless: a configuration that reads as a domain's loses
/// whatever would start or adopt a process, a VM or a cgroup.
fn defuse(body: RequestBody) -> RequestBody {
    match body {
        RequestBody::CreateDomain { mut config, paused } => {
            config.command = None;
            config.pid = None;
            config.pids.clear();
            config.cgroup = None;
            config.kernel = None;
            config.ramdisk = None;
            config.disks.clear();
            RequestBody::CreateDomain { config, paused }
        }
        other => other,
    }
}

/// Sends one request; checks that a refusal changed nothing.
fn send(d: &mut Daemon, body: RequestBody, refused: &AtomicU32) {
    let body = defuse(body);
    if let RequestBody::CreateDomain { config, .. } = &body {
        // Belt and braces: such a request is refused by construction.
        assert!(config.command.is_none() && config.pids.is_empty());
    }
    let before = snapshot(d);
    match d.handle(body.clone()) {
        Ok(ResponseBody::Created { .. }) if matches!(body, RequestBody::CreateDomain { .. }) => {
            panic!("a defused domain was created: {body:?}")
        }
        Ok(_) => {}
        Err(e) => {
            refused.fetch_add(1, Ordering::Relaxed);
            assert!(!e.message.is_empty(), "{body:?}");
            assert_eq!(
                snapshot(d),
                before,
                "refused {body:?} ({e}) changed the state"
            );
        }
    }
}

fn pool_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "(Pool-0|p[0-3]|GangSched-Pool|0|1|2|99|18446744073709551616|)",
        1 => "\\PC{0,8}",
    ]
}

fn domain_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "(d[0-3]|0|1|2|Domain-0|)",
        1 => "\\PC{0,8}",
    ]
}

fn cpus() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "(|0|1|2|3|0-1|2-3|0-3|all|\\^1|0-9|3-1|nodes:0|x|0,0|4)",
        1 => "[0-9,^ -]{0,8}",
    ]
}

/// A CPU list as a client parses it (text it refuses: the empty list).
fn cpu_list() -> impl Strategy<Value = CpuList> {
    cpus().prop_map(|text| CpuList::parse(&text).unwrap_or_default())
}

/// A shared clock setting, its base in the past or (refused) the future.
fn shared_time() -> impl Strategy<Value = SharedTime> {
    (
        prop_oneof![Just(WallClock::Tai), Just(WallClock::Realtime)],
        prop_oneof![
            Just(0i64),
            Just(1_767_225_600_000_000_000i64),
            Just(i64::MAX),
            any::<i64>()
        ],
    )
        .prop_map(|(clock, base_ns)| SharedTime {
            clock,
            base_ns,
            cycle_ns: gang_core::SEC,
            require_sync: false,
        })
}

/// A policy as a client parses it (text it refuses: none).
fn parsed_policy() -> impl Strategy<Value = Option<Policy>> {
    policy().prop_map(|text| text.parse().ok())
}

fn policy() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "(tt|et|be|no-mux)(,[0-9]{1,4}(ms|us|s)?){0,3}(@[0-9]{1,2}ms)?",
        1 => "\\PC{0,10}",
    ]
}

/// Any JSON value, small.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (0u32..5).prop_map(Value::from),
        "\\PC{0,10}".prop_map(Value::String),
        "(Pool-0|p1|0|1|0-1|all|tt,10ms,1ms|be,256|gang|credit)".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 20, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A domain configuration as the CLI sends it (parsed from xl.cfg text),
/// with some fields replaced by random JSON.
fn domain_config() -> impl Strategy<Value = Value> {
    (
        domain_name(),
        1u32..5,
        prop::option::of(cpus()),
        prop::option::of(pool_name()),
        prop::option::of(policy()),
        "(pvh|hvm|pv|generic)",
        prop::collection::vec(
            (
                prop::sample::select(
                    &[
                        "name",
                        "vcpus",
                        "cpus",
                        "pool",
                        "gang_policy",
                        "memory_mb",
                        "domain_type",
                        "on_crash",
                        "vif_specs",
                        "user",
                        "extra",
                    ][..],
                ),
                json_value(),
            ),
            0..3,
        ),
    )
        .prop_map(|(name, vcpus, cpus, pool, policy, ty, edits)| {
            let mut text = format!("name = {name:?}\nvcpus = {vcpus}\ntype = \"{ty}\"\n");
            if let Some(c) = cpus {
                text += &format!("cpus = {c:?}\n");
            }
            if let Some(p) = pool {
                text += &format!("pool = {p:?}\n");
            }
            if let Some(p) = policy {
                text += &format!("gang_policy = {p:?}\n");
            }
            let built = Config::parse("fuzz.cfg", &text)
                .ok()
                .and_then(|c| DomainConfig::from_config(&c).ok());
            let mut v = match built {
                Some(c) => serde_json::to_value(c).expect("serialisable"),
                None => json!({ "name": name }),
            };
            if let Some(m) = v.as_object_mut() {
                for (k, val) in edits {
                    m.insert(k.to_owned(), val);
                }
            }
            v
        })
}

/// Any well-formed request body.
fn request() -> impl Strategy<Value = RequestBody> {
    prop_oneof![
        Just(RequestBody::Info),
        any::<bool>().prop_map(|detail| RequestBody::ListDomains { detail }),
        Just(RequestBody::ListPools),
        (
            pool_name(),
            prop_oneof![Just(Sched::Gang), Just(Sched::Host)],
            cpu_list(),
            any::<bool>(),
            prop::option::of(shared_time())
        )
            .prop_map(
                |(name, sched, cpus, shared, time)| RequestBody::CreatePool {
                    name,
                    sched,
                    cpus,
                    shared,
                    time
                }
            ),
        pool_name().prop_map(|pool| RequestBody::DestroyPool { pool }),
        (pool_name(), pool_name()).prop_map(|(pool, name)| RequestBody::RenamePool { pool, name }),
        (pool_name(), cpu_list()).prop_map(|(pool, cpus)| RequestBody::PoolCpuAdd { pool, cpus }),
        (pool_name(), cpu_list())
            .prop_map(|(pool, cpus)| RequestBody::PoolCpuRemove { pool, cpus }),
        (domain_name(), pool_name())
            .prop_map(|(domain, pool)| RequestBody::PoolMigrate { domain, pool }),
        (
            prop_oneof![domain_config(), json_value()]
                .prop_filter_map("not a domain configuration", |v| {
                    serde_json::from_value::<DomainConfig>(v).ok()
                }),
            any::<bool>()
        )
            .prop_map(|(config, paused)| RequestBody::CreateDomain {
                config: Box::new(config),
                paused
            }),
        domain_name().prop_map(|domain| RequestBody::Pause { domain }),
        domain_name().prop_map(|domain| RequestBody::Unpause { domain }),
        domain_name().prop_map(|domain| RequestBody::Shutdown { domain }),
        domain_name().prop_map(|domain| RequestBody::Reboot { domain }),
        domain_name().prop_map(|domain| RequestBody::Destroy { domain }),
        (
            prop::option::of(pool_name()),
            prop::option::of(domain_name())
        )
            .prop_map(|(pool, domain)| RequestBody::SchedGangGet { pool, domain }),
        (domain_name(), prop::option::of(cpu_list()), parsed_policy()).prop_map(
            |(domain, cpus, policy)| {
                RequestBody::SchedGangSet {
                    domain,
                    cpus,
                    policy,
                }
            }
        ),
        prop::collection::vec(domain_name(), 0..3)
            .prop_map(|domains| RequestBody::VcpuList { domains }),
        any::<bool>().prop_map(|clear| RequestBody::Dmesg { clear }),
        domain_name().prop_map(|domain| RequestBody::Console { domain }),
        (domain_name(), prop::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(domain, bytes)| RequestBody::ConsoleInput { domain, bytes }),
        domain_name().prop_map(|domain| RequestBody::Trace {
            domain: Some(domain),
            pool: None,
            last_ns: None,
        }),
        (
            prop::option::of(domain_name()),
            prop::option::of(pool_name()),
            prop::option::of(0..5_000_000_000u64)
        )
            .prop_map(|(domain, pool, last_ns)| RequestBody::Trace {
                domain,
                pool,
                last_ns
            }),
    ]
}

/// A raw line: a request-shaped object with any field values, or any JSON,
/// or any text.
fn raw_line() -> impl Strategy<Value = String> {
    let object = (
        prop::option::weighted(0.9, prop::sample::select(OPS)),
        prop::collection::vec((prop::sample::select(FIELDS), json_value()), 0..4),
        any::<u64>(),
    )
        .prop_map(|(op, fields, id)| {
            let mut m = Map::new();
            m.insert("version".into(), json!(VERSION));
            m.insert("id".into(), json!(id));
            if let Some(op) = op {
                m.insert("op".into(), json!(op));
            }
            for (k, v) in fields {
                m.insert(k.to_owned(), v);
            }
            Value::Object(m).to_string()
        });
    let well_formed = (request(), any::<u64>()).prop_map(|(body, id)| {
        serde_json::to_string(&Request {
            version: VERSION,
            id,
            body: defuse(body),
        })
        .expect("serialisable")
    });
    let mutated =
        (request(), prop::sample::select(FIELDS), json_value()).prop_map(|(body, field, value)| {
            let mut v = serde_json::to_value(Request {
                version: VERSION,
                id: 7,
                body,
            })
            .expect("serialisable");
            v[field] = value;
            v.to_string()
        });
    prop_oneof![
        3 => well_formed,
        3 => mutated,
        3 => object,
        1 => json_value().prop_map(|v| v.to_string()),
        1 => "\\PC{0,30}",
    ]
}

#[test]
fn random_requests() {
    let (_dir, mut d) = open_daemon();
    let refused = AtomicU32::new(0);
    let sent = AtomicU32::new(0);
    let strategy = prop::collection::vec(request(), 1..8);
    fuzz("random_requests", CASES, strategy, |requests| {
        for r in requests {
            sent.fetch_add(1, Ordering::Relaxed);
            send(&mut d, r, &refused);
        }
    });
    println!(
        "random_requests: {} requests, {} refused",
        sent.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed)
    );
    d.shutdown();
}

#[test]
fn random_raw_lines() {
    let (_dir, mut d) = open_daemon();
    let refused = AtomicU32::new(0);
    let mut unreadable = 0u32;
    let strategy = prop::collection::vec(raw_line(), 1..8);
    fuzz("random_raw_lines", CASES, strategy, |lines| {
        for line in lines {
            match parse_request(&line) {
                Ok(req) => send(&mut d, req.body, &refused),
                Err((_, e)) => {
                    unreadable += 1;
                    assert!(!e.message.is_empty());
                }
            }
        }
    });
    println!(
        "random_raw_lines: {unreadable} lines unreadable, {} requests refused",
        refused.load(Ordering::Relaxed)
    );
    d.shutdown();
}
