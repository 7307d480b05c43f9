//! Loom model of a file page's install against MADV_DONTNEED
//! (`fault::file::install` against `mm::zap`), both under the mmap read
//! lock.
//!
//! A read fault maps a page-cache page: it takes a reference and a
//! mapcount, adds the page's reverse-map entry (under the page's rmap
//! lock), and only then installs the PTE with `cas(NONE, pte)`; a CPU that
//! loses the CAS removes the entry and gives the count and reference back.
//! Zap exchanges a present PTE away and then removes that PTE's entry,
//! drops the mapcount and puts the reference. Two CPUs fault the same page
//! while a third zaps. In every interleaving loom explores, the end state
//! agrees: the PTEs mapping the page, its mapcount, its reverse-map entries
//! and its references (one for the cache, one per mapping) all match, so a
//! zap never misses an entry and never leaves one. The entry goes in before
//! the PTE for exactly this: zap can only see a PTE whose entry is there.
//!
//! The model is the protocol's steps over loom atomics (the real reverse map
//! keeps its chains in frame memory, which loom cannot see; its lock is a
//! loom `Mutex` here), with the real entry orderings (`EntrySlot`). The
//! `broken_*` model adds the entry after the CAS and must fail.
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release -p oxmm --test loom_file_install`
#![cfg(loom)]

use loom::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

use oxmm::addr::Pfn;
use oxmm::arch::{EntrySlot, Pte};

struct World {
    pte: AtomicU64,
    refcount: AtomicU32,
    mapcount: AtomicI32,
    /// The page's reverse-map entries for this PTE (0 or 1 when right),
    /// under its rmap lock.
    rmap: Mutex<i32>,
}

fn leaf() -> Pte {
    Pte::new(Pfn::try_new(10).unwrap(), Pte::PRESENT | Pte::USER)
}

/// `install`, with the entry added before the CAS (`entry_first`) or after.
fn install(w: &World, entry_first: bool) {
    w.refcount.fetch_add(1, Ordering::Relaxed);
    w.mapcount.fetch_add(1, Ordering::AcqRel);
    if entry_first {
        *w.rmap.lock().unwrap() += 1;
    }
    if w.pte.cas_pte(Pte::NONE, leaf()).is_ok() {
        if !entry_first {
            *w.rmap.lock().unwrap() += 1;
        }
    } else {
        if entry_first {
            *w.rmap.lock().unwrap() -= 1;
        }
        w.mapcount.fetch_sub(1, Ordering::AcqRel);
        w.refcount.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Zap of the one PTE: exchange it away, then remove what it mapped (a
/// removal of an entry that is not there changes nothing, as in the chains).
fn zap(w: &World) {
    let old = w.pte.xchg_pte(Pte::NONE);
    if old.is_present() {
        {
            let mut e = w.rmap.lock().unwrap();
            if *e > 0 {
                *e -= 1;
            }
        }
        w.mapcount.fetch_sub(1, Ordering::AcqRel);
        w.refcount.fetch_sub(1, Ordering::AcqRel);
    }
}

fn install_against_zap(entry_first: bool) {
    loom::model(move || {
        // The page cache holds one reference.
        let w = Arc::new(World {
            pte: AtomicU64::new(0),
            refcount: AtomicU32::new(1),
            mapcount: AtomicI32::new(0),
            rmap: Mutex::new(0),
        });
        let faults: Vec<_> = (0..2)
            .map(|_| {
                let w = w.clone();
                thread::spawn(move || install(&w, entry_first))
            })
            .collect();
        zap(&w);
        for f in faults {
            f.join().unwrap();
        }
        let mapped = i32::from(w.pte.load_pte().is_present());
        let entries = *w.rmap.lock().unwrap();
        let (mc, rc) = (w.mapcount.load(Ordering::Relaxed), w.refcount.load(Ordering::Relaxed));
        assert_eq!(entries, mapped, "reverse-map entries {entries} for {mapped} PTEs");
        assert_eq!(mc, mapped, "mapcount {mc} for {mapped} PTEs");
        assert_eq!(rc as i32, 1 + mapped, "references {rc}: the cache's and one per mapping");
    });
}

#[test]
fn a_zap_never_misses_or_leaves_a_reverse_map_entry() {
    install_against_zap(true);
}

#[test]
#[should_panic(expected = "reverse-map entries")]
fn broken_entry_after_the_cas() {
    install_against_zap(false);
}
