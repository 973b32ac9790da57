//! xl's usage errors for xl's sub-commands, from clap's errors:
//!
//! - an unknown option: `option `x' not supported.` (a long one is named
//!   with its dashes), exit 2;
//! - too few arguments: `'gang CMD' requires at least N argument(s).`, a
//!   blank line, then the sub-command's help, exit 2 (all on stderr).
//!
//! Everything else (help, version, the other sub-commands' errors, a
//! missing option value) is clap's own message; usage errors exit 2
//! either way.

use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::CommandFactory as _;

use crate::Cli;

/// Sub-commands that are gang's own and keep clap's messages.
const NOT_XL: &[&str] = &["sim", "bench", "workload", "daemon", "help"];

/// The sub-command the command line names (exactly or by a unique prefix).
fn subcommand_name(cmd: &clap::Command) -> Option<String> {
    let word = std::env::args().skip(1).find(|a| !a.starts_with('-'))?;
    let names: Vec<&str> = cmd.get_subcommands().map(clap::Command::get_name).collect();
    if names.contains(&word.as_str()) {
        return Some(word);
    }
    let mut matching = names.iter().filter(|n| n.starts_with(word.as_str()));
    match (matching.next(), matching.next()) {
        (Some(only), None) => Some((*only).to_string()),
        _ => None,
    }
}

/// The xl message for `error` if there is one.
pub(crate) fn xl_message(
    error: &clap::Error,
    cmd: &mut clap::Command,
    name: &str,
) -> Option<String> {
    match error.kind() {
        ErrorKind::UnknownArgument => {
            let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
                return None;
            };
            let option = if arg.starts_with("--") {
                arg.split('=').next().unwrap_or(arg).to_string()
            } else {
                arg.strip_prefix('-')?.chars().next()?.to_string()
            };
            Some(format!("option `{option}' not supported."))
        }
        ErrorKind::MissingRequiredArgument => {
            let Some(ContextValue::Strings(missing)) = error.get(ContextKind::InvalidArg) else {
                return None;
            };
            if !missing.iter().all(|m| m.starts_with('<')) {
                return None; // a required option, not arguments
            }
            let n = cmd
                .find_subcommand(name)?
                .get_positionals()
                .filter(|a| a.is_required_set())
                .count();
            requires_arguments(cmd, name, n)
        }
        _ => None,
    }
}

/// xl's `'xl CMD' requires at least N argument(s).`, a blank line, then the
/// sub-command's help.
fn requires_arguments(cmd: &mut clap::Command, name: &str, n: usize) -> Option<String> {
    cmd.build();
    let sub = cmd.find_subcommand_mut(name)?;
    let n = n.max(1);
    let plural = if n > 1 { "s" } else { "" };
    Some(format!(
        "'gang {name}' requires at least {n} argument{plural}.\n\n{}",
        sub.render_help()
    ))
}

/// The usage error of a sub-command that checks its arguments itself (when
/// which are required depends on its options, as `shutdown`'s on `-a`).
pub(crate) fn too_few_arguments(name: &str, n: usize) -> crate::xl::UsageError {
    let text = requires_arguments(&mut Cli::command(), name, n)
        .unwrap_or_else(|| format!("'gang {name}' requires at least {n} argument(s)."));
    crate::xl::UsageError(text.trim_end().to_string())
}

/// Prints a command-line error as xl would and returns the exit code.
pub fn report(error: &clap::Error) -> ExitCode {
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        error.exit();
    }
    let mut cmd = Cli::command();
    let message = subcommand_name(&cmd)
        .filter(|name| !NOT_XL.contains(&name.as_str()))
        .and_then(|name| xl_message(error, &mut cmd, &name));
    match message {
        Some(m) => {
            eprint!("{m}");
            if !m.ends_with('\n') {
                eprintln!();
            }
            ExitCode::from(2)
        }
        None => {
            let _ = error.print();
            ExitCode::from(2)
        }
    }
}
