//! # gang-guests: test guests for gang-vmm
//!
//! Small `#![no_std]` Rust programs built by this crate's `build.rs` with the
//! toolchain already on the machine (the host target, no extra target
//! needed) and linked by the system C compiler into static ELF images loaded
//! at 1 MiB. Sources are in `guests/`; the common runtime is `guests/rt.rs`.
//!
//! Images (see [`IMAGES`]; each prints on COM1):
//!
//! | name | entry | what it does |
//! |---|---|---|
//! | `hello` | PVH | prints `Hello from gang guest`, its command line and ramdisk, powers off |
//! | `hello64` | 64-bit ELF | the same, through the plain 64-bit entry |
//! | `barrier` | 64-bit ELF | all vCPUs spin on a shared-memory barrier; vCPU 0 prints `round N` every `every=` rounds; stops after `rounds=` (0: never) or on a shutdown request |
//! | `barrier-pvh` | PVH | the same through the PVH entry |
//! | `echo` | PVH | echoes console input, halting while idle; `q` powers off, `r` reboots |
//! | `ud2` | PVH | executes an invalid instruction with no IDT (triple fault) |
//! | `loop` | PVH | vCPU 0 prints `loop guest: looping forever`; every vCPU then loops forever with no exit, ignoring shutdown requests |
//! | `wild-write` | 64-bit ELF | writes to guest-physical 0xd000_0000 (no RAM, no device) |
//!
//! Entry convention (what gang-vmm provides): every vCPU starts at the entry
//! at once with `esi` = its index, `edi` = the vCPU count, `ebx` = the PVH
//! start info; there is no INIT/SIPI bring-up.

include!(concat!(env!("OUT_DIR"), "/images.rs"));

/// The hello guest (PVH entry).
pub const HELLO: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hello.elf"));
/// The barrier guest (64-bit entry).
pub const BARRIER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/barrier.elf"));

/// The names of every image.
pub fn names() -> impl Iterator<Item = &'static str> {
    IMAGES.iter().map(|(n, _)| *n)
}

/// The image called `name`.
pub fn image(name: &str) -> Option<&'static [u8]> {
    IMAGES.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_image_is_a_64_bit_elf_and_pvh_ones_carry_the_note() {
        for (name, bytes) in IMAGES {
            assert_eq!(&bytes[..4], b"\x7fELF", "{name}");
            assert_eq!(bytes[4], 2, "{name}: ELF64");
            let has_note = bytes.windows(4).any(|w| w == b"Xen\0");
            let pvh = !matches!(*name, "hello64" | "barrier" | "wild-write");
            assert_eq!(has_note, pvh, "{name}");
        }
        assert!(image("hello").is_some() && image("nope").is_none());
        assert_eq!(names().count(), IMAGES.len());
    }
}
