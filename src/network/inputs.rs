//! What the network view is given, shared by the files that answer its parts: the flags of
//! `gpu-train network` ([`NetworkArgs`]: read by the command, by the lab's readers in
//! `lab.rs` and by the projection in `project.rs`), and one row of `allreduce-bench --json`
//! ([`BenchRow`]: written by the benchmark, read back by `--project --from` and by the lab's
//! `--calibration`).
//!
//! It imports nothing else from `network/`, so every file there can take from it and no two
//! of them need each other for a type.

use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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
    /// Print every traced step's row (by default: the median and 95th percentile of each
    /// column over the traced steps).
    #[arg(long)]
    pub table: bool,
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
