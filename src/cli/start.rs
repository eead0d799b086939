//! Where a run starts: fresh weights (drawn from the seed, or --init's), or a snapshot to
//! resume, whose settings then win over the flags' defaults.

use super::train_args::TrainArgs;
use crate::checkpoint;
use crate::snapshots::SnapshotDir;
use crate::config::RunConfig;
use crate::data::DataSplit;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::train::Start;
use std::path::{Path, PathBuf};

/// Where a run starts: fresh, or from a snapshot (whose settings then win; with what it was
/// trained on).
///
/// `snapshots` is the locked folder of the process that writes snapshots (rank 0 of an MPI
/// job); every process finds the snapshot to resume in `args.snapshot_dir` by listing it.
/// `world` is the run's replica count; `speaks` whether this process prints.
pub(super) fn starting_point(
    args: &TrainArgs,
    run: RunConfig,
    data: &DataSplit,
    snapshots: Option<&SnapshotDir>,
    world: usize,
    speaks: bool,
) -> Result<(Model, Start, RunConfig, Option<String>)> {
    match &args.resume {
        None => Ok((
            fresh_model(args, &run, snapshots, speaks)?,
            Start::FRESH,
            run,
            None,
        )),
        Some(resume) => {
            let path = snapshot_to_resume(resume.as_deref(), args.snapshot_dir.as_deref())?;
            resume_from(&path, args, run, data, snapshots, world, speaks)
        }
    }
}

/// The weights of a fresh run: --init's, or drawn from the seed; refused when the snapshot
/// folder already holds another run's snapshots.
fn fresh_model(
    args: &TrainArgs,
    run: &RunConfig,
    snapshots: Option<&SnapshotDir>,
    speaks: bool,
) -> Result<Model> {
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
                say!(
                    "starting from {} (a fresh run: epoch 1, step 0)",
                    loaded.describe(path)
                );
            }
            loaded.model
        }
        None => Model::init_with(run.train.seed, run.hidden),
    };
    if !(1..=crate::model::MAX_HIDDEN).contains(&model.hidden()) {
        return Err(Error::Config(format!(
            "--init: the weights have {} hidden neurons; this trainer takes 1 to {}",
            model.hidden(),
            crate::model::MAX_HIDDEN
        )));
    }
    if let Some(h) = args.hidden.filter(|&h| h != model.hidden()) {
        return Err(Error::Config(format!(
            "--hidden {h}: the --init weights have {} hidden neurons; drop --hidden or pass --hidden {}",
            model.hidden(),
            model.hidden()
        )));
    }
    Ok(model)
}

/// The snapshot `--resume [FILE]` names: the file, or the latest in the snapshot folder.
fn snapshot_to_resume(file: Option<&Path>, dir: Option<&Path>) -> Result<PathBuf> {
    match (file, dir) {
        (Some(file), _) => Ok(file.to_path_buf()),
        (None, Some(dir)) => crate::snapshots::latest_in(dir)?.ok_or_else(|| {
            Error::Config(format!(
                "--resume: no snapshot in {} to resume from",
                dir.display()
            ))
        }),
        (None, None) => Err(Error::Config(
            "--resume needs a snapshot file or a --snapshot-dir to take the latest from".into(),
        )),
    }
}

/// A run resumed from the snapshot at `path`: its weights, where it stopped, the run's
/// settings with the snapshot's seed, batch size and (unless --lr says otherwise) lr, and what
/// the snapshot was trained on.
fn resume_from(
    path: &Path,
    args: &TrainArgs,
    mut run: RunConfig,
    data: &DataSplit,
    snapshots: Option<&SnapshotDir>,
    world: usize,
    speaks: bool,
) -> Result<(Model, Start, RunConfig, Option<String>)> {
    let (model, state) = checkpoint::load(path)?;
    checkpoint::check_data(&state, &data.train, path)?;
    check_snapshot_matches_flags(path, args, &run, &model, &state)?;
    // A run resumed from an older snapshot (after a divergence, say) must not mix its files
    // with the newer ones of the run it abandons, nor have --keep delete its own.
    if let Some(dir) = snapshots {
        if let Some((aside, steps)) = dir.set_aside_after(state.global_step)? {
            if speaks {
                say!(
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
    cfg.batch_size = state.batch_size;
    cfg.lr = args.lr.unwrap_or(state.lr);
    check_snapshot_position(path, cfg, &state, data.train.len(), world, speaks)?;
    if speaks {
        say!(
            "resuming from {}: epoch {}, step {} (seed {}, batch size {}, lr {})",
            path.display(),
            state.next.epoch,
            state.next.step,
            cfg.seed,
            cfg.batch_size,
            cfg.lr
        );
    }
    let start = Start {
        at: state.next,
        global_step: state.global_step,
        scaler: state
            .loss_scale
            .map(|(scale, good_steps)| crate::engine::LossScaler { scale, good_steps }),
    };
    Ok((model, start, run, state.trained_on))
}

/// Refuses flags that contradict the snapshot: its precision, its network's shape and its
/// batch size belong to the run, and a resumed run keeps them.
fn check_snapshot_matches_flags(
    path: &Path,
    args: &TrainArgs,
    run: &RunConfig,
    model: &Model,
    state: &checkpoint::TrainState,
) -> Result<()> {
    // The number format belongs to the run: a resume in another one would not be exact.
    let snapshot_f16 = state.loss_scale.is_some();
    if snapshot_f16 != (run.precision == crate::engine::Precision::F16) {
        let was = if snapshot_f16 { "f16" } else { "f32" };
        return Err(Error::snapshot(
            path,
            format!("the snapshot was trained with --precision {was}, and a resumed run keeps it: pass --precision {was}"),
        ));
    }
    if let Some(h) = args.hidden.filter(|&h| h != model.hidden()) {
        return Err(Error::snapshot(
            path,
            format!(
                "the snapshot is of a {} network, this run asks for {} (--hidden {h}): resume without --hidden, or start a new run",
                checkpoint::shape_string(model.hidden()),
                checkpoint::shape_string(h)
            ),
        ));
    }
    if let Some(b) = args.batch_size.filter(|&b| b != state.batch_size) {
        return Err(Error::Config(format!(
            "--batch-size {b}: the snapshot was trained with batch size {}, and a resumed run keeps it (drop --batch-size)",
            state.batch_size
        )));
    }
    Ok(())
}

/// Refuses a snapshot position this data and batch could not have produced, and a change of
/// replica count mid-epoch; notes a change at an epoch's start (it changes the global batch).
fn check_snapshot_position(
    path: &Path,
    cfg: &crate::config::TrainConfig,
    state: &checkpoint::TrainState,
    train_len: usize,
    world: usize,
    speaks: bool,
) -> Result<()> {
    // A forged or damaged file with a valid checksum must not name step 2^64 − 1 or skip an
    // epoch.
    let steps = cfg.steps_per_epoch(train_len, state.replicas.max(1));
    if state.next.epoch == 0 || state.next.step >= steps || state.global_step > u64::MAX / 2 {
        return Err(Error::snapshot(
            path,
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
            say!(
                "note: the snapshot was trained by {} replica(s), this run has {world}: the global batch becomes {}",
                state.replicas,
                cfg.batch_size * world
            );
        }
    }
    Ok(())
}

