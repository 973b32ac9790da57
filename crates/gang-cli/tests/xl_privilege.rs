//! End to end: least privilege. A process domain's command runs as its
//! `user` (gang's own xl.cfg key), created running or paused; an unknown
//! user is refused with nothing left behind; the state directory is
//! private; every change in `gang dmesg` says who asked for it.
//!
//! Needs root, 2 CPUs and a cgroup freezer; each test says why it skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use common::{can_run_domains, start, wait_for, Daemon, TestDir};

/// A process domain config file; returns its path.
fn cfg(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(format!("{name}.cfg"));
    std::fs::write(
        &path,
        format!("name = \"{name}\"\ntype = \"process\"\n{body}"),
    )
    .unwrap();
    path.display().to_string()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The lines of `gang dmesg` that mention `what`.
fn dmesg_lines(d: &Daemon, what: &str) -> Vec<String> {
    d.ok(&["dmesg"])
        .lines()
        .filter(|l| l.contains(what))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_process_domain_runs_as_its_user_and_changes_say_who_asked() {
    if !can_run_domains() {
        return;
    }
    let t = TestDir::new("run-as");
    let d = start(&t.0);
    // The state is root's alone.
    assert_eq!(mode(&t.0.join("state")), 0o700);
    assert_eq!(mode(&t.0.join("state").join("state.db")), 0o600);
    // Where the domains (as nobody) may write.
    let out = t.0.join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
    let ids = |name: &str| {
        let f = out.join(name);
        format!(
            "command = \"id -u > {f}.tmp; id -g >> {f}.tmp; mv {f}.tmp {f}; sleep 600\"\n\
             user = \"nobody\"\n",
            f = f.display()
        )
    };
    let nobody = std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("nobody:"))
        .map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            format!("{}\n{}\n", f[2], f[3])
        })
        .expect("this host has a nobody user");

    d.ok(&["create", &cfg(&t.0, "u", &ids("u"))]);
    wait_for("the domain to write its ids", || out.join("u").exists());
    assert_eq!(std::fs::read_to_string(out.join("u")).unwrap(), nobody);

    // Created paused: its start gate opens for a user who cannot reach the
    // state directory (the gate is its standard input).
    d.ok(&["create", "-p", &cfg(&t.0, "p", &ids("p"))]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!out.join("p").exists(), "a paused domain ran");
    d.ok(&["unpause", "p"]);
    wait_for("the unpaused domain to write its ids", || {
        out.join("p").exists()
    });
    assert_eq!(std::fs::read_to_string(out.join("p")).unwrap(), nobody);

    d.ok(&["pause", "u"]);
    d.ok(&["destroy", "u"]);
    d.ok(&["destroy", "p"]);
    // Every change says who asked; this test runs as root.
    for what in [
        "(u) created",
        "(p) created",
        "(p) unpaused",
        "(u) paused",
        "(u) destroyed",
    ] {
        let lines = dmesg_lines(&d, what);
        assert_eq!(lines.len(), 1, "{what}: {lines:?}");
        assert!(lines[0].contains(" (by uid 0 pid "), "{}", lines[0]);
    }
    // What nobody asked for (the daemon's start) names nobody.
    assert!(!dmesg_lines(&d, "started, state in")[0].contains("by uid"));
}

#[test]
fn an_unknown_user_is_refused_with_nothing_left_behind() {
    if !can_run_domains() {
        return;
    }
    let t = TestDir::new("run-as-unknown");
    let d = start(&t.0);
    let ran = t.0.join("ran");
    let bad = cfg(
        &t.0,
        "x",
        &format!(
            "command = \"touch {}; sleep 600\"\nuser = \"no-such-user-here\"\n",
            ran.display()
        ),
    );
    d.fails(
        &["create", &bad],
        "user 'no-such-user-here' does not exist (see /etc/passwd)",
    );
    let bad = cfg(
        &t.0,
        "y",
        &format!(
            "command = \"touch {}; sleep 600\"\nuser = \"nobody\"\ngroup = \"no-such-group-here\"\n",
            ran.display()
        ),
    );
    d.fails(
        &["create", &bad],
        "group 'no-such-group-here' does not exist (see /etc/group)",
    );
    // Adopted processes keep their own users: `user` with `pid` is refused
    // where the file is read.
    let adopted = cfg(
        &t.0,
        "z",
        &format!("pid = {}\nuser = \"nobody\"\n", std::process::id()),
    );
    d.fails(&["create", &adopted], "keep their own users");
    let list = d.ok(&["list"]);
    assert_eq!(list.lines().count(), 2, "only Domain-0:\n{list}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!ran.exists(), "a refused domain ran");
    let consoles = std::fs::read_dir(t.0.join("state").join("console"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(consoles, 0, "a refused domain left a console file");
    assert!(dmesg_lines(&d, "created").is_empty());
}
