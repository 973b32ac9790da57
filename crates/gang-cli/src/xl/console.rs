//! `gang console [-e ESC] DOMAIN` and `create -c`: print a domain's console
//! output and follow it, like `tail -f`, while the domain runs.
//!
//! The daemon says where the output goes and whether more may come
//! ([`RequestBody::Console`]); the CLI reads the file itself and asks again
//! every [`POLL`] whether the domain still runs (a reboot may also give a new
//! file). It stops when the domain no longer runs and the file is drained,
//! or when the escape character is typed on a terminal.
//!
//! The terminal: when stdin is a TTY, it is switched to a raw-enough mode
//! (no line buffering, no echo, no signal keys) with `stty`, so the escape
//! character arrives at once, and restored on the way out. `stty` rather than
//! termios calls because the workspace forbids unsafe code and has no
//! termios crate for the CLI. Ctrl-C also ends the console.
//!
//! Input: everything read from stdin (keys on a terminal, or a pipe's
//! content) other than the escape is sent to the domain
//! ([`RequestBody::ConsoleInput`]): a VM's serial port receives it. A
//! process domain has no console input; the first refusal stops forwarding.

use std::fs::File;
use std::io::{IsTerminal as _, Read as _, Write as _};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use gang_proto::{RequestBody, ResponseBody};

use super::{call, UsageError};

/// The default escape character, `^]` (as xl's).
pub const DEFAULT_ESCAPE: u8 = 0x1d;
/// How often the daemon is asked whether the domain still runs.
const POLL: Duration = Duration::from_millis(200);
/// Ctrl-C.
const CTRL_C: u8 = 0x03;

/// `gang console [-e ESC] DOMAIN`.
#[derive(Debug, Args)]
#[command(
    about = "Print a domain's console output and follow it",
    long_about = "Print a domain's console output (a process domain's stdout and stderr, a VM's \
serial port) and follow it as it grows, until the domain stops running or the escape character \
is typed (on a terminal).",
    after_help = "Examples:\n  gang console my-domain\n  gang console -e ^a 3\n\n\
Input typed (or piped) is sent to the domain: a VM's serial port receives it; a process \
domain's console is output only. Differences from xl: on a terminal, Ctrl-C ends the console too. xl's -t (console type) and -n (console number) are \
not supported: a domain has one console."
)]
pub struct ConsoleArgs {
    /// The escape character that ends the console: `^X` (a control
    /// character) or a single character.
    #[arg(short = 'e', value_name = "ESC", default_value = "^]")]
    escape: String,
    /// The domain (id or name).
    #[arg(value_name = "DOMAIN")]
    domain: String,
}

/// Parses an escape character as xenconsole does: one character, or `^`
/// followed by one of `@A-Z[\]^_` (or a lower-case letter).
pub fn parse_escape(text: &str) -> Result<u8, UsageError> {
    let invalid = || UsageError("Invalid escape character".to_string());
    match text.as_bytes() {
        [c] if c.is_ascii() => Ok(*c),
        [b'^', c] if (b'@'..=b'_').contains(&c.to_ascii_uppercase()) => {
            Ok(c.to_ascii_uppercase() & 0x1f)
        }
        _ => Err(invalid()),
    }
}

pub fn console(args: &ConsoleArgs) -> Result<()> {
    let escape = parse_escape(&args.escape)?;
    attach(&args.domain, escape)
}

fn ask(domain: &str) -> Result<(String, bool)> {
    match call(RequestBody::Console {
        domain: domain.to_string(),
    })? {
        ResponseBody::Console { path, live } => Ok((path, live)),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    }
}

/// Follows `domain`'s console until it stops or `escape` is typed.
pub fn attach(domain: &str, escape: u8) -> Result<()> {
    let (mut path, mut live) = ask(domain)?;
    let stop = Arc::new(AtomicBool::new(false));
    let terminal = RawTerminal::enter();
    {
        let stop = Arc::clone(&stop);
        let is_terminal = terminal.is_some();
        let domain = domain.to_string();
        // Reads stdin until the escape (on a terminal) or its end, and sends
        // the rest to the domain; the thread ends with the process.
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 256];
            let mut forward = true;
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 {
                    return;
                }
                let mut bytes = &buf[..n];
                if is_terminal {
                    if let Some(i) = bytes.iter().position(|&b| b == escape || b == CTRL_C) {
                        stop.store(true, Ordering::SeqCst);
                        bytes = &bytes[..i];
                        forward = forward && !bytes.is_empty();
                    }
                }
                if forward {
                    let sent = call(RequestBody::ConsoleInput {
                        domain: domain.clone(),
                        bytes: bytes.to_vec(),
                    });
                    forward = sent.is_ok();
                }
                if stop.load(Ordering::SeqCst) {
                    return;
                }
            }
        });
    }
    let mut file: Option<File> = None;
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if file.is_none() {
            file = File::open(&path).ok();
        }
        if let Some(f) = file.as_mut() {
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                    return Ok(()); // stdout closed: nobody is reading any more
                }
            }
        }
        if !live || stop.load(Ordering::SeqCst) {
            break;
        }
        // Wait, looking at the escape flag more often than at the daemon.
        for _ in 0..4 {
            std::thread::sleep(POLL / 4);
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
        }
        match ask(domain) {
            Ok((p, l)) => {
                if p != path {
                    path = p; // restarted with a new file: follow that one
                    file = None;
                }
                live = l;
            }
            // Gone meanwhile (destroyed): print what is left, then stop.
            Err(_) => live = false,
        }
    }
    if file.is_none() && !stop.load(Ordering::SeqCst) {
        bail!("no console output for domain {domain} ({path} does not exist)");
    }
    Ok(())
}

/// The terminal in a mode that hands over each key at once; restored when
/// dropped.
#[derive(Debug)]
struct RawTerminal {
    saved: String,
}

impl RawTerminal {
    /// Switches stdin's terminal, if it is one and `stty` works.
    fn enter() -> Option<RawTerminal> {
        if !std::io::stdin().is_terminal() {
            return None;
        }
        let saved = Command::new("stty")
            .arg("-g")
            .stdin(Stdio::inherit())
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())?;
        let saved = String::from_utf8(saved.stdout).ok()?.trim().to_string();
        let raw = Command::new("stty")
            .args([
                "-icanon", "-echo", "-isig", "-ixon", "min", "1", "time", "0",
            ])
            .stdin(Stdio::inherit())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        raw.success().then_some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = Command::new("stty")
            .arg(&self.saved)
            .stdin(Stdio::inherit())
            .stderr(Stdio::null())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_characters_as_xenconsole_reads_them() {
        assert_eq!(parse_escape("^]").ok(), Some(0x1d));
        assert_eq!(parse_escape("^a").ok(), Some(0x01));
        assert_eq!(parse_escape("^A").ok(), Some(0x01));
        assert_eq!(parse_escape("q").ok(), Some(b'q'));
        assert!(parse_escape("").is_err());
        assert!(parse_escape("abc").is_err());
        assert!(parse_escape("^1").is_err());
    }
}
