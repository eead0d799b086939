//! What `network` reads from a lab run beyond the trace: the fabric (`topology.json`), every
//! link's counters (`--links`, and the `lab-links` sampler that writes them) and the α-β-γ
//! model calibrated on the lab (`--calibration`, `--calibration-links`).

use super::calibrate::{self, Calibration};
use super::fabric::{self, Fabric};
use super::inputs::NetworkArgs;
use super::link;
use super::links;
use super::wire;
use crate::error::{Error, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// A lab's `topology.json`, checked.
pub(super) fn read_fabric(file: &std::path::Path) -> Result<Fabric> {
    let text = crate::files::read_input_text(file, 1 << 20).map_err(|source| Error::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let bad = |why: String| {
        Error::bad_data(
            file.display().to_string(),
            format!("not a lab's topology: {why}"),
        )
    };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if !value.is_object() {
        return Err(bad("it is not a JSON object".into()));
    }
    let fabric: Fabric =
        serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
    fabric.check().map_err(|e| match e {
        Error::Config(m) => bad(m),
        e => e,
    })?;
    Ok(fabric)
}

/// `--calibration`: the α-β-γ model, its terms and where each came from, and each traced
/// step's sync predicted beside the measured one. Returns the predicted syncs, one a step.
pub(super) fn calibrated_model(
    a: &NetworkArgs,
    trace: &serde_json::Value,
    steps: &[link::TracedStep],
    rate: f64,
) -> Result<Option<Vec<f64>>> {
    let Some(file) = &a.calibration else {
        return Ok(None);
    };
    let ((r_eff, why), r_cal) = bottleneck_rates(a, trace, steps, rate)?;
    let c = calibrate::calibrate(file, r_cal)?;
    write_model(a, &c)?;
    let beta = calibrate::beta(r_eff);
    print_terms(&c, beta, &why);
    Ok(Some(print_predictions(trace, steps, &c, beta)))
}

/// The slowest rate the ring's flows get, with why: in the job over its traced steps, and in
/// the calibration (which ran the job's ring on the same hosts). Without --topology, --link's.
fn bottleneck_rates(
    a: &NetworkArgs,
    trace: &serde_json::Value,
    steps: &[link::TracedStep],
    rate: f64,
) -> Result<((f64, String), f64)> {
    let Some(t) = &a.topology else {
        return Ok((
            (rate, format!("--link, {}", link::rate_words(rate))),
            rate,
        ));
    };
    let fabric = read_fabric(t)?;
    let job = flows_on_busiest_uplink(a.links.as_deref(), Some(traced_window(a, trace, steps)?))?;
    let cal = flows_on_busiest_uplink(a.calibration_links.as_deref(), None)?;
    Ok((
        calibrate::bottleneck(&fabric, job)?,
        calibrate::bottleneck(&fabric, cal)?.0,
    ))
}

/// How many ring flows shared the busiest uplink, from the link counters in `file`: over
/// `window` (the job's traced steps), or over the whole file (the calibration's run, its own
/// connections hashed anew), and the uplink's name. None without counters.
fn flows_on_busiest_uplink(
    file: Option<&std::path::Path>,
    window: Option<(f64, f64)>,
) -> Result<Option<(usize, String)>> {
    let Some(file) = file else { return Ok(None) };
    let tracks = links::read(file)?;
    let window = window.unwrap_or_else(|| {
        let all = tracks.iter().flat_map(|t| t.samples.iter().map(|s| s.0));
        let (lo, hi) = all.fold((f64::MAX, 0.0f64), |(lo, hi), t| (lo.min(t), hi.max(t)));
        (lo, hi)
    });
    Ok(calibrate::ring_flows_on_busiest_uplink(&tracks, window))
}

/// The terms into DIR/model.json, for `network --project --model` to project from.
fn write_model(a: &NetworkArgs, c: &Calibration) -> Result<()> {
    let model = a.out.join("model.json");
    if std::fs::create_dir_all(&a.out).is_ok() {
        crate::files::write_file(
            &model,
            serde_json::to_string_pretty(c)
                .expect("a calibration")
                .as_bytes(),
            "the calibrated model",
            "an earlier file of that name is untouched",
        )?;
    }
    Ok(())
}

/// The model's terms, where each came from, and where α and the bytes cost alike.
fn print_terms(c: &Calibration, beta: f64, why: &str) {
    println!("the α-β-γ model of the ring's sync: messages·α + bytes·(β + γ)");
    println!(
        "  α = {:.1} µs a message exchange and γ = {:.2} ns a byte on the host: fitted (worst error {:.0} %) to {}",
        c.alpha * 1e6,
        c.gamma * 1e9,
        100.0 * c.worst_error,
        c.source
    );
    println!(
        "  β = {:.2} ns a payload byte: the slowest rate the ring's flows get, {why}, × 1514/1448 for the frames' headers",
        beta * 1e9
    );
    println!(
        "  the crossover where α and the bytes cost alike: α/(β + γ) = {:.0} B a message",
        c.alpha / (beta + c.gamma)
    );
}

/// Each traced step's sync predicted beside the measured ones, a row a step and the means;
/// returns the predictions.
fn print_predictions(
    trace: &serde_json::Value,
    steps: &[link::TracedStep],
    c: &Calibration,
    beta: f64,
) -> Vec<f64> {
    // Measured: rank 0's sync, and the sync of the rank that arrived last (the transfer
    // alone; the others also waited for it, which is the ranks' compute, not the network).
    let by_step = wire::syncs_by_step(trace);
    println!(
        "{:>6} {:>10} {:>9} {:>13} {:>14} {:>18} {:>8}",
        "step", "bytes", "messages", "predicted ms", "rank 0's ms", "last to arrive ms", "error"
    );
    let (mut sum_p, mut sum_m, mut sum_last) = (0.0, 0.0, 0.0);
    let mut predictions = Vec::new();
    for s in steps {
        let predicted = s.messages as f64 * c.alpha + s.bytes_sent as f64 * (beta + c.gamma);
        predictions.push(predicted);
        let measured = s.allreduce_us * 1e-6;
        let last = by_step
            .get(&s.step)
            .and_then(|v| v.iter().copied().reduce(f64::min))
            .map_or(measured, |us| us * 1e-6);
        sum_p += predicted;
        sum_m += measured;
        sum_last += last;
        println!(
            "{:>6} {:>10} {:>9} {:>13.3} {:>14.3} {:>18.3} {:>7.0}%",
            s.step,
            s.bytes_sent,
            s.messages,
            predicted * 1e3,
            measured * 1e3,
            last * 1e3,
            100.0 * (predicted - last) / last.max(1e-12)
        );
    }
    let n = steps.len().max(1) as f64;
    println!(
        "  over these steps: predicted {:.3} ms a step, measured {:.3} ms on the rank that arrived last: {:+.0} % \
         (rank 0's sync {:.3} ms, with its wait for the others)",
        1e3 * sum_p / n,
        1e3 * sum_last / n,
        100.0 * (sum_p - sum_last) / sum_last.max(1e-12),
        1e3 * sum_m / n
    );
    predictions
}

/// The traced steps' stretch on the wall clock (unix µs), from the trace's origin.
fn traced_window(
    a: &NetworkArgs,
    trace: &serde_json::Value,
    steps: &[link::TracedStep],
) -> Result<(f64, f64)> {
    let origin = trace["otherData"]["origin_unix_us"]
        .as_f64()
        .filter(|o| o.is_finite() && *o > 0.0)
        .ok_or_else(|| {
            Error::bad_data(
                a.trace.as_ref().expect("required").display().to_string(),
                "the trace has no origin_unix_us (written before --links existed): record it again",
            )
        })?;
    let (first, last) = (steps.first().expect("steps"), steps.last().expect("steps"));
    Ok((
        origin + first.start_us,
        origin + last.start_us + last.compute_us + last.allreduce_us,
    ))
}

/// `--links`: every link of the lab's fabric over the traced steps (the trace's origin puts the
/// samples on its clock): a table and the heat map, its window a few per step.
pub(super) fn fabric_links(
    a: &NetworkArgs,
    file: &std::path::Path,
    trace: &serde_json::Value,
    steps: &[link::TracedStep],
) -> Result<()> {
    let tracks = links::read(file)?;
    let (from, to) = traced_window(a, trace, steps)?;
    let origin = from - steps[0].start_us;
    let mut lengths: Vec<f64> = steps
        .iter()
        .map(|s| s.compute_us + s.allreduce_us)
        .collect();
    lengths.sort_by(f64::total_cmp);
    // A few windows a step, at least 1 ms (the sampler's period).
    let window = (lengths[lengths.len() / 2] / 8.0).max(1000.0);
    let (rows, cells) = links::utilisation(&tracks, (from, to), window);
    println!(
        "every link of the fabric over the {} traced steps ({:.1} ms; windows of {:.1} ms), from {}:",
        steps.len(),
        (to - from) / 1e3,
        window / 1e3,
        file.display()
    );
    // The shaper's promise checked at the sampler's own period: the busiest 1 ms window (a
    // frame counts whole when it leaves the queue, so a link can read one frame above its rate).
    let ms = (to - from) / 1000.0;
    let (fine, _) = links::utilisation(&tracks, (from, to), 1000.0);
    let fine_ms = ms / ms.ceil().clamp(1.0, links::MAX_COLUMNS as f64);
    print_link_table(&rows, &fine, fine_ms);
    // The fabric's picture again, each link's bytes and busiest window written on it.
    if let Some(t) = &a.topology {
        draw_loaded_fabric(a, t, &rows, &fine)?;
    }
    let marks: Vec<f64> = steps
        .iter()
        .map(|s| (origin + s.start_us - from) / 1e3)
        .collect();
    let title =
        "every link's utilisation (white idle, dark red line rate, purple above), steps marked";
    for p in links::heatmap(&a.out, title, &rows, &cells, ((to - from) / 1e3, &marks))? {
        println!("picture: {}", p.display());
    }
    Ok(())
}

/// A row a link: its bytes, mean and peak busy over the windows, its busiest `fine_ms` window
/// (from `fine`), and for a leaf's uplink how many ring flows its bytes come to; then the
/// busiest uplink.
fn print_link_table(rows: &[links::LinkUse], fine: &[links::LinkUse], fine_ms: f64) {
    // A ring flow's bytes: what a host sent, on average (every rank sends its neighbour alike).
    let hosts: Vec<u64> = rows
        .iter()
        .filter(|r| r.name.starts_with('h') && r.name.ends_with("tx"))
        .map(|r| r.bytes)
        .collect();
    let flow = hosts.iter().sum::<u64>() as f64 / hosts.len().max(1) as f64;
    println!(
        "{:>12} {:>12} {:>10} {:>10} {:>12} {:>11}",
        "link",
        "bytes",
        "mean busy",
        "peak busy",
        format!("peak {fine_ms:.1} ms"),
        "ring flows"
    );
    for (r, f) in rows.iter().zip(fine) {
        let flows = match r.name.starts_with('l') && flow > 0.0 {
            true => format!("{:.0}", r.bytes as f64 / flow),
            false => String::new(),
        };
        println!(
            "{:>12} {:>12} {:>9.1}% {:>9.1}% {:>11.1}% {:>11}",
            r.name,
            r.bytes,
            100.0 * r.mean,
            100.0 * r.peak,
            100.0 * f.peak,
            flows
        );
    }
    if let Some(up) = rows
        .iter()
        .filter(|r| r.name.contains("-s"))
        .max_by(|x, y| x.bytes.cmp(&y.bytes))
    {
        println!(
            "busiest uplink: {} ({} bytes, peak {:.1} %)",
            up.name,
            up.bytes,
            100.0 * up.peak
        );
    }
}

/// The lab's fabric (`topology`) drawn again with each link's bytes and busiest 1 ms window
/// (from `fine`) written on it, each direction of a link on its own side.
fn draw_loaded_fabric(
    a: &NetworkArgs,
    topology: &std::path::Path,
    rows: &[links::LinkUse],
    fine: &[links::LinkUse],
) -> Result<()> {
    let mut loads = fabric::Loads::new();
    for (r, f) in rows.iter().zip(fine) {
        let Some((name, dir)) = r.name.rsplit_once(' ') else {
            continue;
        };
        let l = loads.entry(name.to_string()).or_default();
        if dir == "tx" {
            (l.tx, l.peak_tx) = (r.bytes, f.peak);
        } else {
            (l.rx, l.peak_rx) = (r.bytes, f.peak);
        }
    }
    for p in fabric::topology(&a.out, &read_fabric(topology)?, Some(&loads))? {
        println!(
            "picture: {} (each link's bytes and busiest 1 ms, ↑ from its host or leaf)",
            p.display()
        );
    }
    Ok(())
}

#[derive(Debug, Clone, Args)]
pub struct LabLinksArgs {
    /// The file to write (links.tsv).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Microseconds between two samples.
    #[arg(long, value_name = "US", default_value_t = 1000)]
    pub every_us: u64,
    /// The links: NAME=PID:IFACE:RATE (the counters of IFACE in the network namespace of
    /// process PID, a link of line rate RATE).
    #[arg(required = true)]
    pub links: Vec<String>,
}

/// `gpu-train lab-links`: samples the links until SIGTERM or Ctrl-C, then writes the file.
pub fn run_lab_links(a: &LabLinksArgs) -> Result<()> {
    let specs = a
        .links
        .iter()
        .map(|s| links::parse_spec(s))
        .collect::<Result<Vec<_>>>()?;
    if !(100..=1_000_000).contains(&a.every_us) {
        return Err(Error::Config("--every-us: from 100 to 1,000,000".into()));
    }
    crate::files::check_paths(&[], &[crate::files::Output::File("--out", &a.out)])?;
    // The lab that started the sampler may be killed with -9, which runs none of its traps:
    // the sampler is then stopped too (SIGTERM when its parent goes), and writes what it has.
    // SAFETY: prctl with an integer argument; getppid cannot fail.
    let parent = unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        libc::getppid()
    };
    static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if parent == 1 {
        STOP.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    let _ = ctrlc::set_handler(|| STOP.store(true, std::sync::atomic::Ordering::SeqCst));
    links::sample(&specs, Duration::from_micros(a.every_us), &a.out, &STOP)
}
