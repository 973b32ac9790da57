//! The domain commands' command line, without a daemon: help texts, xl's
//! usage errors (exit 2), checks made before the daemon is asked, and the
//! "no daemon running" error (exit 1).

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
    let d = std::env::temp_dir().join(format!("gang-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

/// Runs `gang` with GANG_SOCKET at a path where nothing listens.
fn gang(dir: &TempDir, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gang"))
        .args(args)
        .env("GANG_SOCKET", dir.0.join("no-daemon.sock"))
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const DOMAIN_COMMANDS: &[&str] = &[
    "list",
    "vcpu-list",
    "pause",
    "unpause",
    "shutdown",
    "reboot",
    "destroy",
    "dmesg",
    "console",
    "sched-gang",
    "trace",
    "create",
];

#[test]
fn every_domain_command_has_a_help_with_an_example() {
    let t = dir("help");
    for cmd in DOMAIN_COMMANDS {
        for flag in ["-h", "--help"] {
            let out = gang(&t, &[cmd, flag]);
            assert_eq!(out.status.code(), Some(0), "gang {cmd} {flag}");
            let help = text(&out.stdout);
            assert!(
                help.contains(&format!("Usage: gang {cmd}")),
                "{cmd}: {help}"
            );
            assert!(
                help.contains("Example"),
                "{cmd} {flag} has no example: {help}"
            );
            assert!(help.contains(&format!("gang {cmd} ")), "{cmd}: {help}");
        }
    }
    // Options are documented.
    let list = text(&gang(&t, &["list", "--help"]).stdout);
    for opt in [
        "-l, --long",
        "-v, --verbose",
        "-c, --cpupool",
        "Differences from xl",
    ] {
        assert!(list.contains(opt), "{opt}: {list}");
    }
    let sched = text(&gang(&t, &["sched-gang", "--help"]).stdout);
    for s in [
        "-p, --cpupool <POOL>",
        "-d, --domain <DOMAIN>",
        "-c, --cpus <CPUS>",
        "-t, --policy <POLICY>",
        "  tt,PERIOD,ACTIVE[,exact][,sf]  time-triggered",
        "a bare number is ms",
        "gang sched-gang -p GangSched-Pool -d my-domain -c 1,2 -t tt,100,40",
    ] {
        assert!(sched.contains(s), "{s}: {sched}");
    }
    let console = text(&gang(&t, &["console", "--help"]).stdout);
    assert!(
        console.contains("-e <ESC>") && console.contains("[default: ^]]"),
        "{console}"
    );
    let shutdown = text(&gang(&t, &["shutdown", "--help"]).stdout);
    for s in ["-w, --wait", "-a, --all", "--timeout <SECONDS>"] {
        assert!(shutdown.contains(s), "{s}: {shutdown}");
    }
    // The top-level help lists them.
    let top = text(&gang(&t, &["--help"]).stdout);
    for cmd in DOMAIN_COMMANDS {
        assert!(top.contains(&format!("  {cmd} ")), "{cmd}: {top}");
    }
}

#[test]
fn an_unknown_option_is_refused_as_xl_does() {
    let t = dir("unknown");
    for (args, option) in [
        (&["list", "-x"][..], "x"),
        (&["list", "-lq"][..], "q"),
        (&["vcpu-list", "--bogus"][..], "--bogus"),
        (&["sched-gang", "-z"][..], "z"),
        (&["pause", "-f", "d"][..], "f"),
        (&["dmesg", "--what=1"][..], "--what"),
        // A prefix of the sub-command is resolved first.
        (&["vcpu-l", "-q"][..], "q"),
        (&["sched-g", "-x"][..], "x"),
    ] {
        let out = gang(&t, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(
            text(&out.stderr),
            format!("option `{option}' not supported.\n"),
            "{args:?}"
        );
        assert!(out.stdout.is_empty());
    }
    // gang's own sub-commands keep clap's messages.
    let out = gang(&t, &["sim", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unexpected argument '--bogus'"));
}

#[test]
fn too_few_arguments_say_how_many_then_the_help() {
    let t = dir("few");
    for (args, cmd, n) in [
        (&["pause"][..], "pause", "1 argument."),
        (&["unpause"][..], "unpause", "1 argument."),
        (&["reboot"][..], "reboot", "1 argument."),
        (&["destroy"][..], "destroy", "1 argument."),
        (&["console"][..], "console", "1 argument."),
        (&["trace", "--json"][..], "trace", "1 argument."),
        (&["shutdown"][..], "shutdown", "1 argument."),
        (&["shutdown", "-w"][..], "shutdown", "1 argument."),
        (
            &["cpupool-rename", "x"][..],
            "cpupool-rename",
            "2 arguments.",
        ),
        (&["cpupool-migrate"][..], "cpupool-migrate", "2 arguments."),
        (&["unp"][..], "unpause", "1 argument."),
    ] {
        let out = gang(&t, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.starts_with(&format!("'gang {cmd}' requires at least {n}\n\n")),
            "{args:?}: {err}"
        );
        assert!(
            err.contains(&format!("Usage: gang {cmd}")),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn other_usage_errors_exit_2() {
    let t = dir("usage");
    let out = gang(&t, &["shutdown", "-a", "dom"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot be used with"));
    for args in [
        &["sched-gang", "-t", "be,1"][..],
        &["sched-gang", "-c", "1"][..],
    ] {
        let out = gang(&t, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(text(&out.stderr).contains("name it with -d DOMAIN"));
    }
    for esc in ["abc", "^1", ""] {
        let out = gang(&t, &["console", "-e", esc, "dom"]);
        assert_eq!(out.status.code(), Some(2), "{esc:?}");
        assert_eq!(text(&out.stderr), "Invalid escape character\n");
    }
}

#[test]
fn bad_gang_parameters_are_refused_before_the_daemon_is_asked() {
    let t = dir("params");
    for (policy, cpus, message) in [
        (
            "tt,1",
            None,
            "Invalid policy: policy `tt,1`: expected tt,PERIOD,ACTIVE[,exact][,sf] or et,PERIOD,ACTIVE[,sf]",
        ),
        ("xx,1", None, "Invalid policy: unknown policy `xx`"),
        (
            "be,0",
            None,
            "weight must be a whole number from 1 to 65535",
        ),
        ("tt,100ms,40parsecs", None, "unknown unit `parsecs`"),
        ("tt,100,40,fast", None, "unknown flag `fast`"),
        ("tt,100,40", Some("3-1"), "Invalid pcpu range: 3-1."),
        (
            "tt,100,40",
            Some("^all"),
            "Can't combine \"^\" and \"all\".",
        ),
    ] {
        let mut args = vec!["sched-gang", "-d", "my-domain", "-t", policy];
        if let Some(c) = cpus {
            args.extend(["-c", c]);
        }
        let out = gang(&t, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(message), "{args:?}: {err}");
        assert!(!err.contains("gang daemon"), "asked the daemon: {err}");
    }
}

#[test]
fn without_a_daemon_every_client_command_says_so() {
    let t = dir("nodaemon");
    for args in [
        &["list"][..],
        &["list", "-l"][..],
        &["list", "-v", "-c", "3"][..],
        &["vcpu-list"][..],
        &["pause", "d"][..],
        &["unpause", "d"][..],
        &["shutdown", "d"][..],
        &["shutdown", "-a", "-w"][..],
        &["reboot", "d"][..],
        &["destroy", "d"][..],
        &["dmesg", "-c"][..],
        &["console", "d"][..],
        &["sched-gang"][..],
        &["sched-gang", "-d", "d"][..],
        &["sched-gang", "-d", "d", "-t", "tt,100ms,40ms", "-c", "1-2"][..],
        &["trace", "d"][..],
    ] {
        let out = gang(&t, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.starts_with("cannot connect to the gang daemon at ")
                && err.contains("(is `gang daemon` running?)"),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
