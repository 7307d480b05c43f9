//! `oxmm bench fork`: fork+exit latency per MiB of touched anonymous
//! memory, for each reverse-map scheme and the host kernel, in one run.
//!
//! For each size, a process maps that much private anonymous memory and
//! writes one byte per page; then `--reps` rounds of fork + the child's exit
//! are timed (the child does nothing: this is the cost of copying the page
//! tables with their reverse-map setup, and of tearing them down with its
//! reverse-map teardown). The hosted figures are oxmm's work only (the
//! arena is pre-touched); the kernel's come from a fresh single-threaded
//! worker process (`oxmm __fork-worker`) that holds only the measured
//! mapping, so its fork copies nothing else. Medians of the rounds.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use oxmm::rmap::RmapScheme;
use oxmm_host::MachineConfig;
use serde::Serialize;

/// Options of `oxmm bench fork`.
#[derive(clap::Args, Clone, Debug)]
pub struct ForkArgs {
    /// Sizes of touched memory in MiB, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "64,256,1024")]
    pub mib: Vec<u64>,
    /// Timed fork+exit rounds per size and target (the median is reported).
    #[arg(long, default_value_t = 7)]
    pub reps: u32,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// One measured row.
#[derive(Serialize, Clone, Debug)]
pub struct ForkRow {
    /// `chains`, `object`, `none` or `kernel`.
    pub target: String,
    /// MiB of touched memory.
    pub mib: u64,
    /// Median fork+exit, seconds.
    pub median_s: f64,
    /// Median fork alone, seconds (hosted only).
    pub fork_s: Option<f64>,
    /// Median exit alone, seconds (hosted only).
    pub exit_s: Option<f64>,
    /// Median per MiB, microseconds.
    pub us_per_mib: f64,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    if v.is_empty() {
        Duration::ZERO
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2
    }
}

fn scheme_name(s: RmapScheme) -> &'static str {
    match s {
        RmapScheme::PteChains => "chains",
        RmapScheme::Object => "object",
        RmapScheme::None => "none",
    }
}

/// Time fork+exit on a hosted machine with `scheme`.
fn hosted(scheme: RmapScheme, mib: u64, reps: u32) -> anyhow::Result<ForkRow> {
    let bytes = mib << 20;
    let cfg = MachineConfig {
        mem_bytes: (bytes + bytes / 64 + (256 << 20)).div_ceil(2 << 20) << 21,
        cpus: 1,
        rmap: scheme,
        ..MachineConfig::default()
    };
    let (m, mut cpu, p) = super::touched_process(cfg, bytes)?;
    let (mut both, mut forks, mut exits) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let t0 = Instant::now();
        let child = cpu.fork(&p).map_err(|e| anyhow!("fork: {e}"))?;
        let t1 = Instant::now();
        cpu.exit_process(child);
        let t2 = Instant::now();
        forks.push(t1 - t0);
        exits.push(t2 - t1);
        both.push(t2 - t0);
    }
    m.check().map_err(|e| anyhow!("{e}"))?;
    let med = median(both);
    Ok(ForkRow {
        target: scheme_name(scheme).into(),
        mib,
        median_s: med.as_secs_f64(),
        fork_s: Some(median(forks).as_secs_f64()),
        exit_s: Some(median(exits).as_secs_f64()),
        us_per_mib: med.as_secs_f64() * 1e6 / mib as f64,
    })
}

/// Time the kernel's fork+exit in a fresh worker process.
fn kernel(mib: u64, reps: u32) -> anyhow::Result<ForkRow> {
    let exe = std::env::current_exe().context("locating the oxmm binary")?;
    let out = std::process::Command::new(exe)
        .args(["__fork-worker", "--bytes", &(mib << 20).to_string(), "--reps", &reps.to_string()])
        .output()
        .context("running the fork worker")?;
    if !out.status.success() {
        bail!("fork worker failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let times: Vec<f64> = serde_json::from_slice(&out.stdout).context("reading the fork worker's times")?;
    let med = median(times.into_iter().map(Duration::from_secs_f64).collect());
    Ok(ForkRow {
        target: "kernel".into(),
        mib,
        median_s: med.as_secs_f64(),
        fork_s: None,
        exit_s: None,
        us_per_mib: med.as_secs_f64() * 1e6 / mib as f64,
    })
}

/// The hidden worker: print the kernel's fork+exit times as a JSON array.
pub fn worker(bytes: u64, reps: u32, out: &mut impl Write) -> anyhow::Result<()> {
    let t = oxmm_host::native::fork::fork_exit_times(bytes, reps)?;
    let secs: Vec<f64> = t.iter().map(Duration::as_secs_f64).collect();
    writeln!(out, "{}", serde_json::to_string(&secs)?)?;
    Ok(())
}

/// The report.
#[derive(Serialize, Debug)]
pub struct ForkReport {
    /// Every row.
    pub rows: Vec<ForkRow>,
    /// Per size: chains/kernel, chains/none, object/none (per-MiB ratios).
    pub ratios: Vec<(u64, f64, f64, f64)>,
}

fn ratios(rows: &[ForkRow], mibs: &[u64]) -> Vec<(u64, f64, f64, f64)> {
    let get = |t: &str, m: u64| rows.iter().find(|r| r.target == t && r.mib == m).map(|r| r.us_per_mib);
    mibs.iter()
        .filter_map(|&m| {
            let (c, o, n, k) = (get("chains", m)?, get("object", m)?, get("none", m)?, get("kernel", m)?);
            Some((m, c / k, c / n, o / n))
        })
        .collect()
}

/// Run the benchmark.
pub fn run_fork(args: &ForkArgs, out: &mut impl Write) -> anyhow::Result<ForkReport> {
    if args.mib.is_empty() || args.mib.contains(&0) || args.reps == 0 {
        bail!("--mib needs positive sizes and --reps at least 1");
    }
    let mut rows = Vec::new();
    for &mib in &args.mib {
        // Alternate targets per size so that host drift affects all alike.
        for s in [RmapScheme::PteChains, RmapScheme::Object, RmapScheme::None] {
            rows.push(hosted(s, mib, args.reps)?);
        }
        rows.push(kernel(mib, args.reps)?);
    }
    let report = ForkReport { ratios: ratios(&rows, &args.mib), rows };
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(report);
    }
    writeln!(out, "fork+exit of a process with touched anonymous memory; median of {} rounds", args.reps)?;
    writeln!(out, "{:>6} {:>8} {:>12} {:>10} {:>10} {:>10}", "MiB", "target", "fork+exit", "fork", "exit", "us/MiB")?;
    for r in &report.rows {
        let ms = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{:.3}ms", v * 1e3));
        writeln!(
            out,
            "{:>6} {:>8} {:>12} {:>10} {:>10} {:>10.1}",
            r.mib,
            r.target,
            format!("{:.3}ms", r.median_s * 1e3),
            ms(r.fork_s),
            ms(r.exit_s),
            r.us_per_mib
        )?;
    }
    writeln!(out, "\nper-MiB ratios (lower is better)")?;
    writeln!(out, "{:>6} {:>14} {:>14} {:>14}", "MiB", "chains/kernel", "chains/none", "object/none")?;
    for (m, ck, cn, on) in &report.ratios {
        writeln!(out, "{m:>6} {ck:>14.3} {cn:>14.3} {on:>14.3}")?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(t: &str, mib: u64, us: f64) -> ForkRow {
        ForkRow { target: t.into(), mib, median_s: us * mib as f64 / 1e6, fork_s: None, exit_s: None, us_per_mib: us }
    }

    #[test]
    fn ratios_pair_targets_per_size() {
        let rows = vec![row("chains", 64, 10.0), row("object", 64, 9.0), row("none", 64, 8.0), row("kernel", 64, 40.0)];
        let r = ratios(&rows, &[64, 128]);
        assert_eq!(r, vec![(64, 0.25, 1.25, 1.125)]);
    }

    #[test]
    fn median_of_even_and_odd() {
        let ms = Duration::from_millis;
        assert_eq!(median(vec![ms(3), ms(1), ms(2)]), ms(2));
        assert_eq!(median(vec![ms(4), ms(1), ms(2), ms(3)]), Duration::from_micros(2500));
    }
}
