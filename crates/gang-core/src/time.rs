//! Time in the core: unsigned nanoseconds since the pool's epoch.
//!
//! The core never reads a clock. Every entry point takes `now` from its driver
//! (the simulator's virtual clock or the host runtime's `CLOCK_MONOTONIC`
//! minus the pool epoch). This module also parses and prints durations with
//! units (`150ms`, `40us`, `1.5s`), which the scenario files and the CLI share.

use std::fmt;

/// Nanoseconds. Absolute times are measured from the pool's epoch.
pub type Nanos = u64;

/// One microsecond in [`Nanos`].
pub const US: Nanos = 1_000;
/// One millisecond in [`Nanos`].
pub const MS: Nanos = 1_000_000;
/// One second in [`Nanos`].
pub const SEC: Nanos = 1_000_000_000;

/// A wall clock that hosts share (a pool's time can be one, see
/// [`SharedTime`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WallClock {
    /// CLOCK_TAI: no leap seconds; what PTP distributes.
    Tai,
    /// CLOCK_REALTIME (UTC).
    Realtime,
}

impl WallClock {
    /// Its name in configs and output.
    pub fn as_str(self) -> &'static str {
        match self {
            WallClock::Tai => "tai",
            WallClock::Realtime => "realtime",
        }
    }
}

impl fmt::Display for WallClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A name that is not a shared clock's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown clock '{0}' (expected tai or realtime)")]
pub struct UnknownClock(pub String);

impl std::str::FromStr for WallClock {
    type Err = UnknownClock;
    fn from_str(s: &str) -> Result<Self, UnknownClock> {
        match s {
            "tai" => Ok(WallClock::Tai),
            "realtime" => Ok(WallClock::Realtime),
            other => Err(UnknownClock(other.to_string())),
        }
    }
}

/// A pool's time taken from a wall clock shared with other hosts: the
/// clock, the base instant (nanoseconds since 1970 on that clock) the
/// pool's time counts from, and the cycle its schedule repeats in (as
/// `taprio`'s cycle time): every period of the pool divides the cycle, so
/// a host may start its pool at any cycle boundary after the base and still
/// run the same slot at the same instant as the others, within their
/// clocks' error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SharedTime {
    /// The clock.
    pub clock: WallClock,
    /// The base, ns since 1970 on `clock`.
    pub base_ns: i64,
    /// The cycle, ns (default one second).
    #[serde(default = "default_cycle")]
    pub cycle_ns: Nanos,
    /// The pool starts only while this host's clock is synchronised
    /// (`sync="required"`); a running pool that loses it keeps running on
    /// its own clock and says so.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_sync: bool,
}

fn default_cycle() -> Nanos {
    SEC
}

/// Why a shared-time setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SharedTimeError {
    /// Not `tai` or `realtime`.
    #[error(transparent)]
    UnknownClock(#[from] UnknownClock),
    /// Not an RFC 3339 UTC time from 1970 to 2262.
    #[error("base '{text}' is not an RFC 3339 UTC time such as 2026-12-01T00:00:00Z: {reason}")]
    BadBase {
        /// What was given.
        text: String,
        /// Why it was refused.
        reason: String,
    },
}

impl SharedTime {
    /// Parses a setting: `clock` (`tai`, `realtime`) and `base` (RFC 3339
    /// UTC, read in that clock's own count of seconds since 1970).
    pub fn parse(clock: &str, base: &str) -> Result<SharedTime, SharedTimeError> {
        let clock: WallClock = clock.parse()?;
        let bad = |reason: String| SharedTimeError::BadBase {
            text: base.to_string(),
            reason,
        };
        let at = humantime::parse_rfc3339(base).map_err(|e| bad(e.to_string()))?;
        let since_1970 = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| bad("before 1970".into()))?;
        let base_ns = i64::try_from(since_1970.as_nanos()).map_err(|_| bad("after 2262".into()))?;
        Ok(SharedTime {
            clock,
            base_ns,
            cycle_ns: SEC,
            require_sync: false,
        })
    }

    /// Whether a period fits the cycle (divides it).
    pub fn fits(&self, period: Nanos) -> bool {
        period > 0 && self.cycle_ns.is_multiple_of(period)
    }

    /// The base as RFC 3339 text (whole seconds unless it has a fraction;
    /// a base before 1970, which [`SharedTime::parse`] never makes, in ns).
    pub fn base_text(&self) -> String {
        if self.base_ns < 0 {
            return format!("{}ns", self.base_ns);
        }
        let secs = self.base_ns.div_euclid(1_000_000_000) as u64;
        let nanos = self.base_ns.rem_euclid(1_000_000_000) as u32;
        let at = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
        if nanos == 0 {
            humantime::format_rfc3339_seconds(at).to_string()
        } else {
            humantime::format_rfc3339_nanos(at).to_string()
        }
    }
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseDurationError {
    /// Nothing to parse.
    #[error("empty duration")]
    Empty,
    /// The numeric part is not a number.
    #[error("`{0}` is not a number followed by an optional unit (ns, us, ms, s, m, h)")]
    Malformed(String),
    /// The unit is not one we know.
    #[error("unknown unit `{unit}` in `{input}` (use ns, us, ms, s, m or h)")]
    UnknownUnit {
        /// The whole input.
        input: String,
        /// The unit found.
        unit: String,
    },
    /// The value does not fit in 64-bit nanoseconds or is negative.
    #[error("duration `{0}` is out of range")]
    OutOfRange(String),
    /// The value has more precision than a nanosecond.
    #[error("duration `{0}` is not a whole number of nanoseconds")]
    Fractional(String),
}

/// Parses `150ms`, `40us`, `2s`, `1.5ms`, `10m`, `1h`. A bare number takes
/// `default_unit` (in nanoseconds per unit: e.g. [`MS`] for the seed tool's
/// milliseconds).
pub fn parse_duration(input: &str, default_unit: Nanos) -> Result<Nanos, ParseDurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(ParseDurationError::Empty);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let scale = match unit.trim() {
        "" => default_unit,
        "ns" => 1,
        "us" | "µs" => US,
        "ms" => MS,
        "s" | "sec" => SEC,
        "m" | "min" => 60 * SEC,
        "h" => 3600 * SEC,
        other => {
            return Err(ParseDurationError::UnknownUnit {
                input: input.to_string(),
                unit: other.to_string(),
            })
        }
    };
    if number.is_empty() || number.matches('.').count() > 1 {
        return Err(ParseDurationError::Malformed(input.to_string()));
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    let int: u128 = if int_part.is_empty() {
        0
    } else {
        int_part
            .parse()
            .map_err(|_| ParseDurationError::OutOfRange(input.to_string()))?
    };
    let mut total = int
        .checked_mul(u128::from(scale))
        .ok_or_else(|| ParseDurationError::OutOfRange(input.to_string()))?;
    if !frac_part.is_empty() {
        let digits = u32::try_from(frac_part.len())
            .map_err(|_| ParseDurationError::Malformed(input.to_string()))?;
        let denom = 10u128
            .checked_pow(digits)
            .ok_or_else(|| ParseDurationError::Fractional(input.to_string()))?;
        let frac: u128 = frac_part
            .parse()
            .map_err(|_| ParseDurationError::Malformed(input.to_string()))?;
        let scaled = frac * u128::from(scale);
        if !scaled.is_multiple_of(denom) {
            return Err(ParseDurationError::Fractional(input.to_string()));
        }
        total += scaled / denom;
    }
    Nanos::try_from(total).map_err(|_| ParseDurationError::OutOfRange(input.to_string()))
}

/// A duration printed with the largest unit that shows it exactly
/// (`150ms`, `40us`, `1500us`, `2s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration(pub Nanos);

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0;
        for (scale, unit) in [(3600 * SEC, "h"), (SEC, "s"), (MS, "ms"), (US, "us")] {
            if ns >= scale && ns.is_multiple_of(scale) {
                return write!(f, "{}{unit}", ns / scale);
            }
        }
        if ns == 0 {
            return f.write_str("0");
        }
        write!(f, "{ns}ns")
    }
}

/// Rounds `t` up to the next multiple of `grain` (identity on multiples).
pub fn ceil_to(t: Nanos, grain: Nanos) -> Nanos {
    t.div_ceil(grain).saturating_mul(grain)
}

/// Rounds `t` down to a multiple of `grain`.
pub fn floor_to(t: Nanos, grain: Nanos) -> Nanos {
    t - t % grain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_bare_numbers() {
        assert_eq!(parse_duration("150ms", MS), Ok(150 * MS));
        assert_eq!(parse_duration("150", MS), Ok(150 * MS));
        assert_eq!(parse_duration("40us", MS), Ok(40 * US));
        assert_eq!(parse_duration("1.5ms", MS), Ok(1500 * US));
        assert_eq!(parse_duration("2s", MS), Ok(2 * SEC));
        assert_eq!(parse_duration(" 1h ", MS), Ok(3600 * SEC));
        assert_eq!(parse_duration("7ns", MS), Ok(7));
    }

    #[test]
    fn refuses_bad_durations() {
        assert_eq!(parse_duration("", MS), Err(ParseDurationError::Empty));
        assert!(matches!(
            parse_duration("ms", MS),
            Err(ParseDurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration("10parsecs", MS),
            Err(ParseDurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("1.2.3ms", MS),
            Err(ParseDurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration("1.0001ns", MS),
            Err(ParseDurationError::Fractional(_))
        ));
        assert!(matches!(
            parse_duration("99999999999999999999h", MS),
            Err(ParseDurationError::OutOfRange(_))
        ));
        assert!(matches!(
            parse_duration("-5ms", MS),
            Err(ParseDurationError::UnknownUnit { .. }) | Err(ParseDurationError::Malformed(_))
        ));
    }

    #[test]
    fn prints_the_largest_exact_unit() {
        assert_eq!(Duration(150 * MS).to_string(), "150ms");
        assert_eq!(Duration(1500 * US).to_string(), "1500us");
        assert_eq!(Duration(2 * SEC).to_string(), "2s");
        assert_eq!(Duration(0).to_string(), "0");
        assert_eq!(Duration(7).to_string(), "7ns");
    }

    #[test]
    fn a_shared_time_is_a_clock_and_an_rfc3339_utc_base() {
        let s = SharedTime::parse("tai", "2026-01-01T00:00:00Z").expect("a base");
        assert_eq!(s.clock, WallClock::Tai);
        assert_eq!(s.base_ns, 1_767_225_600 * 1_000_000_000);
        assert_eq!(s.base_text(), "2026-01-01T00:00:00Z");
        let frac = SharedTime::parse("realtime", "2026-01-01T00:00:00.25Z").expect("a fraction");
        assert_eq!(frac.base_ns % 1_000_000_000, 250_000_000);
        assert_eq!(frac.base_text(), "2026-01-01T00:00:00.250000000Z");
        for base_ns in [i64::MIN, -1, 0, i64::MAX] {
            let t = SharedTime {
                clock: WallClock::Tai,
                base_ns,
                cycle_ns: SEC,
                require_sync: false,
            };
            assert!(!t.base_text().is_empty(), "any base prints");
        }
        for bad in [
            "yesterday",
            "2026-01-01 00:00:00",
            "2999-01-01T00:00:00Z",
            "",
        ] {
            assert!(
                matches!(
                    SharedTime::parse("tai", bad),
                    Err(SharedTimeError::BadBase { .. })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            SharedTime::parse("gps", "2026-01-01T00:00:00Z")
                .unwrap_err()
                .to_string(),
            "unknown clock 'gps' (expected tai or realtime)"
        );
    }
}
