//! The guest's I/O ports: COM1, the gang power port and the i8042 reset.
//!
//! | port | device | guest writes | guest reads |
//! |---|---|---|---|
//! | `0x3f8`–`0x3ff` | COM1, a 16550A (vm-superio) with no IRQ: guests poll the line status register | a byte to the console | console input, 64-byte FIFO refilled from a backlog |
//! | `0x5f0` | gang power port ([`POWER_PORT`]) | `0` power off, `1` reboot, `2` crash (guest panic) | the host's pending request: `0` none, `1` power off ([`crate::Vm::shutdown`]), `2` reboot |
//! | `0x64` | i8042 command | `0xfe` (pulse reset) reboots, as on a PC and in Firecracker | `0` |
//! | any other | nothing | ignored | all ones (`0xff…`), as an ISA bus with no device |
//!
//! There is no memory-mapped device: every MMIO exit is an access to a
//! guest-physical address backed by neither RAM nor a device, and crashes
//! the VM (see `vcpu`).
//!
//! Invariant: device handlers never block on the guest and never panic; a
//! console writer that fails loses output (counted), it never stops the VM.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

use vm_superio::{Serial, Trigger};

use crate::vm::ExitReason;

/// COM1's base port.
pub const COM1: u16 = 0x3f8;
/// The gang power port.
pub const POWER_PORT: u16 = 0x5f0;
/// The i8042 command port.
pub const I8042_COMMAND: u16 = 0x64;
/// The i8042 "pulse reset line" command.
pub const I8042_RESET: u8 = 0xfe;

/// Host requests readable at the power port.
pub const REQUEST_NONE: u8 = 0;
/// The host asks the guest to power off.
pub const REQUEST_POWEROFF: u8 = 1;
/// The host asks the guest to reboot.
pub const REQUEST_REBOOT: u8 = 2;

/// No interrupt line: our guests poll.
#[derive(Debug)]
struct NoIrq;

impl Trigger for NoIrq {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        Ok(())
    }
}

/// The console writer, boxed.
pub type ConsoleOut = Box<dyn Write + Send>;

struct Console {
    serial: Serial<NoIrq, vm_superio::serial::NoEvents, ConsoleOut>,
    /// Input that did not fit in the FIFO yet.
    backlog: VecDeque<u8>,
}

impl Console {
    fn refill(&mut self) {
        while !self.backlog.is_empty() && self.serial.fifo_capacity() > 0 {
            let n = self.serial.fifo_capacity().min(self.backlog.len());
            let chunk: Vec<u8> = self.backlog.drain(..n).collect();
            let _ = self.serial.enqueue_raw_bytes(&chunk);
        }
    }
}

/// The devices of one VM, shared by its vCPU threads.
pub struct Devices {
    console: Mutex<Console>,
    request: AtomicU8,
    lost_output: AtomicU64,
}

impl std::fmt::Debug for Devices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Devices")
            .field("request", &self.request.load(Ordering::Relaxed))
            .finish()
    }
}

impl Devices {
    /// Devices writing console output to `out`.
    pub fn new(out: ConsoleOut) -> Devices {
        Devices {
            console: Mutex::new(Console {
                serial: Serial::new(NoIrq, out),
                backlog: VecDeque::new(),
            }),
            request: AtomicU8::new(REQUEST_NONE),
            lost_output: AtomicU64::new(0),
        }
    }

    fn console(&self) -> std::sync::MutexGuard<'_, Console> {
        self.console.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues console input for the guest.
    pub fn console_input(&self, bytes: &[u8]) {
        let mut c = self.console();
        c.backlog.extend(bytes);
        c.refill();
    }

    /// Posts a request the guest reads at the power port.
    pub fn request(&self, what: u8) {
        self.request.store(what, Ordering::Release);
    }

    /// Console bytes the writer failed to take.
    pub fn lost_output(&self) -> u64 {
        self.lost_output.load(Ordering::Relaxed)
    }

    /// A guest `out`: returns how the VM ends, if it does.
    pub fn io_out(&self, port: u16, data: &[u8]) -> Option<ExitReason> {
        let value = data.first().copied().unwrap_or(0);
        match port {
            p if (COM1..COM1 + 8).contains(&p) => {
                if self
                    .console()
                    .serial
                    .write((p - COM1) as u8, value)
                    .is_err()
                {
                    self.lost_output.fetch_add(1, Ordering::Relaxed);
                }
                None
            }
            POWER_PORT => Some(match value {
                0 => ExitReason::Poweroff,
                1 => ExitReason::Reboot,
                2 => ExitReason::Crash("the guest reported a panic (power port)".into()),
                v => ExitReason::Crash(format!("unknown power port command {v:#x}")),
            }),
            I8042_COMMAND if value == I8042_RESET => Some(ExitReason::Reboot),
            _ => None,
        }
    }

    /// A guest `in`: fills `data`.
    pub fn io_in(&self, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        match port {
            p if (COM1..COM1 + 8).contains(&p) => {
                let mut c = self.console();
                let v = c.serial.read((p - COM1) as u8);
                if p == COM1 {
                    c.refill();
                }
                if let Some(d) = data.first_mut() {
                    *d = v;
                }
            }
            POWER_PORT => {
                data.fill(0);
                if let Some(d) = data.first_mut() {
                    *d = self.request.load(Ordering::Acquire);
                }
            }
            I8042_COMMAND => data.fill(0),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn serial_output_input_and_power_port() {
        let buf = Buf::default();
        let d = Devices::new(Box::new(buf.clone()));
        for &b in b"hi\n" {
            assert_eq!(d.io_out(COM1, &[b]), None);
        }
        assert_eq!(&*buf.0.lock().unwrap(), b"hi\n");
        // More input than the FIFO holds arrives in order through the backlog.
        let input: Vec<u8> = (0..200u32).map(|i| (i % 251) as u8).collect();
        d.console_input(&input);
        let mut got = Vec::new();
        let mut v = [0u8; 1];
        loop {
            d.io_in(COM1 + 5, &mut v);
            if v[0] & 1 == 0 {
                break;
            }
            d.io_in(COM1, &mut v);
            got.push(v[0]);
        }
        assert_eq!(got, input);
        let mut r = [0u8; 1];
        d.io_in(POWER_PORT, &mut r);
        assert_eq!(r[0], REQUEST_NONE);
        d.request(REQUEST_POWEROFF);
        d.io_in(POWER_PORT, &mut r);
        assert_eq!(r[0], REQUEST_POWEROFF);
        assert_eq!(d.io_out(POWER_PORT, &[0]), Some(ExitReason::Poweroff));
        assert_eq!(d.io_out(POWER_PORT, &[1]), Some(ExitReason::Reboot));
        assert!(matches!(
            d.io_out(POWER_PORT, &[2]),
            Some(ExitReason::Crash(_))
        ));
        assert_eq!(
            d.io_out(I8042_COMMAND, &[I8042_RESET]),
            Some(ExitReason::Reboot)
        );
        assert_eq!(d.io_out(I8042_COMMAND, &[0x20]), None);
        let mut w = [0u8; 2];
        d.io_in(0x1234, &mut w);
        assert_eq!(w, [0xff, 0xff]);
    }
}
