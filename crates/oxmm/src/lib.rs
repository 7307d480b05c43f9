//! oxmm: a virtual-memory subsystem, `no_std` + `alloc`.
//!
//! The crate turns virtual addresses into physical frames: x86-64 page
//! tables kept in ordinary frames, a buddy allocator with per-CPU caches,
//! address spaces with VMAs and the Linux memory calls, a fault handler and
//! a TLB shootdown protocol. It never touches a host: frame memory, CPUs,
//! IPIs and clocks are reached through [`platform::Platform`], which the
//! hosted machine (`oxmm-host`) or a kernel implements.
//!
//! # Lock order (outermost first)
//!
//! ```text
//! mmap lock (per mm, per-CPU reader counts; read for faults, madvise,
//!   │        mincore, msync; write for mmap/munmap/mprotect/mremap/brk/
//!   │        fork/exit)
//!   └─ chain lock (pte chains: shared by every rmap change, exclusive for
//!        │         node coalescing)
//!        └─ page-table page lock (split ptl, in the page-table frame's
//!             │                   metadata)
//!             └─ rmap locks (hashed by frame index; a batch takes several,
//!                  │          in ascending order)
//!                  └─ chain-node allocator lock, page-cache locks
//!                       └─ per-CPU page cache lock (uncontended: its CPU,
//!                          or a steal)
//!                            └─ zone lock (per zone buddy free lists; taken
//!                               inside the cache lock to refill or drain it)
//! ```
//!
//! The reverse-map walkers ([`rmap::mappings`], [`rmap::page_referenced`],
//! [`rmap::try_to_unmap`]) start with no lock held and take an mm's mmap
//! lock for reading per mapping, so they follow the same order.
//!
//! The anonymous fault on an empty PTE takes none of these beyond the mmap
//! read lock: missing page tables and the PTE itself are installed with
//! compare-and-swap, frames come from the per-CPU cache.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod addr;
pub mod arch;
pub mod check;
pub mod errno;
pub mod fault;
pub mod mm;
pub mod pagecache;
pub mod pgtable;
pub mod phys;
pub mod platform;
pub mod rmap;
pub mod stats;
pub mod sync;
pub mod system;
pub mod tlb;

pub use addr::{Pfn, PhysAddr, VirtAddr};
pub use errno::{Errno, SysResult};
