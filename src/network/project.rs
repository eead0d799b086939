//! `gpu-train network --project`: from this model to a cluster. The α-β model of an all-reduce
//! (α a message, β a byte), α fitted to `allreduce-bench`'s measurements where given, β from
//! the link's line rate and the fabric's bottleneck, projected onto a model and a cluster.

use super::calibrate::Calibration;
use super::inputs::{BenchRow, NetworkArgs};
use super::link::{self, AlphaBeta};
use super::plot;
use crate::error::{Error, Result};
use crate::parallel::duration::parse_duration;

/// α for the projection: the larger of --latency and the per-message cost fitted (α + β·bytes
/// a message) to the in-process ring's measurements in `from` (allreduce-bench --json), printed
/// with how well the fit matches them.
fn fitted_alpha(from: &std::path::Path, latency: f64) -> Result<f64> {
    let rows: Vec<BenchRow> = serde_json::from_str(
        &crate::files::read_input_text(from, 16 << 20).map_err(|source| Error::Io {
            path: from.to_path_buf(),
            source,
        })?,
    )
    .map_err(|e| {
        Error::bad_data(
            from.display().to_string(),
            format!("not allreduce-bench JSON: {e}"),
        )
    })?;
    // The in-process ring runs every replica's sends on one thread, one after another: its
    // time grows with all replicas' messages and bytes, N × the ring's per-replica counts.
    let load = |r: &BenchRow| {
        let n = r.replicas as f64;
        (n * 2.0 * (n - 1.0), n * r.bytes_on_wire as f64)
    };
    // Fitted on relative error (each point divided by its time): every size counts alike,
    // so the microsecond messages are not drowned by the 64 MB ones.
    let pts: Vec<(f64, f64, f64)> = rows
        .iter()
        .filter(|r| r.seconds.is_finite() && r.seconds > 0.0)
        .map(|r| {
            let (m, b) = load(r);
            (m / r.seconds, b / r.seconds, 1.0)
        })
        .collect();
    let f: AlphaBeta = link::fit(&pts)?;
    println!(
        "  α = {:.2} µs a message and β = {:.3} ns a byte ({:.2} GB/s) of this host's in-process ring, fitted to {} all-reduce measurements in {}",
        f.alpha * 1e6,
        f.beta * 1e9,
        1e-9 / f.beta.max(1e-30),
        rows.len(),
        from.display()
    );
    // How well the model fits what was measured.
    let errs: Vec<f64> = rows
        .iter()
        .map(|r| {
            let (m, b) = load(r);
            let t = m * f.alpha + b * f.beta;
            (t - r.seconds) / r.seconds
        })
        .collect();
    let worst = errs.iter().fold(0.0f64, |w, e| w.max(e.abs()));
    let big: Vec<f64> = rows
        .iter()
        .zip(&errs)
        .filter(|(r, _)| r.bytes >= 64 << 10)
        .map(|(_, e)| e.abs())
        .collect();
    match big.iter().copied().reduce(f64::max) {
        Some(b) => println!(
            "  the model against those measurements: worst error {:.0} % (small messages, where this host's timing noise dominates), {:.0} % at 64 KB and above",
            100.0 * worst,
            100.0 * b
        ),
        None => println!(
            "  the model against those measurements: worst error {:.0} % (none was 64 KB or larger)",
            100.0 * worst
        ),
    }
    // The projection's gradients are megabytes to gigabytes: judge the fit where it matters
    // (or on everything, when nothing that large was measured).
    let judged = big.iter().copied().reduce(f64::max).unwrap_or(worst);
    if judged > 0.5 {
        // Which term the misses point at: the per-message one (the small messages), or the
        // per-byte one (the large).
        let worst_at = rows
            .iter()
            .zip(&errs)
            .max_by(|x, y| x.1.abs().total_cmp(&y.1.abs()))
            .map_or(0, |(r, _)| r.bytes);
        let term = if worst_at >= 64 << 10 {
            "the per-byte term β cannot explain the large messages (time does not grow in step with the bytes: the in-process ring's cost a byte changes with size, e.g. as its buffers outgrow the CPU's caches)"
        } else {
            "the per-message term α cannot explain the small messages (this host's timing noise is of their size)"
        };
        println!(
            "  WARNING: the α-β model misses these measurements by {:.0} %: {term}; do not trust what follows. \
             Measure again on an idle machine, with messages of 1 MB and more (allreduce-bench --max-bytes), \
             or leave out --from and give --latency, or --model from a lab run",
            100.0 * judged
        );
    }
    let alpha = latency.max(f.alpha);
    println!(
        "  α for the projection: {:.2} µs (the larger of the fit and --latency)",
        alpha * 1e6
    );
    Ok(alpha)
}

/// The rate each algorithm's flows get on the projected fabric, printed as assumptions: the
/// slowest link a flow crosses sets it.
/// - One switch: every GPU's own link (a non-blocking switch adds no bottleneck).
/// - Leaves of K GPUs joined by uplinks: the ring, in host order, crosses each leaf's uplink
///   with one flow each way, so it runs at min(link, uplink); a tree's (or any pattern's) K
///   flows out of a leaf at once share the uplink: min(link, uplink / K).
/// - A straggler's link bounds both: every chunk of a ring passes it, and a tree waits for it.
fn bottlenecks(a: &NetworkArgs, rate: f64, link_name: &str) -> Result<Bottlenecks> {
    // A rate flag's error names that flag (parse_rate speaks of --link).
    let rate_of = |flag: &str, v: &str| {
        link::parse_rate(v).map_err(|e| match e {
            Error::Config(m) => Error::Config(m.replacen("--link", flag, 1)),
            e => e,
        })
    };
    let mut ring = (rate, format!("each GPU's own link, {link_name}"));
    let mut tree = ring.clone();
    let mut lines = Vec::new();
    if let Some(k) = a.hosts_per_leaf {
        // Equal leaves, as scripts/lab makes them; a leaf holding every GPU is one switch.
        let whole = k >= 1.0 && k <= a.gpus && k.fract() == 0.0;
        if !whole || a.gpus % k != 0.0 {
            return Err(Error::Config(format!(
                "--hosts-per-leaf {}: a whole number from 1 to --gpus ({}) that divides it (equal leaves)",
                a.hosts_per_leaf.map_or(String::new(), |k| k.to_string()),
                a.gpus
            )));
        }
        let (up, up_name) = match &a.uplink {
            Some(u) => rate_of("--uplink", u)?,
            None => (rate, link_name.to_string()),
        };
        let leaves = a.gpus / k;
        lines.push(format!(
            "  fabric: {leaves} lea{} of {k} GPU{}, each joined to the spine by a {up_name} uplink: oversubscription {}:1",
            if leaves == 1.0 { "f" } else { "ves" },
            if k == 1.0 { "" } else { "s" },
            significant(k * rate / up)
        ));
        if leaves > 1.0 {
            if up < ring.0 {
                let why = format!(
                    "a leaf's uplink, {up_name} (the ring crosses it with one flow each way)"
                );
                ring = (up, why);
            }
            if up / k < tree.0 {
                tree = (
                    up / k,
                    format!("a leaf's uplink, {up_name}, shared by {k} flows"),
                );
            }
        } else {
            lines.push("  one leaf holds every GPU: no traffic crosses the spine".into());
        }
    } else if a.uplink.is_some() {
        return Err(Error::Config(
            "--uplink needs --hosts-per-leaf (one switch has no uplinks)".into(),
        ));
    }
    if let Some(s) = &a.slowest {
        let (slow, slow_name) = rate_of("--slowest", s)?;
        for (r, why) in [&mut ring, &mut tree] {
            if slow < *r {
                *r = slow;
                *why = format!("the slowest GPU's link, {slow_name} (every chunk waits for it)");
            }
        }
    }
    lines.push(format!("  β, ring: the bottleneck is {}", ring.1));
    lines.push(format!("  β, tree: the bottleneck is {}", tree.1));
    Ok(Bottlenecks {
        ring: ring.0,
        tree: tree.0,
        lines,
    })
}

/// The rates the projection's ring and tree run at, and the lines that say why.
struct Bottlenecks {
    ring: f64,
    tree: f64,
    lines: Vec<String>,
}

/// A ratio with three significant digits, however large or small.
fn significant(x: f64) -> String {
    if (0.01..1e6).contains(&x) {
        format!("{:.3}", x)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        format!("{x:.2e}")
    }
}

/// `network --project`: the sync of --params FP32 gradients over --gpus, by ring and by tree,
/// beside --step-compute: first every assumption it rests on, then each algorithm's sync and
/// what it does to the step, then three projected steps as a picture.
pub(super) fn project(a: &NetworkArgs, rate: f64, link_name: &str, latency: f64) -> Result<()> {
    let compute = parse_duration(&a.step_compute)?;
    // Bounds a thousand times past today's largest models and clusters: past them the
    // projection's numbers (and its picture's axis) stop meaning anything.
    if !(1.0..=1e15).contains(&a.params) || !(2.0..=1e7).contains(&a.gpus) {
        return Err(Error::Config(format!(
            "--params {} and --gpus {}: --params from 1 to 1e15, --gpus from 2 to 1e7",
            a.params, a.gpus
        )));
    }
    // Every flag is checked before anything is printed or drawn.
    let fabric = bottlenecks(a, rate, link_name)?;
    let gamma = parse_duration(&a.gamma)?;
    if !(0.0..=1e-6).contains(&gamma) {
        return Err(Error::Config(format!(
            "--gamma {}: a host's cost a byte, from 0 to 1us",
            a.gamma
        )));
    }
    let model = a.model.as_deref().map(Calibration::read).transpose()?;
    println!("assumptions:");
    let (alpha, gamma) = host_terms(a, model.as_ref(), latency, gamma)?;
    for line in &fabric.lines {
        println!("{line}");
    }
    println!(
        "  gradients in FP32 (4 bytes a parameter), one all-reduce of the whole gradient a step, no overlap of compute and sync"
    );
    println!(
        "projection: {:.3e} parameters ({:.1} GB of gradient) on {} GPUs, {:.0} ms of compute a step",
        a.params,
        4.0 * a.params / 1e9,
        a.gpus,
        compute * 1e3
    );
    let proj = [
        link::project(a.params, a.gpus, fabric.ring, (alpha, gamma), compute)[0].clone(),
        link::project(a.params, a.gpus, fabric.tree, (alpha, gamma), compute)[1].clone(),
    ];
    print_syncs(&proj, rate, compute);
    draw_ring_steps(a, link_name, &proj[0], compute)
}

/// α and γ for the projection, each printed with where it came from: a lab's calibrated model
/// (--model), α fitted to allreduce-bench (--from), or the flags (--latency, --gamma).
fn host_terms(
    a: &NetworkArgs,
    model: Option<&Calibration>,
    latency: f64,
    gamma: f64,
) -> Result<(f64, f64)> {
    let (mut alpha, mut gamma) = (latency, gamma);
    match (model, &a.from) {
        (Some(m), _) => {
            (alpha, gamma) = (latency.max(m.alpha), m.gamma);
            println!(
                "  α = {:.2} µs a message and γ = {:.2} ns a byte: calibrated in a lab run ({}; {})",
                alpha * 1e6,
                gamma * 1e9,
                a.model.as_ref().expect("given").display(),
                m.source
            );
            println!(
                "    (γ is that lab host's network stack; a cluster whose NICs read the GPUs' memory directly, as with GPUDirect RDMA, has γ near 0: leave out --model and give --latency)"
            );
        }
        (None, Some(from)) => alpha = fitted_alpha(from, latency)?,
        (None, None) => println!(
            "  α = {:.2} µs a message (--latency; give --from allreduce-bench.json to fit it, or --model from a lab run)",
            alpha * 1e6
        ),
    }
    if model.is_none() {
        println!(
            "  γ = {:.2} ns a byte on the host beyond the wire (--gamma)",
            gamma * 1e9
        );
    }
    Ok((alpha, gamma))
}

/// A line per algorithm: its sync, the bytes on each GPU's link, how busy that link is and how
/// long the GPU waits.
fn print_syncs(proj: &[link::Projection], rate: f64, compute: f64) {
    for p in proj {
        // The GPU's own link is busy while its bytes move at its line rate; where a slower
        // link sets the pace, it idles for the rest of the sync, and the GPU waits all of it.
        let own_link_s = 8.0 * p.bytes_per_gpu / rate;
        println!(
            "  {:<5} sync {:>10.1} ms, {:>10} on each GPU's link, that link busy {:>5.1} %, GPU waiting {:>5.1} % of the step",
            p.algorithm,
            p.sync_s * 1e3,
            if p.bytes_per_gpu >= 1e8 {
                format!("{:.2} GB", p.bytes_per_gpu / 1e9)
            } else {
                format!("{:.0} KB", p.bytes_per_gpu / 1e3)
            },
            100.0 * own_link_s.min(p.sync_s) / (compute + p.sync_s),
            100.0 * p.busy
        );
    }
}

/// Three projected steps of the ring (`ring`) as the link-utilisation picture, unless they are
/// longer than a picture's axis holds.
fn draw_ring_steps(
    a: &NetworkArgs,
    link_name: &str,
    ring: &link::Projection,
    compute: f64,
) -> Result<()> {
    let steps: Vec<link::LinkStep> = (0..3)
        .map(|i| link::LinkStep {
            step: i,
            compute_s: compute,
            sync_s: ring.sync_s,
            measured_sync_s: 0.0,
            bytes: ring.bytes_per_gpu as u64,
        })
        .collect();
    let total_ms = 3.0 * (compute + ring.sync_s) * 1e3;
    if total_ms >= 1e12 {
        println!(
            "picture: none (three steps of {:.3e} s are more than a picture's axis holds)",
            total_ms / 3e3
        );
        return Ok(());
    }
    let title = format!(
        "projected: {:.0e} parameters, {} GPUs, {link_name}, ring",
        a.params, a.gpus
    );
    for p in plot::link_utilisation(&a.out, "link-utilisation-projected", &title, &steps)? {
        println!("picture: {}", p.display());
    }
    Ok(())
}
