//! The command line: clap definitions (their doc comments are the `--help` text) and the
//! code that turns flags into a validated configuration and runs it.

use crate::checkpoint::{self, SnapshotDir};
use crate::cpu::engine::CpuEngine;
use crate::data::DataSplit;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::run::{self, DataArgs, Devices, RunConfig};
use crate::train::{self, Engine, EpochReport, Observer, Start, TrainConfig};
use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;

/// Train a 784-128-10 MNIST classifier on a GPU through wgpu compute shaders, or on the CPU.
///
/// With no subcommand, trains: on GPU adapter 0 by default, on the MNIST sample bundled
/// with the repository unless --data-dir is given.
#[derive(Debug, Parser)]
#[command(
    name = "gpu-train",
    version,
    args_conflicts_with_subcommands = true,
    allow_negative_numbers = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub train: TrainArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the GPU adapters wgpu finds, best first (index 0 is the default --device).
    Devices,
    /// Print the chapters' worked examples, computed by the engine.
    #[command(allow_negative_numbers = true)]
    Explain(ExplainArgs),
    /// Train on the CPU and on GPU adapters from the same seed and print one comparison table.
    #[command(allow_negative_numbers = true)]
    Bench(crate::bench::BenchArgs),
    /// Classify test images or 28x28 PNG digits with a snapshot, printing the SoftMax table.
    #[command(allow_negative_numbers = true)]
    Predict(PredictArgs),
    /// One replica's link over a traced run (compute, then the all-reduce at line rate) for a
    /// link you name, as Figure 3-7 draws it; or, with --project, a model and cluster projected
    /// from the latency-bandwidth model. Writes PNG and SVG pictures.
    Network(crate::network::commands::NetworkArgs),
    /// Time the ring all-reduce over message sizes from 8 B up, in nccl-tests' terms (algbw,
    /// busbw).
    AllreduceBench(crate::network::commands::AllreduceBenchArgs),
    /// Draw a --metrics file: loss and accuracy by epoch and by step (PNG and SVG).
    Plot(crate::network::commands::PlotArgs),
}

#[derive(Debug, Clone, Args)]
pub struct PredictArgs {
    /// A snapshot written by --snapshot-dir, or any safetensors file with the tensors
    /// hidden.weight (128x784), hidden.bias, output.weight (10x128), output.bias (F32, F16,
    /// BF16 or F64), e.g. written by PyTorch's safetensors.torch.save_file.
    pub snapshot: PathBuf,
    /// Index of a test image to classify (repeatable).
    #[arg(long, value_name = "N")]
    pub index: Vec<usize>,
    /// A 28x28 PNG of a light digit on a black background, as MNIST draws them (repeatable).
    #[arg(long, value_name = "FILE")]
    pub png: Vec<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// GPU adapter to train on, by its index in `gpu-train devices` [default: 0; under --mpi,
    /// the rank's index among the ranks on its machine, modulo the adapters].
    #[arg(long, value_name = "N")]
    pub device: Option<usize>,
    /// Join an MPI job started by mpirun: each rank is one replica (or --devices/--replicas
    /// replicas) and trains on its part of every global batch; gradients are summed with
    /// MPI_Allreduce; rank 0 prints and writes the snapshots. Needs a build with
    /// `--features mpi`.
    #[arg(long)]
    pub mpi: bool,
    /// Data-parallel training, one replica per listed adapter (e.g. 0,1; an adapter may repeat:
    /// 0,0,0,0 opens four devices on adapter 0). Each replica trains on its own shard of every
    /// global batch; gradients are summed by a ring all-reduce.
    #[arg(long, value_name = "N,N,...", value_delimiter = ',', num_args = 1.., conflicts_with_all = ["device", "cpu", "replicas"])]
    pub devices: Vec<usize>,
    /// Data-parallel training with N replicas: CPU replicas with --cpu, else N devices on
    /// --device's adapter.
    #[arg(long, value_name = "N")]
    pub replicas: Option<usize>,
    /// Write a timeline of the steps --trace-steps names (Chrome trace-event JSON, one track
    /// per replica; open it in ui.perfetto.dev or chrome://tracing), for `gpu-train network`.
    #[arg(long, value_name = "FILE.json")]
    pub trace: Option<PathBuf>,
    /// Global steps to trace, A..B (counted from 0, B excluded).
    #[arg(long, value_name = "A..B", default_value = "0..50", requires = "trace")]
    pub trace_steps: String,
    /// Write metrics as JSON lines: one per epoch and one every --metrics-every steps (loss,
    /// accuracy, time, bytes staged, all-reduced and read back), for `gpu-train plot`.
    #[arg(long, value_name = "FILE.jsonl")]
    pub metrics: Option<PathBuf>,
    /// Steps between two metrics lines (each reads the training totals back).
    #[arg(long, value_name = "K", default_value_t = 50, requires = "metrics")]
    pub metrics_every: u64,
    /// Inject a fault into the all-reduce between in-process replicas (repeatable):
    /// `lose-message@STEP[:REPLICA]`, `corrupt-message@STEP[:REPLICA]`, `slow-link=DURATION` (5ms).
    /// A lost or damaged message stops the run (exit code 3) naming what must be redone.
    #[arg(long, value_name = "FAULT")]
    pub fault: Vec<String>,
    /// With --devices or --replicas: start the output layer's all-reduce while the hidden
    /// layer's backward pass still runs (as PyTorch DDP's gradient buckets do).
    #[arg(long)]
    pub overlap: bool,
    /// The number format: f32, or f16 (mixed precision: f16 inputs, activations, error terms
    /// and working weights, products summed in f32, f32 master weights, dynamic loss scaling;
    /// on a GPU it needs f16 in shaders, as lavapipe and NVIDIA's Vulkan driver offer).
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: PrecisionArg,
    /// The gradients' format on the all-reduce's wire: f32, or f16 (half the bytes; in-process
    /// replicas only: MPI has no f16 sum).
    #[arg(long, value_enum, default_value = "f32")]
    pub grad_dtype: PrecisionArg,
    /// Train on the CPU (the SIMD GEMM baseline) instead of a GPU.
    #[arg(long, conflicts_with_all = ["device", "resident"])]
    pub cpu: bool,
    /// CPU threads for --cpu, per replica (default: every core up to 8, shared out among the
    /// replicas).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Upload the whole training set to VRAM once instead of staging each mini-batch from RAM.
    #[arg(long)]
    pub resident: bool,
    /// The matmul kernel variant: tiled16 (workgroup-memory tiles, for GPUs) or reg8x4
    /// (register blocks, for CPU-based adapters such as lavapipe). Default: the faster on this
    /// adapter, measured once and cached.
    #[arg(long, value_name = "NAME", conflicts_with = "cpu")]
    pub kernels: Option<String>,
    /// Neurons in the hidden layer (the chapter's network has 128): a wider layer means more
    /// gradient bytes to synchronise per step, a narrower one fewer, against the same pixels of
    /// compute per neuron [default: 128, or the snapshot's with --resume].
    #[arg(long, value_name = "N")]
    pub hidden: Option<usize>,
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
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[command(flatten)]
    pub data: DataArgs,
    /// Write snapshots (weights + training state, safetensors) into DIR at every epoch's end.
    #[arg(long, value_name = "DIR")]
    pub snapshot_dir: Option<PathBuf>,
    /// Also write a snapshot every N steps (needs --snapshot-dir; 0 = only at epoch ends).
    #[arg(long, value_name = "N", default_value_t = 0, requires = "snapshot_dir")]
    pub snapshot_every: usize,
    /// Keep the K most recent snapshots, deleting older ones.
    #[arg(long, value_name = "K", default_value_t = 3)]
    pub keep: usize,
    /// Continue a run: from FILE, or from the latest snapshot in --snapshot-dir. Seed, batch
    /// size and learning rate come from the snapshot (an explicit --lr overrides it).
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    pub resume: Option<Option<PathBuf>>,
    /// Start a fresh run (epoch 1, step 0) from the weights in FILE instead of a random
    /// initialisation: a snapshot, or a safetensors file from PyTorch (see `predict --help`).
    #[arg(long, value_name = "FILE", conflicts_with = "resume")]
    pub init: Option<PathBuf>,
}

/// Default learning rate.
pub const DEFAULT_LR: f32 = 0.1;

/// A number format on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrecisionArg {
    F32,
    F16,
}

/// Default batch size.
pub const DEFAULT_BATCH: usize = 64;

impl TrainArgs {
    /// The run these flags ask for, before a snapshot's settings replace the defaults.
    pub fn config(&self) -> RunConfig {
        let precision = match self.precision {
            PrecisionArg::F32 => train::Precision::F32,
            PrecisionArg::F16 => train::Precision::F16,
        };
        // Mixed precision takes the separated step (its gradient is checked and unscaled).
        let data_parallel = !self.devices.is_empty()
            || self.replicas.is_some()
            || self.mpi
            || precision == train::Precision::F16;
        let n = self.replicas.unwrap_or(1);
        let devices = if self.cpu {
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
                adapters: vec![self.device.unwrap_or(0); n],
                resident: self.resident,
                kernels: self.kernels.clone(),
            }
        };
        RunConfig {
            train: TrainConfig {
                epochs: self.epochs,
                batch_size: self.batch_size.unwrap_or(DEFAULT_BATCH),
                lr: self.lr.unwrap_or(DEFAULT_LR),
                seed: self.seed,
            },
            devices,
            data_parallel,
            overlap: self.overlap,
            precision,
            grad_f16: self.grad_dtype == PrecisionArg::F16,
            faults: {
                let mut f = crate::parallel::ring::Faults {
                    timeout: std::time::Duration::from_secs(2),
                    ..Default::default()
                };
                // Parsed again, with errors, in run_train; here a bad one is left out.
                for spec in &self.fault {
                    let _ = run::parse_fault(spec, &mut f);
                }
                f
            },
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    /// Test image shown in the chapter-3 example.
    #[arg(long, default_value_t = 0)]
    pub image: usize,
    /// Train this many epochs on the CPU before the chapter-3 example (0 = freshly initialised).
    #[arg(long, default_value_t = 0)]
    pub epochs: usize,
    /// Run the chapter-3 example with the weights in FILE (a snapshot, or a safetensors file
    /// from PyTorch) instead of freshly initialised ones.
    #[arg(long, value_name = "FILE", conflicts_with = "epochs")]
    pub weights: Option<PathBuf>,
    /// Seed of the initialisation.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[command(flatten)]
    pub data: DataArgs,
}

/// Draws a progress bar on a terminal while an epoch trains and prints one line per epoch.
/// The bar exists only while steps run: it is made at an epoch's first step, with its length
/// known, and cleared before the test pass and the epoch's line.
struct Console {
    bar: Option<indicatif::ProgressBar>,
    epochs: usize,
    terminal: bool,
    /// --metrics: the file and every how many steps.
    metrics: Option<(crate::network::metrics::Metrics, u64)>,
    /// A metrics write that failed (reported when training returns).
    failed: Option<Error>,
}

impl Console {
    fn new(epochs: usize) -> Self {
        Console {
            bar: None,
            epochs,
            terminal: std::io::stderr().is_terminal(),
            metrics: None,
            failed: None,
        }
    }

    fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Observer for Console {
    fn step(&mut self, epoch: usize, step: usize, steps: usize) {
        if !self.terminal {
            return;
        }
        let epochs = self.epochs;
        let bar = self.bar.get_or_insert_with(|| {
            let bar = indicatif::ProgressBar::new(steps as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "epoch {prefix} [{bar:40}] {pos}/{len} steps  {rate}",
                )
                .expect("valid template")
                .with_key(
                    "rate",
                    |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.0} steps/s", s.per_sec());
                    },
                )
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("{epoch}/{epochs}"));
            bar
        });
        bar.set_position(step as u64);
        if step == steps {
            // The test pass comes next: no bar over it.
            self.clear();
        }
    }
    fn epoch(&mut self, report: &EpochReport) {
        self.clear();
        println!("{}", report.line(self.epochs));
        self.record(&report.record());
    }

    fn metrics_every(&self) -> u64 {
        self.metrics.as_ref().map_or(0, |m| m.1)
    }

    fn record(&mut self, record: &crate::network::metrics::Record) {
        if let Some((m, _)) = &mut self.metrics {
            if let Err(e) = m.write(record) {
                self.failed.get_or_insert(e);
            }
        }
    }
}

/// Where a run starts: fresh, or from a snapshot (whose settings then win).
///
/// `snapshots` is the locked folder of the process that writes snapshots (rank 0 of an MPI
/// job); every process finds the snapshot to resume in `args.snapshot_dir` by listing it.
/// `world` is the run's replica count; `speaks` whether this process prints.
fn starting_point(
    args: &TrainArgs,
    mut run: RunConfig,
    data: &DataSplit,
    snapshots: Option<&SnapshotDir>,
    world: usize,
    speaks: bool,
) -> Result<(Model, Start, RunConfig)> {
    let Some(resume) = &args.resume else {
        if let Some(dir) = snapshots {
            if dir.latest()?.is_some() {
                return Err(Error::Config(format!(
                    "{} already holds snapshots of a run: pass --resume to continue it, or choose an empty --snapshot-dir",
                    dir.dir.display()
                )));
            }
        }
        let model = match &args.init {
            Some(path) => {
                let loaded = crate::weights::load(path)?;
                if speaks {
                    println!(
                        "starting from {} (a fresh run: epoch 1, step 0)",
                        loaded.describe(path)
                    );
                }
                loaded.model
            }
            None => Model::init_with(run.train.seed, args.hidden.unwrap_or(crate::model::HIDDEN)),
        };
        if !(1..=4096).contains(&model.hidden()) {
            return Err(Error::Config(format!(
                "--init: the weights have {} hidden neurons; this trainer takes 1 to 4,096",
                model.hidden()
            )));
        }
        if let Some(h) = args.hidden.filter(|&h| h != model.hidden()) {
            return Err(Error::Config(format!(
                "--hidden {h}: the --init weights have {} hidden neurons; drop --hidden or pass --hidden {}",
                model.hidden(),
                model.hidden()
            )));
        }
        return Ok((model, Start::FRESH, run));
    };
    let path = match (resume, &args.snapshot_dir) {
        (Some(file), _) => file.clone(),
        (None, Some(dir)) => checkpoint::latest_in(dir)?.ok_or_else(|| {
            Error::Config(format!(
                "--resume: no snapshot in {} to resume from",
                dir.display()
            ))
        })?,
        (None, None) => {
            return Err(Error::Config(
                "--resume needs a snapshot file or a --snapshot-dir to take the latest from".into(),
            ))
        }
    };
    let (model, state) = checkpoint::load(&path)?;
    checkpoint::check_data(&state, &data.train, &path)?;
    // The number format belongs to the run: a resume in another one would not be exact.
    let snapshot_f16 = state.loss_scale.is_some();
    if snapshot_f16 != (run.precision == train::Precision::F16) {
        return Err(Error::snapshot(
            &path,
            format!(
                "the snapshot was trained with --precision {}, and a resumed run keeps it: pass --precision {}",
                if snapshot_f16 { "f16" } else { "f32" },
                if snapshot_f16 { "f16" } else { "f32" }
            ),
        ));
    }
    if let Some(h) = args.hidden.filter(|&h| h != model.hidden()) {
        return Err(Error::snapshot(
            &path,
            format!(
                "the snapshot is of a {} network, this run asks for {} (--hidden {h}): resume without --hidden, or start a new run",
                checkpoint::shape_string(model.hidden()),
                checkpoint::shape_string(h)
            ),
        ));
    }
    // A run resumed from an older snapshot (after a divergence, say) must not mix its files
    // with the newer ones of the run it abandons, nor have --keep delete its own.
    if let Some(dir) = snapshots {
        if let Some((aside, steps)) = dir.set_aside_after(state.global_step)? {
            if speaks {
                println!(
                "note: {} holds {} snapshot(s) newer than the one resumed (steps {}); moved them to {} so this run's own are kept",
                dir.dir.display(),
                steps.len(),
                steps.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", "),
                aside.display()
            );
            }
        }
    }
    let cfg = &mut run.train;
    cfg.seed = state.seed;
    if let Some(b) = args.batch_size.filter(|&b| b != state.batch_size) {
        return Err(Error::Config(format!(
            "--batch-size {b}: the snapshot was trained with batch size {}, and a resumed run keeps it (drop --batch-size)",
            state.batch_size
        )));
    }
    cfg.batch_size = state.batch_size;
    cfg.lr = args.lr.unwrap_or(state.lr);
    // The state must be one this data and batch could have produced (a forged or damaged
    // file with a valid checksum must not name step 2^64 − 1 or skip an epoch).
    let steps = cfg.steps_per_epoch(data.train.len(), state.replicas.max(1));
    if state.next.epoch == 0 || state.next.step >= steps || state.global_step > u64::MAX / 2 {
        return Err(Error::snapshot(
            &path,
            format!(
                "its training state is impossible (next epoch {}, step {}, global step {}; an epoch here has {steps} steps): \
                 the file is damaged: delete it to resume from the one before",
                state.next.epoch, state.next.step, state.global_step
            ),
        ));
    }
    // The replica count sets the global batch, so it may change only where an epoch begins:
    // mid-epoch, the remaining steps were dealt for the old count.
    if state.replicas != world {
        if state.next.step != 0 {
            return Err(Error::Config(format!(
                "{}: this snapshot was taken mid-epoch (epoch {}, step {}) by {} replica(s); resume it with {} replica(s), or resume from a snapshot taken at an epoch's end to change the count",
                path.display(),
                state.next.epoch,
                state.next.step,
                state.replicas,
                state.replicas
            )));
        }
        if speaks {
            println!(
                "note: the snapshot was trained by {} replica(s), this run has {world}: the global batch becomes {}",
                state.replicas,
                cfg.batch_size * world
            );
        }
    }
    if speaks {
        println!(
            "resuming from {}: epoch {}, step {} (seed {}, batch size {}, lr {})",
            path.display(),
            state.next.epoch,
            state.next.step,
            cfg.seed,
            cfg.batch_size,
            cfg.lr
        );
    }
    Ok((
        model,
        Start {
            at: state.next,
            global_step: state.global_step,
            scaler: state
                .loss_scale
                .map(|(scale, good_steps)| train::LossScaler { scale, good_steps }),
        },
        run,
    ))
}

/// Where rank `rank` leaves its trace events for rank 0.
fn rank_part(path: &std::path::Path, rank: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".rank{rank}"));
    PathBuf::from(name)
}

/// This process's place in the run: alone, or a rank of an MPI job.
struct Job {
    rank: usize,
    ranks: usize,
    local_rank: usize,
    #[cfg(feature = "mpi")]
    mpi: Option<crate::parallel::mpi::MpiJob>,
}

impl Job {
    fn start(mpi: bool) -> Result<Job> {
        if !mpi {
            return Ok(Job {
                rank: 0,
                ranks: 1,
                local_rank: 0,
                #[cfg(feature = "mpi")]
                mpi: None,
            });
        }
        #[cfg(feature = "mpi")]
        {
            let job = crate::parallel::mpi::MpiJob::init()?;
            Ok(Job {
                rank: job.rank,
                ranks: job.ranks,
                local_rank: job.local_rank,
                mpi: Some(job),
            })
        }
        #[cfg(not(feature = "mpi"))]
        Err(Error::Config(
            "--mpi: this gpu-train was built without MPI; build it with `cargo build --release --features mpi` \
             (needs libopenmpi-dev, openmpi-bin, libclang-dev and clang)"
                .into(),
        ))
    }

    /// The all-reduce joining `local` replicas here to the rest of the job, if this is one.
    fn all_reduce(&self, local: usize) -> Result<Option<Box<dyn crate::parallel::AllReduce>>> {
        #[cfg(feature = "mpi")]
        if let Some(job) = &self.mpi {
            return Ok(Some(Box::new(job.all_reduce(local)?)));
        }
        let _ = local;
        Ok(None)
    }

    fn barrier(&self) {
        #[cfg(feature = "mpi")]
        if let Some(job) = &self.mpi {
            job.barrier();
        }
    }
}

fn run_train(args: &TrainArgs) -> Result<()> {
    for spec in &args.fault {
        run::parse_fault(spec, &mut Default::default())?;
    }
    if !args.fault.is_empty() && args.mpi {
        return Err(Error::Config(
            "--fault injects into the in-process ring; under MPI the network is MPI's".into(),
        ));
    }
    let trace_steps = crate::network::trace::parse_steps(&args.trace_steps)?;
    for (flag, path) in [("--trace", &args.trace), ("--metrics", &args.metrics)] {
        if let Some(dir) = path
            .as_ref()
            .and_then(|p| p.parent())
            .filter(|d| !d.as_os_str().is_empty() && !d.is_dir())
        {
            return Err(Error::Config(format!(
                "{flag} {}: the folder {} does not exist",
                path.as_ref().expect("given").display(),
                dir.display()
            )));
        }
    }
    if let Some(h) = args.hidden.filter(|h| !(1..=4096).contains(h)) {
        return Err(Error::Config(format!(
            "--hidden {h}: from 1 to 4,096 neurons"
        )));
    }
    args.config().validate()?;
    let job = Job::start(args.mpi)?;
    let speaks = job.rank == 0;
    let mut run = args.config();
    // Under MPI a rank with no --device/--devices takes the GPU of its local rank.
    if args.mpi && args.devices.is_empty() && args.device.is_none() {
        if let Devices::Gpu { adapters, .. } = &mut run.devices {
            let count = crate::gpu::context::adapters().len().max(1);
            *adapters = vec![job.local_rank % count; adapters.len()];
        }
    }
    let world = if run.data_parallel {
        run.replicas() * job.ranks
    } else {
        1
    };
    let data = args.data.load()?;
    // Only the process that writes snapshots (rank 0) takes the folder's lock.
    let snapshots = match &args.snapshot_dir {
        Some(dir) if speaks => Some(SnapshotDir::open(dir, args.keep)?),
        _ => None,
    };
    // Every rank has chosen its snapshot before rank 0 may move or write any.
    job.barrier();
    let (model, start, run) = starting_point(args, run, &data, snapshots.as_ref(), world, speaks)?;
    run.validate()?;
    let cfg = &run.train;
    let mut engines = run.engines(&model, &data)?;
    if run.grad_f16 && args.mpi {
        return Err(Error::Config(
            "--grad-dtype f16 with --mpi: MPI has no 16-bit float sum; use --grad-dtype f32 (or in-process replicas)".into(),
        ));
    }
    let mut replicas = match job.all_reduce(engines.len())? {
        Some(all_reduce) => run.replicas_with(&mut engines, all_reduce)?,
        None => run.replicas_of(&mut engines)?,
    };
    if let Some(path) = &args.trace {
        replicas = replicas.with_trace(crate::network::trace::Trace::new(
            path,
            trace_steps,
            job.rank,
        ));
    }
    if !speaks {
        // The other ranks train quietly; rank 0 speaks for the job (and writes the trace: these
        // ranks leave their events beside it for rank 0 to gather).
        train::train_from(&mut replicas, &data, cfg, start, None, &mut train::Quiet)?;
        if let Some(t) = replicas.take_trace() {
            let part = rank_part(&t.path, job.rank);
            std::fs::write(&part, t.events_json())
                .map_err(|source| Error::Io { path: part, source })?;
        }
        // Every rank meets rank 0 here before it gathers the trace and before MPI is
        // finalised, so no rank leaves while another still talks.
        job.barrier();
        return Ok(());
    }
    print!("{}", crate::explain::summary_for(model.hidden()));
    println!(
        "data: {} ({} training images, {} test images, {:.1} MB of u8 pixels in RAM)",
        data.dir.display(),
        data.train.len(),
        data.test.len(),
        data.train.images.len() as f64 / 1e6
    );
    println!("engine: {}", replicas.describe());
    println!(
        "config: {}, {} steps per epoch{}",
        run.describe(replicas.world()),
        cfg.steps_per_epoch(data.train.len(), replicas.world()),
        match &snapshots {
            Some(d) => format!(
                ", snapshots in {} ({}keep {})",
                d.dir.display(),
                if args.snapshot_every > 0 {
                    format!("every {} steps and each epoch, ", args.snapshot_every)
                } else {
                    "each epoch, ".into()
                },
                d.keep
            ),
            None => String::new(),
        }
    );
    let mut console = Console::new(cfg.epochs);
    if let Some(path) = &args.metrics {
        console.metrics = Some((
            crate::network::metrics::Metrics::create(path, args.resume.is_some())?,
            args.metrics_every,
        ));
    }
    let snap = snapshots.as_ref().map(|dir| train::Snapshots {
        dir,
        every: args.snapshot_every,
    });
    // Ctrl-C stops the run between two steps (a snapshot being written is finished first);
    // a second Ctrl-C stops at once.
    let _ = ctrlc::set_handler(|| {
        if train::STOP.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::process::exit(130);
        }
    });
    let trained = train::train_from(&mut replicas, &data, cfg, start, snap, &mut console);
    if matches!(trained, Err(Error::LinkFault(_))) {
        if let Some(t) = replicas.take_trace() {
            // The timeline up to the fault is what a user wants to look at.
            console.clear();
            t.write(&[], replicas.local(), job.ranks)?;
            println!("trace: {} (up to the fault)", t.path.display());
        }
    }
    let reports = match trained {
        Err(Error::Interrupted(what)) => {
            console.clear();
            let last = match &snapshots {
                Some(d) => match d.latest()? {
                    Some(p) => format!(
                        "the latest snapshot is {}: continue with --resume",
                        p.display()
                    ),
                    None => "no snapshot was written yet".into(),
                },
                None => "no --snapshot-dir was given, so the run cannot be resumed".into(),
            };
            return Err(Error::Interrupted(format!("{what}; {last}")));
        }
        other => other?,
    };
    console.clear();
    if let Some(m) = console.failed.take() {
        return Err(m);
    }
    // Every rank meets here (the others after writing their trace parts).
    job.barrier();
    if let Some(t) = replicas.take_trace() {
        // The other ranks' events, gathered once every rank has written them.
        let mut others = Vec::new();
        for r in 1..job.ranks {
            let part = rank_part(&t.path, r);
            let text = std::fs::read_to_string(&part).map_err(|source| Error::Io {
                path: part.clone(),
                source,
            })?;
            if let Ok(serde_json::Value::Array(v)) = serde_json::from_str(&text) {
                others.extend(v);
            }
            let _ = std::fs::remove_file(&part);
        }
        t.write(&others, replicas.local(), job.ranks)?;
        println!(
            "trace: {} (steps {}..{}; open it in ui.perfetto.dev, or `gpu-train network {}`)",
            t.path.display(),
            t.steps.start,
            t.steps.end,
            t.path.display()
        );
    }
    match reports.last() {
        Some(last) => println!(
            "final test accuracy {:.2}% ({} of {}), test loss {:.4}",
            last.test.accuracy(),
            last.test.correct,
            last.test.seen,
            last.test.mean_loss()
        ),
        None => println!(
            "nothing to do: the snapshot already completed {} epoch(s) and --epochs is {}; pass --epochs {} or more to train further",
            start.at.epoch - 1,
            cfg.epochs,
            start.at.epoch
        ),
    }
    Ok(())
}

fn run_explain(args: &ExplainArgs) -> Result<()> {
    if args.epochs > train::MAX_EPOCHS {
        return Err(Error::Config(format!(
            "--epochs {} is more than gpu-train runs ({})",
            args.epochs,
            train::MAX_EPOCHS
        )));
    }
    print!("{}", crate::explain::chapter2());
    println!();
    let data = args.data.load()?;
    if args.image >= data.test.len() {
        return Err(Error::Config(format!(
            "--image {} is out of range: the test set has {} images",
            args.image,
            data.test.len()
        )));
    }
    let mut engine = CpuEngine::new(Model::init(args.seed), crate::cpu::cores());
    let what = if let Some(path) = &args.weights {
        let loaded = crate::weights::load(path)?;
        engine.set_model(&loaded.model)?;
        format!("the weights of {}", loaded.describe(path))
    } else if args.epochs == 0 {
        format!("freshly initialised weights (seed {})", args.seed)
    } else {
        let cfg = TrainConfig {
            epochs: args.epochs,
            batch_size: 64,
            lr: 0.1,
            seed: args.seed,
        };
        train::train(&mut engine, &data, &cfg, &mut train::Quiet)?;
        format!(
            "weights after {} epoch(s) of CPU training (seed {})",
            args.epochs, args.seed
        )
    };
    let model = engine.model()?;
    print!(
        "{}",
        crate::explain::chapter3(&model, &data.test, args.image, 0.1, &what)
    );
    println!();
    print!("{}", crate::explain::data_parallel(&model, &data.test));
    println!();
    print!("{}", crate::explain::summary_for(model.hidden()));
    Ok(())
}

/// Runs a parsed command line.
pub fn run(cli: &Cli) -> Result<()> {
    match &cli.command {
        None => run_train(&cli.train),
        Some(Command::Devices) => {
            print!("{}", crate::gpu::context::list_text());
            Ok(())
        }
        Some(Command::Explain(args)) => run_explain(args),
        Some(Command::Network(args)) => crate::network::commands::run_network(args),
        Some(Command::AllreduceBench(args)) => crate::network::commands::run_allreduce_bench(args),
        Some(Command::Plot(args)) => crate::network::commands::run_plot(args),
        Some(Command::Bench(args)) => crate::bench::run(args),
        Some(Command::Predict(args)) => {
            let test = if args.index.is_empty() {
                crate::data::Dataset::new(Vec::new(), Vec::new())?
            } else {
                args.data.load()?.test
            };
            print!(
                "{}",
                crate::predict::run(&args.snapshot, &test, &args.index, &args.png)?
            );
            Ok(())
        }
    }
}
