//! # gang-vmm: KVM micro-VMs whose vCPUs a gang runtime can gate
//!
//! A small VMM on the rust-vmm crates (kvm-ioctls, kvm-bindings, vm-memory,
//! linux-loader, vm-superio, vmm-sys-util): ELF kernels booted through the
//! PVH entry (the Xen ELF note) or a plain 64-bit entry, a 16550 on COM1, a
//! power port, one thread per vCPU.
//!
//! Modules: [`vm`] (the [`Vm`] and its life cycle), [`vcpu`] (the vCPU
//! threads' state machine, scheduling by Linux or a gang runtime, exits),
//! [`boot`] (loading, memory map, entry state), [`devices`] (I/O ports),
//! [`kick`] (the signal that gets a thread out of `KVM_RUN`), [`bench`]
//! (kick latency and co-start skew), [`probe`] (how fast KVM runs guest
//! code here), `sys` (registering guest memory).
//!
//! ```no_run
//! use std::sync::Arc;
//! use gang_core::DomainId;
//! use gang_vmm::{Vm, VmConfig};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = VmConfig::new(DomainId(7), std::path::PathBuf::from("guest.elf"), 64, 2);
//! config.cmdline = "rounds=1000".into();
//! let (tx, rx) = std::sync::mpsc::channel();
//! let tx = std::sync::Mutex::new(tx);
//! let mut vm = Vm::create(config, Box::new(std::io::stdout()),
//!     Box::new(move |exit| { let _ = tx.lock().map(|t| t.send(exit)); }))?;
//! vm.start(false)?;                  // Pool-0: scheduled by Linux
//! let exit = rx.recv()?;             // Poweroff | Reboot | Crash(why)
//! vm.destroy();
//! # Ok(()) }
//! ```

#[allow(unsafe_code)]
pub mod kick;
#[allow(unsafe_code)]
mod sys;

pub mod bench;
pub mod boot;
pub mod devices;
pub mod probe;
pub mod vcpu;
pub mod vm;

pub use boot::Image;
pub use vcpu::{GangScheduler, Scheduling};
pub use vm::{ExitReason, OnExit, Vm, VmConfig, VmExit, VmState, VmmError};
