//! The replicated event log: how every dispatcher's replica of the scheduler
//! sees the same events at the same times, with no message between CPUs on
//! the switch path.
//!
//! **Problem.** Each pool CPU's dispatcher holds its own copy of the pool's
//! [`gang_core::Scheduler`] and decides every boundary itself, a little ahead
//! of time (the *lead*). Copies agree only if they apply the same events at
//! the same times in the same order relative to boundaries.
//!
//! **Approach.** Every entry has an *effect time*. An entry appended when the
//! clock reads `x` (read under the log's lock) takes effect at
//! `max(x + 2·lead, at)`, where `at` is an optional later time the appender
//! asks for (a vCPU that sleeps until `at` reports its wake-up in advance: it
//! may have no CPU to run on when it wakes). Entries are ordered by (effect
//! time, append order). A replica reading at clock `r` is handed only entries
//! whose effect time is before its *frontier* `r + 2·lead`: any entry
//! appended later reads a clock of at least `r`, so it takes effect at or
//! after the frontier and can never land before what a replica has already
//! read. A replica decides boundary `b` only after reading at `r ≥ b - lead`,
//! so every entry due by `b` is in hand. Replicas apply entries at their
//! effect times, interleaved with boundaries in time order (an entry at the
//! same time as a boundary first), so all replicas make identical calls into
//! the core, whenever each of them happens to run.
//!
//! **Properties.** Every replica reads every entry exactly once, in (effect,
//! append) order, and never an entry before one it already read; entries
//! every replica has read are dropped.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use gang_core::{Event, Nanos};

use crate::clock::Clock;
use crate::sys;

/// One event with its effect time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Pool time at which every replica applies it.
    pub effect: Nanos,
    /// The event.
    pub event: Event,
}

type Key = (Nanos, u64);

#[derive(Debug)]
struct Inner {
    entries: BTreeMap<Key, Event>,
    next_seq: u64,
    /// Per replica: the key of the last entry it read.
    cursors: Vec<Option<Key>>,
}

/// The shared log.
#[derive(Debug)]
pub struct EventLog {
    inner: Mutex<Inner>,
    /// Bumped on every append; replicas sleep on it (futex) between
    /// boundaries so that a new event can bring a boundary forward.
    seq: AtomicU32,
    lead: Nanos,
    clock: Clock,
}

impl EventLog {
    /// A log read by `replicas` replicas that decide `lead` ahead, on `clock`.
    pub fn new(replicas: usize, lead: Nanos, clock: Clock) -> Self {
        EventLog {
            inner: Mutex::new(Inner {
                entries: BTreeMap::new(),
                next_seq: 0,
                cursors: vec![None; replicas],
            }),
            seq: AtomicU32::new(0),
            lead,
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lead the effect times are computed with.
    pub fn lead(&self) -> Nanos {
        self.lead
    }

    /// The futex word bumped on every append.
    pub fn seq(&self) -> &AtomicU32 {
        &self.seq
    }

    /// Appends `event` now; returns its effect time.
    pub fn append(&self, event: Event) -> Nanos {
        self.append_at(0, event)
    }

    /// Appends `event` to take effect at `at`, or as soon as the log allows
    /// (now + 2·lead) if that is later; returns the effect time.
    pub fn append_at(&self, at: Nanos, event: Event) -> Nanos {
        let mut inner = self.lock();
        // Read under the lock (module docs). The clock only moves forward, so
        // entries appended "now" keep their append order in effect time.
        let effect = (self.clock.now() + 2 * self.lead).max(at);
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.entries.insert((effect, seq), event);
        drop(inner);
        self.seq.fetch_add(1, Ordering::Release);
        sys::futex_wake_all(&self.seq);
        effect
    }

    /// The earliest effect time an entry appended now would get. A caller
    /// that validates an event first (against a reference copy of the
    /// scheduler, outside the log's lock: dispatchers take that lock) checks
    /// it at this time, then appends it with [`EventLog::append_at`], which
    /// may give a later time; callers that validate serialise among
    /// themselves, so their effect times keep their order.
    pub fn earliest_effect(&self) -> Nanos {
        let _inner = self.lock();
        self.clock.now() + 2 * self.lead
    }

    /// Moves to `out` the unread entries of `replica` whose effect time is
    /// at most `upto` (or strictly before it when `strict`) and before the
    /// frontier, in order.
    pub fn take(&self, replica: usize, upto: Nanos, strict: bool, out: &mut Vec<Entry>) {
        let mut inner = self.lock();
        let frontier = self.clock.now() + 2 * self.lead;
        let Inner {
            entries, cursors, ..
        } = &mut *inner;
        let start = match cursors[replica] {
            Some(k) => Bound::Excluded(k),
            None => Bound::Unbounded,
        };
        let mut last = cursors[replica];
        for (&(effect, seq), event) in entries.range((start, Bound::Unbounded)) {
            let due = if strict {
                effect < upto
            } else {
                effect <= upto
            };
            if !due || effect >= frontier {
                break;
            }
            out.push(Entry {
                effect,
                event: event.clone(),
            });
            last = Some((effect, seq));
        }
        cursors[replica] = last;
        // Drop what every replica has read.
        if let Some(min) = cursors.iter().copied().min().flatten() {
            while let Some((&k, _)) = entries.first_key_value() {
                if k > min {
                    break;
                }
                entries.pop_first();
            }
        }
    }

    /// When the next unread entry of `replica` becomes takeable (its effect
    /// time minus 2·lead), if there is one.
    pub fn next_due(&self, replica: usize) -> Option<Nanos> {
        let inner = self.lock();
        let start = match inner.cursors[replica] {
            Some(k) => Bound::Excluded(k),
            None => Bound::Unbounded,
        };
        let (&(effect, _), _) = inner.entries.range((start, Bound::Unbounded)).next()?;
        Some(effect.saturating_sub(2 * self.lead))
    }

    /// Number of entries not yet read by every replica.
    pub fn backlog(&self) -> usize {
        self.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gang_core::DomainId;

    fn log(replicas: usize, lead: Nanos) -> (EventLog, Clock) {
        let clock = Clock::new(1);
        (EventLog::new(replicas, lead, clock), clock)
    }

    #[test]
    fn effect_times_leave_room_for_the_lead_and_keep_checked_order() {
        let (log, clock) = log(1, 1_000_000);
        let t0 = clock.now();
        let e1 = log.append(Event::Paused(DomainId(1)));
        let e2 = log.append(Event::Unpaused(DomainId(1)));
        assert!(e1 >= t0 + 2_000_000);
        assert!(e2 >= e1, "in order");
        let later = log.append_at(e2 + 50_000_000, Event::Paused(DomainId(2)));
        assert_eq!(later, e2 + 50_000_000, "a wake-up reported in advance");
    }

    #[test]
    fn every_replica_reads_every_entry_once_in_order_and_never_too_early() {
        let (log, clock) = log(2, 100_000);
        for i in 0..5 {
            log.append(Event::Paused(DomainId(i)));
        }
        let far = log.append_at(clock.now() + 10_000_000_000, Event::Unpaused(DomainId(9)));
        // Entries are due 200 us after appending: nothing before that.
        let mut a = Vec::new();
        log.take(0, Nanos::MAX, false, &mut a);
        assert!(a.len() <= 5);
        clock.wait_until(clock.now() + 300_000, 0);
        log.take(0, Nanos::MAX, false, &mut a);
        assert_eq!(a.len(), 5, "the far-future entry waits for its time");
        log.take(0, Nanos::MAX, false, &mut a);
        assert_eq!(a.len(), 5, "nothing twice");
        let mut b = Vec::new();
        log.take(1, a[2].effect, true, &mut b);
        assert!(b.iter().all(|e| e.effect < a[2].effect));
        log.take(1, Nanos::MAX, false, &mut b);
        assert_eq!(a, b);
        assert_eq!(
            log.backlog(),
            1,
            "read by all: dropped, but for the future entry"
        );
        assert!(far > clock.now());
    }

    #[test]
    fn the_earliest_effect_is_what_an_append_now_would_get_or_less() {
        let (log, _) = log(1, 100_000);
        let early = log.earliest_effect();
        let e = log.append_at(early, Event::Paused(DomainId(1)));
        assert!(e >= early);
    }
}
