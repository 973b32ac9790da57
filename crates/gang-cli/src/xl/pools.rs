//! xl's CPU pool commands: `cpupool-list`, `cpupool-create`,
//! `cpupool-destroy`, `cpupool-rename`, `cpupool-cpu-add`,
//! `cpupool-cpu-remove`, `cpupool-migrate`.

use anyhow::{bail, Context as _, Result};
use clap::Args;
use gang_proto::{RequestBody, ResponseBody};

use super::call;

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
    about = "Create a CPU pool from a config file and/or VAR=VALUE settings (name, sched, cpus)",
    long_about = "Create a CPU pool from a config file and/or VAR=VALUE settings.\n\n\
Keys (xl's): name, sched (gang or host; default gang), cpus (an xl CPU list), nodes. gang's own:\n\
\x20 shared=1      a gang pool that shares its CPUs with Pool-0 (the host keeps a slot of each)\n\
\x20 clock=tai|realtime  base=RFC3339  [cycle=DURATION]\n\
\x20               the pool's time from a clock shared with other hosts: its schedule repeats\n\
\x20               every cycle (default 1s) from the base, so hosts with the same settings run\n\
\x20               the same slot at the same instant; every period in it must divide the cycle.\n\
\x20               A base in the future is refused; so is a host pool on a shared clock.",
    after_help = "Examples:\n  gang cpupool-create name=\\\"GangSched-Pool\\\" sched=\\\"gang\\\" cpus=\\\"1-2\\\"\n  \
gang cpupool-create name=\\\"G\\\" sched=\\\"gang\\\" cpus=\\\"0-1\\\" shared=1 clock=\\\"tai\\\" base=\\\"2026-12-01T00:00:00Z\\\"\n\n\
On success it prints the pool's name, scheduler and number of CPUs, as xl does."
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
    let sched: gang_proto::Sched = pool.sched.as_deref().unwrap_or("gang").parse()?;
    let cpus = match pool.cpus.as_deref() {
        None | Some("") => gang_core::CpuList::default(),
        Some(text) => gang_core::CpuList::parse(text)?,
    };
    let time = match (pool.clock.as_deref(), pool.base.as_deref()) {
        (None, None) if pool.cycle.is_some() || pool.sync.is_some() => {
            bail!("cycle= and sync= need clock= and base=")
        }
        (None, None) => None,
        (Some(clock), Some(base)) => {
            let mut t = gang_core::time::SharedTime::parse(clock, base)?;
            t.require_sync = match pool.sync.as_deref() {
                None | Some("optional") => false,
                Some("required") => true,
                Some(other) => bail!("sync=\"{other}\": expected \"required\" or \"optional\""),
            };
            if let Some(cycle) = pool.cycle.as_deref() {
                t.cycle_ns = gang_core::time::parse_duration(cycle, gang_core::MS)
                    .map_err(|e| anyhow::anyhow!("cycle: {e}"))?;
            }
            Some(t)
        }
        (Some(_), None) => bail!("clock= needs base= (the instant the pool's time counts from, e.g. base=\"2026-12-01T00:00:00Z\")"),
        (None, Some(_)) => bail!("base= needs clock= (tai or realtime)"),
    };
    let ResponseBody::Pools { pools } = call(RequestBody::CreatePool {
        name: pool.name.clone(),
        sched,
        cpus,
        shared: pool.shared,
        time,
    })?
    else {
        bail!("unexpected answer from the daemon")
    };
    let n = pools.first().map_or(0, |p| p.cpus.len());
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
        cpus: gang_core::CpuList::parse(&args.cpus)?,
    })?;
    Ok(())
}

pub fn cpupool_cpu_remove(args: &CpupoolCpuArgs) -> Result<()> {
    call(RequestBody::PoolCpuRemove {
        pool: args.pool.clone(),
        cpus: gang_core::CpuList::parse(&args.cpus)?,
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
