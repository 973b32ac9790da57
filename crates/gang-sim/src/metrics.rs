//! Latency histograms.
//!
//! An hour of simulated periodic jobs yields hundreds of millions of latency
//! samples, too many to keep. [`Histogram`] is log-linear (HDR-style): exact
//! below 128 ns, then 128 sub-buckets per power of two, so a reported
//! quantile is within 0.8% of the true sample value (it reports the middle of
//! the bucket holding the rank, clamped to the exact min and max). Count,
//! min, max and mean are exact. Memory grows with the largest value seen
//! (about 4 KiB for values up to a second), not with the sample count.

use gang_core::Nanos;
use serde::Serialize;

const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;

/// A log-linear histogram of nanosecond values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    sum: u128,
    min: Nanos,
    max: Nanos,
}

fn index(v: Nanos) -> usize {
    if v < SUB {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // >= SUB_BITS
    let m = (v >> (e - SUB_BITS)) - SUB;
    (SUB + u64::from(e - SUB_BITS) * SUB + m) as usize
}

/// Lowest value and width of bucket `i`.
fn bucket(i: usize) -> (Nanos, Nanos) {
    let i = i as u64;
    if i < SUB {
        return (i, 1);
    }
    let e = (i - SUB) / SUB;
    let m = (i - SUB) % SUB;
    ((SUB + m) << e, 1 << e)
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one sample.
    pub fn record(&mut self, v: Nanos) {
        let i = index(v);
        if self.buckets.len() <= i {
            self.buckets.resize(i + 1, 0);
        }
        self.buckets[i] += 1;
        if self.count == 0 || v < self.min {
            self.min = v;
        }
        self.max = self.max.max(v);
        self.count += 1;
        self.sum += u128::from(v);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q` quantile (0..=1), within 0.8%; 0 when empty.
    pub fn quantile(&self, q: f64) -> Nanos {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, w) = bucket(i);
                return (lo + (w - 1) / 2).clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// Summary for reports.
    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            count: self.count,
            p50_ns: self.quantile(0.5),
            p99_ns: self.quantile(0.99),
            max_ns: self.max,
            mean_ns: if self.count == 0 {
                0
            } else {
                (self.sum / u128::from(self.count)) as u64
            },
        }
    }
}

/// Latency figures of one domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ns: Nanos,
    /// 99th percentile.
    pub p99_ns: Nanos,
    /// Largest.
    pub max_ns: Nanos,
    /// Mean.
    pub mean_ns: Nanos,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_line() {
        let mut expect = 0;
        for i in 0..(SUB as usize * 40) {
            let (lo, w) = bucket(i);
            assert_eq!(lo, expect, "bucket {i}");
            assert_eq!(index(lo), i);
            assert_eq!(index(lo + w - 1), i);
            expect = lo + w;
        }
        assert_eq!(index(u64::MAX), index(u64::MAX - 1));
    }

    #[test]
    fn quantiles_are_exact_for_small_values_and_close_for_large() {
        let mut h = Histogram::new();
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), 50);
        assert_eq!(h.quantile(0.99), 99);
        assert_eq!(h.summary().max_ns, 100);
        assert_eq!(h.summary().mean_ns, 50);
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 / 50_000_000.0 - 1.0).abs() < 0.008, "{p50}");
        assert!((p99 / 99_000_000.0 - 1.0).abs() < 0.008, "{p99}");
        assert_eq!(Histogram::new().summary(), LatencySummary::default());
    }
}
