//! xl's output layouts, for every client of the API: the same columns,
//! widths and headers as Xen's `xl`, so that scripts and eyes used to xl read
//! `gang` unchanged (the layouts are from XL-REFERENCE.md, checked against
//! xl's source).

use std::fmt::Write;

use crate::{
    DispatchHealth, DomainInfo, PoolInfo, SchedGangDomain, SchedGangPool, TraceSlot, VcpuInfo,
};

/// `info`: one line per field, the name left-aligned in 23 columns.
pub fn info(fields: &[(String, String)]) -> String {
    let mut out = String::new();
    for (name, value) in fields {
        let _ = writeln!(out, "{name:<23}: {value}");
    }
    out
}

/// `info FIELD`: the values of the fields whose names start with `prefix`.
pub fn info_field(fields: &[(String, String)], prefix: &str) -> String {
    let mut out = String::new();
    for (_, value) in fields.iter().filter(|(n, _)| n.starts_with(prefix)) {
        let _ = writeln!(out, "{value}");
    }
    out
}

/// `list`: the header (with xl's literal tabs) and one row per domain.
pub fn list(domains: &[DomainInfo]) -> String {
    list_domains(domains, false, false)
}

/// `list -c`: `list` with a `Cpupool` column (`%16s`, straight after the
/// time, as xl prints it).
pub fn list_with_pools(domains: &[DomainInfo]) -> String {
    list_domains(domains, false, true)
}

/// `list [-v] [-c]`, as xl's `list_domains`: the row
/// `%-40s %5d %5lu %5d     %s  %8.1f`; `-v` (`verbose`) adds ` UUID`,
/// ` %8x` of the shutdown reason code (`-` when not shut down) and
/// ` %16s` of the security label (gang has no XSM labels: `-`); `-c`
/// (`cpupool`) adds `%16s` of the pool name, last.
pub fn list_domains(domains: &[DomainInfo], verbose: bool, cpupool: bool) -> String {
    let mut out =
        String::from("Name                                        ID   Mem VCPUs\tState\tTime(s)");
    if verbose {
        out.push_str("   UUID                            Reason-Code\tSecurity Label");
    }
    if cpupool {
        out.push_str("         Cpupool");
    }
    out.push('\n');
    for d in domains {
        let _ = write!(
            out,
            "{:<40} {:>5} {:>5} {:>5}     {}  {:>8.1}",
            d.name,
            d.id,
            d.memory_mb,
            d.vcpus,
            d.state.xl_flags(),
            d.cpu_time_s
        );
        if verbose {
            let uuid = if d.uuid.is_empty() { "-" } else { &d.uuid };
            let _ = write!(out, " {uuid:<36}");
            match d.state.shutdown.map(crate::ShutdownReason::code) {
                Some(code) => {
                    let _ = write!(out, " {code:>8x}");
                }
                None => {
                    let _ = write!(out, " {:>8}", "-");
                }
            }
            let _ = write!(out, " {:>16}", "-");
        }
        if cpupool {
            let _ = write!(out, "{:>16}", d.pool);
        }
        out.push('\n');
    }
    out
}

/// `list -l`: a JSON array of `{"domid": N, "config": {...}}`, one per
/// domain, pretty-printed with four-space indents as xl's yajl
/// "beautify" output, and a final newline.
pub fn list_long(domains: &[DomainInfo]) -> String {
    #[derive(serde::Serialize)]
    struct Entry<'a> {
        domid: u32,
        config: &'a Option<Box<crate::DomainConfig>>,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        threads: &'a [crate::ThreadInfo],
        #[serde(skip_serializing_if = "Option::is_none")]
        cosched: &'a Option<crate::CoschedInfo>,
    }
    let entries: Vec<Entry<'_>> = domains
        .iter()
        .map(|d| Entry {
            domid: d.id,
            config: &d.config,
            threads: &d.threads,
            cosched: &d.cosched,
        })
        .collect();
    let mut buf = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
    // Serializing a Value into memory cannot fail.
    let _ = serde::Serialize::serialize(&entries, &mut ser);
    let mut out = String::from_utf8_lossy(&buf).into_owned();
    out.push('\n');
    out
}

/// `vcpu-list`: xl's header `%-32s %5s %5s %5s %5s %9s %s` and one row per
/// vCPU: `%-32s %5u %5u`, the CPU (`%5u`, or `-` when it is not on one),
/// ` %3c%c%c ` of the state (`r` running, `b` blocked, `p` paused or
/// offline), `%9.1f  ` of the time, then `HARD / SOFT` affinity.
pub fn vcpu_list(vcpus: &[VcpuInfo]) -> String {
    let mut out = format!(
        "{:<32} {:>5} {:>5} {:>5} {:>5} {:>9} {}\n",
        "Name", "ID", "VCPU", "CPU", "State", "Time(s)", "Affinity (Hard / Soft)"
    );
    let flag = |on: bool, c: char| if on { c } else { '-' };
    for v in vcpus {
        let cpu = v.cpu.map_or_else(|| "-".to_string(), |c| c.to_string());
        let _ = writeln!(
            out,
            "{:<32} {:>5} {:>5}{:>5} {:>3}{}{} {:>9.1}  {} / {}",
            v.domain,
            v.domid,
            v.vcpu,
            cpu,
            flag(v.running, 'r'),
            flag(v.blocked, 'b'),
            flag(v.paused, 'p'),
            v.time_s,
            v.hard_affinity,
            v.soft_affinity
        );
    }
    out
}

/// `cpupool-list`, or with `cpus` (`-c`) the CPU list: xl prints every CPU
/// number, comma-separated, not ranges.
pub fn cpupool_list(pools: &[PoolInfo], cpus: bool) -> String {
    let mut out = String::new();
    let _ = write!(out, "{:<19}", "Name");
    out.push_str(if cpus {
        "CPU list\n"
    } else {
        "CPUs   Sched     Active   Domain count\n"
    });
    for p in pools {
        let _ = write!(out, "{:<19}", p.name);
        if cpus {
            let list: Vec<String> = p.cpus.iter().map(u32::to_string).collect();
            let _ = writeln!(out, "{}", list.join(","));
        } else {
            let _ = writeln!(
                out,
                "{:>3} {:>9}       y       {:>4}",
                p.cpus.len(),
                p.sched,
                p.domains
            );
        }
    }
    out
}

/// A duration for people, with one decimal in the largest unit below it:
/// `40.0ms`, `12.5us`, `1.250s`, `800ns`.
pub fn human_duration(ns: u64) -> String {
    const US: f64 = 1e3;
    const MS: f64 = 1e6;
    const S: f64 = 1e9;
    let x = ns as f64;
    if ns < 1_000 {
        format!("{ns}ns")
    } else if x < MS {
        format!("{:.1}us", x / US)
    } else if x < S {
        format!("{:.1}ms", x / MS)
    } else {
        format!("{:.3}s", x / S)
    }
}

/// The pool line of `sched-gang`, in the shape of xl's scheduler commands
/// (`Cpupool Pool-0: tslice=30ms ...`):
/// `Cpupool NAME: sched=gang grain=1ms cpus=1-2 shared=no active=yes`; a
/// pool with a host slot adds `host-slot=ACTIVE/PERIOD`, the slot each of its CPUs
/// keeps for the host.
pub fn sched_gang_pool_line(pool: &SchedGangPool) -> String {
    let cpus: gang_core::CpuSet = pool.cpus.iter().copied().collect();
    let cpus = if cpus.is_empty() {
        "none".to_string()
    } else {
        cpus.to_string()
    };
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let mut line = format!(
        "Cpupool {}: sched=gang grain={} cpus={cpus} shared={}",
        pool.name,
        gang_core::time::Duration(pool.grain_ns),
        yes_no(pool.shared)
    );
    if let Some((period, active)) = pool.host_slot_ns {
        let _ = write!(
            line,
            " host-slot={}/{}",
            gang_core::time::Duration(active),
            gang_core::time::Duration(period)
        );
    }
    if let Some(t) = &pool.time {
        let _ = write!(
            line,
            " clock={} base={} cycle={}{}",
            t.clock,
            t.base_text(),
            gang_core::time::Duration(t.cycle_ns),
            if t.require_sync { " sync=required" } else { "" }
        );
    }
    let _ = write!(line, " active={}", yes_no(pool.active));
    line
}

/// The line under a pool on a shared clock: `  clock: synchronised (est.
/// error 12us, max 150us, TAI-UTC 37s)`, and a step if the clock stepped
/// under the running pool.
pub fn clock_line(c: &crate::ClockInfo) -> String {
    let mut line = format!(
        "  clock: {} (est. error {}us, max {}us, TAI-UTC {}s)",
        if c.synchronised {
            "synchronised"
        } else {
            "NOT synchronised"
        },
        c.est_error_us,
        c.max_error_us,
        c.tai_offset_s
    );
    if let Some(step) = c.stepped_ns {
        let _ = write!(
            line,
            "; stepped {}{} since the pool started: out of phase with other hosts until it restarts",
            if step < 0 { "-" } else { "+" },
            human_duration(step.unsigned_abs())
        );
    }
    line
}

/// The table header of `sched-gang`: `%-33s %4s %-22s %-10s %s`.
pub const SCHED_GANG_HEADER: &str =
    "Name                                ID Policy                 CPUs       Recv(last period)";

/// One row of `sched-gang`: name, id, policy (`-` if none), CPU map (`-` if
/// none), and the CPU time all its vCPUs received in the last accounting
/// window over that window (`40.0ms/100ms`).
pub fn sched_gang_row(d: &SchedGangDomain) -> String {
    let recv = format!(
        "{}/{}",
        human_duration(d.received_ns),
        gang_core::time::Duration(d.window_ns)
    );
    let policy = d.policy.map_or_else(|| "-".to_string(), |p| p.to_string());
    let map = d.cpu_map.as_ref().map_or_else(
        || "-".to_string(),
        |m| {
            m.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        },
    );
    format!("{:<33} {:>4} {policy:<22} {map:<10} {recv}", d.name, d.id)
}

/// The line under a running pool's: `  dispatch (last 1s): 240 switches,
/// late p50/p99/max 0.0/12.3/45.0us, spin 45.0us`.
pub fn dispatch_line(d: &DispatchHealth) -> String {
    let us = |ns: u64| ns as f64 / 1e3;
    format!(
        "  dispatch (last {}): {} switches, late p50/p99/max {:.1}/{:.1}/{:.1}us, spin {:.1}us",
        gang_core::time::Duration(d.window_ns),
        d.switches,
        us(d.late_p50_ns),
        us(d.late_p99_ns),
        us(d.late_max_ns),
        us(d.spin_ns)
    )
}

/// The co-scheduling line under a domain's row (`sched-gang -v`):
/// `    cosched (last 1s, events): all-running 97.1%, co-stop 0.2%, ready
/// 0.0%, running 48.6%, blocked 51.4%, skew p50/p99 1.2/8.5us over 480
/// gang starts, 2 late switches`.
pub fn cosched_line(c: &crate::CoschedInfo) -> String {
    let m = &c.metrics;
    let pct = |x: f64| x * 100.0;
    let source = match c.source {
        crate::CoschedSource::Events => "events",
        crate::CoschedSource::Sampled => "sampled",
    };
    format!(
        "    cosched (last {}, {source}): all-running {:.1}%, co-stop {:.1}%, ready {:.1}%, \
         running {:.1}%, blocked {:.1}%, skew p50/p99 {:.1}/{:.1}us over {} gang starts, {} late \
         switches",
        gang_core::time::Duration(m.window_ns),
        pct(m.all_running),
        pct(m.co_stop),
        pct(m.ready),
        pct(m.running),
        pct(m.blocked),
        m.skew_p50_ns as f64 / 1e3,
        m.skew_p99_ns as f64 / 1e3,
        m.skew_samples,
        m.late_switches
    )
}

/// `sched-gang -v`: [`sched_gang`] with each domain's [`cosched_line`]
/// under its row (when it has metrics).
pub fn sched_gang_verbose(pools: &[SchedGangPool]) -> String {
    let mut out = String::new();
    for pool in pools {
        let _ = writeln!(out, "{}", sched_gang_pool_line(pool));
        if let Some(c) = &pool.clock {
            let _ = writeln!(out, "{}", clock_line(c));
        }
        if let Some(d) = &pool.dispatch {
            let _ = writeln!(out, "{}", dispatch_line(d));
        }
        let _ = writeln!(out, "{SCHED_GANG_HEADER}");
        for d in &pool.domains {
            let _ = writeln!(out, "{}", sched_gang_row(d));
            if let Some(c) = &d.cosched {
                let _ = writeln!(out, "{}", cosched_line(c));
            }
        }
    }
    out
}

/// `sched-gang`: for each gang pool its pool line (and, while it runs, its
/// dispatch line), the table header and one row per domain.
pub fn sched_gang(pools: &[SchedGangPool]) -> String {
    let mut out = String::new();
    for pool in pools {
        let _ = writeln!(out, "{}", sched_gang_pool_line(pool));
        if let Some(c) = &pool.clock {
            let _ = writeln!(out, "{}", clock_line(c));
        }
        if let Some(d) = &pool.dispatch {
            let _ = writeln!(out, "{}", dispatch_line(d));
        }
        let _ = writeln!(out, "{SCHED_GANG_HEADER}");
        for d in &pool.domains {
            let _ = writeln!(out, "{}", sched_gang_row(d));
        }
    }
    out
}

/// Slots whose starts lie within this of the first slot of a group count as
/// started together (half the default 1 ms grain).
pub const CO_START_TOLERANCE_NS: u64 = 500_000;

/// The slots of a domain's vCPUs that started together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotGroup {
    /// The earliest start, ns.
    pub start_ns: u64,
    /// The latest end, ns (`u64::MAX` if one is still running).
    pub end_ns: u64,
    /// Latest start minus earliest start, ns.
    pub spread_ns: u64,
    /// `(vcpu, cpu)` pairs, by vCPU.
    pub placements: Vec<(u32, gang_core::CpuId)>,
}

/// Groups slots by when they really began (`start_ns + late_ns`): sorted
/// so, a slot joins the current group when it began within
/// [`CO_START_TOLERANCE_NS`] of the group's first slot and its vCPU is not
/// in the group yet.
pub fn trace_groups(slots: &[TraceSlot]) -> Vec<SlotGroup> {
    let began = |s: &TraceSlot| s.start_ns.saturating_add(s.late_ns);
    let mut sorted = slots.to_vec();
    sorted.sort_by_key(|s| (began(s), s.vcpu));
    let mut groups: Vec<SlotGroup> = Vec::new();
    for s in sorted {
        let start = began(&s);
        match groups.last_mut() {
            Some(g)
                if start - g.start_ns <= CO_START_TOLERANCE_NS
                    && !g.placements.iter().any(|&(v, _)| v == s.vcpu) =>
            {
                g.end_ns = g.end_ns.max(s.end_ns);
                g.spread_ns = start - g.start_ns;
                g.placements.push((s.vcpu, s.cpu));
            }
            _ => groups.push(SlotGroup {
                start_ns: start,
                end_ns: s.end_ns,
                spread_ns: 0,
                placements: vec![(s.vcpu, s.cpu)],
            }),
        }
    }
    for g in &mut groups {
        g.placements.sort_unstable();
    }
    groups
}

/// What `trace` sums up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSummary {
    /// Groups of slots (slots started together count once).
    pub slots: usize,
    /// Groups in which all the domain's vCPUs started together.
    pub gang_slots: usize,
    /// The largest start spread within a group of two or more vCPUs, ns.
    pub max_spread_ns: Option<u64>,
}

/// Sums up grouped slots of a domain with `vcpus` vCPUs.
pub fn trace_summary(groups: &[SlotGroup], vcpus: u32) -> TraceSummary {
    TraceSummary {
        slots: groups.len(),
        gang_slots: groups
            .iter()
            .filter(|g| g.placements.len() == vcpus as usize)
            .count(),
        max_spread_ns: groups
            .iter()
            .filter(|g| g.placements.len() > 1)
            .map(|g| g.spread_ns)
            .max(),
    }
}

/// `trace`: a table of the slots grouped by start (pool time in ms with
/// three decimals, the group's length from its first start to its last end,
/// the start spread, the `vCPU->CPU` placements), then the summary line
/// `slots: N, gang slots: G (all V vCPUs started together), max co-start
/// spread: S`.
pub fn trace(slots: &[TraceSlot], vcpus: u32, now_ns: u64) -> String {
    let groups = trace_groups(slots);
    let mut out = format!(
        "{:>12} {:>9} {:>8}  {}\n",
        "start(ms)", "length", "spread", "vCPU->CPU ..."
    );
    for g in &groups {
        let length = if g.end_ns == u64::MAX {
            format!("+{}", human_duration(now_ns.saturating_sub(g.start_ns)))
        } else {
            human_duration(g.end_ns.saturating_sub(g.start_ns))
        };
        let placements: Vec<String> = g
            .placements
            .iter()
            .map(|(v, c)| format!("{v}->{c}"))
            .collect();
        let _ = writeln!(
            out,
            "{:>12.3} {:>9} {:>8}  {}",
            g.start_ns as f64 / 1e6,
            length,
            human_duration(g.spread_ns),
            placements.join(" ")
        );
    }
    let summary = trace_summary(&groups, vcpus);
    let _ = writeln!(
        out,
        "slots: {}, gang slots: {} (all {vcpus} vCPUs started together), max co-start spread: {}",
        summary.slots,
        summary.gang_slots,
        summary
            .max_spread_ns
            .map_or_else(|| "-".to_string(), human_duration)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RunState, Sched, ShutdownReason};

    /// A run state from xl's six characters.
    fn flags(text: &str) -> RunState {
        let state = RunState::parse_xl_flags(text).expect("six flags");
        assert_eq!(state.xl_flags(), text, "round trip");
        state
    }

    fn dom(
        name: &str,
        id: u32,
        mem: u64,
        vcpus: u32,
        state: &str,
        time: f64,
        pool: &str,
    ) -> DomainInfo {
        DomainInfo {
            id,
            name: name.into(),
            memory_mb: mem,
            vcpus,
            state: flags(state),
            cpu_time_s: time,
            pool: pool.into(),
            uuid: String::new(),
            reason: None,
            config: None,
            threads: Vec::new(),
            cosched: None,
        }
    }

    #[test]
    fn list_matches_xl() {
        let text = list(&[
            dom("Domain-0", 0, 4096, 4, "r-----", 1234.5, "Pool-0"),
            dom("guest1", 3, 2048, 2, "---sr-", 56.7, "Pool-0"),
        ]);
        assert_eq!(
            text,
            "Name                                        ID   Mem VCPUs\tState\tTime(s)\n\
             Domain-0                                     0  4096     4     r-----    1234.5\n\
             guest1                                       3  2048     2     ---sr-      56.7\n"
        );
    }

    #[test]
    fn list_with_pools_adds_a_column() {
        let text = list_with_pools(&[dom("g", 1, 512, 2, "-b----", 0.25, "GangSched-Pool")]);
        assert_eq!(
            text,
            "Name                                        ID   Mem VCPUs\tState\tTime(s)         Cpupool\n\
             g                                            1   512     2     -b----       0.2  GangSched-Pool\n"
        );
    }

    #[test]
    fn cpupool_list_matches_xl() {
        let pools = [
            PoolInfo {
                id: 0,
                name: "Pool-0".into(),
                sched: Sched::Host,
                cpus: vec![0, 1, 2, 3],
                domains: 1,
                shared: false,
            },
            PoolInfo {
                id: 1,
                name: "GangSched-Pool".into(),
                sched: Sched::Gang,
                cpus: vec![],
                domains: 0,
                shared: false,
            },
        ];
        assert_eq!(
            cpupool_list(&pools[..1], false),
            "Name               CPUs   Sched     Active   Domain count\n\
             Pool-0               4      host       y          1\n"
        );
        assert_eq!(
            cpupool_list(&pools, true),
            "Name               CPU list\nPool-0             0,1,2,3\nGangSched-Pool     \n"
        );
    }

    #[test]
    fn info_aligns_names_in_23_columns_and_filters_by_prefix() {
        let fields = vec![
            ("host".to_string(), "h1".to_string()),
            ("nr_cpus".to_string(), "2".to_string()),
        ];
        assert_eq!(
            info(&fields),
            "host                   : h1\nnr_cpus                : 2\n"
        );
        assert_eq!(info_field(&fields, "nr_"), "2\n");
        assert_eq!(info_field(&fields, "zzz"), "");
    }

    #[test]
    fn states_have_six_characters() {
        for text in [
            "r-----", "-b----", "---sr-", "--p---", "---scd", "---s--", "---sS-",
        ] {
            assert_eq!(flags(text).xl_flags(), text);
        }
        let crashed = RunState {
            shutdown: Some(ShutdownReason::Crash),
            dying: true,
            ..RunState::default()
        };
        assert_eq!(crashed.xl_flags(), "---scd");
        for bad in ["", "r----", "x-----", "----r-", "r------"] {
            assert_eq!(RunState::parse_xl_flags(bad), None, "{bad:?}");
        }
    }

    fn verbose_dom() -> (DomainInfo, DomainInfo) {
        let mut a = dom("Domain-0", 0, 4096, 4, "r-----", 1234.5, "Pool-0");
        a.uuid = "00000000-0000-0000-0000-000000000000".into();
        let mut b = dom("guest1", 3, 2048, 2, "---sr-", 56.7, "GangSched-Pool");
        b.uuid = "5d2d7fd4-4e39-4b0c-9f3a-1b2c3d4e5f60".into();
        (a, b)
    }

    #[test]
    fn list_verbose_adds_uuid_reason_and_label_as_xl() {
        let (a, b) = verbose_dom();
        assert_eq!(
            list_domains(&[a.clone(), b.clone()], true, false),
            "Name                                        ID   Mem VCPUs\tState\tTime(s)   UUID                            Reason-Code\tSecurity Label\n\
             Domain-0                                     0  4096     4     r-----    1234.5 00000000-0000-0000-0000-000000000000        -                -\n\
             guest1                                       3  2048     2     ---sr-      56.7 5d2d7fd4-4e39-4b0c-9f3a-1b2c3d4e5f60        1                -\n"
        );
        // -v -c: the Cpupool column last; the reason code (xl's %8x).
        let mut c = b;
        c.state.shutdown = Some(ShutdownReason::SoftReset);
        c.uuid = String::new();
        assert_eq!(
            list_domains(&[c], true, true),
            "Name                                        ID   Mem VCPUs\tState\tTime(s)   UUID                            Reason-Code\tSecurity Label         Cpupool\n\
             guest1                                       3  2048     2     ---sS-      56.7 -                                           5                -  GangSched-Pool\n"
        );
        let _ = a;
    }

    #[test]
    fn list_long_is_a_pretty_json_array_of_domid_and_config() {
        let (a, mut b) = verbose_dom();
        let text = "name = \"guest1\"\nvcpus = 2\ncommand = \"true\"\n";
        let cfg = gang_config::Config::parse("guest1.cfg", text).expect("parses");
        b.config = Some(Box::new(
            gang_config::DomainConfig::from_config(&cfg).expect("a domain"),
        ));
        let out = list_long(&[a, b]);
        assert!(
            out.starts_with("[\n    {\n        \"domid\": 0,\n        \"config\": null\n    },"),
            "{out}"
        );
        assert!(out.ends_with("}\n]\n"), "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        assert_eq!(v[1]["domid"], 3);
        assert_eq!(v[1]["config"]["name"], "guest1");
        assert_eq!(v[1]["config"]["vcpus"], 2);
        assert_eq!(list_long(&[]), "[]\n");
    }

    fn vcpu(
        domain: &str,
        domid: u32,
        n: u32,
        cpu: Option<u32>,
        rbp: (bool, bool, bool),
        t: f64,
    ) -> VcpuInfo {
        VcpuInfo {
            domain: domain.into(),
            domid,
            vcpu: n,
            cpu,
            running: rbp.0,
            blocked: rbp.1,
            paused: rbp.2,
            time_s: t,
            hard_affinity: "all".into(),
            soft_affinity: "all".into(),
        }
    }

    #[test]
    fn vcpu_list_matches_xl() {
        let text = vcpu_list(&[
            vcpu("Domain-0", 0, 0, Some(2), (true, false, false), 12.3),
            vcpu("guest1", 3, 2, None, (false, false, true), 0.0),
        ]);
        assert_eq!(
            text,
            "Name                                ID  VCPU   CPU State   Time(s) Affinity (Hard / Soft)\n\
             Domain-0                             0     0    2   r--      12.3  all / all\n\
             guest1                               3     2    -   --p       0.0  all / all\n"
        );
        let mut v = vcpu("g", 1, 0, None, (false, true, false), 1.25);
        v.hard_affinity = "1-2".into();
        v.soft_affinity = "none".into();
        assert!(vcpu_list(&[v]).ends_with("    -   -b-       1.2  1-2 / none\n"));
    }

    fn gang_pool() -> SchedGangPool {
        SchedGangPool {
            dispatch: None,
            time: None,
            clock: None,
            name: "GangSched-Pool".into(),
            id: 1,
            grain_ns: 1_000_000,
            cpus: vec![1, 2],
            shared: false,
            host_slot_ns: None,
            active: true,
            domains: vec![
                SchedGangDomain {
                    name: "my-domain".into(),
                    id: 2,
                    policy: Some("tt,100ms,40ms".parse().expect("a policy")),
                    cpu_map: Some(vec![1, 2]),
                    window_ns: 100_000_000,
                    received_ns: 40_000_000,
                    cosched: None,
                },
                SchedGangDomain {
                    name: "idle".into(),
                    id: 5,
                    policy: None,
                    cpu_map: None,
                    window_ns: 1_000_000_000,
                    received_ns: 0,
                    cosched: None,
                },
            ],
        }
    }

    #[test]
    fn sched_gang_prints_a_pool_line_and_a_table() {
        assert_eq!(
            sched_gang(&[gang_pool()]),
            "Cpupool GangSched-Pool: sched=gang grain=1ms cpus=1-2 shared=no active=yes\n\
             Name                                ID Policy                 CPUs       Recv(last period)\n\
             my-domain                            2 tt,100ms,40ms          1,2        40.0ms/100ms\n\
             idle                                 5 -                      -          0ns/1s\n"
        );
        let mut shared = gang_pool();
        shared.shared = true;
        shared.host_slot_ns = Some((100_000_000, 10_000_000));
        shared.active = false;
        shared.cpus = vec![];
        assert_eq!(
            sched_gang_pool_line(&shared),
            "Cpupool GangSched-Pool: sched=gang grain=1ms cpus=none shared=yes host-slot=10ms/100ms active=no"
        );
        assert_eq!(sched_gang(&[]), "");
    }

    #[test]
    fn a_pool_on_a_shared_clock_shows_it_and_the_clocks_state() {
        let mut pool = gang_pool();
        pool.domains.clear();
        pool.time =
            Some(crate::SharedTime::parse("tai", "2026-12-01T00:00:00Z").expect("a setting"));
        pool.clock = Some(crate::ClockInfo {
            synchronised: true,
            est_error_us: 12,
            max_error_us: 150,
            tai_offset_s: 37,
            stepped_ns: None,
        });
        assert_eq!(
            sched_gang(&[pool.clone()]),
            "Cpupool GangSched-Pool: sched=gang grain=1ms cpus=1-2 shared=no \
             clock=tai base=2026-12-01T00:00:00Z cycle=1s active=yes\n\
             \x20 clock: synchronised (est. error 12us, max 150us, TAI-UTC 37s)\n\
             Name                                ID Policy                 CPUs       Recv(last period)\n"
        );
        let clock = pool.clock.as_mut().expect("set");
        clock.synchronised = false;
        clock.stepped_ns = Some(-2_500_000);
        assert_eq!(
            clock_line(clock),
            "  clock: NOT synchronised (est. error 12us, max 150us, TAI-UTC 37s); stepped -2.5ms \
             since the pool started: out of phase with other hosts until it restarts"
        );
    }

    #[test]
    fn a_running_pool_shows_how_its_dispatchers_kept_time() {
        let mut pool = gang_pool();
        pool.domains.clear();
        pool.dispatch = Some(DispatchHealth {
            window_ns: 1_000_000_000,
            switches: 240,
            late_p50_ns: 0,
            late_p99_ns: 12_345,
            late_max_ns: 45_000,
            spin_ns: 45_000,
        });
        assert_eq!(
            sched_gang(&[pool]),
            "Cpupool GangSched-Pool: sched=gang grain=1ms cpus=1-2 shared=no active=yes\n\
             \x20 dispatch (last 1s): 240 switches, late p50/p99/max 0.0/12.3/45.0us, spin 45.0us\n\
             Name                                ID Policy                 CPUs       Recv(last period)\n"
        );
    }

    #[test]
    fn human_durations_pick_a_unit() {
        assert_eq!(human_duration(0), "0ns");
        assert_eq!(human_duration(999), "999ns");
        assert_eq!(human_duration(12_500), "12.5us");
        assert_eq!(human_duration(40_000_000), "40.0ms");
        assert_eq!(human_duration(1_250_000_000), "1.250s");
    }

    fn slot(vcpu: u32, cpu: u32, start_ns: u64, end_ns: u64) -> TraceSlot {
        TraceSlot {
            late_ns: 0,
            domain: 0,
            vcpu,
            cpu,
            start_ns,
            end_ns,
        }
    }

    #[test]
    fn trace_groups_slots_by_start_and_sums_up() {
        let ms = 1_000_000;
        let slots = [
            slot(1, 2, 100 * ms + 12_000, 140 * ms),
            slot(0, 1, 100 * ms, 140 * ms),
            slot(0, 1, 200 * ms, 240 * ms),
            slot(1, 2, 200 * ms + 3_000, 240 * ms),
            // vCPU 0 alone (vCPU 1 two grains later: another group).
            slot(0, 1, 300 * ms, 310 * ms),
            slot(1, 2, 302 * ms, u64::MAX),
        ];
        let groups = trace_groups(&slots);
        assert_eq!(groups.len(), 4);
        assert_eq!(groups[0].placements, vec![(0, 1), (1, 2)]);
        assert_eq!(groups[0].spread_ns, 12_000);
        assert_eq!(
            trace_summary(&groups, 2),
            TraceSummary {
                slots: 4,
                gang_slots: 2,
                max_spread_ns: Some(12_000)
            }
        );
        assert_eq!(
            trace(&slots, 2, 305 * ms),
            "   start(ms)    length   spread  vCPU->CPU ...\n\
             \x20    100.000    40.0ms   12.0us  0->1 1->2\n\
             \x20    200.000    40.0ms    3.0us  0->1 1->2\n\
             \x20    300.000    10.0ms      0ns  0->1\n\
             \x20    302.000    +3.0ms      0ns  1->2\n\
             slots: 4, gang slots: 2 (all 2 vCPUs started together), max co-start spread: 12.0us\n"
        );
        // Adopted threads: the same boundary, real starts late_ns after it
        // (the kernel's scheduler events): the spread is theirs.
        let mut a = slot(0, 1, 400 * ms, 440 * ms);
        a.late_ns = 4_000;
        let mut b = slot(1, 2, 400 * ms, 440 * ms);
        b.late_ns = 31_000;
        let groups = trace_groups(&[a, b]);
        assert_eq!(groups.len(), 1);
        assert_eq!(
            (groups[0].start_ns, groups[0].spread_ns),
            (400 * ms + 4_000, 27_000)
        );
        // The same vCPU twice within the tolerance: two groups.
        let twice = [slot(0, 1, 0, 100), slot(0, 1, 200, 300)];
        assert_eq!(trace_groups(&twice).len(), 2);
        assert_eq!(
            trace(&[], 2, 0),
            "   start(ms)    length   spread  vCPU->CPU ...\n\
             slots: 0, gang slots: 0 (all 2 vCPUs started together), max co-start spread: -\n"
        );
    }
}
