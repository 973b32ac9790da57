//! `gang sim`: run a scenario in the simulator.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration as WallDuration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use gang_core::time::{parse_duration, Duration};
use gang_core::{Nanos, MS};
use gang_sim::{Scenario, SchedKind};

const LONG_ABOUT: &str = "\
Simulate a pool of CPUs in virtual time, scheduled by the gang scheduler \
(the real gang-core, as the daemon runs it) and/or by a model of the \
uncoordinated Linux scheduler (\"host\": CFS-like, one run queue per CPU, \
vCPU threads pinned to the same CPUs), on the same synthetic workloads, and \
report what each domain got.

SCENARIO FORMAT (TOML)

  name = \"spin-barrier overcommit\"
  duration = \"2s\"                 # units ns us ms s m h
  seed = 42                       # all randomness (jitter) derives from it
  schedulers = [\"gang\", \"host\"]   # default: both
  [pool]
  cpus = \"0-1\"                    # xl CPU list
  grain = \"1ms\"                   # optional, as be_slice, be_reserve_pct
  [[domain]]
  name = \"a\"
  vcpus = 2
  policy = \"be,256\"               # seed syntax: no | tt,P,A[,sf] | et,P,A[,sf] | be,W[,sf]
  cpus = \"0-1\"                    # optional map: vCPU i on the i-th CPU listed
  workload = { kind = \"spin-barrier\", work = \"1us\" }

Workloads (every vCPU of a domain runs the same one; `jitter` is a \
percentage where allowed):
  busy                                   always runnable; progress = CPU time
  spin-barrier { work, jitter }          compute, then spin until all vCPUs arrive; progress = rounds
  blocking-barrier { work, jitter }      compute, then block until all arrive; progress = rounds
  periodic { period, exec, deadline, offset, jitter }
                                         a job per period needing exec CPU time; progress = jobs
  sleep-wake { run, sleep, jitter }      run, block for sleep, repeat; progress = cycles

[[generate]] tables make many domains from a seeded recipe (count, prefix, \
vcpus = [lo, hi], reserved_cap_pct, mix = [{ weight, policy, workload }]); \
see examples/mixed-64cpu.toml. Unknown keys are errors; every error names \
the file, line and field.

METRICS (per domain and scheduler)

  cpu         CPU time of its vCPUs, spinning included
  progress    rounds, jobs, cycles or CPU time (see above), and per second
  co-sched    time all its vCPUs ran together / time any of them ran
  allrun      time all its vCPUs ran together / simulated time (`all_running`)
  costop      time some of its vCPUs ran while a sibling was runnable but not
              running / simulated time (`co_stop`, VMware's %CSTP)
  ready       runnable-but-not-running time / (vCPUs x simulated time) (%RDY)
  skew99      99th percentile co-start skew of its gang starts
              (the JSON's `cosched` has the names of `gang list -l` / `top`)
  lat         wake-to-run (sleep-wake, blocking-barrier) or release-to-first-run
              (periodic) latency, p50/p99 (histogram, within 1%)
  misses      periodic jobs finished after their deadline, or unfinished past it
and per run: simulated and wall time, events handled and events/s, gang \
boundaries and calls into the core, host context switches. With both schedulers, the \
gang/host ratio of each domain's progress.

TIMELINES

--svg FILE draws the window (--svg-window, default the first 200ms) as one \
block per scheduler, one lane per CPU, a rectangle per vCPU slot coloured by \
domain and a grey tick per gang decision; --chrome FILE writes the same \
window as a Chrome trace (Trace Event JSON) to open in ui.perfetto.dev or \
chrome://tracing: a process per scheduler, a thread per CPU, a slice per \
vCPU slot, an instant per gang decision, and the scenario, seed, pool CPUs \
and grain in its metadata; --perfetto FILE writes the same in Perfetto's \
protobuf format. All come from the writer that `gang trace --format \
svg|chrome|perfetto` uses for a live pool, so simulated and real runs look \
alike; times are virtual nanoseconds since the run's start.

EXIT STATUS: 0 success; 1 scenario or simulation error; 2 usage error.";

/// Which schedulers to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Which {
    /// The gang scheduler (gang-core).
    Gang,
    /// The Linux-like host scheduler model.
    Host,
    /// Both, side by side.
    Both,
}

/// Arguments of `gang sim`.
#[derive(Debug, Args)]
#[command(about = "Simulate a scenario under the gang and/or the host scheduler", long_about = LONG_ABOUT)]
pub struct SimArgs {
    /// The scenario file (TOML).
    #[arg(value_name = "SCENARIO.toml")]
    pub scenario: PathBuf,
    /// Simulated time, overriding the scenario's (e.g. 500ms, 10s, 1h; bare numbers are ms).
    #[arg(long, value_name = "D", value_parser = duration_arg)]
    pub duration: Option<Nanos>,
    /// Random seed, overriding the scenario's.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Which scheduler(s) to run; default: the scenario's `schedulers` (both unless set).
    #[arg(long, value_enum, value_name = "gang|host|both")]
    pub scheduler: Option<Which>,
    /// Write the full report as JSON to FILE (`-`: stdout, and no table).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write an SVG timeline (one lane per CPU per scheduler) to FILE
    /// (`-`: stdout); the same drawing as `gang trace --format svg`.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Write the timeline as a Chrome trace (Trace Event JSON: a process per
    /// scheduler, a thread per CPU, a slice per vCPU slot, an instant per gang
    /// decision) to FILE (`-`: stdout), for ui.perfetto.dev or
    /// chrome://tracing; the same format as `gang trace --format chrome`.
    #[arg(long, value_name = "FILE")]
    pub chrome: Option<PathBuf>,
    /// Write the timeline in Perfetto's protobuf format to FILE (`-`:
    /// stdout), for ui.perfetto.dev; the same format as `gang trace
    /// --format perfetto`.
    #[arg(long, value_name = "FILE")]
    pub perfetto: Option<PathBuf>,
    /// Simulated-time window recorded for --svg and --chrome, `A..B`
    /// (default: the first 200ms).
    #[arg(long, visible_alias = "window", value_name = "A..B", value_parser = window_arg)]
    pub svg_window: Option<(Nanos, Nanos)>,
    /// No progress lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

fn duration_arg(s: &str) -> Result<Nanos, String> {
    match parse_duration(s, MS) {
        Ok(0) => Err("must be longer than 0".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

fn window_arg(s: &str) -> Result<(Nanos, Nanos), String> {
    let (a, b) = s.split_once("..").ok_or("expected A..B, e.g. 0..200ms")?;
    let a = if a.trim().is_empty() {
        0
    } else {
        parse_duration(a, MS).map_err(|e| e.to_string())?
    };
    let b = parse_duration(b, MS).map_err(|e| e.to_string())?;
    if a >= b {
        return Err(format!(
            "the window's end ({}) must be after its start ({})",
            Duration(b),
            Duration(a)
        ));
    }
    Ok((a, b))
}

fn write_out(path: &Path, text: impl AsRef<[u8]>) -> Result<()> {
    if path == Path::new("-") {
        std::io::stdout()
            .write_all(text.as_ref())
            .context("stdout")?;
        return Ok(());
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Runs `gang sim`.
pub fn run(args: &SimArgs) -> Result<()> {
    let mut scenario = Scenario::load(&args.scenario)?;
    let file = scenario.file.clone();
    if let Some(d) = args.duration {
        scenario.duration = d;
    }
    if let Some(seed) = args.seed {
        scenario.seed = seed;
    }
    match args.scheduler {
        None => {}
        Some(Which::Gang) => scenario.schedulers = vec![SchedKind::Gang],
        Some(Which::Host) => scenario.schedulers = vec![SchedKind::Host],
        Some(Which::Both) => scenario.schedulers = vec![SchedKind::Gang, SchedKind::Host],
    }
    let drawn = args.svg.is_some() || args.chrome.is_some() || args.perfetto.is_some();
    let window = match (drawn, args.svg_window) {
        (false, Some(_)) => bail!("--svg-window needs --svg, --chrome or --perfetto FILE"),
        (false, None) => None,
        (true, Some(w)) => Some(w),
        (true, None) => Some((0, scenario.duration.min(200 * MS))),
    };
    let started = Instant::now();
    let mut last = Instant::now();
    let quiet = args.quiet;
    let mut progress = |p: &gang_sim::Progress| {
        if quiet || last.elapsed() < WallDuration::from_secs(3) {
            return;
        }
        last = Instant::now();
        eprintln!(
            "gang sim: {}: {:.1}% ({} of {} simulated, {:.0} s wall)",
            p.scheduler,
            p.now as f64 * 100.0 / p.end.max(1) as f64,
            gang_sim::report::human(p.now),
            gang_sim::report::human(p.end),
            started.elapsed().as_secs_f64()
        );
    };
    let outcome =
        gang_sim::simulate(&scenario, window, &mut progress).with_context(|| file.clone())?;
    let json_to_stdout = args.json.as_deref() == Some(Path::new("-"));
    if let Some(path) = &args.json {
        let mut text = serde_json::to_string_pretty(&outcome.report).context("JSON")?;
        text.push('\n');
        write_out(path, &text)?;
    }
    if let Some(path) = &args.svg {
        write_out(path, gang_sim::render_svg(&scenario, &outcome))?;
    }
    if let Some(path) = &args.chrome {
        let text = gang_sim::render_chrome(&scenario, &outcome).context("the Chrome trace")?;
        write_out(path, &text)?;
    }
    if let Some(path) = &args.perfetto {
        let bytes = gang_sim::render_perfetto(&scenario, &outcome).context("the Perfetto trace")?;
        write_out(path, bytes)?;
    }
    let to_stdout = |p: &Option<PathBuf>| p.as_deref() == Some(Path::new("-"));
    if !json_to_stdout
        && !to_stdout(&args.svg)
        && !to_stdout(&args.chrome)
        && !to_stdout(&args.perfetto)
    {
        print!("{}", outcome.report.to_text());
    }
    Ok(())
}
