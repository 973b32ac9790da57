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
    rt::print(b"Hello from gang guest (vcpus: ");
    rt::print_u64(count);
    rt::print(b")\ncmdline: ");
    rt::print(rt::cmdline(si));
    rt::print(b"\n");
    if let Some(m) = rt::modules(si).first() {
        rt::print(b"ramdisk: ");
        rt::print_u64(m.size);
        rt::print(b" bytes: ");
        // SAFETY: the module's bytes, identity-mapped.
        let bytes = unsafe { core::slice::from_raw_parts(m.paddr as *const u8, m.size.min(16) as usize) };
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b.is_ascii_graphic() || b == b' ' {
                rt::putc(b);
            }
            i += 1;
        }
        rt::print(b"\n");
    }
    rt::poweroff();
}
