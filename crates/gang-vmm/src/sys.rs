//! The one KVM call that needs `unsafe` outside the kick handler: giving KVM
//! the guest's RAM.
//!
//! Invariant: the mapping registered here is owned by the `Vm` and outlives
//! the KVM VM file descriptor (the `Vm` drops the VM fd before the memory).

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Registers every region of `mem` as a KVM memory slot.
pub fn register_memory(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), kvm_ioctls::Error> {
    for (slot, region) in mem.iter().enumerate() {
        let host = region.as_ptr() as u64;
        let region = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host,
        };
        // SAFETY: the host range is a live mapping of `memory_size` bytes
        // owned by the Vm, which keeps it until after the VM fd is closed
        // (module invariant); slots do not overlap (one per region).
        unsafe { vm.set_user_memory_region(region)? };
    }
    Ok(())
}
