//! Anonymous faults: the zero page on a read, a private zeroed page on a
//! write, the zero page replaced by a later write, RSS and mincore as Linux
//! reports them.
//!
//! Checked on the real kernel (Linux 6.18, /tmp C program): reading 8 pages
//! of a fresh private anonymous mapping leaves `RssAnon` unchanged and
//! `mincore` reports all 8 resident (the zero page is mapped); writing one
//! of them then adds one page to `RssAnon`.

mod common;

use common::*;
use oxmm::fault::FaultError;
use oxmm::mm::{MapFlags, Prot};
use oxmm_host::Fault;

#[test]
fn read_maps_the_zero_page() {
    let mut rig = Rig::new();
    let p = rig.map(4 * PAGE, Prot::RW);
    let zp = rig.stat("zero_page_map");
    let anon_before = rig.machine.meminfo().anon;
    assert_eq!(rig.cpu.read_u64(p + PAGE).unwrap(), 0);
    assert_eq!(rig.cpu.read_u8(p + PAGE + 4095).unwrap(), 0);
    assert_eq!(rig.rss_anon(), 0, "the zero page is not in RSS");
    assert_eq!(rig.machine.meminfo().anon, anon_before, "no anonymous page was allocated");
    assert_eq!(rig.stat("zero_page_map"), zp + 1, "one zero-page mapping for one page read twice");
    assert_eq!(rig.cpu.mincore(p.as_u64(), 4 * PAGE).unwrap(), vec![0, 1, 0, 0], "the zero page is resident");
}

#[test]
fn reads_of_many_pages_share_the_zero_page() {
    let mut rig = Rig::new();
    let n = 64;
    let p = rig.map(n * PAGE, Prot::RW);
    let free = rig.machine.meminfo().free;
    let zp = rig.stat("zero_page_map");
    assert_eq!(rig.cpu.sum(p, n * PAGE).unwrap(), 0);
    assert_eq!(rig.rss_anon(), 0);
    assert_eq!(rig.stat("zero_page_map"), zp + n as i64);
    assert_eq!(rig.cpu.mincore(p.as_u64(), n * PAGE).unwrap(), vec![1; n as usize]);
    // Only page tables may have been allocated (at most a PTE table, a PMD
    // and a PUD table for 64 pages), never data frames.
    assert!(
        free - rig.machine.meminfo().free <= 3,
        "reads allocated frames: {} -> {}",
        free,
        rig.machine.meminfo().free
    );
}

#[test]
fn write_maps_a_private_zeroed_page() {
    let mut rig = Rig::new();
    let p = rig.map(4 * PAGE, Prot::RW);
    rig.cpu.write_u8(p + 2 * PAGE + 100, 0x5a).unwrap();
    assert_eq!(rig.rss_anon(), 1);
    assert_eq!(rig.machine.meminfo().anon, 1);
    assert_eq!(rig.cpu.read_u8(p + 2 * PAGE + 100).unwrap(), 0x5a);
    assert_eq!(rig.cpu.sum(p + 2 * PAGE, PAGE).unwrap(), 0x5a, "the rest of the new page is zero");
    assert_eq!(rig.cpu.mincore(p.as_u64(), 4 * PAGE).unwrap(), vec![0, 0, 1, 0]);
}

#[test]
fn write_after_read_replaces_the_zero_page() {
    let mut rig = Rig::new();
    let n = 8;
    let p = rig.map(n * PAGE, Prot::RW);
    for i in 0..n {
        assert_eq!(rig.cpu.read_u64(p + i * PAGE).unwrap(), 0);
    }
    assert_eq!(rig.rss_anon(), 0);
    rig.cpu.write_u64(p + 3 * PAGE + 8, 0xdead_beef_cafe_f00d).unwrap();
    assert_eq!(rig.rss_anon(), 1, "the write replaced the zero page with one private page");
    assert_eq!(rig.machine.meminfo().anon, 1);
    assert_eq!(rig.cpu.read_u64(p + 3 * PAGE + 8).unwrap(), 0xdead_beef_cafe_f00d);
    for i in (0..n).filter(|&i| i != 3) {
        assert_eq!(
            rig.cpu.sum(p + i * PAGE, PAGE).unwrap(),
            0,
            "page {i} still reads zero (the zero page was not written)"
        );
    }
    // A page mapped for the first time now still reads zero: the write did
    // not land in the shared zero page.
    let q = rig.map(PAGE, Prot::RW);
    assert_eq!(rig.cpu.sum(q, PAGE).unwrap(), 0);
    assert_eq!(rig.cpu.mincore(p.as_u64(), n * PAGE).unwrap(), vec![1; n as usize]);
}

#[test]
fn fill_and_sum_over_many_pages() {
    let mut rig = Rig::new();
    let n = 96;
    let p = rig.map(n * PAGE, Prot::RW);
    rig.cpu.fill(p, n * PAGE, 1).unwrap();
    assert_eq!(rig.rss_anon(), n);
    assert_eq!(rig.cpu.sum(p, n * PAGE).unwrap(), n * PAGE);
    // An unaligned sub-range crossing pages.
    rig.cpu.fill(p + 5 * PAGE + 3, 3 * PAGE, 2).unwrap();
    assert_eq!(rig.cpu.sum(p, n * PAGE).unwrap(), n * PAGE + 3 * PAGE);
    assert_eq!(rig.cpu.sum(p + 5 * PAGE, 3).unwrap(), 3);
    assert_eq!(rig.cpu.read_u8(p + 5 * PAGE + 3).unwrap(), 2);
    assert_eq!(rig.cpu.read_u8(p + 8 * PAGE + 2).unwrap(), 2);
    assert_eq!(rig.cpu.read_u8(p + 8 * PAGE + 3).unwrap(), 1);
    assert_eq!(rig.rss_anon(), n, "rewriting pages allocates nothing");
}

#[test]
fn data_survives_across_pages() {
    let mut rig = Rig::new();
    let n = 16u64;
    let p = rig.map(n * PAGE, Prot::RW);
    for i in 0..n * PAGE / 8 {
        rig.cpu.write_u64(p + i * 8, i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).unwrap();
    }
    for i in 0..n * PAGE / 8 {
        assert_eq!(rig.cpu.read_u64(p + i * 8).unwrap(), i.wrapping_mul(0x9e37_79b9_7f4a_7c15), "word {i}");
    }
    // Unaligned accesses that straddle a page boundary.
    let edge = p + (7 * PAGE - 3);
    rig.cpu.write_u64(edge, 0x0102_0304_0506_0708).unwrap();
    assert_eq!(rig.cpu.read_u64(edge).unwrap(), 0x0102_0304_0506_0708);
    let buf: Vec<u8> = (0..=255u8).cycle().take(3 * PAGE as usize + 77).collect();
    rig.cpu.write(p + (9 * PAGE - 40), &buf).unwrap();
    let mut back = vec![0u8; buf.len()];
    rig.cpu.read(p + (9 * PAGE - 40), &mut back).unwrap();
    assert_eq!(back, buf);
    assert_eq!(rig.rss_anon(), n);
}

#[test]
fn access_outside_any_mapping_is_segv_at_the_address() {
    let mut rig = Rig::new();
    let p = rig.map(2 * PAGE, Prot::RW);
    rig.cpu.munmap(p.as_u64() + PAGE, PAGE).unwrap();
    rig.assert_read_segv(p + PAGE + 17);
    rig.assert_write_segv(p + PAGE + 17);
    // A piecewise write that runs off the end stops at the first byte of
    // the unmapped page; the mapped part was written.
    let err = rig.cpu.fill(p + (PAGE - 8), 16, 7).unwrap_err();
    assert_eq!(err, Fault { kind: FaultError::Segv, addr: p + PAGE });
    assert_eq!(rig.cpu.sum(p + (PAGE - 8), 8).unwrap(), 8 * 7);
    // Address 0, and a non-canonical address.
    rig.assert_read_segv(va(0));
    assert_eq!(rig.cpu.read_u8(va(0x0000_8000_0000_0000)).unwrap_err().kind, FaultError::Segv);
    assert_eq!(rig.stat("nr_anon_pages"), 1);
}

#[test]
fn prot_none_mapping_faults_and_allocates_nothing() {
    let mut rig = Rig::new();
    let p = rig.map(PAGE, Prot::NONE);
    rig.assert_read_segv(p + 1);
    rig.assert_write_segv(p);
    assert_eq!(rig.rss_anon(), 0);
    assert_eq!(rig.cpu.mincore(p.as_u64(), PAGE).unwrap(), vec![0]);
}

#[test]
fn read_only_mapping_maps_the_zero_page_and_refuses_writes() {
    let mut rig = Rig::new();
    let p = rig.map(2 * PAGE, Prot::READ);
    assert_eq!(rig.cpu.read_u64(p).unwrap(), 0);
    rig.assert_write_segv(p + 9);
    rig.assert_write_segv(p + PAGE);
    assert_eq!(rig.rss_anon(), 0);
}

#[test]
fn write_only_mapping_is_readable_as_on_x86() {
    // Checked on the real kernel: mmap(PROT_WRITE) can be read and written.
    let mut rig = Rig::new();
    let p = rig.map(PAGE, Prot::WRITE);
    assert_eq!(rig.cpu.read_u8(p).unwrap(), 0);
    rig.cpu.write_u8(p, 4).unwrap();
    assert_eq!(rig.cpu.read_u8(p).unwrap(), 4);
}

#[test]
fn map_populate_prefaults_every_page() {
    // Checked on the real kernel: mincore reports MAP_POPULATE pages resident.
    let mut rig = Rig::new();
    let p = rig.cpu.mmap(0, 8 * PAGE, Prot::RW, ANON.union(MapFlags::POPULATE)).unwrap();
    assert_eq!(rig.rss_anon(), 8);
    assert_eq!(rig.cpu.mincore(p.as_u64(), 8 * PAGE).unwrap(), vec![1; 8]);
    let faults = rig.stat("pgfault");
    rig.cpu.fill(p, 8 * PAGE, 3).unwrap();
    assert_eq!(rig.stat("pgfault"), faults, "populated pages take no fault");
}
