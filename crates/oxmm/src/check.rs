//! The invariant checker.
//!
//! Checks, with every mm's mmap lock held for writing (so no fault, unmap or
//! protection change is half done), the invariants DESIGN.md names:
//!
//! 1. every page-table page reachable from a root is an allocated frame
//!    flagged PAGETABLE, and every frame so flagged is reachable (no
//!    page-table leak), and `NrPageTables` counts them;
//! 2. every PTE holding a frame lies inside a VMA and does not allow more
//!    than the VMA does (write, read, execute), and a writable PTE of a
//!    private mapping maps a page no one else maps: an anonymous page
//!    mapped once, never a page-cache page (copy-on-write);
//! 3. `mapcount(frame)` equals the number of PTEs mapping it, for every
//!    frame other than the zero page;
//! 4. each mm's folded RSS equals its PTEs mapping a frame other than the
//!    zero page (the raw sums, before the fold's clamp at zero);
//! 5. every allocated anonymous frame is mapped (no leak), and
//!    `NrAnonPages` counts them;
//! 6. no frame was freed twice;
//! 7. when no mm is alive, the free count is the boot count less the zero
//!    page;
//! 8. the reverse map finds exactly the PTEs that map each page — every PTE
//!    found, no stale entry, also on pages nothing maps — under either
//!    scheme, and the pte-chain counters (chained frames) agree with the
//!    frames' maps;
//! 9. every allocated frame of a movable zone was allocated movable (an
//!    unmovable allocation never gets a frame there, so the zone can be
//!    emptied by migration), and every page-table page is movable (seed
//!    004: tables relocate).

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::addr::Pfn;
use crate::arch::{load_entry, EntryKind, Native, PagingFormat, Pte};
use crate::mm::vma::VmaTree;
use crate::mm::{Mm, MmState};
use crate::phys::frame::flags;
use crate::phys::ZoneKind;
use crate::rmap::{PteRef, RmapScheme};
use crate::stats::Stat;
use crate::system::System;

/// What the checker found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckError {
    /// One line per violation (capped).
    pub violations: Vec<String>,
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} invariant violation(s):", self.violations.len())?;
        for v in self.violations.iter().take(32) {
            writeln!(f, "  {v}")?;
        }
        Ok(())
    }
}

/// What the checker counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckSummary {
    /// Live address spaces.
    pub mms: usize,
    /// Page-table pages reachable.
    pub page_tables: u64,
    /// PTEs mapping a frame (zero page included).
    pub mapped_ptes: u64,
    /// Frames mapped at least once (zero page excluded).
    pub mapped_frames: u64,
}

struct Walk<'a> {
    sys: &'a System,
    counts: BTreeMap<u64, i64>,
    /// Where each frame is mapped (level-1 PTEs).
    locations: BTreeMap<u64, Vec<PteRef>>,
    tables: BTreeSet<u64>,
    v: Vec<String>,
    mapped_ptes: u64,
    /// Writable PTEs of private mappings: (mm, address, frame), checked
    /// once every PTE is counted.
    private_writable: Vec<(u64, u64, Pfn)>,
}

impl Walk<'_> {
    fn bad(&mut self, s: String) {
        if self.v.len() < 1000 {
            self.v.push(s);
        }
    }

    fn table(&mut self, mm: u64, vmas: &VmaTree, table: Pfn, level: usize, base: u64, rss: &mut [u64; 3]) {
        if !self.tables.insert(table.as_u64()) {
            self.bad(format!("mm {mm}: table {table:?} reachable twice"));
            return;
        }
        let fr = self.sys.phys.frame(table);
        if !fr.has(flags::PAGETABLE | flags::ALLOCATED) {
            self.bad(format!("mm {mm}: table {table:?} has flags {:#x}", fr.flags()));
        }
        for i in 0..Native::ENTRIES {
            let va = base + ((i as u64) << (12 + 9 * (level - 1)));
            if level == 4 && i >= 256 {
                break;
            }
            // SAFETY:
            // - `table` is reachable from a root whose mm's write lock the
            //   checker holds, so it is a live table and stays one;
            // - i < 512.
            let raw = load_entry(unsafe { self.sys.entry(table, i) });
            match Native::decode(raw.0, level) {
                EntryKind::None => {
                    if raw.0 != 0 {
                        self.bad(format!("mm {mm}: junk entry {raw:?} at level {level} va {va:#x}"));
                    }
                }
                EntryKind::Table(child) => self.table(mm, vmas, child, level - 1, va, rss),
                EntryKind::Leaf(pfn) | EntryKind::ProtNone(pfn) => {
                    self.mapped_ptes += 1;
                    let size = 1u64 << (12 + 9 * (level - 1));
                    match vmas.find(va) {
                        None => self.bad(format!("mm {mm}: PTE {raw:?} at {va:#x} outside every VMA")),
                        Some(v) => {
                            if va + size > v.end {
                                self.bad(format!("mm {mm}: leaf at {va:#x} crosses VMA end {:#x}", v.end));
                            }
                            if raw.is_writable() && raw.is_present() && !v.prot.writable() {
                                self.bad(format!("mm {mm}: writable PTE at {va:#x} in VMA with prot {:?}", v.prot));
                            }
                            if raw.is_present() != v.prot.readable() {
                                self.bad(format!(
                                    "mm {mm}: PTE {raw:?} at {va:#x} disagrees with VMA prot {:?}",
                                    v.prot
                                ));
                            }
                            if raw.is_present() && raw.0 & Pte::NX == 0 && !v.prot.executable() {
                                self.bad(format!("mm {mm}: executable PTE at {va:#x} in VMA with prot {:?}", v.prot));
                            }
                            if raw.is_present() && raw.is_writable() && !v.is_shared() {
                                self.private_writable.push((mm, va, pfn));
                            }
                        }
                    }
                    if pfn.as_u64() >= self.sys.phys.total_frames() {
                        self.bad(format!("mm {mm}: PTE at {va:#x} maps {pfn:?} beyond memory"));
                        continue;
                    }
                    if pfn == self.sys.zero_pfn() {
                        if raw.is_writable() {
                            self.bad(format!("mm {mm}: zero page mapped writable at {va:#x}"));
                        }
                        continue;
                    }
                    let f = self.sys.phys.frame(pfn);
                    if !f.has(flags::ALLOCATED) {
                        self.bad(format!("mm {mm}: PTE at {va:#x} maps free frame {pfn:?} (flags {:#x})", f.flags()));
                    }
                    *self.counts.entry(pfn.as_u64()).or_insert(0) += 1;
                    if level == 1 {
                        self.locations.entry(pfn.as_u64()).or_default().push(PteRef::new(table, i));
                    }
                    match crate::mm::rss::kind_of_frame(f.flags()) {
                        Some(kind) => rss[kind as usize] += if level == 1 { 1 } else { size / 4096 },
                        None => self.bad(format!(
                            "mm {mm}: PTE at {va:#x} maps {pfn:?}, not a user page (flags {:#x})",
                            f.flags()
                        )),
                    }
                }
            }
        }
    }
}

/// Run every check. Takes every mm's mmap lock for writing, in id order.
pub fn check(sys: &System) -> Result<CheckSummary, CheckError> {
    let all: Vec<alloc::sync::Arc<Mm>> = sys.mms();
    // Lock first, then keep the live ones: an exit between a check of
    // `dead` and the lock would leave a freed root to walk.
    let (mms, guards): (Vec<_>, Vec<_>) =
        all.iter().map(|m| (m, m.write())).filter(|(_, g)| !g.dead).map(|(m, g)| (m.clone(), g)).unzip();
    let mut w = Walk {
        sys,
        counts: BTreeMap::new(),
        locations: BTreeMap::new(),
        tables: BTreeSet::new(),
        v: Vec::new(),
        mapped_ptes: 0,
        private_writable: Vec::new(),
    };
    for (mm, st) in mms.iter().zip(guards.iter()) {
        let mut rss = [0u64; 3];
        w.table(mm.id(), &st.vmas, mm.root(), Native::LEVELS, 0, &mut rss);
        // The raw sums: the fold clamps at zero, which would hide a counter
        // driven below it.
        let raw = mm.rss_counters().fold_raw();
        for ((name, have), want) in ["anon", "file", "shmem"].into_iter().zip(raw).zip(rss) {
            if have != want as i64 {
                w.bad(format!("mm {}: RSS {name} {have} but {want} PTEs map such frames", mm.id()));
            }
        }
    }
    // Copy-on-write: a private mapping writes only to a page it alone maps.
    for (mm, va, pfn) in core::mem::take(&mut w.private_writable) {
        if pfn == sys.zero_pfn() || pfn.as_u64() >= sys.phys.total_frames() {
            continue; // reported above
        }
        let fl = sys.phys.frame(pfn).flags();
        let ptes = w.counts.get(&pfn.as_u64()).copied().unwrap_or(0);
        if fl & (flags::FILE | flags::SHMEM) != 0 {
            w.bad(format!("mm {mm}: writable PTE at {va:#x} of a private mapping maps page-cache page {pfn:?}"));
        } else if ptes > 1 {
            w.bad(format!("mm {mm}: writable PTE at {va:#x} of a private mapping maps {pfn:?}, which {ptes} PTEs map"));
        }
    }
    check_rmap(&mut w, &mms, &guards);
    let mut anon = 0i64;
    let mut tables_flagged = 0u64;
    let mut allocated = 0u64;
    let movable: Vec<&crate::phys::Zone> = sys.phys.zones().iter().filter(|z| z.kind == ZoneKind::Movable).collect();
    for p in 1..sys.phys.total_frames() {
        let pfn = Pfn::try_new(p).expect("frame table index fits a Pfn");
        let f = sys.phys.frame(pfn);
        let fl = f.flags();
        if fl & flags::ALLOCATED == 0 {
            continue;
        }
        allocated += 1;
        if fl & flags::MOVABLE == 0 && movable.iter().any(|z| z.contains(pfn)) {
            w.bad(format!("frame {pfn:?} of a movable zone allocated unmovable (flags {fl:#x})"));
        }
        let mapped = w.counts.get(&p).copied().unwrap_or(0);
        if fl & flags::PAGETABLE != 0 {
            tables_flagged += 1;
            if fl & flags::MOVABLE == 0 {
                w.bad(format!("page-table page {pfn:?} allocated unmovable (flags {fl:#x})"));
            }
            if !w.tables.contains(&p) {
                w.bad(format!(
                    "page-table page {pfn:?} (owner mm {}) is not reachable: leaked",
                    f.mapping.load(crate::sync::Ordering::Relaxed)
                ));
            }
        }
        if fl & flags::ANON != 0 {
            anon += 1;
            if mapped == 0 {
                w.bad(format!("anonymous frame {pfn:?} is allocated but mapped nowhere: leaked"));
            }
        }
        if fl & flags::ZERO == 0 && i64::from(f.mapcount()) != mapped {
            w.bad(format!("frame {pfn:?}: mapcount {} but {} PTEs map it", f.mapcount(), mapped));
        }
    }
    if sys.stats.get(Stat::NrPageTables) != tables_flagged as i64 {
        w.bad(format!(
            "NrPageTables {} but {} frames are page tables",
            sys.stats.get(Stat::NrPageTables),
            tables_flagged
        ));
    }
    if sys.stats.get(Stat::NrAnonPages) != anon {
        w.bad(format!("NrAnonPages {} but {} frames are anonymous", sys.stats.get(Stat::NrAnonPages), anon));
    }
    if sys.phys.bad_frees() != 0 {
        w.bad(format!("{} frame(s) freed twice", sys.phys.bad_frees()));
    }
    let free = sys.phys.free_frames();
    if free + allocated != sys.phys.boot_free() {
        w.bad(format!("free {} + allocated {} != boot free {}", free, allocated, sys.phys.boot_free()));
    }
    if mms.is_empty() && free != sys.phys.boot_free() - 1 {
        w.bad(format!("no mm alive but {} frames free of {} (zero page aside): leak", free, sys.phys.boot_free() - 1));
    }
    drop(guards);
    let summary = CheckSummary {
        mms: mms.len(),
        page_tables: w.tables.len() as u64,
        mapped_ptes: w.mapped_ptes,
        mapped_frames: w.counts.len() as u64,
    };
    if w.v.is_empty() {
        Ok(summary)
    } else {
        Err(CheckError { violations: w.v })
    }
}

/// Invariant 8: for every mapped user frame, the reverse map's answer equals
/// the PTEs the page-table walk found. Runs with every mm's write lock held
/// (`guards`) and the chain lock exclusive (no coalescing, no rmap change).
fn check_rmap(
    w: &mut Walk<'_>,
    mms: &[alloc::sync::Arc<Mm>],
    guards: &[crate::sync::brlock::BrWriteGuard<'_, MmState>],
) {
    let sys = w.sys;
    let scheme = sys.rmap().scheme;
    if scheme == RmapScheme::None {
        return;
    }
    let _chains = sys.rmap().chains.lock.write();
    let mut chained = 0i64;
    if scheme == RmapScheme::PteChains {
        for p in 1..sys.phys.total_frames() {
            let f = sys.phys.frame(Pfn::new_unchecked(p));
            if f.flags() & flags::ALLOCATED == 0 || f.flags() & (flags::ANON | flags::FILE | flags::SHMEM) == 0 {
                continue;
            }
            let word = f.rmap.load(crate::sync::Ordering::Relaxed);
            if word & crate::rmap::chain::CHAIN != 0 {
                chained += 1;
            }
            // A page no PTE maps (a cached file page, say) has no map left;
            // the mapped ones are compared entry by entry below.
            if word != 0 && !w.locations.contains_key(&p) {
                let mut v = Vec::new();
                sys.rmap().chains.refs(sys, f, &mut v);
                w.bad(format!("frame {:?}: no PTE maps it but the reverse map gives {v:?}", Pfn::new_unchecked(p)));
            }
        }
        let counted = sys.rmap().chains.chained_frames.load(crate::sync::Ordering::Relaxed);
        if counted != chained {
            w.bad(format!("ReverseMaps counts {counted} chained frames, {chained} have chains"));
        }
    }
    let frames: Vec<(u64, Vec<PteRef>)> = w.locations.iter().map(|(k, v)| (*k, v.clone())).collect();
    for (p, mut actual) in frames {
        let pfn = Pfn::new_unchecked(p);
        if sys.phys.frame(pfn).flags() & (flags::ANON | flags::FILE | flags::SHMEM) == 0 {
            continue;
        }
        let mut found: Vec<PteRef> = match scheme {
            RmapScheme::PteChains => {
                let mut v = Vec::new();
                sys.rmap().chains.refs(sys, sys.phys.frame(pfn), &mut v);
                v
            }
            RmapScheme::Object => crate::rmap::object_mappings(sys, pfn, &|m: &Mm| {
                mms.iter().zip(guards.iter()).find(|(x, _)| x.id() == m.id()).map(|(x, g)| (x.root(), &g.vmas))
            })
            .into_iter()
            .map(|m| m.pte)
            .collect(),
            RmapScheme::None => continue,
        };
        actual.sort();
        found.sort();
        if actual != found {
            w.bad(format!("frame {pfn:?}: PTEs map it at {actual:?} but the reverse map gives {found:?}"));
        }
    }
}
