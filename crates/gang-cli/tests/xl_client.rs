//! The domain commands as clients: `gang` against a scripted stand-in for
//! the daemon (gang-proto's own server loop on a private socket, answering
//! canned values), so that what the CLI sends and prints is checked without
//! the real daemon: layouts, filters, errors, `shutdown -w` polling,
//! `console` following, `create -c`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use gang_proto::{
    ApiError, CpuList, DomainInfo, ErrorCode, PoolInfo, RequestBody, ResponseBody, RunState, Sched,
    SchedGangDomain, SchedGangPool, TraceSlot, VcpuInfo,
};

type Handler = dyn Fn(RequestBody) -> Result<ResponseBody, ApiError> + Send + Sync;

/// A stand-in daemon on a socket in a directory of its own (removed when
/// dropped), recording the requests it got.
struct Fake {
    dir: PathBuf,
    socket: PathBuf,
    requests: Arc<Mutex<Vec<RequestBody>>>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fake(
    tag: &str,
    handler: impl Fn(RequestBody) -> Result<ResponseBody, ApiError> + Send + Sync + 'static,
) -> Fake {
    let dir = std::env::temp_dir().join(format!("gang-client-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("gang.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let handler: Arc<Handler> = Arc::new(handler);
    let log = Arc::clone(&requests);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let handler = Arc::clone(&handler);
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let _ = gang_proto::serve(stream, |body| {
                    log.lock().unwrap().push(body.clone());
                    handler(body)
                });
            });
        }
    });
    Fake {
        dir,
        socket,
        requests,
    }
}

impl Fake {
    fn gang(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_gang"))
            .args(args)
            .current_dir(&self.dir)
            .env("GANG_SOCKET", &self.socket)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.gang(args);
        assert!(
            out.status.success(),
            "gang {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.gang(args);
        assert_eq!(out.status.code(), Some(1), "gang {args:?} must fail");
        String::from_utf8(out.stderr).unwrap()
    }

    fn requests(&self) -> Vec<RequestBody> {
        std::mem::take(&mut *self.requests.lock().unwrap())
    }
}

fn domain(id: u32, name: &str, state: &str, pool: &str) -> DomainInfo {
    DomainInfo {
        id,
        name: name.into(),
        memory_mb: if id == 0 { 4096 } else { 64 },
        vcpus: 2,
        state: RunState::parse_xl_flags(state).expect("xl's six flags"),
        cpu_time_s: 12.25,
        pool: pool.into(),
        uuid: format!("00000000-0000-0000-0000-00000000000{id}"),
        reason: None,
        config: (id != 0).then(|| {
            let text = format!("name = {name:?}\nvcpus = 2\ncommand = \"true\"\n");
            let cfg = gang_config::Config::parse("t.cfg", &text).expect("parses");
            Box::new(gang_config::DomainConfig::from_config(&cfg).expect("a domain"))
        }),
        threads: Vec::new(),
        cosched: None,
    }
}

fn two_domains() -> Vec<DomainInfo> {
    vec![
        domain(0, "Domain-0", "r-----", "Pool-0"),
        domain(3, "my-domain", "--p---", "GangSched-Pool"),
    ]
}

fn not_found(what: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("{what} is an invalid domain identifier (rc=-6)"),
    )
}

#[test]
fn list_layouts_filters_and_errors() {
    let f = fake("list", |body| match body {
        RequestBody::ListDomains { .. } => Ok(ResponseBody::Domains {
            domains: two_domains(),
        }),
        other => panic!("{other:?}"),
    });
    assert_eq!(
        f.ok(&["list", "-v", "my-domain"]),
        "Name                                        ID   Mem VCPUs\tState\tTime(s)   UUID                            Reason-Code\tSecurity Label\n\
         my-domain                                    3    64     2     --p---      12.2 00000000-0000-0000-0000-000000000003        -                -\n"
    );
    // A domain id, and -c with -v.
    let vc = f.ok(&["list", "-vc", "3"]);
    assert!(vc.ends_with("-                -  GangSched-Pool\n"), "{vc}");
    // -l: a JSON array of domid and config, even with -v and -c.
    let long: serde_json::Value = serde_json::from_str(&f.ok(&["list", "-l", "-v", "-c"])).unwrap();
    assert_eq!(long[0], serde_json::json!({"domid": 0, "config": null}));
    assert_eq!(long[1]["domid"], 3);
    assert_eq!(long[1]["config"]["name"], "my-domain");
    assert_eq!(long[1]["config"]["vcpus"], 2);
    // Only -l asks for the configurations and threads.
    let asked: Vec<_> = f
        .requests()
        .into_iter()
        .filter_map(|r| match r {
            RequestBody::ListDomains { detail } => Some(detail),
            _ => None,
        })
        .collect();
    assert_eq!(asked, vec![false, false, true]);
    assert!(f
        .ok(&["list", "-l", "3"])
        .starts_with("[\n    {\n        \"domid\": 3,"));
    assert_eq!(
        f.fails(&["list", "nope"]),
        "nope is an invalid domain identifier (rc=-6)\n"
    );
    // All digits is an id, never a name.
    assert_eq!(
        f.fails(&["list", "-l", "7"]),
        "7 is an invalid domain identifier (rc=-6)\n"
    );
}

#[test]
fn vcpu_list_sends_the_domains_and_prints_xls_layout() {
    let f = fake("vcpu", |body| match body {
        RequestBody::VcpuList { domains } if domains.iter().any(|d| d == "nope") => {
            Err(not_found("nope"))
        }
        RequestBody::VcpuList { .. } => Ok(ResponseBody::Vcpus {
            vcpus: vec![
                VcpuInfo {
                    domain: "my-domain".into(),
                    domid: 3,
                    vcpu: 0,
                    cpu: Some(1),
                    running: true,
                    blocked: false,
                    paused: false,
                    time_s: 1.5,
                    hard_affinity: "1".into(),
                    soft_affinity: "all".into(),
                },
                VcpuInfo {
                    domain: "my-domain".into(),
                    domid: 3,
                    vcpu: 1,
                    cpu: None,
                    running: false,
                    blocked: true,
                    paused: false,
                    time_s: 0.0,
                    hard_affinity: "2".into(),
                    soft_affinity: "all".into(),
                },
            ],
        }),
        other => panic!("{other:?}"),
    });
    assert_eq!(
        f.ok(&["vcpu-list", "my-domain", "3"]),
        "Name                                ID  VCPU   CPU State   Time(s) Affinity (Hard / Soft)\n\
         my-domain                            3     0    1   r--       1.5  1 / all\n\
         my-domain                            3     1    -   -b-       0.0  2 / all\n"
    );
    assert_eq!(
        f.requests(),
        vec![RequestBody::VcpuList {
            domains: vec!["my-domain".into(), "3".into()]
        }]
    );
    assert_eq!(
        f.fails(&["vcpu-list", "nope"]),
        "nope is an invalid domain identifier (rc=-6)\n"
    );
}

#[test]
fn life_cycle_commands_send_their_request_and_print_the_daemons_refusal() {
    let f = fake("life", |body| match body {
        RequestBody::ListDomains { .. } => Ok(ResponseBody::Domains {
            domains: two_domains(),
        }),
        RequestBody::Pause { domain }
        | RequestBody::Unpause { domain }
        | RequestBody::Destroy { domain }
        | RequestBody::Reboot { domain }
        | RequestBody::Shutdown { domain }
            if domain == "nope" =>
        {
            Err(not_found(&domain))
        }
        RequestBody::Unpause { .. } => Err(ApiError::new(
            ErrorCode::Refused,
            "my-domain cannot run: CPU 1 is over its cap (90% > 80%)",
        )),
        RequestBody::Dmesg { .. } => Ok(ResponseBody::Dmesg {
            lines: vec!["(d3) created".into(), "(d3) paused".into()],
        }),
        _ => Ok(ResponseBody::Done),
    });
    assert_eq!(f.ok(&["pause", "my-domain"]), "");
    assert_eq!(f.ok(&["destroy", "3"]), "");
    assert_eq!(
        f.requests(),
        vec![
            RequestBody::Pause {
                domain: "my-domain".into()
            },
            RequestBody::Destroy { domain: "3".into() }
        ]
    );
    assert_eq!(
        f.fails(&["unpause", "my-domain"]),
        "my-domain cannot run: CPU 1 is over its cap (90% > 80%)\n"
    );
    assert_eq!(
        f.fails(&["pause", "nope"]),
        "nope is an invalid domain identifier (rc=-6)\n"
    );
    // reboot and shutdown name the domain by id, as xl reports it.
    let out = f.gang(&["reboot", "my-domain"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "Rebooting domain 3\n");
    let out = f.gang(&["shutdown", "my-domain"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Shutting down domain 3\n"
    );
    assert_eq!(
        f.fails(&["shutdown", "nope"]),
        "nope is an invalid domain identifier (rc=-6)\n"
    );
    f.requests();
    // -a: every domain but Domain-0.
    assert_eq!(f.ok(&["shutdown", "-a"]), "");
    let sent: Vec<_> = f
        .requests()
        .into_iter()
        .filter(|r| matches!(r, RequestBody::Shutdown { .. }))
        .collect();
    assert_eq!(sent, vec![RequestBody::Shutdown { domain: "3".into() }]);
    // dmesg prints the lines; -c asks to clear.
    assert_eq!(f.ok(&["dmesg", "-c"]), "(d3) created\n(d3) paused\n");
    assert_eq!(f.requests(), vec![RequestBody::Dmesg { clear: true }]);
}

#[test]
fn shutdown_wait_polls_until_shut_down_or_times_out() {
    let polls = Arc::new(AtomicUsize::new(0));
    let p = Arc::clone(&polls);
    let f = fake("wait", move |body| match body {
        RequestBody::ListDomains { .. } => {
            let n = p.fetch_add(1, Ordering::SeqCst);
            let mut domains = two_domains();
            domains.push(domain(4, "stubborn", "-b----", "Pool-0"));
            if n >= 3 {
                domains[1].state = RunState::parse_xl_flags("---s--").expect("flags");
            }
            Ok(ResponseBody::Domains { domains })
        }
        _ => Ok(ResponseBody::Done),
    });
    let out = f.gang(&["shutdown", "-w", "my-domain"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Shutting down domain 3\nWaiting for 1 domains\n\
         Domain 3 has been shut down, reason code 0\nAll domains have been shut down\n"
    );
    assert!(polls.load(Ordering::SeqCst) >= 4);
    let err = f.fails(&["shutdown", "-w", "--timeout", "1", "stubborn"]);
    assert!(
        err.ends_with("Timed out after 1s waiting for domain(s) 4 to shut down\n"),
        "{err}"
    );
}

fn gang_pools() -> Vec<SchedGangPool> {
    vec![SchedGangPool {
        dispatch: None,
        time: None,
        clock: None,
        name: "GangSched-Pool".into(),
        id: 1,
        grain_ns: 1_000_000,
        cpus: vec![1, 2],
        shared: false,
        host_slot_ns: None,
        active: true,
        domains: vec![
            SchedGangDomain {
                name: "my-domain".into(),
                id: 3,
                policy: Some("tt,100ms,40ms".parse().expect("a policy")),
                cpu_map: Some(vec![1, 2]),
                window_ns: 100_000_000,
                received_ns: 80_000_000,
                cosched: None,
            },
            SchedGangDomain {
                name: "other".into(),
                id: 5,
                policy: Some("be,256".parse().expect("a policy")),
                cpu_map: Some(vec![1]),
                window_ns: 1_000_000_000,
                received_ns: 250_500_000,
                cosched: None,
            },
        ],
    }]
}

#[test]
fn sched_gang_shows_sets_and_prints_refusals() {
    let f = fake("sched", |body| match body {
        RequestBody::SchedGangGet { .. } => Ok(ResponseBody::SchedGang {
            pools: gang_pools(),
        }),
        RequestBody::SchedGangSet {
            policy: Some(policy),
            ..
        } if policy == "tt,100ms,90ms".parse().expect("a policy") => Err(ApiError::new(
            ErrorCode::Refused,
            "my-domain cannot be admitted: CPU 1 would be 130% reserved (at most 95%)",
        )),
        RequestBody::SchedGangSet { .. } => Ok(ResponseBody::Done),
        RequestBody::ListDomains { .. } => Ok(ResponseBody::Domains {
            domains: two_domains(),
        }),
        RequestBody::ListPools => Ok(ResponseBody::Pools {
            pools: vec![
                PoolInfo {
                    id: 0,
                    name: "Pool-0".into(),
                    sched: Sched::Host,
                    cpus: vec![0],
                    domains: 1,
                    shared: false,
                },
                PoolInfo {
                    id: 1,
                    name: "GangSched-Pool".into(),
                    sched: Sched::Gang,
                    cpus: vec![1, 2],
                    domains: 1,
                    shared: false,
                },
            ],
        }),
        other => panic!("{other:?}"),
    });
    let table = "Cpupool GangSched-Pool: sched=gang grain=1ms cpus=1-2 shared=no active=yes\n\
                 Name                                ID Policy                 CPUs       Recv(last period)\n";
    assert_eq!(
        f.ok(&["sched-gang"]),
        format!(
            "{table}my-domain                            3 tt,100ms,40ms          1,2        80.0ms/100ms\n\
             other                                5 be,256                 1          250.5ms/1s\n"
        )
    );
    assert_eq!(
        f.ok(&["sched-gang", "-d", "3"]),
        format!("{table}my-domain                            3 tt,100ms,40ms          1,2        80.0ms/100ms\n")
    );
    assert_eq!(
        f.requests(),
        vec![
            RequestBody::SchedGangGet {
                pool: None,
                domain: None
            },
            RequestBody::SchedGangGet {
                pool: None,
                domain: Some("3".into())
            }
        ]
    );
    // Set, in the seed's syntax with -p.
    assert_eq!(
        f.ok(&[
            "sched-gang",
            "-p",
            "GangSched-Pool",
            "-d",
            "my-domain",
            "-c",
            "1,2",
            "-t",
            "tt,100,40"
        ]),
        ""
    );
    let sets: Vec<_> = f
        .requests()
        .into_iter()
        .filter(|r| matches!(r, RequestBody::SchedGangSet { .. }))
        .collect();
    assert_eq!(
        sets,
        vec![RequestBody::SchedGangSet {
            domain: "my-domain".into(),
            cpus: Some(CpuList::parse("1,2").expect("a list")),
            policy: Some("tt,100,40".parse().expect("a policy"))
        }]
    );
    // -c alone: one request, the daemon keeps the policy.
    f.ok(&["sched-gang", "-d", "my-domain", "-c", "2,1"]);
    assert_eq!(
        f.requests(),
        vec![RequestBody::SchedGangSet {
            domain: "my-domain".into(),
            cpus: Some(CpuList::parse("2,1").expect("a list")),
            policy: None
        }]
    );
    // Admission refusals are printed as the daemon words them.
    assert_eq!(
        f.fails(&["sched-gang", "-d", "my-domain", "-t", "tt,100ms,90ms"]),
        "my-domain cannot be admitted: CPU 1 would be 130% reserved (at most 95%)\n"
    );
    // -p must be the domain's pool.
    assert_eq!(
        f.fails(&[
            "sched-gang",
            "-p",
            "Pool-0",
            "-d",
            "my-domain",
            "-t",
            "be,1"
        ]),
        "Domain my-domain is in cpupool 'GangSched-Pool', not in 'Pool-0'\n"
    );
    assert_eq!(
        f.fails(&["sched-gang", "-p", "nope", "-d", "my-domain", "-t", "be,1"]),
        "Pool 'nope' does not exist\n"
    );
    // A domain outside the gang pools.
    assert_eq!(
        f.fails(&["sched-gang", "-d", "Domain-0"]),
        "Domain Domain-0 is not in a gang cpupool (it is in 'Pool-0')\n"
    );
}

#[test]
fn trace_groups_slots_and_prints_json_on_request() {
    let ms = 1_000_000;
    let f = fake("trace", move |body| match body {
        RequestBody::Trace {
            domain: Some(domain),
            ..
        } if domain == "nope" => Err(not_found("nope")),
        RequestBody::Trace { .. } => Ok(ResponseBody::Trace {
            now_ns: 250 * ms,
            since_base_ns: None,
            epoch_mono_ns: 0,
            domains: vec![],
            events: vec![],
            meta: Default::default(),
            slots: vec![
                TraceSlot {
                    late_ns: 0,
                    domain: 0,
                    vcpu: 0,
                    cpu: 1,
                    start_ns: 100 * ms,
                    end_ns: 140 * ms,
                },
                TraceSlot {
                    late_ns: 0,
                    domain: 0,
                    vcpu: 1,
                    cpu: 2,
                    start_ns: 100 * ms + 20_000,
                    end_ns: 140 * ms,
                },
                TraceSlot {
                    late_ns: 0,
                    domain: 0,
                    vcpu: 0,
                    cpu: 1,
                    start_ns: 200 * ms,
                    end_ns: 240 * ms,
                },
                TraceSlot {
                    late_ns: 0,
                    domain: 0,
                    vcpu: 1,
                    cpu: 2,
                    start_ns: 200 * ms + 5_000,
                    end_ns: 240 * ms,
                },
            ],
        }),
        RequestBody::ListDomains { .. } => Ok(ResponseBody::Domains {
            domains: two_domains(),
        }),
        other => panic!("{other:?}"),
    });
    assert_eq!(
        f.ok(&["trace", "my-domain"]),
        "   start(ms)    length   spread  vCPU->CPU ...\n\
         \x20    100.000    40.0ms   20.0us  0->1 1->2\n\
         \x20    200.000    40.0ms    5.0us  0->1 1->2\n\
         slots: 2, gang slots: 2 (all 2 vCPUs started together), max co-start spread: 20.0us\n"
    );
    let json: serde_json::Value = serde_json::from_str(&f.ok(&["trace", "--json", "3"])).unwrap();
    assert_eq!(json["now_ns"], 250 * ms);
    assert_eq!(json["slots"].as_array().unwrap().len(), 4);
    assert_eq!(
        f.fails(&["trace", "nope"]),
        "nope is an invalid domain identifier (rc=-6)\n"
    );
}

#[test]
fn console_prints_and_follows_until_the_domain_stops() {
    let dir = std::env::temp_dir().join(format!("gang-client-console-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("console.log");
    std::fs::write(&log, "hello\n").unwrap();
    let asks = Arc::new(AtomicUsize::new(0));
    let (a, path) = (Arc::clone(&asks), log.display().to_string());
    let f = fake("console", move |body| match body {
        RequestBody::Console { domain } if domain == "nope" => Err(not_found("nope")),
        RequestBody::Console { .. } => {
            let n = a.fetch_add(1, Ordering::SeqCst);
            if n == 2 {
                // More output while it runs.
                let mut file = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap();
                std::io::Write::write_all(&mut file, b"world\n").unwrap();
            }
            Ok(ResponseBody::Console {
                path: path.clone(),
                live: n < 4,
            })
        }
        RequestBody::CreateDomain { .. } => Ok(ResponseBody::Created { id: 7 }),
        other => panic!("{other:?}"),
    });
    assert_eq!(f.ok(&["console", "my-domain"]), "hello\nworld\n");
    assert_eq!(asks.load(Ordering::SeqCst), 5);
    assert_eq!(
        f.fails(&["console", "nope"]),
        "nope is an invalid domain identifier (rc=-6)\n"
    );
    // create -c attaches to the new domain's console.
    asks.store(10, Ordering::SeqCst); // not live any more: print and stop
    std::fs::write(
        f.dir.join("d.cfg"),
        "name = \"d\"\ntype = \"process\"\ncommand = [\"true\"]\n",
    )
    .unwrap();
    let out = f.gang(&["create", "-c", "d.cfg"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\nworld\n");
    assert!(f
        .requests()
        .contains(&RequestBody::Console { domain: "7".into() }));
    let _ = std::fs::remove_dir_all(&dir);
}
