//! `gang top`: the domains' CPU use, refreshed (xl's `top`, which runs
//! xentop): one table per interval, computed from two `list` answers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use gang_proto::{DomainInfo, RequestBody, ResponseBody};

use super::call;

/// `gang top [-d DELAY] [-i ITERATIONS]`.
#[derive(Debug, Args)]
#[command(
    about = "Show the domains' CPU use, refreshed (like xentop)",
    long_about = "Print a table of every domain (Domain-0 included) every DELAY: state, CPU time, \
the CPU used over the last interval as a percentage of one CPU, memory, vCPUs and pool; for \
a domain of a gang pool, over the last second, from when its threads really ran (the kernel's \
scheduler events): ALLRUN, the time all its vCPUs ran together; COSTOP, the time some ran while \
a sibling was runnable but held (VMware's %CSTP); READY, runnable but not running (%RDY); \
SKEW99, the 99th percentile co-start skew of its gang starts. \
Batch-style output (one table after another), so it can be piped or logged.",
    after_help = "Examples:\n  gang top\n  gang top -d 0.5 -i 10 > cpu.log\n\n\
Differences from xl: no curses screen (xentop's batch mode layout); the columns are those gang \
knows (no network or block I/O counters)."
)]
pub struct TopArgs {
    /// Seconds between tables.
    #[arg(short = 'd', long = "delay", default_value_t = 1.0)]
    delay: f64,
    /// Number of tables to print (0: until interrupted).
    #[arg(short = 'i', long = "iterations", default_value_t = 0)]
    iterations: u64,
}

fn domains() -> Result<Vec<DomainInfo>> {
    match call(RequestBody::ListDomains { detail: false })? {
        ResponseBody::Domains { domains } => Ok(domains),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    }
}

/// One table: `now` against `before` (CPU seconds by domain id) over `secs`.
pub fn table(now: &[DomainInfo], before: &BTreeMap<u32, f64>, secs: f64) -> String {
    let mut out = format!(
        "{:>20} {:>6} {:>10} {:>6} {:>8} {:>5} {:>16} {:>9} {:>9} {:>8} {:>10}\n",
        "NAME",
        "STATE",
        "CPU(sec)",
        "CPU(%)",
        "MEM(MB)",
        "VCPUS",
        "POOL",
        "ALLRUN(%)",
        "COSTOP(%)",
        "READY(%)",
        "SKEW99(us)"
    );
    for d in now {
        let used = before
            .get(&d.id)
            .map_or(0.0, |b| (d.cpu_time_s - b).max(0.0));
        let pct = if secs > 0.0 { used / secs * 100.0 } else { 0.0 };
        // The co-scheduling columns: `-` outside gang pools (and from a
        // daemon that does not measure them).
        let cosched = d.cosched.map(|c| c.metrics);
        let share = |f: fn(&gang_core::cosched::CoschedMetrics) -> f64| {
            cosched.map_or_else(|| "-".to_string(), |m| format!("{:.1}", f(&m) * 100.0))
        };
        let skew = cosched.filter(|m| m.skew_samples > 0).map_or_else(
            || "-".to_string(),
            |m| format!("{:.1}", m.skew_p99_ns as f64 / 1e3),
        );
        out.push_str(&format!(
            "{:>20} {:>6} {:>10.1} {:>6.1} {:>8} {:>5} {:>16} {:>9} {:>9} {:>8} {:>10}\n",
            d.name,
            d.state.xl_flags(),
            d.cpu_time_s,
            pct,
            d.memory_mb,
            d.vcpus,
            d.pool,
            share(|m| m.all_running),
            share(|m| m.co_stop),
            share(|m| m.ready),
            skew
        ));
    }
    out
}

pub fn top(args: &TopArgs) -> Result<()> {
    if !(args.delay > 0.0 && args.delay.is_finite()) {
        bail!("-d {}: give a positive number of seconds", args.delay);
    }
    let delay = Duration::from_secs_f64(args.delay);
    let mut before: BTreeMap<u32, f64> = domains()
        .context("asking the daemon")?
        .iter()
        .map(|d| (d.id, d.cpu_time_s))
        .collect();
    let mut at = Instant::now();
    let mut printed = 0;
    while args.iterations == 0 || printed < args.iterations {
        std::thread::sleep(delay);
        let now = domains()?;
        let secs = at.elapsed().as_secs_f64();
        at = Instant::now();
        print!("{}", table(&now, &before, secs));
        println!();
        before = now.iter().map(|d| (d.id, d.cpu_time_s)).collect();
        printed += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_is_the_cpu_time_used_over_the_interval() {
        let d = DomainInfo {
            id: 3,
            name: "g".into(),
            memory_mb: 16,
            vcpus: 2,
            state: gang_proto::RunState {
                running: true,
                ..Default::default()
            },
            cpu_time_s: 11.5,
            pool: "Wide".into(),
            uuid: String::new(),
            reason: None,
            config: None,
            threads: Vec::new(),
            cosched: None,
        };
        let before = BTreeMap::from([(3, 10.0)]);
        let mut gang = d.clone();
        gang.cosched = Some(gang_proto::CoschedInfo {
            metrics: gang_core::cosched::CoschedMetrics {
                all_running: 0.9712,
                co_stop: 0.002,
                ready: 0.0,
                skew_p99_ns: 8_460,
                skew_samples: 400,
                ..Default::default()
            },
            source: gang_proto::CoschedSource::Events,
        });
        let t = table(&[d, gang], &before, 1.0);
        assert_eq!(
            t,
            "                NAME  STATE   CPU(sec) CPU(%)  MEM(MB) VCPUS             POOL \
             ALLRUN(%) COSTOP(%) READY(%) SKEW99(us)\n\
             \x20                  g r-----       11.5  150.0       16     2             Wide \
             \x20       -         -        -          -\n\
             \x20                  g r-----       11.5  150.0       16     2             Wide \
             \x20    97.1       0.2      0.0        8.5\n"
        );
    }
}
