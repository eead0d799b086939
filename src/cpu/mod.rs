//! The CPU side: the fast trainer used as the benchmark baseline ([`engine`]), the f64
//! reference used to check everything ([`mod@reference`]), and one loop-for-loop twin of each
//! WGSL kernel ([`twins`]).

pub mod engine;
mod gemm;
pub mod reference;
pub mod twins;
pub mod workers;

/// The default number of CPU threads: every core, up to 8. The workers busy-wait, so more
/// threads than a step can use only get in each other's way: on a 16-core host an epoch took
/// 0.20 s with 8 threads and 0.15-1.4 s with 16, from run to run (BENCHMARKS.md).
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8)
}
