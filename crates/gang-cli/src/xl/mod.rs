//! The daemon and xl's sub-commands served by it today: `daemon`, `info`,
//! `list`, `cpupool-list`, `cpupool-create`, `cpupool-destroy`,
//! `cpupool-rename`, `cpupool-cpu-add`, `cpupool-cpu-remove`,
//! `cpupool-migrate`, and `create` (its dry run `-n` needs no daemon). Each client command is one request to the daemon over
//! its socket (`GANG_SOCKET`, default /run/gang/gang.sock) and prints what xl
//! prints; a failure prints xl's message and exits 1, changing nothing.

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

fn call(body: RequestBody) -> Result<ResponseBody> {
    let mut client = Client::connect(&socket_path())?;
    Ok(client.call(body)?)
}

/// `gang daemon`.
#[derive(Debug, Args)]
#[command(about = "Run the gang daemon: the owner of pools, domains and their parameters")]
pub struct DaemonArgs {
    /// Directory of the state database (env GANG_STATE_DIR).
    #[arg(long, env = "GANG_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Unix socket to serve the API on (env GANG_SOCKET; mode 0600).
    #[arg(long, env = "GANG_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
}

pub fn daemon(args: &DaemonArgs) -> Result<()> {
    let host = gang_host::cgroup::online_cpus().context("reading the online CPUs")?;
    let mut d = gang_toolstack::daemon::Daemon::open(&args.state_dir, host)?;
    gang_toolstack::daemon::run(&mut d, &args.socket)?;
    Ok(())
}

/// `gang info [FIELD]`.
#[derive(Debug, Args)]
#[command(about = "Print information about the host and the toolstack")]
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

/// `gang list [-c] [DOMAIN]`.
#[derive(Debug, Args)]
#[command(about = "List domains")]
pub struct ListArgs {
    /// Add the Cpupool column.
    #[arg(short = 'c', long = "cpupool")]
    cpupool: bool,
    /// Only this domain (id or name).
    domain: Option<String>,
}

pub fn list(args: &ListArgs) -> Result<()> {
    let ResponseBody::Domains { mut domains } = call(RequestBody::ListDomains)? else {
        bail!("unexpected answer")
    };
    if let Some(d) = &args.domain {
        domains.retain(|x| x.name == *d || x.id.to_string() == *d);
        if domains.is_empty() {
            bail!("{d} is an invalid domain identifier (rc=-6)");
        }
    }
    if args.cpupool {
        print!("{}", gang_proto::xl::list_with_pools(&domains));
    } else {
        print!("{}", gang_proto::xl::list(&domains));
    }
    Ok(())
}

/// `gang cpupool-list [-c] [POOL]`.
#[derive(Debug, Args)]
#[command(about = "List CPU pools")]
pub struct CpupoolListArgs {
    /// Print the CPU list instead of counts.
    #[arg(short = 'c', long = "cpus")]
    cpus: bool,
    /// Only this pool (id or name).
    pool: Option<String>,
}

pub fn cpupool_list(args: &CpupoolListArgs) -> Result<()> {
    let ResponseBody::Pools { mut pools } = call(RequestBody::ListPools)? else {
        bail!("unexpected answer")
    };
    if let Some(p) = &args.pool {
        pools.retain(|x| x.name == *p || x.id.to_string() == *p);
        if pools.is_empty() {
            bail!("Pool '{p}' does not exist");
        }
    }
    print!("{}", gang_proto::xl::cpupool_list(&pools, args.cpus));
    Ok(())
}

/// `gang cpupool-create [FILE] [VAR=VALUE ...]`.
#[derive(Debug, Args)]
#[command(
    about = "Create a CPU pool from a config file and/or VAR=VALUE settings (name, sched, cpus)"
)]
pub struct CpupoolCreateArgs {
    /// A cpupool config file, and/or settings in config syntax
    /// (name=\"GangSched-Pool\" sched=\"gang\").
    #[arg(value_name = "[FILE] [VAR=VALUE]...")]
    args: Vec<String>,
}

pub fn cpupool_create(args: &CpupoolCreateArgs) -> Result<()> {
    let (file, overrides): (Option<&String>, Vec<&String>) = match args.args.first() {
        Some(first) if !first.contains('=') => (Some(first), args.args[1..].iter().collect()),
        _ => (None, args.args.iter().collect()),
    };
    let (name, text) = match file {
        Some(f) => (
            f.clone(),
            std::fs::read_to_string(f).with_context(|| format!("reading {f}"))?,
        ),
        None => (gang_config::COMMAND_LINE.to_string(), String::new()),
    };
    eprintln!("Using config file \"{name}\"");
    let config = gang_config::Config::parse_with_overrides(&name, &text, &overrides)
        .map_err(|e| anyhow::anyhow!("{e}\nFailed to parse config: Invalid argument"))?;
    for w in config.take_warnings() {
        eprintln!("{w}");
    }
    let pool = gang_config::CpupoolConfig::from_config(&config)?;
    let sched = pool.sched.clone().unwrap_or_else(|| "gang".to_string());
    let cpus = pool.cpus.clone().unwrap_or_default();
    call(RequestBody::CreatePool {
        name: pool.name.clone(),
        sched: sched.clone(),
        cpus: cpus.clone(),
        shared: pool.shared,
    })?;
    let n = if cpus.is_empty() {
        0
    } else {
        gang_core::CpuSet::parse(&cpus, None)
            .map(|s| s.len())
            .unwrap_or(0)
    };
    println!("cpupool name:   {}", pool.name);
    println!("scheduler:      {sched}");
    println!("number of cpus: {n}");
    Ok(())
}

/// `gang cpupool-destroy POOL`.
#[derive(Debug, Args)]
#[command(about = "Destroy a CPU pool (it must have no domains; never Pool-0)")]
pub struct CpupoolDestroyArgs {
    /// The pool (id or name).
    pool: String,
}

pub fn cpupool_destroy(args: &CpupoolDestroyArgs) -> Result<()> {
    call(RequestBody::DestroyPool {
        pool: args.pool.clone(),
    })?;
    Ok(())
}

/// `gang cpupool-rename POOL NEW`.
#[derive(Debug, Args)]
#[command(about = "Rename a CPU pool")]
pub struct CpupoolRenameArgs {
    /// The pool (id or name).
    pool: String,
    /// Its new name.
    new_name: String,
}

pub fn cpupool_rename(args: &CpupoolRenameArgs) -> Result<()> {
    call(RequestBody::RenamePool {
        pool: args.pool.clone(),
        name: args.new_name.clone(),
    })?;
    Ok(())
}

/// `gang cpupool-cpu-add POOL CPUS` / `cpupool-cpu-remove POOL CPUS`.
#[derive(Debug, Args)]
pub struct CpupoolCpuArgs {
    /// The pool (id or name).
    pool: String,
    /// CPUs (xl CPU list: 1,3-5,^4, all).
    cpus: String,
}

pub fn cpupool_cpu_add(args: &CpupoolCpuArgs) -> Result<()> {
    call(RequestBody::PoolCpuAdd {
        pool: args.pool.clone(),
        cpus: args.cpus.clone(),
    })?;
    Ok(())
}

pub fn cpupool_cpu_remove(args: &CpupoolCpuArgs) -> Result<()> {
    call(RequestBody::PoolCpuRemove {
        pool: args.pool.clone(),
        cpus: args.cpus.clone(),
    })?;
    Ok(())
}

/// `gang cpupool-migrate DOMAIN POOL`.
#[derive(Debug, Args)]
#[command(about = "Move a domain to another CPU pool")]
pub struct CpupoolMigrateArgs {
    /// The domain (id or name).
    domain: String,
    /// The target pool (id or name).
    pool: String,
}

pub fn cpupool_migrate(args: &CpupoolMigrateArgs) -> Result<()> {
    call(RequestBody::PoolMigrate {
        domain: args.domain.clone(),
        pool: args.pool.clone(),
    })?;
    Ok(())
}

/// `gang create [-p] [-c] [-q] [-n] FILE [KEY=VALUE ...]`.
#[derive(Debug, Args)]
#[command(about = "Create a domain from an xl.cfg file (KEY=VALUE settings override the file)")]
pub struct CreateArgs {
    /// Leave the domain paused after creating it.
    #[arg(short = 'p')]
    paused: bool,
    /// Attach to the domain's console.
    #[arg(short = 'c')]
    console: bool,
    /// Quiet: do not print "Parsing config from FILE".
    #[arg(short = 'q')]
    quiet: bool,
    /// Dry run: parse and check the configuration, print it as JSON, create
    /// nothing.
    #[arg(short = 'n')]
    dry_run: bool,
    /// The config file, then KEY=VALUE settings in config syntax.
    #[arg(value_name = "FILE [KEY=VALUE]...", required = true)]
    args: Vec<String>,
}

/// What this toolstack can run, for refusals of configs it cannot.
const SUPPORTED: &str =
    "gang runs domains of type \"process\" (a host program, `command = [...]`, \
or a running one, `pid = N`, whose threads are the vCPUs) and \"pvh\" (a KVM micro-VM booting \
`kernel` through its PVH entry point)";

/// Refuses what needs something gang does not have, saying what instead.
fn check_supported(config: &gang_config::DomainConfig) -> Result<()> {
    use gang_config::DomainType;
    match config.domain_type {
        DomainType::Pv => bail!(
            "type \"pv\" needs Xen's paravirtual interface, which gang does not have: {SUPPORTED}. \
A PV guest kernel that also boots as PVH (Linux does) runs with type = \"pvh\" and the same `kernel`."
        ),
        DomainType::Hvm => bail!(
            "type \"hvm\" (or builder = \"hvm\") needs full-system emulation, which gang does not have: \
{SUPPORTED}. Run the VM in QEMU and adopt its vCPU threads with type = \"process\", pid = QEMU's \
pid, vcpu_threads = \"CPU */KVM\"."
        ),
        DomainType::Pvh | DomainType::Process => {}
    }
    if config.bootloader.is_some() {
        bail!("bootloader (pygrub) is not supported: give the guest kernel with `kernel` (and `ramdisk`, `cmdline`)");
    }
    if config.vnc == Some(true) {
        bail!("vnc is not supported: gang domains have a serial console (`gang create -c`, `gang console`)");
    }
    Ok(())
}

pub fn create(args: &CreateArgs) -> Result<()> {
    let file = &args.args[0];
    if file.contains('=') {
        bail!("'gang create' requires a config file first, then KEY=VALUE settings");
    }
    if !args.quiet {
        eprintln!("Parsing config from {file}");
    }
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    let config = gang_config::Config::parse_with_overrides(file, &text, &args.args[1..])
        .map_err(|e| anyhow::anyhow!("{e}\nFailed to parse config: Invalid argument"))?;
    let domain = gang_config::DomainConfig::from_config(&config);
    for w in config.take_warnings() {
        eprintln!("{w}");
    }
    let domain = domain?;
    check_supported(&domain)?;
    let json = serde_json::to_value(&domain).context("encoding the configuration")?;
    if args.dry_run {
        println!(
            "{}",
            serde_json::to_string_pretty(&json).context("encoding the configuration")?
        );
        return Ok(());
    }
    if args.console {
        bail!("attaching the console is not supported by this version yet");
    }
    let ResponseBody::Created { id } = call(RequestBody::CreateDomain {
        config: json,
        paused: args.paused,
    })?
    else {
        bail!("unexpected answer")
    };
    if !args.quiet {
        eprintln!("Created domain {id}");
    }
    Ok(())
}
