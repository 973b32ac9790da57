//! A minimal driver for tests: feeds scheduled events and boundaries to a
//! scheduler in time order and records, for every interval between two
//! decisions, what was dispatched and how.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use gang_core::engine::Dispatch;
use gang_core::{CpuId, DomainId, Event, Nanos, Scheduler, VcpuRef};

/// The changes one decision reported, with its time.
pub type Changes = (Nanos, Vec<(CpuId, Option<VcpuRef>)>);

/// What held the pool during `[start, end)`.
#[derive(Debug, Clone)]
pub struct Span {
    pub start: Nanos,
    pub end: Nanos,
    /// CPU → vCPU dispatched.
    pub cpus: BTreeMap<CpuId, VcpuRef>,
    /// Domain → how it held its CPUs.
    pub how: BTreeMap<DomainId, Dispatch>,
}

pub struct Driver {
    pub sched: Scheduler,
    pub now: Nanos,
    next_boundary: Nanos,
    events: Vec<(Nanos, u64, Event)>,
    seq: u64,
    pub spans: Vec<Span>,
    /// Called after every decision with the scheduler and the time.
    pub decisions: Vec<Changes>,
}

impl Driver {
    pub fn new(sched: Scheduler) -> Self {
        Driver {
            sched,
            now: 0,
            next_boundary: 0,
            events: Vec::new(),
            seq: 0,
            spans: Vec::new(),
            decisions: Vec::new(),
        }
    }

    /// Schedules `event` at `at` (events at one time keep their order and come
    /// before the boundary at that time).
    pub fn at(&mut self, at: Nanos, event: Event) {
        self.events.push((at, self.seq, event));
        self.seq += 1;
        self.events
            .sort_by_key(|(t, s, _)| (std::cmp::Reverse(*t), std::cmp::Reverse(*s)));
    }

    /// Feeds an event now, panicking on error.
    pub fn apply(&mut self, event: Event) {
        let d = self.sched.handle(self.now, event).expect("event accepted");
        self.next_boundary = d.next;
        self.decisions.push((self.now, d.changes));
    }

    /// Runs until `end`, calling `check` after every boundary decision.
    pub fn run_until_checked(&mut self, end: Nanos, mut check: impl FnMut(&Scheduler, Nanos)) {
        loop {
            let ev_time = self.events.last().map(|e| e.0).unwrap_or(Nanos::MAX);
            let t = ev_time.min(self.next_boundary);
            if t >= end {
                self.close_span(end);
                self.now = end;
                return;
            }
            self.close_span(t);
            self.now = t;
            if ev_time <= self.next_boundary {
                let (_, _, event) = self.events.pop().expect("event");
                let d = self.sched.handle(t, event).expect("event accepted");
                self.next_boundary = d.next;
                self.decisions.push((t, d.changes));
            } else {
                let d = self.sched.handle(t, Event::Boundary).expect("boundary");
                self.next_boundary = d.next;
                self.decisions.push((t, d.changes));
                check(&self.sched, t);
            }
        }
    }

    pub fn run_until(&mut self, end: Nanos) {
        self.run_until_checked(end, |_, _| {});
    }

    fn close_span(&mut self, t: Nanos) {
        if t <= self.now {
            return;
        }
        let mut cpus = BTreeMap::new();
        let mut how = BTreeMap::new();
        for cpu in self.sched.config().cpus.iter() {
            if let Some(v) = self.sched.dispatched(cpu) {
                cpus.insert(cpu, v);
                if let Some(h) = self.sched.dispatch_of(v.domain) {
                    how.insert(v.domain, h);
                }
            }
        }
        self.spans.push(Span {
            start: self.now,
            end: t,
            cpus,
            how,
        });
    }

    /// Time `dom` held its CPUs within `[a, b)` (optionally only as `kind`).
    pub fn held(&self, dom: DomainId, a: Nanos, b: Nanos, kind: Option<Dispatch>) -> Nanos {
        self.spans
            .iter()
            .filter(|s| {
                s.how
                    .get(&dom)
                    .is_some_and(|h| kind.is_none_or(|k| k == *h))
            })
            .map(|s| s.end.min(b).saturating_sub(s.start.max(a)))
            .sum()
    }
}
