//! Timeline files, live and simulated, through one writer: `gang trace
//! --format chrome|svg` from a real gang pool (two 2-vCPU process domains
//! on this machine's two CPUs) and `gang sim --chrome|--svg` from a
//! simulation of the same shape, checked alike: the Chrome file parses as
//! JSON, its slices per CPU never overlap, each gang slot of a domain is on
//! both CPUs with starts as far apart as the runtime's reported lateness
//! says (0 in the simulator), and it names host, pool, clock and grain; the
//! SVG renders to a PNG that is not blank (librsvg's `rsvg-convert`, from
//! Debian's librsvg2-bin, as a real renderer); the Perfetto protobuf file
//! names the tracks and slots. And `gang trace`'s errors.
//!
//! The live test needs root, 2 CPUs and a cgroup freezer; the renderer
//! checks need rsvg-convert (contrib/install-host-packages.sh); each test
//! says why it skipped, and fails instead under GANG_REQUIRE_HOST=1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{can_run_domains, shared_pool, skip_or_fail, start, trace, TestDir};
use serde_json::Value;

fn gang_bin() -> &'static str {
    env!("CARGO_BIN_EXE_gang")
}

/// A 2-vCPU spin-barrier process domain in pool `Gang`.
fn domain_cfg(dir: &Path, name: &str) -> String {
    let path = dir.join(format!("{name}.cfg"));
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\ntype = \"process\"\nvcpus = 2\npool = \"Gang\"\n\
             gang_policy = \"be,256\"\n\
             command = [\"{}\", \"workload\", \"spin-barrier\", \"--threads\", \"2\", \
             \"--duration\", \"10m\", \"--report-every\", \"10m\"]\n\
             vcpu_threads = \"vcpu*\"\n",
            gang_bin()
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// One `X` event of a Chrome file.
#[derive(Debug, Clone)]
struct XEvent {
    pid: u64,
    tid: u64,
    ts: f64,
    dur: f64,
    domid: u64,
    vcpu: u64,
    planned_ns: u64,
    late_ns: u64,
}

/// The checks both files must pass; returns the gang slots checked and
/// their largest co-start skew, us.
fn check_chrome(text: &str, live: bool) -> (usize, f64) {
    let v: Value = serde_json::from_str(text).expect("the Chrome file is JSON");
    assert_eq!(v["displayTimeUnit"], "ns");
    let other = &v["otherData"];
    for key in ["host", "pool", "clock", "grain"] {
        assert!(
            other[key].as_str().is_some_and(|s| !s.is_empty()),
            "otherData.{key} missing: {other}"
        );
    }
    assert!(other["grain_ns"].as_u64().is_some_and(|g| g > 0));
    if live {
        assert_ne!(other["host"], "(simulated)");
        assert!(other["clock"].as_str().unwrap().contains("CLOCK_MONOTONIC"));
    }
    let (w0, w1) = (
        other["window_start_ns"].as_u64().unwrap(),
        other["window_end_ns"].as_u64().unwrap(),
    );
    let events = v["traceEvents"].as_array().expect("traceEvents");
    let tracks: Vec<(u64, u64)> = events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .map(|e| (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap()))
        .collect();
    let xs: Vec<XEvent> = events
        .iter()
        .filter(|e| e["ph"] == "X")
        .map(|e| XEvent {
            pid: e["pid"].as_u64().unwrap(),
            tid: e["tid"].as_u64().unwrap(),
            ts: e["ts"].as_f64().unwrap(),
            dur: e["dur"].as_f64().unwrap(),
            domid: e["args"]["domid"].as_u64().unwrap(),
            vcpu: e["args"]["vcpu"].as_u64().unwrap(),
            planned_ns: e["args"]["planned_ns"].as_u64().unwrap(),
            late_ns: e["args"]["late_ns"].as_u64().unwrap(),
        })
        .collect();
    assert!(xs.len() >= 8, "too few slots: {}", xs.len());
    let mut per_cpu: BTreeMap<(u64, u64), Vec<&XEvent>> = BTreeMap::new();
    for x in &xs {
        assert!(x.dur >= 0.0);
        assert!(
            tracks.contains(&(x.pid, x.tid)),
            "a slice on an unnamed track"
        );
        per_cpu.entry((x.pid, x.tid)).or_default().push(x);
    }
    assert!(per_cpu.len() >= 2, "slices on both CPUs");
    for slices in per_cpu.values_mut() {
        slices.sort_by(|a, b| a.ts.total_cmp(&b.ts));
        for w in slices.windows(2) {
            assert!(
                w[0].ts + w[0].dur <= w[1].ts + 1e-6,
                "slices overlap on a CPU: {:?} and {:?}",
                w[0],
                w[1]
            );
        }
    }
    // Gang slots: each slot of vCPU 0 (not cut by the window) has vCPU 1's
    // on the other CPU, from the same boundary, their starts apart by no
    // more than the two switches' reported lateness differs.
    let mut gang = 0;
    let mut max_skew_us: f64 = 0.0;
    for a in xs
        .iter()
        .filter(|x| x.vcpu == 0 && x.planned_ns > w0 && x.planned_ns + 1 < w1)
    {
        let b = xs
            .iter()
            .find(|b| {
                b.pid == a.pid && b.domid == a.domid && b.vcpu == 1 && b.planned_ns == a.planned_ns
            })
            .unwrap_or_else(|| panic!("vCPU 1 missing from the gang slot of {a:?}"));
        assert_ne!(a.tid, b.tid, "a gang's vCPUs on one CPU");
        let skew_us = (a.ts - b.ts).abs();
        let reported_us = a.late_ns.abs_diff(b.late_ns) as f64 / 1e3;
        assert!(
            skew_us <= reported_us + 1e-3,
            "co-start skew {skew_us}us beyond the reported {reported_us}us: {a:?} {b:?}"
        );
        if !live {
            assert_eq!(skew_us, 0.0, "the simulator has no skew");
        }
        max_skew_us = max_skew_us.max(skew_us);
        gang += 1;
    }
    assert!(gang >= 4, "too few gang slots: {gang}");
    (gang, max_skew_us)
}

/// Each gang slot's co-start skew in a Chrome file (us), by domain and
/// planned start: the distance between its two vCPUs' slices.
fn chrome_skews(text: &str) -> BTreeMap<(u64, u64), f64> {
    let v: Value = serde_json::from_str(text).unwrap();
    let mut starts: BTreeMap<(u64, u64), Vec<f64>> = BTreeMap::new();
    for e in v["traceEvents"].as_array().unwrap() {
        if e["ph"] == "X" {
            let key = (
                e["args"]["domid"].as_u64().unwrap(),
                e["args"]["planned_ns"].as_u64().unwrap(),
            );
            starts
                .entry(key)
                .or_default()
                .push(e["ts"].as_f64().unwrap());
        }
    }
    starts
        .into_iter()
        .filter(|(_, ts)| ts.len() == 2)
        .map(|(k, ts)| (k, (ts[0] - ts[1]).abs()))
        .collect()
}

/// Renders `svg` to PNG with rsvg-convert and checks the picture is not
/// blank; `false` (after saying why) if there is no rsvg-convert.
fn renders(svg: &Path) -> bool {
    let png = svg.with_extension("png");
    let out = match Command::new("rsvg-convert")
        .arg("-o")
        .arg(&png)
        .arg(svg)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            skip_or_fail(&format!(
                "no rsvg-convert ({e}): contrib/install-host-packages.sh installs librsvg2-bin"
            ));
            return false;
        }
    };
    assert!(
        out.status.success(),
        "rsvg-convert failed on {}: {}",
        svg.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let decoder = png::Decoder::new(std::fs::File::open(&png).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let bytes = &buf[..info.buffer_size()];
    let px = info.color_type.samples()
        * if info.bit_depth == png::BitDepth::Sixteen {
            2
        } else {
            1
        };
    let mut colours = BTreeMap::<&[u8], usize>::new();
    for p in bytes.chunks(px) {
        *colours.entry(p).or_default() += 1;
    }
    let total = bytes.len() / px;
    let background = colours.values().max().copied().unwrap_or(0);
    assert!(
        info.width >= 600 && info.height >= 60,
        "{}x{}",
        info.width,
        info.height
    );
    assert!(
        colours.len() >= 4,
        "{}: {} distinct colours: blank",
        png.display(),
        colours.len()
    );
    assert!(
        total - background > total / 50,
        "{}: almost all background",
        png.display()
    );
    true
}

/// A Perfetto protobuf file: packets (field 1, length-delimited) naming
/// the CPU tracks and the domains' slots (the writer's unit tests decode
/// it fully; its layout was checked against Perfetto's own .proto with
/// `protoc --decode`).
fn check_perfetto(bytes: &[u8]) {
    assert_eq!(bytes.first(), Some(&0x0a), "a Trace's first packet");
    let has = |s: &str| bytes.windows(s.len()).any(|w| w == s.as_bytes());
    for s in ["CPU 0", "CPU 1", "tl-a v0", "tl-b v1", "grain_ns"] {
        assert!(has(s), "no {s:?} in the Perfetto trace");
    }
}

fn run_gang(args: &[&str], socket: Option<&Path>) -> std::process::Output {
    let mut c = Command::new(gang_bin());
    c.args(args);
    if let Some(s) = socket {
        c.env("GANG_SOCKET", s);
    }
    c.output().unwrap()
}

#[test]
fn a_live_pool_and_its_simulation_give_timelines_that_pass_the_same_checks() {
    if !can_run_domains() {
        return;
    }
    let t = TestDir::new("trace");
    let d = start(&t.0);
    shared_pool(&d, "Gang");
    d.ok(&["create", &domain_cfg(&t.0, "tl-a")]);
    d.ok(&["create", &domain_cfg(&t.0, "tl-b")]);
    // Both run (slots of both in the log), then an event of each kind the
    // daemon records: a pause and an unpause.
    trace(&d, "tl-a", 40);
    trace(&d, "tl-b", 40);
    std::thread::sleep(std::time::Duration::from_millis(1000));
    d.ok(&["pause", "tl-b"]);
    std::thread::sleep(std::time::Duration::from_millis(200));
    d.ok(&["unpause", "tl-b"]);
    d.ok(&["sched-gang", "-d", "tl-a", "-t", "be,512"]);
    d.ok(&["cpupool-migrate", "tl-b", "Pool-0"]);
    d.ok(&["cpupool-migrate", "tl-b", "Gang"]);
    std::thread::sleep(std::time::Duration::from_millis(500));

    let chrome = t.0.join("live.json");
    let chrome_s = chrome.display().to_string();
    d.ok(&[
        "trace", "--pool", "Gang", "--last", "30s", "--format", "chrome", &chrome_s,
    ]);
    let text = std::fs::read_to_string(&chrome).unwrap();
    let (gang_slots, _) = check_chrome(&text, true);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["otherData"]["pool"], "Gang");
    let kinds: Vec<&str> = v["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "i")
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for kind in ["pause", "unpause", "admission", "migrate"] {
        assert!(
            kinds.contains(&kind),
            "no {kind} among the instants: {kinds:?}; the daemon's log:\n{}",
            d.ok(&["dmesg"])
        );
    }
    let domains: std::collections::BTreeSet<u64> = v["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X")
        .map(|e| e["args"]["domid"].as_u64().unwrap())
        .collect();
    assert_eq!(domains.len(), 2, "both domains' slots");
    common::note(&format!(
        "live chrome trace: {gang_slots} gang slots checked, instants {kinds:?}"
    ));

    // The skew against what the runtime reports on its own: the same
    // window's trace as JSON (the slots as the daemon measured them: for
    // these adopted threads, when they really began to run), each gang
    // slot's spread of starts the same in the file.
    let recent = t.0.join("recent.json");
    d.ok(&[
        "trace",
        "--pool",
        "Gang",
        "--last",
        "800ms",
        "--format",
        "chrome",
        &recent.display().to_string(),
    ]);
    let reported: Value =
        serde_json::from_str(&d.ok(&["trace", "--pool", "Gang", "--last", "1s", "--json"]))
            .unwrap();
    let recent_text = std::fs::read_to_string(&recent).unwrap();
    let (_, skew_us) = check_chrome(&recent_text, true);
    let mut starts: BTreeMap<(u64, u64), Vec<u64>> = BTreeMap::new();
    for slot in reported["slots"].as_array().unwrap() {
        let key = (
            slot["domain"].as_u64().unwrap(),
            slot["start_ns"].as_u64().unwrap(),
        );
        starts
            .entry(key)
            .or_default()
            .push(slot["late_ns"].as_u64().unwrap());
    }
    let mut compared = 0;
    for ((domid, planned), skew) in chrome_skews(&recent_text) {
        let Some(lates) = starts.get(&(domid, planned)).filter(|l| l.len() == 2) else {
            continue;
        };
        let spread_us = lates[0].abs_diff(lates[1]) as f64 / 1e3;
        assert!(
            (skew - spread_us).abs() < 0.01,
            "domain {domid} slot {planned}: {skew}us in the file, {spread_us}us reported"
        );
        compared += 1;
    }
    assert!(compared >= 4, "too few slots in both: {compared}");
    common::note(&format!(
        "live co-start skew max {skew_us:.1}us; {compared} gang slots as the runtime reported them"
    ));

    // One domain, to stdout: only its slots.
    let one = d.ok(&[
        "trace", "tl-a", "--last", "500ms", "--format", "chrome", "-",
    ]);
    check_chrome(&one, true);
    let v: Value = serde_json::from_str(&one).unwrap();
    assert!(v["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X")
        .all(|e| e["args"]["domain"] == "tl-a"));
    // Text for the pool names both domains.
    let text = d.ok(&["trace", "--pool", "Gang", "--last", "1s"]);
    assert!(
        text.contains("Domain tl-a") && text.contains("Domain tl-b"),
        "{text}"
    );

    let svg = t.0.join("live.svg");
    d.ok(&[
        "trace",
        "--pool",
        "Gang",
        "--last",
        "100ms",
        "--format",
        "svg",
        "-o",
        &svg.display().to_string(),
    ]);
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.contains("CPU 0") && picture.contains("tl-a"));
    renders(&svg);
    let pf = t.0.join("live.pftrace");
    d.ok(&[
        "trace",
        "--pool",
        "Gang",
        "--last",
        "1s",
        "--format",
        "perfetto",
        &pf.display().to_string(),
    ]);
    check_perfetto(&std::fs::read(&pf).unwrap());

    // Errors: an unknown pool, a pool that is not a gang pool, a file that
    // cannot be written (the daemon answered; nothing is written).
    d.fails(
        &["trace", "--pool", "nope", "--format", "chrome", "x.json"],
        "nope",
    );
    d.fails(&["trace", "--pool", "Pool-0"], "not a gang pool");
    d.fails(
        &[
            "trace",
            "--pool",
            "Gang",
            "--format",
            "chrome",
            "/nonexistent/dir/t.json",
        ],
        "cannot write /nonexistent/dir/t.json",
    );
    d.ok(&["destroy", "tl-a"]);
    d.ok(&["destroy", "tl-b"]);
    d.fails(&["trace", "--pool", "Gang"], "no running dispatchers");
    d.ok(&["cpupool-destroy", "Gang"]);
    drop(d);

    simulated_timelines_pass_the_same_checks(&t.0);
}

/// The simulated twin: two 2-vCPU spin-barrier domains on CPUs 0-1.
fn simulated_timelines_pass_the_same_checks(dir: &Path) {
    let scenario = dir.join("twin.toml");
    std::fs::write(
        &scenario,
        "name = \"twin\"\nduration = \"300ms\"\nschedulers = [\"gang\"]\n\
         [pool]\ncpus = \"0-1\"\n\
         [[domain]]\nname = \"tl-a\"\nvcpus = 2\npolicy = \"be,256\"\n\
         workload = { kind = \"spin-barrier\", work = \"5us\" }\n\
         [[domain]]\nname = \"tl-b\"\nvcpus = 2\npolicy = \"be,256\"\n\
         workload = { kind = \"spin-barrier\", work = \"5us\" }\n",
    )
    .unwrap();
    let (chrome, svg, pf) = (
        dir.join("sim.json"),
        dir.join("sim.svg"),
        dir.join("sim.pftrace"),
    );
    let out = run_gang(
        &[
            "sim",
            &scenario.display().to_string(),
            "-q",
            "--window",
            "0..200ms",
            "--chrome",
            &chrome.display().to_string(),
            "--svg",
            &svg.display().to_string(),
            "--perfetto",
            &pf.display().to_string(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&chrome).unwrap();
    let (gang_slots, _) = check_chrome(&text, false);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["otherData"]["host"], "(simulated)");
    assert_eq!(
        v["otherData"]["seed"].as_str().map(str::is_empty),
        Some(false)
    );
    common::note(&format!(
        "simulated chrome trace: {gang_slots} gang slots checked"
    ));
    renders(&svg);
    check_perfetto(&std::fs::read(&pf).unwrap());
}

#[test]
fn simulated_timelines_pass_the_checks_without_a_daemon() {
    let t = TestDir::new("trace-sim");
    simulated_timelines_pass_the_same_checks(&t.0);
    // A file that cannot be written: exit 1, naming it.
    let scenario = t.0.join("twin.toml").display().to_string();
    let out = run_gang(
        &[
            "sim",
            &scenario,
            "-q",
            "--chrome",
            "/nonexistent/dir/t.json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot write /nonexistent/dir/t.json"));
}

#[test]
fn trace_usage_errors_exit_2_before_the_daemon_is_asked() {
    let nowhere: PathBuf = std::env::temp_dir().join("gang-trace-no-daemon.sock");
    for (args, message) in [
        (
            &["trace", "d", "--pool", "P", "--format", "chrome", "f.json"][..],
            "not both",
        ),
        (&["trace", "d", "--pool", "P"][..], "not both"),
        (&["trace"][..], "requires at least 1 argument"),
        (&["trace", "d", "--last", "soon"][..], "--last"),
        (&["trace", "d", "--last", "0"][..], "longer than 0"),
        (&["trace", "d", "--format", "pdf"][..], "pdf"),
        (&["trace", "d", "--json", "--format", "svg"][..], "--format"),
        (&["trace", "d", "f.json", "-o", "g.json"][..], "once"),
    ] {
        let out = run_gang(args, Some(&nowhere));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
    }
    let help = run_gang(&["trace", "--help"], None);
    let help = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "ui.perfetto.dev",
        "chrome://tracing",
        "--last",
        "FORMATS",
        "Examples",
    ] {
        assert!(help.contains(needle), "help lacks {needle}");
    }
}
