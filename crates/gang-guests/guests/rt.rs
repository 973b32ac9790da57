//! The guests' runtime: entry points, port I/O, the serial console, the
//! power port and the PVH start info. Included by every guest (`mod rt;`).
//!
//! Entry convention (gang-vmm): every vCPU starts at the entry at once, with
//! `esi` = its index (0 = boot vCPU), `edi` = the number of vCPUs and
//! `ebx` = the guest-physical address of the PVH `hvm_start_info`.
//! `_start32` is the PVH entry (32-bit protected mode, paging off);
//! `_start64` the ELF entry (64-bit mode, identity paging set up by the VMM).
//! Both end in `guest_main(index, count, start_info)` on a per-vCPU stack;
//! returning from it powers the VM off.

#![allow(dead_code)]

use core::arch::{asm, global_asm};

/// Stacks for this many vCPUs; higher indices halt forever.
pub const MAX_VCPUS: u64 = 8;

global_asm!(
    r#"
    .section .text.entry, "ax"
    .code32
    .global _start32
_start32:
    cli
    mov %esi, %ebp
    /* Identity-map the first 4 GiB with 2 MiB pages (idempotent: every
       vCPU writes the same values). */
    mov $boot_pd, %edx
    xor %ecx, %ecx
1:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, (%edx,%ecx,8)
    movl $0, 4(%edx,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jb 1b
    /* PAE, OSFXSR, OSXMMEXCPT */
    mov %cr4, %eax
    or $0x620, %eax
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3
    /* EFER.LME */
    mov $0xC0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    /* PG, MP; clear EM */
    mov %cr0, %eax
    or $0x80000002, %eax
    and $0xFFFFFFFB, %eax
    mov %eax, %cr0
    lgdt boot_gdt_ptr
    mov %ebp, %esi
    ljmp $0x08, $2f
    .code64
2:  mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    mov %esi, %esi
    mov %edi, %edi
    mov %ebx, %ebx
    jmp 3f

    .global _start64
_start64:
    cli
    /* SSE: CR0.MP on, CR0.EM off, CR4.OSFXSR|OSXMMEXCPT */
    mov %cr0, %rax
    or $0x2, %rax
    and $~0x4, %rax
    mov %rax, %cr0
    mov %cr4, %rax
    or $0x600, %rax
    mov %rax, %cr4
3:  cmp ${max}, %rsi
    jae 4f
    lea boot_stacks_end(%rip), %rsp
    mov %rsi, %rax
    shl $14, %rax
    sub %rax, %rsp
    mov %rbx, %rdx
    xchg %rdi, %rsi
    call guest_main
    /* returned: power off */
    mov $0x5f0, %dx
    xor %al, %al
    out %al, %dx
4:  hlt
    jmp 4b

    .section .data.boot, "aw"
    .p2align 12
boot_pml4:
    .quad boot_pdpt + 0x3
    .fill 511, 8, 0
boot_pdpt:
    .quad boot_pd + 0x3
    .quad boot_pd + 0x1003
    .quad boot_pd + 0x2003
    .quad boot_pd + 0x3003
    .fill 508, 8, 0
boot_pd:
    .fill 2048, 8, 0
    .p2align 3
boot_gdt:
    .quad 0
    .quad 0x00af9b000000ffff
    .quad 0x00cf93000000ffff
boot_gdt_ptr:
    .word 23
    .long boot_gdt

    .section .bss.stacks, "aw", @nobits
    .p2align 12
boot_stacks:
    .skip 16384 * {max}
boot_stacks_end:
"#,
    max = const MAX_VCPUS,
    options(att_syntax)
);

#[cfg(pvh)]
global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .p2align 2
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .p2align 2
    .long _start32
"#
);

// The memory functions the compiler may call (no libc here).
global_asm!(
    r#"
    .section .text.mem, "ax"
    .global memcpy
memcpy:
    mov %rdi, %rax
    mov %rdx, %rcx
    rep movsb
    ret
    .global memmove
memmove:
    mov %rdi, %rax
    mov %rdx, %rcx
    cmp %rsi, %rdi
    jbe 1f
    lea -1(%rsi,%rdx), %rsi
    lea -1(%rdi,%rdx), %rdi
    std
    rep movsb
    cld
    ret
1:  rep movsb
    ret
    .global memset
memset:
    mov %rdi, %r8
    mov %esi, %eax
    mov %rdx, %rcx
    rep stosb
    mov %r8, %rax
    ret
    .global memcmp
memcmp:
    xor %eax, %eax
    test %rdx, %rdx
    jz 2f
1:  movzbl (%rdi), %eax
    movzbl (%rsi), %ecx
    sub %ecx, %eax
    jnz 2f
    inc %rdi
    inc %rsi
    dec %rdx
    jnz 1b
2:  ret
    .global bcmp
bcmp:
    jmp memcmp
"#,
    options(att_syntax)
);

/// COM1.
pub const COM1: u16 = 0x3f8;
/// The gang power port (see gang-vmm `devices`).
pub const POWER_PORT: u16 = 0x5f0;

/// Writes a byte to an I/O port.
pub fn outb(port: u16, value: u8) {
    // SAFETY: port I/O in our own guest.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack)) }
}

/// Reads a byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: port I/O in our own guest.
    unsafe { asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack)) }
    v
}

/// Halts until the VMM wakes the vCPU.
pub fn hlt() {
    // SAFETY: interrupts are off; the VMM resumes us after the HLT exit.
    unsafe { asm!("hlt", options(nomem, nostack)) }
}

/// Powers the VM off.
pub fn poweroff() -> ! {
    outb(POWER_PORT, 0);
    loop {
        hlt();
    }
}

/// Asks for a reboot.
pub fn reboot() -> ! {
    outb(POWER_PORT, 1);
    loop {
        hlt();
    }
}

/// What the host asked for through the power port: 0 nothing, 1 power off,
/// 2 reboot.
pub fn power_request() -> u8 {
    inb(POWER_PORT)
}

/// Writes one byte to COM1 (polling the transmitter).
pub fn putc(b: u8) {
    while inb(COM1 + 5) & 0x20 == 0 {}
    outb(COM1, b);
}

/// Writes bytes to COM1.
///
/// The guests avoid everything that compiles to SSE arithmetic (string
/// formatting, UTF-8 validation, zeroed arrays): KVM on the development
/// machines emulates guest instructions and its emulator has no SSE
/// arithmetic (`xorps` ends the VM with `KVM_EXIT_INTERNAL_ERROR`). The build
/// checks the images for it.
pub fn print(s: &[u8]) {
    let mut i = 0;
    while i < s.len() {
        putc(s[i]);
        i += 1;
    }
}

/// Writes a number in decimal (no buffer: digits from the top).
pub fn print_u64(n: u64) {
    let mut div: u64 = 1;
    while n / div >= 10 {
        div *= 10;
    }
    loop {
        putc(b'0' + ((n / div) % 10) as u8);
        if div == 1 {
            break;
        }
        div /= 10;
    }
}

/// A received byte, if any.
pub fn read_byte() -> Option<u8> {
    if inb(COM1 + 5) & 0x01 != 0 {
        Some(inb(COM1))
    } else {
        None
    }
}

/// The fields of `hvm_start_info` we use.
#[repr(C)]
pub struct StartInfo {
    pub magic: u32,
    pub version: u32,
    pub flags: u32,
    pub nr_modules: u32,
    pub modlist_paddr: u64,
    pub cmdline_paddr: u64,
    pub rsdp_paddr: u64,
    pub memmap_paddr: u64,
    pub memmap_entries: u32,
    pub reserved: u32,
}

/// One module (`hvm_modlist_entry`).
#[repr(C)]
pub struct Module {
    pub paddr: u64,
    pub size: u64,
    pub cmdline_paddr: u64,
    pub reserved: u64,
}

/// The start info at `addr` (identity-mapped), if its magic is right.
pub fn start_info(addr: u64) -> Option<&'static StartInfo> {
    if addr == 0 {
        return None;
    }
    // SAFETY: the VMM put an hvm_start_info there; memory is identity-mapped.
    let si = unsafe { &*(addr as *const StartInfo) };
    (si.magic == 0x336e_c578).then_some(si)
}

/// The command line from the start info (empty if none).
pub fn cmdline(si: Option<&'static StartInfo>) -> &'static [u8] {
    let Some(si) = si else { return &[] };
    if si.cmdline_paddr == 0 {
        return &[];
    }
    let p = si.cmdline_paddr as *const u8;
    let mut n = 0;
    // SAFETY: a NUL-terminated string the VMM wrote in guest RAM.
    while n < 4096 && unsafe { p.add(n).read_volatile() } != 0 {
        n += 1;
    }
    // SAFETY: the n bytes just scanned.
    unsafe { core::slice::from_raw_parts(p, n) }
}

/// The modules (the ramdisk is the first).
pub fn modules(si: Option<&'static StartInfo>) -> &'static [Module] {
    match si {
        Some(si) if si.nr_modules > 0 && si.modlist_paddr != 0 => {
            // SAFETY: the VMM wrote nr_modules entries there.
            unsafe {
                core::slice::from_raw_parts(
                    si.modlist_paddr as *const Module,
                    si.nr_modules as usize,
                )
            }
        }
        _ => &[],
    }
}

/// The value of `key=` on the command line, as a decimal number.
pub fn arg_u64(cmdline: &[u8], key: &[u8]) -> Option<u64> {
    let mut i = 0;
    while i < cmdline.len() {
        // At the start of a word: does it read `key=`?
        let mut k = 0;
        while k < key.len() && i + k < cmdline.len() && cmdline[i + k] == key[k] {
            k += 1;
        }
        if k == key.len() && i + k < cmdline.len() && cmdline[i + k] == b'=' {
            let mut j = i + k + 1;
            let mut v: u64 = 0;
            let mut digits = 0;
            while j < cmdline.len() && cmdline[j].is_ascii_digit() {
                v = v.wrapping_mul(10).wrapping_add(u64::from(cmdline[j] - b'0'));
                j += 1;
                digits += 1;
            }
            return (digits > 0).then_some(v);
        }
        while i < cmdline.len() && cmdline[i] != b' ' {
            i += 1;
        }
        i += 1;
    }
    None
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    print(b"guest panic\n");
    outb(POWER_PORT, 2);
    loop {
        hlt();
    }
}

/// The precompiled `core` refers to it (built with unwinding); we abort on
/// panic, so it is never called.
#[no_mangle]
extern "C" fn rust_eh_personality() {}
