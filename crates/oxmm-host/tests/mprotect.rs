//! mprotect: permissions removed and restored, PROT_NONE, VMA splits, holes.
//!
//! Checked on the real kernel (Linux 6.18, /tmp/oxc/sem.c and addr.c):
//! - RW -> R: a write is SIGSEGV with `si_addr` the exact byte written, the
//!   data is kept and reads work;
//! - PROT_NONE keeps the pages in `RssAnon` (delta unchanged at 4 after
//!   protecting 4 written pages), `mincore` reports them resident, a read is
//!   SIGSEGV at the exact address, and RW again gives the data back;
//! - mprotect(R) of pages 2..4 of a 6-page mapping: writes to pages 2 and 3
//!   fault, pages 0, 1, 4, 5 stay writable;
//! - mprotect over [A: 2 pages][hole][B: 2 pages] -> ENOMEM, A changed, B
//!   not; starting in the hole -> ENOMEM and nothing changed.

mod common;

use common::*;
use oxmm::errno::Errno;
use oxmm::mm::Prot;

#[test]
fn read_only_refuses_writes_at_the_exact_address_and_keeps_data() {
    let mut rig = Rig::new();
    let p = rig.map(4 * PAGE, Prot::RW);
    rig.cpu.fill(p, 4 * PAGE, 5).unwrap();
    let flushes = rig.stat("nr_tlb_flush");
    rig.cpu.mprotect(p.as_u64(), 4 * PAGE, Prot::READ).unwrap();
    assert!(rig.stat("nr_tlb_flush") > flushes, "removing write permission flushed the TLB");
    // The TLB held writable entries for these pages: they must be gone.
    rig.assert_write_segv(p + (2 * PAGE + 17));
    rig.assert_write_segv(p);
    assert_eq!(rig.cpu.read_u8(p + (2 * PAGE + 17)).unwrap(), 5, "the failed write changed nothing");
    assert_eq!(rig.cpu.sum(p, 4 * PAGE).unwrap(), 5 * 4 * PAGE);
    assert_eq!(rig.rss_anon(), 4);
}

#[test]
fn writable_again_after_read_only() {
    let mut rig = Rig::new();
    let p = rig.map(4 * PAGE, Prot::RW);
    rig.cpu.write_u64(p, 11).unwrap();
    rig.cpu.write_u64(p + PAGE, 22).unwrap();
    rig.cpu.read_u64(p + 2 * PAGE).unwrap(); // zero page
    rig.cpu.mprotect(p.as_u64(), 4 * PAGE, Prot::READ).unwrap();
    rig.assert_write_segv(p);
    rig.cpu.mprotect(p.as_u64(), 4 * PAGE, Prot::RW).unwrap();
    rig.cpu.write_u64(p, 12).unwrap();
    rig.cpu.write_u64(p + PAGE + 8, 23).unwrap();
    rig.cpu.write_u64(p + 2 * PAGE, 33).unwrap(); // replaces the zero page
    rig.cpu.write_u64(p + 3 * PAGE, 44).unwrap(); // a fresh page
    assert_eq!(rig.cpu.read_u64(p).unwrap(), 12);
    assert_eq!(rig.cpu.read_u64(p + PAGE).unwrap(), 22);
    assert_eq!(rig.cpu.read_u64(p + PAGE + 8).unwrap(), 23);
    assert_eq!(rig.cpu.read_u64(p + 2 * PAGE).unwrap(), 33);
    assert_eq!(rig.cpu.read_u64(p + 3 * PAGE).unwrap(), 44);
    assert_eq!(rig.rss_anon(), 4, "written pages were reused, not copied");
}

#[test]
fn read_only_mapping_made_writable() {
    let mut rig = Rig::new();
    let p = rig.map(2 * PAGE, Prot::READ);
    assert_eq!(rig.cpu.read_u64(p).unwrap(), 0);
    rig.cpu.mprotect(p.as_u64(), 2 * PAGE, Prot::RW).unwrap();
    rig.cpu.write_u64(p, 7).unwrap();
    rig.cpu.write_u64(p + PAGE, 8).unwrap();
    assert_eq!(rig.cpu.read_u64(p).unwrap(), 7);
    assert_eq!(rig.cpu.read_u64(p + PAGE).unwrap(), 8);
    assert_eq!(rig.rss_anon(), 2);
    // The zero page itself was not written.
    let q = rig.map(PAGE, Prot::READ);
    assert_eq!(rig.cpu.read_u64(q).unwrap(), 0);
}

#[test]
fn prot_none_faults_reads_but_keeps_pages_in_rss() {
    let mut rig = Rig::new();
    let p = rig.map(4 * PAGE, Prot::RW);
    rig.cpu.fill(p, 4 * PAGE, 5).unwrap();
    assert_eq!(rig.rss_anon(), 4);
    rig.cpu.mprotect(p.as_u64(), 4 * PAGE, Prot::NONE).unwrap();
    rig.assert_read_segv(p + (PAGE + 3));
    rig.assert_write_segv(p + (3 * PAGE + 1));
    assert_eq!(rig.rss_anon(), 4, "Linux counts PROT_NONE pages in RSS");
    assert_eq!(rig.machine.meminfo().anon, 4);
    assert_eq!(rig.cpu.mincore(p.as_u64(), 4 * PAGE).unwrap(), vec![1; 4], "PROT_NONE pages are resident");
    rig.check();
    rig.cpu.mprotect(p.as_u64(), 4 * PAGE, Prot::RW).unwrap();
    assert_eq!(rig.cpu.read_u8(p + (PAGE + 3)).unwrap(), 5);
    assert_eq!(rig.cpu.sum(p, 4 * PAGE).unwrap(), 5 * 4 * PAGE);
    rig.cpu.write_u8(p, 6).unwrap();
    assert_eq!(rig.rss_anon(), 4);
}

#[test]
fn prot_none_over_zero_page_and_back() {
    let mut rig = Rig::new();
    let p = rig.map(2 * PAGE, Prot::RW);
    assert_eq!(rig.cpu.read_u8(p).unwrap(), 0);
    rig.cpu.mprotect(p.as_u64(), 2 * PAGE, Prot::NONE).unwrap();
    rig.assert_read_segv(p);
    assert_eq!(rig.rss_anon(), 0);
    rig.cpu.mprotect(p.as_u64(), 2 * PAGE, Prot::RW).unwrap();
    assert_eq!(rig.cpu.read_u8(p).unwrap(), 0);
    rig.cpu.write_u8(p, 9).unwrap();
    assert_eq!(rig.cpu.read_u8(p).unwrap(), 9);
    assert_eq!(rig.cpu.read_u8(p + PAGE).unwrap(), 0);
    assert_eq!(rig.rss_anon(), 1);
}

#[test]
fn protecting_the_middle_splits_the_mapping() {
    let mut rig = Rig::new();
    let p = rig.map(6 * PAGE, Prot::RW);
    rig.cpu.fill(p, 6 * PAGE, 1).unwrap();
    rig.cpu.mprotect(p.as_u64() + 2 * PAGE, 2 * PAGE, Prot::READ).unwrap();
    for i in [0, 1, 4, 5] {
        rig.cpu.write_u8(p + i * PAGE, 2).unwrap();
        rig.cpu.write_u8(p + (i * PAGE + PAGE - 1), 2).unwrap();
    }
    for i in [2, 3] {
        rig.assert_write_segv(p + i * PAGE);
        rig.assert_write_segv(p + (i * PAGE + PAGE - 1));
        assert_eq!(rig.cpu.read_u8(p + i * PAGE).unwrap(), 1);
    }
    // Restoring the middle merges it back: the whole range behaves as one.
    rig.cpu.mprotect(p.as_u64() + 2 * PAGE, 2 * PAGE, Prot::RW).unwrap();
    rig.cpu.fill(p, 6 * PAGE, 3).unwrap();
    assert_eq!(rig.cpu.sum(p, 6 * PAGE).unwrap(), 3 * 6 * PAGE);
    assert_eq!(rig.proc.mm().read(rig.cpu.id()).vmas.len(), 1, "the split VMAs merged back");
}

#[test]
fn protecting_one_page_of_a_fresh_mapping() {
    let mut rig = Rig::new();
    let p = rig.map(3 * PAGE, Prot::RW);
    rig.cpu.mprotect(p.as_u64() + PAGE, PAGE, Prot::NONE).unwrap();
    rig.cpu.write_u8(p, 1).unwrap();
    rig.cpu.write_u8(p + 2 * PAGE, 1).unwrap();
    rig.assert_read_segv(p + PAGE);
    assert_eq!(rig.proc.mm().read(rig.cpu.id()).vmas.len(), 3);
}

#[test]
fn over_a_hole_is_enomem_and_changes_what_comes_before() {
    let mut rig = Rig::new();
    let p = rig.map(5 * PAGE, Prot::RW);
    rig.cpu.fill(p, 5 * PAGE, 9).unwrap();
    rig.cpu.munmap(p.as_u64() + 2 * PAGE, PAGE).unwrap();
    assert_eq!(rig.cpu.mprotect(p.as_u64(), 5 * PAGE, Prot::READ), Err(Errno::ENOMEM));
    // Before the hole: changed (as the kernel leaves it).
    rig.assert_write_segv(p);
    rig.assert_write_segv(p + PAGE);
    // After the hole: unchanged.
    rig.cpu.write_u8(p + 3 * PAGE, 1).unwrap();
    rig.cpu.write_u8(p + 4 * PAGE, 1).unwrap();
    assert_eq!(rig.cpu.read_u8(p).unwrap(), 9);
}

#[test]
fn starting_in_a_hole_is_enomem_and_changes_nothing() {
    let mut rig = Rig::new();
    let p = rig.map(5 * PAGE, Prot::RW);
    rig.cpu.munmap(p.as_u64() + 2 * PAGE, PAGE).unwrap();
    assert_eq!(rig.cpu.mprotect(p.as_u64() + 2 * PAGE, 3 * PAGE, Prot::READ), Err(Errno::ENOMEM));
    rig.cpu.write_u8(p + 3 * PAGE, 1).unwrap();
    rig.cpu.write_u8(p + 4 * PAGE, 1).unwrap();
    rig.cpu.write_u8(p, 1).unwrap();
}

#[test]
fn read_only_over_many_page_tables() {
    // 4 MiB + a page: spans at least three PTE tables.
    let mut rig = Rig::new();
    let len = (4 << 20) + PAGE;
    let p = rig.map(len, Prot::RW);
    for off in (0..len).step_by(64 * PAGE as usize) {
        rig.cpu.write_u8(p + off, 1).unwrap();
    }
    rig.cpu.write_u8(p + (len - 1), 1).unwrap();
    rig.cpu.mprotect(p.as_u64(), len, Prot::READ).unwrap();
    for off in (0..len).step_by(64 * PAGE as usize) {
        rig.assert_write_segv(p + off);
        assert_eq!(rig.cpu.read_u8(p + off).unwrap(), 1);
    }
    rig.assert_write_segv(p + (len - 1));
}

/// mprotect against this machine's Linux 6.18, in `do_mprotect_pkey`'s
/// order (C programs run while reviewing, 2026-12-01).
mod as_linux {
    use super::*;
    use oxmm::errno::Errno;
    use oxmm::mm::MapFlags;
    use oxmm::pagecache::PageCache;
    use std::sync::Arc;

    const PROT_GROWSDOWN: u32 = 0x0100_0000;
    const PROT_GROWSUP: u32 = 0x0200_0000;

    fn read_only_file(rig: &Rig) -> Arc<PageCache> {
        rig.zero_file(2, false)
    }

    /// `PROT_GROWSDOWN` needs a `MAP_GROWSDOWN` mapping, and `PROT_GROWSUP`
    /// is EINVAL on x86 (ENOMEM over a hole): nothing changes.
    #[test]
    fn grows_bits_on_an_ordinary_mapping_are_einval() {
        let mut rig = Rig::new();
        let g = rig.map(4 * PAGE, Prot::RW).as_u64();
        rig.cpu.munmap(g + 3 * PAGE, PAGE).unwrap();
        assert_eq!(rig.cpu.mprotect(g, PAGE, Prot(1 | PROT_GROWSDOWN)), Err(Errno::EINVAL));
        assert_eq!(rig.cpu.mprotect(g, PAGE, Prot(1 | PROT_GROWSUP)), Err(Errno::EINVAL));
        assert_eq!(rig.cpu.mprotect(g + 3 * PAGE, PAGE, Prot(1 | PROT_GROWSUP)), Err(Errno::ENOMEM));
        rig.cpu.write_u8(va(g), 1).expect("still writable");
    }

    /// `PROT_GROWSDOWN` on the last page of a `MAP_GROWSDOWN` mapping
    /// changes the whole mapping (the range starts at the mapping's start).
    #[test]
    fn growsdown_extends_the_range_to_the_start_of_the_mapping() {
        let mut rig = Rig::new();
        let g = rig.cpu.mmap(0, 4 * PAGE, Prot::READ, ANON.union(MapFlags::GROWSDOWN)).unwrap().as_u64();
        rig.cpu.mprotect(g + 3 * PAGE, PAGE, Prot(3 | PROT_GROWSDOWN)).unwrap();
        rig.cpu.write_u8(va(g), 1).expect("the first page became writable too");
    }

    /// Write access to a shared mapping of a file opened read-only is
    /// EACCES (no VM_MAYWRITE); over [anonymous][that file][anonymous] the
    /// first mapping has changed by then and the third has not.
    #[test]
    fn write_to_a_shared_mapping_of_a_read_only_file_is_eacces() {
        let mut rig = Rig::new();
        let c = read_only_file(&rig);
        let s = rig.cpu.mmap_file(0, PAGE, Prot::READ, MapFlags::SHARED, &c, 0).unwrap().as_u64();
        assert_eq!(rig.cpu.mprotect(s, PAGE, Prot::RW), Err(Errno::EACCES));
        rig.assert_write_segv(va(s));
        let a = rig.map(3 * PAGE, Prot::RW).as_u64();
        rig.cpu.mmap_file(a + PAGE, PAGE, Prot::READ, MapFlags::SHARED.union(MapFlags::FIXED), &c, 0).unwrap();
        rig.cpu.mprotect(a, 3 * PAGE, Prot::READ).unwrap();
        assert_eq!(rig.cpu.mprotect(a, 3 * PAGE, Prot::RW), Err(Errno::EACCES));
        rig.cpu.write_u8(va(a), 1).expect("the mapping before the file became writable");
        rig.assert_write_segv(va(a + 2 * PAGE));
        // A private mapping of the same file may be written (copy-on-write).
        let p = rig.cpu.mmap_file(0, PAGE, Prot::READ, MapFlags::PRIVATE, &c, 0).unwrap().as_u64();
        rig.cpu.mprotect(p, PAGE, Prot::RW).unwrap();
        rig.cpu.write_u8(va(p), 1).unwrap();
    }

    /// A locked private mapping made writable is populated for writing
    /// (`mprotect_fixup` → `populate_vma_page_range`): from PROT_NONE its
    /// pages become resident, from PROT_READ (the zero page) they are
    /// copied.
    #[test]
    fn a_locked_private_mapping_made_writable_is_populated() {
        let mut rig = Rig::new();
        let locked = ANON.union(MapFlags::LOCKED);
        let a = rig.cpu.mmap(0, 4 * PAGE, Prot::NONE, locked).unwrap().as_u64();
        assert_eq!(rig.cpu.mincore_count(a, 4 * PAGE).unwrap(), 0);
        rig.cpu.mprotect(a, 4 * PAGE, Prot::RW).unwrap();
        assert_eq!(rig.cpu.mincore_count(a, 4 * PAGE).unwrap(), 4);
        assert_eq!(rig.rss_anon(), 4);
        let b = rig.cpu.mmap(0, 4 * PAGE, Prot::READ, locked).unwrap().as_u64();
        assert_eq!(rig.cpu.mincore_count(b, 4 * PAGE).unwrap(), 4, "the zero page");
        rig.cpu.mprotect(b, 4 * PAGE, Prot::RW).unwrap();
        assert_eq!(rig.rss_anon(), 8, "copied from the zero page");
    }

    /// Private memory made writable for the first time is charged to the
    /// overcommit account (`mprotect_fixup`): read-only and larger than all
    /// of memory (the rig has 64 MiB), made writable → ENOMEM, nothing
    /// changed; with MAP_NORESERVE, or once charged, it is not charged
    /// again. Linux 6.18 gives ENOMEM for 1 TiB on this machine.
    #[test]
    fn making_private_memory_writable_is_charged() {
        let mut rig = Rig::new();
        let big = 256 << 20;
        let p = rig.cpu.mmap(0, big, Prot::READ, ANON).unwrap().as_u64();
        assert_eq!(rig.cpu.mprotect(p, big, Prot::RW), Err(Errno::ENOMEM));
        rig.assert_write_segv(va(p));
        rig.cpu.mprotect(p, PAGE, Prot::RW).expect("a small part is fine");
        rig.cpu.write_u8(va(p), 1).unwrap();
        let q = rig.cpu.mmap(0, big, Prot::READ, ANON.union(MapFlags::NORESERVE)).unwrap().as_u64();
        rig.cpu.mprotect(q, big, Prot::RW).expect("MAP_NORESERVE is never charged");
        // Shared memory is charged when it is made, not here.
        let s = rig.cpu.mmap(0, PAGE, Prot::READ, MapFlags(MapFlags::SHARED.0 | MapFlags::ANONYMOUS.0)).unwrap();
        rig.cpu.mprotect(s.as_u64(), PAGE, Prot::RW).unwrap();
    }
}
