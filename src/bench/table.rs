//! The rows `bench` measures and how they print: a table sized to its content, and JSON.

use serde::Serialize;
use std::fmt::Write as _;

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub path: String,
    pub adapter: String,
    pub replicas: usize,
    pub epoch_s: f64,
    pub images_per_s: f64,
    pub speedup: Option<f64>,
    pub test_accuracy: f64,
    pub peak_host_mb: f64,
    pub vram_mb: Option<f64>,
    /// Per replica.
    pub staged_mb_per_epoch: Option<f64>,
    /// Data-parallel rows: bytes each replica sent in the all-reduce per epoch.
    pub allreduce_mb_per_epoch: Option<f64>,
    /// Data-parallel rows: a step's time split, µs (host clocks).
    pub compute_us: Option<f64>,
    pub allreduce_us: Option<f64>,
    pub update_us: Option<f64>,
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

/// The table as printed.
pub fn table(rows: &[Row]) -> String {
    let mut s = format!(
        "{:<13} {:<44} {:>9} {:>10} {:>8} {:>8} {:>9} {:>8} {:>10} {:>10} {:>17}\n",
        "path",
        "adapter",
        "epoch s",
        "images/s",
        "speedup",
        "test %",
        "host MB",
        "VRAM MB",
        "staged MB",
        "reduce MB",
        "step µs: c/ar/up"
    );
    for r in rows {
        let split = match (r.compute_us, r.allreduce_us, r.update_us) {
            (Some(c), Some(a), Some(u)) => format!("{c:.0}/{a:.0}/{u:.0}"),
            _ => "-".into(),
        };
        let _ = writeln!(
            s,
            "{:<13} {:<44} {:>9.4} {:>10.0} {:>8} {:>8.2} {:>9.1} {:>8} {:>10} {:>10} {:>17}",
            r.path,
            r.adapter.chars().take(44).collect::<String>(),
            r.epoch_s,
            r.images_per_s,
            opt(r.speedup, 2),
            r.test_accuracy,
            r.peak_host_mb,
            opt(r.vram_mb, 1),
            opt(r.staged_mb_per_epoch, 1),
            opt(r.allreduce_mb_per_epoch, 1),
            split
        );
    }
    s += "staged and reduce MB are per replica and epoch; step µs: compute (forward + backward, waiting for the gradients) / all-reduce / update, per step\n";
    s
}

/// The rows as a JSON array.
pub fn to_json(rows: &[Row]) -> String {
    serde_json::to_string_pretty(rows).expect("rows serialise") + "\n"
}

