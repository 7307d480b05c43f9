//! The system: physical memory, the direct map, the zero page and the
//! counters, shared by every address space.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::{Arc, Weak};

use core::sync::atomic::AtomicU64 as HwAtomicU64;
use crossbeam_utils::CachePadded;

use crate::addr::{Pfn, PAGE_SIZE};
use crate::errno::Errno;
use crate::mm::Mm;
use crate::phys::frame::flags;
use crate::phys::{Gfp, PhysConfig, PhysMem};
use crate::platform::{CpuId, Platform};
use crate::stats::{Counters, MemInfo, Stat, VmStat};
use crate::sync::{new_mutex, AtomicU32, AtomicU64, Mutex, Ordering};

/// How the system is laid out and which policies it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SystemConfig {
    /// NUMA nodes.
    pub nodes: usize,
    /// Percent of each node in the movable zone.
    pub movable_percent: u64,
    /// How RSS is counted.
    pub rss_mode: RssMode,
    /// Anticipatory prefault (seed 003): `Some(max_order)` maps up to
    /// 2^max_order extra pages per predicted fault; `None` is off, as on
    /// Linux (op scripts compare RSS with the kernel's, so off is the
    /// default). [`System::set_prefault`] changes it at run time.
    pub prefault: Option<u8>,
    /// The reverse-map scheme (pte chains by default).
    pub rmap: crate::rmap::RmapScheme,
}

impl Default for SystemConfig {
    fn default() -> Self {
        SystemConfig {
            nodes: 1,
            movable_percent: 75,
            rss_mode: RssMode::PerCpu,
            prefault: None,
            rmap: crate::rmap::RmapScheme::PteChains,
        }
    }
}

/// How per-mm RSS counters are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RssMode {
    /// One counter triple per CPU, folded on read (seed 002's "sloppy rss",
    /// exact after fold): no shared cache line is written by a fault.
    PerCpu,
    /// One shared atomic triple per mm, exact at every instant: every fault
    /// writes a cache line all CPUs share (kept to measure that cost).
    Shared,
}

/// The largest prefault order accepted (2^6 = 64 extra pages).
pub const PREFAULT_MAX_ORDER: u8 = 6;

/// The memory system of one machine.
pub struct System {
    platform: Arc<dyn Platform>,
    base: *mut u8,
    nframes: u64,
    /// Physical memory.
    pub phys: PhysMem,
    /// Event and page counters.
    pub stats: Counters,
    zero: Pfn,
    config: SystemConfig,
    /// `max_order + 1` while prefault is on, 0 while off.
    prefault: AtomicU32,
    predictors: Box<[CachePadded<crate::fault::prefault::Predictor>]>,
    rmap: crate::rmap::Rmap,
    caches: crate::pagecache::Caches,
    next_mm_id: AtomicU64,
    mms: Mutex<BTreeMap<u64, Weak<Mm>>>,
}

// SAFETY:
// - `base` points at the platform's direct map, which the `Platform` safety
//   contract keeps valid and exclusively ours for the platform's lifetime
//   (we hold an `Arc` to it); all access to frame memory goes through
//   atomics (entries) or through frames the caller owns.
unsafe impl Send for System {}
// SAFETY: as for `Send`; shared access to frame memory is either atomic
// (page-table entries) or to frames owned by one path at a time.
unsafe impl Sync for System {}

impl System {
    /// Boot: lay out frames, reserve the zero page.
    pub fn new(platform: Arc<dyn Platform>, cfg: SystemConfig) -> Result<Arc<System>, Errno> {
        let (base, nframes) = platform.direct_map();
        if nframes < 64 || base.is_null() {
            return Err(Errno::EINVAL);
        }
        let cpus = platform.cpus().clamp(1, crate::platform::MAX_CPUS);
        let phys = PhysMem::new(PhysConfig {
            frames: nframes,
            nodes: cfg.nodes.max(1),
            cpus,
            movable_percent: cfg.movable_percent,
        });
        let zero = phys.alloc_frame(CpuId(0), Gfp::KERNEL).ok_or(Errno::ENOMEM)?;
        let sys = System {
            platform,
            base,
            nframes,
            phys,
            stats: Counters::new(cpus),
            zero,
            config: cfg,
            prefault: AtomicU32::new(cfg.prefault.map_or(0, |o| u32::from(o.min(PREFAULT_MAX_ORDER)) + 1)),
            predictors: (0..cpus).map(|_| CachePadded::new(crate::fault::prefault::Predictor::new())).collect(),
            rmap: crate::rmap::Rmap::new(cfg.rmap, cpus),
            caches: crate::pagecache::Caches::new(),
            next_mm_id: AtomicU64::new(1),
            mms: new_mutex(BTreeMap::new()),
        };
        sys.zero_frame(zero);
        sys.phys.reserve(zero, flags::ZERO);
        Ok(Arc::new(sys))
    }

    /// The configuration booted with (prefault may have changed since:
    /// see [`System::prefault`]).
    pub fn config(&self) -> SystemConfig {
        self.config
    }

    /// The prefault maximum order, or `None` while prefault is off.
    #[inline]
    pub fn prefault(&self) -> Option<u8> {
        match self.prefault.load(Ordering::Relaxed) {
            0 => None,
            n => Some((n - 1) as u8),
        }
    }

    /// Turn prefault on with `Some(max_order)` (capped at
    /// [`PREFAULT_MAX_ORDER`]) or off with `None`.
    pub fn set_prefault(&self, max_order: Option<u8>) {
        let v = max_order.map_or(0, |o| u32::from(o.min(PREFAULT_MAX_ORDER)) + 1);
        self.prefault.store(v, Ordering::Relaxed);
    }

    /// The reverse-map state.
    #[inline]
    pub fn rmap(&self) -> &crate::rmap::Rmap {
        &self.rmap
    }

    /// The page caches.
    pub fn caches(&self) -> &crate::pagecache::Caches {
        &self.caches
    }

    pub(crate) fn forget_cache(&self, id: u64) {
        self.caches.forget(id);
    }

    /// A page cache over `source` (a file opened by the platform).
    pub fn open_file(
        self: &Arc<Self>,
        source: Arc<dyn crate::pagecache::FileSource>,
    ) -> Arc<crate::pagecache::PageCache> {
        self.caches.create(self, Some(source), 0)
    }

    /// The prefault predictor of `cpu`.
    #[inline]
    pub(crate) fn predictor(&self, cpu: CpuId) -> &crate::fault::prefault::Predictor {
        &self.predictors[cpu.index() % self.predictors.len()]
    }

    /// The platform.
    pub fn platform(&self) -> &dyn Platform {
        &*self.platform
    }

    /// The shared zero page.
    #[inline(always)]
    pub fn zero_pfn(&self) -> Pfn {
        self.zero
    }

    /// A pointer to the first byte of a frame in the direct map.
    #[inline(always)]
    pub fn frame_ptr(&self, pfn: Pfn) -> *mut u8 {
        debug_assert!(pfn.as_u64() < self.nframes);
        // Frames outside the map are a bug; clamp to keep the pointer in
        // bounds (the checker will find the bad PTE).
        let idx = if pfn.as_u64() < self.nframes { pfn.as_u64() } else { 0 };
        self.base.wrapping_add((idx * PAGE_SIZE) as usize)
    }

    /// The entry `idx` of the page-table page `table`.
    ///
    /// # Safety
    ///
    /// - `table` must be a page-table page (allocated by
    ///   [`System::alloc_table`]) that stays allocated while the returned
    ///   reference is used: the caller holds the mmap lock (tables are freed
    ///   only under it, in write mode) or is inside a TLB-protected walk
    ///   (tables are freed only after a flush);
    /// - `idx < 512`.
    #[inline(always)]
    pub unsafe fn entry(&self, table: Pfn, idx: usize) -> &HwAtomicU64 {
        debug_assert!(idx < 512);
        let p = self.frame_ptr(table).wrapping_add(idx * 8) as *const HwAtomicU64;
        // SAFETY:
        // - `p` is 8-aligned and inside the frame `table`, which is in the
        //   direct map (valid for the platform's lifetime, so for `&self`);
        // - the caller keeps the frame a live page-table page while the
        //   reference is used, and entries are only accessed atomically.
        unsafe { &*p }
    }

    /// Zero a frame.
    #[inline]
    pub fn zero_frame(&self, pfn: Pfn) {
        // SAFETY:
        // - the frame is PAGE_SIZE bytes inside the direct map;
        // - the caller owns it (just allocated, not yet published), so no
        //   other path reads or writes it concurrently.
        unsafe { core::ptr::write_bytes(self.frame_ptr(pfn), 0, PAGE_SIZE as usize) }
    }

    /// Copy a frame.
    pub fn copy_frame(&self, dst: Pfn, src: Pfn) {
        // SAFETY:
        // - both frames are PAGE_SIZE bytes inside the direct map and are
        //   different frames, so the ranges do not overlap;
        // - `dst` is owned by the caller (unpublished); `src` is mapped
        //   read-only or pinned by the caller, so nobody writes it.
        unsafe { core::ptr::copy_nonoverlapping(self.frame_ptr(src), self.frame_ptr(dst), PAGE_SIZE as usize) }
    }

    /// Allocate a zeroed, movable user page for `cpu`.
    #[inline]
    pub fn alloc_user_page(&self, cpu: CpuId) -> Option<Pfn> {
        let pfn = self.phys.alloc_frame(cpu, Gfp::MOVABLE)?;
        self.zero_frame(pfn);
        Some(pfn)
    }

    /// Allocate a zeroed page-table page.
    pub fn alloc_table(&self, cpu: CpuId, owner: u64) -> Option<Pfn> {
        let pfn = self.phys.alloc_frame(cpu, Gfp::MOVABLE)?;
        self.zero_frame(pfn);
        let f = self.phys.frame(pfn);
        f.mapping.store(owner, Ordering::Relaxed);
        // Release: pairs with the Acquire in `Frame::flags` (the checker).
        f.flags.fetch_or(flags::PAGETABLE, Ordering::Release);
        self.stats.inc(cpu, Stat::PgTableAlloc);
        self.stats.inc(cpu, Stat::NrPageTables);
        Some(pfn)
    }

    /// Free a page-table page (after the TLB flush that made it unreachable).
    pub fn free_table(&self, cpu: CpuId, pfn: Pfn) {
        self.phys.frame(pfn).flags.fetch_and(!flags::PAGETABLE, Ordering::Relaxed);
        self.stats.inc(cpu, Stat::PgTableFree);
        self.stats.add(cpu, Stat::NrPageTables, -1);
        self.phys.free_frame(cpu, pfn);
    }

    /// Drop a reference to a user page; the last one frees it.
    pub fn put_page(&self, cpu: CpuId, pfn: Pfn) {
        let f = self.phys.frame(pfn);
        // AcqRel: the last put must see every other holder's accesses
        // before the frame is reused.
        let old = f.refcount.fetch_sub(1, Ordering::AcqRel);
        if old == 0 {
            // A put without a reference: undo and count it with the double
            // frees rather than wrap the count.
            f.refcount.fetch_add(1, Ordering::Relaxed);
            self.phys.note_bad_free();
            return;
        }
        if old == 1 {
            if f.has(flags::ANON) {
                self.stats.add(cpu, Stat::NrAnonPages, -1);
            }
            f.flags.fetch_and(!flags::ANON, Ordering::Relaxed);
            let order = f.order.load(Ordering::Relaxed) as usize;
            self.phys.free_pages(cpu, pfn, order);
        }
    }

    pub(crate) fn new_mm_id(&self) -> u64 {
        self.next_mm_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn register_mm(&self, id: u64, mm: Weak<Mm>) {
        self.mms.lock().insert(id, mm);
    }

    pub(crate) fn unregister_mm(&self, id: u64) {
        self.mms.lock().remove(&id);
    }

    /// Every live address space.
    pub fn mms(&self) -> alloc::vec::Vec<Arc<Mm>> {
        self.mms.lock().values().filter_map(Weak::upgrade).collect()
    }

    /// meminfo.
    pub fn meminfo(&self) -> MemInfo {
        MemInfo {
            total: self.phys.total_frames(),
            free: self.phys.free_frames(),
            anon: self.stats.get(Stat::NrAnonPages).max(0) as u64,
            page_tables: self.stats.get(Stat::NrPageTables).max(0) as u64,
        }
    }

    /// vmstat.
    pub fn vmstat(&self) -> VmStat {
        let mut counters: alloc::vec::Vec<(&'static str, i64)> =
            Stat::ALL.iter().map(|s| (s.name(), self.stats.get(*s))).collect();
        counters.push(("zone_lock_batches", self.phys.zone_lock_takes() as i64));
        VmStat { counters }
    }

    /// Writes to cache lines that several CPUs write, made so far: the
    /// counted sites are every such write reachable from the fault path
    /// (zone-lock batches of the page allocator, shared RSS counters, TLB
    /// flush requests to other CPUs). The PTE and its page-table page, and
    /// the metadata of the frame being mapped, are not counted: they are
    /// the fault's own work. See `oxmm bench faults`.
    pub fn shared_writes(&self) -> u64 {
        self.stats.get(Stat::SharedWrite).max(0) as u64 + self.phys.zone_lock_takes()
    }
}
