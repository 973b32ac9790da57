//! Where the daemon lives on the host: its private state directory (and the
//! modes it keeps there), the lock that makes it the only daemon of that
//! directory, and the Unix socket it serves the API on ([`run`]).
//!
//! Invariants: one daemon per state directory (an exclusive `flock` held
//! while it lives); the state directory and database are readable by root
//! alone; a socket counts as another daemon's only if a request on it is
//! answered (a killed daemon's children may hold its listening socket for a
//! moment, and the kernel still queues connections there).

use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gang_host::best_effort;
use gang_proto::RequestBody;

use super::{Caller, Daemon, DaemonError};

/// The files of the state database.
const STATE_FILES: [&str; 3] = ["state.db", "state.db-wal", "state.db-shm"];

/// Makes the state directory private to root: created 0700, its database
/// created 0600 before SQLite opens it (SQLite gives the -wal and -shm files
/// the database's mode); a directory or database file of an older daemon
/// that others could read is tightened (group and other bits cleared).
/// Returns a line for each mode it tightened.
///
/// Why: the database holds every domain's configuration (commands, VNC
/// passwords), the directory the console files and QEMU's sockets.
pub(super) fn make_private(dir: &Path) -> std::io::Result<Vec<String>> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join(STATE_FILES[0]))
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let mut tightened = Vec::new();
    let paths = std::iter::once(dir.to_path_buf()).chain(STATE_FILES.iter().map(|f| dir.join(f)));
    for path in paths {
        let mode = match std::fs::metadata(&path) {
            Ok(m) => m.permissions().mode() & 0o7777,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if mode & 0o077 != 0 {
            let private = mode & 0o700;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(private))?;
            tightened.push(format!(
                "{}: mode {mode:04o} let others read gang's state; tightened to {private:04o}",
                path.display()
            ));
        }
    }
    Ok(tightened)
}

/// Looks a group up in /etc/group.
fn group_id(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

/// The lock file in the state directory.
pub(super) const LOCK_FILE: &str = "daemon.lock";

/// How long a starting daemon waits for the state directory's lock: a
/// killed daemon's children that had not yet executed their program still
/// share its open lock until they end (a moment: see
/// [`crate::process::spawn_as`]).
pub(super) const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Takes the daemon's exclusive `flock` on `<state>/daemon.lock` and writes
/// its pid there. Two daemons on one state would repair, re-attach and
/// schedule the same domains; the lock ends with the holder's process
/// (and its not-yet-executed children), so a killed daemon never blocks
/// the next one for long.
pub(super) fn lock_state_dir(dir: &Path, wait: Duration) -> Result<std::fs::File, DaemonError> {
    use rustix::fs::{flock, FlockOperation};
    use std::io::{Read, Seek, Write};
    let path = dir.join(LOCK_FILE);
    let io_err = |source| DaemonError::StateDir {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io_err)?;
    let deadline = Instant::now() + wait;
    let mut said = false;
    while flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        let mut text = String::new();
        let holder = file
            .read_to_string(&mut text)
            .ok()
            .and_then(|_| text.trim().parse::<u32>().ok());
        file.rewind().map_err(io_err)?;
        if Instant::now() > deadline {
            return Err(DaemonError::Busy {
                path: dir.to_path_buf(),
                pid: holder,
            });
        }
        if !said {
            tracing::info!(
                "waiting for {} (held{})",
                path.display(),
                holder.map(|p| format!(" by pid {p}")).unwrap_or_default()
            );
            said = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    file.set_len(0).map_err(io_err)?;
    writeln!(file, "{}", std::process::id()).map_err(io_err)?;
    Ok(file)
}

/// Whether a daemon answers a request on `socket` within a second.
fn answers(socket: &Path) -> bool {
    let Ok(stream) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    if stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .is_err()
    {
        return false;
    }
    gang_proto::Client::over(stream)
        .and_then(|mut c| c.call(RequestBody::Info))
        .is_ok()
}

/// How the socket is shared.
#[derive(Debug, Clone, Default)]
pub struct SocketAccess {
    /// A group whose members may use the socket too (mode 0660); `None`:
    /// root only (0600).
    pub group: Option<String>,
}

/// Binds the socket and serves requests until the process is killed or
/// `stop` is set; a monitor thread applies domain exits every 100 ms.
pub fn run(
    daemon: Arc<Mutex<Daemon>>,
    socket: &Path,
    access: &SocketAccess,
) -> Result<(), DaemonError> {
    let sock_err = |source| DaemonError::Socket {
        path: socket.to_path_buf(),
        source,
    };
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(sock_err)?;
    }
    // A socket left by a killed daemon: nobody answers on it any more.
    // (Accepting a connection is not answering: a child the killed daemon
    // forked may still hold its listening socket for a moment.)
    if socket.exists() {
        if answers(socket) {
            return Err(DaemonError::Answered(socket.to_path_buf()));
        }
        std::fs::remove_file(socket).map_err(sock_err)?;
    }
    let gid = match &access.group {
        Some(g) => Some(group_id(g).ok_or_else(|| DaemonError::NoGroup(g.clone()))?),
        None => None,
    };
    let listener = UnixListener::bind(socket).map_err(sock_err)?;
    let mode = if gid.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(mode)).map_err(sock_err)?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(socket, None, Some(gid)).map_err(sock_err)?;
    }
    {
        let daemon = Arc::clone(&daemon);
        std::thread::Builder::new()
            .name("gang-monitor".into())
            .spawn(move || {
                for tick in 0u64.. {
                    std::thread::sleep(Duration::from_millis(100));
                    let mut d = daemon.lock().unwrap_or_else(|p| p.into_inner());
                    d.poll_exits();
                    if tick % 10 == 0 {
                        d.watch_clocks();
                    }
                }
            })
            .map_err(sock_err)?;
    }
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        // Who connected, as the kernel saw them at connect(): every state
        // change they ask for is logged with it.
        // (nix, not rustix: rustix's peer credentials hold the pid as a
        // non-zero type, but the kernel reports 0 for a peer outside our pid
        // namespace.)
        let caller =
            nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
                .ok()
                .map(|c| Caller {
                    uid: c.uid(),
                    pid: c.pid(),
                });
        let daemon = Arc::clone(&daemon);
        let serving = std::thread::Builder::new()
            .name("gang-conn".into())
            .spawn(move || {
                let served = gang_proto::serve(stream, |body| {
                    let mut d = daemon.lock().unwrap_or_else(|p| p.into_inner());
                    d.handle_from(caller, body)
                });
                best_effort("answering a client", served);
            });
        best_effort("starting a thread for a client", serving);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use gang_core::CpuSet;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn a_new_state_directory_and_database_are_private() {
        let t = tempfile::tempdir().expect("temp dir");
        let dir = t.path().join("a").join("state");
        assert!(make_private(&dir).expect("made").is_empty());
        assert_eq!(mode(&dir), 0o700);
        let db = dir.join("state.db");
        assert_eq!(mode(&db), 0o600);
        // The store opens the empty file as a new database; SQLite's -wal
        // and -shm files take its mode.
        let store = Store::open(&db, &CpuSet::parse("0-1", None).expect("cpus")).expect("store");
        assert_eq!(store.pools().expect("pools").len(), 1);
        assert!(make_private(&dir).expect("checked").is_empty());
        for f in STATE_FILES {
            if dir.join(f).exists() {
                assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
            }
        }
    }

    #[test]
    fn one_daemon_holds_a_state_directory_and_the_next_takes_it_after() {
        let t = tempfile::tempdir().expect("temp dir");
        let first = lock_state_dir(t.path(), Duration::ZERO).expect("free");
        let lock = std::fs::read_to_string(t.path().join(LOCK_FILE)).expect("lock file");
        assert_eq!(lock.trim(), std::process::id().to_string());
        let busy = lock_state_dir(t.path(), Duration::from_millis(100)).expect_err("held");
        let text = busy.to_string();
        assert!(
            matches!(busy, DaemonError::Busy { pid: Some(p), .. } if p == std::process::id()),
            "{text}"
        );
        assert!(
            text.contains(&format!("(pid {})", std::process::id())) && text.contains("daemon.lock"),
            "{text}"
        );
        drop(first); // the holder ends
        lock_state_dir(t.path(), Duration::ZERO).expect("free again");
    }

    #[test]
    fn a_listener_that_does_not_answer_is_not_a_daemon() {
        let t = tempfile::tempdir().expect("temp dir");
        let path = t.path().join("gang.sock");
        assert!(!answers(&path), "no socket");
        // Accepts connections (the kernel queues them) but never answers:
        // what a killed daemon's not-yet-executed child holds.
        let _held = UnixListener::bind(&path).expect("bind");
        assert!(!answers(&path));
    }

    #[test]
    fn an_older_daemons_loose_modes_are_tightened_and_said() {
        let t = tempfile::tempdir().expect("temp dir");
        let dir = t.path().join("state");
        std::fs::create_dir(&dir).expect("dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        for (f, m) in [("state.db", 0o644), ("state.db-wal", 0o666)] {
            std::fs::write(dir.join(f), b"").expect("file");
            std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(m))
                .expect("chmod");
        }
        let said = make_private(&dir).expect("tightened");
        assert_eq!(said.len(), 3, "{said:?}");
        assert!(said[0].contains("mode 0755") && said[0].contains("tightened to 0700"));
        assert!(said[1].contains("state.db:") && said[1].contains("0644"));
        assert!(said[2].contains("state.db-wal") && said[2].contains("0666"));
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("state.db")), 0o600);
        assert_eq!(mode(&dir.join("state.db-wal")), 0o600);
        assert!(!dir.join("state.db-shm").exists(), "nothing made up");
        assert!(make_private(&dir).expect("again").is_empty());
    }
}
