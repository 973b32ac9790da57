//! The runtime's clock: nanoseconds since the pool epoch on CLOCK_MONOTONIC,
//! and precise waits (sleep to shortly before the target, then spin).
//!
//! On these machines a SCHED_FIFO thread's absolute sleep wakes about 20 µs
//! late at the median and 45–75 µs at p99 (measured; SCHED_OTHER is far
//! worse), so a boundary reached by a sleep alone would start gangs with tens
//! of µs of skew. [`Clock::wait_until`] sleeps to `target - spin` and spins the
//! rest, which gives sub-µs precision when the sleep was on time. How long
//! to spin is learnt per dispatcher ([`SpinTuner`]): the wake-up latency
//! varies between hosts and hours (p50 from 20 µs to over 70 µs on these
//! shared machines).

use gang_core::Nanos;

use crate::sys;

/// Pool time: CLOCK_MONOTONIC minus the epoch.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Nanos,
}

impl Clock {
    /// A clock whose epoch is the next instant of CLOCK_MONOTONIC half a
    /// `grain` past a whole grain, so that pool boundaries (whole grains of
    /// pool time) fall halfway between whole grains of CLOCK_MONOTONIC.
    ///
    /// That is where the kernel's scheduler tick is not: Linux puts every
    /// CPU's tick on multiples of its period in CLOCK_MONOTONIC, all CPUs at
    /// once (`/proc/timer_list` here: `tick_nohz_handler` expiring at whole
    /// multiples of 4 ms on both CPUs). A tick costs this machine 10-15 µs
    /// (a virtual timer interrupt and the tick's work); boundaries on whole
    /// milliseconds met one every 4 ms, and half of a TT pool's boundaries at
    /// 2 ms: measured, those switches were 8-15 µs late, a different amount
    /// on each CPU. Half a grain off, a boundary is at least half of
    /// gcd(grain, tick period) away from any tick (0.5 ms at a 1 ms grain).
    pub fn new(grain: Nanos) -> Self {
        let now = sys::monotonic_ns();
        let grain = grain.max(1);
        let mut epoch = now - now % grain + grain / 2;
        if epoch < now {
            epoch += grain;
        }
        Clock { epoch }
    }

    /// A clock with the given epoch (CLOCK_MONOTONIC nanoseconds).
    pub fn with_epoch(epoch: Nanos) -> Self {
        Clock { epoch }
    }

    /// The epoch, in CLOCK_MONOTONIC nanoseconds.
    pub fn epoch(&self) -> Nanos {
        self.epoch
    }

    /// Pool time now (0 before the epoch).
    pub fn now(&self) -> Nanos {
        sys::monotonic_ns().saturating_sub(self.epoch)
    }

    /// Waits until pool time `target`: sleeps until `target - spin`, then
    /// spins. Returns the lateness in nanoseconds (0 if on time).
    pub fn wait_until(&self, target: Nanos, spin: Nanos) -> Nanos {
        self.sleep_before(target, spin);
        self.spin_until(target)
    }

    /// Sleeps until `target - spin` if that is still ahead; returns how late
    /// the sleep woke (`None`: no sleep, `target` is less than `spin` away).
    pub fn sleep_before(&self, target: Nanos, spin: Nanos) -> Option<Nanos> {
        let now = self.now();
        if target <= now || target - now <= spin {
            return None;
        }
        let wake = target - spin;
        sys::sleep_until_monotonic(self.epoch + wake);
        Some(self.now().saturating_sub(wake))
    }

    /// Spins until pool time `target`; returns how late it got there (0: on
    /// time, to the clock's resolution).
    pub fn spin_until(&self, target: Nanos) -> Nanos {
        loop {
            let now = self.now();
            if now >= target {
                return now - target;
            }
            std::hint::spin_loop();
        }
    }
}

/// Chooses a dispatcher's spin from the wake-up latency it measures.
///
/// A fixed spin is either too short when the host is noisy (every switch
/// late by the sleep's overshoot, and the two CPUs of a gang late by
/// different amounts: co-start skew) or wastes CPU time when it is quiet.
/// The tuner keeps the last [`SpinTuner::WINDOW`] samples of how long a
/// dispatcher's work before a switch took from its planned wake-up (the
/// sleep's lateness plus handing the CPU over, see `runtime`) and spins for
/// their 95th percentile plus a margin, within `[floor, ceiling]`. Invariant: `spin()` is always within the bounds given
/// to [`SpinTuner::new`]; with `floor == ceiling` it is that fixed value.
#[derive(Debug, Clone)]
pub struct SpinTuner {
    floor: Nanos,
    ceiling: Nanos,
    samples: Vec<Nanos>,
    next: usize,
    since_update: usize,
    spin: Nanos,
}

impl SpinTuner {
    /// How many recent overshoots the tuner considers.
    pub const WINDOW: usize = 128;
    /// Added to the measured percentile.
    pub const MARGIN: Nanos = 10_000;
    /// How many new samples between recomputations (off the switch path,
    /// but not free: a sort of the window).
    const UPDATE_EVERY: usize = 16;

    /// What the tuner spins until it has measured (clamped to its bounds):
    /// the fixed spin that served on these machines before the tuner.
    pub const START: Nanos = 60_000;

    /// A tuner spinning [`SpinTuner::START`] until it has measured, never
    /// outside `[floor, ceiling]` (a ceiling below the floor is raised to
    /// it).
    pub fn new(floor: Nanos, ceiling: Nanos) -> Self {
        let ceiling = ceiling.max(floor);
        SpinTuner {
            floor,
            ceiling,
            samples: Vec::with_capacity(Self::WINDOW),
            next: 0,
            since_update: 0,
            spin: Self::START.clamp(floor, ceiling),
        }
    }

    /// The spin to use for the next wait.
    pub fn spin(&self) -> Nanos {
        self.spin
    }

    /// Records how long the work before a switch took from the planned
    /// wake-up.
    pub fn record(&mut self, sample: Nanos) {
        if self.floor == self.ceiling {
            return;
        }
        if self.samples.len() < Self::WINDOW {
            self.samples.push(sample);
        } else {
            self.samples[self.next] = sample;
            self.next = (self.next + 1) % Self::WINDOW;
        }
        self.since_update += 1;
        if self.since_update >= Self::UPDATE_EVERY {
            self.since_update = 0;
            let mut sorted = self.samples.clone();
            sorted.sort_unstable();
            let p95 = sorted[(sorted.len() * 95 / 100).min(sorted.len() - 1)];
            self.spin = (p95 + Self::MARGIN).clamp(self.floor, self.ceiling);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_never_early() {
        let clock = Clock::new(1_000_000);
        for k in 1..5 {
            let target = clock.now() + k * 300_000;
            let late = clock.wait_until(target, 100_000);
            assert!(clock.now() >= target);
            assert!(late < 50_000_000, "absurd lateness {late}");
        }
        assert_eq!(
            clock.epoch() % 1_000_000,
            500_000,
            "half a grain off the tick grid"
        );
    }

    #[test]
    fn a_sleep_before_a_target_reports_its_lateness() {
        let clock = Clock::new(1_000_000);
        let target = clock.now() + 2_000_000;
        let overshoot = clock.sleep_before(target, 100_000);
        assert!(overshoot.is_some(), "a 2 ms wait sleeps first");
        assert!(clock.now() >= target - 100_000, "never wakes early");
        assert_eq!(
            clock.sleep_before(clock.now() + 10_000, 100_000),
            None,
            "a target closer than the spin is not slept for"
        );
        assert_eq!(
            clock.sleep_before(0, 0),
            None,
            "a past target is not slept for"
        );
    }

    #[test]
    fn the_tuner_follows_the_measured_latency_within_its_bounds() {
        let mut tuner = SpinTuner::new(30_000, 200_000);
        assert_eq!(tuner.spin(), SpinTuner::START, "the start until measured");
        for _ in 0..SpinTuner::UPDATE_EVERY - 1 {
            tuner.record(0);
        }
        assert_eq!(tuner.spin(), SpinTuner::START, "updated every 16 samples");
        // Each phase fills the whole window, whatever the update phase.
        let phase = |tuner: &mut SpinTuner, sample: &dyn Fn(usize) -> Nanos| {
            for i in 0..2 * SpinTuner::WINDOW {
                tuner.record(sample(i));
            }
            tuner.spin()
        };
        assert_eq!(phase(&mut tuner, &|_| 50_000), 50_000 + SpinTuner::MARGIN);
        // 10% of wake-ups far late: the 95th percentile is one of them.
        assert_eq!(
            phase(&mut tuner, &|i| if i % 10 == 0 { 120_000 } else { 20_000 }),
            120_000 + SpinTuner::MARGIN
        );
        assert_eq!(
            phase(&mut tuner, &|_| 10_000_000),
            200_000,
            "never above the ceiling"
        );
        assert_eq!(phase(&mut tuner, &|_| 0), 30_000, "never below the floor");
    }

    #[test]
    fn the_start_is_within_the_bounds() {
        assert_eq!(SpinTuner::new(80_000, 150_000).spin(), 80_000);
        assert_eq!(SpinTuner::new(10_000, 30_000).spin(), 30_000);
        assert_eq!(
            SpinTuner::new(50_000, 10_000).spin(),
            50_000,
            "ceiling raised"
        );
    }

    #[test]
    fn a_fixed_tuner_never_moves() {
        let mut tuner = SpinTuner::new(60_000, 60_000);
        for _ in 0..1000 {
            tuner.record(500_000);
        }
        assert_eq!(tuner.spin(), 60_000);
    }
}
