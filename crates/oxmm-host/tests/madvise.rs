//! MADV_DONTNEED on private anonymous memory.
//!
//! Checked on the real kernel (Linux 6.18, /tmp/oxc/sem.c): over
//! [2 written pages][1-page hole][2 written pages], MADV_DONTNEED returns
//! ENOMEM, `RssAnon` drops by 4 and all four mapped pages read 0 afterwards;
//! starting in the hole, it returns ENOMEM, the pages after the hole read 0
//! and the pages before it keep their data.

mod common;

use common::*;
use oxmm::errno::Errno;
use oxmm::mm::{Advice, Prot};

const DONTNEED: u32 = Advice::DontNeed as u32;

#[test]
fn dontneed_gives_zeroes_back_and_drops_rss() {
    let mut rig = Rig::new();
    let n = 8;
    let p = rig.map(n * PAGE, Prot::RW);
    rig.cpu.fill(p, n * PAGE, 0x77).unwrap();
    assert_eq!(rig.rss_anon(), n);
    rig.cpu.madvise(p.as_u64() + 2 * PAGE, 3 * PAGE, DONTNEED).unwrap();
    assert_eq!(rig.rss_anon(), n - 3);
    assert_eq!(rig.machine.meminfo().anon, n - 3);
    assert_eq!(rig.cpu.mincore(p.as_u64(), n * PAGE).unwrap(), vec![1, 1, 0, 0, 0, 1, 1, 1]);
    // Zapped pages read zero (through the zero page: RSS unchanged).
    assert_eq!(rig.cpu.sum(p + 2 * PAGE, 3 * PAGE).unwrap(), 0);
    assert_eq!(rig.rss_anon(), n - 3);
    assert_eq!(rig.cpu.sum(p, 2 * PAGE).unwrap(), 0x77 * 2 * PAGE);
    assert_eq!(rig.cpu.sum(p + 5 * PAGE, 3 * PAGE).unwrap(), 0x77 * 3 * PAGE);
    // And can be written again.
    rig.cpu.write_u8(p + 3 * PAGE, 1).unwrap();
    assert_eq!(rig.cpu.sum(p + 3 * PAGE, PAGE).unwrap(), 1);
    assert_eq!(rig.rss_anon(), n - 2);
}

#[test]
fn dontneed_on_zero_page_mappings() {
    let mut rig = Rig::new();
    let p = rig.map(4 * PAGE, Prot::RW);
    assert_eq!(rig.cpu.sum(p, 4 * PAGE).unwrap(), 0);
    rig.cpu.madvise(p.as_u64(), 4 * PAGE, DONTNEED).unwrap();
    assert_eq!(rig.cpu.mincore(p.as_u64(), 4 * PAGE).unwrap(), vec![0; 4]);
    assert_eq!(rig.rss_anon(), 0);
    assert_eq!(rig.cpu.read_u8(p).unwrap(), 0);
}

#[test]
fn dontneed_keeps_the_mapping_and_its_protection() {
    let mut rig = Rig::new();
    let p = rig.map(2 * PAGE, Prot::READ);
    rig.cpu.read_u8(p).unwrap();
    rig.cpu.madvise(p.as_u64(), 2 * PAGE, DONTNEED).unwrap();
    assert_eq!(rig.cpu.read_u8(p).unwrap(), 0);
    rig.assert_write_segv(p);
}

#[test]
fn dontneed_over_a_hole_is_enomem_but_zaps_the_mapped_part() {
    let mut rig = Rig::new();
    let p = rig.map(5 * PAGE, Prot::RW);
    rig.cpu.fill(p, 5 * PAGE, 9).unwrap();
    rig.cpu.munmap(p.as_u64() + 2 * PAGE, PAGE).unwrap();
    assert_eq!(rig.rss_anon(), 4);
    assert_eq!(rig.cpu.madvise(p.as_u64(), 5 * PAGE, DONTNEED), Err(Errno::ENOMEM));
    assert_eq!(rig.rss_anon(), 0);
    for i in [0, 1, 3, 4] {
        assert_eq!(rig.cpu.sum(p + i * PAGE, PAGE).unwrap(), 0, "page {i} zapped");
    }
}

#[test]
fn dontneed_starting_in_a_hole_is_enomem_and_zaps_what_follows() {
    let mut rig = Rig::new();
    let p = rig.map(5 * PAGE, Prot::RW);
    rig.cpu.fill(p, 5 * PAGE, 9).unwrap();
    rig.cpu.munmap(p.as_u64() + 2 * PAGE, PAGE).unwrap();
    assert_eq!(rig.cpu.madvise(p.as_u64() + 2 * PAGE, 3 * PAGE, DONTNEED), Err(Errno::ENOMEM));
    assert_eq!(rig.rss_anon(), 2);
    assert_eq!(rig.cpu.sum(p, 2 * PAGE).unwrap(), 9 * 2 * PAGE, "before the hole: kept");
    assert_eq!(rig.cpu.sum(p + 3 * PAGE, 2 * PAGE).unwrap(), 0, "after the hole: zapped");
}

#[test]
fn dontneed_across_page_tables_frees_every_page() {
    let mut rig = Rig::new();
    let len = 3 << 20;
    let p = rig.map(len, Prot::RW);
    for off in (0..len).step_by(PAGE as usize * 16) {
        rig.cpu.write_u8(p + off, 1).unwrap();
    }
    let written = len / PAGE / 16;
    assert_eq!(rig.rss_anon(), written);
    let free = rig.machine.meminfo().free;
    rig.cpu.madvise(p.as_u64(), len, DONTNEED).unwrap();
    assert_eq!(rig.rss_anon(), 0);
    assert_eq!(rig.machine.meminfo().anon, 0);
    assert_eq!(rig.machine.meminfo().free, free + written, "every zapped page went back to the allocator");
}

mod populate {
    //! MADV_POPULATE_READ/WRITE. Checked on the real kernel (Linux 6.18,
    //! a C program of the 2026-12-01 review): POPULATE_WRITE of the first 4
    //! of 64 pages leaves exactly those 4 resident; POPULATE_WRITE on a
    //! PROT_READ mapping and POPULATE_READ on PROT_NONE, PROT_WRITE-only or
    //! PROT_EXEC-only are EINVAL; over
    //! [4 mapped pages][hole] it is ENOMEM with the 4 pages populated.
    use super::*;
    use oxmm::mm::MapFlags;

    const READ: u32 = Advice::PopulateRead as u32;
    const WRITE: u32 = Advice::PopulateWrite as u32;

    #[test]
    fn populate_maps_exactly_the_range_even_with_prefault_on() {
        for prefault in [None, Some(3)] {
            let mut rig = Rig::new();
            rig.machine.sys().set_prefault(prefault);
            let p = rig.map(64 * PAGE, Prot::RW);
            // A sequential run first, so that the predictor expects page 4.
            rig.cpu.madvise(p.as_u64(), 4 * PAGE, WRITE).unwrap();
            rig.cpu.madvise(p.as_u64() + 4 * PAGE, 4 * PAGE, READ).unwrap();
            // Frames for the written range, the zero page for the read one,
            // nothing beyond.
            let mut want = vec![1; 8];
            want.extend([0; 56]);
            assert_eq!(rig.resident(p, 64), want, "prefault {prefault:?}");
            assert_eq!(rig.rss_anon(), 4, "prefault {prefault:?}");
            assert_eq!(rig.stat("prefault_pages"), 0, "prefault {prefault:?}");
            // Already populated: no fault at all the second time.
            let faults = rig.stat("pgfault");
            rig.cpu.madvise(p.as_u64(), 8 * PAGE, READ).unwrap();
            rig.cpu.madvise(p.as_u64(), 4 * PAGE, WRITE).unwrap();
            assert_eq!(rig.stat("pgfault"), faults, "prefault {prefault:?}");
            // And the zero-page mappings of the READ range become frames.
            rig.cpu.madvise(p.as_u64() + 4 * PAGE, 4 * PAGE, WRITE).unwrap();
            assert_eq!(rig.rss_anon(), 8, "prefault {prefault:?}");
            assert_eq!(rig.stat("pgfault"), faults + 4, "prefault {prefault:?}");
        }
    }

    #[test]
    fn populate_without_the_access_is_einval() {
        let mut rig = Rig::new();
        let ro = rig.map(4 * PAGE, Prot::READ);
        assert_eq!(rig.cpu.madvise(ro.as_u64(), 4 * PAGE, WRITE), Err(Errno::EINVAL));
        assert_eq!(rig.cpu.madvise(ro.as_u64(), 4 * PAGE, READ), Ok(()));
        let none = rig.map(4 * PAGE, Prot::NONE);
        assert_eq!(rig.cpu.madvise(none.as_u64(), 4 * PAGE, READ), Err(Errno::EINVAL));
        // A read needs PROT_READ itself (Linux: EINVAL on PROT_WRITE-only
        // and PROT_EXEC-only mappings, though x86 lets them be read).
        let wo = rig.map(4 * PAGE, Prot::WRITE);
        assert_eq!(rig.cpu.madvise(wo.as_u64(), 4 * PAGE, READ), Err(Errno::EINVAL));
        let xo = rig.map(4 * PAGE, Prot::EXEC);
        assert_eq!(rig.cpu.madvise(xo.as_u64(), 4 * PAGE, READ), Err(Errno::EINVAL));
        assert_eq!(rig.rss_anon(), 0);
        assert_eq!(rig.cpu.madvise(wo.as_u64(), 4 * PAGE, WRITE), Ok(()));
        assert_eq!(rig.rss_anon(), 4);
    }

    #[test]
    fn populate_over_a_hole_keeps_what_it_populated_before_it() {
        let mut rig = Rig::new();
        let p = rig.map(8 * PAGE, Prot::RW);
        rig.cpu.munmap(p.as_u64() + 4 * PAGE, 4 * PAGE).unwrap();
        assert_eq!(rig.cpu.madvise(p.as_u64(), 12 * PAGE, WRITE), Err(Errno::ENOMEM));
        assert_eq!(rig.cpu.mincore(p.as_u64(), 4 * PAGE).unwrap(), vec![1; 4]);
        assert_eq!(rig.rss_anon(), 4);
        assert_eq!(rig.cpu.madvise(p.as_u64() + 4 * PAGE, 4 * PAGE, WRITE), Err(Errno::ENOMEM));
    }

    /// Another CPU unmaps and remaps part of the range, or takes its
    /// access away, while it is populated: the answer is the one for the
    /// mapping as it is then (ENOMEM, EINVAL) or success — never EFAULT,
    /// which Linux keeps for a mapping that cannot back a page.
    #[test]
    fn populate_racing_munmap_and_mprotect_never_says_efault() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let cfg = oxmm_host::MachineConfig { mem_bytes: 64 << 20, cpus: 2, ..Default::default() };
        let mut rig = Rig::with(cfg);
        let n = 256;
        let p = rig.map(n * PAGE, Prot::RW).as_u64();
        let other = Remote::new(&rig.machine, 1, &rig.proc);
        let done = Arc::new(AtomicBool::new(false));
        let mut answers = std::collections::BTreeMap::new();
        std::thread::scope(|s| {
            let d = done.clone();
            let churn = s.spawn(|| {
                other.run(move |cpu| {
                    let fixed = MapFlags::PRIVATE.union(MapFlags::ANONYMOUS).union(MapFlags::FIXED);
                    let (mid, tail) = (p + 64 * PAGE, p + 192 * PAGE);
                    while !d.load(Ordering::Acquire) {
                        cpu.mprotect(mid, 64 * PAGE, Prot::NONE).unwrap();
                        cpu.munmap(tail, 64 * PAGE).unwrap();
                        cpu.mprotect(mid, 64 * PAGE, Prot::RW).unwrap();
                        cpu.mmap(tail, 64 * PAGE, Prot::RW, fixed).unwrap();
                    }
                })
            });
            for _ in 0..300 {
                let r = rig.cpu.madvise(p, n * PAGE, WRITE);
                *answers.entry(format!("{r:?}")).or_insert(0) += 1;
            }
            done.store(true, Ordering::Release);
            churn.join().unwrap();
        });
        assert!(!answers.contains_key("Err(EFAULT)"), "{answers:?}");
        drop(other);
        rig.check();
    }

    /// MAP_POPULATE with prefault on: one fault per page, none lost to a
    /// window that ran ahead, and no page counted as prefaulted for nothing.
    #[test]
    fn map_populate_takes_one_fault_per_page_with_prefault_on() {
        let mut rig = Rig::new();
        rig.machine.sys().set_prefault(Some(3));
        let (faults, lost) = (rig.stat("pgfault"), rig.stat("fault_race_lost"));
        let p = rig.cpu.mmap(0, 64 * PAGE, Prot::RW, ANON.union(MapFlags::POPULATE)).unwrap();
        assert_eq!(rig.rss_anon(), 64);
        assert_eq!((rig.stat("pgfault") - faults, rig.stat("fault_race_lost") - lost), (64, 0));
        assert_eq!(rig.stat("prefault_pages"), 0);
        rig.cpu.munmap(p.as_u64(), 64 * PAGE).unwrap();
        assert_eq!(rig.stat("prefault_unused"), 0);
    }

    /// A shared writable mapping is populated for reading (Linux's
    /// `populate_vma_page_range`): nothing is dirtied.
    #[test]
    fn map_populate_of_a_shared_mapping_dirties_nothing() {
        let mut rig = Rig::new();
        let flags = MapFlags::SHARED.union(MapFlags::ANONYMOUS).union(MapFlags::POPULATE);
        let p = rig.cpu.mmap(0, 4 * PAGE, Prot::RW, flags).unwrap();
        assert_eq!(rig.cpu.mincore(p.as_u64(), 4 * PAGE).unwrap(), vec![1; 4]);
        for i in 0..4 {
            let pte = rig.pte(p + i * PAGE);
            assert!(pte.is_present() && !pte.is_dirty(), "page {i}: {pte:?}");
        }
    }
}

mod per_vma {
    //! Advice is applied VMA by VMA (Linux's `madvise_walk_vmas`), each VMA
    //! checked on its own: the first one that refuses the advice ends the
    //! call, the ones before it keeping what was done. Every case was
    //! checked with a C program on Linux 6.18 (the 2026 system-call review,
    //! /tmp/review_syscalls/t2.c, and its follow-up).
    use std::sync::Arc;

    use super::*;
    use oxmm::mm::MapFlags;
    use oxmm::pagecache::PageCache;

    const DONTNEED_LOCKED: u32 = Advice::DontNeedLocked as u32;
    const FREE: u32 = Advice::Free as u32;
    const COLD: u32 = Advice::Cold as u32;
    const PAGEOUT: u32 = Advice::PageOut as u32;
    const WILLNEED: u32 = Advice::WillNeed as u32;
    const COLLAPSE: u32 = Advice::Collapse as u32;
    const WIPEONFORK: u32 = Advice::WipeOnFork as u32;
    const KEEPONFORK: u32 = Advice::KeepOnFork as u32;
    const NOHUGEPAGE: u32 = Advice::NoHugePage as u32;
    const LOCKED: MapFlags = MapFlags(ANON.0 | MapFlags::LOCKED.0);
    const SHARED_ANON: MapFlags = MapFlags(MapFlags::SHARED.0 | MapFlags::ANONYMOUS.0);
    const HPAGE: u64 = 2 << 20;

    fn file(rig: &Rig, pages: u64) -> Arc<PageCache> {
        rig.zero_file(pages, true)
    }

    /// Linux: over [normal page = 7][MAP_LOCKED page = 8], MADV_DONTNEED is
    /// EINVAL and the normal page reads 0 afterwards, the locked one 8:
    /// `madvise_walk_vmas` zaps the first VMA, then stops at the locked one
    /// (`madvise_dontneed_free_valid_vma`). MADV_DONTNEED_LOCKED then zaps
    /// both. Checked with a C program on Linux 6.18.
    #[test]
    fn dontneed_zaps_the_vmas_before_a_locked_one() {
        let mut rig = Rig::new();
        let x = rig.map(2 * PAGE, Prot::RW).as_u64();
        rig.cpu.mmap(x + PAGE, PAGE, Prot::RW, LOCKED.union(MapFlags::FIXED)).unwrap();
        rig.cpu.write_u8(va(x), 7).unwrap();
        rig.cpu.write_u8(va(x + PAGE), 8).unwrap();
        assert_eq!(rig.cpu.madvise(x, 2 * PAGE, DONTNEED), Err(Errno::EINVAL));
        assert_eq!(rig.cpu.read_u8(va(x)).unwrap(), 0, "the VMA before the locked one is zapped");
        assert_eq!(rig.cpu.read_u8(va(x + PAGE)).unwrap(), 8, "the locked VMA is not");
        assert_eq!(rig.cpu.madvise(x, 2 * PAGE, DONTNEED_LOCKED), Ok(()));
        assert_eq!(rig.cpu.read_u8(va(x + PAGE)).unwrap(), 0);
        rig.check();
    }

    /// Linux: MADV_WIPEONFORK on shared anonymous memory or on a private
    /// file mapping is EINVAL (`madvise_vma_behavior`: only anonymous
    /// memory, and shared anonymous memory has a `vm_file`); MADV_KEEPONFORK
    /// there is fine. Over [private anon][shared anon] it is EINVAL with
    /// the first VMA marked `wf` in smaps. Checked with a C program on
    /// Linux 6.18.
    #[test]
    fn wipeonfork_on_shared_or_file_mappings_is_einval() {
        let mut rig = Rig::new();
        let sa = rig.cpu.mmap(0, PAGE, Prot::RW, SHARED_ANON).unwrap().as_u64();
        assert_eq!(rig.cpu.madvise(sa, PAGE, WIPEONFORK), Err(Errno::EINVAL));
        assert_eq!(rig.cpu.madvise(sa, PAGE, KEEPONFORK), Ok(()));
        let c = file(&rig, 2);
        let fp = rig.cpu.mmap_file(0, PAGE, Prot::RW, MapFlags::PRIVATE, &c, 0).unwrap().as_u64();
        assert_eq!(rig.cpu.madvise(fp, PAGE, WIPEONFORK), Err(Errno::EINVAL));
        let w = rig.map(2 * PAGE, Prot::RW).as_u64();
        rig.cpu.mmap(w + PAGE, PAGE, Prot::RW, SHARED_ANON.union(MapFlags::FIXED)).unwrap();
        rig.cpu.write_u8(va(w), 5).unwrap();
        rig.cpu.write_u8(va(w + PAGE), 6).unwrap();
        assert_eq!(rig.cpu.madvise(w, 2 * PAGE, WIPEONFORK), Err(Errno::EINVAL));
        // The private VMA did become wipe-on-fork: a child sees zero there,
        // and the shared page as it is.
        let p = rig.proc.clone();
        let child = rig.cpu.fork(&p).unwrap();
        rig.cpu.switch_to(&child);
        let (wiped, shared) = (rig.cpu.read_u8(va(w)).unwrap(), rig.cpu.read_u8(va(w + PAGE)).unwrap());
        rig.cpu.switch_to(&p);
        rig.cpu.exit_process(child);
        assert_eq!((wiped, shared), (0, 6));
        assert_eq!(rig.cpu.read_u8(va(w)).unwrap(), 5, "the parent keeps its data");
    }

    /// Linux's per-VMA checks for the advice oxmm does nothing for:
    /// MADV_FREE on a locked VMA (`madvise_dontneed_free_valid_vma`) or a
    /// non-anonymous one, shared anonymous memory included
    /// (`madvise_free_single_vma`) → EINVAL; MADV_COLD and MADV_PAGEOUT on
    /// a locked VMA (`can_madv_lru_vma`) → EINVAL, on shared or file
    /// mappings fine; MADV_WILLNEED refuses nothing. Over
    /// [hole][anon][locked], FREE/COLD/PAGEOUT are EINVAL (the locked VMA's
    /// error wins over the hole's ENOMEM), WILLNEED is ENOMEM. Checked with
    /// a C program on Linux 6.18.
    #[test]
    fn lru_and_free_advice_on_locked_or_non_anonymous_is_einval() {
        let mut rig = Rig::new();
        let l = rig.cpu.mmap(0, PAGE, Prot::RW, LOCKED).unwrap().as_u64();
        for adv in [FREE, COLD, PAGEOUT] {
            assert_eq!(rig.cpu.madvise(l, PAGE, adv), Err(Errno::EINVAL), "advice {adv} on a locked mapping");
        }
        assert_eq!(rig.cpu.madvise(l, PAGE, WILLNEED), Ok(()));
        let sa = rig.cpu.mmap(0, PAGE, Prot::RW, SHARED_ANON).unwrap().as_u64();
        let c = file(&rig, 2);
        let fp = rig.cpu.mmap_file(0, PAGE, Prot::RW, MapFlags::PRIVATE, &c, 0).unwrap().as_u64();
        let fs = rig.cpu.mmap_file(0, PAGE, Prot::RW, MapFlags::SHARED, &c, 0).unwrap().as_u64();
        for (a, what) in [(sa, "shared anon"), (fp, "private file"), (fs, "shared file")] {
            assert_eq!(rig.cpu.madvise(a, PAGE, FREE), Err(Errno::EINVAL), "MADV_FREE on {what}");
            for adv in [COLD, PAGEOUT, WILLNEED] {
                assert_eq!(rig.cpu.madvise(a, PAGE, adv), Ok(()), "advice {adv} on {what}");
            }
        }
        let a = rig.map(PAGE, Prot::RW).as_u64();
        for adv in [FREE, COLD, PAGEOUT, WILLNEED] {
            assert_eq!(rig.cpu.madvise(a, PAGE, adv), Ok(()), "advice {adv} on private anon");
        }
        let x = rig.map(3 * PAGE, Prot::RW).as_u64();
        rig.cpu.mmap(x + 2 * PAGE, PAGE, Prot::RW, LOCKED.union(MapFlags::FIXED)).unwrap();
        rig.cpu.munmap(x, PAGE).unwrap();
        for adv in [FREE, COLD, PAGEOUT] {
            assert_eq!(rig.cpu.madvise(x, 3 * PAGE, adv), Err(Errno::EINVAL), "advice {adv} over [hole][anon][locked]");
        }
        assert_eq!(rig.cpu.madvise(x, 3 * PAGE, WILLNEED), Err(Errno::ENOMEM));
    }

    /// Linux's MADV_COLLAPSE refuses, before collapsing anything
    /// (`madvise_collapse`, `thp_vma_allowable_order`), a VMA that holds no
    /// 2 MiB-aligned 2 MiB block (so a one-page mapping, locked or not, is
    /// EINVAL), a MADV_NOHUGEPAGE VMA, a regular file, and shmem not at a
    /// 2 MiB-aligned offset; a locked VMA is fine. Within a VMA, a range
    /// with its start rounded up to 2 MiB past its end rounded down is
    /// EINVAL; equal (no block to collapse) is success. Checked with a C
    /// program on Linux 6.18 (8 MiB mappings at 2 MiB-aligned addresses,
    /// one page written).
    #[test]
    fn collapse_refuses_the_vmas_and_ranges_linux_refuses() {
        let mut rig = Rig::new();
        let one = rig.map(PAGE, Prot::RW).as_u64();
        assert_eq!(rig.cpu.madvise(one, PAGE, COLLAPSE), Err(Errno::EINVAL), "one-page VMA");
        let l = rig.cpu.mmap(0, PAGE, Prot::RW, LOCKED).unwrap().as_u64();
        assert_eq!(rig.cpu.madvise(l, PAGE, COLLAPSE), Err(Errno::EINVAL), "one-page locked VMA");
        let b = 0x3000_0000_0000u64;
        rig.cpu.mmap(b, 4 * HPAGE, Prot::RW, ANON.union(MapFlags::FIXED)).unwrap();
        rig.cpu.write_u8(va(b), 1).unwrap();
        assert_eq!(rig.cpu.madvise(b, PAGE, COLLAPSE), Ok(()), "first page: hstart == hend");
        assert_eq!(rig.cpu.madvise(b + PAGE, PAGE, COLLAPSE), Err(Errno::EINVAL), "page at +4K: hstart > hend");
        assert_eq!(rig.cpu.madvise(b + PAGE, HPAGE - PAGE, COLLAPSE), Ok(()), "[4K, 2M)");
        assert_eq!(rig.cpu.madvise(b + HPAGE / 2, HPAGE, COLLAPSE), Ok(()), "[1M, 3M)");
        assert_eq!(rig.cpu.madvise(b, 4 * HPAGE, NOHUGEPAGE), Ok(()));
        assert_eq!(rig.cpu.madvise(b, PAGE, COLLAPSE), Err(Errno::EINVAL), "MADV_NOHUGEPAGE");
        rig.cpu.mmap(b, 4 * HPAGE, Prot::RW, LOCKED.union(MapFlags::FIXED)).unwrap();
        assert_eq!(rig.cpu.madvise(b, PAGE, COLLAPSE), Ok(()), "locked 8 MiB, first page");
        rig.cpu.mmap(b, 4 * HPAGE, Prot::RW, SHARED_ANON.union(MapFlags::FIXED)).unwrap();
        assert_eq!(rig.cpu.madvise(b, PAGE, COLLAPSE), Ok(()), "shared anon, first page");
        assert_eq!(rig.cpu.madvise(b + PAGE, PAGE, COLLAPSE), Err(Errno::EINVAL), "shared anon, page at +4K");
        let sa = rig.cpu.mmap(0, PAGE, Prot::RW, SHARED_ANON).unwrap().as_u64();
        assert_eq!(rig.cpu.madvise(sa, PAGE, COLLAPSE), Err(Errno::EINVAL), "one-page shared anon VMA");
        let c = file(&rig, 4 * HPAGE / PAGE);
        rig.cpu.mmap_file(b, 4 * HPAGE, Prot::RW, MapFlags::PRIVATE.union(MapFlags::FIXED), &c, 0).unwrap();
        assert_eq!(rig.cpu.madvise(b, PAGE, COLLAPSE), Err(Errno::EINVAL), "private file mapping");
        rig.check();
    }
}
