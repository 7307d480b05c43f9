//! Loom model of the MMU's accessed/dirty update against the kernel's
//! changes to the same PTE (`pgtable::walk::mark_leaf`).
//!
//! A CPU's MMU walks to a leaf and sets its accessed bit, and for a write
//! its dirty bit, by compare-and-swap, deciding again whenever the entry
//! changed. At the same time the kernel takes the entry with an exchange
//! (zap: munmap, MADV_DONTNEED), or write-protects it with a CAS loop
//! (fork), or clears its accessed bit with a CAS loop (`page_referenced`).
//! In every interleaving loom explores:
//!
//! - a write the MMU lets through (the walk returned a dirty, writable
//!   leaf) is in the dirty bit the exchange returns: zap hands it to the
//!   page cache's writeback, so no write to a shared file page is lost;
//! - after a write-protect, a write walk either ran first (and its dirty
//!   bit survived the write-protect) or faults with a protection error;
//! - clearing the accessed bit never loses the dirty bit.
//!
//! The model runs the real `mark_leaf` and the real entry orderings. The
//! `broken_*` model gives it a compare-and-swap made of a load and a
//! store, and must fail.
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release -p oxmm --test loom_mmu_ad`
#![cfg(loom)]

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;

use oxmm::addr::Pfn;
use oxmm::arch::{EntrySlot, Pte};
use oxmm::pgtable::walk::{mark_leaf, WalkFault};

/// A leaf of a shared file page, writable, clean and not yet accessed.
fn leaf() -> Pte {
    Pte::new(Pfn::try_new(10).unwrap(), Pte::PRESENT | Pte::USER | Pte::WRITABLE)
}

/// The walk's leaf step on PTE `slot`: what the MMU does after reading it.
fn walk<S: EntrySlot>(slot: &S, write: bool) -> Result<Pte, WalkFault> {
    let raw = slot.load_pte();
    if !raw.is_present() {
        return Err(WalkFault::NotPresent);
    }
    mark_leaf(slot, raw, 1, write)
}

/// A slot whose compare-and-swap is a load and a store: not atomic.
struct TornSlot(AtomicU64);

impl EntrySlot for TornSlot {
    fn load_pte(&self) -> Pte {
        Pte(self.0.load(Ordering::Acquire))
    }
    fn cas_pte(&self, old: Pte, new: Pte) -> Result<Pte, Pte> {
        let cur = self.0.load(Ordering::Acquire);
        if cur != old.0 {
            return Err(Pte(cur));
        }
        self.0.store(new.0, Ordering::Release);
        Ok(old)
    }
    fn xchg_pte(&self, new: Pte) -> Pte {
        Pte(self.0.swap(new.0, Ordering::AcqRel))
    }
}

fn write_walk_against_zap<S: EntrySlot + Send + Sync + 'static>(slot: impl Fn() -> S + Sync + Send + 'static) {
    loom::model(move || {
        let pte = Arc::new(slot());
        let p = pte.clone();
        let mmu = thread::spawn(move || walk(&*p, true));
        let taken = pte.xchg_pte(Pte::NONE);
        let walked = mmu.join().unwrap();
        if let Ok(t) = walked {
            assert!(t.is_dirty() && t.is_writable());
            assert!(taken.is_dirty(), "the MMU let a write through but zap took {taken:?}: a lost dirty bit");
        }
        assert!(!pte.load_pte().is_present(), "the entry came back after zap took it");
    });
}

#[test]
fn a_write_walk_against_zap_never_loses_the_dirty_bit() {
    write_walk_against_zap(|| AtomicU64::new(leaf().0));
}

#[test]
#[should_panic(expected = "a lost dirty bit")]
fn broken_a_torn_compare_and_swap_loses_it() {
    write_walk_against_zap(|| TornSlot(AtomicU64::new(leaf().0)));
}

/// fork's write-protect (a CAS loop clearing WRITABLE) against a write
/// walk, and `page_referenced` (a CAS loop clearing ACCESSED) against both.
#[test]
fn write_protect_and_aging_against_a_write_walk() {
    loom::model(|| {
        let pte = Arc::new(AtomicU64::new(leaf().0));
        let (p1, p2) = (pte.clone(), pte.clone());
        let mmu = thread::spawn(move || walk(&*p1, true));
        let aging = thread::spawn(move || {
            let mut old = p2.load_pte();
            while old.is_accessed() {
                match p2.cas_pte(old, old.without(Pte::ACCESSED)) {
                    Ok(_) => break,
                    Err(now) => old = now,
                }
            }
        });
        let mut old = pte.load_pte();
        loop {
            match pte.cas_pte(old, old.without(Pte::WRITABLE)) {
                Ok(_) => break,
                Err(now) => old = now,
            }
        }
        let walked = mmu.join().unwrap();
        aging.join().unwrap();
        let end = pte.load_pte();
        assert!(!end.is_writable(), "write-protected: {end:?}");
        match walked {
            Ok(_) => assert!(end.is_dirty(), "the write's dirty bit was lost: {end:?}"),
            Err(e) => assert_eq!(e, WalkFault::Protection),
        }
    });
}
