//! The network view: what data-parallel training does to the link, measured from the runs
//! themselves.
//!
//! * [`trace`]: a timeline of every replica's step (Chrome trace-event JSON, for Perfetto).
//! * [`metrics`]: loss, accuracy and bytes moved, one JSON line per epoch and every K steps.
//! * [`link`]: a link's rate, a traced step replayed on it, the α-β model and its projection.
//! * [`nic`]: a NIC's own counters, sampled while a run is traced: the wire measured.
//! * [`plot`]: the pictures (PNG and SVG, through plotters).

pub mod commands;
pub mod link;
pub mod metrics;
pub mod nic;
pub mod plot;
pub mod trace;
pub mod wire;
