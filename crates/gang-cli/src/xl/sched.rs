//! `gang sched-gang` (the gang scheduler's parameter command, the seed's
//! `gsc` in xl's shape).

use anyhow::{bail, Context as _, Result};
use clap::Args;
use gang_proto::{RequestBody, ResponseBody, SchedGangPool};

use super::{call, find_domain, names_domain, UsageError};

/// `gang sched-gang [-p POOL] [-d DOMAIN [-t POLICY] [-c CPUS]]`.
#[derive(Debug, Args)]
#[command(
    about = "Get or set gang scheduling parameters (policy, CPU map) of domains",
    long_about = "Get or set the gang scheduler's parameters.\n\n\
Without -t or -c: for every gang pool (or the pool of -p), print a pool line\n\
\x20 Cpupool NAME: sched=gang grain=G cpus=LIST shared=yes|no [host-slot=ACTIVE/PERIOD] active=yes|no\n\
and, while its dispatchers run, how they kept time over the last second (switches made, how late \
they were, the spin before a switch that the dispatchers learnt from their wake-up latency)\n\
\x20   dispatch (last 1s): N switches, late p50/p99/max A/B/Cus, spin Sus\n\
then one row per domain (only DOMAIN's with -d): Name, ID, Policy (`-` if none set), CPUs (the \
CPU map: vCPU i runs on the i-th CPU, `-` if none), and Recv(last period): the CPU time all its \
vCPUs received in the last accounting window, over that window (the policy's period; 1s for be \
and no).\n\n\
With -d DOMAIN -t POLICY [-c CPUS]: set them. POLICY is one of\n\
\x20 no                       no multiplexing: the domain owns its CPUs\n\
\x20 tt,PERIOD,ACTIVE[,exact][,sf]  time-triggered: ACTIVE of every PERIOD, in fixed slots;\n\
\x20                          exact: at @FROM exactly (a cluster gang's slot on every host)\n\
\x20 et,PERIOD,ACTIVE[,sf]    event-triggered: up to ACTIVE per PERIOD as soon as runnable\n\
\x20 be,WEIGHT[,sf]           best effort, WEIGHT 1-65535, shares what is left\n\
Times take units (ns, us, ms, s); a bare number is ms, as the seed's tool took it. `sf` \
(space filling) lets the domain also run in idle time. CPUS is an xl CPU list, one CPU per vCPU \
(without -c the daemon keeps the domain's map or chooses one). -c without -t changes the map and \
keeps the policy. A setting the pool cannot admit is refused with the reason, and nothing \
changes.",
    after_help = "Examples:\n  gang sched-gang\n  gang sched-gang -p GangSched-Pool\n  \
gang sched-gang -d my-domain\n  gang sched-gang -d my-domain -c 1-2 -t tt,100ms,40ms\n  \
gang sched-gang -p GangSched-Pool -d my-domain -c 1,2 -t tt,100,40     (the seed's gsc syntax)\n  \
gang sched-gang -d my-domain -t be,512,sf\n  gang sched-gang -v -d my-domain\n\n\
Differences from xl: xl has no gang scheduler; this follows the shape of sched-credit and \
sched-rtds (a pool line, then a table). -p is accepted with -d (the seed's tool took both) and \
must name the domain's pool."
)]
pub struct SchedGangArgs {
    /// Only this gang pool (id or name); with -d it must be the domain's.
    #[arg(short = 'p', long = "cpupool", value_name = "POOL")]
    pool: Option<String>,
    /// The domain (id or name) to show or set.
    #[arg(short = 'd', long = "domain", value_name = "DOMAIN")]
    domain: Option<String>,
    /// The domain's CPU map (xl CPU list, one CPU per vCPU), with -d.
    #[arg(short = 'c', long = "cpus", value_name = "CPUS")]
    cpus: Option<String>,
    /// The domain's policy: no | tt,PERIOD,ACTIVE[,exact][,sf] | et,PERIOD,ACTIVE[,sf]
    /// | be,WEIGHT[,sf], with -d.
    #[arg(short = 't', long = "policy", value_name = "POLICY")]
    policy: Option<String>,
    /// Also each running domain's co-scheduling metrics over the last
    /// second: all-running, co-stop, ready, running and blocked shares,
    /// co-start skew p50/p99 and late switches (from when its threads
    /// really ran).
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
}

/// The table, with the co-scheduling lines under `-v`.
fn table(pools: &[SchedGangPool], verbose: bool) -> String {
    if verbose {
        gang_proto::xl::sched_gang_verbose(pools)
    } else {
        gang_proto::xl::sched_gang(pools)
    }
}

fn names_pool(arg: &str, id: u32, name: &str) -> bool {
    names_domain(arg, id, name) // the same rule: all digits is an id
}

fn get(pool: Option<String>, domain: Option<String>) -> Result<Vec<SchedGangPool>> {
    match call(RequestBody::SchedGangGet { pool, domain })? {
        ResponseBody::SchedGang { pools } => Ok(pools),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    }
}

/// Parses a policy and a CPU map here, for a clear message before the
/// daemon is asked (it checks the CPUs against the pool, and admission).
fn parse(
    policy: Option<&str>,
    cpus: Option<&str>,
) -> Result<(Option<gang_core::Policy>, Option<gang_core::CpuList>)> {
    let policy = policy
        .map(|p| {
            p.parse::<gang_core::Policy>()
                .map_err(|e| anyhow::anyhow!("Invalid policy: {e}"))
        })
        .transpose()?;
    let cpus = cpus
        .map(|text| {
            let list = gang_core::CpuList::parse(text)?;
            match list.resolve(None) {
                Ok(set) if set.is_empty() => bail!("Invalid pcpu range: {text}."),
                Ok(_) | Err(gang_core::cpuset::CpuListError::AllWithoutUniverse) => Ok(list),
                Err(e) => Err(e.into()),
            }
        })
        .transpose()?;
    Ok((policy, cpus))
}

/// The seed's `-p` with `-d`: the pool must be the domain's.
fn check_pool(pool_arg: &str, domain_arg: &str) -> Result<()> {
    let domain = find_domain(domain_arg)?;
    let ResponseBody::Pools { pools } = call(RequestBody::ListPools)? else {
        bail!("unexpected answer from the daemon")
    };
    let pool = pools
        .iter()
        .find(|p| names_pool(pool_arg, p.id, &p.name))
        .with_context(|| format!("Pool '{pool_arg}' does not exist"))?;
    if pool.name != domain.pool {
        bail!(
            "Domain {domain_arg} is in cpupool '{}', not in '{}'",
            domain.pool,
            pool.name
        );
    }
    Ok(())
}

pub fn sched_gang(args: &SchedGangArgs) -> Result<()> {
    let setting = args.policy.is_some() || args.cpus.is_some();
    let Some(domain) = &args.domain else {
        if setting {
            return Err(UsageError(
                "'gang sched-gang': -t and -c set a domain's parameters: name it with -d DOMAIN"
                    .to_string(),
            )
            .into());
        }
        let mut pools = get(args.pool.clone(), None)?;
        if let Some(p) = &args.pool {
            pools.retain(|x| names_pool(p, x.id, &x.name));
            if pools.is_empty() {
                bail!("Pool '{p}' is not a gang cpupool (or does not exist)");
            }
        }
        print!("{}", table(&pools, args.verbose));
        return Ok(());
    };
    if let Some(p) = &args.pool {
        check_pool(p, domain)?;
    }
    if setting {
        // -c alone keeps the domain's policy (the daemon's rule).
        let (policy, cpus) = parse(args.policy.as_deref(), args.cpus.as_deref())?;
        call(RequestBody::SchedGangSet {
            domain: domain.clone(),
            cpus,
            policy,
        })?;
        return Ok(());
    }
    let mut pools = get(args.pool.clone(), Some(domain.clone()))?;
    for pool in &mut pools {
        pool.domains.retain(|d| names_domain(domain, d.id, &d.name));
    }
    pools.retain(|p| !p.domains.is_empty());
    if pools.is_empty() {
        let d = find_domain(domain)?;
        bail!(
            "Domain {domain} is not in a gang cpupool (it is in '{}')",
            d.pool
        );
    }
    print!("{}", table(&pools, args.verbose));
    Ok(())
}
