//! Physical memory: the frame table, NUMA nodes, zones, buddy allocators
//! and per-CPU page caches.
//!
//! Memory is split evenly into nodes; each node into a normal zone and a
//! movable zone (seed 000's movable zone: only pages that migration can
//! move — user pages and page tables — go there, so it can always be
//! compacted or unplugged). A CPU belongs to node `cpu % nodes`.
//!
//! Order-0 allocations, the fault path's, come from a per-CPU cache
//! ([`pcp`]) refilled and drained in batches under the zone lock, so the
//! zone lock is taken once per batch rather than once per page, and the
//! common allocation touches only the allocating CPU's cache lines.
//!
//! Frames in a per-CPU cache count as free: [`PhysMem::free_frames`] is
//! exact at any moment, which is what lets the checker compare it with the
//! boot count.

pub mod buddy;
pub mod frame;
pub mod pcp;

use alloc::boxed::Box;
use alloc::vec::Vec;

use self::buddy::{FreeArea, MAX_ORDER};
use self::frame::{flags, Frame};
use self::pcp::PerCpuPages;
use crate::addr::Pfn;
use crate::platform::CpuId;
use crate::sync::{new_mutex, AtomicU64, Mutex, Ordering};
use crossbeam_utils::CachePadded;

/// Which zone of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneKind {
    /// Anything may go here.
    Normal = 0,
    /// Only movable allocations.
    Movable = 1,
}

/// Allocation flags (a small `gfp_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Gfp {
    /// The frame can be migrated: prefer the movable zone.
    pub movable: bool,
}

impl Gfp {
    /// User pages and page tables.
    pub const MOVABLE: Gfp = Gfp { movable: true };
    /// Pinned kernel memory.
    pub const KERNEL: Gfp = Gfp { movable: false };
}

/// One zone: a contiguous frame range with its buddy lists.
pub struct Zone {
    /// Node.
    pub node: u32,
    /// Kind.
    pub kind: ZoneKind,
    /// First frame.
    pub start: Pfn,
    /// One past the last frame.
    pub end: Pfn,
    /// Frames handed to the allocator at boot.
    pub managed: u64,
    free: CachePadded<Mutex<FreeArea>>,
    /// Free frames in the buddy lists (a copy kept under the lock, readable
    /// without it).
    free_count: AtomicU64,
}

impl Zone {
    fn lock(&self) -> crate::sync::MutexGuard<'_, FreeArea> {
        self.free.lock()
    }

    /// Free frames in the buddy lists.
    pub fn free_frames(&self) -> u64 {
        self.free_count.load(Ordering::Relaxed)
    }

    /// Free blocks per order.
    pub fn buddyinfo(&self) -> [u64; MAX_ORDER + 1] {
        self.lock().counts()
    }

    /// Whether `pfn` is one of the zone's frames.
    pub fn contains(&self, pfn: Pfn) -> bool {
        self.start <= pfn && pfn < self.end
    }
}

/// The layout of physical memory.
#[derive(Clone, Copy, Debug)]
pub struct PhysConfig {
    /// Frames in all.
    pub frames: u64,
    /// NUMA nodes.
    pub nodes: usize,
    /// CPUs.
    pub cpus: usize,
    /// Percent of each node that is the movable zone.
    pub movable_percent: u64,
}

/// Physical memory.
pub struct PhysMem {
    frames: Box<[Frame]>,
    zones: Vec<Zone>,
    nodes: usize,
    pcp: Box<[CachePadded<PerCpuPages>]>,
    boot_free: u64,
    bad_frees: AtomicU64,
    /// Zone-lock acquisitions per CPU (each writes the zone's shared lock
    /// and free-list lines): the allocator's shared-cache-line writes.
    lock_takes: Box<[CachePadded<AtomicU64>]>,
}

impl PhysMem {
    /// Lay out memory: frame 0 is reserved (a zero frame number means
    /// "none" in several places), the rest is split into nodes and zones and
    /// freed into the buddy lists.
    pub fn new(cfg: PhysConfig) -> PhysMem {
        let nodes = cfg.nodes.max(1);
        let frames: Box<[Frame]> =
            (0..cfg.frames).map(|p| Frame::new(((p * nodes as u64) / cfg.frames.max(1)) as u32)).collect();
        let per_node = cfg.frames / nodes as u64;
        let mut zones = Vec::new();
        for n in 0..nodes as u64 {
            let start = n * per_node;
            let end = if n + 1 == nodes as u64 { cfg.frames } else { start + per_node };
            let movable_start = end - (end - start) * cfg.movable_percent.min(100) / 100;
            for (kind, s, e) in [(ZoneKind::Normal, start, movable_start), (ZoneKind::Movable, movable_start, end)] {
                let (s, e) = (Pfn::new_unchecked(s), Pfn::new_unchecked(e));
                let mut fa = FreeArea::new(s, e);
                fa.populate(&frames, |p| p == 0);
                let managed = fa.free;
                for p in s.as_u64()..e.as_u64() {
                    frames[p as usize].node.store(n as u32, Ordering::Relaxed);
                }
                zones.push(Zone {
                    node: n as u32,
                    kind,
                    start: s,
                    end: e,
                    managed,
                    free_count: AtomicU64::new(managed),
                    free: CachePadded::new(new_mutex(fa)),
                });
            }
        }
        let boot_free = zones.iter().map(|z| z.managed).sum();
        let pcp = (0..cfg.cpus.max(1)).map(|_| CachePadded::new(PerCpuPages::new())).collect();
        let lock_takes = (0..cfg.cpus.max(1) + 1).map(|_| CachePadded::new(AtomicU64::new(0))).collect();
        PhysMem { frames, zones, nodes, pcp, boot_free, bad_frees: AtomicU64::new(0), lock_takes }
    }

    /// The metadata of a frame.
    #[inline(always)]
    pub fn frame(&self, pfn: Pfn) -> &Frame {
        &self.frames[pfn.index()]
    }

    /// Frames in all (including reserved ones).
    pub fn total_frames(&self) -> u64 {
        self.frames.len() as u64
    }

    /// Frames that were free after boot.
    pub fn boot_free(&self) -> u64 {
        self.boot_free
    }

    /// Free frames now: buddy lists plus per-CPU caches.
    pub fn free_frames(&self) -> u64 {
        let buddy: u64 = self.zones.iter().map(Zone::free_frames).sum();
        let pcp: u64 = self.pcp.iter().map(|p| p.count()).sum();
        buddy + pcp
    }

    /// Frees of frames that were not allocated (a bug somewhere; the frame
    /// was left alone rather than corrupting the free lists).
    pub fn bad_frees(&self) -> u64 {
        self.bad_frees.load(Ordering::Relaxed)
    }

    /// Count a release of a frame that held no reference.
    pub fn note_bad_free(&self) {
        self.bad_frees.fetch_add(1, Ordering::Relaxed);
    }

    /// The zones.
    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }

    /// NUMA nodes.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    fn home_node(&self, cpu: CpuId) -> usize {
        cpu.index() % self.nodes
    }

    /// Zone-lock acquisitions so far (all CPUs).
    pub fn zone_lock_takes(&self) -> u64 {
        self.lock_takes.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Count a zone-lock acquisition by `cpu` (`None`: not on behalf of a
    /// CPU, e.g. a drain).
    #[inline]
    fn took_zone_lock(&self, cpu: Option<CpuId>) {
        let i = cpu.map_or(self.lock_takes.len() - 1, |c| c.index() % (self.lock_takes.len() - 1));
        self.lock_takes[i].fetch_add(1, Ordering::Relaxed);
    }

    fn zone_index(&self, node: usize, kind: ZoneKind) -> usize {
        node * 2 + kind as usize
    }

    fn zone_of(&self, pfn: Pfn) -> usize {
        let node = self.frame(pfn).node.load(Ordering::Relaxed) as usize;
        let i = self.zone_index(node, ZoneKind::Normal);
        if self.zones[i].contains(pfn) {
            i
        } else {
            i + 1
        }
    }

    /// The zones to try for an allocation, best first: the home node's
    /// (movable first for movable allocations), then the other nodes'.
    fn zonelist(&self, cpu: CpuId, gfp: Gfp) -> impl Iterator<Item = usize> + '_ {
        let home = self.home_node(cpu);
        (0..self.nodes).map(move |d| (home + d) % self.nodes).flat_map(move |n| {
            let kinds: [ZoneKind; 2] =
                if gfp.movable { [ZoneKind::Movable, ZoneKind::Normal] } else { [ZoneKind::Normal, ZoneKind::Normal] };
            let count = if gfp.movable { 2 } else { 1 };
            kinds.into_iter().take(count).map(move |k| self.zone_index(n, k))
        })
    }

    fn mark_allocated(&self, pfn: Pfn, order: usize, gfp: Gfp) {
        let f = self.frame(pfn);
        f.refcount.store(1, Ordering::Relaxed);
        f.mapcount.store(0, Ordering::Relaxed);
        f.index.store(0, Ordering::Relaxed);
        f.mapping.store(0, Ordering::Relaxed);
        f.rmap.store(0, Ordering::Relaxed);
        f.order.store(order as u32, Ordering::Relaxed);
        let fl = flags::ALLOCATED | if gfp.movable { flags::MOVABLE } else { 0 };
        // Release: pairs with the Acquire in `Frame::flags`; a reader that
        // sees ALLOCATED sees the fields above reset.
        f.flags.store(fl, Ordering::Release);
    }

    fn buddy_alloc(&self, zone: usize, order: usize) -> Option<Pfn> {
        self.took_zone_lock(None);
        let z = &self.zones[zone];
        let mut fa = z.lock();
        let pfn = fa.alloc(&self.frames, order)?;
        z.free_count.store(fa.free, Ordering::Relaxed);
        Some(pfn)
    }

    /// Allocate one frame on `cpu`: from its per-CPU cache, refilled by a
    /// batch from the zone when empty. `None` when memory is exhausted.
    #[inline]
    pub fn alloc_frame(&self, cpu: CpuId, gfp: Gfp) -> Option<Pfn> {
        let pcp = &self.pcp[cpu.index() % self.pcp.len()];
        let kind = if gfp.movable { ZoneKind::Movable } else { ZoneKind::Normal };
        if let Some(pfn) = pcp.pop(kind, |buf, want| self.refill(cpu, gfp, buf, want)) {
            self.mark_allocated(pfn, 0, gfp);
            return Some(pfn);
        }
        self.alloc_pages_slow(cpu, 0, gfp)
    }

    /// Allocate up to `out.len()` frames on `cpu`, taking its page-cache
    /// lock once for the lot; returns how many were allocated (fewer only
    /// when memory runs out).
    pub fn alloc_batch(&self, cpu: CpuId, gfp: Gfp, out: &mut [Pfn]) -> usize {
        let pcp = &self.pcp[cpu.index() % self.pcp.len()];
        let kind = if gfp.movable { ZoneKind::Movable } else { ZoneKind::Normal };
        let mut n = pcp.pop_many(kind, out, |buf, want| self.refill(cpu, gfp, buf, want));
        for p in &out[..n] {
            self.mark_allocated(*p, 0, gfp);
        }
        while n < out.len() {
            match self.alloc_pages_slow(cpu, 0, gfp) {
                Some(p) => {
                    out[n] = p;
                    n += 1;
                }
                None => break,
            }
        }
        n
    }

    /// Refill an empty per-CPU cache `buf` with up to `want` frames, from
    /// the zones of the zonelist in order (a home zone running dry falls
    /// back to the next one for the whole batch, not frame by frame), taking
    /// whole buddy blocks — an order-6 block is one list operation for 64
    /// frames — and each zone's lock once.
    fn refill(&self, cpu: CpuId, gfp: Gfp, buf: &mut Vec<u32>, want: usize) -> usize {
        let start = buf.len();
        let mut n = 0;
        for zone in self.zonelist(cpu, gfp) {
            let z = &self.zones[zone];
            if z.free_frames() == 0 {
                continue;
            }
            self.took_zone_lock(Some(cpu));
            let mut fa = z.lock();
            while n < want {
                let mut order = (usize::BITS - 1 - (want - n).leading_zeros()) as usize;
                let block = loop {
                    if let Some(p) = fa.alloc(&self.frames, order.min(MAX_ORDER)) {
                        break Some(p);
                    }
                    if order == 0 {
                        break None;
                    }
                    order -= 1;
                };
                let Some(p) = block else { break };
                buf.extend((0..1u64 << order).map(|i| p.add(i).as_u64() as u32));
                n += 1 << order;
            }
            z.free_count.store(fa.free, Ordering::Relaxed);
            if n >= want {
                break;
            }
        }
        // The cache is a stack: reversed, it hands the blocks out in the
        // order they were taken and each block in ascending order.
        // Consecutive faults then zero consecutive frames, which the
        // hardware prefetchers follow across page boundaries. A refill is
        // one block where the zone has one of its size (refills are powers
        // of two, [`pcp::REFILL_MAX`] at most), and successive refills take
        // the successive halves of one larger block, so the order holds
        // across refills too.
        buf[start..].reverse();
        n
    }

    /// Allocate 2^order contiguous frames straight from the buddy lists,
    /// trying every zone of the zonelist.
    pub fn alloc_pages(&self, cpu: CpuId, order: usize, gfp: Gfp) -> Option<Pfn> {
        if order == 0 {
            return self.alloc_frame(cpu, gfp);
        }
        self.alloc_pages_slow(cpu, order, gfp)
    }

    fn alloc_pages_slow(&self, cpu: CpuId, order: usize, gfp: Gfp) -> Option<Pfn> {
        if order > MAX_ORDER {
            return None;
        }
        for zone in self.zonelist(cpu, gfp) {
            if let Some(pfn) = self.buddy_alloc(zone, order) {
                self.mark_allocated(pfn, order, gfp);
                return Some(pfn);
            }
        }
        // Last resort: frames sitting in other CPUs' caches. Only the lists
        // this allocation may take from: a movable list holds movable-zone
        // frames, which an unmovable allocation must never get (the zone
        // would no longer be all movable: Linux keeps unmovable pages out
        // of ZONE_MOVABLE). A normal list holds only normal-zone frames.
        let kinds: &[ZoneKind] = if gfp.movable { &[ZoneKind::Movable, ZoneKind::Normal] } else { &[ZoneKind::Normal] };
        for other in 0..self.pcp.len() {
            for &kind in kinds {
                if let Some(pfn) = self.pcp[other].steal(kind) {
                    if order == 0 {
                        self.mark_allocated(pfn, 0, gfp);
                        return Some(pfn);
                    }
                    self.buddy_free(pfn, 0);
                }
            }
        }
        if order > 0 {
            // Merging needs every cached frame back in the buddy lists.
            self.drain_all();
            for zone in self.zonelist(cpu, gfp) {
                if let Some(pfn) = self.buddy_alloc(zone, order) {
                    self.mark_allocated(pfn, order, gfp);
                    return Some(pfn);
                }
            }
        }
        None
    }

    fn buddy_free(&self, pfn: Pfn, order: usize) {
        self.took_zone_lock(None);
        let z = &self.zones[self.zone_of(pfn)];
        let mut fa = z.lock();
        fa.free(&self.frames, pfn, order);
        z.free_count.store(fa.free, Ordering::Relaxed);
    }

    /// Claim a frame for freeing: it must be allocated. Returns false (and
    /// counts a bad free) for a double free.
    fn claim_for_free(&self, pfn: Pfn) -> bool {
        let f = self.frame(pfn);
        let mut fl = f.flags.load(Ordering::Acquire);
        loop {
            if fl & flags::ALLOCATED == 0 {
                self.bad_frees.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            // A concurrent change of another flag bit retries; only a frame
            // that is not allocated is a double free.
            match f.flags.compare_exchange_weak(fl, 0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => fl = now,
            }
        }
    }

    /// Free one frame on `cpu` (into its cache; a full cache drains a batch
    /// back to the zone).
    #[inline]
    pub fn free_frame(&self, cpu: CpuId, pfn: Pfn) {
        if !self.claim_for_free(pfn) {
            return;
        }
        let zone = self.zone_of(pfn);
        let z = &self.zones[zone];
        if z.node as usize != self.home_node(cpu) {
            self.buddy_free(pfn, 0);
            return;
        }
        let pcp = &self.pcp[cpu.index() % self.pcp.len()];
        pcp.push(z.kind, pfn, |drain| self.drain_to_zones(cpu, drain));
    }

    /// Return the frames `drain` of a per-CPU cache to their zones, each
    /// zone's lock once per run of its frames. A cache list holds the
    /// frames of the zones its refills fell back to (a movable list
    /// refilled from the normal zone, or from another node), so the frames
    /// of one drain need not all be of the zone of the frame being freed.
    fn drain_to_zones(&self, cpu: CpuId, drain: &[u32]) {
        let mut i = 0;
        while i < drain.len() {
            let zone = self.zone_of(Pfn::new_unchecked(u64::from(drain[i])));
            let z = &self.zones[zone];
            self.took_zone_lock(Some(cpu));
            let mut fa = z.lock();
            while let Some(&p) = drain.get(i) {
                let p = Pfn::new_unchecked(u64::from(p));
                if !z.contains(p) {
                    break;
                }
                fa.free(&self.frames, p, 0);
                i += 1;
            }
            z.free_count.store(fa.free, Ordering::Relaxed);
        }
    }

    /// Free 2^order frames allocated by [`PhysMem::alloc_pages`].
    pub fn free_pages(&self, cpu: CpuId, pfn: Pfn, order: usize) {
        if order == 0 {
            return self.free_frame(cpu, pfn);
        }
        if self.claim_for_free(pfn) {
            self.buddy_free(pfn, order);
        }
    }

    /// Give every per-CPU cache back to the buddy lists.
    pub fn drain_all(&self) {
        for p in self.pcp.iter() {
            for kind in [ZoneKind::Movable, ZoneKind::Normal] {
                while let Some(pfn) = p.steal(kind) {
                    self.buddy_free(pfn, 0);
                }
            }
        }
    }

    /// Mark a frame permanently in use (the zero page).
    pub fn reserve(&self, pfn: Pfn, extra: u32) {
        let f = self.frame(pfn);
        f.flags.fetch_or(extra, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(frames: u64, nodes: usize, cpus: usize) -> PhysMem {
        PhysMem::new(PhysConfig { frames, nodes, cpus, movable_percent: 75 })
    }

    #[test]
    fn boot_counts() {
        let m = mem(4096, 2, 2);
        assert_eq!(m.boot_free(), 4095, "frame 0 reserved");
        assert_eq!(m.free_frames(), 4095);
        assert_eq!(m.zones().len(), 4);
    }

    #[test]
    fn alloc_free_roundtrip_through_pcp() {
        let m = mem(8192, 1, 2);
        let mut got = alloc::vec::Vec::new();
        while let Some(p) = m.alloc_frame(CpuId(0), Gfp::MOVABLE) {
            assert!(m.frame(p).has(flags::ALLOCATED));
            got.push(p);
        }
        assert_eq!(got.len() as u64, m.boot_free(), "movable falls back to normal, then empties");
        assert_eq!(m.free_frames(), 0);
        for p in got {
            m.free_frame(CpuId(1), p);
        }
        assert_eq!(m.free_frames(), m.boot_free());
        assert_eq!(m.bad_frees(), 0);
    }

    #[test]
    fn a_sequential_allocator_gets_ascending_frames_and_few_zone_locks() {
        let m = mem(8192, 1, 1);
        let locks = m.zone_lock_takes();
        let got: alloc::vec::Vec<Pfn> = (0..2048).map(|_| m.alloc_frame(CpuId(0), Gfp::MOVABLE).unwrap()).collect();
        // Refills of 64, 128, 256, then 256 frames (seven of them to reach
        // 2048): 10 zone-lock takes where fixed batches of 64 took 32.
        assert_eq!(m.zone_lock_takes() - locks, 10);
        // Each refill is one buddy block, and the refills after the first
        // take the successive halves of larger blocks: the frames ascend
        // but past the first refill's buddy, left for later (one jump), and
        // from one 1024-frame block to the next (two). Refills of 448 (three
        // blocks each) jumped 9 times here.
        let jumps: alloc::vec::Vec<(u64, u64)> = got
            .windows(2)
            .filter(|w| w[1].as_u64() != w[0].as_u64() + 1)
            .map(|w| (w[0].as_u64(), w[1].as_u64()))
            .collect();
        assert!(jumps.len() <= 3, "frames jump {jumps:?}");
        for p in got {
            m.free_frame(CpuId(0), p);
        }
        assert_eq!(m.free_frames(), m.boot_free());
    }

    /// A cache list holds frames of the zones its refills fell back to (a
    /// movable list refilled from the normal zone once the movable zone
    /// is dry); its drains return each frame to its own zone, so that a
    /// normal allocation can still get every normal frame afterwards.
    #[test]
    fn drains_return_fallback_frames_to_their_own_zone() {
        let m = mem(8192, 1, 1);
        let boot: alloc::vec::Vec<u64> = m.zones().iter().map(Zone::free_frames).collect();
        // One frame past the movable zone: the refill that serves it comes
        // from the normal zone and leaves the rest of its frames cached in
        // the movable list, below everything freed next.
        let movable = m.zones().iter().find(|z| z.kind == ZoneKind::Movable).map(Zone::free_frames).unwrap();
        let got: alloc::vec::Vec<Pfn> = (0..=movable).map(|_| m.alloc_frame(CpuId(0), Gfp::MOVABLE).unwrap()).collect();
        assert!(pcp::BATCH as u64 <= m.pcp[0].count(), "normal frames cached in the movable list");
        for p in got {
            m.free_frame(CpuId(0), p);
        }
        m.drain_all();
        let now: alloc::vec::Vec<u64> = m.zones().iter().map(Zone::free_frames).collect();
        assert_eq!(now, boot, "free frames per zone");
        let normal = m.zones().iter().find(|z| z.kind == ZoneKind::Normal).map(Zone::free_frames).unwrap();
        let mut kernel = 0;
        while m.alloc_frame(CpuId(0), Gfp::KERNEL).is_some() {
            kernel += 1;
        }
        assert_eq!(kernel, normal, "every normal frame reachable by a normal allocation");
    }

    /// An unmovable allocation's last resort (other CPUs' caches) never
    /// hands it a movable-zone frame: with the normal zone used up it
    /// fails, though another CPU has movable frames cached.
    #[test]
    fn unmovable_allocations_never_steal_movable_frames() {
        let m = mem(8192, 1, 2);
        let movable = m.alloc_frame(CpuId(1), Gfp::MOVABLE).unwrap();
        assert!(m.pcp[1].count() > 0, "CPU 1 caches the rest of its refill");
        let normal = m.zones().iter().find(|z| z.kind == ZoneKind::Normal).unwrap();
        let expect = normal.free_frames();
        let mut got = alloc::vec::Vec::new();
        while let Some(p) = m.alloc_frame(CpuId(0), Gfp::KERNEL) {
            assert!(normal.contains(p), "frame {} of the movable zone for an unmovable allocation", p.as_u64());
            got.push(p);
        }
        assert_eq!(got.len() as u64, expect, "every normal frame, and no other");
        for p in got {
            m.free_frame(CpuId(0), p);
        }
        m.free_frame(CpuId(1), movable);
        m.drain_all();
        assert_eq!(m.free_frames(), m.boot_free());
    }

    #[test]
    fn double_free_is_caught_not_corrupting() {
        let m = mem(1024, 1, 1);
        let p = m.alloc_frame(CpuId(0), Gfp::KERNEL).unwrap();
        m.free_frame(CpuId(0), p);
        m.free_frame(CpuId(0), p);
        assert_eq!(m.bad_frees(), 1);
        assert_eq!(m.free_frames(), m.boot_free());
    }

    #[test]
    fn high_order_after_drain() {
        let m = mem(4096, 1, 1);
        let p = m.alloc_pages(CpuId(0), 10, Gfp::MOVABLE).unwrap();
        assert_eq!(p.as_u64() % 1024, 0);
        m.free_pages(CpuId(0), p, 10);
        m.drain_all();
        assert_eq!(m.free_frames(), m.boot_free());
    }
}
