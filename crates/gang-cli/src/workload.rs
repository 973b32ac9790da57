//! `gang workload`: run one of the simulator's workloads on real threads, as
//! a process that can be a domain (its threads are the vCPUs).

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use gang_core::time::parse_duration;
use gang_core::{DomainId, Nanos, VcpuRef, MS};
use gang_host::clock::Clock;
use gang_host::workload::{self, DomainState, VcpuEnv, Workload};

const LONG_ABOUT: &str = "\
Run one of the simulator's workloads on real threads, one thread per vCPU, \
named vcpu0, vcpu1, ... (so that a domain of type \"process\" can adopt \
them by name), and report progress while it runs.

KINDS

  busy               compute forever; progress counts 1 us work units
  spin-barrier       compute --work, then spin until every thread arrives
  blocking-barrier   compute --work, then block until every thread arrives
  periodic           a job every --period needing --exec of computation;
                     misses count jobs done after their next release
  sleep-wake         compute --run, sleep --sleep, repeat
  program            a whole program, as people gang-schedule them: the main
                     thread sleeps (it reports), --workers threads compute
                     --work and meet at a spin barrier (progress: rounds),
                     with --late-worker one more thread that only computes
                     starts that long after the start; every thread is named
                     `program` and nothing is pinned (adopt it as a group:
                     put the process in a freezer cgroup)

Every --report-every, one line on standard output: the time since start, \
the progress so far and its rate, and each thread's CPU time (from \
/proc/self/task/TID/schedstat). With --json the lines are JSON objects \
(one per line) with CLOCK_MONOTONIC timestamps in nanoseconds.";

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    Busy,
    SpinBarrier,
    BlockingBarrier,
    Periodic,
    SleepWake,
    Program,
}

/// Arguments of `gang workload`.
#[derive(Debug, Args)]
#[command(about = "Run a synthetic workload on real threads (a process to run as a domain)", long_about = LONG_ABOUT)]
pub struct WorkloadArgs {
    /// The workload.
    #[arg(value_enum)]
    kind: Kind,
    /// Number of threads (vCPUs).
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Program: barrier worker threads.
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// Program: start one more (busy) worker this long after the start.
    #[arg(long, value_name = "DELAY")]
    late_worker: Option<String>,
    /// Work per barrier round.
    #[arg(long, default_value = "1us")]
    work: String,
    /// Period of periodic jobs.
    #[arg(long, default_value = "10ms")]
    period: String,
    /// Computation per periodic job.
    #[arg(long, default_value = "2ms")]
    exec: String,
    /// Computation per sleep-wake cycle.
    #[arg(long, default_value = "1ms")]
    run: String,
    /// Sleep per sleep-wake cycle.
    #[arg(long, default_value = "4ms")]
    sleep: String,
    /// How long to run (units: us ms s m h; bare number: ms).
    #[arg(long, default_value = "10s")]
    duration: String,
    /// How often to report.
    #[arg(long, default_value = "1s")]
    report_every: String,
    /// Report as JSON lines.
    #[arg(long)]
    json: bool,
    /// Spin-barrier: record each time a thread resumes after a pause longer
    /// than this (it was frozen or preempted), and print the list at the end
    /// (`gang bench` uses it to measure the co-start skew of adopted gangs).
    #[arg(long, value_name = "GAP")]
    resume_gap: Option<String>,
    /// Loop iterations per microsecond of work, instead of measuring them at
    /// start (processes that must do the same work take one figure; `gang
    /// bench-slurm` passes its own).
    #[arg(long, value_name = "N")]
    iterations_per_us: Option<u64>,
}

fn time(text: &str, flag: &str) -> Result<Nanos> {
    let t = parse_duration(text, MS).with_context(|| format!("{flag} {text}"))?;
    if t == 0 {
        bail!("{flag} {text}: must be positive");
    }
    Ok(t)
}

fn cpu_time_ns(tid: i32) -> Option<u64> {
    gang_host::proc::schedstat_ns(std::process::id() as i32, tid)
}

/// `gang workload program`: see the long help.
fn run_program(args: &WorkloadArgs) -> Result<()> {
    if args.workers == 0 || args.workers > 1024 {
        bail!("--workers {}: give 1 to 1024 workers", args.workers);
    }
    let work = time(&args.work, "--work")?;
    let duration = time(&args.duration, "--duration")?;
    let every = time(&args.report_every, "--report-every")?;
    let late = args
        .late_worker
        .as_deref()
        .map(|t| time(t, "--late-worker"))
        .transpose()?;
    let mut program =
        workload::Program::start("program", args.workers, work).context("starting the workers")?;
    let clock = Clock::with_epoch(gang_host::sys::monotonic_ns());
    let pid = std::process::id() as i32;
    let tids = program.tids();
    let mut out = std::io::stdout().lock();
    let announce = if args.json {
        serde_json::json!({ "pid": pid, "tids": tids, "epoch_ns": clock.epoch() }).to_string()
    } else {
        format!("pid {pid} threads {tids:?} (main thread first)")
    };
    writeln!(out, "{announce}").context("writing to standard output")?;
    let _ = out.flush();
    let mut last = 0;
    let mut at = every;
    let mut late = late;
    while at <= duration {
        clock.wait_until(at, 0);
        if late.is_some_and(|l| l <= at) {
            program
                .add_busy_worker()
                .context("starting the late worker")?;
            late = None;
        }
        let done = program.barrier.progress.load(Ordering::Relaxed);
        let rate = (done - last) as f64 / (every as f64 / 1e9);
        last = done;
        let cpu = threads_cpu(&program.tids());
        let line = report_line(
            args.json,
            Report {
                monotonic_ns: clock.epoch() + at,
                at,
                progress: ("rounds", done),
                rate,
                extra: ("busy_units", program.busy.progress.load(Ordering::Relaxed)),
                extra_in_text: false,
                cpu: &cpu,
            },
        );
        if writeln!(out, "{line}").is_err() {
            break;
        }
        let _ = out.flush();
        at += every;
    }
    program.stop();
    Ok(())
}

/// One report's figures.
struct Report<'a> {
    monotonic_ns: u64,
    /// Since the start, ns.
    at: u64,
    /// (its name in the text line, the count so far).
    progress: (&'static str, u64),
    rate: f64,
    /// A count of the workload's own (its name, its value), and whether
    /// the text line shows it too.
    extra: (&'static str, u64),
    extra_in_text: bool,
    /// (tid, CPU time ns) per thread.
    cpu: &'a [(i32, u64)],
}

/// Each thread's CPU time so far.
fn threads_cpu(tids: &[i32]) -> Vec<(i32, u64)> {
    tids.iter()
        .map(|&tid| (tid, cpu_time_ns(tid).unwrap_or(0)))
        .collect()
}

/// A report line: JSON (`progress` and the extra count under their JSON
/// names), or text.
fn report_line(json: bool, r: Report<'_>) -> String {
    if json {
        let threads: Vec<serde_json::Value> = r
            .cpu
            .iter()
            .map(|&(tid, ns)| serde_json::json!({ "tid": tid, "cpu_ns": ns }))
            .collect();
        let mut v = serde_json::json!({
            "monotonic_ns": r.monotonic_ns,
            "elapsed_ns": r.at,
            "progress": r.progress.1,
            "rate_per_s": r.rate,
            "threads": threads,
        });
        v[r.extra.0] = serde_json::json!(r.extra.1);
        return v.to_string();
    }
    let per: Vec<String> = r
        .cpu
        .iter()
        .map(|(tid, ns)| format!("{tid}:{:.3}s", *ns as f64 / 1e9))
        .collect();
    let extra = if r.extra_in_text {
        format!(" {}={}", r.extra.0, r.extra.1)
    } else {
        String::new()
    };
    format!(
        "t={:.3}s {}={} rate={:.0}/s{extra} cpu[{}]",
        r.at as f64 / 1e9,
        r.progress.0,
        r.progress.1,
        r.rate,
        per.join(" ")
    )
}

pub fn run(args: &WorkloadArgs) -> Result<()> {
    if let Some(n) = args.iterations_per_us {
        if n == 0 {
            bail!("--iterations-per-us 0: must be positive");
        }
        workload::set_calibration(n);
    }
    if matches!(args.kind, Kind::Program) {
        return run_program(args);
    }
    if args.threads == 0 || args.threads > 1024 {
        bail!("--threads {}: give 1 to 1024 threads", args.threads);
    }
    let w = match args.kind {
        Kind::Busy => Workload::Busy,
        Kind::SpinBarrier => Workload::SpinBarrier {
            work: time(&args.work, "--work")?,
        },
        Kind::BlockingBarrier => Workload::BlockingBarrier {
            work: time(&args.work, "--work")?,
        },
        Kind::Periodic => {
            let (period, exec) = (time(&args.period, "--period")?, time(&args.exec, "--exec")?);
            if exec > period {
                bail!(
                    "--exec {} is longer than --period {}",
                    args.exec,
                    args.period
                );
            }
            Workload::Periodic { period, exec }
        }
        Kind::SleepWake => Workload::SleepWake {
            run: time(&args.run, "--run")?,
            sleep: time(&args.sleep, "--sleep")?,
        },
        Kind::Program => unreachable!("handled above"),
    };
    let duration = time(&args.duration, "--duration")?;
    let every = time(&args.report_every, "--report-every")?;
    let clock = Clock::with_epoch(gang_host::sys::monotonic_ns());
    let halt = Arc::new(AtomicBool::new(false));
    let state = Arc::new(DomainState::default());
    if let Some(gap) = &args.resume_gap {
        state
            .resume_gap
            .store(time(gap, "--resume-gap")?, Ordering::Relaxed);
    }
    let n = args.threads;
    let mut threads = Vec::new();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    for v in 0..n {
        let env = VcpuEnv::unmanaged(
            VcpuRef {
                domain: DomainId(1),
                vcpu: v,
            },
            clock,
            duration,
            Arc::clone(&halt),
            false,
        );
        let state = Arc::clone(&state);
        let tid_tx = tid_tx.clone();
        let t = std::thread::Builder::new()
            .name(format!("vcpu{v}"))
            .spawn(move || {
                let _ = tid_tx.send((v, gang_host::sys::gettid()));
                workload::run(w, &env, &state, n);
            })
            .context("starting a thread")?;
        threads.push(t);
    }
    drop(tid_tx);
    let mut tids: Vec<(u32, i32)> = tid_rx.iter().take(n as usize).collect();
    tids.sort_unstable();
    let mut out = std::io::stdout().lock();
    // First line: who the threads are, for whoever adopts them.
    let announce = if args.json {
        serde_json::json!({
            "pid": std::process::id(),
            "tids": tids.iter().map(|&(_, t)| t).collect::<Vec<_>>(),
            "epoch_ns": clock.epoch(),
        })
        .to_string()
    } else {
        let names: Vec<String> = tids.iter().map(|(v, t)| format!("vcpu{v}={t}")).collect();
        format!("pid {} threads {}", std::process::id(), names.join(" "))
    };
    writeln!(out, "{announce}").context("writing to standard output")?;
    let _ = out.flush();
    let mut last = 0;
    let mut at = every;
    while at <= duration {
        clock.wait_until(at, 0);
        let done = state.progress.load(Ordering::Relaxed);
        let rate = (done - last) as f64 / (every as f64 / 1e9);
        last = done;
        let cpu = threads_cpu(&tids.iter().map(|&(_, t)| t).collect::<Vec<_>>());
        let line = report_line(
            args.json,
            Report {
                monotonic_ns: clock.epoch() + at,
                at,
                progress: ("progress", done),
                rate,
                extra: ("misses", state.misses.load(Ordering::Relaxed)),
                extra_in_text: true,
                cpu: &cpu,
            },
        );
        if writeln!(out, "{line}").is_err() {
            break; // stdout closed: stop quietly
        }
        let _ = out.flush();
        at += every;
    }
    halt.store(true, Ordering::Release);
    for t in threads {
        let _ = t.join();
    }
    if args.resume_gap.is_some() {
        let resumes = state.resumes.lock().map(|r| r.clone()).unwrap_or_default();
        let line = if args.json {
            let list: Vec<(u32, u64)> = resumes
                .iter()
                .map(|&(v, t)| (v, clock.epoch() + t))
                .collect();
            serde_json::json!({ "resumes_monotonic_ns": list }).to_string()
        } else {
            let list: Vec<String> = resumes
                .iter()
                .map(|(v, t)| format!("vcpu{v}@{:.6}s", *t as f64 / 1e9))
                .collect();
            format!("resumes {}", list.join(" "))
        };
        let _ = writeln!(out, "{line}");
    }
    Ok(())
}
