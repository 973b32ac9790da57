//! The replicated event log: how every dispatcher's replica of the scheduler
//! sees the same events at the same times, with no message between CPUs on
//! the switch path.
//!
//! **Problem.** Each pool CPU's dispatcher holds its own copy of the pool's
//! [`gang_core::Scheduler`] and decides every boundary itself, a little ahead
//! of time (the *lead*). Copies agree only if they apply the same events at
//! the same times in the same order relative to boundaries.
//!
//! **Approach.** An event appended at pool time `x` takes effect at
//! `E = max(x + 2·lead, previous E)`. A replica decides boundary `b` only once
//! the clock has passed `b - lead`, after reading the log. Any event it has
//! not seen then was appended after `b - lead`, so its effect time is past
//! `b + lead > b`: it cannot belong before `b`. Replicas apply events at their
//! effect times, interleaved with boundaries in time order (an event at the
//! same time as a boundary goes first), so all replicas make identical calls
//! into the core, whenever each of them happens to run.
//!
//! **Properties.** Effect times never decrease along the log; every replica
//! reads every entry exactly once, in log order; entries all replicas have
//! read are dropped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use gang_core::{Event, Nanos};

use crate::sys;

/// One event with its effect time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Pool time at which every replica applies it.
    pub effect: Nanos,
    /// The event.
    pub event: Event,
}

#[derive(Debug)]
struct Inner {
    /// Log index of `entries[0]`.
    base: u64,
    entries: VecDeque<Entry>,
    /// Per replica: the log index of its next unread entry.
    cursors: Vec<u64>,
    last_effect: Nanos,
}

/// The shared log.
#[derive(Debug)]
pub struct EventLog {
    inner: Mutex<Inner>,
    /// Bumped on every append; replicas sleep on it (futex) between
    /// boundaries so that a new event can bring a boundary forward.
    seq: AtomicU32,
    lead: Nanos,
}

impl EventLog {
    /// A log read by `replicas` replicas that decide `lead` ahead.
    pub fn new(replicas: usize, lead: Nanos) -> Self {
        EventLog {
            inner: Mutex::new(Inner {
                base: 0,
                entries: VecDeque::new(),
                cursors: vec![0; replicas],
                last_effect: 0,
            }),
            seq: AtomicU32::new(0),
            lead,
        }
    }

    /// The lead the effect times are computed with.
    pub fn lead(&self) -> Nanos {
        self.lead
    }

    /// The futex word bumped on every append.
    pub fn seq(&self) -> &AtomicU32 {
        &self.seq
    }

    /// Appends `event` at pool time `now`; returns its effect time.
    pub fn append(&self, now: Nanos, event: Event) -> Nanos {
        self.append_checked(now, |_| Ok::<_, std::convert::Infallible>(event))
            .unwrap_or_else(|never| match never {})
    }

    /// Computes the effect time, lets `check` validate the event at that
    /// time (for example against a reference copy of the scheduler) and
    /// appends what it returns; nothing is appended when it fails. The log is
    /// locked meanwhile, so checks happen in log order.
    pub fn append_checked<E>(
        &self,
        now: Nanos,
        check: impl FnOnce(Nanos) -> Result<Event, E>,
    ) -> Result<Nanos, E> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let effect = (now + 2 * self.lead).max(inner.last_effect);
        let event = check(effect)?;
        inner.last_effect = effect;
        inner.entries.push_back(Entry { effect, event });
        drop(inner);
        self.seq.fetch_add(1, Ordering::Release);
        sys::futex_wake_all(&self.seq);
        Ok(effect)
    }

    /// Moves to `out` the unread entries of `replica` whose effect time is
    /// at most `upto` (or strictly before it when `strict`), in log order.
    pub fn take(&self, replica: usize, upto: Nanos, strict: bool, out: &mut Vec<Entry>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Inner {
            base,
            entries,
            cursors,
            ..
        } = &mut *inner;
        let mut cursor = cursors[replica];
        while let Some(e) = entries.get((cursor - *base) as usize) {
            let due = if strict {
                e.effect < upto
            } else {
                e.effect <= upto
            };
            if !due {
                break;
            }
            out.push(e.clone());
            cursor += 1;
        }
        cursors[replica] = cursor;
        let min = cursors.iter().copied().min().unwrap_or(cursor);
        while *base < min {
            entries.pop_front();
            *base += 1;
        }
    }

    /// Number of entries not yet read by every replica.
    pub fn backlog(&self) -> usize {
        self.inner.lock().map(|i| i.entries.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gang_core::DomainId;

    #[test]
    fn effect_times_are_monotonic_and_leave_room_for_the_lead() {
        let log = EventLog::new(2, 100);
        let e1 = log.append(1000, Event::Paused(DomainId(1)));
        let e2 = log.append(900, Event::Unpaused(DomainId(1)));
        assert_eq!(e1, 1200);
        assert_eq!(e2, 1200, "never before an earlier entry");
        let e3 = log.append(5000, Event::Paused(DomainId(2)));
        assert_eq!(e3, 5200);
    }

    #[test]
    fn every_replica_reads_every_entry_once_in_order() {
        let log = EventLog::new(2, 0);
        for i in 0..5 {
            log.append(i * 10, Event::Paused(DomainId(i as u32)));
        }
        let mut a = Vec::new();
        log.take(0, 20, false, &mut a);
        assert_eq!(a.len(), 3);
        log.take(0, 20, false, &mut a);
        assert_eq!(a.len(), 3, "nothing twice");
        let mut b = Vec::new();
        log.take(1, 20, true, &mut b);
        assert_eq!(b.len(), 2, "strictly before 20");
        log.take(1, 100, false, &mut b);
        log.take(0, 100, false, &mut a);
        assert_eq!(a, b);
        assert_eq!(log.backlog(), 0, "read by all: dropped");
    }

    #[test]
    fn a_refused_check_appends_nothing() {
        let log = EventLog::new(1, 0);
        let r: Result<Nanos, &str> = log.append_checked(10, |_| Err("no"));
        assert_eq!(r, Err("no"));
        assert_eq!(log.backlog(), 0);
    }
}
