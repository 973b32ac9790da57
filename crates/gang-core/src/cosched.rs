//! Co-scheduling metrics of one domain, from what its vCPUs did.
//!
//! The input is, per vCPU of one domain, the intervals in which it was
//! [`VcpuState::Running`] on a CPU, [`VcpuState::Runnable`] (wanted a CPU
//! and had none: preempted, or woken and waiting) or [`VcpuState::Blocked`]
//! (waiting for something else: sleeping, or frozen by the gang runtime).
//! Time a vCPU's intervals do not cover in the window counts as blocked.
//! The host measures the intervals from the kernel's scheduler events
//! (`gang_host::sched_events`) or from the gates' traces; the simulator
//! knows them exactly. Both call [`CoschedMetrics::compute`], so a
//! simulation and a host run compare column by column.
//!
//! The metrics (all shares are fractions in `[0, 1]`, times in ns):
//!
//! - `all_running`: time **all** vCPUs ran at once ÷ window (the gang's
//!   useful co-scheduled time).
//! - `co_stop`: time at least one vCPU ran while at least one sibling was
//!   runnable but not running ÷ window (the co-stop analogue of VMware's
//!   %CSTP: a spin or barrier partner waits for a sibling that the
//!   scheduler holds). Zero when the vCPUs always change state together.
//! - `ready`: runnable-but-not-running time summed over vCPUs ÷ (vCPUs ×
//!   window) (%RDY).
//! - `running`, `blocked`: the same for the other two states; `running +
//!   ready + blocked = 1`.
//! - `skew_p50_ns`, `skew_p99_ns`: co-start skew of the domain's gang
//!   starts (last minus first vCPU to start running), see [`co_start_skews`];
//!   `skew_samples` of them.
//! - `late_switches`: passed through from the caller (switches its runtime
//!   made late), so a report has everything in one struct.
//!
//! Pure: no I/O, no clock. Invariants (checked by the property tests): every
//! share is in `[0, 1]`; `all_running` ≤ every vCPU's own running share;
//! `all_running + co_stop` ≤ 1; `co_stop` is 0 when all vCPUs have the same
//! state at every instant.

use crate::time::Nanos;

/// What a vCPU was doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VcpuState {
    /// On a CPU.
    Running,
    /// Wanted a CPU and had none (preempted, or woken and not yet run).
    Runnable,
    /// Waiting for something other than a CPU (sleeping, frozen).
    Blocked,
}

/// One interval `[start, end)` of a vCPU in one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StateSpan {
    /// Start, ns (any epoch, the same for all spans and the window).
    pub start: Nanos,
    /// End (exclusive), ns.
    pub end: Nanos,
    /// The state.
    pub state: VcpuState,
}

impl StateSpan {
    /// A span.
    pub fn new(start: Nanos, end: Nanos, state: VcpuState) -> StateSpan {
        StateSpan { start, end, state }
    }
}

/// The co-scheduling metrics of one domain over a window (module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CoschedMetrics {
    /// Window length, ns.
    pub window_ns: Nanos,
    /// vCPUs counted.
    pub vcpus: u32,
    /// Share of the window in which all vCPUs ran at once.
    pub all_running: f64,
    /// Share of the window in which some vCPU ran while a sibling was
    /// runnable but not running (co-stop).
    pub co_stop: f64,
    /// Runnable-but-not-running time ÷ (vCPUs × window) (ready time).
    pub ready: f64,
    /// Running time ÷ (vCPUs × window).
    pub running: f64,
    /// Blocked time ÷ (vCPUs × window).
    pub blocked: f64,
    /// Median co-start skew of the gang starts, ns (0 without samples).
    pub skew_p50_ns: Nanos,
    /// 99th percentile co-start skew, ns (0 without samples).
    pub skew_p99_ns: Nanos,
    /// Gang starts the skew percentiles are taken over.
    pub skew_samples: u32,
    /// Late switches, as the caller counted them.
    pub late_switches: u64,
}

/// A vCPU's state at `t`: the first span of `spans` (sorted by start)
/// holding it, else blocked. `cursor` walks forward with `t`.
fn state_at(spans: &[StateSpan], cursor: &mut usize, t: Nanos) -> VcpuState {
    while *cursor < spans.len() && spans[*cursor].end <= t {
        *cursor += 1;
    }
    // Spans may overlap (a caller's rounding): look at the few that start
    // before t from the cursor on.
    spans[*cursor..]
        .iter()
        .take_while(|s| s.start <= t)
        .find(|s| s.end > t)
        .map_or(VcpuState::Blocked, |s| s.state)
}

/// Per-vCPU spans sorted by start, clipped to the window, empty ones gone.
fn clipped(vcpus: &[Vec<StateSpan>], window: (Nanos, Nanos)) -> Vec<Vec<StateSpan>> {
    vcpus
        .iter()
        .map(|spans| {
            let mut v: Vec<StateSpan> = spans
                .iter()
                .map(|s| StateSpan::new(s.start.max(window.0), s.end.min(window.1), s.state))
                .filter(|s| s.start < s.end)
                .collect();
            v.sort_by_key(|s| (s.start, s.end));
            v
        })
        .collect()
}

/// The elementary intervals of the window (between consecutive span
/// edges) with each vCPU's state in them.
fn sweep(vcpus: &[Vec<StateSpan>], window: (Nanos, Nanos)) -> Vec<(Nanos, Nanos, Vec<VcpuState>)> {
    let mut edges: Vec<Nanos> = vec![window.0, window.1];
    for s in vcpus.iter().flatten() {
        edges.push(s.start);
        edges.push(s.end);
    }
    edges.sort_unstable();
    edges.dedup();
    let mut cursors = vec![0usize; vcpus.len()];
    edges
        .windows(2)
        .map(|w| {
            let states = vcpus
                .iter()
                .zip(cursors.iter_mut())
                .map(|(spans, c)| state_at(spans, c, w[0]))
                .collect();
            (w[0], w[1], states)
        })
        .collect()
}

/// Co-start skews of one domain, ns: one per gang start.
///
/// With `slots` (the `[start, end)` intervals the scheduler gave the
/// domain): per slot in which every vCPU starts running, the last minus the
/// first vCPU's first run start in it; a slot in which a vCPU was already
/// running at its start (the domain kept its CPUs across a boundary) is no
/// gang start and is skipped. Without slots: a gang start opens when a vCPU
/// starts running while none runs, and closes when none runs again; it
/// counts when every vCPU started in it.
pub fn co_start_skews(
    vcpus: &[Vec<StateSpan>],
    window: (Nanos, Nanos),
    slots: Option<&[(Nanos, Nanos)]>,
) -> Vec<Nanos> {
    let spans = clipped(vcpus, window);
    if spans.len() < 2 {
        return Vec::new();
    }
    let runs: Vec<Vec<StateSpan>> = spans
        .iter()
        .map(|v| {
            v.iter()
                .filter(|s| s.state == VcpuState::Running)
                .copied()
                .collect()
        })
        .collect();
    let mut out = Vec::new();
    match slots {
        Some(slots) => {
            for &(a, b) in slots
                .iter()
                .filter(|(a, _)| *a >= window.0 && *a < window.1)
            {
                let mut starts = Vec::with_capacity(runs.len());
                for r in &runs {
                    if r.iter().any(|s| s.start < a && s.end > a) {
                        break;
                    }
                    match r.iter().find(|s| s.start >= a && s.start < b) {
                        Some(s) => starts.push(s.start),
                        None => break,
                    }
                }
                if starts.len() == runs.len() {
                    let (lo, hi) = min_max(&starts);
                    out.push(hi - lo);
                }
            }
        }
        None => {
            let mut first: Vec<Option<Nanos>> = vec![None; runs.len()];
            let mut open = false;
            // A vCPU already running at the window's start is not seen
            // starting: skip until none runs.
            let mut skipping = true;
            for (a, _, states) in sweep(&runs, window) {
                let any = states.contains(&VcpuState::Running);
                if !any {
                    skipping = false;
                    if open && first.iter().all(Option::is_some) {
                        let starts: Vec<Nanos> = first.iter().flatten().copied().collect();
                        let (lo, hi) = min_max(&starts);
                        out.push(hi - lo);
                    }
                    open = false;
                    first.iter_mut().for_each(|f| *f = None);
                    continue;
                }
                if skipping {
                    continue;
                }
                open = true;
                for (f, s) in first.iter_mut().zip(&states) {
                    if f.is_none() && *s == VcpuState::Running {
                        *f = Some(a);
                    }
                }
            }
            if open && first.iter().all(Option::is_some) {
                let starts: Vec<Nanos> = first.iter().flatten().copied().collect();
                let (lo, hi) = min_max(&starts);
                out.push(hi - lo);
            }
        }
    }
    out
}

fn min_max(xs: &[Nanos]) -> (Nanos, Nanos) {
    let lo = xs.iter().copied().min().unwrap_or(0);
    let hi = xs.iter().copied().max().unwrap_or(0);
    (lo, hi)
}

/// The `q` quantile (nearest rank) of a sorted sample, 0 if empty.
fn quantile(sorted: &[Nanos], q: f64) -> Nanos {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

impl CoschedMetrics {
    /// The metrics of one domain whose vCPU `i` had the states `vcpus[i]`
    /// over `window` (`[start, end)`); `slots` as in [`co_start_skews`];
    /// `late_switches` passed through.
    pub fn compute(
        vcpus: &[Vec<StateSpan>],
        window: (Nanos, Nanos),
        slots: Option<&[(Nanos, Nanos)]>,
        late_switches: u64,
    ) -> CoschedMetrics {
        let len = window.1.saturating_sub(window.0);
        let n = vcpus.len();
        let mut m = CoschedMetrics {
            window_ns: len,
            vcpus: n as u32,
            late_switches,
            ..CoschedMetrics::default()
        };
        if len == 0 || n == 0 {
            return m;
        }
        let spans = clipped(vcpus, (window.0, window.0 + len));
        let (mut all, mut costop, mut run, mut rdy) = (0u128, 0u128, 0u128, 0u128);
        for (a, b, states) in sweep(&spans, (window.0, window.0 + len)) {
            let d = u128::from(b - a);
            let running = states.iter().filter(|s| **s == VcpuState::Running).count();
            let ready = states.iter().filter(|s| **s == VcpuState::Runnable).count();
            if running == n {
                all += d;
            }
            if running > 0 && ready > 0 {
                costop += d;
            }
            run += d * running as u128;
            rdy += d * ready as u128;
        }
        let total = u128::from(len) * n as u128;
        m.all_running = all as f64 / len as f64;
        m.co_stop = costop as f64 / len as f64;
        m.running = run as f64 / total as f64;
        m.ready = rdy as f64 / total as f64;
        m.blocked = (total - run - rdy) as f64 / total as f64;
        let mut skews = co_start_skews(vcpus, window, slots);
        skews.sort_unstable();
        m.skew_samples = skews.len() as u32;
        m.skew_p50_ns = quantile(&skews, 0.5);
        m.skew_p99_ns = quantile(&skews, 0.99);
        m
    }
}

/// The metrics in streaming form, for a driver that sees state changes as
/// they happen (the simulator): no spans kept. Its shares equal
/// [`CoschedMetrics::compute`]'s over the same changes (a property test
/// checks it), and its gang starts are those of [`co_start_skews`]
/// without slots.
#[derive(Debug, Clone)]
pub struct CoschedAccumulator {
    start: Nanos,
    since: Nanos,
    states: Vec<VcpuState>,
    all: u128,
    costop: u128,
    run: u128,
    rdy: u128,
    /// The open gang start: each vCPU's first run start in it.
    group: Option<Vec<Option<Nanos>>>,
    /// Whether a vCPU ran when accounting began (its start was not seen):
    /// no gang start opens until none runs.
    skipping: bool,
    skews: u32,
}

impl CoschedAccumulator {
    /// `vcpus` vCPUs in `initial` states from `start`.
    pub fn new(start: Nanos, initial: &[VcpuState]) -> CoschedAccumulator {
        CoschedAccumulator {
            start,
            since: start,
            states: initial.to_vec(),
            all: 0,
            costop: 0,
            run: 0,
            rdy: 0,
            group: None,
            skipping: initial.contains(&VcpuState::Running),
            skews: 0,
        }
    }

    fn advance(&mut self, at: Nanos) {
        let at = at.max(self.since);
        let d = u128::from(at - self.since);
        let running = self
            .states
            .iter()
            .filter(|s| **s == VcpuState::Running)
            .count();
        let ready = self
            .states
            .iter()
            .filter(|s| **s == VcpuState::Runnable)
            .count();
        if running == self.states.len() && running > 0 {
            self.all += d;
        }
        if running > 0 && ready > 0 {
            self.costop += d;
        }
        self.run += d * running as u128;
        self.rdy += d * ready as u128;
        self.since = at;
    }

    /// vCPU `vcpu` is in `state` from `at` (changes in time order; an
    /// unknown vCPU is ignored). Returns the co-start skew of a gang start
    /// that this change completes (every vCPU has started in it).
    pub fn set(&mut self, at: Nanos, vcpu: usize, state: VcpuState) -> Option<Nanos> {
        if vcpu >= self.states.len() || self.states[vcpu] == state {
            return None;
        }
        self.advance(at);
        let was_running = self.states[vcpu] == VcpuState::Running;
        self.states[vcpu] = state;
        let any = self.states.contains(&VcpuState::Running);
        if !any {
            self.skipping = false;
            self.group = None;
            return None;
        }
        if self.skipping || was_running || state != VcpuState::Running {
            return None;
        }
        let n = self.states.len();
        let group = self.group.get_or_insert_with(|| vec![None; n]);
        if group[vcpu].is_some() {
            return None;
        }
        group[vcpu] = Some(self.since);
        if group.iter().all(Option::is_some) {
            let starts: Vec<Nanos> = group.iter().flatten().copied().collect();
            let (lo, hi) = min_max(&starts);
            // Counted once: later starts in this group are resumptions.
            group.iter_mut().for_each(|g| *g = Some(lo));
            self.skews += 1;
            return (n > 1).then_some(hi - lo);
        }
        None
    }

    /// The metrics from the start to `end`, with the skew percentiles the
    /// caller kept of what [`CoschedAccumulator::set`] returned.
    pub fn finish(
        &mut self,
        end: Nanos,
        skew_p50_ns: Nanos,
        skew_p99_ns: Nanos,
        late_switches: u64,
    ) -> CoschedMetrics {
        self.advance(end);
        let len = self.since.saturating_sub(self.start);
        let n = self.states.len();
        let mut m = CoschedMetrics {
            window_ns: len,
            vcpus: n as u32,
            late_switches,
            skew_p50_ns,
            skew_p99_ns,
            skew_samples: if n > 1 { self.skews } else { 0 },
            ..CoschedMetrics::default()
        };
        if len == 0 || n == 0 {
            return m;
        }
        let total = u128::from(len) * n as u128;
        m.all_running = self.all as f64 / len as f64;
        m.co_stop = self.costop as f64 / len as f64;
        m.running = self.run as f64 / total as f64;
        m.ready = self.rdy as f64 / total as f64;
        m.blocked = (total - self.run - self.rdy) as f64 / total as f64;
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use VcpuState::*;

    #[test]
    fn a_gang_that_runs_together_has_no_co_stop() {
        let v = vec![
            StateSpan::new(0, 10, Running),
            StateSpan::new(10, 20, Blocked),
            StateSpan::new(20, 30, Running),
        ];
        let m = CoschedMetrics::compute(&[v.clone(), v], (0, 40), None, 3);
        assert_eq!(m.all_running, 0.5);
        assert_eq!(m.co_stop, 0.0);
        assert_eq!(m.running, 0.5);
        assert_eq!(m.blocked, 0.5);
        assert_eq!(m.late_switches, 3);
        // The start at 0 is the window's edge, not seen; the one at 20 is.
        assert_eq!((m.skew_samples, m.skew_p99_ns), (1, 0));
    }

    #[test]
    fn a_sibling_held_while_the_other_runs_is_co_stop() {
        let a = vec![StateSpan::new(0, 100, Running)];
        let b = vec![
            StateSpan::new(0, 40, Runnable),
            StateSpan::new(40, 100, Running),
        ];
        let m = CoschedMetrics::compute(&[a, b], (0, 100), None, 0);
        assert!((m.co_stop - 0.4).abs() < 1e-12);
        assert!((m.all_running - 0.6).abs() < 1e-12);
        assert!((m.ready - 0.2).abs() < 1e-12);
    }

    #[test]
    fn skew_from_slots_and_from_gang_starts() {
        let a = vec![
            StateSpan::new(10, 20, Running),
            StateSpan::new(50, 60, Running),
        ];
        let b = vec![
            StateSpan::new(13, 20, Running),
            StateSpan::new(51, 60, Running),
        ];
        let vs = [a, b];
        assert_eq!(co_start_skews(&vs, (0, 100), None), vec![3, 1]);
        assert_eq!(
            co_start_skews(&vs, (0, 100), Some(&[(10, 20), (50, 60), (70, 80)])),
            vec![3, 1]
        );
        let m = CoschedMetrics::compute(&vs, (0, 100), None, 0);
        assert_eq!((m.skew_samples, m.skew_p50_ns, m.skew_p99_ns), (2, 3, 3));
    }

    #[test]
    fn empty_input_is_all_zero() {
        let m = CoschedMetrics::compute(&[], (0, 100), None, 0);
        assert_eq!(m.vcpus, 0);
        assert_eq!(m.all_running, 0.0);
        let m = CoschedMetrics::compute(&[vec![]], (5, 5), None, 0);
        assert_eq!(m.window_ns, 0);
    }
}
