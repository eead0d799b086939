//! The run's settings: what the flags become, checked once, at the command line's edge
//! ([`RunConfig::validate`]), and taken as they are by everything below it (the engines, the
//! replicas, the training loop). Its defaults and limits live here with it.

use crate::data::PIXELS;
use crate::engine::Precision;
use crate::error::{Error, Result};
use crate::gpu::matmul::MatmulVariant;
use crate::model::MAX_HIDDEN;
use crate::parallel::ring::Faults;

/// The most epochs a run may ask for.
pub const MAX_EPOCHS: usize = 1_000_000;
/// The largest batch: 2^20 images (3.3 GB of f32 pixels; far more than any data set here).
pub const MAX_BATCH: usize = 1 << 20;
/// The most replicas one process runs: each opens its own device (or CPU engine) and holds a
/// copy of the model; past this, spread them over processes with --mpi.
pub const MAX_REPLICAS: usize = 64;

/// clap's parser for a replica count: a whole number up to [`MAX_REPLICAS`] (refused here, before
/// anything is sized by it; 0 is left to the caller to refuse or to read as "none").
pub fn replica_count(s: &str) -> std::result::Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if n > MAX_REPLICAS {
        return Err(format!(
            "at most {MAX_REPLICAS} replicas in one process (more: several processes with --mpi)"
        ));
    }
    Ok(n)
}

/// The training defaults, in one place for every command that trains or shows a step (train,
/// bench, explain): the chapter's mini-batch of 64 images, plain SGD at learning rate 0.1.
pub const DEFAULT_BATCH: usize = 64;
pub const DEFAULT_LR: f32 = 0.1;
/// The default seed of the weight initialisation and of each epoch's shuffle.
pub const DEFAULT_SEED: u64 = 42;

/// The validated settings of one training run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f32,
    pub seed: u64,
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::Config("--epochs must be at least 1".into()));
        }
        if self.epochs > MAX_EPOCHS {
            return Err(Error::Config(format!(
                "--epochs {} is more than gpu-train runs ({MAX_EPOCHS}); a run that long is a mistake",
                self.epochs
            )));
        }
        if self.batch_size == 0 {
            return Err(Error::Config("--batch-size must be at least 1".into()));
        }
        if self.batch_size > MAX_BATCH {
            return Err(Error::Config(format!(
                "--batch-size {} is more than gpu-train takes ({MAX_BATCH} images, {} MB of f32 pixels a batch)",
                self.batch_size,
                MAX_BATCH * PIXELS * 4 / 1_000_000
            )));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::Config(format!(
                "--lr must be a positive number, got {}",
                self.lr
            )));
        }
        Ok(())
    }

    /// The global batch of `replicas` replicas: each trains on `batch_size` examples a step.
    pub fn global_batch(&self, replicas: usize) -> Result<usize> {
        self.batch_size.checked_mul(replicas.max(1)).ok_or_else(|| {
            Error::Config(format!(
                "--batch-size {} × {replicas} replicas is too large",
                self.batch_size
            ))
        })
    }

    /// Steps in one epoch over `n` examples with `replicas` replicas (the last batch may be
    /// smaller).
    pub fn steps_per_epoch(&self, n: usize, replicas: usize) -> usize {
        n.div_ceil(self.batch_size.saturating_mul(replicas.max(1)))
    }
}

/// Where the replicas run.
#[derive(Debug, Clone, PartialEq)]
pub enum Devices {
    /// `replicas` CPU replicas, each splitting its step over `threads` cores.
    Cpu { replicas: usize, threads: usize },
    /// One replica per listed adapter index (an index may repeat: several devices opened on
    /// one adapter); `resident` keeps each replica's training data in its VRAM; `kernels`
    /// names the matmul variant (None: measured per adapter).
    Gpu {
        adapters: Vec<usize>,
        resident: bool,
        kernels: Option<String>,
    },
}

/// The validated settings of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    pub train: TrainConfig,
    /// The hidden layer's width: the default network's, or the one of the weights the run
    /// starts from (--init, --resume). The replicas size their gradient buffers from it.
    pub hidden: usize,
    pub devices: Devices,
    /// Train with the three-verb data-parallel step (forward+backward → all-reduce →
    /// update), even for one replica; false: one device with the fused step.
    pub data_parallel: bool,
    /// Overlap the output layer's all-reduce with the hidden layer's backward pass.
    pub overlap: bool,
    /// FP32, or mixed precision (FP16 activations, FP32 masters, dynamic loss scaling).
    pub precision: Precision,
    /// Gradients on the all-reduce's wire as f16 (half the bytes).
    pub grad_f16: bool,
    /// Faults to inject into the in-process all-reduce (`--fault`).
    pub faults: Faults,
}

impl RunConfig {
    /// Replicas in this process.
    pub fn replicas(&self) -> usize {
        match &self.devices {
            Devices::Cpu { replicas, .. } => *replicas,
            Devices::Gpu { adapters, .. } => adapters.len(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.train.validate()?;
        if !(1..=MAX_HIDDEN).contains(&self.hidden) {
            return Err(Error::Config(format!(
                "--hidden {}: from 1 to {MAX_HIDDEN} neurons",
                self.hidden
            )));
        }
        let n = self.replicas();
        if n == 0 {
            return Err(Error::Config("--replicas must be at least 1".into()));
        }
        if n > MAX_REPLICAS {
            return Err(Error::Config(format!(
                "{n} replicas in one process is more than this trainer supports ({MAX_REPLICAS})"
            )));
        }
        if self.precision == Precision::F16 && !self.data_parallel {
            return Err(Error::Config(
                "--precision f16 trains with the separated step".into(),
            ));
        }
        if self.grad_f16 && !self.data_parallel {
            return Err(Error::Config(
                "--grad-dtype f16 compresses the all-reduce of data-parallel replicas: pass --devices or --replicas too".into(),
            ));
        }
        if n > 1 && !self.data_parallel {
            return Err(Error::Config(
                "several replicas need the data-parallel step".into(),
            ));
        }
        if let Devices::Cpu { threads, replicas } = &self.devices {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            if *threads == 0 {
                return Err(Error::Config("--threads must be at least 1".into()));
            }
            // Each replica runs part 0 of its step on the calling thread and keeps threads − 1
            // helpers that busy-wait between steps: all of them together must fit the cores.
            if (threads - 1) * replicas + 1 > cores {
                return Err(Error::Config(format!(
                    "--threads {threads} with {replicas} replica(s) needs {} threads (the helpers busy-wait) but this process may run on {cores} core(s) (its CPU affinity, as taskset or mpirun's binding set it: under mpirun each rank is bound to its own core(s) unless started with --bind-to none): more threads than cores only slow a step down",
                    (threads - 1) * replicas + 1
                )));
            }
        }
        if let Devices::Gpu {
            kernels: Some(k), ..
        } = &self.devices
        {
            let v = MatmulVariant::by_name(k)?;
            // An f16 member named under f32 would run its f32 sibling without a word.
            if v.elems != crate::abi::Elems::F32 && self.precision == Precision::F32 {
                return Err(Error::Config(format!(
                    "--kernels {k} reads f16: pass --precision f16 to run it, or name its f32 shape ({}) under f32",
                    v.base
                )));
            }
        }
        if self.overlap && !self.data_parallel {
            return Err(Error::Config(
                "--overlap overlaps the all-reduce of data-parallel replicas: pass --devices or --replicas too".into(),
            ));
        }
        self.train.global_batch(n)?;
        Ok(())
    }

    /// One line for the start-up log; `n` replicas in the whole job.
    pub fn describe(&self, n: usize) -> String {
        format!(
            "epochs {}, batch size {}{}, lr {}, seed {}{}",
            self.train.epochs,
            self.train.batch_size,
            if n > 1 {
                format!(" per replica × {n} = global batch {}", self.train.batch_size * n)
            } else {
                String::new()
            },
            self.train.lr,
            self.train.seed,
            match (self.precision, self.grad_f16) {
                (Precision::F16, true) => ", precision f16 (f16 on the wire)",
                (Precision::F16, false) => ", precision f16",
                (Precision::F32, true) => ", gradients f16 on the wire",
                (Precision::F32, false) => "",
            }
        )
    }

}
