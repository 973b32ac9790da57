//! `gang_vmm::bench`: what a VM costs the gang scheduler.
//!
//! - **Kick latency**: from the moment a kicker sends the signal to the
//!   moment `KVM_RUN` returns `EINTR` on the vCPU thread (a 1-vCPU `loop`
//!   guest, Linux scheduling). This is what a gate closing costs on top of
//!   the dispatcher's switch. The vCPU thread stamps the exit itself; the
//!   kicker polls for it sleeping, so it never holds the vCPU's CPU.
//! - **Co-start skew** of a 2-vCPU VM domain under a gang runtime (shared
//!   mode on CPUs 0-1, two 2-vCPU `barrier` VMs as best-effort gangs that
//!   alternate): per slot, the spread of the two vCPUs' start times, from
//!   the gates' traces (`gang_host::slot_stats::co_start_skew`).
//!
//! Needs /dev/kvm; the skew part also needs root (real-time priorities)
//! and CPUs 0 and 1, and is skipped with a note otherwise. Everything it
//! starts is stopped before it returns, on errors too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gang_core::{CpuSet, DomainId, DomainSpec, Nanos, Policy, PoolConfig, MS};
use gang_host::runtime::{Runtime, RuntimeConfig};
use gang_host::slot_stats::Spread;
use gang_host::sys;

use crate::vcpu::GangScheduler;
use crate::vm::{Vm, VmConfig, VmmError};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Kicks to time.
    pub kicks: usize,
    /// How long to run the gang part, ms (0: skip it).
    pub gang_millis: u64,
    /// The guest images: a `loop` guest and a `barrier` guest.
    pub loop_image: &'static [u8],
    /// See `loop_image`.
    pub barrier_image: &'static [u8],
}

impl BenchOptions {
    /// 2,000 kicks and 2 s of gang scheduling with the given images
    /// (`gang_guests::image("loop")`, `gang_guests::image("barrier")`).
    pub fn new(loop_image: &'static [u8], barrier_image: &'static [u8]) -> Self {
        BenchOptions {
            kicks: 2000,
            gang_millis: 2000,
            loop_image,
            barrier_image,
        }
    }
}

/// Bench errors.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A VM failed.
    #[error(transparent)]
    Vm(#[from] VmmError),
    /// The runtime failed.
    #[error(transparent)]
    Host(#[from] gang_host::runtime::HostError),
    /// The guest did not get going.
    #[error("{0}")]
    Guest(String),
}

/// What was measured.
#[derive(Debug, Clone, Default)]
pub struct BenchReport {
    /// Kick latency, ns.
    pub kick: Spread,
    /// Kicks that got no `EINTR` within 100 ms.
    pub kicks_lost: usize,
    /// Co-start skew of a 2-vCPU VM's slots, ns (`None`: not measured).
    pub skew: Option<Spread>,
    /// Why the skew was not measured, if it was not.
    pub skew_note: Option<String>,
    /// Slot runs seen in the traces of the measured VM.
    pub slot_runs: usize,
}

fn us(ns: f64) -> String {
    format!("{:.1} µs", ns / 1000.0)
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<44} {:>6} {:>10} {:>10} {:>10}",
            "measure", "n", "p50", "p99", "max"
        )?;
        let row = |f: &mut std::fmt::Formatter<'_>, name: &str, s: &Spread| {
            writeln!(
                f,
                "{:<44} {:>6} {:>10} {:>10} {:>10}",
                name,
                s.n,
                us(s.p50),
                us(s.p99),
                us(s.max)
            )
        };
        row(f, "vCPU kick latency (signal -> KVM_RUN exit)", &self.kick)?;
        if self.kicks_lost > 0 {
            writeln!(
                f,
                "  ({} kicks got no EINTR within 100 ms)",
                self.kicks_lost
            )?;
        }
        match (&self.skew, &self.skew_note) {
            (Some(s), _) => row(f, "co-start skew, 2-vCPU VM under a gang runtime", s)?,
            (None, Some(why)) => writeln!(f, "co-start skew: not measured: {why}")?,
            (None, None) => {}
        }
        Ok(())
    }
}

fn sink_vm(id: u32, image: &'static [u8], vcpus: u32) -> Result<Vm, VmmError> {
    let mut config = VmConfig::new(DomainId(id), image, 16, vcpus);
    config.cmdline = "every=1000000000".into();
    Vm::create(config, Box::new(std::io::sink()), Box::new(|_| {}))
}

/// Runs the benchmark.
pub fn run(opts: &BenchOptions) -> Result<BenchReport, BenchError> {
    let mut report = BenchReport::default();
    let (kick, lost) = kick_latency(opts)?;
    report.kick = kick;
    report.kicks_lost = lost;
    if opts.gang_millis == 0 {
        report.skew_note = Some("not asked for".into());
    } else if !sys::is_root() {
        report.skew_note = Some("needs root (real-time priorities)".into());
    } else {
        let (skew, runs) = co_start_skew(opts)?;
        report.skew = Some(skew);
        report.slot_runs = runs;
    }
    Ok(report)
}

fn kick_latency(opts: &BenchOptions) -> Result<(Spread, usize), BenchError> {
    let mut vm = sink_vm(9001, opts.loop_image, 1)?;
    vm.start(false)?;
    let shared = vm
        .vcpu_shared(0)
        .cloned()
        .ok_or_else(|| BenchError::Guest("no vCPU".into()))?;
    // Let it enter the guest's loop.
    std::thread::sleep(Duration::from_millis(20));
    let mut samples = Vec::with_capacity(opts.kicks);
    let mut lost = 0;
    for _ in 0..opts.kicks {
        let before = shared
            .last_kick_exit
            .load(std::sync::atomic::Ordering::Acquire);
        let t0 = sys::monotonic_ns();
        shared.kick.kick();
        let give_up = Instant::now() + Duration::from_millis(100);
        loop {
            let now = shared
                .last_kick_exit
                .load(std::sync::atomic::Ordering::Acquire);
            if now != before {
                samples.push(now.saturating_sub(t0) as f64);
                break;
            }
            if Instant::now() > give_up {
                lost += 1;
                break;
            }
            // Sleep, not spin: the time is taken on the vCPU thread, and a
            // spinning waiter that shares a CPU with it (the other CPU
            // busy) delays the signal's delivery by a whole time slice.
            std::thread::sleep(Duration::from_micros(10));
        }
        // Let the thread get back into the guest.
        std::thread::sleep(Duration::from_micros(300));
    }
    vm.destroy();
    Ok((Spread::of(samples), lost))
}

fn co_start_skew(opts: &BenchOptions) -> Result<(Spread, usize), BenchError> {
    let mut pool = PoolConfig::new(CpuSet::from_iter([0, 1]));
    pool.be_slice = 5 * MS;
    let rt = Arc::new(Runtime::start(RuntimeConfig::new(pool))?);
    let clock = rt.clock();
    let mut vms = Vec::new();
    let mut controls = Vec::new();
    let result = (|| -> Result<(Nanos, Nanos), BenchError> {
        for d in 1..=2u32 {
            let mut vm = sink_vm(9100 + d, opts.barrier_image, 2)?;
            let spec = DomainSpec {
                id: vm.id(),
                vcpus: 2,
                cpu_map: Some(vec![0, 1]),
                policy: Policy::BestEffort {
                    weight: 256,
                    space_filling: false,
                },
            };
            let c = rt.add_domain(spec, false)?;
            controls.push(c.clone());
            vm.attach(Arc::clone(&rt) as Arc<dyn GangScheduler>, c)?;
            vm.start(false)?;
            vms.push(vm);
        }
        let start = clock.now() + 50 * MS;
        let end = start + opts.gang_millis * MS;
        clock.wait_until(end, 0);
        Ok((start, end))
    })();
    for vm in &mut vms {
        vm.destroy();
    }
    for vm in &vms {
        let _ = rt.remove_domain(vm.id());
    }
    drop(vms);
    match Arc::try_unwrap(rt) {
        Ok(rt) => {
            rt.stop();
        }
        Err(rt) => drop(rt),
    }
    let window = result?;
    let traces: Vec<_> = controls
        .first()
        .map(|c| c.iter().map(|c| (c.vcpu, c.trace())).collect())
        .unwrap_or_default();
    let runs = traces.iter().map(|(_, t): &(_, Vec<_>)| t.len()).sum();
    Ok((gang_host::slot_stats::co_start_skew(&traces, window), runs))
}
