//! gang-guest: the workloads of gang's Linux guest image (`/bin/gang-guest`).
//!
//! A std program built by this crate's `build.rs` as a static executable
//! (glibc, `+crt-static`), run by the image's `/init`:
//!
//! * `gang-guest barrier [--threads N]`: N threads (default: the online
//!   CPUs) meet at a sense-reversing spin barrier, round after round, with
//!   atomics only (no system call in the loop). Every second it prints
//!   `gang-guest: barrier N rounds/s`.
//! * `gang-guest pipes [--pairs N]`: N pairs of processes (default: the
//!   online CPUs) ping-pong an 8-byte message through pipes, a kernel-heavy
//!   load. Every second it prints `gang-guest: pipes N msgs/s`, the total
//!   over the pairs; a message is one transfer, so a round trip counts 2.
//!
//! Anything else prints the usage and exits with status 2.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: gang-guest barrier [--threads N] | gang-guest pipes [--pairs N]";

/// The internal sub-commands `pipes` runs itself as.
const PING: &str = "__pipes-ping";
const PONG: &str = "__pipes-pong";

/// The message the pairs exchange.
const MSG: [u8; 8] = *b"gang-msg";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.first().map(String::as_str) {
        Some("barrier") => count_option(&args[1..], "--threads").map(|n| barrier(n.max(1))),
        Some("pipes") => count_option(&args[1..], "--pairs").map(|n| pipes(n.max(1))),
        Some(PING) if args.len() == 1 => Some(ping()),
        Some(PONG) if args.len() == 1 => Some(pong()),
        _ => None,
    };
    match parsed {
        Some(code) => code,
        None => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// `[NAME N]`: N, or the online CPUs when absent; None if malformed.
fn count_option(rest: &[String], name: &str) -> Option<usize> {
    match rest {
        [] => Some(online_cpus()),
        [flag, n] if flag == name => n.parse().ok(),
        _ => None,
    }
}

fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Prints one line on stdout and flushes it; false if stdout is gone.
fn report(line: &str) -> bool {
    let mut out = std::io::stdout().lock();
    writeln!(out, "gang-guest: {line}").is_ok() && out.flush().is_ok()
}

/// Every second, the rate at which `counter` grew, through `line`; returns
/// when stdout is gone.
fn report_rates(counter: impl Fn() -> u64, line: impl Fn(u64) -> String) -> ExitCode {
    let mut last = counter();
    let mut since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now_count = counter();
        let now = Instant::now();
        let secs = now.duration_since(since).as_secs_f64().max(1e-3);
        let rate = (now_count.wrapping_sub(last) as f64 / secs).round() as u64;
        if !report(&line(rate)) {
            return ExitCode::FAILURE;
        }
        last = now_count;
        since = now;
    }
}

/// A sense-reversing barrier for `count` threads.
struct Barrier {
    count: u64,
    waiting: AtomicU64,
    sense: AtomicBool,
    /// Rounds completed (incremented by each round's last arrival).
    rounds: AtomicU64,
}

impl Barrier {
    /// Waits for every thread; `local` is the caller's own sense, flipped
    /// each round.
    fn wait(&self, local: &mut bool) {
        *local = !*local;
        if self.waiting.fetch_add(1, Ordering::AcqRel) + 1 == self.count {
            self.waiting.store(0, Ordering::Relaxed);
            self.rounds.fetch_add(1, Ordering::Relaxed);
            self.sense.store(*local, Ordering::Release);
        } else {
            while self.sense.load(Ordering::Acquire) != *local {
                std::hint::spin_loop();
            }
        }
    }
}

fn barrier(threads: usize) -> ExitCode {
    let shared = Arc::new(Barrier {
        count: threads as u64,
        waiting: AtomicU64::new(0),
        sense: AtomicBool::new(false),
        rounds: AtomicU64::new(0),
    });
    for i in 0..threads {
        let b = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name(format!("barrier{i}"))
            .spawn(move || {
                let mut local = false;
                loop {
                    b.wait(&mut local);
                }
            });
        if let Err(e) = spawned {
            eprintln!("gang-guest: cannot start barrier thread {i}: {e}");
            return ExitCode::FAILURE;
        }
    }
    report(&format!("barrier started, {threads} threads"));
    report_rates(
        || shared.rounds.load(Ordering::Relaxed),
        |r| format!("barrier {r} rounds/s"),
    )
}

fn pipes(pairs: usize) -> ExitCode {
    let exe = std::env::current_exe().unwrap_or_else(|_| "/bin/gang-guest".into());
    let total = Arc::new(AtomicU64::new(0));
    let mut children = Vec::new();
    for i in 0..pairs {
        let child = Command::new(&exe)
            .arg(PING)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                eprintln!("gang-guest: cannot start pipe pair {i}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let Some(out) = child.stdout.take() else {
            return ExitCode::FAILURE;
        };
        let total = Arc::clone(&total);
        // Each ping reports its messages so far, one number a line.
        std::thread::spawn(move || {
            let mut seen = 0u64;
            for line in BufReader::new(out).lines() {
                let Ok(n) = line.map(|l| l.trim().parse::<u64>().unwrap_or(seen)) else {
                    break;
                };
                total.fetch_add(n.saturating_sub(seen), Ordering::Relaxed);
                seen = seen.max(n);
            }
        });
        children.push(child);
    }
    report(&format!("pipes started, {pairs} pairs"));
    let code = report_rates(
        || total.load(Ordering::Relaxed),
        |r| format!("pipes {r} msgs/s"),
    );
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    code
}

/// One side of a pair: starts its pong, sends it the message and waits for
/// the echo, forever; writes its message count on stdout about 10 times a
/// second. Exits when the pong or the parent goes away.
fn ping() -> ExitCode {
    let exe = std::env::current_exe().unwrap_or_else(|_| "/bin/gang-guest".into());
    let child = Command::new(exe)
        .arg(PONG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        return ExitCode::FAILURE;
    };
    let (Some(mut to), Some(mut from)) = (child.stdin.take(), child.stdout.take()) else {
        return ExitCode::FAILURE;
    };
    let mut out = std::io::stdout().lock();
    let mut msgs = 0u64;
    let mut next_report = Instant::now();
    let mut buf = [0u8; MSG.len()];
    let code = loop {
        if to.write_all(&MSG).is_err() || from.read_exact(&mut buf).is_err() {
            break ExitCode::FAILURE;
        }
        msgs += 2;
        if msgs % 64 == 0 && Instant::now() >= next_report {
            if writeln!(out, "{msgs}").is_err() || out.flush().is_err() {
                break ExitCode::SUCCESS;
            }
            next_report = Instant::now() + Duration::from_millis(100);
        }
    };
    drop(to);
    let _ = child.kill();
    let _ = child.wait();
    code
}

/// The other side: echoes every message back until its input closes.
fn pong() -> ExitCode {
    let mut input = std::io::stdin().lock();
    let mut output = std::io::stdout().lock();
    let mut buf = [0u8; MSG.len()];
    while input.read_exact(&mut buf).is_ok() {
        if output.write_all(&buf).is_err() || output.flush().is_err() {
            break;
        }
    }
    ExitCode::SUCCESS
}
