//! `gang guest-image linux`: a Linux guest for `type = "hvm"` domains, built
//! on the machine that runs gang from Debian's packages and gang's own init
//! and workloads.
//!
//! [`build_linux`] asks apt for the kernel behind [`KERNEL_METAPACKAGE`] and
//! for [`BUSYBOX_PACKAGE`], downloads their `.deb`s into a cache directory
//! (`apt-get download`; a `.deb` already there is reused), unpacks them
//! (`dpkg-deb -x`) into a temporary directory and writes into the output
//! directory:
//!
//! * `vmlinuz`: the kernel, as packaged;
//! * `initrd.img`: an uncompressed `newc` cpio archive with busybox,
//!   `/bin/gang-guest` ([`gang_guests::LINUX_USERLAND`]), the drivers of
//!   [`GUEST_MODULES`] with their dependencies (worked out from each
//!   module's `.modinfo` section, as the package ships no `modules.dep`) and
//!   [`INIT_SCRIPT`] as `/init`;
//! * `linux.cfg`: an example domain configuration;
//! * `.gang-image`: a stamp naming the package versions and a hash of what
//!   gang puts in the image. While it matches, a new build does nothing.
//!
//! Every file is written under a temporary name and renamed into place, and
//! the stamp is written last, so an interrupted build never leaves an image
//! that passes for complete.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where [`ImageOptions::default`] keeps the downloaded `.deb`s.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/gang/debs";
/// The Debian metapackage that names the current cloud kernel.
pub const KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";
/// The Debian package with a static busybox.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
/// Where [`cached_test_image`] builds.
pub const TEST_IMAGE_DIR: &str = "/var/tmp/gang-test-linux-image";

/// The drivers the guest loads (with their dependencies), by module name:
/// virtio over PCI (disk, network, SCSI, console, balloon, entropy), QEMU's
/// pvpanic devices (ISA/ACPI and PCI), the ACPI power button and the event
/// device acpid reads it from, and IDE disks and CD-ROMs. A name the kernel
/// does not have as a module is left out (with a progress line).
pub const GUEST_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_scsi",
    "virtio_console",
    "virtio_balloon",
    "virtio_rng",
    "pvpanic_mmio",
    "pvpanic_pci",
    "button",
    "evdev",
    "ata_piix",
    "ata_generic",
    "sd_mod",
    "sr_mod",
];

/// Module parameters, by module name.
const MODULE_PARAMS: &[(&str, &str)] = &[
    // Disks are found before /init lists them.
    ("scsi_mod", "scan=sync"),
];

/// The workloads `/init` knows (`gang.workload=` on the kernel command
/// line), with a line about each.
pub const WORKLOADS: &[(&str, &str)] = &[
    ("shell", "an interactive shell on the console (the default)"),
    (
        "barrier",
        "a thread per vCPU at a spin barrier (\"gang-guest: barrier N rounds/s\")",
    ),
    (
        "pipes",
        "process pairs ping-ponging through pipes (\"gang-guest: pipes N msgs/s\")",
    ),
    ("panic", "a kernel panic (QEMU's pvpanic device reports it)"),
    ("poweroff", "powers off at once"),
    ("reboot", "reboots at once"),
];

/// `/init` of the initramfs: a busybox shell script run as PID 1.
pub const INIT_SCRIPT: &str = r#"#!/bin/busybox sh
# /init of gang's Linux guest (gang guest-image linux), PID 1.
export PATH=/bin HOME=/root TERM=vt100
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
hostname gang-guest

workload=shell
quiet=yes
for arg in $(cat /proc/cmdline); do
    case $arg in
    gang.workload=*) workload=${arg#gang.workload=} ;;
    loglevel=* | debug | ignore_loglevel) quiet=no ;;
    esac
done

# Drivers, dependencies first (the order gang worked out from the modules'
# .modinfo). A driver whose device is absent loads all the same and idles;
# one that fails to load is named in the kernel log.
while read -r ko params; do
    insmod "$ko" $params 2>/dev/null || echo "gang-guest: insmod $ko failed" >/dev/kmsg
done </lib/modules/gang-load-order

# From now on only the kernel's warnings and worse reach the console
# (unless the command line asks for a log level): the rest is in dmesg.
[ $quiet = yes ] && echo 5 >/proc/sys/kernel/printk

echo "gang-guest: up, $(grep -c ^processor /proc/cpuinfo) cpus"
disks=
for d in /sys/block/*; do
    n=${d##*/}
    case $n in '*' | loop* | ram* | zram* | nbd*) ;; *) disks="$disks $n" ;; esac
done
echo "gang-guest: disks$disks"
nics=
for d in /sys/class/net/*; do
    n=${d##*/}
    case $n in '*' | lo) ;; *) nics="$nics $n" ;; esac
done
echo "gang-guest: nics$nics"

# The ACPI power button (QMP system_powerdown) runs
# /etc/acpi/PWRF/00000080, which powers off.
acpid

echo "gang-guest: workload $workload"
case $workload in
shell)
    echo "gang-guest: a shell on the console; leaving it powers off"
    setsid cttyhack sh
    ;;
barrier) gang-guest barrier ;;
pipes) gang-guest pipes ;;
panic)
    echo "gang-guest: panicking"
    echo c >/proc/sysrq-trigger
    ;;
poweroff)
    echo "gang-guest: powering off"
    sync
    poweroff -f
    ;;
reboot)
    echo "gang-guest: rebooting"
    sync
    reboot -f
    ;;
*)
    echo "gang-guest: no workload '$workload' (shell barrier pipes panic poweroff reboot); a shell instead"
    setsid cttyhack sh
    ;;
esac
echo "gang-guest: workload $workload ended (status $?), powering off"
sync
poweroff -f
while :; do sleep 3600; done
"#;

/// What busybox acpid runs on a power-button press.
const POWER_BUTTON_SCRIPT: &str = "#!/bin/sh
echo \"gang-guest: power button pressed, powering off\" >/dev/console
sync
poweroff -f
";

/// Where in the initramfs the load order is (one `PATH [PARAMS]` a line).
const LOAD_ORDER: &str = "lib/modules/gang-load-order";

/// The stamp's file name in the output directory.
const STAMP: &str = ".gang-image";
/// Bumped when the image's layout changes in a way the hash does not see.
const FORMAT: u32 = 1;

/// A built image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinuxImage {
    /// The kernel (absolute path).
    pub kernel: PathBuf,
    /// The initramfs (absolute path).
    pub initrd: PathBuf,
    /// The kernel's release, as `uname -r` prints it in the guest.
    pub kernel_version: String,
    /// An example `type = "hvm"` domain configuration using the image.
    pub example_config: PathBuf,
}

/// How [`build_linux`] works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageOptions {
    /// Where the downloaded `.deb`s are kept and reused from.
    pub cache_dir: PathBuf,
    /// Build even if the output directory's stamp matches.
    pub rebuild: bool,
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions {
            cache_dir: PathBuf::from(DEFAULT_CACHE_DIR),
            rebuild: false,
        }
    }
}

/// Why an image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No `apt-get` or `apt-cache`.
    #[error("{tool} not found (gang guest-image linux needs Debian's apt)")]
    NoApt {
        /// The program that was not found.
        tool: &'static str,
    },
    /// No `dpkg-deb`.
    #[error("dpkg-deb not found (gang guest-image linux needs it to unpack Debian packages; Debian's package: dpkg)")]
    NoDpkgDeb,
    /// apt does not know a package, even after `apt-get update`.
    #[error(
        "apt knows no package {package}, even after apt-get update \
         (does /etc/apt/sources.list or /etc/apt/sources.list.d name Debian's main archive \
         for this machine's architecture?){}",
        tail_lines(.output)
    )]
    UnknownPackage {
        /// The package.
        package: String,
        /// apt-cache's last lines.
        output: String,
    },
    /// `apt-get update` failed.
    #[error(
        "apt-get update failed ({status}; it needs root and network access to Debian's mirror){}",
        tail_lines(.output)
    )]
    AptUpdate {
        /// How it ended.
        status: String,
        /// Its last lines.
        output: String,
    },
    /// `apt-get download` failed.
    #[error(
        "could not download {package} {version} with apt-get download ({status}; it needs network \
         access to Debian's mirror){}",
        tail_lines(.output)
    )]
    Download {
        /// The package.
        package: String,
        /// Its version.
        version: String,
        /// How apt-get ended.
        status: String,
        /// apt-get's last lines.
        output: String,
    },
    /// `dpkg-deb -x` failed.
    #[error("could not unpack {deb} with dpkg-deb -x ({status}; delete it to download it again){}", tail_lines(.output), deb = .deb.display())]
    Unpack {
        /// The package file.
        deb: PathBuf,
        /// How dpkg-deb ended.
        status: String,
        /// Its last lines.
        output: String,
    },
    /// A package lacks something the image needs.
    #[error("package {package} has no {what}")]
    PackageContent {
        /// The package.
        package: String,
        /// What is missing.
        what: String,
    },
    /// A kernel module could not be used.
    #[error("kernel module {module}: {reason}")]
    Module {
        /// The module.
        module: String,
        /// Why.
        reason: String,
    },
    /// A file or directory operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The error.
        source: io::Error,
    },
}

/// `":\n"` and the last lines of a command's output, or nothing.
fn tail_lines(output: &str) -> String {
    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = &lines[lines.len().saturating_sub(8)..];
    format!(":\n  {}", tail.join("\n  "))
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ImageError {
    let what = what.into();
    move |source| ImageError::Io { what, source }
}

// ---------------------------------------------------------------------------
// apt

/// A package's candidate version, from `apt-cache show`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    package: String,
    version: String,
    arch: String,
    depends: String,
}

impl Candidate {
    /// The name `apt-get download` gives the file.
    fn deb_name(&self) -> String {
        format!(
            "{}_{}_{}.deb",
            self.package,
            self.version.replace(':', "%3a"),
            self.arch
        )
    }
}

/// The first record of `apt-cache show` output.
fn parse_apt_show(text: &str) -> Option<Candidate> {
    let mut fields = HashMap::new();
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if let Some((key, value)) = line.split_once(": ") {
            fields.insert(key, value.trim());
        }
    }
    Some(Candidate {
        package: (*fields.get("Package")?).to_owned(),
        version: (*fields.get("Version")?).to_owned(),
        arch: (*fields.get("Architecture")?).to_owned(),
        depends: fields
            .get("Depends")
            .map_or(String::new(), |d| (*d).to_owned()),
    })
}

/// The kernel package a metapackage's `Depends` names.
fn kernel_package(depends: &str) -> Option<String> {
    depends
        .split([',', '|'])
        .map(|d| d.split_whitespace().next().unwrap_or(""))
        .find(|name| name.starts_with("linux-image-"))
        .map(str::to_owned)
}

/// Runs an apt tool with the C locale (its output is parsed).
fn run_apt(tool: &'static str, args: &[&str], cwd: Option<&Path>) -> Result<Output, ImageError> {
    let mut cmd = Command::new(tool);
    cmd.args(args).env("LC_ALL", "C");
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    cmd.output().map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ImageError::NoApt { tool },
        _ => ImageError::Io {
            what: format!("running {tool}"),
            source: e,
        },
    })
}

fn status_text(out: &Output) -> String {
    match out.status.code() {
        Some(c) => format!("exit status {c}"),
        None => out.status.to_string(),
    }
}

fn both_outputs(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Talks to apt, running `apt-get update` at most once, when a package is
/// unknown or cannot be downloaded (stale lists).
struct Apt<'p> {
    updated: bool,
    progress: &'p mut dyn FnMut(&str),
}

impl Apt<'_> {
    fn update(&mut self) -> Result<(), ImageError> {
        (self.progress)("updating apt's package lists (apt-get update)");
        let out = run_apt("apt-get", &["update"], None)?;
        self.updated = true;
        if !out.status.success() {
            return Err(ImageError::AptUpdate {
                status: status_text(&out),
                output: both_outputs(&out),
            });
        }
        Ok(())
    }

    fn candidate(&mut self, package: &str) -> Result<Candidate, ImageError> {
        loop {
            let out = run_apt("apt-cache", &["show", "--no-all-versions", package], None)?;
            if out.status.success() {
                if let Some(c) = parse_apt_show(&String::from_utf8_lossy(&out.stdout)) {
                    return Ok(c);
                }
            }
            if self.updated {
                return Err(ImageError::UnknownPackage {
                    package: package.to_owned(),
                    output: both_outputs(&out),
                });
            }
            self.update()?;
        }
    }

    /// The `.deb` of `c` in `cache`, downloaded unless already there.
    fn fetch(&mut self, c: &Candidate, cache: &Path) -> Result<PathBuf, ImageError> {
        let path = cache.join(c.deb_name());
        if fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() > 0) {
            (self.progress)(&format!("using {}", path.display()));
            return Ok(path);
        }
        fs::create_dir_all(cache).map_err(io_err(format!("creating {}", cache.display())))?;
        let partial = cache.join(format!(".partial-{}", std::process::id()));
        let _ = fs::remove_dir_all(&partial);
        fs::create_dir(&partial).map_err(io_err(format!("creating {}", partial.display())))?;
        let _cleanup = RemoveOnDrop(partial.clone());
        (self.progress)(&format!(
            "downloading {} {} into {}",
            c.package,
            c.version,
            cache.display()
        ));
        let spec = format!("{}={}", c.package, c.version);
        let out = run_apt("apt-get", &["download", &spec], Some(&partial))?;
        let got = fs::read_dir(&partial)
            .map_err(io_err(format!("reading {}", partial.display())))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"));
        match got {
            Some(deb) if out.status.success() => {
                fs::rename(&deb, &path).map_err(io_err(format!(
                    "moving {} to {}",
                    deb.display(),
                    path.display()
                )))?;
                Ok(path)
            }
            _ => Err(ImageError::Download {
                package: c.package.clone(),
                version: c.version.clone(),
                status: status_text(&out),
                output: both_outputs(&out),
            }),
        }
    }
}

/// Removes a directory tree when dropped.
#[derive(Debug)]
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Unpacks `deb` into `dir` with `dpkg-deb -x`.
fn unpack(deb: &Path, dir: &Path) -> Result<(), ImageError> {
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(dir)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ImageError::NoDpkgDeb,
            _ => ImageError::Io {
                what: "running dpkg-deb".to_owned(),
                source: e,
            },
        })?;
    if !out.status.success() {
        return Err(ImageError::Unpack {
            deb: deb.to_owned(),
            status: status_text(&out),
            output: both_outputs(&out),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// kernel modules

/// A module's name as the kernel spells it: no directory, no `.ko`, `-`
/// as `_`.
pub fn module_name(file_or_name: &str) -> String {
    let base = file_or_name.rsplit('/').next().unwrap_or(file_or_name);
    base.strip_suffix(".ko").unwrap_or(base).replace('-', "_")
}

/// The `key=value` strings of a module's `.modinfo` section (a 64-bit
/// little-endian ELF relocatable object, as x86-64 modules are).
pub fn modinfo(ko: &[u8]) -> Result<Vec<(String, String)>, String> {
    let u16_at = |o: usize| -> Result<usize, String> {
        ko.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
            .ok_or_else(|| format!("truncated at byte {o}"))
    };
    let u32_at = |o: usize| -> Result<usize, String> {
        ko.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| format!("truncated at byte {o}"))
    };
    let u64_at = |o: usize| -> Result<usize, String> {
        ko.get(o..o + 8)
            .map(|b| {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                u64::from_le_bytes(a) as usize
            })
            .ok_or_else(|| format!("truncated at byte {o}"))
    };
    if ko.get(..6) != Some(b"\x7fELF\x02\x01") {
        return Err("not a 64-bit little-endian ELF file".to_owned());
    }
    let shoff = u64_at(0x28)?;
    let shentsize = u16_at(0x3a)?;
    let shnum = u16_at(0x3c)?;
    let shstrndx = u16_at(0x3e)?;
    if shentsize < 64 {
        return Err(format!("section header size {shentsize}"));
    }
    let section = |i: usize| -> Result<(usize, &[u8]), String> {
        let h = shoff
            .checked_add(i.checked_mul(shentsize).ok_or("overflow")?)
            .ok_or("overflow")?;
        let name = u32_at(h)?;
        let (off, size) = (u64_at(h + 24)?, u64_at(h + 32)?);
        let data = off
            .checked_add(size)
            .and_then(|end| ko.get(off..end))
            .ok_or_else(|| format!("section {i} lies outside the file"))?;
        Ok((name, data))
    };
    let (_, names) = section(shstrndx)?;
    for i in 0..shnum {
        let (name_at, data) = section(i)?;
        let name = names.get(name_at..).unwrap_or_default();
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        if name != b".modinfo" {
            continue;
        }
        return Ok(data
            .split(|&b| b == 0)
            .filter_map(|s| {
                let s = String::from_utf8_lossy(s);
                let (k, v) = s.split_once('=')?;
                Some((k.to_owned(), v.to_owned()))
            })
            .collect());
    }
    Err("no .modinfo section".to_owned())
}

/// The modules a module depends on (its `.modinfo` `depends=`), by name.
pub fn module_depends(ko: &[u8]) -> Result<Vec<String>, String> {
    Ok(modinfo(ko)?
        .into_iter()
        .filter(|(k, _)| k == "depends")
        .flat_map(|(_, v)| {
            v.split(',')
                .filter(|d| !d.trim().is_empty())
                .map(|d| module_name(d.trim()))
                .collect::<Vec<_>>()
        })
        .collect())
}

/// The modules to load for `wanted`, dependencies first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOrder {
    /// Every module to load, each after the modules it depends on.
    pub order: Vec<String>,
    /// Wanted modules the kernel does not have.
    pub missing: Vec<String>,
}

/// Orders `wanted` and their dependencies so that each module comes after
/// the ones it depends on; `depends(name)` gives a module's dependencies,
/// or `None` if there is no such module. A wanted module that does not exist
/// is listed in [`LoadOrder::missing`]; a dependency that does not exist, or
/// a cycle, is an error.
pub fn load_order(
    wanted: &[&str],
    mut depends: impl FnMut(&str) -> Result<Option<Vec<String>>, ImageError>,
) -> Result<LoadOrder, ImageError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    let mut marks: HashMap<String, Mark> = HashMap::new();
    let mut result = LoadOrder {
        order: Vec::new(),
        missing: Vec::new(),
    };
    for &want in wanted {
        let want = module_name(want);
        if marks.contains_key(&want) {
            continue;
        }
        let Some(deps) = depends(&want)? else {
            result.missing.push(want);
            continue;
        };
        // Depth-first, iteratively: (module, its dependencies, next index).
        let mut stack = vec![(want.clone(), deps, 0usize)];
        marks.insert(want, Mark::Visiting);
        while let Some((name, deps, next)) = stack.last_mut() {
            let Some(dep) = deps.get(*next).cloned() else {
                marks.insert(name.clone(), Mark::Done);
                result.order.push(name.clone());
                stack.pop();
                continue;
            };
            *next += 1;
            let parent = name.clone();
            match marks.get(&dep) {
                Some(Mark::Done) => {}
                Some(Mark::Visiting) => {
                    return Err(ImageError::Module {
                        module: dep,
                        reason: format!("a dependency cycle through {parent}"),
                    })
                }
                None => {
                    let Some(dep_deps) = depends(&dep)? else {
                        return Err(ImageError::Module {
                            module: dep,
                            reason: format!(
                                "{parent} depends on it but the kernel has no such module"
                            ),
                        });
                    };
                    marks.insert(dep.clone(), Mark::Visiting);
                    stack.push((dep, dep_deps, 0));
                }
            }
        }
    }
    Ok(result)
}

/// Every `.ko` under `dir`, by module name, as paths relative to `base`.
fn index_modules(
    base: &Path,
    dir: &Path,
    index: &mut BTreeMap<String, PathBuf>,
) -> Result<(), ImageError> {
    let entries = fs::read_dir(dir).map_err(io_err(format!("reading {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_err(format!("reading {}", dir.display())))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(io_err(format!("reading {}", path.display())))?;
        if kind.is_dir() {
            index_modules(base, &path, index)?;
        } else if path.extension().is_some_and(|e| e == "ko") {
            let rel = path.strip_prefix(base).unwrap_or(&path).to_owned();
            index.insert(module_name(&path.to_string_lossy()), rel);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// newc cpio

/// Writes a `newc` ("new ASCII", `070701`) cpio archive, the format of
/// Linux's initramfs, in memory. Owner root, mtime 0.
#[derive(Debug, Default)]
struct Newc {
    out: Vec<u8>,
    ino: u32,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl Newc {
    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            u32::try_from(data.len()).unwrap_or(u32::MAX),
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            u32::try_from(name.len() + 1).unwrap_or(u32::MAX),
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, S_IFDIR | 0o755, 2, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, S_IFREG | perm, 1, (0, 0), data);
    }

    fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
    }

    fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, S_IFCHR | perm, 1, (major, minor), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[]);
        self.out
    }
}

/// Every ancestor directory of `path` (relative, `/`-separated), outermost
/// first, not `path` itself.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

// ---------------------------------------------------------------------------
// the image

/// FNV-1a, 64 bits: a hash whose value is the same on every build of gang.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in (part.len() as u64).to_le_bytes().iter().chain(part.iter()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The hash of everything gang itself puts into the image.
fn content_hash() -> u64 {
    let modules = GUEST_MODULES.join(",");
    let params: Vec<String> = MODULE_PARAMS
        .iter()
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    let params = params.join(",");
    fnv1a(&[
        &FORMAT.to_le_bytes(),
        INIT_SCRIPT.as_bytes(),
        POWER_BUTTON_SCRIPT.as_bytes(),
        gang_guests::LINUX_USERLAND,
        modules.as_bytes(),
        params.as_bytes(),
    ])
}

/// The stamp of an image made from these packages by this gang.
fn stamp(kernel_version: &str, kernel: &Candidate, busybox: &Candidate) -> String {
    format!(
        "gang linux image {FORMAT}\nkernel {kernel_version}\n\
         package {} {}\npackage {} {}\ncontent {:016x}\n",
        kernel.package,
        kernel.version,
        busybox.package,
        busybox.version,
        content_hash()
    )
}

/// The files of an image in `dir`.
fn image_paths(dir: &Path, kernel_version: &str) -> LinuxImage {
    LinuxImage {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        kernel_version: kernel_version.to_owned(),
        example_config: dir.join("linux.cfg"),
    }
}

/// Whether `dir` holds a complete image with this stamp.
fn is_current(dir: &Path, image: &LinuxImage, stamp: &str) -> bool {
    fs::read_to_string(dir.join(STAMP)).is_ok_and(|s| s == stamp)
        && [&image.kernel, &image.initrd, &image.example_config]
            .iter()
            .all(|p| p.is_file())
}

/// Writes `dir/name` through a temporary file and a rename.
fn write_atomically(
    dir: &Path,
    name: &str,
    fill: impl FnOnce(&Path) -> io::Result<()>,
) -> Result<(), ImageError> {
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let target = dir.join(name);
    let result = fill(&tmp)
        .and_then(|()| fs::File::open(&tmp)?.sync_all())
        .and_then(|()| fs::rename(&tmp, &target));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(ImageError::Io {
            what: format!("writing {}", target.display()),
            source: e,
        });
    }
    Ok(())
}

/// The example domain configuration.
fn example_config(image: &LinuxImage) -> String {
    let mut s = format!(
        "# A Linux guest for gang, written by `gang guest-image linux`\n\
         # (kernel {}). Start it with: gang create -c {}\n\
         # (-c attaches to its console; ^] detaches).\n\
         name = \"linux\"\n\
         type = \"hvm\"\n\
         vcpus = 2\n\
         memory = 256\n\
         kernel = \"{}\"\n\
         ramdisk = \"{}\"\n\
         extra = \"console=ttyS0 gang.workload=shell\"\n\
         #\n\
         # The guest's workload is gang.workload= on its command line:\n",
        image.kernel_version,
        image.example_config.display(),
        image.kernel.display(),
        image.initrd.display(),
    );
    for (name, what) in WORKLOADS {
        s.push_str(&format!("#   {name:<9} {what}\n"));
    }
    for (name, _) in &WORKLOADS[1..] {
        s.push_str(&format!(
            "#extra = \"console=ttyS0 gang.workload={name}\"\n"
        ));
    }
    s.push_str(
        "#\n\
         # Run it in a gang cpupool (made with gang cpupool-create):\n\
         #pool = \"Wide\"\n",
    );
    s
}

/// Builds the initramfs from the unpacked packages under `root`.
fn initramfs(
    root: &Path,
    kernel_version: &str,
    modules: &[(String, PathBuf)],
) -> Result<Vec<u8>, ImageError> {
    let busybox_path = root.join("bin/busybox");
    let busybox = fs::read(&busybox_path).map_err(|_| ImageError::PackageContent {
        package: BUSYBOX_PACKAGE.to_owned(),
        what: "bin/busybox".to_owned(),
    })?;
    let mut files: Vec<(String, u32, Vec<u8>)> = vec![
        ("init".to_owned(), 0o755, INIT_SCRIPT.as_bytes().to_vec()),
        ("bin/busybox".to_owned(), 0o755, busybox),
        (
            "bin/gang-guest".to_owned(),
            0o755,
            gang_guests::LINUX_USERLAND.to_vec(),
        ),
        (
            "etc/acpi/PWRF/00000080".to_owned(),
            0o755,
            POWER_BUTTON_SCRIPT.as_bytes().to_vec(),
        ),
    ];
    let mut load_order = String::new();
    let params: HashMap<&str, &str> = MODULE_PARAMS.iter().copied().collect();
    for (name, rel) in modules {
        let inside = format!("lib/modules/{kernel_version}/{}", rel.to_string_lossy());
        let data = fs::read(root.join(format!("lib/modules/{kernel_version}")).join(rel))
            .map_err(io_err(format!("reading module {}", rel.display())))?;
        load_order.push('/');
        load_order.push_str(&inside);
        if let Some(p) = params.get(name.as_str()) {
            load_order.push(' ');
            load_order.push_str(p);
        }
        load_order.push('\n');
        files.push((inside, 0o644, data));
    }
    files.push((LOAD_ORDER.to_owned(), 0o644, load_order.into_bytes()));

    let mut dirs: BTreeSet<String> = [
        "bin", "dev", "etc", "lib", "proc", "root", "run", "sys", "tmp", "var", "var/log",
        "var/run",
    ]
    .iter()
    .map(|d| (*d).to_owned())
    .collect();
    for (path, _, _) in &files {
        dirs.extend(ancestors(path).map(str::to_owned));
    }
    let mut cpio = Newc::default();
    for d in &dirs {
        cpio.dir(d);
    }
    // The kernel opens /dev/console before /init runs (devtmpfs is mounted
    // by /init, over it).
    cpio.char_device("dev/console", 0o600, 5, 1);
    cpio.char_device("dev/null", 0o666, 1, 3);
    cpio.symlink("bin/sh", "busybox");
    for (path, perm, data) in &files {
        cpio.file(path, *perm, data);
    }
    Ok(cpio.finish())
}

/// The packages an image is made of, as apt resolves them now.
#[derive(Debug, Clone)]
struct Packages {
    /// The kernel's release (`uname -r`).
    kernel_version: String,
    kernel: Candidate,
    busybox: Candidate,
}

impl Packages {
    fn resolve(apt: &mut Apt<'_>) -> Result<Packages, ImageError> {
        let meta = apt.candidate(KERNEL_METAPACKAGE)?;
        let name = kernel_package(&meta.depends).ok_or_else(|| ImageError::PackageContent {
            package: KERNEL_METAPACKAGE.to_owned(),
            what: format!(
                "dependency on a linux-image package (Depends: {})",
                meta.depends
            ),
        })?;
        Ok(Packages {
            kernel_version: name
                .strip_prefix("linux-image-")
                .unwrap_or(&name)
                .to_owned(),
            kernel: apt.candidate(&name)?,
            busybox: apt.candidate(BUSYBOX_PACKAGE)?,
        })
    }

    fn stamp(&self) -> String {
        stamp(&self.kernel_version, &self.kernel, &self.busybox)
    }
}

/// Builds the Linux guest image into `out` (created if needed); see the
/// module documentation. Does nothing but check when `out` already holds
/// an image of the same packages and the same gang (unless
/// [`ImageOptions::rebuild`]). Reports what it does through `progress`, a
/// line at a time.
pub fn build_linux(
    out: &Path,
    opts: &ImageOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<LinuxImage, ImageError> {
    fs::create_dir_all(out).map_err(io_err(format!("creating {}", out.display())))?;
    let out = out
        .canonicalize()
        .map_err(io_err(format!("resolving {}", out.display())))?;
    let mut apt = Apt {
        updated: false,
        progress,
    };
    let mut packages = Packages::resolve(&mut apt)?;
    let image = image_paths(&out, &packages.kernel_version);
    if !opts.rebuild && is_current(&out, &image, &packages.stamp()) {
        (apt.progress)(&format!(
            "cached: {} holds the image for kernel {}",
            out.display(),
            packages.kernel_version
        ));
        return Ok(image);
    }
    (apt.progress)(&format!(
        "kernel {} ({} {}), {} {}",
        packages.kernel_version,
        packages.kernel.package,
        packages.kernel.version,
        packages.busybox.package,
        packages.busybox.version
    ));

    // Stale package lists name versions the mirror no longer has: update
    // them once and resolve again.
    let debs = loop {
        let fetched = apt
            .fetch(&packages.kernel, &opts.cache_dir)
            .and_then(|k| Ok((k, apt.fetch(&packages.busybox, &opts.cache_dir)?)));
        match fetched {
            Ok(debs) => break debs,
            Err(ImageError::Download { .. }) if !apt.updated => {
                apt.update()?;
                packages = Packages::resolve(&mut apt)?;
            }
            Err(e) => return Err(e),
        }
    };
    let Packages {
        kernel_version,
        kernel,
        ..
    } = &packages;
    let image = image_paths(&out, kernel_version);
    let want = packages.stamp();
    let progress = apt.progress;

    let work = std::env::temp_dir().join(format!(
        "gang-image-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    fs::create_dir(&work).map_err(io_err(format!("creating {}", work.display())))?;
    let _cleanup = RemoveOnDrop(work.clone());
    progress(&format!("unpacking into {}", work.display()));
    unpack(&debs.0, &work)?;
    unpack(&debs.1, &work)?;

    let vmlinuz = work.join(format!("boot/vmlinuz-{kernel_version}"));
    if !vmlinuz.is_file() {
        return Err(ImageError::PackageContent {
            package: kernel.package.clone(),
            what: format!("boot/vmlinuz-{kernel_version}"),
        });
    }
    let modules_dir = work.join(format!("lib/modules/{kernel_version}"));
    let mut index = BTreeMap::new();
    index_modules(&modules_dir, &modules_dir, &mut index).map_err(|_| {
        ImageError::PackageContent {
            package: kernel.package.clone(),
            what: format!("lib/modules/{kernel_version}"),
        }
    })?;
    let order = load_order(GUEST_MODULES, |name| {
        let Some(rel) = index.get(name) else {
            return Ok(None);
        };
        let path = modules_dir.join(rel);
        let ko = fs::read(&path).map_err(io_err(format!("reading {}", path.display())))?;
        module_depends(&ko)
            .map(Some)
            .map_err(|reason| ImageError::Module {
                module: name.to_owned(),
                reason,
            })
    })?;
    for m in &order.missing {
        progress(&format!(
            "kernel {kernel_version} has no module {m}: left out"
        ));
    }
    progress(&format!(
        "modules, in load order: {}",
        order.order.join(" ")
    ));
    let modules: Vec<(String, PathBuf)> = order
        .order
        .iter()
        .filter_map(|m| index.get(m).map(|p| (m.clone(), p.clone())))
        .collect();
    let initrd = initramfs(&work, kernel_version, &modules)?;

    // The stamp goes first (so a build interrupted from here on is not
    // taken for current) and last (once everything is in place).
    match fs::remove_file(out.join(STAMP)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(format!("removing {}", out.join(STAMP).display()))(e)),
    }
    progress(&format!("writing {}", image.kernel.display()));
    write_atomically(&out, "vmlinuz", |tmp| fs::copy(&vmlinuz, tmp).map(|_| ()))?;
    progress(&format!(
        "writing {} ({} KiB, {} modules)",
        image.initrd.display(),
        initrd.len() / 1024,
        modules.len()
    ));
    write_atomically(&out, "initrd.img", |tmp| fs::write(tmp, &initrd))?;
    write_atomically(&out, "linux.cfg", |tmp| {
        fs::write(tmp, example_config(&image))
    })?;
    write_atomically(&out, STAMP, |tmp| fs::write(tmp, &want))?;
    Ok(image)
}

/// The image for tests (of this crate and others): built once per machine
/// into [`TEST_IMAGE_DIR`], with the `.deb`s in [`DEFAULT_CACHE_DIR`], and
/// reused after. Builders are serialised by an exclusive `flock` on
/// `TEST_IMAGE_DIR.lock`, so concurrent tests wait for one build. Progress
/// goes to stderr.
pub fn cached_test_image() -> Result<LinuxImage, ImageError> {
    let lock_path = PathBuf::from(format!("{TEST_IMAGE_DIR}.lock"));
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err(format!("opening {}", lock_path.display())))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
        ImageError::Io {
            what: format!("locking {}", lock_path.display()),
            source: e.into(),
        }
    })?;
    let image = build_linux(
        Path::new(TEST_IMAGE_DIR),
        &ImageOptions::default(),
        &mut |line| eprintln!("gang test image: {line}"),
    );
    drop(lock);
    image
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 relocatable object with a `.shstrtab` and, if given,
    /// a `.modinfo` section holding `modinfo`.
    fn elf_with_modinfo(modinfo: Option<&[u8]>) -> Vec<u8> {
        let shstrtab = b"\0.shstrtab\0.modinfo\0.text\0";
        let mut elf = vec![0u8; 64];
        elf[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
        elf[16] = 1; // ET_REL
        elf[18] = 62; // x86-64
        let strtab_at = elf.len();
        elf.extend_from_slice(shstrtab);
        let modinfo_at = elf.len();
        let info = modinfo.unwrap_or(b"");
        elf.extend_from_slice(info);
        while !elf.len().is_multiple_of(8) {
            elf.push(0);
        }
        let shoff = elf.len();
        // (name offset, type, data offset, size)
        let mut sections = vec![
            (0u32, 0u32, 0usize, 0usize),
            (1, 3, strtab_at, shstrtab.len()),
        ];
        match modinfo {
            Some(m) => sections.push((11, 1, modinfo_at, m.len())),
            None => sections.push((20, 1, modinfo_at, 0)),
        }
        for (name, kind, off, size) in &sections {
            let mut h = [0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[4..8].copy_from_slice(&kind.to_le_bytes());
            h[24..32].copy_from_slice(&(*off as u64).to_le_bytes());
            h[32..40].copy_from_slice(&(*size as u64).to_le_bytes());
            elf.extend_from_slice(&h);
        }
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x34..0x36].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&(sections.len() as u16).to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        elf
    }

    #[test]
    fn modinfo_depends_are_read_from_the_modinfo_section_only() {
        let ko = elf_with_modinfo(Some(
            b"license=GPL\0depends=virtio_ring,virtio_pci-modern-dev,virtio\0\0intree=Y\0name=virtio_pci\0",
        ));
        assert_eq!(
            module_depends(&ko).unwrap(),
            ["virtio_ring", "virtio_pci_modern_dev", "virtio"]
        );
        let info = modinfo(&ko).unwrap();
        assert!(info.contains(&("name".to_owned(), "virtio_pci".to_owned())));

        // An empty depends= is no dependency.
        let ko = elf_with_modinfo(Some(b"depends=\0name=failover\0"));
        assert!(module_depends(&ko).unwrap().is_empty());

        // A "depends=" outside .modinfo (here in .shstrtab's neighbour, the
        // section-less tail) does not count; no .modinfo is an error.
        let mut ko = elf_with_modinfo(None);
        ko.extend_from_slice(b"\0depends=bogus\0");
        assert_eq!(modinfo(&ko).unwrap_err(), "no .modinfo section");

        assert!(modinfo(b"\x7fELF\x01\x01").is_err(), "32-bit");
        assert!(modinfo(&ko[..0x30]).is_err(), "truncated");
        let mut bad = elf_with_modinfo(Some(b"depends=x\0"));
        let len = bad.len();
        bad.truncate(len - 40);
        assert!(modinfo(&bad).is_err(), "section headers cut off");
    }

    #[test]
    fn module_names_use_underscores() {
        assert_eq!(
            module_name("kernel/drivers/misc/pvpanic/pvpanic-mmio.ko"),
            "pvpanic_mmio"
        );
        assert_eq!(module_name("virtio-rng"), "virtio_rng");
        assert_eq!(module_name("sd_mod"), "sd_mod");
    }

    fn graph(edges: &[(&str, &[&str])]) -> HashMap<String, Vec<String>> {
        edges
            .iter()
            .map(|(m, d)| (m.to_string(), d.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn load_order_puts_dependencies_first_once_each() {
        // The real virtio graph of Debian's 6.1 cloud kernel.
        let g = graph(&[
            ("virtio_ring", &[]),
            ("virtio", &["virtio_ring"]),
            ("virtio_pci_modern_dev", &[]),
            ("virtio_pci_legacy_dev", &[]),
            (
                "virtio_pci",
                &[
                    "virtio_ring",
                    "virtio_pci_modern_dev",
                    "virtio_pci_legacy_dev",
                    "virtio",
                ],
            ),
            ("virtio_blk", &["virtio", "virtio_ring"]),
            ("failover", &[]),
            ("net_failover", &["failover"]),
            ("virtio_net", &["virtio_ring", "virtio", "net_failover"]),
            ("pvpanic", &[]),
            ("pvpanic_mmio", &["pvpanic"]),
        ]);
        let order = load_order(
            &[
                "virtio_pci",
                "virtio_blk",
                "virtio-net",
                "pvpanic-mmio",
                "e1000",
            ],
            |m| Ok(g.get(m).cloned()),
        )
        .unwrap();
        assert_eq!(order.missing, ["e1000"]);
        assert_eq!(order.order.len(), 11, "{:?}", order.order);
        let unique: BTreeSet<&String> = order.order.iter().collect();
        assert_eq!(unique.len(), order.order.len(), "each once");
        let pos = |m: &str| order.order.iter().position(|x| x == m).unwrap();
        for (m, deps) in &g {
            for d in deps {
                assert!(pos(d) < pos(m), "{d} before {m}: {:?}", order.order);
            }
        }
        // Wanted modules keep their relative order.
        assert!(pos("virtio_pci") < pos("virtio_blk") && pos("virtio_blk") < pos("virtio_net"));
    }

    #[test]
    fn load_order_refuses_missing_dependencies_and_cycles() {
        let g = graph(&[("a", &["b"]), ("b", &["gone"])]);
        let e = load_order(&["a"], |m| Ok(g.get(m).cloned())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "kernel module gone: b depends on it but the kernel has no such module"
        );
        let g = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])]);
        let e = load_order(&["a"], |m| Ok(g.get(m).cloned())).unwrap_err();
        assert!(e.to_string().contains("cycle"), "{e}");
    }

    #[test]
    fn the_newc_archive_reads_back_with_an_independent_reader() {
        let mut c = Newc::default();
        c.dir("bin");
        c.file("bin/x", 0o755, b"hello");
        c.file("odd-name-length", 0o644, b"abcdefg"); // padding both sides
        c.file("empty", 0o600, b"");
        c.symlink("bin/sh", "busybox");
        c.char_device("dev/console", 0o600, 5, 1);
        let bytes = c.finish();
        assert_eq!(bytes.len() % 4, 0);

        let mut got = Vec::new();
        let mut rest: &[u8] = &bytes;
        loop {
            let mut reader = cpio::NewcReader::new(rest).unwrap();
            if reader.entry().is_trailer() {
                break;
            }
            let e = reader.entry().clone();
            let mut data = Vec::new();
            io::Read::read_to_end(&mut reader, &mut data).unwrap();
            got.push((
                e.name().to_owned(),
                e.mode(),
                (e.rdev_major(), e.rdev_minor()),
                e.ino(),
                data,
            ));
            rest = reader.finish().unwrap();
        }
        let names: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/x",
                "odd-name-length",
                "empty",
                "bin/sh",
                "dev/console"
            ]
        );
        assert_eq!(got[0].1, 0o040755);
        assert_eq!((got[1].1, got[1].4.as_slice()), (0o100755, &b"hello"[..]));
        assert_eq!(got[2].4, b"abcdefg");
        assert!(got[3].4.is_empty());
        assert_eq!((got[4].1, got[4].4.as_slice()), (0o120777, &b"busybox"[..]));
        assert_eq!((got[5].1, got[5].2), (0o020600, (5, 1)));
        let inos: BTreeSet<u32> = got.iter().map(|g| g.3).collect();
        assert_eq!(inos.len(), got.len(), "distinct inode numbers");
    }

    #[test]
    fn ancestors_are_outermost_first() {
        let a: Vec<&str> = ancestors("lib/modules/v/kernel/x.ko").collect();
        assert_eq!(
            a,
            [
                "lib",
                "lib/modules",
                "lib/modules/v",
                "lib/modules/v/kernel"
            ]
        );
        assert_eq!(ancestors("init").count(), 0);
    }

    fn candidate(package: &str, version: &str) -> Candidate {
        Candidate {
            package: package.to_owned(),
            version: version.to_owned(),
            arch: "amd64".to_owned(),
            depends: String::new(),
        }
    }

    #[test]
    fn apt_show_and_deb_names() {
        let text = "Package: linux-image-cloud-amd64\nSource: linux-signed-amd64 (6.1.192+3)\n\
                    Version: 6.1.192-3\nArchitecture: amd64\n\
                    Depends: linux-image-6.1.0-57-cloud-amd64 (= 6.1.192-3)\n\
                    Description: x\n\nPackage: other\nVersion: 1\n";
        let c = parse_apt_show(text).unwrap();
        assert_eq!(c.version, "6.1.192-3");
        assert_eq!(
            kernel_package(&c.depends).as_deref(),
            Some("linux-image-6.1.0-57-cloud-amd64")
        );
        assert_eq!(
            kernel_package("libc6 (>= 2), initramfs-tools | linux-initramfs-tool"),
            None
        );
        assert!(parse_apt_show("N: Unable to locate package x\n").is_none());
        let b = candidate("busybox-static", "1:1.35.0-4+deb12u1+b1");
        assert_eq!(
            b.deb_name(),
            "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb"
        );
    }

    #[test]
    fn the_stamp_decides_whether_an_image_is_current() {
        let dir = tempfile::tempdir().unwrap();
        let k = candidate("linux-image-6.1.0-57-cloud-amd64", "6.1.192-3");
        let b = candidate("busybox-static", "1:1.35.0-4+deb12u1+b1");
        let v = "6.1.0-57-cloud-amd64";
        let image = image_paths(dir.path(), v);
        let s = stamp(v, &k, &b);
        assert!(s.contains(&format!("content {:016x}", content_hash())));
        assert!(!is_current(dir.path(), &image, &s), "empty directory");
        for f in ["vmlinuz", "initrd.img", "linux.cfg"] {
            fs::write(dir.path().join(f), "x").unwrap();
        }
        assert!(!is_current(dir.path(), &image, &s), "no stamp");
        write_atomically(dir.path(), STAMP, |tmp| fs::write(tmp, &s)).unwrap();
        assert!(is_current(dir.path(), &image, &s));
        // Another kernel build, busybox, or gang content: not current.
        let k2 = candidate("linux-image-6.1.0-57-cloud-amd64", "6.1.192-4");
        assert!(!is_current(dir.path(), &image, &stamp(v, &k2, &b)));
        let other_content = s.replace(&format!("{:016x}", content_hash()), "0123456789abcdef");
        assert!(!is_current(dir.path(), &image, &other_content));
        // A missing file: not current.
        fs::remove_file(dir.path().join("initrd.img")).unwrap();
        assert!(!is_current(dir.path(), &image, &s));
        // No temporary file is left behind.
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn the_content_hash_covers_the_userland_and_is_stable() {
        assert_eq!(content_hash(), content_hash());
        assert_ne!(
            fnv1a(&[b"ab", b"c"]),
            fnv1a(&[b"a", b"bc"]),
            "parts are delimited"
        );
        // FNV-1a of nothing is its offset basis.
        assert_eq!(fnv1a(&[]), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn the_example_config_is_a_valid_hvm_domain() {
        let image = image_paths(Path::new("/images/linux"), "6.1.0-57-cloud-amd64");
        let text = example_config(&image);
        let cfg = gang_config::Config::parse("linux.cfg", &text).unwrap();
        let d = gang_config::DomainConfig::from_config(&cfg).unwrap();
        assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());
        assert_eq!(d.name, "linux");
        assert_eq!(d.domain_type, gang_config::DomainType::Hvm);
        assert_eq!((d.vcpus, d.memory_mb), (2, Some(256)));
        assert_eq!(d.kernel.as_deref(), Some("/images/linux/vmlinuz"));
        assert_eq!(d.ramdisk.as_deref(), Some("/images/linux/initrd.img"));
        assert_eq!(
            d.cmdline.as_deref(),
            Some("console=ttyS0 gang.workload=shell")
        );
        for (w, _) in WORKLOADS {
            assert!(text.contains(w), "{w}");
        }
        assert!(text.contains("#pool = "));
    }

    #[test]
    fn the_init_script_handles_every_workload() {
        for (w, _) in WORKLOADS {
            assert!(INIT_SCRIPT.contains(&format!("\n{w})")), "{w}");
        }
        assert!(INIT_SCRIPT.contains("gang-guest: up, "));
        assert!(INIT_SCRIPT.contains(LOAD_ORDER));
        assert!(INIT_SCRIPT.starts_with("#!/bin/busybox sh\n"));
    }

    #[test]
    fn errors_name_the_package_and_show_apts_last_lines() {
        let e = ImageError::Download {
            package: "busybox-static".to_owned(),
            version: "1".to_owned(),
            status: "exit status 100".to_owned(),
            output: (1..=20).map(|i| format!("line {i}\n")).collect(),
        };
        let s = e.to_string();
        assert!(
            s.starts_with("could not download busybox-static 1 with apt-get download"),
            "{s}"
        );
        assert!(
            s.contains("line 20") && s.contains("line 13") && !s.contains("line 12"),
            "{s}"
        );
        assert_eq!(
            ImageError::NoApt { tool: "apt-get" }.to_string(),
            "apt-get not found (gang guest-image linux needs Debian's apt)"
        );
    }
}
