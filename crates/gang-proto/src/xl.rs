//! xl's output layouts, for every client of the API: the same columns,
//! widths and headers as Xen's `xl`, so that scripts and eyes used to xl read
//! `gang` unchanged (the layouts are from XL-REFERENCE.md, checked against
//! xl's source).

use std::fmt::Write;

use crate::{DomainInfo, PoolInfo};

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
    let mut out = String::from(
        "Name                                        ID   Mem VCPUs\tState\tTime(s)\n",
    );
    for d in domains {
        let _ = writeln!(
            out,
            "{:<40} {:>5} {:>5} {:>5}     {}  {:>8.1}",
            d.name, d.id, d.memory_mb, d.vcpus, d.state, d.cpu_time_s
        );
    }
    out
}

/// `list -c`: `list` with a `Cpupool` column (`%16s`, straight after the
/// time, as xl prints it).
pub fn list_with_pools(domains: &[DomainInfo]) -> String {
    let mut out = String::from("Name                                        ID   Mem VCPUs\tState\tTime(s)         Cpupool\n");
    for d in domains {
        let _ = writeln!(
            out,
            "{:<40} {:>5} {:>5} {:>5}     {}  {:>8.1}{:>16}",
            d.name, d.id, d.memory_mb, d.vcpus, d.state, d.cpu_time_s, d.pool
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

/// xl's six-character domain state: `r` running, `b` blocked, `p` paused,
/// `s` shut down, the shutdown reason (`-` poweroff, `r` reboot, `s`
/// suspend, `c` crash, `w` watchdog, `S` soft reset), `d` dying; `-` where
/// not set.
pub fn state(
    running: bool,
    blocked: bool,
    paused: bool,
    shutdown: Option<char>,
    dying: bool,
) -> String {
    let flag = |on: bool, c: char| if on { c } else { '-' };
    let mut s = String::with_capacity(6);
    s.push(flag(running, 'r'));
    s.push(flag(blocked, 'b'));
    s.push(flag(paused, 'p'));
    s.push(flag(shutdown.is_some(), 's'));
    s.push(shutdown.unwrap_or('-'));
    s.push(flag(dying, 'd'));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

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
            state: state.into(),
            cpu_time_s: time,
            pool: pool.into(),
            uuid: String::new(),
            shutdown_code: None,
            reason: None,
            config: serde_json::Value::Null,
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
                sched: "credit2".into(),
                cpus: vec![0, 1, 2, 3],
                domains: 1,
                shared: false,
            },
            PoolInfo {
                id: 1,
                name: "GangSched-Pool".into(),
                sched: "gang".into(),
                cpus: vec![],
                domains: 0,
                shared: false,
            },
        ];
        assert_eq!(
            cpupool_list(&pools[..1], false),
            "Name               CPUs   Sched     Active   Domain count\n\
             Pool-0               4   credit2       y          1\n"
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
        assert_eq!(state(true, false, false, None, false), "r-----");
        assert_eq!(state(false, false, false, Some('r'), false), "---sr-");
        assert_eq!(state(false, false, true, None, false), "--p---");
        assert_eq!(state(false, false, false, Some('c'), true), "---scd");
    }
}
