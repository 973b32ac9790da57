//! `trace`: what a gang pool's dispatchers gave a domain, or every domain of
//! a pool, over a window, and what the daemon did meanwhile.
//!
//! Slots come from the runtime's switch log (`held_intervals`: what the
//! dispatchers did, not the plan), each with how late its switch was.
//! Events are of two sources: the daemon's own typed record of pauses,
//! unpauses, migrations and admission changes ([`PoolEvents`], kept beside
//! the `dmesg` ring, stamped with CLOCK_MONOTONIC so that they map onto the
//! pool time of whichever runtime is running when asked), and switches of
//! the log later than [`TRACE_LATE_SWITCH_NS`].
//!
//! Invariants: an answer's slots, events and window are all on the pool
//! time of the runtime that answers (events from before its epoch, such as
//! those of a runtime since restarted, are left out); slots are sorted by
//! start and the newest [`TRACE_SLOTS`] are kept; per CPU they never
//! overlap (a slot ends at the next switch on its CPU).

use std::collections::{HashMap, VecDeque};

use gang_core::{CpuId, DomainId, Nanos};
use gang_host::clock::Clock;
use gang_host::runtime::{held_intervals, HOST_DOMAIN};
use gang_proto::{
    ApiError, RequestBody, ResponseBody, TraceDomain, TraceEvent, TraceEventKind, TraceMeta,
    TraceSlot, TRACE_LATE_SWITCH_NS,
};

use super::{bad, refused, store_error, Daemon};
use crate::store::{PoolId, PoolRef, Sched};

/// At most this many slots are returned by `trace`.
pub(super) const TRACE_SLOTS: usize = 1 << 16;

/// At most this many daemon events are kept (all pools together).
const EVENTS_KEPT: usize = 4096;

/// One thing the daemon did to a pool's domain.
#[derive(Debug, Clone)]
struct PoolEvent {
    pool: PoolId,
    /// CLOCK_MONOTONIC, ns.
    mono_ns: Nanos,
    kind: TraceEventKind,
    domain: DomainId,
    text: String,
}

/// The daemon's typed record of what it did to gang pools' domains, newest
/// last, bounded.
#[derive(Debug, Default)]
pub(super) struct PoolEvents(VecDeque<PoolEvent>);

impl PoolEvents {
    fn push(&mut self, e: PoolEvent) {
        if self.0.len() == EVENTS_KEPT {
            self.0.pop_front();
        }
        self.0.push_back(e);
    }
}

/// CLOCK_MONOTONIC now, ns.
fn monotonic_ns() -> Nanos {
    Clock::with_epoch(0).now()
}

/// This host's name (`uname` node name).
fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

impl Daemon {
    /// Records an event of `domain` in `pool` for `trace` (a gang pool's;
    /// others are not traced and nothing is kept).
    pub(super) fn note_event(
        &mut self,
        pool: PoolId,
        domain: DomainId,
        kind: TraceEventKind,
        text: String,
    ) {
        let gang = self
            .store
            .pool(&PoolRef::Id(pool))
            .is_ok_and(|p| p.sched == Sched::Gang);
        if gang {
            self.pool_events.push(PoolEvent {
                pool,
                mono_ns: monotonic_ns(),
                kind,
                domain,
                text,
            });
        }
    }

    /// [`Daemon::log`]s `line` and records it as an event of `domain` in
    /// `pool` ([`Daemon::note_event`]).
    pub(super) fn log_event(
        &mut self,
        pool: PoolId,
        domain: DomainId,
        kind: TraceEventKind,
        line: String,
    ) {
        self.note_event(pool, domain, kind, line.clone());
        self.log(line);
    }

    /// `trace DOM | --pool POOL [--last D]` (a [`RequestBody::Trace`]).
    pub(super) fn trace(&self, request: &RequestBody) -> Result<ResponseBody, ApiError> {
        let RequestBody::Trace {
            domain,
            pool,
            last_ns,
        } = request
        else {
            return Err(bad("not a trace request"));
        };
        let last_ns = *last_ns;
        let (pool, only) = match (domain.as_deref(), pool.as_deref()) {
            (Some(_), Some(_)) => {
                return Err(bad("trace: give a domain or a pool, not both"));
            }
            (None, None) => return Err(bad("trace: give a domain or a pool")),
            (Some(d), None) => {
                let rec = self.domain_ref(d)?;
                let admitted = self.live.get(&rec.id).and_then(|l| l.admitted);
                let Some(pool) = admitted.filter(|p| self.runtimes.contains_key(p)) else {
                    return Err(refused(format!(
                        "domain '{}' is not running in a gang pool: no trace",
                        rec.name
                    )));
                };
                (pool, Some(rec.id))
            }
            (None, Some(p)) => {
                let rec = self.store.pool(&PoolRef::parse(p)).map_err(store_error)?;
                if rec.sched != Sched::Gang {
                    return Err(refused(format!(
                        "cpupool '{}' is not a gang pool (sched={}): no trace",
                        rec.name, rec.sched
                    )));
                }
                if !self.runtimes.contains_key(&rec.id) {
                    return Err(refused(format!(
                        "cpupool '{}' has no running dispatchers (no live domain): no trace",
                        rec.name
                    )));
                }
                (rec.id, None)
            }
        };
        if last_ns == Some(0) {
            return Err(bad("trace: the window (--last) must be longer than 0"));
        }
        self.trace_pool(pool, only, last_ns)
    }

    fn trace_pool(
        &self,
        pool_id: PoolId,
        only: Option<DomainId>,
        last_ns: Option<Nanos>,
    ) -> Result<ResponseBody, ApiError> {
        let rt = self
            .runtimes
            .get(&pool_id)
            .ok_or_else(|| refused("the pool's dispatchers stopped"))?;
        let pool = self
            .store
            .pool(&PoolRef::Id(pool_id))
            .map_err(store_error)?;
        let records = self.store.domains().map_err(store_error)?;
        let domains: Vec<TraceDomain> = records
            .iter()
            .filter(|d| d.pool == pool_id && only.is_none_or(|o| o == d.id))
            .map(|d| TraceDomain {
                id: d.id.0,
                name: d.name.clone(),
                vcpus: d.vcpus,
            })
            .collect();
        let now = rt.now();
        let from = last_ns.map(|l| now.saturating_sub(l));
        let switches = rt.recent_switches();
        let late: HashMap<(CpuId, Nanos), Nanos> =
            switches.iter().map(|s| ((s.cpu, s.at), s.late)).collect();
        let mut slots: Vec<TraceSlot> = domains
            .iter()
            .flat_map(|d| {
                let made: Vec<TraceSlot> = held_intervals(&switches, DomainId(d.id))
                    .into_iter()
                    .map(|(vcpu, cpu, start_ns, end_ns)| TraceSlot {
                        vcpu,
                        cpu,
                        start_ns,
                        end_ns,
                        late_ns: late.get(&(cpu, start_ns)).copied().unwrap_or(0),
                        domain: d.id,
                    })
                    .filter(|s| from.is_none_or(|f| s.end_ns > f))
                    .collect();
                // Adopted threads: as they really ran (`cosched`).
                self.real_trace_slots(DomainId(d.id), made)
            })
            .filter(|s| from.is_none_or(|f| s.end_ns > f))
            .collect();
        end_before_the_next(&mut slots);
        slots.sort_by_key(|s| (s.start_ns, s.domain, s.vcpu));
        let skip = slots.len().saturating_sub(TRACE_SLOTS);
        let slots = slots.split_off(skip);
        let from = from.unwrap_or_else(|| slots.first().map_or(0, |s| s.start_ns));
        let epoch = rt.clock().epoch();
        let mut events: Vec<TraceEvent> = self
            .pool_events
            .0
            .iter()
            .filter(|e| e.pool == pool_id && only.is_none_or(|o| o == e.domain))
            .filter(|e| e.mono_ns >= epoch)
            .map(|e| TraceEvent {
                at_ns: e.mono_ns - epoch,
                cpu: None,
                kind: e.kind,
                domain: Some(e.domain.0),
                text: e.text.clone(),
            })
            .chain(
                switches
                    .iter()
                    .filter(|s| s.late > TRACE_LATE_SWITCH_NS)
                    .filter(|s| only.is_none_or(|o| s.vcpu.is_some_and(|v| v.domain == o)))
                    .map(|s| TraceEvent {
                        at_ns: s.at,
                        cpu: Some(s.cpu),
                        kind: TraceEventKind::LateSwitch,
                        domain: s.vcpu.map(|v| v.domain.0),
                        text: format!(
                            "switch to {} {} late",
                            match s.vcpu {
                                None => "idle".to_string(),
                                Some(v) if v.domain == HOST_DOMAIN => {
                                    "the host's slot (Domain-0)".to_string()
                                }
                                Some(v) => format!("domain {} vCPU {}", v.domain.0, v.vcpu),
                            },
                            gang_core::time::Duration(s.late / 1000 * 1000)
                        ),
                    }),
            )
            .filter(|e| e.at_ns >= from && e.at_ns <= now)
            .collect();
        events.sort_by_key(|e| (e.at_ns, e.cpu));
        Ok(ResponseBody::Trace {
            now_ns: now,
            slots,
            since_base_ns: rt.since_base(),
            epoch_mono_ns: epoch,
            domains,
            events,
            meta: TraceMeta {
                host: host_name(),
                pool: pool.name.clone(),
                cpus: pool.cpus.iter().collect(),
                grain_ns: rt.config().pool.grain,
                time: pool.time,
                from_ns: from,
            },
        })
    }
}

/// Slots of one CPU never overlap: an adopted thread's slot ends when its
/// thread last ran in it, and a thread that ran on across the boundary
/// (the same domain's next slot on that CPU, or a thread that took a moment
/// to stop) would reach into the next slot; its end is cut at the next
/// slot's real start, where the CPU went to that one.
fn end_before_the_next(slots: &mut [TraceSlot]) {
    slots.sort_by_key(|s| (s.cpu, s.start_ns + s.late_ns));
    for i in 1..slots.len() {
        let (before, after) = slots.split_at_mut(i);
        let (prev, next) = (&mut before[i - 1], &after[0]);
        if prev.cpu == next.cpu {
            prev.end_ns = prev.end_ns.min(next.start_ns + next.late_ns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_ends_where_the_next_one_on_its_cpu_really_began() {
        let slot = |domain, cpu, start_ns, late_ns, end_ns| TraceSlot {
            vcpu: 0,
            cpu,
            start_ns,
            end_ns,
            late_ns,
            domain,
        };
        let mut slots = vec![
            slot(2, 1, 4_180, 0, 4_300),
            slot(2, 1, 4_154, 3, 4_200), // ran on into its next slot
            slot(1, 0, 4_154, 1, 4_400), // another CPU: untouched
            slot(3, 1, 4_300, 7, u64::MAX),
        ];
        end_before_the_next(&mut slots);
        slots.sort_by_key(|s| (s.cpu, s.start_ns));
        let ends: Vec<u64> = slots.iter().map(|s| s.end_ns).collect();
        assert_eq!(ends, vec![4_400, 4_180, 4_300, u64::MAX]);
    }

    #[test]
    fn the_event_record_keeps_the_newest() {
        let mut ring = PoolEvents::default();
        for k in 0..EVENTS_KEPT as u64 + 10 {
            ring.push(PoolEvent {
                pool: PoolId(1),
                mono_ns: k,
                kind: TraceEventKind::Pause,
                domain: DomainId(1),
                text: String::new(),
            });
        }
        assert_eq!(ring.0.len(), EVENTS_KEPT);
        assert_eq!(ring.0.front().map(|e| e.mono_ns), Some(10));
        assert!(monotonic_ns() > 0);
        assert!(!host_name().is_empty());
    }
}
