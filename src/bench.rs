//! `gpu-train bench`: the same model from the same seed on the CPU baseline and on GPU adapters,
//! staged and resident, with one table of epoch times, speed-ups and accuracy.
//!
//! Epoch time is the median over the timed epochs after `--warmup` untimed ones (the first
//! epoch on a GPU includes pipeline compilation by the driver).
//!
//! Then data-parallel rows (`--replicas 1,2,4`): N replicas on the CPU and N devices opened on
//! each adapter, each with the per-replica batch `--batch-size / N` so every row trains the
//! same global batch, with the step split into compute (forward + backward, waiting for the
//! gradients), all-reduce (the ring, on the host) and update. The 1-replica row runs the
//! separated step (gradient buffer, identity all-reduce, sgd_update), so set beside the fused
//! row above it, it shows what separating gradient and update costs.

pub mod table;

use crate::data::DataSplit;
use crate::engine::Precision;
use crate::error::{Error, Result};
use crate::gpu::context::Gpu;
use crate::gpu::engine::state::GpuEngine;
use crate::gpu::buffers::GpuOptions;
use crate::model::Model;
use crate::run::{self, DataArgs};
use crate::config::{Devices, RunConfig};
use crate::train;
use crate::train::report::EpochReport;
use crate::config::TrainConfig;
use clap::Args;
use table::{to_json, Row};
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// GPU adapters to run, by index (repeat or comma-separate); default: adapter 0 if any.
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<usize>,
    /// Skip the GPU rows.
    #[arg(long)]
    pub cpu_only: bool,
    /// Skip the CPU row.
    #[arg(long)]
    pub gpu_only: bool,
    /// Timed epochs per row (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// Untimed epochs before the timed ones.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Images per mini-batch (the global batch of the replica rows).
    #[arg(long, default_value_t = crate::config::DEFAULT_BATCH)]
    pub batch_size: usize,
    /// Data-parallel rows: this many replicas (comma-separated; each must divide
    /// --batch-size), on the CPU and on each adapter. 0 alone: no replica rows.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4", value_parser = crate::config::replica_count)]
    pub replicas: Vec<usize>,
    /// Learning rate.
    #[arg(long, default_value_t = crate::config::DEFAULT_LR)]
    pub lr: f32,
    /// Seed.
    #[arg(long, default_value_t = crate::config::DEFAULT_SEED)]
    pub seed: u64,
    /// Leave out the --precision f16 rows (CPU, and each adapter that has f16 in shaders).
    #[arg(long)]
    pub no_f16: bool,
    /// The matmul variant for the GPU rows (default: measured per adapter, see `--help` of
    /// training).
    #[arg(long, value_name = "NAME")]
    pub kernels: Option<String>,
    /// Skip the per-kernel GPU profile (timestamp queries) printed after the table.
    #[arg(long)]
    pub no_profile: bool,
    /// The card's peak FP32 rate in TFLOP/s, to print each kernel's arithmetic floor.
    #[arg(long, value_name = "TFLOPS")]
    pub peak_tflops: Option<f64>,
    /// The card's peak memory bandwidth in TB/s, to print each kernel's bandwidth floor.
    #[arg(long, value_name = "TBPS")]
    pub peak_tbs: Option<f64>,
    /// Write the rows as JSON to this file too.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
}

/// The peak resident memory (VmHWM) since the last [`reset_peak_host`], in MB, where /proc has it.
pub fn peak_host_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Restarts the peak count at the current resident size (Linux: `echo 5 > /proc/self/clear_refs`),
/// so each row reports its own peak: the data set in RAM plus what that path allocates.
pub fn reset_peak_host() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Trains `run`'s engines for warmup + epochs epochs and makes its row (the timed epochs'
/// median; the split and traffic of the median epoch).
fn time_run(run: &RunConfig, data: &DataSplit, args: &BenchArgs, path: &str) -> Result<Row> {
    reset_peak_host();
    let mut engines = run.engines(&Model::init(args.seed), data)?;
    let adapter = engines[0].to_string();
    let reports = {
        let mut replicas = run.replicas_of(&mut engines)?;
        train::train_from(
            &mut replicas,
            data,
            &run.train,
            train::Start::FRESH,
            None,
            &mut crate::train::report::Quiet,
        )?
    };
    let mut timed: Vec<&EpochReport> = reports[args.warmup..].iter().collect();
    timed.sort_by_key(|r| r.train_time);
    let median = timed[timed.len() / 2];
    let epoch_s = median_of(timed.iter().map(|r| r.train_time.as_secs_f64()).collect());
    let last = reports.last().expect("at least one epoch");
    let steps = data.train.len().div_ceil(last.global_batch) as f64;
    let per_step = |d: std::time::Duration| d.as_secs_f64() * 1e6 / steps;
    Ok(Row {
        path: path.into(),
        adapter,
        replicas: run.replicas(),
        epoch_s,
        images_per_s: data.train.len() as f64 / epoch_s,
        speedup: None,
        test_accuracy: last.test.accuracy(),
        peak_host_mb: peak_host_mb(),
        vram_mb: None,
        staged_mb_per_epoch: last.staged_bytes.map(|b| b as f64 / 1e6),
        allreduce_mb_per_epoch: last.split.map(|_| last.traffic.sent as f64 / 1e6),
        compute_us: median.split.map(|s| per_step(s.compute)),
        allreduce_us: median.split.map(|s| per_step(s.all_reduce)),
        update_us: median.split.map(|s| per_step(s.update)),
    })
}

/// A run on `devices` with `n` replicas (data-parallel, each with batch/n rows: the same
/// global batch as one replica) or, for `n` = 0, one engine on the fused step.
fn config(args: &BenchArgs, devices: Devices, n: usize, precision: Precision) -> RunConfig {
    RunConfig {
        train: TrainConfig {
            epochs: args.warmup + args.epochs,
            batch_size: args.batch_size / n.max(1),
            lr: args.lr,
            seed: args.seed,
        },
        hidden: crate::model::HIDDEN,
        devices,
        data_parallel: n > 0,
        overlap: false,
        precision,
        grad_f16: false,
        faults: Default::default(),
    }
}

/// Runs every row the flags ask for; each row's speed-up is against the "cpu" row's.
pub fn rows(args: &BenchArgs, data: &DataSplit) -> Result<Vec<Row>> {
    args.validate()?;
    let mut rows = Vec::new();
    if !args.gpu_only {
        rows.extend(cpu_rows(args, data)?);
    }
    if !args.cpu_only {
        for &device in &args.devices() {
            rows.extend(gpu_rows(args, data, device)?);
        }
    }
    let cpu_time = rows.iter().find(|r| r.path == "cpu").map(|r| r.epoch_s);
    for r in rows.iter_mut() {
        r.speedup = cpu_time.map(|c| c / r.epoch_s);
    }
    Ok(rows)
}

/// The replica counts --replicas asks for (0s dropped).
fn replica_counts(args: &BenchArgs) -> Vec<usize> {
    args.replicas.iter().copied().filter(|&n| n > 0).collect()
}

/// The CPU rows: the fused f32 step, the f16 step (unless --no-f16), and each replica count.
fn cpu_rows(args: &BenchArgs, data: &DataSplit) -> Result<Vec<Row>> {
    let cpu = Devices::Cpu {
        replicas: 1,
        threads: crate::cpu::cores(),
    };
    let mut rows = vec![time_run(
        &config(args, cpu.clone(), 0, Precision::F32),
        data,
        args,
        "cpu",
    )?];
    if !args.no_f16 {
        let f16 = config(args, cpu, 1, Precision::F16);
        rows.push(time_run(&f16, data, args, "cpu f16")?);
    }
    for n in replica_counts(args) {
        let devices = Devices::Cpu {
            replicas: n,
            threads: run::default_threads(n),
        };
        let run = config(args, devices, n, Precision::F32);
        rows.push(time_run(&run, data, args, &format!("cpu ×{n}"))?);
    }
    Ok(rows)
}

/// The rows of adapter `device`: staged and resident, each in f32 and (where the adapter has
/// f16 in shaders, unless --no-f16) f16, then each replica count (staged, one device each).
fn gpu_rows(args: &BenchArgs, data: &DataSplit, device: usize) -> Result<Vec<Row>> {
    let on = |resident, n: usize| Devices::Gpu {
        adapters: vec![device; n.max(1)],
        resident,
        kernels: args.kernels.clone(),
    };
    let has_f16 = Gpu::open(device)?
        .features
        .contains(wgpu::Features::SHADER_F16);
    let mut rows = Vec::new();
    for resident in [false, true] {
        let (f32_path, f16_path) = match resident {
            false => ("gpu staged", "gpu f16 staged"),
            true => ("gpu resident", "gpu f16 res."),
        };
        let run = config(args, on(resident, 1), 0, Precision::F32);
        rows.push(gpu_row(args, data, &run, device, f32_path)?);
        if !args.no_f16 && has_f16 {
            let run = config(args, on(resident, 1), 1, Precision::F16);
            rows.push(gpu_row(args, data, &run, device, f16_path)?);
        }
    }
    for n in replica_counts(args) {
        let mut row = time_run(
            &config(args, on(false, n), n, Precision::F32),
            data,
            args,
            &format!("gpu ×{n}"),
        )?;
        row.adapter = format!("{device}: {} (×{n} devices)", Gpu::open(device)?.info.name);
        rows.push(row);
    }
    Ok(rows)
}

/// One row of a single engine on adapter `device`: `run` timed, with the VRAM a fresh engine
/// of its configuration allocates.
fn gpu_row(
    args: &BenchArgs,
    data: &DataSplit,
    run: &RunConfig,
    device: usize,
    path: &str,
) -> Result<Row> {
    let mut row = time_run(run, data, args, path)?;
    let gpu = Gpu::open(device)?;
    row.adapter = format!("{device}: {}", gpu.info.name);
    let resident = matches!(run.devices, Devices::Gpu { resident: true, .. });
    let opts = GpuOptions {
        batch: args.batch_size,
        resident,
        kernels: args.kernel_variant()?,
        precision: run.precision,
        ..GpuOptions::default()
    };
    let engine = GpuEngine::new(gpu, &Model::init(args.seed), opts, &data.train)?;
    row.vram_mb = Some(engine.vram_bytes() as f64 / 1e6);
    Ok(row)
}

impl BenchArgs {
    /// The matmul variant `--kernels` names, checked.
    fn kernel_variant(&self) -> Result<Option<&'static str>> {
        self.kernels
            .as_deref()
            .map(|k| crate::gpu::matmul::MatmulVariant::by_name(k).map(|v| v.name))
            .transpose()
    }

    /// The adapters to run: the listed ones, or adapter 0.
    fn devices(&self) -> Vec<usize> {
        if self.devices.is_empty() {
            vec![0]
        } else {
            self.devices.clone()
        }
    }

    /// Checks the flags before anything runs (a bad --json folder must not waste a whole bench).
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::Config("--epochs must be at least 1".into()));
        }
        self.kernel_variant()?;
        if self.cpu_only && self.gpu_only {
            return Err(Error::Config(
                "--cpu-only and --gpu-only leave nothing to run: pass one of them".into(),
            ));
        }
        if self
            .warmup
            .checked_add(self.epochs)
            .is_none_or(|t| t > 1_000_000)
        {
            return Err(Error::Config(format!(
                "--warmup {} + --epochs {} is more epochs than a benchmark needs (at most 1,000,000)",
                self.warmup, self.epochs
            )));
        }
        TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            seed: self.seed,
        }
        .validate()?;
        for &n in &self.replicas {
            if n > 0 && !self.batch_size.is_multiple_of(n) {
                return Err(Error::Config(format!(
                    "--replicas {n} does not divide --batch-size {}: every replica row trains the same global batch",
                    self.batch_size
                )));
            }
            if n > 64 {
                return Err(Error::Config(format!("--replicas {n}: at most 64")));
            }
        }
        if let Some(path) = &self.json {
            crate::files::check_writable(path, "--json")?;
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
            if dir.is_some_and(|d| !d.is_dir()) {
                return Err(Error::Config(format!(
                    "--json {}: the folder does not exist",
                    path.display()
                )));
            }
        }
        for (flag, peak) in [
            ("--peak-tflops", self.peak_tflops),
            ("--peak-tbs", self.peak_tbs),
        ] {
            if let Some(v) = peak.filter(|v| !(v.is_finite() && *v > 0.0 && *v <= 1e6)) {
                return Err(Error::Config(format!(
                    "{flag} {v}: a card's peak, a positive number (at most 1,000,000)"
                )));
            }
        }
        let data = self.data.files();
        let inputs: Vec<(&str, &std::path::Path)> =
            data.iter().map(|p| ("--data-dir", p.as_path())).collect();
        let outputs: Vec<crate::files::Output> = self
            .json
            .iter()
            .map(|p| crate::files::Output::File("--json", p))
            .collect();
        crate::files::check_paths(&inputs, &outputs)
    }
}

fn median_of(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The per-kernel profile of one adapter as printed: each kernel's GPU time (timestamps at the
/// start and end of its own pass), achieved rates, floors where the peaks are given, per-phase
/// sums, and the sum against the real step time.
pub fn profile_text(
    args: &BenchArgs,
    data: &DataSplit,
    device: usize,
    step_s: Option<f64>,
) -> Result<String> {
    let gpu = Gpu::open(device)?;
    let name = gpu.info.name.clone();
    let opts = GpuOptions {
        batch: args.batch_size,
        kernels: args.kernel_variant()?,
        ..GpuOptions::default()
    };
    let mut engine = GpuEngine::new(gpu, &Model::init(args.seed), opts, &data.train)?;
    if !engine.can_profile() {
        return Ok(format!(
            "profile: {name} offers no timestamp queries; no per-kernel split\n"
        ));
    }
    let order = crate::data::epoch_order(data.train.len(), args.seed, 1);
    let batches: Vec<&[u32]> = order.chunks(args.batch_size).take(20).collect();
    engine.profile(&data.train, &batches[..batches.len().min(3)], args.lr)?; // warm-up
    let kernels = engine.profile(&data.train, &batches, args.lr)?;
    let mut s = format!(
        "profile on {name}, matmul {}: GPU time per kernel, mean of {} steps of batch {} (each kernel in its own timed pass)\n",
        engine.matmul_variants(),
        batches.len(),
        args.batch_size
    );
    // The kernel column as wide as its widest name.
    let w = kernels.iter().map(|k| k.name.chars().count()).max().unwrap_or(0).max(6);
    s += &format!(
        "{:<w$} {:<9} {:>9} {:>9} {:>9} {:>10}\n",
        "kernel", "phase", "µs", "GFLOP/s", "GB/s", "floor µs"
    );
    for k in &kernels {
        let floor = match (args.peak_tflops, args.peak_tbs) {
            (Some(f), Some(b)) => format!(
                "{:.3}",
                (k.flops / (f * 1e12)).max(k.bytes / (b * 1e12)) * 1e6
            ),
            _ => "-".into(),
        };
        s += &format!(
            "{:<w$} {:<9} {:>9.2} {:>9.1} {:>9.1} {:>10}\n",
            k.name,
            k.phase,
            k.seconds * 1e6,
            k.flops / k.seconds.max(1e-12) / 1e9,
            k.bytes / k.seconds.max(1e-12) / 1e9,
            floor
        );
    }
    let total: f64 = kernels.iter().map(|k| k.seconds).sum();
    let mut phases: Vec<(&str, f64)> = Vec::new();
    for k in &kernels {
        match phases.iter_mut().find(|p| p.0 == k.phase) {
            Some(p) => p.1 += k.seconds,
            None => phases.push((k.phase, k.seconds)),
        }
    }
    let split: Vec<String> = phases
        .iter()
        .map(|(p, t)| format!("{p} {:.1}", t * 1e6))
        .collect();
    s += &format!(
        "phases (µs): {}; kernels together {:.1} µs",
        split.join(", "),
        total * 1e6
    );
    if let Some(step) = step_s {
        s += &format!(
            "; a real staged step (not one pass a kernel: many steps a submission) took {:.1} µs",
            step * 1e6
        );
    }
    s += "\n";
    Ok(s)
}

pub fn run(args: &BenchArgs) -> Result<()> {
    args.validate()?;
    let data = args.data.load()?;
    println!(
        "bench: {} training images from {}, batch {}, {} warm-up + {} timed epochs (median)",
        data.train.len(),
        data.dir.display(),
        args.batch_size,
        args.warmup,
        args.epochs
    );
    let rows = rows(args, &data)?;
    print!("{}", table::table(&rows));
    if !args.cpu_only && !args.no_profile {
        let devices = args.devices();
        let steps = data.train.len().div_ceil(args.batch_size) as f64;
        for (i, &device) in devices.iter().enumerate() {
            let staged = rows
                .iter()
                .filter(|r| r.path == "gpu staged")
                .nth(i)
                .map(|r| r.epoch_s / steps);
            print!("{}", profile_text(args, &data, device, staged)?);
        }
    }
    if let Some(path) = &args.json {
        crate::files::write_file(
            path,
            to_json(&rows).as_bytes(),
            "the benchmark's JSON",
            "an earlier file of that name is untouched",
        )?;
    }
    Ok(())
}
