//! The static table of a cohort's periodic reservations (TT and ET domains).
//!
//! **Problem.** Every TT (and ET) domain must get `active` grains in every
//! window `[phase + k·period, phase + k·period + window)` (the window is the
//! period, or `active` for an exact slot), with all of its CPUs at once, and
//! the check must be exact: summing utilisations per CPU is necessary but
//! not sufficient for gangs.
//!
//! **Approach.** Build, at admission, the cyclic schedule of all reservations
//! of a cohort over the hyperperiod `H = lcm(periods)` (in grains), then
//! *verify it independently*, window by window. Dispatch is a lookup in the
//! verified table, so admission is exact by construction: if the table
//! verifies, every reservation gets exactly `active` in every window; if it
//! cannot be built, the change is refused with the window that failed.
//!
//! **Algorithm.** Gang EDF in discrete grains: at each grain, jobs with work
//! left are taken in order of (deadline, wider gang first, owner id) and placed
//! when all their CPUs are free. Jobs whose window straddles the cycle's start
//! are not known in the first cycle, so the simulation runs cycle after cycle
//! until the state at a cycle's start repeats at its end (usually after one or
//! two cycles); that cycle is the steady table. A job that reaches its deadline
//! with work left is a miss: the set is refused, naming the owner, the window,
//! the CPU and the domain that held it.
//!
//! **Properties** (checked by [`Table::verify`], which [`Table::build`] calls):
//! in every segment no two entries share a CPU; every reservation owns exactly
//! `active` grains of each of its windows, counted cyclically. The table is
//! run-length encoded in segments of identical entry sets.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::cpuset::{CpuId, CpuSet};
use crate::model::DomainId;

/// A periodic reservation, in grains.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reservation {
    /// The domain it belongs to.
    pub owner: DomainId,
    /// All of its CPUs (its gang).
    pub cpus: CpuSet,
    /// Period, in grains (> 0).
    pub period: u64,
    /// Grains per window (1..=period).
    pub active: u64,
    /// First window start modulo the period, in grains (< period).
    pub phase: u64,
    /// How long each window lasts from its start, in grains
    /// (`active..=period`): the period for a slot anywhere in it, `active`
    /// for a slot at the phase exactly (an exact TT policy).
    pub window: u64,
}

/// A run of grains `[start, end)` of the cycle during which the same
/// reservations hold their CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// First grain (cycle position).
    pub start: u64,
    /// One past the last grain.
    pub end: u64,
    /// Indices into [`Table::reservations`], ascending.
    pub entries: Vec<u32>,
}

/// A verified cyclic table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    length: u64,
    reservations: Vec<Reservation>,
    segments: Vec<Segment>,
}

/// Why a table could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// The hyperperiod is longer than the configured limit (or overflows).
    #[error("the cohort's hyperperiod would be {grains} grains (limit {limit}); choose harmonic periods")]
    TooLong {
        /// The hyperperiod in grains (`u64::MAX` on overflow).
        grains: u64,
        /// The limit.
        limit: u64,
    },
    /// A reservation cannot get its time in one of its windows.
    #[error("domain {owner} gets only {got} of {needed} grains in its window [{window_start}, {window_end}) of the cycle: CPU {cpu} is held by domain {blocker}")]
    Missed {
        /// The domain that misses.
        owner: DomainId,
        /// Window start, in grains from the cycle start.
        window_start: u64,
        /// Window end, in grains (may exceed the cycle length when it wraps).
        window_end: u64,
        /// Grains it got.
        got: u64,
        /// Grains it needs.
        needed: u64,
        /// A CPU where it was blocked.
        cpu: CpuId,
        /// Who held that CPU the last time it was blocked.
        blocker: DomainId,
    },
    /// The schedule did not become periodic within the simulated cycles.
    #[error("the schedule did not settle into a cycle after {cycles} hyperperiods")]
    NoSteadyState {
        /// Cycles simulated.
        cycles: u32,
    },
    /// Verification found a defect (an internal error; the change is refused).
    #[error("table verification failed: {0}")]
    Verification(String),
}

const MAX_CYCLES: u32 = 8;

/// `lcm` of the periods, or `TooLong` past `limit`.
pub fn hyperperiod(periods: impl IntoIterator<Item = u64>, limit: u64) -> Result<u64, TableError> {
    let mut h: u64 = 1;
    for p in periods {
        let g = gcd(h, p);
        h = (h / g).checked_mul(p).ok_or(TableError::TooLong {
            grains: u64::MAX,
            limit,
        })?;
        if h > limit {
            return Err(TableError::TooLong { grains: h, limit });
        }
    }
    Ok(h)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Table {
    /// Builds and verifies the table for `reservations` (a table of length 1
    /// with no entries when there are none).
    pub fn build(reservations: Vec<Reservation>, limit: u64) -> Result<Table, TableError> {
        let length = hyperperiod(reservations.iter().map(|r| r.period), limit)?;
        let segments = Builder::new(&reservations, length).run()?;
        let table = Table {
            length,
            reservations,
            segments,
        };
        table.verify()?;
        Ok(table)
    }

    /// The cycle length in grains.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// The reservations, indexed by [`Segment::entries`].
    pub fn reservations(&self) -> &[Reservation] {
        &self.reservations
    }

    /// The segments, in order, covering `[0, length)`.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The segment containing cycle position `pos` (< length).
    pub fn segment_at(&self, pos: u64) -> &Segment {
        let i = self.segments.partition_point(|s| s.end <= pos);
        &self.segments[i.min(self.segments.len() - 1)]
    }

    /// The same table without the entries of owners for which `keep` is false
    /// (their slots become free). Exactness of the kept reservations is
    /// unaffected: their slots do not move.
    pub fn retain(&self, keep: impl Fn(DomainId) -> bool) -> Table {
        let mut segments: Vec<Segment> = Vec::with_capacity(self.segments.len());
        for seg in &self.segments {
            let entries: Vec<u32> = seg
                .entries
                .iter()
                .copied()
                .filter(|&e| keep(self.reservations[e as usize].owner))
                .collect();
            match segments.last_mut() {
                Some(last) if last.entries == entries => last.end = seg.end,
                _ => segments.push(Segment {
                    start: seg.start,
                    end: seg.end,
                    entries,
                }),
            }
        }
        Table {
            length: self.length,
            reservations: self.reservations.clone(),
            segments,
        }
    }

    /// Checks the two properties: no CPU conflicts in any segment, and every
    /// reservation present in the table owns exactly `active` grains in every
    /// one of its windows (cyclically). Reservations with no entry at all
    /// (removed by [`Table::retain`]) are skipped.
    pub fn verify(&self) -> Result<(), TableError> {
        let fail = |msg: String| Err(TableError::Verification(msg));
        let mut expected_start = 0;
        let mut owned: Vec<Vec<(u64, u64)>> = vec![Vec::new(); self.reservations.len()];
        for seg in &self.segments {
            if seg.start != expected_start || seg.end <= seg.start {
                return fail(format!(
                    "segments do not tile the cycle at grain {}",
                    seg.start
                ));
            }
            expected_start = seg.end;
            let mut busy = CpuSet::new();
            for &e in &seg.entries {
                let r = &self.reservations[e as usize];
                if busy.intersects(&r.cpus) {
                    return fail(format!(
                        "CPU conflict for domain {} at grain {}",
                        r.owner, seg.start
                    ));
                }
                busy.union_with(&r.cpus);
                owned[e as usize].push((seg.start, seg.end));
            }
        }
        if expected_start != self.length {
            return fail("segments do not cover the cycle".into());
        }
        for (i, r) in self.reservations.iter().enumerate() {
            let runs = &owned[i];
            if runs.is_empty() {
                continue;
            }
            let mut prefix = Vec::with_capacity(runs.len() + 1);
            prefix.push(0u64);
            for &(s, e) in runs {
                prefix.push(prefix.last().copied().unwrap_or(0) + (e - s));
            }
            let owned_before = |t: u64| -> u64 {
                // Grains owned in [0, t).
                let k = runs.partition_point(|&(s, _)| s < t);
                if k == 0 {
                    return 0;
                }
                let (s, e) = runs[k - 1];
                prefix[k - 1] + (t.min(e) - s)
            };
            let mut start = r.phase;
            while start < self.length + r.phase {
                let (a, b) = (start % self.length, start % self.length + r.window);
                let got = if b <= self.length {
                    owned_before(b) - owned_before(a)
                } else {
                    owned_before(self.length) - owned_before(a) + owned_before(b - self.length)
                };
                if got != r.active {
                    return fail(format!(
                        "domain {} owns {got} of {} grains in window [{a}, {b})",
                        r.owner, r.active
                    ));
                }
                start += r.period;
            }
        }
        Ok(())
    }
}

/// The gang-EDF simulation that produces a steady cycle.
struct Builder<'a> {
    res: &'a [Reservation],
    length: u64,
    width: Vec<usize>,
    total_cpus: usize,
    remaining: Vec<u64>,
    deadline: Vec<u64>,
    /// Last (cpu, blocker) seen when a job could not be placed.
    blocked_by: Vec<Option<(CpuId, DomainId)>>,
    releases: BinaryHeap<Reverse<(u64, usize)>>,
    /// Jobs with work left, in EDF order.
    ready: Vec<usize>,
}

impl<'a> Builder<'a> {
    fn new(res: &'a [Reservation], length: u64) -> Self {
        let mut union = CpuSet::new();
        res.iter().for_each(|r| union.union_with(&r.cpus));
        Builder {
            res,
            length,
            width: res.iter().map(|r| r.cpus.len()).collect(),
            total_cpus: union.len(),
            remaining: vec![0; res.len()],
            deadline: vec![0; res.len()],
            blocked_by: vec![None; res.len()],
            releases: res
                .iter()
                .enumerate()
                .map(|(i, r)| Reverse((r.phase, i)))
                .collect(),
            ready: Vec::new(),
        }
    }

    fn key(&self, i: usize) -> (u64, Reverse<usize>, DomainId, usize) {
        (
            self.deadline[i],
            Reverse(self.width[i]),
            self.res[i].owner,
            i,
        )
    }

    fn snapshot(&self, t: u64) -> Vec<(u64, u64)> {
        (0..self.res.len())
            .map(|i| {
                let rel = if self.remaining[i] > 0 {
                    self.deadline[i] - t
                } else {
                    0
                };
                (self.remaining[i], rel)
            })
            .collect()
    }

    fn run(mut self) -> Result<Vec<Segment>, TableError> {
        if self.res.is_empty() {
            return Ok(vec![Segment {
                start: 0,
                end: self.length,
                entries: Vec::new(),
            }]);
        }
        let mut busy = CpuSet::new();
        let mut placed: Vec<usize> = Vec::new();
        for cycle in 0..MAX_CYCLES {
            let base = u64::from(cycle) * self.length;
            let before = self.snapshot(base);
            let mut segments: Vec<Segment> = Vec::new();
            for t in base..base + self.length {
                self.check_deadlines(t)?;
                self.release_due(t)?;
                busy.clear();
                placed.clear();
                let mut busy_count = 0;
                for idx in 0..self.ready.len() {
                    let i = self.ready[idx];
                    let cpus = &self.res[i].cpus;
                    if busy_count == self.total_cpus || busy.intersects(cpus) {
                        if self.blocked_by[i].is_some() && busy_count == self.total_cpus {
                            // Every CPU is taken: skip the search, the blame
                            // for this window is already recorded.
                            continue;
                        }
                        let blocker = placed.iter().find(|&&j| self.res[j].cpus.intersects(cpus));
                        if let Some(&j) = blocker {
                            let cpu = self.res[j].cpus.intersection(cpus).first().unwrap_or(0);
                            self.blocked_by[i] = Some((cpu, self.res[j].owner));
                        }
                        continue;
                    }
                    busy.union_with(cpus);
                    busy_count += self.width[i];
                    placed.push(i);
                }
                for &i in &placed {
                    self.remaining[i] -= 1;
                }
                let remaining = &self.remaining;
                self.ready.retain(|&i| remaining[i] > 0);
                let mut entries: Vec<u32> = placed.iter().map(|&i| i as u32).collect();
                entries.sort_unstable();
                let pos = t - base;
                match segments.last_mut() {
                    Some(last) if last.entries == entries => last.end = pos + 1,
                    _ => segments.push(Segment {
                        start: pos,
                        end: pos + 1,
                        entries,
                    }),
                }
            }
            if self.snapshot(base + self.length) == before {
                return Ok(segments);
            }
        }
        Err(TableError::NoSteadyState { cycles: MAX_CYCLES })
    }

    /// A job still holding work at its deadline (before its next release,
    /// for a window shorter than the period) is a miss.
    fn check_deadlines(&self, t: u64) -> Result<(), TableError> {
        // `ready` is in deadline order: the first is the most urgent.
        let Some(&i) = self.ready.first() else {
            return Ok(());
        };
        if self.deadline[i] > t {
            return Ok(());
        }
        let r = &self.res[i];
        let (cpu, blocker) = self.blocked_by[i].unwrap_or((r.cpus.first().unwrap_or(0), r.owner));
        let start = (self.deadline[i] - r.window) % self.length;
        Err(TableError::Missed {
            owner: r.owner,
            window_start: start,
            window_end: start + r.window,
            got: r.active - self.remaining[i],
            needed: r.active,
            cpu,
            blocker,
        })
    }

    /// Releases the jobs whose window starts at `t`. (A job with work left
    /// then was a miss at its deadline, no later than this release:
    /// [`Builder::check_deadlines`] ran first.)
    fn release_due(&mut self, t: u64) -> Result<(), TableError> {
        while let Some(&Reverse((when, i))) = self.releases.peek() {
            if when != t {
                break;
            }
            self.releases.pop();
            let r = &self.res[i];
            debug_assert_eq!(self.remaining[i], 0, "a miss passed its deadline");
            self.remaining[i] = r.active;
            self.deadline[i] = t + r.window;
            self.blocked_by[i] = None;
            let key = self.key(i);
            let pos = self.ready.partition_point(|&j| self.key(j) < key);
            self.ready.insert(pos, i);
            self.releases.push(Reverse((t + r.period, i)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(owner: u32, cpus: &str, period: u64, active: u64, phase: u64) -> Reservation {
        Reservation {
            owner: DomainId(owner),
            cpus: CpuSet::parse(cpus, None).unwrap(),
            period,
            active,
            phase,
            window: period,
        }
    }

    /// An exact reservation: its slot at `phase` exactly.
    fn exact(owner: u32, cpus: &str, period: u64, active: u64, phase: u64) -> Reservation {
        Reservation {
            window: active,
            ..res(owner, cpus, period, active, phase)
        }
    }

    /// The grains of the cycle `owner` holds.
    fn held(t: &Table, owner: u32) -> Vec<u64> {
        (0..t.length())
            .filter(|&g| {
                t.segment_at(g)
                    .entries
                    .iter()
                    .any(|&e| t.reservations()[e as usize].owner == DomainId(owner))
            })
            .collect()
    }

    #[test]
    fn an_exact_slot_is_at_its_phase_whatever_else_the_table_holds() {
        // Alone, and with others whose windows cover its slot: always the
        // grains [phase, phase + active) of every period.
        for others in [
            vec![],
            vec![res(2, "0-1", 10, 4, 0)],
            vec![res(2, "0", 10, 4, 0), res(3, "1", 20, 9, 5)],
        ] {
            let mut all = vec![exact(1, "0-1", 10, 3, 6)];
            all.extend(others.clone());
            let t = Table::build(all, 10_000).expect("fits");
            let expect: Vec<u64> = (0..t.length())
                .filter(|g| (6..9).contains(&(g % 10)))
                .collect();
            assert_eq!(held(&t, 1), expect, "with {others:?}");
        }
    }

    #[test]
    fn two_exact_slots_that_overlap_on_a_cpu_are_refused_naming_the_window() {
        let e = Table::build(
            vec![exact(1, "0-1", 10, 3, 6), exact(2, "1", 20, 4, 5)],
            10_000,
        )
        .unwrap_err();
        match e {
            TableError::Missed { owner, needed, .. } => {
                assert!(owner == DomainId(1) || owner == DomainId(2), "{e}");
                assert!(needed == 3 || needed == 4);
            }
            other => panic!("{other}"),
        }
        // On other CPUs, or at other phases: both fit.
        Table::build(
            vec![exact(1, "0", 10, 3, 6), exact(2, "1", 20, 4, 5)],
            10_000,
        )
        .expect("disjoint CPUs");
        Table::build(
            vec![exact(1, "0-1", 10, 3, 6), exact(2, "1", 20, 4, 0)],
            10_000,
        )
        .expect("disjoint times");
    }

    #[test]
    fn builds_the_seed_set_on_four_cpus() {
        // TT 15/150, TT 40/200, ET 10/100, ET 60/200, all on CPUs 0-3.
        let table = Table::build(
            vec![
                res(1, "0-3", 150, 15, 0),
                res(2, "0-3", 200, 40, 0),
                res(3, "0-3", 100, 10, 0),
                res(4, "0-3", 200, 60, 0),
            ],
            1 << 20,
        )
        .unwrap();
        assert_eq!(table.length(), 600);
        table.verify().unwrap();
    }

    #[test]
    fn wide_and_narrow_gangs_share_cpus_exactly() {
        let table = Table::build(
            vec![
                res(1, "0-1", 10, 5, 0),
                res(2, "0", 10, 5, 3),
                res(3, "1", 5, 2, 1),
            ],
            1 << 20,
        )
        .unwrap();
        table.verify().unwrap();
        let total: u64 = table
            .segments()
            .iter()
            .filter(|s| s.entries.contains(&0))
            .map(|s| s.end - s.start)
            .sum();
        assert_eq!(total, 5);
    }

    #[test]
    fn refuses_overload_naming_the_window_and_blocker() {
        let err = Table::build(
            vec![res(1, "0-1", 10, 6, 0), res(2, "1", 10, 5, 0)],
            1 << 20,
        )
        .unwrap_err();
        match err {
            TableError::Missed {
                owner,
                got,
                needed,
                cpu,
                blocker,
                ..
            } => {
                assert_eq!((owner, needed, cpu), (DomainId(2), 5, 1));
                assert_eq!(blocker, DomainId(1));
                assert!(got < needed);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn refuses_long_hyperperiods() {
        let err =
            Table::build(vec![res(1, "0", 997, 1, 0), res(2, "0", 991, 1, 0)], 10_000).unwrap_err();
        assert_eq!(
            err,
            TableError::TooLong {
                grains: 997 * 991,
                limit: 10_000
            }
        );
    }

    #[test]
    fn phases_wrap_around_the_cycle() {
        let table =
            Table::build(vec![res(1, "0", 10, 9, 7), res(2, "0", 20, 2, 3)], 1 << 20).unwrap();
        table.verify().unwrap();
        assert_eq!(table.length(), 20);
    }

    #[test]
    fn retain_frees_slots_and_keeps_the_rest_exact() {
        let table =
            Table::build(vec![res(1, "0", 10, 4, 0), res(2, "0", 10, 4, 0)], 1 << 20).unwrap();
        let only_two = table.retain(|o| o == DomainId(2));
        only_two.verify().unwrap();
        assert!(only_two.segments().iter().all(|s| !s.entries.contains(&0)));
    }

    #[test]
    fn verify_catches_a_tampered_table() {
        let mut table = Table::build(vec![res(1, "0", 10, 4, 0)], 1 << 20).unwrap();
        table.reservations[0].active = 5;
        assert!(matches!(table.verify(), Err(TableError::Verification(_))));
    }
}
