//! The flags of a training run (`gpu-train`, the default command) and the [`RunConfig`] they
//! make: parsed by clap, checked once in [`TrainArgs::config`].

use crate::config::{Devices, RunConfig, TrainConfig};
use crate::run::{self, DataArgs};
use clap::Args;
use std::path::PathBuf;

/// The sections of `gpu-train --help`, after the training options (clap's "Options"): where a
/// run computes, what it reads, what it writes, how replicas share the work, what the network
/// view records, and the knobs few runs need.
const DEVICE: &str = "Device";
const DATA: &str = "Data";
const OUTPUTS: &str = "Outputs and snapshots";
const PARALLEL: &str = "Parallel and MPI";
const NETWORK: &str = "Network and trace";
const ADVANCED: &str = "Advanced";

/// --trace-steps' default, which [`crate::cli::train_cmd`] counts from where the run starts.
pub const DEFAULT_TRACE_STEPS: &str = "1..51";

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("records").multiple(true).args(["metrics", "tensorboard"])))]
pub struct TrainArgs {
    // The training itself (clap's "Options", printed first).
    /// Passes over the training set.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Images per mini-batch (per replica: the global batch is this times the replicas)
    /// [default: 64, or the snapshot's with --resume].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Learning rate of plain SGD [default: 0.1, or the snapshot's with --resume].
    #[arg(long)]
    pub lr: Option<f32>,
    /// Seed of the weight initialisation and of each epoch's shuffle.
    #[arg(long, default_value_t = crate::config::DEFAULT_SEED)]
    pub seed: u64,
    // Where it runs.
    /// GPU adapter to train on, by its index in `gpu-train devices`, or `cpu` (the same as
    /// --cpu, as PyTorch users write it) [default: 0; under --mpi, the rank's index among the
    /// ranks on its machine, modulo the adapters].
    #[arg(long, help_heading = DEVICE, value_name = "N|cpu", value_parser = parse_device)]
    pub device: Option<DeviceArg>,
    /// Train on the CPU (the SIMD GEMM baseline) instead of a GPU (also: --device cpu).
    #[arg(long, help_heading = DEVICE, conflicts_with_all = ["device", "resident"])]
    pub cpu: bool,
    /// CPU threads for --cpu, per replica (default: every core up to 8, shared out among the
    /// replicas).
    #[arg(long, help_heading = DEVICE, value_name = "N")]
    pub threads: Option<usize>,
    /// Upload the whole training set to VRAM once instead of staging each mini-batch from RAM.
    #[arg(long, help_heading = DEVICE)]
    pub resident: bool,
    // What it reads.
    #[command(flatten, next_help_heading = DATA)]
    pub data: DataArgs,
    // What it writes, and where a run starts from.
    /// Write snapshots (weights + training state, safetensors) into DIR at every epoch's end.
    #[arg(long, help_heading = OUTPUTS, value_name = "DIR")]
    pub snapshot_dir: Option<PathBuf>,
    /// Also write a snapshot every N steps (needs --snapshot-dir; 0 = only at epoch ends).
    #[arg(long, help_heading = OUTPUTS, value_name = "N", default_value_t = 0, requires = "snapshot_dir")]
    pub snapshot_every: usize,
    /// Keep the K most recent snapshots, deleting older ones.
    #[arg(long, help_heading = OUTPUTS, value_name = "K", default_value_t = 3)]
    pub keep: usize,
    /// Continue a run: from FILE, or from the latest snapshot in --snapshot-dir. Seed, batch
    /// size and learning rate come from the snapshot (an explicit --lr overrides it).
    #[arg(long, help_heading = OUTPUTS, value_name = "FILE", num_args = 0..=1)]
    pub resume: Option<Option<PathBuf>>,
    /// Start a fresh run (epoch 1, step 0) from the weights in FILE instead of a random
    /// initialisation: a snapshot, or a safetensors file from PyTorch (see `predict --help`).
    #[arg(long, help_heading = OUTPUTS, value_name = "FILE", conflicts_with = "resume")]
    pub init: Option<PathBuf>,
    /// Write metrics as JSON lines: one per epoch and one every --metrics-every steps (loss,
    /// accuracy, time, bytes staged, all-reduced and read back), for `gpu-train plot`.
    #[arg(long, help_heading = OUTPUTS, value_name = "FILE.jsonl")]
    pub metrics: Option<PathBuf>,
    /// Write the metrics as TensorBoard scalars too, into an event file in DIR (made when
    /// missing): train loss and accuracy every --metrics-every steps and every epoch, test loss
    /// and accuracy, images/s, bytes staged, all-reduced and read back, all-reduce time; watch
    /// with `tensorboard --logdir DIR`.
    #[arg(long, help_heading = OUTPUTS, value_name = "DIR")]
    pub tensorboard: Option<PathBuf>,
    /// Steps between two metrics records, in --metrics and --tensorboard (each reads the
    /// training totals back).
    #[arg(long, help_heading = OUTPUTS, value_name = "K", default_value_t = 50, requires = "records")]
    pub metrics_every: u64,
    // Data parallelism: replicas in one process, or MPI ranks.
    /// Data-parallel training, one replica per listed adapter (e.g. 0,1; an adapter may repeat:
    /// 0,0,0,0 opens four devices on adapter 0). Each replica trains on its own shard of every
    /// global batch; gradients are summed by a ring all-reduce.
    #[arg(long, help_heading = PARALLEL, value_name = "N,N,...", value_delimiter = ',', num_args = 1.., conflicts_with_all = ["device", "cpu", "replicas"])]
    pub devices: Vec<usize>,
    /// Data-parallel training with N replicas: CPU replicas with --cpu, else N devices on
    /// --device's adapter.
    #[arg(long, help_heading = PARALLEL, value_name = "N", value_parser = crate::config::replica_count)]
    pub replicas: Option<usize>,
    /// With --devices or --replicas: start the output layer's all-reduce while the hidden
    /// layer's backward pass still runs (as PyTorch DDP's gradient buckets do).
    #[arg(long, help_heading = PARALLEL)]
    pub overlap: bool,
    /// The gradients' format on the all-reduce's wire: f32, or f16 (half the bytes; in-process
    /// replicas only: MPI has no f16 sum).
    #[arg(long, help_heading = PARALLEL, value_enum, default_value = "f32")]
    pub grad_dtype: PrecisionArg,
    /// Join an MPI job started by mpirun: each rank is one replica (or --devices/--replicas
    /// replicas) and trains on its part of every global batch; gradients are summed across
    /// the ranks as --allreduce says; rank 0 prints and writes the snapshots. Needs a build
    /// with `--features mpi`.
    #[arg(long, help_heading = PARALLEL)]
    pub mpi: bool,
    /// Under --mpi, how the ranks sum their gradients: `ring`, the chapter's ring all-reduce
    /// over MPI point-to-point messages (sequenced and checksummed; its payload is counted,
    /// and --fault acts on its messages, replica = rank), or `mpi`, MPI_Allreduce (the
    /// library's own algorithm; only the bytes handed to it are known) [default: ring].
    #[arg(long, help_heading = PARALLEL, value_enum)]
    pub allreduce: Option<crate::parallel::all_reduce::AcrossRanks>,
    // The network view: traces, the NIC's counters, faults.
    /// Write a timeline of the steps --trace-steps names (Chrome trace-event JSON, one track
    /// per replica; open it in ui.perfetto.dev or chrome://tracing), for `gpu-train network`.
    #[arg(long, help_heading = NETWORK, value_name = "FILE.json")]
    pub trace: Option<PathBuf>,
    /// Global steps to trace, A..B (counted from 0, B excluded). The default takes the run's
    /// first 50 steps after its first, the warm-up (the driver compiles pipelines, caches
    /// fill: 30 ms where a step takes 1): 1..51 in a fresh run, from where a resumed one starts.
    #[arg(long, help_heading = NETWORK, value_name = "A..B", default_value = DEFAULT_TRACE_STEPS, requires = "trace")]
    pub trace_steps: String,
    /// Sample this network interface's counters (bytes, packets, TCP retransmits): every
    /// millisecond into the --trace, and into every --metrics record (what it counted since
    /// the one before): what the wire carried (scripts/lab passes its hosts' eth0).
    #[arg(long, help_heading = NETWORK, value_name = "IFACE")]
    pub nic: Option<String>,
    /// Inject a fault into the all-reduce between in-process replicas (repeatable):
    /// `lose-message@STEP[:REPLICA]`, `corrupt-message@STEP[:REPLICA]`, `slow-link=DURATION` (5ms).
    /// A lost or damaged message stops the run (exit code 3) naming what must be redone.
    #[arg(long, help_heading = NETWORK, value_name = "FAULT")]
    pub fault: Vec<String>,
    // The model's width, the number format, the kernels.
    /// Neurons in the hidden layer (the chapter's network has 128): a wider layer means more
    /// gradient bytes to synchronise per step, a narrower one fewer, against the same pixels of
    /// compute per neuron [default: 128, or the snapshot's with --resume].
    #[arg(long, help_heading = ADVANCED, value_name = "N")]
    pub hidden: Option<usize>,
    /// The number format: f32, or f16 (mixed precision: f16 inputs, activations, error terms
    /// and working weights, products summed in f32, f32 master weights, dynamic loss scaling;
    /// on a GPU it needs f16 in shaders, as lavapipe and NVIDIA's Vulkan driver offer).
    #[arg(long, help_heading = ADVANCED, value_enum, default_value = "f32")]
    pub precision: PrecisionArg,
    /// The matmul kernel variant, forced on every product of the step it can compute (the
    /// fallback elsewhere): tiled16 and its siblings tiled16_k4, tiled16_k1, tiled8, tiled8_k1
    /// (workgroup-memory tiles, K split up to 16, 4 or 1 ways; for GPUs), reg8x4 (register
    /// blocks, for CPU-based adapters such as lavapipe) or a member of the generated family
    /// (k4_8x8_sg, tk4_8x8_sg, tmn4_16x8_sg, ...; an unknown name lists them all); under
    /// --precision f16 the same shape reading f16 (reg8x4_f16, k4_8x8_sg_f16, ...) where there
    /// is one. Default: searched per product on this adapter, cached (the engine line names
    /// each pick).
    #[arg(long, help_heading = ADVANCED, value_name = "NAME", conflicts_with = "cpu")]
    pub kernels: Option<String>,
    /// Print the details of the start-up too: the adapter's driver, the kernel picked for
    /// each product and how (RUST_LOG=info prints them as well).
    #[arg(short, long, help_heading = OUTPUTS)]
    pub verbose: bool,
}

/// --device: a GPU adapter by its index, or the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceArg {
    Cpu,
    Adapter(usize),
}

/// Parses --device: `cpu` (any case), or an adapter's index.
pub fn parse_device(text: &str) -> std::result::Result<DeviceArg, String> {
    if text.eq_ignore_ascii_case("cpu") {
        return Ok(DeviceArg::Cpu);
    }
    text.parse().map(DeviceArg::Adapter).map_err(|_| {
        "expected cpu or a GPU adapter's index: 0, 1, ... as `gpu-train devices` lists them".to_string()
    })
}

/// A number format on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrecisionArg {
    F32,
    F16,
}

impl TrainArgs {
    /// How the ranks of an MPI job sum their gradients: --allreduce, ring by default.
    pub fn across_ranks(&self) -> crate::parallel::all_reduce::AcrossRanks {
        self.allreduce.unwrap_or(crate::parallel::all_reduce::AcrossRanks::Ring)
    }

    /// The run these flags ask for, before a snapshot's settings replace the defaults:
    /// parsed and checked here, once (ripgrep's low-args → high-args).
    pub fn config(&self) -> crate::error::Result<RunConfig> {
        if self.allreduce.is_some() && !self.mpi {
            return Err(crate::error::Error::Config(
                "--allreduce chooses how the ranks of an MPI job sum their gradients: it needs --mpi (in one process replicas use the in-process ring)".into(),
            ));
        }
        if !self.fault.is_empty() && self.allreduce == Some(crate::parallel::all_reduce::AcrossRanks::Mpi) {
            return Err(crate::error::Error::Config(
                "--fault injects into our ring's messages; with --allreduce mpi the messages are MPI_Allreduce's own (use --allreduce ring)".into(),
            ));
        }
        let precision = match self.precision {
            PrecisionArg::F32 => crate::engine::Precision::F32,
            PrecisionArg::F16 => crate::engine::Precision::F16,
        };
        // Mixed precision takes the separated step (its gradient is checked and unscaled).
        let data_parallel = !self.devices.is_empty()
            || self.replicas.is_some()
            || self.mpi
            || precision == crate::engine::Precision::F16;
        let cpu = self.cpu || self.device == Some(DeviceArg::Cpu);
        if cpu && (self.resident || self.kernels.is_some()) {
            let flag = if self.resident { "--resident" } else { "--kernels" };
            return Err(crate::error::Error::Config(format!(
                "{flag} is for a GPU adapter, and --device cpu trains on the CPU: drop {flag}, or pass --device N (`gpu-train devices` lists them)"
            )));
        }
        let n = self.replicas.unwrap_or(1);
        let devices = if cpu {
            Devices::Cpu {
                replicas: n,
                threads: self.threads.unwrap_or_else(|| run::default_threads(n)),
            }
        } else if !self.devices.is_empty() {
            Devices::Gpu {
                adapters: self.devices.clone(),
                resident: self.resident,
                kernels: self.kernels.clone(),
            }
        } else {
            Devices::Gpu {
                adapters: vec![
                    match self.device {
                        Some(DeviceArg::Adapter(i)) => i,
                        _ => 0,
                    };
                    n
                ],
                resident: self.resident,
                kernels: self.kernels.clone(),
            }
        };
        let mut faults = crate::parallel::ring::Faults {
            timeout: std::time::Duration::from_secs(2),
            ..Default::default()
        };
        for spec in &self.fault {
            run::parse_fault(spec, &mut faults)?;
        }
        let config = RunConfig {
            train: TrainConfig {
                epochs: self.epochs,
                batch_size: self.batch_size.unwrap_or(crate::config::DEFAULT_BATCH),
                lr: self.lr.unwrap_or(crate::config::DEFAULT_LR),
                seed: self.seed,
            },
            // --init's or a snapshot's width replaces it once the weights are read.
            hidden: self.hidden.unwrap_or(crate::model::HIDDEN),
            devices,
            data_parallel,
            overlap: self.overlap,
            precision,
            grad_f16: self.grad_dtype == PrecisionArg::F16,
            faults,
        };
        config.validate()?;
        Ok(config)
    }
}

