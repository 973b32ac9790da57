//! `gang create`: parsing with xl's messages, refusals of what gang cannot
//! run (with what to use instead), the dry run, and the daemon's answer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// A directory of its own for one test, removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(tag: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!("gang-e2e-create-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

fn gang(args: &[&str], cwd: &PathBuf) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gang"))
        .args(args)
        .current_dir(cwd)
        .env("GANG_SOCKET", cwd.join("no-daemon.sock"))
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const SEED_PV: &str = r#"name = "ubuntu-pv"
memory = 256
disk = ['phy:/dev/ubuntu-vg/ubuntu-pv,xvda,w']
vif = [' ']
kernel = "/var/lib/xen/images/ubuntu-netboot/vmlinuz"
ramdisk = "/var/lib/xen/images/ubuntu-netboot/initrd.gz"
extra = "debian-installer/exit/always_halt=true -- console=hvc0"
"#;

const PROCESS: &str = r#"# Two spinning threads, gang-scheduled.
name = "my-domain"
type = "process"
vcpus = 2
memory = 64
command = ["gang", "workload", "spin-barrier", "--threads", "2"]
vcpu_threads = "vcpu*"
gang_policy = "tt,100ms,40ms"
cpus = "0-1"
"#;

#[test]
fn the_seeds_configs_are_refused_saying_what_to_use_instead() {
    let t = dir("refused");
    let d = &t.0;
    std::fs::write(d.join("ubuntu-pv.cfg"), SEED_PV).unwrap();
    let out = gang(&["create", "-n", "ubuntu-pv.cfg"], d);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("Parsing config from ubuntu-pv.cfg\n"),
        "{err}"
    );
    assert!(
        err.contains("type \"pv\"") && err.contains("type = \"hvm\""),
        "{err}"
    );
    // The same guest as HVM runs in QEMU: the dry run accepts it, with the
    // disk and kernel as given.
    let out = gang(&["create", "-n", "ubuntu-pv.cfg", "builder=\"hvm\""], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["domain_type"], "hvm");
    assert_eq!(json["disks"][0]["target"], "/dev/ubuntu-vg/ubuntu-pv");
    let out = gang(
        &[
            "create",
            "-n",
            "ubuntu-pv.cfg",
            "type=\"pvh\"",
            "bootloader=\"pygrub\"",
        ],
        d,
    );
    assert!(text(&out.stderr).contains("bootloader (pygrub) is not supported"));
    let out = gang(
        &["create", "-n", "ubuntu-pv.cfg", "type=\"pvh\"", "vnc=1"],
        d,
    );
    assert!(text(&out.stderr).contains("vnc needs QEMU"));
}

#[test]
fn a_dry_run_prints_the_checked_configuration_with_overrides_applied() {
    let t = dir("dry");
    let d = &t.0;
    std::fs::write(d.join("my-domain.cfg"), PROCESS).unwrap();
    let out = gang(&["create", "-q", "-n", "my-domain.cfg", "memory=128"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "", "-q: nothing on stderr");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["name"], "my-domain");
    assert_eq!(json["memory_mb"], 128);
    assert_eq!(json["vcpus"], 2);
    assert_eq!(json["gang_policy"], "tt,100ms,40ms");
}

#[test]
fn syntax_errors_use_xls_format_and_change_nothing() {
    let t = dir("syntax");
    let d = &t.0;
    std::fs::write(d.join("bad.cfg"), "name = \"x\"\nmemory = [1,\nvcpus = 2\n").unwrap();
    let out = gang(&["create", "-n", "bad.cfg"], d);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).ends_with("\nFailed to parse config: Invalid argument\n"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("bad.cfg:3: config parsing error near `vcpus'"));
    let out = gang(&["create", "-n", "missing.cfg"], d);
    assert_eq!(out.status.code(), Some(1));
    let out = gang(&["create", "-n"], d);
    assert_eq!(out.status.code(), Some(2), "usage error");
}

#[test]
fn creating_needs_the_daemon_and_says_so() {
    let t = dir("daemon");
    let d = &t.0;
    std::fs::write(d.join("my-domain.cfg"), PROCESS).unwrap();
    let out = gang(&["create", "my-domain.cfg"], d);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is `gang daemon` running?"));
}
