//! File and shared mappings against Linux semantics: file bytes read
//! through mappings, private copy-on-write, shared writes reaching the file
//! through msync and at exit, shared memory across fork, RSS per kind, and
//! the reverse map of file pages (the checker verifies it after each test).

mod common;

use std::io::{Read, Write};

use common::*;
use oxmm::mm::{MapFlags, Prot};
use oxmm::rmap::RmapScheme;
use oxmm_host::MachineConfig;

const SCHEMES: [RmapScheme; 3] = [RmapScheme::PteChains, RmapScheme::Object, RmapScheme::None];
const SHARED: MapFlags = MapFlags::SHARED;
const PRIVATE: MapFlags = MapFlags::PRIVATE;

fn rig(scheme: RmapScheme) -> Rig {
    Rig::with(MachineConfig { mem_bytes: 64 << 20, nodes: 1, cpus: 4, movable_percent: 75, rmap: scheme })
}

/// A temporary file of `pages` pages, page i filled with byte i+1.
fn temp_file(name: &str, pages: u64) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("oxmm-files-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("data");
    let mut f = std::fs::File::create(&p).unwrap();
    for i in 0..pages {
        f.write_all(&[(i + 1) as u8; 4096]).unwrap();
    }
    p
}

fn file_bytes(p: &std::path::Path) -> Vec<u8> {
    let mut v = Vec::new();
    std::fs::File::open(p).unwrap().read_to_end(&mut v).unwrap();
    v
}

#[test]
fn private_file_mapping_reads_the_file_and_copies_on_write() {
    for scheme in SCHEMES {
        let path = temp_file(&format!("private-{scheme:?}"), 4);
        let mut r = rig(scheme);
        let f = r.machine.open_file(&path).unwrap();
        let a = r.cpu.mmap_file(0, 4 * PAGE, Prot::RW, PRIVATE, &f, 0).unwrap();
        drop(f);
        assert_eq!(r.cpu.read_u8(a + 2 * PAGE + 7).unwrap(), 3);
        assert_eq!(r.proc.rss().file, 1);
        r.cpu.write_u8(a + 2 * PAGE, 0xee).unwrap();
        assert_eq!(r.proc.rss(), oxmm::mm::Rss { anon: 1, file: 0, shmem: 0, swap: 0 }, "{scheme:?}");
        assert_eq!(r.cpu.read_u8(a + 2 * PAGE).unwrap(), 0xee);
        r.check();
        // DONTNEED drops the private copy: the file's bytes come back.
        r.cpu.madvise(a.as_u64(), 4 * PAGE, 4).unwrap();
        assert_eq!(r.cpu.read_u8(a + 2 * PAGE).unwrap(), 3);
        r.cpu.munmap(a.as_u64(), 4 * PAGE).unwrap();
        assert_eq!(file_bytes(&path)[2 * 4096], 3, "a private write never reaches the file");
    }
}

#[test]
fn shared_file_writes_reach_the_file_on_msync_and_at_exit() {
    for scheme in SCHEMES {
        let path = temp_file(&format!("shared-{scheme:?}"), 4);
        let mut r = rig(scheme);
        let f = r.machine.open_file(&path).unwrap();
        let a = r.cpu.mmap_file(0, 4 * PAGE, Prot::RW, SHARED, &f, 0).unwrap();
        r.cpu.fill(a + PAGE, 16, 0x55).unwrap();
        assert_eq!(r.proc.rss().file, 1, "{scheme:?}");
        assert_eq!(file_bytes(&path)[4096], 2, "not yet written back");
        r.cpu.msync(a.as_u64(), 4 * PAGE, oxmm::mm::msync::MS_SYNC).unwrap();
        assert_eq!(&file_bytes(&path)[4096..4096 + 17], &[0x55; 16].iter().copied().chain([2]).collect::<Vec<_>>()[..]);
        // After msync the PTE is clean: a new write faults and dirties again.
        let faults = r.machine.vmstat().get("pgfault").unwrap();
        r.cpu.write_u8(a + PAGE, 0x66).unwrap();
        assert_eq!(r.machine.vmstat().get("pgfault").unwrap(), faults + 1);
        // A second process maps the same file and sees the write at once.
        let q = r.machine.new_process(&r.cpu).unwrap();
        let p = r.proc.clone();
        r.cpu.switch_to(&q);
        let b = r.cpu.mmap_file(0, 4 * PAGE, Prot::READ, SHARED, &f, 0).unwrap();
        assert_eq!(r.cpu.read_u8(b + PAGE).unwrap(), 0x66);
        r.check();
        if scheme != RmapScheme::None {
            let pfn = q.mm().pte(r.cpu.id(), b + PAGE).unwrap().pfn();
            assert_eq!(oxmm::rmap::mappings(r.machine.sys(), r.cpu.id(), pfn).unwrap().len(), 2);
        }
        r.cpu.exit_process(q);
        r.cpu.switch_to(&p);
        drop(f);
        // Exit writes back what msync did not.
        r.cpu.write_u8(a + 3 * PAGE, 0x77).unwrap();
        let path2 = path.clone();
        drop(r);
        let bytes = file_bytes(&path2);
        assert_eq!(bytes[4096], 0x66, "{scheme:?}");
        assert_eq!(bytes[3 * 4096], 0x77, "{scheme:?}: written back at exit");
        assert_eq!(bytes.len(), 4 * 4096, "the file never grows");
    }
}

#[test]
fn past_the_end_of_the_file_is_sigbus_and_offsets_must_be_aligned() {
    let path = temp_file("bus", 1);
    let mut r = rig(RmapScheme::PteChains);
    let f = r.machine.open_file(&path).unwrap();
    let a = r.cpu.mmap_file(0, 4 * PAGE, Prot::READ, PRIVATE, &f, 0).unwrap();
    assert_eq!(r.cpu.read_u8(a).unwrap(), 1);
    assert_eq!(r.cpu.read_u8(a + PAGE).map_err(|e| e.kind), Err(oxmm::fault::FaultError::Bus));
    assert_eq!(r.cpu.mmap_file(0, PAGE, Prot::READ, PRIVATE, &f, 1), Err(oxmm::Errno::EINVAL));
    let b = r.cpu.mmap_file(0, PAGE, Prot::READ, PRIVATE, &f, 8 * PAGE).unwrap();
    assert_eq!(r.cpu.read_u8(b).map_err(|e| e.kind), Err(oxmm::fault::FaultError::Bus));
}

#[test]
fn fault_around_maps_cached_neighbours() {
    let path = temp_file("around", 16);
    let mut r = rig(RmapScheme::PteChains);
    let f = r.machine.open_file(&path).unwrap();
    // Another process reads every page: all 16 are cached.
    let q = r.machine.new_process(&r.cpu).unwrap();
    let p = r.proc.clone();
    r.cpu.switch_to(&q);
    let b = r.cpu.mmap_file(0, 16 * PAGE, Prot::READ, PRIVATE, &f, 0).unwrap();
    for i in 0..16 {
        r.cpu.read_u8(b + i * PAGE).unwrap();
    }
    r.cpu.exit_process(q);
    r.cpu.switch_to(&p);
    let a = r.cpu.mmap_file(0, 16 * PAGE, Prot::READ, PRIVATE, &f, 0).unwrap();
    let before = r.machine.vmstat().get("pgfault").unwrap();
    for i in 0..16 {
        assert_eq!(r.cpu.read_u8(a + i * PAGE).unwrap(), (i + 1) as u8);
    }
    let faults = r.machine.vmstat().get("pgfault").unwrap() - before;
    assert_eq!(faults, 1, "one fault maps the whole cached 64 KiB window");
    assert_eq!(r.proc.rss().file, 16);
}

#[test]
fn shared_anonymous_memory_across_fork() {
    for scheme in SCHEMES {
        let mut r = rig(scheme);
        let a = r.cpu.mmap(0, 16 * PAGE, Prot::RW, SHARED.union(MapFlags::ANONYMOUS)).unwrap();
        r.cpu.fill(a, 8 * PAGE, 3).unwrap();
        assert_eq!(r.proc.rss().shmem, 8);
        let child = r.cpu.fork(&r.proc).unwrap();
        assert_eq!(child.rss().shmem, 0, "fork does not copy shared PTEs");
        let parent = r.proc.clone();
        r.cpu.switch_to(&child);
        assert_eq!(r.cpu.sum(a, 8 * PAGE).unwrap(), 3 * 8 * PAGE);
        assert_eq!(child.rss().shmem, 8);
        r.cpu.write_u8(a, 9).unwrap();
        r.cpu.switch_to(&parent);
        assert_eq!(r.cpu.read_u8(a).unwrap(), 9, "{scheme:?}: shared writes are visible");
        r.check();
        r.cpu.exit_process(child);
        r.check();
    }
}

#[test]
fn msync_errors() {
    let mut r = rig(RmapScheme::PteChains);
    let a = r.map(4 * PAGE, Prot::RW);
    assert_eq!(r.cpu.msync(a.as_u64() + 1, PAGE, 4), Err(oxmm::Errno::EINVAL));
    assert_eq!(r.cpu.msync(a.as_u64(), PAGE, 8), Err(oxmm::Errno::EINVAL));
    assert_eq!(r.cpu.msync(a.as_u64(), PAGE, 5), Err(oxmm::Errno::EINVAL));
    assert_eq!(r.cpu.msync(a.as_u64(), 8 * PAGE, 4), Err(oxmm::Errno::ENOMEM));
    assert_eq!(r.cpu.msync(a.as_u64(), 4 * PAGE, 4), Ok(()));
    assert_eq!(r.cpu.msync(a.as_u64(), 0, 4), Ok(()));
}

/// A write through a still-writable shared mapping after another process's
/// msync cleaned the page: unmapping it through the reverse map must carry
/// the PTE's dirty bit to the page cache, or the write never reaches the
/// file. (Regression test from review.)
#[test]
fn try_to_unmap_keeps_the_dirty_bit_of_a_shared_file_page() {
    for scheme in [RmapScheme::PteChains, RmapScheme::Object] {
        let path = temp_file(&format!("ttu-{scheme:?}"), 2);
        let mut r = rig(scheme);
        let f = r.machine.open_file(&path).unwrap();
        let a = r.cpu.mmap_file(0, 2 * PAGE, Prot::RW, SHARED, &f, 0).unwrap();
        r.cpu.write_u8(a, 0x11).unwrap();
        let q = r.machine.new_process(&r.cpu).unwrap();
        let mut c2 = r.machine.cpu(1).unwrap();
        c2.switch_to(&q);
        let b = c2.mmap_file(0, 2 * PAGE, Prot::RW, SHARED, &f, 0).unwrap();
        c2.msync(b.as_u64(), 2 * PAGE, oxmm::mm::msync::MS_SYNC).unwrap();
        assert_eq!(file_bytes(&path)[0], 0x11);
        // Through the still-writable translation: no fault, no dirty mark.
        r.cpu.write_u8(a, 0x77).unwrap();
        let pfn = r.proc.mm().pte(r.cpu.id(), a).unwrap().pfn();
        assert_eq!(oxmm::rmap::try_to_unmap(r.machine.sys(), r.cpu.id(), pfn).unwrap(), 1);
        r.cpu.msync(a.as_u64(), 2 * PAGE, oxmm::mm::msync::MS_SYNC).unwrap();
        c2.exit_process(q);
        drop(c2);
        drop(f);
        drop(r);
        assert_eq!(file_bytes(&path)[0], 0x77, "{scheme:?}: the shared write was lost");
    }
}

/// MADV_REMOVE on file mappings (checked on Linux 6.18): a private mapping
/// -> EACCES (as for a shared one of a file opened read-only, which a test
/// running as root cannot open); a shared mapping of a file open for
/// writing punches a hole there (even mapped `PROT_READ`), which oxmm
/// cannot do yet: EOPNOTSUPP, file unchanged.
#[test]
fn madvise_remove_on_file_mappings() {
    let path = temp_file("remove", 4);
    let mut r = rig(RmapScheme::Object);
    let f = r.machine.open_file(&path).unwrap();
    let private = r.cpu.mmap_file(0, 4 * PAGE, Prot::RW, PRIVATE, &f, 0).unwrap();
    assert_eq!(r.cpu.madvise(private.as_u64(), 4 * PAGE, 9), Err(oxmm::errno::Errno::EACCES));
    let shared = r.cpu.mmap_file(0, 4 * PAGE, Prot::READ, SHARED, &f, 0).unwrap();
    assert_eq!(r.cpu.madvise(shared.as_u64(), 4 * PAGE, 9), Err(oxmm::errno::Errno::EOPNOTSUPP));
    assert_eq!(r.cpu.read_u8(shared + PAGE).unwrap(), 2);
}

/// CPUs that write-fault the same file pages at once: every fault-handler
/// entry either maps its page or is counted as a lost race — for the
/// private copy-on-write at first touch and for a shared mapping. (Review:
/// neither file path counted the compare-and-swap it lost.)
#[test]
fn racing_file_faults_count_every_lost_race() {
    let pages = 256u64;
    for (flags, installs) in [(PRIVATE, "anon_fault_alloc"), (SHARED, "")] {
        let path = temp_file(&format!("race-{}", flags.0), pages);
        let mut r = rig(RmapScheme::PteChains);
        let f = r.machine.open_file(&path).unwrap();
        let mut lost_total = 0;
        for round in 0..20 {
            let a = r.cpu.mmap_file(0, pages * PAGE, Prot::RW, flags, &f, 0).unwrap();
            let before = |r: &Rig| {
                (r.stat("pgfault"), r.stat("fault_race_lost"), if installs.is_empty() { 0 } else { r.stat(installs) })
            };
            let (f0, l0, i0) = before(&r);
            let barrier = std::sync::Barrier::new(3);
            std::thread::scope(|s| {
                for c in 1..=3usize {
                    let (machine, proc, barrier) = (r.machine.clone(), r.proc.clone(), &barrier);
                    s.spawn(move || {
                        let mut cpu = machine.cpu(c).unwrap();
                        cpu.switch_to(&proc);
                        barrier.wait();
                        for i in 0..pages {
                            cpu.write_u8(a + i * PAGE + c as u64, c as u8).unwrap();
                        }
                    });
                }
            });
            let (f1, l1, i1) = before(&r);
            let mapped = if installs.is_empty() { pages as i64 } else { i1 - i0 };
            assert_eq!(mapped, pages as i64, "{flags:?} round {round}: one page each");
            assert_eq!(f1 - f0, mapped + (l1 - l0), "{flags:?} round {round}: entries = pages mapped + races lost");
            lost_total += l1 - l0;
            r.cpu.munmap(a.as_u64(), pages * PAGE).unwrap();
            if lost_total > 0 && round >= 4 {
                break;
            }
        }
        assert!(lost_total > 0, "{flags:?}: no race was lost in 20 rounds, so nothing was checked");
        r.check();
    }
}

/// fork copies the PTEs of a private file mapping exactly when it has had a
/// private page (Linux's `vma_needs_copy`: the VMA has an anon_vma, set by
/// its first copy-on-write and kept after the private pages are gone; a
/// split gives it to both halves, a split before the first write only to
/// the half written, a merge keeps it, mremap moves it). The child's RSS
/// per scenario is what this machine's Linux 6.18 gives for the same steps
/// (a C program reading the child's /proc/self/smaps): a 16-page file
/// mapped MAP_PRIVATE read-write, every page read first.
#[test]
fn fork_copies_a_private_file_mapping_once_it_has_had_a_private_page() {
    use oxmm::mm::flags::RemapFlags;
    use oxmm::mm::Advice;
    const FAR: u64 = 0x7000_0000_0000;
    let moved = RemapFlags(RemapFlags::MAYMOVE.0 | RemapFlags::FIXED.0);
    type Steps = fn(&mut Rig, u64, RemapFlags);
    fn dontneed(r: &mut Rig, a: u64) {
        r.cpu.madvise(a + PAGE, PAGE, Advice::DontNeed as u32).unwrap();
    }
    fn split(r: &mut Rig, a: u64, prot: Prot) {
        r.cpu.mprotect(a + 8 * PAGE, 8 * PAGE, prot).unwrap();
    }
    fn write(r: &mut Rig, a: u64) {
        r.cpu.write_u8(va(a + PAGE), 0xee).unwrap();
    }
    let cases: [(&str, Steps, (u64, u64)); 7] = [
        ("never written", |_, _, _| {}, (0, 0)),
        (
            "written, then the private page dropped",
            |r, a, _| {
                write(r, a);
                dontneed(r, a);
            },
            (15, 0),
        ),
        (
            "written, then split",
            |r, a, _| {
                write(r, a);
                split(r, a, Prot::READ);
            },
            (15, 1),
        ),
        (
            "split, then one half written",
            |r, a, _| {
                split(r, a, Prot::READ);
                write(r, a);
            },
            (7, 1),
        ),
        (
            "split, one half written, merged again",
            |r, a, _| {
                split(r, a, Prot::READ);
                write(r, a);
                split(r, a, Prot::RW);
            },
            (15, 1),
        ),
        (
            "written, moved by mremap, the private page dropped",
            |r, a, m| {
                write(r, a);
                r.cpu.mremap(a, 16 * PAGE, 16 * PAGE, m, FAR).unwrap();
                dontneed(r, FAR);
            },
            (15, 0),
        ),
        (
            "written, half of it moved by mremap",
            |r, a, m| {
                write(r, a);
                r.cpu.mremap(a, 8 * PAGE, 8 * PAGE, m, FAR).unwrap();
            },
            (15, 1),
        ),
    ];
    for scheme in SCHEMES {
        for (what, steps, (file, anon)) in cases {
            let path = temp_file(&format!("fork-cow-{scheme:?}"), 16);
            let mut r = rig(scheme);
            let f = r.machine.open_file(&path).unwrap();
            let a = r.cpu.mmap_file(0, 16 * PAGE, Prot::RW, PRIVATE, &f, 0).unwrap();
            drop(f);
            for i in 0..16 {
                r.cpu.read_u8(a + i * PAGE).unwrap();
            }
            steps(&mut r, a.as_u64(), moved);
            let parent = r.proc.clone();
            let child = r.cpu.fork(&parent).unwrap();
            let crss = child.rss();
            r.check();
            r.cpu.exit_process(child);
            assert_eq!((crss.file, crss.anon), (file, anon), "{scheme:?}, {what}: the child's (file, anon) RSS");
            let _ = std::fs::remove_dir_all(path.parent().unwrap());
        }
    }
}

/// A private file mapping written once (its mark set: Linux's anon_vma),
/// split by mprotect and protected back, is one mapping again: Linux's
/// halves share the anon_vma, and mremap of the whole range works. (Review:
/// each half got a mark of its own and the halves never merged back.)
#[test]
fn a_written_private_file_mapping_split_and_protected_back_merges() {
    use oxmm::mm::flags::RemapFlags;
    for scheme in SCHEMES {
        let path = temp_file(&format!("remerge-{scheme:?}"), 16);
        let mut r = rig(scheme);
        let f = r.machine.open_file(&path).unwrap();
        let a = r.cpu.mmap_file(0, 16 * PAGE, Prot::RW, PRIVATE, &f, 0).unwrap().as_u64();
        drop(f);
        let vmas = |r: &Rig| r.proc.mm().write().vmas.overlapping(a, a + 16 * PAGE).len();
        r.cpu.write_u8(va(a + PAGE), 5).unwrap();
        r.cpu.mprotect(a + 8 * PAGE, 8 * PAGE, Prot::READ).unwrap();
        assert_eq!(vmas(&r), 2);
        r.cpu.mprotect(a + 8 * PAGE, 8 * PAGE, Prot::RW).unwrap();
        assert_eq!(vmas(&r), 1, "{scheme:?}: the halves merge back");
        let b = r.cpu.mremap(a, 16 * PAGE, 32 * PAGE, RemapFlags::MAYMOVE, 0).expect("mremap of the whole mapping");
        assert_eq!(r.cpu.read_u8(b + PAGE).unwrap(), 5);
        r.cpu.munmap(b.as_u64(), 32 * PAGE).unwrap();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
