//! The GPU side: finding an adapter ([`context`]), the WGSL kernels as pipelines
//! ([`kernels`]), and the trainer that runs a whole step on the device ([`engine`]).

pub mod autotune;
mod buffers;
pub mod context;
mod dispatch;
pub mod engine;
pub mod kernels;
mod matmul;
pub mod mirror;
mod plan;
pub mod profile;
pub mod variants;

pub use buffers::GpuOptions;
pub use context::Gpu;
pub use engine::GpuEngine;
