//! `oxmm bench …`: benchmarks that report the hosted machine's figures next
//! to the host kernel's, measured in the same run on the same pattern.
//!
//! Each benchmark is generic over a *target* trait (the hosted oxmm machine
//! or the host kernel), so the timing harness, the statistics (median over
//! runs) and the output (seed-style table or JSON) are written once.
//! Benchmarks are commands, never timed assertions in tests.

pub mod faults;
pub mod native;
pub mod oxmm;

pub use faults::{run_faults, FaultsArgs};
pub use native::NativeTarget;
pub use oxmm::OxmmTarget;
