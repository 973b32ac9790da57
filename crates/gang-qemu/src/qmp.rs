//! A small client of QMP, QEMU's machine protocol: newline-delimited JSON
//! on a Unix socket, a greeting, `qmp_capabilities`, then commands with
//! answers and asynchronous events.
//!
//! # Shape
//!
//! A reader thread owns the socket's read side: it sends every answer
//! (`return` or `error`, carrying the `id` we gave the command) to one
//! channel and every event to another. [`Qmp::execute`] writes a command
//! with a fresh id and waits, up to its deadline, for the answer with that
//! id; answers to commands that timed out earlier are dropped, so a late
//! answer is never taken for the next command's. Events are collected
//! whenever the daemon asks ([`Qmp::take_events`]), so nothing has to poll
//! QEMU to hear of a guest shutdown or panic.
//!
//! # Invariants
//!
//! * One connection per QEMU at a time (QEMU's QMP server takes one client);
//!   dropping a [`Qmp`] shuts the socket down and joins the reader.
//! * When QEMU closes the socket (it ended), [`Qmp::is_closed`] turns true,
//!   events read before the end are still returned, and commands fail at
//!   once with [`QmpError::Closed`].
//!
//! Why not the `qapi` crate: its types are generated from one QEMU
//! version's schema (a field added later fails to deserialise against the
//! QEMU 7.2 that Debian ships), its generated code is large to build, and
//! gang uses eight commands and four events.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long a command may take before it is given up.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a QMP operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be reached in time.
    #[error("QMP socket {path}: {source}")]
    Connect {
        /// The socket.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Reading or writing the socket failed.
    #[error("QMP: {0}")]
    Io(#[from] std::io::Error),
    /// QEMU did not greet or answer as QMP does.
    #[error("QMP: unexpected message from QEMU: {0}")]
    Protocol(String),
    /// QEMU refused a command.
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        /// The command.
        command: String,
        /// QEMU's error class.
        class: String,
        /// QEMU's description.
        desc: String,
    },
    /// No answer in time.
    #[error("QMP command {0} got no answer within {1:?}")]
    Timeout(String, Duration),
    /// QEMU closed the connection (it ended).
    #[error("QMP: QEMU closed the connection")]
    Closed,
}

type Result<T, E = QmpError> = std::result::Result<T, E>;

/// An asynchronous event from QEMU.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its name, e.g. `SHUTDOWN`, `RESET`, `GUEST_PANICKED`, `STOP`.
    pub name: String,
    /// Its data (`null` when it has none).
    pub data: Value,
}

impl Event {
    /// A string field of the event's data.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.data.get(key).and_then(Value::as_str)
    }
}

/// QEMU's run state (`query-status`), the ones gang acts on by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// Guest code runs.
    Running,
    /// Stopped by `stop` or started with `-S`.
    Paused,
    /// The guest shut down or reset and, with `-no-shutdown`, QEMU waits.
    Shutdown,
    /// The guest panicked (pvpanic) and QEMU paused it.
    GuestPanicked,
    /// An emulation error stopped the guest.
    InternalError,
    /// Any other state, by QEMU's name.
    Other(String),
}

impl RunState {
    fn from_name(s: &str) -> RunState {
        match s {
            "running" => RunState::Running,
            "paused" | "prelaunch" => RunState::Paused,
            "shutdown" => RunState::Shutdown,
            "guest-panicked" => RunState::GuestPanicked,
            "internal-error" => RunState::InternalError,
            other => RunState::Other(other.to_owned()),
        }
    }
}

/// One answer: the command's id and its `return` value or error.
type Answer = (u64, Result<Value>);

/// A QMP connection, in command mode.
#[derive(Debug)]
pub struct Qmp {
    socket: UnixStream,
    answers: Receiver<Answer>,
    events: Receiver<Event>,
    closed: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    next_id: u64,
}

impl Qmp {
    /// Connects to QEMU's QMP socket at `path`, waiting up to `timeout`
    /// for it to appear (QEMU creates it while it starts), reads the
    /// greeting and enters command mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp> {
        let deadline = Instant::now() + timeout;
        let socket = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline && retriable(&e) => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(source) => {
                    return Err(QmpError::Connect {
                        path: path.display().to_string(),
                        source,
                    })
                }
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        socket.set_read_timeout(Some(left.max(Duration::from_millis(500))))?;
        let mut lines = BufReader::new(socket.try_clone()?);
        let mut greeting = String::new();
        lines.read_line(&mut greeting)?;
        let hello: Value = serde_json::from_str(&greeting)
            .map_err(|_| QmpError::Protocol(greeting.trim().to_owned()))?;
        if hello.get("QMP").is_none() {
            return Err(QmpError::Protocol(greeting.trim().to_owned()));
        }
        socket.set_read_timeout(None)?;
        let (answer_tx, answers) = mpsc::channel();
        let (event_tx, events) = mpsc::channel();
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        let reader = std::thread::Builder::new()
            .name("qmp-reader".into())
            .spawn(move || read_loop(lines, &answer_tx, &event_tx, &flag))?;
        let mut qmp = Qmp {
            socket,
            answers,
            events,
            closed,
            reader: Some(reader),
            next_id: 0,
        };
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Runs `command` with `arguments` and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        self.execute_within(command, arguments, COMMAND_TIMEOUT)
    }

    /// [`Qmp::execute`] with its own deadline.
    pub fn execute_within(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value> {
        if self.is_closed() {
            return Err(QmpError::Closed);
        }
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "execute": command, "id": id });
        if let Some(args) = arguments {
            message["arguments"] = args;
        }
        let mut line = message.to_string();
        line.push('\n');
        self.socket.write_all(line.as_bytes())?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.answers.recv_timeout(left) {
                Ok((got, answer)) if got == id => {
                    return answer.map_err(|e| match e {
                        QmpError::Command { class, desc, .. } => QmpError::Command {
                            command: command.to_owned(),
                            class,
                            desc,
                        },
                        other => other,
                    })
                }
                Ok(_) => continue, // a late answer to a command given up on
                Err(RecvTimeoutError::Timeout) => {
                    return Err(QmpError::Timeout(command.to_owned(), timeout))
                }
                Err(RecvTimeoutError::Disconnected) => return Err(QmpError::Closed),
            }
        }
    }

    /// The events received since the last call, oldest first.
    pub fn take_events(&self) -> Vec<Event> {
        self.events.try_iter().collect()
    }

    /// Whether QEMU closed the connection.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The guest's run state.
    pub fn status(&mut self) -> Result<RunState> {
        let v = self.execute("query-status", None)?;
        let s = v
            .get("status")
            .and_then(Value::as_str)
            .ok_or_else(|| QmpError::Protocol(format!("query-status answered {v}")))?;
        Ok(RunState::from_name(s))
    }

    /// The host thread id of each vCPU, in vCPU index order.
    pub fn vcpu_threads(&mut self) -> Result<Vec<i32>> {
        let v = self.execute("query-cpus-fast", None)?;
        let cpus = v
            .as_array()
            .ok_or_else(|| QmpError::Protocol(format!("query-cpus-fast answered {v}")))?;
        let mut threads = Vec::with_capacity(cpus.len());
        for cpu in cpus {
            let index = cpu.get("cpu-index").and_then(Value::as_i64);
            let tid = cpu.get("thread-id").and_then(Value::as_i64);
            match (index, tid.and_then(|t| i32::try_from(t).ok())) {
                (Some(i), Some(t)) => threads.push((i, t)),
                _ => return Err(QmpError::Protocol(format!("a vCPU without thread: {cpu}"))),
            }
        }
        threads.sort_unstable();
        Ok(threads.into_iter().map(|(_, t)| t).collect())
    }

    /// Lets the vCPUs run (`cont`).
    pub fn cont(&mut self) -> Result<()> {
        self.execute("cont", None).map(drop)
    }

    /// Stops the vCPUs (`stop`); returns once no guest code runs.
    pub fn stop(&mut self) -> Result<()> {
        self.execute("stop", None).map(drop)
    }

    /// Presses the guest's ACPI power button.
    pub fn system_powerdown(&mut self) -> Result<()> {
        self.execute("system_powerdown", None).map(drop)
    }

    /// Resets the machine (a hard reboot).
    pub fn system_reset(&mut self) -> Result<()> {
        self.execute("system_reset", None).map(drop)
    }

    /// Asks QEMU to exit.
    pub fn quit(&mut self) -> Result<()> {
        match self.execute("quit", None) {
            // QEMU may close the socket before its answer is read.
            Ok(_) | Err(QmpError::Closed) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Qmp {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn retriable(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
    )
}

fn read_loop(
    mut lines: BufReader<UnixStream>,
    answers: &mpsc::Sender<Answer>,
    events: &mpsc::Sender<Event>,
    closed: &AtomicBool,
) {
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            tracing::warn!(line = line.trim(), "QMP: not JSON, ignored");
            continue;
        };
        if let Some(name) = message.get("event").and_then(Value::as_str) {
            let _ = events.send(Event {
                name: name.to_owned(),
                data: message.get("data").cloned().unwrap_or(Value::Null),
            });
            continue;
        }
        let id = message.get("id").and_then(Value::as_u64).unwrap_or(0);
        let answer = if let Some(value) = message.get("return") {
            Ok(value.clone())
        } else if let Some(error) = message.get("error") {
            let text = |k: &str| {
                error
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            Err(QmpError::Command {
                command: String::new(),
                class: text("class"),
                desc: text("desc"),
            })
        } else {
            Err(QmpError::Protocol(line.trim().to_owned()))
        };
        if answers.send((id, answer)).is_err() {
            break;
        }
    }
    closed.store(true, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fake QEMU: greets, then answers each command by `reply`.
    fn fake_qemu(
        dir: &Path,
        reply: impl Fn(&Value) -> Vec<Value> + Send + 'static,
    ) -> (std::path::PathBuf, JoinHandle<Vec<String>>) {
        let path = dir.join("qmp.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            writeln!(s, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).expect("greet");
            let mut seen = Vec::new();
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                let cmd: Value = serde_json::from_str(&line).expect("json");
                seen.push(cmd["execute"].as_str().unwrap_or_default().to_owned());
                for out in reply(&cmd) {
                    writeln!(s, "{out}").expect("write");
                }
                line.clear();
            }
            seen
        });
        (path, handle)
    }

    fn ok(cmd: &Value, value: Value) -> Value {
        json!({ "return": value, "id": cmd["id"] })
    }

    #[test]
    fn commands_are_answered_by_id_and_events_are_kept_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, server) = fake_qemu(dir.path(), |cmd| match cmd["execute"].as_str() {
            Some("query-cpus-fast") => vec![
                json!({"event": "RESUME", "data": null, "timestamp": {}}),
                ok(
                    cmd,
                    json!([{"cpu-index": 1, "thread-id": 202}, {"cpu-index": 0, "thread-id": 201}]),
                ),
            ],
            Some("query-status") => vec![ok(cmd, json!({"status": "guest-panicked"}))],
            Some("cont") => {
                vec![json!({"error": {"class": "GenericError", "desc": "no"}, "id": cmd["id"]})]
            }
            _ => vec![ok(cmd, json!({}))],
        });
        let mut qmp = Qmp::connect(&path, Duration::from_secs(2)).expect("connect");
        assert_eq!(qmp.vcpu_threads().expect("threads"), vec![201, 202]);
        assert_eq!(qmp.status().expect("status"), RunState::GuestPanicked);
        let err = qmp.cont().expect_err("refused");
        assert!(
            err.to_string().contains("cont failed: GenericError: no"),
            "{err}"
        );
        let events = qmp.take_events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].name, "RESUME");
        assert!(qmp.take_events().is_empty());
        drop(qmp);
        let seen = server.join().expect("server");
        assert_eq!(
            seen,
            [
                "qmp_capabilities",
                "query-cpus-fast",
                "query-status",
                "cont"
            ]
        );
    }

    #[test]
    fn a_late_answer_is_never_taken_for_the_next_command() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The first command's answer comes only with the second's.
        let (path, _server) = fake_qemu(dir.path(), |cmd| match cmd["execute"].as_str() {
            Some("stop") => vec![],
            Some("query-status") => vec![
                json!({"return": {}, "id": cmd["id"].as_u64().unwrap_or(0) - 1}),
                ok(cmd, json!({"status": "paused"})),
            ],
            _ => vec![ok(cmd, json!({}))],
        });
        let mut qmp = Qmp::connect(&path, Duration::from_secs(2)).expect("connect");
        let err = qmp
            .execute_within("stop", None, Duration::from_millis(100))
            .expect_err("no answer");
        assert!(matches!(err, QmpError::Timeout(..)), "{err}");
        assert_eq!(qmp.status().expect("status"), RunState::Paused);
    }

    #[test]
    fn a_closed_connection_keeps_its_events_and_fails_commands() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            writeln!(s, r#"{{"QMP": {{}}}}"#).expect("greet");
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            let mut line = String::new();
            r.read_line(&mut line).expect("caps");
            let id: Value = serde_json::from_str(&line).expect("json");
            writeln!(s, "{}", json!({"return": {}, "id": id["id"]})).expect("ok");
            writeln!(
                s,
                "{}",
                json!({"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-reset"}})
            )
            .expect("event");
            // QEMU exits: the socket closes.
        });
        let mut qmp = Qmp::connect(&path, Duration::from_secs(2)).expect("connect");
        server.join().expect("server");
        let deadline = Instant::now() + Duration::from_secs(2);
        while !qmp.is_closed() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(qmp.is_closed());
        let events = qmp.take_events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].field("reason"), Some("guest-reset"));
        assert!(matches!(qmp.stop(), Err(QmpError::Closed)));
    }

    #[test]
    fn connecting_to_nothing_fails_after_the_timeout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let start = Instant::now();
        let err = Qmp::connect(&dir.path().join("none.sock"), Duration::from_millis(100))
            .expect_err("nothing there");
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert!(err.to_string().contains("none.sock"), "{err}");
    }
}
