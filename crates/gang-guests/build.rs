//! Builds the test guests with the toolchain that builds this crate: `rustc`
//! (env RUSTC) for the host target, `#![no_std] #![no_main]`, linked by the
//! system C compiler with our linker script into static ELF images at 1 MiB.
//! Also builds the Linux guest image's userland (`linux/gang_guest.rs`), a
//! std program linked statically against glibc. Writes only into OUT_DIR.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (image name, source file, with a PVH note)
const GUESTS: &[(&str, &str, bool)] = &[
    ("hello", "hello.rs", true),
    ("hello64", "hello.rs", false),
    ("barrier", "barrier.rs", false),
    ("barrier-pvh", "barrier.rs", true),
    ("echo", "echo.rs", true),
    ("ud2", "ud2.rs", true),
    ("loop", "spin.rs", true),
    ("wild-write", "wild_write.rs", false),
];

/// KVM on the development machines emulates guest instructions, and its
/// emulator has no SSE arithmetic: a guest using it crashes with
/// `KVM_EXIT_INTERNAL_ERROR`. Fails the build if an image uses an XMM
/// register (checked with `objdump` when the machine has it).
fn check_no_sse(image: &Path, name: &str) {
    let Ok(out) = Command::new("objdump").arg("-d").arg(image).output() else {
        println!("cargo:warning=objdump not found: guest {name} not checked for SSE");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("%xmm"))
        .take(5)
        .collect();
    assert!(
        bad.is_empty(),
        "guest {name} uses SSE, which KVM's emulator cannot run:\n{}",
        bad.join("\n")
    );
}

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let src = Path::new("guests");
    println!("cargo:rerun-if-changed=guests");
    let script = src.join("link.ld").canonicalize().expect("guests/link.ld");
    let mut list =
        String::from("/// Every image: (name, bytes).\npub const IMAGES: &[(&str, &[u8])] = &[\n");
    for &(name, file, pvh) in GUESTS {
        let image = out.join(format!("{name}.elf"));
        let mut cmd = Command::new(&rustc);
        cmd.arg(src.join(file))
            .args(["--edition", "2021", "--crate-type", "bin"])
            .args(["--crate-name", &name.replace('-', "_")])
            .args(["-C", "panic=abort", "-C", "relocation-model=static"])
            .args([
                "-C",
                "opt-level=2",
                "-C",
                "debuginfo=0",
                "-C",
                "strip=symbols",
            ])
            .args(["-C", "code-model=small", "-C", "no-vectorize-loops"])
            .args(["-C", "no-vectorize-slp"])
            .args(["-C", "link-arg=-nostdlib", "-C", "link-arg=-static"])
            .args([
                "-C",
                "link-arg=-no-pie",
                "-C",
                "link-arg=-Wl,--build-id=none",
            ])
            .arg("-C")
            .arg(format!("link-arg=-Wl,-T,{}", script.display()))
            .arg("-o")
            .arg(&image)
            // Our guests must not depend on the caller's flags (e.g.
            // RUSTFLAGS for coverage or sanitizers).
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS");
        if pvh {
            cmd.args(["--cfg", "pvh"]);
        }
        let status = cmd.status().expect("running rustc for a guest");
        assert!(status.success(), "building guest {name} failed");
        check_no_sse(&image, name);
        list.push_str(&format!(
            "    ({name:?}, include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{name}.elf\"))),\n"
        ));
    }
    list.push_str("];\n");
    std::fs::write(out.join("images.rs"), list).expect("writing images.rs");
    build_linux_userland(&rustc, &out);
}

/// `linux/gang_guest.rs` as a static x86-64 Linux executable: std, glibc's
/// `libc.a` (`+crt-static`), stripped, no unwinding.
fn build_linux_userland(rustc: &std::ffi::OsStr, out: &Path) {
    println!("cargo:rerun-if-changed=linux");
    let exe = out.join("gang-guest");
    let status = Command::new(rustc)
        .arg(Path::new("linux").join("gang_guest.rs"))
        .args(["--edition", "2021", "--crate-type", "bin"])
        .args(["--crate-name", "gang_guest"])
        .args(["--target", "x86_64-unknown-linux-gnu"])
        .args(["-C", "target-feature=+crt-static"])
        .args(["-C", "opt-level=2", "-C", "panic=abort"])
        .args(["-C", "debuginfo=0", "-C", "strip=symbols"])
        .arg("-o")
        .arg(&exe)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("running rustc for the Linux guest userland");
    assert!(
        status.success(),
        "building the Linux guest userland (linux/gang_guest.rs) failed; it needs \
         the x86_64-unknown-linux-gnu standard library and glibc's static libc.a \
         (Debian: libc6-dev)"
    );
}
