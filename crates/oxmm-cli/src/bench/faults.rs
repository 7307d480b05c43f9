//! `oxmm bench faults`: anonymous first-touch fault throughput of several
//! targets — the host kernel, the hosted machine with prefault off, with
//! prefault on, … — measured in one run (the seed-003 table).
//!
//! # The pattern
//!
//! For each row shape (`order`, `gb`, `threads`, `reps`), N worker threads
//! each own a slice of `gb GiB / N` (rounded down to whole pages), and, R
//! times over:
//!
//! ```text
//!   gate ─ map slice ─ gate* ─ [touch: one byte store per page] ─ gate* ─ unmap
//!                              ^ start                        ^ last end
//! ```
//!
//! Only the touch phase counts: every store is the first touch of a
//! private anonymous page, so without prefault every store is one fault;
//! throughput is counted as seed 003's test counts it, in *pages first
//! touched*, whatever the number of fault-handler entries it took (which is
//! reported beside it). `Wall` is, summed over the R reps, the time from
//! the common start (the earliest thread out of the gate) to the last
//! thread's end; `User` and `System` are each thread's
//! `getrusage(RUSAGE_THREAD)` over its own touch phase, summed over threads
//! and reps. Map and unmap are timed the same way but reported apart. With
//! P = pages touched over all threads and reps: `flt/cpu/s = P / (User +
//! System)` and `fault/wsec = P / Wall`, as in the seed's table.
//!
//! # Counters
//!
//! A target's event counters ([`FaultTarget::counters`]) are read twice
//! over: around each whole run (map, touch and unmap: `counters`), and at
//! the two gates marked `*` above (`touch_counters`), by the last worker to
//! arrive, while every other worker waits — so the touch-phase deltas hold
//! exactly the touch phases, not the map or unmap work. Fault-handler
//! entries ([`FaultTarget::entry_counter`]: `pgfault`, `minflt`) and
//! shared-cache-line writes per fault (`shared_writes` over the touch
//! phase divided by the entries of that phase) come from the touch-phase
//! deltas. Counters only maintained at unmap (`prefault_unused`) are shown
//! from the whole-run deltas ([`RUN_PHASE_COUNTERS`]).
//!
//! # Runs, medians, ratios
//!
//! A row is measured `--runs` times; runs of the targets alternate (run 0
//! of every target, then run 1 of every target, …), and within a round
//! the targets take turns rep by rep — every target's first rep, then
//! every target's second, … — in the targets' order at even turns and in
//! reverse at odd ones. So the reps a pairing compares were measured
//! within a fraction of a second of each other, and neither side of a
//! pairing always goes first (a drift within a round, or what one target
//! leaves the next — host page cache, a frame layout — falls on both
//! sides alike). The zero-fill limit
//! (see [`super::zerofill`]) is measured at both ends of each such round,
//! the round keeping the higher of the two (a limit is what the machine
//! can do: a dip at one end — another tenant, or the host kernel catching
//! up after a large unmap — does not lower it), so slow drift of the host
//! (frequency, other load) hits all alike. The reported
//! row is the median run, taken so that the row still adds up: `Wall` is
//! the median wall, `User`/`System` are those of the run with the median
//! CPU time (the mean of the two middle runs for an even count), counters
//! are each their own median, and the rates are computed from those —
//! which, for an odd number of runs, equals the median of the per-run
//! rates.
//!
//! Ratios divide one target's median rates by another's, shape by shape:
//! every target against the first one (the kernel), and each target
//! against its [`FaultTarget::reference`] (prefault on against prefault
//! off, shared RSS against per-CPU RSS). Each ratio, and each row's share
//! of the zero-fill limit, is also given *paired*: the median over rounds
//! of run `i` over run `i` of the other (or over round `i`'s zero-fill
//! measurement), which cancels drift of the host between rounds.
//!
//! # Targets
//!
//! A [`FaultTarget`] makes per-thread [`FaultThread`]s, each of which can
//! map, touch and unmap. `thread()` is called *on the worker thread that
//! will use the result* (before the first gate of a run), so a target may
//! bind it to the OS thread — the hosted machine binds a CPU — and the
//! thread state need not be `Send`. That, and borrowing the target for the
//! run, is why `Thread` is a generic associated type rather than a boxed
//! object; a heterogeneous list of targets is an enum
//! ([`super::any::AnyTarget`]).

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use indicatif::{ProgressBar, ProgressStyle};
use oxmm_host::native::faults::{thread_rusage, Rusage};
use serde::{Serialize, Serializer};

use super::zerofill::{self, ZeroFill, ZeroFillLimit, ZeroFillReport};

const GIB: f64 = (1u64 << 30) as f64;

/// Name of the counter that holds writes to shared cache lines (see
/// `System::shared_writes`); divided by fault-handler entries for
/// `shared writes/fault`.
pub const SHARED_WRITES: &str = "shared_writes";

/// Counters that only move outside the touch phase (prefaulted pages never
/// touched are counted at unmap): tables show their whole-run deltas.
pub const RUN_PHASE_COUNTERS: &[&str] = &["prefault_unused"];

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

/// Order in which each thread touches the pages of its slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Ascending addresses (what fault prediction, seed 003, feeds on).
    Seq,
    /// A fixed pseudo-random permutation per (thread, run), the same for
    /// every target.
    Random,
}

impl Order {
    /// `seq` or `random`.
    pub fn name(self) -> &'static str {
        match self {
            Order::Seq => "seq",
            Order::Random => "random",
        }
    }
}

/// Options of `oxmm bench faults`.
#[derive(clap::Args, Clone, Debug)]
pub struct FaultsArgs {
    /// GiB of anonymous memory per row, split between the threads; a
    /// comma-separated list gives one row per size (e.g. `1,4`).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub gb: Vec<f64>,
    /// Thread counts, comma-separated (e.g. `1,2,4`): one row each.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub threads: Vec<usize>,
    /// Map/touch/unmap repetitions within one run.
    #[arg(long, default_value_t = 3)]
    pub reps: u32,
    /// Runs per row; the median run is reported.
    #[arg(long, default_value_t = 5)]
    pub runs: u32,
    /// Page touch orders within each thread's slice, comma-separated
    /// (`seq,random`): one set of rows each.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "seq")]
    pub order: Vec<Order>,
    /// Maximum prefault order of the `oxmm-pf` target (2^order extra pages
    /// per predicted fault).
    #[arg(long, default_value_t = 3)]
    pub prefault_order: u8,
    /// Also run oxmm with prefault on and one shared set of RSS counters
    /// per process (instead of per-CPU counters), to show what the shared
    /// counter costs.
    #[arg(long)]
    pub rss_shared: bool,
    /// MiB of pre-touched buffer per thread for the zero-fill limit (4 KiB
    /// memsets); 0 skips that measurement.
    #[arg(long, default_value_t = 1024)]
    pub zero_fill_mib: u64,
    /// Thread counts for the zero-fill limit, comma-separated; each thread
    /// fills its own buffer.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub zero_fill_threads: Vec<usize>,
    /// Print one JSON document (config, zero-fill limit, all rows, runs,
    /// medians, ratios) on stdout; the table then goes to stderr.
    #[arg(long)]
    pub json: bool,
    /// Also write an SVG plot of fault/wsec against threads to this file.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// No progress bar (there is none anyway unless stderr is a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

impl Default for FaultsArgs {
    fn default() -> Self {
        FaultsArgs {
            gb: vec![1.0],
            threads: vec![1],
            reps: 3,
            runs: 5,
            order: vec![Order::Seq],
            prefault_order: 3,
            rss_shared: false,
            zero_fill_mib: 1024,
            zero_fill_threads: vec![1, 2],
            json: false,
            svg: None,
            no_progress: false,
        }
    }
}

impl FaultsArgs {
    /// Check the options (before anything is booted or measured).
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.gb.is_empty() || self.threads.is_empty() || self.order.is_empty() {
            bail!("--gb, --threads and --order need at least one value");
        }
        if let Some(gb) = self.gb.iter().find(|g| !(g.is_finite() && **g > 0.0)) {
            bail!("--gb {gb}: must be a positive size");
        }
        if self.threads.contains(&0) || self.zero_fill_threads.contains(&0) {
            bail!("--threads, --zero-fill-threads: counts must be at least 1");
        }
        if self.reps == 0 || self.runs == 0 {
            bail!("--reps and --runs must be at least 1");
        }
        if self.prefault_order > oxmm::system::PREFAULT_MAX_ORDER {
            bail!("--prefault-order {}: at most {}", self.prefault_order, oxmm::system::PREFAULT_MAX_ORDER);
        }
        Ok(())
    }

    /// Bytes of memory the hosted machine needs for these rows, with
    /// `movable_percent` of it in movable zones: the largest row's data
    /// plus a quarter of headroom (page tables are 1/512 of it, the
    /// per-CPU caches a few MiB) and 256 MiB, all in the movable zones,
    /// rounded up to 2 MiB. User pages are movable allocations: a row
    /// larger than the movable zones would end its first touch on the
    /// fallback to the normal zone, and a nearly full machine measures its
    /// allocator's low-memory path (refills of a few pages per zone lock),
    /// not the fault path, while the host kernel has its whole RAM free.
    pub fn machine_bytes(&self, movable_percent: u64) -> u64 {
        let max_gb = self.gb.iter().copied().fold(0.0f64, f64::max);
        let movable = (max_gb * GIB * 1.25) as u64 + (256 << 20);
        let need = movable * 100 / movable_percent.clamp(1, 100);
        need.div_ceil(1 << 21) << 21
    }

    /// Row shapes in output order: by order, then size, then thread count
    /// (duplicates dropped).
    pub fn shapes(&self) -> Vec<Shape> {
        let mut shapes: Vec<Shape> = Vec::new();
        for &order in &self.order {
            for &gb in &self.gb {
                for &threads in &self.threads {
                    let s = Shape { gb, reps: self.reps, threads, order };
                    if !shapes.contains(&s) {
                        shapes.push(s);
                    }
                }
            }
        }
        shapes
    }

    fn zero_fill_threads(&self) -> Vec<usize> {
        let mut t = if self.zero_fill_mib == 0 { Vec::new() } else { self.zero_fill_threads.clone() };
        t.sort_unstable();
        t.dedup();
        t
    }
}

// ---------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------

/// One benchmark target: the host kernel, or the hosted oxmm machine in
/// one configuration.
pub trait FaultTarget: Sync {
    /// Per-thread state (for oxmm: a CPU handle bound to the process).
    type Thread<'a>: FaultThread
    where
        Self: 'a;

    /// Short name in tables, ratios, JSON and the plot (`kernel`,
    /// `oxmm-pf3`, …); unique within a run.
    fn name(&self) -> &str;

    /// One line saying what the target is.
    fn description(&self) -> String {
        self.name().to_string()
    }

    /// Bytes per page: the touch stride, and the unit faults are counted
    /// in.
    fn page_size(&self) -> u64 {
        4096
    }

    /// Another target (by name) this one is also compared with, besides
    /// the first target of the run.
    fn reference(&self) -> Option<&str> {
        None
    }

    /// The counter of [`FaultTarget::counters`] that counts fault-handler
    /// entries.
    fn entry_counter(&self) -> Option<&'static str> {
        None
    }

    /// Called on the harness thread before each of this target's runs —
    /// that is, before each rep, since the reps of a run are measured one
    /// at a time, taking turns with the other targets (e.g. to switch
    /// machine-wide policies to this target's settings).
    fn begin_run(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// State for worker `index` of a run, called on that worker's own
    /// thread before the run's first gate (so not timed), once per run of
    /// one rep.
    fn thread(&self, index: usize) -> anyhow::Result<Self::Thread<'_>>;

    /// Event counters (monotonic). Read around each run and around each
    /// touch phase; their deltas are reported per row. May be empty.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// What one worker thread does to its slice.
pub trait FaultThread {
    /// Map `len` bytes of private anonymous read-write memory, untouched;
    /// returns its address.
    fn map(&mut self, len: u64) -> anyhow::Result<u64>;

    /// Write one byte to each page of `[addr, addr + len)`. `order` lists
    /// page indices (relative to `addr`) in touch order; empty means every
    /// page, ascending.
    fn touch_pages(&mut self, addr: u64, len: u64, order: &[u32]) -> anyhow::Result<()>;

    /// Unmap what `map` returned.
    fn unmap(&mut self, addr: u64, len: u64) -> anyhow::Result<()>;
}

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

/// What makes two rows comparable: the same pattern.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Shape {
    /// GiB per row, over all threads.
    pub gb: f64,
    /// Repetitions per run.
    pub reps: u32,
    /// Worker threads.
    pub threads: usize,
    /// Touch order.
    pub order: Order,
}

/// Figures of one run, or the median of a row's runs. Times are totals
/// over the run's reps (and, for CPU time, over threads).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Figures {
    /// User CPU time of the touch phases.
    #[serde(rename = "user_s", serialize_with = "secs")]
    pub user: Duration,
    /// System CPU time of the touch phases.
    #[serde(rename = "system_s", serialize_with = "secs")]
    pub system: Duration,
    /// Wall time of the touch phases.
    #[serde(rename = "wall_s", serialize_with = "secs")]
    pub wall: Duration,
    /// Wall time of the map phases (not in the rates).
    #[serde(rename = "map_wall_s", serialize_with = "secs")]
    pub map_wall: Duration,
    /// Wall time of the unmap phases (not in the rates).
    #[serde(rename = "unmap_wall_s", serialize_with = "secs")]
    pub unmap_wall: Duration,
    /// Pages first touched per second of CPU time (`flt/cpu/s`); `null`
    /// if no CPU time was measured.
    pub flt_per_cpu_s: Option<f64>,
    /// Pages first touched per wall second (`fault/wsec`).
    pub fault_per_wsec: Option<f64>,
    /// Fault-handler entries during the touch phases.
    pub fault_entries: Option<u64>,
    /// Pages first touched per fault-handler entry (8-ish with prefault
    /// order 3 on a sequential pattern, 1 without).
    pub pages_per_entry: Option<f64>,
    /// Writes to shared cache lines per fault-handler entry, over the
    /// touch phases.
    pub shared_writes_per_fault: Option<f64>,
    /// The target's counter deltas over the whole runs (map, touch,
    /// unmap).
    pub counters: BTreeMap<String, u64>,
    /// The target's counter deltas over the touch phases only.
    pub touch_counters: BTreeMap<String, u64>,
}

fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn rate(count: u64, time: Duration) -> Option<f64> {
    let secs = time.as_secs_f64();
    (secs > 0.0).then(|| count as f64 / secs)
}

/// `num / den`, `None` for a zero or missing denominator.
pub fn ratio(num: Option<f64>, den: Option<f64>) -> Option<f64> {
    match (num, den) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// Shared-cache-line writes per fault: the touch-phase delta of
/// [`SHARED_WRITES`] over the touch-phase fault-handler entries (`None`
/// without that counter or without entries).
pub fn shared_writes_per_fault(touch_counters: &BTreeMap<String, u64>, entry_counter: Option<&str>) -> Option<f64> {
    let writes = *touch_counters.get(SHARED_WRITES)?;
    let entries = *touch_counters.get(entry_counter?)?;
    ratio(Some(writes as f64), Some(entries as f64))
}

impl Figures {
    /// Recompute the derived figures — rates from the times, for `pages`
    /// pages touched; entries and per-fault figures from the touch-phase
    /// counters.
    pub fn derive(mut self, pages: u64, entry_counter: Option<&str>) -> Self {
        self.flt_per_cpu_s = rate(pages, self.user + self.system);
        self.fault_per_wsec = rate(pages, self.wall);
        self.fault_entries = entry_counter.and_then(|c| self.touch_counters.get(c).copied());
        self.pages_per_entry = ratio(Some(pages as f64), self.fault_entries.map(|e| e as f64));
        self.shared_writes_per_fault = shared_writes_per_fault(&self.touch_counters, entry_counter);
        self
    }
}

/// One target on one shape: every run, and the median.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Target name.
    pub target: String,
    /// The pattern.
    #[serde(flatten)]
    pub shape: Shape,
    /// The target's page size.
    pub page_size: u64,
    /// Slice per thread, in bytes.
    pub bytes_per_thread: u64,
    /// Pages touched per run (pages per thread × threads × reps): the
    /// numerator of both rates.
    pub pages_touched: u64,
    /// The median's `fault/wsec` as a percentage of the zero-fill limit
    /// with `zero_fill_threads` threads.
    pub zero_fill_pct: Option<f64>,
    /// The thread count of the zero-fill limit compared with: the largest
    /// measured count not above this row's.
    pub zero_fill_threads: Option<usize>,
    /// Paired: the median over runs of each run's `fault/wsec` as a
    /// percentage of the zero-fill limit measured in the same round (so
    /// drift of the host's memory bandwidth between rounds cancels).
    pub zero_fill_pct_paired: Option<f64>,
    /// The median run (see the module doc).
    pub median: Figures,
    /// Every run, in order.
    pub runs: Vec<Figures>,
}

impl Row {
    /// Set the row's share of the zero-fill limit `limit`: of the medians,
    /// and paired with the limit's measurements of `rounds` (this row's
    /// rounds, one per run).
    pub fn compare_with_zero_fill(&mut self, limit: &ZeroFillLimit, rounds: std::ops::Range<usize>) {
        self.zero_fill_threads = Some(limit.threads);
        self.zero_fill_pct = ratio(self.median.fault_per_wsec, Some(limit.pages_per_s)).map(|x| x * 100.0);
        self.zero_fill_pct_paired = paired_median(
            self.runs.iter().map(|f| f.fault_per_wsec.map(|x| x * 100.0)),
            limit.runs.get(rounds).unwrap_or_default().iter().map(|&v| Some(v)),
        );
    }
}

/// One target's median figures over another's, on one shape (> 1: the
/// first is faster).
#[derive(Clone, Debug, Serialize)]
pub struct Ratio {
    /// Numerator target.
    pub target: String,
    /// Denominator target.
    pub baseline: String,
    /// The pattern.
    #[serde(flatten)]
    pub shape: Shape,
    /// Ratio of `flt/cpu/s`.
    pub flt_per_cpu_s: Option<f64>,
    /// Ratio of `fault/wsec`.
    pub fault_per_wsec: Option<f64>,
    /// Paired ratio of `fault/wsec`: the median over rounds of run `i` of
    /// the target over run `i` of the baseline (measured back to back, so
    /// drift of the host between rounds cancels).
    pub fault_per_wsec_paired: Option<f64>,
    /// The baseline's fault-handler entries over the target's (> 1: the
    /// target entered its fault handler fewer times).
    pub entries_reduction: Option<f64>,
}

/// A target as the report names it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetInfo {
    /// Short name.
    pub name: String,
    /// What it is.
    pub description: String,
    /// The counter counting its fault-handler entries.
    pub entry_counter: Option<String>,
}

/// Where and how the benchmark ran.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    /// Sizes, GiB.
    pub gb: Vec<f64>,
    /// Thread counts.
    pub threads: Vec<usize>,
    /// Reps per run.
    pub reps: u32,
    /// Runs per row.
    pub runs: u32,
    /// Touch orders.
    pub order: Vec<Order>,
    /// Maximum prefault order of the prefault-on targets.
    pub prefault_order: u8,
    /// Whether the shared-RSS variant ran.
    pub rss_shared: bool,
    /// CPUs available to the process.
    pub host_cpus: usize,
    /// The host kernel's release, if readable.
    pub host_kernel: Option<String>,
}

/// The whole result: what `--json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct FaultsReport {
    /// Always `"faults"`.
    pub benchmark: &'static str,
    /// Options and host.
    pub config: Config,
    /// Targets, in run order (the first is every ratio's baseline).
    pub targets: Vec<TargetInfo>,
    /// The zero-fill limit, if measured.
    pub zero_fill: Option<ZeroFillReport>,
    /// Each target's rows in shape order, target after target.
    pub rows: Vec<Row>,
    /// Every target against the first, then each against its reference;
    /// one per shape.
    pub ratios: Vec<Ratio>,
}

impl FaultsReport {
    /// The row of `target` on `shape`.
    pub fn row(&self, target: &str, shape: &Shape) -> Option<&Row> {
        self.rows.iter().find(|r| r.target == target && r.shape == *shape)
    }

    /// Distinct shapes, in the order of the rows.
    pub fn shapes(&self) -> Vec<Shape> {
        let mut shapes: Vec<Shape> = Vec::new();
        for r in &self.rows {
            if !shapes.contains(&r.shape) {
                shapes.push(r.shape);
            }
        }
        shapes
    }

    /// Ratio pairs `(target, baseline)` by name, in report order.
    pub fn ratio_pairs(&self) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for r in &self.ratios {
            let p = (r.target.clone(), r.baseline.clone());
            if !pairs.contains(&p) {
                pairs.push(p);
            }
        }
        pairs
    }
}

// ---------------------------------------------------------------------------
// Statistics (pure)
// ---------------------------------------------------------------------------

/// Indices of the middle element(s) of `keys` in sorted order: the same
/// index twice for an odd count, the two middle ones for an even count.
/// Panics on an empty slice.
fn middle<K: PartialOrd>(keys: &[K]) -> (usize, usize) {
    assert!(!keys.is_empty(), "median of nothing");
    let mut idx: Vec<usize> = (0..keys.len()).collect();
    idx.sort_by(|&a, &b| keys[a].partial_cmp(&keys[b]).unwrap_or(std::cmp::Ordering::Equal));
    let n = idx.len();
    (idx[(n - 1) / 2], idx[n / 2])
}

/// Median; the mean of the two middle values for an even count.
fn median_duration(values: &[Duration]) -> Duration {
    let (a, b) = middle(values);
    (values[a] + values[b]) / 2
}

fn median_u64(values: &[u64]) -> u64 {
    let (a, b) = middle(values);
    values[a] / 2 + values[b] / 2 + (values[a] % 2 + values[b] % 2) / 2
}

/// Median of floats; the mean of the two middle values for an even count.
/// Panics on an empty slice.
pub fn median_f64(values: &[f64]) -> f64 {
    let (a, b) = middle(values);
    (values[a] + values[b]) / 2.0
}

fn median_counters(maps: &[&BTreeMap<String, u64>]) -> BTreeMap<String, u64> {
    let mut names: Vec<&String> = maps.iter().flat_map(|m| m.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let values: Vec<u64> = maps.iter().map(|m| m.get(name).copied().unwrap_or(0)).collect();
            (name.clone(), median_u64(&values))
        })
        .collect()
}

/// The median run of a row, as described in the module doc: median wall
/// (and map/unmap wall), user/system of the median-CPU run(s), counters
/// each by its own median, derived figures from those. Panics on no runs.
pub fn median_figures(runs: &[Figures], pages: u64, entry_counter: Option<&str>) -> Figures {
    let pick = |f: fn(&Figures) -> Duration| median_duration(&runs.iter().map(f).collect::<Vec<_>>());
    let cpu: Vec<Duration> = runs.iter().map(|r| r.user + r.system).collect();
    let (a, b) = middle(&cpu);
    Figures {
        user: (runs[a].user + runs[b].user) / 2,
        system: (runs[a].system + runs[b].system) / 2,
        wall: pick(|r| r.wall),
        map_wall: pick(|r| r.map_wall),
        unmap_wall: pick(|r| r.unmap_wall),
        counters: median_counters(&runs.iter().map(|r| &r.counters).collect::<Vec<_>>()),
        touch_counters: median_counters(&runs.iter().map(|r| &r.touch_counters).collect::<Vec<_>>()),
        ..Figures::default()
    }
    .derive(pages, entry_counter)
}

/// Which ratios to report, as `(target, baseline)` indices into `targets`
/// (each `(name, reference)`): every target against the first, then every
/// target against its reference (unless that is itself or the first, or
/// names no target).
pub fn ratio_pairs(targets: &[(&str, Option<&str>)]) -> Vec<(usize, usize)> {
    let mut pairs: Vec<(usize, usize)> = (1..targets.len()).map(|i| (i, 0)).collect();
    for (i, (_, reference)) in targets.iter().enumerate() {
        let Some(reference) = reference else { continue };
        if let Some(j) = targets.iter().position(|(n, _)| n == reference) {
            if j != i && j != 0 && !pairs.contains(&(i, j)) {
                pairs.push((i, j));
            }
        }
    }
    pairs
}

/// `target / baseline` on each shape both have a row for, for each pair
/// of target names, pair after pair.
pub fn ratios(rows: &[Row], pairs: &[(&str, &str)]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for &(target, baseline) in pairs {
        for a in rows.iter().filter(|r| r.target == target) {
            let Some(b) = rows.iter().find(|b| b.target == baseline && b.shape == a.shape) else { continue };
            out.push(Ratio {
                target: a.target.clone(),
                baseline: b.target.clone(),
                shape: a.shape,
                flt_per_cpu_s: ratio(a.median.flt_per_cpu_s, b.median.flt_per_cpu_s),
                fault_per_wsec: ratio(a.median.fault_per_wsec, b.median.fault_per_wsec),
                fault_per_wsec_paired: paired_median(
                    a.runs.iter().map(|r| r.fault_per_wsec),
                    b.runs.iter().map(|r| r.fault_per_wsec),
                ),
                entries_reduction: ratio(
                    b.median.fault_entries.map(|e| e as f64),
                    a.median.fault_entries.map(|e| e as f64),
                ),
            });
        }
    }
    out
}

/// The median of `a[i] / b[i]` over the pairs where both are known and
/// `b[i] > 0` (`None` if there is no such pair).
pub fn paired_median(a: impl Iterator<Item = Option<f64>>, b: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let ratios: Vec<f64> = a.zip(b).filter_map(|(a, b)| ratio(a, b)).collect();
    (!ratios.is_empty()).then(|| median_f64(&ratios))
}

/// What one worker measured in one rep.
#[derive(Clone, Copy, Debug)]
pub struct RepTimes {
    /// Map phase: from the gate to this thread's map returning.
    pub map: (Instant, Instant),
    /// Touch phase: from the gate to this thread's last store.
    pub touch: (Instant, Instant),
    /// This thread's CPU usage over its touch phase.
    pub usage: Rusage,
    /// Unmap phase.
    pub unmap: (Instant, Instant),
}

/// Wall time of one phase over all threads: earliest start to latest end.
fn span(phases: impl Iterator<Item = (Instant, Instant)>) -> Duration {
    let mut start: Option<Instant> = None;
    let mut end: Option<Instant> = None;
    for (s, e) in phases {
        start = Some(start.map_or(s, |x| x.min(s)));
        end = Some(end.map_or(e, |x| x.max(e)));
    }
    match (start, end) {
        (Some(s), Some(e)) => e.saturating_duration_since(s),
        _ => Duration::ZERO,
    }
}

/// Counter deltas `after - before`, by name (a counter absent before
/// counts from zero).
fn counter_deltas(before: &[(&'static str, u64)], after: &[(&'static str, u64)]) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|&(name, a)| {
            let b = before.iter().find(|(n, _)| *n == name).map_or(0, |&(_, v)| v);
            (name.to_string(), a.saturating_sub(b))
        })
        .collect()
}

/// Add `delta` into `sum`, name by name.
fn add_counters(sum: &mut BTreeMap<String, u64>, delta: BTreeMap<String, u64>) {
    for (name, v) in delta {
        *sum.entry(name).or_insert(0) += v;
    }
}

/// One run's figures from every worker's reps (`per_thread[t][rep]`),
/// with the whole-run and touch-phase counter deltas.
pub fn aggregate_run(
    per_thread: &[Vec<RepTimes>],
    pages: u64,
    counters: BTreeMap<String, u64>,
    touch_counters: BTreeMap<String, u64>,
    entry_counter: Option<&str>,
) -> Figures {
    let reps = per_thread.iter().map(Vec::len).max().unwrap_or(0);
    let mut f = Figures { counters, touch_counters, ..Figures::default() };
    for rep in 0..reps {
        let this = || per_thread.iter().filter_map(move |t| t.get(rep));
        f.map_wall += span(this().map(|r| r.map));
        f.wall += span(this().map(|r| r.touch));
        f.unmap_wall += span(this().map(|r| r.unmap));
        for r in this() {
            f.user += r.usage.user;
            f.system += r.usage.system;
        }
    }
    f.derive(pages, entry_counter)
}

/// One run's figures from its reps, each measured as a run of one rep:
/// times and counter deltas add up, and the rates are derived again for
/// all `pages` (every rep's pages).
pub fn merge_reps(reps: Vec<Figures>, pages: u64, entry_counter: Option<&str>) -> Figures {
    let mut f = Figures::default();
    for r in reps {
        f.user += r.user;
        f.system += r.system;
        f.wall += r.wall;
        f.map_wall += r.map_wall;
        f.unmap_wall += r.unmap_wall;
        add_counters(&mut f.counters, r.counters);
        add_counters(&mut f.touch_counters, r.touch_counters);
    }
    f.derive(pages, entry_counter)
}

/// A fixed pseudo-random permutation of `0..n` (Fisher–Yates over
/// splitmix64), so every target sees the same order.
pub fn shuffled(n: u32, seed: u64) -> Vec<u32> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut v: Vec<u32> = (0..n).collect();
    for i in (1..v.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// A shape as one target runs it.
#[derive(Clone, Copy, Debug)]
struct Plan {
    shape: Shape,
    page_size: u64,
    bytes_per_thread: u64,
    pages_per_thread: u32,
}

impl Plan {
    fn new(shape: Shape, page_size: u64) -> anyhow::Result<Plan> {
        if page_size == 0 {
            bail!("target page size is 0");
        }
        let total = (shape.gb * GIB).round() as u64;
        let pages = total / shape.threads as u64 / page_size;
        if pages == 0 {
            bail!("{} GiB over {} threads is less than a page ({page_size} B) per thread", shape.gb, shape.threads);
        }
        let pages_per_thread =
            u32::try_from(pages).map_err(|_| anyhow!("{pages} pages per thread: too many to order"))?;
        Ok(Plan { shape, page_size, bytes_per_thread: pages * page_size, pages_per_thread })
    }

    /// The same plan with one rep (a run's reps are measured one at a
    /// time, taking turns with the other targets).
    fn one_rep(&self) -> Plan {
        Plan { shape: Shape { reps: 1, ..self.shape }, ..*self }
    }

    fn pages_touched(&self) -> u64 {
        u64::from(self.pages_per_thread) * self.shape.threads as u64 * u64::from(self.shape.reps)
    }

    /// Touch order of worker `index` in run `run` (empty: sequential).
    fn order(&self, index: usize, run: u32) -> Vec<u32> {
        match self.shape.order {
            Order::Seq => Vec::new(),
            Order::Random => shuffled(self.pages_per_thread, (index as u64) << 32 | u64::from(run)),
        }
    }
}

/// A reusable barrier that can be abandoned: once a worker fails, every
/// wait (current and future) returns `Err`, so no worker is left blocked.
struct Gate {
    size: usize,
    state: Mutex<GateState>,
    cv: Condvar,
}

struct GateState {
    arrived: usize,
    generation: u64,
    aborted: bool,
}

struct Aborted;

impl Gate {
    fn new(size: usize) -> Gate {
        Gate { size, state: Mutex::new(GateState { arrived: 0, generation: 0, aborted: false }), cv: Condvar::new() }
    }

    fn wait(&self) -> Result<(), Aborted> {
        self.wait_then(|| ())
    }

    /// Wait for every worker; the last to arrive runs `leader` before any
    /// is let through (so `leader` sees every worker stopped at the gate).
    fn wait_then(&self, leader: impl FnOnce()) -> Result<(), Aborted> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.aborted {
            return Err(Aborted);
        }
        s.arrived += 1;
        if s.arrived == self.size {
            leader();
            s.arrived = 0;
            s.generation += 1;
            self.cv.notify_all();
            return Ok(());
        }
        let generation = s.generation;
        while s.generation == generation && !s.aborted {
            s = self.cv.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        if s.generation == generation {
            Err(Aborted)
        } else {
            Ok(())
        }
    }

    fn abort(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).aborted = true;
        self.cv.notify_all();
    }
}

/// Touch-phase counter deltas of one run, summed over its reps; written
/// only by the gate leader.
#[derive(Default)]
struct TouchCounters {
    before: Mutex<Vec<(&'static str, u64)>>,
    sum: Mutex<BTreeMap<String, u64>>,
}

impl TouchCounters {
    fn begin(&self, now: Vec<(&'static str, u64)>) {
        *self.before.lock().unwrap_or_else(PoisonError::into_inner) = now;
    }

    fn end(&self, now: Vec<(&'static str, u64)>) {
        let before = std::mem::take(&mut *self.before.lock().unwrap_or_else(PoisonError::into_inner));
        add_counters(&mut self.sum.lock().unwrap_or_else(PoisonError::into_inner), counter_deltas(&before, &now));
    }

    fn into_sum(self) -> BTreeMap<String, u64> {
        self.sum.into_inner().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why a worker stopped early.
enum Stop {
    /// Another worker failed first.
    Aborted,
    /// This one failed.
    Failed(anyhow::Error),
}

impl From<Aborted> for Stop {
    fn from(_: Aborted) -> Stop {
        Stop::Aborted
    }
}

impl From<anyhow::Error> for Stop {
    fn from(e: anyhow::Error) -> Stop {
        Stop::Failed(e)
    }
}

struct RunCtx<'r, T> {
    target: &'r T,
    plan: &'r Plan,
    run: u32,
    gate: &'r Gate,
    touch_counters: &'r TouchCounters,
    progress: &'r ProgressBar,
}

fn worker<T: FaultTarget>(cx: &RunCtx<'_, T>, index: usize) -> Result<Vec<RepTimes>, Stop> {
    let (target, plan, gate) = (cx.target, cx.plan, cx.gate);
    let mut thread = target.thread(index).with_context(|| format!("{}: setting up thread {index}", target.name()))?;
    let order = plan.order(index, cx.run);
    let len = plan.bytes_per_thread;
    let mut reps = Vec::with_capacity(plan.shape.reps as usize);
    for _ in 0..plan.shape.reps {
        gate.wait()?;
        let map_start = Instant::now();
        let addr = thread.map(len)?;
        let map_end = Instant::now();
        let touched = (|| -> Result<_, Stop> {
            gate.wait_then(|| cx.touch_counters.begin(target.counters()))?;
            let start = Instant::now();
            let before = thread_rusage().context("getrusage")?;
            thread.touch_pages(addr, len, &order)?;
            let after = thread_rusage().context("getrusage")?;
            let end = Instant::now();
            gate.wait_then(|| cx.touch_counters.end(target.counters()))?;
            Ok(((start, end), after.since(&before)))
        })();
        // Unmap even when the touch failed, so nothing stays mapped.
        let unmap_start = Instant::now();
        let unmapped = thread.unmap(addr, len);
        let unmap_end = Instant::now();
        let (touch, usage) = touched?;
        unmapped?;
        reps.push(RepTimes { map: (map_start, map_end), touch, usage, unmap: (unmap_start, unmap_end) });
        if index == 0 {
            cx.progress.inc(1);
        }
    }
    Ok(reps)
}

/// One run of `plan` on `target`: N workers, `reps` reps.
fn measure_run<T: FaultTarget>(target: &T, plan: &Plan, run: u32, progress: &ProgressBar) -> anyhow::Result<Figures> {
    let n = plan.shape.threads;
    let gate = Gate::new(n);
    let touch_counters = TouchCounters::default();
    target.begin_run().with_context(|| format!("{}: preparing a run", target.name()))?;
    let before = target.counters();
    let cx = RunCtx { target, plan, run, gate: &gate, touch_counters: &touch_counters, progress };
    let outcomes: Vec<Result<Vec<RepTimes>, Stop>> = thread::scope(|s| {
        let mut handles = Vec::with_capacity(n);
        for index in 0..n {
            let cx = &cx;
            let spawned = thread::Builder::new().name(format!("faults-{index}")).spawn_scoped(s, move || {
                let out = catch_unwind(AssertUnwindSafe(|| worker(cx, index)))
                    .unwrap_or_else(|_| Err(Stop::Failed(anyhow!("{}: thread {index} panicked", cx.target.name()))));
                if out.is_err() {
                    cx.gate.abort();
                }
                out
            });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    gate.abort();
                    handles.clear(); // joined by the scope
                    return vec![Err(Stop::Failed(anyhow::Error::new(e).context("spawning a worker thread")))];
                }
            }
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(Stop::Failed(anyhow!("worker thread panicked")))))
            .collect()
    });
    let after = target.counters();
    let mut per_thread = Vec::with_capacity(n);
    let mut aborted = false;
    for outcome in outcomes {
        match outcome {
            Ok(reps) => per_thread.push(reps),
            Err(Stop::Failed(e)) => return Err(e),
            Err(Stop::Aborted) => aborted = true,
        }
    }
    if aborted {
        bail!("{}: run aborted", target.name());
    }
    Ok(aggregate_run(
        &per_thread,
        plan.pages_touched(),
        counter_deltas(&before, &after),
        touch_counters.into_sum(),
        target.entry_counter(),
    ))
}

fn progress_bar(args: &FaultsArgs, total: u64) -> ProgressBar {
    if args.no_progress || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg:40} [{bar:30}] {pos}/{len} reps, eta {eta}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn row<T: FaultTarget>(target: &T, plan: &Plan, runs: Vec<Figures>) -> Row {
    Row {
        target: target.name().to_string(),
        shape: plan.shape,
        page_size: plan.page_size,
        bytes_per_thread: plan.bytes_per_thread,
        pages_touched: plan.pages_touched(),
        zero_fill_pct: None,
        zero_fill_threads: None,
        zero_fill_pct_paired: None,
        median: median_figures(&runs, plan.pages_touched(), target.entry_counter()),
        runs,
    }
}

/// The order in which turn `turn` of a round (one rep of every target)
/// measures `n` targets: as given at even turns, reversed at odd ones.
pub fn round_order(n: usize, turn: u32) -> Vec<usize> {
    if turn.is_multiple_of(2) {
        (0..n).collect()
    } else {
        (0..n).rev().collect()
    }
}

/// Measure every shape of `args` on every target (runs alternating between
/// targets, each round's reps taking turns in [`round_order`], with the
/// zero-fill limit measured at both ends of each round), print the result to `out` (a table, or JSON with
/// `--json` and the table on stderr), write the SVG if asked; also returns
/// the report.
///
/// The first target is every ratio's baseline (the host kernel).
pub fn run_faults<T: FaultTarget>(
    args: &FaultsArgs,
    targets: &[T],
    out: &mut impl Write,
) -> anyhow::Result<FaultsReport> {
    args.validate()?;
    if targets.is_empty() {
        bail!("no targets");
    }
    for (i, t) in targets.iter().enumerate() {
        if targets[..i].iter().any(|u| u.name() == t.name()) {
            bail!("two targets named {}", t.name());
        }
    }
    let shapes = args.shapes();
    let zf_threads = args.zero_fill_threads();
    let mut zero_fill = if zf_threads.is_empty() {
        None
    } else {
        let max = zf_threads.iter().copied().max().unwrap_or(1);
        Some(ZeroFill::new(max, args.zero_fill_mib << 20).context("setting up the zero-fill buffers")?)
    };
    let mut zf_runs: Vec<(usize, Vec<f64>)> = zf_threads.iter().map(|&t| (t, Vec::new())).collect();
    let total = shapes.len() as u64 * targets.len() as u64 * u64::from(args.runs) * u64::from(args.reps);
    let progress = progress_bar(args, total);
    let mut rows: Vec<Vec<Row>> = targets.iter().map(|_| Vec::new()).collect();
    for &shape in &shapes {
        let plans: Vec<Plan> = targets.iter().map(|t| Plan::new(shape, t.page_size())).collect::<Result<_, _>>()?;
        let mut runs: Vec<Vec<Figures>> = targets.iter().map(|_| Vec::new()).collect();
        for run in 0..args.runs {
            let label = format!(
                "{} {} GiB, {} thr, run {}/{}",
                shape.order.name(),
                shape.gb,
                shape.threads,
                run + 1,
                args.runs
            );
            let mut before = Vec::new();
            if let Some(zf) = zero_fill.as_mut() {
                progress.set_message(format!("zero-fill {label}"));
                for (threads, _) in &zf_runs {
                    before.push(zf.measure(*threads).context("zero-fill measurement")?);
                }
            }
            let mut reps: Vec<Vec<Figures>> = targets.iter().map(|_| Vec::new()).collect();
            for rep in 0..shape.reps {
                for i in round_order(targets.len(), run * shape.reps + rep) {
                    let target = &targets[i];
                    progress.set_message(format!("{} {label}", target.name()));
                    reps[i].push(measure_run(target, &plans[i].one_rep(), run, &progress)?);
                }
            }
            for (i, reps) in reps.into_iter().enumerate() {
                runs[i].push(merge_reps(reps, plans[i].pages_touched(), targets[i].entry_counter()));
            }
            if let Some(zf) = zero_fill.as_mut() {
                progress.set_message(format!("zero-fill {label}"));
                for ((threads, values), before) in zf_runs.iter_mut().zip(before) {
                    let after = zf.measure(*threads).context("zero-fill measurement")?;
                    values.push(before.max(after));
                }
            }
        }
        for (i, (target, runs)) in targets.iter().zip(runs).enumerate() {
            rows[i].push(row(target, &plans[i], runs));
        }
    }
    progress.finish_and_clear();
    let zf_huge = zero_fill.as_ref().and_then(ZeroFill::huge_page_share);
    drop(zero_fill);
    let zero_fill = (!zf_runs.is_empty()).then(|| zerofill::report(args.zero_fill_mib, zf_huge, zf_runs));
    let mut rows: Vec<Row> = rows.into_iter().flatten().collect();
    if let Some(zf) = &zero_fill {
        let runs = args.runs as usize;
        for r in &mut rows {
            // Shape k was measured in rounds k·runs .. (k+1)·runs.
            let k = shapes.iter().position(|s| *s == r.shape).unwrap_or(0);
            if let Some(limit) = zf.limit_for(r.shape.threads) {
                r.compare_with_zero_fill(limit, k * runs..(k + 1) * runs);
            }
        }
    }
    let names: Vec<(&str, Option<&str>)> = targets.iter().map(|t| (t.name(), t.reference())).collect();
    let pairs: Vec<(&str, &str)> = ratio_pairs(&names).into_iter().map(|(a, b)| (names[a].0, names[b].0)).collect();
    let report = FaultsReport {
        benchmark: "faults",
        config: Config {
            gb: args.gb.clone(),
            threads: args.threads.clone(),
            reps: args.reps,
            runs: args.runs,
            order: args.order.clone(),
            prefault_order: args.prefault_order,
            rss_shared: args.rss_shared,
            host_cpus: thread::available_parallelism().map_or(1, |n| n.get()),
            host_kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string()),
        },
        targets: targets
            .iter()
            .map(|t| TargetInfo {
                name: t.name().to_string(),
                description: t.description(),
                entry_counter: t.entry_counter().map(str::to_string),
            })
            .collect(),
        zero_fill,
        ratios: ratios(&rows, &pairs),
        rows,
    };
    let table = super::table::render_table(&report);
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
        eprint!("{table}");
    } else {
        out.write_all(table.as_bytes())?;
    }
    out.flush()?;
    if let Some(path) = &args.svg {
        super::plot::write_svg(&report, path).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    pub(crate) fn fig(user: u64, system: u64, wall: u64) -> Figures {
        Figures { user: ms(user), system: ms(system), wall: ms(wall), ..Figures::default() }
    }

    pub(crate) fn shape(threads: usize) -> Shape {
        Shape { gb: 0.5, reps: 3, threads, order: Order::Seq }
    }

    pub(crate) fn row_of(target: &str, shape: Shape, median: Figures) -> Row {
        Row {
            target: target.into(),
            shape,
            page_size: 4096,
            bytes_per_thread: 1 << 20,
            pages_touched: 1000,
            zero_fill_pct: None,
            zero_fill_threads: None,
            zero_fill_pct_paired: None,
            runs: vec![median.clone()],
            median,
        }
    }

    fn counters(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|&(n, v)| (n.to_string(), v)).collect()
    }

    #[test]
    fn paired_median_pairs_runs_by_round() {
        let s = |v: &[f64]| v.iter().map(|&x| Some(x)).collect::<Vec<_>>();
        // Ratios 1, 0.5, 3: median 1 (the ratio of the medians would be 20/30).
        assert_eq!(paired_median(s(&[10.0, 20.0, 90.0]).into_iter(), s(&[10.0, 40.0, 30.0]).into_iter()), Some(1.0));
        // Unknown values and zero denominators drop their pair.
        let a = vec![Some(4.0), None, Some(9.0), Some(1.0)];
        let b = vec![Some(2.0), Some(1.0), Some(3.0), Some(0.0)];
        assert_eq!(paired_median(a.into_iter(), b.into_iter()), Some(2.5));
        assert_eq!(paired_median(s(&[1.0]).into_iter(), s(&[0.0]).into_iter()), None);
        assert_eq!(paired_median(std::iter::empty(), std::iter::empty()), None);
    }

    #[test]
    fn median_odd_and_even() {
        assert_eq!(median_duration(&[ms(5), ms(1), ms(3)]), ms(3));
        assert_eq!(median_duration(&[ms(4), ms(1), ms(3), ms(10)]), ms(3) + ms(1) / 2);
        assert_eq!(median_duration(&[ms(7)]), ms(7));
        assert_eq!(median_u64(&[3, 1, 2]), 2);
        assert_eq!(median_u64(&[1, 2]), 1);
        assert_eq!(median_u64(&[3, 5]), 4);
        assert_eq!(median_u64(&[u64::MAX, u64::MAX]), u64::MAX);
        assert_eq!(median_f64(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median_f64(&[4.0, 1.0]), 2.5);
    }

    #[test]
    fn median_row_adds_up() {
        // CPU times 30, 10, 20 ms: the median-CPU run is the third one.
        let runs = vec![fig(10, 20, 50), fig(5, 5, 40), fig(2, 18, 60)];
        let m = median_figures(&runs, 1000, None);
        assert_eq!((m.user, m.system), (ms(2), ms(18)));
        assert_eq!(m.wall, ms(50));
        // Rates come from the median times...
        assert_eq!(m.flt_per_cpu_s, Some(1000.0 / 0.020));
        assert_eq!(m.fault_per_wsec, Some(1000.0 / 0.050));
        // ...and equal the median of the per-run rates for an odd count.
        let mut per_run: Vec<f64> = runs.iter().map(|r| 1000.0 / r.wall.as_secs_f64()).collect();
        per_run.sort_by(f64::total_cmp);
        assert_eq!(m.fault_per_wsec, Some(per_run[1]));
        assert_eq!((m.fault_entries, m.pages_per_entry, m.shared_writes_per_fault), (None, None, None));
    }

    #[test]
    fn median_row_even_runs_averages_middle_pair() {
        let runs = vec![fig(1, 9, 10), fig(3, 27, 30), fig(2, 18, 20), fig(4, 36, 40)];
        let m = median_figures(&runs, 100, None);
        assert_eq!((m.user, m.system, m.wall), (ms(2) + ms(1) / 2, ms(22) + ms(1) / 2, ms(25)));
    }

    #[test]
    fn median_counters_per_name_and_phase() {
        let mut runs = vec![fig(1, 1, 1), fig(1, 1, 1), fig(1, 1, 1)];
        for (r, v) in runs.iter_mut().zip([7, 3, 5]) {
            r.counters.insert("entries".into(), v);
            r.touch_counters.insert("entries".into(), v - 1);
        }
        runs[2].counters.insert("prefaulted".into(), 9);
        let m = median_figures(&runs, 8, Some("entries"));
        assert_eq!(m.counters["entries"], 5);
        assert_eq!(m.counters["prefaulted"], 0, "missing counts as 0");
        assert_eq!(m.touch_counters["entries"], 4);
        assert_eq!(m.fault_entries, Some(4), "entries come from the touch phase");
        assert_eq!(m.pages_per_entry, Some(2.0));
    }

    #[test]
    fn shared_writes_per_fault_is_touch_delta_over_entries() {
        // 8 faults, 2 zone-lock batches and no other shared write.
        let touch = counters(&[("pgfault", 8), (SHARED_WRITES, 2)]);
        assert_eq!(shared_writes_per_fault(&touch, Some("pgfault")), Some(0.25));
        assert_eq!(shared_writes_per_fault(&touch, None), None);
        assert_eq!(shared_writes_per_fault(&counters(&[("pgfault", 8)]), Some("pgfault")), None);
        assert_eq!(shared_writes_per_fault(&counters(&[("pgfault", 0), (SHARED_WRITES, 3)]), Some("pgfault")), None);
        // Through a run: the whole-run counters (which include unmap's
        // writes) do not enter the figure.
        let per_thread = vec![vec![RepTimes {
            map: (Instant::now(), Instant::now()),
            touch: (Instant::now(), Instant::now() + ms(10)),
            usage: Rusage::default(),
            unmap: (Instant::now(), Instant::now()),
        }]];
        let whole = counters(&[("pgfault", 8), (SHARED_WRITES, 100)]);
        let f = aggregate_run(&per_thread, 64, whole, touch, Some("pgfault"));
        assert_eq!(f.shared_writes_per_fault, Some(0.25));
        assert_eq!(f.fault_entries, Some(8));
        assert_eq!(f.pages_per_entry, Some(8.0));
    }

    #[test]
    fn zero_time_has_no_rate() {
        let m = median_figures(&[Figures::default()], 10, None);
        assert_eq!((m.flt_per_cpu_s, m.fault_per_wsec), (None, None));
    }

    #[test]
    fn ratio_pairs_baseline_then_references() {
        let t = [("kernel", None), ("off", None), ("on", Some("off")), ("shared", Some("on")), ("odd", Some("kernel"))];
        assert_eq!(ratio_pairs(&t), [(1, 0), (2, 0), (3, 0), (4, 0), (2, 1), (3, 2)]);
        assert_eq!(ratio_pairs(&[("kernel", None)]), []);
        assert_eq!(ratio_pairs(&[("k", None), ("a", Some("a")), ("b", Some("nobody"))]), [(1, 0), (2, 0)]);
    }

    #[test]
    fn ratios_with_several_targets() {
        let entries = |f: Figures, e: u64| {
            let mut f = f;
            f.touch_counters.insert("e".into(), e);
            f.derive(1000, Some("e"))
        };
        let rows = vec![
            row_of("kernel", shape(1), entries(fig(0, 40, 40), 1000)),
            row_of("kernel", shape(2), entries(fig(0, 20, 10), 1000)),
            row_of("off", shape(1), entries(fig(0, 10, 10), 1000)),
            row_of("off", shape(2), entries(fig(0, 10, 20), 1000)),
            row_of("on", shape(2), entries(fig(0, 5, 5), 125)),
            row_of("on", shape(1), entries(fig(0, 8, 8), 125)),
        ];
        let r = ratios(&rows, &[("off", "kernel"), ("on", "kernel"), ("on", "off")]);
        let get = |t: &str, b: &str, th: usize| {
            r.iter().find(|x| x.target == t && x.baseline == b && x.shape.threads == th).unwrap().clone()
        };
        assert_eq!(r.len(), 6);
        assert_eq!(get("off", "kernel", 1).flt_per_cpu_s, Some(4.0));
        assert_eq!(get("off", "kernel", 1).fault_per_wsec, Some(4.0));
        assert_eq!(get("off", "kernel", 2).fault_per_wsec, Some(0.5));
        assert_eq!(get("off", "kernel", 2).entries_reduction, Some(1.0));
        assert_eq!(get("on", "kernel", 1).fault_per_wsec, Some(5.0));
        assert_eq!(get("on", "off", 2).fault_per_wsec, Some(4.0));
        assert_eq!(get("on", "off", 1).entries_reduction, Some(8.0));
        // Pairs stay in the order asked for, shapes in the target's order.
        assert_eq!((r[0].target.as_str(), r[0].baseline.as_str(), r[0].shape.threads), ("off", "kernel", 1));
        assert_eq!((r[4].target.as_str(), r[4].shape.threads), ("on", 2));
        // A pair with no common shape gives nothing.
        assert!(ratios(&rows, &[("on", "nobody")]).is_empty());
        assert_eq!(ratio(Some(1.0), None), None);
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
    }

    #[test]
    fn aggregate_sums_reps_and_spans_threads() {
        let t0 = Instant::now();
        let at = |a: u64, b: u64| (t0 + ms(a), t0 + ms(b));
        let usage = |u: u64, s: u64| Rusage { user: ms(u), system: ms(s), ..Rusage::default() };
        let rep = |touch, u, s| RepTimes { map: at(0, 1), touch, usage: usage(u, s), unmap: at(100, 103) };
        // Two threads, two reps; rep walls are 10..40 and 5..25 ms.
        let per_thread = vec![
            vec![rep(at(10, 30), 1, 19), rep(at(5, 25), 0, 20)],
            vec![rep(at(12, 40), 2, 26), rep(at(6, 20), 1, 13)],
        ];
        let f = aggregate_run(
            &per_thread,
            4000,
            counters(&[("minflt", 4010)]),
            counters(&[("minflt", 4000)]),
            Some("minflt"),
        );
        assert_eq!(f.wall, ms(30) + ms(20));
        assert_eq!(f.user, ms(4));
        assert_eq!(f.system, ms(78));
        assert_eq!(f.map_wall, ms(2));
        assert_eq!(f.unmap_wall, ms(6));
        assert_eq!(f.fault_per_wsec, Some(4000.0 / 0.050));
        assert_eq!(f.flt_per_cpu_s, Some(4000.0 / 0.082));
        assert_eq!(f.counters["minflt"], 4010);
        assert_eq!(f.fault_entries, Some(4000));
        assert_eq!(f.shared_writes_per_fault, None);
    }

    /// Reps measured one at a time add up to the run they make.
    #[test]
    fn merged_reps_add_up_and_derive_the_rates_for_all_pages() {
        let rep = |wall, user, system, entries, writes| {
            Figures {
                user: ms(user),
                system: ms(system),
                wall: ms(wall),
                map_wall: ms(1),
                unmap_wall: ms(3),
                counters: counters(&[("minflt", entries + 5)]),
                touch_counters: counters(&[("minflt", entries), (SHARED_WRITES, writes)]),
                ..Figures::default()
            }
            .derive(2000, Some("minflt"))
        };
        let f = merge_reps(vec![rep(20, 2, 18, 250, 4), rep(30, 1, 19, 250, 0)], 4000, Some("minflt"));
        assert_eq!((f.wall, f.user, f.system, f.map_wall, f.unmap_wall), (ms(50), ms(3), ms(37), ms(2), ms(6)));
        assert_eq!(f.fault_per_wsec, Some(4000.0 / 0.050));
        assert_eq!(f.flt_per_cpu_s, Some(4000.0 / 0.040));
        assert_eq!((f.counters["minflt"], f.fault_entries), (510, Some(500)));
        assert_eq!(f.pages_per_entry, Some(8.0));
        assert_eq!(f.shared_writes_per_fault, Some(4.0 / 500.0));
    }

    #[test]
    fn counter_deltas_by_name_and_sums() {
        let d = counter_deltas(&[("a", 5), ("b", 9)], &[("b", 12), ("a", 7), ("c", 1)]);
        assert_eq!(
            d.clone().into_iter().collect::<Vec<_>>(),
            [("a".to_string(), 2), ("b".to_string(), 3), ("c".to_string(), 1)]
        );
        let mut sum = counters(&[("a", 1)]);
        add_counters(&mut sum, d);
        assert_eq!(sum, counters(&[("a", 3), ("b", 3), ("c", 1)]));
    }

    #[test]
    fn plan_splits_into_whole_pages() {
        let p = Plan::new(Shape { gb: 0.25, reps: 3, threads: 3, order: Order::Seq }, 4096).unwrap();
        assert_eq!(p.pages_per_thread, 65536 / 3);
        assert_eq!(p.bytes_per_thread, 21845 * 4096);
        assert_eq!(p.pages_touched(), 21845 * 3 * 3);
        assert!(p.order(0, 0).is_empty());
        let tiny = Shape { gb: 1e-9, ..shape(1) };
        assert!(Plan::new(tiny, 4096).is_err());
    }

    #[test]
    fn shuffle_is_a_fixed_permutation() {
        let a = shuffled(1000, 42);
        assert_eq!(a, shuffled(1000, 42));
        assert_ne!(a, shuffled(1000, 43));
        assert_ne!(a, (0..1000).collect::<Vec<_>>());
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert!(shuffled(0, 1).is_empty());
    }

    /// The machine for a row of 4 GiB has 5.25 GiB of movable memory:
    /// 7 GiB in all at 75 % movable, where sizing the whole machine by the
    /// data left the movable zone smaller than the row.
    #[test]
    fn the_machine_fits_the_largest_row_in_its_movable_zone() {
        let args = FaultsArgs { gb: vec![1.0, 4.0], ..FaultsArgs::default() };
        let bytes = args.machine_bytes(75);
        assert_eq!(bytes % (2 << 20), 0);
        assert!(bytes * 75 / 100 >= (4u64 << 30) * 5 / 4, "{bytes}");
        assert_eq!(bytes, 7 << 30);
        assert_eq!(args.machine_bytes(100), (5u64 << 30) + (256 << 20));
    }

    #[test]
    fn args_validate() {
        assert!(FaultsArgs::default().validate().is_ok());
        let bad = |f: fn(&mut FaultsArgs)| {
            let mut a = FaultsArgs::default();
            f(&mut a);
            a.validate().is_err()
        };
        assert!(bad(|a| a.threads = vec![1, 0]));
        assert!(bad(|a| a.gb = vec![-1.0]));
        assert!(bad(|a| a.gb = vec![f64::NAN]));
        assert!(bad(|a| a.runs = 0));
        assert!(bad(|a| a.reps = 0));
        assert!(bad(|a| a.threads.clear()));
        assert!(bad(|a| a.order.clear()));
        assert!(bad(|a| a.zero_fill_threads = vec![0]));
        assert!(bad(|a| a.prefault_order = oxmm::system::PREFAULT_MAX_ORDER + 1));
    }

    #[test]
    fn args_parse_from_command_line() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: FaultsArgs,
        }
        let cli = Cli::try_parse_from([
            "x",
            "--gb",
            "0.25,4",
            "--threads",
            "1,2,4",
            "--order",
            "seq,random",
            "--json",
            "--svg",
            "/tmp/x.svg",
            "--rss-shared",
            "--prefault-order",
            "2",
        ])
        .unwrap();
        assert_eq!(cli.args.gb, [0.25, 4.0]);
        assert_eq!(cli.args.threads, [1, 2, 4]);
        assert_eq!((cli.args.reps, cli.args.runs), (3, 5));
        assert_eq!(cli.args.order, [Order::Seq, Order::Random]);
        assert!(cli.args.json && !cli.args.no_progress && cli.args.rss_shared);
        assert_eq!(cli.args.prefault_order, 2);
        assert_eq!(cli.args.svg.as_deref(), Some(std::path::Path::new("/tmp/x.svg")));
        let shapes = cli.args.shapes();
        assert_eq!(shapes.len(), 12);
        assert_eq!((shapes[0].order, shapes[0].gb, shapes[0].threads), (Order::Seq, 0.25, 1));
        assert_eq!((shapes[11].order, shapes[11].gb, shapes[11].threads), (Order::Random, 4.0, 4));
        // The defaults: 1 GiB, 1 thread, seq, 5 runs, zero-fill on 1 and 2.
        let d = Cli::try_parse_from(["x"]).unwrap().args;
        assert_eq!((d.gb, d.threads, d.order, d.runs), (vec![1.0], vec![1], vec![Order::Seq], 5));
        assert_eq!((d.prefault_order, d.zero_fill_mib, d.zero_fill_threads), (3, 1024, vec![1, 2]));
    }

    /// A report with three targets (kernel, prefault off, prefault on) on
    /// one shape, and a zero-fill limit.
    pub(crate) fn sample_report() -> FaultsReport {
        let mut k = fig(47, 2163, 2212);
        k.touch_counters.insert("minflt".into(), 196_608);
        k.counters.insert("minflt".into(), 196_610);
        let mut off = fig(300, 0, 300);
        off.touch_counters.extend(counters(&[("pgfault", 196_608), (SHARED_WRITES, 3_072)]));
        let mut on = fig(200, 0, 200);
        on.touch_counters.extend(counters(&[("pgfault", 24_577), (SHARED_WRITES, 3_072)]));
        on.counters.insert("prefault_unused".into(), 7);
        let mut rows = vec![
            row_of("kernel", shape(1), k.derive(196_608, Some("minflt"))),
            row_of("oxmm-pf-off", shape(1), off.derive(196_608, Some("pgfault"))),
            row_of("oxmm-pf3", shape(1), on.derive(196_608, Some("pgfault"))),
        ];
        let zero_fill = zerofill::report(64, Some(1.0), vec![(1, vec![1_500_000.0]), (2, vec![2_000_000.0])]);
        for r in &mut rows {
            r.compare_with_zero_fill(zero_fill.limit_for(1).unwrap(), 0..1);
        }
        let info = |n: &str, e: &str| TargetInfo {
            name: n.into(),
            description: format!("{n} target"),
            entry_counter: Some(e.into()),
        };
        FaultsReport {
            benchmark: "faults",
            config: Config {
                gb: vec![0.5],
                threads: vec![1],
                reps: 3,
                runs: 1,
                order: vec![Order::Seq],
                prefault_order: 3,
                rss_shared: false,
                host_cpus: 8,
                host_kernel: None,
            },
            targets: vec![info("kernel", "minflt"), info("oxmm-pf-off", "pgfault"), info("oxmm-pf3", "pgfault")],
            zero_fill: Some(zero_fill),
            ratios: ratios(&rows, &[("oxmm-pf-off", "kernel"), ("oxmm-pf3", "kernel"), ("oxmm-pf3", "oxmm-pf-off")]),
            rows,
        }
    }

    #[test]
    fn json_shape() {
        let v = serde_json::to_value(sample_report()).unwrap();
        assert_eq!(v["benchmark"], "faults");
        assert_eq!(v["config"]["order"], serde_json::json!(["seq"]));
        assert_eq!(v["config"]["prefault_order"], 3);
        let names: Vec<&str> = v["targets"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["kernel", "oxmm-pf-off", "oxmm-pf3"]);
        assert_eq!(v["targets"][1]["entry_counter"], "pgfault");
        assert_eq!(v["targets"][1]["description"], "oxmm-pf-off target");
        // Zero-fill: per thread count, every run and the median.
        let zf = &v["zero_fill"];
        assert_eq!(zf["mib_per_thread"], 64);
        assert_eq!(zf["limits"][0]["threads"], 1);
        assert_eq!(zf["limits"][0]["pages_per_s"], 1_500_000.0);
        assert_eq!(zf["limits"][1]["runs"], serde_json::json!([2_000_000.0]));
        let row = &v["rows"][0];
        for key in ["target", "gb", "reps", "threads", "order", "page_size", "pages_touched", "zero_fill_pct"] {
            assert!(!row[key].is_null(), "row lacks {key}");
        }
        let m = &row["median"];
        assert_eq!(m["user_s"], 0.047);
        assert_eq!(m["system_s"], 2.163);
        assert_eq!(m["wall_s"], 2.212);
        assert_eq!(m["counters"]["minflt"], 196_610);
        assert_eq!(m["touch_counters"]["minflt"], 196_608);
        assert_eq!(m["fault_entries"], 196_608);
        assert!(m["shared_writes_per_fault"].is_null());
        assert!((m["fault_per_wsec"].as_f64().unwrap() - 88_882.459).abs() < 0.001);
        assert!(row["runs"].is_array());
        let on = &v["rows"][2];
        assert_eq!(on["target"], "oxmm-pf3");
        assert_eq!(on["median"]["fault_entries"], 24_577);
        assert!((on["median"]["shared_writes_per_fault"].as_f64().unwrap() - 3072.0 / 24577.0).abs() < 1e-12);
        assert!((on["zero_fill_pct"].as_f64().unwrap() - 196_608.0 / 0.2 / 1_500_000.0 * 100.0).abs() < 1e-9);
        assert_eq!(on["zero_fill_threads"], 1);
        let ratios = v["ratios"].as_array().unwrap();
        assert_eq!(ratios.len(), 3);
        assert_eq!(
            (ratios[0]["target"].as_str(), ratios[0]["baseline"].as_str()),
            (Some("oxmm-pf-off"), Some("kernel"))
        );
        assert_eq!(ratios[0]["threads"], 1);
        assert_eq!(
            (ratios[2]["target"].as_str(), ratios[2]["baseline"].as_str()),
            (Some("oxmm-pf3"), Some("oxmm-pf-off"))
        );
        assert_eq!(ratios[2]["fault_per_wsec"], 1.5);
        assert!((ratios[2]["entries_reduction"].as_f64().unwrap() - 196_608.0 / 24_577.0).abs() < 1e-12);
    }

    /// A target with no memory behind it: counts calls, fails on demand.
    pub(crate) struct Fake {
        name: String,
        reference: Option<String>,
        fail_thread: Option<usize>,
        panic: bool,
        runs_begun: std::sync::atomic::AtomicU64,
        touched: std::sync::atomic::AtomicU64,
        unmapped: std::sync::atomic::AtomicU64,
        /// Where to record the name at each `begin_run`, if anywhere.
        log: Option<std::sync::Arc<std::sync::Mutex<Vec<String>>>>,
    }

    pub(crate) struct FakeThread<'a> {
        target: &'a Fake,
        index: usize,
    }

    impl Fake {
        pub(crate) fn new(name: &str, fail_thread: Option<usize>, panic: bool) -> Fake {
            Fake {
                name: name.into(),
                reference: None,
                fail_thread,
                panic,
                runs_begun: 0.into(),
                touched: 0.into(),
                unmapped: 0.into(),
                log: None,
            }
        }
    }

    impl FaultTarget for Fake {
        type Thread<'a> = FakeThread<'a>;
        fn name(&self) -> &str {
            &self.name
        }
        fn reference(&self) -> Option<&str> {
            self.reference.as_deref()
        }
        fn entry_counter(&self) -> Option<&'static str> {
            Some("touched")
        }
        fn begin_run(&self) -> anyhow::Result<()> {
            self.runs_begun.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(log) = &self.log {
                log.lock().unwrap().push(self.name.clone());
            }
            Ok(())
        }
        fn thread(&self, index: usize) -> anyhow::Result<FakeThread<'_>> {
            Ok(FakeThread { target: self, index })
        }
        fn counters(&self) -> Vec<(&'static str, u64)> {
            use std::sync::atomic::Ordering::Relaxed;
            // Unmaps count as shared writes: they must not show in the
            // touch-phase figure.
            vec![("touched", self.touched.load(Relaxed)), (SHARED_WRITES, self.unmapped.load(Relaxed))]
        }
    }

    impl FaultThread for FakeThread<'_> {
        fn map(&mut self, _len: u64) -> anyhow::Result<u64> {
            Ok(0x1000_0000 * (self.index as u64 + 1))
        }
        fn touch_pages(&mut self, _addr: u64, len: u64, order: &[u32]) -> anyhow::Result<()> {
            use std::sync::atomic::Ordering::Relaxed;
            if self.target.fail_thread == Some(self.index) {
                if self.target.panic {
                    panic!("fake panic");
                }
                bail!("fake failure");
            }
            let pages = if order.is_empty() { len / 4096 } else { order.len() as u64 };
            self.target.touched.fetch_add(pages, Relaxed);
            Ok(())
        }
        fn unmap(&mut self, _addr: u64, _len: u64) -> anyhow::Result<()> {
            self.target.unmapped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }
    }

    fn small_args() -> FaultsArgs {
        FaultsArgs {
            gb: vec![1.0 / 1024.0],
            threads: vec![1, 4],
            reps: 2,
            runs: 3,
            order: vec![Order::Seq, Order::Random],
            zero_fill_mib: 1,
            json: true,
            no_progress: true,
            ..FaultsArgs::default()
        }
    }

    /// The targets take turns rep by rep, forward, then backward: with
    /// two reps and two runs of one shape, a b c, c b a (run 0), a b c,
    /// c b a (run 1).
    #[test]
    fn reps_take_turns_and_alternate_the_order_of_targets() {
        let args = FaultsArgs { threads: vec![1], order: vec![Order::Seq], runs: 2, ..small_args() };
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let targets = ["a", "b", "c"].map(|n| {
            let mut t = Fake::new(n, None, false);
            t.log = Some(log.clone());
            t
        });
        run_faults(&args, &targets, &mut Vec::new()).unwrap();
        assert_eq!(*log.lock().unwrap(), ["a", "b", "c", "c", "b", "a", "a", "b", "c", "c", "b", "a"]);
        assert_eq!(round_order(3, 0), [0, 1, 2]);
        assert_eq!(round_order(3, 1), [2, 1, 0]);
    }

    #[test]
    fn harness_runs_every_rep_of_every_target() {
        let args = small_args();
        let mut on = Fake::new("on", None, false);
        on.reference = Some("off".into());
        let targets = [Fake::new("kernel", None, false), Fake::new("off", None, false), on];
        let mut out = Vec::new();
        let report = run_faults(&args, &targets, &mut out).unwrap();
        // 1 MiB = 256 pages per row and rep; 4 shapes × 2 reps × 3 runs.
        for t in &targets {
            assert_eq!(t.touched.load(std::sync::atomic::Ordering::Relaxed), 256 * 2 * 3 * 4);
            assert_eq!(t.unmapped.load(std::sync::atomic::Ordering::Relaxed), 2 * (1 + 4) * 2 * 3);
            // Each rep is begun as a run of its own.
            assert_eq!(t.runs_begun.load(std::sync::atomic::Ordering::Relaxed), 4 * 3 * 2);
        }
        assert_eq!(report.rows.len(), 3 * 4);
        // Every target against the kernel, and on against off.
        assert_eq!(
            report.ratio_pairs(),
            [("off".into(), "kernel".into()), ("on".into(), "kernel".into()), ("on".into(), "off".into())]
        );
        assert_eq!(report.ratios.len(), 3 * 4);
        for row in &report.rows {
            assert_eq!(row.pages_touched, 512);
            assert_eq!(row.runs.len(), 3);
            assert_eq!(row.median.fault_entries, Some(512));
            // Touch phases saw no unmap: zero shared writes per fault.
            assert_eq!(row.median.shared_writes_per_fault, Some(0.0));
            assert_eq!(row.median.counters[SHARED_WRITES], 2 * row.shape.threads as u64);
            assert!(row.zero_fill_pct.is_some());
        }
        // Paired percentages use the zero-fill measurements of the row's
        // own rounds (shape k: rounds 3k..3k+3 of the limit's runs).
        let zf = report.zero_fill.as_ref().unwrap();
        assert_eq!(zf.limits.iter().map(|l| (l.threads, l.runs.len())).collect::<Vec<_>>(), [(1, 12), (2, 12)]);
        for (k, shape) in report.shapes().iter().enumerate() {
            let limit = zf.limits.iter().filter(|l| l.threads <= shape.threads).max_by_key(|l| l.threads).unwrap();
            for row in report.rows.iter().filter(|r| r.shape == *shape) {
                let want = paired_median(
                    row.runs.iter().map(|f| f.fault_per_wsec.map(|x| x * 100.0)),
                    limit.runs[3 * k..3 * k + 3].iter().map(|&v| Some(v)),
                );
                assert!(want.is_some());
                assert_eq!(row.zero_fill_pct_paired, want, "{} {shape:?}", row.target);
            }
        }
        assert_eq!(report.row("on", &report.shapes()[3]).unwrap().shape.order, Order::Random);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["rows"].as_array().unwrap().len(), 12);
    }

    #[test]
    fn duplicate_target_names_are_refused() {
        let targets = [Fake::new("a", None, false), Fake::new("a", None, false)];
        assert!(run_faults(&small_args(), &targets, &mut Vec::new()).is_err());
        assert!(run_faults::<Fake>(&small_args(), &[], &mut Vec::new()).is_err());
    }

    #[test]
    fn a_failing_thread_stops_the_run_without_hanging() {
        for panic in [false, true] {
            let args = FaultsArgs {
                gb: vec![1.0 / 1024.0],
                threads: vec![3],
                runs: 1,
                no_progress: true,
                zero_fill_mib: 0,
                ..FaultsArgs::default()
            };
            let targets = [Fake::new("a", Some(1), panic), Fake::new("b", None, false)];
            let err = run_faults(&args, &targets, &mut Vec::new()).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains(if panic { "panicked" } else { "fake failure" }), "{msg}");
            // Every mapping was unmapped, the failed thread's included
            // (unless it panicked: then its thread state's drop must do it).
            assert_eq!(targets[0].unmapped.load(std::sync::atomic::Ordering::Relaxed), if panic { 2 } else { 3 });
        }
    }
}
