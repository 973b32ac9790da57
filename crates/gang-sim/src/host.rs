//! The `host` model: the uncoordinated Linux scheduler (CFS-like), the
//! baseline every gang result is compared against.
//!
//! **Model.** Every vCPU is a thread pinned to its CPU-map CPU (the same map
//! as in the gang run). Each CPU has its own run queue and knows nothing of
//! the others:
//!
//! - threads are ordered by `vruntime`, which advances by
//!   `ran × 1024 / weight` (weight 1024 = nice 0; a BE domain of weight `w`
//!   gets `1024 × w / 256`, as a cgroup `cpu.weight` would; TT/ET/no-mux
//!   threads get 1024: Linux has no notion of them);
//! - the running thread gets a slice of `period × weight / Σweights`, where
//!   `period = max(6 ms, nr_running × 0.75 ms)`, at least 0.75 ms; when it
//!   expires the leftmost thread runs (the old one loses ties);
//! - a waking thread's vruntime is clamped to at least `min_vruntime − 3 ms`
//!   (sleeper credit); it preempts the running thread if its vruntime is
//!   lower by more than the 1 ms wake-up granularity (scaled by its weight);
//! - a blocking thread leaves the queue; spinning threads are runnable and
//!   burn CPU like any other.
//!
//! Slice expiry is exact (hrtick-like) rather than tick-driven, but every
//! slice is stretched or shrunk by up to ±[`SLICE_NOISE_PCT`]%, drawn from a
//! per-CPU stream of the scenario seed. Real CPUs are never in lockstep
//! (unaligned ticks, interrupts, other host tasks); without the noise two
//! identical CPUs would make identical choices at identical instants and gang
//! schedule by accident, which the real Linux scheduler does not (DESIGN.md
//! §4: two spin-barrier pairs get 0.246 M rounds/s each, about what
//! independent CPUs give: a quarter of the time together).
//!
//! **Invariants.** A thread is in at most one place: its CPU's `curr` or its
//! CPU's queue, and in either only while runnable; `min_vruntime` never
//! decreases.

use gang_core::{CpuId, Nanos, Policy, MS, US};

use crate::world::{Model, ModelCounters, Out, SimError, Topo};

const SCHED_LATENCY: Nanos = 6 * MS;
const MIN_GRANULARITY: Nanos = 750 * US;
const WAKEUP_GRANULARITY: Nanos = MS;
const SLEEPER_CREDIT: Nanos = 3 * MS;
const NICE_0: u64 = 1024;
/// Per-slice noise, percent (see the module docs).
pub(crate) const SLICE_NOISE_PCT: u64 = 25;

/// A slice length factor in parts per million, uniform in
/// `1 ± SLICE_NOISE_PCT%`, from a SplitMix64 stream (fast, and plenty for
/// noise; the workloads' randomness uses ChaCha8).
fn noise(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let span = 2 * SLICE_NOISE_PCT * 10_000 + 1;
    (100 - SLICE_NOISE_PCT) * 10_000 + z % span
}

#[derive(Debug, Clone)]
struct Thread {
    cpu: usize,
    weight: u64,
    vruntime: u64,
}

#[derive(Debug, Clone, Default)]
struct Rq {
    curr: Option<usize>,
    /// When `curr`'s vruntime was last updated.
    exec_start: Nanos,
    /// When `curr` was picked.
    slice_start: Nanos,
    queue: Vec<usize>,
    min_vruntime: u64,
    /// This slice's length factor, parts per million.
    noise_ppm: u64,
}

/// The host model.
#[derive(Debug)]
pub(crate) struct HostModel {
    threads: Vec<Thread>,
    rqs: Vec<Rq>,
    /// Per-CPU SplitMix64 states for the slice noise.
    rngs: Vec<u64>,
    counters: ModelCounters,
}

impl HostModel {
    /// `maps[d][i]`: the CPU of vCPU `i` of domain `d`.
    pub(crate) fn new(topo: &Topo, maps: &[Vec<CpuId>], policies: &[Policy], seed: u64) -> Self {
        let mut threads = Vec::with_capacity(topo.dom_of.len());
        for (d, map) in maps.iter().enumerate() {
            let weight = match policies[d] {
                Policy::BestEffort { weight, .. } => (NICE_0 * u64::from(weight) / 256).max(1),
                _ => NICE_0,
            };
            for &cpu in map {
                threads.push(Thread {
                    cpu: topo.cpu_idx(cpu).unwrap_or(0),
                    weight,
                    vruntime: 0,
                });
            }
        }
        HostModel {
            threads,
            rqs: vec![
                Rq {
                    noise_ppm: 1_000_000,
                    ..Rq::default()
                };
                topo.cpus.len()
            ],
            rngs: (0..topo.cpus.len())
                .map(|c| seed ^ (c as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03))
                .collect(),
            counters: ModelCounters::default(),
        }
    }

    fn update_curr(&mut self, cpu: usize, now: Nanos) {
        let rq = &mut self.rqs[cpu];
        if let Some(c) = rq.curr {
            let delta = now - rq.exec_start;
            let t = &mut self.threads[c];
            t.vruntime += delta * NICE_0 / t.weight;
            rq.exec_start = now;
        }
        self.update_min(cpu);
    }

    fn update_min(&mut self, cpu: usize) {
        let rq = &mut self.rqs[cpu];
        let curr = rq.curr.map(|c| self.threads[c].vruntime);
        let left = rq.queue.iter().map(|&t| self.threads[t].vruntime).min();
        let m = match (curr, left) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return,
        };
        rq.min_vruntime = rq.min_vruntime.max(m);
    }

    fn slice(&self, cpu: usize) -> Nanos {
        let rq = &self.rqs[cpu];
        let Some(c) = rq.curr else { return Nanos::MAX };
        let nr = rq.queue.len() as u64 + 1;
        let total: u64 = self.threads[c].weight
            + rq.queue
                .iter()
                .map(|&t| self.threads[t].weight)
                .sum::<u64>();
        let period = SCHED_LATENCY.max(nr * MIN_GRANULARITY);
        (period * self.threads[c].weight / total).max(MIN_GRANULARITY)
    }

    /// Re-arms `cpu`'s slice timer: needed only when others are waiting.
    fn arm(&self, cpu: usize, out: &mut Out) {
        let rq = &self.rqs[cpu];
        let when = if rq.curr.is_some() && !rq.queue.is_empty() {
            rq.slice_start
                .saturating_add(self.slice(cpu) * rq.noise_ppm / 1_000_000)
        } else {
            Nanos::MAX
        };
        out.timers.push((cpu, when));
    }

    /// Runs the leftmost queued thread on `cpu` (idle if none).
    /// `prev` is the thread that ran before (for switch accounting).
    fn pick(&mut self, cpu: usize, now: Nanos, prev: Option<usize>, out: &mut Out) {
        let rq = &mut self.rqs[cpu];
        let mut best: Option<(usize, u64)> = None;
        for (i, &t) in rq.queue.iter().enumerate() {
            let v = self.threads[t].vruntime;
            if best.is_none_or(|(_, bv)| v < bv) {
                best = Some((i, v));
            }
        }
        rq.curr = best.map(|(i, _)| rq.queue.remove(i));
        rq.exec_start = now;
        rq.slice_start = now;
        rq.noise_ppm = noise(&mut self.rngs[cpu]);
        if rq.curr != prev {
            self.counters.context_switches += 1;
            out.dispatch.push((cpu, rq.curr));
        }
        self.arm(cpu, out);
    }
}

impl Model for HostModel {
    fn timer_keys(&self) -> usize {
        self.rqs.len()
    }

    fn start(&mut self, runnable: &[bool], out: &mut Out) -> Result<(), SimError> {
        for (t, &r) in runnable.iter().enumerate() {
            if r {
                let cpu = self.threads[t].cpu;
                self.rqs[cpu].queue.push(t);
            }
        }
        for cpu in 0..self.rqs.len() {
            self.pick(cpu, 0, None, out);
        }
        Ok(())
    }

    fn blocked(&mut self, now: Nanos, v: usize, out: &mut Out) -> Result<(), SimError> {
        let cpu = self.threads[v].cpu;
        if self.rqs[cpu].curr == Some(v) {
            self.update_curr(cpu, now);
            self.rqs[cpu].curr = None;
            self.pick(cpu, now, Some(v), out);
        } else {
            self.rqs[cpu].queue.retain(|&t| t != v);
            self.arm(cpu, out);
        }
        Ok(())
    }

    fn woke(&mut self, now: Nanos, v: usize, out: &mut Out) -> Result<(), SimError> {
        let cpu = self.threads[v].cpu;
        if self.rqs[cpu].curr == Some(v) || self.rqs[cpu].queue.contains(&v) {
            return Ok(());
        }
        self.update_curr(cpu, now);
        let floor = self.rqs[cpu].min_vruntime.saturating_sub(SLEEPER_CREDIT);
        let t = &mut self.threads[v];
        t.vruntime = t.vruntime.max(floor);
        let (vr, w) = (t.vruntime, t.weight);
        self.rqs[cpu].queue.push(v);
        match self.rqs[cpu].curr {
            None => self.pick(cpu, now, None, out),
            Some(c) => {
                let gran = WAKEUP_GRANULARITY * NICE_0 / w;
                if self.threads[c].vruntime > vr.saturating_add(gran) {
                    // Wake-up preemption: the woken thread runs now.
                    let rq = &mut self.rqs[cpu];
                    rq.queue.retain(|&t| t != v);
                    rq.queue.push(c);
                    rq.curr = Some(v);
                    rq.exec_start = now;
                    rq.slice_start = now;
                    rq.noise_ppm = noise(&mut self.rngs[cpu]);
                    self.counters.context_switches += 1;
                    out.dispatch.push((cpu, Some(v)));
                    self.arm(cpu, out);
                } else if self.rqs[cpu].queue.len() == 1 {
                    // The running thread was alone and had no slice timer.
                    self.arm(cpu, out);
                }
            }
        }
        Ok(())
    }

    fn timer(&mut self, now: Nanos, cpu: usize, out: &mut Out) -> Result<(), SimError> {
        self.update_curr(cpu, now);
        if let Some(c) = self.rqs[cpu].curr.take() {
            // `pick` scans in queue order with strict `<`: the previous
            // thread, now last, loses ties.
            self.rqs[cpu].queue.push(c);
            self.pick(cpu, now, Some(c), out);
        }
        Ok(())
    }

    fn counters(&self) -> ModelCounters {
        self.counters
    }
}
