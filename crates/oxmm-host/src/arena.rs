//! The memory arena: the hosted machine's physical memory.
//!
//! One anonymous host mapping, every page of which is touched at boot, so
//! that the host kernel's first-touch faults are paid before anything is
//! measured: zeroing and copying a frame then cost what they cost on
//! hardware, and a benchmark of oxmm's faults measures oxmm, not the host.
//! Transparent huge pages are requested for the arena (fewer host TLB
//! misses, as a kernel's direct map uses large pages).

use memmap2::{MmapMut, MmapOptions};

use crate::HostError;

/// Physical memory of the hosted machine.
pub struct Arena {
    map: MmapMut,
}

impl Arena {
    /// Map and pre-touch `bytes` (a multiple of 4 KiB).
    pub fn new(bytes: u64) -> Result<Arena, HostError> {
        let len = usize::try_from(bytes)
            .map_err(|_| HostError::Config(format!("memory size {bytes} does not fit this host")))?;
        let mut map = MmapOptions::new().len(len).map_anon().map_err(HostError::Arena)?;
        #[cfg(target_os = "linux")]
        {
            // Best effort: THP may be disabled on the host.
            let _ = map.advise(memmap2::Advice::HugePage);
        }
        // Pre-touch: one write per 4 KiB host page.
        for off in (0..len).step_by(4096) {
            map[off] = 0;
        }
        Ok(Arena { map })
    }

    /// Base address and length.
    pub fn raw(&mut self) -> (*mut u8, usize) {
        (self.map.as_mut_ptr(), self.map.len())
    }
}
