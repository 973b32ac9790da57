//! Metrics for monitoring systems: the daemon's state and its pools'
//! dispatchers in Prometheus' text exposition format (version 0.0.4), served
//! where the operator asked (`gang daemon --metrics`):
//!
//! * `127.0.0.1:9464` (or any loopback address): HTTP on localhost,
//!   `GET /metrics`, for a Prometheus server or agent on the host;
//! * `unix:/run/gang/metrics.sock`: the same HTTP on a Unix socket (root
//!   only, as the API socket);
//! * `file:/var/lib/node_exporter/textfile/gang.prom`: a file rewritten
//!   every few seconds (whole, by rename) for node_exporter's textfile
//!   collector.
//!
//! Only loopback addresses are accepted for TCP: the endpoint has no
//! authentication, and the host's workloads are named in it.
//!
//! # Invariants
//!
//! * **Counters never go back, also across a daemon restart.** A pool's
//!   dispatcher totals live in its runtime, which stops with its last domain
//!   and with the daemon; the daemon folds a stopping runtime's totals into
//!   [`Totals::base`], and every exposition saves base + current totals in
//!   the store (`metric_totals`, kept as the maximum ever saved), from which
//!   the next daemon starts. What was served is therefore never more than
//!   what the next daemon serves. Per-domain CPU time is the kernel's
//!   (the domain's threads, alive across daemon restarts), exposed only while
//!   the domain is live; domain ids are never reused.
//! * The exposition is built under the daemon's lock, like any request, so
//!   it is one consistent view.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs as _};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gang_host::runtime::{CounterSnapshot, Runtime};

use super::Daemon;
use crate::store::Sched;

/// How often the textfile target is rewritten.
const FILE_INTERVAL: Duration = Duration::from_secs(5);

/// Why the metrics endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The target is not one of the accepted forms.
    #[error(
        "--metrics {0}: expected HOST:PORT on loopback (127.0.0.1:9464), unix:PATH or file:PATH"
    )]
    Unparsable(String),
    /// A TCP address that is not loopback.
    #[error(
        "--metrics {0}: only loopback addresses are served (the endpoint has no \
         authentication); use 127.0.0.1 or [::1], or a unix: socket behind a proxy"
    )]
    NotLoopback(String),
    /// A textfile target whose name node_exporter would ignore.
    #[error("--metrics file:{0}: node_exporter's textfile collector reads only *.prom files")]
    NotProm(String),
    /// Binding or writing failed.
    #[error("--metrics {target}: {source}")]
    Io {
        /// The target.
        target: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Where the metrics go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsTarget {
    /// HTTP on a loopback TCP address.
    Tcp(SocketAddr),
    /// HTTP on a Unix socket.
    Unix(PathBuf),
    /// A textfile for node_exporter.
    File(PathBuf),
}

impl std::str::FromStr for MetricsTarget {
    type Err = MetricsError;

    fn from_str(s: &str) -> Result<Self, MetricsError> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(MetricsError::Unparsable(s.into()));
            }
            return Ok(MetricsTarget::Unix(path.into()));
        }
        if let Some(path) = s.strip_prefix("file:") {
            if !path.ends_with(".prom") {
                return Err(MetricsError::NotProm(path.into()));
            }
            return Ok(MetricsTarget::File(path.into()));
        }
        let addr = s
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| MetricsError::Unparsable(s.into()))?;
        if !addr.ip().is_loopback() {
            return Err(MetricsError::NotLoopback(s.into()));
        }
        Ok(MetricsTarget::Tcp(addr))
    }
}

impl std::fmt::Display for MetricsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsTarget::Tcp(a) => write!(f, "http://{a}/metrics"),
            MetricsTarget::Unix(p) => write!(f, "unix:{}", p.display()),
            MetricsTarget::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

/// Serves the metrics at `target` from a thread of its own; returns once
/// the socket is bound (or the file written once), so that an error is the
/// daemon's start error.
pub fn serve(daemon: Arc<Mutex<Daemon>>, target: &MetricsTarget) -> Result<(), MetricsError> {
    let io = |source| MetricsError::Io {
        target: target.to_string(),
        source,
    };
    let exposition = move |d: &Arc<Mutex<Daemon>>| {
        d.lock()
            .unwrap_or_else(|p| p.into_inner())
            .metrics_exposition()
    };
    match target {
        MetricsTarget::Tcp(addr) => {
            let listener = TcpListener::bind(addr).map_err(io)?;
            spawn(move || {
                for stream in listener.incoming().flatten() {
                    answer_http(stream, || exposition(&daemon));
                }
            })
            .map_err(io)
        }
        MetricsTarget::Unix(path) => {
            if path.exists() {
                std::fs::remove_file(path).map_err(io)?;
            }
            let listener = UnixListener::bind(path).map_err(io)?;
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
            spawn(move || {
                for stream in listener.incoming().flatten() {
                    answer_http(stream, || exposition(&daemon));
                }
            })
            .map_err(io)
        }
        MetricsTarget::File(path) => {
            write_file(path, &exposition(&daemon)).map_err(io)?;
            let path = path.clone();
            spawn(move || loop {
                std::thread::sleep(FILE_INTERVAL);
                if let Err(e) = write_file(&path, &exposition(&daemon)) {
                    tracing::warn!("metrics file {}: {e}", path.display());
                }
            })
            .map_err(io)
        }
    }
}

fn spawn(f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("gang-metrics".into())
        .spawn(f)
        .map(|_| ())
}

/// Writes `text` to `path` whole: a temporary file beside it, renamed over
/// it (node_exporter never reads half a file).
fn write_file(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("prom.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Answers one HTTP/1.x request on `stream`: `GET /metrics` (or `/`) with
/// the exposition, anything else with 404 or 405. One request per
/// connection (`Connection: close`); a client that sends nothing in 5 s is
/// dropped.
fn answer_http<S: std::io::Read + std::io::Write + SetTimeout>(
    mut stream: S,
    exposition: impl FnOnce() -> String,
) {
    stream.set_timeouts(Duration::from_secs(5));
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&request);
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, body, kind) = match (method, path) {
        ("GET" | "HEAD", "/metrics" | "/") => (
            "200 OK",
            exposition(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "gang serves /metrics\n".to_string(),
            "text/plain",
        ),
        _ => (
            "405 Method Not Allowed",
            "GET /metrics\n".to_string(),
            "text/plain",
        ),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        response.push_str(&body);
    }
    let _ = stream.write_all(response.as_bytes());
}

/// Read and write timeouts on either kind of socket.
trait SetTimeout {
    fn set_timeouts(&self, t: Duration);
}

impl SetTimeout for std::net::TcpStream {
    fn set_timeouts(&self, t: Duration) {
        let _ = self.set_read_timeout(Some(t));
        let _ = self.set_write_timeout(Some(t));
    }
}

impl SetTimeout for std::os::unix::net::UnixStream {
    fn set_timeouts(&self, t: Duration) {
        let _ = self.set_read_timeout(Some(t));
        let _ = self.set_write_timeout(Some(t));
    }
}

/// The counters' totals of runtimes that stopped (and of earlier daemons),
/// by key (name and labels in the text form).
#[derive(Debug, Default)]
pub(super) struct Totals {
    base: BTreeMap<String, f64>,
}

/// The summary's count: switches made.
const SWITCHES: &str = "gang_dispatch_late_seconds_count";
/// The summary's sum: their lateness, seconds.
const LATENESS: &str = "gang_dispatch_late_seconds_sum";

/// A pool's dispatcher totals as `(key, value)` pairs.
fn pool_counter_keys(pool: &str, c: &CounterSnapshot) -> [(String, f64); 7] {
    let l = labels(&[("pool", pool)]);
    let cpu = |used: &str, ns: u64| {
        (
            format!(
                "gang_pool_cpu_seconds_total{}",
                labels(&[("pool", pool), ("use", used)])
            ),
            ns as f64 / 1e9,
        )
    };
    [
        cpu("domains", c.domains_ns),
        cpu("host", c.host_ns),
        cpu("idle", c.idle_ns),
        (format!("{SWITCHES}{l}"), c.switches as f64),
        (
            format!("gang_dispatch_late_switches_total{l}"),
            c.late_switches as f64,
        ),
        (format!("{LATENESS}{l}"), c.late_ns as f64 / 1e9),
        (
            format!("gang_gate_violations_total{l}"),
            c.violations as f64,
        ),
    ]
}

impl Totals {
    /// Starts from what the store kept.
    pub(super) fn from_saved(base: BTreeMap<String, f64>) -> Totals {
        Totals { base }
    }

    /// A pool's runtime stops: its totals become part of the base.
    pub(super) fn fold_runtime(&mut self, pool: &str, c: &CounterSnapshot) {
        for (k, v) in pool_counter_keys(pool, c) {
            *self.base.entry(k).or_default() += v;
        }
    }

    /// Counts one event of a daemon-level counter.
    pub(super) fn count(&mut self, key: String) {
        *self.base.entry(key).or_default() += 1.0;
    }

    /// The base value of `key`.
    #[cfg(test)]
    fn get(&self, key: &str) -> f64 {
        self.base.get(key).copied().unwrap_or(0.0)
    }
}

/// `{a="x",b="y"}` with the values escaped as the text format wants;
/// nothing for no labels.
fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// An exposition being written: families in order, each with its `# HELP`
/// and `# TYPE` once, then its samples.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: f64) {
        let _ = writeln!(self.text, "{name}{labels} {value}");
    }
}

/// Request outcomes counted for `gang_requests_total`.
pub(super) fn request_key(outcome: &str) -> String {
    format!("gang_requests_total{}", labels(&[("outcome", outcome)]))
}

/// Admission refusals counted for `gang_admission_refusals_total`.
pub(super) fn refusal_key(pool: &str) -> String {
    format!("gang_admission_refusals_total{}", labels(&[("pool", pool)]))
}

impl Daemon {
    /// A pool's runtime is about to stop: its dispatcher totals become part
    /// of the base (and are saved), so the pool's counters carry on from
    /// them when it runs again.
    pub(super) fn retire_counters(&mut self, pool: crate::store::PoolId, rt: &Runtime) {
        let name = self
            .store
            .pool(&crate::store::PoolRef::Id(pool))
            .map_or_else(|_| pool.0.to_string(), |p| p.name);
        self.metric_totals.fold_runtime(&name, &rt.counters());
        if let Err(err) = self.store.save_metric_totals(&self.metric_totals.base) {
            tracing::warn!("saving the metrics' totals: {err}");
        }
    }

    /// Counts an admission refusal in `pool`.
    pub(super) fn count_refusal(&mut self, pool: &str) {
        self.metric_totals.count(refusal_key(pool));
    }

    /// The whole exposition now; saves the counters' totals first (module
    /// docs: what is served is never more than what was saved).
    pub(super) fn metrics_exposition(&mut self) -> String {
        let mut e = Exposition::default();
        let pools = self.store.pools().unwrap_or_default();
        // Counters: the base plus the running runtimes' totals.
        let mut totals = self.metric_totals.base.clone();
        for (id, rt) in &self.runtimes {
            let name = pools
                .iter()
                .find(|p| p.id == *id)
                .map_or_else(|| id.0.to_string(), |p| p.name.clone());
            for (k, v) in pool_counter_keys(&name, &rt.counters()) {
                *totals.entry(k).or_default() += v;
            }
        }
        if let Err(err) = self.store.save_metric_totals(&totals) {
            tracing::warn!("saving the metrics' totals: {err}");
        }

        e.family(
            "gang_build_info",
            "gauge",
            "The gang daemon's version (value 1).",
        );
        e.sample(
            "gang_build_info",
            &labels(&[("version", env!("CARGO_PKG_VERSION"))]),
            1.0,
        );
        e.family(
            "gang_daemon_uptime_seconds",
            "gauge",
            "Seconds since this daemon started.",
        );
        e.sample(
            "gang_daemon_uptime_seconds",
            "",
            self.started.elapsed().as_secs_f64(),
        );

        // Pools.
        e.family("gang_pool_cpus", "gauge", "CPUs in the pool.");
        for p in &pools {
            let sched = match p.sched {
                Sched::Gang => "gang",
                Sched::Host => "host",
            };
            e.sample(
                "gang_pool_cpus",
                &labels(&[("pool", &p.name), ("sched", sched)]),
                p.cpus.len() as f64,
            );
        }
        e.family("gang_pool_domains", "gauge", "Domains in the pool.");
        for p in &pools {
            e.sample(
                "gang_pool_domains",
                &labels(&[("pool", &p.name)]),
                f64::from(p.domain_count),
            );
        }
        e.family(
            "gang_pool_dispatching",
            "gauge",
            "1 while the gang pool's dispatchers run (it has live domains).",
        );
        for p in pools.iter().filter(|p| p.sched == Sched::Gang) {
            e.sample(
                "gang_pool_dispatching",
                &labels(&[("pool", &p.name)]),
                f64::from(u8::from(self.runtimes.contains_key(&p.id))),
            );
        }

        // Counters by pool, every gang pool that ever ran.
        let counter_families = [
            (
                "gang_pool_cpu_seconds_total",
                "The pool's CPU time by use: its domains' vCPUs, the host's slot, idle.",
            ),
            (
                "gang_dispatch_late_switches_total",
                "Switches made more than 100 microseconds after their boundary.",
            ),
            (
                "gang_gate_violations_total",
                "vCPU threads found running long after their gate closed (demoted).",
            ),
            (
                "gang_admission_refusals_total",
                "Domains or parameters a gang pool's admission control refused.",
            ),
        ];
        for (name, help) in counter_families {
            e.family(name, "counter", help);
            for (key, value) in totals.iter().filter(|(k, _)| {
                k.strip_prefix(name)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
            }) {
                e.sample(key, "", *value);
            }
        }
        // How late switches are: quantiles over the last second of each
        // running pool; sum and count since the pool first ran.
        e.family(
            "gang_dispatch_late_seconds",
            "summary",
            "How long after their boundary the dispatchers switched (quantiles over the last \
             second).",
        );
        for p in pools.iter().filter(|p| p.sched == Sched::Gang) {
            let pool_labels = labels(&[("pool", &p.name)]);
            let count = totals.get(&format!("{SWITCHES}{pool_labels}"));
            let sum = totals.get(&format!("{LATENESS}{pool_labels}"));
            let (Some(count), Some(sum)) = (count, sum) else {
                continue;
            };
            let health = self
                .runtimes
                .get(&p.id)
                .and_then(|rt| super::gang::dispatch_health(&rt.recent_switches(), rt.now()));
            if let Some(h) = health {
                for (q, v) in [
                    ("0.5", h.late_p50_ns),
                    ("0.99", h.late_p99_ns),
                    ("1", h.late_max_ns),
                ] {
                    e.sample(
                        "gang_dispatch_late_seconds",
                        &labels(&[("pool", &p.name), ("quantile", q)]),
                        v as f64 / 1e9,
                    );
                }
            }
            e.sample("gang_dispatch_late_seconds_sum", &pool_labels, *sum);
            e.sample("gang_dispatch_late_seconds_count", &pool_labels, *count);
        }

        // Daemon-level counters.
        e.family(
            "gang_requests_total",
            "counter",
            "API requests answered, by outcome (ok, refused, error).",
        );
        for outcome in ["ok", "refused", "error"] {
            let key = request_key(outcome);
            e.sample(&key, "", totals.get(&key).copied().unwrap_or(0.0));
        }

        // Domains.
        let domains = self.domain_infos(false).unwrap_or_default();
        e.family(
            "gang_domains",
            "gauge",
            "Domains by state (Domain-0 not counted).",
        );
        let mut by_state: BTreeMap<&str, u32> = [
            "running", "blocked", "paused", "shutdown", "crashed", "dying",
        ]
        .into_iter()
        .map(|s| (s, 0))
        .collect();
        for d in domains.iter().filter(|d| d.id != 0) {
            let s = &d.state;
            let state = if s.dying {
                "dying"
            } else if s.shutdown.is_some() {
                if d.reason.is_some() {
                    "crashed"
                } else {
                    "shutdown"
                }
            } else if s.paused {
                "paused"
            } else if s.running {
                "running"
            } else {
                "blocked"
            };
            *by_state.entry(state).or_default() += 1;
        }
        for (state, n) in by_state {
            e.sample("gang_domains", &labels(&[("state", state)]), f64::from(n));
        }
        e.family(
            "gang_domain_cpu_seconds_total",
            "counter",
            "CPU time the domain's threads used (while it is live).",
        );
        let live: Vec<_> = domains
            .iter()
            .filter(|d| d.id == 0 || self.live.contains_key(&gang_core::DomainId(d.id)))
            .collect();
        for d in &live {
            e.sample(
                "gang_domain_cpu_seconds_total",
                &domain_labels(d),
                d.cpu_time_s,
            );
        }
        e.family("gang_domain_vcpus", "gauge", "The domain's vCPUs.");
        for d in &live {
            e.sample("gang_domain_vcpus", &domain_labels(d), f64::from(d.vcpus));
        }
        // Co-scheduling (`gang top`'s ALLRUN COSTOP READY SKEW99, the same
        // numbers), over the last second, for domains of running gang pools.
        let measured: Vec<_> = live
            .iter()
            .filter_map(|d| d.cosched.map(|c| (d, c.metrics)))
            .collect();
        type Of = fn(&gang_core::cosched::CoschedMetrics) -> f64;
        let families: [(&str, &str, Of); 5] = [
            (
                "gang_domain_all_running_ratio",
                "Share of the last second in which all the domain's vCPUs ran together.",
                |m| m.all_running,
            ),
            (
                "gang_domain_co_stop_ratio",
                "Share of the last second in which some vCPUs ran while a sibling was runnable \
                 but held (esxtop's %CSTP).",
                |m| m.co_stop,
            ),
            (
                "gang_domain_ready_ratio",
                "Share of the vCPUs' last second spent runnable but not running (esxtop's %RDY).",
                |m| m.ready,
            ),
            (
                "gang_domain_costart_skew_p50_seconds",
                "Median spread of the domain's vCPUs' starts in its gang slots, last second.",
                |m| m.skew_p50_ns as f64 / 1e9,
            ),
            (
                "gang_domain_costart_skew_p99_seconds",
                "99th percentile spread of the domain's vCPUs' starts in its gang slots, last \
                 second.",
                |m| m.skew_p99_ns as f64 / 1e9,
            ),
        ];
        for (name, help, of) in families {
            e.family(name, "gauge", help);
            for (d, m) in &measured {
                e.sample(name, &domain_labels(d), of(m));
            }
        }
        e.text
    }
}

fn domain_labels(d: &gang_proto::DomainInfo) -> String {
    let id = d.id.to_string();
    labels(&[("domain", &d.name), ("id", &id), ("pool", &d.pool)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_only_loopback_is_served() {
        assert_eq!(
            "127.0.0.1:9464".parse::<MetricsTarget>().unwrap(),
            MetricsTarget::Tcp("127.0.0.1:9464".parse().unwrap())
        );
        assert!(matches!(
            "[::1]:9464".parse::<MetricsTarget>(),
            Ok(MetricsTarget::Tcp(_))
        ));
        assert_eq!(
            "unix:/run/g.sock".parse::<MetricsTarget>().unwrap(),
            MetricsTarget::Unix("/run/g.sock".into())
        );
        assert_eq!(
            "file:/tmp/x/gang.prom".parse::<MetricsTarget>().unwrap(),
            MetricsTarget::File("/tmp/x/gang.prom".into())
        );
        let e = "0.0.0.0:9464".parse::<MetricsTarget>().unwrap_err();
        assert!(e.to_string().contains("only loopback"), "{e}");
        let e = "file:/tmp/gang.txt".parse::<MetricsTarget>().unwrap_err();
        assert!(e.to_string().contains("*.prom"), "{e}");
        for bad in ["", "9464", "unix:", "nonsense:port"] {
            let e = bad.parse::<MetricsTarget>().unwrap_err();
            assert!(e.to_string().contains("expected HOST:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_late_switch_is_the_same_in_metrics_and_in_traces() {
        assert_eq!(
            gang_host::runtime::LATE_SWITCH_NS,
            gang_proto::TRACE_LATE_SWITCH_NS
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(labels(&[]), "");
        assert_eq!(
            labels(&[("a", "x\"y\\z\nw"), ("b", "ok")]),
            "{a=\"x\\\"y\\\\z\\nw\",b=\"ok\"}"
        );
    }

    #[test]
    fn a_stopped_runtimes_totals_stay_in_the_base() {
        let mut t = Totals::from_saved(BTreeMap::from([(
            "gang_gate_violations_total{pool=\"p\"}".to_string(),
            2.0,
        )]));
        let c = CounterSnapshot {
            switches: 10,
            late_switches: 1,
            late_ns: 500_000_000,
            violations: 1,
            domains_ns: 3_000_000_000,
            ..CounterSnapshot::default()
        };
        t.fold_runtime("p", &c);
        t.fold_runtime("p", &c);
        assert_eq!(t.get("gang_dispatch_late_seconds_count{pool=\"p\"}"), 20.0);
        assert_eq!(t.get("gang_dispatch_late_seconds_sum{pool=\"p\"}"), 1.0);
        assert_eq!(t.get("gang_gate_violations_total{pool=\"p\"}"), 4.0);
        assert_eq!(
            t.get("gang_pool_cpu_seconds_total{pool=\"p\",use=\"domains\"}"),
            6.0
        );
        t.count(refusal_key("p"));
        assert_eq!(t.get("gang_admission_refusals_total{pool=\"p\"}"), 1.0);
    }

    struct Fake {
        input: std::io::Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl std::io::Read for Fake {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl std::io::Write for Fake {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.output.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl SetTimeout for Fake {
        fn set_timeouts(&self, _: Duration) {}
    }

    fn http(request: &str) -> String {
        let mut f = Fake {
            input: std::io::Cursor::new(request.as_bytes().to_vec()),
            output: Vec::new(),
        };
        answer_http(&mut f, || "gang_x 1\n".into());
        String::from_utf8(f.output).unwrap()
    }

    impl<T: SetTimeout> SetTimeout for &mut T {
        fn set_timeouts(&self, t: Duration) {
            (**self).set_timeouts(t);
        }
    }

    #[test]
    fn http_answers_metrics_and_refuses_the_rest() {
        let ok = http("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("version=0.0.4"), "{ok}");
        assert!(ok.ends_with("\r\n\r\ngang_x 1\n"), "{ok}");
        let head = http("HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(
            head.contains("Content-Length: 9") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        assert!(http("GET /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(http("POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(http("").starts_with("HTTP/1.1 405"));
    }
}
