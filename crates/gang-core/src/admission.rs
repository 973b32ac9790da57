//! Admission control: every configuration change is checked here before the
//! engine applies it, and refused with a reason that names the domain, the CPU
//! and the time window that does not fit.
//!
//! **What is checked**, in order, for the whole candidate configuration of a
//! pool (all domains with their CPU maps and policies):
//! 1. parameters: periods, `active` and `from` are whole grains, `0 < active
//!    <= period`, weights 1..=65535, one distinct pool CPU per vCPU;
//! 2. no-mux domains are alone on their CPUs (the seed panicked instead);
//! 3. per CPU, the TT + ET utilisation leaves the pool's best-effort
//!    reservation (`sum(active/period) <= 1 - be_reserve_pct/100`, exactly, in
//!    integers over the hyperperiod);
//! 4. per cohort, the table of TT and ET reservations builds and verifies
//!    ([`crate::table`]): exact for TT (and for ET's reserved supply), since
//!    dispatch is a lookup in that table.
//!
//! **CPU maps.** A domain without a map gets one chosen here: the least
//! loaded CPUs (reserved utilisation, then number of domains, then CPU number),
//! with a few alternatives tried for TT/ET when the first does not admit.
//!
//! Admission is a pure function of the candidate configuration (and of the
//! previous tables, reused when a cohort's reservations did not change), so a
//! refused change leaves the engine untouched.

use std::sync::Arc;

use crate::cohort;
use crate::cpuset::{CpuId, CpuSet};
use crate::model::{Class, DomainId, Policy, PoolConfig};
use crate::table::{Reservation, Table, TableError};
use crate::time::{Duration, Nanos};

/// A domain as admission sees it: its map resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// Identifier.
    pub id: DomainId,
    /// vCPU `i` runs on `map[i]`.
    pub map: Vec<CpuId>,
    /// The map as a set.
    pub mask: CpuSet,
    /// The policy.
    pub policy: Policy,
    /// Whether the scheduler chose the map (and may choose again).
    pub auto_map: bool,
}

impl Placed {
    /// A placed domain with `map`.
    pub fn new(id: DomainId, map: Vec<CpuId>, policy: Policy, auto_map: bool) -> Self {
        let mask = map.iter().copied().collect();
        Placed {
            id,
            map,
            mask,
            policy,
            auto_map,
        }
    }
}

/// One cohort of an admitted configuration.
#[derive(Debug, Clone)]
pub struct CohortPlan {
    /// Members, in id order.
    pub members: Vec<DomainId>,
    /// Their CPUs.
    pub cpus: CpuSet,
    /// The verified table of the members' TT/ET reservations, if any.
    pub table: Option<Arc<Table>>,
}

/// Why a change was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// The pool configuration itself is invalid.
    #[error("invalid pool configuration: {0}")]
    InvalidPool(String),
    /// A domain id is already in the pool.
    #[error("domain {0} is already in this pool")]
    DuplicateDomain(DomainId),
    /// A parameter is out of range.
    #[error("domain {domain}: {field}: {reason}")]
    BadParameter {
        /// The domain.
        domain: DomainId,
        /// Which parameter.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// More vCPUs than pool CPUs (a gang needs one CPU per vCPU).
    #[error("domain {domain} has {vcpus} vCPUs but the pool has only {cpus} CPUs (a gang needs one CPU per vCPU)")]
    TooManyVcpus {
        /// The domain.
        domain: DomainId,
        /// Its vCPUs.
        vcpus: u32,
        /// Pool CPUs.
        cpus: usize,
    },
    /// The CPU map has the wrong length.
    #[error("domain {domain}: the CPU map lists {len} CPUs for {vcpus} vCPUs")]
    MapLength {
        /// The domain.
        domain: DomainId,
        /// Its vCPUs.
        vcpus: u32,
        /// Map length.
        len: usize,
    },
    /// A mapped CPU is not in the pool.
    #[error("domain {domain}: CPU {cpu} is not in this pool")]
    CpuNotInPool {
        /// The domain.
        domain: DomainId,
        /// The CPU.
        cpu: CpuId,
    },
    /// A CPU appears twice in a map.
    #[error("domain {domain}: CPU {cpu} is mapped to two vCPUs (a gang needs distinct CPUs)")]
    CpuTwice {
        /// The domain.
        domain: DomainId,
        /// The CPU.
        cpu: CpuId,
    },
    /// A no-mux domain would share a CPU.
    #[error(
        "no-mux domain {domain} must be alone on its CPUs, but domain {other} also uses CPU {cpu}"
    )]
    NoMuxNotAlone {
        /// The no-mux domain.
        domain: DomainId,
        /// The other domain.
        other: DomainId,
        /// The shared CPU.
        cpu: CpuId,
    },
    /// Reserved utilisation of a CPU would eat into the BE reservation.
    #[error("CPU {cpu} would be {percent} reserved by TT/ET domains {}; at most {limit}% may be (the pool keeps {reserve}% for best-effort)", crate::model::id_list(domains))]
    Overutilised {
        /// The CPU.
        cpu: CpuId,
        /// Its utilisation, formatted (`95.0%`).
        percent: String,
        /// The limit in percent.
        limit: u8,
        /// The BE reservation.
        reserve: u8,
        /// TT/ET domains on that CPU.
        domains: Vec<DomainId>,
    },
    /// A reservation does not fit in one of its windows.
    #[error("domain {domain} cannot get {needed} in its window [{start}, {end}) of the cohort's cycle (only {got} fits): CPU {cpu} is held by domain {blocker}", needed = Duration(*.needed), start = Duration(*.window_start), end = Duration(*.window_end), got = Duration(*.got))]
    WindowMissed {
        /// The domain.
        domain: DomainId,
        /// Window start (since the cycle start).
        window_start: Nanos,
        /// Window end.
        window_end: Nanos,
        /// Time that fits.
        got: Nanos,
        /// Time needed.
        needed: Nanos,
        /// A CPU where it is blocked.
        cpu: CpuId,
        /// The domain holding it.
        blocker: DomainId,
    },
    /// The table would be too long.
    #[error("the cohort on CPUs {cpus} would need a table over a hyperperiod of {grains} grains (limit {limit}); use harmonic periods")]
    TableTooLong {
        /// The cohort's CPUs.
        cpus: CpuSet,
        /// Hyperperiod in grains (`u64::MAX`: overflow).
        grains: u64,
        /// The limit.
        limit: u64,
    },
    /// The table builder failed otherwise (never expected; refused anyway).
    #[error("the cohort on CPUs {cpus} has no valid table: {reason}")]
    NoTable {
        /// The cohort's CPUs.
        cpus: CpuSet,
        /// Why.
        reason: String,
    },
    /// No automatically chosen CPU map admits the domain.
    #[error("no CPU map for domain {domain} fits ({tried} tried); the first refusal: {first}")]
    NoMapFits {
        /// The domain.
        domain: DomainId,
        /// Candidates tried.
        tried: usize,
        /// Why the first candidate failed.
        first: Box<AdmissionError>,
    },
    /// CPUs cannot leave the pool: domains with explicit maps use them.
    #[error(
        "CPUs {cpus} are used by domains {}; move or remap them first",
        crate::model::id_list(domains)
    )]
    CpusInUse {
        /// The CPUs.
        cpus: CpuSet,
        /// The domains using them.
        domains: Vec<DomainId>,
    },
}

/// Checks the pool configuration.
pub fn validate_pool(config: &PoolConfig) -> Result<(), AdmissionError> {
    let bad = |m: String| Err(AdmissionError::InvalidPool(m));
    if config.grain == 0 {
        return bad("the grain must be positive".into());
    }
    if config.be_slice == 0 || !config.be_slice.is_multiple_of(config.grain) {
        return bad(format!(
            "the BE slice {} must be a positive multiple of the grain {}",
            Duration(config.be_slice),
            Duration(config.grain)
        ));
    }
    if config.be_reserve_pct > 100 {
        return bad(format!(
            "be_reserve_pct {} is over 100",
            config.be_reserve_pct
        ));
    }
    if config.max_table_grains == 0 {
        return bad("max_table_grains must be positive".into());
    }
    Ok(())
}

/// Checks a policy's parameters against the pool's grain.
pub fn validate_policy(
    config: &PoolConfig,
    id: DomainId,
    policy: &Policy,
) -> Result<(), AdmissionError> {
    let g = config.grain;
    let bad = |field: &'static str, reason: String| {
        Err(AdmissionError::BadParameter {
            domain: id,
            field,
            reason,
        })
    };
    let from = policy.from();
    if !from.is_multiple_of(g) {
        return bad(
            "from",
            format!(
                "{} is not a multiple of the pool grain {}",
                Duration(from),
                Duration(g)
            ),
        );
    }
    match *policy {
        Policy::TimeTriggered { timing, .. } | Policy::EventTriggered { timing, .. } => {
            if timing.period == 0 || timing.period % g != 0 {
                return bad(
                    "period",
                    format!(
                        "{} is not a positive multiple of the pool grain {}",
                        Duration(timing.period),
                        Duration(g)
                    ),
                );
            }
            if timing.active == 0 || timing.active % g != 0 {
                return bad(
                    "active",
                    format!(
                        "{} is not a positive multiple of the pool grain {}",
                        Duration(timing.active),
                        Duration(g)
                    ),
                );
            }
            if timing.active > timing.period {
                return bad(
                    "active",
                    format!(
                        "{} is longer than the period {}",
                        Duration(timing.active),
                        Duration(timing.period)
                    ),
                );
            }
        }
        Policy::BestEffort { weight: 0, .. } => {
            return bad("weight", "must be from 1 to 65535".into());
        }
        _ => {}
    }
    Ok(())
}

/// Checks a CPU map for `vcpus` vCPUs against the pool.
pub fn validate_map(
    config: &PoolConfig,
    id: DomainId,
    vcpus: u32,
    map: &[CpuId],
) -> Result<(), AdmissionError> {
    if map.len() != vcpus as usize {
        return Err(AdmissionError::MapLength {
            domain: id,
            vcpus,
            len: map.len(),
        });
    }
    let mut seen = CpuSet::new();
    for &cpu in map {
        if !config.cpus.contains(cpu) {
            return Err(AdmissionError::CpuNotInPool { domain: id, cpu });
        }
        if !seen.insert(cpu) {
            return Err(AdmissionError::CpuTwice { domain: id, cpu });
        }
    }
    Ok(())
}

/// Checks the vCPU count.
pub fn validate_vcpus(config: &PoolConfig, id: DomainId, vcpus: u32) -> Result<(), AdmissionError> {
    if vcpus == 0 {
        return Err(AdmissionError::BadParameter {
            domain: id,
            field: "vcpus",
            reason: "a domain needs at least one vCPU".into(),
        });
    }
    if vcpus as usize > config.cpus.len() {
        return Err(AdmissionError::TooManyVcpus {
            domain: id,
            vcpus,
            cpus: config.cpus.len(),
        });
    }
    Ok(())
}

/// Candidate CPU maps for a domain of `vcpus` vCPUs with `policy`, given the
/// other domains, best first. Each map lists CPUs in ascending order.
///
/// Gangs are placed on *aligned blocks* first (CPUs `[k·n, (k+1)·n)` of the
/// pool's CPU list for a gang of `n`), least loaded first: gangs of the same
/// width then share whole blocks instead of straddling each other, which
/// keeps tables feasible and cohorts small (the buddy idea of classic gang
/// schedulers). The least-loaded CPUs anywhere come next, then other blocks.
pub fn candidate_maps(
    config: &PoolConfig,
    others: &[Placed],
    vcpus: u32,
    policy: &Policy,
) -> Vec<Vec<CpuId>> {
    let n = vcpus as usize;
    let cpus: Vec<CpuId> = config.cpus.iter().collect();
    if n == 0 || cpus.len() < n {
        return Vec::new();
    }
    // Load per pool CPU: reserved utilisation (parts per 2^32), domain count.
    let mut load: Vec<(u128, usize)> = vec![(0, 0); cpus.len()];
    for d in others {
        let util = d
            .policy
            .timing()
            .map_or(0, |t| (u128::from(t.active) << 32) / u128::from(t.period));
        for cpu in &d.map {
            if let Ok(i) = cpus.binary_search(cpu) {
                load[i].0 += util;
                load[i].1 += 1;
            }
        }
    }
    let exclusive = policy.class() == Class::NoMux;
    let usable = |i: usize| !exclusive || load[i].1 == 0;
    let mut out: Vec<Vec<CpuId>> = Vec::new();
    let mut push = |mut m: Vec<CpuId>| {
        m.sort_unstable();
        if !out.contains(&m) {
            out.push(m);
        }
    };
    // Aligned blocks, least loaded first.
    let mut blocks: Vec<((u128, u128, usize, usize), usize)> = (0..=cpus.len() - n)
        .step_by(n)
        .filter(|&k| (k..k + n).all(usable))
        .map(|k| {
            let block = &load[k..k + n];
            let max_util = block.iter().map(|l| l.0).max().unwrap_or(0);
            let sum_util = block.iter().map(|l| l.0).sum();
            let max_count = block.iter().map(|l| l.1).max().unwrap_or(0);
            let sum_count = block.iter().map(|l| l.1).sum();
            ((max_util, sum_util, max_count, sum_count), k)
        })
        .collect();
    blocks.sort_unstable();
    let block_map = |k: usize| cpus[k..k + n].to_vec();
    if let Some(&(_, k)) = blocks.first() {
        push(block_map(k));
    }
    // The least-loaded CPUs anywhere.
    let mut ranked: Vec<usize> = (0..cpus.len()).filter(|&i| usable(i)).collect();
    ranked.sort_by_key(|&i| (load[i].0, load[i].1, cpus[i]));
    if ranked.len() >= n {
        push(ranked[..n].iter().map(|&i| cpus[i]).collect());
    }
    if policy.timing().is_some() {
        // Alternatives for reservations: more blocks, other load windows.
        for &(_, k) in blocks.iter().skip(1).take(3) {
            push(block_map(k));
        }
        for w in 1..=ranked.len().saturating_sub(n).min(2) {
            push(ranked[w..w + n].iter().map(|&i| cpus[i]).collect());
        }
    }
    out
}

/// Per-CPU reserved demand check (rule 3), exact in integers.
fn check_utilisation(config: &PoolConfig, domains: &[Placed]) -> Result<(), AdmissionError> {
    let limit = 100 - config.be_reserve_pct;
    let mut per_cpu: std::collections::BTreeMap<CpuId, Vec<&Placed>> = Default::default();
    for d in domains {
        if d.policy.timing().is_some() {
            for &cpu in &d.map {
                per_cpu.entry(cpu).or_default().push(d);
            }
        }
    }
    for (cpu, ds) in per_cpu {
        // sum(a_i/p_i) <= limit/100  <=>  100·sum(a_i·L/p_i) <= limit·L, L = lcm(p_i).
        let mut l: u128 = 1;
        for d in &ds {
            let p = u128::from(d.policy.timing().map_or(1, |t| t.period));
            l = l / gcd128(l, p) * p;
            if l > u128::from(u64::MAX) {
                // Periods so unrelated that the table would be refused anyway;
                // let the table builder report it.
                return Ok(());
            }
        }
        let demand: u128 = ds
            .iter()
            .filter_map(|d| d.policy.timing())
            .map(|t| u128::from(t.active) * (l / u128::from(t.period)))
            .sum();
        if 100 * demand > u128::from(limit) * l {
            let permille = demand * 1000 / l;
            return Err(AdmissionError::Overutilised {
                cpu,
                percent: format!("{}.{}%", permille / 10, permille % 10),
                limit,
                reserve: config.be_reserve_pct,
                domains: ds.iter().map(|d| d.id).collect(),
            });
        }
    }
    Ok(())
}

fn gcd128(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Checks a whole candidate configuration and builds its cohorts and tables.
/// `previous` tables are reused when a cohort's reservations are unchanged,
/// and are the fallback when a change only removes reservations.
pub fn plan(
    config: &PoolConfig,
    domains: &[Placed],
    previous: &[Arc<Table>],
) -> Result<Vec<CohortPlan>, AdmissionError> {
    for d in domains {
        validate_policy(config, d.id, &d.policy)?;
        validate_map(config, d.id, d.map.len() as u32, &d.map)?;
    }
    for d in domains.iter().filter(|d| d.policy.class() == Class::NoMux) {
        for other in domains.iter().filter(|o| o.id != d.id) {
            if let Some(cpu) = d.mask.intersection(&other.mask).first() {
                return Err(AdmissionError::NoMuxNotAlone {
                    domain: d.id,
                    other: other.id,
                    cpu,
                });
            }
        }
    }
    check_utilisation(config, domains)?;
    let masks: Vec<&CpuSet> = domains.iter().map(|d| &d.mask).collect();
    let mut plans = Vec::new();
    for c in cohort::partition(&masks) {
        let mut members: Vec<&Placed> = c.members.iter().map(|&i| &domains[i]).collect();
        members.sort_by_key(|d| d.id);
        let reservations: Vec<Reservation> = members
            .iter()
            .filter_map(|d| {
                d.policy.timing().map(|t| Reservation {
                    owner: d.id,
                    cpus: d.mask.clone(),
                    period: t.period / config.grain,
                    active: t.active / config.grain,
                    phase: (t.from / config.grain) % (t.period / config.grain),
                    window: if d.policy.exact() {
                        t.active / config.grain
                    } else {
                        t.period / config.grain
                    },
                })
            })
            .collect();
        let table = if reservations.is_empty() {
            None
        } else {
            Some(table_for(config, &c.cpus, reservations, previous)?)
        };
        plans.push(CohortPlan {
            members: members.iter().map(|d| d.id).collect(),
            cpus: c.cpus,
            table,
        });
    }
    Ok(plans)
}

fn table_for(
    config: &PoolConfig,
    cpus: &CpuSet,
    reservations: Vec<Reservation>,
    previous: &[Arc<Table>],
) -> Result<Arc<Table>, AdmissionError> {
    if let Some(same) = previous.iter().find(|t| {
        let kept: Vec<&Reservation> = t
            .reservations()
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                t.segments()
                    .iter()
                    .any(|s| s.entries.contains(&(*i as u32)))
            })
            .map(|(_, r)| r)
            .collect();
        kept.len() == reservations.len() && kept.iter().zip(&reservations).all(|(a, b)| *a == b)
    }) {
        return Ok(Arc::clone(same));
    }
    match Table::build(reservations.clone(), config.max_table_grains) {
        Ok(t) => Ok(Arc::new(t)),
        Err(err) => {
            // A change that only removes reservations keeps the old slots of
            // the others (gang EDF is not sustainable: a rebuilt table could
            // fail where the old one, minus some owners, is still exact).
            let subset_of = |t: &Table| reservations.iter().all(|r| t.reservations().contains(r));
            if let Some(old) = previous.iter().find(|t| subset_of(t)) {
                let owners: Vec<DomainId> = reservations.iter().map(|r| r.owner).collect();
                let kept = old.retain(|o| owners.contains(&o));
                if kept.verify().is_ok() {
                    return Ok(Arc::new(kept));
                }
            }
            Err(table_error(config, cpus, err))
        }
    }
}

fn table_error(config: &PoolConfig, cpus: &CpuSet, err: TableError) -> AdmissionError {
    let g = config.grain;
    match err {
        TableError::TooLong { grains, limit } => AdmissionError::TableTooLong {
            cpus: cpus.clone(),
            grains,
            limit,
        },
        TableError::Missed {
            owner,
            window_start,
            window_end,
            got,
            needed,
            cpu,
            blocker,
        } => AdmissionError::WindowMissed {
            domain: owner,
            window_start: window_start * g,
            window_end: window_end * g,
            got: got * g,
            needed: needed * g,
            cpu,
            blocker,
        },
        other => AdmissionError::NoTable {
            cpus: cpus.clone(),
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Periodic;
    use crate::time::MS;

    fn pool(cpus: &str) -> PoolConfig {
        PoolConfig::new(CpuSet::parse(cpus, None).unwrap())
    }

    fn tt(period: u64, active: u64) -> Policy {
        Policy::TimeTriggered {
            timing: Periodic {
                from: 0,
                period: period * MS,
                active: active * MS,
            },
            space_filling: false,
            exact: false,
        }
    }

    fn placed(id: u32, map: &[CpuId], policy: Policy) -> Placed {
        Placed::new(DomainId(id), map.to_vec(), policy, false)
    }

    #[test]
    fn refuses_parameters_off_the_grain() {
        let c = pool("0-1");
        let p = Policy::TimeTriggered {
            timing: Periodic {
                from: 0,
                period: 10 * MS + 1,
                active: MS,
            },
            space_filling: false,
            exact: false,
        };
        assert!(matches!(
            validate_policy(&c, DomainId(1), &p),
            Err(AdmissionError::BadParameter {
                field: "period",
                ..
            })
        ));
        assert!(matches!(
            validate_policy(&c, DomainId(1), &tt(10, 11)),
            Err(AdmissionError::BadParameter {
                field: "active",
                ..
            })
        ));
        assert!(matches!(
            validate_policy(&c, DomainId(1), &tt(10, 0)),
            Err(AdmissionError::BadParameter {
                field: "active",
                ..
            })
        ));
        let late = Policy::NoMux { from: MS / 2 };
        assert!(matches!(
            validate_policy(&c, DomainId(1), &late),
            Err(AdmissionError::BadParameter { field: "from", .. })
        ));
        let w0 = Policy::BestEffort {
            weight: 0,
            space_filling: false,
        };
        assert!(matches!(
            validate_policy(&c, DomainId(1), &w0),
            Err(AdmissionError::BadParameter {
                field: "weight",
                ..
            })
        ));
    }

    #[test]
    fn refuses_bad_maps() {
        let c = pool("0-1");
        assert!(matches!(
            validate_map(&c, DomainId(1), 2, &[0]),
            Err(AdmissionError::MapLength { .. })
        ));
        assert!(matches!(
            validate_map(&c, DomainId(1), 2, &[0, 0]),
            Err(AdmissionError::CpuTwice { cpu: 0, .. })
        ));
        assert!(matches!(
            validate_map(&c, DomainId(1), 1, &[5]),
            Err(AdmissionError::CpuNotInPool { cpu: 5, .. })
        ));
        assert!(matches!(
            validate_vcpus(&c, DomainId(1), 3),
            Err(AdmissionError::TooManyVcpus { .. })
        ));
        assert!(matches!(
            validate_vcpus(&c, DomainId(1), 0),
            Err(AdmissionError::BadParameter { field: "vcpus", .. })
        ));
    }

    #[test]
    fn refuses_shared_no_mux() {
        let c = pool("0-3");
        let ds = [
            placed(1, &[0, 1], Policy::NoMux { from: 0 }),
            placed(2, &[1, 2], Policy::default()),
        ];
        let err = plan(&c, &ds, &[]).unwrap_err();
        assert_eq!(
            err,
            AdmissionError::NoMuxNotAlone {
                domain: DomainId(1),
                other: DomainId(2),
                cpu: 1
            }
        );
        assert!(err.to_string().contains("CPU 1"));
    }

    #[test]
    fn refuses_eating_the_be_reservation() {
        let c = pool("0-1");
        let ds = [placed(1, &[0, 1], tt(10, 5)), placed(2, &[0], tt(20, 9))];
        let err = plan(&c, &ds, &[]).unwrap_err();
        match &err {
            AdmissionError::Overutilised {
                cpu,
                percent,
                limit,
                ..
            } => {
                assert_eq!((*cpu, percent.as_str(), *limit), (0, "95.0%", 90));
            }
            other => panic!("unexpected {other:?}"),
        }
        // Exactly at the limit is fine.
        let ds = [placed(1, &[0, 1], tt(10, 5)), placed(2, &[0], tt(20, 8))];
        plan(&c, &ds, &[]).unwrap();
    }

    #[test]
    fn refuses_a_window_that_does_not_fit_even_under_the_utilisation_cap() {
        // A triangle: every pair of gangs shares a CPU, so they run one after
        // the other: 3 x 4 ms do not fit in 10 ms, although every CPU is only
        // 80% reserved (under the 90% cap). Summing utilisation misses this.
        let c = pool("0-2");
        let ds = [
            placed(1, &[0, 1], tt(10, 4)),
            placed(2, &[1, 2], tt(10, 4)),
            placed(3, &[0, 2], tt(10, 4)),
        ];
        let err = plan(&c, &ds, &[]).unwrap_err();
        assert!(
            matches!(
                err,
                AdmissionError::WindowMissed {
                    domain: DomainId(3),
                    ..
                }
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("window [0, 10ms)") && text.contains("CPU"),
            "{text}"
        );
    }

    #[test]
    fn refuses_long_tables() {
        let mut c = pool("0");
        c.max_table_grains = 1000;
        let ds = [placed(1, &[0], tt(997, 1)), placed(2, &[0], tt(991, 1))];
        assert!(matches!(
            plan(&c, &ds, &[]),
            Err(AdmissionError::TableTooLong { .. })
        ));
    }

    #[test]
    fn separate_cohorts_get_separate_tables() {
        let c = pool("0-3");
        let ds = [
            placed(1, &[0, 1], tt(10, 5)),
            placed(2, &[2, 3], tt(20, 5)),
            placed(3, &[3], Policy::default()),
        ];
        let plans = plan(&c, &ds, &[]).unwrap();
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[0].table.as_ref().unwrap().length(), 10);
        assert_eq!(plans[1].members, vec![DomainId(2), DomainId(3)]);
    }

    #[test]
    fn unchanged_cohorts_reuse_their_table() {
        let c = pool("0-3");
        let ds = [placed(1, &[0, 1], tt(10, 5))];
        let first = plan(&c, &ds, &[]).unwrap();
        let t = first[0].table.clone().unwrap();
        let again = plan(&c, &ds, &[Arc::clone(&t)]).unwrap();
        assert!(Arc::ptr_eq(&t, again[0].table.as_ref().unwrap()));
    }

    #[test]
    fn candidate_maps_prefer_idle_cpus_and_respect_no_mux() {
        let c = pool("0-3");
        let others = [placed(1, &[0, 1], tt(10, 5))];
        let maps = candidate_maps(&c, &others, 2, &Policy::default());
        assert_eq!(maps[0], vec![2, 3]);
        let maps = candidate_maps(&c, &others, 3, &Policy::NoMux { from: 0 });
        assert!(maps.is_empty());
    }
}
