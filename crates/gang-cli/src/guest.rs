//! `gang guest-image`: the in-repo test guests (built with gang itself), so
//! that a `type = "pvh"` domain can be tried without any other download, and
//! `linux`, a Linux guest for `type = "hvm"` domains built from Debian's
//! packages by `gang_qemu::image`.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use gang_qemu::image::{build_linux, ImageOptions, DEFAULT_CACHE_DIR};

const LONG_ABOUT: &str = "\
Write one of gang's guests: a built-in test guest (an ELF kernel for \
type = \"pvh\" domains, built from Rust by gang's own build) to a file, or \
the Linux guest (a kernel and an initramfs for type = \"hvm\" domains, run by \
QEMU) into a directory. Without a name, lists the guests.

BUILT-IN GUESTS (-o FILE; default: standard output)

  hello        prints a line on COM1 and powers off (PVH entry)
  hello64      the same through a plain 64-bit ELF entry
  barrier      every vCPU spins on a shared-memory barrier; vCPU 0 prints
               the rounds (cmdline: rounds=N every=N; rounds=0: forever)
  barrier-pvh  the same, PVH entry
  echo         echoes console input
  ud2          executes an invalid instruction (the domain crashes)
  loop         loops forever
  wild-write   writes to unmapped memory (the domain crashes)

THE LINUX GUEST (gang guest-image linux -o DIR [--rebuild] [--cache DIR])

  Built on this machine from Debian packages: the kernel that the
  metapackage linux-image-cloud-amd64 currently depends on, and
  busybox-static. gang asks apt-cache for their candidate versions, runs
  `apt-get update` once if apt does not know them (or the mirror no longer
  has them), and fetches them with `apt-get download` into the cache
  directory (default /var/cache/gang/debs; --cache DIR for another). A .deb
  already in the cache is used as it is, so a later build needs no network.
  It therefore needs Debian's apt-get and dpkg-deb, network access to the
  Debian mirror named in /etc/apt/sources.list for the first build, and root
  for apt-get update and the default cache directory.

  DIR (created if needed) receives:

    vmlinuz      the kernel, as packaged
    initrd.img   an uncompressed newc initramfs: busybox, /bin/gang-guest
                 (gang's workloads), the virtio, pvpanic, ACPI button, evdev,
                 IDE/SCSI disk and CD-ROM modules with their dependencies,
                 and gang's /init
    linux.cfg    an example type = \"hvm\" domain using them
    .gang-image  a stamp: the package versions and a hash of gang's part

  When the stamp matches (same packages, same gang), nothing is done and the
  build says `cached`; --rebuild builds anyway. Files are written under
  temporary names and renamed, the stamp last, so an interrupted build never
  leaves an image that passes for complete.

  The guest's /init loads the modules, prints `gang-guest: up, N cpus`, the
  block devices (`gang-guest: disks vda sr0`) and network interfaces
  (`gang-guest: nics eth0`) on the console, starts acpid (so that an ACPI
  power-button press, QMP's system_powerdown, powers the guest off), then
  runs the workload named by gang.workload= on the kernel command line:

    shell      an interactive shell on the console (the default); leaving
               it powers off
    barrier    one thread per vCPU meeting at a spin barrier; prints
               `gang-guest: barrier N rounds/s` every second
    pipes      pairs of processes ping-ponging through pipes (kernel-heavy);
               prints `gang-guest: pipes N msgs/s` every second
    panic      a kernel panic (reported through QEMU's pvpanic device)
    poweroff   powers off at once
    reboot     reboots at once

EXAMPLES

  A built-in guest in a gang pool:

    gang guest-image barrier -o /tmp/barrier.elf
    cat > pair.cfg <<CFG
    name = \"pair\"
    type = \"pvh\"
    kernel = \"/tmp/barrier.elf\"
    cmdline = \"rounds=0\"
    vcpus = 2
    memory = 16
    pool = \"Wide\"
    CFG
    gang create -c pair.cfg

  The Linux guest, attached to its shell on the console (^] detaches;
  `gang console linux` attaches again):

    gang guest-image linux -o /var/lib/gang/linux
    gang create -c /var/lib/gang/linux/linux.cfg

  The same image running the barrier workload, in the pool Wide:

    gang create /var/lib/gang/linux/linux.cfg \\
        'extra=\"console=ttyS0 gang.workload=barrier\"' 'pool=\"Wide\"'

  A build with its own package cache, done even if DIR's stamp matches:

    gang guest-image linux -o ~/linux --cache ~/.cache/gang-debs --rebuild";

/// `gang guest-image [NAME] [-o PATH] [--rebuild] [--cache DIR]`.
#[derive(Debug, Args)]
#[command(about = "Write a built-in test guest kernel to a file, build the Linux guest image into a directory, or list them", long_about = LONG_ABOUT)]
pub struct GuestImageArgs {
    /// The guest (`linux` or a built-in one); without it, the list of guests.
    name: Option<String>,
    /// Where to write it: a file for a built-in guest (default: standard
    /// output), a directory for `linux` (required).
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    output: Option<PathBuf>,
    /// `linux` only: build even if the directory holds a current image.
    #[arg(long)]
    rebuild: bool,
    /// `linux` only: where the downloaded Debian packages are kept (default
    /// /var/cache/gang/debs).
    #[arg(long = "cache", value_name = "DIR")]
    cache: Option<PathBuf>,
}

/// The name of the Linux guest.
const LINUX: &str = "linux";

pub fn run(args: &GuestImageArgs) -> Result<()> {
    let Some(name) = &args.name else {
        for n in gang_guests::names() {
            println!("{n}");
        }
        println!("{LINUX}");
        return Ok(());
    };
    if name == LINUX {
        return linux(args);
    }
    if args.rebuild || args.cache.is_some() {
        bail!("--rebuild and --cache are for the linux guest only");
    }
    let Some(image) = gang_guests::image(name) else {
        let mut all: Vec<&str> = gang_guests::names().collect();
        all.push(LINUX);
        bail!("no guest '{name}' (guests: {})", all.join(", "));
    };
    match &args.output {
        Some(path) => {
            std::fs::write(path, image).with_context(|| format!("writing {}", path.display()))
        }
        None => std::io::stdout()
            .write_all(image)
            .context("writing to standard output"),
    }
}

/// `gang guest-image linux -o DIR`.
fn linux(args: &GuestImageArgs) -> Result<()> {
    let Some(dir) = &args.output else {
        bail!("the linux guest needs an output directory: gang guest-image linux -o DIR");
    };
    let opts = ImageOptions {
        cache_dir: args
            .cache
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR)),
        rebuild: args.rebuild,
    };
    let image = build_linux(dir, &opts, &mut |line| {
        eprintln!("gang guest-image: {line}");
    })?;
    let cfg = image.example_config.display();
    println!(
        "kernel   {} (Linux {})",
        image.kernel.display(),
        image.kernel_version
    );
    println!("ramdisk  {}", image.initrd.display());
    println!("config   {cfg}");
    println!();
    println!("Start it with `gang create -c {cfg}` (-c attaches to its console; ^] detaches).");
    println!("Another workload: gang.workload= in the config's extra= (see the comments in");
    println!("{cfg}); pool= runs it in a gang pool.");
    Ok(())
}
