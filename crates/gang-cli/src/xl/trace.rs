//! `gang trace` (gang's own; xl has none): the slots a gang pool's
//! dispatchers gave a domain, or every domain of a pool, as text, the
//! daemon's JSON, a Chrome trace or an SVG timeline.
//!
//! The Chrome and SVG files are written by `gang_timeline`, the writer
//! `gang sim --chrome|--svg` uses too: this module only turns the daemon's
//! answer into that writer's model ([`to_timeline`]). Command-line mistakes
//! are [`UsageError`]s (exit 2), found before the daemon is asked.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use gang_core::time::{parse_duration, Duration};
use gang_core::{Nanos, MS};
use gang_proto::{RequestBody, ResponseBody, TraceEventKind, TraceMeta, TraceSlot};
use gang_timeline::{Domain, Group, Instant, InstantKind, Meta, Slice, Timeline};

use super::{call, find_domain, UsageError};

/// What `gang trace` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table of the slots grouped by start, per domain, then the events.
    Text,
    /// The daemon's answer as JSON.
    Json,
    /// Trace Event JSON for ui.perfetto.dev and chrome://tracing.
    Chrome,
    /// An SVG picture (one lane per CPU).
    Svg,
    /// Perfetto's protobuf trace format (binary), for ui.perfetto.dev.
    Perfetto,
}

const LONG_ABOUT: &str = "\
Show the recent slots a gang pool's dispatchers gave a domain's vCPUs, or \
every domain's of a pool (--pool): the runtime's own record of what ran where \
(its switch log, the last 65,536 switches of each CPU), with what the daemon \
did meanwhile (pauses, unpauses, migrations, admission changes) and the \
switches that were more than 100us late. Times are pool time: nanoseconds \
since the pool's epoch on the host's CLOCK_MONOTONIC.

FORMATS (--format)

  text    (default) per domain, slots whose starts lie within 0.5 ms of each \
other (and are of different vCPUs) are one line: its start in pool time (ms), \
its length (first start to last end; `+T` while still running), the spread of \
the starts, and the vCPU->CPU placements. A summary line counts the lines \
(slots), the gang slots (all the domain's vCPUs started together) and the \
largest co-start spread. Then the events, one a line.
  json    the daemon's answer as it came (--json is the same): now_ns, the \
slots (vcpu, cpu, start_ns, end_ns = u64::MAX while running, late_ns, domain), \
the domains, the events, since_base_ns and epoch_mono_ns, and meta (host, \
pool, cpus, grain_ns, the shared clock if any, from_ns).
  chrome  the Trace Event JSON format: open it in Perfetto's UI \
(https://ui.perfetto.dev, \"Open trace file\") or in Chrome at \
chrome://tracing (\"Load\"). A process per pool, a thread (track) per \
physical CPU named `CPU N`, a slice per slot named `DOMAIN vN` starting when \
the vCPU really started (the boundary plus the switch's lateness; args: \
domain, domid, vcpu, cpu, planned_ns, late_ns; a thread's tid is its CPU's \
id plus one, as viewers treat thread 0 specially), instant events for \
pause, unpause, migrate, admission and late-switch, and in `otherData` the \
host, pool, clock (pool time's epoch on CLOCK_MONOTONIC, and the shared \
clock's base and cycle if the pool has one), grain and window \
(window_start_ns..window_end_ns: the last D of --last, else from the oldest \
slot). The same format as `gang sim --chrome`.
  perfetto  the same as chrome in Perfetto's own protobuf format \
(binary; smaller, for long windows): a track per pool, a child track `CPU N` \
per CPU, slice begin/end events per slot (annotations domid, vcpu, \
planned_ns, late_ns) and instant events, and a `timeline` instant at the \
window's start whose annotations hold host, pool, clock, grain and window. \
Open it in ui.perfetto.dev (chrome://tracing does not read it). The same \
format as `gang sim --perfetto`.
  svg     a picture: one lane per CPU, a rectangle per slot coloured by \
domain (its tooltip the domain, vCPU and times), coloured ticks for the \
events, a time axis and a legend. The same drawing as `gang sim --svg`. Open \
it in a browser, or convert it (rsvg-convert -o trace.png trace.svg).

Output goes to stdout, or to FILE (`-`: stdout), given after the domain or \
with -o. With --pool the only positional argument is the FILE, which is \
allowed for chrome, perfetto and svg; use -o FILE for text and json.";

const AFTER_HELP: &str = "\
Examples:
  gang trace my-domain
  gang trace --json 3
  gang trace my-domain --format chrome my-domain.json
  gang trace --pool GangSched-Pool --last 2s --format chrome pool.json
  gang trace --pool GangSched-Pool --last 200ms --format svg pool.svg
  gang trace --pool GangSched-Pool --last 30s --format perfetto pool.pftrace
  gang trace --pool GangSched-Pool --format text -o slots.txt

Output (text):
   start(ms)    length   spread  vCPU->CPU ...
     100.000    40.0ms   12.0us  0->1 1->2
slots: 1, gang slots: 1 (all 2 vCPUs started together), max co-start spread: 12.0us

Exit status: 0 written; 1 the daemon refused (no such domain or pool, not \
running in a gang pool) or the file cannot be written; 2 usage error (a \
domain and --pool, a bad --last or --format).

xl has no such command (Xen's equivalent is xentrace).";

/// `gang trace [--format F] [--last D] DOMAIN [FILE] | --pool POOL [FILE]`.
#[derive(Debug, Args)]
#[command(
    about = "Show or write the recent slots a gang pool gave a domain or all its domains (gang's own)",
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP
)]
pub struct TraceArgs {
    /// Print the daemon's raw answer as JSON (the same as --format json).
    #[arg(long = "json", conflicts_with = "format")]
    json: bool,
    /// What to write: text, json, chrome (Perfetto / chrome://tracing),
    /// perfetto (protobuf) or svg.
    #[arg(long, value_enum, value_name = "FORMAT")]
    format: Option<Format>,
    /// Every domain of this gang pool (id or name) instead of one domain.
    #[arg(long = "pool", short = 'p', value_name = "POOL")]
    pool: Option<String>,
    /// Only the slots that ended in the last D (e.g. 2s, 500ms; a bare
    /// number is ms); default: all the runtime still holds.
    #[arg(long, value_name = "D", value_parser = last_arg)]
    last: Option<Nanos>,
    /// Write to FILE instead of stdout (`-`: stdout).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// The domain (id or name); with --pool, the FILE.
    #[arg(value_name = "DOMAIN")]
    domain: Option<String>,
    /// Where to write (`-`: stdout).
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
}

fn last_arg(s: &str) -> Result<Nanos, String> {
    match parse_duration(s, MS) {
        Ok(0) => Err("must be longer than 0".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// What the command line asks for.
#[derive(Debug)]
struct Wanted {
    /// The domain, or
    domain: Option<String>,
    /// the pool.
    pool: Option<String>,
    format: Format,
    /// Where to write (`None`: stdout).
    file: Option<PathBuf>,
}

fn resolve(args: &TraceArgs) -> Result<Wanted> {
    let format = if args.json {
        Format::Json
    } else {
        args.format.unwrap_or(Format::Text)
    };
    let usage = |m: &str| -> anyhow::Error { UsageError(format!("gang trace: {m}")).into() };
    let (domain, positional_file) = match (&args.pool, &args.domain, &args.file) {
        // xl's message for a missing argument, then the help.
        (None, None, _) => return Err(crate::usage::too_few_arguments("trace", 1).into()),
        (None, Some(d), f) => (Some(d.clone()), f.clone()),
        (Some(_), None, _) => (None, None),
        (Some(_), Some(_), Some(_)) => {
            return Err(usage("give a domain or --pool POOL, not both"));
        }
        (Some(_), Some(f), None)
            if matches!(format, Format::Chrome | Format::Svg | Format::Perfetto) =>
        {
            (None, Some(PathBuf::from(f)))
        }
        (Some(_), Some(_), None) => {
            return Err(usage(
                "give a domain or --pool POOL, not both (with --pool, write text or json to a \
                 file with -o FILE)",
            ));
        }
    };
    let file = match (positional_file, &args.output) {
        (Some(_), Some(_)) => return Err(usage("give the FILE once (after the domain or -o)")),
        (f, o) => f.or_else(|| o.clone()),
    };
    let file = file.filter(|f| f != Path::new("-"));
    Ok(Wanted {
        domain,
        pool: args.pool.clone(),
        format,
        file,
    })
}

/// The daemon's trace answer as the writer's model.
pub fn to_timeline(answer: &ResponseBody, title: &str) -> Result<Timeline> {
    let ResponseBody::Trace {
        now_ns,
        slots,
        since_base_ns,
        epoch_mono_ns,
        domains,
        events,
        meta,
    } = answer
    else {
        bail!("unexpected answer from the daemon")
    };
    let mut cpus = meta.cpus.clone();
    if cpus.is_empty() {
        cpus = slots.iter().map(|s| s.cpu).collect();
        cpus.sort_unstable();
        cpus.dedup();
    }
    let mut extra = vec![
        ("now_ns".to_string(), now_ns.to_string()),
        ("epoch_mono_ns".to_string(), epoch_mono_ns.to_string()),
    ];
    if let Some(s) = since_base_ns {
        extra.push(("since_base_ns".to_string(), s.to_string()));
    }
    if let Some(t) = &meta.time {
        extra.push(("base".to_string(), t.base_text()));
        extra.push(("shared_clock".to_string(), t.clock.to_string()));
    }
    let group = Group {
        name: format!("pool {}", meta.pool),
        cpus,
        slices: slots.iter().map(slice_of).collect(),
        instants: events
            .iter()
            .map(|e| Instant {
                at: e.at_ns,
                cpu: e.cpu,
                kind: kind_of(e.kind),
                text: e.text.clone(),
            })
            .collect(),
    };
    Ok(Timeline {
        meta: Meta {
            title: title.to_string(),
            host: Some(meta.host.clone()),
            pool: meta.pool.clone(),
            clock: clock_text(meta, *since_base_ns, *epoch_mono_ns),
            grain_ns: meta.grain_ns,
            cycle_ns: meta.time.map(|t| t.cycle_ns),
            window: (meta.from_ns.min(*now_ns), *now_ns),
            extra,
        },
        domains: domains
            .iter()
            .map(|d| Domain {
                id: d.id,
                name: d.name.clone(),
            })
            .collect(),
        groups: vec![group],
    })
}

fn slice_of(s: &TraceSlot) -> Slice {
    Slice {
        cpu: s.cpu,
        domain: s.domain,
        vcpu: Some(s.vcpu),
        start: s.start_ns,
        end: s.end_ns,
        late: s.late_ns,
    }
}

fn kind_of(k: TraceEventKind) -> InstantKind {
    match k {
        TraceEventKind::Pause => InstantKind::Pause,
        TraceEventKind::Unpause => InstantKind::Unpause,
        TraceEventKind::Migrate => InstantKind::Migrate,
        TraceEventKind::Admission => InstantKind::Admission,
        TraceEventKind::LateSwitch => InstantKind::LateSwitch,
    }
}

/// The clock in words: pool time, its epoch, and the shared clock's base.
fn clock_text(meta: &TraceMeta, since_base: Option<u64>, epoch_mono: u64) -> String {
    let mut s = format!(
        "pool time: ns since the pool's epoch, CLOCK_MONOTONIC {epoch_mono} ns on {}",
        meta.host
    );
    if let Some(t) = &meta.time {
        s.push_str(&format!(
            "; shared {} clock, base {}, cycle {}",
            t.clock,
            t.base_text(),
            Duration(t.cycle_ns)
        ));
        if let Some(b) = since_base {
            s.push_str(&format!(", pool time 0 is base + {b} ns"));
        }
    }
    s
}

/// The text layout: per domain the slot table, then the events.
fn text(answer: &ResponseBody, domain_arg: Option<&str>) -> Result<String> {
    let ResponseBody::Trace {
        now_ns,
        slots,
        domains,
        events,
        ..
    } = answer
    else {
        bail!("unexpected answer from the daemon")
    };
    let mut out = String::new();
    match domain_arg {
        Some(arg) => {
            // One domain: the table alone, as always.
            let vcpus = match domains.first() {
                Some(d) => d.vcpus,
                None => find_domain(arg)?.vcpus,
            };
            out.push_str(&gang_proto::xl::trace(slots, vcpus, *now_ns));
        }
        None => {
            for d in domains {
                let own: Vec<TraceSlot> =
                    slots.iter().filter(|s| s.domain == d.id).copied().collect();
                out.push_str(&format!("Domain {} (id {}):\n", d.name, d.id));
                out.push_str(&gang_proto::xl::trace(&own, d.vcpus, *now_ns));
            }
        }
    }
    if !events.is_empty() {
        out.push_str("events:\n");
        for e in events {
            let cpu = e.cpu.map_or_else(String::new, |c| format!(" cpu {c}"));
            out.push_str(&format!(
                "  {:>12.3} {:<12}{cpu} {}\n",
                e.at_ns as f64 / 1e6,
                kind_of(e.kind).as_str(),
                e.text
            ));
        }
    }
    Ok(out)
}

fn write_out(file: Option<&Path>, text: &[u8]) -> Result<()> {
    match file {
        None => std::io::stdout().write_all(text).context("stdout"),
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
        }
    }
}

pub fn trace(args: &TraceArgs) -> Result<()> {
    let Wanted {
        domain,
        pool,
        format,
        file,
    } = resolve(args)?;
    let answer = call(RequestBody::Trace {
        domain: domain.clone(),
        pool: pool.clone(),
        last_ns: args.last,
    })?;
    let out = match format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&answer)?;
            s.push('\n');
            s.into_bytes()
        }
        Format::Text => text(&answer, domain.as_deref())?.into_bytes(),
        Format::Chrome | Format::Svg | Format::Perfetto => {
            let ResponseBody::Trace { meta, .. } = &answer else {
                bail!("unexpected answer from the daemon")
            };
            let title = match &domain {
                Some(d) => format!("domain {d} in pool {} on {}", meta.pool, meta.host),
                None => format!("pool {} on {}", meta.pool, meta.host),
            };
            let t = to_timeline(&answer, &title)?;
            match format {
                Format::Svg => gang_timeline::svg::render(&t).into_bytes(),
                Format::Perfetto => {
                    gang_timeline::perfetto::write(&t).context("the Perfetto trace")?
                }
                _ => gang_timeline::chrome::write(&t)
                    .context("the Chrome trace")?
                    .into_bytes(),
            }
        }
    };
    write_out(file.as_deref(), &out)
}
