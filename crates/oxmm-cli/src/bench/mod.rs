//! `oxmm bench …`: benchmarks that report the hosted machine's figures next
//! to the host kernel's, measured in the same run on the same pattern.
//!
//! Each benchmark is generic over a *target* trait (the hosted oxmm machine
//! in some configuration, or the host kernel), so the timing harness, the
//! statistics (median over runs) and the output (seed-style table, JSON,
//! SVG plot) are written once. Benchmarks are commands, never timed
//! assertions in tests.

pub mod any;
pub mod faults;
pub mod fork;
pub mod native;
pub mod oxmm;
pub mod plot;
pub mod rmap_memory;
pub mod table;
pub mod zerofill;

pub use any::fault_targets;
pub use faults::{run_faults, FaultsArgs};
