//! `gang`: the xl-compatible command line of the gang toolstack.
//!
//! Each sub-command lives in its own module; `main` only parses the command
//! line and maps errors to exit codes: 0 success, 1 a runtime or input error,
//! 2 a usage error (clap). xl's sub-commands print xl's messages as they are;
//! the others prefix theirs with `gang SUBCOMMAND: `. Like xl, a sub-command
//! may be shortened to any unambiguous prefix.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod sim;
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
    Bench(bench::BenchArgs),
    Workload(workload::WorkloadArgs),
    /// Run the gang daemon (see contrib/systemd/gang.service)
    Daemon(xl::DaemonArgs),
    Info(xl::InfoArgs),
    Create(xl::CreateArgs),
    List(xl::ListArgs),
    #[command(name = "cpupool-list")]
    CpupoolList(xl::CpupoolListArgs),
    #[command(name = "cpupool-create")]
    CpupoolCreate(xl::CpupoolCreateArgs),
    #[command(name = "cpupool-destroy")]
    CpupoolDestroy(xl::CpupoolDestroyArgs),
    #[command(name = "cpupool-rename")]
    CpupoolRename(xl::CpupoolRenameArgs),
    /// Add CPUs to a CPU pool (they must be free)
    #[command(name = "cpupool-cpu-add")]
    CpupoolCpuAdd(xl::CpupoolCpuArgs),
    /// Remove CPUs from a CPU pool (Pool-0 keeps at least one)
    #[command(name = "cpupool-cpu-remove")]
    CpupoolCpuRemove(xl::CpupoolCpuArgs),
    #[command(name = "cpupool-migrate")]
    CpupoolMigrate(xl::CpupoolMigrateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (name, xl_style, result) = match cli.command {
        Command::Sim(args) => ("sim", false, sim::run(&args)),
        Command::Bench(args) => ("bench", false, bench::run(&args)),
        Command::Workload(args) => ("workload", false, workload::run(&args)),
        Command::Daemon(args) => ("daemon", false, xl::daemon(&args)),
        Command::Info(args) => ("info", true, xl::info(&args)),
        Command::Create(args) => ("create", true, xl::create(&args)),
        Command::List(args) => ("list", true, xl::list(&args)),
        Command::CpupoolList(args) => ("cpupool-list", true, xl::cpupool_list(&args)),
        Command::CpupoolCreate(args) => ("cpupool-create", true, xl::cpupool_create(&args)),
        Command::CpupoolDestroy(args) => ("cpupool-destroy", true, xl::cpupool_destroy(&args)),
        Command::CpupoolRename(args) => ("cpupool-rename", true, xl::cpupool_rename(&args)),
        Command::CpupoolCpuAdd(args) => ("cpupool-cpu-add", true, xl::cpupool_cpu_add(&args)),
        Command::CpupoolCpuRemove(args) => {
            ("cpupool-cpu-remove", true, xl::cpupool_cpu_remove(&args))
        }
        Command::CpupoolMigrate(args) => ("cpupool-migrate", true, xl::cpupool_migrate(&args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
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
