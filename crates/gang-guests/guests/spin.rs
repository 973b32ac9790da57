//! loop: prints a line, then loops forever without any exit to the VMM (it
//! ignores shutdown requests: only destroy ends it).
#![no_std]
#![no_main]

mod rt;

#[no_mangle]
extern "C" fn guest_main(_index: u64, _count: u64, _start_info: u64) {
    rt::print(b"loop guest: looping forever\n");
    // SAFETY: an empty infinite loop in asm (a Rust `loop {}` may be elided).
    unsafe { core::arch::asm!("2: jmp 2b", options(noreturn)) }
}
