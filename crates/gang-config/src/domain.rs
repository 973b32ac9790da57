//! The domain model read from a parsed [`Config`] (`xl create` files) and
//! the cpupool model (`xl cpupool-create` files).
//!
//! Type problems in single values are warnings (recorded on the [`Config`])
//! and the value is treated as absent, as in `xl`; missing or invalid
//! essentials (name, type, actions, disks, ranges) are errors. Unknown keys
//! are warned about (`unknown parameter X, ignored`) and otherwise ignored.

use serde::{Deserialize, Serialize};

use crate::config::{Config, COMMAND_LINE};
use crate::disk::DiskSpec;
use crate::error::ConfigError;
use crate::value::Value;

/// The kind of guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainType {
    /// Paravirtualised.
    Pv,
    /// PVH.
    Pvh,
    /// Fully virtualised.
    Hvm,
    /// gang's own: a group of host processes/threads scheduled as a domain.
    Process,
}

/// What to do when the guest powers off, reboots, crashes or trips its watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Destroy the domain.
    Destroy,
    /// Destroy and start again with the same config.
    Restart,
    /// Rename the old domain and start a new one.
    RenameRestart,
    /// Keep the domain as it is.
    Preserve,
    /// Dump core, then destroy.
    CoredumpDestroy,
    /// Dump core, then restart.
    CoredumpRestart,
}

impl Action {
    /// Parses an action name as written in xl.cfg.
    pub fn from_name(s: &str) -> Option<Action> {
        Some(match s {
            "destroy" => Action::Destroy,
            "restart" => Action::Restart,
            "rename-restart" => Action::RenameRestart,
            "preserve" => Action::Preserve,
            "coredump-destroy" => Action::CoredumpDestroy,
            "coredump-restart" => Action::CoredumpRestart,
            _ => return None,
        })
    }
}

/// The program a process domain runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// `command = "..."`: one string, kept as text (for a shell).
    Line(String),
    /// `command = ["prog", "arg", ...]`: an argument vector.
    Argv(Vec<String>),
}

/// A domain configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainConfig {
    /// `name` (required).
    pub name: String,
    /// `type`, or `builder` (`hvm`/`generic`); without either, `process` if
    /// `command` or `pid` is set, else `pv` as in `xl`.
    pub domain_type: DomainType,
    /// `memory`, MB.
    pub memory_mb: Option<u64>,
    /// `maxmem`, MB.
    pub maxmem_mb: Option<u64>,
    /// `vcpus` (default 1).
    pub vcpus: u32,
    /// `maxvcpus` (not below `vcpus`).
    pub maxvcpus: Option<u32>,
    /// `cpus`, a CPU list kept as text (a list value is joined with `,`).
    pub cpus: Option<String>,
    /// `cpus_soft`, likewise.
    pub cpus_soft: Option<String>,
    /// `pool`.
    pub pool: Option<String>,
    /// `kernel`.
    pub kernel: Option<String>,
    /// `ramdisk`.
    pub ramdisk: Option<String>,
    /// The effective command line: `cmdline`, else `root=ROOT EXTRA`.
    pub cmdline: Option<String>,
    /// `root`.
    pub root: Option<String>,
    /// `extra`.
    pub extra: Option<String>,
    /// `bootloader`.
    pub bootloader: Option<String>,
    /// `on_poweroff` (default destroy).
    pub on_poweroff: Action,
    /// `on_reboot` (default restart).
    pub on_reboot: Action,
    /// `on_crash` (default destroy).
    pub on_crash: Action,
    /// `on_watchdog` (default destroy).
    pub on_watchdog: Action,
    /// `disk`, parsed.
    pub disks: Vec<DiskSpec>,
    /// `vif`, each spec kept as text.
    pub vifs: Vec<String>,
    /// `vnc` (a boolean number).
    pub vnc: Option<bool>,
    /// `boot` (HVM boot order, e.g. `dc`).
    pub boot: Option<String>,
    /// `gang_policy`, kept as text (e.g. `tt,100ms,40ms`).
    pub gang_policy: Option<String>,
    /// `command` (process domains).
    pub command: Option<Command>,
    /// `pid`: adopt this running process.
    pub pid: Option<u32>,
    /// `vcpu_threads`: pattern of the thread names that are the vCPUs.
    pub vcpu_threads: Option<String>,
}

/// Keys understood by [`DomainConfig::from_config`].
pub const DOMAIN_KEYS: &[&str] = &[
    "name",
    "type",
    "builder",
    "memory",
    "maxmem",
    "vcpus",
    "maxvcpus",
    "cpus",
    "cpus_soft",
    "pool",
    "kernel",
    "ramdisk",
    "cmdline",
    "root",
    "extra",
    "bootloader",
    "on_poweroff",
    "on_reboot",
    "on_crash",
    "on_watchdog",
    "disk",
    "vif",
    "vnc",
    "boot",
    "gang_policy",
    "command",
    "pid",
    "vcpu_threads",
];

/// Keys understood by [`CpupoolConfig::from_config`].
pub const CPUPOOL_KEYS: &[&str] = &["name", "sched", "cpus", "nodes", "shared"];

fn invalid(cfg: &Config, key: &str, message: &str) -> ConfigError {
    let (file, line) = cfg
        .get(key)
        .map_or((cfg.file().to_owned(), 0), |s| (s.file.clone(), s.line));
    ConfigError::Invalid {
        file,
        line,
        key: key.to_owned(),
        message: message.to_owned(),
    }
}

/// A non-negative number that fits `T`, else an error.
fn get_unsigned<T: TryFrom<i64>>(cfg: &Config, key: &str) -> Result<Option<T>, ConfigError> {
    match cfg.get_num(key) {
        None => Ok(None),
        Some(n) if n < 0 => Err(invalid(cfg, key, "must not be negative")),
        Some(n) => T::try_from(n)
            .map(Some)
            .map_err(|_| invalid(cfg, key, "too large")),
    }
}

/// A single value as text, or a list joined with `,` (CPU and node lists).
fn get_cpu_list(cfg: &Config, key: &str) -> Option<String> {
    match cfg.value(key)? {
        Value::List(items) => Some(
            items
                .iter()
                .filter_map(Value::to_text)
                .collect::<Vec<_>>()
                .join(","),
        ),
        v => v.to_text(),
    }
}

fn get_action(cfg: &Config, key: &str, default: Action) -> Result<Action, ConfigError> {
    match cfg.get_str(key) {
        None => Ok(default),
        Some(v) => Action::from_name(&v).ok_or(ConfigError::InvalidAction {
            key: key.to_owned(),
            value: v,
        }),
    }
}

fn domain_type(cfg: &Config) -> Result<DomainType, ConfigError> {
    if let Some(t) = cfg.get_str("type") {
        return match t.as_str() {
            "pv" => Ok(DomainType::Pv),
            "pvh" => Ok(DomainType::Pvh),
            "hvm" => Ok(DomainType::Hvm),
            "process" => Ok(DomainType::Process),
            _ => Err(ConfigError::InvalidType(t)),
        };
    }
    if let Some(b) = cfg.get_str("builder") {
        return match b.as_str() {
            "hvm" => Ok(DomainType::Hvm),
            "generic" => Ok(DomainType::Pv),
            _ => Err(ConfigError::InvalidType(b)),
        };
    }
    if cfg.get("command").is_some() || cfg.get("pid").is_some() {
        Ok(DomainType::Process)
    } else {
        Ok(DomainType::Pv)
    }
}

impl DomainConfig {
    /// Reads a domain configuration; warnings go to `cfg`'s warning list.
    pub fn from_config(cfg: &Config) -> Result<DomainConfig, ConfigError> {
        cfg.warn_unknown(DOMAIN_KEYS);
        let name = match cfg.get_str("name") {
            Some(n) if !n.is_empty() => n,
            _ => return Err(ConfigError::MissingName),
        };
        let domain_type = domain_type(cfg)?;

        let vcpus = get_unsigned::<u32>(cfg, "vcpus")?.unwrap_or(1);
        if vcpus == 0 {
            return Err(invalid(cfg, "vcpus", "must be at least 1"));
        }
        let maxvcpus = get_unsigned::<u32>(cfg, "maxvcpus")?;
        if maxvcpus.is_some_and(|m| m < vcpus) {
            return Err(invalid(cfg, "maxvcpus", "maxvcpus < vcpus"));
        }

        let root = cfg.get_str("root");
        let extra = cfg.get_str("extra");
        let cmdline = match cfg.get_str("cmdline") {
            Some(c) => {
                if root.is_some() || extra.is_some() {
                    if let Some(set) = cfg.get("cmdline") {
                        cfg.warn(
                            set,
                            "ignoring root= and extra= in favour of cmdline=".to_owned(),
                        );
                    }
                }
                Some(c)
            }
            None => match (&root, &extra) {
                (Some(r), Some(e)) => Some(format!("root={r} {e}")),
                (Some(r), None) => Some(format!("root={r}")),
                (None, Some(e)) => Some(e.clone()),
                (None, None) => None,
            },
        };

        let mut disks = Vec::new();
        for item in cfg.get_list("disk").unwrap_or_default() {
            let Some(spec) = item.to_text() else { continue };
            let disk = DiskSpec::parse(&spec).map_err(|e| match e {
                ConfigError::Disk {
                    message,
                    near,
                    spec,
                    ..
                } => ConfigError::Disk {
                    file: Some(cfg.file().to_owned()),
                    message,
                    near,
                    spec,
                },
                other => other,
            })?;
            disks.push(disk);
        }

        let command = match cfg.value("command") {
            None => None,
            Some(Value::List(items)) => Some(Command::Argv(
                items.iter().filter_map(Value::to_text).collect(),
            )),
            Some(v) => v.to_text().map(Command::Line),
        };
        let pid = get_unsigned::<u32>(cfg, "pid")?;
        if pid == Some(0) {
            return Err(invalid(cfg, "pid", "must be a process id (> 0)"));
        }
        if domain_type == DomainType::Process && command.is_none() && pid.is_none() {
            return Err(invalid(
                cfg,
                "type",
                "a process domain needs `command' or `pid'",
            ));
        }

        Ok(DomainConfig {
            name,
            domain_type,
            memory_mb: get_unsigned(cfg, "memory")?,
            maxmem_mb: get_unsigned(cfg, "maxmem")?,
            vcpus,
            maxvcpus,
            cpus: get_cpu_list(cfg, "cpus"),
            cpus_soft: get_cpu_list(cfg, "cpus_soft"),
            pool: cfg.get_str("pool"),
            kernel: cfg.get_str("kernel"),
            ramdisk: cfg.get_str("ramdisk"),
            cmdline,
            root,
            extra,
            bootloader: cfg.get_str("bootloader"),
            on_poweroff: get_action(cfg, "on_poweroff", Action::Destroy)?,
            on_reboot: get_action(cfg, "on_reboot", Action::Restart)?,
            on_crash: get_action(cfg, "on_crash", Action::Destroy)?,
            on_watchdog: get_action(cfg, "on_watchdog", Action::Destroy)?,
            disks,
            vifs: cfg.get_string_list("vif").unwrap_or_default(),
            vnc: cfg.get_num("vnc").map(|v| v != 0),
            boot: cfg.get_str("boot"),
            gang_policy: cfg.get_str("gang_policy"),
            command,
            pid,
            vcpu_threads: cfg.get_str("vcpu_threads"),
        })
    }
}

/// A cpupool configuration (`xl cpupool-create`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpupoolConfig {
    /// `name`; without it, the config file's base name.
    pub name: String,
    /// `sched`, the scheduler name, kept as text.
    pub sched: Option<String>,
    /// `cpus`: a CPU-list string, or a list joined with `,`.
    pub cpus: Option<String>,
    /// `nodes`: likewise, NUMA nodes.
    pub nodes: Option<String>,
    /// `shared` (gang's own, a boolean): a gang pool whose CPUs stay in
    /// `Pool-0` too, the host keeping a slot of each.
    #[serde(default)]
    pub shared: bool,
}

impl CpupoolConfig {
    /// Reads a cpupool configuration; warnings go to `cfg`'s warning list.
    pub fn from_config(cfg: &Config) -> Result<CpupoolConfig, ConfigError> {
        cfg.warn_unknown(CPUPOOL_KEYS);
        let name = match cfg.get_str("name") {
            Some(n) if !n.is_empty() => n,
            _ => {
                let base = cfg.file().rsplit('/').next().unwrap_or_default();
                if cfg.file() == COMMAND_LINE || base.is_empty() {
                    return Err(ConfigError::MissingPoolName);
                }
                base.to_owned()
            }
        };
        Ok(CpupoolConfig {
            name,
            sched: cfg.get_str("sched"),
            cpus: get_cpu_list(cfg, "cpus"),
            nodes: get_cpu_list(cfg, "nodes"),
            shared: cfg.get_num("shared").is_some_and(|n| n != 0),
        })
    }
}
