//! Which accelerator QEMU runs a guest with: KVM where it runs guest code
//! at native speed, TCG otherwise.
//!
//! `/dev/kvm` existing is not enough. Under nested virtualisation without
//! hardware support a `/dev/kvm` can exist and *emulate* the guest's
//! instructions: on the development machines QEMU with `-enable-kvm` did not
//! get a Linux kernel to print its first line in 90 s, while TCG
//! (`-accel tcg,thread=multi`) boots it in 2 s. So [`choose`] measures:
//! [`gang_vmm::probe::guest_speed`] times a `dec ecx; jnz` loop in a
//! one-vCPU KVM VM (within [`PROBE_BUDGET`]), once per process.
//!
//! **Measured.** On the development machines (nested `/dev/kvm`, no `vmx`
//! flag in the CPU): 0.3–0.75 M iterations/s, the probe taking 30–75 ms; the
//! same loop run natively on that CPU: 0.8–1.8 G iterations/s (two CPUs
//! shared with other work), i.e. KVM there is ~2,000–4,000x slower than the
//! CPU.
//!
//! **Threshold:** [`KVM_MIN_RATE`] = 1e8 iterations/s. KVM with hardware
//! support runs the loop without exits, at the CPU's own speed: about one
//! iteration per cycle, ~1e9/s or more ([`NATIVE_RATE`]), and still well
//! above 1e8 with the probe's thread getting only part of a loaded CPU.
//! Emulation measured ~5e5/s here; even a far better emulator stays around
//! 1e7. 1e8 is a decade from each: 10x of headroom below native speed for
//! load and slow CPUs, 200x above what was measured emulating.
//!
//! ```no_run
//! use gang_qemu::accel::{choose, AccelSetting};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let choice = choose("auto".parse::<AccelSetting>()?)?;
//! println!("{}: {}", choice.accelerator, choice.reason);
//! # Ok(()) }
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use gang_vmm::probe::{GuestSpeed, ProbeError};

/// The loop rate (iterations/s) from which KVM counts as running guest code
/// natively (see the module docs for why this figure).
pub const KVM_MIN_RATE: f64 = 1e8;
/// A native CPU's rate for the probe's loop (about one iteration per cycle),
/// what a slow KVM is compared with in the reason.
pub const NATIVE_RATE: f64 = 1e9;
/// How long the probe may run the guest.
pub const PROBE_BUDGET: Duration = Duration::from_millis(200);

/// The configured accelerator: `auto` (measure), `kvm` or `tcg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelSetting {
    /// KVM if it runs guest code at native speed, else TCG.
    #[default]
    Auto,
    /// KVM, however slow (an error without `/dev/kvm`).
    Kvm,
    /// TCG.
    Tcg,
}

/// A setting that is none of `auto`, `kvm`, `tcg`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("accelerator {given:?}: must be \"auto\", \"kvm\" or \"tcg\"")]
pub struct ParseAccelSettingError {
    /// What was given.
    pub given: String,
}

impl FromStr for AccelSetting {
    type Err = ParseAccelSettingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(AccelSetting::Auto),
            "kvm" => Ok(AccelSetting::Kvm),
            "tcg" => Ok(AccelSetting::Tcg),
            _ => Err(ParseAccelSettingError {
                given: s.to_string(),
            }),
        }
    }
}

impl fmt::Display for AccelSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AccelSetting::Auto => "auto",
            AccelSetting::Kvm => "kvm",
            AccelSetting::Tcg => "tcg",
        })
    }
}

/// An accelerator QEMU can run a guest with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accelerator {
    /// `-accel kvm`.
    Kvm,
    /// `-accel tcg,thread=multi`.
    Tcg,
}

impl fmt::Display for Accelerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accelerator::Kvm => "kvm",
            Accelerator::Tcg => "tcg",
        })
    }
}

/// The accelerator chosen and why (for logs and `gang` output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelChoice {
    /// The accelerator.
    pub accelerator: Accelerator,
    /// Why, in a sentence.
    pub reason: String,
}

/// Why KVM cannot be used though the setting forces it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("accelerator \"kvm\" is configured but {0}")]
pub struct AccelError(pub ProbeError);

/// The accelerator for `setting`. `Auto` and `Kvm` measure KVM's speed
/// with [`gang_vmm::probe::guest_speed`] once per process (the first call
/// takes up to [`PROBE_BUDGET`] and a few milliseconds; later calls reuse
/// the result). Fails only for `Kvm` when `/dev/kvm` cannot be opened.
pub fn choose(setting: AccelSetting) -> Result<AccelChoice, AccelError> {
    let choice = match setting {
        AccelSetting::Tcg => AccelChoice {
            accelerator: Accelerator::Tcg,
            reason: "TCG: configured (accelerator \"tcg\")".into(),
        },
        AccelSetting::Auto => decide(probed().as_ref()),
        AccelSetting::Kvm => forced_kvm(probed().as_ref())?,
    };
    tracing::info!(%setting, accelerator = %choice.accelerator, reason = %choice.reason, "QEMU accelerator");
    Ok(choice)
}

/// The probe's result, measured on first use.
fn probed() -> &'static Result<GuestSpeed, ProbeError> {
    static PROBE: OnceLock<Result<GuestSpeed, ProbeError>> = OnceLock::new();
    PROBE.get_or_init(|| {
        let r = gang_vmm::probe::guest_speed(PROBE_BUDGET);
        match &r {
            Ok(s) => tracing::debug!(speed = ?s, "KVM probe"),
            Err(e) => tracing::debug!(error = %e, "KVM probe"),
        }
        r
    })
}

/// The `Auto` decision from a probe's result: KVM at [`KVM_MIN_RATE`] or
/// faster, TCG otherwise or when there is no usable KVM.
pub fn decide(probe: Result<&GuestSpeed, &ProbeError>) -> AccelChoice {
    let tcg = |reason: String| AccelChoice {
        accelerator: Accelerator::Tcg,
        reason,
    };
    match probe {
        Err(e) if e.no_kvm() => tcg("no /dev/kvm; using TCG".into()),
        Err(e @ ProbeError::Open { .. }) => tcg(format!("{e}; using TCG")),
        Err(e) => tcg(format!("measuring KVM failed ({e}); using TCG")),
        Ok(s) if s.per_second >= KVM_MIN_RATE => AccelChoice {
            accelerator: Accelerator::Kvm,
            reason: format!(
                "KVM runs guest code at {} loop iterations/s (native speed)",
                rate(s.per_second)
            ),
        },
        Ok(s) => tcg(format!("{}; using TCG", slow(s.per_second))),
    }
}

/// The `Kvm` (forced) choice from a probe's result.
fn forced_kvm(probe: Result<&GuestSpeed, &ProbeError>) -> Result<AccelChoice, AccelError> {
    let reason = match probe {
        Err(e @ ProbeError::Open { .. }) => return Err(AccelError(e.clone())),
        Err(e) => format!("KVM: configured (accelerator \"kvm\"); measuring it failed ({e})"),
        Ok(s) if s.per_second >= KVM_MIN_RATE => format!(
            "KVM: configured (accelerator \"kvm\"); it runs guest code at {} loop \
             iterations/s (native speed)",
            rate(s.per_second)
        ),
        Ok(s) => format!(
            "KVM: configured (accelerator \"kvm\") though {}; TCG would be faster",
            slow(s.per_second)
        ),
    };
    Ok(AccelChoice {
        accelerator: Accelerator::Kvm,
        reason,
    })
}

/// Says that KVM emulates, at `per_second`.
fn slow(per_second: f64) -> String {
    let factor = if per_second > 0.0 {
        format!("{:.0}x", NATIVE_RATE / per_second)
    } else {
        "far".into()
    };
    format!(
        "/dev/kvm runs guest code at {} iterations/s, slower than a native CPU (~{}/s) by \
         {factor}: it emulates (nested virtualisation without hardware support)",
        rate(per_second),
        rate(NATIVE_RATE)
    )
}

/// A rate with an SI prefix: "1.2 G", "750 k".
fn rate(x: f64) -> String {
    if x >= 1e9 {
        format!("{:.1} G", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.1} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.0} k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speed(per_second: f64) -> GuestSpeed {
        GuestSpeed {
            per_second,
            iterations: 1 << 14,
            elapsed: Duration::from_millis(30),
            cut_short: false,
            runs: 1,
            setup: Duration::from_millis(2),
            total: Duration::from_millis(32),
        }
    }

    #[test]
    fn settings_parse_and_print() {
        for (s, v) in [
            ("auto", AccelSetting::Auto),
            ("kvm", AccelSetting::Kvm),
            ("tcg", AccelSetting::Tcg),
        ] {
            assert_eq!(s.parse::<AccelSetting>(), Ok(v));
            assert_eq!(v.to_string(), s);
        }
        assert_eq!(AccelSetting::default(), AccelSetting::Auto);
    }

    #[test]
    fn an_unknown_setting_is_refused_by_name() {
        for bad in ["KVM", "hvf", "", " tcg"] {
            let e = bad.parse::<AccelSetting>().unwrap_err();
            assert_eq!(e.given, bad);
            assert_eq!(
                e.to_string(),
                format!("accelerator {bad:?}: must be \"auto\", \"kvm\" or \"tcg\"")
            );
        }
    }

    #[test]
    fn tcg_is_tcg_with_a_reason() {
        let c = choose(AccelSetting::Tcg).unwrap();
        assert_eq!(c.accelerator, Accelerator::Tcg);
        assert!(c.reason.contains("configured"), "{}", c.reason);
    }

    #[test]
    fn native_speed_is_kvm() {
        for r in [KVM_MIN_RATE, 1.3e9, 4e9] {
            let c = decide(Ok(&speed(r)));
            assert_eq!(c.accelerator, Accelerator::Kvm, "{r}");
            assert!(
                c.reason.starts_with("KVM runs guest code at "),
                "{}",
                c.reason
            );
        }
        assert_eq!(
            decide(Ok(&speed(1.25e9))).reason,
            "KVM runs guest code at 1.2 G loop iterations/s (native speed)"
        );
    }

    #[test]
    fn emulating_kvm_is_tcg() {
        for r in [KVM_MIN_RATE * 0.99, 1e7, 5e5, 10.0, 0.0] {
            let c = decide(Ok(&speed(r)));
            assert_eq!(c.accelerator, Accelerator::Tcg, "{r}");
            assert!(c.reason.contains("it emulates"), "{}", c.reason);
        }
        assert_eq!(
            decide(Ok(&speed(5e5))).reason,
            "/dev/kvm runs guest code at 500 k iterations/s, slower than a native CPU \
             (~1.0 G/s) by 2000x: it emulates (nested virtualisation without hardware \
             support); using TCG"
        );
    }

    #[test]
    fn no_usable_kvm_is_tcg() {
        let missing = ProbeError::Open { errno: 2 }; // ENOENT
        let c = decide(Err(&missing));
        assert_eq!(c.accelerator, Accelerator::Tcg);
        assert_eq!(c.reason, "no /dev/kvm; using TCG");
        let denied = ProbeError::Open { errno: 13 }; // EACCES
        let c = decide(Err(&denied));
        assert_eq!(c.accelerator, Accelerator::Tcg);
        assert!(c.reason.starts_with("opening /dev/kvm: "), "{}", c.reason);
        let broken = ProbeError::Exit("Shutdown".into());
        assert_eq!(decide(Err(&broken)).accelerator, Accelerator::Tcg);
    }

    #[test]
    fn forced_kvm_needs_dev_kvm_and_says_when_it_is_slow() {
        let missing = ProbeError::Open { errno: 2 };
        let e = forced_kvm(Err(&missing)).unwrap_err();
        assert!(e.to_string().contains("/dev/kvm"), "{e}");
        let c = forced_kvm(Ok(&speed(5e5))).unwrap();
        assert_eq!(c.accelerator, Accelerator::Kvm);
        assert!(c.reason.contains("TCG would be faster"), "{}", c.reason);
        let c = forced_kvm(Ok(&speed(2e9))).unwrap();
        assert_eq!(c.accelerator, Accelerator::Kvm);
        assert!(c.reason.contains("native speed"), "{}", c.reason);
    }

    #[test]
    fn auto_measures_here() {
        let require = std::env::var("GANG_REQUIRE_HOST").is_ok_and(|v| v == "1");
        if !std::path::Path::new("/dev/kvm").exists() && !require {
            // Past the harness's capture: a passing run's output shows it.
            use std::io::Write as _;
            let _ =
                std::io::stderr().write_all(b"skipped: no /dev/kvm here [auto_measures_here]\n");
            return;
        }
        let c = choose(AccelSetting::Auto).unwrap();
        eprintln!("{c:?}");
        assert!(!c.reason.is_empty());
        assert!(
            !c.reason.starts_with("no /dev/kvm") && !c.reason.starts_with("measuring"),
            "the probe did not measure: {}",
            c.reason
        );
        // Cached: the same answer again, at once.
        let t = std::time::Instant::now();
        assert_eq!(choose(AccelSetting::Auto).unwrap(), c);
        assert!(t.elapsed() < Duration::from_millis(50));
    }
}
