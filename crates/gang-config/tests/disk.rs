//! Disk specifications (xl-disk-configuration).

use gang_config::{Config, DiskAccess, DiskDevtype, DiskFormat, DiskSpec, DomainConfig};

fn disk(
    target: &str,
    format: DiskFormat,
    vdev: &str,
    access: DiskAccess,
    devtype: DiskDevtype,
) -> DiskSpec {
    DiskSpec {
        target: target.to_owned(),
        format,
        vdev: vdev.to_owned(),
        access,
        devtype,
    }
}

use DiskAccess::{ReadOnly, ReadWrite};
use DiskDevtype::{Cdrom, Disk};
use DiskFormat::{Empty, Qcow2, Raw};

#[test]
fn deprecated_prefixes_make_format_non_positional() {
    assert_eq!(
        DiskSpec::parse("phy:/dev/vg/lv,xvda,w").unwrap(),
        disk("/dev/vg/lv", Raw, "xvda", ReadWrite, Disk)
    );
    assert_eq!(
        DiskSpec::parse("file:/img.iso,hdc:cdrom,r").unwrap(),
        disk("/img.iso", Raw, "hdc", ReadOnly, Cdrom)
    );
    assert_eq!(
        DiskSpec::parse("tap:aio:/img,xvdb").unwrap(),
        disk("/img", Raw, "xvdb", ReadWrite, Disk)
    );
    assert_eq!(
        DiskSpec::parse("qcow2:/img.q2,xvdc,ro").unwrap(),
        disk("/img.q2", Qcow2, "xvdc", ReadOnly, Disk)
    );
}

#[test]
fn positional_target_format_vdev_access() {
    let plain = disk("/dev/vg/guest-volume", Raw, "hda", ReadWrite, Disk);
    for spec in [
        "/dev/vg/guest-volume,,hda",
        "/dev/vg/guest-volume,raw,hda,rw",
        "/dev/vg/guest-volume,raw,hda,rw,",
        "format=raw, vdev=hda, access=rw, target=/dev/vg/guest-volume",
        "raw:/dev/vg/guest-volume,hda,w",
    ] {
        assert_eq!(DiskSpec::parse(spec).unwrap(), plain, "{spec}");
    }
    assert_eq!(
        DiskSpec::parse("/i.q,qcow2,xvdz,r").unwrap(),
        disk("/i.q", Qcow2, "xvdz", ReadOnly, Disk)
    );
}

#[test]
fn cdrom_forms() {
    let iso = disk("/root/image.iso", Raw, "hdc", ReadOnly, Cdrom);
    for spec in [
        "/root/image.iso,,hdc,cdrom",
        "/root/image.iso,,hdc,,cdrom",
        "/root/image.iso,raw,hdc,devtype=cdrom",
        "format=raw, vdev=hdc, access=ro, devtype=cdrom, target=/root/image.iso",
        "raw:/root/image.iso,hdc:cdrom,ro",
    ] {
        assert_eq!(DiskSpec::parse(spec).unwrap(), iso, "{spec}");
    }
    // An empty drive.
    assert_eq!(
        DiskSpec::parse(",hdc:cdrom,r").unwrap(),
        disk("", Empty, "hdc", ReadOnly, Cdrom)
    );
    // Explicit rw on a CD-ROM is kept.
    assert_eq!(
        DiskSpec::parse("/i,,hdc,rw,cdrom").unwrap().access,
        ReadWrite
    );
}

#[test]
fn named_target_takes_the_rest() {
    let d = DiskSpec::parse("vdev=xvda, target=/path/with,commas=and,more").unwrap();
    assert_eq!(d.target, "/path/with,commas=and,more");
    assert_eq!(d.vdev, "xvda");
    // A named target is literal: no deprecated prefix is stripped.
    let d = DiskSpec::parse("vdev=xvda,target=phy:/dev/sda").unwrap();
    assert_eq!(d.target, "phy:/dev/sda");
    // A positional target can have colons that are no prefix.
    let d = DiskSpec::parse("/img/with:colon,,xvda").unwrap();
    assert_eq!(d.target, "/img/with:colon");
}

#[test]
fn errors_have_xl_format() {
    let cases: &[(&str, &str)] = &[
        ("/img", "config parsing error in disk specification: no vdev specified in `/img'"),
        ("", "config parsing error in disk specification: no vdev specified in `'"),
        ("/img,xvda,w", "config parsing error in disk specification: unknown value for format: near `xvda' in `/img,xvda,w'"),
        ("phy:/d,xvda,w,extra", "config parsing error in disk specification: too many positional parameters: near `extra' in `phy:/d,xvda,w,extra'"),
        ("phy:/d,xvda,rx", "config parsing error in disk specification: unknown value for access: near `rx' in `phy:/d,xvda,rx'"),
        ("phy:/d,hdc:floppy", "config parsing error in disk specification: unknown deprecated type: near `floppy' in `phy:/d,hdc:floppy'"),
        ("foo:/d,xvda", "config parsing error in disk specification: unknown deprecated disk prefix: near `foo:/d' in `foo:/d,xvda'"),
        ("/d,,xvda,w,colour=red", "config parsing error in disk specification: unknown parameter: near `colour=red' in `/d,,xvda,w,colour=red'"),
        ("/d,,xvda,devtype=floppy", "config parsing error in disk specification: unknown value for type: near `devtype=floppy' in `/d,,xvda,devtype=floppy'"),
        ("/d,,xvda,format=zip", "config parsing error in disk specification: unknown value for format: near `zip' in `/d,,xvda,format=zip'"),
        ("vdev=a,vdev=b,target=/d", "config parsing error in disk specification: vdev respecified: near `b' in `vdev=a,vdev=b,target=/d'"),
        ("/d,,xvda,target=/e", "config parsing error in disk specification: target respecified: near `/e' in `/d,,xvda,target=/e'"),
    ];
    for (spec, want) in cases {
        assert_eq!(
            DiskSpec::parse(spec).unwrap_err().to_string(),
            *want,
            "{spec}"
        );
    }
}

#[test]
fn domain_disk_errors_name_the_file() {
    let cfg = Config::parse("vm.cfg", "name='x'\ndisk=['/img']").unwrap();
    assert_eq!(
        DomainConfig::from_config(&cfg).unwrap_err().to_string(),
        "vm.cfg: config parsing error in disk specification: no vdev specified in `/img'"
    );
}
