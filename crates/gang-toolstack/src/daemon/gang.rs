//! Gang pools on the host: their runtimes (started with the first live
//! domain, stopped with the last, restarted on a CPU change), the gang
//! parameters (`sched-gang`), `vcpu-list` and the slot trace.
//!
//! The CPU time a domain "received in the last period" and the trace both
//! come from the runtime's own switch log (what the dispatchers did), not
//! from the scheduler's plan.

use gang_core::{CpuId, CpuSet, DomainId, Nanos, Policy, PoolConfig, SEC};
use gang_host::best_effort;
use gang_host::runtime::{held_intervals, Isolation, Runtime, RuntimeConfig, Switch};
use gang_host::wallclock::StepWatch;
use gang_proto::{
    ApiError, DispatchHealth, ErrorCode, SchedGangDomain, SchedGangPool, TraceEventKind, VcpuInfo,
};

use super::{internal, refused, store_error, Daemon};
use crate::process;
use crate::store::{DomainRecord, DomainRef, DomainState, PoolId, PoolRecord, PoolRef, Sched};

/// The accounting window of a policy: its period, else one second.
fn window_of(policy: Option<&Policy>) -> Nanos {
    policy.and_then(Policy::timing).map_or(SEC, |t| t.period)
}

/// How the dispatchers kept time over the last second of `switches`
/// (`None` without switches in it).
pub(super) fn dispatch_health(switches: &[Switch], now: Nanos) -> Option<DispatchHealth> {
    const WINDOW: Nanos = 1_000_000_000;
    let recent: Vec<&Switch> = switches
        .iter()
        .filter(|s| s.at + WINDOW >= now && s.at <= now)
        .collect();
    if recent.is_empty() {
        return None;
    }
    let pick = |mut xs: Vec<Nanos>, q: usize| {
        xs.sort_unstable();
        xs[(xs.len() - 1) * q / 100]
    };
    let late: Vec<Nanos> = recent.iter().map(|s| s.late).collect();
    Some(DispatchHealth {
        window_ns: WINDOW,
        switches: recent.len() as u64,
        late_p50_ns: pick(late.clone(), 50),
        late_p99_ns: pick(late.clone(), 99),
        late_max_ns: pick(late, 100),
        spin_ns: pick(recent.iter().map(|s| s.spin).collect(), 50),
    })
}

impl Daemon {
    /// The runtime of a gang pool, started if needed.
    pub(super) fn ensure_runtime(
        &mut self,
        pool: &PoolRecord,
    ) -> Result<&std::sync::Arc<Runtime>, ApiError> {
        if !self.runtimes.contains_key(&pool.id) {
            if pool.sched != Sched::Gang {
                return Err(internal(format!(
                    "cpupool '{}' is not a gang pool",
                    pool.name
                )));
            }
            if pool.cpus.is_empty() {
                return Err(refused(format!("cpupool '{}' has no cpus", pool.name)));
            }
            if !pool.shared {
                if let Some(other) = self.runtimes.iter().find_map(|(id, rt)| {
                    (rt.config().isolation == Isolation::Exclusive).then_some(*id)
                }) {
                    return Err(refused(format!(
                        "cpupool '{}' cannot start: only one exclusive gang pool can run at a \
                         time (pool {} runs); make it shared (shared=1)",
                        pool.name, other.0
                    )));
                }
            }
            if let Some(t) = pool.time.filter(|t| t.require_sync) {
                let status = gang_host::wallclock::ClockStatus::read()
                    .map_err(|e| refused(format!("cpupool '{}': {e}", pool.name)))?;
                if !status.synchronised {
                    return Err(refused(format!(
                        "cpupool '{}' requires a synchronised {} clock (sync=\"required\"), and \
                         this host's is {status}: start chrony or ptp4l, or make the pool without \
                         sync=\"required\"",
                        pool.name, t.clock
                    )));
                }
            }
            let mut config = RuntimeConfig::new(PoolConfig::new(pool.cpus.clone()));
            if !pool.shared {
                // The host slot stays (see `host_slot_for`): the kernel's
                // real-time limit applies to exclusive CPUs too.
                config.isolation = Isolation::Exclusive;
            }
            config.name = pool.name.clone();
            config.state_dir = Some(self.state_dir.clone());
            config.shared_time = pool.time;
            // Per-thread gate traces grow without bound; the switch log is
            // the daemon's record.
            config.trace = false;
            // Exclusive CPUs have only per-CPU kernel threads left to serve;
            // shared ones keep the host's 8% for its own tasks.
            if self.lift_rt_limit && !pool.shared {
                config.lift_rt_limit = true;
                config.host_slot = Some(gang_host::runtime::unlimited_host_slot_for(
                    config.pool.grain,
                ));
            }
            let rt = Runtime::start(config).map_err(|e| {
                refused(format!(
                    "cpupool '{}': cannot start its dispatchers: {e}",
                    pool.name
                ))
            })?;
            self.runtimes.insert(pool.id, std::sync::Arc::new(rt));
            self.start_recorder(pool);
            self.log(format!(
                "cpupool {}: dispatchers started on cpus {} ({})",
                pool.name,
                pool.cpus,
                if pool.shared { "shared" } else { "exclusive" }
            ));
        }
        self.runtimes
            .get(&pool.id)
            .ok_or_else(|| internal("runtime vanished"))
    }

    /// Stops a pool's runtime when no live domain is admitted to it.
    pub(super) fn stop_runtime_if_idle(&mut self, pool: PoolId) {
        if self.live.values().any(|l| l.admitted == Some(pool)) {
            return;
        }
        self.stop_recorder(pool);
        if let Some(rt) = self.runtimes.remove(&pool) {
            self.retire_counters(pool, &rt);
            // VMs were detached before their domains left; a runtime still
            // shared stops when the last holder drops it.
            let Ok(rt) = std::sync::Arc::try_unwrap(rt) else {
                return;
            };
            let report = rt.stop();
            let name = self
                .store
                .pool(&PoolRef::Id(pool))
                .map_or_else(|_| pool.0.to_string(), |p| p.name);
            self.log(format!(
                "cpupool {name}: dispatchers stopped ({} gate violations)",
                report.violations.len()
            ));
        }
    }

    /// Restarts a pool's runtime on the pool's current CPUs, re-admitting
    /// its live domains with their parameters.
    pub(super) fn restart_runtime(&mut self, pool_id: PoolId) -> Result<(), ApiError> {
        let members: Vec<DomainId> = self
            .live
            .iter()
            .filter(|(_, l)| l.admitted == Some(pool_id))
            .map(|(id, _)| *id)
            .collect();
        for id in &members {
            if let Some(l) = self.live.get_mut(id) {
                l.backend.detach();
            }
        }
        self.stop_recorder(pool_id);
        if let Some(rt) = self.runtimes.remove(&pool_id) {
            self.retire_counters(pool_id, &rt);
            if let Ok(rt) = std::sync::Arc::try_unwrap(rt) {
                drop(rt.stop()); // gives every adopted thread back
            }
        }
        let pool = self
            .store
            .pool(&PoolRef::Id(pool_id))
            .map_err(store_error)?;
        let mut first_error = None;
        for id in members {
            let Ok(rec) = self.store.domain(&DomainRef::Id(id)) else {
                continue;
            };
            let paused = rec.state == DomainState::Paused;
            let spec = Self::spec_of(&rec);
            let tids = self.live.get(&id).and_then(|l| l.vcpu_tids());
            let result = self.ensure_runtime(&pool).map(std::sync::Arc::clone);
            let result = result.and_then(|rt| {
                // Paused until its threads are attached: they start together.
                rt.admit(spec, true).map_err(|e| refused(e.to_string()))?;
                let Some(tids) = tids else {
                    return Ok(()); // created paused: attached at unpause
                };
                let live = self
                    .live
                    .get_mut(&id)
                    .ok_or_else(|| internal("domain vanished"))?;
                live.backend.attach(&rt, id, &tids)?;
                if paused {
                    return Ok(());
                }
                rt.unpause(id)
                    .map(|_| ())
                    .map_err(|e| internal(e.to_string()))
            });
            if let Err(e) = result {
                self.log(format!("domain {} ({}): {e}", id.0, rec.name));
                if let Some(l) = self.live.get_mut(&id) {
                    l.admitted = None;
                }
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// `sched-gang` without `-t`.
    pub(super) fn sched_gang_get(
        &self,
        pool: Option<&str>,
        domain: Option<&str>,
    ) -> Result<Vec<SchedGangPool>, ApiError> {
        let only_pool = pool
            .map(|p| self.store.pool(&PoolRef::parse(p)).map_err(store_error))
            .transpose()?;
        let only_domain = domain.map(|d| self.domain_ref(d)).transpose()?;
        let domains = self.store.domains().map_err(store_error)?;
        let mut out = Vec::new();
        for p in self.store.pools().map_err(store_error)? {
            if p.sched != Sched::Gang
                || only_pool.as_ref().is_some_and(|o| o.id != p.id)
                || only_domain.as_ref().is_some_and(|d| d.pool != p.id)
            {
                continue;
            }
            let rt = self.runtimes.get(&p.id);
            let switches = rt.map(|r| r.recent_switches()).unwrap_or_default();
            let now = rt.map_or(0, |r| r.now());
            let rows = domains
                .iter()
                .filter(|d| d.pool == p.id)
                .filter(|d| only_domain.as_ref().is_none_or(|o| o.id == d.id))
                .map(|d| {
                    let window = window_of(d.policy.as_ref());
                    let from = now.saturating_sub(window);
                    let received = held_intervals(&switches, d.id)
                        .iter()
                        .map(|&(_, _, s, e)| e.min(now).saturating_sub(s.max(from)))
                        .sum();
                    SchedGangDomain {
                        name: d.name.clone(),
                        id: d.id.0,
                        policy: d.policy,
                        cpu_map: d.cpu_map.clone(),
                        window_ns: window,
                        received_ns: received,
                        cosched: self.cosched(d.id),
                    }
                })
                .collect();
            out.push(SchedGangPool {
                name: p.name.clone(),
                id: p.id.0,
                grain_ns: rt.map_or(gang_core::MS, |r| r.config().pool.grain),
                cpus: p.cpus.iter().collect(),
                shared: p.shared,
                host_slot_ns: Some(rt.map_or_else(
                    || gang_host::runtime::host_slot_for(gang_core::MS),
                    |r| r.config().host_slot.unwrap_or_default(),
                )),
                active: rt.is_some(),
                domains: rows,
                dispatch: dispatch_health(&switches, now),
                time: p.time,
                clock: p.time.map(|_| clock_info(rt.and_then(|r| r.clock_step()))),
            });
        }
        Ok(out)
    }

    /// A pool on a shared clock takes periods that divide its cycle only
    /// (its schedule repeats every cycle on every host).
    pub(super) fn check_cycle(pool: &PoolRecord, policy: &Policy) -> Result<(), ApiError> {
        let (Some(t), Some(timing)) = (pool.time, policy.timing()) else {
            return Ok(());
        };
        if t.fits(timing.period) {
            return Ok(());
        }
        Err(refused(format!(
            "policy {policy}: its period {} does not divide cpupool '{}''s cycle {} (a pool on \
             a shared clock repeats its schedule every cycle on every host)",
            gang_core::time::Duration(timing.period),
            pool.name,
            gang_core::time::Duration(t.cycle_ns)
        )))
    }

    /// `sched-gang -d DOM [-c CPUS] [-t POLICY]`: admission control
    /// decides; a refusal changes nothing. Without a policy the domain's
    /// own is kept (it must have one); without CPUs its map is kept (or
    /// chosen).
    pub(super) fn sched_gang_set(
        &mut self,
        arg: &str,
        cpus: Option<&gang_core::CpuList>,
        policy: Option<Policy>,
    ) -> Result<(), ApiError> {
        let rec = self.domain_ref(arg)?;
        let policy = match (policy, rec.policy) {
            (Some(p), _) | (None, Some(p)) => p,
            (None, None) if cpus.is_none() => {
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    "nothing to set: give a policy, CPUs or both",
                ))
            }
            (None, None) => {
                return Err(refused(format!(
                    "Domain {} has no gang policy yet: give one with -t POLICY",
                    rec.name
                )))
            }
        };
        let pool = self
            .store
            .pool(&PoolRef::Id(rec.pool))
            .map_err(store_error)?;
        if pool.sched != Sched::Gang {
            return Err(refused(format!(
                "domain '{}' is in cpupool '{}', whose scheduler is {}: gang parameters apply \
                 in gang pools (cpupool-migrate it first)",
                rec.name, pool.name, pool.sched
            )));
        }
        Self::check_cycle(&pool, &policy)?;
        let map = cpus
            .map(|c| self.cpu_map_arg(c, rec.vcpus, &pool, &rec.name))
            .transpose()?;
        let admitted = self.live.get(&rec.id).and_then(|l| l.admitted);
        let map = match admitted.and_then(|p| self.runtimes.get(&p)) {
            Some(rt) => {
                if let Err(e) = rt.set_params(rec.id, map, policy) {
                    self.count_refusal(&pool.name);
                    return Err(refused(e.to_string()));
                }
                rt.cpu_map(rec.id)
            }
            None => {
                // Not running: check admission against the pool's other
                // domains with a scratch scheduler, as the runtime would.
                if let Err(e) = self.check_offline(&pool, &rec, map.clone(), policy) {
                    self.count_refusal(&pool.name);
                    return Err(e);
                }
                map
            }
        };
        self.store
            .set_gang_params(rec.id, Some(&policy), map.as_deref())
            .map_err(store_error)?;
        let kind = if cpus.is_some() {
            TraceEventKind::Migrate
        } else {
            TraceEventKind::Admission
        };
        self.log_event(
            rec.pool,
            rec.id,
            kind,
            format!(
                "domain {} ({}): gang policy {policy}, cpus {}",
                rec.id.0,
                rec.name,
                map.as_ref().map_or_else(
                    || "chosen by the scheduler".into(),
                    |m| m.iter().copied().collect::<CpuSet>().to_string()
                )
            ),
        );
        Ok(())
    }

    /// Admission of new parameters for a domain that is not running, against
    /// the parameters of the pool's other domains.
    fn check_offline(
        &self,
        pool: &PoolRecord,
        rec: &DomainRecord,
        map: Option<Vec<CpuId>>,
        policy: Policy,
    ) -> Result<(), ApiError> {
        let mut sched = gang_core::Scheduler::new(PoolConfig::new(pool.cpus.clone()))
            .map_err(|e| internal(e.to_string()))?;
        let mut specs: Vec<gang_core::DomainSpec> = self
            .store
            .domains()
            .map_err(store_error)?
            .iter()
            .filter(|d| d.pool == pool.id && d.id != rec.id && d.policy.is_some())
            .map(Self::spec_of)
            .collect();
        specs.push(gang_core::DomainSpec {
            id: rec.id,
            vcpus: rec.vcpus,
            cpu_map: map,
            policy,
        });
        let batch: Vec<_> = specs
            .into_iter()
            .map(|s| {
                let state = gang_core::RunState::all_runnable(s.vcpus, true);
                (s, state)
            })
            .collect();
        sched
            .add_domains(0, batch)
            .map(|_| ())
            .map_err(|e| refused(e.to_string()))
    }

    /// `vcpu-list`.
    pub(super) fn vcpu_list(&self, args: &[String]) -> Result<Vec<VcpuInfo>, ApiError> {
        let records: Vec<DomainRecord> = if args.is_empty() {
            self.store.domains().map_err(store_error)?
        } else {
            args.iter()
                .map(|a| self.domain_ref(a))
                .collect::<Result<_, _>>()?
        };
        let mut out = Vec::new();
        for rec in records {
            let live = self.live.get(&rec.id);
            let pool = best_effort(
                format_args!("looking up the cpupool of domain {}", rec.name),
                self.store.pool(&PoolRef::Id(rec.pool)),
            );
            // Where its vCPUs really ran, in a gang pool (`cosched`).
            let recent = self.vcpus_ran_recently(rec.id);
            if let Some(l) = live.filter(|l| l.record.group) {
                out.extend(group_vcpus(&rec, l, recent.as_deref()));
                continue;
            }
            let tids = live.and_then(|l| l.vcpu_tids());
            let pid = live.map_or(0, |l| l.record.process.pid as i32);
            for v in 0..rec.vcpus {
                let tid = tids.as_ref().and_then(|t| t.get(v as usize).copied());
                let (running, cpu) = match recent.as_ref().and_then(|r| r.get(v as usize)) {
                    Some(&cpu) => (cpu.is_some(), cpu),
                    None => {
                        let state = tid.and_then(|t| process::thread_state(pid, t));
                        let running = state == Some('R');
                        let cpu = tid
                            .filter(|_| running)
                            .and_then(|t| process::thread_cpu(pid, t));
                        (running, cpu)
                    }
                };
                let hard = match (&rec.cpu_map, &pool) {
                    (Some(m), _) => m.get(v as usize).map_or("all".into(), ToString::to_string),
                    (None, Some(p)) if p.sched == Sched::Host => p.cpus.to_string(),
                    _ => "all".into(),
                };
                out.push(VcpuInfo {
                    domain: rec.name.clone(),
                    domid: rec.id.0,
                    vcpu: v,
                    cpu,
                    running,
                    blocked: live.is_some() && !running && rec.state == DomainState::Running,
                    paused: rec.state != DomainState::Running || tid.is_none(),
                    time_s: tid.map_or(0.0, |t| process::cpu_time_ns(pid, Some(t)) as f64 / 1e9),
                    hard_affinity: hard,
                    soft_affinity: "all".into(),
                });
            }
        }
        Ok(out)
    }
}

/// `vcpu-list` rows of a whole program: vCPU `v` is its gang's CPU `v`
/// (in a host pool, any CPU), running while one of the program's threads
/// runs there (`recent`: as the recorder saw it lately, else as `/proc`
/// says now); each is given an equal share of the program's CPU time.
fn group_vcpus(
    rec: &DomainRecord,
    live: &super::domains::Live,
    recent: Option<&[Option<CpuId>]>,
) -> Vec<VcpuInfo> {
    let threads = live.threads();
    let on = |cpu: Option<CpuId>| {
        threads
            .iter()
            .any(|t| t.state == "R" && (cpu.is_none() || t.cpu == cpu))
    };
    let share = live.cpu_time_ns() as f64 / 1e9 / f64::from(rec.vcpus.max(1));
    (0..rec.vcpus)
        .map(|v| {
            let cpu = rec
                .cpu_map
                .as_ref()
                .and_then(|m| m.get(v as usize).copied());
            let ran = recent.and_then(|r| r.get(v as usize)).map(Option::is_some);
            let running = rec.state == DomainState::Running && ran.unwrap_or_else(|| on(cpu));
            VcpuInfo {
                domain: rec.name.clone(),
                domid: rec.id.0,
                vcpu: v,
                cpu: if running { cpu } else { None },
                running,
                blocked: !running && rec.state == DomainState::Running,
                paused: rec.state != DomainState::Running,
                time_s: share,
                hard_affinity: cpu.map_or_else(|| "all".into(), |c| c.to_string()),
                soft_affinity: "all".into(),
            }
        })
        .collect()
}

/// This host's wall-clock state, for a pool on a shared clock; `step`: how
/// far the clock moved under the pool's running runtime (reported beyond
/// reading noise).
fn clock_info(step: Option<i64>) -> gang_proto::ClockInfo {
    let status = gang_host::wallclock::ClockStatus::read();
    if let Err(e) = &status {
        tracing::warn!("{e}");
    }
    let status = status.ok();
    gang_proto::ClockInfo {
        synchronised: status.is_some_and(|s| s.synchronised),
        est_error_us: status.map_or(0, |s| s.est_error_us),
        max_error_us: status.map_or(0, |s| s.max_error_us),
        tai_offset_s: status.map_or(0, |s| s.tai_offset_s),
        stepped_ns: step.filter(|s| i128::from(*s).abs() > StepWatch::DEFAULT_THRESHOLD_NS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gang_core::VcpuRef;

    fn sw(cpu: CpuId, at: Nanos, dom: Option<(u32, u32)>) -> Switch {
        Switch {
            cpu,
            at,
            vcpu: dom.map(|(d, v)| VcpuRef {
                domain: DomainId(d),
                vcpu: v,
            }),
            late: 0,
            gate_ns: 0,
            spin: 0,
            thread: dom.is_some_and(|(d, _)| d != 9),
        }
    }

    #[test]
    fn dispatch_health_covers_the_last_second_only() {
        let late = |at: Nanos, late: Nanos, spin: Nanos| Switch {
            late,
            spin,
            ..sw(0, at, Some((1, 0)))
        };
        let mut log = vec![late(SEC / 2, 900_000, 10_000)]; // too old
        for i in 0..100 {
            log.push(late(2 * SEC + i * 1_000_000, i * 1_000, 40_000));
        }
        let h = dispatch_health(&log, 2 * SEC + 200_000_000).expect("switches");
        assert_eq!(h.switches, 100);
        assert_eq!(
            (h.late_p50_ns, h.late_p99_ns, h.late_max_ns),
            (49_000, 98_000, 99_000)
        );
        assert_eq!(h.spin_ns, 40_000);
        assert_eq!(
            dispatch_health(&log, 10 * SEC),
            None,
            "nothing in the last second"
        );
        assert_eq!(dispatch_health(&[], SEC), None);
    }

    #[test]
    fn held_intervals_run_from_a_switch_to_the_next_on_the_same_cpu() {
        let log = [
            sw(0, 10, Some((1, 0))),
            sw(0, 20, None),
            sw(0, 30, Some((1, 0))),
            sw(0, 35, Some((1, 0))),
            sw(0, 38, Some((1, 0))),
            sw(1, 10, Some((1, 1))),
            sw(1, 20, Some((2, 0))),
            sw(1, 30, Some((9, 0))),
        ];
        assert_eq!(
            held_intervals(&log, DomainId(1)),
            vec![(0, 0, 10, 20), (0, 0, 30, u64::MAX), (1, 1, 10, 20)]
        );
        assert_eq!(held_intervals(&log, DomainId(2)), vec![(0, 1, 20, 30)]);
        assert_eq!(
            held_intervals(&log, DomainId(9)),
            vec![],
            "no thread, no slot"
        );
    }
}
