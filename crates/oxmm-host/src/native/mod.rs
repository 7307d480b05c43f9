//! Native baselines: the same workloads run on the host kernel (real
//! `mmap`, real first-touch faults), so that every oxmm figure is reported
//! beside the kernel's in the same run, and every op script can be checked
//! against the kernel's semantics.

pub mod faults;
pub mod fork;
pub mod ops;
