//! QEMU guests (`type = "hvm"`, or any type with `device_model = "qemu"`):
//! a QEMU process the daemon spawns, controls over QMP and whose vCPU
//! threads a gang runtime adopts, as Xen runs HVM guests with QEMU as their
//! device model.
//!
//! # Life of a QEMU domain
//!
//! * **Start**: the xl.cfg is turned into QEMU's command line by
//!   `gang_qemu::args` (refusals name the key); the binary, the files QEMU
//!   will open and the bridges are checked; tap devices are made; QEMU is
//!   spawned in the domain's cgroup, in its own process group, with `-S`
//!   (no guest code before the daemon says `cont`), `-no-shutdown` and
//!   `-action reboot=shutdown,panic=pause` (a guest's power-off, reboot or
//!   panic stops it and QEMU waits: the daemon applies `on_*`). Its vCPU
//!   threads come from QMP's `query-cpus-fast`, never from thread names.
//! * **Pause** is QMP `stop` (QEMU's main loop keeps answering QMP;
//!   freezing the whole process would silence it), then the runtime's pause.
//!   `stop` is sent first, while the vCPUs still get their slots, because
//!   QEMU waits for every vCPU to acknowledge it.
//! * **Power**: `shutdown` presses the ACPI power button
//!   (`system_powerdown`); `reboot` is a hard `system_reset` (as
//!   `xl reboot -F` for a guest without PV drivers). Both end in a
//!   `SHUTDOWN` event; with `on_reboot = "restart"` the daemon starts a new
//!   QEMU, as Xen re-creates a domain that rebooted.
//! * **End**: QMP events (`SHUTDOWN` with its reason, `GUEST_PANICKED`),
//!   else QEMU's run state after a daemon restart, else QEMU's exit status
//!   (with the last line of its log) say why.
//! * **Daemon restart**: QEMU lives on (own process group); the next daemon
//!   reconnects to its QMP socket, checks it is the same process (pid and
//!   start time) and the same vCPU threads, and re-attaches it.
//!
//! The guest's serial console is a Unix socket chardev with a log file:
//! QEMU itself writes every byte to the domain's console file (so output is
//! kept while no daemon runs), and console input goes through one
//! connection to the socket, kept open from the first input on.

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gang_config::DomainConfig;
use gang_core::{CpuSet, DomainId};
use gang_host::runtime::Runtime;
use gang_proto::ApiError;
use gang_qemu::qmp::{Qmp, RunState};
use rustix::process::Signal;
use serde::{Deserialize, Serialize};

use super::{Backend, Ended, LiveRecord, StartFailed};
use crate::daemon::{bad, internal, refused};
use crate::domain_cgroup::DomainCgroup;
use crate::process::{self, Program, Tid};
use crate::store::ShutdownReason;

/// How long QEMU has to open its QMP socket after it was started.
const QMP_START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long QEMU has to exit after `quit` before it is killed.
const QUIT_TIMEOUT: Duration = Duration::from_secs(3);

/// A spawn that failed: why, and what is left to undo.
type SpawnFailed = Box<(ApiError, DomainCgroup, QemuRecord)>;

/// What the store keeps to find a QEMU again after a daemon restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QemuRecord {
    /// The directory of its sockets.
    pub dir: PathBuf,
    /// QMP.
    pub qmp_socket: PathBuf,
    /// The serial console's input.
    pub serial_socket: PathBuf,
    /// QEMU's own messages.
    pub log: PathBuf,
    /// Tap devices gang made for it.
    pub taps: Vec<String>,
    /// Where its VNC server listens (`host:port`), with `vnc = 1`.
    #[serde(default)]
    pub vnc: Option<String>,
}

/// How the daemon runs QEMU.
#[derive(Debug, Clone)]
pub(in crate::daemon) struct QemuSettings {
    /// The accelerator, chosen once per daemon.
    pub(in crate::daemon) accel: gang_qemu::args::Accel,
    /// Why that accelerator (for `dmesg` and `info`).
    pub(in crate::daemon) accel_reason: String,
    /// The user QEMU drops its privileges to after it opened its files.
    pub(in crate::daemon) run_as: Option<String>,
}

/// Where one QEMU domain lives on the host.
#[derive(Debug)]
pub(in crate::daemon) struct QemuPlace<'a> {
    pub(in crate::daemon) id: DomainId,
    /// Its own directory (sockets), made here.
    pub(in crate::daemon) dir: PathBuf,
    /// The guest's console (QEMU's chardev log file).
    pub(in crate::daemon) console: PathBuf,
    /// CPUs for QEMU's threads other than the vCPUs.
    pub(in crate::daemon) cpus: &'a CpuSet,
}

/// A QEMU domain's live side.
pub(in crate::daemon) struct QemuBackend {
    child: Option<Child>,
    cgroup: DomainCgroup,
    qmp: Option<Qmp>,
    record: QemuRecord,
    /// An end already seen and not yet reported.
    ended: Option<Ended>,
    /// After a daemon restart: QEMU's state is read once.
    check_state: bool,
    /// The serial console's input, once something was typed.
    console: Option<ConsoleLink>,
}

/// A connection to the guest's serial console, kept open: QEMU takes
/// input only as fast as the guest's UART drains it, and drops what it has
/// not read when the client goes away. What QEMU sends back (the guest's
/// output, already in the console file) is read and discarded, so that
/// the guest never waits on a full socket.
struct ConsoleLink {
    stream: UnixStream,
    drain: Option<std::thread::JoinHandle<()>>,
}

impl ConsoleLink {
    fn connect(path: &Path) -> std::io::Result<ConsoleLink> {
        let stream = UnixStream::connect(path)?;
        let mut reader = stream.try_clone()?;
        let drain = std::thread::Builder::new()
            .name("console-drain".into())
            .spawn(move || {
                let mut sink = std::io::sink();
                let _copied = std::io::copy(&mut reader, &mut sink);
            })?;
        Ok(ConsoleLink {
            stream,
            drain: Some(drain),
        })
    }
}

impl Drop for ConsoleLink {
    fn drop(&mut self) {
        let _closed = self.stream.shutdown(std::net::Shutdown::Both);
        if let Some(d) = self.drain.take() {
            let _joined = d.join();
        }
    }
}

/// Finds `binary` (a path, or a name on PATH).
fn find_binary(binary: &Path) -> Option<PathBuf> {
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if binary.components().count() > 1 {
        return executable(binary).then(|| binary.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(binary))
        .find(|p| executable(p))
}

/// The last non-empty line of QEMU's log (why it ended, usually).
fn last_log_line(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
}

/// Runs `ip` with `args`, saying what failed.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| {
            format!(
                "ip {}: {e} (gang needs iproute2 for bridged vifs)",
                args.join(" ")
            )
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// Removes what a QEMU domain made on the host (its taps, its socket
/// directory), once its QEMU is gone.
pub(in crate::daemon) fn remove_leftovers(record: &QemuRecord) {
    remove_taps(&record.taps);
    if let Err(e) = std::fs::remove_dir_all(&record.dir) {
        tracing::debug!("{}: {e}", record.dir.display());
    }
}

fn remove_taps(taps: &[String]) {
    for tap in taps {
        if Path::new("/sys/class/net").join(tap).exists() {
            if let Err(e) = ip(&["link", "delete", tap]) {
                tracing::warn!("removing tap device {tap}: {e}");
            }
        }
    }
}

/// Makes the tap devices of `launch` and puts each on its bridge; on
/// failure removes those it made.
fn make_taps(taps: &[gang_qemu::args::TapDevice]) -> Result<Vec<String>, ApiError> {
    for t in taps {
        if !Path::new("/sys/class/net")
            .join(&t.bridge)
            .join("bridge")
            .exists()
        {
            return Err(refused(format!(
                "vif bridge={}: no such bridge on this host (see `ip link show type bridge`)",
                t.bridge
            )));
        }
        if Path::new("/sys/class/net").join(&t.name).exists() {
            return Err(refused(format!(
                "vif: a network device named {} exists already",
                t.name
            )));
        }
    }
    let mut made = Vec::new();
    for t in taps {
        let r = ip(&["tuntap", "add", "dev", &t.name, "mode", "tap"])
            .inspect(|()| made.push(t.name.clone()))
            .and_then(|()| ip(&["link", "set", "dev", &t.name, "master", &t.bridge]))
            .and_then(|()| ip(&["link", "set", "dev", &t.name, "up"]));
        if let Err(e) = r {
            remove_taps(&made);
            return Err(refused(format!("vif on bridge {}: {e}", t.bridge)));
        }
    }
    Ok(made)
}

impl QemuBackend {
    /// Starts QEMU for `cfg`, stopped (`-S`): the daemon attaches its vCPU
    /// threads, then [`Backend::start`] lets them run.
    pub(in crate::daemon) fn start(
        cfg: &DomainConfig,
        place: &QemuPlace<'_>,
        settings: &QemuSettings,
        cgroup: DomainCgroup,
    ) -> Result<(QemuBackend, LiveRecord), StartFailed> {
        let dir = &place.dir;
        let record = QemuRecord {
            dir: dir.clone(),
            qmp_socket: dir.join("qmp.sock"),
            serial_socket: dir.join("console.sock"),
            // Beside the console, kept after a failed start: the error
            // message points to it.
            log: place.console.with_extension("qemu.log"),
            taps: Vec::new(),
            vnc: None,
        };
        let paths = gang_qemu::args::QemuPaths {
            qmp_socket: record.qmp_socket.clone(),
            serial_socket: record.serial_socket.clone(),
            console_log: place.console.clone(),
        };
        let opts = gang_qemu::args::LaunchOptions {
            domid: place.id.0,
            accel: settings.accel,
            run_as: settings.run_as.clone(),
        };
        let launch = match gang_qemu::args::launch(cfg, &paths, &opts) {
            Ok(l) => l,
            Err(e) => return Err(Box::new((bad(e.to_string()), cgroup))),
        };
        match Self::spawn(&launch, place, record, cgroup) {
            Ok(started) => Ok(started),
            Err(failed) => {
                let (e, cgroup, record) = *failed;
                remove_taps(&record.taps);
                if let Err(err) = std::fs::remove_dir_all(&record.dir) {
                    tracing::debug!("{}: {err}", record.dir.display());
                }
                Err(Box::new((e, cgroup)))
            }
        }
    }

    /// The checks and steps of [`QemuBackend::start`] after the command
    /// line is known; on failure returns what is left to undo.
    fn spawn(
        launch: &gang_qemu::args::Launch,
        place: &QemuPlace<'_>,
        mut record: QemuRecord,
        cgroup: DomainCgroup,
    ) -> Result<(QemuBackend, LiveRecord), SpawnFailed> {
        macro_rules! fail {
            ($e:expr) => {
                return Err(Box::new(($e, cgroup, record)))
            };
        }
        let Some(binary) = find_binary(&launch.binary) else {
            fail!(refused(format!(
                "QEMU not found: {} is not an executable file{} (install Debian's \
                 qemu-system-x86, or name another QEMU with device_model_override)",
                launch.binary.display(),
                if launch.binary.components().count() > 1 {
                    ""
                } else {
                    " on the daemon's PATH"
                }
            )));
        };
        for f in &launch.files {
            if let Err(e) = std::fs::metadata(f) {
                fail!(refused(format!("{}: {e}", f.display())));
            }
        }
        let mut argv = vec![binary.display().to_string()];
        for a in &launch.args {
            match a.to_str() {
                Some(s) => argv.push(s.to_owned()),
                None => fail!(bad(format!(
                    "QEMU argument {} is not valid UTF-8",
                    a.to_string_lossy()
                ))),
            }
        }
        if let Err(e) = std::fs::create_dir_all(&record.dir) {
            fail!(internal(format!("{}: {e}", record.dir.display())));
        }
        let sockets = [record.qmp_socket.clone(), record.serial_socket.clone()];
        for s in &sockets {
            if let Err(e) = std::fs::remove_file(s) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    fail!(internal(format!("{}: {e}", s.display())));
                }
            }
        }
        match make_taps(&launch.taps) {
            Ok(t) => record.taps = t,
            Err(e) => fail!(e),
        }
        // QEMU's own messages go to its log; the guest's serial console goes
        // to the console file through the chardev's log file.
        if let Err(e) = process::open_console(&place.console) {
            fail!(internal(e.to_string()));
        }
        let mut child = match process::spawn(
            &Program::Argv(argv),
            &record.log,
            &cgroup.procs_files(),
            place.cpus,
            None,
        ) {
            Ok(c) => c,
            Err(e) => fail!(refused(e.to_string())),
        };
        let pid = child.id() as i32;
        let why_ended = |child: &mut Child, log: &Path| {
            let status = child
                .try_wait()
                .ok()
                .flatten()
                .map_or_else(String::new, |s| format!(" ({s})"));
            refused(format!(
                "QEMU ended at once{status}: {} (its log: {})",
                last_log_line(log).unwrap_or_else(|| "no message".into()),
                log.display()
            ))
        };
        let kill = |child: &mut Child| {
            if let Err(e) = process::signal(pid, true, Signal::KILL) {
                tracing::debug!("killing QEMU {pid}: {e}");
            }
            let _reaped = child.wait();
        };
        let deadline = Instant::now() + QMP_START_TIMEOUT;
        let (qmp_socket, log) = (record.qmp_socket.clone(), record.log.clone());
        let mut qmp = loop {
            match Qmp::connect(&qmp_socket, Duration::from_millis(200)) {
                Ok(q) => break q,
                Err(_) if matches!(child.try_wait(), Ok(Some(_))) => {
                    let e = why_ended(&mut child, &log);
                    fail!(e);
                }
                Err(e) if Instant::now() >= deadline => {
                    kill(&mut child);
                    fail!(internal(format!(
                        "QEMU did not open its QMP socket within {QMP_START_TIMEOUT:?}: {e}"
                    )));
                }
                Err(_) => {}
            }
        };
        let Some(identity) = process::identity(pid) else {
            let e = why_ended(&mut child, &log);
            fail!(e);
        };
        let mut configure = || -> Result<Option<String>, String> {
            if let Some(mb) = launch.balloon_target_mb {
                qmp.execute("balloon", Some(serde_json::json!({ "value": mb << 20 })))
                    .map_err(|e| e.to_string())?;
            }
            if let Some(pw) = &launch.vnc_password {
                qmp.execute(
                    "change-vnc-password",
                    Some(serde_json::json!({ "password": pw })),
                )
                .map_err(|e| e.to_string())?;
            }
            // Where VNC listens (QEMU chose a free display from vncdisplay).
            let vnc = qmp.execute("query-vnc", None).map_err(|e| e.to_string())?;
            let field = |k: &str| vnc.get(k).and_then(serde_json::Value::as_str);
            Ok(
                match (vnc.get("enabled"), field("host"), field("service")) {
                    (Some(serde_json::Value::Bool(true)), Some(host), Some(port)) => {
                        Some(format!("{host}:{port}"))
                    }
                    _ => None,
                },
            )
        };
        let configured = configure();
        if let Ok(vnc) = &configured {
            record.vnc.clone_from(vnc);
        }
        if let Err(e) = configured {
            drop(qmp);
            kill(&mut child);
            fail!(refused(format!("configuring QEMU: {e}")));
        }
        let live = LiveRecord {
            process: identity,
            spawned: true,
            vcpu_threads: None,
            console: place.console.clone(),
            start_gate: None,
            qemu: Some(record.clone()),
            members: Vec::new(),
            origins: Vec::new(),
            group: false,
        };
        Ok((
            QemuBackend {
                child: Some(child),
                cgroup,
                qmp: Some(qmp),
                record,
                ended: None,
                check_state: false,
                console: None,
            },
            live,
        ))
    }

    /// Finds a QEMU again after a daemon restart: its QMP socket answers
    /// and it is the same process.
    pub(in crate::daemon) fn reattach(
        live: &LiveRecord,
        cgroup: DomainCgroup,
    ) -> Result<QemuBackend, StartFailed> {
        let Some(record) = live.qemu.clone() else {
            return Err(Box::new((internal("no QEMU record"), cgroup)));
        };
        if let Err(e) = cgroup.add_process(live.pid()) {
            return Err(Box::new((internal(e.to_string()), cgroup)));
        }
        match Qmp::connect(&record.qmp_socket, Duration::from_secs(2)) {
            Ok(qmp) => Ok(QemuBackend {
                child: None,
                cgroup,
                qmp: Some(qmp),
                record,
                ended: None,
                check_state: true,
                console: None,
            }),
            Err(e) => Err(Box::new((
                refused(format!("QEMU's QMP socket: {e}")),
                cgroup,
            ))),
        }
    }

    fn qmp(&mut self) -> Result<&mut Qmp, ApiError> {
        self.qmp
            .as_mut()
            .ok_or_else(|| internal("QEMU's QMP connection is closed"))
    }

    /// What QMP's events say about the guest's end, if anything.
    fn end_from_events(&mut self, requested: Option<ShutdownReason>) -> Option<Ended> {
        let qmp = self.qmp.as_ref()?;
        let mut end = None;
        for event in qmp.take_events() {
            tracing::debug!(
                "QEMU {}: event {} {}",
                self.record.dir.display(),
                event.name,
                event.data
            );
            let seen = match event.name.as_str() {
                "GUEST_PANICKED" => Some(Ended::new(
                    ShutdownReason::Crash,
                    "the guest kernel panicked",
                )),
                "SHUTDOWN" => Some(match event.field("reason").unwrap_or_default() {
                    "guest-panic" => Ended::new(ShutdownReason::Crash, "the guest kernel panicked"),
                    "guest-reset" => Ended::new(ShutdownReason::Reboot, "the guest rebooted"),
                    "host-qmp-system-reset" => Ended::new(
                        requested.unwrap_or(ShutdownReason::Reboot),
                        "reset as requested",
                    ),
                    "guest-shutdown" => Ended::new(
                        requested.unwrap_or(ShutdownReason::Poweroff),
                        "the guest powered off",
                    ),
                    other => Ended::new(
                        requested.unwrap_or(ShutdownReason::Poweroff),
                        format!("QEMU shut down ({other})"),
                    ),
                }),
                _ => None,
            };
            // A panic wins over the shutdown that may follow it.
            if let Some(s) = seen {
                if end
                    .as_ref()
                    .is_none_or(|e: &Ended| e.reason != ShutdownReason::Crash)
                {
                    end = Some(s);
                }
            }
        }
        end
    }
}

impl Backend for QemuBackend {
    fn kind(&self) -> &'static str {
        "QEMU guest"
    }

    fn vcpu_threads(
        &mut self,
        record: &LiveRecord,
        vcpus: u32,
        _pattern: Option<&str>,
    ) -> Result<Option<Vec<Tid>>, ApiError> {
        if !process::is_alive(&record.process) {
            return Ok(None);
        }
        let tids = self
            .qmp()?
            .vcpu_threads()
            .map_err(|e| internal(format!("asking QEMU for its vCPU threads: {e}")))?;
        if tids.len() != vcpus as usize {
            return Err(internal(format!(
                "QEMU has {} vCPU thread(s), the domain {vcpus} vCPU(s)",
                tids.len()
            )));
        }
        Ok(Some(tids))
    }

    fn attach(&mut self, rt: &Arc<Runtime>, id: DomainId, tids: &[Tid]) -> Result<(), ApiError> {
        rt.adopt_threads(id, tids)
            .map_err(|e| refused(format!("adopting QEMU's vCPU threads: {e}")))
    }

    fn start(&mut self, paused: bool) -> Result<(), ApiError> {
        if paused {
            return Ok(());
        }
        self.qmp()?
            .cont()
            .map_err(|e| internal(format!("starting the guest: {e}")))
    }

    fn pause(&mut self, _record: &LiveRecord) -> Result<(), ApiError> {
        self.qmp()?.stop().map_err(|e| internal(e.to_string()))
    }

    fn resume(&mut self, _record: &mut LiveRecord) -> Result<(), ApiError> {
        self.qmp()?.cont().map_err(|e| internal(e.to_string()))
    }

    fn request(&mut self, _record: &LiveRecord, reason: ShutdownReason) -> Result<(), ApiError> {
        let qmp = self.qmp()?;
        let r = if reason == ShutdownReason::Reboot {
            qmp.system_reset()
        } else {
            qmp.system_powerdown()
        };
        r.map_err(|e| refused(e.to_string()))
    }

    fn console_input(&mut self, bytes: &[u8]) -> Result<(), String> {
        // A connection that QEMU closed (or a first input) is made anew.
        for attempt in 0..2 {
            if self.console.is_none() {
                self.console = Some(
                    ConsoleLink::connect(&self.record.serial_socket)
                        .map_err(|e| format!("the guest's serial console: {e}"))?,
                );
            }
            let link = self.console.as_mut().ok_or("no console")?;
            match link.stream.write_all(bytes) {
                Ok(()) => return Ok(()),
                Err(e) if attempt == 0 => {
                    tracing::debug!("serial console: {e}; reconnecting");
                    self.console = None;
                }
                Err(e) => return Err(format!("the guest's serial console: {e}")),
            }
        }
        Ok(())
    }

    fn poll_exit(
        &mut self,
        record: &LiveRecord,
        requested: Option<ShutdownReason>,
    ) -> Option<Ended> {
        if let Some(e) = self.end_from_events(requested) {
            self.ended = Some(e);
        }
        if self.ended.is_none() && self.check_state {
            self.check_state = false;
            let state = self.qmp.as_mut().map(Qmp::status);
            self.ended = match state {
                Some(Ok(RunState::Shutdown)) => Some(Ended::new(
                    ShutdownReason::Poweroff,
                    "the guest shut down while the daemon was not running",
                )),
                Some(Ok(RunState::GuestPanicked)) => Some(Ended::new(
                    ShutdownReason::Crash,
                    "the guest kernel panicked while the daemon was not running",
                )),
                Some(Ok(RunState::InternalError)) => Some(Ended::new(
                    ShutdownReason::Crash,
                    "QEMU stopped the guest on an emulation error",
                )),
                _ => None,
            };
        }
        if self.ended.is_some() {
            return self.ended.take();
        }
        let status = match &mut self.child {
            Some(c) => match c.try_wait() {
                Ok(Some(s)) => Some(s),
                _ => return None,
            },
            None if process::is_alive(&record.process) => return None,
            None => None,
        };
        let why = last_log_line(&self.record.log).unwrap_or_default();
        Some(match (requested, status) {
            (Some(r), _) => Ended::new(r, "QEMU ended as requested"),
            (None, Some(s)) => {
                Ended::new(ShutdownReason::Crash, format!("QEMU exited ({s}): {why}"))
            }
            (None, None) => Ended::new(ShutdownReason::Crash, format!("QEMU ended: {why}")),
        })
    }

    fn tear_down(&mut self, record: &LiveRecord) {
        self.console = None;
        if let Some(mut qmp) = self.qmp.take() {
            if process::is_alive(&record.process) {
                if let Err(e) = qmp.quit() {
                    tracing::debug!("QEMU {}: quit: {e}", record.pid());
                }
            }
        }
        let deadline = Instant::now() + QUIT_TIMEOUT;
        let gone = |child: &mut Option<Child>| match child {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => !process::is_alive(&record.process),
        };
        while !gone(&mut self.child) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if !gone(&mut self.child) {
            if let Err(e) = process::signal(record.pid(), true, Signal::KILL) {
                tracing::warn!("killing QEMU {}: {e}", record.pid());
            }
            if let Some(c) = &mut self.child {
                let _reaped = c.wait();
            }
        }
        remove_taps(&self.record.taps);
        if let Err(e) = std::fs::remove_dir_all(&self.record.dir) {
            tracing::debug!("{}: {e}", self.record.dir.display());
        }
        if let Err(e) = self.cgroup.remove_in_place() {
            tracing::warn!("removing the cgroups of QEMU {}: {e}", record.pid());
        }
    }

    fn counts_vcpu_time_only(&self) -> bool {
        true
    }
}
