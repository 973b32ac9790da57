//! `gang-config`: the parser for `xl.cfg`-style configuration files, as read
//! by `gang create` and `gang cpupool-create`.
//!
//! Layers, each usable alone:
//!
//! - [`Config::parse`] / [`Config::parse_with_overrides`]: the syntax
//!   (`KEY = VALUE` separated by newlines or `;`, `#` comments, quoted strings
//!   with C escapes, decimal/octal/hex numbers, lists, `+=`), giving ordered
//!   [`Setting`]s of [`Value`]s. Syntax errors are [`ConfigError::Syntax`],
//!   displayed as `FILE:LINE: config parsing error near `TOKEN': MESSAGE`.
//! - Typed accessors ([`Config::get_str`], [`Config::get_num`],
//!   [`Config::get_list`]) that, like `xl`, turn a wrongly typed value into a
//!   [`Warning`] (kept on the `Config`, never printed) and `None`.
//! - [`DiskSpec::parse`] for `disk = [...]` items (xl-disk-configuration).
//! - [`VifSpec::parse`] for `vif = [...]` items (xl-network-configuration).
//! - [`DomainConfig::from_config`] and [`CpupoolConfig::from_config`]: the
//!   models the toolstack acts on.
//!
//! Invariants: no input makes any function here panic; a key is stored once
//! (the last assignment wins, first-seen order is kept); every setting knows
//! the file and line of its last assignment; overrides are parsed after the
//! file under the file name `command line`, override N being line N.

mod config;
mod disk;
mod domain;
mod error;
mod parse;
mod value;
mod vif;

pub use config::{Config, Setting, COMMAND_LINE};
pub use disk::{DiskAccess, DiskDevtype, DiskFormat, DiskSpec};
pub use domain::{
    Action, Command, CpupoolConfig, DeviceModel, DomainConfig, DomainType, CPUPOOL_KEYS,
    DOMAIN_KEYS, UNSUPPORTED_DOMAIN_KEYS,
};
pub use error::{ConfigError, Warning};
pub use value::Value;
pub use vif::{check_mac, VifError, VifKind, VifSpec};
