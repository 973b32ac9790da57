//! SIGINT, SIGTERM and SIGHUP as a flag that a benchmark's waits poll, so
//! that an interrupted run ends through its normal clean-up path (its
//! guards' drops) instead of dying with QEMUs, clusters or daemons left.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// SIGINT, SIGTERM and SIGHUP set a flag for the run's waits, while held
/// (the default actions are back once dropped).
#[derive(Debug)]
pub(crate) struct Signals {
    pub(crate) flag: Arc<AtomicBool>,
    ids: Vec<signal_hook::SigId>,
}

impl Signals {
    pub(crate) fn catch() -> std::io::Result<Signals> {
        let flag = Arc::new(AtomicBool::new(false));
        let mut ids = Vec::new();
        for sig in [
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGHUP,
        ] {
            ids.push(signal_hook::flag::register(sig, Arc::clone(&flag))?);
        }
        Ok(Signals { flag, ids })
    }

    /// Whether one of the signals came.
    pub(crate) fn caught(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
