//! xl's sub-commands, thin clients of the daemon (`gang-proto`), and the
//! daemon itself. Each client command sends its request(s) to the daemon's
//! socket (`GANG_SOCKET`, default /run/gang/gang.sock) and prints what xl
//! prints; a failure prints xl's message and exits 1, changing nothing; a
//! usage error ([`UsageError`]) exits 2 as xl does.
//!
//! - this module: the connection, `daemon`, `info`;
//! - `pools`: `cpupool-*`;
//! - `domains`: `create`, `list`, `vcpu-list`, `pause`, `unpause`,
//!   `shutdown`, `reboot`, `destroy`, `dmesg`;
//! - `console`: `console` (and `create -c`);
//! - `sched`: `sched-gang`.
//! - `trace`: gang's own `trace` (text, JSON, Chrome trace, SVG).

pub mod console;
pub mod domains;
pub mod pools;
pub mod sched;
pub mod top;
pub mod trace;

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use gang_proto::{Client, RequestBody, ResponseBody};

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/gang/gang.sock";
/// Where the daemon keeps its state unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/gang";

fn socket_path() -> PathBuf {
    std::env::var_os("GANG_SOCKET").map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from)
}

/// Sends one request to the daemon and returns its answer; the daemon's
/// error message (xl's wording) becomes the error.
pub(crate) fn call(body: RequestBody) -> Result<ResponseBody> {
    let mut client = Client::connect(&socket_path())?;
    Ok(client.call(body)?)
}

/// A mistake in the command line found after parsing (xl exits 2 for
/// these): `main` prints the message and exits 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Whether `arg` names this domain as xl reads a domain argument: all
/// digits is an id, anything else a name.
pub(crate) fn names_domain(arg: &str, id: u32, name: &str) -> bool {
    if !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_digit()) {
        arg.parse::<u32>().ok() == Some(id)
    } else {
        arg == name
    }
}

/// xl's message for a domain argument that names no domain.
pub(crate) fn invalid_domain(arg: &str) -> anyhow::Error {
    anyhow::anyhow!("{arg} is an invalid domain identifier (rc=-6)")
}

/// All domains, as the daemon lists them.
pub(crate) fn domains() -> Result<Vec<gang_proto::DomainInfo>> {
    domains_with(false)
}

/// All domains; with `detail`, their configurations and threads too.
pub(crate) fn domains_with(detail: bool) -> Result<Vec<gang_proto::DomainInfo>> {
    match call(RequestBody::ListDomains { detail })? {
        ResponseBody::Domains { domains } => Ok(domains),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    }
}

/// The domain `arg` names (id or name), or xl's error.
pub(crate) fn find_domain(arg: &str) -> Result<gang_proto::DomainInfo> {
    domains()?
        .into_iter()
        .find(|d| names_domain(arg, d.id, &d.name))
        .ok_or_else(|| invalid_domain(arg))
}

/// `gang daemon`.
#[derive(Debug, Args)]
#[command(
    about = "Run the gang daemon: the owner of pools, domains and their parameters",
    after_help = "Example:\n  gang daemon --state-dir /tmp/g/state --socket /tmp/g/gang.sock\n\n\
The CLI finds the daemon through GANG_SOCKET (default /run/gang/gang.sock). \
xl has no daemon of its own (libxl talks to Xen directly); see contrib/systemd/gang.service."
)]
pub struct DaemonArgs {
    /// Directory of the state database (env GANG_STATE_DIR).
    #[arg(long, env = "GANG_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Unix socket to serve the API on (env GANG_SOCKET; mode 0600, root
    /// only, unless --socket-group).
    #[arg(long, env = "GANG_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Let members of this group use the socket too (mode 0660). A member
    /// can do everything the API offers, as root can: create, destroy,
    /// pause and move any domain, change pools and gang parameters, read
    /// and type into every console. That is root-equivalent for gang's
    /// domains, and for the host: a process domain's `command` runs as root
    /// unless its config sets `user`, and the config is the member's to
    /// write, so a member can run any command as root. Give the group only
    /// to those you would give root; `gang dmesg` names who asked for each
    /// change (uid and pid).
    #[arg(long, env = "GANG_SOCKET_GROUP")]
    socket_group: Option<String>,
    /// While exclusive gang pools run, lift the kernel's real-time limit
    /// (kernel.sched_rt_runtime_us = -1; restored when the last pool stops,
    /// and by the next start after a crash) so that the host keeps a 1% slot
    /// of each pool CPU instead of 8% (shared pools keep 8% for the host's
    /// own tasks). Safe while gang runs: vCPUs are gated and dispatchers
    /// sleep in the host slot; an operator's choice.
    #[arg(long, env = "GANG_RT_UNLIMITED")]
    rt_unlimited: bool,
    /// QEMU's accelerator for type = "hvm" guests: `auto` measures how fast
    /// /dev/kvm runs guest code (once, at the first QEMU guest) and uses
    /// KVM only where it runs at native speed, else TCG (a nested /dev/kvm
    /// without hardware support emulates, and is far slower than TCG);
    /// `kvm` or `tcg` force one. `gang dmesg` says what was chosen and why.
    #[arg(
        long,
        env = "GANG_QEMU_ACCEL",
        default_value = "auto",
        value_name = "auto|kvm|tcg"
    )]
    qemu_accel: gang_qemu::accel::AccelSetting,
    /// The user QEMU drops to once it has opened its disks, sockets and
    /// devices (QEMU's -runas); `root` keeps root. Default: `nobody` where
    /// the host has that user, else root.
    #[arg(long, env = "GANG_QEMU_USER", value_name = "USER")]
    qemu_user: Option<String>,
    /// Serve metrics in Prometheus' text format: `127.0.0.1:9464` (HTTP,
    /// `GET /metrics`; loopback addresses only: the endpoint has no
    /// authentication), `unix:PATH` (the same HTTP on a Unix socket, mode
    /// 0600), or `file:PATH.prom` (rewritten every 5 s, for node_exporter's
    /// textfile collector). Pools and their dispatchers (CPU time by use:
    /// domains, the host's slot, idle; switches, late switches, lateness,
    /// gate violations), admission refusals, requests,
    /// domains by state, each live domain's CPU time and vCPUs, and the
    /// co-scheduling figures of `gang top` (all-running, co-stop, ready,
    /// co-start skew) for the domains of running gang pools. Counters
    /// carry on across daemon restarts (their totals are kept in the state
    /// database). Off by default.
    #[arg(long, env = "GANG_METRICS", value_name = "ADDR|unix:PATH|file:PATH")]
    metrics: Option<gang_toolstack::daemon::MetricsTarget>,
}

/// Whether the host's user database has `name`.
fn user_exists(name: &str) -> bool {
    std::fs::read_to_string("/etc/passwd")
        .is_ok_and(|p| p.lines().any(|l| l.split(':').next() == Some(name)))
}

pub fn daemon(args: &DaemonArgs) -> Result<()> {
    use std::sync::{Arc, Mutex};
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GANG_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let host = gang_host::cgroup::online_cpus().context("reading the online CPUs")?;
    let d = gang_toolstack::daemon::Daemon::open(gang_toolstack::daemon::DaemonConfig {
        state_dir: args.state_dir.clone(),
        host_cpus: host,
        lift_rt_limit: args.rt_unlimited,
        qemu_accel: args.qemu_accel,
        qemu_user: match args.qemu_user.as_deref() {
            Some("root") => None,
            Some(user) if !user_exists(user) => bail!("--qemu-user {user}: no such user"),
            Some(user) => Some(user.to_owned()),
            None => user_exists("nobody").then(|| "nobody".to_owned()),
        },
    })?;
    let daemon = Arc::new(Mutex::new(d));
    if let Some(target) = &args.metrics {
        gang_toolstack::daemon::serve_metrics(Arc::clone(&daemon), target)?;
        tracing::info!("metrics at {target}");
    }
    // SIGTERM/SIGINT: give every domain back to the host (their processes
    // keep running; the next start re-attaches them), remove the socket.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .context("installing signal handlers")?;
    {
        let daemon = Arc::clone(&daemon);
        let socket = args.socket.clone();
        let metrics = args.metrics.clone();
        std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let mut d = daemon.lock().unwrap_or_else(|p| p.into_inner());
                tracing::info!("signal {sig}: stopping");
                d.shutdown();
                let _ = std::fs::remove_file(&socket);
                if let Some(gang_toolstack::daemon::MetricsTarget::Unix(path)) = &metrics {
                    let _ = std::fs::remove_file(path);
                }
                std::process::exit(0);
            }
        });
    }
    let access = gang_toolstack::daemon::SocketAccess {
        group: args.socket_group.clone(),
    };
    gang_toolstack::daemon::run(daemon, &args.socket, &access)?;
    Ok(())
}

/// `gang info [FIELD]`.
#[derive(Debug, Args)]
#[command(
    about = "Print information about the host and the toolstack",
    long_about = "Print information about the host and the toolstack, one `name : value` line per \
field in xl's order and layout (names in 23 columns). Fields xl takes from Xen (xen_*) carry the \
toolstack's own facts where they make sense.",
    after_help = "Examples:\n  gang info\n  gang info nr_cpus     (prints only the value: 2)"
)]
pub struct InfoArgs {
    /// Print only the values of fields whose name starts with FIELD.
    field: Option<String>,
}

pub fn info(args: &InfoArgs) -> Result<()> {
    let ResponseBody::Info { fields } = call(RequestBody::Info)? else {
        bail!("unexpected answer")
    };
    match &args.field {
        Some(f) => print!("{}", gang_proto::xl::info_field(&fields, f)),
        None => print!("{}", gang_proto::xl::info(&fields)),
    }
    Ok(())
}
