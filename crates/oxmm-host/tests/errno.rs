//! The errno table of mmap/munmap/mprotect/madvise/mincore/brk.
//!
//! Every expectation here was checked on the real kernel (Linux 6.18 on
//! this machine, x86-64) with a C program calling the same syscall with the
//! same arguments (/tmp/oxc/errno.c); the kernel's answer is quoted next to
//! each case. Where oxmm differs, the test is `#[ignore = "BUG: ..."]`.

mod common;

use common::*;
use oxmm::errno::Errno;
use oxmm::mm::{MapFlags, Prot};

const RO: Prot = Prot::READ;

fn flags(bits: u32) -> MapFlags {
    MapFlags(bits)
}

// ---- mmap -------------------------------------------------------------------

#[test]
fn mmap_zero_length_is_einval() {
    // kernel: mmap(NULL, 0, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS) -> EINVAL
    let mut rig = Rig::new();
    assert_eq!(rig.cpu.mmap(0, 0, RO, ANON), Err(Errno::EINVAL));
    // kernel: with no sharing type either -> EINVAL (the length check is first)
    assert_eq!(rig.cpu.mmap(0, 0, RO, MapFlags::ANONYMOUS), Err(Errno::EINVAL));
}

#[test]
fn mmap_without_private_or_shared_is_einval() {
    let mut rig = Rig::new();
    // kernel: MAP_ANONYMOUS alone -> EINVAL
    assert_eq!(rig.cpu.mmap(0, PAGE, RO, MapFlags::ANONYMOUS), Err(Errno::EINVAL));
    // kernel: sharing type 0x0f -> EINVAL
    assert_eq!(rig.cpu.mmap(0, PAGE, RO, flags(0x20 | 0x0f)), Err(Errno::EINVAL));
    // kernel: no type, MAP_FIXED at an unaligned address -> EINVAL
    let p = rig.map(PAGE, RO);
    assert_eq!(rig.cpu.mmap(p.as_u64() + 1, PAGE, RO, MapFlags::ANONYMOUS.union(MapFlags::FIXED)), Err(Errno::EINVAL));
}

#[test]

fn mmap_sharing_type_is_checked_after_length_and_noreplace() {
    let mut rig = Rig::new();
    // kernel: MAP_ANONYMOUS (no type), len 1<<62 -> ENOMEM
    assert_eq!(rig.cpu.mmap(0, 1 << 62, RO, MapFlags::ANONYMOUS), Err(Errno::ENOMEM));
    // kernel: MAP_ANONYMOUS|MAP_FIXED_NOREPLACE (no type) over a mapping -> EEXIST
    let p = rig.map(PAGE, RO);
    assert_eq!(
        rig.cpu.mmap(p.as_u64(), PAGE, RO, MapFlags::ANONYMOUS.union(MapFlags::FIXED_NOREPLACE)),
        Err(Errno::EEXIST)
    );
}

#[test]

fn mmap_anonymous_shared_validate_is_einval() {
    let mut rig = Rig::new();
    // kernel: MAP_ANONYMOUS|MAP_SHARED_VALIDATE -> EINVAL
    assert_eq!(rig.cpu.mmap(0, PAGE, RO, flags(0x20 | 0x03)), Err(Errno::EINVAL));
    // kernel: MAP_ANONYMOUS|MAP_SHARED_VALIDATE|0x400 (unknown flag) -> EINVAL
    assert_eq!(rig.cpu.mmap(0, PAGE, RO, flags(0x20 | 0x03 | 0x400)), Err(Errno::EINVAL));
}

#[test]
fn mmap_unknown_flag_bits_are_ignored_for_private() {
    // kernel: MAP_PRIVATE|MAP_ANONYMOUS|0x400 -> success
    let mut rig = Rig::new();
    let p = rig.cpu.mmap(0, PAGE, Prot::RW, flags(0x22 | 0x400)).unwrap();
    rig.cpu.write_u8(p, 1).unwrap();
}

#[test]
fn mmap_without_anonymous_is_ebadf() {
    // kernel: mmap(..., MAP_PRIVATE, fd -1, 0) -> EBADF
    let mut rig = Rig::new();
    assert_eq!(rig.cpu.mmap(0, PAGE, RO, MapFlags::PRIVATE), Err(Errno::EBADF));
}

#[test]
fn mmap_fixed_unaligned_is_einval() {
    let mut rig = Rig::new();
    let p = rig.map(4 * PAGE, RO).as_u64();
    // kernel: MAP_FIXED at base+1 -> EINVAL
    assert_eq!(rig.cpu.mmap(p + 1, PAGE, RO, ANON.union(MapFlags::FIXED)), Err(Errno::EINVAL));
    // kernel: MAP_FIXED_NOREPLACE at base+1 -> EINVAL
    assert_eq!(rig.cpu.mmap(p + 1, PAGE, RO, ANON.union(MapFlags::FIXED_NOREPLACE)), Err(Errno::EINVAL));
}

#[test]
fn mmap_fixed_noreplace_over_existing_is_eexist() {
    let mut rig = Rig::new();
    let p = rig.map(4 * PAGE, Prot::RW);
    rig.cpu.write_u8(p + 3 * PAGE, 9).unwrap();
    // kernel: exactly over an existing page -> EEXIST
    assert_eq!(rig.cpu.mmap(p.as_u64(), PAGE, RO, ANON.union(MapFlags::FIXED_NOREPLACE)), Err(Errno::EEXIST));
    // kernel: overlapping only the last page -> EEXIST
    assert_eq!(
        rig.cpu.mmap(p.as_u64() + 3 * PAGE, 2 * PAGE, RO, ANON.union(MapFlags::FIXED_NOREPLACE)),
        Err(Errno::EEXIST)
    );
    assert_eq!(rig.cpu.read_u8(p + 3 * PAGE).unwrap(), 9, "the failed call changed nothing");
    // Into a hole it succeeds at exactly that address.
    rig.cpu.munmap(p.as_u64() + PAGE, PAGE).unwrap();
    assert_eq!(rig.cpu.mmap(p.as_u64() + PAGE, PAGE, Prot::RW, ANON.union(MapFlags::FIXED_NOREPLACE)), Ok(p + PAGE));
}

#[test]
fn mmap_huge_length_is_enomem() {
    let mut rig = Rig::new();
    // kernel: len 1<<62 -> ENOMEM; len UINT64_MAX -> ENOMEM; len 1<<47 -> ENOMEM
    assert_eq!(rig.cpu.mmap(0, 1 << 62, RO, ANON), Err(Errno::ENOMEM));
    assert_eq!(rig.cpu.mmap(0, u64::MAX, RO, ANON), Err(Errno::ENOMEM));
    assert_eq!(rig.cpu.mmap(0, 1 << 47, RO, ANON), Err(Errno::ENOMEM));
    // kernel: MAP_FIXED at 0x7ffffffff000 for 2 pages (past TASK_SIZE) -> ENOMEM
    assert_eq!(rig.cpu.mmap(0x7fff_ffff_f000, 2 * PAGE, RO, ANON.union(MapFlags::FIXED)), Err(Errno::ENOMEM));
}

#[test]

fn mmap_unknown_prot_bits_grant_no_access() {
    // kernel: mmap(NULL, 4096, 0x10, MAP_PRIVATE|MAP_ANONYMOUS) succeeds and
    // a read of it is SIGSEGV; the same for prot = PROT_SEM (0x8); and
    // prot = PROT_READ|0x10 reads but a write is SIGSEGV.
    let mut rig = Rig::new();
    let a = rig.cpu.mmap(0, PAGE, Prot(0x10), ANON).expect("kernel accepts unknown prot bits in mmap");
    rig.assert_read_segv(a);
    let b = rig.cpu.mmap(0, PAGE, Prot(0x8), ANON).expect("kernel accepts PROT_SEM");
    rig.assert_read_segv(b);
    let c = rig.cpu.mmap(0, PAGE, Prot(0x11), ANON).unwrap();
    assert_eq!(rig.cpu.read_u8(c).unwrap(), 0);
    rig.assert_write_segv(c);
}

// ---- munmap -----------------------------------------------------------------

#[test]
fn munmap_errors() {
    let mut rig = Rig::new();
    let p = rig.map(4 * PAGE, Prot::RW).as_u64();
    // kernel: unaligned -> EINVAL
    assert_eq!(rig.cpu.munmap(p + 1, PAGE), Err(Errno::EINVAL));
    // kernel: len 0 -> EINVAL
    assert_eq!(rig.cpu.munmap(p, 0), Err(Errno::EINVAL));
    // kernel: 0x7ffffffff000 + 4 pages (past TASK_SIZE) -> EINVAL
    assert_eq!(rig.cpu.munmap(0x7fff_ffff_f000, 4 * PAGE), Err(Errno::EINVAL));
    // kernel: len UINT64_MAX -> EINVAL
    assert_eq!(rig.cpu.munmap(p, u64::MAX), Err(Errno::EINVAL));
    // kernel: a range with nothing mapped -> success
    rig.cpu.munmap(p, 4 * PAGE).unwrap();
    assert_eq!(rig.cpu.munmap(p, 4 * PAGE), Ok(()));
}

// ---- mprotect ---------------------------------------------------------------

#[test]
fn mprotect_errors() {
    let mut rig = Rig::new();
    let p = rig.map(4 * PAGE, Prot::RW).as_u64();
    let hole = rig.map(PAGE, RO).as_u64();
    rig.cpu.munmap(hole, PAGE).unwrap();
    // kernel: unaligned -> EINVAL
    assert_eq!(rig.cpu.mprotect(p + 1, PAGE, RO), Err(Errno::EINVAL));
    // kernel: len 0 -> 0, even with bad prot bits (length checked first)
    assert_eq!(rig.cpu.mprotect(p, 0, RO), Ok(()));
    assert_eq!(rig.cpu.mprotect(p, 0, Prot(0x10)), Ok(()));
    // kernel: prot 0x10 -> EINVAL
    assert_eq!(rig.cpu.mprotect(p, PAGE, Prot(0x10)), Err(Errno::EINVAL));
    // kernel: PROT_SEM (0x8) is accepted
    assert_eq!(rig.cpu.mprotect(p, PAGE, Prot(0x3 | 0x8)), Ok(()));
    // kernel: unmapped -> ENOMEM; unmapped with bad prot -> EINVAL (prot first)
    assert_eq!(rig.cpu.mprotect(hole, PAGE, RO), Err(Errno::ENOMEM));
    assert_eq!(rig.cpu.mprotect(hole, PAGE, Prot(0x10)), Err(Errno::EINVAL));
    // kernel: len UINT64_MAX (wraps) -> ENOMEM
    assert_eq!(rig.cpu.mprotect(p, u64::MAX, RO), Err(Errno::ENOMEM));
    // Nothing changed by the failures: the mapping is still writable.
    rig.cpu.fill(va(p), 4 * PAGE, 1).unwrap();
}

// ---- madvise ----------------------------------------------------------------

const MADV_NORMAL: u32 = 0;
const MADV_WILLNEED: u32 = 3;
const MADV_DONTNEED: u32 = 4;

#[test]
fn madvise_errors() {
    let mut rig = Rig::new();
    let p = rig.map(4 * PAGE, Prot::RW).as_u64();
    let hole = rig.map(PAGE, RO).as_u64();
    rig.cpu.munmap(hole, PAGE).unwrap();
    // kernel: advice 999 -> EINVAL; advice 5 -> EINVAL; 999 with len 0 -> EINVAL
    assert_eq!(rig.cpu.madvise(p, PAGE, 999), Err(Errno::EINVAL));
    assert_eq!(rig.cpu.madvise(p, PAGE, 5), Err(Errno::EINVAL));
    assert_eq!(rig.cpu.madvise(p, 0, 999), Err(Errno::EINVAL));
    // kernel: unaligned -> EINVAL
    assert_eq!(rig.cpu.madvise(p + 1, PAGE, MADV_DONTNEED), Err(Errno::EINVAL));
    // kernel: len 0 -> 0, also over a hole
    assert_eq!(rig.cpu.madvise(p, 0, MADV_DONTNEED), Ok(()));
    assert_eq!(rig.cpu.madvise(hole, 0, MADV_DONTNEED), Ok(()));
    // kernel: unmapped -> ENOMEM for DONTNEED, NORMAL and WILLNEED
    assert_eq!(rig.cpu.madvise(hole, PAGE, MADV_DONTNEED), Err(Errno::ENOMEM));
    assert_eq!(rig.cpu.madvise(hole, PAGE, MADV_NORMAL), Err(Errno::ENOMEM));
    assert_eq!(rig.cpu.madvise(hole, PAGE, MADV_WILLNEED), Err(Errno::ENOMEM));
    // kernel: len UINT64_MAX -> EINVAL
    assert_eq!(rig.cpu.madvise(p, u64::MAX, MADV_NORMAL), Err(Errno::EINVAL));
    // kernel: MADV_REMOVE (9) on private anonymous memory -> EINVAL, also
    // when the range starts in a hole; over nothing but a hole -> ENOMEM
    assert_eq!(rig.cpu.madvise(p, PAGE, 9), Err(Errno::EINVAL));
    assert_eq!(rig.cpu.madvise(hole, PAGE, 9), Err(Errno::ENOMEM));
}

#[test]
fn madvise_remove_on_shared_anonymous_memory() {
    // kernel: MADV_REMOVE on locked shared anonymous memory -> EINVAL; on
    // shared anonymous memory -> 0 and the pages read zero. oxmm cannot
    // punch holes yet and says EOPNOTSUPP, changing nothing.
    let mut rig = Rig::new();
    let shared = MapFlags::SHARED.union(MapFlags::ANONYMOUS);
    let l = rig.cpu.mmap(0, 4 * PAGE, Prot::RW, shared.union(MapFlags::LOCKED)).unwrap();
    assert_eq!(rig.cpu.madvise(l.as_u64(), 4 * PAGE, 9), Err(Errno::EINVAL));
    let s = rig.cpu.mmap(0, 4 * PAGE, Prot::RW, shared).unwrap();
    rig.cpu.write_u8(s, 1).unwrap();
    assert_eq!(rig.cpu.madvise(s.as_u64(), 4 * PAGE, 9), Err(Errno::EOPNOTSUPP));
    assert_eq!(rig.cpu.read_u8(s).unwrap(), 1);
}

#[test]
fn madvise_dontneed_on_locked_mapping_is_einval() {
    // kernel: MAP_LOCKED mapping, MADV_DONTNEED -> EINVAL, data kept
    let mut rig = Rig::new();
    let p = rig.cpu.mmap(0, 4 * PAGE, Prot::RW, ANON.union(MapFlags::LOCKED)).unwrap();
    rig.cpu.write_u8(p, 1).unwrap();
    assert_eq!(rig.cpu.madvise(p.as_u64(), 4 * PAGE, MADV_DONTNEED), Err(Errno::EINVAL));
    assert_eq!(rig.cpu.read_u8(p).unwrap(), 1);
}

#[test]

fn madvise_known_linux_advice_is_accepted() {
    // kernel: on a private anonymous page, advice 10, 17 and 22 -> 0
    let mut rig = Rig::new();
    let p = rig.map(PAGE, Prot::RW).as_u64();
    assert_eq!(rig.cpu.madvise(p, PAGE, 10), Ok(()), "MADV_DONTFORK");
    assert_eq!(rig.cpu.madvise(p, PAGE, 17), Ok(()), "MADV_DODUMP");
    assert_eq!(rig.cpu.madvise(p, PAGE, 22), Ok(()), "MADV_POPULATE_READ");
}

// ---- mincore ----------------------------------------------------------------

#[test]
fn mincore_errors() {
    let mut rig = Rig::new();
    let p = rig.map(4 * PAGE, Prot::RW).as_u64();
    rig.cpu.munmap(p + 2 * PAGE, PAGE).unwrap();
    // kernel: unaligned -> EINVAL
    assert_eq!(rig.cpu.mincore(p + 1, PAGE), Err(Errno::EINVAL));
    // kernel: a page in a hole -> ENOMEM; a range over a hole -> ENOMEM
    assert_eq!(rig.cpu.mincore(p + 2 * PAGE, PAGE), Err(Errno::ENOMEM));
    assert_eq!(rig.cpu.mincore(p, 4 * PAGE), Err(Errno::ENOMEM));
    // kernel: len 0 -> 0, also in a hole
    assert_eq!(rig.cpu.mincore(p, 0), Ok(vec![]));
    assert_eq!(rig.cpu.mincore(p + 2 * PAGE, 0), Ok(vec![]));
    // An unaligned length covers its last partial page.
    assert_eq!(rig.cpu.mincore(p, PAGE + 1), Ok(vec![0, 0]));
}

// ---- brk --------------------------------------------------------------------

#[test]
fn brk_below_start_returns_the_old_break() {
    // kernel: brk(1) returns the current break unchanged (as does brk(0))
    let mut rig = Rig::new();
    let b0 = rig.cpu.brk(0).unwrap();
    assert_eq!(rig.cpu.brk(1).unwrap(), b0);
    assert_eq!(rig.cpu.brk(0).unwrap(), b0);
    assert_eq!(rig.cpu.brk(b0 - PAGE).unwrap(), b0);
}

#[test]
fn brk_grows_and_shrinks_and_the_heap_is_usable() {
    // kernel: brk(b0 + 3 pages + 5) returns exactly that value and the 3
    // pages + 5 bytes are writable; brk(b0 + 1 page) returns exactly that.
    let mut rig = Rig::new();
    let b0 = rig.cpu.brk(0).unwrap();
    assert_eq!(b0 % PAGE, 0);
    rig.assert_read_segv(va(b0));
    let b1 = rig.cpu.brk(b0 + 3 * PAGE + 5).unwrap();
    assert_eq!(b1, b0 + 3 * PAGE + 5);
    rig.cpu.fill(va(b0), 3 * PAGE + 5, 0xab).unwrap();
    // The last page is mapped whole (the break rounds up to a page).
    assert_eq!(rig.cpu.read_u8(va(b0 + 4 * PAGE - 1)).unwrap(), 0);
    rig.assert_read_segv(va(b0 + 4 * PAGE));
    assert_eq!(rig.rss_anon(), 4);
    // Shrink.
    assert_eq!(rig.cpu.brk(b0 + PAGE).unwrap(), b0 + PAGE);
    assert_eq!(rig.cpu.brk(0).unwrap(), b0 + PAGE);
    assert_eq!(rig.cpu.sum(va(b0), PAGE).unwrap(), 0xab * PAGE);
    rig.assert_read_segv(va(b0 + PAGE));
    assert_eq!(rig.rss_anon(), 1, "the shrunk pages were freed");
    // Grow again: the new part is zero.
    assert_eq!(rig.cpu.brk(b0 + 2 * PAGE).unwrap(), b0 + 2 * PAGE);
    assert_eq!(rig.cpu.sum(va(b0 + PAGE), PAGE).unwrap(), 0);
}

#[test]
fn brk_does_not_grow_into_a_mapping() {
    // kernel: with a page mapped at b0+4P, brk(b0+8P) returns b0 (refused),
    // brk(b0+2P) and brk(b0+3P) succeed (/tmp/oxc/misc.c); brk(b0+4P) is
    // refused by the same rule (newbrk + one guard page must not pass the
    // next mapping's start).
    let mut rig = Rig::new();
    let b0 = rig.cpu.brk(0).unwrap();
    let m = rig.cpu.mmap(b0 + 4 * PAGE, PAGE, Prot::RW, ANON.union(MapFlags::FIXED)).unwrap();
    rig.cpu.write_u8(m, 3).unwrap();
    assert_eq!(rig.cpu.brk(b0 + 8 * PAGE).unwrap(), b0, "refused: returns the old break");
    assert_eq!(rig.cpu.read_u8(m).unwrap(), 3);
    assert_eq!(rig.cpu.brk(b0 + 2 * PAGE).unwrap(), b0 + 2 * PAGE);
    // Up to one page below the mapping is allowed; touching it is not.
    assert_eq!(rig.cpu.brk(b0 + 3 * PAGE).unwrap(), b0 + 3 * PAGE);
    assert_eq!(rig.cpu.brk(b0 + 4 * PAGE).unwrap(), b0 + 3 * PAGE);
}

mod reviewed_syscalls_b {
    //! msync and mincore differences found by the 2026 system-call review,
    //! each checked with a C program on Linux 6.18
    //! (/tmp/review_syscalls/t2.c and t4.c).
    use super::*;

    const MS_SYNC: u32 = oxmm::mm::msync::MS_SYNC;

    /// Linux's msync rounds the length with `len = (len + ~PAGE_MASK) &
    /// PAGE_MASK` in wrapping arithmetic: msync(p, (size_t)-1, MS_SYNC)
    /// and msync(p, -4095, MS_SYNC) round to 0 and return 0 (`end ==
    /// start`); msync(p, -4096) is ENOMEM (the end wraps below the start);
    /// bad flags or an unaligned address are still EINVAL first. Checked
    /// with a C program on Linux 6.18.
    #[test]
    fn msync_length_that_rounds_to_zero_succeeds() {
        let mut rig = Rig::new();
        let p = rig.map(PAGE, Prot::RW).as_u64();
        assert_eq!(rig.cpu.msync(p, u64::MAX, MS_SYNC), Ok(()), "len -1");
        assert_eq!(rig.cpu.msync(p, u64::MAX - 4094, MS_SYNC), Ok(()), "len -4095");
        assert_eq!(rig.cpu.msync(p, u64::MAX - 4095, MS_SYNC), Err(Errno::ENOMEM), "len -4096");
        assert_eq!(rig.cpu.msync(p, u64::MAX, 8), Err(Errno::EINVAL), "len -1, flags 8");
        assert_eq!(rig.cpu.msync(p + 1, u64::MAX, MS_SYNC), Err(Errno::EINVAL), "unaligned, len -1");
    }

    /// Linux's mincore checks the address's alignment (EINVAL), then the
    /// range (`access_ok`: ENOMEM), before it looks at the result vector:
    /// mincore(p+1, 1<<50) and mincore(p+1, -1) are EINVAL, mincore(p, -1)
    /// is ENOMEM. Checked with a C program on Linux 6.18.
    #[test]
    fn mincore_unaligned_address_is_einval_whatever_the_length() {
        let mut rig = Rig::new();
        let p = rig.map(PAGE, RO).as_u64();
        assert_eq!(rig.cpu.mincore(p + 1, 1 << 50), Err(Errno::EINVAL), "mincore(p+1, 1<<50)");
        assert_eq!(rig.cpu.mincore(p + 1, u64::MAX), Err(Errno::EINVAL), "mincore(p+1, -1)");
        assert_eq!(rig.cpu.mincore(p, u64::MAX), Err(Errno::ENOMEM), "mincore(p, -1)");
        assert_eq!(rig.cpu.mincore(p, 1 << 50), Err(Errno::ENOMEM), "mincore(p, 1<<50)");
    }
}
