//! The network view's subcommands: `gpu-train network` (a traced run on a link you name, or a
//! cluster projected from the α-β model), `gpu-train allreduce-bench` (nccl-tests' numbers for
//! the ring), `gpu-train plot` (a metrics file as pictures).

use super::link;
use super::{metrics, plot};
use crate::error::{Error, Result};
use crate::parallel::{ring::Ring, AllReduce};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use crate::parallel::parse_duration;

#[derive(Debug, Clone, Args)]
pub struct NetworkArgs {
    /// A trace written by --trace from data-parallel replicas.
    pub trace: Option<PathBuf>,
    /// The link: 1gbit, 10gbit, 100gbit, 400gbit, nvlink4, pcie4x16, pcie5x16, or a rate (25gbit, 2.5e9).
    #[arg(long, default_value = "100gbit")]
    pub link: String,
    /// Latency per message on the link (α), e.g. 5us.
    #[arg(long, default_value = "0us")]
    pub latency: String,
    /// Traced steps to draw.
    #[arg(long, default_value_t = 6)]
    pub steps: usize,
    /// Folder for the pictures (PNG and SVG).
    #[arg(short, long, default_value = "network")]
    pub out: PathBuf,
    /// Project a model and cluster instead: the sync of --params FP32 gradients over --gpus,
    /// ring and tree, beside --step-compute, with α fitted to --from.
    #[arg(long)]
    pub project: bool,
    /// `gpu-train allreduce-bench --json` output to fit α and β to.
    #[arg(long, value_name = "FILE.json")]
    pub from: Option<PathBuf>,
    /// Parameters of the projected model (e.g. 7e9).
    #[arg(long, default_value_t = 7e9)]
    pub params: f64,
    /// GPUs of the projected cluster.
    #[arg(long, default_value_t = 1024.0)]
    pub gpus: f64,
    /// Computation of one projected step (forward and backward), e.g. 350ms.
    #[arg(long, default_value = "350ms")]
    pub step_compute: String,
    /// --project on a two-tier fabric: this many GPUs (hosts) under each leaf switch, the leaves
    /// joined through a spine by --uplink links (as `scripts/lab --leaves` builds). Default: one
    /// switch, every GPU on it.
    #[arg(long, value_name = "K")]
    pub hosts_per_leaf: Option<f64>,
    /// --project: the rate of each leaf's uplink to the spine [default: --link's].
    #[arg(long, value_name = "RATE")]
    pub uplink: Option<String>,
    /// Draw a lab's fabric (`topology.json`, written by scripts/lab) as DIR/topology.png and
    /// .svg: hosts, NICs and their rates, switches, uplinks, the ring's order.
    #[arg(long, value_name = "FILE.json")]
    pub topology: Option<PathBuf>,
    /// A lab's link counters (`links.tsv`, written by scripts/lab): each link's bytes and
    /// utilisation over the traced steps, and DIR/link-heatmap.png (links × time).
    #[arg(long, value_name = "FILE.tsv", requires = "trace")]
    pub links: Option<PathBuf>,
    /// The α-β-γ model calibrated on this machine: `allreduce-bench --mpi --json` of 2 ranks
    /// over links of --link's rate (scripts/lab writes DIR/calibration.json); each traced
    /// step's sync predicted beside the measured one.
    #[arg(long, value_name = "FILE.json", requires = "trace")]
    pub calibration: Option<PathBuf>,
    /// The link counters during the calibration (scripts/lab's calibration-links.tsv): the
    /// calibration's connections are hashed by ECMP too, and its β is its busiest uplink's
    /// share. (The job's own come from --links.)
    #[arg(long, value_name = "FILE.tsv", requires = "calibration")]
    pub calibration_links: Option<PathBuf>,
    /// --project: α and γ from a lab's calibrated model (DIR/model.json, written by `network
    /// --calibration`) instead of --latency and --gamma.
    #[arg(
        long,
        value_name = "FILE.json",
        requires = "project",
        conflicts_with = "from"
    )]
    pub model: Option<PathBuf>,
    /// --project: γ, the host's cost a byte beyond the wire (copies, checksums, the ring's sums),
    /// e.g. 7ns; 0 for a fabric whose NICs read the GPUs' memory directly.
    #[arg(long, value_name = "DURATION", default_value = "0ns")]
    pub gamma: String,
    /// --project: the slowest GPU's link, a straggler (e.g. 50mbit) [default: none].
    #[arg(long, value_name = "RATE")]
    pub slowest: Option<String>,
}

/// `--topology FILE`: the lab's fabric, checked, drawn into --out.
fn draw_topology(a: &NetworkArgs, file: &std::path::Path) -> Result<()> {
    let fabric = super::lab::read_fabric(file)?;
    for p in super::fabric::topology(&a.out, &fabric, None)? {
        println!("picture: {}", p.display());
    }
    Ok(())
}

pub fn run_network(a: &NetworkArgs) -> Result<()> {
    if a.steps == 0 {
        return Err(Error::Config("--steps: at least 1 step to draw".into()));
    }
    if !a.project && a.from.is_some() {
        return Err(Error::Config("--from is for --project".into()));
    }
    if a.project && a.trace.is_some() {
        return Err(Error::Config(
            "--project draws a projected cluster, not a trace: give one or the other".into(),
        ));
    }
    if !a.project && a.gamma != "0ns" {
        return Err(Error::Config("--gamma is a term of a --project".into()));
    }
    if !a.project && (a.hosts_per_leaf.is_some() || a.uplink.is_some() || a.slowest.is_some()) {
        return Err(Error::Config(
            "--hosts-per-leaf, --uplink and --slowest describe the fabric of a --project".into(),
        ));
    }
    let (rate, link_name) = link::parse_rate(&a.link)?;
    let latency = parse_duration(&a.latency)?;
    let inputs: Vec<(&str, &std::path::Path)> = [
        ("the trace", &a.trace),
        ("--from", &a.from),
        ("--topology", &a.topology),
        ("--links", &a.links),
        ("--calibration", &a.calibration),
        ("--calibration-links", &a.calibration_links),
        ("--model", &a.model),
    ]
    .into_iter()
    .filter_map(|(flag, p)| Some((flag, p.as_deref()?)))
    .collect();
    crate::files::check_paths(&inputs, &[crate::files::Output::Pictures("--out", &a.out)])?;
    if let Some(file) = &a.topology {
        draw_topology(a, file)?;
        if a.trace.is_none() && !a.project {
            return Ok(());
        }
    }
    if a.project {
        return super::project::project(a, rate, &link_name, latency);
    }
    let path = a.trace.as_ref().ok_or_else(|| {
        Error::Config("network: give a trace (from --trace), --project or --topology".into())
    })?;
    let text =
        crate::files::read_input_text(path, super::trace::MAX_TRACE_BYTES).map_err(|source| {
            Error::Io {
                path: path.clone(),
                source,
            }
        })?;
    let trace: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::bad_data(path.display().to_string(), format!("not a trace: {e}")))?;
    let steps = link::steps_from_trace(&trace)?;
    let on = link::on_link(&steps, rate, latency);
    println!(
        "{} traced steps of replica 0 on a {link_name} link (latency {:.1} µs a message); compute as measured, sync at line rate:",
        on.len(),
        latency * 1e6
    );
    println!(
        "{:>6} {:>12} {:>10} {:>14} {:>16} {:>10} {:>14}",
        "step",
        "compute ms",
        "bytes",
        "sync ms @link",
        "sync ms measured",
        "link busy",
        "GPU waits ms"
    );
    for s in &on {
        println!(
            "{:>6} {:>12.3} {:>10} {:>14.3} {:>16.3} {:>9.1}% {:>14.3}",
            s.step,
            s.compute_s * 1e3,
            s.bytes,
            s.sync_s * 1e3,
            s.measured_sync_s * 1e3,
            100.0 * s.busy(),
            s.sync_s * 1e3
        );
    }
    let (c, y, m): (f64, f64, f64) = on.iter().fold((0.0, 0.0, 0.0), |(c, y, m), s| {
        (c + s.compute_s, y + s.sync_s, m + s.measured_sync_s)
    });
    println!(
        "modelled, over these steps: the link is busy {:.1} % of the time, at line rate while it is; the GPU waits {:.1} % of each step for the sync (no overlap)",
        100.0 * y / (c + y),
        100.0 * y / (c + y)
    );
    if m > 0.0 {
        println!(
            "measured, over these steps: the sync took {:.3} ms a step, {:.1} % of each step{}",
            1e3 * m / on.len().max(1) as f64,
            100.0 * m / (c + m),
            if m > 1.25 * y {
                format!(
                    " ({:.1}× the line-rate model: the rest is waiting, for the slowest peer or a slower link than --link)",
                    m / y.max(1e-12)
                )
            } else {
                String::new()
            }
        );
    }
    let shown: Vec<_> = on.iter().take(a.steps.max(1)).cloned().collect();
    let title = format!("one replica's link, {link_name}: compute, then the gradient all-reduce");
    for p in plot::link_utilisation(&a.out, "link-utilisation", &title, &shown)? {
        println!("picture: {}", p.display());
    }
    // The calibrated model first: its syncs are the pulses the pictures draw.
    let modelled = super::lab::calibrated_model(a, &trace, &steps, rate)?;
    measured_wire(a, &trace, &steps, (&on, modelled.as_deref()), rate)?;
    if let Some(file) = &a.links {
        super::lab::fabric_links(a, file, &trace, &steps)?;
    }
    Ok(())
}

/// --latency in seconds.
fn alpha_of(a: &NetworkArgs) -> Result<f64> {
    parse_duration(&a.latency)
}

/// Each rank's sync split into moving and waiting (an MPI trace); where the trace holds NIC
/// counters (`--nic`): rank 0's wire per traced step, and each
/// rank's measured utilisation over time beside the model's, one picture a link.
fn measured_wire(
    a: &NetworkArgs,
    trace: &serde_json::Value,
    steps: &[link::TracedStep],
    (on, modelled): (&[link::LinkStep], Option<&[f64]>),
    rate: f64,
) -> Result<()> {
    use super::wire;
    // Each rank's own NIC rate: the lab's straggler is scored against its own line rate.
    let fabric = a
        .topology
        .as_deref()
        .map(super::lab::read_fabric)
        .transpose()?;
    let rate_of = |rank: u64| -> Result<f64> {
        let slow = fabric
            .as_ref()
            .and_then(|f| f.slow_host.as_ref())
            .filter(|(h, _)| *h as u64 == rank + 1);
        match slow {
            Some((_, r)) => Ok(link::parse_rate(r)?.0),
            None => Ok(rate),
        }
    };
    let window = wire::window_for(steps);
    let ranks = wire::rank_syncs(trace);
    if ranks.len() > 1 {
        println!("each rank's sync, a step on average: moving its own bytes at the link's rate, and waiting (for the slowest peer, or a slower link than --link):");
        println!(
            "{:>6} {:>10} {:>12} {:>12} {:>9}",
            "rank", "sync ms", "moving ms", "waiting ms", "waiting"
        );
        for r in &ranks {
            let (sync, moving, waiting) = r.split(rate, alpha_of(a)?);
            println!(
                "{:>6} {:>10.3} {:>12.3} {:>12.3} {:>8.1}%",
                r.rank,
                sync,
                moving,
                waiting,
                100.0 * waiting / sync.max(1e-12)
            );
        }
    }
    let tracks = wire::nic_tracks(trace);
    let Some(nic0) = tracks.iter().find(|t| t.rank == 0) else {
        return Ok(());
    };
    println!("on rank 0's wire (its NIC's own counters), per traced step:");
    println!(
        "{:>6} {:>12} {:>12} {:>8} {:>12} {:>10} {:>12} {:>8}",
        "step",
        "payload B",
        "wire B",
        "packets",
        "headers+ACK",
        "mean busy",
        "ms ≥90% rate",
        "resends"
    );
    println!(
        "(busy times over windows of {:.1} ms, a few a step)",
        window / 1e3
    );
    for w in wire::per_step(steps, nic0, rate_of(0)?, window) {
        println!(
            "{:>6} {:>12} {:>12} {:>8} {:>11.1}% {:>9.1}% {:>12.1} {:>8}",
            w.step,
            w.payload,
            w.wire,
            w.packets,
            100.0 * w.overhead(),
            100.0 * w.mean_busy,
            w.ms_near_line_rate,
            w.retransmits
        );
    }
    let shown = a.steps.max(1).min(steps.len());
    for t in &tracks {
        let own = rate_of(t.rank)?;
        // The model's pulse: the sync as modelled, at the utilisation that moves the step's
        // bytes in it (100 % for the line-rate model; less where α and γ stretch the sync).
        let (sync, height): (Vec<f64>, Vec<f64>) = steps[..shown]
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let wire_s = 8.0 * s.bytes_sent as f64 * super::calibrate::FRAME_OVERHEAD / own;
                match modelled {
                    Some(m) => (m[i], (wire_s / m[i].max(1e-12)).min(1.0)),
                    None => (on[i].sync_s * rate / own, 1.0),
                }
            })
            .unzip();
        let (measured, model) =
            wire::utilisation_curves(&steps[..shown], (&sync, &height), t, own, window);
        let title = format!(
            "rank {}'s NIC, {}: measured and modelled",
            t.rank,
            super::calibrate::rate_words(own)
        );
        let series = [
            (
                format!("measured: the NIC's send rate over {:.1} ms", window / 1e3),
                measured,
            ),
            (
                match modelled {
                    Some(_) => "model: the calibrated α-β-γ sync, at the rate that moves its bytes"
                        .to_string(),
                    None => "model: line rate while the ring's payload moves".to_string(),
                },
                model,
            ),
        ];
        let name = format!("link-measured-rank{}", t.rank);
        for p in plot::line_chart(
            &a.out,
            &name,
            &title,
            ("time (ms)", "link utilisation (%)"),
            &series,
        )? {
            println!("picture: {}", p.display());
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Args)]
pub struct AllreduceBenchArgs {
    /// Replica counts to run (in-process ring).
    #[arg(long, value_delimiter = ',', default_value = "2,4")]
    pub replicas: Vec<usize>,
    /// Largest message in bytes (from 8 B, doubling).
    #[arg(long, default_value_t = 64 << 20)]
    pub max_bytes: usize,
    /// Write the rows as JSON (for `gpu-train network --project --from`).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Under mpirun: MPI_Allreduce across the ranks instead (one buffer a rank; needs a build
    /// with --features mpi); rank 0 prints.
    #[arg(long)]
    pub mpi: bool,
}

/// --max-bytes within what a sweep needs, and the buffers of `buffers` replicas (or ranks,
/// `what`) of the largest message well inside this machine's memory.
fn check_sizes(a: &AllreduceBenchArgs, buffers: usize, what: &str) -> Result<()> {
    if !(8..=(1usize << 30)).contains(&a.max_bytes) {
        return Err(Error::Config(format!(
            "--max-bytes {}: from 8 to 1 GiB (1073741824)",
            a.max_bytes
        )));
    }
    let need = buffers as u64 * a.max_bytes as u64;
    if need > 4 << 30 {
        return Err(Error::Config(format!(
            "--max-bytes {} × {what} {buffers}: {:.1} GB of buffers; at most 4 GB",
            a.max_bytes,
            need as f64 / 1e9
        )));
    }
    Ok(())
}

/// One measurement, in nccl-tests' terms.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchRow {
    pub replicas: usize,
    pub bytes: usize,
    /// What each replica sent: the ring's 2(N−1)/N × bytes, counted message by message.
    pub bytes_on_wire: u64,
    pub seconds: f64,
    /// bytes / time.
    pub algbw_gbs: f64,
    /// algbw × 2(N−1)/N: the rate each link had to carry, comparable across N.
    pub busbw_gbs: f64,
    /// "ring" (ours: in-process, or over MPI point-to-point) or "mpi" (MPI_Allreduce).
    #[serde(default = "ring_algorithm")]
    pub algorithm: String,
}

fn ring_algorithm() -> String {
    "ring".into()
}

/// Times the all-reduce of `bytes` of f32 across `grads` (one buffer per replica). `fixed`:
/// exactly that many runs (every MPI rank must make the same calls), else at least 5 and
/// about 0.2 s.
fn time_one(
    ar: &mut dyn AllReduce,
    grads: &mut [Vec<f32>],
    fixed: Option<usize>,
) -> Result<(f64, u64)> {
    let mut run = |ar: &mut dyn AllReduce| -> Result<u64> {
        let mut views: Vec<&mut [f32]> = grads.iter_mut().map(|g| g.as_mut_slice()).collect();
        Ok(ar.all_reduce(0, &mut views)?[0].sent)
    };
    run(ar)?; // warm-up
    let mut times = Vec::new();
    let start = Instant::now();
    let mut sent = 0;
    let more = |n: usize| match fixed {
        Some(f) => n < f,
        None => n < 5 || (start.elapsed() < Duration::from_millis(200) && n < 1000),
    };
    while more(times.len()) {
        let t = Instant::now();
        sent = run(ar)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], sent))
}

pub fn run_allreduce_bench(a: &AllreduceBenchArgs) -> Result<()> {
    if a.mpi {
        return mpi_bench(a);
    }
    if a.replicas.iter().any(|&n| !(2..=64).contains(&n)) {
        return Err(Error::Config("--replicas: each from 2 to 64".into()));
    }
    check_sizes(
        a,
        a.replicas.iter().max().copied().unwrap_or(2),
        "--replicas",
    )?;
    if let Some(json) = &a.json {
        crate::files::check_paths(&[], &[crate::files::Output::File("--json", json)])?;
    }
    println!("# in-process ring all-reduce, f32 sum; time = median; algbw = size/time; busbw = algbw × 2(N−1)/N (nccl-tests' PERFORMANCE.md)");
    println!(
        "{:>4} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "N", "size (B)", "count", "time (µs)", "algbw GB/s", "busbw GB/s"
    );
    let mut rows = Vec::new();
    for &n in &a.replicas {
        let mut bytes = 8usize;
        while bytes <= a.max_bytes {
            let count = bytes / 4;
            let mut grads: Vec<Vec<f32>> =
                (0..n).map(|r| vec![r as f32 * 0.5 + 1.0; count]).collect();
            let mut ring = Ring::new(n);
            let (t, sent) = time_one(&mut ring, &mut grads, None)?;
            let algbw = bytes as f64 / t / 1e9;
            let busbw = algbw * 2.0 * (n as f64 - 1.0) / n as f64;
            println!(
                "{n:>4} {bytes:>12} {count:>12} {:>12.2} {algbw:>12.3} {busbw:>12.3}",
                t * 1e6
            );
            rows.push(BenchRow {
                replicas: n,
                bytes,
                bytes_on_wire: sent,
                seconds: t,
                algbw_gbs: algbw,
                busbw_gbs: busbw,
                algorithm: "ring".into(),
            });
            bytes *= 2;
        }
    }
    if let Some(path) = &a.json {
        crate::files::write_file(
            path,
            serde_json::to_string_pretty(&rows)
                .expect("rows")
                .as_bytes(),
            "the benchmark's JSON",
            "an earlier file of that name is untouched",
        )?;
    }
    Ok(())
}

#[derive(Debug, Clone, Args)]
pub struct PlotArgs {
    /// A metrics file written by --metrics.
    pub metrics: PathBuf,
    /// Folder for the pictures.
    #[arg(short, long, default_value = "plots")]
    pub out: PathBuf,
}

pub fn run_plot(a: &PlotArgs) -> Result<()> {
    use metrics::{Point, PointKind};
    crate::files::check_paths(
        &[("the metrics file", &a.metrics)],
        &[crate::files::Output::Pictures("--out", &a.out)],
    )?;
    let records = metrics::read_points(&a.metrics)?;
    let series = |kind: PointKind, y: fn(&Point) -> Option<f64>| -> Vec<(f64, f64)> {
        let x = |p: &Point| match kind {
            PointKind::Step => p.global_step,
            _ => p.epoch,
        };
        records
            .iter()
            .filter(|p| p.kind == kind)
            .filter_map(|p| Some((x(p)?, y(p)?)))
            .collect()
    };
    let (step_loss, epoch_train_loss, epoch_test_loss) = (
        series(PointKind::Step, |p| p.train_loss),
        series(PointKind::Epoch, |p| p.train_loss),
        series(PointKind::Epoch, |p| p.test_loss),
    );
    let (step_acc, epoch_test_acc) = (
        series(PointKind::Step, |p| p.train_accuracy),
        series(PointKind::Epoch, |p| p.test_accuracy),
    );
    if epoch_test_loss.is_empty() && step_loss.is_empty() {
        return Err(Error::bad_data(
            a.metrics.display().to_string(),
            "holds no step or epoch records with losses to draw",
        ));
    }
    let mut made = Vec::new();
    let mut drawn = || -> Result<()> {
        if !epoch_test_loss.is_empty() || !epoch_train_loss.is_empty() {
            made.extend(plot::line_chart(
                &a.out,
                "loss-by-epoch",
                "loss by epoch",
                ("epoch", "cross-entropy loss"),
                &[
                    ("train".into(), epoch_train_loss.clone()),
                    ("test".into(), epoch_test_loss.clone()),
                ],
            )?);
        }
        if !epoch_test_acc.is_empty() {
            made.extend(plot::line_chart(
                &a.out,
                "accuracy-by-epoch",
                "test accuracy by epoch",
                ("epoch", "accuracy (%)"),
                &[("test".into(), epoch_test_acc.clone())],
            )?);
        }
        if !step_loss.is_empty() {
            made.extend(plot::line_chart(
                &a.out,
                "loss-by-step",
                "training loss by step",
                ("global step", "loss (since the previous point)"),
                &[("train loss".into(), step_loss.clone())],
            )?);
            made.extend(plot::line_chart(
                &a.out,
                "accuracy-by-step",
                "training accuracy by step",
                ("global step", "accuracy (%)"),
                &[("train accuracy".into(), step_acc.clone())],
            )?);
        }
        Ok(())
    };
    if let Err(e) = drawn() {
        // All the pictures or none: the ones drawn before the failure go too.
        for p in &made {
            let _ = std::fs::remove_file(p);
        }
        return Err(match e {
            Error::Config(m) if !m.starts_with("-o ") => {
                Error::bad_data(a.metrics.display().to_string(), m)
            }
            e => e,
        });
    }
    for p in made {
        println!("picture: {}", p.display());
    }
    Ok(())
}

/// `allreduce-bench --mpi`: the same sweep across the ranks of the job, with our ring over MPI
/// point-to-point messages and with MPI_Allreduce, side by side.
fn mpi_bench(a: &AllreduceBenchArgs) -> Result<()> {
    #[cfg(feature = "mpi")]
    {
        use crate::parallel::AcrossRanks;
        let job = crate::parallel::mpi::MpiJob::init()?;
        let n = job.ranks;
        // Checked as without --mpi, then compared across the ranks (a rank with another
        // --max-bytes would wait in a size the others never reach): a rank that refuses ends
        // the whole job, as a training rank does.
        let checked = check_sizes(a, n, "ranks").and_then(|_| {
            job.agree(&[
                ("--max-bytes", a.max_bytes.to_string()),
                ("--replicas", format!("{:?}", a.replicas)),
                ("--json (given or not)", a.json.is_some().to_string()),
            ])
        });
        if let Err(e) = checked {
            crate::error::say_error(&format!("rank {} of {n}: {e}", job.rank));
            job.abort(e.exit_code());
        }
        if job.rank == 0 {
            println!("# across {n} ranks, f32 sum; time = median of 10; algbw = size/time; busbw = algbw × 2(N−1)/N");
            println!("# ring: our ring over MPI point-to-point (bytes sent: its payload); mpi: MPI_Allreduce (bytes: handed to it)");
            println!(
                "{:>4} {:>5} {:>12} {:>12} {:>12} {:>12} {:>12} {:>14}",
                "N",
                "algo",
                "size (B)",
                "count",
                "time (µs)",
                "algbw GB/s",
                "busbw GB/s",
                "sent/rank (B)"
            );
        }
        let mut rows = Vec::new();
        let faults = crate::parallel::ring::Faults {
            timeout: std::time::Duration::from_secs(10),
            ..Default::default()
        };
        let mut bytes = 8usize;
        while bytes <= a.max_bytes {
            for across in [AcrossRanks::Ring, AcrossRanks::Mpi] {
                let mut ar = job.all_reduce(1, across, faults.clone())?;
                let mut grads = vec![vec![1.0f32; bytes / 4]];
                let (t, sent) = time_one(&mut ar, &mut grads, Some(10))?;
                let algbw = bytes as f64 / t / 1e9;
                let busbw = algbw * 2.0 * (n as f64 - 1.0) / n as f64;
                let algo = match across {
                    AcrossRanks::Ring => "ring",
                    AcrossRanks::Mpi => "mpi",
                };
                if job.rank == 0 {
                    println!(
                        "{n:>4} {algo:>5} {bytes:>12} {:>12} {:>12.2} {algbw:>12.3} {busbw:>12.3} {sent:>14}",
                        bytes / 4,
                        t * 1e6
                    );
                }
                rows.push(BenchRow {
                    replicas: n,
                    bytes,
                    bytes_on_wire: sent,
                    seconds: t,
                    algbw_gbs: algbw,
                    busbw_gbs: busbw,
                    algorithm: algo.into(),
                });
            }
            bytes *= 2;
        }
        if let (Some(path), 0) = (&a.json, job.rank) {
            crate::files::write_file(
                path,
                serde_json::to_string_pretty(&rows)
                    .expect("rows")
                    .as_bytes(),
                "the benchmark's JSON",
                "an earlier file of that name is untouched",
            )?;
        }
        Ok(())
    }
    #[cfg(not(feature = "mpi"))]
    {
        let _ = a;
        Err(Error::Config(
            "allreduce-bench --mpi: this gpu-train was built without MPI (cargo build --release --features mpi)".into(),
        ))
    }
}
