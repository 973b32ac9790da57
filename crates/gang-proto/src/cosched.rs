//! A domain's co-scheduling metrics on the wire (`list`, `top`,
//! `sched-gang -v`): `gang_core::cosched`'s numbers and where the threads'
//! states came from. Additive within API version 2 (absent fields default).

use serde::{Deserialize, Serialize};

/// Where a domain's co-scheduling metrics come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CoschedSource {
    /// The kernel's scheduler events (sched_switch, sched_waking): exact.
    Events,
    /// `/proc` schedstat sampled: totals exact, overlaps estimated.
    Sampled,
}

/// A domain's co-scheduling metrics (`gang_core::cosched`): computed the
/// same way for every domain, from when its threads really ran.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CoschedInfo {
    /// The metrics (shares are fractions, times ns).
    #[serde(flatten)]
    pub metrics: gang_core::cosched::CoschedMetrics,
    /// Where the threads' states came from.
    pub source: CoschedSource,
}
