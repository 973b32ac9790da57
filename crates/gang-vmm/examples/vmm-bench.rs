//! Runs `gang_vmm::bench` with its defaults and prints the table (needs
//! /dev/kvm; root for the co-start skew). `cargo run -p gang-vmm --example
//! vmm-bench [KICKS [GANG_MS]]`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let images = (gang_guests::image("loop"), gang_guests::image("barrier"));
    let (Some(spin), Some(barrier)) = images else {
        return Err("guest images missing".into());
    };
    let mut opts = gang_vmm::bench::BenchOptions::new(spin, barrier);
    let mut args = std::env::args().skip(1);
    if let Some(k) = args.next() {
        opts.kicks = k.parse()?;
    }
    if let Some(ms) = args.next() {
        opts.gang_millis = ms.parse()?;
    }
    let report = gang_vmm::bench::run(&opts)?;
    print!("{report}");
    Ok(())
}
