//! The `gang bench` phases whose domains are other processes: *gang-adopt
//! N* (`gang workload spin-barrier` processes whose threads the runtime
//! adopts) and the whole-program phases (with
//! [`crate::BenchConfig::spawn_program`], shared CPUs): *program-alone*,
//! *program-linux N* and *gang-program N*: whole unmodified programs (`gang
//! workload program`: a sleeping main thread and one spin-barrier worker
//! per CPU, all named alike, nothing pinned), one alone and N under Linux
//! with the pool's CPUs as their affinity, and N each in a freezer cgroup
//! adopted as a group, best-effort with equal weights.
//!
//! Rates come from the processes' own JSON reports within the measured
//! window; the adopted skew from their threads' resumption times.
//!
//! Invariants: every process a phase starts is killed and waited for, and
//! every freezer cgroup it made thawed and removed, before it returns (on
//! errors too: see `Programs`).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use gang_core::{CpuSet, DomainId, DomainSpec, Nanos, Policy, PoolConfig, MS};
use gang_host::runtime::{HostError, Isolation, Runtime};
use gang_host::slot_stats::Spread;
use gang_host::sys;

use crate::phases::{
    phase_runtime_config, BenchConfig, SpawnProgram, SpawnSpinner, StateDir, STATE_DIRS,
};
use crate::report::Phase;

/// `n` processes (spin-barrier domains, one thread per CPU) adopted by the
/// runtime as best-effort domains: rounds/s from their progress reports
/// within the managed window, co-start skew from their resumptions.
pub(crate) fn adopt_phase(
    config: &BenchConfig,
    n: u32,
    spawn: SpawnSpinner,
) -> Result<Phase, HostError> {
    use std::io::{BufRead, BufReader};
    let io = |what: &str, e: std::io::Error| HostError::Sys {
        what: what.to_string(),
        source: e,
    };
    let cpus: CpuSet = config.cpus.iter().copied().collect();
    let mut pool = PoolConfig::new(cpus);
    pool.grain = config.grain;
    pool.be_slice = config.be_slice;
    let state = std::env::temp_dir().join(format!("gang-bench-adopt-{}", std::process::id()));
    std::fs::create_dir_all(&state).map_err(|e| io("creating a state directory", e))?;
    let (mut rt_config, _exclusive_state) = phase_runtime_config(config, pool);
    rt_config.state_dir = Some(state.clone());
    let runtime = Runtime::start(rt_config)?;
    let threads = config.cpus.len() as u32;
    let child_life = config.duration + 400 * MS;
    let mut children = Vec::new();
    let mut readers = Vec::new();
    for d in 0..n {
        let mut child = spawn(threads, config.work, child_life)
            .map_err(|e| io("starting a workload process", e))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io("reading a workload", std::io::Error::other("no stdout")))?;
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let hello: serde_json::Value = serde_json::from_str(&first).unwrap_or_default();
        let tids: Vec<i32> = hello["tids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_i64().map(|t| t as i32))
                    .collect()
            })
            .unwrap_or_default();
        children.push(child);
        readers.push(std::thread::spawn(move || {
            lines.map_while(Result::ok).collect::<Vec<String>>()
        }));
        let spec = DomainSpec {
            id: DomainId(d + 1),
            vcpus: threads,
            cpu_map: Some(config.cpus.clone()),
            policy: Policy::BestEffort {
                weight: 256,
                space_filling: false,
            },
        };
        runtime.adopt_domain(spec, &tids, false)?;
    }
    let start = sys::monotonic_ns() + 50 * MS;
    let end = start + config.duration;
    sys::sleep_until_monotonic(end);
    for d in 0..n {
        runtime.remove_domain(DomainId(d + 1))?;
    }
    let epoch = runtime.clock().epoch();
    let report = runtime.stop();
    for c in &mut children {
        gang_host::best_effort("bench clean-up: waiting for a workload process", c.wait());
    }
    gang_host::best_effort(
        "bench clean-up: removing its state directory",
        std::fs::remove_dir_all(&state),
    );
    let window = (start.saturating_sub(epoch), end.saturating_sub(epoch));
    let mut rates = Vec::new();
    let mut skews = Vec::new();
    for (d, r) in readers.into_iter().enumerate() {
        let values = reports(r);
        rates.extend(rate_between(&values, start, end));
        let resumes: Vec<(u32, Nanos)> = values
            .iter()
            .filter_map(|v| v["resumes_monotonic_ns"].as_array().cloned())
            .flatten()
            .filter_map(|p| Some((p[0].as_u64()? as u32, p[1].as_u64()?.checked_sub(epoch)?)))
            .collect();
        skews.extend(adopted_start_skews(
            &report.switches,
            DomainId(d as u32 + 1),
            threads,
            &resumes,
            window,
        ));
    }
    Ok(Phase {
        shielded: config.isolation == Isolation::Exclusive,
        skew_ns: Some(Spread::of(skews)),
        switch_late_ns: Some(switch_lateness(&report, epoch, start, end)),
        gate_violations: report.violations.len(),
        ..Phase::rates("gang-adopt", n, rates)
    })
}

/// The JSON reports a program's output reader collected (lines that are
/// not JSON are left out; a reader that panicked gave none).
fn reports(reader: std::thread::JoinHandle<Vec<String>>) -> Vec<serde_json::Value> {
    reader
        .join()
        .unwrap_or_default()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Progress per second between the reports (`monotonic_ns`, `progress`, as
/// `gang workload --json` prints them) nearest to monotonic times `start`
/// and `end`.
fn rate_between(values: &[serde_json::Value], start: u64, end: u64) -> Option<f64> {
    let reports: Vec<(u64, u64)> = values
        .iter()
        .filter_map(|v| Some((v["monotonic_ns"].as_u64()?, v["progress"].as_u64()?)))
        .collect();
    let at = |t: u64| reports.iter().min_by_key(|(m, _)| m.abs_diff(t)).copied();
    let ((m0, p0), (m1, p1)) = (at(start)?, at(end)?);
    (m1 > m0).then(|| p1.saturating_sub(p0) as f64 / ((m1 - m0) as f64 / 1e9))
}

/// Whole programs started by `spawn`, killed and waited for on drop, their
/// freezer cgroups (the bench's own, as a daemon's domain cgroups would be)
/// thawed and removed.
struct Programs {
    children: Vec<std::process::Child>,
    cgroups: Vec<(gang_host::cgroup::Controller, std::path::PathBuf)>,
}

impl Drop for Programs {
    fn drop(&mut self) {
        for c in &mut self.children {
            gang_host::best_effort("bench clean-up: killing a workload process", c.kill());
        }
        for (ctl, cg) in &self.cgroups {
            gang_host::best_effort(
                "bench clean-up: thawing a program's cgroup",
                gang_host::cgroup::set_frozen(ctl, cg, false, std::time::Duration::from_secs(1)),
            );
        }
        for c in &mut self.children {
            gang_host::best_effort("bench clean-up: waiting for a workload process", c.wait());
        }
        for (ctl, cg) in &self.cgroups {
            gang_host::best_effort(
                "bench clean-up: removing a program's cgroup",
                gang_host::cgroup::drain_and_remove(ctl, cg, &ctl.mount),
            );
        }
    }
}

/// `n` whole programs (one barrier worker per CPU, a sleeping main thread),
/// under Linux with the pool's CPUs as their affinity, or (`gang`) each in
/// a freezer cgroup adopted as a group, best-effort with equal weights:
/// rounds/s from their reports within the window.
pub(crate) fn program_phase(
    config: &BenchConfig,
    n: u32,
    spawn: SpawnProgram,
    gang: bool,
) -> Result<Phase, HostError> {
    use std::io::{BufRead, BufReader};
    let io = |what: String, e: std::io::Error| HostError::Sys { what, source: e };
    let workers = config.cpus.len() as u32;
    let child_life = config.duration + 400 * MS;
    let mut programs = Programs {
        children: Vec::new(),
        cgroups: Vec::new(),
    };
    let controller = if gang {
        Some(gang_host::cgroup::Hierarchy::detect()?.freezer()?.clone())
    } else {
        None
    };
    let mut pids = Vec::new();
    let mut readers = Vec::new();
    for d in 0..n {
        let mut child = spawn(workers, config.work, child_life)
            .map_err(|e| io("starting a program".into(), e))?;
        let stdout = child.stdout.take();
        programs.children.push(child);
        let stdout = stdout.ok_or_else(|| {
            io(
                "reading a program".into(),
                std::io::Error::other("no stdout"),
            )
        })?;
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let hello: serde_json::Value = serde_json::from_str(&first).unwrap_or_default();
        let pid = hello["pid"].as_i64().unwrap_or(0) as i32;
        if pid <= 0 {
            return Err(io(
                "starting a program".into(),
                std::io::Error::other(format!("no pid announced: {first:?}")),
            ));
        }
        pids.push(pid);
        readers.push(std::thread::spawn(move || {
            lines.map_while(Result::ok).collect::<Vec<String>>()
        }));
        if let Some(ctl) = &controller {
            let cg = ctl
                .mount
                .join(format!("gang-bench-program-{}-{d}", std::process::id()));
            std::fs::create_dir_all(&cg)
                .map_err(|e| io(format!("creating {}", cg.display()), e))?;
            programs.cgroups.push((ctl.clone(), cg.clone()));
            let procs = cg.join("cgroup.procs");
            std::fs::write(&procs, pid.to_string())
                .map_err(|e| io(format!("writing {}", procs.display()), e))?;
        } else {
            // Linux: the pool's CPUs, like the other phases (threads born
            // later inherit it).
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
                .map_err(|e| io(format!("listing the threads of {pid}"), e))?;
            for t in tasks.flatten() {
                if let Ok(tid) = t.file_name().to_string_lossy().parse::<i32>() {
                    gang_host::best_effort(
                        "bench clean-up: giving a thread its CPUs back",
                        sys::set_affinity(tid, &config.cpus),
                    );
                }
            }
        }
    }
    let mut report = None;
    let (start, end);
    if gang {
        let cpus: CpuSet = config.cpus.iter().copied().collect();
        let mut pool = PoolConfig::new(cpus);
        pool.grain = config.grain;
        pool.be_slice = config.be_slice;
        let state = StateDir(Some(std::env::temp_dir().join(format!(
            "gang-bench-program-{}-{}",
            std::process::id(),
            STATE_DIRS.fetch_add(1, Ordering::Relaxed)
        ))));
        let dir = state.0.clone().unwrap_or_default();
        std::fs::create_dir_all(&dir).map_err(|e| io("creating a state directory".into(), e))?;
        let (mut rt_config, _exclusive_state) = phase_runtime_config(config, pool);
        rt_config.state_dir = Some(dir);
        let runtime = Runtime::start(rt_config)?;
        for (d, group) in programs.cgroups.iter().enumerate() {
            let spec = DomainSpec {
                id: DomainId(d as u32 + 1),
                vcpus: workers,
                cpu_map: Some(config.cpus.clone()),
                policy: Policy::BestEffort {
                    weight: 256,
                    space_filling: false,
                },
            };
            runtime.adopt_group_domain(spec, group.clone(), false)?;
        }
        start = sys::monotonic_ns() + 50 * MS;
        end = start + config.duration;
        sys::sleep_until_monotonic(end);
        for d in 0..n {
            runtime.remove_domain(DomainId(d + 1))?;
        }
        let epoch = runtime.clock().epoch();
        let r = runtime.stop();
        report = Some((r, epoch));
    } else {
        start = sys::monotonic_ns() + 50 * MS;
        end = start + config.duration;
        sys::sleep_until_monotonic(end);
    }
    for c in &mut programs.children {
        gang_host::best_effort("bench clean-up: waiting for a workload process", c.wait());
    }
    drop(programs);
    let mut rates = Vec::new();
    for r in readers {
        rates.extend(rate_between(&reports(r), start, end));
    }
    let kind = match (gang, n) {
        (true, _) => "gang-program",
        (false, 1) => "program-alone",
        (false, _) => "program-linux",
    };
    let Some((report, epoch)) = report else {
        return Ok(Phase::rates(kind, n, rates));
    };
    Ok(Phase {
        switch_late_ns: Some(switch_lateness(&report, epoch, start, end)),
        gate_violations: report.violations.len(),
        ..Phase::rates(kind, n, rates)
    })
}

/// How late the runtime's switches were in the window [`start`, `end`)
/// (times since `epoch`).
fn switch_lateness(
    report: &gang_host::runtime::RuntimeReport,
    epoch: Nanos,
    start: Nanos,
    end: Nanos,
) -> Spread {
    Spread::of(
        report
            .switches
            .iter()
            .filter(|s| s.at + epoch >= start && s.at + epoch < end)
            .map(|s| s.late as f64)
            .collect(),
    )
}

/// Co-start skews of an adopted domain, from its threads' own resumption
/// times (`(vcpu, pool time)`, as `gang workload --resume-gap` records them):
/// for every slot the runtime started on all of the domain's CPUs at once
/// (from its switch log) within `window`, the first resumption of each vCPU
/// in that slot; skew = last minus first. A thread stopped for a moment
/// inside its slot by something else (an interrupt, the hypervisor) also
/// records a resumption, but that is not the start of a slot and is not
/// counted. A slot in which some vCPU records no resumption before its CPU's
/// next switch gives no sample. `switches` as the runtime reports them:
/// sorted by (CPU, time), see `gang_host::runtime::held_intervals`.
pub fn adopted_start_skews(
    switches: &[gang_host::runtime::Switch],
    domain: DomainId,
    vcpus: u32,
    resumes: &[(u32, Nanos)],
    window: (Nanos, Nanos),
) -> Vec<f64> {
    // Slot starts: boundary -> (vcpu, until its CPU's next switch).
    let mut starts: BTreeMap<Nanos, Vec<(u32, Nanos)>> = BTreeMap::new();
    for (vcpu, _, start, end) in gang_host::runtime::held_intervals(switches, domain) {
        if start >= window.0 && start < window.1 {
            starts.entry(start).or_default().push((vcpu, end));
        }
    }
    let mut skews = Vec::new();
    for (b, slot) in starts {
        if slot.len() < vcpus as usize {
            continue; // not a start on every CPU of the domain
        }
        let firsts: Option<Vec<Nanos>> = slot
            .iter()
            .map(|&(v, until)| {
                resumes
                    .iter()
                    .filter(|&&(w, t)| w == v && t >= b && t < until)
                    .map(|&(_, t)| t)
                    .min()
            })
            .collect();
        if let Some(firsts) = firsts {
            let first = firsts.iter().min().copied().unwrap_or(0);
            let last = firsts.iter().max().copied().unwrap_or(0);
            skews.push((last - first) as f64);
        }
    }
    skews
}

#[cfg(test)]
mod tests {
    use super::*;
    use gang_core::{CpuId, VcpuRef};
    use gang_host::runtime::Switch;

    fn switch(cpu: CpuId, at: Nanos, vcpu: Option<(u32, u32)>) -> Switch {
        Switch {
            cpu,
            at,
            vcpu: vcpu.map(|(d, v)| VcpuRef {
                domain: DomainId(d),
                vcpu: v,
            }),
            late: 0,
            gate_ns: 0,
            spin: 0,
            thread: true,
        }
    }

    #[test]
    fn adopted_skew_counts_slot_starts_only() {
        // Domain 1 on CPUs 0 and 1, slots at 1000 and 3000 (domain 2 in
        // between); at 5000 only CPU 0 starts it (not a gang start).
        // Sorted by (CPU, time), as the runtime reports them.
        let switches = vec![
            switch(0, 1000, Some((1, 0))),
            switch(0, 2000, Some((2, 0))),
            switch(0, 3000, Some((1, 0))),
            switch(0, 4000, None),
            switch(0, 5000, Some((1, 0))),
            switch(1, 1000, Some((1, 1))),
            switch(1, 2000, Some((2, 1))),
            switch(1, 3000, Some((1, 1))),
            switch(1, 4000, None),
            switch(1, 9000, Some((1, 1))),
        ];
        let resumes = vec![
            (0, 1005),
            (1, 1012),
            (0, 1500), // a pause inside the slot: not a start
            (0, 3003),
            // vCPU 1 records nothing in the slot at 3000: no sample
            (1, 4100), // after its CPU's next switch
            (0, 5002),
        ];
        let skews = adopted_start_skews(&switches, DomainId(1), 2, &resumes, (0, 10_000));
        assert_eq!(skews, vec![7.0]);
        // Outside the window, nothing.
        assert!(
            adopted_start_skews(&switches, DomainId(1), 2, &resumes, (2000, 10_000)).is_empty()
        );
        // Another domain's starts are not this one's.
        assert!(adopted_start_skews(&switches, DomainId(2), 2, &resumes, (0, 10_000)).is_empty());
    }
}
