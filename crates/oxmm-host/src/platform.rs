//! [`oxmm::platform::Platform`] for the hosted machine.

use std::sync::Arc;
use std::time::Instant;

use oxmm::platform::{FlushRequest, Platform};

use crate::barrier::heavy_fence;
use crate::tlb::CpuTlb;

/// The host side of the seam: the arena as the direct map, the software
/// TLBs as the CPUs to shoot down, `membarrier` as the IPI.
pub struct HostPlatform {
    base: *mut u8,
    frames: u64,
    /// One TLB per CPU.
    pub tlbs: Vec<Arc<CpuTlb>>,
    start: Instant,
    // Keeps the arena mapped as long as the platform lives.
    _arena: crate::arena::Arena,
}

// SAFETY:
// - `base` points into `_arena`, owned by this struct and alive as long as
//   it; the pointer itself is only handed to the core, which accesses frame
//   memory atomically or through frames it owns.
unsafe impl Send for HostPlatform {}
// SAFETY: as for `Send`: no interior state is mutated through `&self`
// except atomics (the TLBs).
unsafe impl Sync for HostPlatform {}

impl HostPlatform {
    /// A platform over `arena` with `cpus` CPUs.
    pub fn new(mut arena: crate::arena::Arena, cpus: usize) -> HostPlatform {
        let (base, len) = arena.raw();
        HostPlatform {
            base,
            frames: (len / 4096) as u64,
            tlbs: (0..cpus).map(|_| Arc::new(CpuTlb::new())).collect(),
            start: Instant::now(),
            _arena: arena,
        }
    }
}

// SAFETY:
// - `direct_map` returns the arena: `frames * 4096` bytes, mapped, writable
//   and used for nothing else while the platform lives;
// - `flush_tlb` implements the protocol of `crate::tlb`, which guarantees
//   that when it returns no CPU in the mask uses an invalidated translation
//   and all A/D updates through one have landed.
unsafe impl Platform for HostPlatform {
    fn direct_map(&self) -> (*mut u8, u64) {
        (self.base, self.frames)
    }

    fn cpus(&self) -> usize {
        self.tlbs.len()
    }

    fn flush_tlb(&self, req: &FlushRequest) {
        let mut remote = false;
        for cpu in req.cpus.iter() {
            if let Some(t) = self.tlbs.get(cpu.index()) {
                t.request_flush();
                remote |= Some(cpu) != req.initiator;
            }
        }
        if !remote {
            // Only the initiator runs this mm: it is not inside a window
            // (it is flushing), and drops its entries at its next one.
            return;
        }
        heavy_fence();
        for cpu in req.cpus.iter() {
            if Some(cpu) != req.initiator {
                if let Some(t) = self.tlbs.get(cpu.index()) {
                    t.wait_quiescent();
                }
            }
        }
    }

    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}
