//! `gang`: the xl-compatible command line of the gang toolstack.
//!
//! Each sub-command lives in its own module; `main` only parses the command
//! line and maps errors to exit codes: 0 success, 1 a runtime or input error,
//! 2 a usage error. xl's sub-commands print xl's messages as they are (usage
//! errors too, see [`usage`]); the others prefix theirs with
//! `gang SUBCOMMAND: `. Like xl, a sub-command may be shortened to any
//! unambiguous prefix.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod benchcluster;
mod benchslurm;
mod benchvm;
mod guest;
mod sim;
mod simcluster;
mod usage;
mod workload;
mod xl;

/// The gang toolstack: gang-scheduled CPU pools for Linux hosts.
#[derive(Debug, Parser)]
#[command(
    name = "gang",
    version,
    about,
    propagate_version = true,
    infer_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Sim(sim::SimArgs),
    SimCluster(simcluster::SimClusterArgs),
    Bench(bench::BenchArgs),
    #[command(name = "bench-vm")]
    BenchVm(benchvm::BenchVmArgs),
    #[command(name = "bench-cluster")]
    BenchCluster(benchcluster::BenchClusterArgs),
    #[command(name = "bench-slurm")]
    BenchSlurm(benchslurm::BenchSlurmArgs),
    Workload(workload::WorkloadArgs),
    #[command(name = "guest-image")]
    GuestImage(guest::GuestImageArgs),
    /// Run the gang daemon (see contrib/systemd/gang.service)
    Daemon(xl::DaemonArgs),
    Info(xl::InfoArgs),
    Create(xl::domains::CreateArgs),
    List(xl::domains::ListArgs),
    #[command(name = "vcpu-list")]
    VcpuList(xl::domains::VcpuListArgs),
    Pause(xl::domains::PauseArgs),
    Unpause(xl::domains::UnpauseArgs),
    Shutdown(xl::domains::ShutdownArgs),
    Reboot(xl::domains::RebootArgs),
    Destroy(xl::domains::DestroyArgs),
    Dmesg(xl::domains::DmesgArgs),
    Top(xl::top::TopArgs),
    Console(xl::console::ConsoleArgs),
    #[command(name = "sched-gang")]
    SchedGang(xl::sched::SchedGangArgs),
    Trace(xl::trace::TraceArgs),
    #[command(name = "cpupool-list")]
    CpupoolList(xl::pools::CpupoolListArgs),
    #[command(name = "cpupool-create")]
    CpupoolCreate(xl::pools::CpupoolCreateArgs),
    #[command(name = "cpupool-destroy")]
    CpupoolDestroy(xl::pools::CpupoolDestroyArgs),
    #[command(name = "cpupool-rename")]
    CpupoolRename(xl::pools::CpupoolRenameArgs),
    /// Add CPUs to a CPU pool (they must be free)
    #[command(name = "cpupool-cpu-add")]
    CpupoolCpuAdd(xl::pools::CpupoolCpuArgs),
    /// Remove CPUs from a CPU pool (Pool-0 keeps at least one)
    #[command(name = "cpupool-cpu-remove")]
    CpupoolCpuRemove(xl::pools::CpupoolCpuArgs),
    #[command(name = "cpupool-migrate")]
    CpupoolMigrate(xl::pools::CpupoolMigrateArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage::report(&e),
    };
    let (name, xl_style, result) = match cli.command {
        Command::Sim(args) => ("sim", false, sim::run(&args)),
        Command::SimCluster(args) => ("sim-cluster", false, simcluster::run(&args)),
        Command::Bench(args) => ("bench", false, bench::run(&args)),
        Command::BenchVm(args) => ("bench-vm", false, benchvm::run(&args)),
        Command::BenchCluster(args) => ("bench-cluster", false, benchcluster::run(&args)),
        Command::BenchSlurm(args) => ("bench-slurm", false, benchslurm::run(&args)),
        Command::Workload(args) => ("workload", false, workload::run(&args)),
        Command::GuestImage(args) => ("guest-image", false, guest::run(&args)),
        Command::Daemon(args) => ("daemon", false, xl::daemon(&args)),
        Command::Info(args) => ("info", true, xl::info(&args)),
        Command::Create(args) => ("create", true, xl::domains::create(&args)),
        Command::List(args) => ("list", true, xl::domains::list(&args)),
        Command::VcpuList(args) => ("vcpu-list", true, xl::domains::vcpu_list(&args)),
        Command::Pause(args) => ("pause", true, xl::domains::pause(&args)),
        Command::Unpause(args) => ("unpause", true, xl::domains::unpause(&args)),
        Command::Shutdown(args) => ("shutdown", true, xl::domains::shutdown(&args)),
        Command::Reboot(args) => ("reboot", true, xl::domains::reboot(&args)),
        Command::Destroy(args) => ("destroy", true, xl::domains::destroy(&args)),
        Command::Dmesg(args) => ("dmesg", true, xl::domains::dmesg(&args)),
        Command::Top(args) => ("top", true, xl::top::top(&args)),
        Command::Console(args) => ("console", true, xl::console::console(&args)),
        Command::SchedGang(args) => ("sched-gang", true, xl::sched::sched_gang(&args)),
        Command::Trace(args) => ("trace", true, xl::trace::trace(&args)),
        Command::CpupoolList(args) => ("cpupool-list", true, xl::pools::cpupool_list(&args)),
        Command::CpupoolCreate(args) => ("cpupool-create", true, xl::pools::cpupool_create(&args)),
        Command::CpupoolDestroy(args) => {
            ("cpupool-destroy", true, xl::pools::cpupool_destroy(&args))
        }
        Command::CpupoolRename(args) => ("cpupool-rename", true, xl::pools::cpupool_rename(&args)),
        Command::CpupoolCpuAdd(args) => {
            ("cpupool-cpu-add", true, xl::pools::cpupool_cpu_add(&args))
        }
        Command::CpupoolCpuRemove(args) => (
            "cpupool-cpu-remove",
            true,
            xl::pools::cpupool_cpu_remove(&args),
        ),
        Command::CpupoolMigrate(args) => {
            ("cpupool-migrate", true, xl::pools::cpupool_migrate(&args))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<xl::UsageError>().is_some() => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
        Err(e) if xl_style => {
            eprintln!("{e:#}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("gang {name}: {e:#}");
            ExitCode::from(1)
        }
    }
}
