//! The daemon's metrics for monitoring systems, end to end: `gang daemon
//! --metrics` serves Prometheus' text format while domains come and go,
//! every exposition passes `promtool check metrics` (Prometheus' own
//! parser and linter), counters never go back (also across a daemon killed
//! with SIGKILL and started again), admission refusals are counted, and bad
//! targets stop the daemon with the reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{can_run_domains, note, shared_pool, skip_or_fail, start_with, TestDir};

fn gang_bin() -> &'static str {
    env!("CARGO_BIN_EXE_gang")
}

/// A one-vCPU busy process domain in pool `G` with `policy`.
fn busy_cfg(dir: &Path, name: &str, policy: &str) -> String {
    let path = dir.join(format!("{name}.cfg"));
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\ntype = \"process\"\nvcpus = 1\npool = \"G\"\n\
             gang_policy = \"{policy}\"\n\
             command = [\"{}\", \"workload\", \"busy\", \"--threads\", \"1\", \
             \"--duration\", \"10m\", \"--report-every\", \"10m\"]\n\
             vcpu_threads = \"vcpu*\"\n",
            gang_bin()
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// One scrape over the Unix socket: the HTTP body.
fn scrape(socket: &Path) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("metrics socket");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: gang\r\n\r\n")
        .unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_string()
}

/// `promtool check metrics` on `text`: Prometheus' parser and lint.
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n--- the exposition:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The samples of counter families (`# TYPE x counter`) and the sums and
/// counts of summaries, by series: what must never go back.
fn counters(text: &str) -> BTreeMap<String, f64> {
    let kinds: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let name = series.split('{').next()?;
            let summary_part = ["_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| kinds.get(base) == Some(&"summary"))
            });
            if kinds.get(name) != Some(&"counter") && !summary_part {
                return None;
            }
            Some((series.to_string(), value.parse::<f64>().ok()?))
        })
        .collect()
}

/// Every counter in `now` is at least what it was in `before`.
fn never_back(before: &BTreeMap<String, f64>, now: &BTreeMap<String, f64>, when: &str) {
    for (series, was) in before {
        if let Some(is) = now.get(series) {
            assert!(is >= was, "{when}: {series} went back from {was} to {is}");
        }
    }
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn has_promtool() -> bool {
    if Command::new("promtool").arg("--version").output().is_ok() {
        return true;
    }
    skip_or_fail("no promtool (apt-get install prometheus; contrib/install-host-packages.sh)");
    false
}

#[test]
fn metrics_are_served_while_domains_come_and_go_and_counters_never_go_back() {
    if !can_run_domains() || !has_promtool() {
        return;
    }
    let t = TestDir::new("metrics");
    let socket = t.0.join("metrics.sock");
    let target = format!("unix:{}", socket.display());
    let d = start_with(&t.0, &["--metrics", &target]);
    shared_pool(&d, "G");
    let first = scrape(&socket);
    promtool_check(&first);
    assert!(
        first.contains("gang_pool_cpus{pool=\"G\",sched=\"gang\"} 2"),
        "{first}"
    );

    // Domains come and go while a scraper reads and checks every answer.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = {
        let (stop, socket) = (std::sync::Arc::clone(&stop), socket.clone());
        let mut seen = counters(&first);
        std::thread::spawn(move || {
            let (mut scrapes, mut max_running) = (1u32, 0.0f64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let text = scrape(&socket);
                promtool_check(&text);
                let now = counters(&text);
                never_back(&seen, &now, "while domains came and went");
                seen.extend(now);
                let live = ["running", "blocked"]
                    .iter()
                    .filter_map(|s| value(&text, &format!("gang_domains{{state=\"{s}\"}}")))
                    .sum::<f64>();
                max_running = max_running.max(live);
                scrapes += 1;
            }
            (scrapes, max_running)
        })
    };
    for round in 0..3 {
        let names: Vec<String> = (0..2).map(|i| format!("m{round}{i}")).collect();
        for n in &names {
            d.ok(&["create", "-q", &busy_cfg(&t.0, n, "be,256")]);
        }
        std::thread::sleep(Duration::from_millis(700));
        for n in &names {
            d.ok(&["destroy", n]);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (scrapes, max_running) = scraper.join().expect("every scrape passed");
    assert!(max_running >= 2.0, "two live domains seen at once");
    // While they run, each has its co-scheduling figures (`gang top`'s).
    d.ok(&["create", "-q", &busy_cfg(&t.0, "co", "be,256")]);
    let mut text = String::new();
    common::wait_for("co-scheduling figures of a running domain", || {
        text = scrape(&socket);
        text.contains("gang_domain_all_running_ratio{domain=\"co\"")
    });
    promtool_check(&text);
    for family in [
        "gang_domain_co_stop_ratio",
        "gang_domain_ready_ratio",
        "gang_domain_costart_skew_p99_seconds",
    ] {
        assert!(
            text.contains(&format!("{family}{{domain=\"co\"")),
            "{family}: {text}"
        );
    }
    d.ok(&["destroy", "co"]);
    let text = scrape(&socket);
    let switches = "gang_dispatch_late_seconds_count{pool=\"G\"}";
    assert!(
        value(&text, switches).unwrap_or(0.0) > 10.0,
        "the pool's dispatchers switched: {text}"
    );
    assert!(value(&text, "gang_requests_total{outcome=\"ok\"}").unwrap_or(0.0) >= 13.0);
    // The pool's CPUs went to its domains most of the time, some to the host.
    let cpu = |used: &str| {
        value(
            &text,
            &format!("gang_pool_cpu_seconds_total{{pool=\"G\",use=\"{used}\"}}"),
        )
        .unwrap_or(0.0)
    };
    assert!(cpu("domains") > 1.0, "{text}");
    assert!(cpu("host") > 0.0 && cpu("host") < cpu("domains"), "{text}");

    // An admission refusal is counted: a time-triggered domain that fits
    // on neither CPU once two others hold 80% of each.
    let before = value(&text, "gang_admission_refusals_total{pool=\"G\"}").unwrap_or(0.0);
    d.ok(&["create", "-q", &busy_cfg(&t.0, "big1", "tt,10ms,8ms")]);
    d.ok(&["create", "-q", &busy_cfg(&t.0, "big2", "tt,10ms,8ms")]);
    let out = d.gang(&["create", "-q", &busy_cfg(&t.0, "big3", "tt,10ms,8ms")]);
    assert!(!out.status.success(), "the third must be refused");
    let text = scrape(&socket);
    promtool_check(&text);
    assert_eq!(
        value(&text, "gang_admission_refusals_total{pool=\"G\"}"),
        Some(before + 1.0),
        "{text}"
    );
    let last = counters(&text);
    note(&format!(
        "xl_metrics: {scrapes} scrapes while 6 domains came and went, every one passed \
         promtool; {} counter series",
        last.len()
    ));

    // Killed and started again: no counter reads less than before.
    let dir = d.kill9();
    let d = start_with(&dir, &["--metrics", &target]);
    let after = scrape(&socket);
    promtool_check(&after);
    never_back(&last, &counters(&after), "after a SIGKILL and a restart");
    assert!(
        value(&after, switches).unwrap_or(0.0) >= value(&text, switches).unwrap_or(0.0),
        "{after}"
    );
    drop(d);
}

#[test]
fn a_textfile_target_is_written_whole_and_bad_targets_stop_the_daemon() {
    if !can_run_domains() || !has_promtool() {
        return;
    }
    let t = TestDir::new("metrics-file");
    let file = t.0.join("gang.prom");
    let target = format!("file:{}", file.display());
    let d = start_with(&t.0, &["--metrics", &target]);
    // Written once before the daemon serves anything.
    let text = std::fs::read_to_string(&file).expect("the textfile");
    promtool_check(&text);
    assert!(text.contains("gang_build_info{version="), "{text}");
    drop(d);

    for (bad, why) in [
        ("0.0.0.0:9464", "only loopback addresses are served"),
        ("file:/tmp/gang.txt", "reads only *.prom files"),
        ("nonsense", "expected HOST:PORT on loopback"),
    ] {
        let out = Command::new(gang_bin())
            .args(["daemon", "--metrics", bad, "--state-dir"])
            .arg(t.0.join("bad-state"))
            .arg("--socket")
            .arg(t.0.join("bad.sock"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--metrics {bad} must be refused");
        assert!(err.contains(why), "--metrics {bad}: {err}");
    }
}
