//! An xl.cfg domain configuration ([`DomainConfig`]) to QEMU's command line.
//!
//! [`launch`] is pure: it reads no file and checks nothing on the host. It
//! returns the binary, the arguments, and what the daemon must do around
//! them ([`Launch`]: tap devices to create and attach, the VNC password and
//! balloon target to set over QMP, the host files to check). Every key or
//! value QEMU cannot honour is refused with an [`ArgsError`] that names it
//! and says why; nothing is silently dropped. The keys that are the
//! daemon's, not QEMU's (`cpus`, `cpus_soft`, `pool`, `gang_policy`,
//! `on_*`), are ignored here.
//!
//! The arguments are those of QEMU 7.2 (Debian 12's), the oldest QEMU gang
//! supports; `tests/args.rs` starts the real binary with them.
//!
//! # Mapping
//!
//! | xl key | QEMU |
//! |---|---|
//! | `type = "hvm"` (`device_model` absent or `"qemu"`), `type = "pvh"` with `device_model = "qemu"` | run by QEMU; `pv`, `process`, a `pvh` without `device_model = "qemu"` and an `hvm` with `device_model = "gang"` are refused (not QEMU domains) |
//! | `device_model_override` | the binary, else `qemu-system-x86_64` (looked up on `PATH` by the daemon) |
//! | `device_model_version` | `qemu-xen` or absent; `qemu-xen-traditional` (and anything else) refused |
//! | always | `-name guest=NAME,debug-threads=on` (vCPU threads are named `CPU N/KVM`), `-nodefaults`, `-no-user-config`, `-S` (the daemon starts the vCPUs over QMP once they are gang-scheduled), `-no-shutdown` and `-action reboot=shutdown,panic=pause` (QEMU stops instead of exiting or resetting, so the daemon applies `on_poweroff`/`on_reboot`/`on_crash`), `-device pvpanic` (guest panics are reported), `-display none` (QEMU never opens a window; VNC is a server of its own), `-msg timestamp=on` |
//! | accelerator | `-accel kvm` or `-accel tcg,thread=multi` ([`Accel`]) |
//! | `acpi = 0`, `hpet = 0` | `-machine pc` (i440fx: IDE for `hd*` disks) with `,acpi=off`, `,hpet=off` |
//! | `nestedhvm` | KVM: `-cpu max` with `nestedhvm = 1`, else `-cpu max,vmx=off,svm=off` (xl's default is no nested virtualisation; `max` would offer it); TCG: `-cpu max` (TCG emulates no VMX, and masking the flags broke static glibc programs in the guest) |
//! | `apic = 0`, `pae = 0` | refused: an x86-64 CPU has both |
//! | `vcpus`, `maxvcpus` | `-smp VCPUS,maxcpus=MAXVCPUS` (at most 255, the `pc` machine's limit) |
//! | `memory` (default 128, Xen's for HVM), `maxmem` | `-m MEMORY`; with `maxmem` > `memory`: `-m MAXMEM`, a `virtio-balloon-pci` device and [`Launch::balloon_target_mb`] = `memory` (the daemon sets it over QMP); `maxmem` < `memory` refused |
//! | (QMP) | `-qmp unix:QMP,server=on,wait=off` ([`QemuPaths::qmp_socket`]) |
//! | `serial` absent, `"pty"` or `["pty"]` | `-chardev socket,id=console0,path=SERIAL,server=on,wait=off,logfile=LOG,logappend=on` and `-serial chardev:console0`: gang's console is the guest's first serial port; anything else refused |
//! | `kernel`, `ramdisk`, `cmdline` (or `root` + `extra`) | `-kernel`, `-initrd`, `-append` (absolute paths only: QEMU runs in the daemon's directory); `ramdisk`/`cmdline` without `kernel` refused; a `pvh` domain requires `kernel` |
//! | `boot` | `-boot order=...`, letters `c` (disk), `d` (CD-ROM), `n` (network), each once; others refused (no floppy) |
//! | `bootloader` | refused: pygrub has no place here (QEMU's firmware boots the disk's own loader) |
//! | `disk`, vdev `xvdX`, `vdX` | `-drive if=none,id=drive-VDEV,file=TARGET,format=F[,readonly=on]` + `-device virtio-blk-pci,drive=drive-VDEV,id=VDEV` |
//! | `disk`, vdev `hda`..`hdd` | the same drive + `-device ide-hd` (or `ide-cd` for `devtype=cdrom`) `,bus=ide.B,unit=U` (hda = 0.0, hdb = 0.1, hdc = 1.0, hdd = 1.1) |
//! | `disk` format | raw, qcow, qcow2, vhd (QEMU's `vpc`), qed; an empty CD-ROM is a drive with no medium (`media=cdrom`, no file) |
//! | `disk` refusals | `sd*` (no SCSI controller yet), other or repeated vdevs, a CD-ROM not on `hd*` or read-write, a read-only IDE disk (QEMU cannot), a disk without a target, a relative target |
//! | `vif` `model` | `e1000`, `rtl8139`, `ne2k_pci`, `pcnet`, `virtio`/`virtio-net` (`virtio-net-pci`); default `virtio-net-pci`, not Xen's `rtl8139`: Xen's default is for guests without PV drivers, modern guests all have virtio's and it is the fastest emulated NIC |
//! | `vif` `bridge` | `-netdev tap,id=netN,ifname=TAP,script=no,downscript=no`, TAP = `vifname` or `vifDOMID.N` (at most 15 characters), and a [`TapDevice`] for the daemon to create and attach to the bridge |
//! | `vif` without `bridge` | `-netdev user,id=netN` (QEMU's user-mode NAT; unlike xl, whose default bridge is `xenbr0`) |
//! | `vif` `mac` | as given, else `00:16:3e` (Xen's OUI) and 3 bytes of a hash of (name, N): stable across restarts |
//! | `vif` `type` | `ioemu` and `vif` both mean the emulated NIC here |
//! | `vif` `ip`, `rate`, `script`, `backend`, `vifname` without `bridge`, any other key | refused by name |
//! | `vnc = 1` | `-vnc LISTEN:DISPLAY[,to=99][,password=on]`: LISTEN = `vnclisten` (which may carry `:DISPLAY`) or 127.0.0.1, DISPLAY = `vncdisplay` or 0, with `vncunused` (default 1) `,to=99` (`,to=DISPLAY` above 99) so QEMU takes the first free display from DISPLAY on; `password=on` with a non-empty `vncpasswd`, which is [`Launch::vnc_password`] for the daemon to set over QMP |
//! | `vnc = 1`: the graphics card | `vga = "stdvga"`/`"cirrus"`/`"none"` (`qxl` refused: no SPICE), else `stdvga = 0` for `cirrus-vga`, else `VGA`; `videoram` is `vgamem_mb` (Cirrus: 4, 8 or 16) |
//! | `keymap` (with `vnc = 1`) | `-k KEYMAP` |
//! | `vnc` absent or 0 | no graphics card; `vnclisten`, `vncpasswd`, `vncdisplay`, `stdvga`, `vga`, `videoram`, `keymap` then have nothing to act on, as in xl |
//! | `sdl = 1` | refused: no display on a gang host; `nographic = 1` with `vnc = 1` refused |
//! | `localtime = 1` | `-rtc base=localtime` |
//! | every key in [`DomainConfig::unsupported`] | refused, with the reason for that key |
//! | (sandbox) | `-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny`; with [`LaunchOptions::run_as`], `-runas USER` and no `elevateprivileges=deny`: QEMU 7.2 installs its seccomp filter before it drops to USER, so that filter would kill it at `setgid` |

use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use gang_config::{
    DeviceModel, DiskAccess, DiskDevtype, DiskFormat, DiskSpec, DomainConfig, DomainType, Value,
    VifSpec,
};

/// The binary used without `device_model_override`.
pub const DEFAULT_BINARY: &str = "qemu-system-x86_64";

/// Memory of a domain without `memory`, MB (Xen's default for HVM).
pub const DEFAULT_MEMORY_MB: u64 = 128;

/// The `pc` machine's vCPU limit.
pub const MAX_VCPUS: u32 = 255;

/// A Linux interface name's limit (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

/// `sun_path`'s limit, less the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// The highest VNC display (port 5900 + display <= 65535).
const MAX_VNC_DISPLAY: u32 = 65535 - 5900;

/// How QEMU runs guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Accel {
    /// KVM: natively (`-accel kvm`).
    Kvm,
    /// TCG: by translation, one host thread per vCPU (`-accel tcg,thread=multi`).
    Tcg,
}

/// Where the daemon wants QEMU's sockets and log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuPaths {
    /// The QMP socket QEMU listens on.
    pub qmp_socket: PathBuf,
    /// The console socket QEMU listens on (the guest's first serial port).
    pub serial_socket: PathBuf,
    /// Everything the guest writes to its console, appended.
    pub console_log: PathBuf,
}

/// What the daemon decides, not the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchOptions {
    /// The domain id (default tap names are `vifDOMID.N`).
    pub domid: u32,
    /// The accelerator.
    pub accel: Accel,
    /// The user QEMU drops to once started (`-runas`), if any.
    pub run_as: Option<String>,
}

/// A tap device the daemon creates (owned by QEMU's user) and attaches to
/// a bridge before it starts QEMU, which opens it by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapDevice {
    /// The tap device's name.
    pub name: String,
    /// The bridge it joins.
    pub bridge: String,
    /// The guest's MAC address on it.
    pub mac: String,
}

/// How to start QEMU for a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The binary: a path, or a name to look up on `PATH`.
    pub binary: PathBuf,
    /// The arguments, without the binary.
    pub args: Vec<OsString>,
    /// Tap devices to set up first, one per bridged vif, in vif order.
    pub taps: Vec<TapDevice>,
    /// The VNC password to set over QMP (`change-vnc-password`) before
    /// anyone connects; QEMU refuses every client until then.
    pub vnc_password: Option<String>,
    /// The balloon target to set over QMP (`balloon`), MB, when the guest
    /// starts with more memory than `memory` (`maxmem` > `memory`).
    pub balloon_target_mb: Option<u64>,
    /// Every host file QEMU will open (kernel, ramdisk, disk targets), for
    /// the daemon to check before starting it.
    pub files: Vec<PathBuf>,
}

/// Why a configuration cannot be run by QEMU. Each names the key (and
/// value) and says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// A key's value cannot be honoured (value in config syntax).
    #[error("{key} = {value}: {reason}")]
    Refused {
        /// The xl key.
        key: String,
        /// Its value as written in a config file.
        value: String,
        /// Why, and what instead.
        reason: String,
    },
    /// A key of [`DomainConfig::unsupported`].
    #[error("{key}: {reason}")]
    Unsupported {
        /// The xl key.
        key: String,
        /// Why, and what instead.
        reason: String,
    },
    /// A `disk` entry (0-based `index` in the list).
    #[error("disk {index} ({vdev}): {reason}")]
    Disk {
        /// Its position in `disk`.
        index: usize,
        /// Its vdev.
        vdev: String,
        /// Why, and what instead.
        reason: String,
    },
    /// A `vif` entry (0-based `index` in the list); `param` is the
    /// `KEY=VALUE` to blame, or the whole spec.
    #[error("vif {index}: {param}: {reason}")]
    Vif {
        /// Its position in `vif`.
        index: usize,
        /// The parameter to blame.
        param: String,
        /// Why, and what instead.
        reason: String,
    },
    /// More than one of the above, in the order of the config's sections.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<ArgsError>),
    /// A [`LaunchOptions`] or [`QemuPaths`] value QEMU cannot take.
    #[error("{option} = {value:?}: {reason}")]
    BadOption {
        /// The field.
        option: &'static str,
        /// Its value.
        value: String,
        /// Why.
        reason: String,
    },
}

fn quoted(s: &str) -> String {
    Value::Str(s.to_owned()).to_string()
}

fn refused(key: &str, value: String, reason: impl Into<String>) -> ArgsError {
    ArgsError::Refused {
        key: key.to_owned(),
        value,
        reason: reason.into(),
    }
}

fn flag(b: bool) -> String {
    u8::from(b).to_string()
}

/// QemuOpts escaping: a comma is doubled.
fn esc(s: &str) -> String {
    s.replace(',', ",,")
}

/// QemuOpts escaping of a path, byte-wise (paths need not be UTF-8).
fn esc_path(p: &Path) -> OsString {
    let mut out = Vec::with_capacity(p.as_os_str().len());
    for &b in p.as_os_str().as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

/// The reason gang gives for each key of
/// [`gang_config::UNSUPPORTED_DOMAIN_KEYS`].
pub fn unsupported_reason(key: &str) -> &'static str {
    match key {
        "soundhw" => "gang's QEMU emulates no sound card (a gang host has no audio to play it on)",
        "usb" | "usbdevice" | "usbdev" | "usbctrl" => {
            "gang's QEMU has no USB controller yet (the VNC pointer is the PS/2 mouse)"
        }
        "pci" => {
            "PCI passthrough needs VFIO and the device's IOMMU group, which gang does not set up"
        }
        "gfx_passthru" => "graphics passthrough needs VFIO, which gang does not set up",
        "rtc_timeoffset" => {
            "QEMU's clock starts from UTC or from local time only (localtime = 1), not an offset"
        }
        "viridian" => "gang offers no Hyper-V enlightenments (Windows guests run without them)",
        "on_soft_reset" => "gang has no soft reset: a guest's reset is a reboot (on_reboot)",
        "spice"
        | "spicehost"
        | "spiceport"
        | "spicetls_port"
        | "spicedisable_ticketing"
        | "spicepasswd"
        | "spiceagent_mouse"
        | "spicevdagent"
        | "spice_clipboard_sharing"
        | "spiceusbredirection" => "gang offers VNC (vnc = 1), not SPICE",
        "vfb" | "vkb" => {
            "Xen's paravirtual framebuffer and keyboard have no equivalent here: use vnc = 1"
        }
        "vtpm" => "gang offers no virtual TPM yet",
        "channel" => "Xen's paravirtual channels have no equivalent here",
        _ => "gang cannot honour this key",
    }
}

/// The command line under construction.
#[derive(Default)]
struct Argv {
    args: Vec<OsString>,
}

impl Argv {
    fn push(&mut self, a: impl Into<OsString>) {
        self.args.push(a.into());
    }

    fn opt(&mut self, name: &str, value: impl Into<OsString>) {
        self.push(name);
        self.push(value);
    }
}

/// Concatenates pieces of an option value.
fn cat(parts: &[&OsStr]) -> OsString {
    let mut s = OsString::new();
    for p in parts {
        s.push(p);
    }
    s
}

/// Checks that the domain is one QEMU runs.
fn check_kind(cfg: &DomainConfig) -> Result<(), ArgsError> {
    let ty = |t: &str, reason: &str| refused("type", quoted(t), reason);
    match (cfg.domain_type, cfg.device_model) {
        (DomainType::Hvm, None | Some(DeviceModel::Qemu)) => Ok(()),
        (DomainType::Hvm, Some(DeviceModel::Gang)) => Err(refused(
            "device_model",
            quoted("gang"),
            "gang's micro-VM boots PVH kernels only; an HVM guest needs QEMU \
             (device_model = \"qemu\", the default for type = \"hvm\")",
        )),
        (DomainType::Pvh, Some(DeviceModel::Qemu)) => {
            if cfg.kernel.is_none() {
                Err(ty(
                    "pvh",
                    "a PVH guest boots its kernel directly: set `kernel' (QEMU loads it \
                     through its PVH entry point)",
                ))
            } else {
                Ok(())
            }
        }
        (DomainType::Pvh, None | Some(DeviceModel::Gang)) => Err(ty(
            "pvh",
            "not a QEMU domain: it runs in gang's micro-VM unless device_model = \"qemu\"",
        )),
        (DomainType::Pv, _) => Err(ty(
            "pv",
            "not a QEMU domain: Xen's paravirtual interface has no QEMU equivalent \
             (a kernel that also boots as PVH runs with type = \"pvh\")",
        )),
        (DomainType::Process, _) => Err(ty(
            "process",
            "not a QEMU domain: its processes run on the host as they are",
        )),
    }
}

/// The value of `r`, or `None` with its error kept in `errors`.
fn keep<T>(errors: &mut Vec<ArgsError>, r: Result<T, ArgsError>) -> Option<T> {
    r.map_err(|e| errors.push(e)).ok()
}

fn binary(cfg: &DomainConfig) -> Result<PathBuf, ArgsError> {
    match cfg.device_model_version.as_deref() {
        None | Some("qemu-xen") => {}
        Some(v @ "qemu-xen-traditional") => {
            return Err(refused(
                "device_model_version",
                quoted(v),
                "Xen's old QEMU fork is not available; gang runs upstream QEMU: use \
                 \"qemu-xen\" or leave it out",
            ))
        }
        Some(v) => {
            return Err(refused(
                "device_model_version",
                quoted(v),
                "unknown device model version; gang runs upstream QEMU (\"qemu-xen\")",
            ))
        }
    }
    Ok(PathBuf::from(
        cfg.device_model_override
            .as_deref()
            .unwrap_or(DEFAULT_BINARY),
    ))
}

fn check_socket_path(option: &'static str, p: &Path) -> Result<(), ArgsError> {
    if p.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(ArgsError::BadOption {
            option,
            value: p.display().to_string(),
            reason: format!("a Unix socket's path has at most {MAX_SOCKET_PATH} bytes"),
        });
    }
    Ok(())
}

fn check_user(user: &str) -> Result<(), ArgsError> {
    let ok = !user.is_empty()
        && !user.starts_with('-')
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'$'));
    if ok {
        Ok(())
    } else {
        Err(ArgsError::BadOption {
            option: "run_as",
            value: user.to_owned(),
            reason: "not a user name".to_owned(),
        })
    }
}

/// `-machine`, `-accel`, `-cpu`.
fn platform(cfg: &DomainConfig, opts: &LaunchOptions, a: &mut Argv) -> Result<(), ArgsError> {
    if cfg.apic == Some(false) {
        return Err(refused(
            "apic",
            flag(false),
            "an x86-64 CPU (QEMU's -cpu max) always has a local APIC",
        ));
    }
    if cfg.pae == Some(false) {
        return Err(refused(
            "pae",
            flag(false),
            "an x86-64 CPU (QEMU's -cpu max) always has PAE",
        ));
    }
    let mut machine = String::from("pc");
    if cfg.acpi == Some(false) {
        machine.push_str(",acpi=off");
    }
    if cfg.hpet == Some(false) {
        machine.push_str(",hpet=off");
    }
    a.opt("-machine", machine);
    match opts.accel {
        Accel::Kvm => a.opt("-accel", "kvm"),
        Accel::Tcg => a.opt("-accel", "tcg,thread=multi"),
    }
    // TCG emulates no VMX, and masking the flags there breaks guests:
    // with `-cpu max,vmx=off,svm=off` every static glibc program in the
    // Linux guest image aborted in `_dl_get_origin` (QEMU 7.2), with plain
    // `max` they run. Under KVM the host's virtualisation flags are hidden
    // unless nestedhvm = 1 (xl's default: no nested virtualisation).
    match (opts.accel, cfg.nestedhvm == Some(true)) {
        (Accel::Tcg, _) | (Accel::Kvm, true) => a.opt("-cpu", "max"),
        (Accel::Kvm, false) => a.opt("-cpu", "max,vmx=off,svm=off"),
    }
    Ok(())
}

/// `-smp`, `-m`, the balloon; returns the balloon target.
fn cpus_and_memory(cfg: &DomainConfig, a: &mut Argv) -> Result<Option<u64>, ArgsError> {
    let maxcpus = cfg.maxvcpus.unwrap_or(cfg.vcpus).max(cfg.vcpus);
    if maxcpus > MAX_VCPUS {
        let key = if cfg.maxvcpus.is_some() {
            "maxvcpus"
        } else {
            "vcpus"
        };
        return Err(refused(
            key,
            maxcpus.to_string(),
            format!("QEMU's pc machine has at most {MAX_VCPUS} vCPUs"),
        ));
    }
    a.opt("-smp", format!("{},maxcpus={maxcpus}", cfg.vcpus));
    let memory = cfg.memory_mb.unwrap_or(DEFAULT_MEMORY_MB);
    if memory == 0 {
        return Err(refused("memory", "0".to_owned(), "a guest needs memory"));
    }
    match cfg.maxmem_mb {
        Some(max) if max > memory => {
            a.opt("-m", max.to_string());
            a.opt("-device", "virtio-balloon-pci,id=balloon0");
            Ok(Some(memory))
        }
        Some(max) if max < memory => Err(refused(
            "maxmem",
            max.to_string(),
            format!("less than memory = {memory}"),
        )),
        _ => {
            a.opt("-m", memory.to_string());
            Ok(None)
        }
    }
}

/// `-qmp`, the console, `-device pvpanic`.
fn control_and_console(
    cfg: &DomainConfig,
    paths: &QemuPaths,
    a: &mut Argv,
) -> Result<(), ArgsError> {
    check_socket_path("qmp_socket", &paths.qmp_socket)?;
    check_socket_path("serial_socket", &paths.serial_socket)?;
    let serial_ok = match cfg.serial.as_slice() {
        [] => true,
        [one] => one == "pty",
        _ => false,
    };
    if !serial_ok {
        let value = match cfg.serial.as_slice() {
            [one] => quoted(one),
            many => Value::List(many.iter().cloned().map(Value::Str).collect()).to_string(),
        };
        return Err(refused(
            "serial",
            value,
            "gang's console is the guest's first serial port (serial = \"pty\", or leave it out); \
             other serial ports and backends are not offered",
        ));
    }
    a.opt(
        "-qmp",
        cat(&[
            OsStr::new("unix:"),
            &esc_path(&paths.qmp_socket),
            OsStr::new(",server=on,wait=off"),
        ]),
    );
    a.opt(
        "-chardev",
        cat(&[
            OsStr::new("socket,id=console0,path="),
            &esc_path(&paths.serial_socket),
            OsStr::new(",server=on,wait=off,logfile="),
            &esc_path(&paths.console_log),
            OsStr::new(",logappend=on"),
        ]),
    );
    a.opt("-serial", "chardev:console0");
    a.opt("-device", "pvpanic");
    Ok(())
}

fn absolute(key: &str, path: &str) -> Result<PathBuf, ArgsError> {
    if path.is_empty() || !Path::new(path).is_absolute() {
        return Err(refused(
            key,
            quoted(path),
            "not an absolute path (QEMU runs in the daemon's directory, not yours)",
        ));
    }
    Ok(PathBuf::from(path))
}

/// `-kernel`, `-initrd`, `-append`, `-boot`.
fn boot(cfg: &DomainConfig, a: &mut Argv, files: &mut Vec<PathBuf>) -> Result<(), ArgsError> {
    if let Some(b) = &cfg.bootloader {
        return Err(refused(
            "bootloader",
            quoted(b),
            "pygrub has no place here: QEMU's firmware boots the boot loader on the guest's \
             disk (boot = \"c\"), or give the kernel with `kernel' (and `ramdisk', `cmdline')",
        ));
    }
    // -kernel, -initrd and -append go to machine properties as they are:
    // no comma escaping (a command line's `console=ttyS0,115200` included).
    match &cfg.kernel {
        Some(k) => {
            let k = absolute("kernel", k)?;
            a.opt("-kernel", k.as_os_str());
            files.push(k);
            if let Some(r) = &cfg.ramdisk {
                let r = absolute("ramdisk", r)?;
                a.opt("-initrd", r.as_os_str());
                files.push(r);
            }
            if let Some(c) = cfg.cmdline.as_deref().filter(|c| !c.is_empty()) {
                a.opt("-append", c);
            }
        }
        None => {
            if let Some(r) = &cfg.ramdisk {
                return Err(refused(
                    "ramdisk",
                    quoted(r),
                    "a ramdisk without `kernel' (QEMU loads both, or neither)",
                ));
            }
            if let Some(c) = cfg.cmdline.as_deref().filter(|c| !c.is_empty()) {
                return Err(refused(
                    "cmdline",
                    quoted(c),
                    "a kernel command line without `kernel' (the guest's boot loader has its own)",
                ));
            }
        }
    }
    if let Some(order) = &cfg.boot {
        let mut seen = String::new();
        for c in order.chars() {
            if !matches!(c, 'c' | 'd' | 'n') {
                return Err(refused(
                    "boot",
                    quoted(order),
                    format!(
                        "unknown boot device `{c}' (c: disk, d: CD-ROM, n: network; gang's \
                         QEMU has no floppy)"
                    ),
                ));
            }
            if seen.contains(c) {
                return Err(refused(
                    "boot",
                    quoted(order),
                    format!("boot device `{c}' given twice"),
                ));
            }
            seen.push(c);
        }
        if seen.is_empty() {
            return Err(refused(
                "boot",
                quoted(order),
                "no boot device (c: disk, d: CD-ROM, n: network)",
            ));
        }
        a.opt("-boot", format!("order={seen}"));
    }
    Ok(())
}

/// Where a vdev lives.
enum Slot {
    Virtio,
    Ide { bus: u8, unit: u8 },
}

fn slot(vdev: &str) -> Result<Slot, String> {
    let letters = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase());
    if let Some(rest) = vdev.strip_prefix("xvd").or_else(|| vdev.strip_prefix("vd")) {
        if letters(rest) {
            return Ok(Slot::Virtio);
        }
        return Err("a whole disk's vdev is letters only (xvda, vdb; no partitions)".to_owned());
    }
    if let Some(rest) = vdev.strip_prefix("hd") {
        return match rest {
            "a" => Ok(Slot::Ide { bus: 0, unit: 0 }),
            "b" => Ok(Slot::Ide { bus: 0, unit: 1 }),
            "c" => Ok(Slot::Ide { bus: 1, unit: 0 }),
            "d" => Ok(Slot::Ide { bus: 1, unit: 1 }),
            _ => Err("QEMU's IDE controller has four drives, hda to hdd".to_owned()),
        };
    }
    if vdev.starts_with("sd") {
        return Err(
            "gang's QEMU has no SCSI controller yet: use xvdX (virtio) or hda-hdd (IDE)".to_owned(),
        );
    }
    Err("unknown vdev: use xvdX or vdX (virtio) or hda-hdd (IDE)".to_owned())
}

fn format_driver(f: DiskFormat) -> Option<&'static str> {
    match f {
        DiskFormat::Raw => Some("raw"),
        DiskFormat::Qcow => Some("qcow"),
        DiskFormat::Qcow2 => Some("qcow2"),
        DiskFormat::Vhd => Some("vpc"),
        DiskFormat::Qed => Some("qed"),
        DiskFormat::Empty => None,
    }
}

fn disk(
    index: usize,
    d: &DiskSpec,
    a: &mut Argv,
    files: &mut Vec<PathBuf>,
) -> Result<(), ArgsError> {
    let err = |reason: String| ArgsError::Disk {
        index,
        vdev: d.vdev.clone(),
        reason,
    };
    let slot = slot(&d.vdev).map_err(err)?;
    let cdrom = d.devtype == DiskDevtype::Cdrom;
    let read_only = d.access == DiskAccess::ReadOnly;
    if cdrom {
        if matches!(slot, Slot::Virtio) {
            return Err(err(
                "a CD-ROM drive is emulated on IDE here: use hda to hdd (e.g. hdc:cdrom)"
                    .to_owned(),
            ));
        }
        if !read_only {
            return Err(err(
                "access = rw: a CD-ROM drive is read-only (leave access out)".to_owned(),
            ));
        }
    } else {
        if d.target.is_empty() {
            return Err(err(
                "a disk needs a target (only a CD-ROM drive may be empty)".to_owned(),
            ));
        }
        if read_only && matches!(slot, Slot::Ide { .. }) {
            return Err(err(
                "QEMU's IDE disks cannot be read-only: use an xvdX vdev (virtio) for a read-only \
                 disk, or devtype=cdrom"
                    .to_owned(),
            ));
        }
    }
    let id = &d.vdev;
    let mut drive = OsString::from(format!("if=none,id=drive-{id}"));
    if let Some(format) = format_driver(d.format).filter(|_| !d.target.is_empty()) {
        if !Path::new(&d.target).is_absolute() {
            return Err(err(format!(
                "target {}: not an absolute path (QEMU runs in the daemon's directory, not yours)",
                quoted(&d.target)
            )));
        }
        let target = PathBuf::from(&d.target);
        drive.push(",file=");
        drive.push(esc_path(&target));
        drive.push(format!(",format={format}"));
        files.push(target);
    }
    if cdrom {
        drive.push(",media=cdrom");
    }
    if read_only {
        drive.push(",readonly=on");
    }
    a.opt("-drive", drive);
    let device = match slot {
        Slot::Virtio => format!("virtio-blk-pci,drive=drive-{id},id={id}"),
        Slot::Ide { bus, unit } => {
            let kind = if cdrom { "ide-cd" } else { "ide-hd" };
            format!("{kind},bus=ide.{bus},unit={unit},drive=drive-{id},id={id}")
        }
    };
    a.opt("-device", device);
    Ok(())
}

fn disks(cfg: &DomainConfig, a: &mut Argv, files: &mut Vec<PathBuf>) -> Result<(), ArgsError> {
    for (i, d) in cfg.disks.iter().enumerate() {
        if let Some(first) = cfg.disks[..i].iter().position(|e| e.vdev == d.vdev) {
            return Err(ArgsError::Disk {
                index: i,
                vdev: d.vdev.clone(),
                reason: format!("vdev already used by disk {first}"),
            });
        }
        disk(i, d, a, files)?;
    }
    Ok(())
}

/// FNV-1a, 64 bits: stable across Rust versions, unlike `DefaultHasher`.
fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `00:16:3e` (Xen's OUI) and three bytes of a hash of (name, index).
pub fn default_mac(name: &str, index: usize) -> String {
    let index = u32::try_from(index).unwrap_or(u32::MAX);
    let h = fnv1a(
        name.bytes()
            .chain(std::iter::once(0))
            .chain(index.to_le_bytes()),
    );
    let [b0, b1, b2, ..] = h.to_le_bytes();
    format!("00:16:3e:{b0:02x}:{b1:02x}:{b2:02x}")
}

fn nic_model(model: Option<&str>) -> Result<&'static str, String> {
    Ok(match model {
        None | Some("virtio" | "virtio-net") => "virtio-net-pci",
        Some("e1000") => "e1000",
        Some("rtl8139") => "rtl8139",
        Some("ne2k_pci") => "ne2k_pci",
        Some("pcnet") => "pcnet",
        Some(_) => {
            return Err(
                "unknown NIC model (e1000, rtl8139, virtio, virtio-net, ne2k_pci, pcnet)"
                    .to_owned(),
            )
        }
    })
}

/// A name Linux takes for an interface, safe in a QEMU option.
fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_IFNAME {
        return Err(format!(
            "an interface name has 1 to {MAX_IFNAME} characters"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        || name == "."
        || name == ".."
    {
        return Err("an interface name here is letters, digits, `.', `-' and `_'".to_owned());
    }
    Ok(())
}

fn vif(
    cfg: &DomainConfig,
    opts: &LaunchOptions,
    index: usize,
    v: &VifSpec,
    a: &mut Argv,
) -> Result<(String, Option<TapDevice>), ArgsError> {
    let err = |param: String, reason: &str| ArgsError::Vif {
        index,
        param,
        reason: reason.to_owned(),
    };
    let refusals: [(&str, &Option<String>, &str); 4] = [
        (
            "ip",
            &v.ip,
            "the guest sets its own address; gang runs no hotplug script to filter it",
        ),
        ("rate", &v.rate, "gang does not limit a vif's rate"),
        (
            "script",
            &v.script,
            "gang runs no hotplug scripts: it attaches a vif with bridge= to the bridge itself",
        ),
        (
            "backend",
            &v.backend,
            "gang has no driver domains: the host is every vif's backend",
        ),
    ];
    for (key, value, reason) in refusals {
        if let Some(value) = value {
            return Err(err(format!("{key}={value}"), reason));
        }
    }
    if let Some((key, value)) = v.other.first() {
        return Err(err(
            format!("{key}={value}"),
            "gang cannot honour this vif parameter",
        ));
    }
    let model = nic_model(v.model.as_deref()).map_err(|r| {
        err(
            format!("model={}", v.model.as_deref().unwrap_or_default()),
            &r,
        )
    })?;
    let mac = v
        .mac
        .clone()
        .unwrap_or_else(|| default_mac(&cfg.name, index));
    let netdev = format!("net{index}");
    let tap = match &v.bridge {
        Some(bridge) => {
            check_ifname(bridge).map_err(|r| err(format!("bridge={bridge}"), &r))?;
            let name = match &v.vifname {
                Some(n) => {
                    check_ifname(n).map_err(|r| err(format!("vifname={n}"), &r))?;
                    n.clone()
                }
                None => {
                    let n = format!("vif{}.{index}", opts.domid);
                    check_ifname(&n).map_err(|r| {
                        err(
                            format!("bridge={bridge}"),
                            &format!("the tap device's name {n}: {r}; set a shorter vifname"),
                        )
                    })?;
                    n
                }
            };
            a.opt(
                "-netdev",
                format!("tap,id={netdev},ifname={name},script=no,downscript=no"),
            );
            Some(TapDevice {
                name,
                bridge: bridge.clone(),
                mac: mac.clone(),
            })
        }
        None => {
            if let Some(n) = &v.vifname {
                return Err(err(
                    format!("vifname={n}"),
                    "names a tap device, which gang makes only for a vif with bridge= \
                     (without it the vif is QEMU's user-mode network)",
                ));
            }
            a.opt("-netdev", format!("user,id={netdev}"));
            None
        }
    };
    a.opt(
        "-device",
        format!("{model},netdev={netdev},mac={mac},id=nic{index}"),
    );
    Ok((mac, tap))
}

fn vifs(
    cfg: &DomainConfig,
    opts: &LaunchOptions,
    a: &mut Argv,
) -> Result<Vec<TapDevice>, ArgsError> {
    // A configuration stored before `vif_specs` existed has only the text.
    let specs: Cow<'_, [VifSpec]> = if cfg.vif_specs.len() == cfg.vifs.len() {
        Cow::Borrowed(&cfg.vif_specs)
    } else {
        let mut parsed = Vec::with_capacity(cfg.vifs.len());
        for (index, text) in cfg.vifs.iter().enumerate() {
            parsed.push(VifSpec::parse(text).map_err(|e| ArgsError::Vif {
                index,
                param: text.clone(),
                reason: e.to_string(),
            })?);
        }
        Cow::Owned(parsed)
    };
    let mut macs: Vec<String> = Vec::new();
    let mut taps: Vec<TapDevice> = Vec::new();
    for (index, v) in specs.iter().enumerate() {
        let (mac, tap) = vif(cfg, opts, index, v, a)?;
        if let Some(first) = macs.iter().position(|m| m.eq_ignore_ascii_case(&mac)) {
            return Err(ArgsError::Vif {
                index,
                param: format!("mac={mac}"),
                reason: format!("the mac address of vif {first} too"),
            });
        }
        macs.push(mac);
        if let Some(tap) = tap {
            if taps.iter().any(|t| t.name == tap.name) {
                return Err(ArgsError::Vif {
                    index,
                    param: format!("vifname={}", tap.name),
                    reason: "a tap device name used by another vif".to_owned(),
                });
            }
            taps.push(tap);
        }
    }
    Ok(taps)
}

/// `vnclisten` and `vncdisplay` to QEMU's `HOST:DISPLAY`.
fn vnc_address(cfg: &DomainConfig) -> Result<(String, u32), ArgsError> {
    let listen = cfg.vnclisten.as_deref().unwrap_or("127.0.0.1");
    let bad = |reason: &str| refused("vnclisten", quoted(listen), reason);
    if listen.is_empty()
        || listen
            .chars()
            .any(|c| c == ',' || c.is_whitespace() || c.is_control())
    {
        return Err(bad("not an address"));
    }
    let parse_display = |d: &str| {
        d.parse::<u32>()
            .map_err(|_| bad("the display after `:' is not a number"))
    };
    // ADDRESS, ADDRESS:DISPLAY, an IPv6 address bare or as [ADDRESS][:DISPLAY].
    let (host, display) = if let Some(rest) = listen.strip_prefix('[') {
        let (addr, tail) = rest.split_once(']').ok_or_else(|| bad("`[' without `]'"))?;
        let display = match tail {
            "" => None,
            t => {
                Some(parse_display(t.strip_prefix(':').ok_or_else(|| {
                    bad("want [ADDRESS] or [ADDRESS]:DISPLAY")
                })?)?)
            }
        };
        (format!("[{addr}]"), display)
    } else {
        match listen.matches(':').count() {
            0 => (listen.to_owned(), None),
            1 => {
                let (h, d) = listen.split_once(':').unwrap_or((listen, ""));
                (h.to_owned(), Some(parse_display(d)?))
            }
            _ => (format!("[{listen}]"), None),
        }
    };
    let display = match (display, cfg.vncdisplay) {
        (Some(a), Some(b)) if a != b => {
            return Err(bad(&format!(
                "its display {a} contradicts vncdisplay = {b}"
            )))
        }
        (Some(d), _) | (None, Some(d)) => d,
        (None, None) => 0,
    };
    if display > MAX_VNC_DISPLAY {
        return Err(refused(
            "vncdisplay",
            display.to_string(),
            format!("at most {MAX_VNC_DISPLAY} (VNC's port is 5900 + the display)"),
        ));
    }
    Ok((host, display))
}

/// The graphics card for VNC: `-device` value, or `None` for `vga = "none"`.
fn vga_device(cfg: &DomainConfig) -> Result<Option<String>, ArgsError> {
    let cirrus = match cfg.vga.as_deref() {
        Some("stdvga") => false,
        Some("cirrus") => true,
        Some("none") => return Ok(None),
        Some(v @ "qxl") => {
            return Err(refused(
                "vga",
                quoted(v),
                "QXL is SPICE's graphics card and gang offers VNC only: use vga = \"stdvga\"",
            ))
        }
        Some(v) => {
            return Err(refused(
                "vga",
                quoted(v),
                "unknown graphics card (stdvga, cirrus, none)",
            ))
        }
        None => cfg.stdvga == Some(false),
    };
    let mut device = String::from(if cirrus { "cirrus-vga" } else { "VGA" });
    if let Some(mb) = cfg.videoram {
        if cirrus && !matches!(mb, 4 | 8 | 16) {
            return Err(refused(
                "videoram",
                mb.to_string(),
                "QEMU's Cirrus card has 4, 8 or 16 MB",
            ));
        }
        if !cirrus && !(1..=256).contains(&mb) {
            return Err(refused(
                "videoram",
                mb.to_string(),
                "QEMU's standard VGA has 1 to 256 MB",
            ));
        }
        device.push_str(&format!(",vgamem_mb={mb}"));
    }
    Ok(Some(device))
}

/// `-display`, `-vnc`, the graphics card, `-k`; returns the VNC password.
fn display(cfg: &DomainConfig, a: &mut Argv) -> Result<Option<String>, ArgsError> {
    if cfg.sdl == Some(true) {
        return Err(refused(
            "sdl",
            flag(true),
            "a gang host has no display for QEMU's window; use vnc = 1",
        ));
    }
    let vnc = cfg.vnc == Some(true);
    if vnc && cfg.nographic == Some(true) {
        return Err(refused(
            "nographic",
            flag(true),
            "contradicts vnc = 1 (no graphics card, nothing to show)",
        ));
    }
    a.opt("-display", "none");
    if !vnc {
        return Ok(None);
    }
    let (host, display) = vnc_address(cfg)?;
    let mut spec = format!("{host}:{display}");
    if cfg.vncunused {
        spec.push_str(&format!(",to={}", display.max(99)));
    }
    let password = cfg.vncpasswd.clone().filter(|p| !p.is_empty());
    if password.is_some() {
        spec.push_str(",password=on");
    }
    a.opt("-vnc", spec);
    if let Some(device) = vga_device(cfg)? {
        a.opt("-device", device);
    }
    if let Some(k) = &cfg.keymap {
        let ok = !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'-');
        if !ok {
            return Err(refused(
                "keymap",
                quoted(k),
                "not a keymap name (e.g. en-us, de)",
            ));
        }
        a.opt("-k", k.as_str());
    }
    Ok(password)
}

/// The QEMU command line for `cfg`, or why QEMU cannot run it.
pub fn launch(
    cfg: &DomainConfig,
    paths: &QemuPaths,
    opts: &LaunchOptions,
) -> Result<Launch, ArgsError> {
    check_kind(cfg)?;
    // Every refusal is reported, not only the first: a user fixing an
    // imported config sees the whole list at once.
    let mut errors: Vec<ArgsError> = cfg
        .unsupported
        .iter()
        .map(|key| ArgsError::Unsupported {
            key: key.clone(),
            reason: unsupported_reason(key).to_owned(),
        })
        .collect();
    let binary = keep(&mut errors, binary(cfg));
    if let Some(user) = &opts.run_as {
        keep(&mut errors, check_user(user));
    }
    let mut a = Argv::default();
    let mut files = Vec::new();
    a.opt(
        "-name",
        format!("guest={},debug-threads=on", esc(&cfg.name)),
    );
    a.push("-nodefaults");
    a.push("-no-user-config");
    a.push("-S");
    a.push("-no-shutdown");
    a.opt("-action", "reboot=shutdown,panic=pause");
    keep(&mut errors, platform(cfg, opts, &mut a));
    let balloon_target_mb = keep(&mut errors, cpus_and_memory(cfg, &mut a)).flatten();
    keep(&mut errors, control_and_console(cfg, paths, &mut a));
    keep(&mut errors, boot(cfg, &mut a, &mut files));
    keep(&mut errors, disks(cfg, &mut a, &mut files));
    let taps = keep(&mut errors, vifs(cfg, opts, &mut a)).unwrap_or_default();
    let vnc_password = keep(&mut errors, display(cfg, &mut a)).flatten();
    if cfg.localtime == Some(true) {
        a.opt("-rtc", "base=localtime");
    }
    match &opts.run_as {
        None => a.opt(
            "-sandbox",
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        ),
        Some(user) => {
            a.opt(
                "-sandbox",
                "on,obsolete=deny,spawn=deny,resourcecontrol=deny",
            );
            a.opt("-runas", user.as_str());
        }
    }
    let binary = match (binary, errors.len()) {
        (Some(b), 0) => b,
        (_, 1) => return Err(errors.remove(0)),
        _ => return Err(ArgsError::Several(errors)),
    };
    a.opt("-msg", "timestamp=on");
    Ok(Launch {
        binary,
        args: a.args,
        taps,
        vnc_password,
        balloon_target_mb,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(esc("a,b,,c"), "a,,b,,,,c");
        assert_eq!(esc_path(Path::new("/x,y")), OsString::from("/x,,y"));
        let raw = OsString::from_vec(b"/a\xff,b".to_vec());
        assert_eq!(
            esc_path(Path::new(&raw)).as_bytes(),
            b"/a\xff,,b".as_slice()
        );
    }

    #[test]
    fn default_macs_are_stable_and_distinct() {
        let a = default_mac("web", 0);
        assert_eq!(a, default_mac("web", 0));
        assert_ne!(a, default_mac("web", 1));
        assert_ne!(a, default_mac("db", 0));
        assert!(a.starts_with("00:16:3e:"));
        assert_eq!(gang_config::check_mac(&a), Ok(()));
        // Fixed forever: a guest's MAC must not change with a new gang.
        assert_eq!(default_mac("web", 0), "00:16:3e:33:c1:50");
    }

    #[test]
    fn slots() {
        assert!(matches!(slot("xvda"), Ok(Slot::Virtio)));
        assert!(matches!(slot("vdab"), Ok(Slot::Virtio)));
        assert!(matches!(slot("hdd"), Ok(Slot::Ide { bus: 1, unit: 1 })));
        for bad in ["xvda1", "xvd", "hde", "sda", "fd0", "xvdA"] {
            assert!(slot(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ifnames() {
        assert_eq!(check_ifname("vif12345.0"), Ok(()));
        assert!(check_ifname("vif1234567890.12").is_err());
        assert!(check_ifname("").is_err());
        assert!(check_ifname("a,b").is_err());
        assert!(check_ifname("..").is_err());
    }
}
