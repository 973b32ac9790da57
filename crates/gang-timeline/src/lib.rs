//! # gang-timeline: one writer for gang's timelines
//!
//! The live runtime (`gang trace --format chrome|svg`, from the daemon's
//! switch log) and the simulator (`gang sim --chrome|--svg`, from its
//! recorded intervals) both describe what ran where as a [`Timeline`], a
//! neutral model, and this crate writes it:
//!
//! - [`chrome::write`]: the Trace Event JSON format that Perfetto's UI
//!   (ui.perfetto.dev) and Chrome's viewer (chrome://tracing) open: a
//!   process per [`Group`] (a pool, or a simulated scheduler), a thread per
//!   physical CPU, a complete event per slot a vCPU held a CPU, instant
//!   events for pauses, migrations, admission changes, late switches and
//!   gang decisions, and the metadata (host, pool, clock, grain, window).
//! - [`perfetto::write`]: the same in Perfetto's own protobuf format (a
//!   track per group, a child track per CPU, slice begin/end and instant
//!   track events), for traces too large for JSON.
//! - [`svg::render`]: an SVG picture of the same, one block per group, one
//!   lane per CPU, a rectangle per slot coloured by domain, ticks for the
//!   instants, a time axis and a legend.
//!
//! **Invariants.** Times are nanoseconds on the clock that
//! [`Meta::clock`] names; only the window `[Meta::window.0,
//! Meta::window.1)` is written (instants at its end too), slots clipped to
//! it (a slot still running, `end == u64::MAX`, ends at the window's end).
//! Thread ids in Chrome files are CPU ids plus one ([`chrome::tid`]). A
//! slot's drawn start is its
//! planned start plus how late the switch was ([`Slice::real_start`]), never
//! after its end. [`Timeline::check`] refuses slots that overlap on one CPU
//! of one group, slots and instants on CPUs the group does not have, and
//! slots of domains the timeline does not name; [`chrome::write`] calls it,
//! so a written Chrome file never has two slices at once on a CPU. Output is
//! deterministic: the same timeline gives the same bytes.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod chrome;
pub mod perfetto;
pub mod svg;

use std::fmt;

/// Nanoseconds.
pub type Nanos = u64;

/// Why a timeline cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    /// The window is empty or reversed.
    #[error("the window {start}..{end} ns is empty")]
    EmptyWindow {
        /// Its start.
        start: Nanos,
        /// Its end.
        end: Nanos,
    },
    /// Two slots overlap on one CPU.
    #[error(
        "{group}: CPU {cpu}: a slot of domain {a} ({a_start}..{a_end} ns) overlaps one of domain \
         {b} from {b_start} ns"
    )]
    Overlap {
        /// The group.
        group: String,
        /// The CPU.
        cpu: u32,
        /// The earlier slot's domain id.
        a: u32,
        /// Its start.
        a_start: Nanos,
        /// Its end.
        a_end: Nanos,
        /// The later slot's domain id.
        b: u32,
        /// Its start.
        b_start: Nanos,
    },
    /// A slot or instant on a CPU its group does not list.
    #[error("{group}: CPU {cpu} is not one of the group's CPUs")]
    UnknownCpu {
        /// The group.
        group: String,
        /// The CPU.
        cpu: u32,
    },
    /// A slot of a domain the timeline does not name.
    #[error("{group}: a slot of domain {domain}, which the timeline does not name")]
    UnknownDomain {
        /// The group.
        group: String,
        /// The domain id.
        domain: u32,
    },
    /// JSON serialisation failed.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// What the timeline is of, and on which clock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// A title (the scenario's name, `pool P on host H`).
    pub title: String,
    /// The host whose runtime recorded it (`None`: simulated).
    pub host: Option<String>,
    /// The pool.
    pub pool: String,
    /// The clock the times are on, in words (`pool time: ns since ...`).
    pub clock: String,
    /// The pool's grain, ns.
    pub grain_ns: Nanos,
    /// The cycle of a pool on a shared clock, ns.
    pub cycle_ns: Option<Nanos>,
    /// The window written, `[start, end)` ns.
    pub window: (Nanos, Nanos),
    /// More key/value pairs for the Chrome file's `otherData` (the pool's
    /// epoch, base, seed, ...), in order.
    pub extra: Vec<(String, String)>,
}

/// A domain that slots name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// Its id.
    pub id: u32,
    /// Its name.
    pub name: String,
}

/// A run of a pool: the live pool, or one simulated scheduler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// Its name (`pool Gang`, `gang`, `host`).
    pub name: String,
    /// Its physical CPUs, ascending: one track each.
    pub cpus: Vec<u32>,
    /// The slots.
    pub slices: Vec<Slice>,
    /// The instants.
    pub instants: Vec<Instant>,
}

/// A vCPU held a CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    /// The physical CPU.
    pub cpu: u32,
    /// The domain's id.
    pub domain: u32,
    /// The vCPU (`None`: not known).
    pub vcpu: Option<u32>,
    /// Planned start (the boundary), ns.
    pub start: Nanos,
    /// End, ns (`u64::MAX`: still running).
    pub end: Nanos,
    /// How late the switch that started it was, ns.
    pub late: Nanos,
}

impl Slice {
    /// When it really started: planned start plus lateness, never past its
    /// end.
    pub fn real_start(&self) -> Nanos {
        self.start.saturating_add(self.late).min(self.end)
    }
}

/// What an instant is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InstantKind {
    /// A domain was paused.
    Pause,
    /// A domain was unpaused.
    Unpause,
    /// A domain's vCPUs moved (another CPU map, another pool).
    Migrate,
    /// A domain was admitted, removed or given new parameters (or refused).
    Admission,
    /// A switch later than the threshold the writer of the timeline chose.
    LateSwitch,
    /// The scheduler decided something (simulated runs).
    Decision,
}

impl InstantKind {
    /// Every kind, in legend order.
    pub const ALL: [InstantKind; 6] = [
        InstantKind::Pause,
        InstantKind::Unpause,
        InstantKind::Migrate,
        InstantKind::Admission,
        InstantKind::LateSwitch,
        InstantKind::Decision,
    ];

    /// Its name in files (`late-switch`).
    pub fn as_str(self) -> &'static str {
        match self {
            InstantKind::Pause => "pause",
            InstantKind::Unpause => "unpause",
            InstantKind::Migrate => "migrate",
            InstantKind::Admission => "admission",
            InstantKind::LateSwitch => "late-switch",
            InstantKind::Decision => "decision",
        }
    }
}

impl fmt::Display for InstantKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Something that happened at one instant, on one CPU or the whole group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instant {
    /// When, ns.
    pub at: Nanos,
    /// On which CPU (`None`: the whole group).
    pub cpu: Option<u32>,
    /// What.
    pub kind: InstantKind,
    /// In words (`domain 3 (a) paused`).
    pub text: String,
}

/// A timeline: metadata, the domains named, and one group per run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timeline {
    /// What and which clock.
    pub meta: Meta,
    /// The domains, in legend and colour order.
    pub domains: Vec<Domain>,
    /// The runs.
    pub groups: Vec<Group>,
}

impl Timeline {
    /// The slots of a group inside the window, clipped to it, by CPU then
    /// start.
    pub fn clipped(&self, group: &Group) -> Vec<Slice> {
        let (a, b) = self.meta.window;
        let mut out: Vec<Slice> = group
            .slices
            .iter()
            .filter(|s| s.start < b && s.end > a && s.end > s.start)
            .map(|s| {
                let mut c = *s;
                if c.start < a {
                    c.late = c.late.saturating_sub(a - c.start);
                    c.start = a;
                }
                c.end = c.end.min(b);
                c
            })
            .collect();
        out.sort_by_key(|s| (s.cpu, s.start, s.end));
        out
    }

    /// The instants of a group inside the window (its end included: a
    /// decision at the end of a simulated window is drawn), by time.
    pub fn instants_in(&self, group: &Group) -> Vec<Instant> {
        let (a, b) = self.meta.window;
        let mut out: Vec<Instant> = group
            .instants
            .iter()
            .filter(|i| i.at >= a && i.at <= b)
            .cloned()
            .collect();
        out.sort_by_key(|i| (i.at, i.cpu, i.kind));
        out
    }

    /// A domain's position (its colour), if named.
    pub fn domain_index(&self, id: u32) -> Option<usize> {
        self.domains.iter().position(|d| d.id == id)
    }

    /// Checks the invariants a writer relies on (module docs).
    pub fn check(&self) -> Result<(), TimelineError> {
        let (start, end) = self.meta.window;
        if start >= end {
            return Err(TimelineError::EmptyWindow { start, end });
        }
        for g in &self.groups {
            let mut prev: Option<Slice> = None;
            for s in self.clipped(g) {
                if !g.cpus.contains(&s.cpu) {
                    return Err(TimelineError::UnknownCpu {
                        group: g.name.clone(),
                        cpu: s.cpu,
                    });
                }
                if self.domain_index(s.domain).is_none() {
                    return Err(TimelineError::UnknownDomain {
                        group: g.name.clone(),
                        domain: s.domain,
                    });
                }
                if let Some(p) = prev.filter(|p| p.cpu == s.cpu && s.real_start() < p.end) {
                    return Err(TimelineError::Overlap {
                        group: g.name.clone(),
                        cpu: s.cpu,
                        a: p.domain,
                        a_start: p.real_start(),
                        a_end: p.end,
                        b: s.domain,
                        b_start: s.real_start(),
                    });
                }
                prev = Some(s);
            }
            if let Some(cpu) = g
                .instants
                .iter()
                .filter_map(|i| i.cpu)
                .find(|c| !g.cpus.contains(c))
            {
                return Err(TimelineError::UnknownCpu {
                    group: g.name.clone(),
                    cpu,
                });
            }
        }
        Ok(())
    }
}

/// A time for people: `1.500s`, `12.50ms`, `40.0us`, `15ns`.
pub fn human(ns: Nanos) -> String {
    let f = ns as f64;
    if ns >= 3600 * gang_core::SEC {
        format!("{:.2}h", f / 3600e9)
    } else if ns >= gang_core::SEC {
        format!("{:.3}s", f / 1e9)
    } else if ns >= gang_core::MS {
        format!("{:.2}ms", f / 1e6)
    } else if ns >= gang_core::US {
        format!("{:.1}us", f / 1e3)
    } else {
        format!("{ns}ns")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Two 2-vCPU domains alternating on CPUs 2 and 3 every 10 ms, a
    /// pause and a late switch.
    pub(crate) fn sample() -> Timeline {
        let mut slices = Vec::new();
        for k in 0..6u64 {
            let dom = if k % 2 == 0 { 1 } else { 2 };
            for (v, cpu) in [(0, 2), (1, 3)] {
                slices.push(Slice {
                    cpu,
                    domain: dom,
                    vcpu: Some(v),
                    start: k * 10_000_000,
                    end: if k == 5 {
                        u64::MAX
                    } else {
                        (k + 1) * 10_000_000
                    },
                    late: if v == 1 { 3_000 } else { 1_000 },
                });
            }
        }
        Timeline {
            meta: Meta {
                title: "pool \"P\" <x>".into(),
                host: Some("h1".into()),
                pool: "P".into(),
                clock: "pool time".into(),
                grain_ns: 1_000_000,
                cycle_ns: None,
                window: (5_000_000, 55_000_000),
                extra: vec![("epoch_mono_ns".into(), "42".into())],
            },
            domains: vec![
                Domain {
                    id: 1,
                    name: "a \"quoted\" <&>".into(),
                },
                Domain {
                    id: 2,
                    name: "b\\c\n".into(),
                },
            ],
            groups: vec![Group {
                name: "pool P".into(),
                cpus: vec![2, 3],
                slices,
                instants: vec![
                    Instant {
                        at: 20_000_000,
                        cpu: None,
                        kind: InstantKind::Pause,
                        text: "domain 1 (a) paused".into(),
                    },
                    Instant {
                        at: 30_000_000,
                        cpu: Some(3),
                        kind: InstantKind::LateSwitch,
                        text: "switch 80us late".into(),
                    },
                    Instant {
                        at: 1_000,
                        cpu: None,
                        kind: InstantKind::Admission,
                        text: "outside the window".into(),
                    },
                ],
            }],
        }
    }

    #[test]
    fn clipping_keeps_the_window_and_ends_open_slots_there() {
        let t = sample();
        let c = t.clipped(&t.groups[0]);
        assert_eq!(
            c.len(),
            12,
            "the first and last slots are clipped, not dropped"
        );
        assert!(c
            .iter()
            .all(|s| s.start >= 5_000_000 && s.end <= 55_000_000));
        assert_eq!(c[0].start, 5_000_000);
        assert_eq!(c[0].late, 0, "lateness before the window is cut off too");
        assert_eq!(t.instants_in(&t.groups[0]).len(), 2);
        t.check().unwrap();
    }

    #[test]
    fn check_refuses_overlaps_unknown_cpus_domains_and_empty_windows() {
        let mut t = sample();
        t.groups[0].slices.push(Slice {
            cpu: 2,
            domain: 2,
            vcpu: Some(0),
            start: 12_000_000,
            end: 14_000_000,
            late: 0,
        });
        let e = t.check().unwrap_err().to_string();
        assert!(e.contains("CPU 2") && e.contains("overlaps"), "{e}");

        let mut t = sample();
        t.groups[0].slices[0].cpu = 7;
        assert!(matches!(
            t.check(),
            Err(TimelineError::UnknownCpu { cpu: 7, .. })
        ));
        let mut t = sample();
        t.groups[0].slices[0].domain = 9;
        assert!(matches!(
            t.check(),
            Err(TimelineError::UnknownDomain { domain: 9, .. })
        ));
        let mut t = sample();
        t.groups[0].instants[1].cpu = Some(5);
        assert!(t.check().is_err());
        let mut t = sample();
        t.meta.window = (5, 5);
        assert!(matches!(t.check(), Err(TimelineError::EmptyWindow { .. })));
    }

    #[test]
    fn a_late_start_never_passes_the_end() {
        let s = Slice {
            cpu: 0,
            domain: 1,
            vcpu: None,
            start: 10,
            end: 20,
            late: 50,
        };
        assert_eq!(s.real_start(), 20);
        assert_eq!(human(1_500_000_000), "1.500s");
        assert_eq!(human(40_000), "40.0us");
    }
}
