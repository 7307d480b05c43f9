//! The x86-64 4-level paging format (Intel SDM vol. 3, 4.5).
//!
//! | bit | name | meaning here |
//! |---|---|---|
//! | 0 | P | present |
//! | 1 | R/W | writable |
//! | 2 | U/S | user |
//! | 3 | PWT | write-through |
//! | 4 | PCD | cache disable |
//! | 5 | A | accessed (set by the MMU on a walk) |
//! | 6 | D | dirty (set by the MMU on a write) |
//! | 7 | PS | page size: a leaf at level 2 (2 MiB) or 3 (1 GiB) |
//! | 8 | G | global; with P clear, Linux's `_PAGE_PROTNONE` |
//! | 9 | (software) | mapped by prefault ahead of use |
//! | 12–51 | frame | physical frame number |
//! | 63 | NX | no execute |
//!
//! PROT_NONE mappings keep their frame with P clear and bit 8 set, as
//! Linux does, so the page stays resident and counted.

use super::{EntryKind, PagingFormat};
use crate::addr::Pfn;

/// The x86-64 4-level format.
#[derive(Clone, Copy, Debug)]
pub enum X86_64 {}

/// A raw x86-64 page-table entry.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct Pte(pub u64);

impl Pte {
    /// Present.
    pub const PRESENT: u64 = 1 << 0;
    /// Writable.
    pub const WRITABLE: u64 = 1 << 1;
    /// User accessible.
    pub const USER: u64 = 1 << 2;
    /// Page-level write-through.
    pub const PWT: u64 = 1 << 3;
    /// Page-level cache disable.
    pub const PCD: u64 = 1 << 4;
    /// Accessed.
    pub const ACCESSED: u64 = 1 << 5;
    /// Dirty.
    pub const DIRTY: u64 = 1 << 6;
    /// Page size (a leaf above level 1).
    pub const PS: u64 = 1 << 7;
    /// Global.
    pub const GLOBAL: u64 = 1 << 8;
    /// With PRESENT clear: a PROT_NONE mapping that keeps its frame.
    pub const PROTNONE: u64 = 1 << 8;
    /// Software bit 9 (ignored by the MMU): mapped ahead of use by
    /// prefault. With ACCESSED still clear at unmap, the page was never used.
    pub const SW_PREFAULT: u64 = 1 << 9;
    /// No execute.
    pub const NX: u64 = 1 << 63;
    /// The frame-number field, bits 12–51.
    pub const FRAME_MASK: u64 = ((1 << 52) - 1) & !0xfff;

    /// The empty entry.
    pub const NONE: Pte = Pte(0);

    /// An entry mapping `pfn` with the given flag bits.
    #[inline(always)]
    pub const fn new(pfn: Pfn, flags: u64) -> Pte {
        Pte((pfn.as_u64() << 12) | flags)
    }
    /// No bits at all.
    #[inline(always)]
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }
    /// The P bit.
    #[inline(always)]
    pub const fn is_present(self) -> bool {
        self.0 & Self::PRESENT != 0
    }
    /// Holds a page: present, or PROT_NONE (Linux's `pte_present`).
    #[inline(always)]
    pub const fn maps_frame(self) -> bool {
        self.0 & (Self::PRESENT | Self::PROTNONE) != 0
    }
    /// A leaf at level 2 or 3.
    #[inline(always)]
    pub const fn is_huge(self) -> bool {
        self.0 & Self::PS != 0
    }
    /// Writable.
    #[inline(always)]
    pub const fn is_writable(self) -> bool {
        self.0 & Self::WRITABLE != 0
    }
    /// Accessed.
    #[inline(always)]
    pub const fn is_accessed(self) -> bool {
        self.0 & Self::ACCESSED != 0
    }
    /// Dirty.
    #[inline(always)]
    pub const fn is_dirty(self) -> bool {
        self.0 & Self::DIRTY != 0
    }
    /// The frame number field.
    #[inline(always)]
    pub const fn pfn(self) -> Pfn {
        Pfn::new_unchecked((self.0 & Self::FRAME_MASK) >> 12)
    }
    /// With `bits` set.
    #[inline(always)]
    pub const fn with(self, bits: u64) -> Pte {
        Pte(self.0 | bits)
    }
    /// With `bits` cleared.
    #[inline(always)]
    pub const fn without(self, bits: u64) -> Pte {
        Pte(self.0 & !bits)
    }
}

impl core::fmt::Debug for Pte {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Pte({:#018x})", self.0)
    }
}

impl PagingFormat for X86_64 {
    const LEVELS: usize = 4;
    const ENTRIES: usize = 512;
    const MAX_LEAF_LEVEL: usize = 3;

    #[inline(always)]
    fn decode(raw: u64, level: usize) -> EntryKind {
        let pte = Pte(raw);
        if pte.is_present() {
            if level == 1 || (level <= Self::MAX_LEAF_LEVEL && pte.is_huge()) {
                EntryKind::Leaf(pte.pfn())
            } else {
                EntryKind::Table(pte.pfn())
            }
        } else if raw & Pte::PROTNONE != 0 && (level == 1 || pte.is_huge()) {
            EntryKind::ProtNone(pte.pfn())
        } else {
            EntryKind::None
        }
    }

    #[inline(always)]
    fn table(pfn: Pfn) -> u64 {
        // Linux's _PAGE_TABLE: present, writable, user, accessed, dirty; the
        // leaf decides the real permission.
        Pte::new(pfn, Pte::PRESENT | Pte::WRITABLE | Pte::USER | Pte::ACCESSED | Pte::DIRTY).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_positions_are_the_hardware_ones() {
        assert_eq!(Pte::PRESENT, 0x1);
        assert_eq!(Pte::WRITABLE, 0x2);
        assert_eq!(Pte::USER, 0x4);
        assert_eq!(Pte::PWT, 0x8);
        assert_eq!(Pte::PCD, 0x10);
        assert_eq!(Pte::ACCESSED, 0x20);
        assert_eq!(Pte::DIRTY, 0x40);
        assert_eq!(Pte::PS, 0x80);
        assert_eq!(Pte::GLOBAL, 0x100);
        assert_eq!(Pte::NX, 0x8000_0000_0000_0000);
        assert_eq!(Pte::FRAME_MASK, 0x000f_ffff_ffff_f000);
    }

    #[test]
    fn decode_levels() {
        let pfn = Pfn::try_new(0xabcde).unwrap();
        let leaf = Pte::new(pfn, Pte::PRESENT | Pte::USER).0;
        assert_eq!(X86_64::decode(leaf, 1), EntryKind::Leaf(pfn));
        assert_eq!(X86_64::decode(leaf, 2), EntryKind::Table(pfn));
        let huge = Pte::new(pfn, Pte::PRESENT | Pte::PS).0;
        assert_eq!(X86_64::decode(huge, 2), EntryKind::Leaf(pfn));
        assert_eq!(X86_64::decode(huge, 4), EntryKind::Table(pfn));
        let none = Pte::new(pfn, Pte::PROTNONE).0;
        assert_eq!(X86_64::decode(none, 1), EntryKind::ProtNone(pfn));
        assert_eq!(X86_64::decode(0, 3), EntryKind::None);
        assert_eq!(Pte(X86_64::table(pfn)).pfn(), pfn);
    }
}
