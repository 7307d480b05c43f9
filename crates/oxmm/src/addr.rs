//! Address newtypes.
//!
//! No bare integer address crosses a module boundary: a [`VirtAddr`] is
//! canonical by construction (bits 63..47 are copies of bit 47, the x86-64
//! 4-level rule), a [`PhysAddr`] fits the 52-bit physical space, and a
//! [`Pfn`] names a 4 KiB frame. Page sizes are types implementing the
//! sealed [`PageSize`] trait.

use core::fmt;
use core::ops::{Add, Sub};

/// 4 KiB, the base page size.
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

mod sealed {
    pub trait Sealed {}
}

/// A page size the paging format supports.
pub trait PageSize: sealed::Sealed + Copy + Eq + fmt::Debug {
    /// Bytes in a page of this size.
    const SIZE: u64;
    /// The page-table level whose entry maps a page of this size
    /// (1 = PTE, 2 = PMD).
    const LEVEL: usize;
}

/// A 4 KiB page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size4K {}
/// A 2 MiB page (a PS leaf at the PMD level).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size2M {}

impl sealed::Sealed for Size4K {}
impl sealed::Sealed for Size2M {}
impl PageSize for Size4K {
    const SIZE: u64 = 4096;
    const LEVEL: usize = 1;
}
impl PageSize for Size2M {
    const SIZE: u64 = 2 * 1024 * 1024;
    const LEVEL: usize = 2;
}

/// A canonical 48-bit x86-64 virtual address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct VirtAddr(u64);

/// The error for an address that is not canonical.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotCanonical(pub u64);

impl VirtAddr {
    /// One past the highest user address (`TASK_SIZE` on x86-64 with 4-level
    /// paging: 2^47 minus one guard page).
    pub const USER_END: u64 = (1u64 << 47) - PAGE_SIZE;

    /// The address, if canonical.
    pub const fn try_new(addr: u64) -> Result<VirtAddr, NotCanonical> {
        let top = addr >> 47;
        if top == 0 || top == 0x1ffff {
            Ok(VirtAddr(addr))
        } else {
            Err(NotCanonical(addr))
        }
    }

    /// The address with bits 63..48 made copies of bit 47.
    pub const fn new_truncate(addr: u64) -> VirtAddr {
        VirtAddr((((addr << 16) as i64) >> 16) as u64)
    }

    /// The zero address.
    pub const fn zero() -> VirtAddr {
        VirtAddr(0)
    }

    /// The raw value.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// True if aligned to `align` (a power of two).
    pub const fn is_aligned(self, align: u64) -> bool {
        self.0 & (align - 1) == 0
    }

    /// Rounded down to `align` (a power of two).
    pub const fn align_down(self, align: u64) -> VirtAddr {
        VirtAddr(self.0 & !(align - 1))
    }

    /// The offset within its 4 KiB page.
    pub const fn page_offset(self) -> u64 {
        self.0 & (PAGE_SIZE - 1)
    }

    /// The virtual page number (address >> 12).
    pub const fn vpn(self) -> u64 {
        (self.0 & ((1 << 48) - 1)) >> PAGE_SHIFT
    }

    /// The index into the page-table page at `level` (1 = PTE … 4 = PML4).
    pub const fn table_index(self, level: usize) -> usize {
        ((self.0 >> (PAGE_SHIFT as usize + 9 * (level - 1))) & 511) as usize
    }

    /// `self + n`, if the result is canonical and does not wrap.
    pub fn checked_add(self, n: u64) -> Option<VirtAddr> {
        self.0.checked_add(n).and_then(|v| VirtAddr::try_new(v).ok())
    }
}

impl Add<u64> for VirtAddr {
    type Output = VirtAddr;
    /// Panics (in debug) only on a programming error: callers add offsets
    /// inside ranges they validated.
    fn add(self, rhs: u64) -> VirtAddr {
        VirtAddr::new_truncate(self.0 + rhs)
    }
}

impl Sub<VirtAddr> for VirtAddr {
    type Output = u64;
    fn sub(self, rhs: VirtAddr) -> u64 {
        self.0 - rhs.0
    }
}

impl fmt::Debug for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VirtAddr({:#x})", self.0)
    }
}

/// A physical address (52 bits).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct PhysAddr(u64);

impl PhysAddr {
    /// The highest physical address bit plus one.
    pub const BITS: u32 = 52;

    /// The address, if it fits 52 bits.
    pub const fn try_new(addr: u64) -> Option<PhysAddr> {
        if addr >> Self::BITS == 0 {
            Some(PhysAddr(addr))
        } else {
            None
        }
    }
    /// The raw value.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
    /// The frame that holds this address.
    pub const fn pfn(self) -> Pfn {
        Pfn(self.0 >> PAGE_SHIFT)
    }
}

impl fmt::Debug for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhysAddr({:#x})", self.0)
    }
}

/// A physical frame number: the index of a 4 KiB frame.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct Pfn(u64);

impl Pfn {
    /// The highest frame number the PTE format can hold plus one (40 bits).
    pub const LIMIT: u64 = 1 << (PhysAddr::BITS - PAGE_SHIFT);

    /// A frame number; `None` if it cannot be held in a PTE.
    pub const fn try_new(pfn: u64) -> Option<Pfn> {
        if pfn < Self::LIMIT {
            Some(Pfn(pfn))
        } else {
            None
        }
    }
    /// A frame number the caller knows is below [`Pfn::LIMIT`] (frame-table
    /// indices, PTE fields masked to 40 bits).
    pub(crate) const fn new_unchecked(pfn: u64) -> Pfn {
        Pfn(pfn)
    }
    /// The raw value.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
    /// As a table index.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
    /// The first byte of the frame.
    pub const fn phys(self) -> PhysAddr {
        PhysAddr(self.0 << PAGE_SHIFT)
    }
    /// `self + n`.
    pub const fn add(self, n: u64) -> Pfn {
        Pfn(self.0 + n)
    }
}

impl fmt::Debug for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pfn({:#x})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_addresses() {
        assert!(VirtAddr::try_new(0x7fff_ffff_f000).is_ok());
        assert!(VirtAddr::try_new(0xffff_8000_0000_0000).is_ok());
        assert_eq!(VirtAddr::try_new(0x8000_0000_0000), Err(NotCanonical(0x8000_0000_0000)));
        assert_eq!(VirtAddr::new_truncate(0x8000_0000_0000).as_u64(), 0xffff_8000_0000_0000);
    }

    #[test]
    fn table_indices() {
        let va = VirtAddr::try_new((3 << 39) | (5 << 30) | (7 << 21) | (9 << 12) | 0x123).unwrap();
        assert_eq!(va.table_index(4), 3);
        assert_eq!(va.table_index(3), 5);
        assert_eq!(va.table_index(2), 7);
        assert_eq!(va.table_index(1), 9);
        assert_eq!(va.page_offset(), 0x123);
    }

    #[test]
    fn pfn_limits() {
        assert!(Pfn::try_new(Pfn::LIMIT - 1).is_some());
        assert!(Pfn::try_new(Pfn::LIMIT).is_none());
        assert_eq!(Pfn::try_new(5).unwrap().phys().as_u64(), 5 * 4096);
    }
}
