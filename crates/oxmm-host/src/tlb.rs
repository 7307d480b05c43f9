//! The software TLB and its shootdown protocol.
//!
//! Each CPU has a direct-mapped TLB of [`TLB_ENTRIES`] entries (tag: the
//! virtual page number; data: the host address of the frame, bit 0 =
//! writes allowed). Only the CPU's own thread reads or fills it. A CPU
//! accesses memory inside an *access window*: its sequence counter `seq` is
//! odd while it looks up, walks, sets accessed/dirty bits and touches frame
//! memory, and even otherwise. Fault handling happens outside any window
//! (it may sleep on the mmap lock, which a flushing CPU may hold).
//!
//! # Protocol
//!
//! ```text
//! CPU (owner)                            initiator (after changing PTEs)
//! seq.store(odd, Relaxed)                for each target: gen.fetch_add(1, Release)
//! light_fence()  ──── pairs with ────▶   heavy_fence()  (membarrier: every running
//! g = gen.load(Acquire)                                  thread executes a full fence)
//! if g != seen: invalidate all; seen = g for each target ≠ self:
//! lookup / walk+fill / access              s = seq.load(Acquire)
//! seq.store(even, Release)  ─ pairs ─▶     if s odd: spin until seq != s
//! ```
//!
//! Why this gives the guarantee (after the flush returns, no CPU uses an
//! invalidated translation and every A/D update through one has landed):
//! the heavy fence takes effect on each running target CPU at some point of
//! its program. If that point is after the CPU's `seq` store, the
//! initiator sees the odd value and waits for the window to end — the
//! window may have used (or even filled) a stale entry, but it is over, and
//! its A/D updates and frame accesses happen-before the initiator's return
//! (Release/Acquire on `seq`). If the point is before the `seq` store, the
//! window's later `gen` load sees the increment (which precedes the heavy
//! fence), so the window drops its whole TLB before any lookup, and its
//! walks see the PTE changes (Release/Acquire on `gen`). A stale entry
//! filled by a window that was waited for is dropped at the CPU's next
//! window entry, which sees the new `gen`. A CPU not running at all takes
//! no part in the fence and has no open window.
//!
//! The owner side costs two plain stores, a compiler fence and one load of
//! its own cache line per access window; the cost of a shootdown (one
//! `membarrier`) is paid by the initiator, once per batched flush. The loom
//! model is `tests/loom_tlb_shootdown.rs`, with both fences modelled as
//! SeqCst fences; under loom the owner also fences after closing a window,
//! the other point where the heavy fence's IPI may land.

use oxmm::sync::{AtomicU64, Ordering};

/// Entries per CPU TLB (direct-mapped by virtual page number).
#[cfg(not(loom))]
pub const TLB_ENTRIES: usize = 512;
/// Entries per CPU TLB (kept tiny under loom, which explores every store).
#[cfg(loom)]
pub const TLB_ENTRIES: usize = 2;
const MASK: u64 = TLB_ENTRIES as u64 - 1;
/// Tag of an empty entry (no valid VPN has all bits set).
const INVALID: u64 = u64::MAX;
/// Bit 0 of an entry's data: writes allowed without a walk.
pub const DATA_WRITABLE: u64 = 1;

/// The owner-side fence: orders the `seq` store before the `gen` load.
#[inline(always)]
pub fn light_fence() {
    #[cfg(not(loom))]
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
    #[cfg(loom)]
    oxmm::sync::fence(Ordering::SeqCst);
}

/// The state of one CPU shared with initiators.
pub struct CpuTlb {
    /// Odd while the CPU is inside an access window.
    seq: crossbeam_utils::CachePadded<AtomicU64>,
    /// Flush generation, bumped by initiators.
    gen: crossbeam_utils::CachePadded<AtomicU64>,
    tags: Box<[AtomicU64]>,
    data: Box<[AtomicU64]>,
}

impl Default for CpuTlb {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuTlb {
    /// An empty TLB.
    pub fn new() -> CpuTlb {
        CpuTlb {
            seq: crossbeam_utils::CachePadded::new(AtomicU64::new(0)),
            gen: crossbeam_utils::CachePadded::new(AtomicU64::new(0)),
            tags: (0..TLB_ENTRIES).map(|_| AtomicU64::new(INVALID)).collect(),
            data: (0..TLB_ENTRIES).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    // ---- owner side -------------------------------------------------------

    /// Open an access window. `local` is the owner's copy of its state.
    #[inline(always)]
    pub fn enter(&self, local: &mut OwnerState) {
        local.seq = local.seq.wrapping_add(1);
        // Relaxed: ordered before the `gen` load by `light_fence`, which
        // pairs with the initiator's heavy fence.
        self.seq.store(local.seq, Ordering::Relaxed);
        light_fence();
        // Acquire: pairs with the Release increment in `request_flush`; the
        // PTE changes made before it are visible to our walks.
        let g = self.gen.load(Ordering::Acquire);
        if g != local.seen_gen {
            local.seen_gen = g;
            local.pde = (0, 0);
            self.invalidate_all();
        }
    }

    /// Become the owner (a new CPU handle): continue the shared window
    /// counter, catch up with the flush generation and drop every entry.
    /// Called outside any window.
    pub fn take_ownership(&self, local: &mut OwnerState) {
        local.seq = self.seq.load(Ordering::Relaxed);
        local.seen_gen = self.gen.load(Ordering::Acquire);
        local.pde = (0, 0);
        self.invalidate_all();
    }

    /// Close the access window.
    #[inline(always)]
    pub fn exit(&self, local: &mut OwnerState) {
        local.seq = local.seq.wrapping_add(1);
        // Release: pairs with the Acquire loads in `wait_quiescent`; every
        // access and A/D update of the window happens-before the flush's
        // return.
        self.seq.store(local.seq, Ordering::Release);
        // membarrier's IPI may land between two windows; loom can only
        // place it where the owner has a fence, so the model gets one here.
        #[cfg(loom)]
        oxmm::sync::fence(Ordering::SeqCst);
    }

    /// Look up `vpn`; the entry's data if it hits.
    #[inline(always)]
    pub fn lookup(&self, vpn: u64) -> Option<u64> {
        let i = (vpn & MASK) as usize;
        // Relaxed: only the owner writes tags and data except for
        // `invalidate_all`, which the owner itself runs; see the module doc.
        if self.tags[i].load(Ordering::Relaxed) == vpn {
            Some(self.data[i].load(Ordering::Relaxed))
        } else {
            None
        }
    }

    /// Fill the entry for `vpn` (inside a window, after a walk).
    #[inline]
    pub fn fill(&self, vpn: u64, data: u64) {
        let i = (vpn & MASK) as usize;
        self.data[i].store(data, Ordering::Relaxed);
        self.tags[i].store(vpn, Ordering::Relaxed);
    }

    /// Drop every entry (owner only: at window entry after a flush, or on
    /// an address-space switch).
    pub fn invalidate_all(&self) {
        for t in self.tags.iter() {
            t.store(INVALID, Ordering::Relaxed);
        }
    }

    // ---- initiator side ---------------------------------------------------

    /// Ask the CPU to drop its TLB at its next window entry.
    #[inline]
    pub fn request_flush(&self) {
        // Release: pairs with the Acquire `gen` load in `enter`; publishes
        // the PTE changes made before the flush.
        self.gen.fetch_add(1, Ordering::Release);
    }

    /// After the heavy fence: wait until the window open at the fence (if
    /// any) has closed.
    pub fn wait_quiescent(&self) {
        // Acquire: pairs with the Release store in `exit`.
        let s = self.seq.load(Ordering::Acquire);
        if s & 1 == 0 {
            return;
        }
        let mut spins = 0u32;
        while self.seq.load(Ordering::Acquire) == s {
            spins += 1;
            if spins < 128 {
                oxmm::sync::spin_hint();
            } else {
                #[cfg(not(loom))]
                std::thread::yield_now();
                #[cfg(loom)]
                loom::thread::yield_now();
            }
        }
    }
}

/// The owner's private copy of its window counter and last seen flush
/// generation (kept out of the shared cache lines).
#[derive(Default, Debug)]
pub struct OwnerState {
    /// The value last stored to `seq`.
    pub seq: u64,
    /// The last flush generation acted on.
    pub seen_gen: u64,
    /// A one-entry paging-structure cache (x86's PDE cache): the 2 MiB
    /// region (+1; 0 is empty) and the PTE table mapping it, so that a TLB
    /// miss in the same region walks one level instead of four. Dropped
    /// with the TLB.
    pub pde: (u64, u64),
}
