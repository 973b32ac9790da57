//! The domain and cpupool models, including the seed manual's examples.

use gang_config::{
    Action, Command, Config, ConfigError, CpupoolConfig, DiskAccess, DiskDevtype, DiskFormat,
    DiskSpec, DomainConfig, DomainType,
};

fn domain(text: &str) -> Result<DomainConfig, ConfigError> {
    DomainConfig::from_config(&Config::parse("vm.cfg", text).expect("valid syntax"))
}

fn warnings(cfg: &Config) -> Vec<String> {
    cfg.warnings().iter().map(ToString::to_string).collect()
}

const UBUNTU_PV: &str = r#"name = "ubuntu-pv"
memory = 256
disk = ['phy:/dev/ubuntu-vg/ubuntu-pv,xvda,w']
vif = [' ']
kernel = "/var/lib/xen/images/ubuntu-netboot/vmlinuz"
ramdisk = "/var/lib/xen/images/ubuntu-netboot/initrd.gz"
extra = "debian-installer/exit/always_halt=true -- console=hvc0"
"#;

const UBUNTU_HVM: &str = r#"builder = "hvm"
name = "ubuntu-hvm"
memory = "512"
vcpus = 1
vif = ['']
disk = ['phy:/dev/ubuntu-vg/ubuntu-hvm,hda,w','file:/home/<USERNAME>/ubuntu-14.04.1-desktop-amd64.iso,hdc:cdrom,r']
vnc = 1
boot="dc"
"#;

#[test]
fn seed_manual_ubuntu_pv() {
    let cfg = Config::parse("ubuntu-pv.cfg", UBUNTU_PV).unwrap();
    let d = DomainConfig::from_config(&cfg).unwrap();
    assert_eq!(d.name, "ubuntu-pv");
    assert_eq!(d.domain_type, DomainType::Pv);
    assert_eq!(d.memory_mb, Some(256));
    assert_eq!(d.vcpus, 1);
    assert_eq!(
        d.disks,
        [DiskSpec {
            target: "/dev/ubuntu-vg/ubuntu-pv".to_owned(),
            format: DiskFormat::Raw,
            vdev: "xvda".to_owned(),
            access: DiskAccess::ReadWrite,
            devtype: DiskDevtype::Disk,
        }]
    );
    assert_eq!(d.vifs, [" "]);
    assert_eq!(
        d.kernel.as_deref(),
        Some("/var/lib/xen/images/ubuntu-netboot/vmlinuz")
    );
    assert_eq!(
        d.ramdisk.as_deref(),
        Some("/var/lib/xen/images/ubuntu-netboot/initrd.gz")
    );
    let extra = "debian-installer/exit/always_halt=true -- console=hvc0";
    assert_eq!(d.extra.as_deref(), Some(extra));
    assert_eq!(d.cmdline.as_deref(), Some(extra));
    assert_eq!(d.bootloader, None);
    assert_eq!(
        (d.on_poweroff, d.on_reboot, d.on_crash, d.on_watchdog),
        (
            Action::Destroy,
            Action::Restart,
            Action::Destroy,
            Action::Destroy
        )
    );
    assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());

    // The pygrub variant: comments out kernel/ramdisk/extra.
    let pygrub = "name = \"ubuntu-pv\"\nmemory = 256\ndisk = ['phy:/dev/ubuntu-vg/ubuntu-pv,xvda,w']\nvif = [' ']\nbootloader = \"pygrub\"\n\n#kernel = \"/var/lib/xen/images/ubuntu-netboot/saucy/vmlinuz\"\n#extra = \"x\"\n";
    let d = domain(pygrub).unwrap();
    assert_eq!(d.bootloader.as_deref(), Some("pygrub"));
    assert_eq!((d.kernel, d.cmdline), (None, None));
}

#[test]
fn seed_manual_ubuntu_hvm() {
    let cfg = Config::parse("ubuntu-hvm.cfg", UBUNTU_HVM).unwrap();
    let d = DomainConfig::from_config(&cfg).unwrap();
    assert_eq!(d.name, "ubuntu-hvm");
    assert_eq!(d.domain_type, DomainType::Hvm);
    assert_eq!(d.memory_mb, Some(512), "a numeric string is a number");
    assert_eq!(d.vcpus, 1);
    assert_eq!(d.vifs, [""]);
    assert_eq!(d.vnc, Some(true));
    assert_eq!(d.boot.as_deref(), Some("dc"));
    assert_eq!(
        d.disks,
        [
            DiskSpec {
                target: "/dev/ubuntu-vg/ubuntu-hvm".to_owned(),
                format: DiskFormat::Raw,
                vdev: "hda".to_owned(),
                access: DiskAccess::ReadWrite,
                devtype: DiskDevtype::Disk,
            },
            DiskSpec {
                target: "/home/<USERNAME>/ubuntu-14.04.1-desktop-amd64.iso".to_owned(),
                format: DiskFormat::Raw,
                vdev: "hdc".to_owned(),
                access: DiskAccess::ReadOnly,
                devtype: DiskDevtype::Cdrom,
            },
        ]
    );
    assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());
}

#[test]
fn gang_keys_and_process_domains() {
    let d = domain(
        "name='job'\ntype='process'\ncommand=['/bin/worker', '--threads', 4]\nvcpus=4\n\
         maxvcpus=8\ncpus='2-5'\npool='gang'\ngang_policy='tt,100ms,40ms'\nvcpu_threads='worker-*'\n\
         maxmem=1024\non_crash='coredump-restart'\non_poweroff='preserve'\non_reboot='rename-restart'\n\
         on_watchdog='coredump-destroy'",
    )
    .unwrap();
    assert_eq!(d.domain_type, DomainType::Process);
    assert_eq!(
        d.command,
        Some(Command::Argv(vec![
            "/bin/worker".to_owned(),
            "--threads".to_owned(),
            "4".to_owned()
        ]))
    );
    assert_eq!((d.vcpus, d.maxvcpus), (4, Some(8)));
    assert_eq!(d.cpus.as_deref(), Some("2-5"));
    assert_eq!(d.pool.as_deref(), Some("gang"));
    assert_eq!(d.gang_policy.as_deref(), Some("tt,100ms,40ms"));
    assert_eq!(d.vcpu_threads.as_deref(), Some("worker-*"));
    assert_eq!(d.maxmem_mb, Some(1024));
    assert_eq!(d.on_crash, Action::CoredumpRestart);
    assert_eq!(d.on_poweroff, Action::Preserve);
    assert_eq!(d.on_reboot, Action::RenameRestart);
    assert_eq!(d.on_watchdog, Action::CoredumpDestroy);

    let d = domain("name='a'\ncommand='id'\nuser='nobody'\ngroup='nogroup'").unwrap();
    assert_eq!(
        (d.user.as_deref(), d.group.as_deref()),
        (Some("nobody"), Some("nogroup"))
    );
    assert_eq!(domain("name='a'\ncommand='id'").unwrap().user, None);
    // Without a type, command or pid means a process domain.
    let d = domain("name='a'\npid=1234").unwrap();
    assert_eq!((d.domain_type, d.pid), (DomainType::Process, Some(1234)));
    let d = domain("name='a'\ncommand='sleep 10'").unwrap();
    assert_eq!(d.command, Some(Command::Line("sleep 10".to_owned())));
    assert_eq!(d.domain_type, DomainType::Process);
    // cpus as a list is joined.
    assert_eq!(
        domain("name='a'\ncpus=[1, '3-4']").unwrap().cpus.as_deref(),
        Some("1,3-4")
    );
}

#[test]
fn types_and_builder() {
    for (text, want) in [
        ("type='pv'", DomainType::Pv),
        ("type='pvh'", DomainType::Pvh),
        ("type='hvm'", DomainType::Hvm),
        ("builder='hvm'", DomainType::Hvm),
        ("builder='generic'", DomainType::Pv),
        ("type='pvh'\nbuilder='hvm'", DomainType::Pvh),
        ("", DomainType::Pv),
    ] {
        let d = domain(&format!("name='a'\n{text}")).unwrap();
        assert_eq!(d.domain_type, want, "{text}");
    }
}

#[test]
fn cmdline_wins_over_root_and_extra() {
    let cfg = Config::parse(
        "vm.cfg",
        "name='a'\nroot='/dev/xvda1'\nextra='ro quiet'\ncmdline='console=hvc0'",
    )
    .unwrap();
    let d = DomainConfig::from_config(&cfg).unwrap();
    assert_eq!(d.cmdline.as_deref(), Some("console=hvc0"));
    assert_eq!(
        warnings(&cfg),
        ["vm.cfg:4: warning: ignoring root= and extra= in favour of cmdline="]
    );
    let d = domain("name='a'\nroot='/dev/xvda1'\nextra='ro quiet'").unwrap();
    assert_eq!(d.cmdline.as_deref(), Some("root=/dev/xvda1 ro quiet"));
    let d = domain("name='a'\nroot='/dev/xvda1'").unwrap();
    assert_eq!(d.cmdline.as_deref(), Some("root=/dev/xvda1"));
}

#[test]
fn domain_errors() {
    let cases: &[(&str, &str)] = &[
        ("memory=5", "Domain name must be specified."),
        ("name=''", "Domain name must be specified."),
        ("name='a'\ntype='xen'", "Invalid domain type xen."),
        ("name='a'\nbuilder='weird'", "Invalid domain type weird."),
        ("name='a'\non_crash='explode'", "Unknown on_crash action \"explode\" specified"),
        ("name='a'\non_reboot='stop'", "Unknown on_reboot action \"stop\" specified"),
        ("name='a'\nmemory=-0x1", "vm.cfg:2: config parsing error near `-': invalid character"),
        ("name='a'\nmemory='-5'", "vm.cfg:2: invalid value for parameter `memory': must not be negative"),
        ("name='a'\nvcpus=0", "vm.cfg:2: invalid value for parameter `vcpus': must be at least 1"),
        ("name='a'\nvcpus=99999999999", "vm.cfg:2: invalid value for parameter `vcpus': too large"),
        ("name='a'\nvcpus=4\nmaxvcpus=2", "vm.cfg:3: invalid value for parameter `maxvcpus': maxvcpus < vcpus"),
        ("name='a'\npid=0", "vm.cfg:2: invalid value for parameter `pid': must be a process id (> 0)"),
        ("name='a'\ntype='process'", "vm.cfg:2: invalid value for parameter `type': a process domain needs `command', `pid', `pids' or `cgroup'"),
        ("name='a'\npid=7\nuser='nobody'", "vm.cfg:3: invalid value for parameter `user': applies to a `command' gang starts: processes adopted by `pid', `pids' or `cgroup' keep their own users"),
        ("name='a'\ncgroup='/x'\ngroup='nogroup'", "vm.cfg:3: invalid value for parameter `group': applies to a `command' gang starts: processes adopted by `pid', `pids' or `cgroup' keep their own users"),
        ("name='a'\ntype='pvh'\nkernel='k'\nuser='nobody'", "vm.cfg:4: invalid value for parameter `user': applies to a process domain's `command' only"),
        ("name='a'\ncommand='true'\nuser=''", "vm.cfg:3: invalid value for parameter `user': must name one"),
        ("name='a'\ndisk=['phy:/d,xvda,q']", "vm.cfg: config parsing error in disk specification: unknown value for access: near `q' in `phy:/d,xvda,q'"),
    ];
    for (text, want) in cases {
        let got = match Config::parse("vm.cfg", text) {
            Ok(cfg) => DomainConfig::from_config(&cfg).unwrap_err(),
            Err(e) => e,
        };
        assert_eq!(got.to_string(), *want, "{text:?}");
    }
}

#[test]
fn unknown_keys_and_bad_types_warn() {
    let cfg = Config::parse(
        "vm.cfg",
        "name='a'\nfrobnicate=1\nmemory='lots'\nvcpus=[2]\nvif='bridge=br0'\nuuid='x'",
    )
    .unwrap();
    let d = DomainConfig::from_config(&cfg).unwrap();
    assert_eq!((d.memory_mb, d.vcpus), (None, 1));
    assert!(d.vifs.is_empty());
    assert_eq!(
        warnings(&cfg),
        [
            "vm.cfg:2: warning: unknown parameter `frobnicate', ignored",
            "vm.cfg:6: warning: unknown parameter `uuid', ignored",
            "vm.cfg:4: warning: parameter `vcpus' is a list but should be a single value",
            "vm.cfg:3: warning: parameter `memory' is not a valid number",
            "vm.cfg:5: warning: parameter `vif' is a single value but should be a list",
        ]
    );
}

#[test]
fn overrides_apply_to_the_model() {
    let cfg = Config::parse_with_overrides(
        "ubuntu-pv.cfg",
        UBUNTU_PV,
        &["memory=512", "name=\"x\"", "vcpus=2"],
    )
    .unwrap();
    let d = DomainConfig::from_config(&cfg).unwrap();
    assert_eq!((d.name.as_str(), d.memory_mb, d.vcpus), ("x", Some(512), 2));
}

#[test]
fn cpupool_configs() {
    let cfg = Config::parse_with_overrides(
        "command line",
        "",
        &["name=\"GangSched-Pool\"", "sched=\"gang\""],
    )
    .unwrap();
    let p = CpupoolConfig::from_config(&cfg).unwrap();
    assert_eq!(p.name, "GangSched-Pool");
    assert_eq!(p.sched.as_deref(), Some("gang"));
    assert_eq!((p.cpus, p.nodes), (None, None));

    let cfg = Config::parse(
        "/etc/pools/p1.cfg",
        "sched='credit'\ncpus=[2, 3, '6-7']\nnodes='0'",
    )
    .unwrap();
    let p = CpupoolConfig::from_config(&cfg).unwrap();
    assert_eq!(p.name, "p1.cfg", "the file's base name when no name is set");
    assert_eq!(p.cpus.as_deref(), Some("2,3,6-7"));
    assert_eq!(p.nodes.as_deref(), Some("0"));

    let cfg = Config::parse("p.cfg", "name='p'\ncpus='1,5,10-16,^13'\nmemory=3").unwrap();
    let p = CpupoolConfig::from_config(&cfg).unwrap();
    assert_eq!(p.cpus.as_deref(), Some("1,5,10-16,^13"));
    assert_eq!(
        warnings(&cfg),
        ["p.cfg:3: warning: unknown parameter `memory', ignored"]
    );

    let cfg = Config::parse_with_overrides("command line", "", &["sched='gang'"]).unwrap();
    assert_eq!(
        CpupoolConfig::from_config(&cfg).unwrap_err().to_string(),
        "Missing cpupool name!"
    );
}

#[test]
fn vcpu_threads_is_a_shell_pattern_checked_when_parsed() {
    let ok = domain("name = \"q\"\npid = 1\nvcpus = 2\nvcpu_threads = \"CPU [0-9]*/KVM\"\n")
        .expect("a pattern");
    assert_eq!(ok.vcpu_threads.as_deref(), Some("CPU [0-9]*/KVM"));
    let e = domain("name = \"q\"\npid = 1\nvcpu_threads = \"CPU [0-9/KVM\"\n")
        .expect_err("an unclosed class");
    let text = e.to_string();
    assert!(
        text.starts_with("vm.cfg:3:") && text.contains("vcpu_threads") && text.contains("pattern"),
        "{text}"
    );
}
