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
//! [`LINUX_USERLAND`] is different: `/bin/gang-guest` of the Linux guest
//! image (`gang guest-image linux`, built by gang-qemu), a std program
//! linked statically against glibc. Its sub-commands are the image's
//! workloads: `barrier [--threads N]` (threads meeting at a spin barrier,
//! printing `gang-guest: barrier N rounds/s` every second) and
//! `pipes [--pairs N]` (pairs of processes ping-ponging through pipes,
//! printing `gang-guest: pipes N msgs/s`). Source: `linux/gang_guest.rs`.
//!
//! Entry convention (what gang-vmm provides): every vCPU starts at the entry
//! at once with `esi` = its index, `edi` = the vCPU count, `ebx` = the PVH
//! start info; there is no INIT/SIPI bring-up.

include!(concat!(env!("OUT_DIR"), "/images.rs"));

/// The hello guest (PVH entry).
pub const HELLO: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hello.elf"));
/// The barrier guest (64-bit entry).
pub const BARRIER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/barrier.elf"));

/// `/bin/gang-guest` of the Linux guest image: a static x86-64 Linux
/// executable (see the crate documentation).
pub const LINUX_USERLAND: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/gang-guest"));

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

    /// The ELF program header types in `elf` (a 64-bit little-endian ELF).
    fn program_header_types(elf: &[u8]) -> Vec<u32> {
        let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
        let phoff = u64::from_le_bytes(elf[32..40].try_into().unwrap()) as usize;
        let (size, count) = (u16_at(54), u16_at(56));
        (0..count)
            .map(|i| {
                let o = phoff + i * size;
                u32::from_le_bytes(elf[o..o + 4].try_into().unwrap())
            })
            .collect()
    }

    #[test]
    fn the_linux_userland_is_a_static_x86_64_executable() {
        let elf = LINUX_USERLAND;
        assert_eq!(&elf[..4], b"\x7fELF");
        assert_eq!(elf[4], 2, "ELF64");
        assert_eq!(elf[5], 1, "little-endian");
        assert_eq!(u16::from_le_bytes([elf[18], elf[19]]), 62, "x86-64");
        let kind = u16::from_le_bytes([elf[16], elf[17]]);
        assert!(kind == 2 || kind == 3, "an executable (static-pie or not)");
        let types = program_header_types(elf);
        assert!(types.contains(&1), "has a PT_LOAD");
        const PT_INTERP: u32 = 3;
        assert!(
            !types.contains(&PT_INTERP),
            "no PT_INTERP: statically linked"
        );
        // Small enough for an initramfs.
        assert!(elf.len() < 4 << 20, "{} bytes", elf.len());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_linux_userland_runs_here_and_reports_rates() {
        use std::io::{BufRead, BufReader};
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("gang-guest-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("gang-guest");
        std::fs::write(&exe, LINUX_USERLAND).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();

        let usage = std::process::Command::new(&exe)
            .arg("nope")
            .output()
            .unwrap();
        assert_eq!(usage.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&usage.stderr).contains("usage: gang-guest"));

        for (args, unit) in [
            (["barrier", "--threads", "2"], "rounds/s"),
            (["pipes", "--pairs", "1"], "msgs/s"),
        ] {
            let mut child = std::process::Command::new(&exe)
                .args(args)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let out = child.stdout.take().unwrap();
            let mut rates = Vec::new();
            for line in BufReader::new(out).lines() {
                let line = line.unwrap();
                let Some(rest) = line.strip_prefix(&format!("gang-guest: {} ", args[0])) else {
                    continue;
                };
                if let Some(n) = rest.strip_suffix(&format!(" {unit}")) {
                    rates.push(n.parse::<u64>().unwrap());
                    if rates.len() == 2 {
                        break;
                    }
                }
            }
            child.kill().unwrap();
            child.wait().unwrap();
            assert_eq!(rates.len(), 2, "{args:?}");
            assert!(rates.iter().all(|&r| r > 0), "{args:?}: {rates:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
