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
