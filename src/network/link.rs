//! Links and the time a gradient sync takes on them: the utilisation of Figure 3-7, computed
//! from a run's own timeline, and the latency-bandwidth (α-β) model that projects it to a
//! cluster.
//!
//! A data-parallel step, per replica, as the chapter draws it:
//! ```text
//! compute (forward, backward: the link idles) ──► sync (all-reduce: the link runs at line rate)
//! ```
//! With the replica's bytes on the wire B (the ring's 2(N−1)/N × the gradient), a link of rate R
//! bit/s and a per-message latency α, a ring sync takes 2(N−1)·α + 8B/R; the link is busy for
//! 8B/R of each step, and with no overlap the GPU waits the whole sync.

use crate::error::{Error, Result};
use serde_json::Value;

/// A link rate in bit/s from a name or a number: 1gbit, 10gbit, 100gbit, 400gbit, nvlink4,
/// pcie4x16, pcie5x16, or e.g. 25gbit, 2.5e9.
pub fn parse_rate(s: &str) -> Result<(f64, String)> {
    let named = [
        ("nvlink4", 3.6e12, "NVLink 4 (450 GB/s each way)"),
        ("pcie4x16", 252e9, "PCIe 4.0 x16 (31.5 GB/s each way)"),
        ("pcie5x16", 504e9, "PCIe 5.0 x16 (63 GB/s each way)"),
    ];
    if let Some((_, r, d)) = named.iter().find(|(n, _, _)| *n == s) {
        return Ok((*r, d.to_string()));
    }
    let bad = || {
        Error::Config(format!(
            "--link {s}: expected 1gbit, 10gbit, 100gbit, 400gbit, nvlink4, pcie4x16, pcie5x16, or a rate such as 25gbit or 2.5e9 (bit/s)"
        ))
    };
    let lower = s.to_ascii_lowercase();
    let (num, mult) = if let Some(n) = lower.strip_suffix("tbit") {
        (n, 1e12)
    } else if let Some(n) = lower.strip_suffix("gbit") {
        (n, 1e9)
    } else if let Some(n) = lower.strip_suffix("mbit") {
        (n, 1e6)
    } else if let Some(n) = lower.strip_suffix("kbit") {
        (n, 1e3)
    } else {
        (lower.as_str(), 1.0)
    };
    let v: f64 = num.parse().map_err(|_| bad())?;
    let rate = v * mult;
    // From a modem's 1 kbit/s to 1 Pbit/s: outside that the pictures' time axis means nothing.
    if !(rate.is_finite() && (1e3..=1e15).contains(&rate)) {
        return Err(Error::Config(format!(
            "--link {s}: a rate from 1kbit to 1000tbit (1e3 to 1e15 bit/s)"
        )));
    }
    Ok((rate, rate_words(rate)))
}

/// A rate as people write it: 100 Mbit/s, 1 Gbit/s, 400 Gbit/s, 2 kbit/s.
pub fn rate_words(bps: f64) -> String {
    let (unit, scale) = match bps {
        r if r >= 1e12 => ("Tbit/s", 1e12),
        r if r >= 1e9 => ("Gbit/s", 1e9),
        r if r >= 1e6 => ("Mbit/s", 1e6),
        _ => ("kbit/s", 1e3),
    };
    // At most three significant digits, no trailing zeros: 100, 2.5, 0.25 never (a smaller unit).
    let v = bps / scale;
    let text = format!("{v:.2}");
    format!("{} {unit}", text.trim_end_matches('0').trim_end_matches('.'))
}

/// One traced step of one replica: when it started, its compute (everything but the
/// all-reduce), the all-reduce as measured, and the bytes this replica sent in it.
#[derive(Debug, Clone, PartialEq)]
pub struct TracedStep {
    pub step: u64,
    pub start_us: f64,
    pub compute_us: f64,
    pub allreduce_us: f64,
    pub bytes_sent: u64,
    pub peers: u64,
    /// Messages replica 0 sent in the step's all-reduces (each pays the latency).
    pub messages: u64,
}

/// The latest time a trace may name, in µs from its start (about 11.6 days): far past any run
/// gpu-train traces, and a bound on the work of reading one.
pub const MAX_TRACE_US: f64 = 1e12;

/// Checks a whole trace before anything is read from it or printed: every span (`"ph": "X"`)
/// and counter (`"ph": "C"`) has a `ts` (and a span a `dur`) that is a number from 0 to
/// [`MAX_TRACE_US`], and a counter's values are numbers from 0 up. A trace with a time as text,
/// a negative duration or a time of 10^15 µs is refused naming the event, rather than read as
/// zeros (which printed "link busy 100 %") or walked window by window for hours.
pub fn check_trace(trace: &Value) -> Result<()> {
    let events = trace["traceEvents"]
        .as_array()
        .ok_or_else(|| Error::Config("not a trace: no traceEvents array".into()))?;
    for (i, e) in events.iter().enumerate() {
        let bad = |what: String| Error::Config(format!("not a usable trace: event {i} {what}"));
        if !e.is_object() {
            return Err(bad("is not a JSON object".into()));
        }
        let ph = e["ph"].as_str().unwrap_or("");
        let fields: &[&str] = match ph {
            "X" => &["ts", "dur"],
            "C" => &["ts"],
            _ => continue,
        };
        for &f in fields {
            match e[f].as_f64() {
                Some(v) if (0.0..=MAX_TRACE_US).contains(&v) => {}
                Some(v) => {
                    return Err(bad(format!(
                        "has {f} = {v} µs: a time in a trace is from 0 to {MAX_TRACE_US:e} µs"
                    )))
                }
                None => return Err(bad(format!("has {f} = {}: not a number", e[f]))),
            }
        }
        if !(e["pid"].is_null() || e["pid"].is_u64()) || !(e["tid"].is_null() || e["tid"].is_u64())
        {
            return Err(bad(
                "has a pid or tid that is not a whole number from 0 up".into()
            ));
        }
        if ph == "C" {
            let args = e["args"]
                .as_object()
                .ok_or_else(|| bad("is a counter without args".into()))?;
            if let Some((k, v)) = args
                .iter()
                .find(|(_, v)| !v.as_f64().is_some_and(|x| x.is_finite() && x >= 0.0))
            {
                return Err(bad(format!(
                    "has the counter {k} = {v}: not a number from 0 up"
                )));
            }
        }
        if ph == "X" {
            let name = e["name"].as_str().unwrap_or("");
            if name.starts_with("all-reduce") && !e["args"]["bytes_sent"].is_u64() {
                return Err(bad(format!(
                    "is an all-reduce without a whole number of bytes_sent in its args ({})",
                    e["args"]
                )));
            }
            for k in ["bytes_sent", "peers", "messages", "step"] {
                let v = &e["args"][k];
                // 2^48 bytes (256 TB) in one step is far past any run; sums stay exact.
                if !(v.is_null() || v.as_u64().is_some_and(|x| x < 1 << 48)) {
                    return Err(bad(format!(
                        "has {k} = {v}: not a whole number from 0 to 2^48"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// The steps of replica 0 of rank 0 in a trace written by `--trace`.
pub fn steps_from_trace(trace: &Value) -> Result<Vec<TracedStep>> {
    check_trace(trace)?;
    let events = trace["traceEvents"]
        .as_array()
        .ok_or_else(|| Error::Config("not a trace: no traceEvents array".into()))?;
    let mut spans: Vec<&Value> = events
        .iter()
        .filter(|e| e["ph"] == "X" && e["pid"] == 0 && e["tid"] == 0)
        .collect();
    spans.sort_by(|a, b| {
        a["ts"]
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&b["ts"].as_f64().unwrap_or(0.0))
    });
    let mut steps: Vec<TracedStep> = Vec::new();
    for e in spans {
        let name = e["name"].as_str().unwrap_or("");
        let (ts, dur) = (
            e["ts"].as_f64().unwrap_or(0.0),
            e["dur"].as_f64().unwrap_or(0.0),
        );
        if name.starts_with("stage + record") {
            steps.push(TracedStep {
                step: e["args"]["step"].as_u64().unwrap_or(steps.len() as u64),
                start_us: ts,
                compute_us: 0.0,
                allreduce_us: 0.0,
                bytes_sent: 0,
                peers: 1,
                messages: 0,
            });
        }
        let Some(s) = steps.last_mut() else { continue };
        if name.starts_with("all-reduce") {
            s.allreduce_us += dur;
            s.peers = e["args"]["peers"].as_u64().unwrap_or(1);
            let bytes = e["args"]["bytes_sent"].as_u64().unwrap_or(0);
            let handed = e["args"]["bytes_are"]
                .as_str()
                .is_some_and(|b| b.starts_with("handed to MPI_Allreduce"));
            if handed && s.peers > 1 {
                // --allreduce mpi: only the buffer handed to MPI_Allreduce is known. Open MPI
                // sums large buffers as a ring does (reduce-scatter, then all-gather): its
                // wire bytes and messages are taken as a ring's, 2(N−1)/N of the buffer in
                // 2(N−1) messages.
                let n = s.peers;
                s.bytes_sent += bytes * 2 * (n - 1) / n;
                s.messages += 2 * (n - 1);
            } else {
                s.bytes_sent += bytes;
                s.messages += e["args"]["messages"].as_u64().unwrap_or(0);
            }
        } else if name != "snapshot write" {
            s.compute_us += dur;
        }
    }
    if !steps.iter().any(|s| s.bytes_sent > 0) {
        return Err(Error::Config(
            "the trace holds no all-reduce: record it from data-parallel replicas (--devices 0,0 or --cpu --replicas 2, with --trace)".into(),
        ));
    }
    Ok(steps)
}

/// One step on a given link: compute as measured, the sync at the link's rate.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkStep {
    pub step: u64,
    pub compute_s: f64,
    pub sync_s: f64,
    /// The sync as measured in the run the trace came from.
    pub measured_sync_s: f64,
    pub bytes: u64,
}

impl LinkStep {
    /// Fraction of the step the link is busy.
    pub fn busy(&self) -> f64 {
        self.sync_s / (self.compute_s + self.sync_s).max(1e-12)
    }
}

/// The traced steps replayed on a link of `rate` bit/s with per-message latency `alpha` s.
pub fn on_link(steps: &[TracedStep], rate: f64, alpha: f64) -> Vec<LinkStep> {
    steps
        .iter()
        .map(|s| {
            // Every message of every bucket pays the latency once.
            let messages = s.messages;
            LinkStep {
                step: s.step,
                compute_s: s.compute_us * 1e-6,
                sync_s: messages as f64 * alpha + 8.0 * s.bytes_sent as f64 / rate,
                measured_sync_s: s.allreduce_us * 1e-6,
                bytes: s.bytes_sent,
            }
        })
        .collect()
}

/// The α-β model of an all-reduce: t = messages·α + bytes_on_the_wire·β.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlphaBeta {
    /// Seconds per message (latency).
    pub alpha: f64,
    /// Seconds per byte (1 / bandwidth).
    pub beta: f64,
}

/// Least-squares fit of t = m·α + b·β over `(messages, bytes, seconds)` points.
pub fn fit(points: &[(f64, f64, f64)]) -> Result<AlphaBeta> {
    // Normal equations of a two-parameter linear model with no intercept.
    let (mut smm, mut smb, mut sbb, mut smt, mut sbt) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(m, b, t) in points {
        smm += m * m;
        smb += m * b;
        sbb += b * b;
        smt += m * t;
        sbt += b * t;
    }
    let det = smm * sbb - smb * smb;
    if points.len() < 2 || det.abs() < 1e-30 {
        return Err(Error::Config(
            "too few all-reduce measurements to fit α and β".into(),
        ));
    }
    Ok(AlphaBeta {
        alpha: ((smt * sbb - sbt * smb) / det).max(0.0),
        beta: ((sbt * smm - smt * smb) / det).max(0.0),
    })
}

/// A projected step for a model of `params` FP32 parameters on `gpus` GPUs.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    pub algorithm: &'static str,
    pub sync_s: f64,
    pub busy: f64,
    pub bytes_per_gpu: f64,
}

/// Ring and tree all-reduce of `params` FP32 gradients over `gpus` GPUs on links of `rate`
/// bit/s with latency `alpha`, beside `compute` seconds of computation.
/// `gamma`: seconds a byte costs on the host beyond the wire (copies, checksums, sums; the lab
/// calibrates it, `network --gamma` names it).
pub fn project(
    params: f64,
    gpus: f64,
    rate: f64,
    (alpha, gamma): (f64, f64),
    compute: f64,
) -> [Projection; 2] {
    let s = 4.0 * params;
    let ring_bytes = 2.0 * (gpus - 1.0) / gpus * s;
    let ring = 2.0 * (gpus - 1.0) * alpha + ring_bytes * (8.0 / rate + gamma);
    // A tree reduces then broadcasts: log2(G) latencies each way. In bytes, every GPU but the
    // root sends its partial sum up once and every GPU but the leaves passes the result down:
    // (G − 1)·S up and (G − 1)·S down in all, 2(G − 1)/G × S a GPU on average, the ring's
    // count (NCCL's double binary tree, pipelined in chunks, spreads it so no GPU sends much
    // more: each is an inner node in one tree and a leaf in the other). So a tree wins on
    // latency only; for 2 GPUs the two are the same exchange.
    let tree_bytes = 2.0 * (gpus - 1.0) / gpus * s;
    let tree = 2.0 * gpus.log2().ceil() * alpha + tree_bytes * (8.0 / rate + gamma);
    [
        Projection {
            algorithm: "ring",
            sync_s: ring,
            busy: ring / (compute + ring),
            bytes_per_gpu: ring_bytes,
        },
        Projection {
            algorithm: "tree",
            sync_s: tree,
            busy: tree / (compute + tree),
            bytes_per_gpu: tree_bytes,
        },
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn rates_read_as_people_write_them() {
        assert_eq!(super::rate_words(1e8), "100 Mbit/s");
        assert_eq!(super::rate_words(1e9), "1 Gbit/s");
        assert_eq!(super::rate_words(2.5e10), "25 Gbit/s");
        assert_eq!(super::rate_words(4e11), "400 Gbit/s");
        assert_eq!(super::rate_words(1.5e9), "1.5 Gbit/s");
        assert_eq!(super::rate_words(2e3), "2 kbit/s");
    }

    use super::*;

    #[test]
    fn rates_and_the_fit() {
        assert_eq!(parse_rate("1gbit").unwrap().0, 1e9);
        assert_eq!(parse_rate("25gbit").unwrap().0, 25e9);
        assert_eq!(parse_rate("2.5e9").unwrap().0, 2.5e9);
        assert!(parse_rate("fast").is_err() && parse_rate("-1gbit").is_err());
        // Points made from α = 3 µs, β = 1 ns/byte are fitted back.
        let pts: Vec<(f64, f64, f64)> = [(2.0, 8.0), (2.0, 1e6), (6.0, 4e6), (6.0, 64.0)]
            .iter()
            .map(|&(m, b)| (m, b, m * 3e-6 + b * 1e-9))
            .collect();
        let f = fit(&pts).unwrap();
        assert!(
            (f.alpha - 3e-6).abs() < 1e-12 && (f.beta - 1e-9).abs() < 1e-15,
            "{f:?}"
        );
        // The ring's bytes per GPU tend to twice the gradient.
        let [ring, tree] = project(7e9, 1024.0, 400e9, (0.0, 0.0), 0.35);
        assert!((ring.bytes_per_gpu / (2.0 * 28e9) - 1.0).abs() < 1e-3);
        // 7e9 FP32 gradients are 28 GB. The ring: 2·(1023/1024)·28 GB = 55.945 GB a GPU, at
        // 400 Gbit/s 1.1189 s, busy 1.1189 / (1.1189 + 0.35 s of compute) of the step. The
        // tree moves the same bytes. With α = 5 µs the ring pays 2·1023 latencies, the tree
        // 2·log2(1024) = 20.
        let ring_s: f64 = 2.0 * 1023.0 / 1024.0 * 28e9 * 8.0 / 400e9;
        assert!((ring.sync_s - 1.118_906_25).abs() < 1e-9 && (ring_s - 1.118_906_25).abs() < 1e-9);
        assert!((ring.busy - 1.118_906_25 / (1.118_906_25 + 0.35)).abs() < 1e-12);
        assert!((tree.sync_s - 1.118_906_25).abs() < 1e-9);
        assert_eq!(tree.bytes_per_gpu, ring.bytes_per_gpu);
        // 2 GPUs: one exchange of the gradient either way, the same time, latencies included.
        let [ring2, tree2] = project(101_770.0, 2.0, 1e9, (5e-6, 0.0), 0.0);
        assert!((ring2.sync_s - (2.0 * 5e-6 + 8.0 * 407_080.0 / 1e9)).abs() < 1e-12);
        assert!(
            (tree2.sync_s - ring2.sync_s).abs() < 1e-12,
            "{tree2:?} vs {ring2:?}"
        );
        let [ring5, tree5] = project(7e9, 1024.0, 400e9, (5e-6, 0.0), 0.35);
        assert!((ring5.sync_s - ring.sync_s - 2046.0 * 5e-6).abs() < 1e-9);
        assert!((tree5.sync_s - tree.sync_s - 20.0 * 5e-6).abs() < 1e-9);
    }
}
