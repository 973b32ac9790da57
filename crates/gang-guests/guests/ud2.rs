//! ud2: prints a line, then executes an invalid instruction with no IDT
//! (#UD, then a triple fault: the VM crashes).
#![no_std]
#![no_main]

mod rt;

#[no_mangle]
extern "C" fn guest_main(index: u64, _count: u64, _start_info: u64) {
    if index == 0 {
        rt::print(b"ud2 guest: executing ud2\n");
        // SAFETY: deliberately faults; that is this guest's purpose.
        unsafe { core::arch::asm!("ud2") };
    }
    loop {
        rt::hlt();
    }
}
