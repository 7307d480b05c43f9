//! The page cache: file pages and shared anonymous memory (shmem).
//!
//! A [`PageCache`] maps page indexes of one object — a file reached through
//! a [`FileSource`], or a shmem object with no backing — to frames. A cached
//! frame carries [`FILE`](crate::phys::frame::flags::FILE) or
//! [`SHMEM`](crate::phys::frame::flags::SHMEM), the cache's id in `mapping`
//! and its index; the cache holds one reference, each PTE mapping it one
//! more. `MAP_SHARED` mappings map the cached frame itself (writes reach
//! the cache, and a dirty page is written back by `msync` and at exit);
//! `MAP_PRIVATE` file mappings map it read-only and copy it on the first
//! write. Reads of a file never yet cached go to the source; reads of
//! cached pages around a read fault are mapped at once (fault-around).
//!
//! Who maps what is kept per cache in an [`itree::IntervalTree`] of page
//! ranges per address space: the object-based reverse map for file pages
//! (an address space's exact VMAs are then looked up under its mmap lock).

pub mod itree;

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;

use crate::addr::{Pfn, PAGE_SIZE};
use crate::errno::{Errno, SysResult};
use crate::mm::Mm;
use crate::phys::frame::flags;
use crate::phys::Gfp;
use crate::platform::CpuId;
use crate::sync::{new_mutex, Mutex, Ordering};
use crate::system::System;

use self::itree::{Interval, IntervalTree};

/// Where a file's bytes live (a host file, a block device, …).
pub trait FileSource: Send + Sync {
    /// The file's size in bytes.
    fn size(&self) -> u64;
    /// True if writes may be stored back (opened read-write).
    fn writable(&self) -> bool;
    /// Fill `buf` (one page) with the bytes at `index * 4096`, zero past
    /// the end of the file.
    fn read_page(&self, index: u64, buf: &mut [u8]) -> SysResult<()>;
    /// Store the first `len` bytes of `buf` at `index * 4096`.
    fn write_page(&self, index: u64, buf: &[u8]) -> SysResult<()>;
}

/// The page cache of one object.
pub struct PageCache {
    /// The id pages and VMAs name it by.
    pub id: u64,
    source: Option<Arc<dyn FileSource>>,
    /// Size in pages of a shmem object (files: from the source).
    shmem_pages: u64,
    pages: Mutex<BTreeMap<u64, Pfn>>,
    dirty: Mutex<BTreeSet<u64>>,
    users: Mutex<(IntervalTree, BTreeMap<u64, Weak<Mm>>)>,
    sys: Weak<System>,
}

impl PageCache {
    /// True for shared anonymous memory.
    pub fn is_shmem(&self) -> bool {
        self.source.is_none()
    }

    /// True if written pages can be stored back.
    pub fn writable(&self) -> bool {
        self.source.as_ref().is_none_or(|s| s.writable())
    }

    /// Pages of the object: accesses at or beyond are `SIGBUS`.
    pub fn size_pages(&self) -> u64 {
        match &self.source {
            Some(s) => s.size().div_ceil(PAGE_SIZE),
            None => self.shmem_pages,
        }
    }

    /// The cached frame of `index`, if any (no I/O).
    pub fn lookup(&self, index: u64) -> Option<Pfn> {
        self.pages.lock().get(&index).copied()
    }

    /// Pages cached.
    pub fn cached(&self) -> u64 {
        self.pages.lock().len() as u64
    }

    /// The frame of `index`, read from the source (or zero-filled) into a
    /// new cached frame if it is not cached. `Bus` past the end of the
    /// object; `Oom` without memory; `Io` if the source failed.
    pub fn get(&self, sys: &System, cpu: CpuId, index: u64) -> Result<Pfn, CacheError> {
        if index >= self.size_pages() {
            return Err(CacheError::Bus);
        }
        let mut pages = self.pages.lock();
        if let Some(p) = pages.get(&index) {
            return Ok(*p);
        }
        let pfn = sys.phys.alloc_frame(cpu, Gfp::MOVABLE).ok_or(CacheError::Oom)?;
        sys.zero_frame(pfn);
        if let Some(src) = &self.source {
            // SAFETY:
            // - the frame was just allocated: no PTE maps it and no other
            //   path can reach it, so this is the only reference to its
            //   4096 bytes in the direct map.
            let buf = unsafe { core::slice::from_raw_parts_mut(sys.frame_ptr(pfn), PAGE_SIZE as usize) };
            if src.read_page(index, buf).is_err() {
                sys.phys.free_frame(cpu, pfn);
                return Err(CacheError::Io);
            }
        }
        let f = sys.phys.frame(pfn);
        f.index.store(index, Ordering::Relaxed);
        f.mapping.store(self.id, Ordering::Relaxed);
        f.mapcount.store(0, Ordering::Relaxed);
        f.flags.fetch_or(if self.is_shmem() { flags::SHMEM } else { flags::FILE }, Ordering::Release);
        pages.insert(index, pfn);
        Ok(pfn)
    }

    /// Note that page `index` was written through a shared mapping.
    pub fn mark_dirty(&self, index: u64) {
        if !self.is_shmem() {
            self.dirty.lock().insert(index);
        }
    }

    /// Write back the dirty pages of `[first, last]` to the source.
    pub fn writeback(&self, sys: &System, first: u64, last: u64) -> SysResult<()> {
        let Some(src) = &self.source else { return Ok(()) };
        let todo: Vec<u64> = self.dirty.lock().range(first..=last).copied().collect();
        for index in todo {
            let Some(pfn) = self.lookup(index) else { continue };
            // Clean before writing: a write through a mapping during the
            // I/O re-dirties the page and is written next time.
            self.dirty.lock().remove(&index);
            // SAFETY:
            // - the frame is cached (the cache holds a reference), so it is
            //   live frame memory in the direct map;
            // - user CPUs may be writing it concurrently through shared
            //   mappings — as with a kernel's writeback, what is written is
            //   some state of the page; the bytes are plain data.
            let buf = unsafe { core::slice::from_raw_parts(sys.frame_ptr(pfn), PAGE_SIZE as usize) };
            if let Err(e) = src.write_page(index, buf) {
                self.dirty.lock().insert(index);
                return Err(e);
            }
        }
        Ok(())
    }

    /// `mm` maps pages `[start, end)` of this object.
    pub fn add_user(&self, mm: &Arc<Mm>, start: u64, end: u64) {
        let mut u = self.users.lock();
        u.0.insert(Interval { start, end, owner: mm.id() });
        u.1.insert(mm.id(), Arc::downgrade(mm));
    }

    /// `mm` maps nothing of this object any more.
    pub fn remove_user(&self, mm: u64) {
        let mut u = self.users.lock();
        u.0.remove_owner(mm);
        u.1.remove(&mm);
    }

    /// The address spaces that may map page `index`.
    pub fn users_of(&self, index: u64) -> Vec<Arc<Mm>> {
        let u = self.users.lock();
        let mut hits = Vec::new();
        u.0.stab(index, &mut hits);
        let mut ids: Vec<u64> = hits.into_iter().map(|i| i.owner).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter().filter_map(|id| u.1.get(&id).and_then(Weak::upgrade)).collect()
    }
}

impl Drop for PageCache {
    /// The last user is gone: write back what is dirty and give every
    /// cached frame back (no PTE maps one any more: each mapping held an
    /// `Arc` to the cache through its mm).
    fn drop(&mut self) {
        let Some(sys) = self.sys.upgrade() else { return };
        let _ = self.writeback(&sys, 0, u64::MAX);
        let pages = core::mem::take(&mut *self.pages.lock());
        for (_, pfn) in pages {
            let f = sys.phys.frame(pfn);
            f.flags.fetch_and(!(flags::FILE | flags::SHMEM), Ordering::Relaxed);
            sys.put_page(CpuId(0), pfn);
        }
        sys.forget_cache(self.id);
    }
}

/// Why a page could not be had from the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheError {
    /// Beyond the end of the object.
    Bus,
    /// No memory.
    Oom,
    /// The source failed.
    Io,
}

/// Every page cache of a system (weakly: a cache lives while a mapping or
/// an open file holds it).
pub struct Caches {
    next: crate::sync::AtomicU64,
    map: Mutex<BTreeMap<u64, Weak<PageCache>>>,
}

impl Default for Caches {
    fn default() -> Self {
        Self::new()
    }
}

impl Caches {
    /// None.
    pub fn new() -> Caches {
        Caches { next: crate::sync::AtomicU64::new(1), map: new_mutex(BTreeMap::new()) }
    }

    /// A cache for `source` (a file) or, with `None`, a shmem object of
    /// `shmem_pages` pages.
    pub fn create(&self, sys: &Arc<System>, source: Option<Arc<dyn FileSource>>, shmem_pages: u64) -> Arc<PageCache> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) | (1 << 62);
        let c = Arc::new(PageCache {
            id,
            source,
            shmem_pages,
            pages: new_mutex(BTreeMap::new()),
            dirty: new_mutex(BTreeSet::new()),
            users: new_mutex((IntervalTree::new(), BTreeMap::new())),
            sys: Arc::downgrade(sys),
        });
        self.map.lock().insert(id, Arc::downgrade(&c));
        c
    }

    /// The cache `id`, if alive.
    pub fn get(&self, id: u64) -> Option<Arc<PageCache>> {
        self.map.lock().get(&id).and_then(Weak::upgrade)
    }

    pub(crate) fn forget(&self, id: u64) {
        self.map.lock().remove(&id);
    }
}

/// `Errno` for a cache error met by a system call (not a fault).
impl From<CacheError> for Errno {
    fn from(e: CacheError) -> Errno {
        match e {
            CacheError::Bus => Errno::EFAULT,
            CacheError::Oom => Errno::ENOMEM,
            CacheError::Io => Errno::EIO,
        }
    }
}
