//! Reverse mapping: from a frame to every PTE that maps it.
//!
//! Two schemes behind one interface, chosen in
//! [`SystemConfig::rmap`](crate::system::SystemConfig::rmap):
//!
//! - [`chain`]: pte chains (seeds 000 and 001) — a direct pointer for a
//!   page mapped once, shared immutable chains of PTE references for pages
//!   mapped more than once; hashed rmap locks with the index re-check
//!   ([`locks`]); batched setup in fork and teardown in zap.
//! - [`object`]: object-based (anon_vma) — a page names its object and
//!   offset; its mappings are found through the VMAs of the object's member
//!   address spaces.
//! - none: no reverse map (the baseline the fork benchmark compares with).
//!
//! Both answer [`mappings`] — every (mm, address, PTE) mapping a frame —
//! and provide [`page_referenced`] (test-and-clear of accessed bits) and
//! [`try_to_unmap`] (unmap every mapping), for reclaim and migration.
//! A PTE is named by a [`PteRef`]: (page-table frame, slot), so moving a
//! page-table page (seed 004) can rewrite references.

pub mod chain;
pub mod locks;
pub mod object;

use alloc::sync::Arc;
use alloc::vec::Vec;

use self::chain::ChainStore;
use self::locks::RmapLocks;
use self::object::AnonVmas;
use crate::addr::{Pfn, VirtAddr, PAGE_SIZE};
use crate::arch::{cas_entry, load_entry, xchg_entry, Pte};
use crate::errno::{Errno, SysResult};
use crate::mm::vma::VmaTree;
use crate::mm::Mm;
use crate::pgtable::lock::PtlGuard;
use crate::phys::frame::{flags, Frame};
use crate::platform::CpuId;
use crate::sync::brlock::BrReadGuard;
use crate::sync::Ordering;
use crate::system::System;
use crate::tlb::MmuGather;

/// Which reverse-map scheme a system runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RmapScheme {
    /// pte chains with shared chain nodes.
    PteChains,
    /// Object-based (anon_vma).
    Object,
    /// No reverse map.
    None,
}

/// A PTE named by its page-table frame and slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PteRef(pub u64);

impl PteRef {
    /// Slot `slot` (< 512) of page-table page `table`.
    #[inline]
    pub const fn new(table: Pfn, slot: usize) -> PteRef {
        PteRef((table.as_u64() << 9) | slot as u64)
    }
    /// The page-table frame.
    #[inline]
    pub const fn table(self) -> Pfn {
        Pfn::new_unchecked(self.0 >> 9)
    }
    /// The slot.
    #[inline]
    pub const fn slot(self) -> usize {
        (self.0 & 511) as usize
    }
}

/// One mapping of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The address space's id.
    pub mm: u64,
    /// The virtual address.
    pub va: VirtAddr,
    /// The PTE.
    pub pte: PteRef,
}

/// The reverse-map state of a system.
pub struct Rmap {
    /// The scheme.
    pub scheme: RmapScheme,
    /// Hashed rmap locks.
    pub locks: RmapLocks,
    /// pte chain storage.
    pub chains: ChainStore,
    /// anon_vmas.
    pub objects: AnonVmas,
}

impl Rmap {
    /// Empty, for `cpus` CPUs.
    pub fn new(scheme: RmapScheme, cpus: usize) -> Rmap {
        Rmap { scheme, locks: RmapLocks::new(), chains: ChainStore::new(cpus), objects: AnonVmas::new() }
    }
}

/// Reverse-map statistics (seed 000 asks for them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RmapStats {
    /// Frames whose reverse map is a chain (`ReverseMaps`; direct ones cost
    /// nothing and are not counted, as in seed 000).
    pub reverse_maps: u64,
    /// Chain nodes in use.
    pub chain_nodes: u64,
    /// Bytes of chain nodes in use.
    pub chain_bytes: u64,
    /// Bytes of node pages held (nodes plus their fragmentation).
    pub chain_page_bytes: u64,
    /// anon_vmas alive and their bytes.
    pub anon_vmas: u64,
    /// Bytes of anon_vmas.
    pub anon_vma_bytes: u64,
    /// PTEs mapping a frame (zero page excluded).
    pub mapped_ptes: u64,
    /// Bytes of page-table pages.
    pub page_table_bytes: u64,
}

/// The chain lock, shared, when the system runs pte chains: held across a
/// PTE change and the matching chain change, so the coalescer never sees
/// them disagree.
#[inline]
pub(crate) fn guard(sys: &System, cpu: CpuId) -> Option<BrReadGuard<'_, ()>> {
    (sys.rmap().scheme == RmapScheme::PteChains).then(|| sys.rmap().chains.lock.read(cpu))
}

/// Set up the reverse map of a fresh, unpublished anonymous page about to
/// be mapped by `r` in an mm (pte chains: a direct pointer; object: the
/// anon_vma and index, which the caller sets in `mapping`/`index`).
#[inline]
pub(crate) fn new_page(sys: &System, f: &Frame, r: PteRef) {
    if sys.rmap().scheme == RmapScheme::PteChains {
        ChainStore::set_direct(f, r);
    }
}

/// Undo [`new_page`] for a page that lost its publication race.
#[inline]
pub(crate) fn unpublished(f: &Frame) {
    ChainStore::clear_unpublished(f);
}

/// A batch of reverse-map changes over one page table (fork's copy of it,
/// zap's teardown): under pte chains, [`chain::Batch`]; otherwise nothing
/// to do per page.
pub(crate) struct RmapBatch<'a>(Option<chain::Batch<'a>>);

/// Start a batch over the page table mapping `[base, base + 2 MiB)`.
/// Enters with: the chain lock shared ([`guard`]) and that table's lock.
#[inline]
pub(crate) fn begin_batch(sys: &System, cpu: CpuId, add: bool, base: VirtAddr) -> RmapBatch<'_> {
    RmapBatch(
        (sys.rmap().scheme == RmapScheme::PteChains).then(|| sys.rmap().chains.begin(sys, cpu, add, base.vpn() & !511)),
    )
}

impl RmapBatch<'_> {
    /// The change for frame `pfn` (metadata `f`) mapped by `r`; `false`
    /// if an addition found no node memory and left the page's map as it
    /// was (the caller must undo the mapping; [`chain::Batch::push`]).
    #[inline]
    #[must_use]
    pub(crate) fn push(&mut self, pfn: Pfn, r: PteRef, f: &Frame) -> bool {
        match &mut self.0 {
            Some(b) => b.push(pfn, r, f),
            None => true,
        }
    }

    /// Finish the batch; returns the pages pushed outside its index range
    /// whose change was left undone, as `push` would have said.
    #[must_use]
    pub(crate) fn finish(self) -> Vec<(Pfn, PteRef)> {
        match self.0 {
            Some(b) => b.finish(),
            None => Vec::new(),
        }
    }
}

/// Remove one mapping. Enters with: the chain lock shared.
pub(crate) fn remove_one(sys: &System, cpu: CpuId, pfn: Pfn, r: PteRef) {
    if sys.rmap().scheme == RmapScheme::PteChains {
        // A removal falls back to maps that need no node memory (see
        // `chain::ChainStore::start_group`); what is still left undone is
        // counted there and reported by the checker.
        let _ = sys.rmap().chains.one(sys, cpu, pfn, r, false);
    }
}

/// Add one mapping; `false` if pte chains found no node memory for it (the
/// caller must not make the mapping, or must undo it). Enters with: the
/// chain lock shared.
#[must_use]
pub(crate) fn add_one(sys: &System, cpu: CpuId, pfn: Pfn, r: PteRef) -> bool {
    sys.rmap().scheme != RmapScheme::PteChains || sys.rmap().chains.one(sys, cpu, pfn, r, true)
}

/// Move one mapping from PTE `from` to PTE `to` (mremap); `false` if pte
/// chains found no node memory for it, leaving the map as it was. Enters
/// with: the chain lock shared.
pub(crate) fn move_one(sys: &System, cpu: CpuId, pfn: Pfn, from: PteRef, to: PteRef) -> bool {
    sys.rmap().scheme != RmapScheme::PteChains || sys.rmap().chains.replace(sys, cpu, pfn, from, to)
}

/// Object scheme: the child of a fork joins every anon_vma its VMAs carry.
pub(crate) fn fork_vmas(child: &Arc<Mm>, cvmas: &VmaTree) {
    if child.sys().rmap().scheme != RmapScheme::Object {
        return;
    }
    let mut ids: Vec<u64> = cvmas.iter().map(|v| v.anon_vma).filter(|i| *i != 0).collect();
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        child.sys().rmap().objects.join(id, child);
    }
}

/// Object scheme: an exiting mm leaves the anon_vmas its VMAs carried.
pub(crate) fn mm_exit(mm: &Mm, vmas: &VmaTree) {
    let mut ids: Vec<u64> = vmas.iter().map(|v| v.anon_vma).filter(|i| *i != 0).collect();
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        mm.sys().rmap().objects.leave(id, mm.id());
    }
}

/// The address space and address a PTE reference names (from its table's
/// metadata: owner and first mapped page).
pub fn resolve(sys: &System, r: PteRef) -> (u64, VirtAddr) {
    let t = sys.phys.frame(r.table());
    let mm = t.mapping.load(Ordering::Relaxed);
    let base = t.index.load(Ordering::Relaxed) << 12;
    (mm, VirtAddr::new_truncate(base + r.slot() as u64 * PAGE_SIZE))
}

/// pte chains: the PTE references of `pfn`'s reverse map.
pub fn chain_refs(sys: &System, pfn: Pfn) -> Vec<PteRef> {
    let f = sys.phys.frame(pfn);
    let _g = sys.rmap().locks.lock_rmap(f);
    let mut v = Vec::new();
    sys.rmap().chains.refs(sys, f, &mut v);
    v
}

/// Object scheme: the object of `pfn` — its anon_vma, or for a file or
/// shmem page its page cache, whose interval tree names the address spaces
/// mapping its index — as (member address spaces, object id, is a file,
/// index); `None` if the object is gone.
fn object_of(sys: &System, pfn: Pfn) -> Option<(Vec<Arc<Mm>>, u64, bool, u64)> {
    let f = sys.phys.frame(pfn);
    let index = f.index.load(Ordering::Relaxed);
    let id = f.mapping.load(Ordering::Relaxed);
    if f.flags() & (flags::FILE | flags::SHMEM) != 0 {
        Some((sys.caches().get(id)?.users_of(index), id, true, index))
    } else {
        Some((sys.rmap().objects.get(id)?.members(), id, false, index))
    }
}

/// Object scheme: the mappings of `pfn` (object `id`, page `index`) in one
/// address space, from its VMAs tagged with the object. Only addresses
/// whose PTE maps `pfn` count.
///
/// Enters with: that address space's mmap lock (`root`, `vmas` are its).
fn object_mappings_in(
    sys: &System,
    pfn: Pfn,
    (id, is_file, index): (u64, bool, u64),
    (mm, root, vmas): (u64, Pfn, &VmaTree),
    out: &mut Vec<Mapping>,
) {
    for v in vmas.iter().filter(|v| if is_file { v.file == id } else { v.anon_vma == id }) {
        let Some(a) = v.address_of(index) else { continue };
        let va = VirtAddr::new_truncate(a);
        // SAFETY: the caller holds this mm's mmap lock while we look.
        let Ok(table) = (unsafe { crate::pgtable::pte_table(sys, root, va) }) else { continue };
        // SAFETY: as above; the slot index is below 512.
        let pte = load_entry(unsafe { sys.entry(table, va.table_index(1)) });
        if pte.maps_frame() && pte.pfn() == pfn {
            out.push(Mapping { mm, va, pte: PteRef::new(table, va.table_index(1)) });
        }
    }
}

/// Object scheme: where `pfn` is mapped, through the VMAs `vmas_of` gives
/// for each member address space (the caller holds those mms' mmap locks,
/// as the checker does).
pub fn object_mappings<'a>(
    sys: &System,
    pfn: Pfn,
    vmas_of: &dyn Fn(&Mm) -> Option<(Pfn, &'a VmaTree)>,
) -> Vec<Mapping> {
    let mut out = Vec::new();
    let Some((members, id, is_file, index)) = object_of(sys, pfn) else { return out };
    for mm in members {
        if let Some((root, vmas)) = vmas_of(&mm) {
            object_mappings_in(sys, pfn, (id, is_file, index), (mm.id(), root, vmas), &mut out);
        }
    }
    out
}

/// Every mapping of `pfn` (user pages; the zero page has none).
///
/// Takes the mmap lock of each address space involved (for reading), so
/// the caller must hold none.
pub fn mappings(sys: &System, cpu: CpuId, pfn: Pfn) -> SysResult<Vec<Mapping>> {
    match sys.rmap().scheme {
        RmapScheme::None => Err(Errno::ENOSYS),
        RmapScheme::PteChains => {
            let _c = sys.rmap().chains.lock.read(cpu);
            Ok(chain_refs(sys, pfn)
                .into_iter()
                .map(|r| {
                    let (mm, va) = resolve(sys, r);
                    Mapping { mm, va, pte: r }
                })
                .collect())
        }
        RmapScheme::Object => {
            let mut out = Vec::new();
            let Some((members, id, is_file, index)) = object_of(sys, pfn) else { return Ok(out) };
            for mm in members {
                let st = mm.read(cpu);
                if !st.dead {
                    object_mappings_in(sys, pfn, (id, is_file, index), (mm.id(), mm.root(), &st.vmas), &mut out);
                }
            }
            Ok(out)
        }
    }
}

/// For each mapping of `pfn`, with that mm's mmap read lock and the PTE's
/// table lock held, run `f` on the PTE slot; `f` returns whether it changed
/// the PTE in a way that needs a TLB flush.
fn for_each_locked(
    sys: &System,
    cpu: CpuId,
    pfn: Pfn,
    mut f: impl FnMut(&Mm, &core::sync::atomic::AtomicU64, VirtAddr, PteRef, &mut MmuGather<'_>),
) -> SysResult<()> {
    // The mappings are gathered first, with no lock held; then each is
    // visited in the lock order: its mm's mmap lock, the chain lock, its
    // table's lock.
    for m in mappings(sys, cpu, pfn)? {
        let Some(mm) = sys.mms().into_iter().find(|x| x.id() == m.mm) else { continue };
        let st = mm.read(cpu);
        if st.dead {
            continue;
        }
        let _chains = guard(sys, cpu);
        // SAFETY: the mmap read lock `st` is held while the table is used.
        let Ok(table) = (unsafe { crate::pgtable::pte_table(sys, mm.root(), m.va) }) else { continue };
        let r = PteRef::new(table, m.va.table_index(1));
        // SAFETY: as above; the slot index is below 512.
        let slot = unsafe { sys.entry(table, r.slot()) };
        let _ptl = PtlGuard::lock(sys, r.table());
        let mut g = MmuGather::new(sys, cpu, mm.id());
        f(&mm, slot, m.va, r, &mut g);
        g.finish(mm.cpumask());
        // The guards go in reverse order at the end of the iteration: the
        // table lock before the mmap lock that keeps the table alive.
    }
    Ok(())
}

/// Test and clear the accessed bit of every PTE mapping `pfn`; the number
/// that were set (Linux's `folio_referenced`). Cleared entries are flushed
/// so that the next access sets the bit again.
///
/// The caller holds a reference to the page (Linux's `folio_referenced`
/// wants it locked and referenced): the mappings are gathered first and
/// visited after, and a page freed in between could be reused — at one of
/// the gathered PTEs, even — by a page that is none of the caller's
/// business.
///
/// A set accessed bit on a page that prefault mapped means it was used:
/// its [`Pte::SW_PREFAULT`] mark goes with the accessed bit, or zap would
/// later count it among the pages prefaulted for nothing.
pub fn page_referenced(sys: &System, cpu: CpuId, pfn: Pfn) -> SysResult<usize> {
    let mut n = 0;
    for_each_locked(sys, cpu, pfn, |_, slot, va, _, g| {
        let mut old = load_entry(slot);
        while old.maps_frame() && old.pfn() == pfn && old.is_accessed() {
            match cas_entry(slot, old, old.without(Pte::ACCESSED | Pte::SW_PREFAULT)) {
                Ok(_) => {
                    n += 1;
                    g.add_range(va, va + PAGE_SIZE);
                    break;
                }
                Err(now) => old = now,
            }
        }
    })?;
    Ok(n)
}

/// Unmap `pfn` from every address space (Linux's `try_to_unmap`): each PTE
/// is cleared, the mm's RSS and the frame's mapcount drop, the TLBs are
/// flushed, and the mapping's reference is dropped. Returns the mappings
/// removed. (Without swap, the data of an unmapped anonymous page is lost
/// once the last reference goes: callers are migration and tests.)
///
/// The caller holds a reference to the page, as Linux's caller holds the
/// folio locked and referenced: each visit drops a mapping's reference, and
/// without the caller's, the page could be freed and reused (a new page at
/// a PTE still to be visited) before the walk ends.
pub fn try_to_unmap(sys: &System, cpu: CpuId, pfn: Pfn) -> SysResult<usize> {
    let mut n = 0;
    for_each_locked(sys, cpu, pfn, |mm, slot, va, r, g| {
        if !(load_entry(slot).maps_frame() && load_entry(slot).pfn() == pfn) {
            return;
        }
        // The exchange returns the dirty bit set up to this instant: a
        // shared file page written through this PTE must reach writeback.
        let old = xchg_entry(slot, Pte::NONE);
        g.add_range(va, va + PAGE_SIZE);
        if old.0 & Pte::SW_PREFAULT != 0 && !old.is_accessed() {
            sys.stats.inc(cpu, crate::stats::Stat::PrefaultUnused);
        }
        let f = sys.phys.frame(pfn);
        if old.is_dirty() && f.has(flags::FILE) {
            if let Some(c) = sys.caches().get(f.mapping.load(Ordering::Relaxed)) {
                c.mark_dirty(f.index.load(Ordering::Relaxed));
            }
        }
        f.mapcount.fetch_sub(1, Ordering::AcqRel);
        if let Some(kind) = crate::mm::rss::kind_of_frame(f.flags()) {
            mm.add_rss(cpu, kind, -1);
        }
        remove_one(sys, cpu, pfn, r);
        g.add_page(pfn);
        n += 1;
    })?;
    Ok(n)
}

/// Reverse-map statistics now.
pub fn stats(sys: &System) -> RmapStats {
    let chains = &sys.rmap().chains;
    let nodes = chains.nodes.load(Ordering::Relaxed).max(0) as u64;
    let mut mapped = 0u64;
    for p in 1..sys.phys.total_frames() {
        let f = sys.phys.frame(Pfn::new_unchecked(p));
        if f.flags() & flags::ALLOCATED != 0 && f.flags() & flags::ZERO == 0 {
            mapped += f.mapcount().max(0) as u64;
        }
    }
    let avs = sys.rmap().objects.count();
    RmapStats {
        reverse_maps: chains.chained_frames.load(Ordering::Relaxed).max(0) as u64,
        chain_nodes: nodes,
        chain_bytes: nodes * chain::NODE_BYTES,
        chain_page_bytes: chains.pages() * PAGE_SIZE,
        anon_vmas: avs,
        anon_vma_bytes: avs * object::ANON_VMA_BYTES,
        mapped_ptes: mapped,
        page_table_bytes: sys.stats.get(crate::stats::Stat::NrPageTables).max(0) as u64 * PAGE_SIZE,
    }
}
