//! # gang-qemu: QEMU as gang's device model
//!
//! Xen runs HVM guests with QEMU as their device model; gang does the same
//! for `type = "hvm"` domains (and `type = "pvh"` ones with
//! `device_model = "qemu"`). The daemon starts one QEMU process per domain,
//! controls it over QMP and gang-schedules its vCPU threads like any other
//! adopted threads. This crate holds what is QEMU-specific and testable on
//! its own:
//!
//! * [`qmp`]: a small QMP client (handshake, commands with a deadline,
//!   events on a channel filled by a reader thread).
//! * [`args`]: an xl.cfg domain configuration to QEMU's command line; every
//!   key or value QEMU cannot honour is refused by name, never dropped.
//! * [`accel`]: which accelerator to use (KVM where it runs guest code at
//!   native speed, TCG otherwise).
//! * [`image`]: `gang guest-image linux`, a kernel and an initramfs built
//!   from Debian packages and gang's own init and workloads.

pub mod accel;
pub mod args;
pub mod image;
pub mod qmp;
