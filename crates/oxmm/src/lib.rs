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
//! mmap lock (per mm; read for faults, write for munmap/mprotect/brk/mmap)
//!   └─ page-table page lock (split ptl, in the page-table frame's metadata)
//!        └─ rmap lock (hashed by frame index)            [issue 3]
//!             └─ LRU lock (per node)                      [reclaim]
//!                  └─ per-CPU page cache lock (uncontended: its CPU,
//!                     or a steal)
//!                       └─ zone lock (per zone buddy free lists; taken
//!                          inside the cache lock to refill or drain it)
//! ```
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
