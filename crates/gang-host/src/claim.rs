//! Machine-wide CPU claims: a CPU belongs to at most one running pool.
//!
//! A runtime claims each of its CPUs by taking an exclusive `flock` on
//! `STATE_DIR/cpu-N.lock` and writing who holds it (pool name, pid) into the
//! file. The kernel drops the lock when the process dies, however it dies, so
//! a crashed runtime never blocks the next one: there is nothing to repair.

use std::fs::{File, OpenOptions};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use gang_core::CpuId;
use rustix::fs::{flock, FlockOperation};

use crate::best_effort;

/// Why a claim failed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Another live pool holds the CPU.
    #[error("cpu {cpu} illegal or not free: it is in pool {holder}")]
    InUse {
        /// The CPU.
        cpu: CpuId,
        /// Who holds it (`NAME (pid P)`), as written by the holder.
        holder: String,
    },
    /// The state directory or a lock file cannot be used.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Held claims on some CPUs; dropped, they are released.
#[derive(Debug)]
pub struct CpuClaims {
    files: Vec<(CpuId, File)>,
}

impl CpuClaims {
    /// Claims every CPU in `cpus` for pool `name`, all or none.
    pub fn claim(
        dir: &Path,
        name: &str,
        cpus: impl IntoIterator<Item = CpuId>,
    ) -> Result<CpuClaims, ClaimError> {
        std::fs::create_dir_all(dir).map_err(|source| ClaimError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut files = Vec::new();
        for cpu in cpus {
            let path = dir.join(format!("cpu-{cpu}.lock"));
            let io = |source| ClaimError::Io {
                path: path.clone(),
                source,
            };
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io)?;
            if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
                // Who holds it is only for the message: unreadable, it is
                // "another pool".
                let holder = std::io::read_to_string(&file).unwrap_or_default();
                let holder = if holder.trim().is_empty() {
                    "another pool".to_string()
                } else {
                    holder.trim().to_string()
                };
                return Err(ClaimError::InUse { cpu, holder });
            }
            file.set_len(0).map_err(io)?;
            file.rewind().map_err(io)?;
            write!(file, "{name} (pid {})", std::process::id()).map_err(io)?;
            files.push((cpu, file));
        }
        Ok(CpuClaims { files })
    }

    /// The claimed CPUs.
    pub fn cpus(&self) -> Vec<CpuId> {
        self.files.iter().map(|(c, _)| *c).collect()
    }
}

impl Drop for CpuClaims {
    fn drop(&mut self) {
        for (cpu, file) in &self.files {
            // Closing the file would unlock it too; emptied first, it names
            // no stale holder.
            best_effort(
                format_args!("emptying the claim of CPU {cpu}"),
                file.set_len(0),
            );
            best_effort(
                format_args!("unlocking the claim of CPU {cpu}"),
                flock(file, FlockOperation::Unlock),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("gang-claims-{tag}-{}", std::process::id()))
    }

    #[test]
    fn a_cpu_belongs_to_one_pool_at_a_time() {
        let d = dir("one");
        let a = CpuClaims::claim(&d, "GangSched-Pool", [1, 2]).expect("first claim");
        // flock is per open file description: a second open conflicts even
        // in the same process, as another process would.
        match CpuClaims::claim(&d, "other", [3, 2]) {
            Err(ClaimError::InUse { cpu: 2, holder }) => {
                assert!(holder.starts_with("GangSched-Pool (pid"), "{holder}")
            }
            other => panic!("expected InUse, got {other:?}"),
        }
        // All or none: CPU 3 was released when the claim failed.
        drop(CpuClaims::claim(&d, "third", [3]).expect("cpu 3 free again"));
        assert_eq!(a.cpus(), vec![1, 2]);
        drop(a);
        let b = CpuClaims::claim(&d, "later", [1, 2]).expect("released on drop");
        drop(b);
        best_effort("removing the test's claims", std::fs::remove_dir_all(&d));
    }

    #[test]
    fn an_unusable_state_dir_is_a_clear_error() {
        let err = CpuClaims::claim(Path::new("/proc/version/x"), "p", [0]).unwrap_err();
        assert!(matches!(err, ClaimError::Io { .. }));
        assert!(err.to_string().starts_with("/proc/version/x"), "{err}");
    }
}
