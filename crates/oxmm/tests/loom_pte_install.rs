//! Loom model of the anonymous-fault PTE install race (`fault::anon`).
//!
//! Two CPUs fault the same empty PTE under the mmap read lock. Each takes
//! a frame, zeroes it (a plain write to frame memory: a loom `UnsafeCell`),
//! and tries `cas(pte, NONE, its pte)` through [`EntrySlot::cas_pte`]; the
//! loser frees its frame, which the allocator may hand out and overwrite at
//! once. A third CPU walks the page table (an MMU walk) with
//! [`EntrySlot::load_pte`] and reads the frame it finds. In every
//! interleaving loom explores:
//!
//! - exactly one frame ends mapped, and it is never freed; the other CPU's
//!   frame is freed exactly once;
//! - whoever reads the installed frame — the loser after its failed CAS, a
//!   CPU that finds the PTE already set, the walker — sees it zeroed, and
//!   loom finds no unordered access to frame memory: the Release half of
//!   the CAS publishes the zeroing, the Acquire of the load (or of the
//!   failed CAS) receives it.
//!
//! The `broken_*` models run the same protocol with Relaxed orderings and
//! must fail (loom reports the unordered access): they show the model can
//! tell.
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release -p oxmm --test loom_pte_install`
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use oxmm::addr::Pfn;
use oxmm::arch::{EntrySlot, Pte};

const GARBAGE: u64 = 0xdead_beef;
const LEAF: u64 = Pte::PRESENT | Pte::WRITABLE | Pte::USER | Pte::ACCESSED | Pte::DIRTY;

/// The same slot with every ordering Relaxed: what the protocol would be
/// without its Release/Acquire pairing.
struct RelaxedSlot(AtomicU64);

impl EntrySlot for RelaxedSlot {
    fn load_pte(&self) -> Pte {
        Pte(self.0.load(Ordering::Relaxed))
    }
    fn cas_pte(&self, old: Pte, new: Pte) -> Result<Pte, Pte> {
        self.0.compare_exchange(old.0, new.0, Ordering::Relaxed, Ordering::Relaxed).map(Pte).map_err(Pte)
    }
    fn xchg_pte(&self, new: Pte) -> Pte {
        Pte(self.0.swap(new.0, Ordering::Relaxed))
    }
}

/// Frame memory of the two candidate frames (pfn 10 for CPU 0, 11 for
/// CPU 1), the PTE, and the allocator's bookkeeping.
struct World<S> {
    pte: S,
    frames: [UnsafeCell<u64>; 2],
    allocated: [AtomicUsize; 2],
    freed: [AtomicUsize; 2],
}

// SAFETY: test-only; every access to `frames` is checked by loom, which
// fails the model on any access not ordered against a conflicting one.
unsafe impl<S: Sync> Sync for World<S> {}
// SAFETY: as above.
unsafe impl<S: Send> Send for World<S> {}

impl<S: EntrySlot> World<S> {
    fn new(pte: S) -> Self {
        World {
            pte,
            // Frames come from the allocator holding a previous life's data.
            frames: [UnsafeCell::new(GARBAGE), UnsafeCell::new(GARBAGE)],
            allocated: [AtomicUsize::new(0), AtomicUsize::new(0)],
            freed: [AtomicUsize::new(0), AtomicUsize::new(0)],
        }
    }

    fn pfn(me: usize) -> Pfn {
        Pfn::try_new(10 + me as u64).unwrap()
    }

    fn index(pfn: Pfn) -> usize {
        (pfn.as_u64() - 10) as usize
    }

    /// Read the first word of the frame `pte` maps (what the faulting
    /// CPU's retried access, or a walker, does next).
    fn read_mapped(&self, pte: Pte) -> u64 {
        assert!(pte.is_present(), "read through a non-present PTE");
        // SAFETY: loom checks this read against every write of the frame.
        self.frames[Self::index(pte.pfn())].with(|p| unsafe { *p })
    }

    /// `do_anonymous_page` for CPU `me`: returns the PTE now installed.
    fn fault(&self, me: usize) -> Pte {
        // The handler reads the PTE first: already mapped, nothing to do.
        let seen = self.pte.load_pte();
        if !seen.is_none() {
            return seen;
        }
        // Allocate and zero a frame (the page is not visible yet).
        self.allocated[me].fetch_add(1, Ordering::Relaxed);
        // SAFETY: the frame is this CPU's alone until published.
        self.frames[me].with_mut(|p| unsafe { *p = 0 });
        let new = Pte::new(Self::pfn(me), LEAF);
        match self.pte.cas_pte(Pte::NONE, new) {
            Ok(_) => new,
            Err(winner) => {
                assert!(winner.is_present());
                assert_ne!(winner.pfn(), Self::pfn(me), "lost to itself");
                // Free the frame; its next owner overwrites it at once.
                self.freed[me].fetch_add(1, Ordering::Relaxed);
                // SAFETY: the frame was never published, so nobody else
                // can reach it.
                self.frames[me].with_mut(|p| unsafe { *p = GARBAGE });
                winner
            }
        }
    }
}

fn model<S: EntrySlot + Send + Sync + 'static>(slot: fn() -> S) {
    loom::model(move || {
        let w = Arc::new(World::new(slot()));
        let cpu1 = {
            let w = w.clone();
            thread::spawn(move || {
                let pte = w.fault(1);
                assert_eq!(w.read_mapped(pte), 0, "CPU 1 saw an unzeroed page");
                pte
            })
        };
        let walker = {
            let w = w.clone();
            thread::spawn(move || {
                // CPU 2's MMU walks the table: either nothing yet, or the
                // installed page, zeroed.
                let pte = w.pte.load_pte();
                if !pte.is_none() {
                    assert_eq!(w.read_mapped(pte), 0, "the walker saw an unzeroed page");
                }
            })
        };
        let a = w.fault(0);
        assert_eq!(w.read_mapped(a), 0, "CPU 0 saw an unzeroed page");
        let b = cpu1.join().unwrap();
        walker.join().unwrap();
        assert_eq!(a, b, "both CPUs continue with the same page");
        let installed = World::<S>::index(a.pfn());
        let other = 1 - installed;
        let got = |c: &[AtomicUsize; 2], i: usize| c[i].load(Ordering::Relaxed);
        assert_eq!(got(&w.allocated, installed), 1);
        assert_eq!(got(&w.freed, installed), 0, "the mapped frame was freed");
        // The other CPU either found the PTE set (allocated nothing) or
        // lost the CAS and freed its frame exactly once.
        assert_eq!(got(&w.allocated, other), got(&w.freed, other));
        assert!(got(&w.freed, other) <= 1);
        assert_eq!(w.pte.load_pte(), a, "exactly one frame stays mapped");
    });
}

#[test]
fn two_cpus_install_one_page() {
    model(|| AtomicU64::new(0));
}

#[test]
#[should_panic(expected = "Causality violation")]
fn broken_relaxed_install_is_caught() {
    model(|| RelaxedSlot(AtomicU64::new(0)));
}
