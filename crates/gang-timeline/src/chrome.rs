//! The Trace Event JSON format (Chrome's "JSON Object Format"), which
//! Perfetto's UI (ui.perfetto.dev, "Open trace file") and chrome://tracing
//! open.
//!
//! Layout: `{"traceEvents": [...], "displayTimeUnit": "ns", "otherData":
//! {...}}`. Each [`Group`](crate::Group) is a process (`pid` = its position
//! plus one, named by a `process_name` metadata event), each of its CPUs a
//! thread (`tid` = the CPU's id plus one, [`tid`], named `CPU N` by a
//! `thread_name` event and sorted by id). A slot is a complete event (`"ph": "X"`) named
//! `DOMAIN vN`, `ts` its real start and `dur` its length in microseconds
//! (floats: nanoseconds kept), its `args` the domain's id and name, the
//! vCPU, the planned start and the lateness in ns. An instant is an `"i"`
//! event on its CPU's thread (`"s": "t"`) or over the whole process
//! (`"s": "p"`), named by its kind, its text in `args`. `otherData` holds
//! the host, pool, clock, grain, cycle and window, and the extra pairs.
//!
//! Invariant: [`write`] checks the timeline first ([`Timeline::check`]), so
//! the slices of one thread never overlap.

use serde_json::{json, Map, Value};

use crate::{Timeline, TimelineError};

/// The thread id of CPU `cpu`: its id plus one, because viewers treat
/// thread 0 specially (Perfetto's UI merged a `tid` 0 into `tid` 1 until
/// mid-2025; Linux's thread 0 is the idle task).
pub fn tid(cpu: u32) -> u64 {
    u64::from(cpu) + 1
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

/// The events and metadata of `t` as a JSON value.
pub fn to_value(t: &Timeline) -> Result<Value, TimelineError> {
    t.check()?;
    let mut events = Vec::new();
    for (g, group) in t.groups.iter().enumerate() {
        let pid = g + 1;
        events.push(json!({"ph": "M", "name": "process_name", "pid": pid,
            "args": {"name": group.name}}));
        events.push(json!({"ph": "M", "name": "process_sort_index", "pid": pid,
            "args": {"sort_index": pid}}));
        for &cpu in &group.cpus {
            events.push(
                json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid(cpu),
                "args": {"name": format!("CPU {cpu}")}}),
            );
            events.push(
                json!({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid(cpu),
                "args": {"sort_index": cpu}}),
            );
        }
        for s in t.clipped(group) {
            let name = t
                .domain_index(s.domain)
                .map_or("?", |d| t.domains[d].name.as_str());
            let label = match s.vcpu {
                Some(v) => format!("{name} v{v}"),
                None => name.to_string(),
            };
            let start = s.real_start();
            events.push(json!({
                "ph": "X", "name": label, "cat": "slot", "pid": pid, "tid": tid(s.cpu),
                "ts": us(start), "dur": us(s.end - start),
                "args": {"domain": name, "domid": s.domain, "vcpu": s.vcpu, "cpu": s.cpu,
                         "planned_ns": s.start, "late_ns": s.late},
            }));
        }
        for i in t.instants_in(group) {
            let mut e = json!({
                "ph": "i", "name": i.kind.as_str(), "cat": i.kind.as_str(), "pid": pid,
                "ts": us(i.at), "args": {"text": i.text},
            });
            match i.cpu {
                Some(cpu) => {
                    e["tid"] = json!(tid(cpu));
                    e["s"] = json!("t");
                }
                None => {
                    e["tid"] = json!(tid(group.cpus.first().copied().unwrap_or(0)));
                    e["s"] = json!("p");
                }
            }
            events.push(e);
        }
    }
    let m = &t.meta;
    let mut other = Map::new();
    other.insert("title".into(), json!(m.title));
    other.insert(
        "host".into(),
        json!(m.host.as_deref().unwrap_or("(simulated)")),
    );
    other.insert("pool".into(), json!(m.pool));
    other.insert("clock".into(), json!(m.clock));
    other.insert(
        "grain".into(),
        json!(gang_core::time::Duration(m.grain_ns).to_string()),
    );
    other.insert("grain_ns".into(), json!(m.grain_ns));
    if let Some(c) = m.cycle_ns {
        other.insert("cycle_ns".into(), json!(c));
    }
    other.insert("window_start_ns".into(), json!(m.window.0));
    other.insert("window_end_ns".into(), json!(m.window.1));
    for (k, v) in &m.extra {
        other.insert(k.clone(), json!(v));
    }
    Ok(json!({
        "traceEvents": events,
        "displayTimeUnit": "ns",
        "otherData": other,
    }))
}

/// The Chrome trace of `t`, one event per line.
pub fn write(t: &Timeline) -> Result<String, TimelineError> {
    let v = to_value(t)?;
    let mut o = String::from("{\"traceEvents\":[\n");
    let events = v["traceEvents"].as_array().map_or(&[][..], Vec::as_slice);
    for (k, e) in events.iter().enumerate() {
        o.push_str(&serde_json::to_string(e)?);
        o.push_str(if k + 1 < events.len() { ",\n" } else { "\n" });
    }
    o.push_str("],\n\"displayTimeUnit\":\"ns\",\n\"otherData\":");
    o.push_str(&serde_json::to_string(&v["otherData"])?);
    o.push_str("}\n");
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::sample;
    use std::collections::BTreeMap;

    fn parse(t: &Timeline) -> Value {
        serde_json::from_str(&write(t).unwrap()).expect("valid JSON")
    }

    #[test]
    fn slices_per_cpu_never_overlap_and_gang_slots_start_within_their_skew() {
        let v = parse(&sample());
        let events = v["traceEvents"].as_array().unwrap();
        let mut per_cpu: BTreeMap<u64, Vec<(f64, f64, String)>> = BTreeMap::new();
        for e in events.iter().filter(|e| e["ph"] == "X") {
            per_cpu
                .entry(e["args"]["cpu"].as_u64().unwrap())
                .or_default()
                .push((
                    e["ts"].as_f64().unwrap(),
                    e["dur"].as_f64().unwrap(),
                    e["args"]["domain"].as_str().unwrap().to_string(),
                ));
        }
        assert_eq!(per_cpu.len(), 2);
        for slots in per_cpu.values_mut() {
            slots.sort_by(|a, b| a.0.total_cmp(&b.0));
            for w in slots.windows(2) {
                assert!(w[0].0 + w[0].1 <= w[1].0, "overlap: {w:?}");
            }
        }
        // Every slot on CPU 2 has its partner on CPU 3, 2 us later (the
        // lateness difference), the same planned start.
        for (a, b) in per_cpu[&2].iter().zip(&per_cpu[&3]) {
            assert_eq!(a.2, b.2);
            if a.0 > 5_000.0 {
                assert!((b.0 - a.0 - 2.0).abs() < 1e-6, "{a:?} {b:?}");
            }
        }
        let last = per_cpu[&3].last().unwrap();
        assert!(
            (last.0 + last.1 - 55_000.0).abs() < 1e-6,
            "open slot ends at the window"
        );
    }

    #[test]
    fn metadata_names_host_pool_clock_grain_and_tracks() {
        let v = parse(&sample());
        assert_eq!(v["displayTimeUnit"], "ns");
        let o = &v["otherData"];
        assert_eq!(o["host"], "h1");
        assert_eq!(o["pool"], "P");
        assert_eq!(o["clock"], "pool time");
        assert_eq!(o["grain"], "1ms");
        assert_eq!(o["grain_ns"], 1_000_000);
        assert_eq!(o["window_end_ns"], 55_000_000);
        assert_eq!(o["epoch_mono_ns"], "42");
        let events = v["traceEvents"].as_array().unwrap();
        let names: Vec<&str> = events
            .iter()
            .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
            .map(|e| e["args"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["CPU 2", "CPU 3"]);
        assert!(events
            .iter()
            .any(|e| e["name"] == "process_name" && e["args"]["name"] == "pool P"));
    }

    #[test]
    fn instants_are_scoped_to_their_cpu_or_the_process() {
        let v = parse(&sample());
        let inst: Vec<&Value> = v["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["ph"] == "i")
            .collect();
        assert_eq!(inst.len(), 2, "the one outside the window is left out");
        assert_eq!(inst[0]["name"], "pause");
        assert_eq!(inst[0]["s"], "p");
        assert_eq!(inst[0]["ts"], 20_000.0);
        assert_eq!(inst[1]["name"], "late-switch");
        assert_eq!(
            (inst[1]["s"].as_str(), inst[1]["tid"].as_u64()),
            (Some("t"), Some(tid(3)))
        );
        assert_eq!(inst[1]["args"]["text"], "switch 80us late");
    }

    #[test]
    fn names_are_escaped_and_come_back_intact() {
        let t = sample();
        let text = write(&t).unwrap();
        assert_eq!(write(&t).unwrap(), text, "deterministic");
        let v: Value = serde_json::from_str(&text).unwrap();
        let names: std::collections::BTreeSet<&str> = v["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["ph"] == "X")
            .map(|e| e["args"]["domain"].as_str().unwrap())
            .collect();
        assert!(names.contains("a \"quoted\" <&>") && names.contains("b\\c\n"));
        assert_eq!(v["otherData"]["title"], "pool \"P\" <x>");
    }

    #[test]
    fn an_overlapping_timeline_is_refused() {
        let mut t = sample();
        t.groups[0].slices[0].end = 15_000_000;
        assert!(matches!(write(&t), Err(TimelineError::Overlap { .. })));
    }
}
