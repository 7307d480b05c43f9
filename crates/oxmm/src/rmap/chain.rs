//! pte chains (seeds 000 and 001), with chains shared between pages.
//!
//! A page mapped once holds a direct reference to its PTE in its `rmap`
//! word (PageDirect). A page mapped more than once points at a *chain*: a
//! list of one-cache-line nodes (two header words, six entries). An entry
//! names a PTE as a page-table page plus a slot, so moving a page-table
//! page (seed 004) only has to rewrite entries. An entry is either
//! *explicit* (table and slot) or, in the common case, just the table: the
//! slot is then the page's own `index & 511`, true whenever the page sits at
//! the virtual address its index names — always, after fork, until an
//! mremap moves it.
//!
//! Chains are immutable once built, and shared: after a fork, all 512 pages
//! of a page-table page are mapped by the same set of page tables, so they
//! can point at one chain. That is seed 000's unfinished "pte chain nodes
//! can be shared" optimisation, and it is what keeps chain memory a small
//! fraction of page-table memory in the fork fan-out case where one chain
//! per page would cost twice the page tables (seed 000's measurement). A
//! change to a page's mappings builds a new chain (copy-on-write) and drops
//! the page's reference to the old one; batches (fork's copy of a table,
//! zap's teardown of one) build one new chain per group of pages that
//! shared an old one. A chain that shrinks to one entry stays a chain: no
//! collapse back to direct (seed 000: bash's fork/exec would rebuild it at
//! once).
//!
//! Node memory comes from whole frames, 64 nodes each, allocated densest
//! page first. [`ChainStore::coalesce`] is seed 000's defragmentation: it
//! empties sparse node pages into dense ones, moving each node and
//! re-pointing what points at it (the previous node of its chain, or — for
//! a chain's head — every page sharing it, found through the page table its
//! first entry names), then frees the emptied pages.
//!
//! Locking: a page's `rmap` word changes under its rmap lock
//! ([`super::locks`]). Every path that changes a PTE mapping a page *and*
//! that page's chain holds the chain lock shared across both (zap, fork,
//! COW, mremap), so a PTE and its chain entry agree whenever the chain lock
//! is free; the coalescer takes it exclusively and relies on that.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::sync::atomic::AtomicU64 as HwAtomicU64;

use super::PteRef;
use crate::addr::{Pfn, PAGE_SIZE};
use crate::arch::load_entry;
use crate::phys::frame::Frame;
use crate::phys::Gfp;
use crate::platform::CpuId;
use crate::sync::brlock::BrLock;
use crate::sync::{new_mutex, AtomicI64, Mutex, Ordering::Relaxed};
use crate::system::System;

/// `rmap` word tag: a direct PTE reference in the low bits.
pub const DIRECT: u64 = 1 << 62;
/// `rmap` word tag: a chain handle in the low bits.
pub const CHAIN: u64 = 1 << 61;
const TAGS: u64 = DIRECT | CHAIN;
/// Entry tag: an explicit (table, slot) reference.
const EXPLICIT: u64 = 1 << 63;
/// Head-node flag in header word 0.
const HEAD: u64 = 1 << 63;
/// Entries per node (one 64-byte node: two header words, six entries).
pub const NODE_ENTRIES: usize = 6;
/// Bytes per node.
pub const NODE_BYTES: u64 = 64;
const NODES_PER_PAGE: u64 = PAGE_SIZE / NODE_BYTES;

/// The entry naming `r` for a page with index `index`.
#[inline]
fn entry_for(r: PteRef, index: u64) -> u64 {
    if r.slot() as u64 == index & 511 {
        r.table().as_u64()
    } else {
        EXPLICIT | r.0
    }
}

/// The PTE an entry names, for a page with index `index`.
#[inline]
fn entry_ref(e: u64, index: u64) -> PteRef {
    if e & EXPLICIT != 0 {
        PteRef(e & !EXPLICIT)
    } else {
        PteRef::new(Pfn::new_unchecked(e), (index & 511) as usize)
    }
}

/// Node pages and chain statistics.
pub struct ChainStore {
    /// Excludes the coalescer (writer) from rmap changes (readers).
    pub lock: BrLock<()>,
    alloc: Mutex<Pages>,
    /// Frames whose rmap is a chain (`ReverseMaps`).
    pub chained_frames: AtomicI64,
    /// Nodes in use.
    pub nodes: AtomicI64,
    /// Fault injection (tests): while non-zero, each node allocation fails
    /// and takes one off.
    #[cfg(feature = "fault-inject")]
    pub fail_node_allocs: core::sync::atomic::AtomicU64,
}

/// Node pages with free nodes, keyed by (nodes in use, pfn): the densest
/// non-full page is the last key below "full".
struct Pages {
    partial: BTreeMap<(u64, u64), ()>,
    pages: u64,
}

impl ChainStore {
    /// No nodes.
    pub fn new(cpus: usize) -> ChainStore {
        ChainStore {
            lock: BrLock::new(cpus, ()),
            alloc: new_mutex(Pages { partial: BTreeMap::new(), pages: 0 }),
            chained_frames: AtomicI64::new(0),
            nodes: AtomicI64::new(0),
            #[cfg(feature = "fault-inject")]
            fail_node_allocs: core::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Node pages held.
    pub fn pages(&self) -> u64 {
        self.alloc.lock().pages
    }

    fn node<'a>(&self, sys: &'a System, h: u64) -> &'a [HwAtomicU64; 8] {
        let pfn = Pfn::new_unchecked(h >> 6);
        let p = sys.frame_ptr(pfn).wrapping_add(((h & 63) * NODE_BYTES) as usize) as *const [HwAtomicU64; 8];
        // SAFETY:
        // - `h` is a handle this store handed out: node `h & 63` of the
        //   chain page `h >> 6`, a frame it allocated and frees only once
        //   every node in it is free; the node is 64-byte aligned in the
        //   direct map, valid for the system's lifetime;
        // - nodes are accessed only atomically.
        unsafe { &*p }
    }

    fn alloc_node(&self, sys: &System, cpu: CpuId, avoid: &[u64]) -> Option<u64> {
        #[cfg(feature = "fault-inject")]
        if self
            .fail_node_allocs
            .fetch_update(core::sync::atomic::Ordering::Relaxed, core::sync::atomic::Ordering::Relaxed, |n| {
                n.checked_sub(1)
            })
            .is_ok()
        {
            return None;
        }
        let mut pages = self.alloc.lock();
        let pick = pages.partial.keys().rev().find(|(_, pfn)| !avoid.contains(pfn)).copied();
        let (used, pfn) = match pick {
            Some(k) => k,
            None => {
                drop(pages);
                // Kernel memory first; then the movable zone, as page
                // tables do: a node page can always be emptied (the
                // coalescer moves its nodes out), and an rmap change that
                // finds the normal zone full while user pages are free
                // must not fail.
                let pfn = sys
                    .phys
                    .alloc_frame(cpu, Gfp::KERNEL)
                    .or_else(|| sys.phys.alloc_frame(cpu, Gfp::MOVABLE))?
                    .as_u64();
                sys.phys.frame(Pfn::new_unchecked(pfn)).rmap.store(0, Relaxed);
                pages = self.alloc.lock();
                pages.pages += 1;
                pages.partial.insert((0, pfn), ());
                (0, pfn)
            }
        };
        let f = sys.phys.frame(Pfn::new_unchecked(pfn));
        let bitmap = f.rmap.load(Relaxed);
        let idx = (!bitmap).trailing_zeros() as u64;
        f.rmap.store(bitmap | (1 << idx), Relaxed);
        pages.partial.remove(&(used, pfn));
        if used + 1 < NODES_PER_PAGE {
            pages.partial.insert((used + 1, pfn), ());
        }
        self.nodes.fetch_add(1, Relaxed);
        Some((pfn << 6) | idx)
    }

    fn free_node(&self, sys: &System, cpu: CpuId, h: u64) {
        for w in self.node(sys, h) {
            w.store(0, Relaxed);
        }
        let pfn = h >> 6;
        let mut pages = self.alloc.lock();
        let f = sys.phys.frame(Pfn::new_unchecked(pfn));
        let bitmap = f.rmap.load(Relaxed);
        let used = u64::from(bitmap.count_ones());
        f.rmap.store(bitmap & !(1 << (h & 63)), Relaxed);
        pages.partial.remove(&(used, pfn));
        self.nodes.fetch_sub(1, Relaxed);
        if used == 1 {
            pages.pages -= 1;
            drop(pages);
            sys.phys.free_frame(cpu, Pfn::new_unchecked(pfn));
        } else {
            pages.partial.insert((used - 1, pfn), ());
        }
    }

    /// The entries of chain `head`.
    fn entries(&self, sys: &System, head: u64, out: &mut Vec<u64>) {
        let mut h = head;
        while h != 0 {
            let n = self.node(sys, h);
            for e in &n[2..] {
                let v = e.load(Relaxed);
                if v != 0 {
                    out.push(v);
                }
            }
            h = n[0].load(Relaxed) & !HEAD;
        }
    }

    /// Build a chain of `entries` with `refs` references. `None` if node
    /// memory ran out (the caller then keeps the old state).
    fn build(&self, sys: &System, cpu: CpuId, entries: &[u64], refs: u64) -> Option<u64> {
        let mut handles: Vec<u64> = Vec::new();
        for _ in 0..entries.len().div_ceil(NODE_ENTRIES).max(1) {
            match self.alloc_node(sys, cpu, &[]) {
                Some(h) => handles.push(h),
                None => {
                    for h in handles {
                        self.free_node(sys, cpu, h);
                    }
                    return None;
                }
            }
        }
        for (i, &h) in handles.iter().enumerate() {
            let n = self.node(sys, h);
            let next = handles.get(i + 1).copied().unwrap_or(0);
            n[0].store(next | if i == 0 { HEAD } else { 0 }, Relaxed);
            n[1].store(if i == 0 { refs } else { handles[i - 1] }, Relaxed);
            for (k, e) in entries.iter().skip(i * NODE_ENTRIES).take(NODE_ENTRIES).enumerate() {
                n[2 + k].store(*e, Relaxed);
            }
        }
        Some(handles[0])
    }

    /// Drop `n` references to chain `head`, freeing it at zero.
    ///
    /// Pages sharing a chain can sit under different rmap locks, so two
    /// CPUs can drop references at once: as for `Arc`, each drop is a
    /// Release (its reads of the chain come before it) and the last one
    /// takes an Acquire fence before freeing the nodes (every other drop's
    /// reads are done).
    fn release(&self, sys: &System, cpu: CpuId, head: u64, n: u64) {
        let hn = self.node(sys, head);
        let left = hn[1].fetch_sub(n, core::sync::atomic::Ordering::Release) - n;
        if left == 0 {
            core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
            let mut h = head;
            while h != 0 {
                let next = self.node(sys, h)[0].load(Relaxed) & !HEAD;
                self.free_node(sys, cpu, h);
                h = next;
            }
        }
    }

    /// Free a chain that was built for a group no page joined.
    fn release_unused(&self, sys: &System, cpu: CpuId, head: u64) {
        self.add_ref(sys, head, 1);
        self.release(sys, cpu, head, 1);
    }

    /// Remove entry `e` from chain `head` in place, if no page but the
    /// caller's points at it (`false`, and no change, otherwise). The
    /// chain's last entry takes the removed one's place, so the head keeps
    /// a first entry (the coalescer finds the chain's pages through it);
    /// a node left empty stays linked until the chain is released.
    ///
    /// Enters with: the rmap lock of the one page pointing at `head`.
    fn remove_in_place(&self, sys: &System, head: u64, e: u64) -> bool {
        // Acquire, as `Arc::get_mut`: another page's earlier reads of the
        // chain, before it dropped its reference (Release), come before our
        // writes to it.
        self.node(sys, head)[1].load(core::sync::atomic::Ordering::Acquire) == 1 && self.remove_entry(sys, head, e)
    }

    /// Remove entry `e` from chain `head` in place, for every page pointing
    /// at it (`false`, and no change, if it is not there). The chain's last
    /// entry takes the removed one's place.
    ///
    /// Enters with: the rmap locks of every page pointing at `head`.
    fn remove_entry(&self, sys: &System, head: u64, e: u64) -> bool {
        let (mut at, mut last) = (None, None);
        let mut h = head;
        while h != 0 {
            let n = self.node(sys, h);
            for (k, w) in n[2..].iter().enumerate() {
                let v = w.load(Relaxed);
                if v == 0 {
                    continue;
                }
                if v == e && at.is_none() {
                    at = Some((h, k));
                }
                last = Some((h, k, v));
            }
            h = n[0].load(Relaxed) & !HEAD;
        }
        let (Some((ah, ak)), Some((lh, lk, lv))) = (at, last) else { return false };
        self.node(sys, ah)[2 + ak].store(lv, Relaxed);
        self.node(sys, lh)[2 + lk].store(0, Relaxed);
        true
    }

    /// Move one mapping of `pfn` from PTE `from` to PTE `to` (mremap): one
    /// change, so that it needs no node memory where the map can be
    /// rewritten in place (a direct reference, or a chain no other page
    /// shares); `false` if it could not be made (then nothing changed).
    ///
    /// Enters with: the chain lock shared.
    pub fn replace(&self, sys: &System, cpu: CpuId, pfn: Pfn, from: PteRef, to: PteRef) -> bool {
        let f = sys.phys.frame(pfn);
        let _g = sys.rmap().locks.lock_rmap(f);
        let (w, index) = (f.rmap.load(Relaxed), f.index.load(Relaxed));
        let (old, new) = (entry_for(from, index), entry_for(to, index));
        if w & DIRECT != 0 {
            if entry_for(PteRef(w & !TAGS), index) != old {
                return false;
            }
            f.rmap.store(DIRECT | to.0, Relaxed);
            return true;
        }
        if w & CHAIN == 0 {
            return false;
        }
        let head = w & !TAGS;
        // Acquire: as in `remove_in_place`.
        if self.node(sys, head)[1].load(core::sync::atomic::Ordering::Acquire) == 1 {
            let mut h = head;
            while h != 0 {
                let n = self.node(sys, h);
                if let Some(slot) = n[2..].iter().find(|x| x.load(Relaxed) == old) {
                    slot.store(new, Relaxed);
                    return true;
                }
                h = n[0].load(Relaxed) & !HEAD;
            }
            return false;
        }
        let mut es = Vec::new();
        self.entries(sys, head, &mut es);
        let Some(i) = es.iter().position(|x| *x == old) else { return false };
        es[i] = new;
        let Some(nh) = self.build(sys, cpu, &es, 1) else {
            sys.stats.inc(cpu, crate::stats::Stat::RmapAllocFail);
            return false;
        };
        f.rmap.store(CHAIN | nh, Relaxed);
        self.release(sys, cpu, head, 1);
        true
    }

    fn add_ref(&self, sys: &System, head: u64, n: u64) {
        self.node(sys, head)[1].fetch_add(n, Relaxed);
    }

    /// Every PTE mapping `frame`, from its rmap word.
    ///
    /// Enters with: `frame`'s rmap lock.
    pub fn refs(&self, sys: &System, frame: &Frame, out: &mut Vec<PteRef>) {
        let w = frame.rmap.load(Relaxed);
        let index = frame.index.load(Relaxed);
        if w & DIRECT != 0 {
            out.push(PteRef(w & !TAGS));
        } else if w & CHAIN != 0 {
            let mut es = Vec::new();
            self.entries(sys, w & !TAGS, &mut es);
            out.extend(es.into_iter().map(|e| entry_ref(e, index)));
        }
    }

    /// A group of pages whose old maps are equivalent (one chain, direct
    /// references normalising to the same entry, or none; `w` and `index`
    /// are one of them) getting entry `e` added (`add`) or removed: the new
    /// map they will share. A removal of an entry that is not there changes
    /// nothing (the checker reports it); no node memory leaves the maps as
    /// they are and counts the loss.
    #[allow(clippy::too_many_arguments)]
    fn start_group(
        &self,
        sys: &System,
        cpu: CpuId,
        add: bool,
        key: (u8, u64, u64),
        w: u64,
        index: u64,
        e: u64,
    ) -> Group {
        let mut es: Vec<u64> = Vec::new();
        let old_chain = (w & CHAIN != 0).then_some(w & !TAGS);
        if w & DIRECT != 0 {
            es.push(entry_for(PteRef(w & !TAGS), index));
        } else if let Some(h) = old_chain {
            self.entries(sys, h, &mut es);
        }
        let mut unchanged = false;
        if add {
            es.push(e);
        } else {
            match es.iter().position(|x| *x == e) {
                Some(i) => {
                    es.remove(i);
                }
                None => unchanged = true,
            }
        }
        let new = if unchanged {
            GroupNew::Unchanged
        } else if es.is_empty() {
            GroupNew::Empty
        } else if old_chain.is_none() && es.len() == 1 {
            // A single mapping of a page that had at most one: direct.
            GroupNew::Direct(es[0])
        } else {
            match self.build(sys, cpu, &es, 0) {
                Some(h) => GroupNew::Chain(h),
                // Out of node memory. A removal must not leave its entry
                // behind (it would name a PTE that no longer maps the page,
                // and later a freed page table), so it falls back to maps
                // that need no new node: one entry left goes direct, and a
                // chain no other page shares loses the entry in place.
                None if !add && es.len() == 1 => GroupNew::Direct(es[0]),
                None if !add && old_chain.is_some_and(|h| self.remove_in_place(sys, h, e)) => {
                    GroupNew::Chain(old_chain.expect("checked just above"))
                }
                // A chain other pages share: a batch can still remove the
                // entry in place at its end, if those pages all lose it in
                // the batch ([`Batch::settle`]).
                None if !add && old_chain.is_some() => GroupNew::NoMemory,
                None => {
                    sys.stats.inc(cpu, crate::stats::Stat::RmapAllocFail);
                    GroupNew::Unchanged
                }
            }
        };
        Group { key, old_chain, new, count: 0 }
    }

    /// Settle a group once its pages point at the new map: the new chain
    /// gets one reference per page, the old one loses as many.
    fn finish_group(&self, sys: &System, cpu: CpuId, g: Group) {
        if let GroupNew::Chain(h) = g.new {
            if g.count == 0 {
                self.release_unused(sys, cpu, h);
            } else {
                self.add_ref(sys, h, g.count);
            }
        }
        if matches!(g.new, GroupNew::Unchanged | GroupNew::NoMemory) || g.count == 0 {
            return;
        }
        let is_chain = matches!(g.new, GroupNew::Chain(_));
        let was_chain = g.old_chain.is_some();
        if was_chain != is_chain {
            let n = g.count as i64;
            self.chained_frames.fetch_add(if is_chain { n } else { -n }, Relaxed);
        }
        if let Some(old) = g.old_chain {
            self.release(sys, cpu, old, g.count);
        }
    }

    /// Start a batch of changes to the pages of one page table — fork's
    /// copy of it, or zap's teardown — whose pages have indexes in
    /// `[first_index, first_index + 512)` (pages elsewhere, moved by
    /// mremap, are done one by one at the end). The rmap locks of that
    /// index range are taken now, once each, in ascending order; each page
    /// is then updated as it is pushed, while its metadata is hot in the
    /// cache, and consecutive pages that shared a chain get one new chain.
    ///
    /// Enters with: the chain lock shared and the page table's lock.
    pub fn begin<'a>(&'a self, sys: &'a System, cpu: CpuId, add: bool, first_index: u64) -> Batch<'a> {
        let locks = &sys.rmap().locks;
        let mut need = [0u64; super::locks::RMAP_LOCKS / 64];
        for i in (first_index..first_index + 512).step_by(64) {
            let slot = super::locks::RmapLocks::slot_of(i);
            need[slot / 64] |= 1 << (slot % 64);
        }
        let mut guards = Vec::with_capacity(32);
        for (w, &bits) in need.iter().enumerate() {
            let mut b = bits;
            while b != 0 {
                guards.push(locks.lock_slot(w * 64 + b.trailing_zeros() as usize));
                b &= b - 1;
            }
        }
        Batch {
            store: self,
            sys,
            cpu,
            add,
            need,
            _guards: guards,
            group: None,
            stragglers: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Add or remove one mapping of one frame; `false` if the map was left
    /// as it was (an addition without node memory, or a removal of an
    /// entry that is not there).
    ///
    /// Enters with: the chain lock shared.
    pub fn one(&self, sys: &System, cpu: CpuId, pfn: Pfn, r: PteRef, add: bool) -> bool {
        let f = sys.phys.frame(pfn);
        let _g = sys.rmap().locks.lock_rmap(f);
        let (w, index) = (f.rmap.load(Relaxed), f.index.load(Relaxed));
        let mut group = self.start_group(sys, cpu, add, (3, pfn.as_u64(), 0), w, index, entry_for(r, index));
        if matches!(group.new, GroupNew::NoMemory) {
            // Alone, a shared chain cannot lose the entry in place.
            sys.stats.inc(cpu, crate::stats::Stat::RmapAllocFail);
            return false;
        }
        let applied = group.apply(f, index);
        self.finish_group(sys, cpu, group);
        applied
    }

    /// Seed 000's node-page defragmentation: move the nodes of sparse node
    /// pages (at most half used) into denser ones and free the emptied
    /// pages. Returns the pages freed.
    pub fn coalesce(&self, sys: &System, cpu: CpuId) -> u64 {
        let _excl = self.lock.write();
        let (sources, free_slots): (Vec<u64>, u64) = {
            let pages = self.alloc.lock();
            let mut sources: Vec<(u64, u64)> =
                pages.partial.keys().filter(|(used, _)| *used <= NODES_PER_PAGE / 2).copied().collect();
            // Evacuate the sparsest first.
            sources.sort();
            let free: u64 = pages.partial.keys().map(|(used, _)| NODES_PER_PAGE - used).sum();
            (sources.into_iter().map(|(_, p)| p).collect(), free)
        };
        let mut evacuate = Vec::new();
        let mut room = free_slots;
        for p in sources {
            let used = u64::from(sys.phys.frame(Pfn::new_unchecked(p)).rmap.load(Relaxed).count_ones());
            let own_free = NODES_PER_PAGE - used;
            // Moving `used` nodes needs that much room outside the page.
            if room.saturating_sub(own_free) >= used {
                room -= own_free + used;
                evacuate.push(p);
            }
        }
        let mut freed = 0;
        for &p in &evacuate {
            let bitmap = sys.phys.frame(Pfn::new_unchecked(p)).rmap.load(Relaxed);
            let mut moved_all = true;
            for idx in 0..64u64 {
                if bitmap & (1 << idx) == 0 {
                    continue;
                }
                if !self.move_node(sys, cpu, (p << 6) | idx, &evacuate) {
                    moved_all = false;
                }
            }
            if moved_all {
                freed += 1;
            }
        }
        freed
    }

    /// Move node `h` to a fresh node outside `avoid`, re-pointing whatever
    /// points at it. Enters with: the chain lock exclusive.
    fn move_node(&self, sys: &System, cpu: CpuId, h: u64, avoid: &[u64]) -> bool {
        let old = self.node(sys, h);
        let w0 = old[0].load(Relaxed);
        // A head: every frame sharing the chain points at it. They are all
        // mapped through the table the first entry names (at their own slot
        // for a TABLE entry, at the given slot for an explicit one); with
        // the chain lock exclusive, PTEs and chains agree, and no rmap word
        // changes while we look. If not all of them are found there (the
        // first entry names no live page table: it should not happen),
        // moving would leave the missing ones pointing at a freed node, so
        // the node stays where it is.
        let sharers = if w0 & HEAD != 0 {
            match self.sharers(sys, h, old[2].load(Relaxed)) {
                Some(v) => v,
                None => return false,
            }
        } else {
            Vec::new()
        };
        let Some(nh) = self.alloc_node(sys, cpu, avoid) else { return false };
        let new = self.node(sys, nh);
        for i in 0..8 {
            new[i].store(old[i].load(Relaxed), Relaxed);
        }
        let next = w0 & !HEAD;
        if next != 0 {
            self.node(sys, next)[1].store(nh, Relaxed);
        }
        if w0 & HEAD == 0 {
            let prev = old[1].load(Relaxed);
            let pw = self.node(sys, prev)[0].load(Relaxed);
            self.node(sys, prev)[0].store((pw & HEAD) | nh, Relaxed);
        }
        for pfn in sharers {
            let f = sys.phys.frame(pfn);
            let _g = sys.rmap().locks.lock_rmap(f);
            f.rmap.store(CHAIN | nh, Relaxed);
        }
        for w in old {
            w.store(0, Relaxed);
        }
        self.free_node(sys, cpu, h);
        true
    }
}

impl ChainStore {
    /// The frames pointing at chain `head`, found through the page table
    /// its first entry `e0` names; `None` unless that is a live page table
    /// and they are as many as the chain's references.
    ///
    /// Enters with: the chain lock exclusive.
    fn sharers(&self, sys: &System, head: u64, e0: u64) -> Option<Vec<Pfn>> {
        let (table, slots): (Pfn, core::ops::Range<usize>) = if e0 & EXPLICIT != 0 {
            let r = PteRef(e0 & !EXPLICIT);
            (r.table(), r.slot()..r.slot() + 1)
        } else {
            (Pfn::new_unchecked(e0), 0..512)
        };
        if e0 == 0
            || table.as_u64() >= sys.phys.total_frames()
            || sys.phys.frame(table).flags() & crate::phys::frame::flags::PAGETABLE == 0
        {
            return None;
        }
        let mut out = Vec::new();
        for s in slots {
            // SAFETY:
            // - `table` is a live page table (checked above; tables are
            //   freed only after every entry naming them is removed, and
            //   entries are removed only under the chain lock (shared),
            //   which the caller holds exclusive);
            // - s < 512.
            let pte = load_entry(unsafe { sys.entry(table, s) });
            if !pte.maps_frame() || pte.pfn().as_u64() >= sys.phys.total_frames() {
                continue;
            }
            if sys.phys.frame(pte.pfn()).rmap.load(Relaxed) == CHAIN | head {
                out.push(pte.pfn());
            }
        }
        // A page mapped twice through the table (a shared file page mremap
        // duplicated) points at the chain once.
        out.sort_unstable();
        out.dedup();
        (out.len() as u64 == self.node(sys, head)[1].load(Relaxed)).then_some(out)
    }

    /// Record the first mapping of a fresh, unpublished page (no lock: the
    /// page is not visible to anyone yet).
    #[inline]
    pub fn set_direct(frame: &Frame, r: PteRef) {
        frame.rmap.store(DIRECT | r.0, Relaxed);
    }

    /// Forget the rmap of a page that lost its publication race.
    #[inline]
    pub fn clear_unpublished(frame: &Frame) {
        frame.rmap.store(0, Relaxed);
    }
}

/// A batch of reverse-map changes over one page table (see
/// [`ChainStore::begin`]).
pub struct Batch<'a> {
    store: &'a ChainStore,
    sys: &'a System,
    cpu: CpuId,
    add: bool,
    need: [u64; super::locks::RMAP_LOCKS / 64],
    _guards: Vec<super::locks::RmapGuard<'a>>,
    group: Option<Group>,
    stragglers: Vec<(Pfn, PteRef)>,
    /// Removals left for [`Batch::settle`]: (old chain, entry, pages).
    pending: Vec<(u64, u64, u64)>,
}

/// Consecutive pages with equivalent maps getting the same change.
struct Group {
    key: (u8, u64, u64),
    /// The old chain's handle word, if the pages had one.
    old_chain: Option<u64>,
    /// What each page's word becomes.
    new: GroupNew,
    count: u64,
}

impl Group {
    /// Point `f` (index `index`) at the group's new map; `false` if the
    /// group leaves maps unchanged.
    #[inline(always)]
    fn apply(&mut self, f: &Frame, index: u64) -> bool {
        match self.new {
            GroupNew::Chain(h) => f.rmap.store(CHAIN | h, Relaxed),
            GroupNew::Direct(entry) => f.rmap.store(DIRECT | entry_ref(entry, index).0, Relaxed),
            GroupNew::Empty => f.rmap.store(0, Relaxed),
            GroupNew::Unchanged => return false,
            // Left pointing at the old chain until the batch settles.
            GroupNew::NoMemory => {}
        }
        self.count += 1;
        true
    }
}

enum GroupNew {
    /// A chain shared by the group (its references are set at the end).
    Chain(u64),
    /// A direct reference to the group's one entry, per page.
    Direct(u64),
    /// No mapping left.
    Empty,
    /// Left as it was (the entry to remove was not there, or node memory
    /// ran out for an addition).
    Unchanged,
    /// A removal from a chain other pages share, with no node memory: the
    /// pages keep pointing at the old chain, which loses the entry in place
    /// when the batch settles if every page sharing it lost it.
    NoMemory,
}

impl Batch<'_> {
    /// Apply this batch's change for `f` (frame `pfn`) mapped by `r`;
    /// `false` if it left the page's map unchanged (an addition without
    /// node memory: the caller must undo the mapping). A page outside the
    /// batch's index range is done at [`Batch::finish`], which reports it
    /// then.
    ///
    /// The fast path — the page continues the current group: same kind of
    /// old map normalising to the same entry, its TABLE entry at its own
    /// slot, its lock held — is a few compares and one store, inlined into
    /// fork's and zap's loops; anything else goes to `Batch::push_slow`.
    #[inline(always)]
    pub fn push(&mut self, pfn: Pfn, r: PteRef, f: &Frame) -> bool {
        let index = f.index.load(Relaxed);
        let w = f.rmap.load(Relaxed);
        if let Some(g) = &mut self.group {
            let slot = super::locks::RmapLocks::slot_of(index);
            let own_slot = r.slot() as u64 == index & 511 && r.table().as_u64() == g.key.2;
            let same_map = match g.key.0 {
                0 => w == 0,
                1 => w & DIRECT != 0 && (w & 511) == index & 511 && (w & !TAGS) >> 9 == g.key.1,
                2 => w == g.key.1,
                _ => false,
            };
            if own_slot && same_map && self.need[slot / 64] & (1 << (slot % 64)) != 0 {
                return g.apply(f, index);
            }
        }
        self.push_slow(pfn, r, f, index, w)
    }

    #[cold]
    #[inline(never)]
    fn push_slow(&mut self, pfn: Pfn, r: PteRef, f: &Frame, index: u64, w: u64) -> bool {
        let slot = super::locks::RmapLocks::slot_of(index);
        if self.need[slot / 64] & (1 << (slot % 64)) == 0 {
            self.stragglers.push((pfn, r));
            return true;
        }
        let e = entry_for(r, index);
        let key = if w & DIRECT != 0 {
            (1, entry_for(PteRef(w & !TAGS), index), e)
        } else if w & CHAIN != 0 {
            (2, w, e)
        } else {
            (0, 0, e)
        };
        // An explicit entry names one PTE of one page: never shared.
        let key = if key.1 & EXPLICIT != 0 || key.2 & EXPLICIT != 0 { (3, pfn.as_u64(), e) } else { key };
        if self.group.as_ref().is_none_or(|g| g.key != key) {
            self.finish_group();
            self.group = Some(self.start_group(key, w, index, e));
        }
        self.group.as_mut().expect("a group was just started").apply(f, index)
    }

    fn start_group(&mut self, key: (u8, u64, u64), w: u64, index: u64, e: u64) -> Group {
        self.store.start_group(self.sys, self.cpu, self.add, key, w, index, e)
    }

    fn finish_group(&mut self) {
        if let Some(g) = self.group.take() {
            if let (GroupNew::NoMemory, Some(old)) = (&g.new, g.old_chain) {
                if g.count > 0 {
                    self.pending.push((old, g.key.2, g.count));
                }
                return;
            }
            self.store.finish_group(self.sys, self.cpu, g);
        }
    }

    /// The removals that found no node memory: a chain whose every sharing
    /// page lost the same entry in this batch (zap's teardown of a whole
    /// table, exit) loses it in place, which needs none; what is left is
    /// counted in `rmap_alloc_fail` (and reported by the checker). All the
    /// pages sharing such a chain have their rmap locks held by the batch
    /// (a chain of table entries is shared only by pages of one table).
    fn settle(&mut self) {
        let mut pending = core::mem::take(&mut self.pending);
        pending.sort_unstable();
        let mut i = 0;
        while i < pending.len() {
            let (head, e) = (pending[i].0, pending[i].1);
            let mut pages = 0;
            while i < pending.len() && (pending[i].0, pending[i].1) == (head, e) {
                pages += pending[i].2;
                i += 1;
            }
            let refs = self.store.node(self.sys, head)[1].load(core::sync::atomic::Ordering::Acquire);
            if refs != pages || !self.store.remove_entry(self.sys, head, e) {
                self.sys.stats.add(self.cpu, crate::stats::Stat::RmapAllocFail, pages as i64);
            }
        }
    }

    /// Finish the last group, release the locks, then do the pages outside
    /// the batch's index range one by one. Returns those of them whose map
    /// was left unchanged (see [`Batch::push`]).
    pub fn finish(mut self) -> Vec<(Pfn, PteRef)> {
        self.finish_group();
        let (store, sys, cpu, add) = (self.store, self.sys, self.cpu, self.add);
        let mut stragglers = core::mem::take(&mut self.stragglers);
        drop(self);
        stragglers.retain(|&(pfn, r)| !store.one(sys, cpu, pfn, r, add));
        stragglers
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.finish_group();
        self.settle();
        debug_assert!(self.stragglers.is_empty(), "a batch with pages outside its range was dropped unfinished");
    }
}
