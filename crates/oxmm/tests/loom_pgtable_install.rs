//! Loom model of the page-table-page install race (`pgtable::install`).
//!
//! Two CPUs fault under the mmap read lock and both find the same PMD entry
//! empty. Each allocates a table page and tries to install it by CAS. The
//! model runs the real `get_or_install` over a loom atomic and checks, in
//! every interleaving: exactly one page is installed, the loser's page is
//! freed (no leak, no double free), both CPUs continue with the installed
//! table, and the installer's zeroing of the new table (modelled as a
//! Relaxed store before the CAS) is visible to the other CPU through the
//! Acquire load of the entry.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p oxmm --release --test loom_pgtable_install`
#![cfg(loom)]

use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use oxmm::addr::Pfn;
use oxmm::pgtable::install::get_or_install;

/// Model of frame memory: the first word of each candidate table (pfn 10,
/// 11) — "zeroed" means it holds 0 after holding garbage.
struct World {
    entry: AtomicU64,
    table_word: [AtomicU64; 2],
    freed: [AtomicUsize; 2],
}

fn cpu(w: &World, me: usize) -> Pfn {
    let pfn = Pfn::try_new(10 + me as u64).unwrap();
    get_or_install(
        &w.entry,
        2,
        || {
            // Zero the fresh table (it held garbage from a previous life).
            w.table_word[me].store(0, Ordering::Relaxed);
            Some(pfn)
        },
        |lost| {
            assert_eq!(lost, pfn, "only one's own page is ever freed");
            w.freed[me].fetch_add(1, Ordering::Relaxed);
        },
    )
    .expect("install cannot fail here")
}

#[test]
fn two_cpus_install_one_table() {
    loom::model(|| {
        let w = Arc::new(World {
            entry: AtomicU64::new(0),
            table_word: [AtomicU64::new(0xdead), AtomicU64::new(0xdead)],
            freed: [AtomicUsize::new(0), AtomicUsize::new(0)],
        });
        let w2 = w.clone();
        let t = thread::spawn(move || {
            let got = cpu(&w2, 1);
            // The table we walk into must be zeroed as seen by us.
            let idx = (got.as_u64() - 10) as usize;
            assert_eq!(w2.table_word[idx].load(Ordering::Relaxed), 0, "saw an unzeroed table");
            got
        });
        let a = cpu(&w, 0);
        let idx = (a.as_u64() - 10) as usize;
        assert_eq!(w.table_word[idx].load(Ordering::Relaxed), 0, "saw an unzeroed table");
        let b = t.join().unwrap();
        assert_eq!(a, b, "both CPUs continue with the same table");
        let freed: usize = w.freed.iter().map(|f| f.load(Ordering::Relaxed)).sum();
        let installed = (a.as_u64() - 10) as usize;
        // The installed page is never freed; at most one page was freed
        // (the loser's, if both CPUs found the entry empty).
        assert_eq!(w.freed[installed].load(Ordering::Relaxed), 0);
        assert!(freed <= 1);
        let e = oxmm::arch::Pte(w.entry.load(Ordering::Relaxed));
        assert_eq!(e.pfn(), a);
    });
}
