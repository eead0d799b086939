//! `gpu-train bench`: the same model from the same seed on the CPU baseline and on GPU adapters,
//! staged and resident, with one table of epoch times, speed-ups and accuracy.
//!
//! Epoch time is the median over the timed epochs after `--warmup` untimed ones (the first
//! epoch on a GPU includes pipeline compilation by the driver).

use crate::cli::DataArgs;
use crate::cpu::engine::CpuEngine;
use crate::data::DataSplit;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuEngine, GpuOptions};
use crate::model::Model;
use crate::train::{self, Engine, TrainConfig};
use clap::Args;
use std::fmt::Write as _;
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
    /// Images per mini-batch.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 0.1)]
    pub lr: f32,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
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

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub path: String,
    pub adapter: String,
    pub epoch_s: f64,
    pub images_per_s: f64,
    pub speedup: Option<f64>,
    pub test_accuracy: f64,
    pub peak_host_mb: f64,
    pub vram_mb: Option<f64>,
    pub staged_mb_per_epoch: Option<f64>,
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Trains `engine` for warmup + epochs epochs; returns (median epoch seconds, final test
/// accuracy, bytes staged in the last epoch).
fn time_engine(
    engine: &mut dyn Engine,
    data: &DataSplit,
    args: &BenchArgs,
) -> Result<(f64, f64, Option<u64>)> {
    let cfg = TrainConfig {
        epochs: args.warmup + args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.seed,
    };
    let reports = train::train(engine, data, &cfg, &mut train::Quiet)?;
    let times: Vec<f64> = reports[args.warmup..]
        .iter()
        .map(|r| r.train_time.as_secs_f64())
        .collect();
    let last = reports.last().expect("at least one epoch");
    Ok((median(times), last.test.accuracy(), last.staged_bytes))
}

/// Runs every row the flags ask for.
pub fn rows(args: &BenchArgs, data: &DataSplit) -> Result<Vec<Row>> {
    if args.epochs == 0 {
        return Err(Error::Config("--epochs must be at least 1".into()));
    }
    let model = Model::init(args.seed);
    let n = data.train.len() as f64;
    let mut rows = Vec::new();
    if !args.gpu_only {
        reset_peak_host();
        let mut cpu = CpuEngine::new(model.clone(), crate::cpu::cores());
        let (t, acc, _) = time_engine(&mut cpu, data, args)?;
        rows.push(Row {
            path: "cpu".into(),
            adapter: cpu.describe(),
            epoch_s: t,
            images_per_s: n / t,
            speedup: None,
            test_accuracy: acc,
            peak_host_mb: peak_host_mb(),
            vram_mb: None,
            staged_mb_per_epoch: None,
        });
    }
    if !args.cpu_only {
        let devices = if args.devices.is_empty() {
            vec![0]
        } else {
            args.devices.clone()
        };
        for &device in &devices {
            for resident in [false, true] {
                reset_peak_host();
                let gpu = Gpu::open(device)?;
                let name = gpu.info.name.clone();
                let opts = GpuOptions {
                    batch: args.batch_size,
                    resident,
                    ..GpuOptions::default()
                };
                let mut engine = GpuEngine::new(gpu, &model, opts, &data.train)?;
                let (t, acc, staged) = time_engine(&mut engine, data, args)?;
                rows.push(Row {
                    path: if resident {
                        "gpu resident".into()
                    } else {
                        "gpu staged".into()
                    },
                    adapter: format!("{device}: {name}"),
                    epoch_s: t,
                    images_per_s: n / t,
                    speedup: None,
                    test_accuracy: acc,
                    peak_host_mb: peak_host_mb(),
                    vram_mb: Some(engine.vram_bytes() as f64 / 1e6),
                    staged_mb_per_epoch: staged.map(|b| b as f64 / 1e6),
                });
            }
        }
    }
    let cpu_time = rows.iter().find(|r| r.path == "cpu").map(|r| r.epoch_s);
    for r in rows.iter_mut() {
        r.speedup = cpu_time.map(|c| c / r.epoch_s);
    }
    Ok(rows)
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

/// The table as printed.
pub fn table(rows: &[Row]) -> String {
    let mut s = format!(
        "{:<13} {:<44} {:>9} {:>10} {:>8} {:>8} {:>9} {:>8} {:>10}\n",
        "path",
        "adapter",
        "epoch s",
        "images/s",
        "speedup",
        "test %",
        "host MB",
        "VRAM MB",
        "staged MB"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:<13} {:<44} {:>9.4} {:>10.0} {:>8} {:>8.2} {:>9.1} {:>8} {:>10}",
            r.path,
            r.adapter.chars().take(44).collect::<String>(),
            r.epoch_s,
            r.images_per_s,
            opt(r.speedup, 2),
            r.test_accuracy,
            r.peak_host_mb,
            opt(r.vram_mb, 1),
            opt(r.staged_mb_per_epoch, 1)
        );
    }
    s
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out += "\\\"",
            '\\' => out += "\\\\",
            c if (c as u32) < 0x20 => out += &format!("\\u{:04x}", c as u32),
            c => out.push(c),
        }
    }
    out + "\""
}

fn json_num(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x}"),
        _ => "null".into(),
    }
}

/// The rows as a JSON array.
pub fn to_json(rows: &[Row]) -> String {
    let items: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "  {{\"path\": {}, \"adapter\": {}, \"epoch_s\": {}, \"images_per_s\": {}, \"speedup\": {}, \
                 \"test_accuracy\": {}, \"peak_host_mb\": {}, \"vram_mb\": {}, \"staged_mb_per_epoch\": {}}}",
                json_str(&r.path),
                json_str(&r.adapter),
                json_num(Some(r.epoch_s)),
                json_num(Some(r.images_per_s)),
                json_num(r.speedup),
                json_num(Some(r.test_accuracy)),
                json_num(Some(r.peak_host_mb)),
                json_num(r.vram_mb),
                json_num(r.staged_mb_per_epoch)
            )
        })
        .collect();
    format!("[\n{}\n]\n", items.join(",\n"))
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
        "profile on {name}: GPU time per kernel, mean of {} steps of batch {} (each kernel in its own timed pass)\n",
        batches.len(),
        args.batch_size
    );
    s += &format!(
        "{:<30} {:<9} {:>9} {:>9} {:>9} {:>10}\n",
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
            "{:<30} {:<9} {:>9.2} {:>9.1} {:>9.1} {:>10}\n",
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
            "; a real staged step (all in one pass, many steps per submit) took {:.1} µs",
            step * 1e6
        );
    }
    s += "\n";
    Ok(s)
}

pub fn run(args: &BenchArgs) -> Result<()> {
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
    print!("{}", table(&rows));
    if !args.cpu_only && !args.no_profile {
        let devices = if args.devices.is_empty() {
            vec![0]
        } else {
            args.devices.clone()
        };
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
        std::fs::write(path, to_json(&rows)).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}
