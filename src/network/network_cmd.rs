//! `gpu-train network`: the network view of a traced run, or of a cluster projected from the
//! α-β model. A trace (from `--trace`) is replayed on the link `--link` names: each traced
//! step's compute as measured and its sync at line rate, beside the sync measured. Where the
//! trace or the lab gave more, it goes on to the calibrated model (`--calibration`), each rank's
//! NIC counters (`--nic`) and every link of the lab's fabric (`--links`), in that order.
//! `--project` hands over to `project.rs`; `--topology` draws the lab's fabric first.

use super::calibrate;
use super::fabric::{self, Fabric};
use super::inputs::NetworkArgs;
use super::lab;
use super::link::{self, LinkStep, TracedStep};
use super::plot;
use super::project;
use super::trace::MAX_TRACE_BYTES;
use super::wire::{self, NicTrack};
use crate::error::{Error, Result};
use crate::files::{check_paths, read_input_text, Output};
use crate::parallel::duration::parse_duration;
use std::path::Path;

pub fn run_network(a: &NetworkArgs) -> Result<()> {
    check_flags(a)?;
    let (rate, link_name) = link::parse_rate(&a.link)?;
    let latency = parse_duration(&a.latency)?;
    check_files(a)?;
    if let Some(file) = &a.topology {
        draw_topology(a, file)?;
        if a.trace.is_none() && !a.project {
            return Ok(());
        }
    }
    if a.project {
        return project::project(a, rate, &link_name, latency);
    }
    let path = a.trace.as_ref().ok_or_else(|| {
        Error::Config("network: give a trace (from --trace), --project or --topology".into())
    })?;
    let trace = read_trace(path)?;
    let steps = link::steps_from_trace(&trace)?;
    let on = link::on_link(&steps, rate, latency);
    print_on_link(&on, &link_name, latency, a.table);
    let shown: Vec<_> = on.iter().take(a.steps.max(1)).cloned().collect();
    let title = format!("one replica's link, {link_name}: compute, then the gradient all-reduce");
    for p in plot::link_utilisation(&a.out, "link-utilisation", &title, &shown)? {
        println!("picture: {}", p.display());
    }
    // The calibrated model first: its syncs are the pulses the pictures draw.
    let modelled = lab::calibrated_model(a, &trace, &steps, rate)?;
    measured_wire(a, &trace, &steps, (&on, modelled.as_deref()), rate)?;
    if let Some(file) = &a.links {
        lab::fabric_links(a, file, &trace, &steps)?;
    }
    Ok(())
}

/// The flags that only make sense together, checked before anything is read.
fn check_flags(a: &NetworkArgs) -> Result<()> {
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
    Ok(())
}

/// Every file given is there to read, and --out can take the pictures (no input among them).
fn check_files(a: &NetworkArgs) -> Result<()> {
    let inputs: Vec<(&str, &Path)> = [
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
    check_paths(&inputs, &[Output::Pictures("--out", &a.out)])
}

/// `--topology FILE`: the lab's fabric, checked, drawn into --out.
fn draw_topology(a: &NetworkArgs, file: &Path) -> Result<()> {
    let fabric = lab::read_fabric(file)?;
    for p in fabric::topology(&a.out, &fabric, None)? {
        println!("picture: {}", p.display());
    }
    Ok(())
}

/// The trace file, as JSON (its events are checked by `link::steps_from_trace`).
fn read_trace(path: &Path) -> Result<serde_json::Value> {
    let text = read_input_text(path, MAX_TRACE_BYTES).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text)
        .map_err(|e| Error::bad_data(path.display().to_string(), format!("not a trace: {e}")))
}

/// The traced steps on the link: a row a step, then what the model and the measurement say
/// over all of them.
fn print_on_link(on: &[LinkStep], link_name: &str, latency: f64, table: bool) {
    println!(
        "{} traced steps of replica 0 on a {link_name} link (latency {:.1} µs a message); compute as measured, sync at line rate:",
        on.len(),
        latency * 1e6
    );
    if table {
        print_step_table(on);
    } else {
        print_step_summary(on);
    }
    print_on_link_totals(on);
}

/// The median and 95th percentile of each column over the traced steps (`--table`: every row).
fn print_step_summary(on: &[LinkStep]) {
    let columns: [(&str, fn(&LinkStep) -> f64); 5] = [
        ("compute ms", |s| s.compute_s * 1e3),
        ("sync ms @link", |s| s.sync_s * 1e3),
        ("sync ms measured", |s| s.measured_sync_s * 1e3),
        ("link busy %", |s| 100.0 * s.busy()),
        ("GPU waits ms", |s| s.sync_s * 1e3),
    ];
    println!("{:>18} {:>10} {:>10}   (--table prints every step)", "", "median", "p95");
    for (name, f) in columns {
        let mut v: Vec<f64> = on.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        // Nearest rank: the smallest value with at least q of the steps at or below it.
        let q = |q: f64| v.get(((q * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1)) - 1).copied().unwrap_or(0.0);
        println!("{name:>18} {:>10.3} {:>10.3}", q(0.5), q(0.95));
    }
}

/// A row per traced step.
fn print_step_table(on: &[LinkStep]) {
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
    for s in on {
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
}

/// What the model and the measurement say over all the traced steps.
fn print_on_link_totals(on: &[LinkStep]) {
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
}

/// Each rank's sync split into moving and waiting (an MPI trace); where the trace holds NIC
/// counters (`--nic`): rank 0's wire per traced step, and each
/// rank's measured utilisation over time beside the model's, one picture a link.
fn measured_wire(
    a: &NetworkArgs,
    trace: &serde_json::Value,
    steps: &[TracedStep],
    (on, modelled): (&[LinkStep], Option<&[f64]>),
    rate: f64,
) -> Result<()> {
    // Each rank's own NIC rate: the lab's straggler is scored against its own line rate.
    let fabric = a.topology.as_deref().map(lab::read_fabric).transpose()?;
    let rate_of = |rank: u64| nic_rate(fabric.as_ref(), rank, rate);
    let window = wire::window_for(steps);
    print_rank_syncs(trace, rate, parse_duration(&a.latency)?);
    let tracks = wire::nic_tracks(trace);
    let Some(nic0) = tracks.iter().find(|t| t.rank == 0) else {
        return Ok(());
    };
    print_rank0_wire(steps, nic0, rate_of(0)?, window);
    let shown = a.steps.max(1).min(steps.len());
    for t in &tracks {
        let own = rate_of(t.rank)?;
        draw_nic(a, &steps[..shown], (t, own), (on, modelled, rate), window)?;
    }
    Ok(())
}

/// The line rate of rank `rank`'s NIC: the lab's slow host's own (hosts count from 1, ranks
/// from 0), else `rate`.
fn nic_rate(fabric: Option<&Fabric>, rank: u64, rate: f64) -> Result<f64> {
    let slow = fabric
        .and_then(|f| f.slow_host.as_ref())
        .filter(|(h, _)| *h as u64 == rank + 1);
    match slow {
        Some((_, r)) => Ok(link::parse_rate(r)?.0),
        None => Ok(rate),
    }
}

/// Each rank's sync, a step on average, split into moving its bytes at `rate` (α a message)
/// and waiting; only an MPI trace has more than one rank.
fn print_rank_syncs(trace: &serde_json::Value, rate: f64, alpha: f64) {
    let ranks = wire::rank_syncs(trace);
    if ranks.len() <= 1 {
        return;
    }
    println!("each rank's sync, a step on average: moving its own bytes at the link's rate, and waiting (for the slowest peer, or a slower link than --link):");
    println!(
        "{:>6} {:>10} {:>12} {:>12} {:>9}",
        "rank", "sync ms", "moving ms", "waiting ms", "waiting"
    );
    for r in &ranks {
        let (sync, moving, waiting) = r.split(rate, alpha);
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

/// Rank 0's NIC counters per traced step: payload and wire bytes, packets, the headers' and
/// ACKs' share, how busy the link was, and resends.
fn print_rank0_wire(steps: &[TracedStep], nic0: &NicTrack, rate0: f64, window: f64) {
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
    for w in wire::per_step(steps, nic0, rate0, window) {
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
}

/// One rank's NIC (`t`, line rate `own`) over the `shown` steps: its measured send rate
/// beside the model's pulses, as a picture. The pulse is the sync as modelled (the calibrated
/// `modelled` syncs, else the line-rate model's `on`, scaled from `rate` to `own`), at the
/// utilisation that moves the step's bytes in it: 100 % for the line-rate model, less where α
/// and γ stretch the sync.
fn draw_nic(
    a: &NetworkArgs,
    shown: &[TracedStep],
    (t, own): (&NicTrack, f64),
    (on, modelled, rate): (&[LinkStep], Option<&[f64]>, f64),
    window: f64,
) -> Result<()> {
    let (sync, height): (Vec<f64>, Vec<f64>) = shown
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let wire_s = 8.0 * s.bytes_sent as f64 * calibrate::FRAME_OVERHEAD / own;
            match modelled {
                Some(m) => (m[i], (wire_s / m[i].max(1e-12)).min(1.0)),
                None => (on[i].sync_s * rate / own, 1.0),
            }
        })
        .unzip();
    let (measured, model) = wire::utilisation_curves(shown, (&sync, &height), t, own, window);
    let title = format!(
        "rank {}'s NIC, {}: measured and modelled",
        t.rank,
        link::rate_words(own)
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
    Ok(())
}
