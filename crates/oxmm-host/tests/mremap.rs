//! mremap: shrink, grow in place, move (with and without `MREMAP_FIXED`),
//! Linux's errno values (checked against the host kernel), and fork + COW
//! after a move — under every reverse-map scheme, with the checker's rmap
//! verification after each step.

mod common;

use common::*;
use oxmm::errno::Errno;
use oxmm::mm::flags::RemapFlags;
use oxmm::mm::Prot;
use oxmm::rmap::RmapScheme;

const SCHEMES: [RmapScheme; 3] = [RmapScheme::PteChains, RmapScheme::Object, RmapScheme::None];
const NONE: RemapFlags = RemapFlags(0);
const MAYMOVE: RemapFlags = RemapFlags::MAYMOVE;
const MOVE_FIXED: RemapFlags = RemapFlags(RemapFlags::MAYMOVE.0 | RemapFlags::FIXED.0);
const BASE: u64 = 0x4000_0000;
const TWO_MIB: u64 = 2 << 20;

/// Fill page `i` of `[a, a + pages)` with the byte `seed + i`.
#[track_caller]
fn pattern(r: &mut Rig, a: oxmm::addr::VirtAddr, pages: u64, seed: u8) {
    for i in 0..pages {
        r.cpu.fill(a + i * PAGE, PAGE, seed.wrapping_add(i as u8)).unwrap();
    }
}

#[track_caller]
fn assert_pattern(r: &mut Rig, a: oxmm::addr::VirtAddr, pages: u64, seed: u8) {
    for i in 0..pages {
        let b = seed.wrapping_add(i as u8) as u64;
        assert_eq!(r.cpu.sum(a + i * PAGE, PAGE).unwrap(), b * PAGE, "page {i} at {a:?}");
    }
}

mod resize {
    use super::*;

    #[test]
    fn shrink_unmaps_the_tail() {
        for scheme in SCHEMES {
            let mut r = Rig::with_rmap(scheme);
            let a = r.map(8 * PAGE, Prot::RW);
            pattern(&mut r, a, 8, 10);
            assert_eq!(r.cpu.mremap(a.as_u64(), 8 * PAGE, 3 * PAGE, NONE, 0).unwrap(), a);
            assert_eq!(r.rss_anon(), 3, "{scheme:?}");
            assert_eq!(r.machine.meminfo().anon, 3);
            assert_pattern(&mut r, a, 3, 10);
            for i in 3..8 {
                r.assert_read_segv(a + i * PAGE);
            }
            // Same size: nothing happens.
            assert_eq!(r.cpu.mremap(a.as_u64(), 3 * PAGE, 3 * PAGE, NONE, 0).unwrap(), a);
            r.check();
        }
    }

    #[test]
    fn grow_in_place_keeps_data_and_adds_zero_fill() {
        for scheme in SCHEMES {
            let mut r = Rig::with_rmap(scheme);
            let a = r.map_fixed(BASE, 4 * PAGE, Prot::RW);
            pattern(&mut r, a, 4, 20);
            assert_eq!(r.cpu.mremap(a.as_u64(), 4 * PAGE, 12 * PAGE, NONE, 0).unwrap(), a, "{scheme:?}");
            assert_eq!(r.rss_anon(), 4);
            assert_pattern(&mut r, a, 4, 20);
            assert_eq!(r.cpu.sum(a + 4 * PAGE, 8 * PAGE).unwrap(), 0);
            r.cpu.write_u8(a + 11 * PAGE, 1).unwrap();
            r.assert_read_segv(a + 12 * PAGE);
            r.check();
        }
    }

    #[test]
    fn move_carries_data_and_rss() {
        for scheme in SCHEMES {
            let mut r = Rig::with_rmap(scheme);
            let blocker = r.map(PAGE, Prot::READ);
            let a = r.map(8 * PAGE, Prot::RW);
            assert_eq!(a + 8 * PAGE, blocker);
            pattern(&mut r, a, 8, 30);
            let anon = r.machine.meminfo().anon;
            let b = r.cpu.mremap(a.as_u64(), 8 * PAGE, 16 * PAGE, MAYMOVE, 0).unwrap();
            assert_ne!(b, a, "{scheme:?}");
            assert_eq!(r.rss_anon(), 8, "{scheme:?}: RSS kept");
            assert_eq!(r.machine.meminfo().anon, anon, "no page copied");
            for i in 0..8 {
                r.assert_read_segv(a + i * PAGE);
            }
            assert_pattern(&mut r, b, 8, 30);
            assert_eq!(r.cpu.sum(b + 8 * PAGE, 8 * PAGE).unwrap(), 0, "the grown part is zero-fill");
            r.check();
            // Writes land in the moved pages, without copying them.
            r.cpu.write_u8(b, 0xff).unwrap();
            assert_eq!(r.machine.meminfo().anon, anon, "a moved page is written in place");
            r.cpu.write_u8(b + 8 * PAGE, 0xff).unwrap();
            assert_eq!(r.machine.meminfo().anon, anon + 1, "the grown part allocates on first write");
        }
    }

    #[test]
    fn move_fixed_to_slot_preserving_and_unaligned_addresses() {
        for scheme in SCHEMES {
            let mut r = Rig::with_rmap(scheme);
            let a = r.map_fixed(BASE + 5 * PAGE, 16 * PAGE, Prot::RW);
            pattern(&mut r, a, 16, 40);
            // Exactly 2 MiB up: same slots, other page table.
            let b = r.cpu.mremap(a.as_u64(), 16 * PAGE, 16 * PAGE, MOVE_FIXED, a.as_u64() + TWO_MIB).unwrap();
            assert_eq!(b, a + TWO_MIB);
            r.check();
            // To an unaligned address.
            let c = BASE + 7 * TWO_MIB + 300 * PAGE;
            let c = r.cpu.mremap(b.as_u64(), 16 * PAGE, 16 * PAGE, MOVE_FIXED, c).unwrap();
            assert_eq!(r.rss_anon(), 16, "{scheme:?}");
            assert_pattern(&mut r, c, 16, 40);
            r.assert_read_segv(b);
            r.assert_read_segv(c + 16 * PAGE);
            r.check();
            r.cpu.munmap((c + 12 * PAGE).as_u64(), 4 * PAGE).unwrap();
            // Over an existing mapping: MREMAP_FIXED replaces it.
            let d = r.map_fixed(BASE + 9 * TWO_MIB, 4 * PAGE, Prot::RW);
            r.cpu.fill(d, 4 * PAGE, 0xee).unwrap();
            let e = r.cpu.mremap(c.as_u64(), 12 * PAGE, 12 * PAGE, MOVE_FIXED, d.as_u64()).unwrap();
            assert_eq!(e, d);
            assert_pattern(&mut r, e, 12, 40);
            assert_eq!(r.rss_anon(), 12, "{scheme:?}: the replaced pages are gone");
            r.check();
        }
    }
}

mod bugs {
    use super::*;

    /// A shrinking move (`MREMAP_MAYMOVE | MREMAP_FIXED`, new_len <
    /// old_len) loses the moved pages: `Mm::mremap` removes the source VMA
    /// and unmaps the source's tail *before* it inserts the destination
    /// VMA, so the tail's `unmap_locked` → `free_tables` sees no VMA
    /// around and frees the upper-level tables that now hold the moved
    /// PTEs (here the PMD page covering both addresses).
    #[test]

    fn shrinking_fixed_move_keeps_the_moved_pages() {
        for scheme in SCHEMES {
            let mut r = Rig::with_rmap(scheme);
            let a = r.map_fixed(BASE + 5 * PAGE, 16 * PAGE, Prot::RW);
            pattern(&mut r, a, 16, 40);
            let c = BASE + 7 * TWO_MIB + 300 * PAGE;
            let c = r.cpu.mremap(a.as_u64(), 16 * PAGE, 12 * PAGE, MOVE_FIXED, c).unwrap();
            r.check();
            assert_eq!(r.rss_anon(), 12, "{scheme:?}");
            assert_pattern(&mut r, c, 12, 40);
            r.assert_read_segv(a);
            r.assert_read_segv(c + 12 * PAGE);
        }
    }
}

mod errno {
    use super::*;

    // Each case was checked against the host kernel (Linux 6.18) with a C
    // program doing the same calls.

    #[test]
    fn linux_values() {
        for scheme in SCHEMES {
            let mut r = Rig::with_rmap(scheme);
            let a = r.map(16 * PAGE, Prot::RW);
            let (x, p) = (a.as_u64(), PAGE);
            r.cpu.mprotect(x + 8 * p, 8 * p, Prot::READ).unwrap();
            assert_eq!(r.cpu.mremap(x + 1, p, 2 * p, MAYMOVE, 0), Err(Errno::EINVAL), "unaligned address");
            assert_eq!(r.cpu.mremap(x, p, 0, MAYMOVE, 0), Err(Errno::EINVAL), "new_len 0");
            assert_eq!(r.cpu.mremap(x, 0, p, MAYMOVE, 0), Err(Errno::EINVAL), "old_len 0, private");
            assert_eq!(r.cpu.mremap(x, p, p, RemapFlags(0x100), 0), Err(Errno::EINVAL), "unknown flag");
            assert_eq!(r.cpu.mremap(x, p, p, RemapFlags::FIXED, x + 64 * p), Err(Errno::EINVAL), "FIXED alone");
            assert_eq!(r.cpu.mremap(x, 4 * p, 4 * p, MOVE_FIXED, x + 2 * p), Err(Errno::EINVAL), "overlap");
            assert_eq!(r.cpu.mremap(x, 16 * p, 32 * p, MAYMOVE, 0), Err(Errno::EFAULT), "spans two mappings");
            assert_eq!(r.cpu.mremap(x, 8 * p, 12 * p, NONE, 0), Err(Errno::ENOMEM), "blocked, no MAYMOVE");
            assert_eq!(r.cpu.mremap(x, 4 * p, 6 * p, NONE, 0), Err(Errno::ENOMEM), "not at the end, no MAYMOVE");
            r.cpu.munmap(x + 15 * p, p).unwrap();
            assert_eq!(r.cpu.mremap(x + 15 * p, p, 2 * p, MAYMOVE, 0), Err(Errno::EFAULT), "unmapped");
            assert_eq!(r.cpu.mremap(x + 14 * p, 2 * p, 4 * p, MAYMOVE, 0), Err(Errno::EFAULT), "hole inside");
            // From an unmapped address every form is EFAULT and unmaps
            // nothing: not the target of a fixed move, not a shrink's tail.
            let t = r.map(4 * PAGE, Prot::RW);
            r.cpu.write_u8(t, 9).unwrap();
            r.cpu.munmap(x + 9 * p, p).unwrap();
            let hole = x + 9 * p;
            assert_eq!(r.cpu.mremap(hole, p, p, NONE, 0), Err(Errno::EFAULT), "same size, unmapped");
            assert_eq!(r.cpu.mremap(hole, 4 * p, 2 * p, NONE, 0), Err(Errno::EFAULT), "shrink from a hole");
            assert_eq!(r.cpu.mremap(hole, 2 * p, 2 * p, MOVE_FIXED, t.as_u64()), Err(Errno::EFAULT), "fixed, unmapped");
            assert_eq!(
                r.cpu.mremap(hole, 4 * p, p, MOVE_FIXED, t.as_u64()),
                Err(Errno::EFAULT),
                "fixed shrink, unmapped"
            );
            assert_eq!(r.cpu.read_u8(t).unwrap(), 9, "the fixed target was unmapped");
            assert_eq!(r.cpu.read_u8(a + 10 * PAGE).unwrap(), 0, "the shrink's tail was unmapped");
            // But a bad fixed target is EINVAL first, and an old length of
            // 0 is EFAULT there (the lookup comes before it).
            assert_eq!(r.cpu.mremap(hole, p, p, MOVE_FIXED, t.as_u64() + 1), Err(Errno::EINVAL), "unaligned target");
            assert_eq!(
                r.cpu.mremap(hole, 2 * p, 2 * p, MOVE_FIXED, hole + p),
                Err(Errno::EINVAL),
                "overlapping target"
            );
            assert_eq!(r.cpu.mremap(hole, 0, p, MAYMOVE, 0), Err(Errno::EFAULT), "old_len 0, unmapped");
            // A fixed move whose source spans two mappings fails before
            // it clears the target or drops the source's tail.
            assert_eq!(
                r.cpu.mremap(x + 6 * p, 4 * p, 8 * p, MOVE_FIXED, t.as_u64()),
                Err(Errno::EFAULT),
                "fixed grow over two"
            );
            assert_eq!(r.cpu.read_u8(t).unwrap(), 9, "a failed fixed move unmapped its target");
            assert_eq!(r.cpu.read_u8(a + 8 * PAGE).unwrap(), 0, "a failed fixed move dropped the tail");
            // But a fixed shrink whose tail spans two mappings succeeds:
            // `check_prep_vma` checks only the part that moves (Linux 6.18
            // moves [x+6P, x+7P) to t and unmaps [x+7P, x+10P); checked
            // with a C program, this test said EFAULT before).
            assert_eq!(r.cpu.mremap(x + 6 * p, 4 * p, p, MOVE_FIXED, t.as_u64()), Ok(t), "fixed shrink over two");
            assert_eq!(r.cpu.read_u8(t).unwrap(), 0, "the moved page");
            r.assert_read_segv(a + 6 * PAGE);
            r.assert_read_segv(a + 8 * PAGE);
            // Nothing else changed.
            r.cpu.write_u8(a, 1).unwrap();
            assert_eq!(r.cpu.read_u8(a + 5 * PAGE).unwrap(), 0);
            assert_eq!(r.cpu.read_u8(a + 10 * PAGE).unwrap(), 0);
            assert_eq!(r.cpu.read_u8(a + 14 * PAGE).unwrap(), 0);
            r.check();
        }
    }

    /// Linux looks up only the mapping at `addr` before it shrinks, not
    /// the whole old range, so a shrink or a same-size call over two
    /// mappings succeeds (and unmaps the tail).
    #[test]
    fn shrink_over_two_mappings_succeeds_as_on_linux() {
        let mut r = Rig::new();
        let a = r.map(16 * PAGE, Prot::RW);
        let (x, p) = (a.as_u64(), PAGE);
        r.cpu.mprotect(x + 8 * p, 8 * p, Prot::READ).unwrap();
        assert_eq!(r.cpu.mremap(x, 16 * p, 16 * p, NONE, 0), Ok(a), "same size over two mappings");
        assert_eq!(r.cpu.mremap(x, 16 * p, 4 * p, NONE, 0), Ok(a), "shrink over two mappings");
        r.assert_read_segv(a + 4 * PAGE);
        r.assert_read_segv(a + 12 * PAGE);
    }
}

mod after_a_move {
    use super::*;

    #[test]
    fn fork_and_cow_work_on_moved_pages() {
        for scheme in SCHEMES {
            let mut r = Rig::with_rmap(scheme);
            let blocker = r.map(PAGE, Prot::READ);
            let a = r.map(32 * PAGE, Prot::RW);
            assert_eq!(a + 32 * PAGE, blocker);
            pattern(&mut r, a, 32, 50);
            let b = r.cpu.mremap(a.as_u64(), 32 * PAGE, 40 * PAGE, MAYMOVE, 0).unwrap();
            // Fault in part of the grown tail after the move (its pages get
            // indexes from the moved VMA's pgoff).
            r.cpu.fill(b + 32 * PAGE, 4 * PAGE, 0x77).unwrap();
            let parent = r.proc.clone();
            let child = r.cpu.fork(&parent).unwrap();
            r.check();
            assert_eq!(child.rss().anon, 36, "{scheme:?}");
            r.cpu.switch_to(&child);
            for i in (0..36).step_by(3) {
                r.cpu.write_u8(b + i * PAGE, 0xcc).unwrap();
            }
            r.check();
            r.cpu.switch_to(&parent);
            assert_pattern(&mut r, b, 32, 50);
            assert_eq!(r.cpu.sum(b + 32 * PAGE, 4 * PAGE).unwrap(), 0x77 * 4 * PAGE);
            assert_eq!(r.machine.meminfo().anon, 36 + 12, "{scheme:?}: one copy per page the child wrote");
            if scheme != RmapScheme::None {
                let pfn = r.pfn_of(&parent, b + PAGE);
                assert_eq!(r.rmap_of(pfn), at(&[&parent, &child], b + PAGE), "{scheme:?}");
                let pfn = r.pfn_of(&parent, b + 34 * PAGE);
                assert_eq!(r.rmap_of(pfn), at(&[&parent, &child], b + 34 * PAGE), "{scheme:?}");
            }
            // The child moves its copy again; the parent is unaffected.
            r.cpu.switch_to(&child);
            let c = r.cpu.mremap(b.as_u64(), 40 * PAGE, 40 * PAGE, MOVE_FIXED, BASE + 3 * PAGE).unwrap();
            r.check();
            if scheme != RmapScheme::None {
                let pfn = r.pfn_of(&parent, b + PAGE);
                let mut want = vec![(parent.mm().id(), (b + PAGE).as_u64()), (child.mm().id(), (c + PAGE).as_u64())];
                want.sort_unstable();
                assert_eq!(r.rmap_of(pfn), want, "{scheme:?}");
            }
            r.cpu.write_u8(c + PAGE, 1).unwrap();
            r.cpu.switch_to(&parent);
            r.cpu.write_u8(b + 2 * PAGE, 1).unwrap();
            r.check();
            r.cpu.exit_process(child);
            r.check();
        }
    }
}

mod reviewed {
    //! Differences found by the 2026 system-call review, each checked with
    //! a C program on Linux 6.18 (/tmp/review_syscalls/t2.c, t3.c and a
    //! follow-up).
    use super::*;
    use oxmm::mm::MapFlags;

    const LOCKED: MapFlags = MapFlags(ANON.0 | MapFlags::LOCKED.0);

    fn resident(r: &mut Rig, a: u64, pages: u64) -> u64 {
        r.cpu.mincore_count(a, pages * PAGE).unwrap()
    }

    /// Linux's `check_mremap_params` checks only the new length against
    /// `TASK_SIZE`; an old range running past it is then judged by the VMA
    /// lookup and `check_prep_vma`: from a one-page mapping p,
    /// mremap(p, 1<<46, (1<<46)+4096, MAYMOVE) is EFAULT, from unmapped
    /// addresses (growing or shrinking) EFAULT, and mremap(p, 1<<46, 1<<46)
    /// returns p. A shrink whose dropped tail leaves the address space fails
    /// in the unmap of that tail (`do_vmi_munmap`): EINVAL, the mapping
    /// kept; for a fixed shrink only after the target was unmapped.
    /// Checked with a C program on Linux 6.18.
    #[test]
    fn old_range_past_task_size_is_efault_not_einval() {
        let mut r = Rig::new();
        let p = r.map(PAGE, Prot::RW).as_u64();
        r.cpu.write_u8(va(p), 3).unwrap();
        assert!(p + (1 << 46) > oxmm::mm::TASK_SIZE);
        assert_eq!(r.cpu.mremap(p, 1 << 46, (1 << 46) + PAGE, MAYMOVE, 0), Err(Errno::EFAULT), "grow");
        assert_eq!(
            r.cpu.mremap(0x3000_0000_0000, 1 << 46, (1 << 46) + PAGE, MAYMOVE, 0),
            Err(Errno::EFAULT),
            "grow, unmapped"
        );
        assert_eq!(r.cpu.mremap(0x7fff_0000_0000, 1 << 46, PAGE, NONE, 0), Err(Errno::EFAULT), "shrink, unmapped");
        assert_eq!(r.cpu.mremap(p, 1 << 46, 1 << 46, NONE, 0).map(|a| a.as_u64()), Ok(p), "same size");
        assert_eq!(r.cpu.mremap(p, 1 << 46, PAGE, NONE, 0), Err(Errno::EINVAL), "shrink");
        assert_eq!(r.cpu.mremap(p, 0u64.wrapping_sub(PAGE), PAGE, NONE, 0), Err(Errno::EINVAL), "shrink, -4096");
        let t = r.map(4 * PAGE, Prot::RW);
        r.cpu.write_u8(t, 9).unwrap();
        assert_eq!(r.cpu.mremap(p, 1 << 46, PAGE, MOVE_FIXED, t.as_u64()), Err(Errno::EINVAL), "fixed shrink");
        r.assert_read_segv(t);
        assert_eq!(r.cpu.read_u8(va(p)).unwrap(), 3, "the mapping is kept");
        r.check();
    }

    /// Linux populates the part a locked mapping grows by (6.18's
    /// `check_prep_vma` sets `populate_expand`, and `do_mremap` calls
    /// `mm_populate` on it): a MAP_LOCKED RW mapping of 4 pages grown in
    /// place to 8 has 8 resident, moved to 12 has 12; a MAP_LOCKED
    /// PROT_READ one grown to 8 has 8 (the zero page). Checked with a C
    /// program on Linux 6.18.
    #[test]
    fn growing_a_locked_mapping_populates_the_new_part() {
        let mut r = Rig::new();
        let lk = 0x2100_0000_0000u64;
        r.cpu.mmap(lk, 4 * PAGE, Prot::RW, LOCKED.union(MapFlags::FIXED)).unwrap();
        assert_eq!(r.cpu.mremap(lk, 4 * PAGE, 8 * PAGE, NONE, 0).unwrap().as_u64(), lk);
        assert_eq!(resident(&mut r, lk, 8), 8, "grown in place");
        assert_eq!(r.rss_anon(), 8, "written in: a private writable mapping");
        r.cpu.mmap(lk + 9 * PAGE, PAGE, Prot::READ, ANON.union(MapFlags::FIXED)).unwrap();
        let n = r.cpu.mremap(lk, 8 * PAGE, 12 * PAGE, MAYMOVE, 0).unwrap().as_u64();
        assert_ne!(n, lk);
        assert_eq!(resident(&mut r, n, 12), 12, "grown by a move");
        let lr = 0x2200_0000_0000u64;
        r.cpu.mmap(lr, 4 * PAGE, Prot::READ, LOCKED.union(MapFlags::FIXED)).unwrap();
        assert_eq!(r.cpu.mremap(lr, 4 * PAGE, 8 * PAGE, NONE, 0).unwrap().as_u64(), lr);
        assert_eq!(resident(&mut r, lr, 8), 8, "read-only, grown in place");
        assert_eq!(r.rss_anon(), 12, "read in through the zero page");
        r.check();
    }
}

/// An old length of 0 duplicates a shared mapping: a second mapping of the
/// same pages from the old address's offset, which outlives the first;
/// EINVAL for a private mapping, ENOMEM without MREMAP_MAYMOVE. The same
/// calls on this machine's Linux 6.18 give the same answers (a C program).
#[test]
fn a_zero_old_length_duplicates_a_shared_mapping() {
    let mut r = Rig::new();
    use oxmm::mm::MapFlags;
    let shared = MapFlags(MapFlags::SHARED.0 | MapFlags::ANONYMOUS.0);
    let s = r.cpu.mmap(0, 2 * PAGE, Prot::RW, shared).unwrap().as_u64();
    r.cpu.write_u8(va(s + PAGE), 9).unwrap();
    let d = r.cpu.mremap(s + PAGE, 0, PAGE, MAYMOVE, 0).expect("a duplicate").as_u64();
    assert_ne!(d, s + PAGE);
    assert_eq!(r.cpu.read_u8(va(d)).unwrap(), 9, "the second page, through the duplicate");
    r.cpu.write_u8(va(d + 1), 7).unwrap();
    assert_eq!(r.cpu.read_u8(va(s + PAGE + 1)).unwrap(), 7, "one object behind both");
    r.cpu.munmap(s, 2 * PAGE).unwrap();
    assert_eq!(r.cpu.read_u8(va(d)).unwrap(), 9, "the duplicate outlives the original");
    let p = r.map(PAGE, Prot::RW).as_u64();
    assert_eq!(r.cpu.mremap(p, 0, PAGE, MAYMOVE, 0), Err(Errno::EINVAL), "private");
    let s2 = r.cpu.mmap(0, PAGE, Prot::RW, shared).unwrap().as_u64();
    assert_eq!(r.cpu.mremap(s2, 0, PAGE, NONE, 0), Err(Errno::ENOMEM), "without MAYMOVE");
    r.cpu.munmap(d, PAGE).unwrap();
}
