//! The rows `bench` measures and how they print: a table sized to its content, and JSON.

use serde::Serialize;

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
    let header = [
        "path", "adapter", "epoch s", "images/s", "speedup", "test %", "host MB", "VRAM MB",
        "staged MB", "reduce MB", "step µs: c/ar/up",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let split = match (r.compute_us, r.allreduce_us, r.update_us) {
                (Some(c), Some(a), Some(u)) => format!("{c:.0}/{a:.0}/{u:.0}"),
                _ => "-".into(),
            };
            vec![
                r.path.clone(),
                r.adapter.clone(),
                format!("{:.4}", r.epoch_s),
                format!("{:.0}", r.images_per_s),
                opt(r.speedup, 2),
                format!("{:.2}", r.test_accuracy),
                format!("{:.1}", r.peak_host_mb),
                opt(r.vram_mb, 1),
                opt(r.staged_mb_per_epoch, 1),
                opt(r.allreduce_mb_per_epoch, 1),
                split,
            ]
        })
        .collect();
    // Each column as wide as its widest cell: text left-aligned, numbers right-aligned.
    let width = |i: usize| cells.iter().map(|c| c[i].chars().count()).chain([header[i].chars().count()]).max().unwrap_or(0);
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = " ".repeat(widths[i] - c.chars().count());
                if i < 2 { format!("{c}{pad}") } else { format!("{pad}{c}") }
            })
            .collect();
        parts.join("  ").trim_end().to_string() + "\n"
    };
    let mut s = line(&header.map(String::from));
    for c in &cells {
        s += &line(c);
    }
    s += "staged and reduce MB are per replica and epoch; step µs: compute (forward + backward, waiting for the gradients) / all-reduce / update, per step\n";
    s
}

/// The rows as a JSON array.
pub fn to_json(rows: &[Row]) -> String {
    serde_json::to_string_pretty(rows).expect("rows serialise") + "\n"
}

