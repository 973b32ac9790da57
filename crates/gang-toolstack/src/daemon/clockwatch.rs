//! Watching the shared clocks under running gang pools: the monitor thread
//! calls [`Daemon::watch_clocks`] about once a second, and every change that
//! matters to a pool on a shared clock is written to `gang dmesg` and the
//! log as it happens, not only when someone runs `sched-gang`:
//!
//! * the host's clock is, or stops being, synchronised (`adjtimex`: chrony,
//!   ptp4l/phc2sys or ntpd keep it so);
//! * the wall clock stepped against the pool's epoch by more than reading
//!   noise ([`StepWatch::DEFAULT_THRESHOLD_NS`]); every further step of that
//!   size is reported again, and a step back to the epoch as well;
//! * a pool on the TAI clock where the kernel was never told TAI-UTC (then
//!   CLOCK_TAI equals UTC here and is 37 s off hosts that were told).
//!
//! The pool keeps its epoch through all of these: a local gang is never
//! split to follow the clock (ARCHITECTURE, "Pools on a shared clock"). A
//! pool's watch begins when its runtime starts and ends when it stops, so a
//! restarted pool reports its state afresh.
//!
//! The decisions are in [`ClockWatch::observe`], pure and unit-tested; the
//! daemon only reads the kernel and writes the lines.

use gang_core::time::WallClock;
use gang_host::wallclock::{ClockStatus, StepWatch};

use super::Daemon;
use crate::store::PoolId;

/// What was last reported for one running pool on a shared clock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ClockWatch {
    /// The clock's synchronisation as last reported (`None`: not yet).
    synchronised: Option<bool>,
    /// The step (ns against the pool's epoch) as last reported.
    step_reported_ns: i64,
    /// Whether a TAI offset of 0 was reported.
    tai_unset_reported: bool,
}

impl ClockWatch {
    /// Folds in what the kernel says now (`status`: `None` if it could not
    /// be read) and how far the clock stepped under the pool; returns the
    /// lines to report, worded for `pool` on `clock`.
    pub(super) fn observe(
        &mut self,
        pool: &str,
        clock: WallClock,
        status: Option<ClockStatus>,
        step_ns: i64,
    ) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(s) = status {
            match (self.synchronised, s.synchronised) {
                (None, false) => lines.push(format!(
                    "cpupool '{pool}': this host's clock is {s}: the pool's slots line up \
                     with other hosts only as well as the clocks happen to agree"
                )),
                (Some(true), false) => lines.push(format!(
                    "cpupool '{pool}': this host's clock lost synchronisation: {s}; the pool \
                     keeps its epoch and drifts from other hosts until it is back"
                )),
                (Some(false), true) => lines.push(format!(
                    "cpupool '{pool}': this host's clock is synchronised again: {s}"
                )),
                _ => {}
            }
            self.synchronised = Some(s.synchronised);
            if clock == WallClock::Tai && s.tai_offset_s == 0 && !self.tai_unset_reported {
                self.tai_unset_reported = true;
                lines.push(format!(
                    "cpupool '{pool}' is on the tai clock, but the kernel was never told \
                     TAI-UTC (0 s): CLOCK_TAI equals UTC here and is off by the leap seconds \
                     from hosts that were told (ptp4l/phc2sys or chrony's leapsectz set it)"
                ));
            }
        }
        let threshold = i64::try_from(StepWatch::DEFAULT_THRESHOLD_NS).unwrap_or(i64::MAX);
        if step_ns.abs_diff(self.step_reported_ns) > threshold.unsigned_abs() {
            lines.push(if step_ns.unsigned_abs() > threshold.unsigned_abs() {
                format!(
                    "cpupool '{pool}': the {clock} clock stepped: it is now {} against the \
                     pool's epoch; the pool keeps its epoch (its local gangs stay whole) and is \
                     out of phase with other hosts by that much until it restarts",
                    signed_duration(step_ns)
                )
            } else {
                format!(
                    "cpupool '{pool}': the {clock} clock is back within {} of the pool's epoch",
                    signed_duration(threshold)
                )
            });
            self.step_reported_ns = step_ns;
        }
        lines
    }
}

/// `+1.234567s`, `-250us`: a signed duration at a readable unit.
fn signed_duration(ns: i64) -> String {
    let sign = if ns < 0 { '-' } else { '+' };
    let a = ns.unsigned_abs();
    if a >= 1_000_000_000 {
        format!("{sign}{:.6}s", a as f64 / 1e9)
    } else if a >= 1_000_000 {
        format!("{sign}{:.3}ms", a as f64 / 1e6)
    } else {
        format!("{sign}{}us", a / 1_000)
    }
}

impl Daemon {
    /// Reports what changed about the clocks under running pools on a shared
    /// clock (module docs); forgets the pools that stopped.
    pub(super) fn watch_clocks(&mut self) {
        let running: Vec<(PoolId, String, WallClock, i64)> = self
            .runtimes
            .iter()
            .filter_map(|(id, rt)| {
                let time = rt.config().shared_time?;
                let step = rt.clock_step()?;
                Some((*id, rt.config().name.clone(), time.clock, step))
            })
            .collect();
        self.clock_watches
            .retain(|id, _| running.iter().any(|(r, ..)| r == id));
        if running.is_empty() {
            return;
        }
        let status = match ClockStatus::read() {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("watching the shared clocks: {e}");
                None
            }
        };
        for (id, name, clock, step) in running {
            let lines = self
                .clock_watches
                .entry(id)
                .or_default()
                .observe(&name, clock, status, step);
            for line in lines {
                self.warn(line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(synchronised: bool, tai_offset_s: i32) -> Option<ClockStatus> {
        Some(ClockStatus {
            synchronised,
            est_error_us: 12,
            max_error_us: 150,
            tai_offset_s,
        })
    }

    #[test]
    fn a_synchronised_start_is_quiet_and_loss_and_return_are_reported_once_each() {
        let mut w = ClockWatch::default();
        assert!(w
            .observe("p", WallClock::Realtime, status(true, 37), 0)
            .is_empty());
        let lost = w.observe("p", WallClock::Realtime, status(false, 37), 0);
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert!(lost[0].contains("lost synchronisation"), "{lost:?}");
        assert!(lost[0].contains("keeps its epoch"), "{lost:?}");
        assert!(w
            .observe("p", WallClock::Realtime, status(false, 37), 0)
            .is_empty());
        let back = w.observe("p", WallClock::Realtime, status(true, 37), 0);
        assert_eq!(back.len(), 1, "{back:?}");
        assert!(back[0].contains("synchronised again"), "{back:?}");
    }

    #[test]
    fn an_unsynchronised_start_is_reported_once() {
        let mut w = ClockWatch::default();
        let first = w.observe("p", WallClock::Realtime, status(false, 37), 0);
        assert_eq!(first.len(), 1, "{first:?}");
        assert!(first[0].contains("not synchronised"), "{first:?}");
        assert!(w
            .observe("p", WallClock::Realtime, status(false, 37), 0)
            .is_empty());
    }

    #[test]
    fn steps_are_reported_as_they_happen_and_noise_is_not() {
        let mut w = ClockWatch::default();
        assert!(w
            .observe("p", WallClock::Realtime, status(true, 37), 40_000)
            .is_empty());
        let step = w.observe("p", WallClock::Realtime, status(true, 37), 2_500_000);
        assert_eq!(step.len(), 1, "{step:?}");
        assert!(step[0].contains("stepped"), "{step:?}");
        assert!(step[0].contains("+2.500ms"), "{step:?}");
        // The same step seen again, within noise of it: nothing new.
        assert!(w
            .observe("p", WallClock::Realtime, status(true, 37), 2_550_000)
            .is_empty());
        let further = w.observe("p", WallClock::Realtime, status(true, 37), -1_000_000_000);
        assert!(further[0].contains("-1.000000s"), "{further:?}");
        let back = w.observe("p", WallClock::Realtime, status(true, 37), 10_000);
        assert!(back[0].contains("back within +100us"), "{back:?}");
    }

    #[test]
    fn a_tai_pool_on_a_host_without_the_tai_offset_is_warned_once() {
        let mut w = ClockWatch::default();
        let lines = w.observe("p", WallClock::Tai, status(true, 0), 0);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("never told"), "{lines:?}");
        assert!(w
            .observe("p", WallClock::Tai, status(true, 0), 0)
            .is_empty());
        // Not on REALTIME, and not once the offset is set.
        let mut r = ClockWatch::default();
        assert!(r
            .observe("p", WallClock::Realtime, status(true, 0), 0)
            .is_empty());
        let mut t = ClockWatch::default();
        assert!(t
            .observe("p", WallClock::Tai, status(true, 37), 0)
            .is_empty());
    }

    #[test]
    fn an_unreadable_status_reports_only_steps() {
        let mut w = ClockWatch::default();
        assert!(w.observe("p", WallClock::Tai, None, 0).is_empty());
        assert_eq!(w.observe("p", WallClock::Tai, None, 5_000_000).len(), 1);
    }

    #[test]
    fn durations_read_at_their_unit() {
        assert_eq!(signed_duration(0), "+0us");
        assert_eq!(signed_duration(-250_000), "-250us");
        assert_eq!(signed_duration(1_500_000), "+1.500ms");
        assert_eq!(signed_duration(2_000_000_000), "+2.000000s");
    }
}
