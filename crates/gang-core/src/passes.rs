//! The decision of one cohort at one boundary: five passes in precedence
//! order, then the time of the cohort's next boundary.
//!
//! Each pass gives CPUs to one kind of member, and only to members not yet
//! dispatched, on CPUs not yet taken:
//! 1. [`Deciding::hold_nomux`]: no-mux domains;
//! 2. [`Deciding::hold_table_slots`]: the owners of the table segment's
//!    reservations;
//! 3. [`Deciding::run_event_triggered_early`]: ET domains outside their slot;
//! 4. [`Deciding::run_best_effort`]: BE domains, on unreserved CPUs only;
//! 5. [`Deciding::fill_holes`]: space fillers, on whatever is left.
//!
//! Passes 3 to 5 share one shape, [`Deciding::rank_then_take`]: rank the
//! candidates by a key (ties on domain id, so the order is total), then take
//! them in that order while their CPUs are still free.
//!
//! Invariants: a member is dispatched on all CPUs of its map or on none
//! (gang), and no CPU is taken twice; a lower class never takes a CPU that a
//! higher class is eligible for, because every decision starts from nothing
//! and runs the passes in precedence order. A decision is a function of the
//! state and `t` only (no clock, no I/O, integer arithmetic, total orders), and
//! it allocates nothing once [`Buffers`] have grown to the cohort's size.

use crate::cpuset::CpuSet;
use crate::model::{Class, DomainId, PoolConfig};
use crate::pool_state::{CohortState, Dispatch, DomainState};
use crate::table::Table;
use crate::time::{floor_to, Nanos};

/// Vectors and sets a decision needs, kept between decisions so that a
/// decision does not allocate.
#[derive(Debug, Clone, Default)]
pub(crate) struct Buffers {
    /// `how[j]`: how member `j` holds its CPUs after the last decision.
    pub(crate) how: Vec<Option<Dispatch>>,
    /// Candidates ranked by a time (ET window end, filler time).
    ranked_ns: Vec<(Nanos, DomainId, usize)>,
    /// Candidates ranked by BE virtual time.
    ranked_vt: Vec<(u128, DomainId, usize)>,
    /// CPUs held after the last decision.
    pub(crate) taken: CpuSet,
    /// CPUs the table segment reserved at the last decision (holes included,
    /// minus those of a lending owner that cannot run).
    pub(crate) reserved: CpuSet,
}

/// Decides `cohort` at boundary `t`: runs the five passes, records in each
/// member how it holds its CPUs now (counting new dispatches), and returns the
/// cohort's next boundary, which is at least one grain after `t` and never
/// after the end of the current table segment. The decision itself is left in
/// `buffers` ([`Buffers::how`], [`Buffers::taken`], [`Buffers::reserved`]).
pub(crate) fn decide_cohort(
    config: &PoolConfig,
    cohort: &CohortState,
    domains: &mut [DomainState],
    buffers: &mut Buffers,
    t: Nanos,
) -> Nanos {
    let Buffers {
        how,
        ranked_ns,
        ranked_vt,
        taken,
        reserved,
    } = buffers;
    how.clear();
    how.resize(cohort.idx.len(), None);
    taken.clear();
    reserved.clear();
    let mut deciding = Deciding {
        t,
        grain: config.grain,
        domains,
        idx: &cohort.idx,
        how,
        taken,
        reserved,
    };
    let mut next = Nanos::MAX;
    if cohort.has_nomux {
        deciding.hold_nomux();
    }
    if let Some(table) = &cohort.table {
        next = next.min(deciding.hold_table_slots(table, &cohort.members, config.lending));
    }
    if cohort.has_et {
        deciding.run_event_triggered_early(ranked_ns);
    }
    let be_waiting = deciding.run_best_effort(&cohort.be_order, config.be_slice, ranked_vt);
    let fillers_waiting = cohort.has_filler && deciding.fill_holes(&cohort.filler_order, ranked_ns);
    next = next.min(deciding.record());
    if be_waiting || fillers_waiting {
        next = next.min(t - t % config.be_slice + config.be_slice);
    }
    next.max(t + config.grain)
}

/// Which CPUs a pass may take, besides needing them all free of holders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Room {
    /// Any CPU nobody holds: free CPUs and holes in the table.
    Unheld,
    /// Only CPUs nobody holds that the table segment does not reserve.
    Unreserved,
}

impl Room {
    /// Whether all of `mask` is available under this rule.
    fn fits(self, mask: &CpuSet, taken: &CpuSet, reserved: &CpuSet) -> bool {
        match self {
            Room::Unheld => !mask.intersects(taken),
            Room::Unreserved => !mask.intersects(taken) && !mask.intersects(reserved),
        }
    }
}

/// One cohort's decision in progress: its members and what they hold so far.
struct Deciding<'a> {
    /// The boundary being decided.
    t: Nanos,
    /// The pool grain.
    grain: Nanos,
    /// All the pool's domains; only the members are touched.
    domains: &'a mut [DomainState],
    /// The members' indices into `domains`, in member (id) order.
    idx: &'a [usize],
    /// `how[j]`: how member `j` holds its CPUs so far (`None`: it does not).
    how: &'a mut [Option<Dispatch>],
    /// CPUs held by the members dispatched so far.
    taken: &'a mut CpuSet,
    /// CPUs the table segment at `t` reserves.
    reserved: &'a mut CpuSet,
}

impl Deciding<'_> {
    /// Pass 1: every no-mux domain that is runnable and active since `from`
    /// holds its CPUs. Admission keeps no-mux domains alone on their CPUs, so
    /// they never conflict.
    fn hold_nomux(&mut self) {
        for (j, &i) in self.idx.iter().enumerate() {
            let d = &self.domains[i];
            if d.placed.policy.class() == Class::NoMux && d.runnable() && d.active(self.t) {
                self.taken.union_with(&d.placed.mask);
                self.how[j] = Some(Dispatch::NoMux);
            }
        }
    }

    /// Pass 2: the table segment at `t` names the reservations that hold CPUs
    /// now. An owner that is runnable, active and has at least a grain of
    /// budget left holds its CPUs; otherwise its CPUs are a hole, reserved but
    /// not taken, except that the pool's lending owner, while it cannot run,
    /// leaves free CPUs instead. Returns the segment's end: the decision is
    /// never kept past it. The verified table never puts two reservations on
    /// one CPU in a segment, so owners never conflict.
    fn hold_table_slots(
        &mut self,
        table: &Table,
        members: &[DomainId],
        lending: Option<DomainId>,
    ) -> Nanos {
        let (t, grain) = (self.t, self.grain);
        let pos = (t / grain) % table.length();
        let seg = table.segment_at(pos);
        for &e in &seg.entries {
            let r = &table.reservations()[e as usize];
            let Ok(j) = members.binary_search(&r.owner) else {
                self.reserved.union_with(&r.cpus);
                continue;
            };
            let d = &mut self.domains[self.idx[j]];
            if d.runnable() && d.active(t) && d.budget_left(t) >= grain {
                self.taken.union_with(&d.placed.mask);
                self.how[j] = Some(Dispatch::Reserved);
            }
            // A lending owner that cannot run leaves free CPUs, not holes.
            if lending != Some(r.owner) || d.runnable() {
                self.reserved.union_with(&r.cpus);
            }
        }
        t + (seg.end - pos) * grain
    }

    /// Pass 3, the event trigger: ET domains that are runnable, active, not in
    /// their slot and have at least a grain of budget left run early on CPUs
    /// nobody holds (free or holes), earliest window end first. An ET domain
    /// that does not fit needs no boundary of its own: whatever holds its
    /// CPUs (a slot, an early run, a no-mux domain) ends at a time already
    /// among the cohort's next boundaries, or by an event.
    fn run_event_triggered_early(&mut self, ranked: &mut Vec<(Nanos, DomainId, usize)>) {
        let (t, grain) = (self.t, self.grain);
        self.rank_then_take(
            ranked,
            0..self.idx.len(),
            Room::Unheld,
            Dispatch::EventTriggered,
            |d| {
                if d.placed.policy.class() == Class::EventTriggered
                    && d.runnable()
                    && d.active(t)
                    && d.budget_left(t) >= grain
                {
                    let period = d.placed.policy.timing().map_or(0, |p| p.period);
                    Some(d.window_start + period)
                } else {
                    None
                }
            },
        );
    }

    /// Pass 4: BE domains take free, unreserved CPUs. BE slices are aligned
    /// on the pool's `be_slice` grid: between grid points a BE gang that held
    /// its CPUs at the last decision keeps them while it is runnable and none
    /// of them is now taken or reserved; then the runnable BE domains take
    /// what is left, lowest virtual time (CPU time ÷ weight) first. Never
    /// takes a reserved CPU, holes included (those are left to space
    /// fillers). Returns whether a runnable BE domain did not fit (it must be
    /// decided again at the next grid point).
    fn run_best_effort(
        &mut self,
        be_order: &[usize],
        be_slice: Nanos,
        ranked: &mut Vec<(u128, DomainId, usize)>,
    ) -> bool {
        let t = self.t;
        if !t.is_multiple_of(be_slice) {
            for (j, &i) in self.idx.iter().enumerate() {
                let d = &self.domains[i];
                if d.how == Some(Dispatch::BestEffort)
                    && d.runnable()
                    && Room::Unreserved.fits(&d.placed.mask, self.taken, self.reserved)
                {
                    self.taken.union_with(&d.placed.mask);
                    self.how[j] = Some(Dispatch::BestEffort);
                }
            }
        }
        self.rank_then_take(
            ranked,
            be_order.iter().copied(),
            Room::Unreserved,
            Dispatch::BestEffort,
            |d| d.runnable().then_some(d.vruntime),
        )
    }

    /// Pass 5: space fillers (any class with `sf`) that are runnable and
    /// active take what is left, holes included, least filler time first.
    /// The cohort's next boundary is never after the current segment's end,
    /// so a filler never outlives its hole. Returns whether a filler did not
    /// fit.
    fn fill_holes(
        &mut self,
        filler_order: &[usize],
        ranked: &mut Vec<(Nanos, DomainId, usize)>,
    ) -> bool {
        let t = self.t;
        self.rank_then_take(
            ranked,
            filler_order.iter().copied(),
            Room::Unheld,
            Dispatch::Filler,
            |d| (d.runnable() && d.active(t)).then_some(d.stats.filler_ns),
        )
    }

    /// The shape of passes 3 to 5. Among the members at `positions` that hold
    /// nothing yet, `rank` picks the candidates and gives each its key; the
    /// candidates are taken in (key, domain id) order, each on all of its CPUs
    /// if they are all in `room` and not taken, as `dispatch`. Returns whether
    /// a candidate did not fit.
    ///
    /// CPUs are only ever added to `taken`, so a candidate that does not fit
    /// before ranking never will: only those that fit are ranked (few, when
    /// most CPUs are held). `ranked` is a reused buffer.
    fn rank_then_take<K: Ord + Copy>(
        &mut self,
        ranked: &mut Vec<(K, DomainId, usize)>,
        positions: impl Iterator<Item = usize>,
        room: Room,
        dispatch: Dispatch,
        mut rank: impl FnMut(&mut DomainState) -> Option<K>,
    ) -> bool {
        let mut waiting = false;
        ranked.clear();
        for j in positions {
            if self.how[j].is_some() {
                continue;
            }
            let d = &mut self.domains[self.idx[j]];
            let Some(key) = rank(d) else {
                continue;
            };
            if room.fits(&d.placed.mask, self.taken, self.reserved) {
                ranked.push((key, d.id(), j));
            } else {
                waiting = true;
            }
        }
        // A total order: keys tie-break on domain id.
        ranked.sort_unstable();
        for &(_, _, j) in ranked.iter() {
            let mask = &self.domains[self.idx[j]].placed.mask;
            if room.fits(mask, self.taken, self.reserved) {
                self.taken.union_with(mask);
                self.how[j] = Some(dispatch);
            } else {
                waiting = true;
            }
        }
        waiting
    }

    /// After the passes: records in each member how it holds its CPUs now
    /// (a dispatch that starts or changes kind counts in its statistics), and
    /// returns the earliest time a member's state alone changes the decision:
    /// a `from` still ahead, the end of a running TT/ET budget (in whole
    /// grains), or the next window of a runnable TT/ET domain with less than
    /// a grain of budget left.
    fn record(&mut self) -> Nanos {
        let (t, grain) = (self.t, self.grain);
        let mut next = Nanos::MAX;
        for (j, &i) in self.idx.iter().enumerate() {
            let d = &mut self.domains[i];
            let how = self.how[j];
            if how.is_some() && how != d.how {
                d.stats.dispatches += 1;
            }
            d.how = how;
            let from = d.placed.policy.from();
            if from > t {
                next = next.min(from);
            }
            if let Some(timing) = d.placed.policy.timing() {
                let left = d.budget_left(t);
                match how {
                    Some(Dispatch::Reserved | Dispatch::EventTriggered) => {
                        next = next.min(t + floor_to(left, grain));
                    }
                    _ if d.runnable() && left < grain => {
                        next = next.min(d.window_start.max(timing.from) + timing.period);
                    }
                    _ => {}
                }
            }
        }
        next
    }
}
