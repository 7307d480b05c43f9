//! Loom model of the TLB shootdown protocol (`oxmm_host::tlb`).
//!
//! One CPU (the owner) runs two access windows over one page: in each it
//! looks the page up in its TLB, walks the PTE on a miss (filling the TLB if
//! the PTE is present), and "accesses the frame" through whatever
//! translation it got. Another CPU (the initiator) unmaps the page: clears
//! the PTE, requests the flush, issues the heavy fence, waits for
//! quiescence, and frees the frame. In every interleaving, no access
//! through a translation may happen after the frame was freed — the
//! guarantee `Platform::flush_tlb` gives — and loom checks that every
//! access to the frame happens-before its reuse. Both fences are modelled as SeqCst
//! fences (membarrier acts as a full fence on every running CPU).
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p oxmm-host --release --test loom_tlb_shootdown`
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;

use oxmm_host::barrier::heavy_fence;
use oxmm_host::tlb::{CpuTlb, OwnerState};

const VPN: u64 = 7;
const FRAME: u64 = 0x1000;

struct World {
    tlb: CpuTlb,
    pte: AtomicU64,
    freed: AtomicBool,
    /// The frame's contents: loom reports any access to it that is not
    /// ordered with the initiator's reuse (a data race).
    frame: UnsafeCell<u64>,
}

// SAFETY: test-only; loom checks every access to `frame` for races.
unsafe impl Sync for World {}

fn window(w: &World, local: &mut OwnerState) {
    w.tlb.enter(local);
    let data = match w.tlb.lookup(VPN) {
        Some(d) => Some(d),
        None => {
            // The hardware walk: Acquire load of the PTE.
            let pte = w.pte.load(Ordering::Acquire);
            if pte != 0 {
                w.tlb.fill(VPN, pte);
                Some(pte)
            } else {
                None
            }
        }
    };
    if let Some(d) = data {
        assert_eq!(d, FRAME);
        // The access through the translation.
        assert!(!w.freed.load(Ordering::Relaxed), "access through a translation after the frame was freed");
        // SAFETY: loom tracks this access and fails the model on a race.
        w.frame.with(|p| assert_ne!(unsafe { *p }, 0xdead, "read a reused frame"));
    }
    w.tlb.exit(local);
}

#[test]
fn no_access_after_free() {
    loom::model(|| {
        let w = Arc::new(World {
            tlb: CpuTlb::new(),
            pte: AtomicU64::new(FRAME),
            freed: AtomicBool::new(false),
            frame: UnsafeCell::new(1),
        });
        let w2 = w.clone();
        let owner = thread::spawn(move || {
            let mut local = OwnerState::default();
            window(&w2, &mut local);
            window(&w2, &mut local);
        });
        // Initiator: unmap, flush, free.
        w.pte.swap(0, Ordering::AcqRel);
        w.tlb.request_flush();
        heavy_fence();
        w.tlb.wait_quiescent();
        w.freed.store(true, Ordering::Relaxed);
        // The frame is reused by someone else.
        // SAFETY: loom tracks this access and fails the model on a race.
        w.frame.with_mut(|p| unsafe { *p = 0xdead });
        owner.join().unwrap();
    });
}
