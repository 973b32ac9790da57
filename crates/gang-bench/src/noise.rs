//! The host's own interruptions of the pool CPUs ([`Noise`]): measured once
//! per round by `gang bench` and `gang bench-vm --qemu`, printed below
//! their tables as the floor under the co-start skew's tail.
//!
//! Invariant: the measuring threads run at a real-time priority for at most
//! their window (well within the kernel's real-time limit) and have ended
//! when [`measure_noise`] returns.

use gang_core::{CpuId, Nanos, MS};
use gang_host::runtime::HostError;
use gang_host::sys::{self, SchedPolicy};

/// How often the host takes a pool CPU away from a real-time thread that
/// never sleeps (interrupts, kernel threads of higher class, and on a
/// virtual machine the hypervisor running something else): a spinning
/// SCHED_FIFO thread at the dispatchers' priority on each CPU reads the
/// clock in a loop and counts the gaps. A gang's co-start skew cannot be
/// smaller than such a gap when one lands on one of its CPUs at a slot's
/// start, so this is the floor under the skew's tail, measured in the same
/// run.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Noise {
    /// The CPU.
    pub cpu: CpuId,
    /// How long the thread spun, ns.
    pub window_ns: Nanos,
    /// Gaps longer than 10 µs, per second.
    pub over_10us_per_s: f64,
    /// Gaps longer than 20 µs, per second.
    pub over_20us_per_s: f64,
    /// Gaps longer than 50 µs, per second.
    pub over_50us_per_s: f64,
    /// Gaps longer than 100 µs, per second.
    pub over_100us_per_s: f64,
    /// The longest gap, ns.
    pub longest_ns: Nanos,
    /// The share of the window lost in gaps longer than 2 µs.
    pub lost: f64,
}

/// How long each round's noise measurement spins (well within the kernel's
/// real-time limit of 950 ms per second).
pub const NOISE_WINDOW: Nanos = 300 * MS;

/// Measures [`Noise`] on every CPU of `cpus` at once, for `window`.
pub fn measure_noise(
    cpus: &[CpuId],
    priority: i32,
    window: Nanos,
) -> Result<Vec<Noise>, HostError> {
    let start = sys::monotonic_ns() + 5 * MS;
    let threads: Vec<_> = cpus
        .iter()
        .map(|&cpu| {
            std::thread::spawn(move || -> Result<Noise, HostError> {
                sys::set_affinity(0, &[cpu]).map_err(|e| HostError::Sys {
                    what: format!("pinning to CPU {cpu}"),
                    source: e,
                })?;
                sys::set_policy(0, SchedPolicy::Fifo(priority)).map_err(HostError::Privilege)?;
                let end = start + window;
                let mut noise = Noise {
                    cpu,
                    window_ns: window,
                    ..Noise::default()
                };
                let mut counts = [0u64; 4];
                let mut lost = 0;
                while sys::monotonic_ns() < start {
                    std::hint::spin_loop();
                }
                let mut last = sys::monotonic_ns();
                while last < end {
                    let now = sys::monotonic_ns();
                    let gap = now - last;
                    if gap > 2_000 {
                        lost += gap;
                        for (count, limit) in
                            counts.iter_mut().zip([10_000, 20_000, 50_000, 100_000])
                        {
                            *count += u64::from(gap > limit);
                        }
                        noise.longest_ns = noise.longest_ns.max(gap);
                    }
                    last = now;
                }
                // Back to normal before the thread ends (it ends at once).
                gang_host::best_effort(
                    "bench clean-up: returning to SCHED_OTHER",
                    sys::set_policy(0, SchedPolicy::Other),
                );
                let secs = window as f64 / 1e9;
                noise.over_10us_per_s = counts[0] as f64 / secs;
                noise.over_20us_per_s = counts[1] as f64 / secs;
                noise.over_50us_per_s = counts[2] as f64 / secs;
                noise.over_100us_per_s = counts[3] as f64 / secs;
                noise.lost = lost as f64 / window as f64;
                Ok(noise)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in threads {
        out.push(t.join().map_err(|_| HostError::Sys {
            what: "measuring host noise".into(),
            source: std::io::Error::other("the measuring thread panicked"),
        })??);
    }
    Ok(out)
}

/// A line per CPU of `cpus` summing up `noise` (all rounds together).
pub fn render_noise(cpus: &[CpuId], noise: &[Noise]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for cpu in cpus {
        let runs: Vec<&Noise> = noise.iter().filter(|n| n.cpu == *cpu).collect();
        if runs.is_empty() {
            continue;
        }
        let window: Nanos = runs.iter().map(|n| n.window_ns).sum();
        let rate = |f: fn(&Noise) -> f64| {
            runs.iter().map(|n| f(n) * n.window_ns as f64).sum::<f64>() / window as f64
        };
        let _ = writeln!(
            out,
            "host noise CPU {cpu}: interrupted >10us {:.0}/s, >20us {:.0}/s, >50us {:.0}/s, >100us {:.1}/s, longest {:.0} us, {:.2}% of the time lost ({:.1} s spun)",
            rate(|n| n.over_10us_per_s),
            rate(|n| n.over_20us_per_s),
            rate(|n| n.over_50us_per_s),
            rate(|n| n.over_100us_per_s),
            runs.iter().map(|n| n.longest_ns).max().unwrap_or(0) as f64 / 1e3,
            rate(|n| n.lost) * 100.0,
            window as f64 / 1e9
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_measured_on_every_cpu_asked() {
        if !sys::is_root() {
            return gang_testkit::host::skip_or_fail("needs root for a real-time priority");
        }
        let noise = measure_noise(&[0], 10, 20 * MS).expect("noise");
        assert_eq!(noise.len(), 1);
        let n = noise[0];
        assert_eq!((n.cpu, n.window_ns), (0, 20 * MS));
        assert!(n.over_10us_per_s >= n.over_20us_per_s);
        assert!(n.over_20us_per_s >= n.over_50us_per_s);
        assert!(n.over_50us_per_s >= n.over_100us_per_s);
        assert!((0.0..1.0).contains(&n.lost), "{n:?}");
        assert_eq!(
            sys::policy(0).expect("policy"),
            SchedPolicy::Other,
            "the test thread's policy is untouched"
        );
    }
}
