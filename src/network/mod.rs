//! The network view: what data-parallel training does to the link, measured from the runs
//! themselves.
//!
//! * [`trace`]: a timeline of every replica's step (Chrome trace-event JSON, for Perfetto).
//! * [`metrics`]: loss, accuracy and bytes moved, one JSON line per epoch and every K steps.

pub mod metrics;
pub mod trace;
