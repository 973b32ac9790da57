//! The live side of a running or paused domain ([`Live`]): its backend,
//! the record that lets a later daemon find it again, and what is asked
//! of it now (a pending shutdown, its pool runtime). A child of `domains`.

use super::*;

/// The live side of a running or paused domain.
pub(in crate::daemon) struct Live {
    pub(in crate::daemon) record: LiveRecord,
    pub(in crate::daemon) backend: Box<dyn Backend>,
    /// A shutdown or reboot asked for, not yet happened.
    pub(super) requested: Option<ShutdownReason>,
    /// The pool runtime the domain is admitted to, if a gang pool.
    pub(in crate::daemon) admitted: Option<PoolId>,
    pub(super) started: Instant,
}

impl Live {
    pub(super) fn new(record: LiveRecord, backend: Box<dyn Backend>) -> Live {
        Live {
            record,
            backend,
            requested: None,
            admitted: None,
            started: Instant::now(),
        }
    }

    pub(super) fn pid(&self) -> i32 {
        self.record.pid()
    }

    /// The vCPU thread ids, once known.
    pub(in crate::daemon) fn vcpu_tids(&self) -> Option<Vec<Tid>> {
        self.record.vcpu_tids()
    }

    pub(in crate::daemon) fn any_vcpu_running(&self) -> bool {
        let pid = self.pid();
        match self.vcpu_tids() {
            Some(tids) if !tids.is_empty() => tids
                .iter()
                .any(|&t| process::thread_state(pid, t) == Some('R')),
            // A whole program (or one whose threads are not known yet).
            _ => self.backend.processes(&self.record).iter().any(|&p| {
                process::threads(p)
                    .iter()
                    .any(|&(t, _)| process::thread_state(p, t) == Some('R'))
            }),
        }
    }

    pub(in crate::daemon) fn cpu_time_ns(&self) -> u64 {
        match (self.backend.counts_vcpu_time_only(), self.vcpu_tids()) {
            (true, Some(tids)) => tids
                .iter()
                .map(|&t| process::cpu_time_ns(self.pid(), Some(t)))
                .sum(),
            _ => self
                .backend
                .processes(&self.record)
                .iter()
                .map(|&p| process::cpu_time_ns(p, None))
                .sum(),
        }
    }

    /// The host threads the domain holds, process by process (`list -l`).
    pub(in crate::daemon) fn threads(&self) -> Vec<gang_proto::ThreadInfo> {
        let vcpus = self.vcpu_tids().unwrap_or_default();
        let mut out = Vec::new();
        for pid in self.backend.processes(&self.record) {
            for (tid, name) in process::threads(pid) {
                out.push(gang_proto::ThreadInfo {
                    pid,
                    tid,
                    name,
                    vcpu: vcpus.iter().position(|&v| v == tid).map(|i| i as u32),
                    state: process::thread_state(pid, tid).map_or_else(String::new, String::from),
                    cpu: process::thread_cpu(pid, tid),
                });
            }
        }
        out
    }

    /// Resident memory of the process, MB.
    pub(in crate::daemon) fn rss_mb(&self) -> u64 {
        gang_host::proc::status(self.pid())
            .and_then(|s| s.rss_kb)
            .map_or(0, |kb| kb.div_ceil(1024))
    }

    /// Whether it outlives the daemon (a micro-VM runs inside it).
    pub(in crate::daemon) fn survives_daemon(&self) -> bool {
        self.backend.outlives_daemon()
    }
}
