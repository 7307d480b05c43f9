//! Page tables: freed when nothing maps their span any more, kept while a
//! neighbour still needs them; partial unmaps and MAP_FIXED replacement.
//!
//! Checked on the real kernel (Linux 6.18, /tmp/oxc/sem.c): MAP_FIXED over
//! pages 1..3 of a written 4-page mapping returns the same address, pages 1
//! and 2 read 0 and pages 0 and 3 keep their data; munmap of one page in
//! the middle leaves the others readable with their data and the unmapped
//! page SIGSEGV.

mod common;

use common::*;
use oxmm::mm::{MapFlags, Prot};

const MIB: u64 = 1 << 20;

#[track_caller]
fn assert_only_root(rig: &Rig) {
    assert_eq!(rig.machine.meminfo().page_tables, 1, "only the root table is left");
}

#[test]
fn munmap_of_a_large_range_frees_every_table() {
    let mut rig = Rig::new();
    assert_only_root(&rig);
    let tables_before = rig.stat("pgtable_free");
    let len = 8 * MIB;
    let p = rig.map(len, Prot::RW);
    for off in (0..len).step_by(PAGE as usize) {
        rig.cpu.write_u8(p + off, 1).unwrap();
    }
    assert_eq!(rig.rss_anon(), len / PAGE);
    // root + PUD table + PMD table(s) + at least 4 PTE tables.
    let pt = rig.machine.meminfo().page_tables;
    assert!(pt >= 1 + 1 + 1 + 4, "page tables while mapped: {pt}");
    rig.check();
    let free_mapped = rig.machine.meminfo().free;
    rig.cpu.munmap(p.as_u64(), len).unwrap();
    assert_only_root(&rig);
    assert_eq!(rig.stat("pgtable_free") - tables_before, pt as i64 - 1);
    assert_eq!(rig.rss_anon(), 0);
    assert_eq!(rig.machine.meminfo().anon, 0);
    assert_eq!(rig.machine.meminfo().free, free_mapped + len / PAGE + pt - 1);
}

#[test]
fn munmap_in_pieces_frees_every_table() {
    let mut rig = Rig::new();
    let len = 6 * MIB;
    let p = rig.map(len, Prot::RW).as_u64();
    for off in (0..len).step_by(8 * PAGE as usize) {
        rig.cpu.write_u8(va(p + off), 1).unwrap();
    }
    // Unmap the middle, then the bottom, then the top: odd sizes that do not
    // line up with 2 MiB table spans.
    rig.cpu.munmap(p + MIB + 3 * PAGE, 3 * MIB).unwrap();
    assert_eq!(rig.cpu.read_u8(va(p + MIB)).unwrap(), 1, "below the hole: kept");
    assert_eq!(rig.cpu.read_u8(va(p + 4 * MIB + 8 * PAGE)).unwrap(), 1, "above the hole: kept");
    rig.check();
    rig.cpu.munmap(p, MIB + 3 * PAGE).unwrap();
    assert_eq!(rig.cpu.read_u8(va(p + 4 * MIB + 8 * PAGE)).unwrap(), 1);
    rig.check();
    rig.cpu.munmap(p + 4 * MIB + 3 * PAGE, 2 * MIB - 3 * PAGE).unwrap();
    assert_only_root(&rig);
    assert_eq!(rig.rss_anon(), 0);
}

#[test]
fn a_table_shared_with_a_neighbour_is_kept() {
    let mut rig = Rig::new();
    // Two adjacent mappings with different protections inside one 2 MiB
    // span (most likely), then unmap one of them.
    let p = rig.map(8 * PAGE, Prot::RW);
    let q = rig.cpu.mmap(p.as_u64() + 8 * PAGE, 8 * PAGE, Prot::READ, ANON.union(MapFlags::FIXED)).unwrap();
    rig.cpu.fill(p, 8 * PAGE, 4).unwrap();
    assert_eq!(rig.cpu.read_u8(q).unwrap(), 0);
    rig.cpu.munmap(q.as_u64(), 8 * PAGE).unwrap();
    assert_eq!(rig.cpu.sum(p, 8 * PAGE).unwrap(), 4 * 8 * PAGE);
    rig.check();
    rig.cpu.munmap(p.as_u64(), 8 * PAGE).unwrap();
    assert_only_root(&rig);
}

#[test]
fn munmap_of_one_page_in_the_middle_keeps_the_rest() {
    let mut rig = Rig::new();
    let n = 9;
    let p = rig.map(n * PAGE, Prot::RW);
    for i in 0..n {
        rig.cpu.fill(p + i * PAGE, PAGE, i as u8 + 1).unwrap();
    }
    rig.cpu.munmap(p.as_u64() + 4 * PAGE, PAGE).unwrap();
    rig.assert_read_segv(p + 4 * PAGE);
    rig.assert_read_segv(p + (5 * PAGE - 1));
    for i in (0..n).filter(|&i| i != 4) {
        assert_eq!(rig.cpu.sum(p + i * PAGE, PAGE).unwrap(), (i + 1) * PAGE, "page {i}");
    }
    assert_eq!(rig.rss_anon(), n - 1);
    assert_eq!(rig.proc.mm().read(rig.cpu.id()).vmas.len(), 2);
}

#[test]
fn map_fixed_replaces_an_existing_mapping() {
    let mut rig = Rig::new();
    let p = rig.map(4 * PAGE, Prot::RW);
    rig.cpu.fill(p, 4 * PAGE, 3).unwrap();
    assert_eq!(rig.rss_anon(), 4);
    let q = rig.cpu.mmap(p.as_u64() + PAGE, 2 * PAGE, Prot::RW, ANON.union(MapFlags::FIXED)).unwrap();
    assert_eq!(q, p + PAGE);
    assert_eq!(rig.rss_anon(), 2, "the replaced pages were unmapped");
    assert_eq!(rig.machine.meminfo().anon, 2);
    assert_eq!(rig.cpu.sum(q, 2 * PAGE).unwrap(), 0, "the new mapping reads zero");
    assert_eq!(rig.cpu.sum(p, PAGE).unwrap(), 3 * PAGE);
    assert_eq!(rig.cpu.sum(p + 3 * PAGE, PAGE).unwrap(), 3 * PAGE);
    rig.cpu.write_u8(q, 8).unwrap();
    assert_eq!(rig.cpu.read_u8(q).unwrap(), 8);
}

#[test]
fn map_fixed_with_another_protection_replaces_it() {
    let mut rig = Rig::new();
    let p = rig.map(2 * PAGE, Prot::RW);
    rig.cpu.fill(p, 2 * PAGE, 3).unwrap();
    let q = rig.cpu.mmap(p.as_u64(), PAGE, Prot::READ, ANON.union(MapFlags::FIXED)).unwrap();
    assert_eq!(rig.cpu.read_u8(q).unwrap(), 0);
    rig.assert_write_segv(q);
    assert_eq!(rig.cpu.read_u8(p + PAGE).unwrap(), 3);
}

#[test]
fn repeated_map_touch_unmap_does_not_leak() {
    let mut rig = Rig::new();
    let boot_free = rig.machine.meminfo().free;
    for round in 0..20u64 {
        let len = (round % 5 + 1) * 512 * PAGE + round * PAGE;
        let p = rig.map(len, Prot::RW);
        rig.cpu.fill(p, len, round as u8).unwrap();
        rig.cpu.munmap(p.as_u64(), len).unwrap();
        assert_only_root(&rig);
    }
    assert_eq!(rig.machine.meminfo().free, boot_free);
}

#[test]
fn unaligned_lengths_round_up_to_whole_pages() {
    // Checked on the real kernel (/tmp/oxc/misc.c): munmap, mprotect and
    // MADV_DONTNEED with len = 1 page + 1 byte act on 2 pages.
    let mut rig = Rig::new();
    let p = rig.map(6 * PAGE, Prot::RW);
    rig.cpu.fill(p, 6 * PAGE, 1).unwrap();
    rig.cpu.munmap(p.as_u64(), PAGE + 1).unwrap();
    rig.assert_read_segv(p + PAGE);
    assert_eq!(rig.cpu.read_u8(p + 2 * PAGE).unwrap(), 1);
    rig.cpu.mprotect(p.as_u64() + 2 * PAGE, PAGE + 1, Prot::READ).unwrap();
    rig.assert_write_segv(p + 3 * PAGE);
    rig.cpu.write_u8(p + 4 * PAGE, 2).unwrap();
    rig.cpu.madvise(p.as_u64() + 4 * PAGE, PAGE + 1, oxmm::mm::Advice::DontNeed as u32).unwrap();
    assert_eq!(rig.cpu.sum(p + 4 * PAGE, 2 * PAGE).unwrap(), 0);
    assert_eq!(rig.rss_anon(), 2);
}

#[test]
fn mappings_at_the_edges_of_the_user_address_space() {
    // Checked on the real kernel: MAP_FIXED_NOREPLACE of the page just below
    // TASK_SIZE (0x7fffffffe000) and of 0x10000 both succeed.
    let mut rig = Rig::new();
    let top = oxmm::mm::TASK_SIZE - PAGE;
    let low = oxmm::mm::MMAP_MIN_ADDR;
    let a = rig.cpu.mmap(top, PAGE, Prot::RW, ANON.union(MapFlags::FIXED)).unwrap();
    let b = rig.cpu.mmap(low, PAGE, Prot::RW, ANON.union(MapFlags::FIXED)).unwrap();
    assert_eq!((a.as_u64(), b.as_u64()), (top, low));
    rig.cpu.write_u64(a + (PAGE - 8), 1).unwrap();
    rig.cpu.write_u64(b, 2).unwrap();
    assert_eq!(rig.cpu.read_u64(a + (PAGE - 8)).unwrap(), 1);
    assert_eq!(rig.cpu.read_u64(b).unwrap(), 2);
    rig.assert_read_segv(va(oxmm::mm::TASK_SIZE));
    rig.assert_read_segv(va(low - PAGE));
    rig.check();
    rig.cpu.munmap(top, PAGE).unwrap();
    rig.cpu.munmap(low, PAGE).unwrap();
    assert_only_root(&rig);
}

#[test]
fn brk_heap_tables_are_freed_when_it_shrinks_away() {
    let mut rig = Rig::new();
    let b0 = rig.cpu.brk(0).unwrap();
    let len = 3 * MIB;
    assert_eq!(rig.cpu.brk(b0 + len).unwrap(), b0 + len);
    for off in (0..len).step_by(16 * PAGE as usize) {
        rig.cpu.write_u8(va(b0 + off), 1).unwrap();
    }
    assert!(rig.machine.meminfo().page_tables > 3);
    assert_eq!(rig.cpu.brk(b0).unwrap(), b0);
    assert_only_root(&rig);
    assert_eq!(rig.rss_anon(), 0);
}
