//! The hosted oxmm machine.
pub mod native;
