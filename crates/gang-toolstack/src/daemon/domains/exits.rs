//! What happens to domains after they ran: the monitor's notice that one
//! ended and its `on_*` action, and, at a daemon's start, re-attaching every
//! domain whose process lives on (or marking it crashed). A child of
//! `domains`, whose helpers it shares.

use super::*;

impl Daemon {
    /// Notices domains that ended and applies their actions; tells the
    /// scheduler-event recorders which threads to keep (`cosched`).
    pub fn poll_exits(&mut self) {
        let ended: Vec<(DomainId, Ended)> = self
            .live
            .iter_mut()
            .filter_map(|(id, live)| {
                live.backend
                    .poll_exit(&live.record, live.requested)
                    .map(|e| (*id, e))
            })
            .collect();
        for (id, end) in ended {
            if let Some(live) = self.live.remove(&id) {
                self.handle_exit(id, live, end);
            }
        }
        self.track_threads();
    }

    fn handle_exit(&mut self, id: DomainId, live: Live, end: Ended) {
        let Ok(rec) = self.store.domain(&id.into()) else {
            return;
        };
        let Ended { reason, detail } = end;
        let kind = live.backend.kind();
        let in_daemon = !live.survives_daemon();
        let lived = live.started.elapsed();
        let pid = live.pid();
        self.tear_down(id, live);
        // Unreadable, it is destroyed: the default action.
        let cfg = best_effort("choosing what to do now it ended", config_of(&rec));
        let action = cfg.as_ref().map_or(Action::Destroy, |c| match reason {
            ShutdownReason::Reboot => c.on_reboot,
            ShutdownReason::Crash => c.on_crash,
            ShutdownReason::Watchdog => c.on_watchdog,
            _ => c.on_poweroff,
        });
        let what = match reason {
            ShutdownReason::Reboot => "rebooted",
            ShutdownReason::Crash => "crashed",
            _ => "shut down",
        };
        self.log(format!(
            "domain {} ({}) {what}: {}{detail}; action {action:?}",
            id.0,
            rec.name,
            if in_daemon {
                String::new()
            } else {
                format!("{kind} {pid}: ")
            }
        ));
        let preserved = if reason == ShutdownReason::Crash {
            DomainState::Crashed {
                reason: detail.clone(),
            }
        } else {
            DomainState::Shutdown { reason }
        };
        let set_state = |daemon: &mut Daemon, state: &DomainState| {
            if let Err(e) = daemon.store.set_state(id, state) {
                daemon.log(format!("domain {}: recording its state: {e}", rec.name));
            }
        };
        match action {
            Action::Destroy | Action::CoredumpDestroy => self.forget(id),
            Action::Preserve => set_state(self, &preserved),
            Action::Restart | Action::RenameRestart | Action::CoredumpRestart => {
                if lived < MIN_LIFETIME && reason != ShutdownReason::Reboot {
                    set_state(
                        self,
                        &DomainState::Crashed {
                            reason: format!(
                                "{detail} after {lived:?}; not restarted (it would loop)"
                            ),
                        },
                    );
                    return;
                }
                set_state(self, &DomainState::Running);
                if let Err(e) = self.bring_up(id, false) {
                    self.log(format!(
                        "domain {} ({}): restart failed: {e}",
                        id.0, rec.name
                    ));
                    set_state(
                        self,
                        &DomainState::Crashed {
                            reason: format!("restart failed: {e}"),
                        },
                    );
                } else {
                    self.log(format!("domain {} ({}) restarted", id.0, rec.name));
                }
            }
        }
    }

    /// At start: re-attaches every running or paused domain whose process
    /// lives; marks the others crashed.
    pub(in crate::daemon) fn recover(&mut self) {
        let domains = match self.store.domains() {
            Ok(d) => d,
            Err(e) => {
                self.log(format!("reading the domains to re-attach: {e}"));
                return;
            }
        };
        let mut kept = Vec::new();
        for rec in domains {
            let paused = match rec.state {
                DomainState::Running => false,
                DomainState::Paused => true,
                _ => continue,
            };
            let kind = config_of(&rec).and_then(|c| kind_of(&c));
            if matches!(kind, Ok(Kind::MicroVm)) {
                self.mark_crashed(&rec, "its VM ran in the daemon, which ended".into());
                continue;
            }
            let record = record_of(&rec);
            let alive = record
                .as_ref()
                .is_some_and(|r| process::is_alive(&r.process));
            let pid = record.as_ref().map_or(0, |r| r.process.pid);
            // What it spawned is nobody's now (also a process started
            // by a daemon killed before it recorded it): killed, not
            // left running outside every domain by the sweep below.
            let spawned = record.as_ref().map_or_else(
                || {
                    matches!(kind, Ok(Kind::Qemu))
                        || config_of(&rec).is_ok_and(|c| c.command.is_some())
                },
                |r| r.spawned,
            );
            let Some(record) = record.filter(|_| alive) else {
                if spawned {
                    let killed =
                        crate::domain_cgroup::kill_tasks(&self.hierarchy, &self.namespace, rec.id);
                    if killed > 0 {
                        self.log(format!(
                            "domain {} ({}): killed {killed} process(es) it had left \
                             without a record",
                            rec.id.0, rec.name
                        ));
                    }
                }
                let reason = format!("its process ({pid}) ended while the daemon was not running");
                self.mark_crashed(&rec, reason);
                continue;
            };
            match self.reattach(&rec, record, paused) {
                Ok(()) => {
                    kept.push(rec.id);
                    self.log(format!("domain {} ({}) re-attached", rec.id.0, rec.name));
                }
                Err(e) => {
                    self.mark_crashed(&rec, format!("could not be re-attached: {e}"));
                    end_orphan(&record_of(&rec));
                }
            }
        }
        crate::domain_cgroup::sweep(&self.hierarchy, &self.namespace, &kept);
    }

    /// Recovery: a domain that cannot run again is shown crashed, with why.
    fn mark_crashed(&mut self, rec: &DomainRecord, reason: String) {
        self.log(format!(
            "domain {} ({}) crashed: {reason}",
            rec.id.0, rec.name
        ));
        let cleared = self
            .store
            .set_state(rec.id, &DomainState::Crashed { reason })
            .and_then(|()| self.store.set_live(rec.id, None));
        if let Err(e) = cleared {
            self.log(format!("domain {}: recording its state: {e}", rec.name));
        }
    }

    fn reattach(
        &mut self,
        rec: &DomainRecord,
        mut record: LiveRecord,
        paused: bool,
    ) -> Result<(), ApiError> {
        let cfg = config_of(rec)?;
        let kind = kind_of(&cfg)?;
        let limit = (kind == Kind::Process).then_some(cfg.memory_mb).flatten();
        let cgroup = self.domain_cgroup(&cfg, rec.id, limit)?;
        let backend: Result<Box<dyn Backend>, _> = match kind {
            Kind::Qemu => QemuBackend::reattach(&record, cgroup).map(|b| Box::new(b) as _),
            _ => ProcessBackend::reattach(&record, cgroup, paused).map(|b| Box::new(b) as _),
        };
        let backend = backend.map_err(|failed| {
            let (e, cgroup) = *failed;
            if let Err(err) = cgroup.remove() {
                tracing::warn!("domain {}: removing its cgroups: {err}", rec.name);
            }
            e
        })?;
        // Threads that are gone or were replaced are found again.
        let pid = record.pid();
        if let Some(threads) = &record.vcpu_threads {
            if threads
                .iter()
                .any(|&(t, start)| process::thread_start(pid, t) != Some(start))
            {
                record.vcpu_threads = None;
            }
        }
        let mut live = Live::new(record, backend);
        let pool = self
            .store
            .pool(&PoolRef::Id(rec.pool))
            .map_err(store_error)?;
        if pool.sched == Sched::Gang {
            match self.admit(rec) {
                Ok(p) => live.admitted = Some(p),
                Err(e) => {
                    // Leave it running as it is (nothing torn down): it was
                    // running before the daemon ended.
                    return Err(e);
                }
            }
        }
        if live.record.vcpu_threads.is_some() || !paused || kind == Kind::Qemu {
            if let Err(e) = self.attach_threads(rec, &cfg, &mut live) {
                if let Some(p) = live.admitted.take() {
                    self.leave_runtime(rec.id, p);
                }
                return Err(e);
            }
        }
        self.save_live(rec.id, &live);
        self.live.insert(rec.id, live);
        Ok(())
    }
}
