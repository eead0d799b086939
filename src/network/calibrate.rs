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

use super::commands::BenchRow;
use crate::error::{Error, Result};
use std::path::Path;

/// Wire bytes per payload byte of a full-sized TCP segment at MTU 1500 (the lab's links).
pub const FRAME_OVERHEAD: f64 = 1514.0 / 1448.0;

/// β: seconds a payload byte takes on a link of `rate` bit/s, headers included.
pub fn beta(rate: f64) -> f64 {
    8.0 / rate * FRAME_OVERHEAD
}

/// α and γ, fitted, with what they were fitted to.
#[derive(Debug, Clone, PartialEq)]
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

/// A rate as people write it: 100 Mbit/s, 1 Gbit/s.
pub fn rate_words(bps: f64) -> String {
    if bps >= 1e9 {
        format!("{} Gbit/s", bps / 1e9)
    } else {
        format!("{} Mbit/s", bps / 1e6)
    }
}

/// The slowest rate a ring's flow gets on a lab's fabric: every host's NIC (a straggler's
/// included), and in a routed fabric each uplink direction shared by the ring flows that
/// `flows.tsv` says ECMP put on it. Returns the rate and what sets it.
pub fn bottleneck(fabric: &super::fabric::Fabric, flows: Option<&Path>) -> Result<(f64, String)> {
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
    let Some(flows) = flows else {
        return Ok(best);
    };
    let (uplink, _) = super::link::parse_rate(&fabric.uplink_rate)?;
    let text = crate::files::read_input_text(flows, 1 << 20).map_err(|source| Error::Io {
        path: flows.to_path_buf(),
        source,
    })?;
    // The ring's flows: rank r sends to rank r+1, host r+1 to host r+2 (ring order = host
    // order); a row is one direction of one connection, src → dst, on a spine.
    let mut per_uplink: std::collections::BTreeMap<(String, String), usize> = Default::default();
    let hosts = fabric.hosts;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        let [src, _, dst, _, spine] = f[..] else {
            continue;
        };
        let host = |a: &str| a.rsplit('.').next().and_then(|h| h.parse::<usize>().ok());
        let (Some(s), Some(d)) = (host(src), host(dst)) else {
            continue;
        };
        if d != s % hosts + 1 {
            continue; // not a ring neighbour's direction
        }
        let leaf = src.split('.').nth(2).unwrap_or("?").to_string();
        *per_uplink.entry((leaf, spine.to_string())).or_default() += 1;
    }
    if let Some(((leaf, spine), k)) = per_uplink.iter().max_by_key(|(_, k)| **k) {
        let share = uplink / *k as f64;
        if share < best.0 {
            best = (
                share,
                format!(
                    "leaf {leaf}'s uplink to spine {spine}: {} shared by {k} of the ring's flows (ECMP put them together)",
                    rate_words(uplink)
                ),
            );
        }
    }
    Ok(best)
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
