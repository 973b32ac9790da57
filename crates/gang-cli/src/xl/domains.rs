//! xl's domain commands: `create`, `list`, `vcpu-list`, `pause`, `unpause`,
//! `shutdown`, `reboot`, `destroy`, `dmesg`.

use anyhow::{bail, Context as _, Result};
use clap::Args;
use gang_proto::{RequestBody, ResponseBody};

use super::call;

/// `gang list [-l] [-v] [-c] [DOMAIN]`.
#[derive(Debug, Args)]
#[command(
    about = "List domains",
    long_about = "List domains: name, id, memory (MiB), vCPUs, state and CPU time (s), in xl's layout.\n\n\
The state has six characters, `-` where not set: r running, b blocked, p paused, s shut down, \
then the shutdown reason (- poweroff, r reboot, s suspend, c crash, w watchdog, S soft reset), \
then d dying.",
    after_help = "Examples:\n  gang list\n  gang list -v my-domain\n  gang list -c\n  gang list -l 3\n\n\
Differences from xl: the security label column of -v is always `-` (gang has no XSM labels); \
a UUID the daemon does not know prints as `-`. -l prints the configuration gang keeps for the \
domain (the parsed xl.cfg as JSON, `null` for the host's Domain-0); xl's -Z and -n are not \
supported."
)]
pub struct ListArgs {
    /// Long: print a JSON array of {"domid": N, "config": {...}} with each
    /// domain's whole configuration (-v and -c are then ignored, as in xl).
    #[arg(short = 'l', long = "long")]
    long: bool,
    /// Verbose: add the UUID, the shutdown reason code (hex, `-` unless shut
    /// down) and the security label (`-`).
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// Add the Cpupool column.
    #[arg(short = 'c', long = "cpupool")]
    cpupool: bool,
    /// Only this domain (id or name).
    #[arg(value_name = "DOMAIN")]
    domain: Option<String>,
}

pub fn list(args: &ListArgs) -> Result<()> {
    let mut domains = super::domains_with(args.long)?;
    if let Some(d) = &args.domain {
        domains.retain(|x| super::names_domain(d, x.id, &x.name));
        if domains.is_empty() {
            return Err(super::invalid_domain(d));
        }
    }
    if args.long {
        print!("{}", gang_proto::xl::list_long(&domains));
    } else {
        print!(
            "{}",
            gang_proto::xl::list_domains(&domains, args.verbose, args.cpupool)
        );
    }
    Ok(())
}

/// `gang vcpu-list [DOMAIN ...]`.
#[derive(Debug, Args)]
#[command(
    about = "List the vCPUs of domains",
    long_about = "List the vCPUs of all domains, or of the given ones: domain, id, vCPU number, \
the CPU it runs on (`-` when it is not running), its state (r running, b blocked, p paused or \
offline), its CPU time (s), and its hard / soft affinity (`all`, `none` or a CPU list), in \
xl's layout.",
    after_help = "Examples:\n  gang vcpu-list\n  gang vcpu-list my-domain 3\n\n\
Differences from xl: xl prints the last CPU of a vCPU that is not running; gang prints `-` \
(a vCPU of a process domain is a host thread that is on no CPU while it does not run). In a \
gang pool the hard affinity of vCPU i is the i-th CPU of the domain's CPU map."
)]
pub struct VcpuListArgs {
    /// Domains (id or name); all if none.
    #[arg(value_name = "DOMAIN")]
    domains: Vec<String>,
}

pub fn vcpu_list(args: &VcpuListArgs) -> Result<()> {
    let ResponseBody::Vcpus { vcpus } = call(RequestBody::VcpuList {
        domains: args.domains.clone(),
    })?
    else {
        bail!("unexpected answer from the daemon")
    };
    print!("{}", gang_proto::xl::vcpu_list(&vcpus));
    Ok(())
}

/// `gang pause DOMAIN`.
#[derive(Debug, Args)]
#[command(
    about = "Pause a domain",
    long_about = "Pause a domain: its vCPUs stop running (a process domain's threads are frozen) \
and keep their state; its memory stays allocated. It shows `p` in `gang list`.",
    after_help = "Example:\n  gang pause my-domain\n\n\
As in the seed's walkthrough, a paused domain may be moved with `gang cpupool-migrate` and given \
gang parameters with `gang sched-gang` before `gang unpause`."
)]
pub struct PauseArgs {
    /// The domain (id or name).
    #[arg(value_name = "DOMAIN")]
    domain: String,
}

pub fn pause(args: &PauseArgs) -> Result<()> {
    call(RequestBody::Pause {
        domain: args.domain.clone(),
    })?;
    Ok(())
}

/// `gang unpause DOMAIN`.
#[derive(Debug, Args)]
#[command(
    about = "Unpause a domain",
    long_about = "Unpause a paused domain: its vCPUs run again. In a gang pool they run in the \
slots of the domain's gang policy (`gang sched-gang`); the daemon refuses to unpause a domain \
its pool cannot admit, and says why.",
    after_help = "Example:\n  gang unpause my-domain"
)]
pub struct UnpauseArgs {
    /// The domain (id or name).
    #[arg(value_name = "DOMAIN")]
    domain: String,
}

pub fn unpause(args: &UnpauseArgs) -> Result<()> {
    call(RequestBody::Unpause {
        domain: args.domain.clone(),
    })?;
    Ok(())
}

/// How long `shutdown -w` waits unless told otherwise, seconds.
const DEFAULT_WAIT_S: u64 = 60;

/// `gang shutdown [-w] [-a] [DOMAIN]`.
#[derive(Debug, Args)]
#[command(
    about = "Ask a domain (or all, -a) to shut down",
    long_about = "Ask a domain to shut down cleanly: a process domain gets SIGTERM, a micro-VM a \
power-off request, a QEMU guest (type = \"hvm\") a press of its ACPI power button (the guest's \
OS decides; Linux needs acpid or systemd-logind to act on it). The domain's on_poweroff action \
applies once it has shut down. Without -w the command returns at once.",
    after_help = "Examples:\n  gang shutdown my-domain\n  gang shutdown -w -a\n\n\
Differences from xl: -w gives up after --timeout seconds (default 60) with an error, where xl \
waits forever; xl's -F is not needed: an hvm guest always gets the ACPI power button. -a skips Domain-0 (the host) \
as xl does."
)]
pub struct ShutdownArgs {
    /// Wait until the domain(s) have shut down (or are gone).
    #[arg(short = 'w', long = "wait")]
    wait: bool,
    /// All domains but Domain-0.
    #[arg(short = 'a', long = "all", conflicts_with = "domain")]
    all: bool,
    /// With -w: give up after this many seconds (gang's own option).
    #[arg(long = "timeout", value_name = "SECONDS", default_value_t = DEFAULT_WAIT_S)]
    timeout: u64,
    /// The domain (id or name); not with -a.
    #[arg(value_name = "DOMAIN")]
    domain: Option<String>,
}

pub fn shutdown(args: &ShutdownArgs) -> Result<()> {
    let targets: Vec<(u32, String)> = if args.all {
        super::domains()?
            .into_iter()
            .filter(|d| d.id != 0)
            .map(|d| (d.id, d.name))
            .collect()
    } else {
        let Some(arg) = &args.domain else {
            return Err(crate::usage::too_few_arguments("shutdown", 1).into());
        };
        let d = super::find_domain(arg)?;
        vec![(d.id, d.name)]
    };
    for (id, _) in &targets {
        eprintln!("Shutting down domain {id}");
        call(RequestBody::Shutdown {
            domain: id.to_string(),
        })?;
    }
    if args.wait {
        wait_for_shutdown(&targets, std::time::Duration::from_secs(args.timeout))?;
    }
    Ok(())
}

/// Polls the domain list until every target is shut down (`s` in its
/// state) or gone, printing xl's messages as each one gets there.
fn wait_for_shutdown(targets: &[(u32, String)], timeout: std::time::Duration) -> Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    eprintln!("Waiting for {} domains", targets.len());
    let mut waiting: Vec<u32> = targets.iter().map(|(id, _)| *id).collect();
    loop {
        let domains = super::domains()?;
        waiting.retain(|id| match domains.iter().find(|d| d.id == *id) {
            None => {
                eprintln!("Domain {id} has been destroyed.");
                false
            }
            Some(d) if d.state.shutdown.is_some() => {
                eprintln!(
                    "Domain {id} has been shut down, reason code {}",
                    d.state.shutdown.map_or(0, gang_proto::ShutdownReason::code)
                );
                false
            }
            Some(_) => true,
        });
        if waiting.is_empty() {
            eprintln!("All domains have been shut down");
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            let ids: Vec<String> = waiting.iter().map(u32::to_string).collect();
            bail!(
                "Timed out after {}s waiting for domain(s) {} to shut down",
                timeout.as_secs(),
                ids.join(", ")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// `gang reboot DOMAIN`.
#[derive(Debug, Args)]
#[command(
    about = "Ask a domain to reboot",
    long_about = "Ask a domain to reboot: it shuts down with the reboot reason and its on_reboot \
action applies (restart by default: the same configuration, pool and gang parameters). A process \
gets SIGTERM; a QEMU guest (type = \"hvm\") is reset at once (QMP system_reset, as xl reboot -F \
does for an HVM guest without PV drivers) and, with on_reboot = \"restart\", started again in a \
new QEMU.",
    after_help = "Example:\n  gang reboot my-domain\n\n\
Differences from xl: xl's -a, -w and -F are not supported."
)]
pub struct RebootArgs {
    /// The domain (id or name).
    #[arg(value_name = "DOMAIN")]
    domain: String,
}

pub fn reboot(args: &RebootArgs) -> Result<()> {
    let d = super::find_domain(&args.domain)?;
    eprintln!("Rebooting domain {}", d.id);
    call(RequestBody::Reboot {
        domain: d.id.to_string(),
    })?;
    Ok(())
}

/// `gang destroy DOMAIN`.
#[derive(Debug, Args)]
#[command(
    about = "Destroy a domain at once",
    long_about = "Destroy a domain at once, without asking it: a process domain is killed \
(SIGKILL), a VM stopped. Its CPUs in a gang pool are free for others afterwards.",
    after_help = "Example:\n  gang destroy my-domain\n\n\
Differences from xl: xl's -f (force, for domains xl cannot find) is not needed."
)]
pub struct DestroyArgs {
    /// The domain (id or name).
    #[arg(value_name = "DOMAIN")]
    domain: String,
}

pub fn destroy(args: &DestroyArgs) -> Result<()> {
    call(RequestBody::Destroy {
        domain: args.domain.clone(),
    })?;
    Ok(())
}

/// `gang dmesg [-c]`.
#[derive(Debug, Args)]
#[command(
    about = "Print the daemon's message ring",
    long_about = "Print the gang daemon's message ring, oldest first: what it did to pools, \
domains and dispatchers, and why a domain stopped. It plays the role of Xen's console ring \
(`xl dmesg`).",
    after_help = "Examples:\n  gang dmesg\n  gang dmesg -c\n\n\
Differences from xl: the lines are the toolstack daemon's, not a hypervisor's; the host \
kernel's own ring is `dmesg` (without gang)."
)]
pub struct DmesgArgs {
    /// Clear the ring after printing it.
    #[arg(short = 'c', long = "clear")]
    clear: bool,
}

pub fn dmesg(args: &DmesgArgs) -> Result<()> {
    let ResponseBody::Dmesg { lines } = call(RequestBody::Dmesg { clear: args.clear })? else {
        bail!("unexpected answer from the daemon")
    };
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

/// `gang create [-p] [-c] [-q] [-n] FILE [KEY=VALUE ...]`.
#[derive(Debug, Args)]
#[command(
    about = "Create a domain from an xl.cfg file (KEY=VALUE settings override the file)",
    long_about = "Create a domain from an xl.cfg file. KEY=VALUE settings in config syntax are \
appended after the file, so they override it (strings quoted: pool=\\\"GangSched-Pool\\\"). \
Prints `Parsing config from FILE` to stderr unless -q. gang runs domains of type \"hvm\" \
(an operating system in a QEMU process the daemon starts and controls over QMP, booting `kernel` \
or a `disk`, with `disk`, `vif`, `vnc` and `serial` as in xl), \"pvh\" (gang's own KVM \
micro-VM, or QEMU with device_model = \"qemu\") and \"process\" (a host program, \
`command = [...]`, running ones, `pid = N` or a job's `pids = [N, M]` (`children = 1`: with \
their descendants), or what runs in a job cgroup another launcher made, `cgroup = PATH`; with \
`vcpu_threads = GLOB` the matching threads are the vCPUs, without it the whole program, threads \
and children born later included, is the gang and `vcpus` the number of CPUs it gets); \
`gang_policy` (with \
`cpus`) gives a domain created in a gang pool its gang parameters, so that it runs at once. \
Files named relative to the current directory (kernel, ramdisk, disks) are made absolute \
before the daemon is asked.",
    after_help = "Examples:\n  gang create my-domain.cfg\n  gang create -p my-domain.cfg pool=\\\"GangSched-Pool\\\"\n  \
gang create -n my-domain.cfg\n  gang create -c my-domain.cfg\n  \
gang guest-image linux -o images && gang create -c images/linux.cfg\n\n\
Differences from xl: type \"pv\" and bootloader (pygrub) are refused with what to use \
instead, and so is any key QEMU cannot honour for an hvm guest (sdl, soundhw, usbdevice, pci, \
...), by name; the emulated NIC is virtio-net unless `model` says otherwise; -n prints the \
checked configuration as JSON."
)]
pub struct CreateArgs {
    /// Leave the domain paused after creating it.
    #[arg(short = 'p')]
    paused: bool,
    /// Attach to the domain's console after creating it (as `gang console`;
    /// the escape character ^] detaches).
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
    "gang runs domains of type \"hvm\" (an operating system in QEMU, as Xen runs HVM guests), \
\"pvh\" (a KVM micro-VM booting `kernel` through its PVH entry point, or QEMU with \
device_model = \"qemu\") and \"process\" (a host program, `command = [...]`, or a running one, \
`pid = N`, whose threads are the vCPUs)";

/// Refuses what needs something gang does not have, saying what instead.
/// (The daemon checks the rest: files, QEMU's options, admission.)
fn check_supported(config: &gang_config::DomainConfig) -> Result<()> {
    use gang_config::{DeviceModel, DomainType};
    if config.domain_type == DomainType::Pv {
        bail!(
            "type \"pv\" needs Xen's paravirtual interface, which gang does not have: {SUPPORTED}. \
A PV guest kernel that also boots as PVH or HVM (Linux does) runs with type = \"hvm\" and the same `kernel`."
        );
    }
    if config.bootloader.is_some() {
        bail!("bootloader (pygrub) is not supported: give the guest kernel with `kernel` (and `ramdisk`, `extra`), or boot a `disk` with type = \"hvm\"");
    }
    let in_qemu =
        config.domain_type == DomainType::Hvm || config.device_model == Some(DeviceModel::Qemu);
    if config.vnc == Some(true) && !in_qemu {
        bail!("vnc needs QEMU: gang's micro-VMs and processes have a serial console only (`gang create -c`, `gang console`); use type = \"hvm\"");
    }
    Ok(())
}

/// Makes a file name absolute against the CLI's working directory (the
/// daemon has another one).
fn absolute(file: &mut String) {
    if !file.is_empty() && std::path::Path::new(file.as_str()).is_relative() {
        if let Ok(cwd) = std::env::current_dir() {
            *file = cwd.join(&*file).display().to_string();
        }
    }
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
    let mut domain = domain?;
    check_supported(&domain)?;
    // The daemon has another working directory: files named relative to
    // ours are made absolute, as xl reads them from its own.
    for file in [&mut domain.kernel, &mut domain.ramdisk]
        .into_iter()
        .flatten()
    {
        absolute(file);
    }
    for disk in &mut domain.disks {
        absolute(&mut disk.target);
    }
    if args.dry_run {
        println!(
            "{}",
            serde_json::to_string_pretty(&domain).context("encoding the configuration")?
        );
        return Ok(());
    }
    let ResponseBody::Created { id } = call(RequestBody::CreateDomain {
        config: Box::new(domain),
        paused: args.paused,
    })?
    else {
        bail!("unexpected answer")
    };
    if !args.quiet {
        eprintln!("Created domain {id}");
    }
    if args.console {
        return super::console::attach(&id.to_string(), super::console::DEFAULT_ESCAPE);
    }
    Ok(())
}
