//! A list of targets of different kinds for one run: the host kernel and
//! the hosted machine in several configurations.

use std::sync::Arc;

use oxmm::system::RssMode;
use oxmm_host::Machine;

use super::faults::{FaultTarget, FaultThread, FaultsArgs};
use super::native::{NativeTarget, NativeThread};
use super::oxmm::{OxmmTarget, OxmmThread};

/// Any target of `oxmm bench faults`.
pub enum AnyTarget {
    /// The host kernel.
    Kernel(NativeTarget),
    /// The hosted machine.
    Oxmm(OxmmTarget),
}

/// The thread of an [`AnyTarget`].
pub enum AnyThread {
    /// The host kernel's.
    Kernel(NativeThread),
    /// The hosted machine's.
    Oxmm(OxmmThread),
}

/// Name of the hosted machine with prefault off.
pub const OXMM_PF_OFF: &str = "oxmm-pf-off";

/// Name of the hosted machine with prefault of max order `order`.
pub fn oxmm_pf_on(order: u8) -> String {
    format!("oxmm-pf{order}")
}

/// The targets of `args`, in run order: the kernel (every ratio's
/// baseline), oxmm with prefault off, oxmm with prefault on (compared with
/// prefault off), and with `--rss-shared` oxmm with prefault on and shared
/// RSS counters (compared with per-CPU counters).
pub fn fault_targets(machine: &Arc<Machine>, args: &FaultsArgs) -> anyhow::Result<Vec<AnyTarget>> {
    let order = args.prefault_order;
    let on = oxmm_pf_on(order);
    let mut targets = vec![
        AnyTarget::Kernel(NativeTarget::new()),
        AnyTarget::Oxmm(OxmmTarget::with_config(machine.clone(), OXMM_PF_OFF, None, RssMode::PerCpu)?),
        AnyTarget::Oxmm(
            OxmmTarget::with_config(machine.clone(), on.clone(), Some(order), RssMode::PerCpu)?
                .compared_with(OXMM_PF_OFF),
        ),
    ];
    if args.rss_shared {
        targets.push(AnyTarget::Oxmm(
            OxmmTarget::with_config(machine.clone(), format!("{on}-rss-shared"), Some(order), RssMode::Shared)?
                .compared_with(on),
        ));
    }
    Ok(targets)
}

macro_rules! each {
    ($self:expr, $t:ident => $e:expr) => {
        match $self {
            AnyTarget::Kernel($t) => $e,
            AnyTarget::Oxmm($t) => $e,
        }
    };
}

impl FaultTarget for AnyTarget {
    type Thread<'a> = AnyThread;

    fn name(&self) -> &str {
        each!(self, t => t.name())
    }

    fn description(&self) -> String {
        each!(self, t => t.description())
    }

    fn page_size(&self) -> u64 {
        each!(self, t => t.page_size())
    }

    fn reference(&self) -> Option<&str> {
        each!(self, t => t.reference())
    }

    fn entry_counter(&self) -> Option<&'static str> {
        each!(self, t => t.entry_counter())
    }

    fn begin_run(&self) -> anyhow::Result<()> {
        each!(self, t => t.begin_run())
    }

    fn thread(&self, index: usize) -> anyhow::Result<AnyThread> {
        match self {
            AnyTarget::Kernel(t) => t.thread(index).map(AnyThread::Kernel),
            AnyTarget::Oxmm(t) => t.thread(index).map(AnyThread::Oxmm),
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        each!(self, t => t.counters())
    }
}

impl FaultThread for AnyThread {
    fn map(&mut self, len: u64) -> anyhow::Result<u64> {
        match self {
            AnyThread::Kernel(t) => t.map(len),
            AnyThread::Oxmm(t) => t.map(len),
        }
    }

    fn touch_pages(&mut self, addr: u64, len: u64, order: &[u32]) -> anyhow::Result<()> {
        match self {
            AnyThread::Kernel(t) => t.touch_pages(addr, len, order),
            AnyThread::Oxmm(t) => t.touch_pages(addr, len, order),
        }
    }

    fn unmap(&mut self, addr: u64, len: u64) -> anyhow::Result<()> {
        match self {
            AnyThread::Kernel(t) => t.unmap(addr, len),
            AnyThread::Oxmm(t) => t.unmap(addr, len),
        }
    }
}
