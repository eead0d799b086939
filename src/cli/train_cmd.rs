//! `gpu-train` (the train command): where a run starts, and the run itself.

use super::console::Console;
use super::job::{rank_part, Job};
use super::start::starting_point;
use super::train_args::TrainArgs;
use crate::snapshots::SnapshotDir;
use crate::data::DataSplit;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::config::{Devices, RunConfig};
use crate::network::metrics::RunInfo;
use crate::train::{self, Start};
use std::path::Path;

/// The train command: flags checked, then the run, alone or as one rank of an MPI job. Under
/// MPI a rank that fails prints its reason and ends the whole job (MPI_Abort): the other
/// ranks would otherwise wait for it in a collective forever.
pub(super) fn run_train(args: &TrainArgs) -> Result<()> {
    // The job first: under mpirun a refusal of the flags then names the rank that made it.
    let job = Job::start(args.mpi)?;
    let result = checked_flags(args)
        .and_then(|(run, trace_steps)| train_in_job(args, run, trace_steps, &job));
    job.finish(result)
}

/// The run the flags ask for and the steps to trace, with every output path checked, before
/// anything is read or written.
fn checked_flags(args: &TrainArgs) -> Result<(RunConfig, std::ops::Range<u64>)> {
    let run = args.config()?;
    let trace_steps = crate::network::trace::parse_steps(&args.trace_steps)?;
    for (flag, path) in [("--trace", &args.trace), ("--metrics", &args.metrics)] {
        if let Some(p) = path {
            crate::files::check_writable(p, flag)?;
        }
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
    if let Some(dir) = &args.tensorboard {
        crate::network::tensorboard::check_dir(dir)?;
    }
    check_train_paths(args)?;
    Ok((run, trace_steps))
}

/// The global steps the trace holds ([`crate::network::trace::steps_in_run`]), given the steps
/// this run trains: from where it starts to the end of its last epoch.
fn trace_range(
    args: &TrainArgs,
    run: &RunConfig,
    data: &DataSplit,
    world: usize,
    start: Start,
    steps: &std::ops::Range<u64>,
) -> Result<std::ops::Range<u64>> {
    let per = run.train.steps_per_epoch(data.train.len(), world) as u64;
    let epochs_left = (run.train.epochs + 1).saturating_sub(start.at.epoch) as u64;
    let end = start.global_step + (epochs_left * per).saturating_sub(start.at.step as u64);
    let named = (args.trace_steps != super::train_args::DEFAULT_TRACE_STEPS).then(|| steps.clone());
    crate::network::trace::steps_in_run(named, start.global_step..end)
}

/// What the run reads against what it writes, in the one place every command checks them.
fn check_train_paths(args: &TrainArgs) -> Result<()> {
    use crate::files::Output;
    let data = args.data.files();
    let mut inputs: Vec<(&str, &Path)> = data.iter().map(|p| ("--data-dir", p.as_path())).collect();
    if let Some(p) = &args.init {
        inputs.push(("--init", p));
    }
    if let Some(Some(p)) = &args.resume {
        inputs.push(("--resume", p));
    }
    let mut outputs = Vec::new();
    if let Some(p) = &args.trace {
        outputs.push(Output::File("--trace", p));
    }
    if let Some(p) = &args.metrics {
        outputs.push(Output::File("--metrics", p));
    }
    if let Some(d) = &args.snapshot_dir {
        outputs.push(Output::Snapshots(d));
    }
    crate::files::check_paths(&inputs, &outputs)
}

/// The run on this process: its data, its starting point, its replicas, the training, and
/// what rank 0 prints and writes.
fn train_in_job(
    args: &TrainArgs,
    mut run: RunConfig,
    trace_steps: std::ops::Range<u64>,
    job: &Job,
) -> Result<()> {
    let speaks = job.rank == 0;
    let world = place_rank(args, &mut run, job)?;
    let data = args.data.load()?;
    // Only the process that writes snapshots (rank 0) takes the folder's lock.
    let snapshots = match &args.snapshot_dir {
        Some(dir) if speaks => Some(SnapshotDir::open(dir, args.keep)?),
        _ => None,
    };
    let (model, start, mut run, trained_on) =
        starting_point(args, run, &data, snapshots.as_ref(), world, speaks)?;
    // The flags were checked in TrainArgs::config; what a snapshot replaced them with was
    // checked as it was read (checkpoint::TrainState::validate); the width is the weights'.
    run.hidden = model.hidden();
    run.check_faults(data.train.len(), (world, job.ranks, args.mpi), &start)?;
    let trace_steps = trace_range(args, &run, &data, world, start, &trace_steps)?;
    // Every rank has checked its own input; now the ranks check they agree, before any
    // gradient is exchanged. Every rank has chosen its snapshot before rank 0 moves or writes any.
    job.agree(&job_fields(args, &run, &model, &data, start))?;
    let mut trace = args
        .trace
        .as_ref()
        .map(|path| crate::network::trace::Trace::new(path, trace_steps, job.rank))
        .transpose()?;
    let nic = nic_sampler(args)?;
    if let (Some(t), Some(n)) = (trace.as_mut(), nic.as_ref()) {
        t.follow_with(n);
    }
    let mut engines = run.engines(&model, &data)?;
    let mut replicas = match job.all_reduce(engines.len(), args.across_ranks(), &run.faults)? {
        Some(all_reduce) => run.replicas_with(&mut engines, all_reduce)?,
        None => run.replicas_of(&mut engines)?,
    };
    let local = replicas.local();
    if let Some(t) = trace.as_mut() {
        replicas = replicas.with_timeline(t);
    }
    if !speaks {
        train::train_from(
            &mut replicas,
            &data,
            &run.train,
            start,
            None,
            &mut crate::train::report::Quiet,
        )?;
        drop(replicas);
        return finish_quiet_rank(trace, nic, job);
    }
    print_start(args, &run, &model, &data, &replicas, snapshots.as_ref());
    if let Some(was) = trained_on.filter(|was| *was != replicas.arithmetic()) {
        say!(
            "note: the snapshot was trained on {was}; this run goes on on {}: correct, but from here its rounding differs, so the weights will not be bit-identical to an uninterrupted run on the first",
            replicas.arithmetic()
        );
    }
    let mut console = Console::new(run.train.epochs);
    console.metrics = open_metrics(args, start, RunInfo::of(&run, &replicas, start))?;
    on_ctrl_c(args);
    let trained = watched(args, &mut replicas, &data, &run, start, &snapshots, &mut console);
    drop(replicas);
    add_nic(&mut trace, nic, job.rank);
    console.clear();
    let reports = match trained {
        Err(Error::LinkFault(what)) => {
            if let Some(t) = &mut trace {
                // The timeline up to the fault is what a user wants to look at.
                t.write(&[], local, job.ranks)?;
                say!("trace: {} (up to the fault)", t.path.display());
            }
            return Err(Error::LinkFault(what));
        }
        Err(Error::Interrupted(what)) => {
            return Err(Error::Interrupted(format!(
                "{what}; {}",
                resume_hint(snapshots.as_ref())?
            )))
        }
        other => other?,
    };
    if let Some(m) = console.failed.take() {
        return Err(m);
    }
    // Every rank meets here (the others after writing their trace parts).
    job.barrier();
    if let Some(t) = &mut trace {
        write_trace(t, local, job.ranks)?;
    }
    print_end(&reports, &run, start);
    Ok(())
}

/// Rank 0's training, watched by the console (and --metrics) and by --tensorboard; a failed
/// write of either is left in `console.failed`.
fn watched(
    args: &TrainArgs,
    replicas: &mut crate::train::replicas::Replicas,
    data: &DataSplit,
    run: &RunConfig,
    start: Start,
    snapshots: &Option<SnapshotDir>,
    console: &mut Console,
) -> Result<Vec<crate::train::report::EpochReport>> {
    let board = args
        .tensorboard
        .as_deref()
        .map(crate::network::tensorboard::TensorBoard::create)
        .transpose()?;
    let snap = snapshots.as_ref().map(|dir| train::Snapshots {
        dir,
        every: args.snapshot_every,
    });
    let mut watch = crate::network::tensorboard::WithTensorBoard {
        inner: console,
        board,
        every: args.metrics_every,
        failed: None,
    };
    let trained = train::train_from(replicas, data, &run.train, start, snap, &mut watch);
    if let Some(e) = watch.failed.take() {
        console.failed.get_or_insert(e);
    }
    trained
}

/// Ctrl-C (or SIGTERM) stops the run between two steps (a snapshot being written is finished
/// first); a second one stops at once. Under mpirun the signal reaches mpirun, which ends every
/// rank itself (SIGTERM, then SIGKILL) moments later: no rank can finish its step in step with
/// the others, so rank 0 says at once where the job can be resumed from, and ends.
fn on_ctrl_c(args: &TrainArgs) {
    let mpi_snapshots = args.mpi.then(|| args.snapshot_dir.clone());
    let _ = ctrlc::set_handler(move || {
        if let Some(dir) = &mpi_snapshots {
            crate::error::say_error(&format!(
                "rank 0 stopped by a signal (Ctrl-C, or mpirun ending the job); {}",
                resume_hint_in(dir.as_deref())
            ));
            std::process::exit(130);
        }
        if train::STOP.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::process::exit(130);
        }
    });
}

/// --nic checked (it needs somewhere to go, and an interface that exists), and its sampler
/// started when there is a trace to sample into.
fn nic_sampler(args: &TrainArgs) -> Result<Option<crate::network::nic::NicSampler>> {
    let Some(name) = &args.nic else {
        return Ok(None);
    };
    if args.trace.is_none() && args.metrics.is_none() {
        return Err(Error::Config(
            "--nic samples a NIC into the --trace and the --metrics: give one of them".into(),
        ));
    }
    crate::network::nic::read_now(name).ok_or_else(|| {
        Error::Config(format!(
            "--nic {name}: no such network interface here (see `ip link`)"
        ))
    })?;
    match &args.trace {
        Some(_) => Ok(Some(crate::network::nic::NicSampler::start(name)?)),
        None => Ok(None),
    }
}

/// --metrics opened (cut back to the resumed step on a resume), with --nic's counters, and
/// every how many steps to write.
fn open_metrics(
    args: &TrainArgs,
    start: Start,
    info: RunInfo,
) -> Result<Option<(crate::network::metrics::Metrics, u64)>> {
    let Some(path) = &args.metrics else {
        return Ok(None);
    };
    let resumed = args.resume.is_some().then_some(start.global_step);
    let m = crate::network::metrics::Metrics::create(path, resumed)?;
    let mut m = match &args.nic {
        Some(nic) => m.with_nic(nic)?,
        None => m,
    };
    m.write_run(&info)?;
    Ok(Some((m, args.metrics_every)))
}

/// Chooses this rank's adapters (under MPI a rank with no --device/--devices takes the GPU of
/// its local rank) and returns the job's replica count.
fn place_rank(args: &TrainArgs, run: &mut RunConfig, job: &Job) -> Result<usize> {
    if args.mpi && args.devices.is_empty() && args.device.is_none() {
        if let Devices::Gpu { adapters, .. } = &mut run.devices {
            let count = crate::gpu::context::adapters().len().max(1);
            *adapters = vec![job.local_rank % count; adapters.len()];
        }
    }
    if run.grad_f16 && args.mpi {
        return Err(Error::Config(
            "--grad-dtype f16 with --mpi: MPI has no 16-bit float sum; use --grad-dtype f32 (or in-process replicas)".into(),
        ));
    }
    Ok(if run.data_parallel {
        run.replicas() * job.ranks
    } else {
        1
    })
}

/// The end of a rank other than 0, which trains quietly while rank 0 speaks for the job: it
/// leaves its trace events beside rank 0's trace for rank 0 to gather, then meets rank 0 at
/// the barrier before rank 0 gathers and before MPI is finalised, so no rank leaves while
/// another still talks.
fn finish_quiet_rank(
    mut trace: Option<crate::network::trace::Trace>,
    nic: Option<crate::network::nic::NicSampler>,
    job: &Job,
) -> Result<()> {
    add_nic(&mut trace, nic, job.rank);
    if let Some(mut t) = trace {
        t.write_part(&rank_part(&t.path, job.rank))?;
    }
    job.barrier();
    Ok(())
}

/// The NIC's samples into the trace, as counter tracks.
fn add_nic(
    trace: &mut Option<crate::network::trace::Trace>,
    nic: Option<crate::network::nic::NicSampler>,
    rank: usize,
) {
    let (Some(t), Some(sampler)) = (trace.as_mut(), nic) else {
        return;
    };
    let name = sampler.nic.clone();
    let samples = sampler.finish();
    let events = crate::network::nic::counter_events(&name, &samples, rank, |i| t.now_us(i));
    t.extend(events);
}

/// What every rank of a job must agree on, as (flag, value) pairs.
fn job_fields(
    args: &TrainArgs,
    run: &RunConfig,
    model: &Model,
    data: &DataSplit,
    start: Start,
) -> Vec<(&'static str, String)> {
    let c = &run.train;
    vec![
        ("--hidden", model.hidden().to_string()),
        ("--batch-size", c.batch_size.to_string()),
        ("--lr", c.lr.to_string()),
        ("--seed", c.seed.to_string()),
        ("--epochs", c.epochs.to_string()),
        ("--precision", format!("{:?}", run.precision)),
        ("--grad-dtype", run.grad_f16.to_string()),
        ("--replicas/--devices", run.replicas().to_string()),
        ("--limit (training examples)", data.train.len().to_string()),
        (
            "--data-dir (training data fingerprint)",
            format!("{:016x}", data.train.fingerprint()),
        ),
        ("--data-dir (test examples)", data.test.len().to_string()),
        ("--resume (starting step)", start.global_step.to_string()),
        ("--trace", args.trace.is_some().to_string()),
        ("--allreduce", format!("{:?}", args.across_ranks())),
        ("--trace-steps", args.trace_steps.clone()),
        ("--overlap", run.overlap.to_string()),
        ("--fault", args.fault.join(" ")),
    ]
}

/// Where an interrupted run can be resumed from.
/// [`resume_hint`] from the snapshot folder's path alone (in a signal handler, which holds no
/// [`SnapshotDir`]).
fn resume_hint_in(dir: Option<&Path>) -> String {
    match dir.map(crate::snapshots::latest_in) {
        Some(Ok(Some(p))) => format!(
            "the latest snapshot is {}: continue with --resume",
            p.display()
        ),
        Some(_) => "no snapshot was written yet".into(),
        None => "no --snapshot-dir was given, so the run cannot be resumed".into(),
    }
}

fn resume_hint(snapshots: Option<&SnapshotDir>) -> Result<String> {
    Ok(match snapshots {
        Some(d) => match d.latest()? {
            Some(p) => format!(
                "the latest snapshot is {}: continue with --resume",
                p.display()
            ),
            None => "no snapshot was written yet".into(),
        },
        None => "no --snapshot-dir was given, so the run cannot be resumed".into(),
    })
}

/// Rank 0's start-up lines: the model, the data, the engines and the validated configuration.
fn print_start(
    args: &TrainArgs,
    run: &RunConfig,
    model: &Model,
    data: &DataSplit,
    replicas: &crate::train::replicas::Replicas,
    snapshots: Option<&SnapshotDir>,
) {
    say!("{}", crate::explain::chapter3::summary_for(model.hidden()).trim_end());
    say!(
        "data: {} ({} training images, {} test images; u8 pixels in RAM: {:.1} MB training, {:.1} MB test)",
        data.dir.display(),
        data.train.len(),
        data.test.len(),
        data.train.images.len() as f64 / 1e6,
        data.test.images.len() as f64 / 1e6
    );
    let verbose = args.verbose || log::log_enabled!(log::Level::Info);
    let mut engine = replicas.describe(verbose).into_iter();
    say!("engine: {}", engine.next().unwrap_or_default());
    for line in engine {
        say!("{line}");
    }
    let world = replicas.world();
    let steps = run.train.steps_per_epoch(data.train.len(), world);
    say!(
        "config: {}, {steps} step{} per epoch",
        run.describe(world),
        if steps == 1 { "" } else { "s" },
    );
    if world > 1 {
        // The global batch grew with the replicas: say what keeps one device's result.
        let (b, lr) = (run.train.batch_size, run.train.lr);
        say!("  note: {world} replicas × {b} images train a global batch {world}× one device's, so fewer, larger steps;");
        say!(
            "        to match one device: --batch-size {} per replica, or the linear rule --lr {}",
            (b / world).max(1),
            lr * world as f32
        );
    }
    if let Some(d) = snapshots {
        let every = match args.snapshot_every {
            0 => "each epoch".to_string(),
            n => format!("every {n} steps and each epoch"),
        };
        say!("snapshots: {} ({every}, keep {})", d.dir.display(), d.keep);
    }
}

/// Writes rank 0's trace with the other ranks' events, gathered once every rank wrote them.
fn write_trace(t: &mut crate::network::trace::Trace, local: usize, ranks: usize) -> Result<()> {
    let parts: Vec<_> = (1..ranks).map(|r| rank_part(&t.path, r)).collect();
    let written = t.write(&parts, local, ranks);
    for part in &parts {
        let _ = std::fs::remove_file(part);
    }
    written?;
    say!(
        "trace: {} (steps {}..{}; open it in ui.perfetto.dev, or `gpu-train network {}`)",
        t.path.display(),
        t.steps.start,
        t.steps.end,
        t.path.display()
    );
    Ok(())
}

/// The run's last line.
fn print_end(reports: &[crate::train::report::EpochReport], run: &RunConfig, start: Start) {
    match reports.last() {
        Some(last) => say!(
            "final test accuracy {:.2}% ({} of {}), test loss {:.4}",
            last.test.accuracy(),
            last.test.correct,
            last.test.seen,
            last.test.mean_loss()
        ),
        None => say!(
            "nothing to do: the snapshot already completed {} epoch(s) and --epochs is {}; pass --epochs {} or more to train further",
            start.at.epoch - 1,
            run.train.epochs,
            start.at.epoch
        ),
    }
}
