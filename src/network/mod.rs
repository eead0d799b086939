//! The network view: what data-parallel training does to the link, measured from the runs
//! themselves.
//!
//! * [`trace`]: a timeline of every replica's step (Chrome trace-event JSON, for Perfetto).
//! * [`metrics`]: loss, accuracy and bytes moved, one JSON line per epoch and every K steps.
//! * [`tensorboard`]: the same values as TensorBoard scalars (`--tensorboard DIR`).
//! * [`link`]: a link's rate, a traced step replayed on it, the α-β model.
//! * [`calibrate`]: α (a message) and γ (a byte on the host) fitted in the lab, β from the fabric.
//! * [`project`]: the model projected onto a cluster and its fabric (`network --project`).
//! * [`nic`]: a NIC's own counters, sampled while a run is traced: the wire measured.
//! * [`links`]: every link of a lab's fabric counted (`lab-links`), as a table and a heat map.
//! * [`wire`]: those counters read back per traced step and per link, beside the model.
//! * [`plot`]: the pictures (PNG and SVG, through plotters); [`fabric`]: the lab's fabric.
//! * [`lab`]: what `network` reads from a lab run: its fabric, its links, its calibration.
//! * The subcommands, one a file: [`network_cmd`] (`network`), [`allreduce_bench`]
//!   (`allreduce-bench`), [`plot_cmd`] (`plot`); `lab-links` is in [`lab`].
//! * [`inputs`]: what they share: `network`'s flags and a row of `allreduce-bench --json`.
//!
//! Every file imports what it uses from the file that defines it; this one only declares them.

pub mod allreduce_bench;
pub mod calibrate;
pub mod fabric;
pub mod inputs;
pub mod lab;
pub mod link;
pub mod links;
pub mod metrics;
pub mod network_cmd;
pub mod nic;
pub mod plot;
pub mod plot_cmd;
pub mod project;
pub mod tensorboard;
pub mod trace;
pub mod wire;
