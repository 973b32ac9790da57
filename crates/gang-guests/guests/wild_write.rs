//! wild-write: prints a line, then writes to guest-physical 0xd000_0000,
//! which is identity-mapped by the page tables but backed by no RAM or
//! device (the VM crashes).
#![no_std]
#![no_main]

mod rt;

/// Outside guest RAM for any VM below 3 GiB.
const WILD: u64 = 0xd000_0000;

#[no_mangle]
extern "C" fn guest_main(index: u64, _count: u64, _start_info: u64) {
    if index == 0 {
        rt::print(b"wild-write guest: writing to 0xd0000000\n");
        // SAFETY: deliberately writes outside RAM; that is this guest's purpose.
        unsafe { core::ptr::write_volatile(WILD as *mut u64, 0x5a5a) };
        rt::print(b"wild-write guest: still alive\n");
    }
    loop {
        rt::hlt();
    }
}
