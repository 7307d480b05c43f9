//! `oxmm`: run op scripts and benchmarks on the hosted machine.
#![forbid(unsafe_code)]

mod bench;
mod ops;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use oxmm_host::{Machine, MachineConfig};

/// oxmm: a virtual-memory subsystem, run on a hosted machine.
#[derive(Parser, Debug)]
#[command(name = "oxmm", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// The hosted machine's shape (defaults: the built-in default machine).
#[derive(Args, Debug, Clone)]
struct MachineArgs {
    /// Physical memory in MiB (default: 2048, or enough for the benchmark).
    #[arg(long)]
    mem_mib: Option<u64>,
    /// NUMA nodes.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// CPUs (default: 4, or the largest thread count of the benchmark).
    #[arg(long)]
    cpus: Option<usize>,
    /// Reverse-map scheme.
    #[arg(long, value_enum, default_value_t = RmapArg::Chains)]
    rmap: RmapArg,
}

impl MachineArgs {
    fn config(&self, min_mem: u64, min_cpus: usize) -> MachineConfig {
        let d = MachineConfig::default();
        MachineConfig {
            mem_bytes: self.mem_mib.map(|m| m << 20).unwrap_or_else(|| d.mem_bytes.max(min_mem)),
            nodes: self.nodes,
            cpus: self.cpus.unwrap_or_else(|| d.cpus.max(min_cpus)),
            movable_percent: d.movable_percent,
            rmap: self.rmap.scheme(),
        }
    }
}

/// The reverse-map scheme, on the command line.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default)]
enum RmapArg {
    /// pte chains (shared chains, hashed rmap locks).
    #[default]
    Chains,
    /// Object-based (anon_vma).
    Object,
    /// No reverse map.
    None,
}

impl RmapArg {
    fn scheme(self) -> oxmm::rmap::RmapScheme {
        match self {
            RmapArg::Chains => oxmm::rmap::RmapScheme::PteChains,
            RmapArg::Object => oxmm::rmap::RmapScheme::Object,
            RmapArg::None => oxmm::rmap::RmapScheme::None,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run an op script (see the README): one JSON line per operation.
    Run {
        /// The script.
        file: PathBuf,
        /// Run it on the host kernel instead (each script process a real
        /// process), to compare outputs line by line.
        #[arg(long)]
        native: bool,
        /// Run the invariant checker after the script (hosted only).
        #[arg(long)]
        check: bool,
        #[command(flatten)]
        machine: MachineArgs,
    },
    /// Benchmarks, each beside the host kernel in the same run.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// (internal) The host kernel's side of `bench fork`, run in a fresh
    /// single-threaded process: print fork+exit times as JSON.
    #[command(name = "__fork-worker", hide = true)]
    ForkWorker {
        /// Bytes of touched memory.
        #[arg(long)]
        bytes: u64,
        /// Rounds.
        #[arg(long)]
        reps: u32,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCmd {
    /// Anonymous write-fault throughput: N threads map, touch one byte per
    /// page, unmap; the host kernel, oxmm with prefault off and on (and
    /// with shared RSS counters), and the zero-fill limit, in one run.
    Faults {
        #[command(flatten)]
        args: bench::FaultsArgs,
        #[command(flatten)]
        machine: MachineArgs,
    },
    /// fork+exit latency per MiB of touched memory: pte chains,
    /// object-based rmap, no rmap, and the host kernel, in one run.
    Fork {
        #[command(flatten)]
        args: bench::fork::ForkArgs,
    },
    /// Reverse-map memory against page-table memory in the fork fan-out,
    /// for both reverse-map schemes.
    RmapMemory {
        #[command(flatten)]
        args: bench::rmap_memory::RmapMemoryArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("oxmm: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn boot(cfg: MachineConfig) -> anyhow::Result<Arc<Machine>> {
    Machine::new(cfg).with_context(|| {
        format!("booting the hosted machine ({} MiB, {} CPUs, {} nodes)", cfg.mem_bytes >> 20, cfg.cpus, cfg.nodes)
    })
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let stdout = std::io::stdout();
    match cli.cmd {
        Cmd::Run { file, native, check, machine } => {
            let mut out = stdout.lock();
            if native {
                return ops::run_native(&file, &mut out);
            }
            let mut backend = ops::oxmm::OxmmBackend::new(boot(machine.config(0, 1))?)?;
            let code = ops::run_file(&file, &mut backend, &mut out)?;
            out.flush()?;
            if check {
                backend.machine().check().map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            Ok(code)
        }
        Cmd::Bench(BenchCmd::Faults { args, machine }) => {
            args.validate()?;
            let max_threads = args.threads.iter().copied().max().unwrap_or(1);
            let need = args.machine_bytes(MachineConfig::default().movable_percent);
            let m = boot(machine.config(need, max_threads))?;
            let targets = bench::fault_targets(&m, &args)?;
            let mut out = stdout.lock();
            bench::run_faults(&args, &targets, &mut out)?;
            m.check().map_err(|e| anyhow::anyhow!("after the benchmark: {e}"))?;
            Ok(0)
        }
        Cmd::Bench(BenchCmd::Fork { args }) => {
            bench::fork::run_fork(&args, &mut stdout.lock())?;
            Ok(0)
        }
        Cmd::Bench(BenchCmd::RmapMemory { args }) => {
            bench::rmap_memory::run_rmap_memory(&args, &mut stdout.lock())?;
            Ok(0)
        }
        Cmd::ForkWorker { bytes, reps } => {
            bench::fork::worker(bytes, reps, &mut stdout.lock())?;
            Ok(0)
        }
    }
}
