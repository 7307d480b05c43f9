//! Scalable anonymous faults (seed 002) with and without prefault (seed
//! 003): several CPUs of one process fault the same and neighbouring pages
//! at once, with reads and writes interleaved, and prefault windows of one
//! CPU racing the faults of another. However the compare-and-swaps fall,
//! every page ends with exactly one frame holding the data written to it,
//! the RSS folded from the per-CPU counters is exact, the checker is clean
//! and nothing leaks after exit.
//!
//! Also: the fast path writes no shared cache line with per-CPU RSS
//! counters (only the zone lock, once per per-CPU refill, which grows to
//! 256 frames), and one per fault with the shared counter (a count, not a
//! timing); an unmap returns its frames to the zone in batches that grow
//! the same way.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};

use common::*;
use oxmm::addr::VirtAddr;
use oxmm::mm::Prot;
use oxmm::system::RssMode;
use oxmm_host::{Cpu, MachineConfig};

/// 4 GiB: 2 MiB-aligned and free in a fresh process.
const BASE: u64 = 1 << 32;
const TABLE_PAGES: u64 = 512;

fn val(t: u64, i: u64) -> u64 {
    (t + 1) << 32 | i
}

/// Run `f(cpu, t)` on every remote CPU at once (released by a barrier)
/// and wait for all of them.
fn on_all(remotes: &[Remote], f: impl Fn(&mut Cpu, u64) + Send + Sync + 'static) {
    let f = Arc::new(f);
    let barrier = Arc::new(Barrier::new(remotes.len()));
    std::thread::scope(|s| {
        for (t, r) in remotes.iter().enumerate() {
            let (f, barrier) = (f.clone(), barrier.clone());
            s.spawn(move || {
                r.run(move |cpu| {
                    barrier.wait();
                    f(cpu, t as u64)
                })
            });
        }
    });
}

/// Every page of `[p, p + n pages)` is mapped to its own frame (no two
/// pages share one, none is the zero page), writable; returns the frames.
#[track_caller]
fn assert_one_frame_per_page(rig: &Rig, p: VirtAddr, n: u64) {
    let zero = rig.machine.sys().zero_pfn();
    let mut frames = HashSet::new();
    for i in 0..n {
        let e = rig.pte(p + i * PAGE);
        assert!(e.is_present() && e.is_writable(), "page {i}: {e:?}");
        assert_ne!(e.pfn(), zero, "page {i} still maps the zero page");
        assert!(frames.insert(e.pfn()), "page {i} shares frame {:?}", e.pfn());
    }
}

/// `threads` remote CPUs fault one region, `rounds` times, with prefault
/// off or at `order`:
///
/// - *same pages*: every CPU walks every page sequentially, CPUs 2j and
///   2j+1 from the same starting point (so they race for every page); odd
///   CPUs first read their word of every page (so zero-page windows race
///   with write windows); then each CPU writes its
///   own word of each page and reads the others' (0 or their value);
/// - *neighbouring pages*: pages are dealt out in blocks of 4 (block b to
///   CPU b % threads); each CPU walks its blocks in order, reading every
///   third page before writing it, so its windows spill into the
///   neighbours' blocks while they fault them.
///
/// The region straddles a PTE-table boundary (so CPUs also race to install
/// the table, and windows are clipped at it).
#[track_caller]
fn race(threads: usize, prefault: Option<u8>) {
    race_with(threads, prefault, RssMode::PerCpu);
}

#[track_caller]
fn race_with(threads: usize, prefault: Option<u8>, mode: RssMode) {
    let cfg = MachineConfig {
        mem_bytes: 64 << 20,
        nodes: 1,
        cpus: threads + 1,
        movable_percent: 75,
        ..MachineConfig::default()
    };
    let mut rig = Rig::with_rss(cfg, mode);
    rig.machine.sys().set_prefault(prefault);
    let remotes: Vec<Remote> = (1..=threads).map(|i| Remote::new(&rig.machine, i, &rig.proc)).collect();
    let n = 384u64;
    let nt = threads as u64;
    let start = BASE + TABLE_PAGES * PAGE - 128 * PAGE;
    let windows_before = rig.stat("prefault_windows");
    for round in 0..3u64 {
        // Same pages.
        let p = rig.map_fixed(start, n * PAGE, Prot::RW);
        on_all(&remotes, move |cpu, t| {
            if t % 2 == 1 {
                for k in 0..n {
                    let i = (k + t * 17 + round) % n;
                    assert_eq!(cpu.read_u64(p + i * PAGE + t * 8).unwrap(), 0, "page {i}");
                }
            }
            for k in 0..n {
                // CPUs 2j and 2j+1 walk the same pages in step.
                let i = (k + (t / 2) * 2 * n / nt) % n;
                let page = p + i * PAGE;
                cpu.write_u64(page + t * 8, val(t, i)).unwrap();
                for o in 0..nt {
                    let v = cpu.read_u64(page + o * 8).unwrap();
                    assert!(v == 0 || v == val(o, i), "page {i} word {o}: {v:#x}");
                }
                assert_eq!(cpu.read_u64(page + t * 8).unwrap(), val(t, i), "own write lost on page {i}");
            }
        });
        assert_eq!(rig.rss_anon(), n, "RSS after fold, same pages, round {round}");
        assert_eq!(rig.machine.meminfo().anon, n);
        assert_one_frame_per_page(&rig, p, n);
        for i in 0..n {
            for t in 0..nt {
                assert_eq!(rig.cpu.read_u64(p + i * PAGE + t * 8).unwrap(), val(t, i), "page {i} word {t}");
            }
            assert_eq!(rig.cpu.sum(p + i * PAGE + nt * 8, PAGE - nt * 8).unwrap(), 0, "page {i} not zeroed");
        }
        rig.check();
        rig.cpu.munmap(p.as_u64(), n * PAGE).unwrap();
        assert_eq!(rig.machine.meminfo().anon, 0);
        assert_eq!(rig.rss_anon(), 0);

        // Neighbouring pages.
        let p = rig.map_fixed(start, n * PAGE, Prot::RW);
        on_all(&remotes, move |cpu, t| {
            let mut b = t;
            while b * 4 < n {
                for i in b * 4..b * 4 + 4 {
                    let a = p + i * PAGE + 64;
                    if i % 3 == round % 3 {
                        let v = cpu.read_u64(a).unwrap();
                        assert_eq!(v, 0, "page {i}: nobody else writes it");
                    }
                    cpu.write_u64(a, val(t, i)).unwrap();
                }
                b += nt;
            }
        });
        assert_eq!(rig.rss_anon(), n, "RSS after fold, neighbouring pages, round {round}");
        assert_eq!(rig.machine.meminfo().anon, n);
        assert_one_frame_per_page(&rig, p, n);
        for i in 0..n {
            let owner = (i / 4) % nt;
            assert_eq!(rig.cpu.read_u64(p + i * PAGE + 64).unwrap(), val(owner, i), "page {i}");
            assert_eq!(
                rig.cpu.sum(p + i * PAGE, PAGE).unwrap(),
                val(owner, i).to_le_bytes().iter().map(|&b| u64::from(b)).sum::<u64>()
            );
        }
        rig.check();
        if round < 2 {
            rig.cpu.munmap(p.as_u64(), n * PAGE).unwrap();
            assert_eq!(rig.machine.meminfo().anon, 0);
        }
        // The last round's pages are left for exit to free (the Rig checks
        // that nothing leaks).
    }
    let windows = rig.stat("prefault_windows") - windows_before;
    if prefault.is_some() {
        assert!(windows > 0, "prefault never predicted a run");
    } else {
        assert_eq!(windows, 0);
    }
    drop(remotes);
}

#[test]
fn two_cpus_without_prefault() {
    race(2, None);
}

#[test]
fn two_cpus_with_prefault() {
    race(2, Some(3));
}

#[test]
fn four_cpus_without_prefault() {
    race(4, None);
}

#[test]
fn four_cpus_with_prefault() {
    race(4, Some(3));
}

#[test]
fn four_cpus_with_prefault_and_a_shared_rss_counter() {
    race_with(4, Some(3), RssMode::Shared);
}

/// Many CPUs each run sequentially through their own quarter of one
/// region while reading the pages just past it (their neighbour's start):
/// zero-page windows and write windows meet at every quarter boundary.
#[test]
fn windows_meet_at_the_borders() {
    let threads = 4u64;
    let mut rig = Rig::with(MachineConfig {
        mem_bytes: 64 << 20,
        nodes: 1,
        cpus: 5,
        movable_percent: 75,
        ..MachineConfig::default()
    });
    rig.machine.sys().set_prefault(Some(3));
    let remotes: Vec<Remote> = (1..=threads as usize).map(|i| Remote::new(&rig.machine, i, &rig.proc)).collect();
    let q = 100u64;
    let n = q * threads;
    for _round in 0..4 {
        let p = rig.map_fixed(BASE, n * PAGE, Prot::RW);
        on_all(&remotes, move |cpu, t| {
            for k in 0..q {
                let i = t * q + k;
                cpu.write_u64(p + i * PAGE, val(t, i)).unwrap();
                // Peek ahead into the next quarter.
                let j = (i + 5) % n;
                let v = cpu.read_u64(p + j * PAGE).unwrap();
                assert!(v == 0 || v == val(j / q, j), "page {j}: {v:#x}");
            }
        });
        assert_eq!(rig.rss_anon(), n);
        assert_one_frame_per_page(&rig, p, n);
        for i in 0..n {
            assert_eq!(rig.cpu.read_u64(p + i * PAGE).unwrap(), val(i / q, i));
        }
        rig.check();
        rig.cpu.munmap(p.as_u64(), n * PAGE).unwrap();
        assert_eq!(rig.machine.meminfo().anon, 0);
    }
}

mod shared_writes {
    use super::*;

    struct Run {
        faults: u64,
        pages: u64,
        counted: u64,
        all: u64,
        zone_locks: u64,
    }

    /// Warm up (the tables and a first page of each 2 MiB), then write one
    /// page after another through `tables` PTE tables and count.
    fn run(mode: RssMode, prefault: Option<u8>, tables: u64) -> Run {
        let mut rig = Rig::with_rss(
            MachineConfig { mem_bytes: 64 << 20, nodes: 1, cpus: 4, movable_percent: 75, ..MachineConfig::default() },
            mode,
        );
        rig.machine.sys().set_prefault(prefault);
        let p = rig.map_fixed(BASE, tables * TABLE_PAGES * PAGE, Prot::RW);
        for t in 0..tables {
            rig.cpu.write_u8(p + t * TABLE_PAGES * PAGE, 1).unwrap();
        }
        let (f0, c0, a0, z0) = (
            rig.stat("pgfault"),
            rig.stat("shared_cacheline_writes"),
            rig.machine.sys().shared_writes(),
            rig.stat("zone_lock_batches"),
        );
        let mut pages = 0;
        for t in 0..tables {
            for i in 1..TABLE_PAGES {
                rig.cpu.write_u8(p + (t * TABLE_PAGES + i) * PAGE, 2).unwrap();
                pages += 1;
            }
        }
        let r = Run {
            faults: (rig.stat("pgfault") - f0) as u64,
            pages,
            counted: (rig.stat("shared_cacheline_writes") - c0) as u64,
            all: rig.machine.sys().shared_writes() - a0,
            zone_locks: (rig.stat("zone_lock_batches") - z0) as u64,
        };
        assert_eq!(rig.rss_anon(), tables * TABLE_PAGES);
        r
    }

    /// Zone-lock batches a CPU that only allocates may take for `pages`
    /// frames: refills grow 64, 128, 256 and then bring `REFILL_MAX` (256)
    /// at a time, so three ramp-up refills and then one per 256.
    fn refill_bound(pages: u64) -> u64 {
        use oxmm::phys::pcp::REFILL_MAX;
        pages.div_ceil(REFILL_MAX as u64) + 3
    }

    /// Per-CPU RSS, prefault off: no counted shared write at all, and the
    /// zone lock once per scaled refill (at most 11 for these 2,044 pages,
    /// where fixed 64-frame refills took 32).
    #[test]
    fn per_cpu_rss_writes_no_shared_line() {
        let r = run(RssMode::PerCpu, None, 4);
        assert_eq!(r.faults, r.pages);
        assert_eq!(r.counted, 0, "shared_cacheline_writes on the fast path");
        assert_eq!(r.all, r.zone_locks);
        assert!(r.all <= refill_bound(r.pages), "{} shared writes for {} faults", r.all, r.faults);
    }

    /// The same with prefault on: fewer faults, still no shared write but
    /// the zone lock per batch.
    #[test]
    fn per_cpu_rss_with_prefault() {
        let r = run(RssMode::PerCpu, Some(3), 4);
        assert!(r.faults * 8 < r.pages + 64, "{} faults for {} pages", r.faults, r.pages);
        assert_eq!(r.counted, 0);
        assert!(r.all <= refill_bound(r.pages), "{} shared writes for {} pages", r.all, r.pages);
    }

    /// Unmapping a large region frees its frames into the CPU's cache,
    /// which drains to the zone as many as were freed in a row (up to
    /// `DRAIN_MAX`): one zone-lock batch per 448 frames where fixed
    /// 64-frame drains took 7 times as many, and every frame back in the
    /// allocator.
    #[test]
    fn unmap_drains_in_scaled_batches() {
        use oxmm::phys::pcp::DRAIN_MAX;
        let mut rig = Rig::with_rss(
            MachineConfig { mem_bytes: 64 << 20, nodes: 1, cpus: 4, movable_percent: 75, ..MachineConfig::default() },
            RssMode::PerCpu,
        );
        let pages = 8 * TABLE_PAGES;
        let free0 = rig.machine.meminfo().free;
        let p = rig.map_fixed(BASE, pages * PAGE, Prot::RW);
        for i in 0..pages {
            rig.cpu.write_u8(p + i * PAGE, 1).unwrap();
        }
        assert_eq!(rig.rss_anon(), pages);
        let z0 = rig.stat("zone_lock_batches") as u64;
        rig.cpu.munmap(p.as_u64(), pages * PAGE).unwrap();
        let drains = rig.stat("zone_lock_batches") as u64 - z0;
        // The frames and the 8 page tables are freed, on top of what the
        // cache held from the last refill (fewer than DRAIN_MAX);
        // everything above the cache's high mark reaches the zone. Fixed
        // 64-frame drains took 62 batches here.
        let bound = (pages + 8 + DRAIN_MAX as u64).div_ceil(DRAIN_MAX as u64);
        assert!(drains >= 1 && drains <= bound, "{drains} zone-lock batches freeing {pages} pages (bound {bound})");
        assert_eq!(rig.machine.meminfo().anon, 0);
        rig.machine.sys().phys.drain_all();
        assert_eq!(rig.machine.meminfo().free, free0, "every frame back");
        rig.check();
    }

    /// The shared counter: one shared write per fault (a window counts
    /// once: one RSS update per fault).
    #[test]
    fn shared_rss_writes_one_line_per_fault() {
        let r = run(RssMode::Shared, None, 2);
        assert_eq!(r.faults, r.pages);
        assert_eq!(r.counted, r.faults);
        assert_eq!(r.all, r.counted + r.zone_locks);
        let r = run(RssMode::Shared, Some(3), 2);
        assert_eq!(r.counted, r.faults);
    }
}
