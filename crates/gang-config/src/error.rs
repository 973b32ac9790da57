//! The crate's single error type and its warning type.
//!
//! Display strings follow `xl`'s formats exactly where `xl` has one, so the
//! CLI can print them verbatim (it adds `Failed to parse config: Invalid
//! argument` after a [`ConfigError::Syntax`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Renders the `near ...` part of a syntax error like `xl`: `` `TOKEN' ``,
/// or `end of file` when the offending token is the end of the input.
/// A newline token is shown as the two characters `\n` so that every error
/// stays on one line.
fn near(token: &Option<String>) -> String {
    match token {
        None => "end of file".to_owned(),
        Some(t) => format!("`{}'", t.replace('\n', "\\n")),
    }
}

/// `FILE: ` before a disk-spec error when the file is known.
fn file_prefix(file: &Option<String>) -> String {
    match file {
        Some(f) => format!("{f}: "),
        None => String::new(),
    }
}

/// `: near `X'` in a disk-spec error when a part of the spec is to blame.
fn disk_near(part: &Option<String>) -> String {
    match part {
        Some(p) => format!(": near `{p}'"),
        None => String::new(),
    }
}

/// Everything that can go wrong while reading a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A lexical or syntax error in a config file or a command-line override.
    /// `token` is `None` at the end of the input.
    #[error("{file}:{line}: config parsing error near {}: {message}", near(token))]
    Syntax {
        /// The file name (`command line` for overrides).
        file: String,
        /// 1-based line of the offending token.
        line: u32,
        /// The offending token's text, `None` for the end of the input.
        token: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// A malformed disk specification (see [`crate::DiskSpec`]).
    #[error(
        "{}config parsing error in disk specification: {message}{} in `{spec}'",
        file_prefix(file),
        disk_near(near)
    )]
    Disk {
        /// The config file the spec came from, when known.
        file: Option<String>,
        /// What is wrong.
        message: String,
        /// The part of the spec to blame, if any.
        near: Option<String>,
        /// The whole spec.
        spec: String,
    },
    /// A domain config without `name`.
    #[error("Domain name must be specified.")]
    MissingName,
    /// A cpupool config without `name` (and no file name to fall back on).
    #[error("Missing cpupool name!")]
    MissingPoolName,
    /// `type` (or `builder`) names no known domain type.
    #[error("Invalid domain type {0}.")]
    InvalidType(String),
    /// An `on_poweroff`/`on_reboot`/`on_crash`/`on_watchdog` value that is no action.
    #[error("Unknown {key} action \"{value}\" specified")]
    InvalidAction {
        /// The parameter, e.g. `on_crash`.
        key: String,
        /// The value given.
        value: String,
    },
    /// A well-typed value that is out of range or inconsistent.
    #[error("{file}:{line}: invalid value for parameter `{key}': {message}")]
    Invalid {
        /// The file of the offending setting.
        file: String,
        /// Its line.
        line: u32,
        /// The parameter.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// A non-fatal problem found while reading values, e.g. a wrong type.
/// Displayed as `FILE:LINE: warning: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    /// File of the setting concerned.
    pub file: String,
    /// Line of the setting concerned.
    pub line: u32,
    /// The message without location, e.g. ``parameter `vcpus' is not a valid number``.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: warning: {}", self.file, self.line, self.message)
    }
}
