//! The domain model read from a parsed [`Config`] (`xl create` files) and
//! the cpupool model (`xl cpupool-create` files).
//!
//! Type problems in single values are warnings (recorded on the [`Config`])
//! and the value is treated as absent, as in `xl`; missing or invalid
//! essentials (name, type, actions, disks, vifs, ranges, `device_model`) are
//! errors. Unknown keys are warned about (`unknown parameter X, ignored`) and
//! otherwise ignored.
//!
//! Keys that xl knows and gang cannot honour ([`UNSUPPORTED_DOMAIN_KEYS`]:
//! sound, USB, PCI passthrough, SPICE, Viridian, ...) are neither warned
//! away nor modelled: their names are recorded in
//! [`DomainConfig::unsupported`], in file order, so that the daemon refuses
//! the domain naming them. A key whose value asks for nothing (`0`, `""`,
//! `[]`, e.g. `usb = 0`) is not recorded.

use serde::{Deserialize, Serialize};

use crate::config::{Config, COMMAND_LINE};
use crate::disk::DiskSpec;
use crate::error::ConfigError;
use crate::value::Value;
use crate::vif::VifSpec;

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

/// `device_model`: which virtual machine monitor runs a `pvh` or `hvm`
/// domain. gang's own key (xl has only `device_model_override`/`_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceModel {
    /// QEMU (as Xen does for HVM guests).
    Qemu,
    /// gang's own KVM micro-VM (`gang-vmm`), PVH only.
    Gang,
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
    /// `vif`, each spec parsed (same order as [`DomainConfig::vifs`]; empty
    /// in configurations stored before it existed).
    #[serde(default)]
    pub vif_specs: Vec<VifSpec>,
    /// `vnc` (a boolean number).
    pub vnc: Option<bool>,
    /// `boot` (HVM boot order, e.g. `dc`).
    pub boot: Option<String>,
    /// `gang_policy`, kept as text (e.g. `tt,100ms,40ms`).
    pub gang_policy: Option<String>,
    /// `gang_group` (gang's own): the cluster gang this domain is a part
    /// of (e.g. `job-1234`): its time-triggered slot is the same on every
    /// host that runs a part of the group.
    #[serde(default)]
    pub gang_group: Option<String>,
    /// `command` (process domains).
    pub command: Option<Command>,
    /// `pid`: adopt this running process.
    pub pid: Option<u32>,
    /// `pids`: adopt these running processes as one domain (a job of
    /// several processes).
    #[serde(default)]
    pub pids: Vec<u32>,
    /// `children` (gang's own, a boolean): an adopted process's descendants,
    /// present and future, belong to the domain too (a spawned command's
    /// always do: they are born in its cgroup).
    #[serde(default)]
    pub children: bool,
    /// `cgroup` (gang's own): a freezer cgroup another launcher made (a
    /// batch system's job cgroup): the domain is whatever runs in it.
    #[serde(default)]
    pub cgroup: Option<String>,
    /// `user` (gang's own): the user a process domain's `command` runs as
    /// (a name or a number; default root, as the daemon). Its primary
    /// group and supplementary groups come with it.
    #[serde(default)]
    pub user: Option<String>,
    /// `group` (gang's own): the group the `command` runs as, instead of
    /// the user's primary group.
    #[serde(default)]
    pub group: Option<String>,
    /// `vcpu_threads`: pattern of the thread names that are the vCPUs.
    /// Without it a process domain is a gang of all of its program's
    /// threads, its `vcpus` the number of CPUs the gang gets.
    pub vcpu_threads: Option<String>,
    /// `device_model` (`qemu` or `gang`).
    #[serde(default)]
    pub device_model: Option<DeviceModel>,
    /// `device_model_override`: the device model binary's path.
    #[serde(default)]
    pub device_model_override: Option<String>,
    /// `device_model_version`, kept as text (`qemu-xen`, ...).
    #[serde(default)]
    pub device_model_version: Option<String>,
    /// `serial`: a string, or a list of them (one per serial port).
    #[serde(default)]
    pub serial: Vec<String>,
    /// `vnclisten`: the VNC server's address, optionally `:DISPLAY`.
    #[serde(default)]
    pub vnclisten: Option<String>,
    /// `vncpasswd`.
    #[serde(default)]
    pub vncpasswd: Option<String>,
    /// `vncdisplay`.
    #[serde(default)]
    pub vncdisplay: Option<u32>,
    /// `vncunused` (a boolean number, default 1): find an unused display
    /// from `vncdisplay` on.
    #[serde(default = "default_true")]
    pub vncunused: bool,
    /// `sdl` (a boolean number).
    #[serde(default)]
    pub sdl: Option<bool>,
    /// `stdvga` (a boolean number): the standard VGA rather than Cirrus.
    #[serde(default)]
    pub stdvga: Option<bool>,
    /// `vga` (`stdvga`, `cirrus`, `none`, `qxl`), kept as text; wins over
    /// `stdvga`.
    #[serde(default)]
    pub vga: Option<String>,
    /// `videoram`, MB.
    #[serde(default)]
    pub videoram: Option<u64>,
    /// `acpi` (a boolean number).
    #[serde(default)]
    pub acpi: Option<bool>,
    /// `apic` (a boolean number).
    #[serde(default)]
    pub apic: Option<bool>,
    /// `pae` (a boolean number).
    #[serde(default)]
    pub pae: Option<bool>,
    /// `hpet` (a boolean number).
    #[serde(default)]
    pub hpet: Option<bool>,
    /// `nestedhvm` (a boolean number).
    #[serde(default)]
    pub nestedhvm: Option<bool>,
    /// `localtime` (a boolean number): the RTC keeps local time, not UTC.
    #[serde(default)]
    pub localtime: Option<bool>,
    /// `keymap`, e.g. `en-us`.
    #[serde(default)]
    pub keymap: Option<String>,
    /// `nographic` (a boolean number).
    #[serde(default)]
    pub nographic: Option<bool>,
    /// Keys of [`UNSUPPORTED_DOMAIN_KEYS`] present in the file (and asking
    /// for something), in file order.
    #[serde(default)]
    pub unsupported: Vec<String>,
}

fn default_true() -> bool {
    true
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
    "gang_group",
    "command",
    "pid",
    "pids",
    "children",
    "cgroup",
    "user",
    "group",
    "vcpu_threads",
    "device_model",
    "device_model_override",
    "device_model_version",
    "serial",
    "vnclisten",
    "vncpasswd",
    "vncdisplay",
    "vncunused",
    "sdl",
    "stdvga",
    "vga",
    "videoram",
    "acpi",
    "apic",
    "pae",
    "hpet",
    "nestedhvm",
    "localtime",
    "keymap",
    "nographic",
];

/// xl keys that gang reads but cannot honour: present in a file (with a
/// value asking for something), they are recorded in
/// [`DomainConfig::unsupported`]. None is in [`DOMAIN_KEYS`] (the keys gang
/// honours).
pub const UNSUPPORTED_DOMAIN_KEYS: &[&str] = &[
    "soundhw",
    "usb",
    "usbdevice",
    "usbdev",
    "usbctrl",
    "pci",
    "rtc_timeoffset",
    "viridian",
    "on_soft_reset",
    "spice",
    "spicehost",
    "spiceport",
    "spicetls_port",
    "spicedisable_ticketing",
    "spicepasswd",
    "spiceagent_mouse",
    "spicevdagent",
    "spice_clipboard_sharing",
    "spiceusbredirection",
    "vfb",
    "vkb",
    "vtpm",
    "channel",
    "gfx_passthru",
];

/// Keys understood by [`CpupoolConfig::from_config`].
pub const CPUPOOL_KEYS: &[&str] = &[
    "name", "sched", "cpus", "nodes", "shared", "clock", "base", "cycle", "sync",
];

/// `vcpu_threads`: a shell pattern (`*`, `?`, `[...]`), checked here.
fn vcpu_threads(cfg: &Config) -> Result<Option<String>, ConfigError> {
    let Some(pattern) = cfg.get_str("vcpu_threads") else {
        return Ok(None);
    };
    glob::Pattern::new(&pattern).map_err(|e| {
        invalid(
            cfg,
            "vcpu_threads",
            &format!("not a thread-name pattern: {e}"),
        )
    })?;
    Ok(Some(pattern))
}

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

fn get_bool(cfg: &Config, key: &str) -> Option<bool> {
    cfg.get_num(key).map(|n| n != 0)
}

fn device_model(cfg: &Config) -> Result<Option<DeviceModel>, ConfigError> {
    match cfg.get_str("device_model") {
        None => Ok(None),
        Some(m) => match m.as_str() {
            "qemu" => Ok(Some(DeviceModel::Qemu)),
            "gang" => Ok(Some(DeviceModel::Gang)),
            _ => Err(invalid(
                cfg,
                "device_model",
                &format!("unknown device model \"{m}\" (want \"qemu\" or \"gang\")"),
            )),
        },
    }
}

/// A single value as a one-item list, a list's items as text.
fn get_str_or_list(cfg: &Config, key: &str) -> Vec<String> {
    match cfg.value(key) {
        None => Vec::new(),
        Some(Value::List(items)) => items.iter().filter_map(Value::to_text).collect(),
        Some(v) => v.to_text().into_iter().collect(),
    }
}

/// `vif`: each spec as text and parsed; a malformed one is an error at the
/// `vif` setting.
fn vifs(cfg: &Config) -> Result<(Vec<String>, Vec<VifSpec>), ConfigError> {
    let texts = cfg.get_string_list("vif").unwrap_or_default();
    let specs = texts
        .iter()
        .map(|t| VifSpec::parse(t).map_err(|e| invalid(cfg, "vif", &e.to_string())))
        .collect::<Result<_, _>>()?;
    Ok((texts, specs))
}

/// The keys of [`UNSUPPORTED_DOMAIN_KEYS`] set to something, in file order.
fn unsupported(cfg: &Config) -> Vec<String> {
    cfg.settings()
        .iter()
        .filter(|s| UNSUPPORTED_DOMAIN_KEYS.contains(&s.key.as_str()))
        .filter(|s| match &s.value {
            Value::Num(n) => *n != 0,
            Value::Str(t) => !t.is_empty() && t != "0",
            Value::List(items) => !items.is_empty(),
        })
        .map(|s| s.key.clone())
        .collect()
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
    if ["command", "pid", "pids", "cgroup"]
        .iter()
        .any(|k| cfg.get(k).is_some())
    {
        Ok(DomainType::Process)
    } else {
        Ok(DomainType::Pv)
    }
}

impl DomainConfig {
    /// Reads a domain configuration; warnings go to `cfg`'s warning list.
    pub fn from_config(cfg: &Config) -> Result<DomainConfig, ConfigError> {
        cfg.warn_unknown(&[DOMAIN_KEYS, UNSUPPORTED_DOMAIN_KEYS].concat());
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
        let mut pids = Vec::new();
        for item in cfg.get_list("pids").unwrap_or_default() {
            match item {
                Value::Num(n) if *n > 0 && u32::try_from(*n).is_ok() => pids.push(*n as u32),
                Value::Str(t) if t.trim().parse::<u32>().is_ok_and(|n| n > 0) => {
                    pids.push(t.trim().parse().unwrap_or_default());
                }
                other => {
                    return Err(invalid(
                        cfg,
                        "pids",
                        &format!("{other} is not a process id (> 0)"),
                    ))
                }
            }
        }
        if pid.is_some() && !pids.is_empty() {
            return Err(invalid(cfg, "pids", "give `pid' or `pids', not both"));
        }
        let sources = [
            command.is_some(),
            pid.is_some() || !pids.is_empty(),
            cfg.get("cgroup").is_some(),
        ];
        match sources.iter().filter(|&&b| b).count() {
            0 if domain_type == DomainType::Process => {
                return Err(invalid(
                    cfg,
                    "type",
                    "a process domain needs `command', `pid', `pids' or `cgroup'",
                ))
            }
            0 | 1 => {}
            _ => {
                return Err(invalid(
                    cfg,
                    "type",
                    "give one of `command', `pid'/`pids' and `cgroup'",
                ))
            }
        }

        let (user, group) = (cfg.get_str("user"), cfg.get_str("group"));
        for (key, value) in [("user", &user), ("group", &group)] {
            match value {
                None => {}
                Some(v) if v.is_empty() => return Err(invalid(cfg, key, "must name one")),
                Some(_) if domain_type != DomainType::Process => {
                    return Err(invalid(
                        cfg,
                        key,
                        "applies to a process domain's `command' only",
                    ))
                }
                Some(_) if command.is_none() => {
                    return Err(invalid(
                        cfg,
                        key,
                        "applies to a `command' gang starts: processes adopted by `pid', \
                         `pids' or `cgroup' keep their own users",
                    ))
                }
                Some(_) => {}
            }
        }

        // Read in the order of the fields, so that warnings come in it.
        let memory_mb = get_unsigned(cfg, "memory")?;
        let maxmem_mb = get_unsigned(cfg, "maxmem")?;
        let cpus = get_cpu_list(cfg, "cpus");
        let cpus_soft = get_cpu_list(cfg, "cpus_soft");
        let pool = cfg.get_str("pool");
        let kernel = cfg.get_str("kernel");
        let ramdisk = cfg.get_str("ramdisk");
        let bootloader = cfg.get_str("bootloader");
        let on_poweroff = get_action(cfg, "on_poweroff", Action::Destroy)?;
        let on_reboot = get_action(cfg, "on_reboot", Action::Restart)?;
        let on_crash = get_action(cfg, "on_crash", Action::Destroy)?;
        let on_watchdog = get_action(cfg, "on_watchdog", Action::Destroy)?;
        let (vifs, vif_specs) = vifs(cfg)?;

        Ok(DomainConfig {
            name,
            domain_type,
            memory_mb,
            maxmem_mb,
            vcpus,
            maxvcpus,
            cpus,
            cpus_soft,
            pool,
            kernel,
            ramdisk,
            cmdline,
            root,
            extra,
            bootloader,
            on_poweroff,
            on_reboot,
            on_crash,
            on_watchdog,
            disks,
            vifs,
            vif_specs,
            vnc: get_bool(cfg, "vnc"),
            boot: cfg.get_str("boot"),
            gang_policy: cfg.get_str("gang_policy"),
            gang_group: cfg.get_str("gang_group"),
            command,
            pid,
            pids,
            children: get_bool(cfg, "children").unwrap_or(false),
            cgroup: cfg.get_str("cgroup"),
            user,
            group,
            vcpu_threads: vcpu_threads(cfg)?,
            device_model: device_model(cfg)?,
            device_model_override: cfg.get_str("device_model_override"),
            device_model_version: cfg.get_str("device_model_version"),
            serial: get_str_or_list(cfg, "serial"),
            vnclisten: cfg.get_str("vnclisten"),
            vncpasswd: cfg.get_str("vncpasswd"),
            vncdisplay: get_unsigned(cfg, "vncdisplay")?,
            vncunused: get_bool(cfg, "vncunused").unwrap_or(true),
            sdl: get_bool(cfg, "sdl"),
            stdvga: get_bool(cfg, "stdvga"),
            vga: cfg.get_str("vga"),
            videoram: get_unsigned(cfg, "videoram")?,
            acpi: get_bool(cfg, "acpi"),
            apic: get_bool(cfg, "apic"),
            pae: get_bool(cfg, "pae"),
            hpet: get_bool(cfg, "hpet"),
            nestedhvm: get_bool(cfg, "nestedhvm"),
            localtime: get_bool(cfg, "localtime"),
            keymap: cfg.get_str("keymap"),
            nographic: get_bool(cfg, "nographic"),
            unsupported: unsupported(cfg),
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
    /// `clock` (gang's own): `tai` or `realtime`, a clock shared with other
    /// hosts that the pool's time is taken from (with `base`).
    #[serde(default)]
    pub clock: Option<String>,
    /// `base` (gang's own): the instant, RFC 3339 UTC, the pool's time
    /// counts from on `clock`.
    #[serde(default)]
    pub base: Option<String>,
    /// `cycle` (gang's own): how often the schedule of a pool on a shared
    /// clock repeats (a duration; every period must divide it).
    #[serde(default)]
    pub cycle: Option<String>,
    /// `sync` (gang's own): `required` to start the pool only while this
    /// host's clock is synchronised.
    #[serde(default)]
    pub sync: Option<String>,
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
            clock: cfg.get_str("clock"),
            base: cfg.get_str("base"),
            cycle: cfg.get_str("cycle"),
            sync: cfg.get_str("sync"),
        })
    }
}
