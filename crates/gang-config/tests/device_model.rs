//! The keys of QEMU-run domains: device model, console, display, platform,
//! and the xl keys gang records as unsupported.

use gang_config::{
    Config, ConfigError, DeviceModel, DomainConfig, DOMAIN_KEYS, UNSUPPORTED_DOMAIN_KEYS,
};

fn parse(text: &str) -> (Result<DomainConfig, ConfigError>, Vec<String>) {
    let cfg = Config::parse("vm.cfg", text).expect("valid syntax");
    let d = DomainConfig::from_config(&cfg);
    (d, cfg.warnings().iter().map(ToString::to_string).collect())
}

fn domain(text: &str) -> DomainConfig {
    let (d, warnings) = parse(&format!("name='a'\ntype='hvm'\n{text}"));
    assert!(warnings.is_empty(), "{warnings:?}");
    d.expect("a valid domain")
}

fn error(text: &str) -> String {
    parse(&format!("name='a'\n{text}"))
        .0
        .expect_err("an invalid domain")
        .to_string()
}

#[test]
fn defaults() {
    let d = domain("");
    assert_eq!(d.device_model, None);
    assert_eq!(
        (d.device_model_override, d.device_model_version),
        (None, None)
    );
    assert!(d.serial.is_empty());
    assert_eq!((d.vnclisten, d.vncpasswd, d.vncdisplay), (None, None, None));
    assert!(d.vncunused, "vncunused defaults to 1");
    assert_eq!(
        (d.sdl, d.stdvga, d.vga, d.videoram),
        (None, None, None, None)
    );
    assert_eq!((d.acpi, d.apic, d.pae, d.hpet), (None, None, None, None));
    assert_eq!((d.nestedhvm, d.localtime, d.nographic), (None, None, None));
    assert_eq!(d.keymap, None);
    assert!(d.unsupported.is_empty());
    assert!(d.vif_specs.is_empty());
}

#[test]
fn device_model_keys() {
    let d = domain(
        "device_model='qemu'\ndevice_model_override='/opt/qemu/bin/qemu-system-x86_64'\n\
         device_model_version='qemu-xen'",
    );
    assert_eq!(d.device_model, Some(DeviceModel::Qemu));
    assert_eq!(
        d.device_model_override.as_deref(),
        Some("/opt/qemu/bin/qemu-system-x86_64")
    );
    assert_eq!(d.device_model_version.as_deref(), Some("qemu-xen"));
    assert_eq!(
        domain("device_model='gang'").device_model,
        Some(DeviceModel::Gang)
    );
    assert_eq!(
        error("device_model='xen'"),
        "vm.cfg:2: invalid value for parameter `device_model': unknown device model \"xen\" \
         (want \"qemu\" or \"gang\")"
    );
    assert_eq!(
        error("device_model=1"),
        "vm.cfg:2: invalid value for parameter `device_model': unknown device model \"1\" \
         (want \"qemu\" or \"gang\")"
    );
}

#[test]
fn serial_is_a_string_or_a_list() {
    assert_eq!(domain("serial='pty'").serial, ["pty"]);
    assert_eq!(
        domain("serial=['pty', 'file:/tmp/s']").serial,
        ["pty", "file:/tmp/s"]
    );
    assert!(domain("serial=[]").serial.is_empty());
}

#[test]
fn vnc_keys() {
    let d = domain(
        "vnc=1\nvnclisten='0.0.0.0'\nvncpasswd='secret'\nvncdisplay=3\nvncunused=0\n\
         keymap='de'",
    );
    assert_eq!(d.vnc, Some(true));
    assert_eq!(d.vnclisten.as_deref(), Some("0.0.0.0"));
    assert_eq!(d.vncpasswd.as_deref(), Some("secret"));
    assert_eq!(d.vncdisplay, Some(3));
    assert!(!d.vncunused);
    assert_eq!(d.keymap.as_deref(), Some("de"));
    assert_eq!(
        error("vncdisplay='-1'"),
        "vm.cfg:2: invalid value for parameter `vncdisplay': must not be negative"
    );
    assert_eq!(
        error("vncdisplay=5000000000"),
        "vm.cfg:2: invalid value for parameter `vncdisplay': too large"
    );
}

#[test]
fn display_and_platform_booleans() {
    let d = domain(
        "sdl=0\nstdvga=1\nvga='cirrus'\nvideoram=16\nacpi=1\napic=0\npae=1\nhpet=0\n\
         nestedhvm=1\nlocaltime=1\nnographic=0",
    );
    assert_eq!((d.sdl, d.stdvga), (Some(false), Some(true)));
    assert_eq!(d.vga.as_deref(), Some("cirrus"));
    assert_eq!(d.videoram, Some(16));
    assert_eq!(
        (d.acpi, d.apic, d.pae, d.hpet),
        (Some(true), Some(false), Some(true), Some(false))
    );
    assert_eq!(
        (d.nestedhvm, d.localtime, d.nographic),
        (Some(true), Some(true), Some(false))
    );
    // Booleans are numbers: any non-zero one is true, a numeric string too.
    assert_eq!(domain("sdl=2").sdl, Some(true));
    assert_eq!(domain("acpi='0'").acpi, Some(false));
    assert_eq!(
        error("videoram='-8'"),
        "vm.cfg:2: invalid value for parameter `videoram': must not be negative"
    );
    // A wrong type is xl's warning, and the value is absent.
    let (d, warnings) = parse("name='a'\nsdl='yes'\nstdvga=[1]");
    let d = d.unwrap();
    assert_eq!((d.sdl, d.stdvga), (None, None));
    assert_eq!(
        warnings,
        [
            "vm.cfg:2: warning: parameter `sdl' is not a valid number",
            "vm.cfg:3: warning: parameter `stdvga' is a list but should be a single value",
        ]
    );
}

#[test]
fn unsupported_keys_are_recorded_in_file_order() {
    let (d, warnings) = parse(
        "name='a'\nusbdevice=['tablet']\nsoundhw='hda'\nfrobnicate=1\nviridian=1\n\
         pci=['01:00.0']\nusb=1\nspice=1\nrtc_timeoffset=3600\non_soft_reset='destroy'\n\
         vtpm=['backend=0']",
    );
    assert_eq!(
        d.unwrap().unsupported,
        [
            "usbdevice",
            "soundhw",
            "viridian",
            "pci",
            "usb",
            "spice",
            "rtc_timeoffset",
            "on_soft_reset",
            "vtpm"
        ]
    );
    // Only truly unknown keys are warned about.
    assert_eq!(
        warnings,
        ["vm.cfg:4: warning: unknown parameter `frobnicate', ignored"]
    );
    // A value that asks for nothing is not recorded.
    let d = domain("usb=0\nviridian=0\npci=[]\nsoundhw=''\nspice='0'\nusbdevice=['mouse']");
    assert_eq!(d.unsupported, ["usbdevice"]);
    // Overrides count, in the order their keys were first seen.
    let cfg =
        Config::parse_with_overrides("vm.cfg", "name='a'\nusb=0", &["soundhw='sb16'", "usb=1"])
            .unwrap();
    assert_eq!(
        DomainConfig::from_config(&cfg).unwrap().unsupported,
        ["usb", "soundhw"]
    );
}

#[test]
fn unsupported_keys_are_not_honoured_keys() {
    for key in UNSUPPORTED_DOMAIN_KEYS {
        assert!(!DOMAIN_KEYS.contains(key), "{key}");
    }
    let mut sorted = [DOMAIN_KEYS, UNSUPPORTED_DOMAIN_KEYS].concat();
    let all = sorted.len();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), all, "no key twice");
}

#[test]
fn xlexample_hvm() {
    // Xen's tools/examples/xlexample.hvm, its active lines.
    let d = domain(
        "name = \"example.hvm\"\nmemory = 128\nvcpus = 2\nvif = [ '' ]\n\
         disk = [ '/dev/vg/guest-volume,raw,xvda,rw' ]\nvnc = 1\n",
    );
    assert_eq!(d.name, "example.hvm");
    assert_eq!((d.memory_mb, d.vcpus, d.vnc), (Some(128), 2, Some(true)));
    assert_eq!(d.vifs, [""]);
    assert_eq!(d.vif_specs.len(), 1);
    assert!(d.unsupported.is_empty());
}
