//! Anticipatory prefault (seed 003), end to end through the software MMU.
//!
//! Each CPU predicts its next anonymous fault at the end of the window its
//! last fault mapped. A hit grows the window — the faulting page plus 1, 2,
//! 4, 8 … extra pages up to 2^max_order — and a miss resets it to the
//! faulting page alone. A window is clipped to the VMA and to the 2 MiB
//! covered by the faulting address's PTE table, is off under
//! `MADV_RANDOM`, and is shortened (never failed) when memory runs out
//! after its first page. Read faults map the zero page for the window.
//! Extra pages go in without the accessed bit and with `Pte::SW_PREFAULT`,
//! so unmap counts the ones never touched (`prefault_unused`).
//!
//! The tests map at fixed, 2 MiB-aligned addresses so that where the PTE
//! tables begin and end is known.

mod common;

use common::*;
use oxmm::addr::VirtAddr;
use oxmm::arch::Pte;
use oxmm::fault::FaultError;
use oxmm::mm::{Advice, MapFlags, Prot};
use oxmm_host::MachineConfig;

/// 4 GiB: 2 MiB-aligned and free in a fresh process.
const BASE: u64 = 1 << 32;
/// Pages covered by one PTE table.
const TABLE_PAGES: u64 = 512;

fn prefault_rig(order: u8) -> Rig {
    let rig = Rig::new();
    rig.machine.sys().set_prefault(Some(order));
    rig
}

/// The prefault-related vmstat counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Pf {
    faults: i64,
    windows: i64,
    extra: i64,
    unused: i64,
    zero_maps: i64,
}

impl Pf {
    fn of(rig: &Rig) -> Pf {
        Pf {
            faults: rig.stat("pgfault"),
            windows: rig.stat("prefault_windows"),
            extra: rig.stat("prefault_pages"),
            unused: rig.stat("prefault_unused"),
            zero_maps: rig.stat("zero_page_map"),
        }
    }

    fn since(rig: &Rig, before: Pf) -> Pf {
        let now = Pf::of(rig);
        Pf {
            faults: now.faults - before.faults,
            windows: now.windows - before.windows,
            extra: now.extra - before.extra,
            unused: now.unused - before.unused,
            zero_maps: now.zero_maps - before.zero_maps,
        }
    }
}

/// The pages the `k`-th fault of an unbroken sequential run maps (k = 0 is
/// the first, a miss): 1, then 1 + 2^min(k-1, max_order).
fn window(k: u64, max_order: u8) -> u64 {
    if k == 0 {
        1
    } else {
        1 + (1 << (k - 1).min(u64::from(max_order)))
    }
}

/// mincore's answer when exactly `[0, mapped)` of `pages` is resident.
fn prefix(mapped: u64, pages: u64) -> Vec<u8> {
    (0..pages).map(|i| u8::from(i < mapped)).collect()
}

/// Touch `pages` pages from `p` one after another (write or read), and
/// after every touch check the fault count, the prefault counters and
/// mincore against the window sequence for `max_order`; right after each
/// fault, check the PTE bits of the window it mapped. Returns the number
/// of pages mapped.
#[track_caller]
fn sequential_run(rig: &mut Rig, p: VirtAddr, pages: u64, span: u64, max_order: u8, write: bool) -> u64 {
    let before = Pf::of(rig);
    let zero = rig.machine.sys().zero_pfn();
    let (mut end, mut faults) = (0u64, 0u64);
    for i in 0..pages {
        let a = p + i * PAGE;
        if write {
            rig.cpu.write_u8(a, i as u8 | 1).unwrap();
        } else {
            assert_eq!(rig.cpu.read_u8(a).unwrap(), 0);
        }
        let faulted = i == end;
        if faulted {
            end += window(faults, max_order);
            faults += 1;
            // The faulting page: accessed, no prefault mark. The rest of
            // the window: prefault mark, not accessed (not touched yet).
            let first = rig.pte(a);
            assert!(first.is_present() && first.is_accessed(), "page {i}: {first:?}");
            assert_eq!(first.0 & Pte::SW_PREFAULT, 0, "page {i}: the faulting page is no prefault");
            for j in i + 1..end {
                let e = rig.pte(p + j * PAGE);
                assert!(e.is_present(), "page {j} of the window at {i} not mapped");
                assert!(!e.is_accessed(), "page {j}: prefaulted page mapped accessed: {e:?}");
                assert_ne!(e.0 & Pte::SW_PREFAULT, 0, "page {j}: prefaulted page without SW_PREFAULT");
                assert_eq!(e.is_writable(), write, "page {j}: {e:?}");
                assert_eq!(e.pfn() == zero, !write, "page {j}: {e:?}");
            }
        }
        let d = Pf::since(rig, before);
        assert_eq!(d.faults as u64, faults, "faults after touching page {i}");
        assert_eq!(d.windows as u64, faults - 1, "windows after touching page {i}");
        assert_eq!(d.extra as u64, end - faults, "prefaulted pages after touching page {i}");
        assert_eq!(d.zero_maps as u64, if write { 0 } else { faults }, "zero-page faults after page {i}");
        assert_eq!(rig.resident(p, span), prefix(end, span), "resident after touching page {i}");
        if !faulted {
            // A touched prefaulted page gets its accessed bit from the MMU.
            let e = rig.pte(a);
            assert!(e.is_accessed() && e.0 & Pte::SW_PREFAULT != 0, "page {i}: {e:?}");
        }
    }
    end
}

mod growth {
    use super::*;

    /// 1, 2, 3, 5, 9, 9, 9, 9 pages: faults at pages 0, 1, 3, 6, 11, 20,
    /// 29, 38, and 47 pages mapped by 8 faults.
    #[test]
    fn sequential_writes_map_1_2_3_5_9_pages() {
        let mut rig = prefault_rig(3);
        let p = rig.map_fixed(BASE, 64 * PAGE, Prot::RW);
        assert_eq!(sequential_run(&mut rig, p, 47, 64, 3, true), 47);
        assert_eq!(rig.rss_anon(), 47);
        assert_eq!(rig.machine.meminfo().anon, 47);
        for i in 0..47 {
            assert_eq!(rig.cpu.read_u8(p + i * PAGE).unwrap(), i as u8 | 1, "page {i}");
            assert_eq!(rig.cpu.sum(p + i * PAGE, PAGE).unwrap(), u64::from(i as u8 | 1), "page {i} not zeroed");
        }
    }

    /// Seed 003's claim: a long sequential run takes one fault per 9 pages
    /// (one per table of 512 pages more, where the window is clipped).
    #[test]
    fn a_long_run_takes_a_ninth_of_the_faults() {
        let mut rig = prefault_rig(3);
        let pages = 4 * TABLE_PAGES;
        let p = rig.map_fixed(BASE, pages * PAGE, Prot::RW);
        let before = Pf::of(&rig);
        for i in 0..pages {
            rig.cpu.write_u8(p + i * PAGE, 1).unwrap();
        }
        let d = Pf::since(&rig, before);
        // 1 + 2 + 3 + 5 = 11 pages in 4 faults, then 9 per fault; each
        // table boundary clips one window and costs one fault more.
        let ideal = 4 + (pages - 11).div_ceil(9) as i64;
        assert!(d.faults >= ideal && d.faults <= ideal + 4, "{d:?}, ideal {ideal}");
        assert_eq!(d.extra, pages as i64 - d.faults);
        assert_eq!(rig.rss_anon(), pages);
    }

    /// The maximum order caps the window: 2^max_order extra pages.
    #[test]
    fn max_order_caps_the_window() {
        for order in [0u8, 1, 2, 4] {
            let mut rig = prefault_rig(order);
            let p = rig.map_fixed(BASE, 128 * PAGE, Prot::RW);
            let mapped = sequential_run(&mut rig, p, 100, 128, order, true);
            assert_eq!(rig.rss_anon(), mapped, "order {order}");
        }
    }

    /// Read faults map the zero page for the whole window: resident, but
    /// no RSS and no frame; writing them later replaces the zero page.
    #[test]
    fn read_windows_map_the_zero_page() {
        let mut rig = prefault_rig(3);
        let p = rig.map_fixed(BASE, 64 * PAGE, Prot::RW);
        sequential_run(&mut rig, p, 47, 64, 3, false);
        assert_eq!(rig.rss_anon(), 0);
        assert_eq!(rig.machine.meminfo().anon, 0);
        assert_eq!(rig.stat("anon_fault_alloc"), 0, "read faults allocated pages");
        rig.check();
        for i in 0..47 {
            rig.cpu.write_u8(p + i * PAGE, 7).unwrap();
        }
        assert_eq!(rig.rss_anon(), 47);
        assert_eq!(rig.cpu.sum(p, 47 * PAGE).unwrap(), 7 * 47);
    }

    /// A miss resets the window to one page; the run then grows again.
    #[test]
    fn a_miss_resets_the_window() {
        let mut rig = prefault_rig(3);
        let p = rig.map_fixed(BASE, 128 * PAGE, Prot::RW);
        sequential_run(&mut rig, p, 29, 128, 3, true);
        // Jump ahead: a miss.
        let q = p + 64 * PAGE;
        sequential_run(&mut rig, q, 29, 64, 3, true);
        assert_eq!(rig.resident(p, 64), prefix(29, 64));
        assert_eq!(rig.rss_anon(), 58);
    }

    /// The predictor belongs to a CPU: another CPU faulting at this CPU's
    /// predicted address misses (one page), and does not disturb it.
    #[test]
    fn the_prediction_is_per_cpu() {
        let mut rig = prefault_rig(3);
        let p = rig.map_fixed(BASE, 64 * PAGE, Prot::RW);
        for i in 0..3 {
            rig.cpu.write_u8(p + i * PAGE, 1).unwrap();
        }
        // CPU 0 mapped [0, 3) and predicts 3.
        let remote = Remote::new(&rig.machine, 1, &rig.proc);
        let before = Pf::of(&rig);
        remote.run(move |cpu| cpu.write_u8(p + 3 * PAGE, 2).unwrap());
        let d = Pf::since(&rig, before);
        assert_eq!((d.faults, d.windows), (1, 0), "another CPU's fault is a miss for it");
        assert_eq!(rig.resident(p, 8), vec![1, 1, 1, 1, 0, 0, 0, 0]);
        // CPU 0 still predicts 3, but page 3 is mapped: its next fault is
        // at 4, a miss.
        rig.cpu.write_u8(p + 4 * PAGE, 1).unwrap();
        let d = Pf::since(&rig, before);
        assert_eq!((d.faults, d.windows), (2, 0));
        drop(remote);
    }

    /// A write window over PTEs another fault already filled (here with
    /// the zero page) skips them: the frames it allocated for them are
    /// freed, nothing is counted twice, and the checker finds no leak.
    #[test]
    fn a_window_skips_ptes_already_mapped() {
        let mut rig = prefault_rig(3);
        let p = rig.map_fixed(BASE, 16 * PAGE, Prot::RW);
        // Page 2 maps the zero page (a miss: window of one).
        assert_eq!(rig.cpu.read_u8(p + 2 * PAGE).unwrap(), 0);
        let before = Pf::of(&rig);
        rig.cpu.write_u8(p, 1).unwrap(); // miss: [0]
        rig.cpu.write_u8(p + PAGE, 1).unwrap(); // hit: [1, 2], 2 already mapped
        let d = Pf::since(&rig, before);
        assert_eq!((d.faults, d.windows, d.extra), (2, 1, 0));
        assert_eq!(rig.rss_anon(), 2);
        assert_eq!(rig.pte(p + 2 * PAGE).pfn(), rig.machine.sys().zero_pfn(), "the zero page stays");
        rig.check();
        // Page 3 is the prediction: a hit, [3, 4, 5].
        rig.cpu.write_u8(p + 3 * PAGE, 1).unwrap();
        assert_eq!(rig.resident(p, 8), vec![1, 1, 1, 1, 1, 1, 0, 0]);
        assert_eq!(rig.rss_anon(), 5);
        rig.cpu.write_u8(p + 2 * PAGE, 1).unwrap();
        assert_eq!(rig.rss_anon(), 6);
        assert_eq!(rig.cpu.sum(p, 16 * PAGE).unwrap(), 4);
    }
}

mod clipping {
    use super::*;

    /// A window never maps past the end of its VMA: not into the next
    /// VMA (a read-only one, which a write window must not touch), and not
    /// into an unmapped hole.
    #[test]
    fn window_stops_at_the_end_of_the_vma() {
        let mut rig = prefault_rig(3);
        // [16 RW pages][8 read-only pages][hole] ... [16 RW pages][hole]
        let p = rig.map_fixed(BASE, 16 * PAGE, Prot::RW);
        let guard = rig.map_fixed(BASE + 16 * PAGE, 8 * PAGE, Prot::READ);
        let q = rig.map_fixed(BASE + 64 * PAGE, 16 * PAGE, Prot::RW);
        for region in [p, q] {
            // Faults at 0, 1, 3, 6, 11; the last window (9 pages) is
            // clipped to 5.
            let before = Pf::of(&rig);
            for i in 0..16 {
                rig.cpu.write_u8(region + i * PAGE, 1).unwrap();
            }
            let d = Pf::since(&rig, before);
            assert_eq!((d.faults, d.windows, d.extra), (5, 4, 1 + 2 + 4 + 4));
        }
        assert_eq!(rig.rss_anon(), 32);
        assert_eq!(rig.resident(guard, 8), vec![0; 8], "the window reached into the next VMA");
        for i in 0..48 {
            let e = rig.pte(p + (16 + i) * PAGE);
            assert!(e.is_none(), "page {} after the first region: {e:?}", 16 + i);
            let e = rig.pte(q + (16 + i) * PAGE);
            assert!(e.is_none(), "page {} after the second region: {e:?}", 16 + i);
        }
        // The guard VMA still works as itself: readable, not writable.
        assert_eq!(rig.cpu.read_u8(guard).unwrap(), 0);
        rig.assert_write_segv(guard + PAGE);
    }

    /// A window never crosses into the next PTE table: a sequential run
    /// across a 2 MiB boundary stops at it, allocates no table for it,
    /// and the pages after the boundary are untouched until faulted.
    #[test]
    fn window_stops_at_the_page_table_boundary() {
        let mut rig = prefault_rig(3);
        // 16 pages before the boundary, 32 after.
        let boundary = BASE + 2 * TABLE_PAGES * PAGE;
        let p = rig.map_fixed(boundary - 16 * PAGE, 48 * PAGE, Prot::RW);
        let before = Pf::of(&rig);
        for i in 0..16 {
            rig.cpu.write_u8(p + i * PAGE, 1).unwrap();
        }
        // 1 + 2 + 3 + 5, then 9 clipped to 5 at the boundary.
        let d = Pf::since(&rig, before);
        assert_eq!((d.faults, d.windows, d.extra), (5, 4, 11));
        assert_eq!(rig.resident(p, 48), prefix(16, 48));
        let tables = rig.machine.meminfo().page_tables;
        assert!(rig.pte(p + 16 * PAGE).is_none());
        // The next fault, at the boundary, is still a hit (the run goes
        // on), in the next table: one new table.
        rig.cpu.write_u8(p + 16 * PAGE, 1).unwrap();
        assert_eq!(rig.machine.meminfo().page_tables, tables + 1);
        let d = Pf::since(&rig, before);
        assert_eq!((d.faults, d.windows, d.extra), (6, 5, 11 + 8));
        assert_eq!(rig.resident(p, 48), prefix(16 + 9, 48));
        assert_eq!(rig.rss_anon(), 25);
    }

    /// The same for a read run (zero-page windows).
    #[test]
    fn read_window_stops_at_the_page_table_boundary() {
        let mut rig = prefault_rig(3);
        let boundary = BASE + 4 * TABLE_PAGES * PAGE;
        let p = rig.map_fixed(boundary - 14 * PAGE, 40 * PAGE, Prot::READ);
        for i in 0..14 {
            assert_eq!(rig.cpu.read_u8(p + i * PAGE).unwrap(), 0);
        }
        // 1 + 2 + 3 + 5, then 9 clipped to 3 at the boundary.
        assert_eq!(rig.resident(p, 40), prefix(14, 40));
        let tables = rig.machine.meminfo().page_tables;
        assert_eq!(rig.cpu.read_u8(p + 14 * PAGE).unwrap(), 0);
        assert_eq!(rig.machine.meminfo().page_tables, tables + 1);
        assert_eq!(rig.resident(p, 40), prefix(14 + 9, 40));
        assert_eq!(rig.rss_anon(), 0);
    }

    /// `MADV_RANDOM` turns prefault off: one fault per page, no windows;
    /// `MADV_NORMAL` turns it back on.
    #[test]
    fn madv_random_turns_prefault_off() {
        let mut rig = prefault_rig(3);
        let n = 64;
        let p = rig.map_fixed(BASE, n * PAGE, Prot::RW);
        rig.cpu.madvise(p.as_u64(), n * PAGE, Advice::Random as u32).unwrap();
        for write in [true, false] {
            let q = if write { p } else { p + n / 2 * PAGE };
            let before = Pf::of(&rig);
            for i in 0..n / 2 {
                rig.cpu.touch(q + i * PAGE, write).unwrap();
                assert_eq!(rig.resident(q, n / 2), prefix(i + 1, n / 2), "write {write}, page {i}");
            }
            let d = Pf::since(&rig, before);
            assert_eq!((d.faults, d.windows, d.extra), (n as i64 / 2, 0, 0), "write {write}");
        }
        assert_eq!(rig.rss_anon(), n / 2);
        // Back to normal: a fresh mapping at the same place prefaults.
        rig.cpu.munmap(p.as_u64(), n * PAGE).unwrap();
        let p = rig.map_fixed(BASE, n * PAGE, Prot::RW);
        rig.cpu.madvise(p.as_u64(), n * PAGE, Advice::Random as u32).unwrap();
        rig.cpu.madvise(p.as_u64(), n * PAGE, Advice::Normal as u32).unwrap();
        let before = Pf::of(&rig);
        for i in 0..47 {
            rig.cpu.write_u8(p + i * PAGE, 1).unwrap();
        }
        let d = Pf::since(&rig, before);
        assert_eq!((d.faults, d.windows), (8, 7));
    }

    /// `MADV_RANDOM` on the second half of a mapping splits it: the
    /// sequential run's window stops at the split, and the random half
    /// then takes one fault per page.
    #[test]
    fn madv_random_on_part_of_a_run() {
        let mut rig = prefault_rig(3);
        let n = 48;
        let p = rig.map_fixed(BASE, n * PAGE, Prot::RW);
        rig.cpu.madvise(p.as_u64() + 24 * PAGE, 24 * PAGE, Advice::Random as u32).unwrap();
        let before = Pf::of(&rig);
        for i in 0..24 {
            rig.cpu.write_u8(p + i * PAGE, 1).unwrap();
        }
        // Faults at 0, 1, 3, 6, 11, 20; the last window clipped to 4.
        let d = Pf::since(&rig, before);
        assert_eq!((d.faults, d.windows, d.extra), (6, 5, 1 + 2 + 4 + 8 + 3));
        assert_eq!(rig.resident(p, n), prefix(24, n));
        for i in 24..n {
            rig.cpu.write_u8(p + i * PAGE, 1).unwrap();
            assert_eq!(rig.resident(p, n), prefix(i + 1, n));
        }
        let d = Pf::since(&rig, before);
        assert_eq!((d.faults, d.windows, d.extra), (6 + 24, 5, 18));
        assert_eq!(rig.rss_anon(), n);
    }
}

mod unused {
    use super::*;

    /// Prefaulted pages never touched are counted when they are unmapped;
    /// touched ones (the MMU set their accessed bit) are not, and neither
    /// are pages that were never prefaulted.
    #[test]
    fn untouched_prefaulted_pages_are_counted_at_munmap() {
        for write in [true, false] {
            let mut rig = prefault_rig(3);
            let p = rig.map_fixed(BASE, 32 * PAGE, Prot::RW);
            // Faults at 0, 1, 3, 6: [0] [1 2] [3 4 5] [6 7 8 9 10].
            for i in [0, 1, 3, 6] {
                rig.cpu.touch(p + i * PAGE, write).unwrap();
            }
            assert_eq!(rig.resident(p, 32), prefix(11, 32));
            // Extra pages 2, 4, 5, 7, 8, 9, 10; touch 4 (read) and 9
            // (write: a read window's zero page gets replaced by a frame,
            // which is no prefaulted page any more).
            assert_eq!(rig.cpu.read_u8(p + 4 * PAGE).unwrap(), 0);
            rig.cpu.write_u8(p + 9 * PAGE, 1).unwrap();
            // And a page nobody prefaulted, far away.
            rig.cpu.touch(p + 20 * PAGE, write).unwrap();
            let before = Pf::of(&rig);
            rig.cpu.munmap(p.as_u64(), 32 * PAGE).unwrap();
            let d = Pf::since(&rig, before);
            assert_eq!(d.unused, 5, "write {write}: pages 2, 5, 7, 8, 10");
        }
    }

    /// MADV_DONTNEED zaps too, and counts the same way.
    #[test]
    fn dontneed_counts_untouched_prefaulted_pages() {
        let mut rig = prefault_rig(3);
        let p = rig.map_fixed(BASE, 32 * PAGE, Prot::RW);
        for i in 0..12 {
            rig.cpu.write_u8(p + i * PAGE, 1).unwrap();
        }
        // [0] [1 2] [3 4 5] [6..=10] [11..=19]: 12..=19 untouched.
        let before = Pf::of(&rig);
        rig.cpu.madvise(p.as_u64(), 32 * PAGE, Advice::DontNeed as u32).unwrap();
        assert_eq!(Pf::since(&rig, before).unused, 8);
        assert_eq!(rig.rss_anon(), 0);
    }

    /// Faults at 0, 1 and 3 of a fresh 16-page mapping: windows [0] [1 2]
    /// [3 4 5], so pages 2, 4 and 5 are prefaulted and untouched.
    fn three_windows(rig: &mut Rig) -> VirtAddr {
        let p = rig.map_fixed(BASE, 16 * PAGE, Prot::RW);
        for i in [0, 1, 3] {
            rig.cpu.write_u8(p + i * PAGE, 1).unwrap();
        }
        assert_eq!(rig.resident(p, 8), prefix(6, 8));
        p
    }

    /// Reclaim's aging (`page_referenced`) takes the accessed bit of a
    /// prefaulted page that was used: the page must not be counted as
    /// prefaulted for nothing when it is unmapped later, while one aged
    /// before any touch still is.
    #[test]
    fn aging_a_touched_prefaulted_page_keeps_it_counted_as_used() {
        let mut rig = prefault_rig(3);
        let p = three_windows(&mut rig);
        rig.cpu.write_u8(p + 2 * PAGE, 5).unwrap();
        let sys = rig.machine.sys().clone();
        for (page, referenced) in [(2, 1), (1, 1), (2, 0), (4, 0)] {
            let pfn = rig.pte(p + page * PAGE).pfn();
            assert_eq!(oxmm::rmap::page_referenced(&sys, rig.cpu.id(), pfn), Ok(referenced), "page {page}");
        }
        let (used, unused) = (rig.pte(p + 2 * PAGE), rig.pte(p + 4 * PAGE));
        assert!(!used.is_accessed() && used.0 & Pte::SW_PREFAULT == 0, "{used:?}");
        assert!(!unused.is_accessed() && unused.0 & Pte::SW_PREFAULT != 0, "{unused:?}");
        let before = Pf::of(&rig);
        rig.cpu.munmap(p.as_u64(), 16 * PAGE).unwrap();
        assert_eq!(Pf::since(&rig, before).unused, 2, "pages 4 and 5; page 2 was written before it was aged");
    }

    /// `try_to_unmap` (migration's unmap) counts an untouched prefaulted
    /// page as zap does.
    #[test]
    fn try_to_unmap_counts_an_untouched_prefaulted_page() {
        let mut rig = prefault_rig(3);
        let p = three_windows(&mut rig);
        let sys = rig.machine.sys().clone();
        let before = Pf::of(&rig);
        for (page, counted) in [(1, 0), (2, 1)] {
            let pfn = rig.pte(p + page * PAGE).pfn();
            assert_eq!(oxmm::rmap::try_to_unmap(&sys, rig.cpu.id(), pfn), Ok(1));
            assert_eq!(Pf::since(&rig, before).unused, counted, "after page {page}");
        }
        assert_eq!(rig.resident(p, 3), vec![1, 0, 0]);
    }
}

mod oom {
    use super::*;

    fn tiny() -> Rig {
        Rig::with(MachineConfig {
            mem_bytes: 2 << 20,
            nodes: 1,
            cpus: 2,
            movable_percent: 75,
            ..MachineConfig::default()
        })
    }

    /// A writable mapping larger than memory (`MAP_NORESERVE`: no
    /// overcommit refusal).
    fn map_more_than_memory(rig: &mut Rig, pages: u64) -> VirtAddr {
        let flags = ANON.union(MapFlags::FIXED).union(MapFlags::NORESERVE);
        rig.cpu.mmap(BASE, pages * PAGE, Prot::RW, flags).expect("mmap")
    }

    /// Write one page after another until a fault; how many were written.
    fn write_until_oom(rig: &mut Rig, p: VirtAddr, pages: u64) -> u64 {
        for i in 0..pages {
            match rig.cpu.write_u8(p + i * PAGE, i as u8 | 1) {
                Ok(()) => {}
                Err(f) => {
                    assert_eq!(f, oxmm_host::Fault { kind: FaultError::Oom, addr: p + i * PAGE });
                    return i;
                }
            }
        }
        panic!("{pages} pages fit in a 2 MiB machine");
    }

    /// Running out of memory in the middle of a window shortens it: the
    /// run gets exactly as many pages as without prefault, OOM comes only
    /// when not a single page can be had, and nothing is mapped past it.
    #[test]
    fn allocation_failure_shortens_the_window() {
        let mut backed = Vec::new();
        for prefault in [None, Some(3)] {
            let mut rig = tiny();
            rig.machine.sys().set_prefault(prefault);
            let total = rig.machine.meminfo().total;
            let p = map_more_than_memory(&mut rig, total + 32);
            let before = Pf::of(&rig);
            let done = write_until_oom(&mut rig, p, total + 32);
            let d = Pf::since(&rig, before);
            assert!(done > 0);
            assert_eq!(rig.rss_anon(), done, "prefault {prefault:?}");
            let after = rig.resident(p + done * PAGE, 16);
            assert_eq!(after, vec![0; 16], "prefault {prefault:?}: mapped past the OOM");
            assert_eq!(rig.stat("fault_oom"), 1);
            if prefault.is_some() {
                assert!(d.windows > 0 && d.faults * 4 < done as i64, "{d:?} for {done} pages");
            }
            // Still OOM on retry, the data is intact, reads still work.
            assert_eq!(rig.cpu.write_u8(p + done * PAGE, 1).unwrap_err().kind, FaultError::Oom);
            for i in 0..done {
                assert_eq!(rig.cpu.read_u8(p + i * PAGE).unwrap(), i as u8 | 1);
            }
            assert_eq!(rig.cpu.read_u8(p + (done + 3) * PAGE).unwrap(), 0);
            rig.check();
            backed.push(done);
        }
        assert_eq!(backed[0], backed[1], "prefault lost pages at OOM (without, with)");
    }

    /// The window is shortened, not skipped: with two frames left, a
    /// window of two maps both, and the next one is OOM.
    #[test]
    fn a_window_maps_what_is_left() {
        let mut rig = tiny();
        rig.machine.sys().set_prefault(None);
        let total = rig.machine.meminfo().total;
        let p = map_more_than_memory(&mut rig, total + 32);
        let done = write_until_oom(&mut rig, p, total + 32);
        // Give three frames back, in the same PTE table.
        rig.cpu.munmap(p.as_u64() + (done - 3) * PAGE, 3 * PAGE).unwrap();
        rig.machine.sys().set_prefault(Some(3));
        let q = p + done * PAGE;
        rig.cpu.write_u8(q, 1).unwrap(); // a miss: [0]
        let before = Pf::of(&rig);
        rig.cpu.write_u8(q + PAGE, 1).unwrap(); // a hit: [1 2], two frames left
        assert_eq!(rig.resident(q, 4), vec![1, 1, 1, 0]);
        // A hit wanting [3 4 5] with no frame at all.
        assert_eq!(rig.cpu.write_u8(q + 3 * PAGE, 1).unwrap_err().kind, FaultError::Oom);
        let d = Pf::since(&rig, before);
        assert_eq!((d.faults, d.windows, d.extra), (2, 1, 1));
        assert_eq!(rig.rss_anon(), done);
        rig.check();
    }
}

mod fork {
    use super::*;

    /// Prefaulted pages, touched or not, are ordinary private pages to
    /// fork: copied on write in either process, zero where never written,
    /// and the checker (reverse map included) is clean at every step.
    #[test]
    fn prefaulted_pages_are_copied_on_write() {
        let mut rig = prefault_rig(3);
        let p = rig.map_fixed(BASE, 32 * PAGE, Prot::RW);
        // [0] [1 2] [3 4 5] [6..=10]: 2, 4, 5, 7..=10 never touched.
        for i in [0, 1, 3, 6] {
            rig.cpu.write_u8(p + i * PAGE, 1).unwrap();
        }
        // A read window too: [11] would be a hit, so miss first at 16.
        for i in [16, 17, 19] {
            assert_eq!(rig.cpu.read_u8(p + i * PAGE).unwrap(), 0);
        }
        let parent = rig.proc.clone();
        let child = rig.cpu.fork(&parent).unwrap();
        rig.check();
        assert_eq!(child.rss().anon, 11);
        assert_eq!(rig.machine.meminfo().anon, 11, "fork copied no page");
        // The child writes an untouched prefaulted page and a zero-page one.
        rig.cpu.switch_to(&child);
        rig.cpu.write_u8(p + 4 * PAGE, 2).unwrap();
        rig.cpu.write_u8(p + 18 * PAGE, 2).unwrap();
        assert_eq!(rig.cpu.sum(p, 32 * PAGE).unwrap(), 4 + 4);
        rig.check();
        // The parent writes another one; it sees none of the child's.
        rig.cpu.switch_to(&parent);
        rig.cpu.write_u8(p + 8 * PAGE, 3).unwrap();
        assert_eq!(rig.cpu.sum(p, 32 * PAGE).unwrap(), 4 + 3);
        assert_eq!(rig.cpu.read_u8(p + 4 * PAGE).unwrap(), 0);
        rig.check();
        rig.cpu.exit_process(child);
        rig.check();
        assert_eq!(rig.rss_anon(), 11);
        assert_eq!(rig.cpu.sum(p, 32 * PAGE).unwrap(), 4 + 3);
    }
}

/// Prefault windows racing what else runs under the mmap read lock on
/// the same pages: MADV_DONTNEED zapping them, MADV_POPULATE_WRITE, and
/// copy-on-write from the zero page on neighbouring PTEs. Every CPU owns
/// one word of each page and reads back 0 (zapped) or what it last wrote;
/// a word nobody writes reads 0; afterwards the checker is clean and
/// nothing is left mapped. (From a review of the issue-4 fault path.)
mod races {
    use super::*;
    use oxmm::rmap::RmapScheme;
    use oxmm_host::Cpu;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Barrier;

    fn val(t: u64, i: u64, gen: u64) -> u64 {
        0xa5 << 56 | (t + 1) << 48 | (gen & 0xffff) << 32 | i
    }

    fn rig(cpus: usize, rmap: RmapScheme) -> Rig {
        let r = Rig::with(MachineConfig { mem_bytes: 64 << 20, nodes: 1, cpus, movable_percent: 75, rmap });
        r.machine.sys().set_prefault(Some(3));
        r
    }

    /// Run `worker` on CPUs 1..=workers of the rig's process while `main`
    /// runs on CPU 0; the workers stop when `main` returns.
    fn race(
        rig: &mut Rig,
        workers: usize,
        worker: impl Fn(&mut Cpu, u64, &AtomicBool) + Sync,
        main: impl FnOnce(&mut Rig),
    ) {
        let stop = AtomicBool::new(false);
        let barrier = Barrier::new(workers + 1);
        let (machine, proc) = (rig.machine.clone(), rig.proc.clone());
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..workers)
                .map(|t| {
                    let mut cpu = machine.cpu(t + 1).expect("cpu");
                    let (proc, barrier, stop, worker) = (proc.clone(), &barrier, &stop, &worker);
                    s.spawn(move || {
                        cpu.switch_to(&proc);
                        barrier.wait();
                        worker(&mut cpu, t as u64, stop);
                    })
                })
                .collect();
            barrier.wait();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| main(rig)));
            stop.store(true, Ordering::Relaxed);
            for h in hs {
                if let Err(e) = h.join() {
                    std::panic::resume_unwind(e);
                }
            }
            if let Err(e) = r {
                std::panic::resume_unwind(e);
            }
        });
    }

    fn windows_race_dontneed(rmap: RmapScheme) {
        let mut rig = rig(3, rmap);
        let n = 2 * TABLE_PAGES;
        let p = rig.map_fixed(BASE, n * PAGE, Prot::RW);
        race(
            &mut rig,
            2,
            |cpu, t, stop| {
                let mut gen = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    gen += 1;
                    // A sequential run: predicted, so windows of up to 9 pages.
                    let from = (gen * 97 + t * 300) % n;
                    for k in 0..64u64 {
                        let i = (from + k) % n;
                        let (a, v) = (p + i * PAGE + t * 8, val(t, i, gen));
                        cpu.write_u64(a, v).unwrap();
                        let got = cpu.read_u64(a).unwrap();
                        assert!(got == v || got == 0, "page {i} word {t}: wrote {v:#x}, read {got:#x}");
                        assert_eq!(cpu.read_u64(p + i * PAGE + 512).unwrap(), 0, "page {i}: an unwritten word");
                    }
                }
            },
            |rig| {
                for round in 0..300u64 {
                    let start = (round * 37) % n;
                    let len = (1 + round % 17).min(n - start);
                    rig.cpu.madvise(p.as_u64() + start * PAGE, len * PAGE, Advice::DontNeed as u32).unwrap();
                    if round.is_multiple_of(64) {
                        rig.cpu.madvise(p.as_u64(), n * PAGE, Advice::DontNeed as u32).unwrap();
                    }
                    std::thread::yield_now();
                }
            },
        );
        rig.check();
        rig.cpu.munmap(p.as_u64(), n * PAGE).unwrap();
        assert_eq!(rig.machine.meminfo().anon, 0);
    }

    #[test]
    fn write_windows_race_dontneed_pte_chains() {
        windows_race_dontneed(RmapScheme::PteChains);
    }

    #[test]
    fn write_windows_race_dontneed_object_rmap() {
        windows_race_dontneed(RmapScheme::Object);
    }

    /// One CPU runs read windows (zero page) with a write now and then (a
    /// copy-on-write from the zero page); another runs write windows and
    /// MADV_POPULATE_WRITE; CPU 0 zaps with DONTNEED.
    #[test]
    fn zero_page_windows_cow_and_populate_race_dontneed() {
        let mut rig = rig(3, RmapScheme::PteChains);
        let n = TABLE_PAGES;
        let p = rig.map_fixed(BASE, n * PAGE, Prot::RW);
        race(
            &mut rig,
            2,
            |cpu, t, stop| {
                let mut gen = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    gen += 1;
                    let from = (gen * 61 + t * 200) % n;
                    for k in 0..48u64 {
                        let i = (from + k) % n;
                        if t == 0 {
                            assert_eq!(cpu.read_u64(p + i * PAGE + 8 * 9).unwrap(), 0, "page {i}");
                        }
                        if t == 1 || k.is_multiple_of(5) {
                            let (a, v) = (p + i * PAGE + t * 8, val(t, i, gen));
                            cpu.write_u64(a, v).unwrap();
                            let got = cpu.read_u64(a).unwrap();
                            assert!(got == 0 || got == v, "page {i} word {t}: wrote {v:#x}, read {got:#x}");
                        }
                    }
                    if t == 1 && gen.is_multiple_of(8) {
                        let s = (gen * 13) % n;
                        let len = 16.min(n - s);
                        cpu.madvise(p.as_u64() + s * PAGE, len * PAGE, Advice::PopulateWrite as u32).unwrap();
                    }
                }
            },
            |rig| {
                for round in 0..400u64 {
                    let start = (round * 29) % n;
                    let len = (1 + round % 23).min(n - start);
                    rig.cpu.madvise(p.as_u64() + start * PAGE, len * PAGE, Advice::DontNeed as u32).unwrap();
                    std::thread::yield_now();
                }
            },
        );
        rig.check();
        rig.cpu.munmap(p.as_u64(), n * PAGE).unwrap();
        assert_eq!(rig.machine.meminfo().anon, 0);
    }
}
