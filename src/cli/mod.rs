//! The command line: clap definitions (their doc comments are the `--help` text) and the
//! code that turns flags into a validated configuration and runs it.

use crate::cpu::engine::CpuEngine;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::run::DataArgs;
use crate::train;
use crate::config::TrainConfig;
use clap::{Args, CommandFactory as _, Parser, Subcommand};
use std::path::PathBuf;

/// `println!` for a training run's lines. A training run ignores SIGPIPE (so its snapshots are
/// written whatever happens to its reader), and `println!` panics when the reader has gone
/// (`gpu-train | head -3`): this writes and lets a failed write go, so the run trains on,
/// quietly, to its end.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod console;
mod job;
pub mod packaging;
mod start;
pub mod train_args;
mod train_cmd;
pub mod usage;

use train_args::TrainArgs;

use train_cmd::run_train;

/// Train a 784-128-10 MNIST classifier on a GPU through wgpu compute shaders, or on the CPU.
///
/// With no subcommand, trains: on GPU adapter 0 by default, on the MNIST sample bundled
/// with the repository unless --data-dir is given.
#[derive(Debug, Parser)]
#[command(
    name = "gpu-train",
    version,
    args_conflicts_with_subcommands = true,
    allow_negative_numbers = true,
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub train: TrainArgs,
}

/// The end of `gpu-train --help`: a few runs to start from.
const EXAMPLES: &str = "\
Examples:
  gpu-train --device cpu --epochs 3         train on the CPU (the same as --cpu)
  gpu-train --device 1                      train on GPU adapter 1 (`gpu-train devices` lists them)
  gpu-train --snapshot-dir snaps --resume   continue from the latest snapshot in snaps/
  gpu-train --devices 0,0,0,0               4 replicas on adapter 0, summed by a ring all-reduce
  gpu-train --devices 0,0 --trace run.json && gpu-train network run.json --link 10gbit
                                            trace 2 replicas, then draw a replica's link at 10 Gbit/s
  gpu-train predict snaps/snapshot-000001570.safetensors --index 0 --show
                                            classify test image 0, with the digit drawn in text";

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
    Network(crate::network::inputs::NetworkArgs),
    /// Time the ring all-reduce over message sizes from 8 B up, in nccl-tests' terms (algbw,
    /// busbw).
    AllreduceBench(crate::network::allreduce_bench::AllreduceBenchArgs),
    /// Draw a --metrics file: loss and accuracy by epoch and by step (PNG and SVG).
    Plot(crate::network::plot_cmd::PlotArgs),
    /// Print a completion script for SHELL (bash, zsh, fish, elvish, powershell) to stdout,
    /// e.g. `gpu-train completions bash > ~/.local/share/bash-completion/completions/gpu-train`.
    Completions(packaging::CompletionsArgs),
    /// Print the manual page (roff) to stdout, or write gpu-train.1 and one page per subcommand
    /// into --out DIR, e.g. `gpu-train man | man -l -`.
    Man(packaging::ManArgs),
    /// (scripts/lab) Sample the counters of every link of a lab's fabric until stopped.
    #[command(hide = true)]
    LabLinks(crate::network::lab::LabLinksArgs),
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
    /// An image to classify, read (never written): a 28x28 PNG of a light digit on a black
    /// background, as MNIST draws them (repeatable; --png is the same flag).
    #[arg(long, value_name = "FILE.png", alias = "png")]
    pub image_file: Vec<PathBuf>,
    /// Draw each image in text above its table: 28 lines of 28 characters, darker to lighter
    /// as " .:-=+*#%@".
    #[arg(long)]
    pub show: bool,
    /// Folder with the MNIST-format test files (t10k-images-idx3-ubyte[.gz] and its labels)
    /// for --index. Default: the MNIST sample in data/mnist.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
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
    #[arg(long, default_value_t = crate::config::DEFAULT_SEED)]
    pub seed: u64,
    #[command(flatten)]
    pub data: DataArgs,
}

fn run_explain(args: &ExplainArgs) -> Result<()> {
    if args.epochs > crate::config::MAX_EPOCHS {
        return Err(Error::Config(format!(
            "--epochs {} is more than gpu-train runs ({})",
            args.epochs,
            crate::config::MAX_EPOCHS
        )));
    }
    print!("{}", crate::explain::chapter2::chapter2());
    println!();
    // Training (--epochs) needs both sets; otherwise only the test images shown are read: the
    // one of chapter 3 and the global batch of the data-parallel example.
    let shown = args.image.saturating_add(1).max(crate::config::DEFAULT_BATCH);
    let data = match args.epochs {
        0 => crate::data::DataSplit {
            train: crate::data::Dataset::new(Vec::new(), Vec::new())?,
            test: args.data.load_test(shown)?,
            dir: args.data.dir(),
        },
        _ => args.data.load()?,
    };
    let test = &data.test;
    if args.image >= test.len() {
        return Err(Error::Config(format!(
            "--image {} is out of range: the test set has {} images",
            args.image,
            test.len()
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
            batch_size: crate::config::DEFAULT_BATCH,
            lr: crate::config::DEFAULT_LR,
            seed: args.seed,
        };
        train::train(&mut engine, &data, &cfg, &mut crate::train::report::Quiet)?;
        format!(
            "weights after {} epoch(s) of CPU training (seed {})",
            args.epochs, args.seed
        )
    };
    let model = engine.model()?;
    print!(
        "{}",
        crate::explain::chapter3::chapter3(&model, test, args.image, crate::config::DEFAULT_LR.into(), &what)
    );
    println!();
    print!("{}", crate::explain::data_parallel::data_parallel(&model, test));
    println!();
    print!("{}", crate::explain::chapter3::summary_for(model.hidden()));
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
        Some(Command::Network(args)) => crate::network::network_cmd::run_network(args),
        Some(Command::AllreduceBench(args)) => crate::network::allreduce_bench::run_allreduce_bench(args),
        Some(Command::Plot(args)) => crate::network::plot_cmd::run_plot(args),
        Some(Command::LabLinks(args)) => crate::network::lab::run_lab_links(args),
        Some(Command::Bench(args)) => crate::bench::run(args),
        Some(Command::Predict(args)) => {
            // Only the test images up to the highest index asked for are read.
            let data = DataArgs {
                data_dir: args.data_dir.clone(),
                limit: 0,
            };
            let test = match args.index.iter().max() {
                None => crate::data::Dataset::new(Vec::new(), Vec::new())?,
                Some(&last) => data.load_test(last.saturating_add(1))?,
            };
            let images = crate::predict::Images {
                test: &test,
                indices: &args.index,
                files: &args.image_file,
                show: args.show,
            };
            print!("{}", crate::predict::run(&args.snapshot, &images)?);
            Ok(())
        }
        Some(Command::Completions(args)) => packaging::completions(Cli::command(), args),
        Some(Command::Man(args)) => packaging::man(Cli::command(), args),
    }
}
