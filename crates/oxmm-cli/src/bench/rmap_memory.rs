//! `oxmm bench rmap-memory`: reverse-map memory against page-table memory
//! in the fork fan-out, for both schemes.
//!
//! Seed 000's bad case: many processes sharing the same pages after fork,
//! where one pte chain per page costs about twice the page tables (a
//! chain entry per PTE, plus node overhead). A parent maps and touches
//! `--mib` of anonymous memory and forks children one after another; at
//! each count in `--children` the reverse map's memory (chain nodes, and
//! the node pages holding them; anon_vmas) is compared with the page-table
//! memory of all the processes. Nothing is timed: these are byte counts.

use std::io::Write;

use anyhow::{anyhow, bail};
use oxmm::rmap::{stats, RmapScheme};
use oxmm_host::MachineConfig;
use serde::Serialize;

/// Options of `oxmm bench rmap-memory`.
#[derive(clap::Args, Clone, Debug)]
pub struct RmapMemoryArgs {
    /// MiB of touched anonymous memory in the parent.
    #[arg(long, default_value_t = 64)]
    pub mib: u64,
    /// Numbers of children at which to measure, comma-separated, ascending.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    pub children: Vec<u32>,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// One measurement.
#[derive(Serialize, Clone, Debug)]
pub struct MemRow {
    /// `chains` or `object`.
    pub scheme: String,
    /// Children forked so far.
    pub children: u32,
    /// PTEs mapping a user page.
    pub mapped_ptes: u64,
    /// Bytes of page-table pages (all processes).
    pub page_table_bytes: u64,
    /// Bytes of reverse-map structures in use (chain nodes, or anon_vmas).
    pub rmap_bytes: u64,
    /// Bytes of pages held for them (chain node pages; anon_vmas: same).
    pub rmap_page_bytes: u64,
    /// Pages with a chain (`ReverseMaps`).
    pub reverse_maps: u64,
    /// `rmap_page_bytes / page_table_bytes`, percent.
    pub percent_of_page_tables: f64,
}

fn measure(scheme: RmapScheme, args: &RmapMemoryArgs) -> anyhow::Result<Vec<MemRow>> {
    let bytes = args.mib << 20;
    let max = *args.children.last().unwrap_or(&1) as u64;
    // Page tables of every process (~bytes/512 each) plus the data.
    let mem = bytes + (max + 1) * (bytes / 256 + (64 << 10)) + (128 << 20);
    let cfg =
        MachineConfig { mem_bytes: mem.div_ceil(2 << 20) << 21, cpus: 1, rmap: scheme, ..MachineConfig::default() };
    let (m, mut cpu, p) = super::touched_process(cfg, bytes)?;
    let mut kids = Vec::new();
    let mut rows = Vec::new();
    for &n in &args.children {
        while (kids.len() as u32) < n {
            kids.push(cpu.fork(&p).map_err(|e| anyhow!("fork: {e}"))?);
        }
        let s = stats(m.sys());
        let (rmap_bytes, rmap_page_bytes) = match scheme {
            RmapScheme::PteChains => (s.chain_bytes, s.chain_page_bytes),
            _ => (s.anon_vma_bytes, s.anon_vma_bytes),
        };
        rows.push(MemRow {
            scheme: if scheme == RmapScheme::PteChains { "chains" } else { "object" }.into(),
            children: n,
            mapped_ptes: s.mapped_ptes,
            page_table_bytes: s.page_table_bytes,
            rmap_bytes,
            rmap_page_bytes,
            reverse_maps: s.reverse_maps,
            percent_of_page_tables: 100.0 * rmap_page_bytes as f64 / s.page_table_bytes.max(1) as f64,
        });
    }
    m.check().map_err(|e| anyhow!("{e}"))?;
    for k in kids {
        cpu.exit_process(k);
    }
    Ok(rows)
}

/// Run the benchmark.
pub fn run_rmap_memory(args: &RmapMemoryArgs, out: &mut impl Write) -> anyhow::Result<Vec<MemRow>> {
    if args.mib == 0
        || args.children.is_empty()
        || args.children.windows(2).any(|w| w[0] >= w[1])
        || args.children[0] == 0
    {
        bail!("--mib must be positive and --children a strictly ascending list of positive counts");
    }
    let mut rows = measure(RmapScheme::PteChains, args)?;
    rows.extend(measure(RmapScheme::Object, args)?);
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(rows);
    }
    writeln!(out, "fork fan-out of a parent with {} MiB touched: reverse-map memory vs page-table memory", args.mib)?;
    writeln!(
        out,
        "{:>7} {:>8} {:>12} {:>14} {:>12} {:>14} {:>12} {:>8}",
        "scheme", "children", "mapped PTEs", "page tables", "rmap in use", "rmap pages", "ReverseMaps", "% PT"
    )?;
    for r in &rows {
        writeln!(
            out,
            "{:>7} {:>8} {:>12} {:>14} {:>12} {:>14} {:>12} {:>7.2}%",
            r.scheme,
            r.children,
            r.mapped_ptes,
            r.page_table_bytes,
            r.rmap_bytes,
            r.rmap_page_bytes,
            r.reverse_maps,
            r.percent_of_page_tables
        )?;
    }
    Ok(rows)
}
