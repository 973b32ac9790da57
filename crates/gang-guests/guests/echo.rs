//! echo: prints `echo ready`, then echoes console input line by line,
//! halting (HLT) while there is none; `q` powers off, `r` asks for a reboot.
//! Also powers off when the host asks through the power port.
#![no_std]
#![no_main]

mod rt;

#[no_mangle]
extern "C" fn guest_main(index: u64, _count: u64, _start_info: u64) {
    if index != 0 {
        loop {
            rt::hlt();
        }
    }
    rt::print(b"echo ready\n");
    loop {
        match rt::read_byte() {
            Some(b'q') => {
                rt::print(b"bye\n");
                rt::poweroff();
            }
            Some(b'r') => rt::reboot(),
            Some(b) => rt::putc(b),
            None => {
                if rt::power_request() != 0 {
                    rt::print(b"shutdown requested\n");
                    rt::poweroff();
                }
                rt::hlt();
            }
        }
    }
}
