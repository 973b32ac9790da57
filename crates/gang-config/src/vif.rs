//! Network interface specifications (`vif = ['mac=...,bridge=br0', ...]`),
//! after xl-network-configuration(5).
//!
//! A spec is a comma-separated series of `KEY=VALUE` parameters, in any
//! order; every key is optional and an empty spec (or one of blanks) means
//! all defaults. Blanks around a parameter, its key and its value are
//! ignored, and so are empty parameters (`mac=..,,bridge=br0`). A key given
//! twice keeps its last value, as in `xl`. Keys xl knows but [`VifSpec`] has
//! no field for (`gatewaydev`, `devid`, `mtu`, ...) and keys nobody knows
//! are kept in [`VifSpec::other`], in spec order, for the consumer to honour
//! or refuse by name.
//!
//! Errors ([`VifError`]): a parameter without `=`, an empty key, a `mac` that
//! is not six colon-separated pairs of hex digits or is a multicast address,
//! a `type` other than `ioemu` or `vif`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `type=`: what the guest is given for the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VifKind {
    /// `ioemu`: an emulated NIC (and, under Xen, a PV one too).
    Ioemu,
    /// `vif`: under Xen, a PV NIC only.
    Vif,
}

/// One parsed `vif` specification.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VifSpec {
    /// `mac`, as given (validated: `aa:bb:cc:dd:ee:ff`, not multicast).
    pub mac: Option<String>,
    /// `model`, the emulated NIC (e.g. `e1000`), not validated here.
    pub model: Option<String>,
    /// `bridge`.
    pub bridge: Option<String>,
    /// `vifname`, the host-side interface name.
    pub vifname: Option<String>,
    /// `ip`, kept as text (xl allows several addresses separated by blanks).
    pub ip: Option<String>,
    /// `type`.
    pub kind: Option<VifKind>,
    /// `script`, the hotplug script.
    pub script: Option<String>,
    /// `rate`, e.g. `10Mb/s`, kept as text.
    pub rate: Option<String>,
    /// `backend`, the backend domain.
    pub backend: Option<String>,
    /// Every other `KEY=VALUE`, in spec order (a repeated key once, with its
    /// last value).
    pub other: Vec<(String, String)>,
}

/// A malformed vif specification. Displayed like a disk-spec error:
/// `config parsing error in vif specification: MESSAGE: near `PART' in `SPEC'`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct VifError {
    /// What is wrong.
    pub message: String,
    /// The parameter to blame.
    pub near: String,
    /// The whole spec.
    pub spec: String,
}

impl fmt::Display for VifError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "config parsing error in vif specification: {}: near `{}' in `{}'",
            self.message, self.near, self.spec
        )
    }
}

/// Checks `aa:bb:cc:dd:ee:ff` (hex digits of either case) and that the
/// address is unicast; returns what is wrong otherwise.
pub fn check_mac(mac: &str) -> Result<(), &'static str> {
    let groups: Vec<&str> = mac.split(':').collect();
    let well_formed = groups.len() == 6
        && groups
            .iter()
            .all(|g| g.len() == 2 && g.bytes().all(|b| b.is_ascii_hexdigit()));
    if !well_formed {
        return Err("invalid mac address (want six pairs of hex digits, aa:bb:cc:dd:ee:ff)");
    }
    let first = u8::from_str_radix(groups[0], 16).map_err(|_| "invalid mac address")?;
    if first & 1 != 0 {
        return Err("a multicast mac address (first byte odd) cannot be an interface's");
    }
    Ok(())
}

impl VifSpec {
    /// Parses one vif specification.
    pub fn parse(spec: &str) -> Result<VifSpec, VifError> {
        let err = |message: &str, near: &str| VifError {
            message: message.to_owned(),
            near: near.to_owned(),
            spec: spec.to_owned(),
        };
        let mut v = VifSpec::default();
        for param in spec.split(',') {
            let param = param.trim();
            if param.is_empty() {
                continue;
            }
            let Some((key, value)) = param.split_once('=') else {
                return Err(err("parameter without a value (want KEY=VALUE)", param));
            };
            let (key, value) = (key.trim(), value.trim());
            let text = Some(value.to_owned());
            match key {
                "" => return Err(err("parameter without a key", param)),
                "mac" => {
                    check_mac(value).map_err(|m| err(m, param))?;
                    v.mac = text;
                }
                "model" => v.model = text,
                "bridge" => v.bridge = text,
                "vifname" => v.vifname = text,
                "ip" => v.ip = text,
                "script" => v.script = text,
                "rate" => v.rate = text,
                "backend" => v.backend = text,
                "type" => {
                    v.kind = Some(match value {
                        "ioemu" => VifKind::Ioemu,
                        "vif" => VifKind::Vif,
                        _ => return Err(err("unknown value for type (ioemu or vif)", param)),
                    });
                }
                _ => {
                    v.other.retain(|(k, _)| k != key);
                    v.other.push((key.to_owned(), value.to_owned()));
                }
            }
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(check_mac("00:16:3E:74:3d:76"), Ok(()));
        assert_eq!(check_mac("02:00:00:00:00:01"), Ok(()));
        for bad in [
            "",
            "00:16:3e:74:3d",
            "00:16:3e:74:3d:7",
            "00:16:3e:74:3d:76:00",
            "0g:16:3e:74:3d:76",
            "00-16-3e-74-3d-76",
            "+0:16:3e:74:3d:76",
        ] {
            assert!(check_mac(bad).is_err(), "{bad}");
        }
        assert!(check_mac("01:00:5e:00:00:01")
            .unwrap_err()
            .contains("multicast"));
    }
}
