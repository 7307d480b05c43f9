//! The paging format: how an entry is laid out in a page-table page.
//!
//! [`PagingFormat`] is the hardware seam (arceos' `PagingMetaData`): the
//! number of levels, the entry encoding and what a leaf at each level means.
//! oxmm ships the x86-64 4-level format with the real bit positions
//! ([`x86_64`]); the rest of the crate uses it through [`Native`] and the
//! [`Pte`] newtype, so a second format is a second module plus this alias.
//!
//! Entries are 64 bits and are only ever loaded and stored as whole 64-bit
//! atomics ([`load_entry`], [`cas_entry`]): the software MMU sets accessed
//! and dirty bits concurrently with the kernel side, and a torn read of a
//! 64-bit entry (seed 002's PAE concern) must be impossible. This is the one
//! place that decides how an entry is read without its lock.
//!
//! Entries live in frame memory, which is hardware memory, so they are
//! `core` atomics even under loom; the lock-free protocols over entries are
//! written against [`EntrySlot`] so that loom models can run the same code
//! over loom atomics.

pub mod x86_64;

pub use self::x86_64::{Pte, X86_64};

use crate::addr::Pfn;
use core::sync::atomic::{AtomicU64, Ordering};

/// The format in use.
pub type Native = X86_64;

/// What a decoded entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// Nothing is mapped and no table hangs here.
    None,
    /// Points at the next-level page-table page.
    Table(Pfn),
    /// Maps a page of the size this level maps (4 KiB at level 1, 2 MiB at
    /// level 2 with PS set, 1 GiB at level 3 with PS set).
    Leaf(Pfn),
    /// A non-present entry that still holds a page (PROT_NONE, which Linux
    /// counts as present and resident).
    ProtNone(Pfn),
}

/// A hardware paging format.
pub trait PagingFormat {
    /// Levels of tables (4 on x86-64 without LA57).
    const LEVELS: usize;
    /// Entries per table page.
    const ENTRIES: usize;
    /// The highest level at which a leaf (huge page) may appear.
    const MAX_LEAF_LEVEL: usize;
    /// Decode a raw entry found at `level` (1 = PTE).
    fn decode(raw: u64, level: usize) -> EntryKind;
    /// An entry pointing at a table page.
    fn table(pfn: Pfn) -> u64;
}

/// Load an entry: one 64-bit atomic load.
///
/// Acquire: pairs with the Release of [`cas_entry`] / the stores that
/// install a table or a page, so the zeroed table or the page's contents
/// are visible once the entry is.
#[inline(always)]
pub fn load_entry(slot: &AtomicU64) -> Pte {
    Pte(slot.load(ENTRY_LOAD))
}

/// The orderings of entry accesses, in one place so that the loom models'
/// [`EntrySlot`] over loom atomics uses exactly what the code does.
/// Loads: Acquire.
pub const ENTRY_LOAD: Ordering = Ordering::Acquire;
/// Compare-and-swap success: AcqRel.
pub const ENTRY_CAS: Ordering = Ordering::AcqRel;
/// Compare-and-swap failure: Acquire.
pub const ENTRY_CAS_FAIL: Ordering = Ordering::Acquire;
/// Exchange: AcqRel.
pub const ENTRY_XCHG: Ordering = Ordering::AcqRel;

/// Compare-and-swap an entry from `old` to `new`.
///
/// AcqRel: the Release half publishes a new table's zeroing or a new page's
/// contents before the entry (pairs with [`load_entry`]); the Acquire half
/// orders what follows after the old value was observed.
#[inline(always)]
pub fn cas_entry(slot: &AtomicU64, old: Pte, new: Pte) -> Result<Pte, Pte> {
    slot.compare_exchange(old.0, new.0, ENTRY_CAS, ENTRY_CAS_FAIL).map(Pte).map_err(Pte)
}

/// Swap an entry, returning the old one (accessed/dirty bits set by a CPU
/// up to this instant are in the returned value).
#[inline(always)]
pub fn xchg_entry(slot: &AtomicU64, new: Pte) -> Pte {
    Pte(slot.swap(new.0, ENTRY_XCHG))
}

/// A word holding a page-table entry, as the lock-free protocols see it.
pub trait EntrySlot {
    /// Load (Acquire).
    fn load_pte(&self) -> Pte;
    /// Compare-and-swap (AcqRel / Acquire).
    fn cas_pte(&self, old: Pte, new: Pte) -> Result<Pte, Pte>;
    /// Exchange (AcqRel), returning the old entry.
    fn xchg_pte(&self, new: Pte) -> Pte;
}

impl EntrySlot for AtomicU64 {
    #[inline(always)]
    fn load_pte(&self) -> Pte {
        load_entry(self)
    }
    #[inline(always)]
    fn cas_pte(&self, old: Pte, new: Pte) -> Result<Pte, Pte> {
        cas_entry(self, old, new)
    }
    #[inline(always)]
    fn xchg_pte(&self, new: Pte) -> Pte {
        xchg_entry(self, new)
    }
}

#[cfg(loom)]
impl EntrySlot for loom::sync::atomic::AtomicU64 {
    fn load_pte(&self) -> Pte {
        Pte(self.load(ENTRY_LOAD))
    }
    fn cas_pte(&self, old: Pte, new: Pte) -> Result<Pte, Pte> {
        self.compare_exchange(old.0, new.0, ENTRY_CAS, ENTRY_CAS_FAIL).map(Pte).map_err(Pte)
    }
    fn xchg_pte(&self, new: Pte) -> Pte {
        Pte(self.swap(new.0, ENTRY_XCHG))
    }
}
