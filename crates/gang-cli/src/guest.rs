//! `gang guest-image`: the in-repo test guests (built with gang itself), so
//! that a `type = "pvh"` domain can be tried without any other download.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::Args;

const LONG_ABOUT: &str = "\
Write one of gang's built-in test guests (ELF kernels for type = \"pvh\" \
domains, built from Rust by gang's own build) to a file, or list them.

GUESTS

  hello        prints a line on COM1 and powers off (PVH entry)
  hello64      the same through a plain 64-bit ELF entry
  barrier      every vCPU spins on a shared-memory barrier; vCPU 0 prints
               the rounds (cmdline: rounds=N every=N; rounds=0: forever)
  barrier-pvh  the same, PVH entry
  echo         echoes console input
  ud2          executes an invalid instruction (the domain crashes)
  loop         loops forever
  wild-write   writes to unmapped memory (the domain crashes)

EXAMPLE

  gang guest-image barrier -o /tmp/barrier.elf
  cat > pair.cfg <<CFG
  name = \"pair\"
  type = \"pvh\"
  kernel = \"/tmp/barrier.elf\"
  cmdline = \"rounds=0\"
  vcpus = 2
  memory = 16
  pool = \"Wide\"
  CFG
  gang create -c pair.cfg";

/// `gang guest-image [NAME] [-o FILE]`.
#[derive(Debug, Args)]
#[command(about = "Write a built-in test guest kernel to a file (or list them)", long_about = LONG_ABOUT)]
pub struct GuestImageArgs {
    /// The guest; without it, the list of guests.
    name: Option<String>,
    /// Where to write it (default: standard output).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn run(args: &GuestImageArgs) -> Result<()> {
    let Some(name) = &args.name else {
        for n in gang_guests::names() {
            println!("{n}");
        }
        return Ok(());
    };
    let Some(image) = gang_guests::image(name) else {
        let all: Vec<&str> = gang_guests::names().collect();
        bail!("no guest '{name}' (guests: {})", all.join(", "));
    };
    match &args.output {
        Some(path) => {
            std::fs::write(path, image).with_context(|| format!("writing {}", path.display()))
        }
        None => std::io::stdout()
            .write_all(image)
            .context("writing to standard output"),
    }
}
