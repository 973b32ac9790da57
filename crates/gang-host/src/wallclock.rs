//! Pools on a shared clock: a gang pool whose time is a wall clock (TAI or
//! REALTIME) minus a base instant, so that every host with the same settings
//! puts the pool's slot boundaries on the same absolute instants (as Linux's
//! `taprio` shaper does with its cycle and base time), and the host's clock
//! status from the kernel's discipline state that chrony and ptp4l keep.
//!
//! **How a shared clock becomes pool time.** The runtime keeps its time on
//! CLOCK_MONOTONIC (its sleeps are absolute on it). A wall clock differs
//! from CLOCK_MONOTONIC by an offset that only a *step* changes: NTP's and
//! PTP's frequency and slew corrections change the rate of the one
//! timekeeper both clocks read, so they move both alike; `settimeofday`,
//! `clock_settime` and `adjtimex(ADJ_SETOFFSET)` move the wall clock alone
//! (and TAI - UTC moves TAI at a leap second). So [`epoch`]
//! measures the offset once and turns the base into a CLOCK_MONOTONIC
//! epoch; a disciplined wall clock is then followed exactly, and a step is
//! what [`StepWatch`] detects and reports (the pool keeps its epoch meanwhile:
//! it never splits a local gang to chase the wall clock).
//!
//! **The base** (parsed by `gang_core::time::SharedTime::parse`) is written as RFC 3339 UTC (`2026-12-01T00:00:00Z`) and is
//! read in the chosen clock's own count of seconds since 1970: for TAI the
//! same text names an instant 37 s (TAI - UTC) earlier in UTC terms, on every
//! host alike, which is all that alignment needs.
//!
//! Invariants: a base is never in the future (a pool's time starts at its
//! base); an epoch is computed from one offset sample, the tightest of a few
//! (the reads of MONOTONIC around the wall clock's read bound its error).

use std::fmt;

use gang_core::time::{SharedTime, WallClock};
use gang_core::Nanos;
use rustix::time::ClockId;
use serde::{Deserialize, Serialize};

use crate::sys;

/// Why a clock setting was refused or its state could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClockError {
    /// After now on the pool's clock.
    #[error("base {text} is {ahead_s:.3} s in the future on the {clock} clock: a pool's time starts at its base")]
    FutureBase {
        /// The base.
        text: String,
        /// The clock.
        clock: WallClock,
        /// How far ahead.
        ahead_s: f64,
    },
    /// Before 1970 (only a hand-made request carries one).
    #[error("base {0} is before 1970")]
    BeforeEpoch(String),
    /// The kernel refused `adjtimex`.
    #[error("reading the clock state: {0}")]
    Adjtimex(String),
}

fn id(clock: WallClock) -> ClockId {
    match clock {
        WallClock::Tai => ClockId::Tai,
        WallClock::Realtime => ClockId::Realtime,
    }
}

/// Refuses a base after now on its clock (a pool's time starts at its
/// base).
pub fn check_started(shared: &SharedTime) -> Result<(), ClockError> {
    if shared.base_ns < 0 {
        return Err(ClockError::BeforeEpoch(shared.base_text()));
    }
    let now = sys::clock_ns(id(shared.clock));
    let base = i128::from(shared.base_ns);
    if base > now {
        return Err(ClockError::FutureBase {
            text: shared.base_text(),
            clock: shared.clock,
            ahead_s: (base - now) as f64 / 1e9,
        });
    }
    Ok(())
}

/// The pool's epoch on CLOCK_MONOTONIC (negative when the base is before
/// this host booted): pool time is CLOCK_MONOTONIC minus it.
pub fn epoch(shared: &SharedTime) -> i128 {
    i128::from(shared.base_ns) - offset_ns(shared.clock)
}

/// Where a pool on `shared` time starts now: the latest cycle boundary
/// (base + k·cycle) not after now, as a CLOCK_MONOTONIC epoch, and how far
/// after the base that boundary is (k·cycle). Every host that starts the
/// pool within one cycle gets the same epoch; a host that starts later is
/// whole cycles ahead, in which every slot is where the others have it.
pub fn aligned_epoch(shared: &SharedTime) -> Result<(Nanos, u64), ClockError> {
    check_started(shared)?;
    let cycle = i128::from(shared.cycle_ns.max(1));
    let base_mono = epoch(shared);
    let now = i128::from(sys::monotonic_ns());
    let cycles = (now - base_mono).div_euclid(cycle);
    let start = base_mono + cycles * cycle;
    let since_base =
        u64::try_from(cycles * cycle).map_err(|_| ClockError::BeforeEpoch(shared.base_text()))?;
    let epoch = Nanos::try_from(start).map_err(|_| ClockError::BeforeEpoch(shared.base_text()))?;
    Ok((epoch, since_base))
}

/// Pool time now, read from the wall clock itself (for checks).
pub fn now(shared: &SharedTime) -> i128 {
    sys::clock_ns(id(shared.clock)) - i128::from(shared.base_ns)
}

/// `clock - CLOCK_MONOTONIC` now, in ns: of a few samples, the one whose
/// two MONOTONIC reads around the wall clock's were closest (its error is
/// at most half their distance).
pub fn offset_ns(clock: WallClock) -> i128 {
    let mut best: Option<(i128, i128)> = None;
    for _ in 0..8 {
        let before = sys::clock_ns(ClockId::Monotonic);
        let wall = sys::clock_ns(id(clock));
        let after = sys::clock_ns(ClockId::Monotonic);
        let width = after - before;
        let offset = wall - (before + width / 2);
        if best.is_none_or(|(w, _)| width < w) {
            best = Some((width, offset));
        }
    }
    best.map_or(0, |(_, o)| o)
}

/// How well this host's wall clock is disciplined, as the kernel says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockStatus {
    /// Some daemon (chrony, ptp4l's phc2sys, ntpd) keeps the clock
    /// synchronised: `adjtimex` reports neither `TIME_ERROR` nor
    /// `STA_UNSYNC`.
    pub synchronised: bool,
    /// The estimated error, µs (meaningful while synchronised).
    pub est_error_us: i64,
    /// The maximum error, µs.
    pub max_error_us: i64,
    /// TAI - UTC in seconds as the kernel was told (0: nobody told it, and
    /// CLOCK_TAI equals CLOCK_REALTIME on this host).
    pub tai_offset_s: i32,
}

impl ClockStatus {
    /// Reads the kernel's state now.
    pub fn read() -> Result<ClockStatus, ClockError> {
        let tx = sys::adjtimex_read().map_err(|e| ClockError::Adjtimex(e.to_string()))?;
        Ok(ClockStatus {
            synchronised: tx.state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0,
            est_error_us: tx.esterror_us,
            max_error_us: tx.maxerror_us,
            tai_offset_s: tx.tai_s,
        })
    }
}

impl fmt::Display for ClockStatus {
    /// `synchronised (est. error 12us, max 150us, TAI-UTC 37s)` or
    /// `not synchronised (...)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (est. error {}us, max {}us, TAI-UTC {}s)",
            if self.synchronised {
                "synchronised"
            } else {
                "not synchronised"
            },
            self.est_error_us,
            self.max_error_us,
            self.tai_offset_s
        )
    }
}

/// Watches a shared clock for steps: the wall clock moved against
/// CLOCK_MONOTONIC by more than a threshold since the epoch was taken.
#[derive(Debug, Clone)]
pub struct StepWatch {
    clock: WallClock,
    offset: i128,
    threshold_ns: i128,
}

impl StepWatch {
    /// Steps below this are reading noise (a preempted sample), not steps.
    pub const DEFAULT_THRESHOLD_NS: i128 = 100_000;

    /// A watch from the offset now.
    pub fn new(clock: WallClock, threshold_ns: i128) -> StepWatch {
        StepWatch {
            clock,
            offset: offset_ns(clock),
            threshold_ns,
        }
    }

    /// How far the wall clock stepped since the watch began (ns, signed),
    /// if beyond the threshold.
    pub fn step(&self) -> Option<i128> {
        let moved = offset_ns(self.clock) - self.offset;
        (moved.abs() > self.threshold_ns).then_some(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(clock: &str, base: &str) -> SharedTime {
        SharedTime::parse(clock, base).expect("a setting")
    }

    #[test]
    fn a_base_in_the_future_is_refused() {
        assert!(check_started(&parse("tai", "2026-01-01T00:00:00Z")).is_ok());
        let e = check_started(&parse("tai", "2199-01-01T00:00:00Z")).unwrap_err();
        assert!(
            e.to_string().contains("in the future on the tai clock"),
            "{e}"
        );
        let before = SharedTime {
            clock: WallClock::Realtime,
            base_ns: -5,
            cycle_ns: gang_core::SEC,
            require_sync: false,
        };
        assert_eq!(
            check_started(&before).unwrap_err().to_string(),
            "base -5ns is before 1970"
        );
    }

    #[test]
    fn two_readers_of_one_base_agree_on_the_epoch_and_on_pool_time() {
        // Two "hosts" here read the same clock: their epochs agree within
        // the offset's reading error.
        for clock in ["tai", "realtime"] {
            let a = parse(clock, "2026-01-01T00:00:00Z");
            let b = parse(clock, "2026-01-01T00:00:00Z");
            let (ea, eb) = (epoch(&a), epoch(&b));
            assert!((ea - eb).abs() < 50_000, "{clock}: epochs {ea} and {eb}");
            // Pool time from MONOTONIC and the epoch is the wall clock's.
            let from_mono = sys::clock_ns(ClockId::Monotonic) - ea;
            let from_wall = now(&a);
            assert!(
                (from_wall - from_mono).abs() < 1_000_000,
                "{clock}: {from_wall} vs {from_mono}"
            );
        }
    }

    #[test]
    fn a_pool_starts_on_the_latest_cycle_boundary_after_the_base() {
        let mut t = parse("realtime", "2026-01-01T00:00:00Z");
        t.cycle_ns = 100_000_000;
        let (e1, k1) = aligned_epoch(&t).expect("aligned");
        let (e2, k2) = aligned_epoch(&t).expect("aligned");
        assert_eq!(k1 % t.cycle_ns, 0, "whole cycles after the base");
        // Two starts a moment apart land on the same boundary (or the next).
        assert!(k2 == k1 || k2 == k1 + t.cycle_ns, "{k1} {k2}");
        assert!(
            e2.abs_diff(e1) % t.cycle_ns < 100_000
                || e2.abs_diff(e1) % t.cycle_ns > t.cycle_ns - 100_000
        );
        // The boundary is at most a cycle ago.
        let now = sys::monotonic_ns();
        assert!(e1 <= now && now - e1 < t.cycle_ns + 1_000_000, "{e1} {now}");
        // And on the wall clock it is base + k·cycle.
        let wall_of_epoch = i128::from(e1) + offset_ns(t.clock);
        let expect = i128::from(t.base_ns) + i128::from(k1);
        assert!(
            (wall_of_epoch - expect).abs() < 100_000,
            "{wall_of_epoch} {expect}"
        );
    }

    #[test]
    fn a_steady_clock_shows_no_step_and_the_status_reads() {
        let watch = StepWatch::new(WallClock::Realtime, 5_000_000);
        assert_eq!(watch.step(), None);
        let status = ClockStatus::read().expect("adjtimex reads");
        let text = status.to_string();
        assert!(text.contains("synchronised (est. error"), "{text}");
    }
}
