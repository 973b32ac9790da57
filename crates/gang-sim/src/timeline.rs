//! The simulator's timelines: what a run recorded inside its window
//! ([`Timeline`]: per scheduler, the intervals a vCPU *ran* on a CPU,
//! dispatched and runnable, and the instants of gang decisions that changed
//! a dispatch), and their translation into `gang_timeline`'s model, which
//! writes the SVG and Chrome files for the simulator exactly as it does
//! for the live runtime.
//!
//! In the translation a scheduler is a group (`gang`, `host`), the pool's
//! CPUs its tracks, scenario domain `d` the domain of id `d + 1` (the id
//! the gang model gives it) and colour `d`; times are virtual nanoseconds
//! since the run's start; every slot is on time (`late` 0). Output is
//! deterministic: the same run gives the same bytes.

use gang_core::{CpuId, Nanos};
use gang_timeline::{Domain, Group, Instant, InstantKind, Meta, Slice};

use crate::scenario::SchedKind;
use crate::world::Interval;

/// What one run contributes to the picture.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Per run: scheduler, running intervals, decision marks.
    pub runs: Vec<(SchedKind, Vec<TimelineInterval>, Vec<Nanos>)>,
    /// The recorded window.
    pub window: (Nanos, Nanos),
}

/// A running interval of a domain's vCPU on a CPU (CPU index, not id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineInterval {
    /// CPU index in the pool (0-based, ascending ids).
    pub cpu: u32,
    /// Start.
    pub start: Nanos,
    /// End.
    pub end: Nanos,
    /// Domain index.
    pub dom: u32,
    /// The vCPU's index in its domain.
    pub vcpu: u32,
}

impl From<Interval> for TimelineInterval {
    fn from(i: Interval) -> Self {
        TimelineInterval {
            cpu: i.cpu,
            start: i.start,
            end: i.end,
            dom: i.dom,
            vcpu: i.vcpu,
        }
    }
}

/// How a simulated pool is described: its title, CPU ids (tracks), domain
/// names (scenario order), grain and the pairs for the Chrome file's
/// metadata (seed, scenario file).
#[derive(Debug, Clone, Copy)]
pub struct Describe<'a> {
    /// The scenario's name.
    pub title: &'a str,
    /// The pool's CPU ids, ascending.
    pub cpus: &'a [CpuId],
    /// The domains' names.
    pub names: &'a [String],
    /// The pool's grain.
    pub grain: Nanos,
    /// More metadata.
    pub extra: &'a [(String, String)],
}

/// The run's timeline in the writer's model.
pub fn to_model(t: &Timeline, d: &Describe<'_>) -> gang_timeline::Timeline {
    let id_of = |idx: u32| d.cpus.get(idx as usize).copied().unwrap_or(idx);
    let groups = t
        .runs
        .iter()
        .map(|(kind, intervals, marks)| Group {
            name: kind.to_string(),
            cpus: d.cpus.to_vec(),
            slices: intervals
                .iter()
                .map(|i| Slice {
                    cpu: id_of(i.cpu),
                    domain: i.dom + 1,
                    vcpu: Some(i.vcpu),
                    start: i.start,
                    end: i.end,
                    late: 0,
                })
                .collect(),
            instants: marks
                .iter()
                .map(|&at| Instant {
                    at,
                    cpu: None,
                    kind: InstantKind::Decision,
                    text: "gang decision".into(),
                })
                .collect(),
        })
        .collect();
    gang_timeline::Timeline {
        meta: Meta {
            title: d.title.to_string(),
            host: None,
            pool: format!(
                "simulated, cpus {}",
                d.cpus.iter().copied().collect::<gang_core::CpuSet>()
            ),
            clock: "virtual time (simulated): ns since the run's start".into(),
            grain_ns: d.grain,
            cycle_ns: None,
            window: t.window,
            extra: d.extra.to_vec(),
        },
        domains: d
            .names
            .iter()
            .enumerate()
            .map(|(k, name)| Domain {
                id: k as u32 + 1,
                name: name.clone(),
            })
            .collect(),
        groups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_become_groups_with_cpu_ids_domain_ids_and_decisions() {
        let iv = |cpu, start, end, dom, vcpu| TimelineInterval {
            cpu,
            start,
            end,
            dom,
            vcpu,
        };
        let t = Timeline {
            runs: vec![
                (
                    SchedKind::Gang,
                    vec![iv(0, 0, 5, 0, 0), iv(1, 0, 5, 0, 1), iv(1, 5, 10, 1, 0)],
                    vec![0, 5, 20],
                ),
                (SchedKind::Host, vec![], vec![]),
            ],
            window: (0, 20),
        };
        let names = vec!["a".to_string(), "b<".to_string()];
        let m = to_model(
            &t,
            &Describe {
                title: "demo",
                cpus: &[4, 5],
                names: &names,
                grain: 1_000_000,
                extra: &[],
            },
        );
        m.check().unwrap();
        assert_eq!(m.groups.len(), 2);
        assert_eq!(m.groups[0].name, "gang");
        assert_eq!(m.groups[0].slices[2].cpu, 5);
        assert_eq!(m.groups[0].slices[2].domain, 2);
        assert_eq!(m.groups[0].slices[1].vcpu, Some(1));
        assert_eq!(
            m.instants_in(&m.groups[0]).len(),
            3,
            "the last mark is kept"
        );
        assert_eq!(m.meta.pool, "simulated, cpus 4-5");
        let svg = gang_timeline::svg::render(&m);
        assert!(svg.contains("CPU 4") && svg.contains("b&lt;"));
    }
}
