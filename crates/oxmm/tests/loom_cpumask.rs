//! Loom model of an mm's CPU set against a flush (`mm::ActiveCpus`).
//!
//! A CPU switching to an mm joins its set and then walks its page tables,
//! caching what it finds (a TLB fill). Another CPU unmaps a page — an
//! exchange of its PTE (`EntrySlot::xchg_pte`, as zap does) — and then
//! reads the set to decide whom to flush. It is the store-buffering
//! pattern: in every interleaving loom explores, either the flusher sees
//! the joining CPU (and flushes it) or that CPU's walk sees the cleared
//! PTE; never a cached translation that no flush reaches. The model runs
//! the real `ActiveCpus` and the real entry orderings.
//!
//! The `broken_*` model joins and reads with Release/Acquire and no fences,
//! which the pattern needs to be SeqCst, and must fail.
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release -p oxmm --test loom_cpumask`
#![cfg(loom)]

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;

use oxmm::addr::Pfn;
use oxmm::arch::{EntrySlot, Pte};
use oxmm::mm::ActiveCpus;
use oxmm::platform::{CpuId, CpuMask};

/// The two operations the protocol needs from a CPU set.
trait CpuSet: Send + Sync + 'static {
    fn join(&self, cpu: CpuId);
    fn load(&self) -> CpuMask;
}

impl CpuSet for ActiveCpus {
    fn join(&self, cpu: CpuId) {
        ActiveCpus::join(self, cpu)
    }
    fn load(&self) -> CpuMask {
        ActiveCpus::load(self)
    }
}

/// The same set without its SeqCst operations and fences.
struct AcqRelSet(AtomicU64);

impl CpuSet for AcqRelSet {
    fn join(&self, cpu: CpuId) {
        self.0.fetch_or(1 << cpu.0, Ordering::Release);
    }
    fn load(&self) -> CpuMask {
        CpuMask(self.0.load(Ordering::Acquire))
    }
}

fn unmap_against_a_joining_cpu<S: CpuSet>(set: impl Fn() -> S + Sync + Send + 'static) {
    loom::model(move || {
        let mapped = Pte::new(Pfn::try_new(10).unwrap(), Pte::PRESENT | Pte::USER);
        let cpus = Arc::new(set());
        let pte = Arc::new(AtomicU64::new(mapped.0));
        let (c, p) = (cpus.clone(), pte.clone());
        // CPU 1 switches to the mm, then its MMU walks and fills its TLB.
        let cpu1 = thread::spawn(move || {
            c.join(CpuId(1));
            p.load_pte()
        });
        // CPU 0 unmaps the page, then flushes the CPUs in the set.
        let old = pte.xchg_pte(Pte::NONE);
        assert_eq!(old, mapped);
        let flushed = cpus.load().contains(CpuId(1));
        let cached = cpu1.join().unwrap();
        assert!(
            flushed || !cached.is_present(),
            "CPU 1 cached {cached:?}, unmapped since, and the flush did not reach it"
        );
    });
}

#[test]
fn a_flush_reaches_the_joining_cpu_or_its_walk_sees_the_unmap() {
    unmap_against_a_joining_cpu(ActiveCpus::new);
}

#[test]
#[should_panic(expected = "the flush did not reach it")]
fn broken_join_and_load_without_seqcst() {
    unmap_against_a_joining_cpu(|| AcqRelSet(AtomicU64::new(0)));
}
