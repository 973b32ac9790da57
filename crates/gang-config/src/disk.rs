//! Disk specifications (`disk = ['phy:/dev/vg/lv,xvda,w', ...]`), after
//! xl-disk-configuration(5).
//!
//! A spec is a comma-separated series of parameters. `key=value` parameters
//! are named (`format=`, `vdev=`, `access=`, `devtype=`, and `target=`, which
//! must come last and takes the rest of the spec literally, commas included). The flag
//! `cdrom` means `devtype=cdrom`. Anything else fills the next unset
//! positional parameter among `target, format, vdev, access`; an empty one
//! means "default". A deprecated prefix on the target (`phy:`, `file:`,
//! `aio:`, `tap:`, `tap2:`, `tapdisk:`, `ioemu:`; `raw:`, `qcow:`, `qcow2:`,
//! `vhd:`, which also set the format) is stripped, and then the format is no
//! longer positional (`phy:/dev/vg/lv,xvda,w` is target, vdev, access).
//! A vdev `hdc:cdrom` means vdev `hdc` with devtype cdrom.
//!
//! Invariants of a parsed [`DiskSpec`]: `vdev` is not empty; an empty target
//! has format [`DiskFormat::Empty`]; a CD-ROM without an explicit access is
//! read-only.

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// A disk image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// Raw image or block device (the default).
    Raw,
    /// QEMU copy-on-write v1.
    Qcow,
    /// QEMU copy-on-write v2.
    Qcow2,
    /// Virtual hard disk.
    Vhd,
    /// QEMU enhanced disk.
    Qed,
    /// No medium (an empty CD-ROM drive).
    Empty,
}

impl DiskFormat {
    fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "" | "raw" => DiskFormat::Raw,
            "qcow" => DiskFormat::Qcow,
            "qcow2" => DiskFormat::Qcow2,
            "vhd" => DiskFormat::Vhd,
            "qed" => DiskFormat::Qed,
            "empty" => DiskFormat::Empty,
            _ => return None,
        })
    }
}

/// Read-only or read-write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskAccess {
    /// `w` or `rw` (the default for disks).
    ReadWrite,
    /// `r` or `ro` (the default for CD-ROMs).
    ReadOnly,
}

/// What the guest sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskDevtype {
    /// A disk (the default).
    Disk,
    /// A CD-ROM drive.
    Cdrom,
}

/// One parsed disk specification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    /// Backing file or device, deprecated prefix stripped; empty for no medium.
    pub target: String,
    /// Image format.
    pub format: DiskFormat,
    /// Virtual device name in the guest, e.g. `xvda`, `hdc`.
    pub vdev: String,
    /// Access mode.
    pub access: DiskAccess,
    /// Disk or CD-ROM.
    pub devtype: DiskDevtype,
}

const PLAIN_PREFIXES: &[&str] = &["phy", "file", "aio", "tap", "tap2", "tapdisk", "ioemu"];

#[derive(Default)]
struct State<'s> {
    spec: &'s str,
    target: Option<String>,
    format: Option<DiskFormat>,
    vdev: Option<String>,
    access: Option<DiskAccess>,
    cdrom: bool,
    had_prefix: bool,
}

impl State<'_> {
    fn err(&self, message: &str, near: Option<&str>) -> ConfigError {
        ConfigError::Disk {
            file: None,
            message: message.to_owned(),
            near: near.map(str::to_owned),
            spec: self.spec.to_owned(),
        }
    }

    /// `savestring`: a non-empty value may be given only once.
    fn save(&self, slot: &Option<String>, what: &str, value: &str) -> Result<String, ConfigError> {
        if slot.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(self.err(&format!("{what} respecified"), Some(value)));
        }
        Ok(value.to_owned())
    }

    fn set_target(&mut self, raw: &str) -> Result<(), ConfigError> {
        let mut t = raw;
        // Strip deprecated prefixes, possibly several (`tap:aio:/img`).
        while let Some((prefix, rest)) = t.split_once(':') {
            let is_word = prefix
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase())
                && prefix
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
            if !is_word {
                break;
            }
            if PLAIN_PREFIXES.contains(&prefix) {
                self.had_prefix = true;
            } else if let Some(f) = DiskFormat::from_name(prefix).filter(|_| prefix != "empty") {
                self.had_prefix = true;
                self.format = Some(f);
            } else if rest.starts_with('/') {
                return Err(self.err("unknown deprecated disk prefix", Some(t)));
            } else {
                break;
            }
            t = rest;
        }
        self.target = Some(self.save(&self.target, "target", t)?);
        Ok(())
    }

    fn set_format(&mut self, v: &str) -> Result<(), ConfigError> {
        let f = DiskFormat::from_name(v)
            .ok_or_else(|| self.err("unknown value for format", Some(v)))?;
        self.format = Some(f);
        Ok(())
    }

    fn set_access(&mut self, v: &str) -> Result<(), ConfigError> {
        self.access = match v {
            "" => self.access,
            "w" | "rw" => Some(DiskAccess::ReadWrite),
            "r" | "ro" => Some(DiskAccess::ReadOnly),
            _ => return Err(self.err("unknown value for access", Some(v))),
        };
        Ok(())
    }

    /// `vdev[:cdrom]`; returns false if `v` has no colon.
    fn vdev_and_devtype(&mut self, v: &str) -> Result<bool, ConfigError> {
        let Some((vdev, devtype)) = v.rsplit_once(':') else {
            return Ok(false);
        };
        if devtype != "cdrom" {
            return Err(self.err("unknown deprecated type", Some(devtype)));
        }
        self.vdev = Some(self.save(&self.vdev, "vdev", vdev)?);
        self.cdrom = true;
        Ok(true)
    }
}

impl DiskSpec {
    /// Parses one disk specification. Errors are [`ConfigError::Disk`]
    /// without a file name (the domain parser adds it).
    pub fn parse(spec: &str) -> Result<DiskSpec, ConfigError> {
        let mut st = State {
            spec,
            ..State::default()
        };
        let mut access_pos_used = false;
        let mut rest = spec;
        loop {
            let trimmed = rest.trim_start();
            if let Some(t) = trimmed.strip_prefix("target=") {
                // Named: taken literally, no deprecated prefix is stripped.
                st.target = Some(st.save(&st.target, "target", t)?);
                break;
            }
            let (param, next) = match trimmed.split_once(',') {
                Some((p, n)) => (p.trim_end(), Some(n)),
                None => (trimmed.trim_end(), None),
            };
            if let Some((key, value)) = param.split_once('=') {
                match key {
                    "format" => st.set_format(value)?,
                    "vdev" => st.vdev = Some(st.save(&st.vdev, "vdev", value)?),
                    "access" => st.set_access(value)?,
                    "devtype" if value == "cdrom" => st.cdrom = true,
                    "devtype" => return Err(st.err("unknown value for type", Some(param))),
                    _ => return Err(st.err("unknown parameter", Some(param))),
                }
            } else if param == "cdrom" {
                st.cdrom = true;
            } else if next.is_none() && param.is_empty() && st.target.is_some() {
                // A trailing comma (or an empty spec after the target).
            } else if st.target.is_none() {
                st.set_target(param)?;
            } else if !st.had_prefix && st.format.is_none() {
                let empty_target = st.target.as_deref() == Some("");
                if !(empty_target && st.vdev_and_devtype(param)?) {
                    st.set_format(param)?;
                } else {
                    st.format = Some(DiskFormat::Empty);
                }
            } else if st.vdev.is_none() {
                if !st.vdev_and_devtype(param)? {
                    st.vdev = Some(param.to_owned());
                }
            } else if !access_pos_used {
                access_pos_used = true;
                st.set_access(param)?;
            } else {
                return Err(st.err("too many positional parameters", Some(param)));
            }
            match next {
                Some(n) => rest = n,
                None => break,
            }
        }
        let vdev = match st.vdev.take() {
            Some(v) if !v.is_empty() => v,
            _ => return Err(st.err("no vdev specified", None)),
        };
        let target = st.target.take().unwrap_or_default();
        let format = if target.is_empty() {
            DiskFormat::Empty
        } else {
            st.format.unwrap_or(DiskFormat::Raw)
        };
        let devtype = if st.cdrom {
            DiskDevtype::Cdrom
        } else {
            DiskDevtype::Disk
        };
        let access = st.access.unwrap_or(match devtype {
            DiskDevtype::Cdrom => DiskAccess::ReadOnly,
            DiskDevtype::Disk => DiskAccess::ReadWrite,
        });
        Ok(DiskSpec {
            target,
            format,
            vdev,
            access,
            devtype,
        })
    }
}
