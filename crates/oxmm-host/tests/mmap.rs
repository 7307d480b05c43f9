//! mmap's checks in Linux 6.18's order (`ksys_mmap_pgoff`, `do_mmap`,
//! `__get_unmapped_area`, `file_mmap_ok`, the sharing type, then the
//! accounting of `__mmap_region`), and its hint and sharing types. Every
//! expected answer is what this machine's kernel gave for the same call,
//! from C programs run while reviewing (2026-12-01).

mod common;

use std::sync::Arc;

use common::*;
use oxmm::errno::Errno;
use oxmm::mm::{MapFlags, Prot};
use oxmm::pagecache::PageCache;

const RO: Prot = Prot::READ;
const RW: Prot = Prot::RW;
const SHARED_ANON: MapFlags = MapFlags(MapFlags::SHARED.0 | MapFlags::ANONYMOUS.0);

/// A writable file of two zero pages.
fn file(rig: &Rig) -> Arc<PageCache> {
    rig.zero_file(2, true)
}

/// `__get_unmapped_area` checks a fixed address's range before its
/// alignment: Linux gives ENOMEM for `MAP_FIXED` (or
/// `MAP_FIXED_NOREPLACE`) at 0x7ffffffff001 with one page, and at
/// 0x7fffffffe001 with two.
#[test]
fn a_fixed_address_out_of_range_is_enomem_before_its_alignment() {
    let mut rig = Rig::new();
    for (addr, len, f) in [
        (0x7fff_ffff_f001, PAGE, MapFlags::FIXED),
        (0x7fff_ffff_f001, PAGE, MapFlags::FIXED_NOREPLACE),
        (0x7fff_ffff_e001, 2 * PAGE, MapFlags::FIXED),
    ] {
        assert_eq!(rig.cpu.mmap(addr, len, RO, ANON.union(f)), Err(Errno::ENOMEM), "{addr:#x} + {len:#x}, {f:?}");
    }
    assert_eq!(rig.cpu.mmap(0x7fff_0000_1001, PAGE, RO, ANON.union(MapFlags::FIXED)), Err(Errno::EINVAL));
}

/// The sharing type and `MAP_FIXED_NOREPLACE` are checked before the
/// overcommit charge: no type with more than all of memory (the rig has
/// 64 MiB) is EINVAL, and NOREPLACE over a mapping is EEXIST, where both
/// were ENOMEM.
#[test]
fn the_sharing_type_and_noreplace_come_before_overcommit() {
    let mut rig = Rig::new();
    let big = 256 << 20;
    assert_eq!(rig.cpu.mmap(0, big, RW, MapFlags::ANONYMOUS), Err(Errno::EINVAL));
    assert_eq!(rig.cpu.mmap(0, big, RW, ANON), Err(Errno::ENOMEM), "charged once the type is known");
    let p = rig.map_fixed(0x1000_0000, PAGE, RO).as_u64();
    assert_eq!(rig.cpu.mmap(p, big, RW, ANON.union(MapFlags::FIXED_NOREPLACE)), Err(Errno::EEXIST));
}

/// Shared anonymous memory is charged whatever its protection (shmem
/// accounts the object): read-only and larger than memory is ENOMEM, and
/// fine with MAP_NORESERVE.
#[test]
fn shared_anonymous_memory_larger_than_memory_is_enomem_even_read_only() {
    let mut rig = Rig::new();
    assert_eq!(rig.cpu.mmap(0, 1 << 30, RO, SHARED_ANON), Err(Errno::ENOMEM));
    let a = rig.cpu.mmap(0, 1 << 30, RO, SHARED_ANON.union(MapFlags::NORESERVE)).unwrap();
    rig.cpu.munmap(a.as_u64(), 1 << 30).unwrap();
}

/// `MAP_GROWSDOWN` is for private anonymous memory only: EINVAL for shared
/// anonymous memory and for a file.
#[test]
fn growsdown_is_einval_for_shared_and_file_mappings() {
    let mut rig = Rig::new();
    assert_eq!(rig.cpu.mmap(0, PAGE, RW, SHARED_ANON.union(MapFlags::GROWSDOWN)), Err(Errno::EINVAL));
    let a = rig.cpu.mmap(0, PAGE, RW, ANON.union(MapFlags::GROWSDOWN)).unwrap();
    rig.cpu.munmap(a.as_u64(), PAGE).unwrap();
    let c = file(&rig);
    assert_eq!(rig.cpu.mmap_file(0, PAGE, RO, MapFlags::PRIVATE.union(MapFlags::GROWSDOWN), &c, 0), Err(Errno::EINVAL));
}

/// `MAP_DROPPABLE` (a sharing type since 6.11) maps private anonymous
/// memory that a fork child does not get; it is EINVAL for a file, and
/// with MAP_LOCKED or MAP_GROWSDOWN.
#[test]
fn droppable_is_private_anonymous_memory_that_fork_does_not_copy() {
    let mut rig = Rig::new();
    let droppable = MapFlags(MapFlags::DROPPABLE.0 | MapFlags::ANONYMOUS.0);
    let a = rig.cpu.mmap(0, PAGE, RW, droppable).unwrap();
    rig.cpu.write_u8(a, 1).unwrap();
    let child = rig.cpu.fork(&rig.proc).unwrap();
    rig.cpu.switch_to(&child);
    assert_eq!(rig.cpu.read_u8(a).unwrap(), 0, "the child sees zeroes");
    let parent = rig.proc.clone();
    rig.cpu.switch_to(&parent);
    assert_eq!(rig.cpu.read_u8(a).unwrap(), 1);
    rig.cpu.exit_process(child);
    assert_eq!(rig.cpu.mmap(0, PAGE, RW, droppable.union(MapFlags::LOCKED)), Err(Errno::EINVAL));
    assert_eq!(rig.cpu.mmap(0, PAGE, RW, droppable.union(MapFlags::GROWSDOWN)), Err(Errno::EINVAL));
    let c = file(&rig);
    assert_eq!(rig.cpu.mmap_file(0, PAGE, RO, MapFlags::DROPPABLE, &c, 0), Err(Errno::EINVAL));
}

/// A hint is rounded down to a page (x86's `addr &= PAGE_MASK`), and one
/// below mmap_min_addr raised to it (`round_hint_to_min`).
#[test]
fn a_hint_is_rounded_down_and_raised_to_mmap_min_addr() {
    let mut rig = Rig::new();
    let h = rig.map(4 * PAGE, RO).as_u64();
    rig.cpu.munmap(h, 4 * PAGE).unwrap();
    for hint in [h + 1, h + PAGE - 1] {
        let a = rig.cpu.mmap(hint, PAGE, RO, ANON).unwrap().as_u64();
        assert_eq!(a, h, "hint {hint:#x}");
        rig.cpu.munmap(a, PAGE).unwrap();
    }
    assert_eq!(rig.cpu.mmap(0x2000, PAGE, RO, ANON).unwrap().as_u64(), 0x10000);
}

/// A file offset whose mapping would end past the largest file offset is
/// EOVERFLOW, in `do_mmap` (the page offset wraps) or in `file_mmap_ok`.
#[test]
fn a_file_offset_past_the_largest_file_is_eoverflow() {
    let mut rig = Rig::new();
    let c = file(&rig);
    for offset in [0x7fff_ffff_ffff_f000, 0xffff_ffff_ffff_f000, 0x8000_0000_0000_0000] {
        assert_eq!(rig.cpu.mmap_file(0, PAGE, RO, MapFlags::PRIVATE, &c, offset), Err(Errno::EOVERFLOW), "{offset:#x}");
    }
    assert_eq!(Errno::from_raw(75), Some(Errno::EOVERFLOW));
    let a = rig.cpu.mmap_file(0, PAGE, RO, MapFlags::PRIVATE, &c, 0x7fff_ffff_fff0_0000).unwrap();
    rig.cpu.munmap(a.as_u64(), PAGE).unwrap();
}

/// `MAP_SHARED_VALIDATE` accepts Linux's `LEGACY_MAP_MASK`: MAP_SYNC (not a
/// DAX file) and MAP_FIXED_NOREPLACE are EOPNOTSUPP, MAP_UNINITIALIZED is
/// accepted.
#[test]
fn shared_validate_accepts_the_legacy_flags_only() {
    let mut rig = Rig::new();
    let c = file(&rig);
    let sv = MapFlags::SHARED_VALIDATE;
    assert_eq!(rig.cpu.mmap_file(0, PAGE, RO, sv.union(MapFlags::SYNC), &c, 0), Err(Errno::EOPNOTSUPP));
    let h = rig.map(PAGE, RO).as_u64();
    rig.cpu.munmap(h, PAGE).unwrap();
    assert_eq!(rig.cpu.mmap_file(h, PAGE, RO, sv.union(MapFlags::FIXED_NOREPLACE), &c, 0), Err(Errno::EOPNOTSUPP));
    let a = rig.cpu.mmap_file(0, PAGE, RO, sv.union(MapFlags::UNINITIALIZED), &c, 0).unwrap();
    rig.cpu.munmap(a.as_u64(), PAGE).unwrap();
}

/// `MAP_HUGETLB` with no huge pages configured: the sharing type and a
/// fixed address's 2 MiB alignment are checked first (EINVAL), then the
/// reservation fails (ENOMEM); a file that is not hugetlbfs is EINVAL.
#[test]
fn hugetlb_checks_its_type_and_alignment_before_failing_its_reservation() {
    let mut rig = Rig::new();
    let hugetlb = ANON.union(MapFlags::HUGETLB);
    assert_eq!(rig.cpu.mmap(0, 2 << 20, RW, MapFlags(MapFlags::ANONYMOUS.0 | MapFlags::HUGETLB.0)), Err(Errno::EINVAL));
    assert_eq!(rig.cpu.mmap(0x7f00_0000_1000, 2 << 20, RW, hugetlb.union(MapFlags::FIXED)), Err(Errno::EINVAL));
    assert_eq!(rig.cpu.mmap(0, 2 << 20, RW, hugetlb), Err(Errno::ENOMEM));
    let c = file(&rig);
    assert_eq!(rig.cpu.mmap_file(0, PAGE, RO, MapFlags::PRIVATE.union(MapFlags::HUGETLB), &c, 0), Err(Errno::EINVAL));
}

/// `brk` shrinks only over a mapping (`vma_find(newbrk, oldbrk)`): with the
/// heap unmapped, the break stays where it was, and growing works again.
#[test]
fn brk_does_not_shrink_over_an_unmapped_heap() {
    let mut rig = Rig::new();
    let b = rig.cpu.brk(0).unwrap();
    assert_eq!(rig.cpu.brk(b + 4 * PAGE).unwrap(), b + 4 * PAGE);
    rig.cpu.munmap(b, 4 * PAGE).unwrap();
    assert_eq!(rig.cpu.brk(b).unwrap(), b + 4 * PAGE, "refused");
    assert_eq!(rig.cpu.brk(b + 8 * PAGE).unwrap(), b + 8 * PAGE);
    rig.cpu.write_u8(va(b + 7 * PAGE), 1).unwrap();
}

/// A fault below a `MAP_GROWSDOWN` mapping grows it down to the faulting
/// page (Linux's `expand_downwards`), up to the stack limit (8 MiB in all)
/// and not to within the 256-page guard gap of an accessible mapping below
/// (a PROT_NONE one does not count). This machine's Linux 6.18 gives the
/// same answers for the same addresses (a C program).
#[test]
fn a_growsdown_mapping_grows_on_a_fault_below_it() {
    let mut rig = Rig::new();
    let gd = 0x2000_0000_0000u64;
    let growsdown = ANON.union(MapFlags::GROWSDOWN).union(MapFlags::FIXED);
    rig.cpu.mmap(gd, PAGE, RW, growsdown).unwrap();
    let faults = rig.stat("pgfault");
    rig.cpu.write_u8(va(gd - PAGE), 1).expect("one page below");
    assert_eq!(rig.stat("pgfault") - faults, 1, "one fault, counted once");
    rig.cpu.write_u8(va(gd - 64 * PAGE), 2).expect("64 pages below");
    assert_eq!(rig.cpu.read_u8(va(gd - 66 * PAGE)).unwrap(), 0, "a read grows it too");
    rig.assert_write_segv(va(gd - (9 << 20)));
    rig.cpu.write_u8(va(gd - (8 << 20) + 2 * PAGE), 3).expect("within 8 MiB in all");
    assert_eq!(rig.cpu.read_u8(va(gd - PAGE)).unwrap(), 1, "the pages already there stay");
    assert_eq!(rig.cpu.read_u8(va(gd - 64 * PAGE)).unwrap(), 2);
    // One mapping from the lowest page touched to the top.
    assert_eq!(rig.cpu.mincore(gd - (8 << 20) + 2 * PAGE, (8 << 20) - PAGE).map(|v| v.len()), Ok(2047));

    let gd2 = 0x3000_0000_0000u64;
    rig.cpu.mmap(gd2, PAGE, RW, growsdown).unwrap();
    let other = rig.cpu.mmap(gd2 - 300 * PAGE, PAGE, RO, ANON.union(MapFlags::FIXED)).unwrap().as_u64();
    rig.cpu.write_u8(va(gd2 - 40 * PAGE), 1).expect("259 pages above the mapping below");
    rig.assert_write_segv(va(gd2 - 50 * PAGE));
    rig.cpu.mprotect(other, PAGE, Prot::NONE).unwrap();
    rig.cpu.write_u8(va(gd2 - 50 * PAGE), 1).expect("a PROT_NONE mapping below leaves no gap to keep");
    // An ordinary mapping does not grow.
    let plain = rig.map_fixed(0x4000_0000_0000, PAGE, RW).as_u64();
    rig.assert_write_segv(va(plain - PAGE));
}

/// `MAP_DROPPABLE` memory is never charged (Linux sets VM_NORESERVE): four
/// times the machine's memory maps, where private memory is ENOMEM; and
/// MADV_KEEPONFORK and MADV_DODUMP refuse it, so fork never copies it.
/// (Review; C programs on this machine's kernel.)
#[test]
fn droppable_memory_is_never_charged_and_stays_wiped_on_fork() {
    use oxmm::mm::Advice;
    let mut rig = Rig::new();
    let big = rig.machine.sys().phys.total_frames() * 4 * PAGE;
    let droppable = MapFlags(MapFlags::DROPPABLE.0 | MapFlags::ANONYMOUS.0);
    assert_eq!(rig.cpu.mmap(0, big, RW, ANON).map(|_| ()), Err(Errno::ENOMEM), "private is charged");
    let huge = rig.cpu.mmap(0, big, RW, droppable).expect("droppable is not").as_u64();
    rig.cpu.munmap(huge, big).unwrap();
    let a = rig.cpu.mmap(0, PAGE, RW, droppable).unwrap();
    rig.cpu.write_u8(a, 1).unwrap();
    assert_eq!(rig.cpu.madvise(a.as_u64(), PAGE, Advice::KeepOnFork as u32), Err(Errno::EINVAL));
    assert_eq!(rig.cpu.madvise(a.as_u64(), PAGE, Advice::DoDump as u32), Err(Errno::EINVAL));
    let child = rig.cpu.fork(&rig.proc).unwrap();
    rig.cpu.switch_to(&child);
    assert_eq!(rig.cpu.read_u8(a).unwrap(), 0, "the child never sees droppable memory");
    let parent = rig.proc.clone();
    rig.cpu.switch_to(&parent);
    rig.cpu.exit_process(child);
}

/// `MAP_HUGETLB` rounds its length to 2 MiB with a wrapping `ALIGN`
/// (`ksys_mmap_pgoff`), so a length that wraps to 0 is EINVAL; and its
/// `get_unmapped_area` refuses a misaligned fixed address (EINVAL) before
/// the range is checked (ENOMEM without MAP_HUGETLB). (Review; C programs.)
#[test]
fn hugetlb_rounds_its_length_and_checks_a_fixed_address_first() {
    let mut rig = Rig::new();
    let hugetlb = ANON.union(MapFlags::HUGETLB);
    for len in [u64::MAX, u64::MAX - 4095, 0u64.wrapping_sub(2 << 20) + 1] {
        assert_eq!(rig.cpu.mmap(0, len, RO, hugetlb), Err(Errno::EINVAL), "len {len:#x}");
    }
    let top = oxmm::mm::TASK_SIZE - PAGE;
    let fixed = ANON.union(MapFlags::FIXED);
    assert_eq!(rig.cpu.mmap(top, 2 << 20, RO, fixed).map(|_| ()), Err(Errno::ENOMEM));
    assert_eq!(rig.cpu.mmap(top, 2 << 20, RO, fixed.union(MapFlags::HUGETLB)).map(|_| ()), Err(Errno::EINVAL));
}
