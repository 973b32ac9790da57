//! hello: vCPU 0 prints a greeting, the command line and the ramdisk's size
//! and first bytes on COM1, then powers off. Other vCPUs halt.
#![no_std]
#![no_main]

mod rt;

#[no_mangle]
extern "C" fn guest_main(index: u64, count: u64, start_info: u64) {
    if index != 0 {
        loop {
            rt::hlt();
        }
    }
    let si = rt::start_info(start_info);
    rt::print("Hello from gang guest (vcpus: ");
    rt::print_u64(count);
    rt::print(")\ncmdline: ");
    rt::print(rt::cmdline(si));
    rt::print("\n");
    if let Some(m) = rt::modules(si).first() {
        rt::print("ramdisk: ");
        rt::print_u64(m.size);
        rt::print(" bytes: ");
        // SAFETY: the module's bytes, identity-mapped.
        let bytes = unsafe { core::slice::from_raw_parts(m.paddr as *const u8, m.size.min(16) as usize) };
        for &b in bytes {
            if b.is_ascii_graphic() || b == b' ' {
                rt::print(core::str::from_utf8(&[b]).unwrap_or("?"));
            }
        }
        rt::print("\n");
    }
    rt::poweroff();
}
