//! Loading a guest and the state its vCPUs start in.
//!
//! **Memory map** (guest-physical; RAM is one region from 0, at most
//! [`MAX_MEMORY_MIB`]):
//!
//! | address | what |
//! |---|---|
//! | `0x1000` | GDT: null, code, data, TSS descriptors |
//! | `0x6000` | PVH `hvm_start_info`, then the module list at `0x6040` |
//! | `0x7000` | PVH memory map (E820-style entries) |
//! | `0x9000`–`0xefff` | 64-bit entry page tables: PML4, PDPT, 4 PDs (identity map of 4 GiB, 2 MiB pages) |
//! | `0x20000` | the command line (NUL-terminated, < 4 KiB) |
//! | `0x100000`… | the kernel's ELF segments (at their physical addresses) |
//! | top of RAM | the ramdisk (module 0), page-aligned |
//!
//! **Entry.** An ELF with a `XEN_ELFNOTE_PHYS32_ENTRY` note boots through the
//! PVH entry: 32-bit protected mode, paging off, flat segments, `ebx` = the
//! start info. Any other 64-bit ELF boots at `e_entry` in 64-bit mode with
//! the identity page tables above, flat segments, `CR4.PAE|OSFXSR|OSXMMEXCPT`,
//! `rbx` = the start info (filled in for both). No IDT (limit 0): an
//! exception the guest does not handle triple-faults.
//!
//! **SMP without INIT/SIPI.** Every vCPU starts at the entry at once with
//! `esi` = its index (0 boots) and `edi` = the vCPU count; a guest that wants
//! one boot CPU parks the others itself. A stock Linux kernel expects
//! INIT/SIPI through a local APIC and will not bring its other CPUs up this
//! way (nor boot at all without an interrupt controller: see `vcpu`).

use std::borrow::Cow;
use std::io::Cursor;
use std::path::PathBuf;

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs, CpuId};
use kvm_ioctls::VcpuFd;
use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Largest guest RAM (RAM stays below the 3 GiB the test guests poke).
pub const MAX_MEMORY_MIB: u64 = 3072;
/// Smallest guest RAM.
pub const MIN_MEMORY_MIB: u64 = 2;
/// Where the GDT is.
pub const GDT_ADDR: u64 = 0x1000;
/// Where the PVH start info is.
pub const START_INFO_ADDR: u64 = 0x6000;
/// Where the module list is.
pub const MODLIST_ADDR: u64 = 0x6040;
/// Where the memory map is.
pub const MEMMAP_ADDR: u64 = 0x7000;
/// Where the 64-bit entry's PML4 is (PDPT and PDs follow, a page each).
pub const PML4_ADDR: u64 = 0x9000;
/// Where the command line is.
pub const CMDLINE_ADDR: u64 = 0x20000;
/// Command line capacity, NUL included.
pub const CMDLINE_MAX: usize = 4096;
/// Where kernels may load.
pub const HIMEM_START: u64 = 0x100000;

const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;

/// GDT entries (flat, base 0, limit 4 GiB): null, code, data, TSS.
const GDT_PVH: [u64; 4] = [
    0,
    0x00cf_9b00_0000_ffff, // 32-bit code
    0x00cf_9300_0000_ffff, // data
    0x008f_8b00_0000_ffff, // TSS (busy)
];
const GDT_64: [u64; 4] = [
    0,
    0x00af_9b00_0000_ffff, // 64-bit code
    0x00cf_9300_0000_ffff, // data
    0x008f_8b00_0000_ffff, // TSS (busy)
];

/// A kernel or ramdisk: a file, or bytes already in memory.
#[derive(Debug, Clone)]
pub enum Image {
    /// Read from this file when the VM is created.
    Path(PathBuf),
    /// These bytes.
    Bytes(Cow<'static, [u8]>),
}

impl From<PathBuf> for Image {
    fn from(p: PathBuf) -> Self {
        Image::Path(p)
    }
}

impl From<&'static [u8]> for Image {
    fn from(b: &'static [u8]) -> Self {
        Image::Bytes(Cow::Borrowed(b))
    }
}

impl From<Vec<u8>> for Image {
    fn from(b: Vec<u8>) -> Self {
        Image::Bytes(Cow::Owned(b))
    }
}

impl Image {
    fn bytes(&self) -> Result<Cow<'_, [u8]>, BootError> {
        match self {
            Image::Bytes(b) => Ok(Cow::Borrowed(b)),
            Image::Path(p) => std::fs::read(p)
                .map(Cow::Owned)
                .map_err(|e| BootError::Read {
                    path: p.clone(),
                    source: e,
                }),
        }
    }
}

/// Boot errors.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// An image file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not an ELF we can load.
    #[error("the kernel is not a loadable 64-bit ELF image: {0}")]
    Elf(linux_loader::loader::Error),
    /// The command line does not fit or has bad characters.
    #[error("bad command line: {0}")]
    Cmdline(String),
    /// The ramdisk does not fit in RAM above the kernel.
    #[error("the ramdisk ({size} bytes) does not fit in guest RAM above the kernel (which ends at {kernel_end:#x})")]
    RamdiskTooBig {
        /// Its size.
        size: usize,
        /// Where the kernel ends.
        kernel_end: u64,
    },
    /// Writing boot structures to guest memory failed.
    #[error("writing {what} to guest memory: {detail}")]
    Memory {
        /// What.
        what: &'static str,
        /// Why.
        detail: String,
    },
}

/// How the vCPUs enter the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// PVH: 32-bit protected mode at this address.
    Pvh(u64),
    /// 64-bit mode at this address.
    Elf64(u64),
}

/// What loading produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    /// The entry.
    pub entry: Entry,
    /// Where the kernel's segments end.
    pub kernel_end: u64,
    /// The ramdisk's (address, size), if any.
    pub ramdisk: Option<(u64, u64)>,
}

fn mem_err(what: &'static str) -> impl FnOnce(String) -> BootError {
    move |detail| BootError::Memory { what, detail }
}

/// Loads the kernel, ramdisk and command line into `mem` (`size` bytes of
/// RAM from 0) and writes the start info, GDT and page tables.
pub fn load(
    mem: &GuestMemoryMmap,
    size: u64,
    kernel: &Image,
    ramdisk: Option<&Image>,
    cmdline: &str,
) -> Result<Loaded, BootError> {
    let image = kernel.bytes()?;
    let result = Elf::load(
        mem,
        None,
        &mut Cursor::new(image.as_ref()),
        Some(GuestAddress(HIMEM_START)),
    )
    .map_err(BootError::Elf)?;
    let entry = match result.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(a) => Entry::Pvh(a.0),
        _ => Entry::Elf64(result.kernel_load.0),
    };

    let mut cl = Cmdline::new(CMDLINE_MAX).map_err(|e| BootError::Cmdline(e.to_string()))?;
    if !cmdline.is_empty() {
        cl.insert_str(cmdline)
            .map_err(|e| BootError::Cmdline(e.to_string()))?;
    }
    linux_loader::loader::load_cmdline(mem, GuestAddress(CMDLINE_ADDR), &cl)
        .map_err(|e| BootError::Cmdline(e.to_string()))?;

    let ramdisk = match ramdisk {
        None => None,
        Some(r) => {
            let bytes = r.bytes()?;
            let len = bytes.len() as u64;
            let addr = size.saturating_sub(len) & !0xfff;
            if len > size || addr < result.kernel_end.max(HIMEM_START) {
                return Err(BootError::RamdiskTooBig {
                    size: bytes.len(),
                    kernel_end: result.kernel_end,
                });
            }
            mem.write_slice(&bytes, GuestAddress(addr))
                .map_err(|e| mem_err("the ramdisk")(e.to_string()))?;
            Some((addr, len))
        }
    };

    // PVH start info, module list, memory map.
    let memmap = vec![
        hvm_memmap_table_entry {
            addr: 0,
            size: 0xa0000,
            type_: E820_RAM,
            reserved: 0,
        },
        hvm_memmap_table_entry {
            addr: 0xa0000,
            size: HIMEM_START - 0xa0000,
            type_: E820_RESERVED,
            reserved: 0,
        },
        hvm_memmap_table_entry {
            addr: HIMEM_START,
            size: size - HIMEM_START,
            type_: E820_RAM,
            reserved: 0,
        },
    ];
    let start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        flags: 0,
        nr_modules: u32::from(ramdisk.is_some()),
        modlist_paddr: if ramdisk.is_some() { MODLIST_ADDR } else { 0 },
        cmdline_paddr: CMDLINE_ADDR,
        rsdp_paddr: 0,
        memmap_paddr: MEMMAP_ADDR,
        memmap_entries: memmap.len() as u32,
        reserved: 0,
    };
    let mut params = BootParams::new(&start_info, GuestAddress(START_INFO_ADDR));
    params.set_sections(&memmap, GuestAddress(MEMMAP_ADDR));
    if let Some((addr, len)) = ramdisk {
        let module = hvm_modlist_entry {
            paddr: addr,
            size: len,
            cmdline_paddr: 0,
            reserved: 0,
        };
        params.set_modules(&[module], GuestAddress(MODLIST_ADDR));
    }
    PvhBootConfigurator::write_bootparams(&params, mem)
        .map_err(|e| mem_err("the PVH start info")(e.to_string()))?;

    // GDT and identity page tables.
    let gdt = match entry {
        Entry::Pvh(_) => GDT_PVH,
        Entry::Elf64(_) => GDT_64,
    };
    for (i, e) in gdt.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(GDT_ADDR + 8 * i as u64))
            .map_err(|e| mem_err("the GDT")(e.to_string()))?;
    }
    let pdpt = PML4_ADDR + 0x1000;
    let pd = PML4_ADDR + 0x2000;
    let w = |v: u64, a: u64| {
        mem.write_obj(v, GuestAddress(a))
            .map_err(|e| mem_err("page tables")(e.to_string()))
    };
    w(pdpt | 0x3, PML4_ADDR)?;
    for i in 0..4u64 {
        w((pd + i * 0x1000) | 0x3, pdpt + 8 * i)?;
    }
    for i in 0..2048u64 {
        w((i << 21) | 0x83, pd + 8 * i)?;
    }
    Ok(Loaded {
        entry,
        kernel_end: result.kernel_end,
        ramdisk,
    })
}

/// A `kvm_segment` from a GDT entry and its index.
fn segment(entry: u64, index: u16) -> kvm_segment {
    let base = ((entry >> 16) & 0xff_ffff) | (((entry >> 56) & 0xff) << 24);
    let limit = (entry & 0xffff) | (((entry >> 48) & 0xf) << 16);
    let g = ((entry >> 55) & 1) as u8;
    kvm_segment {
        base,
        limit: if g == 1 {
            ((limit << 12) | 0xfff) as u32
        } else {
            limit as u32
        },
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

const CR0_PE: u64 = 1;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Sets vCPU `index` of `count` up to enter the guest: CPUID (from KVM's
/// supported set, APIC id = index), FPU, segments, control registers and
/// the entry registers (`esi` = index, `edi` = count, `ebx` = start info).
pub fn setup_vcpu(
    vcpu: &VcpuFd,
    cpuid: &CpuId,
    entry: Entry,
    index: u32,
    count: u32,
) -> Result<(), kvm_ioctls::Error> {
    let mut cpuid = cpuid.clone();
    for e in cpuid.as_mut_slice() {
        if e.function == 1 {
            e.ebx = (e.ebx & 0x00ff_ffff) | (index << 24);
        }
        if e.function == 0xb || e.function == 0x1f {
            e.edx = index;
        }
    }
    vcpu.set_cpuid2(&cpuid)?;
    vcpu.set_fpu(&kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    })?;
    let mut sregs: kvm_sregs = vcpu.get_sregs()?;
    let gdt = match entry {
        Entry::Pvh(_) => GDT_PVH,
        Entry::Elf64(_) => GDT_64,
    };
    let code = segment(gdt[1], 1);
    let data = segment(gdt[2], 2);
    let mut tss = segment(gdt[3], 3);
    tss.limit = 0x67;
    tss.g = 0;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (8 * gdt.len() - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    let rip = match entry {
        Entry::Pvh(rip) => {
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
            rip
        }
        Entry::Elf64(rip) => {
            sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_PG;
            sregs.cr3 = PML4_ADDR;
            sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
            sregs.efer = EFER_LME | EFER_LMA;
            rip
        }
    };
    vcpu.set_sregs(&sregs)?;
    vcpu.set_regs(&kvm_regs {
        rip,
        rflags: 0x2,
        rbx: START_INFO_ADDR,
        rsi: u64::from(index),
        rdi: u64::from(count),
        ..Default::default()
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_decode_the_flat_descriptors() {
        let c = segment(GDT_64[1], 1);
        assert_eq!((c.selector, c.type_, c.l, c.db, c.g), (8, 0xb, 1, 0, 1));
        assert_eq!(c.limit, 0xffff_ffff);
        let c = segment(GDT_PVH[1], 1);
        assert_eq!((c.l, c.db, c.present, c.s), (0, 1, 1, 1));
        let d = segment(GDT_PVH[2], 2);
        assert_eq!((d.selector, d.type_, d.base), (16, 3, 0));
    }

    #[test]
    fn loads_a_pvh_image_with_cmdline_and_ramdisk() {
        let size = 16u64 << 20;
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size as usize)]).unwrap();
        let kernel = Image::from(gang_guests::HELLO);
        let ramdisk = Image::from(b"RAMDISK!".to_vec());
        let l = load(&mem, size, &kernel, Some(&ramdisk), "a=1 b").unwrap();
        assert!(matches!(l.entry, Entry::Pvh(a) if a >= HIMEM_START));
        let (addr, len) = l.ramdisk.unwrap();
        assert_eq!((len, addr % 4096), (8, 0));
        let si: hvm_start_info = mem.read_obj(GuestAddress(START_INFO_ADDR)).unwrap();
        assert_eq!(
            (si.magic, si.nr_modules, si.memmap_entries),
            (XEN_HVM_START_MAGIC, 1, 3)
        );
        let mut cl = [0u8; 6];
        mem.read_slice(&mut cl, GuestAddress(si.cmdline_paddr))
            .unwrap();
        assert_eq!(&cl, b"a=1 b\0");
        let m: hvm_modlist_entry = mem.read_obj(GuestAddress(si.modlist_paddr)).unwrap();
        assert_eq!((m.paddr, m.size), (addr, 8));
        let barrier = Image::from(gang_guests::BARRIER);
        let l = load(&mem, size, &barrier, None, "").unwrap();
        assert!(matches!(l.entry, Entry::Elf64(_)));
        assert!(load(&mem, size, &Image::from(vec![1u8, 2, 3]), None, "").is_err());
        let huge = Image::from(vec![0u8; 15 << 20]);
        assert!(matches!(
            load(&mem, size, &kernel, Some(&huge), ""),
            Err(BootError::RamdiskTooBig { .. })
        ));
    }
}
