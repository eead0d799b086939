//! What a run uses: the validated configuration the command line (and `bench`) builds, and the
//! engines it makes. No raw flag goes past this point: a resumed run's batch size, for
//! example, comes from its snapshot and is what the engines are built with.

use crate::cpu::engine::CpuEngine;
use crate::data::{self, DataSplit};
use crate::engine::{Engine, Precision};
use crate::error::{Error, Result};
use crate::gpu::matmul::MatmulVariant;
use crate::gpu::context::Gpu;
use crate::gpu::engine::state::GpuEngine;
use crate::gpu::buffers::GpuOptions;
use crate::model::Model;
use crate::parallel::ring::{Faults, Ring};
use crate::parallel::all_reduce::AllReduce;
use crate::train::Start;
use crate::engine::LossScaler;
use crate::train::replicas::Replicas;
use crate::config::{Devices, RunConfig};
use clap::Args;
use std::path::PathBuf;

impl RunConfig {
    /// Refuses a `--fault` that would silently do nothing: with nothing to send messages
    /// between (one replica, one rank), on a replica that does not exist, or at a global step
    /// past the end of this run (the last step of its last epoch, with `world` replicas sharing
    /// each global batch of a `train_len`-image set, counting on from `start`). Faults act on
    /// the ring between the in-process replicas, or, in an MPI job of `ranks` ranks, between
    /// the ranks (replica = rank).
    pub fn check_faults(
        &self,
        train_len: usize,
        (world, ranks, mpi): (usize, usize, bool),
        start: &Start,
    ) -> Result<()> {
        let f = &self.faults;
        // Under --mpi the faults act on the ring between the ranks only (a rank's own replicas
        // sum in memory first): a job of one rank has no such messages, whatever its replicas.
        let (parties, what) = match mpi {
            false => (self.replicas(), "replicas"),
            true => (ranks, "ranks (a fault's replica is a rank)"),
        };
        if (!f.lose.is_empty() || !f.corrupt.is_empty() || f.slow.is_some()) && parties < 2 {
            return Err(Error::Config(
                "--fault acts on the all-reduce's messages: pass --devices or --replicas with 2 or more, or run 2 or more --mpi ranks (under --mpi it acts between ranks only)".into(),
            ));
        }
        for (kind, at) in [("lose-message", &f.lose), ("corrupt-message", &f.corrupt)] {
            if let Some((_, r)) = at.iter().find(|&&(_, r)| r >= parties) {
                return Err(Error::Config(format!(
                    "--fault {kind}@…:{r}: there are {what} 0 to {} only",
                    parties - 1
                )));
            }
        }
        let per = self.train.steps_per_epoch(train_len, world) as u64;
        let epochs_left = (self.train.epochs + 1).saturating_sub(start.at.epoch) as u64;
        let end = start.global_step + (epochs_left * per).saturating_sub(start.at.step as u64);
        let f = &self.faults;
        for (what, at) in [("lose-message", &f.lose), ("corrupt-message", &f.corrupt)] {
            if let Some(&(step, r)) = at.iter().find(|&&(s, _)| s >= end) {
                return Err(Error::Config(format!(
                    "--fault {what}@{step}:{r}: this run's last global step is {} ({} epoch(s) of {per} steps, counted from 0); choose a step up to it",
                    end.saturating_sub(1),
                    self.train.epochs
                )));
            }
        }
        Ok(())
    }

    /// The engines, every one starting from `model`.
    pub fn engines(&self, model: &Model, data: &DataSplit) -> Result<Vec<Box<dyn Engine>>> {
        match &self.devices {
            Devices::Cpu { replicas, threads } => Ok((0..*replicas)
                .map(|_| {
                    Box::new(CpuEngine::new(model.clone(), *threads).with_precision(self.precision))
                        as Box<dyn Engine>
                })
                .collect()),
            Devices::Gpu {
                adapters,
                resident,
                kernels,
            } => adapters
                .iter()
                .map(|&a| {
                    let kernels = match kernels {
                        Some(k) => Some(MatmulVariant::by_name(k)?.name),
                        None => None,
                    };
                    let opts = GpuOptions {
                        batch: self.train.batch_size,
                        resident: *resident,
                        kernels,
                        precision: self.precision,
                        ..GpuOptions::default()
                    };
                    Ok(
                        Box::new(GpuEngine::new(Gpu::open(a)?, model, opts, &data.train)?)
                            as Box<dyn Engine>,
                    )
                })
                .collect(),
        }
    }

    /// The in-process all-reduce for these replicas.
    pub fn all_reduce(&self) -> Box<dyn AllReduce> {
        Box::new(
            Ring::new(self.replicas())
                .with_f16_wire(self.grad_f16)
                .with_faults(self.faults.clone()),
        )
    }

    /// Mixed precision's loss scaling, for the replicas.
    fn scaled<'a>(&self, r: Replicas<'a>) -> Replicas<'a> {
        match self.precision {
            Precision::F16 => r.with_loss_scaling(LossScaler::new(LossScaler::INITIAL)),
            Precision::F32 => r,
        }
    }

    /// Joins `engines` as data-parallel replicas with the given all-reduce (MPI's, say).
    pub fn replicas_with<'a>(
        &self,
        engines: &'a mut [Box<dyn Engine>],
        all_reduce: Box<dyn AllReduce>,
    ) -> Result<Replicas<'a>> {
        let list: Vec<&'a mut dyn Engine> = engines
            .iter_mut()
            .map(|e| -> &'a mut dyn Engine { e.as_mut() })
            .collect();
        Ok(self.scaled(Replicas::data_parallel(list, all_reduce, self.overlap, self.hidden)?))
    }

    /// Joins `engines` (made by [`RunConfig::engines`]) as this configuration says.
    pub fn replicas_of<'a>(&self, engines: &'a mut [Box<dyn Engine>]) -> Result<Replicas<'a>> {
        let list: Vec<&'a mut dyn Engine> = engines
            .iter_mut()
            .map(|e| -> &'a mut dyn Engine { e.as_mut() })
            .collect();
        if self.data_parallel {
            Ok(self.scaled(Replicas::data_parallel(
                list,
                self.all_reduce(),
                self.overlap,
                self.hidden,
            )?))
        } else {
            let mut list = list;
            Ok(Replicas::one(list.remove(0)))
        }
    }
}

/// Default CPU threads per replica: the cores shared out among the replicas (they take turns
/// within a step, but each replica's workers spin for a while after its turn).
pub fn default_threads(replicas: usize) -> usize {
    (crate::cpu::cores() / replicas.max(1)).max(1)
}

/// Where the data comes from.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// Folder with the four MNIST-format files (train-images-idx3-ubyte[.gz], ...), e.g. the full
    /// MNIST or /usr/share/datasets/fashion-mnist. Default: the MNIST sample in data/mnist.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Use only the first N training images (0 = all).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub limit: usize,
}

impl DataArgs {
    /// The folder: --data-dir, or the bundled sample.
    pub fn dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(data::bundled_dir)
    }

    /// The data files the folder holds (inputs no output may overwrite).
    pub fn files(&self) -> Vec<PathBuf> {
        data::files_in(&self.dir())
    }

    /// The first `limit` test images only (`predict`, `explain`).
    pub fn load_test(&self, limit: usize) -> Result<data::Dataset> {
        data::load_test_limited(&self.dir(), limit)
    }

    pub fn load(&self) -> Result<DataSplit> {
        let dir = self.data_dir.clone().unwrap_or_else(data::bundled_dir);
        // --limit reads only what it keeps: a file claiming millions of images costs nothing
        // past the first N.
        data::load_dir_limited(&dir, (self.limit > 0).then_some(self.limit))
    }
}

/// Parses one `--fault`: `lose-message@STEP[:REPLICA]`, `corrupt-message@STEP[:REPLICA]` (global
/// step from 0, replica 0 if not given) or `slow-link=DURATION` (`5ms`, `0.2s`).
pub fn parse_fault(spec: &str, faults: &mut Faults) -> Result<()> {
    let bad = |why: &str| {
        Error::Config(format!(
            "--fault {spec}: {why}; expected lose-message@STEP[:REPLICA], corrupt-message@STEP[:REPLICA] or slow-link=DURATION (e.g. 5ms)"
        ))
    };
    if let Some(d) = spec.strip_prefix("slow-link=") {
        let secs = crate::parallel::duration::parse_duration(d).map_err(|e| {
            Error::Config(format!(
                "--fault {spec}: {}",
                e.to_string().trim_start_matches("gpu-train: ")
            ))
        })?;
        if !(secs > 0.0 && secs <= 10.0) {
            return Err(bad("the delay must be above 0 and at most 10 s"));
        }
        if faults.slow.is_some() {
            return Err(bad("give one slow-link: it delays every message"));
        }
        faults.slow = Some(std::time::Duration::from_secs_f64(secs));
        return Ok(());
    }
    let (kind, at) = spec.split_once('@').ok_or_else(|| bad("no @STEP"))?;
    let (step, replica) = match at.split_once(':') {
        Some((s, r)) => (
            s,
            r.parse::<usize>()
                .map_err(|_| bad("not a replica number"))?,
        ),
        None => (at, 0),
    };
    let step: u64 = step.parse().map_err(|_| bad("not a step number"))?;
    match kind {
        "lose-message" => faults.lose.push((step, replica)),
        "corrupt-message" => faults.corrupt.push((step, replica)),
        _ => return Err(bad("unknown fault")),
    }
    Ok(())
}
