//! `gang`: the xl-compatible command line of the gang toolstack.
//!
//! Each sub-command lives in its own module; `main` only parses the command
//! line and maps errors to exit codes: 0 success, 1 a runtime or input error
//! (reported as `gang SUBCOMMAND: …` on stderr), 2 a usage error (clap).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod sim;
mod workload;

/// The gang toolstack: gang-scheduled CPU pools for Linux hosts.
#[derive(Debug, Parser)]
#[command(name = "gang", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Sim(sim::SimArgs),
    Bench(bench::BenchArgs),
    Workload(workload::WorkloadArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (name, result) = match cli.command {
        Command::Sim(args) => ("sim", sim::run(&args)),
        Command::Bench(args) => ("bench", bench::run(&args)),
        Command::Workload(args) => ("workload", workload::run(&args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gang {name}: {e:#}");
            ExitCode::from(1)
        }
    }
}
