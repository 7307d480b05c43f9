//! TLB shootdown and batched flushing.
//!
//! # The guarantee
//!
//! After [`Platform::flush_tlb`](crate::platform::Platform::flush_tlb)
//! returns, no CPU in the request's mask reads or writes through a
//! translation the request invalidated, and every accessed/dirty update made
//! through one has landed in the PTE. Therefore a frame or a page-table page
//! unmapped from a live mm may be freed only after the flush: that is an
//! obligation, and obligations are values here — an unmap hands back an
//! [`MmuGather`] (`#[must_use]`) holding the frames and tables it unmapped,
//! which are freed by [`MmuGather::finish`] after the flush, and a single
//! PTE change that needs a flush returns a [`PendingFlush`].
//!
//! # Batching
//!
//! An `MmuGather` accumulates the address range of every PTE it clears and
//! flushes once, at the end of the munmap/mprotect/DONTNEED/exit call
//! (Linux's `mmu_gather`): one shootdown per call, not per page. Which CPUs
//! are asked is the mm's CPU mask: every CPU that has switched to the mm
//! since it was created (x86's lazy `mm_cpumask`). When that is only the
//! initiator, no other CPU is disturbed.

mod gather;

pub use gather::{MmuGather, PendingFlush};
