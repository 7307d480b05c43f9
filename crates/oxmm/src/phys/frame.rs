//! Per-frame metadata: Linux's `struct page`, at most 64 bytes.
//!
//! One [`Frame`] per 4 KiB of physical memory, in a table indexed by
//! [`Pfn`]. Every field is an atomic because different paths own different
//! fields at different times: the buddy allocator owns `next`/`prev`/`order`
//! of a free frame under its zone lock, the fault path initialises a fresh
//! frame before publishing it through a PTE (Release), and rmap/reclaim read
//! `mapcount`/`index` concurrently. The 64-byte bound (one cache line) keeps
//! the table at 1.6% of memory.

use crate::addr::Pfn;
use crate::sync::{AtomicI32, AtomicU32, AtomicU64, Ordering, RawSpin};

/// Frame flag bits.
///
/// A free frame has none, except [`flags::BUDDY`] on the first frame of a
/// free buddy block: frames in a per-CPU cache are marked by nothing, so
/// moving 64 of them from the buddy lists to a cache does not write 64
/// metadata lines (they are written once, at allocation).
pub mod flags {
    /// Reserved at boot (frame 0, holes): never allocated.
    pub const RESERVED: u32 = 1 << 0;
    /// Free, the first frame of a buddy block of `order` frames.
    pub const BUDDY: u32 = 1 << 1;
    /// A page-table page.
    pub const PAGETABLE: u32 = 1 << 2;
    /// Anonymous memory.
    pub const ANON: u32 = 1 << 3;
    /// The shared zero page.
    pub const ZERO: u32 = 1 << 4;
    /// Allocated (not free, not in a per-CPU cache).
    pub const ALLOCATED: u32 = 1 << 5;
    /// Movable (user pages and page tables: migration and compaction may
    /// move it).
    pub const MOVABLE: u32 = 1 << 7;
    /// A page of a file's page cache.
    pub const FILE: u32 = 1 << 8;
    /// A page of shared anonymous memory (shmem).
    pub const SHMEM: u32 = 1 << 9;
}

/// Metadata of one frame.
#[repr(C, align(64))]
pub struct Frame {
    /// [`flags`] bits.
    pub flags: AtomicU32,
    /// References: 1 while allocated, more while pinned.
    pub refcount: AtomicU32,
    /// User PTEs mapping this frame (Linux's `_mapcount + 1`).
    pub mapcount: AtomicI32,
    /// Buddy order while free, or the allocation order.
    pub order: AtomicU32,
    /// The page index: for anonymous pages the virtual page number it was
    /// first mapped at (rmap derives addresses from it).
    pub index: AtomicU64,
    /// The owner: for anonymous pages the mm id; for page tables the mm id.
    pub mapping: AtomicU64,
    /// Buddy free-list links (frame numbers; `u32::MAX` is none).
    pub next: AtomicU32,
    /// Buddy free-list links.
    pub prev: AtomicU32,
    /// NUMA node.
    pub node: AtomicU32,
    /// The reverse map of a user page (pte chains: a direct PTE reference
    /// or a chain handle; see [`crate::rmap`]); for a chain-node page, the
    /// bitmap of its nodes in use.
    pub rmap: AtomicU64,
    /// The split page-table lock of a page-table page.
    pub ptl: RawSpin,
}

#[cfg(not(loom))]
const _: () = assert!(core::mem::size_of::<Frame>() <= 64);

/// "No frame" in the list links.
pub const NIL: u32 = u32::MAX;

impl Frame {
    /// A reserved, unused frame.
    pub fn new(node: u32) -> Frame {
        Frame {
            flags: AtomicU32::new(flags::RESERVED),
            refcount: AtomicU32::new(0),
            mapcount: AtomicI32::new(0),
            order: AtomicU32::new(0),
            index: AtomicU64::new(0),
            mapping: AtomicU64::new(0),
            next: AtomicU32::new(NIL),
            prev: AtomicU32::new(NIL),
            node: AtomicU32::new(node),
            rmap: AtomicU64::new(0),
            ptl: RawSpin::new(),
        }
    }

    /// The flag bits.
    #[inline]
    pub fn flags(&self) -> u32 {
        self.flags.load(Ordering::Acquire)
    }

    /// True if every bit of `f` is set.
    #[inline]
    pub fn has(&self, f: u32) -> bool {
        self.flags() & f == f
    }

    /// Current mapcount.
    #[inline]
    pub fn mapcount(&self) -> i32 {
        self.mapcount.load(Ordering::Acquire)
    }

    /// True if this is an anonymous page that one PTE maps and nothing
    /// else holds, so a write may reuse it in place (Linux's
    /// `wp_can_reuse_anon_folio`, which decides on the reference count).
    ///
    /// The mapcount alone is not enough: a zap clears its PTE and drops the
    /// mapcount at once, but drops the mapping's reference only after its
    /// TLB flush. Until then a CPU of the other mm may still read the page
    /// through a stale translation, and a write in place would show it data
    /// written after the fork. The Acquire load of the reference count pairs
    /// with that put, so a count of 1 means the flush is done.
    #[inline]
    pub fn is_exclusive_anon(&self) -> bool {
        self.has(flags::ANON) && self.mapcount() == 1 && self.refcount.load(Ordering::Acquire) == 1
    }
}

/// Pfn of a `u32` list link.
#[inline]
pub(crate) fn link_pfn(l: u32) -> Option<Pfn> {
    if l == NIL {
        None
    } else {
        Some(Pfn::new_unchecked(l as u64))
    }
}
