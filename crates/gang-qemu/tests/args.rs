//! xl.cfg to QEMU's command line: the argv for typical configurations, each
//! mapping rule and each refusal; and the real qemu-system-x86_64 started
//! with what we produce (skipped, saying why, where it is missing, unless
//! GANG_REQUIRE_HOST=1).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gang_config::{Config, DomainConfig, UNSUPPORTED_DOMAIN_KEYS};
use gang_qemu::args::{
    default_mac, launch, unsupported_reason, Accel, ArgsError, Launch, LaunchOptions, QemuPaths,
    TapDevice,
};

fn domain(text: &str) -> DomainConfig {
    let cfg = Config::parse("vm.cfg", text).expect("valid syntax");
    let d = DomainConfig::from_config(&cfg).expect("a valid domain");
    assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());
    d
}

fn paths() -> QemuPaths {
    QemuPaths {
        qmp_socket: PathBuf::from("/run/gang/7/qmp.sock"),
        serial_socket: PathBuf::from("/run/gang/7/console.sock"),
        console_log: PathBuf::from("/var/log/gang/7.log"),
    }
}

fn opts() -> LaunchOptions {
    LaunchOptions {
        domid: 7,
        accel: Accel::Kvm,
        run_as: None,
    }
}

fn run(text: &str) -> Result<Launch, ArgsError> {
    launch(&domain(text), &paths(), &opts())
}

fn ok(text: &str) -> Launch {
    run(text).expect("QEMU can run it")
}

/// The error for an HVM domain named `a` with `text` added.
fn refusal(text: &str) -> String {
    run(&format!("name='a'\ntype='hvm'\n{text}"))
        .expect_err("refused")
        .to_string()
}

fn argv(l: &Launch) -> Vec<String> {
    l.args
        .iter()
        .map(|a| a.to_str().expect("UTF-8").to_owned())
        .collect()
}

/// The values of every `option` in `l`'s arguments.
fn values(l: &Launch, option: &str) -> Vec<String> {
    let a = argv(l);
    a.windows(2)
        .filter(|w| w[0] == option)
        .map(|w| w[1].clone())
        .collect()
}

/// `l`'s arguments for an HVM domain named `a` with `text` added.
fn hvm(text: &str) -> Launch {
    ok(&format!("name='a'\ntype='hvm'\n{text}"))
}

const COMMON_HEAD: &[&str] = &[
    "-nodefaults",
    "-no-user-config",
    "-S",
    "-no-shutdown",
    "-action",
    "reboot=shutdown,panic=pause",
    "-machine",
    "pc",
    "-accel",
    "kvm",
    "-cpu",
    "max,vmx=off,svm=off",
];

const CONSOLE: &[&str] = &[
    "-qmp",
    "unix:/run/gang/7/qmp.sock,server=on,wait=off",
    "-chardev",
    "socket,id=console0,path=/run/gang/7/console.sock,server=on,wait=off,\
     logfile=/var/log/gang/7.log,logappend=on",
    "-serial",
    "chardev:console0",
    "-device",
    "pvpanic",
];

const TAIL: &[&str] = &[
    "-sandbox",
    "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
    "-msg",
    "timestamp=on",
];

fn expected(name: &str, middle: &[&[&str]]) -> Vec<String> {
    let mut v = vec!["-name".to_owned(), format!("guest={name},debug-threads=on")];
    for part in [COMMON_HEAD].into_iter().chain(middle.iter().copied()) {
        v.extend(part.iter().map(|s| (*s).to_owned()));
    }
    v.extend(TAIL.iter().map(|s| (*s).to_owned()));
    v
}

#[test]
fn minimal_kernel_guest() {
    let l = ok(
        "name='k'\ntype='hvm'\nkernel='/boot/vmlinuz'\nramdisk='/boot/initrd.img'\n\
                cmdline='console=ttyS0,115200 quiet'",
    );
    assert_eq!(l.binary, PathBuf::from("qemu-system-x86_64"));
    assert_eq!(
        argv(&l),
        expected(
            "k",
            &[
                &["-smp", "1,maxcpus=1", "-m", "128"],
                CONSOLE,
                &[
                    "-kernel",
                    "/boot/vmlinuz",
                    "-initrd",
                    "/boot/initrd.img",
                    "-append",
                    "console=ttyS0,115200 quiet",
                    "-display",
                    "none",
                ],
            ]
        )
    );
    assert_eq!(
        l.files,
        [
            PathBuf::from("/boot/vmlinuz"),
            PathBuf::from("/boot/initrd.img")
        ]
    );
    assert_eq!(
        (l.taps, l.vnc_password, l.balloon_target_mb),
        (vec![], None, None)
    );
}

/// Xen's tools/examples/xlexample.hvm, its active lines.
const XLEXAMPLE_HVM: &str = "name = \"example.hvm\"\ntype = \"hvm\"\nmemory = 128\nvcpus = 2\n\
    vif = [ '' ]\ndisk = [ '/dev/vg/guest-volume,raw,xvda,rw' ]\nvnc = 1\n";

#[test]
fn xlexample_hvm() {
    let l = ok(XLEXAMPLE_HVM);
    let mac = default_mac("example.hvm", 0);
    let nic = format!("virtio-net-pci,netdev=net0,mac={mac},id=nic0");
    assert_eq!(
        argv(&l),
        expected(
            "example.hvm",
            &[
                &["-smp", "2,maxcpus=2", "-m", "128"],
                CONSOLE,
                &[
                    "-drive",
                    "if=none,id=drive-xvda,file=/dev/vg/guest-volume,format=raw",
                    "-device",
                    "virtio-blk-pci,drive=drive-xvda,id=xvda",
                    "-netdev",
                    "user,id=net0",
                    "-device",
                    &nic,
                    "-display",
                    "none",
                    "-vnc",
                    "127.0.0.1:0,to=99",
                    "-device",
                    "VGA",
                ],
            ]
        )
    );
    assert_eq!(l.files, [PathBuf::from("/dev/vg/guest-volume")]);
    assert_eq!((l.taps, l.vnc_password), (vec![], None));
}

#[test]
fn binary_and_device_model_version() {
    let l = hvm("device_model_override='/opt/qemu/bin/qemu-system-x86_64'\n\
                 device_model_version='qemu-xen'\ndevice_model='qemu'");
    assert_eq!(l.binary, PathBuf::from("/opt/qemu/bin/qemu-system-x86_64"));
    assert_eq!(
        refusal("device_model_version='qemu-xen-traditional'"),
        "device_model_version = \"qemu-xen-traditional\": Xen's old QEMU fork is not available; \
         gang runs upstream QEMU: use \"qemu-xen\" or leave it out"
    );
    assert_eq!(
        refusal("device_model_version='qemu-9'"),
        "device_model_version = \"qemu-9\": unknown device model version; gang runs upstream \
         QEMU (\"qemu-xen\")"
    );
}

#[test]
fn domain_kinds() {
    let cases = [
        ("type='pv'\nkernel='/k'", "type = \"pv\": not a QEMU domain: Xen's paravirtual interface has no QEMU equivalent (a kernel that also boots as PVH runs with type = \"pvh\")"),
        ("type='process'\ncommand='sleep 1'", "type = \"process\": not a QEMU domain: its processes run on the host as they are"),
        ("type='pvh'\nkernel='/k'", "type = \"pvh\": not a QEMU domain: it runs in gang's micro-VM unless device_model = \"qemu\""),
        ("type='pvh'\nkernel='/k'\ndevice_model='gang'", "type = \"pvh\": not a QEMU domain: it runs in gang's micro-VM unless device_model = \"qemu\""),
        ("type='pvh'\ndevice_model='qemu'", "type = \"pvh\": a PVH guest boots its kernel directly: set `kernel' (QEMU loads it through its PVH entry point)"),
        ("type='hvm'\ndevice_model='gang'", "device_model = \"gang\": gang's micro-VM boots PVH kernels only; an HVM guest needs QEMU (device_model = \"qemu\", the default for type = \"hvm\")"),
    ];
    for (text, want) in cases {
        let got = run(&format!("name='a'\n{text}")).expect_err(text);
        assert_eq!(got.to_string(), want, "{text}");
    }
    // PVH with QEMU: the same rules as HVM.
    let l = ok("name='a'\ntype='pvh'\ndevice_model='qemu'\nkernel='/vmlinux'");
    assert_eq!(values(&l, "-kernel"), ["/vmlinux"]);
    assert_eq!(values(&l, "-machine"), ["pc"]);
    // `builder = "hvm"` is HVM.
    assert_eq!(
        argv(&ok("name='a'\nbuilder='hvm'")),
        argv(&ok("name='a'\ntype='hvm'"))
    );
}

#[test]
fn accelerator_and_run_as() {
    let d = domain("name='a'\ntype='hvm'");
    let tcg = LaunchOptions {
        accel: Accel::Tcg,
        run_as: Some("nobody".to_owned()),
        ..opts()
    };
    let l = launch(&d, &paths(), &tcg).unwrap();
    assert_eq!(values(&l, "-accel"), ["tcg,thread=multi"]);
    // Under TCG the flags are not masked (that broke static glibc programs
    // in the guest, and TCG emulates no VMX anyway).
    assert_eq!(values(&l, "-cpu"), ["max"]);
    // QEMU 7.2 installs its seccomp filter before it drops privileges, so
    // elevateprivileges=deny would kill it at setgid.
    assert_eq!(
        values(&l, "-sandbox"),
        ["on,obsolete=deny,spawn=deny,resourcecontrol=deny"]
    );
    assert_eq!(values(&l, "-runas"), ["nobody"]);
    for bad in ["", "-x", "a b", "a,b", "../root"] {
        let o = LaunchOptions {
            run_as: Some(bad.to_owned()),
            ..opts()
        };
        let e = launch(&d, &paths(), &o).unwrap_err();
        assert_eq!(e.to_string(), format!("run_as = {bad:?}: not a user name"));
    }
}

#[test]
fn paths_are_escaped_and_socket_paths_checked() {
    let d = domain("name='a,b'\ntype='hvm'");
    let p = QemuPaths {
        qmp_socket: PathBuf::from("/run/a,b/qmp"),
        serial_socket: PathBuf::from("/run/a,b/console"),
        console_log: PathBuf::from("/log/a,b"),
    };
    let l = launch(&d, &p, &opts()).unwrap();
    assert_eq!(values(&l, "-name"), ["guest=a,,b,debug-threads=on"]);
    assert_eq!(
        values(&l, "-qmp"),
        ["unix:/run/a,,b/qmp,server=on,wait=off"]
    );
    assert_eq!(
        values(&l, "-chardev"),
        ["socket,id=console0,path=/run/a,,b/console,server=on,wait=off,logfile=/log/a,,b,logappend=on"]
    );
    let long = QemuPaths {
        qmp_socket: PathBuf::from(format!("/{}", "q".repeat(107))),
        ..paths()
    };
    assert_eq!(
        launch(&d, &long, &opts()).unwrap_err().to_string(),
        format!(
            "qmp_socket = \"/{}\": a Unix socket's path has at most 107 bytes",
            "q".repeat(107)
        )
    );
}

#[test]
fn cpus_and_memory() {
    let l = hvm("vcpus=2\nmaxvcpus=4\nmemory=512");
    assert_eq!(values(&l, "-smp"), ["2,maxcpus=4"]);
    assert_eq!(values(&l, "-m"), ["512"]);
    assert_eq!(l.balloon_target_mb, None);
    assert!(!values(&l, "-device").iter().any(|d| d.contains("balloon")));
    let l = hvm("memory=512\nmaxmem=1024");
    assert_eq!(values(&l, "-m"), ["1024"]);
    assert!(values(&l, "-device").contains(&"virtio-balloon-pci,id=balloon0".to_owned()));
    assert_eq!(l.balloon_target_mb, Some(512));
    assert_eq!(values(&hvm("memory=512\nmaxmem=512"), "-m"), ["512"]);
    assert_eq!(
        values(&hvm("maxmem=256"), "-m"),
        ["256"],
        "memory defaults to 128"
    );
    assert_eq!(hvm("maxmem=256").balloon_target_mb, Some(128));
    assert_eq!(
        refusal("memory=512\nmaxmem=256"),
        "maxmem = 256: less than memory = 512"
    );
    assert_eq!(refusal("memory=0"), "memory = 0: a guest needs memory");
    assert_eq!(
        refusal("vcpus=300"),
        "vcpus = 300: QEMU's pc machine has at most 255 vCPUs"
    );
    assert_eq!(
        refusal("vcpus=2\nmaxvcpus=256"),
        "maxvcpus = 256: QEMU's pc machine has at most 255 vCPUs"
    );
}

#[test]
fn the_daemons_keys_are_ignored() {
    let plain = argv(&hvm(""));
    let l = hvm(
        "cpus='2-3'\ncpus_soft='0-7'\npool='gang'\ngang_policy='tt,100ms,40ms'\n\
                 on_poweroff='preserve'\non_reboot='destroy'\non_crash='coredump-restart'\n\
                 on_watchdog='restart'",
    );
    assert_eq!(argv(&l), plain);
}

#[test]
fn serial_console() {
    let plain = argv(&hvm(""));
    assert_eq!(argv(&hvm("serial='pty'")), plain);
    assert_eq!(argv(&hvm("serial=['pty']")), plain);
    assert_eq!(
        refusal("serial='file:/tmp/x'"),
        "serial = \"file:/tmp/x\": gang's console is the guest's first serial port \
         (serial = \"pty\", or leave it out); other serial ports and backends are not offered"
    );
    assert_eq!(
        refusal("serial=['pty', 'pty']"),
        "serial = [\"pty\", \"pty\"]: gang's console is the guest's first serial port \
         (serial = \"pty\", or leave it out); other serial ports and backends are not offered"
    );
}

#[test]
fn boot_rules() {
    assert_eq!(values(&hvm("boot='c'"), "-boot"), ["order=c"]);
    assert_eq!(values(&hvm("boot='dc'"), "-boot"), ["order=dc"]);
    assert_eq!(values(&hvm("boot='ncd'"), "-boot"), ["order=ncd"]);
    assert!(values(&hvm(""), "-boot").is_empty());
    assert_eq!(
        refusal("boot='a'"),
        "boot = \"a\": unknown boot device `a' (c: disk, d: CD-ROM, n: network; gang's QEMU \
         has no floppy)"
    );
    assert_eq!(
        refusal("boot='cc'"),
        "boot = \"cc\": boot device `c' given twice"
    );
    assert_eq!(
        refusal("boot=''"),
        "boot = \"\": no boot device (c: disk, d: CD-ROM, n: network)"
    );
    assert_eq!(
        refusal("bootloader='pygrub'"),
        "bootloader = \"pygrub\": pygrub has no place here: QEMU's firmware boots the boot \
         loader on the guest's disk (boot = \"c\"), or give the kernel with `kernel' (and \
         `ramdisk', `cmdline')"
    );
    // root + extra make the command line.
    let l = hvm("kernel='/k'\nroot='/dev/vda1'\nextra='ro'");
    assert_eq!(values(&l, "-append"), ["root=/dev/vda1 ro"]);
    assert_eq!(
        refusal("ramdisk='/i'"),
        "ramdisk = \"/i\": a ramdisk without `kernel' (QEMU loads both, or neither)"
    );
    assert_eq!(
        refusal("extra='quiet'"),
        "cmdline = \"quiet\": a kernel command line without `kernel' (the guest's boot loader \
         has its own)"
    );
    assert_eq!(
        refusal("kernel='vmlinuz'"),
        "kernel = \"vmlinuz\": not an absolute path (QEMU runs in the daemon's directory, not \
         yours)"
    );
    assert_eq!(
        refusal("kernel='/k'\nramdisk='initrd'"),
        "ramdisk = \"initrd\": not an absolute path (QEMU runs in the daemon's directory, not \
         yours)"
    );
    // -kernel and -append are not QemuOpts: no comma escaping.
    let l = hvm("kernel='/a,b/k'\ncmdline='console=ttyS0,115200'");
    assert_eq!(values(&l, "-kernel"), ["/a,b/k"]);
    assert_eq!(values(&l, "-append"), ["console=ttyS0,115200"]);
}

#[test]
fn disk_mapping() {
    let l = hvm(
        "disk=['/img/a.raw,raw,xvda,rw', '/img/b.qcow2,qcow2,vdb,r', '/img/c.vhd,vhd,hda,w', \
         '/img/d.qed,qed,hdb', '/img/e.qcow,qcow,xvdc', '/iso/f.iso,raw,hdc:cdrom', \
         ',,hdd:cdrom', 'format=raw,vdev=xvdd,target=/img/g,h.img']",
    );
    let pairs: Vec<(String, String)> = values(&l, "-drive")
        .into_iter()
        .zip(
            values(&l, "-device")
                .into_iter()
                .filter(|d| d.contains("drive=")),
        )
        .collect();
    let want = [
        (
            "if=none,id=drive-xvda,file=/img/a.raw,format=raw",
            "virtio-blk-pci,drive=drive-xvda,id=xvda",
        ),
        (
            "if=none,id=drive-vdb,file=/img/b.qcow2,format=qcow2,readonly=on",
            "virtio-blk-pci,drive=drive-vdb,id=vdb",
        ),
        (
            "if=none,id=drive-hda,file=/img/c.vhd,format=vpc",
            "ide-hd,bus=ide.0,unit=0,drive=drive-hda,id=hda",
        ),
        (
            "if=none,id=drive-hdb,file=/img/d.qed,format=qed",
            "ide-hd,bus=ide.0,unit=1,drive=drive-hdb,id=hdb",
        ),
        (
            "if=none,id=drive-xvdc,file=/img/e.qcow,format=qcow",
            "virtio-blk-pci,drive=drive-xvdc,id=xvdc",
        ),
        (
            "if=none,id=drive-hdc,file=/iso/f.iso,format=raw,media=cdrom,readonly=on",
            "ide-cd,bus=ide.1,unit=0,drive=drive-hdc,id=hdc",
        ),
        (
            "if=none,id=drive-hdd,media=cdrom,readonly=on",
            "ide-cd,bus=ide.1,unit=1,drive=drive-hdd,id=hdd",
        ),
        (
            "if=none,id=drive-xvdd,file=/img/g,,h.img,format=raw",
            "virtio-blk-pci,drive=drive-xvdd,id=xvdd",
        ),
    ];
    assert_eq!(pairs.len(), want.len(), "{pairs:#?}");
    for ((drive, device), (want_drive, want_device)) in pairs.iter().zip(want) {
        assert_eq!((drive.as_str(), device.as_str()), (want_drive, want_device));
    }
    let files: Vec<&str> = l.files.iter().map(|p| p.to_str().unwrap()).collect();
    assert_eq!(
        files,
        [
            "/img/a.raw",
            "/img/b.qcow2",
            "/img/c.vhd",
            "/img/d.qed",
            "/img/e.qcow",
            "/iso/f.iso",
            "/img/g,h.img"
        ]
    );
    // xl's seed-manual HVM example, with its deprecated prefixes.
    let l =
        hvm("disk=['phy:/dev/ubuntu-vg/ubuntu-hvm,hda,w','file:/home/u/ubuntu.iso,hdc:cdrom,r']");
    assert_eq!(
        values(&l, "-drive"),
        [
            "if=none,id=drive-hda,file=/dev/ubuntu-vg/ubuntu-hvm,format=raw",
            "if=none,id=drive-hdc,file=/home/u/ubuntu.iso,format=raw,media=cdrom,readonly=on"
        ]
    );
}

#[test]
fn disk_refusals() {
    let cases = [
        ("'/d,raw,sda'", "disk 0 (sda): gang's QEMU has no SCSI controller yet: use xvdX (virtio) or hda-hdd (IDE)"),
        ("'/d,raw,hde'", "disk 0 (hde): QEMU's IDE controller has four drives, hda to hdd"),
        ("'/d,raw,xvda1'", "disk 0 (xvda1): a whole disk's vdev is letters only (xvda, vdb; no partitions)"),
        ("'/d,raw,fda'", "disk 0 (fda): unknown vdev: use xvdX or vdX (virtio) or hda-hdd (IDE)"),
        ("'/d,raw,xvda', '/e,raw,xvda'", "disk 1 (xvda): vdev already used by disk 0"),
        ("'/i.iso,raw,xvdc,devtype=cdrom'", "disk 0 (xvdc): a CD-ROM drive is emulated on IDE here: use hda to hdd (e.g. hdc:cdrom)"),
        ("'/i.iso,raw,hdc:cdrom,w'", "disk 0 (hdc): access = rw: a CD-ROM drive is read-only (leave access out)"),
        ("'/d,raw,hda,r'", "disk 0 (hda): QEMU's IDE disks cannot be read-only: use an xvdX vdev (virtio) for a read-only disk, or devtype=cdrom"),
        ("',,xvda'", "disk 0 (xvda): a disk needs a target (only a CD-ROM drive may be empty)"),
        ("'img/d.raw,raw,xvda'", "disk 0 (xvda): target \"img/d.raw\": not an absolute path (QEMU runs in the daemon's directory, not yours)"),
        ("'nbd:host:1234,raw,xvda'", "disk 0 (xvda): target \"nbd:host:1234\": not an absolute path (QEMU runs in the daemon's directory, not yours)"),
    ];
    for (disks, want) in cases {
        assert_eq!(refusal(&format!("disk=[{disks}]")), want, "{disks}");
    }
}

#[test]
fn vif_mapping() {
    let l = hvm(
        "vif=['', 'model=e1000,bridge=br0,mac=00:16:3E:00:00:01', 'model=rtl8139,type=ioemu', \
         'model=virtio,type=vif,bridge=br1,vifname=web-eth2', 'model=ne2k_pci', 'model=pcnet', \
         'model=virtio-net']",
    );
    let m = |i| default_mac("a", i);
    assert_eq!(
        values(&l, "-netdev"),
        [
            "user,id=net0",
            "tap,id=net1,ifname=vif7.1,script=no,downscript=no",
            "user,id=net2",
            "tap,id=net3,ifname=web-eth2,script=no,downscript=no",
            "user,id=net4",
            "user,id=net5",
            "user,id=net6",
        ]
    );
    let nics: Vec<String> = values(&l, "-device")
        .into_iter()
        .filter(|d| d.contains("netdev="))
        .collect();
    assert_eq!(
        nics,
        [
            format!("virtio-net-pci,netdev=net0,mac={},id=nic0", m(0)),
            "e1000,netdev=net1,mac=00:16:3E:00:00:01,id=nic1".to_owned(),
            format!("rtl8139,netdev=net2,mac={},id=nic2", m(2)),
            format!("virtio-net-pci,netdev=net3,mac={},id=nic3", m(3)),
            format!("ne2k_pci,netdev=net4,mac={},id=nic4", m(4)),
            format!("pcnet,netdev=net5,mac={},id=nic5", m(5)),
            format!("virtio-net-pci,netdev=net6,mac={},id=nic6", m(6)),
        ]
    );
    assert_eq!(
        l.taps,
        [
            TapDevice {
                name: "vif7.1".to_owned(),
                bridge: "br0".to_owned(),
                mac: "00:16:3E:00:00:01".to_owned()
            },
            TapDevice {
                name: "web-eth2".to_owned(),
                bridge: "br1".to_owned(),
                mac: m(3)
            },
        ]
    );
    // The default MAC is stable: the same domain gets the same one again.
    assert_eq!(argv(&hvm("vif=['']")), argv(&hvm("vif=['']")));
}

#[test]
fn vif_refusals() {
    let cases = [
        ("ip=10.0.0.2", "vif 0: ip=10.0.0.2: the guest sets its own address; gang runs no hotplug script to filter it"),
        ("rate=10Mb/s", "vif 0: rate=10Mb/s: gang does not limit a vif's rate"),
        ("bridge=br0,script=vif-route", "vif 0: script=vif-route: gang runs no hotplug scripts: it attaches a vif with bridge= to the bridge itself"),
        ("backend=netdom", "vif 0: backend=netdom: gang has no driver domains: the host is every vif's backend"),
        ("mtu=9000", "vif 0: mtu=9000: gang cannot honour this vif parameter"),
        ("model=virtio-net-pci-x", "vif 0: model=virtio-net-pci-x: unknown NIC model (e1000, rtl8139, virtio, virtio-net, ne2k_pci, pcnet)"),
        ("vifname=web0", "vif 0: vifname=web0: names a tap device, which gang makes only for a vif with bridge= (without it the vif is QEMU's user-mode network)"),
        ("bridge=br0,vifname=a-very-long-name0", "vif 0: vifname=a-very-long-name0: an interface name has 1 to 15 characters"),
    ];
    for (spec, want) in cases {
        assert_eq!(refusal(&format!("vif=['{spec}']")), want, "{spec}");
    }
    assert_eq!(
        refusal("vif=['bridge=br/0']"),
        "vif 0: bridge=br/0: an interface name here is letters, digits, `.', `-' and `_'"
    );
    assert_eq!(
        refusal("vif=['mac=00:16:3e:00:00:01', 'mac=00:16:3E:00:00:01']"),
        "vif 1: mac=00:16:3E:00:00:01: the mac address of vif 0 too"
    );
    assert_eq!(
        refusal("vif=['bridge=br0,vifname=t0', 'bridge=br1,vifname=t0']"),
        "vif 1: vifname=t0: a tap device name used by another vif"
    );
    // The default tap name must fit in 15 characters: vif11 of domain
    // 1234567890 does not.
    let d = domain(&format!(
        "name='a'\ntype='hvm'\nvif=[{}]",
        ["'bridge=br0'"; 11].join(", ")
    ));
    let big = LaunchOptions {
        domid: 1_234_567_890,
        ..opts()
    };
    assert_eq!(
        launch(&d, &paths(), &big).unwrap_err().to_string(),
        "vif 10: bridge=br0: the tap device's name vif1234567890.10: an interface name has 1 \
         to 15 characters; set a shorter vifname"
    );
}

#[test]
fn vnc_and_graphics() {
    let l = hvm("vnc=1\nvnclisten='0.0.0.0'\nvncdisplay=5\nvncpasswd='s3cret'\nstdvga=0\nvideoram=8\nkeymap='de'");
    assert_eq!(values(&l, "-vnc"), ["0.0.0.0:5,to=99,password=on"]);
    assert_eq!(l.vnc_password.as_deref(), Some("s3cret"));
    assert!(values(&l, "-device").contains(&"cirrus-vga,vgamem_mb=8".to_owned()));
    assert_eq!(values(&l, "-k"), ["de"]);
    assert_eq!(values(&l, "-display"), ["none"]);

    let l = hvm("vnc=1\nvncunused=0\nvncdisplay=3\nvncpasswd=''\nstdvga=1\nvideoram=32");
    assert_eq!(values(&l, "-vnc"), ["127.0.0.1:3"]);
    assert_eq!(l.vnc_password, None, "an empty password is none");
    assert!(values(&l, "-device").contains(&"VGA,vgamem_mb=32".to_owned()));
    assert_eq!(
        values(&hvm("vnc=1\nvncdisplay=150"), "-vnc"),
        ["127.0.0.1:150,to=150"]
    );
    assert_eq!(
        values(&hvm("vnc=1\nvnclisten='10.0.0.1:4'"), "-vnc"),
        ["10.0.0.1:4,to=99"]
    );
    assert_eq!(
        values(&hvm("vnc=1\nvnclisten='::1'"), "-vnc"),
        ["[::1]:0,to=99"]
    );
    assert_eq!(
        values(&hvm("vnc=1\nvnclisten='[::1]:2'"), "-vnc"),
        ["[::1]:2,to=99"]
    );
    // vga wins over stdvga; none means no card.
    let l = hvm("vnc=1\nstdvga=0\nvga='stdvga'");
    assert!(values(&l, "-device").contains(&"VGA".to_owned()));
    let l = hvm("vnc=1\nvga='none'");
    assert!(!values(&l, "-device")
        .iter()
        .any(|d| d.contains("VGA") || d.contains("vga")));
    assert!(values(&hvm("vnc=1\nvga='cirrus'"), "-device").contains(&"cirrus-vga".to_owned()));
    // Without vnc: no VNC server and no graphics card; display keys have
    // nothing to act on.
    let l = hvm("vnc=0\nvnclisten='0.0.0.0'\nstdvga=1\nkeymap='de'\nnographic=1\nsdl=0");
    assert!(values(&l, "-vnc").is_empty());
    assert!(values(&l, "-k").is_empty());
    assert!(!values(&l, "-device").iter().any(|d| d.contains("VGA")));
    assert_eq!(values(&l, "-display"), ["none"]);

    let cases = [
        ("sdl=1", "sdl = 1: a gang host has no display for QEMU's window; use vnc = 1"),
        ("vnc=1\nnographic=1", "nographic = 1: contradicts vnc = 1 (no graphics card, nothing to show)"),
        ("vnc=1\nvga='qxl'", "vga = \"qxl\": QXL is SPICE's graphics card and gang offers VNC only: use vga = \"stdvga\""),
        ("vnc=1\nvga='vmware'", "vga = \"vmware\": unknown graphics card (stdvga, cirrus, none)"),
        ("vnc=1\nstdvga=0\nvideoram=32", "videoram = 32: QEMU's Cirrus card has 4, 8 or 16 MB"),
        ("vnc=1\nvideoram=512", "videoram = 512: QEMU's standard VGA has 1 to 256 MB"),
        ("vnc=1\nvnclisten='0.0.0.0,to=3'", "vnclisten = \"0.0.0.0,to=3\": not an address"),
        ("vnc=1\nvnclisten='host:x'", "vnclisten = \"host:x\": the display after `:' is not a number"),
        ("vnc=1\nvnclisten='host:1'\nvncdisplay=2", "vnclisten = \"host:1\": its display 1 contradicts vncdisplay = 2"),
        ("vnc=1\nvncdisplay=60000", "vncdisplay = 60000: at most 59635 (VNC's port is 5900 + the display)"),
        ("vnc=1\nkeymap='de,x'", "keymap = \"de,x\": not a keymap name (e.g. en-us, de)"),
    ];
    for (text, want) in cases {
        assert_eq!(refusal(text), want, "{text}");
    }
}

#[test]
fn platform_keys() {
    let l = hvm("acpi=0\nhpet=0\napic=1\npae=1\nnestedhvm=1\nlocaltime=1");
    assert_eq!(values(&l, "-machine"), ["pc,acpi=off,hpet=off"]);
    assert_eq!(values(&l, "-cpu"), ["max"]);
    assert_eq!(values(&l, "-rtc"), ["base=localtime"]);
    let l = hvm("acpi=1\nhpet=1\nnestedhvm=0\nlocaltime=0");
    assert_eq!(values(&l, "-machine"), ["pc"]);
    assert_eq!(values(&l, "-cpu"), ["max,vmx=off,svm=off"]);
    assert!(values(&l, "-rtc").is_empty());
    assert_eq!(
        refusal("apic=0"),
        "apic = 0: an x86-64 CPU (QEMU's -cpu max) always has a local APIC"
    );
    assert_eq!(
        refusal("pae=0"),
        "pae = 0: an x86-64 CPU (QEMU's -cpu max) always has PAE"
    );
}

#[test]
fn unsupported_keys_are_refused_by_name() {
    // All of them, in file order.
    assert_eq!(
        refusal("usb=1\nsoundhw='hda'"),
        "usb: gang's QEMU has no USB controller yet (the VNC pointer is the PS/2 mouse); \
         soundhw: gang's QEMU emulates no sound card (a gang host has no audio to play it on)"
    );
    assert!(refusal("soundhw='hda'\nusb=1").starts_with("soundhw: "));
    assert_eq!(
        refusal("viridian=1"),
        "viridian: gang offers no Hyper-V enlightenments (Windows guests run without them)"
    );
    assert_eq!(
        refusal("pci=['01:00.0']"),
        "pci: PCI passthrough needs VFIO and the device's IOMMU group, which gang does not set up"
    );
    for key in UNSUPPORTED_DOMAIN_KEYS {
        assert_ne!(
            unsupported_reason(key),
            unsupported_reason("no-such-key"),
            "{key} has a reason of its own"
        );
    }
    // Asking for nothing is fine.
    assert_eq!(argv(&hvm("usb=0\nviridian=0")), argv(&hvm("")));
}

#[test]
fn older_stored_configs_still_launch() {
    // JSON stored before the QEMU keys and vif_specs existed.
    let json = serde_json::json!({
        "name": "old", "domain_type": "hvm", "memory_mb": 256, "maxmem_mb": null, "vcpus": 1,
        "maxvcpus": null, "cpus": null, "cpus_soft": null, "pool": null, "kernel": null,
        "ramdisk": null, "cmdline": null, "root": null, "extra": null, "bootloader": null,
        "on_poweroff": "destroy", "on_reboot": "restart", "on_crash": "destroy",
        "on_watchdog": "destroy", "disks": [], "vifs": ["bridge=br0"], "vnc": true,
        "boot": null, "gang_policy": null, "command": null, "pid": null, "vcpu_threads": null
    });
    let d: DomainConfig = serde_json::from_value(json).unwrap();
    assert!(d.vncunused, "vncunused defaults to 1");
    assert!(d.unsupported.is_empty());
    let l = launch(&d, &paths(), &opts()).unwrap();
    assert_eq!(values(&l, "-vnc"), ["127.0.0.1:0,to=99"]);
    assert_eq!(
        values(&l, "-netdev"),
        ["tap,id=net0,ifname=vif7.0,script=no,downscript=no"]
    );
    // And today's configuration survives the round trip.
    let now = domain(XLEXAMPLE_HVM);
    let back: DomainConfig = serde_json::from_value(serde_json::to_value(&now).unwrap()).unwrap();
    assert_eq!(back, now);
}

// ---------------------------------------------------------------------
// The real QEMU.

const QEMU: &str = "qemu-system-x86_64";

use gang_testkit::host::skip_or_fail;

/// A QEMU process, killed when dropped (also when the test fails).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0")
    })
}

fn can_use_kvm() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// A 1 MiB qcow2 image: `qemu-img create` where it is installed, else
/// written here after QEMU's qcow2 specification (version 2, 64 KiB
/// clusters: header, refcount table, refcount block, L1 table).
fn make_qcow2(path: &Path) {
    if let Ok(status) = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(path)
        .arg("1M")
        .status()
    {
        assert!(status.success(), "qemu-img create: {status}");
        return;
    }
    eprintln!("no qemu-img: writing the qcow2 image by hand");
    const CLUSTER: usize = 1 << 16;
    let mut img = vec![0u8; 4 * CLUSTER];
    let put32 =
        |img: &mut Vec<u8>, at: usize, v: u32| img[at..at + 4].copy_from_slice(&v.to_be_bytes());
    let put64 =
        |img: &mut Vec<u8>, at: usize, v: u64| img[at..at + 8].copy_from_slice(&v.to_be_bytes());
    img[0..4].copy_from_slice(b"QFI\xfb");
    put32(&mut img, 4, 2); // version
    put32(&mut img, 20, 16); // cluster_bits
    put64(&mut img, 24, 1 << 20); // size
    put32(&mut img, 36, 1); // l1_size
    put64(&mut img, 40, 3 * CLUSTER as u64); // l1_table_offset
    put64(&mut img, 48, CLUSTER as u64); // refcount_table_offset
    put32(&mut img, 56, 1); // refcount_table_clusters
    put64(&mut img, CLUSTER, 2 * CLUSTER as u64); // refcount table[0] -> block
    for c in 0..4 {
        // 16-bit refcounts: each of the 4 clusters is used once.
        img[2 * CLUSTER + 2 * c + 1] = 1;
    }
    std::fs::write(path, img).expect("writing the qcow2 image");
}

fn start(l: &Launch) -> Killed {
    let child = Command::new(&l.binary)
        .args(&l.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting QEMU");
    Killed(child)
}

/// QEMU is still running after 1 s, else its output is the failure.
fn stays_up(mut q: Killed, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if let Some(status) = q.0.try_wait().expect("waiting for QEMU") {
            let out = q.0.wait_with_output_now();
            panic!("{what}: QEMU exited ({status}) within 1 s:\n{out}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

trait OutputNow {
    fn wait_with_output_now(&mut self) -> String;
}

impl OutputNow for Child {
    fn wait_with_output_now(&mut self) -> String {
        use std::io::Read;
        let mut s = String::new();
        if let Some(mut o) = self.stdout.take() {
            let _ = o.read_to_string(&mut s);
        }
        if let Some(mut e) = self.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

#[test]
fn qemu_7_2_accepts_what_we_emit() {
    match Command::new(QEMU).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        other => {
            return skip_or_fail(&format!("{QEMU} cannot run here ({other:?})"));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk,1.raw");
    std::fs::write(&raw, vec![0u8; 1 << 20]).unwrap();
    let qcow2 = dir.path().join("disk2.qcow2");
    make_qcow2(&qcow2);
    let text = format!(
        "name = 'qemu-accepts'\ntype = 'hvm'\nmemory = 64\nmaxmem = 96\nvcpus = 2\n\
         maxvcpus = 3\nboot = 'cd'\nserial = 'pty'\n\
         disk = ['{}', 'format=raw,vdev=xvda,access=w,target={}', ',,hdc:cdrom']\n\
         vif = ['model=e1000']\nvnc = 1\nvncpasswd = 'pw'\nvideoram = 16\nkeymap = 'en-us'\n\
         acpi = 1\nhpet = 0\nlocaltime = 1\n",
        format_args!("{},qcow2,hda,w", qcow2.display()),
        raw.display()
    );
    let d = domain(&text);
    let paths = QemuPaths {
        qmp_socket: dir.path().join("qmp.sock"),
        serial_socket: dir.path().join("console.sock"),
        console_log: dir.path().join("console.log"),
    };
    let mut accels = vec![Accel::Tcg];
    if can_use_kvm() {
        accels.push(Accel::Kvm);
    } else {
        eprintln!("no KVM here: TCG only");
    }
    for accel in accels {
        for run_as in [None, Some("nobody".to_owned()).filter(|_| is_root())] {
            let opts = LaunchOptions {
                domid: 3,
                accel,
                run_as: run_as.clone(),
            };
            let l = launch(&d, &paths, &opts).unwrap();
            assert_eq!(l.files.len(), 2);
            assert_eq!(l.vnc_password.as_deref(), Some("pw"));
            let args: Vec<OsString> = l.args.clone();
            let what = format!("{accel:?}, run_as {run_as:?}: {args:?}");
            for p in [&paths.qmp_socket, &paths.serial_socket] {
                let _ = std::fs::remove_file(p);
            }
            stays_up(start(&l), &what);
            assert!(paths.qmp_socket.exists(), "{what}: no QMP socket");
            assert!(paths.console_log.exists(), "{what}: no console log");
            eprintln!("QEMU stayed up: {what}");
        }
    }
}

#[test]
fn every_refusal_is_reported_at_once() {
    let err =
        refusal("sdl = 1\nsoundhw = 'sb16'\ndisk = ['/d.img,raw,sda,rw']\nbootloader = 'pygrub'");
    for key in ["sdl = 1", "soundhw", "disk 0 (sda)", "bootloader"] {
        assert!(err.contains(key), "{key} missing from: {err}");
    }
    // One refusal alone is not wrapped.
    assert_eq!(
        refusal("usb = 1"),
        format!("usb: {}", unsupported_reason("usb"))
    );
}
