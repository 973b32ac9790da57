//! Model-based: random request sequences through the CLI against a private
//! `gang daemon`, and after every request the daemon's `list -c`,
//! `cpupool-list`, `cpupool-list -c` and `sched-gang` must show what a
//! reference model kept by the test says: the pools (scheduler, shared or
//! not, CPUs, domain count, whether the dispatchers run), the domains (id,
//! vCPUs, pool, paused or running) and their gang policies; and every
//! request must be accepted or refused (exit status) as the model predicts.
//!
//! Requests: `cpupool-create` (gang or host, shared or not, with or without
//! CPUs, and unknown schedulers), `cpupool-destroy`, `cpupool-rename`
//! (Pool-0 too), `cpupool-cpu-add`/`-remove`, `create` (a `sleep` process of
//! 1 or 2 vCPUs as a whole program, or with 1 vCPU as an adopted vCPU
//! thread; in any pool, sometimes paused, sometimes with a `gang_policy`),
//! `pause`, `unpause`, `destroy`, `cpupool-migrate`, `sched-gang -d D [-c
//! CPUS] -t P` with valid policies, over-committing ones and malformed ones,
//! with or without an explicit CPU map. Names are drawn from small sets, so
//! that requests often name something that exists already, or does not.
//!
//! The model follows the documented rules (README, ARCHITECTURE, the store's
//! and the daemon's docs): xl's pool rules (Pool-0 keeps a CPU and is never
//! destroyed, a pool with domains keeps a CPU and is not destroyed, a CPU is
//! in one pool, a shared pool borrows CPUs of Pool-0 that nobody else
//! borrows and Pool-0 keeps them), a gang pool's dispatchers run while it has
//! a domain, only one unshared (exclusive) gang pool runs at a time, a whole
//! program cannot run in an exclusive pool (`Runtime::adopt_group`), a
//! failed request changes nothing.
//!
//! **Admission**, the rule the model uses (gang-core's `admission` and
//! `host_slot_for`): every running gang pool holds the host's slot, TT 4 ms
//! every 50 ms on all its CPUs, so all of a pool's domains are one cohort. A
//! candidate configuration is
//! * refused if a domain has more vCPUs than the pool has CPUs, a policy is
//!   `no` (it cannot be alone: the host slot is on every CPU) or has bad
//!   parameters (not whole grains, active > period);
//! * accepted if the total utilisation of the host slot and every TT/ET
//!   domain, summed as if all ran on one CPU, is at most 90% (the per-CPU cap
//!   that keeps 10% for best effort): then no CPU is over the cap, and gang
//!   EDF, which always runs the earliest deadline first, meets every deadline
//!   as uniprocessor EDF would at a utilisation of at most 1, so the table
//!   builds and verifies;
//! * refused if that total is over 90% and it all lands on every CPU (a pool
//!   of one CPU, or only domains as wide as the pool), or one domain with the
//!   host slot is over 90% by itself;
//! * otherwise not predicted: either outcome is accepted, a refusal must
//!   change nothing, and an acceptance is read back into the model.
//!
//! The CPU map is predicted when it is given (`-c`, one pool CPU per vCPU,
//! kept in CPU order) or forced (as many vCPUs as pool CPUs), and otherwise
//! read back (one distinct pool CPU per vCPU); the model then holds it, and
//! uses it (a CPU in a domain's map cannot leave the pool). Domain ids are
//! read back too (a create refused after the record was made uses an id):
//! each new one must be above every id seen before.
//!
//! Sequences are short (10-30 requests, most of them starting with a shared
//! gang pool on both CPUs or an exclusive one on CPU 1) and each starts from
//! the clean state (every domain destroyed, every pool but Pool-0 destroyed,
//! Pool-0 on all CPUs under its own name), reached through the same checked
//! requests. A request with its four listings takes 20-55 ms here (2 CPUs
//! shared with other work): 1,000-2,000 requests in 40-80 sequences in the
//! default 40 s; a 300 s run checked 276 sequences, 6,628 requests. Seeded:
//! `GANG_MODEL_SEED=N` replays the requests (not the timing); `GANG_MODEL_SECONDS` sets the time budget (default 40);
//! `GANG_MODEL_VERBOSE=1` prints every request and its answer. The seed and
//! the totals are printed past the harness's capture; a mismatch names the
//! seed, the sequence so far, the model before and after the last request
//! and what the daemon shows.
//!
//! Found with it, and fixed: `cpupool-migrate` of a running whole program
//! (no `vcpu_threads`) into an exclusive gang pool exited 1 (its threads
//! cannot be adopted there) but the domain had moved: `Daemon::migrate`
//! recorded the move before it attached the threads and did not undo it.
//! It is refused before anything moves now (seed 1796526045386656151
//! reached it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// What the model's requests draw beyond [`Rng`]'s own picks.
trait Draw {
    fn copy_of<T: Copy>(&mut self, xs: &[T]) -> T;
    fn chance(&mut self, percent: u64) -> bool;
}

impl Draw for Rng {
    fn copy_of<T: Copy>(&mut self, xs: &[T]) -> T {
        *self.pick(xs)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What a policy string is to the daemon.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Does not parse: refused by the CLI (`sched-gang`) or at `create`.
    Malformed,
    /// Parses, but admission refuses its parameters.
    BadParams,
    /// No-mux: never alone, since the host slot is on every pool CPU.
    NoMux,
    /// Best effort: no reservation.
    BestEffort,
    /// TT or ET: `active` ms of every `period` ms.
    Reserved { period: u64, active: u64 },
}

struct PolicyCase {
    /// As typed.
    input: &'static str,
    /// As `sched-gang` shows it.
    shown: &'static str,
    kind: Kind,
}

const fn reserved(
    input: &'static str,
    shown: &'static str,
    period: u64,
    active: u64,
) -> PolicyCase {
    PolicyCase {
        input,
        shown,
        kind: Kind::Reserved { period, active },
    }
}

const fn other(input: &'static str, shown: &'static str, kind: Kind) -> PolicyCase {
    PolicyCase { input, shown, kind }
}

/// The policies requests use; the first is the default a gang pool gives a
/// domain without one.
const POLICIES: &[PolicyCase] = &[
    other("be,256", "be,256", Kind::BestEffort),
    other("be,100,sf", "be,100,sf", Kind::BestEffort),
    reserved("tt,20ms,2ms", "tt,20ms,2ms", 20, 2),
    reserved("tt,100,40", "tt,100ms,40ms", 100, 40),
    reserved("et,50ms,10ms", "et,50ms,10ms", 50, 10),
    reserved("tt,10ms,5ms,sf", "tt,10ms,5ms,sf", 10, 5),
    reserved("et,20ms,4ms", "et,20ms,4ms", 20, 4),
    reserved("tt,100ms,30ms", "tt,100ms,30ms", 100, 30),
    reserved("tt,20ms,10ms", "tt,20ms,10ms", 20, 10),
    // Over-committing: with the host slot over the 90% cap on their own.
    reserved("tt,20ms,19ms", "tt,20ms,19ms", 20, 19),
    reserved("tt,10ms,10ms", "tt,10ms,10ms", 10, 10),
    other("no", "no", Kind::NoMux),
    other("tt,10ms,20ms", "tt,10ms,20ms", Kind::BadParams),
    other("tt,20ms,500us", "tt,20ms,500us", Kind::BadParams),
    other("be", "", Kind::Malformed),
    other("be,0", "", Kind::Malformed),
    other("tt,20ms", "", Kind::Malformed),
    other("xx,1", "", Kind::Malformed),
    other("et,10ms,1ms,zz", "", Kind::Malformed),
];

const DEFAULT_POLICY: usize = 0;

/// The host's slot in every running gang pool (`host_slot_for(1ms)`).
const HOST_SLOT: (u64, u64) = (50, 4);
/// At most this much of a CPU may be reserved (`be_reserve_pct` = 10).
const CAP_PERCENT: u64 = 90;

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Whether the host slot and these reservations, summed, stay within the
/// cap (exactly, in integers over the hyperperiod).
fn within_cap(reservations: &[(u64, u64)]) -> bool {
    let all: Vec<(u64, u64)> = std::iter::once(HOST_SLOT)
        .chain(reservations.iter().copied())
        .collect();
    let l = all.iter().fold(1, |l, &(p, _)| l / gcd(l, p) * p);
    let demand: u64 = all.iter().map(|&(p, a)| a * (l / p)).sum();
    100 * demand <= CAP_PERCENT * l
}

#[derive(Debug, Clone, PartialEq)]
struct Pool {
    name: String,
    gang: bool,
    shared: bool,
    cpus: BTreeSet<u32>,
}

/// A domain's CPU map as the model knows it.
#[derive(Debug, Clone, PartialEq)]
enum Map {
    /// None (a host pool's domain).
    Absent,
    /// Chosen by the scheduler, to be read back.
    Unknown,
    Known(Vec<u32>),
}

#[derive(Debug, Clone, PartialEq)]
struct Dom {
    name: String,
    /// `None` until read back.
    id: Option<u32>,
    vcpus: u32,
    /// Index into `Model::pools`.
    pool: usize,
    paused: bool,
    /// A whole program (no `vcpu_threads`).
    whole: bool,
    /// Its threads were attached once (it ran): a domain created paused has
    /// not until its first unpause.
    attached: bool,
    /// Index into `POLICIES`.
    policy: Option<usize>,
    map: Map,
}

/// The reference: pools in id order (Pool-0 first; ids are never reused, so
/// a new pool goes last), domains in id order.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    pools: Vec<Pool>,
    doms: Vec<Dom>,
    /// Every domain id ever seen: a new one must be above.
    max_id: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Verdict {
    Accept,
    Refuse,
    /// Admission too intricate to predict: either, read back.
    Either,
}

use Verdict::{Accept, Either, Refuse};

/// The weaker of two verdicts where both must pass.
fn and(a: Verdict, b: Verdict) -> Verdict {
    match (a, b) {
        (Refuse, _) | (_, Refuse) => Refuse,
        (Either, _) | (_, Either) => Either,
        _ => Accept,
    }
}

#[derive(Debug, Clone)]
enum Req {
    PoolCreate {
        name: String,
        sched: &'static str,
        cpus: Option<&'static str>,
        shared: bool,
    },
    PoolDestroy(String),
    PoolRename(String, String),
    CpuAdd(String, &'static str),
    CpuRemove(String, &'static str),
    Create {
        name: String,
        vcpus: u32,
        pool: String,
        policy: Option<usize>,
        paused: bool,
        whole: bool,
    },
    Pause(String),
    Unpause(String),
    Destroy(String),
    Migrate(String, String),
    /// `sched-gang -d D [-c CPUS] -t POLICY`.
    SchedGang(String, Option<&'static str>, usize),
}

fn cpu_arg(text: &str) -> BTreeSet<u32> {
    parse_cpus(text)
}

impl Req {
    fn args(&self, base: &Path) -> Vec<String> {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        match self {
            Req::PoolCreate {
                name,
                sched,
                cpus,
                shared,
            } => {
                let mut a = s(&[
                    "cpupool-create",
                    &format!("name=\"{name}\""),
                    &format!("sched=\"{sched}\""),
                ]);
                if let Some(c) = cpus {
                    a.push(format!("cpus=\"{c}\""));
                }
                if *shared {
                    a.push("shared=1".into());
                }
                a
            }
            Req::PoolDestroy(p) => s(&["cpupool-destroy", p]),
            Req::PoolRename(p, n) => s(&["cpupool-rename", p, n]),
            Req::CpuAdd(p, c) => s(&["cpupool-cpu-add", p, c]),
            Req::CpuRemove(p, c) => s(&["cpupool-cpu-remove", p, c]),
            Req::Create {
                name,
                vcpus,
                pool,
                policy,
                paused,
                whole,
            } => {
                let mut a = s(&["create", "-q"]);
                if *paused {
                    a.push("-p".into());
                }
                a.push(base.display().to_string());
                a.push(format!("name=\"{name}\""));
                a.push(format!("vcpus={vcpus}"));
                a.push(format!("pool=\"{pool}\""));
                if let Some(p) = policy {
                    a.push(format!("gang_policy=\"{}\"", POLICIES[*p].input));
                }
                if !whole {
                    a.push("vcpu_threads=\"sleep\"".into());
                }
                a
            }
            Req::Pause(d) => s(&["pause", d]),
            Req::Unpause(d) => s(&["unpause", d]),
            Req::Destroy(d) => s(&["destroy", d]),
            Req::Migrate(d, p) => s(&["cpupool-migrate", d, p]),
            Req::SchedGang(d, cpus, p) => {
                let mut a = s(&["sched-gang", "-d", d]);
                if let Some(c) = cpus {
                    a.extend(s(&["-c", c]));
                }
                a.extend(s(&["-t", POLICIES[*p].input]));
                a
            }
        }
    }
}

impl Model {
    fn clean(cpus: &BTreeSet<u32>, max_id: u32) -> Model {
        Model {
            pools: vec![Pool {
                name: "Pool-0".into(),
                gang: false,
                shared: false,
                cpus: cpus.clone(),
            }],
            doms: Vec::new(),
            max_id,
        }
    }

    fn pool(&self, name: &str) -> Option<usize> {
        self.pools.iter().position(|p| p.name == name)
    }

    fn dom(&self, name: &str) -> Option<usize> {
        self.doms.iter().position(|d| d.name == name)
    }

    fn count(&self, pool: usize) -> usize {
        self.doms.iter().filter(|d| d.pool == pool).count()
    }

    /// A gang pool's dispatchers run while it has a domain.
    fn running(&self, pool: usize) -> bool {
        self.pools[pool].gang && self.count(pool) > 0
    }

    /// CPUs in no unshared pool (Pool-0 included).
    fn free_cpus(&self, host: &BTreeSet<u32>) -> BTreeSet<u32> {
        let mut free = host.clone();
        for p in self.pools.iter().filter(|p| !p.shared) {
            free.retain(|c| !p.cpus.contains(c));
        }
        free
    }

    fn lent(&self) -> BTreeSet<u32> {
        self.pools
            .iter()
            .filter(|p| p.shared)
            .flat_map(|p| p.cpus.iter().copied())
            .collect()
    }

    /// Admission of the model's domains in gang pool `pool` as they are
    /// now (the candidate configuration), by the rule in the module docs.
    fn admission(&self, pool: usize) -> Verdict {
        let n = self.pools[pool].cpus.len() as u32;
        let members: Vec<&Dom> = self.doms.iter().filter(|d| d.pool == pool).collect();
        let mut reservations = Vec::new();
        let mut all_wide = true;
        for d in &members {
            if d.vcpus > n {
                return Refuse;
            }
            match POLICIES[d.policy.unwrap_or(DEFAULT_POLICY)].kind {
                Kind::Malformed | Kind::BadParams | Kind::NoMux => return Refuse,
                Kind::BestEffort => {}
                Kind::Reserved { period, active } => {
                    if !within_cap(&[(period, active)]) {
                        return Refuse;
                    }
                    reservations.push((period, active));
                    all_wide &= d.vcpus == n;
                }
            }
        }
        if within_cap(&reservations) {
            Accept
        } else if n == 1 || all_wide {
            Refuse
        } else {
            Either
        }
    }

    /// The map of a domain just admitted to gang pool `pool`.
    fn new_map(&self, vcpus: u32, pool: usize) -> Map {
        let cpus = &self.pools[pool].cpus;
        if cpus.len() == vcpus as usize {
            Map::Known(cpus.iter().copied().collect())
        } else {
            Map::Unknown
        }
    }

    /// Whether gang pool `pool` may start its dispatchers: only one
    /// exclusive pool runs at a time.
    fn may_start(&self, pool: usize) -> bool {
        let p = &self.pools[pool];
        p.shared
            || self.running(pool)
            || !(0..self.pools.len()).any(|q| q != pool && !self.pools[q].shared && self.running(q))
    }

    /// The verdict on `req` and the state if it is accepted.
    fn predict(&self, req: &Req, host: &BTreeSet<u32>) -> (Verdict, Model) {
        let mut next = self.clone();
        let verdict = self.apply(req, host, &mut next);
        (verdict, next)
    }

    fn apply(&self, req: &Req, host: &BTreeSet<u32>, next: &mut Model) -> Verdict {
        match req {
            Req::PoolCreate {
                name,
                sched,
                cpus,
                shared,
            } => {
                let gang = match *sched {
                    "gang" => true,
                    "host" => false,
                    _ => return Refuse, // Unknown scheduler
                };
                if (*shared && !gang) || self.pool(name).is_some() {
                    return Refuse;
                }
                let cpus = cpus.map(cpu_arg).unwrap_or_default();
                let ok = if *shared {
                    let lent = self.lent();
                    cpus.iter()
                        .all(|c| self.pools[0].cpus.contains(c) && !lent.contains(c))
                } else {
                    cpus.is_subset(&self.free_cpus(host))
                };
                if !ok {
                    return Refuse;
                }
                next.pools.push(Pool {
                    name: name.clone(),
                    gang,
                    shared: *shared,
                    cpus,
                });
                Accept
            }
            Req::PoolDestroy(name) => match self.pool(name) {
                Some(p) if p != 0 && self.count(p) == 0 => {
                    next.pools.remove(p);
                    for d in &mut next.doms {
                        if d.pool > p {
                            d.pool -= 1;
                        }
                    }
                    Accept
                }
                _ => Refuse,
            },
            Req::PoolRename(name, new) => {
                let Some(p) = self.pool(name) else {
                    return Refuse;
                };
                match self.pool(new) {
                    Some(q) if q == p => Accept,
                    Some(_) => Refuse,
                    None => {
                        next.pools[p].name = new.clone();
                        Accept
                    }
                }
            }
            Req::CpuAdd(name, cpus) => {
                let Some(p) = self.pool(name) else {
                    return Refuse;
                };
                let cpus = cpu_arg(cpus);
                let ok = if self.pools[p].shared {
                    let lent = self.lent();
                    cpus.iter()
                        .all(|c| self.pools[0].cpus.contains(c) && !lent.contains(c))
                } else {
                    cpus.is_subset(&self.free_cpus(host))
                };
                if !ok {
                    return Refuse;
                }
                next.pools[p].cpus.extend(cpus);
                // A running pool restarts on its new CPUs, its domains
                // re-admitted with their maps.
                if self.running(p) {
                    next.admission(p)
                } else {
                    Accept
                }
            }
            Req::CpuRemove(name, cpus) => {
                let Some(p) = self.pool(name) else {
                    return Refuse;
                };
                let cpus = cpu_arg(cpus);
                let pool = &self.pools[p];
                if !cpus.is_subset(&pool.cpus) {
                    return Refuse;
                }
                let left: BTreeSet<u32> = pool.cpus.difference(&cpus).copied().collect();
                if left.is_empty() && (p == 0 || self.count(p) > 0) {
                    return Refuse;
                }
                let in_use = self
                    .doms
                    .iter()
                    .filter(|d| d.pool == p)
                    .any(|d| match &d.map {
                        Map::Known(m) => m.iter().any(|c| cpus.contains(c)),
                        _ => false,
                    });
                if in_use || (p == 0 && cpus.iter().any(|c| self.lent().contains(c))) {
                    return Refuse;
                }
                next.pools[p].cpus = left;
                if self.running(p) {
                    next.admission(p)
                } else {
                    Accept
                }
            }
            Req::Create {
                name,
                vcpus,
                pool,
                policy,
                paused,
                whole,
            } => {
                let Some(p) = self.pool(pool) else {
                    return Refuse;
                };
                if self.dom(name).is_some() || self.pools[p].cpus.is_empty() {
                    return Refuse;
                }
                if policy.is_some_and(|i| POLICIES[i].kind == Kind::Malformed) {
                    return Refuse;
                }
                let gang = self.pools[p].gang;
                next.doms.push(Dom {
                    name: name.clone(),
                    id: None,
                    vcpus: *vcpus,
                    pool: p,
                    paused: *paused,
                    whole: *whole,
                    attached: !paused,
                    policy: if gang {
                        Some(policy.unwrap_or(DEFAULT_POLICY))
                    } else {
                        *policy
                    },
                    map: if gang {
                        self.new_map(*vcpus, p)
                    } else {
                        Map::Absent
                    },
                });
                if !gang {
                    return Accept;
                }
                if !self.may_start(p) {
                    return Refuse;
                }
                let exclusive = !self.pools[p].shared;
                and(
                    next.admission(p),
                    if exclusive && *whole && !paused {
                        Refuse
                    } else {
                        Accept
                    },
                )
            }
            Req::Pause(name) => {
                let Some(d) = self.dom(name) else {
                    return Refuse;
                };
                next.doms[d].paused = true;
                Accept
            }
            Req::Unpause(name) => {
                let Some(d) = self.dom(name) else {
                    return Refuse;
                };
                let dom = &self.doms[d];
                let pool = &self.pools[dom.pool];
                if dom.paused && !dom.attached && dom.whole && pool.gang && !pool.shared {
                    return Refuse; // its threads would be attached now
                }
                next.doms[d].paused = false;
                next.doms[d].attached = true;
                Accept
            }
            Req::Destroy(name) => {
                let Some(d) = self.dom(name) else {
                    return Refuse;
                };
                next.doms.remove(d);
                Accept
            }
            Req::Migrate(name, pool) => {
                let (Some(d), Some(p)) = (self.dom(name), self.pool(pool)) else {
                    return Refuse;
                };
                let dom = &self.doms[d];
                if dom.pool == p {
                    return Accept;
                }
                let target = &self.pools[p];
                if target.cpus.is_empty() {
                    return Refuse;
                }
                // A running whole program cannot run in an exclusive gang
                // pool: refused before anything moves. A paused one may go
                // there and stays paused, not attached (as if created there
                // paused).
                let exclusive = target.gang && !target.shared;
                if exclusive && dom.whole && !dom.paused {
                    return Refuse;
                }
                let moved = &mut next.doms[d];
                moved.pool = p;
                if exclusive && dom.whole {
                    moved.attached = false;
                }
                if !target.gang {
                    moved.map = Map::Absent;
                    return Accept;
                }
                moved.policy = Some(dom.policy.unwrap_or(DEFAULT_POLICY));
                moved.map = self.new_map(dom.vcpus, p);
                if !self.may_start(p) {
                    return Refuse;
                }
                next.admission(p)
            }
            Req::SchedGang(name, cpus, policy) => {
                let Some(d) = self.dom(name) else {
                    return Refuse;
                };
                let p = self.doms[d].pool;
                if POLICIES[*policy].kind == Kind::Malformed || !self.pools[p].gang {
                    return Refuse;
                }
                next.doms[d].policy = Some(*policy);
                next.doms[d].map = match cpus.map(cpu_arg) {
                    // An explicit map: one CPU of the pool per vCPU, in CPU
                    // order.
                    Some(set) => {
                        if set.len() != self.doms[d].vcpus as usize
                            || !set.is_subset(&self.pools[p].cpus)
                        {
                            return Refuse;
                        }
                        Map::Known(set.into_iter().collect())
                    }
                    None => self.new_map(self.doms[d].vcpus, p),
                };
                next.admission(p)
            }
        }
    }

    fn expected_text(&self) -> String {
        let mut out = String::new();
        for (i, p) in self.pools.iter().enumerate() {
            let _ = writeln!(
                out,
                "pool {} sched={} shared={} cpus={:?} domains={} active={}",
                p.name,
                if p.gang { "gang" } else { "host" },
                p.shared,
                p.cpus,
                self.count(i),
                self.running(i)
            );
        }
        for d in &self.doms {
            let _ = writeln!(
                out,
                "domain {} id={:?} vcpus={} pool={} paused={} whole={} attached={} policy={} map={:?}",
                d.name,
                d.id,
                d.vcpus,
                self.pools[d.pool].name,
                d.paused,
                d.whole,
                d.attached,
                d.policy.map_or("-", |p| POLICIES[p].shown),
                d.map
            );
        }
        out
    }
}

/// What the daemon shows, parsed.
#[derive(Debug, Default)]
struct Seen {
    /// `list -c`: (name, id, vcpus, state, pool), Domain-0 left out.
    doms: Vec<(String, u32, u32, String, String)>,
    /// `cpupool-list`: (name, cpu count, sched, domain count).
    pools: Vec<(String, usize, String, usize)>,
    /// `cpupool-list -c`: (name, cpus).
    pool_cpus: Vec<(String, BTreeSet<u32>)>,
    /// `sched-gang` pool lines: (name, cpus, shared, active), and rows:
    /// (pool, name, id, policy, map).
    gang_pools: Vec<(String, BTreeSet<u32>, bool, bool)>,
    gang_rows: Vec<(String, String, u32, String, String)>,
    raw: String,
}

/// Runs the four listings at once (the daemon answers them one by one).
fn observe(d: &Daemon) -> Seen {
    let socket = d.dir().join("gang.sock");
    let listings: [&[&str]; 4] = [
        &["list", "-c"],
        &["cpupool-list"],
        &["cpupool-list", "-c"],
        &["sched-gang"],
    ];
    let children: Vec<_> = listings
        .iter()
        .map(|args| {
            Command::new(env!("CARGO_BIN_EXE_gang"))
                .args(*args)
                .env("GANG_SOCKET", &socket)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<String> = children
        .into_iter()
        .zip(listings)
        .map(|(c, args)| {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "gang {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        })
        .collect();
    let mut seen = Seen {
        raw: outs.join("\n"),
        ..Seen::default()
    };
    for l in outs[0].lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f[0] == "Domain-0" {
            continue;
        }
        seen.doms.push((
            f[0].into(),
            f[1].parse().unwrap(),
            f[3].parse().unwrap(),
            f[4].into(),
            f.get(6).copied().unwrap_or("").into(),
        ));
    }
    for l in outs[1].lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        seen.pools.push((
            f[0].into(),
            f[1].parse().unwrap(),
            f[2].into(),
            f[4].parse().unwrap(),
        ));
    }
    for l in outs[2].lines().skip(1) {
        let mut f = l.split_whitespace();
        let name = f.next().unwrap().to_string();
        seen.pool_cpus
            .push((name, f.next().map(parse_cpus).unwrap_or_default()));
    }
    let mut pool = String::new();
    for l in outs[3].lines() {
        if let Some(rest) = l.strip_prefix("Cpupool ") {
            let (name, fields) = rest.split_once(": ").unwrap();
            pool = name.to_string();
            let field = |k: &str| {
                fields
                    .split_whitespace()
                    .find_map(|f| f.strip_prefix(k))
                    .unwrap_or("")
                    .to_string()
            };
            let cpus = field("cpus=");
            seen.gang_pools.push((
                pool.clone(),
                if cpus == "none" {
                    BTreeSet::new()
                } else {
                    parse_cpus(&cpus)
                },
                field("shared=") == "yes",
                field("active=") == "yes",
            ));
            assert_eq!(field("host-slot="), "4ms/50ms", "{l}");
            assert_eq!(field("grain="), "1ms", "{l}");
        } else if l.starts_with("  dispatch") || l.starts_with("Name ") {
            continue;
        } else {
            let f: Vec<&str> = l.split_whitespace().collect();
            seen.gang_rows.push((
                pool.clone(),
                f[0].into(),
                f[1].parse().unwrap(),
                f[2].into(),
                f[3].into(),
            ));
        }
    }
    seen
}

/// Compares what the daemon shows with the model; reads back what the
/// model leaves open (new ids, maps the scheduler chose). Returns why not.
fn compare(model: &mut Model, seen: &Seen) -> Result<(), String> {
    // Pools.
    let names: Vec<&str> = model.pools.iter().map(|p| p.name.as_str()).collect();
    let listed: Vec<&str> = seen.pools.iter().map(|p| p.0.as_str()).collect();
    if names != listed {
        return Err(format!("pools {listed:?}, expected {names:?}"));
    }
    for (i, p) in model.pools.iter().enumerate() {
        let want = (
            p.name.clone(),
            p.cpus.len(),
            if p.gang { "gang" } else { "host" }.to_string(),
            model.count(i),
        );
        if seen.pools[i] != want {
            return Err(format!(
                "cpupool-list row {:?}, expected {want:?}",
                seen.pools[i]
            ));
        }
        if seen.pool_cpus[i] != (p.name.clone(), p.cpus.clone()) {
            return Err(format!(
                "cpupool-list -c row {:?}, expected {:?}",
                seen.pool_cpus[i], p.cpus
            ));
        }
    }
    let gang: Vec<(String, BTreeSet<u32>, bool, bool)> = model
        .pools
        .iter()
        .enumerate()
        .filter(|(_, p)| p.gang)
        .map(|(i, p)| (p.name.clone(), p.cpus.clone(), p.shared, model.running(i)))
        .collect();
    if seen.gang_pools != gang {
        return Err(format!(
            "sched-gang pools (name, cpus, shared, active) {:?}, expected {gang:?}",
            seen.gang_pools
        ));
    }
    // Domains.
    if seen.doms.len() != model.doms.len() {
        return Err(format!(
            "{} domains listed, expected {}",
            seen.doms.len(),
            model.doms.len()
        ));
    }
    let mut max_id = model.max_id;
    for (d, (name, id, vcpus, state, pool)) in model.doms.iter_mut().zip(&seen.doms) {
        match d.id {
            Some(want) if want != *id => return Err(format!("{name}: id {id}, expected {want}")),
            Some(_) => {}
            None if *id <= max_id => {
                return Err(format!("{name}: new id {id} is not above {max_id}"))
            }
            None => d.id = Some(*id),
        }
        max_id = max_id.max(*id);
        let want_state = if d.paused { "--p---" } else { "r-----|-b----" };
        if *name != d.name
            || *vcpus != d.vcpus
            || !want_state.split('|').any(|s| s == state)
            || *pool != model.pools[d.pool].name
        {
            return Err(format!(
                "list -c row {name} id {id} vcpus {vcpus} state {state} pool {pool}, expected \
                 {} vcpus {} state {want_state} pool {}",
                d.name, d.vcpus, model.pools[d.pool].name
            ));
        }
    }
    model.max_id = max_id;
    // Gang parameters of the domains in gang pools.
    let in_gang: Vec<usize> = (0..model.doms.len())
        .filter(|&i| model.pools[model.doms[i].pool].gang)
        .collect();
    if seen.gang_rows.len() != in_gang.len() {
        return Err(format!(
            "sched-gang shows {} domains, expected {}",
            seen.gang_rows.len(),
            in_gang.len()
        ));
    }
    // sched-gang lists pool by pool, each pool's domains by id.
    let mut order = in_gang.clone();
    order.sort_by_key(|&i| (model.doms[i].pool, model.doms[i].id));
    for (&i, (pool, name, id, policy, map)) in order.iter().zip(&seen.gang_rows) {
        let d = &mut model.doms[i];
        let p = &model.pools[d.pool];
        let shown = d.policy.map_or("-", |x| POLICIES[x].shown);
        if *name != d.name || Some(*id) != d.id || *pool != p.name || policy != shown {
            return Err(format!(
                "sched-gang row {pool} {name} {id} {policy}, expected {} {} {:?} {shown}",
                p.name, d.name, d.id
            ));
        }
        let cpus: Vec<u32> = if map == "-" {
            Vec::new()
        } else {
            map.split(',').map(|c| c.parse().unwrap()).collect()
        };
        let valid = cpus.len() == d.vcpus as usize
            && cpus.iter().all(|c| p.cpus.contains(c))
            && cpus.iter().collect::<BTreeSet<_>>().len() == cpus.len();
        match &d.map {
            Map::Known(m) if *m != cpus => {
                return Err(format!("{name}: cpu map {map}, expected {m:?}"))
            }
            Map::Unknown if !valid => {
                return Err(format!(
                    "{name}: cpu map {map} is not one distinct cpu of {:?} per vcpu",
                    p.cpus
                ))
            }
            Map::Absent => return Err(format!("{name}: a map in a gang pool")),
            _ => d.map = Map::Known(cpus),
        }
    }
    Ok(())
}

const DOMAIN_NAMES: &[&str] = &["d1", "d2", "d3"];
const POOL_NAMES: &[&str] = &["Pool-0", "A", "B", "C"];
const CPU_ARGS: &[&str] = &["0", "1", "0-1"];

/// A random request, mostly naming things that exist.
fn random_request(rng: &mut Rng, m: &Model) -> Req {
    let existing_pool = |rng: &mut Rng| {
        if rng.chance(85) {
            rng.pick(&m.pools).name.clone()
        } else {
            rng.pick(POOL_NAMES).to_string()
        }
    };
    let existing_dom = |rng: &mut Rng| {
        if !m.doms.is_empty() && rng.chance(90) {
            rng.pick(&m.doms).name.clone()
        } else {
            rng.pick(DOMAIN_NAMES).to_string()
        }
    };
    let gang_pool = |rng: &mut Rng| {
        let gang: Vec<&Pool> = m.pools.iter().filter(|p| p.gang).collect();
        if !gang.is_empty() && rng.chance(75) {
            rng.pick(&gang).name.clone()
        } else {
            existing_pool(rng)
        }
    };
    // Mostly the policies a pool can admit, now and then any.
    let policy = |rng: &mut Rng| {
        if rng.chance(70) {
            rng.below(9) as usize
        } else {
            rng.below(POLICIES.len() as u64) as usize
        }
    };
    let gang_dom = |rng: &mut Rng| {
        let gang: Vec<&Dom> = m.doms.iter().filter(|d| m.pools[d.pool].gang).collect();
        if !gang.is_empty() && rng.chance(80) {
            rng.pick(&gang).name.clone()
        } else {
            existing_dom(rng)
        }
    };
    // More creates while there are few domains.
    let create_weight = if m.doms.len() < 2 { 30 } else { 12 };
    let roll = rng.below(100 + create_weight);
    if roll >= 100 {
        return random_create(rng, m, &gang_pool, &policy);
    }
    match roll {
        0..=7 => Req::PoolCreate {
            name: rng.pick(&POOL_NAMES[1..]).to_string(),
            sched: rng.copy_of(&["gang", "gang", "gang", "host", "credit"]),
            cpus: if rng.chance(80) {
                Some(rng.copy_of(CPU_ARGS))
            } else {
                None
            },
            shared: rng.chance(50),
        },
        8..=11 => Req::PoolDestroy(existing_pool(rng)),
        12..=14 => Req::PoolRename(existing_pool(rng), rng.pick(POOL_NAMES).to_string()),
        15..=21 => Req::CpuAdd(existing_pool(rng), rng.copy_of(CPU_ARGS)),
        22..=28 => Req::CpuRemove(existing_pool(rng), rng.copy_of(CPU_ARGS)),
        29..=46 => random_create(rng, m, &gang_pool, &policy),
        47..=53 => Req::Pause(existing_dom(rng)),
        54..=60 => Req::Unpause(existing_dom(rng)),
        61..=66 => Req::Destroy(existing_dom(rng)),
        67..=81 => {
            // Mostly to another pool: out of a gang pool, or into one.
            let name = existing_dom(rng);
            let to = match m.dom(&name) {
                Some(d) if rng.chance(85) => {
                    let from = m.doms[d].pool;
                    let others: Vec<&Pool> = m
                        .pools
                        .iter()
                        .enumerate()
                        .filter(|&(i, p)| i != from && p.gang != m.pools[from].gang)
                        .map(|(_, p)| p)
                        .collect();
                    if others.is_empty() {
                        existing_pool(rng)
                    } else {
                        rng.pick(&others).name.clone()
                    }
                }
                _ => existing_pool(rng),
            };
            Req::Migrate(name, to)
        }
        _ => Req::SchedGang(
            gang_dom(rng),
            if rng.chance(30) {
                Some(rng.copy_of(CPU_ARGS))
            } else {
                None
            },
            policy(rng),
        ),
    }
}

fn random_create(
    rng: &mut Rng,
    _m: &Model,
    pool: &dyn Fn(&mut Rng) -> String,
    policy: &dyn Fn(&mut Rng) -> usize,
) -> Req {
    let vcpus = if rng.chance(70) { 1 } else { 2 };
    Req::Create {
        name: rng.pick(DOMAIN_NAMES).to_string(),
        vcpus,
        pool: pool(rng),
        policy: if rng.chance(40) {
            Some(policy(rng))
        } else {
            None
        },
        paused: rng.chance(30),
        // `sleep` has one thread: a vCPU thread for one vCPU at most.
        whole: vcpus == 2 || rng.chance(50),
    }
}

/// The requests that bring the model back to the clean state.
fn cleanup(m: &Model, host: &BTreeSet<u32>) -> Vec<Req> {
    let mut out: Vec<Req> = m
        .doms
        .iter()
        .map(|d| Req::Destroy(d.name.clone()))
        .collect();
    for p in m.pools.iter().skip(1) {
        if !p.cpus.is_empty() {
            out.push(Req::CpuRemove(p.name.clone(), cpus_text(&p.cpus)));
        }
        out.push(Req::PoolDestroy(p.name.clone()));
    }
    if m.pools[0].name != "Pool-0" {
        out.push(Req::PoolRename(m.pools[0].name.clone(), "Pool-0".into()));
    }
    let missing: BTreeSet<u32> = host.difference(&m.pools[0].cpus).copied().collect();
    if !missing.is_empty() {
        out.push(Req::CpuAdd("Pool-0".into(), cpus_text(&missing)));
    }
    out
}

fn cpus_text(cpus: &BTreeSet<u32>) -> &'static str {
    let v: Vec<u32> = cpus.iter().copied().collect();
    match v.as_slice() {
        [0] => "0",
        [1] => "1",
        [0, 1] => "0-1",
        other => panic!("cpus {other:?} on a 2-CPU host"),
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[test]
fn random_request_sequences_match_the_reference_model() {
    if !can_run_domains() {
        return;
    }
    let host =
        parse_cpus(&std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default());
    if host != BTreeSet::from([0, 1]) {
        skip_plain("the model is written for a host of CPUs 0 and 1");
        return;
    }
    let seed = seed_from("GANG_MODEL_SEED");
    let budget = Duration::from_secs(
        std::env::var("GANG_MODEL_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(40),
    );
    note(&format!(
        "xl_model: seed {seed} (GANG_MODEL_SEED={seed} replays it)"
    ));
    let verbose = std::env::var_os("GANG_MODEL_VERBOSE").is_some();
    let mut rng = Rng(seed);
    let t = TestDir::new("model");
    let base = t.0.join("sleep.cfg");
    std::fs::write(
        &base,
        "name = \"x\"\ntype = \"process\"\nvcpus = 1\ncommand = [\"sleep\", \"1000\"]\n",
    )
    .unwrap();
    let d = start(&t.0);
    let began = Instant::now();
    let mut model = Model::clean(&host, 0);
    let (mut sequences, mut requests) = (0u64, 0u64);
    let (mut accepted, mut refused, mut unpredicted) = (0u64, 0u64, 0u64);
    let mut history: Vec<String> = Vec::new();
    // Per command: accepted, refused, milliseconds taken in all.
    let mut by_command: std::collections::BTreeMap<String, (u32, u32, u64)> = Default::default();
    while began.elapsed() < budget {
        sequences += 1;
        history.clear();
        let len = 10 + rng.below(21);
        // Most sequences start with a gang pool (shared on both CPUs, or
        // exclusive on CPU 1), through the same checked requests.
        let mut prefix: Vec<Req> = match rng.below(3) {
            0 => vec![Req::PoolCreate {
                name: "A".into(),
                sched: "gang",
                cpus: Some("0-1"),
                shared: true,
            }],
            1 => vec![
                Req::CpuRemove("Pool-0".into(), "1"),
                Req::PoolCreate {
                    name: "B".into(),
                    sched: "gang",
                    cpus: Some("1"),
                    shared: false,
                },
            ],
            _ => Vec::new(),
        };
        prefix.reverse();
        let mut reqs: Vec<Req> = Vec::new();
        let mut i = 0;
        let mut cleaning = false;
        loop {
            let req = if let Some(first) = prefix.pop() {
                first
            } else if i < len {
                random_request(&mut rng, &model)
            } else {
                if !cleaning {
                    reqs = cleanup(&model, &host);
                    reqs.reverse();
                    cleaning = true;
                }
                match reqs.pop() {
                    Some(r) => r,
                    None => break,
                }
            };
            i += 1;
            let (verdict, after) = model.predict(&req, &host);
            let args = req.args(&base);
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let asked = Instant::now();
            let out: Output = d.gang(&argv);
            let took = asked.elapsed().as_millis() as u64;
            requests += 1;
            let ok = out.status.success();
            history.push(format!(
                "{}gang {} -> {} (model: {verdict:?})",
                if cleaning { "[clean-up] " } else { "" },
                args.join(" "),
                if ok {
                    "ok".to_string()
                } else {
                    format!("refused: {}", String::from_utf8_lossy(&out.stderr).trim())
                }
            ));
            if verbose {
                note(&format!("xl_model: {}", history.last().unwrap()));
            }
            let counts = by_command.entry(args[0].clone()).or_default();
            if ok {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
            counts.2 += took;
            let seen = observe(&d);
            let fail = |why: &str, model: &Model| {
                panic!(
                    "seed {seed} (GANG_MODEL_SEED={seed} replays it), sequence {sequences}: \
                     {why}\nrequests of this sequence:\n  {}\nthe model before the last \
                     request:\n{}the model after it, if accepted:\n{}what the daemon \
                     shows:\n{}\ndaemon log:\n{}",
                    history.join("\n  "),
                    model.expected_text(),
                    after.expected_text(),
                    seen.raw,
                    tail(&t.0.join("daemon.log"))
                )
            };
            match (verdict, ok) {
                (Accept, false) => fail(
                    "the model accepts the last request, the daemon refused it",
                    &model,
                ),
                (Refuse, true) => fail(
                    "the model refuses the last request, the daemon accepted it",
                    &model,
                ),
                (Either, _) => unpredicted += 1,
                (_, true) => accepted += 1,
                (_, false) => refused += 1,
            }
            let before = model.clone();
            if ok {
                model = after.clone();
            }
            if let Err(why) = compare(&mut model, &seen) {
                fail(&why, &before);
            }
        }
        assert_eq!(
            model.pools,
            Model::clean(&host, 0).pools,
            "seed {seed}: the clean-up left pools"
        );
        assert!(model.doms.is_empty());
    }
    let elapsed = began.elapsed().as_secs_f64();
    note(&format!(
        "xl_model: seed {seed}: {sequences} sequences, {requests} requests ({accepted} \
         accepted and {refused} refused as predicted, {unpredicted} admission decisions \
         read back) in {elapsed:.1} s, {:.1} ms a request with its four listings; \
         by command (accepted, refused, ms in all): {by_command:?}",
        elapsed * 1000.0 / requests.max(1) as f64
    ));
    drop(d);
}
