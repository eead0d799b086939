//! # gpu-train
//!
//! A trainer for the 784 → 128 ReLU → 10 → SoftMax network of "AI for Network Engineers",
//! written to be read. The modules follow the data through the pipeline:
//!
//! ```text
//! IDX files ──► data (parse, check) ──► batches in RAM ──► staging ──► VRAM
//!    ──► kernels: matmul ► ReLU ► SoftMax/cross-entropy ► gradients (a flat buffer)
//!    ──► all-reduce across replicas (parallel; one replica = identity) ──► SGD update
//!    ──► metrics (engine::Counters) ──► snapshot (checkpoint) ──► report / bench
//! ```
//!
//! * [`files`]: input files read safely (regular files only, bounded).
//! * [`data`]: MNIST IDX files (raw or gzip), checked and kept as u8 in RAM; seeded shuffles.
//! * [`model`]: the layer shapes, parameter counts and memory, and the seeded initialisation.
//! * [`cpu`]: the f64 reference, the fast CPU trainer (the benchmark baseline), and a CPU twin
//!   of every WGSL kernel.
//! * [`gpu`]: adapters, the kernels in `shaders/` as pipelines, and the GPU trainer.
//! * [`engine`]: the contract below the loop: the [`engine::Engine`] trait, its counters, the
//!   number format.
//! * [`train`]: the training loop, shared by CPU and GPU through the small [`engine::Engine`] trait,
//!   for one device (the fused step) or data-parallel replicas (forward_backward → all-reduce →
//!   apply_update).
//! * [`parallel`]: the all-reduce that joins replicas: the trait and the in-process ring.
//! * [`config`]: the run's settings, checked once at the command line's edge.
//! * [`run`]: the engines and replicas a configuration makes.
//! * [`network`]: what training does to the link: traffic in metrics, the timeline, the link
//!   utilisation of Figure 3-7, the all-reduce benchmark and the α-β projection.
//! * [`explain`]: the chapters' worked examples, computed.
//! * [`checkpoint`]: snapshots (safetensors), written atomically, resumed exactly.
//! * [`weights`]: weights in from any safetensors file (a snapshot, or PyTorch's).
//! * [`predict`]: classify images with a snapshot or such weights.
//! * [`mod@bench`]: CPU-vs-GPU timing table.
//! * [`cli`]: the command line.

pub mod abi;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod cpu;
pub mod data;
pub mod engine;
pub mod error;
pub mod explain;
pub mod files;
pub mod gpu;
pub mod model;
pub mod network;
pub mod parallel;
pub mod predict;
pub mod run;
pub mod snapshots;
pub mod train;
pub mod weights;

