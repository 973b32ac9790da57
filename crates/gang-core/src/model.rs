//! The model: pools, domains, vCPUs and gang policies.
//!
//! These are plain values, validated by [`crate::admission`] and owned by the
//! [`crate::engine::Scheduler`]. Nothing here knows about threads or time
//! sources; a `from` time is an absolute time since the pool's epoch.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cpuset::{CpuId, CpuSet};
use crate::time::{Duration, Nanos, MS};

/// A domain's identifier, unique within a scheduler (the toolstack's domid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DomainId(pub u32);

/// Domain ids as a message lists them: `1, 2, 5`.
pub fn id_list(ids: &[DomainId]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A message of the core (which knows domains by id only) with every
/// `domain N` and `domains N, M` naming the domains as `name_of` does,
/// quoted: `domain 'web'`, `domains 'a', 'b'`. Ids `name_of` does not know
/// stay numbers. For front ends (the daemon, the simulator) whose users
/// named their domains.
pub fn with_domain_names(message: &str, name_of: impl Fn(DomainId) -> Option<String>) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("domain") {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        // Only the whole words `domain ` / `domains `.
        let word_start = out.chars().last().is_none_or(|c| !c.is_alphanumeric());
        let word = if from.starts_with("domains ") {
            "domains "
        } else if from.starts_with("domain ") {
            "domain "
        } else {
            ""
        };
        if word.is_empty() || !word_start {
            out.push_str("domain");
            rest = &from["domain".len()..];
            continue;
        }
        out.push_str(word);
        rest = &from[word.len()..];
        // One id, or a list `1, 2, 3` after `domains`.
        loop {
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            if digits == 0 {
                break;
            }
            let id: u32 = rest[..digits].parse().unwrap_or(u32::MAX);
            match name_of(DomainId(id)) {
                Some(name) => {
                    out.push('\'');
                    out.push_str(&name);
                    out.push('\'');
                }
                None => out.push_str(&rest[..digits]),
            }
            rest = &rest[digits..];
            if word == "domains "
                && rest.starts_with(", ")
                && rest[2..].starts_with(|c: char| c.is_ascii_digit())
            {
                out.push_str(", ");
                rest = &rest[2..];
            } else {
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

impl fmt::Display for DomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One vCPU of one domain: vCPU `vcpu` of domain `domain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VcpuRef {
    /// The domain.
    pub domain: DomainId,
    /// The vCPU index within the domain (0-based).
    pub vcpu: u32,
}

/// Timing of a periodic reservation: activated at `from + k·period`,
/// `active` of every period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Periodic {
    /// First activation (absolute, since the pool epoch).
    pub from: Nanos,
    /// Period length.
    pub period: Nanos,
    /// Time the domain receives in every period.
    pub active: Nanos,
}

/// Default best-effort weight (as Xen credit's default).
pub const DEFAULT_WEIGHT: u16 = 256;

/// A domain's gang policy. Precedence: no-mux > TT > ET > BE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "kebab-case")]
pub enum Policy {
    /// Owns its CPUs from `from` on; must be alone on them.
    NoMux {
        /// When ownership starts.
        from: Nanos,
    },
    /// Time-triggered: strictly periodic, `active` in every period, in slots
    /// fixed by the cohort's table.
    TimeTriggered {
        /// The reservation.
        timing: Periodic,
        /// May also run in holes, beyond its reservation.
        space_filling: bool,
        /// Its slot is exactly `[from + k·period, from + k·period + active)`,
        /// not anywhere in its window: what a cluster gang needs, whose
        /// parts on other hosts must run at the same instants whatever else
        /// each host's table holds (refused where that slot is not free).
        /// Written only when set: a policy stored or sent before exact
        /// slots existed reads the same.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        exact: bool,
    },
    /// Event-triggered: dispatched as soon as it becomes runnable while it has
    /// budget left in its current period, ahead of best-effort; its table
    /// reservation guarantees `active` per period when it stays runnable.
    EventTriggered {
        /// The reservation and budget.
        timing: Periodic,
        /// May also run in holes once its budget is spent.
        space_filling: bool,
    },
    /// Best-effort: shares what the reserved classes leave, in proportion to
    /// `weight` (CPU time), with the pool's BE reservation as a floor.
    BestEffort {
        /// 1..=65535.
        weight: u16,
        /// May also run in holes of reserved slots.
        space_filling: bool,
    },
}

impl Default for Policy {
    fn default() -> Self {
        Policy::BestEffort {
            weight: DEFAULT_WEIGHT,
            space_filling: false,
        }
    }
}

/// The four classes, in precedence order (lower value = higher precedence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Class {
    /// no-mux
    NoMux,
    /// time-triggered
    TimeTriggered,
    /// event-triggered
    EventTriggered,
    /// best-effort
    BestEffort,
}

impl Policy {
    /// The policy's class.
    pub fn class(&self) -> Class {
        match self {
            Policy::NoMux { .. } => Class::NoMux,
            Policy::TimeTriggered { .. } => Class::TimeTriggered,
            Policy::EventTriggered { .. } => Class::EventTriggered,
            Policy::BestEffort { .. } => Class::BestEffort,
        }
    }

    /// The periodic reservation of TT and ET domains.
    pub fn timing(&self) -> Option<Periodic> {
        match *self {
            Policy::TimeTriggered { timing, .. } | Policy::EventTriggered { timing, .. } => {
                Some(timing)
            }
            _ => None,
        }
    }

    /// Whether the domain may fill holes.
    pub fn space_filling(&self) -> bool {
        match *self {
            Policy::NoMux { .. } => false,
            Policy::TimeTriggered { space_filling, .. }
            | Policy::EventTriggered { space_filling, .. }
            | Policy::BestEffort { space_filling, .. } => space_filling,
        }
    }

    /// The policy of a part of cluster gang `group`: this time-triggered
    /// policy made exact, at its own phase (`@FROM`) if it has one, else at
    /// a phase derived from the group's name alone (FNV-1a, whole grains,
    /// the slot within the period), so that every host computes the same
    /// slot from the same inputs with no coordinator. Refused for other
    /// classes.
    pub fn for_cluster_gang(self, group: &str, grain: Nanos) -> Result<Policy, String> {
        let Policy::TimeTriggered {
            mut timing,
            space_filling,
            ..
        } = self
        else {
            return Err(format!(
                "a cluster gang (gang_group = \"{group}\") needs a time-triggered policy \
                 (tt,PERIOD,ACTIVE), not {self}"
            ));
        };
        if timing.from == 0 {
            let grain = grain.max(1);
            let slots = (timing.period.saturating_sub(timing.active)) / grain + 1;
            let hash = group.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            });
            timing.from = (hash % slots) * grain;
        }
        Ok(Policy::TimeTriggered {
            timing,
            space_filling,
            exact: true,
        })
    }

    /// A time-triggered policy whose slot is at its phase exactly.
    pub fn exact(&self) -> bool {
        matches!(self, Policy::TimeTriggered { exact: true, .. })
    }

    /// When the policy starts to apply (0 for best-effort).
    pub fn from(&self) -> Nanos {
        match *self {
            Policy::NoMux { from } => from,
            Policy::TimeTriggered { timing, .. } | Policy::EventTriggered { timing, .. } => {
                timing.from
            }
            Policy::BestEffort { .. } => 0,
        }
    }
}

impl fmt::Display for Policy {
    /// The `sched-gang -t` syntax: `no`, `tt,150ms,15ms[,exact][,sf]`,
    /// `et,…`, `be,256[,sf]`. `from` is printed only when not zero
    /// (`@from`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exact = matches!(self, Policy::TimeTriggered { exact: true, .. });
        let sf = match (exact, self.space_filling()) {
            (false, false) => "",
            (false, true) => ",sf",
            (true, false) => ",exact",
            (true, true) => ",exact,sf",
        };
        match *self {
            Policy::NoMux { from } => {
                f.write_str("no")?;
                if from != 0 {
                    write!(f, "@{}", Duration(from))?;
                }
                Ok(())
            }
            Policy::TimeTriggered { timing, .. } | Policy::EventTriggered { timing, .. } => {
                let tag = if self.class() == Class::TimeTriggered {
                    "tt"
                } else {
                    "et"
                };
                write!(
                    f,
                    "{tag},{},{}{sf}",
                    Duration(timing.period),
                    Duration(timing.active)
                )?;
                if timing.from != 0 {
                    write!(f, "@{}", Duration(timing.from))?;
                }
                Ok(())
            }
            Policy::BestEffort { weight, .. } => write!(f, "be,{weight}{sf}"),
        }
    }
}

/// Why a policy string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyParseError {
    /// The first field is not a known policy.
    #[error("unknown policy `{0}` (expected no, tt,PERIOD,ACTIVE[,sf], et,PERIOD,ACTIVE[,sf] or be,WEIGHT[,sf])")]
    UnknownPolicy(String),
    /// Wrong number of fields.
    #[error("policy `{input}`: {expected}")]
    WrongFields {
        /// The input.
        input: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A time field is malformed.
    #[error("policy `{input}`: {field}: {source}")]
    BadTime {
        /// The input.
        input: String,
        /// Which field.
        field: &'static str,
        /// Why.
        source: crate::time::ParseDurationError,
    },
    /// The weight is not 1..=65535.
    #[error("policy `{0}`: weight must be a whole number from 1 to 65535")]
    BadWeight(String),
    /// A trailing flag other than `sf`.
    #[error("policy `{input}`: unknown flag `{flag}` (only `sf`, space filling, is known)")]
    BadFlag {
        /// The input.
        input: String,
        /// The flag.
        flag: String,
    },
}

impl std::str::FromStr for Policy {
    type Err = PolicyParseError;

    /// Parses the seed tool's syntax, with units (a bare number is ms) and an
    /// optional `@FROM` suffix on the whole string: `tt,150,15,sf@2s`.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (body, from) = match input.rsplit_once('@') {
            Some((b, f)) => (b, Some(f)),
            None => (input, None),
        };
        let from = match from {
            Some(f) => {
                crate::time::parse_duration(f, MS).map_err(|source| PolicyParseError::BadTime {
                    input: input.to_string(),
                    field: "from",
                    source,
                })?
            }
            None => 0,
        };
        let fields: Vec<&str> = body.split(',').map(str::trim).collect();
        let bad_flag = |flag: &str| PolicyParseError::BadFlag {
            input: input.to_string(),
            flag: flag.to_string(),
        };
        let flag = |rest: &[&str]| -> Result<bool, PolicyParseError> {
            match rest {
                [] => Ok(false),
                ["sf"] => Ok(true),
                [other, ..] => Err(bad_flag(other)),
            }
        };
        // tt takes `exact` too, before `sf`.
        let tt_flags = |rest: &[&str]| -> Result<(bool, bool), PolicyParseError> {
            match rest {
                ["exact", more @ ..] => Ok((true, flag(more)?)),
                more => Ok((false, flag(more)?)),
            }
        };
        let time = |text: &str, field: &'static str| {
            crate::time::parse_duration(text, MS).map_err(|source| PolicyParseError::BadTime {
                input: input.to_string(),
                field,
                source,
            })
        };
        match fields[0] {
            "no" | "nomux" | "no-mux" => {
                if fields.len() != 1 {
                    return Err(PolicyParseError::WrongFields {
                        input: input.to_string(),
                        expected: "no-mux takes no fields (`no`, optionally `no@FROM`)",
                    });
                }
                Ok(Policy::NoMux { from })
            }
            tag @ ("tt" | "et") => {
                if !(3..=5).contains(&fields.len()) {
                    return Err(PolicyParseError::WrongFields {
                        input: input.to_string(),
                        expected: "expected tt,PERIOD,ACTIVE[,exact][,sf] or et,PERIOD,ACTIVE[,sf]",
                    });
                }
                let timing = Periodic {
                    from,
                    period: time(fields[1], "period")?,
                    active: time(fields[2], "active")?,
                };
                Ok(if tag == "tt" {
                    let (exact, space_filling) = tt_flags(&fields[3..])?;
                    Policy::TimeTriggered {
                        timing,
                        space_filling,
                        exact,
                    }
                } else {
                    Policy::EventTriggered {
                        timing,
                        space_filling: flag(&fields[3..])?,
                    }
                })
            }
            "be" => {
                if !(2..=3).contains(&fields.len()) || from != 0 {
                    return Err(PolicyParseError::WrongFields {
                        input: input.to_string(),
                        expected: "expected be,WEIGHT[,sf]",
                    });
                }
                let weight: u16 = fields[1]
                    .parse()
                    .ok()
                    .filter(|&w| w > 0)
                    .ok_or_else(|| PolicyParseError::BadWeight(input.to_string()))?;
                Ok(Policy::BestEffort {
                    weight,
                    space_filling: flag(&fields[2..])?,
                })
            }
            other => Err(PolicyParseError::UnknownPolicy(other.to_string())),
        }
    }
}

/// A pool's scheduling configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolConfig {
    /// The pool's CPUs.
    pub cpus: CpuSet,
    /// Every boundary is a multiple of the grain since the epoch.
    pub grain: Nanos,
    /// Percentage of every CPU kept for best-effort domains (admission caps
    /// TT + ET utilisation at `100 - be_reserve_pct` per CPU).
    pub be_reserve_pct: u8,
    /// Length of a best-effort time slice (a multiple of the grain). BE
    /// slices are aligned on a grid of this length, so all BE gangs of a
    /// cohort switch together.
    pub be_slice: Nanos,
    /// Longest table (in grains) admission may build; longer hyperperiods are
    /// refused.
    pub max_table_grains: u64,
    /// A domain whose reservations are *lent*: while it is not runnable
    /// (all its vCPUs blocked, or paused), its reserved CPUs are free for
    /// best-effort gangs instead of holes that only space fillers may use,
    /// and it takes them back at the next boundary after it wakes. Meant for
    /// the host's own slot (Domain-0 on a pool's CPUs), so that an idle host
    /// gives its time to the gangs; `gang-host` does not lend yet (see
    /// ARCHITECTURE.md: it needs a better signal of the host's demand).
    /// Admission still counts the whole reservation, so the owner always
    /// gets it back.
    #[serde(default)]
    pub lending: Option<DomainId>,
}

impl PoolConfig {
    /// The defaults: 1 ms grain, 10% BE reservation, 10 ms BE slice, tables
    /// of at most 2^20 grains.
    pub fn new(cpus: CpuSet) -> Self {
        PoolConfig {
            cpus,
            grain: MS,
            be_reserve_pct: 10,
            be_slice: 10 * MS,
            max_table_grains: 1 << 20,
            lending: None,
        }
    }
}

/// What a domain asks of the scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainSpec {
    /// Identifier.
    pub id: DomainId,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// vCPU `i` runs only on `cpu_map[i]`; `None`: the scheduler chooses.
    pub cpu_map: Option<Vec<CpuId>>,
    /// The gang policy.
    pub policy: Policy,
}

/// The run state a domain carries with it when it enters a scheduler (at
/// creation or on migration): paused or not, and which vCPUs are runnable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    /// Paused by the toolstack.
    pub paused: bool,
    /// Per vCPU: runnable (true) or blocked (false).
    pub runnable: Vec<bool>,
}

impl RunState {
    /// All vCPUs runnable, paused or not.
    pub fn all_runnable(vcpus: u32, paused: bool) -> Self {
        RunState {
            paused,
            runnable: vec![true; vcpus as usize],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_seed_syntax() {
        let tt: Policy = "tt,150,15".parse().unwrap();
        assert_eq!(
            tt,
            Policy::TimeTriggered {
                timing: Periodic {
                    from: 0,
                    period: 150 * MS,
                    active: 15 * MS
                },
                space_filling: false,
                exact: false,
            }
        );
        assert_eq!(tt.to_string(), "tt,150ms,15ms");
        let exact: Policy = "tt,100ms,20ms,exact,sf@10ms".parse().unwrap();
        assert!(exact.exact() && exact.space_filling());
        assert_eq!(exact.to_string(), "tt,100ms,20ms,exact,sf@10ms");
        assert_eq!(
            "tt,100ms,20ms,exact".parse::<Policy>().unwrap().to_string(),
            "tt,100ms,20ms,exact"
        );
        assert!("et,100ms,20ms,exact".parse::<Policy>().is_err(), "tt only");
        assert!(
            "tt,100ms,20ms,sf,exact".parse::<Policy>().is_err(),
            "exact first"
        );
        let et: Policy = "et,100ms,10ms,sf@1s".parse().unwrap();
        assert_eq!(et.to_string(), "et,100ms,10ms,sf@1s");
        assert_eq!("be,7,sf".parse::<Policy>().unwrap().to_string(), "be,7,sf");
        assert_eq!("no".parse::<Policy>().unwrap(), Policy::NoMux { from: 0 });
    }

    #[test]
    fn refuses_bad_policies() {
        assert!(matches!(
            "rr,1".parse::<Policy>(),
            Err(PolicyParseError::UnknownPolicy(_))
        ));
        assert!(matches!(
            "tt,1".parse::<Policy>(),
            Err(PolicyParseError::WrongFields { .. })
        ));
        assert!(matches!(
            "tt,x,1".parse::<Policy>(),
            Err(PolicyParseError::BadTime {
                field: "period",
                ..
            })
        ));
        assert!(matches!(
            "be,0".parse::<Policy>(),
            Err(PolicyParseError::BadWeight(_))
        ));
        assert!(matches!(
            "be,70000".parse::<Policy>(),
            Err(PolicyParseError::BadWeight(_))
        ));
        assert!(matches!(
            "be,5,xx".parse::<Policy>(),
            Err(PolicyParseError::BadFlag { .. })
        ));
        assert!(matches!(
            "no,5".parse::<Policy>(),
            Err(PolicyParseError::WrongFields { .. })
        ));
    }
}

#[cfg(test)]
mod naming_tests {
    use super::*;

    fn names(id: DomainId) -> Option<String> {
        match id.0 {
            1 => Some("web".into()),
            2 => Some("db".into()),
            _ => None,
        }
    }

    #[test]
    fn messages_name_domains_as_their_users_did() {
        assert_eq!(
            with_domain_names("domain 1 cannot get 4ms: CPU 0 is held by domain 2", names),
            "domain 'web' cannot get 4ms: CPU 0 is held by domain 'db'"
        );
        assert_eq!(
            with_domain_names("reserved by TT/ET domains 1, 2, 7; at most 95%", names),
            "reserved by TT/ET domains 'web', 'db', 7; at most 95%"
        );
        // Not the word, or no id after it: left alone.
        assert_eq!(
            with_domain_names("subdomain 1, domains are many, domain x", names),
            "subdomain 1, domains are many, domain x"
        );
        assert_eq!(
            with_domain_names("no domain at all", names),
            "no domain at all"
        );
        let refusal = crate::AdmissionError::NoMuxNotAlone {
            domain: DomainId(1),
            other: DomainId(2),
            cpu: 1,
        };
        assert_eq!(
            with_domain_names(&refusal.to_string(), names),
            "no-mux domain 'web' must be alone on its CPUs, but domain 'db' also uses CPU 1"
        );
    }
}
