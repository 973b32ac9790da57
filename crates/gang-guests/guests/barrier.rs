//! barrier: every vCPU spins on a shared-memory barrier, round after round;
//! vCPU 0 prints `round N` every `every=` rounds (default 200). Stops after
//! `rounds=` rounds (0 or absent: forever) and powers off; also powers off
//! when the host asks through the power port (checked by vCPU 0 each round).
#![no_std]
#![no_main]

mod rt;

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

static ARRIVED: AtomicU32 = AtomicU32::new(0);
static GENERATION: AtomicU32 = AtomicU32::new(0);
/// The round after which everyone stops (set by vCPU 0 two rounds ahead, so
/// every vCPU sees it after the same barrier).
static STOP_AT: AtomicU64 = AtomicU64::new(u64::MAX);

fn barrier(count: u32) {
    let gen = GENERATION.load(Ordering::Acquire);
    if ARRIVED.fetch_add(1, Ordering::AcqRel) + 1 == count {
        ARRIVED.store(0, Ordering::Relaxed);
        GENERATION.store(gen.wrapping_add(1), Ordering::Release);
    } else {
        while GENERATION.load(Ordering::Acquire) == gen {
            core::hint::spin_loop();
        }
    }
}

#[no_mangle]
extern "C" fn guest_main(index: u64, count: u64, start_info: u64) {
    let count = count.min(rt::MAX_VCPUS) as u32;
    let si = rt::start_info(start_info);
    let cmdline = rt::cmdline(si);
    let rounds = rt::arg_u64(cmdline, b"rounds").unwrap_or(0);
    let every = rt::arg_u64(cmdline, b"every").unwrap_or(200).max(1);
    if index == 0 {
        rt::print(b"barrier: vcpus ");
        rt::print_u64(count as u64);
        rt::print(b" rounds ");
        rt::print_u64(rounds);
        rt::print(b"\n");
    }
    let mut round: u64 = 0;
    loop {
        barrier(count);
        round += 1;
        if index == 0 {
            if round % every == 0 {
                rt::print(b"round ");
                rt::print_u64(round);
                rt::print(b"\n");
            }
            let stop = (rounds != 0 && round + 2 >= rounds) || rt::power_request() != 0;
            if stop && STOP_AT.load(Ordering::Relaxed) == u64::MAX {
                STOP_AT.store(round + 2, Ordering::Release);
            }
        }
        if round >= STOP_AT.load(Ordering::Acquire) {
            break;
        }
    }
    // Everyone stopped after the same barrier; vCPU 0 reports and powers off.
    if index == 0 {
        rt::print(b"barrier done: ");
        rt::print_u64(round);
        rt::print(b" rounds\n");
        rt::poweroff();
    }
    loop {
        rt::hlt();
    }
}
