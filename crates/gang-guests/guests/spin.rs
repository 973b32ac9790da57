//! loop: vCPU 0 prints a line, then every vCPU loops forever without any
//! exit to the VMM (it ignores shutdown requests: only destroy ends it).
//!
//! Only vCPU 0 prints: the vCPUs start at once and COM1 takes one byte per
//! exit, so lines printed by two vCPUs interleave byte by byte (then neither
//! copy of the line is on the console).
#![no_std]
#![no_main]

mod rt;

#[no_mangle]
extern "C" fn guest_main(index: u64, _count: u64, _start_info: u64) {
    if index == 0 {
        rt::print(b"loop guest: looping forever\n");
    }
    // SAFETY: an empty infinite loop in asm (a Rust `loop {}` may be elided).
    unsafe { core::arch::asm!("2: jmp 2b", options(noreturn)) }
}
