//! The hosted oxmm machine.
//!
//! Runs the `no_std` core in user space on real memory: one pre-touched
//! arena is physical memory ([`arena`]), threads are CPUs ([`Cpu`]), each
//! with a software TLB and MMU that walk the core's real x86-64 page tables
//! and set accessed/dirty bits in them, and `membarrier(2)` is the TLB
//! shootdown IPI ([`tlb`], [`barrier`]). [`native`] runs the same
//! workloads on the host kernel for comparison.

pub mod arena;
pub mod barrier;
pub mod cpu;
pub mod file;
pub mod machine;
pub mod native;
pub mod platform;
pub mod tlb;

pub use cpu::{Cpu, Fault, Process};
pub use machine::{Machine, MachineConfig};

/// What can go wrong building or using the hosted machine.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A configuration value is out of range.
    #[error("bad machine configuration: {0}")]
    Config(String),
    /// The arena could not be mapped.
    #[error("cannot map the memory arena: {0}")]
    Arena(#[source] std::io::Error),
    /// membarrier(2) is unavailable.
    #[error("membarrier(2) PRIVATE_EXPEDITED is required for TLB shootdowns: {0}")]
    Membarrier(#[source] std::io::Error),
    /// The CPU is already held by another handle.
    #[error("CPU {0} is already in use by another thread")]
    CpuBusy(usize),
}
