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

/// A hosted machine of shape `cfg` with one process, on CPU 0, that has
/// `bytes` of anonymous private memory mapped and one byte per page
/// written (the starting point of `bench fork` and `bench rmap-memory`).
pub fn touched_process(
    cfg: oxmm_host::MachineConfig,
    bytes: u64,
) -> anyhow::Result<(std::sync::Arc<oxmm_host::Machine>, oxmm_host::Cpu, oxmm_host::Process)> {
    use ::oxmm::mm::{MapFlags, Prot};
    use anyhow::{anyhow, Context as _};
    let m = oxmm_host::Machine::new(cfg).context("booting the hosted machine")?;
    let mut cpu = m.cpu(0)?;
    let p = m.new_process(&cpu).map_err(|e| anyhow!("process: {e}"))?;
    cpu.switch_to(&p);
    let a =
        cpu.mmap(0, bytes, Prot::RW, MapFlags::PRIVATE.union(MapFlags::ANONYMOUS)).map_err(|e| anyhow!("mmap: {e}"))?;
    for i in 0..bytes / 4096 {
        cpu.write_u8(::oxmm::addr::VirtAddr::new_truncate(a.as_u64() + i * 4096), 1)
            .map_err(|f| anyhow!("touch: {f:?}"))?;
    }
    Ok((m, cpu, p))
}
