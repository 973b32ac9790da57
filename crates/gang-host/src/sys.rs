//! The few system calls the host runtime makes, behind safe functions.
//!
//! Everything here is a thin adapter: threads' CPU affinity and scheduling
//! policy, the monotonic clock, absolute sleeps, futexes, timer slack, the
//! kernel's clock-discipline state. Only `sched_setscheduler`/
//! `sched_getscheduler` and `adjtimex` need `unsafe` (rustix has no wrapper
//! for them); each such block has its `// SAFETY:` comment.

use std::io;
use std::num::NonZeroU64;
use std::sync::atomic::AtomicU32;

use gang_core::{CpuId, Nanos};
use rustix::thread::futex;

/// A thread id (Linux TID); 0 means the calling thread.
pub type Tid = i32;

/// A Linux scheduling policy for one thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SchedPolicy {
    /// SCHED_OTHER (CFS).
    Other,
    /// SCHED_FIFO with a priority 1..=99.
    Fifo(i32),
    /// SCHED_IDLE: runs only when nothing else wants the CPU.
    Idle,
}

/// The calling thread's TID.
pub fn gettid() -> Tid {
    rustix::thread::gettid().as_raw_nonzero().get()
}

/// Pins thread `tid` (0: the caller) to the CPUs in `cpus`.
pub fn set_affinity(tid: Tid, cpus: &[CpuId]) -> io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    for &cpu in cpus {
        set.set(cpu as usize);
    }
    rustix::thread::sched_setaffinity(rustix::thread::Pid::from_raw(tid), &set)?;
    Ok(())
}

/// Sets thread `tid`'s scheduling policy (0: the caller).
pub fn set_policy(tid: Tid, policy: SchedPolicy) -> io::Result<()> {
    let (raw, prio) = match policy {
        SchedPolicy::Other => (libc::SCHED_OTHER, 0),
        SchedPolicy::Fifo(p) => (libc::SCHED_FIFO, p),
        SchedPolicy::Idle => (libc::SCHED_IDLE, 0),
    };
    let param = libc::sched_param {
        sched_priority: prio,
    };
    // SAFETY: `param` is a valid, initialised sched_param that outlives the
    // call; the kernel only reads it. An invalid tid or policy is reported as
    // an error return, not undefined behaviour.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sched_setscheduler(tid, raw, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads thread `tid`'s scheduling policy (0: the caller).
pub fn policy(tid: Tid) -> io::Result<SchedPolicy> {
    // SAFETY: sched_getscheduler takes a plain integer and touches no memory.
    #[allow(unsafe_code)]
    let raw = unsafe { libc::sched_getscheduler(tid) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param the kernel writes into; it lives
    // across the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sched_getparam(tid, &mut param) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(match raw & !libc::SCHED_RESET_ON_FORK {
        libc::SCHED_FIFO => SchedPolicy::Fifo(param.sched_priority),
        libc::SCHED_IDLE => SchedPolicy::Idle,
        _ => SchedPolicy::Other,
    })
}

/// What `adjtimex` reports of the system clock's discipline (read only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timex {
    /// The clock state (`TIME_OK`, `TIME_INS`, ..., `TIME_ERROR`).
    pub state: i32,
    /// Status bits (`STA_UNSYNC`, `STA_NANO`, ...).
    pub status: i32,
    /// Estimated error, µs.
    pub esterror_us: i64,
    /// Maximum error, µs.
    pub maxerror_us: i64,
    /// TAI - UTC, seconds, as the kernel was told (0 if nobody set it).
    pub tai_s: i32,
}

/// Reads the kernel's clock-discipline state (`adjtimex` with no modes:
/// changes nothing).
pub fn adjtimex_read() -> io::Result<Timex> {
    // SAFETY: `timex` is plain old data for which all-zero bytes are a
    // valid value; `modes == 0` asks the kernel only to fill it in; the
    // pointer is to a live local for the length of the call.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    tx.modes = 0;
    // SAFETY: see above; `adjtimex` writes only into `tx`.
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Timex {
        state,
        status: tx.status,
        esterror_us: tx.esterror,
        maxerror_us: tx.maxerror,
        tai_s: tx.tai,
    })
}

/// A clock's time in nanoseconds (signed: REALTIME and TAI count from 1970).
pub fn clock_ns(clock: rustix::time::ClockId) -> i128 {
    let ts = rustix::time::clock_gettime(clock);
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// CLOCK_MONOTONIC in nanoseconds.
pub fn monotonic_ns() -> Nanos {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as Nanos * 1_000_000_000 + ts.tv_nsec as Nanos
}

/// Sleeps until CLOCK_MONOTONIC reaches `t` (absolute), retrying on signals.
pub fn sleep_until_monotonic(t: Nanos) {
    let ts = rustix::time::Timespec {
        tv_sec: (t / 1_000_000_000) as i64,
        tv_nsec: (t % 1_000_000_000) as _,
    };
    while rustix::thread::clock_nanosleep_absolute(rustix::time::ClockId::Monotonic, &ts).is_err() {
        if monotonic_ns() >= t {
            break;
        }
    }
}

/// Makes the calling thread's timer wake-ups as precise as the kernel allows.
pub fn minimise_timer_slack() -> io::Result<()> {
    rustix::thread::set_current_timer_slack(NonZeroU64::new(1))?;
    Ok(())
}

/// Waits while `*word == expected`, at most `timeout` nanoseconds (None:
/// forever). Spurious returns are possible: callers re-check.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Nanos>) {
    let ts = timeout.map(|ns| rustix::time::Timespec {
        tv_sec: (ns / 1_000_000_000) as i64,
        tv_nsec: (ns % 1_000_000_000) as _,
    });
    // The switch path. Every outcome means "return and re-check": woken,
    // the word already changed (EAGAIN), timed out, or interrupted.
    let _ = futex::wait(word, futex::Flags::PRIVATE, expected, ts.as_ref());
}

/// Wakes every waiter on `word`.
pub fn futex_wake_all(word: &AtomicU32) {
    // The switch path. How many woke is of no use; with a valid private
    // futex word waking cannot fail.
    let _ = futex::wake(word, futex::Flags::PRIVATE, i32::MAX as u32);
}

/// Whether the process runs as root (the runtime's real-time and cgroup work
/// needs it).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// CPU time of thread `tid` of process `pid` so far, in ns (the first
/// field of its `schedstat`, read by [`crate::proc::schedstat_ns`]); `None`
/// if it is gone.
pub fn thread_cpu_ns(pid: i32, tid: Tid) -> Option<Nanos> {
    crate::proc::schedstat_ns(pid, tid)
}

/// For this crate's unit tests (see `gang_testkit::host`).
#[cfg(test)]
pub(crate) use gang_testkit::host::skip_or_fail;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threads_cpu_time_grows_while_it_runs_and_a_missing_one_is_none() {
        let (pid, tid) = (std::process::id() as i32, gettid());
        let before = thread_cpu_ns(pid, tid).expect("own schedstat");
        // Spin until 5 ms of CPU time show (however loaded the machine).
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut after = before;
        while after < before + 5_000_000 && std::time::Instant::now() < give_up {
            std::hint::spin_loop();
            after = thread_cpu_ns(pid, tid).unwrap();
        }
        assert!(after >= before + 5_000_000, "{before} -> {after}");
        assert_eq!(thread_cpu_ns(pid, 0), None);
    }

    #[test]
    fn clock_advances_and_sleep_reaches_its_target() {
        let t0 = monotonic_ns();
        sleep_until_monotonic(t0 + 200_000);
        assert!(monotonic_ns() >= t0 + 200_000);
    }

    #[test]
    fn policy_round_trips_on_the_calling_thread() {
        let before = policy(0).expect("read policy");
        if !is_root() {
            return skip_or_fail("setting SCHED_FIFO needs root");
        }
        std::thread::spawn(|| {
            set_policy(0, SchedPolicy::Fifo(3)).expect("fifo");
            assert_eq!(policy(0).expect("read"), SchedPolicy::Fifo(3));
            set_policy(0, SchedPolicy::Other).expect("back to other");
        })
        .join()
        .expect("thread");
        assert_eq!(policy(0).expect("read"), before);
    }

    #[test]
    fn futex_wait_times_out_and_wakes() {
        let word = AtomicU32::new(0);
        let t0 = monotonic_ns();
        futex_wait(&word, 0, Some(1_000_000));
        assert!(monotonic_ns() - t0 >= 500_000);
        futex_wait(&word, 1, None); // value differs: returns at once
        futex_wake_all(&word);
    }
}
