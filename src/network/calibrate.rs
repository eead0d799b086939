//! The α-β-γ model of a ring all-reduce, calibrated on the machine it predicts.
//!
//! A ring of N ranks sends 2(N−1) messages a rank, B bytes in all (2(N−1)/N × the gradient).
//! The line-rate model says B·β, β = 8/R s a byte on a link of R bit/s. Measured in the lab,
//! a sync takes longer, by two costs of the hosts themselves:
//!
//! * α, a fixed cost each message exchange pays: MPI's matching and progress, a TCP round
//!   trip, the scheduler waking a rank on a busy core;
//! * γ, a cost each byte pays on the host: copies into and out of socket buffers, checksums,
//!   the ring's own sums.
//!
//! sync = messages·α + B·(β + γ), β from the slowest link the ring crosses (a host's NIC, a
//! straggler's, or an uplink shared by k of the ring's flows: R/k), times the frames' own
//! bytes: a full TCP segment carries 1,448 bytes of payload in a 1,514-byte Ethernet frame
//! (Ethernet 14, IP 20, TCP 20 + 12 of timestamps), so a link of R bit/s moves payload at
//! R × 1448/1514 ([`FRAME_OVERHEAD`]). α and γ are fitted to
//! `allreduce-bench --mpi` of two ranks across the lab's own links (`scripts/lab` runs it
//! before the job: DIR/calibration.json), whose β is known from their line rate.

use crate::network::link::rate_words;
use super::inputs::BenchRow;
use crate::error::{Error, Result};
use std::path::Path;

/// Wire bytes per payload byte of a full-sized TCP segment at MTU 1500 (the lab's links).
pub const FRAME_OVERHEAD: f64 = 1514.0 / 1448.0;

/// β: seconds a payload byte takes on a link of `rate` bit/s, headers included.
pub fn beta(rate: f64) -> f64 {
    8.0 / rate * FRAME_OVERHEAD
}

/// α and γ, fitted, with what they were fitted to (also DIR/model.json, which `network
/// --project --model` reads back).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Calibration {
    /// Seconds a message.
    pub alpha: f64,
    /// Seconds a byte, on the hosts (beyond the wire's β).
    pub gamma: f64,
    /// The line rate of the links the calibration ran over, bit/s.
    pub rate: f64,
    /// How far the fitted model is from the calibration's own points (worst, relative).
    pub worst_error: f64,
    pub source: String,
}

/// Fits α and γ to the ring rows of an `allreduce-bench --mpi --json` file measured over links
/// of `rate` bit/s: t = 2(N−1)·α + B·(8/rate + γ), by least squares on relative error (every
/// size counts alike, 8 B as much as 4 MB).
pub fn calibrate(path: &Path, rate: f64) -> Result<Calibration> {
    let text = crate::files::read_input_text(path, 16 << 20).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |why: String| Error::bad_data(path.display().to_string(), why);
    let rows: Vec<BenchRow> =
        serde_json::from_str(&text).map_err(|e| bad(format!("not allreduce-bench JSON: {e}")))?;
    let ring: Vec<&BenchRow> = rows
        .iter()
        .filter(|r| {
            r.algorithm == "ring" && r.replicas >= 2 && r.seconds.is_finite() && r.seconds > 0.0
        })
        .collect();
    if ring.len() < 3 {
        return Err(bad(
            "fewer than 3 ring measurements to fit α and γ to".into()
        ));
    }
    // t/t = (m/t)·α + (B/t)·c: a fit of relative error, c the whole per-byte cost.
    let pts: Vec<(f64, f64, f64)> = ring
        .iter()
        .map(|r| {
            let m = 2.0 * (r.replicas as f64 - 1.0);
            (m / r.seconds, r.bytes_on_wire as f64 / r.seconds, 1.0)
        })
        .collect();
    let f = super::link::fit(&pts)?;
    let gamma = (f.beta - beta(rate)).max(0.0);
    let worst_error = ring
        .iter()
        .map(|r| {
            let m = 2.0 * (r.replicas as f64 - 1.0);
            let t = m * f.alpha + r.bytes_on_wire as f64 * (beta(rate) + gamma);
            ((t - r.seconds) / r.seconds).abs()
        })
        .fold(0.0, f64::max);
    Ok(Calibration {
        alpha: f.alpha,
        gamma,
        rate,
        worst_error,
        source: format!(
            "{} ring all-reduces of 8 B to {} B between {} ranks at {} in {}",
            ring.len(),
            ring.iter().map(|r| r.bytes).max().unwrap_or(0),
            ring[0].replicas,
            rate_words(rate),
            path.display()
        ),
    })
}

/// The slowest rate a ring's flow gets on a lab's fabric: every host's NIC (a straggler's
/// included), and in a routed fabric the busiest uplink direction, shared by the `shared` ring
/// flows the link counters say ECMP put on it ([`ring_flows_on_busiest_uplink`]). Returns the
/// rate and what sets it.
pub fn bottleneck(
    fabric: &super::fabric::Fabric,
    shared: Option<(usize, String)>,
) -> Result<(f64, String)> {
    let (host, _) = super::link::parse_rate(&fabric.host_rate)?;
    let mut best = (host, format!("each host's NIC, {}", rate_words(host)));
    if let Some((h, r)) = &fabric.slow_host {
        let (slow, _) = super::link::parse_rate(r)?;
        if slow < best.0 {
            best = (
                slow,
                format!("host {h}'s NIC, {} (the straggler)", rate_words(slow)),
            );
        }
    }
    if let Some((k, link)) = shared.filter(|(k, _)| *k >= 1) {
        let (uplink, _) = super::link::parse_rate(&fabric.uplink_rate)?;
        let share = uplink / k as f64;
        if share < best.0 {
            best = (
                share,
                format!(
                    "the uplink {link}: {} shared by {k} of the ring's flows (ECMP put them together)",
                    rate_words(uplink)
                ),
            );
        }
    }
    Ok(best)
}

/// How many of the ring's flows ECMP put on the busiest uplink direction from `from` to `to`
/// (unix µs), read from the link counters: every rank sends its neighbour the same bytes, so a
/// host NIC's mean sent bytes are one flow's, and an uplink direction carrying k times that
/// carries k flows. (The route table cannot say: Linux forwards a TCP flow by the hash its
/// sending socket chose, `skb->hash`, not by the 5-tuple `ip route get` hashes.) None without
/// uplinks or traffic.
pub fn ring_flows_on_busiest_uplink(
    tracks: &[super::links::LinkTrack],
    (from, to): (f64, f64),
) -> Option<(usize, String)> {
    let moved = |t: &super::links::LinkTrack, dir: usize| {
        let (a, b) = (t.at(from), t.at(to));
        if dir == 0 {
            b.0.saturating_sub(a.0)
        } else {
            b.1.saturating_sub(a.1)
        }
    };
    let hosts: Vec<u64> = tracks
        .iter()
        .filter(|t| t.name.starts_with('h'))
        .map(|t| moved(t, 0))
        .collect();
    let flow = hosts.iter().sum::<u64>() as f64 / hosts.len().max(1) as f64;
    if flow <= 0.0 {
        return None;
    }
    tracks
        .iter()
        .filter(|t| t.name.starts_with('l'))
        .flat_map(|t| {
            [
                (moved(t, 0), format!("{} up", t.name)),
                (moved(t, 1), format!("{} down", t.name)),
            ]
        })
        .max_by_key(|(bytes, _)| *bytes)
        .map(|(bytes, name)| ((bytes as f64 / flow).round() as usize, name))
}

impl Calibration {
    /// Reads a `model.json` that `network --calibration` wrote, checked.
    pub fn read(path: &Path) -> Result<Calibration> {
        let text = crate::files::read_input_text(path, 1 << 20).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |why: String| Error::bad_data(path.display().to_string(), why);
        let c: Calibration = serde_json::from_str(&text).map_err(|e| {
            bad(format!(
                "not a model.json written by gpu-train network --calibration: {e}"
            ))
        })?;
        let ok = |v: f64, hi: f64| v.is_finite() && (0.0..=hi).contains(&v);
        let rate_ok = c.rate.is_finite() && (1e3..=1e15).contains(&c.rate);
        if !(ok(c.alpha, 1.0) && ok(c.gamma, 1e-6) && rate_ok) {
            return Err(bad(format!(
                "α {} s, γ {} s a byte, rate {} bit/s: outside what a calibration gives (α up to 1 s, γ up to 1 µs a byte)",
                c.alpha, c.gamma, c.rate
            )));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_and_gamma_come_back_from_measurements_made_with_them() {
        // 2 ranks at 1 Gbit/s (β = 8 ns a byte), α = 40 µs a message, γ = 6 ns a byte.
        let (alpha, gamma, rate) = (40e-6, 6e-9, 1e9);
        let rows: Vec<BenchRow> = (3..23)
            .map(|k| {
                let bytes = 1usize << k;
                let wire = bytes as u64; // 2(N−1)/N = 1 for N = 2
                BenchRow {
                    replicas: 2,
                    bytes,
                    bytes_on_wire: wire,
                    seconds: 2.0 * alpha + wire as f64 * (beta(rate) + gamma),
                    algbw_gbs: 0.0,
                    busbw_gbs: 0.0,
                    algorithm: "ring".into(),
                }
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.json");
        std::fs::write(&path, serde_json::to_string(&rows).unwrap()).unwrap();
        let c = calibrate(&path, rate).unwrap();
        assert!((c.alpha - alpha).abs() < 1e-9, "{c:?}");
        assert!((c.gamma - gamma).abs() < 1e-12, "{c:?}");
        assert!(c.worst_error < 1e-6, "{c:?}");
    }
}
